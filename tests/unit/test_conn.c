/*
 * Unit tests for conn.c and tls.c. No external servers: a throwaway CA and
 * server certificates are generated in memory (PEM files in a mkdtemp dir for
 * the file-based APIs), and an in-process server built on conn_new_accepted()
 * runs on 127.0.0.1 (port 0) in the same event loop as the client.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/dns.h>
#include <event2/dns_struct.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "imapferry/conn.h"
#include "imapferry/log.h"
#include "imapferry/tls.h"

/* Longest any single wait in these tests may take. */
#define WAIT_MS 4000

/* ---- throwaway PKI ---- */

static char pki_dir[64];
static char ca_pem[128], ca_key[128], srv_pem[128], srv_key[128];

static void add_ext(X509 *x, X509V3_CTX *v3, int nid, const char *value)
{
	X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, v3, nid, value);

	assert_non_null(ext);
	assert_int_equal(X509_add_ext(x, ext, -1), 1);
	X509_EXTENSION_free(ext);
}

/* A certificate for key, signed by issuer (NULL: self-signed). */
static X509 *make_cert(EVP_PKEY *key, const char *cn, X509 *issuer, EVP_PKEY *issuer_key,
                       const char *san)
{
	static long serial = 1;
	X509 *x = X509_new();
	X509_NAME *name;
	X509V3_CTX v3;

	assert_non_null(x);
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
	X509_gmtime_adj(X509_getm_notBefore(x), -3600);
	X509_gmtime_adj(X509_getm_notAfter(x), 86400);
	X509_set_pubkey(x, key);
	name = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
	X509_set_issuer_name(x, issuer != NULL ? X509_get_subject_name(issuer) : name);
	memset(&v3, 0, sizeof(v3));
	X509V3_set_ctx(&v3, issuer != NULL ? issuer : x, x, NULL, NULL, 0);
	add_ext(x, &v3, NID_subject_key_identifier, "hash");
	if (issuer == NULL) {
		add_ext(x, &v3, NID_basic_constraints, "critical,CA:TRUE");
		add_ext(x, &v3, NID_key_usage, "critical,keyCertSign,cRLSign,digitalSignature");
	} else {
		add_ext(x, &v3, NID_basic_constraints, "CA:FALSE");
		add_ext(x, &v3, NID_key_usage, "critical,digitalSignature");
		add_ext(x, &v3, NID_ext_key_usage, "serverAuth");
		add_ext(x, &v3, NID_authority_key_identifier, "keyid:always");
		add_ext(x, &v3, NID_subject_alt_name, san);
	}
	assert_true(X509_sign(x, issuer_key != NULL ? issuer_key : key, EVP_sha256()) > 0);
	return x;
}

static void write_pem(const char *path, X509 *cert, EVP_PKEY *key)
{
	FILE *fp = fopen(path, "w");

	assert_non_null(fp);
	if (cert != NULL)
		assert_int_equal(PEM_write_X509(fp, cert), 1);
	if (key != NULL)
		assert_int_equal(PEM_write_PrivateKey(fp, key, NULL, NULL, 0, NULL, NULL), 1);
	assert_int_equal(fclose(fp), 0);
}

static int pki_setup(void **state)
{
	EVP_PKEY *cakey, *key;
	X509 *ca, *cert;

	(void)state;
	strcpy(pki_dir, "/tmp/imapferry-test-conn.XXXXXX");
	if (mkdtemp(pki_dir) == NULL)
		return -1;
	snprintf(ca_pem, sizeof(ca_pem), "%s/ca.pem", pki_dir);
	snprintf(ca_key, sizeof(ca_key), "%s/ca.key", pki_dir);
	snprintf(srv_pem, sizeof(srv_pem), "%s/server.pem", pki_dir);
	snprintf(srv_key, sizeof(srv_key), "%s/server.key", pki_dir);
	cakey = EVP_EC_gen("P-256");
	key = EVP_EC_gen("P-256");
	if (cakey == NULL || key == NULL)
		return -1;
	ca = make_cert(cakey, "imapferry test CA", NULL, NULL, NULL);
	cert = make_cert(key, "localhost", ca, cakey, "DNS:localhost,IP:127.0.0.1");
	write_pem(ca_pem, ca, NULL);
	write_pem(ca_key, NULL, cakey);
	write_pem(srv_pem, cert, NULL);
	write_pem(srv_key, NULL, key);
	X509_free(ca);
	X509_free(cert);
	EVP_PKEY_free(cakey);
	EVP_PKEY_free(key);
	return 0;
}

static int pki_teardown(void **state)
{
	(void)state;
	unlink(ca_pem);
	unlink(ca_key);
	unlink(srv_pem);
	unlink(srv_key);
	rmdir(pki_dir);
	return 0;
}

static struct tls_client_ctx *client_ctx(int trust_ca, int no_verify, const char *server_name)
{
	struct tls_client_opts o = {
	        .ca_file = trust_ca ? ca_pem : NULL,
	        .no_verify_peer = no_verify,
	        .server_name = server_name,
	};
	const char *error = NULL;
	struct tls_client_ctx *ctx = tls_client_ctx_new(&o, &error);

	if (ctx == NULL)
		fail_msg("tls_client_ctx_new: %s", error);
	return ctx;
}

static struct tls_server_ctx *server_ctx(int self_signed)
{
	const char *error = NULL;
	struct tls_server_ctx *ctx = self_signed ? tls_server_ctx_new(ca_pem, ca_key, &error)
	                                         : tls_server_ctx_new(srv_pem, srv_key, &error);

	if (ctx == NULL)
		fail_msg("tls_server_ctx_new: %s", error);
	return ctx;
}

/* ---- the in-process server ---- */

enum srv_mode {
	SRV_ECHO,     /* echo everything back */
	SRV_STARTTLS, /* echo lines; "b STARTTLS" upgrades */
	SRV_SILENT,   /* never answer */
	SRV_SEND,     /* send send_total pattern bytes */
};

struct harness {
	struct event_base *base;
	struct event *tick;
	struct evconnlistener *lis;
	uint16_t port;

	enum srv_mode mode;
	struct tls_server_ctx *implicit; /* accept with TLS */
	struct tls_server_ctx *starttls;
	const char *greeting;
	const char *inject; /* sent behind "b OK begin TLS" */
	size_t send_total;
	int backpressure;

