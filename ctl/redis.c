/*
 * redis.c - imapferryctl's Redis calls: connection, commands, route changes.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ctl.h"

struct rnodes *ct_connect(const char *spec, const char **error_r)
{
	static char err[300];
	const char *why;
	struct rnodes *c = rn_open_spec(spec, CT_TIMEOUT_MS, &why);

	if (c == NULL) {
		snprintf(err, sizeof(err), "cannot connect to Redis at %s: %s", spec, why);
		*error_r = err;
	}
	return c;
}

static redisReply *check(struct rnodes *c, redisReply *r)
{
	if (r == NULL) {
		fprintf(stderr, "imapferryctl: Redis: %s\n", rn_error(c));
		return NULL;
	}
	if (r->type == REDIS_REPLY_ERROR) {
		fprintf(stderr, "imapferryctl: Redis: %s\n", r->str);
		freeReplyObject(r);
		return NULL;
	}
	return r;
}

/* Commands go to the node of their key (rnodes.h): one Redis, or a Redis
 * Cluster given by any of its nodes. */
redisReply *ct_cmd(struct rnodes *c, const char *fmt, ...)
{
	va_list ap;
	redisReply *r;

	va_start(ap, fmt);
	r = rn_vcommand(c, fmt, ap);
	va_end(ap);
	return check(c, r);
}

redisReply *ct_cmd_argv(struct rnodes *c, int argc, const char **argv)
{
	/* EVAL script numkeys key ...: the first key; else argv[1] */
	int k = strcasecmp(argv[0], "EVAL") == 0 || strcasecmp(argv[0], "EVALSHA") == 0 ? 3 : 1;
	unsigned slot = argc > k ? rk_key_slot(argv[k], strlen(argv[k])) : 0;

	return check(c, rn_command_argv(c, slot, argc, argv, NULL, 0));
}

int ct_now_ms(struct rnodes *c, int64_t *now_r)
{
	redisReply *r = ct_cmd(c, "TIME");

	if (r == NULL)
		return -1;
	if (r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
		freeReplyObject(r);
		return -1;
	}
	*now_r = atoll(r->element[0]->str) * 1000 + atoll(r->element[1]->str) / 1000;
	freeReplyObject(r);
	return 0;
}

/* KEYS[1] route key; ARGV: user, state, channel, guard (none, freeze,
 * epoch, lease), expected epoch, lease ms (0 = none), lease_to. PUBLISH from a
 * script is allowed; TIME before the writes is fine with effects replication
 * (7.0). Returns {epoch, receivers} or {-1, ms left} (a running lease),
 * {-2, epoch} (another epoch), {-3, epoch} (our lease ended). */
static const char route_lua[] =
        "local t = redis.call('TIME')\n"
        "local now = t[1] * 1000 + math.floor(t[2] / 1000)\n"
        "local cur = redis.call('HMGET', KEYS[1], 'state', 'epoch', '" RK_ROUTE_F_LEASE "')\n"
        "local lease = tonumber(cur[3] or '')\n"
        "local g = ARGV[4]\n"
        "if g == 'freeze' then\n"
        "  if cur[1] == 'FREEZE' and lease and lease > now then return {-1, lease - now} end\n"
        "elseif g == 'epoch' or g == 'lease' then\n"
        "  if (cur[2] or '0') ~= ARGV[5] then return {-2, tonumber(cur[2] or '0')} end\n"
        "  if g == 'lease' and cur[1] == 'FREEZE' and lease and lease <= now then\n"
        "    return {-3, tonumber(cur[2])}\n"
        "  end\n"
        "end\n"
        "redis.call('HSET', KEYS[1], 'state', ARGV[2], 'changed_ms', tostring(now))\n"
        "local l = tonumber(ARGV[6])\n"
        "if l > 0 then\n"
        "  redis.call('HSET', KEYS[1], '" RK_ROUTE_F_LEASE
        "', tostring(now + l), '" RK_ROUTE_F_LEASE_TO "', ARGV[7])\n"
        "else\n"
        "  redis.call('HDEL', KEYS[1], '" RK_ROUTE_F_LEASE "', '" RK_ROUTE_F_LEASE_TO "')\n"
        "end\n"
        "local e = redis.call('HINCRBY', KEYS[1], 'epoch', 1)\n"
        "local n = redis.call('PUBLISH', ARGV[3], 'route ' .. ARGV[1] .. ' ' .. e)\n"
        "return {e, n}\n";

static const char *const guard_names[CT_GUARD_COUNT] = {"none", "freeze", "epoch", "lease"};

