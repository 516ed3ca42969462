/*
 * Integration tests for proxy/marks.c against a real redis-server that this
 * test starts itself (on a free loopback port, no persistence) so that it
 * can kill and restart it; a plain listening socket that never answers
 * stands in for a hung Redis. Every server is killed in the test's teardown,
 * at exit, and (PR_SET_PDEATHSIG) if this process dies.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>

#include "imapferry/rkeys.h"
#include "marks.h"

#define SLACK_MS 150 /* scheduling slack around expected due times */

/* ---- processes and ports ---- */

static pid_t redis_pid = -1;
static int listen_fd = -1;

static void redis_kill(void)
{
	if (redis_pid > 0) {
		kill(redis_pid, SIGKILL);
		while (waitpid(redis_pid, NULL, 0) < 0 && errno == EINTR)
			;
	}
	redis_pid = -1;
}

static void cleanup_all(void)
{
	redis_kill();
	if (listen_fd >= 0)
		close(listen_fd);
	listen_fd = -1;
}

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int64_t wall_ms(void)
{
	struct timeval tv;

	gettimeofday(&tv, NULL);
	return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

/* A loopback port nobody listens on right now. */
static int free_port(void)
{
	struct sockaddr_in sa;
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port;

	assert_true(fd >= 0);
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
	port = ntohs(sa.sin_port);
	close(fd);
	return port;
}

/* A socket that accepts TCP connections (the kernel's backlog) and never
 * reads or answers: a hung Redis. */
static void listener_open(int port)
{
	struct sockaddr_in sa;
	int one = 1;

	listen_fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(listen_fd >= 0);
	setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sa.sin_port = htons((uint16_t)port);
	assert_int_equal(bind(listen_fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(listen_fd, 16), 0);
}

static redisContext *redis_connect(int port)
{
	struct timeval tv = {0, 200000};
	redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);

	if (c != NULL && c->err) {
		redisFree(c);
		return NULL;
	}
	if (c != NULL)
		redisSetTimeout(c, (struct timeval){2, 0});
	return c;
}

/* Starts redis-server on port and waits until it answers PING. 0, or -1
 * when it exited (port taken) or did not answer within 5 s. */
static int redis_start(int port)
{
	char portstr[16];
	uint64_t deadline = mono_ms() + 5000;
	pid_t pid;

	snprintf(portstr, sizeof(portstr), "%d", port);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int null = open("/dev/null", O_RDWR);

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (null >= 0) {
			dup2(null, 0);
			dup2(null, 1);
			dup2(null, 2);
		}
		execlp("redis-server", "redis-server", "--port", portstr, "--save", "",
		       "--appendonly", "no", "--bind", "127.0.0.1", "--daemonize", "no",
		       (char *)NULL);
		_exit(127);
	}
	redis_pid = pid;
	while (mono_ms() < deadline) {
		redisContext *c;

		if (waitpid(pid, NULL, WNOHANG) == pid) {
			redis_pid = -1;
			return -1;
		}
		c = redis_connect(port);
		if (c != NULL) {
			redisReply *r = redisCommand(c, "PING");
			int ok = r != NULL && r->type == REDIS_REPLY_STATUS &&
			         strcmp(r->str, "PONG") == 0;

			if (r != NULL)
				freeReplyObject(r);
			redisFree(c);
			if (ok)
				return 0;
		}
		usleep(10000);
	}
	redis_kill();
	return -1;
}

/* Starts a fresh Redis on a free port; returns the port. */
static int redis_start_any(void)
{
	int tries;

	for (tries = 0; tries < 5; tries++) {
		int port = free_port();

		if (redis_start(port) == 0)
			return port;
	}
	fail_msg("cannot start redis-server");
	return -1;
}

/* ---- the event loop ---- */

static struct event_base *base;

typedef int pred_fn(void *arg);

/* Runs the loop until pred(arg) or max_ms; returns pred's last value. */
static int run_until(pred_fn *pred, void *arg, unsigned max_ms)
{
	uint64_t deadline = mono_ms() + max_ms;

	while (pred == NULL || !pred(arg)) {
		struct timeval tv = {0, 5000};

		if (mono_ms() >= deadline)
			return pred != NULL ? pred(arg) : 1;
		event_base_loopexit(base, &tv);
		event_base_dispatch(base);
	}
	return 1;
}

