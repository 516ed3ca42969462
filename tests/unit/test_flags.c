/*
 * Unit tests for sync/flags.c: imapsync's flag pipeline for host2 and the
 * --resyncflags comparison.
 *
 * The expected results of the --regexflag cases were computed with Perl
 * 5.36, doing what imapsync's regexflags() does: eval "\$_ =~ $regexflag"
 * on the space-joined flags, then split ' ' (e.g. s/.*?(Keep1|Keep2|Keep3)/$1 /g
 * on "ReA Keep1 REM Keep2 ReB" gives "Keep1 Keep2  ReB", imapsync's own test).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flags.h"

#define N_ELEMENTS(a) (sizeof(a) / sizeof((a)[0]))
#define MAXF          16

/* Options of a case */
#define O_BUGGY    0x1u /* --filterbuggyflags */
#define O_NOCASE   0x2u /* --noflagscase */
#define O_NOFILTER 0x4u /* --nofilterflags */

#define SYS "\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft"

struct pipe_case {
	const char *name;
	const char *flags[MAXF]; /* NULL-terminated */
	unsigned o;              /* O_* */
	const char *rx[4];       /* --regexflag, NULL-terminated */
	int perm_present;        /* 0: no PERMANENTFLAGS (perm ignored) */
	const char *perm[MAXF];  /* NULL-terminated */
	const char *want;
	size_t want_dropped;
};

