/*
 * state.c - what a run remembers of each folder pair, so the next run asks
 * the servers only what changed (issue 4's first step; see
 * ../shared/docs/replication-design.md section 4, "Check, O(1) round trips").
 *
 * Per folder pair: host1's UIDVALIDITY, UIDNEXT, MESSAGES and HIGHESTMODSEQ
 * as they were *before* the last complete pass (a change during the pass
 * makes the next run look again: never a lost change), host2's after our
 * writes, and the counts the verdict lines need. A folder is skipped only
 * when both sides still show exactly those values and both have a
 * HIGHESTMODSEQ (CONDSTORE), since without it a flag change is invisible.
 *
 * The file lives under --tmpdir (imapsync's cache place), one per account
 * pair, written to a temporary file, fsync()ed and renamed: a crash leaves
 * the old state or the new one, never half of one. A missing, unreadable,
 * corrupt or foreign file only makes the run slower (a full pass).
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>

#include "imapferry/resp.h"
#include "imapferry/rkeys.h"
#include "imapferry/rnodes.h"
#include "imapferry/rqueue.h"
#include "imapferry/xalloc.h"
#include "sync.h"

#define STATE_MAGIC "imapferry-state 1"

static void canon(const struct sy_run *r, const char *name1, char *buf, size_t size);

struct sy_fstate {
	char *name1, *name2;
	struct sy_fstatus st[2];
	uint64_t ident1, ident2, in2not1;
	int dirty;  /* changed by this run: written back (Redis writes only these) */
	char *was1; /* host1 name before a rename by this run, or NULL */
};

/* A folder pair's UID map (--usecache/--useuid): host1 UID -> host2 UID,
 * valid only for these two UIDVALIDITYs. Stored as runs "uid1:uid2:len"
 * (APPENDs in UID order make long runs: a 100k-message folder is a few
 * bytes, where imapsync's cache is one file per message). */
struct sy_umap {
	int dirty;
	char *was1;
	char *name1, *name2;
	uint32_t uv1, uv2;
	struct sy_uidpair *pairs; /* sorted by uid1 */
	size_t n;
};

struct sy_state {
	int foreign;           /* Redis: the key held another account pair's state */
	int pair_seen;         /* Redis: the key names this account pair already */
	redisContext *rc;      /* Redis: the load's connection, kept for the save */
	int merge_forget;      /* sy_state_merge_line(): the next F line is forgotten */
	struct timespec saved; /* read or last saved (sy_state_checkpoint()) */
	char *path;
	struct sy_fstate *f;
	size_t n, cap;
	struct sy_umap *maps;
	size_t nmaps;
	/* Redis: the UID maps are read when first needed (maps_need()), not
	 * with the state: a quick check that finds nothing changed never needs
	 * them, and a big mailbox's maps are most of its state's bytes */
	int maps_todo;
	size_t maps_nf; /* the folders the maps belong to: s->f[0..maps_nf) */
	struct sy_run *run;
	/* Redis: the lately vanished pairs read or written in this run, per
	 * folder (gone_get()) */
	struct sy_gone *gone;
	size_t ngone;
};

struct sy_gone {
	char *canon1; /* the host1 folder, rk_folder_canon()'s form */
	int have;     /* m holds its pairs; 0: none are stored */
	struct sy_umap m;
};

/* Names are written with %XX for bytes outside 0x21..0x7e and for '%'. */
static void put_name(FILE *fp, const char *s)
{
	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;

		if (c <= 0x20 || c >= 0x7f || c == '%')
			fprintf(fp, "%%%02X", c);
		else
			fputc(c, fp);
	}
}

static unsigned hexval(char c)
{
	return c <= '9' ? (unsigned)(c - '0') : (unsigned)((c | 0x20) - 'a' + 10);
}

static char *get_name(const char *s)
{
	char *out = malloc(strlen(s) + 1), *o = out;

	if (out == NULL)
		abort();
	for (; *s != '\0'; s++) {
		/* exactly two hex digits (sscanf's %2X would take one, or a sign,
		 * and the skip past them would then leave the string) */
		if (*s == '%' && isxdigit((unsigned char)s[1]) && isxdigit((unsigned char)s[2]) &&
		    hexval(s[1]) * 16 + hexval(s[2]) > 0) {
			*o++ = (char)(hexval(s[1]) * 16 + hexval(s[2]));
			s += 2;
		} else {
			*o++ = *s;
		}
	}
	*o = '\0';
	return out;
}

static char *state_path(const struct sy_run *r)
{
	const struct sy_options *o = r->o;
	char name[1024], *path;

	snprintf(name, sizeof(name), "%s_%u_%s_%s_%u_%s.state", o->acc[0].host, r->side[0].port,
	         o->acc[0].user != NULL ? o->acc[0].user : "", o->acc[1].host, r->side[1].port,
	         o->acc[1].user != NULL ? o->acc[1].user : "");
	for (char *p = name; *p != '\0'; p++) {
		if (*p == '/' || *p <= 0x20 || *p >= 0x7f || *p == '\\')
			*p = '_';
	}
	path = malloc(strlen(o->tmpdir) + strlen(name) + 32);
	if (path == NULL)
		abort();
	sprintf(path, "%s/imapferry_state/%s", o->tmpdir, name);
	return path;
}

static struct sy_fstate *add(struct sy_state *s)
{
	if (s->n == s->cap) {
		s->cap = s->cap ? s->cap * 2 : 32;
		s->f = realloc(s->f, s->cap * sizeof(*s->f));
		if (s->f == NULL)
			abort();
	}
	memset(&s->f[s->n], 0, sizeof(s->f[0]));
	return &s->f[s->n++];
}

static void map_free(struct sy_umap *m)
{
	free(m->was1);
	free(m->name1);
	free(m->name2);
	free(m->pairs);
	memset(m, 0, sizeof(*m));
}

static struct sy_umap *map_find(struct sy_state *s, const char *n1, const char *n2)
{
	for (size_t k = 0; k < s->nmaps; k++) {
		if (strcmp(s->maps[k].name1, n1) == 0 && strcmp(s->maps[k].name2, n2) == 0)
			return &s->maps[k];
	}
	return NULL;
}

static struct sy_umap *map_add(struct sy_state *s)
{
	struct sy_umap *nm = realloc(s->maps, (s->nmaps + 1) * sizeof(*nm));

	if (nm == NULL)
		abort();
	s->maps = nm;
	memset(&s->maps[s->nmaps], 0, sizeof(s->maps[0]));
	return &s->maps[s->nmaps++];
}

