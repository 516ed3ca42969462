/*
 * prom.h - Prometheus text exposition (format 0.0.4) helpers for the
 * /metrics endpoints of imapferry-proxy and imapferry-sync --daemon.
 */
#ifndef IMAPFERRY_PROM_H
#define IMAPFERRY_PROM_H

#include <stddef.h>

struct evbuffer;

/* Appends "# HELP name help", "# TYPE name type" and "name value" to b.
 * type is "counter" or "gauge"; help must be one line. */
void prom_metric(struct evbuffer *b, const char *name, const char *type, const char *help,
                 unsigned long long value);

/* One metric with a label: "name{label="names[i]"} values[i]" for i < n
 * (names are written as given: plain words). */
void prom_labeled(struct evbuffer *b, const char *name, const char *type, const char *help,
                  const char *label, const char *const *names, const unsigned long long *values,
                  size_t n);

/* A histogram: upper bounds le[0..n) ascending (+Inf is implied); counts
 * has n + 1 slots (the last for above le[n-1]), all zero to begin with. */
struct prom_hist {
	const double *le;
	size_t n;
	unsigned long long *counts;
	unsigned long long count;
	double sum;
};

/* Counts one observation of v (negative values count as 0). */
void prom_hist_observe(struct prom_hist *h, double v);

/* Appends the histogram: cumulative name_bucket{le=...} lines, +Inf,
 * name_sum and name_count. */
void prom_hist_write(struct evbuffer *b, const char *name, const char *help,
                     const struct prom_hist *h);

#endif
