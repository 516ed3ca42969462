/*
 * relay.c - the authenticated phase: bytes forwarded both ways exactly as
 * received, while the shared parser reads them on the side (client mode on
 * the client's bytes, server mode on the upstream's) and hands every
 * complete message to the observer (observe.h), whose marks go to Redis
 * (marks.h).
 *
 * Parsed bytes are held back until their message is complete, so that the
 * few messages the proxy changes can still be changed: COMPRESS and
 * STARTTLS are answered locally, capability lists are filtered. The parser
 * reads the input in place; what it has read moves out of the input once
 * per read callback (messages ready go to the other side, the start of an
 * incomplete one to a per-direction hold buffer), never once per message.
 * The hold is flushed early at every literal, so a held message is one
 * line plus at most one small inline literal, and literal payloads move by
 * count between evbuffers (never pulled up). A
 * synchronising literal's header is flushed at once, since the client waits
 * for the upstream's "+"; a tagged NO/BAD instead cancels it on the client
 * parser (imap_parser_cancel_literal), so the rest of the client's input is
 * read as commands again.
 *
 * Backpressure (le-proxy's idea): when one side's output holds more than
 * PX_BUF_HIGH bytes, reading from the other side pauses until that output
 * falls to PX_BUF_LOW (conn's drained callback).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include <imapferry/conn.h>

#include "marks.h"
#include "observe.h"
#include "session.h"

/* ---- observer sink ---- */

/* A session on the destination (its user was cut over) marks nothing: a
 * source-to-destination sync of that user would undo what the user changes
 * there (and with --delete2 delete new mail). */
static int sink_off(const struct px_session *s)
{
	return s->srv->dst_host != NULL && s->up_host == s->srv->dst_host;
}

static void sink_mark(void *aux, const char *folder, enum rk_prio prio)
{
	struct px_session *s = aux;

	if (sink_off(s))
		return;
	if (log_debug_enabled(LOG_CAT_PROXY))
		px_session_log(s, LOG_LVL_DEBUG, "mark %s (%s)", folder,
		               prio == RK_PRIO_HIGH ? "high" : "low");
	px_marks_folder(s->srv->marks, s->user, folder, prio);
}

static void sink_hint(void *aux, const char *line)
{
	struct px_session *s = aux;

	if (sink_off(s))
		return;
	px_marks_hint(s->srv->marks, s->user, line);
}

/* ---- flushing ---- */

static void flush_client(struct px_session *s)
{
	size_t n = evbuffer_get_length(s->chold);

	if (n == 0)
		return;
	if (s->up == NULL || conn_write_buffer(s->up, s->chold) < 0) {
		evbuffer_drain(s->chold, n);
		return;
	}
	s->srv->m.bytes_c2u += n;
}

static void flush_server(struct px_session *s)
{
	size_t n = evbuffer_get_length(s->shold);
	struct evbuffer *out;

	if (n == 0)
		return;
	/* After the client's EOF (half-close) conn refuses writes, but its
	 * output still drains: answers to pipelined commands go there. */
	out = s->client != NULL ? conn_output(s->client) : NULL;
	if (out == NULL || evbuffer_add_buffer(out, s->shold) < 0) {
		evbuffer_drain(s->shold, n);
		return;
	}
	s->srv->m.bytes_u2c += n;
}

/* ---- the parsed part of the input (see session.h: cpos, spos) ---- */

/* The contiguous input bytes at offset off, if any. */
static int input_at(struct evbuffer *in, size_t off, struct evbuffer_iovec *v)
{
	struct evbuffer_ptr p;

	if (evbuffer_ptr_set(in, &p, off, EVBUFFER_PTR_SET) < 0)
		return 0;
	return evbuffer_peek(in, -1, &p, v, 1) >= 1 && v->iov_len > 0;
}

/* Everything parsed so far, the hold included, may go out. */
static void client_ready(struct px_session *s)
{
	s->cready = s->cpos;
	s->cready_hold = 1;
}

/* Sends what is ready: the hold, then the ready bytes of the input. */
static void client_commit(struct px_session *s, struct evbuffer *in)
{
	if (!s->cready_hold)
		return;
	if (s->cready > 0)
		evbuffer_remove_buffer(in, s->chold, s->cready);
	s->cpos -= s->cready;
	s->cready = 0;
	s->cready_hold = 0;
	flush_client(s);
}

