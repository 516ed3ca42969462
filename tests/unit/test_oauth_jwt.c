/*
 * Unit tests for sync/oauth.c: the bounded JSON string extractor, service-
 * account key loading (JSON and its errors) and the RS256 JWT (header and
 * claims byte for byte, signature verified with the public key). The HTTPS
 * exchange is tested live in tests/integ/test_sync_oauth.py.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "oauth.h"

static void json_is(const char *json, const char *name, int rc, const char *want)
{
	char *v = NULL;

	assert_int_equal(rc, sy_oauth_json_string(json, strlen(json), name, &v));
	if (want != NULL)
		assert_string_equal(want, v);
	else
		assert_null(v);
	free(v);
}

static void test_json(void **state)
{
	(void)state;
	json_is("{\"a\":\"x\",\"b\":\"y\"}", "b", 1, "y");
	json_is(" {\n \"a\" : \"x\" } ", "a", 1, "x");
	json_is("{}", "a", 0, NULL);
	json_is("{\"a\":1}", "a", 0, NULL); /* not a string */
	json_is("{\"a\":null,\"b\":true}", "b", 0, NULL);
	json_is("{\"n\":{\"a\":\"inner\"},\"a\":\"outer\"}", "a", 1, "outer");
	json_is("{\"n\":[\"a\",{\"a\":\"x\"}]}", "a", 0, NULL);
	json_is("{\"a\":\"first\",\"a\":\"second\"}", "a", 1, "first");
	json_is("{\"k\":\"l1\\nl2\\t\\\"q\\\"\\\\\\/\"}", "k", 1, "l1\nl2\t\"q\"\\/");
	json_is("{\"k\":\"\\u00e9\\u20ac\\ud83d\\ude00\"}", "k", 1,
	        "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
	json_is("{\"k\":\"a\\u0000b\"}", "k", 0, NULL); /* embedded NUL: unusable */
	json_is("{\"\\u0061\":\"esc key\"}", "a", 1, "esc key");
	json_is("{\"access_token\":\"ya29.x\",\"expires_in\":3599,\"token_type\":\"Bearer\"}",
	        "access_token", 1, "ya29.x");
	/* malformed */
	json_is("", "a", -1, NULL);
	json_is("[\"a\"]", "a", -1, NULL);
	json_is("{\"a\":\"x\"", "a", -1, NULL);
	json_is("{\"a\" \"x\"}", "a", -1, NULL);
	json_is("{\"a\":\"x\",}", "a", -1, NULL);
	json_is("{\"a\":\"bad\\q\"}", "a", -1, NULL);
	json_is("{\"a\":\"ctl\x01\"}", "a", -1, NULL);
	json_is("{\"a\":\"\\ud800\"}", "a", -1, NULL); /* lone surrogate */
	json_is("<html>502 Bad Gateway</html>", "error", -1, NULL);
	{
		/* nesting deeper than the limit is refused, not recursed into */
		char deep[200];
		size_t i = 0;

		deep[i++] = '{';
		memcpy(deep + i, "\"a\":", 4);
		i += 4;
		for (int k = 0; k < 60; k++)
			deep[i++] = '[';
		deep[i] = '\0';
		json_is(deep, "a", -1, NULL);
	}
}

/* --- a key file written for the test --- */

static char dir[] = "/tmp/test-oauth-XXXXXX";
static EVP_PKEY *rsa;

static char *path_in_dir(const char *name)
{
	static char buf[256];

	snprintf(buf, sizeof(buf), "%s/%s", dir, name);
	return buf;
}

/* key.json with the test key; extra: more members (with a leading comma) */
static const char *write_json_key(const char *name, const char *extra, EVP_PKEY *key)
{
	BIO *mem = BIO_new(BIO_s_mem());
	char *pem, *p;
	long n;
	FILE *fp;
	const char *path = path_in_dir(name);

	assert_int_equal(1, PEM_write_bio_PrivateKey(mem, key, NULL, NULL, 0, NULL, NULL));
	n = BIO_get_mem_data(mem, &p);
	pem = malloc((size_t)n * 2 + 1);
	assert_non_null(pem);
	{ /* JSON-escape the PEM's line ends */
		size_t j = 0;

		for (long k = 0; k < n; k++) {
			if (p[k] == '\n') {
				pem[j++] = '\\';
				pem[j++] = 'n';
			} else {
				pem[j++] = p[k];
			}
		}
		pem[j] = '\0';
	}
	fp = fopen(path, "w");
	assert_non_null(fp);
	fprintf(fp,
	        "{\n  \"type\": \"service_account\",\n  \"project_id\": \"p\",\n"
	        "  \"private_key\": \"%s\",\n  \"client_email\": \"sa@p.iam.gserviceaccount.com\""
	        "%s\n}\n",
	        pem, extra);
	fclose(fp);
	free(pem);
	BIO_free(mem);
	return path;
}

static int setup(void **state)
{
	(void)state;
	if (mkdtemp(dir) == NULL)
		return -1;
	rsa = EVP_RSA_gen(2048);
	return rsa != NULL ? 0 : -1;
}

