/*
 * observe.c - what one proxied IMAP session changes; see observe.h.
 *
 * Model (../shared/docs/replication-design.md section 3):
 *
 *  - Commands in flight sit in one array in the order they were sent. A
 *    tagged reply resolves the oldest command with that tag (tags are
 *    chosen by the client and need not be unique).
 *  - The selected mailbox is a state: NONE, a mailbox (MBOX), UNKNOWN
 *    (we lost track: a BAD SELECT, a dropped command), or, for a command,
 *    PENDING: it was sent behind a SELECT/EXAMINE/CLOSE/UNSELECT still in
 *    flight. Each such "selecting" command gets an epoch; a command sent
 *    behind it records that epoch and gets its mailbox when the selecting
 *    command's reply arrives. A mutating command whose mailbox is not a
 *    known MBOX when it completes marks the whole user.
 *  - Untagged data belongs to the current mailbox, except while the server
 *    is answering a SELECT/EXAMINE: that is when the oldest command in
 *    flight is that SELECT (servers run a mailbox-changing command only
 *    after the commands before it, RFC 3501 5.5), or once QRESYNC's
 *    "* OK [CLOSED]" (RFC 7162 3.2.11) said the old mailbox is gone. The
 *    EXISTS and [HIGHESTMODSEQ] seen then are the new mailbox's baseline.
 *  - Names are kept raw and canonicalised (rk_folder_canon) when used, so
 *    an ENABLE UTF8=ACCEPT pipelined before a command applies to it: by the
 *    time a command completes, every command before it has completed.
 */
#include "observe.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Raw mailbox name bytes kept per command; a longer name (far beyond real
 * ones) makes the command mark the whole user. Bounds memory to
 * PX_OBSERVE_MAX_INFLIGHT * (2 names + a tag) per session. */
#define OBS_NAME_MAX 1024
/* Canonical names: mUTF-7 decoding grows at most 9/8. */
#define OBS_CANON_MAX (2 * OBS_NAME_MAX + 8)
/* Tag bytes kept for matching (plus the full length); longer tags only
 * collide with each other, and only for a client that sends such tags. */
#define OBS_TAG_MAX 128
/* A move hint longer than this (huge UID sets) is not sent: the marks
 * alone are correct, the hint only saves the replicator work. */
#define OBS_HINT_MAX 8192

enum obs_kind {
	OBS_K_NONE,     /* read-only: marks nothing */
	OBS_K_SELECT,   /* SELECT */
	OBS_K_EXAMINE,  /* EXAMINE */
	OBS_K_CLOSE,    /* CLOSE: expunges, then nothing selected */
	OBS_K_UNSELECT, /* UNSELECT, UNAUTHENTICATE: nothing selected */
	OBS_K_APPEND,   /* target = argument 1 */
	OBS_K_COPY,     /* [UID] COPY set target */
	OBS_K_MOVE,     /* [UID] MOVE set target */
	OBS_K_REPLACE,  /* [UID] REPLACE n target message (RFC 8508) */
	OBS_K_STORE,    /* [UID] STORE */
	OBS_K_FETCH,    /* [UID] FETCH */
	OBS_K_EXPUNGE,  /* [UID] EXPUNGE */
	OBS_K_TREE,     /* CREATE DELETE (UN)SUBSCRIBE SETACL DELETEACL ... */
	OBS_K_RENAME,   /* RENAME from to */
	OBS_K_ENABLE,   /* ENABLE: learnt from "* ENABLED" */
	OBS_K_NOTIFY,   /* NOTIFY (RFC 5465): its first STATUS replies are solicited */
	OBS_K_LIST,     /* LIST LSUB XLIST: LIST responses are solicited */
	OBS_K_STATUS,   /* STATUS: STATUS responses are solicited */
	OBS_K_UNKNOWN,  /* unknown or X- command: whole user, low */
	OBS_K_COUNT
};

static const struct obs_cmd_def {
	const char *name;
	enum obs_kind kind;
	int uid_ok; /* valid after a UID prefix */
} obs_cmd_defs[] = {
        {"APPEND", OBS_K_APPEND, 0},
        {"AUTHENTICATE", OBS_K_NONE, 0},
        {"CAPABILITY", OBS_K_NONE, 0},
        {"CHECK", OBS_K_NONE, 0},
        {"CLOSE", OBS_K_CLOSE, 0},
        {"COMPRESS", OBS_K_NONE, 0}, /* never forwarded (observe.h) */
        {"COPY", OBS_K_COPY, 1},
        {"CREATE", OBS_K_TREE, 0},
        {"DELETE", OBS_K_TREE, 0},
        {"DELETEACL", OBS_K_TREE, 0},
        {"ENABLE", OBS_K_ENABLE, 0},
        {"ESEARCH", OBS_K_NONE, 0},
        {"EXAMINE", OBS_K_EXAMINE, 0},
        {"EXPUNGE", OBS_K_EXPUNGE, 1},
        {"FETCH", OBS_K_FETCH, 1},
        {"GENURLAUTH", OBS_K_NONE, 0},
        {"GETACL", OBS_K_NONE, 0},
        {"GETMETADATA", OBS_K_NONE, 0},
        {"GETQUOTA", OBS_K_NONE, 0},
        {"GETQUOTAROOT", OBS_K_NONE, 0},
        {"ID", OBS_K_NONE, 0},
        {"IDLE", OBS_K_NONE, 0},
        {"LIST", OBS_K_LIST, 0},
        {"LISTRIGHTS", OBS_K_NONE, 0},
        {"LOGIN", OBS_K_NONE, 0},
        {"LOGOUT", OBS_K_NONE, 0},
        {"LSUB", OBS_K_LIST, 0},
        {"MOVE", OBS_K_MOVE, 1},
        {"MYRIGHTS", OBS_K_NONE, 0},
        {"NAMESPACE", OBS_K_NONE, 0},
        {"NOOP", OBS_K_NONE, 0},
        {"NOTIFY", OBS_K_NOTIFY, 0},
        {"RENAME", OBS_K_RENAME, 0},
        {"REPLACE", OBS_K_REPLACE, 1},
        {"RESETKEY", OBS_K_NONE, 0},
        {"SEARCH", OBS_K_NONE, 1},
        {"SELECT", OBS_K_SELECT, 0},
        {"SETACL", OBS_K_TREE, 0},
        {"SETMETADATA", OBS_K_TREE, 0},
        {"SETQUOTA", OBS_K_TREE, 0},
        {"SORT", OBS_K_NONE, 1},
        {"STARTTLS", OBS_K_NONE, 0},
        {"STATUS", OBS_K_STATUS, 0},
        {"STORE", OBS_K_STORE, 1},
        {"SUBSCRIBE", OBS_K_TREE, 0},
        {"THREAD", OBS_K_NONE, 1},
        {"UNAUTHENTICATE", OBS_K_UNSELECT, 0},
        {"UNSELECT", OBS_K_UNSELECT, 0},
        {"UNSUBSCRIBE", OBS_K_TREE, 0},
        {"URLFETCH", OBS_K_NONE, 0},
        {"XLIST", OBS_K_LIST, 0},
};

