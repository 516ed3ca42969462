/*
 * session.c - a client connection of imapferry-proxy: accept, greeting,
 * the pre-authentication phase the proxy answers itself (CAPABILITY, ID,
 * NOOP, LOGOUT, STARTTLS, LOGIN, AUTHENTICATE PLAIN/LOGIN/XOAUTH2/
 * OAUTHBEARER), and the session's end.
 *
 * RFC 3501 / 9051 section 6.1-6.2; SASL-IR RFC 4959; PLAIN RFC 4616;
 * XOAUTH2 (Google's), OAUTHBEARER RFC 7628.
 */
#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <imapferry/conn.h>
#include <imapferry/tls.h>

#include "marks.h"
#include "observe.h"
#include "routes.h"
#include "session.h"

const char *const px_state_names[PX_ST_COUNT] = {"preauth", "login", "relay", "closing"};
static_assert(sizeof(px_state_names) / sizeof(px_state_names[0]) == PX_ST_COUNT, "state names");

static void session_on_read(struct conn *c, struct evbuffer *in, void *aux);
static void session_on_event(struct conn *c, enum conn_event ev, const char *error, void *aux);
static void session_on_drained(struct conn *c, void *aux);
static void pre_read(struct px_session *s, struct evbuffer *in);

/* ---- small helpers ---- */

void px_session_log(struct px_session *s, enum log_level lvl, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vmsg(lvl, s->prefix, fmt, ap);
	va_end(ap);
}

static void session_update_prefix(struct px_session *s)
{
	char user[96];

	if (s->user != NULL) {
		log_sanitize(user, sizeof(user), s->user, strlen(s->user), 64);
		snprintf(s->prefix, sizeof(s->prefix), "c=%llu u=%s", (unsigned long long)s->id,
		         user);
	} else {
		snprintf(s->prefix, sizeof(s->prefix), "c=%llu", (unsigned long long)s->id);
	}
}

void px_session_set_user(struct px_session *s, const char *user)
{
	free(s->user);
	s->user = user != NULL ? strdup(user) : NULL;
	if (user != NULL && s->user == NULL)
		abort();
	session_update_prefix(s);
}

static void wipe_free(char **p)
{
	if (*p != NULL) {
		OPENSSL_cleanse(*p, strlen(*p));
		free(*p);
		*p = NULL;
	}
}

void px_session_wipe_secret(struct px_session *s)
{
	wipe_free(&s->secret);
	free(s->authcid);
	s->authcid = NULL;
}

void px_session_reply(struct px_session *s, const char *fmt, ...)
{
	struct evbuffer *out;
	va_list ap;

	if (s->client == NULL || (out = conn_output(s->client)) == NULL)
		return;
	va_start(ap, fmt);
	evbuffer_add_vprintf(out, fmt, ap);
	va_end(ap);
}

static char *xstrndup(const char *s, size_t n)
{
	char *d = strndup(s, n);

	if (d == NULL)
		abort();
	return d;
}

/* ---- lifecycle ---- */

static void session_free(struct px_session *s)
{
	struct px_server *srv = s->srv;

	if (s->prev != NULL)
		s->prev->next = s->next;
	else
		srv->sessions = s->next;
	if (s->next != NULL)
		s->next->prev = s->prev;
	px_marks_route_cancel(&s->route);
	if (s->obs != NULL) {
		px_observe_disconnect(s->obs);
		px_observe_free(&s->obs);
	}
	conn_free(&s->up);
	conn_free(&s->client);
	imap_parser_free(&s->cp);
	imap_parser_free(&s->sp);
	evbuffer_free(s->chold);
	evbuffer_free(s->shold);
	if (s->up_pending != NULL)
		evbuffer_free(s->up_pending);
	if (s->timer != NULL)
		event_free(s->timer);
	px_session_wipe_secret(s);
	free(s->tag);
	free(s->user);
	free(s->up_caps_raw);
	free(s->sync_tag);
	free(s->idle_tag);
	srv->m.conns_current--;
	free(s);
}

