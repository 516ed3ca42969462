/*
 * serve.c - imapferryctl serve: a read-only status web page on libevent's
 * evhttp. GET / is one self-contained page (inline CSS and JS, no external
 * asset) that polls GET /api/status (the JSON of "status --json") and
 * GET /api/samples (a ring of totals taken every --sample seconds, for the
 * throughput charts) every 2 s; GET /healthz answers "ok" while Redis does.
 *
 * One thread, one blocking hiredis connection (CT_TIMEOUT_MS a call): a
 * status run for thousands of users takes a moment and holds the loop that
 * long, so /api/status reuses a snapshot younger than CT_SERVE_FRESH_MS.
 * Nothing here writes to Redis. The page renders every string from Redis
 * with textContent (never as HTML) and shell-quotes user names in the
 * commands it shows.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "ctl.h"

/* One throughput sample: the totals of a status run. */
struct ct_sample {
	int64_t t_ms; /* Redis's clock */
	unsigned long long due, inflight, msgs1, msgs2;
};

struct ct_srv {
	struct ct *ct;
	struct event_base *base;
	struct evhttp *http;
	struct event *sample_ev, *sigint_ev, *sigterm_ev;
	struct rnodes *redis; /* NULL: connect at the next need */
	char *snap;           /* the last status JSON (malloc) or NULL */
	size_t snap_len;
	int64_t snap_mono_ms; /* when it was taken (monotonic) */
	char error[256];      /* why the last status run failed, or "" */
	char logged[256];     /* the last error written to stderr, or "" */
	struct ct_sample ring[CT_SERVE_SAMPLES];
	size_t ring_next, ring_n;
};