/* "M name1 name2 uv1 uv2 count u1:u2:len ..." */
static int load_map(struct sy_state *s, char *line)
{
	char *save = NULL, *tok[6];
	struct sy_umap m;
	unsigned long count;
	size_t have = 0, cap = 0;

	memset(&m, 0, sizeof(m));
	for (int i = 0; i < 6; i++) {
		tok[i] = strtok_r(i == 0 ? line : NULL, " \n", &save);
		if (tok[i] == NULL)
			return -1;
	}
	if (sscanf(tok[3], "%u", &m.uv1) != 1 || sscanf(tok[4], "%u", &m.uv2) != 1 ||
	    sscanf(tok[5], "%lu", &count) != 1 || count > 100000000ul)
		return -1;
	/* grown as the runs are read: a count no run backs costs nothing */
	for (char *t = strtok_r(NULL, " \n", &save); t != NULL; t = strtok_r(NULL, " \n", &save)) {
		unsigned u1, u2, len;

		/* uid1 never descends (lookups bisect), no UID is 0 or wraps */
		if (sscanf(t, "%u:%u:%u", &u1, &u2, &len) != 3 || len == 0 || len > count - have ||
		    u1 == 0 || u2 == 0 || len - 1 > UINT32_MAX - u1 || len - 1 > UINT32_MAX - u2 ||
		    (have > 0 && u1 < m.pairs[have - 1].uid1)) {
			free(m.pairs);
			return -1;
		}
		if (have + len > cap) {
			cap = have + len > 2 * cap ? have + len : 2 * cap;
			m.pairs = realloc(m.pairs, (cap + 1) * sizeof(*m.pairs));
			if (m.pairs == NULL)
				abort();
		}
		for (unsigned i = 0; i < len; i++) {
			m.pairs[have].uid1 = u1 + i;
			m.pairs[have].uid2 = u2 + i;
			have++;
		}
	}
	if (have != count) {
		free(m.pairs);
		return -1;
	}
	if (m.pairs == NULL && (m.pairs = malloc(sizeof(*m.pairs))) == NULL)
		abort();
	m.n = have;
	m.name1 = get_name(tok[1]);
	m.name2 = get_name(tok[2]);
	if (map_find(s, m.name1, m.name2) != NULL) {
		map_free(&m);
		return -1;
	}
	*map_add(s) = m;
	return 0;
}

static void maps_need(struct sy_state *s);

int sy_state_map_get(struct sy_state *s, const struct sy_folder *f, uint32_t uv1, uint32_t uv2,
                     struct sy_uidpair **pairs_r, size_t *n_r)
{
	struct sy_umap *m;

	maps_need(s);
	m = map_find(s, f->name1, f->name2);

	*pairs_r = NULL;
	*n_r = 0;
	if (m == NULL || m->uv1 != uv1 || m->uv2 != uv2 || uv1 == 0 || uv2 == 0)
		return -1;
	*pairs_r = malloc((m->n + 1) * sizeof(**pairs_r));
	if (*pairs_r == NULL)
		abort();
	memcpy(*pairs_r, m->pairs, m->n * sizeof(**pairs_r));
	*n_r = m->n;
	return 0;
}

static int pair_cmp(const void *a, const void *b);

/* The host2 UID of uid1 in m (pairs sorted by uid1), or 0. */
static uint32_t map_lookup(const struct sy_umap *m, uint32_t uid1)
{
	const struct sy_uidpair key = {uid1, 0};
	const struct sy_uidpair *p = bsearch(&key, m->pairs, m->n, sizeof(key), pair_cmp);

	return p != NULL ? p->uid2 : 0;
}

/* Fills what is still unmapped in out[] from m. Returns how many are left. */
static size_t map_fill(const struct sy_umap *m, const uint32_t *uid1, size_t n,
                       struct sy_mapped *out)
{
	size_t left = 0;

	for (size_t j = 0; j < n; j++) {
		uint32_t uid2;

		if (out[j].uid2 != 0)
			continue; /* an earlier map had it */
		if ((uid2 = map_lookup(m, uid1[j])) != 0) {
			out[j].name2 = m->name2;
			out[j].uv2 = m->uv2;
			out[j].uid2 = uid2;
		} else {
			left++;
		}
	}
	return left;
}

static struct sy_umap *gone_get(struct sy_state *s, const char *canon1);

void sy_state_map_find_uids(const struct sy_run *r, struct sy_state *s, const char *canon1,
                            const uint32_t *uid1, size_t n, struct sy_mapped *out)
{
	char cn[1024];
	size_t left = n;
	const struct sy_umap *g;

	maps_need(s);
	memset(out, 0, n * sizeof(*out));
	for (size_t k = 0; k < s->nmaps && left > 0; k++) {
		const struct sy_umap *m = &s->maps[k];

		canon(r, m->name1, cn, sizeof(cn)); /* once per map, not per UID */
		if (strcmp(cn, canon1) == 0 && m->uv2 != 0)
			left = map_fill(m, uid1, n, out);
	}
	/* the source folder's sync may have run first and dropped them */
	if (left > 0 && (g = gone_get(s, canon1)) != NULL)
		map_fill(g, uid1, n, out);
}

struct redisContext *sy_state_redis(struct sy_state *s)
{
	return s != NULL ? s->rc : NULL;
}

void sy_state_forked(struct sy_state *s)
{
	/* the parent's connection: a reply meant for one process could be
	 * read by another. Closed here only (no command is sent). */
	if (s != NULL && s->rc != NULL) {
		redisFree(s->rc);
		s->rc = NULL;
	}
}

static int pair_cmp(const void *a, const void *b)
{
	const struct sy_uidpair *x = a, *y = b;

	return x->uid1 < y->uid1 ? -1 : x->uid1 > y->uid1;
}

void sy_state_map_put(struct sy_state *s, const struct sy_folder *f, uint32_t uv1, uint32_t uv2,
                      const struct sy_uidpair *pairs, size_t n)
{
	struct sy_umap *m;

	maps_need(s); /* replaces the stored map, never sits beside it */
	m = map_find(s, f->name1, f->name2);

	if (m == NULL) {
		m = map_add(s);
		m->name1 = strdup(f->name1);
		m->name2 = strdup(f->name2);
		if (m->name1 == NULL || m->name2 == NULL)
			abort();
	}
	free(m->pairs);
	m->pairs = malloc((n + 1) * sizeof(*pairs));
	if (m->pairs == NULL)
		abort();
	memcpy(m->pairs, pairs, n * sizeof(*pairs));
	qsort(m->pairs, n, sizeof(*pairs), pair_cmp);
	m->dirty = 1;
	m->n = n;
	m->uv1 = uv1;
	m->uv2 = uv2;
}

static void clear_folders(struct sy_state *s)
{
	for (size_t k = 0; k < s->n; k++) {
		free(s->f[k].name1);
		free(s->f[k].name2);
		free(s->f[k].was1);
	}
	s->n = 0;
}

/* One "F ..." or "M ..." line into s: 0, 1 for a bad map line (ignored: a
 * full identification of that folder), -1 for a corrupt folder line. */
static int load_line(struct sy_state *s, char *line)
{
	struct sy_fstate f, *e;
	unsigned long long h1, h2, a, b, c;
	char *n1, *n2;
	int rc = 0;

	if (line[0] == 'M')
		return load_map(s, line) < 0 ? 1 : 0;
	n1 = malloc(strlen(line) + 1);
	n2 = malloc(strlen(line) + 1);
	if (n1 == NULL || n2 == NULL)
		abort();
	memset(&f, 0, sizeof(f));
	/* n1 and n2 are as long as the whole line: no width needed */
	/* cppcheck-suppress invalidscanf */
	if (sscanf(line, "F %s %s %u %u %u %llu %u %u %u %llu %llu %llu %llu", n1, n2,
	           &f.st[0].uidvalidity, &f.st[0].uidnext, &f.st[0].messages, &h1,
	           &f.st[1].uidvalidity, &f.st[1].uidnext, &f.st[1].messages, &h2, &a, &b,
	           &c) != 13) {
		rc = -1;
	} else {
		e = add(s);
		*e = f;
		e->st[0].highestmodseq = h1;
		e->st[1].highestmodseq = h2;
		e->st[0].valid = e->st[1].valid = 1;
		e->ident1 = a;
		e->ident2 = b;
		e->in2not1 = c;
		e->name1 = get_name(n1);
		e->name2 = get_name(n2);
	}
	free(n1);
	free(n2);
	return rc;
}

