/* runctl.c - the abort file and --tail; see runctl.h */
#include "runctl.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "sync.h"

#define WATCH_MS   250 /* abort file checks */
#define WAIT_STEPS 300 /* --abort and --abortbyfile wait 300 x 100 ms for the run to end */
#define TAIL_STEP  200 /* --tail polls the log every 200 ms */
#define PATH_LEN   4096

static struct event *watch_ev;
static char watch_path[PATH_LEN];
static int watch_found;
static int watch_keep; /* a --parallel worker: the parent removes the file */

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* A process that exists and is not a zombie (ended, not yet reaped). */
static int alive(long pid)
{
	char path[64], buf[256], *paren;
	FILE *fp;
	int ok = 1;

	if (pid <= 0 || kill((pid_t)pid, 0) != 0)
		return 0;
	snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
	fp = fopen(path, "r");
	if (fp == NULL)
		return 1;
	if (fgets(buf, sizeof(buf), fp) != NULL && (paren = strrchr(buf, ')')) != NULL &&
	    paren[1] == ' ' && paren[2] == 'Z')
		ok = 0;
	fclose(fp);
	return ok;
}

/* The pidfile's PID (0 if none) and, when log is given, its second line. */
static long pidfile_read(const char *pf, char *log, size_t logsize)
{
	FILE *fp = fopen(pf, "r");
	char line[PATH_LEN];
	long pid = 0;

	if (log != NULL)
		log[0] = '\0';
	if (fp == NULL)
		return 0;
	if (fgets(line, sizeof(line), fp) != NULL)
		pid = strtol(line, NULL, 10);
	if (log != NULL && fgets(line, sizeof(line), fp) != NULL) {
		line[strcspn(line, "\r\n")] = '\0';
		snprintf(log, logsize, "%s", line);
	}
	fclose(fp);
	return pid;
}

static void on_watch(evutil_socket_t fd, short what, void *aux)
{
	struct sy_run *r = aux;

	(void)fd;
	(void)what;
	if (watch_found || access(watch_path, F_OK) != 0)
		return;
	watch_found = 1;
	if (!watch_keep)
		unlink(watch_path);
	sy_out(r, "Abort file %s found: stopping after the messages in flight", watch_path);
	r->stop = 1;
}

void sy_abortfile_watch(struct sy_run *r, const char *pidpath)
{
	struct timeval tv = {0, WATCH_MS * 1000};
	int n;

	if (pidpath == NULL || pidpath[0] == '\0' || r->base == NULL || watch_ev != NULL)
		return;
	n = snprintf(watch_path, sizeof(watch_path), "%sabort%ld", pidpath, (long)getpid());
	if (n < 0 || (size_t)n >= sizeof(watch_path))
		return;
	watch_ev = event_new(r->base, -1, EV_PERSIST, on_watch, r);
	if (watch_ev == NULL || event_add(watch_ev, &tv) < 0)
		abort(); /* out of memory */
}

void sy_abortfile_unwatch(void)
{
	if (watch_ev != NULL) {
		event_free(watch_ev);
		watch_ev = NULL;
	}
}

void sy_abortfile_watch_worker(struct sy_run *r)
{
	struct timeval tv = {0, WATCH_MS * 1000};

	if (watch_path[0] == '\0')
		return;
	/* the inherited event belongs to the parent's loop: never touched here */
	watch_ev = event_new(r->base, -1, EV_PERSIST, on_watch, r);
	watch_keep = 1;
	if (watch_ev == NULL || event_add(watch_ev, &tv) < 0)
		abort(); /* out of memory */
}

const char *sy_abortfile_hit(void)
{
	/* a last look: the parent of --parallel workers waits without its loop */
	if (!watch_found && !watch_keep && watch_path[0] != '\0' && access(watch_path, F_OK) == 0) {
		watch_found = 1;
		unlink(watch_path);
	}
	return watch_found ? watch_path : NULL;
}

/* Waits up to WAIT_STEPS x 100 ms for pid to end; 1 when it did. */
static int wait_end(long pid)
{
	for (int i = 0; i < WAIT_STEPS; i++) {
		if (!alive(pid))
			return 1;
		sleep_ms(100);
	}
	return 0;
}

