/* delete.c - see delete.h. */
#include "delete.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "imapferry/resp.h"
#include "regex.h"
#include "xform.h"

#define SET_MAX 8192 /* bytes of one UID set in a command */

const char *sy_dry_suffix(const struct sy_run *r)
{
	return r->o->dry ? "\t(not really since --dry mode)" : "";
}

int sy_dry1(const struct sy_run *r)
{
	return r->o->dry || r->o->dry1;
}

const char *sy_dry1_suffix(const struct sy_run *r)
{
	return r->o->dry ? sy_dry_suffix(r) : r->o->dry1 ? "\t(not really since --dry1 mode)" : "";
}

static int side_has(const struct sy_run *r, int i, enum imap_cap cap)
{
	return r->side[i].cl != NULL && imap_caps_has(imap_client_caps(r->side[i].cl), cap);
}

size_t sy_delete_uids(struct sy_run *r, int i, const char *folder, uint32_t *uids, size_t n,
                      enum sy_expunge xp)
{
	char *set = malloc(SET_MAX);
	size_t pos = 0, marked = 0;
	struct sy_res res;

	if (set == NULL)
		abort();
	qsort(uids, n, sizeof(*uids), sy_u32_cmp);
	while (pos < n && !r->stop) {
		size_t k = sy_uid_set(set, SET_MAX, uids, n, &pos);

		if (sy_cmd(r, i, &res, NULL, NULL, NULL, "UID STORE %a +FLAGS.SILENT (\\Deleted)",
		           set) != IMAP_STATUS_OK) {
			sy_error(r, SY_ERR_FLAGS,
			         "Host%d folder %s: could not mark messages \\Deleted: %s", i + 1,
			         folder, res.text);
			break;
		}
		marked += k;
		if (xp == SY_XP_UIDS &&
		    sy_cmd(r, i, &res, NULL, NULL, NULL, "UID EXPUNGE %a", set) != IMAP_STATUS_OK) {
			sy_error(r, SY_ERR_UNCLASSIFIED,
			         "Host%d folder %s: could not UID EXPUNGE: %s", i + 1, folder,
			         res.text);
			break;
		}
	}
	if (marked > 0 && xp == SY_XP_FOLDER && !r->stop &&
	    sy_cmd(r, i, &res, NULL, NULL, NULL, "EXPUNGE") != IMAP_STATUS_OK)
		sy_error(r, SY_ERR_UNCLASSIFIED, "Host%d folder %s: could not EXPUNGE: %s", i + 1,
		         folder, res.text);
	free(set);
	return marked;
}

int sy_delete2_allowed(struct sy_run *r, const char *folder2, size_t ndel, size_t total)
{
	const struct sy_options *o = r->o;

	if (ndel == 0 || o->forcedelete2 || total == 0 ||
	    (double)ndel * 100.0 <= o->maxdelete2 * (double)total)
		return 1;
	sy_error(r, SY_ERR_UNCLASSIFIED,
	         "Host2 folder %s: --delete2 would delete %zu of its %zu messages (%.0f%%), more "
	         "than --maxdelete2 %g%%: nothing deleted in this folder. A source that looks "
	         "empty or half empty is more often a transient failure than a real deletion; if "
	         "host1 really lost them, run again with --forcedelete2 (or a higher "
	         "--maxdelete2)%s",
	         folder2, ndel, total, (double)ndel * 100.0 / (double)total, o->maxdelete2,
	         sy_dry_suffix(r));
	return 0;
}

int sy_flags_has_deleted(const char *flags)
{
	const char *p = flags;

	while (p != NULL && *p != '\0') {
		size_t len = strcspn(p, " ");

		if (len == 8 && strncasecmp(p, "\\Deleted", 8) == 0)
			return 1;
		p += len;
		p += strspn(p, " ");
	}
	return 0;
}

enum sy_expunge sy_delete1_expunge(const struct sy_run *r)
{
	if (!r->o->expunge1)
		return SY_XP_NONE;
	if (sy_options_given(r->o, SY_OPT_EXPUNGE1))
		return SY_XP_FOLDER; /* asked for by name: imapsync's folder EXPUNGE */
	return side_has(r, 0, IMAP_CAP_UIDPLUS) ? SY_XP_UIDS : SY_XP_NONE;
}

