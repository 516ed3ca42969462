/*
 * worker.c - the daemon's long-lived sync workers and their connection pool.
 *
 * A worker is this program started by the daemon (daemon.c) with
 * IMAPFERRY_WORKER_FD naming a socketpair end. It reads one job at a time:
 *
 *   u32 length (host order), then NUL-terminated strings:
 *   logpath, password1 ("" = the daemon's own), password2, the pool limit
 *   (connections per server it may keep now: pool_limit()), argv[0..n-1]
 *
 * runs it exactly as the one-shot program would run that command line,
 * with stdout and stderr going to logpath, and answers "<exit code>
 * <messages copied> <bytes copied>\n" (for the daemon's /metrics).
 *
 * What a worker adds over a process per sync is the pool: the logged-in
 * connections of the last users it synced stay open (its share of the
 * daemon's --maxconnections to each server, SY_WORKER_POOL_ENV; the least
 * recently used one makes room; SY_POOL_IDLE_S seconds idle at most), so the
 * next change of
 * an active user is synced without a process start, two connects and two
 * logins — most of a small sync's time. The daemon sends a user's items to
 * the worker that synced that user last. A connection is pooled only after
 * a run that ended well with nothing in flight on it and no mailbox left
 * selected (UNSELECT; a server without it gets no pooling), and is checked (its
 * pending input read: a BYE or a closed socket shows) before reuse; the
 * engine's own reconnect logic covers a connection that dies during a run.
 *
 * A worker ends on EOF of its socket (the daemon stops), on a signal, or
 * after SY_WORKER_JOBS_MAX jobs (a fresh process bounds whatever a long
 * run might accumulate); the daemon starts another one when it needs it.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "imapferry/client.h"
#include "imapferry/log.h"
#include "imapferry/resp.h"
#include "imapferry/tls.h"
#include "sync.h"
#include "worker.h"

#define SY_POOL_DEFAULT    31      /* pooled connections per server without SY_WORKER_POOL_ENV */
#define SY_POOL_IDLE_S     30      /* a pooled connection idle longer is logged out */
#define SY_WORKER_JOBS_MAX 1000    /* jobs before a worker makes way for a fresh one */
#define SY_WORKER_MSG_MAX  1048576 /* a job message's size limit */
#define SY_WORKER_ARGS_MAX 4096

struct pool_conn {
	int side;   /* 0 or 1 */
	char *user; /* the side's --user */
	char *host; /* and its --host, port: a connection is for that account only */
	uint16_t port;
	int ssl, qresync;
	struct imap_client *cl;
	struct tls_client_ctx *tls;
	struct timespec idle_since;
};

static struct {
	struct event_base *base; /* NULL: not a worker */
	struct pool_conn *c;     /* [2 * cap] */
	unsigned n, cap;         /* cap: per side (server), what c can hold */
	unsigned limit;          /* <= cap: what the daemon allows now (its job) */
	unsigned long long reused, opened;
} pool;

struct event_base *sy_pool_base(void)
{
	return pool.base;
}

static double idle_seconds(const struct pool_conn *c)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - c->idle_since.tv_sec) +
	       (double)(now.tv_nsec - c->idle_since.tv_nsec) / 1e9;
}

static void conn_drop(unsigned k, int logout)
{
	struct pool_conn *c = &pool.c[k];

	if (logout && c->cl != NULL && imap_client_state(c->cl) == IMAP_CL_AUTHED) {
		/* best effort: queued, and flushed by the loop run below or
		 * lost with the socket; nobody waits for the answer */
		imap_client_logout(c->cl, NULL, NULL);
		event_base_loop(pool.base, EVLOOP_NONBLOCK);
	}
	imap_client_free(&c->cl);
	tls_client_ctx_free(&c->tls);
	free(c->user);
	free(c->host);
	pool.c[k] = pool.c[--pool.n];
	memset(&pool.c[pool.n], 0, sizeof(pool.c[0]));
}

/* Reads what idle connections received (a BYE, a closed socket), then
 * drops the dead ones and those idle for too long. */
static void pool_expire(double max_idle)
{
	event_base_loop(pool.base, EVLOOP_NONBLOCK);
	for (unsigned k = 0; k < pool.n;) {
		if (imap_client_state(pool.c[k].cl) != IMAP_CL_AUTHED ||
		    idle_seconds(&pool.c[k]) > max_idle)
			conn_drop(k, 1);
		else
			k++;
	}
}

static int same_account(const struct pool_conn *c, const struct sy_side *s, int i)
{
	const struct sy_account *a = s->acc;

	return c->side == i && a->user != NULL && strcmp(c->user, a->user) == 0 &&
	       a->host != NULL && strcmp(c->host, a->host) == 0 &&
	       (a->port == 0 || a->port == c->port);
}

