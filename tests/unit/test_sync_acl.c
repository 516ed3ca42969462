/* Unit tests for sync/acl.c: what --syncacls sends (RFC 4314 rights as
 * host2 knows them, SETACL lines) and what --synclabels would send to
 * Gmail (X-GM-LABELS lists and STORE lines). Gmail cannot be reached from
 * the test machines, so the label side is only tested here. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "acl.h"
#include "imapferry/parse.h"

static void test_known_rights(void **state)
{
	char k[64];

	(void)state;
	assert_int_equal(1, sy_acl_known_rights("IMAP4rev1 ACL RIGHTS=texk IDLE", k, sizeof(k)));
	assert_string_equal("lrswipcdatexk", k);
	assert_int_equal(1, sy_acl_known_rights("ACL", k, sizeof(k))); /* RFC 2086 server */
	assert_string_equal("lrswipcda", k);
	assert_int_equal(0, sy_acl_known_rights("IMAP4rev1 IDLE ACLX", k, sizeof(k)));
	assert_string_equal("", k);
	assert_int_equal(0, sy_acl_known_rights("", k, sizeof(k)));
}

static void test_rights_for(void **state)
{
	char out[64], dropped[64];

	(void)state;
	sy_acl_rights_for("lrwstipekxacd", "lrswipcdatexk", out, sizeof(out), dropped,
	                  sizeof(dropped));
	assert_string_equal("lrwstipekxacd", out);
	assert_string_equal("", dropped);
	/* an RFC 2086 host2: k x -> c, t e -> d */
	sy_acl_rights_for("lrwstipekxa", "lrswipcda", out, sizeof(out), dropped, sizeof(dropped));
	assert_string_equal("lrwsdipca", out);
	assert_string_equal("", dropped);
	/* rights host2 does not know are left out and said */
	sy_acl_rights_for("lr0w9", "lrswipcdatexk", out, sizeof(out), dropped, sizeof(dropped));
	assert_string_equal("lrw", out);
	assert_string_equal("09", dropped);
	sy_acl_rights_for("", "lrswipcda", out, sizeof(out), NULL, 0);
	assert_string_equal("", out);
	assert_true(sy_acl_rights_equal("lrs", "srl"));
	assert_true(sy_acl_rights_equal("", ""));
	assert_false(sy_acl_rights_equal("lrs", "lr"));
	assert_false(sy_acl_rights_equal("lr", "lrs"));
}

/* Parses one server line with the library's parser. */
static int parse_acl(const char *line, struct sy_acl *acl)
{
	struct imap_parser *p = imap_parser_new(IMAP_PARSE_SERVER, NULL);
	struct imap_event ev;
	size_t used;
	int rc = -2;

	if (imap_parser_next(p, line, strlen(line), &used, &ev) == IMAP_EV_MESSAGE)
		rc = sy_acl_parse(ev.msg, acl);
	imap_parser_free(&p);
	return rc;
}

static void test_parse(void **state)
{
	struct sy_acl acl = {NULL, 0};

	(void)state;
	assert_int_equal(0,
	                 parse_acl("* ACL Shared judy lrwstipekxacd kate lrs \"a b\" l\r\n", &acl));
	assert_int_equal(3, acl.n);
	assert_string_equal("judy", acl.v[0].id);
	assert_string_equal("lrwstipekxacd", acl.v[0].rights);
	assert_string_equal("kate", acl.v[1].id);
	assert_string_equal("a b", acl.v[2].id);
	assert_int_equal(-1, parse_acl("* LIST () \"/\" INBOX\r\n", &acl));
	assert_int_equal(3, acl.n);
	sy_acl_free(&acl);
	assert_int_equal(0, acl.n);
}

