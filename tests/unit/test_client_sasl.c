/*
 * Unit tests of the client's SASL side (lib/client.c): mechanism names,
 * the exact bytes of the initial responses (PLAIN, XOAUTH2, OAUTHBEARER),
 * the answers to each challenge (AUTH=LOGIN, CRAM-MD5 with RFC 2195's own
 * example, the XOAUTH2/OAUTHBEARER error challenge), and refused options.
 * Then whole logins through imap_client_login_with() against a scripted
 * in-process server on 127.0.0.1: the lines the client sends must match
 * the script byte for byte. XOAUTH2 and OAUTHBEARER are tested only here:
 * the integration Dovecots would need an OAuth2 token server.
 *
 * Expected base64 strings were computed independently (Python's base64 and
 * hmac modules); the XOAUTH2 one is the example of Google's XOAUTH2 page.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <openssl/evp.h>

#include "imapferry/client.h"
#include "imapferry/log.h"

#define N_ELEMENTS(a) (sizeof(a) / sizeof((a)[0]))

/* --- mechanism names --- */

static void test_mech_lookup(void **state)
{
	static const struct {
		const char *name;
		int want;
	} cases[] = {
	        {NULL, IMAP_LOGIN_CMD},
	        {"", IMAP_LOGIN_CMD},
	        {"LOGIN", IMAP_LOGIN_CMD},
	        {"login", IMAP_LOGIN_CMD},
	        {"AUTH=LOGIN", IMAP_LOGIN_SASL_LOGIN},
	        {"auth=login", IMAP_LOGIN_SASL_LOGIN},
	        {"PLAIN", IMAP_LOGIN_PLAIN},
	        {"AUTH=PLAIN", IMAP_LOGIN_PLAIN},
	        {"cram-md5", IMAP_LOGIN_CRAM_MD5},
	        {"XOAUTH2", IMAP_LOGIN_XOAUTH2},
	        {"AUTH=XOAUTH2", IMAP_LOGIN_XOAUTH2},
	        {"OAuthBearer", IMAP_LOGIN_OAUTHBEARER},
	        {"DIGEST-MD5", -1},
	        {"AUTH=", -1},
	        {"AUTH=AUTH=PLAIN", -1},
	        {"PREAUTH", -1},
	        {"PLAIN ", -1},
	};

	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(cases); i++) {
		int got = imap_login_mech_lookup(cases[i].name);

		if (got != cases[i].want)
			fail_msg("\"%s\": got %d, want %d",
			         cases[i].name ? cases[i].name : "(null)", got, cases[i].want);
	}
	/* every name in the table looks up to itself */
	for (int m = 0; m < IMAP_LOGIN_MECH_COUNT; m++)
		assert_int_equal(imap_login_mech_lookup(imap_login_mech_names[m]), m);
}

/* --- initial responses --- */

struct initial_case {
	const char *name;
	struct imap_login_opts o;
	const char *want_raw; /* the decoded bytes (may hold NULs) */
	size_t want_raw_len;
	const char *want; /* base64 */
};

#define RAW(s) s, sizeof(s) - 1

