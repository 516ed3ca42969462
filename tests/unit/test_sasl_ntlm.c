/*
 * Unit tests of the NTLM client (lib/sasl.c, include/imapferry/sasl.h):
 * MS-NLMP's published NTLMv2 example (section 4.2.4: user "User", domain
 * "Domain", password "Password", server challenge 0123456789abcdef, client
 * challenge aaaaaaaaaaaaaaaa, time 0, the AV pairs of its CHALLENGE
 * message) for NTOWFv1 (4.2.2.1.2), NTOWFv2 (4.2.4.1.1), LMv2 (4.2.4.2.1)
 * and NTProofStr (4.2.4.2.2); then the whole exchange through
 * imap_sasl_step(): the NEGOTIATE message, the AUTHENTICATE message taken
 * apart field by field, the domain left out of the hash for a server
 * without MsvAvNbDomainName (Dovecot), and refused challenges.
 *
 * Run as "test_sasl_ntlm --no-md4" with OPENSSL_MODULES pointing nowhere
 * (a second ctest), it checks the error when MD4 cannot be loaded.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "imapferry/client.h"
#include "imapferry/sasl.h"

#define N_ELEMENTS(a) (sizeof(a) / sizeof((a)[0]))

/* MS-NLMP 4.2.4.3: the CHALLENGE message's TargetInfo: MsvAvNbDomainName
 * "Domain", MsvAvNbComputerName "Server", MsvAvEOL */
static const unsigned char spec_ti[] = {
        0x02, 0x00, 0x0c, 0x00, 'D', 0, 'o', 0, 'm', 0, 'a', 0, 'i', 0, 'n',  0,    0x01, 0x00,
        0x0c, 0x00, 'S',  0,    'e', 0, 'r', 0, 'v', 0, 'e', 0, 'r', 0, 0x00, 0x00, 0x00, 0x00,
};
static const unsigned char server_chal[8] = {0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef};
static const unsigned char client_chal[8] = {0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa};

static void hex_check(const char *what, const unsigned char *got, size_t len, const char *want)
{
	char buf[256];

	assert_true(2 * len < sizeof(buf));
	for (size_t i = 0; i < len; i++)
		snprintf(buf + 2 * i, 3, "%02x", got[i]);
	if (strcmp(buf, want) != 0)
		fail_msg("%s: got %s, want %s", what, buf, want);
}

static void test_spec_vectors(void **state)
{
	unsigned char nt[16], v2[16], lm[24], *resp = NULL;
	size_t resp_len = 0;
	const char *error = NULL;

	(void)state;
	assert_int_equal(sasl_ntlm_nt_hash("Password", nt, &error), 0);
	hex_check("NTOWFv1", nt, 16, "a4f49c406510bdcab6824ee7c30fd852");
	assert_int_equal(sasl_ntlm_v2_hash(nt, "User", "Domain", v2, &error), 0);
	hex_check("NTOWFv2", v2, 16, "0c868a403bfd7a93a3001ef22ef02e3f");
	/* UPPER(user) only: the same hash from "user", not from "domain" */
	{
		unsigned char v2b[16];

		assert_int_equal(sasl_ntlm_v2_hash(nt, "user", "Domain", v2b, &error), 0);
		assert_memory_equal(v2, v2b, 16);
		assert_int_equal(sasl_ntlm_v2_hash(nt, "User", "DOMAIN", v2b, &error), 0);
		assert_memory_not_equal(v2, v2b, 16);
	}
	assert_int_equal(sasl_ntlm_v2_response(v2, server_chal, client_chal, 0, spec_ti,
	                                       sizeof(spec_ti), lm, &resp, &resp_len, &error),
	                 0);
	hex_check("LMv2", lm, 24, "86c35097ac9cec102554764a57cccc19aaaaaaaaaaaaaaaa");
	hex_check("NTProofStr", resp, 16, "68cd0ab851e51c96aabc927bebef6a1c");
	/* NTProofStr || temp: 0x0101, Z(6), time, client challenge, Z(4),
	 * the AV pairs, Z(4) */
	assert_int_equal(resp_len, 16 + 28 + sizeof(spec_ti) + 4);
	hex_check("temp header", resp + 16, 28,
	          "0101000000000000"
	          "0000000000000000"
	          "aaaaaaaaaaaaaaaa"
	          "00000000");
	assert_memory_equal(resp + 44, spec_ti, sizeof(spec_ti));
	hex_check("temp trailer", resp + 44 + sizeof(spec_ti), 4, "00000000");
	free(resp);
}