static void test_commands(void **state)
{
	struct sy_acl_entry e1[] = {{"judy", "lrwstipekxacd"},
	                            {"kate", "lrswi"},
	                            {"frank", "lr"},
	                            {"a b", "l0"},
	                            {"erin", "l"}};
	struct sy_acl_entry e2[] = {{"judy2", "lrwstipekxacd"}, {"frank", "rl"}, {"zed", "l"}};
	struct sy_acl a1 = {e1, 5}, a2 = {e2, 3};
	char *cmds, notes[512];
	size_t n;
	const char *c;

	(void)state;
	assert_int_equal(0, sy_acl_commands(&a1, &a2, "lrswipcdatexk", "Shared \"x\"", "judy",
	                                    "judy2", &cmds, &n, notes, sizeof(notes)));
	/* judy -> judy2 (same rights: nothing), frank equal, zed left alone */
	assert_int_equal(3, n);
	c = cmds;
	assert_string_equal("SETACL \"Shared \\\"x\\\"\" kate lrswi", c);
	c += strlen(c) + 1;
	assert_string_equal("SETACL \"Shared \\\"x\\\"\" \"a b\" l", c);
	c += strlen(c) + 1;
	assert_string_equal("SETACL \"Shared \\\"x\\\"\" erin l", c);
	assert_string_equal("ACL of a b on Shared \"x\": rights \"0\" unknown to host2, left out",
	                    notes);
	free(cmds);
	/* no host2 ACL (the folder is new): everything, INBOX canonical */
	assert_int_equal(0, sy_acl_commands(&a1, NULL, "lrswipcda", "inbox", "judy", "judy", &cmds,
	                                    &n, NULL, 0));
	assert_int_equal(5, n);
	assert_string_equal("SETACL INBOX judy lrwsdipca", cmds);
	free(cmds);
}

static char *map_upper(void *aux, const char *name)
{
	char *s = strdup(name);

	(void)aux;
	for (char *p = s; *p != '\0'; p++) {
		if (*p == ' ')
			*p = '_';
	}
	return s;
}

static void test_labels(void **state)
{
	const char *l1[] = {"\\Inbox", "\\Important", "Work", "Family/Kids",
	                    "\\Sent",  "\\Starred",   "a\"b"};
	char out[512], cmd[600];

	(void)state;
	/* the copy in Work: its own folder's label goes, \Inbox stays */
	assert_int_equal(5, sy_labels_for(l1, 7, "Work", NULL, NULL, out, sizeof(out)));
	assert_string_equal("(\\Inbox \\Important Family/Kids \\Starred \"a\\\"b\")", out);
	/* the copy in INBOX: no \Inbox label (it is the inbox) */
	assert_int_equal(5, sy_labels_for(l1, 7, "INBOX", NULL, NULL, out, sizeof(out)));
	assert_string_equal("(\\Important Work Family/Kids \\Starred \"a\\\"b\")", out);
	/* user labels take host2's folder names */
	{
		const char *l2[] = {"My Label", "\\Draft"};

		assert_int_equal(1,
		                 sy_labels_for(l2, 2, "INBOX", map_upper, NULL, out, sizeof(out)));
		assert_string_equal("(My_Label)", out);
	}
	assert_int_equal(0, sy_labels_for(l1, 0, "INBOX", NULL, NULL, out, sizeof(out)));
	assert_string_equal("()", out);
	assert_int_equal(-1, sy_labels_for(l1, 7, "Work", NULL, NULL, out, 10));
	assert_true(sy_labels_store_cmd(42, "(Work \\Starred)", 0, cmd, sizeof(cmd)) > 0);
	assert_string_equal("UID STORE 42 +X-GM-LABELS.SILENT (Work \\Starred)", cmd);
	assert_true(sy_labels_store_cmd(7, "()", 1, cmd, sizeof(cmd)) > 0);
	assert_string_equal("UID STORE 7 X-GM-LABELS.SILENT ()", cmd);
	assert_int_equal(-1, sy_labels_store_cmd(7, "()", 1, cmd, 8));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_known_rights), cmocka_unit_test(test_rights_for),
	        cmocka_unit_test(test_parse),        cmocka_unit_test(test_commands),
	        cmocka_unit_test(test_labels),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
