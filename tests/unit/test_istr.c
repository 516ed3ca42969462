/* Unit tests for istr.c: the form chosen for each kind of string and the
 * exact bytes written, for plain strings and mailbox names. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "imapferry/istr.h"
#include "imapferry/log.h"

#define N_ELEMENTS(a) (sizeof(a) / sizeof((a)[0]))

#define A  ISTR_ATOM
#define Q  ISTR_QUOTED
#define L  ISTR_LITERAL
#define LP ISTR_LITERAL_PLUS
#define XX ISTR_INVALID

#define F_AS  ISTR_F_ASTRING
#define F_STR ISTR_F_STRING
#define F_U8  ISTR_F_UTF8
#define F_LP  ISTR_F_LITERALPLUS
#define F_LM  ISTR_F_LITERALMINUS

struct istr_case {
	const char *name, *in;
	size_t len; /* 0: strlen(in) */
	unsigned flags;
	enum istr_kind want_kind;
	const char *want; /* bytes written; NULL for XX */
};

typedef int append_fn(struct evbuffer *out, const char *s, size_t len, unsigned flags);

/* Appends the case after a prefix already in the buffer and checks the kind,
 * the exact bytes and istr_encoded_len(). The input is a heap copy without a
 * NUL so that ASan catches reads past len. */
static void check_case(const struct istr_case *c, append_fn *append, int check_classify)
{
	static const char prefix[] = "a001 CMD ";
	size_t len = c->len != 0 ? c->len : strlen(c->in);
	size_t want_len = c->want != NULL ? strlen(c->want) : 0, got_len;
	struct evbuffer *out = evbuffer_new();
	char *copy = malloc(len > 0 ? len : 1), *got, s1[512], s2[512];
	int ret;

	assert_non_null(out);
	assert_non_null(copy);
	memcpy(copy, c->in, len);
	assert_int_equal(evbuffer_add(out, prefix, sizeof(prefix) - 1), 0);

	if (check_classify) {
		enum istr_kind kind = istr_classify(copy, len, c->flags);

		if (kind != c->want_kind)
			fail_msg("%s: classified %s, want %s", c->name, istr_kind_name(kind),
			         istr_kind_name(c->want_kind));
		assert_int_equal(istr_encoded_len(copy, len, c->flags), want_len);
	}
	ret = append(out, copy, len, c->flags);
	if (c->want_kind == XX) {
		if (ret != -1)
			fail_msg("%s: returned %d, want -1", c->name, ret);
		assert_int_equal(evbuffer_get_length(out), sizeof(prefix) - 1);
		goto done;
	}
	if (ret != (int)c->want_kind)
		fail_msg("%s: returned %d (%s), want %s", c->name, ret,
		         istr_kind_name((enum istr_kind)ret), istr_kind_name(c->want_kind));
	got_len = evbuffer_get_length(out);
	got = (char *)evbuffer_pullup(out, -1);
	if (got_len != sizeof(prefix) - 1 + want_len ||
	    memcmp(got, prefix, sizeof(prefix) - 1) != 0 ||
	    memcmp(got + sizeof(prefix) - 1, c->want, want_len) != 0)
		fail_msg("%s: wrote \"%s\", want \"%s\"", c->name,
		         log_sanitize(s1, sizeof(s1), got, got_len, 200),
		         log_sanitize(s2, sizeof(s2), c->want, want_len, 200));
done:
	free(copy);
	evbuffer_free(out);
}

