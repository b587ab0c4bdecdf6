// The plan: operator descriptors, kernel choice, prepacked weights and the
// activation arena, built once per Model.
#include <algorithm>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <stdexcept>

#include "bbits/kernels/cpu.h"
#include "internal.h"

namespace bbits::detail {

namespace {

using kernels::OpDesc;
using kernels::QuantInfo;

[[noreturn]] void fail(const std::string& msg) { throw Error(msg); }

std::vector<int64_t> shape_of(const fb::Tensor* t) { return {t->shape()->begin(), t->shape()->end()}; }

kernels::Activation to_act(fb::Activation a) {
  switch (a) {
    case fb::Activation::Relu: return kernels::Activation::Relu;
    case fb::Activation::Relu6: return kernels::Activation::Relu6;
    default: return kernels::Activation::None;
  }
}

// Maps an axis of an N,C,H,W (or N,F) tensor onto the runtime's N,H,W,C
// storage and returns (outer, inner) around it.
void nhwc_axis_split(const std::vector<int64_t>& s, int axis, int64_t& outer, int64_t& axis_size, int64_t& inner) {
  const int rank = static_cast<int>(s.size());
  if (axis < 0) axis += rank;
  if (axis < 0 || axis >= rank) fail("axis out of range");
  std::vector<int64_t> stored = s;
  int stored_axis = axis;
  if (rank == 4) {
    stored = {s[0], s[2], s[3], s[1]};
    static const int map[4] = {0, 3, 1, 2};
    stored_axis = map[axis];
  }
  outer = 1;
  inner = 1;
  for (int i = 0; i < stored_axis; ++i) outer *= stored[static_cast<size_t>(i)];
  for (int i = stored_axis + 1; i < rank; ++i) inner *= stored[static_cast<size_t>(i)];
  axis_size = stored[static_cast<size_t>(stored_axis)];
}

// N,C,H,W of a 4-D activation (the file's layout) into the N,H,W,C fields of
// a convolution, pooling or reshape descriptor.
template <class D>
void set_nchw(D& d, const std::vector<int64_t>& xs) {
  if (xs.size() != 4) fail("input must be 4-D (N,C,H,W), is " + std::to_string(xs.size()) + "-D");
  d.N = xs[0];
  d.C = xs[1];
  d.H = xs[2];
  d.W = xs[3];
}

// Strides and padding of a convolution or pooling window (Conv2DOptions and
// Pool2DOptions name these fields alike).
template <class D, class O>
void set_window(D& d, const O& o) {
  d.stride_h = o.stride_h();
  d.stride_w = o.stride_w();
  d.pad_top = o.pad_top();
  d.pad_left = o.pad_left();
  d.pad_bottom = o.pad_bottom();
  d.pad_right = o.pad_right();
}

struct Builder {
  const format::ModelView& view;
  const fb::Model& m;
  Plan& plan;

  const fb::Tensor* tensor(int i) const { return m.tensors()->Get(static_cast<flatbuffers::uoffset_t>(i)); }

  int weight_bits(const fb::Tensor* w) const {
    if (w->dtype() == fb::DataType::Float32) return 32;
    return w->quant() ? w->quant()->bits() : 8;
  }

  void fill_constants(Step& s, const fb::Tensor* w, int bias_index, int64_t oc) {
    if (w->dtype() == fb::DataType::Quantized && w->quant() && w->quant()->scale())
      s.w_scales.assign(w->quant()->scale()->begin(), w->quant()->scale()->end());
    if (bias_index < 0) return;
    const fb::Tensor* b = tensor(bias_index);
    const std::span<const uint8_t> bytes = view.tensor_data(bias_index);
    if (static_cast<int64_t>(bytes.size()) != oc * 4)
      fail("bias '" + b->name()->str() + "' holds " + std::to_string(bytes.size()) + " bytes for " +
           std::to_string(oc) + " channels");
    if (b->dtype() == fb::DataType::Int32) {
      s.bias_q.resize(static_cast<size_t>(oc));
      std::memcpy(s.bias_q.data(), bytes.data(), bytes.size());
    } else {
      s.bias_f.resize(static_cast<size_t>(oc));
      std::memcpy(s.bias_f.data(), bytes.data(), bytes.size());
      // The kernels derive integer biases from these (quantize_bias): NaN or
      // infinity has no integer meaning.
      for (size_t i = 0; i < s.bias_f.size(); ++i)
        if (!std::isfinite(s.bias_f[i]))
          fail("bias '" + b->name()->str() + "' value " + std::to_string(i) + " is not a finite number");
    }
  }

