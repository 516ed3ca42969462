/* istr.c - see include/imapferry/istr.h */
#include "imapferry/istr.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>

static const char *const kind_names[] = {"atom", "quoted", "literal", "literal+", "invalid"};
_Static_assert(sizeof(kind_names) / sizeof(kind_names[0]) == ISTR_KIND_COUNT, "kind names");

/* ATOM-CHAR: CHAR (%x01-7F) except atom-specials; "]" only when astring. */
static int is_atom_char(unsigned char c, unsigned flags)
{
	if (c <= 0x20 || c >= 0x7f)
		return 0; /* CTL, SP, 8-bit */
	switch (c) {
	case '(':
	case ')':
	case '{':
	case '%':
	case '*':
	case '"':
	case '\\':
		return 0;
	case ']':
		return (flags & ISTR_F_ASTRING) != 0;
	default:
		return 1;
	}
}

/* Length of the well-formed UTF-8 character (RFC 3629 UTF8-2/3/4) at s[i],
 * a non-ASCII lead byte, or 0 if it is malformed. */
static size_t utf8_char_len(const unsigned char *s, size_t len, size_t i)
{
	unsigned char c = s[i];
	unsigned char lo = 0x80, hi = 0xbf; /* allowed range of the 2nd byte */
	size_t n, k;

	if (c >= 0xc2 && c <= 0xdf) {
		n = 2;
	} else if (c >= 0xe0 && c <= 0xef) {
		n = 3;
		if (c == 0xe0)
			lo = 0xa0; /* overlong */
		else if (c == 0xed)
			hi = 0x9f; /* surrogates */
	} else if (c >= 0xf0 && c <= 0xf4) {
		n = 4;
		if (c == 0xf0)
			lo = 0x90; /* overlong */
		else if (c == 0xf4)
			hi = 0x8f; /* above U+10FFFF */
	} else {
		return 0;
	}
	if (len - i < n || s[i + 1] < lo || s[i + 1] > hi)
		return 0;
	for (k = 2; k < n; k++) {
		if ((s[i + k] & 0xc0) != 0x80)
			return 0;
	}
	return n;
}

enum istr_kind istr_classify(const char *str, size_t len, unsigned flags)
{
	const unsigned char *s = (const unsigned char *)str;
	int bare = len > 0 && (flags & ISTR_F_STRING) == 0;
	int quotable = 1;
	size_t i;

	/* Keeps every size computed from len (at most 2 * len + 2 for quoted)
	 * far from overflowing; no real string comes near. */
	if (len > SIZE_MAX / 4)
		return ISTR_INVALID;
	for (i = 0; i < len; i++) {
		unsigned char c = s[i];

		if (c == '\0')
			return ISTR_INVALID;
		if (bare && !is_atom_char(c, flags))
			bare = 0;
		if (c == '\r' || c == '\n') {
			quotable = 0;
		} else if (c >= 0x80 && quotable) {
			size_t n = (flags & ISTR_F_UTF8) != 0 ? utf8_char_len(s, len, i) : 0;

			if (n == 0)
				quotable = 0;
			else
				i += n - 1; /* continuation bytes are neither NUL nor atom */
		}
	}
	/* An unquoted NIL in an astring or nstring position may be read as NIL. */
	if (bare && len == 3 && strncasecmp(str, "NIL", 3) == 0)
		bare = 0;
	if (bare)
		return ISTR_ATOM;
	if (quotable)
		return ISTR_QUOTED;
	if ((flags & ISTR_F_LITERALPLUS) != 0 ||
	    ((flags & ISTR_F_LITERALMINUS) != 0 && len <= ISTR_LITERALMINUS_MAX))
		return ISTR_LITERAL_PLUS;
	return ISTR_LITERAL;
}

static size_t literal_header(char *buf, size_t size, size_t len, enum istr_kind kind)
{
	int n = snprintf(buf, size, "{%zu%s}\r\n", len, kind == ISTR_LITERAL_PLUS ? "+" : "");

	return n < 0 ? 0 : (size_t)n;
}

static size_t encoded_len(const char *s, size_t len, enum istr_kind kind)
{
	char hdr[32];
	size_t n, i;

	switch (kind) {
	case ISTR_ATOM:
		return len;
	case ISTR_QUOTED:
		n = len + 2;
		for (i = 0; i < len; i++) {
			if (s[i] == '"' || s[i] == '\\')
				n++;
		}
		return n;
	case ISTR_LITERAL:
	case ISTR_LITERAL_PLUS:
		return literal_header(hdr, sizeof(hdr), len, kind) + len;
	case ISTR_INVALID:
	case ISTR_KIND_COUNT:
		break;
	}
	return 0;
}

size_t istr_encoded_len(const char *s, size_t len, unsigned flags)
{
	return encoded_len(s, len, istr_classify(s, len, flags));
}

int istr_append(struct evbuffer *out, const char *s, size_t len, unsigned flags)
{
	enum istr_kind kind = istr_classify(s, len, flags);
	size_t total = encoded_len(s, len, kind);
	struct evbuffer_iovec vec;
	char *p;
	size_t i;

	if (kind == ISTR_INVALID || total > (size_t)EV_SSIZE_MAX)
		return -1;
	/* One reservation for the whole string, so that a failure leaves out
	 * unchanged rather than holding half a string. */
	if (evbuffer_reserve_space(out, (ev_ssize_t)total, &vec, 1) != 1)
		return -1;
	p = vec.iov_base;
	switch (kind) {
	case ISTR_ATOM:
		memcpy(p, s, len);
		break;
	case ISTR_QUOTED:
		*p++ = '"';
		for (i = 0; i < len; i++) {
			if (s[i] == '"' || s[i] == '\\')
				*p++ = '\\';
			*p++ = s[i];
		}
		*p = '"';
		break;
	case ISTR_LITERAL:
	case ISTR_LITERAL_PLUS: {
		char hdr[32];
		size_t n = literal_header(hdr, sizeof(hdr), len, kind);

		memcpy(p, hdr, n);
		memcpy(p + n, s, len);
		break;
	}
	case ISTR_INVALID:
	case ISTR_KIND_COUNT:
		break;
	}
	vec.iov_len = total;
	if (evbuffer_commit_space(out, &vec, 1) < 0)
		return -1;
	return (int)kind;
}

int istr_append_mailbox(struct evbuffer *out, const char *name, size_t len, unsigned flags)
{
	/* RFC 3501 5.1: "INBOX" is case-insensitive; send the canonical
	 * spelling so that servers and our own state agree on one name. */
	if (len == 5 && strncasecmp(name, "INBOX", 5) == 0)
		return evbuffer_add(out, "INBOX", 5) == 0 ? (int)ISTR_ATOM : -1;
	return istr_append(out, name, len, (flags | ISTR_F_ASTRING) & ~ISTR_F_STRING);
}

const char *istr_kind_name(enum istr_kind kind)
{
	if ((unsigned)kind >= ISTR_KIND_COUNT)
		return "?";
	return kind_names[kind];
}