/* The page (kept as a C string: one file to ship; edit with care). */
static const char ct_page[] =
        "<!DOCTYPE html>\n"
        "<html lang=\"en\">\n"
        "<head>\n"
        "<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        "<title>imapferry status</title>\n"
        "<style>\n"
        "body { font: 14px/1.4 system-ui, sans-serif; margin: 1em 2em; color: #222; background: "
        "#fafafa; }\n"
        "h1 { font-size: 1.3em; margin: 0 0 .2em; }\n"
        "h2 { font-size: 1.05em; margin: 1.2em 0 .4em; }\n"
        "table { border-collapse: collapse; background: #fff; }\n"
        "th, td { border: 1px solid #ddd; padding: 2px 8px; text-align: right; white-space: "
        "nowrap; }\n"
        "th { background: #eee; }\n"
        ".l { text-align: left; }\n"
        "tr.FREEZE td { background: #fff4cc; }\n"
        "tr.DST td { background: #e4f4e4; }\n"
        "td.err { color: #a00000; max-width: 30em; }\n"
        ".muted { color: #777; }\n"
        "#err { color: #b00; font-weight: bold; }\n"
        "code { font: 12px monospace; background: #f0f0f0; padding: 1px 4px; user-select: all; }\n"
        "svg { background: #fff; border: 1px solid #ddd; margin-right: 1em; }\n"
        "#totals td:first-child { text-align: left; }\n"
        ".charts { display: flex; flex-wrap: wrap; }\n"
        "</style>\n"
        "</head>\n"
        "<body data-loaded=\"0\">\n"
        "<h1>imapferry migration status</h1>\n"
        "<div class=\"muted\">Read-only: this page changes nothing. Refreshed every 2 s.\n"
        "<span id=\"updated\">Loading...</span> <span id=\"err\"></span></div>\n"
        "<h2>Queue</h2>\n"
        "<table id=\"totals\"><tbody></tbody></table>\n"
        "<h2>Throughput</h2>\n"
        "<div class=\"charts\">\n"
        "<div><svg id=\"chart-rate\" width=\"480\" height=\"150\"></svg>\n"
        "<div class=\"muted\">messages on the destination, per minute (from the sync "
        "states)</div></div>\n"
        "<div><svg id=\"chart-queue\" width=\"480\" height=\"150\"></svg>\n"
        "<div class=\"muted\">queue: due + in flight</div></div>\n"
        "</div>\n"
        "<h2>Users</h2>\n"
        "<p><input id=\"filter\" placeholder=\"filter users\" size=\"30\"> <span id=\"shown\" "
        "class=\"muted\"></span></p>\n"
        "<table id=\"users\">\n"
        "<thead><tr><th class=\"l\">user</th><th "
        "class=\"l\">route</th><th>epoch</th><th>lag</th><th>due</th>\n"
        "<th>in flight</th><th>folders</th><th>msgs src</th><th>msgs dst</th>\n"
        "<th title=\"bytes counted by the last verified pass (final-delta, cutover, rollback)\">"
        "size src</th><th>size dst</th><th>next poll</th>\n"
        "<th>last sync</th><th class=\"l\">last error</th>\n"
        "<th class=\"l\">command</th></tr></thead>\n"
        "<tbody id=\"rows\"></tbody>\n"
        "</table>\n"
        "<h2>Cutover</h2>\n"
        "<p>Run the command of a user's row in a shell (SYNC-OPTIONS: imapferry-sync's connection "
        "options,\n"
        "as for a final delta). The route goes SRC, FREEZE (cutover running), then DST on success, "
        "or back\n"
        "to SRC on any difference. After the flip, <code>rollback</code> sends the user back to "
        "the source\n"
        "(it syncs the destination back to the source first; without SYNC-OPTIONS it only says "
        "what would be lost).\n"
        "A whole batch: <code id=\"cmd-all\"></code></p>\n"
        "<script>\n"
        "'use strict';\n"
        "var ctl = 'imapferryctl';\n"
        "var last = null;\n"
        "var loads = 0;\n"
        "\n"
        "function el(tag, text, cls) {\n"
        "  var e = document.createElement(tag);\n"
        "  if (text !== undefined && text !== null) e.textContent = String(text);\n"
        "  if (cls) e.className = cls;\n"
        "  return e;\n"
        "}\n"
        "function bytes(n) {\n"
        "  if (n === null || n === undefined) return '-';\n"
        "  if (n < 1024) return n + 'B';\n"
        "  var u = -1;\n"
        "  while (n >= 1024 && u < 4) { n /= 1024; u++; }\n"
        "  return n.toFixed(1) + 'KMGTP'[u];\n"
        "}\n"
        "function age(ms) {\n"
        "  if (ms === null || ms < 0) return '-';\n"
        "  if (ms < 10000) return (ms / 1000).toFixed(1) + 's';\n"
        "  if (ms < 3600000) return Math.floor(ms / 1000) + 's';\n"
        "  return (ms / 3600000).toFixed(1) + 'h';\n"
        "}\n"
        "/* A shell word: user names come from Redis and may hold anything. */\n"
        "function shq(s) {\n"
        "  return /^[A-Za-z0-9@%+=:,._\\/-]+$/.test(s) ? s : \"'\" + s.replace(/'/g, \"'\\\\''\") "
        "+ \"'\";\n"
        "}\n"
        "function command(u) {\n"
        "  if (u.route === 'DST') return ctl + ' rollback ' + shq(u.user) + ' -- SYNC-OPTIONS';\n"
        "  if (u.route === 'FREEZE' && u.lease_expired)\n"
        "    return ctl + ' rollback ' + shq(u.user) + '   (its imapferryctl is gone)';\n"
        "  if (u.route === 'FREEZE') return '(cutover running)';\n"
        "  return ctl + ' cutover ' + shq(u.user) + ' -- SYNC-OPTIONS';\n"
        "}\n"
        "function renderUsers(doc) {\n"
        "  var f = document.getElementById('filter').value;\n"
        "  var frag = document.createDocumentFragment();\n"
        "  var shown = 0;\n"
        "  doc.users.forEach(function (u) {\n"
        "    if (f && u.user.indexOf(f) < 0) return;\n"
        "    var route = ['SRC', 'FREEZE', 'DST'].indexOf(u.route) >= 0 ? u.route : 'SRC';\n"
        "    var tr = el('tr', null, route);\n"
        "    tr.setAttribute('data-user', u.user);\n"
        "    tr.setAttribute('data-route', u.route);\n"
        "    tr.appendChild(el('td', u.user, 'l user'));\n"
        "    tr.appendChild(el('td', u.lease_expired ? u.route + ' (lease expired)' : u.route, "
        "'l route'));\n"
        "    tr.appendChild(el('td', u.epoch));\n"
        "    tr.appendChild(el('td', age(u.oldest_due_age_ms), 'lag'));\n"
        "    tr.appendChild(el('td', u.due, 'due'));\n"
        "    tr.appendChild(el('td', u.inflight, 'inflight'));\n"
        "    tr.appendChild(el('td', u.state ? u.folders : '-'));\n"
        "    tr.appendChild(el('td', u.state ? u.messages1 : '-', 'm1'));\n"
        "    tr.appendChild(el('td', u.state ? u.messages2 : '-', 'm2'));\n"
        "    tr.appendChild(el('td', bytes(u.bytes1), 'b1'));\n"
        "    tr.appendChild(el('td', bytes(u.bytes2), 'b2'));\n"
        "    tr.appendChild(el('td', u.next_poll_ms < 0 ? '-' : age(Math.max(0, u.next_poll_ms - "
        "doc.now_ms))));\n"
        "    tr.appendChild(el('td', u.last_sync_ms < 0 ? '-' : age(Math.max(0, doc.now_ms - "
        "u.last_sync_ms)) + ' ago', 'lastsync'));\n"
        "    var te = el('td', u.error_current ? u.last_error_by + ': ' + u.last_error + ' (' + "
        "age(Math.max(0, doc.now_ms - u.last_error_ms)) + ' ago)' : '-', 'l lasterror');\n"
        "    if (u.error_current) te.classList.add('err');\n"
        "    tr.appendChild(te);\n"
        "    var td = el('td', null, 'l');\n"
        "    td.appendChild(el('code', command(u), 'cmd'));\n"
        "    tr.appendChild(td);\n"
        "    frag.appendChild(tr);\n"
        "    shown++;\n"
        "  });\n"
        "  document.getElementById('rows').replaceChildren(frag);\n"
        "  document.getElementById('shown').textContent = shown + ' of ' + doc.users.length + ' "
        "users';\n"
        "}\n"
        "function renderTotals(doc) {\n"
        "  var t = doc.totals, n = {SRC: 0, FREEZE: 0, DST: 0};\n"
        "  doc.users.forEach(function (u) { if (n[u.route] !== undefined) n[u.route]++; });\n"
        "  var rows = [\n"
        "    ['users', t.users, 'users'],\n"
        "    ['on the source / frozen / on the destination', n.SRC + ' / ' + n.FREEZE + ' / ' + "
        "n.DST, 'routes'],\n"
        "    ['due items', t.due, 'due'],\n"
        "    ['in flight (syncs running)', t.inflight, 'inflight'],\n"
        "    ['messages on the source', t.messages1, 'm1'],\n"
        "    ['messages on the destination', t.messages2, 'm2'],\n"
        "    ['bytes on the source / destination (last verified passes)', bytes(t.bytes1) + "
        "' / ' + bytes(t.bytes2), 'bytes'],\n"
        "    ['copied', t.messages1 ? (100 * t.messages2 / t.messages1).toFixed(1) + '%' : '-', "
        "'pct']\n"
        "  ];\n"
        "  var frag = document.createDocumentFragment();\n"
        "  rows.forEach(function (r) {\n"
        "    var tr = el('tr');\n"
        "    tr.setAttribute('data-total', r[2]);\n"
        "    tr.appendChild(el('td', r[0]));\n"
        "    tr.appendChild(el('td', r[1]));\n"
        "    frag.appendChild(tr);\n"
        "  });\n"
        "  document.querySelector('#totals tbody').replaceChildren(frag);\n"
        "}\n"
        "var SVG = 'http://www.w3.org/2000/svg';\n"
        "function svgEl(tag, attrs, text) {\n"
        "  var e = document.createElementNS(SVG, tag);\n"
        "  Object.keys(attrs).forEach(function (k) { e.setAttribute(k, attrs[k]); });\n"
        "  if (text !== undefined) e.textContent = text;\n"
        "  return e;\n"
        "}\n"
        "/* pts: [[t_ms, value], ...] in time order. */\n"
        "function drawChart(id, pts, color) {\n"
        "  var svg = document.getElementById(id);\n"
        "  var w = +svg.getAttribute('width'), h = +svg.getAttribute('height');\n"
        "  var l = 48, r = 8, top = 8, b = 20;\n"
        "  svg.replaceChildren();\n"
        "  svg.appendChild(svgEl('line', {x1: l, y1: h - b, x2: w - r, y2: h - b, stroke: "
        "'#999'}));\n"
        "  svg.appendChild(svgEl('line', {x1: l, y1: top, x2: l, y2: h - b, stroke: '#999'}));\n"
        "  if (pts.length < 2) {\n"
        "    svg.appendChild(svgEl('text', {x: l + 8, y: h / 2, fill: '#777', 'font-size': 12},\n"
        "                          'collecting samples...'));\n"
        "    return;\n"
        "  }\n"
        "  var t0 = pts[0][0], t1 = pts[pts.length - 1][0], max = 0;\n"
        "  pts.forEach(function (p) { if (p[1] > max) max = p[1]; });\n"
        "  if (max <= 0) max = 1;\n"
        "  var xs = function (t) { return l + (w - l - r) * (t - t0) / Math.max(1, t1 - t0); };\n"
        "  var ys = function (v) { return h - b - (h - b - top) * v / max; };\n"
        "  var d = pts.map(function (p) { return xs(p[0]).toFixed(1) + ',' + ys(p[1]).toFixed(1); "
        "});\n"
        "  svg.appendChild(svgEl('polyline', {points: d.join(' '), fill: 'none', stroke: color,\n"
        "                                     'stroke-width': 1.5, 'class': 'series'}));\n"
        "  svg.appendChild(svgEl('text', {x: l - 4, y: top + 10, 'text-anchor': 'end', "
        "'font-size': 11},\n"
        "                        String(Math.round(max))));\n"
        "  svg.appendChild(svgEl('text', {x: l - 4, y: h - b, 'text-anchor': 'end', 'font-size': "
        "11}, '0'));\n"
        "  svg.appendChild(svgEl('text', {x: l, y: h - 5, 'font-size': 11, fill: '#777'},\n"
        "                        '-' + age(t1 - t0)));\n"
        "  svg.appendChild(svgEl('text', {x: w - r, y: h - 5, 'text-anchor': 'end', 'font-size': "
        "11,\n"
        "                                 fill: '#777'}, 'now'));\n"
        "}\n"
        "/* samples: [[t_ms, due, inflight, messages1, messages2], ...] */\n"
        "function renderCharts(s) {\n"
        "  var rate = [], queue = [];\n"
        "  for (var i = 0; i < s.length; i++) {\n"
        "    queue.push([s[i][0], s[i][1] + s[i][2]]);\n"
        "    if (i > 0 && s[i][0] > s[i - 1][0])\n"
        "      rate.push([s[i][0], Math.max(0, s[i][4] - s[i - 1][4]) * 60000 / (s[i][0] - s[i - "
        "1][0])]);\n"
        "  }\n"
        "  drawChart('chart-rate', rate, '#1565c0');\n"
        "  drawChart('chart-queue', queue, '#c62828');\n"
        "}\n"
        "function getJSON(url) {\n"
        "  return fetch(url, {cache: 'no-store'}).then(function (r) {\n"
        "    return r.json().then(function (j) {\n"
        "      if (!r.ok) throw new Error(j && j.error ? j.error : 'HTTP ' + r.status);\n"
        "      return j;\n"
        "    });\n"
        "  });\n"
        "}\n"
        "function tick() {\n"
        "  Promise.all([getJSON('api/status'), getJSON('api/samples')]).then(function (res) {\n"
        "    last = res[0];\n"
        "    ctl = 'imapferryctl --redis ' + shq(res[1].redis);\n"
        "    renderTotals(last);\n"
        "    renderUsers(last);\n"
        "    renderCharts(res[1].samples);\n"
        "    document.getElementById('cmd-all').textContent =\n"
        "      ctl + ' cutover --users-file USERS.txt --concurrency 4 -- SYNC-OPTIONS';\n"
        "    document.getElementById('updated').textContent =\n"
        "      'Updated ' + new Date(last.now_ms).toISOString().replace('T', ' ').slice(0, 19) + ' "
        "UTC.';\n"
        "    document.getElementById('err').textContent = '';\n"
        "    document.body.setAttribute('data-loaded', String(++loads));\n"
        "  }).catch(function (e) {\n"
        "    document.getElementById('err').textContent = 'Not updated: ' + e.message;\n"
        "  });\n"
        "}\n"
        "document.getElementById('filter').addEventListener('input', function () {\n"
        "  if (last) renderUsers(last);\n"
        "});\n"
        "tick();\n"
        "setInterval(tick, 2000);\n"
        "</script>\n"
        "</body>\n"
        "</html>\n";

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct rnodes *srv_redis(struct ct_srv *srv)
{
	const char *err;

	if (srv->redis == NULL && (srv->redis = ct_connect(srv->ct->redis, &err)) == NULL)
		snprintf(srv->error, sizeof(srv->error), "%s", err);
	return srv->redis;
}

