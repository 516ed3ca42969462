/* rkeys.c - see include/imapferry/rkeys.h */
#include "imapferry/rkeys.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "imapferry/mutf7.h"

const char *const rk_route_state_names[RK_ROUTE_STATE_COUNT] = {"SRC", "FREEZE", "DST"};
_Static_assert(sizeof(rk_route_state_names) / sizeof(rk_route_state_names[0]) ==
                       RK_ROUTE_STATE_COUNT,
               "route state names");

/* CRC16-CCITT, XMODEM flavour (polynomial 0x1021, initial value 0, no
 * reflection, no final xor): the checksum Redis Cluster takes modulo 16384
 * for a key's slot. Bitwise: user names are short, a table buys nothing. */
uint16_t rk_crc16(const void *data, size_t len)
{
	const unsigned char *p = data;
	unsigned crc = 0;
	size_t i;
	int bit;

	for (i = 0; i < len; i++) {
		crc ^= (unsigned)p[i] << 8;
		for (bit = 0; bit < 8; bit++)
			crc = (crc & 0x8000u) ? ((crc << 1) ^ 0x1021u) : (crc << 1);
		crc &= 0xffffu;
	}
	return (uint16_t)crc;
}

unsigned rk_shard(const char *user)
{
	return rk_crc16(user, strlen(user)) % RK_SHARDS;
}

unsigned rk_key_slot(const char *key, size_t len)
{
	const char *open = memchr(key, '{', len), *close;

	if (open != NULL) {
		size_t rest = len - (size_t)(open - key) - 1;

		close = memchr(open + 1, '}', rest);
		/* "{}" is no tag: the whole key is hashed */
		if (close != NULL && close > open + 1)
			return rk_crc16(open + 1, (size_t)(close - open - 1)) & (RK_SLOTS - 1);
	}
	return rk_crc16(key, len) & (RK_SLOTS - 1);
}

unsigned rk_shard_slot(unsigned shard)
{
	/* rk_key_slot("{s}") for s = 0..15 (test_rkeys checks every one
	 * against the keys themselves): a mark's lane costs no CRC */
	static const unsigned short slots[RK_SHARDS] = {
	        13907, 9842,  5649, 1584, 14039, 9974,  5781, 1716,
	        14171, 10106, 247,  4310, 8373,  12436, 115,  4178,
	};
	char tag[16];
	int n;

	if (shard < RK_SHARDS)
		return slots[shard];
	n = snprintf(tag, sizeof(tag), "%u", shard);
	return rk_crc16(tag, (size_t)n) & (RK_SLOTS - 1);
}

unsigned rk_route_slot(const char *user)
{
	char key[1024];
	int n = rk_key_route(key, sizeof(key), user);

	if (n < 0) {
		/* a name that long: hash it the long way */
		size_t ul = strlen(user), pl = strlen(RK_PREFIX "route:");
		char *k = malloc(pl + ul + 1);
		unsigned slot;

		if (k == NULL)
			return 0;
		memcpy(k, RK_PREFIX "route:", pl);
		memcpy(k + pl, user, ul + 1);
		slot = rk_key_slot(k, pl + ul);
		free(k);
		return slot;
	}
	return rk_key_slot(key, (size_t)n);
}

/* snprintf into buf; -1 when it does not fit (or size is 0). */
static int fmt(char *buf, size_t size, const char *format, ...)
        __attribute__((format(printf, 3, 4)));
static int fmt(char *buf, size_t size, const char *format, ...)
{
	va_list ap;
	int n;

	if (buf == NULL || size == 0)
		return -1;
	va_start(ap, format);
	n = vsnprintf(buf, size, format, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= size) {
		buf[0] = '\0';
		return -1;
	}
	return n;
}

int rk_key_due(char *buf, size_t size, unsigned shard)
{
	return fmt(buf, size, RK_PREFIX "{%u}:due", shard);
}

int rk_key_inflight(char *buf, size_t size, unsigned shard)
{
	return fmt(buf, size, RK_PREFIX "{%u}:inflight", shard);
}

int rk_key_owner(char *buf, size_t size, unsigned shard)
{
	return fmt(buf, size, RK_PREFIX "{%u}:owner", shard);
}

int rk_key_fence(char *buf, size_t size, unsigned shard)
{
	return fmt(buf, size, RK_PREFIX "{%u}:fence", shard);
}

