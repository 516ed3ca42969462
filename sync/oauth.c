/* oauth.c - see oauth.h */
#include "oauth.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>
#include <openssl/provider.h>

struct sy_oauth_key {
	char *iss;       /* client_email */
	char *kid;       /* private_key_id or NULL */
	char *token_uri; /* where the JWT goes (and its "aud") */
	EVP_PKEY *pkey;  /* RSA */
};

static void say(char *err, size_t errsize, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

static void say(char *err, size_t errsize, const char *fmt, ...)
{
	va_list ap;

	if (errsize == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errsize, fmt, ap);
	va_end(ap);
}

static char *xstrdup(const char *s)
{
	char *p = strdup(s);

	if (p == NULL)
		abort();
	return p;
}

static void wipe_free(char **p)
{
	if (*p != NULL) {
		OPENSSL_cleanse(*p, strlen(*p));
		free(*p);
		*p = NULL;
	}
}

/* --- a small bounded growable buffer --- */

struct buf {
	char *p;
	size_t len, cap;
};

static void buf_add(struct buf *b, const void *data, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap != 0 ? b->cap : 256;
		char *np;

		while (b->len + n + 1 > cap)
			cap *= 2;
		np = malloc(cap);
		if (np == NULL)
			abort();
		if (b->p != NULL) {
			memcpy(np, b->p, b->len);
			OPENSSL_cleanse(b->p, b->cap);
			free(b->p);
		}
		b->p = np;
		b->cap = cap;
	}
	memcpy(b->p + b->len, data, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void buf_str(struct buf *b, const char *s)
{
	buf_add(b, s, strlen(s));
}

static void buf_wipe(struct buf *b)
{
	if (b->p != NULL) {
		OPENSSL_cleanse(b->p, b->cap);
		free(b->p);
	}
	memset(b, 0, sizeof(*b));
}

/* --- JSON: one string member of the top-level object --- */

struct js {
	const char *s;
	size_t len, i;
	int depth;
};

#define JSON_DEPTH_MAX 32

static void js_ws(struct js *j)
{
	while (j->i < j->len && (j->s[j->i] == ' ' || j->s[j->i] == '\t' || j->s[j->i] == '\n' ||
	                         j->s[j->i] == '\r'))
		j->i++;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static void utf8_add(struct buf *out, unsigned cp)
{
	unsigned char u[4];
	size_t n;

	if (cp < 0x80) {
		u[0] = (unsigned char)cp;
		n = 1;
	} else if (cp < 0x800) {
		u[0] = (unsigned char)(0xC0 | (cp >> 6));
		u[1] = (unsigned char)(0x80 | (cp & 0x3F));
		n = 2;
	} else if (cp < 0x10000) {
		u[0] = (unsigned char)(0xE0 | (cp >> 12));
		u[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
		u[2] = (unsigned char)(0x80 | (cp & 0x3F));
		n = 3;
	} else {
		u[0] = (unsigned char)(0xF0 | (cp >> 18));
		u[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
		u[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
		u[3] = (unsigned char)(0x80 | (cp & 0x3F));
		n = 4;
	}
	buf_add(out, u, n);
}

static int js_hex4(struct js *j, unsigned *cp)
{
	unsigned v = 0;

	if (j->len - j->i < 4)
		return -1;
	for (int k = 0; k < 4; k++) {
		int h = hexval(j->s[j->i + (size_t)k]);

		if (h < 0)
			return -1;
		v = v * 16 + (unsigned)h;
	}
	j->i += 4;
	*cp = v;
	return 0;
}

/* A string at j->i (the opening quote); decoded into out unless NULL. */
static int js_string(struct js *j, struct buf *out)
{
	if (j->i >= j->len || j->s[j->i] != '"')
		return -1;
	j->i++;
	while (j->i < j->len) {
		char c = j->s[j->i++];
		unsigned cp;

		if (c == '"')
			return 0;
		if ((unsigned char)c < 0x20)
			return -1;
		if (c != '\\') {
			if (out != NULL)
				buf_add(out, &c, 1);
			continue;
		}
		if (j->i >= j->len)
			return -1;
		c = j->s[j->i++];
		switch (c) {
		case '"':
		case '\\':
		case '/':
			break;
		case 'b':
			c = '\b';
			break;
		case 'f':
			c = '\f';
			break;
		case 'n':
			c = '\n';
			break;
		case 'r':
			c = '\r';
			break;
		case 't':
			c = '\t';
			break;
		case 'u':
			if (js_hex4(j, &cp) < 0)
				return -1;
			if (cp >= 0xD800 && cp < 0xDC00) {
				unsigned lo;

				if (j->len - j->i < 2 || j->s[j->i] != '\\' ||
				    j->s[j->i + 1] != 'u')
					return -1;
				j->i += 2;
				if (js_hex4(j, &lo) < 0 || lo < 0xDC00 || lo > 0xDFFF)
					return -1;
				cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
			} else if (cp >= 0xDC00 && cp <= 0xDFFF) {
				return -1;
			}
			if (out != NULL)
				utf8_add(out, cp);
			continue;
		default:
			return -1;
		}
		if (out != NULL)
			buf_add(out, &c, 1);
	}
	return -1;
}

static int js_value(struct js *j);

/* An object or array at j->i: "{" members "}" or "[" values "]". */
static int js_container(struct js *j)
{
	char close = j->s[j->i] == '{' ? '}' : ']';

	if (++j->depth > JSON_DEPTH_MAX)
		return -1;
	j->i++;
	js_ws(j);
	if (j->i < j->len && j->s[j->i] == close) {
		j->i++;
		j->depth--;
		return 0;
	}
	for (;;) {
		if (close == '}') {
			if (js_string(j, NULL) < 0)
				return -1;
			js_ws(j);
			if (j->i >= j->len || j->s[j->i] != ':')
				return -1;
			j->i++;
		}
		if (js_value(j) < 0)
			return -1;
		js_ws(j);
		if (j->i >= j->len)
			return -1;
		if (j->s[j->i] == close) {
			j->i++;
			j->depth--;
			return 0;
		}
		if (j->s[j->i] != ',')
			return -1;
		j->i++;
	}
}

/* Any value (skipped), with the white space before it. */
static int js_value(struct js *j)
{
	js_ws(j);
	if (j->i >= j->len)
		return -1;
	if (j->s[j->i] == '"')
		return js_string(j, NULL);
	if (j->s[j->i] == '{' || j->s[j->i] == '[')
		return js_container(j);
	/* number, true, false, null: a run of these characters */
	{
		size_t start = j->i;

		while (j->i < j->len && strchr("+-.0123456789eEtruefalsn", j->s[j->i]) != NULL)
			j->i++;
		return j->i > start ? 0 : -1;
	}
}

int sy_oauth_json_string(const char *json, size_t len, const char *name, char **value_r)
{
	struct js j = {json, len, 0, 1};
	struct buf key = {0}, val = {0};
	int found = 0;

	*value_r = NULL;
	js_ws(&j);
	if (j.i >= j.len || j.s[j.i] != '{')
		return -1;
	j.i++;
	js_ws(&j);
	if (j.i < j.len && j.s[j.i] == '}')
		return 0;
	for (;;) {
		int match;

		key.len = 0;
		buf_add(&key, "", 0);
		if (js_string(&j, &key) < 0)
			goto bad;
		js_ws(&j);
		if (j.i >= j.len || j.s[j.i] != ':')
			goto bad;
		j.i++;
		js_ws(&j);
		match = !found && strlen(key.p) == key.len && strcmp(key.p, name) == 0;
		if (match && j.i < j.len && j.s[j.i] == '"') {
			buf_add(&val, "", 0);
			if (js_string(&j, &val) < 0)
				goto bad;
			found = 1;
		} else if (js_value(&j) < 0) {
			goto bad;
		}
		js_ws(&j);
		if (j.i >= j.len)
			goto bad;
		if (j.s[j.i] == '}')
			break;
		if (j.s[j.i] != ',')
			goto bad;
		j.i++;
		js_ws(&j);
	}
	buf_wipe(&key);
	if (!found)
		return 0;
	if (strlen(val.p) != val.len) { /* an embedded \u0000: not a usable value */
		buf_wipe(&val);
		return 0;
	}
	*value_r = val.p;
	return 1;
bad:
	buf_wipe(&key);
	buf_wipe(&val);
	return -1;
}

/* --- key loading --- */

/* Never prompt for a PEM passphrase on the terminal. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
	(void)buf;
	(void)size;
	(void)rwflag;
	(void)u;
	return -1;
}

static const char *ssl_reason(void)
{
	unsigned long e = ERR_peek_last_error();
	const char *r = e != 0 ? ERR_reason_error_string(e) : NULL;

	return r != NULL ? r : "unknown error";
}

/* The whole file (at most SY_OAUTH_KEY_FILE_MAX bytes) or NULL + err. */
static int read_small_file(const char *path, struct buf *out, char *err, size_t errsize)
{
	char chunk[4096];
	FILE *fp = fopen(path, "rb");
	size_t n;

	if (fp == NULL) {
		say(err, errsize, "can not read key file %s: %s", path, strerror(errno));
		return -1;
	}
	while ((n = fread(chunk, 1, sizeof(chunk), fp)) > 0) {
		if (out->len + n > SY_OAUTH_KEY_FILE_MAX) {
			fclose(fp);
			OPENSSL_cleanse(chunk, sizeof(chunk));
			say(err, errsize, "key file %s is larger than %d bytes", path,
			    SY_OAUTH_KEY_FILE_MAX);
			return -1;
		}
		buf_add(out, chunk, n);
	}
	OPENSSL_cleanse(chunk, sizeof(chunk));
	if (ferror(fp)) {
		say(err, errsize, "can not read key file %s: %s", path, strerror(errno));
		fclose(fp);
		return -1;
	}
	fclose(fp);
	if (out->len == 0) {
		say(err, errsize, "key file %s is empty", path);
		return -1;
	}
	return 0;
}

static int key_is_rsa(struct sy_oauth_key *k, const char *path, char *err, size_t errsize)
{
	if (EVP_PKEY_get_base_id(k->pkey) != EVP_PKEY_RSA) {
		say(err, errsize, "the private key in %s is not an RSA key (RS256 needs one)",
		    path);
		return -1;
	}
	return 0;
}

static enum sy_oauth_status load_json(const char *path, struct sy_oauth_key *k, char *err,
                                      size_t errsize)
{
	struct buf file = {0};
	char *type = NULL, *pem = NULL;
	BIO *bio;
	int rc = -1;

	if (read_small_file(path, &file, err, errsize) < 0)
		return SY_OAUTH_BADKEY;
	if (sy_oauth_json_string(file.p, file.len, "type", &type) < 0) {
		say(err, errsize, "key file %s is not a JSON object", path);
		goto out;
	}
	if (type != NULL && strcmp(type, "service_account") != 0) {
		say(err, errsize,
		    "key file %s is of type \"%.40s\", not a Google service account key (\"type\": "
		    "\"service_account\")",
		    path, type);
		goto out;
	}
	if (sy_oauth_json_string(file.p, file.len, "client_email", &k->iss) != 1 ||
	    k->iss[0] == '\0') {
		say(err, errsize, "key file %s has no \"client_email\"", path);
		goto out;
	}
	if (sy_oauth_json_string(file.p, file.len, "private_key", &pem) != 1) {
		say(err, errsize, "key file %s has no \"private_key\"", path);
		goto out;
	}
	(void)sy_oauth_json_string(file.p, file.len, "private_key_id", &k->kid);
	(void)sy_oauth_json_string(file.p, file.len, "token_uri", &k->token_uri);
	bio = BIO_new_mem_buf(pem, -1);
	if (bio == NULL)
		abort();
	ERR_clear_error();
	k->pkey = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL);
	BIO_free(bio);
	if (k->pkey == NULL) {
		say(err, errsize, "key file %s: \"private_key\" is not a usable PEM key: %s", path,
		    ssl_reason());
		ERR_clear_error();
		goto out;
	}
	rc = key_is_rsa(k, path, err, errsize);
out:
	free(type);
	wipe_free(&pem);
	buf_wipe(&file);
	return rc == 0 ? SY_OAUTH_OK : SY_OAUTH_BADKEY;
}

static PKCS12 *p12_read(const struct buf *file)
{
	const unsigned char *p = (const unsigned char *)file->p;

	return d2i_PKCS12(NULL, &p, (long)file->len);
}

/* "iss;file.p12;passphrase" (the passphrase may hold ';'). */
static enum sy_oauth_status load_p12(const char *spec, struct sy_oauth_key *k, char *err,
                                     size_t errsize)
{
	const char *s1 = strchr(spec, ';'), *s2 = s1 != NULL ? strchr(s1 + 1, ';') : NULL;
	struct buf file = {0};
	char *path;
	PKCS12 *p12 = NULL;
	X509 *cert = NULL;
	int ok;

	if (s1 == NULL || s2 == NULL || s1 == spec || s2 == s1 + 1) {
		say(err, errsize,
		    "the key is not \"iss;file.p12;passphrase\" nor a JSON key file name");
		return SY_OAUTH_BADKEY;
	}
	k->iss = strndup(spec, (size_t)(s1 - spec));
	path = strndup(s1 + 1, (size_t)(s2 - s1 - 1));
	if (k->iss == NULL || path == NULL)
		abort();
	if (read_small_file(path, &file, err, errsize) < 0) {
		free(path);
		return SY_OAUTH_BADKEY;
	}
	ERR_clear_error();
	p12 = p12_read(&file);
	ok = p12 != NULL && PKCS12_parse(p12, s2 + 1, &k->pkey, &cert, NULL) == 1;
	if (!ok && p12 != NULL) {
		/* Google's .p12 files use RC2/3DES, which OpenSSL 3 keeps in its
		 * "legacy" provider; load it (and "default", which an explicit
		 * load would otherwise shadow) for one more try, then unload. */
		OSSL_PROVIDER *legacy = OSSL_PROVIDER_load(NULL, "legacy");
		OSSL_PROVIDER *dflt = OSSL_PROVIDER_load(NULL, "default");

		if (legacy != NULL && dflt != NULL) {
			ERR_clear_error();
			ok = PKCS12_parse(p12, s2 + 1, &k->pkey, &cert, NULL) == 1;
		}
		if (legacy != NULL)
			OSSL_PROVIDER_unload(legacy);
		if (dflt != NULL)
			OSSL_PROVIDER_unload(dflt);
	}
	if (!ok) {
		say(err, errsize,
		    "can not use the PKCS#12 file %s (wrong passphrase or not a PKCS#12 key?): %s",
		    path, ssl_reason());
		ERR_clear_error();
	} else if (k->pkey == NULL) {
		say(err, errsize, "the PKCS#12 file %s holds no private key", path);
		ok = 0;
	}
	X509_free(cert);
	PKCS12_free(p12);
	buf_wipe(&file);
	if (ok && key_is_rsa(k, path, err, errsize) < 0)
		ok = 0;
	free(path);
	return ok ? SY_OAUTH_OK : SY_OAUTH_BADKEY;
}

enum sy_oauth_status sy_oauth_key_load(const char *spec, struct sy_oauth_key **key_r, char *err,
                                       size_t errsize)
{
	struct sy_oauth_key *k = calloc(1, sizeof(*k));
	enum sy_oauth_status st;

	if (k == NULL)
		abort();
	*key_r = NULL;
	st = strchr(spec, ';') != NULL ? load_p12(spec, k, err, errsize)
	                               : load_json(spec, k, err, errsize);
	if (st != SY_OAUTH_OK) {
		sy_oauth_key_free(&k);
		return st;
	}
	if (k->token_uri == NULL || k->token_uri[0] == '\0') {
		const char *env = getenv(SY_OAUTH_TOKEN_URI_ENV);

		free(k->token_uri);
		k->token_uri = xstrdup(env != NULL && env[0] != '\0' ? env : SY_OAUTH_TOKEN_URI);
	}
	*key_r = k;
	return SY_OAUTH_OK;
}

void sy_oauth_key_free(struct sy_oauth_key **key)
{
	struct sy_oauth_key *k = key != NULL ? *key : NULL;

	if (k == NULL)
		return;
	free(k->iss);
	free(k->kid);
	free(k->token_uri);
	EVP_PKEY_free(k->pkey);
	free(k);
	*key = NULL;
}

const char *sy_oauth_key_iss(const struct sy_oauth_key *key)
{
	return key->iss;
}

const char *sy_oauth_key_token_uri(const struct sy_oauth_key *key)
{
	return key->token_uri;
}

/* --- JWT --- */

static void b64url_add(struct buf *out, const unsigned char *data, size_t n)
{
	static const char tab[] =
	        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	size_t i;

	for (i = 0; i + 3 <= n; i += 3) {
		uint32_t v = (uint32_t)data[i] << 16 | (uint32_t)data[i + 1] << 8 | data[i + 2];
		char q[4] = {tab[v >> 18], tab[(v >> 12) & 63], tab[(v >> 6) & 63], tab[v & 63]};

		buf_add(out, q, 4);
	}
	if (n - i == 1) {
		uint32_t v = (uint32_t)data[i] << 16;
		char q[2] = {tab[v >> 18], tab[(v >> 12) & 63]};

		buf_add(out, q, 2);
	} else if (n - i == 2) {
		uint32_t v = (uint32_t)data[i] << 16 | (uint32_t)data[i + 1] << 8;
		char q[3] = {tab[v >> 18], tab[(v >> 12) & 63], tab[(v >> 6) & 63]};

		buf_add(out, q, 3);
	}
}

/* A JSON string literal for s (quotes, backslashes, controls escaped). */
static void json_quote(struct buf *out, const char *s)
{
	buf_add(out, "\"", 1);
	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;
		char esc[8];

		if (c == '"' || c == '\\') {
			esc[0] = '\\';
			esc[1] = (char)c;
			buf_add(out, esc, 2);
		} else if (c < 0x20 || c == 0x7F) {
			snprintf(esc, sizeof(esc), "\\u%04x", c);
			buf_add(out, esc, 6);
		} else {
			buf_add(out, s, 1);
		}
	}
	buf_add(out, "\"", 1);
}

char *sy_oauth_jwt_new(const struct sy_oauth_key *key, const char *sub, time_t now, char *err,
                       size_t errsize)
{
	struct buf head = {0}, claims = {0}, jwt = {0};
	EVP_MD_CTX *md = NULL;
	unsigned char *sig = NULL;
	size_t siglen = 0;
	char num[64];

	buf_str(&head, "{\"alg\":\"RS256\",\"typ\":\"JWT\"");
	if (key->kid != NULL && key->kid[0] != '\0') {
		buf_str(&head, ",\"kid\":");
		json_quote(&head, key->kid);
	}
	buf_str(&head, "}");
	buf_str(&claims, "{\"iss\":");
	json_quote(&claims, key->iss);
	buf_str(&claims, ",\"scope\":");
	json_quote(&claims, SY_OAUTH_SCOPE);
	buf_str(&claims, ",\"aud\":");
	json_quote(&claims, key->token_uri);
	buf_str(&claims, ",\"sub\":");
	json_quote(&claims, sub);
	snprintf(num, sizeof(num), ",\"iat\":%lld,\"exp\":%lld}", (long long)now,
	         (long long)now + SY_OAUTH_LIFETIME);
	buf_str(&claims, num);

	b64url_add(&jwt, (const unsigned char *)head.p, head.len);
	buf_add(&jwt, ".", 1);
	b64url_add(&jwt, (const unsigned char *)claims.p, claims.len);
	buf_wipe(&head);
	buf_wipe(&claims);

	md = EVP_MD_CTX_new();
	if (md == NULL)
		abort();
	ERR_clear_error();
	if (EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key->pkey) != 1 ||
	    EVP_DigestSign(md, NULL, &siglen, (const unsigned char *)jwt.p, jwt.len) != 1 ||
	    (sig = malloc(siglen)) == NULL ||
	    EVP_DigestSign(md, sig, &siglen, (const unsigned char *)jwt.p, jwt.len) != 1) {
		say(err, errsize, "can not sign the JWT (RS256): %s", ssl_reason());
		ERR_clear_error();
		EVP_MD_CTX_free(md);
		free(sig);
		buf_wipe(&jwt);
		return NULL;
	}
	EVP_MD_CTX_free(md);
	buf_add(&jwt, ".", 1);
	b64url_add(&jwt, sig, siglen);
	free(sig);
	return jwt.p;
}

/* --- HTTPS POST --- */

struct url {
	char host[256];
	char port[8];
	char path[1024];
	char hostport[272]; /* for the Host header */
};

static int url_parse(const char *uri, struct url *u, char *err, size_t errsize)
{
	const char *p, *hend, *slash;
	size_t hlen;

	memset(u, 0, sizeof(*u));
	if (strncasecmp(uri, "https://", 8) != 0) {
		say(err, errsize, "token endpoint %.200s is not an https:// URL", uri);
		return -1;
	}
	p = uri + 8;
	slash = p + strcspn(p, "/?#");
	if (*p == '[') { /* IPv6 literal */
		hend = memchr(p, ']', (size_t)(slash - p));
		if (hend == NULL)
			goto bad;
		hlen = (size_t)(hend - p - 1);
		if (hlen == 0 || hlen >= sizeof(u->host))
			goto bad;
		memcpy(u->host, p + 1, hlen);
		hend++;
	} else {
		hend = memchr(p, ':', (size_t)(slash - p));
		if (hend == NULL)
			hend = slash;
		hlen = (size_t)(hend - p);
		if (hlen == 0 || hlen >= sizeof(u->host))
			goto bad;
		memcpy(u->host, p, hlen);
	}
	if (hend < slash && *hend == ':') {
		size_t plen = (size_t)(slash - hend - 1);

		if (plen == 0 || plen >= sizeof(u->port) || strspn(hend + 1, "0123456789") < plen)
			goto bad;
		memcpy(u->port, hend + 1, plen);
	} else if (hend != slash) {
		goto bad;
	} else {
		snprintf(u->port, sizeof(u->port), "443");
	}
	if (*slash == '\0')
		snprintf(u->path, sizeof(u->path), "/");
	else if (*slash == '/' && strlen(slash) < sizeof(u->path) &&
	         strpbrk(slash, " \r\n\t#") == NULL)
		snprintf(u->path, sizeof(u->path), "%s", slash);
	else
		goto bad;
	snprintf(u->hostport, sizeof(u->hostport), "%.*s", (int)(slash - p), p);
	return 0;
bad:
	say(err, errsize, "token endpoint %.200s is not a usable https:// URL", uri);
	return -1;
}

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A connected TCP socket (blocking, with send/receive timeouts) or -1. */
static int tcp_connect(const struct url *u, unsigned timeout_ms, char *err, size_t errsize)
{
	struct addrinfo hints, *res = NULL, *ai;
	struct timeval tv;
	int fd = -1, rc, last = 0;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	rc = getaddrinfo(u->host, u->port, &hints, &res);
	if (rc != 0) {
		say(err, errsize, "can not resolve %s: %s", u->host, gai_strerror(rc));
		return -1;
	}
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		struct pollfd pfd;
		socklen_t sl = sizeof(last);
		int flags;

		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
		if (fd < 0) {
			last = errno;
			continue;
		}
		flags = fcntl(fd, F_GETFL);
		fcntl(fd, F_SETFL, flags | O_NONBLOCK);
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
			fcntl(fd, F_SETFL, flags);
			break;
		}
		last = errno;
		if (last == EINPROGRESS) {
			pfd.fd = fd;
			pfd.events = POLLOUT;
			rc = poll(&pfd, 1, (int)timeout_ms);
			if (rc == 0)
				last = ETIMEDOUT;
			else if (rc < 0)
				last = errno;
			else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &last, &sl) == 0 &&
			         last == 0) {
				fcntl(fd, F_SETFL, flags);
				break;
			}
		}
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0) {
		say(err, errsize, "can not connect to %s port %s: %s", u->host, u->port,
		    strerror(last != 0 ? last : ECONNREFUSED));
		return -1;
	}
	tv.tv_sec = (time_t)(timeout_ms / 1000);
	tv.tv_usec = (suseconds_t)(timeout_ms % 1000) * 1000;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	return fd;
}

