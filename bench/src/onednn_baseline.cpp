#include "bbits/bench/onednn_baseline.h"

#include <fmt/format.h>
#include <omp.h>

#include <oneapi/dnnl/dnnl.hpp>
#include <random>
#include <stdexcept>
#include <unordered_map>

namespace bbits::bench {

using dnnl::memory;
using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;

const char* baseline_name(BaselineKind k) { return k == BaselineKind::F32 ? "onednn_f32" : "onednn_int8"; }

void set_onednn_threads(int threads) { omp_set_num_threads(std::max(threads, 1)); }

std::string onednn_info() {
  const dnnl_version_t* v = dnnl_version();
  const char* isa = "unknown";
  switch (dnnl::get_effective_cpu_isa()) {
    case dnnl::cpu_isa::sse41: isa = "sse41"; break;
    case dnnl::cpu_isa::avx: isa = "avx"; break;
    case dnnl::cpu_isa::avx2: isa = "avx2"; break;
    case dnnl::cpu_isa::avx512_mic: isa = "avx512_mic"; break;
    case dnnl::cpu_isa::avx512_core: isa = "avx512_core"; break;
    case dnnl::cpu_isa::avx512_core_vnni: isa = "avx512_core_vnni"; break;
    case dnnl::cpu_isa::avx512_core_bf16: isa = "avx512_core_bf16"; break;
    case dnnl::cpu_isa::avx512_core_amx: isa = "avx512_core_amx"; break;
    case dnnl::cpu_isa::avx2_vnni: isa = "avx2_vnni"; break;
    default: break;
  }
  return fmt::format("{}.{}.{} {}", v->major, v->minor, v->patch, isa);
}

namespace {

struct Step {
  std::unique_ptr<dnnl::primitive> prim;
  std::unordered_map<int, memory> args;
  std::string note;
};

}  // namespace

struct OnednnNet::Impl {
  dnnl::engine eng{dnnl::engine::kind::cpu, 0};
  dnnl::stream strm{eng};
  BaselineKind kind;
  std::unordered_map<int, memory> tensors;  // activation memories by file tensor index
  std::vector<Step> steps;
  std::mt19937 rng{7};

  dt type_of(const kernels::QuantInfo& q, bool force_f32) const {
    if (kind == BaselineKind::F32 || q.is_float() || force_f32) return dt::f32;
    return q.is_signed ? dt::s8 : dt::u8;
  }

  static memory::dims dims_of(const std::vector<int64_t>& s) { return memory::dims(s.begin(), s.end()); }
  static tag act_tag(size_t rank) {
    switch (rank) {
      case 1: return tag::a;
      case 2: return tag::nc;
      case 3: return tag::ncw;  // not expected
      default: return tag::nhwc;
    }
  }

  void fill_random(memory& m) {
    const auto d = m.get_desc();
    const size_t bytes = d.get_size();
    auto* p = static_cast<uint8_t*>(m.get_data_handle());
    if (d.data_type() == dt::f32) {
      std::uniform_real_distribution<float> u(-0.5f, 0.5f);
      for (size_t i = 0; i < bytes / 4; ++i) reinterpret_cast<float*>(p)[i] = u(rng);
    } else {
      std::uniform_int_distribution<int> u(0, 63);  // small: valid for u8 and s8
      for (size_t i = 0; i < bytes; ++i) p[i] = static_cast<uint8_t>(u(rng));
    }
  }

  // Activation memory of a file tensor (created on first use).
  memory& tensor(const ModelLayers& m, int t, bool force_f32) {
    auto it = tensors.find(t);
    if (it != tensors.end()) return it->second;
    const auto s = m.tensor_shape(t);
    memory::desc md(dims_of(s), type_of(m.tensor_quant(t), force_f32), act_tag(s.size()));
    memory mem(md, eng);
    fill_random(mem);
    return tensors.emplace(t, std::move(mem)).first->second;
  }

  // Reordered constant weights for a primitive that wants `want`.
  memory weights(const memory::desc& user_md, const memory::desc& want) {
    memory user(user_md, eng);
    fill_random(user);
    if (user_md == want) return user;
    memory w(want, eng);
    dnnl::reorder(user, w).execute(strm, user, w);
    strm.wait();
    return w;
  }

  dnnl::primitive_attr attr_for(kernels::Activation act, bool int8, int64_t oc) {
    dnnl::primitive_attr attr;
    dnnl::post_ops po;
    if (act == kernels::Activation::Relu) po.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
    if (act == kernels::Activation::Relu6) po.append_eltwise(1.f, dnnl::algorithm::eltwise_clip, 0.f, 6.f);
    attr.set_post_ops(po);
    if (int8 && oc > 0) attr.set_output_scales(1 << 1, std::vector<float>(static_cast<size_t>(oc), 0.01f));
    return attr;
  }

