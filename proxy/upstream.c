/*
 * upstream.c - from the client's credentials to a logged-in upstream
 * connection: route lookup (marks.h), connect (TLS, STARTTLS or plain),
 * greeting, capabilities, login with the client's own credentials, and the
 * answer to the client's LOGIN/AUTHENTICATE.
 *
 * The login uses AUTHENTICATE PLAIN (RFC 4616) when the upstream offers it,
 * else the LOGIN command (RFC 3501 6.2.3) with literals as needed; XOAUTH2
 * and OAUTHBEARER initial responses are passed through as the client sent
 * them, and an error challenge goes to the client, whose reply comes back.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <imapferry/conn.h>
#include <imapferry/istr.h>

#include "marks.h"
#include "session.h"

enum up_step {
	UP_ROUTE,
	UP_GREETING,
	UP_STARTTLS, /* STARTTLS sent */
	UP_TLS,      /* handshake running */
	UP_CAPS,     /* CAPABILITY sent */
	UP_LOGIN,    /* login command sent */
	UP_POSTCAPS, /* CAPABILITY after login */
	UP_DONE
};

static void up_on_read(struct conn *c, struct evbuffer *in, void *aux);
static void up_on_event(struct conn *c, enum conn_event ev, const char *error, void *aux);
static void up_on_drained(struct conn *c, void *aux);

/* ---- capability filtering ---- */

/* Post-login capabilities a client must not see through the proxy:
 * COMPRESS would hide the traffic from the parser, STARTTLS after login
 * is meaningless and would be refused, LOGINDISABLED/AUTH=/SASL-IR are
 * pre-login only. */
static int cap_dropped(const char *tok, size_t len)
{
	static const char *const exact[] = {"STARTTLS", "LOGINDISABLED", "SASL-IR"};
	static const char *const prefix[] = {"COMPRESS=", "AUTH="};
	size_t i;

	for (i = 0; i < sizeof(exact) / sizeof(exact[0]); i++)
		if (len == strlen(exact[i]) && strncasecmp(tok, exact[i], len) == 0)
			return 1;
	for (i = 0; i < sizeof(prefix) / sizeof(prefix[0]); i++)
		if (len >= strlen(prefix[i]) && strncasecmp(tok, prefix[i], strlen(prefix[i])) == 0)
			return 1;
	return 0;
}

unsigned px_caps_filter(const char *list, size_t len, char *out, size_t outsize)
{
	size_t i = 0, o = 0;
	unsigned dropped = 0;

	if (outsize == 0)
		return 0;
	while (i < len) {
		size_t start, n;

		while (i < len && list[i] == ' ')
			i++;
		start = i;
		while (i < len && list[i] != ' ')
			i++;
		n = i - start;
		if (n == 0)
			break;
		if (cap_dropped(list + start, n)) {
			dropped++;
			continue;
		}
		if (o + n + 2 > outsize)
			break;
		if (o > 0)
			out[o++] = ' ';
		memcpy(out + o, list + start, n);
		o += n;
	}
	out[o] = '\0';
	return dropped;
}

/* ---- helpers ---- */

static void up_send(struct px_session *s, const char *fmt, ...) LOG_PRINTF(2, 3);
static void up_send(struct px_session *s, const char *fmt, ...)
{
	va_list ap;
	struct evbuffer *out = conn_output(s->up);

	if (out == NULL)
		return;
	va_start(ap, fmt);
	evbuffer_add_vprintf(out, fmt, ap);
	va_end(ap);
}

static char *b64_encode(const void *data, size_t len)
{
	char *out = malloc(4 * ((len + 2) / 3) + 1);

	if (out == NULL)
		abort();
	EVP_EncodeBlock((unsigned char *)out, data, (int)len);
	return out;
}

static void login_timer_cb(evutil_socket_t fd, short what, void *aux);

/* The login failed. unavailable: the upstream could not be reached (the
 * client gets [UNAVAILABLE]); else text is the upstream's NO/BAD line
 * (after its tag), relayed as is. */
