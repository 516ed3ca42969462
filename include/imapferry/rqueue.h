/*
 * rqueue.h - the Redis work queue of imapferry-sync's daemon: the consumer
 * side of the marks imapferry-proxy writes (proxy/marks.c).
 *
 * Design: ../shared/docs/replication-design.md sections 1, 5 and 8; the keys
 * are rkeys.h's. The text for operators is in README.md ("The work queue").
 *
 *   rep:{s}:due       ZSET  "user\tfolder" -> due time (ms, Redis clock)
 *   rep:{s}:inflight  ZSET  member -> lease expiry (ms): the per-folder lock
 *   rep:{s}:owner     HASH  member -> "worker:token" of the current holder
 *   rep:{s}:fence     STRING INCR counter; every claim takes a new token
 *   rep:{s}:st:<user> HASH  folder -> sync state, written only by a holder
 *   rep:{s}:poll      ZSET  user -> next poll (sweep) time (ms)
 *   rep:sweep_all     STRING set by a proxy that lost marks: check everyone
 *
 * Every state change runs as one Lua script per shard (EVALSHA; the script is
 * sent again with EVAL after NOSCRIPT, e.g. after a Redis restart or SCRIPT
 * FLUSH), so it is atomic and, the keys of a script sharing the hash tag
 * "{s}", Redis Cluster safe. Scripts read the time with Redis's TIME: the
 * clocks of the workers do not matter. Times passed in or returned are in ms
 * on that clock (rq_now()).
 *
 * The life of an item:
 *   mark      ZADD due LT now+delay: new members are added, a due time only
 *             ever moves earlier, so a burst of marks coalesces into one item
 *             due "first mark + delay" that cannot be postponed forever.
 *   claim     a due member is removed from due and put in inflight with a
 *             lease and a new fencing token. A due member that is already in
 *             flight (it was marked again during its sync) stays in due,
 *             pushed back 1 s: it runs again after the current sync ends.
 *             This is why no change is lost (Dovecot's replicator pops a user
 *             when its sync *starts* for the same reason).
 *   renew     extends the lease while the token still owns the member.
 *   finish    writes the folder's sync state and releases the member, both
 *             only if the token still owns it (fenced: a worker that lost its
 *             lease writes nothing).
 *   retry     releases the member and puts it back in due after a delay.
 *   reap      (any worker, every few seconds) returns members whose lease
 *             expired to due, due now, and drops their owner: the worker that
 *             held them can no longer renew or finish.
 *
 * A lease is the lock: it lasts until the holder finishes, retries, or the
 * reaper takes it back after expiry (a renew after expiry but before the
 * reaper ran still succeeds: nobody else could have claimed the member).
 * IMAP writes cannot be fenced, so a worker whose renew returns 0 must stop
 * before its next write to the destination; leases must be much longer than
 * the time between two renews.
 *
 * Errors: functions returning int give -1 on a Redis or I/O error (the text
 * is rq_error(q)), on a WRONGTYPE key, or on invalid arguments. A broken
 * connection (Redis restarted, timeout) is reopened transparently, and a
 * command is sent again at most once per call when that is harmless (see each
 * function). An rq is one blocking connection to a standalone Redis, or one
 * per node of a Redis Cluster (each command goes to its key's node,
 * rnodes.h): use one per thread.
 */
#ifndef IMAPFERRY_RQUEUE_H
#define IMAPFERRY_RQUEUE_H

#include <stddef.h>
#include <stdint.h>

#include "imapferry/rkeys.h"

/* Limits, checked on every call (-1 beyond them). */
#define RQ_CLAIM_MAX   1000u /* items per rq_claim() / users per rq_poll_due() */
#define RQ_WORKER_MAX  128u  /* bytes in a worker name */
#define RQ_PUSHBACK_MS 1000u /* a due member found in flight is pushed back this much */
#define RQ_REAP_BATCH  500u  /* members one reaper script returns (it loops) */
#define RQ_ERROR_MAX   256u  /* bytes of a stored error message */

struct rq;

/* A claimed item. Every pointer points into storage owned by the array the
 * item came in (rq_items_free()); copy what must outlive it. */
