/*
 * parse.c - incremental IMAP parser; see include/imapferry/parse.h.
 *
 * Two layers in one state machine:
 *  - framing: bytes are gathered into lines (LF-terminated, a CR before it
 *    is dropped) and literals, which are counted out, never searched;
 *  - tokens: each complete line is tokenized from where the message left
 *    off, so a list opened before a literal goes on after it (CATENATE,
 *    MULTIAPPEND, FETCH responses with several bodies).
 *
 * Whether a line ends in a literal is decided by the tokenizer, not by a
 * blind look at the line's tail: "a NO mailbox foo{5}" (resp-text, where the
 * grammar has no literal) must not make us swallow 5 bytes of the next
 * response. Only after a syntax error, when the grammar is lost, do we fall
 * back to the tail check to skip the peer's message whole (resync).
 *
 * Grammar references: RFC 3501 section 9 / RFC 9051 section 9 (response,
 * command, resp-text, resp-text-code, literal), RFC 7888 (literal+/-),
 * RFC 3516 (literal8).
 */
#include "imapferry/parse.h"
#include "imapferry/xalloc.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

const char *const imap_status_names[IMAP_STATUS_COUNT] = {"", "OK", "NO", "BAD", "BYE", "PREAUTH"};
const char *const imap_msg_kind_names[IMAP_MSG_KIND_COUNT] = {"tagged", "untagged", "continuation",
                                                              "command", "raw"};

/* --- arena: per-message storage that never moves what it handed out --- */

struct arena_block {
	struct arena_block *next;
	size_t size, used;
	char data[];
};

struct arena {
	struct arena_block *first, *cur;
};

#define ARENA_MIN_BLOCK 4096

static void *arena_alloc(struct arena *a, size_t n)
{
	struct arena_block *b = a->cur;
	void *ret;

	n = (n + 7) & ~(size_t)7;
	if (b == NULL || b->size - b->used < n) {
		if (b != NULL && b->next != NULL && b->next->size >= n) {
			b = b->next; /* reuse a block kept from a previous message */
			b->used = 0;
		} else {
			size_t size = n > ARENA_MIN_BLOCK ? n : ARENA_MIN_BLOCK;
			struct arena_block *nb = xmalloc(sizeof(*nb) + size);

			nb->size = size;
			nb->used = 0;
			if (b == NULL) {
				nb->next = NULL;
				a->first = nb;
			} else {
				nb->next = b->next;
				b->next = nb;
			}
			b = nb;
		}
		a->cur = b;
	}
	ret = b->data + b->used;
	b->used += n;
	return ret;
}

/* Keeps the first block (and small ones after it) for the next message.
 * Only the blocks this message used (first .. cur) are visited: the kept
 * ones after cur were checked at an earlier reset, and arena_alloc() clears
 * a kept block when it takes it again. */
static void arena_reset(struct arena *a)
{
	struct arena_block *b, *next, **keep;

	if (a->first == NULL)
		return;
	a->first->used = 0;
	if (a->cur != a->first) {
		keep = &a->first->next;
		for (b = a->first->next; b != NULL; b = next) {
			int last = b == a->cur;

			next = b->next;
			if (b->size > 4 * ARENA_MIN_BLOCK) {
				*keep = next;
				free(b);
			} else {
				b->used = 0;
				keep = &b->next;
			}
			if (last)
				break;
		}
	}
	a->cur = a->first;
}

static void arena_free(struct arena *a)
{
	struct arena_block *b, *next;

	for (b = a->first; b != NULL; b = next) {
		next = b->next;
		free(b);
	}
	a->first = a->cur = NULL;
}

/* --- parser state --- */

enum pstate {
	ST_LINE,        /* gathering a line */
	ST_SKIP_LINE,   /* an over-long line: dropping bytes up to LF */
	ST_LITERAL,     /* counting out literal bytes */
	ST_LITERAL_END, /* a streamed literal is complete: report it */
	ST_FATAL,       /* stream lost */
};

enum phase {
	PH_START, /* next line starts a message */
	PH_ARGS,  /* next line continues the argument list after a literal */
};

struct frame {
	struct imap_arg *list; /* NULL at the top level */
	struct imap_arg **tailp;
	unsigned *countp;
	struct imap_arg *last;
};

#define TAIL_KEEP 32

struct imap_parser {
	enum imap_parse_mode mode;
	struct imap_limits lim;
	enum pstate state;
	enum phase phase;
	int raw;
	int in_msg;

	char *line;
	size_t line_len, line_cap;
	char tail[TAIL_KEEP];
	size_t tail_len;

	struct arena arena;
	struct imap_msg msg;
	size_t msg_bytes;
	unsigned nargs;

