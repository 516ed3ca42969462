/* Unit tests for rkeys.c: CRC16 against Redis Cluster, shard assignment, the
 * key and member builders (including every too-small buffer), member
 * splitting, folder canonicalisation and route state names. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imapferry/rkeys.h"
#include "imapferry/rnodes.h"
#include "imapferry/rqueue.h"

#define N_ELEMENTS(a) (sizeof(a) / sizeof((a)[0]))

/* CLUSTER KEYSLOT answers of a Redis 7.0.15 started with cluster-enabled:
 * the slot is crc16 % 16384, so our shard must be slot % 16. */
static const struct {
	const char *key;
	unsigned slot;
} slots[] = {
        {"123456789", 12739}, /* 0x31C3, the test vector in the Cluster spec */
        {"foo", 12182},       {"somekey", 11058}, {"hello", 866},
        {"alice", 749},       {"bob", 8955},      {"user@example.org", 7640},
};

static void test_crc16(void **state)
{
	size_t i;

	(void)state;
	assert_int_equal(rk_crc16("123456789", 9), 0x31C3);
	assert_int_equal(rk_crc16("", 0), 0);
	for (i = 0; i < N_ELEMENTS(slots); i++) {
		const char *k = slots[i].key;
		unsigned got = rk_crc16(k, strlen(k)) % 16384u;

		if (got != slots[i].slot)
			fail_msg("crc16(%s) %% 16384: want %u, got %u", k, slots[i].slot, got);
		assert_int_equal(rk_shard(k), slots[i].slot % RK_SHARDS);
	}
}

/* The shard spreads users: 1000 synthetic users fill every shard, none with
 * more than twice its share. */
static void test_shard_spread(void **state)
{
	unsigned count[RK_SHARDS] = {0};
	char user[32];
	unsigned i;

	(void)state;
	for (i = 0; i < 1000; i++) {
		snprintf(user, sizeof(user), "user%u@example.org", i);
		assert_true(rk_shard(user) < RK_SHARDS);
		count[rk_shard(user)]++;
	}
	for (i = 0; i < RK_SHARDS; i++) {
		if (count[i] == 0 || count[i] > 2 * 1000 / RK_SHARDS)
			fail_msg("shard %u got %u of 1000 users", i, count[i]);
	}
}

enum kind {
	K_DUE,
	K_INFLIGHT,
	K_OWNER,
	K_FENCE,
	K_POLL,
	K_STATE,
	K_MAP,
	K_HINT,
	K_GONE,
	K_ROUTE,
	K_MEMBER
};

static int build(enum kind k, char *buf, size_t size, unsigned shard, const char *user,
                 const char *folder)
{
	switch (k) {
	case K_DUE:
		return rk_key_due(buf, size, shard);
	case K_INFLIGHT:
		return rk_key_inflight(buf, size, shard);
	case K_OWNER:
		return rk_key_owner(buf, size, shard);
	case K_FENCE:
		return rk_key_fence(buf, size, shard);
	case K_POLL:
		return rk_key_poll(buf, size, shard);
	case K_STATE:
		return rk_key_state(buf, size, user);
	case K_MAP:
		return rk_key_map(buf, size, user, folder);
	case K_HINT:
		return rk_key_hint(buf, size, user);
	case K_GONE:
		return rk_key_gone(buf, size, user, folder);
	case K_ROUTE:
		return rk_key_route(buf, size, user);
	case K_MEMBER:
		return rk_member(buf, size, user, folder);
	}
	return -2;
}

