/* ferry_env.c - see ferry_env.h */
#include "ferry_env.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_VARS 128

static struct {
	char *key, *value;
} vars[MAX_VARS];
static int nvars = -1;

/* One shell word with '...' and "..." quoting (what shlex.quote writes). */
static char *unquote(const char *s)
{
	char *out = malloc(strlen(s) + 1), *o = out;

	if (out == NULL)
		abort();
	while (*s != '\0' && *s != '\n') {
		if (*s == '\'') {
			for (s++; *s != '\0' && *s != '\''; s++)
				*o++ = *s;
			if (*s == '\'')
				s++;
		} else if (*s == '"') {
			for (s++; *s != '\0' && *s != '"'; s++) {
				if (*s == '\\' && s[1] != '\0')
					s++;
				*o++ = *s;
			}
			if (*s == '"')
				s++;
		} else {
			*o++ = *s++;
		}
	}
	*o = '\0';
	return out;
}

int ferry_env_load(void)
{
	const char *dir = getenv("FERRY_ENV_DIR");
	char path[4096], line[8192];
	FILE *fp;

	if (nvars >= 0)
		return 0;
	if (dir == NULL) {
		fprintf(stderr,
		        "FERRY_ENV_DIR is not set: run through ctest (fixture ferry_servers)\n");
		return -1;
	}
	snprintf(path, sizeof(path), "%s/env", dir);
	fp = fopen(path, "r");
	if (fp == NULL) {
		fprintf(stderr, "cannot read %s: did the harness start?\n", path);
		return -1;
	}
	nvars = 0;
	while (fgets(line, sizeof(line), fp) != NULL && nvars < MAX_VARS) {
		char *eq = strchr(line, '=');

		if (line[0] == '#' || eq == NULL)
			continue;
		*eq = '\0';
		vars[nvars].key = strdup(line);
		vars[nvars].value = unquote(eq + 1);
		nvars++;
	}
	fclose(fp);
	return 0;
}

const char *ferry_env_get(const char *key)
{
	if (ferry_env_load() < 0)
		return NULL;
	for (int i = 0; i < nvars; i++) {
		if (strcmp(vars[i].key, key) == 0)
			return vars[i].value;
	}
	return NULL;
}

const char *ferry_env_password(const char *user)
{
	static char pw[256];
	const char *users = ferry_env_get("FERRY_USERS"), *p;
	size_t ulen = strlen(user);

	for (p = users; p != NULL && *p != '\0';) {
		const char *end = strchr(p, ' ');
		size_t n = end != NULL ? (size_t)(end - p) : strlen(p);

		if (n > ulen && strncmp(p, user, ulen) == 0 && p[ulen] == ':' &&
		    n - ulen - 1 < sizeof(pw)) {
			memcpy(pw, p + ulen + 1, n - ulen - 1);
			pw[n - ulen - 1] = '\0';
			return pw;
		}
		p = end != NULL ? end + 1 : NULL;
	}
	return NULL;
}
