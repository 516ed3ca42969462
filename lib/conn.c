/* conn.c - see include/imapferry/conn.h */
#include "imapferry/conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <event2/bufferevent_ssl.h>

#include "imapferry/log.h"
#include "imapferry/tls.h"

/* Bytes one read of a plain socket may take. libevent 2.1's own reads take
 * 4 KiB at most, each after an ioctl(FIONREAD): a 1 MB FETCH would cost 250
 * wake-ups of three system calls. */
#define CONN_READ_MAX (64u << 10)
/* What a read asks for at first: the size adapts (doubling while reads fill
 * it, halving while they use a quarter), so a stream of small commands does
 * not make the input buffer allocate 64 KiB for every read. */
#define CONN_READ_MIN (4u << 10)
/* Addresses tried per connect; more are ignored. */
#define CONN_MAX_ADDRS 16
/*
 * Encrypted bytes a TLS filter may queue on its socket bufferevent before it
 * stops encrypting: without a high mark the filter would encrypt everything
 * at once, so memory would grow with the data and on_drained would fire long
 * before the bytes left. The low mark lets it refill before the socket runs
 * dry.
 */
#define CONN_TLS_WIRE_HIGH (128 * 1024)
#define CONN_TLS_WIRE_LOW  (32 * 1024)
/* Defaults for the keepalive parameters left at 0. */
#define CONN_KEEPALIVE_IDLE_S  60
#define CONN_KEEPALIVE_INTVL_S 15
#define CONN_KEEPALIVE_CNT     4

enum conn_state {
	CONN_ST_NEW,        /* client: conn_connect() not called yet */
	CONN_ST_RESOLVING,  /* client: waiting for addresses */
	CONN_ST_CONNECTING, /* client: TCP connect to addrs[addr_next - 1] */
	CONN_ST_ACCEPTED,   /* server, plain: CONNECTED not reported yet */
	CONN_ST_HANDSHAKE,  /* implicit TLS handshake (either side) */
	CONN_ST_OPEN,       /* established: data flows */
	CONN_ST_UPGRADING,  /* STARTTLS handshake */
	CONN_ST_CLOSED,     /* a terminal event was reported */
	CONN_ST_COUNT
};

static const char *const conn_state_names[] = {
        "new", "resolving", "connecting", "accepted", "handshake", "open", "upgrading", "closed",
};
_Static_assert(sizeof(conn_state_names) / sizeof(conn_state_names[0]) == CONN_ST_COUNT,
               "conn state names");

static const char *const conn_event_names[] = {
        "connected", "tls-upgraded", "error", "eof", "timeout",
};
_Static_assert(sizeof(conn_event_names) / sizeof(conn_event_names[0]) == CONN_EV_COUNT,
               "conn event names");

/* Work for the next loop pass (kick_ev), so that no callback ever runs from
 * inside a conn_* call. */
#define CONN_KICK_START     0x01u /* resolve and connect */
#define CONN_KICK_CONNECTED 0x02u /* report CONNECTED of a plain accepted socket */
#define CONN_KICK_READ      0x04u /* offer buffered input after a resume */
#define CONN_KICK_EOF       0x08u /* report an EOF held back for unread data */

/*
 * An evdns lookup outlives a cancel (evdns reports the cancel through the
 * callback on a later pass), so it points to the connection through this
 * holder, which the callback always frees.
 */
struct conn_dns_req {
	struct conn *conn; /* NULL once cancelled */
	struct evdns_getaddrinfo_request *req;
};

struct conn {
	struct event_base *base; /* borrowed */
	struct evdns_base *dns;  /* borrowed, may be NULL */
	enum conn_state state;
	int server; /* made by conn_new_accepted() */

	char *host; /* client: as given */
	uint16_t port;
	enum conn_mode mode;
	int host_numeric;
	struct tls_client_ctx *tls_client; /* own reference */
	struct tls_server_ctx *tls_server; /* own reference */
	int verify_peer;

	unsigned connect_timeout_ms, read_timeout_ms, write_timeout_ms;
	int keepalive;
	int family; /* AF_INET, AF_INET6 or 0 (conn_opts.family) */
	unsigned keepalive_idle_s, keepalive_intvl_s, keepalive_cnt;
	size_t read_high, write_low;

	conn_read_cb *on_read;
	conn_event_cb *on_event;
	conn_drained_cb *on_drained;
	void *aux;

	/* The socket bufferevent (while connecting: of the current attempt)
	 * and the one data flows through: the socket one or a TLS filter
	 * over it, which owns it (and the SSL) then. bev is NULL until data
	 * can be queued on it. */
	struct bufferevent *sock_bev;
	struct bufferevent *bev;
	SSL *ssl; /* borrowed from the filter */
	int tls_up, tls_failed;
	struct evbuffer *pre_out; /* client output queued before bev exists */
	struct evbuffer *cnt_in, *cnt_out;
	struct evbuffer_cb_entry *cnt_in_cb, *cnt_out_cb;

	struct event *kick_ev;
	unsigned kick;
	struct event *timer_ev; /* connect / handshake deadline */
	struct conn_dns_req *dns_req;

	struct sockaddr_storage addrs[CONN_MAX_ADDRS];
	socklen_t addr_lens[CONN_MAX_ADDRS];
	unsigned n_addrs, addr_next, n_failed;
	char last_addr[INET6_ADDRSTRLEN];
	int last_errno;
	char attempts[256]; /* "addr: error; addr: error" */

	int read_paused, eof_pending;
	/* Plain established socket: output is written straight from the loop
	 * pass that queued it (flush_ev), the bufferevent's write event is
	 * only enabled while the kernel refuses bytes; input is read by our
	 * own persistent read event (read_ev), up to CONN_READ_MAX at a time,
	 * with the bufferevent's reading disabled for good. */
	int direct, flush_armed;
	struct event *flush_ev;
	struct event *read_ev;
	int read_armed;    /* read_ev added */
	int read_done;     /* direct reading saw EOF or an error */
	size_t read_ask;   /* bytes the next direct read asks for */
	size_t in_offered; /* input length after the last offer */
	unsigned busy;     /* depth of our callbacks on the stack */
	int freed;         /* conn_free() ran while busy */

	uint64_t bytes_in, bytes_out;
	size_t discarded;
	char peer[300];
	char errbuf[768];
};

static void conn_kick_cb(evutil_socket_t fd, short what, void *arg);
static void conn_flush_cb(evutil_socket_t fd, short what, void *arg);
static void conn_sock_read_cb(evutil_socket_t fd, short what, void *arg);
static void conn_direct_read_update(struct conn *c);
static void conn_timer_cb(evutil_socket_t fd, short what, void *arg);
static void conn_bev_read_cb(struct bufferevent *bev, void *arg);
static void conn_bev_write_cb(struct bufferevent *bev, void *arg);
static void conn_bev_event_cb(struct bufferevent *bev, short what, void *arg);
static void conn_try_next(struct conn *c);
static void conn_destroy(struct conn *c);

