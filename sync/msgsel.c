/* msgsel.c - see msgsel.h. */
#include "msgsel.h"
#include "xform.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>

#include "delete.h"
#include "imapferry/resp.h"
#include "regex.h"

int sy_select_window_active(const struct sy_options *o)
{
	return sy_options_given(o, SY_OPT_MAXAGE) || sy_options_given(o, SY_OPT_MINAGE) ||
	       (o->acc[0].search != NULL && o->acc[0].search[0] != '\0') ||
	       (o->acc[1].search != NULL && o->acc[1].search[0] != '\0');
}

void sy_select_check_search(struct sy_run *r)
{
	struct sy_options *o = r->o;
	int bad = 0;

	if (!o->checknoabletosearch ||
	    (!sy_options_given(o, SY_OPT_MAXAGE) && !sy_options_given(o, SY_OPT_MINAGE)))
		return;
	for (int i = 0; i < 2 && !bad; i++) {
		struct sy_msgs m;
		struct sy_uids u = {NULL, 0, 0};
		struct sy_res res;

		if (!o->acc[i].abletosearch || (o->acc[i].search != NULL && o->acc[i].search[0]))
			continue; /* no SEARCH anyway, or --searchN replaces the ages */
		memset(&m, 0, sizeof(m));
		m.r = r;
		m.side = i;
		if (sy_cmd(r, i, &res, sy_on_select, NULL, &m, "EXAMINE INBOX") == IMAP_STATUS_OK &&
		    sy_cmd(r, i, &res, sy_on_search, NULL, &u, "UID SEARCH ALL") ==
		            IMAP_STATUS_OK &&
		    u.n != m.exists) {
			sy_out(r, "Host%d: INBOX has %u messages but SEARCH ALL found %zu", i + 1,
			       m.exists, u.n);
			bad = 1;
		}
		sy_uids_free(&u);
		sy_msgs_free(&m);
	}
	if (!bad)
		return;
	sy_out(r, "At least one account can not SEARCH ALL. So acting like --noabletosearch");
	o->acc[0].abletosearch = 0;
	o->acc[1].abletosearch = 0;
}

