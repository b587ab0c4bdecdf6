// bbits training — MACs and exact BOP counts of a graph at given bit widths
// and keep masks (bbits::cost vocabulary). Torch-free.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "bbits/contract/graph.h"

namespace bbits::train {

using contract::Graph;
using contract::Node;

// MACs of every weight layer (batch 1, nothing pruned).
std::map<std::string, int64_t> layer_macs(const Graph& g);

// MACs charged to each activation quantizer by the regularizer: the sum of the
// MACs of the weight layers it feeds (the reference's assign_macs). Keys are
// node names (and "input").
std::map<std::string, int64_t> quantizer_macs(const Graph& g);

struct LayerCost {
  std::string name;
  int64_t macs_full = 0;    // nothing pruned
  int64_t macs = 0;         // pruned output and input channels removed
  int weight_bits = 32;     // 0 when every channel is pruned
  int act_bits = 32;        // bits of the quantizer feeding the layer (input: 8)
  int64_t kept = 0, total = 0;  // output channels
  int64_t bops = 0;
};

struct CostReport {
  std::vector<LayerCost> layers;
  int64_t bops = 0, bops_fp32 = 0;
  double relative = 1.0;  // bops / bops_fp32
};

// weight_bits: per weight layer (missing -> 32); act_bits: per quantizer node and
// "input" (missing -> 32, "input" missing -> 8); keep: per pruned layer (missing -> all kept).
// Input channels of a layer are removed when its producer (through pooling,
// flatten and standalone activations) is a pruned layer.
CostReport compute_costs(const Graph& g, const std::map<std::string, int>& weight_bits,
                         const std::map<std::string, int>& act_bits,
                         const std::map<std::string, std::vector<bool>>& keep);

}  // namespace bbits::train

namespace bbits::train {
// A per-layer table (weight bits, activation bits, kept/total channels, MACs, BOPs) and totals.
std::string layer_table(const CostReport& r);
}  // namespace bbits::train
