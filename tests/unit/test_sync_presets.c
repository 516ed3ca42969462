/* Unit tests for imapferry-sync's provider presets (sy_options_presets(),
 * imapsync's easyany()): the option values each preset leaves, with and
 * without the user's own values. Expected values are the table of
 * docs/imapsync-behaviour.md section 9. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "options.h"
#include "xdup.h"

#define MAXW  24
#define WANTS 40

struct pcase {
	const char *name;
	const char *argv[MAXW]; /* after argv[0]; NULL-terminated */
	/* "opt=value" as sy_options_format() writes it after presets and check */
	const char *want[WANTS];
	const char *note; /* a substring of the notes, or NULL */
};

static char *run_case(const struct pcase *c)
{
	struct sy_options o;
	char *argv[MAXW + 2], err[4096], val[1024], notes[2048], *msg = NULL;
	int argc = 0;

	argv[argc++] = (char *)"imapferry-sync";
	for (int i = 0; c->argv[i] != NULL; i++)
		argv[argc++] = (char *)c->argv[i];
	argv[argc] = NULL;
	sy_options_init(&o);
	if (sy_options_parse(&o, argc, argv, err, sizeof(err)) < 0 ||
	    sy_options_presets(&o, notes, sizeof(notes)) < 0 ||
	    sy_options_check(&o, err, sizeof(err)) < 0) {
		if (asprintf(&msg, "%s: failed: %s", c->name, err) < 0)
			msg = NULL;
		goto out;
	}
	if (c->note != NULL && strstr(notes, c->note) == NULL) {
		if (asprintf(&msg, "%s: notes \"%s\" lack \"%s\"", c->name, notes, c->note) < 0)
			msg = NULL;
		goto out;
	}
	for (int i = 0; c->want[i] != NULL && msg == NULL; i++) {
		const char *w = c->want[i];
		size_t n = strcspn(w, "=");
		char name[64];
		int id;

		snprintf(name, sizeof(name), "%.*s", (int)n, w);
		id = sy_options_lookup(name);
		if (id < 0) {
			if (asprintf(&msg, "%s: no option %s", c->name, name) < 0)
				msg = NULL;
			break;
		}
		sy_options_format(&o, (enum sy_opt)id, val, sizeof(val));
		if (strcmp(val, w + n + 1) != 0 && asprintf(&msg, "%s: %s is \"%s\", want \"%s\"",
		                                            c->name, name, val, w + n + 1) < 0)
			msg = NULL;
	}
out:
	sy_options_free(&o);
	return msg;
}

static void run_cases(const struct pcase *cases, size_t count)
{
	int failed = 0;

	for (size_t i = 0; i < count; i++) {
		char *msg = run_case(&cases[i]);

		if (msg != NULL) {
			print_error("%s\n", msg);
			free(msg);
			failed++;
		}
	}
	if (failed > 0)
		fail_msg("%d of %zu cases failed", failed, count);
}

#define RUN(cases) run_cases(cases, sizeof(cases) / sizeof(cases[0]))
#define USERS      "--user1", "u1", "--user2", "u2"

