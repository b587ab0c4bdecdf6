// bbits SIMD kernels — the row epilogue (requant.h) under the names the
// families not yet on the template layer call. Compiled for AVX2 and AVX-512.
#include "bbits/kernels/thread_pool.h"
#include "requant.h"
#include "simd_internal.h"

namespace bbits::kernels::simd {

#if defined(BBITS_ISA_AVX2)
void epilogue_row_avx2(const int32_t* acc, int64_t oc0, int64_t n, int32_t rowcorr, const Epilogue& E,
                       void* out_row) {
  epilogue_row<Avx2>(acc, oc0, n, rowcorr, E, out_row);
}
#elif defined(BBITS_ISA_AVX512)
void epilogue_row_avx512(const int32_t* acc, int64_t oc0, int64_t n, int32_t rowcorr, const Epilogue& E,
                         void* out_row) {
  epilogue_row<Avx512>(acc, oc0, n, rowcorr, E, out_row);
}

void epilogue_rows_avx512(const int32_t* acc, int64_t M, const Epilogue& E, void* out, ThreadPool* pool) {
  const size_t esz = out_elem_bytes(E.kind);
  const int64_t OC = E.OC;
  parallel_for(
      pool, M,
      [&](int64_t b, int64_t e, int) {
        for (int64_t m = b; m < e; ++m)
          for (int64_t oc0 = 0; oc0 < OC; oc0 += 64)
            epilogue_row<Avx512>(acc + m * OC + oc0, oc0, std::min<int64_t>(64, OC - oc0), 0, E,
                                 static_cast<uint8_t*>(out) + m * OC * esz);
      },
      16);
}
#endif

}  // namespace bbits::kernels::simd
