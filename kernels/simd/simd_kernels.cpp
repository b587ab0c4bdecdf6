// bbits SIMD kernels — portable drivers (im2col, threading, validation), cost
// model and the registration into the kernel table. Compiled without ISA
// flags: every ISA-specific call goes through the entry points of
// simd_internal.h and is reached only for kernels whose supports() checked
// the CPU.
#include <algorithm>
#include <cmath>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>

#include "bbits/kernels/cpu.h"
#include "bbits/kernels/simd.h"
#include "bbits/kernels/thread_pool.h"
#include "gemv_lut.h"
#include "simd_internal.h"
#include "simd_registry.h"

namespace bbits::kernels {
namespace simd {

bool cpu_has(Isa isa) { return isa_at_most(isa, max_supported_isa(cpu_features())); }

namespace {

size_t round64(size_t n) { return (n + 63) / 64 * 64; }

// memcpy / memset for the short runs of im2col (a call per 3..64 bytes costs
// more than the copy): 16-byte chunks, then the tail.
inline void copy_short(uint8_t* dst, const uint8_t* src, int64_t n) {
  for (; n >= 16; n -= 16, dst += 16, src += 16) std::memcpy(dst, src, 16);
  if (n >= 8) {
    std::memcpy(dst, src, 8);
    dst += 8, src += 8, n -= 8;
  }
  if (n >= 4) {
    std::memcpy(dst, src, 4);
    dst += 4, src += 4, n -= 4;
  }
  for (; n > 0; --n) *dst++ = *src++;
}
inline void fill_short(uint8_t* dst, uint8_t v, int64_t n) {
  for (; n > 0; --n) *dst++ = v;
}


// ---- cost-model rates ---------------------------------------------------------
struct Rates {
  std::mutex mu;
  std::map<std::string, double, std::less<>> defaults, calibrated;
};
Rates& rates() {
  static Rates r;
  return r;
}

double rate_of(std::string_view name) {
  Rates& r = rates();
  std::lock_guard<std::mutex> lock(r.mu);
  if (auto it = r.calibrated.find(name); it != r.calibrated.end()) return it->second;
  if (auto it = r.defaults.find(name); it != r.defaults.end()) return it->second;
  return 0.0;
}

// ---- integer GEMM conv / fc ------------------------------------------------------
// The limits of the GEMM kernels: integer weights at <= 8 bits, integer input
// at <= 8 bits (one byte), groups == 1, the reference's int32 accumulation, and
// K <= 65536 (the in-place field accumulators of the GEMV stay below 2^31).
bool gemm_supports_conv(const ConvDesc& c, int kbits) {
  if (c.wbits != 2 && c.wbits != 4 && c.wbits != 8) return false;
  if (c.wbits > kbits) return false;
  if (kbits < 8 && c.wbits != kbits) return false;
  if (!(c.in.bits == 2 || c.in.bits == 4 || c.in.bits == 8)) return false;
  if (!(c.out.bits == 2 || c.out.bits == 4 || c.out.bits == 8 || c.out.bits == 16 || c.out.bits == 32)) return false;
  if (c.groups != 1) return false;
  const int64_t K = c.K();
  if (K <= 0 || K > 65536) return false;
  const double wmax = static_cast<double>(qmax(c.wbits, true));
  const double imax = static_cast<double>(std::max(-qmin(c.in.bits, c.in.is_signed), qmax(c.in.bits, c.in.is_signed)));
  return wmax * imax * static_cast<double>(K) < 2147483647.0;
}

// The optional tables of the fused GEMM tile epilogue (see Epilogue). The
// folded constant is exact: without `wide`, acc + colterm stays in int32, so
// (acc + colterm) * m + round = acc * m + (colterm * m + round) in 64 bits.
void add_tile_tables(Epilogue& E, int64_t OCp) {
  if (!E.small_mult || E.wide || !(E.kind == OutKind::U8 || E.kind == OutKind::S8)) return;
  const auto OC16 = static_cast<size_t>((OCp + 15) / 16 * 16);
  E.cround_eo = make_aligned<int64_t>(OC16);
  E.shift_eo32 = make_aligned<int64_t>(OC16);
  E.shift_ge32 = true;
  for (int64_t oc = 0; oc < E.OC; ++oc) E.shift_ge32 = E.shift_ge32 && E.shift[oc] >= 32;
  for (int64_t oc = 0; oc < OCp; ++oc) {
    const int64_t blk = oc / 16 * 16, l = oc % 16;
    const int64_t pos = blk + (l % 2 == 0 ? l / 2 : 8 + l / 2);
    E.cround_eo[pos] = static_cast<int64_t>(E.colterm[oc]) * E.mult[oc] + E.round[oc];
    E.shift_eo32[pos] = l % 2 == 1 && E.shift_ge32 ? E.shift[oc] - 32 : E.shift[oc];
  }
}

class GemmConv final : public Kernel {
 public:
  GemmConv(std::string name, Isa isa, int kbits, const ConvDesc& d, const Weights& w)
      : name_(std::move(name)), isa_(isa), d_(d) {
    check_desc(d_);
    if (!gemm_supports_conv(d_, kbits)) throw std::invalid_argument(name_ + ": cannot run " + describe(d_));
    if (!cpu_has(isa_)) throw std::invalid_argument(name_ + ": this CPU lacks " + std::string(isa_name(isa_)));
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
    const bool vnni = isa_ == Isa::AVX512_VNNI;
    const WEnc enc = vnni && M_ <= 2 ? WEnc::TopRaw : WEnc::Offset;
    B_ = pack_weights(w.data, row, d_.wbits, d_.OC, K_, kbits, vnni ? 16 : 8, 4, enc);
    E_ = make_epilogue(d_.OC, B_.OCp, K_, d_.wbits, w, d_.in, d_.out, d_.activation, B_.wsum, name_);
    if (vnni) add_tile_tables(E_, B_.OCp);
    direct_ = d_.KH == 1 && d_.KW == 1 && d_.stride_h == 1 && d_.stride_w == 1 && d_.pad_top == 0 &&
              d_.pad_left == 0 && d_.pad_bottom == 0 && d_.pad_right == 0 && !d_.in.is_signed && d_.C == B_.Kp;
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
    ig_.sgn = d_.in.is_signed;
    // Implicit convolution (no im2col): every kernel row of a pixel is one
    // contiguous run of KW * C input bytes; only pixels whose window crosses
    // the left / right border are gathered.
    implicit_ = vnni && enc == WEnc::Offset && !direct_ && !d_.in.is_signed && d_.dilation_w == 1 &&
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
    if (args.inputs.size() != 1)
      throw std::invalid_argument(name_ + ": expected 1 input, got " + std::to_string(args.inputs.size()));
    const int threads = pool ? std::max(1, pool->num_threads()) : 1;
    if (args.inputs[0] == nullptr || args.output == nullptr)
      throw std::invalid_argument(name_ + ": null input or output");
    if (args.scratch_size < scratch_bytes(threads) || (args.scratch == nullptr && scratch_bytes(threads) > 0))
      throw std::invalid_argument(name_ + ": scratch of " + std::to_string(args.scratch_size) + " bytes, " +
                                  std::to_string(scratch_bytes(threads)) + " needed");
    const auto* in = static_cast<const uint8_t*>(args.inputs[0]);
    auto* out = static_cast<uint8_t*>(args.output);
    auto* scratch = static_cast<uint8_t*>(args.scratch);
    const int64_t nrb = (M_ + MB_ - 1) / MB_;
    int64_t npg = 1;
    if (threads > 1 && nrb < 2 * threads) npg = std::min<int64_t>(B_.npanels, (2 * threads + nrb - 1) / nrb);
    const size_t esz = out_elem_bytes(E_.kind);
    parallel_for(pool, nrb * npg, [&](int64_t begin, int64_t end, int t) {
      uint8_t* A = scratch + static_cast<size_t>(t) * block_bytes();
      auto* rc = reinterpret_cast<int32_t*>(A + round64(static_cast<size_t>(MB_ * B_.Kp) + 64));
      for (int64_t it = begin; it < end; ++it) {
        const int64_t rb = it / npg, pg = it % npg;
        const int64_t m0 = rb * MB_, mb = std::min(MB_, M_ - m0);
        GemmCall c;
        c.B = &B_;
        c.E = &E_;
        if (direct_) {
          c.A = in + m0 * d_.C;
          c.lda = d_.C;
        } else if (implicit_) {
          auto** segs = reinterpret_cast<const uint8_t**>(reinterpret_cast<uint8_t*>(rc) + round64(static_cast<size_t>(MB_) * 4));
          const int64_t run = d_.KW * d_.C;
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
              im2col_avx512(ig_, in, m, 1, row);
              for (int64_t kh = 0; kh < d_.KH; ++kh) rs[kh] = row + kh * run;
            }
          }
          rowcorr_segs_avx512(B_, segs, static_cast<int>(d_.KH), run, mb, rc);
          c.segs = segs;
          c.nseg = static_cast<int>(d_.KH);
          c.seg_groups = run / B_.kgroup;
          c.A = A;
          c.lda = B_.Kp;
        } else if (isa_ == Isa::AVX512_VNNI) {
          im2col_avx512(ig_, in, m0, mb, A);
          c.A = A;
          c.lda = B_.Kp;
        } else {
          im2col(in, m0, mb, A);
          c.A = A;
          c.lda = B_.Kp;
        }
        if (!implicit_) {
          if (isa_ == Isa::AVX512_VNNI) rowcorr_avx512(B_, c.A, c.lda, mb, rc);
          else rowcorr_avx2(B_, c.A, c.lda, mb, rc);
        }
        c.rowcorr = rc;
        c.M = mb;
        c.out = out + static_cast<size_t>(m0 * d_.OC) * esz;
        c.ldo = d_.OC;
        c.p0 = pg * B_.npanels / npg;
        c.p1 = (pg + 1) * B_.npanels / npg;
        if (c.p0 >= c.p1) continue;
        if (isa_ == Isa::AVX512_VNNI) gemm_avx512vnni(c);
        else gemm_avx2(c);
      }
    });
  }