static const struct pipe_case pipe_cases[] = {
        /* \Recent */
        {"plain", {"\\Seen"}, 0, {NULL}, 0, {NULL}, "(\\Seen)", 0},
        {"nothing", {NULL}, 0, {NULL}, 0, {NULL}, "()", 0},
        {"\\Recent dropped",
         {"\\Recent", "\\Seen", "\\RECENT"},
         0,
         {NULL},
         0,
         {NULL},
         "(\\Seen)",
         0},
        {"\\Deleted is copied",
         {"\\Deleted", "\\Recent", "\\Seen"},
         0,
         {NULL},
         0,
         {NULL},
         "(\\Deleted \\Seen)",
         0},

        /* --flagscase */
        {"flagscase",
         {"\\SEEN", "\\draft", "\\fLAGGED", "\\ANSWERED", "\\deleted", "$Label1", "\\Junk",
          "NONJUNK"},
         0,
         {NULL},
         0,
         {NULL},
         "(\\Seen \\Draft \\Flagged \\Answered \\Deleted $Label1 \\Junk NONJUNK)",
         0},
        {"noflagscase", {"\\SEEN", "$Label1"}, O_NOCASE, {NULL}, 0, {NULL}, "(\\SEEN $Label1)", 0},
        {"duplicates removed, first spelling kept",
         {"\\Seen", "\\SEEN", "$a", "$A", "$b"},
         0,
         {NULL},
         0,
         {NULL},
         "(\\Seen $a $b)",
         0},

        /* PERMANENTFLAGS */
        {"PERMANENTFLAGS without \\*: keywords dropped",
         {"\\Seen", "$Label1", "NonJunk"},
         0,
         {NULL},
         1,
         {SYS},
         "(\\Seen)",
         0},
        {"PERMANENTFLAGS with \\*: all kept",
         {"\\Seen", "$Label1", "NonJunk"},
         0,
         {NULL},
         1,
         {SYS, "\\*"},
         "(\\Seen $Label1 NonJunk)",
         0},
        {"PERMANENTFLAGS absent: all kept",
         {"\\Seen", "$Label1"},
         0,
         {NULL},
         0,
         {NULL},
         "(\\Seen $Label1)",
         0},
        {"PERMANENTFLAGS () empty: all kept, as imapsync",
         {"\\Seen", "$Label1"},
         0,
         {NULL},
         1,
         {NULL},
         "(\\Seen $Label1)",
         0},
        {"nofilterflags",
         {"\\Seen", "$Label1"},
         O_NOFILTER,
         {NULL},
         1,
         {SYS},
         "(\\Seen $Label1)",
         0},
        {"PERMANENTFLAGS listed keyword, other case",
         {"$Label1", "$Label2"},
         0,
         {NULL},
         1,
         {"\\Seen", "$label1"},
         "($Label1)",
         0},
        {"flagscase before the filter", {"\\SEEN"}, 0, {NULL}, 1, {"\\Seen"}, "(\\Seen)", 0},
        {"PERMANENTFLAGS without \\Deleted",
         {"\\Deleted", "\\Seen"},
         0,
         {NULL},
         1,
         {"\\Seen", "\\Answered"},
         "(\\Seen)",
         0},

        /* --filterbuggyflags */
        {"buggy flags",
         {"\\Seen", "\\RECEIPTCHECKED", "\\Junk", "\\junk", "\\Indexed", "$FORWARDED",
          "\\$Forwarded", "\\X-Has-Attach", "Junk", "\\Unseen", "$Junk"},
         O_BUGGY,
         {NULL},
         0,
         {NULL},
         "(\\Seen $FORWARDED Junk $Junk)",
         0},
        {"buggy flags, whole list",
         {"\\receiptchecked", "\\JUNK", "\\INDEXED", "\\x-eon-has-attachment", "\\unseen",
          "\\attached", "\\x-has-attach", "\\Forwarded", "\\forward", "\\X-Forwarded",
          "\\$forwarded", "\\Priority", "\\ReadRcpt", "\\Flagged"},
         O_BUGGY,
         {NULL},
         0,
         {NULL},
         "(\\Flagged)",
         0},
        {"buggy flags kept without the option",
         {"\\Seen", "\\Indexed", "\\RECEIPTCHECKED"},
         0,
         {NULL},
         0,
         {NULL},
         "(\\Seen \\Indexed \\RECEIPTCHECKED)",
         0},
        {"buggy filter runs before --regexflag",
         {"\\Junk2"},
         O_BUGGY,
         {"s/\\\\Junk2/\\\\Junk/"},
         0,
         {NULL},
         "(\\Junk)",
         0},

        /* --regexflag */
        {"regexflag removes a keyword",
         {"\\Seen", "NonJunk", "$Spam"},
         0,
         {"s/NonJunk//g"},
         0,
         {NULL},
         "(\\Seen $Spam)",
         0},
        {"regexflag $1 captures",
         {"$Label1", "$Label22", "\\Seen"},
         0,
         {"s/\\$Label(\\d+)/Tag$1/g"},
         0,
         {NULL},
         "(Tag1 Tag22 \\Seen)",
         0},
        {"regexflag i, first match only",
         {"NonJunk", "\\Seen", "NONJUNK"},
         0,
         {"s/nonjunk//i"},
         0,
         {NULL},
         "(\\Seen NONJUNK)",
         0},
        {"regexflag gi",
         {"NonJunk", "\\Seen", "NONJUNK"},
         0,
         {"s/nonjunk//gi"},
         0,
         {NULL},
         "(\\Seen)",
         0},
        {"regexflag keep-only (imapsync's test)",
         {"ReA", "Keep1", "REM", "Keep2", "ReB"},
         0,
         {"s/.*?(Keep1|Keep2|Keep3)/$1 /g"},
         0,
         {NULL},
         "(Keep1 Keep2 ReB)",
         0},
        {"regexflag other delimiter",
         {"\\Seen", "\\Draft"},
         0,
         {"s,\\\\Seen,,"},
         0,
         {NULL},
         "(\\Draft)",
         0},
        {"regexflag empty pattern adds \\Seen (FAQ)",
         {"\\Draft"},
         0,
         {"s,,\\\\Seen ,"},
         0,
         {NULL},
         "(\\Seen \\Draft)",
         0},
        {"regexflag bracket delimiters",
         {"$Label1", "\\Seen"},
         0,
         {"s{\\$Label(\\d)}{L$1}g"},
         0,
         {NULL},
         "(L1 \\Seen)",
         0},
        {"regexflag escaped delimiter is the bare metacharacter",
         {"a|b"},
         0,
         {"s|a\\|b|X|"},
         0,
         {NULL},
         "(X|b)",
         0},
        {"regexflag \\1 in the replacement",
         {"NonJunk"},
         0,
         {"s/(\\w+)Junk/\\1Spam/"},
         0,
         {NULL},
         "(NonSpam)",
         0},
        {"regexflag \\U", {"$label"}, 0, {"s/\\$(\\w+)/\\U$1/g"}, 0, {NULL}, "(LABEL)", 0},
        {"regexflag unknown group is empty", {"xa"}, 0, {"s/x/$5/"}, 0, {NULL}, "(a)", 0},
        {"regexflag chain in order", {"A"}, 0, {"s/A/B/", "s/B/C/"}, 0, {NULL}, "(C)", 0},
        {"regexflag then flagscase", {"\\Seen"}, 0, {"s/Seen/SEEN/"}, 0, {NULL}, "(\\Seen)", 0},
        {"regexflag then PERMANENTFLAGS",
         {"$Label1"},
         0,
         {"s/\\$Label1/\\\\Flagged/"},
         1,
         {SYS},
         "(\\Flagged)",
         0},
        {"regexflag making an invalid flag",
         {"\\Seen", "\\Draft"},
         0,
         {"s/\\\\Seen/(bad/"},
         0,
         {NULL},
         "(\\Draft)",
         1},
        {"regexflag making ]", {"ab"}, 0, {"s/(.*)/[$1]/g"}, 0, {NULL}, "()", 1},
        {"regexflag <> are atom chars",
         {"a", "b"},
         0,
         {"s/(\\w)/<$1>/g"},
         0,
         {NULL},
         "(<a> <b>)",
         0},
        {"regexflag x modifier", {"NonJunk"}, 0, {"s/Non Junk/J/x"}, 0, {NULL}, "(J)", 0},
        {"regexflag re-adds \\Recent: dropped",
         {"\\Seen"},
         0,
         {"s/^/\\\\Recent /"},
         0,
         {NULL},
         "(\\Seen)",
         0},
};