/* After a failed call: the connection may be out of step, drop it. */
static void srv_redis_lost(struct ct_srv *srv)
{
	if (srv->error[0] == '\0')
		snprintf(srv->error, sizeof(srv->error), "Redis at %s: %s", srv->ct->redis,
		         srv->redis != NULL && rn_error(srv->redis)[0] ? rn_error(srv->redis)
		                                                       : "command failed");
	rn_close(&srv->redis);
	srv->redis = NULL;
}

/* A new status snapshot; with sample, also a throughput sample. 0 or -1
 * (srv->error says why; the old snapshot is kept but not served). */
static int srv_refresh(struct ct_srv *srv, int sample)
{
	struct ct_totals t;
	char *buf = NULL;
	size_t len = 0;
	FILE *fp;
	int rc;

	srv->error[0] = '\0';
	if (srv_redis(srv) == NULL)
		return -1;
	if ((fp = open_memstream(&buf, &len)) == NULL) {
		snprintf(srv->error, sizeof(srv->error), "out of memory");
		return -1;
	}
	rc = ct_status_json(srv->redis, NULL, 0, fp, &t);
	if (fclose(fp) != 0)
		rc = -1;
	if (rc < 0) {
		free(buf);
		srv_redis_lost(srv);
		return -1;
	}
	free(srv->snap);
	srv->snap = buf;
	srv->snap_len = len;
	srv->snap_mono_ms = mono_ms();
	if (sample) {
		struct ct_sample *s = &srv->ring[srv->ring_next];

		s->t_ms = t.now_ms;
		s->due = t.due;
		s->inflight = t.inflight;
		s->msgs1 = t.msgs1;
		s->msgs2 = t.msgs2;
		srv->ring_next = (srv->ring_next + 1) % CT_SERVE_SAMPLES;
		if (srv->ring_n < CT_SERVE_SAMPLES)
			srv->ring_n++;
	}
	return 0;
}

