// bbits kernels — the float fc family: fully connected layers with packed
// 2/4/8-bit weights and float32 input activations (fc_w{2,4,8}a32_f32_<isa>),
// one template (fc_f32_isa.cpp) over the ISA: AVX2, AVX-512, NEON.
//
// y[n][o] = act(float(double(sum_k w[o][k] * x[n][k]) * s_w[o] + bias[o])),
// then stored as float32 or quantized with quantize_to_grid's rules. The
// weights stay packed: 4x (8-bit) to 16x (2-bit) fewer bytes than the float32
// weights of the oneDNN kernel. The sum is taken in float32 (16 or 8 lanes,
// then a tree), so it differs from the reference's double sum of
// float(w * s_w) * x in the last bits only.
//
// Prepacked layout (made once at create time from the model's packed rows):
// blocks of kRows = 4 output rows; a block holds kchunks = ceil(K / lanes)
// chunks, and each chunk the `lanes` weights k = c * lanes .. + lanes - 1 of
// its 4 rows one after the other (chunk_bytes = lanes * bits / 8 each), zero
// past K and past OC. Within a chunk, weight j sits at bit position
// Ops::field_pos(bits, j) (the model's own order but for AVX-512's 4-bit
// chunks), where Ops::unpack_f32 turns a chunk into `lanes` floats in
// registers (sign extension, or a table lookup by vpermps). So one block is
// one sequential stream of kchunks * 4 * chunk_bytes bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "simd/common.h"

namespace bbits::kernels::simd {

inline constexpr int kFcF32Rows = 4;  // output rows per block

enum class FcF32Out : uint8_t { F32, U8, S8, U16, S16 };

struct FcF32Call {
  int bits = 8;                   // 2, 4, 8
  int64_t K = 0, OC = 0, N = 1;
  int64_t kchunks = 0;            // ceil(K / lanes)
  int64_t block_bytes = 0;        // kchunks * kFcF32Rows * chunk_bytes
  const uint8_t* w = nullptr;     // prepacked blocks
  const double* scale = nullptr;  // s_w per output row (padded to whole blocks)
  const double* bias = nullptr;   // float bias as double (0 when none), padded
  const float* x = nullptr;       // N rows of K floats
  void* y = nullptr;              // N rows of OC outputs
  FcF32Out out = FcF32Out::F32;
  int act = 0;                    // 0 none, 1 relu, 2 relu6
  float out_scale = 1.0f;         // integer output: step of the grid
  float lo = 0.0f, hi = 0.0f;     // integer output: clamp range (integers as floats)
};

// Output row blocks [b0, b1) for all N input rows.
template <class Tag>
void fc_f32_rows(const FcF32Call& c, int64_t b0, int64_t b1);
// The bit position of field j (< lanes) of a chunk of `bits`-bit weights
// (Ops::field_pos: the layout the ISA's unpack reads).
template <class Tag>
int fc_f32_field_pos(int bits, int j);

void register_fc_f32_kernels(std::vector<KernelInfo>& table);

}  // namespace bbits::kernels::simd

