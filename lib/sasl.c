/*
 * sasl.c - the client side of the SASL mechanisms imapferry logs in with
 * (RFC 4616 PLAIN, AUTHENTICATE LOGIN, RFC 2195 CRAM-MD5, Google's XOAUTH2,
 * RFC 7628 OAUTHBEARER, MS-NLMP NTLMv2): pure functions that turn
 * challenges into responses, no I/O. lib/client.c drives them; see
 * include/imapferry/client.h and, for NTLM, include/imapferry/sasl.h.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <time.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/provider.h>
#include <openssl/rand.h>

#include "imapferry/client.h"
#include "imapferry/sasl.h"
#include "imapferry/log.h"
#include "imapferry/xalloc.h"

const char *const imap_login_mech_names[] = {
        "LOGIN", "PLAIN", "AUTH=LOGIN", "CRAM-MD5", "XOAUTH2", "OAUTHBEARER", "NTLM",
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
        /* NTLM: the server's empty "+" asks for the NEGOTIATE message (no
         * SASL-IR, as Exchange and imapsync's Mail::IMAPClient do it) */
        [IMAP_LOGIN_NTLM] = {"NTLM", IMAP_AUTH_NTLM, 0},
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
	/* NTLM */
	char *domain;                               /* NULL: none */
	unsigned char nt_hash[SASL_NTLM_HASH_SIZE]; /* NTOWFv1; wiped */
	int ntlm_fixed;                             /* sasl_ntlm_fix_for_test() */
	unsigned char ntlm_cc[SASL_NTLM_CHALLENGE_SIZE];
	uint64_t ntlm_time;
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

/* --- NTLM (MS-NLMP) --- */

/* NEGOTIATE flags (MS-NLMP 2.2.2.5) */
#define NTLM_F_UNICODE     0x00000001u
#define NTLM_F_OEM         0x00000002u
#define NTLM_F_REQ_TARGET  0x00000004u
#define NTLM_F_NTLM        0x00000200u
#define NTLM_F_OEM_DOMAIN  0x00001000u /* NEGOTIATE_OEM_DOMAIN_SUPPLIED */
#define NTLM_F_ALWAYS_SIGN 0x00008000u
#define NTLM_F_ESS         0x00080000u /* NEGOTIATE_EXTENDED_SESSIONSECURITY */
#define NTLM_F_128         0x20000000u
#define NTLM_F_56          0x80000000u
/* What we ask for: Unicode or OEM strings, the target's name and AV pairs,
 * NTLM. No key exchange, signing or sealing: IMAP carries no NTLM-signed
 * data, so the session key is never used and not sent. */
#define NTLM_F_OURS                                                                                \
	(NTLM_F_UNICODE | NTLM_F_OEM | NTLM_F_REQ_TARGET | NTLM_F_NTLM | NTLM_F_ALWAYS_SIGN |      \
	 NTLM_F_ESS | NTLM_F_128 | NTLM_F_56)

/* AV pair ids (MS-NLMP 2.2.2.1) */
#define NTLM_AV_EOL              0
#define NTLM_AV_NB_DOMAIN        2
#define NTLM_AV_TIMESTAMP        7
#define NTLM_HEADER_NEGOTIATE    32 /* without the optional VERSION */
#define NTLM_HEADER_CHALLENGE    32 /* up to the reserved field; 48 with TargetInfo */
#define NTLM_HEADER_AUTHENTICATE 64
/* seconds from 1601-01-01 (FILETIME's epoch) to 1970-01-01 */
#define NTLM_FILETIME_UNIX_OFFSET 11644473600ull

static const char ntlm_md4_missing[] =
        "NTLM needs MD4, which OpenSSL's legacy provider supplies, and it could not be "
        "loaded (is ossl-modules/legacy.so installed, or OPENSSL_MODULES set wrongly?)";

static EVP_MD *ntlm_md4;
static OSSL_LIB_CTX *ntlm_libctx; /* kept for the life of the process */
static CRYPTO_ONCE ntlm_md4_once = CRYPTO_ONCE_STATIC_INIT;

