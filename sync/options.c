/* options.c - see options.h. Option names, types and defaults are imapsync
 * 2.229's (its Getopt::Long spec and start-up code); help texts are ours. */
#include "options.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "imapferry/log.h"

enum sy_opt_type {
	SY_T_BOOL,    /* --x only */
	SY_T_NEGBOOL, /* --x, --nox, --no-x */
	SY_T_STR,
	SY_T_INT,   /* digits with '_' allowed */
	SY_T_FLOAT, /* Perl real number with '_' allowed */
	SY_T_LIST,  /* repeatable string */
	SY_T_HASH,  /* repeatable K=V */
	SY_T_COUNT
};

static const char *const type_names[] = {"bool",  "bool, --no", "str", "int",
                                         "float", "list",       "K=V"};
_Static_assert(sizeof(type_names) / sizeof(type_names[0]) == SY_T_COUNT, "type names");

/* What imapferry-sync does with the option (for the README table). */
enum sy_opt_status {
	SY_ST_NOW,   /* part of the drop-in core */
	SY_ST_LATER, /* accepted now, acted on later */
	SY_ST_NA,    /* imapsync internals: accepted and ignored */
	SY_ST_COUNT
};

static const char *const status_names[] = {"implemented", "accepted, later", "ignored (n/a)"};
_Static_assert(sizeof(status_names) / sizeof(status_names[0]) == SY_ST_COUNT, "status names");

enum sy_opt_group {
	SY_G_ACCOUNTS,
	SY_G_CONNECTION,
	SY_G_FOLDERS,
	SY_G_NAMES,
	SY_G_IDENTITY,
	SY_G_FLAGS,
	SY_G_SELECTION,
	SY_G_TRANSFORMS,
	SY_G_DELETION,
	SY_G_RUN,
	SY_G_FILES,
	SY_G_PRESETS,
	SY_G_DEBUG,
	SY_G_INTERNAL,
	SY_G_COUNT
};

static const char *const group_names[] = {
        "Accounts and authentication",
        "Connection",
        "Folder selection",
        "Folder names",
        "Message identity and duplicates",
        "Flags, labels and dates",
        "Message selection",
        "Message transforms",
        "Deletion",
        "Run modes and limits",
        "Files and logging",
        "Presets",
        "Debugging",
        "Accepted for compatibility, ignored",
};
_Static_assert(sizeof(group_names) / sizeof(group_names[0]) == SY_G_COUNT, "group names");

struct sy_optdesc {
	const char *name;  /* canonical, imapsync's spelling */
	const char *alias; /* a second name, or NULL */
	enum sy_opt_type type;
	size_t off;         /* into struct sy_options */
	const char *def;    /* default as option text, NULL = unset */
	const char *defdoc; /* default shown in help when def cannot say it */
	enum sy_opt_status status;
	enum sy_opt_group group;
	const char *arg;  /* value placeholder in the help, NULL = from type */
	const char *help; /* one short line */
};

/* The offset of field f, which must have type T: a wrong type in the table is
 * a compile error, not a scribbled-on struct. */
#define OFF(f, T) _Generic(((struct sy_options *)0)->f, T : offsetof(struct sy_options, f))
#define T_BOOL(f) SY_T_BOOL, OFF(f, int)
#define T_NEG(f)  SY_T_NEGBOOL, OFF(f, int)
#define T_STR(f)  SY_T_STR, OFF(f, char *)
#define T_INT(f)  SY_T_INT, OFF(f, long long)
#define T_FLO(f)  SY_T_FLOAT, OFF(f, double)
#define T_LIST(f) SY_T_LIST, OFF(f, struct sy_strlist)
#define T_HASH(f) SY_T_HASH, OFF(f, struct sy_kvlist)
#define NOW       SY_ST_NOW
#define LATER     SY_ST_LATER
#define NA        SY_ST_NA

