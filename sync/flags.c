/* flags.c - see flags.h */
#include "flags.h"
#include "regex.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct sy_flags_opts {
	struct sy_subst **rx; /* --regexflag, in order (regex.c) */
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

static int fl_is_recent(const char *t, size_t n)
{
	return n == 7 && strncasecmp(t, "\\Recent", 7) == 0;
}

static void fl_opts_free_rx(struct sy_flags_opts *opts)
{
	size_t i;

	for (i = 0; i < opts->count; i++)
		sy_subst_free(&opts->rx[i]);
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
		if (sy_subst_parse(&opts->rx[i], "--regexflag", src, error_r) < 0)
			goto fail;
		/* imapsync checks each --regexflag on " " before syncing. */
		probe = strdup(" ");
		if (probe == NULL) {
			*error_r = "out of memory";
			goto fail;
		}
		if (sy_subst_apply(opts->rx[i], &probe, error_r) < 0) {
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
		if (sy_subst_apply(opts->rx[i], &s, error_r) < 0) {
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
