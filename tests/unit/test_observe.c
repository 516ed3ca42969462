/*
 * Unit tests for the proxy's observer (proxy/observe.c).
 *
 * Each case is a script of steps, run end to end through two real parsers
 * (lib/parse.c, client and server mode) as the relay runs them:
 *   "C:bytes"  bytes from the client (commands; after IDLE one raw line)
 *   "S:bytes"  bytes from the server (a tagged NO/BAD cancels a client
 *              literal waiting for "+", as the relay does)
 *   "D"        the session ends (px_observe_disconnect)
 *   "P:c"      px_observe_set_separator(c)
 *   "?"        logs "sel NAME" (px_observe_selected, "-" for none)
 *   "#"        logs "inflight N"
 * The want is the log: one line per sink call ("INBOX high", "* low",
 * "hint rename\tA\tB") and per "?"/"#" step. Every case runs with each
 * step fed whole and byte by byte; both must give the want.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imapferry/parse.h"
#include "observe.h"

#define N_ELEMENTS(a) (sizeof(a) / sizeof((a)[0]))
#define MAX_STEPS     24

struct ocase {
	const char *name;
	const char *steps[MAX_STEPS];
	const char *want;
};

/* --- the driver --- */

struct log {
	char *s;
	size_t len, cap;
};

static void log_add(struct log *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void log_add(struct log *l, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	assert_true(n >= 0);
	if (l->len + (size_t)n + 1 > l->cap) {
		l->cap = (l->len + (size_t)n + 1) * 2;
		l->s = realloc(l->s, l->cap);
		assert_non_null(l->s);
	}
	va_start(ap, fmt);
	vsnprintf(l->s + l->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	l->len += (size_t)n;
}

static void sink_mark(void *aux, const char *folder, enum rk_prio prio)
{
	log_add(aux, "%s %s\n", folder, prio == RK_PRIO_HIGH ? "high" : "low");
}

static void sink_hint(void *aux, const char *line)
{
	log_add(aux, "hint %s\n", line);
}

static const struct px_observe_sink sink = {sink_mark, sink_hint};

struct run {
	struct px_observe *o;
	struct imap_parser *cp, *sp;
	struct log log;
	int raw_next;
};

static void run_init(struct run *r, const struct imap_limits *server_limits)
{
	memset(r, 0, sizeof(*r));
	r->log.s = calloc(1, 1);
	r->log.cap = 1;
	r->o = px_observe_new(&sink, &r->log);
	r->cp = imap_parser_new(IMAP_PARSE_CLIENT, NULL);
	r->sp = imap_parser_new(IMAP_PARSE_SERVER, server_limits);
}

static char *run_done(struct run *r)
{
	px_observe_free(&r->o);
	assert_null(r->o);
	px_observe_free(&r->o); /* NULL is fine */
	imap_parser_free(&r->cp);
	imap_parser_free(&r->sp);
	return r->log.s;
}

static void feed_client(struct run *r, const char *data, size_t len)
{
	while (len > 0) {
		struct imap_event ev;
		size_t used = 0;

		imap_parser_next(r->cp, data, len, &used, &ev);
		data += used;
		len -= used;
		if (ev.type == IMAP_EV_ERROR)
			log_add(&r->log, "client parse error: %s\n", ev.error);
		if (ev.type != IMAP_EV_MESSAGE)
			continue;
		if (ev.msg->kind == IMAP_MSG_RAW_LINE) {
			px_observe_client_line(r->o, ev.msg->text, ev.msg->text_len);
			imap_parser_set_raw(r->cp, 0);
			continue;
		}
		px_observe_client(r->o, ev.msg);
		if (strcmp(ev.msg->name, "IDLE") == 0)
			imap_parser_set_raw(r->cp, 1);
	}
}

static void feed_server(struct run *r, const char *data, size_t len)
{
	while (len > 0) {
		struct imap_event ev;
		size_t used = 0;

		imap_parser_next(r->sp, data, len, &used, &ev);
		data += used;
		len -= used;
		if (ev.type == IMAP_EV_ERROR)
			log_add(&r->log, "server parse error: %s\n", ev.error);
		if (ev.type != IMAP_EV_MESSAGE)
			continue;
		if (ev.msg->kind == IMAP_MSG_TAGGED && ev.msg->status != IMAP_STATUS_OK)
			imap_parser_cancel_literal(r->cp); /* -1 when none waits */
		px_observe_server(r->o, ev.msg);
	}
}

static void feed(struct run *r, int server, const char *data, size_t len, int bytewise)
{
	size_t i;

	if (!bytewise) {
		(server ? feed_server : feed_client)(r, data, len);
		return;
	}
	for (i = 0; i < len; i++)
		(server ? feed_server : feed_client)(r, data + i, 1);
}

static void feeds(struct run *r, int server, const char *s)
{
	feed(r, server, s, strlen(s), 0);
}

static void run_step(struct run *r, const char *step, int bytewise)
{
	const char *sel;

	switch (step[0]) {
	case 'C':
		feed(r, 0, step + 2, strlen(step + 2), bytewise);
		break;
	case 'S':
		feed(r, 1, step + 2, strlen(step + 2), bytewise);
		break;
	case 'D':
		px_observe_disconnect(r->o);
		break;
	case 'P':
		px_observe_set_separator(r->o, step[2]);
		break;
	case '?':
		sel = px_observe_selected(r->o);
		log_add(&r->log, "sel %s\n", sel != NULL ? sel : "-");
		break;
	case '#':
		log_add(&r->log, "inflight %u\n", px_observe_inflight(r->o));
		break;
	default:
		fail_msg("bad step %s", step);
	}
}

/* Returns the number of failures (printed). */
static int run_case(const struct ocase *c)
{
	int bytewise, failed = 0;

	for (bytewise = 0; bytewise < 2; bytewise++) {
		struct run r;
		char *got;
		size_t i;

		run_init(&r, NULL);
		for (i = 0; i < MAX_STEPS && c->steps[i] != NULL; i++)
			run_step(&r, c->steps[i], bytewise);
		got = run_done(&r);
		if (strcmp(got, c->want) != 0) {
			print_error("case \"%s\"%s:\n--- want\n%s--- got\n%s", c->name,
			            bytewise ? " (byte by byte)" : "", c->want, got);
			failed++;
		}
		free(got);
	}
	return failed;
}

/* --- the cases --- */

#define SEL_INBOX                                                                                  \
	"C:s1 SELECT INBOX\r\n",                                                                   \
	        "S:* 3 EXISTS\r\n* OK [UIDVALIDITY 7] x\r\ns1 OK [READ-WRITE] ok\r\n"

static const struct ocase cases[] = {
        /* --- selected-mailbox tracking --- */
        {"nothing selected at start", {"?", "#"}, "sel -\ninflight 0\n"},
        {"select effective on OK",
         {"C:a SELECT INBOX\r\n", "?", "#", "S:* 3 EXISTS\r\n", "?", "S:a OK [READ-WRITE] done\r\n",
          "?", "#"},
         "sel -\ninflight 1\nsel -\nsel INBOX\ninflight 0\n"},
        {"store in selected",
         {SEL_INBOX, "C:b STORE 1 +FLAGS (\\Seen)\r\n",
          "S:* 1 FETCH (FLAGS (\\Seen))\r\nb OK Store completed\r\n"},
         "INBOX low\n"},
        {"store refused with BAD marks nothing",
         {SEL_INBOX, "C:b STORE x +FLAGS (\\Seen)\r\n", "S:b BAD Error in IMAP command\r\n"},
         ""},
        {"store refused with NO marks (partial effects)",
         {SEL_INBOX, "C:b UID STORE 1:* +FLAGS (\\Seen)\r\n", "S:b NO [SERVERBUG] x\r\n"},
         "INBOX low\n"},
        {"failed SELECT leaves none selected, STORE then BAD",
         {SEL_INBOX, "C:b SELECT Nope\r\nc STORE 1 +FLAGS (\\Seen)\r\n",
          "S:b NO [NONEXISTENT] Mailbox doesn't exist: Nope\r\n", "?",
          "S:c BAD No mailbox selected.\r\n", "?", "#", "C:d NOOP\r\n",
          "S:* 5 EXISTS\r\n* 6 EXISTS\r\n* 1 EXPUNGE\r\nd OK\r\n"},
         "sel -\nsel -\ninflight 0\n"},
        {"failed SELECT then STORE answered NO: ambiguous, whole user",
         {SEL_INBOX, "C:b SELECT Nope\r\nc STORE 1 +FLAGS (\\Seen)\r\n",
          "S:b NO [NONEXISTENT] no\r\nc NO no\r\n"},
         "* low\n"},
        {"BAD SELECT: the state is unknown, a STORE marks the whole user",
         {SEL_INBOX, "C:b SELECT\r\n", "S:b BAD Missing argument\r\n", "?",
          "C:c STORE 1 +FLAGS (\\Seen)\r\n", "S:c OK x\r\n"},
         "sel -\n* low\n"},
        {"SELECT pipelined before STORE (one chunk)",
         {"C:a SELECT INBOX\r\nb STORE 1 +FLAGS (\\Seen)\r\n",
          "S:* 2 EXISTS\r\na OK [READ-WRITE] ok\r\n* 1 FETCH (FLAGS (\\Seen))\r\nb OK ok\r\n"},
         "INBOX low\n"},
        {"STORE behind a pending SELECT of another mailbox goes to the new one",
         {SEL_INBOX, "C:b SELECT Sent\r\nc STORE 2 -FLAGS (\\Seen)\r\n", "#",
          "S:* 9 EXISTS\r\nb OK [READ-WRITE] ok\r\nc OK ok\r\n", "?"},
         "inflight 2\nSent low\nsel Sent\n"},
        {"STORE before a pipelined SELECT stays in the old mailbox",
         {SEL_INBOX, "C:b STORE 2 -FLAGS (\\Seen)\r\nc SELECT Sent\r\n",
          "S:* 2 FETCH (FLAGS ())\r\nb OK ok\r\n* 9 EXISTS\r\nc OK ok\r\n"},
         "INBOX low\n"},
        {"STORE answered before its pending SELECT: ambiguous",
         {"C:a SELECT Sent\r\nb STORE 1 +FLAGS (\\Seen)\r\n", "S:b OK odd\r\na OK ok\r\n"},
         "* low\n"},
        {"several commands in flight, client and server interleaved",
         {SEL_INBOX, "C:a STORE 1 +FLAGS (\\Flagged)\r\n", "C:b FETCH 2 BODY.PEEK[]\r\n",
          "S:* 1 FETCH (FLAGS (\\Flagged))\r\n", "C:c APPEND INBOX {1+}\r\nx\r\n",
          "S:a OK\r\n* 4 EXISTS\r\n", "C:d NOOP\r\n", "#",
          "S:* 2 FETCH (BODY[] {2}\r\nhi)\r\nb OK\r\nc OK\r\n* 5 EXISTS\r\nd OK\r\n", "#"},
         "INBOX low\ninflight 3\nINBOX high\nINBOX high\ninflight 0\n"},
        {"two SELECTs and a CLOSE pipelined",
         {"C:a SELECT A\r\nb STORE 1 +FLAGS x\r\nc SELECT B\r\nd EXPUNGE\r\ne CLOSE\r\n"
          "f STORE 1 +FLAGS x\r\n",
          "S:* 1 EXISTS\r\na OK ok\r\nb OK ok\r\n* 5 EXISTS\r\nc OK ok\r\n"
          "* 3 EXPUNGE\r\nd OK ok\r\ne OK ok\r\nf BAD No mailbox selected\r\n",
          "?"},
         "A low\nB low\nB low\nsel -\n"},
        {"EXAMINE: body fetches and CLOSE change nothing",
         {"C:a EXAMINE INBOX\r\n", "S:* 3 EXISTS\r\na OK [READ-ONLY] ok\r\n",
          "C:b FETCH 1 BODY[]\r\n", "S:* 1 FETCH (BODY[] {2}\r\nhi)\r\nb OK ok\r\n",
          "C:c CLOSE\r\n", "S:c OK ok\r\n", "?"},
         "sel -\n"},
        {"SELECT answered READ-ONLY behaves like EXAMINE",
         {"C:a SELECT INBOX\r\n", "S:* 3 EXISTS\r\na OK [READ-ONLY] ok\r\n",
          "C:b FETCH 1 RFC822\r\n", "S:b OK ok\r\n"},
         ""},
        {"CLOSE marks the selected mailbox and deselects",
         {SEL_INBOX, "C:b CLOSE\r\n", "S:b OK Close completed\r\n", "?"},
         "INBOX low\nsel -\n"},
        {"CLOSE refused with BAD keeps the mailbox",
         {SEL_INBOX, "C:b CLOSE x\r\n", "S:b BAD Unexpected arguments\r\n", "?"},
         "sel INBOX\n"},
        {"UNSELECT deselects without marking",
         {SEL_INBOX, "C:b UNSELECT\r\n", "S:b OK ok\r\n", "?", "C:c STORE 1 +FLAGS x\r\n",
          "S:c BAD No mailbox selected\r\n"},
         "sel -\n"},
        {"UNAUTHENTICATE deselects",
         {SEL_INBOX, "C:b UNAUTHENTICATE\r\n", "S:b OK ok\r\n", "?"},
         "sel -\n"},
        {"QRESYNC [CLOSED]: what follows is the new mailbox's",
         {"C:e ENABLE QRESYNC\r\n", "S:* ENABLED QRESYNC\r\ne OK ok\r\n", SEL_INBOX,
          "C:a NOOP\r\nb SELECT Sent (QRESYNC (67890007 20050715194045000 41:211,214:541))\r\n",
          "S:* OK [CLOSED] Previous mailbox closed.\r\n* 10 EXISTS\r\n"
          "* OK [HIGHESTMODSEQ 900] x\r\n* VANISHED (EARLIER) 41,43:116\r\n"
          "* 49 FETCH (UID 249 FLAGS (\\Seen) MODSEQ (90060115194045001))\r\n"
          "a OK ok\r\nb OK [READ-WRITE] ok\r\n",
          "?", "C:c NOOP\r\n", "S:* 11 EXISTS\r\nc OK ok\r\n"},
         "sel Sent\nSent high\n"},
        {"untagged data before the pipelined SELECT runs is the old mailbox's",
         {SEL_INBOX, "C:a NOOP\r\nb SELECT Sent\r\n",
          "S:* 4 EXISTS\r\na OK ok\r\n* 2 EXISTS\r\nb OK ok\r\n", "?", "C:c NOOP\r\n",
          "S:* 2 EXISTS\r\nc OK ok\r\n"},
         "INBOX high\nsel Sent\n"},
        {"SELECT of a mailbox after a failed one",
         {"C:a SELECT Nope\r\nb SELECT INBOX\r\n", "S:a NO no\r\n* 3 EXISTS\r\nb OK ok\r\n", "?"},
         "sel INBOX\n"},

        /* --- commands -> marks --- */
        {"APPEND with a synchronising literal",
         {"C:a APPEND Sent (\\Seen) {5}\r\n", "S:+ OK\r\n", "C:hello\r\n",
          "S:a OK [APPENDUID 38505 3955] Append completed.\r\n"},
         "Sent high\n"},
        {"APPEND refused before the literal: no command, nothing",
         {"C:a APPEND Nope {5}\r\n", "S:a NO [TRYCREATE] Mailbox doesn't exist\r\n", "C:b NOOP\r\n",
          "S:b OK ok\r\n", "#"},
         "inflight 0\n"},
        {"MULTIAPPEND with LITERAL+ (RFC 3502)",
         {"C:a APPEND Drafts (\\Draft) \"17-Jul-1996 02:44:25 -0700\" {3+}\r\nabc (\\Seen) "
          "{2+}\r\nxy\r\n",
          "S:a OK [APPENDUID 1 7:8] ok\r\n"},
         "Drafts high\n"},
        {"CATENATE (RFC 4469)",
         {"C:a APPEND Sent CATENATE (URL \"/INBOX;UIDVALIDITY=1/;UID=2\" TEXT {4+}\r\nabcd)\r\n",
          "S:a OK ok\r\n"},
         "Sent high\n"},
        {"APPEND UTF8 (RFC 6855) with literal8",
         {"C:a APPEND Sent UTF8 (~{3+}\r\nabc)\r\n", "S:a NO [OVERQUOTA] full\r\n"},
         "Sent high\n"},
        {"APPEND to a mailbox named by a literal",
         {"C:a APPEND {4+}\r\nTodo {3+}\r\nabc\r\n", "S:a OK ok\r\n"},
         "Todo high\n"},
        {"APPEND with BAD marks nothing", {"C:a APPEND\r\n", "S:a BAD Missing\r\n"}, ""},
        {"COPY marks the target, with a copy hint",
         {SEL_INBOX, "C:b UID COPY 1:3 Archive\r\n",
          "S:b OK [COPYUID 5 1:3 7:9] Copy completed\r\n"},
         "hint copy\tINBOX\tArchive\t5\t1:3\t7:9\nArchive high\n"},
        {"COPY into the selected mailbox: its EXISTS is ours",
         {SEL_INBOX, "C:b COPY 1 INBOX\r\n", "S:* 4 EXISTS\r\nb OK ok\r\n"},
         "INBOX high\n"},
        {"MOVE with untagged COPYUID before the EXPUNGEs (RFC 6851)",
         {SEL_INBOX, "C:b UID MOVE 1:2 Trash\r\n",
          "S:* OK [COPYUID 9 1:2 10:11] Moved UIDs.\r\n* 1 EXPUNGE\r\n* 1 EXPUNGE\r\n"
          "b OK Move completed.\r\n"},
         "hint move\tINBOX\tTrash\t9\t1:2\t10:11\nTrash high\nINBOX low\n"},
        {"MOVE with COPYUID in the tagged OK",
         {SEL_INBOX, "C:b MOVE 3 Trash\r\n",
          "S:* VANISHED 3\r\nb OK [COPYUID 9 3 12] Move completed.\r\n"},
         "hint move\tINBOX\tTrash\t9\t3\t12\nTrash high\nINBOX low\n"},
        {"two MOVEs pipelined: each COPYUID to its MOVE",
         {SEL_INBOX, "C:b MOVE 1 A\r\nc MOVE 1 B\r\n",
          "S:* OK [COPYUID 1 5 1] x\r\n* 1 EXPUNGE\r\nb OK ok\r\n"
          "* OK [COPYUID 2 6 1] x\r\n* 1 EXPUNGE\r\nc OK ok\r\n"},
         "hint move\tINBOX\tA\t1\t5\t1\nA high\nINBOX low\n"
         "hint move\tINBOX\tB\t2\t6\t1\nB high\nINBOX low\n"},
        {"MOVE refused with NO: marks, no hint",
         {SEL_INBOX, "C:b MOVE 1 Trash\r\n", "S:b NO [OVERQUOTA] x\r\n"},
         "Trash high\nINBOX low\n"},
        {"REPLACE (RFC 8508)",
         {SEL_INBOX, "C:b UID REPLACE 3 INBOX {3+}\r\nabc\r\n",
          "S:* 4 EXISTS\r\n* 3 EXPUNGE\r\nb OK [APPENDUID 1 9] ok\r\n",
          "C:c REPLACE 1 Drafts x\r\n", "S:* 1 EXPUNGE\r\nc OK ok\r\n"},
         "INBOX high\nINBOX low\nDrafts high\nINBOX low\n"},
        {"FETCH BODY[] sets \\Seen",
         {SEL_INBOX, "C:b FETCH 1 (UID BODY[])\r\n",
          "S:* 1 FETCH (UID 5 BODY[] {2}\r\nhi FLAGS (\\Seen))\r\nb OK ok\r\n"},
         "INBOX low\n"},
        {"FETCH single non-PEEK items",
         {SEL_INBOX, "C:b FETCH 1 BODY[TEXT]\r\n", "S:b OK ok\r\n", "C:c UID FETCH 1 RFC822\r\n",
          "S:c OK ok\r\n", "C:d FETCH 1 rfc822.text\r\n", "S:d OK ok\r\n",
          "C:e FETCH 1 BINARY[1]\r\n", "S:e OK ok\r\n",
          "C:f FETCH 1 (FLAGS BODY[HEADER.FIELDS (DATE FROM)]<0.100>)\r\n", "S:f OK ok\r\n"},
         "INBOX low\nINBOX low\nINBOX low\nINBOX low\nINBOX low\n"},
        {"FETCH that does not set \\Seen",
         {SEL_INBOX,
          "C:b FETCH 1:* (UID FLAGS BODY.PEEK[] BINARY.PEEK[1] BINARY.SIZE[1] RFC822.HEADER "
          "RFC822.SIZE BODY BODYSTRUCTURE ENVELOPE)\r\n",
          "S:b OK ok\r\n", "C:c UID FETCH 1 BODY.PEEK[HEADER]\r\n", "S:c OK ok\r\n",
          "C:d FETCH 1 ALL\r\n", "S:d OK ok\r\n"},
         ""},
        {"FETCH BODY[] refused with BAD",
         {SEL_INBOX, "C:b FETCH x BODY[]\r\n", "S:b BAD x\r\n"},
         ""},
        {"EXPUNGE marks, its own EXPUNGEs do not",
         {SEL_INBOX, "C:b EXPUNGE\r\n", "S:* 3 EXPUNGE\r\n* 1 EXPUNGE\r\nb OK ok\r\n",
          "C:c UID EXPUNGE 7\r\n", "S:* VANISHED 7\r\nc OK ok\r\n"},
         "INBOX low\nINBOX low\n"},
        {"tree commands",
         {"C:a CREATE Foo\r\n", "S:a OK ok\r\n", "C:b DELETE Foo\r\n", "S:b OK ok\r\n",
          "C:c SUBSCRIBE Bar\r\n", "S:c OK ok\r\n", "C:d UNSUBSCRIBE Bar\r\n", "S:d NO x\r\n",
          "C:e SETACL Bar fred lrswi\r\n", "S:e OK ok\r\n", "C:f DELETEACL Bar fred\r\n",
          "S:f OK ok\r\n", "C:g SETMETADATA INBOX (/private/comment \"x\")\r\n", "S:g OK ok\r\n",
          "C:h SETQUOTA \"\" (STORAGE 512)\r\n", "S:h OK ok\r\n", "C:i CREATE Baz\r\n",
          "S:i BAD x\r\n"},
         "* low\n* low\n* low\n* low\n* low\n* low\n* low\n* low\n"},
        {"RENAME: hint and tree",
         {"C:a RENAME Work Archive/Work\r\n", "S:a OK ok\r\n"},
         "hint rename\tWork\tArchive/Work\n* low\n"},
        {"RENAME refused: tree mark, no hint", {"C:a RENAME A B\r\n", "S:a NO x\r\n"}, "* low\n"},
        {"RENAME of the selected mailbox and of its parent",
         {"P:.", "C:a SELECT A.b\r\n", "S:* 1 EXISTS\r\na OK ok\r\n", "C:b RENAME A.b A.c\r\n",
          "S:b OK ok\r\n", "?", "C:c RENAME A Z\r\n", "S:c OK ok\r\n", "?",
          "C:d STORE 1 +FLAGS x\r\n", "S:d OK ok\r\n"},
         "hint rename\tA.b\tA.c\n* low\nsel A.c\nhint rename\tA\tZ\n* low\nsel Z.c\nZ.c low\n"},
        {"unknown and X- commands: the whole user",
         {"C:a XFOOBAR 1 2\r\n", "S:a OK ok\r\n", "C:b X-APPLE-THING\r\n", "S:b NO x\r\n",
          "C:c FROBNICATE\r\n", "S:c BAD Unknown command\r\n", "C:d UID NOOP\r\n", "S:d BAD x\r\n",
          "C:e UID WHATEVER\r\n", "S:e OK ok\r\n"},
         "* low\n* low\n* low\n"},
        {"read-only commands mark nothing",
         {SEL_INBOX,
          "C:a CAPABILITY\r\nb NOOP\r\nc STATUS INBOX (MESSAGES)\r\nd LIST \"\" *\r\n"
          "e LSUB \"\" *\r\nf XLIST \"\" *\r\ng SEARCH ALL\r\nh UID SEARCH ALL\r\n"
          "i SORT (DATE) UTF-8 ALL\r\nj UID THREAD REFS UTF-8 ALL\r\nk ID NIL\r\n"
          "l NAMESPACE\r\nm GETQUOTA \"\"\r\nn GETQUOTAROOT INBOX\r\no GETACL INBOX\r\n"
          "p MYRIGHTS INBOX\r\nq LISTRIGHTS INBOX fred\r\nr GETMETADATA INBOX /private/x\r\n"
          "s ENABLE CONDSTORE\r\nt CHECK\r\nu ESEARCH IN (personal) ALL\r\nv EXAMINE INBOX\r\n"
          "w UNSELECT\r\nx NOTIFY NONE\r\ny COMPRESS DEFLATE\r\nz LOGOUT\r\n",
          "#",
          "S:a OK\r\nb OK\r\n* STATUS INBOX (MESSAGES 3)\r\nc OK\r\n"
          "* LIST () \".\" INBOX\r\nd OK\r\n* LSUB () \".\" INBOX\r\ne OK\r\n"
          "* XLIST () \".\" INBOX\r\nf OK\r\n* SEARCH 1 2\r\ng OK\r\nh OK\r\ni OK\r\nj OK\r\n"
          "k OK\r\nl OK\r\nm OK\r\nn OK\r\no OK\r\np OK\r\nq OK\r\nr OK\r\n"
          "* ENABLED CONDSTORE\r\ns OK\r\nt OK\r\nu OK\r\n* 3 EXISTS\r\nv OK\r\nw OK\r\nx OK\r\n"
          "y NO [CANNOT] x\r\n* BYE bye\r\nz OK\r\n",
          "#"},
         "inflight 26\ninflight 0\n"},
        {"IDLE with EXISTS during idle",
         {SEL_INBOX, "C:b IDLE\r\n", "S:+ idling\r\n", "S:* 4 EXISTS\r\n* 1 RECENT\r\n",
          "C:DONE\r\n", "S:b OK Idle completed.\r\n", "#"},
         "INBOX high\ninflight 0\n"},
        {"IDLE: expunge and flag changes by others",
         {SEL_INBOX, "C:b IDLE\r\n", "S:+ idling\r\n* 2 EXPUNGE\r\n* 1 FETCH (FLAGS (\\Seen))\r\n",
          "C:DONE\r\n", "S:b OK ok\r\n"},
         "INBOX low\nINBOX low\n"},

        /* --- untagged changes --- */
        {"EXISTS growth counts from SELECT and tracks EXPUNGE",
         {SEL_INBOX, "C:a NOOP\r\n", "S:* 3 EXISTS\r\na OK ok\r\n", "C:b NOOP\r\n",
          "S:* 4 EXISTS\r\n* 4 EXISTS\r\nb OK ok\r\n", "C:c NOOP\r\n",
          "S:* 2 EXPUNGE\r\n* 4 EXISTS\r\nc OK ok\r\n"},
         "INBOX high\nINBOX low\nINBOX high\n"},
        {"EXISTS explained by an APPEND into the selected mailbox",
         {SEL_INBOX, "C:b APPEND INBOX {3+}\r\nabc\r\n", "S:* 4 EXISTS\r\nb OK ok\r\n"},
         "INBOX high\n"},
        {"a change taken for ours is marked when ours ends in BAD",
         {SEL_INBOX, "C:b APPEND INBOX {3+}\r\nabc\r\n", "S:* 4 EXISTS\r\nb BAD odd\r\n",
          "C:c FETCH 1:* FLAGS\r\n", "S:* 1 FETCH (FLAGS ())\r\nc BAD odd\r\n"},
         "* high\n* low\n"},
        {"EXISTS not explained by an APPEND elsewhere",
         {SEL_INBOX, "C:b APPEND Sent {3+}\r\nabc\r\n", "S:* 4 EXISTS\r\nb OK ok\r\n"},
         "INBOX high\nSent high\n"},
        {"VANISHED marks, VANISHED (EARLIER) does not",
         {SEL_INBOX, "C:a NOOP\r\n", "S:* VANISHED (EARLIER) 1:5\r\na OK\r\n", "C:b NOOP\r\n",
          "S:* VANISHED 1:2,4\r\n* 1 EXISTS\r\nb OK\r\n"},
         "INBOX low\nINBOX high\n"},
        {"FETCH FLAGS: foreign while no STORE/FETCH of ours is in flight",
         {SEL_INBOX, "C:a NOOP\r\n", "S:* 2 FETCH (FLAGS (\\Deleted))\r\na OK\r\n",
          "C:b FETCH 1:* (FLAGS)\r\n", "S:* 2 FETCH (FLAGS (\\Deleted))\r\nb OK\r\n",
          "C:c STORE 1 +FLAGS.SILENT (\\Seen)\r\n", "S:* 2 FETCH (FLAGS ())\r\nc OK\r\n",
          "C:d UID FETCH 1:* (UID RFC822.SIZE)\r\n",
          "S:* 1 FETCH (UID 3 RFC822.SIZE 9)\r\n* 2 FETCH (UID 4 FLAGS (\\Seen))\r\nd OK\r\n"},
         "INBOX low\nINBOX low\nINBOX low\n"},
        {"HIGHESTMODSEQ growth",
         {"C:a SELECT INBOX (CONDSTORE)\r\n",
          "S:* 3 EXISTS\r\n* OK [HIGHESTMODSEQ 10] x\r\na OK [READ-WRITE] ok\r\n", "C:b NOOP\r\n",
          "S:* OK [HIGHESTMODSEQ 10] x\r\nb OK\r\n", "C:c NOOP\r\n",
          "S:* OK [HIGHESTMODSEQ 12] x\r\nc OK\r\n", "C:d EXPUNGE\r\n",
          "S:* 1 EXPUNGE\r\nd OK [HIGHESTMODSEQ 13] Expunged.\r\n", "C:e NOOP\r\n",
          "S:e OK [HIGHESTMODSEQ 14] x\r\n"},
         "INBOX low\nINBOX low\nINBOX low\n"},
        {"untagged changes with nothing selected are ignored",
         {"C:a NOOP\r\n", "S:* 3 EXISTS\r\n* 2 EXPUNGE\r\n* 1 FETCH (FLAGS ())\r\na OK\r\n"},
         ""},
        {"a literal holding IMAP-looking lines is data",
         {SEL_INBOX, "C:b FETCH 1 BODY.PEEK[]\r\n",
          "S:* 1 FETCH (BODY[] {58}\r\n* 3 EXPUNGE\r\n* 9 EXISTS\r\n* 1 FETCH (FLAGS (\\Seen))\r\n"
          "b OK\r\n UID 1)\r\nb OK Fetch completed.\r\n",
          "#"},
         "inflight 0\n"},
        {"tagged reply with an unknown tag is ignored",
         {SEL_INBOX, "S:zz OK what\r\nzz NO x\r\n", "#"},
         "inflight 0\n"},

        /* --- tags --- */
        {"duplicate tags resolve oldest first",
         {SEL_INBOX, "C:a NOOP\r\na STORE 1 +FLAGS x\r\na FETCH 1 BODY[]\r\n", "#", "S:a OK\r\n",
          "#", "S:a BAD x\r\n", "#", "S:a OK\r\n", "#"},
         "inflight 3\ninflight 2\ninflight 1\nINBOX low\ninflight 0\n"},
        {"tags are case-sensitive",
         {SEL_INBOX, "C:A STORE 1 +FLAGS x\r\na NOOP\r\n", "S:a OK\r\n", "#", "S:A OK\r\n"},
         "inflight 1\nINBOX low\n"},

        /* --- names --- */
        {"mUTF-7 names are decoded",
         {"C:a APPEND &AOQ-bc {1+}\r\nx\r\n", "S:a OK\r\n", "C:b SELECT \"B&APw-cher\"\r\n",
          "S:* 0 EXISTS\r\nb OK\r\n", "?"},
         "\xc3\xa4"
         "bc high\nsel B\xc3\xbc"
         "cher\n"},
        {"UTF8=ACCEPT names are kept",
         {"C:e ENABLE UTF8=ACCEPT\r\n", "S:* ENABLED UTF8=ACCEPT\r\ne OK\r\n",
          "C:a APPEND \"\xc3\xa4"
          "bc\" {1+}\r\nx\r\n",
          "S:a OK\r\n", "C:b APPEND &AOQ-bc {1+}\r\nx\r\n", "S:b OK\r\n"},
         "\xc3\xa4"
         "bc high\n&AOQ-bc high\n"},
        {"ENABLE pipelined before APPEND applies to it",
         {"C:e ENABLE UTF8=ACCEPT\r\na APPEND &AOQ-bc {1+}\r\nx\r\n",
          "S:* ENABLED UTF8=ACCEPT\r\ne OK\r\na OK\r\n"},
         "&AOQ-bc high\n"},
        {"ENABLE without ENABLED changes nothing",
         {"C:e ENABLE UTF8=ACCEPT\r\n", "S:e OK\r\n", "C:a APPEND &AOQ-bc {1+}\r\nx\r\n",
          "S:a OK\r\n"},
         "\xc3\xa4"
         "bc high\n"},
        {"IMAP4rev2 names are UTF-8",
         {"C:e ENABLE IMAP4rev2\r\n", "S:* ENABLED IMAP4REV2\r\ne OK\r\n",
          "C:a APPEND &AOQ-bc {1+}\r\nx\r\n", "S:a OK\r\n"},
         "&AOQ-bc high\n"},
        {"INBOX in any case",
         {"C:a SELECT inbox\r\n", "S:* 1 EXISTS\r\na OK\r\n", "?", "C:b COPY 1 iNbOx\r\n",
          "S:* 2 EXISTS\r\nb OK\r\n"},
         "sel INBOX\nINBOX high\n"},
        {"INBOX children folded once the separator is known from LIST",
         {"C:a COPY 1 inbox.Sub\r\n", "S:a OK\r\n", "C:b LIST \"\" \"\"\r\n",
          "S:* LIST (\\Noselect) \".\" \"\"\r\nb OK\r\n", "C:c COPY 1 inbox.Sub\r\n", "S:c OK\r\n",
          "C:d COPY 1 inboxes.Sub\r\n", "S:d OK\r\n"},
         "inbox.Sub high\nINBOX.Sub high\ninboxes.Sub high\n"},
        {"separator from NAMESPACE",
         {"C:n NAMESPACE\r\n", "S:* NAMESPACE ((\"\" \"/\")) NIL ((\"Shared/\" \".\"))\r\nn OK\r\n",
          "C:l LIST \"\" *\r\n", "S:* LIST () \".\" Shared.x\r\nl OK\r\n",
          "C:a APPEND Inbox/Sub {1+}\r\nx\r\n", "S:a OK\r\n"},
         "INBOX/Sub high\n"},
        {"separator from the relay",
         {"P:/", "C:a APPEND inbox/x {1+}\r\nx\r\n", "S:a OK\r\n"},
         "INBOX/x high\n"},
        {"quoted name with spaces, invalid mUTF-7 kept as is",
         {"C:a APPEND \"My Folder\" {1+}\r\nx\r\n", "S:a OK\r\n", "C:b APPEND &Jjo {1+}\r\nx\r\n",
          "S:b OK\r\n"},
         "My Folder high\n&Jjo high\n"},
        {"a mailbox named * is the whole user",
         {"C:a APPEND * {1+}\r\nx\r\n", "S:a OK\r\n"},
         "* high\n"},

        /* --- NOTIFY (RFC 5465) --- */
        {"NOTIFY: unsolicited STATUS and LIST",
         {"C:a NOTIFY SET (personal (MessageNew MessageExpunge MailboxName))\r\n",
          "S:* STATUS INBOX (MESSAGES 3)\r\na OK\r\n",
          "S:* STATUS Sent (MESSAGES 3 UIDNEXT 9)\r\n* LIST () \".\" NewFolder\r\n",
          "C:b STATUS Sent (UIDNEXT)\r\n", "S:* STATUS Sent (UIDNEXT 9)\r\nb OK\r\n",
          "C:c LIST \"\" %\r\n", "S:* LIST () \".\" x\r\nc OK\r\n",
          "S:* STATUS &AOQ-bc (MESSAGES 1)\r\n"},
         "Sent low\n* low\n\xc3\xa4"
         "bc low\n"},

        /* --- disconnect --- */
        {"disconnect with APPEND in flight",
         {"C:a APPEND Sent {5}\r\n", "S:+ OK\r\n", "C:hello\r\n", "D", "#"},
         "Sent high\ninflight 0\n"},
        {"disconnect: only mutating commands mark",
         {SEL_INBOX, "C:a NOOP\r\nb FETCH 1 BODY.PEEK[]\r\nc STORE 1 +FLAGS x\r\n", "D", "?"},
         "INBOX low\nsel -\n"},
        {"disconnect with STORE behind a pending SELECT",
         {"C:a SELECT INBOX\r\nb STORE 1 +FLAGS x\r\nc CREATE x\r\n", "D"},
         "* low\n* low\n"},
        {"disconnect after an untagged COPYUID",
         {SEL_INBOX, "C:b MOVE 1 Trash\r\n", "S:* OK [COPYUID 9 4 5] x\r\n", "D"},
         "hint move\tINBOX\tTrash\t9\t4\t5\nTrash high\nINBOX low\n"},
};

static void test_cases(void **state)
{
	size_t i;
	int failed = 0;

	(void)state;
	for (i = 0; i < N_ELEMENTS(cases); i++)
		failed += run_case(&cases[i]);
	if (failed > 0)
		fail_msg("%d case runs failed", failed);
}

/* --- cases built in code --- */

/* A FETCH BODY[] answer big enough to be streamed, full of IMAP-looking
 * lines, with the server parser's default and with tiny limits. */
static void test_streamed_body(void **state)
{
	struct imap_limits tiny;
	static const char pattern[] = "* 3 EXPUNGE\r\n* 7 EXISTS\r\nb OK x\r\n";
	size_t body_len = 200000, i, total;
	char *resp, *p;
	int pass;

	(void)state;
	imap_limits_default(&tiny, IMAP_PARSE_SERVER);
	tiny.max_inline_literal = 16;
	resp = malloc(body_len + 256);
	assert_non_null(resp);
	p = resp + sprintf(resp, "* 1 FETCH (FLAGS (\\Seen) BODY[] {%zu}\r\n", body_len);
	for (i = 0; i < body_len; i++)
		p[i] = pattern[i % (sizeof(pattern) - 1)];
	strcpy(p + body_len, ")\r\nb OK Fetch completed.\r\n");
	total = strlen(resp);
	for (pass = 0; pass < 2; pass++) {
		struct run r;
		char *got;

		run_init(&r, pass ? &tiny : NULL);
		feeds(&r, 0, "a SELECT INBOX\r\n");
		feeds(&r, 1, "* 3 EXISTS\r\na OK\r\n");
		feeds(&r, 0, "b FETCH 1 BODY[]\r\n");
		/* in odd chunks */
		for (i = 0; i < total; i += 4093)
			feed(&r, 1, resp + i, total - i < 4093 ? total - i : 4093, 0);
		feeds(&r, 0, "c NOOP\r\n");
		feeds(&r, 1, "c OK\r\n");
		got = run_done(&r);
		assert_string_equal(got, "INBOX low\n"); /* the FETCH's own \Seen */
		free(got);
	}
	free(resp);
}

/* PX_OBSERVE_MAX_INFLIGHT bounds memory. */
static void test_inflight_bound(void **state)
{
	struct run r;
	char line[64], *got;
	unsigned i;

	(void)state;

	/* Read-only commands with unique tags: dropped silently. */
	run_init(&r, NULL);
	for (i = 0; i < PX_OBSERVE_MAX_INFLIGHT + 50; i++) {
		snprintf(line, sizeof(line), "t%u NOOP\r\n", i);
		feed(&r, 0, line, strlen(line), 0);
		assert_true(px_observe_inflight(r.o) <= PX_OBSERVE_MAX_INFLIGHT);
	}
	assert_int_equal(px_observe_inflight(r.o), PX_OBSERVE_MAX_INFLIGHT);
	for (i = 0; i < PX_OBSERVE_MAX_INFLIGHT + 50; i++) {
		snprintf(line, sizeof(line), "t%u OK\r\n", i);
		feed(&r, 1, line, strlen(line), 0);
	}
	assert_int_equal(px_observe_inflight(r.o), 0);
	got = run_done(&r);
	assert_string_equal(got, "");
	free(got);

	/* Mutating commands: the drop marks the whole user (high for an
	 * APPEND), and once all replies are in, one more whole-user mark. */
	run_init(&r, NULL);
	feeds(&r, 0, "s SELECT INBOX\r\n");
	feeds(&r, 1, "s OK\r\n");
	feeds(&r, 0, "x APPEND Sent {1+}\r\nx\r\n");
	for (i = 1; i < PX_OBSERVE_MAX_INFLIGHT + 1; i++) {
		snprintf(line, sizeof(line), "t%u STORE 1 +FLAGS x\r\n", i);
		feed(&r, 0, line, strlen(line), 0);
	}
	assert_int_equal(px_observe_inflight(r.o), PX_OBSERVE_MAX_INFLIGHT);
	assert_string_equal(r.log.s, "* high\n");
	feeds(&r, 0, "u NOOP\r\n"); /* drops t1, a STORE */
	assert_string_equal(r.log.s, "* high\n* low\n");
	feeds(&r, 1, "x OK\r\nt1 OK\r\n"); /* dropped: no match */
	for (i = 2; i < PX_OBSERVE_MAX_INFLIGHT + 1; i++) {
		snprintf(line, sizeof(line), "t%u OK\r\n", i);
		feed(&r, 1, line, strlen(line), 0);
	}
	assert_int_equal(px_observe_inflight(r.o), 1);
	r.log.len = 0;
	r.log.s[0] = '\0';
	feeds(&r, 1, "u OK\r\n");
	got = run_done(&r);
	assert_string_equal(got, "* low\n");
	free(got);

	/* The same tag on every command: a drop makes replies ambiguous. */
	run_init(&r, NULL);
	for (i = 0; i < PX_OBSERVE_MAX_INFLIGHT + 1; i++)
		feeds(&r, 0, "a NOOP\r\n");
	assert_string_equal(r.log.s, "* low\n");
	for (i = 0; i < PX_OBSERVE_MAX_INFLIGHT + 1; i++)
		feeds(&r, 1, "a OK\r\n");
	got = run_done(&r);
	assert_string_equal(got, "* low\n* low\n");
	free(got);

	/* A dropped SELECT: the selected mailbox becomes unknown. */
	run_init(&r, NULL);
	feeds(&r, 0, "s SELECT INBOX\r\nt STORE 1 +FLAGS x\r\n");
	for (i = 0; i < PX_OBSERVE_MAX_INFLIGHT - 1; i++) {
		snprintf(line, sizeof(line), "n%u NOOP\r\n", i);
		feed(&r, 0, line, strlen(line), 0);
	}
	assert_string_equal(r.log.s, "* low\n");
	feeds(&r, 1, "* 3 EXISTS\r\ns OK\r\nt OK\r\n");
	assert_null(px_observe_selected(r.o));
	px_observe_disconnect(r.o);
	got = run_done(&r);
	assert_string_equal(got, "* low\n* low\n* low\n");
	free(got);
}

/* A long mailbox name is not kept: the whole user is marked instead. */
static void test_long_names(void **state)
{
	struct run r;
	char *cmd, *got;
	size_t n = 5000;

	(void)state;
	cmd = malloc(n + 64);
	assert_non_null(cmd);
	memcpy(cmd, "a APPEND ", 9);
	memset(cmd + 9, 'x', n);
	strcpy(cmd + 9 + n, " {1+}\r\nx\r\n");
	run_init(&r, NULL);
	feed(&r, 0, cmd, strlen(cmd), 0);
	feeds(&r, 1, "a OK\r\n");
	memcpy(cmd, "b SELECT ", 9);
	strcpy(cmd + 9 + n, "\r\n");
	feed(&r, 0, cmd, strlen(cmd), 0);
	feeds(&r, 1, "* 3 EXISTS\r\nb OK\r\n");
	assert_null(px_observe_selected(r.o));
	feeds(&r, 0, "c STORE 1 +FLAGS x\r\n");
	feeds(&r, 1, "* 4 EXISTS\r\nc OK\r\n");
	got = run_done(&r);
	/* The SELECT's EXISTS still counts: growth marks the whole user. */
	assert_string_equal(got, "* high\n* high\n* low\n");
	free(got);
	free(cmd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_cases),
	        cmocka_unit_test(test_streamed_body),
	        cmocka_unit_test(test_inflight_bound),
	        cmocka_unit_test(test_long_names),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
