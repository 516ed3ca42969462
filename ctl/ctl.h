/*
 * ctl.h - imapferryctl, the operator's tool for imapferry (private to ctl/):
 * status of the replication per user, route changes, and the per-user
 * cutover (freeze, final verified sync, flip or roll back). Design:
 * ../shared/docs/replication-design.md section 7; keys: rkeys.h.
 *
 * It talks to Redis only (blocking hiredis, one connection per process) and
 * runs imapferry-sync for the final pass; it never talks IMAP itself.
 */
#ifndef CTL_CTL_H
#define CTL_CTL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <hiredis/hiredis.h>

#include <imapferry/rkeys.h>
#include <imapferry/rnodes.h>

#define CT_TIMEOUT_MS           5000u /* every Redis call */
#define CT_DRAIN_TIMEOUT_S      30u   /* proxies confirming a freeze */
#define CT_QUIESCE_TIMEOUT_S    120u  /* the daemon's syncs of the user finishing */
#define CT_CONCURRENCY_DEFAULT  4u
#define CT_CONCURRENCY_MAX      256u
#define CT_POLL_MS              50u              /* waiting loops */
#define CT_SYNC_LINE_MAX        65536u           /* imapferry-sync output lines (cut) */
#define CT_FOLDER_NAMES         1024u            /* folder names listed in a message */
#define CT_REKICK_MS            1000u            /* a freeze's kick is repeated this often */
#define CT_KEY_STRAG            "rep:strag:"     /* + user: HASH, the straggler record */
#define CT_KEY_STRAG_INDEX      "rep:stragglers" /* ZSET user -> end of the window (ms) */
#define CT_STRAGGLERS_DEFAULT_S 86400u           /* --stragglers: a day of late deliveries */
#define CT_STRAG_KEEP_S         (30u * 86400u)   /* the record outlives its window this long */
#define CT_KEY_FRZ              "rep:frz:"       /* + user: HASH proxy id -> acked epoch */
#define CT_LEASE_DEFAULT_S      15u              /* --lease: the freeze lease */
#define CT_LEASE_MIN_S          2u
#define CT_LEASE_MAX_S          3600u
#define CT_LEASE_RENEW_MS       2000u /* renewed this often (at most lease / 3) */
/* Test only: after the freeze (and the proxies' acks) a cutover pauses this
 * many ms, renewing its lease, so a test can kill it while frozen. */
#define CT_ENV_TEST_PAUSE "IMAPFERRYCTL_TEST_PAUSE_FROZEN_MS"

/* Exit codes. */
#define CT_EXIT_OK       0
#define CT_EXIT_FAILED   1 /* a difference, a refused step: rolled back */
#define CT_EXIT_USAGE    64
#define CT_EXIT_NOREDIS  69
#define CT_EXIT_SKIPPED  3  /* internal (a child's exit): already on the destination */
#define CT_SUMMARY_NAMES 50 /* failed users named in a batch's summary */

struct ct {
	const char *redis; /* HOST:PORT or a socket path */
	int json;
	const char *sync_path; /* imapferry-sync */
	unsigned concurrency;
	int all;               /* --all: every user known in Redis */
	unsigned stragglers_s; /* cutover: straggler window after the flip, 0 = none */
	int force;             /* rollback: without syncing back */
	int delete_folders;    /* rollback: delete source folders the destination lacks */
	unsigned drain_timeout_s, quiesce_timeout_s;
	unsigned lease_s; /* the freeze lease (--lease) */
	char **sync_argv; /* the options after "--" (borrowed from argv) */
	int sync_argc;
	const char *http;  /* serve: ADDR:PORT to listen on */
	unsigned sample_s; /* serve: seconds between throughput samples */
};

/* --- redis.c --- */
/* Connects to spec (HOST:PORT, HOST, or a path starting with '/') with
 * CT_TIMEOUT_MS on every call. NULL with *error_r (static text) on failure. */
struct rnodes *ct_connect(const char *spec, const char **error_r);
/* Runs a command (hiredis format); prints the error and returns NULL on an
 * I/O error or an error reply. The caller frees the reply. */
