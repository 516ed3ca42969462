/*
 * nstatus.c - see nstatus.h.
 *
 * Two hiredis 0.14.1 async contexts on the daemon's event base: "sub" holds
 * the PSUBSCRIBE (a subscribed connection takes no other command), "cmd"
 * sends CONFIG GET/SET, the marks (one EVAL each: ZADD ... LT on Redis's own
 * clock, like rq_mark()) and the sweep flag. They live and die together:
 *
 *   DOWN -(retry_ev)-> CONNECTING -(psubscribe confirmed)-> UP
 *   any failure -> DOWN: close_ev frees what is left, retry_ev after backoff
 *
 * hiredis rules followed (as in proxy/marks.c): a context is never freed
 * inside one of its own callbacks (failures activate close_ev); hiredis
 * frees a context itself after a failed connect or a disconnect callback,
 * so those forget their pointer first; redisAsyncFree() calls every pending
 * callback with a NULL reply, which the callbacks ignore. hiredis 0.14 has
 * no timeouts for async commands: the watchdog fails a connect or a command
 * that gets no answer within NS_TIMEOUT_MS, and TCP keepalive finds a
 * subscription whose peer vanished.
 */
#include "nstatus.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include <event2/event.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "imapferry/log.h"
#include "imapferry/rkeys.h"
#include "imapferry/rqueue.h"

#define NS_TIMEOUT_MS    2000u /* connect, subscribe, any command's answer */
#define NS_WATCHDOG_MS   250u
#define NS_BACKOFF_MIN   100u
#define NS_BACKOFF_MAX   5000u
#define NS_INFLIGHT_MAX  1024u /* marks sent and not answered yet */
#define NS_USER_MAX      512u  /* longer user names are ignored (as the proxy does) */
#define NS_FOLDER_MAX    4096u /* canonical folder name buffer */
#define NS_EVENTS_NEEDED "K$g" /* keyspace events of string commands and DEL */

/* mark. KEYS: due. ARGV: member, delay ms. The due time is on Redis's clock,
 * as the work queue's own mark (lib/rqueue.c). */
static const char ns_mark_lua[] = "local t = redis.call('TIME')\n"
                                  "local now = t[1] * 1000 + math.floor(t[2] / 1000)\n"
                                  "redis.call('ZADD', KEYS[1], 'LT', now + tonumber(ARGV[2]), "
                                  "ARGV[1])\n"
                                  "return 1\n";

enum ns_state { NS_DOWN, NS_CONNECTING, NS_UP };

struct sy_nstatus {
	struct event_base *base;
	char host[256];
	int port;
	char *unix_path;
	char where[300]; /* the address, for the logs */
	char prefix[NS_PREFIX_MAX + 1];
	size_t prefix_len;
	char pattern[2 * NS_PREFIX_MAX + 32]; /* __keyspace@*__:<escaped prefix>* */
	redisAsyncContext *sub, *cmd;
	enum ns_state state;
	int closing;        /* inside our own redisAsyncFree() */
	int ever_up;        /* a later subscription is a reconnect: sweep */
	int sweep_inflight; /* a SET rep:sweep_all is unanswered */
	int config_warned;  /* the notify-keyspace-events advice was logged */
	int down_logged;    /* the outage was logged (once per outage) */
	unsigned inflight;  /* commands on cmd without an answer */
	unsigned backoff_ms;
	struct timespec progress; /* connect start, or the last answer */
	struct event *close_ev, *retry_ev, *watchdog_ev;
	struct sy_nstatus_stats st;
};

static double ms_since(const struct timespec *t)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - t->tv_sec) * 1e3 + (double)(now.tv_nsec - t->tv_nsec) / 1e6;
}

static void progress_now(struct sy_nstatus *ns)
{
	clock_gettime(CLOCK_MONOTONIC, &ns->progress);
}

static void ms_to_tv(unsigned ms, struct timeval *tv)
{
	tv->tv_sec = (time_t)(ms / 1000u);
	tv->tv_usec = (suseconds_t)(ms % 1000u) * 1000;
}

/* --- failure, close, reconnect --- */

