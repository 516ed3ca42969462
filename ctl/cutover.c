/*
 * cutover.c - imapferryctl cutover / final-delta: the per-user steps of
 * replication-design.md section 7, each user in a child process.
 *
 *   1. freeze   route FREEZE (epoch E); the PUBLISH on rep:ctl says how many
 *               proxies heard it; wait until as many have acknowledged E in
 *               rep:frz:<user> (no live session of the user left on them);
 *   2. quiesce  wait until the daemon has no sync of the user in flight, then
 *               in the same script take the user's due items out of the
 *               queue and push its poll back, so no daemon sync runs beside
 *               the final one;
 *   3. final    imapferry-sync for the user: STATUS of every folder on both
 *               sides, tree sync, deltas (hints are not used), sizes at end;
 *   4. verify   exit code 0, no error, "The sync looks good" (or no
 *               identified message at all), "The sync is strict", and every
 *               folder's message count equal in the sizes at end;
 *   5. flip     route DST (held logins go to the destination) and the user
 *               leaves the poll schedule; on any failure instead: route SRC,
 *               the user back in the daemon's hands, exit 1.
 * final-delta runs steps 2-4 only (no proxy, no route change).
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ctl.h"

static volatile sig_atomic_t ct_stop;

static void on_signal(int sig)
{
	(void)sig;
	ct_stop = 1;
}

static double mono(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void nap(void)
{
	struct timespec ts = {0, CT_POLL_MS * 1000000L};

	nanosleep(&ts, NULL);
}

/* ---- 1. freeze acks ---- */

/* 1 when `need` proxies acked epoch, 0 on timeout or interrupt, -1 error. */
static int wait_acks(redisContext *c, const char *user, uint64_t epoch, long long need,
                     unsigned timeout_s)
{
	char key[1024], want[24];
	double end = mono() + timeout_s;

	snprintf(key, sizeof(key), "%s%s", CT_KEY_FRZ, user);
	snprintf(want, sizeof(want), "%llu", (unsigned long long)epoch);
	while (!ct_stop) {
		redisReply *r = ct_cmd(c, "HGETALL %s", key);
		long long have = 0;

		if (r == NULL)
			return -1;
		for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i + 1 < r->elements; i += 2)
			if (strcmp(r->element[i + 1]->str, want) == 0)
				have++;
		freeReplyObject(r);
		if (have >= need)
			return 1;
		if (mono() > end) {
			printf("%s: only %lld of %lld proxies confirmed the freeze within %u s\n",
			       user, have, need, timeout_s);
			return 0;
		}
		nap();
	}
	return 0;
}

/* ---- 2. quiesce the daemon ---- */

/* KEYS: due, inflight, poll of the user's shard. ARGV: user, hold-until
 * (ms). Returns {in flight, due items removed, old poll score or false}. */
static const char quiesce_lua[] =
        "local p = ARGV[1] .. '\\t'\n"
        "local busy = 0\n"
        "for _, m in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do\n"
        "  if string.sub(m, 1, #p) == p then busy = busy + 1 end\n"
        "end\n"
        "if busy > 0 then return {busy, 0, false} end\n"
        "local removed = 0\n"
        "for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do\n"
        "  if string.sub(m, 1, #p) == p then\n"
        "    redis.call('ZREM', KEYS[1], m)\n"
        "    removed = removed + 1\n"
        "  end\n"
        "end\n"
        "local old = redis.call('ZSCORE', KEYS[3], ARGV[1])\n"
        "if old then redis.call('ZADD', KEYS[3], 'XX', ARGV[2], ARGV[1]) end\n"
        "return {0, removed, old}\n";

struct ct_quiet {
	long long removed;
	int polled;        /* the user was in the poll schedule */
	char old_poll[32]; /* its score then */
};

