#!/usr/bin/env bash
# Runs the whole bbits test suite on a fresh Debian 12 machine (as root):
# installs missing Debian packages, builds (Release, ccache) into build/ and
# runs every suite through ctest; then rebuilds the torch-free parts as the
# lean runtime (no oneDNN, no OpenMP) with AddressSanitizer +
# UndefinedBehaviorSanitizer and runs their suites; then builds the lean
# runtime's tests with ThreadSanitizer and runs the session tests (one Model
# shared across threads, thread pools); then cross-builds for
# AArch64 and runs the kernel, format, runtime and converter suites under
# qemu on CPUs with and without the NEON dot product (scripts/test-arm64.sh);
# then builds the libFuzzer targets with clang and runs each for a while.
#
#   scripts/test.sh                 everything
#   BBITS_SKIP_SANITIZE=1 scripts/test.sh   skip the sanitizer (lean) build
#   BBITS_SKIP_TSAN=1 scripts/test.sh       skip the ThreadSanitizer (lean) build of the session tests
#   BBITS_SKIP_ARM64=1 scripts/test.sh      skip the AArch64 cross-build and emulated runs
#   BBITS_SKIP_FUZZ=1 scripts/test.sh       skip the fuzzers
#   BBITS_FUZZ_SECONDS=N            seconds per fuzz target (default 20)
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

bbits_install_deps
cd "$BBITS_ROOT"
logdir="$BBITS_BUILD/test-logs"
mkdir -p "$logdir"
start=$(date +%s)
status=0
summary=()