 private:
  size_t block_bytes() const {
    return round64(static_cast<size_t>(MB_ * B_.Kp) + 64) + round64(static_cast<size_t>(MB_) * 4) +
           round64(static_cast<size_t>(MB_ * d_.KH) * sizeof(void*)) + 64;
  }

  // Rows [m0, m0 + mb) of the im2col matrix (kh, kw, ci order), unsigned
  // (signed input + 128), spatial padding = the value 0, zero past K.
  void im2col(const uint8_t* in, int64_t m0, int64_t mb, uint8_t* A) const {
    const ConvDesc& d = d_;
    const bool sgn = d.in.is_signed;
    const uint8_t pad = sgn ? 0x80 : 0x00;
    const int64_t C = d.C;
    for (int64_t r = 0; r < mb; ++r) {
      const int64_t m = m0 + r;
      const int64_t n = m / (OH_ * OW_), rem = m % (OH_ * OW_);
      const int64_t oh = rem / OW_, ow = rem % OW_;
      uint8_t* dst = A + r * B_.Kp;
      int64_t k = 0;
      for (int64_t kh = 0; kh < d.KH; ++kh) {
        const int64_t ih = oh * d.stride_h - d.pad_top + kh * d.dilation_h;
        const int64_t iw0 = ow * d.stride_w - d.pad_left;
        const int64_t iw_last = iw0 + (d.KW - 1) * d.dilation_w;
        if (!sgn && d.dilation_w == 1 && ih >= 0 && ih < d.H && iw0 >= 0 && iw_last < d.W) {
          // The whole kernel row is one contiguous run of KW * C input bytes (NHWC).
          copy_short(dst + k, in + ((n * d.H + ih) * d.W + iw0) * C, d.KW * C);
          k += d.KW * C;
          continue;
        }
        for (int64_t kw = 0; kw < d.KW; ++kw) {
          const int64_t iw = iw0 + kw * d.dilation_w;
          if (ih < 0 || ih >= d.H || iw < 0 || iw >= d.W) {
            fill_short(dst + k, pad, C);
          } else {
            const uint8_t* src = in + ((n * d.H + ih) * d.W + iw) * C;
            if (sgn) {
              for (int64_t c = 0; c < C; ++c) dst[k + c] = static_cast<uint8_t>(src[c] ^ 0x80u);
            } else {
              copy_short(dst + k, src, C);
            }
          }
          k += C;
        }
      }
      fill_short(dst + k, 0, B_.Kp - k);
    }
  }