const char *conn_event_name(enum conn_event ev)
{
	return (unsigned)ev < CONN_EV_COUNT ? conn_event_names[ev] : "?";
}

void conn_opts_init(struct conn_opts *opts)
{
	memset(opts, 0, sizeof(*opts));
	opts->connect_timeout_ms = 30000;
	opts->write_timeout_ms = 60000;
}

/* ---- small helpers ---- */

/* "5.0 s", "0.250 s" */
static const char *conn_secs(char *buf, size_t size, unsigned ms)
{
	if (ms % 100 == 0)
		snprintf(buf, size, "%u.%u s", ms / 1000, ms % 1000 / 100);
	else
		snprintf(buf, size, "%u.%03u s", ms / 1000, ms % 1000);
	return buf;
}

/* The address of sa as text, without port. */
static const char *conn_addr_str(const struct sockaddr *sa, char *buf, size_t size)
{
	const void *addr = sa->sa_family == AF_INET6
	                           ? (const void *)&((const struct sockaddr_in6 *)sa)->sin6_addr
	                           : (const void *)&((const struct sockaddr_in *)sa)->sin_addr;

	if ((sa->sa_family != AF_INET && sa->sa_family != AF_INET6) ||
	    inet_ntop(sa->sa_family, addr, buf, (socklen_t)size) == NULL)
		snprintf(buf, size, "(address family %d)", sa->sa_family);
	return buf;
}

static void conn_set_peer(struct conn *c, const char *host, unsigned port)
{
	if (strchr(host, ':') != NULL)
		snprintf(c->peer, sizeof(c->peer), "[%s]:%u", host, port);
	else
		snprintf(c->peer, sizeof(c->peer), "%s:%u", host, port);
}

static void conn_set_sockopts(struct conn *c, evutil_socket_t fd, int family)
{
	int one = 1;
	int idle = (int)(c->keepalive_idle_s != 0 ? c->keepalive_idle_s : CONN_KEEPALIVE_IDLE_S);
	int intvl =
	        (int)(c->keepalive_intvl_s != 0 ? c->keepalive_intvl_s : CONN_KEEPALIVE_INTVL_S);
	int cnt = (int)(c->keepalive_cnt != 0 ? c->keepalive_cnt : CONN_KEEPALIVE_CNT);

	if (family != AF_INET && family != AF_INET6)
		return;
	/* IMAP is request/response with small writes: Nagle only adds
	 * latency. */
	if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0)
		log_warn("%s: cannot set TCP_NODELAY: %s", c->peer, strerror(errno));
	if (!c->keepalive)
		return;
	if (setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one)) < 0 ||
	    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle)) < 0 ||
	    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl)) < 0 ||
	    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt)) < 0)
		log_warn("%s: cannot enable TCP keepalive: %s", c->peer, strerror(errno));
}

static void conn_set_state(struct conn *c, enum conn_state state)
{
	log_debug(LOG_CAT_NET, "conn %s: %s -> %s", c->peer, conn_state_names[c->state],
	          conn_state_names[state]);
	c->state = state;
}

static void conn_kick(struct conn *c, unsigned what)
{
	c->kick |= what;
	event_active(c->kick_ev, EV_TIMEOUT, 0);
}

static void conn_arm_timer(struct conn *c)
{
	struct timeval tv;

	if (c->connect_timeout_ms == 0)
		return;
	tv.tv_sec = c->connect_timeout_ms / 1000;
	tv.tv_usec = (suseconds_t)(c->connect_timeout_ms % 1000) * 1000;
	evtimer_add(c->timer_ev, &tv);
}

/* Entry and exit of every callback libevent makes into this file: the
 * memory of a connection freed meanwhile is released on the way out. */
static void conn_enter(struct conn *c)
{
	c->busy++;
}

static void conn_leave(struct conn *c)
{
	if (--c->busy == 0 && c->freed)
		conn_destroy(c);
}

/* ---- byte counters: evbuffer callbacks on the data bufferevent ---- */

static void conn_count_in(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
	struct conn *c = arg;

	(void)buf;
	c->bytes_in += info->n_added;
	/* The caller consumed input: an EOF held back may be due now, and
	 * direct reading may go on below the high mark. */
	if (info->n_deleted > 0 && c->eof_pending)
		conn_kick(c, CONN_KICK_EOF);
	if (info->n_deleted > 0 && c->direct && !c->read_armed)
		conn_direct_read_update(c);
}

static void conn_count_out(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
	struct conn *c = arg;

	(void)buf;
	c->bytes_out += info->n_deleted;
	if (info->n_added > 0 && c->direct && !c->flush_armed) {
		c->flush_armed = 1;
		event_active(c->flush_ev, EV_WRITE, 0);
	}
}

static void conn_detach_counters(struct conn *c)
{
	if (c->cnt_in_cb != NULL)
		evbuffer_remove_cb_entry(c->cnt_in, c->cnt_in_cb);
	if (c->cnt_out_cb != NULL)
		evbuffer_remove_cb_entry(c->cnt_out, c->cnt_out_cb);
	c->cnt_in_cb = c->cnt_out_cb = NULL;
	c->cnt_in = c->cnt_out = NULL;
}

/* Makes bev the bufferevent data flows through. */
static void conn_attach_top(struct conn *c, struct bufferevent *bev)
{
	c->bev = bev;
	bufferevent_setcb(bev, conn_bev_read_cb, conn_bev_write_cb, conn_bev_event_cb, c);
	bufferevent_setwatermark(bev, EV_READ, 0, c->read_high);
	bufferevent_setwatermark(bev, EV_WRITE, c->write_low, 0);
	c->cnt_in = bufferevent_get_input(bev);
	c->cnt_out = bufferevent_get_output(bev);
	c->cnt_in_cb = evbuffer_add_cb(c->cnt_in, conn_count_in, c);
	c->cnt_out_cb = evbuffer_add_cb(c->cnt_out, conn_count_out, c);
	if (c->pre_out != NULL && evbuffer_get_length(c->pre_out) > 0)
		evbuffer_add_buffer(c->cnt_out, c->pre_out);
}

/* ---- teardown ---- */

static void conn_cancel_dns(struct conn *c)
{
	struct conn_dns_req *r = c->dns_req;

	if (r == NULL)
		return;
	c->dns_req = NULL;
	r->conn = NULL;
	/* The callback still runs (with a cancel status) and frees r. */
	if (r->req != NULL)
		evdns_getaddrinfo_cancel(r->req);
}

/*
 * Stops reading, timers and lookups; the input stays readable. Queued output
 * keeps draining: a TLS alert written by a failed handshake must reach the
 * peer (or it waits for its own timeout), and so should a BYE.
 */