enum obs_sel {
	OBS_SEL_NONE,    /* no mailbox selected */
	OBS_SEL_MBOX,    /* mbox */
	OBS_SEL_UNKNOWN, /* lost track */
	OBS_SEL_PENDING, /* commands only: waiting for the selecting command dep */
	OBS_SEL_COUNT
};

/* A selected mailbox, shared (refcounted) by the commands sent in it. */
struct obs_mbox {
	unsigned refs;
	int readonly; /* EXAMINE or [READ-ONLY]: no \Seen, CLOSE expunges nothing */
	char name[];  /* canonical */
};

struct obs_cmd {
	char *tag; /* first OBS_TAG_MAX bytes, NUL-terminated */
	size_t tag_len;
	enum obs_kind kind;
	unsigned body : 1;        /* FETCH: a non-PEEK body item (sets \Seen) */
	unsigned flagsfetch : 1;  /* FETCH: answers carry FLAGS */
	unsigned hinted : 1;      /* MOVE: move hint already sent */
	unsigned closed_seen : 1; /* SELECT: "* OK [CLOSED]" seen for it */
	unsigned have_exists : 1; /* SELECT: response data */
	unsigned have_modseq : 1;
	unsigned readonly : 1; /* SELECT: [READ-ONLY] */
	unsigned owe : 2;      /* OWE_*: untagged changes it was taken to explain */
	uint32_t exists;
	uint64_t modseq;
	uint64_t epoch; /* selecting commands: their own epoch */
	uint64_t dep;   /* sel == PENDING: the epoch it waits for */
	enum obs_sel sel;
	struct obs_mbox *mbox; /* sel == MBOX */
	char *name1, *name2;   /* raw names (target; RENAME: from, to) */
	size_t len1, len2;     /* lengths; name == NULL: none or unusable */
	int bad1, bad2;        /* the argument was there but unusable */
};

struct px_observe {
	struct px_observe_sink sink;
	void *aux;
	char sep;
	int sep_sure; /* from NAMESPACE, LIST "" "" or the relay */
	int utf8;     /* UTF8=ACCEPT or IMAP4rev2 enabled: names are UTF-8 */
	/* Enabled, for the record: nothing here depends on them, because
	 * VANISHED, [CLOSED] and [HIGHESTMODSEQ] are read whenever they come. */
	int condstore, qresync;

	enum obs_sel cur;
	struct obs_mbox *cur_mbox;
	int have_exists, have_modseq;
	uint32_t exists;
	uint64_t modseq;

	uint64_t next_epoch;
	struct obs_cmd *cmds; /* in flight, oldest first */
	unsigned n, cap;
	int overflow; /* commands were dropped: one more whole-user mark at drain */
};

/* --- small helpers --- */

static void *obs_xmalloc(size_t n)
{
	void *p = malloc(n);

	if (p == NULL)
		abort();
	return p;
}

static void mbox_unref(struct obs_mbox **m)
{
	if (*m != NULL && --(*m)->refs == 0)
		free(*m);
	*m = NULL;
}

static struct obs_mbox *mbox_ref(struct obs_mbox *m)
{
	if (m != NULL)
		m->refs++;
	return m;
}

static struct obs_mbox *mbox_new(const char *name, int readonly)
{
	size_t len = strlen(name);
	struct obs_mbox *m = obs_xmalloc(sizeof(*m) + len + 1);

	m->refs = 1;
	m->readonly = readonly;
	memcpy(m->name, name, len + 1);
	return m;
}

static void obs_mark(struct px_observe *o, const char *folder, enum rk_prio prio)
{
	o->sink.mark(o->aux, folder, prio);
}

static void obs_mark_all(struct px_observe *o, enum rk_prio prio)
{
	obs_mark(o, RK_FOLDER_ALL, prio);
}

/* Canonical name into buf; -1 when unusable. */
static int obs_canon(const struct px_observe *o, const char *name, size_t len, char *buf,
                     size_t size)
{
	int n;

	if (name == NULL)
		return -1;
	n = rk_folder_canon(buf, size, name, len, o->utf8, o->sep);
	if (n <= 0 || strlen(buf) != (size_t)n || strcmp(buf, RK_FOLDER_ALL) == 0)
		return -1;
	return 0;
}

static char *obs_strndup(const char *s, size_t len)
{
	char *d = obs_xmalloc(len + 1);

	memcpy(d, s, len);
	d[len] = '\0';
	return d;
}

