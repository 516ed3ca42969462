/*
 * hdrkey.h - imapsync's message identity key ("the same message"), so that a
 * destination filled by imapsync is recognised and not copied twice.
 *
 * The key (see docs/imapsync-behaviour.md section 1) is computed from the
 * header fields named by --useheader (default Message-Id and Received):
 *
 *   1. every occurrence of every wanted field (all fields with ALL) gives a
 *      line: the value has bytes 0x80-0xFF turned into 'X', TAB into space,
 *      leading and trailing white space removed and each white space run
 *      collapsed to one space; with --messageidnodomain a Message-Id value
 *      is cut at its first '@'. The line is "NAME: value", all of it ASCII
 *      upper-cased, so the case of the field name never matters;
 *   2. lines matching --skipheader are dropped;
 *   3. the lines are sorted bytewise and concatenated with no separator;
 *   4. key = base64(md5(string)) without '=' padding (22 characters), or
 *      "<md5>:<RFC822.SIZE>" with --noskipsize.
 * No line left after step 2 means "no key": imapsync ignores such a message
 * unless --addheader is given.
 *
 * Two header parsers are needed, because imapsync uses two and they disagree
 * on malformed lines: sy_hdrkey_compute() reads the answer to the normal
 * fetch (BODY.PEEK[HEADER.FIELDS (...)], or BODY.PEEK[HEADER] with ALL) the
 * way Mail::IMAPClient's parse_headers does; sy_hdrkey_compute_whole() reads
 * the BODY.PEEK[HEADER] of the --wholeheaderifneeded fallback the way
 * imapsync's decompose_header does. The differences are listed at each.
 *
 * "White space" is Perl's \s on byte strings: SP, TAB, LF, VT, FF, CR.
 *
 * Error strings returned through error_r live in a thread-local buffer that
 * stays valid until the next sy_hdrkey_* call in the same thread. An opts
 * object is read-only after sy_hdrkey_opts_init() and may be shared by
 * threads.
 */
#ifndef IMAPFERRY_SYNC_HDRKEY_H
#define IMAPFERRY_SYNC_HDRKEY_H

#include <stddef.h>
#include <stdint.h>

/* Room for any key this module writes, NUL included: the longest is
 * 22 (md5) + ":" + 10 (size) + "#" + 10 (duplicate number) + NUL = 45. */
#define SY_HDRKEY_MAX 48
/* Length of the md5 part of a key (base64 of 16 bytes without padding). */
#define SY_HDRKEY_MD5_LEN 22
/* Room for the --addheader line, NUL included:
 * "Message-Id: <4294967295@imapsync>\r\n" is 35 bytes. */
#define SY_HDRKEY_LINE_MAX 40
/* Prefix of the content-derived keys of sy_hdrkey_content(). An imapsync key
 * starts with 22 base64 characters, never with "C:", so the two kinds can
 * never collide. */
#define SY_HDRKEY_CONTENT_PREFIX "C:"
/* The fetch item of the --wholeheaderifneeded fallback. */
#define SY_HDRKEY_WHOLE_ITEM "BODY.PEEK[HEADER]"

struct sy_hdrkey_settings {
	/* --useheader names, in order; borrowed for the sy_hdrkey_opts_init()
	 * call. NULL or count 0 = "Message-Id" and "Received" (imapsync's
	 * default; the caller applies presets such as --gmail1 itself). A name
	 * equal to "ALL" in any case selects every field of the whole header. A
	 * name must be 1*(printable ASCII except ':'), as RFC 5322 field names
	 * are. */
	const char *const *useheader;
	size_t useheader_count;
	/* --skipheader: a PCRE2 (Perl syntax) pattern matched against each
	 * upper-cased line, with imapsync's modifiers /xi: case-insensitive
	 * AND extended (white space and #-comments in the pattern are ignored,
	 * so "X-Foo: bar" must be written "X-Foo:\ bar"). NULL or "" = none. */
	const char *skipheader;
	int messageidnodomain; /* --messageidnodomain (set by --domino1/2) */
	int noskipsize;        /* --noskipsize: append ":<RFC822.SIZE>" */
};

struct sy_hdrkey_opts;

/*
 * Validates set and compiles --skipheader once. On success returns 0 and
 * *opts_r, owned by the caller (sy_hdrkey_opts_free()); set and its strings
 * are not referenced afterwards. Returns -1 with *opts_r = NULL and *error_r
 * on a bad field name, on a bad --skipheader (the message quotes the pattern
 * and gives PCRE2's text and offset) or when memory runs out.
 */
int sy_hdrkey_opts_init(struct sy_hdrkey_opts **opts_r, const struct sy_hdrkey_settings *set,
                        const char **error_r);
/* Frees *opts (NULL is fine) and sets *opts = NULL. */
void sy_hdrkey_opts_free(struct sy_hdrkey_opts **opts);

/* 1 when the key uses field name (any case): with ALL, or when name is among
 * the --useheader names. The engine uses it to warn that --addheader copies
 * are recognised on the next run only if Message-Id is used. */
int sy_hdrkey_uses_field(const struct sy_hdrkey_opts *opts, const char *name);

/*
 * Writes the FETCH item that returns the key's input into buf (size bufsize,
 * NUL-terminated): "BODY.PEEK[HEADER.FIELDS (MESSAGE-ID RECEIVED)]" (the
 * names upper-cased, in --useheader order, quoted when not an atom), or
 * SY_HDRKEY_WHOLE_ITEM with ALL. Returns 0, or -1 when buf is too small
 * (then buf holds "" if bufsize > 0).
 */
int sy_hdrkey_fetch_item(const struct sy_hdrkey_opts *opts, char *buf, size_t bufsize);