/* clang-format off */
static const struct sy_optdesc opts[] = {
	/* accounts and authentication */
	[SY_OPT_HOST1] = {"host1", NULL, T_STR(acc[0].host), NULL, NULL, NOW, SY_G_ACCOUNTS, NULL, "source IMAP server"},
	[SY_OPT_HOST2] = {"host2", NULL, T_STR(acc[1].host), NULL, NULL, NOW, SY_G_ACCOUNTS, NULL, "destination IMAP server"},
	[SY_OPT_PORT1] = {"port1", NULL, T_INT(acc[0].port), NULL, "993 with SSL, else 143", NOW, SY_G_ACCOUNTS, NULL, "port on host1"},
	[SY_OPT_PORT2] = {"port2", NULL, T_INT(acc[1].port), NULL, "993 with SSL, else 143", NOW, SY_G_ACCOUNTS, NULL, "port on host2"},
	[SY_OPT_USER1] = {"user1", NULL, T_STR(acc[0].user), NULL, NULL, NOW, SY_G_ACCOUNTS, NULL, "login on host1"},
	[SY_OPT_USER2] = {"user2", NULL, T_STR(acc[1].user), NULL, NULL, NOW, SY_G_ACCOUNTS, NULL, "login on host2"},
	[SY_OPT_PASSWORD1] = {"password1", NULL, T_STR(acc[0].password), NULL, "$IMAPSYNC_PASSWORD1", NOW, SY_G_ACCOUNTS, NULL, "user1's password"},
	[SY_OPT_PASSWORD2] = {"password2", NULL, T_STR(acc[1].password), NULL, "$IMAPSYNC_PASSWORD2", NOW, SY_G_ACCOUNTS, NULL, "user2's password"},
	[SY_OPT_PASSFILE1] = {"passfile1", NULL, T_STR(acc[0].passfile), NULL, NULL, NOW, SY_G_ACCOUNTS, "file", "file holding user1's password"},
	[SY_OPT_PASSFILE2] = {"passfile2", NULL, T_STR(acc[1].passfile), NULL, NULL, NOW, SY_G_ACCOUNTS, "file", "file holding user2's password"},
	[SY_OPT_SHOWPASSWORDS] = {"showpasswords", NULL, T_NEG(showpasswords), "0", NULL, NOW, SY_G_ACCOUNTS, NULL, "print passwords instead of MASKED"},
	[SY_OPT_SANITIZE] = {"sanitize", NULL, T_NEG(sanitize), "1", NULL, NOW, SY_G_ACCOUNTS, NULL, "trim blanks of hosts, users, passwords"},
	[SY_OPT_AUTHMECH1] = {"authmech1", NULL, T_STR(acc[0].authmech), NULL, "LOGIN/PLAIN", NOW, SY_G_ACCOUNTS, NULL, "host1 mechanism: PLAIN, XOAUTH2..."},
	[SY_OPT_AUTHMECH2] = {"authmech2", NULL, T_STR(acc[1].authmech), NULL, "LOGIN/PLAIN", NOW, SY_G_ACCOUNTS, NULL, "host2 mechanism"},
	[SY_OPT_AUTHUSER1] = {"authuser1", NULL, T_STR(acc[0].authuser), NULL, NULL, NOW, SY_G_ACCOUNTS, NULL, "admin user who logs in for user1"},
	[SY_OPT_AUTHUSER2] = {"authuser2", NULL, T_STR(acc[1].authuser), NULL, NULL, NOW, SY_G_ACCOUNTS, NULL, "admin user who logs in for user2"},
	[SY_OPT_PROXYAUTH1] = {"proxyauth1", NULL, T_BOOL(acc[0].proxyauth), "0", NULL, NOW, SY_G_ACCOUNTS, NULL, "log in as authuser1, then PROXYAUTH user1"},
	[SY_OPT_PROXYAUTH2] = {"proxyauth2", NULL, T_BOOL(acc[1].proxyauth), "0", NULL, NOW, SY_G_ACCOUNTS, NULL, "log in as authuser2, then PROXYAUTH user2"},
	[SY_OPT_OAUTHACCESSTOKEN1] = {"oauthaccesstoken1", NULL, T_STR(acc[0].oauthaccesstoken), NULL, NULL, NOW, SY_G_ACCOUNTS, "str|file", "XOAUTH2 access token for host1"},
	[SY_OPT_OAUTHACCESSTOKEN2] = {"oauthaccesstoken2", NULL, T_STR(acc[1].oauthaccesstoken), NULL, NULL, NOW, SY_G_ACCOUNTS, "str|file", "XOAUTH2 access token for host2"},
	[SY_OPT_OAUTHDIRECT1] = {"oauthdirect1", NULL, T_STR(acc[0].oauthdirect), NULL, NULL, NOW, SY_G_ACCOUNTS, "str|file", "ready-made XOAUTH2 string for host1"},
	[SY_OPT_OAUTHDIRECT2] = {"oauthdirect2", NULL, T_STR(acc[1].oauthdirect), NULL, NULL, NOW, SY_G_ACCOUNTS, "str|file", "ready-made XOAUTH2 string for host2"},
	[SY_OPT_AUTHMD5] = {"authmd5", NULL, T_NEG(authmd5), "0", NULL, NOW, SY_G_ACCOUNTS, NULL, "CRAM-MD5 on both hosts"},
	[SY_OPT_AUTHMD51] = {"authmd51", NULL, T_NEG(acc[0].authmd5), "0", NULL, NOW, SY_G_ACCOUNTS, NULL, "CRAM-MD5 on host1"},
	[SY_OPT_AUTHMD52] = {"authmd52", NULL, T_NEG(acc[1].authmd5), "0", NULL, NOW, SY_G_ACCOUNTS, NULL, "CRAM-MD5 on host2"},
	[SY_OPT_DOMAIN1] = {"domain1", NULL, T_STR(acc[0].domain), NULL, NULL, NOW, SY_G_ACCOUNTS, NULL, "NTLM domain on host1 (--authmech1 NTLM)"},
	[SY_OPT_DOMAIN2] = {"domain2", NULL, T_STR(acc[1].domain), NULL, NULL, NOW, SY_G_ACCOUNTS, NULL, "NTLM domain on host2 (--authmech2 NTLM)"},
	[SY_OPT_TRYLOGIN] = {"trylogin", NULL, T_NEG(trylogin), "1", NULL, NOW, SY_G_ACCOUNTS, NULL, "retry with LOGIN when the mechanism fails"},

	/* connection */
	[SY_OPT_SSL1] = {"ssl1", NULL, T_NEG(acc[0].ssl), "0", "auto", NOW, SY_G_CONNECTION, NULL, "implicit TLS (imaps) to host1"},
	[SY_OPT_SSL2] = {"ssl2", NULL, T_NEG(acc[1].ssl), "0", "auto", NOW, SY_G_CONNECTION, NULL, "implicit TLS (imaps) to host2"},
	[SY_OPT_TLS1] = {"tls1", NULL, T_NEG(acc[0].tls), "0", "auto", NOW, SY_G_CONNECTION, NULL, "STARTTLS on host1"},
	[SY_OPT_TLS2] = {"tls2", NULL, T_NEG(acc[1].tls), "0", "auto", NOW, SY_G_CONNECTION, NULL, "STARTTLS on host2"},
	[SY_OPT_SSLCHECK] = {"sslcheck", NULL, T_NEG(sslcheck), "1", NULL, NOW, SY_G_CONNECTION, NULL, "find TLS if no --sslN, --tlsN, --portN"},
	[SY_OPT_SSLARGS1] = {"sslargs1", NULL, T_HASH(acc[0].sslargs), NULL, NULL, NOW, SY_G_CONNECTION, NULL, "TLS setting for host1, e.g. SSL_verify_mode=1"},
	[SY_OPT_SSLARGS2] = {"sslargs2", NULL, T_HASH(acc[1].sslargs), NULL, NULL, NOW, SY_G_CONNECTION, NULL, "TLS setting for host2"},
	[SY_OPT_SSL1_SSL_VERSION] = {"ssl1_ssl_version", NULL, T_STR(acc[0].ssl_version), NULL, NULL, NOW, SY_G_CONNECTION, NULL, "like --sslargs1 SSL_version=str"},
	[SY_OPT_SSL2_SSL_VERSION] = {"ssl2_ssl_version", NULL, T_STR(acc[1].ssl_version), NULL, NULL, NOW, SY_G_CONNECTION, NULL, "like --sslargs2 SSL_version=str"},
	[SY_OPT_TIMEOUT] = {"timeout", NULL, T_FLO(timeout), "120", NULL, NOW, SY_G_CONNECTION, NULL, "I/O timeout in seconds, 0 = none"},
	[SY_OPT_TIMEOUT1] = {"timeout1", NULL, T_FLO(acc[0].timeout), NULL, "--timeout", NOW, SY_G_CONNECTION, NULL, "timeout on host1"},
	[SY_OPT_TIMEOUT2] = {"timeout2", NULL, T_FLO(acc[1].timeout), NULL, "--timeout", NOW, SY_G_CONNECTION, NULL, "timeout on host2"},
	[SY_OPT_KEEPALIVE1] = {"keepalive1", NULL, T_NEG(acc[0].keepalive), "1", NULL, NOW, SY_G_CONNECTION, NULL, "TCP keepalive on host1"},
	[SY_OPT_KEEPALIVE2] = {"keepalive2", NULL, T_NEG(acc[1].keepalive), "1", NULL, NOW, SY_G_CONNECTION, NULL, "TCP keepalive on host2"},
	[SY_OPT_RECONNECTRETRY1] = {"reconnectretry1", NULL, T_INT(acc[0].reconnectretry), "3", NULL, NOW, SY_G_CONNECTION, NULL, "reconnections per command on host1"},
	[SY_OPT_RECONNECTRETRY2] = {"reconnectretry2", NULL, T_INT(acc[1].reconnectretry), "3", NULL, NOW, SY_G_CONNECTION, NULL, "reconnections per command on host2"},
	[SY_OPT_INET4] = {"inet4", "ipv4", T_BOOL(inet4), "0", NULL, NOW, SY_G_CONNECTION, NULL, "IPv4 only"},
	[SY_OPT_INET6] = {"inet6", "ipv6", T_BOOL(inet6), "0", NULL, NOW, SY_G_CONNECTION, NULL, "IPv6 only"},
	[SY_OPT_ID] = {"id", NULL, T_NEG(id), "1", NULL, NOW, SY_G_CONNECTION, NULL, "send the ID command"},
	[SY_OPT_COMPRESS1] = {"compress1", NULL, T_NEG(acc[0].compress), "0", NULL, NOW, SY_G_CONNECTION, NULL, "COMPRESS=DEFLATE on host1"},
	[SY_OPT_COMPRESS2] = {"compress2", NULL, T_NEG(acc[1].compress), "0", NULL, NOW, SY_G_CONNECTION, NULL, "COMPRESS=DEFLATE on host2"},
	[SY_OPT_SPLIT1] = {"split1", NULL, T_INT(acc[0].split), "100", NULL, NOW, SY_G_CONNECTION, NULL, "UIDs per command, messages per batch on host1"},
	[SY_OPT_SPLIT2] = {"split2", NULL, T_INT(acc[1].split), "100", NULL, NOW, SY_G_CONNECTION, NULL, "UIDs per command, messages per batch on host2"},

	/* folder selection */
	[SY_OPT_FOLDER] = {"folder", NULL, T_LIST(folder), NULL, "all folders", NOW, SY_G_FOLDERS, NULL, "sync this folder"},
	[SY_OPT_FOLDERREC] = {"folderrec", NULL, T_LIST(folderrec), NULL, NULL, NOW, SY_G_FOLDERS, NULL, "sync this folder and its subfolders"},
	[SY_OPT_INCLUDE] = {"include", NULL, T_LIST(include), NULL, NULL, NOW, SY_G_FOLDERS, "reg", "add the host1 folders matching reg"},
	[SY_OPT_EXCLUDE] = {"exclude", NULL, T_LIST(exclude), NULL, NULL, NOW, SY_G_FOLDERS, "reg", "skip the folders matching reg"},
	[SY_OPT_NOEXCLUDE] = {"noexclude", NULL, T_BOOL(noexclude), "0", NULL, NOW, SY_G_FOLDERS, NULL, "drop the --exclude of a preset"},
	[SY_OPT_FOLDERFIRST] = {"folderfirst", NULL, T_LIST(folderfirst), NULL, NULL, NOW, SY_G_FOLDERS, NULL, "sync this folder first"},
	[SY_OPT_FOLDERLAST] = {"folderlast", NULL, T_LIST(folderlast), NULL, NULL, NOW, SY_G_FOLDERS, NULL, "sync this folder last"},
	[SY_OPT_SUBSCRIBED] = {"subscribed", NULL, T_BOOL(subscribed), "0", NULL, NOW, SY_G_FOLDERS, NULL, "sync the folders subscribed on host1"},
	[SY_OPT_SUBSCRIBE] = {"subscribe", NULL, T_NEG(subscribe), "1", NULL, NOW, SY_G_FOLDERS, NULL, "subscribe on host2 what host1 subscribes"},
	[SY_OPT_SUBSCRIBEALL] = {"subscribeall", "subscribe_all", T_NEG(subscribeall), "0", NULL, NOW, SY_G_FOLDERS, NULL, "subscribe all synced folders on host2"},
	[SY_OPT_SKIPEMPTYFOLDERS] = {"skipemptyfolders", NULL, T_NEG(skipemptyfolders), "0", NULL, NOW, SY_G_FOLDERS, NULL, "do not create empty folders on host2"},
	[SY_OPT_CHECKFOLDERSEXIST] = {"checkfoldersexist", NULL, T_NEG(checkfoldersexist), "1", NULL, NOW, SY_G_FOLDERS, NULL, "drop requested folders missing on host1"},
	[SY_OPT_CHECKSELECTABLE] = {"checkselectable", NULL, T_NEG(checkselectable), "1", "on up to 152", NOW, SY_G_FOLDERS, NULL, "drop \\Noselect folders"},
	[SY_OPT_MIXFOLDERS] = {"mixfolders", NULL, T_NEG(mixfolders), "1", NULL, NOW, SY_G_FOLDERS, NULL, "merge folders that differ only in case"},
	[SY_OPT_FOLDERSIZES] = {"foldersizes", NULL, T_NEG(foldersizes), "1", "unless --justfolders", NOW, SY_G_FOLDERS, NULL, "folder sizes before the sync"},
	[SY_OPT_FOLDERSIZESATEND] = {"foldersizesatend", NULL, T_NEG(foldersizesatend), "1", "--foldersizes", NOW, SY_G_FOLDERS, NULL, "folder sizes after the sync"},

	/* folder names */
	[SY_OPT_PREFIX1] = {"prefix1", NULL, T_STR(acc[0].prefix), NULL, "from NAMESPACE", NOW, SY_G_NAMES, NULL, "host1 folder prefix, e.g. INBOX."},
	[SY_OPT_PREFIX2] = {"prefix2", NULL, T_STR(acc[1].prefix), NULL, "from NAMESPACE", NOW, SY_G_NAMES, NULL, "host2 folder prefix"},
	[SY_OPT_SEP1] = {"sep1", NULL, T_STR(acc[0].sep), NULL, "from NAMESPACE", NOW, SY_G_NAMES, NULL, "host1 hierarchy separator"},
	[SY_OPT_SEP2] = {"sep2", NULL, T_STR(acc[1].sep), NULL, "from NAMESPACE", NOW, SY_G_NAMES, NULL, "host2 hierarchy separator"},
	[SY_OPT_REGEXTRANS2] = {"regextrans2", NULL, T_LIST(regextrans2), NULL, NULL, NOW, SY_G_NAMES, "reg", "Perl s/// applied to each host2 folder name"},
	[SY_OPT_F1F2] = {"f1f2", NULL, T_HASH(f1f2), NULL, NULL, NOW, SY_G_NAMES, "h1=h2", "sync host1 folder h1 into host2 folder h2"},
	[SY_OPT_F1F2H] = {"f1f2h", NULL, T_HASH(f1f2), NULL, NULL, NOW, SY_G_NAMES, "h1=h2", "same as --f1f2"},
	[SY_OPT_NOF1F2] = {"nof1f2", NULL, T_BOOL(nof1f2), "0", NULL, NOW, SY_G_NAMES, NULL, "drop the --f1f2 of a preset"},
	[SY_OPT_AUTOMAP] = {"automap", NULL, T_NEG(automap), "0", NULL, NOW, SY_G_NAMES, NULL, "map special-use folders (Sent, Trash...) by role"},
	[SY_OPT_SUBFOLDER1] = {"subfolder1", NULL, T_STR(subfolder1), NULL, NULL, NOW, SY_G_NAMES, NULL, "sync the host1 subtree str to the host2 root"},
	[SY_OPT_SUBFOLDER2] = {"subfolder2", NULL, T_STR(subfolder2), NULL, NULL, NOW, SY_G_NAMES, NULL, "sync everything under the host2 folder str"},
	[SY_OPT_FIXINBOXINBOX] = {"fixInboxINBOX", NULL, T_NEG(fixinboxinbox), "1", NULL, NOW, SY_G_NAMES, NULL, "map Inbox/INBOX differing in case"},
	[SY_OPT_FIXSLASH2] = {"fixslash2", NULL, T_NEG(fixslash2), "1", NULL, NOW, SY_G_NAMES, NULL, "/ becomes _ in host2 names if sep2 isn't /"},
	[SY_OPT_CREATE_FOLDER_OLD] = {"create_folder_old", NULL, T_NEG(create_folder_old), "0", NULL, NA, SY_G_INTERNAL, NULL, "imapsync's old folder creation code"},

	/* message identity */
	[SY_OPT_USEHEADER] = {"useheader", NULL, T_LIST(useheader), NULL, "Message-Id, Received", NOW, SY_G_IDENTITY, NULL, "identity field, ALL: all"},
	[SY_OPT_SKIPHEADER] = {"skipheader", NULL, T_STR(skipheader), NULL, NULL, NOW, SY_G_IDENTITY, "reg", "header lines left out of the identity"},
	[SY_OPT_WHOLEHEADERIFNEEDED] = {"wholeheaderifneeded", NULL, T_NEG(wholeheaderifneeded), "1", NULL, NOW, SY_G_IDENTITY, NULL, "fetch whole header if no field found"},
	[SY_OPT_ADDHEADER] = {"addheader", NULL, T_NEG(addheader), "0", NULL, NOW, SY_G_IDENTITY, NULL, "give header-less messages a Message-Id"},
	[SY_OPT_SYNCDUPLICATES] = {"syncduplicates", NULL, T_NEG(syncduplicates), "0", NULL, NOW, SY_G_IDENTITY, NULL, "copy duplicates within a folder too"},
	[SY_OPT_SKIPSIZE] = {"skipsize", NULL, T_NEG(skipsize), "1", NULL, NOW, SY_G_IDENTITY, NULL, "leave the size out of the identity"},
	[SY_OPT_ALLOWSIZEMISMATCH] = {"allowsizemismatch", NULL, T_NEG(allowsizemismatch), "1", NULL, NOW, SY_G_IDENTITY, NULL, "accept a body size other than RFC822.SIZE"},
	[SY_OPT_MESSAGEIDNODOMAIN] = {"messageidnodomain", NULL, T_NEG(messageidnodomain), "0", NULL, NOW, SY_G_IDENTITY, NULL, "compare Message-Id up to the @ only"},
	[SY_OPT_USEUID] = {"useuid", NULL, T_NEG(useuid), "0", NULL, NOW, SY_G_IDENTITY, NULL, "identify messages by UID through the cache"},
	[SY_OPT_USECACHE] = {"usecache", NULL, T_NEG(usecache), "0", "if --useuid", NOW, SY_G_IDENTITY, NULL, "keep a UID cache in tmpdir"},
	[SY_OPT_CACHEAFTERCOPY] = {"cacheaftercopy", NULL, T_NEG(cacheaftercopy), "0", "if --usecache", LATER, SY_G_IDENTITY, NULL, "record each copy in the cache"},
	[SY_OPT_SKIPCROSSDUPLICATES] = {"skipcrossduplicates", NULL, T_NEG(skipcrossduplicates), "0", NULL, NOW, SY_G_IDENTITY, NULL, "skip messages already copied to another folder"},
	[SY_OPT_CHECKMESSAGEEXISTS] = {"checkmessageexists", NULL, T_NEG(checkmessageexists), "0", NULL, NOW, SY_G_IDENTITY, NULL, "check that each message still exists"},

	/* flags, labels, dates */
	[SY_OPT_RESYNCFLAGS] = {"resyncflags", NULL, T_NEG(resyncflags), "1", NULL, NOW, SY_G_FLAGS, NULL, "update flags of messages on host2"},
	[SY_OPT_REGEXFLAG] = {"regexflag", NULL, T_LIST(regexflag), NULL, NULL, NOW, SY_G_FLAGS, "reg", "Perl s/// applied to each flag list"},
	[SY_OPT_NOREGEXFLAG] = {"noregexflag", NULL, T_BOOL(noregexflag), "0", NULL, NOW, SY_G_FLAGS, NULL, "drop the --regexflag of a preset"},
	[SY_OPT_FILTERFLAGS] = {"filterflags", NULL, T_NEG(filterflags), "1", NULL, NOW, SY_G_FLAGS, NULL, "keep what host2 PERMANENTFLAGS allows"},
	[SY_OPT_FILTERBUGGYFLAGS] = {"filterbuggyflags", NULL, T_NEG(filterbuggyflags), "0", NULL, NOW, SY_G_FLAGS, NULL, "drop flags known to make APPEND fail"},
	[SY_OPT_FLAGSCASE] = {"flagscase", NULL, T_NEG(flagscase), "1", NULL, NOW, SY_G_FLAGS, NULL, "fix the case of system flags"},
	[SY_OPT_SYNCFLAGSAFTERCOPY] = {"syncflagsaftercopy", NULL, T_NEG(syncflagsaftercopy), "0", NULL, NOW, SY_G_FLAGS, NULL, "store the flags again after each APPEND (UID STORE FLAGS.SILENT on the APPENDUID), for servers that ignore APPEND's flags"},
	[SY_OPT_SYNCLABELS] = {"synclabels", NULL, T_NEG(synclabels), "0", NULL, NOW, SY_G_FLAGS, NULL, "copy Gmail labels"},
	[SY_OPT_RESYNCLABELS] = {"resynclabels", NULL, T_NEG(resynclabels), "0", NULL, NOW, SY_G_FLAGS, NULL, "update Gmail labels of messages on host2"},
	[SY_OPT_SYNCINTERNALDATES] = {"syncinternaldates", NULL, T_NEG(syncinternaldates), "1", NULL, NOW, SY_G_FLAGS, NULL, "keep the host1 internal dates"},
	[SY_OPT_IDATEFROMHEADER] = {"idatefromheader", NULL, T_NEG(idatefromheader), "0", NULL, NOW, SY_G_FLAGS, NULL, "take internal dates from the Date: header"},
	[SY_OPT_SYNCACLS] = {"syncacls", NULL, T_NEG(syncacls), "0", NULL, NOW, SY_G_FLAGS, NULL, "copy ACLs"},

	/* message selection */
	[SY_OPT_MAXAGE] = {"maxage", NULL, T_FLO(maxage), NULL, NULL, NOW, SY_G_SELECTION, NULL, "skip messages older than flo days"},
	[SY_OPT_MINAGE] = {"minage", NULL, T_FLO(minage), NULL, NULL, NOW, SY_G_SELECTION, NULL, "skip messages newer than flo days"},
	[SY_OPT_SEARCH] = {"search", NULL, T_STR(search), NULL, NULL, NOW, SY_G_SELECTION, NULL, "SEARCH criteria on both hosts"},
	[SY_OPT_SEARCH1] = {"search1", NULL, T_STR(acc[0].search), NULL, "--search", NOW, SY_G_SELECTION, NULL, "SEARCH criteria on host1"},
	[SY_OPT_SEARCH2] = {"search2", NULL, T_STR(acc[1].search), NULL, "--search", NOW, SY_G_SELECTION, NULL, "SEARCH criteria on host2"},
	[SY_OPT_MAXSIZE] = {"maxsize", NULL, T_INT(maxsize), NULL, NULL, NOW, SY_G_SELECTION, NULL, "skip messages larger than int bytes"},
	[SY_OPT_MINSIZE] = {"minsize", NULL, T_INT(minsize), NULL, NULL, NOW, SY_G_SELECTION, NULL, "skip messages of int bytes or less"},
	[SY_OPT_APPENDLIMIT] = {"appendlimit", NULL, T_INT(appendlimit), NULL, "host2 APPENDLIMIT", NOW, SY_G_SELECTION, NULL, "host2 size limit"},
	[SY_OPT_ABLETOSEARCH] = {"abletosearch", NULL, T_NEG(abletosearch), "1", NULL, NOW, SY_G_SELECTION, NULL, "use SEARCH; --no: FETCH dates instead"},
	[SY_OPT_ABLETOSEARCH1] = {"abletosearch1", NULL, T_NEG(acc[0].abletosearch), "1", "--abletosearch", NOW, SY_G_SELECTION, NULL, "use SEARCH on host1"},
	[SY_OPT_ABLETOSEARCH2] = {"abletosearch2", NULL, T_NEG(acc[1].abletosearch), "1", "--abletosearch", NOW, SY_G_SELECTION, NULL, "use SEARCH on host2"},
	[SY_OPT_CHECKNOABLETOSEARCH] = {"checknoabletosearch", NULL, T_NEG(checknoabletosearch), "1", "unless --justfolders", NOW, SY_G_SELECTION, NULL, "test SEARCH on INBOX"},
	[SY_OPT_FETCH_HASH_SET] = {"fetch_hash_set", NULL, T_STR(fetch_hash_set), NULL, "1:*", NOW, SY_G_SELECTION, "set", "the host1 UIDs listed (and so copied) in each folder; not 1:*: no state, no --delete2"},
	[SY_OPT_MAXLINELENGTH] = {"maxlinelength", NULL, T_INT(maxlinelength), NULL, NULL, NOW, SY_G_SELECTION, NULL, "skip messages with a longer line"},
	[SY_OPT_MAXLINELENGTHCMD] = {"maxlinelengthcmd", NULL, T_STR(maxlinelengthcmd), NULL, NULL, NOW, SY_G_SELECTION, "cmd", "filter messages with too long lines"},
	[SY_OPT_MINMAXLINELENGTH] = {"minmaxlinelength", NULL, T_INT(minmaxlinelength), NULL, NULL, NOW, SY_G_SELECTION, NULL, "skip messages whose lines are all short"},

	/* message transforms */
	[SY_OPT_SKIPMESS] = {"skipmess", NULL, T_LIST(skipmess), NULL, NULL, NOW, SY_G_TRANSFORMS, "reg", "skip messages matching reg"},
	[SY_OPT_REGEXMESS] = {"regexmess", NULL, T_LIST(regexmess), NULL, NULL, NOW, SY_G_TRANSFORMS, "reg", "Perl s/// applied to each message"},
	[SY_OPT_NOREGEXMESS] = {"noregexmess", NULL, T_BOOL(noregexmess), "0", NULL, NOW, SY_G_TRANSFORMS, NULL, "drop the --regexmess of a preset"},
	[SY_OPT_PIPEMESS] = {"pipemess", NULL, T_LIST(pipemess), NULL, NULL, NOW, SY_G_TRANSFORMS, "cmd", "pipe each message through cmd (chained)"},
	[SY_OPT_PIPEMESSCHECK] = {"pipemesscheck", NULL, T_NEG(pipemesscheck), "1", NULL, NOW, SY_G_TRANSFORMS, NULL, "try the --pipemess commands at start"},
	[SY_OPT_TRUNCMESS] = {"truncmess", NULL, T_INT(truncmess), NULL, NULL, NOW, SY_G_TRANSFORMS, NULL, "cut messages to int bytes"},
	[SY_OPT_DISARMREADRECEIPTS] = {"disarmreadreceipts", NULL, T_NEG(disarmreadreceipts), "0", NULL, NOW, SY_G_TRANSFORMS, NULL, "rename Disposition-Notification-To"},

	/* deletion */
	[SY_OPT_DELETE1] = {"delete1", "delete", T_NEG(delete1), "0", NULL, NOW, SY_G_DELETION, NULL, "delete host1 messages once copied"},
	[SY_OPT_DELETE2] = {"delete2", NULL, T_NEG(delete2), "0", NULL, NOW, SY_G_DELETION, NULL, "delete host2 messages absent from host1"},
	[SY_OPT_DELETE2DUPLICATES] = {"delete2duplicates", NULL, T_NEG(delete2duplicates), "0", "if --delete2", NOW, SY_G_DELETION, NULL, "delete host2 duplicates"},
	[SY_OPT_DELETE2FOLDERS] = {"delete2folders", NULL, T_NEG(delete2folders), "0", NULL, NOW, SY_G_DELETION, NULL, "delete host2 folders absent from host1"},
	[SY_OPT_DELETE2FOLDERSONLY] = {"delete2foldersonly", NULL, T_STR(delete2foldersonly), NULL, NULL, NOW, SY_G_DELETION, "/reg/", "delete only host2 folders matching"},
	[SY_OPT_DELETE2FOLDERSBUTNOT] = {"delete2foldersbutnot", NULL, T_STR(delete2foldersbutnot), NULL, NULL, NOW, SY_G_DELETION, "/reg/", "never delete host2 folders matching"},
	[SY_OPT_DELETE1EMPTYFOLDERS] = {"delete1emptyfolders", NULL, T_BOOL(delete1emptyfolders), "0", NULL, NOW, SY_G_DELETION, NULL, "delete emptied host1 folders, not INBOX"},
	[SY_OPT_EXPUNGE1] = {"expunge1", "expunge", T_NEG(expunge1), "0", "if --delete1", NOW, SY_G_DELETION, NULL, "expunge host1 folders"},
	[SY_OPT_EXPUNGE2] = {"expunge2", NULL, T_NEG(expunge2), "0", NULL, NOW, SY_G_DELETION, NULL, "expunge host2 folders"},
	[SY_OPT_UIDEXPUNGE2] = {"uidexpunge2", NULL, T_NEG(uidexpunge2), "0", "if --delete2", NOW, SY_G_DELETION, NULL, "UID EXPUNGE on host2"},
	[SY_OPT_EXPUNGEAFTEREACH] = {"expungeaftereach", NULL, T_NEG(expungeaftereach), "1", NULL, NOW, SY_G_DELETION, NULL, "with --delete1, expunge after each message"},

	/* run modes and limits */
	[SY_OPT_DRY] = {"dry", NULL, T_NEG(dry), "0", NULL, NOW, SY_G_RUN, NULL, "show what would be done, change nothing"},
	[SY_OPT_DRY1] = {"dry1", NULL, T_NEG(dry1), "0", NULL, NOW, SY_G_RUN, NULL, "change nothing on host1 only"},
	[SY_OPT_JUSTCONNECT] = {"justconnect", NULL, T_NEG(justconnect), "0", "without hosts/users", NOW, SY_G_RUN, NULL, "connect, then exit"},
	[SY_OPT_JUSTLOGIN] = {"justlogin", NULL, T_NEG(justlogin), "0", NULL, NOW, SY_G_RUN, NULL, "log in to both hosts, then exit"},
	[SY_OPT_JUSTFOLDERS] = {"justfolders", NULL, T_NEG(justfolders), "0", NULL, NOW, SY_G_RUN, NULL, "sync folders only, no messages"},
	[SY_OPT_JUSTFOLDERSIZES] = {"justfoldersizes", NULL, T_NEG(justfoldersizes), "0", NULL, NOW, SY_G_RUN, NULL, "print folder sizes, then exit"},
	[SY_OPT_JUSTFOLDERLISTS] = {"justfolderlists", NULL, T_NEG(justfolderlists), "0", NULL, NOW, SY_G_RUN, NULL, "print folder lists, then exit"},
	[SY_OPT_JUSTAUTOMAP] = {"justautomap", NULL, T_NEG(justautomap), "0", NULL, NOW, SY_G_RUN, NULL, "print the --automap mapping, then exit"},
	[SY_OPT_JUSTBANNER] = {"justbanner", NULL, T_NEG(justbanner), "0", NULL, NOW, SY_G_RUN, NULL, "print the banner, then exit"},
	[SY_OPT_ERRORSMAX] = {"errorsmax", NULL, T_INT(errorsmax), "50", NULL, NOW, SY_G_RUN, NULL, "stop after int errors"},
	[SY_OPT_ERRORSDUMP] = {"errorsdump", NULL, T_NEG(errorsdump), "1", NULL, NOW, SY_G_RUN, NULL, "list the errors at the end"},
	[SY_OPT_EXITWHENOVER] = {"exitwhenover", NULL, T_INT(exitwhenover), NULL, NULL, NOW, SY_G_RUN, NULL, "stop after int bytes transferred"},
	[SY_OPT_MAXBYTESPERSECOND] = {"maxbytespersecond", NULL, T_INT(maxbytespersecond), "0", NULL, NOW, SY_G_RUN, NULL, "average byte rate cap, 0 = none"},
	[SY_OPT_MAXBYTESAFTER] = {"maxbytesafter", NULL, T_INT(maxbytesafter), "0", NULL, NOW, SY_G_RUN, NULL, "cap the byte rate after int bytes"},
	[SY_OPT_MAXMESSAGESPERSECOND] = {"maxmessagespersecond", NULL, T_FLO(maxmessagespersecond), "0", NULL, NOW, SY_G_RUN, NULL, "average message rate cap, 0 = none"},
	[SY_OPT_MAXSLEEP] = {"maxsleep", NULL, T_FLO(maxsleep), "2", NULL, NOW, SY_G_RUN, NULL, "longest throttle pause, seconds"},
	[SY_OPT_ABORT] = {"abort", NULL, T_BOOL(abort), "0", NULL, NOW, SY_G_RUN, NULL, "stop the run named in the pidfile"},
	[SY_OPT_ABORTBYFILE] = {"abortbyfile", NULL, T_BOOL(abortbyfile), "0", NULL, NOW, SY_G_RUN, NULL, "stop the run in --pidfile through its abort file"},
	[SY_OPT_SIGEXIT] = {"sigexit", NULL, T_LIST(sigexit), NULL, "QUIT TERM", NOW, SY_G_RUN, "sig", "signal that ends the run with stats"},
	[SY_OPT_SIGRECONNECT] = {"sigreconnect", NULL, T_LIST(sigreconnect), NULL, "INT", NOW, SY_G_RUN, "sig", "signal that reconnects both hosts"},
	[SY_OPT_SIGIGNORE] = {"sigignore", NULL, T_LIST(sigignore), NULL, NULL, NOW, SY_G_RUN, "sig", "signal to ignore"},
	[SY_OPT_VERSION] = {"version", NULL, T_BOOL(version), "0", NULL, NOW, SY_G_RUN, NULL, "print the version, then exit"},
	[SY_OPT_HELP] = {"help", NULL, T_BOOL(help), "0", NULL, NOW, SY_G_RUN, NULL, "print this help, then exit"},
	[SY_OPT_RELEASECHECK] = {"releasecheck", NULL, T_NEG(releasecheck), "0", NULL, NA, SY_G_INTERNAL, NULL, "check for a newer release (never done)"},

	/* files and logging */
	[SY_OPT_TMPDIR] = {"tmpdir", NULL, T_STR(tmpdir), "/tmp", NULL, NOW, SY_G_FILES, "dir", "cache and temporary files"},
	[SY_OPT_PIDFILE] = {"pidfile", NULL, T_STR(pidfile), NULL, "TMPDIR/imapsync.pid", NOW, SY_G_FILES, "file", "pid file, \"\": none"},
	[SY_OPT_PIDFILELOCKING] = {"pidfilelocking", NULL, T_NEG(pidfilelocking), "0", NULL, NOW, SY_G_FILES, NULL, "refuse to start when the pid file exists"},
	[SY_OPT_LOG] = {"log", NULL, T_NEG(log), "1", NULL, NOW, SY_G_FILES, NULL, "write a log file (--nolog: none)"},
	[SY_OPT_LOGFILE] = {"logfile", NULL, T_STR(logfile), NULL, "DATE_USER1_USER2.txt", NOW, SY_G_FILES, "file", "log file, in --logdir"},
	[SY_OPT_LOGDIR] = {"logdir", NULL, T_STR(logdir), "LOG_imapsync", NULL, NOW, SY_G_FILES, "dir", "log directory"},
	[SY_OPT_TAIL] = {"tail", NULL, T_NEG(tail), "0", NULL, NOW, SY_G_FILES, NULL, "follow the log of the run in --pidfile"},
	[SY_OPT_EMAILREPORT1] = {"emailreport1", NULL, T_NEG(acc[0].emailreport), "0", NULL, NOW, SY_G_FILES, NULL, "APPEND the report to host1 INBOX"},
	[SY_OPT_EMAILREPORT2] = {"emailreport2", NULL, T_NEG(acc[1].emailreport), "0", NULL, NOW, SY_G_FILES, NULL, "APPEND the report to host2 INBOX"},
	[SY_OPT_EMAILREPORTFROM] = {"emailreportfrom", NULL, T_STR(emailreportfrom), NULL, NULL, NOW, SY_G_FILES, NULL, "From: of the report message"},

	/* presets */
	[SY_OPT_GMAIL1] = {"gmail1", NULL, T_BOOL(gmail1), "0", NULL, NOW, SY_G_PRESETS, NULL, "host1 is Gmail"},
	[SY_OPT_GMAIL2] = {"gmail2", NULL, T_BOOL(gmail2), "0", NULL, NOW, SY_G_PRESETS, NULL, "host2 is Gmail"},
	[SY_OPT_OFFICE1] = {"office1", NULL, T_BOOL(office1), "0", NULL, NOW, SY_G_PRESETS, NULL, "host1 is Office 365"},
	[SY_OPT_OFFICE2] = {"office2", NULL, T_BOOL(office2), "0", NULL, NOW, SY_G_PRESETS, NULL, "host2 is Office 365"},
	[SY_OPT_EXCHANGE1] = {"exchange1", NULL, T_BOOL(exchange1), "0", NULL, NOW, SY_G_PRESETS, NULL, "host1 is Exchange"},
	[SY_OPT_EXCHANGE2] = {"exchange2", NULL, T_BOOL(exchange2), "0", NULL, NOW, SY_G_PRESETS, NULL, "host2 is Exchange"},
	[SY_OPT_DOMINO1] = {"domino1", NULL, T_BOOL(domino1), "0", NULL, NOW, SY_G_PRESETS, NULL, "host1 is Domino"},
	[SY_OPT_DOMINO2] = {"domino2", NULL, T_BOOL(domino2), "0", NULL, NOW, SY_G_PRESETS, NULL, "host2 is Domino"},

	/* debugging */
	[SY_OPT_DEBUG] = {"debug", NULL, T_NEG(debug), "0", NULL, NOW, SY_G_DEBUG, NULL, "debug output"},
	[SY_OPT_DEBUGIMAP] = {"debugimap", NULL, T_NEG(debugimap), "0", NULL, NOW, SY_G_DEBUG, NULL, "IMAP traces of both hosts"},
	[SY_OPT_DEBUGIMAP1] = {"debugimap1", NULL, T_NEG(acc[0].debugimap), "0", NULL, NOW, SY_G_DEBUG, NULL, "IMAP trace of host1"},
	[SY_OPT_DEBUGIMAP2] = {"debugimap2", NULL, T_NEG(acc[1].debugimap), "0", NULL, NOW, SY_G_DEBUG, NULL, "IMAP trace of host2"},
	[SY_OPT_DEBUGFOLDERS] = {"debugfolders", NULL, T_NEG(debugfolders), "0", NULL, NOW, SY_G_DEBUG, NULL, "print the folder plan"},
	[SY_OPT_DEBUGFLAGS] = {"debugflags", NULL, T_NEG(debugflags), "0", NULL, NOW, SY_G_DEBUG, NULL, "print each message's flags on both sides"},
	[SY_OPT_DEBUGCONTENT] = {"debugcontent", NULL, T_NEG(debugcontent), "0", NULL, NOW, SY_G_DEBUG, NULL, "print each copied message (64 KiB max)"},
	[SY_OPT_DEBUGMEMORY] = {"debugmemory", NULL, T_NEG(debugmemory), "0", NULL, NOW, SY_G_DEBUG, NULL, "print memory use after each copy"},
	[SY_OPT_DEBUGCACHE] = {"debugcache", NULL, T_NEG(debugcache), "0", NULL, NOW, SY_G_DEBUG, NULL, "print what the state says of each folder"},
	[SY_OPT_DEBUGCROSSDUPLICATES] = {"debugcrossduplicates", NULL, T_NEG(debugcrossduplicates), "0", NULL, NOW, SY_G_DEBUG, NULL, "show what --skipcrossduplicates skips"},
	[SY_OPT_DEBUGLABELS] = {"debuglabels", NULL, T_NEG(debuglabels), "0", NULL, NOW, SY_G_DEBUG, NULL, "debug Gmail labels"},
	[SY_OPT_DEBUGLIST] = {"debuglist", NULL, T_NEG(debuglist), "0", NULL, NOW, SY_G_DEBUG, NULL, "print both LIST answers"},
	[SY_OPT_DEBUGMAXLINELENGTH] = {"debugmaxlinelength", NULL, T_NEG(debugmaxlinelength), "0", NULL, NOW, SY_G_DEBUG, NULL, "print each message's longest line"},
	[SY_OPT_DEBUGSIG] = {"debugsig", NULL, T_NEG(debugsig), "0", NULL, NOW, SY_G_DEBUG, NULL, "print what each signal does"},
	[SY_OPT_DEBUGENV] = {"debugenv", NULL, T_NEG(debugenv), "0", NULL, NOW, SY_G_DEBUG, NULL, "print the environment (secrets MASKED)"},
	[SY_OPT_DEBUGSSL] = {"debugssl", NULL, T_INT(debugssl), "1", NULL, NOW, SY_G_DEBUG, NULL, "TLS debug level: 2 protocol and cipher, 3 traces"},
	[SY_OPT_DEBUGSLEEP] = {"debugsleep", NULL, T_FLO(debugsleep), NULL, NULL, NA, SY_G_INTERNAL, NULL, "pause in debug output"},

	/* imapsync internals */
	[SY_OPT_DEBUGDEV] = {"debugdev", NULL, T_NEG(debugdev), "0", NULL, NA, SY_G_INTERNAL, NULL, "imapsync development traces"},
	[SY_OPT_DEBUGCGI] = {"debugcgi", NULL, T_NEG(debugcgi), "0", NULL, NA, SY_G_INTERNAL, NULL, "imapsync web interface traces"},
	[SY_OPT_SIMULONG] = {"simulong", NULL, T_FLO(simulong), NULL, NULL, NA, SY_G_INTERNAL, NULL, "imapsync's fake long run"},
	[SY_OPT_FASTIO1] = {"fastio1", NULL, T_NEG(acc[0].fastio), "0", NULL, NA, SY_G_INTERNAL, NULL, "Perl I/O tuning for host1"},
	[SY_OPT_FASTIO2] = {"fastio2", NULL, T_NEG(acc[1].fastio), "0", NULL, NA, SY_G_INTERNAL, NULL, "Perl I/O tuning for host2"},
	[SY_OPT_UID1] = {"uid1", NULL, T_NEG(acc[0].uid), "1", NULL, NA, SY_G_INTERNAL, NULL, "UID commands on host1 (always)"},
	[SY_OPT_UID2] = {"uid2", NULL, T_NEG(acc[1].uid), "1", NULL, NA, SY_G_INTERNAL, NULL, "UID commands on host2 (always)"},
	[SY_OPT_BUFFERSIZE] = {"buffersize", NULL, T_INT(buffersize), NULL, NULL, NA, SY_G_INTERNAL, NULL, "Perl I/O buffer size"},
	[SY_OPT_FIXCOLONBUG] = {"fixcolonbug", NULL, T_NEG(fixcolonbug), "1", NULL, NA, SY_G_INTERNAL, NULL, "imapsync tmpdir workaround"},
	[SY_OPT_MODULESVERSION] = {"modulesversion", "modules_version", T_NEG(modulesversion), "1", NULL, NA, SY_G_INTERNAL, NULL, "list Perl module versions"},
	[SY_OPT_TESTS] = {"tests", NULL, T_NEG(tests), "0", NULL, NA, SY_G_INTERNAL, NULL, "imapsync's self-tests"},
	[SY_OPT_TESTSDEBUG] = {"testsdebug", "tests_debug", T_NEG(testsdebug), "0", NULL, NA, SY_G_INTERNAL, NULL, "imapsync's self-tests"},
	[SY_OPT_TESTSUNIT] = {"testsunit", NULL, T_LIST(testsunit), NULL, NULL, NA, SY_G_INTERNAL, NULL, "imapsync's self-tests"},
	[SY_OPT_TESTSLIVE] = {"testslive", NULL, T_NEG(testslive), "0", NULL, NA, SY_G_INTERNAL, NULL, "imapsync's live tests"},
	[SY_OPT_TESTSLIVE6] = {"testslive6", NULL, T_NEG(testslive6), "0", NULL, NA, SY_G_INTERNAL, NULL, "imapsync's live IPv6 tests"},
	[SY_OPT_EXITONLOAD] = {"exitonload", NULL, T_NEG(exitonload), "0", NULL, NA, SY_G_INTERNAL, NULL, "imapsync web interface load guard"},
	[SY_OPT_DOCKERCONTEXT] = {"dockercontext", NULL, T_NEG(dockercontext), "0", NULL, NA, SY_G_INTERNAL, NULL, "imapsync Docker image mode"},
	[SY_OPT_MEMORYSTRESS] = {"memorystress", NULL, T_NEG(memorystress), "0", NULL, NA, SY_G_INTERNAL, NULL, "imapsync memory test"},
	[SY_OPT_VAR] = {"var", NULL, T_LIST(var), NULL, NULL, NA, SY_G_INTERNAL, NULL, "imapsync test variables"},
	[SY_OPT_STATE] = {"state", NULL, T_NEG(state), "1", NULL, NOW, SY_G_IDENTITY, NULL, "imapferry: remember each folder's state in tmpdir and skip unchanged folders (--nostate: imapsync's stateless runs)"},
	[SY_OPT_DELTA] = {"delta", NULL, T_NEG(delta), "1", NULL, NOW, SY_G_IDENTITY, NULL, "imapferry: with --state, read only what changed in a changed folder (QRESYNC/CONDSTORE + the UID map; --nodelta: a full pass)"},
	[SY_OPT_PARALLEL] = {"parallel", NULL, T_INT(parallel), "1", NULL, NOW, SY_G_RUN, NULL, "imapferry: folders synced at once, each by a worker process with its own connection pair (1: one after the other, as imapsync)"},
	[SY_OPT_CHECKPOINT] = {"checkpoint", NULL, T_INT(checkpoint), "10", NULL, NOW, SY_G_IDENTITY, NULL, "imapferry: with --state, also save the state after a folder's pass once this many seconds passed since the last save (0: after every folder), so a run killed later keeps the folders it finished"},
	[SY_OPT_REDIS] = {"redis", NULL, T_STR(redis), NULL, NULL, NOW, SY_G_IDENTITY, NULL, "imapferry: keep the state in Redis (HOST:PORT or a socket path) instead of tmpdir, under the key schema the proxy and daemon share"},
	[SY_OPT_DAEMON] = {"daemon", NULL, T_BOOL(daemon), NULL, NULL, NOW, SY_G_RUN, NULL, "imapferry: live replication: consume the proxy's marks from --redis and sync what changed (README: the daemon)"},
	[SY_OPT_WORKERS] = {"workers", NULL, T_INT(workers), "4", NULL, NOW, SY_G_RUN, NULL, "imapferry daemon: folder syncs run at once"},
	[SY_OPT_MAXCONNECTIONS] = {"maxconnections", "max-connections", T_INT(maxconns), "128", NULL, NOW, SY_G_RUN, NULL, "imapferry daemon: most connections held to each server, running syncs and idle pooled ones together, shared by every daemon of the Redis (split evenly among the daemons and their workers; at least --workers)"},
	[SY_OPT_USERS] = {"users", NULL, T_STR(users), NULL, NULL, NOW, SY_G_RUN, NULL, "imapferry daemon: file of users (one per line, \"user1 user2\" when the names differ) to sync and keep polling"},
	[SY_OPT_POLL] = {"poll", NULL, T_INT(poll), "3600", NULL, NOW, SY_G_RUN, NULL, "imapferry daemon: seconds between quick checks of each user (changes that bypassed the proxy)"},
	[SY_OPT_POLLACTIVE] = {"pollactive", "poll-active", T_INT(pollactive), "60", NULL, NOW, SY_G_RUN, NULL, "imapferry daemon: seconds between quick checks of a user the proxy saw active (a change of theirs was synced)"},
	[SY_OPT_FULLCHECK] = {"fullcheck", NULL, T_INT(fullcheck), "86400", NULL, NOW, SY_G_RUN, NULL, "imapferry daemon: seconds between full checks of a user (every folder identified again, no stored state trusted); 0 = never"},
	[SY_OPT_LEASE] = {"lease", NULL, T_INT(lease), "120", NULL, NOW, SY_G_RUN, NULL, "imapferry daemon: seconds a claimed item is held before another worker may take it (renewed while it runs)"},
	[SY_OPT_HTTP] = {"http", NULL, T_STR(http), NULL, NULL, NOW, SY_G_RUN, NULL, "imapferry daemon: ADDR:PORT for /metrics and /healthz"},
	[SY_OPT_NOTIFYSTATUS] = {"notifystatus", "notify-status", T_STR(notifystatus), NULL, NULL, NOW, SY_G_RUN, "prefix", "imapferry daemon: also sync a folder as soon as the source Dovecot's notify_status plugin writes its status into --redis under keys starting with prefix (README: Dovecot notify_status)"},
	[SY_OPT_QUICKCHECK] = {"quickcheck", NULL, T_BOOL(quickcheck), NULL, NULL, NOW, SY_G_INTERNAL, NULL, "imapferry daemon's own: create missing folders, STATUS both sides, mark changed folders in --redis, sync nothing"},
	[SY_OPT_FENCE] = {"fence", NULL, T_STR(fence), NULL, NULL, NOW, SY_G_INTERNAL, "item", "imapferry daemon's own: the queue item this run holds (user, folder, owner, tab-separated); the state in --redis is written only while the item's owner is still this run's"},
	[SY_OPT_MAXDELETE2] = {"maxdelete2", NULL, T_FLO(maxdelete2), "50", NULL, NOW, SY_G_DELETION, "pct", "imapferry: --delete2 refuses to delete more than pct percent of a host2 folder's messages"},
	[SY_OPT_FORCEDELETE2] = {"forcedelete2", "force-delete2", T_NEG(forcedelete2), "0", NULL, NOW, SY_G_DELETION, NULL, "imapferry: let --delete2 go beyond --maxdelete2"},
};
/* clang-format on */
_Static_assert(sizeof(opts) / sizeof(opts[0]) == SY_OPT_COUNT, "one descriptor per option id");

