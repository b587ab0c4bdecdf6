// bbits contract — the cost table (bench -> training, docs/COST_TABLE.md): for
// each weight layer of a graph on one CPU, the time of the kernel the runtime's
// plan would choose as a function of weight bits, input activation bits, kept
// output channels and kept input channels, plus the time outside the layers,
// so that it sums to a whole-model prediction. `bbits profile` writes it; the
// trainer reads it as data. Its schema, reader, validator and writer live
// here, Torch-free and runtime-free (nlohmann-json only).
#pragma once

#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "bbits/contract/graph.h"

namespace bbits::contract {

// A malformed cost table, or one that does not describe the graph it is used
// with; the message names the file (when read from one), the layer and the field.
class CostTableError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

inline constexpr const char* kCostTableFormat = "bbits-cost-table";

struct CostLayer {
  std::string name;             // the graph's node name
  std::string op;               // "conv2d" or "linear"
  int64_t out_channels = 0;     // output channels (linear: output features), nothing pruned
  int64_t in_channels = 0;      // input channels (linear: input features), nothing pruned
  // Pruned output channels are removed by the converter (false: they stay as
  // zero rows, e.g. a layer feeding an add, so pruning buys no time).
  bool out_removable = false;
  // The layer whose removed output channels shrink this layer's input ("": none);
  // each of its channels brings in_per_channel inputs (H*W through a flatten).
  std::string in_from;
  int64_t in_per_channel = 1;
  std::vector<int> act_bits;        // input activation bits of the grid (ascending)
  std::vector<int64_t> kept_out;    // ascending, >= 1, last = out_channels
  std::vector<int64_t> kept_in;     // ascending, >= 1, last = in_channels
  // Time in microseconds, [weight_bits][act_bits][kept_out][kept_in] flattened
  // in that order (weight bits over CostTable::weight_bits); non-negative and
  // non-decreasing along kept_out and kept_in.
  std::vector<double> us;
  // Measured beside predicted, same shape; NaN where not measured; empty: none.
  std::vector<double> measured_us;
  // The kernel the plan chose per [weight_bits][act_bits] at full channels ("" for 0 bits).
  std::vector<std::string> kernels;

  size_t index(size_t wi, size_t ai, size_t oi, size_t ii) const;
};

// A cost outside the weight layers (pooling, add, flatten, activation, softmax).
struct CostOther {
  std::string name;
  std::string op;
  double us = 0;
  double measured_us = -1;  // < 0: not measured
};

struct CostTable {
  static constexpr int kVersion = 1;
  std::string created, cpu, isa, commit, calibration;
  int threads = 1;
  std::string arch;                 // the model zoo's name (or the checkpoint graph's model)
  double width = 1.0;
  std::vector<int64_t> input;       // C, H, W
  std::vector<int> weight_bits{0, 2, 4, 8, 16, 32};  // 0: every output channel pruned (the row is 0 us)
  std::vector<CostLayer> layers;    // in graph order
  std::vector<CostOther> other;
  double call_us = 0;               // per-run cost outside the operators (session dispatch)
  bool measured = false;            // `--measure`: measured_us present
  // What `us` holds: "roofline" (the calibration's prediction) or "measured"
  // (`--price measured`: the measured times, made non-decreasing in kept channels).
  std::string priced_by = "roofline";

  nlohmann::json to_json() const;
  // Validates every field; throws CostTableError naming the problem.
  static CostTable from_json(const nlohmann::json& j);
  static CostTable load(const std::string& path);  // errors name the path
  void save(const std::string& path) const;         // temporary file + rename

  // Throws CostTableError unless the table describes `g`: input shape, the
  // same weight layers (names, ops, channels) in the same order.
  void check_graph(const Graph& g) const;
  const CostLayer& layer(const std::string& name) const;  // throws CostTableError
  int layer_index(const std::string& name) const;         // -1: none
  double other_us() const;  // sum of `other` plus call_us

  // Time (us) of one layer at a grid point of weight and input bits, with
  // `kept_out` output and `kept_in` input channels (clamped to the grid,
  // interpolated piecewise linearly between its points).
  double layer_us(const CostLayer& L, int wbits, int abits, double kept_out, double kept_in) const;
  // Whole-model prediction (us) for test-time decisions: weight bits per layer
  // (missing: 32), input activation bits per layer (missing: the layer grid's
  // widest; must be on the grid), kept output channels per layer (missing: all). Kept counts
  // are taken where the converter removes channels (out_removable, in_from).
  double predict_us(const std::map<std::string, int>& wbits, const std::map<std::string, int>& abits,
                    const std::map<std::string, int64_t>& kept) const;
};

// Operators that keep their input's channels one to one (pooling, flatten,
// standalone activations): a removed channel passes through them.
bool keeps_channels(OpKind op);
// Walks back from `from` through such operators and returns the node reached
// (a layer, an add, ...) or the input's name.
std::string channel_source(const Graph& g, const std::string& from);

// Kept-channel grid points for a layer of `n` channels: 1, n/8, n/4, n/2, 3n/4, n
// (rounded, at least 1, distinct, ascending).
std::vector<int64_t> kept_grid(int64_t n);

// Piecewise-linear interpolation weights of x on an ascending grid (clamped):
// at most two non-zero weights summing to 1.
std::vector<double> interp_weights(const std::vector<int64_t>& grid, double x);

}  // namespace bbits::contract
