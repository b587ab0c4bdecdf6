// bbits kernels — the depthwise family: conv2d with groups == C == OC, 2/4/8-bit
// weights (widened to int8) on 2/4/8-bit activations, one template
// (dw8_isa.cpp) over the ISA: AVX2, AVX-512 VNNI, NEON, NEON dot product.
//
// Channels across the lanes of a vector, taps along the dot product: a block
// of kBytes channels (AVX-512 64, AVX2 32, NEON 16) takes, per group of 4
// taps, the 4 input rows of the block interleaved (byte, then 16-bit
// unpacks) so that 32-bit lane l of vector j holds the 4 taps of channel
// 16 (l / 4) + 4 j + l % 4, against weights prepacked in the same order
// (one vector per j: [cblock][tgroup][j][lane][tap]). Activation bytes are
// stored as for the 8-bit GEMM family (x + a_offset, gemm8.h); padded taps
// are the value 0, taps past the last group have weight 0.
#pragma once

#include <cstdint>
#include <vector>

#include "simd/common.h"

namespace bbits::kernels::simd {

struct DwGeom : DwShape {
  uint8_t flip = 0;  // 0x80: the a_offset of +-128 (gemm8.h)
};
struct DwPacked {
  int64_t taps = 0, tgroups = 0, cblocks = 0, block = 64;  // block: channels per block (kBytes)
  AlignedArray<int8_t> w8;  // [cblock][tgroup][4][block]
};

// Output rows [r0, r1) of N*OH.
template <class Tag>
void dwconv8_rows(const DwGeom& g, const DwPacked& P, const Epilogue& E, const uint8_t* in, void* out, int64_t r0,
                  int64_t r1);

void register_dw8_kernels(std::vector<KernelInfo>& table);

}  // namespace bbits::kernels::simd
