/*
 * xdup.h - --skipcrossduplicates: the header keys of the messages this run
 * found in (or copied to) each host2 folder, so that a host1 message whose
 * key is already in another host2 folder is not copied again (imapsync's
 * h2_folders_of_md5). Private to imapferry-sync.
 *
 * Memory grows with the number of distinct keys of the account (one entry
 * of about 100 bytes each), as imapsync's hash does; it lives for one run.
 */
#ifndef IMAPFERRY_SYNC_XDUP_H
#define IMAPFERRY_SYNC_XDUP_H

#include <stddef.h>

struct sy_xdup;

/* An empty set. Never NULL (aborts when memory runs out). */
struct sy_xdup *sy_xdup_new(void);

/* Records that key is in host2 folder folder2 (both copied). A key
 * recorded again for the same folder is not repeated. */
void sy_xdup_add(struct sy_xdup *x, const char *key, const char *folder2);

/* The number of host2 folders key was recorded in other than except (may
 * be NULL), 0 when none. When folders_r is not NULL and the count is not 0,
 * the folder names, ", "-separated, are written there (cut at size). */
size_t sy_xdup_find(const struct sy_xdup *x, const char *key, const char *except, char *folders_r,
                    size_t size);

/* Number of distinct keys recorded. */
size_t sy_xdup_count(const struct sy_xdup *x);

/* Frees *x and sets it to NULL; accepts NULL and *x == NULL. */
void sy_xdup_free(struct sy_xdup **x);

#endif
