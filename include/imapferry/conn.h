/*
 * conn.h - the transport under every IMAP connection of proxy and sync:
 * TCP, implicit TLS and STARTTLS on libevent bufferevents.
 *
 * A client connection is created with conn_new() and started with
 * conn_connect(): name resolution (evdns when given), a connect to each
 * address in turn, and for CONN_TLS a verified handshake, all bounded by one
 * connect timeout. A server-side connection wraps an accepted socket
 * (conn_new_accepted()). Both then carry bytes: on_read hands over the input
 * evbuffer and the caller consumes what it can parse; writes are queued on
 * the output evbuffer. conn_starttls() / conn_starttls_server() upgrade a
 * plain connection in place.
 *
 * Events (on_event) fire exactly once each: CONNECTED (TCP up and, for TLS,
 * the handshake done and verified), TLS_UPGRADED (after STARTTLS), and one of
 * the terminal ERROR, EOF or TIMEOUT; after a terminal event no callback
 * fires again and writes fail, but the input buffer stays readable and
 * output queued before keeps draining (a TLS alert, a BYE) until
 * conn_free(). EOF comes only after every byte before it was offered to
 * on_read. Callbacks never run from inside a conn_* call: they always come
 * from the event loop. Every message names the operation and the peer:
 *   connect to 127.0.0.1:1 failed: Connection refused
 *   connect to nohost.invalid:143 failed: cannot resolve host name (...)
 *   connect to 127.0.0.1:993 timed out after 5.0 s
 *   TLS handshake with 127.0.0.1:993 failed: certificate verify failed: ...
 *   read from 127.0.0.1:143 timed out after 30.0 s
 *
 * Bufferevents use BEV_OPT_CLOSE_ON_FREE|BEV_OPT_DEFER_CALLBACKS; TLS is
 * always a bufferevent_openssl filter over the socket bufferevent, so
 * implicit TLS and STARTTLS share one code path. Writing to a socket the
 * peer has reset raises SIGPIPE: programs must ignore it (as every libevent
 * program must). Not thread-safe: use a connection from its loop's thread.
 */
#ifndef IMAPFERRY_CONN_H
#define IMAPFERRY_CONN_H

#include <stddef.h>
#include <stdint.h>

#include <event2/util.h>

struct event_base;
struct evdns_base;
struct evbuffer;
struct tls_client_ctx;
struct tls_server_ctx;

struct conn;

enum conn_mode {
	CONN_PLAIN, /* plain TCP; STARTTLS may follow */
	CONN_TLS,   /* implicit TLS (imaps, port 993) */
	CONN_MODE_COUNT
};

enum conn_event {
	CONN_EV_CONNECTED,    /* ready for data (TLS: handshake done, peer verified) */
	CONN_EV_TLS_UPGRADED, /* STARTTLS handshake done, peer verified */
	CONN_EV_ERROR,        /* terminal: error says what failed */
	CONN_EV_EOF,          /* terminal: the peer closed, all data was offered */
	CONN_EV_TIMEOUT,      /* terminal: connect, handshake, read or write timeout */
	CONN_EV_COUNT
};

/* "connected", "tls-upgraded", "error", "eof", "timeout". */
const char *conn_event_name(enum conn_event ev);

/*
 * New bytes arrived. input (borrowed, valid during the call) is the
 * connection's input buffer: consume what can be parsed and leave the rest;
 * on_read fires again when more arrives. May call any conn_* function,
 * conn_free() included.
 */
typedef void conn_read_cb(struct conn *conn, struct evbuffer *input, void *aux);
/*
 * An event. error (borrowed, valid during the call) is a one-line message
 * for ERROR, EOF and TIMEOUT, NULL for CONNECTED and TLS_UPGRADED. May call
 * any conn_* function, conn_free() included.
 */
typedef void conn_event_cb(struct conn *conn, enum conn_event ev, const char *error, void *aux);
/* The output buffer fell to write_low bytes or below (see conn_opts). */
typedef void conn_drained_cb(struct conn *conn, void *aux);

