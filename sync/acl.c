/* acl.c - see acl.h. */
#include "acl.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "imapferry/parse.h"
#include "imapferry/resp.h"
#include "msgs.h"
#include "imapferry/xalloc.h"

#define ACL_RFC2086 "lrswipcda" /* rights every ACL server knows */
#define ACL_CMD_MAX 2048        /* one SETACL command line */

/* --- pure parts --- */

int sy_acl_known_rights(const char *caps, char *out, size_t size)
{
	const char *p = caps;
	int acl = 0;

	if (size > 0)
		out[0] = '\0';
	while (p != NULL && *p != '\0') {
		size_t len;

		p += strspn(p, " ");
		len = strcspn(p, " ");
		if (len == 3 && strncasecmp(p, "ACL", 3) == 0)
			acl = 1;
		p += len;
	}
	if (!acl || size < 32)
		return 0;
	snprintf(out, size, "%s", ACL_RFC2086);
	for (p = caps; *p != '\0';) {
		size_t len;

		p += strspn(p, " ");
		len = strcspn(p, " ");
		if (len > 7 && strncasecmp(p, "RIGHTS=", 7) == 0) {
			for (size_t i = 7; i < len; i++) {
				size_t n = strlen(out);

				if (strchr(out, p[i]) == NULL && n + 1 < size) {
					out[n] = p[i];
					out[n + 1] = '\0';
				}
			}
		}
		p += len;
	}
	return 1;
}

static void add_right(char *s, size_t size, char c)
{
	size_t n = strlen(s);

	if (strchr(s, c) == NULL && n + 1 < size) {
		s[n] = c;
		s[n + 1] = '\0';
	}
}

void sy_acl_rights_for(const char *rights1, const char *known2, char *out, size_t size,
                       char *dropped, size_t dsize)
{
	int rfc2086 = strchr(known2, 'k') == NULL && strchr(known2, 'x') == NULL;

	out[0] = '\0';
	if (dropped != NULL && dsize > 0)
		dropped[0] = '\0';
	for (const char *p = rights1; *p != '\0'; p++) {
		char c = *p;

		if (rfc2086 && (c == 'k' || c == 'x'))
			c = 'c';
		else if (rfc2086 && (c == 't' || c == 'e'))
			c = 'd';
		if (strchr(known2, c) != NULL)
			add_right(out, size, c);
		else if (dropped != NULL)
			add_right(dropped, dsize, *p);
	}
}

int sy_acl_rights_equal(const char *a, const char *b)
{
	for (const char *p = a; *p != '\0'; p++) {
		if (strchr(b, *p) == NULL)
			return 0;
	}
	for (const char *p = b; *p != '\0'; p++) {
		if (strchr(a, *p) == NULL)
			return 0;
	}
	return 1;
}

int sy_acl_parse(const struct imap_msg *msg, struct sy_acl *acl)
{
	const struct imap_arg *a;

	if (msg->kind != IMAP_MSG_UNTAGGED || msg->name == NULL || strcmp(msg->name, "ACL") != 0 ||
	    msg->args == NULL)
		return -1;
	for (a = msg->args->next; a != NULL && a->next != NULL; a = a->next->next) {
		const char *id, *rights;
		size_t il, rl;
		struct sy_acl_entry *v;

		if (imap_arg_get_astring(a, &id, &il) < 0 ||
		    imap_arg_get_astring(a->next, &rights, &rl) < 0)
			return -1;
		v = realloc(acl->v, (acl->n + 1) * sizeof(*v));
		if (v == NULL)
			abort();
		acl->v = v;
		v[acl->n].id = xstrdup(id);
		v[acl->n].rights = xstrdup(rights);
		acl->n++;
	}
	return 0;
}

void sy_acl_free(struct sy_acl *acl)
{
	for (size_t i = 0; i < acl->n; i++) {
		free(acl->v[i].id);
		free(acl->v[i].rights);
	}
	free(acl->v);
	acl->v = NULL;
	acl->n = 0;
}

/* s as an IMAP astring: an atom when it can be one, else quoted; -1 when
 * it cannot be quoted (CR, LF, NUL, 8-bit) or does not fit. */
