/*
 * Unit tests for sync/hdrkey.c: imapsync's message identity key.
 *
 * The two vectors of docs/imapsync-behaviour.md section 1 are checked as
 * given. Every other expected key was computed outside this code, twice:
 * with a Python implementation of the algorithm of section 1, e.g.
 *   python3 -c 'import hashlib,base64; print(base64.b64encode(hashlib.md5(
 *     b"MESSAGE-ID: <ABC.123@EXAMPLE.COM>").digest()).decode().rstrip("="))'
 * (normalise each value: 8-bit -> X, TAB -> SP, strip, collapse white space;
 * line = upper("NAME: value"); sort; concatenate; md5; base64 without '='),
 * and by running imapsync 2.229's own header_construct/header_line_normalize/
 * decompose_header subs (for the parser quirks) on the same inputs; both
 * agreed on every key.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "hdrkey.h"

#define N_ELEMENTS(a) (sizeof(a) / sizeof((a)[0]))

/* The header of the doc's test vector, CRLF and LF, and folded. */
#define DOC_MID "Message-Id: <abc.123@example.com>"
#define DOC_R1                                                                                     \
	"Received: from mx.example.com (mx.example.com [192.0.2.1])\tby mail.example.org; Tue, 1 " \
	"Jan 2019 10:00:00 +0000"
#define DOC_R2   "Received: from localhost  by mx.example.com; Tue, 1 Jan 2019 09:59:59 +0000 "
#define DOC_CRLF DOC_MID "\r\n" DOC_R1 "\r\n" DOC_R2 "\r\n\r\n"
#define DOC_LF   DOC_MID "\n" DOC_R1 "\n" DOC_R2 "\n\n"
#define DOC_KEY  "boT0dT52Qv+D11v+ARfD8g"
#define NUL_HDR  "Message-Id: <a\0b@c>\r\n"

/* Parsers */
#define P_FIELDS 0 /* sy_hdrkey_compute */
#define P_WHOLE  1 /* sy_hdrkey_compute_whole */

static const char *const use_mid[] = {"Message-Id", NULL};
static const char *const use_mid_lc[] = {"message-id", NULL};
static const char *const use_rcv[] = {"RECEIVED", NULL};
static const char *const use_all[] = {"ALL", NULL};

struct key_case {
	const char *name;
	const char *const *useheader; /* NULL-terminated; NULL = default */
	const char *skipheader;
	int nodomain, noskipsize, parser;
	const char *in;
	size_t len; /* 0: strlen(in) */
	uint32_t size;
	int want_ret;
	const char *want; /* "" when want_ret is 0 */
};

