/*
 * Integration tests of lib/rqueue.c (the daemon's Redis work queue) against
 * a redis-server this test starts itself on a free port (tests/common/
 * ferry_redis.c), so that it can restart it. A second, plain hiredis
 * connection ("raw") looks into the keys and plays the proxy or the clock:
 * a lease is made to expire by setting its score in the past, not by
 * waiting for it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "ferry_redis.h"
#include "imapferry/rkeys.h"
#include "imapferry/rqueue.h"

#define LEASE_MS 30000u
#define SLACK_MS 300 /* scheduling slack around expected times */

static struct ferry_redis srv = {-1, 0};
static redisContext *raw;

/* ---- helpers ---- */

static void raw_close(void)
{
	if (raw != NULL)
		redisFree(raw);
	raw = NULL;
}

static void raw_open(void)
{
	struct timeval tv = {2, 0};

	raw_close();
	raw = redisConnectWithTimeout("127.0.0.1", srv.port, tv);
	assert_non_null(raw);
	assert_int_equal(raw->err, 0);
	redisSetTimeout(raw, tv);
}

/* A raw command that must not fail; returns the reply (caller frees). */
static redisReply *raw_argv(int argc, const char **argv, const size_t *lens)
{
	redisReply *r = redisCommandArgv(raw, argc, argv, lens);

	assert_non_null(r);
	if (r->type == REDIS_REPLY_ERROR)
		fail_msg("redis %s: %s", argv[0], r->str);
	return r;
}

static void raw_ok(const char *fmt, ...)
{
	va_list ap;
	redisReply *r;

	va_start(ap, fmt);
	r = redisvCommand(raw, fmt, ap);
	va_end(ap);
	assert_non_null(r);
	if (r->type == REDIS_REPLY_ERROR)
		fail_msg("redis %s: %s", fmt, r->str);
	freeReplyObject(r);
}

static long long raw_int(const char *fmt, ...)
{
	va_list ap;
	redisReply *r;
	long long v;

	va_start(ap, fmt);
	r = redisvCommand(raw, fmt, ap);
	va_end(ap);
	assert_non_null(r);
	assert_int_equal(r->type, REDIS_REPLY_INTEGER);
	v = r->integer;
	freeReplyObject(r);
	return v;
}

static size_t member_of(char *buf, size_t size, const char *user, const char *folder)
{
	int n = rk_member(buf, size, user, folder);

	assert_true(n > 0);
	return (size_t)n;
}

/* Score of (user, folder) in the ZSET kind ("due", "inflight") of the
 * user's shard; -1 when absent. */
static int64_t score_of(const char *kind, const char *user, const char *folder)
{
	char key[64], member[1024];
	const char *argv[3];
	size_t lens[3];
	redisReply *r;
	int64_t v = -1;

	snprintf(key, sizeof(key), "rep:{%u}:%s", rk_shard(user), kind);
	argv[0] = "ZSCORE";
	argv[1] = key;
	argv[2] = member;
	lens[0] = 6;
	lens[1] = strlen(key);
	lens[2] = member_of(member, sizeof(member), user, folder);
	r = raw_argv(3, argv, lens);
	if (r->type == REDIS_REPLY_STRING)
		v = (int64_t)strtod(r->str, NULL);
	freeReplyObject(r);
	return v;
}

/* Sets (user, folder) due at due_ms, whatever it was (the proxy's ZADD
 * without LT, or the clock moving on). */
static void set_due(const char *user, const char *folder, int64_t due_ms)
{
	char key[64], member[1024], score[32];
	const char *argv[4];
	size_t lens[4];

	rk_key_due(key, sizeof(key), rk_shard(user));
	snprintf(score, sizeof(score), "%lld", (long long)due_ms);
	argv[0] = "ZADD";
	argv[1] = key;
	argv[2] = score;
	argv[3] = member;
	lens[0] = 4;
	lens[1] = strlen(key);
	lens[2] = strlen(score);
	lens[3] = member_of(member, sizeof(member), user, folder);
	freeReplyObject(raw_argv(4, argv, lens));
}

/* Makes item's lease end in the past (as if lease_ms had gone by). */
static void expire_lease(const struct rq_item *it)
{
	char key[64];
	const char *argv[5];
	size_t lens[5];

	rk_key_inflight(key, sizeof(key), it->shard);
	argv[0] = "ZADD";
	argv[1] = key;
	argv[2] = "XX";
	argv[3] = "1";
	argv[4] = it->member;
	lens[0] = 4;
	lens[1] = strlen(key);
	lens[2] = 2;
	lens[3] = 1;
	lens[4] = it->member_len;
	freeReplyObject(raw_argv(5, argv, lens));
}

/* HGET rep:{s}:st:<user> field into buf; 0, or -1 when absent. */
static int state_get(const char *user, const char *field, char *buf, size_t size)
{
	char key[256];
	const char *argv[3];
	size_t lens[3];
	redisReply *r;
	int rc = -1;

	assert_true(rk_key_state(key, sizeof(key), user) > 0);
	argv[0] = "HGET";
	argv[1] = key;
	argv[2] = field;
	lens[0] = 4;
	lens[1] = strlen(key);
	lens[2] = strlen(field);
	r = raw_argv(3, argv, lens);
	if (r->type == REDIS_REPLY_STRING) {
		snprintf(buf, size, "%.*s", (int)r->len, r->str);
		rc = 0;
	}
	freeReplyObject(r);
	return rc;
}

static struct rq *queue_open(void)
{
	const char *err = NULL;
	struct rq *q = rq_open("127.0.0.1", srv.port, NULL, 2000, &err);

	if (q == NULL)
		fail_msg("rq_open: %s", err);
	return q;
}

static int64_t now_ms(struct rq *q)
{
	int64_t now;

	assert_int_equal(rq_now(q, &now), 0);
	return now;
}

static void check_near(const char *what, int64_t got, int64_t want)
{
	if (got < want - SLACK_MS || got > want + SLACK_MS)
		fail_msg("%s: %lld, want %lld +- %d", what, (long long)got, (long long)want,
		         SLACK_MS);
}

static long long total_card(const char *kind)
{
	long long n = 0;
	unsigned s;

	for (s = 0; s < RK_SHARDS; s++)
		n += raw_int("ZCARD rep:{%u}:%s", s, kind);
	return n;
}

/* ---- fixture ---- */

static int group_setup(void **state)
{
	(void)state;
	return ferry_redis_start(&srv, 0);
}

static int group_teardown(void **state)
{
	(void)state;
	raw_close();
	ferry_redis_stop(&srv);
	return 0;
}

static int setup(void **state)
{
	(void)state;
	if (srv.pid < 0 && ferry_redis_start(&srv, srv.port) < 0)
		return -1;
	raw_open();
	raw_ok("FLUSHALL");
	return 0;
}

/* ---- claim ---- */