  std::string name_;
  Isa isa_;
  ConvDesc d_;
  int64_t OH_ = 0, OW_ = 0, M_ = 0, K_ = 0, MB_ = 4;
  bool direct_ = false;
  bool implicit_ = false;
  AlignedArray<uint8_t> zero_;  // a zero kernel row (padding rows of the implicit conv)
  Im2col ig_;
  PackedB B_;
  Epilogue E_;
};

std::string isa_tag(Isa isa) { return isa == Isa::AVX512_VNNI ? "avx512vnni" : "avx2"; }

// Default MAC rates (MACs per ns, one thread), measured with bbits-bench-kernels
// on an AMD EPYC Zen 4 (bench/kernels/README.md). The calibratable rate is the
// conv / batched GEMM rate; batch-1 fc (GEMV) is bounded by weight streaming
// or by its own in-register unpack ceiling (gemv_rate).
double default_gemm_rate(Isa isa, int kbits) {
  if (isa == Isa::AVX512_VNNI) return kbits == 8 ? 215.0 : kbits == 4 ? 205.0 : 200.0;
  return kbits == 8 ? 22.0 : kbits == 4 ? 30.0 : 24.0;
}
double gemv_rate(Isa isa, int kbits) {
  if (isa == Isa::AVX512_VNNI) return kbits == 8 ? 230.0 : kbits == 4 ? 150.0 : 180.0;
  return kbits == 8 ? 22.0 : kbits == 4 ? 30.0 : 24.0;
}
// Single-thread weight streaming rate (bytes per ns) by working set: L2, L3, DRAM.
double stream_bytes_per_ns(double wbytes) {
  if (wbytes <= 1.0e6) return 85.0;
  if (wbytes <= 24.0e6) return 55.0;
  return 25.0;
}
constexpr double kFixedNs = 300.0;
constexpr double kEpilogueNsPerOutput = 0.2;  // fused requantization + store

double gemm_cost(const std::string& name, Isa isa, int kbits, const ConvDesc& c) {
  const double rate = std::max(1e-3, rate_of(name));
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
  const bool direct = c.KH == 1 && c.KW == 1 && c.stride_h == 1 && c.stride_w == 1 && c.pad_top == 0 &&
                      c.pad_left == 0 && !c.in.is_signed && c.C % kgroup == 0;
  const bool implicit = isa == Isa::AVX512_VNNI && !c.in.is_signed && c.dilation_w == 1 &&
                        (c.KW * c.C) % kgroup == 0;
  const double im2col = (direct || implicit) ? 0.0 : m * K / 4.0;
  // 8-bit outputs: packed bytes stored per row from the tile epilogue
  // (finish_tile): ~0.12 ns per output on Zen 4.
  const bool packed = isa == Isa::AVX512_VNNI && c.out.bits <= 8;
  // A panel of nb < 4 blocks loads MR + nb vectors per MR * nb dot products:
  // relative efficiency ~ (nb / (nb + 1)) / (4 / 5) (measured: a 16-channel
  // layer runs at ~0.6 of the 64-channel rate).
  double panel_scale = 1.0;
  if (isa == Isa::AVX512_VNNI && c.OC % 64 != 0) {
    const double full = static_cast<double>(c.OC / 64) * 64.0;
    const double nb = std::ceil(static_cast<double>(c.OC % 64) / 16.0);
    const double eff = (nb / (nb + 1.0)) / 0.8;
    panel_scale = (full + nb * 16.0 / eff) / static_cast<double>(c.OC);
  }
  return macs / rate * panel_scale + outputs * (packed ? 0.12 : kEpilogueNsPerOutput) + im2col + kFixedNs;
}

void add_gemm(std::vector<KernelInfo>& t, OpKind op, int kbits, Isa isa) {
  KernelInfo k;
  const char* opn = op == OpKind::Conv2D ? "conv2d" : "fc";
  const std::string tile = isa == Isa::AVX512_VNNI ? "4x64" : "2x32";
  k.name = std::string(opn) + "_w" + std::to_string(kbits) + "a8_u8s" + std::to_string(kbits) + "_" + isa_tag(isa) +
           "_" + tile;
  k.op = op;
  k.weight_bits = kbits;
  k.act_bits = 8;
  k.isa = isa;
  {
    Rates& r = rates();
    std::lock_guard<std::mutex> lock(r.mu);
    r.defaults[k.name] = default_gemm_rate(isa, kbits);
  }
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
  if (isa == Isa::AVX512_VNNI) {
    k.note = kbits == 8 ? "vpdpbusd int8 GEMM/GEMV; also runs 2/4-bit weights widened to int8"
                        : "packed " + std::to_string(kbits) +
                              "-bit weights unpacked in registers (mask/shift) into vpdpbusd";
  } else {
    k.note = kbits == 8 ? "AVX2 vpmaddubsw/vpmaddwd int8 GEMM (split activations, exact); also runs 2/4-bit weights"
                        : "AVX2 packed " + std::to_string(kbits) + "-bit weights unpacked into vpmaddubsw";
  }
  t.push_back(std::move(k));
}

// ---- lookup-table fc: 2-bit weights x 2-bit unsigned activations -------------------
// (gemv_lut.h). Batch-1 GEMV; N > 1 rows run one after the other (the plan
// gives batched layers to the GEMM kernels, whose cost grows slower with N).
bool lut_cpu() {
  const CpuFeatures& f = cpu_features();
  return cpu_has(Isa::AVX512) && f.avx512_vbmi;
}
bool lut_supports(const FcDesc& f) {
  if (f.wbits != 2 || f.in.bits != 2 || f.in.is_signed) return false;
  if (!(f.out.bits == 2 || f.out.bits == 4 || f.out.bits == 8 || f.out.bits == 16 || f.out.bits == 32)) return false;
  return f.N >= 1 && f.K >= 1 && f.K <= 65536 && f.OC >= 1;
}
constexpr const char* kLutName = "fc_w2a2_u2s2_avx512vbmi_lut";
// MACs per ns of the table lookups (one thread): bbits-bench-kernels
// fc/4096x4096/w2a2_lut on the Zen 4 host measured 234 (2-bit VNNI GEMV on
// the same layer in the same run: 193).
constexpr double kLutDefaultRate = 230.0;
// Per input row: range check, sum and table offsets (bytes per ns).
constexpr double kLutPrepBytesPerNs = 16.0;

double lut_cost(const FcDesc& f) {
  const double rate = std::max(1e-3, rate_of(kLutName));
  const double n = static_cast<double>(f.N);
  const double wbytes = static_cast<double>(f.OC) * static_cast<double>(packed_row_bytes(f.K, 2));
  const double per_row = std::max(static_cast<double>(f.K * f.OC) / rate, wbytes / stream_bytes_per_ns(wbytes)) +
                         static_cast<double>(f.K) / kLutPrepBytesPerNs;
  return n * per_row + n * static_cast<double>(f.OC) * kEpilogueNsPerOutput + kFixedNs;
}

class LutFc final : public Kernel {
 public:
  LutFc(std::string name, const FcDesc& d, const Weights& w) : name_(std::move(name)), d_(d) {
    check_desc(d_);
    if (!lut_supports(d_)) throw std::invalid_argument(name_ + ": cannot run " + describe(d_));
    if (!lut_cpu()) throw std::invalid_argument(name_ + ": this CPU lacks AVX-512 BW / VBMI");
    const size_t row = packed_row_bytes(d_.K, 2);
    const size_t need = row * static_cast<size_t>(d_.OC);
    if (w.data == nullptr || w.size < need)
      throw std::invalid_argument(name_ + ": weights hold " + std::to_string(w.size) + " bytes, " +
                                  std::to_string(need) + " needed for " + std::to_string(d_.OC) + " rows of " +
                                  std::to_string(d_.K) + " values at 2 bits");
    B_ = pack_lut_w2(w.data, row, d_.OC, d_.K);
    const ConvDesc c = fc_as_conv(d_);
    E_ = make_epilogue(d_.OC, B_.OCp, d_.K, 2, w, c.in, c.out, c.activation, B_.wsum, name_);
  }

