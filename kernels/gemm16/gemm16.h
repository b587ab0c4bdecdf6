// bbits kernels — the 16-bit family: conv2d (dense and depthwise) and fully
// connected layers with a 16-bit side, one template (gemm16_isa.cpp) over the
// ISA: AVX2, AVX-512 VNNI (depthwise: AVX-512), NEON.
#pragma once

#include <cstdint>
#include <vector>

#include "simd/common.h"

namespace bbits::kernels::simd {

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
//     values, 16 lanes x 2 int16 (w[oc][2p], w[oc][2p + 1]): the operand
//     order of the pair dot product (Ops::dot16: vpdpwssd, vpmaddwd, smull).
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
  // Every channel's requantization shift is >= 32: the vector epilogue then
  // requantizes any int64 sum exactly in 64-bit lanes (requant.h, requant64).
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
template <class Tag>
void gemm16_run(const Gemm16Call& c);
// Epilogue of one row segment from int64 sums (acc[0..n) = channels oc0..):
// + corr + bias, requantization (or float output), clamp, store.
void epilogue16_row_scalar(const int64_t* acc, int64_t oc0, int64_t n, const Packed16& B, const Epilogue& E,
                           void* out_row);

// Tile of the ISA's instance: rows (split mode rows) x channels.
struct Gemm16Tile {
  int mr = 4, mr_split = 2, blocks = 4;  // blocks of 16 channels
};
constexpr Gemm16Tile gemm16_tile(Isa isa) {
  return isa == Isa::AVX512_VNNI ? Gemm16Tile{4, 2, 4} : Gemm16Tile{2, 1, 2};
}

// Depthwise conv with a 16-bit side: channels across the L lanes of a
// vector, every tap product x * w (|x| <= 65535, |w| <= 32768) formed exactly
// in 64 bits (the even / odd or low / high 32 x 32 -> 64-bit multiplies of
// the requantization, Ops::mul) and summed in int64; the 16-bit epilogue
// then requantizes each pixel's C sums.
struct Dw16Geom : DwShape {
  int in_kind = 0;  // stored input: 0 uint8, 1 int8, 2 uint16, 3 int16
  int64_t lanes = 16, cblocks = 0;  // cblocks = ceil(C / lanes)
};
// w: int32 weights [cblock][tap][lanes] (zero past C); acc: >= lanes *
// cblocks int64 of scratch. Output rows [r0, r1) of N*OH.
template <class Tag>
void dwconv16_rows(const Dw16Geom& g, const int32_t* w, const Packed16& B, const Epilogue& E, const void* in,
                   void* out, int64_t* acc, int64_t r0, int64_t r1);

void register_gemm16_kernels(std::vector<KernelInfo>& table);

}  // namespace bbits::kernels::simd
