/*
 * fuzz_parser.c - libFuzzer target for the IMAP parser (lib/parse.c).
 *
 * Input: byte 0 picks the mode (bit 0: client/server) and the limits (bit 1:
 * tiny limits that make every limit path reachable); byte 1 picks a split
 * point; the rest is the stream. Oracle: besides ASan/UBSan, the rendering
 * of the events must be the same whether the stream is fed whole, split in
 * two, or in 3-byte chunks (the parser must not depend on how TCP cuts).
 *
 * Built with clang -fsanitize=fuzzer when IMAPFERRY_FUZZ=ON; with gcc, the
 * same function is linked into fuzz_replay.c, which runs the seed corpus
 * in ctest.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "imapferry/parse.h"
#include "parse_render.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct imap_limits tiny = {.max_line = 40,
	                           .max_inline_literal = 8,
	                           .max_literal = 64,
	                           .max_msg = 600,
	                           .max_depth = 4,
	                           .max_args = 12};
	const struct imap_limits *lim;
	enum imap_parse_mode mode;
	size_t cut, three = 3;
	char *whole, *split, *small;

	if (size < 2)
		return 0;
	mode = (data[0] & 1) ? IMAP_PARSE_CLIENT : IMAP_PARSE_SERVER;
	lim = (data[0] & 2) ? &tiny : NULL;
	cut = data[1];
	data += 2;
	size -= 2;

	whole = parse_render(mode, lim, (const char *)data, size, NULL, 0);
	{
		size_t cuts[2] = {cut == 0 ? 1 : cut, size};

		split = parse_render(mode, lim, (const char *)data, size, cuts, 2);
	}
	small = parse_render(mode, lim, (const char *)data, size, &three, 1);
	if (strcmp(whole, split) != 0 || strcmp(whole, small) != 0)
		abort(); /* the parse depends on how the input was cut */
	free(whole);
	free(split);
	free(small);
	return 0;
}
