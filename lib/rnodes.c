/* rnodes.c - see include/imapferry/rnodes.h */
#include "imapferry/rnodes.h"

#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>

#include <hiredis/hiredis.h>

#include "imapferry/rkeys.h"
#include "imapferry/rqueue.h"

struct rn_node {
	char *host; /* NULL with unix_path for the configured socket */
	char *unix_path;
	int port;
	redisContext *c;
};

struct rnodes {
	unsigned timeout_ms;
	struct rn_node node[RN_NODES_MAX];
	unsigned n;
	unsigned dflt; /* where a slot nobody taught us goes */
	/* slot -> node index + 1; 0: unknown (dflt). Allocated at the first
	 * redirection: a standalone Redis never needs it. */
	uint8_t *slot_node;
	unsigned long connects;
	int cluster; /* rn_cluster(): -1 not asked yet */
	char err[RN_ERROR_MAX];
};

static void rn_set_error(struct rnodes *rn, const char *fmt, ...)
        __attribute__((format(printf, 2, 3)));
static void rn_set_error(struct rnodes *rn, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(rn->err, sizeof(rn->err), fmt, ap);
	va_end(ap);
}

const char *rn_error(const struct rnodes *rn)
{
	return rn != NULL ? rn->err : "no Redis";
}

static void node_where(const struct rn_node *nd, char *buf, size_t size)
{
	if (nd->unix_path != NULL)
		snprintf(buf, size, "%s", nd->unix_path);
	else
		snprintf(buf, size, "%s:%d", nd->host, nd->port);
}

/* Opens a context to host:port or unix_path; NULL with a message in err. */
static redisContext *ctx_open(const char *host, int port, const char *unix_path,
                              unsigned timeout_ms, char *err, size_t err_size)
{
	struct timeval tv;
	redisContext *c;

	tv.tv_sec = (time_t)(timeout_ms / 1000u);
	tv.tv_usec = (suseconds_t)(timeout_ms % 1000u) * 1000;
	c = unix_path != NULL ? redisConnectUnixWithTimeout(unix_path, tv)
	                      : redisConnectWithTimeout(host, port, tv);
	if (c == NULL) {
		snprintf(err, err_size, "redis: out of memory");
		return NULL;
	}
	if (c->err == 0 && redisSetTimeout(c, tv) != REDIS_OK && c->err == 0)
		c->err = REDIS_ERR_IO;
	if (c->err != 0) {
		if (unix_path != NULL)
			snprintf(err, err_size, "redis %s: %s", unix_path, c->errstr);
		else
			snprintf(err, err_size, "redis %s:%d: %s", host, port, c->errstr);
		redisFree(c);
		return NULL;
	}
	return c;
}

/* Nonzero when the idle connection has something to read: the server closed
 * it (a restart, an idle timeout) or sent what nobody asked for. */
static int ctx_stale(const redisContext *c)
{
	struct pollfd p;

	p.fd = c->fd;
	p.events = POLLIN;
	p.revents = 0;
	return poll(&p, 1, 0) != 0;
}

static void node_close(struct rn_node *nd)
{
	if (nd->c != NULL)
		redisFree(nd->c);
	nd->c = NULL;
}

/* Forgets what was learned about node i: its slots go back to dflt, and
 * when i is dflt, another node with a connection becomes dflt. */
static void node_forget(struct rnodes *rn, unsigned i)
{
	unsigned s;

	if (rn->slot_node != NULL)
		for (s = 0; s < RK_SLOTS; s++)
			if (rn->slot_node[s] == i + 1)
				rn->slot_node[s] = 0;
	if (rn->dflt == i && rn->n > 1)
		rn->dflt = (i + 1) % rn->n;
}

/* Node i connected: 0, or -1 with the error set. */
static int node_ensure(struct rnodes *rn, unsigned i)
{
	struct rn_node *nd = &rn->node[i];

	if (nd->c != NULL && nd->c->err == 0 && !ctx_stale(nd->c))
		return 0;
	node_close(nd);
	nd->c = ctx_open(nd->host, nd->port, nd->unix_path, rn->timeout_ms, rn->err,
	                 sizeof(rn->err));
	if (nd->c == NULL)
		return -1;
	rn->connects++;
	return 0;
}

