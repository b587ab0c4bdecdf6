// bbits kernels — the oneDNN family, layers run by oneDNN (built with
// BBITS_WITH_ONEDNN):
//   int8: u8/s8 activations x s8 weights -> s32 (exact with VNNI), then our
//         epilogue (bias, requantization, clamp). 2/4-bit weights are widened
//         to int8 at create time, so a sub-byte layer can always run as int8.
//   f32:  float32 conv / fc (weights or activations at 32 bits); integer sides
//         are dequantized exactly as the reference does, an integer output is
//         quantized with quantize_to_grid.
// oneDNN's int8 kernels are bit-exact only on VNNI (without it they scale the
// weights to avoid vpmaddubsw saturation), so the int8 entries need
// Isa::AVX512_VNNI (x86-64 only); the float32 entries run at the first SIMD
// level of either architecture (AVX2, NEON). Threads: every oneDNN primitive is created and run with
// one OpenMP thread (OmpOne), so oneDNN never opens an OpenMP region. With
// several threads, a layer runs as row slabs in parallel on the session's
// ThreadPool, each thread executing the slab primitives with its own memory
// objects, int32 buffer and scratchpad: cache-sized slabs for large layers,
// and for the others one slab per thread (made on first use with that thread
// count, sharing the whole-layer primitive's reordered weights). Mixing the
// two pools cost more than it gained: on the 2-vCPU test VM every OpenMP
// region woke a sleeping OpenMP worker (passive wait) or fought a spinning
// one, or our pool's spinning worker, for the second vCPU (the int8 layers
// ran 1.1-2x slower on two threads than on one).
#include <algorithm>
#include <map>
#include <cmath>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include <oneapi/dnnl/dnnl.hpp>

#include "bbits/kernels/cpu.h"
#include "bbits/kernels/thread_pool.h"
#include "onednn.h"

extern "C" void omp_set_num_threads(int);
extern "C" int omp_get_max_threads();

namespace bbits::kernels::simd {
namespace {

using dnnl::memory;
using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;

dnnl::engine& engine() {
  static dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  return eng;
}


bool is_fc(const ConvDesc& c) {
  return c.H == 1 && c.W == 1 && c.KH == 1 && c.KW == 1 && c.groups == 1 && c.pad_top == 0 && c.pad_left == 0 &&
         c.pad_bottom == 0 && c.pad_right == 0;
}

// oneDNN on the calling thread alone (see the note at the top) while in
// scope: oneDNN sizes a primitive's thread partition from
// omp_get_max_threads() when it creates the primitive (and parallel_nd calls
// when it runs one). The caller's OpenMP setting comes back afterwards.
class OmpOne {
 public:
  OmpOne() : saved_(omp_get_max_threads()) {
    if (saved_ != 1) omp_set_num_threads(1);
  }
  ~OmpOne() {
    if (saved_ != 1) omp_set_num_threads(saved_);
  }
  OmpOne(const OmpOne&) = delete;
  OmpOne& operator=(const OmpOne&) = delete;

