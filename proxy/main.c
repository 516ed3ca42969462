/*
 * main.c - imapferry-proxy: options and config file, listeners (plain with
 * STARTTLS, implicit TLS), certificate reload on SIGHUP, graceful shutdown
 * on SIGTERM/SIGINT.
 *
 *   imapferry-proxy --listen 127.0.0.1:1143 --upstream 127.0.0.1:143 \
 *                   --redis 127.0.0.1:6379
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <event2/dns.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>
#include <ini.h>

#include <imapferry/tls.h>

#include "marks.h"
#include "proxy.h"
#include "routes.h"

static void usage(FILE *fp)
{
	fprintf(fp, "usage: imapferry-proxy [options]\n"
	            "  --config FILE              INI settings (flags override them)\n"
	            "  --listen ADDR:PORT         plain listener (offers STARTTLS with --cert)\n"
	            "  --listen-tls ADDR:PORT     implicit TLS listener (needs --cert/--key)\n"
	            "  --cert FILE --key FILE     the proxy's certificate chain and key (PEM);\n"
	            "                             reloaded on SIGHUP\n"
	            "  --upstream HOST:PORT       the source IMAP server (required)\n"
	            "  --upstream-dst HOST:PORT   the destination, for users routed to DST\n"
	            "  --upstream-ssl             implicit TLS to the upstream\n"
	            "  --upstream-tls             STARTTLS to the upstream (required)\n"
	            "  --upstream-plain           no TLS to the upstream (default)\n"
	            "  --upstream-ca FILE         CA bundle for the upstream's certificate\n"
	            "  --upstream-noverify        do not verify the upstream's certificate\n"
	            "  --redis HOST:PORT|PATH     where marks go (none: marks are dropped)\n"
	            "  --http ADDR:PORT           /metrics and /healthz\n"
	            "  --allow-plaintext-login    accept LOGIN/AUTHENTICATE without TLS\n"
	            "  --idle-timeout SECS        default 1800\n"
	            "  --max-literal BYTES        largest literal after login (default 64M)\n"
	            "  --shutdown-grace SECS      sessions' time to finish on SIGTERM (10)\n"
	            "  --freeze-hold SECS         a login held while its user is frozen (30)\n"
	            "  --freeze-drain SECS        in-flight commands of a frozen user (10)\n"
	            "  --log-level LEVEL          error, warn, notice (default), info, debug\n"
	            "  --debug CATS               debug categories: net,imap,proxy,redis,all\n"
	            "  --log-file FILE            log there instead of stderr\n"
	            "  --pidfile FILE             write the pid there\n"
	            "  --foreground               (always: run under a supervisor)\n");
}

/* ---- config file ---- */

struct ini_ctx {
	struct px_config *cfg;
	const char *file;
	FILE *fp;
	unsigned line;
	int errors;
};

/* Reads one line, counting them (libinih as packaged has no line numbers
 * in the handler). */
static char *px_ini_reader(char *buf, int size, void *stream)
{
	struct ini_ctx *c = stream;
	char *r = fgets(buf, size, c->fp);

	if (r != NULL)
		c->line++;
	return r;
}

