// Model: memory-mapping, verification, description and the plan.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>

#include "bbits/format/cost.h"
#include "bbits/runtime/plan.h"
#include "internal.h"

namespace bbits {

namespace detail {

std::unique_ptr<ModelBytes> ModelBytes::map_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(path + ": cannot open model file: " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    throw Error(path + ": cannot stat model file: " + std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(path + ": not a regular file");
  }
  if (st.st_size == 0) {
    ::close(fd);
    throw Error(path + ": model file is empty");
  }
  const size_t size = static_cast<size_t>(st.st_size);
  void* p = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int err = errno;
  ::close(fd);
  if (p == MAP_FAILED) throw Error(path + ": cannot map model file: " + std::strerror(err));
  std::unique_ptr<ModelBytes> b(new ModelBytes());
  b->data_ = static_cast<const uint8_t*>(p);
  b->size_ = size;
  b->mapped_ = true;
  return b;
}

std::unique_ptr<ModelBytes> ModelBytes::copy(const void* data, size_t size) {
  if (data == nullptr && size != 0) throw Error("model bytes: null pointer");
  if (size == 0) throw Error("model bytes: empty buffer");
  // 64-byte aligned like a mapped file, so the data section keeps its alignment.
  const size_t alloc = (size + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, alloc);
  if (!p) throw Error("model bytes: out of memory (" + std::to_string(size) + " bytes)");
  std::memcpy(p, data, size);
  std::unique_ptr<ModelBytes> b(new ModelBytes());
  b->owned_ = p;
  b->data_ = static_cast<const uint8_t*>(p);
  b->size_ = size;
  return b;
}

ModelBytes::~ModelBytes() {
  if (mapped_) ::munmap(const_cast<uint8_t*>(data_), size_);
  std::free(owned_);
}

kernels::QuantInfo act_quant(const fb::Tensor& t) {
  kernels::QuantInfo q;
  if (t.dtype() == fb::DataType::Quantized && t.quant()) {
    q.bits = t.quant()->bits();
    q.is_signed = t.quant()->is_signed();
    q.scale = (t.quant()->scale() && t.quant()->scale()->size() > 0) ? t.quant()->scale()->Get(0) : 1.0f;
  } else {
    q.bits = 32;
    q.is_signed = true;
    q.scale = 1.0f;
  }
  return q;
}

namespace {

std::vector<int64_t> shape_of(const fb::Tensor* t) {
  std::vector<int64_t> s;
  if (t && t->shape()) s.assign(t->shape()->begin(), t->shape()->end());
  return s;
}

const char* act_name(fb::Activation a) {
  switch (a) {
    case fb::Activation::Relu: return "relu";
    case fb::Activation::Relu6: return "relu6";
    default: return "none";
  }
}

// Totals saturate instead of overflowing (absurd shapes give absurd costs).
int64_t sat_add(int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_add_overflow(a, b, &r)) return a > 0 ? INT64_MAX : INT64_MIN;
  return r;
}

int tensor_bits(const fb::Tensor* t) {
  if (!t) return -1;
  if (t->dtype() == fb::DataType::Quantized) return t->quant() ? t->quant()->bits() : -1;
  return 32;
}

}  // namespace

ModelInfo describe_model(const format::ModelView& view) {
  const fb::Model& m = *view.model;
  ModelInfo info;
  info.schema_version = m.schema_version();
  info.file_size = view.file_size;
  const auto& tensors = *m.tensors();
  for (const fb::Tensor* t : tensors) {
    TensorInfo ti;
    ti.name = t->name()->str();
    ti.shape = shape_of(t);
    ti.type = t->dtype() == fb::DataType::Quantized ? ElementType::Quantized
              : t->dtype() == fb::DataType::Int32   ? ElementType::Int32
                                                    : ElementType::Float32;
    ti.bits = ti.type == ElementType::Quantized ? tensor_bits(t) : 32;
    if (const fb::Quant* q = t->quant()) {
      ti.is_signed = q->is_signed();
      if (q->scale()) ti.scale.assign(q->scale()->begin(), q->scale()->end());
      ti.axis = q->axis();
      if (q->x_max()) ti.x_max.assign(q->x_max()->begin(), q->x_max()->end());
    }
    ti.is_constant = t->buffer() >= 0;
    info.tensors.push_back(std::move(ti));
  }
  const std::vector<OpCosts> costs = operator_costs(view);
  auto tensor_at = [&](int i) -> const fb::Tensor* {
    return i >= 0 && static_cast<size_t>(i) < tensors.size() ? tensors.Get(static_cast<flatbuffers::uoffset_t>(i))
                                                            : nullptr;
  };
  for (const fb::Operator* op : *m.operators()) {
    LayerInfo L;
    L.name = op->name() ? op->name()->str() : std::string();
    L.op = format::op_type_name(op->type());
    L.inputs.assign(op->inputs()->begin(), op->inputs()->end());
    L.outputs.assign(op->outputs()->begin(), op->outputs()->end());
    if (L.name.empty()) L.name = L.op + "_" + std::to_string(info.layers.size());
    const fb::Tensor* in0 = L.inputs.empty() ? nullptr : tensor_at(L.inputs[0]);
    const fb::Tensor* out0 = L.outputs.empty() ? nullptr : tensor_at(L.outputs[0]);
    L.input_shape = shape_of(in0);
    L.output_shape = shape_of(out0);
    L.act_bits = tensor_bits(in0);
    L.out_bits = tensor_bits(out0);
    L.activation = "none";
    if (op->type() == fb::OpType::Conv2D && op->options_as_Conv2DOptions())
      L.activation = act_name(op->options_as_Conv2DOptions()->activation());
    else if (op->type() == fb::OpType::FullyConnected && op->options_as_FullyConnectedOptions())
      L.activation = act_name(op->options_as_FullyConnectedOptions()->activation());
    else if (op->type() == fb::OpType::Add && op->options_as_AddOptions())
      L.activation = act_name(op->options_as_AddOptions()->activation());
    const bool has_weights = op->type() == fb::OpType::Conv2D || op->type() == fb::OpType::FullyConnected;
    if (has_weights && L.inputs.size() >= 2) {
      const fb::Tensor* w = tensor_at(L.inputs[1]);
      L.weight_bits = tensor_bits(w);
      const std::vector<int64_t> ws = shape_of(w);
      const int64_t rows = ws.empty() ? 0 : ws[0];
      if (op->keep_mask() && op->keep_mask()->size() > 0) {
        L.keep_mask.assign(op->keep_mask()->begin(), op->keep_mask()->end());
        L.channels_total = static_cast<int64_t>(L.keep_mask.size());
        for (uint8_t b : L.keep_mask) L.channels_kept += b ? 1 : 0;
      } else {
        L.channels_total = L.channels_kept = rows;
      }
      if (L.weight_bits == 0) L.channels_kept = 0;
      // Bytes of the same layer in float32 with nothing pruned: its weights and biases.
      const int64_t fp32 = sat_add(costs[info.layers.size()].float32_weights, L.channels_total);
      info.float32_bytes = sat_add(info.float32_bytes, cost::mul(fp32, 4));
      if (L.inputs.size() >= 3 && L.inputs[2] >= 0) {
        const fb::Tensor* b = tensor_at(L.inputs[2]);
        if (b && b->buffer() >= 0)
          info.bias_bytes = sat_add(info.bias_bytes, static_cast<int64_t>(view.tensor_data(L.inputs[2]).size()));
      }
    }
    const OpCosts& c = costs[info.layers.size()];
    L.macs = c.macs;
    L.macs_unpruned = c.macs_unpruned;
    L.weight_bytes = c.weight_bytes;
    L.bops = c.bops;
    L.bops_fp32 = cost::bops_fp32(c.macs_unpruned);
    L.stored_macs = op->macs();
    L.stored_macs_unpruned = op->macs_unpruned();
    L.stored_weight_bytes = op->weight_bytes();
    L.stored_bops = op->bops();
    info.macs = sat_add(info.macs, L.macs);
    info.macs_unpruned = sat_add(info.macs_unpruned, L.macs_unpruned);
    info.bops = sat_add(info.bops, L.bops);
    info.bops_fp32 = sat_add(info.bops_fp32, L.bops_fp32);
    info.weight_bytes = sat_add(info.weight_bytes, L.weight_bytes);
    info.layers.push_back(std::move(L));
  }
  info.inputs.assign(m.inputs()->begin(), m.inputs()->end());
  info.outputs.assign(m.outputs()->begin(), m.outputs()->end());
  if (const fb::Preprocess* p = m.preprocess()) {
    PreprocessInfo& pp = info.preprocess;
    pp.present = true;
    pp.layout = p->layout() == fb::Layout::NHWC ? "NHWC" : p->layout() == fb::Layout::NC ? "NC" : "NCHW";
    pp.channels = p->channels();
    pp.height = p->height();
    pp.width = p->width();
    pp.pixel_scale = p->pixel_scale();
    if (p->mean()) pp.mean.assign(p->mean()->begin(), p->mean()->end());
    if (p->std()) pp.std.assign(p->std()->begin(), p->std()->end());
  }
  if (const fb::Metadata* md = m.metadata()) {
    MetadataInfo& mi = info.metadata;
    if (md->producer()) mi.producer = md->producer()->str();
    if (md->source_checkpoint()) mi.source_checkpoint = md->source_checkpoint()->str();
    if (md->description()) mi.description = md->description()->str();
    if (const fb::TrainingInfo* t = md->training()) {
      if (t->method()) mi.method = t->method()->str();
      if (t->dataset()) mi.dataset = t->dataset()->str();
      if (t->arch()) mi.arch = t->arch()->str();
      mi.mu = t->mu();
      mi.accuracy = t->accuracy();
      mi.relative_bops = t->relative_bops();
      mi.epochs = t->epochs();
    }
  }
  return info;
}

}  // namespace detail

