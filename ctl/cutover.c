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
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ctl.h"

static volatile sig_atomic_t ct_stop;

static const char *const mode_names[CT_MODE_COUNT] = {"cutover", "final-delta"};

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

/* ---- the freeze lease ---- */

/* The lease of the user this process holds frozen (one at a time: a batch
 * runs each user in a process of its own, rollback one after the other).
 * Every waiting loop calls lease_tick(), which renews it when due. */
static struct {
	struct rnodes *c;
	const char *user;
	uint64_t epoch;
	unsigned lease_ms, every_ms;
	double next, last_ok; /* mono() */
	int active, lost;
} ct_lease;

static void lease_hold(struct rnodes *c, const char *user, uint64_t epoch, unsigned lease_s)
{
	ct_lease.c = c;
	ct_lease.user = user;
	ct_lease.epoch = epoch;
	ct_lease.lease_ms = lease_s * 1000u;
	ct_lease.every_ms = ct_lease.lease_ms / 3 < CT_LEASE_RENEW_MS ? ct_lease.lease_ms / 3
	                                                              : CT_LEASE_RENEW_MS;
	ct_lease.last_ok = mono();
	ct_lease.next = ct_lease.last_ok + ct_lease.every_ms / 1000.0;
	ct_lease.active = 1;
	ct_lease.lost = 0;
}

static void lease_drop(void)
{
	ct_lease.active = 0;
}

/* Renews the lease when due: 0 held (or none held), -1 lost. A renewal that
 * fails on Redis is tried again; the lease counts as lost once it may have
 * ended (the flip is refused then anyway). */
static int lease_tick(void)
{
	double now = mono();
	int rc;

	if (!ct_lease.active || ct_lease.lost)
		return ct_lease.lost ? -1 : 0;
	if (now < ct_lease.next)
		return 0;
	rc = ct_lease_renew(ct_lease.c, ct_lease.user, ct_lease.epoch, ct_lease.lease_ms);
	if (rc == 1) {
		ct_lease.last_ok = now;
		ct_lease.next = now + ct_lease.every_ms / 1000.0;
		return 0;
	}
	if (rc < 0 && now < ct_lease.last_ok + ct_lease.lease_ms / 1000.0) {
		ct_lease.next = now + CT_POLL_MS / 1000.0 * 4;
		return 0;
	}
	ct_lease.lost = 1;
	printf("%s: the freeze lease (epoch %llu) is lost: %s\n", ct_lease.user,
	       (unsigned long long)ct_lease.epoch,
	       rc == 0 ? "it had ended, or another imapferryctl took the user over"
	               : "Redis did not answer for the lease's time");
	return -1;
}

/* Renews the lease now (before a step that must not run without it):
 * 0 held (or none held), -1 lost. */
static int lease_check_now(void)
{
	ct_lease.next = 0;
	return lease_tick();
}

/* The test-only pause after a freeze (CT_ENV_TEST_PAUSE), renewing the
 * lease. 0, or -1 when the lease was lost or the run interrupted. */
static int test_pause(const char *user)
{
	const char *v = getenv(CT_ENV_TEST_PAUSE);
	double end;

	if (v == NULL || atoi(v) <= 0)
		return 0;
	printf("%s: pausing %d ms while frozen (%s, for tests)\n", user, atoi(v),
	       CT_ENV_TEST_PAUSE);
	end = mono() + atoi(v) / 1000.0;
	while (mono() < end && !ct_stop) {
		if (lease_tick() < 0)
			return -1;
		nap();
	}
	return ct_stop ? -1 : 0;
}

/* ---- 1. freeze acks ---- */

/* 1 when `need` proxies acked epoch, 0 on timeout or interrupt, -1 error.
 * The kick is repeated every CT_REKICK_MS: a proxy that restarted (or lost
 * its subscription) since knows nothing of the freeze until it hears one;
 * then it reads the route, has no session left and acknowledges. need only
 * grows with the receivers of a repeated kick: a proxy that is gone for good
 * makes the freeze time out (roll back) rather than be skipped, since it
 * might only be cut off from Redis with live sessions of the user. */