/* Keeps a mailbox argument: astring (atom, quoted, inline literal). */
static void keep_name(const struct imap_arg *arg, char **name_r, size_t *len_r, int *bad_r)
{
	const char *s;
	size_t len;

	*name_r = NULL;
	*len_r = 0;
	*bad_r = 0;
	if (arg == NULL)
		return; /* the server will answer BAD */
	if (imap_arg_get_astring(arg, &s, &len) < 0 || len > OBS_NAME_MAX) {
		*bad_r = 1; /* streamed literal, list, too long */
		return;
	}
	*name_r = obs_strndup(s, len);
	*len_r = len;
}

static int cmd_tag_eq(const struct obs_cmd *c, const char *tag)
{
	size_t len = strlen(tag);

	return len == c->tag_len && strncmp(c->tag, tag, OBS_TAG_MAX) == 0;
}

static void cmd_clear(struct obs_cmd *c)
{
	free(c->tag);
	free(c->name1);
	free(c->name2);
	mbox_unref(&c->mbox);
	memset(c, 0, sizeof(*c));
}

static int kind_selecting(enum obs_kind k)
{
	return k == OBS_K_SELECT || k == OBS_K_EXAMINE || k == OBS_K_CLOSE || k == OBS_K_UNSELECT;
}

/* Kinds whose completion may add messages to their target. */
static int kind_adds(enum obs_kind k)
{
	return k == OBS_K_APPEND || k == OBS_K_COPY || k == OBS_K_MOVE || k == OBS_K_REPLACE;
}

static void set_cur(struct px_observe *o, enum obs_sel sel, struct obs_mbox *mbox)
{
	mbox_unref(&o->cur_mbox);
	o->cur = sel;
	o->cur_mbox = sel == OBS_SEL_MBOX ? mbox_ref(mbox) : NULL;
	o->have_exists = 0;
	o->have_modseq = 0;
	o->exists = 0;
	o->modseq = 0;
}

/* --- marks of a completed (or abandoned) command --- */

/* The command's selected mailbox, or the whole user when not known. */
static void mark_sel(struct px_observe *o, const struct obs_cmd *c, enum rk_prio prio)
{
	if (c->sel == OBS_SEL_MBOX)
		obs_mark(o, c->mbox->name, prio);
	else
		obs_mark_all(o, prio);
}

static void mark_name(struct px_observe *o, const char *name, size_t len, enum rk_prio prio)
{
	char buf[OBS_CANON_MAX];

	if (obs_canon(o, name, len, buf, sizeof(buf)) < 0)
		obs_mark_all(o, prio);
	else
		obs_mark(o, buf, prio);
}

/* The marks of command c on completion with OK or NO (partial effects are
 * possible), or at disconnect. */
static void cmd_marks(struct px_observe *o, const struct obs_cmd *c)
{
	switch (c->kind) {
	case OBS_K_APPEND:
	case OBS_K_COPY:
		mark_name(o, c->name1, c->len1, RK_PRIO_HIGH);
		break;
	case OBS_K_MOVE:
		/* the target first and sooner: its sync copies the messages
		 * inside the destination from the source folder's copies (the
		 * hint), which the source folder's sync, an expunge, may delete
		 * there (--delete2) */
		mark_name(o, c->name1, c->len1, RK_PRIO_HIGH);
		mark_sel(o, c, RK_PRIO_LOW);
		break;
	case OBS_K_REPLACE:
		mark_name(o, c->name1, c->len1, RK_PRIO_HIGH);
		mark_sel(o, c, RK_PRIO_LOW);
		break;
	case OBS_K_FETCH:
		if (!c->body || (c->sel == OBS_SEL_MBOX && c->mbox->readonly))
			break;
		mark_sel(o, c, RK_PRIO_LOW);
		break;
	case OBS_K_CLOSE:
		/* CLOSE on an EXAMINEd mailbox expunges nothing (RFC 3501 6.4.2);
		 * with nothing selected it fails. */
		if (c->sel == OBS_SEL_NONE || (c->sel == OBS_SEL_MBOX && c->mbox->readonly))
			break;
		mark_sel(o, c, RK_PRIO_LOW);
		break;
	case OBS_K_STORE:
	case OBS_K_EXPUNGE:
		mark_sel(o, c, RK_PRIO_LOW);
		break;
	case OBS_K_TREE:
	case OBS_K_RENAME:
	case OBS_K_UNKNOWN:
		obs_mark_all(o, RK_PRIO_LOW);
		break;
	default:
		break;
	}
}

/* --- hints --- */

static int hint_safe(const char *s)
{
	return strpbrk(s, "\t\r\n") == NULL;
}

/* RENAME from to succeeded: the rename hint, and the selected mailbox
 * keeps being the same mailbox under its new name (Dovecot allows renaming
 * the selected mailbox or its parent). */
static void rename_done(struct px_observe *o, const struct obs_cmd *c)
{
	char from[OBS_CANON_MAX], to[OBS_CANON_MAX], line[2 * OBS_CANON_MAX + 16];
	size_t flen;

	if (obs_canon(o, c->name1, c->len1, from, sizeof(from)) < 0 ||
	    obs_canon(o, c->name2, c->len2, to, sizeof(to)) < 0)
		return;
	if (hint_safe(from) && hint_safe(to)) {
		snprintf(line, sizeof(line), "rename\t%s\t%s", from, to);
		o->sink.hint(o->aux, line);
	}
	if (o->cur != OBS_SEL_MBOX || strcmp(from, "INBOX") == 0)
		return; /* RENAME INBOX moves its messages; INBOX stays */
	flen = strlen(from);
	if (strncmp(o->cur_mbox->name, from, flen) == 0 &&
	    (o->cur_mbox->name[flen] == '\0' ||
	     (o->sep != '\0' && o->cur_mbox->name[flen] == o->sep))) {
		struct obs_mbox *m;
		size_t tlen = strlen(to), rest = strlen(o->cur_mbox->name + flen);

		m = obs_xmalloc(sizeof(*m) + tlen + rest + 1);
		m->refs = 1;
		m->readonly = o->cur_mbox->readonly;
		memcpy(m->name, to, tlen);
		memcpy(m->name + tlen, o->cur_mbox->name + flen, rest + 1);
		/* Keep the counts: the mailbox is the same. */
		mbox_unref(&o->cur_mbox);
		o->cur_mbox = m;
	}
}

