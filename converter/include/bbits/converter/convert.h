// bbits converter — checkpoint to model file: gate decisions, BN folding,
// quantization and packing, removal of pruned channels (with their constant
// outputs folded into the consumers' biases), costs, metadata.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "bbits/converter/checkpoint.h"
#include "bbits/format/model_file.h"

namespace bbits::converter {

// The converter's version string ("bbits-convert <version>" is the producer).
const char* converter_version();

struct ConvertOptions {
  std::string description;  // free text stored in the metadata
};

// One row of the per-layer table (every operator of the model).
struct LayerRow {
  std::string name;
  std::string op;                  // conv2d, depthwise, linear, maxpool, ...
  std::vector<int64_t> out_shape;  // as stored, batch 1
  int weight_bits = 0;             // 0 for operators without weights
  int in_bits = 0;                 // bits of the (first) input activation, 32 = float
  int out_bits = 0;                // bits of the output activation, 32 = float
  int64_t channels = 0;            // output channels (features) of the trained layer
  int64_t kept = 0;                // kept by the pruning gates
  bool channels_removed = true;
  int64_t zero_rows = 0;           // pruned channels that stay as zero rows
  int64_t macs = 0, macs_unpruned = 0, weight_bytes = 0, bops = 0;
};

struct ConvertReport {
  std::string model;  // arch
  std::vector<LayerRow> rows;
  int64_t macs = 0, macs_unpruned = 0, weight_bytes = 0, bops = 0, bops_fp32 = 0;
  double relative_bops = 0.0;  // bops / bops_fp32
  int64_t channels_removed = 0;  // output channels physically removed, all layers
  int64_t file_bytes = 0;        // filled by convert_to_file
  std::string output;            // path written
};

// Fills `writer` with the model of a (validated) checkpoint.
ConvertReport build_model(const Checkpoint& ck, bbits::format::ModelWriter& writer,
                          const ConvertOptions& opts = {});

// build_model + ModelWriter::write (atomic). Nothing is written on error.
ConvertReport convert_to_file(const Checkpoint& ck, const std::string& path, const ConvertOptions& opts = {});

// The per-layer table as printed by `bbits-convert`, and the `--json` summary.
std::string format_report(const ConvertReport& r);
nlohmann::json report_json(const ConvertReport& r);

}  // namespace bbits::converter
