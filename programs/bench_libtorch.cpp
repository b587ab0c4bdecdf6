// LibTorch float32 inference of the same networks (the training library's
// graphs with quantizers disabled), as a third baseline beside oneDNN f32 and
// int8. Built only with BBITS_TRAINING.
//   bench_libtorch [--model lenet5,resnet18,mobilenetv2] [--threads 1,2]
//                  [--repeats N] [--csv FILE]
#include <ATen/Parallel.h>
#include <fmt/format.h>
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

#include "bbits/bench/report.h"
#include "bbits/bench/stats.h"
#include "bbits/bench/sysinfo.h"
#include "bbits/contract/zoo.h"
#include "bbits/training/network.h"

namespace bb = bbits::bench;

int main(int argc, char** argv) {
  CLI::App app{"LibTorch float32 inference baseline"};
  std::vector<std::string> models = {"lenet5", "resnet18", "mobilenetv2"};
  std::vector<int> threads = {1, 2};
  int repeats = 10;
  std::string csv;
  app.add_option("--model", models, "Networks (lenet5, resnet18, mobilenetv2)")->delimiter(',');
  app.add_option("--threads", threads, "Thread counts")->delimiter(',');
  app.add_option("--repeats", repeats, "Timed samples (median and IQR)");
  app.add_option("--csv", csv, "Write the results as CSV");
  CLI11_PARSE(app, argc, argv);
  try {
    if (repeats < 1) throw std::invalid_argument("--repeats must be at least 1");
    bb::Table t({{"model"}, {"threads"}, {"t_us", 1}, {"t_iqr_us", 1}, {"input"}});
    torch::NoGradGuard no_grad;
    for (const std::string& name : models) {
      bbits::contract::ZooOptions mo;  // the architecture's input (lenet5 1x28x28, ImageNet 3x224x224) and classes
      mo.quantize = false;
      mo.prune = false;
      bbits::train::QuantSetup qs;
      qs.enabled = false;
      const bbits::contract::Graph graph = bbits::contract::make_graph(name, mo);
      auto net = std::make_shared<bbits::train::Net>(graph, qs);
      net->eval();
      const std::vector<int64_t>& in = graph.input.shape;
      std::vector<int64_t> shape = {1};
      shape.insert(shape.end(), in.begin(), in.end());
      const at::Tensor x = torch::rand(shape);
      for (int th : threads) {
        at::set_num_threads(th);
        const bb::Summary s = bb::time_ns([&] { (void)net->forward(x); }, {.warmup = 2, .repeats = repeats});
        t.add_row({name, int64_t{th}, s.median * 1e-3, s.iqr() * 1e-3,
                   fmt::format("1x{}x{}x{}", in[0], in[1], in[2])});
        fmt::print(stderr, "bench_libtorch: {} {} threads: {:.1f} us\n", name, th, s.median * 1e-3);
      }
    }
    const bb::Meta meta = {{"cpu", bb::cpu_model_name()},
                           {"isa", "libtorch"},
                           {"commit", bb::build_commit()},
                           {"created", bb::utc_timestamp()}};
    fmt::print("{}", bb::format_terminal(t, meta));
    if (!csv.empty()) bb::write_text_atomic(csv, bb::to_csv(t, meta));
  } catch (const std::exception& e) {
    fmt::print(stderr, "bench_libtorch: error: {}\n", e.what());
    return 1;
  }
  return 0;
}
