/*
 * marks.h - the proxy's fire-and-forget writer of dirty marks to Redis, and
 * its route reader (private to imapferry-proxy).
 *
 * Mail never waits on Redis: every call here returns at once. Marks are
 * pipelined on one hiredis async context attached to the proxy's event base
 * (with a Redis Cluster, one per node: each key goes to the node of its
 * slot, learned from the cluster's MOVED replies; see marks.c).
 * While Redis is down or slow, marks wait in a bounded in-memory ring; the
 * context is reconnected with exponential backoff (100 ms .. 5 s); when the
 * ring overflows, the users whose marks were dropped are remembered (bounded
 * set) and each gets one whole-user mark (folder RK_FOLDER_ALL) once Redis is
 * back; if even that set overflows, an "overflow" counter tells the daemon to
 * sweep everyone (key "rep:sweep_all" set to the time). Every command has a
 * timeout (hiredis 0.14 has none for async commands): on expiry the context is
 * freed outside hiredis callbacks and its unanswered marks go back to the ring.
 */
#ifndef PROXY_MARKS_H
#define PROXY_MARKS_H

#include <imapferry/rkeys.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct px_marks;

struct px_marks_settings {
	const char *host;      /* NULL = no Redis: marks are counted and dropped */
	int port;              /* default 6379 */
	const char *unix_path; /* instead of host/port, or NULL */
	unsigned timeout_ms;   /* per command and connect; default 1000 */
	size_t ring_max;       /* marks kept while Redis is away; default 65536 */
	unsigned debounce_high_ms, debounce_low_ms; /* defaults RK_DEBOUNCE_* */
	unsigned debounce_hot_ms, hot_window_ms; /* defaults RK_DEBOUNCE_HOT_MS, RK_HOT_WINDOW_MS */
	/* Users remembered after ring overflow (each gets one RK_FOLDER_ALL
	 * mark); past this, RK_KEY_SWEEP_ALL is set instead. Default 1024. */
	size_t overflow_users_max;
};

/* Creates the marker (connects in the background). set is copied. */
struct px_marks *px_marks_new(struct event_base *base, const struct px_marks_settings *set);
/* Flushes nothing more; frees at once (pending marks are lost; call
 * px_marks_drain first for a graceful shutdown). Accepts NULL. Route
 * requests still pending get their callback from inside px_marks_free
 * (status -1, or their answer if it had arrived); px_marks_route() called
 * from such a callback returns NULL and never calls back. */
void px_marks_free(struct px_marks **m);
/* Graceful shutdown: calls cb once the ring is empty and every sent mark is
 * answered, or after timeout_ms. */
void px_marks_drain(struct px_marks *m, unsigned timeout_ms, void (*cb)(void *aux), void *aux);

/* Mark (user, folder) dirty: ZADD rep:{s}:due LT <now+debounce> "user\tfolder".
 * folder is the canonical name (rk_folder_canon) or RK_FOLDER_ALL. */
void px_marks_folder(struct px_marks *m, const char *user, const char *folder, enum rk_prio prio);
/* Push a hint line (see rkeys.h) for user. */
void px_marks_hint(struct px_marks *m, const char *user, const char *hint);

struct px_marks_stats {
	uint64_t marks;      /* px_marks_folder calls */
	uint64_t sent;       /* commands answered OK by Redis */
	uint64_t errors;     /* error replies, timeouts, connection losses */
	uint64_t dropped;    /* marks lost from the ring (users then get a whole-user mark) */
	uint64_t hot;        /* marks in a burst, given the longer debounce */
	uint64_t reconnects; /* successful (re)connections */
	size_t backlog;      /* marks waiting in the ring now */
	int connected;
	uint64_t last_latency_us; /* last mark's round trip */
	uint64_t cached_routes;   /* route lookups Redis did not answer, answered by the
	                           * last route read for that user */
};
void px_marks_get_stats(const struct px_marks *m, struct px_marks_stats *stats_r);

/* Route of a user at login: HGETALL rep:route:<user>. cb fires exactly once,
 * never from inside px_marks_route(): status 0 = found (state, epoch,
 * upstream or NULL if the field is absent; strings borrowed for the call),
 * 1 = no route stored (use the default), -1 = Redis unavailable or timed out
 * and no earlier answer for this user is remembered (use the default and say
 * so in the log). When Redis does not answer, the last answer it gave for
 * the user (kept for up to 65536 users) is delivered instead (status 0 or
 * 1, logged): a user cut over stays on the destination. */
typedef void px_route_cb(int status, enum rk_route_state state, uint64_t epoch,
                         const char *upstream, void *aux);
/* Returns a handle to cancel with px_marks_route_cancel (e.g. the client
 * went away); after cancel, cb is never called. The handle is valid until cb
 * fires or it is cancelled. user is copied. */
struct px_route_req;
struct px_route_req *px_marks_route(struct px_marks *m, const char *user, px_route_cb *cb,
                                    void *aux);
void px_marks_route_cancel(struct px_route_req **req);

#endif
