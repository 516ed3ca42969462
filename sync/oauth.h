/*
 * oauth.h - Google's service-account flow, as imapsync runs it for
 * "--authmech1 XOAUTH2 --password1 key.json" (or the older
 * "--password1 'iss;file.p12;passphrase'"): a JWT signed RS256 with the
 * service account's private key is exchanged at the token endpoint (the JWT
 * bearer grant of RFC 7523) for an access token, which then logs in with
 * XOAUTH2 or OAUTHBEARER for the user named in the JWT's "sub" claim.
 *
 * One blocking HTTPS POST per login (the token is fetched again at every
 * login, so a reconnect gets a fresh one). The key, the JWT and the token
 * are secrets: nothing here logs them, and the buffers that held them are
 * wiped before they are freed.
 */
#ifndef IMAPFERRY_SYNC_OAUTH_H
#define IMAPFERRY_SYNC_OAUTH_H

#include <stddef.h>
#include <time.h>

#include "imapferry/tls.h"

#define SY_OAUTH_SCOPE          "https://mail.google.com/"
#define SY_OAUTH_TOKEN_URI      "https://oauth2.googleapis.com/token"
#define SY_OAUTH_LIFETIME       3600   /* seconds between the JWT's iat and exp */
#define SY_OAUTH_KEY_FILE_MAX   65536  /* bytes of key.json / the .p12 file read */
#define SY_OAUTH_REPLY_MAX      65536  /* bytes of the token endpoint's reply */
#define SY_OAUTH_TIMEOUT_MS_DEF 120000 /* when --timeout is 0 (none) */
/* Token endpoint for a key that names none (the p12 form has no token_uri):
 * this environment variable, else SY_OAUTH_TOKEN_URI. */
#define SY_OAUTH_TOKEN_URI_ENV "IMAPFERRY_OAUTH_TOKEN_URI"

enum sy_oauth_status {
	SY_OAUTH_OK = 0,
	SY_OAUTH_BADKEY,      /* key file unreadable or unusable (exit 66) */
	SY_OAUTH_REFUSED,     /* the token endpoint answered with an error */
	SY_OAUTH_UNREACHABLE, /* no answer: DNS, connect, TLS, timeout */
};

struct sy_oauth_key; /* a loaded service-account key */

/*
 * Loads a service-account key as --password1 gives it: "iss;file.p12;pass"
 * (a PKCS#12 file, issuer = the service account's e-mail address) when spec
 * holds a ';', else the path of Google's JSON key file (client_email,
 * private_key, and optional private_key_id, token_uri). The private key must
 * be RSA. Returns SY_OAUTH_OK with *key_r (free with sy_oauth_key_free()),
 * or SY_OAUTH_BADKEY with the reason in err (never the key or passphrase).
 */
enum sy_oauth_status sy_oauth_key_load(const char *spec, struct sy_oauth_key **key_r, char *err,
                                       size_t errsize);
/* Frees a key (wiping it); accepts NULL and *key == NULL; sets *key = NULL. */
void sy_oauth_key_free(struct sy_oauth_key **key);
/* The service account (JWT "iss"); borrowed from key. */
const char *sy_oauth_key_iss(const struct sy_oauth_key *key);
/* The token endpoint the JWT is sent to (and its "aud"); borrowed. */
const char *sy_oauth_key_token_uri(const struct sy_oauth_key *key);

/*
 * The signed JWT assertion for user sub (its "sub" claim) issued at now:
 * header {"alg":"RS256","typ":"JWT"[,"kid":private_key_id]}, claims iss,
 * scope SY_OAUTH_SCOPE, aud = the token URI, sub, iat = now, exp = now +
 * SY_OAUTH_LIFETIME; base64url without padding. Returns a malloc'd string
 * (a secret: wipe it), or NULL with the reason in err.
 */
char *sy_oauth_jwt_new(const struct sy_oauth_key *key, const char *sub, time_t now, char *err,
                       size_t errsize);

/*
 * The string value of member name of the top-level JSON object in
 * json[0..len), escapes decoded (\uXXXX to UTF-8). Other members, nested
 * objects and arrays are skipped. Returns 1 with *value_r malloc'd, 0 when
 * there is no such member or its value is not a string, -1 when json is not
 * a well-formed object (as far as it was read).
 */
int sy_oauth_json_string(const char *json, size_t len, const char *name, char **value_r);

/*
 * Gets an access token for sub: builds the JWT and POSTs
 * "grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=JWT" to
 * the key's token URI over HTTPS (https:// only), the certificate verified as
 * tls says (its server_name and no_verify_host are ignored: the endpoint's
 * own host name is checked), with timeout_ms per connect/read/write and for
 * the whole exchange (0 = SY_OAUTH_TIMEOUT_MS_DEF); at most
 * SY_OAUTH_REPLY_MAX bytes of reply are read. Returns SY_OAUTH_OK with
 * *token_r malloc'd (a secret: wipe it), or another status with a message in
 * err: for SY_OAUTH_REFUSED it quotes the HTTP status and the endpoint's
 * "error" and "error_description".
 */
enum sy_oauth_status sy_oauth_token_fetch(const struct sy_oauth_key *key, const char *sub,
                                          const struct tls_client_opts *tls, unsigned timeout_ms,
                                          char **token_r, char *err, size_t errsize);

#endif
