/* hdrkey.c - see hdrkey.h */
#include "hdrkey.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <openssl/evp.h>

#include "imapferry/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Backing store for the error_r strings of this module (see hdrkey.h). */
static _Thread_local char hk_errbuf[512];

struct sy_hdrkey_opts {
	char **names; /* upper-cased --useheader names (ALL excluded) */
	size_t count;
	int all;
	int messageidnodomain, noskipsize;
	pcre2_code *skip; /* NULL: no --skipheader */
};

/* One normalised line, stored in struct hk_lines.buf at off. */
struct hk_span {
	size_t off, len;
};

/* The lines of a key being built, and the scratch space for the value of the
 * field being parsed. */
struct hk_lines {
	const struct sy_hdrkey_opts *opts;
	char *buf; /* all lines, back to back */
	size_t used, cap;
	struct hk_span *v;
	size_t count, vcap;
	char *val; /* raw value of the current field (folded lines appended) */
	size_t vlen, valcap;
	pcre2_match_data *md;
	const char *error;
};

/* Perl's \s on a byte string. */
static int hk_space(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

static char hk_upper(char c)
{
	return c >= 'a' && c <= 'z' ? (char)(c - 'a' + 'A') : c;
}

/* Capacity (in elements of elem bytes) that holds need, doubling from cap;
 * 0 on overflow. */
static size_t hk_newcap(size_t cap, size_t need, size_t elem)
{
	size_t ncap = cap != 0 ? cap : 16;

	while (ncap < need) {
		if (ncap > SIZE_MAX / 2 / elem)
			return 0;
		ncap *= 2;
	}
	return ncap;
}

/* Makes room for need bytes in *p (capacity *cap). 0 or -1. */
static int hk_reserve(char **p, size_t *cap, size_t need)
{
	size_t ncap;
	char *np;

	if (*p != NULL && need <= *cap)
		return 0;
	ncap = hk_newcap(*cap, need, 1);
	if (ncap == 0 || (np = realloc(*p, ncap)) == NULL)
		return -1;
	*p = np;
	*cap = ncap;
	return 0;
}

/* Makes room for one more span in l->v. 0 or -1. */
static int hk_reserve_span(struct hk_lines *l)
{
	size_t ncap;
	struct hk_span *nv;

	if (l->v != NULL && l->count < l->vcap)
		return 0;
	ncap = hk_newcap(l->vcap, l->count + 1, sizeof(*l->v));
	if (ncap == 0 || (nv = realloc(l->v, ncap * sizeof(*l->v))) == NULL)
		return -1;
	l->v = nv;
	l->vcap = ncap;
	return 0;
}

/* --- options --- */

/* RFC 5322 3.6.8: field-name = 1*ftext, ftext = %d33-57 / %d59-126. */
static int hk_valid_name(const char *s)
{
	if (*s == '\0')
		return 0;
	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;

		if (c < 33 || c > 126 || c == ':')
			return 0;
	}
	return 1;
}