static void test_gmail(void **state)
{
	static const struct pcase cases[] = {
	        {"gmail1",
	         {USERS, "--host2", "h2", "--gmail1", NULL},
	         {"host1=imap.gmail.com", "ssl1=1", "host2=h2", "ssl2=0", "maxbytespersecond=40000",
	          "maxbytesafter=3000000000", "automap=1", "maxsleep=2", "skipcrossduplicates=1",
	          "useheader=[X-Gmail-Received,Message-Id]", "regextrans2=[s,\\[Gmail\\].,,]",
	          "folderlast=[[Gmail]/All Mail]", "exclude=[]", "expunge1=0", "addheader=0",
	          "synclabels=0", "resynclabels=0", NULL},
	         "Preset --gmail1: host1 imap.gmail.com"},
	        {"gmail2",
	         {USERS, "--host1", "h1", "--gmail2", NULL},
	         {"host1=h1", "ssl1=0", "host2=imap.gmail.com", "ssl2=1", "maxbytespersecond=20000",
	          "maxbytesafter=1000000000", "automap=1", "expunge1=1", "addheader=1",
	          "maxsleep=2", "exclude=[\\[Gmail\\]$]", "useheader=[Message-Id]",
	          "regextrans2=[s,\\[Gmail\\].,,,s,^ +| +$,,g,s,/ +| +/,/,g,s/['\\\\^\"]/_/g]",
	          "folderlast=[[Gmail]/All Mail]", "skipcrossduplicates=0", NULL},
	         "Preset --gmail2"},
	        {"gmail1 gmail2",
	         {USERS, "--gmail1", "--gmail2", NULL},
	         {"host1=imap.gmail.com", "ssl1=1", "host2=imap.gmail.com", "ssl2=1",
	          "maxbytespersecond=20000", "maxbytesafter=1000000000", "automap=1", "maxsleep=2",
	          "skipcrossduplicates=0", "synclabels=1", "resynclabels=1",
	          "useheader=[X-Gmail-Received,Message-Id]", "exclude=[\\[Gmail\\]$]",
	          "folderlast=[[Gmail]/All Mail]", "regextrans2=[]", "expunge1=0", "addheader=0",
	          NULL},
	         "Preset --gmail1 --gmail2"},
	        /* the user's scalars win, lists get the preset's values after theirs */
	        {"gmail2 overridden",
	         {USERS,
	          "--host1",
	          "h1",
	          "--gmail2",
	          "--host2",
	          "127.0.0.1",
	          "--nossl2",
	          "--maxbytespersecond",
	          "0",
	          "--noautomap",
	          "--noexpunge1",
	          "--useheader",
	          "Subject",
	          "--regextrans2",
	          "s/a/b/",
	          "--exclude",
	          "^X$",
	          "--folderlast",
	          "Z",
	          NULL},
	         {"host2=127.0.0.1", "ssl2=0", "maxbytespersecond=0", "maxbytesafter=1000000000",
	          "automap=0", "expunge1=0", "addheader=1", "useheader=[Subject,Message-Id]",
	          "exclude=[^X$,\\[Gmail\\]$]", "folderlast=[Z,[Gmail]/All Mail]",
	          "regextrans2=[s/a/b/,s,\\[Gmail\\].,,,s,^ +| +$,,g,s,/ +| +/,/,g,"
	          "s/['\\\\^\"]/_/g]",
	          NULL},
	         NULL},
	        {"gmail2 noexclude",
	         {USERS, "--host1", "h1", "--gmail2", "--noexclude", NULL},
	         {"exclude=[]", NULL},
	         NULL},
	        {"gmail1 noskipcrossduplicates",
	         {USERS, "--host2", "h2", "--gmail1", "--noskipcrossduplicates", NULL},
	         {"skipcrossduplicates=0", NULL},
	         NULL},
	        {"gmail1 gmail2 nosynclabels",
	         {USERS, "--gmail1", "--gmail2", "--nosynclabels", "--skipcrossduplicates", NULL},
	         {"synclabels=0", "resynclabels=1", "skipcrossduplicates=1", NULL},
	         NULL},
	        /* nothing without a preset: imapsync's defaults stay */
	        {"no preset",
	         {USERS, "--host1", "h1", "--host2", "h2", NULL},
	         {"automap=0", "maxbytespersecond=0", "useheader=[]", "exclude=[]",
	          "regextrans2=[]", "folderlast=[]", "skipcrossduplicates=0", "maxsize=0", NULL},
	         NULL},
	};

	(void)state;
	RUN(cases);
}

static void test_office_exchange(void **state)
{
	static const struct pcase cases[] = {
	        {"office1",
	         {USERS, "--host2", "h2", "--office1", NULL},
	         {"host1=outlook.office365.com", "ssl1=1", "exclude=[^Files$]", "maxsize=0",
	          "automap=0", NULL},
	         "Preset --office1"},
	        {"office2",
	         {USERS, "--host1", "h1", "--office2", NULL},
	         {"host2=outlook.office365.com", "ssl2=1", "maxsize=45000000",
	          "maxmessagespersecond=4", "disarmreadreceipts=1",
	          "regexmess=[s,(.{10239}),$1\\r\\n,g]", "f1f2={Files=Files_renamed_by_imapsync}",
	          "exclude=[]", NULL},
	         "--maxsize 45000000"},
	        {"office2 opt-outs",
	         {USERS, "--host1", "h1", "--office2", "--nof1f2", "--noregexmess", "--maxsize",
	          "1000", "--nodisarmreadreceipts", NULL},
	         {"maxsize=1000", "disarmreadreceipts=0", "regexmess=[]", "f1f2={}", NULL},
	         "(not: --noregexmess)"},
	        {"office2 own f1f2",
	         {USERS, "--host1", "h1", "--office2", "--f1f2", "A=B", NULL},
	         {"f1f2={A=B,Files=Files_renamed_by_imapsync}", NULL},
	         NULL},
	        {"exchange1",
	         {USERS, "--host1", "h1", "--host2", "h2", "--exchange1", NULL},
	         {"host1=h1", "maxsize=0", "regexmess=[]", "regexflag=[]", NULL},
	         "Preset --exchange1: nothing to set"},
	        {"exchange2",
	         {USERS, "--host1", "h1", "--host2", "h2", "--exchange2", NULL},
	         {"host2=h2", "ssl2=0", "maxsize=10000000", "maxmessagespersecond=4",
	          "disarmreadreceipts=1", "regexflag=[s/\\\\Flagged//g]",
	          "regexmess=[s,(.{10239}),$1\\r\\n,g]", NULL},
	         "Preset --exchange2"},
	        {"exchange2 own values",
	         {USERS, "--host1", "h1", "--host2", "h2", "--exchange2", "--maxmessagespersecond",
	          "0.5", "--regexflag", "s/X//", NULL},
	         {"maxmessagespersecond=0.5", "regexflag=[s/X//,s/\\\\Flagged//g]", NULL},
	         NULL},
	        {"office1 office2 both",
	         {USERS, "--office1", "--office2", NULL},
	         {"host1=outlook.office365.com", "host2=outlook.office365.com", "ssl1=1", "ssl2=1",
	          NULL},
	         NULL},
	};

	(void)state;
	RUN(cases);
}