static void conn_stop_io(struct conn *c)
{
	evtimer_del(c->timer_ev);
	conn_cancel_dns(c);
	c->eof_pending = 0;
	if (c->read_ev != NULL && c->read_armed) {
		event_del(c->read_ev);
		c->read_armed = 0;
	}
	if (c->bev != NULL) {
		bufferevent_setcb(c->bev, NULL, NULL, NULL, NULL);
		bufferevent_disable(c->bev, EV_READ);
	}
	if (c->sock_bev != NULL && c->sock_bev != c->bev) {
		if (c->bev == NULL) {
			/* A connect attempt: nothing in it is of use. */
			bufferevent_free(c->sock_bev);
			c->sock_bev = NULL;
		} else {
			/* Under a TLS filter, which would keep it reading. */
			bufferevent_disable(c->sock_bev, EV_READ);
		}
	}
}

/* Reports the terminal event ev; nothing fires afterwards. */
static void conn_terminate(struct conn *c, enum conn_event ev, const char *fmt, ...)
        LOG_PRINTF(3, 4);
static void conn_terminate(struct conn *c, enum conn_event ev, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->errbuf, sizeof(c->errbuf), fmt, ap);
	va_end(ap);
	conn_stop_io(c);
	conn_set_state(c, CONN_ST_CLOSED);
	log_debug(LOG_CAT_NET, "conn %s: %s: %s", c->peer, conn_event_names[ev], c->errbuf);
	if (c->on_event != NULL)
		c->on_event(c, ev, c->errbuf, c->aux);
}

/*
 * Best effort on the way out of an established connection: a close_notify
 * for TLS, then one non-blocking write of what is still queued on the
 * socket. MSG_NOSIGNAL: a peer that reset must not kill us from a
 * destructor.
 */
static void conn_goodbye(struct conn *c)
{
	struct evbuffer_iovec vec[16];
	struct msghdr msg;
	struct evbuffer *out;
	evutil_socket_t fd;
	int n;

	if (c->state != CONN_ST_OPEN || c->sock_bev == NULL)
		return;
	if (c->ssl != NULL && c->tls_up && !c->tls_failed) {
		ERR_clear_error();
		(void)SSL_shutdown(c->ssl);
		ERR_clear_error();
	}
	out = bufferevent_get_output(c->sock_bev);
	fd = bufferevent_getfd(c->sock_bev);
	if (fd < 0 || evbuffer_get_length(out) == 0)
		return;
	n = evbuffer_peek(out, -1, NULL, vec, 16);
	if (n <= 0)
		return;
	memset(&msg, 0, sizeof(msg));
	msg.msg_iov = (struct iovec *)vec;
	msg.msg_iovlen = (size_t)(n < 16 ? n : 16);
	(void)sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
}

static void conn_destroy(struct conn *c)
{
	conn_cancel_dns(c);
	event_free(c->timer_ev);
	event_free(c->kick_ev);
	event_free(c->flush_ev);
	if (c->read_ev != NULL)
		event_free(c->read_ev);
	conn_detach_counters(c);
	conn_goodbye(c);
	if (c->bev != NULL) {
		/* A TLS filter frees the socket bufferevent and the SSL. */
		bufferevent_free(c->bev);
	} else if (c->sock_bev != NULL) {
		bufferevent_free(c->sock_bev);
	}
	if (c->pre_out != NULL)
		evbuffer_free(c->pre_out);
	tls_client_ctx_free(&c->tls_client);
	tls_server_ctx_free(&c->tls_server);
	free(c->host);
	free(c);
}

void conn_free(struct conn **connp)
{
	struct conn *c = connp != NULL ? *connp : NULL;

	if (c == NULL)
		return;
	*connp = NULL;
	if (c->freed)
		return;
	c->freed = 1;
	c->on_read = NULL;
	c->on_event = NULL;
	c->on_drained = NULL;
	if (c->busy == 0)
		conn_destroy(c);
}

/* ---- construction ---- */

static struct conn *conn_alloc(struct event_base *base, const struct conn_opts *opts)
{
	struct conn *c = calloc(1, sizeof(*c));

	if (c == NULL)
		return NULL;
	c->base = base;
	c->connect_timeout_ms = opts->connect_timeout_ms;
	c->read_timeout_ms = opts->read_timeout_ms;
	c->write_timeout_ms = opts->write_timeout_ms;
	c->keepalive = opts->keepalive;
	c->family = opts->family;
	c->keepalive_idle_s = opts->keepalive_idle_s;
	c->keepalive_intvl_s = opts->keepalive_intvl_s;
	c->keepalive_cnt = opts->keepalive_cnt;
	c->read_high = opts->read_high;
	c->write_low = opts->write_low;
	c->on_read = opts->on_read;
	c->on_event = opts->on_event;
	c->on_drained = opts->on_drained;
	c->aux = opts->aux;
	c->kick_ev = event_new(base, -1, 0, conn_kick_cb, c);
	c->flush_ev = event_new(base, -1, 0, conn_flush_cb, c);
	c->timer_ev = evtimer_new(base, conn_timer_cb, c);
	if (c->kick_ev == NULL || c->timer_ev == NULL || c->flush_ev == NULL) {
		if (c->kick_ev != NULL)
			event_free(c->kick_ev);
		if (c->flush_ev != NULL)
			event_free(c->flush_ev);
		if (c->timer_ev != NULL)
			event_free(c->timer_ev);
		free(c);
		return NULL;
	}
	return c;
}

struct conn *conn_new(struct event_base *base, struct evdns_base *dns, const struct conn_opts *opts,
                      const char **error_r)
{
	struct addrinfo hints, *res = NULL;
	char port[8];
	struct conn *c;

	if (opts->host == NULL || opts->host[0] == '\0') {
		*error_r = "no host to connect to";
		return NULL;
	}
	if (opts->on_event == NULL) {
		*error_r = "no event callback";
		return NULL;
	}
	if ((unsigned)opts->mode >= CONN_MODE_COUNT) {
		*error_r = "invalid connection mode";
		return NULL;
	}
	if (opts->mode == CONN_TLS && opts->tls == NULL) {
		*error_r = "implicit TLS needs a TLS client context";
		return NULL;
	}
	c = conn_alloc(base, opts);
	if (c == NULL || (c->host = strdup(opts->host)) == NULL ||
	    (c->pre_out = evbuffer_new()) == NULL) {
		if (c != NULL)
			conn_destroy(c);
		*error_r = "out of memory";
		return NULL;
	}
	c->dns = dns;
	c->port = opts->port;
	c->mode = opts->mode;
	if (opts->tls != NULL) {
		c->tls_client = tls_client_ctx_ref(opts->tls);
		c->verify_peer = tls_client_ctx_verifies_peer(opts->tls);
	}
	conn_set_peer(c, c->host, c->port);
	/* A numeric parse never blocks; it decides how errors name the
	 * peer. */
	memset(&hints, 0, sizeof(hints));
	hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
	hints.ai_socktype = SOCK_STREAM;
	snprintf(port, sizeof(port), "%u", c->port);
	if (getaddrinfo(c->host, port, &hints, &res) == 0) {
		c->host_numeric = 1;
		freeaddrinfo(res);
	}
	return c;
}

/* ---- client: resolve and connect ---- */