static int teardown(void **state)
{
	char cmd[300];

	(void)state;
	EVP_PKEY_free(rsa);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static unsigned char *b64url_decode(const char *s, size_t len, size_t *out_len)
{
	size_t padded = (len + 3) / 4 * 4;
	char *tmp = malloc(padded + 1);
	unsigned char *out = malloc(padded);
	int n;

	assert_non_null(tmp);
	assert_non_null(out);
	for (size_t i = 0; i < padded; i++)
		tmp[i] = i < len ? (s[i] == '-' ? '+' : s[i] == '_' ? '/' : s[i]) : '=';
	tmp[padded] = '\0';
	n = EVP_DecodeBlock(out, (unsigned char *)tmp, (int)padded);
	assert_true(n >= 0);
	*out_len = (size_t)n - (len % 4 == 2 ? 2 : len % 4 == 3 ? 1 : 0);
	out[*out_len] = '\0'; /* room: padded >= *out_len + 1 when padding was added */
	free(tmp);
	return out;
}

static void test_jwt(void **state)
{
	const char *path = write_json_key(
	        "key.json",
	        ",\n  \"private_key_id\": \"k1d\",\n  \"token_uri\": \"https://t.example/tok\"",
	        rsa);
	struct sy_oauth_key *key = NULL;
	char err[256] = "", *jwt, *dot1, *dot2;
	unsigned char *part, *sig;
	size_t n, siglen;
	EVP_MD_CTX *md;

	(void)state;
	assert_int_equal(SY_OAUTH_OK, sy_oauth_key_load(path, &key, err, sizeof(err)));
	assert_string_equal("sa@p.iam.gserviceaccount.com", sy_oauth_key_iss(key));
	assert_string_equal("https://t.example/tok", sy_oauth_key_token_uri(key));
	jwt = sy_oauth_jwt_new(key, "ivan@example.org", 1700000000, err, sizeof(err));
	assert_non_null(jwt);
	dot1 = strchr(jwt, '.');
	assert_non_null(dot1);
	dot2 = strchr(dot1 + 1, '.');
	assert_non_null(dot2);
	assert_null(strchr(dot2 + 1, '.'));
	assert_null(strpbrk(jwt, "+/="));
	part = b64url_decode(jwt, (size_t)(dot1 - jwt), &n);
	assert_string_equal("{\"alg\":\"RS256\",\"typ\":\"JWT\",\"kid\":\"k1d\"}", (char *)part);
	free(part);
	part = b64url_decode(dot1 + 1, (size_t)(dot2 - dot1 - 1), &n);
	assert_string_equal("{\"iss\":\"sa@p.iam.gserviceaccount.com\",\"scope\":\"https://"
	                    "mail.google.com/\",\"aud\":\"https://t.example/tok\",\"sub\":\"ivan@"
	                    "example.org\",\"iat\":1700000000,\"exp\":1700003600}",
	                    (char *)part);
	free(part);
	sig = b64url_decode(dot2 + 1, strlen(dot2 + 1), &siglen);
	assert_int_equal(256, siglen);
	md = EVP_MD_CTX_new();
	assert_int_equal(1, EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, rsa));
	assert_int_equal(
	        1, EVP_DigestVerify(md, sig, siglen, (unsigned char *)jwt, (size_t)(dot2 - jwt)));
	/* one changed byte of the signed part and it no longer verifies */
	jwt[5] ^= 1;
	EVP_MD_CTX_free(md);
	md = EVP_MD_CTX_new();
	assert_int_equal(1, EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, rsa));
	assert_int_not_equal(
	        1, EVP_DigestVerify(md, sig, siglen, (unsigned char *)jwt, (size_t)(dot2 - jwt)));
	EVP_MD_CTX_free(md);
	free(sig);
	free(jwt);
	sy_oauth_key_free(&key);
	assert_null(key);
	sy_oauth_key_free(&key);
}

static void test_jwt_escapes_and_defaults(void **state)
{
	const char *path = write_json_key("plain.json", "", rsa);
	struct sy_oauth_key *key = NULL;
	char err[256], *jwt;
	unsigned char *part;
	size_t n;

	(void)state;
	unsetenv(SY_OAUTH_TOKEN_URI_ENV);
	assert_int_equal(SY_OAUTH_OK, sy_oauth_key_load(path, &key, err, sizeof(err)));
	assert_string_equal(SY_OAUTH_TOKEN_URI, sy_oauth_key_token_uri(key));
	jwt = sy_oauth_jwt_new(key, "we\"ird\\\x01", 5, err, sizeof(err));
	assert_non_null(jwt);
	part = b64url_decode(jwt, (size_t)(strchr(jwt, '.') - jwt), &n);
	assert_string_equal("{\"alg\":\"RS256\",\"typ\":\"JWT\"}", (char *)part); /* no kid */
	free(part);
	part = b64url_decode(strchr(jwt, '.') + 1,
	                     (size_t)(strrchr(jwt, '.') - strchr(jwt, '.') - 1), &n);
	assert_non_null(strstr((char *)part, "\"sub\":\"we\\\"ird\\\\\\u0001\""));
	assert_non_null(strstr((char *)part, "\"iat\":5,\"exp\":3605}"));
	free(part);
	free(jwt);
	sy_oauth_key_free(&key);

	setenv(SY_OAUTH_TOKEN_URI_ENV, "https://127.0.0.1:9/token", 1);
	assert_int_equal(SY_OAUTH_OK, sy_oauth_key_load(path, &key, err, sizeof(err)));
	assert_string_equal("https://127.0.0.1:9/token", sy_oauth_key_token_uri(key));
	sy_oauth_key_free(&key);
	unsetenv(SY_OAUTH_TOKEN_URI_ENV);
}

