/*
 * Unit tests for the IMAP parser (lib/parse.c).
 *
 * Each case is fed whole, split at every byte (two chunks), byte by byte,
 * and in random chunks with a fixed seed: all renderings must equal the
 * wanted one. Responses are real ones, from RFC examples and from what
 * Dovecot, Cyrus, Exchange/Office 365 and Gmail send (their documentation).
 *
 * Rendering (tests/common/parse_render.c): one line per event;
 *   T tag STATUS [CODE args] |text      tagged
 *   * [n] NAME args / * OK [..] |text   untagged
 *   + |text                             continuation
 *   C tag [UID] NAME args               client command
 *   R |line                             raw line
 * atoms as is, "strings", {N:data} inline literals, {~N:..} literal8,
 * {SN:data} streamed literals, (lists); bytes outside printable ASCII \xNN.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imapferry/parse.h"
#include "parse_render.h"

struct pcase {
	const char *name;
	const char *in;
	size_t len; /* 0 = strlen(in) */
	const char *want;
};

/* A string literal with embedded NULs: pointer and exact length. */
#define BIN(s) s, sizeof(s) - 1

#define S IMAP_PARSE_SERVER
#define C IMAP_PARSE_CLIENT

static const struct pcase server_cases[] = {
        /* Dovecot 2.3 */
        {"dovecot greeting",
         "* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ STARTTLS "
         "AUTH=PLAIN] Dovecot (Debian) ready.\r\n",
         0,
         "* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ STARTTLS "
         "AUTH=PLAIN] |Dovecot (Debian) ready.\n"},
        {"dovecot select",
         "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Forwarded)\r\n"
         "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Forwarded \\*)] "
         "Flags permitted.\r\n"
         "* 172 EXISTS\r\n* 1 RECENT\r\n"
         "* OK [UNSEEN 12] First unseen.\r\n"
         "* OK [UIDVALIDITY 3857529045] UIDs valid\r\n"
         "* OK [UIDNEXT 4392] Predicted next UID\r\n"
         "* OK [HIGHESTMODSEQ 715194045007] Highest\r\n"
         "a2 OK [READ-WRITE] Select completed (0.001 + 0.000 secs).\r\n",
         0,
         "* FLAGS (\\x5cAnswered \\x5cFlagged \\x5cDeleted \\x5cSeen \\x5cDraft $Forwarded)\n"
         "* OK [PERMANENTFLAGS (\\x5cAnswered \\x5cFlagged \\x5cDeleted \\x5cSeen \\x5cDraft "
         "$Forwarded \\x5c*)] |Flags permitted.\n"
         "* 172 EXISTS\n* 1 RECENT\n"
         "* OK [UNSEEN 12] |First unseen.\n"
         "* OK [UIDVALIDITY 3857529045] |UIDs valid\n"
         "* OK [UIDNEXT 4392] |Predicted next UID\n"
         "* OK [HIGHESTMODSEQ 715194045007] |Highest\n"
         "T a2 OK [READ-WRITE] |Select completed (0.001 + 0.000 secs).\n"},
        {"dovecot list",
         "* LIST (\\HasNoChildren \\Sent) \".\" Sent\r\n"
         "* LIST (\\HasChildren) \".\" \"My \\\"quoted\\\" folder\"\r\n"
         "* LIST (\\Noselect) \"/\" \"\"\r\n"
         "* LIST (\\HasNoChildren) NIL INBOX\r\n"
         "* LIST () \".\" \"B&APw-cher\"\r\n",
         0,
         "* LIST (\\x5cHasNoChildren \\x5cSent) \".\" Sent\n"
         "* LIST (\\x5cHasChildren) \".\" \"My \"quoted\" folder\"\n"
         "* LIST (\\x5cNoselect) \"/\" \"\"\n"
         "* LIST (\\x5cHasNoChildren) NIL INBOX\n"
         "* LIST () \".\" \"B&APw-cher\"\n"},
        {"list name as literal with CRLF inside",
         "* LIST () \"/\" {8}\r\nfoo\r\nbar\r\n* 3 EXISTS\r\n", 0,
         "* LIST () \"/\" {8:foo\\x0d\\x0abar}\n* 3 EXISTS\n"},
        {"list-status (RFC 5819)",
         "* LIST () \".\" \"INBOX\"\r\n* STATUS \"INBOX\" (MESSAGES 17 UNSEEN 16)\r\n", 0,
         "* LIST () \".\" \"INBOX\"\n* STATUS \"INBOX\" (MESSAGES 17 UNSEEN 16)\n"},
        {"status (RFC 3501)", "* STATUS blurdybloop (MESSAGES 231 UIDNEXT 44292)\r\n", 0,
         "* STATUS blurdybloop (MESSAGES 231 UIDNEXT 44292)\n"},
        {"appenduid and copyuid (RFC 4315)",
         "A003 OK [APPENDUID 38505 3955] APPEND completed\r\n"
         "A004 OK [COPYUID 38505 304,319:320 3956:3958] Done\r\n",
         0,
         "T A003 OK [APPENDUID 38505 3955] |APPEND completed\n"
         "T A004 OK [COPYUID 38505 304,319:320 3956:3958] |Done\n"},
        {"no with trycreate and a literal-looking tail",
         "A003 NO [TRYCREATE] Mailbox doesn't exist: foo{5}\r\n* 2 EXISTS\r\n", 0,
         "T A003 NO [TRYCREATE] |Mailbox doesn't exist: foo{5}\n* 2 EXISTS\n"},
        {"search and esearch (RFC 4731)",
         "* SEARCH 2 84 882\r\n* SEARCH\r\n* ESEARCH (TAG \"A282\") MIN 2 COUNT 3\r\n"
         "* ESEARCH (TAG \"a\") UID ALL 1:3,5\r\n",
         0,
         "* SEARCH 2 84 882\n* SEARCH\n* ESEARCH (TAG \"A282\") MIN 2 COUNT 3\n"
         "* ESEARCH (TAG \"a\") UID ALL 1:3,5\n"},
        {"fetch envelope and body (RFC 3501)",
         "* 12 FETCH (FLAGS (\\Seen) INTERNALDATE \"17-Jul-1996 02:44:25 -0700\" "
         "RFC822.SIZE 4286 ENVELOPE (\"Wed, 17 Jul 1996 02:23:25 -0700 (PDT)\" "
         "\"IMAP4rev1 WG mtg summary and minutes\" ((\"Terry Gray\" NIL \"gray\" "
         "\"cac.washington.edu\")) NIL NIL ((NIL NIL \"imap\" \"cac.washington.edu\")) NIL NIL "
         "NIL \"<B27397-0100000@cac.washington.edu>\") BODY (\"TEXT\" \"PLAIN\" (\"CHARSET\" "
         "\"US-ASCII\") NIL NIL \"7BIT\" 3028 92))\r\n",
         0,
         "* 12 FETCH (FLAGS (\\x5cSeen) INTERNALDATE \"17-Jul-1996 02:44:25 -0700\" "
         "RFC822.SIZE 4286 ENVELOPE (\"Wed, 17 Jul 1996 02:23:25 -0700 (PDT)\" "
         "\"IMAP4rev1 WG mtg summary and minutes\" ((\"Terry Gray\" NIL \"gray\" "
         "\"cac.washington.edu\")) NIL NIL ((NIL NIL \"imap\" \"cac.washington.edu\")) NIL NIL "
         "NIL \"<B27397-0100000@cac.washington.edu>\") BODY (\"TEXT\" \"PLAIN\" (\"CHARSET\" "
         "\"US-ASCII\") NIL NIL \"7BIT\" 3028 92))\n"},
        {"body containing IMAP-looking lines",
         "* 2 FETCH (UID 7 BODY[] {29}\r\n* 3 EXPUNGE\r\na1 OK done\r\n\r\nhi)\r\n"
         "a5 OK Fetch completed.\r\n",
         0,
         "* 2 FETCH (UID 7 BODY[] {29:* 3 EXPUNGE\\x0d\\x0aa1 OK done\\x0d\\x0a\\x0d\\x0ahi})\n"
         "T a5 OK |Fetch completed.\n"},
        {"header fields section with spaces",
         "* 1 FETCH (UID 1 RFC822.SIZE 120 BODY[HEADER.FIELDS (MESSAGE-ID RECEIVED)] {26}\r\n"
         "Message-Id: <a@b>\r\n\r\nxxxxx)\r\n",
         0,
         "* 1 FETCH (UID 1 RFC822.SIZE 120 BODY[HEADER.FIELDS (MESSAGE-ID RECEIVED)] "
         "{26:Message-Id: <a@b>\\x0d\\x0a\\x0d\\x0axxxxx})\n"},
        {"two bodies and partial origin",
         "* 1 FETCH (BODY[HEADER] {5}\r\nabcde BODY[TEXT]<0> {3}\r\nxyz UID 5)\r\n", 0,
         "* 1 FETCH (BODY[HEADER] {5:abcde} BODY[TEXT]<0> {3:xyz} UID 5)\n"},
        {"empty literal", "* 1 FETCH (BODY[] {0}\r\n)\r\n", 0, "* 1 FETCH (BODY[] {0:})\n"},
        {"literal8 with NUL (RFC 3516)", BIN("* 1 FETCH (BINARY[] ~{5}\r\nab\0cd)\r\n"),
         "* 1 FETCH (BINARY[] {~5:ab\\x00cd})\n"},
        {"condstore modseq (RFC 7162)",
         "* 1 FETCH (UID 4 MODSEQ (65402) FLAGS (\\Seen))\r\n"
         "* OK [HIGHESTMODSEQ 20010715194045319] Ok\r\n"
         "* VANISHED (EARLIER) 41,43:116,118,120:211,214:540\r\n* VANISHED 405,407\r\n"
         "* OK [CLOSED] Previous mailbox closed\r\n",
         0,
         "* 1 FETCH (UID 4 MODSEQ (65402) FLAGS (\\x5cSeen))\n"
         "* OK [HIGHESTMODSEQ 20010715194045319] |Ok\n"
         "* VANISHED (EARLIER) 41,43:116,118,120:211,214:540\n* VANISHED 405,407\n"
         "* OK [CLOSED] |Previous mailbox closed\n"},
        {"namespace (RFC 2342)",
         "* NAMESPACE ((\"\" \"/\")) ((\"~\" \"/\")) ((\"#shared/\" \"/\")(\"#public/\" \"/\")"
         "(\"#news.\" \".\"))\r\n* NAMESPACE ((\"INBOX.\" \".\")) NIL NIL\r\n",
         0,
         "* NAMESPACE ((\"\" \"/\")) ((\"~\" \"/\")) ((\"#shared/\" \"/\") (\"#public/\" \"/\") "
         "(\"#news.\" \".\"))\n* NAMESPACE ((\"INBOX.\" \".\")) NIL NIL\n"},
        {"enabled and id (RFC 5161, RFC 2971, Cyrus)",
         "* ENABLED CONDSTORE QRESYNC\r\n"
         "* ID (\"name\" \"Cyrus\" \"version\" \"1.5\" \"os\" \"sunos\" \"support-url\" "
         "\"mailto:cyrus-bugs+@andrew.cmu.edu\")\r\n* ID NIL\r\n",
         0,
         "* ENABLED CONDSTORE QRESYNC\n"
         "* ID (\"name\" \"Cyrus\" \"version\" \"1.5\" \"os\" \"sunos\" \"support-url\" "
         "\"mailto:cyrus-bugs+@andrew.cmu.edu\")\n* ID NIL\n"},
        {"continuations",
         "+ Ready for additional command text\r\n+ \r\n+\r\n+ YGgGCSqGSIb3EgECAgIAb1kwV6A=\r\n", 0,
         "+ |Ready for additional command text\n+ |\n+ |\n+ |YGgGCSqGSIb3EgECAgIAb1kwV6A=\n"},
        {"bye, alert, preauth",
         "* BYE Autologout; idle for too long\r\n* OK [ALERT] System shutdown in 10 minutes\r\n"
         "* PREAUTH [CAPABILITY IMAP4rev1] Logged in as alice\r\n",
         0,
         "* BYE |Autologout; idle for too long\n* OK [ALERT] |System shutdown in 10 minutes\n"
         "* PREAUTH [CAPABILITY IMAP4rev1] |Logged in as alice\n"},
        {"gmail",
         "* OK Gimap ready for requests from 192.0.2.7 l17mb12345\r\n"
         "* CAPABILITY IMAP4rev1 UNSELECT IDLE NAMESPACE QUOTA ID XLIST CHILDREN X-GM-EXT-1 "
         "XYZZY SASL-IR AUTH=XOAUTH2 AUTH=PLAIN AUTH=OAUTHBEARER\r\n"
         "* 1 FETCH (X-GM-LABELS (\\Inbox \\Sent Important \"Muy Importante\") UID 1)\r\n"
         "* 1 FETCH (X-GM-MSGID 1278455344230334865 X-GM-THRID 1266894439832287888)\r\n"
         "a OK alice@example.com authenticated (Success)\r\n",
         0,
         "* OK |Gimap ready for requests from 192.0.2.7 l17mb12345\n"
         "* CAPABILITY IMAP4rev1 UNSELECT IDLE NAMESPACE QUOTA ID XLIST CHILDREN X-GM-EXT-1 "
         "XYZZY SASL-IR AUTH=XOAUTH2 AUTH=PLAIN AUTH=OAUTHBEARER\n"
         "* 1 FETCH (X-GM-LABELS (\\x5cInbox \\x5cSent Important \"Muy Importante\") UID 1)\n"
         "* 1 FETCH (X-GM-MSGID 1278455344230334865 X-GM-THRID 1266894439832287888)\n"
         "T a OK |alice@example.com authenticated (Success)\n"},
        {"exchange",
         "* OK The Microsoft Exchange IMAP4 service is ready. [TQBOADIAUABSADAAMQBDAEE=]\r\n"
         "a1 NO AUTHENTICATE failed.\r\na2 BAD Command Argument Error. 11\r\n",
         0,
         "* OK |The Microsoft Exchange IMAP4 service is ready. [TQBOADIAUABSADAAMQBDAEE=]\n"
         "T a1 NO |AUTHENTICATE failed.\nT a2 BAD |Command Argument Error. 11\n"},
        {"cyrus",
         "* OK [CAPABILITY IMAP4rev1 LITERAL+ ID ENABLE AUTH=PLAIN SASL-IR] mail.example.com "
         "Cyrus IMAP v3.0.0 server ready\r\n* LIST (\\HasNoChildren) \".\" INBOX.Sent\r\n",
         0,
         "* OK [CAPABILITY IMAP4rev1 LITERAL+ ID ENABLE AUTH=PLAIN SASL-IR] |mail.example.com "
         "Cyrus IMAP v3.0.0 server ready\n* LIST (\\x5cHasNoChildren) \".\" INBOX.Sent\n"},
        {"odd codes keep raw text",
         "* OK [REFERRAL imap://user;AUTH=*@SERVER2/] Try there\r\n"
         "* NO [X-ODD \"unterminated] text\r\n* NO [X-ODD a) b] text\r\n* OK [BADCHARSET (UTF-8 "
         "US-ASCII)] x\r\n",
         0,
         "* OK [REFERRAL imap://user;AUTH=*@SERVER2/] |Try there\n"
         "* NO |[X-ODD \"unterminated] text\n* NO [X-ODD ~X-ODD a) b] |text\n"
         "* OK [BADCHARSET (UTF-8 US-ASCII)] |x\n"},
        {"tagged OK without text, bare LF, 8-bit quoted",
         "a OK\r\nb OK done\n* LIST () \"/\" \"B\xc3\xbc\x63her\"\r\n", 0,
         "T a OK |\nT b OK |done\n* LIST () \"/\" \"B\\xc3\\xbccher\"\n"},
        {"nested and empty lists", "* X ((a b) () (c (d)))\r\n", 0, "* X ((a b) () (c (d)))\n"},
        /* errors: the bad response is skipped whole, the next one parses */
        {"unclosed list", "* 5 FETCH (FLAGS (\\Seen)\r\n* 6 EXISTS\r\n", 0,
         "ERROR: unclosed '('\n* 6 EXISTS\n"},
        {"not a status", "a1 FOO bar\r\na2 OK x\r\n", 0,
         "ERROR: tagged response is not OK, NO or BAD\nT a2 OK |x\n"},
        {"unterminated quote then literal skipped",
         "* 1 FETCH (\"x {5}\r\nhello)\r\n* 2 EXISTS\r\n", 0,
         "ERROR: unterminated quoted string\n* 2 EXISTS\n"},
        {"NUL in line", BIN("* 1 EX\0ISTS\r\n* 2 EXISTS\r\n"), "ERROR: NUL in line\n* 2 EXISTS\n"},
        {"stray paren", "* X a)\r\n* 2 EXISTS\r\n", 0, "ERROR: unexpected ')'\n* 2 EXISTS\n"},
        {"missing name", "* \r\n*\r\n* 1 EXISTS\r\n", 0,
         "ERROR: missing response name\nERROR: missing response name\n* 1 EXISTS\n"},
        {"literal not at end", "* X {3} a\r\n* 1 EXISTS\r\n", 0,
         "ERROR: literal marker not at end of line\n* 1 EXISTS\n"},
        {"literal size overflow is fatal", "* X {99999999999999999999999}\r\nabc\r\n", 0,
         "ERROR(fatal): literal size overflows\n"},
        {"control char in atom", "* X a\x01\x62\r\n* 1 EXISTS\r\n", 0,
         "ERROR: control character 0x01 in atom\n* 1 EXISTS\n"},
        {"empty line", "\r\n* 1 EXISTS\r\n", 0, "ERROR: empty line\n* 1 EXISTS\n"},
};

