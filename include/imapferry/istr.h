/*
 * istr.h - writing strings into IMAP commands we send (RFC 3501 / RFC 9051
 * section 9 grammar):
 *
 *   atom            = 1*ATOM-CHAR
 *   ATOM-CHAR       = <any CHAR except atom-specials>
 *   atom-specials   = "(" / ")" / "{" / SP / CTL / list-wildcards /
 *                     quoted-specials / resp-specials
 *   astring         = 1*ASTRING-CHAR / string
 *   ASTRING-CHAR    = ATOM-CHAR / resp-specials          ; resp-specials = "]"
 *   quoted          = DQUOTE *QUOTED-CHAR DQUOTE
 *   QUOTED-CHAR     = <any TEXT-CHAR except quoted-specials> /
 *                     "\" quoted-specials / UTF8-2 / UTF8-3 / UTF8-4
 *                                   ; UTF-8 only with UTF8=ACCEPT (RFC 6855)
 *   literal         = "{" number ["+"] "}" CRLF *CHAR8   ; "+": RFC 7888
 *   CHAR8           = %x01-ff
 *
 * The shortest safe form is chosen: atom, else quoted, else literal. No form
 * can carry NUL (TEXT-CHAR and CHAR8 both exclude it): such strings are
 * ISTR_INVALID and are never written.
 */
#ifndef IMAPFERRY_ISTR_H
#define IMAPFERRY_ISTR_H

#include <stddef.h>

struct evbuffer;

enum istr_kind {
	ISTR_ATOM,         /* bare atom / astring characters */
	ISTR_QUOTED,       /* "..." with \" and \\ escaped */
	ISTR_LITERAL,      /* {N}CRLF bytes: synchronising, see istr_append() */
	ISTR_LITERAL_PLUS, /* {N+}CRLF bytes: non-synchronising (RFC 7888) */
	ISTR_INVALID,      /* contains NUL: not representable */
	ISTR_KIND_COUNT
};

/* Context: the bare (atom) form may use ASTRING-CHAR, i.e. also "]".
 * Without it only ATOM-CHAR is written bare. */
#define ISTR_F_ASTRING 0x01u
/* Context: the grammar is string / nstring, which has no bare form. */
#define ISTR_F_STRING 0x02u
/* Session has UTF8=ACCEPT (RFC 6855 / 9051): well-formed UTF-8 may be quoted.
 * Without it, and for malformed UTF-8, 8-bit bytes force a literal. */
#define ISTR_F_UTF8 0x04u
/* Server has LITERAL+ (RFC 7888): literals are written {N+}. */
#define ISTR_F_LITERALPLUS 0x08u
/* Server has LITERAL- (RFC 7888, built into IMAP4rev2): literals up to
 * ISTR_LITERALMINUS_MAX bytes are written {N+}, longer ones {N}. */
#define ISTR_F_LITERALMINUS 0x10u

/* RFC 7888 section 4: LITERAL- allows non-synchronising literals of at most
 * 4096 octets. */
#define ISTR_LITERALMINUS_MAX 4096

/*
 * Returns the form istr_append() writes for s[0..len) (need not be
 * NUL-terminated; may contain any byte) under flags (ISTR_F_*):
 * ISTR_ATOM when len > 0, ISTR_F_STRING is not set and every byte is an
 * ATOM-CHAR (ASTRING-CHAR with ISTR_F_ASTRING), except that "NIL" in any
 * case is never bare, so that an astring or nstring parser cannot take it
 * for NIL; else ISTR_QUOTED when there is no CR, LF or NUL and no 8-bit byte
 * (with ISTR_F_UTF8: 8-bit bytes forming well-formed UTF-8); else a literal,
 * ISTR_LITERAL_PLUS if flags allow a non-synchronising one, else
 * ISTR_LITERAL; ISTR_INVALID when s contains NUL (or len > SIZE_MAX / 4,
 * a bound no real string reaches, which keeps the size arithmetic exact).
 */
enum istr_kind istr_classify(const char *s, size_t len, unsigned flags);

/*
 * Returns the exact number of bytes istr_append() writes for s[0..len) under
 * flags (literal payload included), or 0 for ISTR_INVALID.
 */
size_t istr_encoded_len(const char *s, size_t len, unsigned flags);

/*
 * Appends s[0..len) to out in the form istr_classify() picks: bare, quoted
 * with "\"" and "\\" escaped, or "{N}\r\n" / "{N+}\r\n" followed by the len
 * bytes. out is borrowed for the call. Returns the enum istr_kind written, or
 * -1 with out unchanged when s is ISTR_INVALID or memory runs out.
 *
 * ISTR_LITERAL: a synchronising literal must not be sent before the server's
 * "+" continuation, which this function cannot wait for. The last len bytes of
 * out are then the literal's payload; the caller sends everything before them
 * (ending in "{N}\r\n"), waits for "+" (a tagged NO/BAD instead cancels the
 * command), then sends the rest of the command.
 */
int istr_append(struct evbuffer *out, const char *s, size_t len, unsigned flags);

/*
 * Appends a mailbox name (RFC 3501: mailbox = "INBOX" / astring): "INBOX" in
 * any case is written as INBOX; any other name as an astring, i.e. as
 * istr_append() with ISTR_F_ASTRING set and ISTR_F_STRING cleared (the other
 * flags are honoured). The name must already be in the session's encoding
 * (modified UTF-7, see mutf7.h, unless UTF8=ACCEPT is enabled). Returns as
 * istr_append().
 */
int istr_append_mailbox(struct evbuffer *out, const char *name, size_t len, unsigned flags);

/* "atom", "quoted", "literal", "literal+", "invalid"; "?" when out of range.
 * Static string. */
const char *istr_kind_name(enum istr_kind kind);

#endif
