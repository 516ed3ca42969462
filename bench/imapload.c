/*
 * imapload.c - a many-client IMAP load generator for the proxy benchmark
 * (bench/bench_proxy.py, issue 5 "Targets"). imaptest is not packaged in
 * Debian; this does the part of it the benchmark needs.
 *
 * One process, one libevent loop, no threads: each session is a bufferevent
 * and a small response framer that looks only at what it needs (the tag and
 * status of tagged lines, CAPABILITY, APPENDUID, the SEARCH during setup)
 * and skips literals by count, so the generator costs a few per cent of the
 * server's CPU and is not the bottleneck.
 *
 * Modes (--mode):
 *   mixed    --clients N sessions log in, SELECT the folder, then for
 *            --seconds keep --inflight commands in flight each: NOOP, UID
 *            FETCH of FLAGS over a range, UID FETCH BODY.PEEK[] of a random
 *            message (one below --fetch-max: a 5 MB outlier would dominate
 *            the bytes), UID SEARCH ALL, UID STORE +/-FLAGS \Flagged, APPEND of a
 *            small message (flagged \Deleted, LITERAL+ when offered) later
 *            removed by UID EXPUNGE (the mailbox size stays stable), STATUS of
 *            another folder. Prints commands/s, bytes/s, latency percentiles.
 *   serial   one session, one command at a time (NOOP and a small UID
 *            FETCH), --iterations of each after --warmup: mean and median.
 *   idle     --clients sessions (connected --batch at a time) log in, SELECT
 *            and IDLE; held for --seconds, then each must answer DONE.
 *   literal  APPENDs a --size literal (LITERAL+ or, with --sync-literal or
 *            without LITERAL+, a synchronising one), FETCHes it back and
 *            compares the bytes, then expunges it.
 *
 * The last line of output is machine-readable: "RESULT mode=... key=value".
 * Exit status: 0; 1 on a protocol error (an unexpected tagged NO/BAD, BYE,
 * lost connection, timeout) or a failed check; 64 on bad usage.
 */
#include <assert.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

/* Limits. */
#define LD_MAX_LINE        (1024u * 1024u) /* longest server line accepted */
#define LD_HEAD            512u            /* bytes of a line read without a pullup */
#define LD_MAX_INFLIGHT    64u             /* --inflight upper bound */
#define LD_MAX_APPENDED    256u            /* appended UIDs waiting for UID EXPUNGE */
#define LD_MAX_BASE        100000u         /* message UIDs remembered for random picks */
#define LD_IO_TIMEOUT_S    30              /* no answer for that long = failure */
#define LD_FLAGS_RANGE     50u             /* messages per UID FETCH FLAGS */
#define LD_MAX_USERS       64u
#define LD_MAX_LITERAL     (1024ull << 20) /* --size upper bound */
#define LD_IDLE_DONE_WAIT  60              /* seconds for every DONE to be answered */
#define LD_MIXED_DRAIN_MAX 60              /* seconds for a mixed run to wind down */

#define LD_EXIT_USAGE 64

/* --- latency histogram: log-linear, 128 sub-buckets per power of two
 * (under 0.8% error), in nanoseconds --- */
#define LD_HIST_SUB_BITS 7u
#define LD_HIST_SUB      (1u << LD_HIST_SUB_BITS)
#define LD_HIST_EXP      42u /* up to 2^48 ns, i.e. 78 hours */

struct ld_hist {
	uint64_t count, sum_ns;
	uint32_t b[LD_HIST_EXP][LD_HIST_SUB];
};

static void ld_hist_add(struct ld_hist *h, uint64_t ns)
{
	unsigned e = 0;
	uint64_t s = ns;

	if (ns >= LD_HIST_SUB) {
		unsigned shift = 63u - (unsigned)__builtin_clzll(ns) - LD_HIST_SUB_BITS;
		e = shift + 1;
		s = (ns >> shift) - LD_HIST_SUB;
		if (e >= LD_HIST_EXP) {
			e = LD_HIST_EXP - 1;
			s = LD_HIST_SUB - 1;
		}
	}
	h->b[e][s]++;
	h->count++;
	h->sum_ns += ns;
}

/* The value at quantile q (0 < q <= 1) in microseconds; 0 when empty. */
static double ld_hist_quantile_us(const struct ld_hist *h, double q)
{
	uint64_t want = (uint64_t)(q * (double)h->count + 0.5), seen = 0;

	if (h->count == 0)
		return 0;
	if (want < 1)
		want = 1;
	for (unsigned e = 0; e < LD_HIST_EXP; e++) {
		for (unsigned s = 0; s < LD_HIST_SUB; s++) {
			seen += h->b[e][s];
			if (seen < want)
				continue;
			if (e == 0)
				return (double)s / 1000.0;
			uint64_t lo = (uint64_t)(s + LD_HIST_SUB) << (e - 1);
			return ((double)lo + (double)(1ull << (e - 1)) / 2.0) / 1000.0;
		}
	}
	return 0;
}

static double ld_hist_mean_us(const struct ld_hist *h)
{
	return h->count != 0 ? (double)h->sum_ns / (double)h->count / 1000.0 : 0;
}

/* --- commands --- */

enum ld_kind {
	LD_K_LOGIN,
	LD_K_CAPA,
	LD_K_SELECT,
	LD_K_BASE, /* UID SEARCH SMALLER during setup: the UIDs to pick from */
	LD_K_NOOP,
	LD_K_FFLAGS,
	LD_K_FBODY,
	LD_K_SEARCH,
	LD_K_STORE,
	LD_K_APPEND,
	LD_K_EXPUNGE,
	LD_K_STATUS,
	LD_K_FSMALL,
	LD_K_IDLE,
	LD_K_LOGOUT,
	LD_K_COUNT
};

static const char *const ld_kind_names[LD_K_COUNT] = {
        "LOGIN",
        "CAPABILITY",
        "SELECT",
        "UID SEARCH (setup)",
        "NOOP",
        "UID FETCH FLAGS",
        "UID FETCH BODY[]",
        "UID SEARCH ALL",
        "UID STORE",
        "APPEND",
        "UID EXPUNGE",
        "STATUS",
        "UID FETCH (small)",
        "IDLE",
        "LOGOUT",
};
static_assert(sizeof(ld_kind_names) / sizeof(ld_kind_names[0]) == LD_K_COUNT, "kind names");

/* The mixed load: relative weights. The APPEND slot expunges what the
 * session appended before when there is something, else appends. */
static const struct {
	enum ld_kind kind;
	unsigned weight;
} ld_mix[] = {
        {LD_K_NOOP, 2},  {LD_K_FFLAGS, 2}, {LD_K_FBODY, 2},  {LD_K_SEARCH, 1},
        {LD_K_STORE, 2}, {LD_K_APPEND, 1}, {LD_K_STATUS, 1},
};

enum ld_mode { LD_MODE_MIXED, LD_MODE_SERIAL, LD_MODE_IDLE, LD_MODE_LITERAL, LD_MODE_COUNT };
static const char *const ld_mode_names[LD_MODE_COUNT] = {"mixed", "serial", "idle", "literal"};
static_assert(sizeof(ld_mode_names) / sizeof(ld_mode_names[0]) == LD_MODE_COUNT, "mode names");

enum ld_cstate {
	LD_C_NEW,
	LD_C_CONNECTING,
	LD_C_GREETING,
	LD_C_SETUP,     /* LOGIN, SELECT ... in flight */
	LD_C_READY,     /* running the mode's load */
	LD_C_IDLE_WAIT, /* IDLE sent, waiting for "+" */
	LD_C_IDLING,
	LD_C_DONE_SENT, /* DONE sent, waiting for IDLE's tagged OK */
	LD_C_LOGOUT,    /* LOGOUT sent: EOF and BYE are expected */
	LD_C_CLOSED,
	LD_C_FAILED,
	LD_C_STATE_COUNT
};
static const char *const ld_cstate_names[LD_C_STATE_COUNT] = {
        "new",    "connecting", "greeting", "setup",  "ready",  "idle-wait",
        "idling", "done-sent",  "logout",   "closed", "failed",
};
static_assert(sizeof(ld_cstate_names) / sizeof(ld_cstate_names[0]) == LD_C_STATE_COUNT,
              "state names");