static void test_claim_order(void **state)
{
	struct rq *q = queue_open();
	struct rq_item *items = NULL;
	size_t n = 0;
	int64_t now = now_ms(q);
	char owner[64];
	const char *user = "ann";
	const unsigned shard = rk_shard(user);

	(void)state;
	set_due(user, "A", now - 3000);
	set_due(user, "B", now - 1000);
	set_due(user, "C", now - 2000);
	set_due(user, "D", now + 60000); /* not due yet */
	assert_int_equal(rq_claim(q, shard, "w1", 10, LEASE_MS, &items, &n), 0);
	assert_int_equal(n, 3);
	assert_string_equal(items[0].folder, "A");
	assert_string_equal(items[1].folder, "C");
	assert_string_equal(items[2].folder, "B");
	assert_string_equal(items[0].user, user);
	assert_int_equal(items[0].due_ms, now - 3000);
	assert_int_equal(items[2].due_ms, now - 1000);
	assert_true(items[0].token < items[1].token && items[1].token < items[2].token);
	assert_int_equal(items[0].shard, shard);
	check_near("claimed_ms", items[0].claimed_ms, now);
	check_near("lease", score_of("inflight", user, "A"), now + LEASE_MS);
	assert_int_equal(score_of("due", user, "A"), -1);
	assert_int_equal(score_of("due", user, "D"), now + 60000);
	snprintf(owner, sizeof(owner), "w1:%llu", (unsigned long long)items[1].token);
	{
		char member[64];
		const char *argv[3] = {"HGET", NULL, member};
		size_t lens[3] = {4, 0, 0};
		char key[64];
		redisReply *r;

		rk_key_owner(key, sizeof(key), shard);
		argv[1] = key;
		lens[1] = strlen(key);
		lens[2] = member_of(member, sizeof(member), user, "C");
		r = raw_argv(3, argv, lens);
		assert_int_equal(r->type, REDIS_REPLY_STRING);
		assert_string_equal(r->str, owner);
		freeReplyObject(r);
	}
	rq_items_free(&items, n);
	assert_null(items);

	/* Nothing due: no items, no error. */
	assert_int_equal(rq_claim(q, shard, "w1", 10, LEASE_MS, &items, &n), 0);
	assert_int_equal(n, 0);
	assert_null(items);

	/* max is honoured, earliest first. */
	set_due(user, "E", now - 10);
	set_due(user, "F", now - 20);
	set_due(user, "G", now - 30);
	assert_int_equal(rq_claim(q, shard, "w1", 2, LEASE_MS, &items, &n), 0);
	assert_int_equal(n, 2);
	assert_string_equal(items[0].folder, "G");
	assert_string_equal(items[1].folder, "F");
	rq_items_free(&items, n);

	/* Bad arguments. */
	assert_int_equal(rq_claim(q, RK_SHARDS, "w1", 1, LEASE_MS, &items, &n), -1);
	assert_true(rq_error(q)[0] != '\0');
	assert_int_equal(rq_claim(q, shard, "", 1, LEASE_MS, &items, &n), -1);
	assert_int_equal(rq_claim(q, shard, "w1", 0, LEASE_MS, &items, &n), -1);
	assert_int_equal(rq_claim(q, shard, "w1", RQ_CLAIM_MAX + 1, LEASE_MS, &items, &n), -1);
	assert_int_equal(rq_claim(q, shard, "w1", 1, 0, &items, &n), -1);
	rq_close(&q);
	assert_null(q);
	rq_close(&q);
	rq_close(NULL);
}

static void test_mark_lt(void **state)
{
	struct rq *q = queue_open();
	int64_t now = now_ms(q), s1;

	(void)state;
	assert_int_equal(rq_mark(q, "bea", "INBOX", 5000), 0);
	s1 = score_of("due", "bea", "INBOX");
	check_near("first mark", s1, now + 5000);
	/* A later due time never postpones it. */
	assert_int_equal(rq_mark(q, "bea", "INBOX", 20000), 0);
	assert_int_equal(score_of("due", "bea", "INBOX"), s1);
	/* An earlier one moves it earlier. */
	assert_int_equal(rq_mark(q, "bea", "INBOX", 100), 0);
	check_near("earlier mark", score_of("due", "bea", "INBOX"), now + 100);
	assert_int_equal(rq_mark(q, "bea", RK_FOLDER_ALL, 0), 0);
	assert_true(score_of("due", "bea", RK_FOLDER_ALL) > 0);
	assert_int_equal(total_card("due"), 2);

	/* Pairs that could not split back are refused. */
	assert_int_equal(rq_mark(q, "b\tea", "INBOX", 0), -1);
	assert_non_null(strstr(rq_error(q), "invalid"));
	assert_int_equal(rq_mark(q, "", "INBOX", 0), -1);
	assert_int_equal(rq_mark(q, "bea", "", 0), -1);
	assert_int_equal(total_card("due"), 2);
	rq_close(&q);
}

/* The lost-wakeup race (design §5): a mark made while the folder is being
 * synced stays due, is not claimed by anyone during the sync, and runs
 * after it. */
