/*
 * log.h - leveled, printf-checked logging shared by proxy and sync.
 *
 * Messages go to stderr (or a file set with log_set_file()) as
 * "YYYY-mm-dd HH:MM:SS level: [prefix] message". Debug output is filtered by
 * category (LOG_CAT_*), enabled with log_set_debug("net,proxy").
 */
#ifndef IMAPFERRY_LOG_H
#define IMAPFERRY_LOG_H

#include <stdarg.h>
#include <stdio.h>
#include <stddef.h>

enum log_level {
	LOG_LVL_ERROR,
	LOG_LVL_WARN,
	LOG_LVL_NOTICE,
	LOG_LVL_INFO,
	LOG_LVL_DEBUG,
	LOG_LVL_COUNT
};

/* Debug categories: a bit mask. */
#define LOG_CAT_NET   0x01u
#define LOG_CAT_IMAP  0x02u
#define LOG_CAT_PROXY 0x04u
#define LOG_CAT_SYNC  0x08u
#define LOG_CAT_REDIS 0x10u
#define LOG_CAT_ALL   0xffu

#define LOG_PRINTF(f, a) __attribute__((format(printf, f, a)))

/* Messages above this level are dropped. Default LOG_LVL_NOTICE. */
void log_set_level(enum log_level level);
enum log_level log_get_level(void);

/* Parses "net,imap,proxy,sync,redis,all" into categories and enables debug
 * for them. Returns 0, or -1 with *error_r (static string) on an unknown name. */
int log_set_debug(const char *spec, const char **error_r);
/* Nonzero when debug messages of category cat are shown. */
int log_debug_enabled(unsigned cat);

/* Log destination; borrowed, stays open until changed. NULL = stderr. */
void log_set_file(FILE *fp);
/* Without timestamps (for tests and CLI output). */
void log_set_timestamps(int on);

void log_msg(enum log_level level, const char *prefix, const char *fmt, ...) LOG_PRINTF(3, 4);
void log_vmsg(enum log_level level, const char *prefix, const char *fmt, va_list ap)
        LOG_PRINTF(3, 0);

#define log_error(...)  log_msg(LOG_LVL_ERROR, NULL, __VA_ARGS__)
#define log_warn(...)   log_msg(LOG_LVL_WARN, NULL, __VA_ARGS__)
#define log_notice(...) log_msg(LOG_LVL_NOTICE, NULL, __VA_ARGS__)
#define log_info(...)   log_msg(LOG_LVL_INFO, NULL, __VA_ARGS__)
#define log_debug(cat, ...)                                                                        \
	do {                                                                                       \
		if (log_debug_enabled(cat))                                                        \
			log_msg(LOG_LVL_DEBUG, NULL, __VA_ARGS__);                                 \
	} while (0)

/*
 * Writes a printable, bounded rendering of untrusted bytes into out (size
 * outsize, always NUL-terminated): control and 8-bit bytes become "\xNN",
 * and input past max bytes is cut with "...". Returns out.
 */
char *log_sanitize(char *out, size_t outsize, const void *data, size_t len, size_t max);

#endif
