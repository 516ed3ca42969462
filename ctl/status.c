/*
 * status.c - imapferryctl status: per user, the route, the queue (due and
 * in-flight items, the oldest due item's age), the next poll and the last
 * sync state (folders, messages on each side) from rep:{s}:st:<user>; for
 * all users a table with totals, or JSON.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"

struct ct_user {
	char *name;
	char route[8]; /* SRC FREEZE DST, or "-" (no route stored: the source) */
	unsigned long long epoch;
	long long changed_ms; /* -1 unknown */
	long long lease_ms;   /* FREEZE: the end of its lease (Redis's clock); -1 none */
	char lease_to[8];     /* where the user was before the freeze: SRC, DST */
	unsigned due, inflight;
	long long oldest_due_ms; /* -1 none */
	long long next_poll_ms;  /* -1 not scheduled */
	unsigned folders;
	unsigned long long msgs1, msgs2;
	int has_state;
	long long ok_ms, err_ms; /* rep:{s}:last:<user>; -1 unknown */
	long long full_ms;       /* the daemon's last full check there; -1 none */
	char ok_by[16], err_by[16];
	char *err;
	/* the last measured messages and bytes per side (ct_sizes_record) */
	long long size_ms; /* -1 never measured */
	char size_by[16];
	unsigned long long size_msgs[2], size_bytes[2];
};

struct ct_users {
	struct ct_user *u;
	size_t n, cap;
};

static int user_cmp(const void *a, const void *b)
{
	return strcmp(((const struct ct_user *)a)->name, ((const struct ct_user *)b)->name);
}

static void users_add(struct ct_users *us, const char *name, size_t len)
{
	struct ct_user *u;

	if (us->n == us->cap) {
		us->cap = us->cap ? us->cap * 2 : 64;
		us->u = realloc(us->u, us->cap * sizeof(*us->u));
		if (us->u == NULL)
			abort();
	}
	u = &us->u[us->n++];
	memset(u, 0, sizeof(*u));
	u->name = strndup(name, len);
	if (u->name == NULL)
		abort();
	strcpy(u->route, "-");
	u->changed_ms = u->oldest_due_ms = u->next_poll_ms = u->lease_ms = -1;
	strcpy(u->lease_to, "SRC");
	u->ok_ms = u->err_ms = u->full_ms = u->size_ms = -1;
}

/* Sorts and removes duplicates. */
static void users_finish(struct ct_users *us)
{
	size_t j = 0;

	if (us->n == 0)
		return;
	qsort(us->u, us->n, sizeof(*us->u), user_cmp);
	for (size_t i = 1; i < us->n; i++) {
		if (strcmp(us->u[i].name, us->u[j].name) == 0)
			free(us->u[i].name);
		else
			us->u[++j] = us->u[i];
	}
	us->n = j + 1;
}

static struct ct_user *users_find(struct ct_users *us, const char *name, size_t len)
{
	size_t lo = 0, hi = us->n;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		int c = strncmp(us->u[mid].name, name, len);

