/* xdup.c - see xdup.h. An open-addressing hash of keys; each entry lists
 * the indexes of the host2 folders (interned once) it was seen in. */
#include "xdup.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imapferry/xalloc.h"

#define XDUP_MIN_SLOTS 1024 /* initial table size, a power of two */

struct xdup_entry {
	char *key;      /* NULL: empty slot */
	uint32_t *fold; /* folder indexes */
	uint32_t nfold;
};

struct sy_xdup {
	struct xdup_entry *slot;
	size_t cap, n; /* cap: a power of two, n: keys */
	char **folders;
	size_t nfolders, capfolders;
};

static uint64_t hash_str(const char *s)
{
	uint64_t h = 1469598103934665603ULL; /* FNV-1a */

	for (; *s != '\0'; s++) {
		h ^= (unsigned char)*s;
		h *= 1099511628211ULL;
	}
	return h;
}

struct sy_xdup *sy_xdup_new(void)
{
	struct sy_xdup *x = xcalloc(1, sizeof(*x));

	x->cap = XDUP_MIN_SLOTS;
	x->slot = xcalloc(x->cap, sizeof(*x->slot));
	return x;
}

static struct xdup_entry *lookup(const struct sy_xdup *x, const char *key)
{
	size_t i = (size_t)hash_str(key) & (x->cap - 1);

	while (x->slot[i].key != NULL && strcmp(x->slot[i].key, key) != 0)
		i = (i + 1) & (x->cap - 1);
	return &x->slot[i];
}

static void grow(struct sy_xdup *x)
{
	struct xdup_entry *old = x->slot;
	size_t oldcap = x->cap;

	x->cap *= 2;
	x->slot = xcalloc(x->cap, sizeof(*x->slot));
	for (size_t i = 0; i < oldcap; i++) {
		if (old[i].key != NULL)
			*lookup(x, old[i].key) = old[i];
	}
	free(old);
}

static uint32_t folder_index(struct sy_xdup *x, const char *folder2)
{
	/* few folders, looked up once per message: a linear search from the
	 * most recent one (the folder being synced) */
	for (size_t i = x->nfolders; i > 0; i--) {
		if (strcmp(x->folders[i - 1], folder2) == 0)
			return (uint32_t)(i - 1);
	}
	if (x->nfolders == x->capfolders) {
		x->capfolders = x->capfolders ? x->capfolders * 2 : 16;
		x->folders = realloc(x->folders, x->capfolders * sizeof(*x->folders));
		if (x->folders == NULL)
			abort();
	}
	x->folders[x->nfolders] = xstrdup(folder2);
	return (uint32_t)x->nfolders++;
}

void sy_xdup_add(struct sy_xdup *x, const char *key, const char *folder2)
{
	uint32_t f = folder_index(x, folder2);
	struct xdup_entry *e;

	if ((x->n + 1) * 4 > x->cap * 3)
		grow(x);
	e = lookup(x, key);
	if (e->key == NULL) {
		e->key = xstrdup(key);
		x->n++;
	}
	for (uint32_t i = 0; i < e->nfold; i++) {
		if (e->fold[i] == f)
			return;
	}
	e->fold = realloc(e->fold, (e->nfold + 1) * sizeof(*e->fold));
	if (e->fold == NULL)
		abort();
	e->fold[e->nfold++] = f;
}

size_t sy_xdup_find(const struct sy_xdup *x, const char *key, const char *except, char *folders_r,
                    size_t size)
{
	const struct xdup_entry *e = lookup(x, key);
	size_t count = 0, len = 0;

	if (folders_r != NULL && size > 0)
		folders_r[0] = '\0';
	if (e->key == NULL)
		return 0;
	for (uint32_t i = 0; i < e->nfold; i++) {
		const char *name = x->folders[e->fold[i]];

		if (except != NULL && strcmp(name, except) == 0)
			continue;
		count++;
		if (folders_r != NULL && len < size) {
			int w = snprintf(folders_r + len, size - len, "%s%s", count > 1 ? ", " : "",
			                 name);

			if (w > 0)
				len += (size_t)w;
		}
	}
	return count;
}

size_t sy_xdup_count(const struct sy_xdup *x)
{
	return x != NULL ? x->n : 0;
}

void sy_xdup_free(struct sy_xdup **xp)
{
	struct sy_xdup *x;

	if (xp == NULL || (x = *xp) == NULL)
		return;
	for (size_t i = 0; i < x->cap; i++) {
		free(x->slot[i].key);
		free(x->slot[i].fold);
	}
	for (size_t i = 0; i < x->nfolders; i++)
		free(x->folders[i]);
	free(x->folders);
	free(x->slot);
	free(x);
	*xp = NULL;
}
