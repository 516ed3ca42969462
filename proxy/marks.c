/*
 * marks.c - see marks.h.
 *
 * A Redis Cluster: the struct below is a "lane", one per node (see its
 * first fields); what follows describes one lane, and a standalone Redis is
 * the one lane there is. A reply "-MOVED slot host:port" teaches the slot's
 * lane and the item is sent again there (redirect_note/redirect_take).
 *
 * One hiredis 0.14.1 async context on the proxy's event base. Everything the
 * proxy asks for becomes an item: a mark (one ZADD), a hint (LPUSH, LTRIM,
 * EXPIRE), the sweep flag (SET) or a route lookup (HGETALL). Marks and hints
 * wait in the ring, route lookups in their own queue; a flush event sends
 * them once per loop pass, so marks made in the same pass coalesce. A sent
 * item moves to the in-flight list (oldest first; Redis answers in order)
 * until its last reply.
 *
 * hiredis 0.14 rules followed here (replication-design.md section 5):
 * - no async timeouts: conn_timer watches the connect and the oldest
 *   unanswered command;
 * - the context is never freed inside one of its callbacks: failures set
 *   PM_CLOSING and activate close_ev, which calls redisAsyncFree from the
 *   event loop; redisAsyncFree then calls every pending reply callback with
 *   a NULL reply, and those items go back to the ring;
 * - no user callback ever runs inside a hiredis callback (route answers and
 *   the drain callback are delivered from our own events), so a user may
 *   call px_marks_free from any callback it gets.
 */
#include "marks.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include <event2/event.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "imapferry/log.h"
#include "imapferry/rnodes.h"
#include "imapferry/xalloc.h"

#define PM_DEFAULT_PORT         6379
#define PM_DEFAULT_TIMEOUT_MS   1000u
#define PM_DEFAULT_RING_MAX     65536u
#define PM_DEFAULT_OVERFLOW_MAX 1024u
#define PM_BACKOFF_MIN_MS       100u
#define PM_BACKOFF_MAX_MS       5000u
/* Items sent and not yet answered: bounds hiredis's buffers when Redis is
 * slow but alive (the rest waits in the bounded ring). */
#define PM_INFLIGHT_MAX 1024u
/* Longer users and folder names or hints are refused (logged, counted as
 * errors): no real account comes near, and keys stay small. */
#define PM_USER_MAX 512u
/* Burst detection: one entry per hash slot (mark_debounce()). */
#define PM_HEAT_SLOTS 4096u
#define PM_TEXT_MAX   8192u
/* Redis Cluster nodes one proxy writes to (a lane each, ring_max each). */
#define PM_LANES_MAX 64u
/* Last known routes kept for lookups Redis cannot answer (direct-mapped). */
#define PM_RCACHE_SLOTS 65536u
/* MOVED/ASK redirections one item follows before it counts as an error. */
#define PM_REDIRECTS_MAX 5u

enum pm_kind { PM_MARK, PM_HINT, PM_SWEEP, PM_ROUTE, PM_KIND_COUNT };
enum pm_state { PM_DOWN, PM_CONNECTING, PM_UP, PM_CLOSING };

struct pm_item {
	struct pm_item *prev, *next; /* in ring, inflight or routes_q */
	struct pm_item *hnext;       /* coalescing hash chain (marks in the ring) */
	enum pm_kind kind;
	unsigned replies_left; /* while in flight */
	int lost;              /* a reply never came: the connection died */
	int sent;
	unsigned char redirects; /* MOVED/ASK followed so far */
	unsigned char asking;    /* send ASKING first (an ASK redirection) */
	unsigned short moved_to; /* lane index + 1 a redirection named */
	uint32_t hash;
	int64_t score;            /* mark: due time (ms); sweep: the time */
	uint64_t sent_us;         /* monotonic */
	struct px_route_req *req; /* PM_ROUTE: NULL once cancelled or answered */
	const char *text;         /* mark: member; hint: the line; in data */
	char data[];              /* user NUL text NUL */
};

struct pm_list {
	struct pm_item *head, *tail;
	size_t count;
};

/* The users whose marks were dropped: a bounded string set. */
struct pm_user {
	struct pm_user *next;
	uint32_t hash;
	char name[];
};

struct pm_uset {
	struct pm_user **b;
	size_t nb, count, max, cursor;
};

struct px_route_req {
	struct px_marks *m;
	struct px_route_req *prev, *next; /* m->reqs */
	struct pm_item *item;             /* while queued or in flight */
	struct event *ev;                 /* timeout, then delivery */
	px_route_cb *cb;
	void *aux;
	int answered;
	int status;
	enum rk_route_state state;
	uint64_t epoch;
	char *upstream;
	char *user;
};

struct pm_heat {
	uint32_t hash;
	int64_t last_ms;
};

/* A route Redis answered last for a user (route_remember()). */
struct pm_rcache {
	char *user;
	char *upstream; /* or NULL */
	int status;     /* 0 found, 1 none stored */
	enum rk_route_state state;
	uint64_t epoch;
};

struct px_marks {
	/* A Redis Cluster: one struct px_marks ("lane") per node, each with
	 * its own connection, ring and in-flight list; the first one (the
	 * configured address, the "root") is the handle callers hold and owns
	 * the others and the slot map. A standalone Redis: the root alone. */
	struct px_marks *root;
	struct px_marks **lanes; /* root: lanes[0] = root */
	size_t nlanes;
	size_t dflt;                  /* root: the lane for slots nobody taught us */
	unsigned short *slot_lane;    /* root: [RK_SLOTS] lane index + 1, 0 = dflt */
	struct pm_rcache *rcache;     /* root: [PM_RCACHE_SLOTS], allocated on first use */
	struct px_marks_settings set; /* root: for new lanes (strings: the root's) */
	struct event_base *base;
	char *host, *unix_path;
	int port;
	char where[300]; /* "host:port" or the socket path, for logs */
	unsigned timeout_ms;
	size_t ring_max;
	unsigned debounce[RK_PRIO_COUNT];
	unsigned debounce_hot, hot_window;
	struct pm_heat *heat; /* [PM_HEAT_SLOTS]: when each (user, folder) was last marked */
	int enabled;
	int freeing;

	redisAsyncContext *ac;
	enum pm_state state;
	unsigned backoff_ms;
	int down_logged;

	struct pm_list ring, inflight, routes_q;
	size_t inflight_work;   /* inflight items that are not route lookups */
	uint64_t last_flush_us; /* mono_us() of the last flush_cb */
	struct pm_item **hb;    /* coalescing hash over marks in the ring */
	size_t hnb;
	/* Items put back after a connection loss go to the ring's front in
	 * their original order: each after the previous one. */
	int rq_active;
	struct pm_item *rq_cursor;

	struct pm_uset over;
	int overflow_logged;
	int sweep_needed, sweep_queued;

	struct px_route_req *reqs;

	struct event *conn_timer, *backoff_timer, *close_ev, *flush_ev;
	struct event *drain_ev, *drain_timer;
	void (*drain_cb)(void *aux);
	void *drain_aux;
	int drain_expired;

	struct px_marks_stats st;
};

static struct event *xevent(struct event_base *base, event_callback_fn fn, void *arg)
{
	struct event *ev = evtimer_new(base, fn, arg);

	if (ev == NULL)
		abort();
	return ev;
}