	struct conn *srv;
	int accepts;
	int srv_ev[CONN_EV_COUNT];
	char srv_err[512];
	uint64_t srv_in;
	size_t srv_discarded;
	int srv_tls;
};

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Runs the loop until cond holds; the tick timer keeps EVLOOP_ONCE short. */
#define RUN_UNTIL(h, cond)                                                                         \
	do {                                                                                       \
		uint64_t start_ = now_ms();                                                        \
		while (!(cond)) {                                                                  \
			if (now_ms() - start_ > WAIT_MS)                                           \
				fail_msg("%s:%d: timed out waiting for %s", __FILE__, __LINE__,    \
				         #cond);                                                   \
			event_base_loop((h)->base, EVLOOP_ONCE);                                   \
		}                                                                                  \
	} while (0)

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
}

static void srv_write_pattern(struct conn *c, size_t total)
{
	char chunk[4096];
	size_t off, i, n;

	for (off = 0; off < total; off += n) {
		n = total - off < sizeof(chunk) ? total - off : sizeof(chunk);
		for (i = 0; i < n; i++)
			chunk[i] = (char)('a' + (off + i) % 26);
		assert_int_equal(conn_write(c, chunk, n), 0);
	}
}

static void srv_on_event(struct conn *c, enum conn_event ev, const char *error, void *aux)
{
	struct harness *h = aux;

	h->srv_ev[ev]++;
	switch (ev) {
	case CONN_EV_CONNECTED:
		h->srv_tls = conn_is_tls(c);
		if (h->greeting != NULL)
			conn_write(c, h->greeting, strlen(h->greeting));
		if (h->mode == SRV_SEND)
			srv_write_pattern(c, h->send_total);
		break;
	case CONN_EV_TLS_UPGRADED:
		h->srv_tls = conn_is_tls(c);
		h->srv_discarded = conn_starttls_discarded(c);
		break;
	default:
		/* Terminal: free the connection from inside its callback. */
		snprintf(h->srv_err, sizeof(h->srv_err), "%s", error);
		h->srv_in = conn_bytes_in(c);
		h->srv_discarded = conn_starttls_discarded(c);
		conn_free(&h->srv);
		assert_null(h->srv);
		break;
	}
}

static void srv_on_read(struct conn *c, struct evbuffer *input, void *aux)
{
	struct harness *h = aux;
	const char *error = NULL;
	size_t n;
	char *line;

	switch (h->mode) {
	case SRV_ECHO:
		assert_int_equal(conn_write_buffer(c, input), 0);
		if (h->backpressure && conn_output_pending(c) > 256 * 1024)
			conn_pause_read(c);
		break;
	case SRV_STARTTLS:
		while ((line = evbuffer_readln(input, &n, EVBUFFER_EOL_CRLF_STRICT)) != NULL) {
			if (strcmp(line, "b STARTTLS") == 0) {
				free(line);
				conn_write(c, "b OK begin TLS\r\n", 16);
				if (h->inject != NULL)
					conn_write(c, h->inject, strlen(h->inject));
				if (conn_starttls_server(c, h->starttls, &error) < 0)
					fail_msg("conn_starttls_server: %s", error);
				/* input is the plaintext buffer: nothing more in it is
				 * for us (and it was emptied). */
				return;
			}
			conn_write(c, line, n);
			conn_write(c, "\r\n", 2);
			free(line);
		}
		break;
	case SRV_SILENT:
	case SRV_SEND:
		evbuffer_drain(input, evbuffer_get_length(input));
		break;
	}
}

static void srv_on_drained(struct conn *c, void *aux)
{
	(void)aux;
	conn_resume_read(c);
}

static void accept_cb(struct evconnlistener *lis, evutil_socket_t fd, struct sockaddr *sa,
                      int socklen, void *arg)
{
	struct harness *h = arg;
	struct conn_opts o;
	const char *error = NULL;

	(void)lis;
	(void)sa;
	(void)socklen;
	h->accepts++;
	if (h->srv != NULL) {
		close(fd);
		return;
	}
	memset(&o, 0, sizeof(o));
	o.connect_timeout_ms = 3000;
	o.on_read = srv_on_read;
	o.on_event = srv_on_event;
	o.on_drained = srv_on_drained;
	o.aux = h;
	if (h->backpressure) {
		o.read_high = 64 * 1024;
		o.write_low = 64 * 1024;
	}
	h->srv = conn_new_accepted(h->base, fd, h->implicit, &o, &error);
	if (h->srv == NULL)
		fail_msg("conn_new_accepted: %s", error);
}

static void harness_init(struct harness *h, enum srv_mode mode)
{
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);
	struct timeval tv = {0, 10000};

	memset(h, 0, sizeof(*h));
	h->mode = mode;
	h->base = event_base_new();
	assert_non_null(h->base);
	h->tick = event_new(h->base, -1, EV_PERSIST, tick_cb, NULL);
	event_add(h->tick, &tv);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	h->lis = evconnlistener_new_bind(h->base, accept_cb, h,
	                                 LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE |
	                                         LEV_OPT_CLOSE_ON_EXEC,
	                                 16, (struct sockaddr *)&sin, sizeof(sin));
	assert_non_null(h->lis);
	assert_int_equal(getsockname(evconnlistener_get_fd(h->lis), (struct sockaddr *)&sin, &len),
	                 0);
	h->port = ntohs(sin.sin_port);
}

static void harness_free(struct harness *h)
{
	conn_free(&h->srv);
	evconnlistener_free(h->lis);
	event_free(h->tick);
	tls_server_ctx_free(&h->implicit);
	tls_server_ctx_free(&h->starttls);
	event_base_free(h->base);
}

/* ---- the client ---- */

struct client {
	struct harness *h;
	struct conn *conn;
	int ev[CONN_EV_COUNT];
	char err[512];
	struct evbuffer *got;
	unsigned free_on_event; /* bit per event: conn_free() from inside on_event */
	int free_on_read;

	/* STARTTLS dialogue */
	int starttls;
	const char *client_inject; /* sent behind "b STARTTLS" */
	int step, bad_lines;

	/* pause inside the first on_read, without consuming */
	int pause_first_read, reads;

	/* bulk transfer; left: input not consumed at EOF */
	size_t to_send, sent, received, consume_max, left;
	uint64_t rng, h_sent, h_recv;
	size_t max_input; /* most input ever offered at once */
};

static uint64_t fnv1a(uint64_t hash, const void *data, size_t len)
{
	const unsigned char *p = data;
	size_t i;

	for (i = 0; i < len; i++) {
		hash ^= p[i];
		hash *= 0x100000001b3ull;
	}
	return hash;
}

