/*
 * sasl.h - the NTLM pieces of the SASL client (lib/sasl.c), exported for
 * tests. The exchange itself is driven through the imap_sasl_* calls in
 * client.h (mechanism IMAP_LOGIN_NTLM); these are its pure building blocks,
 * named after MS-NLMP (the [MS-NLMP] "NT LAN Manager Authentication
 * Protocol" specification, section 3.3.2 for NTLMv2).
 *
 * MD4 (for the NT hash) comes from OpenSSL 3's legacy provider, loaded into
 * a private library context the first time it is needed, so the default
 * context used for TLS is left as the configuration made it.
 *
 * Secrets: every function that sees a password or a hash wipes its own
 * copies; callers wipe what they pass in and get back.
 */
#ifndef IMAPFERRY_SASL_H
#define IMAPFERRY_SASL_H

#include <stddef.h>
#include <stdint.h>

#include "imapferry/client.h"

#define SASL_NTLM_HASH_SIZE      16 /* NTOWFv1, NTOWFv2, NTProofStr */
#define SASL_NTLM_CHALLENGE_SIZE 8  /* server and client challenges */
#define SASL_NTLM_LM_SIZE        24 /* LmChallengeResponse */
/* Longest user, domain or password taken (bytes of UTF-8): far beyond any
 * real one, and it bounds the messages built from them. */
#define SASL_NTLM_FIELD_MAX 512

/*
 * NTOWFv1 (MS-NLMP 3.3.1): MD4 of the UTF-16LE password. Returns 0, or -1
 * with *error_r (static): the password is not UTF-8 or too long, or MD4 is
 * unavailable ("NTLM needs MD4, which OpenSSL's legacy provider supplies
 * ...").
 */
int sasl_ntlm_nt_hash(const char *password, unsigned char hash_r[SASL_NTLM_HASH_SIZE],
                      const char **error_r);

/*
 * NTOWFv2 (MS-NLMP 3.3.2): HMAC-MD5 keyed with the NT hash over
 * UTF-16LE(UPPER(user) || domain); domain may be NULL or "" (none). Only
 * ASCII letters are upper-cased (as Dovecot does). Returns 0, or -1 with
 * *error_r (static): user or domain not UTF-8 or too long, no HMAC-MD5.
 */
int sasl_ntlm_v2_hash(const unsigned char nt_hash[SASL_NTLM_HASH_SIZE], const char *user,
                      const char *domain, unsigned char hash_r[SASL_NTLM_HASH_SIZE],
                      const char **error_r);

/*
 * The NTLMv2 responses (MS-NLMP 3.3.2) for an NTOWFv2 v2_hash:
 * temp = 0x01 0x01 Z(6) || time (FILETIME, little-endian) || client
 * challenge || Z(4) || target info (the server's AV pairs) || Z(4);
 * NTProofStr = HMAC-MD5(v2_hash, server challenge || temp);
 * *nt_r = NTProofStr || temp, malloc'd (caller frees), *nt_len_r bytes;
 * lm_r = HMAC-MD5(v2_hash, server challenge || client challenge) ||
 * client challenge (LMv2). Returns 0, or -1 with *error_r (static).
 */
int sasl_ntlm_v2_response(const unsigned char v2_hash[SASL_NTLM_HASH_SIZE],
                          const unsigned char server_chal[SASL_NTLM_CHALLENGE_SIZE],
                          const unsigned char client_chal[SASL_NTLM_CHALLENGE_SIZE],
                          uint64_t filetime, const unsigned char *target_info,
                          size_t target_info_len, unsigned char lm_r[SASL_NTLM_LM_SIZE],
                          unsigned char **nt_r, size_t *nt_len_r, const char **error_r);

/*
 * Tests only: makes an NTLM exchange s use this client challenge and, when
 * the server sends no MsvAvTimestamp, this FILETIME instead of random bytes
 * and the clock. No effect on other mechanisms.
 */
void sasl_ntlm_fix_for_test(struct imap_sasl *s,
                            const unsigned char client_chal[SASL_NTLM_CHALLENGE_SIZE],
                            uint64_t filetime);

#endif