/* "dd-Mon-yyyy" of now - days, local time (imapsync's day granularity). */
static void search_date(char *buf, size_t size, double days)
{
	static const char *const mon[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
	                                  "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
	time_t t = time(NULL) - (time_t)(days * 86400.0);
	struct tm tm;

	localtime_r(&t, &tm);
	snprintf(buf, size, "%02d-%s-%04d", tm.tm_mday, mon[tm.tm_mon], tm.tm_year + 1900);
}

/* The SEARCH criteria of side i, or NULL for none: --searchN as given, else
 * the age window (imapsync: minage <= maxage is the intersection, else the
 * union). */
static char *criteria(const struct sy_options *o, int i)
{
	const char *s = o->acc[i].search;
	int max = sy_options_given(o, SY_OPT_MAXAGE), min = sy_options_given(o, SY_OPT_MINAGE);
	char a[16], b[16], *out = malloc(128);

	if (out == NULL)
		abort();
	if (s != NULL && s[0] != '\0') {
		free(out);
		out = strdup(s);
		if (out == NULL)
			abort();
		return out;
	}
	search_date(a, sizeof(a), o->maxage);
	search_date(b, sizeof(b), o->minage);
	if (max && min)
		snprintf(out, 128,
		         o->minage <= o->maxage ? "SENTSINCE %s SENTBEFORE %s"
		                                : "OR SENTSINCE %s SENTBEFORE %s",
		         a, b);
	else if (max)
		snprintf(out, 128, "SENTSINCE %s", a);
	else if (min)
		snprintf(out, 128, "SENTBEFORE %s", b);
	else {
		free(out);
		out = NULL;
	}
	return out;
}

/* Age of an INTERNALDATE in days, or -1 when unreadable. */
static double idate_age(const char *idate, time_t now)
{
	time_t t;
	int tz;

	if (idate == NULL || imap_date_time_parse(idate, strlen(idate), &t, &tz) < 0)
		return -1;
	return (double)(now - t) / 86400.0;
}

static int in_age_window(const struct sy_options *o, double age)
{
	int max = sy_options_given(o, SY_OPT_MAXAGE), min = sy_options_given(o, SY_OPT_MINAGE);
	int young = age <= o->maxage, old = age >= o->minage;

	if (age < 0)
		return 1; /* no date: kept, as a SEARCH without Date: would not */
	if (max && min)
		return o->minage <= o->maxage ? young && old : young || old;
	return max ? young : min ? old : 1;
}

static void drop(struct sy_msgs *m, const uint8_t *keep)
{
	size_t w = 0;

	for (size_t k = 0; k < m->n; k++) {
		if (keep[k]) {
			m->v[w++] = m->v[k];
		} else {
			free(m->v[k].flags);
			free(m->v[k].idate);
			free(m->v[k].hdate);
		}
	}
	m->n = w;
}

int sy_select_window(struct sy_run *r, int i, const struct sy_folder *f, struct sy_msgs *m)
{
	const struct sy_options *o = r->o;
	char *crit;
	uint8_t *keep;
	struct sy_uids u = {0};
	struct sy_res res;

	if (!sy_select_window_active(o) || m->n == 0)
		return 0;
	keep = calloc(m->n + 1, 1);
	if (keep == NULL)
		abort();
	if (!o->acc[i].abletosearch) {
		/* --noabletosearchN: ages from INTERNALDATE, no SEARCH (a --search
		 * cannot be honoured then; said at start-up) */
		time_t now = time(NULL);

		for (size_t k = 0; k < m->n; k++)
			keep[k] = (uint8_t)in_age_window(o, idate_age(m->v[k].idate, now));
		drop(m, keep);
		free(keep);
		return 0;
	}
	crit = criteria(o, i);
	if (crit == NULL) {
		free(keep);
		return 0;
	}
	if (sy_cmd(r, i, &res, sy_on_search, NULL, &u, "UID SEARCH %a", crit) != IMAP_STATUS_OK) {
		sy_error(r, i == 0 ? SY_ERR_FETCH : SY_ERR_UNCLASSIFIED,
		         "Host%d folder %s: UID SEARCH %s failed: %s", i + 1,
		         i == 0 ? f->name1 : f->name2, crit, res.text);
		free(crit);
		free(keep);
		free(u.v);
		return -1;
	}
	sy_uids_sort(&u);
	for (size_t k = 0; k < m->n; k++)
		keep[k] = sy_uids_has(&u, m->v[k].uid);
	drop(m, keep);
	free(crit);
	free(keep);
	free(u.v);
	return 0;
}

unsigned long long sy_select_maxsize(const struct sy_run *r)
{
	const struct sy_options *o = r->o;
	unsigned long long max = sy_options_given(o, SY_OPT_MAXSIZE) && o->maxsize > 0
	                                 ? (unsigned long long)o->maxsize
	                                 : 0;
	unsigned long long lim = 0;

	if (sy_options_given(o, SY_OPT_APPENDLIMIT))
		lim = o->appendlimit > 0 ? (unsigned long long)o->appendlimit : 0;
	else if (r->side[1].cl != NULL)
		lim = imap_client_caps(r->side[1].cl)->appendlimit;
	if (lim > 0 && (max == 0 || lim < max))
		max = lim;
	return max;
}

void sy_select_sizes(struct sy_run *r, const struct sy_folder *f, struct sy_msgs *m1)
{
	unsigned long long max = sy_select_maxsize(r);
	long long min = sy_options_given(r->o, SY_OPT_MINSIZE) ? r->o->minsize : 0;

	if (max == 0 && min <= 0)
		return;
	for (size_t k = 0; k < m1->n; k++) {
		struct sy_msg *e = &m1->v[k];

		if (!e->haskey || e->dup || e->match || e->skip)
			continue;
		if (max > 0 && e->size > max)
			sy_msgline(r, "msg %s/%u skipped (%u exceeds maxsize limit %llu bytes)",
			           f->name1, e->uid, e->size, max);
		else if (min > 0 && (long long)e->size <= min)
			sy_msgline(r, "msg %s/%u skipped (%u is not over minsize limit %lld bytes)",
			           f->name1, e->uid, e->size, min);
		else
			continue;
		e->skip = 1;
		r->skipped++;
		r->bytes_skipped += e->size;
	}
}

int sy_select_needs_body(const struct sy_options *o)
{
	return o->skipmess.n > 0 || sy_options_given(o, SY_OPT_MAXLINELENGTH) ||
	       sy_options_given(o, SY_OPT_MINMAXLINELENGTH);
}

static size_t longest_line(const char *s, size_t len)
{
	size_t best = 0, cur = 0;

	for (size_t k = 0; k < len; k++) {
		if (s[k] == '\n') {
			best = cur > best ? cur : best;
			cur = 0;
		} else if (s[k] != '\r') {
			cur++;
		}
	}
	return cur > best ? cur : best;
}

static void skipped(struct sy_run *r, struct sy_msg *e)
{
	e->skip = 1;
	r->skipped++;
	r->bytes_skipped += e->size;
}

int sy_select_body(struct sy_run *r, const struct sy_folder *f, struct sy_msg *e,
                   struct evbuffer *body)
{
	const struct sy_options *o = r->o;
	size_t len = evbuffer_get_length(body), longcmd = 0;
	const char *s;

	if (!sy_select_needs_body(o))
		return 0;
	evbuffer_add(body, "", 1); /* NUL for the regexes, taken off below */
	s = (const char *)evbuffer_pullup(body, -1);
	for (size_t k = 0; k < o->skipmess.n; k++) {
		struct sy_regex *re;
		const char *error;
		int hit;

		if (sy_delete_folder_regex(&re, "--skipmess", o->skipmess.v[k], &error) < 0)
			continue; /* refused at start-up */
		hit = sy_regex_match(re, s) == 1;
		sy_regex_free(&re);
		if (hit) {
			sy_msgline(r, "- msg %s/%u {%u} skipped by --skipmess %s", f->name1, e->uid,
			           e->size, o->skipmess.v[k]);
			skipped(r, e);
			break;
		}
	}
	if (!e->skip && (sy_options_given(o, SY_OPT_MAXLINELENGTH) ||
	                 sy_options_given(o, SY_OPT_MINMAXLINELENGTH))) {
		size_t longest = longest_line(s, len);

		if (o->debugmaxlinelength)
			sy_out(r,
			       "debugmaxlinelength: msg %s/%u {%u}: longest line %zu bytes "
			       "(--maxlinelength %lld, --minmaxlinelength %lld)",
			       f->name1, e->uid, e->size, longest, o->maxlinelength,
			       o->minmaxlinelength);

		if (sy_options_given(o, SY_OPT_MAXLINELENGTH) && o->maxlinelength > 0 &&
		    longest > (size_t)o->maxlinelength && o->maxlinelengthcmd != NULL) {
			longcmd = longest; /* --maxlinelengthcmd rewrites it, below */
		} else if (sy_options_given(o, SY_OPT_MAXLINELENGTH) && o->maxlinelength > 0 &&
		           longest > (size_t)o->maxlinelength) {
			sy_msgline(r,
			           "- msg %s/%u {%u} skipped: a line of %zu bytes is over "
			           "--maxlinelength %lld",
			           f->name1, e->uid, e->size, longest, o->maxlinelength);
			skipped(r, e);
		} else if (sy_options_given(o, SY_OPT_MINMAXLINELENGTH) &&
		           longest <= (size_t)o->minmaxlinelength) {
			sy_msgline(r,
			           "- msg %s/%u {%u} skipped: its longest line (%zu bytes) is not "
			           "over --minmaxlinelength %lld",
			           f->name1, e->uid, e->size, longest, o->minmaxlinelength);
			skipped(r, e);
		}
	}
	{
		/* remove the NUL added above (the last byte) */
		struct evbuffer *tmp = evbuffer_new();

		if (tmp == NULL)
			abort();
		evbuffer_remove_buffer(body, tmp, len);
		evbuffer_drain(body, evbuffer_get_length(body));
		evbuffer_add_buffer(body, tmp);
		evbuffer_free(tmp);
	}
	if (longcmd > 0) {
		/* imapsync's --maxlinelengthcmd: the message goes through the
		 * command instead of being skipped; a failure fails it alone */
		char why[512];

		if (sy_xform_pipe(o->tmpdir, o->maxlinelengthcmd, body, why, sizeof(why)) < 0) {
			sy_error(r, SY_ERR_UNCLASSIFIED,
			         "- msg %s/%u {%u}: Failure: --maxlinelengthcmd command \"%s\" %s",
			         f->name1, e->uid, e->size, o->maxlinelengthcmd, why);
			return 1;
		}
		sy_msgline(r,
		           "- msg %s/%u {%u}: a line of %zu bytes is over --maxlinelength %lld: "
		           "rewritten by --maxlinelengthcmd",
		           f->name1, e->uid, e->size, longcmd, o->maxlinelength);
	}
	return e->skip;
}
