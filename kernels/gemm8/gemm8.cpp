// bbits kernels — the 8-bit GEMM / GEMV family, portable part: weight
// prepacking, the conv / fc driver (row blocks, im2col or implicit rows,
// threads), cost model and table entries. The ISA code is gemm8_isa.cpp.
#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "bbits/kernels/thread_pool.h"
#include "gemm8.h"

namespace bbits::kernels::simd {

PackedB pack_weights(const uint8_t* rows, size_t row_bytes, int src_bits, int64_t OC, int64_t K, int bits,
                     int lanes, int nb_max, WEnc enc) {
  if (bits != 2 && bits != 4 && bits != 8)
    throw std::invalid_argument("pack_weights: bits must be 2, 4 or 8, got " + std::to_string(bits));
  if (OC <= 0 || K <= 0) throw std::invalid_argument("pack_weights: empty weight matrix");
  if (src_bits != 2 && src_bits != 4 && src_bits != 8)
    throw std::invalid_argument("pack_weights: source bits must be 2, 4 or 8, got " + std::to_string(src_bits));
  if (src_bits > bits) throw std::invalid_argument("pack_weights: cannot narrow weights");
  if (row_bytes < packed_row_bytes(K, src_bits)) throw std::invalid_argument("pack_weights: rows too short");
  PackedB B;
  B.bits = bits;
  B.lanes = lanes;
  B.nb_max = nb_max;
  B.fields = 8 / bits;
  B.kgroup = 4 * B.fields;
  B.enc = enc;
  B.K = K;
  B.Kp = (K + B.kgroup - 1) / B.kgroup * B.kgroup;
  B.ngroups = B.Kp / B.kgroup;
  B.OC = OC;
  B.nblocks = (OC + lanes - 1) / lanes;
  B.OCp = B.nblocks * lanes;
  B.npanels = (B.nblocks + nb_max - 1) / nb_max;
  const int64_t lane_bytes = 4;
  const int64_t block_group_bytes = lanes * lane_bytes;  // one vector
  B.panel_stride = static_cast<int64_t>(nb_max) * block_group_bytes * B.ngroups;
  B.bytes = static_cast<size_t>(B.nblocks * block_group_bytes * B.ngroups);
  B.data = make_aligned<uint8_t>(B.bytes + 64);
  B.wsum.assign(static_cast<size_t>(B.OCp), 0);

  const int F = B.fields;
  const uint32_t mask = bits == 8 ? 0xffu : ((1u << bits) - 1u);
  const int32_t off = B.offset();
  std::vector<int32_t> wrow(static_cast<size_t>(B.Kp), 0);
  for (int64_t oc = 0; oc < B.OCp; ++oc) {
    std::fill(wrow.begin(), wrow.end(), 0);
    if (oc < OC) {
      const uint8_t* r = rows + static_cast<size_t>(oc) * row_bytes;
      int64_t s = 0;
      for (int64_t k = 0; k < K; ++k) {
        wrow[static_cast<size_t>(k)] = unpack_value(r, k, src_bits);
        s += wrow[static_cast<size_t>(k)];
      }
      B.wsum[static_cast<size_t>(oc)] = static_cast<int32_t>(s);
    }
    const int64_t blk = oc / lanes, lane = oc % lanes;
    const int64_t p = blk / nb_max, b = blk % nb_max;
    const int nb = B.panel_blocks(p);
    uint8_t* pbase = B.data.get() + p * B.panel_stride;
    for (int64_t g = 0; g < B.ngroups; ++g) {
      uint8_t* lanep = pbase + (g * nb + b) * block_group_bytes + lane * lane_bytes;
      for (int i = 0; i < 4; ++i) {
        uint32_t byte = 0;
        for (int j = 0; j < F; ++j) {
          const int64_t k = g * B.kgroup + 4 * j + i;
          const int32_t w = wrow[static_cast<size_t>(k)];
          uint32_t e;
          if (bits == 8) {
            e = static_cast<uint32_t>(w) & 0xffu;
          } else if (B.enc == WEnc::TopRaw && j == F - 1) {
            e = static_cast<uint32_t>(w) & mask;
          } else {
            e = static_cast<uint32_t>(w + off) & mask;
          }
          byte |= e << (j * bits);
        }
        lanep[i] = static_cast<uint8_t>(byte);
      }
    }
  }
  return B;
}

namespace {

constexpr Isa kIsas[] = {Isa::AVX512_VNNI, Isa::AVX2, Isa::NEON_DOTPROD, Isa::NEON};
template <class F>
void with_gemm8_isa(Isa isa, F&& f) {
  with_isa<Isa::AVX512_VNNI, Isa::AVX2, Isa::NEON_DOTPROD, Isa::NEON>(isa, f);
}

// The limits of the GEMM kernels: integer weights at <= 8 bits, integer input
// at <= 8 bits (one byte), groups == 1, the reference's int32 accumulation, and
// K <= 65536 (the in-place field accumulators of the GEMV stay below 2^31).
bool gemm_supports_conv(const ConvDesc& c, int kbits) {
  if (c.wbits != 2 && c.wbits != 4 && c.wbits != 8) return false;
  if (c.wbits > kbits) return false;
  if (kbits < 8 && c.wbits != kbits) return false;
  if (!int8_grid(c.in)) return false;
  if (!(int8_grid(c.out) || c.out.bits == 16 || c.out.bits == 32)) return false;
  if (c.groups != 1) return false;
  const int64_t K = c.K();
  if (K <= 0 || K > 65536) return false;
  const double wmax = static_cast<double>(qmax(c.wbits, true));
  const double imax = static_cast<double>(std::max(-qmin(c.in.bits, c.in.is_signed), qmax(c.in.bits, c.in.is_signed)));
  return wmax * imax * static_cast<double>(K) < 2147483647.0;
}

// The byte an input value is stored as: x xor 0x80 (a_offset +-128) when x
// does not fit the dot product's byte type (signed inputs on x86, unsigned
// 8-bit inputs on NEON).
bool needs_flip(const QuantInfo& in, const Gemm8Traits& t) {
  return t.signed_bytes ? (!in.is_signed && in.bits == 8) : in.is_signed;
}

class GemmConv final : public Kernel {
 public:
  GemmConv(std::string name, Isa isa, int kbits, const ConvDesc& d, const Weights& w)
      : name_(std::move(name)), isa_(isa), t_(gemm8_traits(isa)), d_(d) {
    check_desc(d_);
    if (!gemm_supports_conv(d_, kbits)) throw std::invalid_argument(name_ + ": cannot run " + describe(d_));
    check_cpu(isa_, name_);
    OH_ = d_.out_h();
    OW_ = d_.out_w();
    M_ = d_.N * OH_ * OW_;
    K_ = d_.K();
    const size_t row = packed_row_bytes(K_, d_.wbits);
    const size_t need = row * static_cast<size_t>(d_.OC);
    if (w.data == nullptr || w.size < need)
      throw std::invalid_argument(name_ + ": weights hold " + std::to_string(w.size) + " bytes, " +
                                  std::to_string(need) + " needed for " + std::to_string(d_.OC) + " rows of " +
                                  std::to_string(K_) + " values at " + std::to_string(d_.wbits) + " bits");
    const WEnc enc = t_.top_raw && M_ <= 2 ? WEnc::TopRaw : WEnc::Offset;
    // 2/4-bit weights on the int8 kernel: widened here, each channel times
    // its power of two (weight_upshifts: the same outputs, a shorter epilogue).
    const std::vector<int> up =
        kbits == 8 && d_.wbits < 8 ? weight_upshifts(d_.OC, K_, d_.wbits, w, d_.in, d_.out) : std::vector<int>{};
    if (up.empty()) {
      B_ = pack_weights(w.data, row, d_.wbits, d_.OC, K_, kbits, t_.lanes, kGemm8Blocks, enc);
    } else {
      std::vector<uint8_t> w8(static_cast<size_t>(d_.OC * K_));
      for (int64_t oc = 0; oc < d_.OC; ++oc)
        for (int64_t k = 0; k < K_; ++k)
          w8[static_cast<size_t>(oc * K_ + k)] = static_cast<uint8_t>(static_cast<int8_t>(
              unpack_value(w.data + static_cast<size_t>(oc) * row, k, d_.wbits) * (1 << up[static_cast<size_t>(oc)])));
      B_ = pack_weights(w8.data(), static_cast<size_t>(K_), 8, d_.OC, K_, kbits, t_.lanes, kGemm8Blocks, enc);
    }
    const bool flip = needs_flip(d_.in, t_);
    const int a_offset = !flip ? 0 : (t_.signed_bytes ? -128 : 128);
    E_ = make_epilogue(d_.OC, B_.OCp, K_, d_.wbits, w, d_.in, d_.out, d_.activation, B_.wsum, a_offset,
                       vec_layout(isa_), name_, up);
    if (isa_ == Isa::AVX512_VNNI) fold_colterm(E_);
    direct_ = d_.KH == 1 && d_.KW == 1 && d_.stride_h == 1 && d_.stride_w == 1 && d_.pad_top == 0 &&
              d_.pad_left == 0 && d_.pad_bottom == 0 && d_.pad_right == 0 && !flip && d_.C == B_.Kp;
    ig_.N = d_.N;
    ig_.H = d_.H;
    ig_.W = d_.W;
    ig_.C = d_.C;
    ig_.OH = OH_;
    ig_.OW = OW_;
    ig_.KH = d_.KH;
    ig_.KW = d_.KW;
    ig_.K = K_;
    ig_.Kp = B_.Kp;
    ig_.sh = d_.stride_h;
    ig_.sw = d_.stride_w;
    ig_.pt = d_.pad_top;
    ig_.pl = d_.pad_left;
    ig_.dh = d_.dilation_h;
    ig_.dw = d_.dilation_w;
    ig_.flip = flip ? 0x80 : 0x00;
    // Implicit convolution (no im2col): every kernel row of a pixel is one
    // contiguous run of KW * C input bytes; only pixels whose window crosses
    // the left / right border are gathered.
    implicit_ = t_.implicit && enc == WEnc::Offset && !direct_ && !flip && d_.dilation_w == 1 &&
                (d_.KW * d_.C) % B_.kgroup == 0 && d_.KH <= 64;
    if (implicit_) zero_ = make_aligned<uint8_t>(static_cast<size_t>(d_.KW * d_.C) + 64);
    // Rows per block: the block of A (MB x Kp bytes) stays in L2 next to a weight panel.
    MB_ = std::clamp<int64_t>((96 * 1024 / B_.Kp) / 4 * 4, 4, 256);
    MB_ = std::min<int64_t>(MB_, (M_ + 3) / 4 * 4);
  }