static const struct key_case key_cases[] = {
        /* docs section 1 */
        {"doc vector", NULL, NULL, 0, 0, P_FIELDS, DOC_CRLF, 0, 999, 1, DOC_KEY},
        {"doc vector, LF only", NULL, NULL, 0, 0, P_FIELDS, DOC_LF, 0, 999, 1, DOC_KEY},
        {"doc vector, fields in another order", NULL, NULL, 0, 0, P_FIELDS,
         DOC_R2 "\r\n" DOC_MID "\r\n" DOC_R1 "\r\n", 0, 0, 1, DOC_KEY},
        {"doc vector, no final line end", NULL, NULL, 0, 0, P_FIELDS,
         DOC_MID "\r\n" DOC_R1 "\r\n" DOC_R2, 0, 0, 1, DOC_KEY},
        {"doc vector, folded, with a blank line inside", NULL, NULL, 0, 0, P_FIELDS,
         "Message-Id: <abc.123@example.com>\n"
         "Received: from mx.example.com\n (mx.example.com [192.0.2.1])\n"
         "\tby mail.example.org; Tue, 1 Jan 2019 10:00:00 +0000\n   \n"
         "Received: from localhost  by mx.example.com;\n Tue, 1 Jan 2019 09:59:59 +0000 \n",
         0, 0, 1, DOC_KEY},
        {"doc vector, names in other cases", NULL, NULL, 0, 0, P_FIELDS,
         "MESSAGE-ID: <abc.123@example.com>\r\nreceived: from mx.example.com "
         "(mx.example.com [192.0.2.1])\tby mail.example.org; Tue, 1 Jan 2019 10:00:00 "
         "+0000\r\nReCeIvEd: from localhost  by mx.example.com; Tue, 1 Jan 2019 09:59:59 "
         "+0000 \r\n",
         0, 0, 1, DOC_KEY},
        {"doc vector, value case does not matter either", NULL, NULL, 0, 0, P_FIELDS,
         "Message-Id: <ABC.123@EXAMPLE.COM>\r\n" DOC_R1 "\r\n" DOC_R2 "\r\n", 0, 0, 1, DOC_KEY},
        {"doc vector, whole-header parser", NULL, NULL, 0, 0, P_WHOLE,
         "Subject: x\r\n" DOC_CRLF "Message-Id: <after@blank>\r\n", 0, 0, 1, DOC_KEY},
        {"fields the server should not have sent are ignored", NULL, NULL, 0, 0, P_FIELDS,
         "Subject: hello\r\n" DOC_CRLF "X-Foo: bar\r\n", 0, 0, 1, DOC_KEY},

        /* --useheader */
        {"Message-Id only", use_mid, NULL, 0, 0, P_FIELDS, DOC_CRLF, 0, 0, 1,
         "UAOaPx0wWwfqITvXmZ+OIg"},
        {"message-id in lower case", use_mid_lc, NULL, 0, 0, P_FIELDS, DOC_CRLF, 0, 0, 1,
         "UAOaPx0wWwfqITvXmZ+OIg"},
        {"Received only, both lines", use_rcv, NULL, 0, 0, P_FIELDS, DOC_CRLF, 0, 0, 1,
         "juIUvSlaoThyYTSGI9M9UA"},
        {"two Message-Id lines", NULL, NULL, 0, 0, P_FIELDS,
         "Message-Id: <1@a>\r\nMessage-ID: <2@a>\r\n", 0, 0, 1, "QyJKZp9T9MkJxcMG6MOZzw"},
        {"identical Received lines both count", NULL, NULL, 0, 0, P_FIELDS,
         "Received: from a\r\nReceived: from a\r\n", 0, 0, 1, "ccULOsUZwMdyRPB6bniT7Q"},
        {"ALL", use_all, NULL, 0, 0, P_FIELDS,
         "Subject: Hi there\r\nFrom: Ann <ann@example.org>\r\nMessage-Id: "
         "<m1@example.org>\r\n\r\n",
         0, 0, 1, "G4e7wsJL36IihRDJx+xeug"},
        {"ALL, whole parser: a name may hold white space", use_all, NULL, 0, 0, P_WHOLE,
         "Subject: a\r\n x: y\r\n", 0, 0, 1, "ufZMSJxZwVi+kcgwlimzFw"},

        /* value normalisation */
        {"8-bit bytes become X", NULL, NULL, 0, 0, P_FIELDS,
         "Message-Id: <caf\xc3\xa9@example.com>\r\n", 0, 0, 1, "kLI/iYXfCQ+ViJ8akGVVBg"},
        {"TABs, runs and ends", NULL, NULL, 0, 0, P_FIELDS, "Message-Id:\t<a\t\tb@c>\t\r\n", 0, 0,
         1, "u3T2J95R9xANYaElDhpC4Q"},
        {"NUL byte kept", NULL, NULL, 0, 0, P_FIELDS, NUL_HDR, sizeof(NUL_HDR) - 1, 0, 1,
         "rcGqW4/klNTaFcuyIIrVvA"},
        {"empty value: line \"MESSAGE-ID: \"", NULL, NULL, 0, 0, P_FIELDS, "Message-Id:\r\n", 0, 0,
         1, "hCgrtv3Hww5t5L7/X3vFMA"},

        /* --skipheader (/xi) */
        {"skipheader drops a line", NULL, "^RECEIVED:.*localhost", 0, 0, P_FIELDS, DOC_CRLF, 0, 0,
         1, "p9dYZVCSgY/FeA4UodOsaA"},
        {"skipheader is /x: its spaces are ignored", NULL, "RECEIVED: FROM LOCALHOST", 0, 0,
         P_FIELDS, DOC_CRLF, 0, 0, 1, DOC_KEY},
        {"skipheader dropping every line: no key", NULL, ".", 0, 0, P_FIELDS, DOC_CRLF, 0, 0, 0,
         ""},

        /* --messageidnodomain */
        {"messageidnodomain", NULL, NULL, 1, 0, P_FIELDS, DOC_CRLF, 0, 0, 1,
         "r8qwxsPwrrReg/9ttkaj/Q"},
        {"messageidnodomain, value starting with @ kept", NULL, NULL, 1, 0, P_FIELDS,
         "Message-Id: @x.org>\r\n", 0, 0, 1, "OfzASc7mSVP6ipnIId/oLA"},

        /* --noskipsize */
        {"noskipsize", NULL, NULL, 0, 1, P_FIELDS, DOC_CRLF, 0, 1234, 1, DOC_KEY ":1234"},
        {"noskipsize, size 0: length of the lines", NULL, NULL, 0, 1, P_FIELDS, DOC_CRLF, 0, 0, 1,
         DOC_KEY ":217"},

        /* no wanted field */
        {"no wanted field", NULL, NULL, 0, 0, P_FIELDS,
         "Subject: hi\r\nFrom: a@example.org\r\n\r\n", 0, 0, 0, ""},
        {"empty input", NULL, NULL, 0, 0, P_FIELDS, "", 0, 0, 0, ""},
        {"empty input, whole parser", NULL, NULL, 0, 0, P_WHOLE, "", 0, 0, 0, ""},

        /* the two parsers' quirks (Mail::IMAPClient vs decompose_header) */
        {"no space after the colon", NULL, NULL, 0, 0, P_FIELDS, "Message-Id:<m@x>\r\n", 0, 0, 1,
         "HCJetqHxLF3zyv0MRRf5KA"},
        {"no space after the colon, whole: skipped", NULL, NULL, 0, 0, P_WHOLE,
         "Message-Id:<m@x>\r\n", 0, 0, 0, ""},
        {"space before the colon: not a field", NULL, NULL, 0, 0, P_FIELDS,
         "Message-Id : <m@x>\r\n", 0, 0, 0, ""},
        {"continuation without white space is glued", NULL, NULL, 0, 0, P_FIELDS,
         "Received: from a\r\nby b\r\n", 0, 0, 1, "GLEsJpUb344YKbp5UsX/7w"},
        {"continuation without white space, whole: skipped", NULL, NULL, 0, 0, P_WHOLE,
         "Received: from a\r\nby b\r\n", 0, 0, 1, "/sVLD9t2e4CN4tV0pvbcSA"},
        {"continuation holding \": \"", NULL, NULL, 0, 0, P_FIELDS,
         "Received: from a\r\n\tby b: c\r\n", 0, 0, 1, "wC7NVpoHNq1ghsbg6yP8PQ"},
        {"continuation holding \": \", whole: a new field", NULL, NULL, 0, 0, P_WHOLE,
         "Received: from a\r\n\tby b: c\r\n", 0, 0, 1, "/sVLD9t2e4CN4tV0pvbcSA"},
        {"blank line does not end the fields", NULL, NULL, 0, 0, P_FIELDS,
         "Subject: a\r\n\r\nMessage-Id: <m@x>\r\n", 0, 0, 1, "HCJetqHxLF3zyv0MRRf5KA"},
        {"blank line ends the whole header", NULL, NULL, 0, 0, P_WHOLE,
         "Subject: a\r\n\r\nMessage-Id: <m@x>\r\n", 0, 0, 0, ""},
        {"a line starting with ) ends the fields", NULL, NULL, 0, 0, P_FIELDS,
         "Message-Id: <m@x>\r\n)\r\nReceived: from z\r\n", 0, 0, 1, "HCJetqHxLF3zyv0MRRf5KA"},
        {"continuation before any field is ignored", NULL, NULL, 0, 0, P_FIELDS,
         " stray\r\nMessage-Id: <m@x>\r\n", 0, 0, 1, "HCJetqHxLF3zyv0MRRf5KA"},
};

