/* regex.c - see regex.h */
#include "regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "imapferry/resp.h"

/* Backing store for the error_r strings of this module (see regex.h). */
static _Thread_local char rx_errbuf[640];

struct sy_subst {
	pcre2_code *code;
	char *repl; /* translated to PCRE2's extended substitution syntax */
	size_t repl_len;
	int global;
	char *src; /* as given, for messages */
	const char *opt;
};

struct sy_regex {
	pcre2_code *code;
};

/* Perl's \s on a byte string. */
static int rx_space(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

static int rx_alnum(unsigned char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* --- reading s/pattern/replacement/modifiers --- */

static char rx_closing(char delim)
{
	switch (delim) {
	case '(':
		return ')';
	case '[':
		return ']';
	case '{':
		return '}';
	case '<':
		return '>';
	default:
		return delim;
	}
}

/*
 * Reads one delimited part of src starting after its opening delimiter at
 * *pos into out (as Perl's lexer hands it on): with a bracketing delimiter,
 * nested pairs are counted and escapes are kept; otherwise "\<delim>"
 * becomes the bare delimiter (Perl: s|a\|b|| is the alternation a|b).
 * Returns 0 with *pos after the closing delimiter, or -1 if unterminated.
 */
static int rx_part(const char *src, size_t *pos, char delim, char *out, size_t *out_len)
{
	char close = rx_closing(delim);
	size_t o = 0, i = *pos;
	int depth = 0;

	for (; src[i] != '\0'; i++) {
		if (src[i] == '\\' && src[i + 1] != '\0') {
			if (close == delim && src[i + 1] == close) {
				out[o++] = close;
			} else {
				out[o++] = src[i];
				out[o++] = src[i + 1];
			}
			i++;
			continue;
		}
		if (close != delim && src[i] == delim) {
			depth++;
		} else if (src[i] == close) {
			if (depth == 0) {
				out[o] = '\0';
				*out_len = o;
				*pos = i + 1;
				return 0;
			}
			depth--;
		}
		out[o++] = src[i];
	}
	return -1;
}

/*
 * Rewrites a Perl replacement (a double-quoted string) into PCRE2's
 * extended substitution syntax: \1-\9 -> ${1}-${9}, $& -> ${0}, a backslash
 * before another letter that PCRE2 would reject is dropped (Perl passes the
 * letter through), everything else is kept: PCRE2 already reads $1 ${1}
 * $name \\ \$ \n \t \U \L \u \l \E as Perl does. out needs 2 * len + 1
 * bytes.
 */
static size_t rx_repl(const char *in, size_t len, char *out)
{
	size_t i, o = 0;

	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)in[i], d = (unsigned char)in[i + 1];

		if (c == '\\' && i + 1 < len) {
			i++;
			if (d >= '1' && d <= '9') {
				o += (size_t)sprintf(out + o, "${%c}", d);
			} else if (!rx_alnum(d) || strchr("ntrfeaxULulE0", d) != NULL) {
				out[o++] = '\\';
				out[o++] = (char)d;
			} else {
				out[o++] = (char)d;
			}
		} else if (c == '$' && d == '&') {
			o += (size_t)sprintf(out + o, "${0}");
			i++;
		} else {
			out[o++] = (char)c;
		}
	}
	out[o] = '\0';
	return o;
}

/* "<opt> "<src>": <what>[ of pattern "<pat>"]", each part bounded so that
 * the whole fits rx_errbuf. */
static const char *rx_error(const char *opt, const char *src, const char *what, const char *pat)
{
	if (pat != NULL)
		snprintf(rx_errbuf, sizeof(rx_errbuf),
		         "%.40s \"%.150s\": %.150s of pattern \"%.150s\"", opt, src, what, pat);
	else
		snprintf(rx_errbuf, sizeof(rx_errbuf), "%.40s \"%.150s\": %.150s", opt, src, what);
	return rx_errbuf;
}

/* Compiles pat[0..plen) into s->code; PCRE2's message and offset on error. */
static int rx_compile_code(struct sy_subst *s, const char *pat, size_t plen, uint32_t copts,
                           const char **error_r)
{
	int errcode;
	PCRE2_SIZE erroff;

	s->code = pcre2_compile((PCRE2_SPTR)pat, plen, copts, &errcode, &erroff, NULL);
	if (s->code == NULL) {
		char msg[256], what[300];

		pcre2_get_error_message(errcode, (PCRE2_UCHAR *)msg, sizeof(msg));
		snprintf(what, sizeof(what), "%s at offset %zu", msg, (size_t)erroff);
		*error_r = rx_error(s->opt, s->src, what, pat);
		return -1;
	}
	return 0;
}

