/* mutf7.c - see include/imapferry/mutf7.h */
#include "imapferry/mutf7.h"

#include <stdint.h>
#include <stdlib.h>

/* Output sink: writes into buf (size bytes, one kept for the NUL), or only
 * counts when buf is NULL (validation). */
struct mutf7_out {
	char *buf;
	size_t size, len;
	int overflow;
};

static const char err_too_small[] = "output buffer too small";

static void out_put(struct mutf7_out *o, unsigned char c)
{
	if (o->buf != NULL) {
		if (o->len + 1 >= o->size) {
			o->overflow = 1;
			return;
		}
		o->buf[o->len] = (char)c;
	}
	o->len++;
}

static void out_put_utf8(struct mutf7_out *o, uint32_t cp)
{
	if (cp < 0x80) {
		out_put(o, (unsigned char)cp);
	} else if (cp < 0x800) {
		out_put(o, (unsigned char)(0xc0 | (cp >> 6)));
		out_put(o, (unsigned char)(0x80 | (cp & 0x3f)));
	} else if (cp < 0x10000) {
		out_put(o, (unsigned char)(0xe0 | (cp >> 12)));
		out_put(o, (unsigned char)(0x80 | ((cp >> 6) & 0x3f)));
		out_put(o, (unsigned char)(0x80 | (cp & 0x3f)));
	} else {
		out_put(o, (unsigned char)(0xf0 | (cp >> 18)));
		out_put(o, (unsigned char)(0x80 | ((cp >> 12) & 0x3f)));
		out_put(o, (unsigned char)(0x80 | ((cp >> 6) & 0x3f)));
		out_put(o, (unsigned char)(0x80 | (cp & 0x3f)));
	}
}

/* RFC 3501 5.1.3: "printable US-ASCII characters, except for "&", represent
 * themselves; that is, characters with octet values 0x20-0x25 and 0x27-0x7e". */
static int is_direct(uint32_t c)
{
	return c >= 0x20 && c <= 0x7e && c != '&';
}

/* Modified BASE64 (RFC 2152 with "," for "/"). */
static const char b64_chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";

static int b64_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == ',')
		return 63;
	return -1;
}

/* Decodes one BASE64 run starting at *pos (just after "&", at least one
 * character before the input ends); on success *pos is just past its "-". */
static int decode_run(const unsigned char *in, size_t len, size_t *pos, struct mutf7_out *o,
                      const char **error_r)
{
	uint32_t acc = 0, high = 0;
	unsigned nbits = 0;
	size_t i = *pos;

	for (; i < len && in[i] != '-'; i++) {
		int v = b64_value(in[i]);
		uint32_t unit;

		if (v < 0) {
			*error_r = "invalid character in modified BASE64 run";
			return -1;
		}
		acc = (acc << 6) | (uint32_t)v;
		nbits += 6;
		if (nbits < 16)
			continue;
		nbits -= 16;
		unit = (acc >> nbits) & 0xffff;
		acc &= (1u << nbits) - 1;

		if (high != 0) {
			if (unit < 0xdc00 || unit > 0xdfff) {
				*error_r = "UTF-16 high surrogate not followed by a low surrogate";
				return -1;
			}
			out_put_utf8(o, 0x10000 + ((high - 0xd800) << 10) + (unit - 0xdc00));
			high = 0;
		} else if (unit >= 0xd800 && unit <= 0xdbff) {
			high = unit;
		} else if (unit >= 0xdc00 && unit <= 0xdfff) {
			*error_r = "UTF-16 low surrogate without a high surrogate";
			return -1;
		} else if (unit == 0) {
			*error_r = "encoded U+0000 in mailbox name";
			return -1;
		} else if (unit < 0x80 && (is_direct(unit) || unit == '&')) {
			*error_r = "modified BASE64 run encodes printable US-ASCII "
			           "(must be written directly)";
			return -1;
		} else {
			out_put_utf8(o, unit);
		}
	}
	if (i == len) {
		*error_r = "'&' not terminated by '-'";
		return -1;
	}
	/* Canonical form: fewer than 6 leftover bits (a whole leftover
	 * character would carry no data), and those bits are zero. */
	if (nbits >= 6) {
		*error_r = "modified BASE64 run ends inside a UTF-16 code unit";
		return -1;
	}
	if (acc != 0) {
		*error_r = "modified BASE64 run has non-zero leftover bits";
		return -1;
	}
	if (high != 0) {
		*error_r = "UTF-16 high surrogate not followed by a low surrogate";
		return -1;
	}
	*pos = i + 1;
	return 0;
}

