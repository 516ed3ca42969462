/* tls.c - see include/imapferry/tls.h */
#include "imapferry/tls.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

/* Sessions kept per client context for resumption: one per peer, the
 * most recent; a context serves a handful of servers. */
#define TLS_SESS_MAX 16

struct tls_client_ctx {
	unsigned refs;
	SSL_CTX *ssl_ctx;
	int verify_peer, verify_host;
	char *server_name; /* NULL = the connection's host */
	struct {
		char *peer;
		SSL_SESSION *sess;
	} sess[TLS_SESS_MAX];
	unsigned sess_next;
};

/* ex_data slots: the SSL_CTX's tls_client_ctx, an SSL's peer key. */
static int tls_ex_ctx = -1, tls_ex_peer = -1;

static void tls_ex_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
	(void)parent;
	(void)ad;
	(void)idx;
	(void)argl;
	(void)argp;
	free(ptr);
}

/* A session (a TLS 1.3 ticket comes after the handshake) for the peer the
 * SSL was marked with: it replaces that peer's previous one. */
static int tls_new_session(SSL *ssl, SSL_SESSION *sess)
{
	struct tls_client_ctx *ctx = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), tls_ex_ctx);
	const char *peer = SSL_get_ex_data(ssl, tls_ex_peer);
	unsigned k;

	if (ctx == NULL || peer == NULL || !SSL_SESSION_is_resumable(sess))
		return 0;
	for (k = 0; k < TLS_SESS_MAX; k++) {
		if (ctx->sess[k].peer != NULL && strcmp(ctx->sess[k].peer, peer) == 0)
			break;
	}
	if (k == TLS_SESS_MAX) {
		char *copy = strdup(peer);

		if (copy == NULL)
			return 0;
		k = ctx->sess_next++ % TLS_SESS_MAX;
		free(ctx->sess[k].peer);
		ctx->sess[k].peer = copy;
	}
	SSL_SESSION_free(ctx->sess[k].sess);
	ctx->sess[k].sess = sess; /* the callback's reference is ours */
	return 1;
}

void tls_client_ssl_resume(struct tls_client_ctx *ctx, SSL *ssl, const char *peer)
{
	char *copy = strdup(peer);

	if (copy == NULL || SSL_set_ex_data(ssl, tls_ex_peer, copy) != 1) {
		free(copy);
		return;
	}
	for (unsigned k = 0; k < TLS_SESS_MAX; k++) {
		if (ctx->sess[k].peer != NULL && strcmp(ctx->sess[k].peer, peer) == 0) {
			SSL_set_session(ssl, ctx->sess[k].sess);
			return;
		}
	}
}

struct tls_server_ctx {
	unsigned refs;
	SSL_CTX *ssl_ctx;
};

/* Backing store for the error_r strings of this module (see tls.h). */
static _Thread_local char tls_errbuf[512];

static const char *tls_errorf(const char *what, const char *arg, SSL *ssl)
{
	char reason[256];

	tls_error_queue_string(reason, sizeof(reason), ssl);
	if (arg != NULL)
		snprintf(tls_errbuf, sizeof(tls_errbuf), "%s %s: %s", what, arg, reason);
	else
		snprintf(tls_errbuf, sizeof(tls_errbuf), "%s: %s", what, reason);
	return tls_errbuf;
}

static int tls_is_ip_literal(const char *name)
{
	unsigned char addr[sizeof(struct in6_addr)];

	return inet_pton(AF_INET, name, addr) == 1 || inet_pton(AF_INET6, name, addr) == 1;
}

/* Options both sides share. Renegotiation is refused: bufferevent_openssl
 * filters handle it poorly and IMAP has no use for it. */