static void up_fail(struct px_session *s, int unavailable, const char *text)
{
	if (s->timer != NULL) {
		event_free(s->timer);
		s->timer = NULL;
	}
	px_marks_route_cancel(&s->route);
	conn_free(&s->up);
	imap_parser_free(&s->sp);
	evbuffer_drain(s->shold, evbuffer_get_length(s->shold));
	if (s->up_pending != NULL)
		evbuffer_drain(s->up_pending, evbuffer_get_length(s->up_pending));
	s->up_step = UP_ROUTE;
	if (unavailable) {
		s->srv->m.upstream_errors++;
		px_session_log(s, LOG_LVL_WARN, "upstream %s:%u: %s", s->up_host,
		               (unsigned)s->up_port, text);
		px_session_reply(
		        s, "%s NO [UNAVAILABLE] Upstream server unavailable, try again later.\r\n",
		        s->tag);
	} else {
		char safe[300];

		s->srv->m.logins_failed++;
		log_sanitize(safe, sizeof(safe), text, strlen(text), 200);
		px_session_log(s, LOG_LVL_INFO, "login refused by the upstream: %s", safe);
		px_session_reply(s, "%s %s\r\n", s->tag, text);
	}
	px_session_login_done(s, 0);
}

static void login_timer_cb(evutil_socket_t fd, short what, void *aux)
{
	struct px_session *s = aux;

	(void)fd;
	(void)what;
	up_fail(s, 1, "login timed out");
}

/* ---- route and connect ---- */

static void up_connect(struct px_session *s)
{
	struct conn_opts o;
	const char *err;

	conn_opts_init(&o);
	o.host = s->up_host;
	o.port = s->up_port;
	o.mode = s->srv->cfg.upstream_security == PX_UP_SSL ? CONN_TLS : CONN_PLAIN;
	o.tls = s->srv->tls_up;
	o.connect_timeout_ms = PX_CONNECT_TIMEOUT;
	o.read_timeout_ms = 0;
	o.write_timeout_ms = s->srv->cfg.idle_timeout_s * 1000u;
	o.keepalive = 1;
	o.read_high = PX_BUF_HIGH;
	o.write_low = PX_BUF_LOW;
	o.on_read = up_on_read;
	o.on_event = up_on_event;
	o.on_drained = up_on_drained;
	o.aux = s;
	s->up = conn_new(s->srv->base, s->srv->dns, &o, &err);
	if (s->up == NULL || conn_connect(s->up, &err) < 0) {
		up_fail(s, 1, err);
		return;
	}
	s->sp = imap_parser_new(IMAP_PARSE_SERVER, NULL);
	s->up_step = UP_GREETING;
	memset(&s->up_caps, 0, sizeof(s->up_caps));
	free(s->up_caps_raw);
	s->up_caps_raw = NULL;
}

static void route_cb(int status, enum rk_route_state state, uint64_t epoch, const char *upstream,
                     void *aux)
{
	struct px_session *s = aux;
	struct px_server *srv = s->srv;

	s->route = NULL;
	s->up_host = srv->up_host;
	s->up_port = srv->up_port;
	if (status < 0) {
		px_session_log(s, LOG_LVL_NOTICE,
		               "route lookup failed (Redis unavailable): "
		               "using the source server");
	} else if (status == 0) {
		px_session_log(s, LOG_LVL_DEBUG, "route %s epoch %llu upstream %s",
		               rk_route_state_names[state], (unsigned long long)epoch,
		               upstream != NULL ? upstream : "-");
		if (state == RK_ROUTE_DST && srv->dst_host != NULL) {
			s->up_host = srv->dst_host;
			s->up_port = srv->dst_port;
		} else if (state == RK_ROUTE_DST) {
			px_session_log(s, LOG_LVL_WARN,
			               "route DST but no --upstream-dst configured: "
			               "using the source server");
		} else if (state == RK_ROUTE_FREEZE) {
			/* Holding FREEZE sessions is issue 7; for now they go
			 * to the source. */
			px_session_log(s, LOG_LVL_NOTICE, "route FREEZE: treated as SRC for now");
		}
	}
	up_connect(s);
}

void px_upstream_start(struct px_session *s)
{
	struct timeval tv = {(PX_CONNECT_TIMEOUT + PX_LOGIN_TIMEOUT) / 1000, 0};

	s->up_step = UP_ROUTE;
	if (s->timer != NULL)
		event_free(s->timer);
	s->timer = evtimer_new(s->srv->base, login_timer_cb, s);
	if (s->timer == NULL)
		abort();
	evtimer_add(s->timer, &tv);
	if (s->up_pending == NULL && (s->up_pending = evbuffer_new()) == NULL)
		abort();
	s->route = px_marks_route(s->srv->marks, s->user, route_cb, s);
}

/* ---- login commands ---- */

/* Appends an astring; a synchronising literal ends the current part: its
 * payload goes to up_pending, sent at the "+". */