		if (c == 0 && us->u[mid].name[len] != '\0')
			c = 1;
		if (c == 0)
			return &us->u[mid];
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

/* The user of a route key (pass 0) or a state key (pass 1). */
static void key_user(struct ct_users *us, const redisReply *k, int pass)
{
	const char *p = k->str, *end = k->str + k->len;

	if (pass == 0) {
		p += strlen(RK_PREFIX "route:");
	} else {
		const char *st = strstr(k->str, "}:st:");

		if (st == NULL)
			return;
		p = st + 5;
	}
	if (p < end)
		users_add(us, p, (size_t)(end - p));
}

struct key_scan {
	struct ct_users *us;
	int pass;
};

static int key_scan_cb(const char *key, size_t len, void *aux)
{
	struct key_scan *ks = aux;
	redisReply k = {0};

	k.type = REDIS_REPLY_STRING;
	k.str = (char *)key;
	k.len = len;
	key_user(ks->us, &k, ks->pass);
	return 0;
}

/* Every user the replication knows: the poll sets and the route keys. */
static int users_all(struct rnodes *c, struct ct_users *us)
{
	char key[64];
	redisReply *r;

	for (unsigned s = 0; s < RK_SHARDS; s++) {
		rk_key_poll(key, sizeof(key), s);
		if ((r = ct_cmd(c, "ZRANGE %s 0 -1", key)) == NULL)
			return -1;
		for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; i++)
			users_add(us, r->element[i]->str, r->element[i]->len);
		freeReplyObject(r);
	}
	/* Routed users, and users with a sync state (a final-delta, a CLI run
	 * with --redis): "rep:route:<user>", "rep:{s}:st:<user>"; on every
	 * master of a cluster. */
	for (int pass = 0; pass < 2; pass++) {
		struct key_scan ks = {us, pass};

		if (rn_scan(c, pass == 0 ? RK_PREFIX "route:*" : RK_PREFIX "{*}:st:*", key_scan_cb,
		            &ks) < 0) {
			fprintf(stderr, "imapferryctl: Redis: %s\n", rn_error(c));
			return -1;
		}
	}
	return 0;
}

/* Due and in-flight members of every shard that holds one of the users. */
static int queue_fill(struct rnodes *c, struct ct_users *us)
{
	char key[64];
	int need[RK_SHARDS] = {0};
	redisReply *r;

	for (size_t i = 0; i < us->n; i++)
		need[rk_shard(us->u[i].name)] = 1;
	for (unsigned s = 0; s < RK_SHARDS; s++) {
		if (!need[s])
			continue;
		for (int inflight = 0; inflight < 2; inflight++) {
			if (inflight)
				rk_key_inflight(key, sizeof(key), s);
			else
				rk_key_due(key, sizeof(key), s);
			if ((r = ct_cmd(c, "ZRANGE %s 0 -1 WITHSCORES", key)) == NULL)
				return -1;
			for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i + 1 < r->elements;
			     i += 2) {
				const char *user, *folder;
				size_t ul, fl;
				struct ct_user *u;
				long long score = atoll(r->element[i + 1]->str);

				if (rk_member_split(r->element[i]->str, r->element[i]->len, &user,
				                    &ul, &folder, &fl) < 0 ||
				    (u = users_find(us, user, ul)) == NULL)
					continue;
				if (inflight) {
					u->inflight++;
				} else {
					u->due++;
					if (u->oldest_due_ms < 0 || score < u->oldest_due_ms)
						u->oldest_due_ms = score;
				}
			}
			freeReplyObject(r);
		}
	}
	return 0;
}

/* "F name1 name2 uv1 uidnext1 msgs1 hms1 uv2 uidnext2 msgs2 hms2 ..."
 * (sync/state.c; names are %XX-escaped, so they hold no space). */
static void state_line(struct ct_user *u, const char *v)
{
	unsigned long long m1, m2;
	if (strncmp(v, "F ", 2) != 0)
		return;
	if (sscanf(v, "F %*s %*s %*u %*u %llu %*u %*u %*u %llu", &m1, &m2) == 2) {
		u->folders++;
		u->msgs1 += m1;
		u->msgs2 += m2;
	}
}