static void load_file(struct sy_run *r, struct sy_state *s)
{
	char *line = NULL;
	size_t linecap = 0;
	FILE *fp;
	int lineno = 0;

	s->path = state_path(r);
	fp = fopen(s->path, "r");
	if (fp == NULL) {
		if (errno != ENOENT)
			sy_out(r, "State: cannot read %s (%s): a full pass over every folder",
			       s->path, strerror(errno));
		return;
	}
	while (getline(&line, &linecap, fp) > 0) {
		int rc;

		lineno++;
		if (lineno == 1) {
			if (strncmp(line, STATE_MAGIC, strlen(STATE_MAGIC)) != 0)
				break;
			continue;
		}
		rc = load_line(s, line);
		if (rc > 0)
			sy_out(r, "State: %s:%d: a bad UID map line, ignored", s->path, lineno);
		if (rc < 0) {
			sy_out(r, "State: %s:%d is corrupt; ignoring the state (a full pass)",
			       s->path, lineno);
			clear_folders(s);
			break;
		}
	}
	if (lineno > 0 && s->n == 0 && s->nmaps == 0)
		sy_out(r, "State: %s is not an imapferry state file; ignoring it", s->path);
	free(line);
	fclose(fp);
}

static void load_redis(struct sy_run *r, struct sy_state *s);

struct sy_state *sy_state_load(struct sy_run *r)
{
	struct sy_state *s = calloc(1, sizeof(*s));

	if (s == NULL)
		abort();
	s->run = r;
	clock_gettime(CLOCK_MONOTONIC, &s->saved);
	if (r->o->redis != NULL)
		load_redis(r, s);
	else
		load_file(r, s);
	return s;
}

static struct sy_fstate *find(struct sy_state *s, const char *n1, const char *n2)
{
	for (size_t k = 0; k < s->n; k++) {
		if (strcmp(s->f[k].name1, n1) == 0 && strcmp(s->f[k].name2, n2) == 0)
			return &s->f[k];
	}
	return NULL;
}

static int same(const struct sy_fstatus *a, const struct sy_fstatus *b)
{
	return a->valid && b->valid && a->has_modseq && a->uidvalidity == b->uidvalidity &&
	       a->uidnext == b->uidnext && a->messages == b->messages &&
	       a->highestmodseq == b->highestmodseq;
}

int sy_state_unchanged(struct sy_state *s, const struct sy_folder *f,
                       const struct sy_fstatus now[2], uint64_t counts_r[3])
{
	struct sy_fstate *e = find(s, f->name1, f->name2);

	if (e == NULL)
		return 0;
	if (!same(&now[0], &e->st[0]) || !same(&now[1], &e->st[1]))
		return 0;
	counts_r[0] = e->ident1;
	counts_r[1] = e->ident2;
	counts_r[2] = e->in2not1;
	return 1;
}

int sy_state_delta_base(struct sy_state *s, const struct sy_folder *f,
                        const struct sy_fstatus now[2], struct sy_fstatus was_r[2],
                        uint64_t counts_r[3])
{
	struct sy_fstate *e = find(s, f->name1, f->name2);

	/* (stored statuses always had a HIGHESTMODSEQ: sync_with_state()) */
	if (e == NULL || !e->st[0].valid || !now[0].valid || !now[0].has_modseq)
		return 0;
	/* host1: the same mailbox, only moved forward (dsync's staleness test:
	 * a lower UIDNEXT or HIGHESTMODSEQ means a restored or reset mailbox) */
	if (now[0].uidvalidity != e->st[0].uidvalidity || now[0].uidnext < e->st[0].uidnext ||
	    now[0].highestmodseq < e->st[0].highestmodseq)
		return 0;
	/* host2: exactly as our last pass left it, or someone else wrote there */
	if (!same(&now[1], &e->st[1]))
		return 0;
	was_r[0] = e->st[0];
	was_r[1] = e->st[1];
	counts_r[0] = e->ident1;
	counts_r[1] = e->ident2;
	counts_r[2] = e->in2not1;
	return 1;
}

void sy_state_record(struct sy_state *s, const struct sy_folder *f, const struct sy_fstatus st[2],
                     const uint64_t counts[3])
{
	struct sy_fstate *e = find(s, f->name1, f->name2);

	if (e == NULL) {
		e = add(s);
		e->name1 = strdup(f->name1);
		e->name2 = strdup(f->name2);
		if (e->name1 == NULL || e->name2 == NULL)
			abort();
	}
	e->dirty = 1;
	e->st[0] = st[0];
	e->st[1] = st[1];
	e->ident1 = counts[0];
	e->ident2 = counts[1];
	e->in2not1 = counts[2];
}

void sy_state_forget(struct sy_state *s, const struct sy_folder *f)
{
	struct sy_fstate *e = find(s, f->name1, f->name2);

	if (e != NULL) {
		e->st[0].valid = e->st[1].valid = 0; /* not written back */
		e->dirty = 1;
	}
}

size_t sy_state_nfolders(const struct sy_state *s)
{
	return s->n;
}

int sy_state_folder(const struct sy_state *s, size_t k, const char **name1_r, const char **name2_r,
                    struct sy_fstatus st_r[2])
{
	if (k >= s->n || !s->f[k].st[0].valid || !s->f[k].st[1].valid)
		return -1;
	*name1_r = s->f[k].name1;
	*name2_r = s->f[k].name2;
	st_r[0] = s->f[k].st[0];
	st_r[1] = s->f[k].st[1];
	return 0;
}

/* name itself, or a child of it (name + sep + ...): the new name, else NULL */
static char *renamed(const char *name, const char *old, const char *new, char sep)
{
	size_t ol = strlen(old);
	char *out;

	if (strncmp(name, old, ol) != 0 || (name[ol] != '\0' && (sep == 0 || name[ol] != sep)))
		return NULL;
	if (asprintf(&out, "%s%s", new, name + ol) < 0)
		abort();
	return out;
}

void sy_state_rename(struct sy_state *s, const char *old1, const char *old2, const char *new1,
                     const char *new2, char sep1, char sep2)
{
	/* copies: old1/old2 may be an entry's own names */
	char *o1 = strdup(old1), *o2 = strdup(old2);

	if (o1 == NULL || o2 == NULL)
		abort();
	maps_need(s); /* the maps move with their folders */
	for (size_t k = 0; k < s->n; k++) {
		char *n1 = renamed(s->f[k].name1, o1, new1, sep1);
		char *n2 = renamed(s->f[k].name2, o2, new2, sep2);

		if (n1 != NULL && n2 != NULL) {
			if (s->f[k].was1 == NULL)
				s->f[k].was1 = s->f[k].name1; /* its old field goes */
			else
				free(s->f[k].name1);
			free(s->f[k].name2);
			s->f[k].name1 = n1;
			s->f[k].name2 = n2;
			s->f[k].dirty = 1;
		} else {
			free(n1);
			free(n2);
		}
	}
	for (size_t k = 0; k < s->nmaps; k++) {
		char *n1 = renamed(s->maps[k].name1, o1, new1, sep1);
		char *n2 = renamed(s->maps[k].name2, o2, new2, sep2);

		if (n1 != NULL && n2 != NULL) {
			if (s->maps[k].was1 == NULL)
				s->maps[k].was1 = s->maps[k].name1;
			else
				free(s->maps[k].name1);
			free(s->maps[k].name2);
			s->maps[k].name1 = n1;
			s->maps[k].name2 = n2;
			s->maps[k].dirty = 1;
		} else {
			free(n1);
			free(n2);
		}
	}
	free(o1);
	free(o2);
}

