/* client.c - asynchronous IMAP client; see include/imapferry/client.h */
#include "imapferry/client.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <openssl/crypto.h>

#include "imapferry/conn.h"
#include "imapferry/istr.h"
#include "imapferry/log.h"
#include "imapferry/tls.h"
#include "imapferry/xalloc.h"
#include "imapferry/zlayer.h"

const char *const imap_client_state_names[IMAP_CL_STATE_COUNT] = {
        "new", "connecting", "not authenticated", "authenticated", "logout", "failed"};

#define MAX_PARTS 64 /* synchronising literals in one command */

struct cmd {
	struct cmd *next;
	char tag[16];
	struct evbuffer *parts[MAX_PARTS]; /* split where we must wait for "+" */
	unsigned nparts, sent;
	int waiting_cont; /* a part ended in {N}: wait for "+" */
	/* AUTHENTICATE: answers each "+" challenge until the tagged reply,
	 * and holds back the commands behind it until then */
	struct imap_sasl *sasl;
	int streaming; /* a {N+} literal the caller writes with stream_write() */
	int holds;     /* COMPRESS: nothing may follow before its tagged reply */
	uint64_t stream_left;
	char *trace; /* masked text for the protocol trace */
	imap_done_cb *cb;
	imap_untagged_cb *untagged;
	imap_literal_cb *literal;
	void *aux;
};

enum conn_step {
	STEP_GREETING,
	STEP_CAPS,     /* CAPABILITY sent */
	STEP_STARTTLS, /* STARTTLS sent or handshake running */
	STEP_DONE,
};

struct imap_client {
	struct event_base *base;
	struct evdns_base *dns;
	struct imap_client_opts opts;
	char *host, *name;
	struct imap_limits limits;
	struct conn *conn;
	struct imap_parser *parser;
	enum imap_client_state state;
	enum conn_step step;
	struct imap_caps caps;
	char auth_offered[256];        /* "AUTH=PLAIN AUTH=LOGIN ..." as last seen, for errors */
	struct cmd *cmds, **cmds_tail; /* in tag order */
	unsigned tagno, in_flight;
	int tls_active;
	char *error, *bye;
	int busy, freed;
	imap_done_cb *connect_cb;
	void *connect_aux;
	struct cmd *stream; /* the command whose literal is being streamed */
	imap_drained_cb *on_drained;
	void *drained_aux;
	/* login in progress */
	imap_done_cb *login_cb;
	void *login_aux;
	/* COMPRESS=DEFLATE (RFC 4978), once the server said OK: zw deflates
	 * what we write, zr inflates the connection's input into zin, which
	 * the parser reads instead. */
	struct zlayer *zw, *zr;
	struct evbuffer *zin, *zout;
	imap_done_cb *compress_cb;
	void *compress_aux;
	int compress_sent; /* COMPRESS queued or done */
};

static void client_fail(struct imap_client *cl, const char *fmt, ...)
        __attribute__((format(printf, 2, 3)));
static void connect_step(struct imap_client *cl);

/* Every write to the connection: through the deflate layer once COMPRESS
 * is on. flush_z: end with a sync flush (everything but the middle of a
 * streamed literal). */
static int cl_write(struct imap_client *cl, const void *data, size_t len, int flush_z)
{
	if (cl->zw == NULL)
		return conn_write(cl->conn, data, len);
	if (zlayer_deflate(cl->zw, data, len, flush_z, cl->zout) < 0)
		return -1;
	return evbuffer_get_length(cl->zout) > 0 ? conn_write_buffer(cl->conn, cl->zout) : 0;
}

static int cl_write_buffer(struct imap_client *cl, struct evbuffer *buf)
{
	if (cl->zw == NULL)
		return conn_write_buffer(cl->conn, buf);
	if (zlayer_deflate_buffer(cl->zw, buf, cl->zout) < 0)
		return -1;
	return conn_write_buffer(cl->conn, cl->zout);
}

static const char *prefix(const struct imap_client *cl)
{
	return cl->name;
}

struct imap_client *imap_client_new(struct event_base *base, struct evdns_base *dns,
                                    const struct imap_client_opts *opts, const char **error_r)
{
	struct imap_client *cl;

	if (opts->host == NULL || opts->host[0] == '\0') {
		*error_r = "no host given";
		return NULL;
	}
	if (opts->security != IMAP_SEC_PLAIN && opts->tls == NULL) {
		*error_r = "TLS requested but no TLS context given";
		return NULL;
	}
	cl = calloc(1, sizeof(*cl));
	if (cl == NULL)
		abort();
	cl->base = base;
	cl->dns = dns;
	cl->opts = *opts;
	cl->host = xstrdup(opts->host);
	cl->opts.host = cl->host;
	cl->name = xstrdup(opts->name != NULL ? opts->name : opts->host);
	cl->opts.name = cl->name;
	if (opts->limits != NULL)
		cl->limits = *opts->limits;
	else
		imap_limits_default(&cl->limits, IMAP_PARSE_SERVER);
	cl->opts.limits = NULL;
	cl->cmds_tail = &cl->cmds;
	cl->state = IMAP_CL_NEW;
	return cl;
}

static void cmd_free(struct cmd *c)
{
	for (unsigned i = 0; i < c->nparts; i++) {
		if (c->parts[i] != NULL)
			evbuffer_free(c->parts[i]);
	}
	imap_sasl_free(&c->sasl);
	free(c->trace);
	free(c);
}

static void client_destroy(struct imap_client *cl)
{
	struct cmd *c, *next;

	for (c = cl->cmds; c != NULL; c = next) {
		next = c->next;
		cmd_free(c);
	}
	conn_free(&cl->conn);
	imap_parser_free(&cl->parser);
	zlayer_free(&cl->zw);
	zlayer_free(&cl->zr);
	if (cl->zin != NULL)
		evbuffer_free(cl->zin);
	if (cl->zout != NULL)
		evbuffer_free(cl->zout);
	free(cl->host);
	free(cl->name);
	free(cl->error);
	free(cl->bye);
	free(cl);
}

void imap_client_free(struct imap_client **clp)
{
	struct imap_client *cl = *clp;

	if (cl == NULL)
		return;
	*clp = NULL;
	if (cl->busy > 0) {
		cl->freed = 1; /* the outermost callback frame frees it */
		conn_free(&cl->conn);
		return;
	}
	client_destroy(cl);
}

