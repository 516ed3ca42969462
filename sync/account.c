/*
 * account.c - host1/host2 connections: TLS choice as imapsync makes it
 * (--ssl/--tls and the 993 auto-detection), certificate verification (on
 * by default, unlike imapsync), login (LOGIN, PLAIN, CRAM-MD5, XOAUTH2,
 * OAUTHBEARER as imapsync's options choose them), and a synchronous
 * command helper.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "imapferry/log.h"
#include "imapferry/xalloc.h"
#include "imapferry/tls.h"
#include "oauth.h"
#include "sync.h"

static void call_done(struct imap_client *cl, const struct imap_result *res, void *aux)
{
	struct sy_call *c = aux;

	(void)cl;
	c->done = 1;
	c->res->status = res->status;
	snprintf(c->res->code, sizeof(c->res->code), "%s", res->code != NULL ? res->code : "");
	snprintf(c->res->text, sizeof(c->res->text), "%s", res->text != NULL ? res->text : "");
	c->res->appenduid = 0;
	if (res->msg != NULL && res->code != NULL && strcmp(res->code, "APPENDUID") == 0 &&
	    imap_arg_get_u32(imap_arg_nth(res->msg->code_args, 1), &c->res->appenduid) < 0)
		c->res->appenduid = 0;
}

static void call_untagged(struct imap_client *cl, const struct imap_msg *msg, void *aux)
{
	struct sy_call *c = aux;

	c->untagged(cl, msg, c->aux);
}

static void call_literal(struct imap_client *cl, const struct imap_event *ev, void *aux)
{
	struct sy_call *c = aux;

	c->literal(cl, ev, c->aux);
}

static int vsend(struct sy_run *r, int i, struct sy_call *c, struct sy_res *res,
                 imap_untagged_cb *untagged, imap_literal_cb *literal, void *aux, const char *fmt,
                 va_list ap)
{
	struct imap_client *cl = r->side[i].cl;
	const char *error;

	memset(c, 0, sizeof(*c));
	c->res = res;
	c->untagged = untagged;
	c->literal = literal;
	c->aux = aux;
	memset(res, 0, sizeof(*res));
	res->status = IMAP_STATUS_NONE;
	if (cl == NULL || imap_client_state(cl) == IMAP_CL_FAILED) {
		snprintf(res->text, sizeof(res->text), "%s",
		         cl != NULL ? imap_client_error(cl) : "not connected");
		c->done = 1;
		return -1;
	}
	if (imap_client_vcmdf(cl, call_done, untagged != NULL ? call_untagged : NULL,
	                      literal != NULL ? call_literal : NULL, c, &error, fmt, ap) < 0) {
		snprintf(res->text, sizeof(res->text), "%s", error);
		c->done = 1;
		return -1;
	}
	return 0;
}

int sy_cmd_send(struct sy_run *r, int i, struct sy_call *c, struct sy_res *res,
                imap_untagged_cb *untagged, imap_literal_cb *literal, void *aux, const char *fmt,
                ...)
{
	va_list ap;
	int rc;

	va_start(ap, fmt);
	rc = vsend(r, i, c, res, untagged, literal, aux, fmt, ap);
	va_end(ap);
	return rc;
}

enum imap_status sy_cmd_wait(struct sy_run *r, int i, struct sy_call *c)
{
	if (!c->done && imap_client_wait(r->side[i].cl, &c->done) < 0 && !c->done)
		snprintf(c->res->text, sizeof(c->res->text), "event loop ended");
	return c->res->status;
}

enum imap_status sy_cmd(struct sy_run *r, int i, struct sy_res *res, imap_untagged_cb *untagged,
                        imap_literal_cb *literal, void *aux, const char *fmt, ...)
{
	struct sy_res local;
	struct sy_call c;
	va_list ap;
	int rc;

	va_start(ap, fmt);
	rc = vsend(r, i, &c, res != NULL ? res : &local, untagged, literal, aux, fmt, ap);
	va_end(ap);
	if (rc < 0)
		return IMAP_STATUS_NONE;
	return sy_cmd_wait(r, i, &c);
}

/* --- connect and login --- */

/* Side i's TLS settings from --sslargsN; quiet: no "ignoring" lines (the
 * strings in *to are borrowed from the options). */