/* ---- small helpers ---- */

static void *field(struct sy_options *o, const struct sy_optdesc *d)
{
	return (char *)o + d->off;
}

static const void *cfield(const struct sy_options *o, const struct sy_optdesc *d)
{
	return (const char *)o + d->off;
}

static void mark_given(struct sy_options *o, int id)
{
	o->given[id / 8] |= (unsigned char)(1u << (id % 8));
}

int sy_options_given(const struct sy_options *o, enum sy_opt id)
{
	if ((int)id < 0 || id >= SY_OPT_COUNT)
		return 0;
	return (o->given[id / 8] >> (id % 8)) & 1;
}

const char *sy_options_name(enum sy_opt id)
{
	if ((int)id < 0 || id >= SY_OPT_COUNT)
		return NULL;
	return opts[id].name;
}

int sy_options_lookup(const char *name)
{
	int i;

	for (i = 0; i < SY_OPT_COUNT; i++) {
		if (strcasecmp(opts[i].name, name) == 0 ||
		    (opts[i].alias != NULL && strcasecmp(opts[i].alias, name) == 0))
			return i;
	}
	return -1;
}

/* Errors collected for the caller: one message per line. */
struct errs {
	char *buf;
	size_t size, len;
	int count;
	const char *where; /* prefix, e.g. "options_extra.txt:1: ", or "" */
};

