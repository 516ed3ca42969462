#!/usr/bin/env bash
# imapferry's test command (README "Testing"): installs what is missing,
# checks formatting and runs cppcheck, builds from scratch twice (release
# with -Werror, and ASan+UBSan), and runs every test in both builds: unit
# tests, the fuzz corpus replay, and the integration tests against real
# Dovecot and Redis servers that the harness starts on free loopback ports.
#
#   scripts/test.sh            everything (what CI runs)
#   scripts/test.sh --quick    release build and tests only
# Environment: FERRY_FUZZ_SECONDS=N also runs libFuzzer for N s (needs clang).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
ferry_install_deps

quick=0
[ "${1:-}" = "--quick" ] && quick=1
jobs=$(nproc 2>/dev/null || echo 2)
passed=0
failed=0
failures=

step() { printf '\n==== %s\n' "$*"; }

# ctest with its own summary; adds its counts to the totals.
run_ctest() {
  local dir=$1 out rc=0 total nfail
  out=$(cd "$dir" && ctest --output-on-failure -j1 2>&1) || rc=$?
  printf '%s\n' "$out" | tail -n 40
  # each failed test's own output (its last 60 lines), shown again at the end
  failures+=$(printf '%s\n' "$out" | awk -v build="$dir" '
    /Test +#[0-9]+:.*\*\*\*(Failed|Timeout|Exception)/ {
      if (on) flush(); name = $0; n = 0; on = 1; next }
    on && (/^ *Start +[0-9]+:/ || /tests passed, /) { flush(); on = 0; next }
    on { buf[n++ % 60] = $0 }
    function flush(  i, from) {
      printf "\n---- [%s] %s\n", build, name
      from = n > 60 ? n - 60 : 0
      for (i = from; i < n; i++) print buf[i % 60]
      n = 0
    }
    END { if (on) flush() }')
  total=$(printf '%s\n' "$out" | sed -n 's/.*tests passed, \([0-9]*\) tests failed out of \([0-9]*\).*/\2/p' | tail -1)
  nfail=$(printf '%s\n' "$out" | sed -n 's/.*tests passed, \([0-9]*\) tests failed out of \([0-9]*\).*/\1/p' | tail -1)
  total=${total:-0}
  nfail=${nfail:-0}
  if [ "$rc" -ne 0 ] && [ "$nfail" -eq 0 ]; then nfail=1; fi
  passed=$((passed + total - nfail))
  failed=$((failed + nfail))
  return "$rc"
}

status=0
if [ "$quick" -eq 0 ]; then
  step "clang-format (house style, .clang-format)"
  mapfile -t srcs < <(git ls-files --cached --others --exclude-standard '*.c' '*.h' 2>/dev/null || find lib include proxy sync tests -name '*.[ch]')
  if clang-format --dry-run -Werror "${srcs[@]}"; then echo "formatting ok (${#srcs[@]} files)"; else status=1; fi

  step "cppcheck"
  if cppcheck --quiet --error-exitcode=1 --std=c11 --enable=warning,performance,portability \
       --inline-suppr --suppress=missingIncludeSystem -I include lib proxy sync 2>&1; then
    echo "cppcheck ok"
  else
    status=1
  fi

  step "docker-compose.yml (validated, not run: no Docker engine here)"
  if docker-compose -f docker-compose.yml config -q; then echo "docker-compose.yml ok"; else status=1; fi
fi

step "release build (-O2 -g -Werror)"
rm -rf build
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DIMAPFERRY_WERROR=ON >/dev/null
cmake --build build -j"$jobs" 2>&1 | grep -Ev '^\[ *[0-9]+%\]' || true
[ -x build/tests/unit/test_parse ] || { echo "build failed"; exit 1; }
step "tests (release)"
run_ctest build || status=1

if [ "$quick" -eq 0 ]; then
  step "ASan + UBSan build"
  rm -rf build-asan
  cmake -S . -B build-asan -DIMAPFERRY_ASAN=ON -DIMAPFERRY_WERROR=ON >/dev/null
  cmake --build build-asan -j"$jobs" 2>&1 | grep -Ev '^\[ *[0-9]+%\]' || true
  [ -x build-asan/tests/unit/test_parse ] || { echo "ASan build failed"; exit 1; }
  step "tests (ASan + UBSan)"
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    run_ctest build-asan || status=1
fi

if [ "${FERRY_FUZZ_SECONDS:-0}" -gt 0 ]; then
  step "libFuzzer, ${FERRY_FUZZ_SECONDS} s"
  scripts/fuzz.sh "$FERRY_FUZZ_SECONDS" || status=1
fi

if [ -n "$failures" ]; then
  step "output of the failed tests"
  printf '%s\n' "$failures"
fi
echo
echo "imapferry: $passed passed, $failed failed"
exit "$status"