 private:
  int saved_;
};

// Builds a conv (or inner product when fc) primitive with the given types.
// `reuse`: weights already reordered for another primitive of the same layer;
// shared when this primitive wants the same weights layout. `wdata` may be
// null when `reuse` is given: if the layouts then differ, the returned Prim
// has no weights (check has_weights()) and must not run.
struct Prim {
  dnnl::primitive prim;
  memory::desc src_md, wei_md, dst_md, bias_md;
  memory weights;  // reordered, owned (or shared with another Prim); empty: see build()
  memory bias;     // f32 bias (float path) or empty
  size_t scratchpad = 0;
  memory::desc scratch_md;
  bool has_weights() const { return weights.get(true) != nullptr; }
};

Prim build(const ConvDesc& d, bool fc, dt src_t, dt wei_t, dt dst_t, const void* wdata, const float* bias,
           const dnnl::primitive_attr& attr, const Prim* reuse = nullptr) {
  Prim p;
  auto& eng = engine();
  const memory::dim N = d.N, C = d.C, OC = d.OC, G = d.groups;
  memory::desc wuser;
  if (fc) {
    p.src_md = memory::desc({N, C}, src_t, tag::nc);
    p.dst_md = memory::desc({N, OC}, dst_t, tag::nc);
    const memory::desc wany({OC, C}, wei_t, tag::any);
    wuser = memory::desc({OC, C}, wei_t, tag::oi);
    if (bias) p.bias_md = memory::desc({OC}, dt::f32, tag::x);
    const auto desc = bias ? dnnl::inner_product_forward::desc(dnnl::prop_kind::forward_inference, p.src_md, wany,
                                                                 p.bias_md, p.dst_md)
                           : dnnl::inner_product_forward::desc(dnnl::prop_kind::forward_inference, p.src_md, wany,
                                                                 p.dst_md);
    dnnl::primitive_attr a = attr;
    a.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    const dnnl::inner_product_forward::primitive_desc pd(desc, a, eng);
    p.prim = dnnl::inner_product_forward(pd);
    p.wei_md = pd.weights_desc();
    p.scratch_md = pd.scratchpad_desc();
  } else {
    p.src_md = memory::desc({N, C, d.H, d.W}, src_t, tag::nhwc);
    p.dst_md = memory::desc({N, OC, d.out_h(), d.out_w()}, dst_t, tag::nhwc);
    memory::desc wany;
    if (G == 1) {
      wany = memory::desc({OC, C, d.KH, d.KW}, wei_t, tag::any);
      wuser = memory::desc({OC, C, d.KH, d.KW}, wei_t, tag::ohwi);
    } else {
      wany = memory::desc({G, OC / G, C / G, d.KH, d.KW}, wei_t, tag::any);
      wuser = memory::desc({G, OC / G, C / G, d.KH, d.KW}, wei_t, tag::gohwi);
    }
    if (bias) p.bias_md = memory::desc({OC}, dt::f32, tag::x);
    const memory::dims strides{d.stride_h, d.stride_w}, dil{d.dilation_h - 1, d.dilation_w - 1},
        pl{d.pad_top, d.pad_left}, pr{d.pad_bottom, d.pad_right};
    const auto desc =
        bias ? dnnl::convolution_forward::desc(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct,
                                               p.src_md, wany, p.bias_md, p.dst_md, strides, dil, pl, pr)
             : dnnl::convolution_forward::desc(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct,
                                               p.src_md, wany, p.dst_md, strides, dil, pl, pr);
    dnnl::primitive_attr a = attr;
    a.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    const dnnl::convolution_forward::primitive_desc pd(desc, a, eng);
    p.prim = dnnl::convolution_forward(pd);
    p.wei_md = pd.weights_desc();
    p.scratch_md = pd.scratchpad_desc();
  }
  if (reuse != nullptr && reuse->wei_md == p.wei_md) {
    p.weights = reuse->weights;
  } else if (wdata == nullptr) {
    return p;  // no weights given and `reuse`'s layout differs: p.weights stays empty
  } else {
    memory user(wuser, eng, const_cast<void*>(wdata));
    p.weights = memory(p.wei_md, eng);
    dnnl::stream s(eng);
    dnnl::reorder(user, p.weights).execute(s, user, p.weights);
    s.wait();
  }
  if (bias) {
    p.bias = memory(p.bias_md, eng);
    std::memcpy(p.bias.get_data_handle(), bias, static_cast<size_t>(d.OC) * sizeof(float));
  }
  p.scratchpad = p.scratch_md.get_size();
  return p;
}

void execute(const Prim& p, const void* src, void* dst, void* scratch) {
  auto& eng = engine();
  dnnl::stream s(eng);
  memory src_m(p.src_md, eng, const_cast<void*>(src));
  memory dst_m(p.dst_md, eng, dst);
  std::unordered_map<int, memory> args{{DNNL_ARG_SRC, src_m}, {DNNL_ARG_WEIGHTS, p.weights}, {DNNL_ARG_DST, dst_m}};
  if (p.bias) args.insert({DNNL_ARG_BIAS, p.bias});
  if (p.scratchpad > 0) args.insert({DNNL_ARG_SCRATCHPAD, memory(p.scratch_md, eng, scratch)});
  p.prim.execute(s, args);
  s.wait();
}

// A primitive with its memory objects made once; run() only swaps the data
// handles (creating a stream and memory objects per call costs microseconds,
// which small layers and row slabs would pay many times).
struct Runner {
  Prim p;
  dnnl::stream strm;
  memory src_m, dst_m, scratch_m;
  std::unordered_map<int, memory> args;

