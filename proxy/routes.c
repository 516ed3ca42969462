/*
 * routes.c - per-user cutover in the proxy: route changes from rep:ctl,
 * held logins during a freeze, draining of live sessions, freeze acks.
 * See routes.h for the contract and replication-design.md section 7.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include <imapferry/conn.h>
#include <imapferry/log.h>
#include <imapferry/rkeys.h>
#include <imapferry/rnodes.h>

#include "marks.h"
#include "routes.h"
#include "session.h"
#include "imapferry/xalloc.h"

#define RT_BACKOFF_MIN_MS   100u
#define RT_BACKOFF_MAX_MS   5000u
#define RT_ACKS_MAX         1024u /* acks awaiting a reply; more wait for the next tick */
#define RT_USER_MAX         512u  /* longer names in rep:ctl are ignored */
#define RT_BYE              "* BYE [UNAVAILABLE] Mailbox moving, please reconnect in a moment.\r\n"
#define RT_LEASE_TIMEOUT_MS 5000u /* a lease read unanswered this long is sent again */
#define RT_NODES_MAX        64u   /* Redis Cluster nodes followed */

struct rt_entry {
	char *user;
	enum rk_route_state state;
	uint64_t epoch;
	uint64_t acked_epoch; /* last epoch acked (sent), 0 = none */
	uint64_t read_ms;     /* when the last read was sent */
	int reading;          /* a read is in flight */
	int known;            /* state and epoch come from a read */
	/* counted by each tick's walk over the sessions */
	unsigned live, held, draining;
	int hnext; /* hash chain (index), -1 = end */
	/* The freeze lease (rkeys.h RK_ROUTE_F_LEASE), read on the ack
	 * connection with Redis's clock while the entry is FREEZE. */
	uint64_t lease_epoch;   /* the freeze the fields below describe, 0 = none read */
	int lease_ended;        /* its lease ended (towards the source): not frozen */
	int lease_final;        /* ended, or no lease at all: not read again */
	int lease_reading;      /* a read is in flight */
	unsigned lease_seq;     /* of the last read sent (older answers are dropped) */
	uint64_t lease_read_ms; /* when it was sent */
	uint64_t lease_warned;  /* the epoch whose ended lease was logged */
};

struct rt_link {
	struct px_routes *r;
	char *host; /* a cluster node's link: its address; NULL: the configured one */
	int port;
	redisAsyncContext *ac;
	struct event *retry;
	unsigned backoff_ms;
	int up;
	int was_up; /* connected before: the next connect follows a loss */
	int is_sub; /* the rep:ctl subscriber */
	const char *name;
};

struct px_routes {
	struct px_server *srv;
	char *host, *unix_path;
	int port;
	unsigned hold_ms, drain_ms;
	char id[160];
	struct rt_link sub, cmd;
	/* A Redis Cluster: links to the nodes whose MOVED replies named them,
	 * for the lease reads and acks of the keys they serve (the subscriber
	 * stays on the configured node: a cluster publishes to every node). */
	struct rt_link *nodes[RT_NODES_MAX];
	size_t nnodes;
	unsigned short *slot_node; /* [RK_SLOTS] index in nodes + 1, 0 = cmd */
	struct event *tick;
	int ticking;
	struct rt_entry *e;
	size_t n, cap;
	int *hash; /* RT_HASH buckets of entry indexes, rebuilt when entries change */
	int full_logged;
	unsigned acks_pending;
	int freeing;
};

#define RT_HASH 1024u

struct rt_read {
	struct px_routes *r;
	char user[];
};

static void link_connect(struct rt_link *l);
static void link_init(struct px_routes *r, struct rt_link *l, int is_sub, const char *name);

/* ---- a Redis Cluster ---- */

/* The link for a key of slot. */
static struct rt_link *cmd_link(struct px_routes *r, unsigned slot)
{
	unsigned short i = r->slot_node != NULL ? r->slot_node[slot & (RK_SLOTS - 1)] : 0;

	return i == 0 ? &r->cmd : r->nodes[i - 1];
}

/* An error reply: 1 when it is a cluster's redirection. A MOVED is learned
 * (the node's link connects in the background); the command itself goes
 * again at a later tick, as after any failed read or ack. */