static const struct pcase client_cases[] = {
        {"login", "a1 LOGIN alice \"pass word\"\r\n", 0, "C a1 LOGIN alice \"pass word\"\n"},
        {"uid fetch with section",
         "a2 uid fetch 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (DATE FROM)])\r\n", 0,
         "C a2 UID FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (DATE FROM)])\n"},
        {"append literal+",
         "a3 APPEND INBOX (\\Seen) \"17-Jul-1996 02:44:25 -0700\" {5+}\r\nhello\r\n", 0,
         "C a3 APPEND INBOX (\\x5cSeen) \"17-Jul-1996 02:44:25 -0700\" {5:hello}\n"},
        {"sync literals", "a4 LOGIN {5}\r\nalice {4}\r\npass\r\n", 0,
         "C a4 LOGIN {5:alice} {4:pass}\n"},
        {"multiappend (RFC 3502)", "a5 APPEND Drafts (\\Draft) {3+}\r\nabc (\\Seen) {2+}\r\nde\r\n",
         0, "C a5 APPEND Drafts (\\x5cDraft) {3:abc} (\\x5cSeen) {2:de}\n"},
        {"catenate (RFC 4469)",
         "a6 APPEND Drafts CATENATE (URL \"/Drafts;UIDVALIDITY=385759045/;UID=20/;"
         "section=HEADER\" TEXT {4+}\r\ntext URL \"/x\")\r\n",
         0,
         "C a6 APPEND Drafts CATENATE (URL \"/Drafts;UIDVALIDITY=385759045/;UID=20/;"
         "section=HEADER\" TEXT {4:text} URL \"/x\")\n"},
        {"literal8 append", BIN("a7 APPEND INBOX ~{3+}\r\na\0b\r\n"),
         "C a7 APPEND INBOX {~3:a\\x00b}\n"},
        {"uid store", "a9 uid store 1:3 +FLAGS.SILENT (\\Deleted)\r\n", 0,
         "C a9 UID STORE 1:3 +FLAGS.SILENT (\\x5cDeleted)\n"},
        {"select qresync (RFC 7162)",
         "A02 SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211,214:541))\r\n", 0,
         "C A02 SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211,214:541))\n"},
        {"idle then DONE as a raw line", "a8 IDLE\r\nDONE\r\na9 NOOP\r\n", 0,
         "C a8 IDLE\nR |DONE\nC a9 NOOP\n"},
        {"authenticate with SASL-IR and a continuation line",
         "a1 AUTHENTICATE PLAIN\r\nAGFsaWNlAHB3\r\na2 NOOP\r\n", 0,
         "C a1 AUTHENTICATE PLAIN\nR |AGFsaWNlAHB3\nC a2 NOOP\n"},
        {"compress and id", "c COMPRESS DEFLATE\r\nd ID (\"name\" \"mbsync\")\r\n", 0,
         "C c COMPRESS DEFLATE\nC d ID (\"name\" \"mbsync\")\n"},
        {"bad tags", "+ foo\r\n* NOOP\r\nx\r\nok NOOP\r\n", 0,
         "ERROR: invalid character in tag\nERROR: invalid character in tag\n"
         "ERROR: missing command name\nC ok NOOP\n"},
        {"uid without command", "a UID\r\nb UID \r\nc NOOP\r\n", 0,
         "ERROR: missing command after UID\nERROR: missing command after UID\nC c NOOP\n"},
};