static struct sy_flags_opts *make_opts(unsigned o, const char *const *rx, const char **error_r)
{
	struct sy_flags_settings set = {0};
	struct sy_flags_opts *opts = NULL;

	set.regexflag = rx;
	while (rx != NULL && rx[set.regexflag_count] != NULL)
		set.regexflag_count++;
	set.filterbuggyflags = (o & O_BUGGY) != 0;
	set.noflagscase = (o & O_NOCASE) != 0;
	set.nofilterflags = (o & O_NOFILTER) != 0;
	if (sy_flags_opts_init(&opts, &set, error_r) < 0)
		return NULL;
	return opts;
}

static size_t count_of(const char *const *v)
{
	size_t n = 0;

	while (n < MAXF && v[n] != NULL)
		n++;
	return n;
}

static void test_pipeline(void **state)
{
	size_t i;

	(void)state;
	for (i = 0; i < N_ELEMENTS(pipe_cases); i++) {
		const struct pipe_case *c = &pipe_cases[i];
		const char *error = NULL;
		struct sy_flags_opts *opts = make_opts(c->o, c->rx, &error);
		char *out = NULL;
		size_t dropped = 99;
		int ret;

		if (opts == NULL)
			fail_msg("%s: opts: %s", c->name, error);
		ret = sy_flags_for_host2(
		        opts, c->flags, count_of(c->flags), c->perm_present ? c->perm : NULL,
		        c->perm_present ? count_of(c->perm) : 0, &out, &dropped, &error);
		if (ret != 0)
			fail_msg("%s: error %s", c->name, error);
		if (strcmp(out, c->want) != 0 || dropped != c->want_dropped)
			fail_msg("%s: got \"%s\" (%zu dropped), want \"%s\" (%zu)", c->name, out,
			         dropped, c->want, c->want_dropped);
		free(out);
		sy_flags_opts_free(&opts);
		assert_null(opts);
	}
}