static void run_for(unsigned ms)
{
	run_until(NULL, NULL, ms);
}

static int is_connected(void *arg)
{
	struct px_marks_stats st;

	px_marks_get_stats(arg, &st);
	return st.connected;
}

static int flag_set(void *arg)
{
	return *(int *)arg;
}

static void drain_done(void *aux)
{
	(*(int *)aux)++;
}

/* Drains m (Redis must be up) and checks nothing is left. */
static void drain(struct px_marks *m, unsigned max_ms)
{
	struct px_marks_stats st;
	int done = 0;

	px_marks_drain(m, max_ms, drain_done, &done);
	assert_false(done); /* never from inside px_marks_drain */
	assert_true(run_until(flag_set, &done, max_ms + 500));
	assert_int_equal(done, 1);
	px_marks_get_stats(m, &st);
	assert_int_equal(st.backlog, 0);
}

static struct px_marks *marks_new(int port, unsigned timeout_ms, size_t ring_max,
                                  size_t overflow_max)
{
	struct px_marks_settings set;

	memset(&set, 0, sizeof(set));
	set.host = "127.0.0.1";
	set.port = port;
	set.timeout_ms = timeout_ms;
	set.ring_max = ring_max;
	set.overflow_users_max = overflow_max;
	return px_marks_new(base, &set);
}

/* ---- looking into Redis ---- */

/* The due score of (user, folder), or -1 when absent. */
static int64_t due_score(redisContext *c, const char *user, const char *folder)
{
	char key[128], member[512];
	int n;
	redisReply *r;
	int64_t v = -1;

	assert_true(rk_key_due(key, sizeof(key), rk_shard(user)) > 0);
	n = rk_member(member, sizeof(member), user, folder);
	assert_true(n > 0);
	r = redisCommand(c, "ZSCORE %s %b", key, member, (size_t)n);
	assert_non_null(r);
	if (r->type == REDIS_REPLY_STRING)
		v = strtoll(r->str, NULL, 10);
	freeReplyObject(r);
	return v;
}

static void check_window(const char *what, int64_t got, int64_t lo, int64_t hi)
{
	if (got < lo - SLACK_MS || got > hi + SLACK_MS)
		fail_msg("%s: due %lld not in [%lld, %lld] +- %d", what, (long long)got,
		         (long long)lo, (long long)hi, SLACK_MS);
}

static void redis_cmd_ok(redisContext *c, const char *fmt, ...)
{
	va_list ap;
	redisReply *r;

	va_start(ap, fmt);
	r = redisvCommand(c, fmt, ap);
	va_end(ap);
	assert_non_null(r);
	if (r->type == REDIS_REPLY_ERROR)
		fail_msg("redis: %s", r->str);
	freeReplyObject(r);
}

/* ---- fixture ---- */

static int setup(void **state)
{
	(void)state;
	base = event_base_new();
	return base != NULL ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	cleanup_all();
	event_base_free(base);
	base = NULL;
	return 0;
}

/* ---- marks ---- */

