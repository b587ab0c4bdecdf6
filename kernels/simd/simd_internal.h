// bbits SIMD kernels — internal interfaces shared by the portable drivers
// (simd_kernels.cpp, compiled without ISA flags) and the ISA-specific
// translation units (gemm_avx512vnni.cpp, gemm_avx2.cpp, ... compiled with
// per-file -m flags and only ever called after run-time CPU detection).
//
// Integer GEMM scheme (every bit width runs through the same dot product):
//   A (activations): rows of Kp unsigned bytes, zero padded past K. A signed
//     input is stored as x + 128 (xor 0x80); its -128 * sum_k w[oc][k] term is
//     folded into the per-channel constant `colterm`.
//   B (weights): "prepacked" at create time from the model's packed rows into
//     panels of nb_max blocks of `lanes` output channels. One 32-bit lane of a
//     vector holds, for one output channel, `kgroup` = 32 / bits consecutive
//     reduction values: byte i, bit field j holds k = g * kgroup + 4 * j + i.
//     So the activations multiplying field j of group g are the 4 bytes at
//     A[g * kgroup + 4 * j], broadcast to every lane.
//   Encodings of a field (bits < 8):
//     Offset: u = w + 2^(bits-1) in [0, 2^bits - 1] (unsigned, fits the s8
//             operand of vpdpbusd / vpmaddubsw without saturation at <= 4 bits).
//     TopRaw: like Offset, except the top field of each byte holds w in two's
//             complement, so that (byte & top_mask) read as int8 equals
//             w * 2^(8 - bits) exactly; lower fields are read in place
//             (byte & field_mask = u * 2^(j * bits)) into separate accumulators
//             that are shifted back at the end (exact: each is a multiple).
//   The offsets add off * sum(A over offset-encoded positions) per row: the
//   per-row correction `rowcorr`, computed from the packed A itself.
//   At 8 bits the byte is the int8 weight (no offset).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <new>
#include <vector>

#include "bbits/kernels/kernels.h"

namespace bbits::kernels::simd {

struct AlignedFree {
  void operator()(void* p) const { std::free(p); }
};
template <class T>
using AlignedArray = std::unique_ptr<T[], AlignedFree>;

// Zero-initialised, 64-byte aligned, rounded up to whole cache lines.
template <class T>
AlignedArray<T> make_aligned(size_t n) {
  size_t bytes = ((n * sizeof(T) + 63) / 64) * 64;
  if (bytes == 0) bytes = 64;
  void* p = std::aligned_alloc(64, bytes);
  if (p == nullptr) throw std::bad_alloc();
  std::memset(p, 0, bytes);
  return AlignedArray<T>(static_cast<T*>(p));
}

enum class WEnc : uint8_t { Offset, TopRaw };

// Prepacked weights of one conv / fc layer (see the scheme above).
struct PackedB {
  int bits = 8;     // 2, 4, 8
  int lanes = 16;   // output channels per block (16: zmm, 8: ymm)
  int nb_max = 4;   // blocks per panel
  int kgroup = 4;   // reduction values per 32-bit lane: 32 / bits
  int fields = 1;   // bit fields per byte: 8 / bits
  WEnc enc = WEnc::Offset;
  int64_t K = 0, Kp = 0;  // Kp: K rounded up to a multiple of kgroup
  int64_t OC = 0, OCp = 0, nblocks = 0, npanels = 0;
  int64_t ngroups = 0;        // Kp / kgroup
  int64_t panel_stride = 0;   // bytes of a full panel; panel p starts at p * panel_stride
  size_t bytes = 0;           // bytes of packed data
  AlignedArray<uint8_t> data;
  std::vector<int32_t> wsum;  // per output channel (OCp): sum_k w (true values)