  explicit Runner(Prim prim) : p(std::move(prim)), strm(engine()) {
    auto& eng = engine();
    src_m = memory(p.src_md, eng, DNNL_MEMORY_NONE);
    dst_m = memory(p.dst_md, eng, DNNL_MEMORY_NONE);
    args = {{DNNL_ARG_SRC, src_m}, {DNNL_ARG_WEIGHTS, p.weights}, {DNNL_ARG_DST, dst_m}};
    if (p.bias) args.insert({DNNL_ARG_BIAS, p.bias});
    if (p.scratchpad > 0) {
      scratch_m = memory(p.scratch_md, eng, DNNL_MEMORY_NONE);
      args.insert({DNNL_ARG_SCRATCHPAD, scratch_m});
    }
  }
  // Not thread-safe: the caller holds the kernel's mutex.
  void run(const void* src, void* dst, void* scratch) {
    src_m.set_data_handle(const_cast<void*>(src));
    dst_m.set_data_handle(dst);
    if (p.scratchpad > 0) scratch_m.set_data_handle(scratch);
    p.prim.execute(strm, args);
    strm.wait();
  }
};

// ---- requantization of the s32 result --------------------------------------------
// The layer's int32 results are a flat array of M * OC values (channel =
// index mod OC). The flat epilogue (onednn_isa.cpp) walks it with a
// requantization table that repeats every P = lcm(64, OC) values, so that any
// OC (6, 24, 144, ...) runs on whole vectors: two parameter vectors at a time
// kept in registers (loading them per vector made the loop load-bound), every
// 32 values packed to bytes and stored at once (the masked byte stores of the
// row epilogue are slow on Zen 4). Same arithmetic as the GEMM epilogue (see
// Epilogue): r = ((acc + colterm) * m + round) >> s, computed as (acc * m +
// (colterm * m + round)) >> s in 64 bits (equal: without `wide` acc + colterm
// never leaves int32), clamp, 8-bit store. Used for 8-bit outputs without a
// 64-bit bias (the common case); the others keep the row epilogue.
// Multipliers above 1 (2-bit weights often have them) clamp acc in 32 bits
// first to the range outside of which the output clamps anyway (the
// epilogue's pre-clamp bounds less colterm), so the results fit int32.
int64_t gcd64(int64_t a, int64_t b) {
  while (b != 0) {
    const int64_t t = a % b;
    a = b;
    b = t;
  }
  return a;
}

int32_t clip32(int64_t v) { return static_cast<int32_t>(std::clamp<int64_t>(v, INT32_MIN, INT32_MAX)); }

FlatRequant make_flat(const Epilogue& E) {
  FlatRequant F;
  if (E.wide || !(E.kind == OutKind::U8 || E.kind == OutKind::S8)) return F;
  const int64_t OC = E.OC;
  const int64_t P = OC / gcd64(OC, 64) * 64;
  if (P > 4096) return F;
  F.period = P;
  F.is_signed = E.kind == OutKind::S8;
  F.lo = static_cast<int32_t>(E.lo);
  F.hi = static_cast<int32_t>(E.hi);
  F.clamp = F.is_signed ? (E.lo != -128 || E.hi != 127) : (E.lo != 0 || E.hi != 255);
  RequantTable& t = F.rq;
  t.layout = E.rq.layout;
  t.n = P;
  const auto n = static_cast<size_t>(P);
  t.mult = make_aligned<int32_t>(n);
  t.round = make_aligned<int64_t>(n);
  t.shift = make_aligned<int64_t>(n);
  t.pre = E.rq.pre;
  if (t.pre) {
    t.pre_lo = make_aligned<int32_t>(n);
    t.pre_hi = make_aligned<int32_t>(n);
  }
  bool ge32 = !t.pre;  // every shift >= 32: the folded table's reduced shifts
  for (int64_t oc = 0; oc < OC; ++oc) ge32 = ge32 && E.shift[oc] >= 32;
  if (ge32) {
    t.cround = make_aligned<int64_t>(n);
    t.shift32 = make_aligned<int64_t>(n);
    t.folded = true;
  }
  const int64_t L = t.layout.lanes;
  for (int64_t i = 0; i < P; ++i) {
    const int64_t oc = i % OC, pos = t.pair_pos(i);
    const int64_t folded = int64_t{E.colterm[oc]} * E.mult[oc] + E.round[oc];
    t.mult[i] = static_cast<int32_t>(E.mult[oc]);
    t.round[pos] = folded;
    t.shift[pos] = E.shift[oc];
    if (ge32) {
      t.cround[pos] = folded;
      t.shift32[pos] = t.layout.even_odd && (i % L) % 2 == 1 ? E.shift[oc] - 32 : E.shift[oc];
    }
    if (t.pre) {
      // acc = a - colterm (no row correction here), clipped to int32: a bound
      // past the int32 range is never reached, so clipping it keeps results.
      t.pre_lo[i] = clip32(int64_t{E.rq.pre_lo[oc]} - E.colterm[oc]);
      t.pre_hi[i] = clip32(int64_t{E.rq.pre_hi[oc]} - E.colterm[oc]);
    }
  }
  return F;
}

// Requantizes `rows` rows of OC int32 results into 8-bit outputs, flat,
// blocks of whole periods split over the pool.
void flat_epilogue(const int32_t* acc, int64_t rows, const FlatRequant& F, int64_t OC, void* out,
                   ThreadPool* pool) {
  const int64_t total = rows * OC;
  const int64_t nblk = (total + F.period - 1) / F.period;
  auto* o = static_cast<uint8_t*>(out);
  parallel_for(
      pool, nblk,
      [&](int64_t b, int64_t e, int) {
        with_isa<Isa::AVX512>(Isa::AVX512, [&]<class Tag>() { flat_requant<Tag>(acc, b, e, total, F, o); });
      },
      std::max<int64_t>(1, 16384 / F.period));
}

// Epilogue of M full rows of OC int32 accumulators (row stride OC), rows split
// over the pool. No row corrections.
void epilogue_rows(const int32_t* acc, int64_t M, const Epilogue& E, void* out, ThreadPool* pool) {
  parallel_for(
      pool, M,
      [&](int64_t b, int64_t e, int) {
        with_isa<Isa::AVX512>(Isa::AVX512, [&]<class Tag>() { onednn_epilogue_rows<Tag>(acc, b, e, E, out); });
      },
      16);
}

// ---- int8 -----------------------------------------------------------------------
bool int8_supports(const ConvDesc& c) {
  if (c.wbits != 2 && c.wbits != 4 && c.wbits != 8) return false;
  if (!(c.in.bits == 2 || c.in.bits == 4 || c.in.bits == 8)) return false;
  if (!(c.out.bits == 2 || c.out.bits == 4 || c.out.bits == 8 || c.out.bits == 16 || c.out.bits == 32)) return false;
  const int64_t K = c.K();
  const double wmax = static_cast<double>(qmax(c.wbits, true));
  const double imax = static_cast<double>(std::max(-qmin(c.in.bits, c.in.is_signed), qmax(c.in.bits, c.in.is_signed)));
  return K > 0 && wmax * imax * static_cast<double>(K) < 2147483647.0;
}

// Output rows per slab: the int32 result of a slab (rows * OW * OC * 4 bytes)
// stays in L2 until the epilogue requantizes it, instead of a whole-layer s32
// tensor written to and read back from L3 / DRAM.
// Measured on Zen 4 (1 MB L2), one thread: 128 KB slabs ~2% faster than
// one whole-layer result on ResNet-18 conv1 (3.2 MB of int32), 256 KB and
// 64 KB no better; the slab count stays small (per-execute cost ~ 1 us).
constexpr size_t kSlabBytes = 128 * 1024;

class OnednnInt8 final : public Kernel {
 public:
  OnednnInt8(std::string name, const ConvDesc& d, const Weights& w) : name_(std::move(name)), d_(d) {
    check_desc(d_);
    if (!int8_supports(d_)) throw std::invalid_argument(name_ + ": cannot run " + describe(d_));
    if (!cpu_has(Isa::AVX512_VNNI)) throw std::invalid_argument(name_ + ": this CPU lacks avx512_vnni");
    const int64_t K = d_.K();
    const size_t row = packed_row_bytes(K, d_.wbits);
    const size_t need = row * static_cast<size_t>(d_.OC);
    if (w.data == nullptr || w.size < need)
      throw std::invalid_argument(name_ + ": weights hold " + std::to_string(w.size) + " bytes, " +
                                  std::to_string(need) + " needed");
    // 2/4-bit weights widened, each channel times its power of two
    // (weight_upshifts: the same outputs, a shorter epilogue).
    const std::vector<int> up = weight_upshifts(d_.OC, K, d_.wbits, w, d_.in, d_.out);
    std::vector<int8_t> w8(static_cast<size_t>(d_.OC * K));
    for (int64_t oc = 0; oc < d_.OC; ++oc)
      for (int64_t k = 0; k < K; ++k)
        w8[static_cast<size_t>(oc * K + k)] = static_cast<int8_t>(
            unpack_value(w.data + oc * row, k, d_.wbits) * (up.empty() ? 1 : 1 << up[static_cast<size_t>(oc)]));
    OH_ = d_.out_h();
    OW_ = d_.out_w();
    M_ = d_.N * OH_ * OW_;
    const int64_t OCp = (d_.OC + 15) / 16 * 16;
    // oneDNN returns the exact sum (its own s8-source compensation), so no
    // -128 * wsum term: pass zero sums.
    E_ = make_epilogue(d_.OC, OCp, K, d_.wbits, w, d_.in, d_.out, d_.activation,
                       std::vector<int32_t>(static_cast<size_t>(OCp), 0), 0, vec_layout(Isa::AVX512), name_, up);
    F_ = make_flat(E_);
    fc_ = is_fc(d_);
    OmpOne omp;
    // Large layers: cache-sized row slabs. Otherwise one whole-layer primitive.
    if (!fc_) {
      const size_t row_bytes = static_cast<size_t>(OW_ * d_.OC) * 4;
      const int64_t want = std::max<int64_t>(1, static_cast<int64_t>(kSlabBytes / row_bytes));
      if (want < OH_) plan_slabs(want, w8.data(), nullptr, cache_);
    }
    if (cache_.slabs.empty()) {
      cache_.runners.clear();
      cache_.runners.push_back(std::make_unique<Runner>(
          build(d_, fc_, d_.in.is_signed ? dt::s8 : dt::u8, dt::s8, dt::s32, w8.data(), nullptr, {})));
      cache_.acc_rows = M_;
      cache_.dnnl_scratch = cache_.runners[0]->p.scratchpad;
    }
  }
  std::string_view name() const override { return name_; }
  // One slab's int32 results and oneDNN scratchpad per thread when the layer
  // runs as slabs in parallel; one whole-layer set otherwise.
  size_t scratch_bytes(int threads) const override {
    const SlabSet* s = parallel_set(threads);
    return s ? per_thread_bytes(*s) * static_cast<size_t>(threads) : per_thread_bytes(cache_);
  }
  void run(const KernelArgs& args, ThreadPool* pool) const override {
    if (args.inputs.size() != 1 || args.inputs[0] == nullptr || args.output == nullptr)
      throw std::invalid_argument(name_ + ": expected 1 input and an output");
    const int threads = pool ? std::max(1, pool->num_threads()) : 1;
    if (args.scratch == nullptr || args.scratch_size < scratch_bytes(threads))
      throw std::invalid_argument(name_ + ": scratch too small (" + std::to_string(args.scratch_size) + " < " +
                                  std::to_string(scratch_bytes(threads)) + ")");
    const auto* in = static_cast<const uint8_t*>(args.inputs[0]);
    auto* out = static_cast<uint8_t*>(args.output);
    const size_t esz = out_elem_bytes(E_.kind);
    const int64_t in_row = d_.W * d_.C, out_row = OW_ * d_.OC;
    std::lock_guard<std::mutex> lock(mu_);  // one execution at a time per primitive
    if (const SlabSet* set = parallel_set(threads)) {
      // The slabs in parallel on our pool, each thread running oneDNN on one
      // OpenMP thread with its own memory objects, slab buffer and
      // scratchpad: no OpenMP region to wake per slab (on a 2-vCPU VM a
      // passive OpenMP wake-up per slab made the layer 3-5x slower on two
      // threads than on one).
      while (set->per_thread.size() < static_cast<size_t>(threads)) {
        std::vector<std::unique_ptr<Runner>> rs;
        for (const auto& r : set->runners) rs.push_back(std::make_unique<Runner>(r->p));
        set->per_thread.push_back(std::move(rs));
      }
      const size_t per = per_thread_bytes(*set);
      const auto S = static_cast<int64_t>(set->slabs.size());
      const size_t acc_b = acc_bytes(*set);
      parallel_for(
          pool, d_.N * S,
          [&](int64_t b, int64_t e, int t) {
            OmpOne omp;
            uint8_t* base = static_cast<uint8_t*>(args.scratch) + per * static_cast<size_t>(t);
            auto* tacc = reinterpret_cast<int32_t*>(base);
            void* tscratch = base + acc_b;
            for (int64_t i = b; i < e; ++i) {
              const int64_t n = i / S;
              const Slab& sl = set->slabs[static_cast<size_t>(i % S)];
              set->per_thread[static_cast<size_t>(t)][static_cast<size_t>(sl.runner)]->run(
                  in + (n * d_.H + sl.ih0) * in_row, tacc, tscratch);
              epilogue(tacc, sl.rows * OW_, out + static_cast<size_t>((n * OH_ + sl.oh0) * out_row) * esz, nullptr);
              if (args.done) (*args.done)((n * OH_ + sl.oh0) * out_row, (n * OH_ + sl.oh0 + sl.rows) * out_row);
            }
          },
          1);
      return;
    }
    OmpOne omp;
    auto* acc = static_cast<int32_t*>(args.scratch);
    void* dscratch = static_cast<uint8_t*>(args.scratch) + acc_bytes(cache_);
    if (cache_.slabs.empty()) {
      cache_.runners[0]->run(in, acc, dscratch);
      epilogue(acc, M_, out, pool);
      report_done(args, 0, M_ * d_.OC, pool);
      return;
    }
    // Slab by slab: oneDNN writes rows [oh0, oh0 + rows) of one image, the
    // epilogue requantizes them while they are in cache.
    for (int64_t n = 0; n < d_.N; ++n)
      for (const Slab& sl : cache_.slabs) {
        cache_.runners[static_cast<size_t>(sl.runner)]->run(in + (n * d_.H + sl.ih0) * in_row, acc, dscratch);
        epilogue(acc, sl.rows * OW_, out + static_cast<size_t>((n * OH_ + sl.oh0) * out_row) * esz, pool);
        report_done(args, (n * OH_ + sl.oh0) * out_row, (n * OH_ + sl.oh0 + sl.rows) * out_row, pool);
      }
  }
  // Every slab once its epilogue has run (the whole layer when it is one).
  bool reports_done() const override { return true; }

