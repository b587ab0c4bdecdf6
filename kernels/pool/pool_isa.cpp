// bbits kernels — the pooling family's ISA code (semantics and exactness in
// pool.h), one template over the ISA tag. Compiled once per ISA
// (kernels/CMakeLists.txt); reached only after run-time CPU detection.
#include <algorithm>
#include <cmath>

#include "pool.h"
#include "simd/requant.h"

namespace bbits::kernels::simd {
namespace {

// Window [hs, he) x [ws, we) of output pixel (oh, ow) and its position count.
struct Window {
  int64_t hs, he, ws, we, count;
};
inline Window window(const PoolGeom& p, int64_t oh, int64_t ow, bool count_include_pad) {
  const int64_t h0 = oh * p.sh - p.pt, w0 = ow * p.sw - p.pl;
  Window w;
  w.hs = std::max<int64_t>(h0, 0);
  w.he = std::min<int64_t>(h0 + p.KH, p.H);
  w.ws = std::max<int64_t>(w0, 0);
  w.we = std::min<int64_t>(w0 + p.KW, p.W);
  w.count = count_include_pad ? int64_t{p.KH} * p.KW : (w.he - w.hs) * (w.we - w.ws);
  return w;
}

// The exact avg_pool_divide of one vector of window sums (pool.h).
template <class Tag>
struct Divide {
  using O = Ops<Tag>;
  using f64 = typename O::f64;
  using f32 = typename O::f32;
  using i32 = typename O::i32;
  bool same_grid = false;
  f64 two_m, c2s, D, invD;
  f32 cnt, Df, invDf;
  // pow2s = 2^s of r (computed once per kernel run).
  BBITS_INLINE Divide(const Requant& r, double pow2s, int64_t count, bool one_grid) : same_grid(one_grid) {
    if (one_grid) {
      const float cf = static_cast<float>(count);
      cnt = f32(cf);
      Df = f32(2.0f * cf);
      invDf = f32(1.0f / (2.0f * cf));
    } else {
      const double Dd = static_cast<double>(count) * pow2s * 2.0;  // count 2^(s+1), exact
      two_m = f64(2.0 * static_cast<double>(r.multiplier));
      c2s = f64(static_cast<double>(count) * pow2s);
      D = f64(Dd);
      invD = f64(1.0 / Dd);
    }
  }
  // q0 = floor(N * (1 / D)) is within one of floor(N / D); the remainder
  // N - q0 D (exact: q0 D < 2^53 is an exact product) corrects it.
  BBITS_INLINE f64 half(f64 t) const {
    const f64 N = t * two_m + c2s;  // exact
    f64 q = xsimd::floor(N * invD);
    const f64 rem = N - q * D;
    q = xsimd::select(rem < f64(0.0), q - f64(1.0), q);
    return xsimd::select(rem >= D, q + f64(1.0), q);
  }
  BBITS_INLINE i32 operator()(i32 sum) const {
    const i32 a = xsimd::abs(sum);
    i32 q;
    if (same_grid) {  // N = 2 |sum| + count < 2^24, q0 D exact in float32
      const f32 N = xsimd::to_float(a + a) + cnt;
      f32 qf = xsimd::floor(N * invDf);
      const f32 rem = N - qf * Df;
      qf = xsimd::select(rem < f32(0.0f), qf - f32(1.0f), qf);
      qf = xsimd::select(rem >= Df, qf + f32(1.0f), qf);
      q = xsimd::to_int(qf);
    } else {
      f64 lo, hi;
      O::to_f64(a, lo, hi);
      q = O::from_f64(half(lo), half(hi));
    }
    return xsimd::select(sum < i32(0), -q, q);
  }
};

// s0..s3 += the 16-bit sums a0, a1 widened to int32 (in channel order); a0, a1 = 0.
template <class Tag>
BBITS_INLINE void flush_sums(typename Ops<Tag>::i16& a0, typename Ops<Tag>::i16& a1, bool sgn,
                             typename Ops<Tag>::i32& s0, typename Ops<Tag>::i32& s1, typename Ops<Tag>::i32& s2,
                             typename Ops<Tag>::i32& s3) {
  using O = Ops<Tag>;
  typename O::i32 t0, t1, t2, t3;
  O::widen_words(a0, sgn, t0, t1);
  O::widen_words(a1, sgn, t2, t3);
  s0 = s0 + t0;
  s1 = s1 + t1;
  s2 = s2 + t2;
  s3 = s3 + t3;
  a0 = a1 = typename O::i16(int16_t{0});
}

}  // namespace

template <class Tag>
void maxpool_rows(const MaxPoolParams& p, const uint8_t* in, uint8_t* out, int64_t r0, int64_t r1) {
  using O = Ops<Tag>;
  using u8 = typename O::u8;
  using i16 = typename O::i16;
  using i32 = typename O::i32;
  constexpr int VB = O::kBytes;
  const u8 flip(static_cast<uint8_t>(p.in_signed ? 0x80 : 0x00));
  const RequantVec<Tag> rq(p.rq, 0);
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t n = r / p.OH, oh = r % p.OH;
    for (int64_t ow = 0; ow < p.OW; ++ow) {
      const Window w = window(p, oh, ow, false);
      uint8_t* o = out + ((n * p.OH + oh) * p.OW + ow) * p.C;
      for (int64_t c = 0; c < p.C; c += VB) {
        const int64_t nb = std::min<int64_t>(VB, p.C - c);
        // Max in the unsigned domain (signed values flipped by 0x80).
        u8 mx(uint8_t{0});
        for (int64_t ih = w.hs; ih < w.he; ++ih)
          for (int64_t iw = w.ws; iw < w.we; ++iw) {
            const uint8_t* px = in + ((n * p.H + ih) * p.W + iw) * p.C + c;
            mx = xsimd::max(mx, (nb == VB ? u8::load_unaligned(px) : O::load_bytes(px, nb)) ^ flip);
          }
        i16 h0, h1;
        O::widen_bytes(mx ^ flip, p.in_signed, h0, h1);
        i32 q[4];
        O::widen_words(h0, true, q[0], q[1]);
        O::widen_words(h1, true, q[2], q[3]);
        if (!p.identity)
#pragma GCC unroll 4
          for (int j = 0; j < 4; ++j) q[j] = requant<Tag>(q[j], rq);
        O::template store_u8<4>(o + c, q[0], q[1], q[2], q[3], nb, p.out_signed, p.lo, p.hi);
      }
    }
  }
}