/* "move\t<from>\t<to>\t<uidvalidity>\t<src-set>\t<dst-set>" from a COPYUID
 * code (RFC 4315: uidvalidity of the destination, source and destination
 * UID sets), "copy\t..." for a COPY. Sent once per command. */
static void send_move_hint(struct px_observe *o, struct obs_cmd *c, const struct imap_msg *r)
{
	char to[OBS_CANON_MAX], line[OBS_HINT_MAX];
	const struct imap_arg *v = r->code_args, *src, *dst;
	int n;

	if (c->hinted || r->code_argc != 3 || c->sel != OBS_SEL_MBOX)
		return;
	src = imap_arg_nth(v, 1);
	dst = imap_arg_nth(v, 2);
	if (v->type != IMAP_ARG_ATOM || src->type != IMAP_ARG_ATOM || dst->type != IMAP_ARG_ATOM)
		return;
	if (obs_canon(o, c->name1, c->len1, to, sizeof(to)) < 0 || !hint_safe(to) ||
	    !hint_safe(c->mbox->name))
		return;
	n = snprintf(line, sizeof(line), "%s\t%s\t%s\t%s\t%s\t%s",
	             c->kind == OBS_K_COPY ? "copy" : "move", c->mbox->name, to, v->str, src->str,
	             dst->str);
	if (n < 0 || (size_t)n >= sizeof(line))
		return;
	c->hinted = 1;
	o->sink.hint(o->aux, line);
}

/* --- the selected mailbox of commands in flight --- */

static struct obs_cmd *newest_selecting(struct px_observe *o)
{
	unsigned i;

	for (i = o->n; i-- > 0;) {
		if (kind_selecting(o->cmds[i].kind))
			return &o->cmds[i];
	}
	return NULL;
}

/* Commands waiting for epoch get (sel, mbox). */
static void resolve_epoch(struct px_observe *o, uint64_t epoch, enum obs_sel sel,
                          struct obs_mbox *mbox)
{
	unsigned i;

	for (i = 0; i < o->n; i++) {
		struct obs_cmd *c = &o->cmds[i];

		if (c->sel != OBS_SEL_PENDING || c->dep != epoch)
			continue;
		c->sel = sel;
		c->mbox = sel == OBS_SEL_MBOX ? mbox_ref(mbox) : NULL;
	}
}

/* A selecting command completed with status st. */
static void selecting_done(struct px_observe *o, struct obs_cmd *c, enum imap_status st)
{
	char buf[OBS_CANON_MAX];
	struct obs_mbox *m = NULL;
	enum obs_sel sel;

	if (c->kind == OBS_K_SELECT || c->kind == OBS_K_EXAMINE) {
		if (st == IMAP_STATUS_OK) {
			if (obs_canon(o, c->name1, c->len1, buf, sizeof(buf)) < 0) {
				sel = OBS_SEL_UNKNOWN;
			} else {
				sel = OBS_SEL_MBOX;
				m = mbox_new(buf, c->kind == OBS_K_EXAMINE || c->readonly);
			}
		} else if (st == IMAP_STATUS_NO) {
			sel = OBS_SEL_NONE; /* RFC 3501 6.3.1: a failed SELECT deselects */
		} else {
			sel = OBS_SEL_UNKNOWN; /* BAD: the server may or may not have */
		}
	} else if (st != IMAP_STATUS_BAD) {
		sel = OBS_SEL_NONE;
	} else {
		/* A refused CLOSE/UNSELECT changes nothing. */
		sel = c->sel == OBS_SEL_PENDING ? OBS_SEL_UNKNOWN : c->sel;
		m = sel == OBS_SEL_MBOX ? mbox_ref(c->mbox) : NULL;
		resolve_epoch(o, c->epoch, sel, m);
		if (o->cur != sel || (sel == OBS_SEL_MBOX && o->cur_mbox != m))
			set_cur(o, sel, m);
		mbox_unref(&m);
		return;
	}
	resolve_epoch(o, c->epoch, sel, m);
	set_cur(o, sel, m);
	if (st == IMAP_STATUS_OK && sel != OBS_SEL_NONE) {
		/* The new mailbox's baseline (also when its name is unusable:
		 * growth then marks the whole user). */
		o->have_exists = c->have_exists;
		o->exists = c->exists;
		o->have_modseq = c->have_modseq;
		o->modseq = c->modseq;
	}
	mbox_unref(&m);
}

/* The SELECT/EXAMINE whose response the server is sending now, or NULL
 * when untagged data is about the current mailbox. */
static struct obs_cmd *select_ctx(struct px_observe *o)
{
	unsigned i;

	for (i = 0; i < o->n; i++) {
		struct obs_cmd *c = &o->cmds[i];

		if (c->kind == OBS_K_SELECT || c->kind == OBS_K_EXAMINE) {
			if (i == 0 || c->closed_seen)
				return c;
			return NULL;
		}
		if (c->kind == OBS_K_CLOSE || c->kind == OBS_K_UNSELECT)
			return NULL;
	}
	return NULL;
}

/* Does in-flight command c work on the current mailbox? PENDING/UNKNOWN
 * count: such a command marks the whole user when it completes. */
static int covers_cur(const struct px_observe *o, const struct obs_cmd *c)
{
	if (c->sel == OBS_SEL_PENDING || c->sel == OBS_SEL_UNKNOWN)
		return 1;
	return c->sel == OBS_SEL_MBOX && o->cur == OBS_SEL_MBOX &&
	       strcmp(c->mbox->name, o->cur_mbox->name) == 0;
}

