// bbits SIMD kernels — the vector operations the family templates call, per
// ISA tag: Ops<Tag>. Included only by ISA translation units (compiled with the
// tag's flags, BBITS_ISA_<NAME> defined; see arch.h).
//
// Each Ops<Tag> names its xsimd architecture (`arch`, so that templates write
// xsimd::batch<T, typename Ops<Tag>::arch> and xsimd's operators) and adds,
// once, what xsimd 8.1 lacks: the 8-bit dot product (vpdpbusd, vpmaddubsw
// pairs, sdot, smull + sadalp), the even/odd 32 x 32 -> 64-bit multiply and the
// 64-bit arithmetic shift of the requantization, partial loads and stores of
// vector tails, saturating narrowing stores, widening loads. Common members:
//
//   arch, i32, i64, u8          xsimd arch and batch types
//   kLanes, kBytes              int32 lanes / bytes per vector
//   kEvenOdd                    mul() splits int32 lanes into even / odd
//                               halves (x86), else into low / high (NEON)
//   kSignedBytes                dot() reads activation bytes as int8 (NEON)
//                               instead of uint8 (x86)
//   Acc, acc_zero, acc_sum      dot-product accumulator
//   bcast4(p)                   the 4 bytes at p in every 32-bit lane
//   XP<W>, prep<W>(x), dot<W>(acc, xp, w)
//                               acc[l] += sum_i x[4l+i] * w[4l+i]; W: w may
//                               hold any int8 (else |w| <= 64, which the
//                               AVX2 vpmaddubsw path relies on)
//   mult(m), mul(a, M, h0, h1), sra(v, s), join(h0, h1), join_hi(h0, h1)
//                               the requantization's 64-bit steps (requant.h)
//   load_bytes(p, n), store_bytes_n(p, v, n), byte_sums(v), sum_i64(v)
//   store_u8<NB>(o, r0, r1, r2, r3, n, sgn, lo, hi), store_u16(o, r, n)
//   widen_bytes, widen_words, to_f64, from_f64, f32_to_f64, f64_to_f32, store_f32
//                               widening and conversions, halves in lane order
//   dot16(acc, x, w)            int16 pair dot products (vpdpwssd, vpmaddwd, smull)
//   widen_i32, narrow64, mul_s32, mul_u32, srl64, clamp64, fits_i32,
//   halves_to_order, load_widen16   64-bit lanes of the 16-bit family
//   unpack{lo,hi}{8,16}(a, b)  byte / word interleave within 128-bit lanes
//   to_channel_order(a, out)    depthwise accumulators back to channel order
//                               narrowing stores of requantized int32 lanes
#pragma once

#include <cstdint>
#include <cstring>

#include <xsimd/xsimd.hpp>

#include "arch.h"

// Every vector helper is forced inline: an out-of-line call passes vectors
// through memory, which costs more than the few instructions inside.
#define BBITS_INLINE __attribute__((always_inline)) inline

namespace bbits::kernels::simd {
template <class Tag>
struct Ops;
}  // namespace bbits::kernels::simd

#if defined(BBITS_ISA_AVX2)
#include "ops_avx2.h"
#elif defined(BBITS_ISA_AVX512) || defined(BBITS_ISA_AVX512_VNNI) || defined(BBITS_ISA_AVX512_VBMI)
#include "ops_avx512.h"
#elif defined(BBITS_ISA_NEON) || defined(BBITS_ISA_NEON_DOTPROD)
#include "ops_neon.h"
#endif