struct ld_cmd {
	unsigned tag;
	enum ld_kind kind;
	uint64_t t0_ns;
};

/* Kinds of the response being read (a response continues after a literal). */
enum ld_rkind { LD_R_NONE, LD_R_UNTAGGED, LD_R_CONT, LD_R_TAGGED };

struct ld;

struct ld_conn {
	struct ld *ld;
	struct bufferevent *bev;
	unsigned idx;
	enum ld_cstate st;
	const char *user, *password;
	unsigned next_tag;
	struct ld_cmd cmds[LD_MAX_INFLIGHT + 4];
	unsigned ncmds;
	/* response framer */
	enum ld_rkind rkind;
	uint64_t lit_left;
	struct evbuffer *capture; /* literal mode: where the FETCHed body goes */
	int capture_on;
	/* session */
	int caps_seen, literal_plus;
	struct evbuffer *pending_lit; /* synchronising literal waiting for "+" */
	uint32_t appended[LD_MAX_APPENDED];
	unsigned nappended;
	unsigned expunges_inflight;
	uint64_t rng;
	unsigned serial_done;
	int store_add;      /* next STORE adds (1) or removes (0) \Flagged */
	uint64_t exists_ns; /* idle: when the first EXISTS arrived while idling */
};

struct ld_opts {
	enum ld_mode mode;
	const char *host;
	unsigned port;
	int ssl;
	const char *users[LD_MAX_USERS], *passwords[LD_MAX_USERS];
	unsigned nusers, npasswords;
	unsigned clients, inflight, iterations, warmup, batch;
	double seconds;
	uint64_t size, fetch_max;
	const char *folder, *status_folder;
	int sync_literal, no_select, quiet;
	uint64_t seed;
};

struct ld {
	struct ld_opts o;
	struct event_base *base;
	SSL_CTX *ssl_ctx;
	struct sockaddr_storage addr;
	socklen_t addrlen;
	struct ld_conn *conns;
	unsigned nconns;
	/* phases */
	int measuring, stopping;
	uint64_t t_start_ns, t_stop_ns, t_setup_ns;
	struct rusage ru_start, ru_stop;
	unsigned nready, nclosed, nfailed;
	struct event *timer;
	/* statistics of the measured window */
	uint64_t cmds_done, bytes_in, bytes_out;
	struct ld_hist hist[LD_K_COUNT + 1]; /* last = all kinds */
	/* UIDs of the folder's messages, from the setup SEARCH */
	uint32_t *base_uids;
	unsigned nbase;
	/* idle mode */
	unsigned started, connecting, idling, held, dropped;
	int holding;
	/* literal mode */
	struct evbuffer *lit_data;
	uint64_t t_lit0_ns, t_append_ns, t_fetch_ns;
	int lit_ok;
	/* errors */
	unsigned errors;
	char first_error[512];
	unsigned msg_counter;
};

static uint64_t ld_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t ld_rand(struct ld_conn *c)
{
	/* xorshift64*: cheap and good enough to pick messages */
	c->rng ^= c->rng >> 12;
	c->rng ^= c->rng << 25;
	c->rng ^= c->rng >> 27;
	return c->rng * 0x2545F4914F6CDD1Dull;
}

static void ld_conn_close(struct ld_conn *c, enum ld_cstate st);
static void ld_conn_start(struct ld *ld, struct ld_conn *c);
static void ld_idle_fill(struct ld *ld);
static void ld_mixed_fill(struct ld_conn *c);
static void ld_finish_check(struct ld *ld);

