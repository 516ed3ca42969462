/*
 * daemon.c - imapferry-sync --daemon: live replication (issue 6).
 *
 * The daemon consumes the dirty marks the proxy writes to Redis
 * (include/imapferry/rkeys.h) through the work queue (lib/rqueue.c) and
 * runs one sync per claimed item:
 *
 *   - "user<TAB>folder": a one-folder run of this same program
 *     (--folder F --redis R: the incremental engine, state in Redis);
 *   - "user<TAB>*" (the whole user: a bulk start, a poll, a proxy that lost
 *     marks): a --quickcheck run, which syncs the folder tree (creates,
 *     renames) and STATUSes every folder on both sides (one LIST-STATUS
 *     each where the server has it), and marks each one
 *     the state does not show as unchanged; those are claimed next, by any
 *     worker of any daemon, in parallel.
 *
 * Syncs run in --workers worker processes (worker.c), started on demand and
 * kept: each runs one sync at a time as the one-shot program would, and
 * keeps the logged-in connections of the users it synced last, so an
 * active user's next change costs no process start, connect or login. A
 * user's items go to the worker that synced it last. A crash in one sync
 * takes down one worker only (its item is retried, another worker starts).
 * While a sync runs, the daemon renews its lease every third of --lease; a
 * lease lost (the item was reaped and perhaps claimed by another worker)
 * kills the worker before it writes more. A sync that succeeds finishes its
 * item (a mark made during its sync is still due and runs next: no lost
 * change); one that fails is retried with a backoff.
 *
 * Every --poll seconds each known user gets a whole-user mark, which is how
 * changes that bypassed the proxy (LMTP delivery, Sieve, expiry) are found;
 * "rep:sweep_all" (set by a proxy that lost marks) marks every known user
 * at once. Expired leases of dead workers are reaped every few seconds.
 *
 * Credentials never go to Redis: the children log in with the daemon's own
 * options (an admin or master user: --authuser1/2, or Dovecot's
 * "user*master"), passwords handed down in IMAPSYNC_PASSWORD1/2, not argv.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>

#include "imapferry/log.h"
#include "imapferry/prom.h"
#include "imapferry/mutf7.h"
#include "imapferry/rkeys.h"
#include "imapferry/rqueue.h"
#include "nstatus.h"
#include "options.h"
#include "sync.h"
#include "worker.h"

#define DM_TICK_MS      100    /* the loop's period */
#define DM_CLAIM_MS     20     /* how often free workers look for due items */
#define DM_REAP_MS      2000   /* reaper, sweep-all and heartbeat period */
#define DM_BEAT_TTL_MS  10000  /* a daemon not heard of this long no longer counts */
#define DM_RETRY_MIN_MS 2000   /* backoff of a failed sync: 2 s, doubling */
#define DM_RETRY_MAX_MS 300000 /* ... up to 5 min */
#define DM_USERS_MAX    100000 /* users kept in memory (the poll set lives in Redis) */
#define DM_STOP_GRACE_S 30     /* children get this long after SIGTERM */
#define DM_AFFINITY     32     /* users remembered per worker (its pool holds their connections) */
#define DM_FAILS_SLOTS  4096   /* failure counts kept for the backoff */
#define DM_EXIT_WAIT_MS 3000   /* workers get this long to log out when the daemon ends */
/* --delete2: a folder a MOVE left waits while the target's sync runs,
 * asking again every DM_MOVE_RETRY_MS, for DM_MOVE_WAIT_MS at most; one that
 * waited that long does not wait again for DM_MOVE_REST_MS (move_waits()) */
#define DM_MOVE_RETRY_MS 100
#define DM_MOVE_WAIT_MS  3000
#define DM_MOVE_REST_MS  60000

struct dm_fail {
	uint32_t id; /* which item (fail_id()), 0 = free */
	unsigned count;
	int64_t move_wait_ms; /* waiting for a MOVE's target since (Redis clock), or 0 */
	int64_t move_rest_ms; /* waits no more until then (it waited the longest) */
};

/* A worker process (worker.c) and the users whose connections it keeps. */
struct dm_worker {
	pid_t pid; /* 0: none running */
	int fd;    /* our end of its socketpair, -1 when closed */
	struct event *ev;
	char rbuf[64];
	size_t rlen;
	char *recent[DM_AFFINITY]; /* most recent first */
};

struct dm_job {
	pid_t pid;            /* its worker's, while it runs; 0 = free slot */
	struct rq_item *item; /* array of one, from rq_claim_any() */
	struct timespec started, renewed;
	long long wall_ms; /* when it started, for the "window" of its log lines */
	char *user, *folder;
	char *fence; /* --fence: "member<TAB>owner" of its item */
	int full;    /* a full check (--nostate), not a quick check */
	char logpath[512];
	unsigned long long messages, bytes; /* copied, as its worker answered */
};

/* Failed syncs by class, from the exit code (imapsync's classes, sync.h). */
enum dm_err {
	DM_ERR_CONNECT1,
	DM_ERR_CONNECT2,
	DM_ERR_TLS,
	DM_ERR_AUTH1,
	DM_ERR_AUTH2,
	DM_ERR_APPEND,
	DM_ERR_FETCH,
	DM_ERR_CREATE,
	DM_ERR_SELECT,
	DM_ERR_FLAGS,
	DM_ERR_CRASH, /* the worker died (a signal) */
	DM_ERR_OTHER, /* 111 and anything else */
	DM_ERR_COUNT
};

static const char *const dm_err_names[DM_ERR_COUNT] = {
        "connect_host1", "connect_host2", "tls",    "auth_host1", "auth_host2", "append",
        "fetch",         "create",        "select", "flags",      "crash",      "other",
};

/* Each of imapsync's error classes (sync.h) as counted here. */
static const enum dm_err dm_err_of[SY_ERR_COUNT] = {
        [SY_ERR_UNCLASSIFIED] = DM_ERR_OTHER, [SY_ERR_CONNECT1] = DM_ERR_CONNECT1,
        [SY_ERR_CONNECT2] = DM_ERR_CONNECT2,  [SY_ERR_TLS] = DM_ERR_TLS,
        [SY_ERR_AUTH1] = DM_ERR_AUTH1,        [SY_ERR_AUTH2] = DM_ERR_AUTH2,
        [SY_ERR_APPEND] = DM_ERR_APPEND,      [SY_ERR_FETCH] = DM_ERR_FETCH,
        [SY_ERR_CREATE] = DM_ERR_CREATE,      [SY_ERR_SELECT] = DM_ERR_SELECT,
        [SY_ERR_FLAGS] = DM_ERR_FLAGS,        [SY_ERR_EXCEEDED] = DM_ERR_OTHER,
};

/* A sync's exit code back to its class (the codes: sy_err_exit_code()). */
static enum dm_err err_class(int code)
{
	for (int c = 0; c < SY_ERR_COUNT; c++) {
		if (sy_err_exit_code((enum sy_err)c) == code)
			return dm_err_of[c];
	}
	return code > 128 && code < 128 + 65 ? DM_ERR_CRASH : DM_ERR_OTHER;
}

/* Replication lag buckets (seconds): the targets are 0.3 s (median)
 * and 1 s (p99); polls of users that bypassed the proxy are minutes. */
static const double dm_lag_le[] = {0.05, 0.1, 0.2, 0.3, 0.5, 1, 2, 5, 10, 30, 60, 300, 3600};
#define DM_LAG_N (sizeof(dm_lag_le) / sizeof(dm_lag_le[0]))

struct dm_user {
	char *user1, *user2;
	char *pw1, *pw2; /* imapsync's batch form "user1;password1;user2;password2", or NULL */
	/* progress, as this daemon saw it */
	int checked;       /* a whole-user quick check has run */
	unsigned pending;  /* folders its last quick check marked, not yet synced */
	unsigned folders;  /* folders it counted */
	time_t last_check; /* last whole-user quick check that ended */
};

