/*
 * main.c - imapferryctl's command line.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "ctl.h"

static void usage(FILE *fp)
{
	fprintf(fp,
	        "usage: imapferryctl [--redis HOST:PORT|PATH] COMMAND ...\n"
	        "  status [USER...] [--json]        route, queue, last sync state; all users\n"
	        "                                   (poll schedule and routes) when none given\n"
	        "  route USER src|freeze|dst        set a route (epoch bumped, proxies told)\n"
	        "  cutover USER...|--all [--concurrency N] -- SYNC-OPTIONS\n"
	        "                                   freeze, final verified sync, flip to the\n"
	        "                                   destination; any difference rolls back\n"
	        "  final-delta USER...|--all -- SYNC-OPTIONS\n"
	        "                                   the final verified sync only (no proxy)\n"
	        "  rollback USER... [--force] [--delete-folders] [-- SYNC-OPTIONS]\n"
	        "                                   route back to the source; a user on the\n"
	        "                                   destination is synced back first (with\n"
	        "                                   SYNC-OPTIONS) or only with --force; folders\n"
	        "                                   new there are created on the source, those\n"
	        "                                   it lacks are kept (--delete-folders: deleted)\n"
	        "  stragglers [USER...] -- SYNC-OPTIONS\n"
	        "                                   copy source INBOX mail that arrived after\n"
	        "                                   the cutover (users in their window when\n"
	        "                                   none given); run it from cron\n"
	        "  serve [--http ADDR:PORT] [--sample SECS]\n"
	        "                                   read-only status web page (default %s,\n"
	        "                                   a throughput sample every %u s)\n"
	        "options:\n"
	        "  --redis HOST:PORT|PATH   default 127.0.0.1:6379\n"
	        "  --sync PATH              imapferry-sync (default: next to imapferryctl, or\n"
	        "                           ../sync/imapferry-sync in a build tree, or $PATH)\n"
	        "  --concurrency N          users at once (%u); also --jobs N, -j N\n"
	        "  --all                    cutover, final-delta: every user known in Redis\n"
	        "                           (poll schedule, routes, sync states)\n"
	        "  --drain-timeout SECS     proxies confirming a freeze (%u)\n"
	        "  --quiesce-timeout SECS   the daemon's syncs of a user finishing (%u)\n"
	        "  --lease SECS             cutover, rollback: the freeze lease, renewed while\n"
	        "                           imapferryctl works (%u); when it ends (imapferryctl\n"
	        "                           killed) proxies let logins go on to the source\n"
	        "  --users-file FILE        users, one a line (# comments), besides USER...\n"
	        "  --stragglers SECS        cutover: straggler window after the flip (%u, 0 off)\n"
	        "SYNC-OPTIONS are imapferry-sync's connection options (--host1, --authuser1,\n"
	        "--passfile1, ...); --user1/--user2 are added per user, and --redis unless given.\n"
	        "Exit codes: 0 done, 1 a user failed (rolled back), 64 usage, 69 Redis.\n",
	        CT_SERVE_HTTP_DEFAULT, CT_SERVE_SAMPLE_S, CT_CONCURRENCY_DEFAULT,
	        CT_DRAIN_TIMEOUT_S, CT_QUIESCE_TIMEOUT_S, CT_LEASE_DEFAULT_S,
	        CT_STRAGGLERS_DEFAULT_S);
}

/* imapferry-sync next to us, or in ../sync/ (a build tree), else by $PATH. */
static const char *find_sync(const char *argv0)
{
	static char buf[PATH_MAX + 64];
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	char *slash;

	(void)argv0;
	if (n > 0) {
		self[n] = '\0';
		if ((slash = strrchr(self, '/')) != NULL) {
			*slash = '\0';
			snprintf(buf, sizeof(buf), "%s/imapferry-sync", self);
			if (access(buf, X_OK) == 0)
				return buf;
			snprintf(buf, sizeof(buf), "%s/../sync/imapferry-sync", self);
			if (access(buf, X_OK) == 0)
				return buf;
		}
	}
	return "/usr/bin/imapferry-sync";
}

