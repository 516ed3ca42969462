/*
 * Unit tests for sync/regex.c: Perl s/// and m// on PCRE2 (--regexflag,
 * --regextrans2, --include, --exclude) and imapsync's folder-name rules
 * (docs/imapsync-behaviour.md section 4).
 *
 * The s/// results were computed with Perl 5.36 doing what imapsync does,
 * eval "\$s =~ $regex". The folder-name cases are imapsync 2.229's
 * documented behaviour of imap2_folder_name(), guess_prefix(),
 * sanitize_subfolder() and friends, written out as tables.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imapferry/resp.h"
#include "regex.h"

#define N_ELEMENTS(a) (sizeof(a) / sizeof((a)[0]))

/* --- s/// --- */

static void test_subst_apply(void **state)
{
	static const struct {
		const char *rx, *in, *want;
	} cases[] = {
	        {"s/a/b/", "banana", "bbnana"},
	        {"s/a/b/g", "banana", "bbnbnb"},
	        /* delimiters */
	        {"s|a\\|n|X|g", "banana", "bXXXXX"}, /* \| is the delimiter: a|n */
	        {"s{(an)}{<\\U$1>}", "banana", "b<AN>ana"},
	        {"s{a}/o/g", "banana", "bonono"},
	        {"s(n)(N)g", "banana", "baNaNa"},
	        {"s<^b><B>", "banana", "Banana"},
	        {"s#Sent Items#Sent#", "Sent Items", "Sent"},
	        {"s,(.*),\\L$1,", "BaNaNa", "banana"},
	        {"s/\\//_/g", "a/b/c", "a_b_c"},
	        {"  s/a/b/  ", "banana", "bbnana"},
	        /* modifiers */
	        {"s/A/x/ig", "banana", "bxnxnx"},
	        {"s/ a n /Z/x", "banana", "bZana"},
	        {"s/^a/X/mg", "a\na", "X\nX"},
	        {"s/a.b/X/s", "a\nb", "X"},
	        {"s/a/b/o", "banana", "bbnana"},
	        {"s/^INBOX$/Inbox/x", "INBOX", "Inbox"},
	        /* captures and replacement escapes */
	        {"s/(b)(a)/\\2\\1/", "banana", "abnana"},
	        {"s/(b)(a)/${2}${1}/", "banana", "abnana"},
	        {"s/n/$&$&/g", "banana", "bannanna"},
	        {"s/(z)?a/[$1]/", "banana", "b[]nana"},
	        {"s/a/[$7]/", "banana", "b[]nana"},
	        {"s/a/\\$1\\\\/", "banana", "b$1\\nana"},
	        {"s/a/\\t/", "banana", "b\tnana"},
	        {"s/(.)/\\u$1/", "banana", "Banana"},

	        {"s/ +$//", "trail   ", "trail"},
	        {"s/x/y/", "banana", "banana"},
	        {"s/^/Pre./", "", "Pre."},
	};

	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(cases); i++) {
		struct sy_subst *s = NULL;
		const char *error = NULL;
		char *str;

		if (sy_subst_parse(&s, "--regextrans2", cases[i].rx, &error) < 0)
			fail_msg("\"%s\": %s", cases[i].rx, error);
		assert_string_equal(sy_subst_source(s), cases[i].rx);
		str = strdup(cases[i].in);
		if (sy_subst_apply(s, &str, &error) < 0)
			fail_msg("\"%s\" on \"%s\": %s", cases[i].rx, cases[i].in, error);
		if (strcmp(str, cases[i].want) != 0)
			fail_msg("\"%s\" on \"%s\": got \"%s\", want \"%s\"", cases[i].rx,
			         cases[i].in, str, cases[i].want);
		free(str);
		sy_subst_free(&s);
		assert_null(s);
	}
}

