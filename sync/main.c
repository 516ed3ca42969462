/*
 * main.c - imapferry-sync's one-shot CLI, an imapsync drop-in: options,
 * log file and pidfile, both logins, the folder plan, the message pass,
 * statistics, and imapsync's exit codes.
 */
#include <errno.h>
#include <ini.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>

#include "flags.h"
#include "hdrkey.h"
#include "msgsel.h"
#include "regex.h"
#include "acl.h"
#include "delete.h"
#include "xdup.h"
#include "runctl.h"
#include "debugcat.h"
#include "imapferry/log.h"
#include "imapferry/rkeys.h"
#include "imapferry/rqueue.h"
#include "sync.h"
#include "worker.h"

#define EXIT_BY_SIGNAL 6

/* what the provider presets set (--gmail1 ...), said after the banner */
static char preset_notes[2048];

static volatile sig_atomic_t got_signal;
static struct sy_run *signal_run;

int sy_main_signalled(void)
{
	return got_signal != 0;
}

/* --- signals, as imapsync: --sigexit (default QUIT TERM) ends the run
 * after the messages in flight, with the statistics (exit 6);
 * --sigreconnect (default INT) reconnects both hosts and goes on (the
 * folder being synced is redone: identification finds what was copied),
 * and a second one within 2 seconds acts as --sigexit; --sigignore
 * ignores. Later lists win for a signal given in several. --- */

#define SIG_TWICE_NS   2000000000LL /* two reconnect signals this close: exit */
#define STOP_RECONNECT 2            /* r->stop: the folder stops for a reconnect */

enum sig_action { SIGA_NONE, SIGA_EXIT, SIGA_RECONNECT, SIGA_IGNORE };

static volatile sig_atomic_t reconnect_sig; /* a reconnect was asked for */
static volatile sig_atomic_t in_folder;     /* a folder pass may stop for it */
static long long last_reconnect_ns;         /* written by the handler only */

static const struct {
	const char *name;
	int sig;
} sig_names[] = {
        {"HUP", SIGHUP},   {"INT", SIGINT},     {"QUIT", SIGQUIT}, {"USR1", SIGUSR1},
        {"USR2", SIGUSR2}, {"PIPE", SIGPIPE},   {"ALRM", SIGALRM}, {"TERM", SIGTERM},
        {"CHLD", SIGCHLD}, {"CONT", SIGCONT},   {"TSTP", SIGTSTP}, {"TTIN", SIGTTIN},
        {"TTOU", SIGTTOU}, {"XCPU", SIGXCPU},   {"XFSZ", SIGXFSZ}, {"VTALRM", SIGVTALRM},
        {"PROF", SIGPROF}, {"WINCH", SIGWINCH}, {"KILL", SIGKILL}, {"STOP", SIGSTOP},
};

static enum sig_action sig_actions[NSIG];

static const char *sig_name(int sig)
{
	for (size_t i = 0; i < sizeof(sig_names) / sizeof(sig_names[0]); i++) {
		if (sig_names[i].sig == sig)
			return sig_names[i].name;
	}
	return "?";
}

/* "INT", "SIGINT", "int" or "2"; -1 when unknown. */
static int sig_lookup(const char *w, size_t len)
{
	char num[16];

	if (len > 3 && strncasecmp(w, "SIG", 3) == 0) {
		w += 3;
		len -= 3;
	}
	if (len > 0 && len < sizeof(num) && strspn(w, "0123456789") >= len) {
		long n;

		memcpy(num, w, len);
		num[len] = '\0';
		n = strtol(num, NULL, 10);
		return n > 0 && n < NSIG ? (int)n : -1;
	}
	for (size_t i = 0; i < sizeof(sig_names) / sizeof(sig_names[0]); i++) {
		if (strlen(sig_names[i].name) == len && strncasecmp(sig_names[i].name, w, len) == 0)
			return sig_names[i].sig;
	}
	return -1;
}

/* One option's values (each may hold several names, blank- or
 * comma-separated) into sig_actions. 0, or -1 with the message in err. */
static int sig_list(const struct sy_strlist *l, const char *opt, enum sig_action a, char *err,
                    size_t size)
{
	for (size_t i = 0; i < l->n; i++) {
		const char *p = l->v[i];

		while (*p != '\0') {
			size_t len;
			int sig;

			p += strspn(p, " \t,");
			len = strcspn(p, " \t,");
			if (len == 0)
				break;
			sig = sig_lookup(p, len);
			if (sig < 0 || sig == SIGKILL || sig == SIGSTOP) {
				snprintf(err, size,
				         "--%s %.*s: %s (give a name like INT, TERM, QUIT, HUP, "
				         "USR1 or a number)",
				         opt, (int)len, p,
				         sig < 0 ? "unknown signal"
				                 : "this signal cannot be caught");
				return -1;
			}
			sig_actions[sig] = a;
			p += len;
		}
	}
	return 0;
}

/* The signal table from the options (imapsync's defaults when a list is
 * not given). 0, or -1 with the message in err (exit 64). */
static int sig_setup(const struct sy_options *o, char *err, size_t size)
{
	static char d_exit1[] = "QUIT", d_exit2[] = "TERM", d_int[] = "INT";
	static char *dexit[] = {d_exit1, d_exit2}, *dreco[] = {d_int};
	const struct sy_strlist def_exit = {dexit, 2}, def_reconnect = {dreco, 1};

	memset(sig_actions, 0, sizeof(sig_actions));
	if (sig_list(sy_options_given(o, SY_OPT_SIGEXIT) ? &o->sigexit : &def_exit, "sigexit",
	             SIGA_EXIT, err, size) < 0 ||
	    sig_list(sy_options_given(o, SY_OPT_SIGRECONNECT) ? &o->sigreconnect : &def_reconnect,
	             "sigreconnect", SIGA_RECONNECT, err, size) < 0 ||
	    sig_list(&o->sigignore, "sigignore", SIGA_IGNORE, err, size) < 0)
		return -1;
	return 0;
}