 private:
  struct Slab {
    int64_t oh0 = 0, rows = 0, ih0 = 0;  // output rows [oh0, oh0 + rows) read input rows from ih0
    int runner = 0;
  };
  // Row slabs of one image and a primitive per distinct slab shape.
  struct SlabSet {
    std::vector<Slab> slabs;  // empty: runners[0] runs the whole layer
    std::vector<std::unique_ptr<Runner>> runners;
    int64_t acc_rows = 0;  // int32 result rows of the largest slab
    size_t dnnl_scratch = 0;
    // Per pool thread, a copy of every runner (own memory objects and
    // stream), made on the first run with that many threads (under mu_).
    mutable std::vector<std::vector<std::unique_ptr<Runner>>> per_thread;
  };

  size_t acc_bytes(const SlabSet& s) const { return round64(static_cast<size_t>(s.acc_rows * d_.OC) * 4); }
  // Output elements [b, e) are final: reported in pieces over the pool.
  static void report_done(const KernelArgs& args, int64_t b, int64_t e, ThreadPool* pool) {
    if (!args.done) return;
    constexpr int64_t kPiece = 16384;
    parallel_for(pool, (e - b + kPiece - 1) / kPiece, [&](int64_t pb, int64_t pe, int) {
      (*args.done)(b + pb * kPiece, std::min(e, b + pe * kPiece));
    });
  }
  size_t per_thread_bytes(const SlabSet& s) const { return acc_bytes(s) + round64(s.dnnl_scratch) + 64; }
  void epilogue(const int32_t* acc, int64_t rows, void* out, ThreadPool* pool) const {
    if (F_.period > 0) flat_epilogue(acc, rows, F_, d_.OC, out, pool);
    else epilogue_rows(acc, rows, E_, out, pool);
  }

