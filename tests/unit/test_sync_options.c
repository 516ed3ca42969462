/* Unit tests for sync/options.c: imapsync's command line, Getopt::Long style.
 * Expected error texts were checked against Perl's Getopt::Long 2.52 with
 * imapsync's option spec. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "options.h"

#define MAXW  24
#define WANTS 32

/* imapsync's second line after "Found N extra arguments". */
#define QUOTING                                                                                    \
	"\nIt usually means a quoting issue in the command line or some misspelling options."
#define CREDS "--host1", "h1", "--user1", "u1", "--host2", "h2", "--user2", "u2"

struct pcase {
	const char *name;
	const char *argv[MAXW]; /* after argv[0]; NULL-terminated */
	int check;              /* also run sy_options_check() when parsing succeeded */
	int want_rc;
	const char *want_err; /* the whole error text; "" when none */
	/* "opt=value" as sy_options_format() writes it, "+opt" given, "-opt" not */
	const char *want[WANTS];
};

/* Runs one case; returns a malloc'd description of the first mismatch. */
static char *run_case(const struct pcase *c, const char *extra_file)
{
	struct sy_options o;
	char *argv[MAXW + 2], err[4096], val[1024], *msg = NULL;
	int argc = 0, rc, i;
	size_t n;

	argv[argc++] = (char *)"imapsync";
	for (i = 0; c->argv[i] != NULL; i++)
		argv[argc++] = (char *)c->argv[i];
	argv[argc] = NULL;
	sy_options_init(&o);
	o.extra_file = extra_file;
	rc = sy_options_parse(&o, argc, argv, err, sizeof(err));
	if (rc == 0 && c->check)
		rc = sy_options_check(&o, err, sizeof(err));
	if (rc != c->want_rc || strcmp(err, c->want_err) != 0) {
		if (asprintf(&msg, "%s: rc %d err \"%s\", want rc %d err \"%s\"", c->name, rc, err,
		             c->want_rc, c->want_err) < 0)
			msg = NULL;
		goto out;
	}
	for (i = 0; c->want[i] != NULL && msg == NULL; i++) {
		const char *w = c->want[i];
		int id;

		if (w[0] == '+' || w[0] == '-') {
			id = sy_options_lookup(w + 1);
			if (id < 0 || sy_options_given(&o, (enum sy_opt)id) != (w[0] == '+')) {
				if (asprintf(&msg, "%s: given(%s) is %d", c->name, w + 1,
				             id < 0 ? -1 : sy_options_given(&o, (enum sy_opt)id)) <
				    0)
					msg = NULL;
			}
			continue;
		}
		n = strcspn(w, "=");
		{
			char optname[64];

			snprintf(optname, sizeof(optname), "%.*s", (int)n, w);
			id = sy_options_lookup(optname);
			if (id < 0) {
				if (asprintf(&msg, "%s: no option %s", c->name, optname) < 0)
					msg = NULL;
				continue;
			}
		}
		sy_options_format(&o, (enum sy_opt)id, val, sizeof(val));
		if (strcmp(val, w + n + 1) != 0) {
			if (asprintf(&msg, "%s: %.*s is \"%s\", want \"%s\"", c->name, (int)n, w,
			             val, w + n + 1) < 0)
				msg = NULL;
		}
	}
out:
	sy_options_free(&o);
	return msg;
}

static void run_cases(const struct pcase *cases, size_t count, const char *extra_file)
{
	size_t i;
	int failed = 0;

	for (i = 0; i < count; i++) {
		char *msg = run_case(&cases[i], extra_file);

		if (msg != NULL) {
			print_error("%s\n", msg);
			free(msg);
			failed++;
		}
	}
	if (failed > 0)
		fail_msg("%d of %zu cases failed", failed, count);
}

#define RUN(cases, file) run_cases(cases, sizeof(cases) / sizeof(cases[0]), file)

/* Every way of writing an option and its value. */
static void test_syntax(void **state)
{
	static const struct pcase cases[] = {
	        {"long space",
	         {"--host1", "imap.a.org"},
	         0,
	         0,
	         "",
	         {"host1=imap.a.org", "+host1", "-host2"}},
	        {"long equals", {"--host1=imap.a.org"}, 0, 0, "", {"host1=imap.a.org", "+host1"}},
	        {"single dash",
	         {"-host1", "imap.a.org", "-dry"},
	         0,
	         0,
	         "",
	         {"host1=imap.a.org", "dry=1"}},
	        {"single dash equals", {"-user1=bob"}, 0, 0, "", {"user1=bob"}},
	        {"plus prefix", {"+host1", "imap.a.org"}, 0, 0, "", {"host1=imap.a.org"}},
	        {"equals keeps the rest",
	         {"--folder=a=b", "--search=SINCE 1-Jan-2020"},
	         0,
	         0,
	         "",
	         {"folder=[a=b]", "search=SINCE 1-Jan-2020"}},
	        {"empty word is a value",
	         {"--pidfile", "", "--prefix2", ""},
	         0,
	         0,
	         "",
	         {"pidfile=", "+pidfile", "prefix2="}},
	        {"case-insensitive",
	         {"--debugLIST", "--HOST1", "h", "--NoFixInboxInbox"},
	         0,
	         0,
	         "",
	         {"debuglist=1", "host1=h", "fixInboxINBOX=0", "+fixinboxinbox"}},
	        {"later value wins",
	         {"--host1", "a", "--host1", "b", "--errorsmax", "5", "--errorsmax=7"},
	         0,
	         0,
	         "",
	         {"host1=b", "errorsmax=7"}},
	        {"value looking like an option",
	         {"--host1", "--dry"},
	         0,
	         0,
	         "",
	         {"host1=--dry", "dry=0", "-dry"}},
	        {"value -- is taken", {"--host1", "--", "--dry"}, 0, 0, "", {"host1=--", "dry=1"}},
	        {"negative int value", {"--errorsmax", "-5"}, 0, 0, "", {"errorsmax=-5"}},
	        {"double dash ends options",
	         {"--dry", "--", "--justfolders", "x"},
	         0,
	         -1,
	         "Found 2 extra arguments : [--justfolders x]" QUOTING,
	         {"dry=1", "justfolders=0"}},
	        {"double dash last", {"--dry", "--"}, 0, 0, "", {"dry=1"}},
	        {"second double dash is an argument",
	         {"--dry", "--", "--"},
	         0,
	         -1,
	         "Found 1 extra arguments : [--]" QUOTING,
	         {NULL}},
	        {"lone dash is an argument",
	         {"-"},
	         0,
	         -1,
	         "Found 1 extra arguments : [-]" QUOTING,
	         {NULL}},
	        {"stray words anywhere",
	         {"a", "--dry", "b"},
	         0,
	         -1,
	         "Found 2 extra arguments : [a b]" QUOTING,
	         {"dry=1"}},
	        {"leading empty word ignored", {"", "--dry"}, 0, 0, "", {"dry=1"}},
	        {"lone plus", {"+"}, 0, -1, "Missing option after +", {NULL}},
	        {"triple dash", {"---dry"}, 0, -1, "Unknown option: -dry", {NULL}},
	        {"equals at start", {"--=x"}, 0, -1, "Unknown option: =x", {NULL}},
	};

	(void)state;
	RUN(cases, NULL);
}

