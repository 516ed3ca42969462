/* debugcat.c - printers of the debug categories; see debugcat.h */
#include "debugcat.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>

#include "imapferry/client.h"
#include "imapferry/log.h"
#include "msgs.h"

#define CONTENT_MAX (64u << 10) /* --debugcontent prints at most this much */

extern char **environ;

/* A variable whose value could be a credential. */
static int secret_name(const char *name, size_t len)
{
	static const char *const words[] = {"PASS", "TOKEN",  "SECRET",    "KEY",
	                                    "AUTH", "COOKIE", "CREDENTIAL"};

	for (size_t w = 0; w < sizeof(words) / sizeof(words[0]); w++) {
		size_t wl = strlen(words[w]);

		for (size_t i = 0; i + wl <= len; i++) {
			if (strncasecmp(name + i, words[w], wl) == 0)
				return 1;
		}
	}
	return 0;
}

static int str_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

void sy_debug_env(struct sy_run *r)
{
	size_t n = 0;
	char **v;

	if (!r->o->debugenv)
		return;
	while (environ[n] != NULL)
		n++;
	v = malloc((n + 1) * sizeof(*v));
	if (v == NULL)
		abort();
	memcpy(v, environ, n * sizeof(*v));
	qsort(v, n, sizeof(*v), str_cmp);
	sy_out(r, "debugenv: %zu environment variables", n);
	for (size_t i = 0; i < n; i++) {
		const char *eq = strchr(v[i], '=');
		size_t nl = eq != NULL ? (size_t)(eq - v[i]) : strlen(v[i]);
		char val[512];

		if (eq != NULL && secret_name(v[i], nl) && !r->o->showpasswords)
			sy_out(r, "debugenv: %.*s=MASKED", (int)nl, v[i]);
		else
			sy_out(r, "debugenv: %.*s=%s", (int)nl, v[i],
			       eq != NULL
			               ? log_sanitize(val, sizeof(val), eq + 1, strlen(eq + 1), 400)
			               : "");
	}
	free(v);
}

void sy_debug_memory(struct sy_run *r, const char *what)
{
	char line[256], rss[64] = "?", hwm[64] = "?";
	FILE *fp;

	if (!r->o->debugmemory)
		return;
	fp = fopen("/proc/self/status", "r");
	if (fp != NULL) {
		while (fgets(line, sizeof(line), fp) != NULL) {
			line[strcspn(line, "\n")] = '\0';
			if (strncmp(line, "VmRSS:", 6) == 0)
				snprintf(rss, sizeof(rss), "%s",
				         line + 6 + strspn(line + 6, " \t"));
			else if (strncmp(line, "VmHWM:", 6) == 0)
				snprintf(hwm, sizeof(hwm), "%s",
				         line + 6 + strspn(line + 6, " \t"));
		}
		fclose(fp);
	}
	sy_out(r, "debugmemory: after %s: memory used %s (peak %s)", what, rss, hwm);
}

void sy_debug_content(struct sy_run *r, const char *folder, uint32_t uid, struct evbuffer *body)
{
	size_t len, show;
	const unsigned char *p;
	struct evbuffer *out;

	if (!r->o->debugcontent)
		return;
	len = evbuffer_get_length(body);
	show = len < CONTENT_MAX ? len : CONTENT_MAX;
	p = evbuffer_pullup(body, (ev_ssize_t)show);
	out = evbuffer_new();
	if (out == NULL || (show > 0 && p == NULL))
		abort();
	for (size_t i = 0; i < show; i++) {
		if (p[i] < 0x20 && p[i] != '\r' && p[i] != '\n' && p[i] != '\t')
			evbuffer_add_printf(out, "\\x%02x", p[i]);
		else if (p[i] != '\r')
			evbuffer_add(out, p + i, 1);
	}
	evbuffer_add(out, "", 1);
	sy_out(r, "debugcontent: msg %s/%u, %zu bytes%s:\n%s", folder, uid, len,
	       show < len ? " (the first 64 KiB)" : "", (const char *)evbuffer_pullup(out, -1));
	evbuffer_free(out);
}

