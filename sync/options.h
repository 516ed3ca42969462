/*
 * options.h - the imapsync command line of imapferry-sync.
 *
 * Every option of imapsync 2.229 is listed once in the descriptor table of
 * options.c (name, type, offset into struct sy_options, default, status, help),
 * including the ones that are only accepted for now. Parsing follows Perl's
 * Getopt::Long with imapsync's configuration, because users' scripts were
 * written against it:
 *
 *   --opt v, --opt=v, -opt v, +opt v   all the same
 *   --debugLIST == --debuglist          names are case-insensitive
 *   --justfo                            unique prefixes are accepted; an exact
 *                                       name always wins (--dry vs --dry1)
 *   --nossl1, --no-ssl1                 negatable booleans only
 *   --dry 1                             booleans take no value: "1" is an extra
 *                                       argument, and --dry=1 is an error
 *   --folder a --folder b               lists keep their order
 *   --sslargs1 K=V                      hashes, repeatable
 *   --errorsmax 20_000                  '_' allowed in numbers
 *   --host1 --dry                       a value is taken as is, even "--x"
 *   --                                  ends the options
 *
 * Call order for the CLI (imapsync's order, presets go between parse and check):
 *
 *   sy_options_init(&o);
 *   o.extra_file = "options_extra.txt";
 *   if (sy_options_parse(&o, argc, argv, err, sizeof(err)) < 0)      exit 64
 *   if (o.help || o.nargs == 0) { sy_options_usage(stdout);          exit 0 }
 *   if (o.version)                                                    exit 0
 *   if (sy_options_presets(&o, notes, sizeof(notes)) < 0)            exit 64
 *   if (sy_options_check(&o, err, sizeof(err)) < 0)                  exit 64
 *   if (o.justconnect)                                                justconnect
 *   if (sy_options_resolve_passwords(&o, err, sizeof(err)) < 0)      exit 66
 *   for side 0, 1: if (sy_options_need_password(&o, side))           prompt
 *   ...
 *   sy_options_free(&o);
 *
 * Error texts are imapsync's (and Getopt::Long's) word for word, one per line,
 * all of them (not just the first).
 */
#ifndef IMAPFERRY_SYNC_OPTIONS_H
#define IMAPFERRY_SYNC_OPTIONS_H

#include <stddef.h>
#include <stdio.h>

/* Exit codes of the option stage (sysexits.h values, as imapsync uses them). */
#define SY_EX_USAGE   64 /* bad option, bad value, extra argument, conflict */
#define SY_EX_NOINPUT 66 /* unreadable --passfile1/2 */

/* A repeatable option's values in command-line order; strings are owned. */
struct sy_strlist {
	char **v;
	size_t n;
};

/* One K=V of a hash option. */
struct sy_kv {
	char *key;
	char *value;
};

/* A hash option (--sslargs1, --f1f2): pairs in order of first appearance; a
 * repeated key replaces the value, as a Perl hash does. Strings are owned. */
struct sy_kvlist {
	struct sy_kv *v;
	size_t n;
};

/* The options that exist once per side: acc[0] is host1, acc[1] is host2. */
struct sy_account {
	char *host;               /* --host1 */
	long long port;           /* --port1; 0 = 993 with SSL, else 143 */
	char *user;               /* --user1 */
	char *password;           /* --password1, then passfile/env */
	char *passfile;           /* --passfile1 */
	char *domain;             /* --domain1 (NTLM) */
	char *authmech;           /* --authmech1; check(): LOGIN/PLAIN/CRAM-MD5 */
	char *authuser;           /* --authuser1 */
	int proxyauth;            /* --proxyauth1 */
	int authmd5;              /* --authmd51 */
	char *oauthaccesstoken;   /* --oauthaccesstoken1 */
	char *oauthdirect;        /* --oauthdirect1 */
	int ssl;                  /* --ssl1 (see given() for auto-detection) */
	int tls;                  /* --tls1 */
	struct sy_kvlist sslargs; /* --sslargs1 */
	char *ssl_version;        /* --ssl1_ssl_version */
	double timeout;           /* --timeout1; check(): defaults to --timeout */
	int keepalive;            /* --keepalive1 */
	long long reconnectretry; /* --reconnectretry1 */
	long long split;          /* --split1 */
	int debugimap;            /* --debugimap1 */
	char *sep;                /* --sep1 */
	char *prefix;             /* --prefix1 ("" is a real value) */
	char *search;             /* --search1; check(): --search fills it */
	int abletosearch;         /* --abletosearch1 */
	int fastio;               /* --fastio1 */
	int compress;             /* --compress1 */
	int uid;                  /* --uid1 */
	int emailreport;          /* --emailreport1 */
};

