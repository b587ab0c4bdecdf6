// What the latency prior costs a training step against the BOP prior: one
// step (forward in training mode, CE + mu x prior, backward) of a network on
// a random batch, with each prior, and each prior alone (forward + backward),
// timed alternately in one run. Built only with BBITS_TRAINING.
//   bench_prior_step [--model lenet5] [--width W] [--batch 128] [--threads 2]
//                    [--cost-table FILE] [--repeats N] [--rounds N]
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <fmt/format.h>
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <filesystem>
#include <string>
#include <vector>

#include "bbits/bench/report.h"
#include "bbits/bench/stats.h"
#include "bbits/bench/sysinfo.h"
#include "bbits/contract/zoo.h"
#include "bbits/training/budget.h"
#include "bbits/training/latency.h"
#include "bbits/training/network.h"
#include "bbits/training/trainer.h"

namespace bb = bbits::bench;
namespace bt = bbits::train;

int main(int argc, char** argv) {
  CLI::App app{"Training-step cost of the latency prior against the BOP prior"};
  std::string model = "lenet5", table;
  double width = 1.0;
  int64_t batch = 128;
  int threads = 2, repeats = 10, rounds = 3;
  std::vector<int64_t> input = {1, 28, 28};
  app.add_option("--model", model, "Network (the model zoo)")->capture_default_str();
  app.add_option("--width", width, "Channel multiplier")->capture_default_str();
  app.add_option("--input", input, "Input C,H,W")->delimiter(',');
  app.add_option("--batch", batch, "Batch size")->capture_default_str();
  app.add_option("--threads", threads, "Torch threads")->capture_default_str();
  app.add_option("--cost-table", table, "Cost table (`bbits profile`); default: the BOP-unit table of the graph");
  app.add_option("--repeats", repeats, "Timed samples per round")->capture_default_str();
  app.add_option("--rounds", rounds, "Alternating rounds (BOP, latency, BOP, ...)")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    if (repeats < 1 || rounds < 1 || batch < 1) throw std::invalid_argument("--repeats, --rounds and --batch must be >= 1");
    bt::set_threads(threads);
    const auto graph = bbits::contract::make_graph(model, bt::model_options(input, width));
    bt::Net net(graph, bt::QuantSetup{});
    std::vector<int64_t> shape = {batch};
    shape.insert(shape.end(), input.begin(), input.end());
    const at::Tensor x = torch::rand(shape);
    const at::Tensor y = torch::randint(0, 10, {batch}, at::kLong);
    net.calibrate(x);
    net.train();
    const std::string path =
        table.empty() ? (std::filesystem::temp_directory_path() / "bench_prior_step.costs.json").string() : table;
    if (table.empty()) bt::bop_cost_table(graph).save(path);
    bt::CostSetup bops, lat;
    lat.cost = "latency";
    lat.table = path;
    const bt::CostModel cm_bops(net, bops, 0.1), cm_lat(net, lat, 0.1);
    auto step = [&](const bt::CostModel& cm) {
      for (auto& p : net.parameters())
        if (p.grad().defined()) p.grad().zero_();
      const at::Tensor loss = at::cross_entropy_loss(net.forward(x), y) + 0.1 * cm.regularizer();
      loss.backward();
    };
    auto prior = [&](const bt::CostModel& cm) {
      for (auto& p : net.parameters())
        if (p.grad().defined()) p.grad().zero_();
      cm.regularizer().backward();
    };
    std::vector<double> s_bops, s_lat, p_bops, p_lat;
    const bb::TimingOptions topt{.warmup = 2, .repeats = repeats, .min_sample_ns = 0};
    for (int r = 0; r < rounds; ++r) {
      for (double v : bb::sample_ns([&] { step(cm_bops); }, topt)) s_bops.push_back(v);
      for (double v : bb::sample_ns([&] { step(cm_lat); }, topt)) s_lat.push_back(v);
      for (double v : bb::sample_ns([&] { prior(cm_bops); }, {.warmup = 2, .repeats = repeats * 10})) p_bops.push_back(v);
      for (double v : bb::sample_ns([&] { prior(cm_lat); }, {.warmup = 2, .repeats = repeats * 10})) p_lat.push_back(v);
    }
    const bb::Summary sb = bb::summarize(s_bops), sl = bb::summarize(s_lat), pb = bb::summarize(p_bops),
                      pl = bb::summarize(p_lat);
    bb::Table t({{"what"}, {"bops_us", 1}, {"latency_us", 1}, {"ratio", 3}});
    t.add_row({std::string("training step (forward, loss, backward)"), sb.median * 1e-3, sl.median * 1e-3,
               sl.median / sb.median});
    t.add_row({std::string("prior alone (forward, backward)"), pb.median * 1e-3, pl.median * 1e-3, pl.median / pb.median});
    const bb::Meta meta = {{"cpu", bb::cpu_model_name()}, {"model", model}, {"width", fmt::format("{}", width)},
                           {"batch", std::to_string(batch)}, {"threads", std::to_string(threads)},
                           {"cost_table", table.empty() ? std::string("BOP-unit table of the graph") : table},
                           {"commit", bb::build_commit()}, {"created", bb::utc_timestamp()}};
    fmt::print("{}", bb::format_terminal(t, meta));
  } catch (const std::exception& e) {
    fmt::print(stderr, "bench_prior_step: error: {}\n", e.what());
    return 1;
  }
  return 0;
}
