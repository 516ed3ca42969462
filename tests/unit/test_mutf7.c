/* Unit tests for mutf7.c: RFC 3501 5.1.3 examples, every rejection rule in
 * both directions, and round-trip / canonical-form properties over random
 * input with a fixed seed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "imapferry/log.h"
#include "imapferry/mutf7.h"

#define N_ELEMENTS(a) (sizeof(a) / sizeof((a)[0]))

/* Error messages, as the library spells them. */
#define E_CTL       "non-printable US-ASCII byte in modified UTF-7 name"
#define E_8BIT      "8-bit byte in modified UTF-7 name"
#define E_UNTERM    "'&' not terminated by '-'"
#define E_B64CHAR   "invalid character in modified BASE64 run"
#define E_PARTIAL   "modified BASE64 run ends inside a UTF-16 code unit"
#define E_LEFTOVER  "modified BASE64 run has non-zero leftover bits"
#define E_PRINTABLE "modified BASE64 run encodes printable US-ASCII (must be written directly)"
#define E_ADJACENT  "adjacent modified BASE64 runs (must be one run)"
#define E_HIGH      "UTF-16 high surrogate not followed by a low surrogate"
#define E_LOW       "UTF-16 low surrogate without a high surrogate"
#define E_ENC_NUL   "encoded U+0000 in mailbox name"
#define E_NUL       "U+0000 in mailbox name"
#define E_LEAD      "invalid UTF-8: bad lead byte"
#define E_TRUNC     "invalid UTF-8: truncated sequence"
#define E_OVERLONG  "invalid UTF-8: overlong encoding"
#define E_SURROGATE "invalid UTF-8: encodes a UTF-16 surrogate"
#define E_TOO_BIG   "invalid UTF-8: code point above U+10FFFF"
#define E_TOO_SMALL "output buffer too small"

/* A heap copy without a terminating NUL, so that ASan catches any read past
 * len. Never returns NULL (malloc(0) may). */
static char *dup_exact(const char *s, size_t len)
{
	char *p = malloc(len > 0 ? len : 1);

	assert_non_null(p);
	memcpy(p, s, len);
	return p;
}

static const char *show(char *buf, size_t size, const char *s, size_t len)
{
	return log_sanitize(buf, size, s, len, 200);
}

typedef int convert_fn(const char *in, size_t len, char **out_r, size_t *out_len_r,
                       const char **error_r);
typedef int convert_buf_fn(const char *in, size_t len, char *out, size_t outsize, size_t *out_len_r,
                           const char **error_r);

/* Runs conv on in[0..len) and checks it gives want (NUL-terminated, no
 * embedded NUL) through both the allocating and the buffer API. */
static void check_ok(const char *name, convert_fn *conv, convert_buf_fn *conv_buf, const char *in,
                     size_t len, const char *want)
{
	char *copy = dup_exact(in, len), *out = NULL, s1[512], s2[512];
	const char *error = NULL;
	size_t out_len = 12345, want_len = strlen(want);
	char buf[256];

	if (conv(copy, len, &out, &out_len, &error) < 0)
		fail_msg("%s: \"%s\" failed: %s", name, show(s1, sizeof(s1), in, len), error);
	if (out_len != want_len || memcmp(out, want, want_len) != 0 || out[out_len] != '\0')
		fail_msg("%s: \"%s\" gave \"%s\", want \"%s\"", name, show(s1, sizeof(s1), in, len),
		         show(s2, sizeof(s2), out, out_len), want);
	free(out);

	/* Exactly enough room (result + NUL) works; one byte less fails. */
	assert_true(want_len + 1 <= sizeof(buf));
	out_len = 12345;
	if (conv_buf(copy, len, buf, want_len + 1, &out_len, &error) < 0)
		fail_msg("%s: buf variant failed: %s", name, error);
	assert_int_equal(out_len, want_len);
	assert_memory_equal(buf, want, want_len + 1);
	assert_int_equal(conv_buf(copy, len, buf, want_len, &out_len, &error), -1);
	assert_string_equal(error, E_TOO_SMALL);
	free(copy);
}