static void write_folder(FILE *fp, const struct sy_fstate *e)
{
	fputs("F ", fp);
	put_name(fp, e->name1);
	fputc(' ', fp);
	put_name(fp, e->name2);
	fprintf(fp, " %u %u %u %llu %u %u %u %llu %llu %llu %llu\n", e->st[0].uidvalidity,
	        e->st[0].uidnext, e->st[0].messages, (unsigned long long)e->st[0].highestmodseq,
	        e->st[1].uidvalidity, e->st[1].uidnext, e->st[1].messages,
	        (unsigned long long)e->st[1].highestmodseq, (unsigned long long)e->ident1,
	        (unsigned long long)e->ident2, (unsigned long long)e->in2not1);
}

static void write_map(FILE *fp, const struct sy_umap *m)
{
	fputs("M ", fp);
	put_name(fp, m->name1);
	fputc(' ', fp);
	put_name(fp, m->name2);
	fprintf(fp, " %u %u %zu", m->uv1, m->uv2, m->n);
	for (size_t i = 0; i < m->n;) {
		size_t len = 1;

		while (i + len < m->n && m->pairs[i + len].uid1 == m->pairs[i].uid1 + len &&
		       m->pairs[i + len].uid2 == m->pairs[i].uid2 + len)
			len++;
		fprintf(fp, " %u:%u:%zu", m->pairs[i].uid1, m->pairs[i].uid2, len);
		i += len;
	}
	fputc('\n', fp);
}

static int save_file(struct sy_run *r, struct sy_state *s)
{
	char *tmp = malloc(strlen(s->path) + 8), *dir = strdup(s->path), *slash;
	FILE *fp;
	int fd, ok;

	if (tmp == NULL || dir == NULL)
		abort();
	slash = strrchr(dir, '/');
	if (slash != NULL) {
		*slash = '\0';
		mkdir(dir, 0700);
	}
	sprintf(tmp, "%s.tmp", s->path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	fp = fd < 0 ? NULL : fdopen(fd, "w");
	if (fp == NULL) {
		sy_out(r, "State: cannot write %s: %s", tmp, strerror(errno));
		if (fd >= 0)
			close(fd);
		free(tmp);
		free(dir);
		return -1;
	}
	fprintf(fp, "%s\n", STATE_MAGIC);
	for (size_t k = 0; k < s->n; k++) {
		const struct sy_fstate *e = &s->f[k];

		/* Entries of folders this run did not plan (--folder, --exclude)
		 * are kept: a later full run can still skip them. */
		if (!e->st[0].valid || !e->st[1].valid)
			continue; /* not synced cleanly */
		write_folder(fp, e);
	}
	for (size_t k = 0; k < s->nmaps; k++)
		write_map(fp, &s->maps[k]);
	ok = fflush(fp) == 0 && fsync(fileno(fp)) == 0;
	ok = fclose(fp) == 0 && ok;
	if (!ok || rename(tmp, s->path) != 0) {
		sy_out(r, "State: cannot write %s: %s", s->path, strerror(errno));
		unlink(tmp);
		free(tmp);
		free(dir);
		return -1;
	}
	/* make the rename itself durable */
	fd = open(dir, O_RDONLY | O_DIRECTORY);
	if (fd >= 0) {
		fsync(fd);
		close(fd);
	}
	free(tmp);
	free(dir);
	return 0;
}

/* --- the state in Redis (--redis): rep:{s}:st:<user1> holds one field per
 * folder pair (its "F" line) and "_pair" (whose state it is);
 * rep:{s}:map:<user1>:<host1 folder> holds the folder's "M" line. The
 * whole state is replaced in one MULTI/EXEC, so a crash leaves the old state
 * or the new one. --- */

#define PAIR_FIELD "_pair"

/* A connection to the Redis node that holds the user's keys: every key of
 * the state shares the user's shard tag, so with a Redis Cluster the node
 * that serves the state key serves them all (rnodes.h). */
static redisContext *redis_open(struct sy_run *r)
{
	const char *error;
	char key[1024];
	redisContext *c = NULL;

	if (rk_key_state(key, sizeof(key), r->o->acc[0].user != NULL ? r->o->acc[0].user : "") < 0)
		error = "user name too long";
	else
		c = rn_connect_for_key(r->o->redis, key, 2000, &error);
	if (c == NULL)
		sy_out(r, "State: cannot reach Redis at %s (%s)", r->o->redis, error);
	return c;
}

static char *pair_value(const struct sy_run *r)
{
	char *v;

	if (asprintf(&v, "%s %s %s", STATE_MAGIC,
	             r->o->acc[0].user != NULL ? r->o->acc[0].user : "",
	             r->o->acc[1].user != NULL ? r->o->acc[1].user : "") < 0)
		abort();
	return v;
}

/* The folder's name in keys and fields: the shared canonical form (UTF-8,
 * INBOX folded), the raw name when it cannot be made. */
static void canon(const struct sy_run *r, const char *name1, char *buf, size_t size)
{
	if (rk_folder_canon(buf, size, name1, strlen(name1), 0, r->side[0].sep) < 0)
		snprintf(buf, size, "%s", name1);
}

static void load_redis(struct sy_run *r, struct sy_state *s)
{
	const char *user = r->o->acc[0].user != NULL ? r->o->acc[0].user : "";
	char key[1024], *pair = pair_value(r);
	redisContext *c;
	redisReply *rep;

	if (rk_key_state(key, sizeof(key), user) < 0 ||
	    asprintf(&s->path, "redis %s key %s", r->o->redis, key) < 0)
		abort();
	if ((c = redis_open(r)) == NULL) {
		free(pair);
		return;
	}
	rep = redisCommand(c, "HGETALL %s", key);
	if (rep == NULL || rep->type != REDIS_REPLY_ARRAY) {
		sy_out(r, "State: cannot read %s (%s): a full pass over every folder", s->path,
		       rep == NULL                      ? c->errstr
		       : rep->type == REDIS_REPLY_ERROR ? rep->str
		                                        : "not a hash");
		goto out;
	}
	for (size_t i = 0; i + 1 < rep->elements; i += 2) {
		const redisReply *f = rep->element[i], *v = rep->element[i + 1];

		if (f->type != REDIS_REPLY_STRING || strcmp(f->str, PAIR_FIELD) != 0)
			continue;
		if (v->type == REDIS_REPLY_STRING && strcmp(v->str, pair) == 0) {
			s->pair_seen = 1;
		} else {
			sy_out(r, "State: %s belongs to another account pair (%s); ignoring it",
			       s->path, v->type == REDIS_REPLY_STRING ? v->str : "?");
			clear_folders(s);
			s->foreign = 1;
			goto out;
		}
	}
	for (size_t i = 0; i + 1 < rep->elements; i += 2) {
		const redisReply *f = rep->element[i], *v = rep->element[i + 1];

		if (f->type != REDIS_REPLY_STRING || strcmp(f->str, PAIR_FIELD) == 0 ||
		    v->type != REDIS_REPLY_STRING)
			continue;
		if (load_line(s, v->str) != 0) {
			sy_out(r, "State: %s field %s is corrupt; ignoring the state (a full pass)",
			       s->path, f->str);
			clear_folders(s);
			goto out;
		}
	}
	s->maps_todo = 1;
	s->maps_nf = s->n;
out:
	freeReplyObject(rep);
	if (c->err == 0)
		s->rc = c; /* for the save: one connection per run, not two */
	else
		redisFree(c);
	free(pair);
}

/* The UID maps of every folder in the state, one pipelined GET each, on
 * the load's connection (or a new one, then kept for the save). */
static void maps_need(struct sy_state *s)
{
	struct sy_run *r = s->run;
	const char *user;
	redisContext *c;

	if (!s->maps_todo)
		return;
	s->maps_todo = 0;
	user = r->o->acc[0].user != NULL ? r->o->acc[0].user : "";
	if (s->rc == NULL && (s->rc = redis_open(r)) == NULL)
		return;
	c = s->rc;
	for (size_t k = 0; k < s->maps_nf; k++) {
		char mkey[2048], cn[1024];

		canon(r, s->f[k].name1, cn, sizeof(cn));
		if (rk_key_map(mkey, sizeof(mkey), user, cn) < 0)
			mkey[0] = '\0';
		redisAppendCommand(c, "GET %s", mkey);
	}
	for (size_t k = 0; k < s->maps_nf; k++) {
		redisReply *m = NULL;

		if (redisGetReply(c, (void **)&m) != REDIS_OK) {
			sy_out(r, "State: %s: %s", s->path, c->errstr);
			break;
		}
		if (m->type == REDIS_REPLY_STRING && load_line(s, m->str) != 0)
			sy_out(r, "State: %s: a bad UID map for [%s], ignored", s->path,
			       s->f[k].name1);
		freeReplyObject(m);
	}
	if (c->err != 0) {
		redisFree(c);
		s->rc = NULL;
	}
}

static char *line_of(void (*wr)(FILE *, const void *), const void *what)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *fp = open_memstream(&buf, &len);

	if (fp == NULL)
		abort();
	wr(fp, what);
	fclose(fp);
	return buf;
}