/* End of a read: what is ready goes out, the rest of what was parsed (the
 * start of an incomplete command) waits in the hold. */
static void client_park(struct px_session *s, struct evbuffer *in)
{
	client_commit(s, in);
	if (s->cpos > 0)
		evbuffer_remove_buffer(in, s->chold, s->cpos);
	s->cpos = 0;
}

/* Bytes of the current, incomplete command held back. */
static size_t client_held(const struct px_session *s)
{
	return (s->cready_hold ? 0 : evbuffer_get_length(s->chold)) + s->cpos - s->cready;
}

/* Drops the held bytes of the current command (answered by the proxy). */
static void client_drop_held(struct px_session *s, struct evbuffer *in)
{
	client_commit(s, in);
	evbuffer_drain(s->chold, evbuffer_get_length(s->chold));
	evbuffer_drain(in, s->cpos);
	s->cpos = 0;
}

static void server_ready(struct px_session *s)
{
	s->sready = s->spos;
	s->sready_hold = 1;
}

static void server_commit(struct px_session *s, struct evbuffer *in)
{
	if (!s->sready_hold)
		return;
	if (s->sready > 0)
		evbuffer_remove_buffer(in, s->shold, s->sready);
	s->spos -= s->sready;
	s->sready = 0;
	s->sready_hold = 0;
	flush_server(s);
}

static void server_park(struct px_session *s, struct evbuffer *in)
{
	server_commit(s, in);
	if (s->spos > 0)
		evbuffer_remove_buffer(in, s->shold, s->spos);
	s->spos = 0;
}

/* The current response, whole, into the hold (to be rewritten there). */
static void server_gather(struct px_session *s, struct evbuffer *in)
{
	server_commit(s, in);
	if (s->spos > 0)
		evbuffer_remove_buffer(in, s->shold, s->spos);
	s->spos = 0;
}

/* Output bytes of the other side ready but not yet moved there. */
static size_t client_ready_len(const struct px_session *s)
{
	return s->cready_hold ? evbuffer_get_length(s->chold) + s->cready : 0;
}

static size_t server_ready_len(const struct px_session *s)
{
	return s->sready_hold ? evbuffer_get_length(s->shold) + s->sready : 0;
}

static void relay_fatal(struct px_session *s, const char *bye, const char *why)
{
	s->srv->m.rejected++;
	px_session_reply(s, "* BYE %s\r\n", bye);
	px_session_close(s, why);
}

/* ---- start ---- */

void px_relay_start(struct px_session *s)
{
	struct px_observe_sink sink = {sink_mark, sink_hint};
	struct imap_limits l;
	struct evbuffer *in;

	imap_limits_default(&l, IMAP_PARSE_CLIENT);
	l.max_line = s->srv->cfg.max_line;
	l.max_literal = 0; /* checked at LITERAL_START: see client_literal() */
	imap_parser_free(&s->cp);
	s->cp = imap_parser_new(IMAP_PARSE_CLIENT, &l);
	s->obs = px_observe_new(&sink, s);
	evbuffer_drain(s->chold, evbuffer_get_length(s->chold));
	evbuffer_drain(s->shold, evbuffer_get_length(s->shold));
	conn_set_timeouts(s->client, s->srv->cfg.idle_timeout_s * 1000u,
	                  s->srv->cfg.idle_timeout_s * 1000u);
	conn_resume_read(s->client);
	in = conn_input(s->up);
	if (in != NULL && evbuffer_get_length(in) > 0)
		px_relay_up_read(s, in);
}

/* ---- client -> upstream ---- */

static int name_is(const struct imap_msg *m, const char *name)
{
	return m->name != NULL && strcmp(m->name, name) == 0;
}

static void set_str(char **dst, const char *src)
{
	free(*dst);
	*dst = src != NULL ? strdup(src) : NULL;
	if (src != NULL && *dst == NULL)
		abort();
}