static uint64_t now_ms(struct px_session *s)
{
	struct timeval tv;

	event_base_gettimeofday_cached(s->srv->base, &tv);
	return (uint64_t)tv.tv_sec * 1000u + (uint64_t)tv.tv_usec / 1000u;
}

/* Linger timer of a closing session: free once the client's output is out
 * (or the grace is over). Runs from the loop, never inside a conn callback. */
static void close_timer_cb(evutil_socket_t fd, short what, void *aux)
{
	struct px_session *s = aux;
	struct timeval tv = {0, 20000};

	size_t pending = s->client != NULL ? conn_output_pending(s->client) : 0;
	uint64_t now = now_ms(s);

	(void)fd;
	(void)what;
	if (pending != s->close_pending) {
		s->close_pending = pending;
		s->close_progress = now;
	}
	/* A peer that is gone takes no more bytes: stop after a second
	 * without progress rather than the whole grace. */
	if (pending > 0 && now < s->close_deadline && now < s->close_progress + 1000u) {
		evtimer_add(s->timer, &tv);
		return;
	}
	session_free(s);
}

void px_session_close(struct px_session *s, const char *why)
{
	struct timeval tv = {0, 0};

	if (s->state == PX_ST_CLOSING)
		return;
	if (why != NULL)
		px_session_log(s, LOG_LVL_INFO, "closing: %s", why);
	if (s->state == PX_ST_RELAY && s->srv->m.sessions_authed > 0)
		s->srv->m.sessions_authed--;
	s->state = PX_ST_CLOSING;
	px_marks_route_cancel(&s->route);
	if (s->obs != NULL) {
		/* A mutating command in flight when the connection drops
		 * marks too (observe.h). */
		px_observe_disconnect(s->obs);
		px_observe_free(&s->obs);
	}
	conn_free(&s->up);
	if (s->client != NULL)
		conn_pause_read(s->client);
	s->close_deadline = now_ms(s) + (s->srv->shutting_down > 1 ? 500u : PX_CLOSE_GRACE_MS);
	s->close_progress = now_ms(s);
	s->close_pending = 0;
	if (s->timer != NULL)
		event_free(s->timer);
	s->timer = evtimer_new(s->srv->base, close_timer_cb, s);
	if (s->timer == NULL)
		abort();
	evtimer_add(s->timer, &tv);
}

void px_session_accept(struct px_server *srv, int fd, int tls)
{
	struct px_session *s = calloc(1, sizeof(*s));
	struct conn_opts o;
	const char *err;

	if (s == NULL)
		abort();
	s->srv = srv;
	s->id = ++srv->next_id;
	s->client_tls = tls;
	session_update_prefix(s);
	s->chold = evbuffer_new();
	s->shold = evbuffer_new();
	if (s->chold == NULL || s->shold == NULL)
		abort();
	conn_opts_init(&o);
	o.connect_timeout_ms = PX_HANDSHAKE_TIMEOUT;
	/* Before login a client gets at most 3 minutes of silence. */
	o.read_timeout_ms = (srv->cfg.idle_timeout_s < 180 ? srv->cfg.idle_timeout_s : 180) * 1000u;
	o.write_timeout_ms = srv->cfg.idle_timeout_s * 1000u;
	o.keepalive = 1;
	o.read_high = PX_BUF_HIGH;
	o.write_low = PX_BUF_LOW;
	o.on_read = session_on_read;
	o.on_event = session_on_event;
	o.on_drained = session_on_drained;
	o.aux = s;
	s->next = srv->sessions;
	if (srv->sessions != NULL)
		srv->sessions->prev = s;
	srv->sessions = s;
	srv->m.conns_total++;
	srv->m.conns_current++;
	s->client = conn_new_accepted(srv->base, fd, tls ? srv->tls_srv : NULL, &o, &err);
	if (s->client == NULL) {
		px_session_log(s, LOG_LVL_WARN, "cannot set up the connection: %s", err);
		px_session_close(s, NULL);
		return;
	}
	s->cp = imap_parser_new(IMAP_PARSE_CLIENT, NULL);
	{
		struct imap_limits l;

		imap_limits_default(&l, IMAP_PARSE_CLIENT);
		l.max_line = PX_PREAUTH_MAX_LINE;
		l.max_inline_literal = PX_PREAUTH_MAX_LITERAL;
		l.max_msg = 4 * PX_PREAUTH_MAX_LITERAL;
		l.max_literal = 0; /* checked at LITERAL_START, so "+" is never awaited */
		imap_parser_free(&s->cp);
		s->cp = imap_parser_new(IMAP_PARSE_CLIENT, &l);
	}
	px_session_log(s, LOG_LVL_INFO, "connect from %s%s", conn_peer_name(s->client),
	               tls ? " (TLS)" : "");
}

