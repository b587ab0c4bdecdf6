// Session: one activation arena, one thread pool; runs the plan.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <thread>
#include <type_traits>

#include "bbits/kernels/thread_pool.h"
#include "internal.h"

namespace bbits {

namespace {

// The caller's layout of a slot's tensor: N,C,H,W (transposed into the
// runtime's N,H,W,C storage) or already the storage order.
struct IndexMap {
  bool transpose = false;
  int64_t N = 1, C = 1, HW = 1;
};

IndexMap index_map(const detail::ActSlot& s, bool io_nhwc) {
  IndexMap m;
  if (s.shape.size() == 4 && !io_nhwc) {
    m.N = s.shape[0];
    m.C = s.shape[1];
    m.HW = s.shape[2] * s.shape[3];
    m.transpose = m.C > 1 && m.HW > 1;
  }
  return m;
}

// Calls f(storage_index, caller_index) once for every element of a slot's
// tensor, in storage order (the stores run forward; a transposed input is
// read from its C channel planes at once). Nested loops rather than an index
// division per element: dividing cost about 1 ms per run for a 3x224x224
// input.
template <class F>
void for_each_element(const IndexMap& m, int64_t elements, F&& f) {
  if (!m.transpose) {
    for (int64_t k = 0; k < elements; ++k) f(k, k);
    return;
  }
  for (int64_t n = 0; n < m.N; ++n) {
    const int64_t base = n * m.HW * m.C;
    for (int64_t p = 0; p < m.HW; ++p)
      for (int64_t c = 0; c < m.C; ++c) f(base + p * m.C + c, base + c * m.HW + p);
  }
}

// Calls f with the slot's storage as a typed pointer (int8/uint8 up to 8
// bits, int16/uint16 at 16; const when `base` is).
template <class V, class F>
void with_storage(const kernels::QuantInfo& q, V* base, F&& f) {
  constexpr bool kConst = std::is_const_v<V>;
  auto as = [base]<class T>() { return static_cast<std::conditional_t<kConst, const T*, T*>>(base); };
  if (q.bits <= 8) {
    if (q.is_signed) f(as.template operator()<int8_t>());
    else f(as.template operator()<uint8_t>());
  } else {
    if (q.is_signed) f(as.template operator()<int16_t>());
    else f(as.template operator()<uint16_t>());
  }
}

// Integers into storage of type T in the slot's layout, checked against
// [lo, hi] on the way; false when one lies outside (the slot then holds
// garbage). Everything in locals and restrict pointers: through references
// the byte stores could alias the bounds and the flag, which cost about
// 1 ns per element.
template <class T>
bool store_checked(T* __restrict d, const int32_t* __restrict v, const IndexMap m, const int64_t elements,
                   const int32_t lo, const int32_t hi) {
  int32_t outside = 0;
  if (!m.transpose) {
    for (int64_t k = 0; k < elements; ++k) {
      const int32_t x = v[k];
      outside |= static_cast<int32_t>(x < lo) | static_cast<int32_t>(x > hi);
      d[k] = static_cast<T>(x);
    }
    return outside == 0;
  }
  const int64_t C = m.C, HW = m.HW;
  for (int64_t n = 0; n < m.N; ++n) {
    const int32_t* __restrict vn = v + n * C * HW;
    T* __restrict dn = d + n * C * HW;
    for (int64_t c = 0; c < C; ++c) {
      const int32_t* __restrict vc = vn + c * HW;
      for (int64_t p = 0; p < HW; ++p) {
        const int32_t x = vc[p];
        outside |= static_cast<int32_t>(x < lo) | static_cast<int32_t>(x > hi);
        dn[p * C + c] = static_cast<T>(x);
      }
    }
  }
  return outside == 0;
}

bool store_ints(void* dst, const detail::ActSlot& s, const IndexMap& map, const int32_t* v, int32_t lo, int32_t hi) {
  bool ok = true;
  with_storage(s.q, dst, [&](auto* d) { ok = store_checked(d, v, map, s.elements, lo, hi); });
  return ok;
}

// The slot's values in the caller's layout, through `put(caller_index, q)`.
template <class F>
void load_ints(const void* src, const detail::ActSlot& s, const IndexMap& map, F&& put) {
  with_storage(s.q, src, [&](const auto* d) {
    for_each_element(map, s.elements, [&](int64_t o, int64_t k) { put(k, static_cast<int32_t>(d[o])); });
  });
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::string r;
  for (size_t i = 0; i < s.size(); ++i) r += (i ? "x" : "") + std::to_string(s[i]);
  return r.empty() ? "scalar" : r;
}

// Aligned byte block.
struct AlignedBlock {
  void* p = nullptr;
  size_t size = 0;
  void reset(size_t n) {
    std::free(p);
    p = nullptr;
    size = n;
    if (n == 0) return;
    p = std::aligned_alloc(64, (n + 63) / 64 * 64);
    if (!p) throw Error("out of memory allocating " + std::to_string(n) + " bytes");
    // Not cleared: every tensor is written (by run() or its operator) before
    // it is read, and untouched pages of a large arena stay uncommitted.
  }
  ~AlignedBlock() { std::free(p); }
};

}  // namespace

struct Session::Impl {
  std::shared_ptr<const Model> model;
  SessionOptions options;
  std::unique_ptr<kernels::ThreadPool> pool;
  AlignedBlock arena, scratch;
  int threads = 1;
  std::vector<const void*> in_ptrs;
  std::vector<double> layer_ns;
  double run_ns = 0.0;
  std::vector<int32_t> qbuf;  // a float input quantized (kept: no allocation per run)
  RunStats stats;

