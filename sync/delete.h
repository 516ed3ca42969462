/*
 * delete.h - imapsync's deletion options (issue 8), the safe way:
 * --delete1 (with --expunge1, --expungeaftereach, --delete1emptyfolders),
 * --delete2 (with --delete2duplicates, --expunge2, --uidexpunge2 and
 * imapferry's --maxdelete2/--forcedelete2 cap) and the folder regexes of
 * --delete2foldersonly/--delete2foldersbutnot. Private to imapferry-sync.
 *
 * The rules every caller keeps:
 *  - a host1 message is deleted only once its copy is confirmed on host2
 *    (identified there, or APPENDUID of this run);
 *  - nothing is deleted in a folder pair whose listing, SEARCH or header
 *    fetch failed or came back incomplete on either side;
 *  - --delete2 deletes at most --maxdelete2 percent (50) of a host2
 *    folder's messages unless --forcedelete2, and says why it did not;
 *  - only the UIDs chosen are expunged (UID EXPUNGE, UIDPLUS), unless the
 *    user asked for a folder EXPUNGE (--expunge1/--expunge2 given);
 *  - INBOX is never deleted; --dry prints each deletion with imapsync's
 *    "(not really since --dry mode)".
 */
#ifndef IMAPFERRY_SYNC_DELETE_H
#define IMAPFERRY_SYNC_DELETE_H

#include <stddef.h>
#include <stdint.h>

#include "msgs.h"
#include "sync.h"

struct sy_regex;

/* How marked messages leave a folder. */
enum sy_expunge {
	SY_XP_NONE,   /* marked \Deleted only */
	SY_XP_UIDS,   /* UID EXPUNGE of exactly the marked UIDs (UIDPLUS) */
	SY_XP_FOLDER, /* EXPUNGE: everything \Deleted in the folder */
};

/* imapsync's "\t(not really since --dry mode)" when --dry, else "". */
const char *sy_dry_suffix(const struct sy_run *r);
/* --dry or --dry1: nothing is changed on host1 (deletions, expunges, folder
 * deletions are only said, with sy_dry1_suffix()). */
int sy_dry1(const struct sy_run *r);
const char *sy_dry1_suffix(const struct sy_run *r);

/*
 * Marks uids (n of them, any order; sorted in place) \Deleted on side i
 * (0/1) in the selected folder (named folder in messages), then expunges as
 * xp says. Returns how many were marked, errors recorded (a failed STORE
 * stops there; nothing is expunged after a failure but what was marked).
 */
size_t sy_delete_uids(struct sy_run *r, int i, const char *folder, uint32_t *uids, size_t n,
                      enum sy_expunge xp);

/* The --maxdelete2 cap: 1 when deleting ndel of total host2 messages of
 * folder2 is allowed, else 0 after an error that says why and how to go
 * on (--forcedelete2). */
int sy_delete2_allowed(struct sy_run *r, const char *folder2, size_t ndel, size_t total);

/* Whether the flag list (space-separated atoms) holds \Deleted. */
int sy_flags_has_deleted(const char *flags);

/*
 * After the full pass of f (copy.c): --delete2/--delete2duplicates on
 * host2, the batched part of --delete1 on host1, --expunge1/--expunge2.
 * complete = both sides' lists were read whole (every message answered,
 * every host1 message keyed); when 0 nothing is deleted and the reason is
 * said. ix1 indexes m1's keys (NULL under --useuid: m1's matches decide).
 * host1 must be SELECTed read-write when --delete1 or --expunge1 is on.
 */
void sy_delete_after_pass(struct sy_run *r, const struct sy_folder *f, struct sy_msgs *m1,
                          struct sy_msgs *m2, const struct sy_kindex *ix1, int complete);

/* The side-1 expunge of --delete1: UID EXPUNGE of our UIDs when host1 has
 * UIDPLUS, EXPUNGE when --expunge1 was given, else SY_XP_NONE (--noexpunge1
 * or no UIDPLUS: see sy_delete_after_pass()). */
enum sy_expunge sy_delete1_expunge(const struct sy_run *r);

/* --delete1emptyfolders, after the folder loop: plan folders that are now
 * empty on host1 (EXAMINE and UID SEARCH ALL) and have no child folder are
 * deleted on host1, children first, never INBOX. */
void sy_delete1_empty_folders(struct sy_run *r, const struct sy_plan *plan);

/* imapsync's folder test value ("/^Junk$|^Spam$/i", "m{...}", or a bare
 * regex) compiled for --delete2foldersonly/--delete2foldersbutnot (opt names
 * it in messages). 0 or -1 with *error_r. */
int sy_delete_folder_regex(struct sy_regex **re_r, const char *opt, const char *value,
                           const char **error_r);

/* The start-up check of issue 8's regexes, commands and values (called by
 * the CLI before any connection): 0, or -1 with one message per bad value
 * in err (the CLI exits 64). Also prints the warnings about options that
 * mask others (--search masks --maxage/--minage, as in imapsync). */
int sy_issue8_check(struct sy_run *r, char *err, size_t errsize);

#endif