/* ---- pre-auth capabilities ---- */

static int plaintext_ok(const struct px_session *s)
{
	return s->client_tls || s->srv->cfg.allow_plaintext_login;
}

static void pre_caps(struct px_session *s, char *buf, size_t size)
{
	snprintf(buf, size, "IMAP4rev1 SASL-IR LITERAL+ ID%s%s",
	         s->srv->tls_srv != NULL && !s->client_tls ? " STARTTLS" : "",
	         plaintext_ok(s) ? " AUTH=PLAIN AUTH=LOGIN AUTH=XOAUTH2 AUTH=OAUTHBEARER"
	                         : " LOGINDISABLED");
}

static void send_greeting(struct px_session *s)
{
	char caps[256];

	pre_caps(s, caps, sizeof(caps));
	px_session_reply(s, "* OK [CAPABILITY %s] imapferry ready.\r\n", caps);
}

/* ---- conn callbacks ---- */

static void session_on_read(struct conn *c, struct evbuffer *in, void *aux)
{
	struct px_session *s = aux;

	(void)c;
	switch (s->state) {
	case PX_ST_PREAUTH:
		pre_read(s, in);
		break;
	case PX_ST_LOGIN:
		if (s->pre_wait == PX_PRE_UP_SASL)
			pre_read(s, in);
		break;
	case PX_ST_RELAY:
		px_relay_client_read(s, in);
		break;
	case PX_ST_CLOSING:
	case PX_ST_COUNT:
		evbuffer_drain(in, evbuffer_get_length(in));
		break;
	}
}

static void session_on_event(struct conn *c, enum conn_event ev, const char *error, void *aux)
{
	struct px_session *s = aux;

	(void)c;
	switch (ev) {
	case CONN_EV_CONNECTED:
		if (s->client_tls)
			px_session_log(s, LOG_LVL_DEBUG, "TLS %s %s", conn_tls_version(c),
			               conn_tls_cipher(c));
		send_greeting(s);
		return;
	case CONN_EV_TLS_UPGRADED:
		s->client_tls = 1;
		s->srv->m.starttls_injection_bytes += conn_starttls_discarded(c);
		if (conn_starttls_discarded(c) > 0)
			px_session_log(s, LOG_LVL_WARN,
			               "discarded %zu bytes sent behind STARTTLS (injection?)",
			               conn_starttls_discarded(c));
		return;
	case CONN_EV_EOF:
		if (s->state == PX_ST_RELAY) {
			px_relay_client_eof(s);
			return;
		}
		px_session_close(s, "client closed the connection");
		return;
	case CONN_EV_TIMEOUT:
		px_session_reply(s, "* BYE Disconnected for inactivity.\r\n");
		px_session_close(s, error);
		return;
	case CONN_EV_ERROR:
	case CONN_EV_COUNT:
		px_session_close(s, error);
		return;
	}
}

static void session_on_drained(struct conn *c, void *aux)
{
	struct px_session *s = aux;

	(void)c;
	if (s->state == PX_ST_RELAY)
		px_relay_drained(s, 1);
}

/* ---- base64 (RFC 4648) via OpenSSL ---- */

/* Decodes len bytes of base64; returns a malloc'd buffer (NUL-terminated
 * for convenience) and its length, or NULL when it is not base64. */
