/*
 * sasl.c - the client side of the SASL mechanisms imapferry logs in with
 * (RFC 4616 PLAIN, AUTHENTICATE LOGIN, RFC 2195 CRAM-MD5, Google's XOAUTH2,
 * RFC 7628 OAUTHBEARER): pure functions that turn challenges into
 * responses, no I/O. lib/client.c drives them; see include/imapferry/client.h.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "imapferry/client.h"
#include "imapferry/log.h"
#include "imapferry/xalloc.h"

const char *const imap_login_mech_names[] = {
        "LOGIN", "PLAIN", "AUTH=LOGIN", "CRAM-MD5", "XOAUTH2", "OAUTHBEARER",
};
_Static_assert(sizeof(imap_login_mech_names) / sizeof(imap_login_mech_names[0]) ==
                       IMAP_LOGIN_MECH_COUNT,
               "login mechanism names");

/* Each SASL mechanism's AUTHENTICATE name, its AUTH= capability, and
 * whether the client speaks first (an initial response, SASL-IR). */
static const struct {
	const char *name;
	enum imap_auth_mech cap;
	int client_first;
} sasl_mechs[IMAP_LOGIN_MECH_COUNT] = {
        [IMAP_LOGIN_PLAIN] = {"PLAIN", IMAP_AUTH_PLAIN, 1},
        [IMAP_LOGIN_SASL_LOGIN] = {"LOGIN", IMAP_AUTH_LOGIN, 0},
        [IMAP_LOGIN_CRAM_MD5] = {"CRAM-MD5", IMAP_AUTH_CRAM_MD5, 0},
        [IMAP_LOGIN_XOAUTH2] = {"XOAUTH2", IMAP_AUTH_XOAUTH2, 1},
        [IMAP_LOGIN_OAUTHBEARER] = {"OAUTHBEARER", IMAP_AUTH_OAUTHBEARER, 1},
};

int imap_login_mech_lookup(const char *name)
{
	int sasl_only = 0;

	if (name == NULL || name[0] == '\0' || strcasecmp(name, "LOGIN") == 0)
		return IMAP_LOGIN_CMD;
	if (strncasecmp(name, "AUTH=", 5) == 0) {
		name += 5;
		sasl_only = 1;
	}
	for (int m = IMAP_LOGIN_PLAIN; m < IMAP_LOGIN_MECH_COUNT; m++) {
		/* a bare "LOGIN" is the command (above), never AUTH=LOGIN */
		if (m == IMAP_LOGIN_SASL_LOGIN && !sasl_only)
			continue;
		if (strcasecmp(name, sasl_mechs[m].name) == 0)
			return m;
	}
	return -1;
}

const char *imap_sasl_mech_name(enum imap_login_mech m)
{
	return sasl_mechs[m].name;
}

int imap_sasl_mech_cap(enum imap_login_mech m)
{
	return (int)sasl_mechs[m].cap;
}

struct imap_sasl {
	enum imap_login_mech mech;
	unsigned steps;      /* server-first mechanisms: challenges answered */
	int initial_sent;    /* client-first mechanisms */
	int error_seen;      /* XOAUTH2/OAUTHBEARER: the server sent its error */
	char *user, *secret; /* secret wiped when freed */
	char *initial;       /* base64, client-first mechanisms; wiped */
	char *resp;          /* the last response; wiped when replaced */
	char *error;         /* imap_sasl_error() */
};

static void wipe_free(char **p)
{
	if (*p != NULL) {
		OPENSSL_cleanse(*p, strlen(*p));
		free(*p);
		*p = NULL;
	}
}

/* base64 (RFC 4648 4) of len bytes; malloc'd. */
static char *b64(const void *in, size_t len)
{
	char *out = malloc(4 * ((len + 2) / 3) + 1);

	if (out == NULL)
		abort();
	EVP_EncodeBlock((unsigned char *)out, in, (int)len);
	return out;
}

/* Checks that in is base64 as RFC 4648 4 writes it: the alphabet, padded
 * to a multiple of 4, "=" only at the end, no white space. Returns the
 * number of pad characters, or -1. */
