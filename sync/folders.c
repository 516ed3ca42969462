/*
 * folders.c - the folder plan of a run: list both sides, learn separators
 * and prefixes (NAMESPACE, else guessed as imapsync does), select host1
 * folders (--folder, --include, --exclude, \Noselect), map each to its
 * host2 name, and create and subscribe what host2 lacks.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "imapferry/resp.h"
#include "sync.h"

struct flist {
	char **name;
	unsigned *attrs;
	size_t n, cap;
	char sep;
	int sep_seen;
};

static void flist_add(struct flist *l, const char *name, size_t len, unsigned attrs)
{
	if (l->n == l->cap) {
		l->cap = l->cap ? l->cap * 2 : 32;
		l->name = realloc(l->name, l->cap * sizeof(*l->name));
		l->attrs = realloc(l->attrs, l->cap * sizeof(*l->attrs));
		if (l->name == NULL || l->attrs == NULL)
			abort();
	}
	l->name[l->n] = strndup(name, len);
	if (l->name[l->n] == NULL)
		abort();
	l->attrs[l->n] = attrs;
	l->n++;
}

static void flist_free(struct flist *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->name[i]);
	free(l->name);
	free(l->attrs);
	memset(l, 0, sizeof(*l));
}

static int flist_find(const struct flist *l, const char *name)
{
	for (size_t i = 0; i < l->n; i++) {
		if (strcmp(l->name[i], name) == 0 ||
		    (strcasecmp(name, "INBOX") == 0 && strcasecmp(l->name[i], "INBOX") == 0))
			return (int)i;
	}
	return -1;
}

static void on_list(struct imap_client *cl, const struct imap_msg *msg, void *aux)
{
	struct flist *l = aux;
	struct imap_list_info li;
	const char *err;

	(void)cl;
	if (msg->name == NULL || (strcmp(msg->name, "LIST") != 0 && strcmp(msg->name, "LSUB") != 0))
		return;
	if (imap_list_parse(msg, &li, &err) < 0)
		return;
	if (li.sep != 0 && !l->sep_seen) {
		l->sep = li.sep;
		l->sep_seen = 1;
	}
	flist_add(l, li.name, li.name_len, li.attrs);
}

struct ns {
	char *prefix;
	char sep;
	int found;
};

/* NAMESPACE reply: the first personal namespace (RFC 2342). */
static void on_namespace(struct imap_client *cl, const struct imap_msg *msg, void *aux)
{
	struct ns *ns = aux;
	const struct imap_arg *personal = msg->args, *first;
	const char *p, *sep;
	size_t plen, slen;

	(void)cl;
	if (msg->name == NULL || strcmp(msg->name, "NAMESPACE") != 0 || personal == NULL ||
	    personal->type != IMAP_ARG_LIST || (first = personal->child) == NULL ||
	    first->type != IMAP_ARG_LIST)
		return;
	if (imap_arg_get_astring(first->child, &p, &plen) < 0)
		return;
	ns->prefix = strndup(p, plen);
	if (imap_arg_get_nstring(imap_arg_nth(first->child, 1), &sep, &slen) == 0 && sep != NULL &&
	    slen == 1)
		ns->sep = sep[0];
	ns->found = 1;
}

/* imapsync's guess without NAMESPACE: the most frequent of / . \ wins. */
static char guess_sep(const struct flist *l)
{
	static const char cand[] = "/.\\";
	unsigned cnt[3] = {0, 0, 0};
	int best = 0;

	for (size_t i = 0; i < l->n; i++) {
		for (const char *p = l->name[i]; *p != '\0'; p++) {
			const char *c = strchr(cand, *p);

			if (c != NULL)
				cnt[c - cand]++;
		}
	}
	for (int k = 1; k < 3; k++) {
		if (cnt[k] > cnt[best])
			best = k;
	}
	return cand[best];
}