/*
 * 1 when item_name (NUL-terminated, as a FETCH response names the item) is
 * the answer to a header fetch: "BODY[HEADER]" or "BODY[HEADER.FIELDS ...]"
 * whatever the case, quoting or order of the field list a server echoes.
 * "BODY[HEADER.FIELDS.NOT ...]", a partial "<origin>" and anything else give
 * 0.
 */
int sy_hdrkey_is_header_item(const char *item_name);

/*
 * Computes the key of a message from hdr[0..len) (borrowed; any bytes, NUL
 * included, need not be NUL-terminated): the literal of the header fetch of
 * sy_hdrkey_fetch_item(). size is the message's RFC822.SIZE, used only with
 * --noskipsize (0 = unknown: then, as imapsync does, the length of the
 * concatenated lines stands in for it).
 *
 * Parsing follows Mail::IMAPClient: lines end in LF or CRLF; lines holding
 * only white space are skipped; "name:value" starts a field when name is
 * 1* non-white-space bytes before the first ':'; white space after the colon
 * is skipped; any other line continues the latest field, appended as is
 * (its leading white space included, no separator); lines before the first
 * field are ignored; a line starting with ')' ends the header (IMAPClient
 * takes it for the end of the FETCH response). Fields not in the
 * --useheader set are ignored even if the server sent them.
 *
 * Returns 1 with the key in key_out (NUL-terminated); 0 when no line is left
 * (no wanted field, or all dropped by --skipheader): key_out = "" and the
 * engine may try sy_hdrkey_compute_whole() (--wholeheaderifneeded), then
 * --addheader or sy_hdrkey_content(); -1 with *error_r when memory runs out,
 * MD5 is unavailable or the --skipheader match fails. (imapsync falls back
 * to the whole header only when the fetch gave no field at all; after a 0
 * caused by --skipheader or by fields the server should not have sent, the
 * fallback normally finds the same lines and gives 0 again, at the cost of
 * one round trip.)
 */
int sy_hdrkey_compute(const struct sy_hdrkey_opts *opts, const char *hdr, size_t len, uint32_t size,
                      char key_out[SY_HDRKEY_MAX], const char **error_r);

/*
 * Like sy_hdrkey_compute() for the whole header fetched by the
 * --wholeheaderifneeded fallback (SY_HDRKEY_WHOLE_ITEM), parsed as imapsync's
 * decompose_header does: lines end in LF or CRLF; the first empty line ends
 * the header; "name: value" starts a field, name being every byte before the
 * first ':' (white space included) and exactly one white space byte being
 * required after the colon ("Message-Id:<x>" is skipped); otherwise a line
 * starting with white space continues the latest field as " " + the line
 * without its leading white space; any other line is skipped. Same returns.
 */
int sy_hdrkey_compute_whole(const struct sy_hdrkey_opts *opts, const char *hdr, size_t len,
                            uint32_t size, char key_out[SY_HDRKEY_MAX], const char **error_r);

/*
 * --addheader for a host1 message with no key: writes the key imapsync gives
 * it, md5 of "MESSAGE-ID: <UID@IMAPSYNC>" (--skipheader and
 * --messageidnodomain do not apply; --noskipsize appends ":<size>", with 0
 * standing for the length of that string), and into line_out the header
 * line to put in front of the message: "Message-Id: <UID@imapsync>\r\n".
 * opts may be NULL (the defaults). Returns 0, or -1 with *error_r when MD5
 * is unavailable.
 */
int sy_hdrkey_addheader(const struct sy_hdrkey_opts *opts, uint32_t uid, uint32_t size,
                        char key_out[SY_HDRKEY_MAX], char line_out[SY_HDRKEY_LINE_MAX],
                        const char **error_r);

/*
 * imapferry's own key for a message with no imapsync key, which imapferry
 * copies byte-exact by default instead of ignoring it. hdr_whole[0..len)
 * (borrowed) is its BODY[HEADER]; size its RFC822.SIZE.
 *
 * key = "C:" + base64(md5("imapferry-content-v1\n" + size in decimal + "\n"
 * + lines)) without padding (24 characters), where lines are the header's
 * logical lines (a line starting with SP or TAB continues the previous one;
 * the first empty line ends the header), each normalised as imapsync
 * normalises a value (8-bit -> 'X', TAB -> SP, trimmed, white space runs
 * collapsed) and ASCII upper-cased, empty ones dropped, sorted bytewise and
 * each followed by "\n". No field names are required, so a header without
 * any "name:" line still counts, and the options (--useheader, --skipheader,
 * ...) do not apply: the key only has to match the byte-exact copy on host2,
 * and it survives a server that changes line ends, folding, white space,
 * header case or order. Messages with the same header and size get the same
 * key (an empty header: size only), so the engine must count such keys like
 * duplicates (sy_hdrkey_dup_key()) to copy each of them.
 *
 * Returns 0 with the key in key_out, or -1 with *error_r when memory runs out
 * or MD5 is unavailable.
 */
int sy_hdrkey_content(const char *hdr_whole, size_t len, uint32_t size, char key_out[SY_HDRKEY_MAX],
                      const char **error_r);

/*
 * --syncduplicates: the key of a message that is the n-th duplicate of key in
 * its folder, n being the number of earlier messages of that folder with the
 * same key (imapsync: the first occurrence keeps key, the second is
 * "key#1", the third "key#2"; host2 is numbered the same way, so copies are
 * matched by count). n = 0 copies key. key_out may not overlap key. Returns
 * 0, or -1 when key is too long to take the suffix (never for keys made by
 * this module); then key_out = "".
 */
int sy_hdrkey_dup_key(const char *key, unsigned n, char key_out[SY_HDRKEY_MAX]);

#endif
