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
  // Grid of the network input: 8 or 16 (integer grid over the input's range,
  // `input.aq.x_max`) or 32 (float32: the first layer runs on float input).
  // 0: the checkpoint's own (Checkpoint::input_bits).
  int input_bits = 0;
  // Layout in which callers pass 4-D inputs, recorded in the preprocessing:
  // "NCHW" (PyTorch's; the default when empty) or "NHWC".
  std::string layout;
};

// The network input as converted: what the preprocessing record says and
// the grid the first layer reads.
struct InputReport {
  std::vector<int64_t> shape;  // C, H, W
  std::string layout = "NCHW";
  double pixel_scale = 1.0;
  std::vector<float> mean, std;
  int bits = 8;                // 8, 16, or 32 (float32)
  bool is_signed = false;
  float x_max = 0.0f;          // integer grids: values beyond [-x_max or 0, x_max] are clipped
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
  InputReport input;
  std::vector<LayerRow> rows;
  int64_t macs = 0, macs_unpruned = 0, weight_bytes = 0, bops = 0, bops_fp32 = 0;
  double relative_bops = 0.0;  // bops / bops_fp32
  int64_t channels_removed = 0;  // output channels physically removed, all layers
  int64_t file_bytes = 0;        // filled by convert_to_file
  std::string output;            // path written
};

// Fills `writer` with the model of a checkpoint: the passes of
// bbits/converter/passes.h in their order (graph checks, gate decisions,
// folding, quantization, channel removal, writing).
ConvertReport build_model(const Checkpoint& ck, bbits::format::ModelWriter& writer,
                          const ConvertOptions& opts = {});

// build_model + ModelWriter::write (atomic). Nothing is written on error.
ConvertReport convert_to_file(const Checkpoint& ck, const std::string& path, const ConvertOptions& opts = {});

// The per-layer table as printed by `bbits-convert`, and the `--json` summary.
std::string format_report(const ConvertReport& r);
// One line: "input: 3x32x32 NCHW, (pixel * 0.00392157 - mean) / std, mean ..., std ...; 8-bit signed grid over [...]".
std::string describe_input(const InputReport& in);
nlohmann::json report_json(const ConvertReport& r);

}  // namespace bbits::converter