static uint64_t mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Wall clock in ms: scores are compared with the daemon's Redis TIME. */
static int64_t now_ms(const struct px_marks *m)
{
	struct timeval tv;

	if (event_base_gettimeofday_cached(m->base, &tv) != 0)
		gettimeofday(&tv, NULL);
	return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

/* The debounce of a mark: the priority's, or RK_DEBOUNCE_HOT_MS when the
 * same (user, folder) was marked less than hot_window ago (a burst). The
 * table is direct-mapped by a hash: a collision only picks the other
 * debounce once; memory stays PM_HEAT_SLOTS entries whatever the load. */
static unsigned mark_debounce(struct px_marks *m, const char *user, const char *folder,
                              enum rk_prio prio)
{
	uint32_t h = 2166136261u; /* FNV-1a over "user\tfolder" */
	struct pm_heat *e;
	int64_t now = now_ms(m);
	int hot;

	for (const char *p = user; *p != '\0'; p++)
		h = (h ^ (unsigned char)*p) * 16777619u;
	h = (h ^ '\t') * 16777619u;
	for (const char *p = folder; *p != '\0'; p++)
		h = (h ^ (unsigned char)*p) * 16777619u;
	e = &m->heat[h % PM_HEAT_SLOTS];
	hot = e->last_ms != 0 && e->hash == h && now - e->last_ms < (int64_t)m->hot_window;
	e->hash = h;
	e->last_ms = now;
	if (hot) {
		m->st.hot++;
		return m->debounce_hot;
	}
	return m->debounce[prio == RK_PRIO_HIGH ? RK_PRIO_HIGH : RK_PRIO_LOW];
}

static void ms_to_tv(unsigned ms, struct timeval *tv)
{
	tv->tv_sec = ms / 1000u;
	tv->tv_usec = (suseconds_t)(ms % 1000u) * 1000;
}

static uint32_t hash_bytes(const char *s, size_t len)
{
	uint32_t h = 2166136261u; /* FNV-1a */
	size_t i;

	for (i = 0; i < len; i++) {
		h ^= (unsigned char)s[i];
		h *= 16777619u;
	}
	return h;
}

static size_t pow2_at_least(size_t n, size_t lo, size_t hi)
{
	size_t p = lo;

	while (p < n && p < hi)
		p <<= 1;
	return p;
}

/* ---- lists ---- */

static void list_append(struct pm_list *l, struct pm_item *it)
{
	it->next = NULL;
	it->prev = l->tail;
	if (l->tail != NULL)
		l->tail->next = it;
	else
		l->head = it;
	l->tail = it;
	l->count++;
}

/* Inserts it after pos, or at the front when pos is NULL. */
static void list_insert_after(struct pm_list *l, struct pm_item *pos, struct pm_item *it)
{
	if (pos == NULL) {
		it->prev = NULL;
		it->next = l->head;
		if (l->head != NULL)
			l->head->prev = it;
		else
			l->tail = it;
		l->head = it;
	} else {
		it->prev = pos;
		it->next = pos->next;
		if (pos->next != NULL)
			pos->next->prev = it;
		else
			l->tail = it;
		pos->next = it;
	}
	l->count++;
}

static void list_unlink(struct pm_list *l, struct pm_item *it)
{
	if (it->prev != NULL)
		it->prev->next = it->next;
	else
		l->head = it->next;
	if (it->next != NULL)
		it->next->prev = it->prev;
	else
		l->tail = it->prev;
	it->prev = it->next = NULL;
	l->count--;
}

static void list_free(struct pm_list *l)
{
	struct pm_item *it, *next;

	for (it = l->head; it != NULL; it = next) {
		next = it->next;
		free(it);
	}
	l->head = l->tail = NULL;
	l->count = 0;
}

/* ---- items ---- */

static const char *item_user(const struct pm_item *it)
{
	return it->data;
}

/* text2 != NULL: text is "text TAB text2" (a mark's member). */
static struct pm_item *item_new(enum pm_kind kind, const char *user, const char *text,
                                const char *text2)
{
	size_t ul = strlen(user), tl = strlen(text), t2l = text2 != NULL ? strlen(text2) + 1 : 0;
	struct pm_item *it = xcalloc(1, sizeof(*it) + ul + tl + t2l + 2);
	char *p = it->data;

	it->kind = kind;
	memcpy(p, user, ul + 1);
	p += ul + 1;
	it->text = p;
	memcpy(p, text, tl);
	p += tl;
	if (text2 != NULL) {
		*p++ = '\t';
		memcpy(p, text2, t2l - 1);
		p += t2l - 1;
	}
	*p = '\0';
	if (kind == PM_MARK)
		it->hash = hash_bytes(it->text, strlen(it->text));
	return it;
}

static struct pm_item *hash_find(struct px_marks *m, const struct pm_item *it)
{
	struct pm_item *h;

	for (h = m->hb[it->hash & (m->hnb - 1)]; h != NULL; h = h->hnext) {
		if (h->hash == it->hash && strcmp(h->text, it->text) == 0)
			return h;
	}
	return NULL;
}

static void hash_remove(struct px_marks *m, struct pm_item *it)
{
	struct pm_item **pp = &m->hb[it->hash & (m->hnb - 1)];

	for (; *pp != NULL; pp = &(*pp)->hnext) {
		if (*pp == it) {
			*pp = it->hnext;
			it->hnext = NULL;
			return;
		}
	}
}

/* ---- the overflow user set ---- */

static void uset_init(struct pm_uset *s, size_t max)
{
	s->max = max;
	s->nb = pow2_at_least(max, 16, 4096);
	s->b = xcalloc(s->nb, sizeof(*s->b));
}

static void uset_clear(struct pm_uset *s)
{
	size_t i;

	for (i = 0; i < s->nb; i++) {
		while (s->b[i] != NULL) {
			struct pm_user *u = s->b[i];

			s->b[i] = u->next;
			free(u);
		}
	}
	s->count = 0;
	s->cursor = 0;
}

/* 1 added or already there, 0 the set is full. */
static int uset_add(struct pm_uset *s, const char *name)
{
	size_t len = strlen(name);
	uint32_t h = hash_bytes(name, len);
	struct pm_user *u;

	for (u = s->b[h & (s->nb - 1)]; u != NULL; u = u->next) {
		if (u->hash == h && strcmp(u->name, name) == 0)
			return 1;
	}
	if (s->count >= s->max)
		return 0;
	u = xcalloc(1, sizeof(*u) + len + 1);
	u->hash = h;
	memcpy(u->name, name, len + 1);
	u->next = s->b[h & (s->nb - 1)];
	s->b[h & (s->nb - 1)] = u;
	s->count++;
	return 1;
}

/* Removes some user and returns it (caller frees), NULL when empty. */
static struct pm_user *uset_pop(struct pm_uset *s)
{
	size_t n;

	for (n = 0; s->count > 0 && n <= s->nb; n++) {
		struct pm_user *u = s->b[s->cursor];

		if (u != NULL) {
			s->b[s->cursor] = u->next;
			s->count--;
			return u;
		}
		s->cursor = (s->cursor + 1) & (s->nb - 1);
	}
	return NULL;
}

/* ---- ring ---- */

static void drain_check(struct px_marks *m);
static void conn_fail(struct px_marks *m, const char *why);
static struct px_marks *lane_get(struct px_marks *root, const char *host, size_t hl, int port);
static struct px_marks *lane_for(struct px_marks *root, unsigned slot);
static size_t lane_index(const struct px_marks *l);

/* Sending waits for the next loop pass: what the proxy marks in one pass
 * coalesces, and hiredis is never entered from inside its callbacks. */
static void flush_schedule(struct px_marks *m)
{
	if (!m->freeing && m->state == PM_UP)
		event_active(m->flush_ev, EV_TIMEOUT, 0);
}

/*
 * Marks and hints: a lone one goes out on the next loop pass; under a steady
 * stream, flushes are at least PM_FLUSH_GAP_US apart, so the marks of that
 * gap go in one write and come back in one read instead of one each per
 * command (a mark still reaches Redis within issue 5's 5 ms). Routes,
 * connects and drains flush at once (flush_schedule()), taking the waiting
 * marks with them.
 */
#define PM_FLUSH_GAP_US 3000u

static void flush_schedule_batch(struct px_marks *m)
{
	uint64_t since = mono_us() - m->last_flush_us;
	struct timeval tv = {0, 0};

	if (m->freeing || m->state != PM_UP || evtimer_pending(m->flush_ev, NULL))
		return;
	if (since >= PM_FLUSH_GAP_US) {
		flush_schedule(m);
		return;
	}
	tv.tv_usec = (suseconds_t)(PM_FLUSH_GAP_US - since);
	evtimer_add(m->flush_ev, &tv);
}

/* Remembers that the marks of user were lost: one whole-user mark later,
 * or a sweep of everyone when too many users are affected. */
static void pm_drop(struct px_marks *m, const char *user)
{
	m->st.dropped++;
	if (!m->overflow_logged) {
		log_warn("redis: mark ring full (%zu), remembering users for whole-user marks",
		         m->ring_max);
		m->overflow_logged = 1;
	}
	if (uset_add(&m->over, user))
		return;
	/* The sweep covers every user, those in the set too. */
	if (!m->sweep_needed && !m->sweep_queued)
		log_warn("redis: %zu users lost marks: asking the daemon to sweep everyone (%s)",
		         m->over.count, RK_KEY_SWEEP_ALL);
	uset_clear(&m->over);
	if (!m->sweep_queued)
		m->sweep_needed = 1;
}

/*
 * Puts it into the ring after pos (NULL: front) or at the tail (at_tail).
 * A mark whose member already waits only moves that one's due time earlier.
 * Takes ownership of it. Returns 1 queued, 0 merged (it is freed), -1
 * dropped (ring full; it is freed).
 */
static int ring_put(struct px_marks *m, struct pm_item *it, int at_tail, struct pm_item *pos)
{
	if (it->kind == PM_MARK) {
		struct pm_item *old = hash_find(m, it);

		if (old != NULL) {
			if (it->score < old->score)
				old->score = it->score;
			free(it);
			return 0;
		}
	}
	if (it->kind != PM_SWEEP && m->ring.count >= m->ring_max) {
		pm_drop(m, item_user(it));
		free(it);
		return -1;
	}
	if (at_tail)
		list_append(&m->ring, it);
	else
		list_insert_after(&m->ring, pos, it);
	if (it->kind == PM_MARK) {
		size_t b = it->hash & (m->hnb - 1);

		it->hnext = m->hb[b];
		m->hb[b] = it;
	}
	return 1;
}

static struct pm_item *ring_pop(struct px_marks *m)
{
	struct pm_item *it = m->ring.head;

	if (it == NULL)
		return NULL;
	list_unlink(&m->ring, it);
	if (it->kind == PM_MARK)
		hash_remove(m, it);
	if (m->ring.count == 0)
		m->overflow_logged = 0;
	return it;
}

/* An in-flight item whose replies were lost goes back to the ring. */
static void ring_requeue(struct px_marks *m, struct pm_item *it)
{
	it->moved_to = 0;
	it->asking = 0;
	it->lost = 0;
	it->sent = 0;
	it->replies_left = 0;
	if (!m->rq_active) {
		m->rq_active = 1;
		m->rq_cursor = NULL;
	}
	if (it->kind == PM_SWEEP) {
		list_insert_after(&m->ring, NULL, it); /* first, whatever else */
		if (m->rq_cursor == NULL)
			m->rq_cursor = it;
		return;
	}
	if (ring_put(m, it, 0, m->rq_cursor) == 1)
		m->rq_cursor = it;
}

/* ---- route answers ---- */

static void route_req_free(struct px_route_req *req)
{
	event_free(req->ev);
	free(req->upstream);
	free(req->user);
	free(req);
}

static void route_req_unlink(struct px_marks *m, struct px_route_req *req)
{
	if (req->prev != NULL)
		req->prev->next = req->next;
	else
		m->reqs = req->next;
	if (req->next != NULL)
		req->next->prev = req->prev;
	req->prev = req->next = NULL;
}

/* Detaches req from its item; an item not sent yet is dropped. */
static void route_req_detach(struct px_marks *m, struct px_route_req *req)
{
	struct pm_item *it = req->item;

	if (it == NULL)
		return;
	req->item = NULL;
	it->req = NULL;
	if (!it->sent) {
		list_unlink(&m->routes_q, it);
		free(it);
	}
}

/* Answers req with status -1 from the next loop pass. */
static void route_req_fail_later(struct px_marks *m, struct px_route_req *req)
{
	static const struct timeval zero = {0, 0};

	(void)m;
	req->answered = 1;
	req->status = -1;
	evtimer_add(req->ev, &zero);
}

/*
 * The last route Redis gave for each user, for when it cannot answer: a
 * user already cut over (DST) must not be sent back to the source because
 * Redis is away for a moment. Bounded: direct-mapped by a hash of the
 * name, a collision forgets the older user (who then gets the default, as
 * without a cache). Only answers of Redis are kept.
 */
static void route_remember(struct px_marks *root, const struct px_route_req *req)
{
	struct pm_rcache *c;
	size_t len = strlen(req->user);

	if (root->rcache == NULL)
		root->rcache = xcalloc(PM_RCACHE_SLOTS, sizeof(*root->rcache));
	c = &root->rcache[hash_bytes(req->user, len) % PM_RCACHE_SLOTS];
	if (c->user == NULL || strcmp(c->user, req->user) != 0) {
		free(c->user);
		c->user = xstrdup(req->user);
	}
	free(c->upstream);
	c->upstream = req->upstream != NULL ? xstrdup(req->upstream) : NULL;
	c->status = req->status;
	c->state = req->state;
	c->epoch = req->epoch;
}

/* An unanswered lookup: the remembered route, if any (1). */
static int route_recall(const struct px_marks *root, struct px_route_req *req)
{
	const struct pm_rcache *c;

	if (root->rcache == NULL)
		return 0;
	c = &root->rcache[hash_bytes(req->user, strlen(req->user)) % PM_RCACHE_SLOTS];
	if (c->user == NULL || strcmp(c->user, req->user) != 0)
		return 0;
	req->status = c->status;
	req->state = c->state;
	req->epoch = c->epoch;
	free(req->upstream);
	req->upstream = c->upstream != NULL ? xstrdup(c->upstream) : NULL;
	return 1;
}

static void rcache_free(struct px_marks *root)
{
	if (root->rcache == NULL)
		return;
	for (size_t i = 0; i < PM_RCACHE_SLOTS; i++) {
		free(root->rcache[i].user);
		free(root->rcache[i].upstream);
	}
	free(root->rcache);
	root->rcache = NULL;
}

/* req->ev: the timeout (not answered yet) or the delivery of the answer. */
static void route_ev_cb(evutil_socket_t fd, short what, void *arg)
{
	struct px_route_req *req = arg;
	struct px_marks *m = req->m;

	(void)fd;
	(void)what;
	if (!req->answered) {
		req->status = -1;
		log_warn("redis: route lookup for user %s timed out after %u ms", req->user,
		         m->timeout_ms);
		m->st.errors++;
	}
	if (req->status >= 0) {
		route_remember(m->root, req);
	} else if (route_recall(m->root, req)) {
		log_notice("redis: route of user %s unavailable: using the last one read (%s, "
		           "epoch %llu)",
		           req->user,
		           req->status == 1 ? "none stored" : rk_route_state_names[req->state],
		           (unsigned long long)req->epoch);
		m->st.cached_routes++;
	}
	route_req_detach(m, req);
	route_req_unlink(m, req);
	req->cb(req->status, req->state, req->epoch, req->upstream, req->aux);
	route_req_free(req);
}

/* HGETALL reply: [field, value, ...]. */
static void route_parse(struct px_route_req *req, const redisReply *r)
{
	int have_state = 0, bad = 0;
	size_t i;

	req->status = -1;
	if (r == NULL)
		return;
	if (r->type != REDIS_REPLY_ARRAY) {
		log_warn("redis: route lookup for user %s: %s", req->user,
		         r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply type");
		return;
	}
	if (r->elements == 0) {
		req->status = 1;
		return;
	}
	for (i = 0; i + 1 < r->elements; i += 2) {
		const redisReply *f = r->element[i], *v = r->element[i + 1];
		char *end;

		if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING) {
			bad = 1;
			break;
		}
		if (strcmp(f->str, "state") == 0) {
			if (rk_route_state_parse(v->str, &req->state) < 0)
				bad = 1;
			have_state = 1;
		} else if (strcmp(f->str, "epoch") == 0) {
			req->epoch = strtoull(v->str, &end, 10);
			if (v->str[0] < '0' || v->str[0] > '9' || *end != '\0')
				bad = 1;
		} else if (strcmp(f->str, "upstream") == 0) {
			free(req->upstream);
			req->upstream = xstrdup(v->str);
		}
	}
	if (bad || !have_state) {
		log_warn("redis: malformed route for user %s (%s)", req->user,
		         have_state ? "bad field" : "no state");
		free(req->upstream);
		req->upstream = NULL;
		req->epoch = 0;
		req->state = RK_ROUTE_SRC;
		return;
	}
	req->status = 0;
}

/* ---- the connection ---- */

static void conn_timer_rearm(struct px_marks *m)
{
	struct timeval tv;
	uint64_t now, deadline;

	if (m->state != PM_UP || m->freeing)
		return;
	if (m->inflight.head == NULL) {
		evtimer_del(m->conn_timer);
		return;
	}
	now = mono_us();
	deadline = m->inflight.head->sent_us + (uint64_t)m->timeout_ms * 1000u;
	if (deadline <= now) {
		tv.tv_sec = 0;
		tv.tv_usec = 0;
	} else {
		tv.tv_sec = (time_t)((deadline - now) / 1000000u);
		tv.tv_usec = (suseconds_t)((deadline - now) % 1000000u);
	}
	evtimer_add(m->conn_timer, &tv);
}

/*
 * A Redis Cluster's "-MOVED slot host:port" (learned: the slot's lane from
 * now on) or "-ASK slot host:port" (once, after ASKING): notes in the item
 * where it goes once its last reply is in. 1 when r is such a redirection
 * and it may be followed (at most PM_REDIRECTS_MAX per item).
 */
static int redirect_note(struct px_marks *m, struct pm_item *it, const redisReply *r)
{
	struct px_marks *root = m->root, *to;
	const char *host;
	size_t hl;
	unsigned slot;
	int ask, port;

	if (rn_redirect_parse(r->str, r->len, &ask, &slot, &host, &hl, &port) < 0)
		return 0;
	if (it->redirects >= PM_REDIRECTS_MAX || (to = lane_get(root, host, hl, port)) == NULL) {
		log_warn("redis: %s: not followed (%s)", r->str,
		         it->redirects >= PM_REDIRECTS_MAX ? "redirected too often"
		                                           : "too many cluster nodes");
		return 0;
	}
	if (!ask) {
		if (root->slot_lane == NULL)
			root->slot_lane = xcalloc(RK_SLOTS, sizeof(*root->slot_lane));
		root->slot_lane[slot] = (unsigned short)(lane_index(to) + 1);
	}
	it->moved_to = (unsigned short)(lane_index(to) + 1);
	it->asking = (unsigned char)ask;
	return 1;
}

/* Hands a redirected item (its last reply in, unlinked) to its new lane. */
static void redirect_take(struct px_marks *m, struct pm_item *it)
{
	struct px_marks *to = m->root->lanes[it->moved_to - 1u];

	it->moved_to = 0;
	it->redirects++;
	it->sent = 0;
	it->lost = 0;
	it->replies_left = 0;
	if (it->kind == PM_ROUTE) {
		struct px_route_req *req = it->req;

		if (req == NULL) {
			free(it);
			return;
		}
		/* the request follows its item: cancelling it finds both */
		route_req_unlink(m, req);
		req->m = to;
		req->next = to->reqs;
		if (to->reqs != NULL)
			to->reqs->prev = req;
		to->reqs = req;
		if (to->state == PM_DOWN || to->state == PM_CLOSING) {
			req->item = NULL;
			free(it);
			route_req_fail_later(to, req);
			return;
		}
		list_append(&to->routes_q, it);
		flush_schedule(to);
		return;
	}
	if (it->kind == PM_SWEEP) {
		list_insert_after(&to->ring, NULL, it);
		m->sweep_queued = 0;
		to->sweep_queued = 1;
	} else if (ring_put(to, it, 0, NULL) != 1) {
		return;
	}
	flush_schedule(to);
}

static void reply_cb(redisAsyncContext *ac, void *reply, void *privdata)
{
	struct px_marks *m = ac->data;
	struct pm_item *it = privdata;
	redisReply *r = reply;

	if (m->freeing)
		return; /* px_marks_free frees the items */
	if (r == NULL) {
		it->lost = 1;
	} else if (r->type == REDIS_REPLY_ERROR && redirect_note(m, it, r)) {
		/* sent again on the right node after its last reply */
	} else if (r->type == REDIS_REPLY_ERROR) {
		m->st.errors++;
		if (it->kind != PM_ROUTE) /* route_parse() says it */
			log_warn("redis: error reply for user %s: %s", item_user(it), r->str);
	} else {
		m->st.sent++;
		/* This connection works: only now, not at connect, because a
		 * hung Redis still accepts connections. */
		m->backoff_ms = PM_BACKOFF_MIN_MS;
		if (m->down_logged)
			log_notice("redis: %s answers again", m->where);
		m->down_logged = 0;
	}
	if (it->replies_left > 1) {
		it->replies_left--;
		return;
	}
	it->replies_left = 0;
	list_unlink(&m->inflight, it);
	if (it->kind != PM_ROUTE)
		m->inflight_work--;
	if (it->moved_to != 0 && !it->lost) {
		redirect_take(m, it);
	} else if (it->kind == PM_ROUTE) {
		struct px_route_req *req = it->req;

		if (req != NULL) {
			static const struct timeval zero = {0, 0};

			req->item = NULL;
			route_parse(req, it->lost ? NULL : r);
			req->answered = 1;
			evtimer_add(req->ev, &zero);
		}
		free(it);
	} else if (it->lost) {
		ring_requeue(m, it);
	} else {
		if (it->kind == PM_MARK)
			m->st.last_latency_us = mono_us() - it->sent_us;
		if (it->kind == PM_SWEEP)
			m->sweep_queued = 0;
		free(it);
	}
	conn_timer_rearm(m);
	if (m->routes_q.head != NULL || m->sweep_needed)
		flush_schedule(m);
	else if (m->ring.head != NULL || m->over.count > 0)
		flush_schedule_batch(m);
	drain_check(m);
}

/* Sends one item; 0, or -1 when hiredis refuses (the context is going). */
static int item_send(struct px_marks *m, struct pm_item *it)
{
	char key[PM_USER_MAX + 64], score[32], ttl[24], last[24];
	const char *user = item_user(it);
	const char *argv[5];
	size_t lens[5];
	int n = 0, i, rc = REDIS_OK, issued = 0, want = 1;
	int asking = it->asking;

	/* After an ASK: each command goes with an ASKING before it (its reply
	 * is not needed). */
	it->asking = 0;
	it->moved_to = 0;
#define PM_ASKING()                                                                                \
	do {                                                                                       \
		if (asking)                                                                        \
			redisAsyncCommand(m->ac, NULL, NULL, "ASKING");                            \
	} while (0)

	switch (it->kind) {
	case PM_MARK:
		rk_key_due(key, sizeof(key), rk_shard(user));
		snprintf(score, sizeof(score), "%" PRId64, it->score);
		argv[0] = "ZADD";
		argv[1] = key;
		argv[2] = "LT";
		argv[3] = score;
		argv[4] = it->text;
		n = 5;
		break;
	case PM_HINT:
		rk_key_hint(key, sizeof(key), user);
		want = 3;
		break;
	case PM_SWEEP:
		snprintf(score, sizeof(score), "%" PRId64, it->score);
		argv[0] = "SET";
		argv[1] = RK_KEY_SWEEP_ALL;
		argv[2] = score;
		n = 3;
		break;
	case PM_ROUTE:
		rk_key_route(key, sizeof(key), user);
		argv[0] = "HGETALL";
		argv[1] = key;
		n = 2;
		break;
	default:
		abort();
	}
	if (it->kind == PM_HINT) {
		/* A pipeline, not MULTI: a lost LTRIM or EXPIRE only leaves the
		 * list a little longer or without TTL until the next hint. */
		snprintf(last, sizeof(last), "%d", RK_HINT_MAX - 1);
		snprintf(ttl, sizeof(ttl), "%d", RK_HINT_TTL_S);
		argv[0] = "LPUSH";
		argv[1] = key;
		argv[2] = it->text;
		for (i = 0; i < 3; i++)
			lens[i] = strlen(argv[i]);
		PM_ASKING();
		rc = redisAsyncCommandArgv(m->ac, reply_cb, it, 3, argv, lens);
		if (rc == REDIS_OK) {
			issued++;
			argv[0] = "LTRIM";
			argv[2] = "0";
			argv[3] = last;
			for (i = 0; i < 4; i++)
				lens[i] = strlen(argv[i]);
			PM_ASKING();
			rc = redisAsyncCommandArgv(m->ac, reply_cb, it, 4, argv, lens);
		}
		if (rc == REDIS_OK) {
			issued++;
			argv[0] = "EXPIRE";
			argv[2] = ttl;
			for (i = 0; i < 3; i++)
				lens[i] = strlen(argv[i]);
			PM_ASKING();
			rc = redisAsyncCommandArgv(m->ac, reply_cb, it, 3, argv, lens);
		}
		if (rc == REDIS_OK)
			issued++;
	} else {
		for (i = 0; i < n; i++)
			lens[i] = strlen(argv[i]);
		PM_ASKING();
		rc = redisAsyncCommandArgv(m->ac, reply_cb, it, n, argv, lens);
		if (rc == REDIS_OK)
			issued = 1;
	}
#undef PM_ASKING
	if (issued == 0)
		return -1;
	it->sent = 1;
	it->replies_left = (unsigned)issued;
	it->lost = issued < want;
	it->sent_us = mono_us();
	list_append(&m->inflight, it);
	if (it->kind != PM_ROUTE)
		m->inflight_work++;
	if (m->inflight.count == 1)
		conn_timer_rearm(m);
	return issued < want ? -1 : 0;
}

/* Turns remembered users into whole-user marks while the ring has room. */
static void overflow_refill(struct px_marks *m)
{
	int64_t due = now_ms(m) + m->debounce[RK_PRIO_HIGH];
	struct pm_user *u;

	while (m->over.count > 0 && m->ring.count < m->ring_max &&
	       (u = uset_pop(&m->over)) != NULL) {
		struct pm_item *it = item_new(PM_MARK, u->name, u->name, RK_FOLDER_ALL);

		it->score = due;
		free(u);
		ring_put(m, it, 1, NULL);
	}
}

static void flush_cb(evutil_socket_t fd, short what, void *arg)
{
	struct px_marks *m = arg;
	int pass;

	(void)fd;
	(void)what;
	if (m->state != PM_UP)
		return;
	m->last_flush_us = mono_us();
	while (m->routes_q.head != NULL && m->inflight.count < PM_INFLIGHT_MAX) {
		struct pm_item *it = m->routes_q.head;

		list_unlink(&m->routes_q, it);
		if (item_send(m, it) < 0) {
			if (!it->sent)
				list_insert_after(&m->routes_q, NULL, it);
			conn_fail(m, "command refused by hiredis");
			return;
		}
	}
	if (m->sweep_needed && !m->sweep_queued) {
		struct pm_item *it = item_new(PM_SWEEP, "", "", NULL);

		it->score = now_ms(m);
		list_insert_after(&m->ring, NULL, it);
		m->sweep_needed = 0;
		m->sweep_queued = 1;
	}
	for (pass = 0; pass < 2; pass++) {
		while (m->ring.head != NULL && m->inflight.count < PM_INFLIGHT_MAX) {
			struct pm_item *it = ring_pop(m);

			if (item_send(m, it) < 0) {
				if (!it->sent)
					ring_put(m, it, 0, NULL);
				conn_fail(m, "command refused by hiredis");
				return;
			}
		}
		if (pass == 0)
			overflow_refill(m);
	}
}

static void connect_start(struct px_marks *m);

/*
 * A cluster node's lane lost its connection: what it learned is forgotten
 * (its slots go back to the default lane, which redirects them to the
 * node that serves them now: after a failover, the new master) and what
 * waits in its ring moves to a lane that is up. The lane itself keeps
 * reconnecting (the node may be back).
 */
static void lane_evacuate(struct px_marks *m)
{
	struct px_marks *root = m->root, *to = NULL;
	struct pm_item *it;
	struct pm_user *u;
	size_t i, me = lane_index(m);

	if (root->nlanes < 2 || root->freeing)
		return;
	if (root->lanes[root->dflt] != m && root->lanes[root->dflt]->state == PM_UP)
		to = root->lanes[root->dflt];
	for (i = 0; to == NULL && i < root->nlanes; i++)
		if (root->lanes[i] != m && root->lanes[i]->state == PM_UP)
			to = root->lanes[i];
	if (to == NULL)
		return; /* no node answers: the marks wait here */
	if (root->slot_lane != NULL)
		for (i = 0; i < RK_SLOTS; i++)
			if (root->slot_lane[i] == me + 1)
				root->slot_lane[i] = 0;
	if (root->dflt == me)
		root->dflt = lane_index(to);
	if (m->ring.count == 0 && m->over.count == 0 && !m->sweep_needed)
		return;
	log_info("redis: %s is down: its %zu waiting marks go through %s", m->where, m->ring.count,
	         to->where);
	while ((it = ring_pop(m)) != NULL) {
		it->moved_to = 0;
		it->asking = 0;
		if (it->kind == PM_SWEEP) {
			m->sweep_queued = 0;
			to->sweep_queued = 1;
			list_insert_after(&to->ring, NULL, it);
		} else {
			ring_put(to, it, 1, NULL);
		}
	}
	while ((u = uset_pop(&m->over)) != NULL) {
		if (!uset_add(&to->over, u->name) && !to->sweep_queued)
			to->sweep_needed = 1;
		free(u);
	}
	if (m->sweep_needed && !to->sweep_queued)
		to->sweep_needed = 1;
	m->sweep_needed = 0;
	flush_schedule(to);
}

/* The connection is gone (hiredis freed it, or we did): wait, reconnect. */
static void conn_down(struct px_marks *m)
{
	struct timeval tv;

	m->ac = NULL;
	m->state = PM_DOWN;
	m->st.connected = 0;
	evtimer_del(m->conn_timer);
	/* Lookups not sent yet would only wait for their timeout. */
	while (m->routes_q.head != NULL) {
		struct pm_item *it = m->routes_q.head;
		struct px_route_req *req = it->req;

		list_unlink(&m->routes_q, it);
		if (req != NULL) {
			req->item = NULL;
			route_req_fail_later(m, req);
		}
		free(it);
	}
	ms_to_tv(m->backoff_ms, &tv);
	evtimer_add(m->backoff_timer, &tv);
	m->backoff_ms =
	        m->backoff_ms * 2 > PM_BACKOFF_MAX_MS ? PM_BACKOFF_MAX_MS : m->backoff_ms * 2;
	lane_evacuate(m);
	drain_check(m);
}

static void log_down(struct px_marks *m, const char *what, const char *why)
{
	if (!m->down_logged) {
		log_warn("redis: %s %s: %s (marks wait in memory, retrying)", what, m->where, why);
		m->down_logged = 1;
	} else {
		log_debug(LOG_CAT_REDIS, "redis: %s %s: %s", what, m->where, why);
	}
}

/* A failure seen from our own code (timer, refused command): the context
 * is freed from close_ev, never from inside a hiredis callback. */
static void conn_fail(struct px_marks *m, const char *why)
{
	if (m->state != PM_UP && m->state != PM_CONNECTING)
		return;
	log_down(m, m->state == PM_UP ? "connection to" : "cannot connect to", why);
	m->st.errors++;
	m->state = PM_CLOSING;
	event_active(m->close_ev, EV_TIMEOUT, 0);
}

static void close_cb(evutil_socket_t fd, short what, void *arg)
{
	struct px_marks *m = arg;
	redisAsyncContext *ac = m->ac;

	(void)fd;
	(void)what;
	if (m->state != PM_CLOSING || ac == NULL)
		return;
	/* Calls reply_cb(NULL) for every pending command (their items go
	 * back to the ring) and on_disconnect, which sees PM_CLOSING. */
	redisAsyncFree(ac);
	conn_down(m);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
	struct px_marks *m = ac->data;

	if (m->freeing || m->ac != ac)
		return;
	if (status != REDIS_OK) {
		/* hiredis frees ac when we return. */
		log_down(m, "cannot connect to", ac->errstr);
		m->st.errors++;
		conn_down(m);
		return;
	}
	log_debug(LOG_CAT_REDIS, "redis: connected to %s", m->where);
	m->state = PM_UP;
	m->st.connected = 1;
	m->st.reconnects++;
	m->rq_active = 0;
	evtimer_del(m->conn_timer); /* the connect timeout */
	flush_schedule(m);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
	struct px_marks *m = ac->data;

	(void)status;
	if (m->freeing || m->ac != ac || m->state == PM_CLOSING)
		return; /* our own redisAsyncFree */
	/* The server closed or an I/O error: hiredis frees ac when we return;
	 * the pending items are already back in the ring. */
	log_down(m, "connection to",
	         ac->errstr != NULL && ac->errstr[0] != '\0' ? ac->errstr : "closed");
	m->st.errors++;
	conn_down(m);
}

/*
 * Our hiredis event adapter (instead of adapters/libevent.h): the read
 * event is persistent and stays registered, and a write is first tried in
 * the same loop pass (an activated, unregistered event) and only registered
 * with epoll when the socket refused bytes, or while connecting. hiredis's
 * stock adapter re-registers both events for every command: two epoll_ctl
 * calls per mark, which showed in the proxy's CPU per command.
 */
struct pm_events {
	redisAsyncContext *ac;
	struct event *rev, *wev;
	int rev_added, wev_added, wev_active;
};

/* The events whose write callback is running (hiredis may free them in
 * it, so this is not a field of theirs). */
static struct pm_events *pm_writing;

static void pm_ev_read(evutil_socket_t fd, short what, void *arg)
{
	struct pm_events *e = arg;

	(void)fd;
	(void)what;
	redisAsyncHandleRead(e->ac);
}

static void pm_ev_write(evutil_socket_t fd, short what, void *arg)
{
	struct pm_events *e = arg;

	(void)fd;
	(void)what;
	e->wev_active = 0;
	e->wev_added = 0; /* a fired non-persistent event is no longer registered */
	pm_writing = e;
	redisAsyncHandleWrite(e->ac); /* may free the context, and e with it */
	pm_writing = NULL;
}

static void pm_add_read(void *data)
{
	struct pm_events *e = data;

	if (!e->rev_added && event_add(e->rev, NULL) == 0)
		e->rev_added = 1;
}

static void pm_del_read(void *data)
{
	struct pm_events *e = data;

	if (e->rev_added) {
		event_del(e->rev);
		e->rev_added = 0;
	}
}

static void pm_add_write(void *data)
{
	struct pm_events *e = data;

	/* connecting (writable means connected) or hiredis could not write
	 * everything just now: wait for the socket; else try at once */
	if (!(e->ac->c.flags & REDIS_CONNECTED) || pm_writing == e) {
		if (!e->wev_added && event_add(e->wev, NULL) == 0)
			e->wev_added = 1;
	} else if (!e->wev_active && !e->wev_added) {
		e->wev_active = 1;
		event_active(e->wev, EV_WRITE, 1);
	}
}

static void pm_del_write(void *data)
{
	struct pm_events *e = data;

	if (e->wev_added || e->wev_active)
		event_del(e->wev);
	e->wev_added = e->wev_active = 0;
}

static void pm_cleanup(void *data)
{
	struct pm_events *e = data;

	if (pm_writing == e)
		pm_writing = NULL;
	event_free(e->rev);
	event_free(e->wev);
	free(e);
}

static int pm_attach(redisAsyncContext *ac, struct event_base *base)
{
	struct pm_events *e;

	if (ac->ev.data != NULL || (e = calloc(1, sizeof(*e))) == NULL)
		return REDIS_ERR;
	e->ac = ac;
	e->rev = event_new(base, ac->c.fd, EV_READ | EV_PERSIST, pm_ev_read, e);
	e->wev = event_new(base, ac->c.fd, EV_WRITE, pm_ev_write, e);
	if (e->rev == NULL || e->wev == NULL) {
		if (e->rev != NULL)
			event_free(e->rev);
		if (e->wev != NULL)
			event_free(e->wev);
		free(e);
		return REDIS_ERR;
	}
	ac->ev.addRead = pm_add_read;
	ac->ev.delRead = pm_del_read;
	ac->ev.addWrite = pm_add_write;
	ac->ev.delWrite = pm_del_write;
	ac->ev.cleanup = pm_cleanup;
	ac->ev.data = e;
	pm_add_read(e);
	pm_add_write(e); /* the connect */
	return REDIS_OK;
}

static void connect_start(struct px_marks *m)
{
	redisAsyncContext *ac;
	struct timeval tv;

	if (m->unix_path != NULL)
		ac = redisAsyncConnectUnix(m->unix_path);
	else
		ac = redisAsyncConnect(m->host, m->port);
	if (ac == NULL || ac->err) {
		log_down(m, "cannot connect to", ac != NULL ? ac->errstr : "out of memory");
		m->st.errors++;
		if (ac != NULL)
			redisAsyncFree(ac);
		conn_down(m);
		return;
	}
	ac->data = m;
	if (pm_attach(ac, m->base) != REDIS_OK) {
		redisAsyncFree(ac);
		conn_down(m);
		return;
	}
	redisAsyncSetConnectCallback(ac, on_connect);
	redisAsyncSetDisconnectCallback(ac, on_disconnect);
	m->ac = ac;
	m->state = PM_CONNECTING;
	ms_to_tv(m->timeout_ms, &tv);
	evtimer_add(m->conn_timer, &tv);
}

static void backoff_cb(evutil_socket_t fd, short what, void *arg)
{
	struct px_marks *m = arg;

	(void)fd;
	(void)what;
	if (m->state == PM_DOWN)
		connect_start(m);
}

/* Connect timeout, or the oldest command's. */
static void conn_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct px_marks *m = arg;

	(void)fd;
	(void)what;
	if (m->state == PM_CONNECTING) {
		conn_fail(m, "connect timed out");
	} else if (m->state == PM_UP && m->inflight.head != NULL) {
		if (mono_us() - m->inflight.head->sent_us >= (uint64_t)m->timeout_ms * 1000u)
			conn_fail(m, "no reply within the timeout");
		else
			conn_timer_rearm(m);
	}
}