static void ns_fail(struct sy_nstatus *ns, const char *what, const char *why)
{
	if (ns->state == NS_DOWN)
		return;
	if (!ns->down_logged) {
		log_msg(LOG_LVL_WARN, "nstatus",
		        "Redis %s: %s: %s; notify_status events are missed until it is back "
		        "(then every user is quick-checked)",
		        ns->where, what, why);
		ns->down_logged = 1;
	} else {
		log_debug(LOG_CAT_REDIS, "nstatus: Redis: %s: %s", what, why);
	}
	ns->state = NS_DOWN;
	ns->st.up = 0;
	event_active(ns->close_ev, EV_TIMEOUT, 0);
}

static void close_cb(evutil_socket_t fd, short what, void *arg)
{
	struct sy_nstatus *ns = arg;
	struct timeval tv;

	(void)fd;
	(void)what;
	ns->closing = 1;
	if (ns->sub != NULL) {
		redisAsyncContext *ac = ns->sub;

		ns->sub = NULL;
		redisAsyncFree(ac);
	}
	if (ns->cmd != NULL) {
		redisAsyncContext *ac = ns->cmd;

		ns->cmd = NULL;
		redisAsyncFree(ac);
	}
	ns->closing = 0;
	ns->inflight = 0;
	ns->sweep_inflight = 0;
	ms_to_tv(ns->backoff_ms, &tv);
	evtimer_add(ns->retry_ev, &tv);
	ns->backoff_ms = ns->backoff_ms * 2 > NS_BACKOFF_MAX ? NS_BACKOFF_MAX : ns->backoff_ms * 2;
}

static void on_connect(const redisAsyncContext *ac, int status)
{
	struct sy_nstatus *ns = ac->data;

	if (ns == NULL || ns->closing)
		return;
	if (status != REDIS_OK) {
		/* hiredis frees ac when we return */
		if (ns->sub == ac)
			ns->sub = NULL;
		if (ns->cmd == ac)
			ns->cmd = NULL;
		ns_fail(ns, "cannot connect", ac->errstr);
	}
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
	struct sy_nstatus *ns = ac->data;

	(void)status;
	if (ns == NULL || ns->closing)
		return; /* our own redisAsyncFree() */
	/* closed by the server or an I/O error: hiredis frees ac when we return */
	if (ns->sub == ac)
		ns->sub = NULL;
	if (ns->cmd == ac)
		ns->cmd = NULL;
	ns_fail(ns, "connection lost", ac->errstr[0] != '\0' ? ac->errstr : "closed by the server");
}

/* --- commands on cmd --- */

static int cmd_send(struct sy_nstatus *ns, redisCallbackFn *fn, int argc, const char **argv,
                    const size_t *lens)
{
	if (ns->cmd == NULL || ns->state == NS_DOWN)
		return -1;
	if (redisAsyncCommandArgv(ns->cmd, fn, ns, argc, argv, lens) != REDIS_OK) {
		ns_fail(ns, "command", "cannot queue a command");
		return -1;
	}
	if (ns->inflight++ == 0)
		progress_now(ns); /* the watchdog times the oldest answer from here */
	return 0;
}

/* Common head of every cmd reply: NULL when the reply is to be ignored. */
static struct sy_nstatus *cmd_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
	struct sy_nstatus *ns = privdata;

	if (reply == NULL || ns == NULL || ns->closing || ns->cmd != ac || ns->state == NS_DOWN)
		return NULL;
	if (ns->inflight > 0)
		ns->inflight--;
	progress_now(ns);
	return ns;
}

static void sweep_cb(redisAsyncContext *ac, void *reply, void *privdata)
{
	struct sy_nstatus *ns = cmd_reply(ac, reply, privdata);
	const redisReply *r = reply;

	if (ns == NULL)
		return;
	ns->sweep_inflight = 0;
	if (r->type == REDIS_REPLY_ERROR)
		log_msg(LOG_LVL_WARN, "nstatus", "SET %s: %s", RK_KEY_SWEEP_ALL, r->str);
}

/* Asks every daemon for a quick check of every known user: what the key
 * changes we could not see (an outage, an overload) might have been. */