static void ld_error(struct ld *ld, const struct ld_conn *c, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

/* Records an error (the first one is kept for the summary). */
static void ld_error(struct ld *ld, const struct ld_conn *c, const char *fmt, ...)
{
	char msg[400];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	ld->errors++;
	if (ld->errors == 1)
		snprintf(ld->first_error, sizeof(ld->first_error), "session %u (%s): %s",
		         c != NULL ? c->idx : 0, c != NULL ? ld_cstate_names[c->st] : "-", msg);
	if (ld->errors <= 5 && !ld->o.quiet)
		fprintf(stderr, "imapload: session %u: %s\n", c != NULL ? c->idx : 0, msg);
}

/* A protocol failure of one session: outside idle mode, the whole run is
 * invalid and stops. */
static void ld_conn_fail(struct ld_conn *c, const char *fmt, ...)
        __attribute__((format(printf, 2, 3)));
static void ld_conn_fail(struct ld_conn *c, const char *fmt, ...)
{
	char msg[400];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	ld_error(c->ld, c, "%s", msg);
	ld_conn_close(c, LD_C_FAILED);
	if (c->ld->o.mode != LD_MODE_IDLE)
		event_base_loopbreak(c->ld->base);
}

/* --- writing commands --- */

static void ld_cmd_vsend(struct ld_conn *c, enum ld_kind kind, const char *fmt, va_list ap)
{
	struct evbuffer *out = bufferevent_get_output(c->bev);
	struct ld_cmd *cmd;
	int n1, n2;

	assert(c->ncmds < sizeof(c->cmds) / sizeof(c->cmds[0]));
	cmd = &c->cmds[c->ncmds++];
	cmd->tag = ++c->next_tag;
	cmd->kind = kind;
	cmd->t0_ns = ld_now_ns();
	n1 = evbuffer_add_printf(out, "L%u ", cmd->tag);
	n2 = evbuffer_add_vprintf(out, fmt, ap);
	if (c->ld->measuring)
		c->ld->bytes_out += (uint64_t)(n1 + n2);
}

/* Queues "L<tag> " + fmt (which ends in CRLF, or in a literal's "{N}\r\n"). */
static void ld_cmd_send(struct ld_conn *c, enum ld_kind kind, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
static void ld_cmd_send(struct ld_conn *c, enum ld_kind kind, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	ld_cmd_vsend(c, kind, fmt, ap);
	va_end(ap);
}

/* An IMAP quoted string for user names and passwords (no CR/LF/NUL). */
static const char *ld_quote(char *buf, size_t size, const char *s)
{
	size_t j = 0;

	buf[j++] = '"';
	for (; *s != '\0' && j + 3 < size; s++) {
		if (*s == '"' || *s == '\\')
			buf[j++] = '\\';
		buf[j++] = *s;
	}
	buf[j++] = '"';
	buf[j] = '\0';
	return buf;
}

/* APPEND of data (moved out of data when it is not NULL, else a small
 * message made here) to the folder, flagged \Deleted so that UID EXPUNGE
 * removes it. Without LITERAL+ the literal waits for the server's "+". */
static void ld_append(struct ld_conn *c, struct evbuffer *data)
{
	struct ld *ld = c->ld;
	struct evbuffer *out = bufferevent_get_output(c->bev);
	struct evbuffer *msg = data;
	int plus = c->literal_plus && !ld->o.sync_literal;
	size_t len;

	if (msg == NULL) {
		msg = evbuffer_new();
		evbuffer_add_printf(msg,
		                    "From: imapload <load@example.org>\r\n"
		                    "To: %s <%s@example.org>\r\n"
		                    "Subject: imapload message %u\r\n"
		                    "Message-Id: <imapload-%u-%u@example.org>\r\n"
		                    "Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n"
		                    "\r\n",
		                    c->user, c->user, ld->msg_counter, c->idx, ld->msg_counter);
		for (unsigned i = 0; i < 16; i++)
			evbuffer_add_printf(msg,
			                    "Line %02u of a small benchmark message, "
			                    "long enough to look like mail text.\r\n",
			                    i);
		ld->msg_counter++;
	}
	len = evbuffer_get_length(msg);
	ld_cmd_send(c, LD_K_APPEND, "APPEND %s (\\Deleted) {%zu%s}\r\n", ld->o.folder, len,
	            plus ? "+" : "");
	if (plus) {
		evbuffer_add_buffer(out, msg);
		evbuffer_add(out, "\r\n", 2);
		if (ld->measuring)
			ld->bytes_out += len + 2;
		if (msg != data)
			evbuffer_free(msg);
	} else {
		if (msg == data) {
			c->pending_lit = evbuffer_new();
			evbuffer_add_buffer(c->pending_lit, msg);
		} else {
			c->pending_lit = msg;
		}
	}
}

/* UID EXPUNGE of everything this session appended (and flagged \Deleted). */
static void ld_expunge_appended(struct ld_conn *c)
{
	char set[LD_MAX_APPENDED * 11 + 1];
	size_t n = 0;

	for (unsigned i = 0; i < c->nappended; i++)
		n += (size_t)snprintf(set + n, sizeof(set) - n, "%s%" PRIu32, i != 0 ? "," : "",
		                      c->appended[i]);
	c->nappended = 0;
	c->expunges_inflight++;
	ld_cmd_send(c, LD_K_EXPUNGE, "UID EXPUNGE %s\r\n", set);
}

static uint32_t ld_random_uid(struct ld_conn *c, unsigned *idx_r)
{
	unsigned i = (unsigned)(ld_rand(c) % c->ld->nbase);

	if (idx_r != NULL)
		*idx_r = i;
	return c->ld->base_uids[i];
}

/* One command of the mixed load. */
static void ld_mixed_issue(struct ld_conn *c)
{
	struct ld *ld = c->ld;
	unsigned total = 0, pick, i;
	enum ld_kind kind = LD_K_NOOP;

	for (i = 0; i < sizeof(ld_mix) / sizeof(ld_mix[0]); i++)
		total += ld_mix[i].weight;
	pick = (unsigned)(ld_rand(c) % total);
	for (i = 0; i < sizeof(ld_mix) / sizeof(ld_mix[0]); i++) {
		if (pick < ld_mix[i].weight) {
			kind = ld_mix[i].kind;
			break;
		}
		pick -= ld_mix[i].weight;
	}
	if (ld->nbase == 0 && (kind == LD_K_FFLAGS || kind == LD_K_FBODY || kind == LD_K_STORE))
		kind = LD_K_NOOP;
	switch (kind) {
	case LD_K_FFLAGS: {
		unsigned j, k;
		uint32_t lo = ld_random_uid(c, &j);

		k = j + LD_FLAGS_RANGE - 1 < ld->nbase ? j + LD_FLAGS_RANGE - 1 : ld->nbase - 1;
		ld_cmd_send(c, kind, "UID FETCH %" PRIu32 ":%" PRIu32 " (FLAGS)\r\n", lo,
		            ld->base_uids[k]);
		break;
	}
	case LD_K_FBODY:
		ld_cmd_send(c, kind, "UID FETCH %" PRIu32 " BODY.PEEK[]\r\n",
		            ld_random_uid(c, NULL));
		break;
	case LD_K_SEARCH:
		ld_cmd_send(c, kind, "UID SEARCH ALL\r\n");
		break;
	case LD_K_STORE:
		c->store_add = !c->store_add;
		ld_cmd_send(c, kind, "UID STORE %" PRIu32 " %cFLAGS (\\Flagged)\r\n",
		            ld_random_uid(c, NULL), c->store_add ? '+' : '-');
		break;
	case LD_K_APPEND:
		if (c->nappended != 0)
			ld_expunge_appended(c);
		else
			ld_append(c, NULL);
		break;
	case LD_K_STATUS:
		ld_cmd_send(c, kind, "STATUS %s (MESSAGES UIDNEXT UNSEEN)\r\n",
		            ld->o.status_folder);
		break;
	default:
		ld_cmd_send(c, LD_K_NOOP, "NOOP\r\n");
		break;
	}
}

static void ld_mixed_fill(struct ld_conn *c)
{
	while (c->st == LD_C_READY && !c->ld->stopping && c->pending_lit == NULL &&
	       c->ncmds < c->ld->o.inflight)
		ld_mixed_issue(c);
}

static void ld_serial_issue(struct ld_conn *c)
{
	/* even iterations NOOP, odd ones a small FETCH */
	if (c->serial_done % 2 == 0)
		ld_cmd_send(c, LD_K_NOOP, "NOOP\r\n");
	else
		ld_cmd_send(c, LD_K_FSMALL, "UID FETCH %" PRIu32 " (FLAGS)\r\n",
		            ld_random_uid(c, NULL));
}

static void ld_logout(struct ld_conn *c)
{
	c->st = LD_C_LOGOUT;
	ld_cmd_send(c, LD_K_LOGOUT, "LOGOUT\r\n");
}

/* --- mode control --- */

static void ld_measure_start(struct ld *ld)
{
	ld->measuring = 1;
	ld->t_start_ns = ld_now_ns();
	getrusage(RUSAGE_SELF, &ld->ru_start);
}

static void ld_measure_stop(struct ld *ld)
{
	if (!ld->measuring)
		return;
	ld->measuring = 0;
	ld->t_stop_ns = ld_now_ns();
	getrusage(RUSAGE_SELF, &ld->ru_stop);
}

static void ld_on_timer(evutil_socket_t fd, short what, void *aux);

static void ld_timer_arm(struct ld *ld, double seconds)
{
	struct timeval tv;

	tv.tv_sec = (time_t)seconds;
	tv.tv_usec = (suseconds_t)((seconds - (double)tv.tv_sec) * 1e6);
	event_add(ld->timer, &tv);
}

/* A session is logged in, has its folder selected and is ready. */
static void ld_conn_ready(struct ld_conn *c)
{
	struct ld *ld = c->ld;

	c->st = LD_C_READY;
	switch (ld->o.mode) {
	case LD_MODE_MIXED:
		if (++ld->nready < ld->nconns)
			return;
		if (!ld->o.quiet)
			printf("mixed: %u sessions ready after %.2f s; running %.1f s with %u "
			       "commands in flight each\n",
			       ld->nconns, (double)(ld_now_ns() - ld->t_setup_ns) / 1e9,
			       ld->o.seconds, ld->o.inflight);
		fflush(stdout);
		ld_measure_start(ld);
		ld_timer_arm(ld, ld->o.seconds);
		for (unsigned i = 0; i < ld->nconns; i++)
			ld_mixed_fill(&ld->conns[i]);
		break;
	case LD_MODE_SERIAL:
		if (ld->o.warmup == 0)
			ld_measure_start(ld);
		ld_serial_issue(c);
		break;
	case LD_MODE_IDLE:
		c->st = LD_C_IDLE_WAIT;
		ld_cmd_send(c, LD_K_IDLE, "IDLE\r\n");
		break;
	case LD_MODE_LITERAL: {
		struct evbuffer *copy = evbuffer_new();

		/* keep ld->lit_data for the comparison; send a copy */
		evbuffer_add(copy, evbuffer_pullup(ld->lit_data, -1),
		             evbuffer_get_length(ld->lit_data));
		ld->t_lit0_ns = ld_now_ns();
		ld_append(c, copy);
		evbuffer_free(copy);
		break;
	}
	default:
		break;
	}
}

/* All sessions of the mixed run: stop issuing, let what is in flight
 * complete, expunge what was appended, log out. */
static void ld_mixed_stop(struct ld *ld)
{
	ld->stopping = 1;
	ld_measure_stop(ld);
	for (unsigned i = 0; i < ld->nconns; i++) {
		struct ld_conn *c = &ld->conns[i];

		if (c->st == LD_C_READY && c->ncmds == 0 && c->pending_lit == NULL) {
			if (c->nappended != 0)
				ld_expunge_appended(c);
			else
				ld_logout(c);
		}
	}
	ld_timer_arm(ld, LD_MIXED_DRAIN_MAX);
}

static void ld_idle_hold_end(struct ld *ld)
{
	ld->holding = 0;
	for (unsigned i = 0; i < ld->nconns; i++) {
		struct ld_conn *c = &ld->conns[i];
		struct timeval tv = {LD_IO_TIMEOUT_S, 0};

		if (c->st != LD_C_IDLING)
			continue;
		c->st = LD_C_DONE_SENT;
		bufferevent_set_timeouts(c->bev, &tv, NULL);
		evbuffer_add(bufferevent_get_output(c->bev), "DONE\r\n", 6);
	}
	ld_timer_arm(ld, LD_IDLE_DONE_WAIT);
	ld_finish_check(ld);
}

static void ld_on_timer(evutil_socket_t fd, short what, void *aux)
{
	struct ld *ld = aux;

	(void)fd;
	(void)what;
	if (ld->o.mode == LD_MODE_MIXED && !ld->stopping) {
		ld_mixed_stop(ld);
		return;
	}
	if (ld->o.mode == LD_MODE_IDLE && ld->holding) {
		ld_idle_hold_end(ld);
		return;
	}
	ld_error(ld, NULL, "timed out winding down (%u of %u sessions closed)", ld->nclosed,
	         ld->nconns);
	event_base_loopbreak(ld->base);
}

/* Ends the loop when every session is closed; in idle mode, starts the hold
 * when every session is idling or failed. */
static void ld_finish_check(struct ld *ld)
{
	if (ld->o.mode == LD_MODE_IDLE && !ld->holding && ld->t_start_ns == 0 &&
	    ld->started == ld->nconns && ld->connecting == 0) {
		ld->t_start_ns = ld_now_ns();
		printf("IDLING %u of %u sessions after %.2f s; holding %.1f s\n", ld->idling,
		       ld->nconns, (double)(ld->t_start_ns - ld->t_setup_ns) / 1e9, ld->o.seconds);
		fflush(stdout);
		ld->holding = 1;
		if (ld->idling == 0)
			ld_idle_hold_end(ld); /* nothing to hold */
		else
			ld_timer_arm(ld, ld->o.seconds);
		return;
	}
	if (ld->nclosed == ld->nconns)
		event_base_loopbreak(ld->base);
}

/* --- reading responses --- */

/* Nonzero when the text (len bytes) lists LITERAL+ as a capability. */
static int ld_has_literal_plus(const char *s, size_t len)
{
	static const char cap[] = "LITERAL+";
	size_t n = sizeof(cap) - 1;

	for (size_t i = 1; i + n <= len; i++) {
		if (s[i - 1] == ' ' && strncasecmp(s + i, cap, n) == 0 &&
		    (i + n == len || s[i + n] == ' ' || s[i + n] == ']'))
			return 1;
	}
	return 0;
}

static void ld_caps_parse(struct ld_conn *c, struct evbuffer *in, size_t linelen)
{
	const char *line = (const char *)evbuffer_pullup(in, (ev_ssize_t)linelen);

	c->caps_seen = 1;
	c->literal_plus = ld_has_literal_plus(line, linelen);
}

/* "* SEARCH 1 2 3" during setup: the UIDs to pick messages from. */
static void ld_base_parse(struct ld_conn *c, struct evbuffer *in, size_t linelen)
{
	struct ld *ld = c->ld;
	const char *line = (const char *)evbuffer_pullup(in, (ev_ssize_t)linelen);
	const char *p = line + 8, *end = line + linelen;

	free(ld->base_uids);
	ld->base_uids = malloc(sizeof(uint32_t) * ((linelen / 2) + 1));
	ld->nbase = 0;
	if (ld->base_uids == NULL)
		return;
	while (p < end && ld->nbase < LD_MAX_BASE) {
		uint32_t v = 0;
		int digits = 0;

		while (p < end && *p == ' ')
			p++;
		while (p < end && *p >= '0' && *p <= '9') {
			v = v * 10 + (uint32_t)(*p++ - '0');
			digits = 1;
		}
		if (!digits)
			break;
		ld->base_uids[ld->nbase++] = v;
	}
}

static void ld_untagged(struct ld_conn *c, const char *head, size_t hl, struct evbuffer *in,
                        size_t linelen)
{
	if (hl >= 6 && strncasecmp(head, "* BYE ", 6) == 0) {
		if (c->st == LD_C_IDLING)
			c->ld->dropped++;
		if (c->st != LD_C_LOGOUT)
			ld_conn_fail(c, "server said: %.*s", (int)(hl > 200 ? 200 : hl), head);
		return;
	}
	if (c->st == LD_C_GREETING) {
		if (hl < 5 || strncasecmp(head, "* OK", 4) != 0) {
			ld_conn_fail(c, "bad greeting: %.*s", (int)(hl > 200 ? 200 : hl), head);
			return;
		}
		if (strncasecmp(head, "* OK [CAPABILITY ", 17) == 0)
			ld_caps_parse(c, in, linelen);
		char u[300], p[300];
		c->st = LD_C_SETUP;
		ld_cmd_send(c, LD_K_LOGIN, "LOGIN %s %s\r\n", ld_quote(u, sizeof(u), c->user),
		            ld_quote(p, sizeof(p), c->password));
		return;
	}
	if (c->st == LD_C_IDLING && c->exists_ns == 0 && hl > 9 && linelen == hl &&
	    strcasecmp(head + hl - 7, " EXISTS") == 0) {
		c->exists_ns = ld_now_ns();
		return;
	}
	if (hl >= 13 && strncasecmp(head, "* CAPABILITY ", 13) == 0) {
		ld_caps_parse(c, in, linelen);
		return;
	}
	if (hl >= 9 && strncasecmp(head, "* SEARCH", 8) == 0 && c->ncmds != 0 &&
	    c->cmds[0].kind == LD_K_BASE) {
		ld_base_parse(c, in, linelen);
		return;
	}
}

/* A "+" line: the server waits for a synchronising literal, or IDLE began. */
static void ld_continuation(struct ld_conn *c)
{
	struct ld *ld = c->ld;

	if (c->pending_lit != NULL) {
		struct evbuffer *out = bufferevent_get_output(c->bev);
		size_t len = evbuffer_get_length(c->pending_lit);

		evbuffer_add_buffer(out, c->pending_lit);
		evbuffer_add(out, "\r\n", 2);
		if (ld->measuring)
			ld->bytes_out += len + 2;
		evbuffer_free(c->pending_lit);
		c->pending_lit = NULL;
		if (ld->o.mode == LD_MODE_MIXED)
			ld_mixed_fill(c);
		return;
	}
	if (c->st == LD_C_IDLE_WAIT) {
		c->st = LD_C_IDLING;
		bufferevent_set_timeouts(c->bev, NULL, NULL);
		ld->idling++;
		ld->connecting--;
		ld_idle_fill(ld);
		ld_finish_check(ld);
		return;
	}
	ld_conn_fail(c, "unexpected continuation request");
}

/* Compares the FETCHed literal with what was appended. */
static void ld_literal_check(struct ld_conn *c)
{
	struct ld *ld = c->ld;
	size_t a = evbuffer_get_length(ld->lit_data), b = evbuffer_get_length(c->capture);

	ld->lit_ok = a == b && memcmp(evbuffer_pullup(ld->lit_data, -1),
	                              evbuffer_pullup(c->capture, -1), a) == 0;
	if (!ld->lit_ok)
		ld_error(ld, c, "FETCHed %zu bytes differ from the %zu bytes appended", b, a);
}

/* The tagged completion of a command (already removed from the table). */
static void ld_done(struct ld_conn *c, const struct ld_cmd *cmd, const char *head, size_t hl,
                    int ok, struct evbuffer *in, size_t linelen)
{
	struct ld *ld = c->ld;

	if (!ok && cmd->kind != LD_K_LOGOUT) {
		ld_conn_fail(c, "%s failed: %.*s", ld_kind_names[cmd->kind],
		             (int)(hl > 200 ? 200 : hl), head);
		return;
	}
	switch (cmd->kind) {
	case LD_K_LOGIN:
		if (strstr(head, "[CAPABILITY ") != NULL)
			ld_caps_parse(c, in, linelen);
		else
			c->caps_seen = 0; /* capabilities change after login */
		if (!c->caps_seen)
			ld_cmd_send(c, LD_K_CAPA, "CAPABILITY\r\n");
		if (ld->o.mode == LD_MODE_IDLE && ld->o.no_select)
			ld_conn_ready(c);
		else
			ld_cmd_send(c, LD_K_SELECT, "SELECT %s\r\n", ld->o.folder);
		return;
	case LD_K_SELECT:
		if ((ld->o.mode == LD_MODE_MIXED || ld->o.mode == LD_MODE_SERIAL) && c->idx == 0)
			ld_cmd_send(c, LD_K_BASE, "UID SEARCH SMALLER %" PRIu64 "\r\n",
			            ld->o.fetch_max);
		else
			ld_conn_ready(c);
		return;
	case LD_K_BASE:
		if (ld->nbase == 0 && ld->o.mode == LD_MODE_SERIAL) {
			ld_conn_fail(c, "%s is empty: serial mode FETCHes its messages",
			             ld->o.folder);
			return;
		}
		ld_conn_ready(c);
		return;
	case LD_K_APPEND: {
		const char *p = strstr(head, "[APPENDUID ");
		unsigned long uidv, uid;

		if (p == NULL || sscanf(p + 11, "%lu %lu", &uidv, &uid) != 2) {
			ld_conn_fail(c, "APPEND gave no APPENDUID (UIDPLUS needed): %.*s",
			             (int)(hl > 200 ? 200 : hl), head);
			return;
		}
		if (ld->o.mode == LD_MODE_LITERAL) {
			ld->t_append_ns = ld_now_ns();
			c->appended[c->nappended++] = (uint32_t)uid;
			c->capture = evbuffer_new();
			ld_cmd_send(c, LD_K_FBODY, "UID FETCH %lu BODY.PEEK[]\r\n", uid);
			return;
		}
		if (c->nappended < LD_MAX_APPENDED)
			c->appended[c->nappended++] = (uint32_t)uid;
		break;
	}
	case LD_K_FBODY:
		if (ld->o.mode == LD_MODE_LITERAL) {
			ld->t_fetch_ns = ld_now_ns();
			ld_literal_check(c);
			ld_expunge_appended(c);
			return;
		}
		break;
	case LD_K_EXPUNGE:
		c->expunges_inflight--;
		if (ld->o.mode == LD_MODE_LITERAL) {
			ld_logout(c);
			return;
		}
		break;
	case LD_K_NOOP:
	case LD_K_FSMALL:
		if (ld->o.mode == LD_MODE_SERIAL) {
			if (++c->serial_done == ld->o.warmup)
				ld_measure_start(ld);
			if (c->serial_done < ld->o.warmup + ld->o.iterations)
				ld_serial_issue(c);
			else {
				ld_measure_stop(ld);
				ld_logout(c);
			}
			return;
		}
		break;
	case LD_K_IDLE:
		if (c->st == LD_C_DONE_SENT) {
			ld->held++;
			ld_conn_close(c, LD_C_CLOSED);
			ld_finish_check(ld);
		} else {
			ld_conn_fail(c, "IDLE ended early: %.*s", (int)(hl > 200 ? 200 : hl), head);
		}
		return;
	case LD_K_LOGOUT:
		return; /* the EOF follows */
	default:
		break;
	}
	if (ld->o.mode == LD_MODE_MIXED && c->st == LD_C_READY) {
		if (!ld->stopping)
			ld_mixed_fill(c);
		else if (c->ncmds == 0 && c->pending_lit == NULL) {
			if (c->nappended != 0)
				ld_expunge_appended(c);
			else
				ld_logout(c);
		}
	}
}

static void ld_tagged(struct ld_conn *c, const char *head, size_t hl, struct evbuffer *in,
                      size_t linelen)
{
	struct ld *ld = c->ld;
	unsigned long tag;
	char *end;
	struct ld_cmd cmd;
	unsigned i;
	int ok;

	if (head[0] != 'L' || (tag = strtoul(head + 1, &end, 10)) == 0 || *end != ' ') {
		ld_conn_fail(c, "unexpected response: %.*s", (int)(hl > 200 ? 200 : hl), head);
		return;
	}
	for (i = 0; i < c->ncmds && c->cmds[i].tag != tag; i++)
		;
	if (i == c->ncmds) {
		ld_conn_fail(c, "response to an unknown tag: %.*s", (int)(hl > 200 ? 200 : hl),
		             head);
		return;
	}
	cmd = c->cmds[i];
	memmove(&c->cmds[i], &c->cmds[i + 1], (c->ncmds - i - 1) * sizeof(c->cmds[0]));
	c->ncmds--;
	ok = strncasecmp(end + 1, "OK", 2) == 0;
	if (ld->measuring) {
		uint64_t dt = ld_now_ns() - cmd.t0_ns;

		ld_hist_add(&ld->hist[cmd.kind], dt);
		ld_hist_add(&ld->hist[LD_K_COUNT], dt);
		ld->cmds_done++;
	}
	ld_done(c, &cmd, head, hl, ok, in, linelen);
}

/* A "{N}" at the end of a line announces a literal of N bytes. */
static uint64_t ld_literal_size(struct evbuffer *in, size_t linelen, const char *head, size_t hl)
{
	char tail[32];
	size_t tl = linelen < sizeof(tail) - 1 ? linelen : sizeof(tail) - 1;
	const char *p;
	uint64_t n = 0;

	if (linelen <= hl) {
		memcpy(tail, head + (linelen - tl), tl);
	} else {
		struct evbuffer_ptr pos;

		evbuffer_ptr_set(in, &pos, linelen - tl, EVBUFFER_PTR_SET);
		evbuffer_copyout_from(in, &pos, tail, tl);
	}
	tail[tl] = '\0';
	if (tl < 3 || tail[tl - 1] != '}')
		return 0;
	p = tail + tl - 2;
	if (*p == '+' || *p == '-')
		p--;
	while (p > tail && *p >= '0' && *p <= '9')
		p--;
	if (*p != '{')
		return 0;
	for (p++; *p >= '0' && *p <= '9'; p++)
		n = n * 10 + (uint64_t)(*p - '0');
	return n;
}

/* Handles the lines and literals in the input; 0, or -1 when the session
 * was closed meanwhile. */
static int ld_read_some(struct ld_conn *c, struct evbuffer *in)
{
	struct ld *ld = c->ld;

	for (;;) {
		size_t avail = evbuffer_get_length(in);

		if (avail == 0)
			return 0;
		if (c->lit_left != 0) {
			size_t n = avail < c->lit_left ? avail : (size_t)c->lit_left;

			if (c->capture_on)
				evbuffer_remove_buffer(in, c->capture, n);
			else
				evbuffer_drain(in, n);
			c->lit_left -= n;
			if (ld->measuring)
				ld->bytes_in += n;
			continue;
		}
		size_t eol_len;
		struct evbuffer_ptr eol =
		        evbuffer_search_eol(in, NULL, &eol_len, EVBUFFER_EOL_CRLF);
		if (eol.pos < 0) {
			if (avail > LD_MAX_LINE) {
				ld_conn_fail(c, "server line longer than %u bytes", LD_MAX_LINE);
				return -1;
			}
			return 0;
		}
		size_t linelen = (size_t)eol.pos;
		char head[LD_HEAD + 1];
		size_t hl = linelen < LD_HEAD ? linelen : LD_HEAD;
		evbuffer_copyout(in, head, hl);
		head[hl] = '\0';
		uint64_t lit = ld_literal_size(in, linelen, head, hl);

		if (c->rkind == LD_R_NONE) {
			c->rkind = head[0] == '*'   ? LD_R_UNTAGGED
			           : head[0] == '+' ? LD_R_CONT
			                            : LD_R_TAGGED;
			if (c->rkind == LD_R_UNTAGGED)
				ld_untagged(c, head, hl, in, linelen);
			else if (c->rkind == LD_R_CONT)
				ld_continuation(c);
			else
				ld_tagged(c, head, hl, in, linelen);
			if (c->bev == NULL)
				return -1;
			c->capture_on = c->capture != NULL && c->rkind == LD_R_UNTAGGED &&
			                strstr(head, " FETCH ") != NULL;
		}
		evbuffer_drain(in, linelen + eol_len);
		if (ld->measuring)
			ld->bytes_in += linelen + eol_len;
		if (lit != 0 && c->rkind != LD_R_TAGGED && c->rkind != LD_R_CONT) {
			c->lit_left = lit;
		} else {
			c->rkind = LD_R_NONE;
			c->capture_on = 0;
		}
	}
}

static void ld_on_read(struct bufferevent *bev, void *aux)
{
	struct ld_conn *c = aux;

	ld_read_some(c, bufferevent_get_input(bev));
}

static void ld_on_event(struct bufferevent *bev, short what, void *aux)
{
	struct ld_conn *c = aux;
	struct ld *ld = c->ld;

	(void)bev;
	if (what & BEV_EVENT_CONNECTED) {
		int one = 1;

		setsockopt(bufferevent_getfd(c->bev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		c->st = LD_C_GREETING;
		return;
	}
	if (what & BEV_EVENT_EOF) {
		if (c->st == LD_C_LOGOUT) {
			ld_conn_close(c, LD_C_CLOSED);
			ld_finish_check(ld);
			return;
		}
		if (c->st == LD_C_IDLING)
			ld->dropped++;
		ld_conn_fail(c, "connection closed by the server");
	} else if (what & BEV_EVENT_TIMEOUT) {
		ld_conn_fail(c, "no answer for %d s", LD_IO_TIMEOUT_S);
	} else {
		unsigned long e = bufferevent_get_openssl_error(c->bev);
		char tls[256] = "";

		if (e != 0)
			ERR_error_string_n(e, tls, sizeof(tls));
		if (c->st == LD_C_IDLING)
			ld->dropped++;
		ld_conn_fail(c, "%s%s%s",
		             c->st == LD_C_CONNECTING ? "connect failed: " : "connection error: ",
		             evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()), tls);
	}
	ld_finish_check(ld);
}

/* Frees the session's connection; the session struct stays (in an array). */
static void ld_conn_close(struct ld_conn *c, enum ld_cstate st)
{
	struct ld *ld = c->ld;
	int was_setup = c->st != LD_C_IDLING && c->st != LD_C_DONE_SENT && c->st != LD_C_LOGOUT &&
	                c->st != LD_C_CLOSED && c->st != LD_C_FAILED;

	if (c->bev == NULL)
		return;
	if (ld->o.mode == LD_MODE_IDLE && was_setup && ld->connecting > 0)
		ld->connecting--;
	bufferevent_free(c->bev);
	c->bev = NULL;
	c->st = st;
	if (st == LD_C_FAILED)
		ld->nfailed++;
	ld->nclosed++;
	if (c->pending_lit != NULL)
		evbuffer_free(c->pending_lit);
	c->pending_lit = NULL;
	if (ld->o.mode == LD_MODE_IDLE)
		ld_idle_fill(ld);
	ld_finish_check(ld);
}

static void ld_conn_start(struct ld *ld, struct ld_conn *c)
{
	struct timeval tv = {LD_IO_TIMEOUT_S, 0};

	if (ld->ssl_ctx != NULL) {
		SSL *ssl = SSL_new(ld->ssl_ctx);

		c->bev = bufferevent_openssl_socket_new(
		        ld->base, -1, ssl, BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE);
	} else {
		c->bev = bufferevent_socket_new(ld->base, -1, BEV_OPT_CLOSE_ON_FREE);
	}
	c->st = LD_C_CONNECTING;
	if (c->bev == NULL) {
		c->st = LD_C_FAILED;
		ld->nfailed++;
		ld->nclosed++;
		ld_error(ld, c, "cannot create a connection: %s", strerror(errno));
		return;
	}
	bufferevent_setcb(c->bev, ld_on_read, NULL, ld_on_event, c);
	bufferevent_set_timeouts(c->bev, &tv, NULL);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	if (bufferevent_socket_connect(c->bev, (struct sockaddr *)&ld->addr, (int)ld->addrlen) <
	    0) {
		int e = errno;

		ld_error(ld, c, "connect failed: %s", strerror(e));
		bufferevent_free(c->bev);
		c->bev = NULL;
		c->st = LD_C_FAILED;
		ld->nfailed++;
		ld->nclosed++;
	}
}

/* Idle mode: keeps --batch sessions in setup until all are started. */
static void ld_idle_fill(struct ld *ld)
{
	while (ld->started < ld->nconns && ld->connecting < ld->o.batch && !ld->holding) {
		struct ld_conn *c = &ld->conns[ld->started++];

		ld->connecting++;
		ld_conn_start(ld, c);
		if (c->bev == NULL)
			ld->connecting--;
	}
}

/* --- reports --- */

static double ld_cpu_s(const struct rusage *a, const struct rusage *b)
{
	return (double)(b->ru_utime.tv_sec - a->ru_utime.tv_sec) +
	       (double)(b->ru_utime.tv_usec - a->ru_utime.tv_usec) / 1e6 +
	       (double)(b->ru_stime.tv_sec - a->ru_stime.tv_sec) +
	       (double)(b->ru_stime.tv_usec - a->ru_stime.tv_usec) / 1e6;
}

static void ld_report_mixed(struct ld *ld)
{
	double secs = (double)(ld->t_stop_ns - ld->t_start_ns) / 1e9;
	double cpu = ld_cpu_s(&ld->ru_start, &ld->ru_stop);
	const struct ld_hist *all = &ld->hist[LD_K_COUNT];

	if (secs <= 0)
		secs = 1e-9;
	printf("%-22s %9s %10s %10s %10s\n", "command", "count", "mean µs", "p50 µs", "p99 µs");
	for (unsigned k = 0; k <= LD_K_COUNT; k++) {
		const struct ld_hist *h = &ld->hist[k];

		if (h->count == 0)
			continue;
		printf("%-22s %9" PRIu64 " %10.0f %10.0f %10.0f\n",
		       k == LD_K_COUNT ? "all" : ld_kind_names[k], h->count, ld_hist_mean_us(h),
		       ld_hist_quantile_us(h, 0.5), ld_hist_quantile_us(h, 0.99));
	}
	printf("mixed: %u clients x %u in flight, %.2f s: %" PRIu64 " commands, %.0f commands/s, "
	       "%.2f MB/s; load generator CPU %.2f s (%.0f%% of one core)\n",
	       ld->o.clients, ld->o.inflight, secs, ld->cmds_done, (double)ld->cmds_done / secs,
	       (double)(ld->bytes_in + ld->bytes_out) / secs / 1e6, cpu, 100 * cpu / secs);
	printf("RESULT mode=mixed clients=%u inflight=%u seconds=%.3f commands=%" PRIu64
	       " cmds_per_s=%.1f bytes_per_s=%.0f p50_us=%.1f p99_us=%.1f mean_us=%.1f "
	       "loadgen_cpu_s=%.3f errors=%u\n",
	       ld->o.clients, ld->o.inflight, secs, ld->cmds_done, (double)ld->cmds_done / secs,
	       (double)(ld->bytes_in + ld->bytes_out) / secs, ld_hist_quantile_us(all, 0.5),
	       ld_hist_quantile_us(all, 0.99), ld_hist_mean_us(all), cpu, ld->errors);
}

static void ld_report_serial(struct ld *ld)
{
	const struct ld_hist *n = &ld->hist[LD_K_NOOP], *f = &ld->hist[LD_K_FSMALL];
	const struct ld_hist *all = &ld->hist[LD_K_COUNT];

	printf("serial: %" PRIu64 " commands one at a time after %u warm-up: NOOP mean %.1f µs "
	       "median %.1f µs; UID FETCH (FLAGS) mean %.1f µs median %.1f µs; all mean %.1f µs "
	       "median %.1f µs\n",
	       all->count, ld->o.warmup, ld_hist_mean_us(n), ld_hist_quantile_us(n, 0.5),
	       ld_hist_mean_us(f), ld_hist_quantile_us(f, 0.5), ld_hist_mean_us(all),
	       ld_hist_quantile_us(all, 0.5));
	printf("RESULT mode=serial commands=%" PRIu64 " noop_mean_us=%.2f noop_median_us=%.2f "
	       "fetch_mean_us=%.2f fetch_median_us=%.2f mean_us=%.2f median_us=%.2f "
	       "p99_us=%.2f errors=%u\n",
	       all->count, ld_hist_mean_us(n), ld_hist_quantile_us(n, 0.5), ld_hist_mean_us(f),
	       ld_hist_quantile_us(f, 0.5), ld_hist_mean_us(all), ld_hist_quantile_us(all, 0.5),
	       ld_hist_quantile_us(all, 0.99), ld->errors);
}

static int ld_u64_cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static void ld_report_idle(struct ld *ld)
{
	double setup = ld->t_start_ns != 0 ? (double)(ld->t_start_ns - ld->t_setup_ns) / 1e9 : 0;
	uint64_t *t = calloc(ld->nconns + 1, sizeof(*t));
	unsigned n = 0;

	/* When the sessions saw new mail (someone delivered during the hold):
	 * CLOCK_MONOTONIC in ns, for the caller to compare with its own clock. */
	for (unsigned i = 0; t != NULL && i < ld->nconns; i++)
		if (ld->conns[i].exists_ns != 0)
			t[n++] = ld->conns[i].exists_ns;
	if (n != 0) {
		qsort(t, n, sizeof(*t), ld_u64_cmp);
		printf("idle: %u sessions saw EXISTS, within %.1f ms of each other\n", n,
		       (double)(t[n - 1] - t[0]) / 1e6);
		printf("NOTIFY notified=%u first_ns=%" PRIu64 " p50_ns=%" PRIu64 " p99_ns=%" PRIu64
		       " last_ns=%" PRIu64 "\n",
		       n, t[0], t[(n - 1) / 2], t[(size_t)((n - 1) * 0.99)], t[n - 1]);
	}
	free(t);

	printf("idle: %u sessions requested, %u reached IDLE in %.2f s, %u held %.1f s and "
	       "answered DONE, %u dropped while idling, %u failed\n",
	       ld->nconns, ld->idling, setup, ld->held, ld->o.seconds, ld->dropped, ld->nfailed);
	printf("RESULT mode=idle requested=%u idling=%u held=%u dropped=%u failed=%u "
	       "setup_s=%.3f errors=%u\n",
	       ld->nconns, ld->idling, ld->held, ld->dropped, ld->nfailed, setup, ld->errors);
}

static void ld_report_literal(struct ld *ld)
{
	double app = ld->t_append_ns != 0 ? (double)(ld->t_append_ns - ld->t_lit0_ns) / 1e6 : 0;
	double fetch = ld->t_fetch_ns != 0 ? (double)(ld->t_fetch_ns - ld->t_append_ns) / 1e6 : 0;
	int plus = ld->conns[0].literal_plus && !ld->o.sync_literal;

	printf("literal: %" PRIu64 " bytes appended (%s literal) in %.1f ms, fetched back in "
	       "%.1f ms: %s\n",
	       ld->o.size, plus ? "LITERAL+" : "synchronising", app, fetch,
	       ld->lit_ok ? "identical" : "DIFFERENT");
	printf("RESULT mode=literal size=%" PRIu64 " literal=%s append_ms=%.2f fetch_ms=%.2f "
	       "identical=%d errors=%u\n",
	       ld->o.size, plus ? "plus" : "sync", app, fetch, ld->lit_ok, ld->errors);
}

/* --- options --- */

static void ld_usage(FILE *f)
{
	fprintf(f,
	        "usage: imapload [options]\n"
	        "  --mode mixed|serial|idle|literal   (default mixed)\n"
	        "  --host H (127.0.0.1)  --port P (143)  --ssl (implicit TLS, not verified)\n"
	        "  --user U[,U...] (alice)  --password P[,P...]  (sessions take them in turn)\n"
	        "  --clients N      sessions (mixed 10, idle 10000)\n"
	        "  --inflight P     commands in flight per session (mixed, 4, max %u)\n"
	        "  --seconds S      mixed: load duration (10); idle: hold time (10)\n"
	        "  --iterations K   serial: measured commands (2000)  --warmup W (200)\n"
	        "  --batch B        idle: sessions in setup at once (100)\n"
	        "  --size BYTES     literal: literal size, K/M suffixes (5M)\n"
	        "  --sync-literal   literal/mixed: synchronising literals even with LITERAL+\n"
	        "  --folder F       folder to SELECT and APPEND to (INBOX)\n"
	        "  --status-folder F  mixed: folder for STATUS (Sent)\n"
	        "  --no-select      idle: IDLE in the authenticated state\n"
	        "                   (idle prints NOTIFY with CLOCK_MONOTONIC times of the first\n"
	        "                   EXISTS each session saw while idling, if any)\n"
	        "  --fetch-max BYTES  mixed/serial: pick messages SMALLER than this (1000000)\n"
	        "  --seed N  --quiet  --help\n",
	        LD_MAX_INFLIGHT);
}

static int ld_parse_uint(const char *s, uint64_t max, uint64_t *v_r)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (end == s || errno != 0)
		return -1;
	if (*end == 'K' || *end == 'k')
		v <<= 10, end++;
	else if (*end == 'M' || *end == 'm')
		v <<= 20, end++;
	if (*end != '\0' || v > max)
		return -1;
	*v_r = v;
	return 0;
}

static unsigned ld_split(char *s, const char **out, unsigned max)
{
	unsigned n = 0;

	for (char *tok = strtok(s, ","); tok != NULL && n < max; tok = strtok(NULL, ","))
		out[n++] = tok;
	return n;
}

static int ld_parse_args(struct ld_opts *o, int argc, char **argv)
{
	static const struct option longopts[] = {
	        {"mode", required_argument, NULL, 'm'},
	        {"host", required_argument, NULL, 'h'},
	        {"port", required_argument, NULL, 'p'},
	        {"ssl", no_argument, NULL, 's'},
	        {"user", required_argument, NULL, 'u'},
	        {"password", required_argument, NULL, 'w'},
	        {"clients", required_argument, NULL, 'c'},
	        {"inflight", required_argument, NULL, 'i'},
	        {"seconds", required_argument, NULL, 'd'},
	        {"iterations", required_argument, NULL, 'k'},
	        {"warmup", required_argument, NULL, 'W'},
	        {"batch", required_argument, NULL, 'b'},
	        {"size", required_argument, NULL, 'z'},
	        {"sync-literal", no_argument, NULL, 'L'},
	        {"folder", required_argument, NULL, 'f'},
	        {"status-folder", required_argument, NULL, 'S'},
	        {"no-select", no_argument, NULL, 'N'},
	        {"seed", required_argument, NULL, 'r'},
	        {"fetch-max", required_argument, NULL, 'F'},
	        {"quiet", no_argument, NULL, 'q'},
	        {"help", no_argument, NULL, 'H'},
	        {NULL, 0, NULL, 0},
	};
	int opt, clients_set = 0;
	uint64_t v;

	memset(o, 0, sizeof(*o));
	o->host = "127.0.0.1";
	o->port = 143;
	o->users[0] = "alice";
	o->nusers = 1;
	o->passwords[0] = "alice-pw";
	o->npasswords = 1;
	o->clients = 10;
	o->inflight = 4;
	o->seconds = 10;
	o->iterations = 2000;
	o->warmup = 200;
	o->batch = 100;
	o->size = 5u << 20;
	o->fetch_max = 1000000;
	o->folder = "INBOX";
	o->status_folder = "Sent";
	o->seed = 1;
	while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		int bad = 0;

		switch (opt) {
		case 'm': {
			unsigned m;

			for (m = 0; m < LD_MODE_COUNT && strcmp(optarg, ld_mode_names[m]) != 0; m++)
				;
			bad = m == LD_MODE_COUNT;
			o->mode = (enum ld_mode)m;
			break;
		}
		case 'h':
			o->host = optarg;
			break;
		case 'p':
			bad = ld_parse_uint(optarg, 65535, &v) < 0 || v == 0;
			o->port = (unsigned)v;
			break;
		case 's':
			o->ssl = 1;
			break;
		case 'u':
			o->nusers = ld_split(optarg, o->users, LD_MAX_USERS);
			bad = o->nusers == 0;
			break;
		case 'w':
			o->npasswords = ld_split(optarg, o->passwords, LD_MAX_USERS);
			bad = o->npasswords == 0;
			break;
		case 'c':
			bad = ld_parse_uint(optarg, 1000000, &v) < 0 || v == 0;
			o->clients = (unsigned)v;
			clients_set = 1;
			break;
		case 'i':
			bad = ld_parse_uint(optarg, LD_MAX_INFLIGHT, &v) < 0 || v == 0;
			o->inflight = (unsigned)v;
			break;
		case 'd': {
			char *end;

			o->seconds = strtod(optarg, &end);
			bad = *end != '\0' || !(o->seconds > 0 && o->seconds < 1e6);
			break;
		}
		case 'k':
			bad = ld_parse_uint(optarg, 100000000, &v) < 0 || v == 0;
			o->iterations = (unsigned)v;
			break;
		case 'W':
			bad = ld_parse_uint(optarg, 100000000, &v) < 0;
			o->warmup = (unsigned)v;
			break;
		case 'b':
			bad = ld_parse_uint(optarg, 100000, &v) < 0 || v == 0;
			o->batch = (unsigned)v;
			break;
		case 'z':
			bad = ld_parse_uint(optarg, LD_MAX_LITERAL, &v) < 0 || v == 0;
			o->size = v;
			break;
		case 'L':
			o->sync_literal = 1;
			break;
		case 'f':
			o->folder = optarg;
			break;
		case 'S':
			o->status_folder = optarg;
			break;
		case 'N':
			o->no_select = 1;
			break;
		case 'F':
			bad = ld_parse_uint(optarg, UINT32_MAX, &v) < 0 || v == 0;
			o->fetch_max = v;
			break;
		case 'r':
			bad = ld_parse_uint(optarg, UINT64_MAX, &v) < 0;
			o->seed = v;
			break;
		case 'q':
			o->quiet = 1;
			break;
		case 'H':
			ld_usage(stdout);
			exit(0);
		default:
			bad = 1;
			break;
		}
		if (bad && opt == '?')
			return -1; /* getopt_long said why */
		if (bad) {
			fprintf(stderr, "imapload: bad value for an option: %s\n",
			        optarg != NULL ? optarg : "?");
			return -1;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "imapload: unexpected argument: %s\n", argv[optind]);
		return -1;
	}
	if (o->npasswords != 1 && o->npasswords != o->nusers) {
		fprintf(stderr, "imapload: give one password, or one per user\n");
		return -1;
	}
	if (!clients_set && o->mode == LD_MODE_IDLE)
		o->clients = 10000;
	if (o->mode == LD_MODE_SERIAL || o->mode == LD_MODE_LITERAL)
		o->clients = 1;
	return 0;
}

/* Raises RLIMIT_NOFILE to what many sessions need (the hard limit, or
 * beyond it when privileged). */
static void ld_raise_nofile(unsigned need)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return;
	if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need) {
		struct rlimit more = {need, need};

		if (setrlimit(RLIMIT_NOFILE, &more) == 0)
			return;
	}
	rl.rlim_cur = rl.rlim_max;
	setrlimit(RLIMIT_NOFILE, &rl);
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < need)
		fprintf(stderr,
		        "imapload: warning: only %llu file descriptors for %u sessions "
		        "(raise the hard limit: ulimit -Hn)\n",
		        (unsigned long long)rl.rlim_cur, need);
}