/* Does the in-flight command c add messages to the current mailbox? */
static int targets_cur(const struct px_observe *o, const struct obs_cmd *c)
{
	char buf[OBS_CANON_MAX];

	if (!kind_adds(c->kind))
		return 0;
	if (c->bad1)
		return 1; /* it will mark the whole user */
	if (obs_canon(o, c->name1, c->len1, buf, sizeof(buf)) < 0)
		return c->name1 != NULL;
	return o->cur == OBS_SEL_MBOX && strcmp(buf, o->cur_mbox->name) == 0;
}

/*
 * The explained_* functions return the in-flight command of ours that
 * explains an untagged change (it marks the mailbox when it completes), or
 * NULL. The command then owes a whole-user mark should it end in BAD, which
 * marks nothing: the change was not ours after all.
 */
#define OWE_HIGH 1u
#define OWE_LOW  2u

static struct obs_cmd *explained_exists(struct px_observe *o)
{
	unsigned i;

	for (i = 0; i < o->n; i++) {
		if (targets_cur(o, &o->cmds[i]))
			return &o->cmds[i];
	}
	return NULL;
}

static struct obs_cmd *explained_expunge(struct px_observe *o)
{
	unsigned i;

	for (i = 0; i < o->n; i++) {
		struct obs_cmd *c = &o->cmds[i];

		if ((c->kind == OBS_K_EXPUNGE || c->kind == OBS_K_MOVE || c->kind == OBS_K_CLOSE ||
		     c->kind == OBS_K_REPLACE) &&
		    covers_cur(o, c))
			return c;
	}
	return NULL;
}

/* A FETCH that asked for FLAGS is answered with them: the FLAGS it gets
 * cannot be told from a foreign change (nor can a STORE's). */
static struct obs_cmd *explained_flags(struct px_observe *o)
{
	unsigned i;

	for (i = 0; i < o->n; i++) {
		struct obs_cmd *c = &o->cmds[i];

		if ((c->kind == OBS_K_STORE || (c->kind == OBS_K_FETCH && c->flagsfetch)) &&
		    covers_cur(o, c))
			return c;
	}
	return NULL;
}

/* A mod-sequence can grow by our own work: any in-flight command that
 * marks the current mailbox when it completes. */
static struct obs_cmd *explained_modseq(struct px_observe *o)
{
	unsigned i;

	for (i = 0; i < o->n; i++) {
		struct obs_cmd *c = &o->cmds[i];

		switch (c->kind) {
		case OBS_K_STORE:
		case OBS_K_EXPUNGE:
		case OBS_K_MOVE:
		case OBS_K_REPLACE:
		case OBS_K_CLOSE:
			if (covers_cur(o, c))
				return c;
			break;
		case OBS_K_FETCH:
			if (c->body && covers_cur(o, c))
				return c;
			break;
		case OBS_K_UNKNOWN:
			return c; /* marks the whole user */
		default:
			break;
		}
		if (targets_cur(o, c))
			return c;
	}
	return NULL;
}

/* Marks the current mailbox for an untagged change, unless ours. */
static void change_seen(struct px_observe *o, struct obs_cmd *ours, enum rk_prio prio)
{
	if (ours != NULL)
		ours->owe |= prio == RK_PRIO_HIGH ? OWE_HIGH : OWE_LOW;
	else if (o->cur == OBS_SEL_MBOX)
		obs_mark(o, o->cur_mbox->name, prio);
	else
		obs_mark_all(o, prio);
}

/* --- untagged data --- */

static void on_exists(struct px_observe *o, uint32_t n)
{
	struct obs_cmd *s = select_ctx(o);

	if (s != NULL) {
		s->exists = n;
		s->have_exists = 1;
		return;
	}
	if (o->cur == OBS_SEL_NONE)
		return;
	if (o->have_exists && n > o->exists)
		change_seen(o, explained_exists(o), RK_PRIO_HIGH);
	o->exists = n;
	o->have_exists = 1;
}

static void on_expunge(struct px_observe *o, uint64_t count)
{
	if (select_ctx(o) != NULL) {
		/* No SELECT response holds expunges (VANISHED (EARLIER) is
		 * handled before): we do not know whose they are. */
		obs_mark_all(o, RK_PRIO_LOW);
		return;
	}
	if (o->cur == OBS_SEL_NONE)
		return;
	o->exists = count > o->exists ? 0 : o->exists - (uint32_t)count;
	change_seen(o, explained_expunge(o), RK_PRIO_LOW);
}

static void on_flags(struct px_observe *o)
{
	if (select_ctx(o) != NULL || o->cur == OBS_SEL_NONE)
		return; /* QRESYNC/CONDSTORE resync data of a SELECT */
	change_seen(o, explained_flags(o), RK_PRIO_LOW);
}

/* [HIGHESTMODSEQ m]; done = the command whose tagged reply carries it. */
static void on_modseq(struct px_observe *o, uint64_t m, struct obs_cmd *done)
{
	struct obs_cmd *s = done;

	if (s == NULL)
		s = select_ctx(o);
	if (s != NULL && (s->kind == OBS_K_SELECT || s->kind == OBS_K_EXAMINE)) {
		s->modseq = m;
		s->have_modseq = 1;
		return;
	}
	if (o->cur == OBS_SEL_NONE)
		return;
	if (o->have_modseq && m > o->modseq)
		change_seen(o, explained_modseq(o), RK_PRIO_LOW);
	o->modseq = m;
	o->have_modseq = 1;
}

/* "* OK [CLOSED]": the old mailbox is closed; what follows belongs to the
 * oldest SELECT/EXAMINE in flight, if any. */
static void on_closed(struct px_observe *o)
{
	unsigned i;

	for (i = 0; i < o->n; i++) {
		struct obs_cmd *c = &o->cmds[i];

		if (c->kind == OBS_K_SELECT || c->kind == OBS_K_EXAMINE) {
			if (c->closed_seen)
				continue; /* [CLOSED] of the next one */
			c->closed_seen = 1;
			break;
		}
	}
	set_cur(o, OBS_SEL_NONE, NULL);
}

