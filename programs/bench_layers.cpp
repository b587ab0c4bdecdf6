// Google Benchmark: every layer of a model (or, without a model, one
// representative layer per family and bit width) through the kernel bbits
// chooses and through the oneDNN float32 and int8 baselines, at 1 and 2
// threads; plus the whole model through bbits::Session.
//   bench_layers [--model FILE.bbm] [--benchmark_filter=...] [--benchmark_format=json]
// Counters: MAC/s (rate), macs, wbits, abits. Context: cpu, isa, commit.
#include <benchmark/benchmark.h>
#include <fmt/format.h>

#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "bbits/bench/layer_runner.h"
#include "bbits/bench/model_layers.h"
#include "bbits/bench/onednn_baseline.h"
#include "bbits/bench/peaks.h"
#include "bbits/bench/synthetic.h"
#include "bbits/bench/sysinfo.h"
#include "bbits/kernels/cpu.h"
#include "bbits/kernels/thread_pool.h"
#include "bbits/runtime.h"

namespace bb = bbits::bench;
namespace kn = bbits::kernels;

namespace {

// Models stay alive for the whole run (benchmarks refer to their layers).
std::vector<std::unique_ptr<bb::ModelLayers>> g_models;
std::map<int, std::unique_ptr<kn::ThreadPool>> g_pools;

kn::ThreadPool* pool_for(int threads) {
  if (threads <= 1) return nullptr;
  auto& p = g_pools[threads];
  if (!p) p = std::make_unique<kn::ThreadPool>(threads);
  return p.get();
}

void set_counters(benchmark::State& state, const bb::LayerCost& c) {
  state.counters["MAC/s"] = benchmark::Counter(static_cast<double>(c.macs), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["macs"] = static_cast<double>(c.macs);
  state.counters["wbits"] = c.wbits;
  state.counters["abits"] = c.abits;
}

void register_layer(const bb::ModelLayer& L, const std::string& prefix, const std::string& kernel_name) {
  const kn::KernelInfo* k = bb::pick_kernel(L, kernel_name, kn::detect_isa());
  for (int t : {1, 2}) {
    benchmark::RegisterBenchmark(fmt::format("bbits/{}/{}/{}/threads:{}", prefix, L.name, k->name, t).c_str(),
                                 [&L, k, t](benchmark::State& state) {
                                   bb::LayerRunner r(L, *k, t);
                                   for (auto _ : state) r.run(pool_for(t));
                                   set_counters(state, L.cost());
                                 })
        ->UseRealTime();
  }
}

void register_baselines(const bb::ModelLayers& m, const std::string& prefix) {
  for (size_t i = 0; i < m.layers().size(); ++i) {
    const bb::ModelLayer& L = m.layers()[i];
    for (auto kind : {bb::BaselineKind::F32, bb::BaselineKind::Int8})
      for (int t : {1, 2})
        benchmark::RegisterBenchmark(
            fmt::format("{}/{}/{}/threads:{}", bb::baseline_name(kind), prefix, L.name, t).c_str(),
            [&m, &L, i, kind, t](benchmark::State& state) {
              bb::OnednnNet net(m, kind, t);
              if (!net.available(i)) {
                state.SkipWithError(net.note(i).c_str());
                return;
              }
              bb::set_onednn_threads(t);
              for (auto _ : state) net.run_layer(i);
              set_counters(state, L.cost());
              // The baseline runs the layer at its own widths.
              const int bits = kind == bb::BaselineKind::F32 ? 32 : 8;
              if (L.cost().macs > 0) state.counters["wbits"] = bits;
              state.counters["abits"] = bits;
            })
            ->UseRealTime();
  }
}

void register_model(const std::string& path) {
  g_models.push_back(bb::ModelLayers::load(path));
  const bb::ModelLayers& m = *g_models.back();
  const auto model = bbits::Model::load(path);
  for (size_t i = 0; i < m.layers().size(); ++i) register_layer(m.layers()[i], "model", model->info().layers[i].kernel);
  register_baselines(m, "model");
  for (int t : {1, 2})
    benchmark::RegisterBenchmark(fmt::format("bbits/model/session/threads:{}", t).c_str(),
                                 [path, t](benchmark::State& state) {
                                   const auto model = bbits::Model::load(path);
                                   bbits::Session s(model, {.threads = t});
                                   std::vector<bbits::Tensor> in;
                                   std::mt19937 rng(1);
                                   std::uniform_real_distribution<float> u(-1.f, 1.f);
                                   for (size_t i = 0; i < model->num_inputs(); ++i) {
                                     bbits::Tensor x;
                                     x.shape = model->input(i).shape;
                                     x.data.resize(static_cast<size_t>(model->input(i).elements()));
                                     for (auto& v : x.data) v = u(rng);
                                     in.push_back(std::move(x));
                                   }
                                   for (auto _ : state) benchmark::DoNotOptimize(s.run(in));
                                   state.counters["macs"] = static_cast<double>(model->info().macs);
                                 })
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
}

void register_representative() {
  for (const std::string& fam : bb::peak_families()) {
    const bool weights = fam == "conv2d" || fam == "pointwise" || fam == "depthwise" || fam == "fully_connected";
    for (int wbits : weights ? std::vector<int>{8, 4, 2} : std::vector<int>{8}) {
      const std::vector<uint8_t> bytes = bb::single_op_model(bb::representative_desc(fam, wbits, 8, false));
      g_models.push_back(bb::ModelLayers::from_memory(bytes.data(), bytes.size(), fam));
      const bb::ModelLayer& L = g_models.back()->layers().front();
      register_layer(L, weights ? fmt::format("{}_w{}a8", fam, wbits) : fam + "_a8", "");
      if (wbits == 8) register_baselines(*g_models.back(), fam);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string model;
  // Our own option first; Google Benchmark rejects unknown ones.
  std::vector<char*> rest;
  for (int i = 0; i < argc; ++i) {
    if (std::strcmp(argv[i], "--model") == 0 && i + 1 < argc) {
      model = argv[++i];
    } else if (std::strncmp(argv[i], "--model=", 8) == 0) {
      model = argv[i] + 8;
    } else {
      rest.push_back(argv[i]);
    }
  }
  int rargc = static_cast<int>(rest.size());
  benchmark::AddCustomContext("cpu", bb::cpu_model_name());
  benchmark::AddCustomContext("isa", kn::isa_name(kn::detect_isa()));
  benchmark::AddCustomContext("commit", bb::build_commit());
  benchmark::AddCustomContext("onednn", bb::onednn_info());
  try {
    if (!model.empty()) {
      benchmark::AddCustomContext("model", model);
      register_model(model);
    } else {
      register_representative();
    }
  } catch (const std::exception& e) {
    fmt::print(stderr, "bench_layers: error: {}\n", e.what());
    return 1;
  }
  benchmark::Initialize(&rargc, rest.data());
  if (benchmark::ReportUnrecognizedArguments(rargc, rest.data())) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