static void test_subst_errors(void **state)
{
	static const struct {
		const char *rx, *want;
	} cases[] = {
	        {"s/(/x/", "--regextrans2 \"s/(/x/\": missing closing parenthesis at offset 1 of "
	                   "pattern \"(\""},
	        {"s/a[/b/g", "--regextrans2 \"s/a[/b/g\": missing terminating ] for character "
	                     "class at offset 2 of pattern \"a[\""},
	        {"s,x(?<n,y,", "--regextrans2 \"s,x(?<n,y,\": "},
	        {"s/a/${1/", "--regextrans2 \"s/a/${1/\": bad replacement: "},
	        {"I am BAD", "--regextrans2 \"I am BAD\": not a s/pattern/replacement/ "
	                     "substitution"},
	        {"tr/a-z/A-Z/", "--regextrans2 \"tr/a-z/A-Z/\": not a s/pattern/replacement/ "
	                        "substitution"},
	        {"sXaXbX", "--regextrans2 \"sXaXbX\": not a s/pattern/replacement/ substitution"},
	        {"s/a/b", "--regextrans2 \"s/a/b\": unterminated replacement"},
	        {"s/a", "--regextrans2 \"s/a\": unterminated pattern"},
	        {"s{a}", "--regextrans2 \"s{a}\": missing replacement"},
	        {"s/a/b/e", "--regextrans2 \"s/a/b/e\": modifier e (Perl code) is not supported"},
	        {"s/a/b/gz", "--regextrans2 \"s/a/b/gz\": unknown modifier 'z'"},
	        {"s/a/b/ ; s/c/d/", "--regextrans2 \"s/a/b/ ; s/c/d/\": text after the modifiers"},
	        {"", "--regextrans2 \"\": not a s/pattern/replacement/ substitution"},
	};

	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(cases); i++) {
		struct sy_subst *s = (struct sy_subst *)&s;
		const char *error = NULL;

		if (sy_subst_parse(&s, "--regextrans2", cases[i].rx, &error) == 0)
			fail_msg("\"%s\": accepted", cases[i].rx);
		assert_null(s);
		/* some end with PCRE2's own text: compare the start */
		if (error == NULL || strncmp(error, cases[i].want, strlen(cases[i].want)) != 0)
			fail_msg("\"%s\": got \"%s\", want \"%s\"", cases[i].rx,
			         error != NULL ? error : "(null)", cases[i].want);
	}
}

/* A substitution that fails while mapping (PCRE2's match limit, set in the
 * pattern) gives -1, leaves the string alone and names the option. */
static void test_subst_runtime_error(void **state)
{
	struct sy_subst *s = NULL;
	const char *error = NULL;
	char *str = strdup("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaac b");

	(void)state;
	if (sy_subst_parse(&s, "--regextrans2", "s/(*LIMIT_MATCH=20)(a|aa)+b//", &error) < 0)
		fail_msg("%s", error);
	assert_int_equal(sy_subst_apply(s, &str, &error), -1);
	assert_string_equal(str, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaac b");
	assert_non_null(strstr(error, "--regextrans2 \"s/(*LIMIT_MATCH=20)(a|aa)+b//\": "));
	assert_non_null(strstr(error, "limit"));
	free(str);
	sy_subst_free(&s);
}

static void test_subst_make_and_quote(void **state)
{
	struct sy_subst *s = NULL;
	const char *error = NULL;
	char *q, *str;

	(void)state;
	q = sy_regex_quote("a.b[c]$d\\e f");
	assert_string_equal(q, "a\\.b\\[c\\]\\$d\\\\e\\ f");
	free(q);
	q = sy_regex_quote_repl("a$1\\b.");
	assert_string_equal(q, "a\\$1\\\\b.");
	free(q);

	if (sy_subst_make(&s, "--x", "^a\\.(.*)", "<$1>", 1, &error) < 0)
		fail_msg("%s", error);
	assert_string_equal(sy_subst_source(s), "s,^a\\.(.*),<$1>,g");
	str = strdup("a.b,c");
	assert_int_equal(sy_subst_apply(s, &str, &error), 0);
	assert_string_equal(str, "<b,c>");
	free(str);
	sy_subst_free(&s);

	assert_int_equal(sy_subst_make(&s, "--x", "(", "", 0, &error), -1);
	assert_null(s);
	assert_string_equal(error, "--x \"s,(,,\": missing closing parenthesis at offset 1 of "
	                           "pattern \"(\"");
}

/* --- m// --- */

static void test_regex_match(void **state)
{
	static const struct {
		const char *re, *s;
		int want;
	} cases[] = {
	        {"Sent", "Sent", 1},
	        {"Sent", "INBOX.Sent Items", 1}, /* unanchored */
	        {"^Sent$", "Sent Items", 0},
	        {"sent", "Sent", 0}, /* case-sensitive */
	        {"(?i)sent", "Sent", 1},
	        {"^Projects(\\.|$)", "Projects.2024", 1},
	        {"^Projects(\\.|$)", "Projects2", 0},
	        {"\\[Gmail\\]$", "[Gmail]", 1},
	        {"", "anything", 1},
	};

	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(cases); i++) {
		struct sy_regex *re = NULL;
		const char *error = NULL;

		if (sy_regex_compile(&re, "--include", cases[i].re, &error) < 0)
			fail_msg("%s", error);
		if (sy_regex_match(re, cases[i].s) != cases[i].want)
			fail_msg("/%s/ on \"%s\": want %d", cases[i].re, cases[i].s, cases[i].want);
		sy_regex_free(&re);
		assert_null(re);
	}
}

