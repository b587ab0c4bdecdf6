#include "bbits/bench/model_layers.h"

#include <fmt/format.h>

#include <algorithm>
#include <stdexcept>

#include "bbits/bench/peaks.h"
#include "bbits/format/cost.h"
#include "bbits/runtime/plan.h"

namespace bbits::bench {
namespace {

[[noreturn]] void fail(const std::string& msg) { throw std::runtime_error(msg); }

}  // namespace

LayerCost ModelLayer::cost() const {
  LayerCost c;
  const kernels::OpKind k = kernels::op_kind(desc);
  if (k == kernels::OpKind::Conv2D || k == kernels::OpKind::FullyConnected) {
    c.macs = kernels::op_work(desc);
    c.wbits = kernels::weight_bits(desc);
    c.weight_bytes = static_cast<int64_t>(weights.size + 4 * std::max(weights.bias_q.size(), weights.bias_f.size()));
  }
  c.work = kernels::op_work(desc);
  c.macs_unpruned = macs_unpruned > 0 ? macs_unpruned : c.macs;
  c.abits = kernels::input_bits(desc);
  for (int i = 0; i < kernels::num_inputs(desc); ++i)
    c.input_bytes += kernels::input_elements(desc, i) *
                     static_cast<int64_t>(kernels::element_bytes(kernels::input_quant(desc, i).bits));
  c.output_bytes = kernels::output_elements(desc) *
                   static_cast<int64_t>(kernels::element_bytes(kernels::output_quant(desc).bits));
  c.m = gemm_m(desc);
  c.in_signed = c.macs > 0 && kernels::input_quant(desc, 0).is_signed && !kernels::input_quant(desc, 0).is_float();
  c.out_float = kernels::output_quant(desc).is_float() && !kernels::input_quant(desc, 0).is_float();
  return c;
}

std::string ModelLayer::family() const {
  if (const auto* c = std::get_if<kernels::ConvDesc>(&desc)) {
    if (c->is_depthwise()) return "depthwise";
    if (c->KH == 1 && c->KW == 1 && c->groups == 1) return "pointwise";
    return "conv2d";
  }
  return op;
}

std::unique_ptr<ModelLayers> ModelLayers::load(const std::string& path) {
  std::unique_ptr<ModelLayers> m(new ModelLayers());
  m->label_ = path;
  try {
    m->model_ = bbits::Model::load(path);  // its errors name the path
  } catch (const std::exception& e) {
    fail(e.what());
  }
  m->build();
  return m;
}

std::unique_ptr<ModelLayers> ModelLayers::from_memory(const void* data, size_t size, const std::string& label) {
  if (!data || size == 0) fail(label + ": empty model file");
  std::unique_ptr<ModelLayers> m(new ModelLayers());
  m->label_ = label;
  try {
    m->model_ = bbits::Model::from_memory(data, size);
  } catch (const std::exception& e) {
    fail(fmt::format("{}: {}", label, e.what()));
  }
  m->build();
  return m;
}

ModelLayers::~ModelLayers() = default;

std::vector<int64_t> ModelLayers::tensor_shape(int t) const {
  const auto& ts = model_->info().tensors;
  if (t < 0 || static_cast<size_t>(t) >= ts.size()) fail(fmt::format("{}: no tensor {}", label_, t));
  return ts[static_cast<size_t>(t)].shape;
}

kernels::QuantInfo ModelLayers::tensor_quant(int t) const {
  const auto& ts = model_->info().tensors;
  if (t < 0 || static_cast<size_t>(t) >= ts.size()) fail(fmt::format("{}: no tensor {}", label_, t));
  const TensorInfo& ti = ts[static_cast<size_t>(t)];
  if (ti.type != ElementType::Quantized) return {32, true, 1.0f};
  return {ti.bits, ti.is_signed, ti.scale.empty() ? 1.0f : ti.scale[0]};
}

void ModelLayers::build() {
  const ModelInfo& info = model_->info();
  const std::vector<PlanStep> steps = plan_steps(*model_);
  if (steps.size() != info.layers.size())
    fail(fmt::format("{}: the plan has {} steps for {} operators", label_, steps.size(), info.layers.size()));
  for (size_t i = 0; i < steps.size(); ++i) {
    const PlanStep& s = steps[i];
    const LayerInfo& li = info.layers[static_cast<size_t>(s.index)];
    ModelLayer L;
    L.index = s.index;
    L.name = li.name;
    L.op = li.op;
    L.desc = *s.desc;
    L.weights = s.weights;
    L.kernel = std::string(s.kernel);
    L.macs_unpruned = li.macs_unpruned;
    if (const auto* c = std::get_if<kernels::ConvDesc>(&L.desc)) L.depthwise = c->is_depthwise();
    const auto n_act = static_cast<size_t>(kernels::num_inputs(L.desc));
    if (li.inputs.size() < n_act || li.outputs.empty())
      fail(fmt::format("{}: operator {} '{}' lists {} inputs and {} outputs", label_, s.index, li.name,
                       li.inputs.size(), li.outputs.size()));
    L.input_tensors.assign(li.inputs.begin(), li.inputs.begin() + static_cast<std::ptrdiff_t>(n_act));
    L.output_tensor = li.outputs[0];
    layers_.push_back(std::move(L));
  }
}

int64_t ModelLayers::total_macs() const {
  int64_t s = 0;
  for (const auto& l : layers_) s += l.cost().macs;
  return s;
}

int64_t ModelLayers::total_bops() const {
  int64_t s = 0;
  for (const auto& l : layers_) s += layer_bops(l.cost());
  return s;
}

int64_t ModelLayers::total_bops_fp32() const {
  int64_t s = 0;
  for (const auto& l : layers_) {
    const auto c = l.cost();
    if (c.macs > 0) s += cost::bops_fp32(c.macs_unpruned);
  }
  return s;
}

std::string ModelLayers::arch() const { return model_->info().metadata.arch; }
std::string ModelLayers::method() const { return model_->info().metadata.method; }
double ModelLayers::accuracy() const { return model_->info().metadata.accuracy; }

}  // namespace bbits::bench