static int rt_redirect(struct px_routes *r, const redisReply *rep)
{
	const char *host;
	size_t hl, i;
	unsigned slot;
	int ask, port;
	struct rt_link *l = NULL;

	if (rep == NULL || rep->type != REDIS_REPLY_ERROR ||
	    rn_redirect_parse(rep->str, rep->len, &ask, &slot, &host, &hl, &port) < 0)
		return 0;
	if (ask || r->freeing)
		return 1; /* a slot being migrated: the next try finds it */
	for (i = 0; i < r->nnodes; i++)
		if (r->nodes[i]->port == port && strlen(r->nodes[i]->host) == hl &&
		    memcmp(r->nodes[i]->host, host, hl) == 0)
			l = r->nodes[i];
	if (l == NULL) {
		if (r->nnodes >= RT_NODES_MAX)
			return 1;
		l = xcalloc(1, sizeof(*l));
		l->host = xmalloc(hl + 1);
		memcpy(l->host, host, hl);
		l->host[hl] = '\0';
		l->port = port;
		r->nodes[r->nnodes++] = l;
		i = r->nnodes - 1;
		link_init(r, l, 0, "cluster node");
	} else {
		for (i = 0; r->nodes[i] != l; i++)
			;
	}
	if (r->slot_node == NULL)
		r->slot_node = xcalloc(RK_SLOTS, sizeof(*r->slot_node));
	r->slot_node[slot] = (unsigned short)(i + 1);
	return 1;
}

/* A cluster node's link went down: its slots go back to the configured
 * node, which redirects them to whoever serves them now (a failover). */
static void rt_node_forget(struct px_routes *r, const struct rt_link *l)
{
	size_t i;

	if (l->host == NULL || r->slot_node == NULL)
		return;
	for (i = 0; i < r->nnodes; i++)
		if (r->nodes[i] == l)
			for (unsigned s = 0; s < RK_SLOTS; s++)
				if (r->slot_node[s] == i + 1)
					r->slot_node[s] = 0;
}

static uint64_t rt_now(const struct px_routes *r)
{
	struct timeval tv;

	event_base_gettimeofday_cached(r->srv->base, &tv);
	return (uint64_t)tv.tv_sec * 1000u + (uint64_t)tv.tv_usec / 1000u;
}

/* ---- entries ---- */

static unsigned rt_hash_of(const char *user)
{
	return rk_crc16(user, strlen(user)) % RT_HASH;
}

static void hash_rebuild(struct px_routes *r)
{
	for (unsigned i = 0; i < RT_HASH; i++)
		r->hash[i] = -1;
	for (size_t i = 0; i < r->n; i++) {
		unsigned h = rt_hash_of(r->e[i].user);

		r->e[i].hnext = r->hash[h];
		r->hash[h] = (int)i;
	}
}

static struct rt_entry *entry_find(struct px_routes *r, const char *user)
{
	for (int i = r->hash[rt_hash_of(user)]; i >= 0; i = r->e[i].hnext)
		if (strcmp(r->e[i].user, user) == 0)
			return &r->e[i];
	return NULL;
}

static void tick_start(struct px_routes *r)
{
	struct timeval tv = {0, PX_ROUTES_TICK_MS * 1000};

	if (!r->ticking && !r->freeing) {
		r->ticking = 1;
		evtimer_add(r->tick, &tv);
	}
}

/* The entry of user, added (unknown, not read) when missing; NULL when the
 * table is full. */
static struct rt_entry *entry_get(struct px_routes *r, const char *user)
{
	struct rt_entry *e = entry_find(r, user);

	if (e != NULL)
		return e;
	if (r->n == PX_ROUTES_MAX) {
		if (!r->full_logged)
			log_error("routes: %u users tracked already: route changes of more users "
			          "are not followed",
			          PX_ROUTES_MAX);
		r->full_logged = 1;
		return NULL;
	}
	if (r->n == r->cap) {
		size_t cap = r->cap == 0 ? 16 : r->cap * 2;
		struct rt_entry *ne = realloc(r->e, cap * sizeof(*ne));

		if (ne == NULL)
			abort();
		r->e = ne;
		r->cap = cap;
	}
	e = &r->e[r->n++];
	memset(e, 0, sizeof(*e));
	e->user = xstrdup(user);
	hash_rebuild(r);
	tick_start(r);
	return e;
}