  std::string_view name() const override { return name_; }

  size_t scratch_bytes(int) const override { return round64(static_cast<size_t>(B_.Kq) * 4 + 64); }

  void run(const KernelArgs& args, ThreadPool* pool) const override {
    if (args.inputs.size() != 1)
      throw std::invalid_argument(name_ + ": expected 1 input, got " + std::to_string(args.inputs.size()));
    if (args.inputs[0] == nullptr || args.output == nullptr) throw std::invalid_argument(name_ + ": null input or output");
    if (args.scratch == nullptr || args.scratch_size < scratch_bytes(1))
      throw std::invalid_argument(name_ + ": scratch of " + std::to_string(args.scratch_size) + " bytes, " +
                                  std::to_string(scratch_bytes(1)) + " needed");
    const auto* in = static_cast<const uint8_t*>(args.inputs[0]);
    auto* out = static_cast<uint8_t*>(args.output);
    auto* offs = static_cast<uint32_t*>(args.scratch);
    const size_t esz = out_elem_bytes(E_.kind);
    for (int64_t n = 0; n < d_.N; ++n) {
      int64_t asum = 0;
      const int64_t bad = lut_prepare_row_avx512vbmi(in + n * d_.K, d_.K, offs, &asum);
      if (bad >= 0)
        throw std::invalid_argument(name_ + ": input value " + std::to_string(in[n * d_.K + bad]) + " at row " +
                                    std::to_string(n) + ", index " + std::to_string(bad) +
                                    " is outside the unsigned 2-bit range [0, 3]");
      const auto rowcorr = static_cast<int32_t>(static_cast<uint32_t>(2 * asum));
      uint8_t* orow = out + static_cast<size_t>(n * d_.OC) * esz;
      parallel_for(pool, B_.npanels, [&](int64_t b, int64_t e, int) {
        lut_gemv_avx512vbmi(B_, E_, offs, rowcorr, orow, b, e);
      });
    }
  }

