/* Unit tests for prom.c: the Prometheus text format of a plain metric, a
 * labelled one and a histogram (cumulative buckets, +Inf, sum, count, the
 * bucket a value on a bound falls in, negative values). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "imapferry/prom.h"

static char *text_of(struct evbuffer *b)
{
	size_t len = evbuffer_get_length(b);
	char *s = malloc(len + 1);

	assert_non_null(s);
	evbuffer_remove(b, s, len);
	s[len] = '\0';
	return s;
}

static void test_metric(void **state)
{
	struct evbuffer *b = evbuffer_new();
	char *s;

	(void)state;
	prom_metric(b, "x_total", "counter", "Things.", 42);
	s = text_of(b);
	assert_string_equal(s, "# HELP x_total Things.\n# TYPE x_total counter\nx_total 42\n");
	free(s);
	evbuffer_free(b);
}

static void test_labeled(void **state)
{
	static const char *const names[] = {"auth1", "fetch"};
	static const unsigned long long values[] = {3, 0};
	struct evbuffer *b = evbuffer_new();
	char *s;

	(void)state;
	prom_labeled(b, "e_total", "counter", "Errors.", "class", names, values, 2);
	s = text_of(b);
	assert_string_equal(s, "# HELP e_total Errors.\n# TYPE e_total counter\n"
	                       "e_total{class=\"auth1\"} 3\ne_total{class=\"fetch\"} 0\n");
	free(s);
	evbuffer_free(b);
}

static void test_hist(void **state)
{
	static const double le[] = {0.1, 0.5, 1};
	unsigned long long counts[4] = {0};
	struct prom_hist h = {le, 3, counts, 0, 0};
	struct evbuffer *b = evbuffer_new();
	char *s;

	(void)state;
	prom_hist_observe(&h, 0.05);
	prom_hist_observe(&h, 0.5); /* on a bound: that bucket (le is <=) */
	prom_hist_observe(&h, 0.7);
	prom_hist_observe(&h, 30);
	prom_hist_observe(&h, -2); /* a clock step: counted as 0 */
	assert_int_equal(counts[0], 2);
	assert_int_equal(counts[1], 1);
	assert_int_equal(counts[2], 1);
	assert_int_equal(counts[3], 1);
	prom_hist_write(b, "lag_seconds", "Lag.", &h);
	s = text_of(b);
	assert_string_equal(s, "# HELP lag_seconds Lag.\n# TYPE lag_seconds histogram\n"
	                       "lag_seconds_bucket{le=\"0.1\"} 2\n"
	                       "lag_seconds_bucket{le=\"0.5\"} 3\n"
	                       "lag_seconds_bucket{le=\"1\"} 4\n"
	                       "lag_seconds_bucket{le=\"+Inf\"} 5\n"
	                       "lag_seconds_sum 31.250\nlag_seconds_count 5\n");
	free(s);
	evbuffer_free(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_metric),
	        cmocka_unit_test(test_labeled),
	        cmocka_unit_test(test_hist),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