/*
 * Option ids, in the order of the descriptor table. Used for "was this option
 * given explicitly" (sy_options_given()), which presets and imapsync's
 * "unless --noX" rules need.
 */
enum sy_opt {
	/* accounts */
	SY_OPT_HOST1,
	SY_OPT_HOST2,
	SY_OPT_PORT1,
	SY_OPT_PORT2,
	SY_OPT_USER1,
	SY_OPT_USER2,
	SY_OPT_PASSWORD1,
	SY_OPT_PASSWORD2,
	SY_OPT_PASSFILE1,
	SY_OPT_PASSFILE2,
	SY_OPT_SHOWPASSWORDS,
	SY_OPT_SANITIZE,
	SY_OPT_AUTHMECH1,
	SY_OPT_AUTHMECH2,
	SY_OPT_AUTHUSER1,
	SY_OPT_AUTHUSER2,
	SY_OPT_PROXYAUTH1,
	SY_OPT_PROXYAUTH2,
	SY_OPT_OAUTHACCESSTOKEN1,
	SY_OPT_OAUTHACCESSTOKEN2,
	SY_OPT_OAUTHDIRECT1,
	SY_OPT_OAUTHDIRECT2,
	SY_OPT_AUTHMD5,
	SY_OPT_AUTHMD51,
	SY_OPT_AUTHMD52,
	SY_OPT_DOMAIN1,
	SY_OPT_DOMAIN2,
	SY_OPT_TRYLOGIN,
	/* connection */
	SY_OPT_SSL1,
	SY_OPT_SSL2,
	SY_OPT_TLS1,
	SY_OPT_TLS2,
	SY_OPT_SSLCHECK,
	SY_OPT_SSLARGS1,
	SY_OPT_SSLARGS2,
	SY_OPT_SSL1_SSL_VERSION,
	SY_OPT_SSL2_SSL_VERSION,
	SY_OPT_TIMEOUT,
	SY_OPT_TIMEOUT1,
	SY_OPT_TIMEOUT2,
	SY_OPT_KEEPALIVE1,
	SY_OPT_KEEPALIVE2,
	SY_OPT_RECONNECTRETRY1,
	SY_OPT_RECONNECTRETRY2,
	SY_OPT_INET4,
	SY_OPT_INET6,
	SY_OPT_ID,
	SY_OPT_COMPRESS1,
	SY_OPT_COMPRESS2,
	SY_OPT_SPLIT1,
	SY_OPT_SPLIT2,
	/* folder selection */
	SY_OPT_FOLDER,
	SY_OPT_FOLDERREC,
	SY_OPT_INCLUDE,
	SY_OPT_EXCLUDE,
	SY_OPT_NOEXCLUDE,
	SY_OPT_FOLDERFIRST,
	SY_OPT_FOLDERLAST,
	SY_OPT_SUBSCRIBED,
	SY_OPT_SUBSCRIBE,
	SY_OPT_SUBSCRIBEALL,
	SY_OPT_SKIPEMPTYFOLDERS,
	SY_OPT_CHECKFOLDERSEXIST,
	SY_OPT_CHECKSELECTABLE,
	SY_OPT_MIXFOLDERS,
	SY_OPT_FOLDERSIZES,
	SY_OPT_FOLDERSIZESATEND,
	/* folder names */
	SY_OPT_PREFIX1,
	SY_OPT_PREFIX2,
	SY_OPT_SEP1,
	SY_OPT_SEP2,
	SY_OPT_REGEXTRANS2,
	SY_OPT_F1F2,
	SY_OPT_F1F2H,
	SY_OPT_NOF1F2,
	SY_OPT_AUTOMAP,
	SY_OPT_SUBFOLDER1,
	SY_OPT_SUBFOLDER2,
	SY_OPT_FIXINBOXINBOX,
	SY_OPT_FIXSLASH2,
	SY_OPT_CREATE_FOLDER_OLD,
	/* message identity */
	SY_OPT_USEHEADER,
	SY_OPT_SKIPHEADER,
	SY_OPT_WHOLEHEADERIFNEEDED,
	SY_OPT_ADDHEADER,
	SY_OPT_SYNCDUPLICATES,
	SY_OPT_SKIPSIZE,
	SY_OPT_ALLOWSIZEMISMATCH,
	SY_OPT_MESSAGEIDNODOMAIN,
	SY_OPT_USEUID,
	SY_OPT_USECACHE,
	SY_OPT_CACHEAFTERCOPY,
	SY_OPT_SKIPCROSSDUPLICATES,
	SY_OPT_CHECKMESSAGEEXISTS,
	/* flags, labels, dates, ACLs */
	SY_OPT_RESYNCFLAGS,
	SY_OPT_REGEXFLAG,
	SY_OPT_NOREGEXFLAG,
	SY_OPT_FILTERFLAGS,
	SY_OPT_FILTERBUGGYFLAGS,
	SY_OPT_FLAGSCASE,
	SY_OPT_SYNCFLAGSAFTERCOPY,
	SY_OPT_SYNCLABELS,
	SY_OPT_RESYNCLABELS,
	SY_OPT_SYNCINTERNALDATES,
	SY_OPT_IDATEFROMHEADER,
	SY_OPT_SYNCACLS,
	/* message selection */
	SY_OPT_MAXAGE,
	SY_OPT_MINAGE,
	SY_OPT_SEARCH,
	SY_OPT_SEARCH1,
	SY_OPT_SEARCH2,
	SY_OPT_MAXSIZE,
	SY_OPT_MINSIZE,
	SY_OPT_APPENDLIMIT,
	SY_OPT_ABLETOSEARCH,
	SY_OPT_ABLETOSEARCH1,
	SY_OPT_ABLETOSEARCH2,
	SY_OPT_CHECKNOABLETOSEARCH,
	SY_OPT_FETCH_HASH_SET,
	SY_OPT_MAXLINELENGTH,
	SY_OPT_MAXLINELENGTHCMD,
	SY_OPT_MINMAXLINELENGTH,
	/* message transforms */
	SY_OPT_SKIPMESS,
	SY_OPT_REGEXMESS,
	SY_OPT_NOREGEXMESS,
	SY_OPT_PIPEMESS,
	SY_OPT_PIPEMESSCHECK,
	SY_OPT_TRUNCMESS,
	SY_OPT_DISARMREADRECEIPTS,
	/* deletion */
	SY_OPT_DELETE1,
	SY_OPT_DELETE2,
	SY_OPT_DELETE2DUPLICATES,
	SY_OPT_DELETE2FOLDERS,
	SY_OPT_DELETE2FOLDERSONLY,
	SY_OPT_DELETE2FOLDERSBUTNOT,
	SY_OPT_DELETE1EMPTYFOLDERS,
	SY_OPT_EXPUNGE1,
	SY_OPT_EXPUNGE2,
	SY_OPT_UIDEXPUNGE2,
	SY_OPT_EXPUNGEAFTEREACH,
	/* run modes and limits */
	SY_OPT_DRY,
	SY_OPT_DRY1,
	SY_OPT_JUSTCONNECT,
	SY_OPT_JUSTLOGIN,
	SY_OPT_JUSTFOLDERS,
	SY_OPT_JUSTFOLDERSIZES,
	SY_OPT_JUSTFOLDERLISTS,
	SY_OPT_JUSTAUTOMAP,
	SY_OPT_JUSTBANNER,
	SY_OPT_ERRORSMAX,
	SY_OPT_ERRORSDUMP,
	SY_OPT_EXITWHENOVER,
	SY_OPT_MAXBYTESPERSECOND,
	SY_OPT_MAXBYTESAFTER,
	SY_OPT_MAXMESSAGESPERSECOND,
	SY_OPT_MAXSLEEP,
	SY_OPT_ABORT,
	SY_OPT_ABORTBYFILE,
	SY_OPT_SIGEXIT,
	SY_OPT_SIGRECONNECT,
	SY_OPT_SIGIGNORE,
	SY_OPT_VERSION,
	SY_OPT_HELP,
	SY_OPT_RELEASECHECK,
	/* files and logging */
	SY_OPT_TMPDIR,
	SY_OPT_PIDFILE,
	SY_OPT_PIDFILELOCKING,
	SY_OPT_LOG,
	SY_OPT_LOGFILE,
	SY_OPT_LOGDIR,
	SY_OPT_TAIL,
	SY_OPT_EMAILREPORT1,
	SY_OPT_EMAILREPORT2,
	SY_OPT_EMAILREPORTFROM,
	/* presets */
	SY_OPT_GMAIL1,
	SY_OPT_GMAIL2,
	SY_OPT_OFFICE1,
	SY_OPT_OFFICE2,
	SY_OPT_EXCHANGE1,
	SY_OPT_EXCHANGE2,
	SY_OPT_DOMINO1,
	SY_OPT_DOMINO2,
	/* debugging */
	SY_OPT_DEBUG,
	SY_OPT_DEBUGIMAP,
	SY_OPT_DEBUGIMAP1,
	SY_OPT_DEBUGIMAP2,
	SY_OPT_DEBUGFOLDERS,
	SY_OPT_DEBUGFLAGS,
	SY_OPT_DEBUGCONTENT,
	SY_OPT_DEBUGMEMORY,
	SY_OPT_DEBUGCACHE,
	SY_OPT_DEBUGCROSSDUPLICATES,
	SY_OPT_DEBUGLABELS,
	SY_OPT_DEBUGLIST,
	SY_OPT_DEBUGMAXLINELENGTH,
	SY_OPT_DEBUGSIG,
	SY_OPT_DEBUGENV,
	SY_OPT_DEBUGSSL,
	SY_OPT_DEBUGSLEEP,
	/* imapsync internals: accepted and ignored */
	SY_OPT_DEBUGDEV,
	SY_OPT_DEBUGCGI,
	SY_OPT_SIMULONG,
	SY_OPT_FASTIO1,
	SY_OPT_FASTIO2,
	SY_OPT_UID1,
	SY_OPT_UID2,
	SY_OPT_BUFFERSIZE,
	SY_OPT_FIXCOLONBUG,
	SY_OPT_MODULESVERSION,
	SY_OPT_TESTS,
	SY_OPT_TESTSDEBUG,
	SY_OPT_TESTSUNIT,
	SY_OPT_TESTSLIVE,
	SY_OPT_TESTSLIVE6,
	SY_OPT_EXITONLOAD,
	SY_OPT_DOCKERCONTEXT,
	SY_OPT_MEMORYSTRESS,
	SY_OPT_VAR,
	/* imapferry's own */
	SY_OPT_STATE,
	SY_OPT_DELTA,
	SY_OPT_PARALLEL,
	SY_OPT_CHECKPOINT,
	SY_OPT_REDIS,
	SY_OPT_DAEMON,
	SY_OPT_WORKERS,
	SY_OPT_MAXCONNECTIONS,
	SY_OPT_USERS,
	SY_OPT_POLL,
	SY_OPT_POLLACTIVE,
	SY_OPT_FULLCHECK,
	SY_OPT_LEASE,
	SY_OPT_HTTP,
	SY_OPT_NOTIFYSTATUS,
	SY_OPT_QUICKCHECK,
	SY_OPT_FENCE,
	SY_OPT_MAXDELETE2,
	SY_OPT_FORCEDELETE2,
	SY_OPT_COUNT
};