static void sample_cb(evutil_socket_t fd, short what, void *arg)
{
	struct ct_srv *srv = arg;

	(void)fd;
	(void)what;
	/* Once per change, not once per sample: Redis may be gone for hours. */
	if (srv_refresh(srv, 1) < 0) {
		if (strcmp(srv->error, srv->logged) != 0)
			fprintf(stderr, "imapferryctl: serve: %s\n", srv->error);
		snprintf(srv->logged, sizeof(srv->logged), "%s", srv->error);
	} else if (srv->logged[0] != '\0') {
		fprintf(stderr, "imapferryctl: serve: Redis at %s answers again\n", srv->ct->redis);
		srv->logged[0] = '\0';
	}
}

static void signal_cb(evutil_socket_t fd, short what, void *arg)
{
	struct ct_srv *srv = arg;

	(void)fd;
	(void)what;
	event_base_loopexit(srv->base, NULL);
}

static void reply(struct evhttp_request *req, int code, const char *reason, const char *type,
                  struct evbuffer *body)
{
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);

	evhttp_add_header(h, "Content-Type", type);
	evhttp_add_header(h, "Cache-Control", "no-store");
	evhttp_add_header(h, "X-Content-Type-Options", "nosniff");
	evhttp_add_header(h, "X-Frame-Options", "DENY");
	/* Inline script and style only; fetch() to this origin only: the page
	 * cannot load or send anything elsewhere even if data tricked it. */
	evhttp_add_header(h, "Content-Security-Policy",
	                  "default-src 'none'; script-src 'unsafe-inline'; "
	                  "style-src 'unsafe-inline'; connect-src 'self'; "
	                  "frame-ancestors 'none'; base-uri 'none'; form-action 'none'");
	evhttp_send_reply(req, code, reason, body);
}

