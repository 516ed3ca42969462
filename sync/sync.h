/*
 * sync.h - private interfaces of imapferry-sync's one-shot (imapsync) mode:
 * the run context, output and error bookkeeping (report.c), the two
 * accounts (account.c), the folder plan (folders.c) and the message pass
 * (copy.c).
 */
#ifndef IMAPFERRY_SYNC_SYNC_H
#define IMAPFERRY_SYNC_SYNC_H

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include "imapferry/client.h"
#include "options.h"

struct event_base;
struct tls_client_ctx;
struct sy_hdrkey_opts;
struct sy_flags_opts;
struct sy_xdup;

/* imapsync's error classes; the exit code is the most frequent one's. */
enum sy_err {
	SY_ERR_UNCLASSIFIED, /* 111 */
	SY_ERR_CONNECT1,     /* 101 */
	SY_ERR_CONNECT2,     /* 102 */
	SY_ERR_TLS,          /* 12 */
	SY_ERR_AUTH1,        /* 161 */
	SY_ERR_AUTH2,        /* 162 */
	SY_ERR_APPEND,       /* 114 */
	SY_ERR_FETCH,        /* 115 */
	SY_ERR_CREATE,       /* 116 */
	SY_ERR_SELECT,       /* 117 */
	SY_ERR_FLAGS,        /* 120 */
	SY_ERR_EXCEEDED,     /* 118: --exitwhenover reached */
	SY_ERR_COUNT
};

/* A command's result (sy_cmd(), below). */
struct sy_res {
	enum imap_status status;
	char code[32];
	char text[400];
	const char *codeargs_raw; /* unused by callers yet */
	uint32_t appenduid;       /* [APPENDUID v uid] */
};

/* A command in flight (sy_cmd_send(), below). */
struct sy_call {
	int done;
	struct sy_res *res;
	imap_untagged_cb *untagged;
	imap_literal_cb *literal;
	void *aux;
};

/* The ID command's reply handler's context (account.c). */
struct sy_id_wait {
	struct sy_run *r;
	int n;
};

/* One side's connection. */
struct sy_side {
	int n;                  /* 1 or 2 */
	struct sy_account *acc; /* borrowed from the options */
	struct imap_client *cl;
	struct tls_client_ctx *tls;
	char sep;     /* hierarchy separator */
	char *prefix; /* personal namespace prefix */
	uint16_t port;
	int ssl;     /* implicit TLS chosen */
	int qresync; /* ENABLE QRESYNC done on this connection */
	/* the ID sent after login, its reply read with the next command's */
	struct sy_id_wait idw;
	struct sy_call idcall;
	struct sy_res idres;
	int id_sent;
};

struct sy_run {
	struct sy_options *o;
	struct event_base *base;
	struct sy_side side[2];
	struct sy_hdrkey_opts *hk;
	struct sy_flags_opts *fl;
	struct sy_state *st; /* the state when one is in use (main.c owns it) */
	int no_pool;         /* a daemon worker logs out instead of pooling */
	FILE *log;           /* log file or NULL */
	char *logpath;
	char *pidpath;
	struct timespec t0;

	/* statistics (names as in imapsync's "++++ Statistics") */
	unsigned folders_total, folders_synced;
	uint64_t transferred, skipped, dup1, dup2, noheader1, noheader2;
	uint64_t bytes_transferred, bytes_skipped, biggest;
	uint64_t in1_not_in2, in2_not_in1, ident1, ident2;
	uint64_t would_copy;   /* --dry */
	uint64_t retry_copied; /* copied before a dropped connection; the retry skips them */
	unsigned reconnects[2];
	int tty; /* stdout is a terminal: progress line */
	int progress_shown;
	long long progress_ms;
	int sizes_done;                        /* bit 0: at start, bit 1: at end */
	long long diff_msgs[2], diff_bytes[2]; /* host2 - host1, start and end */
	uint64_t deleted1, deleted2;           /* issue 8: marked \Deleted by --delete1/2 */

	/* errors */
	unsigned nerrors;
	unsigned err_count[SY_ERR_COUNT];
	char **errors;
	int stop; /* errorsmax reached or fatal */