/* PCRE2 reads the replacement only when the pattern matches: run it once
 * with the empty pattern, which always does, so that a syntax error in it
 * ("${1") is reported at start-up. Group references are unknown there and
 * give "" (PCRE2_SUBSTITUTE_UNKNOWN_UNSET), as they do in Perl. */
static int rx_check_repl(const struct sy_subst *s, const char **error_r)
{
	uint32_t o = PCRE2_SUBSTITUTE_EXTENDED | PCRE2_SUBSTITUTE_UNSET_EMPTY |
	             PCRE2_SUBSTITUTE_UNKNOWN_UNSET | PCRE2_SUBSTITUTE_OVERFLOW_LENGTH;
	int errcode, rc;
	PCRE2_SIZE erroff, outlen = 1;
	pcre2_code *empty = pcre2_compile((PCRE2_SPTR) "", 0, 0, &errcode, &erroff, NULL);
	PCRE2_UCHAR dummy[1];

	if (empty == NULL) {
		*error_r = "out of memory";
		return -1;
	}
	rc = pcre2_substitute(empty, (PCRE2_SPTR) "", 0, 0, o, NULL, NULL, (PCRE2_SPTR)s->repl,
	                      s->repl_len, dummy, &outlen);
	pcre2_code_free(empty);
	if (rc < 0 && rc != PCRE2_ERROR_NOMEMORY) {
		char msg[256], what[300];

		pcre2_get_error_message(rc, (PCRE2_UCHAR *)msg, sizeof(msg));
		/* outlen is the offset of the error in the translated
		 * replacement, which may differ from the one given */
		snprintf(what, sizeof(what), "bad replacement: %s", msg);
		*error_r = rx_error(s->opt, s->src, what, NULL);
		return -1;
	}
	return 0;
}

/* Reads the modifiers at src[*pos..]: sets *copts and s->global. */
static int rx_modifiers(struct sy_subst *s, const char *src, size_t *pos, uint32_t *copts,
                        const char **error_r)
{
	size_t i = *pos;

	for (; src[i] != '\0' && !rx_space((unsigned char)src[i]); i++) {
		switch (src[i]) {
		case 'g':
			s->global = 1;
			break;
		case 'i':
			*copts |= PCRE2_CASELESS;
			break;
		case 'm':
			*copts |= PCRE2_MULTILINE;
			break;
		case 's':
			*copts |= PCRE2_DOTALL;
			break;
		case 'x':
			*copts |= PCRE2_EXTENDED;
			break;
		case 'n':
			*copts |= PCRE2_NO_AUTO_CAPTURE;
			break;
		case 'o':
			break; /* compile once: always so here */
		case 'e':
			*error_r = rx_error(s->opt, src, "modifier e (Perl code) is not supported",
			                    NULL);
			return -1;
		default:
			snprintf(rx_errbuf, sizeof(rx_errbuf),
			         "%.40s \"%.150s\": unknown modifier '%c'", s->opt, src, src[i]);
			*error_r = rx_errbuf;
			return -1;
		}
	}
	while (rx_space((unsigned char)src[i]))
		i++;
	if (src[i] != '\0') {
		*error_r = rx_error(s->opt, src, "text after the modifiers", NULL);
		return -1;
	}
	*pos = i;
	return 0;
}

static struct sy_subst *rx_subst_new(const char *opt, const char *src)
{
	struct sy_subst *s = calloc(1, sizeof(*s));

	if (s == NULL)
		return NULL;
	s->opt = opt;
	s->src = strdup(src);
	if (s->src == NULL) {
		free(s);
		return NULL;
	}
	return s;
}

/* Stores the translated replacement rraw[0..rlen) in s. */
static int rx_set_repl(struct sy_subst *s, const char *rraw, size_t rlen)
{
	s->repl = malloc(2 * rlen + 1);
	if (s->repl == NULL)
		return -1;
	s->repl_len = rx_repl(rraw, rlen, s->repl);
	return 0;
}

