/*
 * debugcat.h - imapsync's debug categories that have a printer of their
 * own: --debugenv, --debugmemory, --debugcontent, --debuglist,
 * --debugfolders, --debugcache. Each prints "debugX: ..." lines through
 * sy_out() (stdout and the log) when its option is on, and nothing
 * otherwise; secrets never appear (environment values of secret-looking
 * names are MASKED unless --showpasswords). (--debugflags,
 * --debugmaxlinelength, --debugsig and --debugssl print from the code they
 * describe: copy.c, msgsel.c, main.c, account.c.)
 */
#ifndef IMAPFERRY_SYNC_DEBUGCAT_H
#define IMAPFERRY_SYNC_DEBUGCAT_H

#include <stdint.h>

#include "sync.h"

struct evbuffer;

/* --debugenv: the environment, one variable a line, sorted. */
void sy_debug_env(struct sy_run *r);

/* --debugmemory: the process's resident memory now and at its peak
 * (/proc/self/status), after what (e.g. "msg INBOX/3"). */
void sy_debug_memory(struct sy_run *r, const char *what);

/* --debugcontent: body (borrowed, unchanged), the message as sent to host2,
 * at most 64 KiB of it, control bytes other than CR LF TAB as \xNN. */
void sy_debug_content(struct sy_run *r, const char *folder, uint32_t uid, struct evbuffer *body);

/* --debuglist: one more LIST "" "*" on each side, every answer printed;
 * --debugfolders: the folder plan, one host1 -> host2 line per folder. */
void sy_debug_folders(struct sy_run *r, const struct sy_plan *plan);

/* --debugcache (imapferry's cache is its state, issue 4): what the state
 * says of folder name1: now = STATUS before the pass, was = the stored one
 * (NULL: none), decision = what is done ("skipped", "incremental pass"...). */
void sy_debug_cache(struct sy_run *r, const char *name1, const struct sy_fstatus now[2],
                    const struct sy_fstatus *was, const char *decision);

#endif