/* 1 quiet, 0 timeout/interrupt, -1 error. */
static int quiesce(redisContext *c, const char *user, unsigned timeout_s, struct ct_quiet *q)
{
	char due[64], infl[64], poll[64], until[32];
	const char *argv[8];
	double end = mono() + timeout_s;
	int said = 0;
	int64_t now;

	memset(q, 0, sizeof(*q));
	rk_key_due(due, sizeof(due), rk_shard(user));
	rk_key_inflight(infl, sizeof(infl), rk_shard(user));
	rk_key_poll(poll, sizeof(poll), rk_shard(user));
	while (!ct_stop) {
		redisReply *r;

		if (ct_now_ms(c, &now) < 0)
			return -1;
		/* pushed back a day: the cutover ends long before */
		snprintf(until, sizeof(until), "%lld", (long long)now + 86400000LL);
		argv[0] = "EVAL";
		argv[1] = quiesce_lua;
		argv[2] = "3";
		argv[3] = due;
		argv[4] = infl;
		argv[5] = poll;
		argv[6] = user;
		argv[7] = until;
		if ((r = ct_cmd_argv(c, 8, argv)) == NULL)
			return -1;
		if (r->type != REDIS_REPLY_ARRAY || r->elements != 3) {
			freeReplyObject(r);
			return -1;
		}
		if (r->element[0]->integer == 0) {
			q->removed = r->element[1]->integer;
			if (r->element[2]->type == REDIS_REPLY_STRING) {
				q->polled = 1;
				snprintf(q->old_poll, sizeof(q->old_poll), "%s",
				         r->element[2]->str);
			}
			freeReplyObject(r);
			return 1;
		}
		if (!said)
			printf("%s: waiting for %lld sync(s) of the daemon to finish\n", user,
			       r->element[0]->integer);
		said = 1;
		freeReplyObject(r);
		if (mono() > end) {
			printf("%s: the daemon's syncs did not finish within %u s\n", user,
			       timeout_s);
			return 0;
		}
		nap();
	}
	return 0;
}

/* Gives the poll schedule back as it was (final-delta). */
static void unquiesce(redisContext *c, const char *user, const struct ct_quiet *q)
{
	char poll[64];
	redisReply *r;

	if (!q->polled)
		return;
	rk_key_poll(poll, sizeof(poll), rk_shard(user));
	if ((r = ct_cmd(c, "ZADD %s %s %s", poll, q->old_poll, user)) != NULL)
		freeReplyObject(r);
}

/* ---- 3./4. the final sync and its verdict ---- */

struct ct_verdict {
	int in_end; /* inside "++++ Calculating sizes at end" */
	int end_seen;
	char name1[512]; /* the last "Host1 folder" line's folder */
	long long m1;    /* its messages, -1 = does not exist */
	unsigned folders, mismatches;
	int good, not_finished, strict, not_strict;
	long errors; /* -1 = no "Detected N errors" line */
	int exit_code;
};

/* "Host1 folder    1/9 [INBOX]    Size: ... Messages:     3 Biggest: ..." */
static long long size_line(const char *line, char *name, size_t size)
{
	const char *lb = strchr(line, '['), *m = strstr(line, " Messages: ");
	const char *rb = m != NULL ? m : strstr(line, " does not exist");

	if (lb != NULL && rb != NULL) {
		const char *e = rb;

		while (e > lb && *e != ']')
			e--;
		if (e > lb) {
			size_t n = (size_t)(e - lb - 1);

			if (n >= size)
				n = size - 1;
			memcpy(name, lb + 1, n);
			name[n] = '\0';
		}
	}
	return m != NULL ? atoll(m + 11) : -1;
}

static int starts(const char *s, const char *p)
{
	return strncmp(s, p, strlen(p)) == 0;
}

static void verdict_line(struct ct_verdict *v, const char *user, const char *line)
{
	static const char *const shown[] = {
	        "The sync ",
	        "There are ",
	        "There is no",
	        "Detected ",
	        "Err ",
	        "Exiting with return value",
	        "Final difference",
	        "Host1 Nb messages",
	        "Host2 Nb messages",
	};

	for (size_t i = 0; i < sizeof(shown) / sizeof(shown[0]); i++)
		if (strstr(line, shown[i]) != NULL) {
			printf("%s: %s\n", user, line);
			break;
		}
	if (starts(line, "The sync looks good"))
		v->good = 1;
	else if (starts(line, "The sync is not finished"))
		v->not_finished = 1;
	else if (starts(line, "The sync is strict"))
		v->strict = 1;
	else if (starts(line, "The sync is not strict"))
		v->not_strict = 1;
	else if (starts(line, "Detected ") && strstr(line, " errors") != NULL)
		v->errors = atol(line + 9);
	else if (strstr(line, "++++ Calculating sizes at end") != NULL)
		v->in_end = v->end_seen = 1;
	else if (v->in_end && starts(line, "Host1 folder")) {
		v->m1 = size_line(line, v->name1, sizeof(v->name1));
	} else if (v->in_end && starts(line, "Host2 folder")) {
		char name2[512] = "";
		long long m2 = size_line(line, name2, sizeof(name2));

		v->folders++;
		if (m2 != v->m1) {
			v->mismatches++;
			printf("%s: DIFFERENCE in folder [%s]: %lld messages on host1, %lld on "
			       "host2 [%s]\n",
			       user, v->name1, v->m1 < 0 ? 0 : v->m1, m2 < 0 ? 0 : m2, name2);
		}
	} else if (v->in_end && starts(line, "Host1 Nb folders")) {
		v->in_end = 0;
	}
}