static unsigned char *b64_decode(const char *in, size_t len, size_t *out_len_r)
{
	unsigned char *out;
	size_t pad = 0;
	int n;

	if (len % 4 != 0 || len > (1u << 16))
		return NULL;
	out = malloc(len / 4 * 3 + 1);
	if (out == NULL)
		abort();
	if (len == 0) {
		*out = '\0';
		*out_len_r = 0;
		return out;
	}
	n = EVP_DecodeBlock(out, (const unsigned char *)in, (int)len);
	if (n < 0) {
		free(out);
		return NULL;
	}
	if (in[len - 1] == '=')
		pad++;
	if (in[len - 2] == '=')
		pad++;
	*out_len_r = (size_t)n - pad;
	out[*out_len_r] = '\0';
	return out;
}

/* ---- pre-auth commands ---- */

static int pre_check_plaintext(struct px_session *s, const char *tag)
{
	if (plaintext_ok(s))
		return 0;
	px_session_reply(s,
	                 "%s NO [PRIVACYREQUIRED] Plaintext authentication disallowed on "
	                 "non-secure (SSL/TLS) connections.\r\n",
	                 tag);
	return -1;
}

static void pre_set_tag(struct px_session *s, const char *tag)
{
	free(s->tag);
	s->tag = strdup(tag);
	if (s->tag == NULL)
		abort();
}

/* Credentials are complete: route, connect, log in upstream. */
static void pre_login(struct px_session *s)
{
	s->pre_wait = PX_PRE_CMD;
	s->state = PX_ST_LOGIN;
	conn_pause_read(s->client);
	px_routes_login(s); /* holds the login during a freeze, then px_upstream_start() */
}

/* "authzid\0authcid\0password" (RFC 4616). */
static void pre_sasl_plain(struct px_session *s, const char *b64, size_t len)
{
	size_t n;
	unsigned char *raw = b64_decode(b64, len, &n);
	const char *authz, *authc, *pass, *end;

	if (raw == NULL) {
		px_session_reply(s, "%s BAD Invalid base64 data.\r\n", s->tag);
		return;
	}
	end = (const char *)raw + n;
	authz = (const char *)raw;
	authc = memchr(authz, '\0', n);
	pass = authc != NULL ? memchr(authc + 1, '\0', (size_t)(end - authc - 1)) : NULL;
	if (authc == NULL || pass == NULL || memchr(pass + 1, '\0', (size_t)(end - pass - 1))) {
		OPENSSL_cleanse(raw, n);
		free(raw);
		px_session_reply(s, "%s NO [AUTHENTICATIONFAILED] Invalid PLAIN response.\r\n",
		                 s->tag);
		return;
	}
	authc++;
	pass++;
	px_session_wipe_secret(s);
	s->secret = xstrndup(pass, (size_t)(end - pass));
	if (*authz != '\0' && strcmp(authz, authc) != 0) {
		s->auth = PX_AUTH_PLAIN_AUTHZ;
		s->authcid = xstrndup(authc, strlen(authc));
		px_session_set_user(s, authz);
	} else {
		s->auth = PX_AUTH_LOGIN;
		px_session_set_user(s, authc);
	}
	OPENSSL_cleanse(raw, n);
	free(raw);
	pre_login(s);
}

/* XOAUTH2: "user=" user ^A "auth=Bearer " token ^A ^A.
 * OAUTHBEARER (RFC 7628 3.1): gs2-header "n,a=user," ^A ... ^A ^A. */
static void pre_sasl_oauth(struct px_session *s, const char *b64, size_t len)
{
	size_t n, ulen = 0;
	unsigned char *raw = b64_decode(b64, len, &n);
	const char *r = (const char *)raw, *u = NULL;

	if (raw == NULL) {
		px_session_reply(s, "%s BAD Invalid base64 data.\r\n", s->tag);
		return;
	}
	if (s->auth == PX_AUTH_XOAUTH2 && n > 5 && strncmp(r, "user=", 5) == 0) {
		u = r + 5;
		ulen = strcspn(u, "\001");
	} else if (s->auth == PX_AUTH_OAUTHBEARER) {
		const char *a = strstr(r, ",a=");

		if (a != NULL && a < r + strcspn(r, "\001")) {
			u = a + 3;
			ulen = strcspn(u, ",\001");
		}
	}
	if (u == NULL || ulen == 0 || memchr(r, '\0', n) != NULL) {
		OPENSSL_cleanse(raw, n);
		free(raw);
		px_session_reply(s, "%s NO [AUTHENTICATIONFAILED] No user name in the token.\r\n",
		                 s->tag);
		return;
	}
	{
		char *user = xstrndup(u, ulen);

		px_session_set_user(s, user);
		free(user);
	}
	OPENSSL_cleanse(raw, n);
	free(raw);
	px_session_wipe_secret(s);
	s->secret = xstrndup(b64, len);
	pre_login(s);
}