static int px_ini_handler(void *user, const char *section, const char *name, const char *value)
{
	struct ini_ctx *c = user;
	char err[256];

	if (section[0] != '\0' && strcmp(section, "proxy") != 0) {
		fprintf(stderr, "%s:%u: unknown section [%s]\n", c->file, c->line, section);
		c->errors++;
		return 1;
	}
	if (px_config_set(c->cfg, name, value, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s:%u: %s\n", c->file, c->line, err);
		c->errors++;
	}
	return 1; /* go on: every error is reported */
}

static int config_load(struct px_config *cfg, const char *file)
{
	struct ini_ctx c = {cfg, file, NULL, 0, 0};
	int r;

	c.fp = fopen(file, "r");
	if (c.fp == NULL) {
		fprintf(stderr, "imapferry-proxy: cannot open %s: %s\n", file, strerror(errno));
		return -1;
	}
	r = ini_parse_stream(px_ini_reader, &c, px_ini_handler, &c);
	fclose(c.fp);
	if (r > 0) {
		fprintf(stderr, "%s:%d: syntax error\n", file, r);
		c.errors++;
	}
	return c.errors > 0 ? -1 : 0;
}

/* ---- options ---- */

enum {
	OPT_CONFIG = 256,
	OPT_SET, /* a px_config key: the long option's name */
	OPT_SSL,
	OPT_STARTTLS,
	OPT_PLAIN,
	OPT_FOREGROUND,
	OPT_HELP,
	OPT_VERSION
};

static const struct option long_opts[] = {
        {"config", required_argument, NULL, OPT_CONFIG},
        {"listen", required_argument, NULL, OPT_SET},
        {"listen-tls", required_argument, NULL, OPT_SET},
        {"cert", required_argument, NULL, OPT_SET},
        {"key", required_argument, NULL, OPT_SET},
        {"upstream", required_argument, NULL, OPT_SET},
        {"upstream-dst", required_argument, NULL, OPT_SET},
        {"upstream-ca", required_argument, NULL, OPT_SET},
        {"upstream-noverify", no_argument, NULL, OPT_SET},
        {"upstream-ssl", no_argument, NULL, OPT_SSL},
        {"upstream-tls", no_argument, NULL, OPT_STARTTLS},
        {"upstream-plain", no_argument, NULL, OPT_PLAIN},
        {"redis", required_argument, NULL, OPT_SET},
        {"http", required_argument, NULL, OPT_SET},
        {"allow-plaintext-login", no_argument, NULL, OPT_SET},
        {"idle-timeout", required_argument, NULL, OPT_SET},
        {"shutdown-grace", required_argument, NULL, OPT_SET},
        {"freeze-hold", required_argument, NULL, OPT_SET},
        {"freeze-drain", required_argument, NULL, OPT_SET},
        {"max-literal", required_argument, NULL, OPT_SET},
        {"max-line", required_argument, NULL, OPT_SET},
        {"log-level", required_argument, NULL, OPT_SET},
        {"debug", required_argument, NULL, OPT_SET},
        {"log-file", required_argument, NULL, OPT_SET},
        {"pidfile", required_argument, NULL, OPT_SET},
        {"foreground", no_argument, NULL, OPT_FOREGROUND},
        {"help", no_argument, NULL, OPT_HELP},
        {"version", no_argument, NULL, OPT_VERSION},
        {NULL, 0, NULL, 0},
};

/* Two passes: --config first (the file), then every flag over it. */
static int parse_args(int argc, char **argv, struct px_config *cfg)
{
	int c, idx, errors = 0;
	char err[256];

	opterr = 1;
	optind = 1;
	while ((c = getopt_long(argc, argv, "h", long_opts, &idx)) != -1) {
		if (c == OPT_CONFIG && config_load(cfg, optarg) < 0)
			return -2; /* reported with file:line; no usage text */
		if (c == '?')
			return -1;
		if (c == 'h' || c == OPT_HELP) {
			usage(stdout);
			exit(0);
		}
		if (c == OPT_VERSION) {
			printf("imapferry-proxy %s\n", IMAPFERRY_VERSION);
			exit(0);
		}
	}
	if (optind < argc) {
		fprintf(stderr, "imapferry-proxy: unexpected argument \"%s\"\n", argv[optind]);
		return -1;
	}
	opterr = 0;
	optind = 1;
	while ((c = getopt_long(argc, argv, "h", long_opts, &idx)) != -1) {
		const char *v = optarg;

		switch (c) {
		case OPT_SET:
			if (long_opts[idx].has_arg == no_argument)
				v = "yes";
			if (px_config_set(cfg, long_opts[idx].name, v, err, sizeof(err)) < 0) {
				fprintf(stderr, "imapferry-proxy: --%s\n", err);
				errors++;
			}
			break;
		case OPT_SSL:
			cfg->upstream_security = PX_UP_SSL;
			break;
		case OPT_STARTTLS:
			cfg->upstream_security = PX_UP_STARTTLS;
			break;
		case OPT_PLAIN:
			cfg->upstream_security = PX_UP_PLAIN;
			break;
		default:
			break;
		}
	}
	return errors > 0 ? -1 : 0;
}

int px_split_hostport(const char *s, char **host_r, uint16_t *port_r)
{
	const char *colon, *h = s;
	size_t hlen;
	char *end;
	unsigned long port;

	if (s[0] == '[') {
		const char *rb = strchr(s, ']');

		if (rb == NULL || rb[1] != ':')
			return -1;
		h = s + 1;
		hlen = (size_t)(rb - h);
		colon = rb + 1;
	} else {
		colon = strrchr(s, ':');
		if (colon == NULL)
			return -1;
		hlen = (size_t)(colon - s);
	}
	errno = 0;
	port = strtoul(colon + 1, &end, 10);
	if (errno != 0 || *end != '\0' || end == colon + 1 || port == 0 || port > 65535)
		return -1;
	*host_r = strndup(h, hlen);
	if (*host_r == NULL)
		abort();
	if (strcmp(*host_r, "*") == 0)
		(*host_r)[0] = '\0';
	*port_r = (uint16_t)port;
	return 0;
}

/* ---- listeners ---- */

static void accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int len,
                      void *aux)
{
	struct px_server *srv = aux;

	(void)sa;
	(void)len;
	px_session_accept(srv, fd, l == srv->lis_tls);
}