/* ---- drain ---- */

static int lane_idle(const struct px_marks *m)
{
	return m->ring.count == 0 && m->inflight_work == 0 && m->over.count == 0 &&
	       !m->sweep_needed && !m->sweep_queued;
}

/* m: the root; idle when every lane is. */
static int pm_idle(const struct px_marks *m)
{
	size_t i;

	if (!m->enabled)
		return 1;
	for (i = 0; i < m->nlanes; i++)
		if (!lane_idle(m->lanes[i]))
			return 0;
	return 1;
}

static void drain_check(struct px_marks *m)
{
	m = m->root;
	if (m->drain_cb != NULL && !m->freeing && pm_idle(m))
		event_active(m->drain_ev, EV_TIMEOUT, 0);
}

static void drain_fire(struct px_marks *m)
{
	void (*cb)(void *aux) = m->drain_cb;

	if (cb == NULL || (!pm_idle(m) && !m->drain_expired))
		return;
	m->drain_cb = NULL;
	evtimer_del(m->drain_timer);
	cb(m->drain_aux); /* may free m */
}

static void drain_ev_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	drain_fire(arg);
}

static void drain_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct px_marks *m = arg;

	(void)fd;
	(void)what;
	if (m->drain_cb != NULL && !pm_idle(m)) {
		size_t left = 0, i;

		for (i = 0; i < m->nlanes; i++)
			left += m->lanes[i]->ring.count + m->lanes[i]->inflight_work;
		log_warn("redis: shutdown with %zu marks not written", left);
	}
	m->drain_expired = 1;
	drain_fire(m);
}

