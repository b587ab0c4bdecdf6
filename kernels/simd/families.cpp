// bbits SIMD kernels — every kernel family, in table order: the one place
// that lists them for the kernel table (kernels.h). Each family registers its
// kernels for the ISAs of this build (arch.h).
#include "bbits/kernels/simd.h"
#include "depthwise/dw8.h"
#include "eltwise/eltwise.h"
#include "fc_f32/fc_f32.h"
#include "gemm16/gemm16.h"
#include "gemm8/gemm8.h"
#include "pool/pool.h"
#include "lut/lut.h"
#include "onednn/onednn.h"

namespace bbits::kernels {

void register_simd_kernels(std::vector<KernelInfo>& table) {
  simd::register_gemm8_kernels(table);   // 8-bit GEMM / GEMV: conv, fc with 2/4/8-bit weights
  simd::register_lut_kernels(table);     // lookup table: fc with 2-bit weights x 2-bit activations
  simd::register_dw8_kernels(table);     // depthwise conv with 2/4/8-bit weights on 8-bit activations
  simd::register_eltwise_kernels(table);  // add, concat, softmax on 8-bit data
  simd::register_pool_kernels(table);    // max, average and global average pool on 8-bit data
  simd::register_gemm16_kernels(table);  // 16-bit GEMM and depthwise
  simd::register_fc_f32_kernels(table);  // fc with packed weights on float32 activations
#if defined(BBITS_WITH_ONEDNN)
  simd::register_onednn_kernels(table);  // oneDNN int8 / float32 wrappers
#endif
}

}  // namespace bbits::kernels