/* Queues pseudo-random bytes while the output holds less than 512 KiB. */
static void cli_fill(struct client *cl)
{
	unsigned char chunk[65536];
	size_t n, i;

	while (cl->sent < cl->to_send && conn_output_pending(cl->conn) < 512 * 1024) {
		n = cl->to_send - cl->sent < sizeof(chunk) ? cl->to_send - cl->sent : sizeof(chunk);
		for (i = 0; i < n; i++) {
			cl->rng ^= cl->rng << 13;
			cl->rng ^= cl->rng >> 7;
			cl->rng ^= cl->rng << 17;
			chunk[i] = (unsigned char)(cl->rng >> 24);
		}
		cl->h_sent = fnv1a(cl->h_sent, chunk, n);
		assert_int_equal(conn_write(cl->conn, chunk, n), 0);
		cl->sent += n;
	}
}

static void cli_on_event(struct conn *c, enum conn_event ev, const char *error, void *aux)
{
	struct client *cl = aux;
	const char *e = NULL;

	assert_ptr_equal(c, cl->conn);
	cl->ev[ev]++;
	if (error != NULL)
		snprintf(cl->err, sizeof(cl->err), "%s", error);
	if (ev == CONN_EV_EOF)
		cl->left = evbuffer_get_length(conn_input(c));
	if (ev == CONN_EV_CONNECTED && cl->to_send > 0)
		cli_fill(cl);
	if (ev == CONN_EV_TLS_UPGRADED && cl->starttls) {
		cl->step = 3;
		assert_int_equal(conn_write(c, "c NOOP\r\n", 8), 0);
	}
	if (ev != CONN_EV_CONNECTED && ev != CONN_EV_TLS_UPGRADED) {
		/* Nothing may be written after a terminal event. */
		assert_int_equal(conn_write(c, "x", 1), -1);
		assert_int_equal(conn_starttls(c, &e), -1);
	}
	if (cl->free_on_event & (1u << ev)) {
		conn_free(&cl->conn);
		assert_null(cl->conn);
	}
}

static void cli_starttls_read(struct client *cl, struct evbuffer *input)
{
	const char *error = NULL;
	size_t n;
	char *line;

	while ((line = evbuffer_readln(input, &n, EVBUFFER_EOL_CRLF_STRICT)) != NULL) {
		if (cl->step == 0 && strcmp(line, "* OK ready") == 0) {
			cl->step = 1;
			conn_write(cl->conn, "a CAPABILITY\r\n", 14);
		} else if (cl->step == 1 && strcmp(line, "a CAPABILITY") == 0) {
			struct evbuffer *out = conn_output(cl->conn);

			cl->step = 2;
			evbuffer_add_printf(out, "b STARTTLS\r\n%s",
			                    cl->client_inject != NULL ? cl->client_inject : "");
		} else if (cl->step == 2 && strcmp(line, "b OK begin TLS") == 0) {
			free(line);
			assert_false(conn_is_tls(cl->conn));
			if (conn_starttls(cl->conn, &error) < 0)
				fail_msg("conn_starttls: %s", error);
			/* Whatever followed the OK in this buffer is gone. */
			assert_int_equal(evbuffer_get_length(input), 0);
			return;
		} else if (cl->step == 3 && strcmp(line, "c NOOP") == 0) {
			cl->step = 4;
		} else {
			cl->bad_lines++;
		}
		free(line);
	}
}

static void cli_on_read(struct conn *c, struct evbuffer *input, void *aux)
{
	struct client *cl = aux;
	struct evbuffer_iovec vec[1];
	size_t n;
	int i, nvec;

	assert_ptr_equal(c, cl->conn);
	assert_ptr_equal(input, conn_input(c));
	cl->reads++;
	if (evbuffer_get_length(input) > cl->max_input)
		cl->max_input = evbuffer_get_length(input);
	if (cl->pause_first_read && cl->reads == 1) {
		conn_pause_read(c);
		return;
	}
	if (cl->starttls) {
		cli_starttls_read(cl, input);
	} else if (cl->to_send > 0 || cl->consume_max > 0) {
		/* Hash in place and drain, a little at a time if asked. */
		n = evbuffer_get_length(input);
		if (cl->consume_max > 0 && n > cl->consume_max)
			n = cl->consume_max;
		while (n > 0) {
			/* the first chain only: draining moves the rest */
			nvec = evbuffer_peek(input, (ev_ssize_t)n, NULL, vec, 1);
			for (i = 0; i < nvec && i < 1 && n > 0; i++) {
				size_t k = vec[i].iov_len < n ? vec[i].iov_len : n;

				cl->h_recv = fnv1a(cl->h_recv, vec[i].iov_base, k);
				evbuffer_drain(input, k);
				cl->received += k;
				n -= k;
			}
		}
	} else {
		evbuffer_add_buffer(cl->got, input);
	}
	if (cl->free_on_read) {
		conn_free(&cl->conn);
		assert_null(cl->conn);
	}
}

static void cli_on_drained(struct conn *c, void *aux)
{
	struct client *cl = aux;

	assert_ptr_equal(c, cl->conn);
	cli_fill(cl);
}

static void client_init(struct client *cl, struct harness *h)
{
	memset(cl, 0, sizeof(*cl));
	cl->h = h;
	cl->got = evbuffer_new();
	cl->rng = 0x9e3779b97f4a7c15ull;
	cl->h_sent = cl->h_recv = 0xcbf29ce484222325ull;
}

static void client_free(struct client *cl)
{
	conn_free(&cl->conn);
	evbuffer_free(cl->got);
}

/* Creates and starts cl->conn to host:port. */
static void client_connect(struct client *cl, struct evdns_base *dns, const char *host,
                           uint16_t port, enum conn_mode mode, struct tls_client_ctx *tls,
                           struct conn_opts *extra)
{
	struct conn_opts o;
	const char *error = NULL;

	conn_free(&cl->conn);
	memset(cl->ev, 0, sizeof(cl->ev));
	if (extra != NULL)
		o = *extra;
	else
		conn_opts_init(&o);
	o.host = host;
	o.port = port;
	o.mode = mode;
	o.tls = tls;
	o.on_read = cli_on_read;
	o.on_event = cli_on_event;
	o.on_drained = cli_on_drained;
	o.aux = cl;
	cl->conn = conn_new(cl->h->base, dns, &o, &error);
	if (cl->conn == NULL)
		fail_msg("conn_new: %s", error);
	if (conn_connect(cl->conn, &error) < 0)
		fail_msg("conn_connect: %s", error);
	/* Never a callback from inside a conn_* call. */
	assert_int_equal(cl->ev[CONN_EV_CONNECTED] + cl->ev[CONN_EV_ERROR], 0);
	assert_int_equal(conn_connect(cl->conn, &error), -1);
}