static void request_sweep(struct sy_nstatus *ns, const char *why)
{
	char val[32];
	struct timeval tv;
	const char *argv[3];
	size_t lens[3];

	if (ns->sweep_inflight)
		return;
	gettimeofday(&tv, NULL);
	snprintf(val, sizeof(val), "%lld", (long long)tv.tv_sec * 1000 + tv.tv_usec / 1000);
	argv[0] = "SET";
	argv[1] = RK_KEY_SWEEP_ALL;
	argv[2] = val;
	for (int i = 0; i < 3; i++)
		lens[i] = strlen(argv[i]);
	if (cmd_send(ns, sweep_cb, 3, argv, lens) == 0) {
		ns->sweep_inflight = 1;
		ns->st.sweeps++;
		log_msg(LOG_LVL_NOTICE, "nstatus", "%s: quick check of every user requested (%s)",
		        why, RK_KEY_SWEEP_ALL);
	}
}

static void mark_cb(redisAsyncContext *ac, void *reply, void *privdata)
{
	struct sy_nstatus *ns = cmd_reply(ac, reply, privdata);
	const redisReply *r = reply;

	if (ns == NULL)
		return;
	if (r->type == REDIS_REPLY_ERROR) {
		log_msg(LOG_LVL_WARN, "nstatus", "mark: %s", r->str);
		return;
	}
	ns->st.marks++;
}

static void mark(struct sy_nstatus *ns, const char *user, const char *folder, unsigned delay_ms)
{
	char key[64], member[NS_USER_MAX + NS_FOLDER_MAX + 2], delay[16];
	const char *argv[6];
	size_t lens[6];
	int mlen;

	if (ns->inflight >= NS_INFLIGHT_MAX) {
		/* Redis is slow: do not let hiredis's buffers grow; whatever is
		 * dropped is found by the sweep */
		ns->st.dropped++;
		request_sweep(ns, "too many marks unanswered");
		return;
	}
	mlen = rk_member(member, sizeof(member), user, folder);
	if (mlen < 0 || rk_key_due(key, sizeof(key), rk_shard(user)) < 0) {
		ns->st.ignored++;
		return;
	}
	snprintf(delay, sizeof(delay), "%u", delay_ms);
	argv[0] = "EVAL";
	argv[1] = ns_mark_lua;
	argv[2] = "1";
	argv[3] = key;
	argv[4] = member;
	argv[5] = delay;
	for (int i = 0; i < 6; i++)
		lens[i] = strlen(argv[i]);
	lens[4] = (size_t)mlen;
	if (cmd_send(ns, mark_cb, 6, argv, lens) == 0)
		log_debug(LOG_CAT_REDIS, "nstatus: mark %s [%s] in %u ms", user, folder, delay_ms);
}

/* --- notify-keyspace-events --- */

static void config_advice(struct sy_nstatus *ns, const char *current, const char *why)
{
	char want[64];
	size_t n = 0;

	if (ns->config_warned)
		return;
	ns->config_warned = 1;
	/* the classes already set, plus the missing ones */
	for (const char *p = current != NULL ? current : ""; *p != '\0' && n + 4 < sizeof(want);
	     p++)
		want[n++] = *p;
	for (const char *p = NS_EVENTS_NEEDED; *p != '\0'; p++) {
		if (memchr(want, *p, n) == NULL && n + 1 < sizeof(want))
			want[n++] = *p;
	}
	want[n] = '\0';
	log_msg(LOG_LVL_WARN, "nstatus",
	        "cannot check or enable Redis keyspace notifications (%s): unless redis.conf "
	        "already enables them, put \"notify-keyspace-events %s\" there (or run CONFIG "
	        "SET notify-keyspace-events %s), or --notifystatus sees nothing",
	        why, want, want);
}

static void config_set_cb(redisAsyncContext *ac, void *reply, void *privdata)
{
	struct sy_nstatus *ns = cmd_reply(ac, reply, privdata);
	const redisReply *r = reply;

	if (ns == NULL)
		return;
	if (r->type == REDIS_REPLY_ERROR)
		config_advice(ns, NULL, r->str);
	else
		log_msg(LOG_LVL_INFO, "nstatus", "Redis notify-keyspace-events extended for %s",
		        ns->prefix);
}