struct conn_opts {
	/* Client side only. host: name or IP literal without brackets;
	 * copied. */
	const char *host;
	uint16_t port;
	enum conn_mode mode;
	/* Needed for CONN_TLS and for conn_starttls(); the connection takes
	 * its own reference. */
	struct tls_client_ctx *tls;

	/* Milliseconds, 0 = none. connect_timeout bounds resolution, connect
	 * and handshake together (and the handshake of an accepted TLS
	 * connection or of STARTTLS). read_timeout: no bytes received for
	 * that long while reading is enabled (pausing stops the clock).
	 * write_timeout: queued output made no progress for that long. */
	unsigned connect_timeout_ms;
	unsigned read_timeout_ms;
	unsigned write_timeout_ms;

	/* TCP keepalive (SO_KEEPALIVE); 0 values take 60 s idle, 15 s
	 * interval, 4 probes. TCP_NODELAY is always on. */
	int keepalive;
	/* Client side: AF_INET or AF_INET6 to use only that address family
	 * (imapsync's --inet4/--inet6); 0 = both. */
	int family;
	unsigned keepalive_idle_s;
	unsigned keepalive_intvl_s;
	unsigned keepalive_cnt;

	/* Flow control, as conn_set_watermarks(). */
	size_t read_high;
	size_t write_low;

	/* Callbacks; on_event is required, the others may be NULL. aux is
	 * passed through untouched (borrowed). */
	conn_read_cb *on_read;
	conn_event_cb *on_event;
	conn_drained_cb *on_drained;
	void *aux;
};

/* Zeroes opts and sets the recommended client timeouts: connect 30 s,
 * write 60 s, no read timeout (IDLE waits for up to 29 min). */
void conn_opts_init(struct conn_opts *opts);

/*
 * A client connection to opts->host:port, not yet started. base and dns
 * (NULL = no resolver) are borrowed and must outlive the connection; opts is
 * copied. Without dns, a host that is not an IP literal is resolved with a
 * blocking getaddrinfo() at the start of the connect. Free dns with
 * evdns_base_free(dns, 1): a cancelled lookup still owes a callback, which
 * frees a small record (it leaks if dns goes first with 0). Returns a connection
 * the caller owns (conn_free()), or NULL with *error_r (static string) when
 * opts are incomplete (no host, no on_event, CONN_TLS without tls).
 */
struct conn *conn_new(struct event_base *base, struct evdns_base *dns, const struct conn_opts *opts,
                      const char **error_r);

/*
 * Starts resolving and connecting; the outcome arrives as CONNECTED, ERROR
 * or TIMEOUT. Data written before CONNECTED is queued and sent after it
 * (after the handshake for CONN_TLS). Returns 0, or -1 with *error_r
 * (static) if the connection was already started or is a server one.
 */
int conn_connect(struct conn *conn, const char **error_r);

/*
 * Wraps an accepted socket (takes ownership of fd, also on failure). With
 * tls (the connection takes its own reference) the TLS handshake runs first
 * (bounded by opts->connect_timeout_ms); CONNECTED fires when it is done, or
 * on the next loop pass for a plain socket. opts->host, port, mode and tls
 * are ignored. Returns a connection the caller owns, or NULL with *error_r.
 */
struct conn *conn_new_accepted(struct event_base *base, evutil_socket_t fd,
                               struct tls_server_ctx *tls, const struct conn_opts *opts,
                               const char **error_r);

/*
 * Client STARTTLS: call after the server's tagged OK to STARTTLS (typically
 * from on_read, after consuming that line). Bytes already received behind
 * that line are discarded, never parsed, and counted in
 * conn_starttls_discarded(): a man in the middle could have injected them
 * before encryption started (RFC 3207 section 6, CVE-2011-0411). Uses the
 * tls context given in opts and verifies the peer as CONN_TLS does; fires
 * TLS_UPGRADED, ERROR or TIMEOUT. on_read stays quiet until then. Returns 0,
 * or -1 with *error_r (static) if the connection is not an established plain
 * client connection or has no tls context.
 */
int conn_starttls(struct conn *conn, const char **error_r);

