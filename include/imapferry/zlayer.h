/*
 * zlayer.h - the DEFLATE layer of IMAP COMPRESS=DEFLATE (RFC 4978) on
 * evbuffers: raw deflate (RFC 1951, no zlib or gzip header) in each
 * direction, every write ended by a sync flush so that the peer can read
 * a whole command or response without waiting for more.
 *
 * Pure (no I/O): imap_client (client.c) puts it between its parser and
 * the connection's buffers once the server has answered COMPRESS with OK.
 * Memory is bounded: zlib's window and state (about 260 KiB to deflate
 * with the default memLevel, about 40 KiB to inflate), and
 * zlayer_inflate() stops after max_out bytes of output.
 */
#ifndef IMAPFERRY_ZLAYER_H
#define IMAPFERRY_ZLAYER_H

#include <stddef.h>
#include <stdint.h>

struct evbuffer;

/* One direction of the layer. */
enum zlayer_dir {
	ZLAYER_DEFLATE, /* what we send */
	ZLAYER_INFLATE, /* what we receive */
	ZLAYER_DIR_COUNT
};

struct zlayer;

/* A new stream for dir; level is zlib's 0..9 or -1 (its default, 6), used
 * for ZLAYER_DEFLATE only. Returns NULL with *error_r (static) when zlib
 * cannot be initialised (out of memory) or level is out of range. Free
 * with zlayer_free(). */
struct zlayer *zlayer_new(enum zlayer_dir dir, int level, const char **error_r);
/* Accepts NULL, sets *z = NULL. */
void zlayer_free(struct zlayer **z);

/*
 * ZLAYER_DEFLATE: compresses len bytes of data and adds the result to out.
 * With flush set, ends with a sync flush (RFC 4978 section 4: the peer
 * gets everything written so far); without, zlib may keep up to a block
 * back (for a literal whose end follows). Returns 0, or -1 on a zlib
 * error (the stream is then unusable).
 */
int zlayer_deflate(struct zlayer *z, const void *data, size_t len, int flush, struct evbuffer *out);
/* zlayer_deflate() of all of in (drained), with a sync flush. */
int zlayer_deflate_buffer(struct zlayer *z, struct evbuffer *in, struct evbuffer *out);

/*
 * ZLAYER_INFLATE: decompresses bytes from in (draining what it consumed)
 * into out, stopping once at least max_out bytes were produced (it may
 * produce up to 16 KiB more) or in is empty or holds only part of a block.
 * Returns the number of bytes added to out (0: nothing decodable yet), or
 * -1 with *error_r (static) when the input is not a valid deflate stream
 * or the peer ended it (RFC 4978 streams never end).
 */
long zlayer_inflate(struct zlayer *z, struct evbuffer *in, struct evbuffer *out, size_t max_out,
                    const char **error_r);

/* Bytes given to and produced by the stream since zlayer_new() (for
 * deflate: plain in, compressed out; for inflate: compressed in, plain out). */
void zlayer_counts(const struct zlayer *z, uint64_t *in_r, uint64_t *out_r);

#endif