static int tls_ctx_common(SSL_CTX *ssl_ctx, int min_version)
{
	SSL_CTX_set_options(ssl_ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
	return SSL_CTX_set_min_proto_version(ssl_ctx,
	                                     min_version != 0 ? min_version : TLS1_2_VERSION);
}

struct tls_client_ctx *tls_client_ctx_new(const struct tls_client_opts *opts, const char **error_r)
{
	static const struct tls_client_opts defaults;
	struct tls_client_ctx *ctx;

	if (opts == NULL)
		opts = &defaults;
	ERR_clear_error();
	ctx = calloc(1, sizeof(*ctx));
	if (ctx == NULL) {
		*error_r = "out of memory";
		return NULL;
	}
	ctx->refs = 1;
	ctx->verify_peer = !opts->no_verify_peer;
	ctx->verify_host = ctx->verify_peer && !opts->no_verify_host;
	if (opts->server_name != NULL && (ctx->server_name = strdup(opts->server_name)) == NULL) {
		*error_r = "out of memory";
		goto fail;
	}
	ctx->ssl_ctx = SSL_CTX_new(TLS_client_method());
	if (ctx->ssl_ctx == NULL) {
		*error_r = tls_errorf("cannot create TLS client context", NULL, NULL);
		goto fail;
	}
	if (tls_ex_ctx < 0)
		tls_ex_ctx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
	if (tls_ex_peer < 0)
		tls_ex_peer = SSL_get_ex_new_index(0, NULL, NULL, NULL, tls_ex_free);
	if (tls_ex_ctx < 0 || tls_ex_peer < 0 ||
	    SSL_CTX_set_ex_data(ctx->ssl_ctx, tls_ex_ctx, ctx) != 1) {
		*error_r = tls_errorf("cannot set up TLS session resumption", NULL, NULL);
		goto fail;
	}
	/* resumption: the sessions are kept in ctx->sess, by peer, not in
	 * OpenSSL's cache (which knows no peers) */
	SSL_CTX_set_session_cache_mode(ctx->ssl_ctx,
	                               SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
	SSL_CTX_sess_set_new_cb(ctx->ssl_ctx, tls_new_session);
	if (tls_ctx_common(ctx->ssl_ctx, opts->min_version) != 1) {
		*error_r = tls_errorf("cannot set the minimum TLS version", NULL, NULL);
		goto fail;
	}
	if (opts->max_version != 0 &&
	    SSL_CTX_set_max_proto_version(ctx->ssl_ctx, opts->max_version) != 1) {
		*error_r = tls_errorf("cannot set the maximum TLS version", NULL, NULL);
		goto fail;
	}
	if (!ctx->verify_peer) {
		SSL_CTX_set_verify(ctx->ssl_ctx, SSL_VERIFY_NONE, NULL);
		return ctx;
	}
	SSL_CTX_set_verify(ctx->ssl_ctx, SSL_VERIFY_PEER, NULL);
	if (opts->ca_file != NULL || opts->ca_path != NULL) {
		if (SSL_CTX_load_verify_locations(ctx->ssl_ctx, opts->ca_file, opts->ca_path) !=
		    1) {
			*error_r = opts->ca_file != NULL
			                   ? tls_errorf("cannot load CA file", opts->ca_file, NULL)
			                   : tls_errorf("cannot load CA directory", opts->ca_path,
			                                NULL);
			goto fail;
		}
	} else if (SSL_CTX_set_default_verify_paths(ctx->ssl_ctx) != 1) {
		*error_r = tls_errorf("cannot load the system trust store", NULL, NULL);
		goto fail;
	}
	return ctx;
fail:
	tls_client_ctx_free(&ctx);
	return NULL;
}

struct tls_client_ctx *tls_client_ctx_ref(struct tls_client_ctx *ctx)
{
	ctx->refs++;
	return ctx;
}

void tls_client_ctx_free(struct tls_client_ctx **ctxp)
{
	struct tls_client_ctx *ctx = ctxp != NULL ? *ctxp : NULL;

	if (ctx == NULL)
		return;
	*ctxp = NULL;
	if (--ctx->refs > 0)
		return;
	SSL_CTX_free(ctx->ssl_ctx);
	for (unsigned k = 0; k < TLS_SESS_MAX; k++) {
		free(ctx->sess[k].peer);
		SSL_SESSION_free(ctx->sess[k].sess);
	}
	free(ctx->server_name);
	free(ctx);
}

int tls_client_ctx_verifies_peer(const struct tls_client_ctx *ctx)
{
	return ctx->verify_peer;
}

SSL *tls_client_ssl_new(struct tls_client_ctx *ctx, const char *hostname, const char **error_r)
{
	const char *name = ctx->server_name != NULL ? ctx->server_name : hostname;
	char buf[256];
	size_t len;
	SSL *ssl;

	if (name == NULL || name[0] == '\0') {
		if (ctx->verify_host) {
			*error_r = "no host name to verify the TLS certificate against";
			return NULL;
		}
		name = NULL;
	}
	ERR_clear_error();
	ssl = SSL_new(ctx->ssl_ctx);
	if (ssl == NULL) {
		*error_r = tls_errorf("cannot create TLS session", NULL, NULL);
		return NULL;
	}
	if (name == NULL)
		return ssl;
	/* A fully qualified "host." is the same name without the dot, which
	 * is how SNI and certificates spell it. */
	len = strlen(name);
	if (len >= sizeof(buf)) {
		*error_r = "host name too long for TLS";
		SSL_free(ssl);
		return NULL;
	}
	memcpy(buf, name, len + 1);
	if (len > 1 && buf[len - 1] == '.')
		buf[len - 1] = '\0';

	if (tls_is_ip_literal(buf)) {
		/* RFC 6066 section 3: SNI carries DNS names only. */
		if (ctx->verify_host &&
		    X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), buf) != 1) {
			*error_r = tls_errorf("cannot set the IP address to verify", buf, ssl);
			SSL_free(ssl);
			return NULL;
		}
		return ssl;
	}
	if (SSL_set_tlsext_host_name(ssl, buf) != 1) {
		*error_r = tls_errorf("cannot set TLS server name", buf, ssl);
		SSL_free(ssl);
		return NULL;
	}
	if (ctx->verify_host) {
		SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
		if (SSL_set1_host(ssl, buf) != 1) {
			*error_r = tls_errorf("cannot set the host name to verify", buf, ssl);
			SSL_free(ssl);
			return NULL;
		}
	}
	return ssl;
}

