/*
 * copy.c - the message pass of one folder pair, imapsync's way of telling
 * messages apart (the header key of hdrkey.c) with imapferry's transport:
 *
 *  1. SELECT host2 (PERMANENTFLAGS), EXAMINE host1 (read-only: no \Recent
 *     or \Seen changes on the source);
 *  2. one pipelined UID FETCH of UID FLAGS INTERNALDATE RFC822.SIZE and the
 *     key's header fields per side, then one more for the messages that have
 *     none of those fields (their whole header gives a content key);
 *  3. host1 messages whose key host2 lacks are copied: BODY.PEEK[] on host1
 *     feeds APPEND on host2 (flags, INTERNALDATE), several in flight, with
 *     LITERAL+ when offered: no round trip per message;
 *  4. messages on both sides get their flags resynced (FLAGS.SILENT).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <hiredis/hiredis.h>

#include "acl.h"
#include "debugcat.h"
#include "delete.h"
#include "flags.h"
#include "hdrkey.h"
#include "imapferry/log.h"
#include "imapferry/resp.h"
#include "imapferry/rkeys.h"
#include "imapferry/rnodes.h"
#include "imapferry/rqueue.h"
#include "imapferry/xalloc.h"
#include "msgs.h"
#include "msgsel.h"
#include "xdup.h"
#include "xform.h"
#include "sync.h"

#define WINDOW_MSGS  16           /* transfers in flight */
#define STREAM_MIN   (256u << 10) /* bigger bodies go host1 -> host2 without being held */
#define OUT_HIGH     (1u << 20)   /* host2 output that pauses reading host1 */
#define WINDOW_BYTES (16u << 20)  /* bytes of bodies held at once */

struct sy_msg *sy_msgs_find(struct sy_msgs *m, uint32_t uid)
{
	size_t lo = 0, hi = m->n;

	/* entries are in UID order when they came from one UID FETCH */
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (m->v[mid].uid < uid)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo < m->n && m->v[lo].uid == uid)
		return &m->v[lo];
	for (size_t i = 0; i < m->n; i++) { /* not sorted after all */
		if (m->v[i].uid == uid)
			return &m->v[i];
	}
	return NULL;
}

struct sy_msg *sy_msgs_get(struct sy_msgs *m, uint32_t uid)
{
	/* replies come in UID order for UID FETCH 1:*, so look at the tail first */
	if (m->n > 0 && m->v[m->n - 1].uid == uid)
		return &m->v[m->n - 1];
	for (size_t i = 0; i < m->n; i++) {
		if (m->v[i].uid == uid)
			return &m->v[i];
	}
	if (m->n == m->cap) {
		m->cap = m->cap ? m->cap * 2 : 256;
		m->v = realloc(m->v, m->cap * sizeof(*m->v));
		if (m->v == NULL)
			abort();
	}
	memset(&m->v[m->n], 0, sizeof(m->v[0]));
	m->v[m->n].uid = uid;
	return &m->v[m->n++];
}

void sy_msgs_free(struct sy_msgs *m)
{
	for (size_t i = 0; i < m->n; i++) {
		free(m->v[i].flags);
		free(m->v[i].idate);
		free(m->v[i].hdate);
	}
	free(m->v);
}

char *sy_flags_string(const struct imap_arg *list)
{
	size_t len = 1;
	char *s;

	for (const struct imap_arg *f = list->child; f != NULL; f = f->next)
		len += f->len + 1;
	s = calloc(1, len);
	if (s == NULL)
		abort();
	for (const struct imap_arg *f = list->child; f != NULL; f = f->next) {
		if (f->type != IMAP_ARG_ATOM)
			continue;
		if (s[0] != '\0')
			strcat(s, " ");
		strcat(s, f->str);
	}
	return s;
}

void sy_on_select(struct imap_client *cl, const struct imap_msg *msg, void *aux)
{
	struct sy_msgs *m = aux;

	(void)cl;
	if (msg->has_number && msg->name != NULL && strcmp(msg->name, "EXISTS") == 0)
		m->exists = msg->number;
	if (msg->code != NULL && strcmp(msg->code, "UIDVALIDITY") == 0)
		imap_arg_get_u32(msg->code_args, &m->uidvalidity);
	if (msg->code != NULL && strcmp(msg->code, "PERMANENTFLAGS") == 0 &&
	    msg->code_args != NULL && msg->code_args->type == IMAP_ARG_LIST) {
		char *s = sy_flags_string(msg->code_args);

		snprintf(m->permflags, sizeof(m->permflags), "%s", s);
		m->have_permflags = 1;
		free(s);
	}
}

/*
 * --idatefromheader: the Date: field of a header block (RFC 5322 3.3
 * date-time, with the obsolete forms: two-digit years, named zones, no
 * seconds, comments) as an IMAP date-time; NULL when absent or unparsable
 * (then the INTERNALDATE is kept). Caller frees.
 */
static char *header_date(const char *hdr, size_t len)
{
	static const char months[] = "janfebmaraprmayjunjulaugsepoctnovdec";
	static const struct {
		const char *name;
		int min;
	} zones[] = {{"UT", 0},     {"GMT", 0},    {"Z", 0},      {"EST", -300},
	             {"EDT", -240}, {"CST", -360}, {"CDT", -300}, {"MST", -420},
	             {"MDT", -360}, {"PST", -480}, {"PDT", -420}};
	char buf[256], mon[4] = "", zone[8] = "", out[27];
	const char *p = hdr, *end = hdr + len, *v = NULL;
	size_t n = 0;
	int day, year, hh, mm, ss = 0, tz = 0, k;
	const char *m;
	time_t t;

	/* find "Date:" at a line start, then unfold its value */
	for (; p < end; p++) {
		if ((p == hdr || p[-1] == '\n') && (size_t)(end - p) > 5 &&
		    strncasecmp(p, "Date:", 5) == 0) {
			v = p + 5;
			break;
		}
	}
	if (v == NULL)
		return NULL;
	for (; v < end && n < sizeof(buf) - 1; v++) {
		if (*v == '\r' || *v == '\n') {
			if (v + 1 < end && *v == '\r' && v[1] == '\n')
				v++;
			if (v + 1 >= end || (v[1] != ' ' && v[1] != '\t'))
				break;
			continue;
		}
		buf[n++] = *v == '\t' ? ' ' : *v;
	}
	buf[n] = '\0';
	p = strchr(buf, ',') != NULL ? strchr(buf, ',') + 1 : buf;
	if (sscanf(p, "%d %3s %d %d:%d:%d %7s", &day, mon, &year, &hh, &mm, &ss, zone) < 6 &&
	    (ss = 0, sscanf(p, "%d %3s %d %d:%d %7s", &day, mon, &year, &hh, &mm, zone) < 5))
		return NULL;
	for (k = 0; mon[k] != '\0'; k++)
		mon[k] = (char)(mon[k] | 0x20);
	m = strstr(months, mon);
	if (strlen(mon) != 3 || m == NULL || (m - months) % 3 != 0 || day < 1 || day > 31 ||
	    hh > 23 || mm > 59 || ss > 60)
		return NULL;
	if (year < 50)
		year += 2000; /* RFC 5322 4.3 */
	else if (year < 1000)
		year += 1900;
	if ((zone[0] == '+' || zone[0] == '-') && strlen(zone) == 5) {
		int z = atoi(zone + 1);

		tz = (z / 100 * 60 + z % 100) * (zone[0] == '-' ? -1 : 1);
	} else {
		for (k = 0; k < (int)(sizeof(zones) / sizeof(zones[0])); k++) {
			if (strcasecmp(zone, zones[k].name) == 0)
				tz = zones[k].min;
		}
	}
	{
		char tmp[64];

		snprintf(tmp, sizeof(tmp), "%02d-%c%c%c-%04d %02d:%02d:%02d +0000", day, m[0] - 32,
		         m[1], m[2], year % 10000, hh, mm, ss);
		if (strlen(tmp) != 26)
			return NULL;
		memcpy(out, tmp, 27);
	}
	{
		int tz0;

		if (imap_date_time_parse(out, strlen(out), &t, &tz0) < 0)
			return NULL;
	}
	imap_date_time_format(out, t - (time_t)tz * 60, tz);
	return strdup(out);
}

static void on_meta(struct imap_client *cl, const struct imap_msg *msg, void *aux)
{
	struct sy_msgs *m = aux;
	const struct imap_arg *items, *v;
	struct sy_msg *e;
	uint32_t uid;
	const char *err;

	(void)cl;
	if (imap_fetch_items(msg, &items) < 0 ||
	    imap_arg_get_u32(imap_fetch_get(items, "UID"), &uid) < 0 || uid < m->from_uid)
		return; /* "n:*" answers the last message even when its UID is below n */
	e = sy_msgs_get(m, uid);
	if ((v = imap_fetch_get(items, "FLAGS")) != NULL && v->type == IMAP_ARG_LIST) {
		free(e->flags);
		e->flags = sy_flags_string(v);
	}
	if ((v = imap_fetch_get(items, "INTERNALDATE")) != NULL && v->type == IMAP_ARG_STRING) {
		free(e->idate);
		e->idate = strdup(v->str);
	}
	if ((v = imap_fetch_get(items, "RFC822.SIZE")) != NULL)
		imap_arg_get_u32(v, &e->size);
	for (const struct imap_arg *a = items; a != NULL && a->next != NULL; a = a->next->next) {
		const char *s;
		size_t len;
		int rc;

		if (a->type != IMAP_ARG_ATOM || !sy_hdrkey_is_header_item(a->str) ||
		    imap_arg_get_nstring(a->next, &s, &len) < 0 || s == NULL)
			continue;
		if (strcmp(a->str, "BODY[HEADER]") == 0 && m->side == 0 && m->r->o->addheader) {
			char line[SY_HDRKEY_LINE_MAX];

			/* 0 is success here (the key always exists) */
			rc = sy_hdrkey_addheader(m->r->hk, e->uid, e->size, e->key, line, &err) == 0
			             ? 1
			             : -1;
			e->addhdr = rc > 0;
		} else if (strcmp(a->str, "BODY[HEADER]") == 0) {
			/* the whole header: the normal fetch under --useheader ALL,
			 * else the --wholeheaderifneeded fallback; imapsync's key
			 * first, then, for a header with none of the fields,
			 * imapferry's content key (0 is success there) */
			char item[256];

			if (sy_hdrkey_fetch_item(m->r->hk, item, sizeof(item)) == 0 &&
			    strcmp(item, SY_HDRKEY_WHOLE_ITEM) == 0)
				rc = sy_hdrkey_compute(m->r->hk, s, len, e->size, e->key, &err);
			else
				rc = sy_hdrkey_compute_whole(m->r->hk, s, len, e->size, e->key,
				                             &err);
			if (rc == 0)
				rc = sy_hdrkey_content(s, len, e->size, e->key, &err) == 0 ? 1 : -1;
		} else
			rc = sy_hdrkey_compute(m->r->hk, s, len, e->size, e->key, &err);
		if (m->side == 0 && m->r->o->idatefromheader && e->hdate == NULL)
			e->hdate = header_date(s, len);
		if (rc > 0)
			e->haskey = 1;
	}
}

