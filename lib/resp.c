/* resp.c - typed views of parsed responses; see include/imapferry/resp.h */
#include "imapferry/resp.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

const char *const imap_cap_names[IMAP_CAP_COUNT] = {
        "IMAP4rev1",        "IMAP4rev2",   "STARTTLS",  "LOGINDISABLED",
        "SASL-IR",          "LITERAL+",    "LITERAL-",  "IDLE",
        "UIDPLUS",          "MOVE",        "CONDSTORE", "QRESYNC",
        "NAMESPACE",        "ID",          "ENABLE",    "SPECIAL-USE",
        "LIST-EXTENDED",    "LIST-STATUS", "ESEARCH",   "MULTIAPPEND",
        "CATENATE",         "BINARY",      "UNSELECT",  "UTF8=ACCEPT",
        "APPENDLIMIT",      "STATUS=SIZE", "OBJECTID",  "NOTIFY",
        "COMPRESS=DEFLATE", "X-GM-EXT-1",
};
_Static_assert(sizeof(imap_cap_names) / sizeof(imap_cap_names[0]) == IMAP_CAP_COUNT, "caps");

const char *const imap_auth_mech_names[IMAP_AUTH_COUNT] = {
        "PLAIN", "LOGIN", "CRAM-MD5", "XOAUTH2", "OAUTHBEARER", "EXTERNAL", "NTLM",
};
_Static_assert(sizeof(imap_auth_mech_names) / sizeof(imap_auth_mech_names[0]) == IMAP_AUTH_COUNT,
               "mechs");

static int name_eq(const char *s, size_t len, const char *name)
{
	return strlen(name) == len && strncasecmp(s, name, len) == 0;
}

int imap_cap_lookup(const char *name, size_t len)
{
	for (int i = 0; i < IMAP_CAP_COUNT; i++) {
		if (name_eq(name, len, imap_cap_names[i]))
			return i;
	}
	return -1;
}

void imap_caps_parse(struct imap_caps *caps, const struct imap_arg *args)
{
	memset(caps, 0, sizeof(*caps));
	caps->valid = 1;
	for (; args != NULL; args = args->next) {
		const char *s = args->str;
		int c;

		if (args->type != IMAP_ARG_ATOM)
			continue;
		if (strncasecmp(s, "AUTH=", 5) == 0) {
			for (int i = 0; i < IMAP_AUTH_COUNT; i++) {
				if (strcasecmp(s + 5, imap_auth_mech_names[i]) == 0)
					caps->auth |= 1u << i;
			}
			continue;
		}
		if (strncasecmp(s, "APPENDLIMIT=", 12) == 0) {
			caps->caps |= (uint64_t)1 << IMAP_CAP_APPENDLIMIT;
			caps->appendlimit = strtoull(s + 12, NULL, 10);
			continue;
		}
		c = imap_cap_lookup(s, args->len);
		if (c >= 0)
			caps->caps |= (uint64_t)1 << c;
	}
	/* RFC 7162 3.2.3: QRESYNC implies CONDSTORE. */
	if (imap_caps_has(caps, IMAP_CAP_QRESYNC))
		caps->caps |= (uint64_t)1 << IMAP_CAP_CONDSTORE;
}

int imap_caps_from_msg(struct imap_caps *caps, const struct imap_msg *msg)
{
	if (msg->kind == IMAP_MSG_UNTAGGED && msg->name != NULL &&
	    strcmp(msg->name, "CAPABILITY") == 0) {
		imap_caps_parse(caps, msg->args);
		return 1;
	}
	if (msg->code != NULL && strcmp(msg->code, "CAPABILITY") == 0) {
		imap_caps_parse(caps, msg->code_args);
		return 1;
	}
	return 0;
}

/* --- LIST --- */

static const struct {
	const char *name;
	unsigned bit;
} list_attrs[] = {
        {"\\Noselect", IMAP_LIST_NOSELECT},
        {"\\NoInferiors", IMAP_LIST_NOINFERIORS},
        {"\\HasChildren", IMAP_LIST_HASCHILDREN},
        {"\\HasNoChildren", IMAP_LIST_HASNOCHILDREN},
        {"\\Marked", IMAP_LIST_MARKED},
        {"\\Unmarked", IMAP_LIST_UNMARKED},
        {"\\NonExistent", IMAP_LIST_NONEXISTENT},
        {"\\Subscribed", IMAP_LIST_SUBSCRIBED},
        {"\\Remote", IMAP_LIST_REMOTE},
        {"\\All", IMAP_LIST_ALL},
        {"\\Archive", IMAP_LIST_ARCHIVE},
        {"\\Drafts", IMAP_LIST_DRAFTS},
        {"\\Flagged", IMAP_LIST_FLAGGED},
        {"\\Junk", IMAP_LIST_JUNK},
        {"\\Sent", IMAP_LIST_SENT},
        {"\\Trash", IMAP_LIST_TRASH},
        {"\\Important", IMAP_LIST_IMPORTANT},
};

