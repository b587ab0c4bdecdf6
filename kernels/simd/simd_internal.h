// bbits SIMD kernels — interfaces of the families not yet on the shared
// template layer (depthwise, element-wise, pooling, 16-bit, float fc, oneDNN):
// portable drivers and their ISA translation units.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "common.h"

namespace bbits::kernels::simd {

// Epilogue of M full rows of OC int32 accumulators (row stride OC) into `out`
// (row stride OC), rows split over the pool. No row corrections.
void epilogue_rows_avx512(const int32_t* acc, int64_t M, const Epilogue& E, void* out, ThreadPool* pool);

// Epilogue of one row segment (n <= 64 channels from oc0; acc[0..n) holds the
// sums of channels oc0..oc0+n-1): corrections, requantization, store.
void epilogue_row_avx512(const int32_t* acc, int64_t oc0, int64_t n, int32_t rowcorr, const Epilogue& E,
                         void* out_row);
void epilogue_row_avx2(const int32_t* acc, int64_t oc0, int64_t n, int32_t rowcorr, const Epilogue& E,
                       void* out_row);

// oneDNN (onednn.cpp).
void register_onednn_kernels(std::vector<KernelInfo>& table);

}  // namespace bbits::kernels::simd