/* Decodes a chunked body in place; -1 when malformed. */
static int dechunk(char *body, size_t *len)
{
	size_t in = 0, out = 0;

	for (;;) {
		char *end;
		unsigned long n;
		char *eol = memmem(body + in, *len - in, "\r\n", 2);

		if (eol == NULL)
			return -1;
		errno = 0;
		n = strtoul(body + in, &end, 16);
		if (end == body + in || errno != 0)
			return -1;
		in = (size_t)(eol - body) + 2;
		if (n == 0)
			break;
		if (n > *len - in || *len - in - n < 2)
			return -1;
		memmove(body + out, body + in, n);
		out += n;
		in += n + 2;
	}
	*len = out;
	body[out] = '\0';
	return 0;
}

/* A printable, bounded copy of an endpoint-supplied text for a message. */
static void sanitize(char *dst, size_t size, const char *src)
{
	size_t i = 0;

	for (; src != NULL && *src != '\0' && i + 1 < size; src++)
		dst[i++] = (unsigned char)*src < 0x20 || *src == 0x7F ? ' ' : *src;
	dst[i] = '\0';
}

static enum sy_oauth_status parse_reply(struct buf *reply, const char *uri, char **token_r,
                                        char *err, size_t errsize)
{
	char *hdr_end, *body, *line, *cl;
	char *error = NULL, *desc = NULL, e1[128], e2[256];
	size_t blen;
	int status = 0, json;

	if (reply->len == 0) {
		say(err, errsize, "token endpoint %s closed the connection without an answer", uri);
		return SY_OAUTH_UNREACHABLE;
	}
	if (sscanf(reply->p, "HTTP/1.%*1[01] %3d", &status) != 1 ||
	    (hdr_end = strstr(reply->p, "\r\n\r\n")) == NULL) {
		say(err, errsize, "token endpoint %s did not answer in HTTP", uri);
		return SY_OAUTH_UNREACHABLE;
	}
	*hdr_end = '\0';
	body = hdr_end + 4;
	blen = reply->len - (size_t)(body - reply->p);
	for (line = strstr(reply->p, "\r\n"); line != NULL; line = strstr(line + 2, "\r\n")) {
		if (strncasecmp(line + 2, "Transfer-Encoding:", 18) == 0 &&
		    strcasestr(line + 20, "chunked") != NULL && dechunk(body, &blen) < 0) {
			say(err, errsize, "token endpoint %s sent a malformed chunked reply", uri);
			return SY_OAUTH_UNREACHABLE;
		}
		if (strncasecmp(line + 2, "Content-Length:", 15) == 0) {
			cl = line + 17;
			if (strtoull(cl, NULL, 10) > blen) {
				say(err, errsize, "token endpoint %s: the reply was cut short",
				    uri);
				return SY_OAUTH_UNREACHABLE;
			}
		}
	}
	json = sy_oauth_json_string(body, blen, "access_token", token_r);
	if (status == 200 && json == 1 && (*token_r)[0] != '\0')
		return SY_OAUTH_OK;
	if (json == 1)
		wipe_free(token_r);
	(void)sy_oauth_json_string(body, blen, "error", &error);
	(void)sy_oauth_json_string(body, blen, "error_description", &desc);
	sanitize(e1, sizeof(e1), error);
	sanitize(e2, sizeof(e2), desc);
	if (error != NULL || desc != NULL)
		say(err, errsize, "token endpoint %s refused (HTTP %d): %s%s%s", uri, status, e1,
		    desc != NULL ? ": " : "", e2);
	else if (status == 200)
		say(err, errsize, "token endpoint %s answered without an access_token", uri);
	else
		say(err, errsize, "token endpoint %s refused (HTTP %d, no error in the reply)", uri,
		    status);
	free(error);
	free(desc);
	return SY_OAUTH_REFUSED;
}