static void reply_text(struct evhttp_request *req, int code, const char *reason, const char *text)
{
	struct evbuffer *b = evbuffer_new();

	if (b == NULL) {
		evhttp_send_error(req, HTTP_INTERNAL, NULL);
		return;
	}
	evbuffer_add(b, text, strlen(text));
	reply(req, code, reason, "text/plain; charset=utf-8", b);
	evbuffer_free(b);
}

static void json_error(struct evhttp_request *req, const char *msg)
{
	struct evbuffer *b = evbuffer_new();

	if (b == NULL) {
		evhttp_send_error(req, HTTP_INTERNAL, NULL);
		return;
	}
	evbuffer_add_printf(b, "{\"error\":\"");
	for (const char *p = msg; *p != '\0'; p++) {
		unsigned char ch = (unsigned char)*p;

		if (ch == '"' || ch == '\\')
			evbuffer_add_printf(b, "\\%c", ch);
		else if (ch < 0x20 || ch == 0x7f)
			evbuffer_add_printf(b, "\\u%04x", ch);
		else
			evbuffer_add(b, p, 1);
	}
	evbuffer_add_printf(b, "\"}\n");
	reply(req, 503, "Service Unavailable", "application/json", b);
	evbuffer_free(b);
}

static void api_status(struct ct_srv *srv, struct evhttp_request *req)
{
	struct evbuffer *b;

	if ((srv->snap == NULL || srv->error[0] != '\0' ||
	     mono_ms() - srv->snap_mono_ms >= (int64_t)CT_SERVE_FRESH_MS) &&
	    srv_refresh(srv, 0) < 0) {
		json_error(req, srv->error);
		return;
	}
	if ((b = evbuffer_new()) == NULL) {
		evhttp_send_error(req, HTTP_INTERNAL, NULL);
		return;
	}
	evbuffer_add(b, srv->snap, srv->snap_len);
	reply(req, HTTP_OK, "OK", "application/json", b);
	evbuffer_free(b);
}

