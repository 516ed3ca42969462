/* Unit tests for log.c: sanitising untrusted text and debug categories. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "imapferry/log.h"

static void test_sanitize(void **state)
{
	static const struct {
		const char *name, *in;
		size_t len, max;
		const char *want;
	} cases[] = {
	        {"plain", "hello", 5, 100, "hello"},
	        {"crlf", "a\r\nb", 4, 100, "a\\x0d\\x0ab"},
	        {"8bit", "\xc3\xa9", 2, 100, "\\xc3\\xa9"},
	        {"backslash", "a\\b", 3, 100, "a\\x5cb"},
	        {"truncated", "abcdefgh", 8, 3, "abc..."},
	        {"nul", "a\0b", 3, 100, "a\\x00b"},
	};
	char out[64];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		log_sanitize(out, sizeof(out), cases[i].in, cases[i].len, cases[i].max);
		if (strcmp(out, cases[i].want) != 0)
			fail_msg("%s: got \"%s\", want \"%s\"", cases[i].name, out, cases[i].want);
	}
	/* A tiny output buffer is never overrun. */
	log_sanitize(out, 4, "abcdef", 6, 100);
	assert_string_equal(out, "abc");
}

static void test_debug_spec(void **state)
{
	const char *error = NULL;

	(void)state;
	assert_int_equal(log_set_debug("net, imap", &error), 0);
	assert_true(log_debug_enabled(LOG_CAT_NET));
	assert_true(log_debug_enabled(LOG_CAT_IMAP));
	assert_false(log_debug_enabled(LOG_CAT_REDIS));
	assert_int_equal(log_set_debug("net,bogus", &error), -1);
	assert_non_null(error);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_sanitize),
	        cmocka_unit_test(test_debug_spec),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