/* Number of UIDs in a sequence set (VANISHED); 0 when it does not parse. */
static uint64_t set_count(const char *s)
{
	uint64_t total = 0;

	while (*s != '\0') {
		char *end;
		unsigned long long a = strtoull(s, &end, 10), b = a;

		if (end == s || *s < '0' || *s > '9')
			return 0;
		s = end;
		if (*s == ':') {
			s++;
			if (*s < '0' || *s > '9')
				return 0;
			b = strtoull(s, &end, 10);
			s = end;
		}
		total += (a > b ? a - b : b - a) + 1;
		if (*s == ',')
			s++;
		else if (*s != '\0')
			return 0;
	}
	return total;
}

#define KBIT(k) (1u << (k))
_Static_assert(OBS_K_COUNT <= 32, "kinds fit a mask");

/* Is a command of one of the kinds in mask (KBIT bits) in flight? */
static int any_inflight(const struct px_observe *o, unsigned mask)
{
	unsigned i;

	for (i = 0; i < o->n; i++) {
		if (mask & KBIT(o->cmds[i].kind))
			return 1;
	}
	return 0;
}

static void learn_sep(struct px_observe *o, const struct imap_arg *a, int sure)
{
	if (a == NULL || a->type != IMAP_ARG_STRING || a->len != 1)
		return;
	if (sure || !o->sep_sure) {
		o->sep = a->str[0];
		o->sep_sure = sure;
	}
}

/* "* LIST (attrs) delim name": the delimiter; unsolicited ones (NOTIFY's
 * MailboxName/SubscriptionChange events, RFC 5465 5.4) change the tree. */
static void on_list(struct px_observe *o, const struct imap_msg *r)
{
	const struct imap_arg *delim = imap_arg_nth(r->args, 1), *name = imap_arg_nth(r->args, 2);
	const char *s;
	size_t len;
	int root = name != NULL && imap_arg_get_astring(name, &s, &len) == 0 && len == 0;

	learn_sep(o, delim, root); /* LIST "" "" answers the root's delimiter */
	/* IMAP4rev2 SELECT answers a LIST too (RFC 9051 6.3.2). */
	if (!any_inflight(o, KBIT(OBS_K_LIST) | KBIT(OBS_K_NOTIFY) | KBIT(OBS_K_SELECT) |
	                             KBIT(OBS_K_EXAMINE)))
		obs_mark_all(o, RK_PRIO_LOW);
}

/* "* STATUS name (...)": unsolicited ones are NOTIFY events (RFC 5465
 * 5.2-5.4: new mail, expunges, flag changes in another mailbox). No server
 * sends them otherwise, so NOTIFY itself needs no state here. Low, as all
 * changes whose kind we do not know. */
static void on_status(struct px_observe *o, const struct imap_msg *r)
{
	const char *s;
	size_t len;

	if (any_inflight(o, KBIT(OBS_K_STATUS) | KBIT(OBS_K_LIST) | KBIT(OBS_K_NOTIFY)))
		return;
	if (imap_arg_get_astring(r->args, &s, &len) < 0 || len > OBS_NAME_MAX)
		obs_mark_all(o, RK_PRIO_LOW);
	else
		mark_name(o, s, len, RK_PRIO_LOW);
}

/* "* NAMESPACE personal other shared": the first personal namespace's
 * delimiter, e.g. (("" ".")). */
static void on_namespace(struct px_observe *o, const struct imap_msg *r)
{
	const struct imap_arg *personal = r->args;

	if (personal == NULL || personal->type != IMAP_ARG_LIST || personal->child == NULL ||
	    personal->child->type != IMAP_ARG_LIST)
		return;
	learn_sep(o, imap_arg_nth(personal->child->child, 1), 1);
}

static void on_enabled(struct px_observe *o, const struct imap_msg *r)
{
	const struct imap_arg *a;

	for (a = r->args; a != NULL; a = a->next) {
		/* IMAP4rev2 names are UTF-8 too (RFC 9051 5.1). */
		if (imap_arg_atom_eq(a, "UTF8=ACCEPT") || imap_arg_atom_eq(a, "IMAP4REV2"))
			o->utf8 = 1;
		else if (imap_arg_atom_eq(a, "QRESYNC"))
			o->qresync = o->condstore = 1;
		else if (imap_arg_atom_eq(a, "CONDSTORE"))
			o->condstore = 1;
	}
}

/* Does a FETCH response's msg-att list hold FLAGS? */
static int fetch_has_flags(const struct imap_msg *r)
{
	const struct imap_arg *a;
	unsigned i = 0;

	if (r->args == NULL || r->args->type != IMAP_ARG_LIST)
		return 0;
	for (a = r->args->child; a != NULL; a = a->next, i++) {
		if (i % 2 == 0 && imap_arg_atom_eq(a, "FLAGS"))
			return 1;
	}
	return 0;
}

/* The oldest MOVE in flight that has no hint yet: an untagged COPYUID is
 * sent by the MOVE the server is running (RFC 6851 4.3). */
static struct obs_cmd *oldest_unhinted_move(struct px_observe *o)
{
	unsigned i;

	for (i = 0; i < o->n; i++) {
		if (o->cmds[i].kind == OBS_K_MOVE && !o->cmds[i].hinted)
			return &o->cmds[i];
	}
	return NULL;
}

static void on_code(struct px_observe *o, const struct imap_msg *r, struct obs_cmd *done)
{
	uint64_t m;

	if (r->code == NULL)
		return;
	if (strcmp(r->code, "HIGHESTMODSEQ") == 0) {
		if (r->code_argc == 1 && imap_arg_get_u64(r->code_args, &m) == 0)
			on_modseq(o, m, done);
	} else if (strcmp(r->code, "CLOSED") == 0 && done == NULL) {
		on_closed(o);
	} else if (strcmp(r->code, "COPYUID") == 0 && done == NULL) {
		struct obs_cmd *c = oldest_unhinted_move(o);

		if (c != NULL)
			send_move_hint(o, c, r);
	}
}