	/* issue 8: --skipcrossduplicates (xdup.h), NULL without it */
	struct sy_xdup *xdup;
	uint64_t crossdup2;   /* "Messages found crossduplicate on host2" */
	uint64_t retry_bytes; /* bytes of retry_copied (the redo counts them as skipped) */
};

/* --- report.c: output, errors, statistics, exit code --- */

/* 1: sy_out() leaves stdout's buffer to fill (a daemon worker, whose job
 * log is read when the job ends: ~100 write()s per quick check saved);
 * errors are still flushed at once. 0 (the default): every line at once. */
void sy_out_buffered(int on);

/* A line to stdout and the log file (imapsync tees both). */
void sy_out(struct sy_run *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A per-message line: on a terminal only to the log file (the progress
 * line shows the run instead of a scrolling wall), else like sy_out(). */
void sy_msgline(struct sy_run *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The live progress line on a terminal (rewritten in place, throttled);
 * nothing when stdout is not a terminal. */
void sy_progress(struct sy_run *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* An error: printed, logged, counted in class cls. Sets r->stop when
 * --errorsmax is reached. */
void sy_error(struct sy_run *r, enum sy_err cls, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
/* "1.234 MiB" as imapsync's bytes_display_string_bin. */
const char *sy_bytes(char *buf, size_t size, uint64_t n);
/* Prints statistics, verdicts and the error listing; returns the exit code. */
int sy_report(struct sy_run *r);
/* Messages and bytes copied of the last sy_report() since the last call
 * (0 and 0 when none): a daemon worker's answer per job (worker.c). */
void sy_report_take(unsigned long long *messages, unsigned long long *bytes);
/* imapsync's exit-code name and text for code. */
const char *sy_exit_text(int code);
int sy_err_exit_code(enum sy_err cls);

/* --- account.c --- */

/* Connects and logs in side i (0/1); on failure records the error and
 * returns the exit code (101/102, 12, 161/162); 0 on success. */
int sy_side_open(struct sy_run *r, int i);
void sy_side_close(struct sy_run *r, int i);
/* Both sides closed, their LOGOUTs in flight together. */
void sy_sides_close(struct sy_run *r);
/* Drops side i's connection (if any) and opens it again; like sy_side_open(). */
int sy_side_reopen(struct sy_run *r, int i);

/* Synchronous command on side i. res (may be NULL) receives the status and
 * text; untagged/literal handlers as in imap_client_cmdf(). Returns the
 * status (IMAP_STATUS_NONE when the connection failed). */
enum imap_status sy_cmd(struct sy_run *r, int i, struct sy_res *res, imap_untagged_cb *untagged,
                        imap_literal_cb *literal, void *aux, const char *fmt, ...);

/* The same in two steps, so that commands on both sides (or several on
 * one) are in flight together: sy_cmd_send() queues (0, or -1 with
 * res->text and the call already done), sy_cmd_wait() waits for its
 * completion and returns the status. c and res must live until then. */
int sy_cmd_send(struct sy_run *r, int i, struct sy_call *c, struct sy_res *res,
                imap_untagged_cb *untagged, imap_literal_cb *literal, void *aux, const char *fmt,
                ...);
enum imap_status sy_cmd_wait(struct sy_run *r, int i, struct sy_call *c);

/* --- folders.c --- */

struct sy_folder {
	char *name1; /* host1 name, raw (mUTF-7 as the server sent it) */
	char *name2; /* mapped host2 name */
	int subscribed1;
	int exists2;
	int skip; /* not synced: --skipemptyfolders, --nomixfolders refusal */
};

struct sy_lstatus;

struct sy_plan {
	struct sy_folder *f;
	size_t n;
	/* --quickcheck: each side's STATUS of every folder, sent with its LIST
	 * (LIST-STATUS, RFC 5819) where the server has it; sy_status_batch()
	 * STATUSes only the folders missing here (created or renamed since) */
	struct sy_lstatus *ls[2];
	size_t nls[2];
};

/* Lists both sides, selects and maps folders, creates and subscribes
 * missing host2 folders (not under --dry). Returns 0, or -1 when the run
 * cannot go on (errors recorded). */
int sy_folders_plan(struct sy_run *r, struct sy_plan *plan);
void sy_plan_free(struct sy_plan *plan);
/* Host2 name for a host1 name, imapsync's imap2_folder_name() subset. */
char *sy_folder_map(const struct sy_run *r, const char *name1);

/* --- state.c --- */

/* One side's STATUS of a folder. */
struct sy_fstatus {
	uint32_t uidvalidity, uidnext, messages;
	uint64_t highestmodseq;
	int has_modseq; /* HIGHESTMODSEQ known (CONDSTORE) */
	int valid;      /* STATUS answered */
};

/* One folder's STATUS from a LIST-STATUS reply (struct sy_plan). */
struct sy_lstatus {
	char *name; /* as the server sent it */
	struct sy_fstatus st;
};

struct sy_state;

struct sy_uidpair {
	uint32_t uid1, uid2;
};

/* A host1 message's copy on host2, from a UID map; uid2 0: not mapped. */
struct sy_mapped {
	const char *name2; /* the state's string */
	uint32_t uv2, uid2;
};
/* The proxy's move hints (copy.c): in the UID maps of the folder whose host1
 * name is canon1 (rk_folder_canon()'s form), out[j] gets where host1 UID
 * uid1[j] is on host2, for j < n. */
void sy_state_map_find_uids(const struct sy_run *r, struct sy_state *s, const char *canon1,
                            const uint32_t *uid1, size_t n, struct sy_mapped *out);
/* With the state in Redis: pairs[0..n) of f's map, whose host1 messages
 * vanished while their host2 copies stay, kept for the move hints read
 * later (sy_state_map_find_uids() finds them too). */
void sy_state_gone_put(struct sy_run *r, struct sy_state *s, const struct sy_folder *f,
                       uint32_t uv1, uint32_t uv2, const struct sy_uidpair *pairs, size_t n);
/* The Redis connection the state was loaded on (kept for its save), or
 * NULL: others may send a command or two on it meanwhile. */
struct redisContext *sy_state_redis(struct sy_state *s);
/* In a process forked with the state (--parallel's workers): leaves the
 * parent's Redis connection to the parent; a new one is made if needed. */
void sy_state_forked(struct sy_state *s);
/* The folder pair's UID map when it was made for these UIDVALIDITYs: 0 and
 * a malloc'd copy sorted by uid1 (caller frees), else -1. */
int sy_state_map_get(struct sy_state *s, const struct sy_folder *f, uint32_t uv1, uint32_t uv2,
                     struct sy_uidpair **pairs_r, size_t *n_r);
/* Replaces the folder pair's UID map. */
void sy_state_map_put(struct sy_state *s, const struct sy_folder *f, uint32_t uv1, uint32_t uv2,
                      const struct sy_uidpair *pairs, size_t n);

/* Reads the state of this account pair from --tmpdir (never fails: a
 * missing or bad file is an empty state, and says so). */
struct sy_state *sy_state_load(struct sy_run *r);
/* 1 when neither side changed since the folder's last clean pass (both
 * sides' UIDVALIDITY UIDNEXT MESSAGES HIGHESTMODSEQ as stored); then
 * counts_r = identified messages on host1, on host2, host2-only. */
int sy_state_unchanged(struct sy_state *s, const struct sy_folder *f,
                       const struct sy_fstatus now[2], uint64_t counts_r[3]);
/* The base of an incremental pass of f: 1 with the stored statuses and
 * counts when host1 is the same mailbox moved only forward (UIDVALIDITY
 * equal, UIDNEXT and HIGHESTMODSEQ not lower), host2 is exactly as the last
 * pass left it and both have HIGHESTMODSEQ; else 0 (a full pass). */
int sy_state_delta_base(struct sy_state *s, const struct sy_folder *f,
                        const struct sy_fstatus now[2], struct sy_fstatus was_r[2],
                        uint64_t counts_r[3]);
/* After a clean pass: host1 as before it, host2 as after it. */
void sy_state_record(struct sy_state *s, const struct sy_folder *f, const struct sy_fstatus st[2],
                     const uint64_t counts[3]);
/* After a pass with errors: the folder gets a full pass next time. */
void sy_state_forget(struct sy_state *s, const struct sy_folder *f);
/* --parallel: a worker writes the state of the folder pairs it synced
 * (sy_state_dump(), text lines), the parent merges them line by line
 * (sy_state_merge_line(): 0, or nonzero for a line it could not use). */
void sy_state_dump(struct sy_state *s, const struct sy_folder *f, FILE *fp);
int sy_state_merge_line(struct sy_state *s, char *line);
/* The folder pairs of the state: their number, and the k-th's names and
 * statuses (borrowed until the state changes); -1 when k is out of range
 * or the entry was forgotten. */
size_t sy_state_nfolders(const struct sy_state *s);
int sy_state_folder(const struct sy_state *s, size_t k, const char **name1_r, const char **name2_r,
                    struct sy_fstatus st_r[2]);
/* A folder pair renamed on both sides: its state and UID map (and those of
 * the folders below it, sep1/sep2 being the separators) follow the names. */
void sy_state_rename(struct sy_state *s, const char *old1, const char *old2, const char *new1,
                     const char *new2, char sep1, char sep2);
/* Writes the state (temp file, fsync, rename). Returns 0 or -1 (said). */
int sy_state_save(struct sy_run *r, struct sy_state *s);
/* Between two folders: sy_state_save() when --checkpoint seconds passed
 * since the state was read or last saved (0: always). */
void sy_state_checkpoint(struct sy_run *r, struct sy_state *s);
const char *sy_state_file(const struct sy_state *s);
void sy_state_free(struct sy_state **s);
/* Sorts a plan's LIST-STATUS replies by name (folders.c, for sy_status_batch()). */
void sy_lstatus_sort(struct sy_lstatus *ls, size_t n);
/* A "* STATUS name (...)" answer into *st (valid when UIDVALIDITY, UIDNEXT
 * and MESSAGES were there) and the name it is for (a slice of msg). 0, or
 * -1 when msg is not a STATUS answer. */
int sy_fstatus_parse(const struct imap_msg *msg, struct sy_fstatus *st, const char **name_r,
                     size_t *name_len_r);
/* Pipelined STATUS of the plan's folders on both sides (host2: those that
 * exist), one round trip each; only = a plan index, or (size_t)-1 for all
 * (then what the plan's LIST-STATUS gave is taken as it is). out has
 * plan->n entries. */
void sy_status_batch(struct sy_run *r, const struct sy_plan *plan, size_t only,
                     struct sy_fstatus (*out)[2]);

/* --- sizes.c --- */

/* imapsync's folder-size tables for the plan's folder pairs, at the start
 * or at the end of the run. */
void sy_folder_sizes(struct sy_run *r, const struct sy_plan *plan, int at_end);

/* --- throttle (copy.c) --- */

/* After each APPEND: imapsync's sleep_if_needed (--maxmessagespersecond,
 * --maxbytespersecond after --maxbytesafter, at most --maxsleep) and
 * --exitwhenover (error 118, the run stops). */
void sy_throttle(struct sy_run *r);

/* --- copy.c --- */

/* Syncs the messages of one folder pair. */
void sy_copy_folder(struct sy_run *r, const struct sy_folder *f, unsigned idx, unsigned total);

/* --- delta.c --- */

/* What an incremental pass starts from (sy_state_delta_base()). */
struct sy_delta_base {
	struct sy_fstatus now[2]; /* STATUS before this pass */
	struct sy_fstatus was[2]; /* stored: host1 before the last pass, host2 after it */
	uint64_t counts[3];       /* stored verdict counts */
};

/* The incremental pass of a folder pair (issue 4): only host1's changes
 * since the stored state (new UIDs, changed flags via QRESYNC or CONDSTORE,
 * vanished UIDs) are read and applied through the stored UID map. Returns
 * 1 when done (clean or with errors recorded), 0 when it cannot apply (the
 * caller runs the full pass; nothing was written to host2). */
int sy_delta_folder(struct sy_run *r, const struct sy_folder *f, const struct sy_delta_base *b,
                    unsigned idx, unsigned total);

/* --- daemon.c --- */

/* imapferry-sync --daemon: consumes the proxy's marks from --redis and runs
 * a sync per claimed (user, folder) until SIGTERM. Returns the exit code. */
int sy_daemon_main(struct sy_options *o, int argc, char **argv);

#endif
