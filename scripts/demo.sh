#!/usr/bin/env bash
# The main job end to end on a fresh Debian 12 machine (as root): installs
# missing Debian packages, builds bbits (Release, ccache) into build/, then
#   1. trains LeNet-5 with Bayesian Bits on Fashion-MNIST (short schedule),
#   2. converts the checkpoint into an integer model (.bbm),
#   3. prints the per-layer table (bits, kept channels, MACs, BOPs),
#   4. evaluates the integer model on the 10,000 test images,
#   5. measures its speed against BOP and roofline predictions.
#
#   BBITS_DEMO_EPOCHS=N   training epochs (default 3)
#   BBITS_DEMO_MU=X       regularizer strength (default 0.05)
#   BBITS_DEMO_OUT=DIR    output folder (default runs/demo)
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

bbits_install_deps
cd "$BBITS_ROOT"
bbits_configure "$BBITS_BUILD" -DBBITS_TRAINING=ON -DBBITS_BENCH=ON -DBBITS_TESTS=OFF
bbits_build "$BBITS_BUILD" --target bbits bbits-convert bbits-train

bin="$BBITS_BUILD/bin"
out="${BBITS_DEMO_OUT:-runs/demo}"
epochs="${BBITS_DEMO_EPOCHS:-3}"
mu="${BBITS_DEMO_MU:-0.05}"
mkdir -p "$out"

echo "== 1. train LeNet-5 with Bayesian Bits on Fashion-MNIST ($epochs epochs, mu $mu)"
"$bin/bbits-train" --model lenet5 --mode bayesian-bits --mu "$mu" --epochs "$epochs" --out "$out"

echo "== 2. convert the checkpoint into an integer model"
"$bin/bbits-convert" "$out/final.safetensors" -o "$out/lenet5.bbm"

echo "== 3. the model, layer by layer"
"$bin/bbits" inspect "$out/lenet5.bbm"

echo "== 4. integer inference on the 10,000 Fashion-MNIST test images"
"$bin/bbits" eval "$out/lenet5.bbm" --dataset fashion-mnist

echo "== 5. measured speed against BOP and roofline predictions"
# oneDNN's OpenMP threads must not spin on a shared machine (docs/BENCH.md).
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}"
echo "calibrating this machine (bbits calibrate --quick; full output in $out/calibrate.log)"
"$bin/bbits" calibrate --quick --out "$out/calibration.json" > "$out/calibrate.log"
grep -E "read bandwidth 1 thr|calibration written" "$out/calibrate.log" || true
"$bin/bbits" bench "$out/lenet5.bbm" --calibration "$out/calibration.json"