/* The classes in flags that notify-keyspace-events needs, "A" standing for
 * every type class ("g$lshzxe..."). */
static int config_has(const char *flags, char c)
{
	if (strchr(flags, c) != NULL)
		return 1;
	return c != 'K' && c != 'E' && strchr(flags, 'A') != NULL;
}

static void config_get_cb(redisAsyncContext *ac, void *reply, void *privdata)
{
	struct sy_nstatus *ns = cmd_reply(ac, reply, privdata);
	const redisReply *r = reply;
	char flags[64], set[64];
	const char *argv[4];
	size_t lens[4], n;

	if (ns == NULL)
		return;
	if (r->type == REDIS_REPLY_ERROR) {
		config_advice(ns, NULL, r->str);
		return;
	}
	if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
	    r->element[1]->type != REDIS_REPLY_STRING || r->element[1]->len >= sizeof(flags)) {
		config_advice(ns, NULL, "unexpected CONFIG GET reply");
		return;
	}
	memcpy(flags, r->element[1]->str, r->element[1]->len);
	flags[r->element[1]->len] = '\0';
	n = strlen(flags);
	memcpy(set, flags, n + 1);
	for (const char *p = NS_EVENTS_NEEDED; *p != '\0'; p++) {
		if (!config_has(flags, *p) && n + 1 < sizeof(set)) {
			set[n++] = *p;
			set[n] = '\0';
		}
	}
	if (strcmp(set, flags) == 0)
		return; /* already enough */
	argv[0] = "CONFIG";
	argv[1] = "SET";
	argv[2] = "notify-keyspace-events";
	argv[3] = set;
	for (int i = 0; i < 4; i++)
		lens[i] = strlen(argv[i]);
	cmd_send(ns, config_set_cb, 4, argv, lens);
}

/* --- the subscription --- */

/* "__keyspace@<db>__:<prefix><user>/status/<box>" with event "set" or "del". */
static void on_event(struct sy_nstatus *ns, const char *chan, size_t chan_len, const char *ev)
{
	const char *key = NULL, *rest, *sep, *end = chan + chan_len;
	char user[NS_USER_MAX + 1], folder[NS_FOLDER_MAX];
	size_t user_len;

	ns->st.events++;
	for (const char *p = chan; p + 3 <= end; p++) {
		if (memcmp(p, "__:", 3) == 0) {
			key = p + 3;
			break;
		}
	}
	if (key == NULL || (size_t)(end - key) <= ns->prefix_len ||
	    memcmp(key, ns->prefix, ns->prefix_len) != 0)
		goto ignored;
	rest = key + ns->prefix_len;
	sep = NULL;
	for (const char *p = rest; p + 8 <= end; p++) {
		if (memcmp(p, "/status/", 8) == 0) {
			sep = p;
			break;
		}
	}
	if (sep == NULL || sep == rest || sep + 8 == end)
		goto ignored;
	user_len = (size_t)(sep - rest);
	if (user_len > NS_USER_MAX || memchr(rest, '\0', user_len) != NULL)
		goto ignored;
	memcpy(user, rest, user_len);
	user[user_len] = '\0';
	if (strcmp(ev, "set") == 0) {
		/* Dovecot's key holds its internal mailbox name: UTF-8 already,
		 * INBOX in upper case, the namespace's separator */
		if (rk_folder_canon(folder, sizeof(folder), sep + 8, (size_t)(end - (sep + 8)), 1,
		                    0) < 0)
			goto ignored;
		mark(ns, user, folder, RK_DEBOUNCE_HIGH_MS);
	} else if (strcmp(ev, "del") == 0) {
		/* a mailbox deleted or renamed: the folder tree changed */
		mark(ns, user, RK_FOLDER_ALL, RK_DEBOUNCE_LOW_MS);
	} else {
		goto ignored; /* expire, expired (a dict TTL) ... */
	}
	return;
ignored:
	ns->st.ignored++;
}