static int learn_side(struct sy_run *r, int i, struct flist *l)
{
	struct sy_side *s = &r->side[i];
	struct sy_account *a = s->acc;
	struct sy_res res;
	struct ns ns = {NULL, 0, 0};

	if (sy_cmd(r, i, &res, on_list, NULL, l, "LIST \"\" \"*\"") != IMAP_STATUS_OK) {
		sy_error(r, SY_ERR_UNCLASSIFIED, "Host%d: could not list folders: %s", i + 1,
		         res.text);
		return -1;
	}
	if (imap_caps_has(imap_client_caps(s->cl), IMAP_CAP_NAMESPACE))
		sy_cmd(r, i, NULL, on_namespace, NULL, &ns, "NAMESPACE");
	if (a->sep != NULL && a->sep[0] != '\0') {
		s->sep = a->sep[0];
	} else if (ns.found && ns.sep != 0) {
		s->sep = ns.sep;
	} else if (l->sep_seen) {
		s->sep = l->sep;
	} else {
		s->sep = guess_sep(l);
		sy_out(r, "Host%d: No NAMESPACE capability, so using guessed separator [%c]", i + 1,
		       s->sep);
	}
	if (a->prefix != NULL) {
		s->prefix = strdup(a->prefix);
	} else if (ns.found) {
		s->prefix = ns.prefix;
		ns.prefix = NULL;
	} else {
		/* imapsync: INBOX<sep> when every other folder starts with it */
		char guess[3] = {'I', 0, 0};
		int all = l->n > 1;

		snprintf(guess, sizeof(guess), "%s", "");
		for (size_t k = 0; k < l->n && all; k++) {
			if (strcasecmp(l->name[k], "INBOX") != 0 &&
			    (strncmp(l->name[k], "INBOX", 5) != 0 || l->name[k][5] != s->sep))
				all = 0;
		}
		if (all) {
			char p[8];

			snprintf(p, sizeof(p), "INBOX%c", s->sep);
			s->prefix = strdup(p);
		} else {
			s->prefix = strdup(guess);
		}
	}
	free(ns.prefix);
	sy_out(r, "Host%d: separator given by NAMESPACE: [%c] prefix: [%s]", i + 1, s->sep,
	       s->prefix);
	return 0;
}

char *sy_folder_map(const struct sy_run *r, const char *name1)
{
	const struct sy_side *s1 = &r->side[0], *s2 = &r->side[1];
	char sep1 = s1->sep, sep2 = s2->sep;
	size_t plen = strlen(s1->prefix), len;
	const char *rest = name1;
	char *out, *o;

	/* --f1f2 exact mapping wins */
	for (size_t k = 0; k < r->o->f1f2.n; k++) {
		if (strcmp(r->o->f1f2.v[k].key, name1) == 0)
			return strdup(r->o->f1f2.v[k].value);
	}
	if (strcasecmp(name1, "INBOX") == 0 || (plen > 0 && strcmp(name1, s1->prefix) == 0) ||
	    name1[0] == '\0')
		return strdup("INBOX");
	if (plen > 0 && strncmp(name1, s1->prefix, plen) == 0)
		rest = name1 + plen;
	len = strlen(s2->prefix) + strlen(rest);
	out = malloc(len + 1);
	if (out == NULL)
		abort();
	o = out;
	/* INBOX and its children keep no host2 prefix (imapsync) */
	if (!(strncasecmp(rest, "INBOX", 5) == 0 && (rest[5] == '\0' || rest[5] == sep1))) {
		memcpy(o, s2->prefix, strlen(s2->prefix));
		o += strlen(s2->prefix);
	}
	for (const char *p = rest; *p != '\0'; p++) {
		char c = *p;

		if (sep1 != sep2) {
			if (c == sep1)
				c = sep2;
			else if (c == sep2)
				c = sep1;
		}
		/* --fixslash2: a "/" that is not host2's separator becomes "_" */
		if (r->o->fixslash2 && c == '/' && sep1 == '/' && sep2 != '/')
			c = '_';
		*o++ = c;
	}
	*o = '\0';
	return out;
}

