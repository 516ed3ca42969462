/*
 * http.c - imapferry-proxy's HTTP endpoint (libevent evhttp): /metrics in
 * the Prometheus text exposition format (version 0.0.4) and /healthz.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/util.h>

#include "imapferry/prom.h"
#include "marks.h"
#include "proxy.h"

static void http_metrics(struct evhttp_request *req, void *aux)
{
	struct px_server *srv = aux;
	struct evbuffer *b = evbuffer_new();
	struct px_marks_stats ms;
	const struct px_metrics *m = &srv->m;

	if (b == NULL) {
		evhttp_send_error(req, HTTP_INTERNAL, NULL);
		return;
	}
	memset(&ms, 0, sizeof(ms));
	if (srv->marks != NULL)
		px_marks_get_stats(srv->marks, &ms);
	prom_metric(b, "imapferry_proxy_connections", "gauge", "Client connections open now.",
	            m->conns_current);
	prom_metric(b, "imapferry_proxy_connections_total", "counter",
	            "Client connections accepted.", m->conns_total);
	prom_metric(b, "imapferry_proxy_sessions_authenticated", "gauge",
	            "Sessions logged in and relaying now.", m->sessions_authed);
	prom_metric(b, "imapferry_proxy_logins_total", "counter", "Successful upstream logins.",
	            m->logins_ok);
	prom_metric(b, "imapferry_proxy_login_failures_total", "counter",
	            "Logins the upstream refused.", m->logins_failed);
	prom_metric(b, "imapferry_proxy_upstream_errors_total", "counter",
	            "Upstream connections that failed before login.", m->upstream_errors);
	evbuffer_add_printf(b,
	                    "# HELP imapferry_proxy_bytes_total Payload bytes relayed.\n"
	                    "# TYPE imapferry_proxy_bytes_total counter\n"
	                    "imapferry_proxy_bytes_total{direction=\"client_to_upstream\"} %llu\n"
	                    "imapferry_proxy_bytes_total{direction=\"upstream_to_client\"} %llu\n",
	                    (unsigned long long)m->bytes_c2u, (unsigned long long)m->bytes_u2c);
	prom_metric(b, "imapferry_proxy_commands_total", "counter",
	            "Client commands seen after login.", m->commands);
	prom_metric(b, "imapferry_proxy_preauth_commands_total", "counter",
	            "Client commands answered before login.", m->preauth_commands);
	prom_metric(b, "imapferry_proxy_rejected_total", "counter",
	            "Sessions closed for a protocol error or a limit.", m->rejected);
	prom_metric(b, "imapferry_proxy_compress_refused_total", "counter",
	            "COMPRESS commands refused with NO [CANNOT].", m->compress_refused);
	prom_metric(b, "imapferry_proxy_starttls_discarded_bytes_total", "counter",
	            "Plaintext bytes discarded behind STARTTLS.", m->starttls_injection_bytes);
	prom_metric(b, "imapferry_proxy_marks_total", "counter", "Dirty marks made.", ms.marks);
	prom_metric(b, "imapferry_proxy_redis_sent_total", "counter", "Redis commands answered OK.",
	            ms.sent);
	prom_metric(b, "imapferry_proxy_redis_errors_total", "counter",
	            "Redis errors, timeouts and lost connections.", ms.errors);
	prom_metric(b, "imapferry_proxy_marks_dropped_total", "counter",
	            "Marks dropped from the full ring (users get a whole-user mark).", ms.dropped);
	prom_metric(b, "imapferry_proxy_marks_hot_total", "counter",
	            "Marks of a (user, folder) in a burst, given the longer debounce.", ms.hot);
	prom_metric(b, "imapferry_proxy_redis_reconnects_total", "counter",
	            "Successful Redis (re)connections.", ms.reconnects);
	prom_metric(b, "imapferry_proxy_redis_backlog", "gauge", "Marks waiting for Redis.",
	            ms.backlog);
	prom_metric(b, "imapferry_proxy_redis_connected", "gauge", "1 while Redis is connected.",
	            (unsigned long long)(ms.connected != 0));
	prom_metric(b, "imapferry_proxy_redis_last_latency_microseconds", "gauge",
	            "Round trip of the last mark.", ms.last_latency_us);
	prom_metric(b, "imapferry_proxy_routes_from_cache_total", "counter",
	            "Route lookups Redis did not answer, answered by the last route read.",
	            ms.cached_routes);
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
	                  "text/plain; version=0.0.4; charset=utf-8");
	evhttp_send_reply(req, HTTP_OK, "OK", b);
	evbuffer_free(b);
}

static void http_healthz(struct evhttp_request *req, void *aux)
{
	struct px_server *srv = aux;
	struct evbuffer *b = evbuffer_new();

	if (b == NULL) {
		evhttp_send_error(req, HTTP_INTERNAL, NULL);
		return;
	}
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "text/plain");
	if (srv->shutting_down) {
		evbuffer_add_printf(b, "shutting down\n");
		evhttp_send_reply(req, 503, "Service Unavailable", b);
	} else {
		evbuffer_add_printf(b, "ok\n");
		evhttp_send_reply(req, HTTP_OK, "OK", b);
	}
	evbuffer_free(b);
}

int px_http_start(struct px_server *srv)
{
	char *host = NULL;
	uint16_t port;

	if (srv->cfg.http == NULL)
		return 0;
	if (px_split_hostport(srv->cfg.http, &host, &port) < 0) {
		log_error("http: bad address \"%s\" (expected ADDR:PORT)", srv->cfg.http);
		return -1;
	}
	srv->http = evhttp_new(srv->base);
	if (srv->http == NULL || evhttp_bind_socket(srv->http, host, port) < 0) {
		log_error("http: cannot listen on %s", srv->cfg.http);
		free(host);
		return -1;
	}
	free(host);
	evhttp_set_allowed_methods(srv->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD);
	evhttp_set_cb(srv->http, "/metrics", http_metrics, srv);
	evhttp_set_cb(srv->http, "/healthz", http_healthz, srv);
	log_notice("metrics on http://%s/metrics", srv->cfg.http);
	return 0;
}