static void on_untagged(struct px_observe *o, const struct imap_msg *r)
{
	if (r->status != IMAP_STATUS_NONE) {
		on_code(o, r, NULL);
		return;
	}
	if (r->name == NULL)
		return;
	if (r->has_number) {
		if (strcmp(r->name, "EXISTS") == 0)
			on_exists(o, r->number);
		else if (strcmp(r->name, "EXPUNGE") == 0)
			on_expunge(o, 1);
		else if (strcmp(r->name, "FETCH") == 0 && fetch_has_flags(r))
			on_flags(o);
		return;
	}
	if (strcmp(r->name, "VANISHED") == 0) {
		const struct imap_arg *a = r->args;
		uint64_t count;

		if (a != NULL && a->type == IMAP_ARG_LIST)
			return; /* (EARLIER): resync data, not a change (RFC 7162 3.2.10) */
		count = a != NULL && a->type == IMAP_ARG_ATOM ? set_count(a->str) : 0;
		on_expunge(o, count);
		/* An unparsable set: the count is lost; the next EXISTS marks
		 * (a needless mark is cheap, a missed one is not). */
		if (count == 0)
			o->exists = 0;
	} else if (strcmp(r->name, "LIST") == 0 || strcmp(r->name, "LSUB") == 0 ||
	           strcmp(r->name, "XLIST") == 0) {
		on_list(o, r);
	} else if (strcmp(r->name, "STATUS") == 0) {
		on_status(o, r);
	} else if (strcmp(r->name, "NAMESPACE") == 0) {
		on_namespace(o, r);
	} else if (strcmp(r->name, "ENABLED") == 0) {
		on_enabled(o, r);
	}
}

/* --- the command FIFO --- */

static void cmd_remove(struct px_observe *o, unsigned i)
{
	cmd_clear(&o->cmds[i]);
	memmove(&o->cmds[i], &o->cmds[i + 1], (o->n - i - 1) * sizeof(o->cmds[0]));
	o->n--;
	memset(&o->cmds[o->n], 0, sizeof(o->cmds[0]));
}

static void drained(struct px_observe *o)
{
	if (o->n == 0 && o->overflow) {
		/* Replies may have resolved the wrong commands since the drop:
		 * one more whole-user check now that all are answered. */
		o->overflow = 0;
		obs_mark_all(o, RK_PRIO_LOW);
	}
}

static void on_tagged(struct px_observe *o, const struct imap_msg *r)
{
	struct obs_cmd *c = NULL;
	enum imap_status st = r->status;
	unsigned i;

	for (i = 0; i < o->n; i++) {
		if (cmd_tag_eq(&o->cmds[i], r->tag)) {
			c = &o->cmds[i];
			break;
		}
	}
	if (c == NULL) {
		on_code(o, r, NULL);
		return; /* answered by the proxy, a refused literal, dropped */
	}
	if (c->kind == OBS_K_SELECT && r->code != NULL && strcmp(r->code, "READ-ONLY") == 0)
		c->readonly = 1;
	on_code(o, r, c);
	if (st == IMAP_STATUS_OK && (c->kind == OBS_K_MOVE || c->kind == OBS_K_COPY) &&
	    r->code != NULL && strcmp(r->code, "COPYUID") == 0)
		send_move_hint(o, c, r);
	if (st == IMAP_STATUS_OK && c->kind == OBS_K_RENAME)
		rename_done(o, c);
	if (st != IMAP_STATUS_BAD)
		cmd_marks(o, c);
	else if (c->owe != 0)
		obs_mark_all(o, (c->owe & OWE_HIGH) ? RK_PRIO_HIGH : RK_PRIO_LOW);
	if (kind_selecting(c->kind))
		selecting_done(o, c, st);
	cmd_remove(o, i);
	drained(o);
}

/* Beyond PX_OBSERVE_MAX_INFLIGHT: the oldest command is forgotten. */
static void drop_oldest(struct px_observe *o)
{
	struct obs_cmd *c = &o->cmds[0];
	int dup = 0;
	unsigned i;

	for (i = 1; i < o->n; i++)
		dup |= o->cmds[i].tag_len == c->tag_len && strcmp(o->cmds[i].tag, c->tag) == 0;
	if (kind_selecting(c->kind)) {
		resolve_epoch(o, c->epoch, OBS_SEL_UNKNOWN, NULL);
		set_cur(o, OBS_SEL_UNKNOWN, NULL);
	}
	/* A read-only command with a unique tag is forgotten silently: its
	 * reply will match nothing. Anything else may change the mailbox or
	 * let its reply resolve a younger command with the same tag. */
	if (dup || (c->kind != OBS_K_NONE && c->kind != OBS_K_LIST && c->kind != OBS_K_STATUS &&
	            c->kind != OBS_K_ENABLE && (c->kind != OBS_K_FETCH || c->body))) {
		obs_mark_all(o, kind_adds(c->kind) ? RK_PRIO_HIGH : RK_PRIO_LOW);
		o->overflow = 1;
	}
	cmd_remove(o, 0);
}

static enum obs_kind kind_of(const struct imap_msg *cmd)
{
	size_t lo = 0, hi = sizeof(obs_cmd_defs) / sizeof(obs_cmd_defs[0]);

	/* The table is sorted (checked by the unit test's lookups). */
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		int d = strcmp(cmd->name, obs_cmd_defs[mid].name);

