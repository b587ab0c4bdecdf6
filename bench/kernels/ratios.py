#!/usr/bin/env python3
"""Target ratios from one run of bbits-bench-kernels (Google Benchmark JSON).

    bbits-bench-kernels --benchmark_repetitions=5 --benchmark_report_aggregates_only=true \
        --benchmark_format=json --benchmark_out=k.json
    python3 bench/kernels/ratios.py k.json [--time cpu|real]

Uses the median aggregate when repetitions were run, else the single value.
Prints markdown tables: fully connected ratios (W4A8 / W2A8 vs our W8A8, our
W8A8 vs oneDNN int8, weight streaming vs measured read bandwidth), the compute
ceiling (vnni/* register-only loops) against the MACs per ns the streaming
target needs, the W2A2 lookup-table kernel vs the 2-bit VNNI kernel and, per
model layer, our kernels, the table's choice and oneDNN int8.
"""
import json
import sys


def load(path, which):
    with open(path) as f:
        data = json.load(f)
    times, labels, counters = {}, {}, {}
    for b in data["benchmarks"]:
        name = b.get("run_name", b["name"])
        if b.get("run_type") == "aggregate" and b.get("aggregate_name") != "median":
            continue
        if b.get("error_occurred"):
            continue
        t = b["cpu_time" if which == "cpu" else "real_time"]
        unit = b.get("time_unit", "ns")
        scale = {"ns": 1e-3, "us": 1.0, "ms": 1e3, "s": 1e6}[unit]
        times[name] = t * scale  # microseconds
        labels[name] = b.get("label", "")
        counters[name] = b
    return data.get("context", {}), times, labels, counters


