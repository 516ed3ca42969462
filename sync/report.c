/* report.c - output, error bookkeeping, statistics and exit codes. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "imapferry/client.h"
#include "runctl.h"
#include "sync.h"

static const int err_exit[SY_ERR_COUNT] = {111, 101, 102, 12,  161, 162,
                                           114, 115, 116, 117, 120, 118};
static const char *const err_names[SY_ERR_COUNT] = {"ERR_UNCLASSIFIED",
                                                    "ERR_CONNECTION_FAILURE_HOST1",
                                                    "ERR_CONNECTION_FAILURE_HOST2",
                                                    "ERR_TLS_FAILURE",
                                                    "ERR_AUTHENTICATION_FAILURE_USER1",
                                                    "ERR_AUTHENTICATION_FAILURE_USER2",
                                                    "ERR_APPEND",
                                                    "ERR_Host1_FETCH",
                                                    "ERR_CREATE",
                                                    "ERR_SELECT",
                                                    "ERR_FLAGS",
                                                    "ERR_TRANSFER_EXCEEDED"};
_Static_assert(sizeof(err_names) / sizeof(err_names[0]) == SY_ERR_COUNT, "error names");

int sy_err_exit_code(enum sy_err cls)
{
	return err_exit[cls];
}

const char *sy_exit_text(int code)
{
	switch (code) {
	case 0:
		return "EX_OK: successful termination";
	case 7:
		return "EXIT_BY_FILE";
	case 8:
		return "EXIT_PID_FILE_ERROR";
	case 10:
		return "EXIT_CONNECTION_FAILURE";
	case 12:
		return "EXIT_TLS_FAILURE";
	case 64:
		return "EX_USAGE: command line usage error";
	case 66:
		return "EX_NOINPUT: cannot open input";
	case 101:
		return "EXIT_CONNECTION_FAILURE_HOST1";
	case 102:
		return "EXIT_CONNECTION_FAILURE_HOST2";
	case 111:
		return "EXIT_WITH_ERRORS";
	case 114:
		return "EXIT_ERR_APPEND";
	case 115:
		return "EXIT_ERR_FETCH";
	case 116:
		return "EXIT_ERR_CREATE";
	case 117:
		return "EXIT_ERR_SELECT";
	case 118:
		return "EXIT_TRANSFER_EXCEEDED";
	case 120:
		return "EXIT_ERR_FLAGS";
	case 161:
		return "EXIT_AUTHENTICATION_FAILURE_USER1";
	case 162:
		return "EXIT_AUTHENTICATION_FAILURE_USER2";
	default:
		return "EXIT_CATCH_ALL";
	}
}

/* sy_report()'s lines, kept for --emailreport1/2 (bounded: a long error
 * listing is cut). */
#define REPORT_MAX (256u << 10)
static struct evbuffer *report_text;
static int report_capture;
static int out_buffered; /* sy_out_buffered() */

void sy_out_buffered(int on)
{
	out_buffered = on;
}

/* to_stdout 0: the log file only (per-message lines on a terminal).
 * Lines quote what servers sent (error texts, ID, folder names): control
 * characters other than tab and newline become '?', so a server cannot
 * send escape sequences to the operator's terminal or forge log lines. */
static void vout(struct sy_run *r, int to_stdout, const char *fmt, va_list ap)
{
	char *line = NULL;

	if (vasprintf(&line, fmt, ap) < 0)
		abort();
	for (unsigned char *p = (unsigned char *)line; *p != '\0'; p++) {
		if ((*p < 0x20 && *p != '\t' && *p != '\n') || *p == 0x7f)
			*p = '?';
	}
	if (report_capture && report_text != NULL &&
	    evbuffer_get_length(report_text) < REPORT_MAX) {
		evbuffer_add(report_text, line, strlen(line));
		evbuffer_add(report_text, "\r\n", 2);
	}
	if (to_stdout) {
		if (r->progress_shown) {
			fputs("\r\033[K", stdout); /* the progress line makes room */
			r->progress_shown = 0;
		}
		fputs(line, stdout);
		fputc('\n', stdout);
		if (!out_buffered)
			fflush(stdout);
	}
	if (r->log != NULL) {
		fputs(line, r->log);
		fputc('\n', r->log);
		fflush(r->log);
	}
	free(line);
}

void sy_out(struct sy_run *r, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vout(r, 1, fmt, ap);
	va_end(ap);
}

void sy_msgline(struct sy_run *r, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vout(r, !r->tty, fmt, ap);
	va_end(ap);
}

