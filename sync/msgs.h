/*
 * msgs.h - one side's message list of a folder pass and the operations the
 * full pass (copy.c) and the incremental pass (delta.c) share. Private to
 * imapferry-sync.
 */
#ifndef IMAPFERRY_SYNC_MSGS_H
#define IMAPFERRY_SYNC_MSGS_H

#include <stddef.h>
#include <stdint.h>

#include "hdrkey.h"
#include "imapferry/client.h"
#include "sync.h"

struct sy_msg {
	uint32_t uid, size;
	char *flags; /* space-separated, as the server sent them */
	char *idate; /* INTERNALDATE string */
	char *hdate; /* --idatefromheader: the Date: header as an IMAP date-time */
	char key[SY_HDRKEY_MAX];
	int haskey;    /* 1 key, 0 none yet */
	int dup;       /* a later duplicate within the folder */
	int match;     /* index in the other side + 1, 0 = none */
	int addhdr;    /* --addheader: prepend a Message-Id when copying */
	uint32_t uid2; /* host2 UID once known (match or APPENDUID), for the UID map */
	int del;       /* issue 8: marked \Deleted on its side by this pass */
	int skip;      /* issue 8: not copied (--maxsize, --minsize, ...), still identified */
};

struct sy_msgs {
	struct sy_msg *v;
	size_t n, cap;
	uint32_t exists;
	uint32_t uidvalidity;
	char permflags[512];
	int have_permflags;
	struct sy_run *r;
	int side;
	uint32_t from_uid; /* sy_read_side(): UIDs below are not this pass's */
	int rw;            /* issue 8: SELECTed read-write (--delete1, --expunge1) */
};

struct sy_kindex {
	size_t *slot; /* index + 1, 0 = empty */
	size_t cap;
};

/* The entry for uid, appended when new (UID FETCH answers in UID order). */
struct sy_msg *sy_msgs_get(struct sy_msgs *m, uint32_t uid);
/* The entry for uid, or NULL. */
struct sy_msg *sy_msgs_find(struct sy_msgs *m, uint32_t uid);
void sy_msgs_free(struct sy_msgs *m);
/* A FLAGS list as "\\Seen $x" (atoms, space-separated). Caller frees. */
char *sy_flags_string(const struct imap_arg *list);
/* Untagged handler for SELECT/EXAMINE: EXISTS, UIDVALIDITY, PERMANENTFLAGS
 * into the struct sy_msgs given as aux. */
void sy_on_select(struct imap_client *cl, const struct imap_msg *msg, void *aux);
/* Writes UIDs as a compact set ("1:5,7") into buf; returns the count of
 * UIDs taken from uids[*pos..] (stops near max bytes). */
size_t sy_uid_set(char *buf, size_t max, const uint32_t *uids, size_t n, size_t *pos);
/* Reads flags, dates, sizes and (keys != 0) header keys of side i's messages
 * with UID >= from_uid (1 = all; later ones only: "n:*" also returns the
 * last message even below n, RFC 3501 6.4.8, which is dropped). 0 or -1. */
int sy_read_side(struct sy_run *r, int i, struct sy_msgs *m, int keys, uint32_t from_uid);
/* Marks later duplicates of a key within one side (counted in dup1/dup2). */
void sy_kindex_build(struct sy_kindex *ix, struct sy_msgs *m, struct sy_run *r, int side);
struct sy_msg *sy_kindex_get(const struct sy_kindex *ix, struct sy_msgs *m, const char *key);
/* Counts a host1 message as imapsync does: without a header key
 * (noheader1), a later duplicate (skipped), else identified (ident1): 1. */
int sy_count_host1(struct sy_run *r, const struct sy_msg *e);
/* The host1 UIDs (sorted, caller frees) that the proxy's move hints in
 * Redis say were moved out of the folder canon_from (rk_folder_canon()'s
 * form), to any folder; their count (0: none, or no Redis). */
size_t sy_hints_moved_from(struct sy_run *r, const char *canon_from, uint32_t **uids_r);
/* Copies m1's keyed, non-duplicate, unmatched messages to host2 (pipelined
 * fetch + APPEND); APPENDUIDs land in sy_msg.uid2. */
void sy_copy_messages(struct sy_run *r, const struct sy_folder *f, struct sy_msgs *m1,
                      struct sy_msgs *m2);
/* Matched messages whose flags differ: one UID STORE per distinct set. */
void sy_resync_flags(struct sy_run *r, const struct sy_folder *f, struct sy_msgs *m1,
                     struct sy_msgs *m2);
/* Records the folder's UID map from m1's matches and APPENDUIDs. */
void sy_record_map(struct sy_run *r, const struct sy_folder *f, const struct sy_msgs *m1,
                   const struct sy_msgs *m2);

/* --- uids.c: UID lists --- */

struct sy_uids {
	uint32_t *v;
	size_t n, cap;
};
/* qsort/bsearch comparator of uint32_t. */
int sy_u32_cmp(const void *a, const void *b);
void sy_uids_add(struct sy_uids *u, uint32_t uid);
/* Untagged handler: the UIDs of "* SEARCH ..." into the struct sy_uids aux. */
void sy_on_search(struct imap_client *cl, const struct imap_msg *msg, void *aux);
void sy_uids_sort(struct sy_uids *u);
/* 1 when uid is in u (sorted). */
int sy_uids_has(const struct sy_uids *u, uint32_t uid);
void sy_uids_free(struct sy_uids *u);

#endif