struct daemon {
	struct sy_options *o;
	int argc;
	char **argv;
	pid_t pid;
	struct rq *q;
	char worker[RQ_WORKER_MAX];
	struct event_base *base;
	struct event *tick, *claim, *sigs[3];
	unsigned rr;            /* the shard fill_workers() looks at first */
	unsigned long connects; /* rq_connects() when last looked at */
	struct dm_fail *fails;  /* [DM_FAILS_SLOTS] */
	struct evhttp *http;
	struct dm_job *jobs;       /* [workers] */
	struct dm_worker *workers; /* [workers]: job i runs on worker i */
	unsigned njobs;
	struct dm_user *users;
	size_t nusers;
	struct timespec last_reap;
	long live_daemons; /* sharing --maxconnections (rq_daemon_beat()), >= 1 */
	int stopping;
	struct timespec stop_at;
	/* metrics */
	unsigned long long started, ok, failed, lost, polled, marks;
	unsigned long long messages, bytes;      /* copied by the syncs that ended */
	unsigned long long errors[DM_ERR_COUNT]; /* failed syncs by class */
	unsigned long long lag_counts[DM_LAG_N + 1];
	struct prom_hist lag; /* folder items: due time to the end of the sync */
};

/*
 * A worker's pool per server: --maxconnections is shared by every live
 * daemon (rep:daemons), split evenly among this daemon's workers, less
 * each running sync's own connection.
 */
static long long pool_share(const struct daemon *d, long daemons)
{
	long long s = d->o->maxconns / (daemons > 0 ? daemons : 1) / d->o->workers - 1;

	return s < 0 ? 0 : s;
}

/* The heartbeat: how many daemons share the limit now. */
static void daemon_beat(struct daemon *d)
{
	long n = rq_daemon_beat(d->q, d->worker, DM_BEAT_TTL_MS);

	if (n < 1 || n == d->live_daemons)
		return;
	log_msg(LOG_LVL_NOTICE, "daemon",
	        "daemons sharing --maxconnections %lld: %ld; each worker here keeps at most %lld "
	        "idle connection%s per server",
	        d->o->maxconns, n, pool_share(d, n), pool_share(d, n) == 1 ? "" : "s");
	d->live_daemons = n;
}

static long long wall_ms(void)
{
	struct timespec now;

	clock_gettime(CLOCK_REALTIME, &now);
	return (long long)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

static double since(const struct timespec *t)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - t->tv_sec) + (double)(now.tv_nsec - t->tv_nsec) / 1e9;
}

/* --- users: who the daemon polls, and each one's host2 name --- */

static const char *user2_of(const struct daemon *d, const char *user1)
{
	for (size_t i = 0; i < d->nusers; i++) {
		if (strcmp(d->users[i].user1, user1) == 0)
			return d->users[i].user2;
	}
	return user1;
}

static int user_known(const struct daemon *d, const char *user1)
{
	for (size_t i = 0; i < d->nusers; i++) {
		if (strcmp(d->users[i].user1, user1) == 0)
			return 1;
	}
	return 0;
}

static const struct dm_user *user_of(const struct daemon *d, const char *user1)
{
	for (size_t i = 0; i < d->nusers; i++) {
		if (strcmp(d->users[i].user1, user1) == 0)
			return &d->users[i];
	}
	return NULL;
}

static void user_add(struct daemon *d, const char *u1, const char *u2)
{
	if (user_known(d, u1) || d->nusers >= DM_USERS_MAX)
		return;
	d->users = realloc(d->users, (d->nusers + 1) * sizeof(*d->users));
	if (d->users == NULL)
		abort();
	memset(&d->users[d->nusers], 0, sizeof(d->users[0]));
	d->users[d->nusers].user1 = strdup(u1);
	d->users[d->nusers].user2 = strdup(u2 != NULL ? u2 : u1);
	if (d->users[d->nusers].user1 == NULL || d->users[d->nusers].user2 == NULL)
		abort();
	d->nusers++;
}

/* --users FILE: "user1" or "user1 user2" per line; # comments. Every user
 * gets a whole-user mark now (the bulk start) and a place in the poll set. */
static int load_users(struct daemon *d)
{
	FILE *fp = fopen(d->o->users, "r");
	char *line = NULL;
	size_t cap = 0;
	int64_t now;
	unsigned n = 0, lineno = 0;

	if (fp == NULL) {
		log_msg(LOG_LVL_ERROR, "daemon", "cannot read --users %s: %s", d->o->users,
		        strerror(errno));
		return -1;
	}
	if (rq_now(d->q, &now) < 0)
		now = 0;
	{
		struct stat sb;

		if (fstat(fileno(fp), &sb) == 0 && (sb.st_mode & 077) != 0)
			log_msg(LOG_LVL_WARN, "daemon",
			        "%s is readable by others: if it holds passwords "
			        "(user1;password1;user2;password2), chmod 600 it",
			        d->o->users);
	}
	while (getline(&line, &cap, fp) > 0) {
		char u1[512], u2[512];
		int k;

		lineno++;
		if (line[0] == '#')
			continue;
		if (strchr(line, ';') != NULL) {
			/* imapsync's batch form: user1;password1;user2;password2,
			 * often with a ';' after the last field. Fields split one
			 * by one (strtok would skip an empty one and shift the
			 * others: a password taken for a user name). */
			char *f[5] = {"", "", "", "", ""}, *rest = line;
			int nf = 0;

			line[strcspn(line, "\r\n")] = '\0';
			while (rest != NULL && nf < 5)
				f[nf++] = strsep(&rest, ";");
			if (nf == 5 && f[4][0] == '\0' && rest == NULL)
				nf = 4; /* the trailing ';' */
			if (nf != 4 || rest != NULL || f[0][0] == '\0' || f[1][0] == '\0' ||
			    f[2][0] == '\0' || f[3][0] == '\0') {
				log_msg(LOG_LVL_WARN, "daemon",
				        "%s:%u: want user1;password1;user2;password2, line ignored",
				        d->o->users, lineno);
				continue;
			}
			snprintf(u1, sizeof(u1), "%s", f[0]);
			user_add(d, f[0], f[2]);
			if (user_known(d, f[0])) {
				struct dm_user *u = (struct dm_user *)user_of(d, f[0]);

				free(u->pw1);
				free(u->pw2);
				u->pw1 = strdup(f[1]);
				u->pw2 = strdup(f[3]);
			}
		} else if ((k = sscanf(line, "%511s %511s", u1, u2)) >= 1) {
			user_add(d, u1, k == 2 ? u2 : NULL);
		} else {
			continue;
		}
		if (rq_mark(d->q, u1, RK_FOLDER_ALL, 0) < 0 ||
		    rq_poll_set(d->q, u1, now + d->o->poll * 1000) < 0)
			log_msg(LOG_LVL_WARN, "daemon", "%s:%u: cannot enqueue %s: %s", d->o->users,
			        lineno, u1, rq_error(d->q));
		else
			n++;
	}
	free(line);
	fclose(fp);
	log_msg(LOG_LVL_NOTICE, "daemon", "%u users from %s enqueued for a full check", n,
	        d->o->users);
	return 0;
}

/* --- children --- */

