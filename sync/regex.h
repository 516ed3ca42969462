/*
 * regex.h - Perl regexes as imapsync's options are written, on PCRE2, and
 * the pure pieces of imapsync's folder naming that apply them
 * (docs/imapsync-behaviour.md sections 2 and 4).
 *
 * Why one module: --regexflag (flags.c) and --regextrans2 (folders.c) share
 * the s/// reader and the substitution engine, and the folder-name rules
 * live here, free of servers, so that unit tests can run them
 * (tests/unit/test_sync_regex.c); folders.c does the I/O around them.
 *
 * s/pattern/replacement/modifiers, as Perl reads it: any non-alphanumeric,
 * non-white-space delimiter, with bracketing pairs s{...}{...} (also ()
 * [] <>, and s{...}/.../); a backslash escapes the delimiter. The pattern
 * is PCRE2 (Perl syntax, bytes, no UTF). Modifiers: g (every match), i, m,
 * s, x, n (as Perl), o (ignored: patterns are compiled once anyway). The
 * replacement is read as Perl reads a double-quoted string, through
 * PCRE2's extended substitution: $1 ${1} $name $& \1 (as $1) \\ \$ \n \t
 * \U \L \u \l \E; a group that did not match or does not exist gives ""
 * (as in Perl). Refused: the e modifier (Perl code). Not emulated: an empty
 * pattern is the empty regex, not Perl's "last successful pattern"; Perl
 * variables in the pattern are not interpolated; Perl's "\u\L$1" (first
 * letter up, the rest down) is PCRE2's (10.42: \u then \L, all down).
 *
 * Error strings returned through error_r live in a thread-local buffer
 * that stays valid until the next call of this module in the same thread.
 * Compiled objects are read-only once made and may be shared by threads.
 */
#ifndef IMAPFERRY_SYNC_REGEX_H
#define IMAPFERRY_SYNC_REGEX_H

#include <stddef.h>

#include "options.h"

/* --- s/pattern/replacement/modifiers --- */

struct sy_subst;

/*
 * Parses and compiles the Perl substitution src (borrowed) given with the
 * option opt ("--regextrans2", used in messages). Also runs the
 * replacement once, so that a bad one ("${1") is reported now rather than
 * at the first match. Returns 0 and *subst_r (caller frees with
 * sy_subst_free()), or -1 with *subst_r = NULL and *error_r, e.g.
 *   --regextrans2 "s/(/x/": missing closing parenthesis at offset 1 of
 *   pattern "("
 */
int sy_subst_parse(struct sy_subst **subst_r, const char *opt, const char *src,
                   const char **error_r);

/*
 * Like sy_subst_parse() for a substitution built by the program: pattern
 * (PCRE2) and replacement (Perl syntax, as above) are given apart, so no
 * delimiter can clash; global = the g modifier. Messages show it as
 * "s,pattern,replacement,". Returns 0 or -1 as sy_subst_parse().
 */
int sy_subst_make(struct sy_subst **subst_r, const char *opt, const char *pattern,
                  const char *replacement, int global, const char **error_r);

/*
 * Applies subst to *str (NUL-terminated, malloc'd, owned by the caller):
 * on success *str is replaced by the result (the old string is freed, even
 * when nothing matched) and 0 is returned; on a matching error (PCRE2's
 * match limit, no memory) returns -1 with *str untouched and *error_r.
 */
int sy_subst_apply(const struct sy_subst *subst, char **str, const char **error_r);

/* The substitution as given (or as shown, for sy_subst_make()); borrowed
 * from subst. */
const char *sy_subst_source(const struct sy_subst *subst);

/* Frees *subst (NULL is fine) and sets *subst = NULL. */
void sy_subst_free(struct sy_subst **subst);

/* --- m/pattern/ (--include, --exclude) --- */

struct sy_regex;

/*
 * Compiles pattern (borrowed) as Perl's /pattern/ without modifiers:
 * unanchored and case-sensitive ("(?i)" inside the pattern still works).
 * opt names the option in messages. Returns 0 and *re_r (free with
 * sy_regex_free()), or -1 with *re_r = NULL and *error_r, e.g.
 *   --include "a(": missing closing parenthesis at offset 2
 */