	struct frame *stack;
	unsigned depth;

	uint64_t lit_remaining;
	uint64_t lit_size;
	unsigned lit_flags;
	int lit_inline;
	char *lit_dst;
	struct imap_arg *lit_arg;
	const struct imap_arg *lit_item;

	int discard;
	char error[200];
};

void imap_limits_default(struct imap_limits *l, enum imap_parse_mode mode)
{
	if (mode == IMAP_PARSE_SERVER) {
		/* We read a server: trust it more. SEARCH and LIST-STATUS
		 * answers for big mailboxes are long single lines. */
		l->max_line = 8u << 20;
		l->max_inline_literal = 64u << 10;
		l->max_literal = 0;
		l->max_msg = 32u << 20;
		l->max_depth = 64;
		l->max_args = 4000000;
	} else {
		/* We read a client (proxy): as strict as Dovecot's 64 KiB
		 * imap_max_line_length; message bodies are streamed. */
		l->max_line = 64u << 10;
		l->max_inline_literal = 8u << 10;
		l->max_literal = 0;
		l->max_msg = 256u << 10;
		l->max_depth = 32;
		l->max_args = 10000;
	}
}

struct imap_parser *imap_parser_new(enum imap_parse_mode mode, const struct imap_limits *limits)
{
	struct imap_parser *p = calloc(1, sizeof(*p));

	if (p == NULL)
		abort();
	p->mode = mode;
	if (limits != NULL)
		p->lim = *limits;
	else
		imap_limits_default(&p->lim, mode);
	if (p->lim.max_depth == 0)
		p->lim.max_depth = 1;
	p->stack = xmalloc(sizeof(*p->stack) * (p->lim.max_depth + 1));
	return p;
}

void imap_parser_free(struct imap_parser **pp)
{
	struct imap_parser *p = *pp;

	if (p == NULL)
		return;
	arena_free(&p->arena);
	free(p->line);
	free(p->stack);
	free(p);
	*pp = NULL;
}

void imap_parser_set_raw(struct imap_parser *p, int raw)
{
	p->raw = raw;
}

int imap_parser_busy(const struct imap_parser *p)
{
	return p->in_msg || p->line_len > 0 || p->state != ST_LINE;
}

const struct imap_arg *imap_parser_literal_item(const struct imap_parser *p)
{
	return p->lit_item;
}

static int set_error(struct imap_parser *p, const char *fmt, ...)
        __attribute__((format(printf, 2, 3)));

static int set_error(struct imap_parser *p, const char *fmt, ...)
{
	va_list ap;

	if (p->discard)
		return -1; /* keep the first error */
	va_start(ap, fmt);
	vsnprintf(p->error, sizeof(p->error), fmt, ap);
	va_end(ap);
	p->discard = 1;
	return -1;
}

static void msg_begin(struct imap_parser *p)
{
	arena_reset(&p->arena);
	memset(&p->msg, 0, sizeof(p->msg));
	p->msg_bytes = 0;
	p->nargs = 0;
	p->depth = 0;
	p->stack[0].list = NULL;
	p->stack[0].tailp = &p->msg.args;
	p->stack[0].countp = &p->msg.argc;
	p->stack[0].last = NULL;
	p->discard = 0;
	p->error[0] = '\0';
	p->lit_item = NULL;
	p->in_msg = 1;
	p->phase = PH_START;
}

/* Storage for one message, bounded by max_msg. NULL = over the limit. */
static inline void *msg_alloc(struct imap_parser *p, size_t n)
{
	struct arena_block *b = p->arena.cur;
	size_t rn;

	if (n > p->lim.max_msg || p->msg_bytes > p->lim.max_msg - n) {
		set_error(p, "message exceeds %zu bytes", p->lim.max_msg);
		return NULL;
	}
	p->msg_bytes += n;
	rn = (n + 7) & ~(size_t)7;
	if (b != NULL && b->size - b->used >= rn) {
		void *ret = b->data + b->used;

		b->used += rn;
		return ret;
	}
	return arena_alloc(&p->arena, n);
}

static inline char *msg_strdup(struct imap_parser *p, const char *s, size_t len, int upper)
{
	char *d = msg_alloc(p, len + 1);
	size_t i;

	if (d == NULL)
		return NULL;
	if (upper) {
		for (i = 0; i < len; i++)
			d[i] = (char)toupper((unsigned char)s[i]);
	} else {
		memcpy(d, s, len);
	}
	d[len] = '\0';
	return d;
}