static void side_tls_opts(struct sy_run *r, int i, struct tls_client_opts *to, int quiet)
{
	struct sy_account *a = r->side[i].acc;

	memset(to, 0, sizeof(*to));
	/* imapsync passes --sslargsN to IO::Socket::SSL; we honour its
	 * verification keys with the same spelling. */
	for (size_t k = 0; k < a->sslargs.n; k++) {
		const char *key = a->sslargs.v[k].key, *val = a->sslargs.v[k].value;

		if (strcasecmp(key, "SSL_verify_mode") == 0) {
			to->no_verify_peer =
			        strcmp(val, "0") == 0 || strcasecmp(val, "SSL_VERIFY_NONE") == 0;
		} else if (strcasecmp(key, "SSL_ca_file") == 0) {
			to->ca_file = val;
		} else if (strcasecmp(key, "SSL_ca_path") == 0) {
			to->ca_path = val;
		} else if (strcasecmp(key, "SSL_verifycn_name") == 0 ||
		           strcasecmp(key, "SSL_hostname") == 0) {
			to->server_name = val;
		} else if (strcasecmp(key, "SSL_verifycn_scheme") == 0 &&
		           strcasecmp(val, "none") == 0) {
			to->no_verify_host = 1;
		} else if (strcasecmp(key, "SSL_version") == 0 &&
		           sy_ssl_version_parse(val, &to->min_version, &to->max_version) == 0) {
			continue; /* --sslN_ssl_version, below, wins */
		} else if (!quiet) {
			sy_out(r, "Host%d: ignoring --sslargs%d %s=%s (not supported)", i + 1,
			       i + 1, key, val);
		}
	}
}

/*
 * TLS client contexts by settings, for the life of the process: loading the
 * system's trust store costs ~20 ms of CPU, which a daemon worker would pay
 * for every connection it opens (twice per quick check). A changed CA file
 * (its mtime) makes a new context; workers are recycled anyway.
 */
#define SY_TLS_CACHE 4

static struct sy_tls_cached {
	struct tls_client_ctx *ctx;
	struct tls_client_opts o; /* strings below, not borrowed */
	char *ca_file, *ca_path, *server_name;
	time_t ca_mtime;
} tls_cache[SY_TLS_CACHE];
static unsigned tls_cache_next;

