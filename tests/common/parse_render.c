/* parse_render.c - see parse_render.h */
#include "parse_render.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct sbuf {
	char *s;
	size_t len, cap;
};

static void sb_add(struct sbuf *b, const char *data, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		b->cap = (b->len + n + 1) * 2;
		b->s = realloc(b->s, b->cap);
		if (b->s == NULL)
			abort();
	}
	memcpy(b->s + b->len, data, n);
	b->len += n;
	b->s[b->len] = '\0';
}

static void sb_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
	char tmp[512];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	sb_add(b, tmp, n < (int)sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
}

/* Printable ASCII as is, everything else (and '\\') as \xNN. */
static void sb_escaped(struct sbuf *b, const char *s, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c >= 0x20 && c < 0x7f && c != '\\')
			sb_add(b, s + i, 1);
		else
			sb_printf(b, "\\x%02x", c);
	}
}

/* Streamed literal contents, in the order they appeared. */
struct streamed {
	struct sbuf *bufs;
	size_t n, next;
};

static void render_args(struct sbuf *b, const struct imap_arg *a, struct streamed *st)
{
	int first = 1;

	for (; a != NULL; a = a->next) {
		if (!first)
			sb_add(b, " ", 1);
		first = 0;
		switch (a->type) {
		case IMAP_ARG_ATOM:
			sb_escaped(b, a->str, a->len);
			break;
		case IMAP_ARG_STRING:
			sb_add(b, "\"", 1);
			sb_escaped(b, a->str, a->len);
			sb_add(b, "\"", 1);
			break;
		case IMAP_ARG_LITERAL:
			sb_printf(b, "{%s%zu:", (a->lit_flags & IMAP_LIT_BINARY) ? "~" : "",
			          a->len);
			sb_escaped(b, a->str, a->len);
			sb_add(b, "}", 1);
			break;
		case IMAP_ARG_LITERAL_STREAMED:
			sb_printf(b, "{S%llu:", (unsigned long long)a->lit_size);
			if (st->next < st->n) {
				sb_escaped(b, st->bufs[st->next].s, st->bufs[st->next].len);
				st->next++;
			}
			sb_add(b, "}", 1);
			break;
		case IMAP_ARG_LIST:
			sb_add(b, "(", 1);
			render_args(b, a->child, st);
			sb_add(b, ")", 1);
			break;
		case IMAP_ARG_TYPE_COUNT:
			break;
		}
	}
}

static void render_msg(struct sbuf *b, const struct imap_msg *m, struct streamed *st)
{
	static const char *const kinds[] = {"T", "*", "+", "C", "R"};

	sb_add(b, kinds[m->kind], 1);
	if (m->tag != NULL)
		sb_printf(b, " %s", m->tag);
	if (m->uid)
		sb_add(b, " UID", 4);
	if (m->has_number)
		sb_printf(b, " %u", m->number);
	if (m->name != NULL)
		sb_printf(b, " %s", m->name);
	if (m->code != NULL) {
		sb_printf(b, " [%s", m->code);
		if (m->code_args != NULL) {
			sb_add(b, " ", 1);
			render_args(b, m->code_args, st);
		} else if (m->code_raw_len > strlen(m->code)) {
			sb_add(b, " ~", 2);
			sb_escaped(b, m->code_raw, m->code_raw_len);
		}
		sb_add(b, "]", 1);
	}
	if (m->args != NULL) {
		sb_add(b, " ", 1);
		render_args(b, m->args, st);
	}
	if (m->text != NULL) {
		sb_add(b, " |", 2);
		sb_escaped(b, m->text, m->text_len);
	}
	sb_add(b, "\n", 1);
}

char *parse_render(enum imap_parse_mode mode, const struct imap_limits *limits, const char *data,
                   size_t len, const size_t *cuts, size_t ncuts)
{
	struct imap_parser *p = imap_parser_new(mode, limits);
	struct sbuf out = {0}, cur = {0};
	struct streamed st = {0};
	size_t off = 0, ci = 0;
	int raw_next = 0, errors = 0;
	uint64_t wire = 0;

	sb_add(&out, "", 0);
	while (off < len) {
		size_t chunk = len - off;
		size_t pos = 0;

		if (ncuts > 0 && cuts[ci % ncuts] > 0 && cuts[ci % ncuts] < chunk)
			chunk = cuts[ci % ncuts];
		ci++;
		for (;;) {
			struct imap_event ev;
			size_t used = 0;

			imap_parser_next(p, data + off + pos, chunk - pos, &used, &ev);
			pos += used;
			if (ev.type == IMAP_EV_NEED_MORE)
				break;
			switch (ev.type) {
			case IMAP_EV_MESSAGE:
				st.next = 0;
				wire += ev.msg->wire_size;
				render_msg(&out, ev.msg, &st);
				for (size_t i = 0; i < st.n; i++)
					free(st.bufs[i].s);
				free(st.bufs);
				memset(&st, 0, sizeof(st));
				if (raw_next) {
					raw_next = 0;
					imap_parser_set_raw(p, 0);
				}
				if (ev.msg->kind == IMAP_MSG_COMMAND &&
				    (strcmp(ev.msg->name, "IDLE") == 0 ||
				     strcmp(ev.msg->name, "AUTHENTICATE") == 0)) {
					imap_parser_set_raw(p, 1);
					raw_next = 1;
				}
				break;
			case IMAP_EV_LITERAL_START:
				if (!ev.lit_inline) {
					memset(&cur, 0, sizeof(cur));
					sb_add(&cur, "", 0);
				}
				break;
			case IMAP_EV_LITERAL_DATA:
				sb_add(&cur, ev.data, ev.len);
				break;
			case IMAP_EV_LITERAL_END:
				st.bufs = realloc(st.bufs, sizeof(*st.bufs) * (st.n + 1));
				if (st.bufs == NULL)
					abort();
				st.bufs[st.n++] = cur;
				memset(&cur, 0, sizeof(cur));
				break;
			case IMAP_EV_ERROR:
				errors++;
				sb_printf(&out, "ERROR%s: %s\n", ev.resync ? "" : "(fatal)",
				          ev.error);
				for (size_t i = 0; i < st.n; i++)
					free(st.bufs[i].s);
				free(st.bufs);
				memset(&st, 0, sizeof(st));
				free(cur.s);
				memset(&cur, 0, sizeof(cur));
				if (!ev.resync) {
					imap_parser_free(&p);
					return out.s;
				}
				break;
			default:
				break;
			}
		}
		off += chunk;
	}
	if (imap_parser_busy(p))
		sb_printf(&out, "INCOMPLETE\n");
	else if (errors == 0 && wire != len)
		sb_printf(&out, "WIRE SIZE %llu != %zu\n", (unsigned long long)wire, len);
	for (size_t i = 0; i < st.n; i++)
		free(st.bufs[i].s);
	free(st.bufs);
	free(cur.s);
	imap_parser_free(&p);
	return out.s;
}
