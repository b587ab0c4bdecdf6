// bbits kernels — the 16-bit family, portable part: weight packing, im2col to
// int16, threading, validation, cost model and table entries. The ISA code
// is gemm16_isa.cpp; scheme and exactness argument: gemm16.h (Packed16).
//
// Layers run here: integer weights and activations with at least one side at
// 16 bits (w16a16, w16a2/4/8, w2/4/8a16), groups == 1 (GEMM) or depthwise
// (Dw16Conv), any kernel size, stride, padding, dilation; output at 2/4/8/16
// bits or float32. Other grouped convolutions stay on the reference.
#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

#include "bbits/kernels/thread_pool.h"
#include "gemm16.h"

namespace bbits::kernels::simd {

void epilogue16_row_scalar(const int64_t* acc, int64_t oc0, int64_t n, const Packed16& B, const Epilogue& E,
                           void* out_row) {
  for (int64_t c = 0; c < n; ++c) {
    const int64_t oc = oc0 + c;
    epilogue_value(E, oc, acc[c] + B.corr[static_cast<size_t>(oc)], E.bias64[static_cast<size_t>(oc)], out_row);
  }
}

namespace {

bool int_grid(const QuantInfo& q) { return q.bits == 2 || q.bits == 4 || q.bits == 8 || q.bits == 16; }

// What the 16-bit kernels run (see the file comment).
bool gemm16_supports(const ConvDesc& c) {
  if (!(c.wbits == 2 || c.wbits == 4 || c.wbits == 8 || c.wbits == 16)) return false;
  if (!int_grid(c.in)) return false;
  if (c.wbits != 16 && c.in.bits != 16) return false;  // <= 8 x <= 8: the int8 kernels
  if (!(int_grid(c.out) || c.out.bits == 32)) return false;
  if (c.groups != 1) return false;
  const int64_t K = c.K();
  // int64 sums cannot overflow: K * 2^15 * 2^16 < 2^63 for K < 2^31.
  return K > 0 && K <= (int64_t{1} << 30);
}

// Largest magnitude of a stored weight code / of a stored (offset) activation.
int64_t wabs_max(int wbits) { return int64_t{1} << (wbits - 1); }  // raw codes reach -2^(b-1)
int64_t xabs_max(const QuantInfo& in) {
  if (in.bits == 16) return 32768;  // unsigned: x - 32768 in [-32768, 32767]; signed: int16
  return in.is_signed ? 128 : 255;  // <= 8 bits: int8 / uint8 storage
}

class Gemm16Conv final : public Kernel {
 public:
  Gemm16Conv(std::string name, Isa isa, const ConvDesc& d, const Weights& w)
      : name_(std::move(name)), isa_(isa), d_(d) {
    check_desc(d_);
    if (!gemm16_supports(d_)) throw std::invalid_argument(name_ + ": cannot run " + describe(d_));
    check_cpu(isa_, name_);
    OH_ = d_.out_h();
    OW_ = d_.out_w();
    M_ = d_.N * OH_ * OW_;
    const int64_t K = d_.K(), OC = d_.OC;
    const size_t row = packed_row_bytes(K, d_.wbits);
    const size_t need = row * static_cast<size_t>(OC);
    if (w.data == nullptr || w.size < need)
      throw std::invalid_argument(name_ + ": weights hold " + std::to_string(w.size) + " bytes, " +
                                  std::to_string(need) + " needed for " + std::to_string(OC) + " rows of " +
                                  std::to_string(K) + " values at " + std::to_string(d_.wbits) + " bits");
    B_.K = K;
    B_.Kp = K + (K & 1);
    B_.pairs = B_.Kp / 2;
    B_.OC = OC;
    B_.nblocks = (OC + 15) / 16;
    B_.OCp = B_.nblocks * 16;
    B_.w = make_aligned<int16_t>(static_cast<size_t>(B_.nblocks * B_.pairs * 32));
    B_.corr.assign(static_cast<size_t>(B_.OCp), 0);
    offset16_ = d_.in.bits == 16 && !d_.in.is_signed;
    for (int64_t oc = 0; oc < OC; ++oc) {
      const uint8_t* r = w.data + static_cast<size_t>(oc) * row;
      int16_t* blk = B_.w.get() + (oc / 16) * B_.pairs * 32 + (oc % 16) * 2;
      int64_t sum = 0;
      for (int64_t k = 0; k < K; ++k) {
        const int32_t v = unpack_value(r, k, d_.wbits);
        blk[(k / 2) * 32 + (k % 2)] = static_cast<int16_t>(v);
        sum += v;
      }
      if (offset16_) B_.corr[static_cast<size_t>(oc)] = 32768 * sum;
    }
    B_.split = d_.wbits == 16 && d_.in.bits == 16;
    // int32 block: every vpdpwssd / vpmaddwd step adds at most 2 * |w| * |x|
    // to a lane (split mode: |x| <= 255 for the low plane, 128 for the high).
    const int64_t xabs = B_.split ? 255 : xabs_max(d_.in);
    const int64_t step = 2 * wabs_max(d_.wbits) * xabs;
    B_.kblock = std::clamp<int64_t>(int64_t{2147483647} / step, 1, std::max<int64_t>(B_.pairs, 1));
    const std::vector<int32_t> no_wsum(static_cast<size_t>(B_.OCp), 0);  // corrections are in B_.corr
    E_ = make_epilogue(OC, B_.OCp, K, d_.wbits, w, d_.in, d_.out, d_.activation, no_wsum, 0, vec_layout(isa_), name_);
    if (E_.kind != OutKind::F32) {
      B_.shift_ge32 = true;
      for (int64_t oc = 0; oc < OC; ++oc) B_.shift_ge32 &= E_.shift[oc] >= 32;
    }
    planes_ = B_.split ? 2 : 1;
    // Rows per block: A (MB rows x Kp int16 per plane) stays in L2 beside a weight panel.
    MB_ = std::clamp<int64_t>((128 * 1024 / (B_.Kp * 2 * planes_)) / 4 * 4, 4, 256);
    MB_ = std::min<int64_t>(MB_, (M_ + 3) / 4 * 4);
  }