static int decode(const char *input, size_t len, struct mutf7_out *o, const char **error_r)
{
	const unsigned char *in = (const unsigned char *)input;
	size_t i = 0;
	int after_run = 0;

	while (i < len) {
		unsigned char c = in[i];

		if (c >= 0x80) {
			*error_r = "8-bit byte in modified UTF-7 name";
			return -1;
		}
		if (c < 0x20 || c == 0x7f) {
			*error_r = "non-printable US-ASCII byte in modified UTF-7 name";
			return -1;
		}
		i++;
		if (c != '&') {
			out_put(o, c);
			after_run = 0;
			continue;
		}
		if (i < len && in[i] == '-') {
			out_put(o, '&');
			i++;
			after_run = 0;
			continue;
		}
		if (i == len) {
			*error_r = "'&' not terminated by '-'";
			return -1;
		}
		/* RFC 3501: null shifts ("-&" while in BASE64) are not permitted. */
		if (after_run) {
			*error_r = "adjacent modified BASE64 runs (must be one run)";
			return -1;
		}
		if (decode_run(in, len, &i, o, error_r) < 0)
			return -1;
		after_run = 1;
	}
	if (o->overflow) {
		*error_r = err_too_small;
		return -1;
	}
	if (o->buf != NULL)
		o->buf[o->len] = '\0';
	return 0;
}

/* Decodes one UTF-8 character at in[*pos] (a non-ASCII lead byte), strictly
 * per RFC 3629, and advances *pos past it. */
static int utf8_next(const unsigned char *in, size_t len, size_t *pos, uint32_t *cp_r,
                     const char **error_r)
{
	static const uint32_t min_cp[] = {0, 0, 0x80, 0x800, 0x10000};
	unsigned char c = in[*pos];
	unsigned n, k;
	uint32_t cp;

	if (c >= 0xc0 && c <= 0xdf) {
		n = 2;
		cp = c & 0x1f;
	} else if (c >= 0xe0 && c <= 0xef) {
		n = 3;
		cp = c & 0x0f;
	} else if (c >= 0xf0 && c <= 0xf7) {
		n = 4;
		cp = c & 0x07;
	} else {
		*error_r = "invalid UTF-8: bad lead byte";
		return -1;
	}
	if (len - *pos < n) {
		*error_r = "invalid UTF-8: truncated sequence";
		return -1;
	}
	for (k = 1; k < n; k++) {
		unsigned char cc = in[*pos + k];

		if ((cc & 0xc0) != 0x80) {
			*error_r = "invalid UTF-8: truncated sequence";
			return -1;
		}
		cp = (cp << 6) | (cc & 0x3f);
	}
	if (cp < min_cp[n]) {
		*error_r = "invalid UTF-8: overlong encoding";
		return -1;
	}
	if (cp >= 0xd800 && cp <= 0xdfff) {
		*error_r = "invalid UTF-8: encodes a UTF-16 surrogate";
		return -1;
	}
	if (cp > 0x10ffff) {
		*error_r = "invalid UTF-8: code point above U+10FFFF";
		return -1;
	}
	*pos += n;
	*cp_r = cp;
	return 0;
}

static void put_unit(struct mutf7_out *o, uint32_t unit, uint32_t *acc, unsigned *nbits)
{
	*acc = (*acc << 16) | unit;
	*nbits += 16;
	while (*nbits >= 6) {
		*nbits -= 6;
		out_put(o, (unsigned char)b64_chars[(*acc >> *nbits) & 0x3f]);
	}
	*acc &= (1u << *nbits) - 1;
}

