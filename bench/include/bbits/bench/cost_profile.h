// bbits bench — the cost table of a graph on this CPU (`bbits profile`,
// docs/COST_TABLE.md): for every weight layer, the time of the kernel the
// runtime's plan chooses at each point of a grid of weight bits, input
// activation bits and kept output / input channels, predicted by the roofline
// from the calibration (and, with `measure`, timed); plus the operators
// between the layers, so that the table sums to a whole-model prediction.
// The table's schema and reader are the contract library's
// (bbits/contract/cost_table.h): the trainer reads it without the runtime.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "bbits/bench/calibration.h"
#include "bbits/bench/stats.h"
#include "bbits/contract/cost_table.h"
#include "bbits/contract/graph.h"

namespace bbits::bench {

struct ProfileOptions {
  int threads = 1;
  Calibration calibration;
  std::string calibration_path;  // recorded in the table
  double width = 1.0;            // recorded in the table
  // Time the kernels too (LayerRunner, the plan's kernel) at every grid point.
  bool measure = false;
  // Price the table (`us`) with the measured times instead of the roofline's
  // (needs `measure`).
  bool price_measured = false;
  TimingOptions timing{.warmup = 1, .repeats = 5, .min_sample_ns = 20'000};
};

// Per-layer facts the table records from the graph (which outputs the
// converter can remove, whose outputs feed a layer's input), exposed for tests.
struct LayerLinks {
  bool out_removable = false;
  std::string in_from;
  int64_t in_per_channel = 1;
};
std::vector<LayerLinks> layer_links(const contract::Graph& g);

// Builds the table. Every grid point is one single-layer model built in memory
// (bench/synthetic.h), planned by the runtime (its kernel choice) and predicted
// by predict_roofline. Times are made non-decreasing in kept channels (a
// running maximum along each axis: a kernel change at some size can make a
// smaller layer predict slower). Throws std::runtime_error naming the layer and
// grid point that cannot be planned or predicted.
contract::CostTable profile_graph(const contract::Graph& g, const ProfileOptions& opts,
                                  const std::function<void(const std::string&)>& progress = {});

class ModelLayers;

// The table's prediction (us) for a converted model: every table layer
// matched by name to the model's operator, at the model's weight bits, input
// bits (the nearest grid point at or above them) and actual output and input
// channels. `notes` receives one line per approximation made. Throws
// contract::CostTableError naming a table layer the model does not have.
double predict_model_us(const contract::CostTable& t, const ModelLayers& model, std::vector<std::string>* notes = nullptr);

struct ModelBenchResult;

// `bbits bench --target-ms T [--cost-table FILE]`: per thread count, the
// measured median whole-model time against the budget (target_ms > 0) and,
// with a table, the table's prediction for the model and its error (for the
// table's thread count; other thread counts are marked).
std::string budget_report(const ModelBenchResult& r, const std::string& model_path, double target_ms,
                          const contract::CostTable* table);

}  // namespace bbits::bench