 private:
  std::string name_;
  FcDesc d_;
  LutWeights B_;
  Epilogue E_;
};

void add_lut(std::vector<KernelInfo>& t) {
  KernelInfo k;
  k.name = kLutName;
  k.op = OpKind::FullyConnected;
  k.weight_bits = 2;
  k.act_bits = 2;
  k.isa = Isa::AVX512;
  {
    Rates& r = rates();
    std::lock_guard<std::mutex> lock(r.mu);
    r.defaults[k.name] = kLutDefaultRate;
  }
  k.supports = [](const OpDesc& d) {
    const auto* f = std::get_if<FcDesc>(&d);
    return f && lut_cpu() && lut_supports(*f);
  };
  k.cost_ns = [](const OpDesc& d) { return lut_cost(std::get<FcDesc>(d)); };
  k.create = [](const OpDesc& d, const Weights& w) -> std::unique_ptr<Kernel> {
    const auto* f = std::get_if<FcDesc>(&d);
    if (!f) throw std::invalid_argument(std::string(kLutName) + ": not a fully connected layer: " + describe(d));
    return std::make_unique<LutFc>(kLutName, *f, w);
  };
  k.note = "2-bit weights x 2-bit activations: vpermb lookups in 16 constant tables of 2-value partial sums, "
           "exact byte/16/32-bit sums (batch-1 fc)";
  t.push_back(std::move(k));
}

}  // namespace
}  // namespace simd