struct tls_server_ctx *tls_server_ctx_new(const char *cert_file, const char *key_file,
                                          const char **error_r)
{
	static const unsigned char sid_ctx[] = "imapferry";
	struct tls_server_ctx *ctx;

	ERR_clear_error();
	ctx = calloc(1, sizeof(*ctx));
	if (ctx == NULL) {
		*error_r = "out of memory";
		return NULL;
	}
	ctx->refs = 1;
	ctx->ssl_ctx = SSL_CTX_new(TLS_server_method());
	if (ctx->ssl_ctx == NULL) {
		*error_r = tls_errorf("cannot create TLS server context", NULL, NULL);
		goto fail;
	}
	if (tls_ctx_common(ctx->ssl_ctx, 0) != 1) {
		*error_r = tls_errorf("cannot set the minimum TLS version", NULL, NULL);
		goto fail;
	}
	SSL_CTX_set_options(ctx->ssl_ctx, SSL_OP_CIPHER_SERVER_PREFERENCE);
	/* Lets clients resume sessions across connections to this context. */
	SSL_CTX_set_session_id_context(ctx->ssl_ctx, sid_ctx, sizeof(sid_ctx) - 1);
	if (SSL_CTX_use_certificate_chain_file(ctx->ssl_ctx, cert_file) != 1) {
		*error_r = tls_errorf("cannot load certificate chain from", cert_file, NULL);
		goto fail;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx->ssl_ctx, key_file, SSL_FILETYPE_PEM) != 1) {
		*error_r = tls_errorf("cannot load private key from", key_file, NULL);
		goto fail;
	}
	if (SSL_CTX_check_private_key(ctx->ssl_ctx) != 1) {
		*error_r = tls_errorf("private key does not match the certificate in", cert_file,
		                      NULL);
		goto fail;
	}
	return ctx;