int sy_subst_parse(struct sy_subst **subst_r, const char *opt, const char *src,
                   const char **error_r)
{
	size_t len = strlen(src), pos = 0, plen, rlen;
	char *pat = malloc(len + 1), *rraw = malloc(len + 1);
	struct sy_subst *s = rx_subst_new(opt, src);
	uint32_t copts = 0;
	char delim;
	int ret = -1;

	*subst_r = NULL;
	if (pat == NULL || rraw == NULL || s == NULL) {
		*error_r = "out of memory";
		goto out;
	}
	while (rx_space((unsigned char)src[pos]))
		pos++;
	delim = src[pos] == 's' ? src[pos + 1] : '\0';
	if (delim == '\0' || rx_alnum((unsigned char)delim) || rx_space((unsigned char)delim) ||
	    delim == '\\') {
		*error_r = rx_error(opt, src, "not a s/pattern/replacement/ substitution", NULL);
		goto out;
	}
	pos += 2;
	if (rx_part(src, &pos, delim, pat, &plen) < 0) {
		*error_r = rx_error(opt, src, "unterminated pattern", NULL);
		goto out;
	}
	if (rx_closing(delim) != delim) {
		/* s{pat}{repl} or s{pat}/repl/: a new opening delimiter */
		while (rx_space((unsigned char)src[pos]))
			pos++;
		delim = src[pos++];
		if (delim == '\0' || rx_alnum((unsigned char)delim) || delim == '\\') {
			*error_r = rx_error(opt, src, "missing replacement", NULL);
			goto out;
		}
	}
	if (rx_part(src, &pos, delim, rraw, &rlen) < 0) {
		*error_r = rx_error(opt, src, "unterminated replacement", NULL);
		goto out;
	}
	if (rx_modifiers(s, src, &pos, &copts, error_r) < 0)
		goto out;
	if (rx_set_repl(s, rraw, rlen) < 0) {
		*error_r = "out of memory";
		goto out;
	}
	if (rx_compile_code(s, pat, plen, copts, error_r) < 0 || rx_check_repl(s, error_r) < 0)
		goto out;
	*subst_r = s;
	s = NULL;
	ret = 0;
out:
	sy_subst_free(&s);
	free(pat);
	free(rraw);
	return ret;
}

int sy_subst_make(struct sy_subst **subst_r, const char *opt, const char *pattern,
                  const char *replacement, int global, const char **error_r)
{
	size_t plen = strlen(pattern), rlen = strlen(replacement);
	char *shown = malloc(plen + rlen + 8);
	struct sy_subst *s = NULL;

	*subst_r = NULL;
	if (shown != NULL) {
		sprintf(shown, "s,%s,%s,%s", pattern, replacement, global ? "g" : "");
		s = rx_subst_new(opt, shown);
		free(shown);
	}
	if (s == NULL || rx_set_repl(s, replacement, rlen) < 0) {
		sy_subst_free(&s);
		*error_r = "out of memory";
		return -1;
	}
	s->global = global;
	if (rx_compile_code(s, pattern, plen, 0, error_r) < 0 || rx_check_repl(s, error_r) < 0) {
		sy_subst_free(&s);
		return -1;
	}
	*subst_r = s;
	return 0;
}

int sy_subst_apply(const struct sy_subst *s, char **str, const char **error_r)
{
	uint32_t o = PCRE2_SUBSTITUTE_EXTENDED | PCRE2_SUBSTITUTE_UNSET_EMPTY |
	             PCRE2_SUBSTITUTE_UNKNOWN_UNSET | PCRE2_SUBSTITUTE_OVERFLOW_LENGTH |
	             (s->global ? PCRE2_SUBSTITUTE_GLOBAL : 0);
	size_t len = strlen(*str);
	PCRE2_SIZE cap = len + s->repl_len + 64, outlen;
	char *out = NULL;
	int rc;

	for (;;) {
		char *nout = realloc(out, cap);

		if (nout == NULL) {
			free(out);
			*error_r = "out of memory";
			return -1;
		}
		out = nout;
		outlen = cap;
		rc = pcre2_substitute(s->code, (PCRE2_SPTR)*str, len, 0, o, NULL, NULL,
		                      (PCRE2_SPTR)s->repl, s->repl_len, (PCRE2_UCHAR *)out,
		                      &outlen);
		if (rc != PCRE2_ERROR_NOMEMORY || outlen <= cap)
			break;
		cap = outlen;
	}
	if (rc < 0) {
		char msg[256];

		pcre2_get_error_message(rc, (PCRE2_UCHAR *)msg, sizeof(msg));
		free(out);
		*error_r = rx_error(s->opt, s->src, msg, NULL);
		return -1;
	}
	free(*str);
	*str = out;
	return 0;
}

const char *sy_subst_source(const struct sy_subst *s)
{
	return s->src;
}

