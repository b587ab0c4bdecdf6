#!/usr/bin/env bash
# The latency-budget runs of docs/TRAINING.md ("Proof: latency budgets"):
# calibrate, profile the network's cost table (priced by the roofline and by
# the measured kernels), train to each budget, convert, time the model with
# `bbits bench` against the budget and both tables, evaluate it.
#   scripts/budget_runs.sh lenet5 T_MS [T_MS ...]
#   scripts/budget_runs.sh vgg7   T_MS [T_MS ...]
# Tables, runs, models and logs go to $BBITS_BUDGET_DIR/NAME/ (default
# runs/budget/NAME); every timing is printed with the load average.
# Binaries: $BBITS_BUILD/bin (default build/bin; build with
# -DBBITS_BENCH=ON -DBBITS_TRAINING=ON).
# Knobs (environment): PRICE (roofline|measured: the table the trainer uses),
# TRAIN_LIMIT, EPOCHS, FT_EPOCHS, LR_GATES, COST (latency|bops), SIGNAL.
set -uo pipefail
[ $# -ge 2 ] || { echo "usage: scripts/budget_runs.sh lenet5|vgg7 T_MS [T_MS ...]" >&2; exit 2; }
NAME=$1; shift
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
B="${BBITS_BUILD:-$ROOT/build}/bin"
P="${BBITS_BUDGET_DIR:-$ROOT/runs/budget}"
D=$P/$NAME
mkdir -p $D
CAL=$P/calibration.json
PRICE=${PRICE:-measured}
COST=${COST:-latency}
case $NAME in
  lenet5) PROF="--arch lenet5"; TRAIN="--model lenet5"; DEF_LIMIT=12000 ;;
  vgg7)   PROF="--arch vgg7 --width 0.125 --input 1x32x32"; TRAIN="--model vgg7 --width 0.125 --pad 2"; DEF_LIMIT=10000 ;;
  *) echo "unknown $NAME"; exit 2 ;;
esac
load() { cut -d' ' -f1-3 /proc/loadavg; }
[ -f $CAL ] || { echo "calibrate (load $(load))"; $B/bbits calibrate --quick --threads 1 -o $CAL; }
for price in roofline measured; do
  t=$D/$NAME.$price.costs.json
  [ -f $t ] || { echo "profile $price start $(date -u +%T) load $(load)"; $B/bbits profile $PROF --threads 1 --price $price --measure --repeats 5 --calibration $CAL -o $t | tee $t.log; }
done
TABLE=$D/$NAME.$PRICE.costs.json
for T in "$@"; do
  R=$D/$COST-$PRICE-$T
  if [ ! -f $R/final.safetensors ]; then
    echo "train $R start $(date -u +%T) load $(load)"
    $B/bbits-train $TRAIN --cost $COST --cost-table $TABLE --target-ms $T --budget-signal ${SIGNAL:-min} \
      --train-limit ${TRAIN_LIMIT:-$DEF_LIMIT} --epochs ${EPOCHS:-3} --finetune-epochs ${FT_EPOCHS:-1} \
      --lr-gates ${LR_GATES:-3e-2} --threads 2 --no-progress --out $R > $R.train.log 2>&1 || { echo "train failed"; tail -5 $R.train.log; continue; }
    echo "train end $(date -u +%T) load $(load)"
  fi
  grep "budget:\|test accuracy" $R.train.log
  $B/bbits-convert $R/final.safetensors -o $R.bbm > $R.convert.log 2>&1 || { echo "convert failed"; tail -3 $R.convert.log; continue; }
  for price in roofline measured; do
    echo "bench $R table=$price load-before $(load)"
    $B/bbits bench $R.bbm --threads 1 --no-baselines --passes 3 --calibration $CAL --target-ms $T \
      --cost-table $D/$NAME.$price.costs.json > $R.bench.$price.log 2>&1
    echo "load-after $(load)"; grep "whole model, 1 thread" $R.bench.$price.log
  done
  $B/bbits eval $R.bbm --dataset fashion-mnist > $R.eval.log 2>&1; tail -1 $R.eval.log
done
