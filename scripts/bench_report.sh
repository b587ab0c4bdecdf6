#!/usr/bin/env bash
# Regenerates every measured table and plot of the README's benchmark section
# (docs/BENCH.md) into bench/results/:
#   calibration.json                  `bbits calibrate` on this machine
#   <arch>-<bits>.{csv,json,txt}       `bbits bench` of ResNet-18 and MobileNetV2
#                                      (bbits-convert --synthetic, ImageNet size)
#                                      at w8a8, w4a8, w2a8 and a mixed config
#   lenet5-trained.{csv,json,txt}      the newest LeNet-5 trained here, if any
#   pareto.csv, pareto.{png,svg}       accuracy vs latency vs relative BOPs of the
#                                      Fashion-MNIST models trained here, if any
#   summary.md, speedup_vs_int8.{png,svg}, roofline_time.{png,svg}
#   libtorch.csv                       LibTorch float32 baseline (BBITS_TRAINING builds)
#
# Takes about 3.5 minutes on the 2-core test VM with nothing else running,
# 2.5 of them in `bbits calibrate` (BBITS_CALIBRATION=FILE reuses a
# calibration; docs/BENCH.md lists the settings that shorten a run); longer
# when `bbits bench` waits for the machine's 2-thread scaling (docs/BENCH.md).
#
# Environment:
#   BBITS_BUILD=DIR            build directory (default build/)
#   BBITS_BENCH_NO_BUILD=1     use the binaries already in BBITS_BUILD
#   BBITS_RESULTS=DIR          output folder (default bench/results)
#   BBITS_RUNS=DIR             training runs to look for: DIR/*/final.safetensors (default runs/)
#   BBITS_RUNS_EXCLUDE=GLOB    run folder names to skip (default "smoke*": tiny test runs)
#   BBITS_BENCH_REPEATS=N      timed samples per measurement (default 7)
#   BBITS_BENCH_THREADS=LIST   thread counts (default 1,2)
#   BBITS_BENCH_CONFIGS=LIST   synthetic configs (default "w8a8 w4a8 w2a8 mixed")
#   BBITS_BENCH_ARCHS=LIST     synthetic networks (default "resnet18 mobilenetv2")
#   BBITS_CALIBRATION=FILE     reuse this calibration instead of measuring one
#   OMP_WAIT_POLICY            default passive here (see below)
#   BBITS_LIBTORCH_BUILD=DIR   a BBITS_TRAINING=ON build holding bin/bench_libtorch
#                              (default: BBITS_BUILD)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

results="${BBITS_RESULTS:-$BBITS_ROOT/bench/results}"
runs="${BBITS_RUNS:-$BBITS_ROOT/runs}"
runs_exclude="${BBITS_RUNS_EXCLUDE:-smoke*}"
repeats="${BBITS_BENCH_REPEATS:-7}"
threads="${BBITS_BENCH_THREADS:-1,2}"
configs="${BBITS_BENCH_CONFIGS:-w8a8 w4a8 w2a8 mixed}"
archs="${BBITS_BENCH_ARCHS:-resnet18 mobilenetv2}"
# Paths recorded in the results are relative to the repository root, so
# committed results name no machine-specific folder.
cd "$BBITS_ROOT"
rel() { realpath -m --relative-to="$BBITS_ROOT" "$1"; }
results="$(rel "$results")"
runs="$(rel "$runs")"
bin="$BBITS_BUILD/bin"
models="$(rel "$BBITS_BUILD/bench-models")"
# oneDNN (and the kernels built on it) run on OpenMP. GCC's default lets idle
# OpenMP threads spin, which on a shared or oversubscribed machine turns every
# 2-thread layer into a wait for a descheduled spinner (20 ms instead of 1 ms
# measured here): let them sleep. Recorded in every result as omp_wait_policy.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}"

for tool in gnuplot python3; do
  command -v "$tool" >/dev/null || { echo "bench_report: $tool is required (Debian: gnuplot-nox, python3)" >&2; exit 1; }
done

if [[ "${BBITS_BENCH_NO_BUILD:-0}" != 1 ]]; then
  bbits_configure "$BBITS_BUILD" -DBBITS_BENCH=ON
  targets=(bbits bbits-convert)
  if grep -q '^BBITS_TRAINING:BOOL=ON' "$BBITS_BUILD/CMakeCache.txt"; then targets+=(bench_libtorch); fi
  bbits_build "$BBITS_BUILD" --target "${targets[@]}"
fi
mkdir -p "$results" "$models"
echo "== load: $(uptime)"

# ---- 1. calibration ---------------------------------------------------------------
cal="$results/calibration.json"
if [[ -n "${BBITS_CALIBRATION:-}" && "$BBITS_CALIBRATION" != "$cal" ]]; then
  cp "$BBITS_CALIBRATION" "$cal"
else
  echo "== calibrate"
  "$bin/bbits" calibrate --threads "$threads" --out "$cal"
fi