static void sub_cb(redisAsyncContext *ac, void *reply, void *privdata)
{
	struct sy_nstatus *ns = privdata;
	const redisReply *r = reply;
	const redisReply *kind;

	if (r == NULL || ns == NULL || ns->closing || ns->sub != ac || ns->state == NS_DOWN)
		return;
	if (r->type == REDIS_REPLY_ERROR) {
		ns_fail(ns, "PSUBSCRIBE", r->str);
		return;
	}
	if (r->type != REDIS_REPLY_ARRAY || r->elements < 3 ||
	    r->element[0]->type != REDIS_REPLY_STRING)
		return;
	kind = r->element[0];
	if (strcmp(kind->str, "pmessage") == 0 && r->elements == 4 &&
	    r->element[2]->type == REDIS_REPLY_STRING &&
	    r->element[3]->type == REDIS_REPLY_STRING) {
		if (ns->state == NS_UP)
			on_event(ns, r->element[2]->str, r->element[2]->len, r->element[3]->str);
	} else if (strcmp(kind->str, "psubscribe") == 0 && ns->state == NS_CONNECTING) {
		ns->state = NS_UP;
		ns->st.up = 1;
		ns->st.reconnects++;
		ns->backoff_ms = NS_BACKOFF_MIN;
		if (ns->down_logged)
			log_msg(LOG_LVL_NOTICE, "nstatus", "Redis is back: watching %s again",
			        ns->pattern);
		else
			log_msg(LOG_LVL_INFO, "nstatus", "watching %s", ns->pattern);
		ns->down_logged = 0;
		/* what changed while we were not subscribed is unknown */
		if (ns->ever_up)
			request_sweep(ns, "notify_status subscription restored");
		ns->ever_up = 1;
	}
}

/* --- connect --- */

static redisAsyncContext *ns_connect_one(struct sy_nstatus *ns)
{
	redisAsyncContext *ac;

	if (ns->unix_path != NULL)
		ac = redisAsyncConnectUnix(ns->unix_path);
	else
		ac = redisAsyncConnect(ns->host, ns->port);
	if (ac == NULL)
		return NULL;
	if (ac->err) {
		redisAsyncFree(ac);
		return NULL;
	}
	ac->data = ns;
	if (redisLibeventAttach(ac, ns->base) != REDIS_OK) {
		redisAsyncFree(ac);
		return NULL;
	}
	redisEnableKeepAlive(&ac->c); /* a vanished peer is found even when idle */
	redisAsyncSetConnectCallback(ac, on_connect);
	redisAsyncSetDisconnectCallback(ac, on_disconnect);
	return ac;
}

static void retry_cb(evutil_socket_t fd, short what, void *arg)
{
	struct sy_nstatus *ns = arg;
	const char *argv[3];
	size_t lens[3];

	(void)fd;
	(void)what;
	if (ns->state != NS_DOWN || ns->sub != NULL || ns->cmd != NULL)
		return;
	ns->state = NS_CONNECTING;
	progress_now(ns);
	ns->sub = ns_connect_one(ns);
	ns->cmd = ns_connect_one(ns);
	if (ns->sub == NULL || ns->cmd == NULL) {
		ns_fail(ns, "cannot connect", "out of memory or no socket");
		return;
	}
	/* queued until connected; the answers come in this order */
	argv[0] = "PSUBSCRIBE";
	argv[1] = ns->pattern;
	lens[0] = strlen(argv[0]);
	lens[1] = strlen(argv[1]);
	if (redisAsyncCommandArgv(ns->sub, sub_cb, ns, 2, argv, lens) != REDIS_OK) {
		ns_fail(ns, "PSUBSCRIBE", "cannot queue it");
		return;
	}
	argv[0] = "CONFIG";
	argv[1] = "GET";
	argv[2] = "notify-keyspace-events";
	for (int i = 0; i < 3; i++)
		lens[i] = strlen(argv[i]);
	cmd_send(ns, config_get_cb, 3, argv, lens);
}