/* The literal mode's data: printable lines, some of which look like IMAP
 * responses (a relay that parses must not take them for real ones). */
static struct evbuffer *ld_literal_make(uint64_t size, uint64_t seed)
{
	struct evbuffer *b = evbuffer_new();
	static const char *const traps[] = {"* 3 EXPUNGE", "L2 OK done", "* BYE bye", "+ go ahead",
	                                    "* 1 FETCH (BODY[] {12}"};
	uint64_t x = seed | 1, n = 0;
	char line[80];

	n += (uint64_t)evbuffer_add_printf(b, "From: imapload <load@example.org>\r\n"
	                                      "Subject: imapload literal\r\n\r\n");
	for (unsigned i = 0; n < size; i++) {
		size_t len;

		if (i % 97 == 0) {
			len = (size_t)snprintf(line, sizeof(line), "%s", traps[(i / 97) % 5]);
		} else {
			for (len = 0; len < 70; len++) {
				x ^= x << 13;
				x ^= x >> 7;
				x ^= x << 17;
				line[len] = (char)('!' + x % 94);
			}
		}
		if (n + len + 2 > size) {
			len = n + 2 < size ? (size_t)(size - n - 2) : 0;
			if (n + len + 2 > size) { /* one byte left: no room for CRLF */
				evbuffer_add(b, "x", 1);
				break;
			}
		}
		memcpy(line + len, "\r\n", 2);
		evbuffer_add(b, line, len + 2);
		n += len + 2;
	}
	return b;
}