int64_t TensorInfo::elements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

int64_t Tensor::elements() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

const char* version() { return BBITS_VERSION_STRING; }

Model::Model(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Model::~Model() = default;

namespace {

std::shared_ptr<const Model> finish_load(std::unique_ptr<Model::Impl> impl, const std::string& origin);

}  // namespace

// Model's constructor is private; this helper is its friend in all but name:
// it lives in the same translation unit and goes through a derived type.
struct ModelFactory {
  static std::shared_ptr<const Model> make(std::unique_ptr<Model::Impl> impl) {
    return std::shared_ptr<const Model>(new Model(std::move(impl)));
  }
};

namespace {

std::vector<int64_t> to_caller_layout(const std::vector<int64_t>& s, bool nhwc) {
  if (nhwc && s.size() == 4) return {s[0], s[2], s[3], s[1]};
  return s;
}

std::shared_ptr<const Model> finish_load(std::unique_ptr<Model::Impl> impl, const std::string& origin) {
  try {
    impl->view = format::verify_model(impl->bytes->data(), impl->bytes->size());
  } catch (const format::FormatError& e) {
    throw Error(origin + ": " + e.what());
  } catch (const std::exception& e) {
    throw Error(origin + ": invalid model: " + e.what());
  }
  try {
    detail::apply_env_calibration_once();
    impl->info = detail::describe_model(impl->view);
    const char* v = std::getenv("BBITS_VERBOSE");
    const bool verbose = v && *v && std::strcmp(v, "0") != 0;
    impl->plan = detail::build_plan(impl->view, verbose);
  } catch (const Error& e) {
    throw Error(origin + ": " + e.what());
  } catch (const std::exception& e) {
    throw Error(origin + ": " + e.what());
  }
  for (const detail::Step& s : impl->plan.steps) {
    LayerInfo& L = impl->info.layers[static_cast<size_t>(s.op_index)];
    L.kernel = std::string(s.kernel->name());
    L.kernel_reason = s.reason;
  }
  impl->io_nhwc = impl->info.preprocess.present && impl->info.preprocess.layout == "NHWC";
  for (int t : impl->info.inputs) {
    TensorInfo ti = impl->info.tensors[static_cast<size_t>(t)];
    ti.shape = to_caller_layout(ti.shape, impl->io_nhwc);
    impl->io_inputs.push_back(std::move(ti));
  }
  for (int t : impl->info.outputs) {
    TensorInfo ti = impl->info.tensors[static_cast<size_t>(t)];
    ti.shape = to_caller_layout(ti.shape, impl->io_nhwc);
    impl->io_outputs.push_back(std::move(ti));
  }
  return ModelFactory::make(std::move(impl));
}

}  // namespace

std::shared_ptr<const Model> Model::load(const std::string& path) {
  auto impl = std::make_unique<Impl>();
  impl->bytes = detail::ModelBytes::map_file(path);
  return finish_load(std::move(impl), path);
}

std::shared_ptr<const Model> Model::from_memory(const void* data, size_t size) {
  auto impl = std::make_unique<Impl>();
  impl->bytes = detail::ModelBytes::copy(data, size);
  return finish_load(std::move(impl), "model in memory");
}

const ModelInfo& Model::info() const { return impl_->info; }
size_t Model::num_inputs() const { return impl_->io_inputs.size(); }
size_t Model::num_outputs() const { return impl_->io_outputs.size(); }

const TensorInfo& Model::input(size_t i) const {
  if (i >= impl_->io_inputs.size())
    throw Error("input index " + std::to_string(i) + " out of range (model has " +
                std::to_string(impl_->io_inputs.size()) + ")");
  return impl_->io_inputs[i];
}

const TensorInfo& Model::output(size_t i) const {
  if (i >= impl_->io_outputs.size())
    throw Error("output index " + std::to_string(i) + " out of range (model has " +
                std::to_string(impl_->io_outputs.size()) + ")");
  return impl_->io_outputs[i];
}

std::vector<PlanStep> plan_steps(const Model& model) {
  std::vector<PlanStep> out;
  out.reserve(model.impl().plan.steps.size());
  for (const detail::Step& s : model.impl().plan.steps) {
    PlanStep p;
    p.index = s.op_index;
    p.desc = &s.desc;
    p.weights.data = s.weight_data.data();
    p.weights.size = s.weight_data.size();
    p.weights.scales = s.w_scales;
    p.weights.bias_q = s.bias_q;
    p.weights.bias_f = s.bias_f;
    p.kernel = s.kernel->name();
    p.cost_ns = s.cost_ns;
    out.push_back(p);
  }
  return out;
}

size_t Model::arena_bytes() const { return impl_->plan.arena_bytes; }
size_t Model::arena_bytes_unshared() const { return impl_->plan.arena_unshared; }
std::string Model::isa() const { return kernels::isa_name(impl_->plan.isa); }

}  // namespace bbits
