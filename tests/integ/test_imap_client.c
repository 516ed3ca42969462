/*
 * Integration test of the shared library's IMAP client (lib/client.c on
 * lib/conn.c, lib/parse.c) against the harness's two real Dovecots.
 *
 * For each server and each TLS mode (STARTTLS on the plain port, implicit
 * TLS on the imaps port), with the certificate verified against the
 * harness CA: log in, create a folder with a non-ASCII name, APPEND a
 * message (with flags and an INTERNALDATE), LIST, SELECT, FETCH it back and
 * compare bytes, flags and date. Then the failures: a wrong password, a
 * closed port, an untrusted certificate; and a master-user login, a 5 MiB
 * message streamed both ways, and 200 pipelined commands. SASL: CRAM-MD5
 * on both servers (and its refusal), AUTHENTICATE LOGIN with the trace
 * checked for the password, and a mechanism the servers do not offer.
 *
 * Uses the user carol (other tests use other users).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <openssl/evp.h>

#include "ferry_env.h"
#include "imapferry/client.h"
#include "imapferry/log.h"
#include "imapferry/mutf7.h"
#include "imapferry/tls.h"

#define USER "carol"

static struct event_base *base;
static struct tls_client_ctx *tls_ca, *tls_system;

/* One synchronous step: result of the last command. */
struct step {
	void *user; /* for the untagged/literal handlers */
	int done;
	enum imap_status status;
	char text[512];
	char code[64];
};

static void step_done(struct imap_client *cl, const struct imap_result *res, void *aux)
{
	struct step *st = aux;

	(void)cl;
	st->done = 1;
	st->status = res->status;
	snprintf(st->text, sizeof(st->text), "%s", res->text != NULL ? res->text : "");
	snprintf(st->code, sizeof(st->code), "%s", res->code != NULL ? res->code : "");
}

static uint16_t port_of(const char *key)
{
	const char *v = ferry_env_get(key);

	if (v == NULL)
		fail_msg("%s missing from the harness env", key);
	return (uint16_t)atoi(v);
}

static struct imap_client *open_client(const char *side, int implicit_tls,
                                       struct tls_client_ctx *tls, struct step *st)
{
	struct imap_client_opts o;
	struct imap_client *cl;
	const char *error;
	char key[64];

	memset(&o, 0, sizeof(o));
	snprintf(key, sizeof(key), "FERRY_%s_%s_PORT", side, implicit_tls ? "IMAPS" : "IMAP");
	o.host = "127.0.0.1";
	o.port = port_of(key);
	o.security = implicit_tls ? IMAP_SEC_TLS : IMAP_SEC_STARTTLS;
	o.tls = tls;
	o.timeout_ms = 20000;
	o.name = side;
	cl = imap_client_new(base, NULL, &o, &error);
	assert_non_null(cl);
	memset(st, 0, sizeof(*st));
	imap_client_connect(cl, step_done, st);
	assert_int_equal(imap_client_wait(cl, &st->done), 0);
	return cl;
}

static void run_cmd(struct imap_client *cl, struct step *st, imap_untagged_cb *untagged, void *aux,
                    const char *fmt, const char *arg)
{
	const char *error;

	memset(st, 0, sizeof(*st));
	st->user = aux;
	if (imap_client_cmdf(cl, step_done, untagged, NULL, st, &error, fmt, arg) < 0)
		fail_msg("cannot send %s: %s", fmt, error);
	assert_int_equal(imap_client_wait(cl, &st->done), 0);
}

static void login(struct imap_client *cl, const char *user, const char *authuser,
                  const char *password, struct step *st)
{
	memset(st, 0, sizeof(*st));
	imap_client_login(cl, user, authuser, password, NULL, step_done, st);
	assert_int_equal(imap_client_wait(cl, &st->done), 0);
}

static void login_mech(struct imap_client *cl, const char *user, const char *password,
                       const char *mech, struct step *st)
{
	memset(st, 0, sizeof(*st));
	imap_client_login(cl, user, NULL, password, mech, step_done, st);
	assert_int_equal(imap_client_wait(cl, &st->done), 0);
}

/* What the untagged handlers collect. */
struct seen {
	int inbox_listed, folder_listed;
	const char *folder;
	uint32_t exists;
	char flags[256];
	char date[64];
	struct evbuffer *body;
	uint32_t uid;
};