static void test_initial_responses(void **state)
{
	static const struct initial_case cases[] = {
	        {"PLAIN",
	         {IMAP_LOGIN_PLAIN, "carol", NULL, "carol-pw", NULL},
	         RAW("\0carol\0carol-pw"),
	         "AGNhcm9sAGNhcm9sLXB3"},
	        {"PLAIN with authzid (admin login for alice)",
	         {IMAP_LOGIN_PLAIN, "alice", "admin", "admin-pw", NULL},
	         RAW("alice\0admin\0admin-pw"),
	         "YWxpY2UAYWRtaW4AYWRtaW4tcHc="},
	        {"XOAUTH2 (Google's example)",
	         {IMAP_LOGIN_XOAUTH2, "someuser@example.com", NULL,
	          "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg", NULL},
	         RAW("user=someuser@example.com\001auth=Bearer "
	             "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg\001\001"),
	         "dXNlcj1zb21ldXNlckBleGFtcGxlLmNvbQFhdXRoPUJlYXJlciB5YTI5LnZGOWRmdDRxbVRjMk52YjNS"
	         "bGNrQmhkSFJoZG1semRHRXVZMjl0Q2cBAQ=="},
	        {"OAUTHBEARER",
	         {IMAP_LOGIN_OAUTHBEARER, "user@example.com", NULL,
	          "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==", NULL},
	         RAW("n,a=user@example.com,\001auth=Bearer "
	             "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==\001\001"),
	         "bixhPXVzZXJAZXhhbXBsZS5jb20sAWF1dGg9QmVhcmVyIHZGOWRmdDRxbVRjMk52YjNSbGNrQmhiSFJo"
	         "ZG1semRHRXVZMjl0Q2c9PQEB"},
	        {"OAUTHBEARER escapes , and = in the user (RFC 5801)",
	         {IMAP_LOGIN_OAUTHBEARER, "a,b=c", NULL, "tok", NULL},
	         RAW("n,a=a=2Cb=3Dc,\001auth=Bearer tok\001\001"),
	         "bixhPWE9MkNiPTNEYywBYXV0aD1CZWFyZXIgdG9rAQE="},
	        {"ready-made initial response (--oauthdirect1) is sent as is",
	         {IMAP_LOGIN_XOAUTH2, "ignored", NULL, NULL, "dXNlcj14AWF1dGg9QmVhcmVyIHkBAQ=="},
	         RAW("user=x\001auth=Bearer y\001\001"),
	         "dXNlcj14AWF1dGg9QmVhcmVyIHkBAQ=="},
	};

	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(cases); i++) {
		const struct initial_case *c = &cases[i];
		const char *error = NULL, *got;
		struct imap_sasl *s = imap_sasl_new(&c->o, &error);
		unsigned char raw[512];
		int n;

		if (s == NULL)
			fail_msg("%s: refused: %s", c->name, error);
		got = imap_sasl_initial(s);
		assert_non_null(got);
		if (strcmp(got, c->want) != 0)
			fail_msg("%s:\n got %s\nwant %s", c->name, got, c->want);
		/* decode independently of the code under test */
		n = EVP_DecodeBlock(raw, (const unsigned char *)got, (int)strlen(got));
		assert_true(n >= 0);
		n -= (got[strlen(got) - 1] == '=') + (got[strlen(got) - 2] == '=');
		if ((size_t)n != c->want_raw_len || memcmp(raw, c->want_raw, c->want_raw_len) != 0)
			fail_msg("%s: decoded bytes differ (%d vs %zu bytes)", c->name, n,
			         c->want_raw_len);
		imap_sasl_free(&s);
		assert_null(s);
	}
	imap_sasl_free(&(struct imap_sasl *){NULL}); /* accepts NULL */
}

/* --- challenge/response conversations --- */

#define CANCEL ((const char *)-1) /* want: imap_sasl_step() returns -1 */

struct step_case {
	const char *name;
	struct imap_login_opts o;
	int sasl_ir; /* imap_sasl_initial() first, as with SASL-IR */
	struct {
		const char *challenge; /* text after "+ " */
		const char *want;      /* response, or CANCEL */
	} steps[4];
	const char *want_error; /* imap_sasl_error() at the end, NULL = none */
};