/* Leaves a callback frame; returns 1 if the client is gone. */
static int client_leave(struct imap_client *cl)
{
	if (--cl->busy == 0 && cl->freed) {
		client_destroy(cl);
		return 1;
	}
	return cl->freed;
}

enum imap_client_state imap_client_state(const struct imap_client *cl)
{
	return cl->state;
}

const struct imap_caps *imap_client_caps(const struct imap_client *cl)
{
	return &cl->caps;
}

const char *imap_client_error(const struct imap_client *cl)
{
	return cl->error;
}

const char *imap_client_peer(const struct imap_client *cl)
{
	return cl->conn != NULL ? conn_peer_name(cl->conn) : cl->host;
}

unsigned imap_client_in_flight(const struct imap_client *cl)
{
	return cl->in_flight;
}

int imap_client_is_tls(const struct imap_client *cl)
{
	return cl->tls_active;
}

const char *imap_client_tls_version(const struct imap_client *cl)
{
	return cl->conn != NULL && cl->tls_active ? conn_tls_version(cl->conn) : NULL;
}

const char *imap_client_tls_cipher(const struct imap_client *cl)
{
	return cl->conn != NULL && cl->tls_active ? conn_tls_cipher(cl->conn) : NULL;
}

int imap_client_tls_resumed(const struct imap_client *cl)
{
	return cl->conn != NULL && cl->tls_active && conn_tls_resumed(cl->conn);
}

/* --- sending --- */

static void update_timeouts(struct imap_client *cl)
{
	if (cl->conn != NULL && cl->opts.timeout_ms != 0)
		conn_set_timeouts(cl->conn, cl->in_flight > 0 ? cl->opts.timeout_ms : 0,
		                  cl->opts.timeout_ms);
}

/* Writes what can be written: each command's parts up to one that must
 * wait for "+". A waiting command holds back the commands behind it. */
static void flush(struct imap_client *cl)
{
	struct cmd *c;

	if (cl->conn == NULL || !conn_is_established(cl->conn))
		return;
	for (c = cl->cmds; c != NULL; c = c->next) {
		if (c->waiting_cont)
			return;
		while (c->sent < c->nparts) {
			if (c->sent == 0) {
				cl->in_flight++;
				if (c->trace != NULL)
					log_msg(LOG_LVL_DEBUG, prefix(cl), "C: %s %s", c->tag,
					        c->trace);
			}
			cl_write_buffer(cl, c->parts[c->sent]);
			evbuffer_free(c->parts[c->sent]);
			c->parts[c->sent] = NULL;
			c->sent++;
			if (c->sent < c->nparts) {
				c->waiting_cont = 1;
				return;
			}
		}
		if (c->sasl != NULL)
			return; /* the lines after AUTHENTICATE are SASL responses */
		if (c->holds)
			return; /* COMPRESS: what follows is compressed, or not */
		if (c->streaming)
			return; /* its literal is still being written */
	}
	update_timeouts(cl);
}

static struct cmd *cmd_new(struct imap_client *cl)
{
	struct cmd *c = calloc(1, sizeof(*c));

	if (c == NULL)
		abort();
	snprintf(c->tag, sizeof(c->tag), "F%u", ++cl->tagno);
	c->parts[0] = evbuffer_new();
	if (c->parts[0] == NULL)
		abort();
	evbuffer_add_printf(c->parts[0], "%s ", c->tag);
	c->nparts = 1;
	return c;
}

static void cmd_queue(struct imap_client *cl, struct cmd *c)
{
	*cl->cmds_tail = c;
	cl->cmds_tail = &c->next;
	flush(cl);
}

/* Starts a new part: the current one ended in a synchronising literal. */
static int cmd_split(struct cmd *c, size_t tail_len)
{
	struct evbuffer *cur = c->parts[c->nparts - 1], *head;
	size_t total = evbuffer_get_length(cur);

	if (c->nparts == MAX_PARTS)
		return -1;
	head = evbuffer_new();
	if (head == NULL)
		abort();
	evbuffer_remove_buffer(cur, head, total - tail_len);
	c->parts[c->nparts - 1] = head;
	c->parts[c->nparts++] = cur;
	return 0;
}

static unsigned literal_flags(const struct imap_client *cl)
{
	if (imap_caps_has(&cl->caps, IMAP_CAP_LITERALPLUS))
		return ISTR_F_LITERALPLUS;
	if (imap_caps_has(&cl->caps, IMAP_CAP_LITERALMINUS))
		return ISTR_F_LITERALMINUS;
	return 0;
}

static int add_string(struct imap_client *cl, struct cmd *c, struct evbuffer *trace, const char *s,
                      size_t len, int mailbox, int secret)
{
	struct evbuffer *cur = c->parts[c->nparts - 1];
	unsigned flags = ISTR_F_ASTRING | literal_flags(cl);
	int kind;

	kind = mailbox ? istr_append_mailbox(cur, s, len, flags) : istr_append(cur, s, len, flags);
	if (kind < 0)
		return -1;
	if (trace != NULL) {
		if (secret)
			evbuffer_add_printf(trace, "MASKED");
		else if (kind == ISTR_LITERAL || kind == ISTR_LITERAL_PLUS)
			evbuffer_add_printf(trace, "{%zu bytes}", len);
		else
			evbuffer_add(trace, s, len);
	}
	if (kind == ISTR_LITERAL)
		return cmd_split(c, len);
	return 0;
}

static int add_literal(struct imap_client *cl, struct cmd *c, struct evbuffer *trace,
                       struct evbuffer *lit)
{
	size_t n = evbuffer_get_length(lit);
	unsigned lf = literal_flags(cl);
	int plus = (lf & ISTR_F_LITERALPLUS) ||
	           ((lf & ISTR_F_LITERALMINUS) && n <= ISTR_LITERALMINUS_MAX);