/* Runs one case in every split and compares. */
static void run_case(enum imap_parse_mode mode, const struct imap_limits *lim,
                     const struct pcase *c)
{
	size_t len = c->len != 0 ? c->len : strlen(c->in);
	char *got = parse_render(mode, lim, c->in, len, NULL, 0);
	size_t k, one = 1;
	unsigned seed = 12345;

	if (strcmp(got, c->want) != 0)
		fail_msg("%s (whole):\n got: %s\nwant: %s", c->name, got, c->want);
	free(got);
	for (k = 1; k < len; k++) {
		size_t cuts[2] = {k, len};

		got = parse_render(mode, lim, c->in, len, cuts, 2);
		if (strcmp(got, c->want) != 0)
			fail_msg("%s (split at %zu):\n got: %s\nwant: %s", c->name, k, got,
			         c->want);
		free(got);
	}
	got = parse_render(mode, lim, c->in, len, &one, 1);
	if (strcmp(got, c->want) != 0)
		fail_msg("%s (byte by byte):\n got: %s\nwant: %s", c->name, got, c->want);
	free(got);
	for (int r = 0; r < 20; r++) {
		size_t cuts[16];

		for (k = 0; k < 16; k++) {
			seed = seed * 1103515245u + 12345u;
			cuts[k] = 1 + (seed >> 16) % 17;
		}
		got = parse_render(mode, lim, c->in, len, cuts, 16);
		if (strcmp(got, c->want) != 0)
			fail_msg("%s (random chunks, round %d):\n got: %s\nwant: %s", c->name, r,
			         got, c->want);
		free(got);
	}
}

