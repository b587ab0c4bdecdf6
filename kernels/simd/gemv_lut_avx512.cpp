// bbits SIMD kernels — lookup-table GEMV, 2-bit weights x 2-bit unsigned
// activations (scheme in gemv_lut.h). Compiled with the AVX-512 flags plus
// VBMI (per-file flags in CMakeLists.txt); reached only when the CPU has AVX-512 BW and VBMI.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "gemv_lut.h"


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
inline void flush16(__m512i lo, __m512i hi, int32_t* acc32) {
  alignas(64) uint16_t l[32], h[32];
  _mm512_store_si512(l, lo);
  _mm512_store_si512(h, hi);
  // Word w of lo holds the sums of byte 2w (channel 2w), of hi byte 2w + 1.
  for (int w = 0; w < 32; ++w) {
    acc32[2 * w] += l[w];
    acc32[2 * w + 1] += h[w];
  }
}

// NB blocks of one panel; S streams: a full panel is stored as two halves of
// 2 blocks ([half][quad][2][64]) read in parallel, a partial one as one
// stream ([quad][NB][64]).
template <int NB, int S>
void panel_sums(const uint8_t* __restrict wp, const uint32_t* __restrict offs, int64_t Kq, int32_t* acc32) {
  constexpr int BS = NB / S;  // blocks per stream
  const uint8_t* ws[S];
#pragma GCC unroll 2
  for (int h = 0; h < S; ++h) ws[h] = wp + h * Kq * BS * 64;
  const uint8_t* tab = &tables().t[0][0];
  const __m512i zero = _mm512_setzero_si512();
  const __m512i k16 = _mm512_set1_epi16(1 << 12), k8 = _mm512_set1_epi16(1 << 8);
  const __m512i lowbyte = _mm512_set1_epi16(0xff);
  __m512i a8[NB], lo16[NB], hi16[NB];
#pragma GCC unroll 4
  for (int b = 0; b < NB; ++b) lo16[b] = hi16[b] = zero;
  int chunks = 0;
  for (int64_t q0 = 0; q0 < Kq; q0 += kQuadsPerChunk) {
    const int64_t q1 = std::min<int64_t>(Kq, q0 + kQuadsPerChunk);
#pragma GCC unroll 4
    for (int b = 0; b < NB; ++b) a8[b] = zero;
    for (int64_t q = q0; q < q1; ++q) {
      const uint32_t o = offs[q];
      const __m512i tl = _mm512_load_si512(tab + (o & 0xffffu));
      const __m512i th = _mm512_load_si512(tab + (o >> 16));
#pragma GCC unroll 4
      for (int b = 0; b < NB; ++b) {
        const __m512i v = _mm512_load_si512(ws[b / BS] + (q * BS + b % BS) * 64);
        // v >> 4 per 16-bit word as a multiply high by 2^12: the multiplier
        // pipes are idle, the shift pipes are the ones vpermb needs.
        a8[b] = _mm512_add_epi8(a8[b], _mm512_permutexvar_epi8(v, tl));
        a8[b] = _mm512_add_epi8(a8[b], _mm512_permutexvar_epi8(_mm512_mulhi_epu16(v, k16), th));
      }
    }
    // Widen: even bytes by a mask, odd ones by a multiply high by 2^8 (again
    // no shuffle / shift).
#pragma GCC unroll 4
    for (int b = 0; b < NB; ++b) {
      lo16[b] = _mm512_add_epi16(lo16[b], _mm512_and_si512(a8[b], lowbyte));
      hi16[b] = _mm512_add_epi16(hi16[b], _mm512_mulhi_epu16(a8[b], k8));
    }
    if (++chunks == kChunksPerFlush) {
      for (int b = 0; b < NB; ++b) {
        flush16(lo16[b], hi16[b], acc32 + b * 64);
        lo16[b] = hi16[b] = zero;
      }
      chunks = 0;
    }
  }
  for (int b = 0; b < NB; ++b) flush16(lo16[b], hi16[b], acc32 + b * 64);
}

}  // namespace