void sy_subst_free(struct sy_subst **s)
{
	if (*s == NULL)
		return;
	pcre2_code_free((*s)->code);
	free((*s)->repl);
	free((*s)->src);
	free(*s);
	*s = NULL;
}

/* --- m/pattern/ --- */

int sy_regex_compile(struct sy_regex **re_r, const char *opt, const char *pattern,
                     const char **error_r)
{
	struct sy_regex *re = calloc(1, sizeof(*re));
	int errcode;
	PCRE2_SIZE erroff;

	*re_r = NULL;
	if (re == NULL) {
		*error_r = "out of memory";
		return -1;
	}
	re->code = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, 0, &errcode, &erroff,
	                         NULL);
	if (re->code == NULL) {
		char msg[256], what[300];

		pcre2_get_error_message(errcode, (PCRE2_UCHAR *)msg, sizeof(msg));
		snprintf(what, sizeof(what), "%s at offset %zu", msg, (size_t)erroff);
		*error_r = rx_error(opt, pattern, what, NULL);
		free(re);
		return -1;
	}
	*re_r = re;
	return 0;
}

int sy_regex_match(const struct sy_regex *re, const char *s)
{
	pcre2_match_data *md = pcre2_match_data_create(1, NULL);
	int rc;

	if (md == NULL)
		return -1;
	rc = pcre2_match(re->code, (PCRE2_SPTR)s, strlen(s), 0, 0, md, NULL);
	pcre2_match_data_free(md);
	if (rc == PCRE2_ERROR_NOMATCH)
		return 0;
	return rc >= 0 ? 1 : -1;
}

void sy_regex_free(struct sy_regex **re)
{
	if (*re == NULL)
		return;
	pcre2_code_free((*re)->code);
	free(*re);
	*re = NULL;
}

static char *rx_escape(const char *s, int (*needs)(unsigned char))
{
	size_t n = 0;
	char *out, *o;

	for (const char *p = s; *p != '\0'; p++)
		n += needs((unsigned char)*p) ? 2 : 1;
	out = malloc(n + 1);
	if (out == NULL)
		return NULL;
	o = out;
	for (const char *p = s; *p != '\0'; p++) {
		if (needs((unsigned char)*p))
			*o++ = '\\';
		*o++ = *p;
	}
	*o = '\0';
	return out;
}

static int rx_meta(unsigned char c)
{
	return !rx_alnum(c);
}

static int rx_repl_meta(unsigned char c)
{
	return c == '\\' || c == '$';
}

char *sy_regex_quote(const char *s)
{
	return rx_escape(s, rx_meta);
}

char *sy_regex_quote_repl(const char *s)
{
	return rx_escape(s, rx_repl_meta);
}

/* --- the start-up check --- */

/* Appends line to err (one per line), cut at errsize. */
static void rx_err_add(char *err, size_t errsize, const char *line)
{
	size_t len = errsize > 0 ? strlen(err) : 0;

	if (len + 1 < errsize)
		snprintf(err + len, errsize - len, "%s%s", len > 0 ? "\n" : "", line);
}

int sy_folders_check_regexes(struct sy_options *o, char *err, size_t errsize)
{
	const char *error;
	int bad = 0;

	if (errsize > 0)
		err[0] = '\0';
	for (size_t k = 0; k < o->regextrans2.n; k++) {
		struct sy_subst *s;

		if (sy_subst_parse(&s, "--regextrans2", o->regextrans2.v[k], &error) < 0) {
			rx_err_add(err, errsize, error);
			bad = 1;
		}
		sy_subst_free(&s);
	}
	for (int pass = 0; pass < 2; pass++) {
		const struct sy_strlist *l = pass == 0 ? &o->include : &o->exclude;

		for (size_t k = 0; k < l->n; k++) {
			struct sy_regex *re;

			if (sy_regex_compile(&re, pass == 0 ? "--include" : "--exclude", l->v[k],
			                     &error) < 0) {
				rx_err_add(err, errsize, error);
				bad = 1;
			}
			sy_regex_free(&re);
		}
	}
	return bad ? -1 : 0;
}

/* --- folder names --- */

char sy_fname_guess_sep(const char *const *names, size_t n)
{
	static const char cand[] = "/.\\";
	unsigned cnt[3] = {0, 0, 0};
	int best = 0;

	for (size_t i = 0; i < n; i++) {
		for (const char *p = names[i]; *p != '\0'; p++) {
			const char *c = strchr(cand, *p);

			if (c != NULL)
				cnt[c - cand]++;
		}
	}
	for (int k = 1; k < 3; k++) {
		if (cnt[k] > cnt[best])
			best = k;
	}
	return cand[best];
}

