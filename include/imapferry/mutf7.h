/*
 * mutf7.h - modified UTF-7 mailbox names (RFC 3501 section 5.1.3).
 *
 * IMAP4rev1 servers without UTF8=ACCEPT name mailboxes in modified UTF-7:
 * printable US-ASCII (0x20-0x7e) except "&" stands for itself, "&" is written
 * "&-", and every other character is UTF-16 (astral characters as surrogate
 * pairs) in modified BASE64 ("," instead of "/", no "=" padding) between "&"
 * and "-".
 *
 * Both directions are strict: the decoder accepts only the canonical form
 * (the one the encoder produces), so decode followed by encode gives back the
 * exact input bytes, and two spellings can never name the same mailbox.
 *
 * U+0000 is rejected both ways: no IMAP string can carry a NUL (RFC 3501
 * CHAR8 and TEXT-CHAR exclude it) and our mailbox names are C strings.
 *
 * All error strings are static; the caller must not free them.
 */
#ifndef IMAPFERRY_MUTF7_H
#define IMAPFERRY_MUTF7_H

#include <stddef.h>

/* Output buffer sizes (NUL included) that fit the result for any input of
 * len bytes. Decoding never grows more than 9/8; encoding at most 5x (one
 * control character between printable ones becomes "&AAE-"). */
#define MUTF7_TO_UTF8_BUFSIZE(len)   ((len) + (len) / 8 + 1)
#define MUTF7_FROM_UTF8_BUFSIZE(len) (5 * (len) + 1)

/*
 * Decodes the modified UTF-7 name in[0..len) (need not be NUL-terminated) to
 * UTF-8. On success returns 0 and sets *out_r to a malloc'd, NUL-terminated
 * string the caller frees, and *out_len_r to its length without the NUL.
 * On failure returns -1, sets *out_r to NULL, *out_len_r to 0 and *error_r to
 * a static message. Rejected: control and DEL bytes, 8-bit bytes, "&" without
 * a closing "-", characters outside the modified BASE64 alphabet, non-zero or
 * superfluous padding bits, encoded printable US-ASCII (it must be direct),
 * adjacent encoded runs ("-&" null shift), unpaired UTF-16 surrogates and
 * U+0000. out_len_r may be NULL.
 */
int mutf7_to_utf8(const char *in, size_t len, char **out_r, size_t *out_len_r,
                  const char **error_r);

/*
 * Like mutf7_to_utf8() but writes into the caller's buffer out of outsize
 * bytes, always NUL-terminated on success. Fails with "output buffer too
 * small" when the result and its NUL do not fit; MUTF7_TO_UTF8_BUFSIZE(len)
 * bytes always do. On failure out's contents are unspecified. out_len_r may
 * be NULL.
 */
int mutf7_to_utf8_buf(const char *in, size_t len, char *out, size_t outsize, size_t *out_len_r,
                      const char **error_r);

/*
 * Encodes the UTF-8 string in[0..len) (need not be NUL-terminated) as
 * canonical modified UTF-7: each maximal run of non-direct characters is one
 * shortest BASE64 run with zero padding bits, astral characters become
 * surrogate pairs. On success returns 0 with *out_r a malloc'd,
 * NUL-terminated string the caller frees and *out_len_r its length. On
 * failure returns -1, sets *out_r to NULL, *out_len_r to 0 and *error_r to a
 * static message: invalid UTF-8 (bad lead byte, truncated sequence, overlong
 * form, UTF-16 surrogate, code point above U+10FFFF) or U+0000.
 * out_len_r may be NULL.
 */
int mutf7_from_utf8(const char *in, size_t len, char **out_r, size_t *out_len_r,
                    const char **error_r);

/*
 * Like mutf7_from_utf8() but writes into the caller's buffer out of outsize
 * bytes (see mutf7_to_utf8_buf(); MUTF7_FROM_UTF8_BUFSIZE(len) always fits).
 */
int mutf7_from_utf8_buf(const char *in, size_t len, char *out, size_t outsize, size_t *out_len_r,
                        const char **error_r);

/* Returns 1 when in[0..len) is valid canonical modified UTF-7 (exactly when
 * mutf7_to_utf8() would succeed), else 0. Allocates nothing. */
int mutf7_is_valid(const char *in, size_t len);

#endif