static void test_regex_errors(void **state)
{
	struct sy_regex *re = (struct sy_regex *)&re;
	const char *error = NULL;

	(void)state;
	assert_int_equal(sy_regex_compile(&re, "--include", "a(", &error), -1);
	assert_null(re);
	assert_string_equal(error, "--include \"a(\": missing closing parenthesis at offset 2");
	assert_int_equal(sy_regex_compile(&re, "--exclude", "x[", &error), -1);
	assert_string_equal(error,
	                    "--exclude \"x[\": missing terminating ] for character class at offset "
	                    "2");
}

/* --- the start-up check --- */

static void test_check_regexes(void **state)
{
	struct sy_options o;
	char err[1024];
	char *rx[] = {"s/ok/fine/", "s/(/x/"}, *inc[] = {"ok", "a("}, *exc[] = {"x["};

	(void)state;
	memset(&o, 0, sizeof(o));
	assert_int_equal(sy_folders_check_regexes(&o, err, sizeof(err)), 0);
	assert_string_equal(err, "");
	o.regextrans2.v = rx;
	o.regextrans2.n = 1;
	o.include.v = inc;
	o.include.n = 1;
	assert_int_equal(sy_folders_check_regexes(&o, err, sizeof(err)), 0);
	o.regextrans2.n = 2;
	o.include.n = 2;
	o.exclude.v = exc;
	o.exclude.n = 1;
	assert_int_equal(sy_folders_check_regexes(&o, err, sizeof(err)), -1);
	assert_string_equal(err, "--regextrans2 \"s/(/x/\": missing closing parenthesis at offset "
	                         "1 of pattern \"(\"\n"
	                         "--include \"a(\": missing closing parenthesis at offset 2\n"
	                         "--exclude \"x[\": missing terminating ] for character class at "
	                         "offset 2");
	/* a short buffer is cut, still terminated */
	assert_int_equal(sy_folders_check_regexes(&o, err, 10), -1);
	assert_string_equal(err, "--regextr");
}

/* --- folder names: guesses, subfolders, Inbox --- */

static void test_guess_sep_prefix(void **state)
{
	static const struct {
		const char *names[5];
		char sep;
		const char *prefix;
	} cases[] = {
	        {{NULL}, '/', ""},
	        {{"abcd"}, '/', ""},
	        {{"a/b/c.d"}, '/', ""},
	        {{"a.b/c.d"}, '.', ""},
	        {{"a\\b\\c"}, '\\', ""},
	        {{"INBOX"}, '/', ""},
	        {{"Inbox"}, '/', ""},
	        {{"INBOX", "INBOX/Junk"}, '/', "INBOX/"},
	        {{"INBOX", "INBOX.Junk"}, '.', "INBOX."},
	        {{"Inbox", "Inbox/Junk"}, '/', "Inbox/"},
	        {{"Inbox", "Inbox.Junk"}, '.', "Inbox."},
	        {{"INBOX", "INBOX/Junk", "INBOX/rrr"}, '/', "INBOX/"},
	        {{"INBOX", "INBOX/Junk", "INBOX/rrr", "zzz"}, '/', ""},
	        {{"INBOX", "Junk"}, '/', ""},
	};

	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(cases); i++) {
		size_t n = 0, len;
		const char *p;

		while (n < 5 && cases[i].names[n] != NULL)
			n++;
		assert_int_equal(sy_fname_guess_sep(cases[i].names, n), cases[i].sep);
		p = sy_fname_guess_prefix(cases[i].names, n, &len);
		if (len != strlen(cases[i].prefix) || strncmp(p, cases[i].prefix, len) != 0)
			fail_msg("case %zu: prefix \"%.*s\", want \"%s\"", i, (int)len, p,
			         cases[i].prefix);
	}
}

