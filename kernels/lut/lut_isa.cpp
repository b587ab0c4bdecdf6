// bbits kernels — the lookup-table GEMV's ISA code (scheme in lut.h), one
// template over the ISA tag; instantiated for AVX-512 VBMI, reached only
// when the CPU has AVX-512 BW and VBMI.
#include <algorithm>
#include <cstring>

#include "lut.h"
#include "simd/requant.h"

namespace bbits::kernels::simd {
namespace {

// The 16 tables: T[a0 + 4 a1][i] = a0 (i & 3) + a1 ((i >> 2) & 3).
struct Tables {
  alignas(64) uint8_t t[16][64];
  Tables() {
    for (int a = 0; a < 16; ++a)
      for (int i = 0; i < 64; ++i) t[a][i] = static_cast<uint8_t>((a & 3) * (i & 3) + (a >> 2) * ((i >> 2) & 3));
  }
};
const Tables& tables() {
  static const Tables t;
  return t;
}

constexpr int kQuadsPerChunk = 7;      // 14 lookups of <= 18 per byte: <= 252
constexpr int kChunksPerFlush = 256;   // 256 * 252 < 65536 per 16-bit lane

// Adds the 16-bit sums of one block (lo: even byte lanes, hi: odd ones) to its
// 64 int32 sums in channel order.
template <class Tag>
inline void flush16(typename Ops<Tag>::u8 lo, typename Ops<Tag>::u8 hi, int32_t* acc32) {
  alignas(64) uint16_t l[32], h[32];
  lo.store_aligned(reinterpret_cast<uint8_t*>(l));
  hi.store_aligned(reinterpret_cast<uint8_t*>(h));
  // Word w of lo holds the sums of byte 2w (channel 2w), of hi byte 2w + 1.
  for (int w = 0; w < 32; ++w) {
    acc32[2 * w] += l[w];
    acc32[2 * w + 1] += h[w];
  }
}

// NB blocks of one panel; S streams: a full panel is stored as two halves of
// 2 blocks ([half][quad][2][64]) read in parallel, a partial one as one
// stream ([quad][NB][64]).
template <class Tag, int NB, int S>
void panel_sums(const uint8_t* __restrict wp, const uint32_t* __restrict offs, int64_t Kq, int32_t* acc32) {
  using O = Ops<Tag>;
  using u8 = typename O::u8;
  using u16 = xsimd::batch<uint16_t, typename O::arch>;
  static_assert(O::kBytes == 64, "one block of 64 channels per vector");
  constexpr int BS = NB / S;  // blocks per stream
  const uint8_t* ws[S];
#pragma GCC unroll 2
  for (int h = 0; h < S; ++h) ws[h] = wp + h * Kq * BS * 64;
  const uint8_t* tab = &tables().t[0][0];
  const u8 zero(uint8_t{0});
  const u16 lowbyte(uint16_t{0xff});
  u8 a8[NB], lo16[NB], hi16[NB];
#pragma GCC unroll 4
  for (int b = 0; b < NB; ++b) lo16[b] = hi16[b] = zero;
  int chunks = 0;
  for (int64_t q0 = 0; q0 < Kq; q0 += kQuadsPerChunk) {
    const int64_t q1 = std::min<int64_t>(Kq, q0 + kQuadsPerChunk);
#pragma GCC unroll 4
    for (int b = 0; b < NB; ++b) a8[b] = zero;
    for (int64_t q = q0; q < q1; ++q) {
      const uint32_t o = offs[q];
      const u8 tl = u8::load_aligned(tab + (o & 0xffffu));
      const u8 th = u8::load_aligned(tab + (o >> 16));
#pragma GCC unroll 4
      for (int b = 0; b < NB; ++b) {
        const u8 v = u8::load_aligned(ws[b / BS] + (q * BS + b % BS) * 64);
        a8[b] = a8[b] + O::lookup64(v, tl);
        a8[b] = a8[b] + O::lookup64(O::words_shr4(v), th);
      }
    }
    // Widen: even bytes by a mask, odd ones by a multiply high (no shuffle / shift).
#pragma GCC unroll 4
    for (int b = 0; b < NB; ++b) {
      lo16[b] = xsimd::bitwise_cast<u8>(xsimd::bitwise_cast<u16>(lo16[b]) +
                                        (xsimd::bitwise_cast<u16>(a8[b]) & lowbyte));
      hi16[b] = xsimd::bitwise_cast<u8>(xsimd::bitwise_cast<u16>(hi16[b]) +
                                        xsimd::bitwise_cast<u16>(O::words_hi_byte(a8[b])));
    }
    if (++chunks == kChunksPerFlush) {
      for (int b = 0; b < NB; ++b) {
        flush16<Tag>(lo16[b], hi16[b], acc32 + b * 64);
        lo16[b] = hi16[b] = zero;
      }
      chunks = 0;
    }
  }
  for (int b = 0; b < NB; ++b) flush16<Tag>(lo16[b], hi16[b], acc32 + b * 64);
}

}  // namespace

template <class Tag>
int64_t lut_prepare_row(const uint8_t* x, int64_t K, uint32_t* offs, int64_t* asum) {
  using O = Ops<Tag>;
  using u8 = typename O::u8;
  using u32 = xsimd::batch<uint32_t, typename O::arch>;
  constexpr int VB = O::kBytes, Q = VB / 4;
  const u8 three(uint8_t{3});
  typename O::i64 sum(int64_t{0});
  alignas(64) uint32_t tmp[Q];
  for (int64_t k = 0; k < K; k += VB) {
    const int64_t left = K - k;
    const u8 v = left >= VB ? u8::load_unaligned(x + k) : O::load_bytes(x + k, left);
    if (xsimd::any(v > three))
      for (int64_t i = 0; i < std::min<int64_t>(VB, left); ++i)
        if (x[k + i] > 3) return k + i;
    sum = sum + O::byte_sums(v);
    // Q quads: (a0 + 4 a1) * 64 | (a2 + 4 a3) * 64 << 16.
    const u32 w = xsimd::bitwise_cast<u32>(v);
    const u32 lo = (w & u32(3u)) | ((w >> 6) & u32(0xCu));
    const u32 hi = ((w >> 16) & u32(3u)) | ((w >> 22) & u32(0xCu));
    const u32 o = (lo << 6) | (hi << 22);
    const int64_t nq = std::min<int64_t>(Q, (left + 3) / 4);
    if (nq == Q) {
      o.store_unaligned(offs + k / 4);
    } else {
      o.store_aligned(tmp);
      std::memcpy(offs + k / 4, tmp, static_cast<size_t>(nq) * 4);
    }
  }
  *asum = O::sum_i64(sum);
  return -1;
}

template <class Tag>
void lut_gemv(const LutWeights& B, const Epilogue& E, const uint32_t* offs, int32_t rowcorr, void* out_row,
              int64_t p0, int64_t p1) {
  alignas(64) int32_t acc[LutWeights::kPanelBlocks * 64];
  for (int64_t p = p0; p < p1; ++p) {
    const int nb = B.panel_blocks(p);
    std::fill(acc, acc + nb * 64, 0);
    switch (nb) {
      case 1: panel_sums<Tag, 1, 1>(B.panel(p), offs, B.Kq, acc); break;
      case 2: panel_sums<Tag, 2, 1>(B.panel(p), offs, B.Kq, acc); break;
      case 3: panel_sums<Tag, 3, 1>(B.panel(p), offs, B.Kq, acc); break;
      default: panel_sums<Tag, 4, 2>(B.panel(p), offs, B.Kq, acc); break;
    }
    for (int b = 0; b < nb; ++b) {
      const int64_t oc0 = (p * LutWeights::kPanelBlocks + b) * 64;
      const int64_t n = std::min<int64_t>(64, B.OC - oc0);
      epilogue_row<Tag>(acc + b * 64, oc0, n, rowcorr, E, out_row);
    }
  }
}

template int64_t lut_prepare_row<ThisIsa>(const uint8_t*, int64_t, uint32_t*, int64_t*);
template void lut_gemv<ThisIsa>(const LutWeights&, const Epilogue&, const uint32_t*, int32_t, void*, int64_t,
                                int64_t);

}  // namespace bbits::kernels::simd