static void test_steps(void **state)
{
	static const struct step_case cases[] = {
	        {"PLAIN without SASL-IR: the initial response at the empty '+'",
	         {IMAP_LOGIN_PLAIN, "carol", NULL, "carol-pw", NULL},
	         0,
	         {{"", "AGNhcm9sAGNhcm9sLXB3"}, {"Zm9v", CANCEL}},
	         "cancelled: a challenge after the PLAIN response"},
	        {"PLAIN with SASL-IR: any challenge is cancelled",
	         {IMAP_LOGIN_PLAIN, "carol", NULL, "carol-pw", NULL},
	         1,
	         {{"", CANCEL}},
	         "cancelled: a challenge after the PLAIN response"},
	        {"AUTH=LOGIN: user, then password, by position",
	         {IMAP_LOGIN_SASL_LOGIN, "carol", NULL, "carol-pw", NULL},
	         0,
	         {{"VXNlcm5hbWU6", "Y2Fyb2w="}, {"UGFzc3dvcmQ6", "Y2Fyb2wtcHc="}, {"", CANCEL}},
	         "cancelled: more than two AUTH=LOGIN challenges"},
	        {"AUTH=LOGIN with other prompts",
	         {IMAP_LOGIN_SASL_LOGIN, "carol", NULL, "carol-pw", NULL},
	         0,
	         {{"", "Y2Fyb2w="}, {"", "Y2Fyb2wtcHc="}},
	         NULL},
	        {"CRAM-MD5: RFC 2195's example",
	         {IMAP_LOGIN_CRAM_MD5, "tim", NULL, "tanstaaftanstaaf", NULL},
	         0,
	         {{"PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2UucmVzdG9uLm1jaS5uZXQ+",
	           "dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw"},
	          {"", CANCEL}},
	         "cancelled: a second CRAM-MD5 challenge"},
	        {"CRAM-MD5: a challenge with trailing blanks",
	         {IMAP_LOGIN_CRAM_MD5, "tim", NULL, "tanstaaftanstaaf", NULL},
	         0,
	         {{"PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2UucmVzdG9uLm1jaS5uZXQ+  ",
	           "dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw"}},
	         NULL},
	        {"CRAM-MD5: a challenge that is not base64",
	         {IMAP_LOGIN_CRAM_MD5, "tim", NULL, "x", NULL},
	         0,
	         {{"not base64!", CANCEL}},
	         "cancelled: the CRAM-MD5 challenge is empty or not base64"},
	        {"CRAM-MD5: an empty challenge",
	         {IMAP_LOGIN_CRAM_MD5, "tim", NULL, "x", NULL},
	         0,
	         {{"", CANCEL}},
	         "cancelled: the CRAM-MD5 challenge is empty or not base64"},
	        {"CRAM-MD5: misplaced padding",
	         {IMAP_LOGIN_CRAM_MD5, "tim", NULL, "x", NULL},
	         0,
	         {{"Zg==Zm9v", CANCEL}},
	         "cancelled: the CRAM-MD5 challenge is empty or not base64"},
	        {"XOAUTH2 with SASL-IR: the error challenge gets an empty line",
	         {IMAP_LOGIN_XOAUTH2, "u@example.com", NULL, "tok", NULL},
	         1,
	         {{"eyJzdGF0dXMiOiI0MDAiLCJzY2hlbWVzIjoiQmVhcmVyIiwic2NvcGUiOiJodHRwczovL21haWwuZ29"
	           "v"
	           "Z2xlLmNvbS8ifQo=",
	           ""},
	          {"", CANCEL}},
	         "server error: "
	         "{\"status\":\"400\",\"schemes\":\"Bearer\",\"scope\":\"https://mail.google.com/"
	         "\"}"},
	        {"XOAUTH2 without SASL-IR: initial response, then the error",
	         {IMAP_LOGIN_XOAUTH2, "x", NULL, "y", NULL},
	         0,
	         {{"", "dXNlcj14AWF1dGg9QmVhcmVyIHkBAQ=="}, {"e30=", ""}},
	         "server error: {}"},
	        {"XOAUTH2: an error challenge that is not base64 is shown raw",
	         {IMAP_LOGIN_XOAUTH2, "x", NULL, "y", NULL},
	         1,
	         {{"oops \x7f", ""}},
	         "server error: oops \\x7f"},
	        {"OAUTHBEARER: the error challenge gets ^A (RFC 7628 3.2.3)",
	         {IMAP_LOGIN_OAUTHBEARER, "x", NULL, "y", NULL},
	         1,
	         {{"eyJzdGF0dXMiOiJpbnZhbGlkX3Rva2VuIiwic2NvcGUiOiJleGFtcGxlX3Njb3BlIiwib3BlbmlkLWN"
	           "v"
	           "bmZpZ3VyYXRpb24iOiJodHRwczovL2V4YW1wbGUuY29tLy53ZWxsLWtub3duL29wZW5pZC1jb25maWd"
	           "1"
	           "cmF0aW9uIn0=",
	           "AQ=="}},
	         "server error: {\"status\":\"invalid_token\",\"scope\":\"example_scope\","
	         "\"openid-configuration\":\"https://example.com/.well-known/"
	         "openid-configuration\"}"},
	};

	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(cases); i++) {
		const struct step_case *c = &cases[i];
		const char *error = NULL, *resp;
		struct imap_sasl *s = imap_sasl_new(&c->o, &error);

		if (s == NULL)
			fail_msg("%s: refused: %s", c->name, error);
		if (c->sasl_ir)
			assert_non_null(imap_sasl_initial(s));
		for (size_t k = 0; k < N_ELEMENTS(c->steps) && c->steps[k].want != NULL; k++) {
			const char *ch = c->steps[k].challenge;
			/* a heap copy without NUL: ASan catches reads past len */
			size_t len = strlen(ch);
			char *copy = malloc(len + 1);
			int r;

			assert_non_null(copy);
			memcpy(copy, ch, len);
			resp = NULL;
			r = imap_sasl_step(s, copy, len, &resp);
			free(copy);
			if (c->steps[k].want == CANCEL) {
				if (r != -1)
					fail_msg("%s: step %zu answered \"%s\", want a cancel",
					         c->name, k, resp);
				continue;
			}
			if (r != 0)
				fail_msg("%s: step %zu cancelled (%s), want \"%s\"", c->name, k,
				         imap_sasl_error(s), c->steps[k].want);
			if (strcmp(resp, c->steps[k].want) != 0)
				fail_msg("%s: step %zu:\n got \"%s\"\nwant \"%s\"", c->name, k,
				         resp, c->steps[k].want);
		}
		if (c->want_error == NULL && imap_sasl_error(s) != NULL)
			fail_msg("%s: unexpected error \"%s\"", c->name, imap_sasl_error(s));
		if (c->want_error != NULL &&
		    (imap_sasl_error(s) == NULL || strcmp(imap_sasl_error(s), c->want_error) != 0))
			fail_msg("%s: error\n got \"%s\"\nwant \"%s\"", c->name,
			         imap_sasl_error(s) ? imap_sasl_error(s) : "(none)", c->want_error);
		imap_sasl_free(&s);
	}
}