static void conn_set_addrs(struct conn *c, const struct addrinfo *ai)
{
	c->n_addrs = c->addr_next = 0;
	for (; ai != NULL && c->n_addrs < CONN_MAX_ADDRS; ai = ai->ai_next) {
		if ((ai->ai_family != AF_INET && ai->ai_family != AF_INET6) ||
		    ai->ai_addrlen > sizeof(c->addrs[0]))
			continue;
		memcpy(&c->addrs[c->n_addrs], ai->ai_addr, ai->ai_addrlen);
		c->addr_lens[c->n_addrs] = (socklen_t)ai->ai_addrlen;
		c->n_addrs++;
	}
}

static void conn_resolve_failed(struct conn *c, const char *reason)
{
	conn_terminate(c, CONN_EV_ERROR, "connect to %s failed: cannot resolve host name (%s)",
	               c->peer, reason);
}

static void conn_dns_cb(int result, struct evutil_addrinfo *res, void *arg)
{
	struct conn_dns_req *r = arg;
	struct conn *c = r->conn;

	free(r);
	if (c == NULL) {
		if (res != NULL)
			evutil_freeaddrinfo(res);
		return;
	}
	c->dns_req = NULL;
	conn_enter(c);
	if (result != 0) {
		conn_resolve_failed(c, evutil_gai_strerror(result));
	} else {
		conn_set_addrs(c, res);
		evutil_freeaddrinfo(res);
		conn_try_next(c);
	}
	conn_leave(c);
}

static void conn_start(struct conn *c)
{
	struct addrinfo hints, *res = NULL;
	char port[8];
	int rc;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = c->family != 0 ? c->family : AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_protocol = IPPROTO_TCP;
	hints.ai_flags = AI_NUMERICSERV;
	snprintf(port, sizeof(port), "%u", c->port);
	if (c->host_numeric || c->dns == NULL) {
		if (c->host_numeric)
			hints.ai_flags |= AI_NUMERICHOST;
		rc = getaddrinfo(c->host, port, &hints, &res);
		if (rc != 0) {
			conn_resolve_failed(c,
			                    rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc));
			return;
		}
		conn_set_addrs(c, res);
		freeaddrinfo(res);
		conn_try_next(c);
	} else {
		struct evutil_addrinfo ehints;
		struct evdns_getaddrinfo_request *req;
		struct conn_dns_req *r = calloc(1, sizeof(*r));

		if (r == NULL) {
			conn_resolve_failed(c, "out of memory");
			return;
		}
		memset(&ehints, 0, sizeof(ehints));
		ehints.ai_family = c->family != 0 ? c->family : AF_UNSPEC;
		ehints.ai_socktype = SOCK_STREAM;
		ehints.ai_protocol = IPPROTO_TCP;
		r->conn = c;
		c->dns_req = r;
		/* May call conn_dns_cb() before returning (answers from the
		 * hosts file); then it returns NULL and r is gone. */
		req = evdns_getaddrinfo(c->dns, c->host, port, &ehints, conn_dns_cb, r);
		if (req != NULL)
			r->req = req;
	}
}

/* Remembers why the current address failed, for the final message. */
static void conn_attempt_failed(struct conn *c, const struct sockaddr *sa, int err)
{
	size_t used = strlen(c->attempts);

	conn_addr_str(sa, c->last_addr, sizeof(c->last_addr));
	c->last_errno = err;
	snprintf(c->attempts + used, sizeof(c->attempts) - used, "%s%s: %s",
	         c->n_failed > 0 ? "; " : "", c->last_addr, strerror(err));
	c->n_failed++;
	log_debug(LOG_CAT_NET, "conn %s: connect to %s failed: %s", c->peer, c->last_addr,
	          strerror(err));
}

