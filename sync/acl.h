/*
 * acl.h - --syncacls (RFC 4314 ACLs) and --synclabels/--resynclabels
 * (Gmail's X-GM-LABELS) for imapferry-sync. Private to imapferry-sync.
 *
 * The pure parts (what to send) are separate from the run (sending it), so
 * that they are unit-tested: no server here has Gmail's labels.
 */
#ifndef IMAPFERRY_SYNC_ACL_H
#define IMAPFERRY_SYNC_ACL_H

#include <stddef.h>

#include "sync.h"

/* The rights a server knows, from its capabilities: RFC 2086's "lrswipcda"
 * plus the letters of RIGHTS= (RFC 4314, e.g. "texk"), in out (at least
 * 32 bytes). Returns 1 when caps (space-separated, as CAPABILITY lists
 * them) has ACL, else 0 (out is then ""). */
int sy_acl_known_rights(const char *caps, char *out, size_t size);

/*
 * host1's rights rights1 as host2 can take them: each right that known2
 * lists is kept once, in rights1's order; when known2 has neither k nor x
 * (an RFC 2086 server), k and x become c, and t and e become d (RFC 4314
 * section 2.1.1); anything else (an implementation's own right, a digit)
 * is left out and listed in dropped (may be NULL). out and dropped get at
 * least 32 bytes.
 */
void sy_acl_rights_for(const char *rights1, const char *known2, char *out, size_t size,
                       char *dropped, size_t dsize);

/* 1 when a and b hold the same rights (order and repeats aside). */
int sy_acl_rights_equal(const char *a, const char *b);

/* One identifier and its rights. */
struct sy_acl_entry {
	char *id;
	char *rights;
};

struct sy_acl {
	struct sy_acl_entry *v;
	size_t n;
};

/* Parses a "* ACL mailbox id rights ..." response into acl (appended;
 * strings copied). 0, or -1 when msg is not one. */
int sy_acl_parse(const struct imap_msg *msg, struct sy_acl *acl);
void sy_acl_free(struct sy_acl *acl);

/*
 * The SETACL commands that give host2's folder host1's ACL: one line per
 * identifier of acl1 whose rights (as sy_acl_rights_for() with known2)
 * differ from acl2's, "SETACL <mailbox2> <id> <rights>" with the IMAP
 * quoting of astrings, NUL-separated in *cmds_r (malloc'd, ncmds_r
 * commands). The owner user1's own entry is given to user2 (not to user1,
 * who may not exist on host2). host2 identifiers that host1 does not have
 * are left alone (never deleted). notes (may be NULL) gets one line per
 * right left out. Returns 0, or -1 when memory runs out.
 */
int sy_acl_commands(const struct sy_acl *acl1, const struct sy_acl *acl2, const char *known2,
                    const char *mailbox2, const char *user1, const char *user2, char **cmds_r,
                    size_t *ncmds_r, char *notes, size_t nsize);

/* --syncacls for every folder of the plan that exists on host2 (or would,
 * under --dry). Says once and does nothing when a side lacks ACL. */
void sy_acl_sync(struct sy_run *r, const struct sy_plan *plan);

/* --- Gmail labels --- */

/*
 * The X-GM-LABELS a host2 copy gets, from the host1 message's labels
 * (labels1: a parsed list; count entries), found in host1 folder folder1:
 * the label naming folder1 itself is left out (the copy is in that folder
 * already), as are Gmail's system labels other than \Important and
 * \Starred ("\Inbox" stays when folder1 is not INBOX, so that the copy
 * also shows in the inbox). Each user label is given the name host2 uses
 * for the folder (map, may be NULL: the name as is). The result, "(a "b c"
 * \Starred)" with astring quoting, goes to out. Returns the number of
 * labels in it, or -1 when out is too small.
 */
typedef char *sy_label_map_fn(void *aux, const char *name1);
int sy_labels_for(const char *const *labels1, size_t count, const char *folder1,
                  sy_label_map_fn *map, void *aux, char *out, size_t size);

/* "UID STORE <uid> +X-GM-LABELS.SILENT <list>" (--synclabels, after a
 * copy) or "UID STORE <uid> X-GM-LABELS.SILENT <list>" (--resynclabels:
 * the list replaces host2's) into out. Returns its length or -1. */
int sy_labels_store_cmd(unsigned uid, const char *list, int replace, char *out, size_t size);

/* --synclabels/--resynclabels need Gmail on both sides: 1 when both
 * advertise X-GM-EXT-1, else 0 after saying why they are off (FETCH
 * X-GM-LABELS breaks other servers). */
int sy_labels_usable(struct sy_run *r);

struct sy_msgs;

/*
 * After a folder pass with labels usable (sy_labels_usable()): host1's
 * X-GM-LABELS of the messages this pass copied (--synclabels, known by
 * their APPENDUID) and of those already on host2 (--resynclabels) are
 * fetched, and host2's copies get the labels they lack (sy_labels_for()),
 * "UID STORE uid2 +X-GM-LABELS.SILENT (...)"; labels are only added, never
 * taken away (a removed label would take the copy out of that folder).
 * Both folders must be selected.
 */
void sy_labels_folder(struct sy_run *r, const struct sy_folder *f, const struct sy_msgs *m1,
                      const struct sy_msgs *m2);

#endif
