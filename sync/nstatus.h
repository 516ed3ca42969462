/*
 * nstatus.h - imapferry-sync --daemon --notifystatus PREFIX: Dovecot's
 * notify_status plugin as an extra, optional "this folder changed" signal.
 *
 * Where the source is a Dovecot the operator controls, its notify_status
 * plugin (with notify) can write every mailbox's status into Redis on each
 * change, LMTP deliveries, Sieve and other paths around the proxy included:
 *
 *   plugin {
 *     notify_status_dict = redis:host=127.0.0.1:port=6379:prefix=nstatus/
 *     notify_status_value = %%{messages} %%{uidnext} %%{uidvalidity} %%{highest_modseq}
 *   }
 *
 * Dovecot's dict-redis stores the private key "priv/status/<box>" as
 * "<prefix><user>/status/<box>", box being Dovecot's name for the mailbox
 * (UTF-8, the namespace's separator). This module subscribes to Redis
 * keyspace notifications for "<prefix>*" on a connection of its own, and for
 * each event marks the work queue (rkeys.h) as the proxy does:
 *
 *   set  -> (user, box) due after the new-mail debounce (RK_DEBOUNCE_HIGH_MS)
 *   del  -> (user, RK_FOLDER_ALL) after RK_DEBOUNCE_LOW_MS: Dovecot deletes
 *           the key when the mailbox is deleted or renamed (a tree change)
 *
 * The value is not read: the key changing is the signal, and the sync finds
 * out what changed. Keyspace notifications need notify-keyspace-events to
 * hold "K", "$" and "g" (or "A"): the module adds the missing classes with
 * CONFIG SET on every connect (a restarted Redis forgets them) and, when
 * CONFIG is refused, logs once what to put in redis.conf.
 *
 * Everything is asynchronous on the caller's event base (hiredis async, two
 * connections: the subscription and one for commands); nothing blocks.
 * Redis notifications are fire-and-forget: when the connection is lost, the
 * module reconnects with a backoff (100 ms doubling to 5 s) and, once
 * subscribed again, sets RK_KEY_SWEEP_ALL, so the daemon quick-checks every
 * known user for what happened meanwhile. Memory is bounded: at most
 * NS_INFLIGHT_MAX marks are unanswered at once; beyond that events are
 * dropped and a sweep of every user is requested instead.
 */
#ifndef IMAPFERRY_SYNC_NSTATUS_H
#define IMAPFERRY_SYNC_NSTATUS_H

#include <stdint.h>

struct event_base;
struct sy_nstatus;

/* Longest accepted prefix (bytes). Dovecot splits its dict URI at ':', so
 * the prefix it writes can hold no ':' either. */
#define NS_PREFIX_MAX 256u

struct sy_nstatus_stats {
	uint64_t events;     /* keyspace events received for the prefix */
	uint64_t marks;      /* marks answered by Redis */
	uint64_t ignored;    /* events for keys or event types that mean nothing here */
	uint64_t dropped;    /* events dropped (too many marks unanswered) */
	uint64_t reconnects; /* subscriptions made (the first one included) */
	uint64_t sweeps;     /* sweeps of every user requested */
	int up;              /* subscribed now */
};

/*
 * Starts watching: connects to redis (HOST:PORT or a socket path, as
 * rq_addr_parse() reads it) from base's loop and keeps reconnecting until
 * sy_nstatus_free(). prefix (1..NS_PREFIX_MAX bytes, no ':') is the
 * notify_status_dict's "prefix=". Returns the watcher, or NULL with
 * *error_r (a static message) for a bad address or prefix. The first
 * connection is made from the loop: a Redis that is down now is not an
 * error (it is logged and retried).
 */
struct sy_nstatus *sy_nstatus_new(struct event_base *base, const char *redis, const char *prefix,
                                  const char **error_r);
/* Closes the connections (pending marks are abandoned: they are hints) and
 * frees *ns; accepts NULL and *ns == NULL; sets *ns to NULL. Call it from
 * outside the watcher's callbacks (e.g. after the loop ended), before
 * event_base_free(). */
void sy_nstatus_free(struct sy_nstatus **ns);
/* The counters so far. */
void sy_nstatus_stats(const struct sy_nstatus *ns, struct sy_nstatus_stats *stats_r);

#endif