/* {"redis":..., "sample_ms":..., "samples":[[t, due, inflight, m1, m2], ...]}
 * oldest first. */
static void api_samples(struct ct_srv *srv, struct evhttp_request *req)
{
	struct evbuffer *b = evbuffer_new();
	size_t first = (srv->ring_next + CT_SERVE_SAMPLES - srv->ring_n) % CT_SERVE_SAMPLES;

	if (b == NULL) {
		evhttp_send_error(req, HTTP_INTERNAL, NULL);
		return;
	}
	evbuffer_add_printf(b, "{\"redis\":\"");
	for (const char *p = srv->ct->redis; *p != '\0'; p++)
		if ((unsigned char)*p >= 0x20 && *p != '"' && *p != '\\' && *p != 0x7f)
			evbuffer_add(b, p, 1);
	evbuffer_add_printf(b, "\",\"sample_ms\":%u,\"samples\":[", srv->ct->sample_s * 1000u);
	for (size_t i = 0; i < srv->ring_n; i++) {
		const struct ct_sample *s = &srv->ring[(first + i) % CT_SERVE_SAMPLES];

		evbuffer_add_printf(b, "%s[%lld,%llu,%llu,%llu,%llu]", i ? "," : "",
		                    (long long)s->t_ms, s->due, s->inflight, s->msgs1, s->msgs2);
	}
	evbuffer_add_printf(b, "]}\n");
	reply(req, HTTP_OK, "OK", "application/json", b);
	evbuffer_free(b);
}

