/*
 * flags.h - imapsync's flag pipeline (docs/imapsync-behaviour.md section 2),
 * with imapferry's fixes to its comparison.
 *
 * Host1 flags go to host2 (APPEND flag list, --resyncflags STORE) through:
 *   1. drop \Recent (RFC 3501 2.3.2: no client can set it);
 *   2. --filterbuggyflags (off by default): drop the flags servers reject
 *      (SY_FLAGS_BUGGY), case-insensitively;
 *   3. each --regexflag in order: a Perl "s/pattern/replacement/modifiers"
 *      applied to the space-joined list, which is then split on white space;
 *   4. --flagscase (default on): \Answered \Flagged \Deleted \Seen \Draft
 *      get that case whatever case host1 used; other flags are kept as they
 *      are;
 *   5. PERMANENTFLAGS of host2 (--filterflags, default on): when host2 sent
 *      PERMANENTFLAGS without \*, only the flags it lists survive.
 * The result is written "(\Seen $Label1)": duplicates removed
 * (case-insensitively, the first spelling kept), and every token that is not
 * a valid flag (RFC 3501: flag-keyword = atom, flag-extension = "\" atom) or
 * is \Recent dropped, because one bad flag makes the server reject the whole
 * APPEND or STORE with BAD (imapsync sends it and loses the message).
 *
 * Differences from imapsync, on purpose:
 *   - comparisons are case-insensitive, as flag names are (RFC 3501 2.3.2):
 *     sy_flags_equal() sees no difference between $MDNSent and $MdnSent, so
 *     a keyword whose case differs no longer churns a STORE on every run
 *     (imapsync #227); \Recent on host2 is ignored, not a difference; the
 *     PERMANENTFLAGS filter matches case-insensitively;
 *   - step 2 drops whole flags, where imapsync removes the names as
 *     substrings (\JunkMail would become the keyword "Mail");
 *   - a --regexflag with the e modifier (Perl code) is refused at start-up;
 *     an empty pattern means the empty regex, not Perl's "last successful
 *     pattern" (imapsync's FAQ uses "s,,\\Seen ," to add \Seen).
 *
 * --regexflag details: the s/// syntax, modifiers and replacement rules are
 * regex.h's (sy_subst_parse(), shared with --regextrans2). Each --regexflag
 * is tried on " " at start-up, as imapsync does, so a bad replacement is
 * reported before the first message.
 *
 * Error strings returned through error_r live in a thread-local buffer
 * (regex.c's for regex errors) that stays valid until the next sy_flags_*
 * or regex.h call in the same thread. An opts object is read-only after
 * sy_flags_opts_init() and may be shared by threads.
 */
#ifndef IMAPFERRY_SYNC_FLAGS_H
#define IMAPFERRY_SYNC_FLAGS_H

#include <stddef.h>

/* --filterbuggyflags: the flags behind "BAD Invalid system flag" and
 * "NO APPEND Invalid flag list" (docs section 2), matched
 * case-insensitively. */
#define SY_FLAGS_BUGGY                                                                             \
	"\\RECEIPTCHECKED \\JUNK \\Indexed \\X-EON-HAS-ATTACHMENT \\UNSEEN \\ATTACHED "            \
	"\\X-HAS-ATTACH \\FORWARDED \\FORWARD \\X-FORWARDED \\$FORWARDED \\PRIORITY \\READRCPT"

struct sy_flags_settings {
	/* --regexflag values "s/pat/repl/mods", applied in order; borrowed for
	 * the sy_flags_opts_init() call. */
	const char *const *regexflag;
	size_t regexflag_count;
	int filterbuggyflags; /* --filterbuggyflags */
	int noflagscase;      /* --noflagscase */
	int nofilterflags;    /* --nofilterflags */
};

struct sy_flags_opts;

/*
 * Parses and compiles every --regexflag once. On success returns 0 and
 * *opts_r, owned by the caller (sy_flags_opts_free()); set is not referenced
 * afterwards. set may be NULL (the defaults). Returns -1 with *opts_r = NULL
 * and *error_r on a malformed s/// or a bad regex, e.g.
 *   --regexflag "s/(/x/": missing closing parenthesis at offset 1 of pattern "("
 * or when memory runs out.
 */
int sy_flags_opts_init(struct sy_flags_opts **opts_r, const struct sy_flags_settings *set,
                       const char **error_r);
/* Frees *opts (NULL is fine) and sets *opts = NULL. */
void sy_flags_opts_free(struct sy_flags_opts **opts);

/*
 * The host1 pipeline above. flags[0..count) are the message's FLAGS on host1
 * (borrowed, NUL-terminated, as parsed from FETCH). permflags[0..perm_count)
 * are the flags of host2's PERMANENTFLAGS for the target folder (borrowed);
 * NULL / 0 when host2 sent none (nothing filtered; imapsync does not filter
 * an empty list either). On success returns 0 and *out_r, "(...)" (maybe
 * "()"), which the caller owns (free()); *dropped_r (may be NULL) = the
 * number of invalid tokens dropped, for a warning. Returns -1 with *out_r =
 * NULL and *error_r when a --regexflag fails at run time (PCRE2's text) or
 * memory runs out.
 */
int sy_flags_for_host2(const struct sy_flags_opts *opts, const char *const *flags, size_t count,
                       const char *const *permflags, size_t perm_count, char **out_r,
                       size_t *dropped_r, const char **error_r);

/*
 * Writes flags[0..count) (borrowed) as "(...)" into *out_r (caller frees),
 * with no filtering: for host2 flags as fetched. Returns 0, or -1 with
 * *out_r = NULL when memory runs out.
 */
int sy_flags_join(const char *const *flags, size_t count, char **out_r);

/*
 * 1 when the flag lists a and b (NUL-terminated; "(...)" or bare,
 * white-space separated) hold the same flags: order and duplicates do not
 * matter, \Recent is ignored, and names are compared case-insensitively
 * (RFC 3501 2.3.2), system flags and keywords alike. 0 otherwise.
 */
int sy_flags_equal(const char *a, const char *b);

/*
 * --resyncflags for a matched pair: h1 is sy_flags_for_host2() of the host1
 * message, h2 the host2 message's flags (sy_flags_join()). When they differ
 * (sy_flags_equal() is 0) returns 1 and *store_r = "FLAGS.SILENT (...)" with
 * h1's flags sorted bytewise, to send as "UID STORE <uid2> <store_r>": an
 * exact replace, as imapsync does, so flags added on host2 are removed; the
 * caller frees it. Returns 0 with *store_r = NULL when nothing is to be sent,
 * -1 with *store_r = NULL when memory runs out.
 */
int sy_flags_store(const char *h1, const char *h2, char **store_r);

#endif