struct rq_item {
	const char *user;   /* NUL-terminated */
	const char *folder; /* NUL-terminated; RK_FOLDER_ALL = the whole user */
	unsigned shard;     /* the shard it was claimed from */
	uint64_t token;     /* fencing token (rep:{s}:fence) */
	int64_t due_ms;     /* its due score when claimed */
	int64_t claimed_ms; /* Redis time of the claim */
	/* private to rqueue.c */
	const char *member; /* "user\tfolder" */
	size_t member_len;
	const char *owner; /* "worker:token" */
};

struct rq_stats {
	uint64_t due;               /* members in every due set, debouncing ones too */
	uint64_t inflight;          /* members in flight (leases held or expired) */
	int64_t oldest_due_ms;      /* smallest due score, -1 when every due set is empty */
	uint64_t oldest_due_age_ms; /* now - oldest_due_ms, 0 when not yet due or none */
	int64_t now_ms;             /* Redis time of the snapshot */
};

/*
 * Connects to Redis at unix_path when it is not NULL, else at host:port;
 * timeout_ms (> 0) bounds the connect and every later read and write.
 * Returns the queue (free it with rq_close()), or NULL with *error_r set to
 * a message valid until the next rq_open() in the same thread. host and
 * unix_path are copied.
 */
struct rq *rq_open(const char *host, int port, const char *unix_path, unsigned timeout_ms,
                   const char **error_r);
/* Closes the connection and frees *q; accepts NULL and *q == NULL; sets *q
 * to NULL. Items claimed through q stay valid (they own their storage). */
void rq_close(struct rq **q);
/* The last error's message; borrowed, valid until the next call on q. Never
 * NULL ("" when there was none). */
const char *rq_error(const struct rq *q);

/* Redis's clock, in ms since the epoch: the clock of every due, lease and
 * poll time. 0 or -1. Sent again once after an I/O error. */
int rq_now(struct rq *q, int64_t *now_ms_r);

/*
 * Claims up to max (1..RQ_CLAIM_MAX) members of shard's due set whose due time
 * has come, earliest first, for worker (1..RQ_WORKER_MAX bytes, no NUL; it
 * names the holder in rep:{s}:owner as "worker:token"), with a lease of
 * lease_ms (> 0). Due members already in flight are pushed back
 * RQ_PUSHBACK_MS (and the script looks further, so they do not hide other
 * due work); members that do not split into user and folder are dropped
 * from due. Returns 0 with *items_r (caller owns; rq_items_free()) and *n_r
 * (0 and NULL when nothing is due), or -1 (*items_r and *n_r are set either
 * way: after -1 they hold what was parsed before an out-of-memory error,
 * usually nothing). Sent again once after an I/O error: members claimed by
 * a lost reply come back through the reaper when their lease ends.
 */
int rq_claim(struct rq *q, unsigned shard, const char *worker, unsigned max, unsigned lease_ms,
             struct rq_item **items_r, size_t *n_r);
/*
 * rq_claim() over all RK_SHARDS shards, round-robin: it starts at this
 * connection's cursor (first set from the worker's name, so workers start
 * on different shards), goes on to the next shards until max items are
 * claimed or every shard was tried, and leaves the cursor after the last
 * shard it claimed from. Returns 0 with items from any shards, or -1 (items
 * claimed before the error are kept in *items_r and *n_r, which the caller
 * frees either way).
 */
int rq_claim_any(struct rq *q, const char *worker, unsigned max, unsigned lease_ms,
                 struct rq_item **items_r, size_t *n_r);
/* Frees an array from rq_claim()/rq_claim_any() of n items; accepts NULL;
 * sets *items to NULL. */
void rq_items_free(struct rq_item **items, size_t n);

/*
 * Extends item's lease to now + lease_ms when its token still owns it.
 * Returns 1, 0 when the item was lost (reaped and perhaps claimed by another
 * worker: stop before the next write and drop the item), or -1 (unknown:
 * treat it like 0 once the lease may have run out). Idempotent, so sent again
 * once after an I/O error.
 */