  void build(const ModelLayers& m, const ModelLayer& L, Step& s);
};

void OnednnNet::Impl::build(const ModelLayers& m, const ModelLayer& L, Step& s) {
  // Tensors that feed a softmax stay float in the int8 baseline (oneDNN 2.6
  // softmax is float only).
  std::vector<bool> into_softmax;
  const bool softmax = std::holds_alternative<kernels::SoftmaxDesc>(L.desc);
  auto in_mem = [&](size_t i) -> memory& { return tensor(m, L.input_tensors[i], softmax); };
  memory& dst = tensor(m, L.output_tensor, softmax);
  const bool int8 = kind == BaselineKind::Int8;

  if (const auto* d = std::get_if<kernels::ConvDesc>(&L.desc)) {
    memory& src = in_mem(0);
    const bool q = int8 && src.get_desc().data_type() != dt::f32;
    const dt wdt = q ? dt::s8 : dt::f32;
    const memory::dims wd = d->groups > 1 ? memory::dims{d->groups, d->OC / d->groups, d->C / d->groups, d->KH, d->KW}
                                          : memory::dims{d->OC, d->C, d->KH, d->KW};
    memory::desc wany(wd, wdt, tag::any);
    memory::desc bias({d->OC}, dt::f32, tag::a);
    memory::desc dst_md = dst.get_desc();
    dnnl::convolution_forward::desc cd(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct,
                                       src.get_desc(), wany, bias, dst_md, {d->stride_h, d->stride_w},
                                       {d->dilation_h - 1, d->dilation_w - 1}, {d->pad_top, d->pad_left},
                                       {d->pad_bottom, d->pad_right});
    dnnl::convolution_forward::primitive_desc pd(cd, attr_for(d->activation, q, d->OC), eng);
    memory w = weights(memory::desc(wd, wdt, d->groups > 1 ? tag::goihw : tag::oihw), pd.weights_desc());
    memory b(bias, eng);
    fill_random(b);
    s.prim = std::make_unique<dnnl::convolution_forward>(pd);
    s.args = {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, w}, {DNNL_ARG_BIAS, b}, {DNNL_ARG_DST, dst}};
    s.note = pd.impl_info_str();
    return;
  }
  if (const auto* d = std::get_if<kernels::FcDesc>(&L.desc)) {
    memory& src = in_mem(0);
    const bool q = int8 && src.get_desc().data_type() != dt::f32;
    const dt wdt = q ? dt::s8 : dt::f32;
    memory::desc wany({d->OC, d->K}, wdt, tag::any);
    memory::desc bias({d->OC}, dt::f32, tag::a);
    dnnl::inner_product_forward::desc id(dnnl::prop_kind::forward_inference, src.get_desc(), wany, bias,
                                         dst.get_desc());
    dnnl::inner_product_forward::primitive_desc pd(id, attr_for(d->activation, q, d->OC), eng);
    memory w = weights(memory::desc({d->OC, d->K}, wdt, tag::oi), pd.weights_desc());
    memory b(bias, eng);
    fill_random(b);
    s.prim = std::make_unique<dnnl::inner_product_forward>(pd);
    s.args = {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, w}, {DNNL_ARG_BIAS, b}, {DNNL_ARG_DST, dst}};
    s.note = pd.impl_info_str();
    return;
  }
  if (const auto* d = std::get_if<kernels::ActivationDesc>(&L.desc)) {
    memory& src = in_mem(0);
    const auto alg = d->act == kernels::Activation::Relu ? dnnl::algorithm::eltwise_relu : dnnl::algorithm::eltwise_clip;
    dnnl::eltwise_forward::desc ed(dnnl::prop_kind::forward_inference, alg, src.get_desc(), 0.f,
                                   d->act == kernels::Activation::Relu ? 0.f : 6.f);
    dnnl::eltwise_forward::primitive_desc pd(ed, eng);
    s.prim = std::make_unique<dnnl::eltwise_forward>(pd);
    s.args = {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, dst}};
    s.note = pd.impl_info_str();
    return;
  }
  if (const auto* d = std::get_if<kernels::PoolDesc>(&L.desc)) {
    memory& src = in_mem(0);
    dnnl::algorithm alg = dnnl::algorithm::pooling_max;
    memory::dims k{d->KH, d->KW}, st{d->stride_h, d->stride_w}, pl{d->pad_top, d->pad_left},
        pr{d->pad_bottom, d->pad_right};
    if (d->kind == kernels::PoolKind::GlobalAvg) {
      alg = dnnl::algorithm::pooling_avg_exclude_padding;
      k = {d->H, d->W};
      st = {1, 1};
      pl = pr = {0, 0};
    } else if (d->kind == kernels::PoolKind::Avg) {
      alg = d->count_include_pad ? dnnl::algorithm::pooling_avg_include_padding
                                 : dnnl::algorithm::pooling_avg_exclude_padding;
    }
    dnnl::pooling_forward::desc pdsc(dnnl::prop_kind::forward_inference, alg, src.get_desc(), dst.get_desc(), st, k,
                                     pl, pr);
    dnnl::pooling_forward::primitive_desc pd(pdsc, eng);
    s.prim = std::make_unique<dnnl::pooling_forward>(pd);
    s.args = {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, dst}};
    if (pd.workspace_desc().get_size() > 0) {
      memory ws(pd.workspace_desc(), eng);
      s.args.emplace(DNNL_ARG_WORKSPACE, ws);
    }
    s.note = pd.impl_info_str();
    return;
  }
  if (const auto* d = std::get_if<kernels::AddDesc>(&L.desc)) {
    memory& a = in_mem(0);
    memory& b = in_mem(1);
    dnnl::binary::desc bd(dnnl::algorithm::binary_add, a.get_desc(), b.get_desc(), dst.get_desc());
    dnnl::binary::primitive_desc pd(bd, attr_for(d->activation, false, 0), eng);
    s.prim = std::make_unique<dnnl::binary>(pd);
    s.args = {{DNNL_ARG_SRC_0, a}, {DNNL_ARG_SRC_1, b}, {DNNL_ARG_DST, dst}};
    s.note = pd.impl_info_str();
    return;
  }
  if (std::holds_alternative<kernels::ConcatDesc>(L.desc)) {
    std::vector<memory::desc> srcs;
    for (size_t i = 0; i < L.input_tensors.size(); ++i) srcs.push_back(in_mem(i).get_desc());
    const int axis = 1;  // channels of N,C,H,W (the only concat the models use)
    dnnl::concat::primitive_desc pd(dst.get_desc(), axis, srcs, eng);
    s.prim = std::make_unique<dnnl::concat>(pd);
    s.args = {{DNNL_ARG_DST, dst}};
    for (size_t i = 0; i < L.input_tensors.size(); ++i)
      s.args.emplace(DNNL_ARG_MULTIPLE_SRC + static_cast<int>(i), in_mem(i));
    s.note = pd.impl_info_str();
    return;
  }
  if (const auto* d = std::get_if<kernels::ReshapeDesc>(&L.desc)) {
    memory& src = in_mem(0);
    if (!d->to_chw) {  // same element order: a copy
      dnnl::reorder::primitive_desc pd(eng, src.get_desc(), eng,
                                       memory::desc(src.get_desc().dims(), dst.get_desc().data_type(),
                                                    act_tag(src.get_desc().dims().size())));
      memory out(pd.dst_desc(), eng, dst.get_data_handle());
      s.prim = std::make_unique<dnnl::reorder>(pd);
      s.args = {{DNNL_ARG_FROM, src}, {DNNL_ARG_TO, out}};
      s.note = pd.impl_info_str();
      return;
    }
    // N,H,W,C storage -> N,C*H*W: a reorder to nchw written into the output.
    memory::desc to({d->N, d->C, d->H, d->W}, dst.get_desc().data_type(), tag::nchw);
    dnnl::reorder::primitive_desc pd(eng, src.get_desc(), eng, to);
    memory out(to, eng, dst.get_data_handle());
    s.prim = std::make_unique<dnnl::reorder>(pd);
    s.args = {{DNNL_ARG_FROM, src}, {DNNL_ARG_TO, out}};
    s.note = pd.impl_info_str();
    return;
  }
  if (const auto* d = std::get_if<kernels::SoftmaxDesc>(&L.desc)) {
    memory& src = in_mem(0);
    const auto dims = src.get_desc().dims();
    // The axis of the file's layout (softmax over features of N,F in practice).
    const int axis = dims.size() == 2 ? 1 : 1;
    (void)d;
    dnnl::softmax_forward::desc sd(dnnl::prop_kind::forward_inference, src.get_desc(), axis);
    dnnl::softmax_forward::primitive_desc pd(sd, eng);
    s.prim = std::make_unique<dnnl::softmax_forward>(pd);
    s.args = {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, dst}};
    s.note = pd.impl_info_str();
    return;
  }
  throw std::runtime_error("operator not supported by the oneDNN baseline");
}

