#!/usr/bin/env python3
"""Before / after comparison of two bbits-bench-kernels binaries in one sitting.

    bench/kernels/compare.py BEFORE AFTER [--filter REGEX] [--rounds N]
                             [--repetitions R] [--min-time S] [--out FILE.json]

Runs the two binaries alternately (BEFORE, AFTER, BEFORE, AFTER, ...), ROUNDS
times each, every run with --benchmark_repetitions=R; per benchmark it takes
the median of each run's repetitions, then the median over the runs of each
binary, and prints after / before (> 1: slower) with the worst offenders
first. Benchmarks present in only one binary are listed apart. The load
average before and after is printed: compare only figures from a quiet
machine. Exit status 0 always (a report, not a test).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile


def run(binary, flt, reps, min_time, key):
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = f.name
    cmd = [binary, f"--benchmark_filter={flt}", f"--benchmark_repetitions={reps}",
           f"--benchmark_min_time={min_time}", "--benchmark_report_aggregates_only=true",
           "--benchmark_format=json", f"--benchmark_out={out}", "--benchmark_out_format=json"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(out) as f:
        data = json.load(f)
    os.unlink(out)
    med = {}
    for b in data["benchmarks"]:
        if b.get("aggregate_name") == "median" and "error_occurred" not in b:
            med[b["run_name"]] = b[key]
    return med


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("--filter", default="^(fc|layer)/")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repetitions", type=int, default=5)
    ap.add_argument("--min-time", default="0.1")
    ap.add_argument("--time", choices=["real", "cpu"], default="real",
                    help="wall time (default; a quiet machine) or the process's CPU time (less disturbed "
                         "by other jobs: the kernels run on one thread)")
    ap.add_argument("--out", help="write the per-benchmark medians and ratios as JSON")
    a = ap.parse_args()
    print(f"load before: {os.getloadavg()}", flush=True)
    runs = {"before": [], "after": []}
    for r in range(a.rounds):
        for which, binary in (("before", a.before), ("after", a.after)):
            runs[which].append(run(binary, a.filter, a.repetitions, a.min_time, a.time + "_time"))
            print(f"round {r + 1}/{a.rounds} {which} done (load {os.getloadavg()[0]:.2f})", flush=True)
    print(f"load after: {os.getloadavg()}")
    names = sorted(set().union(*runs["before"]) & set().union(*runs["after"]))
    rows = []
    for n in names:
        b = [m[n] for m in runs["before"] if n in m]
        c = [m[n] for m in runs["after"] if n in m]
        if not b or not c:
            continue
        mb, mc = statistics.median(b), statistics.median(c)
        rows.append((mc / mb, n, mb, mc))
    rows.sort(reverse=True)
    print(f"{'after/before':>12}  {'before us':>10}  {'after us':>10}  benchmark")
    for ratio, n, mb, mc in rows:
        flag = "  <-- slower than 3%" if ratio > 1.03 else ""
        print(f"{ratio:12.3f}  {mb:10.2f}  {mc:10.2f}  {n}{flag}")
    if rows:
        ratios = [r[0] for r in rows]
        print(f"{len(rows)} benchmarks: median ratio {statistics.median(ratios):.3f}, "
              f"worst {max(ratios):.3f}, best {min(ratios):.3f}, {sum(r > 1.03 for r in ratios)} above 1.03")
    only = sorted((set().union(*runs["before"]) ^ set().union(*runs["after"])))
    if only:
        print("in one binary only: " + ", ".join(only))
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"rows": [{"name": n, "before_us": mb, "after_us": mc, "ratio": r} for r, n, mb, mc in rows],
                       "load": os.getloadavg()}, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