  std::string_view name() const override { return name_; }

  size_t scratch_bytes(int num_threads) const override {
    return static_cast<size_t>(std::max(1, num_threads)) * thread_bytes();
  }

  void run(const KernelArgs& args, ThreadPool* pool) const override {
    check_io(args, 1, name_);
    const int threads = pool ? std::max(1, pool->num_threads()) : 1;
    check_scratch(args, scratch_bytes(threads), name_);
    const int64_t nrb = (M_ + MB_ - 1) / MB_;
    // Channel groups (whole 64-channel panels) so that both threads get work
    // when there are few row blocks (batch-1 fc).
    const int64_t npanels = (B_.nblocks + 3) / 4;
    int64_t ng = 1;
    if (threads > 1 && nrb < 2 * threads) ng = std::min<int64_t>(npanels, (2 * threads + nrb - 1) / nrb);
    const size_t esz = out_elem_bytes(E_.kind);
    auto* out = static_cast<uint8_t*>(args.output);
    parallel_for(pool, nrb * ng, [&](int64_t begin, int64_t end, int t) {
      auto* A = reinterpret_cast<int16_t*>(static_cast<uint8_t*>(args.scratch) + static_cast<size_t>(t) * thread_bytes());
      int16_t* Ahi = A + plane_elems();
      int64_t filled = -1;
      for (int64_t it = begin; it < end; ++it) {
        const int64_t rb = it / ng, g = it % ng;
        const int64_t m0 = rb * MB_, mb = std::min(MB_, M_ - m0);
        if (filled != rb) {
          fill_rows(args.inputs[0], m0, mb, A, Ahi);
          filled = rb;
        }
        Gemm16Call c;
        c.B = &B_;
        c.E = &E_;
        c.A = A;
        c.Ahi = B_.split ? Ahi : nullptr;
        c.lda = B_.Kp;
        c.M = mb;
        c.out = out + static_cast<size_t>(m0 * d_.OC) * esz;
        c.ldo = d_.OC;
        c.b0 = std::min(B_.nblocks, g * npanels / ng * 4);
        c.b1 = std::min(B_.nblocks, (g + 1) * npanels / ng * 4);
        if (c.b0 >= c.b1) continue;
        with_isa<Isa::AVX512_VNNI, Isa::AVX2, Isa::NEON>(isa_, [&]<class Tag>() { gemm16_run<Tag>(c); });
      }
    });
  }