/* alice is in slot 749 -> shard 13; bob 8955 -> shard 11. */
static const struct {
	const char *name;
	enum kind kind;
	unsigned shard;
	const char *user, *folder;
	const char *want; /* NULL: the builder refuses (-1) */
} keys[] = {
        {"due 0", K_DUE, 0, NULL, NULL, "rep:{0}:due"},
        {"due 15", K_DUE, 15, NULL, NULL, "rep:{15}:due"},
        {"inflight", K_INFLIGHT, 3, NULL, NULL, "rep:{3}:inflight"},
        {"owner", K_OWNER, 3, NULL, NULL, "rep:{3}:owner"},
        {"fence", K_FENCE, 3, NULL, NULL, "rep:{3}:fence"},
        {"poll", K_POLL, 7, NULL, NULL, "rep:{7}:poll"},
        {"state", K_STATE, 0, "alice", NULL, "rep:{13}:st:alice"},
        {"map", K_MAP, 0, "alice", "INBOX", "rep:{13}:map:alice:INBOX"},
        {"map utf8", K_MAP, 0, "bob",
         "Entw\xc3\xbc"
         "rfe",
         "rep:{11}:map:bob:Entw\xc3\xbcrfe"},
        {"hint", K_HINT, 0, "bob", NULL, "rep:{11}:hint:bob"},
        {"gone", K_GONE, 0, "alice", "INBOX", "rep:{13}:gone:alice:INBOX"},
        {"route", K_ROUTE, 0, "bob", NULL, "rep:route:bob"},
        {"member", K_MEMBER, 0, "alice", "INBOX", "alice\tINBOX"},
        {"member all", K_MEMBER, 0, "alice", RK_FOLDER_ALL, "alice\t*"},
        {"member folder tab", K_MEMBER, 0, "alice", "a\tb", "alice\ta\tb"},
        {"member empty user", K_MEMBER, 0, "", "INBOX", NULL},
        {"member empty folder", K_MEMBER, 0, "alice", "", NULL},
        {"member tab in user", K_MEMBER, 0, "al\tice", "INBOX", NULL},
};

static void test_keys(void **state)
{
	char buf[256];
	size_t i, size;

	(void)state;
	for (i = 0; i < N_ELEMENTS(keys); i++) {
		int n = build(keys[i].kind, buf, sizeof(buf), keys[i].shard, keys[i].user,
		              keys[i].folder);

		if (keys[i].want == NULL) {
			if (n != -1)
				fail_msg("%s: want -1, got %d \"%s\"", keys[i].name, n, buf);
			continue;
		}
		if (n < 0 || strcmp(buf, keys[i].want) != 0 || (size_t)n != strlen(keys[i].want))
			fail_msg("%s: want \"%s\", got %d \"%s\"", keys[i].name, keys[i].want, n,
			         n < 0 ? "" : buf);
		/* Every size below len + 1 refuses; exactly len + 1 fits. */
		for (size = 0; size <= (size_t)n; size++) {
			char *small = malloc(size > 0 ? size : 1);

			assert_non_null(small);
			if (build(keys[i].kind, small, size, keys[i].shard, keys[i].user,
			          keys[i].folder) != -1)
				fail_msg("%s: size %zu should not fit", keys[i].name, size);
			free(small);
		}
		{
			char *exact = malloc((size_t)n + 1);

			assert_non_null(exact);
			assert_int_equal(build(keys[i].kind, exact, (size_t)n + 1, keys[i].shard,
			                       keys[i].user, keys[i].folder),
			                 n);
			assert_string_equal(exact, keys[i].want);
			free(exact);
		}
	}
}

static const struct {
	const char *member;
	int ok;
	const char *user, *folder;
} splits[] = {
        {"alice\tINBOX", 1, "alice", "INBOX"},
        {"alice\t*", 1, "alice", "*"},
        {"alice\ta\tb", 1, "alice", "a\tb"}, /* the first tab splits */
        {"u@x.org\tSent/2024", 1, "u@x.org", "Sent/2024"},
        {"alice", 0, NULL, NULL},
        {"\tINBOX", 0, NULL, NULL},
        {"alice\t", 0, NULL, NULL},
        {"", 0, NULL, NULL},
};