/* mailbox-list = "(" [mbx-list-flags] ")" SP (DQUOTE QUOTED-CHAR DQUOTE / nil) SP mailbox
 *                [SP mbox-list-extended] */
int imap_list_parse(const struct imap_msg *msg, struct imap_list_info *info, const char **error_r)
{
	const struct imap_arg *a = msg->args, *f;
	const char *sep;
	size_t seplen;

	memset(info, 0, sizeof(*info));
	if (a == NULL || a->type != IMAP_ARG_LIST) {
		*error_r = "LIST reply without attribute list";
		return -1;
	}
	for (f = a->child; f != NULL; f = f->next) {
		if (f->type != IMAP_ARG_ATOM)
			continue;
		for (size_t i = 0; i < sizeof(list_attrs) / sizeof(list_attrs[0]); i++) {
			if (strcasecmp(f->str, list_attrs[i].name) == 0)
				info->attrs |= list_attrs[i].bit;
		}
	}
	/* RFC 9051: \NoInferiors implies \HasNoChildren; \NonExistent implies \Noselect */
	if (info->attrs & IMAP_LIST_NONEXISTENT)
		info->attrs |= IMAP_LIST_NOSELECT;
	a = a->next;
	if (imap_arg_get_nstring(a, &sep, &seplen) < 0 || (sep != NULL && seplen != 1)) {
		*error_r = "LIST reply with a bad hierarchy delimiter";
		return -1;
	}
	info->sep = sep != NULL ? sep[0] : 0;
	a = a->next;
	if (imap_arg_get_astring(a, &info->name, &info->name_len) < 0) {
		*error_r = "LIST reply without a mailbox name";
		return -1;
	}
	return 0;
}

/* --- STATUS --- */

int imap_status_parse(const struct imap_msg *msg, struct imap_status_info *info,
                      const char **error_r)
{
	const struct imap_arg *a = msg->args, *i;

	memset(info, 0, sizeof(*info));
	if (imap_arg_get_astring(a, &info->name, &info->name_len) < 0) {
		*error_r = "STATUS reply without a mailbox name";
		return -1;
	}
	a = a->next;
	if (a == NULL || a->type != IMAP_ARG_LIST) {
		*error_r = "STATUS reply without an attribute list";
		return -1;
	}
	for (i = a->child; i != NULL && i->next != NULL; i = i->next->next) {
		uint64_t v;
		unsigned bit;

		if (imap_arg_get_u64(i->next, &v) < 0) {
			*error_r = "STATUS reply with a non-numeric value";
			return -1;
		}
		if (imap_arg_atom_eq(i, "MESSAGES")) {
			bit = IMAP_STATUS_MESSAGES;
			info->messages = (uint32_t)v;
		} else if (imap_arg_atom_eq(i, "UIDNEXT")) {
			bit = IMAP_STATUS_UIDNEXT;
			info->uidnext = (uint32_t)v;
		} else if (imap_arg_atom_eq(i, "UIDVALIDITY")) {
			bit = IMAP_STATUS_UIDVALIDITY;
			info->uidvalidity = (uint32_t)v;
		} else if (imap_arg_atom_eq(i, "UNSEEN")) {
			bit = IMAP_STATUS_UNSEEN;
			info->unseen = (uint32_t)v;
		} else if (imap_arg_atom_eq(i, "RECENT")) {
			bit = IMAP_STATUS_RECENT;
			info->recent = (uint32_t)v;
		} else if (imap_arg_atom_eq(i, "HIGHESTMODSEQ")) {
			bit = IMAP_STATUS_HIGHESTMODSEQ;
			info->highestmodseq = v;
		} else if (imap_arg_atom_eq(i, "SIZE")) {
			bit = IMAP_STATUS_SIZE;
			info->size = v;
		} else {
			continue;
		}
		if (bit != IMAP_STATUS_HIGHESTMODSEQ && bit != IMAP_STATUS_SIZE && v > UINT32_MAX) {
			*error_r = "STATUS value out of range";
			return -1;
		}
		info->have |= bit;
	}
	if (i != NULL) {
		*error_r = "STATUS reply with an odd attribute list";
		return -1;
	}
	return 0;
}

/* --- FETCH --- */

int imap_fetch_items(const struct imap_msg *msg, const struct imap_arg **items_r)
{
	if (msg->kind != IMAP_MSG_UNTAGGED || !msg->has_number || msg->name == NULL ||
	    strcmp(msg->name, "FETCH") != 0 || msg->args == NULL ||
	    msg->args->type != IMAP_ARG_LIST)
		return -1;
	*items_r = msg->args->child;
	return 0;
}