/* Returns -1 when the session was closed. */
static int client_literal(struct px_session *s, struct evbuffer *in, const struct imap_event *ev)
{
	const struct imap_msg *m = ev->msg;

	if (s->srv->cfg.max_literal != 0 && ev->lit_size > s->srv->cfg.max_literal) {
		char bye[160];

		client_commit(s, in);
		snprintf(bye, sizeof(bye),
		         "[TOOBIG] Literal of %llu bytes exceeds the limit of %llu bytes.",
		         (unsigned long long)ev->lit_size,
		         (unsigned long long)s->srv->cfg.max_literal);
		relay_fatal(s, bye, "oversized literal");
		return -1;
	}
	if (!s->chold_flushed && (name_is(m, "COMPRESS") || name_is(m, "STARTTLS"))) {
		client_commit(s, in);
		relay_fatal(s, "Invalid arguments.", "COMPRESS/STARTTLS with a literal");
		return -1;
	}
	if (ev->lit_flags & IMAP_LIT_SYNC)
		set_str(&s->sync_tag, m->tag != NULL ? m->tag : "");
	client_ready(s);
	s->chold_flushed = 1;
	return 0;
}

static void client_message(struct px_session *s, struct evbuffer *in, const struct imap_msg *m)
{
	int whole = !s->chold_flushed;

	s->chold_flushed = 0;
	set_str(&s->sync_tag, NULL);
	if (m->kind == IMAP_MSG_RAW_LINE) {
		/* IDLE's DONE (RFC 2177) or a line of an AUTHENTICATE. */
		imap_parser_set_raw(s->cp, 0);
		client_ready(s);
		px_observe_client_line(s->obs, m->text, m->text_len);
		set_str(&s->idle_tag, NULL);
		return;
	}
	s->srv->m.commands++;
	if (whole && name_is(m, "COMPRESS")) {
		/* RFC 4978: NO [CANNOT] when it cannot be done; compressed
		 * traffic would blind the observer. */
		client_drop_held(s, in);
		s->srv->m.compress_refused++;
		px_session_reply(
		        s, "%s NO [CANNOT] Compression is not available through this proxy.\r\n",
		        m->tag);
		return;
	}
	if (whole && name_is(m, "STARTTLS")) {
		client_drop_held(s, in);
		px_session_reply(s, "%s BAD STARTTLS is not allowed after login.\r\n", m->tag);
		return;
	}
	client_ready(s);
	s->inflight++;
	px_observe_client(s->obs, m);
	if (name_is(m, "IDLE")) {
		/* Until the tagged reply, the client sends only "DONE". */
		set_str(&s->idle_tag, m->tag);
		imap_parser_set_raw(s->cp, 1);
	}
}

/* Returns -1 when the session was closed. */
static int client_error(struct px_session *s, struct evbuffer *in, const struct imap_event *ev)
{
	char text[160], bye[200];

	log_sanitize(text, sizeof(text), ev->error, strlen(ev->error), 120);
	s->chold_flushed = 0;
	if (strncmp(ev->error, "line exceeds", 12) == 0 || !ev->resync)
		client_commit(s, in);
	if (strncmp(ev->error, "line exceeds", 12) == 0) {
		snprintf(bye, sizeof(bye), "Line too long (the limit is %u bytes).",
		         s->srv->cfg.max_line);
		relay_fatal(s, bye, text);
		return -1;
	}
	if (!ev->resync) {
		snprintf(bye, sizeof(bye), "Protocol error: %s", text);
		relay_fatal(s, bye, text);
		return -1;
	}
	/* A command the parser cannot read but that kept the framing: the
	 * upstream gets it as is and answers it (BAD, most likely). */
	px_session_log(s, LOG_LVL_DEBUG, "unparsable command forwarded: %s", text);
	client_ready(s);
	return 0;
}

void px_relay_client_read(struct px_session *s, struct evbuffer *in)
{
	size_t hold_max = s->srv->cfg.max_line + (512u << 10);

	s->cpos = s->cready = 0;
	s->cready_hold = 0;
	while (s->state == PX_ST_RELAY && !s->client_paused) {
		struct evbuffer_iovec v;
		struct imap_event ev;
		size_t used;

		if (!input_at(in, s->cpos, &v))
			break;
		imap_parser_next(s->cp, v.iov_base, v.iov_len, &used, &ev);
		s->cpos += used;
		switch (ev.type) {
		case IMAP_EV_NEED_MORE:
			if (client_held(s) > hold_max) {
				client_commit(s, in);
				relay_fatal(s, "Line too long.", "line too long (no line end)");
				return;
			}
			break;
		case IMAP_EV_LITERAL_START:
			if (client_literal(s, in, &ev) < 0)
				return;
			break;
		case IMAP_EV_LITERAL_DATA:
			set_str(&s->sync_tag, NULL);
			client_ready(s);
			break;
		case IMAP_EV_LITERAL_END:
			break;
		case IMAP_EV_MESSAGE:
			client_message(s, in, ev.msg);
			break;
		case IMAP_EV_ERROR:
			if (client_error(s, in, &ev) < 0)
				return;
			break;
		case IMAP_EV_TYPE_COUNT:
			return;
		}
		if (s->up != NULL &&
		    conn_output_pending(s->up) + client_ready_len(s) > PX_BUF_HIGH) {
			s->client_paused = 1;
			conn_pause_read(s->client);
		}
	}
	client_park(s, in);
}