static void test_keys(void **state)
{
	size_t i;

	(void)state;
	for (i = 0; i < N_ELEMENTS(key_cases); i++) {
		const struct key_case *c = &key_cases[i];
		struct sy_hdrkey_settings set = {0};
		struct sy_hdrkey_opts *opts = NULL;
		const char *error = NULL;
		char key[SY_HDRKEY_MAX];
		size_t len = c->len != 0 ? c->len : strlen(c->in);
		int ret;

		if (c->useheader != NULL) {
			set.useheader = c->useheader;
			while (c->useheader[set.useheader_count] != NULL)
				set.useheader_count++;
		}
		set.skipheader = c->skipheader;
		set.messageidnodomain = c->nodomain;
		set.noskipsize = c->noskipsize;
		if (sy_hdrkey_opts_init(&opts, &set, &error) < 0)
			fail_msg("%s: opts: %s", c->name, error);
		if (c->parser == P_WHOLE)
			ret = sy_hdrkey_compute_whole(opts, c->in, len, c->size, key, &error);
		else
			ret = sy_hdrkey_compute(opts, c->in, len, c->size, key, &error);
		sy_hdrkey_opts_free(&opts);
		assert_null(opts);
		if (ret != c->want_ret || strcmp(key, c->want) != 0)
			fail_msg("%s: got %d \"%s\", want %d \"%s\"", c->name, ret, key,
			         c->want_ret, c->want);
	}
}