/* The node index at host:port, added when new; -1 when the table is full. */
static int node_find_add(struct rnodes *rn, const char *host, size_t hl, int port)
{
	unsigned i;

	for (i = 0; i < rn->n; i++)
		if (rn->node[i].host != NULL && rn->node[i].port == port &&
		    strlen(rn->node[i].host) == hl && memcmp(rn->node[i].host, host, hl) == 0)
			return (int)i;
	if (rn->n >= RN_NODES_MAX)
		return -1;
	rn->node[rn->n].host = strndup(host, hl);
	if (rn->node[rn->n].host == NULL)
		return -1;
	rn->node[rn->n].port = port;
	return (int)rn->n++;
}

/* Decimal digits p[0..end) up to max: the value, or -1. Stops at the first
 * non-digit (*stop_r). */
static long dec(const char *p, const char *end, long max, const char **stop_r)
{
	long v = 0;
	const char *q = p;

	while (q < end && *q >= '0' && *q <= '9') {
		v = v * 10 + (*q - '0');
		if (v > max)
			return -1;
		q++;
	}
	*stop_r = q;
	return q == p ? -1 : v;
}

int rn_redirect_parse(const char *str, size_t len, int *ask_r, unsigned *slot_r,
                      const char **host_r, size_t *hl_r, int *port_r)
{
	const char *p, *end, *colon, *sp, *e;
	long v;

	if (str == NULL || memchr(str, '\0', len) != NULL)
		return -1;
	if (len > 6 && memcmp(str, "MOVED ", 6) == 0) {
		*ask_r = 0;
		p = str + 6;
	} else if (len > 4 && memcmp(str, "ASK ", 4) == 0) {
		*ask_r = 1;
		p = str + 4;
	} else {
		return -1;
	}
	end = str + len;
	v = dec(p, end, (long)RK_SLOTS - 1, &e);
	if (v < 0 || e >= end || *e != ' ')
		return -1;
	*slot_r = (unsigned)v;
	p = e + 1;
	sp = memchr(p, ' ', (size_t)(end - p));
	if (sp != NULL)
		end = sp;
	colon = NULL;
	for (sp = p; sp < end; sp++)
		if (*sp == ':')
			colon = sp;
	if (colon == NULL || colon == p || colon + 1 >= end)
		return -1;
	v = dec(colon + 1, end, 65535, &e);
	if (v <= 0 || e != end)
		return -1;
	*port_r = (int)v;
	if (*p == '[' && colon[-1] == ']') {
		p++;
		*hl_r = (size_t)(colon - 1 - p);
	} else {
		*hl_r = (size_t)(colon - p);
	}
	*host_r = p;
	return *hl_r > 0 ? 0 : -1;
}

/* Learns or notes a redirection: the node index to send to, or -1. */
static int redirect_take(struct rnodes *rn, const redisReply *r, int *ask_r)
{
	const char *host;
	size_t hl;
	unsigned slot;
	int port, i;

	if (r == NULL || r->type != REDIS_REPLY_ERROR ||
	    rn_redirect_parse(r->str, r->len, ask_r, &slot, &host, &hl, &port) < 0)
		return -1;
	if ((i = node_find_add(rn, host, hl, port)) < 0) {
		rn_set_error(rn, "redis: too many cluster nodes (more than %u)", RN_NODES_MAX);
		return -1;
	}
	if (!*ask_r) {
		if (rn->slot_node == NULL && (rn->slot_node = calloc(RK_SLOTS, 1)) == NULL) {
			rn_set_error(rn, "redis: out of memory");
			return -1;
		}
		rn->slot_node[slot] = (uint8_t)(i + 1);
	}
	return i;
}

int rn_redirected(struct rnodes *rn, const redisReply *r)
{
	int ask;

	return redirect_take(rn, r, &ask) >= 0;
}

/* The node for slot, connected; -1 with the error set. A node that cannot
 * be reached is forgotten and the next candidate tried. */
static int node_for(struct rnodes *rn, unsigned slot)
{
	unsigned tries;

	for (tries = 0; tries <= rn->n; tries++) {
		unsigned i = rn->slot_node != NULL && rn->slot_node[slot] != 0
		                     ? rn->slot_node[slot] - 1u
		                     : rn->dflt;

		if (node_ensure(rn, i) == 0)
			return (int)i;
		if (rn->n == 1)
			return -1;
		node_forget(rn, i);
	}
	return -1;
}

