// bbits contract — the model zoo: each architecture once, with the module
// names and structure of the public Bayesian Bits reference implementation
// (Qualcomm-AI-research/BayesianBits, benchmarks/image_net/models/ and
// benchmarks/cifar/), so that the trainer's checkpoints, the reference's .pth
// files (`bbits-convert --arch`) and synthetic models name layers alike.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "bbits/contract/graph.h"

namespace bbits::contract {

struct Preprocessing {
  double pixel_scale = 1.0 / 255.0;  // input = (pixel * pixel_scale - mean[c]) / std[c]
  std::vector<float> mean{0.0f}, std{1.0f};  // one value, or one per channel
};

struct ZooOptions {
  std::vector<int64_t> input_shape;  // C, H, W; empty: the architecture's data set
  int64_t num_classes = 0;           // 0: the architecture's data set
  double width = 1.0;                // channel multiplier (vgg7, resnet18, resnet18-small, mobilenetv2)
  bool quantize = true;              // weight and activation quantizers on every layer (logits stay float)
  bool prune = true;                 // pruning gates on every layer but the classifier's last
  bool prune_depthwise = true;       // ... depthwise convolutions included (as the reference does)
  // Default: what the reference's data loader does for the architecture's
  // data set (ImageNet and CIFAR-10 mean/std, MNIST pixel / 255).
  std::optional<Preprocessing> preprocessing;
};

// lenet5 (1x28x28, 10 classes), vgg7 (3x32x32, 10), resnet18 (ImageNet stem,
// 3x224x224, 1000), resnet18-small (3x3 stem without max pooling, for small
// inputs; 3x32x32, 10), mobilenetv2 (3x224x224, 1000; stride 1 in the stem
// and the first blocks for inputs below 64 pixels). Throws CheckpointError
// for an unknown name or options the architecture cannot take.
Graph make_graph(const std::string& arch, const ZooOptions& options = {});
const std::vector<std::string>& zoo_names();

}  // namespace bbits::contract