static void test_regexflag_errors(void **state)
{
	static const struct {
		const char *rx, *want;
	} cases[] = {
	        {"s/(/x/", "--regexflag \"s/(/x/\": missing closing parenthesis at offset 1 of "
	                   "pattern \"(\""},
	        {"s/a[/b/g", "--regexflag \"s/a[/b/g\": missing terminating ] for character class "
	                     "at offset 2 of pattern \"a[\""},
	        {"s/a/${1/", "--regexflag \"s/a/${1/\": bad replacement: "},
	        {"I am BAD", "--regexflag \"I am BAD\": not a s/pattern/replacement/ substitution"},
	        {"tr/a-z/A-Z/",
	         "--regexflag \"tr/a-z/A-Z/\": not a s/pattern/replacement/ substitution"},
	        {"s/a/b", "--regexflag \"s/a/b\": unterminated replacement"},
	        {"s/a", "--regexflag \"s/a\": unterminated pattern"},
	        {"s{a}", "--regexflag \"s{a}\": missing replacement"},
	        {"s/a/b/e", "--regexflag \"s/a/b/e\": modifier e (Perl code) is not supported"},
	        {"s/a/b/gz", "--regexflag \"s/a/b/gz\": unknown modifier 'z'"},
	        {"s/a/b/ ; s/c/d/", "--regexflag \"s/a/b/ ; s/c/d/\": text after the modifiers"},
	        {"", "--regexflag \"\": not a s/pattern/replacement/ substitution"},
	};
	size_t i;

	(void)state;
	for (i = 0; i < N_ELEMENTS(cases); i++) {
		const char *rx[] = {"s/ok//", cases[i].rx, NULL};
		const char *error = NULL;
		struct sy_flags_opts *opts = make_opts(0, rx, &error);

		if (opts != NULL)
			fail_msg("\"%s\": accepted", cases[i].rx);
		/* "bad replacement" ends with PCRE2's own text: compare the start */
		if (error == NULL || strncmp(error, cases[i].want, strlen(cases[i].want)) != 0)
			fail_msg("\"%s\": got \"%s\", want \"%s\"", cases[i].rx,
			         error != NULL ? error : "(null)", cases[i].want);
	}
}

/* A --regexflag that fails while syncing (here: PCRE2's match limit, set
 * in the pattern) gives -1 and an error naming it. */
static void test_regexflag_runtime_error(void **state)
{
	const char *rx[] = {"s/(*LIMIT_MATCH=20)(a|aa)+b//", NULL};
	/* the "b" defeats PCRE2's required-character shortcut */
	const char *flags[] = {"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaac", "b"};
	const char *error = NULL;
	struct sy_flags_opts *opts = make_opts(0, rx, &error);
	char *out = (char *)"x";

	(void)state;
	if (opts == NULL)
		fail_msg("opts: %s", error);
	assert_int_equal(sy_flags_for_host2(opts, flags, 2, NULL, 0, &out, NULL, &error), -1);
	assert_null(out);
	assert_non_null(strstr(error, "--regexflag \"s/(*LIMIT_MATCH=20)(a|aa)+b//\": "));
	assert_non_null(strstr(error, "limit"));
	sy_flags_opts_free(&opts);
}

static void test_equal(void **state)
{
	static const struct {
		const char *a, *b;
		int want;
	} cases[] = {
	        {"(\\Seen $MDNSent)", "($MdnSent \\SEEN)", 1}, /* imapsync #227 */
	        {"(\\Seen \\Seen $a)", "($A \\Seen)", 1},
	        {"(\\Seen)", "(\\Seen \\Recent)", 1},
	        {"(\\Recent)", "()", 1},
	        {"()", "()", 1},
	        {"", "()", 1},
	        {"\\Seen $X", "($x \\seen)", 1},
	        {"( \\Seen\t$X )", "($X \\Seen)", 1},
	        {"(\\Seen)", "(\\Seen \\Flagged)", 0},
	        {"(\\Seen \\Flagged)", "(\\Seen)", 0},
	        {"()", "(\\Seen)", 0},
	        {"($Label)", "($Label1)", 0},
	        {"($Label1)", "($Label)", 0},
	        {"(\\Deleted)", "(\\Draft)", 0},
	};
	size_t i;

	(void)state;
	for (i = 0; i < N_ELEMENTS(cases); i++) {
		if (sy_flags_equal(cases[i].a, cases[i].b) != cases[i].want)
			fail_msg("\"%s\" vs \"%s\": got %d, want %d", cases[i].a, cases[i].b,
			         !cases[i].want, cases[i].want);
		if (sy_flags_equal(cases[i].b, cases[i].a) != cases[i].want)
			fail_msg("\"%s\" vs \"%s\": not symmetric", cases[i].b, cases[i].a);
	}
}