redisContext *rn_ctx(struct rnodes *rn, unsigned slot)
{
	int i = node_for(rn, slot & (RK_SLOTS - 1));

	return i < 0 ? NULL : rn->node[i].c;
}

void rn_drop(struct rnodes *rn, redisContext *c)
{
	unsigned i;

	for (i = 0; i < rn->n; i++)
		if (rn->node[i].c == c && c != NULL) {
			node_close(&rn->node[i]);
			if (rn->n > 1)
				node_forget(rn, i);
		}
}

/* Sends the formatted command cmd[0..len) (RESP) for slot; see
 * rn_command_argv(). what names it in errors. */
static redisReply *rn_send(struct rnodes *rn, unsigned slot, const char *cmd, size_t len,
                           const char *what, int resend)
{
	unsigned redirects = 0;
	int io_errors = 0, ask = 0, target = -1;

	slot &= RK_SLOTS - 1;
	for (;;) {
		struct rn_node *nd;
		void *reply = NULL;
		redisReply *r;
		int i;

		if (target >= 0)
			i = node_ensure(rn, (unsigned)target) == 0 ? target : -1;
		else
			i = node_for(rn, slot);
		if (i < 0)
			return NULL;
		nd = &rn->node[i];
		if (ask) {
			r = redisCommand(nd->c, "ASKING");
			freeReplyObject(r);
		}
		if (redisAppendFormattedCommand(nd->c, cmd, len) != REDIS_OK ||
		    redisGetReply(nd->c, &reply) != REDIS_OK || reply == NULL) {
			char where[300];

			freeReplyObject(reply);
			node_where(nd, where, sizeof(where));
			rn_set_error(rn, "redis %s: %s while sending %s", where,
			             nd->c->err != 0 ? nd->c->errstr : "no reply", what);
			rn_drop(rn, nd->c);
			if (!resend || ++io_errors > 1)
				return NULL;
			target = -1;
			ask = 0;
			continue;
		}
		r = reply;
		if (r->type == REDIS_REPLY_ERROR && redirects < RN_REDIRECTS_MAX) {
			int next = redirect_take(rn, r, &ask);

			if (next >= 0) {
				redirects++;
				freeReplyObject(r);
				target = next;
				continue;
			}
		}
		return r;
	}
}

redisReply *rn_command_argv(struct rnodes *rn, unsigned slot, int argc, const char **argv,
                            const size_t *lens, int resend)
{
	char *cmd = NULL;
	int len = redisFormatCommandArgv(&cmd, argc, argv, lens);
	redisReply *r;

	if (len < 0 || cmd == NULL) {
		rn_set_error(rn, "redis: out of memory");
		return NULL;
	}
	r = rn_send(rn, slot, cmd, (size_t)len, argv[0], resend);
	redisFreeCommand(cmd);
	return r;
}

/* The RESP bulk string at *p (within end): its bytes and length; *p moves
 * past it. -1 when malformed. */
static int resp_bulk(const char **p, const char *end, const char **s_r, size_t *len_r)
{
	const char *q = *p, *e;
	long v;

	if (q >= end || *q != '$')
		return -1;
	v = dec(q + 1, end, 512L * 1024 * 1024, &e);
	if (v < 0 || end - e < 2 || e[0] != '\r' || e[1] != '\n')
		return -1;
	e += 2;
	if ((size_t)(end - e) < (size_t)v + 2 || e[v] != '\r' || e[v + 1] != '\n')
		return -1;
	*s_r = e;
	*len_r = (size_t)v;
	*p = e + v + 2;
	return 0;
}

static int word_is(const char *s, size_t len, const char *w)
{
	return strlen(w) == len && strncasecmp(s, w, len) == 0;
}

/* The hash tag of a SCAN pattern, when it is a literal one ("rep:{3}:map:*":
 * "{3}", into pat): every key it can match is in that tag's slot, the slot
 * of the key "{3}" itself. */
