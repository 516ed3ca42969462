/*
 * runctl.h - controlling a run from outside, as imapsync does: the abort
 * file (--abortbyfile) and following the log of a run already going
 * (--tail). Both find the other run through its pidfile, whose first line
 * is its PID and second line its log file (main.c's pidfile_write()).
 */
#ifndef IMAPFERRY_SYNC_RUNCTL_H
#define IMAPFERRY_SYNC_RUNCTL_H

#include "options.h"

struct sy_run;

/* imapsync's exit code for a run stopped by its abort file. */
#define SY_EXIT_BY_FILE 7

/*
 * Every run that wrote a pidfile P watches for the file "P" "abort" "<its
 * PID>" (imapsync's name), checked every 250 ms from r->base's loop: when
 * it appears, the run removes it, sets r->stop (the messages in flight
 * finish) and sy_abortfile_hit() turns nonzero. No-op without a pidfile.
 * sy_abortfile_unwatch() (idempotent) must run before r->base is freed.
 */
void sy_abortfile_watch(struct sy_run *r, const char *pidpath);
void sy_abortfile_unwatch(void);
/* In a --parallel worker (a forked child with its own r->base): watches
 * the parent's abort file too, leaving it for the parent to remove. */
void sy_abortfile_watch_worker(struct sy_run *r);
/* The abort file's path once it was found (checked once more now), else
 * NULL; the file is then removed. */
const char *sy_abortfile_hit(void);

/*
 * --abortbyfile: asks the run named in o's pidfile to stop by creating its
 * abort file, then waits up to 30 s for it to end. Returns the exit code
 * (0: it ended or there was none; 1: no pidfile option, or still running).
 */
/* --abort: imapsync's way to stop the run named in the pidfile (it sends
 * QUIT, which makes a run stop after the messages in flight, print its
 * statistics and exit 6). Waits up to 30 s for it to end. Returns the exit
 * code: 0 when it ended or none runs, 1 otherwise. */
int sy_abort_previous(const struct sy_options *o);

int sy_abortbyfile_previous(const struct sy_options *o);

/*
 * --tail: if o's pidfile names a running process with a log file, copies
 * that log to stdout as it grows until the process ends (then returns 0).
 * Returns -1 when there is no such run: the caller goes on with its own.
 */
int sy_tail_previous(const struct sy_options *o);

/*
 * --emailreport1/2 (report.c): APPENDs the lines sy_report() printed as a
 * text message (From: --emailreportfrom, default imapsync@<this host>;
 * Subject: "[imapsync] Report of the transfer from ...: exit N"), ending
 * with the exit code, to INBOX of each side asked for; said in the output.
 * Nothing under --dry. Call once, after sy_report(), while connected.
 */
void sy_email_report(struct sy_run *r, int code);

#endif