static int total_events(const int *ev)
{
	int i, n = 0;

	for (i = 0; i < CONN_EV_COUNT; i++)
		n += ev[i];
	return n;
}

/*
 * Echo of greeting + one line through whatever mode; then a clean close.
 * early: the line is queued before CONNECTED (sent after it, for TLS after
 * the handshake).
 */
static void echo_roundtrip(struct harness *h, struct client *cl, int early)
{
	static const char want[] = "* OK ready\r\na NOOP\r\n";

	if (early) {
		assert_int_equal(total_events(cl->ev), 0);
		assert_int_equal(conn_write(cl->conn, "a NOOP\r\n", 8), 0);
		assert_int_equal(conn_output_pending(cl->conn), 8);
	}
	RUN_UNTIL(h, cl->ev[CONN_EV_CONNECTED] == 1 || cl->ev[CONN_EV_ERROR] > 0);
	if (cl->ev[CONN_EV_ERROR] > 0)
		fail_msg("unexpected error: %s", cl->err);
	if (!early)
		assert_int_equal(conn_write(cl->conn, "a NOOP\r\n", 8), 0);
	RUN_UNTIL(h, evbuffer_get_length(cl->got) >= sizeof(want) - 1);
	assert_int_equal(evbuffer_get_length(cl->got), sizeof(want) - 1);
	assert_memory_equal(evbuffer_pullup(cl->got, -1), want, sizeof(want) - 1);
	assert_int_equal(conn_bytes_in(cl->conn), sizeof(want) - 1);
	assert_int_equal(conn_bytes_out(cl->conn), 8);
	assert_true(conn_is_established(cl->conn));
	assert_int_equal(total_events(cl->ev), 1);

	/* Closing the client is an EOF for the server, which frees its
	 * connection from inside the callback. */
	conn_free(&cl->conn);
	RUN_UNTIL(h, h->srv_ev[CONN_EV_EOF] == 1);
	assert_null(h->srv);
	assert_int_equal(strncmp(h->srv_err, "connection closed by 127.0.0.1:", 31), 0);
	assert_int_equal(h->srv_in, 8);
	evbuffer_drain(cl->got, evbuffer_get_length(cl->got));
	memset(cl->ev, 0, sizeof(cl->ev));
	memset(h->srv_ev, 0, sizeof(h->srv_ev));
}

/* ---- tests ---- */

static void test_plain_echo(void **state)
{
	struct harness h;
	struct client cl;
	struct conn_opts o;
	const char *error = NULL;
	char want[64], *logbuf = NULL;
	size_t loglen = 0;
	FILE *logfp;

	(void)state;
	harness_init(&h, SRV_ECHO);
	h.greeting = "* OK ready\r\n";
	client_init(&cl, &h);
	client_connect(&cl, NULL, "127.0.0.1", h.port, CONN_PLAIN, NULL, NULL);
	snprintf(want, sizeof(want), "127.0.0.1:%u", h.port);
	assert_string_equal(conn_peer_name(cl.conn), want);
	assert_null(conn_input(cl.conn));
	assert_false(conn_is_established(cl.conn));
	echo_roundtrip(&h, &cl, 1);
	assert_false(h.srv_tls);

	/* A name resolved without evdns (blocking getaddrinfo), with TCP
	 * keepalive; the socket options must all apply (no warning logged),
	 * and the debug log traces the states. */
	logfp = open_memstream(&logbuf, &loglen);
	assert_non_null(logfp);
	log_set_file(logfp);
	assert_int_equal(log_set_debug("net", &error), 0);
	conn_opts_init(&o);
	o.keepalive = 1;
	o.keepalive_idle_s = 30;
	client_connect(&cl, NULL, "localhost", h.port, CONN_PLAIN, NULL, &o);
	snprintf(want, sizeof(want), "localhost:%u", h.port);
	assert_string_equal(conn_peer_name(cl.conn), want);
	echo_roundtrip(&h, &cl, 0);
	log_set_file(NULL);
	log_set_level(LOG_LVL_NOTICE);
	fclose(logfp);
	assert_null(strstr(logbuf, "cannot"));
	assert_non_null(strstr(logbuf, "connecting -> open"));
	free(logbuf);
	client_free(&cl);
	harness_free(&h);
}

/* Runs until cl's connection is up; an error fails the test, naming label. */
static void tls_wait_up(struct harness *h, struct client *cl, const char *label)
{
	RUN_UNTIL(h, cl->ev[CONN_EV_CONNECTED] + cl->ev[CONN_EV_ERROR] > 0);
	if (cl->ev[CONN_EV_ERROR] > 0)
		fail_msg("%s: %s", label, cl->err);
}

static void test_tls_trusted(void **state)
{
	static const char *const hosts[] = {"127.0.0.1", "localhost"};
	struct tls_client_ctx *ctx;
	struct harness h;
	struct client cl;
	size_t i;

	(void)state;
	harness_init(&h, SRV_ECHO);
	h.greeting = "* OK ready\r\n";
	h.implicit = server_ctx(0);
	client_init(&cl, &h);
	ctx = client_ctx(1, 0, NULL);
	for (i = 0; i < 2; i++) {
		client_connect(&cl, NULL, hosts[i], h.port, CONN_TLS, ctx, NULL);
		/* The connection holds its own reference. */
		if (i == 1)
			tls_client_ctx_free(&ctx);
		tls_wait_up(&h, &cl, hosts[i]);
		assert_true(conn_is_tls(cl.conn));
		assert_non_null(conn_tls_version(cl.conn));
		assert_non_null(conn_tls_cipher(cl.conn));
		print_message("  %s: %s %s\n", hosts[i], conn_tls_version(cl.conn),
		              conn_tls_cipher(cl.conn));
		/* a new peer ("localhost" after "127.0.0.1"): nothing to resume */
		assert_false(conn_tls_resumed(cl.conn));
		echo_roundtrip(&h, &cl, 0);
		assert_true(h.srv_tls);
	}
	client_free(&cl);
	harness_free(&h);
}

/* The second connection to the same host:port resumes the first one's
 * session (a full handshake's certificate checks are skipped: the session
 * was verified for this host under this context); another context has
 * nothing to offer. */