static int user_fill(struct rnodes *c, struct ct_user *u)
{
	char key[1024];
	redisReply *r;

	rk_key_route(key, sizeof(key), u->name);
	if ((r = ct_cmd(c,
	                "HMGET %s state epoch changed_ms " RK_ROUTE_F_LEASE " " RK_ROUTE_F_LEASE_TO,
	                key)) == NULL)
		return -1;
	if (r->type == REDIS_REPLY_ARRAY && r->elements == 5) {
		if (r->element[0]->type == REDIS_REPLY_STRING)
			snprintf(u->route, sizeof(u->route), "%s", r->element[0]->str);
		if (r->element[1]->type == REDIS_REPLY_STRING)
			u->epoch = strtoull(r->element[1]->str, NULL, 10);
		if (r->element[2]->type == REDIS_REPLY_STRING)
			u->changed_ms = atoll(r->element[2]->str);
		if (r->element[3]->type == REDIS_REPLY_STRING && strcmp(u->route, "FREEZE") == 0)
			u->lease_ms = atoll(r->element[3]->str);
		if (r->element[4]->type == REDIS_REPLY_STRING &&
		    strcmp(r->element[4]->str, "DST") == 0)
			strcpy(u->lease_to, "DST");
	}
	freeReplyObject(r);
	rk_key_poll(key, sizeof(key), rk_shard(u->name));
	if ((r = ct_cmd(c, "ZSCORE %s %s", key, u->name)) == NULL)
		return -1;
	if (r->type == REDIS_REPLY_STRING)
		u->next_poll_ms = atoll(r->str);
	freeReplyObject(r);
	ct_key_last(key, sizeof(key), u->name);
	if ((r = ct_cmd(c,
	                "HMGET %s ok_ms ok_by err_ms err_by err full_ms size_ms size_by msgs1 "
	                "bytes1 msgs2 bytes2",
	                key)) == NULL)
		return -1;
	if (r->type == REDIS_REPLY_ARRAY && r->elements == 12) {
		redisReply **e = r->element;

		if (e[0]->type == REDIS_REPLY_STRING)
			u->ok_ms = atoll(e[0]->str);
		if (e[1]->type == REDIS_REPLY_STRING)
			snprintf(u->ok_by, sizeof(u->ok_by), "%s", e[1]->str);
		if (e[2]->type == REDIS_REPLY_STRING)
			u->err_ms = atoll(e[2]->str);
		if (e[3]->type == REDIS_REPLY_STRING)
			snprintf(u->err_by, sizeof(u->err_by), "%s", e[3]->str);
		if (e[4]->type == REDIS_REPLY_STRING) {
			free(u->err);
			u->err = strndup(e[4]->str, CT_LAST_ERROR_MAX);
			if (u->err == NULL)
				abort();
		}
		if (e[5]->type == REDIS_REPLY_STRING)
			u->full_ms = atoll(e[5]->str);
		if (e[6]->type == REDIS_REPLY_STRING) {
			u->size_ms = atoll(e[6]->str);
			if (e[7]->type == REDIS_REPLY_STRING)
				snprintf(u->size_by, sizeof(u->size_by), "%s", e[7]->str);
			for (int k = 0; k < 2; k++) {
				if (e[8 + 2 * k]->type == REDIS_REPLY_STRING)
					u->size_msgs[k] = strtoull(e[8 + 2 * k]->str, NULL, 10);
				if (e[9 + 2 * k]->type == REDIS_REPLY_STRING)
					u->size_bytes[k] = strtoull(e[9 + 2 * k]->str, NULL, 10);
			}
		}
	}
	freeReplyObject(r);
	rk_key_state(key, sizeof(key), u->name);
	if ((r = ct_cmd(c, "HGETALL %s", key)) == NULL)
		return -1;
	for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i + 1 < r->elements; i += 2) {
		u->has_state = 1;
		state_line(u, r->element[i + 1]->str);
	}
	freeReplyObject(r);
	return 0;
}

/* The route as shown: "FREEZE (lease expired)" for a freeze whose
 * imapferryctl is gone. */
static const char *route_text(const struct ct_user *u, int64_t now)
{
	if (u->lease_ms >= 0 && u->lease_ms <= now)
		return "FREEZE (lease expired)";
	return u->route;
}

static void age(char *buf, size_t size, long long ms)
{
	if (ms < 0)
		snprintf(buf, size, "-");
	else if (ms < 10000)
		snprintf(buf, size, "%.1fs", ms / 1000.0);
	else if (ms < 3600000)
		snprintf(buf, size, "%llds", ms / 1000);
	else
		snprintf(buf, size, "%.1fh", ms / 3600000.0);
}