struct uvec {
	uint32_t *v;
	size_t n, cap;
};

static void uvec_add(struct uvec *u, uint32_t x)
{
	if (u->n == u->cap) {
		u->cap = u->cap ? u->cap * 2 : 64;
		u->v = realloc(u->v, u->cap * sizeof(*u->v));
		if (u->v == NULL)
			abort();
	}
	u->v[u->n++] = x;
}

/* --delete2, --delete2duplicates: host2 messages that no host1 message of
 * this folder pair accounts for, and later duplicates of a key. */
static void delete2_pass(struct sy_run *r, const struct sy_folder *f, struct sy_msgs *m1,
                         struct sy_msgs *m2, const struct sy_kindex *ix1)
{
	const struct sy_options *o = r->o;
	uint8_t *keep = calloc(m2->n + 1, 1);
	struct uvec del = {0};
	size_t missing = 0;
	enum sy_expunge xp;

	if (keep == NULL)
		abort();
	for (size_t k = 0; k < m1->n; k++) {
		if (m1->v[k].match > 0 && (size_t)m1->v[k].match <= m2->n)
			keep[m1->v[k].match - 1] = 1;
	}
	for (size_t k = 0; k < m2->n; k++) {
		struct sy_msg *e = &m2->v[k];
		int dup = e->dup && ix1 != NULL;

		if (keep[k] || (ix1 != NULL && !e->haskey) || sy_flags_has_deleted(e->flags))
			continue; /* accounted for, unidentified, or already \Deleted */
		if (dup ? !o->delete2duplicates : !o->delete2)
			continue;
		if (!dup && ix1 != NULL && sy_kindex_get(ix1, m1, e->key) != NULL)
			continue; /* host1 has it (a host1 duplicate, a skipped one...) */
		e->del = dup ? 2 : 1;
		missing += !dup;
		uvec_add(&del, e->uid);
	}
	if (del.n > 0 && o->delete2 && !sy_delete2_allowed(r, f->name2, del.n, m2->n)) {
		for (size_t k = 0; k < m2->n; k++)
			m2->v[k].del = 0;
		goto out;
	}
	for (size_t k = 0; k < m2->n; k++) {
		const struct sy_msg *e = &m2->v[k];

		if (e->del)
			sy_msgline(r, "Host2: msg %s/%u marked \\Deleted on host2 [%s]%s%s",
			           f->name2, e->uid, e->key, e->del == 2 ? " (duplicate)" : "",
			           sy_dry_suffix(r));
	}
	if (o->dry || del.n == 0)
		goto out;
	if (o->expunge2)
		xp = SY_XP_FOLDER;
	else if (o->uidexpunge2 && side_has(r, 1, IMAP_CAP_UIDPLUS))
		xp = SY_XP_UIDS;
	else
		xp = SY_XP_NONE;
	{
		size_t marked = sy_delete_uids(r, 1, f->name2, del.v, del.n, xp);

		r->deleted2 += marked;
		if (marked == del.n) {
			/* what the verdicts count: the host2-only ones are gone */
			r->in2_not_in1 -= missing <= r->in2_not_in1 ? missing : r->in2_not_in1;
			r->ident2 -= missing <= r->ident2 ? missing : r->ident2;
		}
		if (xp == SY_XP_NONE && marked > 0)
			sy_out(r,
			       "Host2 folder %s: %zu messages marked \\Deleted and left there (%s; "
			       "--expunge2 expunges the folder)",
			       f->name2, marked,
			       o->uidexpunge2 ? "host2 has no UIDPLUS for UID EXPUNGE"
			                      : "--nouidexpunge2");
	}
out:
	free(keep);
	free(del.v);
}

/* --delete1: host1 messages whose copy is confirmed on host2 and that the
 * copy loop did not already delete one by one. */