static void test_tls_resumption(void **state)
{
	struct tls_client_ctx *ctx, *other;
	struct harness h;
	struct client cl;

	(void)state;
	harness_init(&h, SRV_ECHO);
	h.greeting = "* OK ready\r\n";
	h.implicit = server_ctx(0);
	client_init(&cl, &h);
	ctx = client_ctx(1, 0, NULL);
	other = client_ctx(1, 0, NULL);
	for (int i = 0; i < 3; i++) {
		char label[32];

		snprintf(label, sizeof(label), "connection %d", i);
		client_connect(&cl, NULL, "127.0.0.1", h.port, CONN_TLS, i < 2 ? ctx : other, NULL);
		tls_wait_up(&h, &cl, label);
		print_message("  connection %d: %s\n", i,
		              conn_tls_resumed(cl.conn) ? "resumed" : "full handshake");
		if (i == 1)
			assert_true(conn_tls_resumed(cl.conn));
		else
			assert_false(conn_tls_resumed(cl.conn));
		/* the echo also brings the TLS 1.3 session ticket */
		echo_roundtrip(&h, &cl, 0);
	}
	tls_client_ctx_free(&ctx);
	tls_client_ctx_free(&other);
	client_free(&cl);
	harness_free(&h);
}

/* Connects with TLS and expects the handshake to fail with want_client. */
static void expect_tls_failure(struct harness *h, struct tls_client_ctx *ctx, const char *host,
                               const char *want_client)
{
	struct client cl;
	char want[512];

	client_init(&cl, h);
	client_connect(&cl, NULL, host, h->port, CONN_TLS, ctx, NULL);
	RUN_UNTIL(h, cl.ev[CONN_EV_ERROR] == 1 && h->srv == NULL && h->accepts > 0);
	snprintf(want, sizeof(want), "TLS handshake with %s:%u failed: %s", host, h->port,
	         want_client);
	print_message("  client: %s\n  server: %s\n", cl.err, h->srv_err);
	assert_string_equal(cl.err, want);
	assert_int_equal(total_events(cl.ev), 1);
	assert_int_equal(cl.ev[CONN_EV_CONNECTED], 0);
	assert_false(conn_is_established(cl.conn));
	/* The server saw the client's alert. */
	assert_int_equal(h->srv_ev[CONN_EV_ERROR], 1);
	assert_int_equal(strncmp(h->srv_err, "TLS handshake with 127.0.0.1:", 29), 0);
	client_free(&cl);
	memset(h->srv_ev, 0, sizeof(h->srv_ev));
	h->accepts = 0;
}

static void test_tls_verify_failures(void **state)
{
	struct tls_client_ctx *system_trust, *mismatch;
	struct harness h;

	(void)state;
	harness_init(&h, SRV_ECHO);
	system_trust = client_ctx(0, 0, NULL);
	mismatch = client_ctx(1, 0, "mail.example.com");

	/* Signed by our CA, which the system does not trust. */
	h.implicit = server_ctx(0);
	expect_tls_failure(&h, system_trust, "127.0.0.1",
	                   "certificate verify failed: unable to get local issuer certificate");
	/* The host name must match, also when the certificate is trusted. */
	expect_tls_failure(&h, mismatch, "127.0.0.1",
	                   "certificate verify failed: hostname mismatch "
	                   "(certificate not valid for mail.example.com)");
	/* A self-signed server certificate. */
	tls_server_ctx_free(&h.implicit);
	h.implicit = server_ctx(1);
	expect_tls_failure(&h, system_trust, "127.0.0.1",
	                   "certificate verify failed: self-signed certificate");

	tls_client_ctx_free(&system_trust);
	tls_client_ctx_free(&mismatch);
	harness_free(&h);
}

static void test_tls_no_verify(void **state)
{
	struct tls_client_ctx *ctx;
	struct harness h;
	struct client cl;
	struct tls_client_opts o = {
	        .ca_file = NULL, .no_verify_host = 1, .server_name = "mail.example.com"};
	const char *error = NULL;

	(void)state;
	harness_init(&h, SRV_ECHO);
	h.greeting = "* OK ready\r\n";
	h.implicit = server_ctx(1);
	client_init(&cl, &h);
	/* Verification off: a self-signed certificate is accepted. */
	ctx = client_ctx(0, 1, NULL);
	client_connect(&cl, NULL, "127.0.0.1", h.port, CONN_TLS, ctx, NULL);
	echo_roundtrip(&h, &cl, 1);
	tls_client_ctx_free(&ctx);

	/* Chain verified, host name not: a name mismatch is accepted. */
	tls_server_ctx_free(&h.implicit);
	h.implicit = server_ctx(0);
	o.ca_file = ca_pem;
	ctx = tls_client_ctx_new(&o, &error);
	assert_non_null(ctx);
	client_connect(&cl, NULL, "127.0.0.1", h.port, CONN_TLS, ctx, NULL);
	echo_roundtrip(&h, &cl, 0);
	tls_client_ctx_free(&ctx);
	client_free(&cl);
	harness_free(&h);
}

static void starttls_run(const char *inject, const char *client_inject)
{
	struct tls_client_ctx *ctx;
	struct harness h;
	struct client cl;

	harness_init(&h, SRV_STARTTLS);
	h.greeting = "* OK ready\r\n";
	h.starttls = server_ctx(0);
	h.inject = inject;
	client_init(&cl, &h);
	cl.starttls = 1;
	cl.client_inject = client_inject;
	ctx = client_ctx(1, 0, NULL);
	client_connect(&cl, NULL, "127.0.0.1", h.port, CONN_PLAIN, ctx, NULL);
	tls_client_ctx_free(&ctx);
	RUN_UNTIL(&h, cl.step == 4 || cl.ev[CONN_EV_ERROR] + cl.ev[CONN_EV_TIMEOUT] > 0);
	if (cl.step != 4)
		fail_msg("STARTTLS failed: %s", cl.err);
	assert_int_equal(cl.ev[CONN_EV_CONNECTED], 1);
	assert_int_equal(cl.ev[CONN_EV_TLS_UPGRADED], 1);
	assert_int_equal(h.srv_ev[CONN_EV_TLS_UPGRADED], 1);
	assert_true(conn_is_tls(cl.conn));
	assert_true(h.srv_tls);
	/* The injected line was thrown away, never parsed. */
	assert_int_equal(cl.bad_lines, 0);
	assert_int_equal(conn_starttls_discarded(cl.conn), inject != NULL ? strlen(inject) : 0);
	assert_int_equal(h.srv_discarded, client_inject != NULL ? strlen(client_inject) : 0);
	/* A second upgrade is refused. */
	{
		const char *error = NULL;

		assert_int_equal(conn_starttls(cl.conn, &error), -1);
		assert_non_null(error);
	}
	conn_free(&cl.conn);
	RUN_UNTIL(&h, h.srv == NULL);
	assert_int_equal(h.srv_ev[CONN_EV_EOF], 1);
	client_free(&cl);
	harness_free(&h);
}

