/* log.c - see include/imapferry/log.h */
#include "imapferry/log.h"

#include <string.h>
#include <strings.h>
#include <time.h>

static enum log_level cur_level = LOG_LVL_NOTICE;
static unsigned debug_cats;
static FILE *log_fp;
static int log_ts = 1;

static const char *const level_names[] = {"error", "warning", "notice", "info", "debug"};
_Static_assert(sizeof(level_names) / sizeof(level_names[0]) == LOG_LVL_COUNT, "level names");

void log_set_level(enum log_level level)
{
	cur_level = level;
}

enum log_level log_get_level(void)
{
	return cur_level;
}

int log_set_debug(const char *spec, const char **error_r)
{
	static const struct {
		const char *name;
		unsigned cat;
	} cats[] = {{"net", LOG_CAT_NET},   {"imap", LOG_CAT_IMAP},   {"proxy", LOG_CAT_PROXY},
	            {"sync", LOG_CAT_SYNC}, {"redis", LOG_CAT_REDIS}, {"all", LOG_CAT_ALL}};
	unsigned mask = 0;
	const char *p = spec;

	while (*p != '\0') {
		size_t n = strcspn(p, ", ");
		size_t i;

		if (n > 0) {
			for (i = 0; i < sizeof(cats) / sizeof(cats[0]); i++) {
				if (strlen(cats[i].name) == n &&
				    strncasecmp(p, cats[i].name, n) == 0)
					break;
			}
			if (i == sizeof(cats) / sizeof(cats[0])) {
				*error_r = "unknown debug category (use net, imap, proxy, sync, "
				           "redis or all)";
				return -1;
			}
			mask |= cats[i].cat;
		}
		p += n;
		if (*p != '\0')
			p++;
	}
	debug_cats |= mask;
	if (mask != 0)
		cur_level = LOG_LVL_DEBUG;
	return 0;
}

int log_debug_enabled(unsigned cat)
{
	return cur_level >= LOG_LVL_DEBUG && (debug_cats & cat) != 0;
}

void log_set_file(FILE *fp)
{
	log_fp = fp;
}

void log_set_timestamps(int on)
{
	log_ts = on;
}

void log_vmsg(enum log_level level, const char *prefix, const char *fmt, va_list ap)
{
	FILE *fp = log_fp != NULL ? log_fp : stderr;
	char ts[32] = "";

	if (level > cur_level)
		return;
	if (log_ts) {
		time_t now = time(NULL);
		struct tm tm;

		localtime_r(&now, &tm);
		strftime(ts, sizeof(ts), "%Y-%m-%d %H:%M:%S ", &tm);
	}
	fprintf(fp, "%s%s: ", ts, level_names[level]);
	if (prefix != NULL && prefix[0] != '\0')
		fprintf(fp, "[%s] ", prefix);
	vfprintf(fp, fmt, ap);
	fputc('\n', fp);
	fflush(fp);
}

void log_msg(enum log_level level, const char *prefix, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vmsg(level, prefix, fmt, ap);
	va_end(ap);
}

char *log_sanitize(char *out, size_t outsize, const void *data, size_t len, size_t max)
{
	const unsigned char *s = data;
	size_t o = 0, i;

	if (outsize == 0)
		return out;
	for (i = 0; i < len && i < max; i++) {
		if (s[i] >= 0x20 && s[i] < 0x7f && s[i] != '\\') {
			if (o + 1 >= outsize)
				break;
			out[o++] = (char)s[i];
		} else {
			if (o + 4 >= outsize)
				break;
			snprintf(out + o, outsize - o, "\\x%02x", s[i]);
			o += 4;
		}
	}
	if (i < len && o + 3 < outsize) {
		memcpy(out + o, "...", 3);
		o += 3;
	}
	out[o] = '\0';
	return out;
}