static void load_fails(const char *spec, const char *msg)
{
	struct sy_oauth_key *key = NULL;
	char err[512] = "";

	assert_int_equal(SY_OAUTH_BADKEY, sy_oauth_key_load(spec, &key, err, sizeof(err)));
	assert_null(key);
	if (strstr(err, msg) == NULL)
		fail_msg("\"%s\" not in \"%s\"", msg, err);
}

static void write_file(const char *name, const char *text)
{
	FILE *fp = fopen(path_in_dir(name), "w");

	assert_non_null(fp);
	fputs(text, fp);
	fclose(fp);
}

static void test_key_errors(void **state)
{
	EVP_PKEY *ec = EVP_EC_gen("P-256");
	char spec[300];

	(void)state;
	load_fails(path_in_dir("missing.json"), "can not read key file");
	load_fails(path_in_dir("missing.json"), "No such file or directory");
	write_file("empty.json", "");
	load_fails(path_in_dir("empty.json"), "is empty");
	write_file("notjson.json", "-----BEGIN PRIVATE KEY-----\n");
	load_fails(path_in_dir("notjson.json"), "is not a JSON object");
	write_file("user.json", "{\"type\":\"authorized_user\",\"client_id\":\"x\"}");
	load_fails(path_in_dir("user.json"), "not a Google service account key");
	write_file("noemail.json", "{\"type\":\"service_account\",\"private_key\":\"x\"}");
	load_fails(path_in_dir("noemail.json"), "has no \"client_email\"");
	write_file("nokey.json", "{\"client_email\":\"a@b\"}");
	load_fails(path_in_dir("nokey.json"), "has no \"private_key\"");
	write_file("badpem.json", "{\"client_email\":\"a@b\",\"private_key\":\"garbage\"}");
	load_fails(path_in_dir("badpem.json"), "is not a usable PEM key");
	assert_non_null(ec);
	load_fails(write_json_key("ec.json", "", ec), "is not an RSA key");
	EVP_PKEY_free(ec);
	/* the p12 form */
	load_fails("a@b;;pass", "is not \"iss;file.p12;passphrase\"");
	load_fails(";x.p12;pass", "is not \"iss;file.p12;passphrase\"");
	snprintf(spec, sizeof(spec), "a@b;%s;secret", path_in_dir("missing.p12"));
	load_fails(spec, "can not read key file");
	snprintf(spec, sizeof(spec), "a@b;%s;secret", path_in_dir("user.json"));
	load_fails(spec, "can not use the PKCS#12 file");
	/* the passphrase never shows up in a message */
	{
		struct sy_oauth_key *key = NULL;
		char err[512];

		assert_int_equal(SY_OAUTH_BADKEY, sy_oauth_key_load(spec, &key, err, sizeof(err)));
		assert_null(strstr(err, "secret"));
	}
}

static void test_fetch_bad_urls(void **state)
{
	const char *path =
	        write_json_key("http.json", ",\"token_uri\":\"http://t.example/tok\"", rsa);
	struct tls_client_opts to;
	struct sy_oauth_key *key = NULL;
	char err[512] = "", *tok = NULL;

	(void)state;
	memset(&to, 0, sizeof(to));
	assert_int_equal(SY_OAUTH_OK, sy_oauth_key_load(path, &key, err, sizeof(err)));
	assert_int_equal(SY_OAUTH_UNREACHABLE,
	                 sy_oauth_token_fetch(key, "u", &to, 1000, &tok, err, sizeof(err)));
	assert_null(tok);
	assert_non_null(strstr(err, "is not an https:// URL"));
	sy_oauth_key_free(&key);

	path = write_json_key("port.json", ",\"token_uri\":\"https://t.example:x1/tok\"", rsa);
	assert_int_equal(SY_OAUTH_OK, sy_oauth_key_load(path, &key, err, sizeof(err)));
	assert_int_equal(SY_OAUTH_UNREACHABLE,
	                 sy_oauth_token_fetch(key, "u", &to, 1000, &tok, err, sizeof(err)));
	assert_non_null(strstr(err, "is not a usable https:// URL"));
	sy_oauth_key_free(&key);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_json),
	        cmocka_unit_test(test_jwt),
	        cmocka_unit_test(test_jwt_escapes_and_defaults),
	        cmocka_unit_test(test_key_errors),
	        cmocka_unit_test(test_fetch_bad_urls),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