void px_marks_drain(struct px_marks *m, unsigned timeout_ms, void (*cb)(void *aux), void *aux)
{
	struct timeval tv;

	m->drain_cb = cb;
	m->drain_aux = aux;
	m->drain_expired = 0;
	ms_to_tv(timeout_ms, &tv);
	evtimer_add(m->drain_timer, &tv);
	for (size_t i = 0; i < m->nlanes; i++)
		flush_schedule(m->lanes[i]);
	drain_check(m);
}

/* ---- the API ---- */

static struct px_marks *lane_new(struct event_base *base, const struct px_marks_settings *set,
                                 struct px_marks *root)
{
	struct px_marks *m = xcalloc(1, sizeof(*m));

	m->root = root != NULL ? root : m;
	m->base = base;
	m->enabled = set->host != NULL || set->unix_path != NULL;
	m->host = set->host != NULL ? xstrdup(set->host) : NULL;
	m->unix_path = set->unix_path != NULL ? xstrdup(set->unix_path) : NULL;
	m->port = set->port > 0 ? set->port : PM_DEFAULT_PORT;
	if (m->unix_path != NULL)
		snprintf(m->where, sizeof(m->where), "%s", m->unix_path);
	else if (m->host != NULL)
		snprintf(m->where, sizeof(m->where), "%s:%d", m->host, m->port);
	m->timeout_ms = set->timeout_ms > 0 ? set->timeout_ms : PM_DEFAULT_TIMEOUT_MS;
	m->ring_max = set->ring_max > 0 ? set->ring_max : PM_DEFAULT_RING_MAX;
	m->debounce[RK_PRIO_HIGH] =
	        set->debounce_high_ms > 0 ? set->debounce_high_ms : RK_DEBOUNCE_HIGH_MS;
	m->debounce[RK_PRIO_LOW] =
	        set->debounce_low_ms > 0 ? set->debounce_low_ms : RK_DEBOUNCE_LOW_MS;
	m->debounce_hot = set->debounce_hot_ms > 0 ? set->debounce_hot_ms : RK_DEBOUNCE_HOT_MS;
	m->hot_window = set->hot_window_ms > 0 ? set->hot_window_ms : RK_HOT_WINDOW_MS;
	m->heat = xcalloc(PM_HEAT_SLOTS, sizeof(*m->heat));
	m->hnb = pow2_at_least(m->ring_max / 2, 16, 65536);
	m->hb = xcalloc(m->hnb, sizeof(*m->hb));
	uset_init(&m->over,
	          set->overflow_users_max > 0 ? set->overflow_users_max : PM_DEFAULT_OVERFLOW_MAX);
	m->backoff_ms = PM_BACKOFF_MIN_MS;
	m->state = PM_DOWN;
	m->conn_timer = xevent(base, conn_timer_cb, m);
	m->backoff_timer = xevent(base, backoff_cb, m);
	m->close_ev = xevent(base, close_cb, m);
	m->flush_ev = xevent(base, flush_cb, m);
	m->drain_ev = xevent(base, drain_ev_cb, m);
	m->drain_timer = xevent(base, drain_timer_cb, m);
	return m;
}