int sy_pool_take(struct sy_run *r, int i)
{
	struct sy_side *s = &r->side[i];

	if (pool.base == NULL || r->o->justconnect)
		return 0;
	pool_expire(SY_POOL_IDLE_S);
	for (unsigned k = 0; k < pool.n; k++) {
		struct pool_conn *c = &pool.c[k];

		if (!same_account(c, s, i))
			continue;
		s->n = i + 1;
		s->cl = c->cl;
		s->tls = c->tls;
		s->port = c->port;
		s->ssl = c->ssl;
		s->qresync = c->qresync;
		c->cl = NULL;
		c->tls = NULL;
		conn_drop(k, 0);
		pool.reused++;
		sy_out(r, "Host%d: reusing the logged-in connection of user%d [%s] on [%s]", i + 1,
		       i + 1, s->acc->user, s->acc->host);
		return 1;
	}
	pool.opened++;
	return 0;
}

int sy_pool_give(struct sy_run *r, int i)
{
	struct sy_side *s = &r->side[i];
	struct pool_conn *c;

	if (pool.base == NULL || pool.limit == 0 || s->cl == NULL || s->acc == NULL ||
	    s->acc->user == NULL || s->acc->host == NULL ||
	    imap_client_state(s->cl) != IMAP_CL_AUTHED || imap_client_in_flight(s->cl) != 0 ||
	    !imap_caps_has(imap_client_caps(s->cl), IMAP_CAP_UNSELECT))
		return 0;
	/* nothing stays selected: a STATUS of the selected mailbox may show
	 * the session's stale view (RFC 3501 6.3.10), and the next sync's
	 * quick check must see changes made meanwhile. BAD when nothing was
	 * selected is fine. */
	if (sy_cmd(r, i, NULL, NULL, NULL, NULL, "UNSELECT") == IMAP_STATUS_NONE ||
	    imap_client_state(s->cl) != IMAP_CL_AUTHED)
		return 0;
	{
		/* this server's least recently used one makes room */
		unsigned same = 0, oldest = 0;

		for (unsigned k = 0; k < pool.n; k++) {
			if (pool.c[k].side != i)
				continue;
			if (same++ == 0 || idle_seconds(&pool.c[k]) > idle_seconds(&pool.c[oldest]))
				oldest = k;
		}
		if (same >= pool.limit)
			conn_drop(oldest, 1);
	}
	c = &pool.c[pool.n];
	memset(c, 0, sizeof(*c));
	c->side = i;
	c->user = strdup(s->acc->user);
	c->host = strdup(s->acc->host);
	if (c->user == NULL || c->host == NULL)
		abort();
	c->port = s->port;
	c->ssl = s->ssl;
	c->qresync = s->qresync;
	c->cl = s->cl;
	c->tls = s->tls;
	clock_gettime(CLOCK_MONOTONIC, &c->idle_since);
	s->cl = NULL;
	s->tls = NULL;
	pool.n++;
	return 1;
}

/* The pool's size per server: SY_WORKER_POOL_ENV, within what the file
 * descriptor limit allows (two servers, a few descriptors of our own). */
static void pool_size(void)
{
	const char *v = getenv(SY_WORKER_POOL_ENV);
	struct rlimit rl;
	long long cap = SY_POOL_DEFAULT;
	char *end;

	if (v != NULL) {
		errno = 0;
		cap = strtoll(v, &end, 10);
		if (errno != 0 || *end != '\0' || end == v || cap < 0)
			cap = SY_POOL_DEFAULT;
	}
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
	    (rlim_t)cap > (rl.rlim_cur > 64 ? (rl.rlim_cur - 64) / 2 : 0))
		cap = rl.rlim_cur > 64 ? (long long)(rl.rlim_cur - 64) / 2 : 0;
	pool.cap = (unsigned)cap;
	pool.limit = pool.cap;
	pool.c = calloc(2 * (size_t)pool.cap + 1, sizeof(*pool.c));
	if (pool.c == NULL)
		abort();
}

/* Reads exactly len bytes; 0 on EOF before the first byte, -1 on error. */
static int read_full(int fd, void *buf, size_t len)
{
	size_t got = 0;

	while (got < len) {
		ssize_t n = read(fd, (char *)buf + got, len - got);

		if (n == 0)
			return got == 0 ? 0 : -1;
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		got += (size_t)n;
	}
	return 1;
}

static int write_full(int fd, const void *buf, size_t len)
{
	size_t put = 0;

	while (put < len) {
		ssize_t n = write(fd, (const char *)buf + put, len - put);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		put += (size_t)n;
	}
	return 0;
}

/* Splits a job message into its strings; -1 when malformed. */
/*
 * The pool limit a job brings (the daemon's share of --maxconnections now:
 * it shrinks when more daemons share it): the least recently used
 * connections of a server over it are logged out at once.
 */
static void pool_limit(const char *text)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(text, &end, 10);
	if (errno != 0 || *end != '\0' || end == text)
		return;
	pool.limit = v < pool.cap ? (unsigned)v : pool.cap;
	for (int side = 0; side < 2; side++) {
		for (;;) {
			unsigned same = 0, oldest = 0;

			for (unsigned k = 0; k < pool.n; k++) {
				if (pool.c[k].side != side)
					continue;
				if (same++ == 0 ||
				    idle_seconds(&pool.c[k]) > idle_seconds(&pool.c[oldest]))
					oldest = k;
			}
			if (same <= pool.limit)
				break;
			conn_drop(oldest, 1);
		}
	}
}