template <class Tag>
void avgpool_rows(const AvgPoolParams& p, const uint8_t* in, uint8_t* out, int64_t r0, int64_t r1) {
  using O = Ops<Tag>;
  using u8 = typename O::u8;
  using i16 = typename O::i16;
  using i32 = typename O::i32;
  constexpr int L = O::kLanes, VB = O::kBytes;
  const bool sgn = p.in_signed;
  const i32 lo(p.lo), hi(p.hi);
  // One grid and count <= 2^14 (N < 2^23, q0 D < 2^24): the float32 division.
  const bool one_grid = p.r.multiplier == (1 << 30) && p.r.shift == 30 && int64_t{p.KH} * p.KW <= 16384;
  const double pow2s = std::ldexp(1.0, p.r.shift);
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t n = r / p.OH, oh = r % p.OH;
    for (int64_t ow = 0; ow < p.OW; ++ow) {
      const Window w = window(p, oh, ow, p.count_include_pad);
      const Divide<Tag> divide(p.r, pow2s, w.count, one_grid);
      uint8_t* o = out + ((n * p.OH + oh) * p.OW + ow) * p.C;
      for (int64_t c0 = 0; c0 < p.C; c0 += VB) {
        const int64_t nb = std::min<int64_t>(VB, p.C - c0);
        // 16-bit sums over at most 256 taps (255 * 256 and -128 * 256 fit),
        // then added to int32 sums s0..s3.
        i32 s0(0), s1(0), s2(0), s3(0);
        i16 a0(int16_t{0}), a1(int16_t{0});
        int taps = 0;
        for (int64_t ih = w.hs; ih < w.he; ++ih) {
          const uint8_t* row = in + ((n * p.H + ih) * p.W) * p.C + c0;
          for (int64_t iw = w.ws; iw < w.we; ++iw) {
            const u8 v = nb == VB ? u8::load_unaligned(row + iw * p.C) : O::load_bytes(row + iw * p.C, nb);
            i16 v0, v1;
            O::widen_bytes(v, sgn, v0, v1);
            a0 = a0 + v0;
            a1 = a1 + v1;
            if (++taps == 256) {
              flush_sums<Tag>(a0, a1, sgn, s0, s1, s2, s3);
              taps = 0;
            }
          }
        }
        flush_sums<Tag>(a0, a1, sgn, s0, s1, s2, s3);
        const i32 s[4] = {s0, s1, s2, s3};
        i32 q[4];
#pragma GCC unroll 4
        for (int j = 0; j < 4; ++j) q[j] = j * L < nb ? xsimd::min(xsimd::max(divide(s[j]), lo), hi) : i32(0);
        O::template store_u8<4>(o + c0, q[0], q[1], q[2], q[3], nb, p.out_signed, p.lo, p.hi);
      }
    }
  }
}

template <class Tag>
void avgpool_rows_f32(const AvgPoolParams& p, const uint8_t* in, float* out, int64_t r0, int64_t r1) {
  using O = Ops<Tag>;
  using f32 = typename O::f32;
  using f64 = typename O::f64;
  constexpr int L = O::kLanes;
  const f32 sc(p.in_scale);
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t n = r / p.OH, oh = r % p.OH;
    for (int64_t ow = 0; ow < p.OW; ++ow) {
      const Window w = window(p, oh, ow, p.count_include_pad);
      const f64 cnt(static_cast<double>(w.count));
      float* o = out + ((n * p.OH + oh) * p.OW + ow) * p.C;
      for (int64_t c0 = 0; c0 < p.C; c0 += L) {
        const int64_t nc = std::min<int64_t>(L, p.C - c0);
        f64 s0(0.0), s1(0.0);
        for (int64_t ih = w.hs; ih < w.he; ++ih) {
          const uint8_t* row = in + ((n * p.H + ih) * p.W) * p.C + c0;
          for (int64_t iw = w.ws; iw < w.we; ++iw) {
            // float(q) * s in float (as the reference), summed in double (exact).
            const f32 f = xsimd::to_float(O::load_widen(row + iw * p.C, nc, p.in_signed)) * sc;
            f64 h0, h1;
            O::f32_to_f64(f, h0, h1);
            s0 = s0 + h0;
            s1 = s1 + h1;
          }
        }
        O::store_f32(o + c0, O::f64_to_f32(s0 / cnt, s1 / cnt), nc);
      }
    }
  }
}

template void maxpool_rows<ThisIsa>(const MaxPoolParams&, const uint8_t*, uint8_t*, int64_t, int64_t);
template void avgpool_rows<ThisIsa>(const AvgPoolParams&, const uint8_t*, uint8_t*, int64_t, int64_t);
template void avgpool_rows_f32<ThisIsa>(const AvgPoolParams&, const uint8_t*, float*, int64_t, int64_t);

}  // namespace bbits::kernels::simd
