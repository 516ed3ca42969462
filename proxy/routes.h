/*
 * routes.h - the proxy's side of a per-user cutover (private to
 * imapferry-proxy). Design: ../shared/docs/replication-design.md section 7.
 *
 * The route of a user lives in rep:route:<user> (rkeys.h: state SRC, FREEZE
 * or DST, and an epoch bumped on every change); imapferryctl publishes
 * "route <user> <epoch>" on rep:ctl after each change. This module:
 *
 *   - subscribes to rep:ctl on a hiredis async connection of its own (a
 *     subscribed connection can send nothing else) and re-reads the route of
 *     every user named there (the message only says "look again": pub/sub is
 *     lossy, so the stored route is the truth);
 *   - at every login, reads the user's route before the upstream login
 *     starts: in FREEZE the login is held (no reply to the client) until the
 *     route changes (re-read every PX_ROUTES_REREAD_MS and at every rep:ctl
 *     kick) or hold_ms passes, then the client gets
 *     "NO [UNAVAILABLE]" and may retry; SRC or DST let it proceed
 *     (upstream.c reads the route once more and picks the upstream);
 *   - drains the live sessions of a user whose route says they are on the
 *     wrong side (any session in FREEZE; a source session in DST, a
 *     destination session in SRC): the client is not read any more between
 *     commands, commands in flight finish, an IDLE is ended upstream with
 *     DONE, then "* BYE [UNAVAILABLE]" goes out at the command boundary and
 *     the session closes; after drain_ms it closes whatever is in flight;
 *   - acknowledges a freeze: once no live session of a FREEZE user is left,
 *     it writes HSET rep:frz:<user> <proxy id> <epoch> (EXPIRE one day) on a
 *     second async connection. imapferryctl counts these acks against the
 *     number of rep:ctl subscribers its PUBLISH reached before it runs the
 *     final sync;
 *   - follows the freeze lease (rkeys.h RK_ROUTE_F_LEASE): while an entry is
 *     FREEZE it reads the lease (a script on the ack connection, Redis's
 *     clock) at once and then every PX_ROUTES_REREAD_MS; once it has ended
 *     (the imapferryctl that froze the user was killed) and the user came
 *     from the source, the freeze counts as SRC: held logins go on to the
 *     source (upstream.c sends a FREEZE there), live source sessions stay,
 *     nothing is acknowledged, and one warning is logged. imapferryctl can
 *     neither renew nor flip an ended lease, so no login reaches the source
 *     while a final sync that will be flipped runs. A freeze coming from the
 *     destination (a rollback) keeps holding logins after its lease ended.
 *
 * Every user it tracks has an entry (bounded by PX_ROUTES_MAX); sessions are
 * found by walking the server's session list from a timer that runs only
 * while there are entries, so no session pointer is kept anywhere.
 */
#ifndef PROXY_ROUTES_H
#define PROXY_ROUTES_H

#include <stdint.h>

struct px_server;
struct px_session;
struct px_routes;

#define PX_ROUTES_MAX           4096u      /* users tracked at once (frozen or draining) */
#define PX_ROUTES_TICK_MS       50u        /* drain/hold checks while anything is tracked */
#define PX_ROUTES_REREAD_MS     1000u      /* a FREEZE route is read again this often */
#define PX_ROUTES_ACK_TTL_S     86400u     /* lifetime of rep:frz:<user> */
#define PX_FREEZE_HOLD_DEFAULT  30u        /* seconds a login is held during a freeze */
#define PX_FREEZE_DRAIN_DEFAULT 10u        /* seconds in-flight commands get to finish */
#define PX_ROUTES_KEY_FRZ       "rep:frz:" /* + user: HASH proxy id -> acked epoch */

struct px_routes_settings {
	const char *host; /* Redis; NULL with unix_path NULL = disabled */
	int port;
	const char *unix_path;
	unsigned hold_ms;  /* > 0 */
	unsigned drain_ms; /* > 0 */
};

/*
 * Creates the route watcher of srv (connects and subscribes in the
 * background, reconnecting with backoff). set is copied. Returns NULL when
 * Redis is not configured (then px_routes_login() goes straight upstream).
 * Must be freed after srv->marks (pending route reads call back into it).
 */
struct px_routes *px_routes_new(struct px_server *srv, const struct px_routes_settings *set);
/* Frees *r (NULL accepted) and sets it to NULL; held logins are left as they
 * are (the process is ending). */
void px_routes_free(struct px_routes **r);

/*
 * The credentials of s are complete: reads the route, holds the login while
 * the user is frozen, then calls px_upstream_start(s). With srv->routes NULL
 * it calls px_upstream_start(s) at once. Uses s->route for its read (so the
 * session's own cancel paths cover it).
 */
void px_routes_login(struct px_session *s);

/* A stable name of this proxy process in acks ("host:pid:start"); borrowed. */
const char *px_routes_id(const struct px_routes *r);

#endif