struct sy_options {
	struct sy_account acc[2];

	/* what the CLI sets before sy_options_parse() */
	const char *extra_file; /* NULL: no options_extra.txt (borrowed) */

	/* filled by sy_options_parse() */
	char *progname;   /* argv[0], for "... for help run <progname> --help" */
	int nargs;        /* argc - 1: no argument at all means usage, exit 0 */
	char *extra_line; /* the line read from extra_file, or NULL */
	unsigned char given[(SY_OPT_COUNT + 7) / 8]; /* see sy_options_given() */

	/* accounts, connection */
	int showpasswords, sanitize, authmd5, trylogin;
	int sslcheck, inet4, inet6, id;
	double timeout;

	/* folders */
	struct sy_strlist folder, folderrec, include, exclude, folderfirst, folderlast;
	int noexclude, subscribed, subscribe, subscribeall, skipemptyfolders;
	int checkfoldersexist, checkselectable, mixfolders, foldersizes, foldersizesatend;
	struct sy_strlist regextrans2;
	struct sy_kvlist f1f2; /* --f1f2 and --f1f2h */
	int nof1f2, automap, fixinboxinbox, fixslash2, create_folder_old;
	char *subfolder1, *subfolder2;

	/* message identity */
	struct sy_strlist useheader; /* empty: Message-Id + Received after presets */
	char *skipheader;
	int wholeheaderifneeded, addheader, syncduplicates, skipsize, allowsizemismatch;
	int messageidnodomain, useuid, usecache, cacheaftercopy, skipcrossduplicates;
	int checkmessageexists;

