/*
 * client.h - an asynchronous IMAP client connection on conn.h + parse.h:
 * greeting, capabilities, STARTTLS, login (LOGIN, AUTHENTICATE PLAIN with
 * an optional authorization identity for admin/master logins), and
 * pipelined commands with tag bookkeeping.
 *
 * Commands are written as soon as they are queued (pipelining); only a
 * command that must wait for a "+" (a synchronising literal, or a SASL
 * exchange) holds back the ones queued after it. When the server offers
 * LITERAL+ (or LITERAL- for small strings), literals never wait.
 *
 * Every command's callback fires exactly once: with the tagged OK/NO/BAD,
 * or with IMAP_STATUS_NONE and an error text when the connection failed
 * first. Untagged responses go to the oldest command still in flight that
 * has an untagged handler, else to the client's handler (servers answer
 * pipelined commands in order; RFC 3501 5.5 allows otherwise only for
 * commands that do not share state).
 *
 * Protocol traces (log category "imap") mask passwords and SASL data and
 * show literals as "{N bytes}".
 */
#ifndef IMAPFERRY_CLIENT_H
#define IMAPFERRY_CLIENT_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "imapferry/parse.h"
#include "imapferry/resp.h"

struct event_base;
struct evdns_base;
struct evbuffer;
struct tls_client_ctx;
struct imap_client;

enum imap_client_security {
	IMAP_SEC_PLAIN,               /* never TLS */
	IMAP_SEC_STARTTLS_IF_OFFERED, /* STARTTLS when the server offers it */
	IMAP_SEC_STARTTLS,            /* STARTTLS required */
	IMAP_SEC_TLS,                 /* implicit TLS (port 993) */
	IMAP_SEC_COUNT
};

enum imap_client_state {
	IMAP_CL_NEW,
	IMAP_CL_CONNECTING, /* TCP/TLS, greeting, STARTTLS, capabilities */
	IMAP_CL_NOAUTH,     /* connected, not logged in */
	IMAP_CL_AUTHED,     /* logged in (or PREAUTH) */
	IMAP_CL_LOGOUT,     /* LOGOUT sent */
	IMAP_CL_FAILED,     /* connection lost: imap_client_error() says why */
	IMAP_CL_STATE_COUNT
};

extern const char *const imap_client_state_names[IMAP_CL_STATE_COUNT];

/* The outcome of a command. All pointers are borrowed, valid during the
 * callback only. */
struct imap_result {
	enum imap_status status;    /* OK, NO, BAD; NONE = the connection failed */
	const char *code;           /* response code atom or NULL */
	const char *text;           /* resp-text, or the connection error */
	const struct imap_msg *msg; /* the tagged response (NULL on failure) */
};

typedef void imap_done_cb(struct imap_client *cl, const struct imap_result *res, void *aux);
typedef void imap_untagged_cb(struct imap_client *cl, const struct imap_msg *msg, void *aux);
/* LITERAL_START/DATA/END events of streamed (large) literals. */
typedef void imap_literal_cb(struct imap_client *cl, const struct imap_event *ev, void *aux);

struct imap_client_opts {
	const char *host; /* copied */
	uint16_t port;
	enum imap_client_security security;
	struct tls_client_ctx *tls;  /* borrowed; required for TLS/STARTTLS */
	unsigned connect_timeout_ms; /* 0 = 30 s */
	unsigned timeout_ms;         /* no answer for that long = failure; 0 = none */
	int keepalive;
	const char *name;                 /* log prefix, e.g. "host1"; copied */
	const struct imap_limits *limits; /* NULL = defaults; copied */
	imap_untagged_cb *on_untagged;    /* responses no command claims; may be NULL */
	void *aux;
};

/* A new client (not connected). base/dns borrowed. Returns NULL with
 * *error_r (static) on bad options. Free with imap_client_free(). */
struct imap_client *imap_client_new(struct event_base *base, struct evdns_base *dns,
                                    const struct imap_client_opts *opts, const char **error_r);
/* Safe inside any callback of this client; pending commands are NOT called
 * back. Accepts NULL, sets *cl = NULL. */
void imap_client_free(struct imap_client **cl);

/*
 * Connects, reads the greeting, negotiates STARTTLS as opts say and learns
 * the capabilities. cb fires once: OK when ready (state NOAUTH or AUTHED
 * after PREAUTH), else status NONE with the error, e.g.
 * "connect to 127.0.0.1:1 failed: Connection refused",
 * "server 127.0.0.1:143 does not offer STARTTLS",
 * "server refused the connection: * BYE Too many connections".
 */