static void test_append(void **state)
{
	static const struct istr_case cases[] = {
	        /* atoms */
	        {"atom", "foo", 0, 0, A, "foo"},
	        {"atom all allowed specials", "a.b-c_d+e/f!#$&'<=>?@^`|~[:;,", 0, 0, A,
	         "a.b-c_d+e/f!#$&'<=>?@^`|~[:;,"},
	        {"digits", "12345", 0, 0, A, "12345"},
	        {"bracket in atom context", "a]b", 0, 0, Q, "\"a]b\""},
	        {"bracket in astring context", "a]b", 0, F_AS, A, "a]b"},
	        {"BODY[] astring", "BODY[]", 0, F_AS, A, "BODY[]"},
	        {"string context never bare", "foo", 0, F_STR, Q, "\"foo\""},
	        {"string context with astring flag", "a]b", 0, F_STR | F_AS, Q, "\"a]b\""},
	        {"utf8 flag does not make 8-bit atoms", "\xc3\xa4", 0, F_U8 | F_AS, Q,
	         "\"\xc3\xa4\""},
	        /* quoted */
	        {"space", "Sent Items", 0, 0, Q, "\"Sent Items\""},
	        {"open paren", "(x", 0, 0, Q, "\"(x\""},
	        {"close paren", "x)", 0, F_AS, Q, "\"x)\""},
	        {"brace", "{5}", 0, F_AS, Q, "\"{5}\""},
	        {"percent", "foo%", 0, F_AS, Q, "\"foo%\""},
	        {"star", "*", 0, F_AS, Q, "\"*\""},
	        {"dquote", "\"", 0, 0, Q, "\"\\\"\""},
	        {"backslash", "\\", 0, 0, Q, "\"\\\\\""},
	        {"mixed escapes", "a\"b\\c d", 0, 0, Q, "\"a\\\"b\\\\c d\""},
	        {"tab is quotable", "a\tb", 0, 0, Q, "\"a\tb\""},
	        {"ctl is quotable", "\x01", 0, 0, Q, "\"\x01\""},
	        {"del is quotable", "x\x7f", 0, 0, Q, "\"x\x7f\""},
	        {"empty", "", 0, 0, Q, "\"\""},
	        {"empty astring", "", 0, F_AS, Q, "\"\""},
	        {"empty string", "", 0, F_STR, Q, "\"\""},
	        /* NIL */
	        {"NIL", "NIL", 0, 0, Q, "\"NIL\""},
	        {"nil", "nil", 0, F_AS, Q, "\"nil\""},
	        {"Nil", "Nil", 0, F_AS, Q, "\"Nil\""},
	        {"NIL with literal+", "NIL", 0, F_AS | F_LP, Q, "\"NIL\""},
	        {"NILS", "NILS", 0, F_AS, A, "NILS"},
	        {"NI", "NI", 0, F_AS, A, "NI"},
	        {"XNIL", "XNIL", 0, F_AS, A, "XNIL"},
	        /* literals */
	        {"crlf", "a\r\nb", 0, 0, L, "{4}\r\na\r\nb"},
	        {"cr", "\r", 0, F_AS, L, "{1}\r\n\r"},
	        {"lf", "x\n", 0, F_AS, L, "{2}\r\nx\n"},
	        {"literal not escaped", "\"\\\n", 0, 0, L, "{3}\r\n\"\\\n"},
	        {"8-bit",
	         "B\xc3\xbc"
	         "cher",
	         0, F_AS, L,
	         "{7}\r\nB\xc3\xbc"
	         "cher"},
	        {"latin-1", "\xe4", 0, 0, L, "{1}\r\n\xe4"},
	        {"literal+", "a\r\nb", 0, F_LP, LP, "{4+}\r\na\r\nb"},
	        {"literal- small", "a\r\nb", 0, F_LM, LP, "{4+}\r\na\r\nb"},
	        {"literal+ 8-bit", "\xe4", 0, F_AS | F_LP, LP, "{1+}\r\n\xe4"},
	        /* UTF8=ACCEPT */
	        {"utf8 quoted",
	         "B\xc3\xbc"
	         "cher",
	         0, F_U8, Q,
	         "\"B\xc3\xbc"
	         "cher\""},
	        {"utf8 emoji", "\xf0\x9f\x98\x80", 0, F_U8, Q, "\"\xf0\x9f\x98\x80\""},
	        {"utf8 escapes", "\xc3\xa4\"\\", 0, F_U8, Q, "\"\xc3\xa4\\\"\\\\\""},
	        {"utf8 with cr", "\xc3\xa4\r", 0, F_U8, L, "{3}\r\n\xc3\xa4\r"},
	        {"utf8 invalid byte", "\xff", 0, F_U8, L, "{1}\r\n\xff"},
	        {"utf8 lone continuation", "a\x80", 0, F_U8, L, "{2}\r\na\x80"},
	        {"utf8 overlong", "\xc0\xaf", 0, F_U8, L, "{2}\r\n\xc0\xaf"},
	        {"utf8 overlong 3", "\xe0\x80\xaf", 0, F_U8, L, "{3}\r\n\xe0\x80\xaf"},
	        {"utf8 surrogate", "\xed\xa0\x80", 0, F_U8, L, "{3}\r\n\xed\xa0\x80"},
	        {"utf8 above max", "\xf4\x90\x80\x80", 0, F_U8, L, "{4}\r\n\xf4\x90\x80\x80"},
	        {"utf8 truncated", "a\xc3", 0, F_U8, L, "{2}\r\na\xc3"},
	        {"utf8 truncated 4", "\xf0\x9f\x98", 0, F_U8, L, "{3}\r\n\xf0\x9f\x98"},
	        {"utf8 truncated by ascii", "\xe2\x82x", 0, F_U8 | F_LP, LP, "{3+}\r\n\xe2\x82x"},
	        /* NUL cannot be written in any form */
	        {"nul", "a\0b", 3, 0, XX, NULL},
	        {"nul alone", "\0", 1, F_AS | F_LP, XX, NULL},
	        {"nul after crlf", "\r\n\0", 3, F_LP, XX, NULL},
	        {"nul in utf8", "\xc3\xa4\0", 3, F_U8, XX, NULL},
	};
	size_t i;

	(void)state;
	for (i = 0; i < N_ELEMENTS(cases); i++)
		check_case(&cases[i], istr_append, 1);
}