static void entry_del(struct px_routes *r, size_t i)
{
	free(r->e[i].user);
	r->e[i] = r->e[--r->n];
	r->full_logged = 0;
	hash_rebuild(r);
}

/* ---- route reads (on the marks connection, which reads routes anyway) ---- */

static void entry_set(struct rt_entry *e, int status, enum rk_route_state state, uint64_t epoch)
{
	if (status < 0)
		return; /* Redis away: keep what we knew */
	if (status == 1) {
		state = RK_ROUTE_SRC;
		epoch = 0;
	}
	if (e->known && (e->state != state || e->epoch != epoch))
		log_notice("route of %s: %s epoch %llu", e->user, rk_route_state_names[state],
		           (unsigned long long)epoch);
	e->state = state;
	e->epoch = epoch;
	e->known = 1;
}

static void read_cb(int status, enum rk_route_state state, uint64_t epoch, const char *upstream,
                    void *aux)
{
	struct rt_read *rd = aux;
	struct px_routes *r = rd->r;
	struct rt_entry *e = entry_find(r, rd->user);

	(void)upstream;
	if (e == NULL && status >= 0)
		e = entry_get(r, rd->user);
	if (e != NULL) {
		e->reading = 0;
		entry_set(e, status, state, epoch);
	}
	free(rd);
	/* Held logins go on at once, not at the next tick. */
	if (r->ticking && !r->freeing)
		event_active(r->tick, EV_TIMEOUT, 0);
}

static void entry_read(struct px_routes *r, struct rt_entry *e)
{
	size_t len = strlen(e->user);
	struct rt_read *rd;

	if (e->reading || r->srv->marks == NULL)
		return;
	rd = xmalloc(sizeof(*rd) + len + 1);
	rd->r = r;
	memcpy(rd->user, e->user, len + 1);
	e->read_ms = rt_now(r);
	if (px_marks_route(r->srv->marks, e->user, read_cb, rd) == NULL) {
		free(rd);
		return;
	}
	e->reading = 1;
}

/* Follow user: read its route now (a rep:ctl kick, or a resubscribe). */
static void rt_track(struct px_routes *r, const char *user)
{
	struct rt_entry *e = entry_get(r, user);

	if (e != NULL)
		entry_read(r, e);
}

/* ---- the freeze lease ---- */

/* The route as logins and sessions see it: a FREEZE whose lease ended (the
 * imapferryctl that froze the user is gone, and the user was on the source)
 * counts as SRC. Such a freeze can never be flipped or renewed: imapferryctl
 * checks the lease against the same clock (Redis's) in the same script. */
static enum rk_route_state entry_state(const struct rt_entry *e)
{
	if (e->state == RK_ROUTE_FREEZE && e->lease_ended && e->lease_epoch == e->epoch)
		return RK_ROUTE_SRC;
	return e->state;
}

/* KEYS[1] route key: {state, epoch, none|running|ended, lease_to}. */
static const char rt_lease_lua[] =
        "local v = redis.call('HMGET', KEYS[1], 'state', 'epoch', '" RK_ROUTE_F_LEASE
        "', '" RK_ROUTE_F_LEASE_TO "')\n"
        "local t = redis.call('TIME')\n"
        "local l = tonumber(v[3] or '')\n"
        "local s = 'none'\n"
        "if l then\n"
        "  if l > t[1] * 1000 + math.floor(t[2] / 1000) then s = 'running' else s = 'ended' end\n"
        "end\n"
        "return {v[1] or '', v[2] or '', s, v[4] or ''}\n";

struct rt_lease {
	struct px_routes *r;
	unsigned seq;
	char user[];
};

static void entry_read(struct px_routes *r, struct rt_entry *e);