static void delete1_pass(struct sy_run *r, const struct sy_folder *f, struct sy_msgs *m1)
{
	const struct sy_options *o = r->o;
	enum sy_expunge xp = sy_delete1_expunge(r);
	struct uvec del = {0};
	size_t marked;

	for (size_t k = 0; k < m1->n; k++) {
		struct sy_msg *e = &m1->v[k];

		if (!e->haskey || e->dup || e->del || e->skip)
			continue;
		if (!(e->match > 0 || (e->match == -1 && e->uid2 != 0)))
			continue; /* not confirmed on host2: kept */
		sy_msgline(r, "Host1: msg %s/%u marked \\Deleted on host1%s", f->name1, e->uid,
		           sy_dry1_suffix(r));
		uvec_add(&del, e->uid);
	}
	if (sy_dry1(r) || del.n == 0)
		goto out;
	if (xp == SY_XP_NONE && o->expunge1) {
		/* implied --expunge1 without UIDPLUS: a folder EXPUNGE would also
		 * remove what the user marked \Deleted and we did not copy */
		int foreign = 0;

		for (size_t k = 0; k < m1->n && !foreign; k++) {
			const struct sy_msg *e = &m1->v[k];
			int ours = e->haskey && !e->dup && !e->skip &&
			           (e->match > 0 || (e->match == -1 && e->uid2 != 0));

			foreign = !ours && sy_flags_has_deleted(e->flags);
		}
		if (!foreign)
			xp = SY_XP_FOLDER;
		else
			sy_out(r,
			       "Host1 folder %s: no UIDPLUS, and messages marked \\Deleted that "
			       "were "
			       "not copied are there: not expunged (--expunge1 forces a folder "
			       "EXPUNGE)",
			       f->name1);
	}
	marked = sy_delete_uids(r, 0, f->name1, del.v, del.n, xp);
	r->deleted1 += marked;
	for (size_t k = 0; k < m1->n; k++) {
		struct sy_msg *e = &m1->v[k];

		for (size_t j = 0; j < marked; j++) {
			if (del.v[j] == e->uid) {
				e->del = 1;
				break;
			}
		}
	}
out:
	free(del.v);
}

void sy_delete_after_pass(struct sy_run *r, const struct sy_folder *f, struct sy_msgs *m1,
                          struct sy_msgs *m2, const struct sy_kindex *ix1, int complete)
{
	const struct sy_options *o = r->o;
	int any = o->delete1 || o->delete2 || o->delete2duplicates;
	struct sy_res res;

	if (r->stop || imap_client_state(r->side[0].cl) == IMAP_CL_FAILED ||
	    (r->side[1].cl != NULL && imap_client_state(r->side[1].cl) == IMAP_CL_FAILED))
		return;
	if (any && !complete) {
		sy_out(r,
		       "Folder %s: a side's message list was incomplete (a message without answer "
		       "or without header key): nothing deleted in this folder",
		       f->name1);
		return;
	}
	if (o->delete2 || o->delete2duplicates)
		delete2_pass(r, f, m1, m2, ix1);
	else if (o->expunge2 && !o->dry && f->exists2 &&
	         sy_cmd(r, 1, &res, NULL, NULL, NULL, "EXPUNGE") != IMAP_STATUS_OK)
		sy_error(r, SY_ERR_UNCLASSIFIED, "Host2 folder %s: could not EXPUNGE: %s", f->name2,
		         res.text);
	if (o->delete1)
		delete1_pass(r, f, m1);
	else if (o->expunge1 && !sy_dry1(r) &&
	         sy_cmd(r, 0, &res, NULL, NULL, NULL, "EXPUNGE") != IMAP_STATUS_OK)
		sy_error(r, SY_ERR_UNCLASSIFIED, "Host1 folder %s: could not EXPUNGE: %s", f->name1,
		         res.text);
}

/* --- --delete1emptyfolders --- */

struct names {
	char **v;
	size_t n, cap;
};

