#include "bbits/bench/peaks.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <tuple>

#include "bbits/bench/layer_runner.h"
#include "bbits/bench/model_layers.h"
#include "bbits/bench/onednn_baseline.h"
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

std::vector<kernels::OpDesc> calibration_shapes(const std::string& family, int wbits, int abits, bool small) {
  const kernels::OpDesc rep = representative_desc(family, wbits, abits, small);
  std::vector<kernels::OpDesc> out;
  if (small) return {rep};
  auto side = [](double macs_target, double macs_per_pixel) {
    const double s = std::sqrt(macs_target / macs_per_pixel);
    return static_cast<int64_t>(std::clamp(std::round(s), 7.0, 112.0));
  };
  if (family == "conv2d" || family == "pointwise" || family == "depthwise") {
    const auto base = std::get<kernels::ConvDesc>(rep);
    std::vector<int64_t> cs, ocs;
    if (family == "conv2d") {
      cs = {3, 16, 64, 256};
      ocs = {16, 64, 256};
    } else if (family == "pointwise") {
      cs = {16, 64, 256, 1024};
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
        const double per_pixel = static_cast<double>(d.K()) * static_cast<double>(d.OC);
        d.H = d.W = side(family == "depthwise" ? 2e6 : 15e6, per_pixel);
        out.push_back(d);
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

std::vector<KernelPeak> calibrate_kernel_peaks(const PeakCalibrationOptions& opts, const Progress& progress) {
  std::vector<KernelPeak> out;
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
    for (const int wb : widths)
    for (const std::string& fam : peak_families()) {
      if (!serves(k, fam)) continue;
      // Reference kernels (slow, rarely chosen) get one small shape.
      const bool small = k.isa == kernels::Isa::Reference && has_weights;
      for (const kernels::OpDesc& desc : calibration_shapes(fam, wb, ab, small)) {
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
          // Kernels built on oneDNN run on OpenMP and size their work partition
          // when created: set the thread count first.
          set_onednn_threads(t);
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
          p.shape = kernels::describe(L.desc);
          std::tie(p.k, p.n) = gemm_kn(L.desc);
          if (progress)
            progress(fmt::format("  {:<44} {:<16} {} thr  {:8.2f} G/s  k {:<5} n {:<5}", k.name, fam, t,
                                 p.macs_per_s * 1e-9, p.k, p.n));
          out.push_back(std::move(p));
        } catch (const std::exception& e) {
          if (progress) progress(fmt::format("  {} {}: failed ({})", k.name, fam, e.what()));
        }
      }
      }
    }
  }
  return out;
}

std::vector<KernelPeak> calibrate_onednn_peaks(const PeakCalibrationOptions& opts, const Progress& progress) {
  std::vector<KernelPeak> out;
  for (BaselineKind kind : {BaselineKind::F32, BaselineKind::Int8}) {
    const int bits = kind == BaselineKind::F32 ? 32 : 8;
    for (const std::string& fam : peak_families()) {
      for (const kernels::OpDesc& desc : calibration_shapes(fam, bits, bits, false)) {
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
        p.shape = kernels::describe(m->layers().front().desc);
        std::tie(p.k, p.n) = gemm_kn(m->layers().front().desc);
        if (progress)
          progress(fmt::format("  {:<44} {:<16} {} thr  {:8.2f} G/s  k {:<5} n {:<5}", p.kernel, fam, t,
                               p.macs_per_s * 1e-9, p.k, p.n));
        out.push_back(std::move(p));
      }
      }
    }
  }
  return out;
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
  if (progress)
    for (const auto& b : c.bandwidth)
      progress(fmt::format("  read bandwidth {} thr {:<4} {:8.1f} GB/s  (probe {} KiB)", b.threads, b.level,
                           b.bytes_per_s * 1e-9, b.probe_bytes >> 10));
  c.dispatch = calibrate_dispatch(opts.peaks.threads);
  if (progress)
    for (const auto& d : c.dispatch)
      progress(fmt::format("  dispatch {} thr {:<7} {:8.2f} us", d.threads, d.runtime, d.ns * 1e-3));
  c.peaks = calibrate_kernel_peaks(po, progress);
  if (po.onednn) {
    auto o = calibrate_onednn_peaks(po, progress);
    c.peaks.insert(c.peaks.end(), o.begin(), o.end());
  }
  return c;
}

}  // namespace bbits::bench