/* Options the daemon does not pass down (and whether they take a value). */
static int dropped_option(const char *arg, int own_creds, int *takes_value_r)
{
	static const struct {
		const char *name;
		int value;
	} drop[] = {
	        {"daemon", 0},        {"workers", 1},        {"users", 1},
	        {"poll", 1},          {"pollactive", 1},     {"poll-active", 1},
	        {"lease", 1},         {"http", 1},           {"user1", 1},
	        {"user2", 1},         {"password1", 1},      {"password2", 1},
	        {"folder", 1},        {"folderrec", 1},      {"pidfile", 1},
	        {"logfile", 1},       {"quickcheck", 0},     {"notifystatus", 1},
	        {"notify-status", 1}, {"maxconnections", 1}, {"max-connections", 1},
	        {"fence", 1},
	};
	const char *name = arg, *eq;
	size_t len;

	if (name[0] != '-')
		return 0;
	while (*name == '-')
		name++;
	eq = strchr(name, '=');
	len = eq != NULL ? (size_t)(eq - name) : strlen(name);
	for (size_t i = 0; i < sizeof(drop) / sizeof(drop[0]); i++) {
		if (strlen(drop[i].name) == len && strncmp(drop[i].name, name, len) == 0) {
			*takes_value_r = drop[i].value && eq == NULL;
			return 1;
		}
	}
	/* a user with its own passwords logs in as itself, not as the admin */
	if (own_creds && len == 9 &&
	    (strncmp(name, "authuser1", 9) == 0 || strncmp(name, "authuser2", 9) == 0 ||
	     strncmp(name, "passfile1", 9) == 0 || strncmp(name, "passfile2", 9) == 0)) {
		*takes_value_r = eq == NULL;
		return 1;
	}
	return 0;
}

static char **child_argv(const struct daemon *d, const char *user, const char *folder, int full,
                         const char *fence)
{
	char **av = calloc((size_t)d->argc + 16, sizeof(*av));
	int n = 0;

	if (av == NULL)
		abort();
	const struct dm_user *u = user_of(d, user);
	int own = u != NULL && u->pw1 != NULL;

	av[n++] = d->argv[0];
	for (int i = 1; i < d->argc; i++) {
		int takes;

		if (dropped_option(d->argv[i], own, &takes)) {
			i += takes;
			continue;
		}
		av[n++] = d->argv[i];
	}
	av[n++] = "--user1";
	av[n++] = (char *)user;
	av[n++] = "--user2";
	av[n++] = (char *)user2_of(d, user);
	av[n++] = "--pidfile";
	av[n++] = ""; /* none: the syncs run side by side */
	av[n++] = "--nolog";
	av[n++] = "--nofoldersizes";
	/* a replica mirrors: in-folder duplicates are copied too (imapsync
	 * skips them by default; --nosyncduplicates keeps that) */
	if (!sy_options_given(d->o, SY_OPT_SYNCDUPLICATES))
		av[n++] = "--syncduplicates";
	/* the sync's state is written only while this job's lease holds */
	av[n++] = "--fence";
	av[n++] = (char *)fence;
	if (strcmp(folder, RK_FOLDER_ALL) == 0) {
		av[n++] = "--quickcheck";
		/* the daily full check trusts no stored state: it forgets it and
		 * marks every folder, whose syncs identify every message again by
		 * headers (no body is read unless missing) */
		if (full)
			av[n++] = "--nostate";
	} else {
		av[n++] = "--folder";
		av[n++] = (char *)folder; /* host1's name, mUTF-7 (job_start) */
	}
	av[n] = NULL;
	return av;
}

/* A job's item is its own copy (fill_workers()). */
static void item_free(struct rq_item *one)
{
	if (one == NULL)
		return;
	free((char *)one->user);
	free((char *)one->folder);
	free((char *)one->member);
	free((char *)one->owner);
	free(one);
}

static void job_clear(struct dm_job *j)
{
	if (j->logpath[0] != '\0')
		unlink(j->logpath);
	item_free(j->item);
	free(j->user);
	free(j->folder);
	free(j->fence);
	memset(j, 0, sizeof(*j));
}

/* What went wrong, from a sync's output: its first "Err n/N: ..." line (the
 * error listing at the end of a run), else the last line that mentions an
 * error, else the last line. */
static void job_last_error(const struct dm_job *j, char *buf, size_t size)
{
	FILE *fp = fopen(j->logpath, "r");
	char line[1024];
	int listed = 0;

	buf[0] = '\0';
	if (fp == NULL)
		return;
	while (fgets(line, sizeof(line), fp) != NULL) {
		line[strcspn(line, "\r\n")] = '\0';
		if (strncmp(line, "Err ", 4) == 0 && strchr(line, ':') != NULL) {
			if (!listed)
				snprintf(buf, size, "%s", line);
			listed = 1;
			continue;
		}
		if (listed || line[0] == '\0' ||
		    strncmp(line, "Exiting with return value", 25) == 0)
			continue;
		if (strstr(line, "rror") != NULL || strstr(line, "failure") != NULL ||
		    strstr(buf, "rror") == NULL)
			snprintf(buf, size, "%s", line);
	}
	fclose(fp);
}

/* --- workers --- */

static void job_done(struct daemon *d, struct dm_job *j, int code);
static void fill_workers(struct daemon *d);

static void worker_close(struct dm_worker *w)
{
	if (w->ev != NULL)
		event_free(w->ev);
	w->ev = NULL;
	if (w->fd >= 0)
		close(w->fd);
	w->fd = -1;
	w->rlen = 0;
}

/* Reads worker k's answers: "<exit code>\n" ends its job. */
static void worker_read(struct daemon *d, unsigned k)
{
	struct dm_worker *w = &d->workers[k];
	ssize_t n;

	while (w->fd >= 0) {
		char *nl;

		n = read(w->fd, w->rbuf + w->rlen, sizeof(w->rbuf) - 1 - w->rlen);
		if (n < 0 && (errno == EINTR))
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (n <= 0) {
			/* it died or ended: reap_children() says how */
			worker_close(w);
			return;
		}
		w->rlen += (size_t)n;
		w->rbuf[w->rlen] = '\0';
		while ((nl = strchr(w->rbuf, '\n')) != NULL) {
			int code = 0;
			unsigned long long messages = 0, bytes = 0;

			/* "<exit code> <messages> <bytes>" */
			if (sscanf(w->rbuf, "%d %llu %llu", &code, &messages, &bytes) < 1)
				code = 111;
			if (d->jobs[k].pid > 0) {
				d->jobs[k].messages = messages;
				d->jobs[k].bytes = bytes;
			}

			memmove(w->rbuf, nl + 1, strlen(nl + 1) + 1);
			w->rlen = strlen(w->rbuf);
			if (d->jobs[k].pid > 0)
				job_done(d, &d->jobs[k], code);
		}
		if (w->rlen == sizeof(w->rbuf) - 1) {
			log_msg(LOG_LVL_ERROR, "daemon", "worker %d: garbled answer, stopping it",
			        (int)w->pid);
			kill(w->pid, SIGKILL);
			worker_close(w);
		}
	}
}

static void on_worker_read(evutil_socket_t fd, short what, void *aux);

static int worker_spawn(struct daemon *d, unsigned k)
{
	struct dm_worker *w = &d->workers[k];
	int sv[2];
	pid_t pid;

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
		log_msg(LOG_LVL_ERROR, "daemon", "socketpair: %s", strerror(errno));
		return -1;
	}
	pid = fork();
	if (pid == 0) {
		char fdname[16], share[24];
		char *av[2] = {d->argv[0], NULL};
		int null = open("/dev/null", O_RDWR);

		if (null >= 0) {
			dup2(null, STDIN_FILENO);
			dup2(null, STDOUT_FILENO);
			dup2(null, STDERR_FILENO);
		}
		/* the worker never outlives its daemon (a second daemon's worker
		 * may claim the item once the lease ends), and Ctrl-C on the
		 * terminal reaches the daemon only, which decides */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != d->pid)
			_exit(126);
		setsid();
		fcntl(sv[1], F_SETFD, 0);
		snprintf(fdname, sizeof(fdname), "%d", sv[1]);
		setenv(SY_WORKER_FD_ENV, fdname, 1);
		/* the most its pool may ever hold (this daemon alone); each
		 * job says what it may hold now (job_send()) */
		snprintf(share, sizeof(share), "%lld", pool_share(d, 1));
		setenv(SY_WORKER_POOL_ENV, share, 1);
		signal(SIGTERM, SIG_DFL);
		signal(SIGINT, SIG_DFL);
		execv("/proc/self/exe", av);
		execvp(av[0], av);
		_exit(127);
	}
	close(sv[1]);
	if (pid < 0) {
		log_msg(LOG_LVL_ERROR, "daemon", "fork: %s", strerror(errno));
		close(sv[0]);
		return -1;
	}
	fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK);
	w->pid = pid;
	w->fd = sv[0];
	w->rlen = 0;
	w->ev = event_new(d->base, w->fd, EV_READ | EV_PERSIST, on_worker_read, d);
	if (w->ev == NULL)
		abort();
	event_add(w->ev, NULL);
	for (unsigned i = 0; i < DM_AFFINITY; i++) {
		free(w->recent[i]);
		w->recent[i] = NULL;
	}
	log_msg(LOG_LVL_INFO, "daemon", "worker %u started (pid %d)", k, (int)pid);
	return 0;
}

