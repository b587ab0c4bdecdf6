// bbits converter — synthetic checkpoints: a known architecture with random
// weights and a chosen bit configuration, for benchmarking networks that
// cannot be trained here (`bbits-convert --synthetic`).
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include <nlohmann/json.hpp>

#include "bbits/converter/checkpoint.h"

namespace bbits::converter {

struct LayerBits {
  int weight_bits = 8;  // 0 (whole layer pruned), 2, 4, 8, 16, 32
  int act_bits = 8;     // 2, 4, 8, 16, 32 (bits of the node's output)
  double keep = 1.0;    // fraction of output channels kept (prunable layers)
};

struct BitConfig {
  LayerBits base;
  std::map<std::string, LayerBits> layers;  // by node name
};

// "w8a8", "w4a8", "w2a8", "w16a16", "w32a32" (any wNaM with legal widths), or
// the path of a JSON file:
//   {"weight_bits": 8, "act_bits": 8, "keep": 1.0,
//    "layers": {"features.0": {"weight_bits": 4, "act_bits": 8, "keep": 0.5}, ...}}
// (every key optional; layer entries override the defaults).
BitConfig parse_bit_config(const std::string& spec);
BitConfig bit_config_from_json(const nlohmann::json& j);

// Random weights (He initialisation, mild batch-norm statistics), weight ranges
// from the folded weights, activation ranges calibrated by a float forward pass
// on a random input, gates set to +20 / -20 by the configuration. Names in the
// configuration that are not nodes of the graph are an error.
// `calibrate = false` skips the forward pass (ranges: 6 after ReLU6, else 4),
// for quick tests of the large networks.
Checkpoint make_synthetic(const std::string& arch, const BitConfig& cfg, uint64_t seed, bool calibrate = true);

}  // namespace bbits::converter