static int b64_check(const char *in, size_t len)
{
	int pad = 0;

	if (len % 4 != 0 || len > (size_t)1 << 30)
		return -1;
	for (size_t i = 0; i < len; i++) {
		char ch = in[i];

		if (ch == '=' && i + 2 >= len) {
			pad++;
			continue;
		}
		if (pad > 0 || !((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
		                 (ch >= '0' && ch <= '9') || ch == '+' || ch == '/'))
			return -1;
	}
	return pad;
}

/* Decodes base64 into a malloc'd, NUL-terminated *out_r. Returns the
 * decoded length, or -1 (nothing allocated). */
static long b64_decode(const char *in, size_t len, unsigned char **out_r)
{
	int pad = b64_check(in, len), n = 0;
	unsigned char *out;

	if (pad < 0)
		return -1;
	out = malloc(len / 4 * 3 + 1);
	if (out == NULL)
		abort();
	if (len > 0)
		n = EVP_DecodeBlock(out, (const unsigned char *)in, (int)len);
	if (n < pad) {
		free(out);
		return -1;
	}
	n -= pad; /* EVP_DecodeBlock counts the padding as zero bytes */
	out[n] = '\0';
	*out_r = out;
	return n;
}

static size_t put(unsigned char *buf, size_t n, const char *s)
{
	size_t len = strlen(s);

	memcpy(buf + n, s, len);
	return n + len;
}

/* The first message of a client-first mechanism, base64 encoded. */
static char *sasl_build_initial(const struct imap_login_opts *o)
{
	size_t ul = strlen(o->user), sl = strlen(o->secret);
	size_t al = o->authuser != NULL ? strlen(o->authuser) : 0;
	size_t cap = 3 * ul + al + sl + 64, n = 0; /* 3: "," in a saslname is "=2C" */
	unsigned char *raw = malloc(cap);
	char *enc;

	if (raw == NULL)
		abort();
	switch (o->mech) {
	case IMAP_LOGIN_PLAIN:
		/* RFC 4616 2: message = [authzid] UTF8NUL authcid UTF8NUL passwd */
		if (o->authuser != NULL)
			n = put(raw, n, o->user);
		raw[n++] = '\0';
		n = put(raw, n, o->authuser != NULL ? o->authuser : o->user);
		raw[n++] = '\0';
		n = put(raw, n, o->secret);
		break;
	case IMAP_LOGIN_XOAUTH2:
		/* Google's SASL XOAUTH2: "user=" user ^A "auth=Bearer " token ^A ^A */
		n = put(raw, n, "user=");
		n = put(raw, n, o->user);
		n = put(raw, n, "\001auth=Bearer ");
		n = put(raw, n, o->secret);
		n = put(raw, n, "\001\001");
		break;
	default: /* IMAP_LOGIN_OAUTHBEARER */
		/* RFC 7628 3.1: gs2-header kvsep "auth=Bearer " token kvsep kvsep,
		 * gs2-header = "n,a=" saslname "," with "," and "=" in the
		 * saslname written "=2C" and "=3D" (RFC 5801 4). The optional
		 * host and port pairs are left out. */
		n = put(raw, n, "n,a=");
		for (const char *p = o->user; *p != '\0'; p++) {
			if (*p == ',')
				n = put(raw, n, "=2C");
			else if (*p == '=')
				n = put(raw, n, "=3D");
			else
				raw[n++] = (unsigned char)*p;
		}
		n = put(raw, n, ",\001auth=Bearer ");
		n = put(raw, n, o->secret);
		n = put(raw, n, "\001\001");
		break;
	}
	enc = b64(raw, n);
	OPENSSL_cleanse(raw, cap);
	free(raw);
	return enc;
}

struct imap_sasl *imap_sasl_new(const struct imap_login_opts *o, const char **error_r)
{
	enum imap_login_mech m = o->mech;
	struct imap_sasl *s;

	if ((unsigned)m >= IMAP_LOGIN_MECH_COUNT || m == IMAP_LOGIN_CMD) {
		*error_r = "not a SASL mechanism";
		return NULL;
	}
	if (o->authuser != NULL && m != IMAP_LOGIN_PLAIN) {
		*error_r = "an authorization identity (authuser) needs the PLAIN mechanism";
		return NULL;
	}
	if (o->initial != NULL) {
		if (!sasl_mechs[m].client_first) {
			*error_r = "a ready-made initial response needs PLAIN, XOAUTH2 or "
			           "OAUTHBEARER";
			return NULL;
		}
		if (b64_check(o->initial, strlen(o->initial)) < 0) {
			*error_r = "the ready-made initial response is not base64";
			return NULL;
		}
	} else if (o->user == NULL || o->secret == NULL) {
		*error_r = "no user, or no password or token";
		return NULL;
	} else if ((m == IMAP_LOGIN_XOAUTH2 || m == IMAP_LOGIN_OAUTHBEARER) &&
	           (strchr(o->user, '\001') != NULL || strchr(o->secret, '\001') != NULL)) {
		/* ^A separates the fields: it cannot be escaped */
		*error_r = "the user name or the token contains a ^A (0x01)";
		return NULL;
	}
	s = calloc(1, sizeof(*s));
	if (s == NULL)
		abort();
	s->mech = m;
	s->user = xstrdup(o->user);
	s->secret = xstrdup(o->secret);
	if (o->initial != NULL)
		s->initial = xstrdup(o->initial);
	else if (sasl_mechs[m].client_first)
		s->initial = sasl_build_initial(o);
	return s;
}

void imap_sasl_free(struct imap_sasl **sp)
{
	struct imap_sasl *s = *sp;

	if (s == NULL)
		return;
	*sp = NULL;
	wipe_free(&s->secret);
	wipe_free(&s->initial);
	wipe_free(&s->resp);
	free(s->user);
	free(s->error);
	free(s);
}

const char *imap_sasl_initial(struct imap_sasl *s)
{
	if (!sasl_mechs[s->mech].client_first)
		return NULL;
	s->initial_sent = 1;
	return s->initial;
}

const char *imap_sasl_error(const struct imap_sasl *s)
{
	return s->error;
}

static void sasl_set_error(struct imap_sasl *s, const char *what, const char *text, size_t len)
{
	char buf[400];
	size_t n = strlen(what) + sizeof(buf) + 1;

	while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r' || text[len - 1] == ' '))
		len--; /* Google's JSON ends in a newline */

	free(s->error);
	s->error = malloc(n);
	if (s->error == NULL)
		abort();
	snprintf(s->error, n, "%s%s", what, log_sanitize(buf, sizeof(buf), text, len, 300));
}

/* Gives up: the caller cancels with "*". A server error seen before is
 * kept: it says more than our reason. */
static int sasl_cancel(struct imap_sasl *s, const char *why)
{
	if (s->error == NULL)
		sasl_set_error(s, "cancelled: ", why, strlen(why));
	return -1;
}

/* RFC 2195 2: "user SP digest", digest = HMAC-MD5 (RFC 2104) keyed with
 * the password over the challenge, as 32 lower-case hex digits; base64.
 * NULL when MD5 is unavailable (an OpenSSL in FIPS mode). */
static char *cram_md5_response(const struct imap_sasl *s, const unsigned char *chal, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned mdlen = 0;
	size_t ul = strlen(s->user), n;
	char *msg, *enc;

	if (HMAC(EVP_md5(), s->secret, (int)strlen(s->secret), chal, len, md, &mdlen) == NULL)
		return NULL;
	n = ul + 1 + 2 * (size_t)mdlen;
	msg = malloc(n);
	if (msg == NULL)
		abort();
	memcpy(msg, s->user, ul);
	msg[ul] = ' ';
	for (unsigned i = 0; i < mdlen; i++) {
		msg[ul + 1 + 2 * i] = hex[md[i] >> 4];
		msg[ul + 2 + 2 * i] = hex[md[i] & 0xf];
	}
	enc = b64(msg, n);
	OPENSSL_cleanse(md, sizeof(md));
	OPENSSL_cleanse(msg, n);
	free(msg);
	return enc;
}

int imap_sasl_step(struct imap_sasl *s, const char *challenge, size_t len, const char **resp_r)
{
	unsigned char *chal;
	long n;

	wipe_free(&s->resp);
	while (len > 0 && challenge[len - 1] == ' ')
		len--;
	if (sasl_mechs[s->mech].client_first) {
		/* Without SASL-IR the server asks with an empty "+ ". */
		if (!s->initial_sent) {
			s->initial_sent = 1;
			*resp_r = s->initial;
			return 0;
		}
		if ((s->mech == IMAP_LOGIN_XOAUTH2 || s->mech == IMAP_LOGIN_OAUTHBEARER) &&
		    !s->error_seen) {
			/* Gmail and Outlook refuse a token with "+ <base64 JSON>"
			 * and send the tagged NO only after one more response. */
			s->error_seen = 1;
			n = b64_decode(challenge, len, &chal);
			if (n > 0) {
				sasl_set_error(s, "server error: ", (const char *)chal, (size_t)n);
				free(chal);
			} else {
				if (n == 0)
					free(chal);
				sasl_set_error(s, "server error: ", challenge, len);
			}
			/* Google: an empty response; RFC 7628 3.2.3: a single ^A */
			*resp_r = s->mech == IMAP_LOGIN_XOAUTH2 ? "" : "AQ==";
			return 0;
		}
		return sasl_cancel(s, s->mech == IMAP_LOGIN_PLAIN
		                              ? "a challenge after the PLAIN response"
		                              : "a second challenge after the OAuth error");
	}
	if (s->mech == IMAP_LOGIN_SASL_LOGIN) {
		/* Servers prompt "Username:" then "Password:" in wording that
		 * varies: answer by position, not by prompt. */
		if (s->steps >= 2)
			return sasl_cancel(s, "more than two AUTH=LOGIN challenges");
		s->resp = b64(s->steps == 0 ? s->user : s->secret,
		              strlen(s->steps == 0 ? s->user : s->secret));
	} else { /* IMAP_LOGIN_CRAM_MD5 */
		if (s->steps >= 1)
			return sasl_cancel(s, "a second CRAM-MD5 challenge");
		n = b64_decode(challenge, len, &chal);
		if (n <= 0) {
			if (n == 0)
				free(chal);
			return sasl_cancel(s, "the CRAM-MD5 challenge is empty or not base64");
		}
		s->resp = cram_md5_response(s, chal, (size_t)n);
		free(chal);
		if (s->resp == NULL)
			return sasl_cancel(s, "HMAC-MD5 is not available in this OpenSSL");
	}
	s->steps++;
	*resp_r = s->resp;
	return 0;
}