static void test_sanitize_subfolder(void **state)
{
	static const struct {
		const char *in, *want;
	} cases[] = {
	        {NULL, NULL},
	        {"", NULL},
	        {" ", NULL},
	        {"  ", NULL},
	        {"abcd", "abcd"},
	        {" ab cd ", "ab cd"},
	        {"a&~b#\\c[]=d;", "abcd"},
	        {"aA.b-_ 8c/dD", "aA.b-_ 8c/dD"},
	        {"&~#", NULL},
	};

	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(cases); i++) {
		char *got = sy_fname_sanitize_subfolder(cases[i].in);

		if (cases[i].want == NULL)
			assert_null(got);
		else
			assert_string_equal(got, cases[i].want);
		free(got);
	}
}

static void test_fix_inbox(void **state)
{
	static const struct {
		const char *h1[3], *h2[3], *want;
	} cases[] = {
	        {{"INBOX"}, {"INBOX"}, NULL},
	        {{"Inbox"}, {"Inbox"}, NULL},
	        {{"INBOX"}, {"Inbox"}, "s/^INBOX$/Inbox/x"},
	        {{"Inbox"}, {"INBOX"}, "s/^Inbox$/INBOX/x"},
	        {{"INBOX"}, {"rrrrr"}, NULL},
	        {{"rrrrr"}, {"Inbox"}, NULL},
	        {{"INBOX", "Inbox"}, {"Inbox"}, NULL},
	};

	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(cases); i++) {
		size_t n1 = 0, n2 = 0;
		const char *got;

		while (n1 < 3 && cases[i].h1[n1] != NULL)
			n1++;
		while (n2 < 3 && cases[i].h2[n2] != NULL)
			n2++;
		got = sy_fname_fix_inbox(cases[i].h1, n1, cases[i].h2, n2);
		if (cases[i].want == NULL)
			assert_null(got);
		else
			assert_string_equal(got, cases[i].want);
	}
}

static void test_subfolder2_regexes(void **state)
{
	struct sy_subst *rx[3];
	const char *error = NULL;

	(void)state;
	if (sy_fname_subfolder2(rx, "INBOX.", '.', "Sub", &error) < 0)
		fail_msg("%s", error);
	/* the doc's three, with the prefix quoted in the patterns */
	assert_string_equal(sy_subst_source(rx[0]), "s,^INBOX\\.(.*),INBOX.Sub.$1,");
	assert_string_equal(sy_subst_source(rx[1]), "s,^INBOX$,INBOX.Sub.INBOX,");
	assert_string_equal(sy_subst_source(rx[2]), "s,^(INBOX\\.){2},INBOX.,");
	for (int k = 0; k < 3; k++)
		sy_subst_free(&rx[k]);
	if (sy_fname_subfolder2(rx, "", '/', "Old/Mail", &error) < 0)
		fail_msg("%s", error);
	assert_string_equal(sy_subst_source(rx[0]), "s,^(.*),Old/Mail/$1,");
	for (int k = 0; k < 3; k++)
		sy_subst_free(&rx[k]);
}

/* --- folder names: imap2_folder_name --- */

struct map_case {
	const char *name1, *want;
};

struct map_setup {
	const char *what;
	char sep1, sep2;
	const char *prefix1, *prefix2, *subfolder1, *subfolder2;
	int fixslash2;
	const char *rx[3];        /* --regextrans2 */
	const char *f1f2[2];      /* h1, h2 */
	const char *automap[2];   /* h1, h2 */
	struct map_case cases[9]; /* name1 NULL ends */
};