enum sy_oauth_status sy_oauth_token_fetch(const struct sy_oauth_key *key, const char *sub,
                                          const struct tls_client_opts *tls, unsigned timeout_ms,
                                          char **token_r, char *err, size_t errsize)
{
	struct tls_client_opts to = *tls;
	struct tls_client_ctx *ctx = NULL;
	struct buf req = {0}, reply = {0};
	enum sy_oauth_status st = SY_OAUTH_UNREACHABLE;
	const char *uri = key->token_uri, *e;
	char *jwt = NULL, len[32], ebuf[256];
	struct url u;
	SSL *ssl = NULL;
	long long deadline;
	int fd = -1;

	*token_r = NULL;
	if (timeout_ms == 0)
		timeout_ms = SY_OAUTH_TIMEOUT_MS_DEF;
	deadline = now_ms() + timeout_ms;
	if (url_parse(uri, &u, err, errsize) < 0)
		return SY_OAUTH_UNREACHABLE;
	jwt = sy_oauth_jwt_new(key, sub, time(NULL), err, errsize);
	if (jwt == NULL)
		return SY_OAUTH_BADKEY;

	buf_str(&req, "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer"
	              "&assertion=");
	buf_str(&req, jwt); /* base64url and dots: nothing to escape */
	wipe_free(&jwt);
	{
		struct buf whole = {0};

		snprintf(len, sizeof(len), "%zu", req.len);
		buf_str(&whole, "POST ");
		buf_str(&whole, u.path);
		buf_str(&whole, " HTTP/1.1\r\nHost: ");
		buf_str(&whole, u.hostport);
		buf_str(&whole, "\r\nUser-Agent: imapferry-sync\r\nAccept: application/json\r\n"
		                "Content-Type: application/x-www-form-urlencoded\r\n"
		                "Connection: close\r\nContent-Length: ");
		buf_str(&whole, len);
		buf_str(&whole, "\r\n\r\n");
		buf_add(&whole, req.p, req.len);
		buf_wipe(&req);
		req = whole;
	}

	/* the endpoint's own name is verified, not the IMAP server's */
	to.server_name = NULL;
	to.no_verify_host = 0;
	ctx = tls_client_ctx_new(&to, &e);
	if (ctx == NULL) {
		say(err, errsize, "token endpoint %s: TLS setup failed: %s", uri, e);
		goto out;
	}
	fd = tcp_connect(&u, timeout_ms, ebuf, sizeof(ebuf));
	if (fd < 0) {
		say(err, errsize, "token endpoint %s is unreachable: %s", uri, ebuf);
		goto out;
	}
	ssl = tls_client_ssl_new(ctx, u.host, &e);
	if (ssl == NULL) {
		say(err, errsize, "token endpoint %s: TLS setup failed: %s", uri, e);
		goto out;
	}
	SSL_set_options(ssl, SSL_OP_IGNORE_UNEXPECTED_EOF); /* lengths are checked */
	SSL_set_fd(ssl, fd);
	ERR_clear_error();
	if (SSL_connect(ssl) != 1) {
		say(err, errsize, "token endpoint %s: TLS handshake failed: %s", uri,
		    tls_error_queue_string(ebuf, sizeof(ebuf), ssl));
		goto out;
	}
	for (size_t off = 0; off < req.len;) {
		int n = SSL_write(ssl, req.p + off, (int)(req.len - off));

		if (n <= 0 || now_ms() > deadline) {
			say(err, errsize, "token endpoint %s: sending the request failed: %s", uri,
			    n <= 0 ? tls_error_queue_string(ebuf, sizeof(ebuf), ssl) : "timed out");
			goto out;
		}
		off += (size_t)n;
	}
	for (;;) {
		char chunk[4096];
		int n;

		errno = 0;
		n = SSL_read(ssl, chunk, sizeof(chunk));

		if (n <= 0) {
			int se = SSL_get_error(ssl, n);

			if (se == SSL_ERROR_ZERO_RETURN ||
			    (se == SSL_ERROR_SYSCALL && ERR_peek_error() == 0 && errno == 0))
				break;
			say(err, errsize, "token endpoint %s: reading the reply failed: %s", uri,
			    se == SSL_ERROR_SYSCALL && (errno == EAGAIN || errno == EWOULDBLOCK)
			            ? "timed out"
			            : tls_error_queue_string(ebuf, sizeof(ebuf), ssl));
			goto out;
		}
		if (reply.len + (size_t)n > SY_OAUTH_REPLY_MAX) {
			say(err, errsize, "token endpoint %s: reply larger than %d bytes", uri,
			    SY_OAUTH_REPLY_MAX);
			goto out;
		}
		buf_add(&reply, chunk, (size_t)n);
		OPENSSL_cleanse(chunk, sizeof(chunk));
		if (now_ms() > deadline) {
			say(err, errsize, "token endpoint %s: no complete reply after %u ms", uri,
			    timeout_ms);
			goto out;
		}
	}
	st = parse_reply(&reply, uri, token_r, err, errsize);
out:
	if (ssl != NULL) {
		SSL_shutdown(ssl);
		SSL_free(ssl);
	}
	if (fd >= 0)
		close(fd);
	tls_client_ctx_free(&ctx);
	buf_wipe(&req);
	buf_wipe(&reply);
	ERR_clear_error();
	return st;
}