/* Server-first mechanisms have no initial response. */
static void test_no_initial_for_server_first(void **state)
{
	struct imap_login_opts o = {IMAP_LOGIN_CRAM_MD5, "u", NULL, "p", NULL};
	const char *error;
	struct imap_sasl *s;

	(void)state;
	s = imap_sasl_new(&o, &error);
	assert_non_null(s);
	assert_null(imap_sasl_initial(s));
	imap_sasl_free(&s);
	o.mech = IMAP_LOGIN_SASL_LOGIN;
	s = imap_sasl_new(&o, &error);
	assert_non_null(s);
	assert_null(imap_sasl_initial(s));
	imap_sasl_free(&s);
}

static void test_refused_options(void **state)
{
	static const struct {
		const char *name;
		struct imap_login_opts o;
		const char *want;
	} cases[] = {
	        {"the LOGIN command is no SASL mechanism",
	         {IMAP_LOGIN_CMD, "u", NULL, "p", NULL},
	         "not a SASL mechanism"},
	        {"out of range",
	         {IMAP_LOGIN_MECH_COUNT, "u", NULL, "p", NULL},
	         "not a SASL mechanism"},
	        {"authuser with CRAM-MD5",
	         {IMAP_LOGIN_CRAM_MD5, "u", "admin", "p", NULL},
	         "an authorization identity (authuser) needs the PLAIN mechanism"},
	        {"authuser with XOAUTH2",
	         {IMAP_LOGIN_XOAUTH2, "u", "admin", "p", NULL},
	         "an authorization identity (authuser) needs the PLAIN mechanism"},
	        {"initial response with CRAM-MD5",
	         {IMAP_LOGIN_CRAM_MD5, "u", NULL, NULL, "Zm9v"},
	         "a ready-made initial response needs PLAIN, XOAUTH2 or OAUTHBEARER"},
	        {"initial response not padded",
	         {IMAP_LOGIN_XOAUTH2, NULL, NULL, NULL, "Zm9vYg"},
	         "the ready-made initial response is not base64"},
	        {"initial response with a line end (would inject a command)",
	         {IMAP_LOGIN_XOAUTH2, NULL, NULL, NULL, "Zm9v\r\nA1 LOGOUT"},
	         "the ready-made initial response is not base64"},
	        {"initial response with a blank",
	         {IMAP_LOGIN_XOAUTH2, NULL, NULL, NULL, "Zm9v Zm9v"},
	         "the ready-made initial response is not base64"},
	        {"no password",
	         {IMAP_LOGIN_PLAIN, "u", NULL, NULL, NULL},
	         "no user, or no password or token"},
	        {"no user",
	         {IMAP_LOGIN_SASL_LOGIN, NULL, NULL, "p", NULL},
	         "no user, or no password or token"},
	        {"^A in an XOAUTH2 token",
	         {IMAP_LOGIN_XOAUTH2, "u", NULL, "tok\001auth=x", NULL},
	         "the user name or the token contains a ^A (0x01)"},
	        {"^A in an OAUTHBEARER user",
	         {IMAP_LOGIN_OAUTHBEARER, "u\001", NULL, "tok", NULL},
	         "the user name or the token contains a ^A (0x01)"},
	};

	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(cases); i++) {
		const char *error = NULL;
		struct imap_sasl *s = imap_sasl_new(&cases[i].o, &error);

		if (s != NULL)
			fail_msg("%s: accepted", cases[i].name);
		if (error == NULL || strcmp(error, cases[i].want) != 0)
			fail_msg("%s:\n got \"%s\"\nwant \"%s\"", cases[i].name,
			         error ? error : "(null)", cases[i].want);
	}
}