 private:
  size_t plane_elems() const { return round64(static_cast<size_t>(MB_ * B_.Kp) * 2) / 2; }
  size_t thread_bytes() const { return plane_elems() * 2 * static_cast<size_t>(planes_) + 64; }

  // Rows [m0, m0 + mb) of the int16 im2col matrix (see Packed16).
  void fill_rows(const void* in, int64_t m0, int64_t mb, int16_t* A, int16_t* Ahi) const {
    switch (d_.in.bits == 16 ? (d_.in.is_signed ? 3 : 2) : (d_.in.is_signed ? 1 : 0)) {
      case 0:
        fill_typed(static_cast<const uint8_t*>(in), m0, mb, A, Ahi);
        break;
      case 1:
        fill_typed(static_cast<const int8_t*>(in), m0, mb, A, Ahi);
        break;
      case 2:
        fill_typed(static_cast<const uint16_t*>(in), m0, mb, A, Ahi);
        break;
      default:
        fill_typed(static_cast<const int16_t*>(in), m0, mb, A, Ahi);
        break;
    }
  }

  template <class T>
  void fill_typed(const T* in, int64_t m0, int64_t mb, int16_t* A, int16_t* Ahi) const {
    const ConvDesc& d = d_;
    constexpr bool kOff = std::is_same_v<T, uint16_t>;
    const int16_t pad = kOff ? int16_t{-32768} : int16_t{0};
    const int64_t C = d.C, Kp = B_.Kp;
    for (int64_t r = 0; r < mb; ++r) {
      const int64_t m = m0 + r;
      const int64_t n = m / (OH_ * OW_), rem = m % (OH_ * OW_);
      const int64_t oh = rem / OW_, ow = rem % OW_;
      int16_t* dst = A + r * Kp;
      int64_t k = 0;
      for (int64_t kh = 0; kh < d.KH; ++kh) {
        const int64_t ih = oh * d.stride_h - d.pad_top + kh * d.dilation_h;
        for (int64_t kw = 0; kw < d.KW; ++kw, k += C) {
          const int64_t iw = ow * d.stride_w - d.pad_left + kw * d.dilation_w;
          if (ih < 0 || ih >= d.H || iw < 0 || iw >= d.W) {
            for (int64_t c = 0; c < C; ++c) dst[k + c] = pad;
          } else {
            const T* src = in + ((n * d.H + ih) * d.W + iw) * C;
            if constexpr (kOff) {
              for (int64_t c = 0; c < C; ++c) dst[k + c] = static_cast<int16_t>(static_cast<int32_t>(src[c]) - 32768);
            } else {
              for (int64_t c = 0; c < C; ++c) dst[k + c] = static_cast<int16_t>(src[c]);
            }
          }
        }
      }
      for (; k < Kp; ++k) dst[k] = 0;  // weights are 0 there too
      if (B_.split) {
        int16_t* hi = Ahi + r * Kp;
        for (int64_t i = 0; i < Kp; ++i) {
          const int16_t v = dst[i];
          hi[i] = static_cast<int16_t>(v >> 8);
          dst[i] = static_cast<int16_t>(v & 0xff);
        }
      }
    }
  }