static void test_marks_zadd(void **state)
{
	static const char folder_odd[] = "Entw\xc3\xbcrfe/a \"b\" {3}\r\nc";
	int port = redis_start_any();
	struct px_marks *m = marks_new(port, 500, 0, 0);
	redisContext *c = redis_connect(port);
	struct px_marks_stats st;
	int64_t t0, t1, s_alice, s;
	uint64_t sent0;

	(void)state;
	assert_non_null(c);
	assert_true(run_until(is_connected, m, 2000));

	t0 = wall_ms();
	px_marks_folder(m, "alice", "INBOX", RK_PRIO_HIGH);
	px_marks_folder(m, "bob", "Sent", RK_PRIO_LOW);
	px_marks_folder(m, "carol", folder_odd, RK_PRIO_HIGH);
	t1 = wall_ms();
	drain(m, 1000);
	s_alice = due_score(c, "alice", "INBOX");
	check_window("alice high", s_alice, t0 + RK_DEBOUNCE_HIGH_MS, t1 + RK_DEBOUNCE_HIGH_MS);
	check_window("bob low", due_score(c, "bob", "Sent"), t0 + RK_DEBOUNCE_LOW_MS,
	             t1 + RK_DEBOUNCE_LOW_MS);
	check_window("binary-safe folder", due_score(c, "carol", folder_odd),
	             t0 + RK_DEBOUNCE_HIGH_MS, t1 + RK_DEBOUNCE_HIGH_MS);

	/* LT: a later mark of the same member never moves it later. */
	run_for(30);
	px_marks_folder(m, "alice", "INBOX", RK_PRIO_LOW);
	drain(m, 1000);
	px_marks_folder(m, "alice", "INBOX", RK_PRIO_HIGH);
	drain(m, 1000);
	assert_int_equal(due_score(c, "alice", "INBOX"), s_alice);

	/* A high mark moves a low one earlier. */
	t0 = wall_ms();
	px_marks_folder(m, "bob", "Sent", RK_PRIO_HIGH);
	t1 = wall_ms();
	drain(m, 1000);
	s = due_score(c, "bob", "Sent");
	check_window("bob high", s, t0 + RK_DEBOUNCE_HIGH_MS, t1 + RK_DEBOUNCE_HIGH_MS);

	/* Marks of one loop pass coalesce: one ZADD with the earliest due. */
	px_marks_get_stats(m, &st);
	sent0 = st.sent;
	t0 = wall_ms();
	px_marks_folder(m, "dave", "X", RK_PRIO_LOW);
	px_marks_folder(m, "dave", "X", RK_PRIO_HIGH);
	px_marks_folder(m, "dave", "X", RK_PRIO_LOW);
	t1 = wall_ms();
	drain(m, 1000);
	check_window("dave coalesced", due_score(c, "dave", "X"), t0 + RK_DEBOUNCE_HIGH_MS,
	             t1 + RK_DEBOUNCE_HIGH_MS);
	px_marks_get_stats(m, &st);
	assert_int_equal(st.sent - sent0, 1);

	assert_int_equal(st.marks, 9);
	assert_int_equal(st.errors, 0);
	assert_int_equal(st.dropped, 0);
	assert_int_equal(st.reconnects, 1);
	assert_int_equal(st.connected, 1);
	assert_true(st.last_latency_us > 0);

	/* An error reply is counted and not retried. */
	{
		char key[64];

		rk_key_due(key, sizeof(key), rk_shard("alice"));
		redis_cmd_ok(c, "DEL %s", key);
		redis_cmd_ok(c, "SET %s x", key);
		px_marks_folder(m, "alice", "INBOX", RK_PRIO_HIGH);
		drain(m, 1000);
		px_marks_get_stats(m, &st);
		assert_int_equal(st.errors, 1);
		assert_int_equal(st.connected, 1);
	}

	redisFree(c);
	px_marks_free(&m);
	assert_null(m);
}

/* A burst: a (user, folder) marked again within the hot window (as when a
 * client sends thousands of STOREs) gets the long debounce, so the daemon
 * syncs it about once per RK_DEBOUNCE_HOT_MS; once quiet, the short one. */
static void test_marks_burst(void **state)
{
	int port = redis_start_any();
	struct px_marks_settings set;
	struct px_marks *m;
	redisContext *c = redis_connect(port);
	struct px_marks_stats st;
	char key[64], member[256];
	int64_t t0, t1;
	int n;

	(void)state;
	memset(&set, 0, sizeof(set));
	set.host = "127.0.0.1";
	set.port = port;
	set.timeout_ms = 500;
	set.hot_window_ms = 400; /* short, to keep the test quick */
	m = px_marks_new(base, &set);
	assert_non_null(c);
	assert_true(run_until(is_connected, m, 2000));
	rk_key_due(key, sizeof(key), rk_shard("erin"));
	n = rk_member(member, sizeof(member), "erin", "Y");
	assert_true(n > 0);

	t0 = wall_ms();
	px_marks_folder(m, "erin", "Y", RK_PRIO_LOW);
	t1 = wall_ms();
	drain(m, 1000);
	check_window("quiet: low", due_score(c, "erin", "Y"), t0 + RK_DEBOUNCE_LOW_MS,
	             t1 + RK_DEBOUNCE_LOW_MS);

	/* the daemon claimed it; the next STOREs of the burst follow at once */
	redis_cmd_ok(c, "ZREM %s %b", key, member, (size_t)n);
	t0 = wall_ms();
	px_marks_folder(m, "erin", "Y", RK_PRIO_LOW);
	px_marks_folder(m, "erin", "Y", RK_PRIO_HIGH);
	t1 = wall_ms();
	drain(m, 1000);
	check_window("burst: hot", due_score(c, "erin", "Y"), t0 + RK_DEBOUNCE_HOT_MS,
	             t1 + RK_DEBOUNCE_HOT_MS);
	px_marks_get_stats(m, &st);
	assert_int_equal(st.hot, 2);

	/* quiet again after the window: a lone change is synced at once */
	redis_cmd_ok(c, "ZREM %s %b", key, member, (size_t)n);
	run_for(500);
	t0 = wall_ms();
	px_marks_folder(m, "erin", "Y", RK_PRIO_HIGH);
	t1 = wall_ms();
	drain(m, 1000);
	check_window("quiet again: high", due_score(c, "erin", "Y"), t0 + RK_DEBOUNCE_HIGH_MS,
	             t1 + RK_DEBOUNCE_HIGH_MS);
	px_marks_get_stats(m, &st);
	assert_int_equal(st.hot, 2);
	redisFree(c);
	px_marks_free(&m);
}