static int pattern_tag(const char *pat, size_t len, const char **tag_r, size_t *tl_r)
{
	const char *open = memchr(pat, '{', len), *close, *c;

	if (open == NULL)
		return 0;
	close = memchr(open, '}', len - (size_t)(open - pat));
	if (close == NULL || close == open + 1)
		return 0;
	for (c = pat; c < close; c++)
		if (*c == '*' || *c == '?' || *c == '[' || *c == '\\')
			return 0; /* before or inside the tag: not a literal one */
	*tag_r = open;
	*tl_r = (size_t)(close - open + 1);
	return 1;
}

/* rn_cmd_slot(); for a SCAN of a tagged pattern, *tag_r and *tl_r (when not
 * NULL) get the tag ("{3}", into cmd). */
static int cmd_slot(const char *cmd, size_t len, unsigned *slot_r, const char **tag_r, size_t *tl_r)
{
	const char *p = cmd, *end = cmd + len, *e, *a[6];
	size_t al[6];
	long argc, i;

	if (len < 4 || cmd[0] != '*')
		return -1;
	argc = dec(cmd + 1, end, 1L << 30, &e);
	if (argc < 1 || end - e < 2 || e[0] != '\r' || e[1] != '\n')
		return -1;
	p = e + 2;
	for (i = 0; i < argc && i < 6; i++)
		if (resp_bulk(&p, end, &a[i], &al[i]) < 0)
			return -1;
	if (word_is(a[0], al[0], "EVAL") || word_is(a[0], al[0], "EVALSHA")) {
		if (argc < 4 || word_is(a[2], al[2], "0"))
			return 0;
		*slot_r = rk_key_slot(a[3], al[3]);
		return 1;
	}
	if (word_is(a[0], al[0], "SCAN")) {
		/* SCAN cursor MATCH pattern ...: keyless, but a tagged pattern
		 * only matches keys of one slot */
		for (i = 2; i + 1 < argc && i + 1 < 6; i += 2) {
			const char *tag;
			size_t tl;

			if (!word_is(a[i], al[i], "MATCH"))
				continue;
			if (!pattern_tag(a[i + 1], al[i + 1], &tag, &tl))
				return 0;
			*slot_r = rk_key_slot(tag, tl);
			if (tag_r != NULL) {
				*tag_r = tag;
				*tl_r = tl;
			}
			return 1;
		}
		return 0;
	}
	if (argc < 2 || word_is(a[0], al[0], "TIME") || word_is(a[0], al[0], "PING") ||
	    word_is(a[0], al[0], "PUBLISH") || word_is(a[0], al[0], "INFO") ||
	    word_is(a[0], al[0], "SCRIPT") || word_is(a[0], al[0], "CLUSTER") ||
	    word_is(a[0], al[0], "ECHO"))
		return 0;
	*slot_r = rk_key_slot(a[1], al[1]);
	return 1;
}

int rn_cmd_slot(const char *cmd, size_t len, unsigned *slot_r)
{
	return cmd_slot(cmd, len, slot_r, NULL, NULL);
}

/* 1 when the configured Redis is a cluster node (INFO cluster, asked once),
 * 0 when not or when it cannot tell. */
static int rn_cluster(struct rnodes *rn)
{
	redisReply *r;

	if (rn->cluster >= 0)
		return rn->cluster;
	if (node_for(rn, 0) < 0)
		return 0;
	r = redisCommand(rn->node[rn->dflt].c, "INFO cluster");
	if (r == NULL)
		return 0;
	rn->cluster = r->type == REDIS_REPLY_STRING && strstr(r->str, "cluster_enabled:1") != NULL;
	freeReplyObject(r);
	return rn->cluster;
}

/* Makes sure the node of a hash tag's slot ("{3}", tl bytes) is known on a
 * cluster: a keyless command routed by slot (SCAN of a tagged pattern)
 * cannot be redirected, so "EXISTS {3}" (a key of that slot) asks first.
 * The slot, or -1 on error. */
static int rn_learn(struct rnodes *rn, const char *tag, size_t tl)
{
	const char *argv[2] = {"EXISTS", tag};
	size_t lens[2] = {6, tl};
	unsigned slot = rk_key_slot(tag, tl);
	redisReply *r;

	if ((rn->slot_node != NULL && rn->slot_node[slot] != 0) || !rn_cluster(rn))
		return (int)slot;
	r = rn_command_argv(rn, slot, 2, argv, lens, 1);
	freeReplyObject(r);
	return (int)slot;
}