		if (d == 0)
			return cmd->uid && !obs_cmd_defs[mid].uid_ok ? OBS_K_UNKNOWN
			                                             : obs_cmd_defs[mid].kind;
		if (d < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return OBS_K_UNKNOWN;
}

static void fetch_item(struct obs_cmd *c, const struct imap_arg *a)
{
	const char *s;

	if (a->type != IMAP_ARG_ATOM)
		return;
	s = a->str;
	/* RFC 3501 6.4.5: BODY[...], BINARY[...] (RFC 3516), RFC822 and
	 * RFC822.TEXT set \Seen; the .PEEK forms, BINARY.SIZE and
	 * RFC822.HEADER do not. */
	if (strncasecmp(s, "BODY[", 5) == 0 || strncasecmp(s, "BINARY[", 7) == 0 ||
	    strcasecmp(s, "RFC822") == 0 || strcasecmp(s, "RFC822.TEXT") == 0)
		c->body = c->flagsfetch = 1; /* the server answers the new FLAGS */
	else if (strcasecmp(s, "FLAGS") == 0 || strcasecmp(s, "ALL") == 0 ||
	         strcasecmp(s, "FAST") == 0 || strcasecmp(s, "FULL") == 0)
		c->flagsfetch = 1;
}

/* FETCH items: a single item or a parenthesised list. */
static void fetch_items(struct obs_cmd *c, const struct imap_arg *items)
{
	const struct imap_arg *a;

	if (items == NULL)
		return;
	if (items->type != IMAP_ARG_LIST) {
		fetch_item(c, items);
		return;
	}
	for (a = items->child; a != NULL; a = a->next)
		fetch_item(c, a);
}

/* --- API --- */

struct px_observe *px_observe_new(const struct px_observe_sink *sink, void *aux)
{
	struct px_observe *o = calloc(1, sizeof(*o));

	if (o == NULL)
		abort();
	o->sink = *sink;
	o->aux = aux;
	o->cur = OBS_SEL_NONE;
	o->next_epoch = 1;
	return o;
}

void px_observe_free(struct px_observe **op)
{
	struct px_observe *o = *op;
	unsigned i;

	if (o == NULL)
		return;
	for (i = 0; i < o->n; i++)
		cmd_clear(&o->cmds[i]);
	free(o->cmds);
	mbox_unref(&o->cur_mbox);
	free(o);
	*op = NULL;
}

void px_observe_set_separator(struct px_observe *o, char sep)
{
	o->sep = sep;
	o->sep_sure = sep != '\0';
}

void px_observe_client(struct px_observe *o, const struct imap_msg *cmd)
{
	struct obs_cmd *c, *dep;
	size_t tag_len;

	if (cmd == NULL || cmd->kind != IMAP_MSG_COMMAND || cmd->tag == NULL || cmd->name == NULL)
		return;
	if (o->n >= PX_OBSERVE_MAX_INFLIGHT)
		drop_oldest(o);
	if (o->n == o->cap) {
		unsigned cap = o->cap == 0 ? 4 : o->cap * 2;
		struct obs_cmd *nc;

		if (cap > PX_OBSERVE_MAX_INFLIGHT)
			cap = PX_OBSERVE_MAX_INFLIGHT;
		nc = realloc(o->cmds, cap * sizeof(*nc));
		if (nc == NULL)
			abort();
		o->cmds = nc;
		o->cap = cap;
	}
	dep = newest_selecting(o);
	c = &o->cmds[o->n++];
	memset(c, 0, sizeof(*c));
	tag_len = strlen(cmd->tag);
	c->tag = obs_strndup(cmd->tag, tag_len < OBS_TAG_MAX ? tag_len : OBS_TAG_MAX);
	c->tag_len = tag_len;
	c->kind = kind_of(cmd);
	if (dep != NULL) {
		c->sel = OBS_SEL_PENDING;
		c->dep = dep->epoch;
	} else {
		c->sel = o->cur;
		c->mbox = mbox_ref(o->cur_mbox);
	}
	if (kind_selecting(c->kind))
		c->epoch = o->next_epoch++;

	switch (c->kind) {
	case OBS_K_SELECT:
	case OBS_K_EXAMINE:
	case OBS_K_APPEND:
		keep_name(cmd->args, &c->name1, &c->len1, &c->bad1);
		break;
	case OBS_K_COPY:
	case OBS_K_MOVE:
	case OBS_K_REPLACE:
		keep_name(imap_arg_nth(cmd->args, 1), &c->name1, &c->len1, &c->bad1);
		break;
	case OBS_K_RENAME:
		keep_name(cmd->args, &c->name1, &c->len1, &c->bad1);
		keep_name(imap_arg_nth(cmd->args, 1), &c->name2, &c->len2, &c->bad2);
		break;
	case OBS_K_FETCH:
		fetch_items(c, imap_arg_nth(cmd->args, 1));
		break;
	default:
		break;
	}
}

void px_observe_client_line(struct px_observe *o, const char *line, size_t len)
{
	/* IDLE's DONE and AUTHENTICATE data change nothing: IDLE ends with
	 * its tagged reply, which resolves it like any command. */
	(void)o;
	(void)line;
	(void)len;
}

void px_observe_server(struct px_observe *o, const struct imap_msg *resp)
{
	if (resp == NULL)
		return;
	if (resp->kind == IMAP_MSG_TAGGED && resp->tag != NULL)
		on_tagged(o, resp);
	else if (resp->kind == IMAP_MSG_UNTAGGED)
		on_untagged(o, resp);
}

void px_observe_disconnect(struct px_observe *o)
{
	unsigned i;

	for (i = 0; i < o->n; i++) {
		struct obs_cmd *c = &o->cmds[i];

		/* A mailbox still PENDING or UNKNOWN marks the whole user. */
		cmd_marks(o, c);
		cmd_clear(c);
	}
	o->n = 0;
	drained(o);
	set_cur(o, OBS_SEL_NONE, NULL);
}

const char *px_observe_selected(const struct px_observe *o)
{
	return o->cur == OBS_SEL_MBOX ? o->cur_mbox->name : NULL;
}

unsigned px_observe_inflight(const struct px_observe *o)
{
	return o->n;
}