static void test_hint_trim(void **state)
{
	int port = redis_start_any();
	struct px_marks *m = marks_new(port, 500, 0, 0);
	redisContext *c = redis_connect(port);
	char key[64], hint[64];
	redisReply *r;
	int i;

	(void)state;
	assert_non_null(c);
	for (i = 0; i < RK_HINT_MAX + 10; i++) {
		snprintf(hint, sizeof(hint), "rename\tA%d\tB%d", i, i);
		px_marks_hint(m, "erin", hint);
	}
	drain(m, 1500);
	rk_key_hint(key, sizeof(key), "erin");
	r = redisCommand(c, "LLEN %s", key);
	assert_non_null(r);
	assert_int_equal(r->integer, RK_HINT_MAX);
	freeReplyObject(r);
	r = redisCommand(c, "LINDEX %s 0", key); /* the newest first */
	assert_non_null(r);
	snprintf(hint, sizeof(hint), "rename\tA%d\tB%d", RK_HINT_MAX + 9, RK_HINT_MAX + 9);
	assert_string_equal(r->str, hint);
	freeReplyObject(r);
	r = redisCommand(c, "LINDEX %s -1", key);
	assert_non_null(r);
	assert_string_equal(r->str, "rename\tA10\tB10");
	freeReplyObject(r);
	r = redisCommand(c, "TTL %s", key);
	assert_non_null(r);
	assert_true(r->integer > RK_HINT_TTL_S - 10 && r->integer <= RK_HINT_TTL_S);
	freeReplyObject(r);
	redisFree(c);
	px_marks_free(&m);
}

/* ---- routes ---- */

struct route_res {
	int calls;
	int status;
	enum rk_route_state state;
	uint64_t epoch;
	char upstream[64];
	int upstream_null;
};

static void route_cb(int status, enum rk_route_state st, uint64_t epoch, const char *upstream,
                     void *aux)
{
	struct route_res *res = aux;

	res->calls++;
	res->status = status;
	res->state = st;
	res->epoch = epoch;
	res->upstream_null = upstream == NULL;
	snprintf(res->upstream, sizeof(res->upstream), "%s", upstream != NULL ? upstream : "");
}

static int route_called(void *arg)
{
	return ((struct route_res *)arg)->calls > 0;
}

static void route_check(struct px_marks *m, const char *user, int want_status,
                        enum rk_route_state want_state, uint64_t want_epoch,
                        const char *want_upstream)
{
	struct route_res res;
	struct px_route_req *req;

	memset(&res, 0, sizeof(res));
	req = px_marks_route(m, user, route_cb, &res);
	assert_non_null(req);
	assert_int_equal(res.calls, 0); /* never from inside px_marks_route */
	assert_true(run_until(route_called, &res, 2000));
	run_for(20);
	assert_int_equal(res.calls, 1);
	if (res.status != want_status)
		fail_msg("route %s: status %d, want %d", user, res.status, want_status);
	if (want_status == 0) {
		assert_int_equal(res.state, want_state);
		assert_int_equal(res.epoch, want_epoch);
		if (want_upstream == NULL)
			assert_true(res.upstream_null);
		else
			assert_string_equal(res.upstream, want_upstream);
	}
}