struct px_marks *px_marks_new(struct event_base *base, const struct px_marks_settings *set)
{
	struct px_marks *m = lane_new(base, set, NULL);

	m->lanes = xcalloc(PM_LANES_MAX, sizeof(*m->lanes));
	m->lanes[0] = m;
	m->nlanes = 1;
	m->set = *set;
	m->set.host = m->host;
	m->set.unix_path = m->unix_path;
	if (m->enabled)
		connect_start(m);
	return m;
}

/* The lane of the cluster node host:port (a new one, connecting, when it
 * is new), or NULL when PM_LANES_MAX are in use. */
static struct px_marks *lane_get(struct px_marks *root, const char *host, size_t hl, int port)
{
	struct px_marks_settings set = root->set;
	struct px_marks *l;
	char name[256];
	size_t i;

	for (i = 0; i < root->nlanes; i++) {
		l = root->lanes[i];
		if (l->host != NULL && l->unix_path == NULL && l->port == port &&
		    strlen(l->host) == hl && memcmp(l->host, host, hl) == 0)
			return l;
	}
	if (root->nlanes >= PM_LANES_MAX || hl >= sizeof(name))
		return NULL;
	memcpy(name, host, hl);
	name[hl] = '\0';
	set.host = name;
	set.port = port;
	set.unix_path = NULL;
	l = lane_new(root->base, &set, root);
	root->lanes[root->nlanes++] = l;
	log_info("redis: cluster node %s serves some of the keys: connecting", l->where);
	connect_start(l);
	return l;
}