void sy_progress(struct sy_run *r, const char *fmt, ...)
{
	struct timespec now;
	long long ms;
	va_list ap;

	if (!r->tty)
		return;
	clock_gettime(CLOCK_MONOTONIC, &now);
	ms = (long long)now.tv_sec * 1000 + now.tv_nsec / 1000000;
	if (ms - r->progress_ms < 100)
		return; /* at most 10 updates a second */
	r->progress_ms = ms;
	fputs("\r\033[K", stdout);
	va_start(ap, fmt);
	vfprintf(stdout, fmt, ap);
	va_end(ap);
	fflush(stdout);
	r->progress_shown = 1;
}

void sy_error(struct sy_run *r, enum sy_err cls, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	char **ne;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	sy_out(r, "%s", buf);
	fflush(stdout); /* buffered or not, an error is in the log at once */
	ne = realloc(r->errors, sizeof(*ne) * (r->nerrors + 1));
	if (ne == NULL || (ne[r->nerrors] = strdup(buf)) == NULL)
		abort();
	r->errors = ne;
	r->nerrors++;
	r->err_count[cls]++;
	if (r->o->errorsmax > 0 && r->nerrors >= (unsigned long long)r->o->errorsmax && !r->stop) {
		sy_out(r,
		       "Maximum number of errors %lld reached ( you can change %lld to any value, "
		       "for example 100 with --errorsmax 100 ). Exiting.",
		       r->o->errorsmax, r->o->errorsmax);
		r->stop = 1;
	}
}

const char *sy_bytes(char *buf, size_t size, uint64_t n)
{
	static const char *const units[] = {"KiB", "MiB", "GiB", "TiB"};
	double v = (double)n;
	int u = -1;

	if (n < 1000) {
		snprintf(buf, size, "%llu bytes", (unsigned long long)n);
		return buf;
	}
	while (u < 3 && v >= 1000) {
		v /= 1024;
		u++;
	}
	snprintf(buf, size, "%.3f %s", v, units[u]);
	return buf;
}

