// bbits SIMD kernels — helpers shared by the AVX-512 translation units only
// (include after <immintrin.h> in files compiled with the AVX-512 flags).
#pragma once

#include <immintrin.h>

#include <cstdint>

#include "simd_internal.h"

namespace bbits::kernels::simd {

// The first min(n, 8) lanes of an 8 x 64-bit vector.
inline __mmask8 mask8(int64_t n) { return n >= 8 ? static_cast<__mmask8>(0xff) : static_cast<__mmask8>((1u << n) - 1u); }

// Stores the lanes `k` of p (int64 values already clamped to the output grid)
// as the integer output kind at out_row[oc...]; float outputs are written elsewhere.
inline void store_clamped_i64(OutKind kind, void* out_row, int64_t oc, __mmask8 k, __m512i p) {
  switch (kind) {
    case OutKind::U8:
    case OutKind::S8:
      _mm512_mask_cvtepi64_storeu_epi8(static_cast<uint8_t*>(out_row) + oc, k, p);
      break;
    case OutKind::U16:
    case OutKind::S16:
      _mm512_mask_cvtepi64_storeu_epi16(static_cast<uint16_t*>(out_row) + oc, k, p);
      break;
    case OutKind::F32:
      break;
  }
}

}  // namespace bbits::kernels::simd