static int parse_uint(const char *opt, const char *v, unsigned min, unsigned max, unsigned *out)
{
	char *end;
	unsigned long x = v != NULL ? strtoul(v, &end, 10) : 0;

	if (v == NULL || *v == '\0' || *end != '\0' || x < min || x > max) {
		fprintf(stderr, "imapferryctl: %s needs a number from %u to %u\n", opt, min, max);
		return -1;
	}
	*out = (unsigned)x;
	return 0;
}

struct ct_list {
	char **v;
	int n, cap;
};

static void list_add(struct ct_list *l, char *s)
{
	if (l->n == l->cap) {
		l->cap = l->cap ? l->cap * 2 : 16;
		l->v = realloc(l->v, (size_t)l->cap * sizeof(*l->v));
		if (l->v == NULL)
			abort();
	}
	l->v[l->n++] = s;
}

/* Strings malloc'ed here (users files, --all), freed at exit. */
static struct ct_list ct_owned;

static int read_users(struct ct_list *l, const char *path)
{
	FILE *fp = fopen(path, "r");
	char line[1024];

	if (fp == NULL) {
		perror(path);
		return -1;
	}
	while (fgets(line, sizeof(line), fp) != NULL) {
		char *s = line + strspn(line, " \t"), *e;

		s[strcspn(s, "#\r\n")] = '\0';
		e = s + strlen(s);
		while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
			*--e = '\0';
		if (*s != '\0') {
			char *d = strdup(s);

			if (d == NULL)
				abort();
			list_add(l, d);
			list_add(&ct_owned, d);
		}
	}
	fclose(fp);
	return 0;
}

static int cmd_route(struct ct *ct, char **args, int n)
{
	static const struct {
		const char *name;
		enum rk_route_state st;
	} names[] = {{"src", RK_ROUTE_SRC}, {"freeze", RK_ROUTE_FREEZE}, {"dst", RK_ROUTE_DST}};
	const char *err;
	struct rnodes *c;
	uint64_t epoch;
	long long rcv;
	int found = -1;

	if (n != 2) {
		fprintf(stderr, "imapferryctl: route USER src|freeze|dst\n");
		return CT_EXIT_USAGE;
	}
	for (int i = 0; i < 3; i++)
		if (strcasecmp(args[1], names[i].name) == 0)
			found = i;
	if (found < 0) {
		fprintf(stderr, "imapferryctl: route state must be src, freeze or dst\n");
		return CT_EXIT_USAGE;
	}
	if ((c = ct_connect(ct->redis, &err)) == NULL) {
		fprintf(stderr, "imapferryctl: %s\n", err);
		return CT_EXIT_NOREDIS;
	}
	if (ct_route_set(c, args[0], names[found].st, &epoch, &rcv) < 0) {
		rn_close(&c);
		return CT_EXIT_NOREDIS;
	}
	printf("%s: route %s, epoch %llu (%lld prox%s notified)\n", args[0],
	       rk_route_state_names[names[found].st], (unsigned long long)epoch, rcv,
	       rcv == 1 ? "y" : "ies");
	rn_close(&c);
	return CT_EXIT_OK;
}

static int str_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* --all: every user known in Redis joins the list (sorted, each once). */
static int add_all(struct ct *ct, struct ct_list *l, const char *cmd)
{
	const char *err;
	struct rnodes *c;
	char **all;
	int n, j = 0;

	if (cmd == NULL || (strcmp(cmd, "cutover") != 0 && strcmp(cmd, "final-delta") != 0)) {
		fprintf(stderr, "imapferryctl: --all is for cutover and final-delta\n");
		return CT_EXIT_USAGE;
	}
	if ((c = ct_connect(ct->redis, &err)) == NULL) {
		fprintf(stderr, "imapferryctl: %s\n", err);
		return CT_EXIT_NOREDIS;
	}
	if (ct_users_list(c, &all, &n) < 0) {
		rn_close(&c);
		return CT_EXIT_NOREDIS;
	}
	rn_close(&c);
	for (int i = 0; i < n; i++) {
		list_add(l, all[i]);
		list_add(&ct_owned, all[i]);
	}
	free(all);
	if (l->n > 1)
		qsort(l->v, (size_t)l->n, sizeof(*l->v), str_cmp);
	for (int i = 0; i < l->n; i++)
		if (j == 0 || strcmp(l->v[i], l->v[j - 1]) != 0)
			l->v[j++] = l->v[i];
	l->n = j;
	printf("imapferryctl: --all: %d user%s known in Redis\n", j, j == 1 ? "" : "s");
	if (j == 0) {
		fprintf(stderr, "imapferryctl: --all: no user known in Redis\n");
		return CT_EXIT_USAGE;
	}
	return CT_EXIT_OK;
}