static void test_member_split(void **state)
{
	size_t i;

	(void)state;
	for (i = 0; i < N_ELEMENTS(splits); i++) {
		/* An exact-size heap copy: ASan catches a read past len. */
		size_t len = strlen(splits[i].member);
		char *m = malloc(len > 0 ? len : 1);
		const char *u = NULL, *f = NULL;
		size_t ulen = 0, flen = 0;
		int rc;

		assert_non_null(m);
		memcpy(m, splits[i].member, len);
		rc = rk_member_split(m, len, &u, &ulen, &f, &flen);
		if (!splits[i].ok) {
			if (rc != -1)
				fail_msg("split #%zu: want -1", i);
		} else {
			if (rc != 0 || ulen != strlen(splits[i].user) ||
			    memcmp(u, splits[i].user, ulen) != 0 ||
			    flen != strlen(splits[i].folder) ||
			    memcmp(f, splits[i].folder, flen) != 0)
				fail_msg("split #%zu: got %d \"%.*s\" \"%.*s\"", i, rc, (int)ulen,
				         u ? u : "", (int)flen, f ? f : "");
			assert_ptr_equal(u, m);
		}
		free(m);
	}
}

/* Member round trip: split(member(u, f)) == (u, f). */
static void test_member_roundtrip(void **state)
{
	static const char *const users[] = {"alice", "u@example.org", "x"};
	static const char *const folders[] = {"INBOX", "*", "a b", "a\tb", "\xc3\xa4"};
	char buf[64];
	size_t i, j;

	(void)state;
	for (i = 0; i < N_ELEMENTS(users); i++) {
		for (j = 0; j < N_ELEMENTS(folders); j++) {
			const char *u, *f;
			size_t ul, fl;
			int n = rk_member(buf, sizeof(buf), users[i], folders[j]);

			assert_true(n > 0);
			assert_int_equal(rk_member_split(buf, (size_t)n, &u, &ul, &f, &fl), 0);
			assert_int_equal(ul, strlen(users[i]));
			assert_memory_equal(u, users[i], ul);
			assert_int_equal(fl, strlen(folders[j]));
			assert_memory_equal(f, folders[j], fl);
		}
	}
}

static const struct {
	const char *name;
	const char *in;
	size_t len; /* 0: strlen(in) */
	int utf8;
	char sep;
	const char *want; /* NULL: -1 */
} canons[] = {
        {"plain", "Sent", 0, 0, '/', "Sent"},
        {"mutf7 umlaut", "&AOQ-", 0, 0, '/', "\xc3\xa4"},
        {"mutf7 inside", "Entw&APw-rfe", 0, 0, '.', "Entw\xc3\xbcrfe"},
        {"mutf7 ampersand", "a&-b", 0, 0, '/', "a&b"},
        {"mutf7 astral", "&2D3eAA-", 0, 0, '/', "\xf0\x9f\x98\x80"},
        {"inbox lower", "inbox", 0, 0, '/', "INBOX"},
        {"inbox mixed", "InBoX", 0, 0, '.', "INBOX"},
        {"inbox upper", "INBOX", 0, 0, 0, "INBOX"},
        {"inbox child dot", "inbox.child", 0, 0, '.', "INBOX.child"},
        {"inbox child keeps case", "inbox.Child.inbox", 0, 0, '.', "INBOX.Child.inbox"},
        {"inbox child slash", "Inbox/x", 0, 0, '/', "INBOX/x"},
        {"inbox other sep not folded", "inbox.child", 0, 0, '/', "inbox.child"},
        {"inbox no sep not folded", "inbox.child", 0, 0, 0, "inbox.child"},
        {"inboxes not folded", "inboxes", 0, 0, '/', "inboxes"},
        {"inbo not folded", "inbo", 0, 0, '/', "inbo"},
        {"inbox child mutf7", "inbox/&AOQ-", 0, 0, '/', "INBOX/\xc3\xa4"},
        {"utf8 passthrough", "\xc3\xa4/&AOQ-", 0, 1, '/', "\xc3\xa4/&AOQ-"},
        {"utf8 inbox", "inbox/\xc3\xa4", 0, 1, '/', "INBOX/\xc3\xa4"},
        /* Invalid modified UTF-7 is kept byte for byte (see rkeys.c). */
        {"bad mutf7 unterminated", "a&b", 0, 0, '/', "a&b"},
        {"bad mutf7 noncanonical", "&AGE-", 0, 0, '/', "&AGE-"},
        {"bad mutf7 8bit", "\xc3\xa4", 0, 0, '/', "\xc3\xa4"},
        {"bad mutf7 inbox", "inbox/&Jjo", 0, 0, '/', "INBOX/&Jjo"},
        {"empty", "", 0, 0, '/', ""},
        {"embedded NUL", "a\0b", 3, 0, '/', NULL},
        {"embedded NUL utf8", "a\0b", 3, 1, '/', NULL},
};