int sy_regex_compile(struct sy_regex **re_r, const char *opt, const char *pattern,
                     const char **error_r);

/* 1 when re matches somewhere in the NUL-terminated s, 0 when not, -1 on a
 * matching error (match limit, no memory), which callers count as no
 * match. */
int sy_regex_match(const struct sy_regex *re, const char *s);

/* Frees *re (NULL is fine) and sets *re = NULL. */
void sy_regex_free(struct sy_regex **re);

/* s with every byte that is not an ASCII letter or digit backslashed, so
 * that a PCRE2 pattern matches it literally (Perl's quotemeta). The caller
 * frees the result. */
char *sy_regex_quote(const char *s);

/* s with "\" and "$" backslashed, for a literal part of a Perl
 * replacement. The caller frees the result. */
char *sy_regex_quote_repl(const char *s);

/*
 * The start-up check of the folder options' regexes, for the CLI to call
 * after sy_options_check() and before any connection: compiles every
 * --regextrans2 (a Perl s///, run once as sy_subst_parse() does), --include
 * and --exclude. Returns 0, or -1 (the CLI exits SY_EX_USAGE, 64, as
 * imapsync does for a bad regex) with one message per bad value in err
 * (NUL-terminated, lines joined by "\n", cut at errsize), e.g.
 *   --regextrans2 "s/(/x/": missing closing parenthesis at offset 1 of
 *   pattern "("
 * o is only read.
 */
int sy_folders_check_regexes(struct sy_options *o, char *err, size_t errsize);

/* --- Folder names (docs section 4), pure: no server, no output --- */

/* imapsync's guess_separator() without NAMESPACE: the most frequent of
 * "/", "." and "\" in the names (ties in that order), "/" when none. */
char sy_fname_guess_sep(const char *const *names, size_t n);

/* imapsync's guess_prefix(): "INBOX." or "INBOX/" (as spelt, any case)
 * when every name but INBOX starts with it, else "". Borrowed from names
 * (a slice: *len_r bytes of the returned pointer), or "" (static). */
const char *sy_fname_guess_prefix(const char *const *names, size_t n, size_t *len_r);

/* imapsync's sanitize_subfolder(): blanks trimmed at both ends, then only
 * [-_a-zA-Z0-9./ ] kept. NULL (nothing allocated) when the result is
 * empty or s is NULL; else a string the caller frees. */
char *sy_fname_sanitize_subfolder(const char *s);

/*
 * The three --subfolder2 substitutions imapsync puts in front of the
 * --regextrans2 list (set_regextrans2_for_subfolder2), with p2 = prefix2,
 * S = subfolder2 (sanitised), s2 = sep2:
 *   s,^<p2>(.*),<p2>S<s2>$1,   s,^INBOX$,<p2>S<s2>INBOX,   s,^(<p2>){2},<p2>,
 * p2 is matched literally (imapsync pastes it into the regex unquoted, so
 * its "." matches any byte; with real prefixes the results agree).
 * Returns 0 with rx_r[0..2] (caller frees each), or -1 with *error_r.
 */
int sy_fname_subfolder2(struct sy_subst *rx_r[3], const char *prefix2, char sep2,
                        const char *subfolder2, const char **error_r);

/* imapsync's fix_Inbox_INBOX_mapping(), names compared exactly: NULL when
 * both sides list INBOX or both list Inbox; else "s/^INBOX$/Inbox/x" when
 * host1 lists INBOX and host2 Inbox, "s/^Inbox$/INBOX/x" the other way
 * round; else NULL. Static string. */
const char *sy_fname_fix_inbox(const char *const *names1, size_t n1, const char *const *names2,
                               size_t n2);

/* The inputs of imapsync's imap2_folder_name(); all borrowed. */
struct sy_fname_map {
	char sep1, sep2;          /* hierarchy separators */
	const char *prefix1;      /* personal namespace prefixes, "" for none */
	const char *prefix2;      /* (never NULL) */
	const char *subfolder1;   /* sanitised --subfolder1 or NULL */
	int fixslash2;            /* --fixslash2 */
	const struct sy_kv *f1f2; /* --f1f2 host1=host2 pairs */
	size_t f1f2_n;
	const struct sy_kv *automap; /* sy_automap_build() pairs */
	size_t automap_n;
	struct sy_subst *const *rx; /* --regextrans2 list in order (step 6) */
	size_t rx_n;
};