def main():
    if len(sys.argv) < 2:
        print(__doc__)
        sys.exit(2)
    which = "cpu"
    if "--time" in sys.argv:
        which = sys.argv[sys.argv.index("--time") + 1]
    ctx, t, labels, c = load(sys.argv[1], which)
    print(f"# bbits kernel ratios ({which} time, median; host {ctx.get('host_name', '?')}, "
          f"{ctx.get('num_cpus', '?')} CPUs @ {ctx.get('mhz_per_cpu', '?')} MHz)\n")
    print("## Fully connected, batch 1, one thread\n")
    print("| shape | W8A8 us | W4A8 us | W2A8 us | oneDNN int8 us | oneDNN f32 us | W4/W8 (>=1.8) | W2/W8 (>=3.0) | W8 vs oneDNN (>=1) |")
    print("|---|---|---|---|---|---|---|---|---|")
    bw_sizes = {"4096x4096": [16777216, 8388608, 4194304], "11008x4096": [45088768, 22544384, 11272192]}
    bw_rows = []
    for shape in ["4096x4096", "11008x4096"]:
        b = f"fc/{shape}/"
        w8, w4, w2 = (t.get(b + f"w{k}a8_ours") for k in (8, 4, 2))
        dn, f32 = t.get(b + "w8a8_onednn"), t.get(b + "f32_onednn")
        if None in (w8, w4, w2):
            continue
        r = lambda x, y: f"{x / y:.2f}" if x and y else "-"
        print(f"| {shape} | {w8:.1f} | {w4:.1f} | {w2:.1f} | {dn or 0:.1f} | {f32 or 0:.1f} | {r(w8, w4)} | {r(w8, w2)} | {r(dn, w8)} |")
        oc, k = (int(v) for v in shape.split("x"))
        for bits, size, tt in zip((8, 4, 2), bw_sizes[shape], (w8, w4, w2)):
            bwt = t.get(f"bandwidth/{size}")
            if bwt is None:
                continue
            wbytes = oc * k * bits / 8
            got = wbytes / tt / 1e3  # GB/s
            bw1 = size / bwt / 1e3
            bwt4 = t.get(f"bandwidth/{size}/streams:4")
            bw4 = size / bwt4 / 1e3 if bwt4 else None
            bw = max(bw1, bw4 or 0.0)  # the machine's read rate: the better of 1 and 4 streams
            bw_rows.append((shape, bits, wbytes / 1e6, got, bw1, bw4, bw, got / bw))
    if bw_rows:
        print("\n## Weight streaming vs single-thread read bandwidth at the same working set (target >= 80%)\n")
        print("Read bandwidth: one thread, the better of one sequential stream and 4 interleaved streams.\n")
        print("| shape | bits | weight MB | kernel GB/s | read GB/s 1 stream | read GB/s 4 streams | fraction of the better |")
        print("|---|---|---|---|---|---|---|")
        for shape, bits, mb, got, bw1, bw4, bw, fr in bw_rows:
            s4 = f"{bw4:.1f}" if bw4 else "-"
            print(f"| {shape} | W{bits}A8 | {mb:.1f} | {got:.1f} | {bw1:.1f} | {s4} | {fr * 100:.0f}% |")
    # Compute ceiling: vpdpbusd throughput (register-only loops) and what the
    # 80% streaming target asks of each GEMV in MACs per ns.
    order = ["dp", "dp_ymm", "dp_and", "maddubsw", "dp_maddubsw", "vpermw", "dp_vpermw", "vpermb", "vpshufb"]
    peak = {n[len("vnni/"):]: c[n].get("MACs/ns") for n in t if n.startswith("vnni/") and c[n].get("MACs/ns")}
    peak = dict(sorted(peak.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)))
    if peak:
        print("\n## Compute ceiling: register-only throughput, one thread (MACs per ns; 64 MACs per zmm instruction)\n")
        print("| loop | MACs/ns | vs vpdpbusd zmm |")
        print("|---|---|---|")
        dp = peak.get("dp")
        for n, v in peak.items():
            print(f"| {n} | {v:.0f} | {v / dp:.2f} |" if dp else f"| {n} | {v:.0f} | - |")
        if dp and bw_rows:
            print("\n## Weight streaming target vs the compute ceiling (a GEMV does one MAC per weight)\n")
            print("| shape | bits | kernel MACs/ns | MACs/ns needed for 80% of read GB/s | vpdpbusd peak | vpdpbusd+vpandd peak | needed / peak |")
            print("|---|---|---|---|---|---|---|")
            dpand = peak.get("dp_and", dp)
            for shape, bits, mb, got, _, _, bw, fr in bw_rows:
                macs_per_byte = 8 / bits
                need = 0.8 * bw * macs_per_byte
                print(f"| {shape} | W{bits}A8 | {got * macs_per_byte:.0f} | {need:.0f} | {dp:.0f} | {dpand:.0f} | {need / dp:.2f} |")
    # W2A2: the lookup-table kernel vs the 2-bit VNNI kernel on the same layer.
    lut_rows = []
    for name in t:
        if not name.endswith("/w2a2_lut"):
            continue
        b = name[: -len("w2a2_lut")]
        lut, vn, ch = t.get(b + "w2a2_lut"), t.get(b + "w2a2_ours"), t.get(b + "w2a2_chosen")
        if lut and vn:
            shape = b.strip("/").split("/", 1)[1]
            lr = c[b + "w2a2_lut"].get("GMAC/s", 0.0)  # MACs per ns
            vr = c[b + "w2a2_ours"].get("GMAC/s", 0.0)
            lut_rows.append((shape, lut, vn, ch, lr, vr, labels.get(b + "w2a2_chosen", "")))
    lut_rows.sort(key=lambda r: (not r[0][0].isdigit(), r[0]))
    if lut_rows:
        print("\n## W2A2 fully connected: lookup-table kernel vs 2-bit VNNI kernel (same layer, same run)\n")
        print("| shape | LUT us | VNNI us | chosen us | LUT MACs/ns | VNNI MACs/ns | VNNI / LUT time | chosen |")
        print("|---|---|---|---|---|---|---|---|")
        for shape, lut, vn, ch, lr, vr, lab in lut_rows:
            print(f"| {shape} | {lut:.1f} | {vn:.1f} | {ch or 0:.1f} | {lr:.0f} | {vr:.0f} | {vn / lut:.2f} | {lab} |")
    print("\n## Model layers, batch 1, one thread: the table's choice vs oneDNN int8 (target >= 0.9)\n")
    print("| model | layer | oneDNN int8 us | W8 ours | W8 chosen | W4 ours | W4 chosen | W2 ours | W2 chosen | worst chosen vs oneDNN | chosen kernels |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    layers = []
    for name in t:
        if name.startswith("layer/") and name.endswith("/w8a8_onednn"):
            layers.append(name[: -len("w8a8_onednn")])
    for base in layers:
        _, model, layer, _ = base.split("/")
        dn = t[base + "w8a8_onednn"]
        cells, worst, chosen = [], None, []
        for bits in (8, 4, 2):
            o = t.get(base + f"w{bits}a8_ours")
            ch = t.get(base + f"w{bits}a8_chosen")
            cells.append(f"{o:.1f}" if o else "-")
            cells.append(f"{ch:.1f}" if ch else "-")
            if ch:
                ratio = dn / ch
                worst = ratio if worst is None else min(worst, ratio)
                chosen.append(f"w{bits}:{labels.get(base + f'w{bits}a8_chosen', '')}")
        print(f"| {model} | {layer} | {dn:.1f} | " + " | ".join(cells) + f" | {worst:.2f} | {' '.join(chosen)} |")


if __name__ == "__main__":
    main()