	evbuffer_add_printf(c->parts[c->nparts - 1], "{%zu%s}\r\n", n, plus ? "+" : "");
	if (trace != NULL)
		evbuffer_add_printf(trace, "{%zu bytes}", n);
	if (!plus) {
		if (c->nparts == MAX_PARTS)
			return -1;
		c->parts[c->nparts] = evbuffer_new();
		if (c->parts[c->nparts] == NULL)
			abort();
		c->nparts++;
	}
	return evbuffer_add_buffer(c->parts[c->nparts - 1], lit);
}

static int build(struct imap_client *cl, struct cmd *c, int crlf, const char *fmt, va_list ap)
{
	struct evbuffer *trace = log_debug_enabled(LOG_CAT_IMAP) ? evbuffer_new() : NULL;
	const char *p;
	int r = 0;

	for (p = fmt; *p != '\0' && r == 0; p++) {
		struct evbuffer *cur = c->parts[c->nparts - 1];
		const char *s;

		if (*p != '%') {
			evbuffer_add(cur, p, 1);
			if (trace != NULL)
				evbuffer_add(trace, p, 1);
			continue;
		}
		switch (*++p) {
		case 'a':
			s = va_arg(ap, const char *);
			evbuffer_add(cur, s, strlen(s));
			if (trace != NULL)
				evbuffer_add(trace, s, strlen(s));
			break;
		case 's':
			s = va_arg(ap, const char *);
			r = add_string(cl, c, trace, s, strlen(s), 0, 0);
			break;
		case 'S': {
			size_t len;

			s = va_arg(ap, const char *);
			len = va_arg(ap, size_t);
			r = add_string(cl, c, trace, s, len, 0, 0);
			break;
		}
		case 'm':
			s = va_arg(ap, const char *);
			r = add_string(cl, c, trace, s, strlen(s), 1, 0);
			break;
		case 'P':
			s = va_arg(ap, const char *);
			r = add_string(cl, c, trace, s, strlen(s), 0, 1);
			break;
		case 'R':
			s = va_arg(ap, const char *);
			evbuffer_add(cur, s, strlen(s));
			if (trace != NULL)
				evbuffer_add_printf(trace, "MASKED");
			break;
		case 'u': {
			unsigned v = va_arg(ap, unsigned);

			evbuffer_add_printf(cur, "%u", v);
			if (trace != NULL)
				evbuffer_add_printf(trace, "%u", v);
			break;
		}
		case 'U': {
			uint64_t v = va_arg(ap, uint64_t);

			evbuffer_add_printf(cur, "%llu", (unsigned long long)v);
			if (trace != NULL)
				evbuffer_add_printf(trace, "%llu", (unsigned long long)v);
			break;
		}
		case 'd': {
			int v = va_arg(ap, int);

			evbuffer_add_printf(cur, "%d", v);
			if (trace != NULL)
				evbuffer_add_printf(trace, "%d", v);
			break;
		}
		case 'L':
			r = add_literal(cl, c, trace, va_arg(ap, struct evbuffer *));
			break;
		case '%':
			evbuffer_add(cur, "%", 1);
			if (trace != NULL)
				evbuffer_add(trace, "%", 1);
			break;
		default:
			r = -1;
			break;
		}
	}
	if (crlf)
		evbuffer_add(c->parts[c->nparts - 1], "\r\n", 2);
	if (trace != NULL) {
		size_t n = evbuffer_get_length(trace);

		c->trace = malloc(n + 1);
		if (c->trace == NULL)
			abort();
		evbuffer_remove(trace, c->trace, n);
		c->trace[n] = '\0';
		evbuffer_free(trace);
	}
	return r;
}

static struct cmd *cmd_vbuild(struct imap_client *cl, imap_done_cb *cb, void *aux, const char *fmt,
                              va_list ap)
{
	struct cmd *c = cmd_new(cl);

	c->cb = cb;
	c->aux = aux;
	if (build(cl, c, 1, fmt, ap) < 0) {
		cmd_free(c);
		return NULL;
	}
	return c;
}

static struct cmd *cmd_build(struct imap_client *cl, imap_done_cb *cb, void *aux, const char *fmt,
                             ...)
{
	struct cmd *c;
	va_list ap;

	va_start(ap, fmt);
	c = cmd_vbuild(cl, cb, aux, fmt, ap);
	va_end(ap);
	return c;
}

int imap_client_vcmdf(struct imap_client *cl, imap_done_cb *cb, imap_untagged_cb *untagged,
                      imap_literal_cb *literal, void *aux, const char **error_r, const char *fmt,
                      va_list ap)
{
	struct cmd *c;

	if (cl->state != IMAP_CL_NOAUTH && cl->state != IMAP_CL_AUTHED) {
		*error_r = cl->state == IMAP_CL_FAILED ? "connection failed" : "not connected";
		return -1;
	}
	c = cmd_vbuild(cl, cb, aux, fmt, ap);
	if (c == NULL) {
		*error_r = "bad command format or argument";
		return -1;
	}
	c->untagged = untagged;
	c->literal = literal;
	cmd_queue(cl, c);
	return 0;
}

int imap_client_cmdf(struct imap_client *cl, imap_done_cb *cb, imap_untagged_cb *untagged,
                     imap_literal_cb *literal, void *aux, const char **error_r, const char *fmt,
                     ...)
{
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = imap_client_vcmdf(cl, cb, untagged, literal, aux, error_r, fmt, ap);
	va_end(ap);
	return r;
}

/* --- streamed literals --- */

int imap_client_stream_begin(struct imap_client *cl, imap_done_cb *cb, void *aux, uint64_t size,
                             const char **error_r, const char *fmt, ...)
{
	struct cmd *c;
	va_list ap;
	int r;

	if (cl->state != IMAP_CL_NOAUTH && cl->state != IMAP_CL_AUTHED) {
		*error_r = "not connected";
		return -1;
	}
	if (!imap_caps_has(&cl->caps, IMAP_CAP_LITERALPLUS)) {
		*error_r = "the server does not offer LITERAL+";
		return -1;
	}
	/* The literal's bytes go straight to the socket, so nothing may be
	 * waiting to be written before the command. */
	for (c = cl->cmds; c != NULL; c = c->next) {
		if (c->sent < c->nparts || c->streaming || c->sasl != NULL || c->holds) {
			*error_r = "commands are waiting to be sent";
			return -1;
		}
	}
	c = cmd_new(cl);
	c->cb = cb;
	c->aux = aux;
	va_start(ap, fmt);
	r = build(cl, c, 0, fmt, ap);
	va_end(ap);
	if (r < 0) {
		cmd_free(c);
		*error_r = "bad command format or argument";
		return -1;
	}
	evbuffer_add_printf(c->parts[c->nparts - 1], "{%llu+}\r\n", (unsigned long long)size);
	if (c->trace != NULL) {
		char *t = malloc(strlen(c->trace) + 32);

		if (t == NULL)
			abort();
		sprintf(t, "%s{%llu bytes}", c->trace, (unsigned long long)size);
		free(c->trace);
		c->trace = t;
	}
	c->streaming = 1;
	c->stream_left = size;
	cl->stream = c;
	cmd_queue(cl, c);
	return 0;
}