/* --- whole logins against a scripted server --- */

/* One exchange: the line the client must send (without CRLF; NULL for
 * the greeting), and what the server sends back. */
struct line {
	const char *expect;
	const char *send;
};

struct fake {
	struct event_base *base;
	struct evconnlistener *lis;
	struct bufferevent *bev;
	const struct line *script;
	size_t n, next;
	char mismatch[1024]; /* first difference, for the failure message */
	uint16_t port;
};

static void fake_read(struct bufferevent *bev, void *aux)
{
	struct fake *f = aux;
	char *line;
	size_t len;

	while ((line = evbuffer_readln(bufferevent_get_input(bev), &len,
	                               EVBUFFER_EOL_CRLF_STRICT)) != NULL) {
		if (f->next >= f->n) {
			if (f->mismatch[0] == '\0')
				snprintf(f->mismatch, sizeof(f->mismatch),
				         "client sent \"%s\" after the script ended", line);
		} else if (strcmp(line, f->script[f->next].expect) != 0) {
			if (f->mismatch[0] == '\0')
				snprintf(f->mismatch, sizeof(f->mismatch),
				         "line %zu:\n got \"%s\"\nwant \"%s\"", f->next, line,
				         f->script[f->next].expect);
		} else {
			bufferevent_write(bev, f->script[f->next].send,
			                  strlen(f->script[f->next].send));
			f->next++;
		}
		free(line);
	}
}

static void fake_event(struct bufferevent *bev, short what, void *aux)
{
	(void)bev;
	(void)what;
	(void)aux;
}

static void fake_accept(struct evconnlistener *lis, evutil_socket_t fd, struct sockaddr *sa,
                        int salen, void *aux)
{
	struct fake *f = aux;

	(void)lis;
	(void)sa;
	(void)salen;
	f->bev = bufferevent_socket_new(f->base, fd, BEV_OPT_CLOSE_ON_FREE);
	assert_non_null(f->bev);
	bufferevent_setcb(f->bev, fake_read, NULL, fake_event, f);
	bufferevent_enable(f->bev, EV_READ | EV_WRITE);
	/* the greeting */
	bufferevent_write(f->bev, f->script[0].send, strlen(f->script[0].send));
	f->next = 1;
}