int sy_hdrkey_opts_init(struct sy_hdrkey_opts **opts_r, const struct sy_hdrkey_settings *set,
                        const char **error_r)
{
	static const char *const defaults[] = {"Message-Id", "Received"};
	const char *const *names = defaults;
	size_t count = 2, i;
	struct sy_hdrkey_opts *opts;

	*opts_r = NULL;
	if (set != NULL && set->useheader != NULL && set->useheader_count > 0) {
		names = set->useheader;
		count = set->useheader_count;
	}
	opts = calloc(1, sizeof(*opts));
	if (opts == NULL || (opts->names = calloc(count, sizeof(char *))) == NULL) {
		free(opts);
		*error_r = "out of memory";
		return -1;
	}
	for (i = 0; i < count; i++) {
		size_t j, n;
		char *up;

		if (names[i] == NULL || !hk_valid_name(names[i])) {
			char shown[256];

			/* the name is bad: it may hold control bytes */
			if (names[i] != NULL)
				log_sanitize(shown, sizeof(shown), names[i], strlen(names[i]), 100);
			snprintf(hk_errbuf, sizeof(hk_errbuf),
			         "--useheader \"%s\": not a header field name",
			         names[i] != NULL ? shown : "(null)");
			*error_r = hk_errbuf;
			sy_hdrkey_opts_free(&opts);
			return -1;
		}
		if (strcasecmp(names[i], "ALL") == 0) {
			opts->all = 1;
			continue;
		}
		n = strlen(names[i]);
		up = malloc(n + 1);
		if (up == NULL) {
			sy_hdrkey_opts_free(&opts);
			*error_r = "out of memory";
			return -1;
		}
		for (j = 0; j <= n; j++)
			up[j] = hk_upper(names[i][j]);
		opts->names[opts->count++] = up;
	}
	if (set != NULL) {
		opts->messageidnodomain = set->messageidnodomain;
		opts->noskipsize = set->noskipsize;
	}
	if (set != NULL && set->skipheader != NULL && set->skipheader[0] != '\0') {
		int errcode;
		PCRE2_SIZE erroff;

		/* imapsync matches with m/$skipheader/xi. */
		opts->skip =
		        pcre2_compile((PCRE2_SPTR)set->skipheader, PCRE2_ZERO_TERMINATED,
		                      PCRE2_CASELESS | PCRE2_EXTENDED, &errcode, &erroff, NULL);
		if (opts->skip == NULL) {
			char msg[256];

			pcre2_get_error_message(errcode, (PCRE2_UCHAR *)msg, sizeof(msg));
			snprintf(hk_errbuf, sizeof(hk_errbuf),
			         "--skipheader \"%.200s\": %s at offset %zu", set->skipheader, msg,
			         (size_t)erroff);
			*error_r = hk_errbuf;
			sy_hdrkey_opts_free(&opts);
			return -1;
		}
	}
	*opts_r = opts;
	return 0;
}

void sy_hdrkey_opts_free(struct sy_hdrkey_opts **opts)
{
	size_t i;

	if (*opts == NULL)
		return;
	for (i = 0; i < (*opts)->count; i++)
		free((*opts)->names[i]);
	free((*opts)->names);
	pcre2_code_free((*opts)->skip);
	free(*opts);
	*opts = NULL;
}

/* 1 when the field called name[0..len) is part of the key. */
static int hk_wanted(const struct sy_hdrkey_opts *opts, const char *name, size_t len)
{
	size_t i;

	if (opts->all)
		return 1;
	for (i = 0; i < opts->count; i++) {
		if (strlen(opts->names[i]) == len && strncasecmp(opts->names[i], name, len) == 0)
			return 1;
	}
	return 0;
}

int sy_hdrkey_uses_field(const struct sy_hdrkey_opts *opts, const char *name)
{
	return hk_wanted(opts, name, strlen(name));
}

/* --- fetch items --- */

/* RFC 3501 ATOM-CHAR: no atom-specials ( ) { SP CTL % * " \ ] */
static int hk_atom(const char *s)
{
	for (; *s != '\0'; s++) {
		if (strchr("(){ %*\"\\]", *s) != NULL)
			return 0;
	}
	return 1;
}

/* Appends s to buf[*o..size), escaping '"' and '\\' when esc. 0 or -1. */
static int hk_put(char *buf, size_t size, size_t *o, const char *s, int esc)
{
	for (; *s != '\0'; s++) {
		if (esc && (*s == '"' || *s == '\\')) {
			if (*o + 1 >= size)
				return -1;
			buf[(*o)++] = '\\';
		}
		if (*o + 1 >= size)
			return -1;
		buf[(*o)++] = *s;
	}
	buf[*o] = '\0';
	return 0;
}