static void on_list(struct imap_client *cl, const struct imap_msg *msg, void *aux)
{
	struct seen *s = ((struct step *)aux)->user;
	struct imap_list_info li;
	const char *err;

	(void)cl;
	if (msg->name == NULL || strcmp(msg->name, "LIST") != 0)
		return;
	assert_int_equal(imap_list_parse(msg, &li, &err), 0);
	if (strcmp(li.name, "INBOX") == 0)
		s->inbox_listed = 1;
	if (strcmp(li.name, s->folder) == 0)
		s->folder_listed = 1;
}

static void on_select(struct imap_client *cl, const struct imap_msg *msg, void *aux)
{
	struct seen *s = ((struct step *)aux)->user;

	(void)cl;
	if (msg->has_number && strcmp(msg->name, "EXISTS") == 0)
		s->exists = msg->number;
}

static void on_fetch(struct imap_client *cl, const struct imap_msg *msg, void *aux)
{
	struct seen *s = ((struct step *)aux)->user;
	const struct imap_arg *items, *v, *f;
	const char *str;
	size_t len;

	(void)cl;
	if (imap_fetch_items(msg, &items) < 0)
		return;
	if ((v = imap_fetch_get(items, "UID")) != NULL)
		assert_int_equal(imap_arg_get_u32(v, &s->uid), 0);
	if ((v = imap_fetch_get(items, "FLAGS")) != NULL) {
		s->flags[0] = '\0';
		for (f = v->child; f != NULL; f = f->next) {
			strncat(s->flags, f->str, sizeof(s->flags) - strlen(s->flags) - 2);
			strcat(s->flags, " ");
		}
	}
	if ((v = imap_fetch_get(items, "INTERNALDATE")) != NULL) {
		assert_int_equal(imap_arg_get_astring(v, &str, &len), 0);
		snprintf(s->date, sizeof(s->date), "%s", str);
	}
	v = imap_fetch_get(items, "BODY[]");
	if (v != NULL && v->type == IMAP_ARG_LITERAL)
		evbuffer_add(s->body, v->str, v->len);
}

/* Large bodies arrive as streamed literal events. */
static void on_body_literal(struct imap_client *cl, const struct imap_event *ev, void *aux)
{
	struct seen *s = ((struct step *)aux)->user;

	(void)cl;
	if (ev->type == IMAP_EV_LITERAL_DATA)
		evbuffer_add(s->body, ev->data, ev->len);
}

static const char message[] = "From: Alice <alice@example.org>\r\n"
                              "To: Carol <carol@example.org>\r\n"
                              "Subject: =?UTF-8?Q?gr=C3=BC=C3=9Fe?=\r\n"
                              "Message-Id: <client-test@example.org>\r\n"
                              "Date: Tue, 01 Jan 2019 10:00:00 +0000\r\n"
                              "\r\n"
                              "* 1 EXPUNGE\r\n"
                              "a1 OK this line must not confuse a parser\r\n";