static void test_mark_during_sync(void **state)
{
	struct rq *q = queue_open(), *q2 = queue_open();
	struct rq_item *items = NULL, *items2 = NULL, *items3 = NULL;
	size_t n = 0, n2 = 0, n3 = 0;
	const unsigned shard = rk_shard("cid");
	int64_t now;

	(void)state;
	assert_int_equal(rq_mark(q, "cid", "INBOX", 0), 0);
	assert_int_equal(rq_claim(q, shard, "w1", 10, LEASE_MS, &items, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(score_of("due", "cid", "INBOX"), -1);

	/* A change during the sync: the proxy marks it again. */
	assert_int_equal(rq_mark(q2, "cid", "INBOX", 0), 0);
	assert_true(score_of("due", "cid", "INBOX") > 0);
	/* Another worker sees it due but in flight: not claimed, pushed back. */
	now = now_ms(q2);
	assert_int_equal(rq_claim(q2, shard, "w2", 10, LEASE_MS, &items2, &n2), 0);
	assert_int_equal(n2, 0);
	check_near("pushed back", score_of("due", "cid", "INBOX"), now + RQ_PUSHBACK_MS);
	assert_true(score_of("inflight", "cid", "INBOX") > 0);

	/* The first sync ends; the mark is still there, due soon. */
	assert_int_equal(rq_finish(q, &items[0], "INBOX", "state-1"), 1);
	assert_int_equal(score_of("inflight", "cid", "INBOX"), -1);
	assert_true(score_of("due", "cid", "INBOX") > 0);

	/* Once its time comes, it is claimed, with a new token. */
	set_due("cid", "INBOX", now_ms(q2) - 1);
	assert_int_equal(rq_claim(q2, shard, "w2", 10, LEASE_MS, &items2, &n2), 0);
	assert_int_equal(n2, 1);
	assert_string_equal(items2[0].folder, "INBOX");
	assert_true(items2[0].token > items[0].token);
	assert_int_equal(rq_finish(q2, &items2[0], NULL, NULL), 1);
	assert_int_equal(total_card("due"), 0);
	assert_int_equal(total_card("inflight"), 0);

	/* A due member in flight does not hide other due work behind it. */
	assert_int_equal(rq_mark(q, "cid", "A", 0), 0);
	assert_int_equal(rq_claim(q, shard, "w1", 1, LEASE_MS, &items3, &n3), 0);
	assert_int_equal(n3, 1);
	set_due("cid", "A", now_ms(q) - 5000); /* marked again, earliest */
	assert_int_equal(rq_mark(q, "cid", "B", 0), 0);
	rq_items_free(&items2, n2);
	assert_int_equal(rq_claim(q2, shard, "w2", 1, LEASE_MS, &items2, &n2), 0);
	assert_int_equal(n2, 1);
	assert_string_equal(items2[0].folder, "B");

	rq_items_free(&items, n);
	rq_items_free(&items2, n2);
	rq_items_free(&items3, n3);
	rq_close(&q);
	rq_close(&q2);
}

/* ---- two workers ---- */

#define MANY 500

static void many_name(char *folder, size_t size, int i)
{
	snprintf(folder, size, "F%03d", i);
}

static int many_index(const struct rq_item *it)
{
	return atoi(it->folder + 1);
}

/* Two connections alternate claims over 500 items, re-marking some while
 * they are held and finishing others later; no item is ever held twice, and
 * every mark made while an item was held leads to one more claim. */
static void test_two_workers(void **state)
{
	struct rq *w[2];
	struct rq_item *held_items[2][MANY];
	size_t held_n[2] = {0, 0};
	int held[MANY], claims[MANY], remarks[MANY];
	int i, round, total = 0, want = MANY;
	unsigned seed = 42;
	const char *user = "dora";
	const unsigned shard = rk_shard(user);
	char folder[16];
	struct rq_item *arrays[4096];
	size_t array_n[4096], narrays = 0;

	(void)state;
	w[0] = queue_open();
	w[1] = queue_open();
	memset(held, 0, sizeof(held));
	memset(claims, 0, sizeof(claims));
	memset(remarks, 0, sizeof(remarks));
	for (i = 0; i < MANY; i++) {
		many_name(folder, sizeof(folder), i);
		assert_int_equal(rq_mark(w[i % 2], user, folder, 0), 0);
	}
	for (round = 0; round < 4000 && total < want; round++) {
		int k = round % 2;
		struct rq_item *items = NULL;
		size_t n = 0, j;

		assert_int_equal(rq_claim(w[k], shard, k ? "wb" : "wa", 7, LEASE_MS, &items, &n),
		                 0);
		assert_true(narrays < 4096);
		arrays[narrays] = items;
		array_n[narrays++] = n;
		for (j = 0; j < n; j++) {
			int idx = many_index(&items[j]);

			if (held[idx])
				fail_msg("%s claimed while held (round %d)", items[j].folder,
				         round);
			held[idx] = 1;
			claims[idx]++;
			total++;
			held_items[k][held_n[k]++] = &items[j];
			/* A third of the first claims get a mark while held. */
			if (claims[idx] == 1 && rand_r(&seed) % 3 == 0) {
				assert_int_equal(rq_mark(w[!k], user, items[j].folder, 0), 0);
				/* Due before everything else: the other worker's
				 * next claim meets it while it is held. */
				set_due(user, items[j].folder, 1);
				remarks[idx]++;
				want++;
			}
		}
		/* Finish about half of what this worker holds. */
		for (j = 0; j < held_n[k];) {
			struct rq_item *it = held_items[k][j];

			if (rand_r(&seed) % 2 == 0) {
				held[many_index(it)] = 0; /* before the release */
				assert_int_equal(rq_finish(w[k], it, NULL, NULL), 1);
				held_items[k][j] = held_items[k][--held_n[k]];
			} else {
				j++;
			}
		}
		if (n == 0 && held_n[0] + held_n[1] == 0) {
			/* Only pushed-back marks are left: let their time come. */
			unsigned s;

			for (s = 0; s < RK_SHARDS; s++)
				raw_ok("ZUNIONSTORE rep:{%u}:due 1 rep:{%u}:due WEIGHTS 0", s, s);
		}
		if (n == 0 && held_n[k] > 0) {
			/* Nothing new: release everything this worker holds. */
			while (held_n[k] > 0) {
				struct rq_item *it = held_items[k][--held_n[k]];

				held[many_index(it)] = 0;
				assert_int_equal(rq_finish(w[k], it, NULL, NULL), 1);
			}
		}
	}
	if (total != want)
		fail_msg("%d claims after %d rounds, want %d", total, round, want);
	for (i = 0; i < MANY; i++) {
		if (claims[i] != 1 + remarks[i])
			fail_msg("item %d claimed %d times, marked %d times while held", i,
			         claims[i], remarks[i]);
	}
	for (i = 0; i < 2; i++) {
		while (held_n[i] > 0)
			assert_int_equal(rq_finish(w[i], held_items[i][--held_n[i]], NULL, NULL),
			                 1);
	}
	assert_int_equal(total_card("due"), 0);
	assert_int_equal(total_card("inflight"), 0);
	assert_int_equal(raw_int("HLEN rep:{%u}:owner", shard), 0);
	while (narrays > 0) {
		narrays--;
		rq_items_free(&arrays[narrays], array_n[narrays]);
	}
	rq_close(&w[0]);
	rq_close(&w[1]);
}

/* The same with two threads claiming at the same time (rq_claim_any), so
 * the scripts' atomicity is what keeps them apart. */
struct thr {
	struct rq *q;
	redisContext *raw; /* this thread's own */
	const char *name;
	pthread_mutex_t *mu;
	int *held, *claims;
	int *total, *violations, *errors;
	int want;
};

static void *thr_run(void *arg)
{
	struct thr *t = arg;
	time_t deadline = time(NULL) + 20;
	int errors = 0;

	while (time(NULL) < deadline) {
		struct rq_item *items = NULL;
		size_t n = 0, j;
		int done;

		if (rq_claim_any(t->q, t->name, 5, LEASE_MS, &items, &n) < 0) {
			pthread_mutex_lock(t->mu);
			(*t->errors)++;
			pthread_mutex_unlock(t->mu);
			break;
		}
		pthread_mutex_lock(t->mu);
		for (j = 0; j < n; j++) {
			int idx = many_index(&items[j]);

			if (t->held[idx])
				(*t->violations)++;
			t->held[idx] = 1;
			t->claims[idx]++;
			(*t->total)++;
		}
		pthread_mutex_unlock(t->mu);
		for (j = 0; j < n; j++) {
			int idx = many_index(&items[j]), first;

			pthread_mutex_lock(t->mu);
			first = t->claims[idx] == 1;
			pthread_mutex_unlock(t->mu);
			/* Every tenth item changes during its first sync. */
			if (idx % 10 == 0 && first) {
				redisReply *r;
				char key[64];

				if (rq_mark(t->q, items[j].user, items[j].folder, 0) < 0)
					errors++;
				/* Due before all others: the other thread meets it
				 * while this one holds it. */
				rk_key_due(key, sizeof(key), items[j].shard);
				r = redisCommand(t->raw, "ZADD %s 1 %b", key, items[j].member,
				                 items[j].member_len);
				if (r == NULL || r->type != REDIS_REPLY_INTEGER)
					errors++;
				if (r != NULL)
					freeReplyObject(r);
				usleep(5000); /* a sync that takes a while */
			}
			pthread_mutex_lock(t->mu);
			t->held[idx] = 0; /* before the release */
			pthread_mutex_unlock(t->mu);
			if (rq_finish(t->q, &items[j], NULL, NULL) != 1)
				errors++;
		}
		rq_items_free(&items, n);
		pthread_mutex_lock(t->mu);
		*t->errors += errors;
		errors = 0;
		done = *t->total >= t->want || *t->violations > 0 || *t->errors > 0;
		pthread_mutex_unlock(t->mu);
		if (done)
			break;
		if (n == 0)
			usleep(2000); /* pushed-back marks come back after 1 s */
	}
	return NULL;
}

static void test_two_workers_threads(void **state)
{
	pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
	int held[MANY], claims[MANY], total = 0, violations = 0, errors = 0, i;
	struct thr t[2];
	pthread_t th[2];
	struct rq *q = queue_open();
	char user[16], folder[16];

	(void)state;
	memset(held, 0, sizeof(held));
	memset(claims, 0, sizeof(claims));
	for (i = 0; i < MANY; i++) {
		snprintf(user, sizeof(user), "u%d", i % 40); /* over many shards */
		many_name(folder, sizeof(folder), i);
		assert_int_equal(rq_mark(q, user, folder, 0), 0);
	}
	for (i = 0; i < 2; i++) {
		t[i].q = queue_open();
		t[i].raw = redisConnect("127.0.0.1", srv.port);
		assert_non_null(t[i].raw);
		assert_int_equal(t[i].raw->err, 0);
		t[i].name = i ? "thread-b" : "thread-a";
		t[i].mu = &mu;
		t[i].held = held;
		t[i].claims = claims;
		t[i].total = &total;
		t[i].violations = &violations;
		t[i].errors = &errors;
		t[i].want = MANY + MANY / 10;
	}
	for (i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&th[i], NULL, thr_run, &t[i]), 0);
	for (i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
	assert_int_equal(violations, 0);
	assert_int_equal(errors, 0);
	assert_int_equal(total, MANY + MANY / 10);
	for (i = 0; i < MANY; i++)
		assert_int_equal(claims[i], i % 10 == 0 ? 2 : 1);
	assert_int_equal(total_card("due"), 0);
	assert_int_equal(total_card("inflight"), 0);
	for (i = 0; i < 2; i++) {
		rq_close(&t[i].q);
		redisFree(t[i].raw);
	}
	rq_close(&q);
}

/* ---- leases and fencing ---- */

static void test_renew_stale(void **state)
{
	struct rq *q = queue_open();
	struct rq_item *items = NULL, forged;
	size_t n = 0;
	const unsigned shard = rk_shard("eve");
	unsigned reaped = 99;
	char buf[64];
	int64_t now;

	(void)state;
	assert_int_equal(rq_mark(q, "eve", "INBOX", 0), 0);
	assert_int_equal(rq_claim(q, shard, "w1", 1, 1000, &items, &n), 0);
	assert_int_equal(n, 1);
	now = now_ms(q);
	assert_int_equal(rq_renew(q, &items[0], LEASE_MS), 1);
	check_near("renewed lease", score_of("inflight", "eve", "INBOX"), now + LEASE_MS);

	/* Another token (an earlier claim of the same member) does not own it. */
	forged = items[0];
	forged.owner = "w1:1000000";
	assert_int_equal(rq_renew(q, &forged, LEASE_MS), 0);
	assert_int_equal(rq_finish(q, &forged, "INBOX", "forged"), 0);
	assert_true(score_of("inflight", "eve", "INBOX") > 0);

	/* Unexpired leases are not reaped; expired ones are. */
	assert_int_equal(rq_reap(q, shard, &reaped), 0);
	assert_int_equal(reaped, 0);
	expire_lease(&items[0]);
	assert_int_equal(rq_reap(q, shard, &reaped), 0);
	assert_int_equal(reaped, 1);
	assert_int_equal(score_of("inflight", "eve", "INBOX"), -1);
	check_near("reaped back to due", score_of("due", "eve", "INBOX"), now_ms(q));
	assert_int_equal(raw_int("HLEN rep:{%u}:owner", shard), 0);
	assert_int_equal(rq_renew(q, &items[0], LEASE_MS), 0);
	assert_int_equal(score_of("inflight", "eve", "INBOX"), -1); /* XX: not re-added */
	/* Reaped and not claimed again yet: the old holder still writes nothing. */
	assert_int_equal(rq_finish(q, &items[0], "INBOX", "late"), 0);
	assert_int_equal(state_get("eve", "INBOX", buf, sizeof(buf)), -1);
	assert_int_equal(rq_retry(q, &items[0], 60000), 0);
	check_near("still due now", score_of("due", "eve", "INBOX"), now_ms(q));
	assert_int_equal(rq_reap(q, RK_SHARDS, NULL), -1);
	assert_int_equal(rq_renew(q, &items[0], 0), -1);
	rq_items_free(&items, n);
	rq_close(&q);
}

/* A worker whose lease expired: the reaper hands the folder to another
 * worker, whose finish wins; the first worker's finish and retry write
 * nothing. */
static void test_reap_fence(void **state)
{
	struct rq *a = queue_open(), *b = queue_open();
	struct rq_item *ia = NULL, *ib = NULL, *ic = NULL;
	size_t na = 0, nb = 0, nc = 0;
	const unsigned shard = rk_shard("fay");
	char buf[64];
	unsigned reaped = 0;

	(void)state;
	assert_int_equal(rq_mark(a, "fay", "Sent", 0), 0);
	assert_int_equal(rq_claim(a, shard, "wa", 1, LEASE_MS, &ia, &na), 0);
	assert_int_equal(na, 1);
	/* Worker a stalls past its lease; the reaper (any worker) runs. */
	expire_lease(&ia[0]);
	assert_int_equal(rq_reap(b, shard, &reaped), 0);
	assert_int_equal(reaped, 1);
	assert_int_equal(rq_claim(b, shard, "wb", 1, LEASE_MS, &ib, &nb), 0);
	assert_int_equal(nb, 1);
	assert_true(ib[0].token > ia[0].token);
	/* a wakes up: every fenced write of a is refused. */
	assert_int_equal(rq_renew(a, &ia[0], LEASE_MS), 0);
	assert_int_equal(rq_finish(a, &ia[0], "Sent", "from-a"), 0);
	assert_int_equal(state_get("fay", "Sent", buf, sizeof(buf)), -1);
	assert_int_equal(rq_retry(a, &ia[0], 0), 0);
	assert_int_equal(score_of("due", "fay", "Sent"), -1);
	assert_true(score_of("inflight", "fay", "Sent") > 0);
	/* b's finish commits its state and releases. */
	assert_int_equal(rq_renew(b, &ib[0], LEASE_MS), 1);
	assert_int_equal(rq_finish(b, &ib[0], "Sent", "from-b"), 1);
	assert_int_equal(state_get("fay", "Sent", buf, sizeof(buf)), 0);
	assert_string_equal(buf, "from-b");
	assert_int_equal(score_of("inflight", "fay", "Sent"), -1);
	assert_int_equal(raw_int("HLEN rep:{%u}:owner", shard), 0);
	/* Finishing twice: the second is stale. */
	assert_int_equal(rq_finish(b, &ib[0], "Sent", "again"), 0);
	assert_int_equal(rq_finish(a, &ia[0], "Sent", "from-a"), 0);
	assert_int_equal(state_get("fay", "Sent", buf, sizeof(buf)), 0);
	assert_string_equal(buf, "from-b");

	/* A NULL value deletes the field, fenced too. */
	assert_int_equal(rq_mark(a, "fay", "Sent", 0), 0);
	assert_int_equal(rq_claim(a, shard, "wa", 1, LEASE_MS, &ic, &nc), 0);
	assert_int_equal(nc, 1);
	assert_int_equal(rq_finish(a, &ib[0], "Sent", NULL), 0);
	assert_int_equal(state_get("fay", "Sent", buf, sizeof(buf)), 0);
	assert_int_equal(rq_finish(a, &ic[0], "Sent", NULL), 1);
	assert_int_equal(state_get("fay", "Sent", buf, sizeof(buf)), -1);
	rq_items_free(&ia, na);
	rq_items_free(&ib, nb);
	rq_items_free(&ic, nc);
	rq_close(&a);
	rq_close(&b);
}

static void test_retry(void **state)
{
	struct rq *q = queue_open();
	struct rq_item *items = NULL;
	size_t n = 0;
	const unsigned shard = rk_shard("gil");
	int64_t now;

	(void)state;
	assert_int_equal(rq_mark(q, "gil", "INBOX", 0), 0);
	assert_int_equal(rq_claim(q, shard, "w1", 1, LEASE_MS, &items, &n), 0);
	assert_int_equal(n, 1);
	now = now_ms(q);
	assert_int_equal(rq_retry(q, &items[0], 5000), 1);
	check_near("backoff", score_of("due", "gil", "INBOX"), now + 5000);
	assert_int_equal(score_of("inflight", "gil", "INBOX"), -1);
	assert_int_equal(raw_int("HLEN rep:{%u}:owner", shard), 0);
	assert_int_equal(rq_retry(q, &items[0], 5000), 0); /* released already */
	rq_items_free(&items, n);

	/* A mark made during the failed sync is not delayed by the backoff. */
	set_due("gil", "INBOX", now_ms(q) - 1);
	assert_int_equal(rq_claim(q, shard, "w1", 1, LEASE_MS, &items, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(rq_mark(q, "gil", "INBOX", 200), 0);
	now = now_ms(q);
	assert_int_equal(rq_retry(q, &items[0], 60000), 1);
	check_near("mark kept", score_of("due", "gil", "INBOX"), now + 200);
	rq_items_free(&items, n);
	rq_close(&q);
}

/* rq_move_wait(): a folder a MOVE left waits while the target's sync is in
 * flight, never for a target that is only due (a folder put back to wait is
 * due: two folders with moves into each other must not wait for each
 * other); only move hints from that folder count. */
static void test_move_wait(void **state)
{
	struct rq *q = queue_open();
	struct rq_item *items = NULL, *t = NULL, *a = NULL;
	size_t n = 0, nt = 0, na = 0;
	const unsigned shard = rk_shard("hal");
	char hint[64];

	(void)state;
	rk_key_hint(hint, sizeof(hint), "hal");
	assert_int_equal(rq_mark(q, "hal", "INBOX", 0), 0);
	assert_int_equal(rq_claim(q, shard, "w1", 1, LEASE_MS, &items, &n), 0);
	assert_int_equal(n, 1);
	/* no hint at all; then hints that name other sources, a copy, a
	 * rename, a malformed line, the folder itself as target */
	assert_int_equal(rq_move_wait(q, &items[0]), 0);
	raw_ok("RPUSH %s %s", hint, "move\tArchive\tSent\t7\t1\t1");
	raw_ok("RPUSH %s %s", hint, "copy\tINBOX\tSent\t7\t1\t1");
	raw_ok("RPUSH %s %s", hint, "rename\tINBOX\tSent");
	raw_ok("RPUSH %s %s", hint, "move\tINBOX");
	raw_ok("RPUSH %s %s", hint, "move\tINBOX\tINBOX\t7\t1\t1");
	raw_ok("RPUSH %s %s", hint, "move\tINBOX.x\tSent\t7\t1\t1");
	set_due("hal", "Sent", now_ms(q));
	assert_int_equal(rq_claim(q, shard, "w2", 1, LEASE_MS, &t, &nt), 0);
	assert_int_equal(nt, 1);
	assert_string_equal(t[0].folder, "Sent");
	assert_int_equal(rq_move_wait(q, &items[0]), 0);
	assert_int_equal(rq_retry(q, &t[0], 0), 1);
	rq_items_free(&t, nt);
	/* a move from INBOX to Sent: Sent only due (now or soon): no wait;
	 * in flight: wait; back to due: no wait */
	raw_ok("LPUSH %s %s", hint, "move\tINBOX\tSent\t7\t1:3\t4:6");
	assert_int_equal(rq_move_wait(q, &items[0]), 0);
	set_due("hal", "Sent", now_ms(q) + 200);
	assert_int_equal(rq_move_wait(q, &items[0]), 0);
	set_due("hal", "Sent", now_ms(q));
	assert_int_equal(rq_claim(q, shard, "w2", 1, LEASE_MS, &t, &nt), 0);
	assert_int_equal(nt, 1);
	assert_string_equal(t[0].folder, "Sent");
	assert_int_equal(rq_move_wait(q, &items[0]), 1);
	/* moves both ways (INBOX -> Sent and Sent -> INBOX): Sent claimed
	 * while INBOX runs waits for it (put back due); INBOX claimed again
	 * then does not wait for Sent, which is only due: no cycle */
	raw_ok("LPUSH %s %s", hint, "move\tSent\tINBOX\t8\t9\t10");
	assert_int_equal(rq_move_wait(q, &t[0]), 1);
	assert_int_equal(rq_retry(q, &t[0], 60000), 1);
	rq_items_free(&t, nt);
	assert_int_equal(rq_retry(q, &items[0], 0), 1);
	assert_int_equal(rq_claim(q, shard, "w1", 1, LEASE_MS, &a, &na), 0);
	assert_int_equal(na, 1);
	assert_string_equal(a[0].folder, "INBOX");
	assert_int_equal(rq_move_wait(q, &a[0]), 0);
	raw_ok("DEL %s", hint);
	assert_int_equal(rq_move_wait(q, &a[0]), 0);
	rq_items_free(&a, na);
	rq_items_free(&items, n);
	rq_close(&q);
}

/* ---- shards, stats, polls, sweep flag ---- */

/* Two worker names whose first shard differs. */
static void two_workers_apart(char *a, char *b, size_t size)
{
	int i;

	snprintf(a, size, "host1:1");
	for (i = 2; i < 100; i++) {
		snprintf(b, size, "host1:%d", i);
		if (rk_crc16(a, strlen(a)) % RK_SHARDS != rk_crc16(b, strlen(b)) % RK_SHARDS)
			return;
	}
	fail_msg("no two worker names apart");
}

static void test_claim_any(void **state)
{
	struct rq *qa = queue_open(), *qb = queue_open();
	char wa[32], wb[32], user[16];
	int per_user[64], shards_seen[RK_SHARDS], i, distinct = 0, calls;
	struct rq_item *items = NULL;
	size_t n = 0;
	unsigned first_a, first_b, total = 0;

	(void)state;
	memset(per_user, 0, sizeof(per_user));
	memset(shards_seen, 0, sizeof(shards_seen));
	two_workers_apart(wa, wb, sizeof(wa));
	for (i = 0; i < 64; i++) {
		snprintf(user, sizeof(user), "s%d", i);
		assert_int_equal(rq_mark(qa, user, "INBOX", 0), 0);
		shards_seen[rk_shard(user)] = 1;
	}
	for (i = 0; i < (int)RK_SHARDS; i++)
		distinct += shards_seen[i];
	assert_true(distinct >= 12); /* the users do cover the shards */
	memset(shards_seen, 0, sizeof(shards_seen));

	/* Both start at different shards. */
	assert_int_equal(rq_claim_any(qa, wa, 1, LEASE_MS, &items, &n), 0);
	assert_int_equal(n, 1);
	first_a = items[0].shard;
	per_user[atoi(items[0].user + 1)]++;
	assert_int_equal(rq_finish(qa, &items[0], NULL, NULL), 1);
	rq_items_free(&items, n);
	assert_int_equal(rq_claim_any(qb, wb, 1, LEASE_MS, &items, &n), 0);
	assert_int_equal(n, 1);
	first_b = items[0].shard;
	per_user[atoi(items[0].user + 1)]++;
	assert_int_equal(rq_finish(qb, &items[0], NULL, NULL), 1);
	rq_items_free(&items, n);
	assert_int_not_equal(first_a, first_b);
	total = 2;

	/* One worker's successive claims rotate over the shards. */
	for (calls = 0; calls < 8; calls++) {
		size_t j;

		assert_int_equal(rq_claim_any(qa, wa, 2, LEASE_MS, &items, &n), 0);
		assert_true(n >= 1 && n <= 2);
		for (j = 0; j < n; j++) {
			shards_seen[items[j].shard] = 1;
			per_user[atoi(items[j].user + 1)]++;
			assert_int_equal(rq_finish(qa, &items[j], NULL, NULL), 1);
		}
		total += (unsigned)n;
		rq_items_free(&items, n);
	}
	distinct = 0;
	for (i = 0; i < (int)RK_SHARDS; i++)
		distinct += shards_seen[i];
	if (distinct < 6)
		fail_msg("8 claims of up to 2 touched only %d shards", distinct);

	/* The rest, in one call that walks every shard. */
	assert_int_equal(rq_claim_any(qb, wb, 1000, LEASE_MS, &items, &n), 0);
	total += (unsigned)n;
	for (i = 0; i < (int)n; i++)
		per_user[atoi(items[i].user + 1)]++;
	rq_items_free(&items, n);
	assert_int_equal(total, 64);
	for (i = 0; i < 64; i++)
		assert_int_equal(per_user[i], 1);
	assert_int_equal(rq_claim_any(qa, wa, 10, LEASE_MS, &items, &n), 0);
	assert_int_equal(n, 0);
	rq_close(&qa);
	rq_close(&qb);
}

static void test_stats(void **state)
{
	struct rq *q = queue_open();
	struct rq_stats st;
	struct rq_item *items = NULL;
	size_t n = 0;
	int64_t now;

	(void)state;
	assert_int_equal(rq_stats(q, &st), 0);
	assert_int_equal(st.due, 0);
	assert_int_equal(st.inflight, 0);
	assert_int_equal(st.oldest_due_ms, -1);
	assert_int_equal(st.oldest_due_age_ms, 0);
	check_near("stats now", st.now_ms, now_ms(q));

	/* Future items only: no age. */
	assert_int_equal(rq_mark(q, "hal", "INBOX", 60000), 0);
	assert_int_equal(rq_stats(q, &st), 0);
	assert_int_equal(st.due, 1);
	assert_int_equal(st.oldest_due_age_ms, 0);
	assert_true(st.oldest_due_ms > st.now_ms);

	now = now_ms(q);
	set_due("ida", "INBOX", now - 5000); /* another shard than hal */
	assert_int_not_equal(rk_shard("ida"), rk_shard("hal"));
	set_due("ida", "Sent", now - 100);
	set_due("hal", "Sent", now - 2000);
	assert_int_equal(rq_claim(q, rk_shard("hal"), "w1", 10, LEASE_MS, &items, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(rq_stats(q, &st), 0);
	assert_int_equal(st.due, 3);
	assert_int_equal(st.inflight, 1);
	assert_int_equal(st.oldest_due_ms, now - 5000);
	check_near("oldest age", (int64_t)st.oldest_due_age_ms, 5000);
	rq_items_free(&items, n);
	rq_close(&q);
}

static void test_sweep_all(void **state)
{
	struct rq *q = queue_open();
	int64_t v = -1;

	(void)state;
	assert_int_equal(rq_sweep_all_take(q, &v), 0);
	assert_int_equal(v, 0);
	raw_ok("SET %s 1764000000123", RK_KEY_SWEEP_ALL);
	assert_int_equal(rq_sweep_all_take(q, &v), 1);
	assert_int_equal(v, 1764000000123LL);
	assert_int_equal(raw_int("EXISTS %s", RK_KEY_SWEEP_ALL), 0);
	assert_int_equal(rq_sweep_all_take(q, &v), 0);
	raw_ok("HSET %s a b", RK_KEY_SWEEP_ALL); /* WRONGTYPE */
	assert_int_equal(rq_sweep_all_take(q, &v), -1);
	assert_non_null(strstr(rq_error(q), "WRONGTYPE"));
	rq_close(&q);
}

/* rq_mark_polled(): every user of a shard's poll set gets a whole-user
 * mark due now, an earlier one stays; other shards are not touched. */
/* rq_full_due(): the full check's clock lives in rep:{s}:last:<user>. The
 * first question starts it (no full check for a user just seen); a yes
 * restarts it at once (a second daemon asking gets no); a full check
 * recorded by rq_last_full() counts as the last one. */
static void test_full_due(void **state)
{
	struct rq *q = queue_open(), *q2 = queue_open();

	(void)state;
	raw_ok("DEL rep:{%u}:last:fiona", rk_shard("fiona"));
	assert_int_equal(rq_full_due(q, "fiona", 1), 0); /* the clock starts */
	assert_int_equal(raw_int("HEXISTS rep:{%u}:last:fiona full_from_ms", rk_shard("fiona")), 1);
	usleep(5000);
	assert_int_equal(rq_full_due(q, "fiona", 3600000), 0);
	assert_int_equal(rq_full_due(q, "fiona", 1), 1);
	assert_int_equal(rq_full_due(q2, "fiona", 1000), 0); /* the other daemon: just started */
	/* a full check that ended later counts */
	raw_ok("HSET rep:{%u}:last:fiona full_from_ms 1000", rk_shard("fiona"));
	assert_int_equal(rq_last_full(q, "fiona"), 0);
	assert_int_equal(rq_full_due(q, "fiona", 3600000), 0);
	usleep(5000);
	assert_int_equal(rq_full_due(q, "fiona", 2), 1);
	assert_int_equal(rq_full_due(q, "", 2), -1);
	assert_int_equal(rq_full_due(q, "fiona", 0), -1);
	raw_ok("DEL rep:{%u}:last:fiona", rk_shard("fiona"));
	rq_close(&q);
	rq_close(&q2);
}

/* rq_daemon_beat()/rq_daemon_leave(): the daemons sharing --maxconnections. */
static void test_daemon_beat(void **state)
{
	struct rq *q = queue_open();

	(void)state;
	raw_ok("DEL %s", RK_KEY_DAEMONS);
	assert_int_equal(rq_daemon_beat(q, "a:1", 10000), 1);
	assert_int_equal(rq_daemon_beat(q, "b:2", 10000), 2);
	assert_int_equal(rq_daemon_beat(q, "a:1", 10000), 2); /* again: no double count */
	assert_int_equal(rq_daemon_leave(q, "a:1"), 0);
	assert_int_equal(rq_daemon_beat(q, "b:2", 10000), 1);
	assert_int_equal(rq_daemon_beat(q, "c:3", 1), 2);
	usleep(5000); /* c's heartbeat ended: it no longer counts */
	assert_int_equal(rq_daemon_beat(q, "b:2", 10000), 1);
	assert_int_equal(rq_daemon_beat(q, "", 10000), -1);
	assert_int_equal(rq_daemon_beat(q, "b:2", 0), -1);
	raw_ok("DEL %s", RK_KEY_DAEMONS);
	rq_close(&q);
}

static void test_mark_polled(void **state)
{
	struct rq *q = queue_open();
	const char *u[] = {"pa", "pb", "pc"};
	long total = 0, same = 0;
	int64_t now;

	(void)state;
	now = now_ms(q);
	for (size_t i = 0; i < 3; i++)
		assert_int_equal(rq_poll_set(q, u[i], now + 3600000), 0);
	set_due("pa", RK_FOLDER_ALL, now - 5000);
	for (size_t i = 0; i < 3; i++)
		same += rk_shard(u[i]) == rk_shard("pb");
	assert_int_equal(rq_mark_polled(q, rk_shard("pb")), same);
	check_near("pb marked", score_of("due", "pb", RK_FOLDER_ALL), now);
	for (unsigned s = 0; s < RK_SHARDS; s++) {
		long n = rq_mark_polled(q, s);

		assert_true(n >= 0);
		total += n;
	}
	assert_int_equal(total, 3);
	assert_int_equal(score_of("due", "pa", RK_FOLDER_ALL), now - 5000);
	check_near("pc marked", score_of("due", "pc", RK_FOLDER_ALL), now);
	assert_int_equal(rq_mark_polled(q, RK_SHARDS), -1);
	rq_close(&q);
}

/* Routes as the daemon reads them: none is SRC; a freeze is a freeze while
 * its lease runs (or when it has none), and SRC once the lease of a freeze
 * from the source ended; one from the destination stays frozen. */
static void test_route_lease(void **state)
{
	struct rq *q = queue_open();
	enum rk_route_state st = RK_ROUTE_DST;
	int64_t now;

	(void)state;
	assert_int_equal(rq_now(q, &now), 0);
	assert_int_equal(rq_route_get(q, "rl", &st), 0);
	assert_int_equal(st, RK_ROUTE_SRC);
	raw_ok("HSET rep:route:rl state DST epoch 3");
	assert_int_equal(rq_route_get(q, "rl", &st), 0);
	assert_int_equal(st, RK_ROUTE_DST);
	raw_ok("HSET rep:route:rl state FREEZE epoch 4");
	assert_int_equal(rq_route_get(q, "rl", &st), 0);
	assert_int_equal(st, RK_ROUTE_FREEZE); /* no lease: set by hand */
	raw_ok("HSET rep:route:rl %s %lld %s SRC", RK_ROUTE_F_LEASE, (long long)(now + 60000),
	       RK_ROUTE_F_LEASE_TO);
	assert_int_equal(rq_route_get(q, "rl", &st), 0);
	assert_int_equal(st, RK_ROUTE_FREEZE);
	raw_ok("HSET rep:route:rl %s %lld", RK_ROUTE_F_LEASE, (long long)(now - 1000));
	assert_int_equal(rq_route_get(q, "rl", &st), 0);
	assert_int_equal(st, RK_ROUTE_SRC);
	raw_ok("HSET rep:route:rl %s DST", RK_ROUTE_F_LEASE_TO);
	assert_int_equal(rq_route_get(q, "rl", &st), 0);
	assert_int_equal(st, RK_ROUTE_FREEZE);
	raw_ok("HSET rep:route:rl state MOVED");
	assert_int_equal(rq_route_get(q, "rl", &st), -1);
	raw_ok("DEL rep:route:rl");
	rq_close(&q);
}

static void test_poll(void **state)
{
	struct rq *q = queue_open(), *q2 = queue_open();
	char **users = NULL;
	size_t n = 0;
	int64_t now = now_ms(q);
	/* Three users of one shard. */
	const char *u[3] = {NULL, NULL, NULL};
	char names[3][16];
	int i, found = 0;

	(void)state;
	for (i = 0; found < 3 && i < 1000; i++) {
		snprintf(names[found], sizeof(names[found]), "p%d", i);
		if (rk_shard(names[found]) == 5) {
			u[found] = names[found];
			found++;
		}
	}
	assert_int_equal(found, 3);
	assert_int_equal(rq_poll_set(q, u[0], now - 2000), 0);
	assert_int_equal(rq_poll_set(q, u[1], now - 1000), 0);
	assert_int_equal(rq_poll_set(q, u[2], now + 60000), 0);
	assert_int_equal(rq_poll_due(q, 5, 10, 30000, &users, &n), 0);
	assert_int_equal(n, 2);
	assert_string_equal(users[0], u[0]);
	assert_string_equal(users[1], u[1]);
	rq_users_free(&users, n);
	assert_null(users);
	/* Leased: another daemon does not get them too. */
	assert_int_equal(rq_poll_due(q2, 5, 10, 30000, &users, &n), 0);
	assert_int_equal(n, 0);
	assert_null(users);
	/* The sweep is done: next poll in the past again, lease 0 leaves it. */
	assert_int_equal(rq_poll_set(q, u[0], now - 1), 0);
	assert_int_equal(rq_poll_due(q2, 5, 1, 0, &users, &n), 0);
	assert_int_equal(n, 1);
	assert_string_equal(users[0], u[0]);
	rq_users_free(&users, n);
	assert_int_equal(rq_poll_due(q2, 5, 1, 0, &users, &n), 0);
	assert_int_equal(n, 1);
	rq_users_free(&users, n);
	assert_int_equal(rq_poll_remove(q, u[0]), 0);
	assert_int_equal(rq_poll_due(q2, 5, 10, 0, &users, &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(rq_poll_due(q2, RK_SHARDS, 10, 0, &users, &n), -1);
	/* sooner only moves earlier: u[2] (due in 60 s) is not postponed to 120 s,
	 * then brought forward to now */
	assert_int_equal(rq_poll_sooner(q, u[2], now + 120000), 0);
	assert_int_equal(rq_poll_due(q2, 5, 10, 0, &users, &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(rq_poll_sooner(q, u[2], now - 1), 0);
	assert_int_equal(rq_poll_due(q2, 5, 10, 0, &users, &n), 0);
	assert_int_equal(n, 1);
	assert_string_equal(users[0], u[2]);
	rq_users_free(&users, n);
	assert_int_equal(rq_poll_set(q, "", 0), -1);
	rq_close(&q);
	rq_close(&q2);
}

/* ---- Redis going away ---- */

static void test_redis_restart(void **state)
{
	struct rq *q = queue_open();
	struct rq_item *items = NULL;
	size_t n = 0;
	const unsigned shard = rk_shard("jon");
	const char *err = NULL;
	int64_t v = 0;

	(void)state;
	assert_int_equal(rq_mark(q, "jon", "INBOX", 0), 0);

	/* Restarted between two calls (data lost, scripts gone): the next
	 * call reconnects and reloads the script by itself. */
	ferry_redis_stop(&srv);
	assert_int_equal(ferry_redis_start(&srv, srv.port), 0);
	raw_open();
	assert_int_equal(rq_mark(q, "jon", "INBOX", 0), 0);
	assert_int_equal(rq_claim(q, shard, "w1", 10, LEASE_MS, &items, &n), 0);
	assert_int_equal(n, 1);
	rq_items_free(&items, n);
	/* Also for a command that is never sent twice. */
	raw_ok("SET %s 7", RK_KEY_SWEEP_ALL);
	ferry_redis_stop(&srv);
	assert_int_equal(ferry_redis_start(&srv, srv.port), 0);
	raw_open();
	raw_ok("SET %s 8", RK_KEY_SWEEP_ALL);
	assert_int_equal(rq_sweep_all_take(q, &v), 1);
	assert_int_equal(v, 8);

	/* Down: calls fail with a message, and work again once it is back. */
	ferry_redis_stop(&srv);
	assert_int_equal(rq_mark(q, "jon", "Sent", 0), -1);
	assert_true(rq_error(q)[0] != '\0');
	assert_int_equal(rq_claim(q, shard, "w1", 10, LEASE_MS, &items, &n), -1);
	assert_int_equal(n, 0);
	assert_null(rq_open("127.0.0.1", srv.port, NULL, 500, &err));
	assert_non_null(err);
	assert_true(err[0] != '\0');
	assert_int_equal(ferry_redis_start(&srv, srv.port), 0);
	raw_open();
	assert_int_equal(rq_mark(q, "jon", "Sent", 0), 0);
	assert_int_equal(rq_claim(q, shard, "w1", 10, LEASE_MS, &items, &n), 0);
	assert_int_equal(n, 1);
	assert_string_equal(items[0].folder, "Sent");
	assert_int_equal(rq_finish(q, &items[0], "Sent", "s"), 1);
	rq_items_free(&items, n);

	/* The server closes an idle connection (CLIENT KILL): reconnected. */
	raw_ok("CLIENT KILL TYPE normal SKIPME yes");
	usleep(20000);
	assert_int_equal(rq_mark(q, "jon", "Drafts", 0), 0);
	assert_true(score_of("due", "jon", "Drafts") > 0);
	{
		struct rq_stats st;

		raw_ok("CLIENT KILL TYPE normal SKIPME yes");
		usleep(20000);
		assert_int_equal(rq_stats(q, &st), 0);
		assert_int_equal(st.due, 1);
		raw_ok("CLIENT KILL TYPE normal SKIPME yes");
		usleep(20000);
		assert_int_equal(rq_sweep_all_take(q, &v), 0);
	}
	rq_close(&q);
}

static void test_noscript(void **state)
{
	struct rq *q = queue_open();
	struct rq_item *items = NULL;
	size_t n = 0;
	const unsigned shard = rk_shard("kim");
	unsigned reaped;
	char **users = NULL;

	(void)state;
	/* Load every script once, then flush them all. */
	assert_int_equal(rq_mark(q, "kim", "INBOX", 0), 0);
	assert_int_equal(rq_claim(q, shard, "w1", 10, LEASE_MS, &items, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(rq_renew(q, &items[0], LEASE_MS), 1);
	assert_int_equal(rq_reap(q, shard, &reaped), 0);
	assert_int_equal(rq_poll_due(q, shard, 1, 0, &users, &n), 0);
	assert_int_equal(rq_retry(q, &items[0], 0), 1);
	rq_items_free(&items, 1);
	raw_ok("SCRIPT FLUSH");
	assert_int_equal(rq_claim(q, shard, "w1", 10, LEASE_MS, &items, &n), 0);
	assert_int_equal(n, 1);
	raw_ok("SCRIPT FLUSH");
	assert_int_equal(rq_renew(q, &items[0], LEASE_MS), 1);
	raw_ok("SCRIPT FLUSH");
	assert_int_equal(rq_reap(q, shard, &reaped), 0);
	raw_ok("SCRIPT FLUSH");
	assert_int_equal(rq_mark(q, "kim", "INBOX", 0), 0);
	raw_ok("SCRIPT FLUSH");
	assert_int_equal(rq_poll_due(q, shard, 1, 0, &users, &n), 0);
	raw_ok("SCRIPT FLUSH");
	assert_int_equal(rq_finish(q, &items[0], "INBOX", "ok"), 1);
	raw_ok("SCRIPT FLUSH");
	rq_items_free(&items, 1);
	/* The mark made while it was in flight. */
	assert_int_equal(rq_claim(q, shard, "w1", 10, LEASE_MS, &items, &n), 0);
	assert_int_equal(n, 1);
	raw_ok("SCRIPT FLUSH");
	assert_int_equal(rq_retry(q, &items[0], 0), 1);
	rq_items_free(&items, n);
	rq_close(&q);
}

/* ---- names ---- */

/* Users and folders with what IMAP names can hold: tabs (in folders),
 * quotes, spaces, UTF-8, CR LF, braces, backslashes, percent signs. */
static void test_names_roundtrip(void **state)
{
	static const char *const pairs[][2] = {
	        {"j\xc3\xa9r\xc3\xb4me", "Entw\xc3\xbcrfe"},
	        {"ann", "a\tb\tc"},
	        {"o'brien \"x\"", "Quoted \"x\" 'y'"},
	        {"with space", "with  two  spaces "},
	        {"lit", "{3}\r\nabc"},
	        {"back\\slash", "\\Noselect %s %d"},
	        {"\xe4\xb8\xad\xe6\x96\x87", "\xf0\x9f\x93\xa7 Mail"},
	        {"star", RK_FOLDER_ALL},
	};
	const size_t npairs = sizeof(pairs) / sizeof(pairs[0]);
	struct rq *q = queue_open();
	struct rq_item *items = NULL;
	size_t n = 0, i, j;
	int seen[16];
	char buf[128], key[64];
	unsigned s;

	(void)state;
	memset(seen, 0, sizeof(seen));
	for (i = 0; i < npairs; i++)
		assert_int_equal(rq_mark(q, pairs[i][0], pairs[i][1], 0), 0);
	/* Members no writer should make are dropped by the claim. */
	rk_key_due(key, sizeof(key), 3);
	raw_ok("ZADD %s 0 notab 0 %b 0 %b", key, "\tx", (size_t)2, "x\t", (size_t)2);
	raw_ok("ZADD %s 0 %b", key, "nul\t\0x", (size_t)6);
	for (s = 0; s < RK_SHARDS; s++) {
		assert_int_equal(rq_claim(q, s, "w1", 100, LEASE_MS, &items, &n), 0);
		for (j = 0; j < n; j++) {
			for (i = 0; i < npairs; i++) {
				if (strcmp(items[j].user, pairs[i][0]) == 0 &&
				    strcmp(items[j].folder, pairs[i][1]) == 0)
					break;
			}
			if (i == npairs)
				fail_msg("claimed an unknown item: user \"%s\" folder \"%s\"",
				         items[j].user, items[j].folder);
			assert_int_equal(items[j].shard, rk_shard(items[j].user));
			assert_int_equal(items[j].member_len,
			                 strlen(items[j].user) + 1 + strlen(items[j].folder));
			seen[i]++;
			/* The folder as a state field, binary-safe too. */
			assert_int_equal(rq_finish(q, &items[j], items[j].folder, items[j].user),
			                 1);
			assert_int_equal(state_get(pairs[i][0], pairs[i][1], buf, sizeof(buf)), 0);
			assert_string_equal(buf, pairs[i][0]);
		}
		rq_items_free(&items, n);
	}
	for (i = 0; i < npairs; i++)
		assert_int_equal(seen[i], 1);
	assert_int_equal(raw_int("ZCARD %s", key), 0); /* the bad ones are gone */
	assert_int_equal(total_card("inflight"), 0);
	rq_close(&q);
}

/* rq_is_cluster(): 0 on this test's standalone redis-server, and a
 * standalone Redis is one node whatever the keys (test_redis_cluster.py
 * covers a cluster). */
static void test_not_cluster(void **state)
{
	struct rq *q = queue_open();
	struct rq_stats st;

	(void)state;
	assert_int_equal(rq_is_cluster(q), 0);
	assert_int_equal(rq_stats(q, &st), 0);
	assert_int_equal(rq_mark(q, "bob", "INBOX", 0), 0);
	assert_int_equal(rq_nodes(q), 1);
	assert_int_equal(rq_connects(q), 1);
	rq_close(&q);
}

static void test_open_errors(void **state)
{
	const char *err = NULL;
	int port = ferry_redis_free_port();

	(void)state;
	assert_null(rq_open("127.0.0.1", port, NULL, 500, &err));
	assert_non_null(strstr(err, "redis 127.0.0.1:"));
	assert_null(rq_open(NULL, 0, "/nonexistent/redis.sock", 500, &err));
	assert_non_null(strstr(err, "/nonexistent/redis.sock"));
	assert_null(rq_open("127.0.0.1", srv.port, NULL, 0, &err));
	assert_string_equal(rq_error(NULL), "no queue");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test_setup(test_claim_order, setup),
	        cmocka_unit_test_setup(test_mark_lt, setup),
	        cmocka_unit_test_setup(test_mark_during_sync, setup),
	        cmocka_unit_test_setup(test_two_workers, setup),
	        cmocka_unit_test_setup(test_two_workers_threads, setup),
	        cmocka_unit_test_setup(test_renew_stale, setup),
	        cmocka_unit_test_setup(test_reap_fence, setup),
	        cmocka_unit_test_setup(test_retry, setup),
	        cmocka_unit_test_setup(test_move_wait, setup),
	        cmocka_unit_test_setup(test_claim_any, setup),
	        cmocka_unit_test_setup(test_stats, setup),
	        cmocka_unit_test_setup(test_sweep_all, setup),
	        cmocka_unit_test_setup(test_mark_polled, setup),
	        cmocka_unit_test_setup(test_full_due, setup),
	        cmocka_unit_test_setup(test_daemon_beat, setup),
	        cmocka_unit_test_setup(test_poll, setup),
	        cmocka_unit_test_setup(test_route_lease, setup),
	        cmocka_unit_test_setup(test_redis_restart, setup),
	        cmocka_unit_test_setup(test_noscript, setup),
	        cmocka_unit_test_setup(test_names_roundtrip, setup),
	        cmocka_unit_test_setup(test_not_cluster, setup),
	        cmocka_unit_test_setup(test_open_errors, setup),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