static void conn_try_next(struct conn *c)
{
	while (c->addr_next < c->n_addrs) {
		const struct sockaddr *sa = (const struct sockaddr *)&c->addrs[c->addr_next];
		socklen_t len = c->addr_lens[c->addr_next];
		struct bufferevent *bev;
		evutil_socket_t fd;

		c->addr_next++;
		fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
		if (fd < 0) {
			conn_attempt_failed(c, sa, errno);
			continue;
		}
		conn_set_sockopts(c, fd, sa->sa_family);
		bev = bufferevent_socket_new(c->base, fd,
		                             BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
		if (bev == NULL) {
			close(fd);
			conn_attempt_failed(c, sa, ENOMEM);
			continue;
		}
		bufferevent_setcb(bev, NULL, NULL, conn_bev_event_cb, c);
		conn_set_state(c, CONN_ST_CONNECTING);
		/* An immediate refusal is reported as an event, like a later
		 * one; -1 is for errors connect() itself returns. */
		if (bufferevent_socket_connect(bev, sa, (int)len) < 0) {
			int err = errno;

			bufferevent_free(bev);
			conn_attempt_failed(c, sa, err);
			continue;
		}
		c->sock_bev = bev;
		return;
	}
	if (c->n_failed == 0)
		conn_terminate(c, CONN_EV_ERROR,
		               "connect to %s failed: host name has no IPv4 or IPv6 address",
		               c->peer);
	else if (c->n_failed > 1)
		conn_terminate(c, CONN_EV_ERROR, "connect to %s failed: %s", c->peer, c->attempts);
	else if (c->host_numeric)
		conn_terminate(c, CONN_EV_ERROR, "connect to %s failed: %s", c->peer,
		               strerror(c->last_errno));
	else
		conn_terminate(c, CONN_EV_ERROR, "connect to %s (%s) failed: %s", c->peer,
		               c->last_addr, strerror(c->last_errno));
}

int conn_connect(struct conn *c, const char **error_r)
{
	if (c->server || c->state != CONN_ST_NEW) {
		*error_r = "connection already started";
		return -1;
	}
	/* Resolution may block (no evdns) and may answer at once: run it
	 * from the loop, never from inside this call. */
	conn_set_state(c, CONN_ST_RESOLVING);
	conn_arm_timer(c);
	conn_kick(c, CONN_KICK_START);
	return 0;
}

/* ---- established ---- */

static void conn_apply_timeouts(struct conn *c)
{
	struct timeval rtv, wtv;

	if (c->sock_bev == NULL)
		return;
	rtv.tv_sec = c->read_timeout_ms / 1000;
	rtv.tv_usec = (suseconds_t)(c->read_timeout_ms % 1000) * 1000;
	wtv.tv_sec = c->write_timeout_ms / 1000;
	wtv.tv_usec = (suseconds_t)(c->write_timeout_ms % 1000) * 1000;
	/* On the socket bufferevent, also under TLS: its read event only
	 * waits while reading is wanted, its write event only while bytes
	 * are queued (a filter's generic timers do neither). */
	bufferevent_set_timeouts(c->sock_bev, c->read_timeout_ms != 0 ? &rtv : NULL,
	                         c->write_timeout_ms != 0 ? &wtv : NULL);
	if (c->read_armed) /* a pending event takes the new timeout */
		event_add(c->read_ev, c->read_timeout_ms != 0 ? &rtv : NULL);
}

/* Direct reading runs while the connection is open, not paused, not at
 * EOF and its input below the high mark; this arms or disarms read_ev. */
static void conn_direct_read_update(struct conn *c)
{
	int want = c->direct && c->read_ev != NULL && c->state == CONN_ST_OPEN && !c->read_paused &&
	           !c->read_done &&
	           (c->read_high == 0 ||
	            evbuffer_get_length(bufferevent_get_input(c->bev)) < c->read_high);
	struct timeval tv;

	if (want && !c->read_armed) {
		tv.tv_sec = c->read_timeout_ms / 1000;
		tv.tv_usec = (suseconds_t)(c->read_timeout_ms % 1000) * 1000;
		if (event_add(c->read_ev, c->read_timeout_ms != 0 ? &tv : NULL) == 0)
			c->read_armed = 1;
	} else if (!want && c->read_armed) {
		event_del(c->read_ev);
		c->read_armed = 0;
	}
}

static void conn_established(struct conn *c, enum conn_event ev)
{
	evtimer_del(c->timer_ev);
	if (c->ssl != NULL)
		c->tls_up = 1;
	conn_set_state(c, CONN_ST_OPEN);
	conn_apply_timeouts(c);
	if (c->ssl == NULL && c->bev == c->sock_bev && c->read_ev == NULL)
		c->read_ev = event_new(c->base, bufferevent_getfd(c->bev), EV_READ | EV_PERSIST,
		                       conn_sock_read_cb, c);
	if (c->ssl == NULL && c->bev == c->sock_bev && c->read_ev != NULL) {
		c->direct = 1;
		bufferevent_disable(c->bev, EV_READ | EV_WRITE);
		if (evbuffer_get_length(bufferevent_get_output(c->bev)) > 0 && !c->flush_armed) {
			c->flush_armed = 1;
			event_active(c->flush_ev, EV_WRITE, 0);
		}
		conn_direct_read_update(c);
	} else {
		bufferevent_enable(c->bev, EV_WRITE);
		if (c->read_paused)
			bufferevent_disable(c->bev, EV_READ);
		else
			bufferevent_enable(c->bev, EV_READ);
	}
	if (c->tls_up)
		log_debug(LOG_CAT_NET, "conn %s: %s, %s", c->peer, SSL_get_version(c->ssl),
		          SSL_get_cipher_name(c->ssl));
	if (c->on_event != NULL)
		c->on_event(c, ev, NULL, c->aux);
}

/*
 * Puts a TLS filter over the socket bufferevent. Plaintext input still
 * buffered is discarded first: it arrived before the handshake, so a man in
 * the middle may have injected it. Returns 0, or -1 with *error_r (static)
 * with the socket bufferevent unchanged but for the discarded input.
 */
static int conn_tls_begin(struct conn *c, SSL *ssl, enum bufferevent_ssl_state st,
                          const char **error_r)
{
	struct evbuffer *in = bufferevent_get_input(c->sock_bev);
	size_t n = evbuffer_get_length(in);
	struct bufferevent *f;

	if (n > 0) {
		c->discarded += n;
		evbuffer_drain(in, n);
		log_debug(LOG_CAT_NET, "conn %s: discarded %zu plaintext bytes before TLS", c->peer,
		          n);
	}
	conn_detach_counters(c);
	if (c->direct) {
		/* the TLS filter reads and writes through the bufferevent */
		c->direct = 0;
		if (c->read_armed)
			event_del(c->read_ev);
		c->read_armed = 0;
		bufferevent_enable(c->sock_bev, EV_WRITE);
	}
	c->bev = NULL;
	/* Frees ssl if it fails. */
	f = bufferevent_openssl_filter_new(c->base, c->sock_bev, ssl, st,
	                                   BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	if (f == NULL) {
		*error_r = "cannot create TLS bufferevent";
		return -1;
	}
	/* IMAP frames its own data (tagged completions, counted literals),
	 * so a close without close_notify cannot pass a truncated response
	 * off as complete; many servers close that way after BYE. */
	bufferevent_openssl_set_allow_dirty_shutdown(f, 1);
	bufferevent_setwatermark(c->sock_bev, EV_WRITE, CONN_TLS_WIRE_LOW, CONN_TLS_WIRE_HIGH);
	c->ssl = ssl;
	conn_attach_top(c, f);
	/* Enabling reading makes a connecting filter send its ClientHello. */
	bufferevent_enable(f, EV_READ | EV_WRITE);
	return 0;
}

static void conn_tcp_connected(struct conn *c)
{
	const char *error;
	SSL *ssl;

	log_debug(LOG_CAT_NET, "conn %s: TCP connected to %s", c->peer,
	          conn_addr_str((const struct sockaddr *)&c->addrs[c->addr_next - 1], c->last_addr,
	                        sizeof(c->last_addr)));
	if (c->mode != CONN_TLS) {
		conn_attach_top(c, c->sock_bev);
		conn_established(c, CONN_EV_CONNECTED);
		return;
	}
	conn_set_state(c, CONN_ST_HANDSHAKE);
	ssl = tls_client_ssl_new(c->tls_client, c->host, &error);
	if (ssl != NULL)
		tls_client_ssl_resume(c->tls_client, ssl, c->peer);
	if (ssl == NULL || conn_tls_begin(c, ssl, BUFFEREVENT_SSL_CONNECTING, &error) < 0)
		conn_terminate(c, CONN_EV_ERROR, "TLS handshake with %s failed: %s", c->peer,
		               error);
}

/* ---- bufferevent callbacks ---- */

/* True while a TLS filter has decrypted or encrypted input it has not
 * handed to the caller yet (reading paused or the input full). */
static int conn_tls_unread(struct conn *c)
{
	if (c->ssl == NULL || c->bev == NULL || c->bev == c->sock_bev)
		return 0;
	return SSL_pending(c->ssl) > 0 ||
	       evbuffer_get_length(bufferevent_get_input(c->sock_bev)) > 0;
}

/* Reports an EOF held back until every byte before it was offered. */
static void conn_check_eof(struct conn *c, int offered)
{
	struct evbuffer *in;

	if (c->state != CONN_ST_OPEN || !c->eof_pending || c->read_paused || conn_tls_unread(c))
		return;
	in = bufferevent_get_input(c->bev);
	if (!offered && c->on_read != NULL && evbuffer_get_length(in) > 0) {
		c->on_read(c, in, c->aux);
		if (c->freed || c->state != CONN_ST_OPEN)
			return;
	}
	conn_terminate(c, CONN_EV_EOF, "connection closed by %s", c->peer);
}

static void conn_offer_input(struct conn *c)
{
	struct evbuffer *in = bufferevent_get_input(c->bev);

	if (!c->read_paused && c->on_read != NULL && evbuffer_get_length(in) > 0)
		c->on_read(c, in, c->aux);
	if (!c->freed && c->bev != NULL)
		c->in_offered = evbuffer_get_length(bufferevent_get_input(c->bev));
	if (!c->freed && c->eof_pending)
		conn_check_eof(c, 1);
}

static void conn_bev_read_cb(struct bufferevent *bev, void *arg)
{
	struct conn *c = arg;

	conn_enter(c);
	if (c->state == CONN_ST_OPEN && bev == c->bev)
		conn_offer_input(c);
	conn_leave(c);
}

static void conn_bev_write_cb(struct bufferevent *bev, void *arg)
{
	struct conn *c = arg;

	conn_enter(c);
	if (c->direct && bev == c->bev && evbuffer_get_length(bufferevent_get_output(bev)) == 0)
		bufferevent_disable(bev, EV_WRITE); /* back to direct writes */
	if (c->state == CONN_ST_OPEN && bev == c->bev && c->on_drained != NULL)
		c->on_drained(c, c->aux);
	conn_leave(c);
}

/*
 * Why a bufferevent failed: the most telling OpenSSL error it recorded (a
 * verification failure first, else the earliest), else the verification
 * result, else EOF or the socket error.
 */
static const char *conn_error_text(struct conn *c, short what, int sock_err, char *buf, size_t size)
{
	unsigned long errs[8], e, pick = 0;
	int n = 0, i;

	if (c->ssl != NULL && c->bev != NULL && c->bev != c->sock_bev) {
		while ((e = bufferevent_get_openssl_error(c->bev)) != 0) {
			if (n < 8)
				errs[n++] = e;
		}
	}
	/* libevent returns them newest first, mixed with SSL_get_error()
	 * codes (library 0), which say nothing more. */
	for (i = n - 1; i >= 0; i--) {
		if (ERR_GET_LIB(errs[i]) == 0 && !ERR_SYSTEM_ERROR(errs[i]))
			continue;
		if (ERR_GET_LIB(errs[i]) == ERR_LIB_SSL &&
		    ERR_GET_REASON(errs[i]) == SSL_R_CERTIFICATE_VERIFY_FAILED) {
			pick = errs[i];
			break;
		}
		if (pick == 0)
			pick = errs[i];
	}
	if (pick != 0 || (c->ssl != NULL && c->verify_peer && !c->tls_up &&
	                  SSL_get_verify_result(c->ssl) != X509_V_OK))
		return tls_error_string(buf, size, c->verify_peer ? c->ssl : NULL, pick);
	if (what & BEV_EVENT_EOF)
		return "connection closed by peer";
	if (sock_err != 0)
		return strerror(sock_err);
	return "unknown error";
}

static void conn_on_connect_event(struct conn *c, short what, int sock_err)
{
	if (what & BEV_EVENT_CONNECTED) {
		conn_tcp_connected(c);
		return;
	}
	conn_attempt_failed(c, (const struct sockaddr *)&c->addrs[c->addr_next - 1],
	                    sock_err != 0 ? sock_err : EIO);
	bufferevent_free(c->sock_bev);
	c->sock_bev = NULL;
	conn_try_next(c);
}

static void conn_on_handshake_event(struct conn *c, short what, int sock_err)
{
	char text[512], secs[32];

	if (what & BEV_EVENT_CONNECTED) {
		/* OpenSSL already aborts a handshake that fails verification;
		 * this only guards against a server that sent no certificate
		 * at all. */
		if (c->verify_peer && (SSL_get0_peer_certificate(c->ssl) == NULL ||
		                       SSL_get_verify_result(c->ssl) != X509_V_OK)) {
			conn_terminate(c, CONN_EV_ERROR, "TLS handshake with %s failed: %s",
			               c->peer,
			               SSL_get0_peer_certificate(c->ssl) == NULL
			                       ? "server sent no certificate"
			                       : tls_error_string(text, sizeof(text), c->ssl, 0));
			return;
		}
		conn_established(c, c->state == CONN_ST_UPGRADING ? CONN_EV_TLS_UPGRADED
		                                                  : CONN_EV_CONNECTED);
		return;
	}
	c->tls_failed = 1;
	if (what & BEV_EVENT_TIMEOUT) {
		conn_terminate(c, CONN_EV_TIMEOUT, "TLS handshake with %s timed out after %s",
		               c->peer,
		               conn_secs(secs, sizeof(secs),
		                         (what & BEV_EVENT_WRITING) ? c->write_timeout_ms
		                                                    : c->read_timeout_ms));
		return;
	}
	conn_terminate(c, CONN_EV_ERROR, "TLS handshake with %s failed: %s", c->peer,
	               conn_error_text(c, what, sock_err, text, sizeof(text)));
}

static void conn_on_open_event(struct conn *c, short what, int sock_err)
{
	const char *dir = (what & BEV_EVENT_WRITING) ? "write to" : "read from";
	char text[512], secs[32];

	if (what & BEV_EVENT_EOF) {
		/* Every byte before the EOF is offered first. A TLS filter
		 * can report it while reading is paused (the close_notify was
		 * decrypted with the data) or while records wait below it:
		 * hold it until they were offered. */
		if (c->read_paused || conn_tls_unread(c) || (c->kick & CONN_KICK_READ)) {
			c->eof_pending = 1;
			/* A resume's re-offer is queued (libevent may run this
			 * event first): report the EOF after it. */
			if (c->kick & CONN_KICK_READ)
				c->kick |= CONN_KICK_EOF;
			return;
		}
		conn_terminate(c, CONN_EV_EOF, "connection closed by %s", c->peer);
	} else if (what & BEV_EVENT_TIMEOUT) {
		conn_terminate(c, CONN_EV_TIMEOUT, "%s %s timed out after %s", dir, c->peer,
		               conn_secs(secs, sizeof(secs),
		                         (what & BEV_EVENT_WRITING) ? c->write_timeout_ms
		                                                    : c->read_timeout_ms));
	} else if (what & BEV_EVENT_ERROR) {
		if (c->ssl != NULL)
			c->tls_failed = 1;
		conn_terminate(c, CONN_EV_ERROR, "%s %s failed: %s", dir, c->peer,
		               conn_error_text(c, what, sock_err, text, sizeof(text)));
	}
}

static void conn_bev_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct conn *c = arg;
	/* libevent restores the socket error before a deferred callback. */
	int sock_err = EVUTIL_SOCKET_ERROR();

	conn_enter(c);
	switch (c->state) {
	case CONN_ST_CONNECTING:
		if (bev == c->sock_bev)
			conn_on_connect_event(c, what, sock_err);
		break;
	case CONN_ST_HANDSHAKE:
	case CONN_ST_UPGRADING:
		if (bev == c->bev)
			conn_on_handshake_event(c, what, sock_err);
		break;
	case CONN_ST_OPEN:
		if (bev == c->bev)
			conn_on_open_event(c, what, sock_err);
		break;
	default:
		break;
	}
	conn_leave(c);
}

/* ---- timers and deferred work ---- */

static void conn_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	char secs[32];

	(void)fd;
	(void)what;
	conn_enter(c);
	conn_secs(secs, sizeof(secs), c->connect_timeout_ms);
	switch (c->state) {
	case CONN_ST_RESOLVING:
		conn_terminate(c, CONN_EV_TIMEOUT,
		               "connect to %s timed out after %s (resolving the host name)",
		               c->peer, secs);
		break;
	case CONN_ST_CONNECTING:
		conn_terminate(c, CONN_EV_TIMEOUT, "connect to %s timed out after %s", c->peer,
		               secs);
		break;
	case CONN_ST_HANDSHAKE:
	case CONN_ST_UPGRADING:
		c->tls_failed = 1;
		conn_terminate(c, CONN_EV_TIMEOUT, "TLS handshake with %s timed out after %s",
		               c->peer, secs);
		break;
	default:
		break;
	}
	conn_leave(c);
}