int rq_renew(struct rq *q, const struct rq_item *item, unsigned lease_ms);
/*
 * Ends item's sync: when its token still owns it, in one atomic step, sets
 * field state_field of rep:{s}:st:<user> to state_value (when state_field is
 * not NULL; a NULL state_value deletes the field instead, e.g. for a folder
 * that no longer exists), removes it from inflight and drops its owner.
 * A mark that arrived during the sync is still in due and runs next.
 * Returns 1, 0 when the token is stale (nothing was written), or -1. Sent
 * again once after an I/O error: a 0 then may mean the first send committed.
 */
int rq_finish(struct rq *q, const struct rq_item *item, const char *state_field,
              const char *state_value);
/*
 * Releases item (fenced as rq_finish(), without a state write) and puts it
 * back in due at now + delay_ms, or earlier if a mark asks for earlier
 * (ZADD LT: a change made meanwhile is not delayed by the backoff). Returns
 * 1, 0 for a stale token (nothing done), or -1. Sent again once after an I/O
 * error (then 0 may mean done).
 */
int rq_retry(struct rq *q, const struct rq_item *item, unsigned delay_ms);
/*
 * For item, a folder a MOVE through the proxy may have left (the daemon's
 * --delete2 ordering): 1 when a move hint (rep:{s}:hint:<user>) names the
 * item's folder as its source and the target folder's member is in flight
 * (being synced), 0 when none is, -1 on error. A target that is only due
 * does not count: a folder put back to wait is due, so two folders with
 * moves into each other never wait for each other. Read-only, so sent
 * again once after an I/O error.
 */
int rq_move_wait(struct rq *q, const struct rq_item *item);
/*
 * The reaper: every member of shard's inflight set whose lease expired goes
 * back to due (due now, or earlier if it was marked earlier) and loses its
 * owner, so its former holder's renew and finish fail. Works in batches of
 * RQ_REAP_BATCH until none is left. Returns 0 with *returned_r (may be NULL)
 * the number returned, or -1. Idempotent.
 */
int rq_reap(struct rq *q, unsigned shard, unsigned *returned_r);

/*
 * Marks (user, folder) due at now + delay_ms, like a proxy does (ZADD LT):
 * for sweeps, a bulk start and the ctl tool. folder RK_FOLDER_ALL = the whole
 * user. Returns 0, or -1 (also when rk_member() refuses the pair: empty,
 * user with a tab). Idempotent.
 */
int rq_mark(struct rq *q, const char *user, const char *folder, unsigned delay_ms);

/*
 * Every user of shard's poll set (the users any daemon polls) gets a
 * whole-user mark due now ("user<TAB>*"; an earlier due time stays), in one
 * script: how a daemon that takes rep:sweep_all reaches the users other
 * daemons know too. Returns the count, or -1. Idempotent (sent again once
 * after an I/O error).
 */
long rq_mark_polled(struct rq *q, unsigned shard);

/*
 * Users of shard's poll set whose poll time has come (score <= now), earliest
 * first, at most max (1..RQ_CLAIM_MAX). With lease_ms > 0 each returned user
 * is moved to now + lease_ms in the same step, so two daemons do not sweep
 * the same user at once and a daemon that dies before rq_poll_set() does not
 * lose the user. Returns 0 with *users_r (caller owns; rq_users_free()) and
 * *n_r, or -1. Sent again once after an I/O error.
 */
int rq_poll_due(struct rq *q, unsigned shard, unsigned max, unsigned lease_ms, char ***users_r,
                size_t *n_r);
/* Sets user's next poll time to next_ms (Redis clock, rq_now()), later or
 * earlier. 0 or -1. */
int rq_poll_set(struct rq *q, const char *user, int64_t next_ms);
/* Like rq_poll_set(), but only ever earlier (ZADD LT; adds an unknown user):
 * a user active through the proxy is polled sooner than an idle one. */
int rq_poll_sooner(struct rq *q, const char *user, int64_t next_ms);
/* Removes user from the poll schedule (the user was cut over). 0 or -1. */
int rq_poll_remove(struct rq *q, const char *user);
/* Deletes the user's stored sync state (rep:{s}:st:<user>): the next sync
 * of each folder identifies everything again (the daemon's full check).
 * Unfenced: call it when no sync of the user can be writing. 0 or -1. */
int rq_state_forget(struct rq *q, const char *user);
/* Frees an array of n strings from rq_poll_due(); accepts NULL; sets *users
 * to NULL. */