redisReply *rn_vcommand(struct rnodes *rn, const char *fmt, va_list ap)
{
	char *cmd = NULL;
	int len = redisvFormatCommand(&cmd, fmt, ap);
	redisReply *r;
	unsigned slot = 0;
	int keyed;

	if (len < 0 || cmd == NULL) {
		rn_set_error(rn, "redis: bad command or out of memory");
		return NULL;
	}
	{
		const char *tag = NULL;
		size_t tl = 0;

		keyed = cmd_slot(cmd, (size_t)len, &slot, &tag, &tl);
		if (keyed == 1 && tag != NULL)
			rn_learn(rn, tag, tl);
	}
	r = rn_send(rn, keyed == 1 ? slot : 0, cmd, (size_t)len, fmt, 0);
	redisFreeCommand(cmd);
	return r;
}

/* SCAN match on node i to the end; 0 or -1 (error set). */
static int scan_node(struct rnodes *rn, unsigned i, const char *match,
                     int (*cb)(const char *key, size_t len, void *aux), void *aux)
{
	char cursor[32] = "0";

	do {
		redisReply *r;
		size_t k;

		if (node_ensure(rn, i) < 0)
			return -1;
		r = redisCommand(rn->node[i].c, "SCAN %s MATCH %s COUNT 1000", cursor, match);
		if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
		    r->element[0]->type != REDIS_REPLY_STRING ||
		    r->element[1]->type != REDIS_REPLY_ARRAY) {
			rn_set_error(rn, "redis: SCAN: %s",
			             r == NULL                      ? rn->node[i].c->errstr
			             : r->type == REDIS_REPLY_ERROR ? r->str
			                                            : "unexpected reply");
			if (r == NULL)
				rn_drop(rn, rn->node[i].c);
			freeReplyObject(r);
			return -1;
		}
		snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
		for (k = 0; k < r->element[1]->elements; k++) {
			const redisReply *e = r->element[1]->element[k];

			if (e->type == REDIS_REPLY_STRING && cb(e->str, e->len, aux) < 0) {
				freeReplyObject(r);
				return 0;
			}
		}
		freeReplyObject(r);
	} while (strcmp(cursor, "0") != 0);
	return 0;
}