static void test_folder_canon(void **state)
{
	char buf[128];
	size_t i, size;

	(void)state;
	for (i = 0; i < N_ELEMENTS(canons); i++) {
		size_t len = canons[i].len ? canons[i].len : strlen(canons[i].in);
		char *in = malloc(len > 0 ? len : 1); /* not NUL-terminated */
		int n;

		assert_non_null(in);
		memcpy(in, canons[i].in, len);
		n = rk_folder_canon(buf, sizeof(buf), in, len, canons[i].utf8, canons[i].sep);
		if (canons[i].want == NULL) {
			if (n != -1)
				fail_msg("%s: want -1, got %d", canons[i].name, n);
			free(in);
			continue;
		}
		if (n < 0 || (size_t)n != strlen(canons[i].want) ||
		    strcmp(buf, canons[i].want) != 0)
			fail_msg("%s: want \"%s\", got %d \"%s\"", canons[i].name, canons[i].want,
			         n, n < 0 ? "" : buf);
		for (size = 0; size <= (size_t)n; size++) {
			char *small = malloc(size > 0 ? size : 1);

			assert_non_null(small);
			if (rk_folder_canon(small, size, in, len, canons[i].utf8, canons[i].sep) !=
			    -1)
				fail_msg("%s: size %zu should not fit", canons[i].name, size);
			free(small);
		}
		free(in);
	}
}

static void test_route_state(void **state)
{
	static const struct {
		const char *s;
		int rc;
		enum rk_route_state want;
	} cases[] = {
	        {"SRC", 0, RK_ROUTE_SRC},    {"FREEZE", 0, RK_ROUTE_FREEZE},
	        {"DST", 0, RK_ROUTE_DST},    {"src", -1, RK_ROUTE_SRC},
	        {"", -1, RK_ROUTE_SRC},      {"DSTX", -1, RK_ROUTE_SRC},
	        {"FREEZ", -1, RK_ROUTE_SRC},
	};
	size_t i;

	(void)state;
	for (i = 0; i < N_ELEMENTS(cases); i++) {
		enum rk_route_state st = RK_ROUTE_STATE_COUNT;
		int rc = rk_route_state_parse(cases[i].s, &st);

		if (rc != cases[i].rc || (rc == 0 && st != cases[i].want))
			fail_msg("parse \"%s\": got %d/%d", cases[i].s, rc, (int)st);
		if (rc == 0)
			assert_string_equal(rk_route_state_names[st], cases[i].s);
	}
}

/* rq_addr_parse(): the --redis spelling every program shares. */
/* rk_key_slot(): Redis Cluster's slots, as `redis-cli CLUSTER KEYSLOT`
 * printed them (redis-server 7.0): hash tags, "{}" (no tag: the whole key),
 * only the first "{...}", an unclosed brace. */
