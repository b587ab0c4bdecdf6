#include "bbits/bench/model_bench.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <map>
#include <random>
#include <stdexcept>
#include <thread>

#include "bbits/bench/layer_runner.h"
#include "bbits/bench/model_layers.h"
#include "bbits/bench/onednn_baseline.h"
#include "bbits/bench/peaks.h"
#include "bbits/bench/roofline.h"
#include "bbits/bench/sysinfo.h"
#include "bbits/kernels/cpu.h"
#include "bbits/kernels/thread_pool.h"
#include "bbits/runtime.h"

namespace bbits::bench {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

Cell num(double v) { return std::isfinite(v) ? Cell{v} : Cell{}; }
Cell us(const Summary* s) { return s ? Cell{s->median * 1e-3} : Cell{}; }

// The same layer (same kept channels) with weights and activations at `bits`
// (32: float32): what the oneDNN baselines move and compute.
LayerCost baseline_cost(const ModelLayer& L, int bits) {
  LayerCost c = L.cost();
  const int64_t act_bytes = bits == 32 ? 4 : 1;
  auto elem = [&](const kernels::QuantInfo& q) { return q.is_float() ? int64_t{4} : act_bytes; };
  c.input_bytes = 0;
  for (int i = 0; i < kernels::num_inputs(L.desc); ++i)
    c.input_bytes += kernels::input_elements(L.desc, i) * elem(kernels::input_quant(L.desc, i));
  c.output_bytes = kernels::output_elements(L.desc) * elem(kernels::output_quant(L.desc));
  if (c.macs > 0) {
    int64_t welems = 0, oc = 0;
    if (const auto* d = std::get_if<kernels::ConvDesc>(&L.desc)) {
      welems = d->OC * d->K();
      oc = d->OC;
    } else if (const auto* f = std::get_if<kernels::FcDesc>(&L.desc)) {
      welems = f->OC * f->K;
      oc = f->OC;
    }
    c.weight_bytes = welems * (bits == 32 ? 4 : 1) + 4 * oc;
    c.wbits = bits;
    c.abits = bits;
  }
  return c;
}

// BOP speedup against the same layer shape at ref bits.
double bop_ratio(const LayerCost& c, int ref) {
  if (c.macs <= 0 || c.wbits <= 0 || c.abits <= 0) return kNaN;
  return static_cast<double>(ref) * ref / (static_cast<double>(c.wbits) * c.abits);
}

double ratio(double a, double b) {
  if (!(a > 0) || !(b > 0) || !std::isfinite(a) || !std::isfinite(b)) return kNaN;
  return a / b;
}

struct Pred {
  double ns = kNaN;          // NaN: no prediction (kernel not calibrated)
  RooflinePrediction r;      // its terms when there is one
  double term(double RooflinePrediction::*t) const { return std::isfinite(ns) ? r.*t : kNaN; }
};

Pred predict(const LayerCost& c, const Calibration& cal, const std::string& kernel, const std::string& family,
             int threads, std::pair<int64_t, int64_t> kn, int64_t weights_reuse_bytes = 0) {
  // The oneDNN baselines start their threads through OpenMP; the plan's
  // kernels built on oneDNN run one OpenMP thread each and split over the
  // session's pool like every other kernel.
  const bool omp = kernel == baseline_name(BaselineKind::F32) || kernel == baseline_name(BaselineKind::Int8);
  Pred p;
  if (auto r = predict_roofline(c, cal, kernel, family, threads, kn, weights_reuse_bytes, omp ? "openmp" : "pool")) {
    p.r = *r;
    p.ns = r->time_ns;
  }
  return p;
}

}  // namespace