static void test_route_lookup(void **state)
{
	int port = redis_start_any();
	redisContext *c = redis_connect(port);
	struct px_marks *m;
	struct route_res res;
	struct px_route_req *req;

	(void)state;
	assert_non_null(c);
	redis_cmd_ok(c, "HSET rep:route:alice state DST epoch 7 upstream 10.0.0.2:1143");
	redis_cmd_ok(c, "HSET rep:route:bob state FREEZE epoch 3");
	redis_cmd_ok(c, "HSET rep:route:eve state BOGUS epoch 1");
	redis_cmd_ok(c, "SET rep:route:zed x");

	/* Asked while still connecting: queued, answered once connected. */
	m = marks_new(port, 500, 0, 0);
	route_check(m, "alice", 0, RK_ROUTE_DST, 7, "10.0.0.2:1143");
	route_check(m, "bob", 0, RK_ROUTE_FREEZE, 3, NULL);
	route_check(m, "nobody", 1, RK_ROUTE_SRC, 0, NULL);
	route_check(m, "eve", -1, RK_ROUTE_SRC, 0, NULL);
	route_check(m, "zed", -1, RK_ROUTE_SRC, 0, NULL); /* WRONGTYPE */

	/* Cancelled before and after sending: never called. */
	memset(&res, 0, sizeof(res));
	req = px_marks_route(m, "alice", route_cb, &res);
	px_marks_route_cancel(&req);
	assert_null(req);
	redis_cmd_ok(c, "CLIENT PAUSE 300 ALL");
	req = px_marks_route(m, "alice", route_cb, &res);
	run_for(50); /* sent, not answered while Redis is paused */
	assert_int_equal(res.calls, 0);
	px_marks_route_cancel(&req);
	px_marks_route_cancel(&req); /* NULL: no-op */
	run_for(400);                /* the answer comes and is ignored */
	assert_int_equal(res.calls, 0);
	route_check(m, "alice", 0, RK_ROUTE_DST, 7, "10.0.0.2:1143");

	redisFree(c);
	px_marks_free(&m);
}

static void test_route_redis_down(void **state)
{
	int port = free_port(); /* nobody listens */
	struct px_marks *m = marks_new(port, 300, 0, 0);
	struct px_marks_settings none;
	uint64_t t0 = mono_ms();

	(void)state;
	route_check(m, "alice", -1, RK_ROUTE_SRC, 0, NULL); /* while connecting */
	assert_true(mono_ms() - t0 < 1000);
	run_for(20);
	route_check(m, "alice", -1, RK_ROUTE_SRC, 0, NULL); /* while down */
	px_marks_free(&m);

	/* No Redis configured at all. */
	memset(&none, 0, sizeof(none));
	m = px_marks_new(base, &none);
	route_check(m, "alice", -1, RK_ROUTE_SRC, 0, NULL);
	px_marks_folder(m, "alice", "INBOX", RK_PRIO_HIGH);
	px_marks_hint(m, "alice", "rename\ta\tb");
	drain(m, 1000);
	px_marks_free(&m);
}

/* ---- failures ---- */

struct producer {
	struct px_marks *m;
	struct event *ev;
	int next;
};

static void produce_cb(evutil_socket_t fd, short what, void *arg)
{
	struct producer *p = arg;
	char user[32];

	(void)fd;
	(void)what;
	snprintf(user, sizeof(user), "k%d", p->next++);
	px_marks_folder(p->m, user, "INBOX", RK_PRIO_HIGH);
}