static void test_server_responses(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(server_cases) / sizeof(server_cases[0]); i++)
		run_case(S, NULL, &server_cases[i]);
}

static void test_client_commands(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(client_cases) / sizeof(client_cases[0]); i++)
		run_case(C, NULL, &client_cases[i]);
}

/* Limits: each violation is a clear error, skips the message, and parsing
 * goes on with the next one. */
static void test_limits(void **state)
{
	struct imap_limits lim;
	static const struct pcase cases[] = {
	        {"line too long",
	         "* X aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n"
	         "* 1 EXISTS\r\n",
	         0, "ERROR: line exceeds 64 bytes\n* 1 EXISTS\n"},
	        {"long line announcing a literal",
	         "* X aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa "
	         "{3}\r\nabc)\r\n"
	         "* 1 EXISTS\r\n",
	         0, "ERROR: line exceeds 64 bytes\n* 1 EXISTS\n"},
	        {"too deep", "* X ((((a))))\r\n* X (((a)))\r\n", 0,
	         "ERROR: lists nested deeper than 3\n* X (((a)))\n"},
	        {"literal too big", "* X {11}\r\nhello world\r\n* 1 EXISTS\r\n", 0,
	         "ERROR: literal of 11 bytes exceeds the limit of 10\n* 1 EXISTS\n"},
	        {"too many args", "* X a b c d e f g h i j k l m n o p q r s t u\r\n* X a b\r\n", 0,
	         "ERROR: more than 20 arguments\n* X a b\n"},
	        {"streamed literal", "* 1 FETCH (BODY[] {9}\r\nabcdefghi)\r\n", 0,
	         "* 1 FETCH (BODY[] {S9:abcdefghi})\n"},
	        {"message size",
	         "* X \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\" "
	         "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"\r\n"
	         "* 1 EXISTS\r\n",
	         0, "ERROR: message exceeds 150 bytes\n* 1 EXISTS\n"},
	};

	(void)state;
	lim.max_line = 64;
	lim.max_inline_literal = 4;
	lim.max_literal = 10;
	lim.max_msg = 8192;
	lim.max_depth = 3;
	lim.max_args = 20;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct imap_limits l = lim;

		if (strcmp(cases[i].name, "message size") == 0) {
			l.max_line = 1000;
			l.max_msg = 150;
		}
		run_case(S, &l, &cases[i]);
	}
}