static void put_astring(struct px_session *s, struct evbuffer *cur, const char *str, int lplus)
{
	size_t len = strlen(str);
	unsigned flags = ISTR_F_ASTRING | (lplus ? ISTR_F_LITERALPLUS : 0);

	if (istr_classify(str, len, flags) == ISTR_LITERAL) {
		evbuffer_add_printf(cur, "{%zu}\r\n", len);
		evbuffer_add(s->up_pending, str, len);
		return;
	}
	istr_append(cur, str, len, flags);
}

static void send_login(struct px_session *s)
{
	const struct imap_caps *c = &s->up_caps;
	int ir = imap_caps_has(c, IMAP_CAP_SASL_IR);
	const char *mech = NULL;
	char *b64 = NULL;

	s->up_step = UP_LOGIN;
	evbuffer_drain(s->up_pending, evbuffer_get_length(s->up_pending));
	if (s->auth == PX_AUTH_XOAUTH2 || s->auth == PX_AUTH_OAUTHBEARER) {
		mech = s->auth == PX_AUTH_XOAUTH2 ? "XOAUTH2" : "OAUTHBEARER";
		if (!(c->auth & (1u << (s->auth == PX_AUTH_XOAUTH2 ? IMAP_AUTH_XOAUTH2
		                                                   : IMAP_AUTH_OAUTHBEARER)))) {
			up_fail(s, 0, "NO [AUTHENTICATIONFAILED] Mechanism not available.");
			return;
		}
		b64 = strdup(s->secret);
	} else if ((c->auth & (1u << IMAP_AUTH_PLAIN)) || s->auth == PX_AUTH_PLAIN_AUTHZ) {
		const char *authz = s->auth == PX_AUTH_PLAIN_AUTHZ ? s->user : "";
		const char *authc = s->auth == PX_AUTH_PLAIN_AUTHZ ? s->authcid : s->user;
		size_t la = strlen(authz), lc = strlen(authc), lp = strlen(s->secret);
		char *raw = malloc(la + lc + lp + 2);

		if (!(c->auth & (1u << IMAP_AUTH_PLAIN))) {
			free(raw);
			up_fail(s, 0, "NO [AUTHENTICATIONFAILED] Mechanism not available.");
			return;
		}
		if (raw == NULL)
			abort();
		memcpy(raw, authz, la);
		raw[la] = '\0';
		memcpy(raw + la + 1, authc, lc);
		raw[la + 1 + lc] = '\0';
		memcpy(raw + la + lc + 2, s->secret, lp);
		b64 = b64_encode(raw, la + lc + lp + 2);
		OPENSSL_cleanse(raw, la + lc + lp + 2);
		free(raw);
		mech = "PLAIN";
	}
	if (mech != NULL) {
		if (b64 == NULL)
			abort();
		if (ir) {
			up_send(s, "P3 AUTHENTICATE %s %s\r\n", mech, b64[0] != '\0' ? b64 : "=");
		} else {
			up_send(s, "P3 AUTHENTICATE %s\r\n", mech);
			evbuffer_add_printf(s->up_pending, "%s\r\n", b64);
		}
		OPENSSL_cleanse(b64, strlen(b64));
		free(b64);
		return;
	}
	if (imap_caps_has(c, IMAP_CAP_LOGINDISABLED)) {
		up_fail(s, 1, "upstream offers neither AUTH=PLAIN nor the LOGIN command");
		return;
	}
	{
		struct evbuffer *out = conn_output(s->up);
		int lplus = imap_caps_has(c, IMAP_CAP_LITERALPLUS);

		evbuffer_add(out, "P3 LOGIN ", 9);
		put_astring(s, out, s->user, lplus);
		if (evbuffer_get_length(s->up_pending) > 0) {
			/* The user went as a synchronising literal: the rest
			 * waits for the "+". */
			struct evbuffer *rest = s->up_pending;

			evbuffer_add(rest, " ", 1);
			put_astring(s, rest, s->secret, lplus);
		} else {
			evbuffer_add(out, " ", 1);
			put_astring(s, out, s->secret, lplus);
		}
		evbuffer_add(evbuffer_get_length(s->up_pending) > 0 ? s->up_pending : out, "\r\n",
		             2);
	}
}

/* Sends the next part of the login after a "+": up to and including the
 * next "{N}\r\n" header or the end. */