const char *sy_fname_guess_prefix(const char *const *names, size_t n, size_t *len_r)
{
	const char *guess = "";

	*len_r = 0;
	for (size_t i = 0; i < n; i++) {
		const char *f = names[i];

		if (strcasecmp(f, "INBOX") == 0)
			continue; /* no guessing from INBOX */
		if (strncasecmp(f, "INBOX", 5) != 0) {
			*len_r = 0;
			return "";
		}
		if (f[5] == '.' || f[5] == '/') {
			guess = f;
			*len_r = 6;
		}
	}
	return guess;
}

char *sy_fname_sanitize_subfolder(const char *s)
{
	size_t a = 0, b, o = 0;
	char *out;

	if (s == NULL)
		return NULL;
	b = strlen(s);
	while (s[a] == ' ')
		a++;
	while (b > a && s[b - 1] == ' ')
		b--;
	out = malloc(b - a + 1);
	if (out == NULL)
		abort();
	for (size_t i = a; i < b; i++) {
		unsigned char c = (unsigned char)s[i];

		if (rx_alnum(c) || strchr("-_./ ", c) != NULL)
			out[o++] = (char)c;
	}
	out[o] = '\0';
	if (o == 0) {
		free(out);
		return NULL;
	}
	return out;
}

int sy_fname_subfolder2(struct sy_subst *rx_r[3], const char *prefix2, char sep2,
                        const char *subfolder2, const char **error_r)
{
	char sep[2] = {sep2, '\0'};
	char *qp = sy_regex_quote(prefix2), *rp = sy_regex_quote_repl(prefix2);
	char *rs = sy_regex_quote_repl(sep), *rsub = sy_regex_quote_repl(subfolder2);
	char *pat = NULL, *repl = NULL;
	int ret = -1;

	rx_r[0] = rx_r[1] = rx_r[2] = NULL;
	if (qp == NULL || rp == NULL || rs == NULL || rsub == NULL ||
	    asprintf(&pat, "^%s(.*)", qp) < 0 || asprintf(&repl, "%s%s%s$1", rp, rsub, rs) < 0)
		goto oom;
	if (sy_subst_make(&rx_r[0], "--subfolder2", pat, repl, 0, error_r) < 0)
		goto out;
	free(repl);
	repl = NULL;
	if (asprintf(&repl, "%s%s%sINBOX", rp, rsub, rs) < 0)
		goto oom;
	if (sy_subst_make(&rx_r[1], "--subfolder2", "^INBOX$", repl, 0, error_r) < 0)
		goto out;
	free(pat);
	pat = NULL;
	if (asprintf(&pat, "^(%s){2}", qp) < 0)
		goto oom;
	if (sy_subst_make(&rx_r[2], "--subfolder2", pat, rp, 0, error_r) < 0)
		goto out;
	ret = 0;
	goto out;
oom:
	*error_r = "out of memory";
out:
	if (ret < 0) {
		for (int k = 0; k < 3; k++)
			sy_subst_free(&rx_r[k]);
	}
	free(qp);
	free(rp);
	free(rs);
	free(rsub);
	free(pat);
	free(repl);
	return ret;
}

static int rx_has(const char *const *names, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++) {
		if (strcmp(names[i], name) == 0)
			return 1;
	}
	return 0;
}

const char *sy_fname_fix_inbox(const char *const *names1, size_t n1, const char *const *names2,
                               size_t n2)
{
	int up1 = rx_has(names1, n1, "INBOX"), up2 = rx_has(names2, n2, "INBOX");
	int cap1 = rx_has(names1, n1, "Inbox"), cap2 = rx_has(names2, n2, "Inbox");

	/* imapsync's order of tests: the same spelling on both sides wins */
	if ((up1 && up2) || (cap1 && cap2))
		return NULL;
	if (up1 && cap2)
		return "s/^INBOX$/Inbox/x";
	if (cap1 && up2)
		return "s/^Inbox$/INBOX/x";
	return NULL;
}

/* The value of key in pairs, or NULL (an empty value counts as none, as a
 * false Perl hash value does in imapsync). */
static const char *rx_kv_get(const struct sy_kv *kv, size_t n, const char *key)
{
	for (size_t i = 0; i < n; i++) {
		if (strcmp(kv[i].key, key) == 0 && kv[i].value != NULL && kv[i].value[0] != '\0')
			return kv[i].value;
	}
	return NULL;
}