static void fake_start(struct fake *f, struct event_base *base, const struct line *script, size_t n)
{
	struct sockaddr_in sin;
	socklen_t sl = sizeof(sin);

	memset(f, 0, sizeof(*f));
	f->base = base;
	f->script = script;
	f->n = n;
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	f->lis = evconnlistener_new_bind(base, fake_accept, f,
	                                 LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, -1,
	                                 (struct sockaddr *)&sin, sizeof(sin));
	assert_non_null(f->lis);
	assert_int_equal(getsockname(evconnlistener_get_fd(f->lis), (struct sockaddr *)&sin, &sl),
	                 0);
	f->port = ntohs(sin.sin_port);
}

static void fake_stop(struct fake *f)
{
	if (f->bev != NULL)
		bufferevent_free(f->bev);
	evconnlistener_free(f->lis);
}

struct step {
	int done;
	enum imap_status status;
	char text[768];
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

struct login_case {
	const char *name;
	struct imap_login_opts o;
	const struct line *script;
	size_t n;
	int noop_after; /* queue a NOOP right after the login: it must wait */
	enum imap_status want_status;
	const char *want_text;
	const char *secret; /* must not appear in the trace */
};

static void run_login(const struct login_case *c)
{
	struct event_base *base = event_base_new();
	struct imap_client_opts co;
	struct imap_client *cl;
	struct step st, noop;
	struct fake f;
	const char *error;
	char trace[16384], want[512];
	const char *p;
	size_t tn;
	FILE *log = tmpfile();

	assert_non_null(base);
	assert_non_null(log);
	log_set_file(log);
	log_set_level(LOG_LVL_DEBUG);
	assert_int_equal(log_set_debug("imap", &error), 0);
	fake_start(&f, base, c->script, c->n);
	memset(&co, 0, sizeof(co));
	co.host = "127.0.0.1";
	co.port = f.port;
	co.security = IMAP_SEC_PLAIN;
	co.timeout_ms = 5000;
	co.name = "fake";
	cl = imap_client_new(base, NULL, &co, &error);
	assert_non_null(cl);
	memset(&st, 0, sizeof(st));
	imap_client_connect(cl, step_done, &st);
	assert_int_equal(imap_client_wait(cl, &st.done), 0);
	assert_int_equal(st.status, IMAP_STATUS_OK);

	memset(&st, 0, sizeof(st));
	memset(&noop, 0, sizeof(noop));
	imap_client_login_with(cl, &c->o, step_done, &st);
	if (c->noop_after)
		assert_int_equal(imap_client_cmdf(cl, step_done, NULL, NULL, &noop, &error, "NOOP"),
		                 0);
	assert_int_equal(imap_client_wait(cl, &st.done), 0);
	if (c->noop_after)
		assert_int_equal(imap_client_wait(cl, &noop.done), 0);

	log_set_file(NULL);
	log_set_level(LOG_LVL_NOTICE);
	log_set_debug("", &error);
	rewind(log);
	tn = fread(trace, 1, sizeof(trace) - 1, log);
	trace[tn] = '\0';
	fclose(log);

	if (f.mismatch[0] != '\0')
		fail_msg("%s: %s", c->name, f.mismatch);
	if (f.next != f.n)
		fail_msg("%s: script stopped at line %zu of %zu", c->name, f.next, f.n);
	/* the port is known only now: "PORT" in want_text stands for it */
	p = strstr(c->want_text, "PORT");
	if (p != NULL)
		snprintf(want, sizeof(want), "%.*s%u%s", (int)(p - c->want_text), c->want_text,
		         (unsigned)f.port, p + 4);
	else
		snprintf(want, sizeof(want), "%s", c->want_text);
	if (st.status != c->want_status || strcmp(st.text, want) != 0)
		fail_msg("%s:\n got %d \"%s\"\nwant %d \"%s\"", c->name, st.status, st.text,
		         c->want_status, want);
	if (c->noop_after)
		assert_int_equal(noop.status, IMAP_STATUS_OK);
	if (getenv("SASL_TEST_TRACE") != NULL)
		fprintf(stderr, "--- %s\n%s", c->name, trace);
	if (c->secret != NULL && strstr(trace, c->secret) != NULL)
		fail_msg("%s: the secret \"%s\" is in the trace:\n%s", c->name, c->secret, trace);
	if (strstr(trace, "AUTHENTICATE") != NULL && strstr(trace, "MASKED") == NULL &&
	    strstr(trace, "empty SASL response") == NULL)
		fail_msg("%s: no MASKED in the trace:\n%s", c->name, trace);
	imap_client_free(&cl);
	fake_stop(&f);
	event_base_free(base);
}

#define XO_IR                                                                                      \
	"dXNlcj1zb21ldXNlckBleGFtcGxlLmNvbQFhdXRoPUJlYXJlciB5YTI5LnZGOWRmdDRxbVRjMk52YjNSbGNrQmhk" \
	"SFJoZG1semRHRXVZMjl0Q2cBAQ=="
#define XO_TOKEN "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg"
#define GOOGLE_ERR                                                                                 \
	"eyJzdGF0dXMiOiI0MDAiLCJzY2hlbWVzIjoiQmVhcmVyIiwic2NvcGUiOiJodHRwczovL21haWwuZ29vZ2xlLmNv" \
	"bS8ifQo="

static const struct line xoauth2_error[] = {
        {NULL, "* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN AUTH=XOAUTH2] fake ready\r\n"},
        {"F1 AUTHENTICATE XOAUTH2 " XO_IR, "+ " GOOGLE_ERR "\r\n"},
        {"", "F1 NO [AUTHENTICATIONFAILED] Invalid credentials (Failure)\r\n"},
        {"F2 NOOP", "F2 OK done\r\n"},
};

static const struct line xoauth2_ok[] = {
        {NULL, "* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=XOAUTH2] fake ready\r\n"},
        {"F1 AUTHENTICATE XOAUTH2 " XO_IR, "F1 OK [CAPABILITY IMAP4rev1 IDLE] welcome\r\n"},
        {"F2 NOOP", "F2 OK done\r\n"},
};

static const struct line oauthdirect_ok[] = {
        {NULL, "* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=XOAUTH2] fake ready\r\n"},
        {"F1 AUTHENTICATE XOAUTH2 dXNlcj14AWF1dGg9QmVhcmVyIHkBAQ==",
         "F1 OK [CAPABILITY IMAP4rev1] welcome\r\n"},
};

/* No SASL-IR: the initial response goes at the first "+". */
static const struct line oauthbearer_error[] = {
        {NULL, "* OK [CAPABILITY IMAP4rev1 AUTH=OAUTHBEARER] fake ready\r\n"},
        {"F1 AUTHENTICATE OAUTHBEARER", "+ \r\n"},
        {"bixhPWE9MkNiPTNEYywBYXV0aD1CZWFyZXIgdG9rAQE=", "+ e30=\r\n"},
        {"AQ==", "F1 NO [AUTHENTICATIONFAILED] nope\r\n"},
};

static const struct line cram_md5_ok[] = {
        {NULL, "* OK [CAPABILITY IMAP4rev1 AUTH=CRAM-MD5] fake ready\r\n"},
        {"F1 AUTHENTICATE CRAM-MD5",
         "+ PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2UucmVzdG9uLm1jaS5uZXQ+\r\n"},
        {"dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw", "F1 OK ok\r\n"},
        /* no [CAPABILITY] in the OK: the client asks (RFC 3501 6.2.3) */
        {"F2 CAPABILITY", "* CAPABILITY IMAP4rev1 IDLE\r\nF2 OK done\r\n"},
};

static const struct line plain_unexpected_challenge[] = {
        {NULL, "* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN] fake ready\r\n"},
        {"F1 AUTHENTICATE PLAIN AGNhcm9sAGNhcm9sLXB3", "+ Zm9v\r\n"},
        {"*", "F1 BAD Authentication aborted\r\n"},
};

/* The harness does not offer AUTH=XOAUTH2: nothing is sent. */
static const struct line not_offered[] = {
        {NULL, "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN AUTH=SCRAM-SHA-1] fake ready\r\n"},
};

static const struct line logindisabled[] = {
        {NULL, "* OK [CAPABILITY IMAP4rev1 LOGINDISABLED] fake ready\r\n"},
};

static void test_logins(void **state)
{
	static const struct login_case cases[] = {
	        {"XOAUTH2 refused: error challenge, empty line, NO with the JSON; the NOOP waits",
	         {IMAP_LOGIN_XOAUTH2, "someuser@example.com", NULL, XO_TOKEN, NULL},
	         xoauth2_error,
	         N_ELEMENTS(xoauth2_error),
	         1,
	         IMAP_STATUS_NO,
	         "Invalid credentials (Failure) (server error: "
	         "{\"status\":\"400\",\"schemes\":\"Bearer\",\"scope\":\"https://mail.google.com/"
	         "\"})",
	         XO_TOKEN},
	        {"XOAUTH2 accepted with SASL-IR",
	         {IMAP_LOGIN_XOAUTH2, "someuser@example.com", NULL, XO_TOKEN, NULL},
	         xoauth2_ok,
	         N_ELEMENTS(xoauth2_ok),
	         1,
	         IMAP_STATUS_OK,
	         "welcome",
	         XO_IR},
	        {"ready-made initial response",
	         {IMAP_LOGIN_XOAUTH2, "x", NULL, NULL, "dXNlcj14AWF1dGg9QmVhcmVyIHkBAQ=="},
	         oauthdirect_ok,
	         N_ELEMENTS(oauthdirect_ok),
	         0,
	         IMAP_STATUS_OK,
	         "welcome",
	         "dXNlcj14AWF1dGg9QmVhcmVyIHkBAQ=="},
	        {"OAUTHBEARER without SASL-IR, refused",
	         {IMAP_LOGIN_OAUTHBEARER, "a,b=c", NULL, "tok", NULL},
	         oauthbearer_error,
	         N_ELEMENTS(oauthbearer_error),
	         0,
	         IMAP_STATUS_NO,
	         "nope (server error: {})",
	         "bixhPWE9MkNiPTNEYywBYXV0aD1CZWFyZXIgdG9rAQE="},
	        {"CRAM-MD5 (RFC 2195's example)",
	         {IMAP_LOGIN_CRAM_MD5, "tim", NULL, "tanstaaftanstaaf", NULL},
	         cram_md5_ok,
	         N_ELEMENTS(cram_md5_ok),
	         0,
	         IMAP_STATUS_OK,
	         "logged in",
	         "dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw"},
	        {"PLAIN: an unexpected challenge is cancelled with *",
	         {IMAP_LOGIN_PLAIN, "carol", NULL, "carol-pw", NULL},
	         plain_unexpected_challenge,
	         N_ELEMENTS(plain_unexpected_challenge),
	         0,
	         IMAP_STATUS_BAD,
	         "Authentication aborted (cancelled: a challenge after the PLAIN response)",
	         "AGNhcm9sAGNhcm9sLXB3"},
	        {"a mechanism the server does not offer",
	         {IMAP_LOGIN_XOAUTH2, "u", NULL, "tok", NULL},
	         not_offered,
	         N_ELEMENTS(not_offered),
	         0,
	         IMAP_STATUS_NONE,
	         "server 127.0.0.1:PORT does not offer AUTHENTICATE XOAUTH2 (no AUTH=XOAUTH2 in "
	         "its CAPABILITY); it offers AUTH=PLAIN AUTH=SCRAM-SHA-1 and the LOGIN command",
	         NULL},
	        {"LOGIN under LOGINDISABLED",
	         {IMAP_LOGIN_CMD, "u", NULL, "p", NULL},
	         logindisabled,
	         N_ELEMENTS(logindisabled),
	         0,
	         IMAP_STATUS_NONE,
	         "the server disabled LOGIN (LOGINDISABLED): use TLS; it offers no way to log in "
	         "(LOGINDISABLED and no AUTH=)",
	         NULL},
	};

	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(cases); i++)
		run_login(&cases[i]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_mech_lookup),
	        cmocka_unit_test(test_initial_responses),
	        cmocka_unit_test(test_steps),
	        cmocka_unit_test(test_no_initial_for_server_first),
	        cmocka_unit_test(test_refused_options),
	        cmocka_unit_test(test_logins),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