static inline struct imap_arg *arg_add(struct imap_parser *p, enum imap_arg_type type)
{
	struct frame *f = &p->stack[p->depth];
	struct imap_arg *a;

	if (p->nargs >= p->lim.max_args) {
		set_error(p, "more than %u arguments", p->lim.max_args);
		return NULL;
	}
	a = msg_alloc(p, sizeof(*a));
	if (a == NULL)
		return NULL;
	memset(a, 0, sizeof(*a));
	a->type = type;
	*f->tailp = a;
	f->tailp = &a->next;
	(*f->countp)++;
	f->last = a;
	p->nargs++;
	return a;
}

static int is_ctl(unsigned char c)
{
	return c < 0x20 || c == 0x7f;
}

/* Bytes that end or interrupt an atom in tok_line(): controls, SP, '(',
 * ')', '"', '[' and ']'. Everything else is scanned over in one loop. */
#define CC_CTL   0x01u
#define CC_STOP  0x02u /* SP ( ) */
#define CC_QUOTE 0x04u
#define CC_BRACK 0x08u /* [ ] */

#define CCV(c)                                                                                     \
	((c) < 0x20 || (c) == 0x7f                ? CC_CTL                                         \
	 : (c) == ' ' || (c) == '(' || (c) == ')' ? CC_STOP                                        \
	 : (c) == '"'                             ? CC_QUOTE                                       \
	 : (c) == '[' || (c) == ']'               ? CC_BRACK                                       \
	                                          : 0u)
#define CC4(c)  CCV(c), CCV((c) + 1), CCV((c) + 2), CCV((c) + 3)
#define CC16(c) CC4(c), CC4((c) + 4), CC4((c) + 8), CC4((c) + 12)
#define CC64(c) CC16(c), CC16((c) + 16), CC16((c) + 32), CC16((c) + 48)

static const unsigned char char_class[256] = {CC64(0), CC64(64), CC64(128), CC64(192)};

/* Quoted string starting at s[*pos] == '"'. RFC 3501: quoted-specials are
 * '"' and '\\', escaped with '\\'; CR, LF and NUL are not allowed. */
static int tok_quoted(struct imap_parser *p, const char *s, size_t len, size_t *pos)
{
	size_t i = *pos + 1, n = 0, j;
	struct imap_arg *a;
	char *d;

	for (; i < len && s[i] != '"'; i++, n++) {
		if (s[i] == '\0')
			return set_error(p, "NUL in quoted string");
		if (s[i] == '\\' && ++i == len)
			break;
	}
	if (i >= len)
		return set_error(p, "unterminated quoted string");
	a = arg_add(p, IMAP_ARG_STRING);
	if (a == NULL || (d = msg_alloc(p, n + 1)) == NULL)
		return -1;
	for (j = *pos + 1, n = 0; j < i; j++) {
		if (s[j] == '\\')
			j++;
		d[n++] = s[j];
	}
	d[n] = '\0';
	a->str = d;
	a->len = n;
	*pos = i + 1;
	return 0;
}

/* Literal marker at s[*pos] ('{' or "~{"), which must end the line:
 * literal = "{" number64 ["+"|"-"] "}" CRLF. Returns 1 (a literal follows). */
static int tok_literal(struct imap_parser *p, const char *s, size_t len, size_t pos)
{
	unsigned flags = 0;
	uint64_t size = 0;
	size_t ndigits = 0;

	if (s[pos] == '~') {
		flags |= IMAP_LIT_BINARY;
		pos++;
	}
	pos++; /* '{' */
	for (; pos < len && s[pos] >= '0' && s[pos] <= '9'; pos++, ndigits++) {
		if (size > (UINT64_MAX - 9) / 10)
			return set_error(p, "literal size overflows");
		size = size * 10 + (uint64_t)(s[pos] - '0');
	}
	if (ndigits == 0)
		return set_error(p, "bad literal size");
	if (pos < len && s[pos] == '+') {
		flags |= IMAP_LIT_PLUS;
		pos++;
	} else if (pos < len && s[pos] == '-') {
		flags |= IMAP_LIT_MINUS;
		pos++;
	} else {
		flags |= IMAP_LIT_SYNC;
	}
	if (pos >= len || s[pos] != '}')
		return set_error(p, "bad literal marker");
	if (pos + 1 != len)
		return set_error(p, "literal marker not at end of line");
	if (p->lim.max_literal != 0 && size > p->lim.max_literal) {
		set_error(p, "literal of %llu bytes exceeds the limit of %llu",
		          (unsigned long long)size, (unsigned long long)p->lim.max_literal);
		p->lit_size = size;
		p->lit_flags = flags;
		return 1;
	}
	p->lit_size = size;
	p->lit_flags = flags;
	return 1;
}