static void send_pending_part(struct px_session *s)
{
	struct evbuffer_ptr p;
	size_t n = evbuffer_get_length(s->up_pending);

	p = evbuffer_search(s->up_pending, "}\r\n", 3, NULL);
	if (p.pos >= 0 && s->auth == PX_AUTH_LOGIN)
		n = (size_t)p.pos + 3;
	evbuffer_remove_buffer(s->up_pending, conn_output(s->up), n);
}

/* ---- the client's answer ---- */

static void login_ok(struct px_session *s)
{
	char caps[4096];

	if (s->timer != NULL) {
		event_free(s->timer);
		s->timer = NULL;
	}
	s->up_step = UP_DONE;
	if (s->up_caps_raw != NULL) {
		px_caps_filter(s->up_caps_raw, strlen(s->up_caps_raw), caps, sizeof(caps));
		px_session_reply(s, "%s OK [CAPABILITY %s] Logged in\r\n", s->tag, caps);
	} else {
		px_session_reply(s, "%s OK Logged in\r\n", s->tag);
	}
	px_session_log(s, LOG_LVL_INFO, "logged in at %s:%u%s", s->up_host, (unsigned)s->up_port,
	               conn_is_tls(s->up) ? " (TLS)" : "");
	px_session_login_done(s, 1);
}

/* The raw line of the message just parsed (in shold), without CRLF. */
static char *hold_line(struct px_session *s)
{
	size_t n = evbuffer_get_length(s->shold);
	char *line = malloc(n + 1);

	if (line == NULL)
		abort();
	evbuffer_copyout(s->shold, line, n);
	while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
		n--;
	line[n] = '\0';
	return line;
}

static void save_caps_untagged(struct px_session *s)
{
	char *line = hold_line(s);
	const char *p = line;

	/* "* CAPABILITY " */
	p = strchr(p, ' ');
	if (p != NULL)
		p = strchr(p + 1, ' ');
	free(s->up_caps_raw);
	s->up_caps_raw = strdup(p != NULL ? p + 1 : "");
	free(line);
}

static void save_caps_code(struct px_session *s, const struct imap_msg *m)
{
	const char *sp = memchr(m->code_raw, ' ', m->code_raw_len);

	free(s->up_caps_raw);
	s->up_caps_raw = sp != NULL
	                         ? strndup(sp + 1, m->code_raw_len - (size_t)(sp + 1 - m->code_raw))
	                         : strdup("");
	if (s->up_caps_raw == NULL)
		abort();
}

static void on_tagged(struct px_session *s, const struct imap_msg *m)
{
	const char *err;

	switch (s->up_step) {
	case UP_STARTTLS:
		if (m->status != IMAP_STATUS_OK) {
			up_fail(s, 1, "upstream refused STARTTLS");
			return;
		}
		if (conn_starttls(s->up, &err) < 0) {
			up_fail(s, 1, err);
			return;
		}
		s->up_step = UP_TLS;
		return;
	case UP_CAPS:
		if (m->status != IMAP_STATUS_OK) {
			up_fail(s, 1, "upstream refused CAPABILITY");
			return;
		}
		send_login(s);
		return;
	case UP_LOGIN:
		if (m->status == IMAP_STATUS_OK) {
			if (m->code != NULL && strcmp(m->code, "CAPABILITY") == 0) {
				save_caps_code(s, m);
				login_ok(s);
			} else {
				s->up_step = UP_POSTCAPS;
				up_send(s, "P4 CAPABILITY\r\n");
			}
			return;
		}
		{
			char *line = hold_line(s);
			const char *rest = strchr(line, ' ');

			up_fail(s, 0, rest != NULL ? rest + 1 : "NO Login failed.");
			free(line);
		}
		return;
	case UP_POSTCAPS:
		login_ok(s);
		return;
	default:
		up_fail(s, 1, "unexpected tagged response");
		return;
	}
}

static void on_greeting(struct px_session *s, const struct imap_msg *m)
{
	if (m->status != IMAP_STATUS_OK) {
		char *line = hold_line(s), safe[200];

		log_sanitize(safe, sizeof(safe), line, strlen(line), 150);
		free(line);
		up_fail(s, 1, safe);
		return;
	}
	imap_caps_from_msg(&s->up_caps, m);
	if (s->srv->cfg.upstream_security == PX_UP_STARTTLS) {
		s->up_step = UP_STARTTLS;
		up_send(s, "P1 STARTTLS\r\n");
	} else if (s->up_caps.valid) {
		send_login(s);
	} else {
		s->up_step = UP_CAPS;
		up_send(s, "P2 CAPABILITY\r\n");
	}
}