static void wr_folder(FILE *fp, const void *e)
{
	write_folder(fp, e);
}

static void wr_map(FILE *fp, const void *m)
{
	write_map(fp, m);
}

/* --- lately vanished pairs (Redis) ---
 *
 * A message moved from A to B through the proxy vanishes from A: A's pass
 * drops its pair from A's map, and when it runs before B's, B's move hint
 * would find no copy on host2 to copy from. So A's pass keeps the pairs it
 * drops that a move hint names (delta.c keep_moved(); while the copies stay
 * on host2: not with --delete2) in
 * rep:{s}:gone:<user>:<A> for as long as hints live, the latest GONE_MAX,
 * and a lookup the map cannot answer tries them. Only the folder's own
 * pass (under its lease) writes the key; a lost write costs an upload. */

#define GONE_MAX 10000

static int gone_key(const struct sy_run *r, const char *canon1, char *key, size_t size)
{
	return rk_key_gone(key, size, r->o->acc[0].user != NULL ? r->o->acc[0].user : "", canon1);
}

/* The stored pairs for canon1: one GET per folder and run (kept in
 * s->gone, and kept up to date by sy_state_gone_put()); NULL if none. */
static struct sy_umap *gone_get(struct sy_state *s, const char *canon1)
{
	struct sy_run *r = s->run;
	struct sy_state tmp;
	char key[2048], *line = NULL;
	redisReply *rep;
	struct sy_gone *g;

	for (size_t k = 0; k < s->ngone; k++) {
		if (strcmp(s->gone[k].canon1, canon1) == 0)
			return s->gone[k].have ? &s->gone[k].m : NULL;
	}
	if (r == NULL || r->o->redis == NULL || gone_key(r, canon1, key, sizeof(key)) < 0 ||
	    (s->rc == NULL && (s->rc = redis_open(r)) == NULL))
		return NULL;
	rep = redisCommand(s->rc, "GET %s", key);
	if (rep == NULL) { /* not known: asked again next time */
		redisFree(s->rc);
		s->rc = NULL;
		return NULL;
	}
	g = realloc(s->gone, (s->ngone + 1) * sizeof(*g));
	if (g == NULL)
		abort();
	s->gone = g;
	g = &s->gone[s->ngone++];
	memset(g, 0, sizeof(*g));
	g->canon1 = xstrdup(canon1);
	memset(&tmp, 0, sizeof(tmp));
	if (rep->type == REDIS_REPLY_STRING)
		line = xstrdup(rep->str);
	freeReplyObject(rep);
	if (line != NULL && load_map(&tmp, line) == 0 && tmp.maps[0].uv2 != 0) {
		g->m = tmp.maps[0];
		g->have = 1;
	} else if (tmp.nmaps > 0) {
		map_free(&tmp.maps[0]);
	}
	free(tmp.maps);
	free(line);
	return g->have ? &g->m : NULL;
}

void sy_state_gone_put(struct sy_run *r, struct sy_state *s, const struct sy_folder *f,
                       uint32_t uv1, uint32_t uv2, const struct sy_uidpair *pairs, size_t n)
{
	char key[2048], cn[1024], *line;
	const struct sy_umap *old;
	struct sy_umap m;
	size_t nold, k, out;
	redisReply *rep;

	if (r->o->redis == NULL || s == NULL || n == 0 || uv1 == 0 || uv2 == 0)
		return;
	canon(r, f->name1, cn, sizeof(cn));
	if (gone_key(r, cn, key, sizeof(key)) < 0)
		return;
	old = gone_get(s, cn);
	if (old != NULL &&
	    (old->uv1 != uv1 || old->uv2 != uv2 || strcmp(old->name2, f->name2) != 0))
		old = NULL; /* another folder's or UIDVALIDITY's: replaced */
	nold = old != NULL ? old->n : 0;
	memset(&m, 0, sizeof(m));
	m.pairs = malloc((nold + n + 1) * sizeof(*m.pairs));
	m.name1 = xstrdup(f->name1);
	m.name2 = xstrdup(f->name2);
	if (m.pairs == NULL)
		abort();
	if (nold > 0)
		memcpy(m.pairs, old->pairs, nold * sizeof(*m.pairs));
	memcpy(m.pairs + nold, pairs, n * sizeof(*m.pairs));
	qsort(m.pairs, nold + n, sizeof(*m.pairs), pair_cmp);
	/* one pair per host1 UID (a UID does not vanish twice), the latest
	 * GONE_MAX: the highest UIDs */
	for (k = 0, out = 0; k < nold + n; k++) {
		if (out > 0 && m.pairs[out - 1].uid1 == m.pairs[k].uid1)
			m.pairs[out - 1] = m.pairs[k];
		else
			m.pairs[out++] = m.pairs[k];
	}
	if (out > GONE_MAX) {
		memmove(m.pairs, m.pairs + (out - GONE_MAX), GONE_MAX * sizeof(*m.pairs));
		out = GONE_MAX;
	}
	m.n = out;
	m.uv1 = uv1;
	m.uv2 = uv2;
	line = line_of(wr_map, &m);
	if (s->rc != NULL) {
		rep = redisCommand(s->rc, "SET %s %s EX %d", key, line, (int)RK_HINT_TTL_S);
		if (rep == NULL) {
			redisFree(s->rc);
			s->rc = NULL;
		}
		freeReplyObject(rep);
	}
	free(line);
	/* what this run reads from now on (gone_get() made the entry) */
	for (k = 0; k < s->ngone; k++) {
		if (strcmp(s->gone[k].canon1, cn) == 0) {
			if (s->gone[k].have)
				map_free(&s->gone[k].m);
			s->gone[k].m = m;
			s->gone[k].have = 1;
			return;
		}
	}
	map_free(&m);
}