static void lease_cb(redisAsyncContext *ac, void *reply, void *aux)
{
	struct rt_lease *q = aux;
	struct px_routes *r = q->r;
	redisReply *rep = reply;
	struct rt_entry *e = r->freeing ? NULL : entry_find(r, q->user);
	uint64_t epoch;

	(void)ac;
	if (e == NULL || !e->lease_reading || e->lease_seq != q->seq) {
		free(q);
		return;
	}
	e->lease_reading = 0;
	free(q);
	if (rt_redirect(r, rep))
		return; /* again at a later tick, on the node that has the key */
	if (rep == NULL || rep->type != REDIS_REPLY_ARRAY || rep->elements != 4)
		return; /* again at a later tick */
	for (size_t i = 0; i < 4; i++)
		if (rep->element[i]->type != REDIS_REPLY_STRING)
			return;
	epoch = strtoull(rep->element[1]->str, NULL, 10);
	if (strcmp(rep->element[0]->str, "FREEZE") != 0 || epoch != e->epoch) {
		entry_read(r, e); /* the route changed meanwhile: read it */
		return;
	}
	e->lease_epoch = epoch;
	e->lease_final = strcmp(rep->element[2]->str, "running") != 0;
	e->lease_ended = strcmp(rep->element[2]->str, "ended") == 0 &&
	                 strcmp(rep->element[3]->str, "DST") != 0;
	if (strcmp(rep->element[2]->str, "ended") == 0 && e->lease_warned != epoch) {
		e->lease_warned = epoch;
		log_warn("routes: the freeze of %s (epoch %llu) has no imapferryctl any more (its "
		         "lease ended): %s",
		         e->user, (unsigned long long)epoch,
		         e->lease_ended ? "logins go on to the source until a cutover or rollback "
		                          "takes it over"
		                        : "the user was on the destination, logins are held until "
		                          "imapferryctl rollback takes it over");
	}
	if (e->lease_ended && r->ticking && !r->freeing)
		event_active(r->tick, EV_TIMEOUT, 0); /* held logins go on at once */
}

/* Reads the lease of a FREEZE entry when it is not known for its epoch yet,
 * or (a running lease) every PX_ROUTES_REREAD_MS. */
static void entry_lease_check(struct px_routes *r, struct rt_entry *e, uint64_t now)
{
	char key[RT_USER_MAX + 32];
	const char *argv[4];
	size_t argl[4];
	size_t len = strlen(e->user);
	struct rt_lease *q;

	struct rt_link *l = cmd_link(r, rk_route_slot(e->user));

	if (!l->up || len > RT_USER_MAX)
		return;
	if (e->lease_reading && now < e->lease_read_ms + RT_LEASE_TIMEOUT_MS)
		return;
	if (e->lease_epoch == e->epoch &&
	    (e->lease_final || now < e->lease_read_ms + PX_ROUTES_REREAD_MS))
		return;
	if (rk_key_route(key, sizeof(key), e->user) < 0)
		return;
	q = xmalloc(sizeof(*q) + len + 1);
	q->r = r;
	q->seq = ++e->lease_seq;
	memcpy(q->user, e->user, len + 1);
	argv[0] = "EVAL";
	argv[1] = rt_lease_lua;
	argv[2] = "1";
	argv[3] = key;
	for (int i = 0; i < 4; i++)
		argl[i] = strlen(argv[i]);
	if (redisAsyncCommandArgv(l->ac, lease_cb, q, 4, argv, argl) != REDIS_OK) {
		free(q);
		return;
	}
	e->lease_reading = 1;
	e->lease_read_ms = now;
}

/* ---- acks ---- */

struct rt_ack {
	struct px_routes *r;
	uint64_t epoch;
	char user[];
};

static void ack_cb(redisAsyncContext *ac, void *reply, void *aux)
{
	struct rt_ack *a = aux;
	struct px_routes *r = a->r;
	redisReply *rep = reply;

	(void)ac;
	r->acks_pending--;
	if (rep == NULL || rep->type == REDIS_REPLY_ERROR) {
		struct rt_entry *e = r->freeing ? NULL : entry_find(r, a->user);

		if (rt_redirect(r, rep))
			log_debug(LOG_CAT_PROXY,
			          "routes: freeze ack of %s: %s (again at the next tick)", a->user,
			          rep->str);
		else
			log_warn("routes: freeze ack of %s epoch %llu not written: %s", a->user,
			         (unsigned long long)a->epoch,
			         rep != NULL ? rep->str : "connection lost");
		if (e != NULL && e->acked_epoch == a->epoch)
			e->acked_epoch = 0; /* again at the next tick */
	}
	free(a);
}