static void pre_authenticate(struct px_session *s, const struct imap_msg *m)
{
	const struct imap_arg *mech = m->args, *ir = mech != NULL ? mech->next : NULL;
	const char *irs = NULL;
	size_t irlen = 0;

	if (mech == NULL || mech->type != IMAP_ARG_ATOM) {
		px_session_reply(s, "%s BAD Missing authentication mechanism.\r\n", m->tag);
		return;
	}
	if (pre_check_plaintext(s, m->tag) < 0)
		return;
	if (ir != NULL && (ir->type != IMAP_ARG_ATOM || ir->next != NULL)) {
		px_session_reply(s, "%s BAD Invalid initial response.\r\n", m->tag);
		return;
	}
	if (ir != NULL) {
		irs = ir->str;
		irlen = ir->len;
		if (irlen == 1 && irs[0] == '=') /* RFC 4959: "=" is an empty response */
			irlen = 0;
	}
	pre_set_tag(s, m->tag);
	if (strcasecmp(mech->str, "PLAIN") == 0) {
		s->pre_wait = PX_PRE_SASL_PLAIN;
	} else if (strcasecmp(mech->str, "LOGIN") == 0) {
		s->pre_wait = PX_PRE_SASL_USER;
		if (ir == NULL) {
			imap_parser_set_raw(s->cp, 1);
			px_session_reply(s, "+ VXNlcm5hbWU6\r\n"); /* "Username:" */
			return;
		}
	} else if (strcasecmp(mech->str, "XOAUTH2") == 0) {
		s->auth = PX_AUTH_XOAUTH2;
		s->pre_wait = PX_PRE_SASL_OAUTH;
	} else if (strcasecmp(mech->str, "OAUTHBEARER") == 0) {
		s->auth = PX_AUTH_OAUTHBEARER;
		s->pre_wait = PX_PRE_SASL_OAUTH;
	} else {
		px_session_reply(s, "%s NO Unsupported authentication mechanism.\r\n", m->tag);
		return;
	}
	if (ir == NULL) {
		imap_parser_set_raw(s->cp, 1);
		px_session_reply(s, "+ \r\n");
		return;
	}
	/* SASL-IR: the initial response arrived with the command. */
	if (s->pre_wait == PX_PRE_SASL_PLAIN) {
		s->pre_wait = PX_PRE_CMD;
		pre_sasl_plain(s, irs, irlen);
	} else if (s->pre_wait == PX_PRE_SASL_OAUTH) {
		s->pre_wait = PX_PRE_CMD;
		pre_sasl_oauth(s, irs, irlen);
	} else {
		/* AUTH=LOGIN with an initial response: the user name. */
		size_t n;
		unsigned char *u = b64_decode(irs, irlen, &n);

		if (u == NULL || n == 0 || memchr(u, '\0', n) != NULL) {
			free(u);
			s->pre_wait = PX_PRE_CMD;
			px_session_reply(s, "%s BAD Invalid base64 data.\r\n", s->tag);
			return;
		}
		px_session_set_user(s, (char *)u);
		free(u);
		s->pre_wait = PX_PRE_SASL_PASS;
		imap_parser_set_raw(s->cp, 1);
		px_session_reply(s, "+ UGFzc3dvcmQ6\r\n"); /* "Password:" */
	}
}