static void test_abbrev_and_negation(void **state)
{
	static const struct pcase cases[] = {
	        {"unique prefix",
	         {"--justfolderl", "--subscribea", "--showp", "--errorsm", "9"},
	         0,
	         0,
	         "",
	         {"justfolderlists=1", "subscribeall=1", "showpasswords=1", "errorsmax=9"}},
	        {"exact beats longer names",
	         {"--dry", "--justfolders"},
	         0,
	         0,
	         "",
	         {"dry=1", "dry1=0", "justfolders=1", "justfoldersizes=0", "justfolderlists=0"}},
	        {"exact alias",
	         {"--delete", "--expunge", "--ipv6"},
	         0,
	         0,
	         "",
	         {"delete1=1", "expunge1=1", "inet6=1", "+delete1"}},
	        {"prefix of one option's names", {"--modules"}, 0, 0, "", {"modulesversion=1"}},
	        {"ambiguous", {"--dr"}, 0, -1, "Option dr is ambiguous (dry, dry1)", {"dry=0"}},
	        {"ambiguous lists every spelling",
	         {"--host", "x"},
	         0,
	         -1,
	         "Option host is ambiguous (host1, host2)\nFound 1 extra arguments : [x]" QUOTING,
	         {NULL}},
	        {"ambiguous negation",
	         {"--nossl"},
	         0,
	         -1,
	         "Option nossl is ambiguous (nossl1, nossl2, nosslcheck)",
	         {NULL}},
	        {"ambiguous dashed negation",
	         {"--no-ss"},
	         0,
	         -1,
	         "Option no-ss is ambiguous (no-ssl1, no-ssl2, no-sslcheck)",
	         {NULL}},
	        {"ambiguous aliases listed",
	         {"--subscribe_", "--subs"},
	         0,
	         -1,
	         "Option subs is ambiguous (subscribe, subscribe_all, subscribeall, subscribed)",
	         {"subscribeall=1"}},
	        {"ambiguous typed in capitals",
	         {"--DR"},
	         0,
	         -1,
	         "Option dr is ambiguous (dry, dry1)",
	         {NULL}},
	        {"negations",
	         {"--nossl1", "--no-tls2", "--NoSanitize", "--no-DRY"},
	         0,
	         0,
	         "",
	         {"ssl1=0", "+ssl1", "tls2=0", "+tls2", "sanitize=0", "dry=0", "+dry", "-ssl2",
	          "-tls1"}},
	        {"negation then positive",
	         {"--nodry", "--dry", "--ssl1", "--nossl1"},
	         0,
	         0,
	         "",
	         {"dry=1", "ssl1=0"}},
	        {"default-on switched off",
	         {"--noresyncflags", "--nosyncinternaldates", "--nofoldersizes", "--nolog",
	          "--noid", "--nomixfolders"},
	         0,
	         0,
	         "",
	         {"resyncflags=0", "syncinternaldates=0", "foldersizes=0", "log=0", "id=0",
	          "mixfolders=0"}},
	        {"negated alias",
	         {"--nodelete", "--no-expunge"},
	         0,
	         0,
	         "",
	         {"delete1=0", "+delete1", "expunge1=0", "+expunge1"}},
	        {"no-options of their own",
	         {"--noexclude", "--nof1f2", "--noregexmess", "--noregexflag"},
	         0,
	         0,
	         "",
	         {"noexclude=1", "nof1f2=1", "noregexmess=1", "noregexflag=1"}},
	        {"not negatable",
	         {"--nogmail1", "--noabort", "--nodelete1emptyfolders"},
	         0,
	         -1,
	         "Unknown option: nogmail1\nUnknown option: noabort\nUnknown option: "
	         "nodelete1emptyfolders",
	         {NULL}},
	        {"unknown",
	         {"--foo", "--Foo-Bar"},
	         0,
	         -1,
	         "Unknown option: foo\nUnknown option: foo-bar",
	         {NULL}},
	        {"switch with =value",
	         {"--dry=1"},
	         0,
	         -1,
	         "Option dry does not take an argument",
	         {"dry=0"}},
	        {"switch with =",
	         {"--ssl1="},
	         0,
	         -1,
	         "Option ssl1 does not take an argument",
	         {NULL}},
	        {"negation with =value",
	         {"--nodry=0"},
	         0,
	         -1,
	         "Option nodry does not take an argument",
	         {NULL}},
	        {"abbreviation named in full",
	         {"--fixinbox=1", "--no-fixinbox=1"},
	         0,
	         -1,
	         "Option fixinboxinbox does not take an argument\nOption no-fixinboxinbox does not "
	         "take an argument",
	         {NULL}},
	        {"collapsed abbreviation named by option",
	         {"--modules=1"},
	         0,
	         -1,
	         "Option modulesversion does not take an argument",
	         {NULL}},
	        {"switch takes no value word",
	         {"--dry", "1"},
	         0,
	         -1,
	         "Found 1 extra arguments : [1]" QUOTING,
	         {"dry=1"}},
	        {"--delete 2",
	         {"--delete", "2"},
	         0,
	         -1,
	         "May be you mean --delete2 instead of --delete 2\nFound 1 extra arguments : "
	         "[2]" QUOTING,
	         {NULL}},
	};

	(void)state;
	RUN(cases, NULL);
}