  int32_t offset() const { return bits < 8 ? (1 << (bits - 1)) : 0; }
  int panel_blocks(int64_t p) const {
    const int64_t left = nblocks - p * nb_max;
    return static_cast<int>(left < nb_max ? left : nb_max);
  }
  const uint8_t* panel(int64_t p) const { return data.get() + p * panel_stride; }
  // True when reduction position k (0 <= k < Kp) is offset-encoded.
  bool offset_position(int64_t k) const {
    if (bits == 8) return false;
    if (enc == WEnc::Offset) return true;
    return (k % kgroup) < 4 * (fields - 1);
  }
};

// rows: OC rows of the model's packed weights (row_bytes = packed_row_bytes(K, bits)).
// rows: OC rows of the model's packed weights at src_bits (row_bytes =
// packed_row_bytes(K, src_bits)); packed at `bits` >= src_bits (an 8-bit kernel
// runs 2/4-bit weights widened to int8).
PackedB pack_weights(const uint8_t* rows, size_t row_bytes, int src_bits, int64_t OC, int64_t K, int bits,
                     int lanes, int nb_max, WEnc enc);

enum class OutKind : uint8_t { U8, S8, U16, S16, F32 };

// Everything after the dot product: corrections, bias, requantization, clamp,
// activation and the store, per output channel (arrays padded to OCp).
struct Epilogue {
  OutKind kind = OutKind::U8;
  int64_t OC = 0;
  // -128 * wsum (signed input) + bias_q (integer out, when !wide), wrapping int32.
  AlignedArray<int32_t> colterm;
  // wide: |acc| + |bias| may exceed int32; the epilogue then adds bias64 in
  // 64 bits (scalar path), exactly as the reference does.
  bool wide = false;
  std::vector<int64_t> bias64;
  // Sub-step part of a float bias (bias_fraction), already included in round.
  std::vector<int64_t> bfrac;
  AlignedArray<int64_t> mult;     // requant multiplier m (integer out)
  AlignedArray<int64_t> round;    // 2^(s-1) or 0
  AlignedArray<int64_t> shift;    // s
  int64_t lo = 0, hi = 0;
  // Layout for the 16-lane AVX-512 epilogue: mult32[oc] = m (int32); per block
  // of 16 channels, round_eo / shift_eo hold the 8 even channels then the 8
  // odd ones (as int64), matching vpmuldq on even / odd 32-bit lanes.
  AlignedArray<int32_t> mult32;
  AlignedArray<int64_t> round_eo, shift_eo;
  // Optional, filled by the GEMM conv driver (add_tile_tables) for the fused
  // 8-bit GEMM tile epilogue: cround_eo = colterm * m + round (64 bits, eo
  // layout: the colterm add folded into the rounding constant), and when
  // shift_ge32 (every shift >= 32) shift_eo32 = shift_eo with the odd lanes
  // shifting by s - 32 (their result lands in the high half directly).
  AlignedArray<int64_t> cround_eo, shift_eo32;
  bool shift_ge32 = false;
  // Every real multiplier <= 1: requantized values fit int32 (clamp in 32 bits).
  bool small_mult = false;
  // Multipliers above 1 with 8-bit outputs: per channel (OC16 entries, zero
  // past OC), the int32 range [pre_lo, pre_hi] of a = acc + colterm - rowcorr
  // outside of which the output is clamped anyway: a_lo the largest a whose
  // requantized value is <= lo, a_hi the smallest whose value is >= hi (clipped
  // to int32). Clamping a to it first keeps every output byte and keeps the
  // requantized value within int32, so the 32-bit epilogue applies. Empty when
  // small_mult (or for outputs other than 8-bit, or wide sums).
  AlignedArray<int32_t> pre_lo, pre_hi;
  // Float output (as the reference): out = act(float(double(acc) * mul[oc] + double(bias_f[oc]))),
  // mul[oc] = double(s_w[oc]) * double(s_in).
  std::vector<double> mul;
  std::vector<float> bias_f;
  Activation act = Activation::None;
};

// Builds the epilogue of an integer conv / fc (K values per row, weights at
// wbits). wsum from the packed weights. Validates scales and biases.
Epilogue make_epilogue(int64_t OC, int64_t OCp, int64_t K, int wbits, const Weights& w, const QuantInfo& in,
                       const QuantInfo& out, Activation act, const std::vector<int32_t>& wsum,
                       const std::string& who);
// Fills E.pre_lo / E.pre_hi (see Epilogue).
void add_pre_clamp(Epilogue& E, size_t OC16);

// One call of the GEMM driver: rows [0, M) of A against panels [p0, p1).
struct GemmCall {
  const PackedB* B = nullptr;
  const Epilogue* E = nullptr;
  const uint8_t* A = nullptr;
  int64_t lda = 0;
  const int32_t* rowcorr = nullptr;  // M values
  int64_t M = 0;
  void* out = nullptr;  // row m, channel oc at element m * ldo + oc
  int64_t ldo = 0;
  int64_t p0 = 0, p1 = 0;
  // Optional (VNNI, Offset encoding): rows as nseg segments of seg_groups
  // groups each, segs[m * nseg + s] (implicit convolution without im2col).
  const uint8_t* const* segs = nullptr;
  int nseg = 1;
  int64_t seg_groups = 0;
};

// im2col geometry: rows of Kp bytes, (kh, kw, ci) order, signed input stored
// + 128 (spatial padding = the value 0), zero past K.
struct Im2col {
  int64_t N = 1, H = 0, W = 0, C = 0, OH = 0, OW = 0, KH = 1, KW = 1, K = 0, Kp = 0;
  int64_t sh = 1, sw = 1, pt = 0, pl = 0, dh = 1, dw = 1;
  bool sgn = false;
};
// Rows [m0, m0 + mb) of the im2col matrix into A (row stride g.Kp); may
// write up to 64 bytes past the last row (the caller leaves that slack).
void im2col_avx512(const Im2col& g, const uint8_t* in, int64_t m0, int64_t mb, uint8_t* A);

// ISA entry points (defined only in their own translation units).
void gemm_avx512vnni(const GemmCall& c);
void gemm_avx2(const GemmCall& c);
// rowcorr[m] = B.offset() * sum of A[m][k] over offset positions k < Kp.
void rowcorr_avx512(const PackedB& B, const uint8_t* A, int64_t lda, int64_t M, int32_t* rowcorr);
void rowcorr_segs_avx512(const PackedB& B, const uint8_t* const* segs, int nseg, int64_t seg_bytes, int64_t M,
                         int32_t* rowcorr);
void rowcorr_avx2(const PackedB& B, const uint8_t* A, int64_t lda, int64_t M, int32_t* rowcorr);

// Epilogue of M full rows of OC int32 accumulators (row stride OC) into `out`
// (row stride OC), rows split over the pool. No row corrections.
void epilogue_rows_avx512(const int32_t* acc, int64_t M, const Epilogue& E, void* out, ThreadPool* pool);

// Epilogue of one row segment (n <= 64 channels from oc0; acc[0..n) holds the
// sums of channels oc0..oc0+n-1): corrections, requantization, store.
void epilogue_row_avx512(const int32_t* acc, int64_t oc0, int64_t n, int32_t rowcorr, const Epilogue& E,
                         void* out_row);
void epilogue_row_avx2(const int32_t* acc, int64_t oc0, int64_t n, int32_t rowcorr, const Epilogue& E,
                       void* out_row);

// ---- depthwise conv -------------------------------------------------------------
// Weights prepacked per block of 64 channels (VNNI: 4 taps interleaved per
// 32-bit lane in the order the activation unpack produces) or 8 channels
// (AVX2: int32 per tap).
// Argument checks of Kernel::run (std::invalid_argument naming the kernel):
// n_inputs non-null inputs and a non-null output; a scratch of >= need bytes.
void check_io(const KernelArgs& a, size_t n_inputs, const std::string& name);
void check_scratch(const KernelArgs& a, size_t need, const std::string& name);

// The window geometry of a depthwise convolution (8- and 16-bit kernels).
struct DwShape {
  int64_t N = 1, H = 0, W = 0, C = 0, OH = 0, OW = 0;
  int KH = 1, KW = 1, sh = 1, sw = 1, pt = 0, pl = 0, dh = 1, dw = 1;
};
// Fills g from a depthwise ConvDesc, and checks that `w` holds the C packed
// rows of KH*KW weights (std::invalid_argument naming `kernel` otherwise).
void set_dw_shape(DwShape& g, const ConvDesc& d, const Weights& w, const std::string& kernel);
struct DwGeom : DwShape {
  bool is_signed = false;
};
struct DwPacked {
  int64_t taps = 0, tgroups = 0, cblocks = 0;
  AlignedArray<int8_t> w8;    // VNNI: [cblock][tgroup][4][64]
  AlignedArray<int32_t> w32;  // AVX2: [cblock8][tap][8]
};
// Output rows [r0, r1) of N*OH.
void dwconv_rows_avx512vnni(const DwGeom& g, const DwPacked& P, const Epilogue& E, const uint8_t* in, void* out,
                            int64_t r0, int64_t r1);
void dwconv_rows_avx2(const DwGeom& g, const DwPacked& P, const Epilogue& E, const uint8_t* in, void* out,
                      int64_t r0, int64_t r1);

// ---- elementwise on 8-bit data --------------------------------------------------
// out[i] = clamp(rq(a[i], Ra) + rq(b[i], Rb), lo, hi), 8-bit in / out.
// out = clamp((a*ma << da) + (b*mb << db) + round) >> shift): the sum of both
// sides rounded once (apply_requant_sum), 64-bit exact when da, db <= 15.
struct AddParams {
  bool a_signed = false, b_signed = false, out_signed = false;
  int64_t ma = 0, da = 0, mb = 0, db = 0, round = 0, shift = 0;
  int32_t lo = 0, hi = 0;
};
void add_u8_avx512(const AddParams& p, const uint8_t* a, const uint8_t* b, uint8_t* out, int64_t n);
void add_u8_avx2(const AddParams& p, const uint8_t* a, const uint8_t* b, uint8_t* out, int64_t n);

// Max pool over 8-bit NHWC: output rows [r0, r1) of N*OH; requant (identity
// when `identity`) and clamp to [lo, hi].
struct MaxPoolParams {
  int64_t N = 1, H = 0, W = 0, C = 0, OH = 0, OW = 0;
  int KH = 1, KW = 1, sh = 1, sw = 1, pt = 0, pl = 0;
  bool in_signed = false, out_signed = false, identity = true;
  int64_t m = 0, round = 0, shift = 0;
  int32_t lo = 0, hi = 0;
};
void maxpool_rows_avx512(const MaxPoolParams& p, const uint8_t* in, uint8_t* out, int64_t r0, int64_t r1);
void maxpool_rows_avx2(const MaxPoolParams& p, const uint8_t* in, uint8_t* out, int64_t r0, int64_t r1);

// ---- 16-bit GEMM conv / fc (gemm16.cpp, gemm16_avx512.cpp, gemm16_avx2.cpp) ------
// Layers with 16-bit weights and / or 16-bit activations (the other side at
// 2..16 bits, widened to int16). Exact: the reference sums in int64.
//   A (activations): int16 rows of Kp = K rounded up to even values, zero past
//     K. An unsigned 16-bit input x in [0, 65535] is stored as x - 32768 (its
//     +32768 * sum_k w term is the per-channel constant `corr`; spatial
//     padding is then stored as -32768 so that it still contributes 0).
//     Split mode (16-bit weights and 16-bit activations): the stored value v
//     is held as two planes, lo = v & 255 (0..255) and hi = v >> 8 (-128..127),
//     v = 256 * hi + lo; each plane gets its own int32 accumulators.
//   B (weights): blocks of 16 output channels; for each pair p of reduction
//     values, 16 lanes x 2 int16 (w[oc][2p], w[oc][2p + 1]): the vpdpwssd /
//     vpmaddwd operand order.
//   int32 accumulation runs over at most `kblock` pairs: kblock * (largest
//   |pair product sum|) < 2^31, so no int32 sum can overflow; each block is
//   then added to int64 sums (lo + 256 * hi in split mode).
struct Packed16 {
  int64_t K = 0, Kp = 0, pairs = 0;    // pairs = Kp / 2
  int64_t OC = 0, OCp = 0, nblocks = 0;  // 16-channel blocks
  AlignedArray<int16_t> w;               // [nblocks][pairs][16][2]
  std::vector<int64_t> corr;             // OCp: 32768 * sum_k w (unsigned 16-bit input), else 0
  bool split = false;
  int64_t kblock = 0;                    // pairs per int32 block
  // Every channel's requantization shift is >= 32: the AVX-512 epilogue then
  // requantizes any int64 sum exactly in 64-bit lanes (see gemm16_avx512.cpp).
  bool shift_ge32 = false;
  const int16_t* block(int64_t b) const { return w.get() + b * pairs * 32; }
};

struct Gemm16Call {
  const Packed16* B = nullptr;
  const Epilogue* E = nullptr;
  const int16_t* A = nullptr;   // rows of lda int16 (plane lo in split mode)
  const int16_t* Ahi = nullptr; // plane hi (split mode)
  int64_t lda = 0;
  int64_t M = 0;
  void* out = nullptr;  // row m, channel oc at element m * ldo + oc
  int64_t ldo = 0;
  int64_t b0 = 0, b1 = 0;  // 16-channel blocks [b0, b1)
};
void gemm16_avx512vnni(const Gemm16Call& c);
void gemm16_avx2(const Gemm16Call& c);
// Epilogue of one row segment from int64 sums (acc[0..n) = channels oc0..):
// + corr + bias, requantization (or float output), clamp, store.
void epilogue16_row_scalar(const int64_t* acc, int64_t oc0, int64_t n, const Packed16& B, const Epilogue& E,
                           void* out_row);
void epilogue16_row_avx512(const int64_t* acc, int64_t oc0, int64_t n, const Packed16& B, const Epilogue& E,
                           void* out_row);
void epilogue16_row_avx2(const int64_t* acc, int64_t oc0, int64_t n, const Packed16& B, const Epilogue& E,
                         void* out_row);

// Depthwise conv with a 16-bit side (gemm16.cpp drives it): channels across
// lanes, every tap product x * w (|x| <= 65535, |w| <= 32768) formed exactly
// in 64 bits (vpmuldq on even / odd 32-bit lanes) and summed in int64; the
// 16-bit epilogue then requantizes each pixel's C sums.
struct Dw16Geom : DwShape {
  int in_kind = 0;  // stored input: 0 uint8, 1 int8, 2 uint16, 3 int16
  int64_t cblocks = 0;  // (C + 15) / 16
};
// w: int32 weights [cblock][tap][16] (zero past C); acc: >= 16 * cblocks int64
// of scratch. Output rows [r0, r1) of N*OH. AVX-512 (windows of <= 64 taps):
// wodd has the same layout with lane 2j holding channel 2j + 1 (the odd
// channels' operand of vpmuldq, so only the activations need a shift).
void dwconv16_rows_avx512(const Dw16Geom& g, const int32_t* w, const int32_t* wodd, const Packed16& B,
                          const Epilogue& E, const void* in, void* out, int64_t* acc, int64_t r0, int64_t r1);
void dwconv16_rows_avx2(const Dw16Geom& g, const int32_t* w, const Packed16& B, const Epilogue& E, const void* in,
                        void* out, int64_t* acc, int64_t r0, int64_t r1);

// ---- average pool, concat, softmax on 8-bit data (ops2_avx512.cpp, ops2_avx2.cpp) --
// Average / global average pool over 8-bit NHWC (global: KH = H, KW = W,
// stride 1, no padding): output rows [r0, r1) of N*OH. Window sums in int32,
// then the exact avg_pool_divide of kernels.h, q = sign(sum) *
// floor(N / (count 2^(s+1))) with N = 2 |sum| m + count 2^s, computed in
// double as floor(fl(N / count) * 2^-(s+1)). Exact whenever N < 2^53: N and
// count 2^s are then exact doubles, and a quotient x = N / D that is not an
// integer lies at least 1/D below the next integer k, while rounding moves it
// by at most x 2^-53 < 1/D, so fl(x) < k and floor(fl(x)) = floor(x). The
// kernel's supports() checks N < 2^53 for the largest sum and count.
struct AvgPoolParams {
  int64_t N = 1, H = 0, W = 0, C = 0, OH = 0, OW = 0;
  int KH = 1, KW = 1, sh = 1, sw = 1, pt = 0, pl = 0;
  bool count_include_pad = false;
  bool in_signed = false, out_signed = false;
  Requant r{};
  int32_t lo = 0, hi = 0;
  // Float output (the reference's float path): out = float(sum / count),
  // sum the double sum of float(q) * in_scale. Every term is a float multiple
  // of ulp(float(1 * in_scale)) below 2^9 times that value's binade, so for
  // windows of <= 2^20 positions the double sum is exact in any order.
  bool out_float = false;
  float in_scale = 1.0f;
};
void avgpool_rows_avx512(const AvgPoolParams& p, const uint8_t* in, uint8_t* out, int64_t r0, int64_t r1);
void avgpool_rows_avx2(const AvgPoolParams& p, const uint8_t* in, uint8_t* out, int64_t r0, int64_t r1);
void avgpool_rows_f32_avx512(const AvgPoolParams& p, const uint8_t* in, float* out, int64_t r0, int64_t r1);
void avgpool_rows_f32_avx2(const AvgPoolParams& p, const uint8_t* in, float* out, int64_t r0, int64_t r1);

// Copy with requantization of n 8-bit values (concat): identity -> clamped
// copy (memcpy when nothing can clamp); else clamp(apply_requant(x, {m, s})),
// round = 2^(s-1) (0 when s == 0), in 64-bit lanes.
struct Convert8Params {
  bool in_signed = false, out_signed = false, identity = true;
  int64_t m = 0, round = 0, shift = 0;
  int32_t lo = 0, hi = 0;
};
void convert8_avx512(const Convert8Params& p, const uint8_t* in, uint8_t* out, int64_t n);
void convert8_avx2(const Convert8Params& p, const uint8_t* in, uint8_t* out, int64_t n);

// Softmax of one contiguous row of n 8-bit values into n floats. Bit-identical
// to the reference: e(q) = exp(double(float(q) * scale) - mx) with std::exp,
// computed once per value q in the row's [min, max] when that range is no
// longer than the row (else once per element); the double sum is taken in the
// reference's order; out = float(e / sum) (vector division is IEEE exact).
// `table`: 256 doubles of scratch.
void softmax_row_u8_avx512(const uint8_t* in, bool in_signed, float scale, int64_t n, float* out, double* table);
void softmax_row_u8_avx2(const uint8_t* in, bool in_signed, float scale, int64_t n, float* out, double* table);

// Shared scalar epilogue of one row segment (float output, and tails).
void epilogue_row_scalar(const int32_t* acc, int64_t oc0, int64_t n, int32_t rowcorr, const Epilogue& E,
                         void* out_row);

size_t out_elem_bytes(OutKind k);

}  // namespace bbits::kernels::simd
