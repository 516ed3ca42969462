/* Unit tests for typed response views (lib/resp.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "imapferry/resp.h"

/* Parses one server message from s; the parser stays alive in *p. */
static const struct imap_msg *parse1(struct imap_parser **p, const char *s)
{
	struct imap_event ev;
	size_t off = 0, len = strlen(s), used;

	imap_parser_free(p);
	*p = imap_parser_new(IMAP_PARSE_SERVER, NULL);
	while (off < len) {
		imap_parser_next(*p, s + off, len - off, &used, &ev);
		off += used;
		if (ev.type == IMAP_EV_MESSAGE)
			return ev.msg;
		if (ev.type == IMAP_EV_ERROR)
			fail_msg("parse error on %s: %s", s, ev.error);
	}
	fail_msg("incomplete: %s", s);
	return NULL;
}

static void test_caps(void **state)
{
	struct imap_parser *p = NULL;
	struct imap_caps caps;
	const struct imap_msg *m;

	(void)state;
	m = parse1(&p, "* OK [CAPABILITY IMAP4rev1 SASL-IR LITERAL+ STARTTLS AUTH=PLAIN "
	               "AUTH=LOGIN] ready\r\n");
	assert_int_equal(imap_caps_from_msg(&caps, m), 1);
	assert_true(imap_caps_has(&caps, IMAP_CAP_IMAP4REV1));
	assert_true(imap_caps_has(&caps, IMAP_CAP_LITERALPLUS));
	assert_true(imap_caps_has(&caps, IMAP_CAP_STARTTLS));
	assert_false(imap_caps_has(&caps, IMAP_CAP_IDLE));
	assert_int_equal(caps.auth, (1u << IMAP_AUTH_PLAIN) | (1u << IMAP_AUTH_LOGIN));

	m = parse1(&p, "* CAPABILITY IMAP4rev1 QRESYNC APPENDLIMIT=35651584 compress=deflate "
	               "X-GM-EXT-1 AUTH=XOAUTH2 X-UNKNOWN\r\n");
	assert_int_equal(imap_caps_from_msg(&caps, m), 1);
	assert_true(imap_caps_has(&caps, IMAP_CAP_CONDSTORE)); /* implied by QRESYNC */
	assert_true(imap_caps_has(&caps, IMAP_CAP_COMPRESS_DEFLATE));
	assert_true(imap_caps_has(&caps, IMAP_CAP_X_GM_EXT_1));
	assert_int_equal(caps.appendlimit, 35651584);
	assert_int_equal(caps.auth, 1u << IMAP_AUTH_XOAUTH2);

	m = parse1(&p, "* OK [ALERT] hi\r\n");
	assert_int_equal(imap_caps_from_msg(&caps, m), 0);
	assert_int_equal(imap_cap_lookup("literal+", 8), IMAP_CAP_LITERALPLUS);
	assert_int_equal(imap_cap_lookup("LITERAL", 7), -1);
	imap_parser_free(&p);
}

static void test_list(void **state)
{
	struct imap_parser *p = NULL;
	struct imap_list_info li;
	const char *err;

	(void)state;
	assert_int_equal(
	        imap_list_parse(parse1(&p, "* LIST (\\HasNoChildren \\Sent) \".\" Sent\r\n"), &li,
	                        &err),
	        0);
	assert_int_equal(li.attrs, IMAP_LIST_HASNOCHILDREN | IMAP_LIST_SENT);
	assert_int_equal(li.sep, '.');
	assert_string_equal(li.name, "Sent");

	assert_int_equal(
	        imap_list_parse(parse1(&p, "* LIST (\\NonExistent) NIL {3}\r\na b\r\n"), &li, &err),
	        0);
	assert_int_equal(li.attrs, IMAP_LIST_NONEXISTENT | IMAP_LIST_NOSELECT);
	assert_int_equal(li.sep, 0);
	assert_int_equal(li.name_len, 3);
	assert_string_equal(li.name, "a b");

	assert_int_equal(imap_list_parse(parse1(&p, "* LIST () \"/\" \"My \\\"q\\\" f\" "
	                                            "(\"CHILDINFO\" (\"SUBSCRIBED\"))\r\n"),
	                                 &li, &err),
	                 0);
	assert_string_equal(li.name, "My \"q\" f");

	assert_int_equal(imap_list_parse(parse1(&p, "* LIST \"/\" INBOX\r\n"), &li, &err), -1);
	assert_string_equal(err, "LIST reply without attribute list");
	assert_int_equal(imap_list_parse(parse1(&p, "* LIST () \"//\" INBOX\r\n"), &li, &err), -1);
	assert_int_equal(imap_list_parse(parse1(&p, "* LIST () \"/\"\r\n"), &li, &err), -1);
	imap_parser_free(&p);
}

