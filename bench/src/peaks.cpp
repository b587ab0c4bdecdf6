#include "bbits/bench/peaks.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <stdexcept>
#include <thread>
#include <tuple>

#include "bbits/bench/layer_runner.h"
#include "bbits/bench/model_layers.h"
#include "bbits/bench/onednn_baseline.h"
#include "bbits/bench/roofline.h"
#include "bbits/bench/synthetic.h"
#include "bbits/kernels/thread_pool.h"

namespace bbits::bench {

const std::vector<std::string>& peak_families() {
  static const std::vector<std::string> f = {"conv2d",     "pointwise",       "depthwise", "fully_connected",
                                             "max_pool2d", "avg_pool2d",      "global_avg_pool",
                                             "add",        "relu",            "relu6",     "concat",
                                             "reshape",    "softmax"};
  return f;
}

namespace {
// The family a kernel of the table can serve.
bool serves(const kernels::KernelInfo& k, const std::string& fam) {
  using kernels::OpKind;
  switch (k.op) {
    case OpKind::Conv2D: return fam == "conv2d" || fam == "pointwise" || fam == "depthwise";
    case OpKind::FullyConnected: return fam == "fully_connected";
    case OpKind::Relu: return fam == "relu";
    case OpKind::Relu6: return fam == "relu6";
    case OpKind::MaxPool2D: return fam == "max_pool2d";
    case OpKind::AvgPool2D: return fam == "avg_pool2d";
    case OpKind::GlobalAvgPool: return fam == "global_avg_pool";
    case OpKind::Add: return fam == "add";
    case OpKind::Concat: return fam == "concat";
    case OpKind::Reshape: return fam == "reshape";
    case OpKind::Softmax: return fam == "softmax";
  }
  return false;
}
}  // namespace

kernels::OpDesc representative_desc(const std::string& family, int wbits, int abits, bool small) {
  const kernels::QuantInfo in = abits == 32 ? kernels::QuantInfo{32, true, 1.0f} : kernels::QuantInfo{abits, false, 0.05f};
  const kernels::QuantInfo out = abits == 32 ? kernels::QuantInfo{32, true, 1.0f} : kernels::QuantInfo{8, false, 0.05f};
  if (family == "fully_connected") {
    kernels::FcDesc d;
    d.K = small ? 256 : 1024;
    d.OC = small ? 128 : 512;
    d.wbits = wbits;
    d.in = in;
    d.out = out;
    d.activation = kernels::Activation::Relu;
    return d;
  }
  // Operators without weights, on ResNet-18 / MobileNetV2 sized tensors.
  const int64_t s = small ? 2 : 1;  // small: a quarter of the elements
  if (family == "max_pool2d" || family == "avg_pool2d") {
    kernels::PoolDesc p;
    p.kind = family == "max_pool2d" ? kernels::PoolKind::Max : kernels::PoolKind::Avg;
    p.H = p.W = 112 / s;
    p.C = 64;
    p.KH = p.KW = 3;
    p.stride_h = p.stride_w = 2;
    p.pad_top = p.pad_left = p.pad_bottom = p.pad_right = 1;
    p.in = in;
    p.out = in;
    return p;
  }
  if (family == "global_avg_pool") {
    kernels::PoolDesc p;
    p.kind = kernels::PoolKind::GlobalAvg;
    p.H = p.W = 7;
    p.C = 1280 / s;
    p.KH = p.KW = 7;
    p.in = in;
    p.out = in;
    return p;
  }
  if (family == "add") {
    kernels::AddDesc a;
    a.count = 56 * 56 * 64 / (s * s);
    a.a = in.is_float() ? in : kernels::QuantInfo{abits, true, 0.05f};
    a.b = in.is_float() ? in : kernels::QuantInfo{abits, false, 0.04f};
    a.out = out;
    a.activation = kernels::Activation::Relu;
    return a;
  }
  if (family == "relu" || family == "relu6") {
    kernels::ActivationDesc a;
    a.count = 56 * 56 * 64 / (s * s);
    a.act = family == "relu" ? kernels::Activation::Relu : kernels::Activation::Relu6;
    a.in = in.is_float() ? in : kernels::QuantInfo{abits, true, 0.05f};
    a.out = out;
    return a;
  }
  if (family == "concat") {
    kernels::ConcatDesc c;
    c.outer = 28 * 28 / (s * s);
    c.sizes = {96, 96};
    c.in = {in, in};
    c.out = in;
    return c;
  }
  if (family == "reshape") {
    kernels::ReshapeDesc r;
    r.H = r.W = 7;
    r.C = 512 / s;
    r.to_chw = true;
    r.in = in;
    r.out = in;
    return r;
  }
  if (family == "softmax") {
    kernels::SoftmaxDesc m;
    m.axis_size = 1000;
    m.in = in;
    m.out = {32, true, 1.0f};
    return m;
  }
  kernels::ConvDesc d;
  d.wbits = wbits;
  d.in = in;
  d.out = out;
  d.activation = kernels::Activation::Relu;
  if (family == "conv2d") {  // a ResNet-18 layer2 3x3 convolution
    d.H = d.W = small ? 14 : 28;
    d.C = d.OC = small ? 32 : 128;
    d.KH = d.KW = 3;
    d.pad_top = d.pad_left = d.pad_bottom = d.pad_right = 1;
  } else if (family == "pointwise") {  // a MobileNetV2 expansion
    d.H = d.W = small ? 14 : 28;
    d.C = small ? 32 : 64;
    d.OC = small ? 96 : 384;
    d.KH = d.KW = 1;
  } else if (family == "depthwise") {
    d.H = d.W = small ? 28 : 56;
    d.C = d.OC = d.groups = small ? 48 : 144;
    d.KH = d.KW = 3;
    d.pad_top = d.pad_left = d.pad_bottom = d.pad_right = 1;
  } else {
    throw std::invalid_argument("representative_desc: unknown family '" + family + "'");
  }
  return d;
}

std::pair<int64_t, int64_t> gemm_kn(const kernels::OpDesc& d) {
  if (const auto* c = std::get_if<kernels::ConvDesc>(&d)) return {c->K(), c->OC};
  if (const auto* f = std::get_if<kernels::FcDesc>(&d)) return {f->K, f->OC};
  return {0, 0};
}

int64_t gemm_m(const kernels::OpDesc& d) {
  if (const auto* c = std::get_if<kernels::ConvDesc>(&d)) return c->N * c->out_h() * c->out_w();
  if (const auto* f = std::get_if<kernels::FcDesc>(&d)) return f->N;
  return 0;
}

kernels::OpDesc tiny_desc(const std::string& family, int wbits, int abits) {
  kernels::OpDesc d = representative_desc(family, wbits, abits, true);
  if (auto* c = std::get_if<kernels::ConvDesc>(&d)) {
    c->H = c->W = 4;
    c->C = 16;
    c->OC = 16;
    if (c->groups > 1) c->groups = 16;
  } else if (auto* f = std::get_if<kernels::FcDesc>(&d)) {
    f->K = 16;
    f->OC = 16;
  } else if (auto* p = std::get_if<kernels::PoolDesc>(&d)) {
    p->C = 16;
    if (p->kind == kernels::PoolKind::GlobalAvg) {
      p->H = p->W = p->KH = p->KW = 2;
    } else {
      p->H = p->W = 4;
    }
  } else if (auto* a = std::get_if<kernels::AddDesc>(&d)) {
    a->count = 64;
  } else if (auto* r = std::get_if<kernels::ActivationDesc>(&d)) {
    r->count = 64;
  } else if (auto* c2 = std::get_if<kernels::ConcatDesc>(&d)) {
    c2->outer = 4;
    c2->sizes = {16, 16};
  } else if (auto* rs = std::get_if<kernels::ReshapeDesc>(&d)) {
    rs->H = rs->W = 1;
    rs->C = 64;
  } else if (auto* sm = std::get_if<kernels::SoftmaxDesc>(&d)) {
    sm->axis_size = 16;
  }
  return d;
}

std::vector<kernels::OpDesc> calibration_shapes(const std::string& family, int wbits, int abits, bool small,
                                                bool signed_input) {
  kernels::OpDesc rep = representative_desc(family, wbits, abits, small);
  const bool conv_family = family == "conv2d" || family == "pointwise" || family == "depthwise";
  if (signed_input) {
    if (!conv_family || abits == 32 || small) return {};
    std::get<kernels::ConvDesc>(rep).in.is_signed = true;
  }
  std::vector<kernels::OpDesc> out;
  if (small) return {rep};
  if (family == "conv2d" || family == "pointwise" || family == "depthwise") {
    const auto base = std::get<kernels::ConvDesc>(rep);
    std::vector<int64_t> cs, ocs;
    if (family == "conv2d") {
      cs = {3, 16, 64, 256};
      ocs = {16, 64, 256};
    } else if (family == "pointwise") {
      cs = {16, 32, 64, 128, 256, 1024};
      ocs = {16, 64, 256, 1024};
    } else {
      cs = {32, 144, 576};
      ocs = {0};  // depthwise: OC = C
    }
    for (int64_t c : cs)
      for (int64_t oc : ocs) {
        kernels::ConvDesc d = base;
        d.C = c;
        d.OC = family == "depthwise" ? c : oc;
        if (family == "depthwise") d.groups = static_cast<int>(c);
        // Output pixels M: square maps, stride 1 and "same" padding keep
        // the output the size of the input.
        const std::vector<int64_t> sides =
            signed_input ? std::vector<int64_t>{7, 28, 112} : std::vector<int64_t>{7, 14, 28, 56, 112};
        for (int64_t side : sides) {
          d.H = d.W = side;
          if (side > 7 && static_cast<double>(d.macs()) > kMaxCalibrationMacs) break;
          out.push_back(d);
        }
      }
    return out;
  }
  if (family == "fully_connected") {
    const auto base = std::get<kernels::FcDesc>(rep);
    for (int64_t k : {256, 1024, 4096})
      for (int64_t oc : {16, 256, 1024}) {
        kernels::FcDesc d = base;
        d.K = k;
        d.OC = oc;
        out.push_back(d);
      }
    return out;
  }
  return {rep};
}

namespace {

std::unique_ptr<ModelLayers> one_layer_model(const kernels::OpDesc& desc) {
  const std::vector<uint8_t> bytes = single_op_model(desc);
  return ModelLayers::from_memory(bytes.data(), bytes.size(), "calibration layer");
}

int native_bits(int b) { return b == kernels::kAnyBits ? 8 : b; }

}  // namespace

namespace {

// One call of a tiny layer, timed in batches of at least 10 us (clock
// resolution), fastest batch mean kept.
TimingOptions tiny_timing(const TimingOptions& t) {
  return {.warmup = std::max(t.warmup, 3), .repeats = std::max(t.repeats, 5), .min_sample_ns = 10'000};
}

// What is taken out of a calibration sample before it becomes a compute
// rate: the per-call cost and the scratch round trip, at most half the sample.
double non_compute_ns(double sample_ns, double call_ns, double scratch_ns) {
  return std::min(call_ns + scratch_ns, 0.5 * sample_ns);
}

}  // namespace

static PeakCalibration kernel_peaks_once(const PeakCalibrationOptions& opts, const Progress& progress) {
  PeakCalibration out;
  for (const kernels::KernelInfo& k : kernels::kernel_table()) {
    if (!kernels::isa_at_most(k.isa, opts.max_isa)) continue;
    if (!opts.filter.empty() && k.name.find(opts.filter) == std::string::npos) continue;
    const bool has_weights = k.op == kernels::OpKind::Conv2D || k.op == kernels::OpKind::FullyConnected;
    const int native_wb = has_weights ? native_bits(k.weight_bits) : 0, ab = native_bits(k.act_bits);
    if (has_weights && native_wb == 0) continue;  // whole-layer-pruned kernels compute nothing
    // A kernel may run layers of other weight widths (an int8 kernel running
    // 4- or 2-bit weights): measure it at every width it accepts.
    std::vector<int> widths = {native_wb};
    if (has_weights && k.isa != kernels::Isa::Reference)
      for (int w : {2, 4, 8})
        if (w != native_wb) widths.push_back(w);
    for (const std::string& fam : peak_families()) {
      if (!serves(k, fam)) continue;
      // Per-call cost of the family, per thread count, at the first width
      // the kernel takes the tiny shape at.
      std::map<int, double> call_ns;
      for (const int wb : widths) {
        const kernels::OpDesc tiny = tiny_desc(fam, wb, ab);
        if (!k.supports(tiny)) continue;
        try {
          const auto m = one_layer_model(tiny);
          const ModelLayer& L = m->layers().front();
          for (int t : opts.threads) {
            LayerRunner r(L, k, t);
            std::unique_ptr<kernels::ThreadPool> pool;
            if (t > 1) pool = std::make_unique<kernels::ThreadPool>(t);
            const Summary s = time_ns([&] { r.run(pool.get()); }, tiny_timing(opts.timing));
            call_ns[t] = s.min;
            out.overheads.push_back({k.name, fam, t, s.min, kernels::describe(L.desc)});
            if (progress)
              progress(fmt::format("  {:<44} {:<16} {} thr  {:8.2f} us per call", k.name, fam, t, s.min * 1e-3));
          }
        } catch (const std::exception& e) {
          if (progress) progress(fmt::format("  {} {} per-call cost: failed ({})", k.name, fam, e.what()));
        }
        break;
      }
      for (const int wb : widths) {
        // Reference kernels (slow, rarely chosen) get one small shape.
        const bool small = k.isa == kernels::Isa::Reference && has_weights;
        std::vector<kernels::OpDesc> shapes = calibration_shapes(fam, wb, ab, small);
        if (opts.coarse && shapes.size() > 3)
          shapes = {shapes.front(), shapes[shapes.size() / 2], shapes.back()};
        else if (!opts.coarse)
          for (const kernels::OpDesc& d : calibration_shapes(fam, wb, ab, small, true)) shapes.push_back(d);
        if (!has_weights && ab != 32) {
          // Families without weights: the same shape with a float32 output.
          kernels::OpDesc d = shapes.front();
          std::visit([](auto& x) { x.out = kernels::QuantInfo{32, true, 1.0f}; }, d);
          shapes.push_back(d);
        }
        for (const kernels::OpDesc& desc : shapes) {
          if (!k.supports(desc)) continue;
          std::unique_ptr<ModelLayers> m;
          try {
            m = one_layer_model(desc);
          } catch (const std::exception& e) {
            if (progress) progress(fmt::format("  {} {}: skipped ({})", k.name, fam, e.what()));
            continue;
          }
          const ModelLayer& L = m->layers().front();
          const double macs = static_cast<double>(kernels::op_work(L.desc));
          if (!(macs > 0)) continue;
          for (int t : opts.threads) {
            try {
              LayerRunner r(L, k, t);
              std::unique_ptr<kernels::ThreadPool> pool;
              if (t > 1) pool = std::make_unique<kernels::ThreadPool>(t);
              const Summary s = time_ns([&] { r.run(pool.get()); }, opts.timing);
              KernelPeak p;
              p.kernel = k.name;
              p.op = fam;
              p.wbits = wb;
              p.abits = ab;
              p.isa = kernels::isa_name(k.isa);
              p.threads = t;
              // Peak = the fastest sample: on a shared machine noise only ever
              // slows a run down. IQR of the rate from the time quartiles.
              p.macs_per_s = macs / (s.min * 1e-9);
              p.iqr = macs / (s.q1 * 1e-9) - macs / (s.q3 * 1e-9);
              const double scratch =
                  opts.machine ? scratch_round_trip_ns(static_cast<int64_t>(r.scratch_bytes(t)), *opts.machine, t) : 0.0;
              const auto it = call_ns.find(t);
              p.compute_macs_per_s =
                  macs / ((s.min - non_compute_ns(s.min, it == call_ns.end() ? 0.0 : it->second, scratch)) * 1e-9);
              p.shape = kernels::describe(L.desc);
              std::tie(p.k, p.n) = gemm_kn(L.desc);
              p.m = gemm_m(L.desc);
              p.in_signed = kernels::input_quant(L.desc, 0).is_signed && !kernels::input_quant(L.desc, 0).is_float();
              p.out_float = kernels::output_quant(L.desc).is_float() && !kernels::input_quant(L.desc, 0).is_float();
              if (progress)
                progress(fmt::format("  {:<44} {:<16} {} thr  {:8.2f} G/s ({:8.2f} compute)  k {:<5} n {:<5} m {:<5}",
                                     k.name, fam, t, p.macs_per_s * 1e-9, p.compute_macs_per_s * 1e-9, p.k, p.n, p.m));
              out.peaks.push_back(std::move(p));
            } catch (const std::exception& e) {
              if (progress) progress(fmt::format("  {} {}: failed ({})", k.name, fam, e.what()));
            }
          }
        }
      }
    }
  }
  return out;
}

static PeakCalibration onednn_peaks_once(const PeakCalibrationOptions& opts, const Progress& progress) {
  PeakCalibration out;
  for (BaselineKind kind : {BaselineKind::F32, BaselineKind::Int8}) {
    const int bits = kind == BaselineKind::F32 ? 32 : 8;
    for (const std::string& fam : peak_families()) {
      std::map<int, double> call_ns;
      try {
        const auto m = one_layer_model(tiny_desc(fam, bits, bits));
        for (int t : opts.threads) {
          OnednnNet net(*m, kind, t);
          if (!net.available(0)) break;
          set_onednn_threads(t);
          const Summary s = time_ns([&] { net.run_layer(0); }, tiny_timing(opts.timing));
          call_ns[t] = s.min;
          out.overheads.push_back({baseline_name(kind), fam, t, s.min, kernels::describe(m->layers().front().desc)});
          if (progress)
            progress(fmt::format("  {:<44} {:<16} {} thr  {:8.2f} us per call", baseline_name(kind), fam, t,
                                 s.min * 1e-3));
        }
      } catch (const std::exception& e) {
        if (progress) progress(fmt::format("  {} {} per-call cost: failed ({})", baseline_name(kind), fam, e.what()));
      }
      std::vector<kernels::OpDesc> shapes = calibration_shapes(fam, bits, bits, false);
      if (opts.coarse && shapes.size() > 3) shapes = {shapes.front(), shapes[shapes.size() / 2], shapes.back()};
      for (const kernels::OpDesc& desc : shapes) {
        const auto m = one_layer_model(desc);
        if (m->layers().front().family() != fam) continue;
        const double macs = static_cast<double>(kernels::op_work(m->layers().front().desc));
        for (int t : opts.threads) {
          OnednnNet net(*m, kind, t);
          if (!net.available(0)) {
            if (progress) progress(fmt::format("  {} {}: {}", baseline_name(kind), fam, net.note(0)));
            continue;
          }
          set_onednn_threads(t);
          const Summary s = time_ns([&] { net.run_layer(0); }, opts.timing);
          KernelPeak p;
          p.kernel = baseline_name(kind);
          p.op = fam;
          p.wbits = bits;
          p.abits = bits;
          p.isa = net.note(0);
          p.threads = t;
          p.macs_per_s = macs / (s.min * 1e-9);
          p.iqr = macs / (s.q1 * 1e-9) - macs / (s.q3 * 1e-9);
          const auto it = call_ns.find(t);
          p.compute_macs_per_s = macs / ((s.min - non_compute_ns(s.min, it == call_ns.end() ? 0.0 : it->second, 0.0)) * 1e-9);
          p.shape = kernels::describe(m->layers().front().desc);
          std::tie(p.k, p.n) = gemm_kn(m->layers().front().desc);
          p.m = gemm_m(m->layers().front().desc);
          if (progress)
            progress(fmt::format("  {:<44} {:<16} {} thr  {:8.2f} G/s  k {:<5} n {:<5} m {:<5}", p.kernel, fam, t,
                                 p.macs_per_s * 1e-9, p.k, p.n, p.m));
          out.peaks.push_back(std::move(p));
        }
      }
    }
  }
  return out;
}

namespace {

// Several passes over the whole set of shapes; per shape the fastest pass is
// kept (largest rate), per-call costs the smallest.
PeakCalibration in_passes(const PeakCalibrationOptions& opts, const Progress& progress,
                          PeakCalibration (*once)(const PeakCalibrationOptions&, const Progress&)) {
  if (opts.passes < 1) throw std::invalid_argument("peak calibration: passes must be at least 1");
  PeakCalibrationOptions o = opts;
  o.timing.repeats = std::max(1, (opts.timing.repeats + opts.passes - 1) / opts.passes);
  PeakCalibration out;
  std::map<std::string, size_t> peak_at, overhead_at;
  for (int pass = 0; pass < opts.passes; ++pass) {
    if (progress && opts.passes > 1) progress(fmt::format("  pass {} of {}", pass + 1, opts.passes));
    PeakCalibration r = once(o, progress);
    for (KernelPeak& p : r.peaks) {
      const std::string key = fmt::format("{}|{}|{}|{}|{}", p.kernel, p.op, p.wbits, p.threads, p.shape);
      const auto it = peak_at.find(key);
      if (it == peak_at.end()) {
        peak_at[key] = out.peaks.size();
        out.peaks.push_back(std::move(p));
      } else if (p.macs_per_s > out.peaks[it->second].macs_per_s) {
        out.peaks[it->second] = std::move(p);
      }
    }
    for (KernelOverhead& v : r.overheads) {
      const std::string key = fmt::format("{}|{}|{}", v.kernel, v.op, v.threads);
      const auto it = overhead_at.find(key);
      if (it == overhead_at.end()) {
        overhead_at[key] = out.overheads.size();
        out.overheads.push_back(std::move(v));
      } else if (v.ns < out.overheads[it->second].ns) {
        out.overheads[it->second] = std::move(v);
      }
    }
  }
  return out;
}

}  // namespace

PeakCalibration calibrate_kernel_peaks(const PeakCalibrationOptions& opts, const Progress& progress) {
  return in_passes(opts, progress, kernel_peaks_once);
}

PeakCalibration calibrate_onednn_peaks(const PeakCalibrationOptions& opts, const Progress& progress) {
  return in_passes(opts, progress, onednn_peaks_once);
}

}  // namespace bbits::bench

#include "bbits/bench/bandwidth.h"
#include "bbits/kernels/cpu.h"

namespace bbits::bench {

std::vector<DispatchCost> calibrate_dispatch(const std::vector<int>& threads) {
  std::vector<DispatchCost> out;
  const TimingOptions o{.warmup = 20, .repeats = 201, .min_sample_ns = 0};
  for (int t : threads) {
    if (t <= 1) continue;
    kernels::ThreadPool pool(t);
    const Summary sp = time_ns([&] { pool.parallel_for(t, [](int64_t, int64_t, int) {}, 1); }, o);
    // The lower quartile: the wake-up cost when the other core is free; the
    // median is mostly a measure of how busy the machine is.
    out.push_back({t, "pool", sp.q1});
    set_onednn_threads(t);
    const Summary so = time_ns(
        [&] {
#pragma omp parallel num_threads(t)
          { asm volatile("" ::: "memory"); }
        },
        o);
    out.push_back({t, "openmp", so.q1});
  }
  return out;
}

MachineProbe probe_machine(int threads, int probes) {
  if (threads < 1) throw std::invalid_argument("probe_machine: threads must be at least 1");
  kernels::ConvDesc d;
  d.H = d.W = 28;
  d.C = d.OC = 128;
  d.KH = d.KW = 3;
  d.pad_top = d.pad_left = d.pad_bottom = d.pad_right = 1;
  d.wbits = 8;
  d.in = {8, false, 0.05f};
  d.out = {8, false, 0.05f};
  d.activation = kernels::Activation::Relu;
  const auto m = one_layer_model(d);
  const ModelLayer& L = m->layers().front();
  const kernels::KernelInfo* k = kernels::choose_kernel(L.desc, kernels::detect_isa()).info;
  LayerRunner r(L, *k, threads);
  std::unique_ptr<kernels::ThreadPool> pool;
  if (threads > 1) pool = std::make_unique<kernels::ThreadPool>(threads);
  const TimingOptions o{.warmup = 3, .repeats = 7};
  MachineProbe best{0, 0};
  for (int i = 0; i < std::max(1, probes); ++i) {
    const double t1 = time_ns([&] { r.run(nullptr); }, o).median;
    if (best.one_thread_ns == 0 || t1 < best.one_thread_ns) best.one_thread_ns = t1;
    if (!pool) {
      best.speedup = 1;
      continue;
    }
    const double tt = time_ns([&] { r.run(pool.get()); }, o).median;
    if (tt > 0) best.speedup = std::max(best.speedup, t1 / tt);
  }
  return best;
}

MachineProbe settled_probe(int threads, const std::function<MachineProbe()>& probe, const std::function<void()>& pause,
                           int max_tries) {
  if (threads < 1) throw std::invalid_argument("settled_probe: threads must be at least 1");
  MachineProbe best{0, 0};
  for (int i = 0; i < std::max(1, max_tries); ++i) {
    if (i > 0) pause();
    const MachineProbe p = probe();
    if (best.one_thread_ns == 0 || p.one_thread_ns < best.one_thread_ns) best.one_thread_ns = p.one_thread_ns;
    best.speedup = std::max(best.speedup, p.speedup);
    if (threads < 2 || best.speedup >= 0.75 * threads) break;
  }
  return best;
}

Calibration calibrate_machine(const MachineCalibrationOptions& opts, const Progress& progress) {
  Calibration c;
  c.created = utc_timestamp();
  c.cpu = cpu_model_name();
  c.commit = build_commit();
  PeakCalibrationOptions po = opts.peaks;
  po.max_isa = kernels::detect_isa();
  if (static_cast<int>(opts.peaks.max_isa) < static_cast<int>(po.max_isa)) po.max_isa = opts.peaks.max_isa;
  c.isa = kernels::isa_name(po.max_isa);
  c.read_loop = read_loop_isa();
  bool guessed = false;
  c.caches = detect_caches(&guessed);
  if (progress) {
    std::string caches;
    for (const auto& l : c.caches) caches += fmt::format(" L{} {} KiB (shared by {})", l.level, l.bytes >> 10, l.shared_by);
    progress(fmt::format("caches:{}{}", caches, guessed ? " (guessed: sysfs says nothing)" : ""));
  }
  c.bandwidth = calibrate_bandwidth(c.caches, opts.bandwidth);
  c.reuse = calibrate_reuse(c.caches, opts.bandwidth);
  if (progress)
    for (const auto& r : c.reuse)
      progress(fmt::format("  reuse bandwidth {} thr after {:>4} MiB {:8.1f} GB/s", r.threads, r.distance >> 20,
                           r.bytes_per_s * 1e-9));
  if (progress)
    for (const auto& b : c.bandwidth)
      progress(fmt::format("  read bandwidth {} thr {:<4} {:8.1f} GB/s  (probe {} KiB)", b.threads, b.level,
                           b.bytes_per_s * 1e-9, b.probe_bytes >> 10));
  c.dispatch = calibrate_dispatch(opts.peaks.threads);
  // Up to 30 s per thread count while the vCPUs scale below 75% of linear.
  const auto pause = [] { std::this_thread::sleep_for(std::chrono::milliseconds(500)); };
  for (int t : opts.peaks.threads) {
    const MachineProbe p = settled_probe(t, [t] { return probe_machine(t, 5); }, pause, 60);
    if (c.probe_ns == 0 || p.one_thread_ns < c.probe_ns) c.probe_ns = p.one_thread_ns;
    if (t < 2) continue;
    c.scaling.push_back({t, p.speedup});
    if (progress) progress(fmt::format("  thread scaling {} thr {:6.2f}x", t, c.scaling.back().speedup));
  }
  if (progress) progress(fmt::format("  machine probe, 1 thread: {:.1f} us", c.probe_ns * 1e-3));
  if (progress)
    for (const auto& d : c.dispatch)
      progress(fmt::format("  dispatch {} thr {:<7} {:8.2f} us", d.threads, d.runtime, d.ns * 1e-3));
  po.machine = &c;  // bandwidths (measured above) for the scratch round trip
  PeakCalibration k = calibrate_kernel_peaks(po, progress);
  c.peaks = std::move(k.peaks);
  c.overheads = std::move(k.overheads);
  if (po.onednn) {
    PeakCalibration o = calibrate_onednn_peaks(po, progress);
    c.peaks.insert(c.peaks.end(), o.peaks.begin(), o.peaks.end());
    c.overheads.insert(c.overheads.end(), o.overheads.begin(), o.overheads.end());
  }
  // The probe again after the peaks (minutes later): the best of both.
  for (auto& s : c.scaling) {
    const MachineProbe p = probe_machine(s.threads, 5);
    if (p.speedup > s.speedup) {
      if (progress) progress(fmt::format("  thread scaling {} thr {:6.2f}x (after the peaks)", s.threads, p.speedup));
      s.speedup = p.speedup;
    }
    c.probe_ns = std::min(c.probe_ns, p.one_thread_ns);
  }
  return c;
}

}  // namespace bbits::bench
