#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan) and fuzzes the IMAP
# parser for N seconds (default 600), starting from the seed corpus.
#   scripts/fuzz.sh [SECONDS] [parser|observe|state]
# observe = the proxy's observer behind both parsers (tests/fuzz/fuzz_observe.c);
# state = the sync state's folder and UID map lines (tests/fuzz/fuzz_state.c).
# Findings land in build-fuzz/findings/; the grown corpus in build-fuzz/corpus/
# (build-fuzz/corpus-observe/, build-fuzz/corpus-state/ for the others).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-600}
target=${2:-parser}
corpus=build-fuzz/corpus
[ "$target" = parser ] || corpus=build-fuzz/corpus-$target
CC=clang cmake -S . -B build-fuzz -DIMAPFERRY_FUZZ=ON -DIMAPFERRY_ASAN=ON >/dev/null
cmake --build build-fuzz -j"$(nproc)" --target "fuzz_$target" >/dev/null
mkdir -p "$corpus" build-fuzz/findings
cp -n tests/fuzz/corpus/"$target"/* "$corpus"/ 2>/dev/null || true
build-fuzz/tests/fuzz/"fuzz_$target" -dict=tests/fuzz/imap.dict -max_len=4096 \
  -max_total_time="$secs" -print_final_stats=1 -artifact_prefix=build-fuzz/findings/ \
  "$corpus"