static void test_key_slot(void **state)
{
	static const struct {
		const char *key;
		unsigned slot;
	} cases[] = {
	        {"foo", 12182},          {"bar", 5061},
	        {"hello", 866},          {"{user1000}.following", 3443},
	        {"a{}b", 13694},         {"{}{x}", 3257},
	        {"x{y}{z}", 12222},      {"rep:{3}:due", 1584},
	        {"rep:route:bob", 3916}, {"{", 4092},
	        {"a{b", 13340},
	};
	char key[256];
	size_t i;
	unsigned s;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		assert_int_equal(rk_key_slot(cases[i].key, strlen(cases[i].key)), cases[i].slot);
	assert_int_equal(rk_route_slot("bob"), 3916);
	/* every key of a shard is in the shard's slot */
	for (s = 0; s < RK_SHARDS; s++) {
		rk_key_due(key, sizeof(key), s);
		assert_int_equal(rk_key_slot(key, strlen(key)), rk_shard_slot(s));
		rk_key_poll(key, sizeof(key), s);
		assert_int_equal(rk_key_slot(key, strlen(key)), rk_shard_slot(s));
	}
	rk_key_state(key, sizeof(key), "bob");
	assert_int_equal(rk_key_slot(key, strlen(key)), rk_shard_slot(rk_shard("bob")));
	rk_key_map(key, sizeof(key), "bob", "a{b}c");
	assert_int_equal(rk_key_slot(key, strlen(key)), rk_shard_slot(rk_shard("bob")));
	assert_int_equal(rk_shard_slot(3), 1584);
}

/* rn_redirect_parse(): a Redis Cluster's MOVED and ASK error texts. */
static void test_redirect_parse(void **state)
{
	static const struct {
		const char *text;
		int rc, ask;
		unsigned slot;
		const char *host;
		int port;
	} cases[] = {
	        {"MOVED 3999 127.0.0.1:6381", 0, 0, 3999, "127.0.0.1", 6381},
	        {"ASK 16383 10.0.0.2:7000", 0, 1, 16383, "10.0.0.2", 7000},
	        {"MOVED 0 [::1]:6379", 0, 0, 0, "::1", 6379},
	        {"MOVED 12 ::1:6379", 0, 0, 12, "::1", 6379},
	        {"MOVED 5 redis-2.example:6379 extra", 0, 0, 5, "redis-2.example", 6379},
	        {"MOVED 16384 h:1", -1, 0, 0, NULL, 0},
	        {"MOVED 1 h:0", -1, 0, 0, NULL, 0},
	        {"MOVED 1 h:65536", -1, 0, 0, NULL, 0},
	        {"MOVED 1 h", -1, 0, 0, NULL, 0},
	        {"MOVED 1 :6379", -1, 0, 0, NULL, 0},
	        {"MOVED x h:1", -1, 0, 0, NULL, 0},
	        {"MOVED 1 h:1x", -1, 0, 0, NULL, 0},
	        {"MOVED 1", -1, 0, 0, NULL, 0},
	        {"MOVEDX 1 h:1", -1, 0, 0, NULL, 0},
	        {"ERR unknown command", -1, 0, 0, NULL, 0},
	        {"", -1, 0, 0, NULL, 0},
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *host = NULL;
		size_t hl = 0;
		unsigned slot = 0;
		int ask = -1, port = 0;
		int rc = rn_redirect_parse(cases[i].text, strlen(cases[i].text), &ask, &slot, &host,
		                           &hl, &port);

		assert_int_equal(rc, cases[i].rc);
		if (rc < 0)
			continue;
		assert_int_equal(ask, cases[i].ask);
		assert_int_equal(slot, cases[i].slot);
		assert_int_equal(hl, strlen(cases[i].host));
		assert_memory_equal(host, cases[i].host, hl);
		assert_int_equal(port, cases[i].port);
	}
	/* the length bounds the text: no read past it */
	{
		const char *host;
		size_t hl;
		unsigned slot;
		int ask, port;

		assert_int_equal(
		        rn_redirect_parse("MOVED 1 h:12345", 13, &ask, &slot, &host, &hl, &port),
		        0);
		assert_int_equal(port, 123);
	}
}

