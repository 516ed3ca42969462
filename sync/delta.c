/*
 * delta.c - the incremental pass of a folder pair (issue 4; the algorithm
 * of ../shared/docs/replication-design.md section 4, step 3).
 *
 * It runs when the stored state says host1 is the same mailbox moved only
 * forward and host2 is exactly as our last pass left it
 * (sy_state_delta_base()), and the stored UID map covers these two
 * UIDVALIDITYs. Then host1's changes are asked for, not its whole content:
 *
 *   - QRESYNC (RFC 7162 3.2.5): ENABLE QRESYNC once per connection, then
 *     EXAMINE X (QRESYNC (uidvalidity modseq)): one reply gives the UIDs
 *     expunged since (VANISHED (EARLIER)) and the flags of every message
 *     changed since (FETCH UID FLAGS);
 *   - CONDSTORE only: EXAMINE X, then UID FETCH 1:* (UID FLAGS)
 *     (CHANGEDSINCE modseq); expunges are seen by counting (MESSAGES below
 *     the old UIDNEXT equal to the stored count means none) and otherwise
 *     listed with UID SEARCH over the old UID range;
 *   - new messages: UID FETCH <old UIDNEXT>:* of flags, dates, sizes and
 *     header keys, then the full pass's copy machinery (pipelined fetch and
 *     APPEND); messages of that range already in the map (they arrived
 *     during the last pass, which copied them) are not copied again;
 *   - flags: host2's current flags of the changed messages are read in one
 *     UID FETCH, and the differences go out as one UID STORE per distinct
 *     flag set (sy_resync_flags(), as in the full pass).
 *
 * Host2 must offer UIDPLUS so every copy extends the map (APPENDUID);
 * without it, or when host2's UIDVALIDITY is not the map's, the full pass
 * runs instead. Without --delete2 nothing is deleted on the strength of the
 * state: a vanished host1 message leaves the map and is counted as "on
 * host2, not on host1", as the full pass would count it. With --delete2
 * its host2 copy, found through the map, is marked \Deleted and expunged
 * by UID (exactly those UIDs); with CONDSTORE only, the UID list must
 * agree with the message count first and the --maxdelete2 cap applies
 * (with QRESYNC the server names the expunged UIDs itself: no cap).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "delete.h"
#include "imapferry/resp.h"
#include "imapferry/rkeys.h"
#include "msgs.h"
#include "msgsel.h"
#include "sync.h"

struct changed {
	uint32_t uid;
	size_t seq; /* arrival order: a later report of a UID wins */
	char *flags;
};

struct delta {
	struct sy_run *r;
	struct sy_msgs m1; /* host1: EXAMINE facts, then the new messages */
	uint64_t hms;      /* HIGHESTMODSEQ from the EXAMINE */
	struct changed *ch;
	size_t nch, capch;
	struct imap_seqset vanished; /* QRESYNC: VANISHED (EARLIER) sets, merged */
	struct sy_uids present;      /* CONDSTORE: UID SEARCH result */
};

/* Reports are appended as they come (a UID may be reported twice: the
 * QRESYNC EXAMINE and a live FETCH); changed_finish() sorts them by UID
 * and keeps each UID's last one, so nothing here is quadratic. */
static void changed_add(struct delta *d, uint32_t uid, const char *flags)
{
	if (d->nch == d->capch) {
		d->capch = d->capch ? d->capch * 2 : 64;
		d->ch = realloc(d->ch, d->capch * sizeof(*d->ch));
		if (d->ch == NULL)
			abort();
	}
	d->ch[d->nch].uid = uid;
	d->ch[d->nch].seq = d->nch;
	d->ch[d->nch].flags = strdup(flags);
	if (d->ch[d->nch].flags == NULL)
		abort();
	d->nch++;
}

