/*
 * client.h - an asynchronous IMAP client connection on conn.h + parse.h:
 * greeting, capabilities, STARTTLS, login (the LOGIN command, or
 * AUTHENTICATE with PLAIN, LOGIN, CRAM-MD5, XOAUTH2 or OAUTHBEARER), and
 * pipelined commands with tag bookkeeping.
 *
 * Commands are written as soon as they are queued (pipelining); only a
 * command that must wait for a "+" (a synchronising literal) or an
 * AUTHENTICATE (until its tagged reply: the lines after it would be read
 * as SASL responses) holds back the ones queued after it. When the server offers
 * LITERAL+ (or LITERAL- for small strings), literals never wait.
 *
 * Every command's callback fires exactly once: with the tagged OK/NO/BAD,
 * or with IMAP_STATUS_NONE and an error text when the connection failed
 * first. Untagged responses go to the oldest command still in flight that
 * has an untagged handler, else to the client's handler (servers answer
 * pipelined commands in order; RFC 3501 5.5 allows otherwise only for
 * commands that do not share state).
 *
 * Protocol traces (log category "imap") mask passwords, tokens and SASL
 * responses ("MASKED") and show literals as "{N bytes}".
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
	int family;       /* AF_INET or AF_INET6 only; 0 = both (conn_opts.family) */
	const char *name; /* log prefix, e.g. "host1"; copied */
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

/* --- login --- */

/* How imap_client_login_with() logs in. */
enum imap_login_mech {
	IMAP_LOGIN_CMD,         /* the LOGIN command (RFC 3501 6.2.3) */
	IMAP_LOGIN_PLAIN,       /* AUTHENTICATE PLAIN (RFC 4616) */
	IMAP_LOGIN_SASL_LOGIN,  /* AUTHENTICATE LOGIN: user, then password */
	IMAP_LOGIN_CRAM_MD5,    /* AUTHENTICATE CRAM-MD5 (RFC 2195) */
	IMAP_LOGIN_XOAUTH2,     /* AUTHENTICATE XOAUTH2 (Google, Microsoft) */
	IMAP_LOGIN_OAUTHBEARER, /* AUTHENTICATE OAUTHBEARER (RFC 7628) */
	IMAP_LOGIN_NTLM,        /* AUTHENTICATE NTLM (MS-NLMP, NTLMv2): sasl.h */
	IMAP_LOGIN_MECH_COUNT
};

/* "LOGIN", "PLAIN", "AUTH=LOGIN", "CRAM-MD5", "XOAUTH2", "OAUTHBEARER",
 * "NTLM": the names imap_login_mech_lookup() takes and logs should show. */
extern const char *const imap_login_mech_names[IMAP_LOGIN_MECH_COUNT];

/*
 * A mechanism by name, case-insensitively: NULL, "" and "LOGIN" are the
 * LOGIN command (as in imapsync's --authmech1 LOGIN); "AUTH=X" is
 * AUTHENTICATE X, so "AUTH=LOGIN" is the SASL LOGIN mechanism and
 * "AUTH=PLAIN" is "PLAIN". Returns an enum imap_login_mech, or -1.
 */
int imap_login_mech_lookup(const char *name);

/* What to log in with. All strings are borrowed for the call only
 * (imap_client_login_with() copies what it keeps). */
struct imap_login_opts {
	enum imap_login_mech mech;
	/* The mailbox owner: LOGIN/SASL user, PLAIN authzid when authuser is
	 * set, XOAUTH2 "user=", OAUTHBEARER "a=". NTLM: "DOMAIN\\user" names
	 * the user's domain (imapsync's --domain1; Windows account names
	 * cannot contain a backslash), a plain "user" none. */
	const char *user;
	/* PLAIN only: the authcid (admin or master user) who logs in for
	 * user (RFC 4616 authzid = user). NULL: user logs in as itself. */
	const char *authuser;
	/* The password; the OAuth 2.0 access token for XOAUTH2/OAUTHBEARER.
	 * May be NULL when initial is given. */
	const char *secret;
	/* A ready-made initial response, base64, sent as is instead of one
	 * built from user/secret (imapsync's --oauthdirect1). PLAIN, XOAUTH2
	 * or OAUTHBEARER only. NULL: build it. */
	const char *initial;
};

/*
 * Logs in with o->mech. AUTHENTICATE sends the initial response with the
 * command when the server offers SASL-IR (RFC 4959), else at the first
 * "+"; each further "+ <base64>" challenge is answered by the mechanism
 * (AUTH=LOGIN: user, then password; CRAM-MD5: "user SP hex(HMAC-MD5)").
 * XOAUTH2/OAUTHBEARER: a challenge after the initial response is the
 * server's JSON error; it is answered (empty line, or ^A for OAUTHBEARER,
 * RFC 7628 3.2.3) so that the tagged NO follows, and the decoded JSON is
 * appended to the NO text ("... (server error: {"status":"400",...})").
 * Capabilities are refreshed after success. cb fires exactly once: OK; the
 * server's NO/BAD ("[AUTHENTICATIONFAILED] Authentication failed."); or,
 * before anything is sent (cb runs inside this call), status NONE with:
 * "unknown authentication mechanism", a mechanism the server does not
 * list as AUTH=... ("server H:P does not offer XOAUTH2 (no AUTH=XOAUTH2
 * in its CAPABILITY); it offers AUTH=PLAIN AUTH=LOGIN and the LOGIN
 * command"), LOGIN under LOGINDISABLED, or bad options (authuser with a
 * mechanism other than PLAIN, initial with one where the server speaks
 * first, an initial response that is not base64, ^A in an OAuth user or
 * token). Secrets never reach traces or error texts.
 */