static void on_list_name(struct imap_client *cl, const struct imap_msg *msg, void *aux)
{
	struct names *l = aux;
	const struct imap_arg *a;

	(void)cl;
	if (msg->name == NULL || strcmp(msg->name, "LIST") != 0 || msg->args == NULL)
		return;
	a = imap_arg_nth(msg->args, 2);
	if (a == NULL || a->str == NULL)
		return;
	if (l->n == l->cap) {
		l->cap = l->cap ? l->cap * 2 : 64;
		l->v = realloc(l->v, l->cap * sizeof(*l->v));
		if (l->v == NULL)
			abort();
	}
	l->v[l->n] = strndup(a->str, a->len);
	if (l->v[l->n] == NULL)
		abort();
	l->n++;
}

static void on_search_any(struct imap_client *cl, const struct imap_msg *msg, void *aux)
{
	(void)cl;
	if (msg->name != NULL && strcmp(msg->name, "SEARCH") == 0 && msg->args != NULL)
		*(int *)aux = 1;
}

static int has_child(const struct names *l, const char *name, char sep)
{
	size_t len = strlen(name);

	for (size_t k = 0; k < l->n; k++) {
		if (l->v[k] != NULL && strncmp(l->v[k], name, len) == 0 && l->v[k][len] == sep &&
		    l->v[k][len + 1] != '\0')
			return 1;
	}
	return 0;
}

static int name_desc(const void *a, const void *b)
{
	return strcmp(*(const char *const *)b, *(const char *const *)a);
}

void sy_delete1_empty_folders(struct sy_run *r, const struct sy_plan *plan)
{
	struct names l = {0};
	const char **order;
	struct sy_res res;
	size_t n = 0;

	if (!r->o->delete1emptyfolders || r->stop || r->side[0].cl == NULL)
		return;
	if (sy_cmd(r, 0, &res, on_list_name, NULL, &l, "LIST \"\" \"*\"") != IMAP_STATUS_OK) {
		sy_error(r, SY_ERR_UNCLASSIFIED, "Host1: could not list folders: %s", res.text);
		goto out;
	}
	order = calloc(plan->n + 1, sizeof(*order));
	if (order == NULL)
		abort();
	for (size_t k = 0; k < plan->n; k++) {
		if (!plan->f[k].skip && strcasecmp(plan->f[k].name1, "INBOX") != 0)
			order[n++] = plan->f[k].name1;
	}
	qsort(order, n, sizeof(*order), name_desc); /* children first */
	for (size_t k = 0; k < n && !r->stop; k++) {
		struct sy_msgs m;
		int found = 0;

		if (has_child(&l, order[k], r->side[0].sep))
			continue;
		memset(&m, 0, sizeof(m));
		if (sy_cmd(r, 0, &res, sy_on_select, NULL, &m, "EXAMINE %m", order[k]) !=
		            IMAP_STATUS_OK ||
		    m.exists != 0 ||
		    sy_cmd(r, 0, &res, on_search_any, NULL, &found, "UID SEARCH ALL") !=
		            IMAP_STATUS_OK ||
		    found) {
			sy_cmd(r, 0, NULL, NULL, NULL, NULL, "CLOSE");
			continue;
		}
		sy_cmd(r, 0, NULL, NULL, NULL, NULL, "CLOSE"); /* read-only: expunges nothing */
		sy_out(r, "Host1: deleting empty folder [%s]%s", order[k], sy_dry1_suffix(r));
		if (sy_dry1(r))
			continue;
		if (sy_cmd(r, 0, &res, NULL, NULL, NULL, "DELETE %m", order[k]) != IMAP_STATUS_OK) {
			sy_error(r, SY_ERR_UNCLASSIFIED, "Host1: could not delete folder [%s]: %s",
			         order[k], res.text);
			continue;
		}
		for (size_t j = 0; j < l.n; j++) {
			if (l.v[j] != NULL && strcmp(l.v[j], order[k]) == 0) {
				free(l.v[j]);
				l.v[j] = NULL;
			}
		}
	}
	free(order);
out:
	for (size_t k = 0; k < l.n; k++)
		free(l.v[k]);
	free(l.v);
}

/* --- regexes --- */