/* Anything for save_redis() to write? */
static int redis_dirty(const struct sy_state *s)
{
	if (s->foreign || !s->pair_seen)
		return 1;
	for (size_t k = 0; k < s->n; k++) {
		if (s->f[k].dirty || s->f[k].was1 != NULL)
			return 1;
	}
	for (size_t k = 0; k < s->nmaps; k++) {
		if (s->maps[k].dirty || s->maps[k].was1 != NULL)
			return 1;
	}
	return 0;
}

static int save_redis_on(struct sy_run *r, struct sy_state *s, redisContext *c, int quiet);

static int save_redis(struct sy_run *r, struct sy_state *s)
{
	redisContext *c = s->rc;

	if (!redis_dirty(s))
		return 0; /* a quick check that found nothing: no write at all */
	s->rc = NULL;
	/* the load's connection first; when it failed (closed by Redis in a
	 * long run, say: MULTI ... EXEC never ran), once more on a new one */
	if (c != NULL && save_redis_on(r, s, c, 1) == 0)
		return 0;
	if ((c = redis_open(r)) == NULL)
		return -1;
	return save_redis_on(r, s, c, 0);
}

/* Writes the state in one MULTI ... EXEC on c, then frees c. */
/*
 * The fenced write (--fence, a daemon's job): one script checks that the
 * queue item's owner is still this run's ("worker:token" in rep:{s}:owner,
 * the lease's fencing token) and only then makes the writes, so a worker
 * that lost its lease (stalled past it, its item reclaimed by another
 * worker) cannot overwrite the newer owner's state. KEYS[1] the owner hash,
 * KEYS[2..] the keys written; ARGV: member, owner, then ops: 'D' k (DEL),
 * 'X' k field (HDEL), 'H' k field value (HSET), 'S' k value (SET), k an
 * index into KEYS. Returns 1 written, 0 fenced off. Every key shares the
 * user's shard tag: one slot.
 */
static const char fenced_save_lua[] =
        "if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end\n"
        "local i = 3\n"
        "while i <= #ARGV do\n"
        "  local op, k = ARGV[i], KEYS[tonumber(ARGV[i + 1])]\n"
        "  if op == 'D' then redis.call('DEL', k); i = i + 2\n"
        "  elseif op == 'X' then redis.call('HDEL', k, ARGV[i + 2]); i = i + 3\n"
        "  elseif op == 'H' then redis.call('HSET', k, ARGV[i + 2], ARGV[i + 3]); i = i + 4\n"
        "  elseif op == 'S' then redis.call('SET', k, ARGV[i + 2]); i = i + 3\n"
        "  else return redis.error_reply('bad op') end\n"
        "end\n"
        "return 1\n";

/* An argument vector that owns its strings. */
struct sv {
	char **v;
	size_t n, cap;
};

static void sv_add(struct sv *a, const char *str)
{
	if (a->n == a->cap) {
		a->cap = a->cap == 0 ? 32 : a->cap * 2;
		a->v = realloc(a->v, a->cap * sizeof(*a->v));
		if (a->v == NULL)
			abort();
	}
	a->v[a->n++] = xstrdup(str);
}

static void sv_free(struct sv *a)
{
	for (size_t i = 0; i < a->n; i++)
		free(a->v[i]);
	free(a->v);
	memset(a, 0, sizeof(*a));
}

/* Adds key to keys; its KEYS index (1-based, as text) to args. */
static void sv_key(struct sv *keys, struct sv *args, const char *key)
{
	char idx[24];

	sv_add(keys, key);
	snprintf(idx, sizeof(idx), "%zu", keys->n);
	sv_add(args, idx);
}

/* The fenced write of what save_redis_on() writes; 0, or -1 (*why set). */
static int save_redis_fenced(struct sy_run *r, struct sy_state *s, redisContext *c, char *why,
                             size_t why_size)
{
	const char *user = r->o->acc[0].user != NULL ? r->o->acc[0].user : "";
	const char *tab = strrchr(r->o->fence, '\t');
	char key[1024], okey[64], nk[24], *pair = pair_value(r);
	struct sv keys = {0}, args = {0};
	const char **argv;
	redisReply *rep;
	size_t argc;
	int rc = -1;

	if (tab == NULL || tab == r->o->fence || rk_key_state(key, sizeof(key), user) < 0 ||
	    rk_key_owner(okey, sizeof(okey), rk_shard(user)) < 0) {
		snprintf(why, why_size, "bad --fence");
		free(pair);
		return -1;
	}
	sv_add(&keys, okey);
	{
		char *member = strndup(r->o->fence, (size_t)(tab - r->o->fence));

		if (member == NULL)
			abort();
		sv_add(&args, member);
		free(member);
	}
	sv_add(&args, tab + 1);
	if (s->foreign) {
		sv_add(&args, "D");
		sv_key(&keys, &args, key);
	}
	sv_add(&args, "H");
	sv_key(&keys, &args, key);
	sv_add(&args, PAIR_FIELD);
	sv_add(&args, pair);
	for (size_t k = 0; k < s->n; k++) {
		const struct sy_fstate *e = &s->f[k];
		char cn[1024];

		if (e->was1 != NULL) {
			canon(r, e->was1, cn, sizeof(cn));
			sv_add(&args, "X");
			sv_key(&keys, &args, key);
			sv_add(&args, cn);
		}
		if (!e->dirty)
			continue;
		canon(r, e->name1, cn, sizeof(cn));
		if (!e->st[0].valid || !e->st[1].valid) {
			sv_add(&args, "X");
			sv_key(&keys, &args, key);
			sv_add(&args, cn);
		} else {
			char *line = line_of(wr_folder, e);

			sv_add(&args, "H");
			sv_key(&keys, &args, key);
			sv_add(&args, cn);
			sv_add(&args, line);
			free(line);
		}
	}
	for (size_t k = 0; k < s->nmaps; k++) {
		char mkey[2048], cn[1024];

		if (s->maps[k].was1 != NULL) {
			canon(r, s->maps[k].was1, cn, sizeof(cn));
			if (rk_key_map(mkey, sizeof(mkey), user, cn) >= 0) {
				sv_add(&args, "D");
				sv_key(&keys, &args, mkey);
			}
		}
		canon(r, s->maps[k].name1, cn, sizeof(cn));
		if (!s->maps[k].dirty || rk_key_map(mkey, sizeof(mkey), user, cn) < 0)
			continue;
		{
			char *line = line_of(wr_map, &s->maps[k]);

			sv_add(&args, "S");
			sv_key(&keys, &args, mkey);
			sv_add(&args, line);
			free(line);
		}
	}
	argc = 3 + keys.n + args.n;
	argv = calloc(argc, sizeof(*argv));
	if (argv == NULL)
		abort();
	snprintf(nk, sizeof(nk), "%zu", keys.n);
	argv[0] = "EVAL";
	argv[1] = fenced_save_lua;
	argv[2] = nk;
	for (size_t i = 0; i < keys.n; i++)
		argv[3 + i] = keys.v[i];
	for (size_t i = 0; i < args.n; i++)
		argv[3 + keys.n + i] = args.v[i];
	rep = redisCommandArgv(c, (int)argc, argv, NULL);
	if (rep == NULL)
		snprintf(why, why_size, "%s", c->errstr[0] != '\0' ? c->errstr : "no reply");
	else if (rep->type == REDIS_REPLY_ERROR)
		snprintf(why, why_size, "%s", rep->str);
	else if (rep->type != REDIS_REPLY_INTEGER)
		snprintf(why, why_size, "unexpected reply");
	else if (rep->integer != 1)
		snprintf(why, why_size,
		         "this run's lease on the folder was lost (another worker has it): its "
		         "state "
		         "is not written");
	else
		rc = 0;
	freeReplyObject(rep);
	free(argv);
	sv_free(&keys);
	sv_free(&args);
	free(pair);
	return rc;
}

