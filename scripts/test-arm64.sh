#!/usr/bin/env bash
# Cross-builds bbits for AArch64 (Debian's cross toolchain, :arm64 libraries,
# cmake/aarch64-linux-gnu.cmake) into build-arm64/ with ccache, and runs the
# kernel, format, runtime and converter suites under qemu-aarch64 twice: on a
# CPU with the dot product (-cpu max: the NEON_DOTPROD kernels) and on a
# Cortex-A53 (no dot product: the plain NEON kernels). Each run checks that
# the machine detects the level it should (ctest Cpu.DetectsTheExpectedIsa,
# BBITS_EXPECT_ISA) and that the runtime's plan says so (BBITS_VERBOSE).
# Installs what is missing as root (scripts/common.sh).
#
#   scripts/test-arm64.sh
#   BBITS_ARM64_BUILD=DIR            build directory (default build-arm64)
#   BBITS_ARM64_CPUS="max cortex-a53"  the emulated CPUs
#   BBITS_ARM64_ONEDNN=OFF           the lean build (default ON: with oneDNN, as on x86-64)
#
# BBITS_TEST_EMULATED=1 lets the whole-network evaluations of the converter
# tests run on fewer images (tests/converter/test_util.h:
# images_to_evaluate); the kernel sweeps run in full. Tests that start one of
# our programs run it under the same emulator (BBITS_TEST_LAUNCHER,
# tests/CMakeLists.txt): the host needs no binfmt_misc handler. Left out: the
# install tests (they build an application with the host compiler).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

bbits_install_arm64_deps
cd "$BBITS_ROOT"
dir="${BBITS_ARM64_BUILD:-$BBITS_ROOT/build-arm64}"
cpus="${BBITS_ARM64_CPUS:-max cortex-a53}"
start=$(date +%s)
mkdir -p "$dir"

# oneDNN's arm64 development files, unpacked (see common.sh), matching the
# installed libdnnl2:arm64.
dnnl_root="$dir/sysroot-dnnl"
dnnl_ver=$(dpkg-query -W -f='${Version}' libdnnl2:arm64)
if [[ ! -f "$dnnl_root/.version" || "$(cat "$dnnl_root/.version")" != "$dnnl_ver" ]]; then
  echo "== unpacking libdnnl-dev:arm64 $dnnl_ver into $dnnl_root"
  rm -rf "$dnnl_root"
  mkdir -p "$dnnl_root/debs"
  (cd "$dnnl_root/debs" && apt-get download -q "libdnnl-dev:arm64=$dnnl_ver" "libdnnl2:arm64=$dnnl_ver")
  for deb in "$dnnl_root"/debs/*.deb; do dpkg-deb -x "$deb" "$dnnl_root"; done
  echo "$dnnl_ver" >"$dnnl_root/.version"
fi

echo "== configure + build (AArch64, Release) in $dir"
bbits_configure "$dir" -DCMAKE_TOOLCHAIN_FILE="$BBITS_ROOT/cmake/aarch64-linux-gnu.cmake" \
  -DBBITS_TESTS=ON -DBBITS_BENCH=OFF -DBBITS_TRAINING=OFF -DBBITS_WITH_ONEDNN="${BBITS_ARM64_ONEDNN:-ON}" \
  -Ddnnl_DIR="$dnnl_root/usr/lib/aarch64-linux-gnu/cmake/dnnl"
bbits_build "$dir"

excluded='^install_'
logdir="$dir/test-logs"
mkdir -p "$logdir"
status=0
passed=0
failed=0
for cpu in $cpus; do
  case "$cpu" in
    cortex-a53|cortex-a57|cortex-a72) expect=neon ;;
    *) expect=neon_dotprod ;;
  esac
  log="$logdir/ctest-qemu-$cpu.log"
  echo "== ctest under qemu-aarch64 -cpu $cpu (expects isa $expect)"
  if QEMU_CPU="$cpu" BBITS_EXPECT_ISA="$expect" BBITS_TEST_EMULATED=1 \
       ctest --test-dir "$dir" -j "$BBITS_JOBS" --output-on-failure --timeout 900 -E "$excluded" 2>&1 | tee "$log"; then :; else status=1; fi
  line=$(grep -E "tests passed, [0-9]+ tests? failed out of" "$log" | tail -1 || true)
  f=$(sed -nE 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\1/p' <<<"$line")
  t=$(sed -nE 's/.* failed out of ([0-9]+).*/\1/p' <<<"$line")
  passed=$((passed + ${t:-0} - ${f:-0}))
  failed=$((failed + ${f:-1}))
  # The plan of the runtime names the level this CPU runs.
  if QEMU_CPU="$cpu" BBITS_VERBOSE=1 qemu-aarch64 -L / "$dir/bin/bbits" inspect "$dir/tests/runtime/lenet_test.bbm" \
       2>&1 >/dev/null | grep -q "plan for isa $expect:"; then
    echo "   -cpu $cpu: the plan runs isa $expect"
  else
    echo "!! -cpu $cpu: BBITS_VERBOSE does not report 'plan for isa $expect'"
    status=1
    failed=$((failed + 1))
  fi
  echo "   -cpu $cpu: ${line:-no ctest summary}"
done
echo "== arm64 summary ($(( $(date +%s) - start )) s): $passed passed, $failed failed"
exit $status
