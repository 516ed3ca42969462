/*
 * xform.h - imapsync's message transforms (issue 8, docs section 6), in its
 * order, on a fetched body before its APPEND: --regexmess (Perl s/// on the
 * whole message, regex.h), --disarmreadreceipts (Disposition-Notification-To
 * renamed X-Disposition-Notification-To in the header), --pipemess (a chain
 * of shell commands; the message goes through files in --tmpdir), then
 * --truncmess. Bytes are otherwise kept as they are: imapsync's rewrite of
 * bare LF to CRLF is not done (the copy stays byte-exact; servers accept
 * both). Private to imapferry-sync.
 */
#ifndef IMAPFERRY_SYNC_XFORM_H
#define IMAPFERRY_SYNC_XFORM_H

#include <stddef.h>

#include "msgs.h"
#include "sync.h"

struct evbuffer;

/* Nonzero when a transform is asked for (bodies are then not streamed). */
int sy_xform_active(const struct sy_options *o);

/* Applies the transforms to body. 0, or -1 when one failed for this
 * message (error recorded; the message is not copied, the run goes on). */
int sy_xform_apply(struct sy_run *r, const struct sy_folder *f, const struct sy_msg *e,
                   struct evbuffer *body);

/* body through the shell command cmd (stdin and stdout are unlinked files
 * in tmpdir): 0, or -1 with why (a non-zero exit, a signal, an empty
 * output); --pipemess and --maxlinelengthcmd. */
int sy_xform_pipe(const char *tmpdir, const char *cmd, struct evbuffer *body, char *why,
                  size_t whysize);

/* Start-up check: every --regexmess parsed (and run once), every
 * --pipemess, and --maxlinelengthcmd, run on a one-space message unless
 * --nopipemesscheck (it must exit 0). Lines appended to err at *len;
 * returns the number of bad ones. */
int sy_xform_check(const struct sy_options *o, char *err, size_t size, size_t *len);

#endif
