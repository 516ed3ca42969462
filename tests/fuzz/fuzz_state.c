/*
 * fuzz_state.c - libFuzzer target for the sync state's text form
 * (sync/state.c): the "F ..." folder lines and "M ..." UID map lines that
 * the state file, the Redis hash and --parallel's workers carry.
 *
 * Input: lines. Each is merged into a state (sy_state_merge_line(), as the
 * parent merges a worker's lines), then every folder of that state is
 * written out (sy_state_dump()) and the text merged into a second state.
 * Oracle: besides ASan/UBSan/LSan, every UID map handed out is usable (uid1
 * never descends, no UID 0), the second state writes exactly the same text
 * as the first (what is written reads back as itself), and a rename of the
 * first folder keeps the folder count.
 *
 * Built with clang -fsanitize=fuzzer when IMAPFERRY_FUZZ=ON; with gcc, the
 * same function is linked into fuzz_replay.c, which runs the seed corpus in
 * ctest.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "options.h"
#include "sync.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct sy_options opts;
static struct sy_run run;

static void setup(void)
{
	static int done;

	if (done)
		return;
	done = 1;
	sy_options_init(&opts);
	/* no Redis, a state directory that does not exist: an empty state */
	free(opts.tmpdir); /* (the options keep their strings: static, reachable) */
	opts.tmpdir = strdup("/nonexistent/imapferry-fuzz-state");
	opts.acc[0].host = strdup("fuzz-src");
	opts.acc[1].host = strdup("fuzz-dst");
	if (opts.tmpdir == NULL || opts.acc[0].host == NULL || opts.acc[1].host == NULL)
		abort();
	run.o = &opts;
}

/* Every UID map handed out is usable: uid1 never descends (lookups
 * bisect it), no UID is 0. */
static void check_maps(struct sy_state *s)
{
	for (size_t k = 0; k < sy_state_nfolders(s); k++) {
		struct sy_folder f;
		struct sy_fstatus st[2];
		struct sy_uidpair *pairs;
		const char *n1, *n2;
		size_t n;

		memset(&f, 0, sizeof(f));
		if (sy_state_folder(s, k, &n1, &n2, st) < 0)
			continue;
		f.name1 = (char *)n1;
		f.name2 = (char *)n2;
		if (sy_state_map_get(s, &f, st[0].uidvalidity, st[1].uidvalidity, &pairs, &n) < 0)
			continue;
		for (size_t i = 0; i < n; i++) {
			if (pairs[i].uid1 == 0 || pairs[i].uid2 == 0 ||
			    (i > 0 && pairs[i].uid1 < pairs[i - 1].uid1))
				abort();
		}
		free(pairs);
	}
}

/* Every folder of s written as text (malloc'd, NUL-terminated). */
static char *dump(struct sy_state *s)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *fp = open_memstream(&buf, &len);

	if (fp == NULL)
		abort();
	for (size_t k = 0; k < sy_state_nfolders(s); k++) {
		struct sy_folder f;
		struct sy_fstatus st[2];
		const char *n1, *n2;

		memset(&f, 0, sizeof(f));
		if (sy_state_folder(s, k, &n1, &n2, st) < 0)
			continue;
		f.name1 = (char *)n1;
		f.name2 = (char *)n2;
		sy_state_dump(s, &f, fp);
	}
	fclose(fp);
	return buf;
}

static void merge_text(struct sy_state *s, char *text)
{
	char *save = NULL;

	for (char *line = strtok_r(text, "\n", &save); line != NULL;
	     line = strtok_r(NULL, "\n", &save))
		sy_state_merge_line(s, line);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sy_state *a, *b;
	char *text = malloc(size + 1), *out_a, *out_b;

	if (text == NULL)
		abort();
	setup();
	memcpy(text, data, size);
	text[size] = '\0'; /* a NUL inside ends the input */
	a = sy_state_load(&run);
	b = sy_state_load(&run);
	merge_text(a, text);
	check_maps(a);
	out_a = dump(a);
	merge_text(b, out_a); /* (strtok_r cuts out_a: dumped again below) */
	free(out_a);
	out_a = dump(a);
	out_b = dump(b);
	if (strcmp(out_a, out_b) != 0)
		abort(); /* what was written does not read back as itself */
	if (sy_state_nfolders(a) > 0) {
		const char *n1, *n2;
		struct sy_fstatus st[2];
		size_t n = sy_state_nfolders(a);

		if (sy_state_folder(a, 0, &n1, &n2, st) == 0) {
			char *o1 = strdup(n1), *o2 = strdup(n2);

			if (o1 == NULL || o2 == NULL)
				abort();
			sy_state_rename(a, o1, o2, "Renamed", "Renamed", '.', '/');
			if (sy_state_nfolders(a) != n)
				abort();
			free(o1);
			free(o2);
		}
	}
	free(out_a);
	free(out_b);
	sy_state_free(&a);
	sy_state_free(&b);
	free(text);
	return 0;
}
