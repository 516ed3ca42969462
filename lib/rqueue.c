/* rqueue.c - see include/imapferry/rqueue.h */
#include "imapferry/rqueue.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <hiredis/hiredis.h>

#include "imapferry/rkeys.h"
#include "imapferry/rnodes.h"

#define RQ_KEY_MAX   64   /* a shard key ("rep:{15}:inflight") */
#define RQ_ARGV_MAX  12   /* arguments of the longest script call */
#define RQ_NUM_MAX   24   /* a decimal int64 */
#define RQ_SCAN_MORE 256u /* due members a claim may look at beyond max */

/* ---- the scripts ---- */

/*
 * Every script reads the time from Redis (TIME: seconds, microseconds) so the
 * clocks of the workers do not matter. Numbers handed to redis.call() are
 * converted by Redis without loss for integers below 2^53; string.format
 * "%d" keeps integers exact where Lua's own number-to-string would round.
 * Redis >= 5 replicates a script's effects, so TIME before writes is allowed.
 */
#define LUA_NOW                                                                                    \
	"local t = redis.call('TIME')\n"                                                           \
	"local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"

enum rq_script_id {
	RQ_S_CLAIM,
	RQ_S_RENEW,
	RQ_S_FINISH,
	RQ_S_RETRY,
	RQ_S_REAP,
	RQ_S_MARK,
	RQ_S_POLL,
	RQ_S_MARK_POLLED,
	RQ_S_LAST_OK,
	RQ_S_LAST_ERR,
	RQ_S_LAST_FULL,
	RQ_S_FULL_DUE,
	RQ_S_BEAT,
	RQ_S_MOVE_WAIT,
	RQ_S_COUNT
};

struct rq {
	struct rnodes *rn;        /* one Redis, or the nodes of a Redis Cluster */
	unsigned rr;              /* rq_claim_any()'s next shard */
	int rr_set;               /* rr was seeded from a worker name */
	char sha[RQ_S_COUNT][41]; /* SCRIPT LOAD results, by enum rq_script_id */
	char err[RQ_ERROR_MAX];
};

static const char *const rq_scripts[RQ_S_COUNT] = {
        /* claim. KEYS: due, inflight, owner, fence. ARGV: max, lease ms,
         * worker, pushback ms, scan budget. A due member in flight stays
         * due but moves out of the range (plain ZADD: later), so the next
         * ZRANGEBYSCORE finds other members; members that cannot split into
         * user and folder (no tab, an empty side, a NUL) are dropped. Returns
         * {now, member, owner, due score, token, ...}. */
        [RQ_S_CLAIM] = LUA_NOW
        "local max, lease = tonumber(ARGV[1]), tonumber(ARGV[2])\n"
        "local push, budget = tonumber(ARGV[4]), tonumber(ARGV[5])\n"
        "local out, got, looked = {now}, 0, 0\n"
        "while got < max and looked < budget do\n"
        "  local want = math.min(max - got, budget - looked)\n"
        "  local batch = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES',\n"
        "                           'LIMIT', 0, want)\n"
        "  if #batch == 0 then break end\n"
        "  for i = 1, #batch, 2 do\n"
        "    local m = batch[i]\n"
        "    looked = looked + 1\n"
        "    if redis.call('ZSCORE', KEYS[2], m) then\n"
        "      redis.call('ZADD', KEYS[1], now + push, m)\n"
        "    else\n"
        "      redis.call('ZREM', KEYS[1], m)\n"
        "      local tab = string.find(m, '\\t', 1, true)\n"
        "      if tab and tab > 1 and tab < #m and not string.find(m, '\\0', 1, true) then\n"
        "        local tok = redis.call('INCR', KEYS[4])\n"
        "        local owner = string.format('%s:%d', ARGV[3], tok)\n"
        "        redis.call('ZADD', KEYS[2], now + lease, m)\n"
        "        redis.call('HSET', KEYS[3], m, owner)\n"
        "        out[#out + 1] = m\n"
        "        out[#out + 1] = owner\n"
        "        out[#out + 1] = batch[i + 1]\n"
        "        out[#out + 1] = tok\n"
        "        got = got + 1\n"
        "      end\n"
        "    end\n"
        "  end\n"
        "end\n"
        "return out\n",

        /* renew. KEYS: inflight, owner. ARGV: member, owner, lease ms. */
        [RQ_S_RENEW] = "if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then return 0 end\n"
                       "if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end\n" LUA_NOW
                       "redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[3]), ARGV[1])\n"
                       "return 1\n",

        /* finish. KEYS: inflight, owner, state. ARGV: member, owner, mode
         * ("" nothing, "s" set, "d" delete), field, value. */
        [RQ_S_FINISH] = "if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then return 0 end\n"
                        "if ARGV[3] == 's' then\n"
                        "  redis.call('HSET', KEYS[3], ARGV[4], ARGV[5])\n"
                        "elseif ARGV[3] == 'd' then\n"
                        "  redis.call('HDEL', KEYS[3], ARGV[4])\n"
                        "end\n"
                        "redis.call('ZREM', KEYS[1], ARGV[1])\n"
                        "redis.call('HDEL', KEYS[2], ARGV[1])\n"
                        "return 1\n",

        /* retry. KEYS: due, inflight, owner. ARGV: member, owner, delay ms. */
        [RQ_S_RETRY] =
                "if redis.call('HGET', KEYS[3], ARGV[1]) ~= ARGV[2] then return 0 end\n" LUA_NOW
                "redis.call('ZREM', KEYS[2], ARGV[1])\n"
                "redis.call('HDEL', KEYS[3], ARGV[1])\n"
                "redis.call('ZADD', KEYS[1], 'LT', now + tonumber(ARGV[3]), ARGV[1])\n"
                "return 1\n",

        /* move wait. KEYS: hint, inflight. ARGV: user, folder. 1 when a
         * move hint names folder as its source and the target's member is
         * in flight. Only in flight, never due: a waiting member is due
         * (put back), so two folders moving into each other never wait
         * for each other. */
        [RQ_S_MOVE_WAIT] = "local pre = 'move\\t' .. ARGV[2] .. '\\t'\n"
                           "for _, h in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do\n"
                           "  local e = string.find(h, '\\t', #pre + 1, true)\n"
                           "  if string.sub(h, 1, #pre) == pre and e then\n"
                           "    local to = string.sub(h, #pre + 1, e - 1)\n"
                           "    local m = ARGV[1] .. '\\t' .. to\n"
                           "    if to ~= ARGV[2] then\n"
                           "      if redis.call('ZSCORE', KEYS[2], m) then return 1 end\n"
                           "    end\n"
                           "  end\n"
                           "end\n"
                           "return 0\n",

        /* reap. KEYS: due, inflight, owner. ARGV: batch. Leases that ended
         * before now (score < now). */
        [RQ_S_REAP] = LUA_NOW
        "local exp = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', string.format('(%d', now),\n"
        "                       'LIMIT', 0, tonumber(ARGV[1]))\n"
        "for _, m in ipairs(exp) do\n"
        "  redis.call('ZADD', KEYS[1], 'LT', now, m)\n"
        "  redis.call('ZREM', KEYS[2], m)\n"
        "  redis.call('HDEL', KEYS[3], m)\n"
        "end\n"
        "return #exp\n",

        /* mark. KEYS: due. ARGV: member, delay ms. */
        [RQ_S_MARK] = LUA_NOW "redis.call('ZADD', KEYS[1], 'LT', now + tonumber(ARGV[2]), "
                              "ARGV[1])\n"
                              "return now\n",

        /* poll. KEYS: poll. ARGV: max, lease ms (0: leave them). */
        [RQ_S_POLL] = LUA_NOW
        "local lease = tonumber(ARGV[2])\n"
        "local u = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0,\n"
        "                     tonumber(ARGV[1]))\n"
        "if lease > 0 then\n"
        "  for _, m in ipairs(u) do redis.call('ZADD', KEYS[1], now + lease, m) end\n"
        "end\n"
        "return u\n",

        /* mark polled. KEYS: poll, due. Every user of the poll set gets a
         * whole-user mark due now (LT: an earlier one stays). Returns the
         * count. */
        [RQ_S_MARK_POLLED] = LUA_NOW "local n = 0\n"
                                     "for _, u in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do\n"
                                     "  redis.call('ZADD', KEYS[2], 'LT', now, u .. '\\t*')\n"
                                     "  n = n + 1\n"
                                     "end\n"
                                     "return n\n",

        /* last sync of a user. KEYS: last. ARGV: by. */
        [RQ_S_LAST_OK] = LUA_NOW "redis.call('HSET', KEYS[1], 'ok_ms', now, 'ok_by', ARGV[1])\n"
                                 "return 1\n",

        /* last full check of a user. KEYS: last. */
        [RQ_S_LAST_FULL] = LUA_NOW "redis.call('HSET', KEYS[1], 'full_ms', now)\n"
                                   "return 1\n",

        /* a daemon's heartbeat. KEYS: daemons. ARGV: id, ttl ms. Drops the
         * daemons whose heartbeat ended; returns how many are alive. */
        [RQ_S_BEAT] = LUA_NOW "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)\n"
                              "redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])\n"
                              "return redis.call('ZCARD', KEYS[1])\n",

        /* is a full check due? KEYS: last. ARGV: interval ms. The clock
         * starts at the first question (full_from_ms); a yes restarts it
         * at once, so two daemons never both start one. */
        [RQ_S_FULL_DUE] = LUA_NOW
        "local a = tonumber(redis.call('HGET', KEYS[1], 'full_ms') or '') or 0\n"
        "local b = tonumber(redis.call('HGET', KEYS[1], 'full_from_ms') or '') or 0\n"
        "local last = math.max(a, b)\n"
        "if last > 0 and now - last < tonumber(ARGV[1]) then return 0 end\n"
        "redis.call('HSET', KEYS[1], 'full_from_ms', now)\n"
        "if last == 0 then return 0 end\n"
        "return 1\n",

        /* last error of a user. KEYS: last. ARGV: by, error. */
        [RQ_S_LAST_ERR] = LUA_NOW
        "redis.call('HSET', KEYS[1], 'err_ms', now, 'err_by', ARGV[1], 'err', ARGV[2])\n"
        "return 1\n",
};
_Static_assert(sizeof(rq_scripts) / sizeof(rq_scripts[0]) == RQ_S_COUNT, "one body per script");