static int ld_setup(struct ld *ld)
{
	struct addrinfo hints, *res;
	char port[8];
	int rc;

	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	snprintf(port, sizeof(port), "%u", ld->o.port);
	rc = getaddrinfo(ld->o.host, port, &hints, &res);
	if (rc != 0) {
		fprintf(stderr, "imapload: %s: %s\n", ld->o.host, gai_strerror(rc));
		return -1;
	}
	memcpy(&ld->addr, res->ai_addr, res->ai_addrlen);
	ld->addrlen = res->ai_addrlen;
	freeaddrinfo(res);
	if (ld->o.ssl) {
		ld->ssl_ctx = SSL_CTX_new(TLS_client_method());
		if (ld->ssl_ctx == NULL)
			return -1;
		/* a benchmark of the relay, not of certificate checks */
		SSL_CTX_set_verify(ld->ssl_ctx, SSL_VERIFY_NONE, NULL);
	}
	ld->base = event_base_new();
	ld->timer = evtimer_new(ld->base, ld_on_timer, ld);
	ld->nconns = ld->o.clients;
	ld->conns = calloc(ld->nconns, sizeof(ld->conns[0]));
	if (ld->base == NULL || ld->timer == NULL || ld->conns == NULL)
		return -1;
	for (unsigned i = 0; i < ld->nconns; i++) {
		struct ld_conn *c = &ld->conns[i];

		c->ld = ld;
		c->idx = i;
		c->user = ld->o.users[i % ld->o.nusers];
		c->password = ld->o.passwords[ld->o.npasswords == 1 ? 0 : i % ld->o.npasswords];
		c->rng = (ld->o.seed + 1) * 0x9E3779B97F4A7C15ull + i * 0xBF58476D1CE4E5B9ull;
		if (c->rng == 0)
			c->rng = 1;
	}
	if (ld->o.mode == LD_MODE_LITERAL) {
		ld->lit_data = ld_literal_make(ld->o.size, ld->o.seed);
		ld->o.size = evbuffer_get_length(ld->lit_data);
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct ld *ld = calloc(1, sizeof(*ld));
	int ok;

	if (ld == NULL)
		return 1;
	if (ld_parse_args(&ld->o, argc, argv) < 0) {
		ld_usage(stderr);
		free(ld);
		return LD_EXIT_USAGE;
	}
	signal(SIGPIPE, SIG_IGN);
	ld_raise_nofile(ld->o.clients + 64);
	if (ld_setup(ld) < 0) {
		fprintf(stderr, "imapload: setup failed\n");
		return 1;
	}
	ld->t_setup_ns = ld_now_ns();
	if (ld->o.mode == LD_MODE_IDLE) {
		ld_idle_fill(ld);
		ld_finish_check(ld);
	} else {
		for (unsigned i = 0; i < ld->nconns; i++)
			ld_conn_start(ld, &ld->conns[i]);
	}
	if (ld->nclosed < ld->nconns)
		event_base_dispatch(ld->base);
	ld_measure_stop(ld);

	switch (ld->o.mode) {
	case LD_MODE_MIXED:
		ld_report_mixed(ld);
		ok = ld->errors == 0 && ld->cmds_done != 0;
		break;
	case LD_MODE_SERIAL:
		ld_report_serial(ld);
		ok = ld->errors == 0 && ld->hist[LD_K_COUNT].count != 0;
		break;
	case LD_MODE_IDLE:
		ld_report_idle(ld);
		ok = ld->held == ld->nconns;
		break;
	default:
		ld_report_literal(ld);
		ok = ld->errors == 0 && ld->lit_ok;
		break;
	}
	if (ld->errors != 0)
		fprintf(stderr, "imapload: %u error(s); first: %s\n", ld->errors, ld->first_error);

	for (unsigned i = 0; i < ld->nconns; i++) {
		struct ld_conn *c = &ld->conns[i];

		if (c->bev != NULL)
			bufferevent_free(c->bev);
		if (c->pending_lit != NULL)
			evbuffer_free(c->pending_lit);
		if (c->capture != NULL)
			evbuffer_free(c->capture);
	}
	if (ld->lit_data != NULL)
		evbuffer_free(ld->lit_data);
	event_free(ld->timer);
	event_base_free(ld->base);
	if (ld->ssl_ctx != NULL)
		SSL_CTX_free(ld->ssl_ctx);
	free(ld->base_uids);
	free(ld->conns);
	free(ld);
	return ok ? 0 : 1;
}
