/*
 * xalloc.h - allocation that cannot fail: out of memory aborts (the
 * project's rule: a process that cannot allocate a few bytes cannot go on
 * safely, and every caller checking NULL is noise).
 */
#ifndef IMAPFERRY_XALLOC_H
#define IMAPFERRY_XALLOC_H

#include <stdlib.h>
#include <string.h>

static inline void *xmalloc(size_t n)
{
	void *p = malloc(n);

	if (p == NULL)
		abort();
	return p;
}

static inline void *xcalloc(size_t n, size_t size)
{
	void *p = calloc(n, size);

	if (p == NULL)
		abort();
	return p;
}

/* A copy of s; NULL gives "". */
static inline char *xstrdup(const char *s)
{
	char *d = strdup(s != NULL ? s : "");

	if (d == NULL)
		abort();
	return d;
}

#endif