/*
 * Tokenizes s[pos..len) into the open list. code_mode: inside a
 * resp-text-code (no literals). Returns 0 at line end, 1 when the line ends
 * with a literal marker (p->lit_size/lit_flags set), -1 on error.
 */
static int tok_line(struct imap_parser *p, const char *s, size_t len, size_t pos, int code_mode)
{
	while (pos < len) {
		unsigned char c = (unsigned char)s[pos];
		struct imap_arg *a;
		size_t start;
		int bdepth;

		if (c == ' ') {
			pos++;
			continue;
		}
		if (c == '(') {
			if (p->depth >= p->lim.max_depth)
				return set_error(p, "lists nested deeper than %u",
				                 p->lim.max_depth);
			a = arg_add(p, IMAP_ARG_LIST);
			if (a == NULL)
				return -1;
			p->depth++;
			p->stack[p->depth].list = a;
			p->stack[p->depth].tailp = &a->child;
			p->stack[p->depth].countp = &a->count;
			p->stack[p->depth].last = NULL;
			pos++;
			continue;
		}
		if (c == ')') {
			if (p->depth == 0)
				return set_error(p, "unexpected ')'");
			p->depth--;
			pos++;
			continue;
		}
		if (c == '"') {
			if (tok_quoted(p, s, len, &pos) < 0)
				return -1;
			continue;
		}
		if (c == '{' || (c == '~' && pos + 1 < len && s[pos + 1] == '{')) {
			if (code_mode)
				return set_error(p, "literal in response code");
			return tok_literal(p, s, len, pos);
		}
		/* atom, possibly with a [section] that may hold spaces and
		 * parentheses: BODY[HEADER.FIELDS (DATE FROM)]<0.100> */
		start = pos;
		bdepth = 0;
		for (;;) {
			unsigned cc;

			while (pos < len && char_class[(unsigned char)s[pos]] == 0)
				pos++;
			if (pos >= len)
				break;
			c = (unsigned char)s[pos];
			cc = char_class[c];
			if (cc & CC_CTL)
				return set_error(p, "control character 0x%02x in atom", c);
			if (bdepth > 0) {
				if (c == '[')
					bdepth++;
				else if (c == ']')
					bdepth--;
				pos++;
				continue;
			}
			if (cc & CC_STOP)
				break;
			if (cc & CC_QUOTE)
				return set_error(p, "quote inside atom");
			if (c == '[')
				bdepth++;
			pos++;
		}
		if (bdepth > 0)
			return set_error(p, "unterminated '['");
		a = arg_add(p, IMAP_ARG_ATOM);
		if (a == NULL || (a->str = msg_strdup(p, s + start, pos - start, 0)) == NULL)
			return -1;
		a->len = pos - start;
	}
	return 0;
}

/* Reads an atom-like word (tag, name) up to SP or end. */
static size_t word_end(const char *s, size_t len, size_t pos)
{
	while (pos < len && s[pos] != ' ')
		pos++;
	return pos;
}

static int all_digits(const char *s, size_t len)
{
	size_t i;

	if (len == 0)
		return 0;
	for (i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return 0;
	}
	return 1;
}

static enum imap_status status_of(const char *s, size_t len)
{
	int i;

	for (i = 1; i < IMAP_STATUS_COUNT; i++) {
		if (strlen(imap_status_names[i]) == len &&
		    strncasecmp(s, imap_status_names[i], len) == 0)
			return (enum imap_status)i;
	}
	return IMAP_STATUS_NONE;
}

/* Finds the ']' closing a resp-text-code that starts after s[pos] == '[',
 * skipping quoted strings and nested brackets. Returns its index or len. */
static size_t code_end(const char *s, size_t len, size_t pos)
{
	int depth = 0, quoted = 0;

	for (pos++; pos < len; pos++) {
		if (quoted) {
			if (s[pos] == '\\')
				pos++;
			else if (s[pos] == '"')
				quoted = 0;
		} else if (s[pos] == '"') {
			quoted = 1;
		} else if (s[pos] == '[') {
			depth++;
		} else if (s[pos] == ']') {
			if (depth-- == 0)
				return pos;
		}
	}
	return len;
}

