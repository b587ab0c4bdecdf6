// Google Benchmark: read bandwidth of this machine per working-set size and
// thread count (the memory side of the roofline; `bbits calibrate` keeps one
// number per cache level, this program shows the whole curve).
//   bench_bandwidth [--benchmark_filter=...] [--benchmark_format=csv]
#include <benchmark/benchmark.h>

#include <cstdint>

#include "bbits/bench/bandwidth.h"
#include "bbits/bench/sysinfo.h"

namespace {

void BM_ReadBandwidth(benchmark::State& state) {
  const int64_t bytes = state.range(0);
  const int threads = static_cast<int>(state.range(1));
  bbits::bench::TimingOptions o{.warmup = 1, .repeats = 3};
  double bps = 0;
  for (auto _ : state) {
    const auto s = bbits::bench::measure_read_bandwidth(bytes / threads, threads, o);
    bps = s.median;
    state.SetIterationTime(static_cast<double>(bytes) / bps);
  }
  state.counters["GB/s"] = bps * 1e-9;
  state.counters["KiB"] = static_cast<double>(bytes) / 1024.0;
}

void Sizes(benchmark::internal::Benchmark* b) {
  for (int t : {1, 2})
    for (int64_t kib : {8, 16, 24, 48, 128, 256, 512, 768, 1536, 4096, 8192, 16384, 32768, 131072})
      b->Args({kib * 1024, t});
}

}  // namespace

BENCHMARK(BM_ReadBandwidth)->Apply(Sizes)->UseManualTime()->Iterations(1)->Unit(benchmark::kMicrosecond);

int main(int argc, char** argv) {
  benchmark::AddCustomContext("cpu", bbits::bench::cpu_model_name());
  benchmark::AddCustomContext("commit", bbits::bench::build_commit());
  benchmark::AddCustomContext("read_loop", bbits::bench::read_loop_isa());
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