static void test_values(void **state)
{
	static const struct pcase cases[] = {
	        {"lists keep order",
	         {"--folder", "INBOX", "--folder", "Sent", "--folder=Drafts", "--regextrans2",
	          "s/a/b/", "--regextrans2", "s/c/d/"},
	         0,
	         0,
	         "",
	         {"folder=[INBOX,Sent,Drafts]", "regextrans2=[s/a/b/,s/c/d/]", "+folder",
	          "-include"}},
	        {"useheader list",
	         {"--useheader", "Message-Id", "--useh", "Date"},
	         0,
	         0,
	         "",
	         {"useheader=[Message-Id,Date]"}},
	        {"empty list value", {"--folder", ""}, 0, 0, "", {"folder=[]"}},
	        {"hash",
	         {"--sslargs1", "SSL_verify_mode=1", "--sslargs1", "SSL_version=TLSv1_2"},
	         0,
	         0,
	         "",
	         {"sslargs1={SSL_verify_mode=1,SSL_version=TLSv1_2}", "sslargs2={}", "+sslargs1"}},
	        {"hash key replaced",
	         {"--sslargs2", "a=1", "--sslargs2", "b=2", "--sslargs2=a=3"},
	         0,
	         0,
	         "",
	         {"sslargs2={a=3,b=2}"}},
	        {"hash splits at first =",
	         {"--f1f2", "INBOX.Old=Archive=2020", "--f1f2h", "x=y"},
	         0,
	         0,
	         "",
	         {"f1f2={INBOX.Old=Archive=2020,x=y}", "+f1f2", "+f1f2h"}},
	        {"hash empty key", {"--sslargs1", "=x"}, 0, 0, "", {"sslargs1={=x}"}},
	        {"hash without =",
	         {"--sslargs1", "SSL_verify_mode"},
	         0,
	         -1,
	         "Option sslargs1, key \"SSL_verify_mode\", requires a value",
	         {"sslargs1={}", "-sslargs1"}},
	        {"hash empty word",
	         {"--f1f2", ""},
	         0,
	         -1,
	         "Option f1f2, key \"\", requires a value",
	         {NULL}},
	        {"ints with _",
	         {"--errorsmax", "20_000", "--maxbytespersecond", "40_000", "--maxbytesafter",
	          "3_000_000_000", "--port1", "_9_93"},
	         0,
	         0,
	         "",
	         {"errorsmax=20000", "maxbytespersecond=40000", "maxbytesafter=3000000000",
	          "port1=993"}},
	        {"int with sign",
	         {"--errorsmax", "+5", "--exitwhenover", "1_"},
	         0,
	         0,
	         "",
	         {"errorsmax=5", "exitwhenover=1"}},
	        {"int not a number",
	         {"--errorsmax", "x"},
	         0,
	         -1,
	         "Value \"x\" invalid for option errorsmax (number expected)",
	         {"errorsmax=50", "-errorsmax"}},
	        {"int hex",
	         {"--port1", "0x10"},
	         0,
	         -1,
	         "Value \"0x10\" invalid for option port1 (number expected)",
	         {NULL}},
	        {"int decimal",
	         {"--maxsize", "1.5"},
	         0,
	         -1,
	         "Value \"1.5\" invalid for option maxsize (number expected)",
	         {NULL}},
	        {"int with blank",
	         {"--errorsmax", " 5"},
	         0,
	         -1,
	         "Value \" 5\" invalid for option errorsmax (number expected)",
	         {NULL}},
	        {"int empty",
	         {"--errorsmax", ""},
	         0,
	         -1,
	         "Value \"\" invalid for option errorsmax (number expected)",
	         {NULL}},
	        {"int too big",
	         {"--maxsize", "99999999999999999999"},
	         0,
	         -1,
	         "Value \"99999999999999999999\" invalid for option maxsize (number expected)",
	         {NULL}},
	        {"int abbreviated, named in full",
	         {"--errorsm", "x"},
	         0,
	         -1,
	         "Value \"x\" invalid for option errorsmax (number expected)",
	         {NULL}},
	        {"int option eats option word",
	         {"--errorsmax", "--dry"},
	         0,
	         -1,
	         "Value \"--dry\" invalid for option errorsmax (number expected)",
	         {"dry=0"}},
	        {"floats",
	         {"--maxage", "1.5", "--minage", ".5", "--timeout", "1_0.5", "--maxsleep", "1e1",
	          "--maxmessagespersecond", "1._5"},
	         0,
	         0,
	         "",
	         {"maxage=1.5", "minage=0.5", "timeout=10.5", "maxsleep=10",
	          "maxmessagespersecond=1.5", "+maxage"}},
	        {"float integer",
	         {"--timeout", "0", "--maxage=-2"},
	         0,
	         0,
	         "",
	         {"timeout=0", "maxage=-2"}},
	        {"float not a number",
	         {"--maxage", "x"},
	         0,
	         -1,
	         "Value \"x\" invalid for option maxage (real number expected)",
	         {"maxage=0", "-maxage"}},
	        {"float trailing dot",
	         {"--maxage", "1."},
	         0,
	         -1,
	         "Value \"1.\" invalid for option maxage (real number expected)",
	         {NULL}},
	        {"float bad exponent",
	         {"--timeout", "1.5e"},
	         0,
	         -1,
	         "Value \"1.5e\" invalid for option timeout (real number expected)",
	         {NULL}},
	        {"float leading _",
	         {"--maxage", "_1"},
	         0,
	         -1,
	         "Value \"_1\" invalid for option maxage (real number expected)",
	         {NULL}},
	        {"missing value at end",
	         {"--host1"},
	         0,
	         -1,
	         "Option host1 requires an argument",
	         {"-host1"}},
	        {"missing value after =",
	         {"--host1=", "--errorsmax="},
	         0,
	         -1,
	         "Option host1 requires an argument\nOption errorsmax requires an argument",
	         {NULL}},
	        {"missing hash value",
	         {"--sslargs1"},
	         0,
	         -1,
	         "Option sslargs1 requires an argument",
	         {NULL}},
	        {"every error reported",
	         {"--foo", "--errorsmax", "x", "--host1=", "stray", "--bar", "--maxage=y"},
	         0,
	         -1,
	         "Unknown option: foo\nValue \"x\" invalid for option errorsmax (number "
	         "expected)\nOption host1 requires an argument\nUnknown option: bar\n"
	         "Value \"y\" invalid for option maxage (real number expected)\nFound 1 extra "
	         "arguments : [stray]" QUOTING,
	         {NULL}},
	        {"given is kept per option",
	         {"--notls1", "--timeout", "30"},
	         0,
	         0,
	         "",
	         {"+tls1", "tls1=0", "-ssl1", "-tls2", "+timeout", "-timeout1"}},
	};

	(void)state;
	RUN(cases, NULL);
}