static void conn_flush_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	struct evbuffer *out;

	(void)fd;
	(void)what;
	c->flush_armed = 0;
	/* not only while open: after the peer's EOF (half-close) and while a
	 * session is closing, what was queued must still go out */
	if (c->freed || !c->direct || c->bev == NULL)
		return;
	out = bufferevent_get_output(c->bev);
	if (evbuffer_get_length(out) == 0)
		return;
	if (!(bufferevent_get_enabled(c->bev) & EV_WRITE)) {
		/* bufferevent_socket freezes the start of its output. */
		evbuffer_unfreeze(out, 1);
		(void)evbuffer_write(out, bufferevent_getfd(c->bev));
		evbuffer_freeze(out, 1);
		/* The rest (or an error) is the bufferevent's to handle. */
		if (evbuffer_get_length(out) > 0)
			bufferevent_enable(c->bev, EV_WRITE);
	}
	if (evbuffer_get_length(out) <= c->write_low && c->on_drained != NULL) {
		conn_enter(c);
		c->on_drained(c, c->aux);
		conn_leave(c);
	}
}

/* Direct reading of a plain socket: one readv of up to CONN_READ_MAX (no
 * FIONREAD first), then the input is offered as the bufferevent would. */
static void conn_sock_read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	struct evbuffer *in;
	struct evbuffer_iovec vec[2];
	size_t room, len, got;
	ssize_t n;
	int nvec, i, err;

	conn_enter(c);
	if (c->freed || c->state != CONN_ST_OPEN || !c->direct)
		goto out;
	if (what & EV_TIMEOUT) {
		conn_on_open_event(c, BEV_EVENT_READING | BEV_EVENT_TIMEOUT, 0);
		goto out;
	}
	in = bufferevent_get_input(c->bev);
	len = evbuffer_get_length(in);
	if (c->read_ask < CONN_READ_MIN || c->read_ask > CONN_READ_MAX)
		c->read_ask = CONN_READ_MIN;
	room = c->read_ask;
	if (c->read_high != 0) {
		if (len >= c->read_high) {
			conn_direct_read_update(c);
			goto out;
		}
		if (c->read_high - len < room)
			room = c->read_high - len;
	}
	/* bufferevent_socket freezes the end of its input */
	evbuffer_unfreeze(in, 0);
	nvec = evbuffer_reserve_space(in, (ev_ssize_t)room, vec, 2);
	if (nvec <= 0) {
		evbuffer_freeze(in, 0);
		c->read_done = 1;
		conn_direct_read_update(c);
		conn_on_open_event(c, BEV_EVENT_READING | BEV_EVENT_ERROR, ENOMEM);
		goto out;
	}
	for (i = 0, got = 0; i < nvec; i++) {
		if (vec[i].iov_len > room - got)
			vec[i].iov_len = room - got;
		got += vec[i].iov_len;
	}
	n = readv(fd, (struct iovec *)vec, nvec);
	err = errno;
	if (n > 0) {
		for (i = 0, got = 0; i < nvec; i++) {
			if (vec[i].iov_len > (size_t)n - got)
				vec[i].iov_len = (size_t)n - got;
			got += vec[i].iov_len;
		}
		nvec = vec[0].iov_len == (size_t)n ? 1 : nvec;
	}
	evbuffer_commit_space(in, vec, n > 0 ? nvec : 0);
	evbuffer_freeze(in, 0);
	if (n > 0 && (size_t)n == room && room == c->read_ask && c->read_ask < CONN_READ_MAX)
		c->read_ask *= 2; /* more is likely waiting: ask for more next time */
	else if (n > 0 && (size_t)n < c->read_ask / 4 && c->read_ask > CONN_READ_MIN)
		c->read_ask /= 2;
	if (n > 0) {
		conn_offer_input(c);
		if (!c->freed && c->state == CONN_ST_OPEN)
			conn_direct_read_update(c);
	} else if (n == 0 || (err != EAGAIN && err != EWOULDBLOCK && err != EINTR)) {
		c->read_done = 1;
		conn_direct_read_update(c);
		conn_on_open_event(c,
		                   BEV_EVENT_READING | (n == 0 ? BEV_EVENT_EOF : BEV_EVENT_ERROR),
		                   n == 0 ? 0 : err);
	}
