/*
 * rnodes.h - blocking Redis connections that follow a Redis Cluster.
 *
 * One configured address (--redis HOST:PORT or a socket path). Against a
 * standalone Redis everything goes to it: one connection, no extra round
 * trip. Against a Redis Cluster node, a command for a slot another node
 * serves is answered "-MOVED slot host:port": the redirection is learned
 * (slot -> node), the node is connected on first use, and the command is
 * sent there (a MOVED command was not run, so sending it again is safe).
 * "-ASK slot host:port" (a slot being migrated) sends "ASKING" then the
 * command to that node once, without learning. No CLUSTER SLOTS is needed:
 * a slot nobody taught us goes to the configured node, which redirects.
 *
 * When a node's connection breaks or cannot be made, the slots learned for
 * it are forgotten, so after a failover the next command asks the configured
 * node again (or, when that one is the broken node, any other known node)
 * and is redirected to the new master.
 *
 * Every key imapferry keeps for a user carries the hash tag of the user's
 * shard (rkeys.h), so a user's keys, and every script or MULTI over them,
 * live in one slot: rk_shard_slot(rk_shard(user)). The route key and the
 * sweep flag have slots of their own (rk_key_slot()).
 *
 * An rnodes is used by one thread at a time.
 */
#ifndef IMAPFERRY_RNODES_H
#define IMAPFERRY_RNODES_H

#include <stdarg.h>
#include <stddef.h>

#define RN_NODES_MAX     64u /* cluster nodes one rnodes talks to */
#define RN_REDIRECTS_MAX 5u  /* MOVED/ASK followed per command */
#define RN_ERROR_MAX     256u

struct redisContext;
struct redisReply;
struct rnodes;

/*
 * Connects to unix_path when not NULL, else host:port; timeout_ms (> 0)
 * bounds every connect, read and write. NULL with *error_r (valid until the
 * next rn_open() in this thread) when the address is unusable or the first
 * connection fails. host and unix_path are copied.
 */
struct rnodes *rn_open(const char *host, int port, const char *unix_path, unsigned timeout_ms,
                       const char **error_r);
/* rn_open() from a --redis spec ("HOST:PORT", "HOST" or "/socket"). */
struct rnodes *rn_open_spec(const char *spec, unsigned timeout_ms, const char **error_r);
void rn_close(struct rnodes **rn);
/* The last error; never NULL. */
const char *rn_error(const struct rnodes *rn);

/*
 * The connection serving slot (0..RK_SLOTS-1), connected (a broken or
 * stale one is reopened): for pipelines, whose replies the caller passes
 * to rn_redirected(). NULL with the error set when no node can be reached.
 */
struct redisContext *rn_ctx(struct rnodes *rn, unsigned slot);
/*
 * One command for slot, following MOVED and ASK. After an I/O error (the
 * command may have run) it is sent once more on a new connection only when
 * resend is nonzero. Returns the reply (caller frees with freeReplyObject();
 * it may be an error reply), or NULL with the error set.
 */
struct redisReply *rn_command_argv(struct rnodes *rn, unsigned slot, int argc, const char **argv,
                                   const size_t *lens, int resend);
/*
 * A command in hiredis's printf-like format (redisCommand()), sent to the
 * node of its key: the first key of EVAL/EVALSHA, argv[1] of the rest;
 * keyless commands (TIME, PING, PUBLISH, ...) go to any node; SCAN with a
 * MATCH pattern that carries a literal hash tag goes to that tag's node.
 * Not sent again after an I/O error (it may have run): the reply, or NULL
 * with the error set.
 */
struct redisReply *rn_vcommand(struct rnodes *rn, const char *fmt, va_list ap);
/*
 * The slot of a RESP-formatted command cmd[0..len): 1 with *slot_r, 0 for a
 * keyless command, -1 when cmd is no RESP array of bulk strings. Pure.
 */
int rn_cmd_slot(const char *cmd, size_t len, unsigned *slot_r);
/*
 * SCAN MATCH match over every key it can match: the one node of a pattern
 * with a literal hash tag, the standalone Redis, or every master of a
 * cluster (CLUSTER SLOTS). cb gets each key (NUL-terminated, len bytes;
 * return -1 to stop). 0, or -1 with the error set.
 */
int rn_scan(struct rnodes *rn, const char *match, int (*cb)(const char *key, size_t len, void *aux),
            void *aux);
/*
 * For a reply read from a pipeline on rn_ctx(): 1 when it is a MOVED or ASK
 * redirection (a MOVED is learned, so the next rn_ctx() for that slot is
 * the right node; the command was not run), else 0.
 */
int rn_redirected(struct rnodes *rn, const struct redisReply *r);
/* c (from rn_ctx()) broke: close it; the next use reconnects. */
void rn_drop(struct rnodes *rn, struct redisContext *c);
/* Connections made so far, to any node (1 after rn_open()). */
unsigned long rn_connects(const struct rnodes *rn);
/* Nodes known (1 until a redirection taught another). */
unsigned rn_nodes(const struct rnodes *rn);

/*
 * Parses an error reply's text str[0..len) (no NUL in it) "MOVED <slot>
 * <host>:<port>" or "ASK ..." (*ask_r 1): the slot and the node's host
 * (*host_r points into str, *hl_r bytes, without the brackets of "[v6]")
 * and port. 0, or -1 when it is no redirection. Pure: for async clients.
 */
int rn_redirect_parse(const char *str, size_t len, int *ask_r, unsigned *slot_r,
                      const char **host_r, size_t *hl_r, int *port_r);

/*
 * A lone blocking connection to the node that serves key's slot: the
 * configured node is asked "EXISTS key" once and a MOVED is followed
 * (standalone Redis: the configured node). For a program that works on one
 * user's keys (they share a slot). NULL with *error_r (valid until the next
 * call in this thread). Free with redisFree().
 */
struct redisContext *rn_connect_for_key(const char *spec, const char *key, unsigned timeout_ms,
                                        const char **error_r);

#endif
