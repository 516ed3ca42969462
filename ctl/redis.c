/*
 * redis.c - imapferryctl's Redis calls: connection, commands, route changes.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"

redisContext *ct_connect(const char *spec, const char **error_r)
{
	struct timeval tv = {CT_TIMEOUT_MS / 1000, (CT_TIMEOUT_MS % 1000) * 1000};
	static char err[300];
	redisContext *c;

	if (spec[0] == '/') {
		c = redisConnectUnixWithTimeout(spec, tv);
	} else {
		char host[256];
		const char *colon = strrchr(spec, ':');
		size_t hl = colon != NULL ? (size_t)(colon - spec) : strlen(spec);
		int port = colon != NULL ? atoi(colon + 1) : 6379;

		if (hl >= sizeof(host) || port <= 0 || port > 65535) {
			*error_r = "bad --redis (expected HOST:PORT or a socket path)";
			return NULL;
		}
		memcpy(host, spec, hl);
		host[hl] = '\0';
		c = redisConnectWithTimeout(host, port, tv);
	}
	if (c == NULL || c->err) {
		snprintf(err, sizeof(err), "cannot connect to Redis at %s: %s", spec,
		         c != NULL ? c->errstr : "out of memory");
		redisFree(c);
		*error_r = err;
		return NULL;
	}
	redisSetTimeout(c, tv);
	return c;
}

static redisReply *check(redisContext *c, redisReply *r)
{
	if (r == NULL) {
		fprintf(stderr, "imapferryctl: Redis: %s\n", c->errstr[0] ? c->errstr : "no reply");
		return NULL;
	}
	if (r->type == REDIS_REPLY_ERROR) {
		fprintf(stderr, "imapferryctl: Redis: %s\n", r->str);
		freeReplyObject(r);
		return NULL;
	}
	return r;
}

redisReply *ct_cmd(redisContext *c, const char *fmt, ...)
{
	va_list ap;
	redisReply *r;

	va_start(ap, fmt);
	r = redisvCommand(c, fmt, ap);
	va_end(ap);
	return check(c, r);
}

redisReply *ct_cmd_argv(redisContext *c, int argc, const char **argv)
{
	return check(c, redisCommandArgv(c, argc, argv, NULL));
}

int ct_now_ms(redisContext *c, int64_t *now_r)
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

/* KEYS[1] route key; ARGV: user, state, channel. PUBLISH from a script is
 * allowed; TIME before the writes is fine with effects replication (7.0). */
static const char route_lua[] =
        "local t = redis.call('TIME')\n"
        "redis.call('HSET', KEYS[1], 'state', ARGV[2], 'changed_ms',"
        " tostring(t[1] * 1000 + math.floor(t[2] / 1000)))\n"
        "local e = redis.call('HINCRBY', KEYS[1], 'epoch', 1)\n"
        "local n = redis.call('PUBLISH', ARGV[3], 'route ' .. ARGV[1] .. ' ' .. e)\n"
        "return {e, n}\n";

int ct_route_set(redisContext *c, const char *user, enum rk_route_state state, uint64_t *epoch_r,
                 long long *receivers_r)
{
	char key[1024];
	const char *argv[7];
	redisReply *r;

	if (rk_key_route(key, sizeof(key), user) < 0)
		return -1;
	argv[0] = "EVAL";
	argv[1] = route_lua;
	argv[2] = "1";
	argv[3] = key;
	argv[4] = user;
	argv[5] = rk_route_state_names[state];
	argv[6] = RK_CTL_CHANNEL;
	if ((r = ct_cmd_argv(c, 7, argv)) == NULL)
		return -1;
	if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
	    r->element[0]->type != REDIS_REPLY_INTEGER) {
		freeReplyObject(r);
		return -1;
	}
	*epoch_r = (uint64_t)r->element[0]->integer;
	*receivers_r = r->element[1]->integer;
	freeReplyObject(r);
	return 0;
}

int ct_route_get(redisContext *c, const char *user, enum rk_route_state *state_r, uint64_t *epoch_r)
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

int ct_user_resume(redisContext *c, const char *user)
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

int ct_last_record(redisContext *c, const char *user, const char *by, const char *error)
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