/*
 * The host2 name of host1 folder name1, imapsync's imap2_folder_name(),
 * first match wins:
 *   1. --f1f2 (exact name1) -> the host2 name as is;
 *   2. --automap -> the host2 name as is;
 *   3. --subfolder1: its first occurrence (less a trailing sep1) is cut
 *      out of name1, with one sep1 after it;
 *   4. "" or prefix1 itself -> "INBOX";
 *   5. prefix1 cut from the front; sep2 and sep1 swapped; with fixslash2,
 *      when sep1 is "/" and sep2 is not, a remaining "/" becomes "_";
 *      prefix2 added unless the name is INBOX (any case) - so a host1
 *      "INBOX.x" without prefix1 becomes "<prefix2>INBOX<sep2>x", as in
 *      imapsync (the "INBOX.INBOX.x" of its issue #324);
 *   6. every rx in order.
 * Returns 0 with *name2_r (caller frees), or -1 with *name2_r = NULL and
 * *error_r when a substitution fails at run time.
 */
int sy_fname_map(const struct sy_fname_map *m, const char *name1, char **name2_r,
                 const char **error_r);

/* RFC 6154 special-use roles, in imapsync's order. */
enum sy_role {
	SY_ROLE_NONE,
	SY_ROLE_ALL,
	SY_ROLE_ARCHIVE,
	SY_ROLE_DRAFTS,
	SY_ROLE_FLAGGED,
	SY_ROLE_JUNK,
	SY_ROLE_SENT,
	SY_ROLE_TRASH,
	SY_ROLE_COUNT
};

/* "\All" ... "\Trash"; "" for SY_ROLE_NONE. */
extern const char *const sy_role_names[SY_ROLE_COUNT];

/* The first role among IMAP_LIST_* attrs (imapferry/resp.h), in the order
 * of enum sy_role (imapsync takes the first in the server's order, which
 * the attribute mask does not keep; folders with two roles are rare). */
enum sy_role sy_role_from_attrs(unsigned attrs);

/* imapsync's guess_special(): the role of name, or of name without the
 * first occurrence of prefix, in imapsync's table of usual names
 * (build_possible_special: "Sent Items", "Gesendete Elemente", "Spam",
 * "Deleted Items", ...), exact and case-sensitive; SY_ROLE_NONE if none. */
enum sy_role sy_role_guess(const char *name, const char *prefix);

/* One side for sy_automap_build(); all borrowed. */
struct sy_automap_side {
	const char *host;         /* "Host1" / "Host2", for messages */
	const char *const *names; /* every folder, sorted bytewise */
	const unsigned *attrs;    /* their IMAP_LIST_* attributes */
	size_t n;
	const char *prefix;
};

/* Receives one output line (without the newline). */
typedef void sy_say_cb(void *aux, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * imapsync's automap() for the wanted host1 folders (borrowed): roles from
 * the LIST attributes (first folder per role wins; "Host1: special %-20s =
 * %s" lines through say), then roles guessed from the names ("Host1: X not
 * \Sent because set to Y" for a role already taken), then for each wanted
 * folder the first of: special on both sides; special on host1 and guessed
 * on host2; guessed on host1 and special on host2; guessed on both. Only
 * folders with a role are mapped, never their subfolders. Returns 0 with
 * *map_r (host1 name = host2 name, strings owned by the array; free with
 * sy_automap_free()) and *n_r, or -1 when memory runs out. say may be
 * NULL.
 */
int sy_automap_build(const struct sy_automap_side *h1, const struct sy_automap_side *h2,
                     const char *const *wanted, size_t nwanted, struct sy_kv **map_r, size_t *n_r,
                     sy_say_cb *say, void *aux);

/* Frees a sy_automap_build() array of n pairs; sets *map = NULL. */
void sy_automap_free(struct sy_kv **map, size_t n);

#endif