static void err_add(struct errs *e, const char *fmt, ...) LOG_PRINTF(2, 3);

static void err_add(struct errs *e, const char *fmt, ...)
{
	va_list ap;
	int n;

	e->count++;
	if (e->buf == NULL || e->size == 0 || e->len + 1 >= e->size)
		return;
	if (e->len > 0)
		e->buf[e->len++] = '\n';
	e->buf[e->len] = '\0';
	n = snprintf(e->buf + e->len, e->size - e->len, "%s", e->where);
	if (n > 0)
		e->len += (size_t)n;
	if (e->len >= e->size) {
		e->len = e->size - 1;
		return;
	}
	va_start(ap, fmt);
	n = vsnprintf(e->buf + e->len, e->size - e->len, fmt, ap);
	va_end(ap);
	if (n > 0)
		e->len += (size_t)n;
	if (e->len >= e->size)
		e->len = e->size - 1;
}

static void errs_init(struct errs *e, char *buf, size_t size)
{
	e->buf = buf;
	e->size = size;
	e->len = 0;
	e->count = 0;
	e->where = "";
	if (buf != NULL && size > 0)
		buf[0] = '\0';
}

static int str_set(char **dst, const char *s)
{
	char *copy = strdup(s);

	if (copy == NULL)
		return -1;
	free(*dst);
	*dst = copy;
	return 0;
}

