/*
 * worker.h - the daemon's long-lived sync workers (worker.c): one job at a
 * time over a socketpair, with a pool of logged-in connections kept
 * between jobs.
 */
#ifndef IMAPFERRY_SYNC_WORKER_H
#define IMAPFERRY_SYNC_WORKER_H

struct event_base;
struct sy_run;

/* The environment variable naming the worker's socket (set by the daemon). */
#define SY_WORKER_FD_ENV "IMAPFERRY_WORKER_FD"
/* The most idle connections a worker keeps to each server (--maxconnections
 * divided among the workers, less the running sync's own). */
#define SY_WORKER_POOL_ENV "IMAPFERRY_WORKER_POOL"

/* The worker's loop: reads jobs from fd, runs each with run_args (the
 * one-shot program's argv entry point), answers its exit code and what it
 * copied. Returns
 * when the daemon closes fd, after a signal, or after its job quota. */
int sy_worker_main(int fd, int (*run_args)(int argc, char **argv));

/* The event base the pooled connections live on; NULL outside a worker
 * (a run then makes its own base). */
struct event_base *sy_pool_base(void);

/* Side i of r: installs a pooled connection of the same account (user,
 * host, port) and returns 1, or returns 0 when there is none (outside a
 * worker: always 0). */
int sy_pool_take(struct sy_run *r, int i);

/* Side i of r after a run that ended well: keeps its connection in the
 * pool (r->side[i].cl and .tls become NULL) and returns 1; 0 when it is
 * not fit for reuse (not logged in, commands in flight) or not a worker. */
int sy_pool_give(struct sy_run *r, int i);

/* Nonzero once the one-shot program's signal handler ran (main.c). */
int sy_main_signalled(void);

#endif
