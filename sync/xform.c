/* xform.c - see xform.h. */
#include "xform.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "regex.h"

int sy_xform_active(const struct sy_options *o)
{
	return (o->regexmess.n > 0 && !o->noregexmess) || o->pipemess.n > 0 ||
	       o->disarmreadreceipts || (sy_options_given(o, SY_OPT_TRUNCMESS) && o->truncmess > 0);
}

/* The body as a NUL-terminated malloc'd string (len bytes before the NUL). */
static char *body_string(struct evbuffer *body, size_t *len)
{
	char *s;

	*len = evbuffer_get_length(body);
	s = malloc(*len + 1);
	if (s == NULL)
		abort();
	evbuffer_copyout(body, s, *len);
	s[*len] = '\0';
	return s;
}

static void body_set(struct evbuffer *body, const char *s, size_t len)
{
	evbuffer_drain(body, evbuffer_get_length(body));
	evbuffer_add(body, s, len);
}

/* --disarmreadreceipts: in the header only, each Disposition-Notification-To
 * field gets an "X-" in front. */
static void disarm(struct evbuffer *body)
{
	size_t len, out = 0;
	char *s = body_string(body, &len), *d = malloc(len + len / 16 + 64);
	int head = 1;

	if (d == NULL)
		abort();
	for (size_t k = 0; k < len;) {
		size_t eol = k;

		while (eol < len && s[eol] != '\n')
			eol++;
		eol += eol < len; /* the line with its LF */
		if (head && (s[k] == '\r' || s[k] == '\n'))
			head = 0; /* the empty line ends the header */
		if (head && eol - k >= 28 &&
		    strncasecmp(s + k, "Disposition-Notification-To:", 28) == 0) {
			if (out + (eol - k) + 2 > len + len / 16 + 64)
				break;
			memcpy(d + out, "X-", 2);
			out += 2;
		}
		memcpy(d + out, s + k, eol - k);
		out += eol - k;
		k = eol;
	}
	if (out >= len)
		body_set(body, d, out);
	free(d);
	free(s);
}

/* Runs cmd through the shell with in as stdin; out gets stdout. Returns the
 * wait status, or -1 (errno) when it could not run. */
