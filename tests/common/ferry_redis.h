/*
 * ferry_redis.h - a private redis-server for integration tests that must kill
 * or restart Redis (the harness's shared Redis must never be stopped).
 *
 * The server listens on 127.0.0.1 only, keeps no data on disk (no RDB, no
 * AOF), and dies with the test: it is killed by ferry_redis_stop(), by an
 * atexit handler, and by the kernel (PR_SET_PDEATHSIG) if the test dies.
 */
#ifndef FERRY_REDIS_H
#define FERRY_REDIS_H

#include <sys/types.h>

struct ferry_redis {
	pid_t pid; /* -1 when not running */
	int port;  /* kept after a stop, so a restart reuses it */
};

/* A loopback TCP port nobody listened on at the time of the call, or -1. */
int ferry_redis_free_port(void);

/*
 * Starts redis-server on port (0: a free port, retried a few times if it
 * is taken meanwhile) and waits until it answers PING (at most 5 s).
 * Returns 0 with r->pid and r->port set, or -1 (message on stderr).
 * A restart on the same port: ferry_redis_stop(r), then
 * ferry_redis_start(r, r->port).
 */
int ferry_redis_start(struct ferry_redis *r, int port);

/* Kills the server (SIGKILL) and reaps it; r->pid = -1. No-op when not
 * running. */
void ferry_redis_stop(struct ferry_redis *r);

#endif