/* A 50 MB body goes through a parser whose message storage is 4 KiB: it
 * is streamed in slices of the input, never stored. */
static void test_big_literal_streamed(void **state)
{
	struct imap_limits lim;
	struct imap_parser *p;
	const size_t body = 50u << 20, chunk = 64u << 10;
	char *buf = malloc(chunk);
	char head[] = "* 1 FETCH (UID 9 BODY[] {52428800}\r\n";
	uint64_t got = 0;
	int starts = 0, ends = 0, msgs = 0;
	struct imap_event ev;
	size_t used;

	(void)state;
	imap_limits_default(&lim, S);
	lim.max_msg = 4096;
	p = imap_parser_new(S, &lim);
	assert_non_null(buf);
	memset(buf, 'x', chunk);
	assert_int_equal(imap_parser_next(p, head, strlen(head), &used, &ev),
	                 IMAP_EV_LITERAL_START);
	assert_int_equal(used, strlen(head));
	assert_false(ev.lit_inline);
	assert_int_equal(ev.lit_size, body);
	assert_true(imap_arg_atom_eq(imap_parser_literal_item(p), "BODY[]"));
	starts++;
	for (size_t off = 0; off < body; off += chunk) {
		size_t pos = 0;

		while (pos < chunk) {
			imap_parser_next(p, buf + pos, chunk - pos, &used, &ev);
			pos += used;
			if (ev.type == IMAP_EV_LITERAL_DATA) {
				assert_ptr_equal(ev.data, buf + pos - used);
				got += ev.len;
			} else if (ev.type == IMAP_EV_LITERAL_END) {
				ends++;
			} else {
				assert_int_equal(ev.type, IMAP_EV_NEED_MORE);
			}
		}
	}
	for (;;) {
		const char tail[] = ")\r\n";

		imap_parser_next(p, tail, 3, &used, &ev);
		if (ev.type == IMAP_EV_LITERAL_END) {
			ends++;
			continue;
		}
		assert_int_equal(ev.type, IMAP_EV_MESSAGE);
		assert_int_equal(ev.msg->wire_size, strlen(head) + body + 3);
		msgs++;
		break;
	}
	assert_int_equal(got, body);
	assert_int_equal(starts + ends + msgs, 3);
	imap_parser_free(&p);
	assert_null(p);
	free(buf);
}