  std::string_view name() const override { return name_; }

  size_t scratch_bytes(int num_threads) const override {
    return static_cast<size_t>(std::max(1, num_threads)) * block_bytes();
  }

  void run(const KernelArgs& args, ThreadPool* pool) const override {
    check_io(args, 1, name_);
    const int threads = pool ? std::max(1, pool->num_threads()) : 1;
    check_scratch(args, scratch_bytes(threads), name_);
    with_gemm8_isa(isa_, [&]<class Tag>() { run_isa<Tag>(args, pool, threads); });
  }
  // Every block of rows as its last panel group finishes it (one panel group:
  // each work item; several: after the layer, over the pool).
  bool reports_done() const override { return true; }

 private:
  template <class Tag>
  void run_isa(const KernelArgs& args, ThreadPool* pool, int threads) const {
    const auto* in = static_cast<const uint8_t*>(args.inputs[0]);
    auto* out = static_cast<uint8_t*>(args.output);
    auto* scratch = static_cast<uint8_t*>(args.scratch);
    const int64_t nrb = (M_ + MB_ - 1) / MB_;
    int64_t npg = 1;
    if (threads > 1 && nrb < 2 * threads) npg = std::min<int64_t>(B_.npanels, (2 * threads + nrb - 1) / nrb);
    const size_t esz = out_elem_bytes(E_.kind);
    const int64_t run = d_.KW * d_.C;
    parallel_for(pool, nrb * npg, [&](int64_t begin, int64_t end, int t) {
      uint8_t* A = scratch + static_cast<size_t>(t) * block_bytes();
      auto* rc = reinterpret_cast<int32_t*>(A + round64(static_cast<size_t>(MB_ * B_.Kp) + 64));
      auto** segs = reinterpret_cast<const uint8_t**>(reinterpret_cast<uint8_t*>(rc) + round64(static_cast<size_t>(MB_) * 4));
      for (int64_t it = begin; it < end; ++it) {
        const int64_t rb = it / npg, pg = it % npg;
        const int64_t m0 = rb * MB_, mb = std::min(MB_, M_ - m0);
        GemmCall c;
        c.B = &B_;
        c.E = &E_;
        c.segs = segs;
        if (implicit_) {
          for (int64_t r = 0; r < mb; ++r) {
            const int64_t m = m0 + r;
            const int64_t n = m / (OH_ * OW_), rem = m % (OH_ * OW_);
            const int64_t oh = rem / OW_, ow = rem % OW_;
            const int64_t iw0 = ow * d_.stride_w - d_.pad_left;
            const uint8_t** rs = segs + r * d_.KH;
            if (iw0 >= 0 && iw0 + d_.KW - 1 < d_.W) {
              for (int64_t kh = 0; kh < d_.KH; ++kh) {
                const int64_t ih = oh * d_.stride_h - d_.pad_top + kh * d_.dilation_h;
                rs[kh] = (ih >= 0 && ih < d_.H) ? in + ((n * d_.H + ih) * d_.W + iw0) * d_.C : zero_.get();
              }
            } else {
              uint8_t* row = A + r * B_.Kp;
              gemm8_im2col<Tag>(ig_, in, m, 1, row);
              for (int64_t kh = 0; kh < d_.KH; ++kh) rs[kh] = row + kh * run;
            }
          }
          c.nseg = static_cast<int>(d_.KH);
          c.seg_groups = run / B_.kgroup;
          gemm8_rowcorr<Tag>(B_, segs, c.nseg, run, mb, rc);
        } else {
          const uint8_t* a = in + m0 * d_.C;
          int64_t lda = d_.C;
          if (!direct_) {
            gemm8_im2col<Tag>(ig_, in, m0, mb, A);
            a = A;
            lda = B_.Kp;
          }
          for (int64_t r = 0; r < mb; ++r) segs[r] = a + r * lda;
          c.nseg = 1;
          c.seg_groups = B_.ngroups;
          gemm8_rowcorr<Tag>(B_, segs, 1, B_.Kp, mb, rc);
        }
        c.rowcorr = rc;
        c.M = mb;
        c.out = out + static_cast<size_t>(m0 * d_.OC) * esz;
        c.ldo = d_.OC;
        c.p0 = pg * B_.npanels / npg;
        c.p1 = (pg + 1) * B_.npanels / npg;
        if (c.p0 >= c.p1) continue;
        gemm8_run<Tag>(c);
        if (args.done && npg == 1) (*args.done)(m0 * d_.OC, (m0 + mb) * d_.OC);
      }
    });
    if (args.done && npg > 1)
      parallel_for(pool, nrb, [&](int64_t b, int64_t e, int) {
        (*args.done)(b * MB_ * d_.OC, std::min(M_, e * MB_) * d_.OC);
      });
  }