int sy_hdrkey_fetch_item(const struct sy_hdrkey_opts *opts, char *buf, size_t bufsize)
{
	size_t o = 0, i;
	int ret;

	if (bufsize == 0)
		return -1;
	if (opts->all) {
		ret = hk_put(buf, bufsize, &o, SY_HDRKEY_WHOLE_ITEM, 0);
	} else {
		ret = hk_put(buf, bufsize, &o, "BODY.PEEK[HEADER.FIELDS (", 0);
		for (i = 0; ret == 0 && i < opts->count; i++) {
			/* header-fld-name = astring; a name is printable ASCII,
			 * so quoting covers every non-atom one. */
			int quote = !hk_atom(opts->names[i]);

			if ((i > 0 && hk_put(buf, bufsize, &o, " ", 0) < 0) ||
			    (quote && hk_put(buf, bufsize, &o, "\"", 0) < 0) ||
			    hk_put(buf, bufsize, &o, opts->names[i], quote) < 0 ||
			    (quote && hk_put(buf, bufsize, &o, "\"", 0) < 0))
				ret = -1;
		}
		if (ret == 0)
			ret = hk_put(buf, bufsize, &o, ")]", 0);
	}
	if (ret < 0)
		buf[0] = '\0';
	return ret;
}

int sy_hdrkey_is_header_item(const char *item_name)
{
	static const char fields[] = "BODY[HEADER.FIELDS";
	size_t len = strlen(item_name), n = sizeof(fields) - 1;

	if (strcasecmp(item_name, "BODY[HEADER]") == 0)
		return 1;
	if (len < n + 2 || strncasecmp(item_name, fields, n) != 0 || item_name[len - 1] != ']')
		return 0;
	/* "BODY[HEADER.FIELDS (...)]" or "BODY[HEADER.FIELDS(...)]", never
	 * ".FIELDS.NOT"; the list itself is not checked. */
	return item_name[n] == ' ' || item_name[n] == '(';
}

/* --- building a key --- */

/* Normalises the raw value v[0..n) in place as imapsync does; returns the new
 * length. */
static size_t hk_normalise(char *v, size_t n)
{
	size_t i, o = 0, start = 0, end = n;

	for (i = 0; i < n; i++) {
		if ((unsigned char)v[i] >= 0x80)
			v[i] = 'X';
		else if (v[i] == '\t')
			v[i] = ' ';
	}
	while (start < end && hk_space((unsigned char)v[start]))
		start++;
	while (end > start && hk_space((unsigned char)v[end - 1]))
		end--;
	for (i = start; i < end; i++) {
		if (hk_space((unsigned char)v[i])) {
			if (o > 0 && v[o - 1] == ' ')
				continue;
			v[o++] = ' ';
		} else {
			v[o++] = v[i];
		}
	}
	return o;
}

static int hk_val_set(struct hk_lines *l, const char *s, size_t n)
{
	if (hk_reserve(&l->val, &l->valcap, n + 1) < 0)
		return -1;
	if (n > 0)
		memcpy(l->val, s, n);
	l->vlen = n;
	return 0;
}

static int hk_val_append(struct hk_lines *l, const char *s, size_t n)
{
	if (hk_reserve(&l->val, &l->valcap, l->vlen + n + 1) < 0)
		return -1;
	if (n > 0)
		memcpy(l->val + l->vlen, s, n);
	l->vlen += n;
	return 0;
}

/* Turns field name[0..nlen) with the raw value in l->val into its line and
 * keeps it unless --skipheader matches. Returns 0 or -1 (l->error set). */