/* A synchronising literal refused by the server (tagged NO instead of "+"):
 * the client sends a new command, not the literal. */
static void test_cancel_literal(void **state)
{
	struct imap_parser *p = imap_parser_new(C, NULL);
	const char *a = "a LOGIN {5}\r\n", *b = "b NOOP\r\n";
	struct imap_event ev;
	size_t used;

	(void)state;
	assert_int_equal(imap_parser_cancel_literal(p), -1);
	assert_int_equal(imap_parser_next(p, a, strlen(a), &used, &ev), IMAP_EV_LITERAL_START);
	assert_true(ev.lit_flags & IMAP_LIT_SYNC);
	assert_int_equal(imap_parser_cancel_literal(p), 0);
	assert_int_equal(imap_parser_next(p, b, strlen(b), &used, &ev), IMAP_EV_MESSAGE);
	assert_string_equal(ev.msg->tag, "b");
	assert_string_equal(ev.msg->name, "NOOP");
	/* a LITERAL+ one cannot be cancelled: the data is already on its way */
	a = "c LOGIN {5+}\r\n";
	assert_int_equal(imap_parser_next(p, a, strlen(a), &used, &ev), IMAP_EV_LITERAL_START);
	assert_int_equal(imap_parser_cancel_literal(p), -1);
	imap_parser_free(&p);
}