  size_t block_bytes() const {
    return round64(static_cast<size_t>(MB_ * B_.Kp) + 64) + round64(static_cast<size_t>(MB_) * 4) +
           round64(static_cast<size_t>(MB_ * d_.KH) * sizeof(void*)) + 64;
  }

  std::string name_;
  Isa isa_;
  Gemm8Traits t_;
  ConvDesc d_;
  int64_t OH_ = 0, OW_ = 0, M_ = 0, K_ = 0, MB_ = 4;
  bool direct_ = false;
  bool implicit_ = false;
  AlignedArray<uint8_t> zero_;  // a zero kernel row (padding rows of the implicit conv)
  Im2col ig_;
  PackedB B_;
  Epilogue E_;
};

// Default MAC rates (MACs per ns, one thread). x86: measured with
// bbits-bench-kernels on an AMD EPYC Zen 4 (bench/kernels/README.md). NEON:
// estimates for a Cortex-A76-class core (4 sdot per cycle at ~2.4 GHz, a
// quarter of that without sdot), not measured here (`bbits calibrate`
// replaces them). The calibratable rate is the conv / batched GEMM rate;
// batch-1 fc (GEMV) is bounded by weight streaming or by its own in-register
// unpack ceiling (gemv_rate).
double default_gemm_rate(Isa isa, int kbits) {
  switch (isa) {
    case Isa::AVX512_VNNI: return kbits == 8 ? 215.0 : kbits == 4 ? 205.0 : 200.0;
    case Isa::AVX2: return kbits == 8 ? 22.0 : kbits == 4 ? 30.0 : 24.0;
    case Isa::NEON_DOTPROD: return kbits == 8 ? 60.0 : kbits == 4 ? 45.0 : 35.0;
    default: return kbits == 8 ? 12.0 : kbits == 4 ? 10.0 : 8.0;
  }
}
double gemv_rate(Isa isa, int kbits) {
  if (isa == Isa::AVX512_VNNI) return kbits == 8 ? 230.0 : kbits == 4 ? 150.0 : 180.0;
  return default_gemm_rate(isa, kbits);
}
double gemm_cost(const std::string& name, Isa isa, int kbits, const ConvDesc& c) {
  const Gemm8Traits t = gemm8_traits(isa);
  const double rate = std::max(1e-3, kernel_rate(name));
  const double macs = static_cast<double>(c.macs());
  const double K = static_cast<double>(c.K());
  const double wbytes = static_cast<double>(c.OC) * static_cast<double>(packed_row_bytes(c.K(), kbits));
  const double m = static_cast<double>(c.N * c.out_h() * c.out_w());
  const double outputs = m * static_cast<double>(c.OC);
  if (m <= 2.0) {  // GEMV: every weight byte streamed once per row
    return std::max(macs / gemv_rate(isa, kbits), wbytes * m / stream_bytes_per_ns(wbytes)) +
           outputs * kEpilogueNsPerOutput + kFixedNs;
  }
  const int kgroup = 32 / kbits;
  const bool flip = needs_flip(c.in, t);
  const bool direct = c.KH == 1 && c.KW == 1 && c.stride_h == 1 && c.stride_w == 1 && c.pad_top == 0 &&
                      c.pad_left == 0 && !flip && c.C % kgroup == 0;
  const bool implicit = t.implicit && !flip && c.dilation_w == 1 && (c.KW * c.C) % kgroup == 0;
  const double im2col = (direct || implicit) ? 0.0 : m * K / 4.0;
  // 8-bit outputs: packed bytes stored per row from the tile epilogue:
  // ~0.12 ns per output on Zen 4 (AVX-512).
  const bool packed = isa == Isa::AVX512_VNNI && c.out.bits <= 8;
  // A panel of nb < 4 blocks loads MR + nb vectors per MR * nb dot products:
  // relative efficiency ~ (nb / (nb + 1)) / (4 / 5) (measured: a 16-channel
  // layer runs at ~0.6 of the 64-channel rate).
  double panel_scale = 1.0;
  const double pw = 4.0 * t.lanes;
  if (t.lanes == 16 && std::fmod(static_cast<double>(c.OC), pw) != 0.0) {
    const double full = std::floor(static_cast<double>(c.OC) / pw) * pw;
    const double nb = std::ceil(std::fmod(static_cast<double>(c.OC), pw) / t.lanes);
    const double eff = (nb / (nb + 1.0)) / 0.8;
    panel_scale = (full + nb * t.lanes / eff) / static_cast<double>(c.OC);
  }
  return macs / rate * panel_scale + outputs * (packed ? 0.12 : kEpilogueNsPerOutput) + im2col + kFixedNs;
}

void add_gemm(std::vector<KernelInfo>& t, OpKind op, int kbits, Isa isa) {
  const Gemm8Traits tr = gemm8_traits(isa);
  KernelInfo k;
  const char* opn = op == OpKind::Conv2D ? "conv2d" : "fc";
  const std::string tile = std::to_string(tr.mr) + "x" + std::to_string(kGemm8Blocks * tr.lanes);
  k.name = std::string(opn) + "_w" + std::to_string(kbits) + "a8_u8s" + std::to_string(kbits) + "_" + isa_tag(isa) +
           "_" + tile;
  k.op = op;
  k.weight_bits = kbits;
  k.act_bits = 8;
  k.isa = isa;
  set_default_rate(k.name, default_gemm_rate(isa, kbits));
  k.supports = [op, kbits, isa](const OpDesc& d) {
    if (!cpu_has(isa)) return false;
    if (op == OpKind::Conv2D) {
      const auto* c = std::get_if<ConvDesc>(&d);
      return c && gemm_supports_conv(*c, kbits);
    }
    const auto* f = std::get_if<FcDesc>(&d);
    return f && gemm_supports_conv(fc_as_conv(*f), kbits);
  };
  k.cost_ns = [name = k.name, op, kbits, isa](const OpDesc& d) {
    if (op == OpKind::Conv2D) return gemm_cost(name, isa, kbits, std::get<ConvDesc>(d));
    return gemm_cost(name, isa, kbits, fc_as_conv(std::get<FcDesc>(d)));
  };
  k.create = [name = k.name, op, kbits, isa](const OpDesc& d, const Weights& w) -> std::unique_ptr<Kernel> {
    if (op == OpKind::Conv2D) {
      const auto* c = std::get_if<ConvDesc>(&d);
      if (!c) throw std::invalid_argument(name + ": not a conv2d: " + describe(d));
      return std::make_unique<GemmConv>(name, isa, kbits, *c, w);
    }
    const auto* f = std::get_if<FcDesc>(&d);
    if (!f) throw std::invalid_argument(name + ": not a fully connected layer: " + describe(d));
    check_desc(d);
    return std::make_unique<GemmConv>(name, isa, kbits, fc_as_conv(*f), w);
  };
  const std::string wide = kbits == 8 ? "; also runs 2/4-bit weights widened to int8" : "";
  switch (isa) {
    case Isa::AVX512_VNNI:
      k.note = kbits == 8 ? "vpdpbusd int8 GEMM/GEMV" + wide
                          : "packed " + std::to_string(kbits) + "-bit weights unpacked in registers (mask/shift) into vpdpbusd";
      break;
    case Isa::AVX2:
      k.note = kbits == 8 ? "AVX2 vpmaddubsw/vpmaddwd int8 GEMM (split activations, exact)" + wide
                          : "AVX2 packed " + std::to_string(kbits) + "-bit weights unpacked into vpmaddubsw";
      break;
    case Isa::NEON_DOTPROD:
      k.note = "NEON sdot GEMM/GEMV on int8 bytes (unsigned 8-bit activations - 128)" +
               (kbits == 8 ? wide : "; " + std::to_string(kbits) + "-bit weights unpacked in registers");
      break;
    default:
      k.note = "NEON smull + sadalp GEMM/GEMV on int8 bytes (unsigned 8-bit activations - 128)" +
               (kbits == 8 ? wide : "; " + std::to_string(kbits) + "-bit weights unpacked in registers");
      break;
  }
  t.push_back(std::move(k));
}

}  // namespace

void register_gemm8_kernels(std::vector<KernelInfo>& table) {
  for (Isa isa : kIsas) {
    if (!isa_built(isa)) continue;
    for (int kbits : {8, 4, 2}) {
      add_gemm(table, OpKind::FullyConnected, kbits, isa);
      add_gemm(table, OpKind::Conv2D, kbits, isa);
    }
  }
}

}  // namespace bbits::kernels::simd