static int list_push(struct sy_strlist *l, const char *s)
{
	char **v = realloc(l->v, (l->n + 1) * sizeof(*v));

	if (v == NULL)
		return -1;
	l->v = v;
	if ((l->v[l->n] = strdup(s)) == NULL)
		return -1;
	l->n++;
	return 0;
}

static void list_free(struct sy_strlist *l)
{
	size_t i;

	for (i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
	l->v = NULL;
	l->n = 0;
}

/* A repeated key replaces the value (a Perl hash); the first position stays. */
static int hash_set(struct sy_kvlist *h, const char *key, size_t keylen, const char *value)
{
	struct sy_kv *v;
	size_t i;

	for (i = 0; i < h->n; i++) {
		if (strlen(h->v[i].key) == keylen && memcmp(h->v[i].key, key, keylen) == 0)
			return str_set(&h->v[i].value, value);
	}
	v = realloc(h->v, (h->n + 1) * sizeof(*v));
	if (v == NULL)
		return -1;
	h->v = v;
	v[h->n].key = strndup(key, keylen);
	v[h->n].value = strdup(value);
	if (v[h->n].key == NULL || v[h->n].value == NULL) {
		free(v[h->n].key);
		free(v[h->n].value);
		return -1;
	}
	h->n++;
	return 0;
}

static void hash_free(struct sy_kvlist *h)
{
	size_t i;

	for (i = 0; i < h->n; i++) {
		free(h->v[i].key);
		free(h->v[i].value);
	}
	free(h->v);
	h->v = NULL;
	h->n = 0;
}

/* ---- numbers, as Getopt::Long accepts them ---- */

static int is_digit_(int c)
{
	return (c >= '0' && c <= '9') || c == '_';
}

/* Copies s without its underscores into out (size outsize); -1 if too long. */
static int strip_underscores(const char *s, char *out, size_t outsize)
{
	size_t o = 0;

	for (; *s != '\0'; s++) {
		if (*s == '_')
			continue;
		if (o + 1 >= outsize)
			return -1;
		out[o++] = *s;
	}
	out[o] = '\0';
	return 0;
}

/* Getopt::Long's integer: [-+]?_*[0-9][0-9_]* (underscores are dropped). */
static int parse_int(const char *s, long long *out)
{
	const char *p = s;
	char digits[64], *end;
	long long v;

	if (*p == '-' || *p == '+')
		p++;
	while (*p == '_')
		p++;
	if (!(*p >= '0' && *p <= '9'))
		return -1;
	while (is_digit_(*p))
		p++;
	if (*p != '\0' || strip_underscores(s, digits, sizeof(digits)) < 0)
		return -1;
	errno = 0;
	v = strtoll(digits, &end, 10);
	/* Perl would go on with a float; a count beyond 2^63 is a typo. */
	if (errno != 0 || *end != '\0')
		return -1;
	*out = v;
	return 0;
}

/* Getopt::Long's real number:
 * [-+]?(?=[0-9.])[0-9_]*(\.[0-9_]+)?([eE][-+]?[0-9_]+)? */
static int parse_float(const char *s, double *out)
{
	const char *p = s;
	char digits[128], *end;
	double v;

	if (*p == '-' || *p == '+')
		p++;
	if (!((*p >= '0' && *p <= '9') || *p == '.'))
		return -1;
	while (is_digit_(*p))
		p++;
	if (*p == '.') {
		p++;
		if (!is_digit_(*p))
			return -1;
		while (is_digit_(*p))
			p++;
	}
	if (*p == 'e' || *p == 'E') {
		p++;
		if (*p == '-' || *p == '+')
			p++;
		if (!is_digit_(*p))
			return -1;
		while (is_digit_(*p))
			p++;
	}
	if (*p != '\0' || strip_underscores(s, digits, sizeof(digits)) < 0)
		return -1;
	errno = 0;
	v = strtod(digits, &end);
	if (*end != '\0')
		return -1;
	*out = v;
	return 0;
}

/*
 * Stores value into option d. name is the spelling the user matched, for
 * messages. Returns 0, or -1 after adding Getopt::Long's message to e.
 */
static int opt_store(struct sy_options *o, const struct sy_optdesc *d, const char *name,
                     const char *value, struct errs *e)
{
	void *p = field(o, d);
	const char *eq;
	int rc = 0;

	switch (d->type) {
	case SY_T_BOOL:
	case SY_T_NEGBOOL:
		*(int *)p = value[0] != '0' || value[1] != '\0';
		return 0;
	case SY_T_STR:
		rc = str_set((char **)p, value);
		break;
	case SY_T_INT:
		if (parse_int(value, (long long *)p) < 0) {
			err_add(e, "Value \"%s\" invalid for option %s (number expected)", value,
			        name);
			return -1;
		}
		return 0;
	case SY_T_FLOAT:
		if (parse_float(value, (double *)p) < 0) {
			err_add(e, "Value \"%s\" invalid for option %s (real number expected)",
			        value, name);
			return -1;
		}
		return 0;
	case SY_T_LIST:
		rc = list_push(p, value);
		break;
	case SY_T_HASH:
		/* Getopt::Long splits at the first '=': the key may be empty. */
		eq = strchr(value, '=');
		if (eq == NULL) {
			err_add(e, "Option %s, key \"%s\", requires a value", name, value);
			return -1;
		}
		rc = hash_set(p, value, (size_t)(eq - value), eq + 1);
		break;
	case SY_T_COUNT:
		break;
	}
	if (rc < 0)
		err_add(e, "out of memory while storing option %s", name);
	return rc;
}

/* ---- names: every spelling an option answers to ---- */

#define FORM_MAX 48

struct form {
	int id;
	int neg;
	char lc[FORM_MAX]; /* lower case, as Getopt::Long (ignore_case) keys them */
};

static void lower_into(char *dst, size_t size, const char *prefix, const char *name)
{
	size_t n = 0;

	for (; *prefix != '\0' && n + 1 < size; prefix++)
		dst[n++] = *prefix;
	for (; *name != '\0' && n + 1 < size; name++)
		dst[n++] = (char)tolower((unsigned char)*name);
	dst[n] = '\0';
}

/* Name and alias; for negatable booleans also no<name> and no-<name>. */
static size_t forms_of(int id, struct form *out)
{
	const char *names[2] = {opts[id].name, opts[id].alias};
	static const char *const negs[2] = {"no", "no-"};
	size_t n = 0, i, j;

	for (i = 0; i < 2; i++) {
		if (names[i] == NULL)
			continue;
		out[n].id = id;
		out[n].neg = 0;
		lower_into(out[n].lc, FORM_MAX, "", names[i]);
		n++;
		if (opts[id].type != SY_T_NEGBOOL)
			continue;
		for (j = 0; j < 2; j++) {
			out[n].id = id;
			out[n].neg = 1;
			lower_into(out[n].lc, FORM_MAX, negs[j], names[i]);
			n++;
		}
	}
	return n;
}

static int form_cmp(const void *a, const void *b)
{
	return strcmp(((const struct form *)a)->lc, ((const struct form *)b)->lc);
}

struct parser {
	struct sy_options *o;
	struct form *forms; /* sorted bytewise, as Getopt::Long lists candidates */
	size_t nforms;
	struct errs *e;
};

static int parser_init(struct parser *ps, struct sy_options *o, struct errs *e)
{
	int id;

	ps->o = o;
	ps->e = e;
	ps->nforms = 0;
	ps->forms = malloc((size_t)SY_OPT_COUNT * 6 * sizeof(*ps->forms));
	if (ps->forms == NULL)
		return -1;
	for (id = 0; id < SY_OPT_COUNT; id++)
		ps->nforms += forms_of(id, ps->forms + ps->nforms);
	qsort(ps->forms, ps->nforms, sizeof(*ps->forms), form_cmp);
	return 0;
}

/*
 * Finds the option typed as lc (lower case, no dashes): an exact spelling
 * wins, else the unique option all spellings starting with lc belong to.
 * Returns the form, or NULL after adding "Unknown option" / "is ambiguous".
 * *canon_r is the name for later messages (Getopt::Long names a prefix that
 * matched several spellings of one option after that option).
 */
static const struct form *opt_find(struct parser *ps, const char *lc, char *canon_r,
                                   size_t canon_size)
{
	size_t len = strlen(lc), i, first = 0, nhits = 0, used, size;
	const struct form *hit = NULL;
	int same = 1;
	char *list;

	for (i = 0; i < ps->nforms; i++) {
		if (strcmp(ps->forms[i].lc, lc) == 0) {
			snprintf(canon_r, canon_size, "%s", ps->forms[i].lc);
			return &ps->forms[i];
		}
	}
	for (i = 0; i < ps->nforms; i++) {
		if (strncmp(ps->forms[i].lc, lc, len) != 0)
			continue;
		if (nhits == 0) {
			first = i;
			hit = &ps->forms[i];
		} else if (ps->forms[i].id != hit->id || ps->forms[i].neg != hit->neg) {
			same = 0;
		}
		nhits++;
	}
	if (nhits == 0) {
		err_add(ps->e, "Unknown option: %s", lc);
		return NULL;
	}
	if (nhits == 1) {
		snprintf(canon_r, canon_size, "%s", hit->lc);
		return hit;
	}
	if (same) {
		lower_into(canon_r, canon_size, hit->neg ? "no" : "", opts[hit->id].name);
		return hit;
	}
	/* The candidate list: forms[] is sorted, so the spellings sharing a
	 * prefix are one run starting at first. */
	size = nhits * (FORM_MAX + 2) + 1;
	list = malloc(size);
	if (list == NULL) {
		err_add(ps->e, "Option %s is ambiguous", lc);
		return NULL;
	}
	used = 0;
	for (i = first; i < ps->nforms && strncmp(ps->forms[i].lc, lc, len) == 0; i++) {
		used += (size_t)snprintf(list + used, size - used, "%s%s", used > 0 ? ", " : "",
		                         ps->forms[i].lc);
	}
	err_add(ps->e, "Option %s is ambiguous (%s)", lc, list);
	free(list);
	return NULL;
}

static char *lower_dup(const char *s, size_t len)
{
	char *r = malloc(len + 1);
	size_t i;

	if (r == NULL)
		return NULL;
	for (i = 0; i < len; i++)
		r[i] = (char)tolower((unsigned char)s[i]);
	r[len] = '\0';
	return r;
}

/*
 * Parses words[0..n) like Getopt::Long's GetOptionsFromArray with imapsync's
 * (default) configuration: permute, ignore_case, auto_abbrev, prefixes
 * "--", "-" and "+". Non-option words are appended to *rest (borrowed).
 */
static void parse_words(struct parser *ps, char **words, int n, struct sy_strlist *rest)
{
	int i;

	for (i = 0; i < n; i++) {
		const char *w = words[i], *name, *eq, *value;
		char canon[FORM_MAX + 4], *lc;
		const struct form *f;
		const struct sy_optdesc *d;

		if (strcmp(w, "--") == 0) {
			for (i++; i < n; i++)
				rest->v[rest->n++] = words[i];
			break;
		}
		if (strncmp(w, "--", 2) == 0)
			name = w + 2;
		else if ((w[0] == '-' || w[0] == '+') && w[1] != '\0')
			name = w + 1;
		else if (strcmp(w, "+") == 0) {
			err_add(ps->e, "Missing option after +");
			continue;
		} else {
			rest->v[rest->n++] = words[i];
			continue;
		}
		/* "--opt=value": Getopt::Long looks for '=' from the second
		 * character on, so "--=x" is an option named "=x". */
		eq = name[0] != '\0' ? strchr(name + 1, '=') : NULL;
		lc = lower_dup(name, eq != NULL ? (size_t)(eq - name) : strlen(name));
		if (lc == NULL) {
			err_add(ps->e, "out of memory");
			return;
		}
		f = opt_find(ps, lc, canon, sizeof(canon));
		free(lc);
		if (f == NULL)
			continue;
		d = &opts[f->id];
		if (d->type == SY_T_BOOL || d->type == SY_T_NEGBOOL) {
			/* Getopt::Long booleans take no value: "--dry 1" leaves
			 * "1" as an extra argument, "--dry=1" is an error. */
			if (eq != NULL) {
				err_add(ps->e, "Option %s does not take an argument", canon);
				continue;
			}
			value = f->neg ? "0" : "1";
		} else if (eq != NULL) {
			value = eq + 1;
			if (value[0] == '\0') {
				err_add(ps->e, "Option %s requires an argument", canon);
				continue;
			}
		} else if (i + 1 < n) {
			/* A mandatory value takes the next word whatever it
			 * looks like, "--" and "--dry" included. */
			value = words[++i];
		} else {
			err_add(ps->e, "Option %s requires an argument", canon);
			continue;
		}
		if (opt_store(ps->o, d, canon, value, ps->e) == 0)
			mark_given(ps->o, f->id);
	}
}

/* imapsync refuses leftover words, except when the first one is empty
 * (GNU parallel adds "" for {=7=}, imapsync's comment says). */
static void check_rest(struct errs *e, const struct sy_strlist *rest)
{
	size_t i, need = 1, used = 0;
	char *all;

	if (rest->n == 0 || rest->v[0][0] == '\0')
		return;
	for (i = 0; i < rest->n; i++)
		need += strlen(rest->v[i]) + 1;
	all = malloc(need);
	if (all == NULL) {
		err_add(e, "Found %zu extra arguments", rest->n);
		return;
	}
	all[0] = '\0';
	for (i = 0; i < rest->n; i++)
		used += (size_t)snprintf(all + used, need - used, "%s%s", i > 0 ? " " : "",
		                         rest->v[i]);
	err_add(e, "Found %zu extra arguments : [%s]", rest->n, all);
	err_add(e, "It usually means a quoting issue in the command line or some misspelling "
	           "options.");
	free(all);
}

/* ---- options_extra.txt ---- */

/*
 * Splits line into words: blanks separate; '...' keeps everything; "..."
 * and bare words take a backslash as "next character literally". Returns
 * the number of words (words[] owned by the caller), or -1 on an unbalanced
 * quote or no memory.
 */
static int split_words(const char *line, char ***words_r)
{
	size_t len = strlen(line), n = 0, o;
	char **words = calloc(len / 2 + 2, sizeof(*words));
	char *buf = malloc(len + 1);
	const char *p = line;

	if (words == NULL || buf == NULL)
		goto fail;
	for (;;) {
		int started = 0;

		while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n' || *p == '\f' ||
		       *p == '\v')
			p++;
		if (*p == '\0')
			break;
		o = 0;
		while (*p != '\0' && !isspace((unsigned char)*p)) {
			started = 1;
			if (*p == '\\' && p[1] != '\0') {
				buf[o++] = p[1];
				p += 2;
			} else if (*p == '\'') {
				for (p++; *p != '\'' && *p != '\0'; p++)
					buf[o++] = *p;
				if (*p++ == '\0')
					goto fail;
			} else if (*p == '"') {
				for (p++; *p != '"' && *p != '\0'; p++) {
					if (*p == '\\' && p[1] != '\0')
						p++;
					buf[o++] = *p;
				}
				if (*p++ == '\0')
					goto fail;
			} else {
				buf[o++] = *p++;
			}
		}
		if (started) {
			if ((words[n] = strndup(buf, o)) == NULL)
				goto fail;
			n++;
		}
	}
	free(buf);
	*words_r = words;
	return (int)n;
fail:
	if (words != NULL) {
		while (n > 0)
			free(words[--n]);
	}
	free(words);
	free(buf);
	return -1;
}