  const Model::Impl& mi() const { return model->impl(); }
  uint8_t* slot_ptr(int slot) const {
    return static_cast<uint8_t*>(arena.p) + mi().plan.slots[static_cast<size_t>(slot)].offset;
  }

  void check_input_shape(size_t i, const std::vector<int64_t>& shape) const {
    const TensorInfo& ti = mi().io_inputs[i];
    if (shape != ti.shape)
      throw Error("input " + std::to_string(i) + " '" + ti.name + "': shape " + shape_str(shape) + " given, model expects " +
                  shape_str(ti.shape));
  }

  void execute() {
    const detail::Plan& plan = mi().plan;
    // Profiling times every layer on its own: fused adds then run as steps.
    const bool fuse = options.fuse_adds && !options.profile;
    for (size_t si = 0; si < plan.steps.size(); ++si) {
      const detail::Step& s = plan.steps[si];
      in_ptrs.clear();
      for (int slot : s.inputs) in_ptrs.push_back(slot_ptr(slot));
      kernels::KernelArgs args;
      args.inputs = std::span<const void* const>(in_ptrs.data(), in_ptrs.size());
      args.output = slot_ptr(s.output);
      args.scratch = scratch.p;
      args.scratch_size = scratch.size;
      // A fused add: run on each range of this step's output as it is finished.
      struct Fused {
        const kernels::Kernel* kernel;
        kernels::KernelArgs args;
      } fused{};
      const void* add_in[2] = {nullptr, nullptr};
      kernels::DoneFn done;
      const detail::Step* next = nullptr;
      if (fuse && s.fuse_next) {
        next = &plan.steps[si + 1];
        for (size_t k = 0; k < next->inputs.size() && k < 2; ++k) add_in[k] = slot_ptr(next->inputs[k]);
        fused.kernel = next->kernel.get();
        fused.args.inputs = std::span<const void* const>(add_in, next->inputs.size());
        fused.args.output = slot_ptr(next->output);
        done.fn = [](const void* ctx, int64_t b, int64_t e) {
          const auto* f = static_cast<const Fused*>(ctx);
          f->kernel->run_elements(f->args, b, e);
        };
        done.ctx = &fused;
        args.done = &done;
      }
      try {
        if (options.profile) {
          const auto t0 = std::chrono::steady_clock::now();
          s.kernel->run(args, pool.get());
          const auto t1 = std::chrono::steady_clock::now();
          layer_ns[static_cast<size_t>(s.op_index)] = std::chrono::duration<double, std::nano>(t1 - t0).count();
        } else {
          s.kernel->run(args, pool.get());
        }
      } catch (const std::exception& e) {
        throw Error("operator " + std::to_string(s.op_index) + " '" + s.name + "' (kernel " +
                    std::string(s.kernel->name()) + (next ? " with the add '" + next->name + "' fused" : "") +
                    "): " + e.what());
      }
      if (next) ++si;  // the add ran inside this step
    }
  }
};

Session::Session(std::shared_ptr<const Model> model, SessionOptions options) : impl_(std::make_unique<Impl>()) {
  if (!model) throw Error("Session: null model");
  if (options.threads < 0) throw Error("Session: threads must be >= 0 (0 = all hardware threads), got " +
                                       std::to_string(options.threads));
  impl_->model = std::move(model);
  impl_->options = options;
  int threads = options.threads;
  if (threads == 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  impl_->threads = threads;
  if (threads > 1) impl_->pool = std::make_unique<kernels::ThreadPool>(threads);
  const detail::Plan& plan = impl_->mi().plan;
  if (options.profile) impl_->layer_ns.assign(impl_->mi().info.layers.size(), 0.0);
  impl_->arena.reset(plan.arena_bytes);
  impl_->scratch.reset(plan.scratch_bytes(threads));
}

Session::~Session() = default;
Session::Session(Session&&) noexcept = default;
Session& Session::operator=(Session&&) noexcept = default;

const Model& Session::model() const { return *impl_->model; }
const std::vector<double>& Session::layer_ns() const { return impl_->layer_ns; }
double Session::run_ns() const { return impl_->run_ns; }
const RunStats& Session::last_run_stats() const { return impl_->stats; }

namespace {
// With SessionOptions::profile, the wall time of one run() / run_quantized()
// call, written into `ns` when it ends.
class RunTimer {
 public:
  RunTimer(bool on, double& ns) : on_(on), ns_(ns) {
    if (on_) t0_ = std::chrono::steady_clock::now();
  }
  ~RunTimer() {
    if (on_) ns_ = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0_).count();
  }
  RunTimer(const RunTimer&) = delete;
  RunTimer& operator=(const RunTimer&) = delete;

 private:
  bool on_;
  double& ns_;
  std::chrono::steady_clock::time_point t0_;
};
}  // namespace

std::vector<Tensor> Session::run(const std::vector<Tensor>& inputs) {
  Impl& I = *impl_;
  const RunTimer timer(I.options.profile, I.run_ns);
  const Model::Impl& M = I.mi();
  const detail::Plan& plan = M.plan;
  if (inputs.size() != plan.input_slots.size())
    throw Error("run: " + std::to_string(inputs.size()) + " inputs given, model has " +
                std::to_string(plan.input_slots.size()));
  I.stats.inputs.assign(inputs.size(), InputRunStats{});
  for (size_t i = 0; i < inputs.size(); ++i) {
    I.check_input_shape(i, inputs[i].shape);
    const detail::ActSlot& s = plan.slots[static_cast<size_t>(plan.input_slots[i])];
    if (static_cast<int64_t>(inputs[i].data.size()) != s.elements)
      throw Error("input " + std::to_string(i) + " '" + M.io_inputs[i].name + "': " +
                  std::to_string(inputs[i].data.size()) + " values for shape " + shape_str(inputs[i].shape) + " (" +
                  std::to_string(s.elements) + " elements)");
    const IndexMap map = index_map(s, M.io_nhwc);
    void* dst = I.slot_ptr(plan.input_slots[i]);
    const float* src = inputs[i].data.data();
    InputRunStats& st = I.stats.inputs[i];
    st.values = s.elements;
    if (s.q.is_float()) {
      float* d = static_cast<float*>(dst);
      for_each_element(map, s.elements, [&](int64_t o, int64_t k) { d[o] = src[k]; });
      st.lo = -std::numeric_limits<float>::infinity();
      st.hi = std::numeric_limits<float>::infinity();
      continue;
    }
    // Quantize as the training library's eval mode does when x_max is known
    // and consistent with the scale; otherwise straight onto the grid.
    const TensorInfo& ti = M.info.tensors[static_cast<size_t>(s.tensor)];
    const int64_t lo = bbits::qmin(s.q.bits, s.q.is_signed), hi = bbits::qmax(s.q.bits, s.q.is_signed);
    const bool use_xmax = ti.x_max.size() == 1 && ti.x_max[0] > 0.0f &&
                          bbits::grid_scale(ti.x_max[0], s.q.bits, s.q.is_signed) == s.q.scale;
    // The grid's range, and the values clamping (not rounding) decides: those
    // more than half a step beyond the grid's ends (for a signed grid that is
    // exactly beyond +/-x_max).
    const float step = s.q.scale;
    st.quantized = true;
    st.hi = use_xmax ? ti.x_max[0] : static_cast<float>(hi) * step;
    st.lo = use_xmax ? (s.q.is_signed ? -ti.x_max[0] : 0.0f) : static_cast<float>(lo) * step;
    const float c_lo = std::min(st.lo, (static_cast<float>(lo) - 0.5f) * step);
    const float c_hi = std::max(st.hi, (static_cast<float>(hi) + 0.5f) * step);
    // Quantized in the caller's order into qbuf, then stored in the slot's
    // layout (two simple loops instead of one with a scattered store).
    I.qbuf.resize(static_cast<size_t>(s.elements));
    int32_t* q = I.qbuf.data();
    int64_t clipped = 0;
    for (int64_t k = 0; k < s.elements; ++k) clipped += (src[k] >= c_lo && src[k] <= c_hi) ? 0 : 1;  // NaN too
    if (use_xmax) {
      const bbits::ValueQuantizer vq(ti.x_max[0], s.q.bits, s.q.is_signed);
      for (int64_t k = 0; k < s.elements; ++k) q[k] = vq(src[k]);
    } else {
      for (int64_t k = 0; k < s.elements; ++k)
        q[k] = static_cast<int32_t>(kernels::quantize_to_grid(src[k], s.q.scale, lo, hi));
    }
    store_ints(dst, s, map, q, static_cast<int32_t>(lo), static_cast<int32_t>(hi));
    st.clipped = clipped;
  }
  I.execute();
  std::vector<Tensor> out;
  out.reserve(plan.output_slots.size());
  for (size_t i = 0; i < plan.output_slots.size(); ++i) {
    const detail::ActSlot& s = plan.slots[static_cast<size_t>(plan.output_slots[i])];
    Tensor t;
    t.shape = M.io_outputs[i].shape;
    t.data.resize(static_cast<size_t>(s.elements));
    const IndexMap map = index_map(s, M.io_nhwc);
    const void* src = I.slot_ptr(plan.output_slots[i]);
    float* d = t.data.data();
    if (s.q.is_float()) {
      const float* f = static_cast<const float*>(src);
      for_each_element(map, s.elements, [&](int64_t o, int64_t k) { d[k] = f[o]; });
    } else {
      const float scale = s.q.scale;
      load_ints(src, s, map, [&](int64_t k, int32_t v) { d[k] = static_cast<float>(v) * scale; });
    }
    out.push_back(std::move(t));
  }
  return out;
}

std::vector<QuantizedTensor> Session::run_quantized(const std::vector<QuantizedTensor>& inputs) {
  Impl& I = *impl_;
  const RunTimer timer(I.options.profile, I.run_ns);
  const Model::Impl& M = I.mi();
  const detail::Plan& plan = M.plan;
  if (inputs.size() != plan.input_slots.size())
    throw Error("run_quantized: " + std::to_string(inputs.size()) + " inputs given, model has " +
                std::to_string(plan.input_slots.size()));
  I.stats.inputs.clear();
  for (size_t i = 0; i < inputs.size(); ++i) {
    const QuantizedTensor& x = inputs[i];
    I.check_input_shape(i, x.shape);
    const detail::ActSlot& s = plan.slots[static_cast<size_t>(plan.input_slots[i])];
    auto who = [&] { return "input " + std::to_string(i) + " '" + M.io_inputs[i].name + "'"; };
    if (s.q.is_float()) throw Error(who() + " is float32: use run()");
    if (x.bits != s.q.bits || x.is_signed != s.q.is_signed)
      throw Error(who() + ": given " + std::to_string(x.bits) + (x.is_signed ? "-bit signed" : "-bit unsigned") +
                  ", model expects " + std::to_string(s.q.bits) + (s.q.is_signed ? "-bit signed" : "-bit unsigned"));
    if (static_cast<int64_t>(x.data.size()) != s.elements)
      throw Error(who() + ": " + std::to_string(x.data.size()) + " values for " + std::to_string(s.elements) +
                  " elements");
    const auto lo = static_cast<int32_t>(bbits::qmin(s.q.bits, s.q.is_signed));
    const auto hi = static_cast<int32_t>(bbits::qmax(s.q.bits, s.q.is_signed));
    const int32_t* v = x.data.data();
    // Checked while stored (one pass; no early exit): a value off the grid
    // is then looked for and named.
    if (!store_ints(I.slot_ptr(plan.input_slots[i]), s, index_map(s, M.io_nhwc), v, lo, hi))
      for (int64_t k = 0; k < s.elements; ++k)
        if (v[k] < lo || v[k] > hi)
          throw Error(who() + ": value " + std::to_string(v[k]) + " at " + std::to_string(k) + " outside the grid [" +
                      std::to_string(lo) + ", " + std::to_string(hi) + "]");
  }
  I.execute();
  std::vector<QuantizedTensor> out;
  out.reserve(plan.output_slots.size());
  for (size_t i = 0; i < plan.output_slots.size(); ++i) {
    const detail::ActSlot& s = plan.slots[static_cast<size_t>(plan.output_slots[i])];
    QuantizedTensor t;
    t.shape = M.io_outputs[i].shape;
    t.bits = s.q.bits;
    t.is_signed = s.q.is_signed;
    t.scale = s.q.is_float() ? 1.0f : s.q.scale;
    const IndexMap map = index_map(s, M.io_nhwc);
    const void* src = I.slot_ptr(plan.output_slots[i]);
    if (s.q.is_float()) {
      t.float_data.resize(static_cast<size_t>(s.elements));
      float* d = t.float_data.data();
      const float* f = static_cast<const float*>(src);
      for_each_element(map, s.elements, [&](int64_t o, int64_t k) { d[k] = f[o]; });
    } else {
      t.data.resize(static_cast<size_t>(s.elements));
      int32_t* d = t.data.data();
      load_ints(src, s, map, [&](int64_t k, int32_t q) { d[k] = q; });
    }
    out.push_back(std::move(t));
  }
  return out;
}

}  // namespace bbits
