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

#define CT_TIMEOUT_MS           5000u /* every Redis call */
#define CT_DRAIN_TIMEOUT_S      30u   /* proxies confirming a freeze */
#define CT_QUIESCE_TIMEOUT_S    120u  /* the daemon's syncs of the user finishing */
#define CT_CONCURRENCY_DEFAULT  4u
#define CT_CONCURRENCY_MAX      256u
#define CT_POLL_MS              50u              /* waiting loops */
#define CT_REKICK_MS            1000u            /* a freeze's kick is repeated this often */
#define CT_KEY_STRAG            "rep:strag:"     /* + user: HASH, the straggler record */
#define CT_KEY_STRAG_INDEX      "rep:stragglers" /* ZSET user -> end of the window (ms) */
#define CT_STRAGGLERS_DEFAULT_S 86400u           /* --stragglers: a day of late deliveries */
#define CT_STRAG_KEEP_S         (30u * 86400u)   /* the record outlives its window this long */
#define CT_KEY_FRZ              "rep:frz:"       /* + user: HASH proxy id -> acked epoch */

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
	unsigned drain_timeout_s, quiesce_timeout_s;
	char **sync_argv; /* the options after "--" (borrowed from argv) */
	int sync_argc;
	const char *http;  /* serve: ADDR:PORT to listen on */
	unsigned sample_s; /* serve: seconds between throughput samples */
};

/* --- redis.c --- */
/* Connects to spec (HOST:PORT, HOST, or a path starting with '/') with
 * CT_TIMEOUT_MS on every call. NULL with *error_r (static text) on failure. */
redisContext *ct_connect(const char *spec, const char **error_r);
/* Runs a command (hiredis format); prints the error and returns NULL on an
 * I/O error or an error reply. The caller frees the reply. */
redisReply *ct_cmd(redisContext *c, const char *fmt, ...);
redisReply *ct_cmd_argv(redisContext *c, int argc, const char **argv);
/* Redis's clock in ms (TIME): 0 or -1. */
int ct_now_ms(redisContext *c, int64_t *now_r);
/* Sets user's route to state in one script: HSET state + changed_ms,
 * HINCRBY epoch, PUBLISH rep:ctl "route <user> <epoch>". Returns 0 with the
 * new epoch and the number of subscribers (proxies) the kick reached, or -1. */
int ct_route_set(redisContext *c, const char *user, enum rk_route_state state, uint64_t *epoch_r,
                 long long *receivers_r);
/* The route of user: 1 found (*state_r, *epoch_r), 0 none (SRC, epoch 0),
 * -1 error. */
int ct_route_get(redisContext *c, const char *user, enum rk_route_state *state_r,
                 uint64_t *epoch_r);
/* Puts user back in the daemon's hands: poll due now and a whole-user mark
 * due now (rollback, or the end of a final delta). 0 or -1. */
int ct_user_resume(redisContext *c, const char *user);

/* The last sync of a user and its last error: HASH rep:{s}:last:<user>
 * (s = rk_shard(user), so a daemon's Lua script may write it too), fields
 * ok_ms, ok_by (who synced: cutover, final-delta, stragglers, rollback;
 * a daemon would write "daemon"), err_ms, err_by, err (one line, at most
 * CT_LAST_ERROR_MAX bytes). Times are Redis's clock (ms). */
#define CT_LAST_ERROR_MAX 300u
int ct_key_last(char *buf, size_t size, const char *user);
/* Records a success (error NULL) or a failure of `by` for user. 0 or -1. */
int ct_last_record(redisContext *c, const char *user, const char *by, const char *error);

/* --- status.c --- */
/* Totals of one status run (ct_status_json). */
struct ct_totals {
	int64_t now_ms; /* Redis's clock */
	size_t users;
	unsigned routes[RK_ROUTE_STATE_COUNT];
	unsigned long long due, inflight, msgs1, msgs2;
};
/* Prints the status of users (every user when n == 0) as a table, or JSON
 * with ct->json. Returns an exit code. */
int ct_status(struct ct *ct, char **users, int n);
/* Gathers the status of users (every user when n == 0) over c and writes the
 * JSON document of "status --json" to fp, and the totals to *totals_r.
 * 0, or -1 on a Redis error (printed; fp may then hold a partial document,
 * *totals_r is undefined). */
int ct_status_json(redisContext *c, char **users, int n, FILE *fp, struct ct_totals *totals_r);
/* Every user the replication knows (the poll schedule, the route keys, the
 * sync state keys), sorted, without duplicates: a NULL-terminated array of
 * *n_r names in *users_r, all malloc'ed (free each, then the array).
 * 0, or -1 on a Redis error (printed). */
int ct_users_list(redisContext *c, char ***users_r, int *n_r);

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