run_ctest() {  # name build_dir
  local name="$1" dir="$2" log="$logdir/ctest-$1.log"
  echo "== ctest ($name)"
  if ctest --test-dir "$dir" -j "$BBITS_JOBS" --output-on-failure --timeout 900 2>&1 | tee "$log"; then :; else status=1; fi
  local line
  line=$(grep -E "tests passed, [0-9]+ tests? failed out of" "$log" | tail -1 || true)
  summary+=("$name: ${line:-no ctest summary}")
  local failed total
  failed=$(sed -nE 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\1/p' <<<"$line")
  total=$(sed -nE 's/.* failed out of ([0-9]+).*/\1/p' <<<"$line")
  TOTAL_PASSED=$((TOTAL_PASSED + ${total:-0} - ${failed:-0}))
  TOTAL_FAILED=$((TOTAL_FAILED + ${failed:-1}))
}
TOTAL_PASSED=0
TOTAL_FAILED=0

echo "== configure + build (Release) in $BBITS_BUILD"
bbits_configure "$BBITS_BUILD" -DBBITS_TESTS=ON -DBBITS_BENCH=ON -DBBITS_TRAINING=ON
bbits_build "$BBITS_BUILD"
run_ctest release "$BBITS_BUILD"

if [[ -z "${BBITS_SKIP_SANITIZE:-}" ]]; then
  # Also the lean runtime: -DBBITS_WITH_ONEDNN=OFF, every layer on our kernels.
  echo "== configure + build (ASan + UBSan, no LibTorch, lean: no oneDNN) in $BBITS_BUILD-asan"
  bbits_configure "$BBITS_BUILD-asan" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBBITS_SANITIZE=ON \
    -DBBITS_TESTS=ON -DBBITS_BENCH=OFF -DBBITS_TRAINING=OFF -DBBITS_WITH_ONEDNN=OFF
  bbits_build "$BBITS_BUILD-asan"
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    run_ctest sanitizers-lean "$BBITS_BUILD-asan"
fi

if [[ -z "${BBITS_SKIP_TSAN:-}" ]]; then
  # ThreadSanitizer on the lean runtime (OpenMP, which oneDNN would bring,
  # is not TSan-instrumented): the session tests, which share one Model
  # across threads and split layers over sessions' thread pools.
  echo "== configure + build (ThreadSanitizer, lean) in $BBITS_BUILD-tsan"
  tsan_start=$(date +%s)
  bbits_configure "$BBITS_BUILD-tsan" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBBITS_TSAN=ON \
    -DBBITS_TESTS=ON -DBBITS_BENCH=OFF -DBBITS_TRAINING=OFF -DBBITS_WITH_ONEDNN=OFF
  bbits_build "$BBITS_BUILD-tsan" --target runtime_test
  log="$logdir/ctest-tsan.log"
  echo "== ctest (tsan: Session tests)"
  if TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
       ctest --test-dir "$BBITS_BUILD-tsan" -R '^Session\.' -j "$BBITS_JOBS" --output-on-failure --timeout 900 \
       2>&1 | tee "$log"; then :; else status=1; fi
  line=$(grep -E "tests passed, [0-9]+ tests? failed out of" "$log" | tail -1 || true)
  summary+=("tsan ($(( $(date +%s) - tsan_start )) s): ${line:-no ctest summary}")
  t_failed=$(sed -nE 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\1/p' <<<"$line")
  t_total=$(sed -nE 's/.* failed out of ([0-9]+).*/\1/p' <<<"$line")
  TOTAL_PASSED=$((TOTAL_PASSED + ${t_total:-0} - ${t_failed:-0}))
  TOTAL_FAILED=$((TOTAL_FAILED + ${t_failed:-1}))
fi

if [[ -z "${BBITS_SKIP_ARM64:-}" ]]; then
  echo "== AArch64: cross-build + suites under qemu (scripts/test-arm64.sh)"
  log="$logdir/arm64.log"
  if BBITS_ARM64_BUILD="$BBITS_BUILD-arm64" "$BBITS_ROOT/scripts/test-arm64.sh" 2>&1 | tee "$log"; then :; else status=1; fi
  line=$(grep -E "^== arm64 summary" "$log" | tail -1 || true)
  summary+=("arm64 (qemu): ${line#== arm64 summary }")
  a_passed=$(sed -nE 's/.*: ([0-9]+) passed, ([0-9]+) failed.*/\1/p' <<<"$line")
  a_failed=$(sed -nE 's/.*: ([0-9]+) passed, ([0-9]+) failed.*/\2/p' <<<"$line")
  TOTAL_PASSED=$((TOTAL_PASSED + ${a_passed:-0}))
  TOTAL_FAILED=$((TOTAL_FAILED + ${a_failed:-1}))
fi

if [[ -z "${BBITS_SKIP_FUZZ:-}" ]]; then
  echo "== configure + build (libFuzzer, clang) in $BBITS_BUILD-fuzz"
  CC=clang CXX=clang++ bbits_configure "$BBITS_BUILD-fuzz" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBBITS_FUZZ=ON \
    -DBBITS_TESTS=ON -DBBITS_BENCH=OFF -DBBITS_TRAINING=OFF
  bbits_build "$BBITS_BUILD-fuzz" --target bbits_fuzzers
  secs="${BBITS_FUZZ_SECONDS:-20}"
  fuzz_failed=0
  fuzz_ran=0
  for f in "$BBITS_BUILD-fuzz"/bin/fuzz_*; do
    [[ -x "$f" ]] || continue
    name=$(basename "$f")
    corpus="$BBITS_BUILD-fuzz/fuzz-corpus/$name"
    mkdir -p "$corpus"
    seeds="$BBITS_BUILD-fuzz/fuzz-seeds/$name"
    echo "== $name for ${secs}s"
    fuzz_ran=$((fuzz_ran + 1))
    if "$f" -max_total_time="$secs" -rss_limit_mb=4096 -print_final_stats=1 "$corpus" \
         $( [[ -d "$seeds" ]] && echo "$seeds" ) >"$logdir/$name.log" 2>&1; then
      tail -n 3 "$logdir/$name.log"
    else
      echo "!! $name found a problem:"; tail -n 40 "$logdir/$name.log"; fuzz_failed=$((fuzz_failed + 1)); status=1
    fi
  done
  summary+=("fuzz: $fuzz_ran targets, $fuzz_failed failed")
  TOTAL_PASSED=$((TOTAL_PASSED + fuzz_ran - fuzz_failed))
  TOTAL_FAILED=$((TOTAL_FAILED + fuzz_failed))
fi

echo "== summary ($(( $(date +%s) - start )) s)"
printf '   %s\n' "${summary[@]}"
echo "tests: $TOTAL_PASSED passed, $TOTAL_FAILED failed"
exit $status