redisReply *ct_cmd(struct rnodes *c, const char *fmt, ...);
redisReply *ct_cmd_argv(struct rnodes *c, int argc, const char **argv);
/* Redis's clock in ms (TIME): 0 or -1. */
int ct_now_ms(struct rnodes *c, int64_t *now_r);
/* Sets user's route to state in one script: HSET state + changed_ms,
 * HINCRBY epoch, PUBLISH rep:ctl "route <user> <epoch>", no lease (deleted).
 * Returns 0 with the new epoch and the number of subscribers (proxies) the
 * kick reached, or -1. (ct_route_change with CT_GUARD_NONE.) */
int ct_route_set(struct rnodes *c, const char *user, enum rk_route_state state, uint64_t *epoch_r,
                 long long *receivers_r);
/* How a route change is guarded (ct_route_change). */
enum ct_guard {
	CT_GUARD_NONE,   /* whatever the route is (by hand, rollback of a stale freeze) */
	CT_GUARD_FREEZE, /* taking a freeze: refused while another freeze's lease runs */
	CT_GUARD_EPOCH,  /* only while the epoch is still expect_epoch (ours) */
	CT_GUARD_LEASE,  /* ours, and our freeze lease has not ended (the flip) */
	CT_GUARD_COUNT
};
struct ct_route_req {
	enum rk_route_state state;
	enum ct_guard guard;
	uint64_t expect_epoch;        /* CT_GUARD_EPOCH, CT_GUARD_LEASE */
	unsigned lease_ms;            /* FREEZE: the lease (0 = none); else ignored */
	enum rk_route_state lease_to; /* FREEZE with a lease: SRC or DST */
};
/* Sets user's route in one script (Redis's clock): checks req->guard, sets
 * state and changed_ms, the lease fields (RK_ROUTE_F_LEASE = now + lease_ms,
 * RK_ROUTE_F_LEASE_TO) for a FREEZE with a lease and deletes them otherwise,
 * HINCRBY epoch, PUBLISH rep:ctl "route <user> <epoch>". Returns 0 done
 * (*epoch_r, *receivers_r: the proxies the kick reached), 1 refused by the
 * guard (*epoch_r = the current epoch, *receivers_r = for CT_GUARD_FREEZE
 * the ms the running lease has left, else 0 for another epoch or -1 for an
 * ended lease), -1 error (printed). */
int ct_route_change(struct rnodes *c, const char *user, const struct ct_route_req *req,
                    uint64_t *epoch_r, long long *receivers_r);
/* Renews the freeze lease of user at epoch to now + lease_ms. 1 renewed, 0
 * lost (the route is not FREEZE at epoch any more, or the lease had ended:
 * an ended lease is never renewed), -1 error. */
int ct_lease_renew(struct rnodes *c, const char *user, uint64_t epoch, unsigned lease_ms);
/* A route as stored, with its lease (status, cutover, rollback). */
struct ct_route_info {
	int found; /* 0: no route stored (SRC, epoch 0) */
	enum rk_route_state state;
	uint64_t epoch;
	int has_lease;                /* FREEZE with RK_ROUTE_F_LEASE */
	long long lease_left_ms;      /* <= 0: ended */
	enum rk_route_state lease_to; /* SRC when absent */
};
/* Reads user's route and lease in one script. 0, or -1 error (printed). */
int ct_route_info(struct rnodes *c, const char *user, struct ct_route_info *ri);
/* Whether ri is a freeze whose lease has ended (its imapferryctl is gone). */
int ct_route_stale(const struct ct_route_info *ri);

/* The route of user: 1 found (*state_r, *epoch_r), 0 none (SRC, epoch 0),
 * -1 error. */
int ct_route_get(struct rnodes *c, const char *user, enum rk_route_state *state_r,
                 uint64_t *epoch_r);
/* Puts user back in the daemon's hands: poll due now and a whole-user mark
 * due now (rollback, or the end of a final delta). 0 or -1. */