  // The slabs a run on `threads` threads splits over the pool, or null (one
  // thread, or a layer that cannot be split: fc, one image of one output
  // row, a slab primitive wanting another weights layout). Layers too small
  // for cache-sized slabs get one slab per thread (or per image), planned on
  // first use.
  const SlabSet* parallel_set(int threads) const {
    if (threads <= 1) return nullptr;
    if (!cache_.slabs.empty()) return &cache_;
    if (fc_) return nullptr;
    std::lock_guard<std::mutex> lock(split_mu_);
    auto it = split_.find(threads);
    if (it == split_.end()) {
      auto set = std::make_unique<SlabSet>();
      // Per image: enough slabs that the N * slabs work items cover the
      // threads (a batch of at least `threads` images: one slab per image).
      const int64_t per_image = (threads + d_.N - 1) / d_.N;
      const int64_t rows = (OH_ + per_image - 1) / per_image;
      OmpOne omp;
      if (!plan_slabs(rows, nullptr, &cache_.runners[0]->p, *set) ||
          d_.N * static_cast<int64_t>(set->slabs.size()) < 2)
        set.reset();
      it = split_.emplace(threads, std::move(set)).first;
    }
    return it->second.get();
  }

  // Splits the output rows of one image into slabs of `rows` rows, each run
  // by a primitive over just the input rows it reads, with the padding of its
  // edge: a top slab, middle slabs (one primitive for them all) and a bottom
  // slab. With w8 == nullptr every slab primitive shares `reuse`'s reordered
  // weights, and the plan fails if one wants another layout. Fails (false,
  // `set` untouched) when a slab would lie entirely in the padding.
  bool plan_slabs(int64_t rows, const int8_t* w8, const Prim* reuse, SlabSet& set) const {
    const int64_t count = (OH_ + rows - 1) / rows;
    rows = (OH_ + count - 1) / count;
    const int64_t ext = (d_.KH - 1) * d_.dilation_h + 1;
    struct Shape {
      int64_t H, rows;
      int pt, pb;
    };
    std::vector<Shape> shapes;
    std::vector<Slab> slabs;
    for (int64_t oh0 = 0; oh0 < OH_; oh0 += rows) {
      const int64_t r = std::min(rows, OH_ - oh0);
      const int64_t lo = oh0 * d_.stride_h - d_.pad_top;  // first input row of the window (may be padding)
      const int64_t hi = (oh0 + r - 1) * d_.stride_h - d_.pad_top + ext;  // one past the last
      const int64_t a = std::max<int64_t>(0, lo), b = std::min<int64_t>(d_.H, hi);
      if (b <= a) return false;
      const Shape sh{b - a, r, static_cast<int>(a - lo), static_cast<int>(hi - b)};
      int idx = -1;
      for (size_t i = 0; i < shapes.size(); ++i)
        if (shapes[i].H == sh.H && shapes[i].rows == sh.rows && shapes[i].pt == sh.pt && shapes[i].pb == sh.pb)
          idx = static_cast<int>(i);
      if (idx < 0) {
        idx = static_cast<int>(shapes.size());
        shapes.push_back(sh);
      }
      slabs.push_back(Slab{oh0, r, a, idx});
    }
    const dt src_t = d_.in.is_signed ? dt::s8 : dt::u8;
    std::vector<std::unique_ptr<Runner>> runners;
    size_t scratch = 0;
    for (const Shape& sh : shapes) {
      ConvDesc c = d_;
      c.N = 1;
      c.H = sh.H;
      c.pad_top = sh.pt;
      c.pad_bottom = sh.pb;
      if (c.out_h() != sh.rows) throw std::logic_error(name_ + ": slab geometry mismatch");
      const Prim* share = reuse ? reuse : runners.empty() ? nullptr : &runners.front()->p;
      Prim p = build(c, false, src_t, dt::s8, dt::s32, w8, nullptr, {}, share);
      if (!p.has_weights()) return false;
      scratch = std::max(scratch, p.scratchpad);
      runners.push_back(std::make_unique<Runner>(std::move(p)));
    }
    set.slabs = std::move(slabs);
    set.runners = std::move(runners);
    set.acc_rows = rows * OW_;
    set.dnnl_scratch = scratch;
    return true;
  }

