/*
 * parse_render.h - renders the event stream of an imap_parser as text, so
 * tests can compare parses (whole input vs. split input) and state wants in
 * a readable form. Used by unit tests and by the fuzz target's oracle.
 */
#ifndef FERRY_PARSE_RENDER_H
#define FERRY_PARSE_RENDER_H

#include <stddef.h>

#include "imapferry/parse.h"

/*
 * Feeds data to a new parser (mode, limits) in chunks: chunk sizes are
 * taken from cuts[0..ncuts) in turn (0 or ncuts = 0 means all at once),
 * and renders every event, one per line. raw_after: when a command whose
 * name equals it (e.g. "IDLE") completes, the parser goes to raw mode for
 * one line. Returns a malloc'd string; caller frees.
 */
char *parse_render(enum imap_parse_mode mode, const struct imap_limits *limits, const char *data,
                   size_t len, const size_t *cuts, size_t ncuts);

#endif