/* Step 5: prefix_seperator_invertion() and separator_invert(). */
static char *rx_prefix_sep(const struct sy_fname_map *m, const char *h)
{
	size_t p1 = strlen(m->prefix1), p2 = strlen(m->prefix2), len;
	char *out, *o;
	int inbox;

	if (p1 > 0 && strncmp(h, m->prefix1, p1) == 0)
		h += p1;
	len = strlen(h);
	inbox = strcasecmp(h, "INBOX") == 0;
	out = malloc(p2 + len + 1);
	if (out == NULL)
		return NULL;
	o = out;
	if (!inbox) {
		memcpy(o, m->prefix2, p2);
		o += p2;
	}
	for (const char *p = h; *p != '\0'; p++) {
		char c = *p;

		/* sep2 -> placeholder, sep1 -> sep2, placeholder -> sep1 */
		if (m->sep1 != '\0' && m->sep2 != '\0') {
			if (c == m->sep2)
				c = m->sep1;
			else if (c == m->sep1)
				c = m->sep2;
		}
		if (m->fixslash2 && c == '/' && m->sep2 != '/' && m->sep1 == '/')
			c = '_';
		*o++ = c;
	}
	*o = '\0';
	return out;
}

int sy_fname_map(const struct sy_fname_map *m, const char *name1, char **name2_r,
                 const char **error_r)
{
	const char *v;
	char *h, *out;

	*name2_r = NULL;
	if ((v = rx_kv_get(m->f1f2, m->f1f2_n, name1)) != NULL ||
	    (v = rx_kv_get(m->automap, m->automap_n, name1)) != NULL) {
		if ((*name2_r = strdup(v)) == NULL)
			goto oom;
		return 0;
	}
	if ((h = strdup(name1)) == NULL)
		goto oom;
	if (m->subfolder1 != NULL && m->subfolder1[0] != '\0') {
		size_t sl = strlen(m->subfolder1);
		char *at;

		if (m->sep1 != '\0' && m->subfolder1[sl - 1] == m->sep1)
			sl--;
		/* imapsync: s{<subfolder1>(\<sep1>)?}{}, the first occurrence */
		at = sl > 0 ? memmem(h, strlen(h), m->subfolder1, sl) : NULL;
		if (at != NULL) {
			size_t cut = sl + (m->sep1 != '\0' && at[sl] == m->sep1 ? 1 : 0);

			memmove(at, at + cut, strlen(at + cut) + 1);
		}
	}
	if (h[0] == '\0' || strcmp(h, m->prefix1) == 0) {
		free(h);
		if ((h = strdup("INBOX")) == NULL)
			goto oom;
	}
	out = rx_prefix_sep(m, h);
	free(h);
	if (out == NULL)
		goto oom;
	for (size_t i = 0; i < m->rx_n; i++) {
		if (sy_subst_apply(m->rx[i], &out, error_r) < 0) {
			free(out);
			return -1;
		}
	}
	*name2_r = out;
	return 0;
oom:
	*error_r = "out of memory";
	return -1;
}

/* --- automap --- */

const char *const sy_role_names[SY_ROLE_COUNT] = {
        "", "\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash",
};

static const unsigned role_attr[SY_ROLE_COUNT] = {
        0,
        IMAP_LIST_ALL,
        IMAP_LIST_ARCHIVE,
        IMAP_LIST_DRAFTS,
        IMAP_LIST_FLAGGED,
        IMAP_LIST_JUNK,
        IMAP_LIST_SENT,
        IMAP_LIST_TRASH,
};

/* imapsync's build_possible_special(): usual names of each role, raw
 * (modified UTF-7), matched exactly. */