static int hk_emit(struct hk_lines *l, const char *name, size_t nlen)
{
	const struct sy_hdrkey_opts *opts = l->opts;
	size_t vlen = hk_normalise(l->val, l->vlen), i;
	char *line;

	if (opts->messageidnodomain && nlen == 10 && strncasecmp(name, "MESSAGE-ID", 10) == 0 &&
	    vlen > 0 && l->val[0] != '@') {
		/* Keep what precedes the first '@' (when the value starts with
		 * '@' imapsync's substitution does not match: kept whole). */
		char *at = memchr(l->val, '@', vlen);

		if (at != NULL)
			vlen = (size_t)(at - l->val);
	}
	if (hk_reserve(&l->buf, &l->cap, l->used + nlen + 2 + vlen) < 0 || hk_reserve_span(l) < 0) {
		l->error = "out of memory";
		return -1;
	}
	line = l->buf + l->used;
	memcpy(line, name, nlen);
	memcpy(line + nlen, ": ", 2);
	if (vlen > 0)
		memcpy(line + nlen + 2, l->val, vlen);
	for (i = 0; i < nlen + 2 + vlen; i++)
		line[i] = hk_upper(line[i]);
	if (opts->skip != NULL) {
		int rc = pcre2_match(opts->skip, (PCRE2_SPTR)line, nlen + 2 + vlen, 0, 0, l->md,
		                     NULL);

		if (rc >= 0)
			return 0;
		if (rc != PCRE2_ERROR_NOMATCH) {
			char msg[256];

			pcre2_get_error_message(rc, (PCRE2_UCHAR *)msg, sizeof(msg));
			snprintf(hk_errbuf, sizeof(hk_errbuf), "--skipheader match failed: %s",
			         msg);
			l->error = hk_errbuf;
			return -1;
		}
	}
	l->v[l->count].off = l->used;
	l->v[l->count].len = nlen + 2 + vlen;
	l->count++;
	l->used += nlen + 2 + vlen;
	return 0;
}

static int hk_init_lines(struct hk_lines *l, const struct sy_hdrkey_opts *opts)
{
	memset(l, 0, sizeof(*l));
	l->opts = opts;
	if (opts != NULL && opts->skip != NULL) {
		l->md = pcre2_match_data_create_from_pattern(opts->skip, NULL);
		if (l->md == NULL)
			return -1;
	}
	return 0;
}

static void hk_free_lines(struct hk_lines *l)
{
	free(l->buf);
	free(l->v);
	free(l->val);
	pcre2_match_data_free(l->md);
}

/* Sorts the lines bytewise, a prefix before its extensions (Perl's default
 * sort). A Shell sort, because qsort()'s comparator has no context pointer
 * to reach l->buf and a global would make the module non-reentrant. */
static void hk_sort(struct hk_lines *l)
{
	size_t i, j, gap;

	for (gap = l->count / 2; gap > 0; gap /= 2) {
		for (i = gap; i < l->count; i++) {
			struct hk_span t = l->v[i];

			for (j = i; j >= gap; j -= gap) {
				const struct hk_span *p = &l->v[j - gap];
				size_t n = p->len < t.len ? p->len : t.len;
				int c = memcmp(l->buf + p->off, l->buf + t.off, n);

				if (c < 0 || (c == 0 && p->len <= t.len))
					break;
				l->v[j] = l->v[j - gap];
			}
			l->v[j] = t;
		}
	}
}

/* key_out = base64(md5(data...)) without padding, plus ":size" when
 * with_size. parts are hashed in order. */