static void roundtrip(const char *side, int implicit_tls)
{
	struct imap_client *cl;
	struct step st;
	struct seen seen;
	struct evbuffer *lit = evbuffer_new();
	const char *error;
	char *folder;
	size_t flen;
	char utf8[64];

	snprintf(utf8, sizeof(utf8), "Grüße %s %s", side, implicit_tls ? "tls" : "starttls");
	assert_int_equal(mutf7_from_utf8(utf8, strlen(utf8), &folder, &flen, &error), 0);

	cl = open_client(side, implicit_tls, tls_ca, &st);
	if (st.status != IMAP_STATUS_OK)
		fail_msg("%s connect: %s", side, st.text);
	assert_true(imap_client_is_tls(cl));
	assert_int_equal(imap_client_state(cl), IMAP_CL_NOAUTH);
	login(cl, USER, NULL, ferry_env_password(USER), &st);
	if (st.status != IMAP_STATUS_OK)
		fail_msg("%s login: %s", side, st.text);
	assert_int_equal(imap_client_state(cl), IMAP_CL_AUTHED);
	assert_true(imap_caps_has(imap_client_caps(cl), IMAP_CAP_UIDPLUS));

	/* a fresh folder: delete what an earlier run left */
	run_cmd(cl, &st, NULL, NULL, "DELETE %m", folder);
	run_cmd(cl, &st, NULL, NULL, "CREATE %m", folder);
	assert_int_equal(st.status, IMAP_STATUS_OK);

	memset(&seen, 0, sizeof(seen));
	seen.folder = folder;
	seen.body = evbuffer_new();
	evbuffer_add(lit, message, strlen(message));
	memset(&st, 0, sizeof(st));
	assert_int_equal(imap_client_cmdf(cl, step_done, NULL, NULL, &st, &error,
	                                  "APPEND %m (\\Flagged $Label1) \"05-Mar-2017 08:09:10 "
	                                  "+0100\" %L",
	                                  folder, lit),
	                 0);
	assert_int_equal(imap_client_wait(cl, &st.done), 0);
	if (st.status != IMAP_STATUS_OK)
		fail_msg("APPEND: %s", st.text);
	assert_string_equal(st.code, "APPENDUID");

	run_cmd(cl, &st, on_list, &seen, "LIST \"\" %s", "*");
	assert_int_equal(st.status, IMAP_STATUS_OK);
	assert_true(seen.inbox_listed);
	assert_true(seen.folder_listed);

	run_cmd(cl, &st, on_select, &seen, "SELECT %m", folder);
	assert_int_equal(st.status, IMAP_STATUS_OK);
	assert_int_equal(seen.exists, 1);

	run_cmd(cl, &st, on_fetch, &seen, "UID FETCH 1:* (UID FLAGS INTERNALDATE BODY.PEEK[])%a",
	        "");
	assert_int_equal(st.status, IMAP_STATUS_OK);
	assert_int_equal(evbuffer_get_length(seen.body), strlen(message));
	assert_memory_equal(evbuffer_pullup(seen.body, -1), message, strlen(message));
	assert_non_null(strstr(seen.flags, "\\Flagged"));
	assert_non_null(strstr(seen.flags, "$Label1"));
	assert_null(strstr(seen.flags, "\\Seen")); /* BODY.PEEK */
	{
		/* Maildir keeps the instant, not the zone (it is the file's
		 * mtime): compare instants. */
		time_t got, want;
		int tz;

		assert_int_equal(imap_date_time_parse(seen.date, strlen(seen.date), &got, &tz), 0);
		assert_int_equal(imap_date_time_parse("05-Mar-2017 08:09:10 +0100", 26, &want, &tz),
		                 0);
		assert_true(got == want);
	}

	run_cmd(cl, &st, NULL, NULL, "CLOSE%a", "");
	run_cmd(cl, &st, NULL, NULL, "DELETE %m", folder);
	assert_int_equal(st.status, IMAP_STATUS_OK);
	memset(&st, 0, sizeof(st));
	imap_client_logout(cl, step_done, &st);
	assert_int_equal(imap_client_wait(cl, &st.done), 0);
	assert_int_equal(st.status, IMAP_STATUS_OK);
	imap_client_free(&cl);
	evbuffer_free(seen.body);
	evbuffer_free(lit);
	free(folder);
}

static void test_src_starttls(void **state)
{
	(void)state;
	roundtrip("SRC", 0);
}

static void test_src_tls(void **state)
{
	(void)state;
	roundtrip("SRC", 1);
}

static void test_dst_starttls(void **state)
{
	(void)state;
	roundtrip("DST", 0);
}

static void test_dst_tls(void **state)
{
	(void)state;
	roundtrip("DST", 1);
}

static void test_wrong_password(void **state)
{
	struct imap_client *cl;
	struct step st;

	(void)state;
	cl = open_client("SRC", 1, tls_ca, &st);
	assert_int_equal(st.status, IMAP_STATUS_OK);
	login(cl, USER, NULL, "not-the-password", &st);
	assert_int_equal(st.status, IMAP_STATUS_NO);
	assert_string_equal(st.code, "AUTHENTICATIONFAILED");
	assert_string_equal(st.text, "Authentication failed.");
	assert_int_equal(imap_client_state(cl), IMAP_CL_NOAUTH);
	imap_client_free(&cl);
}