int imap_client_stream_write(struct imap_client *cl, const void *data, size_t len)
{
	struct cmd *c = cl->stream;

	if (c == NULL || cl->conn == NULL || len > c->stream_left)
		return -1;
	c->stream_left -= len;
	return cl_write(cl, data, len, 0);
}

int imap_client_stream_end(struct imap_client *cl)
{
	struct cmd *c = cl->stream;

	if (c == NULL || cl->conn == NULL)
		return -1;
	if (c->stream_left != 0) {
		/* A literal cannot be taken back: drop the connection so the
		 * server discards the unfinished command (no partial message). */
		cl->stream = NULL;
		client_fail(cl, "transfer to %s aborted with %llu bytes of a literal unsent",
		            imap_client_peer(cl), (unsigned long long)c->stream_left);
		return -1;
	}
	cl_write(cl, "\r\n", 2, 1);
	c->streaming = 0;
	cl->stream = NULL;
	flush(cl);
	return 0;
}

size_t imap_client_output_pending(const struct imap_client *cl)
{
	return cl->conn != NULL ? conn_output_pending(cl->conn) : 0;
}

static void on_conn_drained(struct conn *conn, void *aux)
{
	struct imap_client *cl = aux;

	(void)conn;
	if (cl->on_drained != NULL)
		cl->on_drained(cl, cl->drained_aux);
}

void imap_client_set_drained(struct imap_client *cl, size_t low, imap_drained_cb *cb, void *aux)
{
	cl->on_drained = cb;
	cl->drained_aux = aux;
	if (cl->conn != NULL)
		conn_set_watermarks(cl->conn, 0, low);
}

void imap_client_pause_read(struct imap_client *cl)
{
	if (cl->conn != NULL)
		conn_pause_read(cl->conn);
}

void imap_client_resume_read(struct imap_client *cl)
{
	if (cl->conn != NULL)
		conn_resume_read(cl->conn);
}

/* --- failure --- */

static void client_fail(struct imap_client *cl, const char *fmt, ...)
{
	struct imap_result res;
	struct cmd *c;
	va_list ap;
	char buf[512];

	if (cl->state == IMAP_CL_FAILED)
		return;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	cl->state = IMAP_CL_FAILED;
	cl->stream = NULL;
	free(cl->error);
	cl->error = xstrdup(buf);
	conn_free(&cl->conn);
	log_debug(LOG_CAT_IMAP, "[%s] failed: %s", cl->name, buf);

	memset(&res, 0, sizeof(res));
	res.status = IMAP_STATUS_NONE;
	res.text = cl->error;
	cl->busy++;
	if (cl->connect_cb != NULL) {
		imap_done_cb *cb = cl->connect_cb;

		cl->connect_cb = NULL;
		cb(cl, &res, cl->connect_aux);
	}
	while (!cl->freed && (c = cl->cmds) != NULL) {
		cl->cmds = c->next;
		if (cl->cmds == NULL)
			cl->cmds_tail = &cl->cmds;
		if (c->cb != NULL)
			c->cb(cl, &res, c->aux);
		cmd_free(c);
	}
	cl->in_flight = 0;
	client_leave(cl);
}

/* --- receiving --- */

static struct cmd *oldest_with(struct imap_client *cl, int literal)
{
	for (struct cmd *c = cl->cmds; c != NULL && c->sent > 0; c = c->next) {
		if (literal ? c->literal != NULL : c->untagged != NULL)
			return c;
	}
	return NULL;
}

/* Learns capabilities from msg (untagged CAPABILITY or a [CAPABILITY]
 * code), and keeps the AUTH= atoms as sent, for login errors that must
 * name what the server offers (struct imap_caps knows only our mechanisms). */
static void note_caps(struct imap_client *cl, const struct imap_msg *msg)
{
	const struct imap_arg *a;
	size_t used = 0;

	if (!imap_caps_from_msg(&cl->caps, msg))
		return;
	if (msg->kind == IMAP_MSG_UNTAGGED && msg->name != NULL &&
	    strcmp(msg->name, "CAPABILITY") == 0)
		a = msg->args;
	else
		a = msg->code_args;
	cl->auth_offered[0] = '\0';
	for (; a != NULL; a = a->next) {
		char buf[64];
		int n;

		if (a->type != IMAP_ARG_ATOM || strncasecmp(a->str, "AUTH=", 5) != 0)
			continue;
		log_sanitize(buf, sizeof(buf), a->str, a->len, 40);
		n = snprintf(cl->auth_offered + used, sizeof(cl->auth_offered) - used, "%s%s",
		             used > 0 ? " " : "", buf);
		if (n < 0 || (size_t)n >= sizeof(cl->auth_offered) - used)
			break; /* keep what fitted */
		used += (size_t)n;
	}
	cl->auth_offered[used] = '\0';
}

static void handle_untagged(struct imap_client *cl, const struct imap_msg *msg)
{
	struct cmd *c;

	note_caps(cl, msg);
	if (msg->status == IMAP_STATUS_BYE) {
		free(cl->bye);
		cl->bye = xstrdup(msg->text);
	}
	if (cl->state == IMAP_CL_CONNECTING && cl->step == STEP_GREETING) {
		if (msg->status == IMAP_STATUS_BYE) {
			client_fail(cl, "server %s refused the connection: %s",
			            imap_client_peer(cl), msg->text);
			return;
		}
		if (msg->status != IMAP_STATUS_OK && msg->status != IMAP_STATUS_PREAUTH) {
			client_fail(cl, "server %s sent no IMAP greeting", imap_client_peer(cl));
			return;
		}
		if (msg->status == IMAP_STATUS_PREAUTH)
			cl->state = IMAP_CL_AUTHED; /* still finishing the connect */
		cl->step = STEP_CAPS;
		connect_step(cl);
		return;
	}
	c = oldest_with(cl, 0);
	if (c != NULL)
		c->untagged(cl, msg, c->aux);
	else if (cl->opts.on_untagged != NULL)
		cl->opts.on_untagged(cl, msg, cl->opts.aux);
}