/* imapsync's defaults, after sy_options_check() with nothing else given. */
static void test_defaults(void **state)
{
	static const struct pcase cases[] = {
	        {"parse-time defaults",
	         {NULL},
	         0,
	         0,
	         "",
	         {"errorsmax=50", "timeout=120", "logdir=LOG_imapsync", "tmpdir=/tmp",
	          "pidfile=(undef)", "syncinternaldates=1", "host1=(undef)", "-errorsmax"}},
	        {"defaults",
	         {CREDS},
	         1,
	         0,
	         "",
	         {"syncinternaldates=1", "resyncflags=1", "subscribe=1",
	          "subscribeall=0",      "errorsmax=50",  "timeout=120",
	          "timeout1=120",        "timeout2=120",  "reconnectretry1=3",
	          "reconnectretry2=3",   "split1=100",    "split2=100",
	          "addheader=0",         "skipsize=1",    "foldersizes=1",
	          "foldersizesatend=1",  "sslcheck=1",    "checkselectable=1",
	          "checkfoldersexist=1", "fixslash2=1",   "fixInboxINBOX=1",
	          "flagscase=1",         "filterflags=1", "filterbuggyflags=0",
	          "expungeaftereach=1"}},
	        {"more defaults",
	         {CREDS},
	         1,
	         0,
	         "",
	         {"wholeheaderifneeded=1",
	          "log=1",
	          "logdir=LOG_imapsync",
	          "logfile=(undef)",
	          "tmpdir=/tmp",
	          "pidfile=/tmp/imapsync.pid",
	          "pidfilelocking=0",
	          "keepalive1=1",
	          "keepalive2=1",
	          "id=1",
	          "dry=0",
	          "delete1=0",
	          "delete2=0",
	          "delete2duplicates=0",
	          "uidexpunge2=0",
	          "expunge1=0",
	          "expunge2=0",
	          "usecache=0",
	          "useuid=0",
	          "maxsleep=2",
	          "maxbytespersecond=0",
	          "maxmessagespersecond=0",
	          "abletosearch1=1",
	          "abletosearch2=1"}},
	        {"still more defaults",
	         {CREDS},
	         1,
	         0,
	         "",
	         {"checknoabletosearch=1",
	          "authmech1=LOGIN",
	          "authmech2=LOGIN",
	          "mixfolders=1",
	          "automap=0",
	          "syncduplicates=0",
	          "showpasswords=0",
	          "sanitize=1",
	          "errorsdump=1",
	          "trylogin=1",
	          "releasecheck=0",
	          "justconnect=0",
	          "debugssl=1",
	          "useheader=[]",
	          "folder=[]",
	          "port1=0",
	          "port2=0",
	          "ssl1=0",
	          "tls1=0",
	          "-ssl1",
	          "-tls1",
	          "-port1",
	          "skipcrossduplicates=0",
	          "syncacls=0",
	          "maxage=0",
	          "-maxage"}},
	};

	(void)state;
	RUN(cases, NULL);
}

/* sy_options_check(): derived values, implications and conflicts. */
static void test_check(void **state)
{
	static const struct pcase cases[] = {
	        {"delete2 implies",
	         {CREDS, "--delete2"},
	         1,
	         0,
	         "",
	         {"uidexpunge2=1", "delete2duplicates=1", "-uidexpunge2", "-delete2duplicates"}},
	        {"delete2 syncduplicates",
	         {CREDS, "--delete2", "--syncduplicates"},
	         1,
	         0,
	         "",
	         {"delete2duplicates=0", "uidexpunge2=1"}},
	        {"delete2 nodelete2duplicates",
	         {CREDS, "--delete2", "--nodelete2duplicates"},
	         1,
	         0,
	         "",
	         {"delete2duplicates=0", "uidexpunge2=1"}},
	        {"delete2 nouidexpunge2",
	         {CREDS, "--delete2", "--nouidexpunge2"},
	         1,
	         0,
	         "",
	         {"uidexpunge2=0", "delete2duplicates=1"}},
	        {"delete2duplicates implies uidexpunge2",
	         {CREDS, "--delete2duplicates"},
	         1,
	         0,
	         "",
	         {"uidexpunge2=1", "delete2=0"}},
	        {"delete1 implies expunge1",
	         {CREDS, "--delete1"},
	         1,
	         0,
	         "",
	         {"expunge1=1", "-expunge1"}},
	        {"delete alias implies expunge1",
	         {CREDS, "--delete"},
	         1,
	         0,
	         "",
	         {"delete1=1", "expunge1=1"}},
	        {"delete1 noexpunge1",
	         {CREDS, "--delete1", "--noexpunge1"},
	         1,
	         0,
	         "",
	         {"expunge1=0"}},
	        {"useuid implies usecache",
	         {CREDS, "--useuid"},
	         1,
	         0,
	         "",
	         {"usecache=1", "cacheaftercopy=1", "-usecache"}},
	        {"useuid nousecache",
	         {CREDS, "--useuid", "--nousecache"},
	         1,
	         0,
	         "",
	         {"usecache=0", "cacheaftercopy=0"}},
	        {"usecache nocacheaftercopy",
	         {CREDS, "--usecache", "--nocacheaftercopy"},
	         1,
	         0,
	         "",
	         {"cacheaftercopy=0"}},
	        {"timeout sets both",
	         {CREDS, "--timeout", "30"},
	         1,
	         0,
	         "",
	         {"timeout1=30", "timeout2=30", "-timeout1"}},
	        {"timeout2 wins",
	         {CREDS, "--timeout", "30", "--timeout2", "5"},
	         1,
	         0,
	         "",
	         {"timeout1=30", "timeout2=5"}},
	        {"timeout1 alone",
	         {CREDS, "--timeout1", "0"},
	         1,
	         0,
	         "",
	         {"timeout1=0", "timeout2=120"}},
	        {"delete2foldersonly implies",
	         {CREDS, "--delete2foldersonly", "/^Junk$/"},
	         1,
	         0,
	         "",
	         {"delete2folders=1", "-delete2folders"}},
	        {"delete2foldersbutnot implies",
	         {CREDS, "--delete2foldersbutnot", "/Tasks$/"},
	         1,
	         0,
	         "",
	         {"delete2folders=1"}},
	        {"justfolders",
	         {CREDS, "--justfolders"},
	         1,
	         0,
	         "",
	         {"foldersizes=0", "foldersizesatend=1", "checknoabletosearch=0"}},
	        {"justfolders foldersizes",
	         {CREDS, "--justfolders", "--foldersizes"},
	         1,
	         0,
	         "",
	         {"foldersizes=1", "foldersizesatend=1"}},
	        {"justfolders nofoldersizesatend",
	         {CREDS, "--justfolders", "--nofoldersizesatend"},
	         1,
	         0,
	         "",
	         {"foldersizes=0", "foldersizesatend=0"}},
	        {"nofoldersizes",
	         {CREDS, "--nofoldersizes"},
	         1,
	         0,
	         "",
	         {"foldersizes=0", "foldersizesatend=0"}},
	        {"idatefromheader",
	         {CREDS, "--idatefromheader", "--syncinternaldates"},
	         1,
	         0,
	         "",
	         {"syncinternaldates=0"}},
	        {"noabletosearch",
	         {CREDS, "--noabletosearch", "--abletosearch2"},
	         1,
	         0,
	         "",
	         {"abletosearch1=0", "abletosearch2=1"}},
	        {"authuser gives PLAIN",
	         {CREDS, "--authuser1", "admin"},
	         1,
	         0,
	         "",
	         {"authmech1=PLAIN", "authmech2=LOGIN"}},
	        {"authmd5",
	         {CREDS, "--authmd52"},
	         1,
	         0,
	         "",
	         {"authmech1=LOGIN", "authmech2=CRAM-MD5"}},
	        {"authmd5 both",
	         {CREDS, "--authmd5"},
	         1,
	         0,
	         "",
	         {"authmech1=CRAM-MD5", "authmech2=CRAM-MD5"}},
	        {"authmech upper-cased",
	         {CREDS, "--authmech1", "xoauth2"},
	         1,
	         0,
	         "",
	         {"authmech1=XOAUTH2"}},
	        {"debugimap",
	         {CREDS, "--debugimap"},
	         1,
	         0,
	         "",
	         {"debugimap1=1", "debugimap2=1", "debug=1"}},
	        {"debugimap2", {CREDS, "--debugimap2"}, 1, 0, "", {"debugimap1=0", "debug=1"}},
	        {"split 0", {CREDS, "--split1", "0"}, 1, 0, "", {"split1=100"}},
	        {"search fills",
	         {CREDS, "--search", "SEEN", "--search2", "ALL"},
	         1,
	         0,
	         "",
	         {"search1=SEEN", "search2=ALL"}},
	        {"pidfile from tmpdir",
	         {CREDS, "--tmpdir", "/var/tmp"},
	         1,
	         0,
	         "",
	         {"pidfile=/var/tmp/imapsync.pid"}},
	        {"empty tmpdir",
	         {CREDS, "--tmpdir", ""},
	         1,
	         0,
	         "",
	         {"tmpdir=/tmp", "pidfile=/tmp/imapsync.pid"}},
	        {"no pidfile", {CREDS, "--pidfile", ""}, 1, 0, "", {"pidfile="}},
	        {"justconnect implied",
	         {"--host1", "h"},
	         1,
	         0,
	         "",
	         {"justconnect=1", "-justconnect"}},
	        {"justconnect comes first",
	         {"--host1", "h", "--delete1", "--delete2", "--proxyauth1"},
	         1,
	         0,
	         "",
	         {"justconnect=1"}},
	        {"sanitize",
	         {"--host1", " imap.a.org ", "--user1", " bob ", "--password1", " pw ", "--host2",
	          "h 2/", "--user2", "\tu2 "},
	         1,
	         0,
	         "",
	         {"host1=imap.a.org", "user1=bob", "password1=pw", "host2=h2", "user2=\tu2"}},
	        {"nosanitize",
	         {"--nosanitize", "--host1", " h/1 ", "--user1", " bob ", "--password1", " pw ",
	          "--host2", "h2", "--user2", "u2"},
	         1,
	         0,
	         "",
	         {"host1=h1", "user1= bob ", "password1= pw "}},
	        {"delete1 with delete2",
	         {CREDS, "--delete1", "--delete2"},
	         1,
	         -1,
	         "Warning: using --delete1 and --delete2 together is almost always a bad idea. You "
	         "should probably launch two runs, the first with "
	         "--delete2 for a strict sync, then the second with --delete1 to remove messages "
	         "from the source account. Exiting imapsync.",
	         {NULL}},
	        {"usecache with skipcrossduplicates",
	         {CREDS, "--usecache", "--skipcrossduplicates"},
	         1,
	         -1,
	         "Error: can not have both --usecache and --skipcrossduplicates",
	         {NULL}},
	        {"useuid with skipcrossduplicates",
	         {CREDS, "--useuid", "--skipcrossduplicates"},
	         1,
	         0,
	         "",
	         {"usecache=1", "skipcrossduplicates=1"}},
	        {"proxyauth without authuser",
	         {CREDS, "--proxyauth1"},
	         1,
	         -1,
	         "With --proxyauth1, --authuser1 option is mandatory, for help run imapsync --help",
	         {NULL}},
	        {"proxyauth with authuser",
	         {CREDS, "--proxyauth2", "--authuser2", "admin"},
	         1,
	         0,
	         "",
	         {"proxyauth2=1", "authmech2=PLAIN"}},
	        {"every conflict reported",
	         {CREDS, "--usecache", "--skipcrossduplicates", "--proxyauth2", "--delete",
	          "--delete2"},
	         1,
	         -1,
	         "Error: can not have both --usecache and --skipcrossduplicates\n"
	         "Warning: using --delete1 and --delete2 together is almost always a bad idea. You "
	         "should probably launch two runs, the first with "
	         "--delete2 for a strict sync, then the second with --delete1 to remove messages "
	         "from the source account. Exiting imapsync.\n"
	         "With --proxyauth2, --authuser2 option is mandatory, for help run imapsync --help",
	         {NULL}},
	};

	(void)state;
	RUN(cases, NULL);
}