  std::string name_;
  Isa isa_;
  ConvDesc d_;
  int64_t OH_ = 0, OW_ = 0, M_ = 0, MB_ = 4;
  int planes_ = 1;
  bool offset16_ = false;
  Packed16 B_;
  Epilogue E_;
};

// Default MAC rates (MACs per ns, one thread) measured with bbits-bench-kernels
// (wide/resnet18/*, CPU time) on the AMD EPYC Zen 4 VM: 3x3 layers reach ~85
// (AVX-512 VNNI) / ~50 (AVX2) MACs/ns with one int16 plane; split: w16a16 runs
// two planes (about half the rate). Small-K 1x1 layers add im2col and epilogue
// costs, modelled separately below.
double default_rate16(Isa isa, bool split) {
  if (isa == Isa::AVX512_VNNI) return split ? 40.0 : 80.0;
  if (isa == Isa::AVX2) return split ? 25.0 : 45.0;
  return split ? 8.0 : 15.0;  // NEON: an estimate (not measured here)
}

double gemm16_cost(const std::string& name, const ConvDesc& c) {
  const double rate = std::max(1e-3, kernel_rate(name));
  const double macs = static_cast<double>(c.macs());
  const double m = static_cast<double>(c.N * c.out_h() * c.out_w());
  const double K = static_cast<double>(c.K());
  const double outputs = m * static_cast<double>(c.OC);
  const double wbytes = static_cast<double>(c.OC) * K * 2.0;
  const double im2col = m * K * 0.2;  // int16 conversion of every patch value
  double t = macs / rate;
  if (m <= 2.0) {  // GEMV: bounded by streaming the int16 weights
    const double bw = wbytes <= 1.0e6 ? 60.0 : (wbytes <= 24.0e6 ? 40.0 : 22.0);
    t = std::max(t, wbytes * m / bw);
  }
  return t + im2col + outputs * 0.5 + 400.0;
}

void add_gemm16(std::vector<KernelInfo>& t, OpKind op, int wb, int ab, Isa isa) {
  KernelInfo k;
  const char* opn = op == OpKind::Conv2D ? "conv2d" : "fc";
  const bool split = wb == 16 && ab == 16;
  const Gemm16Tile tl = gemm16_tile(isa);
  const std::string tile = std::to_string(split ? tl.mr_split : tl.mr) + "x" + std::to_string(16 * tl.blocks);
  k.name = std::string(opn) + "_w" + std::to_string(wb) + "a" + std::to_string(ab) + "_s16s16_" + isa_tag(isa) + "_" +
           tile;
  k.op = op;
  k.weight_bits = wb;
  k.act_bits = ab;
  k.isa = isa;
  set_default_rate(k.name, default_rate16(isa, split));
  // Native pairs: w16a16; w16 with 2/4/8-bit activations (a8 entry); 2/4/8-bit
  // weights with 16-bit activations (w8 entry). Both narrower sides widen to int16.
  auto fits = [wb, ab](const ConvDesc& c) {
    if (!gemm16_supports(c)) return false;
    const int cw = c.wbits == 16 ? 16 : 8, ca = c.in.bits == 16 ? 16 : 8;
    return cw == wb && ca == ab;
  };
  k.supports = [op, isa, fits](const OpDesc& d) {
    if (!cpu_has(isa)) return false;
    if (op == OpKind::Conv2D) {
      const auto* c = std::get_if<ConvDesc>(&d);
      return c && fits(*c);
    }
    const auto* f = std::get_if<FcDesc>(&d);
    return f && fits(fc_as_conv(*f));
  };
  k.cost_ns = [name = k.name, op](const OpDesc& d) {
    if (op == OpKind::Conv2D) return gemm16_cost(name, std::get<ConvDesc>(d));
    return gemm16_cost(name, fc_as_conv(std::get<FcDesc>(d)));
  };
  k.create = [name = k.name, op, isa, fits](const OpDesc& d, const Weights& w) -> std::unique_ptr<Kernel> {
    ConvDesc c;
    if (op == OpKind::Conv2D) {
      const auto* cp = std::get_if<ConvDesc>(&d);
      if (!cp) throw std::invalid_argument(name + ": not a conv2d: " + describe(d));
      c = *cp;
    } else {
      const auto* f = std::get_if<FcDesc>(&d);
      if (!f) throw std::invalid_argument(name + ": not a fully connected layer: " + describe(d));
      check_desc(d);
      c = fc_as_conv(*f);
    }
    check_desc(OpDesc{c});
    if (!fits(c)) throw std::invalid_argument(name + ": cannot run " + describe(d));
    return std::make_unique<Gemm16Conv>(name, isa, c, w);
  };
  const std::string isa_txt = isa == Isa::AVX512_VNNI ? "vpdpwssd" : isa == Isa::AVX2 ? "AVX2 vpmaddwd" : "NEON smull";
  if (split)
    k.note = isa_txt + " int16 GEMM, activations split in bytes (two planes), int32 blocks flushed to int64: exact";
  else if (wb == 16)
    k.note = isa_txt + " int16 GEMM; 2/4/8-bit activations widened, int32 blocks flushed to int64: exact";
  else
    k.note = isa_txt + " int16 GEMM; 2/4/8-bit weights widened, int32 blocks flushed to int64: exact";
  t.push_back(std::move(k));
}

// ---- depthwise with a 16-bit side ---------------------------------------------------
bool dw16_supports(const ConvDesc& c) {
  if (!c.is_depthwise()) return false;
  if (!(c.wbits == 2 || c.wbits == 4 || c.wbits == 8 || c.wbits == 16)) return false;
  if (!int_grid(c.in) || (c.wbits != 16 && c.in.bits != 16)) return false;
  if (!(int_grid(c.out) || c.out.bits == 32)) return false;
  return c.KH * c.KW <= 4096;
}

class Dw16Conv final : public Kernel {
 public:
  Dw16Conv(std::string name, Isa isa, const ConvDesc& d, const Weights& w) : name_(std::move(name)), isa_(isa), d_(d) {
    check_desc(d_);
    if (!dw16_supports(d_)) throw std::invalid_argument(name_ + ": cannot run " + describe(d_));
    check_cpu(isa_, name_);
    const int64_t C = d_.C, T = d_.KH * d_.KW;
    const size_t row = packed_row_bytes(T, d_.wbits);
    set_dw_shape(g_, d_, w, name_);
    g_.in_kind = d_.in.bits == 16 ? (d_.in.is_signed ? 3 : 2) : (d_.in.is_signed ? 1 : 0);
    const int64_t L = vec_layout(isa_).lanes;
    g_.lanes = L;
    g_.cblocks = (C + L - 1) / L;
    w32_ = make_aligned<int32_t>(static_cast<size_t>(g_.cblocks * T * L));
    for (int64_t c = 0; c < C; ++c)
      for (int64_t t = 0; t < T; ++t)
        w32_[static_cast<size_t>(((c / L) * T + t) * L + c % L)] =
            unpack_value(w.data + static_cast<size_t>(c) * row, t, d_.wbits);
    B_.OC = C;
    B_.OCp = g_.cblocks * L;
    B_.corr.assign(static_cast<size_t>(B_.OCp), 0);
    const std::vector<int32_t> no_wsum(static_cast<size_t>(B_.OCp), 0);
    E_ = make_epilogue(C, B_.OCp, T, d_.wbits, w, d_.in, d_.out, d_.activation, no_wsum, 0, vec_layout(isa_), name_);
    if (E_.kind != OutKind::F32) {
      B_.shift_ge32 = true;
      for (int64_t c = 0; c < C; ++c) B_.shift_ge32 &= E_.shift[c] >= 32;
    }
  }
  std::string_view name() const override { return name_; }
  size_t scratch_bytes(int num_threads) const override {
    return static_cast<size_t>(std::max(1, num_threads)) * thread_bytes();
  }
  void run(const KernelArgs& args, ThreadPool* pool) const override {
    check_io(args, 1, name_);
    check_scratch(args, scratch_bytes(pool ? std::max(1, pool->num_threads()) : 1), name_);
    parallel_for(pool, g_.N * g_.OH, [&](int64_t b, int64_t e, int t) {
      auto* acc = reinterpret_cast<int64_t*>(static_cast<uint8_t*>(args.scratch) + static_cast<size_t>(t) * thread_bytes());
      with_isa<Isa::AVX512, Isa::AVX2, Isa::NEON>(isa_, [&]<class Tag>() {
        dwconv16_rows<Tag>(g_, w32_.get(), B_, E_, args.inputs[0], args.output, acc, b, e);
      });
    });
  }