const std::vector<Column>& bench_columns() {
  static const std::vector<Column> cols = {
      {"scope"},          {"threads"},         {"index"},        {"layer"},        {"op"},
      {"kernel"},         {"wbits"},           {"abits"},        {"macs"},         {"bops"},
      {"bytes"},          {"level"},           {"bound"},        {"t_us", 1},      {"t_iqr_us", 1},
      {"t_f32_us", 1},    {"t_int8_us", 1},    {"roof_us", 1},   {"roof_err", 2},  {"bop_x32", 1},
      {"roof_x32", 2},    {"meas_x32", 2},     {"bop_err32", 2}, {"roof_err32", 2}, {"bop_x8", 2},
      {"roof_x8", 2},     {"meas_x8", 2},      {"bop_err8", 2},  {"roof_err8", 2}, {"t_layers_sum_us", 1},
      {"t_kernel_us", 1}, {"t_kernel_iqr_us", 1}, {"roof_err_kernel", 2}, {"onednn_f32_impl"}, {"onednn_int8_impl"},
      {"roof_compute_us", 2}, {"roof_memory_us", 2}, {"roof_epilogue_us", 2}, {"roof_call_us", 2}, {"dominant"}, {"weights_level"}, {"roof_kernel_us", 1},
      {"weight_bytes"}, {"act_bytes"}, {"t_outside_us", 1}, {"outside_share", 3}, {"t_unfused_us", 1}};
  return cols;
}

const std::vector<std::string>& terminal_columns() {
  static const std::vector<std::string> c = {"threads", "index", "layer",   "kernel",  "wbits",  "abits",
                                             "t_us",    "t_iqr_us", "t_f32_us", "t_int8_us", "roof_us", "roof_err",
                                             "bop_x32", "meas_x32", "bop_x8",  "meas_x8", "roof_x8"};
  return c;
}

nlohmann::json ModelBenchResult::to_json() const {
  nlohmann::json j = bench::to_json(rows, meta);
  j["roofline_within_25pct"] = nlohmann::json::array();
  for (const auto& [t, r] : roofline_hit_rate) j["roofline_within_25pct"].push_back({{"threads", t}, {"share", r}});
  j["warnings"] = warnings;
  return j;
}