/* The daemon ends: each worker sees EOF, logs its pooled connections out
 * and exits; those that take too long are killed. */
static void workers_stop(struct daemon *d)
{
	struct timespec t0, tick = {0, 20000000};

	for (unsigned k = 0; k < (unsigned)d->o->workers; k++)
		worker_close(&d->workers[k]);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		unsigned left = 0;

		for (unsigned k = 0; k < (unsigned)d->o->workers; k++) {
			struct dm_worker *w = &d->workers[k];

			if (w->pid > 0 && waitpid(w->pid, NULL, WNOHANG) != 0)
				w->pid = 0;
			if (w->pid > 0)
				left++;
		}
		if (left == 0 || since(&t0) * 1000 > DM_EXIT_WAIT_MS)
			break;
		nanosleep(&tick, NULL);
	}
	for (unsigned k = 0; k < (unsigned)d->o->workers; k++) {
		struct dm_worker *w = &d->workers[k];

		if (w->pid > 0) {
			kill(w->pid, SIGKILL);
			waitpid(w->pid, NULL, 0);
		}
		for (unsigned i = 0; i < DM_AFFINITY; i++)
			free(w->recent[i]);
	}
}

static void on_worker_read(evutil_socket_t fd, short what, void *aux)
{
	struct daemon *d = aux;

	(void)what;
	for (unsigned k = 0; k < (unsigned)d->o->workers; k++) {
		if (d->workers[k].fd == fd) {
			worker_read(d, k);
			fill_workers(d); /* its slot may be free now */
			return;
		}
	}
}

/* user becomes worker k's most recent one */
static void worker_remember(struct dm_worker *w, const char *user)
{
	unsigned i;
	char *keep = NULL;

	for (i = 0; i < DM_AFFINITY && w->recent[i] != NULL; i++) {
		if (strcmp(w->recent[i], user) == 0)
			break;
	}
	if (i < DM_AFFINITY && w->recent[i] != NULL) {
		keep = w->recent[i];
	} else {
		i = DM_AFFINITY - 1;
		free(w->recent[i]);
		keep = strdup(user);
		if (keep == NULL)
			abort();
	}
	memmove(&w->recent[1], &w->recent[0], i * sizeof(w->recent[0]));
	w->recent[0] = keep;
}

static int worker_knows(const struct dm_worker *w, const char *user)
{
	for (unsigned i = 0; i < DM_AFFINITY && w->recent[i] != NULL; i++) {
		if (strcmp(w->recent[i], user) == 0)
			return 1;
	}
	return 0;
}

/* The free slot for user's item: the worker that has its connections, else
 * a running worker, else any; -1 when all are busy. */
static int slot_for(const struct daemon *d, const char *user)
{
	int any = -1, running = -1;

	for (unsigned k = 0; k < (unsigned)d->o->workers; k++) {
		if (d->jobs[k].pid > 0)
			continue;
		if (d->workers[k].pid > 0 && d->workers[k].fd >= 0 &&
		    worker_knows(&d->workers[k], user))
			return (int)k;
		if (running < 0 && d->workers[k].pid > 0 && d->workers[k].fd >= 0)
			running = (int)k;
		if (any < 0)
			any = (int)k;
	}
	return running >= 0 ? running : any;
}

/* One job message (worker.c): u32 length, then NUL-terminated logpath,
 * password1, password2 and the command line. */
static int job_send(struct daemon *d, unsigned k, struct dm_job *j, char **av)
{
	const struct dm_user *u = user_of(d, j->user);
	const char *pw1 = u != NULL && u->pw1 != NULL ? u->pw1 : "";
	const char *pw2 = u != NULL && u->pw2 != NULL ? u->pw2 : "";
	char share[24];
	size_t len, off = 0;
	uint32_t n32;
	char *msg;
	int rc = 0;

	snprintf(share, sizeof(share), "%lld", pool_share(d, d->live_daemons));
	len = strlen(j->logpath) + strlen(pw1) + strlen(pw2) + strlen(share) + 4;
	for (int i = 0; av[i] != NULL; i++)
		len += strlen(av[i]) + 1;
	msg = malloc(len + sizeof(n32));
	if (msg == NULL)
		abort();
	n32 = (uint32_t)len;
	memcpy(msg, &n32, sizeof(n32));
	off = sizeof(n32);
#define PUT(str)                                                                                   \
	do {                                                                                       \
		size_t l_ = strlen(str) + 1;                                                       \
		memcpy(msg + off, (str), l_);                                                      \
		off += l_;                                                                         \
	} while (0)
	PUT(j->logpath);
	PUT(pw1);
	PUT(pw2);
	PUT(share);
	for (int i = 0; av[i] != NULL; i++)
		PUT(av[i]);
#undef PUT
	for (size_t put = 0; put < off;) {
		ssize_t n = write(d->workers[k].fd, msg + put, off - put);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			struct timespec ts = {0, 1000000};

			nanosleep(&ts, NULL); /* a job is small; the worker reads it at once */
			continue;
		}
		if (n < 0) {
			rc = -1;
			break;
		}
		put += (size_t)n;
	}
	explicit_bzero(msg, off);
	free(msg);
	return rc;
}

static int job_start(struct daemon *d, unsigned k, struct rq_item *item)
{
	struct dm_job *j = &d->jobs[k];
	struct dm_worker *w = &d->workers[k];
	const char *folder = item->folder;
	char *raw = NULL, **av;
	const char *err;
	int reused;

	memset(j, 0, sizeof(*j));
	j->item = item;
	j->user = strdup(item->user);
	if (strcmp(folder, RK_FOLDER_ALL) == 0)
		j->folder = strdup(folder);
	else if (mutf7_from_utf8(folder, strlen(folder), &raw, NULL, &err) == 0)
		j->folder = raw; /* marks carry UTF-8; --folder wants host1's mUTF-7 */
	else
		j->folder = strdup(folder);
	if (j->user == NULL || j->folder == NULL)
		abort();
	/* per worker slot: tokens count per shard, so they repeat across shards */
	snprintf(j->logpath, sizeof(j->logpath), "%s/imapferry-daemon-%d-%u.log",
	         d->o->tmpdir != NULL ? d->o->tmpdir : "/tmp", (int)getpid(), k);
	/* the full check's clock is in Redis (rep:{s}:last:<user>): shared by
	 * every daemon, kept across restarts; unknown (Redis away): not now */
	j->full = d->o->fullcheck > 0 && strcmp(folder, RK_FOLDER_ALL) == 0 &&
	          rq_full_due(d->q, j->user, (uint64_t)d->o->fullcheck * 1000u) == 1;
	if ((w->pid <= 0 || w->fd < 0) && worker_spawn(d, k) < 0) {
		j->item = NULL;
		job_clear(j);
		return -1;
	}
	reused = worker_knows(w, j->user);
	if (asprintf(&j->fence, "%.*s\t%s", (int)item->member_len, item->member, item->owner) < 0)
		abort();
	av = child_argv(d, j->user, j->folder, j->full, j->fence);
	if (job_send(d, k, j, av) < 0) {
		log_msg(LOG_LVL_WARN, "daemon", "worker %d: cannot send it a job: %s", (int)w->pid,
		        strerror(errno));
		free(av);
		kill(w->pid, SIGKILL);
		worker_close(w);
		j->item = NULL;
		job_clear(j);
		return -1;
	}
	free(av);
	worker_remember(w, j->user);
	j->pid = w->pid;
	clock_gettime(CLOCK_MONOTONIC, &j->started);
	j->renewed = j->started;
	j->wall_ms = wall_ms();
	d->started++;
	log_msg(LOG_LVL_INFO, "daemon", "sync %s [%s]%s started (worker %d%s, token %llu)", j->user,
	        item->folder, j->full ? " (full check)" : "", (int)w->pid,
	        reused ? ", its connections" : "", (unsigned long long)item->token);
	return 0;
}