static size_t lane_index(const struct px_marks *l)
{
	const struct px_marks *root = l->root;
	size_t i;

	for (i = 0; i < root->nlanes; i++)
		if (root->lanes[i] == l)
			return i;
	abort();
}

/* The lane a key of slot goes to. */
static struct px_marks *lane_for(struct px_marks *root, unsigned slot)
{
	unsigned short i = root->slot_lane != NULL ? root->slot_lane[slot & (RK_SLOTS - 1)] : 0;

	return root->lanes[i != 0 ? i - 1u : root->dflt];
}

/* The lane of user's shard keys (route: of its route key). Until a cluster
 * redirected anything there is one lane: no slot is computed. */
static struct px_marks *lane_of_user(struct px_marks *root, const char *user, int route)
{
	if (root->slot_lane == NULL)
		return root->lanes[root->dflt];
	return lane_for(root, route ? rk_route_slot(user) : rk_shard_slot(rk_shard(user)));
}

static void lane_free(struct px_marks *m)
{
	if (m->ac != NULL) {
		/* Reply callbacks see freeing and leave the items to us. */
		redisAsyncFree(m->ac);
		m->ac = NULL;
	}
	while (m->reqs != NULL) {
		struct px_route_req *req = m->reqs;

		route_req_unlink(m, req);
		if (req->item != NULL) {
			req->item->req = NULL;
			req->item = NULL;
		}
		if (!req->answered)
			req->status = -1;
		req->cb(req->status, req->state, req->epoch, req->upstream, req->aux);
		route_req_free(req);
	}
	list_free(&m->ring);
	list_free(&m->inflight);
	list_free(&m->routes_q);
	uset_clear(&m->over);
	free(m->over.b);
	free(m->hb);
	free(m->heat);
	event_free(m->conn_timer);
	event_free(m->backoff_timer);
	event_free(m->close_ev);
	event_free(m->flush_ev);
	event_free(m->drain_ev);
	event_free(m->drain_timer);
	free(m->host);
	free(m->unix_path);
	free(m);
}