	/* flags, labels, dates */
	int resyncflags, noregexflag, filterflags, filterbuggyflags, flagscase;
	int syncflagsaftercopy, synclabels, resynclabels, syncinternaldates, idatefromheader;
	int syncacls;
	struct sy_strlist regexflag;

	/* message selection and transforms */
	double maxage, minage; /* days; 0 = not given (see sy_options_given()) */
	char *search;
	long long maxsize, minsize, appendlimit, truncmess;
	long long maxlinelength, minmaxlinelength;
	char *maxlinelengthcmd, *fetch_hash_set;
	int abletosearch, checknoabletosearch;
	struct sy_strlist skipmess, regexmess, pipemess;
	int noregexmess, pipemesscheck, disarmreadreceipts;

	/* deletion */
	int delete1, delete2, delete2duplicates, delete2folders, delete1emptyfolders;
	char *delete2foldersonly, *delete2foldersbutnot;
	int expunge1, expunge2, uidexpunge2, expungeaftereach;
	double maxdelete2; /* imapferry: --delete2 deletes at most this percent of a folder */
	int forcedelete2;  /* imapferry: --forcedelete2 lifts that cap */

	/* run modes and limits */
	int dry, dry1, justconnect, justlogin, justfolders, justfoldersizes;
	int justfolderlists, justautomap, justbanner;
	long long errorsmax, exitwhenover, maxbytespersecond, maxbytesafter;
	int errorsdump;
	double maxmessagespersecond, maxsleep;
	int abort, abortbyfile, version, help, releasecheck;
	struct sy_strlist sigexit, sigreconnect, sigignore;