static void test_append_mailbox(void **state)
{
	static const struct istr_case cases[] = {
	        {"INBOX", "INBOX", 0, 0, A, "INBOX"},
	        {"inbox", "inbox", 0, 0, A, "INBOX"},
	        {"InBoX", "InBoX", 0, F_U8 | F_LP, A, "INBOX"},
	        {"inbox, string flag ignored", "inbox", 0, F_STR, A, "INBOX"},
	        {"INBOX child", "INBOX.Sent", 0, 0, A, "INBOX.Sent"},
	        {"inbox child keeps case", "inbox/Sent", 0, 0, A, "inbox/Sent"},
	        {"INBOXX", "inboxx", 0, 0, A, "inboxx"},
	        {"INBO", "inbo", 0, 0, A, "inbo"},
	        {"inbox with space", "inbox ", 0, 0, Q, "\"inbox \""},
	        {"astring bracket", "a]b", 0, 0, A, "a]b"},
	        {"string flag cleared", "Archive", 0, F_STR, A, "Archive"},
	        {"mutf7 name", "B&APw-cher", 0, 0, A, "B&APw-cher"},
	        {"space", "Sent Items", 0, 0, Q, "\"Sent Items\""},
	        {"wildcard", "foo*", 0, 0, Q, "\"foo*\""},
	        {"empty", "", 0, 0, Q, "\"\""},
	        {"NIL", "NIL", 0, 0, Q, "\"NIL\""},
	        {"nil", "nil", 0, 0, Q, "\"nil\""},
	        {"utf8 name",
	         "B\xc3\xbc"
	         "cher",
	         0, F_U8, Q,
	         "\"B\xc3\xbc"
	         "cher\""},
	        {"8-bit without utf8",
	         "B\xc3\xbc"
	         "cher",
	         0, 0, L,
	         "{7}\r\nB\xc3\xbc"
	         "cher"},
	        {"8-bit with literal+",
	         "B\xc3\xbc"
	         "cher",
	         0, F_LP, LP,
	         "{7+}\r\nB\xc3\xbc"
	         "cher"},
	        {"inbox with nul", "inbox\0", 6, 0, XX, NULL},
	};
	size_t i;

	(void)state;
	for (i = 0; i < N_ELEMENTS(cases); i++)
		check_case(&cases[i], istr_append_mailbox, 0);
}