/*
 * Failures in a row per item, for the backoff: 2 s, doubling per failure,
 * up to 5 min; a success forgets the item. A direct-mapped table
 * (DM_FAILS_SLOTS): a collision only restarts one item's backoff at 2 s,
 * and memory stays fixed whatever fails. Per daemon: another daemon that
 * claims the item starts at 2 s, which is fine.
 */
static struct dm_fail *fail_slot(struct daemon *d, const struct rq_item *item)
{
	uint32_t h = 2166136261u; /* FNV-1a of the member */

	for (size_t i = 0; i < item->member_len; i++)
		h = (h ^ (unsigned char)item->member[i]) * 16777619u;
	return &d->fails[h % DM_FAILS_SLOTS];
}

static uint32_t fail_id(const struct rq_item *item)
{
	/* a second hash tells items of one slot apart; never 0 (free) */
	return rk_crc16(item->member, item->member_len) | 0x10000u;
}

static unsigned backoff_ms(struct daemon *d, const struct rq_item *item)
{
	struct dm_fail *f = fail_slot(d, item);
	uint64_t ms = DM_RETRY_MIN_MS;

	if (f->id != fail_id(item)) {
		f->id = fail_id(item);
		f->count = 0;
		f->move_wait_ms = 0;
		f->move_rest_ms = 0;
	}
	for (unsigned i = 0; i < f->count && ms < DM_RETRY_MAX_MS; i++)
		ms *= 2;
	if (f->count < 32)
		f->count++;
	return (unsigned)(ms > DM_RETRY_MAX_MS ? DM_RETRY_MAX_MS : ms);
}

static void backoff_forget(struct daemon *d, const struct rq_item *item)
{
	struct dm_fail *f = fail_slot(d, item);

	if (f->id == fail_id(item)) {
		f->count = 0;
		f->move_wait_ms = 0; /* move_rest_ms stays: a sync that ends does not end it */
	}
}

/* The folder syncs a quick check itself marked (a bulk start, a poll) are
 * not the user's activity: without this, every user of a bulk start would
 * be quick-checked again --poll-active later, all at once. */
static int recently_checked(const struct daemon *d, const char *user)
{
	const struct dm_user *u = user_of(d, user);

	return u != NULL && u->last_check != 0 && time(NULL) - u->last_check < d->o->pollactive;
}

/* "Quick check: N of M folders changed" in a --quickcheck child's output. */
static int quickcheck_counts(const struct dm_job *j, unsigned *changed_r, unsigned *total_r)
{
	FILE *fp = fopen(j->logpath, "r");
	char line[512];
	int found = 0;

	if (fp == NULL)
		return -1;
	while (fgets(line, sizeof(line), fp) != NULL) {
		if (sscanf(line, "Quick check: %u of %u folders changed", changed_r, total_r) == 2)
			found = 1;
	}
	fclose(fp);
	return found ? 0 : -1;
}

/* Per-user progress for the logs and /metrics: a user is in sync once its
 * quick check found nothing to do, or every folder it marked was synced. */
static void progress(struct daemon *d, const struct dm_job *j)
{
	struct dm_user *u = (struct dm_user *)user_of(d, j->user);
	unsigned changed, total;

	if (u == NULL)
		return;
	if (strcmp(j->item->folder, RK_FOLDER_ALL) == 0) {
		if (quickcheck_counts(j, &changed, &total) < 0)
			return;
		u->checked = 1;
		u->last_check = time(NULL);
		u->folders = total;
		u->pending = changed;
		if (changed == 0)
			log_msg(LOG_LVL_INFO, "daemon", "user %s: in sync (%u folders)", u->user1,
			        total);
		else
			log_msg(LOG_LVL_INFO, "daemon", "user %s: %u of %u folders to sync",
			        u->user1, changed, total);
	} else if (u->pending > 0 && --u->pending == 0) {
		log_msg(LOG_LVL_NOTICE, "daemon", "user %s: in sync (%u folders)", u->user1,
		        u->folders);
	}
}

static void job_done(struct daemon *d, struct dm_job *j, int code)
{
	double secs = since(&j->started);
	char why[1024], window[96];
	int64_t now;

	/* the sync's wall-clock span and fencing token: two syncs of one
	 * folder never overlap (the lease is the lock), which anyone can check
	 * across daemons from these lines */
	snprintf(window, sizeof(window), "token %llu, window %lld-%lld ms",
	         (unsigned long long)j->item->token, j->wall_ms, wall_ms());
	d->messages += j->messages;
	d->bytes += j->bytes;

	if (code == 0) {
		rq_last_record(d->q, j->user, "daemon", NULL); /* for status and the page */
		if (j->full)
			rq_last_full(d->q, j->user);
		backoff_forget(d, j->item);
		if (rq_finish(d->q, j->item, NULL, NULL) == 1) {
			d->ok++;
			/* from when it was due (the proxy's mark plus its debounce,
			 * a poll's time) to now: what a user waits for */
			if (strcmp(j->item->folder, RK_FOLDER_ALL) != 0 && j->item->due_ms > 0)
				prom_hist_observe(&d->lag,
				                  (double)(wall_ms() - j->item->due_ms) / 1000);
			log_msg(LOG_LVL_INFO, "daemon", "sync %s [%s] done in %.2f s (%s)", j->user,
			        j->item->folder, secs, window);
		} else {
			d->lost++;
			log_msg(LOG_LVL_WARN, "daemon",
			        "sync %s [%s] done in %.2f s (%s) but its lease was lost meanwhile "
			        "(another worker took it): it runs again",
			        j->user, j->item->folder, secs, window);
		}
		/* a folder mark means the user is active (through the proxy):
		 * look for what bypassed it sooner than for idle users */
		if (strcmp(j->item->folder, RK_FOLDER_ALL) != 0 && d->o->pollactive < d->o->poll &&
		    !recently_checked(d, j->user) && rq_now(d->q, &now) == 0)
			rq_poll_sooner(d->q, j->user, now + d->o->pollactive * 1000);
		if (strcmp(j->item->folder, RK_FOLDER_ALL) == 0 || !user_known(d, j->user)) {
			user_add(d, j->user, NULL);
			if (rq_now(d->q, &now) == 0)
				rq_poll_set(d->q, j->user, now + d->o->poll * 1000);
		}
		progress(d, j);
	} else {
		d->failed++;
		d->errors[err_class(code)]++;
		job_last_error(j, why, sizeof(why));
		rq_last_record(d->q, j->user, "daemon", why[0] != '\0' ? why : "sync failed");
		log_msg(LOG_LVL_WARN, "daemon",
		        "sync %s [%s] failed (exit %d) after %.2f s (%s): %s; retrying", j->user,
		        j->item->folder, code, secs, window, why[0] != '\0' ? why : "no output");
		rq_retry(d->q, j->item, backoff_ms(d, j->item));
	}
	job_clear(j);
	d->njobs--;
}

