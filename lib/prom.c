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
