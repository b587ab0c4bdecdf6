// bbits kernels — the 8-bit GEMM / GEMV family: conv2d and fully connected
// layers with 2/4/8-bit weights on 2/4/8-bit activations, one template
// (gemm8_isa.cpp) over the ISA: AVX2, AVX-512 VNNI, NEON, NEON dot product.
//
// Scheme (every bit width runs through the same 4-byte dot product):
//   A (activations): rows of Kp bytes, zero padded past K, each value x stored
//     as x + a_offset so that it fits the byte type the ISA's dot product
//     reads (Ops::kSignedBytes): uint8 on x86 (signed inputs + 128), int8 on
//     NEON (unsigned 8-bit inputs - 128); the -a_offset * sum_k w[oc][k] term
//     goes into the per-channel constant `colterm`.
//   B (weights): "prepacked" at create time from the model's packed rows into
//     panels of nb_max blocks of `lanes` output channels. One 32-bit lane of a
//     vector holds, for one output channel, `kgroup` = 32 / bits consecutive
//     reduction values: byte i, bit field j holds k = g * kgroup + 4 * j + i.
//     So the activations multiplying field j of group g are the 4 bytes at
//     A[g * kgroup + 4 * j], broadcast to every lane.
//   Encodings of a field (bits < 8):
//     Offset: u = w + 2^(bits-1) in [0, 2^bits - 1] (fits every dot product
//             without saturation).
//     TopRaw: like Offset, except the top field of each byte holds w in two's
//             complement, so that (byte & top_mask) read as int8 equals
//             w * 2^(8 - bits) exactly; lower fields are read in place
//             (byte & field_mask = u * 2^(j * bits)) into separate accumulators
//             that are shifted back at the end (exact: each is a multiple).
//             Only for dot products that cannot saturate (not AVX2's).
//   The offsets add off * sum(A over offset-encoded positions) per row: the
//   per-row correction `rowcorr`, computed from the packed A itself.
//   At 8 bits the byte is the int8 weight (no offset).
#pragma once

#include <cstdint>
#include <vector>

#include "simd/common.h"

namespace bbits::kernels::simd {

enum class WEnc : uint8_t { Offset, TopRaw };

// What the family's instance for an ISA does (tile shape, paths).
struct Gemm8Traits {
  int lanes = 16;          // output channels per block (int32 lanes)
  int mr = 4;              // rows per GEMM tile
  bool signed_bytes = false;  // Ops::kSignedBytes
  bool top_raw = false;    // batch-1 GEMV on TopRaw weights
  bool implicit = false;   // convolution without im2col (rows as segments of the input)
  bool streams = false;    // GEMV over up to 4 panels as parallel weight streams
};
constexpr Gemm8Traits gemm8_traits(Isa isa) {
  switch (isa) {
    case Isa::AVX2: return {8, 2, false, false, false, false};
    case Isa::NEON: return {4, 2, true, true, false, false};
    case Isa::NEON_DOTPROD: return {4, 4, true, true, false, false};
    default: return {16, 4, false, true, true, true};  // AVX-512 VNNI
  }
}
inline constexpr int kGemm8Blocks = 4;  // blocks of `lanes` channels per panel

// Prepacked weights of one conv / fc layer (see the scheme above).
struct PackedB {
  int bits = 8;     // 2, 4, 8
  int lanes = 16;   // output channels per block
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

// rows: OC rows of the model's packed weights at src_bits (row_bytes =
// packed_row_bytes(K, src_bits)); packed at `bits` >= src_bits (an 8-bit kernel
// runs 2/4-bit weights widened to int8).
PackedB pack_weights(const uint8_t* rows, size_t row_bytes, int src_bits, int64_t OC, int64_t K, int bits,
                     int lanes, int nb_max, WEnc enc);

// One call of the GEMM driver: rows [0, M) of A against panels [p0, p1).
struct GemmCall {
  const PackedB* B = nullptr;
  const Epilogue* E = nullptr;
  const int32_t* rowcorr = nullptr;  // M values
  int64_t M = 0;
  void* out = nullptr;  // row m, channel oc at element m * ldo + oc
  int64_t ldo = 0;
  int64_t p0 = 0, p1 = 0;
  // Rows as nseg segments of seg_groups groups each, segs[m * nseg + s]: one
  // segment per row (im2col or direct A), or one per kernel row for the
  // implicit convolution.
  const uint8_t* const* segs = nullptr;
  int nseg = 1;
  int64_t seg_groups = 0;
};

// im2col geometry: rows of Kp bytes, (kh, kw, ci) order, each value xor
// `flip` (0x80: the a_offset of +-128), spatial padding = the value 0, zero
// past K.
struct Im2col {
  int64_t N = 1, H = 0, W = 0, C = 0, OH = 0, OW = 0, KH = 1, KW = 1, K = 0, Kp = 0;
  int64_t sh = 1, sw = 1, pt = 0, pl = 0, dh = 1, dw = 1;
  uint8_t flip = 0;
};

// The family's ISA code (gemm8_isa.cpp, one instance per ISA tag).
template <class Tag>
void gemm8_run(const GemmCall& c);
// Rows [m0, m0 + mb) of the im2col matrix into A (row stride g.Kp); may
// write up to 64 bytes past the last row (the caller leaves that slack).
template <class Tag>
void gemm8_im2col(const Im2col& g, const uint8_t* in, int64_t m0, int64_t mb, uint8_t* A);
// rowcorr[m] = B.offset() * sum of the stored A bytes of row m over offset
// positions; rows as segments (see GemmCall), seg_bytes each.
template <class Tag>
void gemm8_rowcorr(const PackedB& B, const uint8_t* const* segs, int nseg, int64_t seg_bytes, int64_t M,
                   int32_t* rowcorr);
void register_gemm8_kernels(std::vector<KernelInfo>& table);

}  // namespace bbits::kernels::simd