static void test_status(void **state)
{
	struct imap_parser *p = NULL;
	struct imap_status_info si;
	const char *err;

	(void)state;
	assert_int_equal(imap_status_parse(parse1(&p, "* STATUS \"INBOX\" (MESSAGES 231 UIDNEXT "
	                                              "44292 UIDVALIDITY 1 HIGHESTMODSEQ "
	                                              "20010715194045319 SIZE 9 X-FOO 3)\r\n"),
	                                   &si, &err),
	                 0);
	assert_string_equal(si.name, "INBOX");
	assert_int_equal(si.have, IMAP_STATUS_MESSAGES | IMAP_STATUS_UIDNEXT |
	                                  IMAP_STATUS_UIDVALIDITY | IMAP_STATUS_HIGHESTMODSEQ |
	                                  IMAP_STATUS_SIZE);
	assert_int_equal(si.messages, 231);
	assert_int_equal(si.uidnext, 44292);
	assert_true(si.highestmodseq == 20010715194045319ull);
	assert_int_equal(si.size, 9);
	assert_int_equal(imap_status_parse(parse1(&p, "* STATUS x (MESSAGES)\r\n"), &si, &err), -1);
	assert_int_equal(imap_status_parse(parse1(&p, "* STATUS x (MESSAGES a)\r\n"), &si, &err),
	                 -1);
	assert_int_equal(
	        imap_status_parse(parse1(&p, "* STATUS x (UIDNEXT 4294967296)\r\n"), &si, &err),
	        -1);
	assert_int_equal(imap_status_parse(parse1(&p, "* STATUS x\r\n"), &si, &err), -1);
	imap_parser_free(&p);
}

static void test_fetch(void **state)
{
	struct imap_parser *p = NULL;
	const struct imap_arg *items, *v;
	uint32_t uid;

	(void)state;
	assert_int_equal(
	        imap_fetch_items(parse1(&p, "* 3 FETCH (FLAGS (\\Seen $X) UID 44 "
	                                    "BODY[HEADER.FIELDS (MESSAGE-ID)] {4}\r\nab\r\n "
	                                    "RFC822.SIZE 9)\r\n"),
	                         &items),
	        0);
	assert_int_equal(imap_arg_get_u32(imap_fetch_get(items, "uid"), &uid), 0);
	assert_int_equal(uid, 44);
	v = imap_fetch_get(items, "FLAGS");
	assert_non_null(v);
	assert_int_equal(v->type, IMAP_ARG_LIST);
	assert_int_equal(v->count, 2);
	v = imap_fetch_get(items, "BODY[HEADER.FIELDS (MESSAGE-ID)]");
	assert_non_null(v);
	assert_int_equal(v->len, 4);
	assert_null(imap_fetch_get(items, "INTERNALDATE"));
	assert_int_equal(imap_fetch_items(parse1(&p, "* 3 EXISTS\r\n"), &items), -1);
	imap_parser_free(&p);
}

static void test_seqset(void **state)
{
	static const struct {
		const char *in;
		int ok;
		const char *want; /* ranges "lo-hi," */
		uint64_t count;
	} cases[] = {
	        {"1:3,5,7:*", 1, "1-3,5-5,7-4294967295,", 4294967293ull},
	        {"304,319:320", 1, "304-304,319-320,", 3},
	        {"4:2", 1, "2-4,", 3},
	        {"*", 1, "4294967295-4294967295,", 1},
	        {"0", 0, "", 0},
	        {"1:", 0, "", 0},
	        {"1,", 0, "", 0},
	        {",1", 0, "", 0},
	        {"a", 0, "", 0},
	        {"4294967296", 0, "", 0},
	        {"", 0, "", 0},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct imap_seqset set;
		const char *err = NULL;
		char got[200] = "";
		int r = imap_seqset_parse(cases[i].in, strlen(cases[i].in), &set, &err);

		if ((r == 0) != cases[i].ok)
			fail_msg("%s: got %d", cases[i].in, r);
		if (r < 0) {
			assert_string_equal(err, "bad sequence set");
			assert_null(set.r);
			continue;
		}
		for (size_t k = 0; k < set.count; k++)
			snprintf(got + strlen(got), sizeof(got) - strlen(got), "%u-%u,",
			         set.r[k].lo, set.r[k].hi);
		if (strcmp(got, cases[i].want) != 0)
			fail_msg("%s: got %s want %s", cases[i].in, got, cases[i].want);
		assert_true(imap_seqset_count(&set) == cases[i].count);
		imap_seqset_free(&set);
	}
}

static void test_date_time(void **state)
{
	static const struct {
		const char *in;
		long long t;
		int tz;
		const char *canon;
	} cases[] = {
	        {"17-Jul-1996 02:44:25 -0700", 837596665, -420, "17-Jul-1996 02:44:25 -0700"},
	        {" 7-Jul-1996 02:44:25 -0700", 837596665 - 10 * 86400, -420,
	         "07-Jul-1996 02:44:25 -0700"},
	        {"29-feb-2000 05:30:00 +0530", 951782400, 330, "29-Feb-2000 05:30:00 +0530"},
	        {"01-Jan-1970 00:00:00 +0200", -7200, 120, "01-Jan-1970 00:00:00 +0200"},
	};
	static const char *const bad[] = {
	        "17-Jux-1996 02:44:25 -0700", "17-Jul-1996 02:44:25",
	        "17-Jul-1996 24:44:25 -0700", "17-Jul-1996 02:44:25 -0700x",
	        "32-Jul-1996 02:44:25 -0700", ""};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		time_t t;
		int tz;
		char out[27];

		assert_int_equal(imap_date_time_parse(cases[i].in, strlen(cases[i].in), &t, &tz),
		                 0);
		if ((long long)t != cases[i].t || tz != cases[i].tz)
			fail_msg("%s: got %lld %d", cases[i].in, (long long)t, tz);
		imap_date_time_format(out, t, tz);
		assert_string_equal(out, cases[i].canon);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		time_t t;
		int tz;

		if (imap_date_time_parse(bad[i], strlen(bad[i]), &t, &tz) == 0)
			fail_msg("accepted %s", bad[i]);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_caps),   cmocka_unit_test(test_list),
	        cmocka_unit_test(test_status), cmocka_unit_test(test_fetch),
	        cmocka_unit_test(test_seqset), cmocka_unit_test(test_date_time),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
