/*
 * sizes.c - imapsync's folder-size tables (--foldersizes, on by default;
 * --nofoldersizes, --justfoldersizes, --nofoldersizesatend): per folder the
 * size, message count and biggest message on each side and their
 * difference, then totals. Each side's folders are read with EXAMINE (never
 * changing anything) and one UID FETCH of RFC822.SIZE.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "imapferry/resp.h"
#include "sync.h"

struct fsize {
	int exists;
	uint32_t exists_count;
	uint64_t msgs, bytes, biggest;
};

static void on_examine(struct imap_client *cl, const struct imap_msg *msg, void *aux)
{
	struct fsize *s = aux;

	(void)cl;
	if (msg->has_number && msg->name != NULL && strcmp(msg->name, "EXISTS") == 0)
		s->exists_count = msg->number;
}

static void on_size(struct imap_client *cl, const struct imap_msg *msg, void *aux)
{
	struct fsize *s = aux;
	const struct imap_arg *items;
	uint32_t size;

	(void)cl;
	if (imap_fetch_items(msg, &items) < 0 ||
	    imap_arg_get_u32(imap_fetch_get(items, "RFC822.SIZE"), &size) < 0)
		return;
	s->msgs++;
	s->bytes += size;
	if (size > s->biggest)
		s->biggest = size;
}

static void folder_size(struct sy_run *r, int side, const char *name, struct fsize *s)
{
	memset(s, 0, sizeof(*s));
	if (sy_cmd(r, side, NULL, on_examine, NULL, s, "EXAMINE %m", name) != IMAP_STATUS_OK)
		return;
	s->exists = 1;
	if (s->exists_count > 0)
		sy_cmd(r, side, NULL, on_size, NULL, s, "UID FETCH 1:* (RFC822.SIZE)");
}

static void size_line(struct sy_run *r, int side, const char *pos, const char *name,
                      const struct fsize *s)
{
	char n[300];

	snprintf(n, sizeof(n), "[%s]", name);
	if (!s->exists) {
		sy_out(r, "Host%d folder %7s %-35s does not exist yet", side + 1, pos, n);
		return;
	}
	sy_out(r, "Host%d folder %7s %-35s Size: %9llu Messages: %5llu Biggest: %9llu", side + 1,
	       pos, n, (unsigned long long)s->bytes, (unsigned long long)s->msgs,
	       (unsigned long long)s->biggest);
}

static void totals(struct sy_run *r, int side, size_t nfolders, const struct fsize *t, double secs)
{
	char b[64];

	sy_out(r, "Host%d Nb folders:           %11zu folders", side + 1, nfolders);
	sy_out(r, "Host%d Nb messages:          %11llu messages", side + 1,
	       (unsigned long long)t->msgs);
	sy_out(r, "Host%d Total size:           %11llu bytes (%s)", side + 1,
	       (unsigned long long)t->bytes, sy_bytes(b, sizeof(b), t->bytes));
	sy_out(r, "Host%d Biggest message:      %11llu bytes (%s)", side + 1,
	       (unsigned long long)t->biggest, sy_bytes(b, sizeof(b), t->biggest));
	sy_out(r, "Host%d Time spent computing sizes: %.1f seconds", side + 1, secs);
}

void sy_folder_sizes(struct sy_run *r, const struct sy_plan *plan, int at_end)
{
	struct fsize t[2];
	struct timespec t0, t1;
	double secs;

	memset(t, 0, sizeof(t));
	clock_gettime(CLOCK_MONOTONIC, &t0);
	sy_out(r, "++++ Calculating sizes%s", at_end ? " at end" : "");
	for (size_t k = 0; k < plan->n && !r->stop; k++) {
		const struct sy_folder *f = &plan->f[k];
		struct fsize s1, s2;
		char pos[48];

		snprintf(pos, sizeof(pos), "%u/%u", (unsigned)(k + 1), (unsigned)plan->n);
		folder_size(r, 0, f->name1, &s1);
		folder_size(r, 1, f->name2, &s2);
		size_line(r, 0, pos, f->name1, &s1);
		size_line(r, 1, pos, f->name2, &s2);
		sy_out(r, "Host2-Host1 %7s %-35s       %9lld           %5lld", "", "",
		       (long long)s2.bytes - (long long)s1.bytes,
		       (long long)s2.msgs - (long long)s1.msgs);
		for (int i = 0; i < 2; i++) {
			const struct fsize *s = i == 0 ? &s1 : &s2;

			t[i].msgs += s->msgs;
			t[i].bytes += s->bytes;
			if (s->biggest > t[i].biggest)
				t[i].biggest = s->biggest;
		}
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	totals(r, 0, plan->n, &t[0], secs);
	totals(r, 1, plan->n, &t[1], secs);
	r->sizes_done |= at_end ? 2 : 1;
	r->diff_msgs[at_end] = (long long)t[1].msgs - (long long)t[0].msgs;
	r->diff_bytes[at_end] = (long long)t[1].bytes - (long long)t[0].bytes;
}