static void test_arg_helpers(void **state)
{
	struct imap_parser *p = imap_parser_new(S, NULL);
	const char *in = "* 1 FETCH (UID 4294967295 MODSEQ (18446744073709551615) X 4294967296 "
	                 "N NIL S \"q\" L {2}\r\nab)\r\n";
	struct imap_event ev;
	size_t used, off = 0, len = strlen(in);
	const struct imap_arg *l, *a;
	const char *s;
	size_t slen;
	uint32_t u32;
	uint64_t u64;

	(void)state;
	do {
		imap_parser_next(p, in + off, len - off, &used, &ev);
		off += used;
	} while (ev.type != IMAP_EV_MESSAGE && off < len);
	assert_int_equal(ev.type, IMAP_EV_MESSAGE);
	l = ev.msg->args;
	assert_int_equal(l->type, IMAP_ARG_LIST);
	assert_int_equal(l->count, 12);
	assert_true(imap_arg_atom_eq(imap_arg_nth(l->child, 0), "uid"));
	assert_int_equal(imap_arg_get_u32(imap_arg_nth(l->child, 1), &u32), 0);
	assert_int_equal(u32, 4294967295u);
	a = imap_arg_nth(l->child, 3);
	assert_int_equal(imap_arg_get_u64(a->child, &u64), 0);
	assert_true(u64 == UINT64_MAX);
	assert_int_equal(imap_arg_get_u32(imap_arg_nth(l->child, 5), &u32), -1);
	assert_int_equal(imap_arg_get_nstring(imap_arg_nth(l->child, 7), &s, &slen), 0);
	assert_null(s);
	assert_int_equal(imap_arg_get_nstring(imap_arg_nth(l->child, 9), &s, &slen), 0);
	assert_string_equal(s, "q");
	assert_int_equal(imap_arg_get_astring(imap_arg_nth(l->child, 11), &s, &slen), 0);
	assert_int_equal(slen, 2);
	assert_memory_equal(s, "ab", 2);
	assert_int_equal(imap_arg_get_nstring(imap_arg_nth(l->child, 0), &s, &slen), -1);
	assert_null(imap_arg_nth(l->child, 12));
	imap_parser_free(&p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_server_responses),
	        cmocka_unit_test(test_client_commands),
	        cmocka_unit_test(test_limits),
	        cmocka_unit_test(test_big_literal_streamed),
	        cmocka_unit_test(test_cancel_literal),
	        cmocka_unit_test(test_arg_helpers),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
