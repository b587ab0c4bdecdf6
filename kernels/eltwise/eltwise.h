// bbits kernels — the element-wise family on 2/4/8-bit data: residual add,
// concat (a requantizing copy per input) and softmax rows, one template
// (eltwise_isa.cpp) over the ISA: AVX2, AVX-512, NEON.
#pragma once

#include <cstdint>
#include <vector>

#include "simd/common.h"

namespace bbits::kernels::simd {

// out[i] = clamp(apply_requant_sum(a[i], Ra, b[i], Rb), lo, hi): with S the
// larger shift, (a m_a 2^da + b m_b 2^db + round) >> S, da = S - s_a, db =
// S - s_b (requant.h, requant_sum).
struct AddParams {
  bool a_signed = false, b_signed = false, out_signed = false;
  int64_t ma = 0, da = 0, mb = 0, db = 0, round = 0, shift = 0;
  int32_t lo = 0, hi = 0;
};

// Copy with requantization of n 8-bit values (concat): identity -> clamped
// copy (memcpy when nothing can clamp); else clamp(apply_requant(x, r)).
struct Convert8Params {
  bool in_signed = false, out_signed = false, identity = true;
  RequantTable rq;  // single_requant(r, lo, hi)
  int32_t lo = 0, hi = 0;
};

template <class Tag>
void add8(const AddParams& p, const uint8_t* a, const uint8_t* b, uint8_t* out, int64_t n);
template <class Tag>
void convert8(const Convert8Params& p, const uint8_t* in, uint8_t* out, int64_t n);
// Softmax of one contiguous row of n 8-bit values into n floats. Bit-identical
// to the reference: e(q) = exp(double(float(q) * scale) - mx) with std::exp,
// computed once per value q in the row's [min, max] when that range is no
// longer than the row (else once per element); the double sum is taken in the
// reference's order; out = float(e / sum). `table`: 256 doubles of scratch.
template <class Tag>
void softmax_row8(const uint8_t* in, bool in_signed, float scale, int64_t n, float* out, double* table);

void register_eltwise_kernels(std::vector<KernelInfo>& table);

}  // namespace bbits::kernels::simd