static int save_redis_on(struct sy_run *r, struct sy_state *s, redisContext *c, int quiet)
{
	const char *user = r->o->acc[0].user != NULL ? r->o->acc[0].user : "";
	char key[1024], why[512] = "", *pair = pair_value(r);
	redisReply *rep = NULL;
	size_t ncmd = 0;
	int ok = 1;

	if (rk_key_state(key, sizeof(key), user) < 0)
		abort();
	if (r->o->fence != NULL) {
		ok = save_redis_fenced(r, s, c, why, sizeof(why)) == 0;
		goto out;
	}
	/* only what this run changed: another run (the daemon syncs folders of
	 * one user in separate processes) may own the other fields */
	redisAppendCommand(c, "MULTI");
	ncmd = 1;
	if (s->foreign) {
		redisAppendCommand(c, "DEL %s", key);
		ncmd++;
	}
	redisAppendCommand(c, "HSET %s %s %s", key, PAIR_FIELD, pair);
	ncmd++;
	for (size_t k = 0; k < s->n; k++) {
		const struct sy_fstate *e = &s->f[k];
		char cn[1024], *line;

		if (e->was1 != NULL) {
			canon(r, e->was1, cn, sizeof(cn));
			redisAppendCommand(c, "HDEL %s %s", key, cn);
			ncmd++;
		}
		if (!e->dirty)
			continue;
		canon(r, e->name1, cn, sizeof(cn));
		if (!e->st[0].valid || !e->st[1].valid) {
			redisAppendCommand(c, "HDEL %s %s", key, cn);
		} else {
			line = line_of(wr_folder, e);
			redisAppendCommand(c, "HSET %s %s %s", key, cn, line);
			free(line);
		}
		ncmd++;
	}
	for (size_t k = 0; k < s->nmaps; k++) {
		char mkey[2048], cn[1024], *line;

		if (s->maps[k].was1 != NULL) {
			canon(r, s->maps[k].was1, cn, sizeof(cn));
			if (rk_key_map(mkey, sizeof(mkey), user, cn) == 0) {
				redisAppendCommand(c, "DEL %s", mkey);
				ncmd++;
			}
		}
		canon(r, s->maps[k].name1, cn, sizeof(cn));
		if (!s->maps[k].dirty || rk_key_map(mkey, sizeof(mkey), user, cn) < 0)
			continue;
		line = line_of(wr_map, &s->maps[k]);
		redisAppendCommand(c, "SET %s %s", mkey, line);
		ncmd++;
		free(line);
	}
	redisAppendCommand(c, "EXEC");
	ncmd++;
	for (size_t i = 0; i < ncmd; i++) {
		if (redisGetReply(c, (void **)&rep) != REDIS_OK) {
			ok = 0;
			break;
		}
		if (i + 1 == ncmd && (rep->type != REDIS_REPLY_ARRAY))
			ok = 0;
		if (rep->type == REDIS_REPLY_ERROR) {
			if (ok) /* the first error says why */
				snprintf(why, sizeof(why), "%s", rep->str);
			ok = 0;
		}
		freeReplyObject(rep);
	}
out:
	if (!ok && !quiet)
		sy_out(r, "State: cannot write %s: %s", s->path,
		       c->err           ? c->errstr
		       : why[0] != '\0' ? why
		                        : "refused");
	redisFree(c);
	free(pair);
	return ok ? 0 : -1;
}

int sy_state_save(struct sy_run *r, struct sy_state *s)
{
	return r->o->redis != NULL ? save_redis(r, s) : save_file(r, s);
}

/* What a save wrote is not written again: a later save (Redis) writes only
 * what changed after it, and an old name is deleted once. */
static void saved_clean(struct sy_state *s)
{
	s->foreign = 0;
	s->pair_seen = 1;
	for (size_t k = 0; k < s->n; k++) {
		s->f[k].dirty = 0;
		free(s->f[k].was1);
		s->f[k].was1 = NULL;
	}
	for (size_t k = 0; k < s->nmaps; k++) {
		s->maps[k].dirty = 0;
		free(s->maps[k].was1);
		s->maps[k].was1 = NULL;
	}
}

/*
 * --checkpoint: without it the state is written once, at the end of the
 * run, and a run killed before that (a crash, SIGKILL, a machine going
 * down) leaves the next run the old state only: a full pass, by headers,
 * of every folder this run had already synced. Saved between folders, the
 * folders finished before the kill are skipped or synced incrementally.
 * Seconds apart (a file state is rewritten whole and fsync()ed each time);
 * a run shorter than that writes once, as before.
 */
void sy_state_checkpoint(struct sy_run *r, struct sy_state *s)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	if ((long long)(now.tv_sec - s->saved.tv_sec) < r->o->checkpoint)
		return;
	if (r->o->redis != NULL && !redis_dirty(s))
		return;
	s->saved = now;
	if (sy_state_save(r, s) == 0)
		saved_clean(s);
}

void sy_state_dump(struct sy_state *s, const struct sy_folder *f, FILE *fp)
{
	struct sy_fstate *e = find(s, f->name1, f->name2);
	struct sy_umap *m;

	maps_need(s);
	m = map_find(s, f->name1, f->name2);
	if (e != NULL) {
		if (!e->st[0].valid || !e->st[1].valid)
			fputs("X forgotten\n", fp); /* the pass failed: forget it */
		write_folder(fp, e);
	}
	if (m != NULL)
		write_map(fp, m);
}

