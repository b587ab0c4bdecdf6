// bbits kernels — the oneDNN family: int8 and float32 conv / fc run by oneDNN
// (onednn.cpp, built with BBITS_WITH_ONEDNN), and the requantization of
// oneDNN's int32 results on the shared routine (onednn_isa.cpp, one template
// over the ISA; instantiated for AVX-512, which the int8 kernels need).
#pragma once

#include <cstdint>
#include <vector>

#include "simd/common.h"

namespace bbits::kernels::simd {

// The flat requantization of M * OC int32 results with a table that repeats
// every `period` = lcm(64, OC) values (onednn.cpp): rq's rounding already
// holds colterm * m (and its pre-clamp bounds are less colterm), so the
// results need no correction before requant.h.
struct FlatRequant {
  int64_t period = 0;  // P values; 0: not usable
  bool is_signed = false;
  bool clamp = false;  // [lo, hi] narrower than the 8-bit type (the packs saturate to the type)
  int32_t lo = 0, hi = 0;
  RequantTable rq;  // P channels
};

// Blocks [b0, b1) of `period` values of the flat array of `total` values.
template <class Tag>
void flat_requant(const int32_t* acc, int64_t b0, int64_t b1, int64_t total, const FlatRequant& F, uint8_t* out);
// Rows [r0, r1) of OC int32 results (row stride OC) through the row epilogue.
template <class Tag>
void onednn_epilogue_rows(const int32_t* acc, int64_t r0, int64_t r1, const Epilogue& E, void* out);

void register_onednn_kernels(std::vector<KernelInfo>& table);

}  // namespace bbits::kernels::simd