ModelBenchResult run_model_bench(const std::string& model_path, const ModelBenchOptions& opts,
                                 const std::function<void(const std::string&)>& progress) {
  if (opts.threads.empty()) throw std::invalid_argument("bench: no thread counts");
  if (!(opts.max_wait_s >= 0) || opts.max_wait_s > 3600)
    throw std::invalid_argument(fmt::format("bench: max_wait_s must be 0..3600, got {}", opts.max_wait_s));
  if (opts.passes < 1 || opts.passes > 100)
    throw std::invalid_argument(fmt::format("bench: passes must be 1..100, got {}", opts.passes));
  for (int t : opts.threads)
    if (t < 1 || t > 256) throw std::invalid_argument(fmt::format("bench: thread count {} out of range 1..256", t));
  auto say = [&](const std::string& s) {
    if (progress) progress(s);
  };
  const auto ml = ModelLayers::load(model_path);
  const bbits::Model* model = &ml->model();
  const auto& info = model->info();
  const kernels::Isa isa = kernels::detect_isa();
  const Calibration& cal = opts.calibration;

  ModelBenchResult res;
  res.meta = {{"model", model_path},
              {"arch", ml->arch()},
              {"method", ml->method()},
              {"cpu", cpu_model_name()},
              {"isa", model->isa()},
              {"commit", build_commit()},
              {"created", utc_timestamp()},
              {"onednn", onednn_info()},
              {"calibration", opts.calibration_path},
              {"omp_wait_policy", std::getenv("OMP_WAIT_POLICY") ? std::getenv("OMP_WAIT_POLICY") : "default"},
              {"repeats", std::to_string(opts.timing.repeats)},
              {"passes", std::to_string(opts.passes)},
              {"relative_bops", fmt::format("{:.6f}", info.relative_bops())}};
  res.rows = Table(bench_columns());

  // Kernels as the plan chose them.
  std::vector<const kernels::KernelInfo*> chosen;
  for (size_t i = 0; i < ml->layers().size(); ++i)
    chosen.push_back(pick_kernel(ml->layers()[i], ml->layers()[i].kernel, isa));

  bool profiled = true;
  double waited_s = 0;  // waiting for the machine probe, all thread counts
  for (int t : opts.threads) {
    std::unique_ptr<kernels::ThreadPool> pool;
    if (t > 1) pool = std::make_unique<kernels::ThreadPool>(t);
    // The plan's kernels (those built on oneDNN included) split over `pool`;
    // only the oneDNN baselines run on OpenMP threads.
    const size_t n = ml->layers().size();
    std::vector<Summary> tb(n);
    std::vector<int64_t> scratch(n, 0);
    std::vector<std::optional<Summary>> tf(n), ti(n);
    std::optional<Summary> whole_f, whole_i, whole_b;
    std::optional<Summary> whole_u;  // the session with every layer as its own step (fuse_adds = false)
    std::vector<Summary> ts;  // per-layer times inside a profiled session (empty: unavailable)
    std::vector<std::string> impl_f(n), impl_i(n);

    // Everything is created once, then timed in `passes` passes over all the
    // measurements (kernels alone, baselines, session, profiled session);
    // each measurement keeps its fastest pass (smallest median), as the
    // calibration keeps each peak's fastest pass. On a shared machine a pass
    // that a busy neighbour slowed down then does not decide a layer's time.
    std::vector<std::unique_ptr<LayerRunner>> runners;
    for (size_t i = 0; i < n; ++i) {
      runners.push_back(std::make_unique<LayerRunner>(ml->layers()[i], *chosen[i], t, 1 + i));
      scratch[i] = static_cast<int64_t>(runners.back()->scratch_bytes(t));
    }
    std::vector<std::unique_ptr<OnednnNet>> nets;  // f32, int8
    if (opts.baselines) {
      for (BaselineKind kind : {BaselineKind::F32, BaselineKind::Int8}) {
        nets.push_back(std::make_unique<OnednnNet>(*ml, kind, t));
        auto& impl = kind == BaselineKind::F32 ? impl_f : impl_i;
        for (size_t i = 0; i < n; ++i) impl[i] = nets.back()->note(i);
      }
    }
    std::shared_ptr<const bbits::Model> run_model;
    std::unique_ptr<bbits::Session> session, prof, unfused;
    std::vector<bbits::QuantizedTensor> qin;
    std::vector<bbits::Tensor> fin;
    bool quantized = true;
    if (opts.whole_model) {
      run_model = bbits::Model::load(model_path);
      session = std::make_unique<bbits::Session>(run_model, bbits::SessionOptions{.threads = t});
      // Per-layer times inside the session (SessionOptions::profile): each
      // layer reads what the previous one just wrote, as in real use.
      prof = std::make_unique<bbits::Session>(run_model, bbits::SessionOptions{.threads = t, .profile = true});
      unfused = std::make_unique<bbits::Session>(run_model, bbits::SessionOptions{.threads = t, .fuse_adds = false});
      std::mt19937 rng(3);
      for (size_t i = 0; i < run_model->num_inputs(); ++i)
        if (run_model->input(i).bits == 32) quantized = false;
      for (size_t i = 0; i < run_model->num_inputs(); ++i) {
        const auto& ti_ = run_model->input(i);
        if (quantized) {
          bbits::QuantizedTensor q;
          q.shape = ti_.shape;
          q.bits = ti_.bits;
          q.is_signed = ti_.is_signed;
          q.scale = ti_.scale.empty() ? 1.0f : ti_.scale[0];
          std::uniform_int_distribution<int32_t> u(static_cast<int32_t>(bbits::qmin(q.bits, q.is_signed)),
                                                   static_cast<int32_t>(bbits::qmax(q.bits, q.is_signed)));
          q.data.resize(static_cast<size_t>(ti_.elements()));
          for (auto& v : q.data) v = u(rng);
          qin.push_back(std::move(q));
        } else {
          bbits::Tensor x;
          x.shape = ti_.shape;
          std::uniform_real_distribution<float> u(-1.f, 1.f);
          x.data.resize(static_cast<size_t>(ti_.elements()));
          for (auto& v : x.data) v = u(rng);
          fin.push_back(std::move(x));
        }
      }
    }
    // The machine's state before each pass (see ModelBenchOptions::max_wait_s):
    // the probe's 1-thread time within 15% of the calibration's, and its
    // thread scaling at least 85% of the calibrated one.
    const std::optional<double> cal_scaling = t > 1 ? cal.scaling_for(t) : std::nullopt;
    const bool check_speed = cal.probe_ns > 0;
    std::vector<MachineProbe> probes;
    auto state_ok = [&](const MachineProbe& p) {
      return (!check_speed || p.one_thread_ns <= 1.15 * cal.probe_ns) &&
             (!cal_scaling || p.speedup >= 0.85 * *cal_scaling);
    };
    auto settle = [&] {
      if (!check_speed && !cal_scaling) return;
      MachineProbe p = probe_machine(t, 1);
      bool said = false;
      while (!state_ok(p) && waited_s < opts.max_wait_s) {
        if (!said)
          say(fmt::format("the machine is slower than at calibration (probe {:.1f} us on 1 thread, {:.1f} at "
                          "calibration; {} threads {:.2f}x, {:.2f}x at calibration): waiting",
                          p.one_thread_ns * 1e-3, cal.probe_ns * 1e-3, t, p.speedup, cal_scaling.value_or(1.0)));
        said = true;
        std::this_thread::sleep_for(std::chrono::milliseconds(500));
        waited_s += 0.5;
        p = probe_machine(t, 1);
      }
      probes.push_back(p);
    };
    auto keep = [](std::optional<Summary>& best, const Summary& s) {
      if (!best || s.median < best->median) best = s;
    };
    std::vector<std::optional<Summary>> tb_best(n), ts_best(n);
    // Time of a profiled run outside its layers (Session::run_ns less the
    // sum of layer_ns: input and output conversion, the step loop), and the
    // profiled run as a whole, from the same runs.
    std::optional<Summary> outside_best, prof_run_best;
    bool ts_ok = opts.whole_model;
    for (int pass = 0; pass < opts.passes; ++pass) {
      settle();
      for (size_t i = 0; i < n; ++i) keep(tb_best[i], time_ns([&] { runners[i]->run(pool.get()); }, opts.timing));
      say(fmt::format("bbits layers timed ({} threads, pass {} of {})", t, pass + 1, opts.passes));
      for (auto& net : nets) {
        const bool f32 = net.get() == nets.front().get();
        set_onednn_threads(t);
        auto& dst = f32 ? tf : ti;
        for (size_t i = 0; i < n; ++i)
          if (net->available(i)) keep(dst[i], time_ns([&] { net->run_layer(i); }, opts.timing));
        keep(f32 ? whole_f : whole_i, time_ns([&] { net->run_all(); }, opts.timing));
        say(fmt::format("{} timed ({} threads, pass {} of {})", baseline_name(f32 ? BaselineKind::F32 : BaselineKind::Int8),
                        t, pass + 1, opts.passes));
      }
      if (!opts.whole_model) continue;
      auto run_on = [&](bbits::Session& sess) {
        if (quantized)
          sess.run_quantized(qin);
        else
          sess.run(fin);
      };
      // Fused and unfused sessions timed in turn, twice (A B A B): their
      // ratio is the residual-add fusion's gain on this machine.
      for (int ab = 0; ab < 2; ++ab) {
        keep(whole_b, time_ns([&] { run_on(*session); }, opts.timing));
        keep(whole_u, time_ns([&] { run_on(*unfused); }, opts.timing));
      }
      for (int w = 0; w < opts.timing.warmup; ++w) run_on(*prof);
      std::vector<std::vector<double>> samples(n);
      std::vector<double> outside, prof_run;
      for (int r = 0; r < opts.timing.repeats; ++r) {
        run_on(*prof);
        const std::vector<double>& ns = prof->layer_ns();
        if (ns.size() != n) break;
        double sum = 0;
        for (size_t i = 0; i < n; ++i) {
          samples[i].push_back(ns[i]);
          sum += ns[i];
        }
        outside.push_back(prof->run_ns() - sum);
        prof_run.push_back(prof->run_ns());
      }
      if (!samples.empty() && samples[0].size() == static_cast<size_t>(opts.timing.repeats)) {
        for (size_t i = 0; i < n; ++i) keep(ts_best[i], summarize(samples[i]));
        const Summary o = summarize(outside), w = summarize(prof_run);
        if (!prof_run_best || w.median < prof_run_best->median) {
          prof_run_best = w;
          outside_best = o;
        }
      } else {
        ts_ok = false;
      }
      say(fmt::format("bbits session and its layers timed ({} threads, pass {} of {})", t, pass + 1, opts.passes));
    }
    if (check_speed) {
      std::string p;
      for (const auto& v : probes) p += fmt::format(" {:.1f}", v.one_thread_ns * 1e-3);
      res.meta.emplace_back(fmt::format("probe_us_{}", t),
                            fmt::format("calibrated {:.1f}; before each pass{}", cal.probe_ns * 1e-3, p));
    }
    if (cal_scaling) {
      std::string p;
      for (const auto& v : probes) p += fmt::format(" {:.2f}", v.speedup);
      res.meta.emplace_back(fmt::format("thread_scaling_{}", t),
                            fmt::format("calibrated {:.2f}; before each pass{}", *cal_scaling, p));
    }
    int slow = 0;
    for (const auto& v : probes) slow += state_ok(v) ? 0 : 1;
    if (slow > 0)
      res.warnings.push_back(fmt::format(
          "{} threads: {} of {} passes ran while the machine probe was more than 15% slower on one thread or "
          "below 85% of the calibrated thread scaling (run facts probe_us_{} / thread_scaling_{}): those passes "
          "are slower than the calibration assumes",
          t, slow, probes.size(), t, t));
    for (size_t i = 0; i < n; ++i) tb[i] = *tb_best[i];
    if (ts_ok) {
      ts.resize(n);
      for (size_t i = 0; i < n; ++i) ts[i] = *ts_best[i];
    }

    // ---- rows -------------------------------------------------------------------
    // Inside a session, everything one run touches passes through the caches
    // between two calls of a layer: its weights come back after one whole
    // run's bytes (roofline(): the reuse bandwidth at that distance).
    // The baselines' predictions are taken the same way (their own run's
    // bytes), so that the predicted speedups compare like with like.
    int64_t run_bytes = 0, run_bytes_f = 0, run_bytes_i = 0;
    for (const ModelLayer& L : ml->layers()) {
      run_bytes += L.cost().bytes();
      run_bytes_f += baseline_cost(L, 32).bytes();
      run_bytes_i += baseline_cost(L, 8).bytes();
    }
    double sum_roof = 0, sum_roof_f = 0, sum_roof_i = 0, sum_t = 0;
    bool roof_ok = true, roof_f_ok = true, roof_i_ok = true;
    int64_t tot_macs = 0, tot_bops = 0, tot_bytes = 0, bops32 = 0, bops8 = 0;
    int hits = 0, judged = 0;
    for (size_t i = 0; i < n; ++i) {
      const ModelLayer& L = ml->layers()[i];
      LayerCost c = L.cost();
      c.scratch_bytes = scratch[i];
      const std::string fam = L.family();
      const auto kn = gemm_kn(L.desc);
      // The prediction for the layer inside the session (cold weights) and
      // for the kernel run on its own (everything hot).
      const Pred pk = predict(c, cal, chosen[i]->name, fam, t, kn);
      const Pred pb = ts.empty() ? pk : predict(c, cal, chosen[i]->name, fam, t, kn, run_bytes);
      const Pred pf = predict(baseline_cost(L, 32), cal, baseline_name(BaselineKind::F32), fam, t, kn,
                              ts.empty() ? 0 : run_bytes_f);
      const Pred pi = predict(baseline_cost(L, 8), cal, baseline_name(BaselineKind::Int8), fam, t, kn,
                              ts.empty() ? 0 : run_bytes_i);
      // The layer's time: inside the session when profiled, else the kernel alone.
      const Summary& tl = ts.empty() ? tb[i] : ts[i];
      const double tm = tl.median;
      const double t32 = tf[i] ? tf[i]->median : kNaN;
      const double t8 = ti[i] ? ti[i]->median : kNaN;
      const double bx32 = bop_ratio(c, 32), bx8 = bop_ratio(c, 8);
      const double rx32 = ratio(pf.ns, pb.ns), rx8 = ratio(pi.ns, pb.ns);
      const double mx32 = ratio(t32, tm), mx8 = ratio(t8, tm);
      const double rerr = relative_error(pb.ns, tm);
      if (std::isfinite(rerr)) {
        ++judged;
        if (std::fabs(rerr) <= 0.25) ++hits;
      }
      sum_t += tm;
      if (std::isfinite(pb.ns)) sum_roof += pb.ns; else roof_ok = false;
      if (std::isfinite(pf.ns)) sum_roof_f += pf.ns; else roof_f_ok = false;
      if (std::isfinite(pi.ns)) sum_roof_i += pi.ns; else roof_i_ok = false;
      tot_macs += c.macs;
      tot_bops += layer_bops(c);
      tot_bytes += c.bytes();
      if (c.macs > 0) {
        bops32 += c.macs * 32 * 32;
        bops8 += c.macs * 8 * 8;
      }
      res.rows.add_row({std::string("layer"), int64_t{t}, int64_t{L.index}, L.name, fam, chosen[i]->name,
                        c.macs > 0 ? Cell{int64_t{c.wbits}} : Cell{}, int64_t{c.abits}, c.macs, layer_bops(c),
                        c.bytes(), pb.r.level, std::string(std::isfinite(pb.ns) ? (pb.r.compute_bound() ? "compute" : "memory") : ""),
                        us(&tl), num(tl.iqr() * 1e-3),
                        tf[i] ? us(&*tf[i]) : Cell{}, ti[i] ? us(&*ti[i]) : Cell{}, num(pb.ns * 1e-3), num(rerr),
                        num(bx32), num(rx32), num(mx32), num(relative_error(bx32, mx32)),
                        num(relative_error(rx32, mx32)), num(bx8), num(rx8), num(mx8),
                        num(relative_error(bx8, mx8)), num(relative_error(rx8, mx8)), Cell{}, us(&tb[i]),
                        num(tb[i].iqr() * 1e-3), num(relative_error(pk.ns, tb[i].median)), impl_f[i], impl_i[i],
                        num(pb.term(&RooflinePrediction::compute_ns) * 1e-3),
                        num(pb.term(&RooflinePrediction::memory_ns) * 1e-3),
                        num(pb.term(&RooflinePrediction::epilogue_ns) * 1e-3),
                        num(pb.term(&RooflinePrediction::overhead_ns) * 1e-3),
                        std::isfinite(pb.ns) ? pb.r.dominant() : std::string(), pb.r.weights_level, num(pk.ns * 1e-3),
                        c.weight_bytes, c.input_bytes + c.output_bytes, Cell{}, Cell{}, Cell{}});
    }
    if (ts.empty()) profiled = false;
    const double share = judged > 0 ? static_cast<double>(hits) / judged : kNaN;
    res.roofline_hit_rate.emplace_back(t, share);
    // Whole model: measured end to end; predictions are sums over the layers.
    const double tw = whole_b ? whole_b->median : kNaN;
    const double tw32 = whole_f ? whole_f->median : kNaN, tw8 = whole_i ? whole_i->median : kNaN;
    const double proof = roof_ok ? sum_roof : kNaN;
    const double bx32 = tot_bops > 0 ? static_cast<double>(bops32) / tot_bops : kNaN;
    const double bx8 = tot_bops > 0 ? static_cast<double>(bops8) / tot_bops : kNaN;
    const double rx32 = roof_f_ok ? ratio(sum_roof_f, proof) : kNaN;
    const double rx8 = roof_i_ok ? ratio(sum_roof_i, proof) : kNaN;
    const double mx32 = ratio(tw32, tw), mx8 = ratio(tw8, tw);
    res.rows.add_row({std::string("model"), int64_t{t}, int64_t{-1}, std::string("(whole model)"), std::string(""),
                      std::string("bbits::Session"), Cell{}, Cell{}, tot_macs, tot_bops, tot_bytes, std::string(""),
                      std::string(""), whole_b ? us(&*whole_b) : Cell{}, whole_b ? num(whole_b->iqr() * 1e-3) : Cell{},
                      whole_f ? us(&*whole_f) : Cell{}, whole_i ? us(&*whole_i) : Cell{}, num(proof * 1e-3),
                      num(relative_error(proof, tw)), num(bx32), num(rx32), num(mx32), num(relative_error(bx32, mx32)),
                      num(relative_error(rx32, mx32)), num(bx8), num(rx8), num(mx8), num(relative_error(bx8, mx8)),
                      num(relative_error(rx8, mx8)), num(sum_t * 1e-3), Cell{}, Cell{}, Cell{}, std::string(""),
                      std::string(""), Cell{}, Cell{}, Cell{}, Cell{}, std::string(""), std::string(""), Cell{},
                      Cell{}, Cell{}, outside_best ? us(&*outside_best) : Cell{},
                      outside_best ? num(outside_best->median / prof_run_best->median) : Cell{},
                      whole_u ? us(&*whole_u) : Cell{}});
  }
  res.meta.emplace_back("layer_timing", profiled ? "session profile (Session::layer_ns, one run per sample)"
                                                 : "each kernel alone (t_kernel_us)");
  return res;
}

