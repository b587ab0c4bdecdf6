#include "bbits/training/network.h"

#include <ATen/ATen.h>
#include <torch/autograd.h>
#include <cmath>
#include <set>
#include <stdexcept>

#include "bbits/training/cost.h"

namespace bbits::train {

using contract::OpKind;

namespace {

std::string module_name(const std::string& s) {
  std::string r = s;
  for (auto& c : r)
    if (c == '.') c = '_';
  return r;
}

at::Tensor apply_activation(const at::Tensor& x, contract::Act act) {
  if (act == contract::Act::Relu) return at::relu(x);
  if (act == contract::Act::Relu6) return at::clamp(x, 0.0, 6.0);
  return x;
}

QuantizerConfig act_config(const QuantSetup& q, bool is_signed) {
  QuantizerConfig c;
  c.is_signed = is_signed;
  c.learn_bit_gates = q.learn_bit_gates;
  c.fixed_bits = q.act_bits;
  c.learn_range = q.learn_ranges;
  c.gate_init = q.gate_init;
  c.gate_init_prune = q.gate_init_prune;
  c.enabled = q.enabled;
  return c;
}

std::vector<int64_t> sizes_of(const at::Tensor& t) { return std::vector<int64_t>(t.sizes().begin(), t.sizes().end()); }

contract::FTensor to_ftensor(const at::Tensor& t) {
  contract::FTensor f;
  auto c = t.detach().to(at::kFloat).contiguous();
  f.shape = sizes_of(c);
  f.data.assign(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
  return f;
}

void copy_into(at::Tensor& dst, const Checkpoint& ck, const std::string& name) {
  const contract::FTensor& src = ck.get(name);
  if (sizes_of(dst) != src.shape) {
    std::string want, got;
    for (auto d : dst.sizes()) want += (want.empty() ? "" : ",") + std::to_string(d);
    for (auto d : src.shape) got += (got.empty() ? "" : ",") + std::to_string(d);
    throw CheckpointError("checkpoint: tensor '" + name + "' has shape [" + got + "], expected [" + want + "]");
  }
  for (float v : src.data)
    if (!std::isfinite(v)) throw CheckpointError("checkpoint: tensor '" + name + "' holds a non-finite value");
  at::NoGradGuard ng;
  auto t = at::from_blob(const_cast<float*>(src.data.data()), dst.sizes(), at::kFloat).clone();
  dst.copy_(t);
}

}  // namespace

// ---------------------------------------------------------------------------
QLayer::QLayer(const Node& n, const QuantSetup& q) : node(n) {
  if (!n.is_layer()) throw std::invalid_argument("QLayer: node '" + n.name + "' has no weights");
  int64_t fan_in = 0;
  const int64_t outs = n.outputs();
  if (n.op == OpKind::Conv2d) {
    weight = at::empty({n.out_channels, n.in_channels / n.groups, n.kernel_h, n.kernel_w}, at::kFloat);
    fan_in = n.in_channels / n.groups * n.kernel_h * n.kernel_w;
  } else {
    weight = at::empty({n.out_features, n.in_features}, at::kFloat);
    fan_in = n.in_features;
  }
  // PyTorch's default initialisation: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
  const double bound = 1.0 / std::sqrt(static_cast<double>(fan_in));
  weight.uniform_(-bound, bound);
  weight = register_parameter("weight", weight);
  if (n.bias) bias = register_parameter("bias", at::empty({outs}, at::kFloat).uniform_(-bound, bound));
  if (n.bn) {
    bn_weight = register_parameter("bn_weight", at::ones({outs}, at::kFloat));
    bn_bias = register_parameter("bn_bias", at::zeros({outs}, at::kFloat));
    running_mean = register_buffer("bn_running_mean", at::zeros({outs}, at::kFloat));
    running_var = register_buffer("bn_running_var", at::ones({outs}, at::kFloat));
  }
  if (n.weight_quant) {
    QuantizerConfig c;
    c.is_signed = true;
    c.prune_channels = n.prune ? outs : 0;
    c.learn_bit_gates = q.learn_bit_gates;
    c.fixed_bits = q.weight_bits;
    c.learn_prune_gates = q.learn_prune_gates;
    c.learn_range = q.learn_ranges;
    c.gate_init = q.gate_init;
    c.gate_init_prune = q.gate_init_prune;
    c.enabled = q.enabled;
    wq = register_module("wq", std::make_shared<BBQuantizer>(c));
  }
  if (n.act_quant) aq = register_module("aq", std::make_shared<BBQuantizer>(act_config(q, n.act_signed)));
}

at::Tensor QLayer::run(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) const {
  if (node.op == OpKind::Conv2d)
    return at::conv2d(x, w, b, {node.stride_h, node.stride_w}, {node.pad_h, node.pad_w},
                      {node.dilation_h, node.dilation_w}, node.groups);
  return at::linear(x, w, b);
}

std::pair<at::Tensor, at::Tensor> QLayer::folded() const {
  if (!node.bn) return {weight, bias};
  const at::Tensor inv = bn_weight / at::sqrt(running_var + node.bn_eps);
  std::vector<int64_t> shape(weight.dim(), 1);
  shape[0] = -1;
  const at::Tensor w = weight * inv.view(shape);
  const at::Tensor b0 = bias.defined() ? bias - running_mean : -running_mean;
  return {w, bn_bias + b0 * inv};
}

at::Tensor QLayer::batch_norm_train(const at::Tensor& x, const at::Tensor& y) {
  // The reference's BatchNormQScheme.adjust_output: the batch statistics of
  // the float convolution (gradient through them), the output rescaled from
  // the running statistics the weight was folded with to the batch's, and the
  // running averages updated afterwards (unbiased variance, momentum 0.1).
  const at::Tensor y0 = run(x, weight, at::Tensor());
  const std::vector<int64_t> dims = node.op == OpKind::Conv2d ? std::vector<int64_t>{0, 2, 3} : std::vector<int64_t>{0};
  const at::Tensor mean = y0.mean(dims);
  const at::Tensor var = y0.var(dims, /*unbiased=*/false);
  const at::Tensor sigma = at::sqrt(running_var + node.bn_eps), sigma_b = at::sqrt(var + node.bn_eps);
  std::vector<int64_t> shape(y.dim(), 1);
  shape[1] = -1;
  const at::Tensor b0 = bias.defined() ? bias - mean : -mean;
  const at::Tensor out = y * (sigma / sigma_b).view(shape) + (bn_bias + b0 * bn_weight / sigma_b).view(shape);
  {
    at::NoGradGuard ng;
    const double count = static_cast<double>(y0.numel() / y0.size(1));
    running_mean.mul_(1.0 - bn_momentum).add_(mean.detach() * bn_momentum);
    running_var.mul_(1.0 - bn_momentum).add_(var.detach() * (bn_momentum * count / std::max(1.0, count - 1.0)));
  }
  return out;
}

at::Tensor QLayer::forward(const at::Tensor& x) {
  auto [w, b] = folded();
  if (wq) w = wq->forward(w);
  at::Tensor y = (node.bn && is_training()) ? batch_norm_train(x, run(x, w, at::Tensor())) : run(x, w, b);
  y = apply_activation(y, node.activation);
  if (aq) y = aq->forward(y);
  return y;
}

// ---------------------------------------------------------------------------
Net::Net(Graph graph, const QuantSetup& q) : graph_(std::move(graph)) {
  contract::infer_shapes(graph_);
  layers_.resize(graph_.nodes.size());
  node_aq_.resize(graph_.nodes.size());
  QuantizerConfig ic;
  bool nonneg = true;
  for (float m : graph_.input.mean) nonneg = nonneg && m == 0.0f;
  ic.is_signed = !nonneg;
  ic.learn_bit_gates = false;
  ic.fixed_bits = 8;
  ic.learn_range = false;
  input_q_ = register_module("input_aq", std::make_shared<BBQuantizer>(ic));
  for (size_t i = 0; i < graph_.nodes.size(); ++i) {
    const Node& n = graph_.nodes[i];
    if (n.is_layer()) {
      layers_[i] = register_module(module_name(n.name), std::make_shared<QLayer>(n, q));
    } else if (n.act_quant) {
      node_aq_[i] = register_module(module_name(n.name) + "_aq", std::make_shared<BBQuantizer>(act_config(q, n.act_signed)));
    }
  }
  // The regularizer's MAC weights (reference assign_macs, reg_type "bops").
  const auto lm = layer_macs(graph_);
  const auto qm = quantizer_macs(graph_);
  double max_macs = 1.0;
  for (const auto& [k, v] : lm) max_macs = std::max(max_macs, static_cast<double>(v));
  for (size_t i = 0; i < graph_.nodes.size(); ++i) {
    const std::string& name = graph_.nodes[i].name;
    std::shared_ptr<BBQuantizer> a = layers_[i] ? layers_[i]->aq : node_aq_[i];
    if (layers_[i] && layers_[i]->wq) {
      auto& w = *layers_[i]->wq;
      w.mac_count = static_cast<double>(lm.at(name));
      w.max_macs = max_macs;
      w.const_cost = q.reg_const;
      w.regularized = q.enabled && (w.bit_gates_learned() || w.prune_gates_learned());
    }
    if (a) {
      a->max_macs = max_macs;
      a->mac_count = qm.count(name) ? static_cast<double>(qm.at(name)) : 0.0;
      a->const_cost = q.reg_const;
      a->regularized = q.enabled && a->bit_gates_learned() && (a->mac_count > 0 || q.reg_const);
    }
  }
}

at::Tensor Net::forward(const at::Tensor& x) {
  if (x.dim() != 4 || x.size(1) != graph_.input.shape[0] || x.size(2) != graph_.input.shape[1] ||
      x.size(3) != graph_.input.shape[2])
    throw std::invalid_argument("Net: input must be N x " + std::to_string(graph_.input.shape[0]) + " x " +
                                std::to_string(graph_.input.shape[1]) + " x " + std::to_string(graph_.input.shape[2]));
  std::vector<at::Tensor> out(graph_.nodes.size());
  const at::Tensor xin = input_q_->forward(x);
  auto get = [&](const std::string& name) -> const at::Tensor& {
    const int i = graph_.index_of(name);
    return i < 0 ? xin : out[static_cast<size_t>(i)];
  };
  for (size_t i = 0; i < graph_.nodes.size(); ++i) {
    const Node& n = graph_.nodes[i];
    const at::Tensor& a = get(n.inputs[0]);
    at::Tensor y;
    switch (n.op) {
      case OpKind::Conv2d:
      case OpKind::Linear:
        y = layers_[i]->forward(a);
        break;
      case OpKind::MaxPool:
        y = at::max_pool2d(a, {n.kernel_h, n.kernel_w}, {n.stride_h, n.stride_w}, {n.pad_h, n.pad_w});
        break;
      case OpKind::AvgPool:
        y = at::avg_pool2d(a, {n.kernel_h, n.kernel_w}, {n.stride_h, n.stride_w}, {n.pad_h, n.pad_w},
                           /*ceil_mode=*/false, n.count_include_pad);
        break;
      case OpKind::GlobalAvgPool:
        y = at::adaptive_avg_pool2d(a, {1, 1});
        break;
      case OpKind::Flatten:
        y = a.flatten(1);
        break;
      case OpKind::Add:
        y = apply_activation(a + get(n.inputs[1]), n.activation);
        break;
      case OpKind::Concat: {
        std::vector<at::Tensor> xs;
        for (const auto& in : n.inputs) xs.push_back(get(in));
        y = at::cat(xs, 1);
        break;
      }
      case OpKind::Relu:
        y = apply_activation(a, contract::Act::Relu);
        break;
      case OpKind::Relu6:
        y = apply_activation(a, contract::Act::Relu6);
        break;
    }
    if (node_aq_[i]) y = node_aq_[i]->forward(y);
    out[i] = y;
  }
  return get(graph_.outputs.at(0));
}

std::vector<std::pair<std::string, std::shared_ptr<BBQuantizer>>> Net::quantizers() const {
  std::vector<std::pair<std::string, std::shared_ptr<BBQuantizer>>> r;
  r.emplace_back(graph_.input.name + ".aq", input_q_);
  for (size_t i = 0; i < graph_.nodes.size(); ++i) {
    const std::string& name = graph_.nodes[i].name;
    if (layers_[i]) {
      if (layers_[i]->wq) r.emplace_back(name + ".wq", layers_[i]->wq);
      if (layers_[i]->aq) r.emplace_back(name + ".aq", layers_[i]->aq);
    } else if (node_aq_[i]) {
      r.emplace_back(name + ".aq", node_aq_[i]);
    }
  }
  return r;
}

std::shared_ptr<QLayer> Net::layer(const std::string& name) const {
  const int i = graph_.index_of(name);
  return i < 0 ? nullptr : layers_[static_cast<size_t>(i)];
}

at::Tensor Net::regularizer() const {
  at::Tensor r = at::zeros({}, at::kFloat);
  for (const auto& [name, q] : quantizers())
    if (q->regularized) r = r + q->regularizer();
  return r;
}

std::vector<at::Tensor> Net::weight_parameters() const {
  std::vector<at::Tensor> r;
  for (const auto& l : layers_) {
    if (!l) continue;
    for (const auto* t : {&l->weight, &l->bias, &l->bn_weight, &l->bn_bias})
      if (t->defined() && t->requires_grad()) r.push_back(*t);
  }
  return r;
}

std::vector<at::Tensor> Net::gate_parameters() const {
  std::vector<at::Tensor> r;
  for (const auto& [name, q] : quantizers())
    if (q->enabled())
      for (auto& t : q->gate_parameters()) r.push_back(t);
  return r;
}

std::vector<at::Tensor> Net::range_parameters() const {
  std::vector<at::Tensor> r;
  for (const auto& [name, q] : quantizers())
    if (q->enabled())
      for (auto& t : q->range_parameters()) r.push_back(t);
  return r;
}

void Net::set_weights_trainable(bool on) {
  for (const auto& l : layers_) {
    if (!l) continue;
    for (auto* t : {&l->weight, &l->bias, &l->bn_weight, &l->bn_bias})
      if (t->defined()) t->set_requires_grad(on);
  }
}

TensorMap Net::export_tensors() const {
  TensorMap r;
  auto add_q = [&](const std::string& prefix, const BBQuantizer& q, bool gates) {
    r[prefix + ".x_max"] = to_ftensor(q.x_max);
    if (!gates) return;
    if (q.has_prune()) r[prefix + ".log_alpha_2"] = to_ftensor(q.log_alpha_2);
    r[prefix + ".log_alpha_4"] = to_ftensor(q.log_alpha_4);
    r[prefix + ".log_alpha_8"] = to_ftensor(q.log_alpha_8);
    r[prefix + ".log_alpha_16"] = to_ftensor(q.log_alpha_16);
    r[prefix + ".log_alpha_32"] = to_ftensor(q.log_alpha_32);
  };
  add_q(graph_.input.name + ".aq", *input_q_, false);
  for (size_t i = 0; i < graph_.nodes.size(); ++i) {
    const std::string& name = graph_.nodes[i].name;
    if (const auto& l = layers_[i]) {
      r[name + ".weight"] = to_ftensor(l->weight);
      if (l->bias.defined()) r[name + ".bias"] = to_ftensor(l->bias);
      if (l->node.bn) {
        r[name + ".bn.weight"] = to_ftensor(l->bn_weight);
        r[name + ".bn.bias"] = to_ftensor(l->bn_bias);
        r[name + ".bn.running_mean"] = to_ftensor(l->running_mean);
        r[name + ".bn.running_var"] = to_ftensor(l->running_var);
      }
      if (l->wq) add_q(name + ".wq", *l->wq, true);
      if (l->aq) add_q(name + ".aq", *l->aq, true);
    } else if (node_aq_[i]) {
      add_q(name + ".aq", *node_aq_[i], true);
    }
  }
  return r;
}

Checkpoint Net::checkpoint(nlohmann::json training) const {
  Checkpoint ck;
  ck.graph = graph_;
  ck.training = std::move(training);
  ck.tensors = export_tensors();
  return ck;
}

void Net::import_tensors(const Checkpoint& ck) {
  // Expected names, from a fresh export of this network's structure.
  const TensorMap expected = export_tensors();
  for (const auto& [name, t] : ck.tensors)
    if (!expected.count(name)) throw CheckpointError("checkpoint: unexpected tensor '" + name + "' for this graph");
  auto load_q = [&](const std::string& prefix, BBQuantizer& q, bool gates) {
    copy_into(q.x_max, ck, prefix + ".x_max");
    if (!(q.range() > 0.0f)) throw CheckpointError("checkpoint: '" + prefix + ".x_max' must be positive");
    q.set_initialized(true);
    if (!gates) return;
    if (q.has_prune()) copy_into(q.log_alpha_2, ck, prefix + ".log_alpha_2");
    copy_into(q.log_alpha_4, ck, prefix + ".log_alpha_4");
    copy_into(q.log_alpha_8, ck, prefix + ".log_alpha_8");
    copy_into(q.log_alpha_16, ck, prefix + ".log_alpha_16");
    copy_into(q.log_alpha_32, ck, prefix + ".log_alpha_32");
  };
  load_q(graph_.input.name + ".aq", *input_q_, false);
  for (size_t i = 0; i < graph_.nodes.size(); ++i) {
    const std::string& name = graph_.nodes[i].name;
    if (const auto& l = layers_[i]) {
      copy_into(l->weight, ck, name + ".weight");
      if (l->bias.defined()) copy_into(l->bias, ck, name + ".bias");
      if (l->node.bn) {
        copy_into(l->bn_weight, ck, name + ".bn.weight");
        copy_into(l->bn_bias, ck, name + ".bn.bias");
        copy_into(l->running_mean, ck, name + ".bn.running_mean");
        copy_into(l->running_var, ck, name + ".bn.running_var");
      }
      if (l->wq) load_q(name + ".wq", *l->wq, true);
      if (l->aq) load_q(name + ".aq", *l->aq, true);
    } else if (node_aq_[i]) {
      load_q(name + ".aq", *node_aq_[i], true);
    }
  }
}

void Net::import_weights(const Checkpoint& ck) {
  for (size_t i = 0; i < graph_.nodes.size(); ++i) {
    const std::string& name = graph_.nodes[i].name;
    if (const auto& l = layers_[i]) {
      copy_into(l->weight, ck, name + ".weight");
      if (l->bias.defined()) copy_into(l->bias, ck, name + ".bias");
      if (l->node.bn) {
        copy_into(l->bn_weight, ck, name + ".bn.weight");
        copy_into(l->bn_bias, ck, name + ".bn.bias");
        copy_into(l->running_mean, ck, name + ".bn.running_mean");
        copy_into(l->running_var, ck, name + ".bn.running_var");
      }
    }
  }
}

Graph without_batch_norm(Graph g) {
  for (auto& n : g.nodes)
    if (n.bn) {
      n.bn = false;
      n.bias = true;
    }
  return g;
}

int Net::fold_batch_norm() {
  int folded = 0;
  at::NoGradGuard ng;
  for (size_t i = 0; i < graph_.nodes.size(); ++i) {
    const auto& l = layers_[i];
    if (!l || !l->node.bn) continue;
    // The eval-mode fold of QLayer::folded, stored: the folded network's
    // eval-mode output is the unfolded one's, to the bit.
    auto [w, b] = l->folded();
    w = w.detach().clone();
    b = b.detach().clone();
    const bool trainable = l->weight.requires_grad();
    l->weight.copy_(w);
    if (l->bias.defined()) {
      l->bias.copy_(b);
    } else {
      l->bias = l->register_parameter("bias", b, trainable);
    }
    for (auto* t : {&l->bn_weight, &l->bn_bias}) t->set_requires_grad(false);
    l->bn_weight = l->bn_bias = l->running_mean = l->running_var = at::Tensor();
    l->node.bn = false;
    l->node.bias = true;
    graph_.nodes[i].bn = false;
    graph_.nodes[i].bias = true;
    ++folded;
  }
  return folded;
}

void Net::calibrate(const at::Tensor& x) {
  for (auto& [name, q] : quantizers()) q->set_initialized(false);
  const bool was_training = is_training();
  eval();
  // Batch-norm layers normalise with the batch's statistics (and update their
  // running averages once), as in the reference, whose ranges come from a
  // first forward pass in training mode: the activation ranges then fit the
  // normalised activations training sees, not the output of the untrained
  // running statistics (mean 0, variance 1). The quantizers stay in eval mode.
  for (const auto& l : layers_)
    if (l && l->node.bn) {
      l->train(true);
      if (l->wq) l->wq->eval();
      if (l->aq) l->aq->eval();
    }
  {
    at::NoGradGuard ng;
    forward(x);
  }
  train(was_training);
}

std::map<std::string, int> Net::weight_bits() const {
  std::map<std::string, int> r;
  for (size_t i = 0; i < graph_.nodes.size(); ++i)
    if (layers_[i] && layers_[i]->wq) r[graph_.nodes[i].name] = layers_[i]->wq->enabled() ? layers_[i]->wq->bits() : 32;
  return r;
}

std::map<std::string, int> Net::act_bits() const {
  std::map<std::string, int> r;
  r[graph_.input.name] = 8;
  for (size_t i = 0; i < graph_.nodes.size(); ++i) {
    std::shared_ptr<BBQuantizer> a = layers_[i] ? layers_[i]->aq : node_aq_[i];
    if (a) r[graph_.nodes[i].name] = a->enabled() ? a->bits() : 32;
  }
  return r;
}

std::map<std::string, std::vector<bool>> Net::keep_masks() const {
  std::map<std::string, std::vector<bool>> r;
  for (size_t i = 0; i < graph_.nodes.size(); ++i)
    if (layers_[i] && layers_[i]->wq && layers_[i]->wq->has_prune() && layers_[i]->wq->enabled())
      r[graph_.nodes[i].name] = layers_[i]->wq->keep();
  return r;
}

at::Tensor preprocess(const uint8_t* pixels, int64_t n, const InputSpec& in) {
  const int64_t c = in.shape.at(0), h = in.shape.at(1), w = in.shape.at(2);
  auto x = at::from_blob(const_cast<uint8_t*>(pixels), {n, c, h, w}, at::kByte).to(at::kFloat);
  x.mul_(static_cast<float>(in.pixel_scale));
  const bool trivial = (in.mean.size() == 1 && in.mean[0] == 0.0 && in.std.size() == 1 && in.std[0] == 1.0);
  if (!trivial) {
    if (static_cast<int64_t>(in.mean.size()) != c && in.mean.size() != 1)
      throw std::invalid_argument("preprocess: mean must have 1 or C entries");
    if (static_cast<int64_t>(in.std.size()) != c && in.std.size() != 1)
      throw std::invalid_argument("preprocess: std must have 1 or C entries");
    for (int64_t k = 0; k < c; ++k) {
      const double m = in.mean.size() == 1 ? in.mean[0] : in.mean[k];
      const double s = in.std.size() == 1 ? in.std[0] : in.std[k];
      x.select(1, k).sub_(m).div_(s);
    }
  }
  return x;
}

}  // namespace bbits::train