/* ---- upstream -> client ---- */

/* Rewrites the held line (no literal in it) with its capability list
 * filtered, if anything is dropped. untagged: "* CAPABILITY ..."; else a
 * "[CAPABILITY ...]" response code. */
static void rewrite_caps(struct px_session *s, int untagged)
{
	size_t n = evbuffer_get_length(s->shold), start, end;
	char *line, *out;

	if (n > (64u << 10))
		return;
	line = malloc(n + 1);
	out = malloc(n + 1);
	if (line == NULL || out == NULL)
		abort();
	evbuffer_copyout(s->shold, line, n);
	line[n] = '\0';
	if (untagged) {
		char *sp = strchr(line, ' ');

		sp = sp != NULL ? strchr(sp + 1, ' ') : NULL;
		start = sp != NULL ? (size_t)(sp + 1 - line) : n;
		end = n;
		while (end > start && (line[end - 1] == '\r' || line[end - 1] == '\n'))
			end--;
	} else {
		char *br = strchr(line, '['), *close;

		start = end = n;
		if (br != NULL && strncasecmp(br + 1, "CAPABILITY ", 11) == 0 &&
		    (close = strchr(br, ']')) != NULL) {
			start = (size_t)(br + 12 - line);
			end = (size_t)(close - line);
		}
	}
	if (start < end && px_caps_filter(line + start, end - start, out, n + 1) > 0) {
		evbuffer_drain(s->shold, n);
		evbuffer_add(s->shold, line, start);
		evbuffer_add(s->shold, out, strlen(out));
		evbuffer_add(s->shold, line + end, n - end);
	}
	free(line);
	free(out);
}

static void eof_poll_cb(evutil_socket_t fd, short what, void *aux);

/* Half-close or shutdown: close once nothing is in flight. */
static int maybe_finish(struct px_session *s)
{
	if (s->inflight > 0 && !(s->idle_tag != NULL && s->inflight == 1 && s->bye_on_idle))
		return 0;
	if (s->client_eof) {
		px_session_close(s, "client closed the connection");
		return 1;
	}
	if (s->bye_on_idle && !imap_parser_busy(s->cp)) {
		px_session_reply(s, "* BYE Server shutting down.\r\n");
		px_session_close(s, "shutdown");
		return 1;
	}
	return 0;
}

static void server_tagged(struct px_session *s, const struct imap_msg *m)
{
	if (s->sync_tag != NULL && m->tag != NULL && strcmp(m->tag, s->sync_tag) == 0 &&
	    (m->status == IMAP_STATUS_NO || m->status == IMAP_STATUS_BAD)) {
		/* The upstream refused the command instead of "+": the
		 * client will not send the literal (RFC 3501 7.5). */
		if (imap_parser_cancel_literal(s->cp) == 0)
			s->chold_flushed = 0;
		set_str(&s->sync_tag, NULL);
		return;
	}
	if (s->inflight > 0)
		s->inflight--;
	if (s->idle_tag != NULL && m->tag != NULL && strcmp(m->tag, s->idle_tag) == 0) {
		/* IDLE refused (or ended without our seeing DONE). */
		imap_parser_set_raw(s->cp, 0);
		set_str(&s->idle_tag, NULL);
	}
}

/* Returns 1 when the session was closed. */
static int server_message(struct px_session *s, struct evbuffer *in, const struct imap_msg *m)
{
	int whole = !s->shold_flushed;

	s->shold_flushed = 0;
	if (m->kind == IMAP_MSG_CONTINUATION) {
		set_str(&s->sync_tag, NULL);
	} else if (m->kind == IMAP_MSG_TAGGED) {
		server_tagged(s, m);
	} else if (m->status == IMAP_STATUS_BYE) {
		s->up_bye = 1;
	}
	if (whole && m->kind == IMAP_MSG_UNTAGGED && name_is(m, "CAPABILITY")) {
		server_gather(s, in);
		rewrite_caps(s, 1);
	} else if (whole && m->code != NULL && strcmp(m->code, "CAPABILITY") == 0) {
		server_gather(s, in);
		rewrite_caps(s, 0);
	}
	server_ready(s);
	px_observe_server(s->obs, m);
	if (m->kind == IMAP_MSG_TAGGED || s->bye_on_idle) {
		/* maybe_finish() acts only then; what is ready goes first. */
		if (s->client_eof || s->bye_on_idle)
			server_commit(s, in);
		return maybe_finish(s);
	}
	return 0;
}