static char tmpdir[] = "/tmp/test_sync_options.XXXXXX";

static char *tmp_file(const char *name, const char *content)
{
	char *path;
	FILE *fp;

	if (asprintf(&path, "%s/%s", tmpdir, name) < 0)
		fail_msg("asprintf");
	fp = fopen(path, "w");
	assert_non_null(fp);
	fputs(content, fp);
	fclose(fp);
	return path;
}

static int setup_tmp(void **state)
{
	(void)state;
	return mkdtemp(tmpdir) != NULL ? 0 : -1;
}

static int teardown_tmp(void **state)
{
	char cmd[128];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

/* Parses words (NULL-terminated) and checks; asserts success. */
static void parse_ok(struct sy_options *o, const char *const *words)
{
	char *argv[MAXW + 2], err[1024];
	int argc = 0;

	argv[argc++] = (char *)"imapsync";
	while (*words != NULL)
		argv[argc++] = (char *)*words++;
	argv[argc] = NULL;
	sy_options_init(o);
	if (sy_options_parse(o, argc, argv, err, sizeof(err)) < 0 ||
	    sy_options_check(o, err, sizeof(err)) < 0)
		fail_msg("parse: %s", err);
}

static void test_passwords(void **state)
{
	char *good = tmp_file("pass1", "s3cret\nsecond line\n");
	char *crlf = tmp_file("pass2", " pw with blanks \r\n");
	char *emptyf = tmp_file("empty", "");
	char *missing, err[1024], want[1024];
	struct sy_options o;

	(void)state;
	if (asprintf(&missing, "%s/nonexistent", tmpdir) < 0)
		fail_msg("asprintf");
	unsetenv("IMAPSYNC_PASSWORD1");
	unsetenv("IMAPSYNC_PASSWORD2");

	/* Nothing given: the CLI must prompt, except for PREAUTH and OAuth. */
	parse_ok(&o, (const char *[]){CREDS, "--authmech2", "preauth", NULL});
	assert_int_equal(sy_options_resolve_passwords(&o, err, sizeof(err)), 0);
	assert_null(o.acc[0].password);
	assert_true(sy_options_need_password(&o, 0));
	assert_false(sy_options_need_password(&o, 1));
	sy_options_free(&o);
	parse_ok(&o,
	         (const char *[]){CREDS, "--oauthaccesstoken1", "tok", "--password2", "", NULL});
	assert_int_equal(sy_options_resolve_passwords(&o, err, sizeof(err)), 0);
	assert_false(sy_options_need_password(&o, 0));
	assert_true(sy_options_need_password(&o, 1)); /* "" is no password */
	sy_options_free(&o);

	/* The environment fills a missing password, and beats --password. */
	setenv("IMAPSYNC_PASSWORD1", "envpw1", 1);
	setenv("IMAPSYNC_PASSWORD2", "envpw2", 1);
	parse_ok(&o, (const char *[]){CREDS, "--password2", "clipw2", NULL});
	assert_int_equal(sy_options_resolve_passwords(&o, err, sizeof(err)), 0);
	assert_string_equal(o.acc[0].password, "envpw1");
	assert_string_equal(o.acc[1].password, "envpw2");
	assert_false(sy_options_need_password(&o, 0));
	sy_options_free(&o);
	setenv("IMAPSYNC_PASSWORD2", "", 1); /* empty: ignored */
	parse_ok(&o, (const char *[]){CREDS, "--password2", "clipw2", NULL});
	assert_int_equal(sy_options_resolve_passwords(&o, err, sizeof(err)), 0);
	assert_string_equal(o.acc[1].password, "clipw2");
	sy_options_free(&o);

	/* The passfile beats both; first line only, line end removed, blanks
	 * kept (imapsync trims before reading it). */
	parse_ok(&o, (const char *[]){CREDS, "--passfile1", good, "--password1", "cli",
	                              "--passfile2", crlf, NULL});
	assert_int_equal(sy_options_resolve_passwords(&o, err, sizeof(err)), 0);
	assert_string_equal(o.acc[0].password, "s3cret");
	assert_string_equal(o.acc[1].password, " pw with blanks ");
	sy_options_free(&o);
	parse_ok(&o, (const char *[]){CREDS, "--passfile2", emptyf, NULL});
	assert_int_equal(sy_options_resolve_passwords(&o, err, sizeof(err)), 0);
	assert_string_equal(o.acc[1].password, "");
	assert_false(sy_options_need_password(&o, 1));
	sy_options_free(&o);

	/* Unreadable passfiles: imapsync's message, every one of them. */
	parse_ok(&o, (const char *[]){CREDS, "--passfile1", missing, "--passfile2", tmpdir, NULL});
	assert_int_equal(sy_options_resolve_passwords(&o, err, sizeof(err)), -1);
	snprintf(want, sizeof(want),
	         "Failure: file from parameter --passfile1 %s does not exist or is not readable\n"
	         "Failure: file from parameter --passfile2 %s does not exist or is not readable",
	         missing, tmpdir);
	assert_string_equal(err, want);
	sy_options_free(&o);

	unsetenv("IMAPSYNC_PASSWORD1");
	unsetenv("IMAPSYNC_PASSWORD2");
	free(good);
	free(crlf);
	free(emptyf);
	free(missing);
}

static void test_masked(void **state)
{
	struct sy_options o;

	(void)state;
	parse_ok(&o, (const char *[]){CREDS, "--password1", "pw", NULL});
	assert_string_equal(sy_options_masked(&o, o.acc[0].password), "MASKED");
	assert_string_equal(sy_options_masked(&o, NULL), "MASKED");
	sy_options_free(&o);
	parse_ok(&o, (const char *[]){CREDS, "--password1", "pw", "--showpasswords", NULL});
	assert_string_equal(sy_options_masked(&o, o.acc[0].password), "pw");
	assert_string_equal(sy_options_masked(&o, NULL), "");
	sy_options_free(&o);
}

static void test_options_extra(void **state)
{
	char *file =
	        tmp_file("options_extra.txt",
	                 "--folder 'Sent Items' --errorsmax 7 \"--regextrans2\" \"s/a\\\"b/c/\" "
	                 "--user1 it\\'s\n--dry\n");
	char *bad = tmp_file("bad_extra.txt", "--bogus x --errorsmax=y\n");
	char *unbalanced = tmp_file("unbalanced.txt", "--folder 'INBOX\n");
	char *missing = NULL, *want_bad = NULL, *want_unbal = NULL;
	const struct pcase cases[] = {
	        {"extra after argv",
	         {"--folder", "INBOX", "--errorsmax", "5"},
	         0,
	         0,
	         "",
	         {"folder=[INBOX,Sent Items]", "errorsmax=7", "regextrans2=[s/a\"b/c/]",
	          "user1=it's", "dry=0", "+user1"}},
	};

	(void)state;
	RUN(cases, file);
	/* Not read unless enabled, or when missing. */
	{
		const struct pcase off[] = {
		        {"extra disabled",
		         {"--folder", "INBOX"},
		         0,
		         0,
		         "",
		         {"folder=[INBOX]", "errorsmax=50"}},
		};
		struct sy_options o;
		char *argv[] = {(char *)"imapsync", NULL}, err[256];

		RUN(off, NULL);
		if (asprintf(&missing, "%s/none.txt", tmpdir) < 0)
			fail_msg("asprintf");
		RUN(off, missing);
		RUN(off, tmpdir); /* a directory is no file */
		sy_options_init(&o);
		o.extra_file = file;
		assert_int_equal(sy_options_parse(&o, 1, argv, err, sizeof(err)), 0);
		assert_string_equal(o.extra_line,
		                    "--folder 'Sent Items' --errorsmax 7 "
		                    "\"--regextrans2\" \"s/a\\\"b/c/\" --user1 it\\'s");
		assert_int_equal(o.nargs, 0);
		assert_string_equal(o.progname, "imapsync");
		sy_options_free(&o);
	}
	/* Errors name the file; leftovers count as in argv. */
	if (asprintf(&want_bad,
	             "%s:1: Unknown option: bogus\n"
	             "%s:1: Value \"y\" invalid for option errorsmax (number expected)\n"
	             "%s:1: Found 1 extra arguments : [x]\n"
	             "%s:1: It usually means a quoting issue in the command line or some "
	             "misspelling options.",
	             bad, bad, bad, bad) < 0 ||
	    asprintf(&want_unbal, "%s:1: unbalanced quote", unbalanced) < 0)
		fail_msg("asprintf");
	{
		const struct pcase errs[] = {
		        {"extra errors", {"--dry"}, 0, -1, want_bad, {"dry=1"}},
		};
		const struct pcase unbal[] = {
		        {"extra unbalanced", {"--dry"}, 0, -1, want_unbal, {"folder=[]"}},
		};

		RUN(errs, bad);
		RUN(unbal, unbalanced);
	}
	free(want_bad);
	free(want_unbal);
	free(missing);
	free(file);
	free(bad);
	free(unbalanced);
}

/* Every option the manual page and the behaviour notes name is accepted. */
static void test_manpage_options(void **state)
{
	static const char *const words[][2] = {
	        {"--abort", NULL},
	        {"--addheader", NULL},
	        {"--authmd51", NULL},
	        {"--authmd52", NULL},
	        {"--authmech1", "PLAIN"},
	        {"--authmech2", "PLAIN"},
	        {"--authuser1", "a"},
	        {"--authuser2", "a"},
	        {"--automap", NULL},
	        {"--debug", NULL},
	        {"--debugcontent", NULL},
	        {"--debugcrossduplicates", NULL},
	        {"--debugflags", NULL},
	        {"--debugfolders", NULL},
	        {"--debugimap", NULL},
	        {"--debugimap1", NULL},
	        {"--debugimap2", NULL},
	        {"--debugmemory", NULL},
	        {"--debugssl", "4"},
	        {"--delete1", NULL},
	        {"--delete1emptyfolders", NULL},
	        {"--delete2", NULL},
	        {"--delete2duplicates", NULL},
	        {"--delete2folders", NULL},
	        {"--delete2foldersbutnot", "/x/"},
	        {"--delete2foldersonly", "/x/"},
	        {"--disarmreadreceipts", NULL},
	        {"--domain1", "d"},
	        {"--domain2", "d"},
	        {"--domino1", NULL},
	        {"--domino2", NULL},
	        {"--dry", NULL},
	        {"--errorsmax", "1"},
	        {"--exchange1", NULL},
	        {"--exchange2", NULL},
	        {"--exclude", "x"},
	        {"--exitwhenover", "1"},
	        {"--expunge1", NULL},
	        {"--f1f2", "a=b"},
	        {"--filterbuggyflags", NULL},
	        {"--folder", "x"},
	        {"--folderfirst", "x"},
	        {"--folderlast", "x"},
	        {"--folderrec", "x"},
	        {"--gmail1", NULL},
	        {"--gmail2", NULL},
	        {"--help", NULL},
	        {"--host1", "h"},
	        {"--host2", "h"},
	        {"--idatefromheader", NULL},
	        {"--include", "x"},
	        {"--justconnect", NULL},
	        {"--justfolders", NULL},
	        {"--justfoldersizes", NULL},
	        {"--justlogin", NULL},
	        {"--keepalive1", NULL},
	        {"--keepalive2", NULL},
	        {"--logdir", "d"},
	        {"--logfile", "f"},
	        {"--maxage", "1.5"},
	        {"--maxbytesafter", "1"},
	        {"--maxbytespersecond", "1"},
	        {"--maxlinelength", "1"},
	        {"--maxmessagespersecond", "0.5"},
	        {"--maxsize", "1"},
	        {"--maxsleep", "1"},
	        {"--minage", "1"},
	        {"--minsize", "1"},
	        {"--noabletosearch", NULL},
	        {"--noabletosearch1", NULL},
	        {"--noabletosearch2", NULL},
	        {"--noexpunge1", NULL},
	        {"--noexpunge2", NULL},
	        {"--nofoldersizes", NULL},
	        {"--nofoldersizesatend", NULL},
	        {"--noid", NULL},
	        {"--nolog", NULL},
	        {"--nomixfolders", NULL},
	        {"--noreleasecheck", NULL},
	        {"--noresyncflags", NULL},
	        {"--nossl1", NULL},
	        {"--nossl2", NULL},
	        {"--nosyncacls", NULL},
	        {"--notls1", NULL},
	        {"--notls2", NULL},
	        {"--nouidexpunge2", NULL},
	        {"--nousecache", NULL},
	        {"--oauthaccesstoken1", "t"},
	        {"--oauthaccesstoken2", "t"},
	        {"--oauthdirect1", "t"},
	        {"--oauthdirect2", "t"},
	        {"--office1", NULL},
	        {"--office2", NULL},
	        {"--passfile1", "f"},
	        {"--passfile2", "f"},
	        {"--password1", "p"},
	        {"--password2", "p"},
	        {"--pidfile", "f"},
	        {"--pidfilelocking", NULL},
	        {"--pipemess", "cat"},
	        {"--port1", "143"},
	        {"--port2", "993"},
	        {"--prefix1", "INBOX."},
	        {"--prefix2", ""},
	        {"--proxyauth1", NULL},
	        {"--proxyauth2", NULL},
	        {"--regexflag", "s/a//"},
	        {"--regexmess", "s/a//"},
	        {"--regextrans2", "s/a//"},
	        {"--releasecheck", NULL},
	        {"--resyncflags", NULL},
	        {"--resynclabels", NULL},
	        {"--search", "ALL"},
	        {"--search1", "ALL"},
	        {"--search2", "ALL"},
	        {"--sep1", "."},
	        {"--sep2", "/"},
	        {"--showpasswords", NULL},
	        {"--skipcrossduplicates", NULL},
	        {"--skipemptyfolders", NULL},
	        {"--skipmess", "m/x/"},
	        {"--ssl1", NULL},
	        {"--ssl2", NULL},
	        {"--sslargs1", "SSL_verify_mode=1"},
	        {"--sslargs2", "SSL_verify_mode=1"},
	        {"--subfolder1", "s"},
	        {"--subfolder2", "s"},
	        {"--subscribe", NULL},
	        {"--subscribeall", NULL},
	        {"--subscribed", NULL},
	        {"--syncacls", NULL},
	        {"--syncduplicates", NULL},
	        {"--syncinternaldates", NULL},
	        {"--synclabels", NULL},
	        {"--tests", NULL},
	        {"--testslive", NULL},
	        {"--testslive6", NULL},
	        {"--timeout1", "1"},
	        {"--timeout2", "1"},
	        {"--tls1", NULL},
	        {"--tls2", NULL},
	        {"--tmpdir", "/tmp"},
	        {"--truncmess", "1"},
	        {"--usecache", NULL},
	        {"--useheader", "Message-Id"},
	        {"--user1", "u"},
	        {"--user2", "u"},
	        {"--useuid", NULL},
	        {"--version", NULL},
	        /* named by the behaviour notes (imapsync 2.229) */
	        {"--appendlimit", "1"},
	        {"--checkfoldersexist", NULL},
	        {"--checknoabletosearch", NULL},
	        {"--checkselectable", NULL},
	        {"--compress1", NULL},
	        {"--dry1", NULL},
	        {"--errorsdump", NULL},
	        {"--noerrorsdump", NULL},
	        {"--expunge2", NULL},
	        {"--expungeaftereach", NULL},
	        {"--noexpungeaftereach", NULL},
	        {"--fetch_hash_set", "1:*"},
	        {"--filterflags", NULL},
	        {"--nofilterflags", NULL},
	        {"--fixInboxINBOX", NULL},
	        {"--nofixInboxINBOX", NULL},
	        {"--fixslash2", NULL},
	        {"--flagscase", NULL},
	        {"--foldersizes", NULL},
	        {"--foldersizesatend", NULL},
	        {"--justautomap", NULL},
	        {"--justbanner", NULL},
	        {"--justfolderlists", NULL},
	        {"--log", NULL},
	        {"--maxlinelengthcmd", "cat"},
	        {"--messageidnodomain", NULL},
	        {"--minmaxlinelength", "1"},
	        {"--nosanitize", NULL},
	        {"--noskipsize", NULL},
	        {"--nosslcheck", NULL},
	        {"--reconnectretry1", "3"},
	        {"--reconnectretry2", "3"},
	        {"--sigexit", "QUIT"},
	        {"--sigignore", "HUP"},
	        {"--sigreconnect", "INT"},
	        {"--simulong", "1"},
	        {"--skipheader", "^X-"},
	        {"--split1", "1"},
	        {"--split2", "1"},
	        {"--syncflagsaftercopy", NULL},
	        {"--tail", NULL},
	        {"--timeout", "1.5"},
	        {"--trylogin", NULL},
	        {"--uidexpunge2", NULL},
	        {"--wholeheaderifneeded", NULL},
	        {"--buffersize", "1"},
	        {"--fastio1", NULL},
	        {"--emailreport1", NULL},
	        {"--debugcache", NULL},
	        {"--debugLIST", NULL},
	        {"--delete", NULL},
	        {"--noexclude", NULL},
	        {"--nof1f2", NULL},
	        {"--noregexmess", NULL},
	        {"--nodelete2duplicates", NULL},
	        {"--cacheaftercopy", NULL},
	        {"--abletosearch", NULL},
	        {"--authmd5", NULL},
	        {"--ssl1_ssl_version", "TLSv1_2"},
	        {"--inet4", NULL},
	        {"--ipv6", NULL},
	        {"--subscribe_all", NULL},
	        {"--f1f2h", "a=b"},
	};
	size_t i;
	int failed = 0;

	(void)state;
	for (i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
		char *argv[] = {(char *)"imapsync", (char *)words[i][0], (char *)words[i][1], NULL};
		struct sy_options o;
		char err[512];

		sy_options_init(&o);
		if (sy_options_parse(&o, words[i][1] != NULL ? 3 : 2, argv, err, sizeof(err)) < 0) {
			print_error("%s: %s\n", words[i][0], err);
			failed++;
		}
		sy_options_free(&o);
	}
	assert_int_equal(failed, 0);
}

/* The table: every id has a descriptor, names are unique and reachable. */
static void test_table(void **state)
{
	char *text = NULL, *line;
	size_t size = 0, lines = 0;
	FILE *fp;
	int id;

	(void)state;
	for (id = 0; id < SY_OPT_COUNT; id++) {
		const char *name = sy_options_name((enum sy_opt)id);
		char *argv[] = {(char *)"imapsync", NULL, (char *)"1", NULL}, word[64], err[512];
		struct sy_options o;

		assert_non_null(name);
		assert_true(strlen(name) < 40);
		if (sy_options_lookup(name) != id)
			fail_msg("%s: lookup gives %d, not %d", name, sy_options_lookup(name), id);
		/* The exact name is never ambiguous nor unknown. */
		snprintf(word, sizeof(word), "--%s", name);
		argv[1] = word;
		sy_options_init(&o);
		sy_options_parse(&o, 3, argv, err, sizeof(err));
		if (strstr(err, "Unknown") != NULL || strstr(err, "ambiguous") != NULL)
			fail_msg("%s: %s", name, err);
		if (!sy_options_given(&o, (enum sy_opt)id) && strstr(err, "key") == NULL)
			fail_msg("%s: not marked given: %s", name, err);
		sy_options_free(&o);
	}
	assert_null(sy_options_name(SY_OPT_COUNT));
	assert_int_equal(sy_options_lookup("nosuchoption"), -1);
	assert_int_equal(sy_options_lookup("FIXINBOXINBOX"), SY_OPT_FIXINBOXINBOX);
	assert_int_equal(sy_options_lookup("delete"), SY_OPT_DELETE1);

	fp = open_memstream(&text, &size);
	assert_non_null(fp);
	sy_options_print_table(fp);
	fclose(fp);
	assert_non_null(strstr(text, "| option | type | default | status | description |\n"));
	assert_non_null(strstr(text, "| `--[no]ssl1` | bool, --no | auto | implemented |"));
	assert_non_null(strstr(text, "| `--errorsmax` | int | 50 | implemented |"));
	assert_non_null(strstr(text, "| `--[no]delete1, --[no]delete` | bool, --no | off |"));
	assert_non_null(strstr(text, "| `--sslargs1` | K=V | - |"));
	assert_non_null(strstr(text, "| `--gmail1` | bool | off | implemented |"));
	assert_non_null(strstr(text, "| `--[no]tail` | bool, --no | off | implemented |"));
	assert_non_null(strstr(text, "| `--domain1` | str | - | implemented |"));
	assert_non_null(strstr(text, "| `--[no]tests` | bool, --no | off | ignored (n/a) |"));
	for (line = text; (line = strchr(line, '\n')) != NULL; line++)
		lines++;
	assert_int_equal(lines, SY_OPT_COUNT + 2);
	free(text);

	text = NULL;
	fp = open_memstream(&text, &size);
	assert_non_null(fp);
	sy_options_usage(fp);
	fclose(fp);
	assert_non_null(strstr(text, "\nFolder selection:\n"));
	assert_non_null(strstr(text, "  --host1 str "));
	assert_non_null(strstr(text, "  --[no]resyncflags "));
	for (id = 0; id < SY_OPT_COUNT; id++) {
		char word[64];

		snprintf(word, sizeof(word), "%s%s ",
		         sy_options_name((enum sy_opt)id)[0] != '\0' ? "" : "?",
		         sy_options_name((enum sy_opt)id));
		if (strstr(text, word) == NULL)
			fail_msg("usage lacks %s", word);
	}
	free(text);
}

/* sy_options_format() reports the size it needs, snprintf-style. */
static void test_format(void **state)
{
	struct sy_options o;
	char buf[8];

	(void)state;
	parse_ok(&o, (const char *[]){CREDS, "--folder", "INBOX", "--folder", "Sent", NULL});
	assert_int_equal(sy_options_format(&o, SY_OPT_FOLDER, buf, sizeof(buf)), 12);
	assert_string_equal(buf, "[INBOX,");
	assert_int_equal(sy_options_format(&o, SY_OPT_COUNT, buf, sizeof(buf)), -1);
	sy_options_free(&o);
	sy_options_free(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_syntax),          cmocka_unit_test(test_abbrev_and_negation),
	        cmocka_unit_test(test_values),          cmocka_unit_test(test_defaults),
	        cmocka_unit_test(test_check),           cmocka_unit_test(test_passwords),
	        cmocka_unit_test(test_masked),          cmocka_unit_test(test_options_extra),
	        cmocka_unit_test(test_manpage_options), cmocka_unit_test(test_table),
	        cmocka_unit_test(test_format),
	};
	return cmocka_run_group_tests(tests, setup_tmp, teardown_tmp);
}