  // Builds the descriptor of operator `oi`; fills constants into `s`.
  OpDesc make_desc(const fb::Operator& op, Step& s, int& weight_tensor) {
    const std::vector<int> in(op.inputs()->begin(), op.inputs()->end());
    const std::vector<int> out(op.outputs()->begin(), op.outputs()->end());
    const fb::Tensor* x = tensor(in[0]);
    const fb::Tensor* y = tensor(out[0]);
    const std::vector<int64_t> xs = shape_of(x), ys = shape_of(y);
    const QuantInfo qin = act_quant(*x), qout = act_quant(*y);
    weight_tensor = -1;
    switch (op.type()) {
      case fb::OpType::Conv2D: {
        const auto* o = op.options_as_Conv2DOptions();
        const fb::Tensor* w = tensor(in[1]);
        const std::vector<int64_t> ws = shape_of(w);
        kernels::ConvDesc d;
        set_nchw(d, xs);
        set_window(d, *o);
        d.OC = ws[0];
        d.KH = ws[1];
        d.KW = ws[2];
        d.dilation_h = o->dilation_h();
        d.dilation_w = o->dilation_w();
        d.groups = o->groups();
        d.wbits = weight_bits(w);
        d.in = qin;
        d.out = qout;
        d.activation = to_act(o->activation());
        if (ys != std::vector<int64_t>{d.N, d.OC, d.out_h(), d.out_w()}) fail("output shape does not match the convolution");
        fill_constants(s, w, in.size() > 2 ? in[2] : -1, d.OC);
        weight_tensor = in[1];
        return d;
      }
      case fb::OpType::FullyConnected: {
        const auto* o = op.options_as_FullyConnectedOptions();
        const fb::Tensor* w = tensor(in[1]);
        const std::vector<int64_t> ws = shape_of(w);
        kernels::FcDesc d;
        d.N = xs[0];
        d.K = xs[1];
        d.OC = ws[0];
        d.wbits = weight_bits(w);
        d.in = qin;
        d.out = qout;
        d.activation = o ? to_act(o->activation()) : kernels::Activation::None;
        fill_constants(s, w, in.size() > 2 ? in[2] : -1, d.OC);
        weight_tensor = in[1];
        return d;
      }
      case fb::OpType::Relu:
      case fb::OpType::Relu6: {
        kernels::ActivationDesc d;
        d.count = format::shape_elements(xs);
        d.act = op.type() == fb::OpType::Relu ? kernels::Activation::Relu : kernels::Activation::Relu6;
        d.in = qin;
        d.out = qout;
        return d;
      }
      case fb::OpType::MaxPool2D:
      case fb::OpType::AvgPool2D: {
        const auto* o = op.options_as_Pool2DOptions();
        kernels::PoolDesc d;
        d.kind = op.type() == fb::OpType::MaxPool2D ? kernels::PoolKind::Max : kernels::PoolKind::Avg;
        set_nchw(d, xs);
        set_window(d, *o);
        d.KH = o->kernel_h();
        d.KW = o->kernel_w();
        d.count_include_pad = o->count_include_pad();
        d.in = qin;
        d.out = qout;
        return d;
      }
      case fb::OpType::GlobalAvgPool: {
        kernels::PoolDesc d;
        d.kind = kernels::PoolKind::GlobalAvg;
        set_nchw(d, xs);
        d.KH = static_cast<int>(d.H);
        d.KW = static_cast<int>(d.W);
        d.in = qin;
        d.out = qout;
        return d;
      }
      case fb::OpType::Add: {
        const auto* o = op.options_as_AddOptions();
        kernels::AddDesc d;
        d.count = format::shape_elements(xs);
        d.a = qin;
        d.b = act_quant(*tensor(in[1]));
        d.out = qout;
        d.activation = o ? to_act(o->activation()) : kernels::Activation::None;
        return d;
      }
      case fb::OpType::Concat: {
        const auto* o = op.options_as_ConcatOptions();
        kernels::ConcatDesc d;
        int64_t axis_size = 0;
        for (size_t i = 0; i < in.size(); ++i) {
          const std::vector<int64_t> s_i = shape_of(tensor(in[i]));
          int64_t outer = 1, inner = 1;
          nhwc_axis_split(s_i, o->axis(), outer, axis_size, inner);
          d.outer = outer;
          d.inner = inner;
          d.sizes.push_back(axis_size);
          d.in.push_back(act_quant(*tensor(in[i])));
        }
        d.out = qout;
        return d;
      }
      case fb::OpType::Reshape: {
        kernels::ReshapeDesc d;
        d.in = qin;
        d.out = qout;
        if (xs.size() == 4) {
          set_nchw(d, xs);
          // Stored N,H,W,C; the file's element order is N,C,H,W. Only a flatten
          // to N,(C*H*W) (or any shape keeping N first with the same C,H,W order
          // flattened) needs the transpose; a 4-D output must keep the dims.
          if (ys.size() == 4) {
            if (ys != xs) fail("reshape between different 4-D shapes is not supported by the runtime");
            d.to_chw = false;
          } else {
            if (ys.empty() || ys[0] != xs[0])
              fail("reshape must keep the batch dimension first");
            d.to_chw = true;
          }
        } else {
          if (ys.size() == 4 && ys[2] * ys[3] != 1 && ys[1] != 1)
            fail("reshape from " + std::to_string(xs.size()) + "-D to N,C,H,W with H*W > 1 is not supported");
          d.N = 1;
          d.H = 1;
          d.W = 1;
          d.C = format::shape_elements(xs);
          d.to_chw = false;
        }
        return d;
      }
      case fb::OpType::Softmax: {
        const auto* o = op.options_as_SoftmaxOptions();
        kernels::SoftmaxDesc d;
        nhwc_axis_split(xs, o ? o->axis() : -1, d.outer, d.axis_size, d.inner);
        d.in = qin;
        d.out = qout;
        return d;
      }
    }
    fail("unknown operator type");
  }
};

}  // namespace

size_t Plan::scratch_bytes(int threads) const {
  size_t m = 0;
  for (const Step& s : steps) m = std::max(m, s.kernel->scratch_bytes(threads));
  return (m + 63) / 64 * 64;
}

void fuse_residual_adds(Plan& plan) {
  for (size_t i = 0; i + 1 < plan.steps.size(); ++i) {
    Step& s = plan.steps[i];
    Step& a = plan.steps[i + 1];
    const kernels::OpKind op = kernels::op_kind(s.desc);
    if (op != kernels::OpKind::Conv2D && op != kernels::OpKind::FullyConnected) continue;
    if (kernels::op_kind(a.desc) != kernels::OpKind::Add || !s.kernel->reports_done() || !a.kernel->elementwise())
      continue;
    if (std::find(a.inputs.begin(), a.inputs.end(), s.output) == a.inputs.end()) continue;
    // Same elements in the same order: the add's count is the conv's output.
    if (kernels::output_elements(s.desc) != kernels::output_elements(a.desc)) continue;
    s.fuse_next = true;
    ActSlot& out = plan.slots[static_cast<size_t>(a.output)];
    out.first = std::min(out.first, static_cast<int>(i));
    a.reason += "; runs inside operator " + std::to_string(s.op_index) + " '" + s.name +
                "' on its output rows as they are finished";
  }
}

size_t assign_offsets(std::vector<ActSlot>& slots) {
  std::vector<size_t> order(slots.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if (slots[a].bytes != slots[b].bytes) return slots[a].bytes > slots[b].bytes;
    return slots[a].first < slots[b].first;
  });
  std::vector<size_t> placed;
  size_t arena = 0;
  for (size_t i : order) {
    ActSlot& s = slots[i];
    std::vector<const ActSlot*> live;
    for (size_t j : placed) {
      const ActSlot& o = slots[j];
      if (o.first <= s.last && s.first <= o.last) live.push_back(&o);
    }
    std::sort(live.begin(), live.end(), [](const ActSlot* a, const ActSlot* b) { return a->offset < b->offset; });
    size_t off = 0;
    for (const ActSlot* o : live) {
      if (off + s.bytes <= o->offset) break;
      off = std::max(off, o->offset + o->bytes);
    }
    s.offset = off;
    arena = std::max(arena, off + s.bytes);
    placed.push_back(i);
  }
  return arena;
}

