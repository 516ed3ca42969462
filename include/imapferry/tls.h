/*
 * tls.h - OpenSSL contexts for the IMAP transport (conn.h): client contexts
 * that verify by default, server contexts for the proxy, and error texts
 * precise enough to show to a user ("certificate verify failed: self-signed
 * certificate").
 *
 * Contexts are reference counted: every connection that may still start a
 * handshake holds a reference, so the owner can drop or replace its context
 * at any time (the proxy reloads its certificate by creating a new server
 * context; sessions already running keep the old one until they end).
 *
 * Error strings returned through error_r live in a thread-local buffer that
 * stays valid until the next tls_* call in the same thread.
 */
#ifndef IMAPFERRY_TLS_H
#define IMAPFERRY_TLS_H

#include <stddef.h>

#include <openssl/ssl.h>

/*
 * Client settings. All-zero is the safe default: the peer certificate chain
 * is verified against the system trust store, the host name is checked, and
 * TLS 1.2 is the oldest version accepted. Verification can only be turned
 * off explicitly (no_verify_*), so a forgotten field never weakens it.
 */
struct tls_client_opts {
	/* Accept any certificate (and skip the host name check). Insecure. */
	int no_verify_peer;
	/* Verify the chain but not that it was issued for the host name. */
	int no_verify_host;
	/* PEM bundle / hashed directory of trusted CAs; both NULL = the system
	 * default paths. Borrowed during tls_client_ctx_new() only. */
	const char *ca_file;
	const char *ca_path;
	/* Oldest protocol version, as OpenSSL's TLS1_2_VERSION or
	 * TLS1_3_VERSION; 0 = TLS 1.2. */
	int min_version;
	/* Name to send as SNI and to verify; NULL = the host name the
	 * connection was opened to. Copied. */
	const char *server_name;
	/* Newest protocol version (TLS1_2_VERSION...); 0 = OpenSSL's newest.
	 * (imapsync's --ssl1_ssl_version / SSL_version=TLSv1_2.) */
	int max_version;
};

struct tls_client_ctx;
struct tls_server_ctx;

/*
 * Builds a client context from opts (NULL = all defaults). Loads the trust
 * store now, so a missing CA file is reported here: "cannot load CA file
 * /x.pem: No such file or directory". Returns a context with one reference
 * owned by the caller, or NULL with *error_r set.
 */
struct tls_client_ctx *tls_client_ctx_new(const struct tls_client_opts *opts, const char **error_r);
/* Adds a reference; returns ctx. Each reference is dropped with
 * tls_client_ctx_free(). */
struct tls_client_ctx *tls_client_ctx_ref(struct tls_client_ctx *ctx);
/* Drops the caller's reference (freeing the context with the last one).
 * Accepts NULL and *ctx == NULL; sets *ctx = NULL. */
void tls_client_ctx_free(struct tls_client_ctx **ctx);
/* Nonzero when the context verifies the peer certificate chain. */
int tls_client_ctx_verifies_peer(const struct tls_client_ctx *ctx);

/*
 * A new client SSL for a connection to hostname (borrowed; the context's
 * server_name overrides it). Sets SNI unless the name is an IP literal, and
 * arms host name verification (DNS name, or IP address for an IP literal)
 * unless the context turned it off. Returns an SSL the caller owns (hand it
 * to a bufferevent with BEV_OPT_CLOSE_ON_FREE, or SSL_free() it), or NULL
 * with *error_r set.
 */
SSL *tls_client_ssl_new(struct tls_client_ctx *ctx, const char *hostname, const char **error_r);

/*
 * Session resumption for ssl (from tls_client_ssl_new(ctx, ...)) to peer
 * ("host:port", borrowed): offers the last session the context got from
 * that peer, and keeps the ones this connection gets (a TLS 1.3 ticket
 * arrives after the handshake). A resumed handshake skips the certificate
 * exchange; the session was verified under the same context and host name.
 * Without this call a connection offers and keeps nothing.
 */
void tls_client_ssl_resume(struct tls_client_ctx *ctx, SSL *ssl, const char *peer);

/*
 * Builds a server context from a PEM certificate chain (leaf first) and a
 * PEM private key; checks that they match. To reload, build a new context
 * and drop the old reference: connections hold their own. Returns a context
 * with one reference owned by the caller, or NULL with *error_r set
 * ("cannot load certificate chain from /x.pem: No such file or directory").
 */
struct tls_server_ctx *tls_server_ctx_new(const char *cert_file, const char *key_file,
                                          const char **error_r);
/* Adds a reference; returns ctx. */
struct tls_server_ctx *tls_server_ctx_ref(struct tls_server_ctx *ctx);
/* Drops a reference; accepts NULL and *ctx == NULL; sets *ctx = NULL. */
void tls_server_ctx_free(struct tls_server_ctx **ctx);
/* A new server-side SSL; owned by the caller. NULL with *error_r on error. */
SSL *tls_server_ssl_new(struct tls_server_ctx *ctx, const char **error_r);

/*
 * Writes a one-line, human-readable description of an OpenSSL error into
 * buf (size bytes, always NUL-terminated) and returns buf.
 *
 * err is a packed OpenSSL error code (ERR_get_error(),
 * bufferevent_get_openssl_error()) or 0. ssl (borrowed, may be NULL) adds the
 * certificate verification result: "certificate verify failed: self-signed
 * certificate", "certificate verify failed: hostname mismatch (certificate
 * not valid for mail.example.com)". With err == 0 and a failed verification
 * on ssl, the verification result alone is described. System errors become
 * strerror() texts; otherwise OpenSSL's reason string ("wrong version
 * number", "tlsv1 alert unknown ca").
 */
const char *tls_error_string(char *buf, size_t size, SSL *ssl, unsigned long err);

/*
 * Empties this thread's OpenSSL error queue into one description (the
 * earliest error is the root cause), as tls_error_string() would write it;
 * "unknown TLS error" when the queue is empty. Returns buf.
 */
const char *tls_error_queue_string(char *buf, size_t size, SSL *ssl);

#endif