int ct_user_resume(struct rnodes *c, const char *user);

/* The last sync of a user and its last error: HASH rep:{s}:last:<user>
 * (s = rk_shard(user), so a daemon's Lua script may write it too), fields
 * ok_ms, ok_by (who synced: cutover, final-delta, stragglers, rollback;
 * a daemon would write "daemon"), err_ms, err_by, err (one line, at most
 * CT_LAST_ERROR_MAX bytes). Times are Redis's clock (ms). */
#define CT_LAST_ERROR_MAX 300u
int ct_key_last(char *buf, size_t size, const char *user);
/* Records a success (error NULL) or a failure of `by` for user. 0 or -1. */
int ct_last_record(struct rnodes *c, const char *user, const char *by, const char *error);

/* The user's messages and bytes on each side ([0] source, [1] destination)
 * as the sizes at end of a verified pass (final-delta, cutover, rollback)
 * counted them (one UID FETCH of RFC822.SIZE per folder and side), in the
 * same HASH: size_ms (Redis's clock), size_by, msgs1, bytes1, msgs2, bytes2.
 * 0 or -1. */
int ct_sizes_record(struct rnodes *c, const char *user, const char *by,
                    const unsigned long long msgs[2], const unsigned long long bytes[2]);

/* --- status.c --- */
/* Totals of one status run (ct_status_json). */
struct ct_totals {
	int64_t now_ms; /* Redis's clock */
	size_t users;
	unsigned routes[RK_ROUTE_STATE_COUNT];
	unsigned long long due, inflight, msgs1, msgs2;
	unsigned long long bytes1, bytes2; /* of the users with a measurement */
};
/* Prints the status of users (every user when n == 0) as a table, or JSON
 * with ct->json. Returns an exit code. */
int ct_status(struct ct *ct, char **users, int n);
/* Gathers the status of users (every user when n == 0) over c and writes the
 * JSON document of "status --json" to fp, and the totals to *totals_r.
 * 0, or -1 on a Redis error (printed; fp may then hold a partial document,
 * *totals_r is undefined). */
int ct_status_json(struct rnodes *c, char **users, int n, FILE *fp, struct ct_totals *totals_r);
/* Every user the replication knows (the poll schedule, the route keys, the
 * sync state keys), sorted, without duplicates: a NULL-terminated array of
 * *n_r names in *users_r, all malloc'ed (free each, then the array).
 * 0, or -1 on a Redis error (printed). */
int ct_users_list(struct rnodes *c, char ***users_r, int *n_r);

/* --- serve.c --- */
#define CT_SERVE_HTTP_DEFAULT "127.0.0.1:8480"
#define CT_SERVE_SAMPLE_S     10u   /* --sample default */
#define CT_SERVE_SAMPLES      360u  /* ring of throughput samples (1 h at 10 s) */
#define CT_SERVE_FRESH_MS     1000u /* /api/status reuses a snapshot this young */
#define CT_SERVE_TIMEOUT_S    30    /* an HTTP connection's idle timeout */
#define CT_SERVE_MAX_HEADERS  8192  /* request header bytes */
/* Serves the status page on ct->http until SIGINT/SIGTERM. Exit code. */
int ct_serve(struct ct *ct);

/* --- cutover.c --- */
enum ct_mode { CT_CUTOVER, CT_FINAL_DELTA, CT_MODE_COUNT };
/* Runs the cutover (or final delta) of every user, ct->concurrency at a
 * time, one child process each. Returns an exit code. */
int ct_cutover(struct ct *ct, char **users, int n, enum ct_mode mode);
/* One straggler pass (source INBOX mail that arrived after the flip, copied
 * to the destination) for users, or for every user whose window is open when
 * n == 0. Exit code. */
int ct_stragglers(struct ct *ct, char **users, int n);
/* rollback USER...: SRC again; a user on the destination is first synced
 * back (destination to source) when SYNC-OPTIONS are given, else only with
 * --force. Exit code. */
int ct_rollback(struct ct *ct, char **users, int n);

#endif