/*
 * --password1/--password2 among the sync options: handed to the syncs in
 * IMAPSYNC_PASSWORD1/2 (as imapsync reads them) instead of on their command
 * lines, and blanked in this process's own arguments, so that neither shows
 * in ps. --passfile1/2 is still the better way (README).
 */
static void passwords_to_env(struct ct *ct)
{
	int n = 0;

	for (int i = 0; i < ct->sync_argc; i++) {
		char *a = ct->sync_argv[i], *value = NULL;
		const char *name = a;
		int side;

		while (*name == '-')
			name++;
		if (name == a || strncmp(name, "password", 8) != 0 ||
		    (name[8] != '1' && name[8] != '2') || (name[9] != '\0' && name[9] != '=')) {
			ct->sync_argv[n++] = a;
			continue;
		}
		side = name[8] - '0';
		if (name[9] == '=') {
			value = (char *)name + 10;
		} else if (i + 1 < ct->sync_argc) {
			value = ct->sync_argv[++i];
		}
		if (value == NULL) {
			ct->sync_argv[n++] = a; /* the sync says what is missing */
			continue;
		}
		setenv(side == 1 ? "IMAPSYNC_PASSWORD1" : "IMAPSYNC_PASSWORD2", value, 1);
		memset(value, 'x', strlen(value));
	}
	ct->sync_argv[n] = NULL;
	ct->sync_argc = n;
}

