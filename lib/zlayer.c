/* zlayer.c - raw DEFLATE on evbuffers for COMPRESS=DEFLATE; see
 * include/imapferry/zlayer.h */
#include "imapferry/zlayer.h"

#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <zlib.h>

/* Output is produced into evbuffer space reserved this many bytes at a time. */
#define ZLAYER_CHUNK 16384u
/* Raw deflate (no zlib header or trailer), zlib's largest window. */
#define ZLAYER_WBITS (-15)

struct zlayer {
	enum zlayer_dir dir;
	z_stream zs;
	int broken;
	uint64_t in, out;
};

struct zlayer *zlayer_new(enum zlayer_dir dir, int level, const char **error_r)
{
	struct zlayer *z;
	int r;

	if (dir != ZLAYER_DEFLATE && dir != ZLAYER_INFLATE) {
		*error_r = "bad direction";
		return NULL;
	}
	if (level < -1 || level > 9) {
		*error_r = "compression level out of range (0..9, or -1)";
		return NULL;
	}
	z = calloc(1, sizeof(*z));
	if (z == NULL) {
		*error_r = "out of memory";
		return NULL;
	}
	z->dir = dir;
	if (dir == ZLAYER_DEFLATE)
		r = deflateInit2(&z->zs, level, Z_DEFLATED, ZLAYER_WBITS, 8, Z_DEFAULT_STRATEGY);
	else
		r = inflateInit2(&z->zs, ZLAYER_WBITS);
	if (r != Z_OK) {
		free(z);
		*error_r = "zlib initialisation failed";
		return NULL;
	}
	return z;
}

void zlayer_free(struct zlayer **zp)
{
	struct zlayer *z = *zp;

	if (z == NULL)
		return;
	*zp = NULL;
	if (z->dir == ZLAYER_DEFLATE)
		deflateEnd(&z->zs);
	else
		inflateEnd(&z->zs);
	free(z);
}

void zlayer_counts(const struct zlayer *z, uint64_t *in_r, uint64_t *out_r)
{
	*in_r = z->in;
	*out_r = z->out;
}

/* Runs deflate() over [data, data+len) with mode (Z_NO_FLUSH or
 * Z_SYNC_FLUSH) until zlib wants no more output space. */
static int deflate_run(struct zlayer *z, const void *data, size_t len, int mode,
                       struct evbuffer *out)
{
	z->zs.next_in = (Bytef *)(uintptr_t)data;
	z->in += len;
	while (len > 0 || mode != Z_NO_FLUSH) {
		struct evbuffer_iovec v;
		uInt take = len > 0x40000000u ? 0x40000000u : (uInt)len;
		int r;

		if (evbuffer_reserve_space(out, ZLAYER_CHUNK, &v, 1) < 1)
			return -1;
		z->zs.avail_in = take;
		z->zs.next_out = v.iov_base;
		z->zs.avail_out = ZLAYER_CHUNK;
		r = deflate(&z->zs, mode);
		if (r != Z_OK && r != Z_BUF_ERROR) {
			z->broken = 1;
			return -1;
		}
		len -= take - z->zs.avail_in;
		v.iov_len = ZLAYER_CHUNK - z->zs.avail_out;
		z->out += v.iov_len;
		if (evbuffer_commit_space(out, &v, 1) < 0)
			return -1;
		/* Done when zlib had room to spare: it has taken all input
		 * and, for a flush, written all it holds. */
		if (len == 0 && z->zs.avail_out != 0)
			break;
	}
	return 0;
}

int zlayer_deflate(struct zlayer *z, const void *data, size_t len, int flush, struct evbuffer *out)
{
	if (z->dir != ZLAYER_DEFLATE || z->broken)
		return -1;
	if (len > 0 && deflate_run(z, data, len, Z_NO_FLUSH, out) < 0)
		return -1;
	return flush ? deflate_run(z, NULL, 0, Z_SYNC_FLUSH, out) : 0;
}

int zlayer_deflate_buffer(struct zlayer *z, struct evbuffer *in, struct evbuffer *out)
{
	if (z->dir != ZLAYER_DEFLATE || z->broken)
		return -1;
	while (evbuffer_get_length(in) > 0) {
		struct evbuffer_iovec v;

		if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
			return -1;
		if (deflate_run(z, v.iov_base, v.iov_len, Z_NO_FLUSH, out) < 0)
			return -1;
		evbuffer_drain(in, v.iov_len);
	}
	return deflate_run(z, NULL, 0, Z_SYNC_FLUSH, out);
}

long zlayer_inflate(struct zlayer *z, struct evbuffer *in, struct evbuffer *out, size_t max_out,
                    const char **error_r)
{
	long produced = 0;

	if (z->dir != ZLAYER_INFLATE || z->broken) {
		*error_r = "the compressed stream is unusable after an earlier error";
		return -1;
	}
	while ((size_t)produced < max_out && evbuffer_get_length(in) > 0) {
		struct evbuffer_iovec src, dst;
		size_t used, made;
		int r;

		if (evbuffer_peek(in, -1, NULL, &src, 1) < 1 ||
		    evbuffer_reserve_space(out, ZLAYER_CHUNK, &dst, 1) < 1) {
			*error_r = "out of memory";
			return -1;
		}
		z->zs.next_in = src.iov_base;
		z->zs.avail_in = src.iov_len > 0x40000000u ? 0x40000000u : (uInt)src.iov_len;
		z->zs.next_out = dst.iov_base;
		z->zs.avail_out = ZLAYER_CHUNK;
		used = z->zs.avail_in;
		r = inflate(&z->zs, Z_SYNC_FLUSH);
		used -= z->zs.avail_in;
		made = ZLAYER_CHUNK - z->zs.avail_out;
		dst.iov_len = made;
		evbuffer_commit_space(out, &dst, 1);
		evbuffer_drain(in, used);
		z->in += used;
		z->out += made;
		produced += (long)made;
		if (r == Z_STREAM_END) {
			z->broken = 1;
			*error_r = "the peer ended the compressed stream";
			return -1;
		}
		if (r != Z_OK && r != Z_BUF_ERROR) {
			z->broken = 1;
			*error_r = r == Z_DATA_ERROR ? "invalid compressed data" : "inflate failed";
			return -1;
		}
		if (used == 0 && made == 0)
			break; /* an incomplete block: wait for more input */
	}
	return produced;
}