static void test_bad_input(void **state)
{
	unsigned char nt[16] = {0}, v2[16];
	const char *error = NULL;
	char longname[SASL_NTLM_FIELD_MAX + 2];

	(void)state;
	assert_int_equal(sasl_ntlm_nt_hash("pa\xffss", nt, &error), -1);
	assert_string_equal(error, "the password is not UTF-8 (NTLM hashes it as UTF-16)");
	assert_int_equal(sasl_ntlm_nt_hash("\xc0\xaf", nt, &error), -1);     /* overlong "/" */
	assert_int_equal(sasl_ntlm_nt_hash("\xed\xa0\x80", nt, &error), -1); /* surrogate */
	assert_int_equal(sasl_ntlm_v2_hash(nt, "us\x80r", NULL, v2, &error), -1);
	assert_string_equal(error, "the user or the domain is not UTF-8");
	memset(longname, 'a', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	assert_int_equal(sasl_ntlm_v2_hash(nt, "u", longname, v2, &error), -1);
	assert_string_equal(error, "the user or the domain is too long for NTLM");
	assert_int_equal(sasl_ntlm_nt_hash(longname, nt, &error), -1);
	/* non-ASCII: U+00E9 and U+1F600 (a surrogate pair) hash without error */
	assert_int_equal(sasl_ntlm_nt_hash("caf\xc3\xa9 \xf0\x9f\x98\x80", nt, &error), 0);
}

/* --- the exchange through imap_sasl_step() --- */

static void le16(unsigned char *p, unsigned v)
{
	p[0] = (unsigned char)(v & 0xff);
	p[1] = (unsigned char)(v >> 8);
}

static void le32(unsigned char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static unsigned get16(const unsigned char *p)
{
	return p[0] | (unsigned)p[1] << 8;
}

static uint32_t get32(const unsigned char *p)
{
	return p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* A CHALLENGE message as MS-NLMP 2.2.1.2 lays it out (48-byte header,
 * TargetName "Server" in UTF-16LE, then ti), base64 into out. */
static void make_challenge(const unsigned char *ti, size_t ti_len, uint32_t flags, char *out)
{
	unsigned char m[512];
	size_t n = 48;
	static const unsigned char name[] = {'S', 0, 'e', 0, 'r', 0, 'v', 0, 'e', 0, 'r', 0};

	memset(m, 0, sizeof(m));
	memcpy(m, "NTLMSSP", 8);
	le32(m + 8, 2);
	le16(m + 12, sizeof(name));
	le16(m + 14, sizeof(name));
	le32(m + 16, (uint32_t)n);
	memcpy(m + n, name, sizeof(name));
	n += sizeof(name);
	le32(m + 20, flags);
	memcpy(m + 24, server_chal, 8);
	le16(m + 40, (unsigned)ti_len);
	le16(m + 42, (unsigned)ti_len);
	le32(m + 44, (uint32_t)n);
	memcpy(m + n, ti, ti_len);
	n += ti_len;
	EVP_EncodeBlock((unsigned char *)out, m, (int)n);
}

static size_t unb64(const char *in, unsigned char *out)
{
	size_t len = strlen(in);
	int n = EVP_DecodeBlock(out, (const unsigned char *)in, (int)len);

	assert_true(n >= 0);
	while (len > 0 && in[len - 1] == '=') {
		len--;
		n--;
	}
	return (size_t)n;
}

/* A field of an NTLM message: *data_r and its length. */
static size_t field(const unsigned char *m, size_t mlen, size_t at, const unsigned char **data_r)
{
	size_t len = get16(m + at), off = get32(m + at + 4);

	assert_true(off <= mlen && len <= mlen - off);
	*data_r = m + off;
	return len;
}

static struct imap_sasl *ntlm_start(const char *user, const char *password)
{
	struct imap_login_opts o = {IMAP_LOGIN_NTLM, user, NULL, password, NULL};
	const char *error = NULL;
	struct imap_sasl *s = imap_sasl_new(&o, &error);

	if (s == NULL)
		fail_msg("imap_sasl_new: %s", error);
	sasl_ntlm_fix_for_test(s, client_chal, 0);
	return s;
}

#define F_UNICODE    0x00000001u
#define F_OEM_DOMAIN 0x00001000u
#define F_NTLM       0x00000200u
/* MS-NLMP 4.2.4.3's CHALLENGE flags (0xe28a8233) */
#define SPEC_FLAGS 0xe28a8233u

static void test_exchange_spec(void **state)
{
	struct imap_sasl *s = ntlm_start("Domain\\User", "Password");
	unsigned char m[1024];
	const unsigned char *d;
	char chal[1024];
	const char *resp;
	size_t n, len;

	(void)state;
	assert_null(imap_sasl_initial(s)); /* the server speaks first */
	/* "+ " asks for the NEGOTIATE message */
	assert_int_equal(imap_sasl_step(s, "", 0, &resp), 0);
	n = unb64(resp, m);
	assert_memory_equal(m, "NTLMSSP", 8);
	assert_int_equal(get32(m + 8), 1);
	assert_true((get32(m + 12) & (F_UNICODE | F_NTLM | F_OEM_DOMAIN)) ==
	            (F_UNICODE | F_NTLM | F_OEM_DOMAIN));
	len = field(m, n, 16, &d);
	assert_int_equal(len, 6);
	assert_memory_equal(d, "Domain", 6);

	make_challenge(spec_ti, sizeof(spec_ti), SPEC_FLAGS, chal);
	assert_int_equal(imap_sasl_step(s, chal, strlen(chal), &resp), 0);
	n = unb64(resp, m);
	assert_memory_equal(m, "NTLMSSP", 8);
	assert_int_equal(get32(m + 8), 3);
	len = field(m, n, 12, &d);
	assert_int_equal(len, 24);
	hex_check("LmChallengeResponse", d, 24, "86c35097ac9cec102554764a57cccc19aaaaaaaaaaaaaaaa");
	len = field(m, n, 20, &d);
	assert_int_equal(len, 16 + 28 + sizeof(spec_ti) + 4);
	hex_check("NTProofStr", d, 16, "68cd0ab851e51c96aabc927bebef6a1c");
	len = field(m, n, 28, &d);
	assert_int_equal(len, 12);
	assert_memory_equal(d, "D\0o\0m\0a\0i\0n\0", 12);
	len = field(m, n, 36, &d);
	assert_int_equal(len, 8);
	assert_memory_equal(d, "U\0s\0e\0r\0", 8);
	assert_int_equal(get16(m + 44), 0); /* no workstation */
	assert_int_equal(get16(m + 52), 0); /* no session key */
	assert_true((get32(m + 60) & (F_UNICODE | F_NTLM)) == (F_UNICODE | F_NTLM));
	/* a third challenge is cancelled */
	assert_int_equal(imap_sasl_step(s, "", 0, &resp), -1);
	assert_string_equal(imap_sasl_error(s), "cancelled: a third NTLM challenge");
	imap_sasl_free(&s);
	assert_null(s);
}

/* Dovecot's CHALLENGE: TargetInfo with MsvAvDnsComputerName only. It checks
 * NTLMv2 without a domain, so the hash leaves it out (the message still
 * names it); OEM strings when the server does not pick Unicode. */
static void test_exchange_standalone(void **state)
{
	static const unsigned char dovecot_ti[] = {0x03, 0x00, 0x08, 0x00, 'h', 0, 'o', 0,
	                                           's',  0,    't',  0,    0,   0, 0,   0};
	struct imap_sasl *s = ntlm_start("Domain\\User", "Password");
	unsigned char m[1024], nt[16], v2[16], lm[24], *want = NULL;
	const unsigned char *d;
	char chal[1024];
	const char *resp, *error = NULL;
	size_t n, len, want_len = 0;

	(void)state;
	assert_int_equal(imap_sasl_step(s, "", 0, &resp), 0);
	make_challenge(dovecot_ti, sizeof(dovecot_ti), 0x00800202u /* OEM, NTLM, TARGET_INFO */,
	               chal);
	assert_int_equal(imap_sasl_step(s, chal, strlen(chal), &resp), 0);
	n = unb64(resp, m);
	assert_int_equal(sasl_ntlm_nt_hash("Password", nt, &error), 0);
	assert_int_equal(sasl_ntlm_v2_hash(nt, "User", NULL, v2, &error), 0);
	assert_int_equal(sasl_ntlm_v2_response(v2, server_chal, client_chal, 0, dovecot_ti,
	                                       sizeof(dovecot_ti), lm, &want, &want_len, &error),
	                 0);
	len = field(m, n, 20, &d);
	assert_int_equal(len, want_len);
	assert_memory_equal(d, want, want_len);
	len = field(m, n, 28, &d);
	assert_int_equal(len, 6);
	assert_memory_equal(d, "Domain", 6);
	len = field(m, n, 36, &d);
	assert_int_equal(len, 4);
	assert_memory_equal(d, "User", 4);
	assert_int_equal(get32(m + 60) & F_UNICODE, 0);
	free(want);
	imap_sasl_free(&s);
}

/* With the server's MsvAvTimestamp the blob carries that time and the
 * LM response is Z(24) (MS-NLMP 3.1.5.1.2). */
static void test_exchange_timestamp(void **state)
{
	unsigned char ti[sizeof(spec_ti) + 12];
	struct imap_sasl *s = ntlm_start("User", "Password");
	unsigned char m[1024];
	const unsigned char *d;
	static const unsigned char zero[24];
	char chal[1024];
	const char *resp;
	size_t n, len;

	(void)state;
	memcpy(ti, spec_ti, sizeof(spec_ti) - 4);
	memcpy(ti + sizeof(spec_ti) - 4, "\x07\x00\x08\x00\x01\x02\x03\x04\x05\x06\x07\x08", 12);
	memset(ti + sizeof(ti) - 4, 0, 4);
	assert_int_equal(imap_sasl_step(s, "+", 0, &resp), 0);
	n = unb64(resp, m);
	assert_int_equal(get32(m + 12) & F_OEM_DOMAIN, 0); /* no domain */
	assert_int_equal(get16(m + 16), 0);
	make_challenge(ti, sizeof(ti), SPEC_FLAGS, chal);
	assert_int_equal(imap_sasl_step(s, chal, strlen(chal), &resp), 0);
	n = unb64(resp, m);
	len = field(m, n, 12, &d);
	assert_int_equal(len, 24);
	assert_memory_equal(d, zero, 24);
	len = field(m, n, 20, &d);
	hex_check("blob time", d + 16 + 8, 8, "0102030405060708");
	len = field(m, n, 28, &d);
	assert_int_equal(len, 0);
	imap_sasl_free(&s);
}

static void test_refused(void **state)
{
	static const unsigned char no_eol[] = {0x02, 0x00, 0x02, 0x00, 'D', 0};
	static const unsigned char cut[] = {0x02, 0x00, 0x20, 0x00, 'D', 0, 0, 0};
	struct {
		const char *name;
		const char *chal; /* base64; NULL: built from ti */
		const unsigned char *ti;
		size_t ti_len;
		const char *want;
	} cases[] = {
	        {"not base64", "***", NULL, 0,
	         "cancelled: the NTLM challenge is empty or not base64"},
	        {"empty", "", NULL, 0, "cancelled: the NTLM challenge is empty or not base64"},
	        {"too short", "TlRMTVNTUAACAAAA", NULL, 0,
	         "cancelled: the NTLM challenge is not an NTLMSSP message"},
	        /* "NTLMSSP\0" type 3, 32 bytes */
	        {"wrong type", "TlRMTVNTUAADAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", NULL, 0,
	         "cancelled: the NTLM challenge is not a CHALLENGE message (type 2)"},
	        {"no MsvAvEOL", NULL, no_eol, sizeof(no_eol),
	         "cancelled: the NTLM challenge's TargetInfo has no MsvAvEOL"},
	        {"AV pair cut off", NULL, cut, sizeof(cut),
	         "cancelled: an AV pair of the NTLM challenge's TargetInfo is cut off"},
	};
	char chal[1024];
	const char *resp;

	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(cases); i++) {
		struct imap_sasl *s = ntlm_start("u", "p");

		assert_int_equal(imap_sasl_step(s, "", 0, &resp), 0);
		if (cases[i].chal != NULL)
			snprintf(chal, sizeof(chal), "%s", cases[i].chal);
		else
			make_challenge(cases[i].ti, cases[i].ti_len, SPEC_FLAGS, chal);
		if (imap_sasl_step(s, chal, strlen(chal), &resp) != -1)
			fail_msg("%s: answered", cases[i].name);
		if (strcmp(imap_sasl_error(s), cases[i].want) != 0)
			fail_msg("%s: got \"%s\", want \"%s\"", cases[i].name, imap_sasl_error(s),
			         cases[i].want);
		imap_sasl_free(&s);
	}
	/* TargetInfo beyond the message: patch the offset */
	{
		unsigned char m[256];
		size_t n;
		struct imap_sasl *s = ntlm_start("u", "p");

		make_challenge(spec_ti, sizeof(spec_ti), SPEC_FLAGS, chal);
		n = unb64(chal, m);
		le32(m + 44, 250);
		EVP_EncodeBlock((unsigned char *)chal, m, (int)n);
		assert_int_equal(imap_sasl_step(s, "", 0, &resp), 0);
		assert_int_equal(imap_sasl_step(s, chal, strlen(chal), &resp), -1);
		assert_string_equal(imap_sasl_error(s),
		                    "cancelled: the NTLM challenge's TargetInfo lies outside the "
		                    "message");
		imap_sasl_free(&s);
	}
	/* refused options: a ready-made initial response, an admin user, a
	 * password that is not UTF-8 */
	{
		struct imap_login_opts o = {IMAP_LOGIN_NTLM, "u", NULL, "p", "AAAA"};
		const char *error = NULL;

		assert_null(imap_sasl_new(&o, &error));
		assert_non_null(strstr(error, "a ready-made initial response needs"));
		o.initial = NULL;
		o.authuser = "admin";
		assert_null(imap_sasl_new(&o, &error));
		assert_string_equal(
		        error, "an authorization identity (authuser) needs the PLAIN mechanism");
		o.authuser = NULL;
		o.secret = "\xff";
		assert_null(imap_sasl_new(&o, &error));
		assert_string_equal(error, "the password is not UTF-8 (NTLM hashes it as UTF-16)");
	}
	assert_int_equal(imap_login_mech_lookup("ntlm"), IMAP_LOGIN_NTLM);
	assert_int_equal(imap_login_mech_lookup("AUTH=NTLM"), IMAP_LOGIN_NTLM);
	assert_string_equal(imap_sasl_mech_name(IMAP_LOGIN_NTLM), "NTLM");
	assert_int_equal(imap_sasl_mech_cap(IMAP_LOGIN_NTLM), IMAP_AUTH_NTLM);
}

/* OPENSSL_MODULES points nowhere (set by ctest): no MD4, a clear error. */
static void test_no_md4(void **state)
{
	struct imap_login_opts o = {IMAP_LOGIN_NTLM, "u", NULL, "p", NULL};
	unsigned char nt[16];
	const char *error = NULL;

	(void)state;
	assert_int_equal(sasl_ntlm_nt_hash("Password", nt, &error), -1);
	assert_non_null(strstr(error, "NTLM needs MD4, which OpenSSL's legacy provider supplies"));
	assert_null(imap_sasl_new(&o, &error));
	assert_non_null(strstr(error, "NTLM needs MD4, which OpenSSL's legacy provider supplies"));
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_spec_vectors),
	        cmocka_unit_test(test_bad_input),
	        cmocka_unit_test(test_exchange_spec),
	        cmocka_unit_test(test_exchange_standalone),
	        cmocka_unit_test(test_exchange_timestamp),
	        cmocka_unit_test(test_refused),
	};
	const struct CMUnitTest no_md4[] = {
	        cmocka_unit_test(test_no_md4),
	};

	if (argc > 1 && strcmp(argv[1], "--no-md4") == 0)
		return cmocka_run_group_tests(no_md4, NULL, NULL);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
