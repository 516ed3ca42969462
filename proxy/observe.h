/*
 * observe.h - what one proxied IMAP session changes (private to
 * imapferry-proxy).
 *
 * The relay (session.c) runs the shared parser (lib/parse.c) on both
 * directions of an authenticated session and hands every complete message
 * to the observer, in wire order: px_observe_client() for each command it
 * forwarded upstream, px_observe_server() for each response it received.
 * The observer keeps the tag -> command FIFO, the selected mailbox (with
 * select epochs), the ENABLEd extensions and the known EXISTS count, and
 * reports through the sink which (user, folder) became dirty, following the
 * table in ../shared/docs/replication-design.md section 3:
 *
 *   APPEND X / [UID] COPY set X            -> X, high
 *   [UID] MOVE set X                       -> selected + X, high; a "move" hint
 *                                            from the [COPYUID ...] of the reply
 *   [UID] STORE, non-PEEK BODY[]/BINARY[]/
 *   RFC822[.TEXT] fetch, [UID] EXPUNGE,
 *   CLOSE                                  -> selected, low
 *   CREATE/DELETE/RENAME/(UN)SUBSCRIBE,
 *   SETACL/DELETEACL/SETMETADATA           -> RK_FOLDER_ALL (tree), low;
 *                                            RENAME also a "rename" hint
 *   unknown or X- commands                 -> RK_FOLDER_ALL, low
 *   untagged EXISTS growth, EXPUNGE,
 *   VANISHED (not EARLIER), FETCH with
 *   FLAGS while no FETCH/STORE of ours is
 *   in flight, HIGHESTMODSEQ growth        -> selected (EXISTS: high, else low)
 *
 * Marks are made when the tagged reply arrives, on OK and on NO (partial
 * effects are possible), not on BAD; a mutating command still in flight at
 * px_observe_disconnect() marks too. When the selected mailbox of a command
 * is ambiguous (e.g. a SELECT still pending or failed), the whole user is
 * marked (RK_FOLDER_ALL). Folder names are passed canonical
 * (rk_folder_canon: mUTF-7 decoded unless UTF8=ACCEPT was enabled, INBOX
 * case folded).
 *
 * Pure logic: no I/O, no Redis, no clock. Memory is bounded: at most
 * PX_OBSERVE_MAX_INFLIGHT commands are tracked; beyond that the oldest is
 * dropped and the user is marked whole.
 */
#ifndef PROXY_OBSERVE_H
#define PROXY_OBSERVE_H

#include <imapferry/parse.h>
#include <imapferry/rkeys.h>

#define PX_OBSERVE_MAX_INFLIGHT 256

struct px_observe_sink {
	/* folder: canonical name or RK_FOLDER_ALL; borrowed for the call. */
	void (*mark)(void *aux, const char *folder, enum rk_prio prio);
	/* A hint line as rkeys.h describes ("move\t..." or "rename\t..."). */
	void (*hint)(void *aux, const char *line);
};

struct px_observe;

/* sink is copied; aux is passed to every sink call. Never NULL. */
struct px_observe *px_observe_new(const struct px_observe_sink *sink, void *aux);
void px_observe_free(struct px_observe **o);

/* The upstream's hierarchy separator (from NAMESPACE or LIST "" ""), or 0 if
 * unknown; the observer also learns it from LIST responses it sees. */
void px_observe_set_separator(struct px_observe *o, char sep);

/* A complete client command (IMAP_MSG_COMMAND) that was forwarded upstream.
 * Commands answered by the proxy itself are not passed. */
void px_observe_client(struct px_observe *o, const struct imap_msg *cmd);
/* A continuation line sent by the client outside any command (AUTHENTICATE
 * data, IDLE's DONE), read in raw mode. */
void px_observe_client_line(struct px_observe *o, const char *line, size_t len);
/* A complete server message (tagged, untagged or continuation). */
void px_observe_server(struct px_observe *o, const struct imap_msg *resp);
/* The session ended (either side): marks for mutating commands in flight. */
void px_observe_disconnect(struct px_observe *o);

/* Read-only state for logs and the session prefix. */
const char *px_observe_selected(const struct px_observe *o); /* canonical or NULL */
unsigned px_observe_inflight(const struct px_observe *o);

#endif