static void pause_up(struct px_session *s)
{
	struct timeval tv = {0, 20000};

	s->up_paused = 1;
	conn_pause_read(s->up);
	if (s->client_eof) {
		/* No drained callback after the client's EOF: poll. */
		if (s->timer == NULL)
			s->timer = evtimer_new(s->srv->base, eof_poll_cb, s);
		if (s->timer == NULL)
			abort();
		evtimer_add(s->timer, &tv);
	}
}

void px_relay_up_read(struct px_session *s, struct evbuffer *in)
{
	s->spos = s->sready = 0;
	s->sready_hold = 0;
	while (s->state == PX_ST_RELAY && !s->up_paused) {
		struct evbuffer_iovec v;
		struct imap_event ev;
		size_t used;

		if (!input_at(in, s->spos, &v))
			break;
		imap_parser_next(s->sp, v.iov_base, v.iov_len, &used, &ev);
		s->spos += used;
		switch (ev.type) {
		case IMAP_EV_NEED_MORE:
		case IMAP_EV_LITERAL_END:
			break;
		case IMAP_EV_LITERAL_START:
			s->shold_flushed = 1;
			server_ready(s);
			break;
		case IMAP_EV_LITERAL_DATA:
			server_ready(s);
			break;
		case IMAP_EV_MESSAGE:
			if (server_message(s, in, ev.msg))
				return;
			break;
		case IMAP_EV_ERROR:
			server_ready(s);
			if (!ev.resync) {
				server_commit(s, in);
				px_marks_folder(s->srv->marks, s->user, RK_FOLDER_ALL, RK_PRIO_LOW);
				relay_fatal(s, "Proxy lost track of the server's responses.",
				            ev.error);
				return;
			}
			px_session_log(s, LOG_LVL_WARN, "unparsable upstream response: %s",
			               ev.error);
			s->shold_flushed = 0;
			break;
		case IMAP_EV_TYPE_COUNT:
			return;
		}
		if (s->client != NULL &&
		    conn_output_pending(s->client) + server_ready_len(s) > PX_BUF_HIGH)
			pause_up(s);
	}
	server_park(s, in);
}

static void eof_poll_cb(evutil_socket_t fd, short what, void *aux)
{
	struct px_session *s = aux;
	struct timeval tv = {0, 20000};

	(void)fd;
	(void)what;
	if (s->state != PX_ST_RELAY || !s->up_paused)
		return;
	if (s->client != NULL && conn_output_pending(s->client) > PX_BUF_LOW) {
		evtimer_add(s->timer, &tv);
		return;
	}
	px_relay_drained(s, 1);
}

void px_relay_drained(struct px_session *s, int to_client)
{
	if (to_client && s->up_paused && s->up != NULL) {
		s->up_paused = 0;
		conn_resume_read(s->up);
	} else if (!to_client && s->client_paused && s->client != NULL) {
		s->client_paused = 0;
		conn_resume_read(s->client);
	}
}

void px_relay_client_eof(struct px_session *s)
{
	s->client_eof = 1;
	px_session_log(s, LOG_LVL_DEBUG, "client half-closed, %u command(s) in flight",
	               s->inflight);
	maybe_finish(s);
}

void px_relay_up_gone(struct px_session *s, const char *why)
{
	struct evbuffer *in = s->up != NULL ? conn_input(s->up) : NULL;

	/* Whatever arrived before the end is still offered to the client. */
	if (in != NULL && evbuffer_get_length(in) > 0 && !s->up_paused)
		px_relay_up_read(s, in);
	if (s->state != PX_ST_RELAY)
		return;
	if (!s->client_eof && !s->up_bye)
		px_session_reply(s, "* BYE Upstream server closed the connection.\r\n");
	px_session_close(s, why != NULL ? why : "upstream closed the connection");
}