static struct evconnlistener *listen_on(struct px_server *srv, const char *addr)
{
	struct sockaddr_storage ss;
	int sslen = sizeof(ss);
	struct evconnlistener *l;
	char *host;
	uint16_t port;
	char buf[300];

	if (px_split_hostport(addr, &host, &port) < 0) {
		log_error("bad listen address \"%s\" (expected ADDR:PORT)", addr);
		return NULL;
	}
	snprintf(buf, sizeof(buf), strchr(host, ':') ? "[%s]:%u" : "%s:%u",
	         host[0] != '\0' ? host : "0.0.0.0", (unsigned)port);
	free(host);
	memset(&ss, 0, sizeof(ss));
	if (evutil_parse_sockaddr_port(buf, (struct sockaddr *)&ss, &sslen) < 0) {
		log_error("bad listen address \"%s\" (an IP address is needed)", addr);
		return NULL;
	}
	l = evconnlistener_new_bind(srv->base, accept_cb, srv,
	                            LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE |
	                                    LEV_OPT_CLOSE_ON_EXEC,
	                            1024, (struct sockaddr *)&ss, sslen);
	if (l == NULL)
		log_error("cannot listen on %s: %s", addr, strerror(errno));
	return l;
}

static int load_cert(struct px_server *srv)
{
	struct tls_server_ctx *ctx;
	const char *err;

	if (srv->cfg.cert == NULL && srv->cfg.key == NULL)
		return 0;
	if (srv->cfg.cert == NULL || srv->cfg.key == NULL) {
		log_error("--cert and --key go together");
		return -1;
	}
	ctx = tls_server_ctx_new(srv->cfg.cert, srv->cfg.key, &err);
	if (ctx == NULL) {
		log_error("%s", err);
		return -1;
	}
	/* Sessions hold their own reference: old ones keep the old
	 * context, new connections get this one. */
	tls_server_ctx_free(&srv->tls_srv);
	srv->tls_srv = ctx;
	return 0;
}

/* ---- signals and shutdown ---- */

static struct event *shutdown_timer;

static void drained_cb(void *aux)
{
	struct px_server *srv = aux;

	event_base_loopexit(srv->base, NULL);
}