/* Bytes for people: 987B, 12.3K, 4.5M, 1.2G (1024-based). */
static void human_bytes(char *buf, size_t size, unsigned long long n)
{
	static const char units[] = "KMGTP";
	double v = (double)n;
	int u = -1;

	if (n < 1024) {
		snprintf(buf, size, "%lluB", n);
		return;
	}
	while (v >= 1024 && u < 4) {
		v /= 1024;
		u++;
	}
	snprintf(buf, size, "%.1f%c", v, units[u]);
}

static void json_str(FILE *fp, const char *s)
{
	putc('"', fp);
	for (; *s != '\0'; s++) {
		unsigned char ch = (unsigned char)*s;

		if (ch == '"' || ch == '\\')
			fprintf(fp, "\\%c", ch);
		else if (ch < 0x20 || ch == 0x7f)
			fprintf(fp, "\\u%04x", ch);
		else
			putc(ch, fp);
	}
	putc('"', fp);
}

static void print_json(FILE *fp, const struct ct_users *us, int64_t now, struct ct_totals *t)
{
	memset(t, 0, sizeof(*t));
	t->now_ms = now;
	t->users = us->n;
	fprintf(fp, "{\"now_ms\":%lld,\"users\":[", (long long)now);
	for (size_t i = 0; i < us->n; i++) {
		const struct ct_user *u = &us->u[i];
		enum rk_route_state st = RK_ROUTE_SRC;

		rk_route_state_parse(u->route, &st);
		t->routes[st]++;
		fprintf(fp, "%s\n{\"user\":", i ? "," : "");
		json_str(fp, u->name);
		fprintf(fp,
		        ",\"route\":\"%s\",\"epoch\":%llu,\"route_changed_ms\":%lld,"
		        "\"due\":%u,\"oldest_due_age_ms\":%lld,\"inflight\":%u,"
		        "\"next_poll_ms\":%lld,\"state\":%s,\"folders\":%u,"
		        "\"messages1\":%llu,\"messages2\":%llu,\"last_sync_ms\":%lld,"
		        "\"last_sync_by\":",
		        strcmp(u->route, "-") == 0 ? "SRC" : u->route, u->epoch, u->changed_ms,
		        u->due, u->oldest_due_ms < 0 ? -1LL : (long long)(now - u->oldest_due_ms),
		        u->inflight, u->next_poll_ms, u->has_state ? "true" : "false", u->folders,
		        u->msgs1, u->msgs2, u->ok_ms);
		json_str(fp, u->ok_by);
		fprintf(fp, ",\"last_full_check_ms\":%lld", u->full_ms);
		/* the freeze lease: ms left (<= 0 ended), or null without one */
		if (u->lease_ms >= 0)
			fprintf(fp, ",\"lease_left_ms\":%lld,\"lease_to\":\"%s\"",
			        (long long)(u->lease_ms - now), u->lease_to);
		else
			fprintf(fp, ",\"lease_left_ms\":null,\"lease_to\":null");
		/* messages and bytes per side, as the last verified pass counted them */
		if (u->size_ms >= 0) {
			fprintf(fp,
			        ",\"size_ms\":%lld,\"size_messages1\":%llu,\"bytes1\":%llu,"
			        "\"size_messages2\":%llu,\"bytes2\":%llu,\"size_by\":",
			        u->size_ms, u->size_msgs[0], u->size_bytes[0], u->size_msgs[1],
			        u->size_bytes[1]);
			json_str(fp, u->size_by);
			t->bytes1 += u->size_bytes[0];
			t->bytes2 += u->size_bytes[1];
		} else {
			fprintf(fp, ",\"size_ms\":-1,\"size_messages1\":null,\"bytes1\":null,"
			            "\"size_messages2\":null,\"bytes2\":null,\"size_by\":null");
		}
		fprintf(fp, ",\"lease_expired\":%s",
		        u->lease_ms >= 0 && u->lease_ms <= now ? "true" : "false");
		fprintf(fp, ",\"last_error_ms\":%lld,\"last_error_by\":", u->err_ms);
		json_str(fp, u->err_by);
		fprintf(fp, ",\"last_error\":");
		json_str(fp, u->err != NULL ? u->err : "");
		/* the error is current when no success came after it */
		fprintf(fp, ",\"error_current\":%s}",
		        u->err_ms >= 0 && u->err_ms >= u->ok_ms ? "true" : "false");
		t->due += u->due;
		t->inflight += u->inflight;
		t->msgs1 += u->msgs1;
		t->msgs2 += u->msgs2;
	}
	fprintf(fp,
	        "],\n\"totals\":{\"users\":%zu,\"due\":%llu,\"inflight\":%llu,"
	        "\"messages1\":%llu,\"messages2\":%llu,\"bytes1\":%llu,\"bytes2\":%llu}}\n",
	        us->n, t->due, t->inflight, t->msgs1, t->msgs2, t->bytes1, t->bytes2);
}