/* A line answering one of our "+" during AUTHENTICATE. */
static void pre_sasl_line(struct px_session *s, const char *line, size_t len)
{
	enum px_pre_wait w = s->pre_wait;
	unsigned char *d;
	size_t n;

	imap_parser_set_raw(s->cp, 0);
	s->pre_wait = PX_PRE_CMD;
	if (w == PX_PRE_UP_SASL) {
		/* Passed through, "*" included: the upstream answers. */
		px_upstream_client_line(s, line, len);
		return;
	}
	if (len == 1 && line[0] == '*') {
		px_session_reply(s, "%s BAD Authentication aborted by client.\r\n", s->tag);
		return;
	}
	switch (w) {
	case PX_PRE_SASL_PLAIN:
		pre_sasl_plain(s, line, len);
		return;
	case PX_PRE_SASL_OAUTH:
		pre_sasl_oauth(s, line, len);
		return;
	case PX_PRE_SASL_USER:
	case PX_PRE_SASL_PASS:
		d = b64_decode(line, len, &n);
		if (d == NULL || memchr(d, '\0', n) != NULL || (w == PX_PRE_SASL_USER && n == 0)) {
			if (d != NULL)
				OPENSSL_cleanse(d, n);
			free(d);
			px_session_reply(s, "%s BAD Invalid base64 data.\r\n", s->tag);
			return;
		}
		if (w == PX_PRE_SASL_USER) {
			px_session_set_user(s, (char *)d);
			free(d);
			s->pre_wait = PX_PRE_SASL_PASS;
			imap_parser_set_raw(s->cp, 1);
			px_session_reply(s, "+ UGFzc3dvcmQ6\r\n");
			return;
		}
		px_session_wipe_secret(s);
		s->secret = (char *)d;
		s->auth = PX_AUTH_LOGIN;
		pre_login(s);
		return;
	case PX_PRE_UP_SASL:
	case PX_PRE_CMD:
		break;
	}
}

static void pre_login_cmd(struct px_session *s, const struct imap_msg *m)
{
	const char *user, *pass;
	size_t ulen, plen;

	if (pre_check_plaintext(s, m->tag) < 0)
		return;
	if (m->argc != 2 || imap_arg_get_astring(m->args, &user, &ulen) < 0 ||
	    imap_arg_get_astring(m->args->next, &pass, &plen) < 0 || ulen == 0 ||
	    strlen(user) != ulen || strlen(pass) != plen) {
		px_session_reply(s, "%s BAD Invalid arguments.\r\n", m->tag);
		return;
	}
	pre_set_tag(s, m->tag);
	px_session_set_user(s, user);
	px_session_wipe_secret(s);
	s->secret = xstrndup(pass, plen);
	s->auth = PX_AUTH_LOGIN;
	pre_login(s);
}

/* Returns 1 when reading must stop (STARTTLS started). */
static int pre_command(struct px_session *s, const struct imap_msg *m)
{
	const char *name = m->name != NULL ? m->name : "";
	char caps[256];
	const char *err;

	s->srv->m.preauth_commands++;
	if (m->kind == IMAP_MSG_RAW_LINE) {
		pre_sasl_line(s, m->text, m->text_len);
		return 0;
	}
	if (strcmp(name, "CAPABILITY") == 0) {
		pre_caps(s, caps, sizeof(caps));
		px_session_reply(s, "* CAPABILITY %s\r\n%s OK Pre-login capabilities listed.\r\n",
		                 caps, m->tag);
	} else if (strcmp(name, "NOOP") == 0) {
		px_session_reply(s, "%s OK NOOP completed.\r\n", m->tag);
	} else if (strcmp(name, "ID") == 0) {
		px_session_reply(s,
		                 "* ID (\"name\" \"imapferry\" \"version\" \"%s\")\r\n"
		                 "%s OK ID completed.\r\n",
		                 IMAPFERRY_VERSION, m->tag);
	} else if (strcmp(name, "LOGOUT") == 0) {
		px_session_reply(s, "* BYE Logging out\r\n%s OK Logout completed.\r\n", m->tag);
		px_session_close(s, "logout before login");
	} else if (strcmp(name, "STARTTLS") == 0) {
		if (s->srv->tls_srv == NULL || s->client_tls) {
			px_session_reply(s, "%s BAD %s\r\n", m->tag,
			                 s->client_tls ? "TLS is already active."
			                               : "STARTTLS is not available.");
			return 0;
		}
		px_session_reply(s, "%s OK Begin TLS negotiation now.\r\n", m->tag);
		/* Everything the client sent behind this line is discarded
		 * by conn (RFC 3207 6, CVE-2011-0411). */
		if (conn_starttls_server(s->client, s->srv->tls_srv, &err) < 0)
			px_session_close(s, err);
		return 1;
	} else if (strcmp(name, "LOGIN") == 0) {
		pre_login_cmd(s, m);
	} else if (strcmp(name, "AUTHENTICATE") == 0) {
		pre_authenticate(s, m);
	} else {
		s->bad_cmds++;
		px_session_reply(s, "%s BAD Command not permitted before login.\r\n", m->tag);
	}
	return 0;
}