LutWeights pack_lut_w2(const uint8_t* rows, size_t row_bytes, int64_t OC, int64_t K) {
  if (OC <= 0 || K <= 0) throw std::invalid_argument("pack_lut_w2: empty weight matrix");
  if (row_bytes < packed_row_bytes(K, 2)) throw std::invalid_argument("pack_lut_w2: rows too short");
  LutWeights B;
  B.K = K;
  B.Kq = (K + 3) / 4;
  B.OC = OC;
  B.nblocks = (OC + 63) / 64;
  B.OCp = B.nblocks * 64;
  B.npanels = (B.nblocks + LutWeights::kPanelBlocks - 1) / LutWeights::kPanelBlocks;
  B.panel_stride = static_cast<int64_t>(LutWeights::kPanelBlocks) * 64 * B.Kq;
  B.data = make_aligned<uint8_t>(static_cast<size_t>(B.nblocks * 64 * B.Kq) + 64);
  B.wsum.assign(static_cast<size_t>(B.OCp), 0);
  const int64_t full = K / 4;  // quads whose 4 values all exist
  for (int64_t oc = 0; oc < OC; ++oc) {
    const uint8_t* r = rows + static_cast<size_t>(oc) * row_bytes;
    int32_t s = 0;
    for (int64_t k = 0; k < K; ++k) s += unpack_value(r, k, 2);
    B.wsum[static_cast<size_t>(oc)] = s;
    const int64_t blk = oc / 64, c = oc % 64;
    const int64_t p = blk / LutWeights::kPanelBlocks, b = blk % LutWeights::kPanelBlocks;
    const int nb = B.panel_blocks(p);
    // Full panels: two streams of 2 blocks; partial panels: one of nb blocks.
    const int64_t bs = nb == LutWeights::kPanelBlocks ? 2 : nb;
    uint8_t* base = B.data.get() + p * B.panel_stride + (b / bs) * B.Kq * bs * 64 + (b % bs) * 64 + c;
    // The model's row already holds value 4q + j in bits 2j of byte q (two's
    // complement); u = w + 2 flips the top bit of every field.
    for (int64_t q = 0; q < full; ++q) base[q * bs * 64] = static_cast<uint8_t>(r[q] ^ 0xAAu);
    if (full < B.Kq) {
      uint8_t byte = 0;
      for (int64_t k = 4 * full; k < K; ++k)
        byte |= static_cast<uint8_t>((unpack_value(r, k, 2) + 2) << (2 * (k - 4 * full)));
      base[full * bs * 64] = byte;  // missing values: u = 0 (their activations are 0 anyway)
    }
  }
  return B;
}

int64_t lut_prepare_row_avx512vbmi(const uint8_t* x, int64_t K, uint32_t* offs, int64_t* asum) {
  const __m512i three = _mm512_set1_epi8(3), zero = _mm512_setzero_si512();
  const __m512i m3 = _mm512_set1_epi32(3), mc = _mm512_set1_epi32(0xC);
  __m512i sum = zero;
  for (int64_t k = 0; k < K; k += 64) {
    const int64_t left = K - k;
    const __mmask64 km = left >= 64 ? ~__mmask64{0} : ((__mmask64{1} << left) - 1);
    const __m512i v = _mm512_maskz_loadu_epi8(km, x + k);
    const __mmask64 bad = _mm512_cmpgt_epu8_mask(v, three);
    if (bad != 0) return k + static_cast<int64_t>(__builtin_ctzll(bad));
    sum = _mm512_add_epi64(sum, _mm512_sad_epu8(v, zero));
    // 16 quads: (a0 + 4 a1) * 64 | (a2 + 4 a3) * 64 << 16.
    const __m512i lo = _mm512_or_si512(_mm512_and_si512(v, m3), _mm512_and_si512(_mm512_srli_epi32(v, 6), mc));
    const __m512i hi = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(v, 16), m3),
                                       _mm512_and_si512(_mm512_srli_epi32(v, 22), mc));
    const __m512i o = _mm512_or_si512(_mm512_slli_epi32(lo, 6), _mm512_slli_epi32(hi, 22));
    const int64_t nq = std::min<int64_t>(16, (left + 3) / 4);
    _mm512_mask_storeu_epi32(offs + k / 4, static_cast<__mmask16>((1u << nq) - 1u), o);
  }
  *asum = _mm512_reduce_add_epi64(sum);
  return -1;
}

void lut_gemv_avx512vbmi(const LutWeights& B, const Epilogue& E, const uint32_t* offs, int32_t rowcorr,
                         void* out_row, int64_t p0, int64_t p1) {
  alignas(64) int32_t acc[LutWeights::kPanelBlocks * 64];
  for (int64_t p = p0; p < p1; ++p) {
    const int nb = B.panel_blocks(p);
    std::fill(acc, acc + nb * 64, 0);
    switch (nb) {
      case 1: panel_sums<1, 1>(B.panel(p), offs, B.Kq, acc); break;
      case 2: panel_sums<2, 1>(B.panel(p), offs, B.Kq, acc); break;
      case 3: panel_sums<3, 1>(B.panel(p), offs, B.Kq, acc); break;
      default: panel_sums<4, 2>(B.panel(p), offs, B.Kq, acc); break;
    }
    for (int b = 0; b < nb; ++b) {
      const int64_t oc0 = (p * LutWeights::kPanelBlocks + b) * 64;
      const int64_t n = std::min<int64_t>(64, B.OC - oc0);
      epilogue_row_avx512(acc + b * 64, oc0, n, rowcorr, E, out_row);
    }
  }
}

}  // namespace bbits::kernels::simd
