/* Unit tests for zlayer.c: raw DEFLATE with sync flushes (RFC 4978), fed
 * and read in arbitrary pieces, bounded output, corrupt and ended streams. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "imapferry/zlayer.h"

static struct zlayer *new_dir(enum zlayer_dir dir)
{
	const char *error = NULL;
	struct zlayer *z = zlayer_new(dir, -1, &error);

	assert_non_null(z);
	return z;
}

/* Deterministic text that compresses, with some noise. */
static char *make_text(size_t len)
{
	char *p = malloc(len);
	uint32_t x = 12345;

	assert_non_null(p);
	for (size_t i = 0; i < len; i++) {
		x = x * 1103515245u + 12345u;
		p[i] = (i % 61 == 60) ? '\n' : (char)('a' + ((x >> 16) % 7));
	}
	return p;
}

/* A sync flush ends with the empty stored block 00 00 ff ff (RFC 1951
 * 3.2.4), which is what lets the peer decode a whole command at once. */
static void test_sync_flush_marker(void **state)
{
	struct zlayer *z = new_dir(ZLAYER_DEFLATE);
	struct evbuffer *out = evbuffer_new();
	unsigned char tail[4];
	size_t n;

	(void)state;
	assert_int_equal(zlayer_deflate(z, "a001 NOOP\r\n", 11, 1, out), 0);
	n = evbuffer_get_length(out);
	assert_true(n >= 4);
	memcpy(tail, evbuffer_pullup(out, -1) + n - 4, 4);
	assert_memory_equal(tail, "\x00\x00\xff\xff", 4);
	evbuffer_free(out);
	zlayer_free(&z);
	assert_null(z);
}

/* Each flushed write decodes completely before the next is written, even
 * when the compressed bytes arrive one at a time. */
static void test_roundtrip_bytewise(void **state)
{
	struct zlayer *d = new_dir(ZLAYER_DEFLATE), *in = new_dir(ZLAYER_INFLATE);
	struct evbuffer *wire = evbuffer_new(), *feed = evbuffer_new(), *plain = evbuffer_new();
	const char *lines[] = {"a1 LOGIN x y\r\n", "a2 SELECT INBOX\r\n",
	                       "a3 UID FETCH 1:* (FLAGS)\r\n"};
	const char *error = "";

	(void)state;
	for (size_t k = 0; k < 3; k++) {
		size_t want = strlen(lines[k]);

		assert_int_equal(zlayer_deflate(d, lines[k], want, 1, wire), 0);
		while (evbuffer_get_length(wire) > 0) {
			evbuffer_remove_buffer(wire, feed, 1);
			assert_true(zlayer_inflate(in, feed, plain, 1 << 20, &error) >= 0);
		}
		assert_int_equal(evbuffer_get_length(feed), 0);
		assert_int_equal(evbuffer_get_length(plain), want);
		assert_memory_equal(evbuffer_pullup(plain, -1), lines[k], want);
		evbuffer_drain(plain, want);
	}
	evbuffer_free(wire);
	evbuffer_free(feed);
	evbuffer_free(plain);
	zlayer_free(&d);
	zlayer_free(&in);
}

/* A large body written unflushed in pieces, then a flushed CRLF (a
 * streamed literal), read back with a small max_out: the output per call
 * stays bounded and the whole comes back byte-identical. */