static void test_starttls(void **state)
{
	(void)state;
	starttls_run(NULL, NULL);
}

static void test_starttls_injection(void **state)
{
	(void)state;
	/* A man in the middle appends a response to the server's OK... */
	starttls_run("* OK [ALERT] injected\r\n", NULL);
	/* ...or a command to the client's STARTTLS. */
	starttls_run(NULL, "x LOGIN injected\r\n");
}

static void test_connect_refused(void **state)
{
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);
	struct harness h;
	struct client cl;
	char want[128];
	uint16_t port;
	int fd;

	(void)state;
	fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
	port = ntohs(sin.sin_port);
	close(fd);

	harness_init(&h, SRV_ECHO);
	client_init(&cl, &h);
	/* Freed from inside the ERROR callback. */
	cl.free_on_event = 1u << CONN_EV_ERROR;
	client_connect(&cl, NULL, "127.0.0.1", port, CONN_PLAIN, NULL, NULL);
	RUN_UNTIL(&h, cl.ev[CONN_EV_ERROR] == 1);
	assert_null(cl.conn);
	snprintf(want, sizeof(want), "connect to 127.0.0.1:%u failed: Connection refused", port);
	print_message("  %s\n", cl.err);
	assert_string_equal(cl.err, want);
	assert_int_equal(total_events(cl.ev), 1);

	/* Every address of a name is tried; the message lists them. */
	cl.free_on_event = 0;
	client_connect(&cl, NULL, "localhost", port, CONN_PLAIN, NULL, NULL);
	RUN_UNTIL(&h, cl.ev[CONN_EV_ERROR] == 1);
	print_message("  %s\n", cl.err);
	snprintf(want, sizeof(want), "connect to localhost:%u ", port);
	assert_int_equal(strncmp(cl.err, want, strlen(want)), 0);
	assert_non_null(strstr(cl.err, "127.0.0.1"));
	assert_non_null(strstr(cl.err, "Connection refused"));
	client_free(&cl);
	harness_free(&h);
}

static void test_read_timeout(void **state)
{
	struct harness h;
	struct client cl;
	struct conn_opts o;
	char want[128];
	uint64_t start;

	(void)state;
	harness_init(&h, SRV_SILENT);
	client_init(&cl, &h);
	conn_opts_init(&o);
	o.read_timeout_ms = 200;
	client_connect(&cl, NULL, "127.0.0.1", h.port, CONN_PLAIN, NULL, &o);
	RUN_UNTIL(&h, cl.ev[CONN_EV_CONNECTED] == 1);
	start = now_ms();
	RUN_UNTIL(&h, cl.ev[CONN_EV_TIMEOUT] == 1);
	assert_true(now_ms() - start >= 150);
	snprintf(want, sizeof(want), "read from 127.0.0.1:%u timed out after 0.2 s", h.port);
	print_message("  %s\n", cl.err);
	assert_string_equal(cl.err, want);
	assert_int_equal(total_events(cl.ev), 2);
	client_free(&cl);
	RUN_UNTIL(&h, h.srv == NULL);
	harness_free(&h);
}

static void test_handshake_timeout(void **state)
{
	struct tls_client_ctx *ctx;
	struct harness h;
	struct client cl;
	struct conn_opts o;
	char want[128];

	(void)state;
	/* A plain server that never answers the ClientHello. */
	harness_init(&h, SRV_SILENT);
	client_init(&cl, &h);
	conn_opts_init(&o);
	o.connect_timeout_ms = 300;
	ctx = client_ctx(1, 0, NULL);
	client_connect(&cl, NULL, "127.0.0.1", h.port, CONN_TLS, ctx, &o);
	tls_client_ctx_free(&ctx);
	RUN_UNTIL(&h, cl.ev[CONN_EV_TIMEOUT] == 1);
	snprintf(want, sizeof(want), "TLS handshake with 127.0.0.1:%u timed out after 0.3 s",
	         h.port);
	print_message("  %s\n", cl.err);
	assert_string_equal(cl.err, want);
	assert_int_equal(total_events(cl.ev), 1);
	client_free(&cl);
	RUN_UNTIL(&h, h.srv == NULL);
	harness_free(&h);
}

/* An EOF that arrives while the caller paused reading waits for the resume
 * and comes after the buffered data was offered again. */
static void test_pause_holds_eof(void **state)
{
	struct tls_client_ctx *ctx;
	struct harness h;
	struct client cl;
	uint64_t start;
	int tls;

	(void)state;
	ctx = client_ctx(1, 0, NULL);
	for (tls = 0; tls < 2; tls++) {
		harness_init(&h, SRV_SEND);
		h.send_total = 10;
		h.implicit = tls ? server_ctx(0) : NULL;
		client_init(&cl, &h);
		cl.pause_first_read = 1;
		cl.consume_max = 100;
		client_connect(&cl, NULL, "127.0.0.1", h.port, tls ? CONN_TLS : CONN_PLAIN, ctx,
		               NULL);
		/* Data and close (with close_notify) leave together. */
		RUN_UNTIL(&h, h.srv != NULL && h.srv_ev[CONN_EV_CONNECTED] == 1 &&
		                      conn_output_pending(h.srv) == 0);
		conn_free(&h.srv);
		RUN_UNTIL(&h, cl.reads == 1);
		start = now_ms();
		RUN_UNTIL(&h, now_ms() - start > 100);
		assert_int_equal(cl.ev[CONN_EV_EOF], 0);
		assert_int_equal(cl.reads, 1);
		assert_int_equal(evbuffer_get_length(conn_input(cl.conn)), 10);
		conn_resume_read(cl.conn);
		/* Nothing from inside the call. */
		assert_int_equal(cl.reads, 1);
		RUN_UNTIL(&h, cl.ev[CONN_EV_EOF] + cl.ev[CONN_EV_ERROR] > 0);
		assert_int_equal(cl.ev[CONN_EV_EOF], 1);
		assert_int_equal(cl.reads, 2);
		assert_int_equal(cl.received, 10);
		client_free(&cl);
		harness_free(&h);
	}
	tls_client_ctx_free(&ctx);
}