static void check_fail(const char *name, convert_fn *conv, const char *in, size_t len,
                       const char *want_error)
{
	char *copy = dup_exact(in, len), *out = (char *)"garbage", s1[512];
	const char *error = NULL;
	size_t out_len = 12345;

	if (conv(copy, len, &out, &out_len, &error) == 0) {
		fail_msg("%s: \"%s\" succeeded with \"%s\", want error \"%s\"", name,
		         show(s1, sizeof(s1), in, len), out, want_error);
	}
	assert_null(out);
	assert_int_equal(out_len, 0);
	if (error == NULL || strcmp(error, want_error) != 0)
		fail_msg("%s: \"%s\" error \"%s\", want \"%s\"", name,
		         show(s1, sizeof(s1), in, len), error != NULL ? error : "(null)",
		         want_error);
	free(copy);
}

/* Valid pairs, checked in both directions: the canonical form is unique. */
static const struct {
	const char *name, *mutf7, *utf8;
} valid_cases[] = {
        {"empty", "", ""},
        {"ascii", "INBOX", "INBOX"},
        {"all printable except &",
         " !\"#$%'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrs"
         "tuvwxyz{|}~",
         " !\"#$%'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrs"
         "tuvwxyz{|}~"},
        {"rfc 3501 example", "~peter/mail/&U,BTFw-/&ZeVnLIqe-",
         "~peter/mail/\xe5\x8f\xb0\xe5\x8c\x97/\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e"},
        {"empty run is &", "&-", "&"},
        {"amp in text", "Tom &- Jerry", "Tom & Jerry"},
        {"two amps", "&-&-", "&&"},
        {"umlaut", "B&APw-cher",
         "B\xc3\xbc"
         "cher"},
        {"two umlauts one run", "&AOQA,A-", "\xc3\xa4\xc3\xbc"},
        {"run then amp", "&AOQ-&-", "\xc3\xa4&"},
        {"amp then run", "&-&AOQ-", "&\xc3\xa4"},
        {"run then dash", "&AOQ--", "\xc3\xa4-"},
        {"runs split by ascii", "&AOQ-a&APw-",
         "\xc3\xa4"
         "a\xc3\xbc"},
        {"euro sign", "&IKw-", "\xe2\x82\xac"},
        {"cyrillic", "&BB8EQAQ4BDIENQRC-", "\xd0\x9f\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82"},
        {"emoji astral pair", "&2D3eAA-", "\xf0\x9f\x98\x80"},
        {"emoji then 8-bit in one run", "&2D3eAADk-", "\xf0\x9f\x98\x80\xc3\xa4"},
        {"ascii emoji ascii", "a&2D3eAA-b",
         "a\xf0\x9f\x98\x80"
         "b"},
        {"highest code point", "&2,,f,w-", "\xf4\x8f\xbf\xbf"},
        {"tab is encoded", "&AAk-", "\t"},
        {"del is encoded", "&AH8-", "\x7f"},
        {"controls and 8-bit share a run", "&AAkA5A-", "\t\xc3\xa4"},
};

static void test_decode_valid(void **state)
{
	size_t i;

	(void)state;
	for (i = 0; i < N_ELEMENTS(valid_cases); i++) {
		check_ok(valid_cases[i].name, mutf7_to_utf8, mutf7_to_utf8_buf,
		         valid_cases[i].mutf7, strlen(valid_cases[i].mutf7), valid_cases[i].utf8);
		assert_true(mutf7_is_valid(valid_cases[i].mutf7, strlen(valid_cases[i].mutf7)));
	}
}

static void test_encode_valid(void **state)
{
	size_t i;

	(void)state;
	for (i = 0; i < N_ELEMENTS(valid_cases); i++) {
		check_ok(valid_cases[i].name, mutf7_from_utf8, mutf7_from_utf8_buf,
		         valid_cases[i].utf8, strlen(valid_cases[i].utf8), valid_cases[i].mutf7);
	}
}