static int has_opt(const struct ct *ct, const char *name)
{
	size_t n = strlen(name);

	for (int i = 0; i < ct->sync_argc; i++) {
		const char *a = ct->sync_argv[i];

		a += a[0] == '-' ? (a[1] == '-' ? 2 : 1) : 0;
		if (strncmp(a, name, n) == 0 && (a[n] == '\0' || a[n] == '='))
			return 1;
	}
	return 0;
}

/* Runs imapferry-sync for user, reading its output; fills v. 0, or -1 when
 * it could not be started. */
static int run_sync(const struct ct *ct, const char *user, struct ct_verdict *v)
{
	const char **argv = calloc((size_t)ct->sync_argc + 8, sizeof(*argv));
	int fd[2], n = 0, status;
	pid_t pid;
	FILE *fp;
	char *line = NULL;
	size_t cap = 0;
	ssize_t len;

	memset(v, 0, sizeof(*v));
	v->errors = -1;
	v->m1 = -1;
	if (argv == NULL || pipe(fd) < 0) {
		free(argv);
		return -1;
	}
	argv[n++] = ct->sync_path;
	for (int i = 0; i < ct->sync_argc; i++)
		argv[n++] = ct->sync_argv[i];
	argv[n++] = "--user1";
	argv[n++] = user;
	argv[n++] = "--user2";
	argv[n++] = user;
	if (!has_opt(ct, "redis")) {
		argv[n++] = "--redis";
		argv[n++] = ct->redis;
	}
	argv[n] = NULL;
	fflush(stdout);
	pid = fork();
	if (pid < 0) {
		close(fd[0]);
		close(fd[1]);
		free(argv);
		return -1;
	}
	if (pid == 0) {
		dup2(fd[1], 1);
		dup2(fd[1], 2);
		close(fd[0]);
		close(fd[1]);
		execv(ct->sync_path, (char *const *)argv);
		fprintf(stderr, "cannot run %s: %s\n", ct->sync_path, strerror(errno));
		_exit(127);
	}
	free(argv);
	close(fd[1]);
	fp = fdopen(fd[0], "r");
	if (fp == NULL) {
		close(fd[0]);
	} else {
		while ((len = getline(&line, &cap, fp)) >= 0) {
			while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
				line[--len] = '\0';
			if (starts(line, "cannot run "))
				printf("%s: %s\n", user, line);
			verdict_line(v, user, line);
		}
		free(line);
		fclose(fp);
	}
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	v->exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
	return 0;
}

/* Why the verdict is not a pass, or NULL. */
static const char *verdict_fail(const struct ct_verdict *v)
{
	if (v->exit_code != 0)
		return "imapferry-sync did not exit 0";
	if (v->errors != 0)
		return v->errors < 0 ? "no verdict in imapferry-sync's output" : "errors detected";
	if (v->not_finished)
		return "messages of host1 are missing on host2";
	if (v->not_strict || !v->strict)
		return "host2 has messages that host1 does not have";
	if (!v->end_seen)
		return "no folder sizes at end (--nofoldersizesatend?): counts not verified";
	if (v->mismatches > 0)
		return "folder message counts differ (host1 duplicates are copied only with "
		       "--syncduplicates)";
	return NULL;
}

/* ---- one user ---- */

static int route(redisContext *c, const char *user, enum rk_route_state st, uint64_t *epoch_r)
{
	long long receivers;
	uint64_t epoch;

	if (ct_route_set(c, user, st, &epoch, &receivers) < 0) {
		printf("%s: could not set the route to %s\n", user, rk_route_state_names[st]);
		return -1;
	}
	if (epoch_r != NULL)
		*epoch_r = epoch;
	return (int)(receivers > 1000000 ? 1000000 : receivers);
}

