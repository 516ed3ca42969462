/*
 * config.c - imapferry-proxy's settings: one descriptor table shared by
 * the config file (INI, libinih) and the command line, so every key has
 * the same name, type and check in both.
 */
#include <assert.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "proxy.h"
#include "routes.h"

const char *const px_up_security_names[PX_UP_SECURITY_COUNT] = {"plain", "ssl", "starttls"};
static_assert(sizeof(px_up_security_names) / sizeof(px_up_security_names[0]) ==
                      PX_UP_SECURITY_COUNT,
              "security names");

enum px_opt_type { PX_OPT_STR, PX_OPT_BOOL, PX_OPT_UINT, PX_OPT_U64, PX_OPT_SECURITY };

struct px_opt {
	const char *key;
	enum px_opt_type type;
	size_t offset;
};

#define OPT(k, t, f)                                                                               \
	{                                                                                          \
		k, t, offsetof(struct px_config, f)                                                \
	}
static const struct px_opt px_opts[] = {
        OPT("listen", PX_OPT_STR, listen),
        OPT("listen-tls", PX_OPT_STR, listen_tls),
        OPT("cert", PX_OPT_STR, cert),
        OPT("key", PX_OPT_STR, key),
        OPT("upstream", PX_OPT_STR, upstream),
        OPT("upstream-dst", PX_OPT_STR, upstream_dst),
        OPT("upstream-security", PX_OPT_SECURITY, upstream_security),
        OPT("upstream-ca", PX_OPT_STR, upstream_ca),
        OPT("upstream-noverify", PX_OPT_BOOL, upstream_noverify),
        OPT("redis", PX_OPT_STR, redis),
        OPT("http", PX_OPT_STR, http),
        OPT("allow-plaintext-login", PX_OPT_BOOL, allow_plaintext_login),
        OPT("idle-timeout", PX_OPT_UINT, idle_timeout_s),
        OPT("shutdown-grace", PX_OPT_UINT, shutdown_grace_s),
        OPT("freeze-hold", PX_OPT_UINT, freeze_hold_s),
        OPT("freeze-drain", PX_OPT_UINT, freeze_drain_s),
        OPT("max-literal", PX_OPT_U64, max_literal),
        OPT("max-line", PX_OPT_UINT, max_line),
        OPT("log-level", PX_OPT_STR, log_level),
        OPT("debug", PX_OPT_STR, debug),
        OPT("log-file", PX_OPT_STR, log_file),
        OPT("pidfile", PX_OPT_STR, pidfile),
};
#undef OPT

void px_config_defaults(struct px_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->upstream_security = PX_UP_PLAIN;
	cfg->idle_timeout_s = PX_IDLE_TIMEOUT_DEFAULT;
	cfg->shutdown_grace_s = PX_SHUTDOWN_GRACE_DEFAULT;
	cfg->freeze_hold_s = PX_FREEZE_HOLD_DEFAULT;
	cfg->freeze_drain_s = PX_FREEZE_DRAIN_DEFAULT;
	cfg->max_literal = PX_MAX_LITERAL_DEFAULT;
	cfg->max_line = PX_MAX_LINE_DEFAULT;
}

void px_config_clear(struct px_config *cfg)
{
	size_t i;

	for (i = 0; i < sizeof(px_opts) / sizeof(px_opts[0]); i++) {
		if (px_opts[i].type == PX_OPT_STR) {
			char **p = (char **)(void *)((char *)cfg + px_opts[i].offset);

			free(*p);
			*p = NULL;
		}
	}
}

static int parse_bool(const char *v, int *out)
{
	static const char *const yes[] = {"1", "yes", "true", "on"};
	static const char *const no[] = {"0", "no", "false", "off"};
	size_t i;

	for (i = 0; i < 4; i++) {
		if (strcasecmp(v, yes[i]) == 0) {
			*out = 1;
			return 0;
		}
		if (strcasecmp(v, no[i]) == 0) {
			*out = 0;
			return 0;
		}
	}
	return -1;
}

/* Accepts a plain number with an optional k/M/G suffix (binary). */
static int parse_u64(const char *v, uint64_t *out)
{
	char *end;
	unsigned long long n;

	if (*v == '-' || *v == '\0')
		return -1;
	errno = 0;
	n = strtoull(v, &end, 10);
	if (errno != 0 || end == v)
		return -1;
	switch (*end) {
	case 'k':
	case 'K':
		n <<= 10;
		end++;
		break;
	case 'm':
	case 'M':
		n <<= 20;
		end++;
		break;
	case 'g':
	case 'G':
		n <<= 30;
		end++;
		break;
	default:
		break;
	}
	if (*end != '\0')
		return -1;
	*out = n;
	return 0;
}

int px_config_set(struct px_config *cfg, const char *key, const char *value, char *err,
                  size_t errsize)
{
	size_t i;

	for (i = 0; i < sizeof(px_opts) / sizeof(px_opts[0]); i++) {
		const struct px_opt *o = &px_opts[i];
		void *field = (char *)cfg + o->offset;
		uint64_t n;
		int b, k;

		if (strcmp(o->key, key) != 0)
			continue;
		switch (o->type) {
		case PX_OPT_STR: {
			char **p = field;

			free(*p);
			*p = value[0] != '\0' ? strdup(value) : NULL;
			return 0;
		}
		case PX_OPT_BOOL:
			if (parse_bool(value, &b) < 0) {
				snprintf(err, errsize, "%s: expected yes or no, got \"%s\"", key,
				         value);
				return -1;
			}
			*(int *)field = b;
			return 0;
		case PX_OPT_UINT:
		case PX_OPT_U64:
			if (parse_u64(value, &n) < 0 ||
			    (o->type == PX_OPT_UINT && n > 0xffffffffu)) {
				snprintf(err, errsize, "%s: expected a number, got \"%s\"", key,
				         value);
				return -1;
			}
			if (o->type == PX_OPT_UINT)
				*(unsigned *)field = (unsigned)n;
			else
				*(uint64_t *)field = n;
			return 0;
		case PX_OPT_SECURITY:
			for (k = 0; k < PX_UP_SECURITY_COUNT; k++) {
				if (strcasecmp(value, px_up_security_names[k]) == 0) {
					*(int *)field = k;
					return 0;
				}
			}
			snprintf(err, errsize, "%s: expected plain, ssl or starttls, got \"%s\"",
			         key, value);
			return -1;
		}
	}
	snprintf(err, errsize, "unknown setting \"%s\"", key);
	return -1;
}
