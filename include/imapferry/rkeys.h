/*
 * rkeys.h - the Redis key schema shared by imapferry-proxy (writes marks,
 * reads routes) and imapferry-sync's daemon (claims marks, stores state).
 *
 * Design: ../shared/docs/replication-design.md section 5; the final schema is
 * documented in README.md ("Redis key schema"). Every key that belongs to a
 * user carries the hash tag "{s}", s = rk_shard(user), so one shard's keys sit
 * in one Redis Cluster slot (Lua scripts stay cluster-safe) and hot users are
 * spread over RK_SHARDS shards.
 *
 *   rep:{s}:due           ZSET  member rk_member(user, folder) -> due time (ms)
 *   rep:{s}:inflight      ZSET  member -> lease expiry (ms); the per-folder lock
 *   rep:{s}:owner         HASH  member -> "worker:fence"
 *   rep:{s}:fence         STRING INCR counter for fencing tokens
 *   rep:{s}:st:<user>     HASH  folder -> sync state line (sync/state.c format)
 *   rep:{s}:map:<user>:<folder>  STRING  run-length encoded UID map
 *   rep:{s}:gone:<user>:<folder> STRING  the UID map's pairs whose source
 *                               message a move hint says was moved out lately
 *                               (RK_HINT_TTL_S): for a hint read after the
 *                               source folder's sync
 *   rep:{s}:hint:<user>   LIST  move/rename hints (LPUSH + LTRIM + EXPIRE)
 *   rep:{s}:poll          ZSET  user -> next poll time (ms)
 *   rep:route:<user>      HASH  state (SRC|FREEZE|DST), epoch, upstream;
 *                               lease_ms, lease_to: the freeze lease (below)
 *   rep:{s}:last:<user>   HASH  ok_ms, ok_by, err_ms, err_by, err: the user's last
 *                               sync and last error, by whom (daemon, cutover, ...);
 *                               full_ms: the daemon's last full check;
 *                               full_from_ms: the start of the last one (or of
 *                               the --fullcheck clock: rq_full_due())
 *   rep:ctl               pub/sub channel: route changes ("route <user> <epoch>")
 *
 * Folder names in members and keys are the source server's names decoded to
 * UTF-8 (mUTF-7 decoded, "INBOX" in any case folded to "INBOX"), with the
 * source's hierarchy separator. The folder RK_FOLDER_ALL ("*", which cannot be
 * a mailbox name: it is a LIST wildcard) means "the folder tree and a quick
 * check of every folder of the user".
 *
 * All builders write a NUL-terminated string into a caller buffer and return
 * its length, or -1 when it does not fit (nothing useful is written then).
 */
#ifndef IMAPFERRY_RKEYS_H
#define IMAPFERRY_RKEYS_H

#include <stddef.h>
#include <stdint.h>

#define RK_SHARDS      16u
#define RK_FOLDER_ALL  "*"
#define RK_PREFIX      "rep:"
#define RK_CTL_CHANNEL "rep:ctl"
/* STRING: set by a proxy to its clock (ms) when it lost marks it could not
 * even remember per user: the daemon then checks every user (and DELs it). */
#define RK_KEY_SWEEP_ALL "rep:sweep_all"
/* ZSET: every live daemon ("host:pid") -> when its heartbeat ends (ms): how
 * many share --maxconnections (rq_daemon_beat()). */
#define RK_KEY_DAEMONS "rep:daemons"

/* Debounce (ms) added to "now" for a mark: high = new mail (APPEND, COPY,
 * MOVE, EXISTS), low = flags, expunges, tree changes. ZADD ... LT keeps the
 * earliest due time, so a burst coalesces and cannot be postponed forever.
 * A (user, folder) marked again within RK_HOT_WINDOW_MS of its previous
 * mark is in a burst: its marks get RK_DEBOUNCE_HOT_MS, so a burst of
 * thousands of STOREs costs about one sync per second, not one per STORE,
 * while a lone change is synced at once. */
#define RK_DEBOUNCE_HIGH_MS 50u
#define RK_DEBOUNCE_LOW_MS  100u
#define RK_DEBOUNCE_HOT_MS  1000u
#define RK_HOT_WINDOW_MS    1000u

enum rk_prio { RK_PRIO_HIGH, RK_PRIO_LOW, RK_PRIO_COUNT };

/* CRC16-CCITT (XMODEM), the one Redis Cluster uses for slots. */
uint16_t rk_crc16(const void *data, size_t len);
/* The user's shard: rk_crc16(user) % RK_SHARDS. */
unsigned rk_shard(const char *user);
/* Redis Cluster's hash slot of key[0..len) (0..RK_SLOTS-1): CRC16 of the
 * hash tag, the bytes between the first '{' and the next '}' when there are
 * any, else of the whole key. Every key of shard s has the tag "{s}", so all
 * of them share rk_shard_slot(s). */