static void test_decode_invalid(void **state)
{
	static const struct {
		const char *name, *in;
		size_t len; /* 0: strlen(in) */
		const char *want_error;
	} cases[] = {
	        {"tab", "a\tb", 0, E_CTL},
	        {"cr", "a\r", 0, E_CTL},
	        {"del", "a\x7f", 0, E_CTL},
	        {"nul byte", "a\0b", 3, E_CTL},
	        {"raw utf-8",
	         "B\xc3\xbc"
	         "cher",
	         0, E_8BIT},
	        {"raw latin-1", "\xe4", 0, E_8BIT},
	        {"lone amp", "&", 0, E_UNTERM},
	        {"amp at end", "abc&", 0, E_UNTERM},
	        {"run not closed", "&AOQ", 0, E_UNTERM},
	        {"run not closed after run", "&AOQ-&", 0, E_UNTERM},
	        {"slash (plain base64)", "&AO/-", 0, E_B64CHAR},
	        {"padding", "&AOQ=-", 0, E_B64CHAR},
	        {"space in run", "&AO Q-", 0, E_B64CHAR},
	        {"8-bit in run", "&AO\xc3-", 0, E_B64CHAR},
	        {"amp in run", "&AO&Q-", 0, E_B64CHAR},
	        {"nonzero leftover bits", "&AOR-", 0, E_LEFTOVER},
	        {"nonzero leftover bits after pair", "&2D3eAB-", 0, E_LEFTOVER},
	        {"one char, no unit", "&A-", 0, E_PARTIAL},
	        {"two chars, no unit", "&AO-", 0, E_PARTIAL},
	        {"superfluous char", "&AOQA-", 0, E_PARTIAL},
	        {"superfluous chars", "&AOQAA-", 0, E_PARTIAL},
	        {"encoded a", "&AGE-", 0, E_PRINTABLE},
	        {"encoded space", "&ACA-", 0, E_PRINTABLE},
	        {"encoded tilde", "&AH4-", 0, E_PRINTABLE},
	        {"encoded amp", "&ACY-", 0, E_PRINTABLE},
	        {"printable mixed into run", "&AOQAYQ-", 0, E_PRINTABLE},
	        {"printable after pair", "&2D3eAAB4-", 0, E_PRINTABLE},
	        {"adjacent runs", "&AOQ-&APw-", 0, E_ADJACENT},
	        {"adjacent runs after text", "x&AOQ-&APw-y", 0, E_ADJACENT},
	        /* Also adjacent, but its first run already encodes 'a'. */
	        {"adjacent encoded a", "&AGE-&AGE-", 0, E_PRINTABLE},
	        {"high at end of run", "&2D0-", 0, E_HIGH},
	        {"high then bmp", "&2D0A5A-", 0, E_HIGH},
	        {"two highs", "&2D3YPQ-", 0, E_HIGH},
	        {"lone low", "&3gA-", 0, E_LOW},
	        {"low then high", "&3gDYPQ-", 0, E_LOW},
	        {"pair split across runs", "&2D0-&3gA-", 0, E_HIGH},
	        {"encoded nul", "&AAA-", 0, E_ENC_NUL},
	        {"encoded nul after 8-bit", "&AOQAAA-", 0, E_ENC_NUL},
	        {"valid prefix then junk", "B&APw-cher\x01", 0, E_CTL},
	};
	size_t i;

	(void)state;
	for (i = 0; i < N_ELEMENTS(cases); i++) {
		size_t len = cases[i].len != 0 ? cases[i].len : strlen(cases[i].in);
		char *copy = dup_exact(cases[i].in, len), buf[64];
		const char *error = NULL;

		check_fail(cases[i].name, mutf7_to_utf8, cases[i].in, len, cases[i].want_error);
		if (mutf7_is_valid(copy, len))
			fail_msg("%s: mutf7_is_valid() says valid", cases[i].name);
		/* The buffer API reports the same error, also with a big buffer. */
		assert_int_equal(mutf7_to_utf8_buf(copy, len, buf, sizeof(buf), NULL, &error), -1);
		assert_string_equal(error, cases[i].want_error);
		free(copy);
	}
}