/* The run named by the pidfile, for --abort and --abortbyfile (what): its
 * PID, or -1 with *code_r set and the reason printed (1: no pidfile; 0:
 * nothing running there). */
static long previous_run(const struct sy_options *o, const char *what, int *code_r)
{
	const char *pf = o->pidfile;
	long pid;

	if (pf == NULL || pf[0] == '\0') {
		printf("%s: no pidfile (--pidfile \"\"), so no run to abort\n", what);
		*code_r = 1;
		return -1;
	}
	pid = pidfile_read(pf, NULL, 0);
	if (pid == (long)getpid() || !alive(pid)) {
		printf("%s: no running process in pidfile %s\n", what, pf);
		*code_r = 0;
		return -1;
	}
	return pid;
}

int sy_abort_previous(const struct sy_options *o)
{
	const char *pf = o->pidfile;
	int code;
	long pid = previous_run(o, "--abort", &code);

	if (pid < 0)
		return code;
	printf("--abort: sending QUIT to PID %ld (pidfile %s)\n", pid, pf);
	kill((pid_t)pid, SIGQUIT);
	if (wait_end(pid)) {
		printf("--abort: PID %ld ended\n", pid);
		return 0;
	}
	printf("--abort: PID %ld is still running after %d s\n", pid, WAIT_STEPS / 10);
	return 1;
}

int sy_abortbyfile_previous(const struct sy_options *o)
{
	const char *pf = o->pidfile;
	char path[PATH_LEN];
	int code;
	long pid = previous_run(o, "--abortbyfile", &code);
	FILE *fp;

	if (pid < 0)
		return code;
	snprintf(path, sizeof(path), "%sabort%ld", pf, pid);
	fp = fopen(path, "w");
	if (fp == NULL) {
		printf("--abortbyfile: can not create the abort file %s: %s\n", path,
		       strerror(errno));
		return 1;
	}
	fclose(fp);
	printf("--abortbyfile: created %s for PID %ld (pidfile %s)\n", path, pid, pf);
	if (wait_end(pid)) {
		printf("--abortbyfile: PID %ld ended\n", pid);
		unlink(path); /* normally gone already: the run removes it */
		return 0;
	}
	printf("--abortbyfile: PID %ld is still running after %d s\n", pid, WAIT_STEPS / 10);
	return 1;
}

/* Copies what fp has beyond its position to stdout. */
static void tail_copy(FILE *fp)
{
	char buf[8192];
	size_t n;

	while ((n = fread(buf, 1, sizeof(buf), fp)) > 0)
		fwrite(buf, 1, n, stdout);
	clearerr(fp); /* at EOF: the next read sees what was appended */
	fflush(stdout);
}

int sy_tail_previous(const struct sy_options *o)
{
	char log[PATH_LEN];
	long pid;
	FILE *fp;

	if (o->pidfile == NULL || o->pidfile[0] == '\0')
		return -1;
	pid = pidfile_read(o->pidfile, log, sizeof(log));
	if (pid == (long)getpid() || !alive(pid) || log[0] == '\0')
		return -1;
	if (log[0] != '/') {
		/* relative to the run's directory, which may not be ours */
		char rel[PATH_LEN];
		int n;

		memcpy(rel, log, sizeof(rel));
		n = snprintf(log, sizeof(log), "/proc/%ld/cwd/%.*s", pid, PATH_LEN - 64, rel);
		if (n < 0 || (size_t)n >= sizeof(log))
			return -1;
	}
	fp = fopen(log, "r");
	if (fp == NULL) {
		printf("--tail: can not read the log file %s of PID %ld: %s\n", log, pid,
		       strerror(errno));
		return -1;
	}
	printf("--tail: following the log file %s of PID %ld (pidfile %s) until it ends\n", log,
	       pid, o->pidfile);
	while (alive(pid)) {
		tail_copy(fp);
		sleep_ms(TAIL_STEP);
	}
	tail_copy(fp);
	fclose(fp);
	printf("--tail: PID %ld ended\n", pid);
	return 0;
}
