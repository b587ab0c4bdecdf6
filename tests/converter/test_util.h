// Helpers shared by the converter tests.
#pragma once

#include <cstdint>
#include <filesystem>
#include <initializer_list>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "bbits/converter/checkpoint.h"

namespace bbits::converter::test {

std::string fixture_path(const std::string& name);
// Whole file; a `.gz` file is decompressed.
std::vector<uint8_t> read_fixture(const std::string& name);
// A fresh empty directory under the system temp dir, removed by the caller.
std::filesystem::path temp_dir(const std::string& tag);

// Nodes and graphs (bbits.graph JSON) for small test networks: a conv2d
// (stride 1, bias, weight and activation quantizers, signed activations
// without an activation function), the classifier `fc` (IN -> 5, float
// logits), a graph of C x H x H input whose output is `fc`, and a keep mask of
// N channels with the given ones pruned.
nlohmann::json conv_node(const std::string& name, const std::string& in, int cin, int cout, int k, int pad,
                         int groups, const std::string& act, bool prune = true);
nlohmann::json head_node(const std::string& in, int fin);
nlohmann::json graph_json(const nlohmann::json& nodes, int c, int h);
std::vector<int> mask(int n, std::initializer_list<int> pruned);

// A small graph JSON (bbits.graph) → checkpoint with random weights: every
// layer gets random weights, biases and (if bn) BN statistics; quantizers get
// ranges from a float calibration pass and the given bits; `keep` (by node
// name) sets per-channel pruning gates (1 = kept).
struct SmallNet {
  nlohmann::json graph;
  int weight_bits = 8;
  int act_bits = 8;
  std::map<std::string, std::vector<int>> keep;   // node -> mask
  std::map<std::string, float> bias_shift;        // node -> added to the bias of pruned channels
  uint64_t seed = 7;
};
Checkpoint make_small_checkpoint(const SmallNet& net);

// Random preprocessed inputs (N,C,H,W) for a graph: pixels 0..255 through the
// graph's preprocessing.
FTensor random_inputs(const Graph& g, int64_t n, uint64_t seed);

// Minimal .npy reader for little-endian float32 C-order arrays (fixtures).
std::vector<float> read_npy_f32(const std::vector<uint8_t>& bytes, std::vector<int64_t>& shape);

// Fashion-MNIST test images (N x 1 x 28 x 28, pixels / 255) and labels when the
// data set is installed (/usr/share/datasets/fashion-mnist); empty otherwise.
bool load_fashion_mnist_test(int64_t limit, FTensor& images, std::vector<int>& labels);

// How many images a whole-network evaluation runs: `native`, or `emulated`
// when BBITS_TEST_EMULATED=1 (scripts/test-arm64.sh under qemu, 30 to 90 times
// slower). The kernel sweeps are never shortened.
int64_t images_to_evaluate(int64_t native, int64_t emulated);

}  // namespace bbits::converter::test