static void watchdog_cb(evutil_socket_t fd, short what, void *arg)
{
	struct sy_nstatus *ns = arg;

	(void)fd;
	(void)what;
	if (ns->state == NS_CONNECTING && ms_since(&ns->progress) > NS_TIMEOUT_MS)
		ns_fail(ns, "connect", "no answer in time");
	else if (ns->state == NS_UP && ns->inflight > 0 && ms_since(&ns->progress) > NS_TIMEOUT_MS)
		ns_fail(ns, "command", "no answer in time");
}

/* --- public --- */

struct sy_nstatus *sy_nstatus_new(struct event_base *base, const char *redis, const char *prefix,
                                  const char **error_r)
{
	struct sy_nstatus *ns;
	const char *unix_path = NULL;
	struct timeval tv;
	size_t n = 0;

	if (prefix == NULL || prefix[0] == '\0' || strlen(prefix) > NS_PREFIX_MAX ||
	    strchr(prefix, ':') != NULL) {
		*error_r =
		        "--notifystatus: want the notify_status_dict's prefix (1 to 256 bytes, no "
		        "':')";
		return NULL;
	}
	ns = calloc(1, sizeof(*ns));
	if (ns == NULL) {
		*error_r = "out of memory";
		return NULL;
	}
	if (redis == NULL ||
	    rq_addr_parse(redis, ns->host, sizeof(ns->host), &ns->port, &unix_path) < 0) {
		free(ns);
		*error_r = "--notifystatus needs --redis HOST:PORT (or a socket path)";
		return NULL;
	}
	if (unix_path != NULL && (ns->unix_path = strdup(unix_path)) == NULL) {
		free(ns);
		*error_r = "out of memory";
		return NULL;
	}
	ns->base = base;
	if (unix_path != NULL)
		snprintf(ns->where, sizeof(ns->where), "%s", unix_path);
	else
		snprintf(ns->where, sizeof(ns->where), "%s:%d", ns->host, ns->port);
	ns->prefix_len = strlen(prefix);
	memcpy(ns->prefix, prefix, ns->prefix_len + 1);
	/* every database (Dovecot's dict-redis may use db=N); glob
	 * characters of the prefix escaped */
	n = (size_t)snprintf(ns->pattern, sizeof(ns->pattern), "__keyspace@*__:");
	for (const char *p = prefix; *p != '\0'; p++) {
		if (strchr("*?[]\\", *p) != NULL)
			ns->pattern[n++] = '\\';
		ns->pattern[n++] = *p;
	}
	ns->pattern[n++] = '*';
	ns->pattern[n] = '\0';
	ns->backoff_ms = NS_BACKOFF_MIN;
	ns->state = NS_DOWN;
	ns->close_ev = event_new(base, -1, 0, close_cb, ns);
	ns->retry_ev = evtimer_new(base, retry_cb, ns);
	ns->watchdog_ev = event_new(base, -1, EV_PERSIST, watchdog_cb, ns);
	if (ns->close_ev == NULL || ns->retry_ev == NULL || ns->watchdog_ev == NULL) {
		sy_nstatus_free(&ns);
		*error_r = "out of memory";
		return NULL;
	}
	ms_to_tv(NS_WATCHDOG_MS, &tv);
	event_add(ns->watchdog_ev, &tv);
	ms_to_tv(0, &tv);
	evtimer_add(ns->retry_ev, &tv); /* connect from the loop */
	return ns;
}

void sy_nstatus_free(struct sy_nstatus **nsp)
{
	struct sy_nstatus *ns;

	if (nsp == NULL || *nsp == NULL)
		return;
	ns = *nsp;
	*nsp = NULL;
	ns->closing = 1;
	if (ns->sub != NULL)
		redisAsyncFree(ns->sub);
	if (ns->cmd != NULL)
		redisAsyncFree(ns->cmd);
	if (ns->close_ev != NULL)
		event_free(ns->close_ev);
	if (ns->retry_ev != NULL)
		event_free(ns->retry_ev);
	if (ns->watchdog_ev != NULL)
		event_free(ns->watchdog_ev);
	free(ns->unix_path);
	free(ns);
}

void sy_nstatus_stats(const struct sy_nstatus *ns, struct sy_nstatus_stats *stats_r)
{
	*stats_r = ns->st;
}