static void test_store(void **state)
{
	static const struct {
		const char *h1, *h2;
		int want_ret;
		const char *want;
	} cases[] = {
	        {"(\\Seen $Label1 \\Answered)", "(\\Seen)", 1,
	         "FLAGS.SILENT ($Label1 \\Answered \\Seen)"},
	        {"()", "(\\Seen)", 1, "FLAGS.SILENT ()"},
	        {"(\\Seen)", "(\\Seen $Added)", 1, "FLAGS.SILENT (\\Seen)"},
	        {"(\\Seen $MDNSent)", "($MdnSent \\Seen \\Recent)", 0, NULL},
	        {"(\\Seen)", "(\\Seen)", 0, NULL},
	};
	size_t i;

	(void)state;
	for (i = 0; i < N_ELEMENTS(cases); i++) {
		char *store = (char *)"x";
		int ret = sy_flags_store(cases[i].h1, cases[i].h2, &store);

		if (ret != cases[i].want_ret ||
		    (cases[i].want == NULL ? store != NULL
		                           : store == NULL || strcmp(store, cases[i].want) != 0))
			fail_msg("\"%s\" -> \"%s\": got %d \"%s\", want %d \"%s\"", cases[i].h2,
			         cases[i].h1, ret, store != NULL ? store : "(null)",
			         cases[i].want_ret,
			         cases[i].want != NULL ? cases[i].want : "(null)");
		free(store);
	}
}

static void test_join(void **state)
{
	const char *flags[] = {"\\Seen", "$X", "\\Recent"};
	char *out = NULL;

	(void)state;
	assert_int_equal(sy_flags_join(flags, 3, &out), 0);
	assert_string_equal(out, "(\\Seen $X \\Recent)");
	free(out);
	assert_int_equal(sy_flags_join(NULL, 0, &out), 0);
	assert_string_equal(out, "()");
	free(out);
}

/* Host1 through the pipeline, host2 as fetched: a keyword whose case differs
 * is no STORE, a missing \Seen is. */
static void test_resync_flow(void **state)
{
	const char *h1_flags[] = {"\\SEEN", "$MDNSent", "\\Recent"};
	const char *h2_same[] = {"\\Seen", "$MdnSent", "\\Recent"};
	const char *h2_diff[] = {"$MdnSent"};
	const char *error = NULL;
	struct sy_flags_opts *opts = make_opts(0, NULL, &error);
	char *h1 = NULL, *h2 = NULL, *store = NULL;

	(void)state;
	assert_non_null(opts);
	assert_int_equal(sy_flags_for_host2(opts, h1_flags, 3, NULL, 0, &h1, NULL, &error), 0);
	assert_string_equal(h1, "(\\Seen $MDNSent)");
	assert_int_equal(sy_flags_join(h2_same, 3, &h2), 0);
	assert_int_equal(sy_flags_store(h1, h2, &store), 0);
	assert_null(store);
	free(h2);
	assert_int_equal(sy_flags_join(h2_diff, 1, &h2), 0);
	assert_int_equal(sy_flags_store(h1, h2, &store), 1);
	assert_string_equal(store, "FLAGS.SILENT ($MDNSent \\Seen)");
	free(store);
	free(h2);
	free(h1);
	sy_flags_opts_free(&opts);
	sy_flags_opts_free(&opts); /* NULL is fine */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_pipeline),
	        cmocka_unit_test(test_regexflag_errors),
	        cmocka_unit_test(test_regexflag_runtime_error),
	        cmocka_unit_test(test_equal),
	        cmocka_unit_test(test_store),
	        cmocka_unit_test(test_join),
	        cmocka_unit_test(test_resync_flow),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