/* Side i's --splitN: UIDs per command, messages per batch (>= 1, default 100). */
static size_t sy_split(const struct sy_run *r, int i)
{
	long long v = r->side[i].acc != NULL ? r->side[i].acc->split : 0;

	return v > 0 ? (size_t)v : 100;
}

/* sy_uid_set() taking at most count UIDs (imapsync's --split1/2). */
static size_t sy_uid_set_n(char *buf, size_t max, const uint32_t *uids, size_t n, size_t *pos,
                           size_t count);

size_t sy_uid_set(char *buf, size_t max, const uint32_t *uids, size_t n, size_t *pos)
{
	return sy_uid_set_n(buf, max, uids, n, pos, SIZE_MAX);
}

static size_t sy_uid_set_n(char *buf, size_t max, const uint32_t *uids, size_t n, size_t *pos,
                           size_t count)
{
	size_t len = 0, taken = 0;

	buf[0] = '\0';
	while (*pos < n && len + 24 < max && taken < count) {
		uint32_t lo = uids[*pos], hi = lo;

		(*pos)++;
		taken++;
		while (*pos < n && uids[*pos] == hi + 1 && taken < count) {
			hi = uids[(*pos)++];
			taken++;
		}
		len += (size_t)snprintf(buf + len, max - len, "%s%u", len > 0 ? "," : "", lo);
		if (hi != lo)
			len += (size_t)snprintf(buf + len, max - len, ":%u", hi);
	}
	return taken;
}

/* The metadata FETCH of side i: "UID FETCH uids (items)" in one command, or,
 * with --splitN given and a whole folder to read, imapsync's split: one
 * FETCH per --splitN messages by sequence number (stable here: no EXPUNGE
 * may be sent during a FETCH, RFC 3501 7.4.1), the last range open-ended. */
static enum imap_status fetch_meta(struct sy_run *r, int i, struct sy_msgs *m, struct sy_res *res,
                                   const char *uids, uint32_t from_uid, const char *items)
{
	size_t split = sy_split(r, i);
	enum imap_status st = IMAP_STATUS_OK;

	if (from_uid > 1 || (i == 0 && r->o->fetch_hash_set != NULL) ||
	    !sy_options_given(r->o, i == 0 ? SY_OPT_SPLIT1 : SY_OPT_SPLIT2) || m->exists <= split)
		return sy_cmd(r, i, res, on_meta, NULL, m, "UID FETCH %a (UID %a)", uids, items);
	for (size_t lo = 1; lo <= m->exists && st == IMAP_STATUS_OK; lo += split) {
		if (lo + split > m->exists)
			st = sy_cmd(r, i, res, on_meta, NULL, m, "FETCH %u:* (UID %a)",
			            (unsigned)lo, items);
		else
			st = sy_cmd(r, i, res, on_meta, NULL, m, "FETCH %u:%u (UID %a)",
			            (unsigned)lo, (unsigned)(lo + split - 1), items);
	}
	return st;
}

int sy_read_side(struct sy_run *r, int i, struct sy_msgs *m, int keys, uint32_t from_uid)
{
	struct sy_res res;
	char item[256], uids[256], items[320], *set;
	uint32_t *need;
	size_t nneed = 0, pos = 0;

	if (m->exists == 0)
		return 0;
	m->from_uid = from_uid;
	if (i == 0 && from_uid <= 1 && r->o->fetch_hash_set != NULL) {
		/* --fetch_hash_set: imapsync's UID window (checked at start-up), on
		 * host1 only: host2's UIDs are other numbers, and a window there
		 * would hide copies already made (duplicates on the next run) */
		snprintf(uids, sizeof(uids), "%s", r->o->fetch_hash_set);
	} else {
		snprintf(uids, sizeof(uids), "%u:*", from_uid);
	}
	if (!keys) {
		/* --useuid: the UID map identifies; no header is read */
		if (fetch_meta(r, i, m, &res, uids, from_uid, "FLAGS INTERNALDATE RFC822.SIZE") !=
		    IMAP_STATUS_OK) {
			sy_error(r, i == 0 ? SY_ERR_FETCH : SY_ERR_UNCLASSIFIED,
			         "Host%d: could not fetch the folder's messages: %s", i + 1,
			         res.text);
			return -1;
		}
		return 0;
	}
	sy_hdrkey_fetch_item(r->hk, item, sizeof(item));
	if (i == 0 && r->o->idatefromheader && !sy_hdrkey_uses_field(r->hk, "Date")) {
		size_t il = strlen(item); /* "...)]": add DATE to the fields */

		if (il > 2 && il + 6 < sizeof(item) && strcmp(item + il - 2, ")]") == 0)
			memcpy(item + il - 2, " DATE)]", 8);
	}
	snprintf(items, sizeof(items), "FLAGS INTERNALDATE RFC822.SIZE %s", item);
	if (fetch_meta(r, i, m, &res, uids, from_uid, items) != IMAP_STATUS_OK) {
		sy_error(r, i == 0 ? SY_ERR_FETCH : SY_ERR_UNCLASSIFIED,
		         "Host%d: could not fetch the headers of the folder: %s", i + 1, res.text);
		return -1;
	}
	need = malloc((m->n + 1) * sizeof(*need));
	set = malloc(8192);
	if (need == NULL || set == NULL)
		abort();
	for (size_t k = 0; k < m->n; k++) {
		if (!m->v[k].haskey && (r->o->wholeheaderifneeded || r->o->addheader))
			need[nneed++] = m->v[k].uid;
	}
	/* header-less messages: one more pipelined pass over the whole header */
	while (pos < nneed) {
		sy_uid_set_n(set, 8192, need, nneed, &pos, sy_split(r, i));
		if (sy_cmd(r, i, &res, on_meta, NULL, m, "UID FETCH %a (UID BODY.PEEK[HEADER])",
		           set) != IMAP_STATUS_OK) {
			sy_error(r, i == 0 ? SY_ERR_FETCH : SY_ERR_UNCLASSIFIED,
			         "Host%d: could not fetch headers: %s", i + 1, res.text);
			free(need);
			free(set);
			return -1;
		}
	}
	free(need);
	free(set);
	return 0;
}

/* --- flags: the host1 pipeline of flags.c (\\Recent dropped, buggy flags,
 * --regexflag, system flag case, host2 PERMANENTFLAGS) --- */

static size_t split_flags(char *s, const char **tok, size_t max)
{
	size_t n = 0;

	for (char *p = strtok(s, " ()"); p != NULL && n < max; p = strtok(NULL, " ()"))
		tok[n++] = p;
	return n;
}

/* The "(...)" flag list to give host2 for host1's flags; NULL on a
 * --regexflag run-time failure (error recorded). Caller frees. */
static char *host2_flags(struct sy_run *r, const char *flags1, const struct sy_msgs *m2)
{
	char *c1 = strdup(flags1 != NULL ? flags1 : ""), *cp = strdup(m2->permflags), *out = NULL;
	const char *t1[256], *tp[256], *error;
	size_t n1, np;

	if (c1 == NULL || cp == NULL)
		abort();
	n1 = split_flags(c1, t1, 256);
	np = m2->have_permflags ? split_flags(cp, tp, 256) : 0;
	if (sy_flags_for_host2(r->fl, t1, n1, m2->have_permflags ? tp : NULL, np, &out, NULL,
	                       &error) < 0) {
		sy_error(r, SY_ERR_FLAGS, "Host1: flags [%s]: %s", flags1 != NULL ? flags1 : "",
		         error);
		out = NULL;
	}
	free(c1);
	free(cp);
	return out;
}

/* --debugflags: a copy's flags on host1 and those it gets on host2. */
static void debug_flags(struct sy_run *r, const struct sy_folder *f, const struct sy_msg *e,
                        const char *flags2)
{
	if (r->o->debugflags)
		sy_out(r, "debugflags: msg %s/%u: host1 flags (%s), host2 gets %s", f->name1,
		       e->uid, e->flags != NULL ? e->flags : "", flags2);
}

/* --- key index: open addressing over the other side's keys --- */