  std::string name_;
  ConvDesc d_;
  bool fc_ = false;
  int64_t OH_ = 0, OW_ = 0, M_ = 0;
  Epilogue E_;
  FlatRequant F_;
  SlabSet cache_;
  mutable std::mutex split_mu_;
  mutable std::map<int, std::unique_ptr<SlabSet>> split_;  // per thread count; null: no split
  mutable std::mutex mu_;
};

// ---- float32 ----------------------------------------------------------------------
bool f32_supports(const ConvDesc& c) {
  if (!(c.wbits == 32 || c.in.bits == 32)) return false;
  if (c.wbits != 32 && c.wbits != 2 && c.wbits != 4 && c.wbits != 8 && c.wbits != 16) return false;
  return c.in.bits == 32 || c.in.bits <= 8 || c.in.bits == 16;
}

class OnednnF32 final : public Kernel {
 public:
  OnednnF32(std::string name, const ConvDesc& d, const Weights& w) : name_(std::move(name)), d_(d) {
    check_desc(d_);
    if (!f32_supports(d_)) throw std::invalid_argument(name_ + ": cannot run " + describe(d_));
    const int64_t K = d_.K();
    const auto OC = static_cast<size_t>(d_.OC);
    const size_t row = packed_row_bytes(K, d_.wbits);
    if (w.data == nullptr || w.size < row * OC)
      throw std::invalid_argument(name_ + ": weights hold " + std::to_string(w.size) + " bytes, " +
                                  std::to_string(row * OC) + " needed");
    std::vector<float> wf(OC * static_cast<size_t>(K));
    if (d_.wbits == 32) {
      std::memcpy(wf.data(), w.data, wf.size() * sizeof(float));
    } else {
      if (w.scales.size() != 1 && w.scales.size() != OC)
        throw std::invalid_argument(name_ + ": expected " + std::to_string(OC) + " weight scales (or 1)");
      for (size_t oc = 0; oc < OC; ++oc) {
        const float s = w.scales[w.scales.size() == 1 ? 0 : oc];
        if (!(std::isfinite(s) && s > 0.0f)) throw std::invalid_argument(name_ + ": bad weight scale");
        for (int64_t k = 0; k < K; ++k)
          wf[oc * static_cast<size_t>(K) + static_cast<size_t>(k)] =
              static_cast<float>(unpack_value(w.data + oc * row, k, d_.wbits)) * s;
      }
    }
    if (!w.bias_q.empty() && w.bias_q.size() != OC) throw std::invalid_argument(name_ + ": bias_q size");
    if (!w.bias_f.empty() && w.bias_f.size() != OC) throw std::invalid_argument(name_ + ": bias_f size");
    std::vector<float> bias(OC, 0.0f);
    const double s_in = d_.in.is_float() ? 1.0 : static_cast<double>(d_.in.scale);
    for (size_t oc = 0; oc < OC; ++oc) {
      const double sw = d_.wbits == 32 ? 1.0 : static_cast<double>(w.scales[w.scales.size() == 1 ? 0 : oc]);
      if (!w.bias_f.empty()) bias[oc] = w.bias_f[oc];
      else if (!w.bias_q.empty()) bias[oc] = static_cast<float>(static_cast<double>(w.bias_q[oc]) * sw * s_in);
    }
    dnnl::primitive_attr attr;
    if (d_.activation != Activation::None) {
      dnnl::post_ops po;
      if (d_.activation == Activation::Relu) po.append_eltwise(1.0f, dnnl::algorithm::eltwise_relu, 0.0f, 0.0f);
      else po.append_eltwise(1.0f, dnnl::algorithm::eltwise_clip, 0.0f, 6.0f);
      attr.set_post_ops(po);
    }
    M_ = d_.N * d_.out_h() * d_.out_w();
    in_count_ = d_.N * d_.H * d_.W * d_.C;
    if (!d_.out.is_float()) clamp_ = output_clamp(d_.out, d_.activation);
    OmpOne omp;
    p_ = build(d_, is_fc(d_), dt::f32, dt::f32, dt::f32, wf.data(), bias.data(), attr);
  }
  std::string_view name() const override { return name_; }
  size_t scratch_bytes(int) const override {
    return in_bytes() + out_bytes() + round64(p_.scratchpad) + 64;
  }
  void run(const KernelArgs& args, ThreadPool* pool) const override {
    if (args.inputs.size() != 1 || args.inputs[0] == nullptr || args.output == nullptr)
      throw std::invalid_argument(name_ + ": expected 1 input and an output");
    if (args.scratch_size < scratch_bytes(1) || args.scratch == nullptr)
      throw std::invalid_argument(name_ + ": scratch too small");
    auto* s = static_cast<uint8_t*>(args.scratch);
    const void* src = args.inputs[0];
    if (!d_.in.is_float()) {
      auto* f = reinterpret_cast<float*>(s);
      for (int64_t i = 0; i < in_count_; ++i) f[i] = static_cast<float>(load_int(src, i, d_.in)) * d_.in.scale;
      src = f;
    }
    float* dst = d_.out.is_float() ? static_cast<float*>(args.output) : reinterpret_cast<float*>(s + in_bytes());
    {
      std::lock_guard<std::mutex> lock(mu_);
      OmpOne omp;
      execute(p_, src, dst, s + in_bytes() + out_bytes());
    }
    if (!d_.out.is_float()) {
      const int64_t n = M_ * d_.OC;
      for (int64_t i = 0; i < n; ++i)
        store_int(args.output, i, d_.out, quantize_to_grid(dst[i], d_.out.scale, clamp_.lo, clamp_.hi));
    }
  }