static void test_redis_killed(void **state)
{
	int port = redis_start_any();
	struct px_marks *m = marks_new(port, 300, 0, 0);
	struct producer p = {m, NULL, 0};
	struct timeval every = {0, 5000};
	struct px_marks_stats st;
	redisContext *c;
	int first_down, i;

	(void)state;
	assert_true(run_until(is_connected, m, 2000));
	p.ev = event_new(base, -1, EV_PERSIST, produce_cb, &p);
	assert_non_null(p.ev);
	event_add(p.ev, &every);
	run_for(100);
	redis_kill();
	first_down = p.next; /* made after the kill: must all arrive */
	run_for(300);
	px_marks_get_stats(m, &st);
	assert_false(st.connected);
	assert_true(st.backlog > 0);
	assert_int_equal(redis_start(port), 0);
	run_for(100);
	event_free(p.ev);
	drain(m, 3000);

	c = redis_connect(port);
	assert_non_null(c);
	for (i = first_down; i < p.next; i++) {
		char user[32];

		snprintf(user, sizeof(user), "k%d", i);
		if (due_score(c, user, "INBOX") < 0)
			fail_msg("mark %s (made after the kill) missing", user);
	}
	px_marks_get_stats(m, &st);
	assert_true(st.connected);
	assert_true(st.errors >= 1);
	assert_true(st.reconnects >= 2);
	assert_int_equal(st.dropped, 0);
	assert_int_equal(st.marks, (uint64_t)p.next);
	redisFree(c);
	px_marks_free(&m);
}

static void test_ring_overflow(void **state)
{
	int port = free_port();
	struct px_marks *m = marks_new(port, 200, 4, 0);
	struct px_marks_stats st;
	redisContext *c;
	char user[16];
	redisReply *r;
	int i;

	(void)state;
	run_for(20);
	for (i = 0; i < 10; i++) {
		snprintf(user, sizeof(user), "o%d", i);
		px_marks_folder(m, user, "INBOX", RK_PRIO_LOW);
	}
	px_marks_folder(m, "o0", "INBOX", RK_PRIO_HIGH); /* coalesces, not dropped */
	px_marks_hint(m, "o9", "rename\ta\tb");          /* dropped */
	px_marks_get_stats(m, &st);
	assert_int_equal(st.backlog, 4);
	assert_int_equal(st.dropped, 7);

	assert_int_equal(redis_start(port), 0);
	drain(m, 3000);
	c = redis_connect(port);
	assert_non_null(c);
	for (i = 0; i < 10; i++) {
		snprintf(user, sizeof(user), "o%d", i);
		if (i < 4) {
			assert_true(due_score(c, user, "INBOX") > 0);
			assert_int_equal(due_score(c, user, RK_FOLDER_ALL), -1);
		} else {
			if (due_score(c, user, RK_FOLDER_ALL) < 0)
				fail_msg("user %s lost marks but got no whole-user mark", user);
			assert_int_equal(due_score(c, user, "INBOX"), -1);
		}
	}
	r = redisCommand(c, "EXISTS %s", RK_KEY_SWEEP_ALL);
	assert_non_null(r);
	assert_int_equal(r->integer, 0);
	freeReplyObject(r);
	redisFree(c);
	px_marks_free(&m);
}

static void test_overflow_sweep_all(void **state)
{
	int port = free_port();
	struct px_marks *m = marks_new(port, 200, 2, 3);
	redisContext *c;
	char user[16];
	redisReply *r;
	int64_t t0 = wall_ms(), v;
	int i;

	(void)state;
	for (i = 0; i < 10; i++) {
		snprintf(user, sizeof(user), "w%d", i);
		px_marks_folder(m, user, "INBOX", RK_PRIO_LOW);
	}
	assert_int_equal(redis_start(port), 0);
	drain(m, 3000);
	c = redis_connect(port);
	assert_non_null(c);
	r = redisCommand(c, "GET %s", RK_KEY_SWEEP_ALL);
	assert_non_null(r);
	assert_int_equal(r->type, REDIS_REPLY_STRING);
	v = strtoll(r->str, NULL, 10);
	freeReplyObject(r);
	assert_true(v >= t0 && v <= wall_ms());
	assert_true(due_score(c, "w0", "INBOX") > 0);
	assert_true(due_score(c, "w1", "INBOX") > 0);
	redisFree(c);
	px_marks_free(&m);
}