static int hk_md5_key(const char *prefix, const char *const *parts, const size_t *lens,
                      size_t nparts, int with_size, uint32_t size, char key_out[SY_HDRKEY_MAX],
                      const char **error_r)
{
	unsigned char md[EVP_MAX_MD_SIZE], b64[25]; /* 16 bytes: 24 characters + NUL */
	unsigned mdlen = 0;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	size_t i, n;
	int ok = ctx != NULL && EVP_DigestInit_ex(ctx, EVP_md5(), NULL) == 1;

	for (i = 0; ok && i < nparts; i++) {
		if (lens[i] > 0)
			ok = EVP_DigestUpdate(ctx, parts[i], lens[i]) == 1;
	}
	ok = ok && EVP_DigestFinal_ex(ctx, md, &mdlen) == 1 && mdlen == 16;
	EVP_MD_CTX_free(ctx);
	if (!ok) {
		key_out[0] = '\0';
		*error_r = "MD5 digest failed (is MD5 disabled in this OpenSSL?)";
		return -1;
	}
	EVP_EncodeBlock(b64, md, 16); /* the last two are the "==" padding */
	n = strlen(prefix);
	memcpy(key_out, prefix, n);
	memcpy(key_out + n, b64, SY_HDRKEY_MD5_LEN);
	key_out[n + SY_HDRKEY_MD5_LEN] = '\0';
	if (with_size)
		snprintf(key_out + n + SY_HDRKEY_MD5_LEN, SY_HDRKEY_MAX - n - SY_HDRKEY_MD5_LEN,
		         ":%u", (unsigned)size);
	return 0;
}

/* Sorts the lines and writes the key; 1, 0 (no line) or -1. */
static int hk_finish(struct hk_lines *l, uint32_t size, char key_out[SY_HDRKEY_MAX],
                     const char **error_r)
{
	const char **parts;
	size_t *lens, i, total = 0;
	int ret;

	key_out[0] = '\0';
	if (l->count == 0)
		return 0;
	hk_sort(l);
	parts = calloc(l->count, sizeof(*parts));
	lens = calloc(l->count, sizeof(*lens));
	if (parts == NULL || lens == NULL) {
		free(parts);
		free(lens);
		*error_r = "out of memory";
		return -1;
	}
	for (i = 0; i < l->count; i++) {
		parts[i] = l->buf + l->v[i].off;
		lens[i] = l->v[i].len;
		total += lens[i];
	}
	/* imapsync: "$size = length $headstr unless ($size)". */
	if (size == 0)
		size = total > UINT32_MAX ? UINT32_MAX : (uint32_t)total;
	ret = hk_md5_key("", parts, lens, l->count, l->opts->noskipsize, size, key_out, error_r);
	free(parts);
	free(lens);
	return ret < 0 ? -1 : 1;
}

/* Next line of s[*pos..len): sets *line, *n (without LF or CRLF) and
 * advances *pos. Returns 0 at the end. */
static int hk_next_line(const char *s, size_t len, size_t *pos, const char **line, size_t *n)
{
	const char *lf;
	size_t rest;

	if (*pos >= len)
		return 0;
	rest = len - *pos;
	*line = s + *pos;
	lf = memchr(*line, '\n', rest);
	if (lf == NULL) {
		*n = rest;
		*pos = len;
	} else {
		*n = (size_t)(lf - *line);
		*pos += *n + 1;
		if (*n > 0 && (*line)[*n - 1] == '\r')
			(*n)--;
	}
	return 1;
}

/* The two parsers feed the same builder: a field line starts a field (and
 * emits the previous one), a continuation appends to it. */
struct hk_field {
	const char *name;
	size_t nlen;
	int open, wanted;
};

static int hk_field_flush(struct hk_lines *l, struct hk_field *f)
{
	int ret = 0;

	if (f->open && f->wanted)
		ret = hk_emit(l, f->name, f->nlen);
	f->open = 0;
	return ret;
}

static int hk_field_start(struct hk_lines *l, struct hk_field *f, const char *name, size_t nlen,
                          const char *val, size_t vlen)
{
	if (hk_field_flush(l, f) < 0)
		return -1;
	f->name = name;
	f->nlen = nlen;
	f->open = 1;
	f->wanted = hk_wanted(l->opts, name, nlen);
	if (f->wanted && hk_val_set(l, val, vlen) < 0) {
		l->error = "out of memory";
		return -1;
	}
	return 0;
}

static int hk_field_append(struct hk_lines *l, struct hk_field *f, const char *s, size_t n)
{
	if (f->open && f->wanted && hk_val_append(l, s, n) < 0) {
		l->error = "out of memory";
		return -1;
	}
	return 0;
}