static void on_signal(int sig)
{
	int saved = errno;

	if (sig > 0 && sig < NSIG && sig_actions[sig] == SIGA_RECONNECT) {
		struct timespec ts;
		long long now;

		clock_gettime(CLOCK_MONOTONIC, &ts);
		now = (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
		if (last_reconnect_ns == 0 || now - last_reconnect_ns >= SIG_TWICE_NS) {
			last_reconnect_ns = now;
			reconnect_sig = sig;
			if (in_folder && signal_run != NULL && signal_run->stop == 0)
				signal_run->stop = STOP_RECONNECT;
			errno = saved;
			return;
		}
		/* twice within 2 seconds: the exit below */
	}
	got_signal = sig;
	if (signal_run != NULL)
		signal_run->stop = 1;
	errno = saved;
}

static void sig_install(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sigemptyset(&sa.sa_mask);
	for (int sig = 1; sig < NSIG; sig++) {
		if (sig_actions[sig] == SIGA_NONE)
			continue;
		sa.sa_handler = sig_actions[sig] == SIGA_IGNORE ? SIG_IGN : on_signal;
		sigaction(sig, &sa, NULL);
	}
}

/* --debugsig: what each handled signal does. */
static void debug_signals(struct sy_run *r)
{
	static const char *const what[] = {"default", "exit after the messages in flight",
	                                   "reconnect (twice in 2 s: exit)", "ignored"};

	if (!r->o->debugsig)
		return;
	for (int sig = 1; sig < NSIG; sig++) {
		if (sig_actions[sig] != SIGA_NONE)
			sy_out(r, "debugsig: %s (%d): %s", sig_name(sig), sig,
			       what[sig_actions[sig]]);
	}
	sy_out(r, "debugsig: PID %d; --abort sends QUIT, --abortbyfile makes %s%s%d", (int)getpid(),
	       r->o->pidfile != NULL ? r->o->pidfile : "", "abort", (int)getpid());
}

/* A --sigreconnect signal came: both hosts are reconnected (counted in
 * "Reconnections to host1/2"). 0, or -1 when one cannot be (r->stop set). */
static int reconnect_asked(struct sy_run *r)
{
	int sig = reconnect_sig;

	reconnect_sig = 0;
	if (r->stop == STOP_RECONNECT)
		r->stop = 0;
	sy_out(r,
	       "Got a signal %s (%d): reconnecting to host1 and host2 (the same signal twice "
	       "within 2 seconds ends the sync)",
	       sig_name(sig), sig);
	for (int i = 0; i < 2; i++) {
		r->reconnects[i]++;
		if (sy_side_reopen(r, i) != 0) {
			r->stop = 1;
			return -1;
		}
	}
	return 0;
}

static char *prompt_password(int side, const char *user)
{
	struct termios old, quiet;
	char buf[1024];
	int tty = isatty(STDIN_FILENO);

	if (!tty)
		return NULL;
	fprintf(stderr, "What's the password for %s (host%d)? ", user != NULL ? user : "", side);
	fflush(stderr);
	tcgetattr(STDIN_FILENO, &old);
	quiet = old;
	quiet.c_lflag &= ~(tcflag_t)ECHO;
	tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
	if (fgets(buf, sizeof(buf), stdin) == NULL)
		buf[0] = '\0';
	tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
	fputc('\n', stderr);
	buf[strcspn(buf, "\r\n")] = '\0';
	return strdup(buf);
}

/* LOG_imapsync/YYYY_MM_DD_HH_MM_SS_mmm_<user1>_<user2>.txt, as imapsync. */
static char *log_path(const struct sy_options *o)
{
	char name[512], *path;
	struct timespec ts;
	struct tm tm;
	const char *dir = o->logdir != NULL ? o->logdir : "";
	size_t n;

	if (o->logfile != NULL && o->logfile[0] != '\0') {
		snprintf(name, sizeof(name), "%s", o->logfile);
	} else {
		clock_gettime(CLOCK_REALTIME, &ts);
		localtime_r(&ts.tv_sec, &tm);
		n = strftime(name, sizeof(name), "%Y_%m_%d_%H_%M_%S", &tm);
		snprintf(name + n, sizeof(name) - n, "_%03ld_%s_%s.txt", ts.tv_nsec / 1000000,
		         o->acc[0].user != NULL ? o->acc[0].user : "",
		         o->acc[1].user != NULL ? o->acc[1].user : "");
		for (char *p = name; *p != '\0'; p++) {
			if (*p == '/' || *p == ' ' || *p == '\\' || *p == ':' || *p == '*' ||
			    *p == '?' || *p == '"' || *p == '<' || *p == '>' || *p == '|' ||
			    *p == '\'')
				*p = '_';
		}
	}
	if (dir[0] == '\0' || name[0] == '/')
		return strdup(name);
	path = malloc(strlen(dir) + strlen(name) + 2);
	if (path != NULL)
		sprintf(path, "%s/%s", dir, name);
	return path;
}

static void mkdirs(const char *path)
{
	char *p = strdup(path), *s;

	if (p == NULL)
		return;
	for (s = strchr(p + 1, '/'); s != NULL; s = strchr(s + 1, '/')) {
		*s = '\0';
		mkdir(p, 0755);
		*s = '/';
	}
	free(p);
}

/* Options whose value is a secret, by any spelling Getopt::Long accepts
 * (--password1, -passw=, --oauthaccesstoken2, --OAuthDirect1, ...). */
static int secret_option(const char *arg)
{
	while (*arg == '-' || *arg == '+')
		arg++;
	return strncasecmp(arg, "passw", 5) == 0 || strncasecmp(arg, "oauth", 5) == 0;
}

static void banner(struct sy_run *r, int argc, char **argv)
{
	struct passwd *pw = getpwuid(getuid());
	char line[4096];
	size_t len = 0;
	int mask_next = 0;

	sy_out(r, "imapferry-sync %s (imapsync-compatible), PID %d", IMAPFERRY_VERSION,
	       (int)getpid());
	for (int i = 0; i < argc && len < sizeof(line) - 32; i++) {
		const char *a = argv[i], *eq = strchr(a, '=');
		int secret = i > 0 && (a[0] == '-' || a[0] == '+') && secret_option(a);

		if (mask_next && !r->o->showpasswords) {
			a = "MASKED";
		} else if (secret && eq != NULL && !r->o->showpasswords) {
			len += (size_t)snprintf(line + len, sizeof(line) - len, " %.*s=MASKED",
			                        (int)(eq - a), a);
			mask_next = 0;
			continue;
		}
		mask_next = secret && eq == NULL;
		len += (size_t)snprintf(line + len, sizeof(line) - len, "%s%s", i > 0 ? " " : "",
		                        a);
	}
	sy_out(r, "Command line used, run by %s:", pw != NULL ? pw->pw_name : "?");
	sy_out(r, "%s", line);
	if (r->o->syncinternaldates)
		sy_out(r, "Info: turned ON syncinternaldates, will set the internal dates (arrival "
		          "dates) on host2 same as host1.");
	if (r->o->resyncflags)
		sy_out(r, "Info: will resync flags for already transferred messages. Use "
		          "--noresyncflags to not resync flags.");
	sy_out(r, "TLS: server certificates are verified (imapsync does not); --sslargs1 "
	          "SSL_verify_mode=0 turns that off, --sslargs1 SSL_ca_file=FILE adds a CA");
}

static int pidfile_write(struct sy_run *r)
{
	const char *pf = r->o->pidfile;
	FILE *fp;

	if (pf == NULL || pf[0] == '\0')
		return 0;
	if (access(pf, F_OK) == 0) {
		FILE *old = fopen(pf, "r");
		long pid = 0;

		if (old != NULL) {
			if (fscanf(old, "%ld", &pid) != 1)
				pid = 0;
			fclose(old);
		}
		if (pid > 0 && kill((pid_t)pid, 0) == 0 && pid != (long)getpid()) {
			if (r->o->pidfilelocking) {
				sy_out(r,
				       "PID file %s exists with a running process %ld, exiting "
				       "(--pidfilelocking)",
				       pf, pid);
				return -1;
			}
			sy_out(r,
			       "PID file %s already exists, overwriting it ( use --pidfilelocking "
			       "to "
			       "avoid concurrent runs )",
			       pf);
		}
	}
	fp = fopen(pf, "w");
	if (fp == NULL) {
		sy_out(r, "Can not write PID file %s: %s", pf, strerror(errno));
		return r->o->pidfilelocking ? -1 : 0;
	}
	fprintf(fp, "%d\n%s\n", (int)getpid(), r->logpath != NULL ? r->logpath : "");
	fclose(fp);
	r->pidpath = strdup(pf);
	return 0;
}

static int finish(struct sy_run *r, int code)
{
	sy_abortfile_unwatch();
	sy_out(r, "Exiting with return value %d (%s) %u/%lld nb_errors/max_errors PID %d", code,
	       sy_exit_text(code), r->nerrors, r->o->errorsmax, (int)getpid());
	if (r->pidpath != NULL) {
		sy_out(r, "Removing pidfile %s", r->pidpath);
		unlink(r->pidpath);
	}
	for (int i = 0; i < 2; i++) {
		/* a daemon worker keeps a good connection for the user's next sync */
		if (code == 0 && !r->no_pool)
			sy_pool_give(r, i);
		if (r->side[i].cl != NULL)
			sy_out(r, "Disconnecting from host%d %s user%d %s", i + 1,
			       r->o->acc[i].host != NULL ? r->o->acc[i].host : "", i + 1,
			       r->o->acc[i].user != NULL ? r->o->acc[i].user : "");
	}
	sy_sides_close(r);
	if (r->logpath != NULL)
		sy_out(r,
		       "Log file is %s ( to change it, use --logfile filepath ; or use --nolog to "
		       "turn off logging )",
		       r->logpath);
	return code;
}

static int side_lost(const struct sy_run *r, int i)
{
	return r->side[i].cl == NULL || imap_client_state(r->side[i].cl) == IMAP_CL_FAILED;
}

/*
 * One folder, again after a reconnect when a connection drops during it
 * (--reconnectretry1/2, default 3, as imapsync). Redoing the folder is
 * safe: identification finds what the broken attempt copied, and a message
 * cut off mid-APPEND was never committed by host2. The broken attempt's
 * errors and counts are replaced by the retry's; what it copied stays
 * counted as transferred.
 */
static void sync_folder_with_retry(struct sy_run *r, const struct sy_folder *f, unsigned idx,
                                   unsigned total, const struct sy_delta_base *db)
{
	unsigned tries[2] = {0, 0};

	for (;;) {
		struct sy_run snap;
		uint64_t copied, bytes;
		int lost = -1, asked;

		/* a --sigreconnect signal between folders: reconnect first */
		if (reconnect_sig != 0 && got_signal == 0 && reconnect_asked(r) < 0)
			return;
		snap = *r;

		/* the incremental pass first, when the state allows one; a retry
		 * is always a full pass (identification finds what the broken
		 * attempt copied) */
		in_folder = 1;
		if (db == NULL || sy_delta_folder(r, f, db, idx, total) == 0)
			sy_copy_folder(r, f, idx, total);
		in_folder = 0;
		db = NULL;
		/* stopped after the messages in flight for a --sigreconnect signal */
		asked = r->stop == STOP_RECONNECT && got_signal == 0;
		for (int i = 0; i < 2 && lost < 0; i++) {
			if (side_lost(r, i))
				lost = i;
		}
		if (asked) {
			sy_out(r,
			       "Folder [%s]: interrupted by a signal, redone after the "
			       "reconnection",
			       f->name1);
		} else if (lost < 0 || got_signal != 0) {
			return;
		} else if (tries[lost] >= (unsigned)r->o->acc[lost].reconnectretry) {
			sy_error(r, lost == 0 ? SY_ERR_CONNECT1 : SY_ERR_CONNECT2,
			         "Host%d: connection lost, %u reconnections failed or used up: %s",
			         lost + 1, tries[lost],
			         r->side[lost].cl != NULL ? imap_client_error(r->side[lost].cl)
			                                  : "");
			r->stop = 1;
			return;
		} else {
			tries[lost]++;
			sy_out(r,
			       "Host%d: connection lost (%s); reconnecting (%u/%lld) and redoing "
			       "folder [%s]",
			       lost + 1,
			       r->side[lost].cl != NULL ? imap_client_error(r->side[lost].cl)
			                                : "not connected",
			       tries[lost], r->o->acc[lost].reconnectretry, f->name1);
		}
		/* keep what was copied; the rest is counted again by the retry */
		copied = r->transferred - snap.transferred;
		bytes = r->bytes_transferred - snap.bytes_transferred;
		for (unsigned e = snap.nerrors; e < r->nerrors; e++)
			free(r->errors[e]);
		snap.errors = r->errors;
		snap.biggest = r->biggest;
		snap.reconnects[0] = r->reconnects[0];
		snap.reconnects[1] = r->reconnects[1];
		*r = snap;
		r->transferred += copied;
		r->bytes_transferred += bytes;
		r->retry_copied += copied;
		r->retry_bytes += bytes;
		if (asked) {
			if (reconnect_asked(r) < 0)
				return;
			continue;
		}
		r->reconnects[lost]++;
		for (int i = 0; i < 2; i++) {
			if (side_lost(r, i) && sy_side_reopen(r, i) != 0) {
				r->stop = 1;
				return;
			}
		}
	}
}

/* A folder that did not change on either side since its last clean pass:
 * counted as the last run found it, and not read at all. */
static int state_skip(struct sy_run *r, struct sy_state *st, const struct sy_plan *plan, size_t k,
                      const struct sy_fstatus now[2])
{
	uint64_t counts[3];
	char pos[48], n1[300], n2[300];

	if (!sy_state_unchanged(st, &plan->f[k], now, counts))
		return 0;
	if ((r->o->delete2 && counts[2] > 0) || (r->o->delete1 && counts[0] > 0))
		return 0; /* issue 8: something to delete that only a pass can find */
	sy_debug_cache(r, plan->f[k].name1, now, NULL,
	               "unchanged on both sides since the state: skipped (no EXAMINE)");
	snprintf(pos, sizeof(pos), "%u/%u", (unsigned)(k + 1), (unsigned)plan->n);
	snprintf(n1, sizeof(n1), "[%s]", plan->f[k].name1);
	snprintf(n2, sizeof(n2), "[%s]", plan->f[k].name2);
	sy_out(r, "Folder %7s %-35s -> %-35s unchanged since the last run, skipped", pos, n1, n2);
	r->ident1 += counts[0];
	r->ident2 += counts[1];
	r->in2_not_in1 += counts[2];
	r->folders_synced++;
	return 1;
}

/* The folder's pass; after a clean one, its state: host1 as before the
 * pass (a change during it makes the next run look again), host2 as after
 * our writes. */
static void sync_with_state(struct sy_run *r, struct sy_state *st, const struct sy_plan *plan,
                            size_t k, struct sy_fstatus (*before)[2])
{
	struct sy_run snap = *r;
	struct sy_fstatus now[2];
	uint64_t counts[3];
	struct sy_delta_base db;
	int delta = 0;

	if (st != NULL && r->o->delta) {
		db.now[0] = before[k][0];
		db.now[1] = before[k][1];
		delta = sy_state_delta_base(st, &plan->f[k], db.now, db.was, db.counts);
	}
	sy_debug_cache(r, plan->f[k].name1, st != NULL ? before[k] : NULL, delta ? db.was : NULL,
	               delta          ? "incremental pass from the state"
	               : st == NULL   ? "no state in use: full pass"
	               : !r->o->delta ? "full pass (--nodelta)"
	                              : "full pass (no state usable for an incremental one)");
	sync_folder_with_retry(r, &plan->f[k], (unsigned)k + 1, (unsigned)plan->n,
	                       delta ? &db : NULL);
	if (st == NULL)
		return;
	if (r->nerrors != snap.nerrors || r->in1_not_in2 != snap.in1_not_in2 || r->stop ||
	    !before[k][0].valid || !before[k][0].has_modseq) {
		sy_state_forget(st, &plan->f[k]);
		return;
	}
	now[0] = before[k][0];               /* host1 before the pass */
	sy_status_batch(r, plan, k, before); /* host2 after our writes */
	now[1] = before[k][1];
	if (!now[1].valid || !now[1].has_modseq) {
		sy_state_forget(st, &plan->f[k]);
		return;
	}
	counts[0] = r->ident1 - snap.ident1;
	counts[1] = (r->ident2 - snap.ident2) + (r->transferred - snap.transferred) -
	            (r->retry_copied - snap.retry_copied); /* found again by a redo */
	counts[2] = r->in2_not_in1 - snap.in2_not_in1;
	sy_state_record(st, &plan->f[k], now, counts);
}

/*
 * --quickcheck (the daemon's whole-user item): the folder tree is synced by
 * the plan (missing folders created, renames followed), both sides were
 * STATUSed with their LIST (LIST-STATUS) or in one pipelined round trip
 * each; every folder the state does not show as unchanged is marked in
 * Redis for a one-folder sync, which any worker then claims. Nothing else
 * is read or copied here.
 */
/* quickcheck()'s Redis, reached only when there is something to write: an
 * idle user's check (the common case) needs no connection of its own. */
static struct rq *quick_rq(struct sy_run *r, struct rq **qp)
{
	char host[256];
	const char *unix_path, *error = "bad address";
	int port;

	if (*qp != NULL || r->stop)
		return *qp;
	if (rq_addr_parse(r->o->redis, host, sizeof(host), &port, &unix_path) == 0)
		*qp = rq_open(unix_path != NULL ? NULL : host, port, unix_path, 2000, &error);
	if (*qp == NULL) {
		sy_error(r, SY_ERR_UNCLASSIFIED, "Redis %s: %s", r->o->redis, error);
		r->stop = 1;
	}
	return *qp;
}

static int quickcheck(struct sy_run *r, struct sy_state *st, const struct sy_plan *plan,
                      struct sy_fstatus (*before)[2])
{
	char host[256], name[2048];
	const char *unix_path;
	int port;
	size_t marked = 0;
	struct rq *q = NULL;

	if (r->o->redis == NULL ||
	    rq_addr_parse(r->o->redis, host, sizeof(host), &port, &unix_path) < 0)
		return SY_EX_USAGE; /* refused before connecting (sy_main) */
	if (st == NULL && quick_rq(r, &q) != NULL) {
		/* --nostate: the full check; the folder syncs it marks start from
		 * nothing stored and identify every message again */
		if (rq_state_forget(q, r->o->acc[0].user) < 0)
			sy_error(r, SY_ERR_UNCLASSIFIED, "Redis: cannot forget the state: %s",
			         rq_error(q));
		else
			sy_out(r, "Full check: the stored state of %s is forgotten",
			       r->o->acc[0].user);
	}
	for (size_t k = 0; k < plan->n; k++) {
		uint64_t counts[3];

		if (plan->f[k].skip || !plan->f[k].exists2 ||
		    (st != NULL && sy_state_unchanged(st, &plan->f[k], before[k], counts)))
			continue;
		if (quick_rq(r, &q) == NULL)
			break;
		if (rk_folder_canon(name, sizeof(name), plan->f[k].name1, strlen(plan->f[k].name1),
		                    0, r->side[0].sep) < 0 ||
		    rq_mark(q, r->o->acc[0].user, name, 0) < 0) {
			sy_error(r, SY_ERR_UNCLASSIFIED, "Folder %s: cannot mark it in Redis: %s",
			         plan->f[k].name1, rq_error(q));
			continue;
		}
		sy_out(r, "Folder [%s] changed since the last sync: marked for a sync",
		       plan->f[k].name1);
		marked++;
	}
	sy_out(r, "Quick check: %zu of %zu folders changed", marked, plan->n);
	/* An idle user's next check is a poll interval away: a pooled session
	 * would only hold a server process (and keep a new one from being
	 * reused) until it expires. A user with changes has syncs coming. */
	r->no_pool = marked == 0;
	rq_close(&q);
	return r->nerrors > 0 ? sy_report(r) : 0;
}

/* --- --parallel N: several folders at once, each worker a process with its
 * own pair of connections (the engine is one pass per connection pair).
 * Workers take folder indexes from a pipe, so a big folder does not hold
 * up the rest; each sends back its counters, errors and the state of the
 * folders it synced, which the parent merges before it saves the state
 * and prints imapsync's statistics. --- */

struct par_counters {
	uint64_t v[20];
};

static uint64_t *counter_ptr(struct sy_run *r, int i)
{
	uint64_t *const p[] = {&r->transferred,
	                       &r->skipped,
	                       &r->dup1,
	                       &r->dup2,
	                       &r->noheader1,
	                       &r->noheader2,
	                       &r->bytes_transferred,
	                       &r->bytes_skipped,
	                       &r->in1_not_in2,
	                       &r->in2_not_in1,
	                       &r->ident1,
	                       &r->ident2,
	                       &r->would_copy,
	                       &r->retry_copied,
	                       &r->deleted1,
	                       &r->deleted2,
	                       &r->crossdup2,
	                       &r->retry_bytes};

	return i < (int)(sizeof(p) / sizeof(p[0])) ? p[i] : NULL;
}

static void par_worker(struct sy_run *r, struct sy_state *st, const struct sy_plan *plan,
                       struct sy_fstatus (*before)[2], int jobs, FILE *out)
{
	uint32_t k;
	int ok = 1;

	/* fresh counters; the parent's connections and event loop are left
	 * alone (never freed here: that would log them out) */
	for (int i = 0; counter_ptr(r, i) != NULL; i++)
		*counter_ptr(r, i) = 0;
	r->folders_synced = 0;
	r->biggest = 0;
	r->reconnects[0] = r->reconnects[1] = 0;
	r->nerrors = 0;
	r->errors = NULL;
	memset(r->err_count, 0, sizeof(r->err_count));
	r->base = event_base_new();
	sy_state_forked(st);
	sy_abortfile_watch_worker(r); /* the run's abort file stops the workers too */
	for (int i = 0; i < 2 && ok; i++) {
		r->side[i].cl = NULL;
		r->side[i].tls = NULL;
		ok = sy_side_open(r, i) == 0;
	}
	while (ok && !r->stop && got_signal == 0 && read(jobs, &k, sizeof(k)) == sizeof(k)) {
		sync_with_state(r, st, plan, k, before);
		if (st != NULL) {
			/* only the folders this worker synced (its copy of the others
			 * is stale), each at once: the parent may save it
			 * (--checkpoint) while the other workers run. A folder's state
			 * changes only in its own pass. */
			sy_state_dump(st, &plan->f[k], out);
			fputs("D\n", out);
			fflush(out);
		}
	}
	for (int i = 0; counter_ptr(r, i) != NULL; i++)
		fprintf(out, "C %d %llu\n", i, (unsigned long long)*counter_ptr(r, i));
	fprintf(out, "B %llu %u %u %u\n", (unsigned long long)r->biggest, r->folders_synced,
	        r->reconnects[0], r->reconnects[1]);
	for (unsigned e = 0; e < r->nerrors; e++) {
		for (int c = 0; c < SY_ERR_COUNT; c++) {
			/* the class: the first with a count left (errors keep order) */
			if (r->err_count[c] > 0) {
				fprintf(out, "E %d ", c);
				r->err_count[c]--;
				break;
			}
		}
		for (const char *p = r->errors[e]; *p != '\0'; p++)
			fputc(*p == '\n' ? ' ' : *p, out);
		fputc('\n', out);
	}
	for (int i = 0; i < 2; i++)
		sy_side_close(r, i);
}

/* One line of a worker's results (par_worker()). Returns 1 for a line of a
 * folder's state (F, M, X), 2 for the end of a folder's lines (D), else 0. */
static int par_line(struct sy_run *r, struct sy_state *st, char *line)
{
	unsigned long long v, big;
	unsigned fs, r0, r1;
	int i;

	if (sscanf(line, "C %d %llu", &i, &v) == 2 && counter_ptr(r, i) != NULL) {
		*counter_ptr(r, i) += v;
	} else if (sscanf(line, "B %llu %u %u %u", &big, &fs, &r0, &r1) == 4) {
		if (big > r->biggest)
			r->biggest = big;
		r->folders_synced += fs;
		r->reconnects[0] += r0;
		r->reconnects[1] += r1;
	} else if (sscanf(line, "E %d ", &i) == 1 && i >= 0 && i < SY_ERR_COUNT) {
		char **ne = realloc(r->errors, sizeof(*ne) * (r->nerrors + 1));
		const char *text = strchr(line + 2, ' ');

		if (ne == NULL || (ne[r->nerrors] = strdup(text != NULL ? text + 1 : "")) == NULL)
			abort();
		r->errors = ne;
		r->nerrors++;
		r->err_count[i]++;
	} else if (strcmp(line, "D") == 0) {
		return 2;
	} else if (st != NULL && (line[0] == 'F' || line[0] == 'M' || line[0] == 'X')) {
		sy_state_merge_line(st, line);
		return 1;
	}
	return 0;
}

/* A worker's result pipe, read as it comes (poll()), so the state of each
 * folder a worker finished can be saved (--checkpoint) while the others
 * run. */
struct par_in {
	int fd, eof;
	int in_folder; /* a folder's state lines started, its D not read yet */
	char *buf;
	size_t len, cap;
};

/* The complete lines read from w; 1 when one ended a folder's lines. */
static int par_lines(struct sy_run *r, struct sy_state *st, struct par_in *w)
{
	size_t start = 0;
	int ended = 0;

	for (size_t i = 0; i < w->len; i++) {
		int kind;

		if (w->buf[i] != '\n')
			continue;
		w->buf[i] = '\0';
		kind = par_line(r, st, w->buf + start);
		if (kind == 1)
			w->in_folder = 1;
		else if (kind == 2 && w->in_folder) {
			w->in_folder = 0;
			ended = 1;
		}
		start = i + 1;
	}
	memmove(w->buf, w->buf + start, w->len - start);
	w->len -= start;
	return ended;
}

static void par_collect(struct sy_run *r, struct sy_state *st, struct par_in *in, unsigned nw)
{
	struct pollfd *pfd = calloc(nw + 1, sizeof(*pfd));
	unsigned open = nw;

	if (pfd == NULL)
		abort();
	while (open > 0) {
		unsigned n = 0;
		int ended = 0, busy = 0;

		for (unsigned w = 0; w < nw; w++) {
			if (!in[w].eof) {
				pfd[n].fd = in[w].fd;
				pfd[n].events = POLLIN;
				n++;
			}
		}
		if (poll(pfd, n, -1) < 0) {
			if (errno == EINTR)
				continue;
			abort();
		}
		n = 0;
		for (unsigned w = 0; w < nw; w++) {
			ssize_t got;

			if (in[w].eof)
				continue;
			if ((pfd[n++].revents & (POLLIN | POLLHUP | POLLERR)) == 0)
				continue;
			if (in[w].cap - in[w].len < 65536) {
				in[w].cap = in[w].cap * 2 + 65536;
				in[w].buf = realloc(in[w].buf, in[w].cap);
				if (in[w].buf == NULL)
					abort();
			}
			got = read(in[w].fd, in[w].buf + in[w].len, in[w].cap - in[w].len - 1);
			if (got < 0 && errno == EINTR)
				continue;
			if (got <= 0) {
				if (in[w].len > 0) { /* a last line without its newline */
					in[w].buf[in[w].len++] = '\n';
					par_lines(r, st, &in[w]);
				}
				in[w].eof = 1;
				open--;
				continue;
			}
			in[w].len += (size_t)got;
			ended |= par_lines(r, st, &in[w]);
		}
		for (unsigned w = 0; w < nw; w++)
			busy |= in[w].in_folder;
		/* only between two whole folders of every worker */
		if (ended && !busy && st != NULL && !r->stop)
			sy_state_checkpoint(r, st);
	}
	free(pfd);
}

static void run_parallel(struct sy_run *r, struct sy_state *st, const struct sy_plan *plan,
                         struct sy_fstatus (*before)[2], const uint32_t *todo, size_t ntodo)
{
	unsigned nw = (unsigned)r->o->parallel;
	int jobs[2];
	pid_t *pids;
	struct par_in *res;

	if (nw > ntodo)
		nw = (unsigned)ntodo;
	pids = calloc(nw + 1, sizeof(*pids));
	res = calloc(nw + 1, sizeof(*res));
	if (pids == NULL || res == NULL || pipe(jobs) < 0)
		abort();
	sy_out(r,
	       "++++ %zu folders to sync by %u workers (--parallel), each with its own "
	       "connections",
	       ntodo, nw);
	fflush(stdout);
	if (r->log != NULL)
		fflush(r->log);
	for (unsigned w = 0; w < nw; w++) {
		int out[2];

		if (pipe(out) < 0)
			abort();
		pids[w] = fork();
		if (pids[w] == 0) {
			FILE *fp = fdopen(out[1], "w");

			close(out[0]);
			close(jobs[1]);
			setvbuf(stdout, NULL, _IOLBF, 0); /* whole lines from each worker */
			if (r->log != NULL)
				setvbuf(r->log, NULL, _IOLBF, 0);
			par_worker(r, st, plan, before, jobs[0], fp);
			fclose(fp);
			fflush(stdout);
			if (r->log != NULL)
				fflush(r->log);
			_exit(0);
		}
		close(out[1]);
		res[w].fd = out[0];
		if (pids[w] < 0)
			abort();
	}
	close(jobs[0]);
	for (size_t i = 0; i < ntodo; i++) {
		if (write(jobs[1], &todo[i], sizeof(todo[i])) != sizeof(todo[i]))
			break;
	}
	close(jobs[1]);
	par_collect(r, st, res, nw);
	for (unsigned w = 0; w < nw; w++) {
		int status;

		close(res[w].fd);
		free(res[w].buf);
		waitpid(pids[w], &status, 0);
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
			sy_error(r, SY_ERR_UNCLASSIFIED,
			         "--parallel worker %u ended abnormally (%d)", w + 1, status);
	}
	free(pids);
	free(res);
}

static int run(struct sy_run *r, int argc, char **argv)
{
	struct sy_options *o = r->o;
	struct sy_hdrkey_settings hs;
	struct sy_plan plan;
	struct sy_state *st = NULL;
	struct sy_fstatus(*before)[2] = NULL;
	char err[4096];
	const char *error;
	int code;

	if (o->log) {
		r->logpath = log_path(o);
		if (r->logpath != NULL) {
			mkdirs(r->logpath);
			r->log = fopen(r->logpath, "a");
			if (r->log == NULL) {
				fprintf(stderr, "Can not open log file %s: %s\n", r->logpath,
				        strerror(errno));
				free(r->logpath);
				r->logpath = NULL;
			}
		}
	}
	banner(r, argc, argv);
	if (o->justbanner)
		return finish(r, 0);
	if (preset_notes[0] != '\0')
		sy_out(r, "%s", preset_notes);
	sy_debug_env(r);  /* --debugenv */
	debug_signals(r); /* --debugsig */
	if (sy_options_resolve_passwords(o, err, sizeof(err)) < 0) {
		sy_out(r, "%s", err);
		return finish(r, SY_EX_NOINPUT);
	}
	for (int i = 0; i < 2; i++) {
		if (!o->justconnect && sy_options_need_password(o, i)) {
			o->acc[i].password = prompt_password(i + 1, o->acc[i].user);
			if (o->acc[i].password == NULL) {
				sy_out(r,
				       "Host%d: no password given (--password%d, --passfile%d or "
				       "IMAPSYNC_PASSWORD%d) and no terminal to ask for one",
				       i + 1, i + 1, i + 1, i + 1);
				return finish(r, SY_EX_USAGE);
			}
		}
	}
	if (pidfile_write(r) < 0)
		return finish(r, 8);
	memset(&hs, 0, sizeof(hs));
	hs.useheader = (const char *const *)o->useheader.v;
	hs.useheader_count = o->useheader.n;
	hs.skipheader = o->skipheader;
	hs.messageidnodomain = o->messageidnodomain;
	hs.noskipsize = !o->skipsize;
	if (sy_hdrkey_opts_init(&r->hk, &hs, &error) < 0) {
		sy_out(r, "%s", error);
		return finish(r, SY_EX_USAGE);
	}
	{
		struct sy_flags_settings fs;

		memset(&fs, 0, sizeof(fs));
		fs.regexflag = (const char *const *)o->regexflag.v;
		fs.regexflag_count = o->noregexflag ? 0 : o->regexflag.n;
		fs.filterbuggyflags = o->filterbuggyflags;
		fs.noflagscase = !o->flagscase;
		fs.nofilterflags = !o->filterflags;
		if (sy_flags_opts_init(&r->fl, &fs, &error) < 0) {
			sy_out(r, "%s", error);
			return finish(r, SY_EX_USAGE);
		}
	}
	if (sy_folders_check_regexes(o, err, sizeof(err)) < 0 ||
	    sy_issue8_check(r, err, sizeof(err)) < 0) {
		sy_out(r, "%s", err);
		return finish(r, SY_EX_USAGE);
	}
	if (o->quickcheck) {
		char host[256];
		const char *unix_path;
		int port;

		/* before any connection: the check is worthless without it */
		if (o->redis == NULL ||
		    rq_addr_parse(o->redis, host, sizeof(host), &port, &unix_path) < 0) {
			sy_out(r, "--quickcheck needs --redis HOST:PORT (or a socket path)");
			return finish(r, SY_EX_USAGE);
		}
	}
	r->base = sy_pool_base() != NULL ? sy_pool_base() : event_base_new();
	if (sy_pool_base() == NULL)
		sy_abortfile_watch(r, r->pidpath); /* <pidfile>abort<PID> stops the run */
	for (int i = 0; i < 2; i++) {
		r->side[i].acc = &o->acc[i];
		if (sy_pool_take(r, i))
			continue;
		if ((code = sy_side_open(r, i)) != 0)
			return finish(r, o->justconnect ? 10 : code);
	}
	if (o->justconnect || o->justlogin)
		return finish(r, 0);
	sy_select_check_search(r); /* --checknoabletosearch (issue 8) */
	if (o->fetch_hash_set != NULL && strcmp(o->fetch_hash_set, "1:*") != 0) {
		/* a UID window: what lies outside it is neither read nor copied
		 * nor deleted, so nothing about whole folders can be recorded */
		if (o->state)
			sy_out(r,
			       "Info: --fetch_hash_set %s reads only those UIDs: no state for this "
			       "run",
			       o->fetch_hash_set);
		o->state = 0;
		o->delta = 0;
	}
	if (o->skipcrossduplicates) {
		/* which folder's copy wins depends on the folder order, and every
		 * folder's host2 keys must be read: full passes, in order */
		if (o->state || o->parallel > 1)
			sy_out(r, "Info: --skipcrossduplicates reads every folder in order: no "
			          "state and no --parallel for this run");
		o->state = 0;
		o->delta = 0;
		o->parallel = 1;
		r->xdup = sy_xdup_new();
	}
	/* the state is read before the folder plan: a folder renamed on host1
	 * is recognised from it before its new name is created on host2 */
	if (o->state && !o->dry && !o->justfolders && !o->justfoldersizes && !o->justfolderlists &&
	    !o->justautomap) {
		st = sy_state_load(r);
		r->st = st;
	}
	{
		/* --justfoldersizes creates nothing: plan as under --dry */
		int dry = o->dry;

		if (o->justfoldersizes)
			o->dry = 1;
		if (sy_folders_plan(r, &plan) < 0) {
			o->dry = dry;
			r->st = NULL;
			sy_state_free(&st);
			return finish(r, sy_report(r));
		}
		o->dry = dry;
	}
	sy_debug_folders(r, &plan); /* --debuglist, --debugfolders */
	if (o->justfolderlists || o->justautomap) {
		sy_plan_free(&plan);
		return finish(r, 0);
	}
	sy_acl_sync(r, &plan);   /* --syncacls (issue 8) */
	if (sy_labels_usable(r)) /* --synclabels/--resynclabels: Gmail only */
		o->delta = 0;    /* labels are set by full passes */
	if (o->foldersizes || o->justfoldersizes)
		sy_folder_sizes(r, &plan, 0);
	if (o->justfoldersizes) {
		sy_plan_free(&plan);
		return finish(r, 0);
	}
	if (st != NULL) {
		sy_out(r, "State file is %s ( --nostate to do without it )", sy_state_file(st));
		before = calloc(plan.n + 1, sizeof(*before));
		if (before == NULL)
			abort();
		sy_status_batch(r, &plan, (size_t)-1, before);
	}
	if (o->quickcheck) {
		if (st != NULL)
			sy_state_save(r, st); /* renames moved entries */
		code = quickcheck(r, st, &plan, before);
		r->st = NULL;
		sy_state_free(&st);
		free(before);
		sy_plan_free(&plan);
		return finish(r, code);
	}
	sy_out(r, "++++ Looping on each one of %zu folders to sync", plan.n);
	{
		uint32_t *todo = calloc(plan.n + 1, sizeof(*todo));
		size_t ntodo = 0;

		if (todo == NULL)
			abort();
		for (size_t k = 0; k < plan.n && !r->stop; k++) {
			if (plan.f[k].skip || (!plan.f[k].exists2 && !o->dry))
				continue; /* skipped, or its creation failed (counted already) */
			if (st != NULL && state_skip(r, st, &plan, k, before[k]))
				continue;
			if (o->parallel > 1 && !o->dry)
				todo[ntodo++] = (uint32_t)k; /* for the workers */
			else {
				sync_with_state(r, st, &plan, k, before);
				if (st != NULL && k + 1 < plan.n && !r->stop)
					sy_state_checkpoint(r, st);
			}
		}
		if (ntodo > 0)
			run_parallel(r, st, &plan, before, todo, ntodo);
		free(todo);
	}
	if (st != NULL)
		sy_state_save(r, st);
	r->st = NULL;
	sy_state_free(&st);
	free(before);
	sy_delete1_empty_folders(r, &plan); /* issue 8 */
	sy_out(r, "++++ End looping on each folder");
	if (o->foldersizes && o->foldersizesatend && !r->stop && !o->justfolders)
		sy_folder_sizes(r, &plan, 1);
	sy_plan_free(&plan);
	code = sy_report(r);
	if (got_signal != 0) {
		sy_out(r, "Got signal %s (%d), exiting", sig_name(got_signal), (int)got_signal);
		code = EXIT_BY_SIGNAL;
	} else if (sy_abortfile_hit() != NULL) {
		sy_out(r, "Aborted by the file %s, exiting", sy_abortfile_hit());
		code = SY_EXIT_BY_FILE;
	}
	sy_email_report(r, code); /* --emailreport1/2 */
	return finish(r, code);
}

/* --- --config FILE: the command line's options as "key = value" lines (INI,
 * libinih; sections are ignored). "key = yes" or a bare "key =" is --key,
 * "key = no" is --nokey; a key may repeat (list options). The file's
 * options go first, so the command line overrides them. --- */

struct cfg_argv {
	char **v;
	int n, cap;
};

static void cfg_push(struct cfg_argv *a, const char *s)
{
	if (a->n + 2 > a->cap) {
		a->cap = a->cap ? a->cap * 2 : 32;
		a->v = realloc(a->v, (size_t)a->cap * sizeof(*a->v));
		if (a->v == NULL)
			abort();
	}
	a->v[a->n] = strdup(s);
	if (a->v[a->n] == NULL)
		abort();
	a->v[++a->n] = NULL;
}

static int cfg_line(void *aux, const char *section, const char *key, const char *value)
{
	struct cfg_argv *a = aux;
	char opt[300];

	(void)section;
	if (strcasecmp(value, "no") == 0 || strcasecmp(value, "false") == 0) {
		snprintf(opt, sizeof(opt), "--no%s", key);
		cfg_push(a, opt);
		return 1;
	}
	snprintf(opt, sizeof(opt), "--%s", key);
	cfg_push(a, opt);
	if (value[0] != '\0' && strcasecmp(value, "yes") != 0 && strcasecmp(value, "true") != 0)
		cfg_push(a, value);
	return 1;
}

/* argv with the options of --config FILE expanded in front; NULL on an
 * error (said); argv itself (not a copy) when there is no --config. */
static char **config_argv(int argc, char **argv, int *argc_r)
{
	struct cfg_argv a = {NULL, 0, 0};
	const char *file = NULL;
	int rc;

	*argc_r = argc;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
			file = argv[i + 1];
		else if (strncmp(argv[i], "--config=", 9) == 0)
			file = argv[i] + 9;
	}
	if (file == NULL)
		return argv;
	cfg_push(&a, argv[0]);
	rc = ini_parse(file, cfg_line, &a);
	if (rc != 0) {
		if (rc < 0)
			fprintf(stderr, "%s: cannot read: %s\n", file, strerror(errno));
		else
			fprintf(stderr, "%s:%d: not a \"key = value\" line\n", file, rc);
		for (int i = 0; i < a.n; i++)
			free(a.v[i]);
		free(a.v);
		return NULL;
	}
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--config") == 0) {
			i++;
			continue;
		}
		if (strncmp(argv[i], "--config=", 9) == 0)
			continue;
		cfg_push(&a, argv[i]);
	}
	*argc_r = a.n;
	return a.v;
}