void px_marks_free(struct px_marks **mp)
{
	struct px_marks *m = mp != NULL ? *mp : NULL;
	struct px_marks **lanes;
	size_t i, n;

	if (m == NULL)
		return;
	*mp = NULL;
	lanes = m->lanes;
	n = m->nlanes;
	/* every lane first: a callback run while one is freed must not
	 * move items into another */
	for (i = 0; i < n; i++)
		lanes[i]->freeing = 1;
	free(m->slot_lane);
	rcache_free(m);
	for (i = n; i-- > 0;)
		lane_free(lanes[i]);
	free(lanes);
}

void px_marks_folder(struct px_marks *m, const char *user, const char *folder, enum rk_prio prio)
{
	struct pm_item *it;

	m->st.marks++;
	if (!m->enabled || m->freeing)
		return;
	if (user[0] == '\0' || folder[0] == '\0' || strchr(user, '\t') != NULL ||
	    strlen(user) > PM_USER_MAX || strlen(folder) > PM_TEXT_MAX) {
		log_warn("redis: mark refused: bad user or folder name (%zu, %zu bytes)",
		         strlen(user), strlen(folder));
		m->st.errors++;
		return;
	}
	m = lane_of_user(m, user, 0);
	it = item_new(PM_MARK, user, user, folder);
	it->score = now_ms(m) + mark_debounce(m, user, folder, prio);
	if (ring_put(m, it, 1, NULL) == 1)
		flush_schedule_batch(m);
}