static void test_connect_timeout(void **state)
{
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);
	struct harness h;
	struct client cl;
	struct conn_opts o;
	char want[128];
	int lfd, filler;

	(void)state;
	/* A listener with a full accept queue: Linux drops further SYNs, so
	 * the next connect neither succeeds nor fails. */
	lfd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(lfd >= 0);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(lfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(listen(lfd, 0), 0);
	assert_int_equal(getsockname(lfd, (struct sockaddr *)&sin, &len), 0);
	filler = socket(AF_INET, SOCK_STREAM, 0);
	assert_int_equal(connect(filler, (struct sockaddr *)&sin, sizeof(sin)), 0);

	harness_init(&h, SRV_ECHO);
	client_init(&cl, &h);
	conn_opts_init(&o);
	o.connect_timeout_ms = 300;
	client_connect(&cl, NULL, "127.0.0.1", ntohs(sin.sin_port), CONN_PLAIN, NULL, &o);
	RUN_UNTIL(&h, total_events(cl.ev) > 0);
	snprintf(want, sizeof(want), "connect to 127.0.0.1:%u timed out after 0.3 s",
	         ntohs(sin.sin_port));
	print_message("  %s\n", cl.err);
	assert_int_equal(cl.ev[CONN_EV_TIMEOUT], 1);
	assert_string_equal(cl.err, want);
	client_free(&cl);
	harness_free(&h);
	close(filler);
	close(lfd);
}

static void test_free_in_callbacks(void **state)
{
	struct tls_client_ctx *ctx;
	struct harness h;
	struct client cl;
	int i;

	(void)state;
	harness_init(&h, SRV_SEND);
	h.send_total = 100000;
	h.implicit = server_ctx(0);
	ctx = client_ctx(1, 0, NULL);
	client_init(&cl, &h);
	/* From inside CONNECTED, then from inside on_read in the middle of
	 * a TLS stream; the server frees its side from inside ERROR/EOF. */
	for (i = 0; i < 2; i++) {
		cl.free_on_event = i == 0 ? 1u << CONN_EV_CONNECTED : 0;
		cl.free_on_read = i == 1;
		cl.consume_max = 1;
		client_connect(&cl, NULL, "127.0.0.1", h.port, CONN_TLS, ctx, NULL);
		RUN_UNTIL(&h, cl.conn == NULL && h.srv == NULL && h.accepts == i + 1);
		assert_int_equal(cl.ev[CONN_EV_CONNECTED], 1);
		assert_int_equal(total_events(cl.ev), 1);
		memset(cl.ev, 0, sizeof(cl.ev));
	}
	/* A connection freed before it ever ran. */
	client_connect(&cl, NULL, "127.0.0.1", h.port, CONN_TLS, ctx, NULL);
	conn_free(&cl.conn);
	conn_free(&cl.conn);
	event_base_loop(h.base, EVLOOP_NONBLOCK);
	assert_int_equal(total_events(cl.ev), 0);
	tls_client_ctx_free(&ctx);
	client_free(&cl);
	harness_free(&h);
}

static void test_tls_bulk(void **state)
{
	struct tls_client_ctx *ctx;
	struct harness h;
	struct client cl;
	struct conn_opts o;
	const size_t total = 5u << 20;

	(void)state;
	harness_init(&h, SRV_ECHO);
	h.implicit = server_ctx(0);
	h.backpressure = 1;
	client_init(&cl, &h);
	cl.to_send = total;
	conn_opts_init(&o);
	o.read_high = 64 * 1024;
	o.write_low = 128 * 1024;
	ctx = client_ctx(1, 0, NULL);
	client_connect(&cl, NULL, "127.0.0.1", h.port, CONN_TLS, ctx, &o);
	tls_client_ctx_free(&ctx);
	RUN_UNTIL(&h, cl.received == total || cl.ev[CONN_EV_ERROR] + cl.ev[CONN_EV_EOF] > 0);
	assert_int_equal(total_events(cl.ev), 1);
	assert_int_equal(cl.sent, total);
	assert_int_equal(cl.received, total);
	assert_true(cl.h_sent == cl.h_recv);
	assert_int_equal(conn_bytes_out(cl.conn), total);
	assert_int_equal(conn_bytes_in(cl.conn), total);
	conn_free(&cl.conn);
	RUN_UNTIL(&h, h.srv == NULL);
	assert_int_equal(h.srv_in, total);
	client_free(&cl);
	harness_free(&h);
}

/*
 * The same over a plain socket, which conn reads and writes itself (not
 * through the bufferevent): every byte arrives in order, partial writes
 * resume, and a slow reader's input never grows past its high mark.
 */
static void test_plain_bulk(void **state)
{
	struct harness h;
	struct client cl;
	struct conn_opts o;
	const size_t total = 4u << 20;

	(void)state;
	harness_init(&h, SRV_ECHO);
	h.backpressure = 1;
	client_init(&cl, &h);
	cl.to_send = total;
	cl.consume_max = 20000;
	conn_opts_init(&o);
	o.read_high = 48 * 1024;
	o.write_low = 128 * 1024;
	client_connect(&cl, NULL, "127.0.0.1", h.port, CONN_PLAIN, NULL, &o);
	/* the reader takes 20000 bytes per offer: the last rest stays in the
	 * input until it is taken here */
	RUN_UNTIL(&h, (cl.ev[CONN_EV_CONNECTED] == 1 &&
	               cl.received + evbuffer_get_length(conn_input(cl.conn)) == total) ||
	                      cl.ev[CONN_EV_ERROR] + cl.ev[CONN_EV_EOF] > 0);
	assert_int_equal(total_events(cl.ev), 1);
	assert_int_equal(cl.sent, total);
	cl.consume_max = 0;
	cli_on_read(cl.conn, conn_input(cl.conn), &cl);
	assert_int_equal(cl.received, total);
	assert_true(cl.h_sent == cl.h_recv);
	assert_true(cl.max_input <= 48 * 1024);
	assert_true(cl.max_input > 20000); /* the reader did fall behind */
	assert_int_equal(conn_bytes_in(cl.conn), total);
	conn_free(&cl.conn);
	RUN_UNTIL(&h, h.srv == NULL);
	assert_int_equal(h.srv_in, total);
	client_free(&cl);
	harness_free(&h);
}

/* All data is offered before EOF, also when the client reads slowly behind
 * a small watermark (TLS holds undecrypted records below its input). */