/* The --addheader key and line; the copy carrying the line must hash to the
 * same key on the next run (with the default --useheader). */
static void test_addheader(void **state)
{
	static const struct {
		uint32_t uid, size;
		int noskipsize;
		const char *key, *line;
	} cases[] = {
	        /* docs section 1 */
	        {5, 0, 0, "sB5KcImVpztSAUH2pEHa/w", "Message-Id: <5@imapsync>\r\n"},
	        /* md5_base64("MESSAGE-ID: <4294967295@IMAPSYNC>") */
	        {4294967295u, 0, 0, "exujZlp0Fp2/p8FpzmZfwQ",
	         "Message-Id: <4294967295@imapsync>\r\n"},
	        {5, 777, 1, "sB5KcImVpztSAUH2pEHa/w:777", "Message-Id: <5@imapsync>\r\n"},
	        /* size 0: length of "MESSAGE-ID: <5@IMAPSYNC>" */
	        {5, 0, 1, "sB5KcImVpztSAUH2pEHa/w:24", "Message-Id: <5@imapsync>\r\n"},
	};
	size_t i;

	(void)state;
	for (i = 0; i < N_ELEMENTS(cases); i++) {
		struct sy_hdrkey_settings set = {0};
		struct sy_hdrkey_opts *opts = NULL;
		const char *error = NULL;
		char key[SY_HDRKEY_MAX], line[SY_HDRKEY_LINE_MAX];

		set.noskipsize = cases[i].noskipsize;
		assert_int_equal(sy_hdrkey_opts_init(&opts, &set, &error), 0);
		assert_int_equal(
		        sy_hdrkey_addheader(opts, cases[i].uid, cases[i].size, key, line, &error),
		        0);
		if (strcmp(key, cases[i].key) != 0 || strcmp(line, cases[i].line) != 0)
			fail_msg("uid %u: got \"%s\" \"%s\", want \"%s\" \"%s\"", cases[i].uid, key,
			         line, cases[i].key, cases[i].line);
		sy_hdrkey_opts_free(&opts);
	}

	/* opts NULL = defaults */
	{
		char key[SY_HDRKEY_MAX], line[SY_HDRKEY_LINE_MAX], key2[SY_HDRKEY_MAX];
		struct sy_hdrkey_opts *opts = NULL;
		const char *error = NULL;

		assert_int_equal(sy_hdrkey_addheader(NULL, 5, 100, key, line, &error), 0);
		assert_string_equal(key, "sB5KcImVpztSAUH2pEHa/w");
		assert_int_equal(sy_hdrkey_opts_init(&opts, NULL, &error), 0);
		assert_int_equal(sy_hdrkey_compute(opts, line, strlen(line), 100, key2, &error), 1);
		assert_string_equal(key2, key);
		sy_hdrkey_opts_free(&opts);
	}
}

/* imapferry's content key. Expected values from the Python definition in
 * hdrkey.h: "C:" + b64(md5(b"imapferry-content-v1\n" + b"%d\n" % size +
 * b"".join(sorted(normalised upper-cased lines + b"\n")))). */