static void stat_line(struct sy_run *r, const char *label, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

static void stat_line(struct sy_run *r, const char *label, const char *fmt, ...)
{
	char val[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(val, sizeof(val), fmt, ap);
	va_end(ap);
	sy_out(r, "%-40s: %s", label, val);
}

static int exit_code(const struct sy_run *r)
{
	int best = -1;

	if (r->nerrors == 0)
		return 0;
	for (int i = 0; i < SY_ERR_COUNT; i++) {
		/* most frequent class; ties go to the alphabetically first name */
		if (r->err_count[i] == 0)
			continue;
		if (best < 0 || r->err_count[i] > r->err_count[best] ||
		    (r->err_count[i] == r->err_count[best] &&
		     strcmp(err_names[i], err_names[best]) < 0))
			best = i;
	}
	return err_exit[best];
}

/* The last report's counts, for sy_report_take(). */
static unsigned long long last_messages, last_bytes;

void sy_report_take(unsigned long long *messages, unsigned long long *bytes)
{
	*messages = last_messages;
	*bytes = last_bytes;
	last_messages = last_bytes = 0;
}

int sy_report(struct sy_run *r)
{
	struct timespec t1;
	double secs;
	char b1[64], b2[64], ts0[64], ts1[64];
	time_t now = time(NULL), start;
	struct tm tm;
	int code;

	if (r->o->acc[0].emailreport || r->o->acc[1].emailreport) {
		if (report_text == NULL && (report_text = evbuffer_new()) == NULL)
			abort();
		evbuffer_drain(report_text, evbuffer_get_length(report_text));
		report_capture = 1;
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	secs = (double)(t1.tv_sec - r->t0.tv_sec) + (double)(t1.tv_nsec - r->t0.tv_nsec) / 1e9;
	start = now - (time_t)secs;
	localtime_r(&start, &tm);
	strftime(ts0, sizeof(ts0), "%a %b %e %H:%M:%S %Y %Z", &tm);
	localtime_r(&now, &tm);
	strftime(ts1, sizeof(ts1), "%a %b %e %H:%M:%S %Y %Z", &tm);

	sy_out(r, "%s", "");
	sy_out(r, "++++ Statistics");
	stat_line(r, "Transfer started on", "%s", ts0);
	stat_line(r, "Transfer ended on", "%s", ts1);
	stat_line(r, "Transfer time", "%.1f sec", secs);
	stat_line(r, "Folders synced", "%u/%u synced", r->folders_synced, r->folders_total);
	if (r->o->dry)
		stat_line(r, "Messages transferred", "%llu (could be %llu without dry mode)",
		          (unsigned long long)r->transferred, (unsigned long long)r->would_copy);
	else
		stat_line(r, "Messages transferred", "%llu", (unsigned long long)r->transferred);
	stat_line(r, "Messages skipped", "%llu",
	          (unsigned long long)(r->skipped -
	                               (r->skipped >= r->retry_copied ? r->retry_copied : 0)));
	stat_line(r, "Messages found duplicate on host1", "%llu", (unsigned long long)r->dup1);
	stat_line(r, "Messages found duplicate on host2", "%llu", (unsigned long long)r->dup2);
	stat_line(r, "Messages found crossduplicate on host2", "%llu",
	          (unsigned long long)r->crossdup2);
	stat_line(r, "Messages void (noheader) on host1", "%llu", (unsigned long long)r->noheader1);
	stat_line(r, "Messages void (noheader) on host2", "%llu", (unsigned long long)r->noheader2);
	stat_line(r, "Messages found in host1 not in host2", "%llu messages",
	          (unsigned long long)r->in1_not_in2);
	stat_line(r, "Messages found in host2 not in host1", "%llu messages",
	          (unsigned long long)r->in2_not_in1);
	stat_line(r, "Messages deleted on host1", "%llu", (unsigned long long)r->deleted1);
	stat_line(r, "Messages deleted on host2", "%llu", (unsigned long long)r->deleted2);
	last_messages = r->transferred;
	last_bytes = r->bytes_transferred;
	stat_line(r, "Total bytes transferred", "%llu (%s)",
	          (unsigned long long)r->bytes_transferred,
	          sy_bytes(b1, sizeof(b1), r->bytes_transferred));
	{
		/* a folder redone after a reconnection finds what the broken
		 * attempt copied: not skipped */
		uint64_t bs = r->bytes_skipped -
		              (r->bytes_skipped >= r->retry_bytes ? r->retry_bytes : 0);

		stat_line(r, "Total bytes skipped", "%llu (%s)", (unsigned long long)bs,
		          sy_bytes(b2, sizeof(b2), bs));
	}
	stat_line(r, "Message rate", "%.1f messages/s", secs > 0 ? r->transferred / secs : 0.0);
	stat_line(r, "Average bandwidth rate", "%.1f KiB/s",
	          secs > 0 ? r->bytes_transferred / 1024.0 / secs : 0.0);
	stat_line(r, "Reconnections to host1", "%u", r->reconnects[0]);
	stat_line(r, "Reconnections to host2", "%u", r->reconnects[1]);
	stat_line(r, "Biggest message transferred", "%llu (%s)", (unsigned long long)r->biggest,
	          sy_bytes(b1, sizeof(b1), r->biggest));
	for (int i = 0; i < 2; i++) {
		if (r->sizes_done & (1 << i))
			stat_line(r,
			          i == 0 ? "Start difference host2 - host1"
			                 : "Final difference host2 - host1",
			          "%lld messages, %lld bytes (%s)", r->diff_msgs[i],
			          r->diff_bytes[i],
			          sy_bytes(b1, sizeof(b1),
			                   (uint64_t)(r->diff_bytes[i] < 0 ? -r->diff_bytes[i]
			                                                   : r->diff_bytes[i])));
	}
	stat_line(r, "Detected", "%u errors", r->nerrors);
	sy_out(r, "%s", "");

	if (!r->o->justfolders && !r->o->useuid && !r->o->justlogin) {
		uint64_t missing = r->in1_not_in2;
		/* host2 as it is now (a redone folder found the broken attempt's copies) */
		uint64_t ident2 = r->ident2 + r->transferred -
		                  (r->ident2 >= r->retry_copied ? r->retry_copied : 0);

		if (r->ident1 > 0) {
			if (missing == 0)
				sy_out(r,
				       "The sync looks good, all %llu identified messages in host1 "
				       "are "
				       "on host2.",
				       (unsigned long long)r->ident1);
			else
				sy_out(r,
				       "The sync is not finished, there are %llu among %llu "
				       "identified "
				       "messages in host1 that are not on host2.",
				       (unsigned long long)missing, (unsigned long long)r->ident1);
		}
		if (r->noheader1 > 0 && !r->o->addheader && !r->o->wholeheaderifneeded)
			sy_out(r,
			       "There are %llu unidentified messages (usually Sent or Draft "
			       "messages). They were not copied (--nowholeheaderifneeded); add "
			       "option --addheader to copy them",
			       (unsigned long long)r->noheader1);
		else if (r->noheader1 > 0 && !r->o->addheader)
			sy_out(r,
			       "There are %llu unidentified messages (usually Sent or Draft "
			       "messages). imapferry copied them under a content key; add option "
			       "--addheader for imapsync's behaviour",
			       (unsigned long long)r->noheader1);
		else
			sy_out(r, "There is no unidentified message on host1.");
		if (r->in2_not_in1 == 0)
			sy_out(r,
			       "The sync is strict, all %llu identified messages in host2 are on "
			       "host1.",
			       (unsigned long long)ident2);
		else
			sy_out(r,
			       "The sync is not strict, there are %llu among %llu identified "
			       "messages "
			       "in host2 that are not on host1. Use --delete2 and sync again to "
			       "delete "
			       "them and have a strict sync.",
			       (unsigned long long)r->in2_not_in1, (unsigned long long)ident2);
	}
	sy_out(r, "Detected %u errors", r->nerrors);
	if (r->nerrors > 0 && r->o->errorsdump) {
		sy_out(r,
		       "++++ Listing %u errors encountered during the sync ( avoid this listing "
		       "with --noerrorsdump ).",
		       r->nerrors);
		for (unsigned i = 0; i < r->nerrors; i++)
			sy_out(r, "Err %u/%u: %s", i + 1, r->nerrors, r->errors[i]);
	}
	code = exit_code(r);
	if (code != 0) {
		int best = 0;

		for (int i = 0; i < SY_ERR_COUNT; i++) {
			if (err_exit[i] == code)
				best = i;
		}
		sy_out(r, "The most frequent error is %s.", err_names[best]);
	}
	report_capture = 0;
	return code;
}

/* An RFC 5322 header value from untrusted text: CR, LF and other controls
 * become spaces. */
static void header_value(struct evbuffer *b, const char *s)
{
	for (; s != NULL && *s != '\0'; s++)
		evbuffer_add_printf(b, "%c", (unsigned char)*s < 0x20 ? ' ' : *s);
}

void sy_email_report(struct sy_run *r, int code)
{
	char host[256], date[64], from[512];
	time_t now = time(NULL);
	struct tm tm;

	if (report_text == NULL)
		return;
	if (gethostname(host, sizeof(host)) != 0)
		snprintf(host, sizeof(host), "localhost");
	host[sizeof(host) - 1] = '\0';
	localtime_r(&now, &tm);
	strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S %z", &tm);
	if (r->o->emailreportfrom != NULL && r->o->emailreportfrom[0] != '\0')
		snprintf(from, sizeof(from), "%s", r->o->emailreportfrom);
	else
		snprintf(from, sizeof(from), "imapsync@%s", host);
	for (int i = 0; i < 2; i++) {
		const struct sy_account *a = &r->o->acc[i];
		struct evbuffer *msg;
		struct sy_res res;

		if (!a->emailreport)
			continue;
		if (r->o->dry) {
			sy_out(r,
			       "Host%d: email report not appended to INBOX (not really since --dry "
			       "mode)",
			       i + 1);
			continue;
		}
		if (r->side[i].cl == NULL || imap_client_state(r->side[i].cl) != IMAP_CL_AUTHED) {
			sy_out(r, "Host%d: email report not appended: not connected", i + 1);
			continue;
		}
		if ((msg = evbuffer_new()) == NULL)
			abort();
		evbuffer_add_printf(msg, "From: ");
		header_value(msg, from);
		evbuffer_add_printf(msg, "\r\nTo: ");
		header_value(msg, a->user);
		evbuffer_add_printf(msg, "\r\nSubject: [imapsync] Report of the transfer from ");
		header_value(msg, r->o->acc[0].user);
		evbuffer_add_printf(msg, " on ");
		header_value(msg, r->o->acc[0].host);
		evbuffer_add_printf(msg, " to ");
		header_value(msg, r->o->acc[1].user);
		evbuffer_add_printf(msg, " on ");
		header_value(msg, r->o->acc[1].host);
		evbuffer_add_printf(msg,
		                    ": exit %d\r\nDate: %s\r\nMessage-ID: "
		                    "<imapferry-report.%lld.%d.%d@",
		                    code, date, (long long)now, (int)getpid(), i + 1);
		header_value(msg, host);
		evbuffer_add_printf(msg,
		                    ">\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; "
		                    "charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n");
		evbuffer_add_buffer_reference(msg, report_text);
		evbuffer_add_printf(msg, "Exiting with return value %d (%s)\r\n", code,
		                    sy_exit_text(code));
		if (sy_cmd(r, i, &res, NULL, NULL, NULL, "APPEND INBOX %L", msg) == IMAP_STATUS_OK)
			sy_out(r, "Host%d: email report appended to INBOX (--emailreport%d)", i + 1,
			       i + 1);
		else
			sy_error(r, SY_ERR_APPEND, "Host%d: could not append the email report: %s",
			         i + 1, res.text);
		evbuffer_free(msg);
	}
	evbuffer_free(report_text);
	report_text = NULL;
}