static int encode(const char *input, size_t len, struct mutf7_out *o, const char **error_r)
{
	const unsigned char *in = (const unsigned char *)input;
	size_t i = 0;

	while (i < len) {
		uint32_t acc = 0;
		unsigned nbits = 0;

		if (in[i] == '\0') {
			*error_r = "U+0000 in mailbox name";
			return -1;
		}
		if (is_direct(in[i])) {
			out_put(o, in[i++]);
			continue;
		}
		if (in[i] == '&') {
			out_put(o, '&');
			out_put(o, '-');
			i++;
			continue;
		}
		/* One run for all consecutive non-direct characters: RFC 3501
		 * forbids the "-&" null shift between two runs. */
		out_put(o, '&');
		while (i < len && !is_direct(in[i]) && in[i] != '&') {
			uint32_t cp = in[i];

			if (cp == 0) {
				*error_r = "U+0000 in mailbox name";
				return -1;
			}
			if (cp < 0x80)
				i++;
			else if (utf8_next(in, len, &i, &cp, error_r) < 0)
				return -1;
			if (cp >= 0x10000) {
				put_unit(o, 0xd800 + ((cp - 0x10000) >> 10), &acc, &nbits);
				put_unit(o, 0xdc00 + ((cp - 0x10000) & 0x3ff), &acc, &nbits);
			} else {
				put_unit(o, cp, &acc, &nbits);
			}
		}
		if (nbits > 0)
			out_put(o, (unsigned char)b64_chars[(acc << (6 - nbits)) & 0x3f]);
		out_put(o, '-');
	}
	if (o->overflow) {
		*error_r = err_too_small;
		return -1;
	}
	if (o->buf != NULL)
		o->buf[o->len] = '\0';
	return 0;
}

typedef int mutf7_conv_fn(const char *in, size_t len, struct mutf7_out *o, const char **error_r);

static int convert_buf(mutf7_conv_fn *conv, const char *in, size_t len, char *out, size_t outsize,
                       size_t *out_len_r, const char **error_r)
{
	struct mutf7_out o = {out, outsize, 0, 0};

	if (outsize == 0) {
		*error_r = err_too_small;
		return -1;
	}
	if (conv(in, len, &o, error_r) < 0)
		return -1;
	if (out_len_r != NULL)
		*out_len_r = o.len;
	return 0;
}

static int convert_alloc(mutf7_conv_fn *conv, size_t bufsize, const char *in, size_t len,
                         char **out_r, size_t *out_len_r, const char **error_r)
{
	char *buf;
	size_t n;

	*out_r = NULL;
	if (out_len_r != NULL)
		*out_len_r = 0;
	buf = malloc(bufsize);
	if (buf == NULL) {
		*error_r = "out of memory";
		return -1;
	}
	if (convert_buf(conv, in, len, buf, bufsize, &n, error_r) < 0) {
		free(buf);
		return -1;
	}
	*out_r = buf;
	if (out_len_r != NULL)
		*out_len_r = n;
	return 0;
}

int mutf7_to_utf8_buf(const char *in, size_t len, char *out, size_t outsize, size_t *out_len_r,
                      const char **error_r)
{
	return convert_buf(decode, in, len, out, outsize, out_len_r, error_r);
}

int mutf7_from_utf8_buf(const char *in, size_t len, char *out, size_t outsize, size_t *out_len_r,
                        const char **error_r)
{
	return convert_buf(encode, in, len, out, outsize, out_len_r, error_r);
}

int mutf7_to_utf8(const char *in, size_t len, char **out_r, size_t *out_len_r, const char **error_r)
{
	/* The bound cannot overflow: len is the size of an object in memory. */
	return convert_alloc(decode, MUTF7_TO_UTF8_BUFSIZE(len), in, len, out_r, out_len_r,
	                     error_r);
}

int mutf7_from_utf8(const char *in, size_t len, char **out_r, size_t *out_len_r,
                    const char **error_r)
{
	if (len > (SIZE_MAX - 1) / 5) {
		*out_r = NULL;
		if (out_len_r != NULL)
			*out_len_r = 0;
		*error_r = "mailbox name too long";
		return -1;
	}
	return convert_alloc(encode, MUTF7_FROM_UTF8_BUFSIZE(len), in, len, out_r, out_len_r,
	                     error_r);
}

int mutf7_is_valid(const char *in, size_t len)
{
	struct mutf7_out o = {NULL, 0, 0, 0};
	const char *error;

	return decode(in, len, &o, &error) == 0;
}