static const struct map_setup map_setups[] = {
        {"separators / to .",
         '/',
         '.',
         "",
         "",
         NULL,
         NULL,
         0,
         {NULL},
         {"auto", "moto"},
         {NULL},
         {{"", "INBOX"},
          {"blabla", "blabla"},
          {"spam/spam", "spam.spam"},
          {"spam.spam", "spam/spam"},
          {"spam/spam.spam", "spam.spam/spam"},
          {"s pam/spam.sp  am", "s pam.spam/sp  am"},
          {"auto", "moto"},     /* --f1f2 */
          {"auto/x", "auto.x"}, /* f1f2 maps one folder, not its children */
          {NULL, NULL}}},
        {"regextrans2 after the separator swap",
         '/',
         '.',
         "",
         "",
         NULL,
         NULL,
         0,
         {"s,/,X,g"},
         {NULL},
         {NULL},
         {{"", "INBOX"},
          {"blabla", "blabla"},
          {"spam/spam", "spam.spam"},
          {"spam.spam", "spamXspam"},
          {"spam/spam.spam", "spam.spamXspam"},
          {NULL, NULL}}},
        {"regextrans2 in order",
         '.',
         '/',
         "",
         "",
         NULL,
         NULL,
         1,
         {"s/a/b/g", "s/b/c/g", "s, ,_,g"},
         {NULL},
         {NULL},
         {{"a", "c"}, {"bla bla.x", "clc_clc/x"}, {NULL, NULL}}},
        {"regextrans2 \\U",
         '/',
         '.',
         "",
         "",
         NULL,
         NULL,
         0,
         {"s,(.*),\\U$1,"},
         {NULL},
         {NULL},
         {{"blabla", "BLABLA"}, {NULL, NULL}}},
        {"fixslash2",
         '/',
         '.',
         "",
         "",
         NULL,
         NULL,
         1,
         {NULL},
         {NULL},
         {NULL},
         {{"", "INBOX"},
          {"spam/spam", "spam.spam"},
          {"spam.spam", "spam_spam"},
          {"spam/spam.spam", "spam.spam_spam"},
          {"s pam/spam.spa  m", "s pam.spam_spa  m"},
          {NULL, NULL}}},
        {"src . to dst / (the test servers)",
         '.',
         '/',
         "",
         "",
         NULL,
         NULL,
         1,
         {NULL},
         {NULL},
         {NULL},
         {{"INBOX", "INBOX"},
          {"Archive.2019", "Archive/2019"},
          {"B&APw-cher.Sachb&APw-cher", "B&APw-cher/Sachb&APw-cher"},
          {"spam/spam", "spam.spam"},
          {"INBOX.Sent", "INBOX/Sent"},
          {NULL, NULL}}},
        {"prefix1 INBOX. and \\U",
         '.',
         '/',
         "INBOX.",
         "",
         NULL,
         NULL,
         1,
         {"s,(.*),\\U$1,"},
         {NULL},
         {NULL},
         {{"blabla", "BLABLA"},
          {"INBOX.TEST.test.Test.tesT", "TEST/TEST/TEST/TEST"},
          {"INBOX.", "INBOX"},
          {NULL, NULL}}},
        {"prefixes Pf1. Pf2/",
         '.',
         '/',
         "Pf1.",
         "Pf2/",
         NULL,
         NULL,
         1,
         {NULL},
         {NULL},
         {NULL},
         {{"F1.F2.F3", "Pf2/F1/F2/F3"},
          {"F1.INBOX", "Pf2/F1/INBOX"},
          {"INBOX", "INBOX"},
          {"Inbox", "Inbox"},
          {"Pf1.F1.F2.F3", "Pf2/F1/F2/F3"},
          {"Pf1.F1.INBOX", "Pf2/F1/INBOX"},
          {"Pf1.INBOX", "INBOX"},
          {"Pf1.", "INBOX"},
          {NULL, NULL}}},
        {"INBOX.INBOX.x (imapsync #324)",
         '.',
         '.',
         "",
         "INBOX.",
         NULL,
         NULL,
         1,
         {NULL},
         {NULL},
         {NULL},
         {{"INBOX", "INBOX"},
          {"x", "INBOX.x"},
          {"INBOX.x", "INBOX.INBOX.x"}, /* imapsync does this; --prefix1 fixes it */
          {NULL, NULL}}},
        {"the #324 fix: --prefix1 INBOX.",
         '.',
         '.',
         "INBOX.",
         "INBOX.",
         NULL,
         NULL,
         1,
         {NULL},
         {NULL},
         {NULL},
         {{"INBOX.x", "INBOX.x"}, {"INBOX", "INBOX"}, {NULL, NULL}}},
        {"subfolder2 without prefixes",
         '/',
         '.',
         "",
         "",
         NULL,
         "S1.S2",
         0,
         {NULL},
         {NULL},
         {NULL},
         {{"F1/F2/F3", "S1.S2.F1.F2.F3"}, {"INBOX", "S1.S2.INBOX"}, {NULL, NULL}}},
        {"subfolder2 with prefixes",
         '/',
         '.',
         "Pf1/",
         "Pf2.",
         NULL,
         "Pf2.S1.S2",
         0,
         {NULL},
         {NULL},
         {NULL},
         {{"F1/F2/F3", "Pf2.S1.S2.F1.F2.F3"},
          {"INBOX", "Pf2.S1.S2.INBOX"},
          {"Pf1/F1/F2/F3", "Pf2.S1.S2.F1.F2.F3"},
          {"Pf1/INBOX", "Pf2.S1.S2.INBOX"},
          {NULL, NULL}}},
        {"subfolder2 before the user's regextrans2",
         '.',
         '/',
         "",
         "",
         NULL,
         "Old",
         1,
         {"s,^Old/,Older/,"},
         {NULL},
         {NULL},
         {{"a.b", "Older/a/b"}, {"INBOX", "Older/INBOX"}, {NULL, NULL}}},
        {"subfolder1 S1.S2",
         '.',
         '/',
         "Pf1.",
         "Pf2/",
         "S1.S2",
         NULL,
         1,
         {NULL},
         {NULL},
         {NULL},
         {{"S1.S2.F1.F2.F3", "Pf2/F1/F2/F3"},
          {"Pf1.S1.S2.F1.F2.F3", "Pf2/F1/F2/F3"},
          {"S1.S2.INBOX", "INBOX"},
          {"S1.S2", "INBOX"},
          {"S1.S2.", "INBOX"},
          {"Pf1.S1.S2.INBOX", "INBOX"},
          {"Pf1.S1.S2", "INBOX"},
          {"Pf1.S1.S2.", "INBOX"},
          {NULL, NULL}}},
        {"subfolder1 S1.S2. (trailing separator)",
         '.',
         '/',
         "Pf1.",
         "Pf2/",
         "S1.S2.",
         NULL,
         1,
         {NULL},
         {NULL},
         {NULL},
         {{"S1.S2.F1.F2.F3", "Pf2/F1/F2/F3"},
          {"Pf1.S1.S2.F1.F2.F3", "Pf2/F1/F2/F3"},
          {"S1.S2.INBOX", "INBOX"},
          {"Pf1.S1.S2", "INBOX"},
          {NULL, NULL}}},
        {"subfolder1 as with Gmail",
         '/',
         '/',
         "",
         "",
         "S1/S2",
         NULL,
         1,
         {NULL},
         {NULL},
         {NULL},
         {{"S1/S2/F1/F2/F3", "F1/F2/F3"},
          {"S1/S2/INBOX", "INBOX"},
          {"S1/S2", "INBOX"},
          {"S1/S2/", "INBOX"},
          {NULL, NULL}}},
        {"automap: as is, before regextrans2; f1f2 first",
         '.',
         '/',
         "",
         "",
         NULL,
         NULL,
         1,
         {"s/S/Z/g"},
         {"Junk", "Spam"},
         {"Sent Items", "Sent"},
         {{"Sent Items", "Sent"},
          {"Sent Items.Old", "Zent Items/Old"}, /* subfolders are not automapped */
          {"Junk", "Spam"},
          {"Sent", "Zent"},
          {NULL, NULL}}},
        {"Inbox/INBOX fix",
         '/',
         '/',
         "",
         "",
         NULL,
         NULL,
         1,
         {"s/^INBOX$/Inbox/x"},
         {NULL},
         {NULL},
         {{"INBOX", "Inbox"}, {"INBOX/x", "INBOX/x"}, {NULL, NULL}}},
};