bench_one() {  # bench_one NAME MODEL [extra bbits bench args]
  local name="$1" model="$2"; shift 2
  echo "== bench $name"
  "$bin/bbits" bench "$model" --threads "$threads" --repeats "$repeats" --calibration "$cal" \
    --csv "$results/$name.csv" --json-out "$results/$name.json" "$@" | tee "$results/$name.txt"
}

# ---- 2. synthetic ResNet-18 / MobileNetV2 at ImageNet size -----------------------------
for arch in $archs; do
  for cfg in $configs; do
    bits="$cfg"
    [[ "$cfg" == mixed ]] && bits="$BBITS_ROOT/bench/configs/${arch}_mixed.json"
    "$bin/bbits-convert" --synthetic "$arch" --bits "$bits" -o "$models/$arch-$cfg.bbm" -q
    bench_one "$arch-$cfg" "$models/$arch-$cfg.bbm"
  done
done

# ---- 3. models trained here (Fashion-MNIST) ----------------------------------------------
pareto="$results/pareto.csv"
echo "name,accuracy,latency_us,relative_bops,method,mu" > "$pareto.tmp"
newest_lenet=""
newest_bb=""
if [[ -d "$runs" ]]; then
  while IFS= read -r ck; do
    run="$(dirname "$ck")"
    name="$(basename "$run")"
    # shellcheck disable=SC2254
    case "$name" in $runs_exclude) continue ;; esac
    bbm="$models/trained-$name.bbm"
    if ! "$bin/bbits-convert" "$ck" -o "$bbm" -q 2>"$models/trained-$name.err"; then
      echo "bench_report: skipping $ck: $(tail -1 "$models/trained-$name.err")" >&2
      continue
    fi
    info="$("$bin/bbits" inspect "$bbm" --json)"
    arch="$(python3 -c 'import json,sys; print(json.load(sys.stdin)["metadata"]["arch"])' <<<"$info")"
    dataset="$(python3 -c 'import json,sys; print(json.load(sys.stdin)["metadata"]["dataset"])' <<<"$info")"
    [[ "$dataset" == fashion-mnist || "$dataset" == fashion_mnist ]] || continue
    acc="$("$bin/bbits" eval "$bbm" --dataset fashion-mnist | sed -n 's/^accuracy: //p')"
    "$bin/bbits" bench "$bbm" --threads 1 --repeats "$repeats" --no-baselines --calibration "$cal" \
      --json-out "$models/trained-$name.json" >/dev/null
    python3 - "$models/trained-$name.json" "$name" "$acc" "$info" >>"$pareto.tmp" <<'PY'
import json, sys
res = json.load(open(sys.argv[1])); info = json.loads(sys.argv[4])
row = [r for r in res["rows"] if r["scope"] == "model"][0]
md = info["metadata"]
print(f'{sys.argv[2]},{sys.argv[3]},{row["t_us"]:.3f},{float(res["meta"]["relative_bops"]):.6f},{md["method"]},{md["mu"]}')
PY
    # The README's LeNet-5 table: the newest Bayesian Bits run, else the newest LeNet-5.
    method="$(python3 -c 'import json,sys; print(json.load(sys.stdin)["metadata"]["method"])' <<<"$info")"
    if [[ "$arch" == lenet5 ]]; then
      if [[ "$method" == bayesian-bits || -z "$newest_bb" ]]; then newest_lenet="$bbm"; fi
      [[ "$method" == bayesian-bits ]] && newest_bb="$bbm"
    fi
  done < <(ls -t "$runs"/*/final.safetensors 2>/dev/null | tac)
fi
mv "$pareto.tmp" "$pareto"
if [[ -n "$newest_lenet" ]]; then
  bench_one lenet5-trained "$newest_lenet"
fi

# ---- 4. LibTorch float32 baseline --------------------------------------------------------
libtorch_bin="${BBITS_LIBTORCH_BUILD:-$BBITS_BUILD}/bin/bench_libtorch"
if [[ -x "$libtorch_bin" ]]; then
  echo "== LibTorch float32"
  "$libtorch_bin" --model lenet5,resnet18,mobilenetv2 --threads "$threads" --repeats "$repeats" \
    --csv "$results/libtorch.csv"
fi

# ---- 5. tables and plots -----------------------------------------------------------------
python3 "$BBITS_ROOT/bench/tools/bench_tables.py" "$results" > /dev/null
gnuplot -e "datafile='$results/speedup.dat'; outbase='$results/speedup_vs_int8'" "$BBITS_ROOT/bench/plots/speedup.gp"
gnuplot -e "datafile='$results/roofline.dat'; outbase='$results/roofline_time'" "$BBITS_ROOT/bench/plots/roofline.gp"
if [[ $(wc -l <"$pareto") -gt 1 ]]; then
  gnuplot -e "datafile='$pareto'; outbase='$results/pareto'" "$BBITS_ROOT/bench/plots/pareto.gp"
else
  echo "bench_report: no Fashion-MNIST runs under $runs: pareto plot not drawn" >&2
fi
echo "== load: $(uptime)"
echo "results in $results (summary: $results/summary.md)"
