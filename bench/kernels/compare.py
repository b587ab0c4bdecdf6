#!/usr/bin/env python3
"""Before / after comparison of two bbits-bench-kernels binaries in one sitting.

    bench/kernels/compare.py BEFORE AFTER [--filter REGEX] [--rounds N]
                             [--repetitions R] [--min-time S] [--chunk C]
                             [--time real|cpu] [--stat median|min] [--out FILE.json]

Runs the two binaries alternately (BEFORE, AFTER, BEFORE, AFTER, ...), ROUNDS
times each, every run with --benchmark_repetitions=R. With --chunk C the
benchmarks both binaries have are taken C at a time and each chunk gets its
own alternating rounds, so that the two sides of a ratio are measured within
seconds of each other (on a shared machine the load drifts over the minutes a
whole run takes). Per benchmark it takes the median (or the minimum, --stat
min: on a loaded machine the disturbance only adds time) of each run's
repetitions, then the median over the runs of each binary, and prints after /
before (> 1: slower) with the worst offenders first. Benchmarks present in
only one binary are listed apart. The load average is printed before, during
and after. Exit status 0 always (a report, not a test).
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile


def run(binary, flt, reps, min_time, key, stat):
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = f.name
    cmd = [binary, f"--benchmark_filter={flt}", f"--benchmark_repetitions={reps}",
           f"--benchmark_min_time={min_time}", "--benchmark_format=json",
           f"--benchmark_out={out}", "--benchmark_out_format=json"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(out) as f:
        data = json.load(f)
    os.unlink(out)
    reps_of = {}
    for b in data["benchmarks"]:
        if b.get("run_type") == "iteration" and "error_occurred" not in b:
            reps_of.setdefault(b["run_name"], []).append(b[key])
    pick = min if stat == "min" else statistics.median
    return {n: pick(v) for n, v in reps_of.items()}


def names(binary, flt):
    out = subprocess.run([binary, f"--benchmark_filter={flt}", "--benchmark_list_tests"], check=True,
                         capture_output=True, text=True).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("--filter", default="^(fc|layer)/")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repetitions", type=int, default=5)
    ap.add_argument("--min-time", default="0.1")
    ap.add_argument("--chunk", type=int, default=0,
                    help="benchmarks per alternation (0: the whole filter in one run per binary and round)")
    ap.add_argument("--time", choices=["real", "cpu"], default="real",
                    help="wall time (default; a quiet machine) or the process's CPU time (less disturbed "
                         "by other jobs: the kernels run on one thread)")
    ap.add_argument("--stat", choices=["median", "min"], default="median",
                    help="statistic over one run's repetitions")
    ap.add_argument("--out", help="write the per-benchmark medians and ratios as JSON")
    a = ap.parse_args()
    key = a.time + "_time"
    print(f"load before: {os.getloadavg()}", flush=True)
    if a.chunk > 0:
        nb, na = names(a.before, a.filter), names(a.after, a.filter)
        common = [n for n in na if n in set(nb)]
        groups = [common[i:i + a.chunk] for i in range(0, len(common), a.chunk)]
        filters = ["^(" + "|".join(re.escape(n) for n in g) + ")$" for g in groups]
        only = sorted(set(nb) ^ set(na))
    else:
        filters = [a.filter]
        only = None
    runs = {"before": [], "after": []}
    loads = []
    for gi, flt in enumerate(filters):
        for r in range(a.rounds):
            for which, binary in (("before", a.before), ("after", a.after)):
                res = run(binary, flt, a.repetitions, a.min_time, key, a.stat)
                if len(runs[which]) <= r:
                    runs[which].append({})
                runs[which][r].update(res)
                loads.append(os.getloadavg()[0])
                if len(filters) == 1:
                    print(f"round {r + 1}/{a.rounds} {which} done (load {loads[-1]:.2f})", flush=True)
        if len(filters) > 1 and (gi + 1) % 5 == 0:
            print(f"chunk {gi + 1}/{len(filters)} done (load {loads[-1]:.2f})", flush=True)
    print(f"load after: {os.getloadavg()}; 1-minute load during the runs: min {min(loads):.2f}, "
          f"median {statistics.median(loads):.2f}, max {max(loads):.2f}")
    names_all = sorted(set().union(*runs["before"]) & set().union(*runs["after"]))
    rows = []
    for n in names_all:
        b = [m[n] for m in runs["before"] if n in m]
        c = [m[n] for m in runs["after"] if n in m]
        if not b or not c:
            continue
        mb, mc = statistics.median(b), statistics.median(c)
        rows.append((mc / mb, n, mb, mc))
    rows.sort(reverse=True)
    print(f"{'after/before':>12}  {'before':>10}  {'after':>10}  benchmark ({a.time} time, {a.stat} of "
          f"{a.repetitions} repetitions, median of {a.rounds} rounds; the benchmark's time unit)")
    for ratio, n, mb, mc in rows:
        flag = "  <-- slower than 3%" if ratio > 1.03 else ""
        print(f"{ratio:12.3f}  {mb:10.2f}  {mc:10.2f}  {n}{flag}")
    if rows:
        ratios = [r[0] for r in rows]
        print(f"{len(rows)} benchmarks: median ratio {statistics.median(ratios):.3f}, "
              f"worst {max(ratios):.3f}, best {min(ratios):.3f}, {sum(r > 1.03 for r in ratios)} above 1.03")
    if only is None:
        only = sorted((set().union(*runs["before"]) ^ set().union(*runs["after"])))
    if only:
        print("in one binary only: " + ", ".join(only))
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"rows": [{"name": n, "before": mb, "after": mc, "ratio": r} for r, n, mb, mc in rows],
                       "loads": loads, "args": vars(a)}, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