	/* files and logging */
	char *tmpdir, *pidfile, *logfile, *logdir, *emailreportfrom;
	int pidfilelocking, log, tail;

	/* presets */
	int gmail1, gmail2, office1, office2, exchange1, exchange2, domino1, domino2;

	/* debugging */
	int debug, debugimap, debugfolders, debugflags, debugcontent, debugmemory;
	int debugcache, debugcrossduplicates, debuglabels, debuglist, debugmaxlinelength;
	int debugsig, debugenv;
	long long debugssl;
	double debugsleep;

	/* accepted and ignored */
	int debugdev, debugcgi, fixcolonbug, modulesversion, tests, testsdebug, testslive;
	int testslive6, exitonload, dockercontext, memorystress;

	/* imapferry's own */
	int state;          /* --state (default on): per-folder state, skip unchanged folders */
	int delta;          /* --delta (default on): incremental passes of changed folders */
	long long parallel; /* --parallel N: folders synced at once, each worker its own connections
	                     */
	long long checkpoint; /* --checkpoint S: the state saved after a folder, S s apart */
	char *redis;          /* --redis HOST:PORT or /socket: the state in Redis, not in tmpdir */
	/* the daemon (sync/daemon.c, issue 6) */
	int daemon;           /* --daemon */
	long long workers;    /* --workers: syncs at once */
	long long maxconns;   /* --maxconnections: per server, running syncs and pools */
	char *users;          /* --users FILE: users to enqueue at start */
	long long poll;       /* --poll SECS: quick check of every known user */
	long long pollactive; /* --poll-active SECS: ... of users active through the proxy */
	long long fullcheck;  /* --fullcheck SECS: a whole-user pass that trusts no state */
	long long lease;      /* --lease SECS */
	char *http;           /* --http ADDR:PORT: /metrics, /healthz */
	char *notifystatus;   /* --notifystatus PREFIX: Dovecot notify_status keys (nstatus.c) */
	int quickcheck;       /* --quickcheck: tree + STATUS, mark changed folders */
	char *fence;          /* --fence "user<TAB>folder<TAB>worker:token": the lease held */
	double simulong;
	long long buffersize;
	struct sy_strlist testsunit, var;
};

/* Fills o with imapsync's defaults (nothing given, nothing allocated except the
 * default strings). Must precede every other call. */
void sy_options_init(struct sy_options *o);

/*
 * Parses argv[1..argc) into o (initialised by sy_options_init()), then, when
 * o->extra_file names a readable regular file, the words of its first line
 * (shell-like quoting: '...', "...", backslash) as if they followed argv.
 * Later values replace earlier ones; lists and hashes accumulate.
 * Returns 0, or -1 (the CLI exits SY_EX_USAGE) with every error written to
 * errbuf (NUL-terminated, one message per line, no final newline, cut at
 * errsize). argv is borrowed; o owns copies of what it keeps.
 */