OnednnNet::OnednnNet(const ModelLayers& model, BaselineKind kind, int threads) : impl_(std::make_unique<Impl>()) {
  set_onednn_threads(threads);
  impl_->kind = kind;
  for (const auto& L : model.layers()) {
    Step s;
    try {
      impl_->build(model, L, s);
    } catch (const dnnl::error& e) {
      s.prim.reset();
      s.note = fmt::format("oneDNN cannot run this layer: {}", e.what());
    } catch (const std::exception& e) {
      s.prim.reset();
      s.note = e.what();
    }
    impl_->steps.push_back(std::move(s));
  }
}

OnednnNet::~OnednnNet() = default;

size_t OnednnNet::size() const { return impl_->steps.size(); }
bool OnednnNet::available(size_t i) const { return impl_->steps.at(i).prim != nullptr; }
const std::string& OnednnNet::note(size_t i) const { return impl_->steps.at(i).note; }

void OnednnNet::run_layer(size_t i) {
  Step& s = impl_->steps.at(i);
  if (!s.prim) return;
  s.prim->execute(impl_->strm, s.args);
  impl_->strm.wait();
}

void OnednnNet::run_all() {
  for (auto& s : impl_->steps)
    if (s.prim) s.prim->execute(impl_->strm, s.args);
  impl_->strm.wait();
}

}  // namespace bbits::bench