static const struct {
	enum sy_role role;
	const char *name;
} role_guess[] = {
        {SY_ROLE_ALL, "All"},
        {SY_ROLE_ALL, "All Messages"},
        {SY_ROLE_ALL, "&BBIEQQQ1-"},
        {SY_ROLE_ARCHIVE, "Archive"},
        {SY_ROLE_ARCHIVE, "Archives"},
        {SY_ROLE_ARCHIVE, "&BBAEQARFBDgEMg-"},
        {SY_ROLE_DRAFTS, "Drafts"},
        {SY_ROLE_DRAFTS, "DRAFTS"},
        {SY_ROLE_DRAFTS, "&BCcENQRABD0EPgQyBDgEOgQ4-"},
        {SY_ROLE_DRAFTS, "Szkice"},
        {SY_ROLE_DRAFTS, "Wersje robocze"},
        {SY_ROLE_FLAGGED, "Flagged"},
        {SY_ROLE_FLAGGED, "Starred"},
        {SY_ROLE_FLAGGED, "&BB8EPgQ8BDUERwQ1BD0EPQRLBDU-"},
        {SY_ROLE_JUNK, "Junk"},
        {SY_ROLE_JUNK, "junk"},
        {SY_ROLE_JUNK, "Spam"},
        {SY_ROLE_JUNK, "SPAM"},
        {SY_ROLE_JUNK, "&BCEEPwQwBDw-"},
        {SY_ROLE_JUNK, "Potwierdzony spam"},
        {SY_ROLE_JUNK, "Wiadomo&AVs-ci-&AVs-mieci"},
        {SY_ROLE_JUNK, "Junk E-Mail"},
        {SY_ROLE_JUNK, "Junk Email"},
        {SY_ROLE_SENT, "Sent"},
        {SY_ROLE_SENT, "Sent Messages"},
        {SY_ROLE_SENT, "Sent Items"},
        {SY_ROLE_SENT, "Gesendete Elemente"},
        {SY_ROLE_SENT, "Gesendete Objekte"},
        {SY_ROLE_SENT, "&AMk-l&AOk-ments envoy&AOk-s"},
        {SY_ROLE_SENT, "E&AwE-le&AwE-ments envoye&AwE-s"},
        {SY_ROLE_SENT, "Envoy&AOk-"},
        {SY_ROLE_SENT, "Objets envoy&AOk-s"},
        {SY_ROLE_SENT, "Elementos enviados"},
        {SY_ROLE_SENT, "Posta inviata"},
        {SY_ROLE_SENT, "&kAFP4W4IMH8wojCkMMYw4A-"},
        {SY_ROLE_SENT, "&BB4EQgQ,BEAEMAQyBDsENQQ9BD0ESwQ1-"},
        {SY_ROLE_SENT, "Elementy wys&AUI-ane"},
        {SY_ROLE_TRASH, "Trash"},
        {SY_ROLE_TRASH, "TRASH"},
        {SY_ROLE_TRASH, "&BCMENAQwBDsENQQ9BD0ESwQ1-"},
        {SY_ROLE_TRASH, "&BBoEPgRABDcEOAQ9BDA-"},
        {SY_ROLE_TRASH, "Kosz"},
        {SY_ROLE_TRASH, "Deleted Items"},
        {SY_ROLE_TRASH, "Deleted Messages"},
};

enum sy_role sy_role_from_attrs(unsigned attrs)
{
	for (int k = 1; k < SY_ROLE_COUNT; k++) {
		if (attrs & role_attr[k])
			return (enum sy_role)k;
	}
	return SY_ROLE_NONE;
}

static enum sy_role role_lookup(const char *name)
{
	for (size_t i = 0; i < sizeof(role_guess) / sizeof(role_guess[0]); i++) {
		if (strcmp(role_guess[i].name, name) == 0)
			return role_guess[i].role;
	}
	return SY_ROLE_NONE;
}

enum sy_role sy_role_guess(const char *name, const char *prefix)
{
	enum sy_role role = role_lookup(name);
	const char *at;

	if (role != SY_ROLE_NONE || prefix == NULL || prefix[0] == '\0')
		return role;
	/* imapsync: s/\Q<prefix>\E//, the first occurrence, unanchored */
	at = strstr(name, prefix);
	if (at != NULL) {
		size_t pl = strlen(prefix), nl = strlen(name);
		char *cut = malloc(nl - pl + 1);

		if (cut == NULL)
			return SY_ROLE_NONE;
		memcpy(cut, name, (size_t)(at - name));
		memcpy(cut + (at - name), at + pl, nl - (size_t)(at - name) - pl + 1);
		role = role_lookup(cut);
		free(cut);
	}
	return role;
}

/* One side's roles: by_attr[role] / by_guess[role] = index of the folder
 * that holds it, or -1; folder_attr[i] / folder_guess[i] = role of folder
 * i (folder_attr only for the folder that won the role, as in imapsync). */
struct am_side {
	long by_attr[SY_ROLE_COUNT], by_guess[SY_ROLE_COUNT];
	enum sy_role *folder_attr, *folder_guess;
};