static void test_encode_invalid(void **state)
{
	static const struct {
		const char *name, *in;
		size_t len; /* 0: strlen(in) */
		const char *want_error;
	} cases[] = {
	        {"continuation as lead", "\x80", 0, E_LEAD},
	        {"continuation after char", "\xc3\xbc\xbc", 0, E_LEAD},
	        {"lead f8", "\xf8\x88\x80\x80\x80", 0, E_LEAD},
	        {"lead ff", "a\xff", 0, E_LEAD},
	        {"truncated 2-byte at end", "ab\xc3", 0, E_TRUNC},
	        {"truncated 3-byte at end", "\xe6\x97", 0, E_TRUNC},
	        {"truncated 4-byte at end", "\xf0\x9f\x98", 0, E_TRUNC},
	        {"truncated by ascii",
	         "\xc3"
	         "A",
	         0, E_TRUNC},
	        {"truncated 3-byte by ascii",
	         "\xe6\x97"
	         "abc",
	         0, E_TRUNC},
	        {"truncated by new lead", "\xe6\xc3\xbc", 0, E_TRUNC},
	        {"overlong slash c0", "\xc0\xaf", 0, E_OVERLONG},
	        {"overlong c1", "\xc1\xbf", 0, E_OVERLONG},
	        {"overlong 3-byte", "\xe0\x80\xaf", 0, E_OVERLONG},
	        {"overlong 3-byte max", "\xe0\x9f\xbf", 0, E_OVERLONG},
	        {"overlong 4-byte", "\xf0\x8f\xbf\xbf", 0, E_OVERLONG},
	        {"overlong nul", "\xc0\x80", 0, E_OVERLONG},
	        {"high surrogate", "\xed\xa0\x80", 0, E_SURROGATE},
	        {"low surrogate", "\xed\xbf\xbf", 0, E_SURROGATE},
	        {"cesu-8 pair", "\xed\xa0\xbd\xed\xb8\x80", 0, E_SURROGATE},
	        {"above max", "\xf4\x90\x80\x80", 0, E_TOO_BIG},
	        {"f7 lead", "\xf7\xbf\xbf\xbf", 0, E_TOO_BIG},
	        {"nul", "a\0b", 3, E_NUL},
	        {"nul only", "\0", 1, E_NUL},
	        {"nul inside a run", "\xc3\xa4\0", 3, E_NUL},
	};
	size_t i;

	(void)state;
	for (i = 0; i < N_ELEMENTS(cases); i++) {
		size_t len = cases[i].len != 0 ? cases[i].len : strlen(cases[i].in);

		check_fail(cases[i].name, mutf7_from_utf8, cases[i].in, len, cases[i].want_error);
	}
}

static void test_api_edges(void **state)
{
	const char *error = NULL;
	char *out = NULL, buf[8];
	size_t n = 99;

	(void)state;
	/* out_len_r may be NULL. */
	assert_int_equal(mutf7_to_utf8("&-", 2, &out, NULL, &error), 0);
	assert_string_equal(out, "&");
	free(out);
	assert_int_equal(mutf7_from_utf8("&", 1, &out, NULL, &error), 0);
	assert_string_equal(out, "&-");
	free(out);

	/* len is honoured: the bytes after it are never looked at. */
	assert_int_equal(mutf7_to_utf8("B&APw-cher\x01", 10, &out, &n, &error), 0);
	assert_int_equal(n, 7);
	free(out);
	assert_int_equal(mutf7_to_utf8("&APw-", 4, &out, &n, &error), -1);
	assert_string_equal(error, E_UNTERM);

	/* Zero-sized buffers hold not even the NUL. */
	assert_int_equal(mutf7_to_utf8_buf("", 0, buf, 0, &n, &error), -1);
	assert_string_equal(error, E_TOO_SMALL);
	assert_int_equal(mutf7_from_utf8_buf("", 0, buf, 0, &n, &error), -1);
	assert_int_equal(mutf7_from_utf8_buf("", 0, buf, 1, &n, &error), 0);
	assert_int_equal(n, 0);
	assert_string_equal(buf, "");

	assert_true(mutf7_is_valid("", 0));
	assert_true(mutf7_is_valid("&-&AGE-", 2));  /* only "&-" ... */
	assert_false(mutf7_is_valid("&-&AGE-", 7)); /* ... and the whole */
}

/* xorshift64*: deterministic across platforms, unlike rand(). */
static uint64_t rng_state;

static uint32_t rng(uint32_t n)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return (uint32_t)((rng_state * 2685821657736338717ull) >> 32) % n;
}