static void test_large_bounded(void **state)
{
	enum { LEN = 3 << 20, STEP = 4096 };
	struct zlayer *d = new_dir(ZLAYER_DEFLATE), *in = new_dir(ZLAYER_INFLATE);
	struct evbuffer *wire = evbuffer_new(), *plain = evbuffer_new(), *body = evbuffer_new();
	char *text = make_text(LEN);
	const char *error = "";
	uint64_t a, b;
	long got;

	(void)state;
	for (size_t off = 0; off < LEN; off += 100000)
		assert_int_equal(zlayer_deflate(d, text + off,
		                                LEN - off < 100000 ? LEN - off : 100000, 0, wire),
		                 0);
	assert_int_equal(zlayer_deflate(d, "\r\n", 2, 1, wire), 0);
	zlayer_counts(d, &a, &b);
	assert_int_equal(a, LEN + 2);
	assert_int_equal(b, evbuffer_get_length(wire));
	assert_true(b < LEN / 2);
	while ((got = zlayer_inflate(in, wire, plain, STEP, &error)) > 0) {
		assert_true(evbuffer_get_length(plain) <= STEP + 16384);
		evbuffer_add_buffer(body, plain);
	}
	assert_int_equal(got, 0);
	assert_int_equal(evbuffer_get_length(wire), 0);
	assert_int_equal(evbuffer_get_length(body), LEN + 2);
	assert_memory_equal(evbuffer_pullup(body, LEN), text, LEN);
	zlayer_counts(in, &a, &b);
	assert_int_equal(b, LEN + 2);
	free(text);
	evbuffer_free(wire);
	evbuffer_free(plain);
	evbuffer_free(body);
	zlayer_free(&d);
	zlayer_free(&in);
}

/* zlayer_deflate_buffer() drains a multi-chunk evbuffer. */
static void test_deflate_buffer(void **state)
{
	struct zlayer *d = new_dir(ZLAYER_DEFLATE), *in = new_dir(ZLAYER_INFLATE);
	struct evbuffer *src = evbuffer_new(), *wire = evbuffer_new(), *plain = evbuffer_new();
	char *text = make_text(200000);
	const char *error = "";

	(void)state;
	for (size_t off = 0; off < 200000; off += 50000)
		evbuffer_add_reference(src, text + off, 50000, NULL, NULL);
	assert_int_equal(zlayer_deflate_buffer(d, src, wire), 0);
	assert_int_equal(evbuffer_get_length(src), 0);
	assert_true(zlayer_inflate(in, wire, plain, 1 << 20, &error) > 0);
	assert_int_equal(evbuffer_get_length(plain), 200000);
	assert_memory_equal(evbuffer_pullup(plain, -1), text, 200000);
	free(text);
	evbuffer_free(src);
	evbuffer_free(wire);
	evbuffer_free(plain);
	zlayer_free(&d);
	zlayer_free(&in);
}

static void test_bad_input(void **state)
{
	struct zlayer *in = new_dir(ZLAYER_INFLATE), *d;
	struct evbuffer *wire = evbuffer_new(), *plain = evbuffer_new();
	const char *error = NULL;

	(void)state;
	/* BTYPE 11 is reserved: invalid */
	evbuffer_add(wire, "\xff\xff\xff\xff", 4);
	assert_int_equal(zlayer_inflate(in, wire, plain, 1024, &error), -1);
	assert_string_equal(error, "invalid compressed data");
	/* and stays unusable */
	evbuffer_add(wire, "\x00", 1);
	assert_int_equal(zlayer_inflate(in, wire, plain, 1024, &error), -1);
	zlayer_free(&in);

	/* a final block: the peer ended the stream, which RFC 4978 never does */
	in = new_dir(ZLAYER_INFLATE);
	evbuffer_drain(wire, evbuffer_get_length(wire));
	evbuffer_add(wire, "\x03\x00", 2); /* final, fixed Huffman, end of block */
	assert_int_equal(zlayer_inflate(in, wire, plain, 1024, &error), -1);
	assert_string_equal(error, "the peer ended the compressed stream");
	zlayer_free(&in);

	/* the wrong direction, and bad arguments */
	in = new_dir(ZLAYER_INFLATE);
	assert_int_equal(zlayer_deflate(in, "x", 1, 1, plain), -1);
	d = new_dir(ZLAYER_DEFLATE);
	assert_int_equal(zlayer_inflate(d, wire, plain, 1, &error), -1);
	assert_null(zlayer_new(ZLAYER_DEFLATE, 10, &error));
	assert_null(zlayer_new(ZLAYER_DIR_COUNT, 1, &error));
	zlayer_free(&in);
	zlayer_free(&d);
	zlayer_free(&d); /* NULL is fine */
	evbuffer_free(wire);
	evbuffer_free(plain);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_sync_flush_marker), cmocka_unit_test(test_roundtrip_bytewise),
	        cmocka_unit_test(test_large_bounded),     cmocka_unit_test(test_deflate_buffer),
	        cmocka_unit_test(test_bad_input),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
