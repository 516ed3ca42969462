/*
 * fuzz_observe.c - libFuzzer target for the proxy's observer
 * (proxy/observe.c) behind the shared parser, driven as the relay drives
 * it.
 *
 * Input: byte 0 holds options (bit 0: tiny server-parser limits, so
 * responses stream their literals; bit 1: tiny client-parser limits; bit 2:
 * the relay sets the separator '.'; bit 3: '/'; bit 4: free the observer
 * with commands still in flight). Then records, each a
 * header byte h and up to (h & 0x7f) bytes: bit 7 set = bytes from the
 * server, clear = from the client; the records interleave the two
 * directions. A record of length 0 ends the session (client) or reads the
 * observer's state (server). Oracle: besides ASan/UBSan/LSan, the in-flight
 * count stays within PX_OBSERVE_MAX_INFLIGHT and every sink call is
 * well-formed.
 *
 * Built with clang -fsanitize=fuzzer when IMAPFERRY_FUZZ=ON; with gcc, the
 * same function is linked into fuzz_replay.c, which runs the seed corpus in
 * ctest.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "imapferry/parse.h"
#include "observe.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_mark(void *aux, const char *folder, enum rk_prio prio)
{
	(void)aux;
	if (folder == NULL || folder[0] == '\0' || (prio != RK_PRIO_HIGH && prio != RK_PRIO_LOW))
		abort();
}

static void check_hint(void *aux, const char *line)
{
	size_t tabs = 0;
	const char *p;

	(void)aux;
	for (p = line; *p != '\0'; p++)
		tabs += *p == '\t';
	if (strncmp(line, "move\t", 5) == 0 ? tabs != 5
	                                    : (strncmp(line, "rename\t", 7) != 0 || tabs != 2))
		abort();
}

static const struct px_observe_sink sink = {check_mark, check_hint};

struct drive {
	struct px_observe *o;
	struct imap_parser *cp, *sp;
	int client_raw;
};

static void feed_client(struct drive *d, const uint8_t *data, size_t len)
{
	while (len > 0) {
		struct imap_event ev;
		size_t used = 0;

		if (imap_parser_next(d->cp, data, len, &used, &ev) == IMAP_EV_ERROR && !ev.resync)
			return; /* the relay closes the session */
		data += used;
		len -= used;
		if (ev.type != IMAP_EV_MESSAGE)
			continue;
		if (ev.msg->kind == IMAP_MSG_RAW_LINE) {
			px_observe_client_line(d->o, ev.msg->text, ev.msg->text_len);
			imap_parser_set_raw(d->cp, 0);
			continue;
		}
		px_observe_client(d->o, ev.msg);
		if (strcmp(ev.msg->name, "IDLE") == 0 || strcmp(ev.msg->name, "AUTHENTICATE") == 0)
			imap_parser_set_raw(d->cp, 1);
	}
}

static void feed_server(struct drive *d, const uint8_t *data, size_t len)
{
	while (len > 0) {
		struct imap_event ev;
		size_t used = 0;

		if (imap_parser_next(d->sp, data, len, &used, &ev) == IMAP_EV_ERROR && !ev.resync)
			return;
		data += used;
		len -= used;
		if (ev.type != IMAP_EV_MESSAGE)
			continue;
		if (ev.msg->kind == IMAP_MSG_TAGGED && ev.msg->status != IMAP_STATUS_OK)
			imap_parser_cancel_literal(d->cp);
		px_observe_server(d->o, ev.msg);
		if (px_observe_inflight(d->o) > PX_OBSERVE_MAX_INFLIGHT)
			abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct imap_limits tiny = {.max_line = 200,
	                           .max_inline_literal = 8,
	                           .max_literal = 4096,
	                           .max_msg = 1000,
	                           .max_depth = 6,
	                           .max_args = 40};
	struct drive d;
	size_t off = 1;

	if (size < 1)
		return 0;
	d.o = px_observe_new(&sink, NULL);
	d.cp = imap_parser_new(IMAP_PARSE_CLIENT, (data[0] & 2) ? &tiny : NULL);
	d.sp = imap_parser_new(IMAP_PARSE_SERVER, (data[0] & 1) ? &tiny : NULL);
	if (data[0] & 4)
		px_observe_set_separator(d.o, '.');
	else if (data[0] & 8)
		px_observe_set_separator(d.o, '/');

	while (off < size) {
		unsigned h = data[off++];
		size_t n = h & 0x7fu;

		if (n > size - off)
			n = size - off;
		if (n == 0) {
			if (h & 0x80u) {
				const char *sel = px_observe_selected(d.o);

				if (sel != NULL && sel[0] == '\0')
					abort();
			} else {
				px_observe_disconnect(d.o);
				if (px_observe_inflight(d.o) != 0 ||
				    px_observe_selected(d.o) != NULL)
					abort();
			}
			continue;
		}
		if (h & 0x80u)
			feed_server(&d, data + off, n);
		else
			feed_client(&d, data + off, n);
		if (px_observe_inflight(d.o) > PX_OBSERVE_MAX_INFLIGHT)
			abort();
		off += n;
	}
	if (!(data[0] & 16))
		px_observe_disconnect(d.o);
	px_observe_free(&d.o);
	imap_parser_free(&d.cp);
	imap_parser_free(&d.sp);
	return 0;
}