void imap_client_login_with(struct imap_client *cl, const struct imap_login_opts *o,
                            imap_done_cb *cb, void *aux);

/*
 * imap_client_login_with() by mechanism name (imap_login_mech_lookup();
 * an unknown name fails at once with status NONE). authuser set with no
 * mechanism or "LOGIN" means PLAIN with authzid = user, authcid = authuser
 * (admin/master-user login, RFC 4616). password is the secret (the
 * access token for XOAUTH2/OAUTHBEARER).
 */
void imap_client_login(struct imap_client *cl, const char *user, const char *authuser,
                       const char *password, const char *mech, imap_done_cb *cb, void *aux);

/*
 * --- SASL client steps ---
 * Pure (no I/O, no client): the mechanism side of an AUTHENTICATE, used by
 * imap_client_login_with() and exported for tests. (In client.c because
 * the login is its only user.)
 */
struct imap_sasl;

/* An exchange for o->mech (not IMAP_LOGIN_CMD); copies o's strings.
 * Returns NULL with *error_r (static) on bad options, as listed for
 * imap_client_login_with(). Free with imap_sasl_free(). */
struct imap_sasl *imap_sasl_new(const struct imap_login_opts *o, const char **error_r);
/* Wipes the secrets and frees. Accepts NULL, sets *s = NULL. */
void imap_sasl_free(struct imap_sasl **s);

/* The initial response (base64, "" when empty) for SASL-IR, and marks it
 * sent; NULL for mechanisms where the server speaks first (AUTH=LOGIN,
 * CRAM-MD5). Borrowed until the next call on s. */
const char *imap_sasl_initial(struct imap_sasl *s);

/*
 * Answers one server challenge (the base64 text after "+ ", len bytes,
 * not NUL-terminated). Returns 0 with *resp_r = the response line without
 * CRLF (base64, possibly ""), borrowed until the next call on s; or -1:
 * the exchange must be cancelled with "*" (RFC 3501 6.2.2), and
 * imap_sasl_error() says why. The first challenge of a client-first
 * mechanism whose initial response was not sent yet gets that response.
 */
int imap_sasl_step(struct imap_sasl *s, const char *challenge, size_t len, const char **resp_r);

/* NULL, or what went wrong, to be appended to the server's NO text:
 * "server error: <decoded JSON, sanitised>" after an XOAUTH2/OAUTHBEARER
 * error challenge, or why we cancelled. Borrowed until s is freed. */
const char *imap_sasl_error(const struct imap_sasl *s);
/* A SASL mechanism's AUTHENTICATE name ("CRAM-MD5") and its enum imap_auth_mech
 * (the AUTH= capability that offers it); m must not be IMAP_LOGIN_CMD. */
const char *imap_sasl_mech_name(enum imap_login_mech m);
int imap_sasl_mech_cap(enum imap_login_mech m);

/*
 * Queues a command. fmt is the command after the tag; conversions:
 *   %a  raw atom text (const char *), written as is
 *   %s  astring (const char *): atom, quoted or literal as needed
 *   %S  astring with explicit length (const char *, size_t)
 *   %m  mailbox name (const char *): INBOX canonical, else astring
 *   %P  like %s but a secret: "MASKED" in traces
 *   %R  raw text that is a secret (const char *): written as is, "MASKED"
 *       in traces (SASL initial responses)
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

/*
 * COMPRESS=DEFLATE (RFC 4978): sends "COMPRESS DEFLATE"; on the tagged OK
 * everything after it is compressed both ways (zlayer.h), transparently
 * to the caller (traces show the plain text). Commands queued after it
 * wait for its reply. cb fires once: OK (compression on); the server's
 * NO/BAD (e.g. "[COMPRESSIONACTIVE]"; the connection goes on uncompressed);
 * status NONE if the connection failed; or, inside this call with nothing
 * sent, status NONE with "not logged in", "compression is already on" or
 * "server H:P does not offer COMPRESS=DEFLATE".
 */
void imap_client_compress(struct imap_client *cl, imap_done_cb *cb, void *aux);
/* Nonzero once COMPRESS=DEFLATE is on. */
int imap_client_is_compressed(const struct imap_client *cl);
/* With compression on: bytes written before and after deflating, bytes
 * read before and after inflating (counts_r[0..3]); all 0 otherwise. */
void imap_client_compress_counts(const struct imap_client *cl, uint64_t counts_r[4]);

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
/* The TLS protocol ("TLSv1.3") and cipher of the connection; NULL without
 * TLS or a connection. Static strings. */
const char *imap_client_tls_version(const struct imap_client *cl);
const char *imap_client_tls_cipher(const struct imap_client *cl);
/* Nonzero when the TLS session was resumed (conn_tls_resumed()). */
int imap_client_tls_resumed(const struct imap_client *cl);

/*
 * Runs the event loop until *done becomes nonzero or the client fails.
 * For synchronous callers (CLI, tests). Returns 0 when *done was set,
 * -1 when the loop ran out of events first.
 */
int imap_client_wait(struct imap_client *cl, const int *done);

#endif