static int cutover_one(const struct ct *ct, const char *user, enum ct_mode mode)
{
	const char *err, *why = NULL;
	redisContext *c = ct_connect(ct->redis, &err);
	struct ct_quiet q;
	struct ct_verdict v;
	enum rk_route_state st;
	uint64_t epoch = 0;
	double t0 = mono(), t_frozen = 0;
	int rc, proxies = 0, quiet = 0;

	if (c == NULL) {
		printf("%s: %s\n", user, err);
		return CT_EXIT_NOREDIS;
	}
	if (ct_route_get(c, user, &st, &epoch) < 0) {
		redisFree(c);
		return CT_EXIT_NOREDIS;
	}
	if (mode == CT_CUTOVER && st == RK_ROUTE_DST) {
		printf("%s: already on the destination (epoch %llu): nothing to do\n", user,
		       (unsigned long long)epoch);
		redisFree(c);
		return CT_EXIT_OK;
	}
	if (mode == CT_CUTOVER) {
		if ((proxies = route(c, user, RK_ROUTE_FREEZE, &epoch)) < 0) {
			redisFree(c);
			return CT_EXIT_FAILED;
		}
		t_frozen = mono();
		printf("%s: frozen (epoch %llu), %d prox%s to confirm\n", user,
		       (unsigned long long)epoch, proxies, proxies == 1 ? "y" : "ies");
		rc = wait_acks(c, user, epoch, proxies, ct->drain_timeout_s);
		if (rc <= 0) {
			why = rc < 0 ? "Redis error while waiting for the proxies"
			             : "the proxies did not confirm the freeze";
			goto fail;
		}
		printf("%s: no session left (%.2f s)\n", user, mono() - t_frozen);
	}
	rc = quiesce(c, user, ct->quiesce_timeout_s, &q);
	if (rc <= 0) {
		why = rc < 0 ? "Redis error while waiting for the daemon"
		             : "the daemon's syncs of the user did not finish";
		goto fail;
	}
	quiet = 1;
	printf("%s: final sync%s\n", user, q.removed > 0 ? " (queued changes taken over)" : "");
	if (run_sync(ct, user, &v) < 0) {
		why = "imapferry-sync could not be started";
		goto fail;
	}
	if (ct_stop) {
		why = "interrupted";
		goto fail;
	}
	if ((why = verdict_fail(&v)) != NULL)
		goto fail;
	printf("%s: verified: %u folders, message counts equal on both sides\n", user, v.folders);
	if (mode == CT_FINAL_DELTA) {
		unquiesce(c, user, &q);
		printf("%s: final delta done in %.2f s\n", user, mono() - t0);
		redisFree(c);
		return CT_EXIT_OK;
	}
	if (route(c, user, RK_ROUTE_DST, &epoch) < 0) {
		why = "the route could not be flipped";
		goto fail;
	}
	{
		char poll[64];
		redisReply *r;

		rk_key_poll(poll, sizeof(poll), rk_shard(user));
		if ((r = ct_cmd(c, "ZREM %s %s", poll, user)) != NULL)
			freeReplyObject(r);
	}
	printf("%s: cut over to the destination (epoch %llu) in %.2f s, frozen %.2f s\n", user,
	       (unsigned long long)epoch, mono() - t0, mono() - t_frozen);
	redisFree(c);
	return CT_EXIT_OK;
fail:
	printf("%s: FAILED: %s\n", user, why);
	if (mode == CT_CUTOVER) {
		if (route(c, user, RK_ROUTE_SRC, &epoch) >= 0)
			printf("%s: rolled back to the source (epoch %llu)\n", user,
			       (unsigned long long)epoch);
		if (ct_user_resume(c, user) < 0)
			printf("%s: could not give the user back to the daemon\n", user);
	} else if (quiet) {
		unquiesce(c, user, &q);
	}
	redisFree(c);
	return CT_EXIT_FAILED;
}

int ct_cutover(struct ct *ct, char **users, int n, enum ct_mode mode)
{
	struct sigaction sa;
	int next = 0, running = 0, failed = 0, done = 0;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (n == 1)
		return cutover_one(ct, users[0], mode);
	while (next < n || running > 0) {
		int status;
		pid_t pid;

		while (next < n && running < (int)ct->concurrency && !ct_stop) {
			fflush(stdout);
			pid = fork();
			if (pid < 0) {
				perror("imapferryctl: fork");
				break;
			}
			if (pid == 0)
				_exit(cutover_one(ct, users[next], mode));
			next++;
			running++;
		}
		if (ct_stop && running == 0)
			break;
		pid = wait(&status);
		if (pid < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		running--;
		done++;
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
			failed++;
	}
	printf("%d user%s: %d done, %d failed%s\n", n, n == 1 ? "" : "s", done - failed, failed,
	       next < n ? ", the rest not started (interrupted)" : "");
	return failed > 0 || next < n ? CT_EXIT_FAILED : CT_EXIT_OK;
}