static void handle_tagged(struct imap_client *cl, const struct imap_msg *msg)
{
	struct cmd **cp, *c;
	struct imap_result res;

	for (cp = &cl->cmds; (c = *cp) != NULL && c->sent > 0; cp = &c->next) {
		if (strcmp(c->tag, msg->tag) == 0)
			break;
	}
	if (c == NULL || c->sent == 0) {
		log_msg(LOG_LVL_WARN, prefix(cl), "server sent a reply to unknown tag %s",
		        msg->tag);
		return;
	}
	*cp = c->next;
	if (*cp == NULL)
		cl->cmds_tail = cp;
	cl->in_flight--;
	if (cl->stream == c)
		cl->stream = NULL; /* answered before its literal was complete */
	note_caps(cl, msg);
	memset(&res, 0, sizeof(res));
	res.status = msg->status;
	res.code = msg->code;
	res.text = msg->text;
	res.msg = msg;
	if (c->cb != NULL)
		c->cb(cl, &res, c->aux);
	cmd_free(c);
	if (!cl->freed && cl->state != IMAP_CL_FAILED) {
		flush(cl);
		update_timeouts(cl);
	}
}

/* One "+ <base64>" challenge of an AUTHENTICATE in flight: the mechanism
 * answers it, or we cancel with "*" (RFC 3501 6.2.2) and the server ends
 * the command with a tagged BAD/NO. */
static void sasl_answer(struct imap_client *cl, struct cmd *c, const struct imap_msg *msg)
{
	const char *resp;

	if (imap_sasl_step(c->sasl, msg->text, msg->text_len, &resp) < 0) {
		if (log_debug_enabled(LOG_CAT_IMAP))
			log_msg(LOG_LVL_DEBUG, prefix(cl), "C: * (SASL exchange %s)",
			        imap_sasl_error(c->sasl));
		cl_write(cl, "*\r\n", 3, 1);
		return;
	}
	if (log_debug_enabled(LOG_CAT_IMAP))
		log_msg(LOG_LVL_DEBUG, prefix(cl), "C: %s",
		        resp[0] != '\0' ? "(SASL response) MASKED" : "(empty SASL response)");
	cl_write(cl, resp, strlen(resp), 0);
	cl_write(cl, "\r\n", 2, 1);
}

static void handle_continuation(struct imap_client *cl, const struct imap_msg *msg)
{
	struct cmd *c;

	for (c = cl->cmds; c != NULL && c->sent > 0; c = c->next) {
		if (c->waiting_cont) {
			c->waiting_cont = 0;
			flush(cl);
			return;
		}
		if (c->sasl != NULL && c->sent == c->nparts) {
			sasl_answer(cl, c, msg);
			return;
		}
	}
	/* A "+" nobody waits for: cancel whatever the server thinks it is. */
	cl_write(cl, "*\r\n", 3, 1);
}

static void trace_in(struct imap_client *cl, const char *data, size_t len)
{
	char buf[400];

	while (len > 0 && (data[len - 1] == '\n' || data[len - 1] == '\r'))
		len--;
	log_msg(LOG_LVL_DEBUG, prefix(cl), "S: %s", log_sanitize(buf, sizeof(buf), data, len, 300));
}

/* The buffer the parser reads: the connection's input, or with COMPRESS
 * on, what was inflated from it (at most about ZIN_STEP at a time, so a
 * small compressed input cannot fill memory). NULL when nothing is left. */
#define ZIN_STEP (64u << 10)
static struct evbuffer *parse_source(struct imap_client *cl, struct evbuffer *input)
{
	const char *error;

	if (cl->zr == NULL)
		return evbuffer_get_length(input) > 0 ? input : NULL;
	if (evbuffer_get_length(cl->zin) == 0 &&
	    zlayer_inflate(cl->zr, input, cl->zin, ZIN_STEP, &error) < 0) {
		client_fail(cl, "reading from %s: COMPRESS=DEFLATE: %s", imap_client_peer(cl),
		            error);
		return NULL;
	}
	return evbuffer_get_length(cl->zin) > 0 ? cl->zin : NULL;
}

/* Feeds the input to the parser; stops early when the client is freed,
 * failed, or STARTTLS must take over the socket. */
