/*
 * parse.h - incremental, literal-aware IMAP parser for both directions.
 *
 * One parser reads one direction of one connection: server responses
 * (IMAP_PARSE_SERVER: tagged, untagged and "+" continuations, RFC 3501/9051
 * section 7) or client commands (IMAP_PARSE_CLIENT: tag, optional UID prefix,
 * command name, arguments, section 6).
 *
 * Input may be split at any byte boundary. The caller hands the parser
 * whatever bytes it has and gets back one event at a time (a pull API, so the
 * caller can stop exactly after the message it cares about, e.g. the OK of a
 * STARTTLS after which the bytes are TLS):
 *
 *	while (len > 0) {
 *		size_t used;
 *		imap_parser_next(p, data, len, &used, &ev);
 *		data += used; len -= used;
 *		switch (ev.type) { ... }
 *	}
 *
 * A message (one response or command) is a list of arguments. Literals
 * ({N}, {N+}, {N-}, ~{N}) up to limits.max_inline_literal are kept inside the
 * message; larger ones are streamed to the caller as LITERAL_DATA slices of
 * the input (zero copy), so a 50 MB message body never needs 50 MB of memory.
 *
 * Memory per parser is bounded by the limits: one line (max_line) plus one
 * message (max_msg); nothing grows with message or mailbox size.
 */
#ifndef IMAPFERRY_PARSE_H
#define IMAPFERRY_PARSE_H

#include <stddef.h>
#include <stdint.h>

enum imap_parse_mode {
	IMAP_PARSE_SERVER, /* we read a server's responses */
	IMAP_PARSE_CLIENT, /* we read a client's commands */
	IMAP_PARSE_MODE_COUNT
};

struct imap_limits {
	size_t max_line;           /* bytes of one line, CRLF excluded */
	size_t max_inline_literal; /* larger literals are streamed, not kept */
	uint64_t max_literal;      /* larger literals are an error (0 = no limit) */
	size_t max_msg;            /* bytes kept for one message (args + inline literals) */
	unsigned max_depth;        /* parenthesis nesting */
	unsigned max_args;         /* arguments in one message, all levels */
};

/* Fills *l with the defaults for mode (documented in parse.c). */
void imap_limits_default(struct imap_limits *l, enum imap_parse_mode mode);

enum imap_arg_type {
	IMAP_ARG_ATOM,             /* also numbers, NIL, flags, BODY[...]<...> */
	IMAP_ARG_STRING,           /* quoted string, unescaped */
	IMAP_ARG_LITERAL,          /* literal kept inline (str/len hold the data) */
	IMAP_ARG_LITERAL_STREAMED, /* literal handed to the caller; lit_size only */
	IMAP_ARG_LIST,             /* parenthesised list */
	IMAP_ARG_TYPE_COUNT
};

/* Literal flags. */
#define IMAP_LIT_SYNC   0x01u /* {N}: the sender waits for "+" (client side) */
#define IMAP_LIT_PLUS   0x02u /* {N+} LITERAL+ */
#define IMAP_LIT_MINUS  0x04u /* {N-} LITERAL- (RFC 7888) */
#define IMAP_LIT_BINARY 0x08u /* ~{N} literal8 (RFC 3516) */

struct imap_arg {
	enum imap_arg_type type;
	unsigned lit_flags;     /* LITERAL*: IMAP_LIT_* */
	const char *str;        /* ATOM/STRING/LITERAL: NUL-terminated copy */
	size_t len;             /* its length (literal data may contain NULs) */
	uint64_t lit_size;      /* LITERAL_STREAMED: size announced */
	struct imap_arg *child; /* LIST: first element or NULL */
	unsigned count;         /* LIST: number of elements */
	struct imap_arg *next;  /* next sibling or NULL */
};

enum imap_msg_kind {
	IMAP_MSG_TAGGED,       /* "tag OK|NO|BAD text" */
	IMAP_MSG_UNTAGGED,     /* "* ..." */
	IMAP_MSG_CONTINUATION, /* "+ text" */
	IMAP_MSG_COMMAND,      /* client: "tag [UID] NAME args" */
	IMAP_MSG_RAW_LINE,     /* a line read in raw mode (imap_parser_set_raw) */
	IMAP_MSG_KIND_COUNT
};

enum imap_status {
	IMAP_STATUS_NONE,
	IMAP_STATUS_OK,
	IMAP_STATUS_NO,
	IMAP_STATUS_BAD,
	IMAP_STATUS_BYE,
	IMAP_STATUS_PREAUTH,
	IMAP_STATUS_COUNT
};

/*
 * A parsed message. All strings are NUL-terminated and owned by the parser:
 * valid until the next call of imap_parser_next() that starts a new message.
 */
