/*
 * prom.h - Prometheus text exposition (format 0.0.4) helpers for the
 * /metrics endpoints of imapferry-proxy and imapferry-sync --daemon.
 */
#ifndef IMAPFERRY_PROM_H
#define IMAPFERRY_PROM_H

struct evbuffer;

/* Appends "# HELP name help", "# TYPE name type" and "name value" to b.
 * type is "counter" or "gauge"; help must be one line. */
void prom_metric(struct evbuffer *b, const char *name, const char *type, const char *help,
                 unsigned long long value);

#endif