static void on_read(struct conn *conn, struct evbuffer *conn_in, void *aux)
{
	struct imap_client *cl = aux;

	(void)conn;
	cl->busy++;
	while (!cl->freed && cl->state != IMAP_CL_FAILED && cl->conn != NULL &&
	       !(cl->step == STEP_STARTTLS && cl->parser == NULL)) {
		struct evbuffer *input = parse_source(cl, conn_in);
		size_t n = input != NULL ? evbuffer_get_contiguous_space(input) : 0, used = 0;
		const char *data;
		struct imap_event ev;
		struct cmd *c;

		if (n == 0)
			break;
		data = (const char *)evbuffer_pullup(input, (ev_ssize_t)n);
		imap_parser_next(cl->parser, data, n, &used, &ev);
		if (log_debug_enabled(LOG_CAT_IMAP) && ev.type != IMAP_EV_LITERAL_DATA &&
		    ev.type != IMAP_EV_LITERAL_END && used > 0)
			trace_in(cl, data, used);
		/* LITERAL_DATA points into the buffer: drain it after the
		 * handler (the input stays valid even if the handler frees
		 * the connection: conn_free() defers). Everything else is
		 * drained first, because a handler may start STARTTLS, which
		 * replaces the buffers. */
		if (ev.type != IMAP_EV_LITERAL_DATA)
			evbuffer_drain(input, used);
		switch (ev.type) {
		case IMAP_EV_NEED_MORE:
			break;
		case IMAP_EV_MESSAGE:
			if (ev.msg->kind == IMAP_MSG_UNTAGGED)
				handle_untagged(cl, ev.msg);
			else if (ev.msg->kind == IMAP_MSG_TAGGED)
				handle_tagged(cl, ev.msg);
			else if (ev.msg->kind == IMAP_MSG_CONTINUATION)
				handle_continuation(cl, ev.msg);
			break;
		case IMAP_EV_LITERAL_START:
			if (ev.lit_inline)
				break;
			/* fall through */
		case IMAP_EV_LITERAL_DATA:
		case IMAP_EV_LITERAL_END:
			c = oldest_with(cl, 1);
			if (c != NULL)
				c->literal(cl, &ev, c->aux);
			break;
		case IMAP_EV_ERROR:
			if (cl->state == IMAP_CL_CONNECTING && cl->step == STEP_GREETING) {
				/* the first line must be "* OK|PREAUTH|BYE": this is
				 * not an IMAP server (HTTP, SMTP, a TLS port...) */
				char line[120];

				log_sanitize(line, sizeof(line), data, used, 80);
				client_fail(cl, "server %s sent no IMAP greeting (%s): %s",
				            imap_client_peer(cl), ev.error, line);
			} else if (!ev.resync) {
				client_fail(cl, "unparsable reply from %s: %s",
				            imap_client_peer(cl), ev.error);
			} else {
				log_msg(LOG_LVL_WARN, prefix(cl), "skipped a malformed reply: %s",
				        ev.error);
			}
			break;
		default:
			break;
		}
		if (ev.type == IMAP_EV_LITERAL_DATA)
			evbuffer_drain(input, used);
	}
	client_leave(cl);
}

static void on_event(struct conn *conn, enum conn_event ev, const char *error, void *aux)
{
	struct imap_client *cl = aux;

	(void)conn;
	cl->busy++;
	switch (ev) {
	case CONN_EV_CONNECTED:
		cl->tls_active = conn_is_tls(cl->conn);
		log_debug(LOG_CAT_IMAP, "[%s] connected to %s%s", cl->name, imap_client_peer(cl),
		          cl->tls_active ? " (TLS)" : "");
		break;
	case CONN_EV_TLS_UPGRADED:
		cl->tls_active = 1;
		cl->parser = imap_parser_new(IMAP_PARSE_SERVER, &cl->limits);
		memset(&cl->caps, 0, sizeof(cl->caps)); /* RFC 3501 6.2.1: forget them */
		cl->auth_offered[0] = '\0';
		cl->step = STEP_CAPS;
		connect_step(cl);
		break;
	case CONN_EV_EOF:
		if (cl->state == IMAP_CL_LOGOUT && cl->cmds == NULL) {
			cl->state = IMAP_CL_FAILED;
			free(cl->error);
			cl->error = xstrdup("logged out");
			conn_free(&cl->conn);
		} else if (cl->bye != NULL) {
			client_fail(cl, "server %s closed the connection: %s", imap_client_peer(cl),
			            cl->bye);
		} else {
			client_fail(cl, "server %s closed the connection unexpectedly",
			            imap_client_peer(cl));
		}
		break;
	case CONN_EV_ERROR:
	case CONN_EV_TIMEOUT:
		client_fail(cl, "%s", error != NULL ? error : "connection error");
		break;
	default:
		break;
	}
	client_leave(cl);
}

/* --- connect and login --- */

static void connected_done(struct imap_client *cl)
{
	struct imap_result res;
	imap_done_cb *cb = cl->connect_cb;

	cl->step = STEP_DONE;
	if (cl->state == IMAP_CL_CONNECTING)
		cl->state = IMAP_CL_NOAUTH;
	cl->connect_cb = NULL;
	memset(&res, 0, sizeof(res));
	res.status = IMAP_STATUS_OK;
	res.text = "connected";
	if (cb != NULL)
		cb(cl, &res, cl->connect_aux);
}

static void caps_done(struct imap_client *cl, const struct imap_result *res, void *aux)
{
	(void)aux;
	if (res->status == IMAP_STATUS_NONE)
		return;
	if (res->status != IMAP_STATUS_OK) {
		client_fail(cl, "CAPABILITY failed on %s: %s", imap_client_peer(cl), res->text);
		return;
	}
	cl->caps.valid = 1;
	connect_step(cl);
}

static void starttls_done(struct imap_client *cl, const struct imap_result *res, void *aux)
{
	const char *error;

	(void)aux;
	if (res->status == IMAP_STATUS_NONE)
		return;
	if (res->status != IMAP_STATUS_OK) {
		client_fail(cl, "STARTTLS refused by %s: %s", imap_client_peer(cl), res->text);
		return;
	}
	/* Stop parsing here: what follows is TLS. Anything the server sent
	 * in plaintext after its OK is dropped by conn_starttls(). */
	imap_parser_free(&cl->parser);
	if (conn_starttls(cl->conn, &error) < 0)
		client_fail(cl, "STARTTLS with %s failed: %s", imap_client_peer(cl), error);
}

/* Runs the next connect step; written so it can be re-entered after each
 * internal command or event. */
static void connect_step(struct imap_client *cl)
{
	struct cmd *c;

	if (cl->step == STEP_CAPS && !cl->caps.valid) {
		c = cmd_build(cl, caps_done, NULL, "CAPABILITY");
		cmd_queue(cl, c);
		cl->caps.valid = 1; /* the reply fills them */
		return;
	}
	if (cl->step == STEP_CAPS && !cl->tls_active &&
	    (cl->opts.security == IMAP_SEC_STARTTLS ||
	     cl->opts.security == IMAP_SEC_STARTTLS_IF_OFFERED)) {
		if (imap_caps_has(&cl->caps, IMAP_CAP_STARTTLS) && cl->state != IMAP_CL_AUTHED) {
			cl->step = STEP_STARTTLS;
			cmd_queue(cl, cmd_build(cl, starttls_done, NULL, "STARTTLS"));
			return;
		}
		if (cl->opts.security == IMAP_SEC_STARTTLS) {
			client_fail(cl, "server %s does not offer STARTTLS", imap_client_peer(cl));
			return;
		}
	}
	connected_done(cl);
}