static void config_argv_free(char **v, char **argv, int argc)
{
	if (v == NULL || v == argv)
		return;
	for (int i = 0; i < argc; i++)
		free(v[i]);
	free(v);
}

static int main_args(int argc, char **argv);

int main(int argc, char **argv)
{
	int code;

	signal(SIGPIPE, SIG_IGN);
	if (getenv(SY_WORKER_FD_ENV) != NULL) {
		/* started by the daemon (daemon.c): a long-lived sync worker,
		 * whose job logs are read when each job ends (worker.c flushes) */
		setvbuf(stdout, NULL, _IOFBF, 1 << 16);
		sy_out_buffered(1);
		return sy_worker_main(atoi(getenv(SY_WORKER_FD_ENV)), main_args);
	}
	/* whole lines as they happen, also into a pipe: a log that is read
	 * while the run goes on (or after a crash) is complete to the last line */
	setvbuf(stdout, NULL, _IOLBF, 0);
	{
		int n;
		char **v = config_argv(argc, argv, &n);

		if (v == NULL)
			return SY_EX_USAGE;
		if (v != argv) {
			code = main_args(n, v);
			config_argv_free(v, argv, n);
			return code;
		}
	}
	return main_args(argc, argv);
}

/*
 * Passwords given on the command line (--password1 X, --password2=Y) are
 * blanked in argv once parsed, so that ps and /proc/PID/cmdline no longer
 * show them (imapsync leaves them there). --showpasswords keeps them: it
 * asks to see them. (Tokens stay: the daemon passes them on to its syncs
 * from its own arguments.)
 */