void register_simd_kernels(std::vector<KernelInfo>& table) {
  for (Isa isa : {Isa::AVX512_VNNI, Isa::AVX2})
    for (int kbits : {8, 4, 2}) {
      simd::add_gemm(table, OpKind::FullyConnected, kbits, isa);
      simd::add_gemm(table, OpKind::Conv2D, kbits, isa);
    }
  simd::add_lut(table);
  simd::register_extra_kernels(table);
}

void set_simd_kernel_rate(std::string_view kernel_name, double macs_per_ns) {
  simd::Rates& r = simd::rates();
  std::lock_guard<std::mutex> lock(r.mu);
  if (macs_per_ns > 0.0 && std::isfinite(macs_per_ns)) r.calibrated[std::string(kernel_name)] = macs_per_ns;
  else r.calibrated.erase(std::string(kernel_name));
}

double simd_kernel_rate(std::string_view kernel_name) { return simd::rate_of(kernel_name); }

std::vector<std::string> simd_kernel_names() {
  simd::Rates& r = simd::rates();
  std::lock_guard<std::mutex> lock(r.mu);
  std::vector<std::string> names;
  for (const auto& [k, v] : r.defaults) names.push_back(k);
  return names;
}

namespace simd {
void set_default_rate(const std::string& name, double macs_per_ns) {
  Rates& r = rates();
  std::lock_guard<std::mutex> lock(r.mu);
  r.defaults[name] = macs_per_ns;
}
double kernel_rate(std::string_view name) { return rate_of(name); }
}  // namespace simd

}  // namespace bbits::kernels