static uint64_t khash(const char *s)
{
	uint64_t h = 1469598103934665603ull;

	for (; *s != '\0'; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ull;
	return h;
}

void sy_kindex_build(struct sy_kindex *ix, struct sy_msgs *m, struct sy_run *r, int side)
{
	ix->cap = 16;
	while (ix->cap < m->n * 2 + 2)
		ix->cap *= 2;
	ix->slot = calloc(ix->cap, sizeof(*ix->slot));
	if (ix->slot == NULL)
		abort();
	for (size_t k = 0; k < m->n; k++) {
		struct sy_msg *e = &m->v[k];
		size_t h;

		if (!e->haskey)
			continue;
		for (h = khash(e->key) & (ix->cap - 1); ix->slot[h] != 0;
		     h = (h + 1) & (ix->cap - 1)) {
			if (strcmp(m->v[ix->slot[h] - 1].key, e->key) == 0)
				break;
		}
		if (ix->slot[h] != 0 &&
		    (r->o->syncduplicates || strncmp(e->key, SY_HDRKEY_CONTENT_PREFIX,
		                                     strlen(SY_HDRKEY_CONTENT_PREFIX)) == 0)) {
			/* --syncduplicates: the n-th copy is "key#n" on both sides,
			 * so copies are matched by count. Content keys (header-less
			 * messages) are always counted so: the same header and size
			 * do not make the same message. */
			char base[SY_HDRKEY_MAX];
			unsigned n = 1;

			memcpy(base, e->key, sizeof(base));
			do {
				sy_hdrkey_dup_key(base, n++, e->key);
				for (h = khash(e->key) & (ix->cap - 1); ix->slot[h] != 0;
				     h = (h + 1) & (ix->cap - 1)) {
					if (strcmp(m->v[ix->slot[h] - 1].key, e->key) == 0)
						break;
				}
			} while (ix->slot[h] != 0);
		}
		if (ix->slot[h] != 0) {
			e->dup = 1; /* same key twice in one folder */
			if (side == 0)
				r->dup1++;
			else
				r->dup2++;
			continue;
		}
		ix->slot[h] = k + 1;
	}
}

struct sy_msg *sy_kindex_get(const struct sy_kindex *ix, struct sy_msgs *m, const char *key)
{
	for (size_t h = khash(key) & (ix->cap - 1); ix->slot[h] != 0; h = (h + 1) & (ix->cap - 1)) {
		if (strcmp(m->v[ix->slot[h] - 1].key, key) == 0)
			return &m->v[ix->slot[h] - 1];
	}
	return NULL;
}

/* --- transfers --- */

struct xfer_ctx;

struct xfer {
	struct xfer_ctx *x;
	struct sy_msg *m;
	struct evbuffer *body;
	struct xfer *next;
	int streamed;        /* its APPEND was started from the FETCH literal */
	int failed;          /* the stream broke: the APPEND never completes normally */
	int refs;            /* the FETCH and the APPEND each hold one */
	int done;            /* counted out of the window */
	uint64_t wrong_size; /* --noallowsizemismatch: the literal's size, body not kept */
};

struct xfer_ctx {
	int paused;          /* host1 reading paused until host2 drains */
	struct xfer *active; /* fetches in flight, found by UID */
	struct xfer *cur;    /* receiving a streamed body */
	struct sy_run *r;
	const struct sy_folder *f;
	struct sy_msgs *m2;
	unsigned inflight;
	size_t held;
	struct timespec t0;
	uint64_t copied_here;
	uint64_t to_copy;  /* messages this folder needs, for the progress line */
	int del1;          /* --delete1 with --expungeaftereach: delete each copy at once */
	unsigned pending1; /* host1 STOREs/EXPUNGEs of del1 in flight */
	unsigned fetches;  /* host1 FETCH commands in flight (their handlers point here) */
};

/* One UID FETCH of up to FETCH_BATCH small bodies (a big one goes alone,
 * to be streamed): fewer commands for the server to parse and answer. */
#define FETCH_BATCH 8

struct fetchcmd {
	struct xfer_ctx *x;
	uint32_t uid[FETCH_BATCH];
	unsigned n;
};

/* Pipelined FETCHes may be answered in any order (Dovecot runs them in
 * parallel), so replies are matched to transfers by UID, not by tag. */
static struct xfer *xfer_find(struct xfer_ctx *x, uint32_t uid)
{
	for (struct xfer *t = x->active; t != NULL; t = t->next) {
		if (t->m->uid == uid)
			return t;
	}
	return NULL;
}

static void xfer_unlink(struct xfer *t)
{
	for (struct xfer **p = &t->x->active; *p != NULL; p = &(*p)->next) {
		if (*p == t) {
			*p = t->next;
			break;
		}
	}
	if (t->x->cur == t)
		t->x->cur = NULL;
}

static uint32_t fetch_uid(const struct imap_msg *msg)
{
	uint32_t uid = 0;

	if (msg->args != NULL && msg->args->type == IMAP_ARG_LIST)
		imap_arg_get_u32(imap_fetch_get(msg->args->child, "UID"), &uid);
	return uid;
}

static void xfer_put(struct xfer *t)
{
	if (--t->refs > 0)
		return;
	xfer_unlink(t);
	if (t->body != NULL)
		evbuffer_free(t->body);
	free(t);
}

/* The transfer leaves the window (once). */
static void xfer_done(struct xfer *t)
{
	if (t->done)
		return;
	t->done = 1;
	t->x->inflight--;
	t->x->held -= t->m->size < STREAM_MIN ? t->m->size : 0;
}

struct del1 {
	struct xfer_ctx *x;
	struct sy_msg *m;
	int expunge; /* 0: the STORE, 1: the UID EXPUNGE */
};

static void on_del1(struct imap_client *cl, const struct imap_result *res, void *aux)
{
	struct del1 *d = aux;
	struct sy_run *r = d->x->r;

	(void)cl;
	d->x->pending1--;
	if (res->status != IMAP_STATUS_OK) {
		sy_error(r, d->expunge ? SY_ERR_UNCLASSIFIED : SY_ERR_FLAGS,
		         "Host1: msg %s/%u could not be %s: %s", d->x->f->name1, d->m->uid,
		         d->expunge ? "expunged" : "marked \\Deleted",
		         res->text != NULL ? res->text : "");
	} else if (!d->expunge) {
		d->m->del = 1;
		r->deleted1++;
		sy_msgline(r, "Host1: msg %s/%u marked \\Deleted on host1", d->x->f->name1,
		           d->m->uid);
	}
	free(d);
}

/* --delete1 --expungeaftereach: the copy is confirmed (APPENDUID), so the
 * host1 message goes now: UID STORE then UID EXPUNGE of that UID only,
 * pipelined behind host1's FETCHes. */
static void delete1_now(struct xfer_ctx *x, struct sy_msg *m)
{
	struct imap_client *h1 = x->r->side[0].cl;
	const char *error;

	for (int k = 0; k < 2; k++) {
		struct del1 *d = calloc(1, sizeof(*d));

		if (d == NULL)
			abort();
		d->x = x;
		d->m = m;
		d->expunge = k;
		if ((k == 0 ? imap_client_cmdf(h1, on_del1, NULL, NULL, d, &error,
		                               "UID STORE %u +FLAGS.SILENT (\\Deleted)", m->uid)
		            : imap_client_cmdf(h1, on_del1, NULL, NULL, d, &error, "UID EXPUNGE %u",
		                               m->uid)) < 0) {
			free(d);
			return;
		}
		x->pending1++;
	}
}

void sy_throttle(struct sy_run *r)
{
	const struct sy_options *o = r->o;
	struct timespec now;
	double elapsed, by_msgs = 0, by_bytes = 0, pause;

	if (o->exitwhenover > 0 && r->bytes_transferred >= (uint64_t)o->exitwhenover && !r->stop) {
		sy_error(r, SY_ERR_EXCEEDED,
		         "Maximum bytes transferred reached, %llu >= %lld, ending sync",
		         (unsigned long long)r->bytes_transferred, o->exitwhenover);
		r->stop = 1;
		return;
	}
	if (o->maxmessagespersecond <= 0 && o->maxbytespersecond <= 0)
		return;
	clock_gettime(CLOCK_MONOTONIC, &now);
	elapsed = (double)(now.tv_sec - r->t0.tv_sec) + (now.tv_nsec - r->t0.tv_nsec) / 1e9;
	/* the time the run should have taken so far at the allowed rates */
	if (o->maxmessagespersecond > 0)
		by_msgs = (double)r->transferred / o->maxmessagespersecond - elapsed;
	if (o->maxbytespersecond > 0 && r->bytes_transferred > (uint64_t)o->maxbytesafter)
		by_bytes = (double)(r->bytes_transferred - (uint64_t)o->maxbytesafter) /
		                   (double)o->maxbytespersecond -
		           elapsed;
	pause = by_msgs > by_bytes ? by_msgs : by_bytes;
	if (o->maxsleep >= 0 && pause > o->maxsleep)
		pause = o->maxsleep;
	if (pause <= 0.001)
		return;
	sy_msgline(r, "sleeping %.2f s", pause);
	{
		struct timespec ts = {(time_t)pause, (long)((pause - (double)(time_t)pause) * 1e9)};

		while (nanosleep(&ts, &ts) != 0 && !r->stop)
			;
	}
}

/* --syncflagsaftercopy: a copy's flags stored again right after its APPEND. */
struct flags_after {
	struct sy_run *r;
	uint32_t uid2;
	char *folder2, *flags;
};

static void on_flags_after(struct imap_client *cl, const struct imap_result *res, void *aux)
{
	struct flags_after *fa = aux;

	(void)cl;
	if (res->status != IMAP_STATUS_OK)
		sy_error(fa->r, SY_ERR_FLAGS, "Host2: flags msg %s/%u could not add flags %s: %s",
		         fa->folder2, fa->uid2, fa->flags, res->text != NULL ? res->text : "");
	free(fa->folder2);
	free(fa->flags);
	free(fa);
}

/*
 * For a server that ignores the flags of APPEND (imapsync: MailEnable):
 * "UID STORE uid2 FLAGS.SILENT (...)" with the flags the APPEND carried,
 * an exact replace, pipelined (host2 runs it before anything sent later,
 * such as the next folder's SELECT). imapsync FETCHes host2's flags first
 * and stores only when they differ; storing at once gives the same flags
 * one round trip sooner.
 */
static void flags_after_copy(struct xfer_ctx *x, const struct sy_msg *m, uint32_t uid2)
{
	struct sy_run *r = x->r;
	struct flags_after *fa;
	const char *error;
	char *flags = host2_flags(r, m->flags, x->m2);

	if (flags == NULL)
		return; /* said by host2_flags() */
	fa = calloc(1, sizeof(*fa));
	if (fa == NULL)
		abort();
	fa->r = r;
	fa->uid2 = uid2;
	fa->flags = flags;
	fa->folder2 = xstrdup(x->f->name2);
	if (imap_client_cmdf(r->side[1].cl, on_flags_after, NULL, NULL, fa, &error,
	                     "UID STORE %u FLAGS.SILENT %a", uid2, flags) < 0) {
		sy_error(r, SY_ERR_FLAGS, "Host2: flags msg %s/%u could not add flags %s: %s",
		         fa->folder2, uid2, flags, error);
		free(fa->folder2);
		free(fa->flags);
		free(fa);
	}
}

static void on_append(struct imap_client *cl, const struct imap_result *res, void *aux)
{
	struct xfer *t = aux;
	struct xfer_ctx *x = t->x;
	struct sy_run *r = x->r;

	(void)cl;
	xfer_done(t);
	if (res->status == IMAP_STATUS_OK) {
		uint32_t uid2 = 0;
		char who[48], uid2s[24], rate[32], total[32];
		struct timespec now;
		double secs;

		if (res->code != NULL && strcmp(res->code, "APPENDUID") == 0)
			imap_arg_get_u32(imap_arg_nth(res->msg->code_args, 1), &uid2);
		t->m->uid2 = uid2;
		if (r->o->syncflagsaftercopy && uid2 != 0)
			flags_after_copy(x, t->m, uid2);
		if (x->del1 && uid2 != 0)
			delete1_now(x, t->m);
		r->transferred++;
		r->bytes_transferred += t->m->size;
		if (t->m->size > r->biggest)
			r->biggest = t->m->size;
		x->copied_here++;
		sy_throttle(r);
		clock_gettime(CLOCK_MONOTONIC, &now);
		secs = (double)(now.tv_sec - r->t0.tv_sec) + (now.tv_nsec - r->t0.tv_nsec) / 1e9;
		snprintf(who, sizeof(who), "%u {%u}", t->m->uid, t->m->size);
		snprintf(uid2s, sizeof(uid2s), "%u", uid2);
		sy_msgline(r, "msg %s/%-19s copied to %s/%-10s %.2f msgs/s  %s/s %s copied",
		           x->f->name1, who, x->f->name2, uid2s,
		           secs > 0 ? r->transferred / secs : 0.0,
		           sy_bytes(rate, sizeof(rate),
		                    (uint64_t)(secs > 0 ? r->bytes_transferred / secs : 0)),
		           sy_bytes(total, sizeof(total), r->bytes_transferred));
		if (r->o->debugmemory) {
			char what[400];

			snprintf(what, sizeof(what), "msg %s/%u", x->f->name1, t->m->uid);
			sy_debug_memory(r, what);
		}
		{
			double mps = secs > 0 ? r->transferred / secs : 0;
			uint64_t left =
			        x->to_copy > x->copied_here ? x->to_copy - x->copied_here : 0;

			sy_progress(r, "%s  %llu/%llu msgs  %s  %.0f msgs/s  %s/s  ETA %.0f s",
			            x->f->name1, (unsigned long long)x->copied_here,
			            (unsigned long long)x->to_copy, total, mps, rate,
			            mps > 0 ? left / mps : 0.0);
		}
	} else {
		t->m->match = 0;
		sy_error(r, SY_ERR_APPEND,
		         "- msg %s/%u {%u} could not append ( Subject:[?], Date:[%s], Size:[%u], "
		         "Flags:[%s] ) to folder %s: %s",
		         x->f->name1, t->m->uid, t->m->size, t->m->idate != NULL ? t->m->idate : "",
		         t->m->size, t->m->flags != NULL ? t->m->flags : "", x->f->name2,
		         res->text != NULL ? res->text : "");
	}
	xfer_put(t);
}

static void fetched(struct xfer *t, const char *fail);

/* A FETCH response for one of the batch: its body is complete (inline here,
 * or gathered from the literal events, or already streamed to host2). */
static void on_body(struct imap_client *cl, const struct imap_msg *msg, void *aux)
{
	struct xfer *t;
	const struct imap_arg *items, *v;

	(void)cl;
	if (imap_fetch_items(msg, &items) < 0 ||
	    (t = xfer_find(((struct fetchcmd *)aux)->x, fetch_uid(msg))) == NULL)
		return;
	v = imap_fetch_get(items, "BODY[]");
	if (v == NULL)
		return; /* a FLAGS update or the like, not the body */
	if (v->type == IMAP_ARG_LITERAL)
		evbuffer_add(t->body, v->str, v->len);
	fetched(t, NULL);
}

static void on_host2_drained(struct imap_client *cl, void *aux)
{
	struct xfer_ctx *x = aux;

	(void)cl;
	if (x->paused) {
		x->paused = 0;
		imap_client_resume_read(x->r->side[0].cl);
	}
}

static void on_append(struct imap_client *cl, const struct imap_result *res, void *aux);

/* The APPEND's optional date-time argument, with its leading space: the
 * Date: header (--idatefromheader), else host1's INTERNALDATE
 * (--syncinternaldates), else none (host2 uses the time of the APPEND). */
static void append_date(const struct xfer *t, char *buf, size_t size)
{
	const char *d = t->m->hdate;

	if (d == NULL && t->x->r->o->syncinternaldates)
		d = t->m->idate;
	if (d != NULL)
		snprintf(buf, size, " \"%s\"", d);
	else
		buf[0] = '\0';
}

/* A big body is streamed: its APPEND starts when host1's literal starts,
 * with the literal's size, and each slice read from host1 is written to
 * host2 at once. Memory stays bounded by the socket buffers and OUT_HIGH
 * (host1 is paused while host2 has more than that queued). */
static void stream_start(struct xfer *t, uint64_t size)
{
	struct sy_run *r = t->x->r;
	char *flags, date[40];
	const char *error;
	int rc;

	if (size != t->m->size && !r->o->allowsizemismatch) {
		t->wrong_size = size; /* refused in fetched(): its bytes are not kept */
		return;
	}
	if (size < STREAM_MIN || r->o->dry || t->m->addhdr || sy_select_needs_body(r->o) ||
	    sy_xform_active(r->o))
		return;
	flags = host2_flags(r, t->m->flags, t->x->m2);
	if (flags == NULL)
		return;
	debug_flags(r, t->x->f, t->m, flags);
	if (r->o->debugcontent)
		sy_out(r, "debugcontent: msg %s/%u, %llu bytes: streamed to host2, not printed",
		       t->x->f->name1, t->m->uid, (unsigned long long)size);
	append_date(t, date, sizeof(date));
	rc = imap_client_stream_begin(r->side[1].cl, on_append, t, size, &error, "APPEND %m %a%a ",
	                              t->x->f->name2, flags, date);
	free(flags);
	t->streamed = rc == 0; /* else: held in memory and appended afterwards */
	if (rc < 0)
		log_debug(LOG_CAT_SYNC, "msg %u not streamed: %s", t->m->uid, error);
	if (t->streamed)
		t->refs++; /* for the APPEND */
}

static void on_body_literal(struct imap_client *cl, const struct imap_event *ev, void *aux)
{
	struct xfer_ctx *x = ((struct fetchcmd *)aux)->x;
	struct imap_client *h2 = x->r->side[1].cl;

	if (ev->type == IMAP_EV_LITERAL_START) {
		x->cur = xfer_find(x, fetch_uid(ev->msg)); /* UID precedes BODY[] */
		if (x->cur != NULL)
			stream_start(x->cur, ev->lit_size);
	} else if (ev->type == IMAP_EV_LITERAL_DATA && x->cur != NULL) {
		if (x->cur->wrong_size != 0) {
			/* --noallowsizemismatch refuses it: nothing to keep */
		} else if (!x->cur->streamed) {
			evbuffer_add(x->cur->body, ev->data, ev->len);
		} else if (imap_client_stream_write(h2, ev->data, ev->len) < 0) {
			x->cur->failed = 1;
		} else if (!x->paused && imap_client_output_pending(h2) > OUT_HIGH) {
			x->paused = 1;
			imap_client_pause_read(cl);
		}
	} else if (ev->type == IMAP_EV_LITERAL_END) {
		if (x->cur != NULL && x->cur->streamed && imap_client_stream_end(h2) < 0)
			x->cur->failed = 1;
		x->cur = NULL;
	}
}

/* --allowsizemismatch (on, imapsync's default): a body whose length is not
 * the RFC822.SIZE announced is copied as received, with a line saying so;
 * --noallowsizemismatch refuses it as a FETCH error. 1 = copy it. */
static int size_accepted(struct sy_run *r, const struct sy_folder *f, const struct sy_msg *e,
                         uint64_t got)
{
	if (got == e->size)
		return 1;
	if (r->o->allowsizemismatch) {
		sy_msgline(r,
		           "msg %s/%u {%u}: host1 sent %llu bytes, not its RFC822.SIZE; copied as "
		           "received (--noallowsizemismatch refuses it)",
		           f->name1, e->uid, e->size, (unsigned long long)got);
		return 1;
	}
	sy_error(r, SY_ERR_FETCH,
	         "- msg %s/%u {%u} not copied: host1 sent %llu bytes, not its RFC822.SIZE "
	         "(--noallowsizemismatch)",
	         f->name1, e->uid, e->size, (unsigned long long)got);
	return 0;
}

/* The FETCH stage of t is over: fail = NULL when its body is here. */
static void fetched(struct xfer *t, const char *fail)
{
	struct xfer_ctx *x = t->x;
	struct sy_run *r = x->r;
	char *flags, date[40];
	const char *error;
	int rc;

	xfer_unlink(t);
	if (t->streamed) {
		/* its APPEND is under way and on_append finishes it; if host1
		 * failed mid-body, ending the stream short drops host2's
		 * connection, so no partial message is stored */
		if (fail != NULL)
			imap_client_stream_end(r->side[1].cl);
		xfer_put(t);
		return;
	}
	if (fail != NULL || (evbuffer_get_length(t->body) == 0 && t->wrong_size == 0)) {
		sy_error(r, SY_ERR_FETCH, "- msg %s/%u {%u} could not be fetched: %s", x->f->name1,
		         t->m->uid, t->m->size, fail != NULL ? fail : "empty message");
		t->m->match = 0;
		xfer_done(t);
		xfer_put(t);
		return;
	}
	if (!size_accepted(r, x->f, t->m,
	                   t->wrong_size != 0 ? t->wrong_size : evbuffer_get_length(t->body))) {
		t->m->match = 0;
		xfer_done(t);
		xfer_put(t);
		return;
	}
	if (sy_select_body(r, x->f, t->m, t->body)) {
		t->m->match = 0; /* skipped (--skipmess, --maxlinelength...) */
		xfer_done(t);
		xfer_put(t);
		return;
	}
	if (sy_xform_apply(r, x->f, t->m, t->body) < 0) {
		t->m->match = 0; /* a transform failed for this message (recorded) */
		xfer_done(t);
		xfer_put(t);
		return;
	}
	flags = host2_flags(r, t->m->flags, x->m2);
	if (flags == NULL) {
		t->m->match = 0;
		xfer_done(t);
		xfer_put(t);
		return;
	}
	debug_flags(r, x->f, t->m, flags);
	if (t->m->addhdr) {
		char key[SY_HDRKEY_MAX], line[SY_HDRKEY_LINE_MAX];

		if (sy_hdrkey_addheader(r->hk, t->m->uid, t->m->size, key, line, &error) == 0)
			evbuffer_prepend(t->body, line, strlen(line));
	}
	sy_debug_content(r, x->f->name1, t->m->uid, t->body);
	t->refs++; /* for the APPEND */
	append_date(t, date, sizeof(date));
	rc = imap_client_cmdf(r->side[1].cl, on_append, NULL, NULL, t, &error, "APPEND %m %a%a %L",
	                      x->f->name2, flags, date, t->body);
	free(flags);
	if (rc < 0) {
		t->refs--;
		t->m->match = 0;
		sy_error(r, SY_ERR_APPEND, "- msg %s/%u could not append: %s", x->f->name1,
		         t->m->uid, error);
		xfer_done(t);
	}
	xfer_put(t);
}

/* The batch's tagged reply: a message that got no FETCH response (expunged
 * meanwhile, or the connection failed) is a failure. */
static void on_fetch_done(struct imap_client *cl, const struct imap_result *res, void *aux)
{
	struct fetchcmd *fc = aux;

	(void)cl;
	for (unsigned i = 0; i < fc->n; i++) {
		struct xfer *t = xfer_find(fc->x, fc->uid[i]);

		if (t == NULL)
			continue;
		if (res->status == IMAP_STATUS_OK && !t->streamed) {
			/* OK without a response: expunged on host1 since we listed
			 * it, a normal event in a live mailbox, not an error */
			struct sy_run *r = fc->x->r;

			sy_out(r, "msg %s/%u {%u} vanished from host1 during the sync, skipped",
			       fc->x->f->name1, t->m->uid, t->m->size);
			r->ident1--;
			xfer_unlink(t);
			t->m->match = -2; /* neither copied nor missing */
			xfer_done(t);
			xfer_put(t);
			continue;
		}
		fetched(t, res->status != IMAP_STATUS_OK ? res->text : "no FETCH response");
	}
	fc->x->fetches--;
	free(fc);
}

static struct xfer *xfer_new(struct xfer_ctx *x, struct sy_msg *e)
{
	struct xfer *t = calloc(1, sizeof(*t));

	if (t == NULL || (t->body = evbuffer_new()) == NULL)
		abort();
	t->x = x;
	t->m = e;
	t->refs = 1;
	t->next = x->active;
	x->active = t;
	e->match = -1; /* being copied */
	x->inflight++;
	x->held += e->size < STREAM_MIN ? e->size : 0;
	return t;
}

int sy_count_host1(struct sy_run *r, const struct sy_msg *e)
{
	if (!e->haskey) {
		r->noheader1++;
		return 0;
	}
	if (e->dup) {
		r->skipped++;
		return 0;
	}
	r->ident1++;
	return 1;
}

/* A host1 message this pass would copy. */
static int to_copy(const struct sy_msg *e)
{
	return e->haskey && !e->dup && !e->match && !e->skip;
}

/*
 * --checkmessageexists: before the next --split1 messages to copy from
 * m1->v[*from] on are fetched, one UID SEARCH UID on host1 says which still
 * exist; one that is gone is skipped as imapsync does (no FETCH, no error),
 * instead of failing its FETCH on servers that answer NO for expunged UIDs.
 * *from moves past the messages checked.
 */
static void check_exist(struct sy_run *r, const struct sy_folder *f, struct sy_msgs *m1,
                        size_t *from)
{
	size_t split = sy_split(r, 0), n = 0, k, pos = 0;
	uint32_t *uids = malloc(split * sizeof(*uids));
	struct sy_uids found = {NULL, 0, 0};
	struct sy_res res;
	char set[8192];

	if (uids == NULL)
		abort();
	for (k = *from; k < m1->n && n < split; k++) {
		if (to_copy(&m1->v[k]))
			uids[n++] = m1->v[k].uid;
	}
	*from = k;
	if (n > 0) {
		qsort(uids, n, sizeof(*uids), sy_u32_cmp);
		sy_uid_set_n(set, sizeof(set), uids, n, &pos, n);
		if (sy_cmd(r, 0, &res, sy_on_search, NULL, &found, "UID SEARCH UID %a", set) !=
		    IMAP_STATUS_OK) {
			n = 0; /* no answer: let the FETCH find out */
		}
		sy_uids_sort(&found);
	}
	for (size_t i = 0; i < n; i++) {
		struct sy_msg *e = sy_msgs_find(m1, uids[i]);

		if (e == NULL || sy_uids_has(&found, uids[i]))
			continue;
		sy_out(r,
		       "msg %s/%u {%u} does not exist anymore on host1, skipped "
		       "(--checkmessageexists)",
		       f->name1, e->uid, e->size);
		r->ident1--;
		e->match = -2; /* neither copied nor missing */
	}
	sy_uids_free(&found);
	free(uids);
}

/* --- the proxy's move hints (issue 6) ---
 *
 * A message a client moved from folder A to folder B through the proxy is
 * already on host2 in A's copy: the proxy's hint ("move", A, B, B's
 * UIDVALIDITY and the COPYUID sets, rkeys.h) and A's UID map give its host2
 * UID, and one UID COPY inside host2 replaces fetching and uploading it
 * again. Only what is certain is copied: B's UIDVALIDITY as hinted, A's
 * host2 UIDVALIDITY as mapped, and the host2 message's size and header key
 * equal to the host1 message's (the key imapsync identifies messages by);
 * everything else is copied the usual way. A2 is only EXAMINEd: its sync,
 * perhaps running in another worker, sees no change it did not make. */

#define HINT_UIDS_MAX 10000 /* UIDs of one hint looked at */

struct hinted {
	struct sy_msg *e;   /* the host1 message in B */
	const char *name2;  /* host2 folder holding A's copy (the state's string) */
	uint32_t uv2, uid2; /* its UIDVALIDITY and UID there */
	int copied;         /* copied into B (e->uid2) */
};

static int hinted_cmp(const void *a, const void *b)
{
	const struct hinted *x = a, *y = b;
	int c = strcmp(x->name2, y->name2);

	return c != 0 ? c : x->uid2 < y->uid2 ? -1 : x->uid2 > y->uid2;
}

/* "3:5,9" -> 3 4 5 9 in out[]; the count, or -1 (bad, "*", too many). */
static long hint_uids(const char *s, uint32_t *out, size_t max)
{
	struct imap_seqset set;
	const char *err;
	size_t n = 0;

	if (imap_seqset_parse(s, strlen(s), &set, &err) < 0)
		return -1;
	for (size_t k = 0; k < set.count; k++) {
		if (set.r[k].hi == UINT32_MAX || set.r[k].hi - set.r[k].lo >= max - n) {
			imap_seqset_free(&set);
			return -1;
		}
		for (uint64_t v = set.r[k].lo; v <= set.r[k].hi; v++)
			out[n++] = (uint32_t)v;
	}
	imap_seqset_free(&set);
	return (long)n;
}

struct copyuid_wait {
	int done;
	enum imap_status status;
	uint32_t uv;
	char *src, *dst;
	char text[200];
};

static void on_copyuid(struct imap_client *cl, const struct imap_result *res, void *aux)
{
	struct copyuid_wait *w = aux;
	const struct imap_arg *v, *src, *dst;

	(void)cl;
	w->done = 1;
	w->status = res->status;
	snprintf(w->text, sizeof(w->text), "%s", res->text != NULL ? res->text : "");
	if (res->status != IMAP_STATUS_OK || res->code == NULL || res->msg == NULL ||
	    strcmp(res->code, "COPYUID") != 0)
		return;
	v = res->msg->code_args;
	src = imap_arg_nth(v, 1);
	dst = imap_arg_nth(v, 2);
	if (imap_arg_get_u32(v, &w->uv) < 0 || src == NULL || dst == NULL ||
	    src->type != IMAP_ARG_ATOM || dst->type != IMAP_ARG_ATOM)
		return;
	w->src = xstrdup(src->str);
	w->dst = xstrdup(dst->str);
}

/* The host2 copies hints_read() took already (name2, uid2), in an
 * open-addressing set: a 10,000-message move is 10,000 lookups, not 10^8
 * comparisons. */
struct hseen_item {
	const char *name2; /* NULL: a free slot */
	uint32_t uid2;
};
struct hseen {
	struct hseen_item *v;
	size_t cap, n; /* cap: a power of 2, at most half full */
};

static size_t hseen_hash(const char *name2, uint32_t uid2)
{
	uint64_t x = (uint64_t)uid2 << 32;

	for (const char *p = name2; *p != '\0'; p++)
		x = (x ^ (unsigned char)*p) * 0x100000001b3ull;
	x ^= x >> 29;
	x *= 0xbf58476d1ce4e5b9ull;
	return (size_t)(x ^ (x >> 32));
}

/* Where (name2, uid2) is in the set, or the free slot it would take. */
static size_t hseen_slot(const struct hseen *s, const char *name2, uint32_t uid2)
{
	size_t i = hseen_hash(name2, uid2) & (s->cap - 1);

	while (s->v[i].name2 != NULL && (s->v[i].uid2 != uid2 || strcmp(s->v[i].name2, name2) != 0))
		i = (i + 1) & (s->cap - 1);
	return i;
}

static int hseen_has(const struct hseen *s, const char *name2, uint32_t uid2)
{
	return s->n > 0 && s->v[hseen_slot(s, name2, uid2)].name2 != NULL;
}

/* Adds (name2, uid2), which is not in the set. */
static void hseen_add(struct hseen *s, const char *name2, uint32_t uid2)
{
	if (2 * (s->n + 1) > s->cap) {
		struct hseen old = *s;

		s->cap = old.cap != 0 ? 2 * old.cap : 256;
		s->v = calloc(s->cap, sizeof(*s->v));
		if (s->v == NULL)
			abort();
		s->n = 0;
		for (size_t k = 0; k < old.cap; k++) {
			if (old.v[k].name2 != NULL)
				hseen_add(s, old.v[k].name2, old.v[k].uid2);
		}
		free(old.v);
	}
	s->v[hseen_slot(s, name2, uid2)] = (struct hseen_item){name2, uid2};
	s->n++;
}

/* The user's hint list (one LRANGE), on the state's connection (loaded on
 * it, saved on it later) or a new one; NULL when there is none. */
static redisReply *hints_fetch(struct sy_run *r)
{
	char key[1024];
	const char *err;
	redisContext *c, *own = NULL;
	redisReply *rep;

	if (r->o->redis == NULL || r->o->acc[0].user == NULL ||
	    rk_key_hint(key, sizeof(key), r->o->acc[0].user) < 0 ||
	    ((c = sy_state_redis(r->st)) == NULL &&
	     (c = own = rn_connect_for_key(r->o->redis, key, 2000, &err)) == NULL))
		return NULL;
	rep = redisCommand(c, "LRANGE %s 0 -1", key);
	if (own != NULL)
		redisFree(own);
	if (rep != NULL && (rep->type != REDIS_REPLY_ARRAY || rep->elements == 0)) {
		freeReplyObject(rep);
		rep = NULL;
	}
	return rep;
}

/* A move or copy hint's six fields, in *line_r (a copy of e's text, the
 * caller frees): 0, or -1 for anything else (nothing to free then). */
static int hint_split(const redisReply *e, char **line_r, char *fld[6])
{
	char *save = NULL;
	int nf = 0;

	*line_r = NULL;
	if (e->type != REDIS_REPLY_STRING)
		return -1;
	*line_r = xstrdup(e->str);
	for (char *t = strtok_r(*line_r, "\t", &save); t != NULL && nf < 6;
	     t = strtok_r(NULL, "\t", &save))
		fld[nf++] = t;
	if (nf != 6 || (strcmp(fld[0], "move") != 0 && strcmp(fld[0], "copy") != 0)) {
		free(*line_r);
		*line_r = NULL;
		return -1;
	}
	return 0;
}

/* The split hint names folder canon_to, UIDVALIDITY uv, as its target. */
static int hint_to(char *const fld[6], const char *canon_to, uint32_t uv)
{
	return strcmp(fld[2], canon_to) == 0 && strtoul(fld[3], NULL, 10) == uv;
}

/* The hints this pass used up (copy_by_hints() removes them at its end). */
struct hints_used {
	char **line;
	size_t n;
};

static void hints_use(struct hints_used *used, const char *line)
{
	used->line = realloc(used->line, (used->n + 1) * sizeof(*used->line));
	if (used->line == NULL)
		abort();
	used->line[used->n++] = xstrdup(line);
}

/* The hints naming B (canon_to) as a move's target: h[] gets the B messages
 * to copy whose A copy the state maps; *used every hint that named B in its
 * current UIDVALIDITY (this pass copies or uploads every message of B). */
static size_t hints_read(struct sy_run *r, const struct sy_folder *f, struct sy_msgs *m1,
                         const char *canon_to, struct hinted **h_r, struct hints_used *used)
{
	redisReply *rep;
	struct hinted *h = NULL;
	size_t nh = 0, cap = 0;
	uint32_t *src = NULL, *dst = NULL;
	struct sy_mapped *map = NULL;
	struct hseen seen = {NULL, 0, 0};
	uint8_t *took = NULL; /* m1's messages already in h[], by position */

	*h_r = NULL;
	if ((rep = hints_fetch(r)) != NULL) {
		src = malloc(HINT_UIDS_MAX * sizeof(*src));
		dst = malloc(HINT_UIDS_MAX * sizeof(*dst));
		map = malloc(HINT_UIDS_MAX * sizeof(*map));
		took = calloc(m1->n + 1, 1);
		if (src == NULL || dst == NULL || map == NULL || took == NULL)
			abort();
	}
	for (size_t k = 0; rep != NULL && k < rep->elements; k++) {
		char *line, *fld[6];
		long ns, nd;

		if (hint_split(rep->element[k], &line, fld) < 0)
			continue;
		if (!hint_to(fld, canon_to, m1->uidvalidity)) {
			free(line);
			continue;
		}
		hints_use(used, rep->element[k]->str);
		if ((ns = hint_uids(fld[4], src, HINT_UIDS_MAX)) <= 0 ||
		    (nd = hint_uids(fld[5], dst, HINT_UIDS_MAX)) != ns) {
			free(line);
			continue;
		}
		sy_state_map_find_uids(r, r->st, fld[1], src, (size_t)ns, map);
		for (long j = 0; j < ns; j++) {
			struct sy_msg *e = sy_msgs_find(m1, dst[j]);
			const char *name2 = map[j].name2;
			uint32_t uv2 = map[j].uv2, uid2 = map[j].uid2;

			if (e == NULL || !e->haskey || e->dup || e->match || e->skip || uid2 == 0 ||
			    strcmp(name2, f->name2) == 0)
				continue;
			/* one B message per hint, and one per host2 copy: a message
			 * copied twice to B (two hints naming it) is copied inside
			 * host2 once, the other one uploaded */
			if (took[e - m1->v] || hseen_has(&seen, name2, uid2))
				continue;
			took[e - m1->v] = 1;
			hseen_add(&seen, name2, uid2);
			if (nh == cap) {
				cap = cap != 0 ? 2 * cap : 64;
				h = realloc(h, cap * sizeof(*h));
				if (h == NULL)
					abort();
			}
			h[nh].e = e;
			h[nh].name2 = name2;
			h[nh].uv2 = uv2;
			h[nh].uid2 = uid2;
			h[nh].copied = 0;
			nh++;
		}
		free(line);
	}
	freeReplyObject(rep);
	free(src);
	free(dst);
	free(map);
	free(seen.v);
	free(took);
	*h_r = h;
	return nh;
}

size_t sy_hints_moved_from(struct sy_run *r, const char *canon_from, uint32_t **uids_r)
{
	redisReply *rep = hints_fetch(r);
	uint32_t *uids = NULL, *one = NULL;
	size_t n = 0, cap = 0;

	*uids_r = NULL;
	for (size_t k = 0; rep != NULL && k < rep->elements; k++) {
		char *line, *fld[6];
		long ns;

		if (hint_split(rep->element[k], &line, fld) < 0)
			continue;
		if (one == NULL && (one = malloc(HINT_UIDS_MAX * sizeof(*one))) == NULL)
			abort();
		if (strcmp(fld[0], "move") == 0 && strcmp(fld[1], canon_from) == 0 &&
		    (ns = hint_uids(fld[4], one, HINT_UIDS_MAX)) > 0) {
			if (n + (size_t)ns > cap) {
				cap = n + (size_t)ns > 2 * cap ? n + (size_t)ns : 2 * cap;
				uids = realloc(uids, cap * sizeof(*uids));
				if (uids == NULL)
					abort();
			}
			memcpy(uids + n, one, (size_t)ns * sizeof(*uids));
			n += (size_t)ns;
		}
		free(line);
	}
	freeReplyObject(rep);
	free(one);
	if (n > 0)
		qsort(uids, n, sizeof(*uids), sy_u32_cmp);
	*uids_r = uids;
	return n;
}

/* Keys equal but for a duplicate number ("#n", --syncduplicates: the n-th
 * copy in its folder; a key's md5 and size never hold a '#'). */
static int same_base_key(const char *a, const char *b)
{
	size_t la = strcspn(a, "#"), lb = strcspn(b, "#");

	return la == lb && strncmp(a, b, la) == 0;
}

/* One host2 folder's hinted messages h[0..n): checked, then one UID COPY. */
static void copy_group(struct sy_run *r, const struct sy_folder *f, struct sy_msgs *m2,
                       struct hinted *h, size_t n)
{
	struct sy_msgs ma;
	struct sy_res res;
	struct copyuid_wait w;
	char item[256], set[8192];
	uint32_t *uids = malloc((n + 1) * sizeof(*uids)), *src = NULL, *dst = NULL;
	size_t nu = 0, pos = 0;
	long ns = 0;
	const char *error;

	if (uids == NULL)
		abort();
	memset(&ma, 0, sizeof(ma));
	memset(&w, 0, sizeof(w));
	ma.r = r;
	ma.side = 1;
	if (sy_cmd(r, 1, &res, sy_on_select, NULL, &ma, "EXAMINE %m", h[0].name2) !=
	            IMAP_STATUS_OK ||
	    ma.uidvalidity != h[0].uv2)
		goto out;
	for (size_t k = 0; k < n; k++)
		uids[nu++] = h[k].uid2;
	sy_uid_set(set, sizeof(set), uids, nu, &pos);
	sy_hdrkey_fetch_item(r->hk, item, sizeof(item));
	if (sy_cmd(r, 1, &res, on_meta, NULL, &ma, "UID FETCH %a (UID RFC822.SIZE %a)", set,
	           item) != IMAP_STATUS_OK)
		goto out;
	nu = 0;
	for (size_t k = 0; k < n; k++) {
		const struct sy_msg *a = sy_msgs_find(&ma, h[k].uid2);

		if (a != NULL && a->haskey && a->size == h[k].e->size &&
		    same_base_key(a->key, h[k].e->key))
			uids[nu++] = h[k].uid2;
	}
	pos = 0;
	if (nu == 0 || sy_uid_set(set, sizeof(set), uids, nu, &pos) != nu ||
	    imap_client_cmdf(r->side[1].cl, on_copyuid, NULL, NULL, &w, &error, "UID COPY %a %m",
	                     set, f->name2) < 0)
		goto out;
	imap_client_wait(r->side[1].cl, &w.done);
	if (w.status != IMAP_STATUS_OK || w.src == NULL || w.uv != m2->uidvalidity)
		goto out;
	src = malloc(HINT_UIDS_MAX * sizeof(*src));
	dst = malloc(HINT_UIDS_MAX * sizeof(*dst));
	if (src == NULL || dst == NULL)
		abort();
	ns = hint_uids(w.src, src, HINT_UIDS_MAX);
	if (ns <= 0 || hint_uids(w.dst, dst, HINT_UIDS_MAX) != ns)
		goto out;
	for (long j = 0; j < ns; j++) {
		for (size_t k = 0; k < n; k++) {
			struct sy_msg *e = h[k].e;
			if (h[k].uid2 != src[j] || e->match != 0)
				continue;
			e->match = -1; /* copied: what an APPEND would have done */
			e->uid2 = dst[j];
			h[k].copied = 1;  /* its flags are set once B is selected again */
			r->transferred++; /* on host2 now, as an APPEND would have put it */
			r->bytes_transferred += e->size;
			sy_msgline(r,
			           "msg %s/%u {%u} copied to %s/%u inside host2, from %s/%u (moved "
			           "or copied on host1 through the proxy)",
			           f->name1, e->uid, e->size, f->name2, dst[j], h[k].name2, src[j]);
			break; /* each copy to one message only */
		}
	}
out:
	sy_msgs_free(&ma);
	free(w.src);
	free(w.dst);
	free(src);
	free(dst);
	free(uids);
}

/* Removes the hints a pass used: a hint is used once (the list stays short,
 * and the daemon makes a move's source folder wait for its target's sync,
 * --delete2, only while its hint is unused). */
static void hints_forget(struct sy_run *r, struct hints_used *used)
{
	char key[1024];
	const char *err;
	redisContext *c, *own = NULL;

	if (used->n > 0 && rk_key_hint(key, sizeof(key), r->o->acc[0].user) >= 0 &&
	    ((c = sy_state_redis(r->st)) != NULL ||
	     (c = own = rn_connect_for_key(r->o->redis, key, 2000, &err)) != NULL)) {
		for (size_t k = 0; k < used->n; k++)
			redisAppendCommand(c, "LREM %s 0 %s", key, used->line[k]);
		for (size_t k = 0; k < used->n; k++) {
			redisReply *rep = NULL;

			if (redisGetReply(c, (void **)&rep) != REDIS_OK)
				break;
			freeReplyObject(rep);
		}
		if (own != NULL)
			redisFree(own);
	}
	for (size_t k = 0; k < used->n; k++)
		free(used->line[k]);
	free(used->line);
	memset(used, 0, sizeof(*used));
}

/* Every hint naming canon_to, UIDVALIDITY uv, as its target, into *used. */
static struct hints_used *hints_naming(struct sy_run *r, const char *canon_to, uint32_t uv,
                                       struct hints_used *used)
{
	redisReply *rep = hints_fetch(r);

	for (size_t k = 0; rep != NULL && k < rep->elements; k++) {
		char *line, *fld[6];

		if (hint_split(rep->element[k], &line, fld) < 0)
			continue;
		if (hint_to(fld, canon_to, uv))
			hints_use(used, rep->element[k]->str);
		free(line);
	}
	freeReplyObject(rep);
	return used;
}

static void copy_by_hints(struct sy_run *r, const struct sy_folder *f, struct sy_msgs *m1,
                          struct sy_msgs *m2)
{
	struct hints_used used = {NULL, 0};
	char canon_to[1024];
	struct hinted *h;
	size_t nh, want = 0;
	struct sy_msgs again;
	struct sy_res res;

	if (r->o->redis == NULL || r->st == NULL || r->o->dry || r->o->acc[0].user == NULL ||
	    m1->uidvalidity == 0 || m2->uidvalidity == 0 || r->side[1].cl == NULL ||
	    rk_folder_canon(canon_to, sizeof(canon_to), f->name1, strlen(f->name1), 0,
	                    r->side[0].sep) < 0)
		return;
	for (size_t k = 0; k < m1->n; k++)
		want += to_copy(&m1->v[k]);
	if (want == 0 || !imap_caps_has(imap_client_caps(r->side[1].cl), IMAP_CAP_UIDPLUS)) {
		/* nothing copied this way, and this pass leaves nothing of
		 * this folder to copy: with --delete2 the hints naming it are
		 * used up all the same (the daemon makes a move's source
		 * folder wait while one is unused) */
		if (r->o->delete2)
			hints_forget(r, hints_naming(r, canon_to, m1->uidvalidity, &used));
		return;
	}
	nh = hints_read(r, f, m1, canon_to, &h, &used);
	if (nh == 0) {
		hints_forget(r, &used);
		return;
	}
	qsort(h, nh, sizeof(*h), hinted_cmp);
	for (size_t k = 0, end; k < nh && !r->stop; k = end) {
		for (end = k + 1; end < nh && strcmp(h[end].name2, h[k].name2) == 0; end++)
			;
		copy_group(r, f, m2, h + k, end - k);
	}
	/* host2 back on B, as the pass left it */
	memset(&again, 0, sizeof(again));
	if (sy_cmd(r, 1, &res, sy_on_select, NULL, &again, "SELECT %m", f->name2) !=
	            IMAP_STATUS_OK ||
	    again.uidvalidity != m2->uidvalidity) {
		sy_error(r, SY_ERR_SELECT, "Host2: could not select %s again: %s", f->name2,
		         res.text);
		nh = 0;
	}
	/* a copy has A's flags (perhaps older than host1's): B's are set, as
	 * an APPEND would have set them; only now, B being selected */
	for (size_t k = 0; k < nh; k++) {
		char *flags, *store = NULL;

		if (!h[k].copied || (flags = host2_flags(r, h[k].e->flags, m2)) == NULL)
			continue;
		/* NULL store: no flag at all, which the copy must not keep either */
		if (sy_flags_store(flags, "", &store) >= 0 &&
		    sy_cmd(r, 1, &res, NULL, NULL, NULL, "UID STORE %u %a", h[k].e->uid2,
		           store != NULL ? store : "FLAGS.SILENT ()") != IMAP_STATUS_OK)
			sy_error(r, SY_ERR_FLAGS,
			         "Host2 folder %s: could not set the flags of %u: %s", f->name2,
			         h[k].e->uid2, res.text);
		free(store);
		free(flags);
	}
	free(h);
	sy_msgs_free(&again);
	hints_forget(r, &used);
}

void sy_copy_messages(struct sy_run *r, const struct sy_folder *f, struct sy_msgs *m1,
                      struct sy_msgs *m2)
{
	struct xfer_ctx x;
	size_t k = 0, batch, window, checked = 0;

	copy_by_hints(r, f, m1, m2); /* moves seen by the proxy: copied inside host2 */
	memset(&x, 0, sizeof(x));
	x.r = r;
	x.f = f;
	x.m2 = m2;
	for (size_t i = 0; i < m1->n; i++) {
		if (m1->v[i].haskey && !m1->v[i].dup && !m1->v[i].match && !m1->v[i].skip)
			x.to_copy++;
	}
	/* per-message --delete1 only on a full, complete list of a folder
	 * SELECTed read-write, with UIDPLUS (else sy_delete_after_pass()) */
	x.del1 = r->o->delete1 && r->o->expungeaftereach && !sy_dry1(r) && m1->n >= m1->exists &&
	         m2->n >= m2->exists && sy_delete1_expunge(r) == SY_XP_UIDS && m1->rw;
	imap_client_set_drained(r->side[1].cl, OUT_HIGH / 4, on_host2_drained, &x);
	/* --split1: bodies per host1 FETCH; --split2: APPENDs in flight */
	batch = sy_split(r, 0) < FETCH_BATCH ? sy_split(r, 0) : FETCH_BATCH;
	window = sy_split(r, 1) < WINDOW_MSGS ? sy_split(r, 1) : WINDOW_MSGS;
	for (;;) {
		while (k < m1->n && x.inflight < window &&
		       (x.held < WINDOW_BYTES || x.inflight == 0) && !r->stop &&
		       imap_client_state(r->side[0].cl) != IMAP_CL_FAILED &&
		       imap_client_state(r->side[1].cl) != IMAP_CL_FAILED) {
			struct fetchcmd *fc;

			if (r->o->checkmessageexists && !r->o->dry && k >= checked) {
				checked = k;
				check_exist(r, f, m1, &checked);
				continue; /* the loop's conditions may have changed */
			}
			fc = calloc(1, sizeof(*fc));
			char set[FETCH_BATCH * 12 + 1] = "";
			size_t len = 0;
			const char *error;

			if (fc == NULL)
				abort();
			fc->x = &x;
			/* small bodies in batches; a big one alone (streamed) */
			while (k < m1->n && fc->n < batch && x.inflight < window &&
			       (k < checked || !r->o->checkmessageexists || r->o->dry)) {
				struct sy_msg *e = &m1->v[k];

				if (!e->haskey || e->dup || e->match || e->skip) {
					k++;
					continue;
				}
				if (r->o->dry) {
					k++;
					r->would_copy++;
					sy_out(r,
					       "msg %s/%u {%u} copied to %s (not really since "
					       "--dry "
					       "mode)",
					       f->name1, e->uid, e->size, f->name2);
					continue;
				}
				if (e->size >= STREAM_MIN && fc->n > 0)
					break;
				k++;
				xfer_new(&x, e);
				fc->uid[fc->n++] = e->uid;
				len += (size_t)snprintf(set + len, sizeof(set) - len, "%s%u",
				                        len > 0 ? "," : "", e->uid);
				if (e->size >= STREAM_MIN)
					break;
			}
			if (fc->n == 0) {
				free(fc);
				continue;
			}
			if (imap_client_cmdf(r->side[0].cl, on_fetch_done, on_body, on_body_literal,
			                     fc, &error, "UID FETCH %a (BODY.PEEK[])", set) < 0) {
				for (unsigned i = 0; i < fc->n; i++) {
					struct xfer *t = xfer_find(&x, fc->uid[i]);

					if (t != NULL)
						fetched(t, error);
				}
				free(fc);
			} else {
				x.fetches++;
			}
		}
		/* host2 gone while host1 was paused for it: host1's answers
		 * must still be read to the end */
		if (x.paused && r->side[0].cl != NULL &&
		    (r->side[1].cl == NULL || imap_client_state(r->side[1].cl) == IMAP_CL_FAILED)) {
			x.paused = 0;
			imap_client_resume_read(r->side[0].cl);
		}
		/* also every FETCH answered: their handlers point at x, which
		 * ends with this function (host2 may have failed with a big
		 * body still coming from host1) */
		if (x.inflight == 0 && x.pending1 == 0 && x.fetches == 0)
			break;
		if (event_base_loop(r->base, EVLOOP_ONCE) != 0)
			break;
	}
	if (r->side[1].cl != NULL)
		imap_client_set_drained(r->side[1].cl, 0, NULL, NULL);
	if (x.paused && r->side[0].cl != NULL)
		imap_client_resume_read(r->side[0].cl);
}

/* Flags of messages on both sides: one FLAGS.SILENT per difference,
 * pipelined. Keyword case is not a difference (RFC 3501: flags are
 * case-insensitive; imapsync churns on it, #227). */
struct store_wait {
	unsigned pending;
	struct sy_run *r;
};

static void on_store(struct imap_client *cl, const struct imap_result *res, void *aux)
{
	struct store_wait *w = aux;

	(void)cl;
	w->pending--;
	if (res->status != IMAP_STATUS_OK)
		sy_error(w->r, SY_ERR_FLAGS, "Host2: flags msg could not add flags: %s",
		         res->text != NULL ? res->text : "");
}

struct store_group {
	char *store;    /* "FLAGS.SILENT (...)" */
	uint32_t *uids; /* host2 UIDs that get it */
	size_t n;
};

/* Messages whose flags differ get one UID STORE per distinct flag set
 * ("UID STORE 3:7,12 FLAGS.SILENT (\\Seen)"), pipelined, not one per
 * message as imapsync sends them. */
void sy_resync_flags(struct sy_run *r, const struct sy_folder *f, struct sy_msgs *m1,
                     struct sy_msgs *m2)
{
	struct store_wait w = {0, r};
	struct store_group *g = NULL;
	size_t ng = 0;

	for (size_t k = 0; k < m1->n && !r->stop; k++) {
		struct sy_msg *e1 = &m1->v[k], *e2;
		char *want, *store = NULL;
		size_t i;

		if (e1->match <= 0)
			continue;
		e2 = &m2->v[e1->match - 1];
		want = host2_flags(r, e1->flags, m2);
		if (want == NULL ||
		    sy_flags_store(want, e2->flags != NULL ? e2->flags : "", &store) <= 0) {
			if (want != NULL && r->o->debugflags)
				sy_out(r,
				       "debugflags: msg %s/%u: host1 flags (%s), host2 %s/%u has "
				       "(%s): "
				       "nothing to change",
				       f->name1, e1->uid, e1->flags != NULL ? e1->flags : "",
				       f->name2, e2->uid, e2->flags != NULL ? e2->flags : "");
			free(want);
			continue;
		}
		if (r->o->debugflags)
			sy_out(r,
			       "debugflags: msg %s/%u: host1 flags (%s), host2 %s/%u has (%s): %s",
			       f->name1, e1->uid, e1->flags != NULL ? e1->flags : "", f->name2,
			       e2->uid, e2->flags != NULL ? e2->flags : "", store);
		if (r->o->dry)
			sy_out(r,
			       "Host2: msg %s/%u would get flags %s (not really since --dry mode)",
			       f->name2, e2->uid, want);
		free(want);
		for (i = 0; i < ng && strcmp(g[i].store, store) != 0; i++)
			;
		if (i == ng) {
			g = realloc(g, (ng + 1) * sizeof(*g));
			if (g == NULL)
				abort();
			g[ng].store = store;
			g[ng].uids = NULL;
			g[ng].n = 0;
			ng++;
		} else {
			free(store);
		}
		g[i].uids = realloc(g[i].uids, (g[i].n + 1) * sizeof(*g[i].uids));
		if (g[i].uids == NULL)
			abort();
		g[i].uids[g[i].n++] = e2->uid;
	}
	for (size_t i = 0; i < ng; i++) {
		size_t pos = 0;

		qsort(g[i].uids, g[i].n, sizeof(*g[i].uids), sy_u32_cmp);
		while (!r->o->dry && pos < g[i].n) {
			char set[8192];
			const char *error;

			sy_uid_set_n(set, sizeof(set), g[i].uids, g[i].n, &pos, sy_split(r, 1));
			if (imap_client_cmdf(r->side[1].cl, on_store, NULL, NULL, &w, &error,
			                     "UID STORE %a %a", set, g[i].store) == 0)
				w.pending++;
		}
		free(g[i].store);
		free(g[i].uids);
	}
	free(g);
	while (w.pending > 0 && event_base_loop(r->base, EVLOOP_ONCE) == 0)
		;
}

/*
 * --useuid: host1 messages are matched through the UID map of earlier runs
 * (its UIDVALIDITYs checked, unlike imapsync's cache); a host1 UID not in
 * the map, or whose host2 UID is gone, is copied. No header is read.
 */
static void match_by_uid(struct sy_run *r, struct sy_msgs *m1, struct sy_msgs *m2,
                         const struct sy_uidpair *map, size_t nmap)
{
	size_t j = 0;

	/* both lists come in UID order from UID FETCH 1:*, the map is sorted */
	for (size_t k = 0; k < m1->n; k++) {
		struct sy_msg *e = &m1->v[k];

		e->haskey = 1;
		snprintf(e->key, sizeof(e->key), "U:%u", e->uid);
		while (j < nmap && map[j].uid1 < e->uid)
			j++;
		if (j < nmap && map[j].uid1 == e->uid) {
			for (size_t i = 0; i < m2->n; i++) {
				if (m2->v[i].uid == map[j].uid2) {
					e->match = (int)i + 1;
					e->uid2 = map[j].uid2;
					r->skipped++;
					r->bytes_skipped += e->size;
					break;
				}
			}
		}
	}
}

/* The folder's host1 -> host2 UID pairs, for --usecache/--useuid runs. */
void sy_record_map(struct sy_run *r, const struct sy_folder *f, const struct sy_msgs *m1,
                   const struct sy_msgs *m2)
{
	struct sy_uidpair *pairs = malloc((m1->n + 1) * sizeof(*pairs));
	size_t n = 0;

	if (pairs == NULL)
		abort();
	for (size_t k = 0; k < m1->n; k++) {
		const struct sy_msg *e = &m1->v[k];
		uint32_t uid2 = e->uid2;

		if (uid2 == 0 && e->match > 0)
			uid2 = m2->v[e->match - 1].uid;
		if (uid2 != 0) {
			pairs[n].uid1 = e->uid;
			pairs[n].uid2 = uid2;
			n++;
		}
	}
	if (m1->uidvalidity != 0 && m2->uidvalidity != 0)
		sy_state_map_put(r->st, f, m1->uidvalidity, m2->uidvalidity, pairs, n);
	free(pairs);
}

/*
 * --skipcrossduplicates (imapsync's h2_folders_of_md5): this folder's host2
 * keys join the run's set; a host1 message not on this host2 folder whose
 * key is already in another host2 folder (found there earlier in the run,
 * or copied there) is not copied. It stays identified (not "in host1, not
 * in host2": it is on host2) and is never deleted by --delete1.
 */
static void cross_duplicates(struct sy_run *r, const struct sy_folder *f, struct sy_msgs *m1,
                             const struct sy_msgs *m2)
{
	char where[1024];

	for (size_t k = 0; k < m2->n; k++) {
		if (m2->v[k].haskey)
			sy_xdup_add(r->xdup, m2->v[k].key, f->name2);
	}
	for (size_t k = 0; k < m1->n; k++) {
		struct sy_msg *e = &m1->v[k];

		if (!e->haskey || e->dup || e->match || e->skip ||
		    sy_xdup_find(r->xdup, e->key, f->name2, where, sizeof(where)) == 0)
			continue;
		if (r->o->debugcrossduplicates)
			sy_out(r,
			       "Host1: msg %s/%u {%u} is a crossduplicate: key %s already in host2 "
			       "folder %s, not copied (--skipcrossduplicates)",
			       f->name1, e->uid, e->size, e->key, where);
		e->skip = 1;
		r->crossdup2++;
	}
}

/* The keys this pass put on host2 (or would have, under --dry). */
static void cross_duplicates_copied(struct sy_run *r, const struct sy_folder *f,
                                    const struct sy_msgs *m1)
{
	for (size_t k = 0; k < m1->n; k++) {
		const struct sy_msg *e = &m1->v[k];

		if (e->match == -1 ||
		    (r->o->dry && e->haskey && !e->dup && e->match == 0 && !e->skip))
			sy_xdup_add(r->xdup, e->key, f->name2);
	}
}

void sy_copy_folder(struct sy_run *r, const struct sy_folder *f, unsigned idx, unsigned total)
{
	struct sy_msgs m1, m2;
	struct sy_kindex ix2 = {0}, ix1 = {0};
	struct sy_res res;
	char pos[32], n1[300], n2[300];
	struct sy_uidpair *map = NULL;
	size_t nmap = 0;
	int byuid, complete;

	memset(&m1, 0, sizeof(m1));
	memset(&m2, 0, sizeof(m2));
	m1.r = m2.r = r;
	m2.side = 1;
	snprintf(pos, sizeof(pos), "%u/%u", idx, total);
	snprintf(n1, sizeof(n1), "[%s]", f->name1);
	snprintf(n2, sizeof(n2), "[%s]", f->name2);
	sy_out(r, "Folder %7s %-35s -> %-35s", pos, n1, n2);
	/* host1 is only written to for --delete1 and --expunge1 */
	m1.rw = (r->o->delete1 || r->o->expunge1) && !sy_dry1(r);
	if (sy_cmd(r, 0, &res, sy_on_select, NULL, &m1, m1.rw ? "SELECT %m" : "EXAMINE %m",
	           f->name1) != IMAP_STATUS_OK) {
		sy_error(r, SY_ERR_SELECT, "Host1 folder %s: Could not select: %s", f->name1,
		         res.text);
		return;
	}
	if (m1.rw && sy_options_given(r->o, SY_OPT_EXPUNGE1) && r->o->expunge1) {
		/* --expunge1 asked for by name: imapsync expunges before the sync */
		m1.exists = 0;
		if (sy_cmd(r, 0, &res, NULL, NULL, NULL, "EXPUNGE") != IMAP_STATUS_OK ||
		    sy_cmd(r, 0, &res, sy_on_select, NULL, &m1, "SELECT %m", f->name1) !=
		            IMAP_STATUS_OK) {
			sy_error(r, SY_ERR_SELECT, "Host1 folder %s: could not EXPUNGE: %s",
			         f->name1, res.text);
			return;
		}
	}
	if (!f->exists2 && r->o->dry) {
		/* --dry: host2 folder not created, everything would be copied */
		m2.exists = 0;
	} else if (sy_cmd(r, 1, &res, sy_on_select, NULL, &m2, "SELECT %m", f->name2) !=
	           IMAP_STATUS_OK) {
		sy_error(r, SY_ERR_SELECT, "Host2 folder %s: Could not select: %s", f->name2,
		         res.text);
		return;
	}
	if (r->o->justfolders) {
		r->folders_synced++;
		return;
	}
	map = NULL;
	nmap = 0;
	if ((r->o->useuid || r->o->usecache) && r->st != NULL &&
	    sy_state_map_get(r->st, f, m1.uidvalidity, m2.uidvalidity, &map, &nmap) < 0 &&
	    r->o->useuid)
		sy_out(r,
		       "Folder %s: no UID map for UIDVALIDITY %u/%u (first run, or a folder was "
		       "recreated): identifying by headers this time",
		       f->name1, m1.uidvalidity, m2.uidvalidity);
	byuid = r->o->useuid && map != NULL;
	if (sy_read_side(r, 0, &m1, !byuid, 1) < 0 || sy_read_side(r, 1, &m2, !byuid, 1) < 0)
		goto out;
	/* every message answered on both sides (deletions rely on it) */
	complete = m1.n >= m1.exists && m2.n >= m2.exists;
	/* --maxage/--minage/--search: only the window, on both sides */
	if (sy_select_window(r, 0, f, &m1) < 0 || sy_select_window(r, 1, f, &m2) < 0)
		goto out;
	if (byuid) {
		match_by_uid(r, &m1, &m2, map, nmap);
		goto copy;
	}
	sy_kindex_build(&ix1, &m1, r, 0);
	sy_kindex_build(&ix2, &m2, r, 1);
	for (size_t k = 0; k < m1.n; k++) {
		struct sy_msg *e = &m1.v[k], *o;

		if (!sy_count_host1(r, e))
			continue;
		o = sy_kindex_get(&ix2, &m2, e->key);
		if (o != NULL) {
			e->match = (int)(o - m2.v) + 1;
			r->skipped++;
			r->bytes_skipped += e->size;
		}
	}
	for (size_t k = 0; k < m2.n; k++) {
		struct sy_msg *e = &m2.v[k];

		if (!e->haskey) {
			r->noheader2++;
			continue;
		}
		if (e->dup)
			continue;
		r->ident2++;
		if (sy_kindex_get(&ix1, &m1, e->key) == NULL)
			r->in2_not_in1++;
	}
	if (r->xdup != NULL)
		cross_duplicates(r, f, &m1, &m2);
copy:
	for (size_t k = 0; k < m1.n; k++)
		complete = complete && m1.v[k].haskey; /* a host1 key missing: not complete */
	sy_select_sizes(r, f, &m1);
	sy_copy_messages(r, f, &m1, &m2);
	if (r->xdup != NULL)
		cross_duplicates_copied(r, f, &m1);
	if (r->o->synclabels || r->o->resynclabels)
		sy_labels_folder(r, f, &m1, &m2); /* Gmail only (sy_labels_usable()) */
	if (r->o->resyncflags)
		sy_resync_flags(r, f, &m1, &m2);
	sy_delete_after_pass(r, f, &m1, &m2, byuid ? NULL : &ix1, complete);
	for (size_t k = 0; k < m1.n; k++) {
		const struct sy_msg *e = &m1.v[k];

		if (e->haskey && !e->dup && e->match == 0 && !e->skip)
			r->in1_not_in2++;
	}
	if (r->st != NULL && !r->o->dry) /* every pass: issue 4 builds on it */
		sy_record_map(r, f, &m1, &m2);
	r->folders_synced++;
out:
	free(map);
	free(ix1.slot);
	free(ix2.slot);
	sy_msgs_free(&m1);
	sy_msgs_free(&m2);
}