/* resp-text = ["[" resp-text-code "]" SP] text (RFC 3501 section 9). */
static int parse_resp_text(struct imap_parser *p, const char *s, size_t len, size_t pos)
{
	if (pos < len && s[pos] == ' ')
		pos++;
	if (pos < len && s[pos] == '[') {
		size_t e = code_end(s, len, pos);

		if (e < len) {
			const char *c = s + pos + 1;
			size_t clen = e - pos - 1, nlen = word_end(c, clen, 0);

			p->msg.code = msg_strdup(p, c, nlen, 1);
			p->msg.code_raw = msg_strdup(p, c, clen, 0);
			p->msg.code_raw_len = clen;
			if (p->msg.code == NULL || p->msg.code_raw == NULL)
				return -1;
			if (nlen < clen) {
				/* Arguments are a bonus: an odd code keeps its raw text. */
				p->stack[0].tailp = &p->msg.code_args;
				p->stack[0].countp = &p->msg.code_argc;
				p->stack[0].last = NULL;
				if (tok_line(p, c, clen, nlen + 1, 1) < 0 || p->depth != 0) {
					p->discard = 0;
					p->error[0] = '\0';
					p->msg.code_args = NULL;
					p->msg.code_argc = 0;
					p->depth = 0;
				}
				p->stack[0].tailp = &p->msg.args;
				p->stack[0].countp = &p->msg.argc;
				p->stack[0].last = NULL;
			}
			pos = e + 1;
			if (pos < len && s[pos] == ' ')
				pos++;
		}
	}
	p->msg.text = msg_strdup(p, s + pos, len - pos, 0);
	p->msg.text_len = len - pos;
	return p->msg.text == NULL ? -1 : 0;
}

/*
 * The first line of a message: tag and name, then resp-text or arguments.
 * Returns like tok_line(); *pos_r is where arguments start when 2 is
 * returned (meaning: go on with tok_line).
 */
static int parse_head(struct imap_parser *p, const char *s, size_t len, size_t *pos_r)
{
	size_t pos = 0, e;
	enum imap_status st;

	if (p->raw) {
		p->msg.kind = IMAP_MSG_RAW_LINE;
		p->msg.text = msg_strdup(p, s, len, 0);
		p->msg.text_len = len;
		return p->msg.text == NULL ? -1 : 0;
	}
	if (len == 0)
		return set_error(p, "empty line");
	if (memchr(s, '\0', len) != NULL)
		return set_error(p, "NUL in line");

	if (p->mode == IMAP_PARSE_SERVER && s[0] == '+') {
		/* continue-req = "+" SP (resp-text / base64); tolerate no SP */
		p->msg.kind = IMAP_MSG_CONTINUATION;
		pos = 1;
		if (pos < len && s[pos] == ' ')
			pos++;
		p->msg.text = msg_strdup(p, s + pos, len - pos, 0);
		p->msg.text_len = len - pos;
		return p->msg.text == NULL ? -1 : 0;
	}

	e = word_end(s, len, 0);
	if (p->mode == IMAP_PARSE_SERVER && e == 1 && s[0] == '*') {
		p->msg.kind = IMAP_MSG_UNTAGGED;
		pos = 2;
		e = word_end(s, len, pos);
		if (e > pos && all_digits(s + pos, e - pos)) {
			uint64_t n = 0;
			size_t i;

			for (i = pos; i < e && n <= UINT32_MAX; i++)
				n = n * 10 + (uint64_t)(s[i] - '0');
			if (n > UINT32_MAX)
				return set_error(p, "message number out of range");
			p->msg.has_number = 1;
			p->msg.number = (uint32_t)n;
			pos = e + 1;
			e = word_end(s, len, pos);
		}
		if (pos >= len || e == pos)
			return set_error(p, "missing response name");
		if ((p->msg.name = msg_strdup(p, s + pos, e - pos, 1)) == NULL)
			return -1;
		st = p->msg.has_number ? IMAP_STATUS_NONE : status_of(s + pos, e - pos);
		if (st != IMAP_STATUS_NONE) {
			p->msg.status = st;
			return parse_resp_text(p, s, len, e);
		}
		*pos_r = e;
		return 2;
	}

	/* tag: 1*<any ASTRING-CHAR except "+"> */
	if (e == 0)
		return set_error(p, "missing tag");
	for (pos = 0; pos < e; pos++) {
		unsigned char c = (unsigned char)s[pos];

		if (is_ctl(c) || c == '(' || c == ')' || c == '{' || c == '"' || c == '%' ||
		    c == '*' || c == '+' || c == '\\')
			return set_error(p, "invalid character in tag");
	}
	if ((p->msg.tag = msg_strdup(p, s, e, 0)) == NULL)
		return -1;
	if (e >= len)
		return set_error(p, p->mode == IMAP_PARSE_SERVER ? "missing status after tag"
		                                                 : "missing command name");
	pos = e + 1;
	e = word_end(s, len, pos);
	if (p->mode == IMAP_PARSE_SERVER) {
		p->msg.kind = IMAP_MSG_TAGGED;
		st = status_of(s + pos, e - pos);
		if (st != IMAP_STATUS_OK && st != IMAP_STATUS_NO && st != IMAP_STATUS_BAD)
			return set_error(p, "tagged response is not OK, NO or BAD");
		p->msg.status = st;
		p->msg.name = imap_status_names[st];
		return parse_resp_text(p, s, len, e);
	}

	p->msg.kind = IMAP_MSG_COMMAND;
	if (e == pos)
		return set_error(p, "missing command name");
	if (e - pos == 3 && strncasecmp(s + pos, "UID", 3) == 0) {
		p->msg.uid = 1;
		pos = e + 1;
		e = word_end(s, len, pos);
		if (pos >= len || e == pos)
			return set_error(p, "missing command after UID");
	}
	for (size_t i = pos; i < e; i++) {
		unsigned char c = (unsigned char)s[i];

		if (is_ctl(c) || c == '(' || c == ')' || c == '{' || c == '"' || c >= 0x80)
			return set_error(p, "invalid character in command name");
	}
	if ((p->msg.name = msg_strdup(p, s + pos, e - pos, 1)) == NULL)
		return -1;
	*pos_r = e;
	return 2;
}