void imap_client_connect(struct imap_client *cl, imap_done_cb *cb, void *aux)
{
	struct conn_opts co;
	const char *error;

	cl->connect_cb = cb;
	cl->connect_aux = aux;
	conn_opts_init(&co);
	co.host = cl->host;
	co.port = cl->opts.port;
	co.mode = cl->opts.security == IMAP_SEC_TLS ? CONN_TLS : CONN_PLAIN;
	co.tls = cl->opts.tls;
	if (cl->opts.connect_timeout_ms != 0)
		co.connect_timeout_ms = cl->opts.connect_timeout_ms;
	co.read_timeout_ms = cl->opts.timeout_ms;
	co.keepalive = cl->opts.keepalive;
	co.family = cl->opts.family;
	co.on_read = on_read;
	co.on_event = on_event;
	co.on_drained = on_conn_drained;
	/* Bounded memory: stop reading the socket while this much input
	 * waits to be parsed (a 50 MB body must not be pulled in whole). */
	co.read_high = 256u << 10;
	co.aux = cl;
	cl->state = IMAP_CL_CONNECTING;
	cl->step = STEP_GREETING;
	cl->parser = imap_parser_new(IMAP_PARSE_SERVER, &cl->limits);
	cl->conn = conn_new(cl->base, cl->dns, &co, &error);
	if (cl->conn == NULL || conn_connect(cl->conn, &error) < 0) {
		cl->busy++;
		client_fail(cl, "connect to %s:%u failed: %s", cl->host, cl->opts.port, error);
		client_leave(cl);
	}
}

static void login_caps_done(struct imap_client *cl, const struct imap_result *res, void *aux)
{
	struct imap_result ok;
	imap_done_cb *cb = cl->login_cb;

	(void)aux;
	cl->login_cb = NULL;
	if (res->status == IMAP_STATUS_NONE) {
		if (cb != NULL)
			cb(cl, res, cl->login_aux);
		return;
	}
	memset(&ok, 0, sizeof(ok));
	ok.status = IMAP_STATUS_OK;
	ok.text = "logged in";
	if (cb != NULL)
		cb(cl, &ok, cl->login_aux);
}

static void login_done(struct imap_client *cl, const struct imap_result *res, void *aux)
{
	struct imap_sasl *sasl = aux; /* the AUTHENTICATE's, or NULL; borrowed */
	imap_done_cb *cb = cl->login_cb;
	struct imap_result more;
	char text[768];

	if (res->status == IMAP_STATUS_OK) {
		cl->state = IMAP_CL_AUTHED;
		/* RFC 3501 6.2.3: capabilities may change after login. */
		if (res->code == NULL || strcmp(res->code, "CAPABILITY") != 0) {
			struct cmd *c = cmd_build(cl, login_caps_done, NULL, "CAPABILITY");

			/* keep login_cb: login_caps_done finishes, or the
			 * failure path below reports through it */
			c->untagged = NULL;
			cmd_queue(cl, c);
			return;
		}
	} else if (sasl != NULL && imap_sasl_error(sasl) != NULL) {
		/* the decoded OAuth error says more than "NO Invalid credentials" */
		snprintf(text, sizeof(text), "%s (%s)", res->text != NULL ? res->text : "",
		         imap_sasl_error(sasl));
		more = *res;
		more.text = text;
		res = &more;
	}
	cl->login_cb = NULL;
	if (cb != NULL)
		cb(cl, res, cl->login_aux);
}

/* A login that fails before anything is sent: cb runs now. */
static void login_fail_now(struct imap_client *cl, imap_done_cb *cb, void *aux, const char *fmt,
                           ...) __attribute__((format(printf, 4, 5)));