struct imap_msg {
	enum imap_msg_kind kind;
	const char *tag;         /* TAGGED, COMMAND; NULL otherwise */
	enum imap_status status; /* status responses (OK NO BAD BYE PREAUTH) */
	int has_number;          /* "* 5 EXISTS": number = 5 */
	uint32_t number;
	const char *name;     /* upper-cased response or command name, or NULL
	                         (status responses: "OK", "NO", ...) */
	int uid;              /* COMMAND: had a "UID" prefix */
	const char *code;     /* upper-cased resp-text-code atom or NULL */
	const char *code_raw; /* everything between [ and ] */
	size_t code_raw_len;
	struct imap_arg *code_args; /* arguments of the code, if they parsed */
	unsigned code_argc;
	const char *text; /* resp-text, continuation text, raw line */
	size_t text_len;
	struct imap_arg *args; /* first argument (after name) or NULL */
	unsigned argc;
	uint64_t wire_size; /* bytes this message took on the wire */
};

enum imap_event_type {
	IMAP_EV_NEED_MORE,     /* all input consumed, no event */
	IMAP_EV_MESSAGE,       /* a complete message: ev.msg */
	IMAP_EV_LITERAL_START, /* a literal begins: lit_size, lit_flags, lit_inline */
	IMAP_EV_LITERAL_DATA,  /* streamed literal bytes: data/len (slice of input) */
	IMAP_EV_LITERAL_END,   /* streamed literal complete */
	IMAP_EV_ERROR,         /* error; see error and resync */
	IMAP_EV_TYPE_COUNT
};

struct imap_event {
	enum imap_event_type type;
	const struct imap_msg *msg; /* MESSAGE; LITERAL_*: the message so far */
	uint64_t lit_size;
	unsigned lit_flags;
	int lit_inline;   /* LITERAL_START: 1 = kept in the message */
	const char *data; /* LITERAL_DATA */
	size_t len;
	const char *error; /* ERROR: owned by the parser */
	int resync;        /* ERROR: 1 = the bad message was skipped whole
	                      and parsing can go on; 0 = the stream is lost */
};

struct imap_parser;

/* Creates a parser; limits NULL = imap_limits_default(mode). Never NULL
 * (aborts on out-of-memory). Free with imap_parser_free(). */
struct imap_parser *imap_parser_new(enum imap_parse_mode mode, const struct imap_limits *limits);
void imap_parser_free(struct imap_parser **p);

/*
 * Consumes up to len bytes and reports one event in *ev_r; returns its type.
 * *consumed_r tells how many bytes were used (may be 0 for LITERAL_END and
 * for an ERROR without resync). NEED_MORE means all len bytes were used.
 * After an ERROR with resync = 0 every further call returns the same error.
 */
enum imap_event_type imap_parser_next(struct imap_parser *p, const void *data, size_t len,
                                      size_t *consumed_r, struct imap_event *ev_r);

/* Raw mode: each following line is returned whole as IMAP_MSG_RAW_LINE
 * (AUTHENTICATE responses, IDLE's DONE). Takes effect at the next message. */
void imap_parser_set_raw(struct imap_parser *p, int raw);

/* Client side: the server refused the command waiting for a synchronising
 * literal (tagged NO/BAD instead of "+"), so the client will not send it:
 * drop the partial command and expect a new one. Returns 0, or -1 when the
 * parser is not waiting for the data of a synchronising literal. */
int imap_parser_cancel_literal(struct imap_parser *p);

/* During LITERAL_* events: the argument just before the literal in the same
 * list (e.g. the FETCH item name "BODY[]"), or NULL. */
const struct imap_arg *imap_parser_literal_item(const struct imap_parser *p);

/* Nonzero while the parser is inside a message (a partial line or literal). */
int imap_parser_busy(const struct imap_parser *p);

/* --- argument helpers: all return 0 on success, -1 on a type mismatch --- */

/* ATOM whose text equals name, ASCII case-insensitively. */
int imap_arg_atom_eq(const struct imap_arg *arg, const char *name);
/* astring: ATOM, STRING or inline LITERAL. */
int imap_arg_get_astring(const struct imap_arg *arg, const char **str_r, size_t *len_r);
/* nstring: like astring, NIL gives *str_r = NULL. */
int imap_arg_get_nstring(const struct imap_arg *arg, const char **str_r, size_t *len_r);
/* number (RFC 3501) and number64 (RFC 9051), from an ATOM of digits only. */
int imap_arg_get_u32(const struct imap_arg *arg, uint32_t *num_r);
int imap_arg_get_u64(const struct imap_arg *arg, uint64_t *num_r);
/* The n-th (0-based) argument starting at first, or NULL. */
const struct imap_arg *imap_arg_nth(const struct imap_arg *first, unsigned n);

extern const char *const imap_status_names[IMAP_STATUS_COUNT];
extern const char *const imap_msg_kind_names[IMAP_MSG_KIND_COUNT];

#endif