static void shutdown_tick(evutil_socket_t fd, short what, void *aux)
{
	struct px_server *srv = aux;
	struct timeval tv = {0, 50000};
	struct timeval now;
	static struct timeval force_at;

	(void)fd;
	(void)what;
	event_base_gettimeofday_cached(srv->base, &now);
	if (force_at.tv_sec == 0) {
		force_at = now;
		force_at.tv_sec += (time_t)srv->cfg.shutdown_grace_s;
	}
	if (srv->sessions != NULL && srv->shutting_down == 1 &&
	    (now.tv_sec > force_at.tv_sec ||
	     (now.tv_sec == force_at.tv_sec && now.tv_usec >= force_at.tv_usec))) {
		srv->shutting_down = 2;
		log_notice("grace period over: closing the remaining sessions");
		px_sessions_shutdown(srv, 1);
	}
	if (srv->sessions != NULL) {
		evtimer_add(shutdown_timer, &tv);
		return;
	}
	log_notice("all sessions closed; flushing marks");
	if (srv->marks != NULL)
		px_marks_drain(srv->marks, 3000, drained_cb, srv);
	else
		event_base_loopexit(srv->base, NULL);
}

static void signal_cb(evutil_socket_t sig, short what, void *aux)
{
	struct px_server *srv = aux;
	struct timeval tv = {0, 0};

	(void)what;
	if (sig == SIGHUP) {
		if (load_cert(srv) == 0 && srv->tls_srv != NULL)
			log_notice("SIGHUP: certificate reloaded for new connections");
		return;
	}
	if (srv->shutting_down) {
		log_notice("second signal: exiting now");
		event_base_loopexit(srv->base, NULL);
		return;
	}
	log_notice("signal %d: shutting down (grace %u s)", (int)sig, srv->cfg.shutdown_grace_s);
	srv->shutting_down = 1;
	if (srv->lis_plain != NULL)
		evconnlistener_free(srv->lis_plain);
	if (srv->lis_tls != NULL)
		evconnlistener_free(srv->lis_tls);
	srv->lis_plain = srv->lis_tls = NULL;
	px_sessions_shutdown(srv, 0);
	shutdown_timer = evtimer_new(srv->base, shutdown_tick, srv);
	if (shutdown_timer == NULL)
		abort();
	evtimer_add(shutdown_timer, &tv);
}

/* ---- setup ---- */

static int setup_logging(const struct px_config *cfg)
{
	static const char *const levels[] = {"error", "warn", "notice", "info", "debug"};
	const char *err;
	size_t i;

	if (cfg->log_file != NULL) {
		FILE *fp = fopen(cfg->log_file, "a");

		if (fp == NULL) {
			fprintf(stderr, "imapferry-proxy: cannot open %s: %s\n", cfg->log_file,
			        strerror(errno));
			return -1;
		}
		log_set_file(fp);
	}
	if (cfg->log_level != NULL) {
		for (i = 0; i < 5 && strcmp(cfg->log_level, levels[i]) != 0; i++)
			;
		if (i == 5) {
			fprintf(stderr, "imapferry-proxy: unknown log level \"%s\"\n",
			        cfg->log_level);
			return -1;
		}
		log_set_level((enum log_level)i);
	}
	if (cfg->debug != NULL) {
		if (log_set_debug(cfg->debug, &err) < 0) {
			fprintf(stderr, "imapferry-proxy: --debug: %s\n", err);
			return -1;
		}
		log_set_level(LOG_LVL_DEBUG);
	}
	return 0;
}

/* 127.0.0.0/8, ::1 or "localhost": a link that does not leave the host. */
static int host_is_loopback(const char *host)
{
	struct in_addr a4;
	struct in6_addr a6;

	if (strcasecmp(host, "localhost") == 0)
		return 1;
	if (inet_pton(AF_INET, host, &a4) == 1)
		return (ntohl(a4.s_addr) >> 24) == 127;
	if (inet_pton(AF_INET6, host, &a6) == 1)
		return IN6_IS_ADDR_LOOPBACK(&a6);
	return 0;
}