static int wait_acks(struct rnodes *c, const char *user, uint64_t epoch, long long need,
                     unsigned timeout_s)
{
	char key[1024], want[24], kick[1100];
	double end = mono() + timeout_s, next_kick = mono() + CT_REKICK_MS / 1000.0;

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
		if (lease_tick() < 0)
			return 0;
		if (mono() >= next_kick) {
			next_kick = mono() + CT_REKICK_MS / 1000.0;
			snprintf(kick, sizeof(kick), "route %s %llu", user,
			         (unsigned long long)epoch);
			if ((r = ct_cmd(c, "PUBLISH %s %s", RK_CTL_CHANNEL, kick)) == NULL)
				return -1;
			if (r->type == REDIS_REPLY_INTEGER && r->integer > need)
				need = r->integer;
			freeReplyObject(r);
		}
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
static int quiesce(struct rnodes *c, const char *user, unsigned timeout_s, struct ct_quiet *q)
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
		if (lease_tick() < 0)
			return 0;
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
static void unquiesce(struct rnodes *c, const char *user, const struct ct_quiet *q)
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
	/* the sizes at end, summed per side (host1, host2): messages, bytes */
	unsigned long long sz_msgs[2], sz_bytes[2];
	/* folders: listed on host2 only, created on host2, deleted on host2 */
	int in_only2; /* inside the "Folders in host2 not in host1:" list */
	unsigned only2, created, deleted;
	char only2_names[CT_FOLDER_NAMES], created_names[CT_FOLDER_NAMES],
	        deleted_names[CT_FOLDER_NAMES];
	unsigned folders, mismatches;
	int good, not_finished, strict, not_strict;
	long errors;                      /* -1 = no "Detected N errors" line */
	unsigned long copied, max_uid1;   /* "msg F/UID {size} copied to ..." lines */
	char last_err[CT_LAST_ERROR_MAX]; /* the last line that tells of an error */
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

/* Appends " [name]" to a bounded list of names ("..." once full). */
static void names_add(char *buf, size_t size, const char *name, size_t len)
{
	size_t have = strlen(buf);

	if (have + len + 6 >= size) {
		if (have + 5 < size && (have < 4 || strcmp(buf + have - 4, " ...") != 0))
			strcat(buf, " ...");
		return;
	}
	buf[have++] = ' ';
	buf[have++] = '[';
	memcpy(buf + have, name, len);
	buf[have + len] = ']';
	buf[have + len + 1] = '\0';
}

/* The bracketed name at the start of p ("[name]...", or "[mutf7] = [utf8]"
 * for a name that is not ASCII: the UTF-8 one): names_add()s it. */
static void names_add_bracket(char *buf, size_t size, const char *p)
{
	const char *e, *u = strstr(p, "] = [");

	if (p[0] == '[' && u != NULL && strchr(u + 5, ']') != NULL)
		p = u + 4;
	e = p[0] == '[' ? strchr(p, ']') : NULL;

	if (e != NULL)
		names_add(buf, size, p + 1, (size_t)(e - p - 1));
}

/* A sizes-at-end folder line of side (0 host1, 1 host2) with msgs messages
 * (-1: the folder does not exist) into the totals. */
static void size_add(struct ct_verdict *v, int side, const char *line, long long msgs)
{
	const char *sz = strstr(line, " Size: ");

	if (msgs < 0 || sz == NULL)
		return;
	v->sz_msgs[side] += (unsigned long long)msgs;
	v->sz_bytes[side] += strtoull(sz + 7, NULL, 10);
}

/* Records the sizes at end of a sync of user (when it printed them) as the
 * user's last measured messages and bytes per side; back: host1 was the
 * destination (a rollback's sync back). */
static void sizes_record(struct rnodes *c, const char *user, const char *by,
                         const struct ct_verdict *v, int back)
{
	unsigned long long m[2] = {v->sz_msgs[back], v->sz_msgs[!back]};
	unsigned long long b[2] = {v->sz_bytes[back], v->sz_bytes[!back]};

	if (v->end_seen && !v->in_end)
		ct_sizes_record(c, user, by, m, b);
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
	if ((strstr(line, "rror") != NULL || starts(line, "Err ") ||
	     strstr(line, "cannot") != NULL || strstr(line, "failed") != NULL) &&
	    !starts(line, "Detected ") && strstr(line, "nb_errors") == NULL &&
	    strstr(line, "0 errors") == NULL)
		snprintf(v->last_err, sizeof(v->last_err), "%s", line);
	if (starts(line, "msg ") && strstr(line, " copied to ") != NULL) {
		/* "msg INBOX/307 {286}           copied to INBOX/367 ..." */
		const char *br = strstr(line, " {"), *sl = br;

		while (sl != NULL && sl > line && *sl != '/')
			sl--;
		if (sl != NULL && *sl == '/') {
			unsigned long uid = strtoul(sl + 1, NULL, 10);

			v->copied++;
			if (uid > v->max_uid1)
				v->max_uid1 = uid;
		}
	}
	if (v->in_only2) {
		if (line[0] == '\0') {
			v->in_only2 = 0;
		} else {
			v->only2++;
			names_add_bracket(v->only2_names, sizeof(v->only2_names), line);
		}
	} else if (strcmp(line, "Folders in host2 not in host1:") == 0) {
		v->in_only2 = 1;
	} else if (starts(line, "Creating folder [") && strstr(line, "] on host2") != NULL) {
		v->created++;
		names_add_bracket(v->created_names, sizeof(v->created_names), line + 16);
	} else if (starts(line, "Deleting folder [") && strstr(line, "] in host2 ") != NULL) {
		v->deleted++;
		names_add_bracket(v->deleted_names, sizeof(v->deleted_names), line + 16);
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
		size_add(v, 0, line, v->m1);
	} else if (v->in_end && starts(line, "Host2 folder")) {
		char name2[512] = "";
		long long m2 = size_line(line, name2, sizeof(name2));

		size_add(v, 1, line, m2);

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

enum ct_pass {
	CT_PASS_FINAL, /* the final sync: the options as given, + --redis */
	CT_PASS_STRAG, /* stragglers: copy only, no deletion, no state */
	CT_PASS_BACK   /* destination to source: servers swapped, no state */
};

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

/* The option name of a, without dashes; *len_r stops before an '='. NULL
 * when a is not an option. */
static const char *opt_name(const char *a, size_t *len_r, int *inline_r)
{
	const char *eq;

	if (a[0] != '-')
		return NULL;
	a += a[1] == '-' ? 2 : 1;
	eq = strchr(a, '=');
	*len_r = eq != NULL ? (size_t)(eq - a) : strlen(a);
	*inline_r = eq != NULL;
	return a;
}

static int in_list(const char *name, size_t len, const char *const *list)
{
	for (; *list != NULL; list++)
		if (strlen(*list) == len && strncmp(*list, name, len) == 0)
			return 1;
	return 0;
}

/* Options a straggler or a reverse pass must not inherit from the cutover's
 * SYNC-OPTIONS: with a value, and without. */
static const char *const drop_val[] = {"search",
                                       "search1",
                                       "search2",
                                       "folder",
                                       "folderrec",
                                       "folderfirst",
                                       "folderlast",
                                       "include",
                                       "exclude",
                                       "f1f2",
                                       "maxage",
                                       "minage",
                                       "redis",
                                       "delete2foldersonly",
                                       "delete2foldersbutnot",
                                       "subfolder1",
                                       "subfolder2",
                                       NULL};
static const char *const drop_bool[] = {"delete",
                                        "delete1",
                                        "delete2",
                                        "delete2duplicates",
                                        "delete2folders",
                                        "nodelete2",
                                        "expunge1",
                                        "expunge2",
                                        "uidexpunge2",
                                        "justfolders",
                                        "resyncflags",
                                        "noresyncflags",
                                        "syncflagsaftercopy",
                                        "foldersizes",
                                        "nofoldersizes",
                                        "foldersizesatend",
                                        "nofoldersizesatend",
                                        "state",
                                        "nostate",
                                        "delta",
                                        "nodelta",
                                        "usecache",
                                        "nousecache",
                                        "useuid",
                                        NULL};
/* Server options (…1 / …2) swapped for a destination-to-source pass. */
static const char *const swap_stems[] = {"abletosearch", "authmd5",
                                         "authmech",     "authuser",
                                         "compress",     "debugimap",
                                         "domain",       "domino",
                                         "exchange",     "fastio",
                                         "gmail",        "host",
                                         "keepalive",    "oauthaccesstoken",
                                         "oauthdirect",  "office",
                                         "passfile",     "password",
                                         "port",         "prefix",
                                         "proxyauth",    "reconnectretry",
                                         "sep",          "split",
                                         "ssl",          "sslargs",
                                         "timeout",      "tls",
                                         "user",         NULL};

/* Whether name (len bytes, maybe "no" + stem) is stem + '1' or '2'. */
static int is_server_opt(const char *name, size_t len)
{
	if (len > 2 && strncmp(name, "no", 2) == 0 && is_server_opt(name + 2, len - 2))
		return 1;
	return len > 1 && (name[len - 1] == '1' || name[len - 1] == '2') &&
	       in_list(name, len - 1, swap_stems);
}

/* The argv of one imapferry-sync run of user (NULL-terminated, strings
 * borrowed or in *own_r, which the caller frees). extra is appended. */
static const char **sync_argv(const struct ct *ct, const char *user, enum ct_pass pass,
                              const char *const *extra, int nextra, char ***own_r)
{
	const char **argv = calloc((size_t)ct->sync_argc + (size_t)nextra + 10, sizeof(*argv));
	char **own = calloc((size_t)ct->sync_argc + 1, sizeof(*own));
	int n = 0, o = 0;

	if (argv == NULL || own == NULL)
		abort();
	argv[n++] = ct->sync_path;
	for (int i = 0; i < ct->sync_argc; i++) {
		const char *a = ct->sync_argv[i], *name;
		size_t len;
		int inl;

		name = opt_name(a, &len, &inl);
		if (pass != CT_PASS_FINAL && name != NULL) {
			if (in_list(name, len, drop_val)) {
				i += !inl; /* its value too */
				continue;
			}
			if (in_list(name, len, drop_bool))
				continue;
			if (pass == CT_PASS_BACK && len == 11 &&
			    strncmp(name, "regextrans2", 11) == 0) {
				i += !inl; /* a renaming does not run backwards */
				continue;
			}
			if (pass == CT_PASS_BACK && is_server_opt(name, len)) {
				char *sw = strdup(a);

				if (sw == NULL)
					abort();
				sw[(size_t)(name - a) + len - 1] ^= '1' ^ '2';
				own[o++] = sw;
				argv[n++] = sw;
				continue;
			}
		}
		argv[n++] = a;
	}
	argv[n++] = "--user1";
	argv[n++] = user;
	argv[n++] = "--user2";
	argv[n++] = user;
	if (pass == CT_PASS_FINAL && !has_opt(ct, "redis")) {
		argv[n++] = "--redis";
		argv[n++] = ct->redis;
	}
	for (int i = 0; i < nextra; i++)
		argv[n++] = extra[i];
	argv[n] = NULL;
	*own_r = own;
	return argv;
}

/* One line of imapferry-sync's output (len bytes, no NUL in line[len]). */
static void sync_line(struct ct_verdict *v, const char *user, char *line, size_t len)
{
	while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
		len--;
	line[len] = '\0';
	if (starts(line, "cannot run "))
		printf("%s: %s\n", user, line);
	verdict_line(v, user, line);
}

/* Runs imapferry-sync for user, reading its output; fills v. 0, or -1 when
 * it could not be started. */
static int run_sync(const struct ct *ct, const char *user, enum ct_pass pass,
                    const char *const *extra, int nextra, struct ct_verdict *v)
{
	char **own;
	const char **argv = sync_argv(ct, user, pass, extra, nextra, &own);
	int fd[2], status, killed = 0;
	pid_t pid;
	char *line;
	size_t len = 0;

	memset(v, 0, sizeof(*v));
	v->errors = -1;
	v->m1 = -1;
	if (pipe(fd) < 0) {
		pid = -1;
		goto out;
	}
	fflush(stdout);
	pid = fork();
	if (pid < 0) {
		close(fd[0]);
		close(fd[1]);
		goto out;
	}
	if (pid == 0) {
		dup2(fd[1], 1);
		dup2(fd[1], 2);
		close(fd[0]);
		close(fd[1]);
		if (pass == CT_PASS_BACK) {
			/* host1 is the destination now: its password is the 2's */
			char *p1 = getenv("IMAPSYNC_PASSWORD1"), *p2 = getenv("IMAPSYNC_PASSWORD2");
			char *c1 = p1 != NULL ? strdup(p1) : NULL,
			     *c2 = p2 != NULL ? strdup(p2) : NULL;

			unsetenv("IMAPSYNC_PASSWORD1");
			unsetenv("IMAPSYNC_PASSWORD2");
			if (c2 != NULL)
				setenv("IMAPSYNC_PASSWORD1", c2, 1);
			if (c1 != NULL)
				setenv("IMAPSYNC_PASSWORD2", c1, 1);
		}
		execv(ct->sync_path, (char *const *)argv);
		fprintf(stderr, "cannot run %s: %s\n", ct->sync_path, strerror(errno));
		_exit(127);
	}
	close(fd[1]);
	/* Lines as they come, the freeze lease renewed in between; a lost
	 * lease ends the sync (its result would not be used). */
	line = malloc(CT_SYNC_LINE_MAX + 1);
	if (line == NULL)
		abort();
	for (;;) {
		struct pollfd pfd = {fd[0], POLLIN, 0};
		char *nl;
		ssize_t got;

		if (lease_tick() < 0 && !killed) {
			kill(pid, SIGTERM);
			killed = 1;
		}
		if (poll(&pfd, 1, (int)CT_POLL_MS * 4) <= 0)
			continue; /* timeout, or EINTR */
		got = read(fd[0], line + len, CT_SYNC_LINE_MAX - len);
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0)
			break;
		len += (size_t)got;
		while ((nl = memchr(line, '\n', len)) != NULL || len == CT_SYNC_LINE_MAX) {
			size_t n = nl != NULL ? (size_t)(nl - line) : len; /* a longer line: cut */
			size_t rest = nl != NULL ? len - n - 1 : 0;

			sync_line(v, user, line, n);
			memmove(line, line + len - rest, rest);
			len = rest;
		}
	}
	if (len > 0)
		sync_line(v, user, line, len);
	free(line);
	close(fd[0]);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	v->exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
	if ((v->exit_code != 0 || v->errors != 0) && v->last_err[0] != '\0')
		printf("%s: imapferry-sync: %s\n", user, v->last_err);
out:
	for (char **p = own; *p != NULL; p++)
		free(*p);
	free(own);
	free(argv);
	return pid < 0 ? -1 : 0;
}

/* Why the verdict is not a pass, or NULL. */
static const char *verdict_fail(const struct ct_verdict *v, int has_delete2)
{
	if (v->exit_code != 0)
		return "imapferry-sync did not exit 0";
	if (v->errors != 0)
		return v->errors < 0 ? "no verdict in imapferry-sync's output" : "errors detected";
	if (v->not_finished)
		return "messages of host1 are missing on host2";
	if (v->not_strict || !v->strict)
		return has_delete2
		               ? "host2 has messages that host1 does not have"
		               : "host2 has messages that host1 does not have (mail expunged on "
		                 "host1 after it was copied? give --delete2)";
	if (!v->end_seen)
		return "no folder sizes at end (--nofoldersizesatend?): counts not verified";
	if (v->mismatches > 0)
		return "folder message counts differ (host1 duplicates are copied only with "
		       "--syncduplicates)";
	return NULL;
}

/* ---- one user ---- */

/* Sets the route of user under guard (ct_route_change): *epoch_r is our
 * epoch on the way in (CT_GUARD_EPOCH, CT_GUARD_LEASE) and the new one on the
 * way out. A FREEZE takes a lease of ct->lease_s, towards lease_to. Returns
 * the number of proxies the kick reached, -1 on an error, -2 when the guard
 * refused (said why). */
static int route(const struct ct *ct, struct rnodes *c, const char *user, enum rk_route_state st,
                 enum ct_guard guard, enum rk_route_state lease_to, uint64_t *epoch_r)
{
	struct ct_route_req req = {st, guard, *epoch_r, ct->lease_s * 1000u, lease_to};
	long long info;
	uint64_t epoch;
	int rc = ct_route_change(c, user, &req, &epoch, &info);

	if (rc < 0) {
		printf("%s: could not set the route to %s\n", user, rk_route_state_names[st]);
		return -1;
	}
	if (rc == 1) {
		if (guard == CT_GUARD_FREEZE)
			printf("%s: a cutover or rollback holds the user frozen (epoch %llu, its "
			       "lease ends in %.1f s): not taken over\n",
			       user, (unsigned long long)epoch, info / 1000.0);
		else if (info == 0)
			printf("%s: the route is at epoch %llu now, not %llu (another imapferryctl "
			       "took the user over): not set to %s\n",
			       user, (unsigned long long)epoch, (unsigned long long)*epoch_r,
			       rk_route_state_names[st]);
		else
			printf("%s: the freeze lease (epoch %llu) had ended, proxies let logins go "
			       "on meanwhile: not set to %s\n",
			       user, (unsigned long long)epoch, rk_route_state_names[st]);
		lease_drop();
		return -2;
	}
	*epoch_r = epoch;
	if (st == RK_ROUTE_FREEZE && ct->lease_s > 0)
		lease_hold(c, user, epoch, ct->lease_s);
	else
		lease_drop();
	return (int)(info > 1000000 ? 1000000 : info);
}

/* The last error of user, with the sync's own error line when there is one
 * (v zeroed when no sync ran). */
static void record_failure(struct rnodes *c, const char *user, const char *by, const char *why,
                           const struct ct_verdict *v)
{
	char buf[1024]; /* ct_last_record() keeps CT_LAST_ERROR_MAX bytes of it */

	if (v->last_err[0] == '\0') {
		ct_last_record(c, user, by, why);
		return;
	}
	snprintf(buf, sizeof(buf), "%s (%s)", why, v->last_err);
	ct_last_record(c, user, by, buf);
}

/* ---- stragglers: mail delivered to the source INBOX after the flip ---- */

static void strag_key(char *buf, size_t size, const char *user)
{
	snprintf(buf, size, "%s%s", CT_KEY_STRAG, user);
}

/* At the flip: the source INBOX's UIDVALIDITY and UIDNEXT from the final
 * sync's state, the flip time and the end of the straggler window, in
 * rep:strag:<user>; the user joins rep:stragglers (user -> window end) when
 * the window is not 0. The record outlives the window by CT_STRAG_KEEP_S: a
 * rollback after the flip needs it. */
static void strag_record(struct rnodes *c, const char *user, unsigned window_s)
{
	char key[1100], until[32], now_s[32], uv[16], next[16];
	unsigned uidvalidity, uidnext;
	redisReply *r;
	int64_t now;

	rk_key_state(key, sizeof(key), user);
	if ((r = ct_cmd(c, "HGET %s INBOX", key)) == NULL)
		return;
	if (r->type != REDIS_REPLY_STRING ||
	    sscanf(r->str, "F %*s %*s %u %u", &uidvalidity, &uidnext) != 2) {
		freeReplyObject(r);
		printf("%s: no sync state of the source INBOX: stragglers cannot be told apart, "
		       "none will be copied\n",
		       user);
		return;
	}
	freeReplyObject(r);
	if (ct_now_ms(c, &now) < 0)
		return;
	strag_key(key, sizeof(key), user);
	snprintf(until, sizeof(until), "%lld", (long long)now + (long long)window_s * 1000);
	snprintf(now_s, sizeof(now_s), "%lld", (long long)now);
	snprintf(uv, sizeof(uv), "%u", uidvalidity);
	snprintf(next, sizeof(next), "%u", uidnext);
	if ((r = ct_cmd(c, "HSET %s uidvalidity %s next_uid %s flip_ms %s until_ms %s copied 0",
	                key, uv, next, now_s, until)) == NULL)
		return;
	freeReplyObject(r);
	if ((r = ct_cmd(c, "EXPIRE %s %u", key, window_s + CT_STRAG_KEEP_S)) != NULL)
		freeReplyObject(r);
	if (window_s == 0)
		return;
	if ((r = ct_cmd(c, "ZADD %s %s %s", CT_KEY_STRAG_INDEX, until, user)) != NULL)
		freeReplyObject(r);
	printf("%s: stragglers: source INBOX mail from UID %u on is copied for %u s "
	       "(imapferryctl stragglers)\n",
	       user, uidnext, window_s);
}

/* One straggler pass of user: the source INBOX's UIDs from next_uid on that
 * the destination lacks are copied (identified by header, so a re-run copies
 * nothing twice), nothing is deleted or reflagged; next_uid then moves past
 * what was copied, so a straggler the user deletes on the destination is
 * not copied again. 1 done (*copied_r), 0 no record, -1 failed. */
static int strag_pass(const struct ct *ct, struct rnodes *c, const char *user,
                      unsigned long *copied_r)
{
	char key[1100], search[64];
	const char *extra[] = {
	        "--folder",        "INBOX",     "--search1",       search,
	        "--noresyncflags", "--nostate", "--nofoldersizes", "--nofoldersizesatend"};
	struct ct_verdict v;
	unsigned long next;
	redisReply *r;

	*copied_r = 0;
	strag_key(key, sizeof(key), user);
	if ((r = ct_cmd(c, "HGET %s next_uid", key)) == NULL)
		return -1;
	if (r->type != REDIS_REPLY_STRING) {
		freeReplyObject(r);
		return 0;
	}
	next = strtoul(r->str, NULL, 10);
	freeReplyObject(r);
	/* no "*": "n:*" would also match the last message below n */
	snprintf(search, sizeof(search), "UID %lu:4294967295", next > 0 ? next : 1);
	if (run_sync(ct, user, CT_PASS_STRAG, extra, (int)(sizeof(extra) / sizeof(extra[0])), &v) <
	    0)
		return -1;
	if (v.exit_code != 0 || v.errors != 0) {
		const char *why = v.exit_code != 0 ? "straggler pass: imapferry-sync did not exit 0"
		                                   : "straggler pass: errors detected";

		printf("%s: FAILED: %s\n", user, why);
		record_failure(c, user, "stragglers", why, &v);
		return -1;
	}
	ct_last_record(c, user, "stragglers", NULL);
	if (v.copied > 0 && v.max_uid1 + 1 > next) {
		if ((r = ct_cmd(c, "HSET %s next_uid %lu", key, v.max_uid1 + 1)) == NULL)
			return -1;
		freeReplyObject(r);
	}
	if ((r = ct_cmd(c, "HINCRBY %s copied %lu", key, v.copied)) != NULL)
		freeReplyObject(r);
	*copied_r = v.copied;
	return 1;
}

int ct_stragglers(struct ct *ct, char **users, int n)
{
	const char *err;
	struct rnodes *c = ct_connect(ct->redis, &err);
	redisReply *idx = NULL, *r;
	int64_t now;
	int rc = CT_EXIT_OK, ran = 0;
	char now_s[32];

	if (c == NULL) {
		fprintf(stderr, "imapferryctl: %s\n", err);
		return CT_EXIT_NOREDIS;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (ct_now_ms(c, &now) < 0)
		goto noredis;
	snprintf(now_s, sizeof(now_s), "%lld", (long long)now);
	if (n == 0) {
		/* windows that ended leave the index (the record stays) */
		if ((r = ct_cmd(c, "ZREMRANGEBYSCORE %s -inf %s", CT_KEY_STRAG_INDEX, now_s)) ==
		    NULL)
			goto noredis;
		if (r->integer > 0)
			printf("stragglers: %lld window%s ended\n", r->integer,
			       r->integer == 1 ? "" : "s");
		freeReplyObject(r);
		if ((idx = ct_cmd(c, "ZRANGEBYSCORE %s (%s +inf", CT_KEY_STRAG_INDEX, now_s)) ==
		    NULL)
			goto noredis;
		if (idx->type != REDIS_REPLY_ARRAY)
			goto noredis;
		n = (int)idx->elements;
	}
	for (int i = 0; i < n && !ct_stop; i++) {
		const char *user = idx != NULL ? idx->element[i]->str : users[i];
		enum rk_route_state st;
		uint64_t epoch;
		unsigned long copied;
		int prc;

		if (ct_route_get(c, user, &st, &epoch) < 0)
			goto noredis;
		if (st != RK_ROUTE_DST) {
			printf("%s: route %s: no straggler copy (only after a cutover)\n", user,
			       rk_route_state_names[st]);
			if ((r = ct_cmd(c, "ZREM %s %s", CT_KEY_STRAG_INDEX, user)) != NULL)
				freeReplyObject(r);
			continue;
		}
		ran++;
		prc = strag_pass(ct, c, user, &copied);
		if (prc < 0) {
			rc = CT_EXIT_FAILED;
		} else if (prc == 0) {
			printf("%s: no straggler record (cut over with --stragglers 0, or no sync "
			       "state of INBOX)\n",
			       user);
			rc = CT_EXIT_FAILED;
		} else {
			printf("%s: %lu straggler%s copied\n", user, copied,
			       copied == 1 ? "" : "s");
		}
	}
	if (ran == 0)
		printf("stragglers: no user in a straggler window\n");
	if (idx != NULL)
		freeReplyObject(idx);
	rn_close(&c);
	return rc;
noredis:
	if (idx != NULL)
		freeReplyObject(idx);
	rn_close(&c);
	return CT_EXIT_NOREDIS;
}

/* Freeze user (route FREEZE with a lease towards `from`, the side the user
 * is on; proxies drain the sessions and confirm). NULL when done (*epoch_r,
 * *t_frozen_r), else why not; *frozen_r says whether the route was changed
 * (not when another imapferryctl's lease runs: leave the route alone then). */
static const char *freeze_user(const struct ct *ct, struct rnodes *c, const char *user,
                               enum rk_route_state from, uint64_t *epoch_r, double *t_frozen_r,
                               int *frozen_r)
{
	int proxies, rc;

	*frozen_r = 0;
	*t_frozen_r = mono();
	if ((proxies = route(ct, c, user, RK_ROUTE_FREEZE, CT_GUARD_FREEZE, from, epoch_r)) < 0)
		return proxies == -2 ? "frozen by another imapferryctl"
		                     : "the route could not be set";
	*frozen_r = 1;
	*t_frozen_r = mono();
	printf("%s: frozen (epoch %llu, lease %u s), %d prox%s to confirm\n", user,
	       (unsigned long long)*epoch_r, ct->lease_s, proxies, proxies == 1 ? "y" : "ies");
	rc = wait_acks(c, user, *epoch_r, proxies, ct->drain_timeout_s);
	if (rc <= 0)
		return rc < 0          ? "Redis error while waiting for the proxies"
		       : ct_lease.lost ? "the freeze lease was lost"
		                       : "the proxies did not confirm the freeze";
	printf("%s: no session left (%.2f s)\n", user, mono() - *t_frozen_r);
	if (test_pause(user) < 0)
		return ct_lease.lost ? "the freeze lease was lost" : "interrupted";
	return NULL;
}

/* What a stale freeze (its lease ended: the imapferryctl that froze the user
 * is gone) says before it is taken over. */
static void stale_say(const char *user, const struct ct_route_info *ri)
{
	printf("%s: taking over a freeze whose lease ended %.1f s ago (epoch %llu; the "
	       "imapferryctl that froze the user is gone; the user was on the %s)\n",
	       user, -ri->lease_left_ms / 1000.0, (unsigned long long)ri->epoch,
	       ri->lease_to == RK_ROUTE_DST ? "destination" : "source");
}

/* Deletes the user's source-to-destination sync state (a rollback after the
 * flip changed the source behind it: the daemon starts over by identifying
 * messages, which copies nothing twice). */
static int del_cb(const char *key, size_t len, void *aux)
{
	redisReply *d = ct_cmd(aux, "DEL %b", key, len);

	if (d != NULL)
		freeReplyObject(d);
	return 0;
}

static int state_drop(struct rnodes *c, const char *user)
{
	char key[1100], match[1200];
	redisReply *r;

	rk_key_state(key, sizeof(key), user);
	if ((r = ct_cmd(c, "DEL %s", key)) == NULL)
		return -1;
	freeReplyObject(r);
	/* the maps share the state's hash tag: one node holds them all */
	rk_key_map(match, sizeof(match), user, "");
	strcat(match, "*");
	if (rn_scan(c, match, del_cb, c) < 0) {
		fprintf(stderr, "imapferryctl: Redis: %s\n", rn_error(c));
		return -1;
	}
	return 0;
}

/* What a sync back did with folders: the destination's new ones are created
 * on the source; folders the destination does not have (deleted there since
 * the cutover) are kept on the source unless --delete-folders. */
static void folders_say(const char *user, const struct ct_verdict *v, int delete_folders)
{
	if (v->created > 0)
		printf("%s: %u folder%s made on the destination since the cutover created on the "
		       "source:%s\n",
		       user, v->created, v->created == 1 ? "" : "s", v->created_names);
	if (delete_folders && v->deleted > 0)
		printf("%s: %u folder%s that the destination does not have deleted on the source "
		       "(--delete-folders):%s\n",
		       user, v->deleted, v->deleted == 1 ? "" : "s", v->deleted_names);
	else if (!delete_folders && v->only2 > 0)
		printf("%s: %u folder%s on the source that the destination does not have (deleted "
		       "there since the cutover?) kept on the source, with their mail:%s; "
		       "rollback --delete-folders deletes them\n",
		       user, v->only2, v->only2 == 1 ? "" : "s", v->only2_names);
}

/* rollback of a user on the destination (or frozen on the way back from it
 * by an imapferryctl that is gone: ri stale): freeze, stragglers, destination
 * to source (--delete2), verify, then SRC; any failure leaves the user on
 * DST. */
static int rollback_dst(const struct ct *ct, struct rnodes *c, const char *user,
                        const struct ct_route_info *ri)
{
	const char *extra[] = {"--delete2", "--syncduplicates", "--nostate", "--delete2folders"};
	int nextra = ct->delete_folders ? 4 : 3;
	const char *why;
	struct ct_verdict v = {0};
	unsigned long copied = 0;
	uint64_t epoch = ri->epoch;
	double t0 = mono(), t_frozen;
	long long flip_ms = -1;
	char key[1100];
	redisReply *r;
	int prc, frozen = 0;

	strag_key(key, sizeof(key), user);
	if ((r = ct_cmd(c, "HGET %s flip_ms", key)) == NULL)
		return CT_EXIT_NOREDIS;
	if (r->type == REDIS_REPLY_STRING)
		flip_ms = atoll(r->str);
	freeReplyObject(r);
	if (ct->sync_argc == 0 && !ct->force) {
		printf("%s: on the destination: what the user changed there since the cutover "
		       "(new mail, flags, deletions, folders) is not on the source and would be "
		       "lost, and so would mail delivered to the destination. Give -- "
		       "SYNC-OPTIONS to sync it back first (destination to source), or --force "
		       "to roll back without it. Nothing done.\n",
		       user);
		return CT_EXIT_FAILED;
	}
	if (ct_route_stale(ri))
		stale_say(user, ri);
	if (ct->sync_argc == 0) {
		prc = route(ct, c, user, RK_ROUTE_SRC, CT_GUARD_EPOCH, RK_ROUTE_SRC, &epoch);
		if (prc == -2)
			return CT_EXIT_FAILED;
		if (prc < 0 || ct_user_resume(c, user) < 0)
			return CT_EXIT_NOREDIS;
		printf("%s: route SRC, epoch %llu (--force: what changed on the destination since "
		       "the cutover is not on the source)\n",
		       user, (unsigned long long)epoch);
		return CT_EXIT_OK;
	}
	if (flip_ms < 0 && !ct->force) {
		printf("%s: no straggler record of the cutover: mail delivered to the source after "
		       "it cannot be told from mail deleted on the destination, and the sync back "
		       "(--delete2) would delete it on the source; --force to do it anyway. "
		       "Nothing done.\n",
		       user);
		return CT_EXIT_FAILED;
	}
	if ((why = freeze_user(ct, c, user, RK_ROUTE_DST, &epoch, &t_frozen, &frozen)) != NULL)
		goto fail;
	if (flip_ms >= 0) {
		if ((prc = strag_pass(ct, c, user, &copied)) < 0) {
			why = "the straggler pass failed";
			goto fail;
		}
		printf("%s: %lu straggler%s copied first\n", user, copied, copied == 1 ? "" : "s");
	}
	if (lease_check_now() < 0) {
		why = "the freeze lease was lost";
		goto fail;
	}
	printf("%s: sync back: destination to source\n", user);
	if (run_sync(ct, user, CT_PASS_BACK, extra, nextra, &v) < 0) {
		why = "imapferry-sync could not be started";
		goto fail;
	}
	if (ct_stop) {
		why = "interrupted";
		goto fail;
	}
	if (ct_lease.lost) {
		why = "the freeze lease was lost";
		goto fail;
	}
	sizes_record(c, user, "rollback", &v, 1);
	folders_say(user, &v, ct->delete_folders);
	if ((why = verdict_fail(&v, 1)) != NULL)
		goto fail;
	printf("%s: verified: %u folders, the source equals the destination\n", user, v.folders);
	ct_last_record(c, user, "rollback", NULL);
	if (route(ct, c, user, RK_ROUTE_SRC, CT_GUARD_LEASE, RK_ROUTE_SRC, &epoch) < 0) {
		why = "the route could not be set back";
		goto fail;
	}
	if (state_drop(c, user) < 0 || ct_user_resume(c, user) < 0)
		printf("%s: could not give the user back to the daemon\n", user);
	if ((r = ct_cmd(c, "ZREM %s %s", CT_KEY_STRAG_INDEX, user)) != NULL)
		freeReplyObject(r);
	if ((r = ct_cmd(c, "DEL %s", key)) != NULL)
		freeReplyObject(r);
	printf("%s: rolled back to the source (epoch %llu) in %.2f s, frozen %.2f s\n", user,
	       (unsigned long long)epoch, mono() - t0, mono() - t_frozen);
	return CT_EXIT_OK;
fail:
	printf("%s: FAILED: %s\n", user, why);
	record_failure(c, user, "rollback", why, &v);
	if (frozen && route(ct, c, user, RK_ROUTE_DST, CT_GUARD_EPOCH, RK_ROUTE_SRC, &epoch) >= 0)
		printf("%s: stays on the destination (epoch %llu)\n", user,
		       (unsigned long long)epoch);
	lease_drop();
	return CT_EXIT_FAILED;
}

int ct_rollback(struct ct *ct, char **users, int n)
{
	const char *err;
	struct rnodes *c;
	int rc = CT_EXIT_OK;
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	setvbuf(stdout, NULL, _IOLBF, 0);
	if ((c = ct_connect(ct->redis, &err)) == NULL) {
		fprintf(stderr, "imapferryctl: %s\n", err);
		return CT_EXIT_NOREDIS;
	}
	for (int i = 0; i < n && !ct_stop; i++) {
		struct ct_route_info ri;
		uint64_t epoch;
		long long rcv;
		int one;

		if (ct_route_info(c, users[i], &ri) < 0) {
			rc = CT_EXIT_NOREDIS;
			continue;
		}
		if (ri.state == RK_ROUTE_DST ||
		    (ct_route_stale(&ri) && ri.lease_to == RK_ROUTE_DST)) {
			one = rollback_dst(ct, c, users[i], &ri);
			if (one != CT_EXIT_OK && rc == CT_EXIT_OK)
				rc = one;
			continue;
		}
		if (ri.state == RK_ROUTE_FREEZE && ri.has_lease && !ct_route_stale(&ri) &&
		    !ct->force) {
			printf("%s: a %s holds the user frozen (epoch %llu, its lease ends in %.1f "
			       "s): stop it there, or --force (it then fails and leaves the route "
			       "alone). Nothing done.\n",
			       users[i], ri.lease_to == RK_ROUTE_DST ? "rollback" : "cutover",
			       (unsigned long long)ri.epoch, ri.lease_left_ms / 1000.0);
			rc = CT_EXIT_FAILED;
			continue;
		}
		if (ct_route_stale(&ri))
			stale_say(users[i], &ri);
		if (ct_route_set(c, users[i], RK_ROUTE_SRC, &epoch, &rcv) < 0 ||
		    ct_user_resume(c, users[i]) < 0) {
			rc = CT_EXIT_NOREDIS;
			continue;
		}
		printf("%s: route SRC, epoch %llu (%lld prox%s notified)\n", users[i],
		       (unsigned long long)epoch, rcv, rcv == 1 ? "y" : "ies");
	}
	rn_close(&c);
	return rc;
}

static int cutover_one(const struct ct *ct, const char *user, enum ct_mode mode)
{
	const char *err, *why = NULL;
	struct rnodes *c = ct_connect(ct->redis, &err);
	struct ct_quiet q;
	struct ct_verdict v = {0};
	struct ct_route_info ri;
	enum rk_route_state st;
	uint64_t epoch = 0;
	double t0 = mono(), t_frozen = 0;
	int rc, quiet = 0, frozen = 0;

	if (c == NULL) {
		printf("%s: %s\n", user, err);
		return CT_EXIT_NOREDIS;
	}
	if (ct_route_info(c, user, &ri) < 0) {
		rn_close(&c);
		return CT_EXIT_NOREDIS;
	}
	st = ri.state;
	epoch = ri.epoch;
	if (mode == CT_CUTOVER && st == RK_ROUTE_DST) {
		printf("%s: already on the destination (epoch %llu): nothing to do\n", user,
		       (unsigned long long)epoch);
		rn_close(&c);
		return CT_EXIT_SKIPPED;
	}
	if (mode == CT_FINAL_DELTA && st != RK_ROUTE_SRC) {
		/* a source-to-destination pass would undo what the user changed on
		 * the destination (and --delete2 would delete new mail there) */
		printf("%s: route %s: %s\n", user, rk_route_state_names[st],
		       st == RK_ROUTE_DST ? "on the destination already: no final delta (skipped)"
		       : ct_route_stale(&ri)
		               ? "frozen by an imapferryctl that is gone (lease ended): "
		                 "imapferryctl rollback USER first; no final delta"
		               : "a cutover is running: no final delta");
		rn_close(&c);
		return st == RK_ROUTE_DST ? CT_EXIT_SKIPPED : CT_EXIT_FAILED;
	}
	if (mode == CT_CUTOVER && ct_route_stale(&ri) && ri.lease_to == RK_ROUTE_DST) {
		/* its mail is on the destination: a source-to-destination pass
		 * would undo what the user changed there */
		printf("%s: frozen on the way back from the destination by a rollback that is "
		       "gone (lease ended %.1f s ago): run imapferryctl rollback USER again. "
		       "Nothing done.\n",
		       user, -ri.lease_left_ms / 1000.0);
		rn_close(&c);
		return CT_EXIT_FAILED;
	}
	if (mode == CT_CUTOVER) {
		if (ct_route_stale(&ri))
			stale_say(user, &ri);
		why = freeze_user(ct, c, user, RK_ROUTE_SRC, &epoch, &t_frozen, &frozen);
		if (why != NULL)
			goto fail;
	}
	rc = quiesce(c, user, ct->quiesce_timeout_s, &q);
	if (rc <= 0) {
		why = rc < 0          ? "Redis error while waiting for the daemon"
		      : ct_lease.lost ? "the freeze lease was lost"
		                      : "the daemon's syncs of the user did not finish";
		goto fail;
	}
	quiet = 1;
	if (lease_check_now() < 0) {
		why = "the freeze lease was lost";
		goto fail;
	}
	printf("%s: final sync%s\n", user, q.removed > 0 ? " (queued changes taken over)" : "");
	if (run_sync(ct, user, CT_PASS_FINAL, NULL, 0, &v) < 0) {
		why = "imapferry-sync could not be started";
		goto fail;
	}
	if (ct_stop) {
		why = "interrupted";
		goto fail;
	}
	if (ct_lease.lost) {
		why = "the freeze lease was lost";
		goto fail;
	}
	sizes_record(c, user, mode_names[mode], &v, 0);
	if ((why = verdict_fail(&v, has_opt(ct, "delete2"))) != NULL)
		goto fail;
	printf("%s: verified: %u folders, message counts equal on both sides\n", user, v.folders);
	ct_last_record(c, user, mode_names[mode], NULL);
	if (mode == CT_FINAL_DELTA) {
		unquiesce(c, user, &q);
		printf("%s: final delta done in %.2f s\n", user, mono() - t0);
		rn_close(&c);
		return CT_EXIT_OK;
	}
	if (route(ct, c, user, RK_ROUTE_DST, CT_GUARD_LEASE, RK_ROUTE_SRC, &epoch) < 0) {
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
	strag_record(c, user, ct->stragglers_s);
	rn_close(&c);
	return CT_EXIT_OK;
fail:
	printf("%s: FAILED: %s\n", user, why);
	record_failure(c, user, mode_names[mode], why, &v);
	if (mode == CT_CUTOVER && frozen) {
		/* only while the freeze is still ours (not taken over since) */
		if (route(ct, c, user, RK_ROUTE_SRC, CT_GUARD_EPOCH, RK_ROUTE_SRC, &epoch) >= 0) {
			printf("%s: rolled back to the source (epoch %llu)\n", user,
			       (unsigned long long)epoch);
			if (ct_user_resume(c, user) < 0)
				printf("%s: could not give the user back to the daemon\n", user);
		}
	} else if (quiet) {
		unquiesce(c, user, &q);
	}
	lease_drop();
	rn_close(&c);
	return CT_EXIT_FAILED;
}

/* The end of a batch: counts, time, and who failed. */
static void summary(const char *what, char **users, int n, const int *rcs, double took)
{
	int done = 0, skipped = 0, failed = 0, unstarted = 0, shown = 0;

	for (int i = 0; i < n; i++) {
		if (rcs[i] < 0)
			unstarted++;
		else if (rcs[i] == CT_EXIT_OK)
			done++;
		else if (rcs[i] == CT_EXIT_SKIPPED)
			skipped++;
		else
			failed++;
	}
	printf("%s: %d user%s in %.1f s: %d done", what, n, n == 1 ? "" : "s", took, done);
	if (skipped > 0)
		printf(", %d already on the destination", skipped);
	printf(", %d failed", failed);
	if (unstarted > 0)
		printf(", %d not started (interrupted)", unstarted);
	printf("\n");
	if (failed == 0)
		return;
	printf("failed:");
	for (int i = 0; i < n; i++) {
		if (rcs[i] < 0 || rcs[i] == CT_EXIT_OK || rcs[i] == CT_EXIT_SKIPPED)
			continue;
		if (shown++ == CT_SUMMARY_NAMES) {
			printf(" ... (%d more)", failed - CT_SUMMARY_NAMES);
			break;
		}
		printf(" %s", users[i]);
	}
	printf("\n");
}

int ct_cutover(struct ct *ct, char **users, int n, enum ct_mode mode)
{
	struct sigaction sa;
	int next = 0, running = 0, failed = 0, rc;
	pid_t *pids;
	int *rcs;
	double t0 = mono();

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (n == 1 && !ct->all) {
		rc = cutover_one(ct, users[0], mode);
		return rc == CT_EXIT_SKIPPED ? CT_EXIT_OK : rc;
	}
	pids = calloc((size_t)n + 1, sizeof(*pids));
	rcs = calloc((size_t)n + 1, sizeof(*rcs));
	if (pids == NULL || rcs == NULL)
		abort();
	for (int i = 0; i < n; i++)
		rcs[i] = -1;
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
			pids[next++] = pid;
			running++;
		}
		if (running == 0)
			break; /* interrupted, or fork failed with nothing running */
		pid = wait(&status);
		if (pid < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		running--;
		for (int i = 0; i < next; i++)
			if (pids[i] == pid) {
				rcs[i] = WIFEXITED(status) ? WEXITSTATUS(status) : CT_EXIT_FAILED;
				if (rcs[i] != CT_EXIT_OK && rcs[i] != CT_EXIT_SKIPPED)
					failed++;
				pids[i] = 0;
			}
	}
	summary(mode == CT_CUTOVER ? "cutover" : "final-delta", users, n, rcs, mono() - t0);
	rc = failed > 0 || next < n ? CT_EXIT_FAILED : CT_EXIT_OK;
	free(pids);
	free(rcs);
	return rc;
}