/* MD4 from the default context when the configuration already offers it,
 * else from OpenSSL 3's legacy provider in a context of our own: loading
 * it into the default context would change what TLS can negotiate and,
 * as the first explicit load, stop the default provider's automatic
 * loading. */
static void ntlm_md4_load(void)
{
	ntlm_md4 = EVP_MD_fetch(NULL, "MD4", NULL);
	if (ntlm_md4 == NULL) {
		ntlm_libctx = OSSL_LIB_CTX_new();
		if (ntlm_libctx != NULL && OSSL_PROVIDER_load(ntlm_libctx, "legacy") != NULL)
			ntlm_md4 = EVP_MD_fetch(ntlm_libctx, "MD4", NULL);
	}
	ERR_clear_error();
}

static void le16_put(unsigned char *p, unsigned v)
{
	p[0] = (unsigned char)(v & 0xff);
	p[1] = (unsigned char)((v >> 8) & 0xff);
}

static void le32_put(unsigned char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (unsigned char)((v >> (8 * i)) & 0xff);
}

static unsigned le16_get(const unsigned char *p)
{
	return (unsigned)p[0] | (unsigned)p[1] << 8;
}

static uint32_t le32_get(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* A security buffer (MS-NLMP 2.2.1): Len, MaxLen, BufferOffset. */
static void ntlm_field_put(unsigned char *p, size_t len, size_t offset)
{
	le16_put(p, (unsigned)len);
	le16_put(p + 2, (unsigned)len);
	le32_put(p + 4, (uint32_t)offset);
}

/* s (UTF-8) as UTF-16LE into out, which has room for 2 * strlen(s) bytes
 * (no UTF-8 sequence gives more than two bytes per byte); ASCII letters
 * upper-cased when upper. Returns the bytes written, or -1 when s is not
 * UTF-8 (overlong forms and surrogates included). */
static long utf16le_put(unsigned char *out, const char *s, int upper)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t n = 0;

	while (*p != '\0') {
		uint32_t cp;
		int extra;

		if (*p < 0x80) {
			cp = *p;
			extra = 0;
		} else if ((*p & 0xe0) == 0xc0) {
			cp = *p & 0x1f;
			extra = 1;
		} else if ((*p & 0xf0) == 0xe0) {
			cp = *p & 0x0f;
			extra = 2;
		} else if ((*p & 0xf8) == 0xf0) {
			cp = *p & 0x07;
			extra = 3;
		} else {
			return -1;
		}
		p++;
		for (int i = 0; i < extra; i++, p++) {
			if ((*p & 0xc0) != 0x80) /* also stops at the NUL */
				return -1;
			cp = cp << 6 | (*p & 0x3f);
		}
		if ((extra == 1 && cp < 0x80) || (extra == 2 && cp < 0x800) ||
		    (extra == 3 && cp < 0x10000) || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return -1;
		if (upper && cp >= 'a' && cp <= 'z')
			cp -= 'a' - 'A';
		if (cp >= 0x10000) {
			cp -= 0x10000;
			le16_put(out + n, 0xd800 | (unsigned)(cp >> 10));
			le16_put(out + n + 2, 0xdc00 | (unsigned)(cp & 0x3ff));
			n += 4;
		} else {
			le16_put(out + n, (unsigned)cp);
			n += 2;
		}
	}
	return (long)n;
}

int sasl_ntlm_nt_hash(const char *password, unsigned char hash_r[SASL_NTLM_HASH_SIZE],
                      const char **error_r)
{
	unsigned char buf[2 * SASL_NTLM_FIELD_MAX];
	unsigned mdlen = 0;
	long n;
	int ok;

	if (strlen(password) > SASL_NTLM_FIELD_MAX) {
		*error_r = "the password is too long for NTLM";
		return -1;
	}
	n = utf16le_put(buf, password, 0);
	if (n < 0) {
		OPENSSL_cleanse(buf, sizeof(buf));
		*error_r = "the password is not UTF-8 (NTLM hashes it as UTF-16)";
		return -1;
	}
	CRYPTO_THREAD_run_once(&ntlm_md4_once, ntlm_md4_load);
	if (ntlm_md4 == NULL) {
		OPENSSL_cleanse(buf, sizeof(buf));
		*error_r = ntlm_md4_missing;
		return -1;
	}
	ok = EVP_Digest(buf, (size_t)n, hash_r, &mdlen, ntlm_md4, NULL) == 1 &&
	     mdlen == SASL_NTLM_HASH_SIZE;
	OPENSSL_cleanse(buf, sizeof(buf));
	if (!ok) {
		ERR_clear_error();
		*error_r = ntlm_md4_missing;
		return -1;
	}
	return 0;
}

/* HMAC-MD5 of a || b into out (16 bytes). Returns 0, or -1. */
static int hmac_md5_2(const unsigned char *key, size_t keylen, const unsigned char *a, size_t alen,
                      const unsigned char *b, size_t blen, unsigned char *out)
{
	unsigned char *buf = malloc(alen + blen + 1);
	unsigned mdlen = 0;
	int ok;

	if (buf == NULL)
		abort();
	memcpy(buf, a, alen);
	if (blen > 0)
		memcpy(buf + alen, b, blen);
	ok = HMAC(EVP_md5(), key, (int)keylen, buf, alen + blen, out, &mdlen) != NULL &&
	     mdlen == SASL_NTLM_HASH_SIZE;
	OPENSSL_cleanse(buf, alen + blen);
	free(buf);
	return ok ? 0 : -1;
}

int sasl_ntlm_v2_hash(const unsigned char nt_hash[SASL_NTLM_HASH_SIZE], const char *user,
                      const char *domain, unsigned char hash_r[SASL_NTLM_HASH_SIZE],
                      const char **error_r)
{
	unsigned char buf[4 * SASL_NTLM_FIELD_MAX];
	long ul, dl = 0;

	if (domain == NULL)
		domain = "";
	if (strlen(user) > SASL_NTLM_FIELD_MAX || strlen(domain) > SASL_NTLM_FIELD_MAX) {
		*error_r = "the user or the domain is too long for NTLM";
		return -1;
	}
	ul = utf16le_put(buf, user, 1);
	if (ul >= 0)
		dl = utf16le_put(buf + ul, domain, 0);
	if (ul < 0 || dl < 0) {
		*error_r = "the user or the domain is not UTF-8";
		return -1;
	}
	if (hmac_md5_2(nt_hash, SASL_NTLM_HASH_SIZE, buf, (size_t)(ul + dl), NULL, 0, hash_r) < 0) {
		*error_r = "HMAC-MD5 is not available in this OpenSSL";
		return -1;
	}
	return 0;
}

int sasl_ntlm_v2_response(const unsigned char v2_hash[SASL_NTLM_HASH_SIZE],
                          const unsigned char server_chal[SASL_NTLM_CHALLENGE_SIZE],
                          const unsigned char client_chal[SASL_NTLM_CHALLENGE_SIZE],
                          uint64_t filetime, const unsigned char *target_info,
                          size_t target_info_len, unsigned char lm_r[SASL_NTLM_LM_SIZE],
                          unsigned char **nt_r, size_t *nt_len_r, const char **error_r)
{
	/* temp (MS-NLMP 3.3.2): Responserversion, HiResponserversion, Z(6),
	 * Time, ClientChallenge, Z(4), ServerName (the AV pairs), Z(4) */
	size_t tlen = 28 + target_info_len + 4;
	unsigned char *out = calloc(1, SASL_NTLM_HASH_SIZE + tlen);
	unsigned char *temp;

	if (out == NULL)
		abort();
	temp = out + SASL_NTLM_HASH_SIZE;
	temp[0] = 1;
	temp[1] = 1;
	for (int i = 0; i < 8; i++)
		temp[8 + i] = (unsigned char)((filetime >> (8 * i)) & 0xff);
	memcpy(temp + 16, client_chal, SASL_NTLM_CHALLENGE_SIZE);
	if (target_info_len > 0)
		memcpy(temp + 28, target_info, target_info_len);
	/* NTProofStr, then LMv2 = HMAC(server challenge || client challenge) || client challenge */
	if (hmac_md5_2(v2_hash, SASL_NTLM_HASH_SIZE, server_chal, SASL_NTLM_CHALLENGE_SIZE, temp,
	               tlen, out) < 0 ||
	    hmac_md5_2(v2_hash, SASL_NTLM_HASH_SIZE, server_chal, SASL_NTLM_CHALLENGE_SIZE,
	               client_chal, SASL_NTLM_CHALLENGE_SIZE, lm_r) < 0) {
		free(out);
		*error_r = "HMAC-MD5 is not available in this OpenSSL";
		return -1;
	}
	memcpy(lm_r + SASL_NTLM_HASH_SIZE, client_chal, SASL_NTLM_CHALLENGE_SIZE);
	*nt_r = out;
	*nt_len_r = SASL_NTLM_HASH_SIZE + tlen;
	return 0;
}

void sasl_ntlm_fix_for_test(struct imap_sasl *s,
                            const unsigned char client_chal[SASL_NTLM_CHALLENGE_SIZE],
                            uint64_t filetime)
{
	s->ntlm_fixed = 1;
	memcpy(s->ntlm_cc, client_chal, SASL_NTLM_CHALLENGE_SIZE);
	s->ntlm_time = filetime;
}

/* The NEGOTIATE message (MS-NLMP 2.2.1.1), base64: our flags and, when
 * given, the domain (OEM, that is as given). */
static char *ntlm_negotiate(const struct imap_sasl *s)
{
	unsigned char msg[NTLM_HEADER_NEGOTIATE + SASL_NTLM_FIELD_MAX];
	size_t dl = s->domain != NULL ? strlen(s->domain) : 0; /* checked in imap_sasl_new */

	memset(msg, 0, NTLM_HEADER_NEGOTIATE);
	memcpy(msg, "NTLMSSP", 8);
	le32_put(msg + 8, 1);
	le32_put(msg + 12, NTLM_F_OURS | (dl > 0 ? NTLM_F_OEM_DOMAIN : 0));
	ntlm_field_put(msg + 16, dl, NTLM_HEADER_NEGOTIATE);
	ntlm_field_put(msg + 24, 0, NTLM_HEADER_NEGOTIATE + dl);
	if (dl > 0)
		memcpy(msg + NTLM_HEADER_NEGOTIATE, s->domain, dl);
	return b64(msg, NTLM_HEADER_NEGOTIATE + dl);
}

/* What the CHALLENGE message (MS-NLMP 2.2.1.2) gives us. */
struct ntlm_challenge {
	uint32_t flags;
	unsigned char chal[SASL_NTLM_CHALLENGE_SIZE];
	const unsigned char *ti; /* TargetInfo up to its MsvAvEOL; NULL: none */
	size_t ti_len;
	int has_nb_domain; /* an MsvAvNbDomainName pair */
	int has_time;      /* an MsvAvTimestamp pair */
	uint64_t time;
};

/* Returns NULL, or why m is no CHALLENGE message we can answer. */
static const char *ntlm_challenge_parse(const unsigned char *m, size_t len,
                                        struct ntlm_challenge *c)
{
	size_t off, tl, i = 0;

	memset(c, 0, sizeof(*c));
	if (len < NTLM_HEADER_CHALLENGE || memcmp(m, "NTLMSSP", 8) != 0)
		return "the NTLM challenge is not an NTLMSSP message";
	if (le32_get(m + 8) != 2)
		return "the NTLM challenge is not a CHALLENGE message (type 2)";
	c->flags = le32_get(m + 20);
	memcpy(c->chal, m + 24, SASL_NTLM_CHALLENGE_SIZE);
	if (len < 48 || le16_get(m + 40) == 0)
		return NULL; /* no TargetInfo: an empty AV list is sent */
	tl = le16_get(m + 40);
	off = le32_get(m + 44);
	if (off > len || tl > len - off)
		return "the NTLM challenge's TargetInfo lies outside the message";
	c->ti = m + off;
	while (i + 4 <= tl) {
		unsigned id = le16_get(c->ti + i), alen = le16_get(c->ti + i + 2);

		if (alen > tl - i - 4)
			return "an AV pair of the NTLM challenge's TargetInfo is cut off";
		if (id == NTLM_AV_EOL) {
			c->ti_len = i + 4;
			return NULL;
		}
		if (id == NTLM_AV_NB_DOMAIN)
			c->has_nb_domain = 1;
		if (id == NTLM_AV_TIMESTAMP && alen == 8) {
			c->has_time = 1;
			c->time = 0;
			for (int k = 7; k >= 0; k--)
				c->time = c->time << 8 | c->ti[i + 4 + (unsigned)k];
		}
		i += 4 + alen;
	}
	return "the NTLM challenge's TargetInfo has no MsvAvEOL";
}

/* Appends s as Unicode (UTF-16LE) or OEM (as given) at msg + *n, and
 * writes its security buffer at field. */
static void ntlm_string_put(unsigned char *msg, size_t *n, unsigned char *field, const char *s,
                            int unicode)
{
	size_t start = *n;

	if (unicode)
		*n += (size_t)utf16le_put(msg + *n, s, 0); /* UTF-8 checked before */
	else {
		memcpy(msg + *n, s, strlen(s));
		*n += strlen(s);
	}
	ntlm_field_put(field, *n - start, start);
}

/* The AUTHENTICATE message (MS-NLMP 2.2.1.3) answering the CHALLENGE m,
 * with NTLMv2 responses, base64; NULL with *why_r. */
static char *ntlm_authenticate(struct imap_sasl *s, const unsigned char *m, size_t len,
                               const char **why_r)
{
	static const unsigned char eol[4];
	struct ntlm_challenge c;
	unsigned char v2[SASL_NTLM_HASH_SIZE], lm[SASL_NTLM_LM_SIZE], cc[SASL_NTLM_CHALLENGE_SIZE];
	unsigned char *nt = NULL, *msg;
	size_t ntlen = 0, n, cap;
	uint64_t now;
	const char *domain = s->domain != NULL ? s->domain : "";
	int unicode;
	char *enc;

	*why_r = ntlm_challenge_parse(m, len, &c);
	if (*why_r != NULL)
		return NULL;
	unicode = (c.flags & NTLM_F_UNICODE) != 0;
	/* NTOWFv2 takes the user's domain, as sent in the AUTHENTICATE
	 * message; a Windows server always lists its MsvAvNbDomainName
	 * (MS-NLMP 2.2.2.1 makes it mandatory). A server that does not
	 * (Dovecot's own NTLM, "a standalone server") checks the response
	 * without any domain, so the domain is left out of the hash there
	 * and only named in the message. */
	if (sasl_ntlm_v2_hash(s->nt_hash, s->user, c.has_nb_domain ? domain : NULL, v2, why_r) < 0)
		return NULL;
	if (s->ntlm_fixed) {
		memcpy(cc, s->ntlm_cc, sizeof(cc));
		now = s->ntlm_time;
	} else {
		if (RAND_bytes(cc, sizeof(cc)) != 1) {
			OPENSSL_cleanse(v2, sizeof(v2));
			*why_r = "no random bytes for the NTLM client challenge";
			return NULL;
		}
		now = ((uint64_t)time(NULL) + NTLM_FILETIME_UNIX_OFFSET) * 10000000u;
	}
	if (sasl_ntlm_v2_response(v2, c.chal, cc, c.has_time ? c.time : now,
	                          c.ti != NULL ? c.ti : eol, c.ti != NULL ? c.ti_len : sizeof(eol),
	                          lm, &nt, &ntlen, why_r) < 0) {
		OPENSSL_cleanse(v2, sizeof(v2));
		return NULL;
	}
	OPENSSL_cleanse(v2, sizeof(v2));
	/* MS-NLMP 3.1.5.1.2: with the server's MsvAvTimestamp the LMv2
	 * response is Z(24) */
	if (c.has_time)
		memset(lm, 0, sizeof(lm));

	cap = NTLM_HEADER_AUTHENTICATE + sizeof(lm) + ntlen + 2 * strlen(domain) +
	      2 * strlen(s->user);
	msg = calloc(1, cap);
	if (msg == NULL)
		abort();
	memcpy(msg, "NTLMSSP", 8);
	le32_put(msg + 8, 3);
	n = NTLM_HEADER_AUTHENTICATE;
	memcpy(msg + n, lm, sizeof(lm));
	ntlm_field_put(msg + 12, sizeof(lm), n);
	n += sizeof(lm);
	memcpy(msg + n, nt, ntlen);
	ntlm_field_put(msg + 20, ntlen, n);
	n += ntlen;
	ntlm_string_put(msg, &n, msg + 28, domain, unicode);
	ntlm_string_put(msg, &n, msg + 36, s->user, unicode);
	ntlm_field_put(msg + 44, 0, n); /* Workstation: none */
	ntlm_field_put(msg + 52, 0, n); /* EncryptedRandomSessionKey: none */
	le32_put(msg + 60, (c.flags & NTLM_F_OURS & ~(NTLM_F_UNICODE | NTLM_F_OEM)) | NTLM_F_NTLM |
	                           (unicode ? NTLM_F_UNICODE : NTLM_F_OEM));
	enc = b64(msg, n);
	OPENSSL_cleanse(msg, cap);
	OPENSSL_cleanse(nt, ntlen);
	OPENSSL_cleanse(lm, sizeof(lm));
	free(msg);
	free(nt);
	return enc;
}

/* NTLM: "DOMAIN\user" split into s->domain and s->user; the NT hash
 * computed, and user and domain checked, so that a bad one fails before
 * anything is sent. Returns 0, or -1 with *error_r (static). */
static int ntlm_setup(struct imap_sasl *s, const char **error_r)
{
	unsigned char check[SASL_NTLM_HASH_SIZE];
	char *bs = strchr(s->user, '\\');

	if (bs != NULL) {
		*bs = '\0';
		if (s->user[0] != '\0')
			s->domain = xstrdup(s->user);
		memmove(s->user, bs + 1, strlen(bs + 1) + 1);
	}
	/* NTOWFv2 with a dummy key: checks user and domain */
	if (sasl_ntlm_v2_hash(s->nt_hash, s->user, s->domain, check, error_r) < 0 ||
	    sasl_ntlm_nt_hash(s->secret, s->nt_hash, error_r) < 0)
		return -1;
	return 0;
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
	if (m == IMAP_LOGIN_NTLM && ntlm_setup(s, error_r) < 0) {
		imap_sasl_free(&s);
		return NULL;
	}
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
	OPENSSL_cleanse(s->nt_hash, sizeof(s->nt_hash));
	free(s->user);
	free(s->domain);
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
	} else if (s->mech == IMAP_LOGIN_NTLM) {
		const char *why;

		/* "+ " (whatever it carries) asks for the NEGOTIATE message;
		 * the next one is the CHALLENGE, answered by AUTHENTICATE */
		if (s->steps >= 2)
			return sasl_cancel(s, "a third NTLM challenge");
		if (s->steps == 0) {
			s->resp = ntlm_negotiate(s);
		} else {
			n = b64_decode(challenge, len, &chal);
			if (n <= 0) {
				if (n == 0)
					free(chal);
				return sasl_cancel(s, "the NTLM challenge is empty or not base64");
			}
			s->resp = ntlm_authenticate(s, chal, (size_t)n, &why);
			free(chal);
			if (s->resp == NULL)
				return sasl_cancel(s, why);
		}
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
