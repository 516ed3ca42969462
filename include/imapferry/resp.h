/*
 * resp.h - typed views of parsed IMAP responses (struct imap_msg from
 * parse.h): capabilities, LIST/LSUB, STATUS, FETCH items, sequence sets,
 * INTERNALDATE. All functions are pure: no I/O, no allocation unless said.
 */
#ifndef IMAPFERRY_RESP_H
#define IMAPFERRY_RESP_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "imapferry/parse.h"

/* --- capabilities (RFC 3501 7.2.1 and the extensions' RFCs) --- */

enum imap_cap {
	IMAP_CAP_IMAP4REV1,
	IMAP_CAP_IMAP4REV2,
	IMAP_CAP_STARTTLS,
	IMAP_CAP_LOGINDISABLED,
	IMAP_CAP_SASL_IR,
	IMAP_CAP_LITERALPLUS,
	IMAP_CAP_LITERALMINUS,
	IMAP_CAP_IDLE,
	IMAP_CAP_UIDPLUS,
	IMAP_CAP_MOVE,
	IMAP_CAP_CONDSTORE,
	IMAP_CAP_QRESYNC,
	IMAP_CAP_NAMESPACE,
	IMAP_CAP_ID,
	IMAP_CAP_ENABLE,
	IMAP_CAP_SPECIAL_USE,
	IMAP_CAP_LIST_EXTENDED,
	IMAP_CAP_LIST_STATUS,
	IMAP_CAP_ESEARCH,
	IMAP_CAP_MULTIAPPEND,
	IMAP_CAP_CATENATE,
	IMAP_CAP_BINARY,
	IMAP_CAP_UNSELECT,
	IMAP_CAP_UTF8_ACCEPT,
	IMAP_CAP_APPENDLIMIT,
	IMAP_CAP_STATUS_SIZE,
	IMAP_CAP_OBJECTID,
	IMAP_CAP_NOTIFY,
	IMAP_CAP_COMPRESS_DEFLATE,
	IMAP_CAP_X_GM_EXT_1,
	IMAP_CAP_COUNT
};

enum imap_auth_mech {
	IMAP_AUTH_PLAIN,
	IMAP_AUTH_LOGIN,
	IMAP_AUTH_CRAM_MD5,
	IMAP_AUTH_XOAUTH2,
	IMAP_AUTH_OAUTHBEARER,
	IMAP_AUTH_EXTERNAL,
	IMAP_AUTH_NTLM,
	IMAP_AUTH_COUNT
};

struct imap_caps {
	uint64_t caps;        /* bit (1 << enum imap_cap) */
	unsigned auth;        /* bit (1 << enum imap_auth_mech) */
	uint64_t appendlimit; /* APPENDLIMIT=n; 0 when absent or without a value */
	int valid;            /* set once a capability list was seen */
};

extern const char *const imap_cap_names[IMAP_CAP_COUNT];
extern const char *const imap_auth_mech_names[IMAP_AUTH_COUNT];

/* Fills *caps from a list of atoms (the args of "* CAPABILITY" or the
 * code_args of [CAPABILITY ...]). Unknown names are ignored. */
void imap_caps_parse(struct imap_caps *caps, const struct imap_arg *args);
/* Capabilities carried by msg, if any: untagged CAPABILITY or a
 * [CAPABILITY] response code. Returns 1 when *caps was filled, else 0. */
int imap_caps_from_msg(struct imap_caps *caps, const struct imap_msg *msg);
static inline int imap_caps_has(const struct imap_caps *caps, enum imap_cap cap)
{
	return (caps->caps & ((uint64_t)1 << cap)) != 0;
}
/* Looks a capability name up ("LITERAL+" -> IMAP_CAP_LITERALPLUS); -1 if unknown. */
int imap_cap_lookup(const char *name, size_t len);

/* --- LIST / LSUB (RFC 3501 7.2.2, RFC 6154 SPECIAL-USE, RFC 5258) --- */

