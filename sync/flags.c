/* flags.c - see flags.h */
#include "flags.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Backing store for the error_r strings of this module (see flags.h). */
static _Thread_local char fl_errbuf[512];

struct fl_regex {
	pcre2_code *code;
	char *repl; /* translated to PCRE2's extended substitution syntax */
	size_t repl_len;
	int global;
	char *src; /* the --regexflag as given, for error messages */
};

struct sy_flags_opts {
	struct fl_regex *rx;
	size_t count;
	int filterbuggyflags, noflagscase, nofilterflags;
};

/* A flag list being built: tokens are NUL-terminated slices of buf. */
struct fl_list {
	char *buf;
	char **tok;
	size_t count;
};

/* Perl's \s on a byte string. */
static int fl_space(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

static int fl_alnum(unsigned char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int fl_is_recent(const char *t, size_t n)
{
	return n == 7 && strncasecmp(t, "\\Recent", 7) == 0;
}

/* --- parsing s/pattern/replacement/modifiers --- */

static char fl_closing(char delim)
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
static int fl_part(const char *src, size_t *pos, char delim, char *out, size_t *out_len)
{
	char close = fl_closing(delim);
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
 * $name \\ \$ \n \t \U \L \u \l \E as Perl does. out needs 2 * strlen(in) + 1
 * bytes.
 */
static size_t fl_repl(const char *in, size_t len, char *out)
{
	size_t i, o = 0;

	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)in[i], d = (unsigned char)in[i + 1];

		if (c == '\\' && i + 1 < len) {
			i++;
			if (d >= '1' && d <= '9') {
				o += (size_t)sprintf(out + o, "${%c}", d);
			} else if (!fl_alnum(d) || strchr("ntrfeaxULulE0", d) != NULL) {
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

/* "--regexflag "<src>": <what>[ of pattern "<pat>"]", each part bounded so
 * that the whole fits fl_errbuf. */
static const char *fl_rx_error(const char *src, const char *what, const char *pat)
{
	if (pat != NULL)
		snprintf(fl_errbuf, sizeof(fl_errbuf),
		         "--regexflag \"%.150s\": %.150s of pattern \"%.150s\"", src, what, pat);
	else
		snprintf(fl_errbuf, sizeof(fl_errbuf), "--regexflag \"%.150s\": %.150s", src, what);
	return fl_errbuf;
}

static int fl_rx_compile(struct fl_regex *rx, const char *src, const char **error_r)
{
	size_t len = strlen(src), pos = 0, plen, rlen;
	char *pat = malloc(len + 1), *rraw = malloc(len + 1);
	uint32_t copts = 0;
	char delim;
	int ret = -1;

	rx->src = strdup(src);
	if (pat == NULL || rraw == NULL || rx->src == NULL) {
		*error_r = "out of memory";
		goto out;
	}
	while (fl_space((unsigned char)src[pos]))
		pos++;
	delim = src[pos] == 's' ? src[pos + 1] : '\0';
	if (delim == '\0' || fl_alnum((unsigned char)delim) || fl_space((unsigned char)delim) ||
	    delim == '\\') {
		*error_r = fl_rx_error(src, "not a s/pattern/replacement/ substitution", NULL);
		goto out;
	}
	pos += 2;
	if (fl_part(src, &pos, delim, pat, &plen) < 0) {
		*error_r = fl_rx_error(src, "unterminated pattern", NULL);
		goto out;
	}
	if (fl_closing(delim) != delim) {
		/* s{pat}{repl} or s{pat}/repl/: a new opening delimiter */
		while (fl_space((unsigned char)src[pos]))
			pos++;
		delim = src[pos++];
		if (delim == '\0' || fl_alnum((unsigned char)delim) || delim == '\\') {
			*error_r = fl_rx_error(src, "missing replacement", NULL);
			goto out;
		}
	}
	if (fl_part(src, &pos, delim, rraw, &rlen) < 0) {
		*error_r = fl_rx_error(src, "unterminated replacement", NULL);
		goto out;
	}
	for (; src[pos] != '\0' && !fl_space((unsigned char)src[pos]); pos++) {
		switch (src[pos]) {
		case 'g':
			rx->global = 1;
			break;
		case 'i':
			copts |= PCRE2_CASELESS;
			break;
		case 'm':
			copts |= PCRE2_MULTILINE;
			break;
		case 's':
			copts |= PCRE2_DOTALL;
			break;
		case 'x':
			copts |= PCRE2_EXTENDED;
			break;
		case 'n':
			copts |= PCRE2_NO_AUTO_CAPTURE;
			break;
		case 'o':
			break; /* compile once: always so here */
		case 'e':
			*error_r =
			        fl_rx_error(src, "modifier e (Perl code) is not supported", NULL);
			goto out;
		default:
			snprintf(fl_errbuf, sizeof(fl_errbuf),
			         "--regexflag \"%.150s\": unknown modifier '%c'", src, src[pos]);
			*error_r = fl_errbuf;
			goto out;
		}
	}
	while (fl_space((unsigned char)src[pos]))
		pos++;
	if (src[pos] != '\0') {
		*error_r = fl_rx_error(src, "text after the modifiers", NULL);
		goto out;
	}
	rx->repl = malloc(2 * rlen + 1);
	if (rx->repl == NULL) {
		*error_r = "out of memory";
		goto out;
	}
	rx->repl_len = fl_repl(rraw, rlen, rx->repl);
	{
		int errcode;
		PCRE2_SIZE erroff;

		rx->code = pcre2_compile((PCRE2_SPTR)pat, plen, copts, &errcode, &erroff, NULL);
		if (rx->code == NULL) {
			char msg[256], what[300];

			pcre2_get_error_message(errcode, (PCRE2_UCHAR *)msg, sizeof(msg));
			snprintf(what, sizeof(what), "%s at offset %zu", msg, (size_t)erroff);
			*error_r = fl_rx_error(src, what, pat);
			goto out;
		}
	}
	ret = 0;
out:
	free(pat);
	free(rraw);
	return ret;
}

/* Applies rx to the NUL-terminated *s (malloc'd), replacing it. */
static int fl_rx_apply(const struct fl_regex *rx, char **s, const char **error_r)
{
	uint32_t o = PCRE2_SUBSTITUTE_EXTENDED | PCRE2_SUBSTITUTE_UNSET_EMPTY |
	             PCRE2_SUBSTITUTE_UNKNOWN_UNSET | PCRE2_SUBSTITUTE_OVERFLOW_LENGTH |
	             (rx->global ? PCRE2_SUBSTITUTE_GLOBAL : 0);
	size_t len = strlen(*s);
	PCRE2_SIZE cap = len + rx->repl_len + 64, outlen;
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
		rc = pcre2_substitute(rx->code, (PCRE2_SPTR)*s, len, 0, o, NULL, NULL,
		                      (PCRE2_SPTR)rx->repl, rx->repl_len, (PCRE2_UCHAR *)out,
		                      &outlen);
		if (rc != PCRE2_ERROR_NOMEMORY || outlen <= cap)
			break;
		cap = outlen;
	}
	if (rc < 0) {
		char msg[256];

		pcre2_get_error_message(rc, (PCRE2_UCHAR *)msg, sizeof(msg));
		free(out);
		*error_r = fl_rx_error(rx->src, msg, NULL);
		return -1;
	}
	free(*s);
	*s = out;
	return 0;
}

/* PCRE2 reads the replacement only when the pattern matches: run it once
 * with the empty pattern, which always does, so that a syntax error in it
 * ("${1") is reported at start-up. Group references are unknown there and
 * give "" (PCRE2_SUBSTITUTE_UNKNOWN_UNSET), as they do in Perl. */
static int fl_rx_check_repl(const struct fl_regex *rx, const char **error_r)
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
	rc = pcre2_substitute(empty, (PCRE2_SPTR) "", 0, 0, o, NULL, NULL, (PCRE2_SPTR)rx->repl,
	                      rx->repl_len, dummy, &outlen);
	pcre2_code_free(empty);
	if (rc < 0 && rc != PCRE2_ERROR_NOMEMORY) {
		char msg[256], what[300];

		pcre2_get_error_message(rc, (PCRE2_UCHAR *)msg, sizeof(msg));
		/* outlen is the offset of the error in the translated
		 * replacement, which may differ from the one given */
		snprintf(what, sizeof(what), "bad replacement: %s", msg);
		*error_r = fl_rx_error(rx->src, what, NULL);
		return -1;
	}
	return 0;
}

static void fl_opts_free_rx(struct sy_flags_opts *opts)
{
	size_t i;

	for (i = 0; i < opts->count; i++) {
		pcre2_code_free(opts->rx[i].code);
		free(opts->rx[i].repl);
		free(opts->rx[i].src);
	}
	free(opts->rx);
}

int sy_flags_opts_init(struct sy_flags_opts **opts_r, const struct sy_flags_settings *set,
                       const char **error_r)
{
	struct sy_flags_opts *opts = calloc(1, sizeof(*opts));
	size_t i, n = set != NULL ? set->regexflag_count : 0;

	*opts_r = NULL;
	if (opts == NULL || (n > 0 && (opts->rx = calloc(n, sizeof(*opts->rx))) == NULL)) {
		free(opts);
		*error_r = "out of memory";
		return -1;
	}
	if (set != NULL) {
		opts->filterbuggyflags = set->filterbuggyflags;
		opts->noflagscase = set->noflagscase;
		opts->nofilterflags = set->nofilterflags;
	}
	for (i = 0; i < n; i++) {
		const char *src = set->regexflag[i] != NULL ? set->regexflag[i] : "";
		char *probe;

		opts->count++;
		if (fl_rx_compile(&opts->rx[i], src, error_r) < 0)
			goto fail;
		if (fl_rx_check_repl(&opts->rx[i], error_r) < 0)
			goto fail;
		/* imapsync checks each --regexflag on " " before syncing. */
		probe = strdup(" ");
		if (probe == NULL) {
			*error_r = "out of memory";
			goto fail;
		}
		if (fl_rx_apply(&opts->rx[i], &probe, error_r) < 0) {
			free(probe);
			goto fail;
		}
		free(probe);
	}
	*opts_r = opts;
	return 0;
fail:
	sy_flags_opts_free(&opts);
	return -1;
}

void sy_flags_opts_free(struct sy_flags_opts **opts)
{
	if (*opts == NULL)
		return;
	fl_opts_free_rx(*opts);
	free(*opts);
	*opts = NULL;
}

/* --- the pipeline --- */

/* RFC 3501: flag = "\" atom / atom (flag-extension, flag-keyword); ATOM-CHAR
 * = any CHAR but ( ) { SP CTL % * " \ ]. */
static int fl_valid(const char *t)
{
	if (*t == '\\')
		t++;
	if (*t == '\0')
		return 0;
	for (; *t != '\0'; t++) {
		unsigned char c = (unsigned char)*t;

		if (c <= 0x20 || c >= 0x7f || strchr("(){%*\"\\]", c) != NULL)
			return 0;
	}
	return 1;
}

static int fl_in_words(const char *t, const char *words)
{
	size_t n = strlen(t);
	const char *p = words;

	while (*p != '\0') {
		size_t w = strcspn(p, " ");

		if (w == n && strncasecmp(p, t, n) == 0)
			return 1;
		p += w;
		while (*p == ' ')
			p++;
	}
	return 0;
}

/* Splits s (taken over) on white space into l. */
static int fl_split(char *s, struct fl_list *l)
{
	size_t n = 0, i;
	char *p;

	l->buf = s;
	for (i = 0; s[i] != '\0'; i++) {
		if (!fl_space((unsigned char)s[i]) && (i == 0 || fl_space((unsigned char)s[i - 1])))
			n++;
	}
	l->tok = calloc(n + 1, sizeof(char *));
	l->count = 0;
	if (l->tok == NULL)
		return -1;
	for (p = s; *p != '\0';) {
		while (fl_space((unsigned char)*p))
			*p++ = '\0';
		if (*p == '\0')
			break;
		l->tok[l->count++] = p;
		while (*p != '\0' && !fl_space((unsigned char)*p))
			p++;
	}
	return 0;
}

/* "(" tok[0] " " tok[1] ... ")" with prefix in front, into a new string. */
static char *fl_render(const char *prefix, char *const *tok, size_t count)
{
	size_t len = strlen(prefix) + 3, i, o;
	char *out;

	for (i = 0; i < count; i++)
		len += strlen(tok[i]) + 1;
	out = malloc(len);
	if (out == NULL)
		return NULL;
	o = (size_t)sprintf(out, "%s(", prefix);
	for (i = 0; i < count; i++) {
		size_t n = strlen(tok[i]);

		if (i > 0)
			out[o++] = ' ';
		memcpy(out + o, tok[i], n);
		o += n;
	}
	memcpy(out + o, ")", 2);
	return out;
}

/* flags[0..count) joined with " ", skipping \Recent and, when buggy, the
 * --filterbuggyflags names. */
static char *fl_join(const char *const *flags, size_t count, int drop_recent, int buggy)
{
	size_t len = 1, i, o = 0;
	char *s;

	for (i = 0; i < count; i++)
		len += strlen(flags[i]) + 1;
	s = malloc(len);
	if (s == NULL)
		return NULL;
	for (i = 0; i < count; i++) {
		size_t n = strlen(flags[i]);

		if (drop_recent && fl_is_recent(flags[i], n))
			continue;
		if (buggy && fl_in_words(flags[i], SY_FLAGS_BUGGY))
			continue;
		if (o > 0)
			s[o++] = ' ';
		memcpy(s + o, flags[i], n);
		o += n;
	}
	s[o] = '\0';
	return s;
}

/* --flagscase: "\SEEN" -> "\Seen" for the five RFC system flags only. */
static void fl_fix_case(char *t)
{
	static const char *const sys[] = {"\\Answered", "\\Flagged", "\\Deleted", "\\Seen",
	                                  "\\Draft"};
	size_t i;

	for (i = 0; i < sizeof(sys) / sizeof(sys[0]); i++) {
		if (strcasecmp(t, sys[i]) == 0) {
			memcpy(t, sys[i], strlen(sys[i]));
			return;
		}
	}
}

int sy_flags_for_host2(const struct sy_flags_opts *opts, const char *const *flags, size_t count,
                       const char *const *permflags, size_t perm_count, char **out_r,
                       size_t *dropped_r, const char **error_r)
{
	struct fl_list l = {NULL, NULL, 0};
	size_t i, j, kept = 0, dropped = 0;
	int filter = !opts->nofilterflags && perm_count > 0;
	char *s;

	*out_r = NULL;
	for (i = 0; filter && i < perm_count; i++) {
		if (strcmp(permflags[i], "\\*") == 0)
			filter = 0;
	}
	s = fl_join(flags, count, 1, opts->filterbuggyflags);
	if (s == NULL) {
		*error_r = "out of memory";
		return -1;
	}
	for (i = 0; i < opts->count; i++) {
		if (fl_rx_apply(&opts->rx[i], &s, error_r) < 0) {
			free(s);
			return -1;
		}
	}
	if (fl_split(s, &l) < 0) {
		free(s);
		*error_r = "out of memory";
		return -1;
	}
	for (i = 0; i < l.count; i++) {
		char *t = l.tok[i];
		int keep = 1;

		if (!opts->noflagscase)
			fl_fix_case(t);
		if (!fl_valid(t)) {
			dropped++;
			continue;
		}
		if (fl_is_recent(t, strlen(t)))
			continue;
		if (filter) {
			for (j = 0, keep = 0; !keep && j < perm_count; j++)
				keep = strcasecmp(t, permflags[j]) == 0;
		}
		for (j = 0; keep && j < kept; j++)
			keep = strcasecmp(t, l.tok[j]) != 0;
		if (keep)
			l.tok[kept++] = t;
	}
	*out_r = fl_render("", l.tok, kept);
	free(l.tok);
	free(l.buf);
	if (*out_r == NULL) {
		*error_r = "out of memory";
		return -1;
	}
	if (dropped_r != NULL)
		*dropped_r = dropped;
	return 0;
}

int sy_flags_join(const char *const *flags, size_t count, char **out_r)
{
	char *s = fl_join(flags, count, 0, 0);
	char *tok[1];

	*out_r = NULL;
	if (s == NULL)
		return -1;
	tok[0] = s;
	*out_r = fl_render("", tok, 1);
	free(s);
	return *out_r != NULL ? 0 : -1;
}

/* --- comparison --- */

/* Next flag of a list "(a b)": sets *t, *n; 0 at the end. */
static int fl_next(const char **p, const char **t, size_t *n)
{
	const char *s = *p;

	while (*s != '\0' && (fl_space((unsigned char)*s) || *s == '(' || *s == ')'))
		s++;
	if (*s == '\0') {
		*p = s;
		return 0;
	}
	*t = s;
	while (*s != '\0' && !fl_space((unsigned char)*s) && *s != '(' && *s != ')')
		s++;
	*n = (size_t)(s - *t);
	*p = s;
	return 1;
}

/* 1 when every flag of a but \Recent is in b (case-insensitively). */
static int fl_subset(const char *a, const char *b)
{
	const char *pa = a, *ta;
	size_t na;

	while (fl_next(&pa, &ta, &na)) {
		const char *pb = b, *tb;
		size_t nb;
		int found = fl_is_recent(ta, na);

		while (!found && fl_next(&pb, &tb, &nb))
			found = na == nb && strncasecmp(ta, tb, na) == 0;
		if (!found)
			return 0;
	}
	return 1;
}

int sy_flags_equal(const char *a, const char *b)
{
	/* Quadratic, but flag lists are short and this needs no memory. */
	return fl_subset(a, b) && fl_subset(b, a);
}

static int fl_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int sy_flags_store(const char *h1, const char *h2, char **store_r)
{
	struct fl_list l = {NULL, NULL, 0};
	char *s;
	size_t i, kept = 0;

	*store_r = NULL;
	if (sy_flags_equal(h1, h2))
		return 0;
	s = strdup(h1);
	if (s == NULL)
		return -1;
	for (i = 0; s[i] != '\0'; i++) {
		if (s[i] == '(' || s[i] == ')')
			s[i] = ' ';
	}
	if (fl_split(s, &l) < 0) {
		free(s);
		return -1;
	}
	for (i = 0; i < l.count; i++) {
		if (!fl_is_recent(l.tok[i], strlen(l.tok[i])))
			l.tok[kept++] = l.tok[i];
	}
	/* imapsync sends its sorted list; sorting also makes the command
	 * reproducible. */
	qsort(l.tok, kept, sizeof(l.tok[0]), fl_cmp);
	*store_r = fl_render("FLAGS.SILENT ", l.tok, kept);
	free(l.tok);
	free(l.buf);
	return *store_r != NULL ? 1 : -1;
}