static int str_same(const char *a, const char *b)
{
	return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static struct tls_client_ctx *tls_ctx_cached(const struct tls_client_opts *to, const char **error_r)
{
	struct stat stt;
	time_t mtime = to->ca_file != NULL && stat(to->ca_file, &stt) == 0 ? stt.st_mtime : 0;
	struct sy_tls_cached *e;

	for (unsigned k = 0; k < SY_TLS_CACHE; k++) {
		e = &tls_cache[k];
		if (e->ctx != NULL && e->o.no_verify_peer == to->no_verify_peer &&
		    e->o.no_verify_host == to->no_verify_host &&
		    e->o.min_version == to->min_version && e->o.max_version == to->max_version &&
		    str_same(e->ca_file, to->ca_file) && str_same(e->ca_path, to->ca_path) &&
		    str_same(e->server_name, to->server_name) && e->ca_mtime == mtime)
			return tls_client_ctx_ref(e->ctx);
	}
	e = &tls_cache[tls_cache_next++ % SY_TLS_CACHE];
	tls_client_ctx_free(&e->ctx);
	free(e->ca_file);
	free(e->ca_path);
	free(e->server_name);
	memset(e, 0, sizeof(*e));
	e->ctx = tls_client_ctx_new(to, error_r);
	if (e->ctx == NULL)
		return NULL;
	e->o = *to;
	e->o.ca_file = e->ca_file = (to->ca_file != NULL ? xstrdup(to->ca_file) : NULL);
	e->o.ca_path = e->ca_path = (to->ca_path != NULL ? xstrdup(to->ca_path) : NULL);
	e->o.server_name = e->server_name =
	        (to->server_name != NULL ? xstrdup(to->server_name) : NULL);
	e->ca_mtime = mtime;
	return tls_client_ctx_ref(e->ctx);
}

static struct tls_client_ctx *side_tls(struct sy_run *r, int i, const char **error_r)
{
	struct tls_client_opts to;
	const char *v = r->side[i].acc->ssl_version;

	side_tls_opts(r, i, &to, 0);
	/* --sslN_ssl_version (checked at start-up) wins over SSL_version= */
	if (v != NULL && v[0] != '\0' &&
	    sy_ssl_version_parse(v, &to.min_version, &to.max_version) < 0) {
		*error_r = "bad --ssl_version";
		return NULL;
	}
	return tls_ctx_cached(&to, error_r);
}

struct connect_wait {
	int done;
	enum imap_status status;
	char text[512];
	char code[64];
};

static void connect_done(struct imap_client *cl, const struct imap_result *res, void *aux)
{
	struct connect_wait *w = aux;

	(void)cl;
	w->done = 1;
	w->status = res->status;
	snprintf(w->text, sizeof(w->text), "%s", res->text != NULL ? res->text : "");
	snprintf(w->code, sizeof(w->code), "%s", res->code != NULL ? res->code : "");
}

static struct imap_client *try_connect(struct sy_run *r, int i, uint16_t port,
                                       enum imap_client_security sec, struct connect_wait *w)
{
	struct sy_side *s = &r->side[i];
	struct imap_client_opts co;
	struct imap_client *cl;
	const char *error;
	char name[16];

	snprintf(name, sizeof(name), "host%d", i + 1);
	memset(&co, 0, sizeof(co));
	co.host = s->acc->host;
	co.port = port;
	co.security = sec;
	co.tls = s->tls;
	co.timeout_ms = s->acc->timeout > 0 ? (unsigned)(s->acc->timeout * 1000) : 0;
	co.connect_timeout_ms = co.timeout_ms;
	co.keepalive = s->acc->keepalive;
	co.family = r->o->inet4 ? AF_INET : r->o->inet6 ? AF_INET6 : 0;
	co.name = name;
	memset(w, 0, sizeof(*w));
	cl = imap_client_new(r->base, NULL, &co, &error);
	if (cl == NULL) {
		w->done = 1;
		w->status = IMAP_STATUS_NONE;
		snprintf(w->text, sizeof(w->text), "%s", error);
		return NULL;
	}
	imap_client_connect(cl, connect_done, w);
	imap_client_wait(cl, &w->done);
	if (w->status != IMAP_STATUS_OK)
		imap_client_free(&cl);
	return cl;
}

static enum imap_client_security side_security(struct sy_run *r, int i)
{
	struct sy_account *a = r->side[i].acc;
	int tls_given = sy_options_given(r->o, i == 0 ? SY_OPT_TLS1 : SY_OPT_TLS2);

	if (a->ssl)
		return IMAP_SEC_TLS;
	if (tls_given)
		return a->tls ? IMAP_SEC_STARTTLS : IMAP_SEC_PLAIN;
	return IMAP_SEC_STARTTLS_IF_OFFERED;
}

static int empty(const char *s)
{
	return s == NULL || s[0] == '\0';
}

static void wipe_free(char **p)
{
	if (*p != NULL) {
		OPENSSL_cleanse(*p, strlen(*p));
		free(*p);
		*p = NULL;
	}
}

/*
 * imapsync's "STR|FILE" for --oauthaccesstoken1 and --oauthdirect1: when
 * value names a readable regular file, its first line without the line
 * end and surrounding blanks (a token is one word), else value itself.
 * Malloc'd (a secret: wipe it); NULL when the file's first line is empty.
 * Read at every login, so a token file refreshed by another program is
 * picked up on reconnect.
 */
static char *str_or_file(const char *value)
{
	struct stat st;
	char *line = NULL, *start, *end;
	size_t cap = 0;
	FILE *fp;
	char *out;

	if (stat(value, &st) != 0 || !S_ISREG(st.st_mode) || (fp = fopen(value, "r")) == NULL) {
		out = strdup(value);
		if (out == NULL)
			abort();
		return out;
	}
	if (getline(&line, &cap, fp) < 0) {
		fclose(fp);
		free(line);
		return NULL;
	}
	fclose(fp);
	for (start = line; *start == ' ' || *start == '\t'; start++)
		;
	end = start + strlen(start);
	while (end > start &&
	       (end[-1] == '\n' || end[-1] == '\r' || end[-1] == ' ' || end[-1] == '\t'))
		end--;
	*end = '\0';
	if (start == end) {
		wipe_free(&line);
		return NULL;
	}
	memmove(line, start, (size_t)(end - start) + 1);
	return line;
}

/*
 * Google's service-account flow for side i: --passwordN is the key
 * (key.json or "iss;file.p12;passphrase"), the token is fetched from the
 * key's token endpoint for --userN, over TLS verified with the side's
 * --sslargsN CA settings, within --timeoutN. *token_r: the access token (a
 * secret: wipe it). Returns 0, -1 (refused or unreachable: a login failure)
 * or -2 (the key is unreadable or unusable) with the reason in err. Neither
 * the key nor the JWT nor the token is ever printed.
 */
static int service_account_token(struct sy_run *r, int i, char **token_r, char *err, size_t errsize)
{
	struct sy_account *a = r->side[i].acc;
	struct sy_oauth_key *key = NULL;
	struct tls_client_opts to;
	enum sy_oauth_status st;
	char why[400];

	*token_r = NULL;
	if (empty(a->user)) {
		snprintf(err, errsize, "the service-account flow needs --user%d (the JWT's sub)",
		         i + 1);
		return -1;
	}
	st = sy_oauth_key_load(a->password, &key, why, sizeof(why));
	if (st != SY_OAUTH_OK) {
		size_t len = strlen(a->password);

		/* a password given by mistake is not a file name: never show it */
		if (strchr(a->password, ';') == NULL && strchr(a->password, '/') == NULL &&
		    (len < 5 || strcasecmp(a->password + len - 5, ".json") != 0) &&
		    access(a->password, F_OK) != 0)
			snprintf(err, errsize,
			         "--password%d (MASKED) is neither a readable service-account key "
			         "file (key.json) nor 'iss;file.p12;passphrase'",
			         i + 1);
		else
			snprintf(err, errsize, "--password%d service-account key: %s", i + 1, why);
		return -2;
	}
	sy_out(r, "Host%d: getting an OAuth2 access token for [%s] as service account [%s] from %s",
	       i + 1, a->user, sy_oauth_key_iss(key), sy_oauth_key_token_uri(key));
	side_tls_opts(r, i, &to, 1);
	st = sy_oauth_token_fetch(key, a->user, &to,
	                          a->timeout > 0 ? (unsigned)(a->timeout * 1000) : 0, token_r, why,
	                          sizeof(why));
	sy_oauth_key_free(&key);
	if (st != SY_OAUTH_OK) {
		snprintf(err, errsize, "%s", why);
		return st == SY_OAUTH_BADKEY ? -2 : -1;
	}
	return 0;
}

/*
 * How side i logs in, as imapsync's options say: --oauthdirect1 (a
 * ready-made base64 string) or --oauthaccesstoken1 with XOAUTH2 (or
 * OAUTHBEARER when --authmech1 says so); --authuser1: PLAIN with
 * authzid = user1; else --authmech1, which options.c set to CRAM-MD5 for
 * --authmd51 and to LOGIN by default. *owned_r is a secret read here (wipe
 * it after the login), or NTLM's "DOMAIN\user" for --domain1. *mech_r is
 * the mechanism's name for the "auth [...]" lines, also on failure.
 * --authmechN XOAUTH2/OAUTHBEARER with a
 * --passwordN and no token: Google's service-account flow (oauth.h) gets the
 * token first. Returns 0, or -1 with the reason in err (a login failure), or
 * -2 when the service-account key can not be read (exit 66).
 */
static int side_login_opts(struct sy_run *r, int i, struct imap_login_opts *lo, char **owned_r,
                           const char **mech_r, char *err, size_t errsize)
{
	struct sy_account *a = r->side[i].acc;
	int given = sy_options_given(r->o, i == 0 ? SY_OPT_AUTHMECH1 : SY_OPT_AUTHMECH2);
	int m = imap_login_mech_lookup(a->authmech);
	const char *oauth = !empty(a->oauthdirect) ? a->oauthdirect : a->oauthaccesstoken;
	int rc;

	memset(lo, 0, sizeof(*lo));
	*owned_r = NULL;
	*mech_r = a->authmech != NULL ? a->authmech : "LOGIN";
	lo->user = a->user != NULL ? a->user : "";
	lo->secret = a->password != NULL ? a->password : "";
	if (!empty(oauth)) {
		const char *opt = !empty(a->oauthdirect) ? "oauthdirect" : "oauthaccesstoken";

		lo->mech = given && m == IMAP_LOGIN_OAUTHBEARER ? IMAP_LOGIN_OAUTHBEARER
		                                                : IMAP_LOGIN_XOAUTH2;
		*mech_r = imap_login_mech_names[lo->mech];
		if (given && m != IMAP_LOGIN_XOAUTH2 && m != IMAP_LOGIN_OAUTHBEARER)
			sy_out(r, "Host%d: --%s%d given, so auth is %s, not --authmech%d %s", i + 1,
			       opt, i + 1, imap_login_mech_names[lo->mech], i + 1, a->authmech);
		*owned_r = str_or_file(oauth);
		if (*owned_r == NULL) {
			snprintf(err, errsize, "--%s%d: the first line of the file %s is empty",
			         opt, i + 1, oauth);
			return -1;
		}
		if (!empty(a->oauthdirect))
			lo->initial = *owned_r; /* sent as is */
		else
			lo->secret = *owned_r;
		return 0;
	}
	if (!empty(a->authuser) && a->proxyauth) {
		/* --proxyauth1 (Sun/iPlanet): LOGIN as the admin, then
		 * "PROXYAUTH user1" (sy_side_open sends it) */
		lo->mech = IMAP_LOGIN_CMD;
		lo->user = a->authuser;
		*mech_r = "LOGIN+PROXYAUTH";
		return 0;
	}
	if (!empty(a->authuser)) {
		/* the admin logs in for user1: only PLAIN carries an authzid */
		lo->mech = IMAP_LOGIN_PLAIN;
		lo->authuser = a->authuser;
		*mech_r = imap_login_mech_names[lo->mech];
		return 0;
	}
	if (m < 0 && strcasecmp(a->authmech, "PREAUTH") == 0) {
		snprintf(err, errsize, "--authmech%d PREAUTH, but the server did not send PREAUTH",
		         i + 1);
		return -1;
	}
	if (m < 0) {
		snprintf(err, errsize,
		         "unknown --authmech%d %s (use LOGIN, PLAIN, AUTH=LOGIN, CRAM-MD5, "
		         "XOAUTH2, OAUTHBEARER or NTLM)",
		         i + 1, a->authmech);
		return -1;
	}
	if (m == IMAP_LOGIN_XOAUTH2 || m == IMAP_LOGIN_OAUTHBEARER) {
		lo->mech = (enum imap_login_mech)m;
		*mech_r = imap_login_mech_names[lo->mech];
		if (empty(a->password)) {
			snprintf(err, errsize,
			         "--authmech%d %s needs --oauthaccesstoken%d, --oauthdirect%d or a "
			         "service-account key as --password%d (key.json or "
			         "'iss;file.p12;passphrase')",
			         i + 1, a->authmech, i + 1, i + 1, i + 1);
			return -1;
		}
		rc = service_account_token(r, i, owned_r, err, errsize);
		if (rc < 0)
			return rc;
		lo->secret = *owned_r;
		return 0;
	}
	lo->mech = (enum imap_login_mech)m;
	*mech_r = imap_login_mech_names[lo->mech];
	if (m == IMAP_LOGIN_NTLM && !empty(a->domain)) {
		/* --domain1 (NTLM only, as in imapsync): "DOMAIN\user" */
		size_t n = strlen(a->domain) + strlen(lo->user) + 2;

		*owned_r = malloc(n);
		if (*owned_r == NULL)
			abort();
		snprintf(*owned_r, n, "%s\\%s", a->domain, lo->user);
		lo->user = *owned_r;
	}
	return 0;
}

/* "* ID ("name" "Dovecot" ...)": the server's fields, one line. */
static void on_id(struct imap_client *cl, const struct imap_msg *msg, void *aux)
{
	struct sy_id_wait *w = aux;
	char line[600];
	size_t len = 0;

	(void)cl;
	if (msg->name == NULL || strcmp(msg->name, "ID") != 0 || msg->args == NULL ||
	    msg->args->type != IMAP_ARG_LIST)
		return;
	line[0] = '\0';
	for (const struct imap_arg *k = msg->args->child; k != NULL && k->next != NULL;
	     k = k->next->next) {
		const char *ks, *vs;
		size_t kl, vl;

		if (imap_arg_get_astring(k, &ks, &kl) < 0 ||
		    imap_arg_get_nstring(k->next, &vs, &vl) < 0 || len >= sizeof(line) - 1)
			break;
		len += (size_t)snprintf(line + len, sizeof(line) - len, "%s%.*s: %.*s",
		                        len > 0 ? ", " : "", (int)(kl > 60 ? 60 : kl), ks,
		                        (int)(vs == NULL ? 3
		                              : vl > 120 ? 120
		                                         : vl),
		                        vs == NULL ? "NIL" : vs);
		if (len >= sizeof(line))
			len = sizeof(line) - 1;
	}
	sy_out(w->r, "Host%d: ID of the server: %s", w->n, line[0] != '\0' ? line : "(none)");
}

/* imapsync's --id (on by default): the ID command (RFC 2971) after login,
 * when the server announces it. */
static void side_id(struct sy_run *r, int i)
{
	struct sy_side *s = &r->side[i];

	s->id_sent = 0;
	if (!r->o->id || s->cl == NULL || !imap_caps_has(imap_client_caps(s->cl), IMAP_CAP_ID))
		return;
	sy_out(r,
	       "Host%d: found ID capability. Sending/receiving ID, presented here as name: value. "
	       "In order to avoid sending/receiving ID, use option --noid",
	       i + 1);
	/* not waited for: its reply comes with the next command's (one round
	 * trip less per connection; the daemon's quick checks make many) */
	s->idw.r = r;
	s->idw.n = i + 1;
	s->id_sent = sy_cmd_send(r, i, &s->idcall, &s->idres, on_id, NULL, &s->idw,
	                         "ID (\"name\" \"imapferry-sync\" \"version\" \"%a\")",
	                         IMAPFERRY_VERSION) == 0;
}

/* --compressN: COMPRESS=DEFLATE (RFC 4978) after login. As in imapsync, a
 * server without it, or one that refuses it, only costs a line: the run
 * goes on uncompressed. */
static void side_compress(struct sy_run *r, int i)
{
	struct sy_side *s = &r->side[i];
	struct connect_wait w;

	if (!s->acc->compress || s->cl == NULL)
		return;
	if (s->id_sent)
		sy_cmd_wait(r, i, &s->idcall); /* nothing may be in flight under COMPRESS */
	memset(&w, 0, sizeof(w));
	imap_client_compress(s->cl, connect_done, &w);
	imap_client_wait(s->cl, &w.done);
	if (w.status == IMAP_STATUS_OK)
		sy_out(r, "Host%d: COMPRESS=DEFLATE is on: compression on (--compress%d)", i + 1,
		       i + 1);
	else
		sy_out(r, "Host%d: no compression (--compress%d): %s", i + 1, i + 1, w.text);
}

int sy_side_open(struct sy_run *r, int i)
{
	struct sy_side *s = &r->side[i];
	struct sy_account *a = s->acc;
	struct connect_wait w;
	struct sy_res res;
	struct imap_login_opts lo;
	enum imap_client_security sec;
	const char *error, *mech;
	char *owned = NULL;
	int n = i + 1, rc, jwt;

	s->n = n;
	s->qresync = 0;
	s->tls = side_tls(r, i, &error);
	if (s->tls == NULL) {
		sy_error(r, SY_ERR_TLS, "Host%d: TLS setup failed: %s", n, error);
		return sy_err_exit_code(SY_ERR_TLS);
	}
	sec = side_security(r, i);
	if (a->port == 0 && !a->ssl && r->o->sslcheck &&
	    !sy_options_given(r->o, i == 0 ? SY_OPT_TLS1 : SY_OPT_TLS2) &&
	    !sy_options_given(r->o, i == 0 ? SY_OPT_SSL1 : SY_OPT_SSL2)) {
		/* imapsync's sslcheck: an open imaps port means TLS. */
		s->cl = try_connect(r, i, 993, IMAP_SEC_TLS, &w);
		if (s->cl != NULL) {
			sy_out(r, "Host%d: sslcheck detected open ssl port 993 so turning ssl on",
			       n);
			s->port = 993;
			s->ssl = 1;
		}
	}
	if (s->cl == NULL) {
		s->port = a->port != 0 ? (uint16_t)a->port : (a->ssl ? 993 : 143);
		s->ssl = sec == IMAP_SEC_TLS;
		sy_out(r, "Host%d: connecting on host%d [%s] port [%u]", n, n, a->host, s->port);
		s->cl = try_connect(r, i, s->port, sec, &w);
	}
	if (s->cl == NULL) {
		enum sy_err cls = strncmp(w.text, "TLS handshake", 13) == 0 ||
		                                  strstr(w.text, "STARTTLS") != NULL
		                          ? SY_ERR_TLS
		                          : (i == 0 ? SY_ERR_CONNECT1 : SY_ERR_CONNECT2);

		sy_error(r, cls,
		         "Host%d failure: can not open imap connection on [%s] with user [%s]: %s",
		         n, a->host, a->user != NULL ? a->user : "", w.text);
		return sy_err_exit_code(cls);
	}
	if (imap_client_is_tls(s->cl) && sec == IMAP_SEC_STARTTLS_IF_OFFERED && !s->ssl)
		sy_out(r,
		       "Host%d: going to ssl because STARTTLS is in CAPABILITY. Use --notls%d to "
		       "avoid that behavior",
		       n, n);
	if (imap_client_is_tls(s->cl) &&
	    ((a->ssl_version != NULL && a->ssl_version[0] != '\0') || r->o->debugssl >= 2))
		/* --sslN_ssl_version says what it got; --debugssl 2 and more too */
		sy_out(r, "Host%d: TLS protocol %s, cipher %s, %s%s%s", n,
		       imap_client_tls_version(s->cl) != NULL ? imap_client_tls_version(s->cl)
		                                              : "?",
		       imap_client_tls_cipher(s->cl) != NULL ? imap_client_tls_cipher(s->cl) : "?",
		       imap_client_tls_resumed(s->cl) ? "session resumed" : "full handshake",
		       a->ssl_version != NULL && a->ssl_version[0] != '\0' ? ", --ssl_version "
		                                                           : "",
		       a->ssl_version != NULL ? a->ssl_version : "");
	if (r->o->justconnect)
		return 0;
	if (imap_client_state(s->cl) == IMAP_CL_AUTHED) {
		sy_out(r, "Host%d: %s says it has PREAUTH, no login needed", n, a->host);
		return 0;
	}
	memset(&w, 0, sizeof(w));
	/* mech: the mechanism actually used, for the "auth [...]" lines */
	rc = side_login_opts(r, i, &lo, &owned, &mech, w.text, sizeof(w.text));
	/* the service-account flow: --passwordN is a key, never a password */
	jwt = (lo.mech == IMAP_LOGIN_XOAUTH2 || lo.mech == IMAP_LOGIN_OAUTHBEARER) &&
	      empty(a->oauthaccesstoken) && empty(a->oauthdirect);
	if (rc == -2) {
		sy_error(r, i == 0 ? SY_ERR_AUTH1 : SY_ERR_AUTH2, "Host%d failure: %s", n, w.text);
		return SY_EX_NOINPUT;
	}
	if (rc < 0) {
		w.status = IMAP_STATUS_NONE;
	} else {
		imap_client_login_with(s->cl, &lo, connect_done, &w);
		imap_client_wait(s->cl, &w.done);
	}
	wipe_free(&owned);
	if (w.status == IMAP_STATUS_NO && r->o->trylogin && lo.mech != IMAP_LOGIN_CMD && !jwt &&
	    (a->authuser == NULL || a->authuser[0] == '\0') && a->password != NULL &&
	    a->password[0] != '\0' && imap_client_state(s->cl) == IMAP_CL_NOAUTH) {
		/* imapsync's --trylogin (on by default): the plain LOGIN command
		 * when the chosen mechanism is refused */
		sy_out(r,
		       "Host%d: auth [%s] failed: %s; trying the LOGIN command ( use --notrylogin "
		       "to avoid that )",
		       n, mech, w.text);
		memset(&w, 0, sizeof(w));
		memset(&lo, 0, sizeof(lo));
		lo.mech = IMAP_LOGIN_CMD;
		lo.user = a->user != NULL ? a->user : "";
		lo.secret = a->password;
		mech = "LOGIN";
		imap_client_login_with(s->cl, &lo, connect_done, &w);
		imap_client_wait(s->cl, &w.done);
	}
	if (w.status != IMAP_STATUS_OK) {
		enum sy_err cls = i == 0 ? SY_ERR_AUTH1 : SY_ERR_AUTH2;

		sy_error(r, cls,
		         "Host%d failure: Error login on [%s] with user [%s] auth [%s]: %s%s%s%s",
		         n, a->host, a->user != NULL ? a->user : "", mech,
		         w.code[0] != '\0' ? "[" : "", w.code, w.code[0] != '\0' ? "] " : "",
		         w.text);
		return sy_err_exit_code(cls);
	}
	if (a->proxyauth && !empty(a->authuser)) {
		struct sy_res pr;

		if (sy_cmd(r, i, &pr, NULL, NULL, NULL, "PROXYAUTH %s",
		           a->user != NULL ? a->user : "") != IMAP_STATUS_OK) {
			enum sy_err cls = i == 0 ? SY_ERR_AUTH1 : SY_ERR_AUTH2;

			sy_error(r, cls, "Host%d failure: PROXYAUTH %s as [%s] on [%s]: %s", n,
			         a->user != NULL ? a->user : "", a->authuser, a->host,
			         pr.text[0] != '\0' ? pr.text : "refused");
			return sy_err_exit_code(cls);
		}
	}
	sy_out(r, "Host%d: success login on [%s] with user [%s] auth [%s]", n, a->host,
	       a->user != NULL ? a->user : "", mech);
	side_id(r, i);
	side_compress(r, i);
	(void)res;
	return 0;
}

/* The COMPRESS line of side i's end, then its LOGOUT sent; 1 when sent. */
static int close_begin(struct sy_run *r, int i, struct sy_call *c, struct sy_res *res)
{
	struct sy_side *s = &r->side[i];

	if (s->cl != NULL && imap_client_is_compressed(s->cl)) {
		uint64_t z[4];

		imap_client_compress_counts(s->cl, z);
		sy_out(r,
		       "Host%d: COMPRESS=DEFLATE sent %llu bytes as %llu, received %llu bytes as "
		       "%llu",
		       i + 1, (unsigned long long)z[0], (unsigned long long)z[1],
		       (unsigned long long)z[3], (unsigned long long)z[2]);
	}
	return s->cl != NULL && imap_client_state(s->cl) == IMAP_CL_AUTHED &&
	       sy_cmd_send(r, i, c, res, NULL, NULL, NULL, "LOGOUT") == 0;
}

static void close_end(struct sy_run *r, int i, struct sy_call *c, int sent)
{
	struct sy_side *s = &r->side[i];

	if (sent)
		sy_cmd_wait(r, i, c);
	imap_client_free(&s->cl);
	tls_client_ctx_free(&s->tls);
	free(s->prefix);
	s->prefix = NULL;
}

void sy_side_close(struct sy_run *r, int i)
{
	struct sy_call c = {0};
	struct sy_res res;
	int sent = close_begin(r, i, &c, &res);

	close_end(r, i, &c, sent);
}

void sy_sides_close(struct sy_run *r)
{
	struct sy_call c[2];
	struct sy_res res[2];
	int sent[2];

	for (int i = 0; i < 2; i++)
		sent[i] = close_begin(r, i, &c[i], &res[i]);
	for (int i = 0; i < 2; i++)
		close_end(r, i, &c[i], sent[i]);
}

int sy_side_reopen(struct sy_run *r, int i)
{
	struct sy_side *s = &r->side[i];

	imap_client_free(&s->cl);
	tls_client_ctx_free(&s->tls);
	return sy_side_open(r, i);
}