int sy_state_merge_line(struct sy_state *s, char *line)
{
	struct sy_state tmp;
	int forget = 0, rc;

	memset(&tmp, 0, sizeof(tmp));
	maps_need(s); /* a worker's map replaces the stored one */
	if (strncmp(line, "X ", 2) == 0) {
		s->merge_forget = 1; /* the next F line is a folder whose pass failed */
		return 0;
	}
	if (line[0] == 'F' && s->merge_forget) {
		forget = 1;
		s->merge_forget = 0;
	}
	rc = load_line(&tmp, line);
	for (size_t k = 0; k < tmp.n; k++) {
		struct sy_fstate *e = find(s, tmp.f[k].name1, tmp.f[k].name2);

		if (e == NULL) {
			e = add(s);
			e->name1 = tmp.f[k].name1;
			e->name2 = tmp.f[k].name2;
		} else {
			free(tmp.f[k].name1);
			free(tmp.f[k].name2);
		}
		e->st[0] = tmp.f[k].st[0];
		e->st[1] = tmp.f[k].st[1];
		e->ident1 = tmp.f[k].ident1;
		e->ident2 = tmp.f[k].ident2;
		e->in2not1 = tmp.f[k].in2not1;
		if (forget)
			e->st[0].valid = e->st[1].valid = 0;
		e->dirty = 1;
	}
	for (size_t k = 0; k < tmp.nmaps; k++) {
		struct sy_umap *m = map_find(s, tmp.maps[k].name1, tmp.maps[k].name2);

		if (m == NULL) {
			*map_add(s) = tmp.maps[k];
		} else {
			free(m->pairs);
			free(tmp.maps[k].name1);
			free(tmp.maps[k].name2);
			m->pairs = tmp.maps[k].pairs;
			m->n = tmp.maps[k].n;
			m->uv1 = tmp.maps[k].uv1;
			m->uv2 = tmp.maps[k].uv2;
		}
		(m != NULL ? m : &s->maps[s->nmaps - 1])->dirty = 1;
	}
	free(tmp.f);
	free(tmp.maps);
	return rc;
}

const char *sy_state_file(const struct sy_state *s)
{
	return s->path;
}

void sy_state_free(struct sy_state **sp)
{
	struct sy_state *s = *sp;

	if (s == NULL)
		return;
	for (size_t k = 0; k < s->n; k++) {
		free(s->f[k].name1);
		free(s->f[k].name2);
		free(s->f[k].was1);
	}
	for (size_t k = 0; k < s->nmaps; k++)
		map_free(&s->maps[k]);
	for (size_t k = 0; k < s->ngone; k++) {
		free(s->gone[k].canon1);
		if (s->gone[k].have)
			map_free(&s->gone[k].m);
	}
	free(s->gone);
	if (s->rc != NULL)
		redisFree(s->rc);
	free(s->maps);
	free(s->f);
	free(s->path);
	free(s);
	*sp = NULL;
}

/* --- STATUS of many folders, pipelined: one round trip per side --- */

struct status_batch {
	const struct sy_plan *plan;
	int side;
	struct sy_fstatus *out; /* [plan->n] */
	unsigned pending;
};

int sy_fstatus_parse(const struct imap_msg *msg, struct sy_fstatus *st, const char **name_r,
                     size_t *name_len_r)
{
	struct imap_status_info si;
	const char *err;
	const unsigned need = IMAP_STATUS_UIDVALIDITY | IMAP_STATUS_UIDNEXT | IMAP_STATUS_MESSAGES;

	if (msg->name == NULL || strcmp(msg->name, "STATUS") != 0 ||
	    imap_status_parse(msg, &si, &err) < 0)
		return -1;
	st->uidvalidity = si.uidvalidity;
	st->uidnext = si.uidnext;
	st->messages = si.messages;
	st->highestmodseq = si.highestmodseq;
	st->has_modseq = (si.have & IMAP_STATUS_HIGHESTMODSEQ) != 0;
	st->valid = (si.have & need) == need;
	*name_r = si.name;
	*name_len_r = si.name_len;
	return 0;
}

static void on_status(struct imap_client *cl, const struct imap_msg *msg, void *aux)
{
	struct status_batch *b = aux;
	struct sy_fstatus st;
	const char *sname;
	size_t slen;

	(void)cl;
	if (sy_fstatus_parse(msg, &st, &sname, &slen) < 0)
		return;
	for (size_t k = 0; k < b->plan->n; k++) {
		const char *name = b->side == 0 ? b->plan->f[k].name1 : b->plan->f[k].name2;

		if (strlen(name) == slen && memcmp(name, sname, slen) == 0)
			b->out[k] = st;
	}
}

static void on_status_done(struct imap_client *cl, const struct imap_result *res, void *aux)
{
	struct status_batch *b = aux;

	(void)cl;
	(void)res;
	b->pending--;
}

/* bsearch() over a plan's LIST-STATUS replies, sorted by sy_lstatus_sort() */
static int lstatus_cmp(const void *key, const void *elem)
{
	return strcmp(key, ((const struct sy_lstatus *)elem)->name);
}

static int lstatus_sort_cmp(const void *a, const void *b)
{
	return strcmp(((const struct sy_lstatus *)a)->name, ((const struct sy_lstatus *)b)->name);
}

void sy_lstatus_sort(struct sy_lstatus *ls, size_t n)
{
	if (n > 1)
		qsort(ls, n, sizeof(*ls), lstatus_sort_cmp);
}

void sy_status_batch(struct sy_run *r, const struct sy_plan *plan, size_t only,
                     struct sy_fstatus (*out)[2])
{
	struct sy_fstatus *tmp[2];
	struct status_batch b[2];

	for (int i = 0; i < 2; i++) {
		const struct imap_caps *caps;
		int modseq;

		tmp[i] = calloc(plan->n + 1, sizeof(*tmp[i]));
		if (tmp[i] == NULL)
			abort();
		b[i].plan = plan;
		b[i].side = i;
		b[i].out = tmp[i];
		b[i].pending = 0;
		if (r->side[i].cl == NULL || imap_client_state(r->side[i].cl) != IMAP_CL_AUTHED)
			continue;
		caps = imap_client_caps(r->side[i].cl);
		modseq = imap_caps_has(caps, IMAP_CAP_CONDSTORE);
		for (size_t k = 0; k < plan->n; k++) {
			const char *error;
			const struct sy_lstatus *ls;

			if ((only != (size_t)-1 && k != only) || (i == 1 && !plan->f[k].exists2))
				continue;
			/* the whole plan's: what the LIST-STATUS gave needs no STATUS */
			if (only == (size_t)-1 && plan->nls[i] > 0 &&
			    (ls = bsearch(i == 0 ? plan->f[k].name1 : plan->f[k].name2, plan->ls[i],
			                  plan->nls[i], sizeof(*ls), lstatus_cmp)) != NULL) {
				tmp[i][k] = ls->st;
				continue;
			}
			if (imap_client_cmdf(r->side[i].cl, on_status_done, on_status, NULL, &b[i],
			                     &error, "STATUS %m (UIDVALIDITY UIDNEXT MESSAGES%a)",
			                     i == 0 ? plan->f[k].name1 : plan->f[k].name2,
			                     modseq ? " HIGHESTMODSEQ" : "") == 0)
				b[i].pending++;
		}
	}
	while ((b[0].pending > 0 || b[1].pending > 0) && event_base_loop(r->base, EVLOOP_ONCE) == 0)
		;
	for (size_t k = 0; k < plan->n; k++) {
		if (only != (size_t)-1 && k != only)
			continue;
		out[k][0] = tmp[0][k];
		out[k][1] = tmp[1][k];
	}
	free(tmp[0]);
	free(tmp[1]);
}