static void reap_children(struct daemon *d)
{
	int status;
	pid_t pid;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		for (unsigned k = 0; k < (unsigned)d->o->workers; k++) {
			struct dm_worker *w = &d->workers[k];

			if (w->pid != pid)
				continue;
			/* an answer it wrote before it ended counts */
			worker_read(d, k);
			worker_close(w);
			w->pid = 0;
			if (d->jobs[k].pid == pid) {
				int code = WIFEXITED(status) ? WEXITSTATUS(status)
				                             : 128 + WTERMSIG(status);

				log_msg(LOG_LVL_WARN, "daemon",
				        "worker %d ended during a sync (%s %d)", (int)pid,
				        WIFEXITED(status) ? "exit" : "signal",
				        WIFEXITED(status) ? code : WTERMSIG(status));
				job_done(d, &d->jobs[k], code == 0 ? 111 : code);
			}
			break;
		}
	}
}

static void renew_leases(struct daemon *d)
{
	unsigned lease = (unsigned)d->o->lease * 1000u;

	for (unsigned i = 0; i < (unsigned)d->o->workers; i++) {
		struct dm_job *j = &d->jobs[i];
		int rc;

		if (j->pid <= 0 || since(&j->renewed) < d->o->lease / 3.0)
			continue;
		rc = rq_renew(d->q, j->item, lease);
		if (rc == 1) {
			clock_gettime(CLOCK_MONOTONIC, &j->renewed);
		} else if (rc == 0 || since(&j->renewed) > d->o->lease * 0.9) {
			/* lost, or unknown for too long: stop before it writes more */
			log_msg(LOG_LVL_WARN, "daemon", "sync %s [%s]: lease lost, stopping it",
			        j->user, j->item->folder);
			kill(j->pid, SIGKILL);
		}
	}
}

/* --- the loop --- */

static void poll_users(struct daemon *d)
{
	int64_t now;

	if (rq_now(d->q, &now) < 0)
		return;
	for (unsigned s = 0; s < RK_SHARDS; s++) {
		char **users = NULL;
		size_t n = 0;

		if (rq_poll_due(d->q, s, 100, (unsigned)d->o->lease * 1000u, &users, &n) < 0)
			break;
		for (size_t i = 0; i < n; i++) {
			if (rq_mark(d->q, users[i], RK_FOLDER_ALL, 0) == 0) {
				d->polled++;
				rq_poll_set(d->q, users[i], now + d->o->poll * 1000);
			}
		}
		rq_users_free(&users, n);
	}
}

static void housekeeping(struct daemon *d)
{
	int64_t flag;
	int rc;

	if (since(&d->last_reap) * 1000 < DM_REAP_MS)
		return;
	clock_gettime(CLOCK_MONOTONIC, &d->last_reap);
	daemon_beat(d);
	for (unsigned s = 0; s < RK_SHARDS; s++) {
		unsigned back = 0;

		if (rq_reap(d->q, s, &back) == 0 && back > 0)
			log_msg(LOG_LVL_NOTICE, "daemon",
			        "shard %u: %u expired leases returned to the queue", s, back);
	}
	rc = rq_sweep_all_take(d->q, &flag);
	if (rc == 0 && rq_connects(d->q) != d->connects) {
		/* Redis went away and came back (perhaps restarted empty): due
		 * items and state may be lost; a quick check of every user finds
		 * and rebuilds them */
		if (d->connects != 0) {
			log_msg(LOG_LVL_NOTICE, "daemon",
			        "Redis reconnected: quick check of all %zu known users", d->nusers);
			rc = 1;
		}
		d->connects = rq_connects(d->q);
	}
	if (rc != 0) {
		/* a proxy lost marks it could not remember per user (or the flag's
		 * state is unknown): quick-check everyone, the users this daemon
		 * knows and every user of the poll sets (those other daemons, or
		 * this one before a restart, put there) */
		long polled = 0;

		for (size_t i = 0; i < d->nusers; i++)
			rq_mark(d->q, d->users[i].user1, RK_FOLDER_ALL, 0);
		for (unsigned s = 0; s < RK_SHARDS; s++) {
			long n = rq_mark_polled(d->q, s);

			if (n > 0)
				polled += n;
		}
		log_msg(LOG_LVL_NOTICE, "daemon",
		        "rep:sweep_all: quick check of all %zu known users and %ld of the poll "
		        "sets",
		        d->nusers, polled);
	}
	poll_users(d);
}

/*
 * A user being cut over (FREEZE: the cutover runs its own final sync) or
 * already on the destination (DST: the source is history; a sync would
 * undo the user's new changes there, and with --delete2 delete new mail)
 * is not synced by the daemon. Takes the item (finished or put back) and
 * returns 1 then; 0 for a user on the source. An unknown route (Redis
 * error) puts the item back too: never guess.
 */
static int route_keeps_us_out(struct daemon *d, struct rq_item *one)
{
	enum rk_route_state st;

	if (rq_route_get(d->q, one->user, &st) == 0 && st == RK_ROUTE_SRC)
		return 0;
	if (st == RK_ROUTE_DST && rq_finish(d->q, one, NULL, NULL) >= 0) {
		log_msg(LOG_LVL_INFO, "daemon",
		        "user %s is on the destination (cut over): [%s] is not synced, and the "
		        "user is no longer polled",
		        one->user, one->folder);
		rq_poll_remove(d->q, one->user);
	} else {
		rq_retry(d->q, one, DM_RETRY_MIN_MS);
	}
	item_free(one);
	return 1;
}

/*
 * --delete2 and a MOVE through the proxy: the target folder's sync copies
 * the moved messages inside the destination from the source folder's copies
 * there (the move hint), and the source folder's sync deletes those copies.
 * The proxy marks the target first and sooner, so it is usually claimed
 * first; a source folder claimed while its move target's sync is in flight
 * (another worker, another daemon) waits for it. Only for one in flight: a
 * folder that waits is put back due, so two folders with moves into each
 * other never wait for each other. Bounded: DM_MOVE_WAIT_MS at a time, then
 * no wait for DM_MOVE_REST_MS, so a target whose sync runs long (or whose
 * worker died: its lease still runs) holds the source's expunges back
 * little; the worst case is an upload instead of a copy. Returns 1 when the
 * item should wait.
 */
static int move_waits(struct daemon *d, const struct rq_item *item)
{
	struct dm_fail *f;
	int busy;

	if (!d->o->delete2 || strcmp(item->folder, RK_FOLDER_ALL) == 0)
		return 0;
	f = fail_slot(d, item);
	if (f->id != fail_id(item)) {
		f->id = fail_id(item);
		f->count = 0;
		f->move_wait_ms = 0;
		f->move_rest_ms = 0;
	}
	if (item->claimed_ms < f->move_rest_ms)
		return 0;
	if (f->move_wait_ms != 0 && item->claimed_ms - f->move_wait_ms > DM_MOVE_WAIT_MS) {
		f->move_wait_ms = 0;
		f->move_rest_ms = item->claimed_ms + DM_MOVE_REST_MS;
		return 0;
	}
	busy = rq_move_wait(d->q, item);
	if (busy != 1) {
		f->move_wait_ms = 0;
		return 0;
	}
	if (f->move_wait_ms == 0) {
		f->move_wait_ms = item->claimed_ms;
		log_msg(LOG_LVL_INFO, "daemon",
		        "sync %s [%s] waits for the sync of a folder a MOVE put its messages in "
		        "(--delete2)",
		        item->user, item->folder);
	}
	return 1;
}

