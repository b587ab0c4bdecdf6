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
// 16-bit conv / fc (gemm16.cpp): w16a16 and the mixed pairs with one 16-bit side.
void register_gemm16_kernels(std::vector<KernelInfo>& table);
// fc with packed 2/4/8-bit weights on float32 activations (fc_f32.cpp).
void register_fc_f32_kernels(std::vector<KernelInfo>& table);

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

}  // namespace bbits::kernels::simd