static void test_content(void **state)
{
	static const struct {
		const char *name, *in;
		uint32_t size;
		const char *want;
	} cases[] = {
	        {"basic",
	         "Subject: Hello  world\r\nFrom: Ann <ann@example.org>\r\nDate: Tue, 1 Jan "
	         "2019 10:00:00 +0000\r\n\r\n",
	         300, "C:MXUL+CdQ4S/zsV/w6EnkrA"},
	        {"LF, reordered, folded, other case",
	         "date: Tue, 1 Jan 2019\n 10:00:00 +0000\nFROM: "
	         "ann <ANN@example.org>\nSubject:   Hello "
	         "world\n",
	         300, "C:MXUL+CdQ4S/zsV/w6EnkrA"},
	        {"body after the blank line ignored",
	         "Subject: Hello  world\r\nFrom: Ann <ann@example.org>\r\nDate: Tue, 1 Jan "
	         "2019 10:00:00 +0000\r\n\r\nX-Not: header\r\n",
	         300, "C:MXUL+CdQ4S/zsV/w6EnkrA"},
	        {"size counts",
	         "Subject: Hello  world\r\nFrom: Ann <ann@example.org>\r\nDate: Tue, 1 "
	         "Jan 2019 10:00:00 +0000\r\n\r\n",
	         301, "C:Z8LiWzFG7ChkAq16mKcyCQ"},
	        {"empty header", "\r\n", 0, "C:c185gvG38kAUFIt71bh3VA"},
	        {"empty input", "", 0, "C:c185gvG38kAUFIt71bh3VA"},
	        {"lines without names", "just some text\r\nand more\r\n", 42,
	         "C:HXRowlbDVXJM2k0NlKi8cw"},
	};
	size_t i;

	(void)state;
	for (i = 0; i < N_ELEMENTS(cases); i++) {
		char key[SY_HDRKEY_MAX];
		const char *error = NULL;

		assert_int_equal(sy_hdrkey_content(cases[i].in, strlen(cases[i].in), cases[i].size,
		                                   key, &error),
		                 0);
		if (strcmp(key, cases[i].want) != 0)
			fail_msg("%s: got \"%s\", want \"%s\"", cases[i].name, key, cases[i].want);
		assert_int_equal(strncmp(key, SY_HDRKEY_CONTENT_PREFIX, 2), 0);
	}
}

static void test_dup_key(void **state)
{
	char out[SY_HDRKEY_MAX], longkey[SY_HDRKEY_MAX];

	(void)state;
	assert_int_equal(sy_hdrkey_dup_key(DOC_KEY, 0, out), 0);
	assert_string_equal(out, DOC_KEY);
	assert_int_equal(sy_hdrkey_dup_key(DOC_KEY, 1, out), 0);
	assert_string_equal(out, DOC_KEY "#1");
	assert_int_equal(sy_hdrkey_dup_key(DOC_KEY, 12, out), 0);
	assert_string_equal(out, DOC_KEY "#12");
	assert_int_equal(sy_hdrkey_dup_key(DOC_KEY ":4294967295", 4294967295u, out), 0);
	assert_string_equal(out, DOC_KEY ":4294967295#4294967295");
	assert_int_equal(sy_hdrkey_dup_key("C:c185gvG38kAUFIt71bh3VA", 2, out), 0);
	assert_string_equal(out, "C:c185gvG38kAUFIt71bh3VA#2");
	memset(longkey, 'k', sizeof(longkey) - 1);
	longkey[sizeof(longkey) - 2] = '\0'; /* 46 + "#1" + NUL > 48 */
	assert_int_equal(sy_hdrkey_dup_key(longkey, 1, out), -1);
	assert_string_equal(out, "");
}

static void test_fetch_item(void **state)
{
	static const char *const gmail[] = {"X-Gmail-Received", "Message-Id"};
	static const char *const odd[] = {"X-A%B", "X-Q\"T", "X-]"};
	static const char *const mixed_all[] = {"Message-Id", "all"};
	static const struct {
		const char *name;
		const char *const *use;
		size_t count;
		const char *want;
	} cases[] = {
	        {"default", NULL, 0, "BODY.PEEK[HEADER.FIELDS (MESSAGE-ID RECEIVED)]"},
	        {"gmail preset", gmail, 2,
	         "BODY.PEEK[HEADER.FIELDS (X-GMAIL-RECEIVED MESSAGE-ID)]"},
	        {"ALL", use_all, 1, "BODY.PEEK[HEADER]"},
	        {"all among others", mixed_all, 2, "BODY.PEEK[HEADER]"},
	        {"non-atom names quoted", odd, 3,
	         "BODY.PEEK[HEADER.FIELDS (\"X-A%B\" \"X-Q\\\"T\" \"X-]\")]"},
	};
	size_t i;

	(void)state;
	for (i = 0; i < N_ELEMENTS(cases); i++) {
		struct sy_hdrkey_settings set = {0};
		struct sy_hdrkey_opts *opts = NULL;
		const char *error = NULL;
		char buf[128];

		set.useheader = cases[i].use;
		set.useheader_count = cases[i].count;
		assert_int_equal(sy_hdrkey_opts_init(&opts, &set, &error), 0);
		assert_int_equal(sy_hdrkey_fetch_item(opts, buf, sizeof(buf)), 0);
		if (strcmp(buf, cases[i].want) != 0)
			fail_msg("%s: got \"%s\", want \"%s\"", cases[i].name, buf, cases[i].want);
		/* exactly the right size fits, one byte less does not */
		assert_int_equal(sy_hdrkey_fetch_item(opts, buf, strlen(cases[i].want) + 1), 0);
		assert_int_equal(sy_hdrkey_fetch_item(opts, buf, strlen(cases[i].want)), -1);
		assert_string_equal(buf, "");
		sy_hdrkey_opts_free(&opts);
	}
}