static size_t put_utf8(char *p, uint32_t cp)
{
	if (cp < 0x80) {
		p[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		p[0] = (char)(0xc0 | (cp >> 6));
		p[1] = (char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		p[0] = (char)(0xe0 | (cp >> 12));
		p[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		p[2] = (char)(0x80 | (cp & 0x3f));
		return 3;
	}
	p[0] = (char)(0xf0 | (cp >> 18));
	p[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
	p[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
	p[3] = (char)(0x80 | (cp & 0x3f));
	return 4;
}

/* A random scalar value other than U+0000, weighted towards the classes
 * the encoder treats differently. */
static uint32_t random_char(void)
{
	uint32_t cp;

	switch (rng(10)) {
	case 0:
		return rng(4) == 0 ? '&' : '-';
	case 1:
	case 2:
		return 0x20 + rng(0x5f); /* printable ASCII */
	case 3:
		return rng(8) == 0 ? 0x7f : 1 + rng(0x1f); /* controls */
	case 4:
	case 5:
		return 0x80 + rng(0x800 - 0x80);
	case 6:
	case 7:
		do
			cp = 0x800 + rng(0x10000 - 0x800);
		while (cp >= 0xd800 && cp <= 0xdfff);
		return cp;
	default:
		return 0x10000 + rng(0x110000 - 0x10000);
	}
}

static void test_roundtrip_random(void **state)
{
	char utf8[32 * 4] = "", s1[1024], s2[1024];
	unsigned iter, astral = 0;

	(void)state;
	rng_state = 0x1f2e3d4c5b6a7988ull;
	for (iter = 0; iter < 5000; iter++) {
		size_t n = 0, enc_len, dec_len, i, nchars = rng(32);
		char *enc = NULL, *dec = NULL, *copy;
		const char *error = NULL;

		for (i = 0; i < nchars; i++) {
			uint32_t cp = random_char();

			astral += cp >= 0x10000;
			n += put_utf8(utf8 + n, cp);
		}
		copy = dup_exact(utf8, n);
		if (mutf7_from_utf8(copy, n, &enc, &enc_len, &error) < 0)
			fail_msg("iter %u: encoding \"%s\" failed: %s", iter,
			         show(s1, sizeof(s1), utf8, n), error);
		assert_true(enc_len < MUTF7_FROM_UTF8_BUFSIZE(n));
		for (i = 0; i < enc_len; i++)
			assert_true(enc[i] >= 0x20 && enc[i] <= 0x7e);
		free(copy);

		copy = dup_exact(enc, enc_len);
		if (!mutf7_is_valid(copy, enc_len))
			fail_msg("iter %u: encoder output \"%s\" not valid", iter, enc);
		if (mutf7_to_utf8(copy, enc_len, &dec, &dec_len, &error) < 0)
			fail_msg("iter %u: decoding \"%s\" failed: %s", iter, enc, error);
		assert_true(dec_len < MUTF7_TO_UTF8_BUFSIZE(enc_len));
		if (dec_len != n || memcmp(dec, utf8, n) != 0)
			fail_msg("iter %u: \"%s\" -> \"%s\" -> \"%s\"", iter,
			         show(s1, sizeof(s1), utf8, n), enc,
			         show(s2, sizeof(s2), dec, dec_len));
		free(copy);
		free(enc);
		free(dec);
	}
	assert_true(astral > 1000);
}

/* Random strings over the modified UTF-7 alphabet: whatever decodes must
 * re-encode to the very same bytes (the canonical form is unique), and
 * mutf7_is_valid() must agree with the decoder. */
static void test_canonical_random(void **state)
{
	static const char *const tokens[] = {
	        "&", "-", "&-", "a",  " ",  "A",  "O",  "Q",     "w",        ",",    "+",
	        "/", "=", "2D", "3g", "AA", "AO", "QA", "&AOQ-", "&2D3eAA-", "\x01", "\xc3",
	};
	unsigned iter, valid = 0;
	char in[64];

	(void)state;
	rng_state = 0x0123456789abcdefull;
	for (iter = 0; iter < 20000; iter++) {
		size_t n = 0, ntok = 1 + rng(8), i, dec_len, enc_len;
		char *dec = NULL, *enc = NULL, *copy;
		const char *error = NULL;
		int ok;

		for (i = 0; i < ntok; i++) {
			const char *t = tokens[rng(N_ELEMENTS(tokens))];

			memcpy(in + n, t, strlen(t));
			n += strlen(t);
		}
		copy = dup_exact(in, n);
		ok = mutf7_to_utf8(copy, n, &dec, &dec_len, &error) == 0;
		assert_int_equal(ok, mutf7_is_valid(copy, n));
		free(copy);
		if (!ok)
			continue;
		valid++;
		if (mutf7_from_utf8(dec, dec_len, &enc, &enc_len, &error) < 0)
			fail_msg("iter %u: re-encoding failed: %s", iter, error);
		if (enc_len != n || memcmp(enc, in, n) != 0) {
			char s1[256];

			fail_msg("iter %u: \"%s\" decoded and re-encoded as \"%s\"", iter,
			         show(s1, sizeof(s1), in, n), enc);
		}
		free(dec);
		free(enc);
	}
	assert_true(valid > 1000);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_decode_valid),     cmocka_unit_test(test_encode_valid),
	        cmocka_unit_test(test_decode_invalid),   cmocka_unit_test(test_encode_invalid),
	        cmocka_unit_test(test_api_edges),        cmocka_unit_test(test_roundtrip_random),
	        cmocka_unit_test(test_canonical_random),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