/* imapsync reads only the first line of the file, and only when it is a
 * readable regular file; anything else is silently no file. */
static char *read_first_line(const char *path)
{
	struct stat st;
	FILE *fp;
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;

	if (stat(path, &st) < 0 || !S_ISREG(st.st_mode))
		return NULL;
	if ((fp = fopen(path, "r")) == NULL)
		return NULL;
	n = getline(&line, &cap, fp);
	fclose(fp);
	if (n < 0) {
		free(line);
		return strdup("");
	}
	while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
		line[--n] = '\0';
	return line;
}

static void parse_extra_file(struct parser *ps, const char *path)
{
	struct sy_options *o = ps->o;
	struct sy_strlist rest = {NULL, 0};
	char **words = NULL, *where;
	int n, i;
	size_t wsize = strlen(path) + 8;

	free(o->extra_line);
	o->extra_line = read_first_line(path);
	if (o->extra_line == NULL)
		return;
	where = malloc(wsize);
	if (where == NULL) {
		err_add(ps->e, "out of memory");
		return;
	}
	snprintf(where, wsize, "%s:1: ", path);
	ps->e->where = where;
	n = split_words(o->extra_line, &words);
	if (n < 0) {
		err_add(ps->e, "unbalanced quote");
	} else {
		rest.v = calloc((size_t)n + 1, sizeof(*rest.v));
		if (rest.v == NULL) {
			err_add(ps->e, "out of memory");
		} else {
			parse_words(ps, words, n, &rest);
			check_rest(ps->e, &rest);
		}
		for (i = 0; i < n; i++)
			free(words[i]);
		free(words);
		free(rest.v);
	}
	ps->e->where = "";
	free(where);
}

/* ---- the public calls ---- */

void sy_options_init(struct sy_options *o)
{
	struct errs e;
	int id;

	memset(o, 0, sizeof(*o));
	errs_init(&e, NULL, 0);
	for (id = 0; id < SY_OPT_COUNT; id++) {
		if (opts[id].def != NULL)
			opt_store(o, &opts[id], opts[id].name, opts[id].def, &e);
	}
}

int sy_options_parse(struct sy_options *o, int argc, char **argv, char *errbuf, size_t errsize)
{
	static char fallback_name[] = "imapsync";
	static char *fallback_argv[] = {fallback_name, NULL};
	struct sy_strlist rest = {NULL, 0};
	struct parser ps;
	struct errs e;
	int i;

	errs_init(&e, errbuf, errsize);
	if (argc < 1 || argv == NULL) {
		argc = 1;
		argv = fallback_argv;
	}
	if (str_set(&o->progname, argv[0] != NULL ? argv[0] : "imapsync") < 0 ||
	    parser_init(&ps, o, &e) < 0) {
		err_add(&e, "out of memory");
		return -1;
	}
	o->nargs = argc - 1;
	/* imapsync's own hint, checked on the raw words as it does. */
	for (i = 1; i + 1 < argc; i++) {
		size_t len = strlen(argv[i]);

		if (len >= 7 && strcmp(argv[i] + len - 7, "-delete") == 0 && argv[i + 1][0] == '2')
			err_add(&e, "May be you mean --delete2 instead of --delete 2");
	}
	rest.v = calloc((size_t)argc, sizeof(*rest.v));
	if (rest.v == NULL) {
		err_add(&e, "out of memory");
	} else {
		parse_words(&ps, argv + 1, argc - 1, &rest);
		check_rest(&e, &rest);
		free(rest.v);
	}
	if (o->extra_file != NULL)
		parse_extra_file(&ps, o->extra_file);
	free(ps.forms);
	return e.count > 0 ? -1 : 0;
}

/* imapsync's remove_edging_blanks(): spaces only, not tabs. */
static void trim_spaces(char *s)
{
	size_t len, start = 0;

	if (s == NULL)
		return;
	len = strlen(s);
	while (start < len && s[start] == ' ')
		start++;
	while (len > start && s[len - 1] == ' ')
		len--;
	memmove(s, s + start, len - start);
	s[len - start] = '\0';
}

/* imapsync's sanitize_host(): spaces and slashes never belong in a host. */
static void strip_host(char *s)
{
	char *w = s;

	if (s == NULL)
		return;
	for (; *s != '\0'; s++) {
		if (*s != ' ' && *s != '/')
			*w++ = *s;
	}
	*w = '\0';
}

static int empty(const char *s)
{
	return s == NULL || s[0] == '\0';
}

static int check_account(struct sy_options *o, int side)
{
	struct sy_account *a = &o->acc[side];
	const char *mech;
	char *p;

	if (o->debugimap)
		a->debugimap = 1;
	if (a->debugimap)
		o->debug = 1;
	if (o->authmd5)
		a->authmd5 = 1;
	if (!sy_options_given(o, side == 0 ? SY_OPT_TIMEOUT1 : SY_OPT_TIMEOUT2))
		a->timeout = o->timeout;
	if (!sy_options_given(o, side == 0 ? SY_OPT_ABLETOSEARCH1 : SY_OPT_ABLETOSEARCH2))
		a->abletosearch = o->abletosearch;
	/* imapsync: "$split1 ||= 100", so 0 means the default too. */
	if (a->split == 0)
		a->split = 100;
	if (empty(a->search) && !empty(o->search) && str_set(&a->search, o->search) < 0)
		return -1;
	if (empty(a->authmech)) {
		mech = a->authmd5 ? "CRAM-MD5" : !empty(a->authuser) ? "PLAIN" : "LOGIN";
		if (str_set(&a->authmech, mech) < 0)
			return -1;
	}
	for (p = a->authmech; *p != '\0'; p++)
		*p = (char)toupper((unsigned char)*p);
	return 0;
}

/* --- provider presets (imapsync's easyany()) --- */

struct pset {
	struct sy_options *o;
	char *buf;
	size_t size, len;
	int nomem;
};