/* The default upstream is plain TCP: say so when it leaves the host. */
static void warn_plain(const char *opt, const char *host)
{
	if (!host_is_loopback(host))
		log_warn("%s %s is plain TCP: the clients' passwords cross that link in clear "
		         "(--upstream-tls or --upstream-ssl to protect it; fine on a private "
		         "network)",
		         opt, host);
}

static int setup_upstream(struct px_server *srv)
{
	const struct px_config *cfg = &srv->cfg;
	struct tls_client_opts to;
	const char *err;

	if (cfg->upstream == NULL) {
		log_error("--upstream HOST:PORT is required");
		return -1;
	}
	if (px_split_hostport(cfg->upstream, &srv->up_host, &srv->up_port) < 0) {
		log_error("bad --upstream \"%s\" (expected HOST:PORT)", cfg->upstream);
		return -1;
	}
	if (cfg->upstream_dst != NULL &&
	    px_split_hostport(cfg->upstream_dst, &srv->dst_host, &srv->dst_port) < 0) {
		log_error("bad --upstream-dst \"%s\" (expected HOST:PORT)", cfg->upstream_dst);
		return -1;
	}
	if (cfg->upstream_security == PX_UP_PLAIN) {
		warn_plain("--upstream", srv->up_host);
		if (srv->dst_host != NULL)
			warn_plain("--upstream-dst", srv->dst_host);
	}
	memset(&to, 0, sizeof(to));
	to.ca_file = cfg->upstream_ca;
	to.no_verify_peer = cfg->upstream_noverify;
	srv->tls_up = tls_client_ctx_new(&to, &err);
	if (srv->tls_up == NULL) {
		log_error("upstream TLS: %s", err);
		return -1;
	}
	return 0;
}

static int setup_marks(struct px_server *srv)
{
	struct px_marks_settings ms;
	char *host = NULL;
	uint16_t port = 0;

	memset(&ms, 0, sizeof(ms));
	if (srv->cfg.redis != NULL) {
		if (srv->cfg.redis[0] == '/') {
			ms.unix_path = srv->cfg.redis;
		} else if (px_split_hostport(srv->cfg.redis, &host, &port) == 0) {
			ms.host = host;
			ms.port = port;
		} else {
			log_error("bad --redis \"%s\" (expected HOST:PORT or a socket path)",
			          srv->cfg.redis);
			return -1;
		}
	} else {
		log_warn("no --redis: changes are not marked anywhere");
	}
	srv->marks = px_marks_new(srv->base, &ms);
	if (srv->marks != NULL) {
		struct px_routes_settings rs;

		memset(&rs, 0, sizeof(rs));
		rs.host = ms.host;
		rs.port = ms.port;
		rs.unix_path = ms.unix_path;
		rs.hold_ms = srv->cfg.freeze_hold_s * 1000u;
		rs.drain_ms = srv->cfg.freeze_drain_s * 1000u;
		srv->routes = px_routes_new(srv, &rs);
	}
	free(host);
	return srv->marks != NULL ? 0 : -1;
}

static int write_pidfile(const char *path)
{
	FILE *fp = fopen(path, "w");

	if (fp == NULL) {
		log_error("cannot write %s: %s", path, strerror(errno));
		return -1;
	}
	fprintf(fp, "%ld\n", (long)getpid());
	fclose(fp);
	return 0;
}