int sy_delete_folder_regex(struct sy_regex **re_r, const char *opt, const char *value,
                           const char **error_r)
{
	const char *p = value, *flags = "";
	char open, close, *pat;
	size_t len, nmods = 0;
	char mods[8] = "(?";
	int rc;

	*re_r = NULL;
	if (p[0] == 'm' && p[1] != '\0' && strchr("/{([<|!#,", p[1]) != NULL)
		p++;
	open = p[0];
	close = open == '{'   ? '}'
	        : open == '(' ? ')'
	        : open == '[' ? ']'
	        : open == '<' ? '>'
	                      : open;
	if (p != value || open == '/') {
		const char *end = strrchr(p + 1, close);

		if (end == NULL) {
			*error_r = "no closing delimiter";
			return -1;
		}
		len = (size_t)(end - (p + 1));
		flags = end + 1;
		p++;
	} else {
		len = strlen(p);
	}
	for (const char *q = flags; *q != '\0'; q++) {
		if (strchr("imsx", *q) == NULL) {
			*error_r = "unknown modifier after the regex (only i, m, s, x)";
			return -1;
		}
		if (strchr(mods + 2, *q) == NULL && nmods < 4)
			mods[2 + nmods++] = *q;
	}
	pat = malloc(len + 16);
	if (pat == NULL)
		abort();
	if (nmods > 0) /* Perl's /imsx as PCRE2's inline options */
		snprintf(pat, len + 16, "%s)%.*s", mods, (int)len, p);
	else
		snprintf(pat, len + 16, "%.*s", (int)len, p);
	rc = sy_regex_compile(re_r, opt, pat, error_r);
	free(pat);
	return rc;
}

static void err_line(char *err, size_t size, size_t *len, const char *text)
{
	int n;

	if (*len >= size)
		return;
	n = snprintf(err + *len, size - *len, "%s%s", *len > 0 ? "\n" : "", text);
	if (n > 0)
		*len += (size_t)n;
}

/* One regex option value, Perl m// style, checked: a line in err if bad. */
static void check_regex(const char *opt, const char *value, char *err, size_t size, size_t *len)
{
	struct sy_regex *re;
	const char *error;
	char line[1200];

	if (sy_delete_folder_regex(&re, opt, value, &error) < 0) {
		if (strncmp(error, "--", 2) == 0)
			snprintf(line, sizeof(line), "%s", error);
		else
			snprintf(line, sizeof(line), "%s \"%s\": %s", opt, value, error);
		err_line(err, size, len, line);
	}
	sy_regex_free(&re);
}

int sy_issue8_check(struct sy_run *r, char *err, size_t errsize)
{
	const struct sy_options *o = r->o;
	size_t len = 0;

	err[0] = '\0';
	if (o->delete2foldersonly != NULL)
		check_regex("--delete2foldersonly", o->delete2foldersonly, err, errsize, &len);
	if (o->delete2foldersbutnot != NULL)
		check_regex("--delete2foldersbutnot", o->delete2foldersbutnot, err, errsize, &len);
	for (size_t k = 0; k < o->skipmess.n; k++)
		check_regex("--skipmess", o->skipmess.v[k], err, errsize, &len);
	sy_xform_check(o, err, errsize, &len);
	for (int i = 0; i < 2; i++) {
		const char *s = o->acc[i].search;

		if (s == NULL || s[0] == '\0')
			continue;
		if (sy_options_given(o, SY_OPT_MAXAGE) || sy_options_given(o, SY_OPT_MINAGE))
			sy_out(r,
			       "WARNING: --search%d \"%s\" is given, so --maxage/--minage are "
			       "IGNORED "
			       "on host%d (imapsync does the same); put the age in the search, "
			       "e.g. "
			       "\"SENTSINCE 1-Jan-2024 %s\"",
			       i + 1, s, i + 1, s);
		if (!o->acc[i].abletosearch)
			sy_out(r,
			       "WARNING: --noabletosearch%d: host%d cannot SEARCH, so --search%d "
			       "\"%s\" "
			       "is IGNORED there",
			       i + 1, i + 1, i + 1, s);
	}
	return len > 0 ? -1 : 0;
}