static void test_closed_port(void **state)
{
	struct imap_client_opts o;
	struct imap_client *cl;
	struct step st;
	struct sockaddr_in sin;
	socklen_t sl = sizeof(sin);
	const char *error;
	char want[128];
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	(void)state;
	/* a port that was free a moment ago: bind, read it, close */
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &sl), 0);
	close(fd);

	memset(&o, 0, sizeof(o));
	o.host = "127.0.0.1";
	o.port = ntohs(sin.sin_port);
	o.security = IMAP_SEC_STARTTLS_IF_OFFERED;
	o.tls = tls_ca;
	cl = imap_client_new(base, NULL, &o, &error);
	memset(&st, 0, sizeof(st));
	imap_client_connect(cl, step_done, &st);
	assert_int_equal(imap_client_wait(cl, &st.done), 0);
	assert_int_equal(st.status, IMAP_STATUS_NONE);
	snprintf(want, sizeof(want), "connect to 127.0.0.1:%u failed: Connection refused", o.port);
	assert_string_equal(st.text, want);
	assert_int_equal(imap_client_state(cl), IMAP_CL_FAILED);
	imap_client_free(&cl);
}

static void test_untrusted_certificate(void **state)
{
	struct imap_client *cl;
	struct step st;

	(void)state;
	/* the harness CA is not in the system store: verification must fail */
	cl = open_client("DST", 1, tls_system, &st);
	assert_int_equal(st.status, IMAP_STATUS_NONE);
	if (strstr(st.text, "certificate verify failed") == NULL)
		fail_msg("unexpected error: %s", st.text);
	imap_client_free(&cl);
	cl = open_client("DST", 0, tls_system, &st);
	assert_int_equal(st.status, IMAP_STATUS_NONE);
	if (strstr(st.text, "certificate verify failed") == NULL)
		fail_msg("unexpected STARTTLS error: %s", st.text);
	imap_client_free(&cl);
}

static void test_master_user(void **state)
{
	struct imap_client *cl;
	struct step st;

	(void)state;
	cl = open_client("SRC", 0, tls_ca, &st);
	assert_int_equal(st.status, IMAP_STATUS_OK);
	login(cl, USER, ferry_env_get("FERRY_MASTER_USER"), ferry_env_get("FERRY_MASTER_PASS"),
	      &st);
	if (st.status != IMAP_STATUS_OK)
		fail_msg("master login: %s", st.text);
	run_cmd(cl, &st, NULL, NULL, "SELECT %m", "INBOX");
	assert_int_equal(st.status, IMAP_STATUS_OK);
	imap_client_free(&cl);
}

/* CRAM-MD5 (RFC 2195) on both servers, over STARTTLS and in clear text
 * (the password never crosses the wire either way). */
static void test_cram_md5(void **state)
{
	static const char *const sides[] = {"SRC", "DST"};
	struct imap_client *cl;
	struct step st;

	(void)state;
	for (size_t i = 0; i < 2; i++) {
		cl = open_client(sides[i], 0, tls_ca, &st);
		assert_int_equal(st.status, IMAP_STATUS_OK);
		assert_true(imap_client_caps(cl)->auth & (1u << IMAP_AUTH_CRAM_MD5));
		login_mech(cl, USER, ferry_env_password(USER), "CRAM-MD5", &st);
		if (st.status != IMAP_STATUS_OK)
			fail_msg("%s CRAM-MD5 login: %s", sides[i], st.text);
		assert_int_equal(imap_client_state(cl), IMAP_CL_AUTHED);
		run_cmd(cl, &st, NULL, NULL, "SELECT %m", "INBOX");
		assert_int_equal(st.status, IMAP_STATUS_OK);
		imap_client_free(&cl);
	}
}

static void test_cram_md5_wrong_password(void **state)
{
	struct imap_client *cl;
	struct step st;

	(void)state;
	cl = open_client("DST", 1, tls_ca, &st);
	assert_int_equal(st.status, IMAP_STATUS_OK);
	login_mech(cl, USER, "not-the-password", "CRAM-MD5", &st);
	assert_int_equal(st.status, IMAP_STATUS_NO);
	assert_string_equal(st.code, "AUTHENTICATIONFAILED");
	assert_string_equal(st.text, "Authentication failed.");
	assert_int_equal(imap_client_state(cl), IMAP_CL_NOAUTH);
	/* the connection is still usable: the right password works */
	login_mech(cl, USER, ferry_env_password(USER), "CRAM-MD5", &st);
	if (st.status != IMAP_STATUS_OK)
		fail_msg("CRAM-MD5 retry: %s", st.text);
	imap_client_free(&cl);
}

