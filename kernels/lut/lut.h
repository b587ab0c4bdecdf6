// bbits kernels — the lookup-table family: GEMV for 2-bit weights x 2-bit
// unsigned activations (fully connected, batch 1), one template over the ISA
// (lut_isa.cpp) with one instance, AVX-512 VBMI (vpermb: Ops::lookup64).
//
// Scheme (exact, integer only):
//   Weights w in [-2, 1] are stored as u = w + 2 in [0, 3], two bits each. For
//   a block of 64 output channels and a "quad" q of reduction values
//   k = 4q .. 4q + 3, one 64-byte vector holds one byte per channel: bits
//   2j..2j+1 = u(k = 4q + j). Blocks are grouped into panels of up to 4 blocks,
//   stored quad by quad: a full panel as two streams of 2 blocks
//   ([half][quad][2][64], read in parallel), a partial one as one stream
//   ([quad][block][64]).
//   Activations a in [0, 3]: for each pair (a0, a1) there is a 64-entry byte
//   table T[a0 + 4 a1][i] = a0 (i & 3) + a1 ((i >> 2) & 3) (bits 4, 5 of the
//   index ignored). One vpermb of the weight vector against the table of
//   (a[4q], a[4q+1]) gives a0 u0 + a1 u1 for 64 channels; one vpermb of the
//   vector shifted right by 4 (vpsrlw: the bits that come in from the next
//   byte land in the ignored bits 4, 5) against the table of (a[4q+2],
//   a[4q+3]) gives a2 u2 + a3 u3. The 16 tables are constants (1 KB): a row's
//   "table" per quad is just an offset into them.
//   Sums: bytes (each lookup <= 18, 7 quads = 14 lookups <= 252), widened to
//   16 bits every 7 quads, to 32 bits every 256 such chunks. The result
//   sum_k a u = sum_k a w + 2 sum_k a: the epilogue subtracts
//   rowcorr = 2 sum_k a.
#pragma once

#include <cstdint>
#include <vector>

#include "simd/common.h"

namespace bbits::kernels::simd {

struct LutWeights {
  static constexpr int kPanelBlocks = 4;
  int64_t K = 0, Kq = 0;       // Kq = ceil(K / 4) quads
  int64_t OC = 0, OCp = 0;     // OCp = 64 * nblocks
  int64_t nblocks = 0, npanels = 0;
  int64_t panel_stride = 0;    // bytes of a full panel
  AlignedArray<uint8_t> data;  // panel p at p * panel_stride
  std::vector<int32_t> wsum;   // per output channel (OCp): sum_k w (true values)

  int panel_blocks(int64_t p) const {
    const int64_t left = nblocks - p * kPanelBlocks;
    return static_cast<int>(left < kPanelBlocks ? left : kPanelBlocks);
  }
  const uint8_t* panel(int64_t p) const { return data.get() + p * panel_stride; }
};

// rows: OC rows of the model's packed 2-bit weights (row_bytes each).
LutWeights pack_lut_w2(const uint8_t* rows, size_t row_bytes, int64_t OC, int64_t K);

// Prepares one input row of K values: offs[q] = byte offsets of the two
// tables of quad q (low 16 bits: a[4q], a[4q+1]; high 16 bits: a[4q+2],
// a[4q+3]; values past K count as 0), *asum = sum of the K values. Returns the
// first k whose value is outside [0, 3], or -1 when every value is in range.
template <class Tag>
int64_t lut_prepare_row(const uint8_t* x, int64_t K, uint32_t* offs, int64_t* asum);

// Output channels of panels [p0, p1) for one prepared row: sums, then the
// epilogue (rowcorr subtracted) into out_row (element oc at oc * element size).
template <class Tag>
void lut_gemv(const LutWeights& B, const Epilogue& E, const uint32_t* offs, int32_t rowcorr, void* out_row,
              int64_t p0, int64_t p1);

void register_lut_kernels(std::vector<KernelInfo>& table);

}  // namespace bbits::kernels::simd