static void healthz(struct ct_srv *srv, struct evhttp_request *req)
{
	redisReply *r = NULL;

	srv->error[0] = '\0';
	if (srv_redis(srv) != NULL && (r = ct_cmd(srv->redis, "PING")) != NULL) {
		freeReplyObject(r);
		reply_text(req, HTTP_OK, "OK", "ok\n");
		return;
	}
	if (srv->redis != NULL)
		srv_redis_lost(srv);
	reply_text(req, 503, "Service Unavailable", "redis unreachable\n");
}

static void request_cb(struct evhttp_request *req, void *arg)
{
	struct ct_srv *srv = arg;
	const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
	struct evbuffer *b;

	if (path == NULL || strcmp(path, "/") == 0 || strcmp(path, "/index.html") == 0) {
		if ((b = evbuffer_new()) == NULL) {
			evhttp_send_error(req, HTTP_INTERNAL, NULL);
			return;
		}
		evbuffer_add_reference(b, ct_page, sizeof(ct_page) - 1, NULL, NULL);
		reply(req, HTTP_OK, "OK", "text/html; charset=utf-8", b);
		evbuffer_free(b);
	} else if (strcmp(path, "/api/status") == 0) {
		api_status(srv, req);
	} else if (strcmp(path, "/api/samples") == 0) {
		api_samples(srv, req);
	} else if (strcmp(path, "/healthz") == 0) {
		healthz(srv, req);
	} else {
		reply_text(req, HTTP_NOTFOUND, "Not Found", "not found\n");
	}
}

/* "ADDR:PORT", "[ADDR]:PORT" or "PORT" (127.0.0.1). 0 or -1. */
static int parse_listen(const char *spec, char *addr, size_t size, unsigned short *port_r)
{
	const char *colon = strrchr(spec, ':'), *a = spec, *p = spec;
	size_t al = 0;
	char *end;
	unsigned long port;

	if (colon != NULL) {
		a = spec;
		al = (size_t)(colon - spec);
		p = colon + 1;
		if (al >= 2 && a[0] == '[' && a[al - 1] == ']') {
			a++;
			al -= 2;
		}
	}
	if (al == 0) {
		a = "127.0.0.1";
		al = strlen(a);
	}
	port = strtoul(p, &end, 10);
	if (*p == '\0' || *end != '\0' || port > 65535 || al >= size)
		return -1;
	memcpy(addr, a, al);
	addr[al] = '\0';
	*port_r = (unsigned short)port;
	return 0;
}