static void test_domino(void **state)
{
	static const struct pcase cases[] = {
	        {"domino1",
	         {USERS, "--host1", "h1", "--host2", "h2", "--domino1", NULL},
	         {"sep1=\\", "prefix1=", "sep2=(undef)", "messageidnodomain=1", "regextrans2=[]",
	          NULL},
	         "Preset --domino1: --sep1 \"\\\""},
	        {"domino2",
	         {USERS, "--host1", "h1", "--host2", "h2", "--domino2", NULL},
	         {"sep2=\\", "prefix2=", "sep1=(undef)", "messageidnodomain=1",
	          "regextrans2=[s,^Inbox\\\\(.*),$1,i]", NULL},
	         NULL},
	        {"domino2 own sep",
	         {USERS, "--host1", "h1", "--host2", "h2", "--domino2", "--sep2", "/", "--prefix2",
	          "INBOX/", "--nomessageidnodomain", NULL},
	         {"sep2=/", "prefix2=INBOX/", "messageidnodomain=0", NULL},
	         NULL},
	};

	(void)state;
	RUN(cases);
}

/* A preset's value counts as given afterwards (imapsync's "defined"), so
 * the start-up implications treat it like the user's: --gmail2's expunge1
 * is the folder EXPUNGE of an explicit --expunge1. */
static void test_given(void **state)
{
	struct sy_options o;
	char *argv[] = {"s", "--user1", "u", "--user2", "u", "--host1", "h", "--gmail2", NULL};
	char err[512];

	(void)state;
	sy_options_init(&o);
	assert_int_equal(0, sy_options_parse(&o, 8, argv, err, sizeof(err)));
	assert_false(sy_options_given(&o, SY_OPT_EXPUNGE1));
	assert_int_equal(0, sy_options_presets(&o, NULL, 0));
	assert_true(sy_options_given(&o, SY_OPT_EXPUNGE1));
	assert_true(sy_options_given(&o, SY_OPT_SSL2));
	assert_false(sy_options_given(&o, SY_OPT_SSL1));
	assert_int_equal(0, sy_options_check(&o, err, sizeof(err)));
	sy_options_free(&o);
}

/* --skipcrossduplicates' key set (xdup.c): folders per key, the current
 * folder left out, growth past the first table. */
static void test_xdup(void **state)
{
	struct sy_xdup *x = sy_xdup_new();
	char where[64], key[32];

	(void)state;
	assert_int_equal(0, sy_xdup_find(x, "k1", NULL, where, sizeof(where)));
	assert_string_equal("", where);
	sy_xdup_add(x, "k1", "INBOX");
	sy_xdup_add(x, "k1", "INBOX");
	sy_xdup_add(x, "k1", "Work");
	assert_int_equal(2, sy_xdup_find(x, "k1", NULL, where, sizeof(where)));
	assert_string_equal("INBOX, Work", where);
	assert_int_equal(1, sy_xdup_find(x, "k1", "Work", where, sizeof(where)));
	assert_string_equal("INBOX", where);
	assert_int_equal(0, sy_xdup_find(x, "k1", "INBOX", NULL, 0) - 1);
	for (int i = 0; i < 5000; i++) {
		snprintf(key, sizeof(key), "key%d", i);
		sy_xdup_add(x, key, i % 2 ? "A" : "B");
	}
	assert_int_equal(5001, sy_xdup_count(x));
	assert_int_equal(1, sy_xdup_find(x, "key4999", "B", where, sizeof(where)));
	assert_string_equal("A", where);
	assert_int_equal(0, sy_xdup_find(x, "key4998", "B", NULL, 0));
	assert_int_equal(0, sy_xdup_find(x, "nokey", NULL, NULL, 0));
	sy_xdup_free(&x);
	assert_null(x);
	sy_xdup_free(&x);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_gmail),  cmocka_unit_test(test_office_exchange),
	        cmocka_unit_test(test_domino), cmocka_unit_test(test_given),
	        cmocka_unit_test(test_xdup),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