static void test_fname_map(void **state)
{
	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(map_setups); i++) {
		const struct map_setup *m = &map_setups[i];
		struct sy_fname_map fm;
		struct sy_subst *rx[8];
		struct sy_kv f1f2 = {(char *)m->f1f2[0], (char *)m->f1f2[1]};
		struct sy_kv am = {(char *)m->automap[0], (char *)m->automap[1]};
		char *sub1 = sy_fname_sanitize_subfolder(m->subfolder1);
		char *sub2 = sy_fname_sanitize_subfolder(m->subfolder2);
		const char *error = NULL;
		size_t nrx = 0;

		memset(&fm, 0, sizeof(fm));
		fm.sep1 = m->sep1;
		fm.sep2 = m->sep2;
		fm.prefix1 = m->prefix1;
		fm.prefix2 = m->prefix2;
		fm.subfolder1 = sub1;
		fm.fixslash2 = m->fixslash2;
		fm.f1f2 = m->f1f2[0] != NULL ? &f1f2 : NULL;
		fm.f1f2_n = m->f1f2[0] != NULL;
		fm.automap = m->automap[0] != NULL ? &am : NULL;
		fm.automap_n = m->automap[0] != NULL;
		if (sub2 != NULL) {
			if (sy_fname_subfolder2(rx, m->prefix2, m->sep2, sub2, &error) < 0)
				fail_msg("%s: %s", m->what, error);
			nrx = 3;
		}
		for (size_t k = 0; k < 3 && m->rx[k] != NULL; k++) {
			if (sy_subst_parse(&rx[nrx], "--regextrans2", m->rx[k], &error) < 0)
				fail_msg("%s: %s", m->what, error);
			nrx++;
		}
		fm.rx = rx;
		fm.rx_n = nrx;
		for (size_t k = 0; m->cases[k].name1 != NULL; k++) {
			char *got = NULL;

			if (sy_fname_map(&fm, m->cases[k].name1, &got, &error) < 0)
				fail_msg("%s: [%s]: %s", m->what, m->cases[k].name1, error);
			if (strcmp(got, m->cases[k].want) != 0)
				fail_msg("%s: [%s] -> [%s], want [%s]", m->what, m->cases[k].name1,
				         got, m->cases[k].want);
			free(got);
		}
		for (size_t k = 0; k < nrx; k++)
			sy_subst_free(&rx[k]);
		free(sub1);
		free(sub2);
	}
}