/* Perl-compatible unanchored match, as imapsync's --include/--exclude. */
static int regex_any(struct sy_run *r, const struct sy_strlist *l, const char *s, int *bad)
{
	for (size_t k = 0; k < l->n; k++) {
		int errcode;
		PCRE2_SIZE erroff;
		pcre2_code *re = pcre2_compile((PCRE2_SPTR)l->v[k], PCRE2_ZERO_TERMINATED, 0,
		                               &errcode, &erroff, NULL);
		pcre2_match_data *md;
		int m;

		if (re == NULL) {
			PCRE2_UCHAR msg[160];

			pcre2_get_error_message(errcode, msg, sizeof(msg));
			sy_out(r, "Bad regex [%s] at offset %zu: %s", l->v[k], (size_t)erroff,
			       (const char *)msg);
			*bad = 1;
			return 0;
		}
		md = pcre2_match_data_create_from_pattern(re, NULL);
		m = pcre2_match(re, (PCRE2_SPTR)s, strlen(s), 0, 0, md, NULL);
		pcre2_match_data_free(md);
		pcre2_code_free(re);
		if (m >= 0)
			return 1;
	}
	return 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int sy_folders_plan(struct sy_run *r, struct sy_plan *plan)
{
	struct flist l1 = {0}, l2 = {0}, sub1 = {0};
	char **sel;
	size_t nsel = 0;
	int bad = 0, rc = 0;
	struct sy_res res;

	memset(plan, 0, sizeof(*plan));
	if (learn_side(r, 0, &l1) < 0 || learn_side(r, 1, &l2) < 0) {
		rc = -1;
		goto out;
	}
	sy_cmd(r, 0, NULL, on_list, NULL, &sub1, "LSUB \"\" \"*\"");
	sel = calloc(l1.n + r->o->folder.n + 1, sizeof(*sel));
	if (sel == NULL)
		abort();
	if (r->o->folder.n > 0 || r->o->folderrec.n > 0) {
		for (size_t k = 0; k < r->o->folder.n; k++) {
			if (flist_find(&l1, r->o->folder.v[k]) >= 0 || !r->o->checkfoldersexist)
				sel[nsel++] = r->o->folder.v[k];
			else
				sy_out(r, "Host1: folder [%s] does not exist", r->o->folder.v[k]);
		}
	} else {
		for (size_t k = 0; k < l1.n; k++) {
			if (r->o->include.n > 0 && !regex_any(r, &r->o->include, l1.name[k], &bad))
				continue;
			sel[nsel++] = l1.name[k];
		}
	}
	if (bad) {
		free(sel);
		rc = -1;
		goto out;
	}
	qsort(sel, nsel, sizeof(*sel), cmp_str);
	plan->f = calloc(nsel + 1, sizeof(*plan->f));
	if (plan->f == NULL)
		abort();
	for (size_t k = 0; k < nsel; k++) {
		int idx = flist_find(&l1, sel[k]);
		struct sy_folder *f;

		if (r->o->exclude.n > 0 && regex_any(r, &r->o->exclude, sel[k], &bad))
			continue;
		if (idx >= 0 && r->o->checkselectable && (l1.attrs[idx] & IMAP_LIST_NOSELECT))
			continue;
		f = &plan->f[plan->n++];
		f->name1 = strdup(sel[k]);
		f->name2 = sy_folder_map(r, sel[k]);
		f->subscribed1 = flist_find(&sub1, sel[k]) >= 0;
		f->exists2 = flist_find(&l2, f->name2) >= 0;
	}
	free(sel);
	r->folders_total = (unsigned)plan->n;
	sy_out(r, "++++ Listing folders");
	sy_out(r, "Host1: found %zu folders, Host2: found %zu folders", l1.n, l2.n);

	for (size_t k = 0; k < plan->n && !r->stop; k++) {
		struct sy_folder *f = &plan->f[k];

		if (!f->exists2) {
			if (r->o->dry) {
				sy_out(r,
				       "Creating folder [%s] on host2 (not really since --dry "
				       "mode)",
				       f->name2);
			} else {
				sy_out(r, "Creating folder [%s] on host2", f->name2);
				if (sy_cmd(r, 1, &res, NULL, NULL, NULL, "CREATE %m", f->name2) !=
				            IMAP_STATUS_OK &&
				    strcmp(res.code, "ALREADYEXISTS") != 0) {
					sy_error(r, SY_ERR_CREATE,
					         "Host2: Couldn't create folder [%s]: %s", f->name2,
					         res.text);
					continue;
				}
				f->exists2 = 1;
			}
		}
		if ((r->o->subscribe && f->subscribed1) || r->o->subscribeall) {
			if (!r->o->dry)
				sy_cmd(r, 1, NULL, NULL, NULL, NULL, "SUBSCRIBE %m", f->name2);
		}
	}
out:
	flist_free(&l1);
	flist_free(&l2);
	flist_free(&sub1);
	return rc;
}

void sy_plan_free(struct sy_plan *plan)
{
	for (size_t k = 0; k < plan->n; k++) {
		free(plan->f[k].name1);
		free(plan->f[k].name2);
	}
	free(plan->f);
	memset(plan, 0, sizeof(*plan));
}