fail:
	tls_server_ctx_free(&ctx);
	return NULL;
}

struct tls_server_ctx *tls_server_ctx_ref(struct tls_server_ctx *ctx)
{
	ctx->refs++;
	return ctx;
}

void tls_server_ctx_free(struct tls_server_ctx **ctxp)
{
	struct tls_server_ctx *ctx = ctxp != NULL ? *ctxp : NULL;

	if (ctx == NULL)
		return;
	*ctxp = NULL;
	if (--ctx->refs > 0)
		return;
	SSL_CTX_free(ctx->ssl_ctx);
	free(ctx);
}

SSL *tls_server_ssl_new(struct tls_server_ctx *ctx, const char **error_r)
{
	SSL *ssl;

	ERR_clear_error();
	ssl = SSL_new(ctx->ssl_ctx);
	if (ssl == NULL)
		*error_r = tls_errorf("cannot create TLS session", NULL, NULL);
	return ssl;
}

/* "certificate verify failed: <X509 reason>[ (certificate not valid for N)]" */
static const char *tls_verify_string(char *buf, size_t size, SSL *ssl, long result)
{
	X509_VERIFY_PARAM *param = SSL_get0_param(ssl);
	const char *reason = X509_verify_cert_error_string(result);
	const char *host;
	char *ip;

	if (result == X509_V_ERR_HOSTNAME_MISMATCH &&
	    (host = X509_VERIFY_PARAM_get0_host(param, 0)) != NULL) {
		snprintf(buf, size, "certificate verify failed: %s (certificate not valid for %s)",
		         reason, host);
	} else if (result == X509_V_ERR_IP_ADDRESS_MISMATCH &&
	           (ip = X509_VERIFY_PARAM_get1_ip_asc(param)) != NULL) {
		snprintf(buf, size, "certificate verify failed: %s (certificate not valid for %s)",
		         reason, ip);
		OPENSSL_free(ip);
	} else {
		snprintf(buf, size, "certificate verify failed: %s", reason);
	}
	return buf;
}

const char *tls_error_string(char *buf, size_t size, SSL *ssl, unsigned long err)
{
	long vr = ssl != NULL ? SSL_get_verify_result(ssl) : X509_V_OK;
	const char *reason;

	if (size == 0)
		return buf;
	if ((err == 0 || (ERR_GET_LIB(err) == ERR_LIB_SSL &&
	                  ERR_GET_REASON(err) == SSL_R_CERTIFICATE_VERIFY_FAILED)) &&
	    vr != X509_V_OK)
		return tls_verify_string(buf, size, ssl, vr);
	if (err == 0) {
		snprintf(buf, size, "unknown TLS error");
		return buf;
	}
	if (ERR_SYSTEM_ERROR(err)) {
		snprintf(buf, size, "%s", strerror(ERR_GET_REASON(err)));
		return buf;
	}
	reason = ERR_reason_error_string(err);
	if (reason != NULL)
		snprintf(buf, size, "%s", reason);
	else
		ERR_error_string_n(err, buf, size);
	return buf;
}

const char *tls_error_queue_string(char *buf, size_t size, SSL *ssl)
{
	unsigned long first = ERR_get_error(), err;

	while ((err = ERR_get_error()) != 0) {
		/* A verification failure is reported after other errors. */
		if (ERR_GET_LIB(err) == ERR_LIB_SSL &&
		    ERR_GET_REASON(err) == SSL_R_CERTIFICATE_VERIFY_FAILED)
			first = err;
	}
	return tls_error_string(buf, size, ssl, first);
}