/* A substitution failing while mapping is reported, nothing returned. */
static void test_fname_map_error(void **state)
{
	struct sy_fname_map fm;
	struct sy_subst *rx = NULL;
	const char *error = NULL;
	char *got = (char *)"x";

	(void)state;
	if (sy_subst_parse(&rx, "--regextrans2", "s/(*LIMIT_MATCH=20)(a|aa)+b//", &error) < 0)
		fail_msg("%s", error);
	memset(&fm, 0, sizeof(fm));
	fm.sep1 = fm.sep2 = '/';
	fm.prefix1 = fm.prefix2 = "";
	fm.rx = &rx;
	fm.rx_n = 1;
	assert_int_equal(sy_fname_map(&fm, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaac b", &got, &error), -1);
	assert_null(got);
	assert_non_null(strstr(error, "limit"));
	sy_subst_free(&rx);
}

/* --- automap --- */

static void test_role_guess(void **state)
{
	(void)state;
	assert_int_equal(sy_role_guess("Sent", ""), SY_ROLE_SENT);
	assert_int_equal(sy_role_guess("Blabla", ""), SY_ROLE_NONE);
	assert_int_equal(sy_role_guess("INBOX.Sent", "INBOX."), SY_ROLE_SENT);
	assert_int_equal(sy_role_guess("IN BOX.Sent", "IN BOX."), SY_ROLE_SENT);
	assert_int_equal(sy_role_guess("INBOX.Sent", ""), SY_ROLE_NONE);
	assert_int_equal(sy_role_guess("Sent Items", NULL), SY_ROLE_SENT);
	assert_int_equal(sy_role_guess("sent items", ""), SY_ROLE_NONE); /* exact */
	assert_int_equal(sy_role_guess("Deleted Items", ""), SY_ROLE_TRASH);
	assert_int_equal(sy_role_guess("Junk E-Mail", ""), SY_ROLE_JUNK);
	assert_int_equal(sy_role_guess("Starred", ""), SY_ROLE_FLAGGED);
	assert_int_equal(sy_role_guess("Gesendete Elemente", ""), SY_ROLE_SENT);
	assert_int_equal(sy_role_guess("Kosz", ""), SY_ROLE_TRASH);
	assert_int_equal(sy_role_guess("All Messages", ""), SY_ROLE_ALL);
	assert_int_equal(sy_role_guess("Archives", ""), SY_ROLE_ARCHIVE);
	assert_int_equal(sy_role_from_attrs(IMAP_LIST_HASNOCHILDREN), SY_ROLE_NONE);
	assert_int_equal(sy_role_from_attrs(IMAP_LIST_SENT | IMAP_LIST_HASCHILDREN), SY_ROLE_SENT);
	assert_int_equal(sy_role_from_attrs(IMAP_LIST_TRASH | IMAP_LIST_ALL), SY_ROLE_ALL);
	assert_string_equal(sy_role_names[SY_ROLE_DRAFTS], "\\Drafts");
}

struct said {
	char text[2048];
};

static void collect(void *aux, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void collect(void *aux, const char *fmt, ...)
{
	struct said *s = aux;
	size_t len = strlen(s->text);
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(s->text + len, sizeof(s->text) - len, fmt, ap);
	va_end(ap);
	len = strlen(s->text);
	snprintf(s->text + len, sizeof(s->text) - len, "|");
}

static void test_automap(void **state)
{
	/* host1: no special-use attributes but for Trash; host2: Dovecot's */
	static const char *const n1[] = {"Deleted Items", "INBOX",    "Junk E-Mail", "Sent",
	                                 "Sent Items",    "Sent.Old", "Spam",        "Trash"};
	static const unsigned a1[] = {0, 0, 0, 0, 0, 0, 0, IMAP_LIST_TRASH};
	static const char *const n2[] = {"Drafts", "INBOX", "Junk", "Papierkorb", "Sent"};
	static const unsigned a2[] = {IMAP_LIST_DRAFTS, 0, 0, IMAP_LIST_TRASH, IMAP_LIST_SENT};
	static const char *const want[] = {"Deleted Items", "INBOX",    "Junk E-Mail", "Sent",
	                                   "Sent Items",    "Sent.Old", "Spam",        "Trash"};
	struct sy_automap_side h1 = {"Host1", n1, a1, N_ELEMENTS(n1), ""};
	struct sy_automap_side h2 = {"Host2", n2, a2, N_ELEMENTS(n2), ""};
	static const struct {
		const char *h1, *h2;
	} expect[] = {
	        {"Deleted Items", "Papierkorb"}, /* guessed -> special (case 3) */
	        {"Junk E-Mail", "Junk"},         /* guessed -> guessed (case 4) */
	        {"Sent", "Sent"},                /* guessed -> special */
	        {"Sent Items", "Sent"},          /* guessed again -> special */
	        {"Spam", "Junk"},
	        {"Trash", "Papierkorb"}, /* special -> special (case 1) */
	};
	struct sy_kv *map = NULL;
	size_t n = 0;
	struct said said = {""};

	(void)state;
	assert_int_equal(
	        sy_automap_build(&h1, &h2, want, N_ELEMENTS(want), &map, &n, collect, &said), 0);
	if (n != N_ELEMENTS(expect))
		fail_msg("%zu pairs, want %zu", n, N_ELEMENTS(expect));
	for (size_t k = 0; k < n; k++) {
		assert_string_equal(map[k].key, expect[k].h1);
		assert_string_equal(map[k].value, expect[k].h2);
	}
	assert_string_equal(said.text, "Host1: special Trash                = \\Trash|"
	                               "|"
	                               "Host1: Sent Items not \\Sent because set to Sent|"
	                               "Host1: Spam not \\Junk because set to Junk E-Mail|"
	                               "Host1: Trash not \\Trash because set to Deleted Items|"
	                               "Host2: special Drafts               = \\Drafts|"
	                               "Host2: special Papierkorb           = \\Trash|"
	                               "Host2: special Sent                 = \\Sent|"
	                               "|");
	sy_automap_free(&map, n);
	assert_null(map);
}

/* special on host1, only guessed on host2 (case 2); a second folder with
 * the same attribute is "already assigned" and falls back to guessing. */
static void test_automap_case2(void **state)
{
	static const char *const n1[] = {"Envoyes", "Outbox"};
	static const unsigned a1[] = {IMAP_LIST_SENT, IMAP_LIST_SENT};
	static const char *const n2[] = {"INBOX.Sent Items"};
	static const unsigned a2[] = {0};
	struct sy_automap_side h1 = {"Host1", n1, a1, 2, ""};
	struct sy_automap_side h2 = {"Host2", n2, a2, 1, "INBOX."};
	struct sy_kv *map = NULL;
	size_t n = 0;
	struct said said = {""};

	(void)state;
	assert_int_equal(sy_automap_build(&h1, &h2, n1, 2, &map, &n, collect, &said), 0);
	assert_int_equal(n, 1);
	assert_string_equal(map[0].key, "Envoyes");
	assert_string_equal(map[0].value, "INBOX.Sent Items");
	assert_non_null(strstr(said.text, "Host1: special Outbox               = \\Sent already "
	                                  "assigned to Envoyes|"));
	sy_automap_free(&map, n);
	assert_int_equal(sy_automap_build(&h1, &h2, n1, 2, &map, &n, NULL, NULL), 0);
	sy_automap_free(&map, n);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_subst_apply),
	        cmocka_unit_test(test_subst_errors),
	        cmocka_unit_test(test_subst_runtime_error),
	        cmocka_unit_test(test_subst_make_and_quote),
	        cmocka_unit_test(test_regex_match),
	        cmocka_unit_test(test_regex_errors),
	        cmocka_unit_test(test_check_regexes),
	        cmocka_unit_test(test_guess_sep_prefix),
	        cmocka_unit_test(test_sanitize_subfolder),
	        cmocka_unit_test(test_fix_inbox),
	        cmocka_unit_test(test_subfolder2_regexes),
	        cmocka_unit_test(test_fname_map),
	        cmocka_unit_test(test_fname_map_error),
	        cmocka_unit_test(test_role_guess),
	        cmocka_unit_test(test_automap),
	        cmocka_unit_test(test_automap_case2),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