#define IMAP_LIST_NOSELECT         0x0001u
#define IMAP_LIST_NOINFERIORS      0x0002u
#define IMAP_LIST_HASCHILDREN      0x0004u
#define IMAP_LIST_HASNOCHILDREN    0x0008u
#define IMAP_LIST_MARKED           0x0010u
#define IMAP_LIST_UNMARKED         0x0020u
#define IMAP_LIST_NONEXISTENT      0x0040u
#define IMAP_LIST_SUBSCRIBED       0x0080u
#define IMAP_LIST_REMOTE           0x0100u
#define IMAP_LIST_ALL              0x0200u
#define IMAP_LIST_ARCHIVE          0x0400u
#define IMAP_LIST_DRAFTS           0x0800u
#define IMAP_LIST_FLAGGED          0x1000u
#define IMAP_LIST_JUNK             0x2000u
#define IMAP_LIST_SENT             0x4000u
#define IMAP_LIST_TRASH            0x8000u
#define IMAP_LIST_IMPORTANT        0x10000u
#define IMAP_LIST_SPECIAL_USE_MASK 0x1fe00u

struct imap_list_info {
	unsigned attrs;   /* IMAP_LIST_* */
	char sep;         /* hierarchy delimiter, 0 for NIL */
	const char *name; /* mailbox name as sent (mUTF-7 or UTF-8); borrowed from msg */
	size_t name_len;
};

/* Parses an untagged LIST or LSUB. Returns 0, or -1 with *error_r. */
int imap_list_parse(const struct imap_msg *msg, struct imap_list_info *info, const char **error_r);

/* --- STATUS (RFC 3501 7.2.4, RFC 7162, RFC 8438) --- */

#define IMAP_STATUS_MESSAGES      0x01u
#define IMAP_STATUS_UIDNEXT       0x02u
#define IMAP_STATUS_UIDVALIDITY   0x04u
#define IMAP_STATUS_UNSEEN        0x08u
#define IMAP_STATUS_RECENT        0x10u
#define IMAP_STATUS_HIGHESTMODSEQ 0x20u
#define IMAP_STATUS_SIZE          0x40u

struct imap_status_info {
	unsigned have;    /* IMAP_STATUS_* present */
	const char *name; /* borrowed from msg */
	size_t name_len;
	uint32_t messages, uidnext, uidvalidity, unseen, recent;
	uint64_t highestmodseq, size;
};

int imap_status_parse(const struct imap_msg *msg, struct imap_status_info *info,
                      const char **error_r);

/* --- FETCH (RFC 3501 7.4.2): walk "name value" pairs --- */

/* For "* n FETCH (...)": *items_r = first item of the list. Returns 0 or -1. */
int imap_fetch_items(const struct imap_msg *msg, const struct imap_arg **items_r);
/* Value of the FETCH item called name ("UID", "FLAGS", "BODY[]"), or NULL. */
const struct imap_arg *imap_fetch_get(const struct imap_arg *items, const char *name);

/* --- sequence sets (RFC 3501 9: sequence-set; "*" = UINT32_MAX) --- */

struct imap_range {
	uint32_t lo, hi; /* lo <= hi */
};

struct imap_seqset {
	struct imap_range *r; /* malloc'd; free with imap_seqset_free() */
	size_t count;
};

/* Parses "1:3,5,7:*" into ranges in the order given (each normalised so
 * lo <= hi). Returns 0, or -1 with *error_r on bad syntax or a zero. */
int imap_seqset_parse(const char *s, size_t len, struct imap_seqset *set, const char **error_r);
void imap_seqset_free(struct imap_seqset *set);
/* Number of values in the set (a "*" counts as the single value UINT32_MAX). */
uint64_t imap_seqset_count(const struct imap_seqset *set);

/* --- INTERNALDATE (RFC 3501 9: date-time) --- */

/* Parses "17-Jul-1996 02:44:25 -0700" (day may be " 7"). *t_r is UTC,
 * *tz_min_r the zone offset in minutes. Returns 0 or -1. */
int imap_date_time_parse(const char *s, size_t len, time_t *t_r, int *tz_min_r);
/* Writes the canonical form (26 chars + NUL) of t in zone tz_min. */
void imap_date_time_format(char out[27], time_t t, int tz_min);

#endif