static void entry_ack(struct px_routes *r, struct rt_entry *e)
{
	char key[RT_USER_MAX + 32], epoch[24];
	const char *argv[4];
	size_t argl[4];
	size_t len = strlen(e->user);
	struct rt_ack *a;

	struct rt_link *l;

	if (r->acks_pending >= RT_ACKS_MAX || len > RT_USER_MAX)
		return;
	snprintf(key, sizeof(key), "%s%s", PX_ROUTES_KEY_FRZ, e->user);
	l = cmd_link(r, rk_key_slot(key, strlen(key)));
	if (!l->up)
		return;
	snprintf(epoch, sizeof(epoch), "%llu", (unsigned long long)e->epoch);
	a = xmalloc(sizeof(*a) + len + 1);
	a->r = r;
	a->epoch = e->epoch;
	memcpy(a->user, e->user, len + 1);
	argv[0] = "HSET";
	argv[1] = key;
	argv[2] = r->id;
	argv[3] = epoch;
	for (int i = 0; i < 4; i++)
		argl[i] = strlen(argv[i]);
	if (redisAsyncCommandArgv(l->ac, ack_cb, a, 4, argv, argl) != REDIS_OK) {
		free(a);
		return;
	}
	r->acks_pending++;
	/* The expiry's reply does not matter (fire-and-forget). */
	redisAsyncCommand(l->ac, NULL, NULL, "EXPIRE %b %u", key, strlen(key), PX_ROUTES_ACK_TTL_S);
	e->acked_epoch = e->epoch;
	log_info("routes: no session of %s left: freeze epoch %llu acknowledged", e->user,
	         (unsigned long long)e->epoch);
}

/* ---- sessions ---- */

/* Whether s (relaying) is on the side e's route says. */
static int session_misplaced(const struct px_server *srv, const struct px_session *s,
                             const struct rt_entry *e)
{
	enum rk_route_state st = entry_state(e);
	int on_dst = srv->dst_host != NULL && s->up_host == srv->dst_host;
	int want_dst = st == RK_ROUTE_DST && srv->dst_host != NULL;

	return st == RK_ROUTE_FREEZE || on_dst != want_dst;
}

/* One step of draining s: returns 1 when s was closed. */
static int session_drain(struct px_routes *r, struct px_session *s, const struct rt_entry *e,
                         uint64_t now)
{
	int boundary;

	if (!s->rt_drain) {
		s->rt_drain = 1;
		s->rt_deadline = now + r->drain_ms;
		px_session_log(s, LOG_LVL_INFO,
		               "route %s epoch %llu: closing at the next command boundary",
		               rk_route_state_names[e->state], (unsigned long long)e->epoch);
	}
	if (s->idle_tag != NULL && s->inflight == 1 && !s->rt_done_sent && s->up != NULL &&
	    conn_output(s->up) != NULL) {
		/* RFC 2177: DONE ends the IDLE; the client's own DONE is
		 * no longer read (it would reach the upstream as a command). */
		evbuffer_add(conn_output(s->up), "DONE\r\n", 6);
		s->rt_done_sent = 1;
		if (s->client != NULL)
			conn_pause_read(s->client);
	}
	boundary = s->inflight == 0 && s->sync_tag == NULL && !imap_parser_busy(s->cp) &&
	           (s->sp == NULL || !imap_parser_busy(s->sp));
	if (!boundary && now < s->rt_deadline) {
		/* Between two commands: take no new one while those in
		 * flight finish. Inside one (a literal): keep reading it. */
		if (s->client != NULL && !imap_parser_busy(s->cp))
			conn_pause_read(s->client);
		return 0;
	}
	px_session_reply(s, RT_BYE);
	px_session_close(s, boundary ? "route change: mailbox moving"
	                             : "route change: commands in flight cut off after the "
	                               "drain time");
	return 1;
}