/* RFC 7888 section 4: LITERAL- allows {N+} only up to 4096 bytes. */
static void test_literal_minus_limit(void **state)
{
	static const struct {
		size_t len;
		unsigned flags;
		enum istr_kind want;
		const char *header;
	} cases[] = {
	        {4096, F_LM, LP, "{4096+}\r\n"},        {4097, F_LM, L, "{4097}\r\n"},
	        {4097, F_LM | F_LP, LP, "{4097+}\r\n"}, {100000, F_LP, LP, "{100000+}\r\n"},
	        {100000, 0, L, "{100000}\r\n"},
	};
	size_t i;

	(void)state;
	for (i = 0; i < N_ELEMENTS(cases); i++) {
		size_t len = cases[i].len, hlen = strlen(cases[i].header);
		char *s = malloc(len);
		struct evbuffer *out = evbuffer_new();
		unsigned char *got;

		assert_non_null(s);
		assert_non_null(out);
		memset(s, 'x', len);
		s[len / 2] = '\n';
		assert_int_equal(istr_classify(s, len, cases[i].flags), cases[i].want);
		assert_int_equal(istr_encoded_len(s, len, cases[i].flags), hlen + len);
		assert_int_equal(istr_append(out, s, len, cases[i].flags), cases[i].want);
		assert_int_equal(evbuffer_get_length(out), hlen + len);
		got = evbuffer_pullup(out, -1);
		assert_memory_equal(got, cases[i].header, hlen);
		/* The documented split point: the payload is the last len bytes. */
		assert_memory_equal(got + evbuffer_get_length(out) - len, s, len);
		evbuffer_free(out);
		free(s);
	}
}

/* A failed append leaves the buffer as it was. */
static void test_append_failure(void **state)
{
	struct evbuffer *out = evbuffer_new();

	(void)state;
	assert_non_null(out);
	assert_int_equal(evbuffer_add(out, "a1 ", 3), 0);
	assert_int_equal(evbuffer_freeze(out, 0), 0);
	assert_int_equal(istr_append(out, "foo", 3, 0), -1);
	assert_int_equal(istr_append(out, "a b", 3, 0), -1);
	assert_int_equal(istr_append(out, "a\r\n", 3, 0), -1);
	assert_int_equal(istr_append_mailbox(out, "inbox", 5, 0), -1);
	assert_int_equal(istr_append_mailbox(out, "Sent", 4, 0), -1);
	assert_int_equal(evbuffer_get_length(out), 3);
	assert_int_equal(evbuffer_unfreeze(out, 0), 0);
	assert_int_equal(istr_append(out, "foo", 3, 0), ISTR_ATOM);
	assert_int_equal(evbuffer_get_length(out), 6);
	evbuffer_free(out);
}

static void test_kind_names(void **state)
{
	(void)state;
	assert_string_equal(istr_kind_name(ISTR_ATOM), "atom");
	assert_string_equal(istr_kind_name(ISTR_QUOTED), "quoted");
	assert_string_equal(istr_kind_name(ISTR_LITERAL), "literal");
	assert_string_equal(istr_kind_name(ISTR_LITERAL_PLUS), "literal+");
	assert_string_equal(istr_kind_name(ISTR_INVALID), "invalid");
	assert_string_equal(istr_kind_name(ISTR_KIND_COUNT), "?");
	assert_string_equal(istr_kind_name((enum istr_kind) - 1), "?");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_append),
	        cmocka_unit_test(test_append_mailbox),
	        cmocka_unit_test(test_literal_minus_limit),
	        cmocka_unit_test(test_append_failure),
	        cmocka_unit_test(test_kind_names),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