Plan build_plan(const format::ModelView& view, bool verbose) {
  const fb::Model& m = *view.model;
  Plan plan;
  try {
    plan.isa = kernels::detect_isa();
  } catch (const std::exception& e) {
    fail(std::string("BBITS_MAX_ISA: ") + e.what());
  }
  const size_t nt = m.tensors()->size();
  plan.tensor_slot.assign(nt, -1);
  const int nsteps = static_cast<int>(m.operators()->size());

  auto slot_for = [&](int t, int first) -> int {
    if (plan.tensor_slot[static_cast<size_t>(t)] >= 0) return plan.tensor_slot[static_cast<size_t>(t)];
    const fb::Tensor* ft = m.tensors()->Get(static_cast<flatbuffers::uoffset_t>(t));
    ActSlot s;
    s.tensor = t;
    s.shape = shape_of(ft);
    s.q = act_quant(*ft);
    s.elements = format::shape_elements(s.shape);
    if (s.elements <= 0) fail("tensor '" + ft->name()->str() + "' is empty");
    const size_t raw = static_cast<size_t>(s.elements) * kernels::element_bytes(s.q.bits);
    s.bytes = (raw + 63) / 64 * 64;
    s.first = first;
    s.last = first;
    plan.slots.push_back(std::move(s));
    plan.tensor_slot[static_cast<size_t>(t)] = static_cast<int>(plan.slots.size() - 1);
    return plan.tensor_slot[static_cast<size_t>(t)];
  };

  for (int t : *m.inputs()) plan.input_slots.push_back(slot_for(t, -1));

  Builder b{view, m, plan};
  for (int oi = 0; oi < nsteps; ++oi) {
    const fb::Operator& op = *m.operators()->Get(static_cast<flatbuffers::uoffset_t>(oi));
    Step s;
    s.op_index = oi;
    s.name = op.name() ? op.name()->str() : std::string();
    const std::string who = "operator " + std::to_string(oi) + " '" + s.name + "' (" +
                            format::op_type_name(op.type()) + ")";
    try {
      int weight_tensor = -1;
      s.desc = b.make_desc(op, s, weight_tensor);
      kernels::check_desc(s.desc);
      const size_t n_act = (op.type() == fb::OpType::Conv2D || op.type() == fb::OpType::FullyConnected)
                               ? 1
                               : op.inputs()->size();
      for (size_t i = 0; i < n_act; ++i) {
        const int t = op.inputs()->Get(static_cast<flatbuffers::uoffset_t>(i));
        const int slot = plan.tensor_slot[static_cast<size_t>(t)];
        if (slot < 0) fail("input tensor " + std::to_string(t) + " is not available at this point");
        plan.slots[static_cast<size_t>(slot)].last = std::max(plan.slots[static_cast<size_t>(slot)].last, oi);
        s.inputs.push_back(slot);
      }
      s.output = slot_for(op.outputs()->Get(0), oi);

      kernels::Weights w;
      if (weight_tensor >= 0) {
        const std::span<const uint8_t> bytes = view.tensor_data(weight_tensor);
        w.data = bytes.data();
        w.size = bytes.size();
        s.weight_data = bytes;
      }
      w.scales = s.w_scales;
      w.bias_q = s.bias_q;
      w.bias_f = s.bias_f;

      const std::vector<const kernels::KernelInfo*> cands = kernels::candidates(s.desc, plan.isa);
      if (cands.empty()) fail("no kernel supports " + kernels::describe(s.desc));
      const kernels::KernelInfo* ref = kernels::reference_kernel(s.desc);
      s.reference_cost_ns = ref ? ref->cost_ns(s.desc) : 0.0;
      std::string failures;
      // Cheapest first; a kernel that refuses these weights at create() time
      // hands over to the next candidate (the reference kernel is always there).
      for (const kernels::KernelInfo* k : cands) {
        try {
          s.kernel = k->create(s.desc, w);
          s.info = k;
          s.cost_ns = k->cost_ns(s.desc);
          break;
        } catch (const std::exception& e) {
          failures += std::string("; ") + k->name + " refused: " + e.what();
        }
      }
      if (!s.kernel) fail("every kernel refused the layer" + failures);
      s.reason = kernels::explain_choice(s.desc, cands, plan.isa) + failures;
    } catch (const Error& e) {
      fail(who + ": " + e.what());
    } catch (const std::exception& e) {
      fail(who + ": " + e.what());
    }
    if (verbose)
      std::fprintf(stderr, "bbits: [%d] %s %s\nbbits:     kernel %s: %s\n", oi, s.name.c_str(),
                   kernels::describe(s.desc).c_str(), std::string(s.kernel->name()).c_str(), s.reason.c_str());
    plan.steps.push_back(std::move(s));
  }
  for (int t : *m.outputs()) {
    const int slot = plan.tensor_slot[static_cast<size_t>(t)];
    if (slot < 0) fail("model output tensor " + std::to_string(t) + " is never produced");
    plan.slots[static_cast<size_t>(slot)].last = nsteps;
    plan.output_slots.push_back(slot);
  }
  fuse_residual_adds(plan);
  if (verbose)
    for (const Step& s : plan.steps)
      if (s.fuse_next)
        std::fprintf(stderr, "bbits: [%d] %s: the add that follows runs inside it, on its rows as they are finished\n",
                     s.op_index, s.name.c_str());
  for (const ActSlot& s : plan.slots) plan.arena_unshared += s.bytes;
  plan.arena_bytes = assign_offsets(plan.slots);
  if (verbose)
    std::fprintf(stderr, "bbits: plan for isa %s: %zu operators, activation arena %zu bytes (%zu without reuse)\n",
                 kernels::isa_name(plan.isa), plan.steps.size(), plan.arena_bytes, plan.arena_unshared);
  return plan;
}

}  // namespace bbits::detail