static int setup(struct px_server *srv)
{
	if (setup_upstream(srv) < 0 || load_cert(srv) < 0)
		return -1;
	if (srv->cfg.listen == NULL && srv->cfg.listen_tls == NULL) {
		log_error("nothing to listen on: give --listen and/or --listen-tls");
		return -1;
	}
	if (srv->cfg.listen_tls != NULL && srv->tls_srv == NULL) {
		log_error("--listen-tls needs --cert and --key");
		return -1;
	}
	if (srv->cfg.max_line < 1024) {
		log_error("--max-line must be at least 1024");
		return -1;
	}
	if (setup_marks(srv) < 0)
		return -1;
	if (srv->cfg.listen != NULL && (srv->lis_plain = listen_on(srv, srv->cfg.listen)) == NULL)
		return -1;
	if (srv->cfg.listen_tls != NULL &&
	    (srv->lis_tls = listen_on(srv, srv->cfg.listen_tls)) == NULL)
		return -1;
	if (px_http_start(srv) < 0)
		return -1;
	if (srv->cfg.pidfile != NULL && write_pidfile(srv->cfg.pidfile) < 0)
		return -1;
	return 0;
}

static void teardown(struct px_server *srv)
{
	if (srv->lis_plain != NULL)
		evconnlistener_free(srv->lis_plain);
	if (srv->lis_tls != NULL)
		evconnlistener_free(srv->lis_tls);
	if (srv->http != NULL)
		evhttp_free(srv->http);
	px_marks_free(&srv->marks);
	px_routes_free(&srv->routes); /* after the marks: their route reads call back into it */
	tls_server_ctx_free(&srv->tls_srv);
	tls_client_ctx_free(&srv->tls_up);
	if (srv->dns != NULL)
		evdns_base_free(srv->dns, 1);
	if (shutdown_timer != NULL)
		event_free(shutdown_timer);
	if (srv->cfg.pidfile != NULL)
		unlink(srv->cfg.pidfile);
	free(srv->up_host);
	free(srv->dst_host);
	px_config_clear(&srv->cfg);
}

int main(int argc, char **argv)
{
	static struct px_server srv;
	struct event *sigs[4];
	static const int signums[4] = {SIGTERM, SIGINT, SIGHUP, 0};
	int i, rc = 0;

	signal(SIGPIPE, SIG_IGN);
	/* Read and write buffers of up to 64 KiB come and go all the time; by
	 * default glibc gives the top of the heap back after each (brk() and
	 * page faults to grow it again): keep a few MiB instead. */
	mallopt(M_TRIM_THRESHOLD, 8 << 20);
	mallopt(M_TOP_PAD, 1 << 20);
	px_config_defaults(&srv.cfg);
	if ((i = parse_args(argc, argv, &srv.cfg)) < 0) {
		if (i == -1)
			usage(stderr);
		px_config_clear(&srv.cfg);
		return 64;
	}
	if (setup_logging(&srv.cfg) < 0) {
		px_config_clear(&srv.cfg);
		return 64;
	}
	srv.base = event_base_new();
	if (srv.base == NULL)
		return 70;
	srv.dns = evdns_base_new(srv.base, EVDNS_BASE_INITIALIZE_NAMESERVERS);
	memset(sigs, 0, sizeof(sigs));
	if (setup(&srv) < 0) {
		teardown(&srv);
		event_base_free(srv.base);
		return 1;
	}
	for (i = 0; signums[i] != 0; i++) {
		sigs[i] = evsignal_new(srv.base, signums[i], signal_cb, &srv);
		if (sigs[i] == NULL || evsignal_add(sigs[i], NULL) < 0)
			abort();
	}
	log_notice("imapferry-proxy %s: upstream %s (%s)%s%s%s%s", IMAPFERRY_VERSION,
	           srv.cfg.upstream, px_up_security_names[srv.cfg.upstream_security],
	           srv.cfg.listen != NULL ? ", listening on " : "",
	           srv.cfg.listen != NULL ? srv.cfg.listen : "",
	           srv.cfg.listen_tls != NULL ? ", TLS on " : "",
	           srv.cfg.listen_tls != NULL ? srv.cfg.listen_tls : "");
	if (event_base_dispatch(srv.base) < 0)
		rc = 1;
	/* Sessions left (a second signal): freed with the process. */
	for (i = 0; signums[i] != 0; i++)
		event_free(sigs[i]);
	teardown(&srv);
	event_base_free(srv.base);
	log_notice("exiting");
	return rc;
}