/* The bound address as "http://HOST:PORT/" (port 0 picks a free one). */
static void print_listening(struct evhttp_bound_socket *bs)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char host[INET6_ADDRSTRLEN] = "?";
	unsigned port = 0;

	if (getsockname(evhttp_bound_socket_get_fd(bs), (struct sockaddr *)&ss, &sl) == 0) {
		if (ss.ss_family == AF_INET6) {
			const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&ss;

			inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof(host));
			port = ntohs(s6->sin6_port);
			printf("imapferryctl: serving http://[%s]:%u/\n", host, port);
			fflush(stdout);
			return;
		}
		inet_ntop(AF_INET, &((const struct sockaddr_in *)&ss)->sin_addr, host,
		          sizeof(host));
		port = ntohs(((const struct sockaddr_in *)&ss)->sin_port);
	}
	printf("imapferryctl: serving http://%s:%u/\n", host, port);
	fflush(stdout);
}

static int srv_start(struct ct_srv *srv)
{
	struct timeval tv = {(time_t)srv->ct->sample_s, 0};
	struct evhttp_bound_socket *bs;
	char addr[256];
	unsigned short port;

	if (parse_listen(srv->ct->http, addr, sizeof(addr), &port) < 0) {
		fprintf(stderr, "imapferryctl: --http needs ADDR:PORT, not %s\n", srv->ct->http);
		return CT_EXIT_USAGE;
	}
	if ((srv->base = event_base_new()) == NULL || (srv->http = evhttp_new(srv->base)) == NULL)
		return CT_EXIT_FAILED;
	evhttp_set_allowed_methods(srv->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD);
	evhttp_set_max_headers_size(srv->http, CT_SERVE_MAX_HEADERS);
	evhttp_set_max_body_size(srv->http, 0);
	evhttp_set_timeout(srv->http, CT_SERVE_TIMEOUT_S);
	evhttp_set_gencb(srv->http, request_cb, srv);
	if ((bs = evhttp_bind_socket_with_handle(srv->http, addr, port)) == NULL) {
		fprintf(stderr, "imapferryctl: cannot listen on %s: %s\n", srv->ct->http,
		        strerror(errno));
		return CT_EXIT_FAILED;
	}
	srv->sample_ev = event_new(srv->base, -1, EV_PERSIST, sample_cb, srv);
	srv->sigint_ev = evsignal_new(srv->base, SIGINT, signal_cb, srv);
	srv->sigterm_ev = evsignal_new(srv->base, SIGTERM, signal_cb, srv);
	if (srv->sample_ev == NULL || srv->sigint_ev == NULL || srv->sigterm_ev == NULL ||
	    event_add(srv->sample_ev, &tv) < 0 || event_add(srv->sigint_ev, NULL) < 0 ||
	    event_add(srv->sigterm_ev, NULL) < 0)
		return CT_EXIT_FAILED;
	print_listening(bs);
	return CT_EXIT_OK;
}

int ct_serve(struct ct *ct)
{
	struct ct_srv *srv = calloc(1, sizeof(*srv));
	int rc;

	if (srv == NULL)
		return CT_EXIT_FAILED;
	srv->ct = ct;
	signal(SIGPIPE, SIG_IGN);
	rc = srv_start(srv);
	if (rc == CT_EXIT_OK) {
		sample_cb(-1, 0, srv); /* the first sample, and a first word on Redis */
		if (event_base_dispatch(srv->base) < 0)
			rc = CT_EXIT_FAILED;
	}
	if (srv->sample_ev != NULL)
		event_free(srv->sample_ev);
	if (srv->sigint_ev != NULL)
		event_free(srv->sigint_ev);
	if (srv->sigterm_ev != NULL)
		event_free(srv->sigterm_ev);
	if (srv->http != NULL)
		evhttp_free(srv->http);
	if (srv->base != NULL)
		event_base_free(srv->base);
	rn_close(&srv->redis);
	free(srv->snap);
	free(srv);
	return rc;
}