static void test_eof_after_data(void **state)
{
	const size_t total = 300000;
	struct tls_client_ctx *ctx;
	struct harness h;
	struct client cl;
	struct conn_opts o;
	int tls;

	(void)state;
	ctx = client_ctx(1, 0, NULL);
	for (tls = 0; tls < 2; tls++) {
		harness_init(&h, SRV_SEND);
		h.send_total = total;
		h.implicit = tls ? server_ctx(0) : NULL;
		client_init(&cl, &h);
		cl.consume_max = 3000;
		conn_opts_init(&o);
		o.read_high = 4096;
		client_connect(&cl, NULL, "127.0.0.1", h.port, tls ? CONN_TLS : CONN_PLAIN, ctx,
		               &o);
		RUN_UNTIL(&h, h.srv != NULL && h.srv_ev[CONN_EV_CONNECTED] == 1 &&
		                      conn_output_pending(h.srv) == 0);
		conn_free(&h.srv);
		RUN_UNTIL(&h, cl.ev[CONN_EV_EOF] + cl.ev[CONN_EV_ERROR] > 0);
		print_message("  %s: %s after %zu bytes (%zu of them not consumed)\n",
		              tls ? "tls" : "plain", cl.err, cl.received + cl.left, cl.left);
		/* Every byte reached the input before the EOF (the reader
		 * takes at most consume_max per call, so a rest may stay). */
		assert_int_equal(cl.ev[CONN_EV_EOF], 1);
		assert_int_equal(cl.received + cl.left, total);
		client_free(&cl);
		harness_free(&h);
	}
	tls_client_ctx_free(&ctx);
}

/* ---- name resolution through evdns, against an in-process DNS server ---- */

static void dns_server_cb(struct evdns_server_request *req, void *arg)
{
	int i, known = 0;

	(void)arg;
	for (i = 0; i < req->nquestions; i++) {
		const struct evdns_server_question *q = req->questions[i];

		if (strcasecmp(q->name, "imap.test") != 0)
			continue;
		known = 1;
		if (q->type == EVDNS_TYPE_A) {
			uint32_t a = htonl(INADDR_LOOPBACK);

			evdns_server_request_add_a_reply(req, q->name, 1, &a, 60);
		}
	}
	evdns_server_request_respond(req, known ? 0 : DNS_ERR_NOTEXIST);
}

static void test_evdns(void **state)
{
	struct evdns_server_port *dns_port;
	struct evdns_base *dns;
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);
	struct harness h;
	struct client cl;
	char addr[64], want[256];
	int ufd;

	(void)state;
	harness_init(&h, SRV_ECHO);
	h.greeting = "* OK ready\r\n";
	ufd = socket(AF_INET, SOCK_DGRAM, 0);
	assert_true(ufd >= 0);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(ufd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(getsockname(ufd, (struct sockaddr *)&sin, &len), 0);
	evutil_make_socket_nonblocking(ufd);
	dns_port = evdns_add_server_port_with_base(h.base, ufd, 0, dns_server_cb, NULL);
	assert_non_null(dns_port);
	dns = evdns_base_new(h.base, 0);
	assert_non_null(dns);
	snprintf(addr, sizeof(addr), "127.0.0.1:%u", ntohs(sin.sin_port));
	assert_int_equal(evdns_base_nameserver_ip_add(dns, addr), 0);

	client_init(&cl, &h);
	client_connect(&cl, dns, "imap.test", h.port, CONN_PLAIN, NULL, NULL);
	echo_roundtrip(&h, &cl, 1);

	client_connect(&cl, dns, "nohost.invalid", 143, CONN_PLAIN, NULL, NULL);
	RUN_UNTIL(&h, cl.ev[CONN_EV_ERROR] == 1);
	print_message("  %s\n", cl.err);
	snprintf(want, sizeof(want),
	         "connect to nohost.invalid:143 failed: cannot resolve host name (%s)",
	         evutil_gai_strerror(EVUTIL_EAI_NONAME));
	assert_string_equal(cl.err, want);

	/* Freed while the lookup is still in flight. */
	client_connect(&cl, dns, "slow.invalid", 143, CONN_PLAIN, NULL, NULL);
	event_base_loop(h.base, EVLOOP_NONBLOCK);
	conn_free(&cl.conn);
	event_base_loop(h.base, EVLOOP_ONCE);

	client_free(&cl);
	evdns_base_free(dns, 1);
	evdns_close_server_port(dns_port);
	close(ufd);
	harness_free(&h);
}

static void test_api_errors(void **state)
{
	struct tls_client_opts o = {.ca_file = "/nonexistent/ca.pem"};
	struct event_base *base = event_base_new();
	struct conn_opts co;
	const char *error = NULL;

	(void)state;
	assert_null(tls_client_ctx_new(&o, &error));
	print_message("  %s\n", error);
	assert_string_equal(error,
	                    "cannot load CA file /nonexistent/ca.pem: No such file or directory");
	assert_null(tls_server_ctx_new("/nonexistent/cert.pem", srv_key, &error));
	print_message("  %s\n", error);
	assert_string_equal(error, "cannot load certificate chain from /nonexistent/cert.pem: No "
	                           "such file or directory");
	assert_null(tls_server_ctx_new(srv_pem, ca_key, &error));
	print_message("  %s\n", error);
	assert_non_null(strstr(error, "private key"));

	conn_opts_init(&co);
	co.on_event = cli_on_event;
	assert_null(conn_new(base, NULL, &co, &error));
	assert_string_equal(error, "no host to connect to");
	co.host = "127.0.0.1";
	co.mode = CONN_TLS;
	assert_null(conn_new(base, NULL, &co, &error));
	assert_string_equal(error, "implicit TLS needs a TLS client context");
	assert_string_equal(conn_event_name(CONN_EV_TLS_UPGRADED), "tls-upgraded");
	conn_free(NULL);
	event_base_free(base);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_plain_echo),
	        cmocka_unit_test(test_tls_trusted),
	        cmocka_unit_test(test_tls_resumption),
	        cmocka_unit_test(test_tls_verify_failures),
	        cmocka_unit_test(test_tls_no_verify),
	        cmocka_unit_test(test_starttls),
	        cmocka_unit_test(test_starttls_injection),
	        cmocka_unit_test(test_connect_refused),
	        cmocka_unit_test(test_read_timeout),
	        cmocka_unit_test(test_handshake_timeout),
	        cmocka_unit_test(test_connect_timeout),
	        cmocka_unit_test(test_pause_holds_eof),
	        cmocka_unit_test(test_free_in_callbacks),
	        cmocka_unit_test(test_tls_bulk),
	        cmocka_unit_test(test_plain_bulk),
	        cmocka_unit_test(test_eof_after_data),
	        cmocka_unit_test(test_evdns),
	        cmocka_unit_test(test_api_errors),
	};

	/* Writing to a reset socket must be an error, not a signal. */
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, pki_setup, pki_teardown);
}