/* Starts the job of one claimed item (the array is freed by the caller). */
static void start_item(struct daemon *d, const struct rq_item *item)
{
	struct rq_item *one = malloc(sizeof(*one));
	int slot;

	/* each job owns a copy of its item */
	if (one == NULL)
		abort();
	*one = *item;
	one->user = strdup(item->user);
	one->folder = strdup(item->folder);
	one->member = strndup(item->member, item->member_len);
	one->owner = strdup(item->owner);
	if (one->user == NULL || one->folder == NULL || one->member == NULL || one->owner == NULL)
		abort();
	if (route_keeps_us_out(d, one))
		return;
	if (move_waits(d, one)) {
		rq_retry(d->q, one, DM_MOVE_RETRY_MS);
		item_free(one);
		return;
	}
	slot = slot_for(d, one->user);
	if (slot < 0 || job_start(d, (unsigned)slot, one) < 0) {
		rq_retry(d->q, one, DM_RETRY_MIN_MS);
		item_free(one);
		return;
	}
	d->njobs++;
}

/*
 * Claims due items for the free workers. Called every DM_CLAIM_MS and when
 * a sync ends, so it first asks which shards have anything due (one
 * pipelined round trip) and runs the claim script only on those.
 */
static void fill_workers(struct daemon *d)
{
	int64_t now, first[RK_SHARDS];

	if (d->stopping || d->njobs >= (unsigned)d->o->workers)
		return;
	if (rq_due_peek(d->q, &now, first) < 0) {
		static time_t last;

		if (time(NULL) != last)
			log_msg(LOG_LVL_WARN, "daemon", "Redis: %s", rq_error(d->q));
		last = time(NULL);
		return;
	}
	for (unsigned i = 0; i < RK_SHARDS && d->njobs < (unsigned)d->o->workers; i++) {
		unsigned shard = (d->rr + i) % RK_SHARDS;
		struct rq_item *items = NULL;
		size_t n = 0;

		if (first[shard] < 0 || first[shard] > now)
			continue;
		if (rq_claim(d->q, shard, d->worker, (unsigned)d->o->workers - d->njobs,
		             (unsigned)d->o->lease * 1000u, &items, &n) < 0) {
			log_msg(LOG_LVL_WARN, "daemon", "Redis: %s", rq_error(d->q));
			rq_items_free(&items, n);
			break;
		}
		for (size_t k = 0; k < n; k++)
			start_item(d, &items[k]);
		rq_items_free(&items, n);
	}
	d->rr = (d->rr + 1) % RK_SHARDS; /* no shard is always first */
}

static void on_claim(evutil_socket_t fd, short what, void *aux)
{
	(void)fd;
	(void)what;
	fill_workers(aux);
}

static void on_tick(evutil_socket_t fd, short what, void *aux)
{
	struct daemon *d = aux;

	(void)fd;
	(void)what;
	reap_children(d);
	renew_leases(d);
	if (d->stopping) {
		if (d->njobs == 0) {
			event_base_loopbreak(d->base);
			return;
		}
		if (since(&d->stop_at) > DM_STOP_GRACE_S) {
			for (unsigned i = 0; i < (unsigned)d->o->workers; i++) {
				if (d->jobs[i].pid > 0)
					kill(d->jobs[i].pid, SIGTERM);
			}
		}
		return;
	}
	housekeeping(d);
	fill_workers(d);
}

static void on_signal(evutil_socket_t sig, short what, void *aux)
{
	struct daemon *d = aux;

	(void)what;
	if (sig == SIGCHLD) {
		reap_children(d);
		fill_workers(d);
		return;
	}
	if (!d->stopping) {
		log_msg(LOG_LVL_NOTICE, "daemon",
		        "signal %d: no new syncs; waiting for %u running ones", (int)sig, d->njobs);
		d->stopping = 1;
		clock_gettime(CLOCK_MONOTONIC, &d->stop_at);
	}
}

/* --- /metrics and /healthz --- */

static void http_metrics(struct evhttp_request *req, void *aux)
{
	struct daemon *d = aux;
	struct evbuffer *b = evbuffer_new();
	struct rq_stats qs;
	int qok;

	if (b == NULL) {
		evhttp_send_error(req, HTTP_INTERNAL, NULL);
		return;
	}
	qok = rq_stats(d->q, &qs) == 0;
	prom_metric(b, "imapferry_sync_jobs_running", "gauge", "Syncs running now.", d->njobs);
	prom_metric(b, "imapferry_sync_jobs_started_total", "counter", "Syncs started.",
	            d->started);
	prom_metric(b, "imapferry_sync_jobs_ok_total", "counter", "Syncs that succeeded.", d->ok);
	prom_metric(b, "imapferry_sync_jobs_failed_total", "counter",
	            "Syncs that failed (retried).", d->failed);
	prom_metric(b, "imapferry_sync_jobs_lost_total", "counter",
	            "Syncs whose lease was lost before they finished.", d->lost);
	prom_metric(b, "imapferry_sync_users_polled_total", "counter",
	            "Whole-user quick checks started by the poll schedule.", d->polled);
	prom_metric(b, "imapferry_sync_messages_copied_total", "counter",
	            "Messages copied to host2 by the syncs that ended.", d->messages);
	prom_metric(b, "imapferry_sync_bytes_copied_total", "counter",
	            "Bytes copied to host2 by the syncs that ended.", d->bytes);
	prom_labeled(b, "imapferry_sync_errors_total", "counter",
	             "Failed syncs by error class (from imapsync's exit codes).", "class",
	             dm_err_names, d->errors, DM_ERR_COUNT);
	prom_hist_write(b, "imapferry_sync_lag_seconds",
	                "From a folder item's due time (the proxy's mark plus its debounce) to the "
	                "end of its successful sync.",
	                &d->lag);
	{
		unsigned long long in_sync = 0, pending = 0;

		for (size_t i = 0; i < d->nusers; i++) {
			if (d->users[i].checked && d->users[i].pending == 0)
				in_sync++;
			pending += d->users[i].pending;
		}
		prom_metric(b, "imapferry_sync_users_known", "gauge", "Users this daemon polls.",
		            d->nusers);
		prom_metric(b, "imapferry_sync_users_in_sync", "gauge",
		            "Users whose last quick check found nothing left to sync.", in_sync);
		prom_metric(b, "imapferry_sync_folders_pending", "gauge",
		            "Folders quick checks marked that are not synced yet.", pending);
	}
	prom_metric(b, "imapferry_sync_daemons", "gauge",
	            "Daemons sharing --maxconnections (their heartbeats in Redis).",
	            (unsigned long long)d->live_daemons);
	prom_metric(b, "imapferry_sync_pool_limit", "gauge",
	            "Idle connections per server each worker of this daemon may keep now.",
	            (unsigned long long)pool_share(d, d->live_daemons));
	prom_metric(b, "imapferry_sync_redis_up", "gauge", "1 when Redis answered this scrape.",
	            qok);
	if (qok) {
		prom_metric(b, "imapferry_sync_queue_due", "gauge",
		            "(user, folder) items waiting, debouncing ones included.", qs.due);
		prom_metric(b, "imapferry_sync_queue_inflight", "gauge", "Items being synced.",
		            qs.inflight);
		prom_metric(b, "imapferry_sync_queue_oldest_due_age_seconds", "gauge",
		            "Age of the oldest due item: the replication lag's upper bound.",
		            qs.oldest_due_age_ms / 1000);
	}
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
	                  "text/plain; version=0.0.4");
	evhttp_send_reply(req, HTTP_OK, "OK", b);
	evbuffer_free(b);
}