/* A held login: go on, give up, or keep waiting. */
static void session_held(struct px_routes *r, struct px_session *s, struct rt_entry *e,
                         uint64_t now)
{
	if (entry_state(e) != RK_ROUTE_FREEZE) {
		s->rt_held = 0;
		px_session_log(s, LOG_LVL_INFO, "held login released: route %s epoch %llu%s",
		               rk_route_state_names[e->state], (unsigned long long)e->epoch,
		               e->state == RK_ROUTE_FREEZE ? " (freeze lease ended: to the source)"
		                                           : "");
		px_upstream_start(s);
		return;
	}
	if (now >= s->rt_deadline) {
		s->rt_held = 0;
		px_session_log(s, LOG_LVL_NOTICE, "held login given up after %u ms (route FREEZE)",
		               r->hold_ms);
		px_session_reply(s,
		                 "%s NO [UNAVAILABLE] Mailbox moving, please try again in a "
		                 "moment.\r\n",
		                 s->tag != NULL ? s->tag : "*");
		px_session_login_done(s, 0);
		return;
	}
	e->held++;
}

static void tick_cb(evutil_socket_t fd, short what, void *aux)
{
	struct px_routes *r = aux;
	struct timeval tv = {0, PX_ROUTES_TICK_MS * 1000};
	uint64_t now = rt_now(r);
	struct px_session *s, *next;

	(void)fd;
	(void)what;
	r->ticking = 0;
	if (r->freeing)
		return;
	for (size_t i = 0; i < r->n; i++)
		r->e[i].live = r->e[i].held = r->e[i].draining = 0;
	for (s = r->srv->sessions; s != NULL; s = next) {
		struct rt_entry *e;

		next = s->next;
		if (s->user == NULL || (s->state != PX_ST_LOGIN && s->state != PX_ST_RELAY))
			continue;
		if ((e = entry_find(r, s->user)) == NULL || !e->known)
			continue;
		if (s->rt_held) {
			session_held(r, s, e, now);
			continue;
		}
		if (s->state == PX_ST_LOGIN) {
			/* on its way upstream: it counts until it can drain */
			e->live++;
			continue;
		}
		/* a session already closing goes on closing */
		if (!s->rt_drain && !session_misplaced(r->srv, s, e))
			continue;
		if (!session_drain(r, s, e, now)) {
			e->live++;
			e->draining++;
		}
	}
	for (size_t i = 0; i < r->n;) {
		struct rt_entry *e = &r->e[i];

		if (e->known && e->state == RK_ROUTE_FREEZE) {
			if (entry_state(e) == RK_ROUTE_FREEZE && e->live == 0 &&
			    e->acked_epoch != e->epoch)
				entry_ack(r, e);
			if (now >= e->read_ms + PX_ROUTES_REREAD_MS)
				entry_read(r, e);
			entry_lease_check(r, e, now);
		} else if (!e->reading && e->draining == 0 && e->held == 0) {
			entry_del(r, i);
			continue;
		}
		i++;
	}
	if (r->n > 0) {
		r->ticking = 1;
		evtimer_add(r->tick, &tv);
	}
}

/* ---- the login hook ---- */

static void login_cb(int status, enum rk_route_state state, uint64_t epoch, const char *upstream,
                     void *aux)
{
	struct px_session *s = aux;
	struct px_routes *r = s->srv->routes;
	struct rt_entry *e;

	(void)upstream;
	s->route = NULL;
	if (r == NULL || status != 0 || state != RK_ROUTE_FREEZE || r->freeing) {
		px_upstream_start(s);
		return;
	}
	if ((e = entry_get(r, s->user)) == NULL) {
		px_session_reply(s, "%s NO [UNAVAILABLE] Mailbox moving, please try again.\r\n",
		                 s->tag != NULL ? s->tag : "*");
		px_session_login_done(s, 0);
		return;
	}
	entry_set(e, status, state, epoch);
	if (e->read_ms == 0)
		e->read_ms = rt_now(r);
	if (entry_state(e) != RK_ROUTE_FREEZE) {
		/* a freeze whose imapferryctl is gone (logged once) */
		px_session_log(s, LOG_LVL_INFO,
		               "route FREEZE epoch %llu, its lease ended: to the source",
		               (unsigned long long)epoch);
		px_upstream_start(s);
		return;
	}
	s->rt_held = 1;
	s->rt_deadline = rt_now(r) + r->hold_ms;
	px_session_log(s, LOG_LVL_INFO, "login held: route FREEZE epoch %llu",
	               (unsigned long long)epoch);
	tick_start(r);
}

