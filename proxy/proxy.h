/*
 * proxy.h - imapferry-proxy's shared state (private to proxy/): the
 * configuration, the server (listeners, TLS contexts, marker, metrics) and
 * the session entry points.
 *
 * One process, one event loop. A session (session.c) owns the client
 * connection and runs the pre-authentication phase itself; upstream.c
 * connects to the routed upstream and logs in with the client's
 * credentials; relay.c then forwards bytes both ways, byte-exact, while the
 * shared parser feeds the observer (observe.h) that marks changes in Redis
 * (marks.h).
 */
#ifndef PROXY_PROXY_H
#define PROXY_PROXY_H

#include <stddef.h>
#include <stdint.h>

#include <imapferry/log.h>

struct event_base;
struct evdns_base;
struct evconnlistener;
struct evhttp;
struct event;
struct tls_server_ctx;
struct tls_client_ctx;
struct px_marks;
struct px_routes;
struct px_session;

/* How the proxy talks to an upstream server. */
enum px_up_security {
	PX_UP_PLAIN,    /* plain TCP, no TLS at all */
	PX_UP_SSL,      /* implicit TLS (imaps) */
	PX_UP_STARTTLS, /* plain port, STARTTLS required */
	PX_UP_SECURITY_COUNT
};

extern const char *const px_up_security_names[PX_UP_SECURITY_COUNT];

/* Limits (named parameters; see README "Limits"). */
#define PX_PREAUTH_MAX_LINE       (8u << 10)  /* a line before login */
#define PX_PREAUTH_MAX_LITERAL    (8u << 10)  /* a LOGIN literal */
#define PX_PREAUTH_MAX_BAD        10u         /* bad commands before login, then BYE */
#define PX_MAX_LINE_DEFAULT       (64u << 10) /* a line after login */
#define PX_MAX_LITERAL_DEFAULT    (64ull << 20)
#define PX_IDLE_TIMEOUT_DEFAULT   1800u        /* seconds (RFC 3501 5.4: at least 30 min) */
#define PX_CONNECT_TIMEOUT        15000u       /* ms: upstream connect + TLS + greeting */
#define PX_LOGIN_TIMEOUT          30000u       /* ms: upstream login exchange */
#define PX_HANDSHAKE_TIMEOUT      15000u       /* ms: client TLS handshake */
#define PX_BUF_HIGH               (256u << 10) /* output queued before the other side pauses */
#define PX_BUF_LOW                (64u << 10)  /* ... and resumes */
#define PX_CLOSE_GRACE_MS         5000u        /* flushing the last output of a closing session */
#define PX_SHUTDOWN_GRACE_DEFAULT 10u          /* seconds sessions get on SIGTERM */

/* The settings (config file, then command-line flags). Strings are owned
 * (malloc'd) by the struct; px_config_clear() frees them. */
struct px_config {
	char *listen;     /* ADDR:PORT plain (+STARTTLS when a cert is set) */
	char *listen_tls; /* ADDR:PORT implicit TLS */
	char *cert, *key;
	char *upstream;        /* HOST:PORT, the source server */
	char *upstream_dst;    /* HOST:PORT, the destination (routes in state DST) */
	int upstream_security; /* enum px_up_security */
	char *upstream_ca;
	int upstream_noverify;
	char *redis; /* HOST:PORT or a unix socket path; NULL = no Redis */
	char *http;  /* ADDR:PORT of /metrics and /healthz */
	int allow_plaintext_login;
	unsigned idle_timeout_s;
	unsigned shutdown_grace_s;
	uint64_t max_literal;
	unsigned max_line;
	char *log_level; /* error|warn|notice|info|debug */
	char *debug;     /* debug categories, e.g. "proxy,net" */
	char *log_file;
	char *pidfile;
	unsigned freeze_hold_s;  /* a login held during a freeze (routes.h) */
	unsigned freeze_drain_s; /* in-flight commands of a frozen session */
};

void px_config_defaults(struct px_config *cfg);
void px_config_clear(struct px_config *cfg);
/* Sets one key (the long option name without "--", as in the config file).
 * Returns 0, or -1 with a message in err (size errsize). */
int px_config_set(struct px_config *cfg, const char *key, const char *value, char *err,
                  size_t errsize);

/* Counters for /metrics. */
struct px_metrics {
	uint64_t conns_total;
	uint64_t conns_current;
	uint64_t sessions_authed; /* currently relaying */
	uint64_t logins_ok, logins_failed, upstream_errors;
	uint64_t bytes_c2u, bytes_u2c; /* relayed payload bytes */
	uint64_t commands;             /* client commands seen after login */
	uint64_t preauth_commands;
	uint64_t rejected; /* sessions closed for a protocol/limit violation */
	uint64_t compress_refused, starttls_injection_bytes;
};

struct px_server {
	struct event_base *base;
	struct evdns_base *dns;
	struct px_config cfg;
	char *up_host, *dst_host;
	uint16_t up_port, dst_port;
	struct tls_server_ctx *tls_srv; /* NULL = no certificate configured */
	struct tls_client_ctx *tls_up;  /* upstream TLS (PX_UP_SSL/STARTTLS) */
	struct px_marks *marks;
	struct px_routes *routes; /* cutover: rep:ctl, held logins (routes.h); NULL = no Redis */
	struct evconnlistener *lis_plain, *lis_tls;
	struct evhttp *http;
	struct px_metrics m;
	uint64_t next_id;
	struct px_session *sessions; /* all live sessions (list) */
	int shutting_down;
};

/* A new session on an accepted socket (takes fd). tls: implicit TLS. */
void px_session_accept(struct px_server *srv, int fd, int tls);
/* Graceful shutdown: every session is told "* BYE" when idle between
 * commands and closed; returns the number of sessions still alive. */
unsigned px_sessions_shutdown(struct px_server *srv, int force);

/* Splits "host:port" / "[v6]:port" into a malloc'd host and a port.
 * Returns 0 or -1. */
int px_split_hostport(const char *s, char **host_r, uint16_t *port_r);

/* The HTTP endpoint (http.c). Returns 0 or -1 (logged). */
int px_http_start(struct px_server *srv);

#endif