out:
	conn_leave(c);
}

static void conn_kick_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	unsigned kick = c->kick;

	(void)fd;
	(void)what;
	c->kick = 0;
	conn_enter(c);
	if ((kick & CONN_KICK_START) && c->state == CONN_ST_RESOLVING)
		conn_start(c);
	if (!c->freed && (kick & CONN_KICK_CONNECTED) && c->state == CONN_ST_ACCEPTED)
		conn_established(c, CONN_EV_CONNECTED);
	if (!c->freed && (kick & CONN_KICK_READ) && c->state == CONN_ST_OPEN)
		conn_offer_input(c);
	if (!c->freed && (kick & CONN_KICK_EOF))
		conn_check_eof(c, (kick & CONN_KICK_READ) != 0);
	conn_leave(c);
}

/* ---- server side ---- */

struct conn *conn_new_accepted(struct event_base *base, evutil_socket_t fd,
                               struct tls_server_ctx *tls, const struct conn_opts *opts,
                               const char **error_r)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	char addr[INET6_ADDRSTRLEN];
	struct conn *c;
	SSL *ssl;

	if (opts->on_event == NULL) {
		evutil_closesocket(fd);
		*error_r = "no event callback";
		return NULL;
	}
	c = conn_alloc(base, opts);
	if (c == NULL) {
		evutil_closesocket(fd);
		*error_r = "out of memory";
		return NULL;
	}
	c->server = 1;
	memset(&ss, 0, sizeof(ss));
	if (getpeername(fd, (struct sockaddr *)&ss, &len) == 0 &&
	    (ss.ss_family == AF_INET || ss.ss_family == AF_INET6)) {
		conn_addr_str((struct sockaddr *)&ss, addr, sizeof(addr));
		conn_set_peer(c, addr,
		              ntohs(ss.ss_family == AF_INET
		                            ? ((struct sockaddr_in *)&ss)->sin_port
		                            : ((struct sockaddr_in6 *)&ss)->sin6_port));
	} else {
		snprintf(c->peer, sizeof(c->peer), "local peer");
	}
	evutil_make_socket_nonblocking(fd);
	evutil_make_socket_closeonexec(fd);
	conn_set_sockopts(c, fd, ss.ss_family);
	c->sock_bev =
	        bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	if (c->sock_bev == NULL) {
		evutil_closesocket(fd);
		conn_destroy(c);
		*error_r = "cannot create bufferevent";
		return NULL;
	}
	if (tls == NULL) {
		conn_attach_top(c, c->sock_bev);
		/* Reading starts with CONNECTED, so it always comes first. */
		c->state = CONN_ST_ACCEPTED;
		conn_kick(c, CONN_KICK_CONNECTED);
		return c;
	}
	c->tls_server = tls_server_ctx_ref(tls);
	c->state = CONN_ST_HANDSHAKE;
	ssl = tls_server_ssl_new(tls, error_r);
	if (ssl == NULL || conn_tls_begin(c, ssl, BUFFEREVENT_SSL_ACCEPTING, error_r) < 0) {
		conn_destroy(c);
		return NULL;
	}
	conn_arm_timer(c);
	return c;
}