/* Returns 1 to stop reading (STARTTLS, or the login is over). */
static int on_message(struct px_session *s, const struct imap_msg *m)
{
	switch (m->kind) {
	case IMAP_MSG_UNTAGGED:
		if (s->up_step == UP_GREETING) {
			on_greeting(s, m);
			return s->up_step != UP_STARTTLS && s->up_step != UP_CAPS &&
			       s->up_step != UP_LOGIN;
		}
		if (m->status == IMAP_STATUS_BYE && s->up_step != UP_LOGIN) {
			up_fail(s, 1, "upstream said BYE");
			return 1;
		}
		if (m->name != NULL && strcmp(m->name, "CAPABILITY") == 0) {
			if (s->up_step == UP_POSTCAPS)
				save_caps_untagged(s);
			else
				imap_caps_from_msg(&s->up_caps, m);
		}
		return 0;
	case IMAP_MSG_CONTINUATION:
		if (s->up_step != UP_LOGIN)
			return 0;
		if (evbuffer_get_length(s->up_pending) > 0) {
			send_pending_part(s);
		} else if (s->auth == PX_AUTH_XOAUTH2 || s->auth == PX_AUTH_OAUTHBEARER) {
			/* An error challenge: the client answers it. */
			px_session_reply(s, "+ %.*s\r\n", (int)m->text_len, m->text);
			s->pre_wait = PX_PRE_UP_SASL;
			imap_parser_set_raw(s->cp, 1);
			conn_resume_read(s->client);
		} else {
			up_send(s, "*\r\n");
		}
		return 0;
	case IMAP_MSG_TAGGED:
		on_tagged(s, m);
		return s->up_step == UP_TLS || s->up_step == UP_DONE || s->up == NULL;
	default:
		return 0;
	}
}

void px_upstream_client_line(struct px_session *s, const char *line, size_t len)
{
	conn_pause_read(s->client);
	if (s->up == NULL)
		return;
	evbuffer_add(conn_output(s->up), line, len);
	evbuffer_add(conn_output(s->up), "\r\n", 2);
}

/* ---- conn callbacks (login phase; relay.c takes over after) ---- */

static void up_read_login(struct px_session *s, struct evbuffer *in)
{
	while (s->up != NULL && s->state == PX_ST_LOGIN) {
		struct evbuffer_iovec v;
		struct imap_event ev;
		size_t used;
		int stop = 0;

		if (evbuffer_peek(in, -1, NULL, &v, 1) < 1 || v.iov_len == 0)
			return;
		imap_parser_next(s->sp, v.iov_base, v.iov_len, &used, &ev);
		evbuffer_remove_buffer(in, s->shold, used);
		switch (ev.type) {
		case IMAP_EV_MESSAGE:
			stop = on_message(s, ev.msg);
			evbuffer_drain(s->shold, evbuffer_get_length(s->shold));
			break;
		case IMAP_EV_ERROR:
			up_fail(s, 1, ev.error);
			return;
		default:
			break;
		}
		if (stop)
			return;
	}
}

static void up_on_read(struct conn *c, struct evbuffer *in, void *aux)
{
	struct px_session *s = aux;

	(void)c;
	if (s->state == PX_ST_LOGIN)
		up_read_login(s, in);
	else if (s->state == PX_ST_RELAY)
		px_relay_up_read(s, in);
	else
		evbuffer_drain(in, evbuffer_get_length(in));
}

static void up_on_event(struct conn *c, enum conn_event ev, const char *error, void *aux)
{
	struct px_session *s = aux;

	(void)c;
	if (ev == CONN_EV_CONNECTED)
		return;
	if (ev == CONN_EV_TLS_UPGRADED) {
		memset(&s->up_caps, 0, sizeof(s->up_caps));
		s->up_step = UP_CAPS;
		up_send(s, "P2 CAPABILITY\r\n");
		return;
	}
	if (s->state == PX_ST_LOGIN) {
		up_fail(s, 1, error != NULL ? error : "connection lost");
		return;
	}
	if (s->state == PX_ST_RELAY)
		px_relay_up_gone(s, error);
}

static void up_on_drained(struct conn *c, void *aux)
{
	struct px_session *s = aux;

	(void)c;
	if (s->state == PX_ST_RELAY)
		px_relay_drained(s, 0);
}
