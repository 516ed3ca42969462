/*
 * prom.c - Prometheus text exposition helpers (see prom.h).
 */
#include <event2/buffer.h>

#include "imapferry/prom.h"

void prom_metric(struct evbuffer *b, const char *name, const char *type, const char *help,
                 unsigned long long value)
{
	evbuffer_add_printf(b, "# HELP %s %s\n# TYPE %s %s\n%s %llu\n", name, help, name, type,
	                    name, value);
}

void prom_labeled(struct evbuffer *b, const char *name, const char *type, const char *help,
                  const char *label, const char *const *names, const unsigned long long *values,
                  size_t n)
{
	evbuffer_add_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
	for (size_t i = 0; i < n; i++)
		evbuffer_add_printf(b, "%s{%s=\"%s\"} %llu\n", name, label, names[i], values[i]);
}

void prom_hist_observe(struct prom_hist *h, double v)
{
	size_t i = 0;

	if (!(v > 0)) /* negative, or NaN */
		v = 0;
	while (i < h->n && v > h->le[i])
		i++;
	h->counts[i]++;
	h->count++;
	h->sum += v;
}

void prom_hist_write(struct evbuffer *b, const char *name, const char *help,
                     const struct prom_hist *h)
{
	unsigned long long cum = 0;

	evbuffer_add_printf(b, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
	for (size_t i = 0; i < h->n; i++) {
		cum += h->counts[i];
		evbuffer_add_printf(b, "%s_bucket{le=\"%g\"} %llu\n", name, h->le[i], cum);
	}
	evbuffer_add_printf(b, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.3f\n%s_count %llu\n", name,
	                    h->count, name, h->sum, name, h->count);
}