static void hide_secrets(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		char *a = argv[i], *eq;
		const char *name = a;

		if (strcmp(a, "--") == 0)
			break;
		while (*name == '-' || *name == '+')
			name++;
		if (name == a || strncasecmp(name, "password", 8) != 0 ||
		    (name[8] != '1' && name[8] != '2') || (name[9] != '\0' && name[9] != '='))
			continue;
		if ((eq = strchr(a, '=')) != NULL)
			memset(eq + 1, 'x', strlen(eq + 1));
		else if (i + 1 < argc)
			memset(argv[i + 1], 'x', strlen(argv[i + 1]));
	}
}

static int main_args(int argc, char **argv)
{
	struct sy_options o;
	struct sy_run r;
	char err[8192];
	int code;

	sy_options_init(&o);
	o.extra_file = "options_extra.txt";
	if (sy_options_parse(&o, argc, argv, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s\n", err);
		fprintf(stderr, "For help run %s --help\n", argv[0]);
		sy_options_free(&o);
		return SY_EX_USAGE;
	}
	if (!o.showpasswords)
		hide_secrets(argc, argv);
	if (o.help || o.nargs == 0) {
		sy_options_usage(stdout);
		sy_options_free(&o);
		return 0;
	}
	if (o.version) {
		printf("%s\n", IMAPFERRY_VERSION);
		sy_options_free(&o);
		return 0;
	}
	if (sy_options_presets(&o, preset_notes, sizeof(preset_notes)) < 0) {
		fprintf(stderr, "out of memory\n");
		sy_options_free(&o);
		return SY_EX_USAGE;
	}
	if (sy_options_check(&o, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s\n", err);
		sy_options_free(&o);
		return SY_EX_USAGE;
	}
	if (o.debugimap || o.acc[0].debugimap || o.acc[1].debugimap || o.debug || o.debugssl >= 3) {
		const char *e;
		int imap = o.debugimap || o.acc[0].debugimap || o.acc[1].debugimap;

		/* --debugssl 3 and more: the connections' TLS traces */
		log_set_debug(o.debug                   ? "all"
		              : imap && o.debugssl >= 3 ? "imap,net"
		              : imap                    ? "imap"
		                                        : "net",
		              &e);
	}
	if (sig_setup(&o, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s\n", err);
		sy_options_free(&o);
		return SY_EX_USAGE;
	}
	if (o.abort) {
		code = sy_abort_previous(&o);
		sy_options_free(&o);
		return code;
	}
	if (o.abortbyfile || (o.tail && (code = sy_tail_previous(&o)) >= 0)) {
		if (o.abortbyfile)
			code = sy_abortbyfile_previous(&o);
		sy_options_free(&o);
		return code;
	}
	if (o.daemon) {
		code = sy_daemon_main(&o, argc, argv);
		sy_options_free(&o);
		return code;
	}
	memset(&r, 0, sizeof(r));
	r.o = &o;
	r.tty = isatty(STDOUT_FILENO);
	clock_gettime(CLOCK_MONOTONIC, &r.t0);
	signal_run = &r;
	sig_install();

	code = run(&r, argc, argv);

	sy_xdup_free(&r.xdup);
	sy_hdrkey_opts_free(&r.hk);
	sy_flags_opts_free(&r.fl);
	if (r.base != NULL && r.base != sy_pool_base())
		event_base_free(r.base);
	for (unsigned i = 0; i < r.nerrors; i++)
		free(r.errors[i]);
	free(r.errors);
	if (r.log != NULL)
		fclose(r.log);
	free(r.logpath);
	free(r.pidpath);
	sy_options_free(&o);
	return code;
}