/* Mail::IMAPClient parse_headers (see sy_hdrkey_compute in hdrkey.h). */
static int hk_parse_imapclient(struct hk_lines *l, const char *s, size_t len)
{
	struct hk_field f = {NULL, 0, 0, 0};
	size_t pos = 0, n, i;
	const char *line;

	while (hk_next_line(s, len, &pos, &line, &n)) {
		size_t colon = 0;

		for (i = 0; i < n && hk_space((unsigned char)line[i]); i++)
			;
		if (i == n)
			continue; /* blank: skipped, it does not end the header */
		if (line[0] == ')')
			break;
		/* name = 1* non-space bytes up to the first ':' */
		for (i = 1; i < n && !hk_space((unsigned char)line[i - 1]); i++) {
			if (line[i] == ':') {
				colon = i;
				break;
			}
		}
		if (colon > 0) {
			for (i = colon + 1; i < n && hk_space((unsigned char)line[i]); i++)
				;
			if (hk_field_start(l, &f, line, colon, line + i, n - i) < 0)
				return -1;
		} else if (hk_field_append(l, &f, line, n) < 0) {
			return -1;
		}
	}
	return hk_field_flush(l, &f);
}

/* imapsync decompose_header (see sy_hdrkey_compute_whole in hdrkey.h). */
static int hk_parse_decompose(struct hk_lines *l, const char *s, size_t len)
{
	struct hk_field f = {NULL, 0, 0, 0};
	size_t pos = 0, n, i;
	const char *line;

	while (hk_next_line(s, len, &pos, &line, &n)) {
		const char *colon;

		if (n == 0)
			break;
		colon = memchr(line, ':', n);
		if (colon != NULL && colon > line && (size_t)(colon - line) + 1 < n &&
		    hk_space((unsigned char)colon[1])) {
			size_t nlen = (size_t)(colon - line);

			if (hk_field_start(l, &f, line, nlen, colon + 2, n - nlen - 2) < 0)
				return -1;
		} else if (hk_space((unsigned char)line[0])) {
			for (i = 0; i < n && hk_space((unsigned char)line[i]); i++)
				;
			if (hk_field_append(l, &f, " ", 1) < 0 ||
			    hk_field_append(l, &f, line + i, n - i) < 0)
				return -1;
		}
		/* else: a "dirty" line, skipped; the field stays open. */
	}
	return hk_field_flush(l, &f);
}

static int hk_compute(const struct sy_hdrkey_opts *opts, const char *hdr, size_t len, uint32_t size,
                      char key_out[SY_HDRKEY_MAX], const char **error_r,
                      int (*parse)(struct hk_lines *, const char *, size_t))
{
	struct hk_lines l;
	int ret;

	key_out[0] = '\0';
	if (hk_init_lines(&l, opts) < 0) {
		*error_r = "out of memory";
		return -1;
	}
	if (parse(&l, hdr, len) < 0) {
		*error_r = l.error;
		ret = -1;
	} else {
		ret = hk_finish(&l, size, key_out, error_r);
	}
	hk_free_lines(&l);
	return ret;
}

int sy_hdrkey_compute(const struct sy_hdrkey_opts *opts, const char *hdr, size_t len, uint32_t size,
                      char key_out[SY_HDRKEY_MAX], const char **error_r)
{
	return hk_compute(opts, hdr, len, size, key_out, error_r, hk_parse_imapclient);
}

int sy_hdrkey_compute_whole(const struct sy_hdrkey_opts *opts, const char *hdr, size_t len,
                            uint32_t size, char key_out[SY_HDRKEY_MAX], const char **error_r)
{
	return hk_compute(opts, hdr, len, size, key_out, error_r, hk_parse_decompose);
}

