/* Unit tests for sy_ssl_version_parse() (options.c): IO::Socket::SSL's
 * SSL_version strings of --sslN_ssl_version as OpenSSL min/max versions. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <openssl/ssl.h>

#include "options.h"

struct vcase {
	const char *spec;
	int rc, min, max;
};

static void test_versions(void **state)
{
	static const struct vcase cases[] = {
	        {"TLSv1_2", 0, TLS1_2_VERSION, TLS1_2_VERSION},
	        {"tlsv12", 0, TLS1_2_VERSION, TLS1_2_VERSION},
	        {"TLSv1_3", 0, TLS1_3_VERSION, 0},
	        {"TLSv1_1", 0, TLS1_1_VERSION, TLS1_1_VERSION},
	        {"TLSv1_2:TLSv1_3", 0, TLS1_2_VERSION, 0},
	        {"TLSv1:TLSv1_1:TLSv1_2", 0, TLS1_VERSION, TLS1_2_VERSION},
	        {"SSLv23", 0, 0, 0},
	        {"SSLv23:!SSLv2:!SSLv3", 0, 0, 0},
	        {"SSLv23:!TLSv1_3", 0, 0, TLS1_2_VERSION},
	        {"!TLSv1_3", 0, 0, TLS1_2_VERSION},
	        {"!TLSv1_2", 0, TLS1_3_VERSION, 0},
	        {"SSLv23:!TLSv1_2:!TLSv1_3", 0, SSL3_VERSION, TLS1_1_VERSION},
	        {"", 0, 0, 0},
	        {"SSLv2", -1, 0, 0},
	        {"TLSv1_2:!TLSv1_2", -1, 0, 0},
	        {"TLSv9", -1, 0, 0},
	        {"TLSv1_2;TLSv1_3", -1, 0, 0},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int min = -7, max = -7;
		int rc = sy_ssl_version_parse(cases[i].spec, &min, &max);

		print_message("%s\n", cases[i].spec);
		assert_int_equal(rc, cases[i].rc);
		if (rc == 0) {
			assert_int_equal(min, cases[i].min);
			assert_int_equal(max, cases[i].max);
		}
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_versions),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