/* ---- errors and the connection ---- */

static void rq_set_error(struct rq *q, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void rq_set_error(struct rq *q, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(q->err, sizeof(q->err), fmt, ap);
	va_end(ap);
}

const char *rq_error(const struct rq *q)
{
	return q != NULL ? q->err : "no queue";
}

static redisReply *rq_cmd_at(struct rq *q, unsigned slot, int argc, const char **argv,
                             const size_t *lens, int resend);

int rq_is_cluster(struct rq *q)
{
	const char *argv[2] = {"INFO", "cluster"};
	redisReply *r = rq_cmd_at(q, 0, 2, argv, NULL, 1);
	int v;

	if (r == NULL)
		return -1;
	if (r->type != REDIS_REPLY_STRING) {
		rq_set_error(q, "redis: INFO cluster: %s",
		             r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
		freeReplyObject(r);
		return -1;
	}
	v = strstr(r->str, "cluster_enabled:1") != NULL;
	freeReplyObject(r);
	return v;
}

unsigned long rq_connects(const struct rq *q)
{
	return rn_connects(q->rn);
}

unsigned rq_nodes(const struct rq *q)
{
	return rn_nodes(q->rn);
}

struct rq *rq_open(const char *host, int port, const char *unix_path, unsigned timeout_ms,
                   const char **error_r)
{
	struct rq *q;

	if ((unix_path == NULL && host == NULL) || timeout_ms == 0) {
		*error_r = "redis: no address or no timeout";
		return NULL;
	}
	q = calloc(1, sizeof(*q));
	if (q == NULL) {
		*error_r = "redis: out of memory";
		return NULL;
	}
	if ((q->rn = rn_open(host, port, unix_path, timeout_ms, error_r)) == NULL) {
		free(q);
		return NULL;
	}
	return q;
}

void rq_close(struct rq **q)
{
	if (q == NULL || *q == NULL)
		return;
	rn_close(&(*q)->rn);
	free(*q);
	*q = NULL;
}

/*
 * One command, one reply, sent to the node serving slot (rnodes.h: a
 * cluster's redirections are followed). A connection found broken before
 * sending is reopened; after an I/O error on the command itself (the server
 * may or may not have run it) the command is sent once more on a new
 * connection only when resend is nonzero. Returns the reply (caller frees;
 * may be an error reply) or NULL with the error set.
 */
static redisReply *rq_cmd_at(struct rq *q, unsigned slot, int argc, const char **argv,
                             const size_t *lens, int resend)
{
	redisReply *r = rn_command_argv(q->rn, slot, argc, argv, lens, resend);

	if (r == NULL)
		rq_set_error(q, "%s", rn_error(q->rn));
	return r;
}

/* rq_cmd_at() for the slot of the command's first key: argv[3] for EVAL and
 * EVALSHA with keys, argv[1] for the rest; commands without keys (TIME,
 * SCRIPT LOAD) go to any node (slot 0's). */
static redisReply *rq_cmd(struct rq *q, int argc, const char **argv, const size_t *lens, int resend)
{
	unsigned slot = 0;
	int k = -1;

	if (strcmp(argv[0], "EVAL") == 0 || strcmp(argv[0], "EVALSHA") == 0) {
		if (argc > 3 && strcmp(argv[2], "0") != 0)
			k = 3;
	} else if (argc > 1 && strcmp(argv[0], "SCRIPT") != 0) {
		k = 1;
	}
	if (k >= 0)
		slot = rk_key_slot(argv[k], lens != NULL ? lens[k] : strlen(argv[k]));
	return rq_cmd_at(q, slot, argc, argv, lens, resend);
}

/* Frees r and returns -1 when it is an error reply (the error is set). */
static int rq_reply_check(struct rq *q, redisReply *r, const char *what)
{
	if (r->type != REDIS_REPLY_ERROR)
		return 0;
	rq_set_error(q, "redis: %s: %.*s", what, (int)(r->len < 200 ? r->len : 200), r->str);
	freeReplyObject(r);
	return -1;
}

static int rq_bad_reply(struct rq *q, redisReply *r, const char *what)
{
	rq_set_error(q, "redis: unexpected reply to %s (type %d)", what, r->type);
	freeReplyObject(r);
	return -1;
}

/*
 * Runs script id with nkeys keys then the arguments, all in args/lens
 * (nargs in all). EVALSHA with the SHA1 SCRIPT LOAD returned (loaded on
 * first use); after NOSCRIPT (a restarted or flushed Redis, another cluster
 * node) EVAL sends the body, which also caches it again. Returns the reply
 * (caller frees), or NULL with the error set; error replies are turned into
 * NULL too.
 */
static redisReply *rq_eval(struct rq *q, enum rq_script_id id, int nkeys, int nargs,
                           const char **args, const size_t *lens, int resend)
{
	const char *argv[RQ_ARGV_MAX + 3];
	size_t argl[RQ_ARGV_MAX + 3];
	char nk[RQ_NUM_MAX];
	redisReply *r;
	int i;

	if (nargs > RQ_ARGV_MAX) {
		rq_set_error(q, "redis: too many script arguments");
		return NULL;
	}
	if (q->sha[id][0] == '\0') {
		argv[0] = "SCRIPT";
		argv[1] = "LOAD";
		argv[2] = rq_scripts[id];
		for (i = 0; i < 3; i++)
			argl[i] = strlen(argv[i]);
		r = rq_cmd(q, 3, argv, argl, 1);
		if (r == NULL || rq_reply_check(q, r, "SCRIPT LOAD") < 0)
			return NULL;
		if (r->type != REDIS_REPLY_STRING || r->len != 40) {
			rq_bad_reply(q, r, "SCRIPT LOAD");
			return NULL;
		}
		memcpy(q->sha[id], r->str, 40);
		q->sha[id][40] = '\0';
		freeReplyObject(r);
	}
	snprintf(nk, sizeof(nk), "%d", nkeys);
	argv[0] = "EVALSHA";
	argl[0] = 7;
	argv[1] = q->sha[id];
	argl[1] = 40;
	argv[2] = nk;
	argl[2] = strlen(nk);
	for (i = 0; i < nargs; i++) {
		argv[3 + i] = args[i];
		argl[3 + i] = lens != NULL ? lens[i] : strlen(args[i]);
	}
	r = rq_cmd(q, 3 + nargs, argv, argl, resend);
	if (r != NULL && r->type == REDIS_REPLY_ERROR && r->len >= 8 &&
	    memcmp(r->str, "NOSCRIPT", 8) == 0) {
		/* Not run: sending it again cannot run it twice. */
		freeReplyObject(r);
		argv[0] = "EVAL";
		argl[0] = 4;
		argv[1] = rq_scripts[id];
		argl[1] = strlen(rq_scripts[id]);
		r = rq_cmd(q, 3 + nargs, argv, argl, resend);
	}
	if (r == NULL || rq_reply_check(q, r, "script") < 0)
		return NULL;
	return r;
}

/* An integer reply's value into *v_r; frees r. 0 or -1. */
static int rq_reply_int(struct rq *q, redisReply *r, const char *what, long long *v_r)
{
	if (r->type != REDIS_REPLY_INTEGER)
		return rq_bad_reply(q, r, what);
	*v_r = r->integer;
	freeReplyObject(r);
	return 0;
}

/* A decimal number (an integer, or a ZSET score as Redis prints it) as an
 * int64; 0 when it is not one. */
static int64_t rq_parse_i64(const char *s, size_t len)
{
	char buf[64];
	char *end;
	double d;

	if (len == 0 || len >= sizeof(buf))
		return 0;
	memcpy(buf, s, len);
	buf[len] = '\0';
	errno = 0;
	d = strtod(buf, &end);
	if (end == buf || *end != '\0' || errno != 0 || !(d > -9.2e18 && d < 9.2e18))
		return 0;
	return (int64_t)(d < 0 ? d - 0.5 : d + 0.5); /* no libm for llround() */
}

/* ---- argument checks and keys ---- */

static int rq_check_shard(struct rq *q, unsigned shard)
{
	if (shard < RK_SHARDS)
		return 0;
	rq_set_error(q, "redis: shard %u out of range", shard);
	return -1;
}

static int rq_check_worker(struct rq *q, const char *worker)
{
	size_t len = worker != NULL ? strlen(worker) : 0;

	if (len > 0 && len <= RQ_WORKER_MAX)
		return 0;
	rq_set_error(q, "redis: worker name empty or longer than %u bytes", RQ_WORKER_MAX);
	return -1;
}

static int rq_check_item(struct rq *q, const struct rq_item *item)
{
	if (item != NULL && item->member != NULL && item->owner != NULL && item->shard < RK_SHARDS)
		return 0;
	rq_set_error(q, "redis: not a claimed item");
	return -1;
}

/* The shard keys into k[0..n) (RQ_KEY_MAX bytes each), in the order given
 * by the builders. */
typedef int rq_key_fn(char *buf, size_t size, unsigned shard);

static void rq_keys(char (*k)[RQ_KEY_MAX], unsigned shard, size_t n, rq_key_fn *const *fns)
{
	size_t i;

	for (i = 0; i < n; i++)
		fns[i](k[i], RQ_KEY_MAX, shard);
}

/* rep:{s}:st:<user>; caller frees. NULL on allocation failure. */
static char *rq_key_state_new(const char *user)
{
	size_t size = strlen(user) + RQ_KEY_MAX;
	char *k = malloc(size);

	if (k != NULL && rk_key_state(k, size, user) < 0) {
		free(k);
		k = NULL;
	}
	return k;
}

/* ---- claim ---- */

struct rq_vec {
	struct rq_item *items;
	size_t n, cap;
};

/* Appends one claimed item (storage: one block holding member, user, folder
 * and owner). 0 or -1. */
static int rq_vec_add(struct rq_vec *v, const redisReply *m, const redisReply *owner,
                      int64_t due_ms, uint64_t token, unsigned shard, int64_t now_ms)
{
	const char *user, *folder;
	size_t ulen, flen;
	struct rq_item *it;
	char *p;

	if (rk_member_split(m->str, m->len, &user, &ulen, &folder, &flen) < 0)
		return -1;
	if (v->n == v->cap) {
		size_t cap = v->cap != 0 ? v->cap * 2 : 16;
		struct rq_item *n = realloc(v->items, cap * sizeof(*n));

		if (n == NULL)
			return -1;
		v->items = n;
		v->cap = cap;
	}
	p = malloc(m->len + 1 + ulen + 1 + flen + 1 + owner->len + 1);
	if (p == NULL)
		return -1;
	it = &v->items[v->n];
	memset(it, 0, sizeof(*it));
	it->member = p;
	it->member_len = m->len;
	memcpy(p, m->str, m->len);
	p += m->len;
	*p++ = '\0';
	it->user = p;
	memcpy(p, user, ulen);
	p += ulen;
	*p++ = '\0';
	it->folder = p;
	memcpy(p, folder, flen);
	p += flen;
	*p++ = '\0';
	it->owner = p;
	memcpy(p, owner->str, owner->len);
	p[owner->len] = '\0';
	it->shard = shard;
	it->token = token;
	it->due_ms = due_ms;
	it->claimed_ms = now_ms;
	v->n++;
	return 0;
}

/* One shard's claim, appended to v. Returns the number claimed, or -1. */
static int rq_claim_vec(struct rq *q, unsigned shard, const char *worker, unsigned max,
                        unsigned lease_ms, struct rq_vec *v)
{
	static rq_key_fn *const fns[] = {rk_key_due, rk_key_inflight, rk_key_owner, rk_key_fence};
	char k[4][RQ_KEY_MAX], smax[RQ_NUM_MAX], slease[RQ_NUM_MAX], spush[RQ_NUM_MAX],
	        sbudget[RQ_NUM_MAX];
	const char *args[9];
	redisReply *r;
	int64_t now;
	size_t i;
	int got = 0;

	if (rq_check_shard(q, shard) < 0 || rq_check_worker(q, worker) < 0)
		return -1;
	if (max == 0 || max > RQ_CLAIM_MAX || lease_ms == 0) {
		rq_set_error(q, "redis: claim of %u items (1..%u) with a lease of %u ms", max,
		             RQ_CLAIM_MAX, lease_ms);
		return -1;
	}
	rq_keys(k, shard, 4, fns);
	snprintf(smax, sizeof(smax), "%u", max);
	snprintf(slease, sizeof(slease), "%u", lease_ms);
	snprintf(spush, sizeof(spush), "%u", RQ_PUSHBACK_MS);
	snprintf(sbudget, sizeof(sbudget), "%u", max + RQ_SCAN_MORE);
	args[0] = k[0];
	args[1] = k[1];
	args[2] = k[2];
	args[3] = k[3];
	args[4] = smax;
	args[5] = slease;
	args[6] = worker;
	args[7] = spush;
	args[8] = sbudget;
	/* Sent again after an I/O error: what a lost reply claimed is reaped. */
	r = rq_eval(q, RQ_S_CLAIM, 4, 9, args, NULL, 1);
	if (r == NULL)
		return -1;
	if (r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
	    r->element[0]->type != REDIS_REPLY_INTEGER || (r->elements - 1) % 4 != 0)
		return rq_bad_reply(q, r, "claim");
	now = r->element[0]->integer;
	for (i = 1; i < r->elements; i += 4) {
		const redisReply *m = r->element[i], *owner = r->element[i + 1],
		                 *score = r->element[i + 2], *tok = r->element[i + 3];

		if (m->type != REDIS_REPLY_STRING || owner->type != REDIS_REPLY_STRING ||
		    score->type != REDIS_REPLY_STRING || tok->type != REDIS_REPLY_INTEGER)
			return rq_bad_reply(q, r, "claim");
		if (rq_vec_add(v, m, owner, rq_parse_i64(score->str, score->len),
		               (uint64_t)tok->integer, shard, now) < 0) {
			/* Out of memory: the rest stays claimed until reaped. */
			rq_set_error(q, "redis: out of memory (or a bad member) while claiming");
			freeReplyObject(r);
			return -1;
		}
		got++;
	}
	freeReplyObject(r);
	return got;
}

int rq_claim(struct rq *q, unsigned shard, const char *worker, unsigned max, unsigned lease_ms,
             struct rq_item **items_r, size_t *n_r)
{
	struct rq_vec v = {NULL, 0, 0};
	int rc = rq_claim_vec(q, shard, worker, max, lease_ms, &v);

	*items_r = v.items;
	*n_r = v.n;
	return rc < 0 ? -1 : 0;
}

int rq_claim_any(struct rq *q, const char *worker, unsigned max, unsigned lease_ms,
                 struct rq_item **items_r, size_t *n_r)
{
	struct rq_vec v = {NULL, 0, 0};
	unsigned i, start;
	int rc = 0;

	*items_r = NULL;
	*n_r = 0;
	if (rq_check_worker(q, worker) < 0)
		return -1;
	if (!q->rr_set) {
		q->rr = rk_crc16(worker, strlen(worker)) % RK_SHARDS;
		q->rr_set = 1;
	}
	start = q->rr;
	for (i = 0; i < RK_SHARDS && v.n < max; i++) {
		unsigned shard = (start + i) % RK_SHARDS;
		int got = rq_claim_vec(q, shard, worker, max - (unsigned)v.n, lease_ms, &v);

		if (got < 0) {
			rc = -1;
			break;
		}
		if (got > 0)
			q->rr = (shard + 1) % RK_SHARDS;
	}
	*items_r = v.items;
	*n_r = v.n;
	return rc;
}

void rq_items_free(struct rq_item **items, size_t n)
{
	size_t i;

	if (items == NULL || *items == NULL)
		return;
	for (i = 0; i < n; i++)
		free((char *)(*items)[i].member); /* the start of the item's block */
	free(*items);
	*items = NULL;
}

/* ---- renew, finish, retry, reap ---- */

int rq_renew(struct rq *q, const struct rq_item *item, unsigned lease_ms)
{
	static rq_key_fn *const fns[] = {rk_key_inflight, rk_key_owner};
	char k[2][RQ_KEY_MAX], slease[RQ_NUM_MAX];
	const char *args[5];
	size_t lens[5];
	redisReply *r;
	long long v;

	if (rq_check_item(q, item) < 0)
		return -1;
	if (lease_ms == 0) {
		rq_set_error(q, "redis: lease of 0 ms");
		return -1;
	}
	rq_keys(k, item->shard, 2, fns);
	snprintf(slease, sizeof(slease), "%u", lease_ms);
	args[0] = k[0];
	args[1] = k[1];
	args[2] = item->member;
	args[3] = item->owner;
	args[4] = slease;
	lens[0] = strlen(k[0]);
	lens[1] = strlen(k[1]);
	lens[2] = item->member_len;
	lens[3] = strlen(item->owner);
	lens[4] = strlen(slease);
	r = rq_eval(q, RQ_S_RENEW, 2, 5, args, lens, 1);
	if (r == NULL || rq_reply_int(q, r, "renew", &v) < 0)
		return -1;
	return v == 1;
}

int rq_finish(struct rq *q, const struct rq_item *item, const char *state_field,
              const char *state_value)
{
	static rq_key_fn *const fns[] = {rk_key_inflight, rk_key_owner};
	char k[2][RQ_KEY_MAX];
	const char *args[8];
	size_t lens[8];
	redisReply *r;
	char *kst;
	long long v;
	int i;

	if (rq_check_item(q, item) < 0)
		return -1;
	kst = rq_key_state_new(item->user);
	if (kst == NULL) {
		rq_set_error(q, "redis: out of memory");
		return -1;
	}
	rq_keys(k, item->shard, 2, fns);
	args[0] = k[0];
	args[1] = k[1];
	args[2] = kst;
	args[3] = item->member;
	args[4] = item->owner;
	args[5] = state_field == NULL ? "" : state_value != NULL ? "s" : "d";
	args[6] = state_field != NULL ? state_field : "";
	args[7] = state_value != NULL && state_field != NULL ? state_value : "";
	for (i = 0; i < 8; i++)
		lens[i] = strlen(args[i]);
	lens[3] = item->member_len;
	r = rq_eval(q, RQ_S_FINISH, 3, 8, args, lens, 1);
	free(kst);
	if (r == NULL || rq_reply_int(q, r, "finish", &v) < 0)
		return -1;
	return v == 1;
}

int rq_retry(struct rq *q, const struct rq_item *item, unsigned delay_ms)
{
	static rq_key_fn *const fns[] = {rk_key_due, rk_key_inflight, rk_key_owner};
	char k[3][RQ_KEY_MAX], sdelay[RQ_NUM_MAX];
	const char *args[6];
	size_t lens[6];
	redisReply *r;
	long long v;
	int i;

	if (rq_check_item(q, item) < 0)
		return -1;
	rq_keys(k, item->shard, 3, fns);
	snprintf(sdelay, sizeof(sdelay), "%u", delay_ms);
	args[0] = k[0];
	args[1] = k[1];
	args[2] = k[2];
	args[3] = item->member;
	args[4] = item->owner;
	args[5] = sdelay;
	for (i = 0; i < 6; i++)
		lens[i] = strlen(args[i]);
	lens[3] = item->member_len;
	r = rq_eval(q, RQ_S_RETRY, 3, 6, args, lens, 1);
	if (r == NULL || rq_reply_int(q, r, "retry", &v) < 0)
		return -1;
	return v == 1;
}

int rq_move_wait(struct rq *q, const struct rq_item *item)
{
	static rq_key_fn *const fns[] = {rk_key_inflight};
	char k[1][RQ_KEY_MAX], hint[RQ_KEY_MAX];
	const char *args[4];
	redisReply *r;
	long long v;

	if (rq_check_item(q, item) < 0)
		return -1;
	if (rk_key_hint(hint, sizeof(hint), item->user) < 0) {
		rq_set_error(q, "redis: user name too long");
		return -1;
	}
	rq_keys(k, item->shard, 1, fns);
	args[0] = hint;
	args[1] = k[0];
	args[2] = item->user;
	args[3] = item->folder;
	r = rq_eval(q, RQ_S_MOVE_WAIT, 2, 4, args, NULL, 1);
	if (r == NULL || rq_reply_int(q, r, "move wait", &v) < 0)
		return -1;
	return v == 1;
}

int rq_reap(struct rq *q, unsigned shard, unsigned *returned_r)
{
	static rq_key_fn *const fns[] = {rk_key_due, rk_key_inflight, rk_key_owner};
	char k[3][RQ_KEY_MAX], sbatch[RQ_NUM_MAX];
	const char *args[4];
	unsigned total = 0;
	long long v;

	if (returned_r != NULL)
		*returned_r = 0;
	if (rq_check_shard(q, shard) < 0)
		return -1;
	rq_keys(k, shard, 3, fns);
	snprintf(sbatch, sizeof(sbatch), "%u", RQ_REAP_BATCH);
	args[0] = k[0];
	args[1] = k[1];
	args[2] = k[2];
	args[3] = sbatch;
	do {
		redisReply *r = rq_eval(q, RQ_S_REAP, 3, 4, args, NULL, 1);

		if (r == NULL || rq_reply_int(q, r, "reap", &v) < 0)
			return -1;
		total += (unsigned)v;
		if (returned_r != NULL)
			*returned_r = total;
	} while (v >= (long long)RQ_REAP_BATCH);
	return 0;
}

/* ---- marks, polls, sweep flag ---- */

/* rk_member() into a new buffer; caller frees. NULL with the error set. */
static char *rq_member_new(struct rq *q, const char *user, const char *folder, int *len_r)
{
	size_t size;
	char *m;

	if (user == NULL || folder == NULL) {
		rq_set_error(q, "redis: no user or folder");
		return NULL;
	}
	size = strlen(user) + strlen(folder) + 2;
	m = malloc(size);
	if (m == NULL) {
		rq_set_error(q, "redis: out of memory");
		return NULL;
	}
	*len_r = rk_member(m, size, user, folder);
	if (*len_r < 0) {
		rq_set_error(q, "redis: invalid user or folder (empty, or a tab in the user)");
		free(m);
		return NULL;
	}
	return m;
}

int rq_mark(struct rq *q, const char *user, const char *folder, unsigned delay_ms)
{
	char k[RQ_KEY_MAX], sdelay[RQ_NUM_MAX];
	const char *args[3];
	size_t lens[3];
	redisReply *r;
	long long now;
	int mlen;
	char *m = rq_member_new(q, user, folder, &mlen);

	if (m == NULL)
		return -1;
	rk_key_due(k, sizeof(k), rk_shard(user));
	snprintf(sdelay, sizeof(sdelay), "%u", delay_ms);
	args[0] = k;
	args[1] = m;
	args[2] = sdelay;
	lens[0] = strlen(k);
	lens[1] = (size_t)mlen;
	lens[2] = strlen(sdelay);
	r = rq_eval(q, RQ_S_MARK, 1, 3, args, lens, 1);
	free(m);
	if (r == NULL || rq_reply_int(q, r, "mark", &now) < 0)
		return -1;
	return 0;
}

long rq_mark_polled(struct rq *q, unsigned shard)
{
	char kp[RQ_KEY_MAX], kd[RQ_KEY_MAX];
	const char *args[2];
	redisReply *r;
	long long n;

	if (shard >= RK_SHARDS) {
		rq_set_error(q, "redis: no shard %u", shard);
		return -1;
	}
	rk_key_poll(kp, sizeof(kp), shard);
	rk_key_due(kd, sizeof(kd), shard);
	args[0] = kp;
	args[1] = kd;
	r = rq_eval(q, RQ_S_MARK_POLLED, 2, 2, args, NULL, 1);
	if (r == NULL || rq_reply_int(q, r, "mark polled", &n) < 0)
		return -1;
	return (long)n;
}

int rq_poll_due(struct rq *q, unsigned shard, unsigned max, unsigned lease_ms, char ***users_r,
                size_t *n_r)
{
	char k[RQ_KEY_MAX], smax[RQ_NUM_MAX], slease[RQ_NUM_MAX];
	const char *args[3];
	redisReply *r;
	char **users;
	size_t i;

	*users_r = NULL;
	*n_r = 0;
	if (rq_check_shard(q, shard) < 0)
		return -1;
	if (max == 0 || max > RQ_CLAIM_MAX) {
		rq_set_error(q, "redis: poll of %u users (1..%u)", max, RQ_CLAIM_MAX);
		return -1;
	}
	rk_key_poll(k, sizeof(k), shard);
	snprintf(smax, sizeof(smax), "%u", max);
	snprintf(slease, sizeof(slease), "%u", lease_ms);
	args[0] = k;
	args[1] = smax;
	args[2] = slease;
	r = rq_eval(q, RQ_S_POLL, 1, 3, args, NULL, 1);
	if (r == NULL)
		return -1;
	if (r->type != REDIS_REPLY_ARRAY)
		return rq_bad_reply(q, r, "poll");
	if (r->elements == 0) {
		freeReplyObject(r);
		return 0;
	}
	users = calloc(r->elements, sizeof(*users));
	if (users == NULL) {
		freeReplyObject(r);
		rq_set_error(q, "redis: out of memory");
		return -1;
	}
	for (i = 0; i < r->elements; i++) {
		const redisReply *e = r->element[i];

		if (e->type != REDIS_REPLY_STRING || (users[i] = strndup(e->str, e->len)) == NULL) {
			rq_users_free(&users, i);
			return rq_bad_reply(q, r, "poll");
		}
	}
	*users_r = users;
	*n_r = r->elements;
	freeReplyObject(r);
	return 0;
}

void rq_users_free(char ***users, size_t n)
{
	size_t i;

	if (users == NULL || *users == NULL)
		return;
	for (i = 0; i < n; i++)
		free((*users)[i]);
	free(*users);
	*users = NULL;
}

/* A plain command on user's poll key: ZADD key score user / ZREM key user. */
static int rq_poll_cmd(struct rq *q, const char *cmd, const char *user, const char *score, int lt)
{
	char k[RQ_KEY_MAX];
	const char *argv[5];
	size_t lens[5];
	redisReply *r;
	int argc = 0, i;

	if (user == NULL || user[0] == '\0') {
		rq_set_error(q, "redis: empty user");
		return -1;
	}
	rk_key_poll(k, sizeof(k), rk_shard(user));
	argv[argc++] = cmd;
	argv[argc++] = k;
	if (lt)
		argv[argc++] = "LT";
	if (score != NULL)
		argv[argc++] = score;
	argv[argc++] = user;
	for (i = 0; i < argc; i++)
		lens[i] = strlen(argv[i]);
	r = rq_cmd(q, argc, argv, lens, 1);
	if (r == NULL || rq_reply_check(q, r, cmd) < 0)
		return -1;
	freeReplyObject(r);
	return 0;
}

int rq_poll_set(struct rq *q, const char *user, int64_t next_ms)
{
	char score[RQ_NUM_MAX];

	snprintf(score, sizeof(score), "%" PRId64, next_ms);
	return rq_poll_cmd(q, "ZADD", user, score, 0);
}

int rq_poll_sooner(struct rq *q, const char *user, int64_t next_ms)
{
	char score[RQ_NUM_MAX];

	snprintf(score, sizeof(score), "%" PRId64, next_ms);
	return rq_poll_cmd(q, "ZADD", user, score, 1);
}

int rq_poll_remove(struct rq *q, const char *user)
{
	return rq_poll_cmd(q, "ZREM", user, NULL, 0);
}

int rq_route_get(struct rq *q, const char *user, enum rk_route_state *state_r)
{
	char k[RQ_KEY_MAX];
	const char *argv[5] = {"HMGET", k, "state", RK_ROUTE_F_LEASE, RK_ROUTE_F_LEASE_TO};
	size_t lens[5];
	redisReply *r, *e;
	int64_t lease = -1, now;
	int to_src = 1, rc = 0;

	*state_r = RK_ROUTE_SRC;
	if (user == NULL || user[0] == '\0' || rk_key_route(k, sizeof(k), user) < 0) {
		rq_set_error(q, "redis: bad user");
		return -1;
	}
	for (int i = 0; i < 5; i++)
		lens[i] = strlen(argv[i]);
	r = rq_cmd(q, 5, argv, lens, 1);
	if (r == NULL || rq_reply_check(q, r, "HMGET") < 0)
		return -1;
	if (r->type != REDIS_REPLY_ARRAY || r->elements != 3)
		return rq_bad_reply(q, r, "HMGET");
	e = r->element[0];
	if (e->type == REDIS_REPLY_STRING) {
		if (rk_route_state_parse(e->str, state_r) < 0) {
			rq_set_error(q, "redis: route of %s: unknown state %.40s", user, e->str);
			rc = -1;
		}
	} else if (e->type != REDIS_REPLY_NIL) {
		return rq_bad_reply(q, r, "HMGET");
	}
	if (r->element[1]->type == REDIS_REPLY_STRING)
		lease = rq_parse_i64(r->element[1]->str, r->element[1]->len);
	if (r->element[2]->type == REDIS_REPLY_STRING)
		to_src = strcmp(r->element[2]->str, "SRC") == 0;
	freeReplyObject(r);
	/* a freeze whose lease ended belongs to an imapferryctl that is gone:
	 * it can never be flipped, and the proxies send the user's logins to
	 * the source again (rkeys.h), so the user is on the source */
	if (rc == 0 && *state_r == RK_ROUTE_FREEZE && lease >= 0 && to_src) {
		if (rq_now(q, &now) < 0)
			return -1;
		if (now >= lease)
			*state_r = RK_ROUTE_SRC;
	}
	return rc;
}

int rq_last_record(struct rq *q, const char *user, const char *by, const char *error)
{
	char k[RQ_KEY_MAX], err[RK_LAST_ERROR_MAX + 1];
	const char *args[3];
	redisReply *r;

	if (user == NULL || user[0] == '\0' || rk_key_last(k, sizeof(k), user) < 0) {
		rq_set_error(q, "redis: bad user");
		return -1;
	}
	args[0] = k;
	args[1] = by;
	if (error != NULL) {
		/* one line, bounded */
		snprintf(err, sizeof(err), "%s", error);
		for (char *p = err; *p != '\0'; p++) {
			if ((unsigned char)*p < 0x20)
				*p = ' ';
		}
		args[2] = err;
	}
	r = rq_eval(q, error == NULL ? RQ_S_LAST_OK : RQ_S_LAST_ERR, 1, error == NULL ? 2 : 3, args,
	            NULL, 1);
	if (r == NULL)
		return -1;
	freeReplyObject(r);
	return 0;
}

int rq_last_full(struct rq *q, const char *user)
{
	char k[RQ_KEY_MAX];
	const char *args[1];
	redisReply *r;

	if (user == NULL || user[0] == '\0' || rk_key_last(k, sizeof(k), user) < 0) {
		rq_set_error(q, "redis: bad user");
		return -1;
	}
	args[0] = k;
	r = rq_eval(q, RQ_S_LAST_FULL, 1, 1, args, NULL, 1);
	if (r == NULL)
		return -1;
	freeReplyObject(r);
	return 0;
}

int rq_full_due(struct rq *q, const char *user, uint64_t interval_ms)
{
	char k[RQ_KEY_MAX + 1024], iv[RQ_NUM_MAX];
	const char *args[2];
	long long v;
	redisReply *r;

	if (user == NULL || user[0] == '\0' || interval_ms == 0 ||
	    rk_key_last(k, sizeof(k), user) < 0) {
		rq_set_error(q, "redis: bad user or interval");
		return -1;
	}
	snprintf(iv, sizeof(iv), "%llu", (unsigned long long)interval_ms);
	args[0] = k;
	args[1] = iv;
	r = rq_eval(q, RQ_S_FULL_DUE, 1, 2, args, NULL, 0);
	if (r == NULL || rq_reply_int(q, r, "full check", &v) < 0)
		return -1;
	return v == 1;
}

long rq_daemon_beat(struct rq *q, const char *id, unsigned ttl_ms)
{
	char ttl[RQ_NUM_MAX];
	const char *args[3];
	long long v;
	redisReply *r;

	if (rq_check_worker(q, id) < 0 || ttl_ms == 0)
		return -1;
	snprintf(ttl, sizeof(ttl), "%u", ttl_ms);
	args[0] = RK_KEY_DAEMONS;
	args[1] = id;
	args[2] = ttl;
	r = rq_eval(q, RQ_S_BEAT, 1, 3, args, NULL, 1);
	if (r == NULL || rq_reply_int(q, r, "heartbeat", &v) < 0)
		return -1;
	return (long)v;
}

int rq_daemon_leave(struct rq *q, const char *id)
{
	const char *argv[3] = {"ZREM", RK_KEY_DAEMONS, id};
	redisReply *r = rq_cmd(q, 3, argv, NULL, 1);

	if (r == NULL || rq_reply_check(q, r, "ZREM") < 0)
		return -1;
	freeReplyObject(r);
	return 0;
}

int rq_state_forget(struct rq *q, const char *user)
{
	char k[RQ_KEY_MAX];
	const char *argv[2] = {"DEL", k};
	size_t lens[2];
	redisReply *r;

	if (user == NULL || user[0] == '\0' || rk_key_state(k, sizeof(k), user) < 0) {
		rq_set_error(q, "redis: bad user");
		return -1;
	}
	lens[0] = 3;
	lens[1] = strlen(k);
	r = rq_cmd(q, 2, argv, lens, 1);
	if (r == NULL || rq_reply_check(q, r, "DEL") < 0)
		return -1;
	freeReplyObject(r);
	return 0;
}

int rq_sweep_all_take(struct rq *q, int64_t *value_r)
{
	const char *argv[2] = {"GETDEL", RK_KEY_SWEEP_ALL};
	size_t lens[2] = {6, strlen(RK_KEY_SWEEP_ALL)};
	redisReply *r;

	*value_r = 0;
	/* Never resent: the first send may have deleted the flag. */
	r = rq_cmd(q, 2, argv, lens, 0);
	if (r == NULL || rq_reply_check(q, r, "GETDEL") < 0)
		return -1;
	if (r->type == REDIS_REPLY_NIL) {
		freeReplyObject(r);
		return 0;
	}
	if (r->type != REDIS_REPLY_STRING)
		return rq_bad_reply(q, r, "GETDEL");
	*value_r = rq_parse_i64(r->str, r->len);
	freeReplyObject(r);
	return 1;
}

int rq_now(struct rq *q, int64_t *now_ms_r)
{
	const char *argv[1] = {"TIME"};
	size_t lens[1] = {4};
	redisReply *r = rq_cmd(q, 1, argv, lens, 1);

	*now_ms_r = 0;
	if (r == NULL || rq_reply_check(q, r, "TIME") < 0)
		return -1;
	if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
	    r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_STRING)
		return rq_bad_reply(q, r, "TIME");
	*now_ms_r = rq_parse_i64(r->element[0]->str, r->element[0]->len) * 1000 +
	            rq_parse_i64(r->element[1]->str, r->element[1]->len) / 1000;
	freeReplyObject(r);
	return 0;
}

/* ---- pipelines over the shards ---- */

struct rq_pcmd {
	int argc;
	const char *argv[5];
	char key[RQ_KEY_MAX];
	unsigned slot;
	redisContext *c;
};

/*
 * Sends cmds[0..n) pipelined, one pipeline per node (a standalone Redis:
 * one), and reads every reply into r[] (caller frees them). A command a
 * cluster redirected (a slot moved) is learned and the whole batch goes
 * once more. 0, or -1 with the error set (no reply kept).
 */
static int rq_pipeline(struct rq *q, struct rq_pcmd *cmds, size_t n, redisReply **r,
                       const char *what)
{
	int round;

	for (round = 0; round < 2; round++) {
		size_t i, got = 0;
		int redirected = 0;

		for (i = 0; i < n; i++)
			if ((cmds[i].c = rn_ctx(q->rn, cmds[i].slot)) == NULL) {
				rq_set_error(q, "%s", rn_error(q->rn));
				return -1;
			}
		for (i = 0; i < n; i++) {
			size_t lens[5];
			int j;

			for (j = 0; j < cmds[i].argc; j++)
				lens[j] = strlen(cmds[i].argv[j]);
			if (redisAppendCommandArgv(cmds[i].c, cmds[i].argc, cmds[i].argv, lens) !=
			    REDIS_OK)
				goto io;
		}
		for (i = 0; i < n; i++, got++) {
			void *reply = NULL;

			if (redisGetReply(cmds[i].c, &reply) != REDIS_OK || reply == NULL)
				goto io;
			r[i] = reply;
			if (rn_redirected(q->rn, r[i]))
				redirected = 1;
		}
		if (!redirected || round == 1)
			return 0;
		for (i = 0; i < n; i++)
			freeReplyObject(r[i]);
		continue;
	io:
		rq_set_error(q, "redis: %s while %s",
		             cmds[got < n ? got : 0].c->err != 0 ? cmds[got < n ? got : 0].c->errstr
		                                                 : "no reply",
		             what);
		while (got > 0)
			freeReplyObject(r[--got]);
		/* every node of the batch may hold unread replies now */
		for (i = 0; i < n; i++)
			rn_drop(q->rn, cmds[i].c);
		return -1;
	}
	return -1;
}

static void rq_pcmd_time(struct rq_pcmd *c)
{
	c->argc = 1;
	c->argv[0] = "TIME";
	c->slot = rk_shard_slot(0);
}

/* ZRANGE <due of shard> 0 0 WITHSCORES: the earliest due member. */
static void rq_pcmd_first_due(struct rq_pcmd *c, unsigned shard)
{
	rk_key_due(c->key, sizeof(c->key), shard);
	c->argc = 5;
	c->argv[0] = "ZRANGE";
	c->argv[1] = c->key;
	c->argv[2] = "0";
	c->argv[3] = "0";
	c->argv[4] = "WITHSCORES";
	c->slot = rk_shard_slot(shard);
}

static void rq_pcmd_zcard(struct rq_pcmd *c, unsigned shard, rq_key_fn *fn)
{
	fn(c->key, sizeof(c->key), shard);
	c->argc = 2;
	c->argv[0] = "ZCARD";
	c->argv[1] = c->key;
	c->slot = rk_shard_slot(shard);
}

/* ---- stats ---- */

#define RQ_STATS_PER_SHARD 3
#define RQ_STATS_CMDS      (1 + RQ_STATS_PER_SHARD * RK_SHARDS)

/* Sends the stats pipeline (TIME, then per shard ZCARD due, the earliest
 * due member, ZCARD inflight) and reads every reply into r[]. 0, or -1 (no
 * replies kept) with the error set. */
static int rq_stats_pipeline(struct rq *q, redisReply **r)
{
	struct rq_pcmd cmds[RQ_STATS_CMDS];
	unsigned s;

	rq_pcmd_time(&cmds[0]);
	for (s = 0; s < RK_SHARDS; s++) {
		rq_pcmd_zcard(&cmds[1 + s * RQ_STATS_PER_SHARD], s, rk_key_due);
		rq_pcmd_first_due(&cmds[2 + s * RQ_STATS_PER_SHARD], s);
		rq_pcmd_zcard(&cmds[3 + s * RQ_STATS_PER_SHARD], s, rk_key_inflight);
	}
	return rq_pipeline(q, cmds, RQ_STATS_CMDS, r, "reading stats");
}

int rq_due_peek(struct rq *q, int64_t *now_r, int64_t first_r[RK_SHARDS])
{
	struct rq_pcmd cmds[1 + RK_SHARDS];
	redisReply *r[1 + RK_SHARDS];
	unsigned s, i;
	int rc = 0;

	rq_pcmd_time(&cmds[0]);
	for (s = 0; s < RK_SHARDS; s++)
		rq_pcmd_first_due(&cmds[1 + s], s);
	if (rq_pipeline(q, cmds, 1 + RK_SHARDS, r, "peeking at the due sets") < 0)
		return -1;
	if (r[0]->type != REDIS_REPLY_ARRAY || r[0]->elements != 2 ||
	    r[0]->element[0]->type != REDIS_REPLY_STRING ||
	    r[0]->element[1]->type != REDIS_REPLY_STRING) {
		rq_set_error(q, "redis: unexpected reply to TIME");
		rc = -1;
	} else {
		*now_r = rq_parse_i64(r[0]->element[0]->str, r[0]->element[0]->len) * 1000 +
		         rq_parse_i64(r[0]->element[1]->str, r[0]->element[1]->len) / 1000;
	}
	for (s = 0; s < RK_SHARDS; s++) {
		const redisReply *first = r[1 + s];

		first_r[s] = -1;
		if (first->type == REDIS_REPLY_ERROR) {
			rq_set_error(q, "redis: due peek: %.*s",
			             (int)(first->len < 200 ? first->len : 200), first->str);
			rc = -1;
		} else if (first->type == REDIS_REPLY_ARRAY && first->elements == 2 &&
		           first->element[1]->type == REDIS_REPLY_STRING) {
			first_r[s] = rq_parse_i64(first->element[1]->str, first->element[1]->len);
		}
	}
	for (i = 0; i < 1 + RK_SHARDS; i++)
		freeReplyObject(r[i]);
	return rc;
}

int rq_stats(struct rq *q, struct rq_stats *stats_r)
{
	redisReply *r[RQ_STATS_CMDS];
	unsigned s, i;
	int rc = 0;

	memset(stats_r, 0, sizeof(*stats_r));
	stats_r->oldest_due_ms = -1;
	/* Read-only: sent again once after an I/O error. */
	if (rq_stats_pipeline(q, r) < 0 && rq_stats_pipeline(q, r) < 0)
		return -1;
	for (i = 0; i < RQ_STATS_CMDS; i++) {
		if (r[i]->type == REDIS_REPLY_ERROR) {
			rq_set_error(q, "redis: stats: %.*s",
			             (int)(r[i]->len < 200 ? r[i]->len : 200), r[i]->str);
			rc = -1;
		}
	}
	if (rc == 0 && (r[0]->type != REDIS_REPLY_ARRAY || r[0]->elements != 2 ||
	                r[0]->element[0]->type != REDIS_REPLY_STRING ||
	                r[0]->element[1]->type != REDIS_REPLY_STRING)) {
		rq_set_error(q, "redis: unexpected reply to TIME");
		rc = -1;
	}
	if (rc == 0) {
		stats_r->now_ms =
		        rq_parse_i64(r[0]->element[0]->str, r[0]->element[0]->len) * 1000 +
		        rq_parse_i64(r[0]->element[1]->str, r[0]->element[1]->len) / 1000;
		for (s = 0; s < RK_SHARDS; s++) {
			const redisReply *due = r[1 + s * RQ_STATS_PER_SHARD],
			                 *first = r[2 + s * RQ_STATS_PER_SHARD],
			                 *infl = r[3 + s * RQ_STATS_PER_SHARD];

			if (due->type == REDIS_REPLY_INTEGER)
				stats_r->due += (uint64_t)due->integer;
			if (infl->type == REDIS_REPLY_INTEGER)
				stats_r->inflight += (uint64_t)infl->integer;
			if (first->type == REDIS_REPLY_ARRAY && first->elements == 2 &&
			    first->element[1]->type == REDIS_REPLY_STRING) {
				int64_t score = rq_parse_i64(first->element[1]->str,
				                             first->element[1]->len);

				if (stats_r->oldest_due_ms < 0 || score < stats_r->oldest_due_ms)
					stats_r->oldest_due_ms = score;
			}
		}
		if (stats_r->oldest_due_ms >= 0 && stats_r->oldest_due_ms < stats_r->now_ms)
			stats_r->oldest_due_age_ms =
			        (uint64_t)(stats_r->now_ms - stats_r->oldest_due_ms);
	}
	for (i = 0; i < RQ_STATS_CMDS; i++)
		freeReplyObject(r[i]);
	return rc;
}

int rq_addr_parse(const char *spec, char *host, size_t hostsize, int *port_r, const char **unix_r)
{
	const char *colon;
	size_t hl;

	*unix_r = NULL;
	*port_r = 6379;
	if (spec == NULL || spec[0] == '\0')
		return -1;
	if (spec[0] == '/') {
		*unix_r = spec;
		if (hostsize > 0)
			host[0] = '\0';
		return 0;
	}
	colon = strrchr(spec, ':');
	hl = colon != NULL ? (size_t)(colon - spec) : strlen(spec);
	if (hl == 0 || hl >= hostsize)
		return -1;
	memcpy(host, spec, hl);
	host[hl] = '\0';
	if (colon != NULL) {
		char *end;
		long port = strtol(colon + 1, &end, 10);

		if (*end != '\0' || port <= 0 || port > 65535)
			return -1;
		*port_r = (int)port;
	}
	return 0;
}