void px_marks_hint(struct px_marks *m, const char *user, const char *hint)
{
	if (!m->enabled || m->freeing)
		return;
	if (user[0] == '\0' || strlen(user) > PM_USER_MAX || strlen(hint) > PM_TEXT_MAX) {
		log_warn("redis: hint refused: bad user name or hint too long");
		m->st.errors++;
		return;
	}
	m = lane_of_user(m, user, 0);
	if (ring_put(m, item_new(PM_HINT, user, hint, NULL), 1, NULL) == 1)
		flush_schedule_batch(m);
}

/* Over every lane: counters summed; connected when every lane is. */
void px_marks_get_stats(const struct px_marks *m, struct px_marks_stats *stats_r)
{
	size_t i;

	*stats_r = m->st;
	stats_r->backlog = m->ring.count;
	stats_r->connected = m->state == PM_UP;
	for (i = 1; i < m->nlanes; i++) {
		const struct px_marks *l = m->lanes[i];

		stats_r->marks += l->st.marks;
		stats_r->sent += l->st.sent;
		stats_r->errors += l->st.errors;
		stats_r->dropped += l->st.dropped;
		stats_r->hot += l->st.hot;
		stats_r->reconnects += l->st.reconnects;
		stats_r->cached_routes += l->st.cached_routes;
		stats_r->backlog += l->ring.count;
		stats_r->connected = stats_r->connected && l->state == PM_UP;
		if (l->st.last_latency_us > stats_r->last_latency_us)
			stats_r->last_latency_us = l->st.last_latency_us;
	}
}

struct px_route_req *px_marks_route(struct px_marks *m, const char *user, px_route_cb *cb,
                                    void *aux)
{
	struct px_route_req *req;
	struct timeval tv;

	if (m->freeing)
		return NULL;
	if (m->enabled)
		m = lane_of_user(m, user, 1);
	req = xcalloc(1, sizeof(*req));
	req->m = m;
	req->cb = cb;
	req->aux = aux;
	req->user = xstrdup(user);
	req->ev = xevent(m->base, route_ev_cb, req);
	req->next = m->reqs;
	if (m->reqs != NULL)
		m->reqs->prev = req;
	m->reqs = req;
	if (!m->enabled || m->state == PM_DOWN || m->state == PM_CLOSING || user[0] == '\0' ||
	    strlen(user) > PM_USER_MAX) {
		route_req_fail_later(m, req);
		return req;
	}
	req->item = item_new(PM_ROUTE, user, "", NULL);
	req->item->req = req;
	list_append(&m->routes_q, req->item);
	ms_to_tv(m->timeout_ms, &tv);
	evtimer_add(req->ev, &tv);
	flush_schedule(m);
	return req;
}

void px_marks_route_cancel(struct px_route_req **reqp)
{
	struct px_route_req *req = reqp != NULL ? *reqp : NULL;

	if (req == NULL)
		return;
	*reqp = NULL;
	route_req_detach(req->m, req);
	route_req_unlink(req->m, req);
	route_req_free(req);
}