struct list_print {
	struct sy_run *r;
	int n;
};

static void on_list(struct imap_client *cl, const struct imap_msg *msg, void *aux)
{
	struct list_print *lp = aux;
	const struct imap_arg *a = msg->args;
	char flags[300] = "", sep[16] = "NIL", name[600] = "";
	size_t len = 0;

	(void)cl;
	if (msg->name == NULL || strcmp(msg->name, "LIST") != 0 || a == NULL)
		return;
	if (a->type == IMAP_ARG_LIST) {
		for (const struct imap_arg *f = a->child; f != NULL && len < sizeof(flags) - 1;
		     f = f->next) {
			int n = snprintf(flags + len, sizeof(flags) - len, "%s%s",
			                 len > 0 ? " " : "", f->str != NULL ? f->str : "?");

			len += n > 0 ? (size_t)n : 0;
		}
	}
	if ((a = a->next) != NULL && a->str != NULL)
		log_sanitize(sep, sizeof(sep), a->str, a->len, 4);
	if (a != NULL && (a = a->next) != NULL && a->str != NULL)
		log_sanitize(name, sizeof(name), a->str, a->len, 500);
	sy_out(lp->r, "debuglist: Host%d: (%s) \"%s\" %s", lp->n, flags, sep, name);
}

void sy_debug_folders(struct sy_run *r, const struct sy_plan *plan)
{
	if (r->o->debuglist) {
		for (int i = 0; i < 2; i++) {
			struct list_print lp = {r, i + 1};
			struct sy_res res;

			if (r->side[i].cl == NULL)
				continue;
			if (sy_cmd(r, i, &res, on_list, NULL, &lp, "LIST \"\" \"*\"") !=
			    IMAP_STATUS_OK)
				sy_out(r, "debuglist: Host%d: LIST failed: %s", i + 1, res.text);
		}
	}
	if (!r->o->debugfolders)
		return;
	sy_out(r, "debugfolders: %zu host1 folders in the plan", plan->n);
	for (size_t k = 0; k < plan->n; k++) {
		const struct sy_folder *f = &plan->f[k];

		sy_out(r, "debugfolders: [%s] -> [%s]%s%s%s", f->name1, f->name2,
		       f->subscribed1 ? " subscribed on host1" : "",
		       f->exists2 ? " exists on host2" : " missing on host2",
		       f->skip ? " skipped" : "");
	}
}

static void status_text(char *buf, size_t size, const struct sy_fstatus *s)
{
	if (!s->valid)
		snprintf(buf, size, "unknown");
	else if (s->has_modseq)
		snprintf(buf, size, "UIDVALIDITY %u UIDNEXT %u MESSAGES %u HIGHESTMODSEQ %llu",
		         s->uidvalidity, s->uidnext, s->messages,
		         (unsigned long long)s->highestmodseq);
	else
		snprintf(buf, size, "UIDVALIDITY %u UIDNEXT %u MESSAGES %u", s->uidvalidity,
		         s->uidnext, s->messages);
}

void sy_debug_cache(struct sy_run *r, const char *name1, const struct sy_fstatus now[2],
                    const struct sy_fstatus *was, const char *decision)
{
	char a[160], b[160];

	if (!r->o->debugcache)
		return;
	if (now != NULL) {
		status_text(a, sizeof(a), &now[0]);
		status_text(b, sizeof(b), &now[1]);
		sy_out(r, "debugcache: [%s] now: host1 %s; host2 %s", name1, a, b);
	}
	if (was != NULL) {
		status_text(a, sizeof(a), &was[0]);
		status_text(b, sizeof(b), &was[1]);
		sy_out(r, "debugcache: [%s] state: host1 %s; host2 %s", name1, a, b);
	}
	sy_out(r, "debugcache: [%s] %s", name1, decision);
}