static void print_table(const struct ct_users *us, int64_t now)
{
	unsigned long long t_due = 0, t_infl = 0, t_m1 = 0, t_m2 = 0, t_b[2] = {0, 0};
	unsigned n_route[RK_ROUTE_STATE_COUNT] = {0}, n_stale = 0;
	char a1[32], a2[32], b1[32], b2[32];
	int rw = 6; /* the ROUTE column */

	for (size_t i = 0; i < us->n; i++)
		if ((int)strlen(route_text(&us->u[i], now)) > rw)
			rw = (int)strlen(route_text(&us->u[i], now));
	printf("%-24s %-*s %5s %5s %8s %5s %7s %9s %9s %8s %8s %8s %10s %9s %s\n", "USER", rw,
	       "ROUTE", "EPOCH", "DUE", "OLDEST", "INFL", "FOLDERS", "MSGS-SRC", "MSGS-DST",
	       "SIZE-SRC", "SIZE-DST", "POLL-IN", "LAST-FULL", "LAST-SYNC", "LAST-ERROR");
	for (size_t i = 0; i < us->n; i++) {
		const struct ct_user *u = &us->u[i];
		enum rk_route_state st = RK_ROUTE_SRC;

		rk_route_state_parse(u->route, &st);
		n_route[st]++;
		n_stale += u->lease_ms >= 0 && u->lease_ms <= now;
		age(a1, sizeof(a1), u->oldest_due_ms < 0 ? -1 : now - u->oldest_due_ms);
		if (u->next_poll_ms < 0)
			snprintf(a2, sizeof(a2), "-");
		else
			age(a2, sizeof(a2), u->next_poll_ms > now ? u->next_poll_ms - now : 0);
		printf("%-24s %-*s %5llu %5u %8s %5u ", u->name, rw, route_text(u, now), u->epoch,
		       u->due, a1, u->inflight);
		if (u->has_state)
			printf("%7u %9llu %9llu", u->folders, u->msgs1, u->msgs2);
		else
			printf("%7s %9s %9s", "-", "-", "-");
		if (u->size_ms >= 0) {
			human_bytes(b1, sizeof(b1), u->size_bytes[0]);
			human_bytes(b2, sizeof(b2), u->size_bytes[1]);
			t_b[0] += u->size_bytes[0];
			t_b[1] += u->size_bytes[1];
			printf(" %8s %8s", b1, b2);
		} else {
			printf(" %8s %8s", "-", "-");
		}
		age(a1, sizeof(a1),
		    u->full_ms < 0 ? -1 : (now > u->full_ms ? now - u->full_ms : 0));
		printf(" %8s %10s", a2, a1);
		age(a1, sizeof(a1), u->ok_ms < 0 ? -1 : (now > u->ok_ms ? now - u->ok_ms : 0));
		printf(" %9s", a1);
		if (u->err_ms >= 0 && u->err_ms >= u->ok_ms)
			printf(" %s: %.60s", u->err_by, u->err != NULL ? u->err : "");
		else
			printf(" -");
		printf("\n");
		t_due += u->due;
		t_infl += u->inflight;
		t_m1 += u->msgs1;
		t_m2 += u->msgs2;
	}
	human_bytes(b1, sizeof(b1), t_b[0]);
	human_bytes(b2, sizeof(b2), t_b[1]);
	printf("%-24s %-*s %5s %5llu %8s %5llu %7s %9llu %9llu %8s %8s\n", "TOTAL", rw, "", "",
	       t_due, "", t_infl, "", t_m1, t_m2, b1, b2);
	printf("%zu users: %u on the source, %u frozen", us->n, n_route[RK_ROUTE_SRC],
	       n_route[RK_ROUTE_FREEZE]);
	if (n_stale > 0)
		printf(" (%u with an expired lease: imapferryctl rollback or cutover them)",
		       n_stale);
	printf(", %u on the destination\n", n_route[RK_ROUTE_DST]);
	printf("MSGS: the last sync state (STATUS); SIZE: bytes counted by the last verified pass "
	       "(final-delta, cutover, rollback)\n");
}