int ct_route_change(struct rnodes *c, const char *user, const struct ct_route_req *req,
                    uint64_t *epoch_r, long long *receivers_r)
{
	char key[1024], expect[24], lease[16];
	const char *argv[11];
	redisReply *r;
	long long a, b;

	if (rk_key_route(key, sizeof(key), user) < 0)
		return -1;
	snprintf(expect, sizeof(expect), "%llu", (unsigned long long)req->expect_epoch);
	snprintf(lease, sizeof(lease), "%u", req->state == RK_ROUTE_FREEZE ? req->lease_ms : 0u);
	argv[0] = "EVAL";
	argv[1] = route_lua;
	argv[2] = "1";
	argv[3] = key;
	argv[4] = user;
	argv[5] = rk_route_state_names[req->state];
	argv[6] = RK_CTL_CHANNEL;
	argv[7] = guard_names[req->guard];
	argv[8] = expect;
	argv[9] = lease;
	argv[10] =
	        rk_route_state_names[req->lease_to == RK_ROUTE_DST ? RK_ROUTE_DST : RK_ROUTE_SRC];
	if ((r = ct_cmd_argv(c, 11, argv)) == NULL)
		return -1;
	if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
	    r->element[0]->type != REDIS_REPLY_INTEGER ||
	    r->element[1]->type != REDIS_REPLY_INTEGER) {
		freeReplyObject(r);
		return -1;
	}
	a = r->element[0]->integer;
	b = r->element[1]->integer;
	freeReplyObject(r);
	if (a >= 0) {
		*epoch_r = (uint64_t)a;
		*receivers_r = b;
		return 0;
	}
	if (a == -1) {
		uint64_t e = 0;
		enum rk_route_state st;

		ct_route_get(c, user, &st, &e);
		*epoch_r = e;
		*receivers_r = b;
	} else {
		*epoch_r = (uint64_t)b;
		*receivers_r = a == -2 ? 0 : -1;
	}
	return 1;
}

int ct_route_set(struct rnodes *c, const char *user, enum rk_route_state state, uint64_t *epoch_r,
                 long long *receivers_r)
{
	struct ct_route_req req = {.state = state, .guard = CT_GUARD_NONE};

	return ct_route_change(c, user, &req, epoch_r, receivers_r) == 0 ? 0 : -1;
}

/* KEYS[1] route key; ARGV: epoch, lease ms. */
static const char renew_lua[] =
        "local t = redis.call('TIME')\n"
        "local now = t[1] * 1000 + math.floor(t[2] / 1000)\n"
        "local cur = redis.call('HMGET', KEYS[1], 'state', 'epoch', '" RK_ROUTE_F_LEASE "')\n"
        "local lease = tonumber(cur[3] or '')\n"
        "if cur[1] ~= 'FREEZE' or cur[2] ~= ARGV[1] or not lease or lease <= now then\n"
        "  return 0\n"
        "end\n"
        "redis.call('HSET', KEYS[1], '" RK_ROUTE_F_LEASE "', tostring(now + tonumber(ARGV[2])))\n"
        "return 1\n";

int ct_lease_renew(struct rnodes *c, const char *user, uint64_t epoch, unsigned lease_ms)
{
	char key[1024], e[24], l[16];
	const char *argv[6];
	redisReply *r;
	int rc;

	if (rk_key_route(key, sizeof(key), user) < 0)
		return -1;
	snprintf(e, sizeof(e), "%llu", (unsigned long long)epoch);
	snprintf(l, sizeof(l), "%u", lease_ms);
	argv[0] = "EVAL";
	argv[1] = renew_lua;
	argv[2] = "1";
	argv[3] = key;
	argv[4] = e;
	argv[5] = l;
	if ((r = ct_cmd_argv(c, 6, argv)) == NULL)
		return -1;
	rc = r->type == REDIS_REPLY_INTEGER ? (r->integer == 1) : -1;
	freeReplyObject(r);
	return rc;
}

/* KEYS[1] route key. Returns {state, epoch, lease ms left or '', lease_to}. */
static const char info_lua[] =
        "local t = redis.call('TIME')\n"
        "local now = t[1] * 1000 + math.floor(t[2] / 1000)\n"
        "local v = redis.call('HMGET', KEYS[1], 'state', 'epoch', '" RK_ROUTE_F_LEASE "',"
        " '" RK_ROUTE_F_LEASE_TO "')\n"
        "local lease = tonumber(v[3] or '')\n"
        "return {v[1] or '', v[2] or '0', lease and tostring(lease - now) or '', v[4] or ''}\n";

int ct_route_info(struct rnodes *c, const char *user, struct ct_route_info *ri)
{
	char key[1024];
	redisReply *r;

	memset(ri, 0, sizeof(*ri));
	ri->state = ri->lease_to = RK_ROUTE_SRC;
	if (rk_key_route(key, sizeof(key), user) < 0)
		return -1;
	if ((r = ct_cmd(c, "EVAL %s 1 %s", info_lua, key)) == NULL)
		return -1;
	if (r->type != REDIS_REPLY_ARRAY || r->elements != 4) {
		freeReplyObject(r);
		return -1;
	}
	ri->found = rk_route_state_parse(r->element[0]->str, &ri->state) == 0;
	if (!ri->found)
		ri->state = RK_ROUTE_SRC;
	ri->epoch = strtoull(r->element[1]->str, NULL, 10);
	if (ri->state == RK_ROUTE_FREEZE && r->element[2]->str[0] != '\0') {
		ri->has_lease = 1;
		ri->lease_left_ms = atoll(r->element[2]->str);
		if (strcmp(r->element[3]->str, "DST") == 0)
			ri->lease_to = RK_ROUTE_DST;
	}
	freeReplyObject(r);
	return 0;
}