static void test_is_header_item(void **state)
{
	static const struct {
		const char *in;
		int want;
	} cases[] = {
	        {"BODY[HEADER.FIELDS (MESSAGE-ID RECEIVED)]", 1},
	        {"BODY[HEADER.FIELDS (Message-Id Received)]", 1},
	        {"body[header.fields (\"MESSAGE-ID\" \"RECEIVED\")]", 1},
	        {"BODY[HEADER.FIELDS (RECEIVED MESSAGE-ID)]", 1},
	        {"BODY[HEADER.FIELDS(MESSAGE-ID)]", 1},
	        {"BODY[HEADER]", 1},
	        {"body[header]", 1},
	        {"BODY[HEADER.FIELDS.NOT (MESSAGE-ID)]", 0},
	        {"BODY[HEADER]<0>", 0},
	        {"BODY[HEADER.FIELDS (MESSAGE-ID)]<0>", 0},
	        {"BODY[]", 0},
	        {"BODY[TEXT]", 0},
	        {"BODY[1.HEADER]", 0},
	        {"RFC822.HEADER", 0},
	        {"BODY[HEADER.FIELDS]", 0},
	        {"", 0},
	};
	size_t i;

	(void)state;
	for (i = 0; i < N_ELEMENTS(cases); i++) {
		if (sy_hdrkey_is_header_item(cases[i].in) != cases[i].want)
			fail_msg("\"%s\": got %d, want %d", cases[i].in, !cases[i].want,
			         cases[i].want);
	}
}

static void test_opts(void **state)
{
	static const char *const bad_space[] = {"Message Id"};
	static const char *const bad_colon[] = {"Message-Id:"};
	static const char *const bad_empty[] = {""};
	static const char *const gmail[] = {"X-Gmail-Received", "Message-Id"};
	struct sy_hdrkey_settings set = {0};
	struct sy_hdrkey_opts *opts = NULL;
	const char *error = NULL;

	(void)state;
	set.useheader = bad_space;
	set.useheader_count = 1;
	assert_int_equal(sy_hdrkey_opts_init(&opts, &set, &error), -1);
	assert_null(opts);
	assert_string_equal(error, "--useheader \"Message Id\": not a header field name");
	set.useheader = bad_colon;
	assert_int_equal(sy_hdrkey_opts_init(&opts, &set, &error), -1);
	set.useheader = bad_empty;
	assert_int_equal(sy_hdrkey_opts_init(&opts, &set, &error), -1);

	set.useheader = NULL;
	set.useheader_count = 0;
	set.skipheader = "(";
	assert_int_equal(sy_hdrkey_opts_init(&opts, &set, &error), -1);
	assert_null(opts);
	assert_string_equal(error, "--skipheader \"(\": missing closing parenthesis at offset 1");

	/* "" is no --skipheader, as in imapsync */
	set.skipheader = "";
	assert_int_equal(sy_hdrkey_opts_init(&opts, &set, &error), 0);
	assert_true(sy_hdrkey_uses_field(opts, "message-id"));
	assert_true(sy_hdrkey_uses_field(opts, "RECEIVED"));
	assert_false(sy_hdrkey_uses_field(opts, "Subject"));
	sy_hdrkey_opts_free(&opts);
	sy_hdrkey_opts_free(&opts); /* NULL is fine */

	/* --gmail1's list: Received is not used at all */
	set.useheader = gmail;
	set.useheader_count = 2;
	assert_int_equal(sy_hdrkey_opts_init(&opts, &set, &error), 0);
	assert_false(sy_hdrkey_uses_field(opts, "Received"));
	assert_true(sy_hdrkey_uses_field(opts, "x-gmail-received"));
	sy_hdrkey_opts_free(&opts);

	set.useheader = use_all;
	set.useheader_count = 1;
	assert_int_equal(sy_hdrkey_opts_init(&opts, &set, &error), 0);
	assert_true(sy_hdrkey_uses_field(opts, "Subject"));
	sy_hdrkey_opts_free(&opts);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_keys),       cmocka_unit_test(test_addheader),
	        cmocka_unit_test(test_content),    cmocka_unit_test(test_dup_key),
	        cmocka_unit_test(test_fetch_item), cmocka_unit_test(test_is_header_item),
	        cmocka_unit_test(test_opts),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