void px_routes_login(struct px_session *s)
{
	struct px_routes *r = s->srv->routes;

	if (r == NULL || s->srv->marks == NULL || s->user == NULL) {
		px_upstream_start(s);
		return;
	}
	px_marks_route_cancel(&s->route);
	s->route = px_marks_route(s->srv->marks, s->user, login_cb, s);
	if (s->route == NULL)
		px_upstream_start(s);
}

/* ---- Redis links ---- */

static void sub_cb(redisAsyncContext *ac, void *reply, void *aux)
{
	struct rt_link *l = aux;
	redisReply *rep = reply;
	const char *msg, *sp;
	char user[RT_USER_MAX + 1];
	size_t ulen;

	(void)ac;
	if (rep == NULL || rep->type != REDIS_REPLY_ARRAY || rep->elements != 3 ||
	    rep->element[0]->type != REDIS_REPLY_STRING ||
	    rep->element[2]->type != REDIS_REPLY_STRING)
		return;
	if (strcmp(rep->element[0]->str, "subscribe") == 0) {
		log_info("routes: subscribed to %s", RK_CTL_CHANNEL);
		return;
	}
	if (strcmp(rep->element[0]->str, "message") != 0)
		return;
	/* "route <user> <epoch>" */
	msg = rep->element[2]->str;
	if (strncmp(msg, "route ", 6) != 0 || (sp = strrchr(msg + 6, ' ')) == NULL)
		return;
	ulen = (size_t)(sp - (msg + 6));
	if (ulen == 0 || ulen > RT_USER_MAX)
		return;
	for (size_t i = 0; i < ulen; i++)
		if ((unsigned char)msg[6 + i] <= 0x20 || msg[6 + i] == 0x7f)
			return; /* not a login name: nothing to log or look up */
	memcpy(user, msg + 6, ulen);
	user[ulen] = '\0';
	log_debug(LOG_CAT_PROXY, "routes: kick for %s", user);
	rt_track(l->r, user);
}

/* After a lost subscription, kicks may have been missed: read the route of
 * every user with a session. */
static void resync_sessions(struct px_routes *r)
{
	for (struct px_session *s = r->srv->sessions; s != NULL; s = s->next)
		if (s->user != NULL && (s->state == PX_ST_LOGIN || s->state == PX_ST_RELAY))
			rt_track(r, s->user);
}

static void link_retry_later(struct rt_link *l)
{
	struct timeval tv;

	l->ac = NULL;
	l->up = 0;
	if (l->r->freeing)
		return;
	rt_node_forget(l->r, l);
	l->backoff_ms = l->backoff_ms == 0 ? RT_BACKOFF_MIN_MS : l->backoff_ms * 2;
	if (l->backoff_ms > RT_BACKOFF_MAX_MS)
		l->backoff_ms = RT_BACKOFF_MAX_MS;
	tv.tv_sec = l->backoff_ms / 1000;
	tv.tv_usec = (l->backoff_ms % 1000) * 1000;
	evtimer_add(l->retry, &tv);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
	struct rt_link *l = ac->data;

	if (status != REDIS_OK) {
		log_warn("routes: %s connection to Redis failed: %s", l->name, ac->errstr);
		link_retry_later(l); /* hiredis frees ac after this callback */
		return;
	}
	l->up = 1;
	l->backoff_ms = 0;
	if (l->is_sub) {
		redisAsyncCommand(l->ac, sub_cb, l, "SUBSCRIBE %s", RK_CTL_CHANNEL);
		if (l->was_up)
			resync_sessions(l->r);
	}
	l->was_up = 1;
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
	struct rt_link *l = ac->data;

	if (!l->r->freeing)
		log_warn("routes: %s connection to Redis lost%s%s", l->name,
		         status != REDIS_OK ? ": " : "", status != REDIS_OK ? ac->errstr : "");
	link_retry_later(l);
}

