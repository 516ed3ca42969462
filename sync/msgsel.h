/*
 * msgsel.h - imapsync's message selection (issue 8, docs section 5):
 * --maxsize/--minsize and host2's APPENDLIMIT (--appendlimit), the
 * --maxage/--minage window (SENTSINCE/SENTBEFORE on the Date: header, or
 * INTERNALDATE under --noabletosearch), --search/--search1/--search2, and
 * the checks that need the body: --skipmess, --maxlinelength,
 * --minmaxlinelength. Private to imapferry-sync.
 *
 * A window (age or search) removes the messages outside it from a side's
 * list, on both sides, so that nothing outside it is copied, counted or
 * deleted (--delete2 works within the window, as in imapsync). A size or
 * body rule only stops the copy: the message stays identified, so its
 * host2 copy is never taken for an extra one.
 */
#ifndef IMAPFERRY_SYNC_MSGSEL_H
#define IMAPFERRY_SYNC_MSGSEL_H

#include <stddef.h>

#include "msgs.h"
#include "sync.h"

struct evbuffer;

/* Nonzero when an age or search window is in force (the incremental pass
 * then gives way to the full pass). */
int sy_select_window_active(const struct sy_options *o);

/* imapsync's --checknoabletosearch (on by default): when the run selects
 * by age with SEARCH, the message count of INBOX by EXAMINE is compared
 * with its UID SEARCH ALL count on each side that can search; if one
 * differs, "At least one account can not SEARCH ALL. So acting like
 * --noabletosearch" and both sides compute ages from INTERNALDATE. Costs
 * two commands per side, only with --maxage/--minage. */
void sy_select_check_search(struct sy_run *r);

/* Keeps in m (side i, read by sy_read_side()) only the messages inside
 * the window: UID SEARCH with the criteria, or INTERNALDATE ages without
 * SEARCH. 0, or -1 when the SEARCH failed (error recorded: the folder pair
 * is not synced, and nothing is deleted in it). */
int sy_select_window(struct sy_run *r, int i, const struct sy_folder *f, struct sy_msgs *m);

/* The size limit of host2 copies: --maxsize, lowered by host2's
 * APPENDLIMIT (or --appendlimit, which replaces the capability); 0 = none. */
unsigned long long sy_select_maxsize(const struct sy_run *r);

/* Marks (sy_msg.skip) and reports m1's messages to copy that --maxsize,
 * APPENDLIMIT or --minsize exclude; they count as skipped. */
void sy_select_sizes(struct sy_run *r, const struct sy_folder *f, struct sy_msgs *m1);

/* Nonzero when a rule needs each message's body before its APPEND (then
 * bodies are not streamed). */
int sy_select_needs_body(const struct sy_options *o);

/* The body rules on a fetched message: 1 when it is skipped (said,
 * counted, e->skip set) or when --maxlinelengthcmd failed on it (error
 * recorded, e->skip not set: it stays "not on host2"), 0 to copy it (body
 * possibly rewritten by --maxlinelengthcmd). */
int sy_select_body(struct sy_run *r, const struct sy_folder *f, struct sy_msg *e,
                   struct evbuffer *body);

#endif
