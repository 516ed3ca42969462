/*
 * session.h - one proxied client connection (private to proxy/).
 *
 * States: PREAUTH (the proxy answers the client itself) -> LOGIN (route
 * lookup, upstream connect and login with the client's credentials; the
 * client is not read) -> RELAY (bytes forwarded both ways, parsed on the
 * side) -> CLOSING (flushing the last output; freed from a timer, never
 * inside its own callbacks). A failed upstream login goes back to PREAUTH.
 */
#ifndef PROXY_SESSION_H
#define PROXY_SESSION_H

#include <stddef.h>
#include <stdint.h>

#include <imapferry/parse.h>
#include <imapferry/resp.h>

#include "proxy.h"

struct conn;
struct evbuffer;
struct px_observe;
struct px_route_req;

enum px_state { PX_ST_PREAUTH, PX_ST_LOGIN, PX_ST_RELAY, PX_ST_CLOSING, PX_ST_COUNT };

extern const char *const px_state_names[PX_ST_COUNT];

/* How the client authenticated to us (decides how we log in upstream). */
enum px_auth {
	PX_AUTH_NONE,
	PX_AUTH_LOGIN,       /* LOGIN command or SASL LOGIN/PLAIN: user + password */
	PX_AUTH_PLAIN_AUTHZ, /* AUTHENTICATE PLAIN with an authzid != authcid */
	PX_AUTH_XOAUTH2,     /* pass the initial response through */
	PX_AUTH_OAUTHBEARER,
	PX_AUTH_COUNT
};

/* What the pre-auth phase waits for from the client. */
enum px_pre_wait {
	PX_PRE_CMD,        /* a command */
	PX_PRE_SASL_PLAIN, /* the PLAIN response line */
	PX_PRE_SASL_USER,  /* AUTH=LOGIN: user name */
	PX_PRE_SASL_PASS,  /* AUTH=LOGIN: password */
	PX_PRE_SASL_OAUTH, /* XOAUTH2/OAUTHBEARER initial response */
	PX_PRE_UP_SASL,    /* a reply to an upstream challenge, passed through */
};

struct px_session {
	struct px_server *srv;
	struct px_session *next, *prev;
	uint64_t id;
	enum px_state state;
	char prefix[160]; /* "c=N u=user" */

	struct conn *client;
	struct conn *up;
	struct imap_parser *cp; /* client commands */
	struct imap_parser *sp; /* upstream responses */
	struct evbuffer *chold; /* client bytes parsed, not yet forwarded */
	struct evbuffer *shold; /* upstream bytes parsed, not yet forwarded */
	int client_tls;
	int client_eof; /* the client shut its write side */
	int client_paused, up_paused;
	unsigned bad_cmds;

	/* pre-auth / login */
	enum px_pre_wait pre_wait;
	enum px_auth auth;
	char *tag;     /* the client's LOGIN/AUTHENTICATE tag */
	char *user;    /* mailbox owner (routing, marks, log prefix) */
	char *authcid; /* PLAIN authcid when != user */
	char *secret;  /* password or base64 initial response; wiped */
	struct px_route_req *route;
	const char *up_host; /* borrowed from srv */
	uint16_t up_port;
	int up_step; /* upstream.c state */
	struct imap_caps up_caps;
	char *up_caps_raw;           /* post-login capability list (unfiltered), or NULL */
	struct evbuffer *up_pending; /* login command parts after a "+" */
	struct event *timer;         /* login timeout / close linger / idle BYE */

	/* relay */
	struct px_observe *obs;
	unsigned inflight; /* tagged commands forwarded, not answered */
	char *sync_tag;    /* command waiting for "+" for its literal */
	char *idle_tag;    /* IDLE in progress: the client parser is raw */
	int chold_flushed; /* part of the current client message went out */
	int shold_flushed; /* part of the current server message went out */
	/* During px_relay_*_read only (0 otherwise): bytes at the front of
	 * the input that the parser has read (pos) and, of those, the ones
	 * ready to go out (ready, with all of the hold before them when
	 * ready_hold is set). They move out once per read, not per message. */
	size_t cpos, cready, spos, sready;
	int cready_hold, sready_hold;
	int bye_on_idle; /* shutting down: BYE when nothing is in flight */
	int up_bye;      /* the upstream sent its BYE */
	uint64_t close_deadline;
	uint64_t close_progress; /* when the client's output last moved */
	size_t close_pending;

	/* cutover (routes.c) */
	int rt_held;          /* login held: the user's route is FREEZE */
	int rt_drain;         /* closing at the next command boundary (route change) */
	int rt_done_sent;     /* an IDLE was ended upstream by us */
	uint64_t rt_deadline; /* end of the hold, or of the drain */
};

/* --- session.c --- */
void px_session_log(struct px_session *s, enum log_level lvl, const char *fmt, ...)
        LOG_PRINTF(3, 4);
/* Queues text for the client (no-op after the client went away). */
void px_session_reply(struct px_session *s, const char *fmt, ...) LOG_PRINTF(2, 3);
/* Closes after flushing what is queued for the client (bounded by
 * PX_CLOSE_GRACE_MS); why is logged at info level. Safe from callbacks. */
void px_session_close(struct px_session *s, const char *why);
/* The upstream login finished: ok = logged in (switch to relay); else the
 * client got its answer and the session goes back to PREAUTH. */
void px_session_login_done(struct px_session *s, int ok);
void px_session_set_user(struct px_session *s, const char *user);
void px_session_wipe_secret(struct px_session *s);

/* --- upstream.c --- */
/* Route, connect, log in. Ends with px_session_login_done(). */
void px_upstream_start(struct px_session *s);
/* A line from the client during an upstream SASL exchange. */
void px_upstream_client_line(struct px_session *s, const char *line, size_t len);
/* Capabilities of cap_list (space-separated) without the ones that would
 * blind the proxy or make no sense after login; writes into out (NUL
 * terminated) and returns the number of tokens dropped. */
unsigned px_caps_filter(const char *cap_list, size_t len, char *out, size_t outsize);

/* --- relay.c --- */
/* Starts relaying (after the tagged OK was queued for the client). */
void px_relay_start(struct px_session *s);
void px_relay_client_read(struct px_session *s, struct evbuffer *in);
void px_relay_up_read(struct px_session *s, struct evbuffer *in);
void px_relay_client_eof(struct px_session *s);
void px_relay_up_gone(struct px_session *s, const char *why);
void px_relay_drained(struct px_session *s, int to_client);

#endif
