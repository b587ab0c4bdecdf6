// bbits training — a quantized network built from a Graph (LibTorch).
// Each conv2d/linear node is a QLayer: (BN-folded) weight through its weight
// quantizer, conv/linear plus float bias, activation, output through its
// activation quantizer. The input is quantized at 8 bits.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include <torch/nn/module.h>

#include "bbits/contract/checkpoint.h"
#include "bbits/contract/graph.h"
#include "bbits/training/quantizer.h"

namespace bbits::train {

using contract::Checkpoint;
using contract::CheckpointError;
using contract::Graph;
using contract::InputSpec;
using contract::Node;
using contract::TensorMap;

// How the quantizers of a network are set up (from the training mode).
struct QuantSetup {
  bool enabled = true;            // false: float network (quantizers pass through)
  bool learn_bit_gates = true;
  int weight_bits = 8, act_bits = 8;  // when !learn_bit_gates
  bool learn_prune_gates = true;  // z2 gates for nodes with prune
  bool learn_ranges = true;
  std::array<double, 4> gate_init{6.0, 6.0, 6.0, 6.0};  // z4, z8, z16, z32
  double gate_init_prune = 6.0;                         // z2
  bool reg_const = false;                               // reg_type "const"
  void set_gate_init(double v) {                        // every gate alike
    gate_init = {v, v, v, v};
    gate_init_prune = v;
  }
};

class QLayer : public torch::nn::Module {
 public:
  QLayer(const Node& node, const QuantSetup& q);
  at::Tensor forward(const at::Tensor& x);
  // Weight and bias with BN folded with the running statistics: the weight the
  // quantizer sees (training and eval), and the eval-mode bias. In training a
  // BN layer then corrects its output to the batch statistics
  // (batch_norm_train), as the reference's BatchNormQScheme does.
  std::pair<at::Tensor, at::Tensor> folded() const;

  Node node;
  at::Tensor weight, bias;
  at::Tensor bn_weight, bn_bias, running_mean, running_var;
  std::shared_ptr<BBQuantizer> wq, aq;
  double bn_momentum = 0.1;

 private:
  at::Tensor run(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) const;
  at::Tensor batch_norm_train(const at::Tensor& x, const at::Tensor& y);
};

class Net : public torch::nn::Module {
 public:
  Net(Graph graph, const QuantSetup& q);

  at::Tensor forward(const at::Tensor& x);  // x: preprocessed N,C,H,W float
  // Sum of BBQuantizer::regularizer over the regularized quantizers: the
  // reference's gate_loss (the loss adds mu times this, once per batch).
  at::Tensor regularizer() const;

  const Graph& graph() const { return graph_; }
  // Every quantizer with its checkpoint prefix ("features.0.wq", "features.0.aq", "input.aq").
  std::vector<std::pair<std::string, std::shared_ptr<BBQuantizer>>> quantizers() const;
  std::shared_ptr<QLayer> layer(const std::string& name) const;  // nullptr when not a weight layer
  std::shared_ptr<BBQuantizer> input_quantizer() const { return input_q_; }

  std::vector<at::Tensor> weight_parameters() const;  // weights, biases, BN affine
  std::vector<at::Tensor> gate_parameters() const;
  std::vector<at::Tensor> range_parameters() const;
  void set_weights_trainable(bool on);

  // Checkpoint tensors in the contract's names (docs/CHECKPOINT.md).
  TensorMap export_tensors() const;
  // The checkpoint of this network as the trainer writes it: its graph, the
  // training facts (`bbits.training`) and export_tensors().
  Checkpoint checkpoint(nlohmann::json training) const;
  // Loads the named tensors; every expected tensor must be present with its
  // shape, and no unknown tensor may be present. Marks all ranges initialised.
  void import_tensors(const Checkpoint& ck);
  // Copies only weights/biases/BN (post-training from a float checkpoint).
  void import_weights(const Checkpoint& ck);

  // Folds batch norm into the weights with the running statistics (the
  // reference's static_fold_bn before fine-tuning): w' = w g / sqrt(v + eps),
  // b' = beta + (b - m) g / sqrt(v + eps). Afterwards the graph's nodes have
  // bn = false and bias = true, and the checkpoint holds the folded tensors.
  // Returns the number of layers folded.
  int fold_batch_norm();

  // Calibrate ranges: reset every quantizer and run one eval forward on `x`,
  // each quantizer taking its range from the data it sees; batch-norm layers
  // use the batch's statistics in this pass (and update their running ones).
  void calibrate(const at::Tensor& x);

  // Test-time decisions for the cost report.
  std::map<std::string, int> weight_bits() const;
  std::map<std::string, int> act_bits() const;
  std::map<std::string, std::vector<bool>> keep_masks() const;

 private:
  Graph graph_;
  std::vector<std::shared_ptr<QLayer>> layers_;          // per node (nullptr for non-weight ops)
  std::vector<std::shared_ptr<BBQuantizer>> node_aq_;    // add/relu nodes with act_quant
  std::shared_ptr<BBQuantizer> input_q_;
};

// The graph after fold_batch_norm: every node with bn gets bn = false, bias = true.
Graph without_batch_norm(Graph g);

// Preprocess uint8 images (N x C x H x W) with the graph's input spec.
at::Tensor preprocess(const uint8_t* pixels, int64_t n, const InputSpec& in);

}  // namespace bbits::train