/* AUTHENTICATE LOGIN: two challenges. The protocol trace (debug "imap")
 * must show MASKED, never the password or its base64. */
static void test_auth_login(void **state)
{
	struct imap_client *cl;
	struct step st;
	const char *error, *pw = ferry_env_password(USER);
	char trace[32768], *b64pw;
	size_t n;
	FILE *log = tmpfile();

	(void)state;
	assert_non_null(log);
	b64pw = malloc(4 * ((strlen(pw) + 2) / 3) + 1);
	assert_non_null(b64pw);
	EVP_EncodeBlock((unsigned char *)b64pw, (const unsigned char *)pw, (int)strlen(pw));
	cl = open_client("SRC", 0, tls_ca, &st);
	assert_int_equal(st.status, IMAP_STATUS_OK);
	log_set_file(log);
	log_set_level(LOG_LVL_DEBUG);
	assert_int_equal(log_set_debug("imap", &error), 0);
	login_mech(cl, USER, pw, "AUTH=LOGIN", &st);
	log_set_file(NULL);
	log_set_level(LOG_LVL_NOTICE);
	log_set_debug(getenv("FERRY_DEBUG_IMAP") != NULL ? "imap" : "", &error);
	rewind(log);
	n = fread(trace, 1, sizeof(trace) - 1, log);
	trace[n] = '\0';
	fclose(log);
	if (st.status != IMAP_STATUS_OK)
		fail_msg("AUTH=LOGIN: %s", st.text);
	run_cmd(cl, &st, NULL, NULL, "SELECT %m", "INBOX");
	assert_int_equal(st.status, IMAP_STATUS_OK);
	if (strstr(trace, "AUTHENTICATE LOGIN") == NULL || strstr(trace, "MASKED") == NULL)
		fail_msg("trace lacks the masked exchange:\n%s", trace);
	if (strstr(trace, pw) != NULL || strstr(trace, b64pw) != NULL)
		fail_msg("the password is in the trace:\n%s", trace);
	free(b64pw);
	imap_client_free(&cl);
}

/* The test Dovecots offer XOAUTH2 (an oauth2 passdb asking the harness's
 * token server; a mechanism not offered is unit-tested in test_client_sasl):
 * a token they do not know is refused with the server's JSON error and the
 * connection stays usable; an unknown mechanism fails at once. */
static void test_mech_not_offered(void **state)
{
	struct imap_client *cl;
	struct step st;

	(void)state;
	cl = open_client("SRC", 0, tls_ca, &st);
	assert_int_equal(st.status, IMAP_STATUS_OK);
	login_mech(cl, USER, "some-token", "XOAUTH2", &st);
	assert_int_equal(st.status, IMAP_STATUS_NO);
	if (strstr(st.text, "(server error: {") == NULL)
		fail_msg("XOAUTH2 refusal without the server's error: %s", st.text);
	assert_int_equal(imap_client_in_flight(cl), 0);
	login_mech(cl, USER, "x", "DIGEST-MD5", &st);
	assert_int_equal(st.status, IMAP_STATUS_NONE);
	assert_string_equal(st.text, "unknown authentication mechanism \"DIGEST-MD5\" (known: "
	                             "LOGIN, PLAIN, AUTH=LOGIN, CRAM-MD5, XOAUTH2, OAUTHBEARER, "
	                             "NTLM)");
	assert_int_equal(imap_client_state(cl), IMAP_CL_NOAUTH);
	login_mech(cl, USER, ferry_env_password(USER), "PLAIN", &st);
	if (st.status != IMAP_STATUS_OK)
		fail_msg("PLAIN after the refusals: %s", st.text);
	imap_client_free(&cl);
}

/* 5 MiB up with LITERAL+ and back as a streamed literal; 200 commands
 * pipelined in one go, completing in order. */