int rn_scan(struct rnodes *rn, const char *match, int (*cb)(const char *key, size_t len, void *aux),
            void *aux)
{
	unsigned i, n;
	redisReply *r;
	int seen[RN_NODES_MAX] = {0}, rc = 0;
	const char *tag;
	size_t tl;

	if (pattern_tag(match, strlen(match), &tag, &tl)) {
		int node = node_for(rn, (unsigned)rn_learn(rn, tag, tl));

		if (node < 0)
			return -1;
		return scan_node(rn, (unsigned)node, match, cb, aux);
	}
	if (!rn_cluster(rn)) {
		int node = node_for(rn, 0);

		return node < 0 ? -1 : scan_node(rn, (unsigned)node, match, cb, aux);
	}
	/* every master: CLUSTER SLOTS, {start, end, {host, port, id}, replicas} */
	if ((i = (unsigned)node_for(rn, 0)) >= RN_NODES_MAX ||
	    (r = redisCommand(rn->node[i].c, "CLUSTER SLOTS")) == NULL) {
		rn_set_error(rn, "redis: CLUSTER SLOTS: no reply");
		return -1;
	}
	if (r->type != REDIS_REPLY_ARRAY) {
		rn_set_error(rn, "redis: CLUSTER SLOTS: %s",
		             r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
		freeReplyObject(r);
		return -1;
	}
	n = 0;
	for (i = 0; i < r->elements && rc == 0; i++) {
		const redisReply *range = r->element[i], *master;
		int node;

		if (range->type != REDIS_REPLY_ARRAY || range->elements < 3 ||
		    (master = range->element[2])->type != REDIS_REPLY_ARRAY ||
		    master->elements < 2 || master->element[0]->type != REDIS_REPLY_STRING ||
		    master->element[1]->type != REDIS_REPLY_INTEGER)
			continue;
		node = node_find_add(rn, master->element[0]->str, master->element[0]->len,
		                     (int)master->element[1]->integer);
		if (node < 0) {
			rn_set_error(rn, "redis: too many cluster nodes (more than %u)",
			             RN_NODES_MAX);
			rc = -1;
		} else if (!seen[node]) {
			seen[node] = 1;
			n++;
			rc = scan_node(rn, (unsigned)node, match, cb, aux);
		}
	}
	freeReplyObject(r);
	if (rc == 0 && n == 0) {
		rn_set_error(rn, "redis: CLUSTER SLOTS named no master");
		return -1;
	}
	return rc;
}

unsigned long rn_connects(const struct rnodes *rn)
{
	return rn->connects;
}

unsigned rn_nodes(const struct rnodes *rn)
{
	return rn->n;
}

struct rnodes *rn_open(const char *host, int port, const char *unix_path, unsigned timeout_ms,
                       const char **error_r)
{
	static _Thread_local char open_err[RN_ERROR_MAX];
	struct rnodes *rn;

	if ((unix_path == NULL && host == NULL) || timeout_ms == 0) {
		*error_r = "redis: no address or no timeout";
		return NULL;
	}
	if ((rn = calloc(1, sizeof(*rn))) == NULL) {
		*error_r = "redis: out of memory";
		return NULL;
	}
	rn->timeout_ms = timeout_ms;
	rn->cluster = -1;
	rn->n = 1;
	rn->node[0].port = port;
	rn->node[0].host = host != NULL && unix_path == NULL ? strdup(host) : NULL;
	rn->node[0].unix_path = unix_path != NULL ? strdup(unix_path) : NULL;
	if (rn->node[0].host == NULL && rn->node[0].unix_path == NULL) {
		rn_close(&rn);
		*error_r = "redis: out of memory";
		return NULL;
	}
	if (node_ensure(rn, 0) < 0) {
		snprintf(open_err, sizeof(open_err), "%s", rn->err);
		rn_close(&rn);
		*error_r = open_err;
		return NULL;
	}
	return rn;
}

struct rnodes *rn_open_spec(const char *spec, unsigned timeout_ms, const char **error_r)
{
	char host[256];
	const char *unix_path;
	int port;

	if (rq_addr_parse(spec, host, sizeof(host), &port, &unix_path) < 0) {
		*error_r = "bad Redis address (expected HOST:PORT or a socket path)";
		return NULL;
	}
	return rn_open(unix_path != NULL ? NULL : host, port, unix_path, timeout_ms, error_r);
}

void rn_close(struct rnodes **rnp)
{
	struct rnodes *rn = rnp != NULL ? *rnp : NULL;
	unsigned i;

	if (rn == NULL)
		return;
	for (i = 0; i < rn->n; i++) {
		node_close(&rn->node[i]);
		free(rn->node[i].host);
		free(rn->node[i].unix_path);
	}
	free(rn->slot_node);
	free(rn);
	*rnp = NULL;
}

redisContext *rn_connect_for_key(const char *spec, const char *key, unsigned timeout_ms,
                                 const char **error_r)
{
	static _Thread_local char err[RN_ERROR_MAX];
	const char *argv[2] = {"EXISTS", key};
	struct rnodes *rn = rn_open_spec(spec, timeout_ms, error_r);
	redisContext *c;
	redisReply *r;
	unsigned slot;
	int i;

	if (rn == NULL)
		return NULL;
	slot = rk_key_slot(key, strlen(key));
	r = rn_command_argv(rn, slot, 2, argv, NULL, 1);
	if (r == NULL || r->type == REDIS_REPLY_ERROR) {
		snprintf(err, sizeof(err), "%s", r != NULL ? r->str : rn->err);
		freeReplyObject(r);
		rn_close(&rn);
		*error_r = err;
		return NULL;
	}
	freeReplyObject(r);
	/* the node that answered holds the connection: hand it over */
	i = node_for(rn, slot);
	if (i < 0) {
		snprintf(err, sizeof(err), "%s", rn->err);
		rn_close(&rn);
		*error_r = err;
		return NULL;
	}
	c = rn->node[i].c;
	rn->node[i].c = NULL;
	rn_close(&rn);
	return c;
}