static void pset_note(struct pset *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void pset_note(struct pset *p, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (p->buf == NULL || p->size == 0 || p->len + 1 >= p->size)
		return;
	if (p->len > 0)
		p->buf[p->len++] = '\n';
	va_start(ap, fmt);
	n = vsnprintf(p->buf + p->len, p->size - p->len, fmt, ap);
	va_end(ap);
	if (n > 0)
		p->len += (size_t)n < p->size - p->len ? (size_t)n : p->size - p->len - 1;
}

/* A scalar the user did not give gets the preset's value (and then counts
 * as given, as a Perl "defined" does for the rest of imapsync's start-up). */
static int pset_take(struct pset *p, enum sy_opt id)
{
	if (sy_options_given(p->o, id))
		return 0;
	mark_given(p->o, (int)id);
	return 1;
}

static void pset_int(struct pset *p, enum sy_opt id, int *field, int value)
{
	if (pset_take(p, id))
		*field = value;
}

static void pset_ll(struct pset *p, enum sy_opt id, long long *field, long long value)
{
	if (pset_take(p, id))
		*field = value;
}

static void pset_dbl(struct pset *p, enum sy_opt id, double *field, double value)
{
	if (pset_take(p, id))
		*field = value;
}

static void pset_str(struct pset *p, enum sy_opt id, char **field, const char *value)
{
	if (pset_take(p, id) && str_set(field, value) < 0)
		p->nomem = 1;
}

/* List options: the preset's values go after the user's. */
static void pset_push(struct pset *p, enum sy_opt id, struct sy_strlist *l, const char *value)
{
	(void)id;
	if (list_push(l, value) < 0)
		p->nomem = 1;
}

/* Exchange and Office 365 refuse lines over 10 kB: imapsync's "wrap". */
#define PRESET_WRAP "s,(.{10239}),$1\\r\\n,g"

static void preset_gmail_both(struct pset *p)
{
	struct sy_options *o = p->o;

	pset_str(p, SY_OPT_HOST1, &o->acc[0].host, "imap.gmail.com");
	pset_int(p, SY_OPT_SSL1, &o->acc[0].ssl, 1);
	pset_str(p, SY_OPT_HOST2, &o->acc[1].host, "imap.gmail.com");
	pset_int(p, SY_OPT_SSL2, &o->acc[1].ssl, 1);
	pset_ll(p, SY_OPT_MAXBYTESPERSECOND, &o->maxbytespersecond, 20000);
	pset_ll(p, SY_OPT_MAXBYTESAFTER, &o->maxbytesafter, 1000000000LL);
	pset_int(p, SY_OPT_AUTOMAP, &o->automap, 1);
	pset_dbl(p, SY_OPT_MAXSLEEP, &o->maxsleep, 2);
	pset_int(p, SY_OPT_SKIPCROSSDUPLICATES, &o->skipcrossduplicates, 0);
	pset_int(p, SY_OPT_SYNCLABELS, &o->synclabels, 1);
	pset_int(p, SY_OPT_RESYNCLABELS, &o->resynclabels, 1);
	pset_push(p, SY_OPT_USEHEADER, &o->useheader, "X-Gmail-Received");
	pset_push(p, SY_OPT_USEHEADER, &o->useheader, "Message-Id");
	if (!o->noexclude)
		pset_push(p, SY_OPT_EXCLUDE, &o->exclude, "\\[Gmail\\]$");
	pset_push(p, SY_OPT_FOLDERLAST, &o->folderlast, "[Gmail]/All Mail");
	pset_note(p,
	          "Preset --gmail1 --gmail2: host1 and host2 imap.gmail.com with SSL, "
	          "--maxbytespersecond %lld after --maxbytesafter %lld, --automap, "
	          "--synclabels %d --resynclabels %d, --skipcrossduplicates %d",
	          o->maxbytespersecond, o->maxbytesafter, o->synclabels, o->resynclabels,
	          o->skipcrossduplicates);
}

static void preset_gmail1(struct pset *p)
{
	struct sy_options *o = p->o;

	pset_str(p, SY_OPT_HOST1, &o->acc[0].host, "imap.gmail.com");
	pset_int(p, SY_OPT_SSL1, &o->acc[0].ssl, 1);
	pset_ll(p, SY_OPT_MAXBYTESPERSECOND, &o->maxbytespersecond, 40000);
	pset_ll(p, SY_OPT_MAXBYTESAFTER, &o->maxbytesafter, 3000000000LL);
	pset_int(p, SY_OPT_AUTOMAP, &o->automap, 1);
	pset_dbl(p, SY_OPT_MAXSLEEP, &o->maxsleep, 2);
	pset_int(p, SY_OPT_SKIPCROSSDUPLICATES, &o->skipcrossduplicates, 1);
	pset_push(p, SY_OPT_USEHEADER, &o->useheader, "X-Gmail-Received");
	pset_push(p, SY_OPT_USEHEADER, &o->useheader, "Message-Id");
	pset_push(p, SY_OPT_REGEXTRANS2, &o->regextrans2, "s,\\[Gmail\\].,,");
	pset_push(p, SY_OPT_FOLDERLAST, &o->folderlast, "[Gmail]/All Mail");
	pset_note(p,
	          "Preset --gmail1: host1 imap.gmail.com with SSL, --maxbytespersecond %lld "
	          "after --maxbytesafter %lld, --automap, --skipcrossduplicates %d, "
	          "--folderlast \"[Gmail]/All Mail\"",
	          o->maxbytespersecond, o->maxbytesafter, o->skipcrossduplicates);
}

static void preset_gmail2(struct pset *p)
{
	struct sy_options *o = p->o;

	pset_str(p, SY_OPT_HOST2, &o->acc[1].host, "imap.gmail.com");
	pset_int(p, SY_OPT_SSL2, &o->acc[1].ssl, 1);
	pset_ll(p, SY_OPT_MAXBYTESPERSECOND, &o->maxbytespersecond, 20000);
	pset_ll(p, SY_OPT_MAXBYTESAFTER, &o->maxbytesafter, 1000000000LL);
	pset_int(p, SY_OPT_AUTOMAP, &o->automap, 1);
	pset_int(p, SY_OPT_EXPUNGE1, &o->expunge1, 1);
	pset_int(p, SY_OPT_ADDHEADER, &o->addheader, 1);
	pset_dbl(p, SY_OPT_MAXSLEEP, &o->maxsleep, 2);
	if (!o->noexclude)
		pset_push(p, SY_OPT_EXCLUDE, &o->exclude, "\\[Gmail\\]$");
	pset_push(p, SY_OPT_USEHEADER, &o->useheader, "Message-Id");
	pset_push(p, SY_OPT_REGEXTRANS2, &o->regextrans2, "s,\\[Gmail\\].,,");
	/* blanks around each level of a name, and ' \ ^ ", which Gmail refuses */
	pset_push(p, SY_OPT_REGEXTRANS2, &o->regextrans2, "s,^ +| +$,,g");
	pset_push(p, SY_OPT_REGEXTRANS2, &o->regextrans2, "s,/ +| +/,/,g");
	pset_push(p, SY_OPT_REGEXTRANS2, &o->regextrans2, "s/['\\\\^\"]/_/g");
	pset_push(p, SY_OPT_FOLDERLAST, &o->folderlast, "[Gmail]/All Mail");
	pset_note(p,
	          "Preset --gmail2: host2 imap.gmail.com with SSL, --maxbytespersecond %lld "
	          "after --maxbytesafter %lld, --automap, --expunge1 %d, --addheader %d, "
	          "Gmail's folder name rules (--regextrans2)",
	          o->maxbytespersecond, o->maxbytesafter, o->expunge1, o->addheader);
}

static void preset_office1(struct pset *p)
{
	struct sy_options *o = p->o;

	pset_str(p, SY_OPT_HOST1, &o->acc[0].host, "outlook.office365.com");
	pset_int(p, SY_OPT_SSL1, &o->acc[0].ssl, 1);
	if (!o->noexclude)
		pset_push(p, SY_OPT_EXCLUDE, &o->exclude, "^Files$");
	pset_note(p, "Preset --office1: host1 outlook.office365.com with SSL, folder Files "
	             "excluded");
}

static void preset_office2(struct pset *p)
{
	struct sy_options *o = p->o;

	pset_str(p, SY_OPT_HOST2, &o->acc[1].host, "outlook.office365.com");
	pset_int(p, SY_OPT_SSL2, &o->acc[1].ssl, 1);
	pset_ll(p, SY_OPT_MAXSIZE, &o->maxsize, 45000000);
	pset_dbl(p, SY_OPT_MAXMESSAGESPERSECOND, &o->maxmessagespersecond, 4);
	pset_int(p, SY_OPT_DISARMREADRECEIPTS, &o->disarmreadreceipts, 1);
	if (!o->noregexmess)
		pset_push(p, SY_OPT_REGEXMESS, &o->regexmess, PRESET_WRAP);
	if (!o->nof1f2 && hash_set(&o->f1f2, "Files", 5, "Files_renamed_by_imapsync") < 0)
		p->nomem = 1;
	pset_note(p,
	          "Preset --office2: host2 outlook.office365.com with SSL, --maxsize %lld, "
	          "--maxmessagespersecond %g, --disarmreadreceipts %d, lines wrapped at "
	          "10239 bytes%s",
	          o->maxsize, o->maxmessagespersecond, o->disarmreadreceipts,
	          o->noregexmess ? " (not: --noregexmess)" : "");
}

static void preset_exchange2(struct pset *p)
{
	struct sy_options *o = p->o;

	pset_ll(p, SY_OPT_MAXSIZE, &o->maxsize, 10000000);
	pset_dbl(p, SY_OPT_MAXMESSAGESPERSECOND, &o->maxmessagespersecond, 4);
	pset_int(p, SY_OPT_DISARMREADRECEIPTS, &o->disarmreadreceipts, 1);
	pset_push(p, SY_OPT_REGEXFLAG, &o->regexflag, "s/\\\\Flagged//g");
	if (!o->noregexmess)
		pset_push(p, SY_OPT_REGEXMESS, &o->regexmess, PRESET_WRAP);
	pset_note(p,
	          "Preset --exchange2: --maxsize %lld, --maxmessagespersecond %g, "
	          "--disarmreadreceipts %d, \\Flagged not copied, lines wrapped at 10239 "
	          "bytes%s",
	          o->maxsize, o->maxmessagespersecond, o->disarmreadreceipts,
	          o->noregexmess ? " (not: --noregexmess)" : "");
}

static void preset_domino(struct pset *p, int side)
{
	struct sy_options *o = p->o;
	struct sy_account *a = &o->acc[side];

	pset_str(p, side == 0 ? SY_OPT_SEP1 : SY_OPT_SEP2, &a->sep, "\\");
	pset_str(p, side == 0 ? SY_OPT_PREFIX1 : SY_OPT_PREFIX2, &a->prefix, "");
	pset_int(p, SY_OPT_MESSAGEIDNODOMAIN, &o->messageidnodomain, 1);
	if (side == 1)
		pset_push(p, SY_OPT_REGEXTRANS2, &o->regextrans2, "s,^Inbox\\\\(.*),$1,i");
	pset_note(p,
	          "Preset --domino%d: --sep%d \"%s\", --prefix%d \"%s\", "
	          "--messageidnodomain %d",
	          side + 1, side + 1, a->sep != NULL ? a->sep : "", side + 1,
	          a->prefix != NULL ? a->prefix : "", o->messageidnodomain);
}

int sy_options_presets(struct sy_options *o, char *notes, size_t notes_size)
{
	struct pset p = {o, notes, notes_size, 0, 0};

	if (notes != NULL && notes_size > 0)
		notes[0] = '\0';
	/* imapsync's order: Gmail (both, else one side), Office 365, Exchange,
	 * Domino; the Gmail pair returns early */
	if (o->gmail1 && o->gmail2) {
		preset_gmail_both(&p);
		return p.nomem ? -1 : 0;
	}
	if (o->gmail1)
		preset_gmail1(&p);
	if (o->gmail2)
		preset_gmail2(&p);
	if (o->office1)
		preset_office1(&p);
	if (o->office2)
		preset_office2(&p);
	if (o->exchange1)
		pset_note(&p, "Preset --exchange1: nothing to set for an Exchange host1 (see "
		              "--exchange2 for an Exchange host2)");
	if (o->exchange2)
		preset_exchange2(&p);
	if (o->domino1)
		preset_domino(&p, 0);
	if (o->domino2)
		preset_domino(&p, 1);
	return p.nomem ? -1 : 0;
}

int sy_ssl_version_parse(const char *spec, int *min_r, int *max_r)
{
	static const struct {
		const char *name;
		unsigned bits; /* 1 SSLv3, 2 TLSv1, 4 TLSv1_1, 8 TLSv1_2, 16 TLSv1_3 */
	} names[] = {{"SSLv2", 0},   {"SSLv3", 1},   {"TLSv1", 2},  {"TLSv1_1", 4},
	             {"TLSv11", 4},  {"TLSv1_2", 8}, {"TLSv12", 8}, {"TLSv1_3", 16},
	             {"TLSv13", 16}, {"SSLv23", 31}, {"ALL", 31}};
	/* OpenSSL's SSL3_VERSION .. TLS1_3_VERSION */
	static const int versions[] = {0x300, 0x301, 0x302, 0x303, 0x304};
	unsigned allowed = 31, named = 0;
	int first = 1, lo = -1, hi = -1;
	const char *p = spec;

	*min_r = *max_r = 0;
	while (p != NULL && *p != '\0') {
		size_t len = strcspn(p, ":"), nlen;
		int neg = p[0] == '!', found = -1;

		nlen = len - (size_t)neg;
		for (size_t k = 0; k < sizeof(names) / sizeof(names[0]); k++) {
			if (nlen == strlen(names[k].name) &&
			    strncasecmp(p + neg, names[k].name, nlen) == 0)
				found = (int)k;
		}
		if (found < 0)
			return -1;
		if (first && !neg)
			allowed = 0; /* "TLSv1_2" alone: that version only */
		first = 0;
		if (neg) {
			allowed &= ~names[found].bits;
		} else {
			allowed |= names[found].bits;
			if (names[found].bits != 31)
				named |= names[found].bits;
		}
		p += len;
		if (*p == ':')
			p++;
	}
	if (allowed == 0)
		return -1;
	for (int k = 0; k < 5; k++) {
		if ((allowed & (1u << k)) && lo < 0)
			lo = k;
		if (allowed & (1u << k))
			hi = k;
	}
	/* below our TLS 1.2 default only when named, or when nothing newer is left */
	if ((named & (1u << lo)) || hi < 3)
		*min_r = versions[lo];
	else if (!(allowed & 8u)) /* TLS 1.2 excluded: the next newer one allowed */
		*min_r = versions[4];
	*max_r = hi < 4 ? versions[hi] : 0;
	return 0;
}

int sy_options_check(struct sy_options *o, char *errbuf, size_t errsize)
{
	struct errs e;
	int side;

	errs_init(&e, errbuf, errsize);
	/* The order is imapsync's: sanitizing, then the usecache check, which
	 * runs before --useuid turns --usecache on (so --useuid with
	 * --skipcrossduplicates, e.g. under --gmail1, is accepted). */
	for (side = 0; side < 2; side++) {
		struct sy_account *a = &o->acc[side];

		if (o->sanitize) {
			trim_spaces(a->host);
			trim_spaces(a->user);
			trim_spaces(a->password);
		}
		strip_host(a->host);
	}
	if (empty(o->tmpdir) && str_set(&o->tmpdir, "/tmp") < 0)
		goto nomem;
	if (!sy_options_given(o, SY_OPT_PIDFILE)) {
		size_t size = strlen(o->tmpdir) + sizeof("/imapsync.pid");
		char *pid = malloc(size);

		if (pid == NULL)
			goto nomem;
		snprintf(pid, size, "%s/imapsync.pid", o->tmpdir);
		free(o->pidfile);
		o->pidfile = pid;
	}
	if (o->usecache && o->skipcrossduplicates)
		err_add(&e, "Error: can not have both --usecache and --skipcrossduplicates");
	for (side = 0; side < 2; side++) {
		int vmin, vmax;

		if (o->acc[side].ssl_version != NULL && o->acc[side].ssl_version[0] != '\0' &&
		    sy_ssl_version_parse(o->acc[side].ssl_version, &vmin, &vmax) < 0)
			err_add(&e,
			        "Error: --ssl%d_ssl_version %s: not an SSL_version of "
			        "IO::Socket::SSL "
			        "(TLSv1_2, TLSv1_3, SSLv23:!TLSv1_1, ...) or no version left",
			        side + 1, o->acc[side].ssl_version);
		if (o->acc[side].split < 0)
			err_add(&e,
			        "Error: --split%d must be a positive number of messages, not %lld",
			        side + 1, o->acc[side].split);
	}

	if (o->checkpoint < 0)
		err_add(&e, "Error: --checkpoint must be 0 or a number of seconds, not %lld",
		        o->checkpoint);

	if (o->useuid && !sy_options_given(o, SY_OPT_USECACHE))
		o->usecache = 1;
	if (o->usecache && !sy_options_given(o, SY_OPT_CACHEAFTERCOPY))
		o->cacheaftercopy = 1;
	if (!sy_options_given(o, SY_OPT_DELETE2DUPLICATES))
		o->delete2duplicates = !o->syncduplicates && o->delete2;
	if (o->delete2foldersonly != NULL || o->delete2foldersbutnot != NULL)
		o->delete2folders = 1;
	/* --idatefromheader wins even over an explicit --syncinternaldates. */
	if (o->idatefromheader)
		o->syncinternaldates = 0;
	for (side = 0; side < 2; side++) {
		if (check_account(o, side) < 0)
			goto nomem;
	}
	/* --justfolders skips the first folder sizes unless asked for. imapsync
	 * then forces foldersizesatend on even over --nofoldersizesatend; we keep
	 * the explicit choice. */
	if (o->justfolders && !sy_options_given(o, SY_OPT_FOLDERSIZES) && !o->justfoldersizes) {
		o->foldersizes = 0;
		if (!sy_options_given(o, SY_OPT_FOLDERSIZESATEND))
			o->foldersizesatend = 1;
	} else if (!sy_options_given(o, SY_OPT_FOLDERSIZESATEND)) {
		o->foldersizesatend = o->foldersizes;
	}
	if (!sy_options_given(o, SY_OPT_CHECKNOABLETOSEARCH))
		o->checknoabletosearch = !o->justfolders;

	/* "imapsync --host1 h" alone means --justconnect; imapsync then exits
	 * before its other checks. */
	if (empty(o->acc[0].host) || empty(o->acc[1].host) || empty(o->acc[0].user) ||
	    empty(o->acc[1].user))
		o->justconnect = 1;
	if (o->justconnect)
		return e.count > 0 ? -1 : 0;

	/* --delete1 --noexpunge1 would copy \Deleted onto everything next run. */
	if (o->delete1 && !sy_options_given(o, SY_OPT_EXPUNGE1))
		o->expunge1 = 1;
	if ((o->delete2 || o->delete2duplicates) && !sy_options_given(o, SY_OPT_UIDEXPUNGE2))
		o->uidexpunge2 = 1;
	if (o->delete1 && o->delete2)
		err_add(&e, "Warning: using --delete1 and --delete2 together is almost always a "
		            "bad idea. You should probably launch two runs, the first with "
		            "--delete2 for a strict sync, then the second with --delete1 to "
		            "remove messages from the source account. Exiting imapsync.");
	if (o->maxdelete2 < 0 || o->maxdelete2 > 100)
		err_add(&e, "Error: --maxdelete2 %g: give a percentage from 0 to 100",
		        o->maxdelete2);
	if (o->fetch_hash_set != NULL &&
	    (o->fetch_hash_set[0] == '\0' || strlen(o->fetch_hash_set) > 200 ||
	     strspn(o->fetch_hash_set, "0123456789:,*") != strlen(o->fetch_hash_set)))
		err_add(&e,
		        "Error: --fetch_hash_set %.200s: give an IMAP UID set such as 1:* or "
		        "1:500,900:*",
		        o->fetch_hash_set);
	if (o->inet4 && o->inet6)
		err_add(&e, "Error: --inet4 and --inet6 together: give one (or neither: both "
		            "families)");
	if (o->fetch_hash_set != NULL && strcmp(o->fetch_hash_set, "1:*") != 0 && o->delete2)
		err_add(&e,
		        "Error: --fetch_hash_set %.200s with --delete2: host2's copies of host1's "
		        "messages outside the window would be deleted; sync the window without "
		        "--delete2",
		        o->fetch_hash_set);
	for (side = 0; side < 2; side++) {
		if (o->acc[side].proxyauth && empty(o->acc[side].authuser))
			err_add(&e,
			        "With --proxyauth%d, --authuser%d option is mandatory, for help "
			        "run %s --help",
			        side + 1, side + 1, o->progname != NULL ? o->progname : "imapsync");
	}
	return e.count > 0 ? -1 : 0;
nomem:
	err_add(&e, "out of memory");
	return -1;
}

/* The first line of path without its line end, or NULL with errno set. */
static char *passfile_line(const char *path)
{
	FILE *fp = fopen(path, "r");
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	int err;

	if (fp == NULL)
		return NULL;
	errno = 0;
	n = getline(&line, &cap, fp);
	err = errno;
	fclose(fp);
	if (n < 0) {
		if (err != 0) { /* e.g. EISDIR */
			free(line);
			errno = err;
			return NULL;
		}
		free(line);
		return strdup(""); /* empty file: an empty password, as imapsync */
	}
	/* imapsync chomps "\n" only; a CR left by a Windows editor can only be
	 * a mistake, so it goes too (a deliberate departure). */
	if (n > 0 && line[n - 1] == '\n')
		line[--n] = '\0';
	if (n > 0 && line[n - 1] == '\r')
		line[--n] = '\0';
	return line;
}

int sy_options_resolve_passwords(struct sy_options *o, char *errbuf, size_t errsize)
{
	static const char *const env_names[2] = {"IMAPSYNC_PASSWORD1", "IMAPSYNC_PASSWORD2"};
	struct errs e;
	int side;

	errs_init(&e, errbuf, errsize);
	for (side = 0; side < 2; side++) {
		struct sy_account *a = &o->acc[side];
		const char *env = getenv(env_names[side]);

		if (a->passfile != NULL) {
			char *pw = passfile_line(a->passfile);

			if (pw == NULL) {
				err_add(&e,
				        "Failure: file from parameter --passfile%d %s does not "
				        "exist or is not readable",
				        side + 1, a->passfile);
				continue;
			}
			free(a->password);
			a->password = pw;
		} else if (env != NULL && env[0] != '\0') {
			/* imapsync's order: the environment beats --passwordN. */
			if (str_set(&a->password, env) < 0)
				err_add(&e, "out of memory");
		}
	}
	return e.count > 0 ? -1 : 0;
}

int sy_options_need_password(const struct sy_options *o, int side)
{
	const struct sy_account *a;

	if (side < 0 || side > 1)
		return 0;
	a = &o->acc[side];
	if (!empty(a->password) || a->passfile != NULL)
		return 0;
	if (a->authmech != NULL &&
	    (strcasecmp(a->authmech, "PREAUTH") == 0 || strcasecmp(a->authmech, "EXTERNAL") == 0))
		return 0;
	/* imapsync asks for a useless password with an OAuth token (a known
	 * bug); we do not. */
	if (!empty(a->oauthaccesstoken) || !empty(a->oauthdirect))
		return 0;
	return 1;
}

const char *sy_options_masked(const struct sy_options *o, const char *pw)
{
	if (o->showpasswords)
		return pw != NULL ? pw : "";
	return "MASKED";
}

/* snprintf() that appends at *used and counts what it would need. */
static void append(char *buf, size_t size, size_t *used, const char *fmt, ...) LOG_PRINTF(4, 5);

static void append(char *buf, size_t size, size_t *used, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	if (*used < size)
		n = vsnprintf(buf + *used, size - *used, fmt, ap);
	else
		n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n > 0)
		*used += (size_t)n;
}