void imap_client_connect(struct imap_client *cl, imap_done_cb *cb, void *aux);

/*
 * Logs in. authuser NULL: LOGIN user password (or AUTHENTICATE PLAIN when
 * mech is "PLAIN"); authuser set: AUTHENTICATE PLAIN with authzid = user,
 * authcid = authuser (admin/master-user login, RFC 4616). Capabilities are
 * refreshed after success. cb gets the server's NO text on failure
 * ("[AUTHENTICATIONFAILED] Authentication failed.").
 */
void imap_client_login(struct imap_client *cl, const char *user, const char *authuser,
                       const char *password, const char *mech, imap_done_cb *cb, void *aux);

/*
 * Queues a command. fmt is the command after the tag; conversions:
 *   %a  raw atom text (const char *), written as is
 *   %s  astring (const char *): atom, quoted or literal as needed
 *   %S  astring with explicit length (const char *, size_t)
 *   %m  mailbox name (const char *): INBOX canonical, else astring
 *   %P  like %s but a secret: "MASKED" in traces
 *   %u  unsigned, %U uint64_t, %d int
 *   %L  a message literal (struct evbuffer *, moved out, may be large):
 *       {N+} with LITERAL+, else {N} and wait for "+"
 *   %%  a percent sign
 * untagged/literal handlers (may be NULL) see the responses while this
 * command is the oldest in flight with a handler. Returns 0, or -1 with
 * *error_r (static) when the client is not connected or fmt is bad (then
 * cb is not called).
 */
int imap_client_cmdf(struct imap_client *cl, imap_done_cb *cb, imap_untagged_cb *untagged,
                     imap_literal_cb *literal, void *aux, const char **error_r, const char *fmt,
                     ...);

/* imap_client_cmdf() with a va_list. */
int imap_client_vcmdf(struct imap_client *cl, imap_done_cb *cb, imap_untagged_cb *untagged,
                      imap_literal_cb *literal, void *aux, const char **error_r, const char *fmt,
                      va_list ap);

/*
 * A command ending in a literal whose size is known but whose bytes come
 * later (a message streamed from another server): writes fmt (as
 * imap_client_cmdf(), without its final CRLF) and "{size+}", then the
 * caller writes exactly size bytes with imap_client_stream_write() and
 * finishes with imap_client_stream_end(). Needs LITERAL+ and nothing
 * queued before it (else -1 with *error_r: fall back to imap_client_cmdf()
 * with %L). Until the end, later commands wait. cb fires once, as for
 * imap_client_cmdf(). Ending with bytes missing drops the connection, so
 * the server never stores a partial message.
 */
int imap_client_stream_begin(struct imap_client *cl, imap_done_cb *cb, void *aux, uint64_t size,
                             const char **error_r, const char *fmt, ...);
int imap_client_stream_write(struct imap_client *cl, const void *data, size_t len);
int imap_client_stream_end(struct imap_client *cl);

/* Flow control for streaming between two connections: bytes queued for the
 * peer; a callback when that falls to low or below; pausing our reads. */
typedef void imap_drained_cb(struct imap_client *cl, void *aux);
size_t imap_client_output_pending(const struct imap_client *cl);
void imap_client_set_drained(struct imap_client *cl, size_t low, imap_drained_cb *cb, void *aux);
void imap_client_pause_read(struct imap_client *cl);
void imap_client_resume_read(struct imap_client *cl);

/* Sends LOGOUT; cb gets its tagged reply. No commands may follow. */
void imap_client_logout(struct imap_client *cl, imap_done_cb *cb, void *aux);

enum imap_client_state imap_client_state(const struct imap_client *cl);
/* Server capabilities as last seen. */
const struct imap_caps *imap_client_caps(const struct imap_client *cl);
/* Why the client failed (valid until freed), or NULL. */
const char *imap_client_error(const struct imap_client *cl);
/* "host:port" */
const char *imap_client_peer(const struct imap_client *cl);
/* Commands sent but not completed. */
unsigned imap_client_in_flight(const struct imap_client *cl);
/* Nonzero when TLS is in use (implicit or after STARTTLS). */
int imap_client_is_tls(const struct imap_client *cl);

/*
 * Runs the event loop until *done becomes nonzero or the client fails.
 * For synchronous callers (CLI, tests). Returns 0 when *done was set,
 * -1 when the loop ran out of events first.
 */
int imap_client_wait(struct imap_client *cl, const int *done);

#endif