static void test_big_message_and_pipelining(void **state)
{
	struct imap_client *cl;
	struct step st, many[200];
	struct seen seen;
	struct evbuffer *lit = evbuffer_new();
	const char *error;
	const size_t size = 5u << 20;
	char *msg = malloc(size);
	size_t i;

	(void)state;
	memcpy(msg, "Subject: big\r\n\r\n", 16);
	for (i = 16; i < size; i++)
		msg[i] = (i % 78 == 77) ? '\n' : (i % 78 == 76) ? '\r' : (char)('a' + i % 26);
	cl = open_client("DST", 1, tls_ca, &st);
	login(cl, USER, NULL, ferry_env_password(USER), &st);
	assert_int_equal(st.status, IMAP_STATUS_OK);
	run_cmd(cl, &st, NULL, NULL, "DELETE %m", "BigTest");
	run_cmd(cl, &st, NULL, NULL, "CREATE %m", "BigTest");
	evbuffer_add(lit, msg, size);
	memset(&st, 0, sizeof(st));
	assert_int_equal(
	        imap_client_cmdf(cl, step_done, NULL, NULL, &st, &error, "APPEND BigTest %L", lit),
	        0);
	assert_int_equal(imap_client_wait(cl, &st.done), 0);
	assert_int_equal(st.status, IMAP_STATUS_OK);
	run_cmd(cl, &st, NULL, NULL, "SELECT %m", "BigTest");

	memset(&seen, 0, sizeof(seen));
	seen.body = evbuffer_new();
	memset(&st, 0, sizeof(st));
	st.user = &seen;
	assert_int_equal(imap_client_cmdf(cl, step_done, on_fetch, on_body_literal, &st, &error,
	                                  "UID FETCH 1 (UID BODY.PEEK[])"),
	                 0);
	/* pipelined behind the FETCH */
	for (i = 0; i < 200; i++) {
		memset(&many[i], 0, sizeof(many[i]));
		assert_int_equal(imap_client_cmdf(cl, step_done, NULL, NULL, &many[i], &error,
		                                  i % 2 ? "NOOP" : "STATUS INBOX (MESSAGES)"),
		                 0);
	}
	assert_true(imap_client_in_flight(cl) == 201);
	assert_int_equal(imap_client_wait(cl, &many[199].done), 0);
	assert_true(st.done);
	assert_int_equal(st.status, IMAP_STATUS_OK);
	for (i = 0; i < 200; i++)
		assert_int_equal(many[i].status, IMAP_STATUS_OK);
	assert_int_equal(evbuffer_get_length(seen.body), size);
	assert_memory_equal(evbuffer_pullup(seen.body, -1), msg, size);
	run_cmd(cl, &st, NULL, NULL, "CLOSE%a", "");
	run_cmd(cl, &st, NULL, NULL, "DELETE %m", "BigTest");
	imap_client_free(&cl);
	evbuffer_free(seen.body);
	evbuffer_free(lit);
	free(msg);
}

static int setup(void **state)
{
	struct tls_client_opts to;
	const char *error;

	(void)state;
	if (ferry_env_load() < 0)
		return -1;
	signal(SIGPIPE, SIG_IGN);
	if (getenv("FERRY_DEBUG_IMAP") != NULL)
		log_set_debug("imap", &error);
	base = event_base_new();
	memset(&to, 0, sizeof(to));
	to.ca_file = ferry_env_get("FERRY_CA_FILE");
	tls_ca = tls_client_ctx_new(&to, &error);
	if (tls_ca == NULL) {
		fprintf(stderr, "TLS context: %s\n", error);
		return -1;
	}
	tls_system = tls_client_ctx_new(NULL, &error);
	return tls_system == NULL ? -1 : 0;
}

static int teardown(void **state)
{
	(void)state;
	tls_client_ctx_free(&tls_ca);
	tls_client_ctx_free(&tls_system);
	event_base_free(base);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_src_starttls),
	        cmocka_unit_test(test_src_tls),
	        cmocka_unit_test(test_dst_starttls),
	        cmocka_unit_test(test_dst_tls),
	        cmocka_unit_test(test_wrong_password),
	        cmocka_unit_test(test_closed_port),
	        cmocka_unit_test(test_untrusted_certificate),
	        cmocka_unit_test(test_master_user),
	        cmocka_unit_test(test_big_message_and_pipelining),
	        cmocka_unit_test(test_cram_md5),
	        cmocka_unit_test(test_cram_md5_wrong_password),
	        cmocka_unit_test(test_auth_login),
	        cmocka_unit_test(test_mech_not_offered),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