static void retry_cb(evutil_socket_t fd, short what, void *aux)
{
	(void)fd;
	(void)what;
	link_connect(aux);
}

static void link_connect(struct rt_link *l)
{
	struct px_routes *r = l->r;
	redisAsyncContext *ac;

	if (l->host != NULL)
		ac = redisAsyncConnect(l->host, l->port);
	else if (r->unix_path != NULL)
		ac = redisAsyncConnectUnix(r->unix_path);
	else
		ac = redisAsyncConnect(r->host, r->port);
	if (ac == NULL || ac->err) {
		log_warn("routes: cannot connect to Redis: %s",
		         ac != NULL ? ac->errstr : "out of memory");
		if (ac != NULL)
			redisAsyncFree(ac);
		link_retry_later(l);
		return;
	}
	ac->data = l;
	if (redisLibeventAttach(ac, r->srv->base) != REDIS_OK) {
		redisAsyncFree(ac);
		link_retry_later(l);
		return;
	}
	redisAsyncSetConnectCallback(ac, on_connect);
	redisAsyncSetDisconnectCallback(ac, on_disconnect);
	l->ac = ac;
}

static void link_init(struct px_routes *r, struct rt_link *l, int is_sub, const char *name)
{
	l->r = r;
	l->is_sub = is_sub;
	l->name = name;
	l->retry = evtimer_new(r->srv->base, retry_cb, l);
	if (l->retry == NULL)
		abort();
	link_connect(l);
}

static void link_free(struct rt_link *l)
{
	if (l->retry != NULL)
		event_free(l->retry);
	l->retry = NULL;
	if (l->ac != NULL) {
		redisAsyncContext *ac = l->ac;

		l->ac = NULL;
		redisAsyncFree(ac);
	}
}

/* ---- life ---- */

struct px_routes *px_routes_new(struct px_server *srv, const struct px_routes_settings *set)
{
	struct px_routes *r;
	char host[64];
	struct timeval tv;

	if (set->host == NULL && set->unix_path == NULL)
		return NULL;
	r = calloc(1, sizeof(*r));
	if (r == NULL)
		abort();
	r->srv = srv;
	r->host = set->host != NULL ? xstrdup(set->host) : NULL;
	r->unix_path = set->unix_path != NULL ? xstrdup(set->unix_path) : NULL;
	r->port = set->port > 0 ? set->port : 6379;
	r->hold_ms = set->hold_ms > 0 ? set->hold_ms : PX_FREEZE_HOLD_DEFAULT * 1000u;
	r->drain_ms = set->drain_ms > 0 ? set->drain_ms : PX_FREEZE_DRAIN_DEFAULT * 1000u;
	if (gethostname(host, sizeof(host)) != 0)
		snprintf(host, sizeof(host), "proxy");
	host[sizeof(host) - 1] = '\0';
	gettimeofday(&tv, NULL);
	snprintf(r->id, sizeof(r->id), "%s:%ld:%lld", host, (long)getpid(),
	         (long long)tv.tv_sec * 1000 + tv.tv_usec / 1000);
	r->hash = xmalloc(RT_HASH * sizeof(*r->hash));
	hash_rebuild(r);
	r->tick = evtimer_new(srv->base, tick_cb, r);
	if (r->tick == NULL)
		abort();
	link_init(r, &r->sub, 1, "subscriber");
	link_init(r, &r->cmd, 0, "ack");
	return r;
}

void px_routes_free(struct px_routes **rp)
{
	struct px_routes *r = rp != NULL ? *rp : NULL;

	if (r == NULL)
		return;
	*rp = NULL;
	r->freeing = 1;
	link_free(&r->sub);
	link_free(&r->cmd);
	for (size_t i = 0; i < r->nnodes; i++) {
		link_free(r->nodes[i]);
		free(r->nodes[i]->host);
		free(r->nodes[i]);
	}
	free(r->slot_node);
	event_free(r->tick);
	for (size_t i = 0; i < r->n; i++)
		free(r->e[i].user);
	free(r->e);
	free(r->hash);
	free(r->host);
	free(r->unix_path);
	free(r);
}

const char *px_routes_id(const struct px_routes *r)
{
	return r->id;
}
