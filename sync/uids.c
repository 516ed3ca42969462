/*
 * uids.c - lists of UIDs: collected from "* SEARCH" answers, sorted,
 * looked up (shared by the incremental pass, selection and deletion).
 */
#include <stdlib.h>
#include <string.h>

#include "msgs.h"

int sy_u32_cmp(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

void sy_uids_add(struct sy_uids *u, uint32_t uid)
{
	if (u->n == u->cap) {
		u->cap = u->cap ? u->cap * 2 : 256;
		u->v = realloc(u->v, u->cap * sizeof(*u->v));
		if (u->v == NULL)
			abort();
	}
	u->v[u->n++] = uid;
}

void sy_on_search(struct imap_client *cl, const struct imap_msg *msg, void *aux)
{
	struct sy_uids *u = aux;

	(void)cl;
	if (msg->name == NULL || strcmp(msg->name, "SEARCH") != 0)
		return;
	for (const struct imap_arg *a = msg->args; a != NULL; a = a->next) {
		uint32_t uid;

		if (imap_arg_get_u32(a, &uid) == 0)
			sy_uids_add(u, uid);
	}
}

void sy_uids_sort(struct sy_uids *u)
{
	if (u->n > 1) /* v may be NULL when empty, which qsort() must not get */
		qsort(u->v, u->n, sizeof(*u->v), sy_u32_cmp);
}

int sy_uids_has(const struct sy_uids *u, uint32_t uid)
{
	return u->n > 0 && bsearch(&uid, u->v, u->n, sizeof(*u->v), sy_u32_cmp) != NULL;
}

void sy_uids_free(struct sy_uids *u)
{
	free(u->v);
	memset(u, 0, sizeof(*u));
}