/* A Redis that takes the connection and never answers. */
static void test_timeout_reconnect(void **state)
{
	int port = free_port();
	struct px_marks *m;
	struct px_marks_stats st;
	struct route_res res;
	redisContext *c;
	uint64_t t0;

	(void)state;
	listener_open(port);
	m = marks_new(port, 150, 0, 0);
	memset(&res, 0, sizeof(res));
	px_marks_folder(m, "tina", "INBOX", RK_PRIO_HIGH);
	assert_true(run_until(is_connected, m, 1000));
	t0 = mono_ms();
	assert_non_null(px_marks_route(m, "tina", route_cb, &res));
	assert_true(run_until(route_called, &res, 1000));
	assert_int_equal(res.status, -1);
	assert_true(mono_ms() - t0 >= 100);
	run_for(700);
	px_marks_get_stats(m, &st);
	assert_true(st.errors >= 2);
	assert_true(st.reconnects >= 2);
	assert_int_equal(st.sent, 0);
	assert_int_equal(res.calls, 1);

	/* A real Redis on that port gets the mark that kept timing out. */
	close(listen_fd);
	listen_fd = -1;
	assert_int_equal(redis_start(port), 0);
	drain(m, 3000);
	c = redis_connect(port);
	assert_non_null(c);
	assert_true(due_score(c, "tina", "INBOX") > 0);
	redisFree(c);
	px_marks_free(&m);
}

/* ---- shutdown ---- */

static struct px_marks *reentrant_m;
static int reentrant_null;

static void route_reenter_cb(int status, enum rk_route_state st, uint64_t epoch,
                             const char *upstream, void *aux)
{
	route_cb(status, st, epoch, upstream, aux);
	reentrant_null = px_marks_route(reentrant_m, "x", route_cb, aux) == NULL;
}

static void test_free_pending(void **state)
{
	int port = free_port();
	struct px_marks_settings none;
	struct px_marks *m, *null_m = NULL;
	struct route_res res, res2;
	int i, done = 0;

	(void)state;
	/* Commands sent and never answered. */
	listener_open(port);
	m = marks_new(port, 1000, 0, 0);
	assert_true(run_until(is_connected, m, 1000));
	memset(&res, 0, sizeof(res));
	for (i = 0; i < 50; i++)
		px_marks_folder(m, "fred", i % 2 ? "INBOX" : "Sent", RK_PRIO_HIGH);
	px_marks_hint(m, "fred", "rename\ta\tb");
	assert_non_null(px_marks_route(m, "fred", route_cb, &res));
	run_for(30);
	px_marks_drain(m, 5000, drain_done, &done);
	px_marks_free(&m);
	assert_null(m);
	assert_int_equal(res.calls, 1);
	assert_int_equal(res.status, -1);
	assert_int_equal(done, 0); /* the drain callback is not called by free */
	run_for(20);

	/* Freed while still connecting, with marks waiting. */
	m = marks_new(port, 1000, 0, 0);
	px_marks_folder(m, "fred", "INBOX", RK_PRIO_HIGH);
	px_marks_free(&m);

	/* No Redis at all; a route callback that asks again during free. */
	memset(&none, 0, sizeof(none));
	m = px_marks_new(base, &none);
	reentrant_m = m;
	memset(&res2, 0, sizeof(res2));
	px_marks_folder(m, "fred", "INBOX", RK_PRIO_HIGH);
	assert_non_null(px_marks_route(m, "fred", route_reenter_cb, &res2));
	px_marks_free(&m);
	assert_int_equal(res2.calls, 1);
	assert_int_equal(res2.status, -1);
	assert_true(reentrant_null);

	px_marks_free(&null_m);
	px_marks_free(NULL);
	run_for(20);
}

static void test_drain_timeout(void **state)
{
	int port = free_port(); /* Redis never comes */
	struct px_marks *m = marks_new(port, 100, 0, 0);
	int done = 0;
	uint64_t t0;

	(void)state;
	px_marks_folder(m, "gina", "INBOX", RK_PRIO_HIGH);
	t0 = mono_ms();
	px_marks_drain(m, 300, drain_done, &done);
	assert_true(run_until(flag_set, &done, 2000));
	assert_true(mono_ms() - t0 >= 250);
	assert_int_equal(done, 1);
	px_marks_free(&m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test_setup_teardown(test_marks_zadd, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_marks_burst, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_hint_trim, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_route_lookup, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_route_redis_down, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_redis_killed, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_ring_overflow, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_overflow_sweep_all, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_timeout_reconnect, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_free_pending, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_drain_timeout, setup, teardown),
	};

	signal(SIGPIPE, SIG_IGN);
	atexit(cleanup_all);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