static int astring(char *out, size_t size, const char *s)
{
	size_t n = 0;
	int atom = s[0] != '\0';

	for (const char *p = s; *p != '\0'; p++) {
		unsigned char c = (unsigned char)*p;

		if (c == '\r' || c == '\n' || c >= 0x80)
			return -1;
		if (c <= ' ' || c == 0x7f || strchr("(){%*\"\\]", c) != NULL)
			atom = 0;
	}
	if (atom)
		return snprintf(out, size, "%s", s) < (int)size ? 0 : -1;
	if (size < 3)
		return -1;
	out[n++] = '"';
	for (const char *p = s; *p != '\0'; p++) {
		if (n + 3 >= size)
			return -1;
		if (*p == '"' || *p == '\\')
			out[n++] = '\\';
		out[n++] = *p;
	}
	out[n++] = '"';
	out[n] = '\0';
	return 0;
}

static void note_add(char *notes, size_t nsize, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

static void note_add(char *notes, size_t nsize, const char *fmt, ...)
{
	size_t n;
	va_list ap;

	if (notes == NULL || nsize == 0)
		return;
	n = strlen(notes);
	if (n > 0 && n + 1 < nsize)
		notes[n++] = '\n';
	va_start(ap, fmt);
	vsnprintf(notes + n, nsize - n, fmt, ap);
	va_end(ap);
}

int sy_acl_commands(const struct sy_acl *acl1, const struct sy_acl *acl2, const char *known2,
                    const char *mailbox2, const char *user1, const char *user2, char **cmds_r,
                    size_t *ncmds_r, char *notes, size_t nsize)
{
	char *cmds = NULL, box[1024], idq[512], rq[64], line[ACL_CMD_MAX];
	size_t len = 0, n = 0;

	*cmds_r = NULL;
	*ncmds_r = 0;
	if (notes != NULL && nsize > 0)
		notes[0] = '\0';
	if (strcasecmp(mailbox2, "INBOX") == 0)
		snprintf(box, sizeof(box), "INBOX");
	else if (astring(box, sizeof(box), mailbox2) < 0)
		return 0; /* not sayable in a quoted string: left alone */
	for (size_t i = 0; i < acl1->n; i++) {
		const char *id = acl1->v[i].id, *have = NULL;
		char rights[64], dropped[64];
		int w;

		/* the owner's own entry belongs to user2 on host2 */
		if (user1 != NULL && user2 != NULL && strcmp(id, user1) == 0)
			id = user2;
		sy_acl_rights_for(acl1->v[i].rights, known2, rights, sizeof(rights), dropped,
		                  sizeof(dropped));
		if (dropped[0] != '\0')
			note_add(notes, nsize,
			         "ACL of %s on %s: rights \"%s\" unknown to host2, left out", id,
			         mailbox2, dropped);
		for (size_t j = 0; acl2 != NULL && j < acl2->n; j++) {
			if (strcmp(acl2->v[j].id, id) == 0)
				have = acl2->v[j].rights;
		}
		if (have != NULL && sy_acl_rights_equal(have, rights))
			continue;
		if (astring(idq, sizeof(idq), id) < 0)
			continue;
		if (rights[0] == '\0')
			snprintf(rq, sizeof(rq), "\"\"");
		else if (astring(rq, sizeof(rq), rights) < 0)
			continue;
		w = snprintf(line, sizeof(line), "SETACL %s %s %s", box, idq, rq);
		if (w < 0 || (size_t)w >= sizeof(line))
			continue;
		{
			char *nc = realloc(cmds, len + (size_t)w + 1);

			if (nc == NULL) {
				free(cmds);
				return -1;
			}
			cmds = nc;
		}
		memcpy(cmds + len, line, (size_t)w + 1);
		len += (size_t)w + 1;
		n++;
	}
	*cmds_r = cmds;
	*ncmds_r = n;
	return 0;
}

int sy_labels_for(const char *const *labels1, size_t count, const char *folder1,
                  sy_label_map_fn *map, void *aux, char *out, size_t size)
{
	size_t len = 0;
	int n = 0;

	if (size < 3)
		return -1;
	out[len++] = '(';
	for (size_t i = 0; i < count; i++) {
		const char *l = labels1[i];
		char *mapped = NULL, q[1024];
		const char *use = l;
		int rc;

		if (l[0] == '\\') {
			/* system labels: the copy keeps "important", "starred",
			 * and "in the inbox" unless it is the inbox's copy */
			if (strcasecmp(l, "\\Important") != 0 && strcasecmp(l, "\\Starred") != 0 &&
			    (strcasecmp(l, "\\Inbox") != 0 || strcasecmp(folder1, "INBOX") == 0))
				continue;
		} else {
			if (strcmp(l, folder1) == 0)
				continue; /* the folder the copy is in */
			if (map != NULL && (mapped = map(aux, l)) != NULL)
				use = mapped;
		}
		rc = l[0] == '\\' ? snprintf(q, sizeof(q), "%s", use) < (int)sizeof(q) ? 0 : -1
		                  : astring(q, sizeof(q), use);
		free(mapped);
		if (rc < 0)
			continue;
		if (len + strlen(q) + 3 > size)
			return -1;
		len += (size_t)snprintf(out + len, size - len, "%s%s", n > 0 ? " " : "", q);
		n++;
	}
	out[len++] = ')';
	out[len] = '\0';
	return n;
}

int sy_labels_store_cmd(unsigned uid, const char *list, int replace, char *out, size_t size)
{
	int w = snprintf(out, size, "UID STORE %u %sX-GM-LABELS.SILENT %s", uid, replace ? "" : "+",
	                 list);

	return w < 0 || (size_t)w >= size ? -1 : w;
}

/* --- the run --- */

struct caps_text {
	char text[2048];
};

static void on_capability(struct imap_client *cl, const struct imap_msg *msg, void *aux)
{
	struct caps_text *c = aux;
	size_t len = 0;

	(void)cl;
	if (msg->name == NULL || strcmp(msg->name, "CAPABILITY") != 0)
		return;
	for (const struct imap_arg *a = msg->args; a != NULL; a = a->next) {
		if (a->type == IMAP_ARG_ATOM && len + a->len + 2 < sizeof(c->text))
			len += (size_t)snprintf(c->text + len, sizeof(c->text) - len, "%s%s",
			                        len > 0 ? " " : "", a->str);
	}
}

static void on_acl(struct imap_client *cl, const struct imap_msg *msg, void *aux)
{
	(void)cl;
	(void)sy_acl_parse(msg, aux);
}

void sy_acl_sync(struct sy_run *r, const struct sy_plan *plan)
{
	struct caps_text c1, c2;
	char known1[64], known2[64];
	struct sy_res res;
	size_t sets = 0;

	if (!r->o->syncacls)
		return;
	memset(&c1, 0, sizeof(c1));
	memset(&c2, 0, sizeof(c2));
	sy_cmd(r, 0, &res, on_capability, NULL, &c1, "CAPABILITY");
	sy_cmd(r, 1, &res, on_capability, NULL, &c2, "CAPABILITY");
	if (!sy_acl_known_rights(c1.text, known1, sizeof(known1)) ||
	    !sy_acl_known_rights(c2.text, known2, sizeof(known2))) {
		sy_out(r, "--syncacls: host%s no ACL capability (RFC 4314): ACLs not synced",
		       !sy_acl_known_rights(c1.text, known1, sizeof(known1)) ? "1 has" : "2 has");
		return;
	}
	sy_out(r, "--syncacls: host2 knows the rights \"%s\"", known2);
	for (size_t k = 0; k < plan->n && !r->stop; k++) {
		const struct sy_folder *f = &plan->f[k];
		struct sy_acl a1 = {NULL, 0}, a2 = {NULL, 0};
		char *cmds = NULL, notes[1024];
		size_t n = 0;

		if (f->skip || (!f->exists2 && !r->o->dry))
			continue;
		if (sy_cmd(r, 0, &res, on_acl, NULL, &a1, "GETACL %m", f->name1) !=
		    IMAP_STATUS_OK) {
			sy_out(r, "Host1 folder %s: could not GETACL: %s", f->name1, res.text);
			sy_acl_free(&a1);
			continue;
		}
		if (f->exists2 &&
		    sy_cmd(r, 1, &res, on_acl, NULL, &a2, "GETACL %m", f->name2) != IMAP_STATUS_OK)
			sy_out(r, "Host2 folder %s: could not GETACL: %s", f->name2, res.text);
		if (sy_acl_commands(&a1, &a2, known2, f->name2, r->o->acc[0].user,
		                    r->o->acc[1].user, &cmds, &n, notes, sizeof(notes)) < 0)
			abort();
		if (notes[0] != '\0')
			sy_out(r, "%s", notes);
		for (size_t i = 0, off = 0; i < n; i++) {
			const char *cmd = cmds + off;

			off += strlen(cmd) + 1;
			if (r->o->dry) {
				sy_out(r, "Host2: %s (not really since --dry mode)", cmd);
				continue;
			}
			if (sy_cmd(r, 1, &res, NULL, NULL, NULL, "%a", cmd) != IMAP_STATUS_OK)
				sy_error(r, SY_ERR_UNCLASSIFIED, "Host2: %s failed: %s", cmd,
				         res.text);
			else {
				sy_out(r, "Host2: %s", cmd);
				sets++;
			}
		}
		free(cmds);
		sy_acl_free(&a1);
		sy_acl_free(&a2);
	}
	sy_out(r, "--syncacls: %zu ACL entr%s set on host2", sets, sets == 1 ? "y" : "ies");
}

int sy_labels_usable(struct sy_run *r)
{
	int has[2];

	if (!r->o->synclabels && !r->o->resynclabels)
		return 0;
	for (int i = 0; i < 2; i++)
		has[i] = r->side[i].cl != NULL &&
		         imap_caps_has(imap_client_caps(r->side[i].cl), IMAP_CAP_X_GM_EXT_1);
	if (has[0] && has[1])
		return 1;
	sy_out(r,
	       "Info: --synclabels/--resynclabels turned off: host%s not announce X-GM-EXT-1 "
	       "(Gmail labels); asking for X-GM-LABELS would fail there",
	       !has[0] && !has[1] ? "1 and host2 do"
	       : !has[0]          ? "1 does"
	                          : "2 does");
	r->o->synclabels = 0;
	r->o->resynclabels = 0;
	return 0;
}

/* --- Gmail labels of a folder pass --- */

struct lab {
	uint32_t uid;
	char **v;
	size_t n;
};

struct labs {
	struct lab *v;
	size_t n;
};

static void on_labels(struct imap_client *cl, const struct imap_msg *msg, void *aux)
{
	struct labs *l = aux;
	const struct imap_arg *items, *list;
	struct lab *e;
	uint32_t uid;

	(void)cl;
	if (imap_fetch_items(msg, &items) < 0 ||
	    imap_arg_get_u32(imap_fetch_get(items, "UID"), &uid) < 0 ||
	    (list = imap_fetch_get(items, "X-GM-LABELS")) == NULL || list->type != IMAP_ARG_LIST)
		return;
	e = realloc(l->v, (l->n + 1) * sizeof(*e));
	if (e == NULL)
		abort();
	l->v = e;
	e = &l->v[l->n++];
	e->uid = uid;
	e->v = xcalloc(list->count + 1, sizeof(*e->v));
	e->n = 0;
	for (const struct imap_arg *a = list->child; a != NULL; a = a->next) {
		const char *s;
		size_t len;

		if (imap_arg_get_astring(a, &s, &len) == 0)
			e->v[e->n++] = xstrdup(s);
	}
}

static void labs_free(struct labs *l)
{
	for (size_t i = 0; i < l->n; i++) {
		for (size_t j = 0; j < l->v[i].n; j++)
			free(l->v[i].v[j]);
		free(l->v[i].v);
	}
	free(l->v);
	l->v = NULL;
	l->n = 0;
}

static const struct lab *labs_find(const struct labs *l, uint32_t uid)
{
	for (size_t i = 0; i < l->n; i++) {
		if (l->v[i].uid == uid)
			return &l->v[i];
	}
	return NULL;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static char *label_map(void *aux, const char *name1)
{
	return sy_folder_map(aux, name1);
}

/* UID FETCH (X-GM-LABELS) of uids (ascending) on side i into l. */
static int labels_fetch(struct sy_run *r, int i, const uint32_t *uids, size_t n, struct labs *l)
{
	size_t pos = 0;
	struct sy_res res;

	while (pos < n) {
		char set[4096];

		sy_uid_set(set, sizeof(set), uids, n, &pos);
		if (sy_cmd(r, i, &res, on_labels, NULL, l, "UID FETCH %a (UID X-GM-LABELS)", set) !=
		    IMAP_STATUS_OK) {
			sy_error(r, SY_ERR_FLAGS, "Host%d: could not fetch X-GM-LABELS: %s", i + 1,
			         res.text);
			return -1;
		}
	}
	for (size_t k = 0; k < l->n; k++)
		qsort(l->v[k].v, l->v[k].n, sizeof(char *), cmp_str);
	return 0;
}

void sy_labels_folder(struct sy_run *r, const struct sy_folder *f, const struct sy_msgs *m1,
                      const struct sy_msgs *m2)
{
	uint32_t *u1 = xcalloc(m1->n + 1, sizeof(*u1)), *u2 = xcalloc(m1->n + 1, sizeof(*u2));
	size_t n1 = 0, n2 = 0, stored = 0;
	struct labs l1 = {NULL, 0}, l2 = {NULL, 0};

	if (!r->o->synclabels && !r->o->resynclabels)
		goto out;
	for (int i = 0; i < 2; i++) {
		/* never ask a server without Gmail's extension (another caller
		 * than the one-shot run may not have called sy_labels_usable()) */
		if (r->side[i].cl == NULL ||
		    !imap_caps_has(imap_client_caps(r->side[i].cl), IMAP_CAP_X_GM_EXT_1))
			goto out;
	}
	for (size_t k = 0; k < m1->n; k++) {
		const struct sy_msg *e = &m1->v[k];

		if (r->o->synclabels && e->match == -1 && e->uid2 != 0)
			u1[n1++] = e->uid;
		else if (r->o->resynclabels && e->match > 0) {
			u1[n1++] = e->uid;
			u2[n2++] = m2->v[e->match - 1].uid;
		}
	}
	if (n1 == 0)
		goto out;
	qsort(u2, n2, sizeof(*u2), sy_u32_cmp);
	if (labels_fetch(r, 0, u1, n1, &l1) < 0 || (n2 > 0 && labels_fetch(r, 1, u2, n2, &l2) < 0))
		goto out;
	for (size_t k = 0; k < m1->n; k++) {
		const struct sy_msg *e = &m1->v[k];
		const struct lab *a = labs_find(&l1, e->uid), *b;
		uint32_t uid2 = e->match > 0 ? m2->v[e->match - 1].uid : e->uid2;
		char want[4096], have[4096], cmd[4200];

		if (a == NULL || uid2 == 0 || (e->match != -1 && e->match <= 0))
			continue;
		if (sy_labels_for((const char *const *)a->v, a->n, f->name1, label_map, r, want,
		                  sizeof(want)) <= 0)
			continue;
		b = e->match > 0 ? labs_find(&l2, uid2) : NULL;
		if (b != NULL &&
		    sy_labels_for((const char *const *)b->v, b->n, f->name2, NULL, NULL, have,
		                  sizeof(have)) >= 0 &&
		    strcmp(want, have) == 0)
			continue;
		if (sy_labels_store_cmd(uid2, want, 0, cmd, sizeof(cmd)) < 0)
			continue;
		if (r->o->dry) {
			sy_out(r, "Host2: %s/%u labels %s (not really since --dry mode)", f->name2,
			       uid2, want);
			continue;
		}
		if (r->o->debuglabels)
			sy_out(r, "Host2: %s/%u labels %s", f->name2, uid2, want);
		{
			struct sy_res res;

			if (sy_cmd(r, 1, &res, NULL, NULL, NULL, "%a", cmd) != IMAP_STATUS_OK)
				sy_error(r, SY_ERR_FLAGS,
				         "Host2: %s/%u: could not set labels %s: %s", f->name2,
				         uid2, want, res.text);
			else
				stored++;
		}
	}
	if (stored > 0)
		sy_out(r, "Host2 folder %s: labels set on %zu messages", f->name2, stored);
out:
	labs_free(&l1);
	labs_free(&l2);
	free(u1);
	free(u2);
}