static int am_side_build(struct am_side *a, const struct sy_automap_side *s, sy_say_cb *say,
                         void *aux)
{
	int any = 0;

	for (int k = 0; k < SY_ROLE_COUNT; k++)
		a->by_attr[k] = a->by_guess[k] = -1;
	a->folder_attr = calloc(s->n + 1, sizeof(*a->folder_attr));
	a->folder_guess = calloc(s->n + 1, sizeof(*a->folder_guess));
	if (a->folder_attr == NULL || a->folder_guess == NULL)
		return -1;
	/* special_from_folders_hash(): the LIST attributes */
	for (size_t i = 0; i < s->n; i++) {
		enum sy_role role = sy_role_from_attrs(s->attrs[i]);
		char all[96] = "";

		if (role == SY_ROLE_NONE)
			continue;
		for (int k = 1; k < SY_ROLE_COUNT; k++) {
			if (s->attrs[i] & role_attr[k])
				snprintf(all + strlen(all), sizeof(all) - strlen(all), "%s%s",
				         all[0] != '\0' ? " " : "", sy_role_names[k]);
		}
		any = 1;
		if (a->by_attr[role] >= 0) {
			if (say != NULL)
				say(aux, "%s: special %-20s = %s already assigned to %s", s->host,
				    s->names[i], all, s->names[a->by_attr[role]]);
			continue;
		}
		if (say != NULL)
			say(aux, "%s: special %-20s = %s", s->host, s->names[i], all);
		a->by_attr[role] = (long)i;
		a->folder_attr[i] = role;
	}
	if (any && say != NULL)
		say(aux, "%s", "");
	/* build_guess_special(): the usual names */
	for (size_t i = 0; i < s->n; i++) {
		enum sy_role role = sy_role_guess(s->names[i], s->prefix);

		if (role == SY_ROLE_NONE)
			continue;
		a->folder_guess[i] = role;
		if (a->by_guess[role] >= 0) {
			if (say != NULL)
				say(aux, "%s: %s not %s because set to %s", s->host, s->names[i],
				    sy_role_names[role], s->names[a->by_guess[role]]);
		} else {
			a->by_guess[role] = (long)i;
		}
	}
	return 0;
}

static long am_find(const struct sy_automap_side *s, const char *name)
{
	for (size_t i = 0; i < s->n; i++) {
		if (strcmp(s->names[i], name) == 0)
			return (long)i;
	}
	return -1;
}

int sy_automap_build(const struct sy_automap_side *h1, const struct sy_automap_side *h2,
                     const char *const *wanted, size_t nwanted, struct sy_kv **map_r, size_t *n_r,
                     sy_say_cb *say, void *aux)
{
	struct am_side a1, a2;
	struct sy_kv *map = calloc(nwanted + 1, sizeof(*map));
	size_t n = 0;
	int ret = -1;

	memset(&a1, 0, sizeof(a1));
	memset(&a2, 0, sizeof(a2));
	*map_r = NULL;
	*n_r = 0;
	if (map == NULL || am_side_build(&a1, h1, say, aux) < 0 ||
	    am_side_build(&a2, h2, say, aux) < 0)
		goto out;
	for (size_t w = 0; w < nwanted; w++) {
		long i = am_find(h1, wanted[w]), j = -1;
		enum sy_role s1, g1;

		if (i < 0)
			continue;
		s1 = a1.folder_attr[i];
		g1 = a1.folder_guess[i];
		if (s1 != SY_ROLE_NONE)
			j = a2.by_attr[s1] >= 0 ? a2.by_attr[s1] : a2.by_guess[s1]; /* cases 1, 2 */
		else if (g1 != SY_ROLE_NONE)
			j = a2.by_attr[g1] >= 0 ? a2.by_attr[g1] : a2.by_guess[g1]; /* cases 3, 4 */
		if (j < 0)
			continue;
		map[n].key = strdup(wanted[w]);
		map[n].value = strdup(h2->names[j]);
		n++;
		if (map[n - 1].key == NULL || map[n - 1].value == NULL)
			goto out;
	}
	*map_r = map;
	*n_r = n;
	map = NULL;
	ret = 0;
out:
	if (map != NULL)
		sy_automap_free(&map, n);
	free(a1.folder_attr);
	free(a1.folder_guess);
	free(a2.folder_attr);
	free(a2.folder_guess);
	return ret;
}

void sy_automap_free(struct sy_kv **map, size_t n)
{
	if (*map == NULL)
		return;
	for (size_t i = 0; i < n; i++) {
		free((*map)[i].key);
		free((*map)[i].value);
	}
	free(*map);
	*map = NULL;
}
