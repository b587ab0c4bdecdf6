#!/usr/bin/env python3
"""Turns `bbits bench --csv` results into the README tables and the plot data.

    bench_tables.py RESULTS_DIR

Reads every RESULTS_DIR/<config>.csv written by `bbits bench` (see
docs/BENCH.md for the columns) and writes, in RESULTS_DIR:
  summary.md        whole-model table, per-config roofline / BOP error table, and
                    the largest term of the roofline prediction per layer
  speedup.dat       per layer with MACs: config, threads, bop_x8, roof_x8, meas_x8,
                    bop_x32, roof_x32, meas_x32 (whitespace separated, for gnuplot)
  roofline.dat      per layer: config, threads, t_us, roof_us
Only the standard library is used.
"""
import csv
import json
import math
import os
import statistics
import sys


def num(s):
    try:
        v = float(s)
        return v if math.isfinite(v) else None
    except (TypeError, ValueError):
        return None


def fmt(v, digits=2):
    return "-" if v is None else f"{v:.{digits}f}"


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: bench_tables.py RESULTS_DIR")
    d = sys.argv[1]
    configs = []
    for name in sorted(os.listdir(d)):
        if not name.endswith(".csv") or name in ("pareto.csv", "libtorch.csv"):
            continue
        with open(os.path.join(d, name), newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows or "scope" not in rows[0]:
            continue
        configs.append((name[:-4], rows))
    if not configs:
        sys.exit(f"bench_tables.py: no bench CSV files in {d}")

    out = []
    first = configs[0][1][0]
    out.append(f"Machine: {first['cpu']}, kernels ISA path `{first['isa']}`, oneDNN {first['onednn']}, "
               f"commit `{first['commit']}`, {first['created']}.\n")
    # The machine's 2-thread scaling before each measurement pass (bbits bench
    # waits while it is below 85% of the calibrated one) and any warnings.
    for key, what in (("probe_us_1", "1-thread time of the machine probe (a compute-bound convolution, us"),
                      ("thread_scaling_2", "2-thread scaling of the machine probe (")):
        probes = [(name, rows[0][key]) for name, rows in configs if rows[0].get(key)]
        if probes:
            out.append(what + probes[0][1].split(";")[0] + "), measured before each pass: " +
                       "; ".join(f"{n} {p.split('pass', 1)[1].strip()}" for n, p in probes) + ".\n")
    for name, _ in configs:
        jp = os.path.join(d, name + ".json")
        if os.path.exists(jp):
            with open(jp) as f:
                for w in json.load(f).get("warnings", []):
                    out.append(f"**Warning ({name}):** {w}\n")
    out.append("### Whole model (batch 1, median of the timed runs)\n")
    out.append("| model | threads | rel. BOPs | bbits ms | oneDNN f32 ms | oneDNN int8 ms | speedup vs f32 (BOPs / roofline / measured) | speedup vs int8 (BOPs / roofline / measured) |")
    out.append("|---|---|---|---|---|---|---|---|")
    for name, rows in configs:
        for r in rows:
            if r["scope"] != "model":
                continue
            ms = lambda k: None if num(r[k]) is None else num(r[k]) / 1000.0
            out.append(f"| {name} | {r['threads']} | {fmt(num(r['relative_bops']), 4)} | {fmt(ms('t_us'))} | "
                       f"{fmt(ms('t_f32_us'))} | {fmt(ms('t_int8_us'))} | "
                       f"{fmt(num(r['bop_x32']), 1)} / {fmt(num(r['roof_x32']))} / {fmt(num(r['meas_x32']))} | "
                       f"{fmt(num(r['bop_x8']))} / {fmt(num(r['roof_x8']))} / {fmt(num(r['meas_x8']))} |")

    out.append("\n### Prediction errors per layer (predicted / measured - 1)\n")
    out.append("Layer times are measured inside a profiled `Session` (`t_us`) and for each kernel alone (`t_kernel_us`).\n")
    out.append("| model | threads | layers | roofline within ±25% (in session) | median abs. roofline error | roofline within ±25% (kernel alone) | median BOP error vs int8 | median roofline speedup error vs int8 | median BOP error vs f32 |")
    out.append("|---|---|---|---|---|---|---|---|---|")
    spd, roof = [], []
    total_hit = total_n = total_khit = total_kn = 0
    for name, rows in configs:
        for th in sorted({r["threads"] for r in rows}, key=int):
            layers = [r for r in rows if r["scope"] == "layer" and r["threads"] == th]
            errs = [num(r["roof_err"]) for r in layers if num(r["roof_err"]) is not None]
            hit = sum(1 for e in errs if abs(e) <= 0.25)
            total_hit += hit
            total_n += len(errs)
            kerrs = [num(r.get("roof_err_kernel")) for r in layers if num(r.get("roof_err_kernel")) is not None]
            khit = sum(1 for e in kerrs if abs(e) <= 0.25)
            total_khit += khit
            total_kn += len(kerrs)
            kcell = f"{khit}/{len(kerrs)} ({khit / len(kerrs) * 100:.0f}%)" if kerrs else "-"
            b8 = [num(r["bop_err8"]) for r in layers if num(r["bop_err8"]) is not None]
            r8 = [num(r["roof_err8"]) for r in layers if num(r["roof_err8"]) is not None and num(r["macs"])]
            b32 = [num(r["bop_err32"]) for r in layers if num(r["bop_err32"]) is not None]
            pct = lambda xs: "-" if not xs else f"{statistics.median(xs) * 100:+.0f}%"
            out.append(f"| {name} | {th} | {len(layers)} | {hit}/{len(errs)} ({(hit / len(errs) * 100) if errs else 0:.0f}%) | "
                       f"{'-' if not errs else f'{statistics.median([abs(e) for e in errs]) * 100:.0f}%'} | {kcell} | "
                       f"{pct(b8)} | {pct(r8)} | {pct(b32)} |")
            for r in layers:
                if num(r["t_us"]) is not None and num(r["roof_us"]) is not None:
                    roof.append(f"{name} {th} {num(r['t_us']):.3f} {num(r['roof_us']):.3f}")
                if num(r["macs"]) and num(r["meas_x8"]) is not None:
                    vals = [num(r[k]) for k in ("bop_x8", "roof_x8", "meas_x8", "bop_x32", "roof_x32", "meas_x32")]
                    spd.append(f"{name} {th} " + " ".join("NaN" if v is None else f"{v:.4f}" for v in vals))
    # Which term of the roofline prediction is the largest per layer, and how
    # often the prediction holds for those layers (CSV files written before
    # the `dominant` column existed are left out).
    terms = ("compute", "memory", "epilogue", "call")
    dom_rows = []
    for name, rows in configs:
        for th in sorted({r["threads"] for r in rows}, key=int):
            layers = [r for r in rows if r["scope"] == "layer" and r["threads"] == th and r.get("dominant")]
            if not layers:
                continue
            cells = []
            for t in terms:
                sel = [r for r in layers if r["dominant"] == t and num(r["roof_err"]) is not None]
                hit = sum(1 for r in sel if abs(num(r["roof_err"])) <= 0.25)
                cells.append(f"{len(sel)} ({hit})" if sel else "-")
            dom_rows.append(f"| {name} | {th} | " + " | ".join(cells) + " |")
    if dom_rows:
        out.append("\n### Largest term of the roofline prediction per layer\n")
        out.append("Layers whose prediction is dominated by each term (in parentheses: of those, within ±25% of the "
                   "in-session time). compute = work / peak, memory = bytes / bandwidth, epilogue = scratch written "
                   "and read back, call = measured per-call cost (and thread wake-up); see docs/BENCH.md.\n")
        out.append("| model | threads | " + " | ".join(terms) + " |")
        out.append("|---|---|" + "---|" * len(terms))
        out.extend(dom_rows)
    lt = os.path.join(d, "libtorch.csv")
    if os.path.exists(lt):
        with open(lt, newline="") as f:
            lrows = list(csv.DictReader(f))
        out.append("\n### LibTorch float32 (the training library's networks, quantizers off)\n")
        out.append("| model | threads | ms (median) | IQR ms |")
        out.append("|---|---|---|---|")
        for r in lrows:
            out.append(f"| {r['model']} | {r['threads']} | {fmt(num(r['t_us']) / 1000.0)} | {fmt(num(r['t_iqr_us']) / 1000.0)} |")
    if total_n:
        out.append(f"\nOver all models and thread counts: the roofline time is within ±25% of the measured time "
                   f"for {total_hit} of {total_n} layers ({total_hit / total_n * 100:.0f}%) timed inside the session"
                   + (f", and for {total_khit} of {total_kn} ({total_khit / total_kn * 100:.0f}%) timed as kernels alone."
                      if total_kn else "."))
    with open(os.path.join(d, "summary.md"), "w") as f:
        f.write("\n".join(out) + "\n")
    with open(os.path.join(d, "speedup.dat"), "w") as f:
        f.write("# config threads bop_x8 roof_x8 meas_x8 bop_x32 roof_x32 meas_x32\n" + "\n".join(spd) + "\n")
    with open(os.path.join(d, "roofline.dat"), "w") as f:
        f.write("# config threads t_us roof_us\n" + "\n".join(roof) + "\n")
    print("\n".join(out))


if __name__ == "__main__":
    main()