int conn_starttls_server(struct conn *c, struct tls_server_ctx *tls, const char **error_r)
{
	SSL *ssl;

	if (!c->server || c->state != CONN_ST_OPEN || c->ssl != NULL) {
		*error_r = "STARTTLS needs an established plain server connection";
		return -1;
	}
	ssl = tls_server_ssl_new(tls, error_r);
	if (ssl == NULL)
		return -1;
	tls_server_ctx_free(&c->tls_server);
	c->tls_server = tls_server_ctx_ref(tls);
	conn_set_state(c, CONN_ST_UPGRADING);
	if (conn_tls_begin(c, ssl, BUFFEREVENT_SSL_ACCEPTING, error_r) < 0) {
		conn_set_state(c, CONN_ST_OPEN);
		conn_attach_top(c, c->sock_bev);
		return -1;
	}
	conn_arm_timer(c);
	return 0;
}

int conn_starttls(struct conn *c, const char **error_r)
{
	SSL *ssl;

	if (c->server || c->state != CONN_ST_OPEN || c->ssl != NULL) {
		*error_r = "STARTTLS needs an established plain client connection";
		return -1;
	}
	if (c->tls_client == NULL) {
		*error_r = "STARTTLS needs a TLS client context";
		return -1;
	}
	ssl = tls_client_ssl_new(c->tls_client, c->host, error_r);
	if (ssl == NULL)
		return -1;
	tls_client_ssl_resume(c->tls_client, ssl, c->peer);
	conn_set_state(c, CONN_ST_UPGRADING);
	if (conn_tls_begin(c, ssl, BUFFEREVENT_SSL_CONNECTING, error_r) < 0) {
		conn_set_state(c, CONN_ST_OPEN);
		conn_attach_top(c, c->sock_bev);
		return -1;
	}
	conn_arm_timer(c);
	return 0;
}

/* ---- data ---- */

struct evbuffer *conn_output(struct conn *c)
{
	return c->bev != NULL ? bufferevent_get_output(c->bev) : c->pre_out;
}

struct evbuffer *conn_input(struct conn *c)
{
	return c->bev != NULL ? bufferevent_get_input(c->bev) : NULL;
}

size_t conn_output_pending(const struct conn *c)
{
	size_t n;

	if (c->bev == NULL)
		return c->pre_out != NULL ? evbuffer_get_length(c->pre_out) : 0;
	n = evbuffer_get_length(bufferevent_get_output(c->bev));
	if (c->sock_bev != NULL && c->sock_bev != c->bev)
		n += evbuffer_get_length(bufferevent_get_output(c->sock_bev));
	return n;
}

int conn_write(struct conn *c, const void *data, size_t len)
{
	struct evbuffer *out = conn_output(c);

	if (c->state == CONN_ST_CLOSED || out == NULL)
		return -1;
	return evbuffer_add(out, data, len);
}

int conn_write_buffer(struct conn *c, struct evbuffer *buf)
{
	struct evbuffer *out = conn_output(c);

	if (c->state == CONN_ST_CLOSED || out == NULL)
		return -1;
	return evbuffer_add_buffer(out, buf);
}

/* ---- flow control and settings ---- */

void conn_set_callbacks(struct conn *c, conn_read_cb *on_read, conn_event_cb *on_event,
                        conn_drained_cb *on_drained, void *aux)
{
	if (c->freed)
		return;
	c->on_read = on_read;
	c->on_event = on_event;
	c->on_drained = on_drained;
	c->aux = aux;
}

void conn_set_watermarks(struct conn *c, size_t read_high, size_t write_low)
{
	c->read_high = read_high;
	c->write_low = write_low;
	if (c->bev != NULL && c->state != CONN_ST_CLOSED) {
		bufferevent_setwatermark(c->bev, EV_READ, 0, read_high);
		if (c->direct)
			conn_direct_read_update(c);
		bufferevent_setwatermark(c->bev, EV_WRITE, write_low, 0);
	}
}

void conn_pause_read(struct conn *c)
{
	c->read_paused = 1;
	/* During a handshake the filter must keep reading; the pause takes
	 * effect when it is done (conn_established()). */
	if (c->state == CONN_ST_OPEN && c->direct)
		conn_direct_read_update(c);
	else if (c->state == CONN_ST_OPEN)
		bufferevent_disable(c->bev, EV_READ);
}

void conn_resume_read(struct conn *c)
{
	if (!c->read_paused)
		return;
	c->read_paused = 0;
	if (c->state == CONN_ST_OPEN) {
		if (c->direct)
			conn_direct_read_update(c);
		else
			bufferevent_enable(c->bev, EV_READ);
		conn_kick(c, CONN_KICK_READ | (c->eof_pending ? CONN_KICK_EOF : 0));
	}
}

void conn_set_timeouts(struct conn *c, unsigned read_timeout_ms, unsigned write_timeout_ms)
{
	c->read_timeout_ms = read_timeout_ms;
	c->write_timeout_ms = write_timeout_ms;
	if (c->state == CONN_ST_OPEN || c->state == CONN_ST_UPGRADING)
		conn_apply_timeouts(c);
}

/* ---- getters ---- */

const char *conn_peer_name(const struct conn *c)
{
	return c->peer;
}

int conn_is_established(const struct conn *c)
{
	return c->state == CONN_ST_OPEN || c->state == CONN_ST_UPGRADING;
}

int conn_is_tls(const struct conn *c)
{
	return c->tls_up;
}

const char *conn_tls_version(const struct conn *c)
{
	return c->tls_up ? SSL_get_version(c->ssl) : NULL;
}

const char *conn_tls_cipher(const struct conn *c)
{
	return c->tls_up ? SSL_get_cipher_name(c->ssl) : NULL;
}

int conn_tls_resumed(const struct conn *c)
{
	return c->tls_up && SSL_session_reused(c->ssl) == 1;
}

uint64_t conn_bytes_in(const struct conn *c)
{
	return c->bytes_in;
}

uint64_t conn_bytes_out(const struct conn *c)
{
	return c->bytes_out;
}

size_t conn_starttls_discarded(const struct conn *c)
{
	return c->discarded;
}