static int changed_cmp(const void *a, const void *b)
{
	const struct changed *x = a, *y = b;

	if (x->uid != y->uid)
		return x->uid < y->uid ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static void changed_finish(struct delta *d)
{
	size_t n = 0;

	if (d->nch == 0)
		return; /* d->ch may be NULL: qsort() wants a real array */
	qsort(d->ch, d->nch, sizeof(*d->ch), changed_cmp);
	for (size_t i = 0; i < d->nch; i++) {
		if (i + 1 < d->nch && d->ch[i + 1].uid == d->ch[i].uid) {
			free(d->ch[i].flags); /* a later report follows */
			continue;
		}
		d->ch[n++] = d->ch[i];
	}
	d->nch = n;
}

static void on_fetch_flags(struct delta *d, const struct imap_msg *msg)
{
	const struct imap_arg *items, *v;
	uint32_t uid;
	char *fl;

	if (imap_fetch_items(msg, &items) < 0 ||
	    imap_arg_get_u32(imap_fetch_get(items, "UID"), &uid) < 0 ||
	    (v = imap_fetch_get(items, "FLAGS")) == NULL || v->type != IMAP_ARG_LIST)
		return;
	fl = sy_flags_string(v);
	changed_add(d, uid, fl);
	free(fl);
}

static void merge_vanished(struct delta *d, const char *set, size_t len)
{
	struct imap_seqset s;
	const char *err;

	if (imap_seqset_parse(set, len, &s, &err) < 0)
		return;
	d->vanished.r =
	        realloc(d->vanished.r, (d->vanished.count + s.count + 1) * sizeof(*d->vanished.r));
	if (d->vanished.r == NULL)
		abort();
	memcpy(d->vanished.r + d->vanished.count, s.r, s.count * sizeof(*s.r));
	d->vanished.count += s.count;
	imap_seqset_free(&s);
}

static void on_examine(struct imap_client *cl, const struct imap_msg *msg, void *aux)
{
	struct delta *d = aux;

	sy_on_select(cl, msg, &d->m1);
	if (msg->code != NULL && strcmp(msg->code, "HIGHESTMODSEQ") == 0)
		imap_arg_get_u64(msg->code_args, &d->hms);
	if (msg->name == NULL)
		return;
	if (strcmp(msg->name, "FETCH") == 0) {
		on_fetch_flags(d, msg);
	} else if (strcmp(msg->name, "VANISHED") == 0) {
		const struct imap_arg *a = msg->args;

		/* "* VANISHED (EARLIER) 3:5,9" or, for a live expunge, "* VANISHED 7" */
		if (a != NULL && a->type == IMAP_ARG_LIST)
			a = a->next;
		if (a != NULL && a->type == IMAP_ARG_ATOM)
			merge_vanished(d, a->str, a->len);
	}
}

static int in_seqset(const struct imap_seqset *s, uint32_t v)
{
	for (size_t i = 0; i < s->count; i++) {
		if (v >= s->r[i].lo && v <= s->r[i].hi)
			return 1;
	}
	return 0;
}

static const struct sy_uidpair *map_find(const struct sy_uidpair *map, size_t n, uint32_t uid1)
{
	size_t lo = 0, hi = n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (map[mid].uid1 < uid1)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < n && map[lo].uid1 == uid1 ? &map[lo] : NULL;
}

static void delta_free(struct delta *d)
{
	for (size_t i = 0; i < d->nch; i++)
		free(d->ch[i].flags);
	free(d->ch);
	free(d->vanished.r);
	sy_uids_free(&d->present);
	sy_msgs_free(&d->m1);
}

/* Host1's side: EXAMINE with QRESYNC, or EXAMINE + CHANGEDSINCE, and the
 * UIDs still present below the old UIDNEXT when they must be counted.
 * Returns 0, -1 on a failure (recorded), 1 when the mailbox is not the
 * stored one after all (full pass). */
static int read_host1(struct delta *d, const struct sy_folder *f, const struct sy_delta_base *b,
                      int qresync)
{
	struct sy_run *r = d->r;
	struct sy_res res, enres;
	struct sy_call en;
	enum imap_status st;
	int enabling = 0;

	if (qresync && !r->side[0].qresync) {
		/* pipelined with the EXAMINE: if ENABLE failed, so does it */
		sy_cmd_send(r, 0, &en, &enres, NULL, NULL, NULL, "ENABLE QRESYNC");
		enabling = 1;
	}
	if (qresync)
		st = sy_cmd(r, 0, &res, on_examine, NULL, d, "EXAMINE %m (QRESYNC (%u %U))",
		            f->name1, b->was[0].uidvalidity, b->was[0].highestmodseq);
	else
		st = sy_cmd(r, 0, &res, on_examine, NULL, d, "EXAMINE %m", f->name1);
	if (enabling) {
		if (sy_cmd_wait(r, 0, &en) != IMAP_STATUS_OK)
			return 1; /* no QRESYNC after all: the full pass */
		r->side[0].qresync = 1;
	}
	if (st != IMAP_STATUS_OK) {
		sy_error(r, SY_ERR_SELECT, "Host1 folder %s: Could not select: %s", f->name1,
		         res.text);
		return -1;
	}
	if (d->m1.uidvalidity != b->was[0].uidvalidity)
		return 1; /* recreated between STATUS and EXAMINE */
	if (!qresync && d->m1.exists > 0 &&
	    sy_cmd(r, 0, &res, on_examine, NULL, d, "UID FETCH 1:* (UID FLAGS) (CHANGEDSINCE %U)",
	           b->was[0].highestmodseq) != IMAP_STATUS_OK) {
		sy_error(r, SY_ERR_FETCH, "Host1 folder %s: could not fetch changed flags: %s",
		         f->name1, res.text);
		return -1;
	}
	return 0;
}

/* CONDSTORE only: the UIDs below the old UIDNEXT, when the count says some
 * went (QRESYNC's VANISHED makes this unnecessary). */
static int read_present(struct delta *d, const struct sy_folder *f, const struct sy_delta_base *b)
{
	struct sy_res res;
	uint32_t old_present = d->m1.exists - (uint32_t)d->m1.n;

	if (b->was[0].uidnext <= 1 || old_present == b->was[0].messages)
		return 0;
	if (sy_cmd(d->r, 0, &res, sy_on_search, NULL, &d->present, "UID SEARCH UID 1:%u",
	           b->was[0].uidnext - 1) != IMAP_STATUS_OK) {
		sy_error(d->r, SY_ERR_FETCH, "Host1 folder %s: could not list UIDs: %s", f->name1,
		         res.text);
		return -1;
	}
	sy_uids_sort(&d->present);
	return 1;
}

static void on_flags2(struct imap_client *cl, const struct imap_msg *msg, void *aux)
{
	struct sy_msgs *m2 = aux;
	const struct imap_arg *items, *v;
	uint32_t uid;
	struct sy_msg *e;

	(void)cl;
	if (imap_fetch_items(msg, &items) < 0 ||
	    imap_arg_get_u32(imap_fetch_get(items, "UID"), &uid) < 0 ||
	    (v = imap_fetch_get(items, "FLAGS")) == NULL || v->type != IMAP_ARG_LIST)
		return;
	e = sy_msgs_get(m2, uid);
	free(e->flags);
	e->flags = sy_flags_string(v);
}

/* Changed flags of mapped messages: host2's current flags in one UID
 * FETCH, then the differences (sy_resync_flags()). */
static void apply_flags(struct delta *d, const struct sy_folder *f, struct sy_msgs *m2,
                        const struct sy_uidpair *map, size_t nmap, uint64_t *nflags_r)
{
	struct sy_run *r = d->r;
	struct sy_msgs c1;
	uint32_t *uids2 = malloc((d->nch + 1) * sizeof(*uids2));
	size_t n2 = 0, pos = 0;
	char set[8192];

	memset(&c1, 0, sizeof(c1));
	c1.r = r;
	if (uids2 == NULL)
		abort();
	for (size_t i = 0; i < d->nch; i++) {
		const struct sy_uidpair *p = map_find(map, nmap, d->ch[i].uid);

		if (p != NULL)
			uids2[n2++] = p->uid2;
	}
	qsort(uids2, n2, sizeof(*uids2), sy_u32_cmp);
	while (pos < n2 && !r->stop) {
		struct sy_res res;

		sy_uid_set(set, sizeof(set), uids2, n2, &pos);
		if (sy_cmd(r, 1, &res, on_flags2, NULL, m2, "UID FETCH %a (UID FLAGS)", set) !=
		    IMAP_STATUS_OK) {
			sy_error(r, SY_ERR_FLAGS, "Host2 folder %s: could not fetch flags: %s",
			         f->name2, res.text);
			free(uids2);
			return;
		}
	}
	/* d->ch is sorted by UID (changed_finish()): c1 grows at its tail, and
	 * host2's answers (one UID FETCH, in UID order) are looked up by UID */
	for (size_t i = 0; i < d->nch; i++) {
		const struct sy_uidpair *p = map_find(map, nmap, d->ch[i].uid);
		struct sy_msg *e, *o;

		if (p == NULL || (o = sy_msgs_find(m2, p->uid2)) == NULL)
			continue;
		e = sy_msgs_get(&c1, d->ch[i].uid);
		e->flags = strdup(d->ch[i].flags);
		if (e->flags == NULL)
			abort();
		e->match = (int)(o - m2->v) + 1;
		(*nflags_r)++;
	}
	sy_resync_flags(r, f, &c1, m2);
	sy_msgs_free(&c1);
	free(uids2);
}

/* The vanished pairs a move hint names (moved out through the proxy) are
 * kept aside for the target folder's sync, which copies them inside host2
 * (their host2 copies stay, unless --delete2 took them). out: room for
 * nmap pairs. */
static void keep_moved(struct delta *d, const struct sy_folder *f, const struct sy_msgs *m2,
                       const struct sy_uidpair *map, size_t nmap, const uint8_t *gone,
                       struct sy_uidpair *out)
{
	struct sy_run *r = d->r;
	char cn[1024];
	uint32_t *moved = NULL;
	size_t nmoved = 0, n = 0, i;

	for (i = 0; i < nmap && !gone[i]; i++)
		;
	if (i == nmap || r->o->redis == NULL || r->o->delete2 || r->st == NULL ||
	    rk_folder_canon(cn, sizeof(cn), f->name1, strlen(f->name1), 0, r->side[0].sep) < 0 ||
	    (nmoved = sy_hints_moved_from(r, cn, &moved)) == 0) {
		free(moved);
		return;
	}
	for (i = 0; i < nmap; i++) {
		if (gone[i] &&
		    bsearch(&map[i].uid1, moved, nmoved, sizeof(*moved), sy_u32_cmp) != NULL)
			out[n++] = map[i];
	}
	free(moved);
	sy_state_gone_put(r, r->st, f, d->m1.uidvalidity, m2->uidvalidity, out, n);
}

/* The new map: the stored one without the vanished UIDs, plus this pass's
 * copies (sorted again by sy_state_map_put()). */
static void update_map(struct delta *d, const struct sy_folder *f, const struct sy_msgs *m2,
                       const struct sy_uidpair *map, size_t nmap, const uint8_t *gone)
{
	struct sy_uidpair *out = malloc((nmap + d->m1.n + 1) * sizeof(*out));
	size_t n = 0;

	if (out == NULL)
		abort();
	keep_moved(d, f, m2, map, nmap, gone, out);
	n = 0;
	for (size_t i = 0; i < nmap; i++) {
		if (!gone[i])
			out[n++] = map[i];
	}
	for (size_t k = 0; k < d->m1.n; k++) {
		const struct sy_msg *e = &d->m1.v[k];

		if (e->match != -3 && e->uid2 != 0) {
			out[n].uid1 = e->uid;
			out[n].uid2 = e->uid2;
			n++;
		}
	}
	sy_state_map_put(d->r->st, f, d->m1.uidvalidity, m2->uidvalidity, out, n);
	free(out);
}

/* --delete2 in an incremental pass: the host2 copies of the vanished host1
 * messages, through the map. Returns how many were deleted. */
static uint64_t delete_vanished(struct delta *d, const struct sy_folder *f, struct sy_msgs *m2,
                                const struct sy_uidpair *map, size_t nmap, const uint8_t *gone,
                                uint64_t nvanished, int qresync, int listed)
{
	struct sy_run *r = d->r;
	uint32_t *uids;
	size_t n = 0, marked;

	if (!qresync && listed && d->present.n != (size_t)(d->m1.exists - (uint32_t)d->m1.n)) {
		/* the UID list and the count disagree (a change meanwhile) */
		sy_out(r,
		       "Folder %s: host1's UID list (%zu) and message count (%u) disagree: nothing "
		       "deleted on host2 this time",
		       f->name1, d->present.n, d->m1.exists - (uint32_t)d->m1.n);
		return 0;
	}
	/* the cap is for deletions inferred from what host1 seems to lack; the
	 * expunges QRESYNC reports (VANISHED) are host1's own word: a user
	 * who empties a Trash of 1,000 messages is mirrored, not refused */
	if (!qresync && !sy_delete2_allowed(r, f->name2, (size_t)nvanished, m2->exists))
		return 0;
	uids = malloc((nmap + 1) * sizeof(*uids));
	if (uids == NULL)
		abort();
	for (size_t i = 0; i < nmap; i++) {
		if (!gone[i])
			continue;
		uids[n++] = map[i].uid2;
		sy_msgline(r, "Host2: msg %s/%u marked \\Deleted on host2 [host1 UID %u vanished]",
		           f->name2, map[i].uid2, map[i].uid1);
	}
	marked = sy_delete_uids(r, 1, f->name2, uids, n,
	                        r->o->expunge2      ? SY_XP_FOLDER
	                        : r->o->uidexpunge2 ? SY_XP_UIDS
	                                            : SY_XP_NONE);
	r->deleted2 += marked;
	free(uids);
	return marked == n ? marked : 0;
}

int sy_delta_folder(struct sy_run *r, const struct sy_folder *f, const struct sy_delta_base *b,
                    unsigned idx, unsigned total)
{
	struct delta d;
	struct sy_msgs m2;
	struct sy_kindex ix = {0};
	struct sy_uidpair *map = NULL;
	size_t nmap = 0;
	uint8_t *gone = NULL;
	uint64_t nnew = 0, nvanished = 0, nflags = 0, ndeleted = 0;
	const struct imap_caps *c1, *c2;
	char pos[32], n1[300], n2[300];
	struct sy_res res2;
	struct sy_call sel2;
	int qresync, rc, done = 1, listed = 0;

	if (r->st == NULL || r->o->dry || r->o->justfolders || !f->exists2 ||
	    r->side[0].cl == NULL || r->side[1].cl == NULL)
		return 0;
	/* --delete1 needs every host1 message's identity, --delete2 the
	 * host2-only messages the state only counts: a full pass */
	if (r->o->delete1 || r->o->expunge1 || sy_select_window_active(r->o) ||
	    ((r->o->delete2 || r->o->delete2duplicates) && b->counts[2] > 0))
		return 0;
	c1 = imap_client_caps(r->side[0].cl);
	c2 = imap_client_caps(r->side[1].cl);
	if (!imap_caps_has(c2, IMAP_CAP_UIDPLUS) ||
	    (!imap_caps_has(c1, IMAP_CAP_CONDSTORE) && !imap_caps_has(c1, IMAP_CAP_QRESYNC)))
		return 0;
	if (sy_state_map_get(r->st, f, b->was[0].uidvalidity, b->was[1].uidvalidity, &map, &nmap) <
	    0)
		return 0;
	/* IMAPFERRY_NOQRESYNC=1 forces the CONDSTORE path (tests, odd servers) */
	qresync = imap_caps_has(c1, IMAP_CAP_QRESYNC) && imap_caps_has(c1, IMAP_CAP_ENABLE) &&
	          getenv("IMAPFERRY_NOQRESYNC") == NULL;

	memset(&d, 0, sizeof(d));
	memset(&m2, 0, sizeof(m2));
	d.r = r;
	d.m1.r = m2.r = r;
	m2.side = 1;
	/* host2's SELECT travels while host1 is read */
	sy_cmd_send(r, 1, &sel2, &res2, sy_on_select, NULL, &m2, "SELECT %m", f->name2);
	rc = read_host1(&d, f, b, qresync);
	if (rc != 0) {
		done = rc < 0;
		goto out;
	}
	/* new UIDs (n:* also answers the last message below n: dropped) */
	if (sy_read_side(r, 0, &d.m1, !r->o->useuid, b->was[0].uidnext) < 0)
		goto out;
	for (size_t k = 0; r->o->useuid && k < d.m1.n; k++) {
		/* --useuid: the UID is the identity, as in the full pass */
		d.m1.v[k].haskey = 1;
		snprintf(d.m1.v[k].key, sizeof(d.m1.v[k].key), "U:%u", d.m1.v[k].uid);
	}
	if (!qresync && (listed = read_present(&d, f, b)) < 0)
		goto out;
	if (sy_cmd_wait(r, 1, &sel2) != IMAP_STATUS_OK) {
		sy_error(r, SY_ERR_SELECT, "Host2 folder %s: Could not select: %s", f->name2,
		         res2.text);
		goto out;
	}
	if (m2.uidvalidity != b->was[1].uidvalidity) {
		done = 0; /* nothing written yet: the full pass decides */
		goto out;
	}
	snprintf(pos, sizeof(pos), "%u/%u", idx, total);
	snprintf(n1, sizeof(n1), "[%s]", f->name1);
	snprintf(n2, sizeof(n2), "[%s]", f->name2);
	sy_out(r, "Folder %7s %-35s -> %-35s changed since the last run: incremental pass", pos, n1,
	       n2);

	/* vanished: QRESYNC's list, or mapped UIDs the count/list says are gone */
	gone = calloc(nmap + 1, 1);
	if (gone == NULL)
		abort();
	for (size_t i = 0; i < nmap; i++) {
		uint32_t u = map[i].uid1;

		if (u >= b->was[0].uidnext)
			gone[i] = sy_msgs_find(&d.m1, u) == NULL;
		else if (qresync)
			gone[i] = (uint8_t)in_seqset(&d.vanished, u);
		else if (listed)
			gone[i] = !sy_uids_has(&d.present, u);
		nvanished += gone[i];
	}

	/* new messages: those already mapped were copied by the last pass */
	for (size_t k = 0; k < d.m1.n; k++) {
		if (map_find(map, nmap, d.m1.v[k].uid) != NULL)
			d.m1.v[k].match = -3;
	}
	sy_kindex_build(&ix, &d.m1, r, 0);
	for (size_t k = 0; k < d.m1.n; k++) {
		struct sy_msg *e = &d.m1.v[k];

		if (e->match != -3 && sy_count_host1(r, e))
			nnew++;
	}
	sy_select_sizes(r, f, &d.m1);
	sy_copy_messages(r, f, &d.m1, &m2);
	if (r->o->delete2 && nvanished > 0 && !r->stop)
		ndeleted = delete_vanished(&d, f, &m2, map, nmap, gone, nvanished, qresync, listed);
	for (size_t k = 0; k < d.m1.n; k++) {
		const struct sy_msg *e = &d.m1.v[k];

		if (e->haskey && !e->dup && e->match == 0 && !e->skip)
			r->in1_not_in2++;
	}

	/* flags of mapped messages that changed (and did not vanish) */
	changed_finish(&d);
	if (r->o->resyncflags && d.nch > 0 && !r->stop) {
		size_t kept = 0;

		for (size_t i = 0; i < d.nch; i++) { /* in place, keeping the UID order */
			const struct sy_uidpair *p = map_find(map, nmap, d.ch[i].uid);

			if (p != NULL && gone[p - map])
				free(d.ch[i].flags);
			else
				d.ch[kept++] = d.ch[i];
		}
		d.nch = kept;
		apply_flags(&d, f, &m2, map, nmap, &nflags);
	}

	/* the counts the verdicts need: the stored ones, moved by the changes */
	r->ident1 += b->counts[0] - (nvanished < b->counts[0] ? nvanished : b->counts[0]);
	r->ident2 += b->counts[1] - (ndeleted < b->counts[1] ? ndeleted : b->counts[1]);
	r->in2_not_in1 += b->counts[2] + nvanished - ndeleted;
	sy_msgline(r,
	           "Folder %s: %llu new, %llu vanished on host1 (%llu deleted on host2), %llu "
	           "flag changes looked at",
	           f->name1, (unsigned long long)nnew, (unsigned long long)nvanished,
	           (unsigned long long)ndeleted, (unsigned long long)nflags);
	update_map(&d, f, &m2, map, nmap, gone);
	r->folders_synced++;
out:
	sy_cmd_wait(r, 1, &sel2); /* its handler writes into m2 */
	free(ix.slot);
	free(gone);
	free(map);
	sy_msgs_free(&m2);
	delta_free(&d);
	return done;
}