int sy_options_format(const struct sy_options *o, enum sy_opt id, char *buf, size_t size)
{
	const struct sy_optdesc *d;
	const void *p;
	size_t used = 0, i;

	if ((int)id < 0 || id >= SY_OPT_COUNT || buf == NULL || size == 0)
		return -1;
	d = &opts[id];
	p = cfield(o, d);
	buf[0] = '\0';
	switch (d->type) {
	case SY_T_BOOL:
	case SY_T_NEGBOOL:
		append(buf, size, &used, "%d", *(const int *)p);
		break;
	case SY_T_INT:
		append(buf, size, &used, "%lld", *(const long long *)p);
		break;
	case SY_T_FLOAT:
		append(buf, size, &used, "%g", *(const double *)p);
		break;
	case SY_T_STR:
		append(buf, size, &used, "%s",
		       *(char *const *)p != NULL ? *(char *const *)p : "(undef)");
		break;
	case SY_T_LIST: {
		const struct sy_strlist *l = p;

		append(buf, size, &used, "[");
		for (i = 0; i < l->n; i++)
			append(buf, size, &used, "%s%s", i > 0 ? "," : "", l->v[i]);
		append(buf, size, &used, "]");
		break;
	}
	case SY_T_HASH: {
		const struct sy_kvlist *h = p;

		append(buf, size, &used, "{");
		for (i = 0; i < h->n; i++)
			append(buf, size, &used, "%s%s=%s", i > 0 ? "," : "", h->v[i].key,
			       h->v[i].value);
		append(buf, size, &used, "}");
		break;
	}
	case SY_T_COUNT:
		return -1;
	}
	return (int)used;
}

/* "--name" or "--[no]name", then ", --alias" (table) and " arg" (help). */
static void opt_label(const struct sy_optdesc *d, char *buf, size_t size, int for_help)
{
	static const char *const args[] = {"", "", "str", "int", "flo", "str", "k=v"};
	const char *neg = d->type == SY_T_NEGBOOL ? "[no]" : "";
	const char *arg = d->arg != NULL ? d->arg : args[d->type];
	size_t used = 0;

	append(buf, size, &used, "--%s%s", neg, d->name);
	if (!for_help && d->alias != NULL)
		append(buf, size, &used, ", --%s%s", neg, d->alias);
	if (for_help && arg[0] != '\0')
		append(buf, size, &used, " %s", arg);
}

static const char *default_text(const struct sy_optdesc *d)
{
	if (d->defdoc != NULL)
		return d->defdoc;
	if (d->type == SY_T_BOOL || d->type == SY_T_NEGBOOL)
		return d->def != NULL && strcmp(d->def, "1") == 0 ? "on" : "off";
	return d->def != NULL ? d->def : "-";
}

void sy_options_usage(FILE *fp)
{
	char label[96];
	int g, id;

	fputs("usage: imapferry-sync [options]\n"
	      "\n"
	      "Copies the folders and messages of one IMAP account (host1) to another\n"
	      "(host2), skipping what is already there, as imapsync does, with its options:\n"
	      "  imapferry-sync --host1 a.example --user1 u1 --password1 p1 \\\n"
	      "                 --host2 b.example --user2 u2 --password2 p2\n"
	      "\n"
	      "Option names ignore case and may be shortened while unique; --x v and\n"
	      "--x=v are the same; lists (+) add up; [no] switches take --noX or --no-X.\n"
	      "str: text, int: integer, flo: decimal, reg: Perl regex, cmd: shell command.\n"
	      "Exit status 0 when all went well, 64 on a usage error, else imapsync's.\n",
	      fp);
	for (g = 0; g < SY_G_COUNT; g++) {
		fprintf(fp, "\n%s:\n", group_names[g]);
		for (id = 0; id < SY_OPT_COUNT; id++) {
			const struct sy_optdesc *d = &opts[id];
			int is_bool = d->type == SY_T_BOOL || d->type == SY_T_NEGBOOL;

			if (d->group != (enum sy_opt_group)g)
				continue;
			opt_label(d, label, sizeof(label), 1);
			fprintf(fp, "  %-29s %s%s", label,
			        d->type == SY_T_LIST || d->type == SY_T_HASH ? "+ " : "", d->help);
			if (d->defdoc != NULL)
				fprintf(fp, " (default: %s)", d->defdoc);
			else if (is_bool && d->def != NULL && strcmp(d->def, "1") == 0)
				fputs(" (on)", fp);
			else if (!is_bool && d->def != NULL)
				fprintf(fp, " (default: %s)", d->def);
			fputc('\n', fp);
			if (d->alias != NULL)
				fprintf(fp, "  --%s%-*s same as --%s\n",
				        d->type == SY_T_NEGBOOL ? "[no]" : "",
				        d->type == SY_T_NEGBOOL ? 23 : 27, d->alias, d->name);
		}
	}
}

void sy_options_print_table(FILE *fp)
{
	char label[96];
	int id;

	fputs("| option | type | default | status | description |\n"
	      "|---|---|---|---|---|\n",
	      fp);
	for (id = 0; id < SY_OPT_COUNT; id++) {
		const struct sy_optdesc *d = &opts[id];

		opt_label(d, label, sizeof(label), 0);
		fprintf(fp, "| `%s` | %s | %s | %s | %s |\n", label, type_names[d->type],
		        default_text(d), status_names[d->status], d->help);
	}
}

void sy_options_free(struct sy_options *o)
{
	int id, j;

	if (o == NULL)
		return;
	for (id = 0; id < SY_OPT_COUNT; id++) {
		const struct sy_optdesc *d = &opts[id];
		void *p = field(o, d);

		/* --f1f2 and --f1f2h share one field: free it once. */
		for (j = 0; j < id && opts[j].off != d->off; j++)
			;
		if (j < id)
			continue;
		if (d->type == SY_T_STR)
			free(*(char **)p);
		else if (d->type == SY_T_LIST)
			list_free(p);
		else if (d->type == SY_T_HASH)
			hash_free(p);
	}
	free(o->progname);
	free(o->extra_line);
	memset(o, 0, sizeof(*o));
}