static void login_fail_now(struct imap_client *cl, imap_done_cb *cb, void *aux, const char *fmt,
                           ...)
{
	struct imap_result res;
	char text[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	memset(&res, 0, sizeof(res));
	res.status = IMAP_STATUS_NONE;
	res.text = text;
	cb(cl, &res, aux);
}

/* "AUTH=PLAIN AUTH=LOGIN and the LOGIN command", for errors. */
static const char *offered(const struct imap_client *cl, char *buf, size_t size)
{
	int login = !imap_caps_has(&cl->caps, IMAP_CAP_LOGINDISABLED);

	if (cl->auth_offered[0] == '\0')
		snprintf(buf, size, "%s",
		         login ? "only the LOGIN command"
		               : "no way to log in (LOGINDISABLED and no AUTH=)");
	else
		snprintf(buf, size, "%s%s", cl->auth_offered,
		         login ? " and the LOGIN command" : " (the LOGIN command is disabled)");
	return buf;
}

void imap_client_login_with(struct imap_client *cl, const struct imap_login_opts *o,
                            imap_done_cb *cb, void *aux)
{
	enum imap_login_mech m = o->mech;
	struct imap_sasl *sasl;
	const char *error, *ir;
	char buf[384];
	struct cmd *c;

	if (cl->state != IMAP_CL_NOAUTH) {
		login_fail_now(cl, cb, aux, "%s",
		               cl->state == IMAP_CL_AUTHED ? "already logged in" : "not connected");
		return;
	}
	if ((unsigned)m >= IMAP_LOGIN_MECH_COUNT) {
		login_fail_now(cl, cb, aux, "unknown authentication mechanism %d", (int)m);
		return;
	}
	if (m == IMAP_LOGIN_CMD) {
		if (o->authuser != NULL || o->initial != NULL) {
			login_fail_now(cl, cb, aux,
			               "the LOGIN command takes no authorization identity and no "
			               "initial response (use PLAIN)");
			return;
		}
		if (imap_caps_has(&cl->caps, IMAP_CAP_LOGINDISABLED)) {
			login_fail_now(cl, cb, aux,
			               "the server disabled LOGIN (LOGINDISABLED)%s; it offers %s",
			               cl->tls_active ? "" : ": use TLS",
			               offered(cl, buf, sizeof(buf)));
			return;
		}
		c = cmd_build(cl, login_done, NULL, "LOGIN %s %P", o->user != NULL ? o->user : "",
		              o->secret != NULL ? o->secret : "");
	} else {
		if (cl->caps.valid && (cl->caps.auth & (1u << imap_sasl_mech_cap(m))) == 0) {
			login_fail_now(
			        cl, cb, aux,
			        "server %s does not offer AUTHENTICATE %s (no AUTH=%s in its "
			        "CAPABILITY); it offers %s",
			        imap_client_peer(cl), imap_sasl_mech_name(m),
			        imap_sasl_mech_name(m), offered(cl, buf, sizeof(buf)));
			return;
		}
		sasl = imap_sasl_new(o, &error);
		if (sasl == NULL) {
			login_fail_now(cl, cb, aux, "%s: %s", imap_login_mech_names[m], error);
			return;
		}
		/* RFC 4959: the initial response on the command line, "=" when
		 * empty; without SASL-IR it goes at the first "+". */
		ir = imap_caps_has(&cl->caps, IMAP_CAP_SASL_IR) ? imap_sasl_initial(sasl) : NULL;
		if (ir != NULL)
			c = cmd_build(cl, login_done, sasl, "AUTHENTICATE %a %R",
			              imap_sasl_mech_name(m), ir[0] != '\0' ? ir : "=");
		else
			c = cmd_build(cl, login_done, sasl, "AUTHENTICATE %a",
			              imap_sasl_mech_name(m));
		if (c != NULL)
			c->sasl = sasl; /* the command owns it now */
		else
			imap_sasl_free(&sasl);
	}
	if (c == NULL) {
		login_fail_now(cl, cb, aux, "cannot encode the credentials");
		return;
	}
	cl->login_cb = cb;
	cl->login_aux = aux;
	cmd_queue(cl, c);
}

void imap_client_login(struct imap_client *cl, const char *user, const char *authuser,
                       const char *password, const char *mech, imap_done_cb *cb, void *aux)
{
	struct imap_login_opts o;
	int m = imap_login_mech_lookup(mech);

	if (m < 0) {
		char name[64], known[128];
		size_t used = 0;

		for (int i = 0; i < IMAP_LOGIN_MECH_COUNT; i++)
			used += (size_t)snprintf(known + used, sizeof(known) - used, "%s%s",
			                         i > 0 ? ", " : "", imap_login_mech_names[i]);
		login_fail_now(cl, cb, aux, "unknown authentication mechanism \"%s\" (known: %s)",
		               log_sanitize(name, sizeof(name), mech, strlen(mech), 40), known);
		return;
	}
	if (authuser != NULL && m == IMAP_LOGIN_CMD)
		m = IMAP_LOGIN_PLAIN; /* an admin login needs PLAIN's authzid */
	memset(&o, 0, sizeof(o));
	o.mech = (enum imap_login_mech)m;
	o.user = user;
	o.authuser = authuser;
	o.secret = password;
	imap_client_login_with(cl, &o, cb, aux);
}

void imap_client_logout(struct imap_client *cl, imap_done_cb *cb, void *aux)
{
	struct imap_result res;

	if (cl->state != IMAP_CL_NOAUTH && cl->state != IMAP_CL_AUTHED) {
		memset(&res, 0, sizeof(res));
		res.status = IMAP_STATUS_NONE;
		res.text = "not connected";
		if (cb != NULL)
			cb(cl, &res, aux);
		return;
	}
	cl->state = IMAP_CL_LOGOUT;
	cmd_queue(cl, cmd_build(cl, cb, aux, "LOGOUT"));
}

/* --- COMPRESS=DEFLATE (RFC 4978) --- */

static void compress_done(struct imap_client *cl, const struct imap_result *res, void *aux)
{
	imap_done_cb *cb = cl->compress_cb;
	void *cb_aux = cl->compress_aux;

	(void)aux;
	cl->compress_cb = NULL;
	cl->compress_sent = res->status == IMAP_STATUS_OK;
	if (res->status == IMAP_STATUS_OK) {
		const char *error;

		/* The server compresses from the byte after its OK line on;
		 * the input behind it is inflated from the next parse step,
		 * and the commands held back go out compressed. */
		cl->zw = zlayer_new(ZLAYER_DEFLATE, -1, &error);
		cl->zr = zlayer_new(ZLAYER_INFLATE, 0, &error);
		cl->zin = evbuffer_new();
		cl->zout = evbuffer_new();
		if (cl->zw == NULL || cl->zr == NULL || cl->zin == NULL || cl->zout == NULL)
			abort(); /* out of memory */
		log_debug(LOG_CAT_IMAP, "[%s] COMPRESS=DEFLATE on", cl->name);
	}
	if (cb != NULL)
		cb(cl, res, cb_aux);
}

void imap_client_compress(struct imap_client *cl, imap_done_cb *cb, void *aux)
{
	struct imap_result res;
	struct cmd *c;
	char text[160];

	memset(&res, 0, sizeof(res));
	res.status = IMAP_STATUS_NONE;
	res.text = text;
	if (cl->state != IMAP_CL_AUTHED) {
		snprintf(text, sizeof(text), "not logged in");
	} else if (cl->compress_sent) {
		snprintf(text, sizeof(text), "compression is already on");
	} else if (!imap_caps_has(&cl->caps, IMAP_CAP_COMPRESS_DEFLATE)) {
		snprintf(text, sizeof(text), "server %s does not offer COMPRESS=DEFLATE",
		         imap_client_peer(cl));
	} else {
		c = cmd_build(cl, compress_done, NULL, "COMPRESS DEFLATE");
		c->holds = 1;
		cl->compress_sent = 1;
		cl->compress_cb = cb;
		cl->compress_aux = aux;
		cmd_queue(cl, c);
		return;
	}
	if (cb != NULL)
		cb(cl, &res, aux);
}

int imap_client_is_compressed(const struct imap_client *cl)
{
	return cl->zw != NULL;
}

void imap_client_compress_counts(const struct imap_client *cl, uint64_t counts_r[4])
{
	memset(counts_r, 0, 4 * sizeof(counts_r[0]));
	if (cl->zw != NULL)
		zlayer_counts(cl->zw, &counts_r[0], &counts_r[1]);
	if (cl->zr != NULL)
		zlayer_counts(cl->zr, &counts_r[2], &counts_r[3]);
}

int imap_client_wait(struct imap_client *cl, const int *done)
{
	while (!*done) {
		if (event_base_loop(cl->base, EVLOOP_ONCE) != 0)
			return -1;
	}
	return 0;
}