/*
 * Server STARTTLS: call right after queueing the "OK Begin TLS" response
 * (it is sent in plaintext before the handshake). Buffered input is
 * discarded and counted as for conn_starttls(). tls is borrowed (the
 * connection takes a reference). Fires TLS_UPGRADED, ERROR or TIMEOUT.
 * Returns 0, or -1 with *error_r (static) if the connection is not an
 * established plain server connection.
 */
int conn_starttls_server(struct conn *conn, struct tls_server_ctx *tls, const char **error_r);

/* Queues len bytes (copied). Returns 0, or -1 after a terminal event or
 * when out of memory. */
int conn_write(struct conn *conn, const void *data, size_t len);
/* Moves all of buf (borrowed) into the output, without copying the data.
 * Returns 0, or -1 (buf untouched) after a terminal event or on error. */
int conn_write_buffer(struct conn *conn, struct evbuffer *buf);
/*
 * The output buffer (borrowed from the connection) for building commands in
 * place. Valid until the next callback of this connection returns: it
 * changes at CONNECTED and when TLS starts.
 */
struct evbuffer *conn_output(struct conn *conn);
/* The input buffer (borrowed), NULL before a client connection is
 * established. Same validity as conn_output(). */
struct evbuffer *conn_input(struct conn *conn);
/* Bytes queued but not yet handed to the kernel (for TLS: plaintext not yet
 * encrypted plus records not yet sent). */
size_t conn_output_pending(const struct conn *conn);

/* Replaces the callbacks and aux (same rules as in conn_opts). */
void conn_set_callbacks(struct conn *conn, conn_read_cb *on_read, conn_event_cb *on_event,
                        conn_drained_cb *on_drained, void *aux);
/*
 * Backpressure, as libevent's le-proxy does it. read_high: stop reading from
 * the socket while the input holds that many bytes (0 = unlimited); reading
 * resumes when the caller consumes. write_low: on_drained fires when the
 * output falls to that many bytes or below after a write.
 */
void conn_set_watermarks(struct conn *conn, size_t read_high, size_t write_low);
/* Stops / restarts reading from the peer (and the read timeout). After a
 * resume, on_read fires on the next loop pass if the input holds data. */
void conn_pause_read(struct conn *conn);
void conn_resume_read(struct conn *conn);
/* Changes the read and write timeouts (ms, 0 = none), e.g. around IDLE. */
void conn_set_timeouts(struct conn *conn, unsigned read_timeout_ms, unsigned write_timeout_ms);

/*
 * Closes and frees the connection; safe from inside any of its own
 * callbacks (the memory is released when the callback returns to the
 * library, so libevent never touches freed memory). No callback fires
 * afterwards. Output still queued gets one non-blocking write attempt; a
 * TLS connection first queues a close_notify. Accepts NULL and *conn ==
 * NULL; sets *conn = NULL.
 */
void conn_free(struct conn **conn);

/* "host:port" for client connections ("[::1]:993" for IPv6 literals), the
 * peer's address for accepted ones. Borrowed, valid until conn_free(). */
const char *conn_peer_name(const struct conn *conn);
/* Nonzero once CONNECTED (or TLS_UPGRADED) fired and before a terminal
 * event. */
int conn_is_established(const struct conn *conn);
/* Nonzero once TLS is established (CONNECTED in CONN_TLS / accepted with a
 * TLS context, or TLS_UPGRADED). */
int conn_is_tls(const struct conn *conn);
/* Protocol ("TLSv1.3") and cipher ("TLS_AES_256_GCM_SHA384") of the
 * established TLS session; NULL without one. Static strings. */
const char *conn_tls_version(const struct conn *conn);
const char *conn_tls_cipher(const struct conn *conn);
/* Nonzero when the TLS session was resumed (client connections offer the
 * last session their context got from the same host:port). */
int conn_tls_resumed(const struct conn *conn);
/* Payload bytes received into the input buffer / taken from the output
 * buffer (before TLS encryption, after decryption). */
uint64_t conn_bytes_in(const struct conn *conn);
uint64_t conn_bytes_out(const struct conn *conn);
/* Bytes of plaintext input thrown away by STARTTLS (see conn_starttls()). */
size_t conn_starttls_discarded(const struct conn *conn);

#endif