int main(int argc, char **argv)
{
	struct ct ct;
	struct ct_list args = {0};
	const char *cmd = NULL, *users_file = NULL;
	int i, rc;

	memset(&ct, 0, sizeof(ct));
	ct.redis = "127.0.0.1:6379";
	ct.concurrency = CT_CONCURRENCY_DEFAULT;
	ct.drain_timeout_s = CT_DRAIN_TIMEOUT_S;
	ct.quiesce_timeout_s = CT_QUIESCE_TIMEOUT_S;
	ct.lease_s = CT_LEASE_DEFAULT_S;
	ct.stragglers_s = CT_STRAGGLERS_DEFAULT_S;
	ct.sync_path = find_sync(argv[0]);
	ct.http = CT_SERVE_HTTP_DEFAULT;
	ct.sample_s = CT_SERVE_SAMPLE_S;
	for (i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (strcmp(a, "--") == 0) {
			ct.sync_argv = argv + i + 1;
			ct.sync_argc = argc - i - 1;
			passwords_to_env(&ct);
			break;
		}
		if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
			usage(stdout);
			return 0;
		}
		if (strcmp(a, "--json") == 0) {
			ct.json = 1;
		} else if (strcmp(a, "--redis") == 0 && v != NULL) {
			ct.redis = v;
			i++;
		} else if (strcmp(a, "--sync") == 0 && v != NULL) {
			ct.sync_path = v;
			i++;
		} else if (strcmp(a, "--users-file") == 0 && v != NULL) {
			users_file = v;
			i++;
		} else if (strcmp(a, "--http") == 0 && v != NULL) {
			ct.http = v;
			i++;
		} else if (strcmp(a, "--sample") == 0) {
			if (parse_uint(a, v, 1, 3600, &ct.sample_s) < 0)
				return CT_EXIT_USAGE;
			i++;
		} else if (strcmp(a, "--force") == 0) {
			ct.force = 1;
		} else if (strcmp(a, "--delete-folders") == 0) {
			ct.delete_folders = 1;
		} else if (strcmp(a, "--stragglers") == 0) {
			if (parse_uint(a, v, 0, 365u * 86400u, &ct.stragglers_s) < 0)
				return CT_EXIT_USAGE;
			i++;
		} else if (strcmp(a, "--all") == 0) {
			ct.all = 1;
		} else if (strcmp(a, "--concurrency") == 0 || strcmp(a, "--jobs") == 0 ||
		           strcmp(a, "-j") == 0) {
			if (parse_uint(a, v, 1, CT_CONCURRENCY_MAX, &ct.concurrency) < 0)
				return CT_EXIT_USAGE;
			i++;
		} else if (strcmp(a, "--drain-timeout") == 0) {
			if (parse_uint(a, v, 1, 3600, &ct.drain_timeout_s) < 0)
				return CT_EXIT_USAGE;
			i++;
		} else if (strcmp(a, "--lease") == 0) {
			if (parse_uint(a, v, CT_LEASE_MIN_S, CT_LEASE_MAX_S, &ct.lease_s) < 0)
				return CT_EXIT_USAGE;
			i++;
		} else if (strcmp(a, "--quiesce-timeout") == 0) {
			if (parse_uint(a, v, 1, 86400, &ct.quiesce_timeout_s) < 0)
				return CT_EXIT_USAGE;
			i++;
		} else if (a[0] == '-') {
			fprintf(stderr, "imapferryctl: unknown option %s\n", a);
			usage(stderr);
			return CT_EXIT_USAGE;
		} else if (cmd == NULL) {
			cmd = a;
		} else {
			list_add(&args, argv[i]);
		}
	}
	if (users_file != NULL && read_users(&args, users_file) < 0) {
		rc = CT_EXIT_USAGE;
	} else if (ct.all && (rc = add_all(&ct, &args, cmd)) != CT_EXIT_OK) {
		/* rc says why */
	} else if (cmd == NULL) {
		usage(stderr);
		rc = CT_EXIT_USAGE;
	} else if (strcmp(cmd, "status") == 0) {
		rc = ct_status(&ct, args.v, args.n);
	} else if (strcmp(cmd, "route") == 0) {
		rc = cmd_route(&ct, args.v, args.n);
	} else if (strcmp(cmd, "serve") == 0) {
		if (args.n != 0) {
			fprintf(stderr, "imapferryctl: serve takes no USER\n");
			rc = CT_EXIT_USAGE;
		} else {
			rc = ct_serve(&ct);
		}
	} else if (strcmp(cmd, "rollback") == 0) {
		if (args.n == 0) {
			fprintf(stderr,
			        "imapferryctl: rollback USER... [--force] [-- SYNC-OPTIONS]\n");
			rc = CT_EXIT_USAGE;
		} else {
			rc = ct_rollback(&ct, args.v, args.n);
		}
	} else if (strcmp(cmd, "stragglers") == 0) {
		if (ct.sync_argc == 0) {
			fprintf(stderr, "imapferryctl: stragglers [USER...] -- SYNC-OPTIONS\n");
			rc = CT_EXIT_USAGE;
		} else {
			rc = ct_stragglers(&ct, args.v, args.n);
		}
	} else if (strcmp(cmd, "cutover") == 0 || strcmp(cmd, "final-delta") == 0) {
		if (args.n == 0 || ct.sync_argc == 0) {
			fprintf(stderr, "imapferryctl: %s USER... -- SYNC-OPTIONS\n", cmd);
			rc = CT_EXIT_USAGE;
		} else {
			rc = ct_cutover(&ct, args.v, args.n,
			                strcmp(cmd, "cutover") == 0 ? CT_CUTOVER : CT_FINAL_DELTA);
		}
	} else {
		fprintf(stderr, "imapferryctl: unknown command %s\n", cmd);
		usage(stderr);
		rc = CT_EXIT_USAGE;
	}
	free(args.v);
	for (int k = 0; k < ct_owned.n; k++)
		free(ct_owned.v[k]);
	free(ct_owned.v);
	return rc;
}