/* rn_cmd_slot(): the slot of a formatted command's key. */
static void test_cmd_slot(void **state)
{
	static const struct {
		const char *fmt;
		int rc;
		unsigned slot;
	} cases[] = {
	        {"*2\r\n$3\r\nGET\r\n$3\r\nfoo\r\n", 1, 12182},
	        {"*3\r\n$4\r\nHGET\r\n$13\r\nrep:route:bob\r\n$5\r\nstate\r\n", 1, 3916},
	        {"*4\r\n$4\r\nEVAL\r\n$1\r\nx\r\n$1\r\n1\r\n$11\r\nrep:{3}:due\r\n", 1, 1584},
	        {"*3\r\n$7\r\nevalsha\r\n$1\r\nx\r\n$1\r\n0\r\n", 0, 0},
	        {"*1\r\n$4\r\nTIME\r\n", 0, 0},
	        {"*3\r\n$7\r\nPUBLISH\r\n$7\r\nrep:ctl\r\n$1\r\nx\r\n", 0, 0},
	        {"*4\r\n$4\r\nSCAN\r\n$1\r\n0\r\n$5\r\nMATCH\r\n$13\r\nrep:{3}:map:*\r\n", 1, 1584},
	        {"*4\r\n$4\r\nSCAN\r\n$1\r\n0\r\n$5\r\nMATCH\r\n$12\r\nrep:{*}:st:*\r\n", 0, 0},
	        {"*4\r\n$4\r\nSCAN\r\n$1\r\n0\r\n$5\r\nMATCH\r\n$7\r\nrep:*{3\r\n", 0, 0},
	        {"*2\r\n$3\r\nGET\r\n$9\r\nfoo\r\n", -1, 0}, /* a bulk past the end */
	        {"*2\r\n$3\r\nGET\r\n", -1, 0},
	        {"GET foo\r\n", -1, 0},
	        {"", -1, 0},
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		unsigned slot = 99999;
		int rc = rn_cmd_slot(cases[i].fmt, strlen(cases[i].fmt), &slot);

		assert_int_equal(rc, cases[i].rc);
		if (rc == 1)
			assert_int_equal(slot, cases[i].slot);
	}
}

static void test_addr_parse(void **state)
{
	static const struct {
		const char *spec;
		int ok;
		const char *host;
		int port;
		const char *unix_path;
	} cases[] = {
	        {"127.0.0.1:6380", 1, "127.0.0.1", 6380, NULL},
	        {"redis.example.org", 1, "redis.example.org", 6379, NULL},
	        {"[::1]:7000", 1, "[::1]", 7000, NULL},
	        {"/run/redis/redis.sock", 1, "", 6379, "/run/redis/redis.sock"},
	        {"", 0, NULL, 0, NULL},
	        {":6379", 0, NULL, 0, NULL},
	        {"host:0", 0, NULL, 0, NULL},
	        {"host:65536", 0, NULL, 0, NULL},
	        {"host:12x", 0, NULL, 0, NULL},
	};
	char host[64];

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int port;
		const char *unix_path;
		int rc = rq_addr_parse(cases[i].spec, host, sizeof(host), &port, &unix_path);

		assert_int_equal(rc, cases[i].ok ? 0 : -1);
		if (!cases[i].ok)
			continue;
		assert_string_equal(host, cases[i].host);
		assert_int_equal(port, cases[i].port);
		if (cases[i].unix_path == NULL)
			assert_null(unix_path);
		else
			assert_string_equal(unix_path, cases[i].unix_path);
	}
	assert_int_equal(rq_addr_parse("averyveryverylonghostname:1", host, 8, &(int){0},
	                               &(const char *){NULL}),
	                 -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_crc16),
	        cmocka_unit_test(test_shard_spread),
	        cmocka_unit_test(test_keys),
	        cmocka_unit_test(test_member_split),
	        cmocka_unit_test(test_member_roundtrip),
	        cmocka_unit_test(test_folder_canon),
	        cmocka_unit_test(test_route_state),
	        cmocka_unit_test(test_key_slot),
	        cmocka_unit_test(test_redirect_parse),
	        cmocka_unit_test(test_cmd_slot),
	        cmocka_unit_test(test_addr_parse),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