 private:
  size_t thread_bytes() const { return round64(static_cast<size_t>(g_.cblocks * g_.lanes) * sizeof(int64_t)); }

  std::string name_;
  Isa isa_;
  ConvDesc d_;
  Dw16Geom g_;
  AlignedArray<int32_t> w32_;  // [cblock][tap][lanes]
  Packed16 B_;  // only corr (zero) and shift_ge32, for the epilogue
  Epilogue E_;
};

void add_dw16(std::vector<KernelInfo>& t, int wb, int ab, Isa isa) {
  KernelInfo k;
  const int L = vec_layout(isa).lanes;
  // "conv2d_dw_...": the 8-bit depthwise testers select "dwconv2d_*" kernels.
  k.name = "conv2d_dw_w" + std::to_string(wb) + "a" + std::to_string(ab) + "_s16s16_" + isa_tag(isa) + "_c" +
           std::to_string(L);
  k.op = OpKind::Conv2D;
  k.weight_bits = wb;
  k.act_bits = ab;
  k.isa = isa;
  auto fits = [wb, ab](const ConvDesc& c) {
    if (!dw16_supports(c)) return false;
    return (c.wbits == 16 ? 16 : 8) == wb && (c.in.bits == 16 ? 16 : 8) == ab;
  };
  k.supports = [isa, fits](const OpDesc& d) {
    const auto* c = std::get_if<ConvDesc>(&d);
    return cpu_has(isa) && c && fits(*c);
  };
  // ns per (pixel, channel block, tap): measured on MobileNetV2's depthwise
  // shapes (bbits-bench-kernels wide/mobilenetv2/dw_*) for AVX-512 and AVX2,
  // an estimate for NEON; plus per output.
  const double per_tap = isa == Isa::AVX512 ? 2.0 : isa == Isa::AVX2 ? 1.3 : 1.5;
  k.cost_ns = [L, per_tap](const OpDesc& d) {
    const auto& c = std::get<ConvDesc>(d);
    const double px = static_cast<double>(c.N * c.out_h() * c.out_w());
    const double blocks = std::ceil(static_cast<double>(c.C) / L);
    return px * blocks * static_cast<double>(c.KH * c.KW) * per_tap + px * static_cast<double>(c.C) * 1.0 + 400.0;
  };
  k.create = [name = k.name, isa, fits](const OpDesc& d, const Weights& w) -> std::unique_ptr<Kernel> {
    const auto* c = std::get_if<ConvDesc>(&d);
    if (!c) throw std::invalid_argument(name + ": not a conv2d: " + describe(d));
    check_desc(d);
    if (!fits(*c)) throw std::invalid_argument(name + ": cannot run " + describe(d));
    return std::make_unique<Dw16Conv>(name, isa, *c, w);
  };
  k.note = "depthwise, 16-bit side: exact 64-bit tap products over " + std::to_string(L) + " channels, int64 sums";
  t.push_back(std::move(k));
}

}  // namespace

void register_gemm16_kernels(std::vector<KernelInfo>& table) {
  for (Isa isa : {Isa::AVX512_VNNI, Isa::AVX2, Isa::NEON}) {
    if (!isa_built(isa)) continue;
    for (auto [wb, ab] : {std::pair{16, 16}, std::pair{16, 8}, std::pair{8, 16}}) {
      add_gemm16(table, OpKind::FullyConnected, wb, ab, isa);
      add_gemm16(table, OpKind::Conv2D, wb, ab, isa);
    }
  }
  for (Isa isa : {Isa::AVX512, Isa::AVX2, Isa::NEON}) {
    if (!isa_built(isa)) continue;
    for (auto [wb, ab] : {std::pair{16, 16}, std::pair{16, 8}, std::pair{8, 16}}) add_dw16(table, wb, ab, isa);
  }
}

}  // namespace bbits::kernels::simd