static void http_healthz(struct evhttp_request *req, void *aux)
{
	struct daemon *d = aux;
	struct evbuffer *b = evbuffer_new();
	int64_t now;
	int ok = rq_now(d->q, &now) == 0;

	if (b == NULL) {
		evhttp_send_error(req, HTTP_INTERNAL, NULL);
		return;
	}
	evbuffer_add_printf(b, "%s\n", ok ? "ok" : "redis unavailable");
	evhttp_send_reply(req, ok ? HTTP_OK : 503, ok ? "OK" : "Service Unavailable", b);
	evbuffer_free(b);
}

static int http_start(struct daemon *d)
{
	char host[256];
	int port;
	const char *unix_path;

	if (d->o->http == NULL)
		return 0;
	if (rq_addr_parse(d->o->http, host, sizeof(host), &port, &unix_path) < 0 ||
	    unix_path != NULL) {
		log_msg(LOG_LVL_ERROR, "daemon", "--http %s: want ADDR:PORT", d->o->http);
		return -1;
	}
	d->http = evhttp_new(d->base);
	if (d->http == NULL || evhttp_bind_socket(d->http, host, (ev_uint16_t)port) < 0) {
		log_msg(LOG_LVL_ERROR, "daemon", "--http %s: cannot listen", d->o->http);
		return -1;
	}
	evhttp_set_cb(d->http, "/metrics", http_metrics, d);
	evhttp_set_cb(d->http, "/healthz", http_healthz, d);
	return 0;
}

int sy_daemon_main(struct sy_options *o, int argc, char **argv)
{
	struct daemon d;
	char host[256], err[4096];
	const char *unix_path, *error;
	int port, code = 0;
	static const int sigs[3] = {SIGTERM, SIGINT, SIGCHLD};
	struct sy_nstatus *ns = NULL; /* --notifystatus (nstatus.h) */

	memset(&d, 0, sizeof(d));
	log_set_level(LOG_LVL_INFO);
	d.o = o;
	d.pid = getpid();
	d.lag.le = dm_lag_le;
	d.lag.n = DM_LAG_N;
	d.lag.counts = d.lag_counts;
	d.argc = argc;
	d.argv = argv;
	if (o->redis == NULL ||
	    rq_addr_parse(o->redis, host, sizeof(host), &port, &unix_path) < 0) {
		fprintf(stderr, "--daemon needs --redis HOST:PORT (or a socket path)\n");
		return SY_EX_USAGE;
	}
	if (o->workers < 1 || o->workers > 256 || o->poll < 1 || o->lease < 3) {
		fprintf(stderr, "--workers 1..256, --poll >= 1 and --lease >= 3 please\n");
		return SY_EX_USAGE;
	}
	if (o->maxconns < o->workers) {
		fprintf(stderr,
		        "--maxconnections %lld is below --workers %lld: each running sync needs a "
		        "connection to each server\n",
		        o->maxconns, o->workers);
		return SY_EX_USAGE;
	}
	if (sy_options_resolve_passwords(o, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s\n", err);
		return SY_EX_NOINPUT;
	}
	/* the children get the passwords from the environment, never argv */
	for (int i = 0; i < 2; i++) {
		char name[32];

		snprintf(name, sizeof(name), "IMAPSYNC_PASSWORD%d", i + 1);
		if (o->acc[i].password != NULL)
			setenv(name, o->acc[i].password, 1);
	}
	d.q = rq_open(unix_path != NULL ? NULL : host, port, unix_path, 2000, &error);
	if (d.q == NULL) {
		fprintf(stderr, "Redis %s: %s\n", o->redis, error);
		return 1;
	}
	if (rq_is_cluster(d.q) == 1 && o->notifystatus != NULL) {
		/* Keyspace notifications are per node, and Dovecot's redis dict
		 * does not follow a cluster's redirections either. */
		fprintf(stderr,
		        "Redis %s is a Redis Cluster node: --notifystatus needs a standalone Redis "
		        "(Dovecot's notify_status writes to one Redis)\n",
		        o->redis);
		rq_close(&d.q);
		return 1;
	}
	{
		/* the name of this daemon in the queue (owners, rep:daemons):
		 * unique across machines */
		char hn[65] = "";

		if (getenv("HOSTNAME") != NULL)
			snprintf(hn, sizeof(hn), "%s", getenv("HOSTNAME"));
		else if (gethostname(hn, sizeof(hn) - 1) != 0 || hn[0] == '\0')
			snprintf(hn, sizeof(hn), "imapferry");
		snprintf(d.worker, sizeof(d.worker), "%.64s:%d", hn, (int)getpid());
	}
	/* how many daemons share --maxconnections, before the first job */
	d.live_daemons = 0;
	daemon_beat(&d);
	if (d.live_daemons < 1)
		d.live_daemons = 1;
	d.jobs = calloc((size_t)o->workers, sizeof(*d.jobs));
	d.workers = calloc((size_t)o->workers, sizeof(*d.workers));
	d.fails = calloc(DM_FAILS_SLOTS, sizeof(*d.fails));
	d.base = event_base_new();
	if (d.jobs == NULL || d.workers == NULL || d.fails == NULL || d.base == NULL)
		abort();
	for (unsigned k = 0; k < (unsigned)o->workers; k++)
		d.workers[k].fd = -1;
	if (o->users != NULL && load_users(&d) < 0) {
		code = SY_EX_NOINPUT;
		goto out;
	}
	if (http_start(&d) < 0) {
		code = 1;
		goto out;
	}
	if (o->notifystatus != NULL &&
	    (ns = sy_nstatus_new(d.base, o->redis, o->notifystatus, &error)) == NULL) {
		fprintf(stderr, "%s\n", error);
		code = SY_EX_USAGE;
		goto out;
	}
	for (int i = 0; i < 3; i++) {
		d.sigs[i] = evsignal_new(d.base, sigs[i], on_signal, &d);
		event_add(d.sigs[i], NULL);
	}
	d.tick = event_new(d.base, -1, EV_PERSIST, on_tick, &d);
	{
		struct timeval tv = {0, DM_TICK_MS * 1000};

		event_add(d.tick, &tv);
	}
	d.claim = event_new(d.base, -1, EV_PERSIST, on_claim, &d);
	{
		struct timeval tv = {0, DM_CLAIM_MS * 1000};

		event_add(d.claim, &tv);
	}
	log_msg(LOG_LVL_NOTICE, "daemon",
	        "imapferry-sync %s daemon %s: Redis %s, %lld workers, at most %lld connections "
	        "per server, poll every %lld s, lease %lld s%s%s",
	        IMAPFERRY_VERSION, d.worker, o->redis, o->workers,
	        o->maxconns / o->workers * o->workers, o->poll, o->lease,
	        o->http != NULL ? ", /metrics on " : "", o->http != NULL ? o->http : "");
	event_base_dispatch(d.base);
	log_msg(LOG_LVL_NOTICE, "daemon", "stopped: %llu syncs, %llu ok, %llu failed", d.started,
	        d.ok, d.failed);
	rq_daemon_leave(d.q, d.worker); /* the others' share grows at once */
out:
	for (int i = 0; i < 3; i++) {
		if (d.sigs[i] != NULL)
			event_free(d.sigs[i]);
	}
	if (d.tick != NULL)
		event_free(d.tick);
	if (d.claim != NULL)
		event_free(d.claim);
	if (d.http != NULL)
		evhttp_free(d.http);
	for (unsigned i = 0; i < (unsigned)o->workers; i++) {
		if (d.jobs[i].pid > 0)
			job_clear(&d.jobs[i]);
	}
	workers_stop(&d);
	free(d.jobs);
	free(d.workers);
	free(d.fails);
	for (size_t i = 0; i < d.nusers; i++) {
		free(d.users[i].user1);
		free(d.users[i].user2);
		free(d.users[i].pw1);
		free(d.users[i].pw2);
	}
	free(d.users);
	sy_nstatus_free(&ns);
	event_base_free(d.base);
	rq_close(&d.q);
	return code;
}