 private:
  size_t in_bytes() const { return d_.in.is_float() ? 0 : round64(static_cast<size_t>(in_count_) * 4); }
  size_t out_bytes() const { return d_.out.is_float() ? 0 : round64(static_cast<size_t>(M_ * d_.OC) * 4); }
  std::string name_;
  ConvDesc d_;
  int64_t M_ = 0, in_count_ = 0;
  ClampRange clamp_{};
  Prim p_;
  mutable std::mutex mu_;
};

// Rates: MACs per ns on one thread (Zen 4, avx512_core_vnni), measured with
// bench/kernels; the calibration may replace them.
double onednn_cost(const std::string& name, const ConvDesc& c, double wbytes_per_weight) {
  const double rate = std::max(1e-3, kernel_rate(name));
  const double m = static_cast<double>(c.N * c.out_h() * c.out_w());
  const double wbytes = static_cast<double>(c.OC * c.K()) * wbytes_per_weight;
  const double bw = wbytes <= 1.0e6 ? 85.0 : wbytes <= 24.0e6 ? 40.0 : 24.0;
  const double stream = wbytes * std::min(m, 1.0) / bw;
  // s32 result requantized by our epilogue pass: flat, whole vectors and
  // 32-byte stores for 8-bit outputs (~0.09 ns per output measured on Zen 4
  // with the result in L2), the row epilogue for 16-bit ones.
  const double epi = m * static_cast<double>(c.OC) * (c.out.bits <= 8 ? 0.1 : 0.3);
  // Measured (Zen 4, one thread): oneDNN's dense int8 conv gets faster with
  // the reduction length (~217 MACs/ns at K = 576, ~263 at K = 4608, ~140 at
  // K = 147); its int8 depthwise runs far below (~20 MACs/ns).
  const double kscale = 1.0 + 0.07 * std::log2(std::max(1.0, static_cast<double>(c.K())) / 576.0);
  const double r = c.is_depthwise() ? std::min(rate, 20.0) : std::clamp(rate * kscale, 0.65 * rate, 1.25 * rate);
  return std::max(static_cast<double>(c.macs()) / r, stream) + epi + 3000.0;
}

void add(std::vector<KernelInfo>& t, OpKind op, bool int8) {
  KernelInfo k;
  const char* opn = op == OpKind::Conv2D ? "conv2d" : "fc";
  k.name = std::string(opn) + (int8 ? "_w8a8_u8s8s32_onednn" : "_w32a32_f32_onednn");
  k.op = op;
  k.weight_bits = int8 ? 8 : 32;
  k.act_bits = int8 ? 8 : 32;
  // float32: the first SIMD level of this architecture.
  k.isa = int8 ? Isa::AVX512_VNNI : (isa_built(Isa::AVX2) ? Isa::AVX2 : Isa::NEON);
  set_default_rate(k.name, int8 ? (op == OpKind::Conv2D ? 217.0 : 60.0) : 4.0);
  auto as_conv = [op](const OpDesc& d) -> std::optional<ConvDesc> {
    if (op == OpKind::Conv2D) {
      if (const auto* c = std::get_if<ConvDesc>(&d)) return *c;
      return std::nullopt;
    }
    if (const auto* f = std::get_if<FcDesc>(&d)) return fc_as_conv(*f);
    return std::nullopt;
  };
  k.supports = [as_conv, int8, isa = k.isa](const OpDesc& d) {
    if (!cpu_has(isa)) return false;
    const auto c = as_conv(d);
    if (!c) return false;
    return int8 ? int8_supports(*c) : f32_supports(*c);
  };
  k.cost_ns = [as_conv, int8, name = k.name](const OpDesc& d) {
    const auto c = as_conv(d);
    return onednn_cost(name, *c, int8 ? 1.0 : 4.0);
  };
  k.create = [as_conv, int8, name = k.name](const OpDesc& d, const Weights& w) -> std::unique_ptr<Kernel> {
    const auto c = as_conv(d);
    if (!c) throw std::invalid_argument(name + ": cannot run " + describe(d));
    check_desc(d);
    if (int8) return std::make_unique<OnednnInt8>(name, *c, w);
    return std::make_unique<OnednnF32>(name, *c, w);
  };
  k.note = int8 ? "oneDNN int8 (s32 out) + fused-epilogue pass; sub-byte weights widened to int8"
                : "oneDNN float32; integer sides dequantized";
  t.push_back(std::move(k));
}

}  // namespace

void register_onednn_kernels(std::vector<KernelInfo>& table) {
  for (OpKind op : {OpKind::Conv2D, OpKind::FullyConnected}) {
    if (isa_built(Isa::AVX512_VNNI)) add(table, op, true);  // exact int8: x86-64 with VNNI
    add(table, op, false);
  }
}

}  // namespace bbits::kernels::simd