static void pre_error(struct px_session *s, const struct imap_event *ev)
{
	char text[128];

	s->bad_cmds++;
	log_sanitize(text, sizeof(text), ev->error, strlen(ev->error), 100);
	if (!ev->resync || s->bad_cmds >= PX_PREAUTH_MAX_BAD) {
		px_session_reply(s, "* BYE Too many invalid commands.\r\n");
		px_session_close(s, text);
		return;
	}
	px_session_reply(s, "* BAD Error in IMAP command: %s\r\n", text);
}

/* The pre-auth read loop: one message at a time, so that a command that
 * changes the state (STARTTLS, LOGIN) stops the parsing right after it. */
static void pre_read(struct px_session *s, struct evbuffer *in)
{
	enum px_state st = s->state;

	while (s->state == st && s->client != NULL) {
		struct evbuffer_iovec v;
		struct imap_event ev;
		size_t used;

		if (evbuffer_peek(in, -1, NULL, &v, 1) < 1 || v.iov_len == 0)
			return;
		imap_parser_next(s->cp, v.iov_base, v.iov_len, &used, &ev);
		evbuffer_drain(in, used);
		switch (ev.type) {
		case IMAP_EV_NEED_MORE:
		case IMAP_EV_LITERAL_END:
		case IMAP_EV_LITERAL_DATA:
			break;
		case IMAP_EV_LITERAL_START:
			if (ev.lit_size > PX_PREAUTH_MAX_LITERAL) {
				px_session_reply(s, "* BYE Literal too large before login.\r\n");
				px_session_close(s, "oversized literal before login");
				return;
			}
			if (ev.lit_flags & IMAP_LIT_SYNC)
				px_session_reply(s, "+ Ready for literal data\r\n");
			break;
		case IMAP_EV_MESSAGE:
			/* Stop after STARTTLS (the rest of the input is
			 * discarded by conn) and once the login started. */
			if (pre_command(s, ev.msg) || s->state != PX_ST_PREAUTH)
				return;
			break;
		case IMAP_EV_ERROR:
			pre_error(s, &ev);
			if (!ev.resync)
				return;
			break;
		case IMAP_EV_TYPE_COUNT:
			return;
		}
	}
}

void px_session_login_done(struct px_session *s, int ok)
{
	px_session_wipe_secret(s);
	if (s->state == PX_ST_CLOSING)
		return;
	if (!ok) {
		s->state = PX_ST_PREAUTH;
		s->pre_wait = PX_PRE_CMD;
		s->auth = PX_AUTH_NONE;
		imap_parser_set_raw(s->cp, 0);
		px_session_set_user(s, NULL);
		conn_resume_read(s->client);
		return;
	}
	s->state = PX_ST_RELAY;
	s->srv->m.sessions_authed++;
	s->srv->m.logins_ok++;
	px_relay_start(s);
}

unsigned px_sessions_shutdown(struct px_server *srv, int force)
{
	struct px_session *s, *next;
	unsigned alive = 0;

	for (s = srv->sessions; s != NULL; s = next) {
		next = s->next;
		if (s->state == PX_ST_CLOSING) {
			alive++;
			continue;
		}
		if (force || s->state == PX_ST_PREAUTH ||
		    (s->state == PX_ST_RELAY &&
		     (s->inflight == 0 || (s->idle_tag != NULL && s->inflight == 1)))) {
			px_session_reply(s, "* BYE Server shutting down.\r\n");
			px_session_close(s, "shutdown");
		} else {
			s->bye_on_idle = 1;
		}
		alive++;
	}
	return alive;
}