/* After a syntax error: does the raw line end in a literal marker? Then the
 * peer will send that many bytes as part of the message, and we skip them. */
static int tail_literal(const char *s, size_t len, uint64_t *size_r, unsigned *flags_r)
{
	size_t i, ndig = 0;
	uint64_t size = 0, mul = 1;
	unsigned flags = IMAP_LIT_SYNC;

	if (len < 3 || s[len - 1] != '}')
		return 0;
	i = len - 1;
	if (s[i - 1] == '+' || s[i - 1] == '-') {
		flags = s[i - 1] == '+' ? IMAP_LIT_PLUS : IMAP_LIT_MINUS;
		i--;
	}
	while (i > 0 && s[i - 1] >= '0' && s[i - 1] <= '9') {
		if (++ndig > 19)
			return -1;
		size += (uint64_t)(s[i - 1] - '0') * mul;
		mul *= 10;
		i--;
	}
	if (ndig == 0 || i == 0 || s[i - 1] != '{')
		return 0;
	*size_r = size;
	*flags_r = flags;
	return 1;
}

static enum imap_event_type finish_msg(struct imap_parser *p, struct imap_event *ev)
{
	p->in_msg = 0;
	p->phase = PH_START;
	if (p->discard) {
		ev->type = IMAP_EV_ERROR;
		ev->error = p->error;
		ev->resync = 1;
		ev->msg = NULL;
		return ev->type;
	}
	ev->type = IMAP_EV_MESSAGE;
	ev->msg = &p->msg;
	return ev->type;
}

/* Prepares counting out a literal of p->lit_size bytes. Returns 1 when an
 * event (LITERAL_START) is to be reported, 0 when the literal is skipped. */
static int begin_literal(struct imap_parser *p)
{
	struct frame *f = &p->stack[p->depth];
	struct imap_arg *a;

	p->lit_remaining = p->lit_size;
	p->state = p->lit_size > 0 ? ST_LITERAL : ST_LINE;
	p->phase = PH_ARGS;
	p->msg.wire_size += p->lit_size;
	p->lit_item = NULL;
	p->lit_arg = NULL;
	p->lit_inline = 1;
	if (p->discard)
		return 0;
	p->lit_item = f->last;
	if (p->lit_size <= p->lim.max_inline_literal &&
	    p->lit_size + 1 + sizeof(struct imap_arg) <= p->lim.max_msg - p->msg_bytes) {
		a = arg_add(p, IMAP_ARG_LITERAL);
		if (a == NULL)
			return 0;
		a->str = p->lit_dst = msg_alloc(p, (size_t)p->lit_size + 1);
		if (a->str == NULL)
			return 0;
		p->lit_dst[p->lit_size] = '\0';
		a->len = (size_t)p->lit_size;
	} else {
		a = arg_add(p, IMAP_ARG_LITERAL_STREAMED);
		if (a == NULL)
			return 0;
		p->lit_inline = 0;
		if (p->lit_size == 0)
			p->state = ST_LITERAL_END;
	}
	a->lit_flags = p->lit_flags;
	a->lit_size = p->lit_size;
	p->lit_arg = a;
	return 1;
}

/* A complete line (without its line end). Returns an event type, or
 * IMAP_EV_NEED_MORE when the line produced none. */