int sy_hdrkey_addheader(const struct sy_hdrkey_opts *opts, uint32_t uid, uint32_t size,
                        char key_out[SY_HDRKEY_MAX], char line_out[SY_HDRKEY_LINE_MAX],
                        const char **error_r)
{
	char line[SY_HDRKEY_LINE_MAX];
	const char *part = line;
	size_t n;

	snprintf(line_out, SY_HDRKEY_LINE_MAX, "Message-Id: <%u@imapsync>\r\n", (unsigned)uid);
	n = (size_t)snprintf(line, sizeof(line), "MESSAGE-ID: <%u@IMAPSYNC>", (unsigned)uid);
	if (size == 0)
		size = (uint32_t)n;
	return hk_md5_key("", &part, &n, 1, opts != NULL && opts->noskipsize, size, key_out,
	                  error_r);
}

int sy_hdrkey_content(const char *hdr_whole, size_t len, uint32_t size, char key_out[SY_HDRKEY_MAX],
                      const char **error_r)
{
	static const char tag[] = "imapferry-content-v1\n";
	struct hk_lines l;
	size_t pos = 0, n, i;
	const char *line, **parts = NULL;
	size_t *lens = NULL;
	char sizebuf[16];
	int ret = -1, in_line = 0;

	key_out[0] = '\0';
	(void)hk_init_lines(&l, NULL); /* cannot fail without opts */
	/* Logical lines are gathered in l.val, then normalised into l.buf. */
	for (;;) {
		int more = hk_next_line(hdr_whole, len, &pos, &line, &n);

		if (in_line && (!more || n == 0 || (line[0] != ' ' && line[0] != '\t'))) {
			size_t vlen = hk_normalise(l.val, l.vlen);

			if (vlen > 0) {
				if (hk_reserve(&l.buf, &l.cap, l.used + vlen + 1) < 0 ||
				    hk_reserve_span(&l) < 0)
					goto oom;
				for (i = 0; i < vlen; i++)
					l.buf[l.used + i] = hk_upper(l.val[i]);
				l.buf[l.used + vlen] = '\n';
				l.v[l.count].off = l.used;
				l.v[l.count].len = vlen + 1;
				l.count++;
				l.used += vlen + 1;
			}
			in_line = 0;
		}
		if (!more || n == 0)
			break;
		if (in_line) {
			if (hk_val_append(&l, line, n) < 0)
				goto oom;
		} else {
			if (hk_val_set(&l, line, n) < 0)
				goto oom;
			in_line = 1;
		}
	}
	hk_sort(&l);
	parts = calloc(l.count + 2, sizeof(*parts));
	lens = calloc(l.count + 2, sizeof(*lens));
	if (parts == NULL || lens == NULL)
		goto oom;
	parts[0] = tag;
	lens[0] = sizeof(tag) - 1;
	parts[1] = sizebuf;
	lens[1] = (size_t)snprintf(sizebuf, sizeof(sizebuf), "%u\n", (unsigned)size);
	for (i = 0; i < l.count; i++) {
		parts[i + 2] = l.buf + l.v[i].off;
		lens[i + 2] = l.v[i].len;
	}
	ret = hk_md5_key(SY_HDRKEY_CONTENT_PREFIX, parts, lens, l.count + 2, 0, 0, key_out,
	                 error_r);
	goto out;
oom:
	*error_r = "out of memory";
out:
	free(parts);
	free(lens);
	hk_free_lines(&l);
	return ret;
}

int sy_hdrkey_dup_key(const char *key, unsigned n, char key_out[SY_HDRKEY_MAX])
{
	int len;

	if (n == 0)
		len = snprintf(key_out, SY_HDRKEY_MAX, "%s", key);
	else
		len = snprintf(key_out, SY_HDRKEY_MAX, "%s#%u", key, n);
	if (len < 0 || len >= SY_HDRKEY_MAX) {
		key_out[0] = '\0';
		return -1;
	}
	return 0;
}