int ct_route_stale(const struct ct_route_info *ri)
{
	return ri->state == RK_ROUTE_FREEZE && ri->has_lease && ri->lease_left_ms <= 0;
}

int ct_route_get(struct rnodes *c, const char *user, enum rk_route_state *state_r,
                 uint64_t *epoch_r)
{
	char key[1024];
	redisReply *r;
	int found = 0;

	*state_r = RK_ROUTE_SRC;
	*epoch_r = 0;
	if (rk_key_route(key, sizeof(key), user) < 0)
		return -1;
	if ((r = ct_cmd(c, "HMGET %s state epoch", key)) == NULL)
		return -1;
	if (r->type == REDIS_REPLY_ARRAY && r->elements == 2) {
		if (r->element[0]->type == REDIS_REPLY_STRING &&
		    rk_route_state_parse(r->element[0]->str, state_r) == 0)
			found = 1;
		if (r->element[1]->type == REDIS_REPLY_STRING)
			*epoch_r = strtoull(r->element[1]->str, NULL, 10);
	}
	freeReplyObject(r);
	return found;
}

int ct_user_resume(struct rnodes *c, const char *user)
{
	char due[64], poll[64], member[1024];
	int64_t now;
	redisReply *r;

	if (ct_now_ms(c, &now) < 0 || rk_key_due(due, sizeof(due), rk_shard(user)) < 0 ||
	    rk_key_poll(poll, sizeof(poll), rk_shard(user)) < 0 ||
	    rk_member(member, sizeof(member), user, RK_FOLDER_ALL) < 0)
		return -1;
	if ((r = ct_cmd(c, "ZADD %s %lld %s", poll, (long long)now, user)) == NULL)
		return -1;
	freeReplyObject(r);
	if ((r = ct_cmd(c, "ZADD %s LT %lld %s", due, (long long)now, member)) == NULL)
		return -1;
	freeReplyObject(r);
	return 0;
}

int ct_key_last(char *buf, size_t size, const char *user)
{
	return rk_key_last(buf, size, user) < 0 ? -1 : 0;
}

int ct_last_record(struct rnodes *c, const char *user, const char *by, const char *error)
{
	char key[1100], err[CT_LAST_ERROR_MAX + 1];
	redisReply *r;
	size_t n;

	if (ct_key_last(key, sizeof(key), user) < 0)
		return -1;
	if (error == NULL) {
		r = ct_cmd(c, "EVAL %s 1 %s %s", /* Redis's clock, as everywhere else */
		           "local t = redis.call('TIME')\n"
		           "redis.call('HSET', KEYS[1], 'ok_ms', t[1] * 1000 + math.floor(t[2] / "
		           "1000),"
		           " 'ok_by', ARGV[1])\n"
		           "return 1\n",
		           key, by);
	} else {
		/* one line, bounded */
		n = strlen(error);
		if (n > CT_LAST_ERROR_MAX)
			n = CT_LAST_ERROR_MAX;
		memcpy(err, error, n);
		err[n] = '\0';
		for (char *p = err; *p != '\0'; p++)
			if ((unsigned char)*p < 0x20)
				*p = ' ';
		r = ct_cmd(c, "EVAL %s 1 %s %s %s",
		           "local t = redis.call('TIME')\n"
		           "redis.call('HSET', KEYS[1], 'err_ms', t[1] * 1000 + math.floor(t[2] / "
		           "1000),"
		           " 'err_by', ARGV[1], 'err', ARGV[2])\n"
		           "return 1\n",
		           key, by, err);
	}
	if (r == NULL)
		return -1;
	freeReplyObject(r);
	return 0;
}

int ct_sizes_record(struct rnodes *c, const char *user, const char *by,
                    const unsigned long long msgs[2], const unsigned long long bytes[2])
{
	char key[1100], n[4][24];
	redisReply *r;

	if (ct_key_last(key, sizeof(key), user) < 0)
		return -1;
	snprintf(n[0], sizeof(n[0]), "%llu", msgs[0]);
	snprintf(n[1], sizeof(n[1]), "%llu", bytes[0]);
	snprintf(n[2], sizeof(n[2]), "%llu", msgs[1]);
	snprintf(n[3], sizeof(n[3]), "%llu", bytes[1]);
	r = ct_cmd(c, "EVAL %s 1 %s %s %s %s %s %s",
	           "local t = redis.call('TIME')\n"
	           "redis.call('HSET', KEYS[1], 'size_ms', t[1] * 1000 + math.floor(t[2] / 1000),"
	           " 'size_by', ARGV[1], 'msgs1', ARGV[2], 'bytes1', ARGV[3], 'msgs2', ARGV[4],"
	           " 'bytes2', ARGV[5])\n"
	           "return 1\n",
	           key, by, n[0], n[1], n[2], n[3]);
	if (r == NULL)
		return -1;
	freeReplyObject(r);
	return 0;
}