int sy_options_parse(struct sy_options *o, int argc, char **argv, char *errbuf, size_t errsize);

/*
 * imapsync's provider presets (its easyany()), to run between
 * sy_options_parse() and sy_options_check(): --gmail1/2, --office1/2,
 * --exchange1/2, --domino1/2. A scalar option the user gave is kept, the
 * preset's value otherwise (and then counts as given); list and hash
 * options get the preset's values after the user's (--noexclude,
 * --noregexmess and --nof1f2 leave out the preset's --exclude, wrap and
 * --f1f2). --gmail1 with --gmail2 is a preset of its own. notes (may be
 * NULL) receives one line per preset applied, for the log; cut at
 * notes_size. Returns 0, or -1 when memory ran out.
 */
int sy_options_presets(struct sy_options *o, char *notes, size_t notes_size);

/*
 * imapsync's start-up rules, to run after the presets: trims blanks (unless
 * --nosanitize), fills derived defaults (timeout1/2, pidfile, authmech, ...),
 * applies the implications (--delete1 => --expunge1, --delete2 =>
 * --uidexpunge2 and --delete2duplicates, --useuid => --usecache, ...) unless
 * the implied option was given explicitly, and refuses conflicting options.
 * Implied values do not mark the option as given.
 * Returns 0, or -1 (exit SY_EX_USAGE) with the messages in errbuf.
 */
int sy_options_check(struct sy_options *o, char *errbuf, size_t errsize);

/*
 * Fills acc[i].password in imapsync's order: the first line of --passfileN
 * (without its line end), else $IMAPSYNC_PASSWORDN when not empty, else
 * --passwordN as given. Returns 0, or -1 (exit SY_EX_NOINPUT) when a passfile
 * cannot be read, with imapsync's message in errbuf.
 */
int sy_options_resolve_passwords(struct sy_options *o, char *errbuf, size_t errsize);

/* Nonzero when side (0 or 1) still has no password and needs one, i.e. the
 * CLI must prompt: no password, no passfile, and neither PREAUTH, EXTERNAL
 * nor an OAuth token. Call after sy_options_resolve_passwords(). */
int sy_options_need_password(const struct sy_options *o, int side);

/* Nonzero when option id was given on the command line or in the extra
 * file, positively or negated (--tls1 and --notls1 both count). */
int sy_options_given(const struct sy_options *o, enum sy_opt id);

/* The option's canonical name without dashes ("fixInboxINBOX"), or NULL when
 * id is out of range. Static string. */
const char *sy_options_name(enum sy_opt id);

/* The id of the option whose canonical name or alias is name (exact,
 * case-insensitive, no dashes), or -1. */
int sy_options_lookup(const char *name);

/* Writes the value of option id into buf (always NUL-terminated): 0/1 for
 * booleans, numbers, the string or "(undef)", "[a,b]" for lists, "{k=v,...}"
 * for hashes. Returns the length it needed, like snprintf(), or -1. */
int sy_options_format(const struct sy_options *o, enum sy_opt id, char *buf, size_t size);

/* Returns pw when --showpasswords is on (or "" for NULL), else "MASKED".
 * Borrowed from the arguments. */
const char *sy_options_masked(const struct sy_options *o, const char *pw);

/* Prints the help text, grouped like imapsync's manual page. */
void sy_options_usage(FILE *fp);

/* Prints a Markdown table of every option: option, type, default, status,
 * description. */
void sy_options_print_table(FILE *fp);

/* Frees everything o owns and leaves it as after sy_options_init() without
 * defaults (all zero). o itself is the caller's (usually on the stack), so
 * this takes a plain pointer. Accepts NULL. */
void sy_options_free(struct sy_options *o);

/*
 * IO::Socket::SSL's SSL_version value (--sslN_ssl_version, --sslargsN
 * SSL_version=): terms joined by ':', each a version name (SSLv3, TLSv1,
 * TLSv1_1, TLSv1_2, TLSv1_3, SSLv23 or ALL for all; case-insensitive) or
 * '!' and one to exclude it. A first term that names a version allows that
 * one only. As OpenSSL protocol versions: *max_r = the newest allowed (0 =
 * no limit), *min_r = the oldest allowed when it is below TLS 1.2 only if it
 * was named (0 = imapferry's default, TLS 1.2). Returns 0, or -1 for an
 * unknown term or when no version is left (e.g. "SSLv2").
 */
int sy_ssl_version_parse(const char *spec, int *min_r, int *max_r);

#endif