std::string summary_text(const ModelBenchResult& r) {
  std::string s;
  for (const auto& w : r.warnings) s += "warning: " + w + "\n";
  const auto& rows = r.rows.rows();
  const size_t c_scope = r.rows.column_index("scope"), c_thr = r.rows.column_index("threads");
  auto get = [&](const std::vector<Cell>& row, const char* col) {
    const Cell& c = row[r.rows.column_index(col)];
    if (const auto* d = std::get_if<double>(&c)) return *d;
    if (const auto* i = std::get_if<int64_t>(&c)) return static_cast<double>(*i);
    return kNaN;
  };
  for (const auto& [t, share] : r.roofline_hit_rate) {
    std::vector<double> rerr, kerr, berr8, berr32;
    for (const auto& row : rows) {
      if (std::get<std::string>(row[c_scope]) != "layer" || std::get<int64_t>(row[c_thr]) != t) continue;
      const double e = get(row, "roof_err"), b8 = get(row, "bop_err8"), b32 = get(row, "bop_err32");
      const double ek = get(row, "roof_err_kernel");
      if (std::isfinite(e)) rerr.push_back(std::fabs(e));
      if (std::isfinite(ek)) kerr.push_back(std::fabs(ek));
      if (std::isfinite(b8)) berr8.push_back(b8);
      if (std::isfinite(b32)) berr32.push_back(b32);
    }
    for (const auto& row : rows) {
      if (std::get<std::string>(row[c_scope]) != "model" || std::get<int64_t>(row[c_thr]) != t) continue;
      const double o = get(row, "t_outside_us"), sh = get(row, "outside_share");
      if (std::isfinite(o) && std::isfinite(sh))
        s += fmt::format("threads {}: time outside the layers {:.1f} us per run ({:.1f}% of a profiled run)\n", t, o,
                         sh * 100);
      const double tf = get(row, "t_us"), tu = get(row, "t_unfused_us");
      if (std::isfinite(tf) && std::isfinite(tu))
        s += fmt::format("threads {}: whole model {:.1f} us with residual adds fused, {:.1f} us unfused ({:.3f}x)\n", t,
                         tf, tu, tu / tf);
    }
    s += fmt::format("threads {}: roofline within +/-25% of the measured time for {:.0f}% of {} layers", t,
                     std::isfinite(share) ? share * 100 : 0.0, rerr.size());
    if (!rerr.empty()) s += fmt::format(" (median |error| {:.0f}%)", summarize(rerr).median * 100);
    s += "\n";
    // Which term of the prediction is the largest, and how often the
    // prediction holds for the layers it dominates.
    std::map<std::string, std::pair<int, int>> by_term;  // dominant term -> (layers, within 25%)
    const size_t c_dom = r.rows.column_index("dominant");
    for (const auto& row : rows) {
      if (std::get<std::string>(row[c_scope]) != "layer" || std::get<int64_t>(row[c_thr]) != t) continue;
      const auto* d = std::get_if<std::string>(&row[c_dom]);
      const double e = get(row, "roof_err");
      if (!d || d->empty() || !std::isfinite(e)) continue;
      auto& b = by_term[*d];
      ++b.first;
      b.second += std::fabs(e) <= 0.25 ? 1 : 0;
    }
    if (!by_term.empty()) {
      s += fmt::format("threads {}: largest term of the prediction:", t);
      for (const auto& [term, b] : by_term)
        s += fmt::format(" {} {} layers ({} within +/-25%),", term, b.first, b.second);
      s.back() = '\n';
    }
    if (!kerr.empty()) {
      size_t k_hits = 0;
      for (double e : kerr) k_hits += e <= 0.25 ? 1 : 0;
      s += fmt::format("threads {}: the same against each kernel timed alone: {:.0f}% (median |error| {:.0f}%)\n", t,
                       100.0 * static_cast<double>(k_hits) / static_cast<double>(kerr.size()),
                       summarize(kerr).median * 100);
    }
    if (!berr8.empty()) {
      const Summary b = summarize(berr8);
      s += fmt::format("threads {}: BOP-predicted speedup vs oneDNN int8: median error {:+.0f}% (IQR {:+.0f}%..{:+.0f}%)\n",
                       t, b.median * 100, b.q1 * 100, b.q3 * 100);
    }
    if (!berr32.empty()) {
      const Summary b = summarize(berr32);
      s += fmt::format("threads {}: BOP-predicted speedup vs oneDNN f32: median error {:+.0f}% (IQR {:+.0f}%..{:+.0f}%)\n",
                       t, b.median * 100, b.q1 * 100, b.q3 * 100);
    }
  }
  return s;
}

}  // namespace bbits::bench