static enum imap_event_type handle_line(struct imap_parser *p, const char *s, size_t len,
                                        size_t eol_len, struct imap_event *ev)
{
	size_t pos = 0;
	int r;

	if (!p->in_msg)
		msg_begin(p);
	p->msg.wire_size += len + eol_len;
	if (p->discard) {
		r = -1;
	} else if (p->phase == PH_START) {
		r = parse_head(p, s, len, &pos);
		if (r == 2)
			r = tok_line(p, s, len, pos, 0);
	} else {
		r = tok_line(p, s, len, 0, 0);
	}
	if (r < 0) {
		/* Grammar lost: skip the rest of the peer's message. */
		int t = tail_literal(s, len, &p->lit_size, &p->lit_flags);

		if (t < 0) {
			p->state = ST_FATAL;
			ev->type = IMAP_EV_ERROR;
			ev->error = p->error;
			ev->resync = 0;
			return ev->type;
		}
		if (t > 0) {
			begin_literal(p);
			return IMAP_EV_NEED_MORE;
		}
		return finish_msg(p, ev);
	}
	if (r == 1) {
		if (!begin_literal(p))
			return IMAP_EV_NEED_MORE;
		ev->type = IMAP_EV_LITERAL_START;
		ev->msg = &p->msg;
		ev->lit_size = p->lit_size;
		ev->lit_flags = p->lit_flags;
		ev->lit_inline = p->lit_inline;
		return ev->type;
	}
	if (p->depth != 0) {
		set_error(p, "unclosed '('");
		return finish_msg(p, ev);
	}
	return finish_msg(p, ev);
}

static int line_append(struct imap_parser *p, const char *s, size_t n)
{
	if (n == 0)
		return 0;
	if (p->line_len + n > p->line_cap) {
		size_t cap = p->line_cap == 0 ? 256 : p->line_cap;
		char *nl;

		while (cap < p->line_len + n)
			cap *= 2;
		nl = realloc(p->line, cap);
		if (nl == NULL)
			abort();
		p->line = nl;
		p->line_cap = cap;
	}
	memcpy(p->line + p->line_len, s, n);
	p->line_len += n;
	return 0;
}

static void tail_keep(struct imap_parser *p, const char *s, size_t n)
{
	if (n == 0)
		return;
	if (n >= TAIL_KEEP) {
		memcpy(p->tail, s + n - TAIL_KEEP, TAIL_KEEP);
		p->tail_len = TAIL_KEEP;
	} else {
		size_t keep = p->tail_len + n > TAIL_KEEP ? TAIL_KEEP - n : p->tail_len;

		memmove(p->tail, p->tail + p->tail_len - keep, keep);
		memcpy(p->tail + keep, s, n);
		p->tail_len = keep + n;
	}
}

enum imap_event_type imap_parser_next(struct imap_parser *p, const void *data, size_t len,
                                      size_t *consumed_r, struct imap_event *ev)
{
	const char *in = data;
	size_t off = 0;
	enum imap_event_type t;

	memset(ev, 0, sizeof(*ev));
	for (;;) {
		switch (p->state) {
		case ST_FATAL:
			*consumed_r = 0;
			ev->type = IMAP_EV_ERROR;
			ev->error = p->error;
			ev->resync = 0;
			return ev->type;
		case ST_LITERAL_END:
			p->state = ST_LINE;
			*consumed_r = off;
			ev->type = IMAP_EV_LITERAL_END;
			ev->msg = &p->msg;
			ev->lit_size = p->lit_size;
			ev->lit_flags = p->lit_flags;
			return ev->type;
		case ST_LITERAL: {
			size_t n = len - off;

			if (n > p->lit_remaining)
				n = (size_t)p->lit_remaining;
			if (n == 0)
				goto need_more;
			if (p->discard || p->lit_arg == NULL) {
				p->lit_remaining -= n;
				off += n;
				if (p->lit_remaining == 0)
					p->state = ST_LINE;
				continue;
			}
			if (p->lit_inline) {
				memcpy(p->lit_dst, in + off, n);
				p->lit_dst += n;
				p->lit_remaining -= n;
				off += n;
				if (p->lit_remaining == 0)
					p->state = ST_LINE;
				continue;
			}
			ev->type = IMAP_EV_LITERAL_DATA;
			ev->msg = &p->msg;
			ev->data = in + off;
			ev->len = n;
			ev->lit_size = p->lit_size;
			ev->lit_flags = p->lit_flags;
			p->lit_remaining -= n;
			off += n;
			if (p->lit_remaining == 0)
				p->state = ST_LITERAL_END;
			*consumed_r = off;
			return ev->type;
		}
		case ST_SKIP_LINE: {
			const char *lf = memchr(in + off, '\n', len - off);
			size_t n = lf != NULL ? (size_t)(lf - (in + off)) : len - off;

			tail_keep(p, in + off, n);
			p->msg.wire_size += n;
			off += n;
			if (lf == NULL)
				goto need_more;
			off++;
			p->msg.wire_size++;
			p->state = ST_LINE;
			if (p->tail_len > 0 && p->tail[p->tail_len - 1] == '\r')
				p->tail_len--;
			if (tail_literal(p->tail, p->tail_len, &p->lit_size, &p->lit_flags) > 0) {
				begin_literal(p);
				continue;
			}
			t = finish_msg(p, ev);
			*consumed_r = off;
			return t;
		}
		case ST_LINE: {
			const char *lf = memchr(in + off, '\n', len - off);
			const char *s;
			size_t n = lf != NULL ? (size_t)(lf - (in + off)) : len - off, slen, eol;

			if (p->line_len + n > p->lim.max_line + 1) {
				/* Too long: drop the line, keep only its tail (it
				 * may announce a literal we must skip too). */
				if (!p->in_msg)
					msg_begin(p);
				set_error(p, "line exceeds %zu bytes", p->lim.max_line);
				p->msg.wire_size += p->line_len;
				p->tail_len = 0;
				tail_keep(p, p->line, p->line_len);
				p->line_len = 0;
				p->state = ST_SKIP_LINE;
				continue;
			}
			if (lf == NULL) {
				line_append(p, in + off, n);
				off += n;
				goto need_more;
			}
			if (p->line_len == 0) {
				s = in + off; /* whole line in the input: no copy */
				slen = n;
			} else {
				line_append(p, in + off, n);
				s = p->line;
				slen = p->line_len;
			}
			off += n + 1;
			eol = 1;
			if (slen > 0 && s[slen - 1] == '\r') {
				slen--;
				eol = 2;
			}
			if (slen > p->lim.max_line) {
				if (!p->in_msg)
					msg_begin(p);
				set_error(p, "line exceeds %zu bytes", p->lim.max_line);
			}
			t = handle_line(p, s, slen, eol, ev);
			p->line_len = 0;
			if (t != IMAP_EV_NEED_MORE) {
				*consumed_r = off;
				return t;
			}
			continue;
		}
		}
	}
need_more:
	*consumed_r = off;
	ev->type = IMAP_EV_NEED_MORE;
	return ev->type;
}