const struct imap_arg *imap_fetch_get(const struct imap_arg *items, const char *name)
{
	for (; items != NULL && items->next != NULL; items = items->next->next) {
		if (imap_arg_atom_eq(items, name))
			return items->next;
	}
	return NULL;
}

/* --- sequence sets --- */

static int seq_number(const char *s, size_t len, size_t *pos, uint32_t *n_r)
{
	uint64_t n = 0;
	size_t start = *pos;

	if (*pos < len && s[*pos] == '*') {
		(*pos)++;
		*n_r = UINT32_MAX;
		return 0;
	}
	while (*pos < len && s[*pos] >= '0' && s[*pos] <= '9') {
		n = n * 10 + (uint64_t)(s[*pos] - '0');
		if (n > UINT32_MAX)
			return -1;
		(*pos)++;
	}
	if (*pos == start || n == 0)
		return -1; /* seq-number = nz-number / "*" */
	*n_r = (uint32_t)n;
	return 0;
}

int imap_seqset_parse(const char *s, size_t len, struct imap_seqset *set, const char **error_r)
{
	size_t pos = 0, cap = 0;

	memset(set, 0, sizeof(*set));
	for (;;) {
		struct imap_range r;

		if (seq_number(s, len, &pos, &r.lo) < 0)
			goto bad;
		r.hi = r.lo;
		if (pos < len && s[pos] == ':') {
			pos++;
			if (seq_number(s, len, &pos, &r.hi) < 0)
				goto bad;
			if (r.hi < r.lo) {
				uint32_t t = r.lo;

				r.lo = r.hi;
				r.hi = t;
			}
		}
		if (set->count == cap) {
			struct imap_range *nr;

			cap = cap == 0 ? 8 : cap * 2;
			nr = realloc(set->r, cap * sizeof(*nr));
			if (nr == NULL)
				abort();
			set->r = nr;
		}
		set->r[set->count++] = r;
		if (pos == len)
			return 0;
		if (s[pos] != ',')
			goto bad;
		pos++;
	}
bad:
	imap_seqset_free(set);
	*error_r = "bad sequence set";
	return -1;
}

void imap_seqset_free(struct imap_seqset *set)
{
	free(set->r);
	set->r = NULL;
	set->count = 0;
}

uint64_t imap_seqset_count(const struct imap_seqset *set)
{
	uint64_t n = 0;

	for (size_t i = 0; i < set->count; i++)
		n += (uint64_t)set->r[i].hi - set->r[i].lo + 1;
	return n;
}

/* --- date-time --- */

static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

/* Days from 1970-01-01 to y-m-d (proleptic Gregorian), m 1..12. */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
	int64_t era;
	unsigned yoe, doy, doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = (unsigned)(y - era * 400);
	doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + (int64_t)doe - 719468;
}

/* date-time = DQUOTE date-day-fixed "-" date-month "-" date-year SP time SP zone DQUOTE
 * (the quotes are already gone: we get the string's contents) */
int imap_date_time_parse(const char *s, size_t len, time_t *t_r, int *tz_min_r)
{
	unsigned day, year, hh, mm, ss, tzh, tzm, m;
	char mon[4], sign;
	char buf[40];
	int n = 0;

	if (len >= sizeof(buf))
		return -1;
	memcpy(buf, s, len);
	buf[len] = '\0';
	if (sscanf(buf, "%2u-%3c-%4u %2u:%2u:%2u %c%2u%2u%n", &day, mon, &year, &hh, &mm, &ss,
	           &sign, &tzh, &tzm, &n) != 9 ||
	    (size_t)n != len)
		return -1;
	mon[3] = '\0';
	for (m = 0; m < 12; m++) {
		if (strcasecmp(mon, months[m]) == 0)
			break;
	}
	if (m == 12 || day < 1 || day > 31 || hh > 23 || mm > 59 || ss > 60 || tzm > 59 ||
	    (sign != '+' && sign != '-'))
		return -1;
	*tz_min_r = (int)(tzh * 60 + tzm) * (sign == '-' ? -1 : 1);
	*t_r = (time_t)(days_from_civil(year, m + 1, day) * 86400 + hh * 3600 + mm * 60 + ss -
	                *tz_min_r * 60);
	return 0;
}

void imap_date_time_format(char out[27], time_t t, int tz_min)
{
	time_t local = t + (time_t)tz_min * 60;
	struct tm tm;
	int a = tz_min < 0 ? -tz_min : tz_min;

	char tmp[64];

	gmtime_r(&local, &tm);
	snprintf(tmp, sizeof(tmp), "%02d-%s-%04d %02d:%02d:%02d %c%02d%02d", tm.tm_mday,
	         months[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec,
	         tz_min < 0 ? '-' : '+', (a / 60) % 100, a % 60);
	memcpy(out, tmp, 26);
	out[26] = '\0';
}