static void users_free(struct ct_users *us)
{
	for (size_t i = 0; i < us->n; i++) {
		free(us->u[i].name);
		free(us->u[i].err);
	}
	free(us->u);
	memset(us, 0, sizeof(*us));
}

/* The users given (all when n == 0), filled; Redis's clock in *now_r. */
static int status_gather(struct rnodes *c, char **users, int n, struct ct_users *us, int64_t *now_r)
{
	for (int i = 0; i < n; i++)
		users_add(us, users[i], strlen(users[i]));
	if (n == 0 && users_all(c, us) < 0)
		return -1;
	users_finish(us);
	if (ct_now_ms(c, now_r) < 0 || queue_fill(c, us) < 0)
		return -1;
	for (size_t i = 0; i < us->n; i++)
		if (user_fill(c, &us->u[i]) < 0)
			return -1;
	return 0;
}

int ct_users_list(struct rnodes *c, char ***users_r, int *n_r)
{
	struct ct_users us = {0};
	char **v;

	*users_r = NULL;
	*n_r = 0;
	if (users_all(c, &us) < 0) {
		users_free(&us);
		return -1;
	}
	users_finish(&us);
	v = calloc(us.n + 1, sizeof(*v));
	if (v == NULL)
		abort();
	for (size_t i = 0; i < us.n; i++)
		v[i] = us.u[i].name; /* ownership moves to v */
	*n_r = (int)us.n;
	*users_r = v;
	free(us.u);
	return 0;
}

int ct_status_json(struct rnodes *c, char **users, int n, FILE *fp, struct ct_totals *totals_r)
{
	struct ct_users us = {0};
	int64_t now;
	int rc = -1;

	if (status_gather(c, users, n, &us, &now) == 0) {
		print_json(fp, &us, now, totals_r);
		rc = 0;
	}
	users_free(&us);
	return rc;
}

int ct_status(struct ct *ct, char **users, int n)
{
	struct ct_users us = {0};
	struct ct_totals totals;
	const char *err;
	struct rnodes *c = ct_connect(ct->redis, &err);
	int64_t now;
	int rc = CT_EXIT_NOREDIS;

	if (c == NULL) {
		fprintf(stderr, "imapferryctl: %s\n", err);
		return CT_EXIT_NOREDIS;
	}
	if (ct->json) {
		if (ct_status_json(c, users, n, stdout, &totals) == 0)
			rc = CT_EXIT_OK;
	} else if (status_gather(c, users, n, &us, &now) == 0) {
		print_table(&us, now);
		rc = CT_EXIT_OK;
	}
	users_free(&us);
	rn_close(&c);
	return rc;
}