int imap_parser_cancel_literal(struct imap_parser *p)
{
	if (p->state != ST_LITERAL || (p->lit_flags & IMAP_LIT_SYNC) == 0 ||
	    p->lit_remaining != p->lit_size)
		return -1;
	p->state = ST_LINE;
	p->in_msg = 0;
	p->phase = PH_START;
	p->line_len = 0;
	return 0;
}

/* --- argument helpers --- */

int imap_arg_atom_eq(const struct imap_arg *arg, const char *name)
{
	return arg != NULL && arg->type == IMAP_ARG_ATOM && strcasecmp(arg->str, name) == 0;
}

int imap_arg_get_astring(const struct imap_arg *arg, const char **str_r, size_t *len_r)
{
	if (arg == NULL || (arg->type != IMAP_ARG_ATOM && arg->type != IMAP_ARG_STRING &&
	                    arg->type != IMAP_ARG_LITERAL))
		return -1;
	*str_r = arg->str;
	if (len_r != NULL)
		*len_r = arg->len;
	return 0;
}

int imap_arg_get_nstring(const struct imap_arg *arg, const char **str_r, size_t *len_r)
{
	if (imap_arg_atom_eq(arg, "NIL")) {
		*str_r = NULL;
		if (len_r != NULL)
			*len_r = 0;
		return 0;
	}
	if (arg == NULL || arg->type == IMAP_ARG_ATOM)
		return -1;
	return imap_arg_get_astring(arg, str_r, len_r);
}

int imap_arg_get_u64(const struct imap_arg *arg, uint64_t *num_r)
{
	uint64_t n = 0;
	size_t i;

	if (arg == NULL || arg->type != IMAP_ARG_ATOM || !all_digits(arg->str, arg->len) ||
	    arg->len > 20)
		return -1;
	for (i = 0; i < arg->len; i++) {
		uint64_t d = (uint64_t)(arg->str[i] - '0');

		if (n > (UINT64_MAX - d) / 10)
			return -1;
		n = n * 10 + d;
	}
	*num_r = n;
	return 0;
}

int imap_arg_get_u32(const struct imap_arg *arg, uint32_t *num_r)
{
	uint64_t n;

	if (imap_arg_get_u64(arg, &n) < 0 || n > UINT32_MAX)
		return -1;
	*num_r = (uint32_t)n;
	return 0;
}

const struct imap_arg *imap_arg_nth(const struct imap_arg *first, unsigned n)
{
	while (first != NULL && n-- > 0)
		first = first->next;
	return first;
}