static int run_cmd(const char *cmd, int in, int out)
{
	pid_t pid = fork();
	int status;

	if (pid < 0)
		return -1;
	if (pid == 0) {
		int devnull = open("/dev/null", O_WRONLY);

		dup2(in, 0);
		dup2(out, 1);
		if (devnull >= 0)
			dup2(devnull, 2);
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	while (waitpid(pid, &status, 0) < 0) {
		if (errno != EINTR)
			return -1;
	}
	return status;
}

/* A temporary file in dir, unlinked at once (only its descriptor lives). */
static int tmpfile_in(const char *dir)
{
	char path[4096];
	int fd;

	snprintf(path, sizeof(path), "%s/imapferry-pipemess-XXXXXX", dir != NULL ? dir : "/tmp");
	fd = mkstemp(path);
	if (fd >= 0)
		unlink(path);
	return fd;
}

/* One --pipemess step: body through cmd. 0, or -1 with why (static). */
static int pipe_one(const char *tmpdir, const char *cmd, struct evbuffer *body, char *why,
                    size_t whysize)
{
	int in = tmpfile_in(tmpdir), out = tmpfile_in(tmpdir), status, rc = -1;
	struct stat st;

	if (in < 0 || out < 0) {
		snprintf(why, whysize, "no temporary file in %s: %s", tmpdir, strerror(errno));
		goto done;
	}
	while (evbuffer_get_length(body) > 0 && evbuffer_write(body, in) >= 0)
		;
	if (evbuffer_get_length(body) > 0 || lseek(in, 0, SEEK_SET) < 0) {
		snprintf(why, whysize, "could not write the message: %s", strerror(errno));
		goto done;
	}
	status = run_cmd(cmd, in, out);
	if (status < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		snprintf(why, whysize, "ended with %s %d",
		         status >= 0 && WIFSIGNALED(status) ? "signal" : "exit code",
		         status < 0            ? -1
		         : WIFSIGNALED(status) ? WTERMSIG(status)
		                               : WEXITSTATUS(status));
		goto done;
	}
	if (fstat(out, &st) < 0 || st.st_size == 0) {
		snprintf(why, whysize, "gave an empty message");
		goto done;
	}
	if (lseek(out, 0, SEEK_SET) < 0 || evbuffer_read(body, out, (int)st.st_size) < 0) {
		snprintf(why, whysize, "could not read its output: %s", strerror(errno));
		goto done;
	}
	while (evbuffer_get_length(body) < (size_t)st.st_size) {
		int n = evbuffer_read(body, out,
		                      (int)(st.st_size - (off_t)evbuffer_get_length(body)));

		if (n <= 0)
			break;
	}
	rc = 0;
done:
	if (in >= 0)
		close(in);
	if (out >= 0)
		close(out);
	return rc;
}

int sy_xform_pipe(const char *tmpdir, const char *cmd, struct evbuffer *body, char *why,
                  size_t whysize)
{
	return pipe_one(tmpdir, cmd, body, why, whysize);
}

int sy_xform_apply(struct sy_run *r, const struct sy_folder *f, const struct sy_msg *e,
                   struct evbuffer *body)
{
	const struct sy_options *o = r->o;

	if (!sy_xform_active(o))
		return 0;
	for (size_t k = 0; !o->noregexmess && k < o->regexmess.n; k++) {
		struct sy_subst *sub;
		const char *error;
		size_t len, seen;
		char *s;

		if (sy_subst_parse(&sub, "--regexmess", o->regexmess.v[k], &error) < 0)
			continue; /* refused at start-up */
		s = body_string(body, &len);
		seen = strlen(s); /* a NUL in the message ends what the regex sees */
		if (seen < len)
			evbuffer_drain(body, seen); /* the unseen rest stays in body */
		else
			evbuffer_drain(body, len);
		if (sy_subst_apply(sub, &s, &error) < 0) {
			sy_error(r, SY_ERR_UNCLASSIFIED, "- msg %s/%u {%u}: %s", f->name1, e->uid,
			         e->size, error);
			free(s);
			sy_subst_free(&sub);
			return -1;
		}
		evbuffer_prepend(body, s, strlen(s));
		free(s);
		sy_subst_free(&sub);
	}
	if (o->disarmreadreceipts)
		disarm(body);
	for (size_t k = 0; k < o->pipemess.n; k++) {
		char why[512];

		if (pipe_one(o->tmpdir, o->pipemess.v[k], body, why, sizeof(why)) < 0) {
			sy_error(r, SY_ERR_UNCLASSIFIED,
			         "- msg %s/%u {%u}: Failure: --pipemess command \"%s\" %s",
			         f->name1, e->uid, e->size, o->pipemess.v[k], why);
			return -1;
		}
	}
	if (sy_options_given(o, SY_OPT_TRUNCMESS) && o->truncmess > 0 &&
	    evbuffer_get_length(body) > (size_t)o->truncmess) {
		struct evbuffer *head = evbuffer_new();

		if (head == NULL)
			abort();
		evbuffer_remove_buffer(body, head, (size_t)o->truncmess);
		evbuffer_drain(body, evbuffer_get_length(body));
		evbuffer_add_buffer(body, head);
		evbuffer_free(head);
	}
	return 0;
}

static void err_add(char *err, size_t size, size_t *len, const char *text)
{
	int n;

	if (*len >= size)
		return;
	n = snprintf(err + *len, size - *len, "%s%s", *len > 0 ? "\n" : "", text);
	if (n > 0)
		*len += (size_t)n;
}

int sy_xform_check(const struct sy_options *o, char *err, size_t size, size_t *len)
{
	int bad = 0;

	for (size_t k = 0; k < o->regexmess.n; k++) {
		struct sy_subst *sub;
		const char *error;

		if (sy_subst_parse(&sub, "--regexmess", o->regexmess.v[k], &error) < 0) {
			err_add(err, size, len, error);
			bad++;
		}
		sy_subst_free(&sub);
	}
	/* the --pipemess commands, then --maxlinelengthcmd (issue 8) */
	for (size_t k = 0; o->pipemesscheck && k < o->pipemess.n + (o->maxlinelengthcmd != NULL);
	     k++) {
		struct evbuffer *b = evbuffer_new();
		char why[512], line[1200];
		const char *cmd = k < o->pipemess.n ? o->pipemess.v[k] : o->maxlinelengthcmd;

		if (b == NULL)
			abort();
		evbuffer_add(b, " ", 1);
		if (pipe_one(o->tmpdir, cmd, b, why, sizeof(why)) < 0 &&
		    strcmp(why, "gave an empty message") != 0) {
			snprintf(line, sizeof(line),
			         "--%s \"%s\" %s when given a one-space message "
			         "(--nopipemesscheck skips this check)",
			         k < o->pipemess.n ? "pipemess" : "maxlinelengthcmd", cmd, why);
			err_add(err, size, len, line);
			bad++;
		}
		evbuffer_free(b);
	}
	return bad;
}