#define RK_SLOTS 16384u
unsigned rk_key_slot(const char *key, size_t len);
unsigned rk_shard_slot(unsigned shard);
/* The slot of rep:route:<user> (untagged: unless the user's name holds a
 * tag of its own, another slot than the user's shard keys). */
unsigned rk_route_slot(const char *user);

/* "rep:{s}:due", "rep:{s}:inflight", "rep:{s}:owner", "rep:{s}:fence",
 * "rep:{s}:poll" for shard s. */
int rk_key_due(char *buf, size_t size, unsigned shard);
int rk_key_inflight(char *buf, size_t size, unsigned shard);
int rk_key_owner(char *buf, size_t size, unsigned shard);
int rk_key_fence(char *buf, size_t size, unsigned shard);
int rk_key_poll(char *buf, size_t size, unsigned shard);
/* Per-user keys (the shard is derived from user). */
int rk_key_state(char *buf, size_t size, const char *user);
int rk_key_map(char *buf, size_t size, const char *user, const char *folder);
int rk_key_gone(char *buf, size_t size, const char *user, const char *folder);
int rk_key_hint(char *buf, size_t size, const char *user);
int rk_key_route(char *buf, size_t size, const char *user);
int rk_key_last(char *buf, size_t size, const char *user);
/* Longest error text kept in rep:{s}:last:<user> (one line). */
#define RK_LAST_ERROR_MAX 300u

/* Due-set member "user\tfolder" (-1 also when user is empty or holds a tab,
 * or folder is empty: it could not split back). rk_member_split() parses one back: the
 * user and folder are slices of member (no copies); returns 0 or -1 when
 * there is no tab or either side is empty. */
int rk_member(char *buf, size_t size, const char *user, const char *folder);
int rk_member_split(const char *member, size_t len, const char **user_r, size_t *user_len_r,
                    const char **folder_r, size_t *folder_len_r);

/*
 * Canonical folder name for keys: mUTF-7 decoded to UTF-8 unless utf8 is
 * nonzero (the client ENABLEd UTF8=ACCEPT, so names are UTF-8 already);
 * "INBOX" folded to upper case when the name is INBOX in any case (and
 * also the "INBOX" part of "inbox<sep>child" — RFC 3501 5.1: INBOX is
 * case-insensitive, its children are not renamed by it in Dovecot, so only
 * the first component is folded). sep = the hierarchy separator or 0.
 * name[0..len) need not be NUL-terminated. A name that is not canonical
 * modified UTF-7 is kept byte for byte (the daemon applies the same function
 * to its LIST, so both sides still agree); -1 also for a NUL byte in name.
 */
int rk_folder_canon(char *buf, size_t size, const char *name, size_t len, int utf8, char sep);

/* Hints pushed to rep:{s}:hint:<user>, tab-separated, one line each:
 *   "move\t<from>\t<to>\t<uidvalidity>\t<src-uid-set>\t<dst-uid-set>"  (COPYUID of MOVE)
 *   "copy\t<from>\t<to>\t<uidvalidity>\t<src-uid-set>\t<dst-uid-set>"  (COPYUID of COPY)
 *   "rename\t<from>\t<to>" */
#define RK_HINT_MAX   64 /* LTRIM length */
#define RK_HINT_TTL_S 86400

/* Route states stored in rep:route:<user> field "state". */
enum rk_route_state { RK_ROUTE_SRC, RK_ROUTE_FREEZE, RK_ROUTE_DST, RK_ROUTE_STATE_COUNT };
extern const char *const rk_route_state_names[RK_ROUTE_STATE_COUNT];
/* Parses "SRC"/"FREEZE"/"DST" (exact); -1 if unknown. */
int rk_route_state_parse(const char *s, enum rk_route_state *state_r);

/* The freeze lease in rep:route:<user> (written by imapferryctl, which renews
 * it while it works on a frozen user): field RK_ROUTE_F_LEASE = Redis's clock
 * (ms) when it ends, RK_ROUTE_F_LEASE_TO = "SRC" or "DST", the side the user
 * was on before the freeze. A FREEZE whose lease has ended belongs to an
 * imapferryctl that is gone: it cannot be renewed or flipped any more, proxies
 * let logins go on to the source when RK_ROUTE_F_LEASE_TO is SRC (or absent),
 * and a later cutover or rollback takes it over. A FREEZE without the field
 * (set by hand) has no lease. Every other route change deletes both fields. */
#define RK_ROUTE_F_LEASE    "lease_ms"
#define RK_ROUTE_F_LEASE_TO "lease_to"

#endif