static int job_parse(char *msg, size_t len, char **logpath, char **pw1, char **pw2, char **share,
                     char **argv, int *argc_r)
{
	char *fields[4 + SY_WORKER_ARGS_MAX];
	size_t nf = 0;

	if (len == 0 || msg[len - 1] != '\0')
		return -1;
	for (size_t off = 0; off < len && nf < sizeof(fields) / sizeof(fields[0]);) {
		fields[nf++] = msg + off;
		off += strlen(msg + off) + 1;
	}
	if (nf < 5)
		return -1;
	*logpath = fields[0];
	*pw1 = fields[1];
	*pw2 = fields[2];
	*share = fields[3];
	*argc_r = (int)(nf - 4);
	memcpy(argv, fields + 4, (nf - 4) * sizeof(*argv));
	argv[nf - 4] = NULL;
	return 0;
}

/* Sets IMAPSYNC_PASSWORDn for one job: the user's own password, or back to
 * the daemon's (admin) one. */
static void job_password(const char *name, const char *pw, const char *dflt)
{
	if (pw[0] != '\0')
		setenv(name, pw, 1);
	else if (dflt != NULL)
		setenv(name, dflt, 1);
	else
		unsetenv(name);
}

int sy_worker_main(int fd, int (*run_args)(int argc, char **argv))
{
	char *dflt[2] = {NULL, NULL};
	char **argv = calloc(SY_WORKER_ARGS_MAX + 1, sizeof(*argv));
	unsigned jobs = 0;
	int devnull = open("/dev/null", O_WRONLY);

	if (argv == NULL)
		abort();
	/* started as /proc/self/exe, whose name "exe" top and ps would show */
	prctl(PR_SET_NAME, "imapferry-sync", 0, 0, 0);
	for (int i = 0; i < 2; i++) {
		const char *v = getenv(i == 0 ? "IMAPSYNC_PASSWORD1" : "IMAPSYNC_PASSWORD2");

		dflt[i] = v != NULL ? strdup(v) : NULL;
	}
	{
		/* epoll's changelist: the add/del pairs a TLS connection's
		 * bufferevent makes within one loop pass become one epoll_ctl
		 * (~55 per quick check without it); no fd here is dup()ed */
		struct event_config *cfg = event_config_new();

		if (cfg == NULL)
			abort();
		event_config_set_flag(cfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
		pool.base = event_base_new_with_config(cfg);
		event_config_free(cfg);
	}
	if (pool.base == NULL)
		abort();
	pool_size();
	while (jobs < SY_WORKER_JOBS_MAX && !sy_main_signalled()) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		uint32_t len;
		char *msg, *logpath, *pw1, *pw2, *share, reply[80];
		unsigned long long messages, bytes;
		int argc, rc, out, code;

		rc = poll(&p, 1, 1000);
		if (rc < 0 && errno != EINTR)
			break;
		if (rc <= 0) {
			pool_expire(SY_POOL_IDLE_S);
			continue;
		}
		rc = read_full(fd, &len, sizeof(len));
		if (rc <= 0 || len == 0 || len > SY_WORKER_MSG_MAX)
			break;
		msg = malloc(len);
		if (msg == NULL)
			abort();
		if (read_full(fd, msg, len) <= 0 ||
		    job_parse(msg, len, &logpath, &pw1, &pw2, &share, argv, &argc) < 0) {
			free(msg);
			break;
		}
		pool_limit(share);
		fflush(stdout);
		fflush(stderr);
		out = open(logpath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		if (out >= 0) {
			dup2(out, STDOUT_FILENO);
			dup2(out, STDERR_FILENO);
			close(out);
		}
		job_password("IMAPSYNC_PASSWORD1", pw1, dflt[0]);
		job_password("IMAPSYNC_PASSWORD2", pw2, dflt[1]);
		sy_report_take(&messages, &bytes); /* none left from before */
		code = run_args(argc, argv);
		sy_report_take(&messages, &bytes);
		explicit_bzero(msg, len); /* it held the passwords */
		free(msg);
		fflush(stdout);
		fflush(stderr);
		if (devnull >= 0) {
			dup2(devnull, STDOUT_FILENO);
			dup2(devnull, STDERR_FILENO);
		}
		jobs++;
		snprintf(reply, sizeof(reply), "%d %llu %llu\n", code, messages, bytes);
		if (write_full(fd, reply, strlen(reply)) < 0)
			break;
	}
	while (pool.n > 0)
		conn_drop(pool.n - 1, 1);
	event_base_loop(pool.base, EVLOOP_NONBLOCK);
	event_base_free(pool.base);
	pool.base = NULL;
	free(pool.c);
	pool.c = NULL;
	for (int i = 0; i < 2; i++) {
		if (dflt[i] != NULL)
			explicit_bzero(dflt[i], strlen(dflt[i]));
		free(dflt[i]);
	}
	free(argv);
	if (devnull >= 0)
		close(devnull);
	close(fd);
	return 0;
}