void rq_users_free(char ***users, size_t n);

/*
 * Reads and deletes RK_KEY_SWEEP_ALL in one step (GETDEL, Redis >= 6.2).
 * Returns 1 with *value_r (the proxy's clock when it lost marks; 0 when the
 * value is not a number), 0 when it was not set, or -1. Never sent twice: a
 * lost reply could lose the flag, so an error leaves it to the next call
 * (if the first send did delete it, the flag is lost: sweep on -1 too).
 */
int rq_sweep_all_take(struct rq *q, int64_t *value_r);

/* The route of user (rep:route:<user> field state): RK_ROUTE_SRC when
 * none is stored, and for a FREEZE from the source whose lease ended
 * (RK_ROUTE_F_LEASE: its imapferryctl is gone). 0, or -1 (Redis error, or a
 * state this build does not know: the caller must not assume SRC then). */
int rq_route_get(struct rq *q, const char *user, enum rk_route_state *state_r);

/* Records user's last sync (error NULL) or last error in
 * rep:{s}:last:<user>, by `by` ("daemon", "cutover", ...), on Redis's clock;
 * the error is cut to one line of RK_LAST_ERROR_MAX bytes. 0 or -1. */
int rq_last_record(struct rq *q, const char *user, const char *by, const char *error);
/* Records the end of user's full check (field full_ms, Redis's clock). 0 or -1. */
int rq_last_full(struct rq *q, const char *user);
/*
 * Whether user's daily full check is due: 1 when its last one (full_ms) or
 * the last start (full_from_ms) is interval_ms (> 0) or more ago on Redis's
 * clock, and then the start is recorded at once (another daemon asking
 * next gets 0); 0 otherwise, also the first time a user is asked about
 * (that starts its clock). Kept in rep:{s}:last:<user>, so a daemon's
 * restart or another daemon does not reset it. -1 on error.
 */
int rq_full_due(struct rq *q, const char *user, uint64_t interval_ms);
/*
 * A daemon's heartbeat in RK_KEY_DAEMONS: id (a worker name) is alive for
 * ttl_ms (> 0) more; daemons whose heartbeat ended are dropped. Returns the
 * daemons alive (this one included), or -1. rq_daemon_leave(): id is gone
 * (a clean stop); 0 or -1.
 */
long rq_daemon_beat(struct rq *q, const char *id, unsigned ttl_ms);
int rq_daemon_leave(struct rq *q, const char *id);

/*
 * 1 when the Redis is a Redis Cluster node (INFO cluster: cluster_enabled:1),
 * 0 when it is a standalone one, -1 on error. Either works: commands go to
 * the node that serves their key's slot (rnodes.h), found by following the
 * cluster's MOVED redirections.
 */
int rq_is_cluster(struct rq *q);
/* Redis nodes this queue has talked to (1 for a standalone Redis). */
unsigned rq_nodes(const struct rq *q);
/* Connections made so far, to any node (1 after rq_open()): a caller that
 * sees it grow knows Redis went away meanwhile, perhaps losing data (a
 * restart). */
unsigned long rq_connects(const struct rq *q);

/*
 * The earliest due score of every shard's due set (first_r[s], -1 when
 * empty) and Redis's time (*now_r), in one pipelined round trip: what a
 * worker loop asks often and cheaply before it claims from the shards that
 * have something due. Read-only. 0 or -1.
 */
int rq_due_peek(struct rq *q, int64_t *now_r, int64_t first_r[RK_SHARDS]);

/*
 * Queue figures over all shards for /metrics and the ctl tool, from one
 * pipelined round trip (TIME, then ZCARD due, ZCARD inflight and the
 * earliest due member per shard). Not a snapshot across shards. 0 or -1.
 */
int rq_stats(struct rq *q, struct rq_stats *stats_r);

/* --- Redis addresses, shared by every program that takes --redis --- */

/* "HOST:PORT" (port 6379 when absent) or "/socket/path" (*unix_r points
 * into spec). 0, or -1 on a malformed address. */
int rq_addr_parse(const char *spec, char *host, size_t hostsize, int *port_r, const char **unix_r);

#endif