int rk_key_poll(char *buf, size_t size, unsigned shard)
{
	return fmt(buf, size, RK_PREFIX "{%u}:poll", shard);
}

int rk_key_state(char *buf, size_t size, const char *user)
{
	return fmt(buf, size, RK_PREFIX "{%u}:st:%s", rk_shard(user), user);
}

int rk_key_map(char *buf, size_t size, const char *user, const char *folder)
{
	return fmt(buf, size, RK_PREFIX "{%u}:map:%s:%s", rk_shard(user), user, folder);
}

int rk_key_gone(char *buf, size_t size, const char *user, const char *folder)
{
	return fmt(buf, size, RK_PREFIX "{%u}:gone:%s:%s", rk_shard(user), user, folder);
}

int rk_key_hint(char *buf, size_t size, const char *user)
{
	return fmt(buf, size, RK_PREFIX "{%u}:hint:%s", rk_shard(user), user);
}

int rk_key_last(char *buf, size_t size, const char *user)
{
	return fmt(buf, size, RK_PREFIX "{%u}:last:%s", rk_shard(user), user);
}

int rk_key_route(char *buf, size_t size, const char *user)
{
	return fmt(buf, size, RK_PREFIX "route:%s", user);
}

int rk_member(char *buf, size_t size, const char *user, const char *folder)
{
	/* The member must split back into the same pair: the user carries no
	 * tab (the split is at the first one) and neither side is empty. */
	if (user[0] == '\0' || folder[0] == '\0' || strchr(user, '\t') != NULL) {
		if (buf != NULL && size > 0)
			buf[0] = '\0';
		return -1;
	}
	return fmt(buf, size, "%s\t%s", user, folder);
}

int rk_member_split(const char *member, size_t len, const char **user_r, size_t *user_len_r,
                    const char **folder_r, size_t *folder_len_r)
{
	const char *tab = memchr(member, '\t', len);
	size_t ulen;

	if (tab == NULL)
		return -1;
	ulen = (size_t)(tab - member);
	if (ulen == 0 || ulen + 1 == len)
		return -1;
	*user_r = member;
	*user_len_r = ulen;
	*folder_r = tab + 1;
	*folder_len_r = len - ulen - 1;
	return 0;
}

/*
 * Names that are not canonical modified UTF-7 (a server that lets clients
 * create them, or 8-bit names from a client that never ENABLEd UTF8=ACCEPT)
 * are kept byte for byte: the mark still names the folder the way the
 * server's LIST does, and the daemon maps canonical names back to source
 * names by applying this function to its own LIST. Such a name can equal
 * the decoding of a valid one ("a&b" vs "a&-b"); the daemon then finds two
 * candidates and checks both, which costs a STATUS, never a lost change.
 */
int rk_folder_canon(char *buf, size_t size, const char *name, size_t len, int utf8, char sep)
{
	const char *error = NULL;
	size_t out_len = 0, first;

	if (buf == NULL || size == 0)
		return -1;
	buf[0] = '\0';
	/* No IMAP string carries a NUL, and results are C strings. */
	if (memchr(name, '\0', len) != NULL)
		return -1;
	if (!utf8 && mutf7_is_valid(name, len)) {
		if (mutf7_to_utf8_buf(name, len, buf, size, &out_len, &error) < 0) {
			buf[0] = '\0';
			return -1; /* valid input: the only failure is the size */
		}
	} else {
		if (len >= size)
			return -1;
		memcpy(buf, name, len);
		buf[len] = '\0';
		out_len = len;
	}
	/* RFC 3501 5.1: "INBOX" is case-insensitive; only the first
	 * hierarchy component is the INBOX. */
	first = out_len;
	if (sep != '\0') {
		const char *s = memchr(buf, sep, out_len);

		if (s != NULL)
			first = (size_t)(s - buf);
	}
	if (first == 5 && strncasecmp(buf, "INBOX", 5) == 0)
		memcpy(buf, "INBOX", 5);
	if (out_len > (size_t)0x7fffffff)
		return -1;
	return (int)out_len;
}

int rk_route_state_parse(const char *s, enum rk_route_state *state_r)
{
	int i;

	for (i = 0; i < RK_ROUTE_STATE_COUNT; i++) {
		if (strcmp(s, rk_route_state_names[i]) == 0) {
			*state_r = (enum rk_route_state)i;
			return 0;
		}
	}
	return -1;
}
