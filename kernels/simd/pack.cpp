// bbits SIMD kernels — weight prepacking and epilogue set-up (portable code).
#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "simd_internal.h"

namespace bbits::kernels::simd {

PackedB pack_weights(const uint8_t* rows, size_t row_bytes, int src_bits, int64_t OC, int64_t K, int bits,
                     int lanes, int nb_max, WEnc enc) {
  if (bits != 2 && bits != 4 && bits != 8)
    throw std::invalid_argument("pack_weights: bits must be 2, 4 or 8, got " + std::to_string(bits));
  if (OC <= 0 || K <= 0) throw std::invalid_argument("pack_weights: empty weight matrix");
  if (src_bits != 2 && src_bits != 4 && src_bits != 8)
    throw std::invalid_argument("pack_weights: source bits must be 2, 4 or 8, got " + std::to_string(src_bits));
  if (src_bits > bits) throw std::invalid_argument("pack_weights: cannot narrow weights");
  if (row_bytes < packed_row_bytes(K, src_bits)) throw std::invalid_argument("pack_weights: rows too short");
  PackedB B;
  B.bits = bits;
  B.lanes = lanes;
  B.nb_max = nb_max;
  B.fields = 8 / bits;
  B.kgroup = 4 * B.fields;
  B.enc = enc;
  B.K = K;
  B.Kp = (K + B.kgroup - 1) / B.kgroup * B.kgroup;
  B.ngroups = B.Kp / B.kgroup;
  B.OC = OC;
  B.nblocks = (OC + lanes - 1) / lanes;
  B.OCp = B.nblocks * lanes;
  B.npanels = (B.nblocks + nb_max - 1) / nb_max;
  const int64_t lane_bytes = 4;
  const int64_t block_group_bytes = lanes * lane_bytes;  // one vector
  B.panel_stride = static_cast<int64_t>(nb_max) * block_group_bytes * B.ngroups;
  B.bytes = static_cast<size_t>(B.nblocks * block_group_bytes * B.ngroups);
  B.data = make_aligned<uint8_t>(B.bytes + 64);
  B.wsum.assign(static_cast<size_t>(B.OCp), 0);

  const int F = B.fields;
  const uint32_t mask = bits == 8 ? 0xffu : ((1u << bits) - 1u);
  const int32_t off = B.offset();
  std::vector<int32_t> wrow(static_cast<size_t>(B.Kp), 0);
  for (int64_t oc = 0; oc < B.OCp; ++oc) {
    std::fill(wrow.begin(), wrow.end(), 0);
    if (oc < OC) {
      const uint8_t* r = rows + static_cast<size_t>(oc) * row_bytes;
      int64_t s = 0;
      for (int64_t k = 0; k < K; ++k) {
        wrow[static_cast<size_t>(k)] = unpack_value(r, k, src_bits);
        s += wrow[static_cast<size_t>(k)];
      }
      B.wsum[static_cast<size_t>(oc)] = static_cast<int32_t>(s);
    }
    const int64_t blk = oc / lanes, lane = oc % lanes;
    const int64_t p = blk / nb_max, b = blk % nb_max;
    const int nb = B.panel_blocks(p);
    uint8_t* pbase = B.data.get() + p * B.panel_stride;
    for (int64_t g = 0; g < B.ngroups; ++g) {
      uint8_t* lanep = pbase + (g * nb + b) * block_group_bytes + lane * lane_bytes;
      for (int i = 0; i < 4; ++i) {
        uint32_t byte = 0;
        for (int j = 0; j < F; ++j) {
          const int64_t k = g * B.kgroup + 4 * j + i;
          const int32_t w = wrow[static_cast<size_t>(k)];
          uint32_t e;
          if (bits == 8) {
            e = static_cast<uint32_t>(w) & 0xffu;
          } else if (B.enc == WEnc::TopRaw && j == F - 1) {
            e = static_cast<uint32_t>(w) & mask;
          } else {
            e = static_cast<uint32_t>(w + off) & mask;
          }
          byte |= e << (j * bits);
        }
        lanep[i] = static_cast<uint8_t>(byte);
      }
    }
  }
  return B;
}

size_t out_elem_bytes(OutKind k) {
  switch (k) {
    case OutKind::U8:
    case OutKind::S8:
      return 1;
    case OutKind::U16:
    case OutKind::S16:
      return 2;
    case OutKind::F32:
      return 4;
  }
  return 1;
}

Epilogue make_epilogue(int64_t OC, int64_t OCp, int64_t K, int wbits, const Weights& w, const QuantInfo& in,
                       const QuantInfo& out, Activation act, const std::vector<int32_t>& wsum,
                       const std::string& who) {
  Epilogue E;
  E.OC = OC;
  E.act = act;
  const auto n = static_cast<size_t>(OC);
  if (w.scales.size() != 1 && w.scales.size() != n)
    throw std::invalid_argument(who + ": expected " + std::to_string(OC) + " weight scales (or 1), got " +
                                std::to_string(w.scales.size()));
  for (float s : w.scales)
    if (!(std::isfinite(s) && s > 0.0f))
      throw std::invalid_argument(who + ": weight scale " + std::to_string(s) + " must be positive and finite");
  if (!w.bias_q.empty() && w.bias_q.size() != n)
    throw std::invalid_argument(who + ": expected " + std::to_string(OC) + " int32 biases, got " +
                                std::to_string(w.bias_q.size()));
  if (!w.bias_f.empty() && w.bias_f.size() != n)
    throw std::invalid_argument(who + ": expected " + std::to_string(OC) + " float biases, got " +
                                std::to_string(w.bias_f.size()));
  auto sw = [&](int64_t oc) {
    return static_cast<double>(w.scales.size() == 1 ? w.scales[0] : w.scales[static_cast<size_t>(oc)]);
  };
  const double s_in = static_cast<double>(in.scale);
  E.colterm = make_aligned<int32_t>(static_cast<size_t>(OCp));
  E.mult = make_aligned<int64_t>(static_cast<size_t>(OCp));
  E.round = make_aligned<int64_t>(static_cast<size_t>(OCp));
  E.shift = make_aligned<int64_t>(static_cast<size_t>(OCp));
  E.bias64.assign(n, 0);
  E.bfrac.assign(n, 0);
  if (out.bits == 32) {
    E.kind = OutKind::F32;
    E.mul.resize(n);
    E.bias_f.assign(n, 0.0f);
    for (int64_t oc = 0; oc < OC; ++oc) {
      const auto i = static_cast<size_t>(oc);
      E.mul[i] = sw(oc) * s_in;
      if (!w.bias_f.empty()) E.bias_f[i] = w.bias_f[i];
      else if (!w.bias_q.empty()) E.bias_f[i] = static_cast<float>(static_cast<double>(w.bias_q[i]) * sw(oc) * s_in);
    }
  } else {
    E.kind = out.bits <= 8 ? (out.is_signed ? OutKind::S8 : OutKind::U8)
                           : (out.is_signed ? OutKind::S16 : OutKind::U16);
    const ClampRange cr = output_clamp(out, act);
    E.lo = cr.lo;
    E.hi = cr.hi;
    int64_t max_bias = 0;
    for (int64_t oc = 0; oc < OC; ++oc) {
      const auto i = static_cast<size_t>(oc);
      if (!w.bias_q.empty()) E.bias64[i] = w.bias_q[i];
      else if (!w.bias_f.empty()) E.bias64[i] = quantize_bias(w.bias_f[i], sw(oc), s_in);
      max_bias = std::max<int64_t>(max_bias, E.bias64[i] < 0 ? -E.bias64[i] : E.bias64[i]);
      Requant r;
      try {
        r = make_requant(sw(oc) * s_in / static_cast<double>(out.scale));
      } catch (const std::invalid_argument& e) {
        throw std::invalid_argument(who + ": channel " + std::to_string(oc) + ": " + e.what());
      }
      E.mult[oc] = r.multiplier;
      E.shift[oc] = r.shift;
      E.round[oc] = r.shift > 0 ? (int64_t{1} << (r.shift - 1)) : 0;
      // A float bias keeps its sub-step part (docs/FORMAT.md, bias_fraction).
      if (!w.bias_f.empty()) {
        E.bfrac[i] = bias_fraction(w.bias_f[i], sw(oc), s_in, E.bias64[i], r);
        E.round[oc] += E.bfrac[i];
      }
    }
    const double wmax = static_cast<double>(qmax(wbits, true) + 1);  // raw codes reach -2^(b-1)
    const double imax = static_cast<double>(std::max(-qmin(in.bits, in.is_signed), qmax(in.bits, in.is_signed)));
    E.wide = wmax * imax * static_cast<double>(K) + static_cast<double>(max_bias) >= 2147483647.0;
  }
  const auto OC16 = static_cast<size_t>((OCp + 15) / 16 * 16);
  E.mult32 = make_aligned<int32_t>(OC16);
  E.round_eo = make_aligned<int64_t>(OC16);
  E.shift_eo = make_aligned<int64_t>(OC16);
  E.small_mult = E.kind != OutKind::F32;
  for (int64_t oc = 0; oc < OCp; ++oc) {
    E.mult32[oc] = static_cast<int32_t>(E.mult[oc]);
    const int64_t blk = oc / 16 * 16, l = oc % 16;
    const int64_t pos = blk + (l % 2 == 0 ? l / 2 : 8 + l / 2);
    E.round_eo[pos] = E.round[oc];
    E.shift_eo[pos] = E.shift[oc];
    // m * 2^-s <= 1  <=>  m <= 2^s (m < 2^31).
    if (oc < OC && E.kind != OutKind::F32 && E.shift[oc] < 31 && E.mult[oc] > (int64_t{1} << E.shift[oc]))
      E.small_mult = false;
  }
  for (int64_t oc = 0; oc < OC; ++oc) {
    int64_t ct = 0;
    if (in.is_signed) ct -= 128 * static_cast<int64_t>(wsum[static_cast<size_t>(oc)]);
    if (E.kind != OutKind::F32 && !E.wide) ct += E.bias64[static_cast<size_t>(oc)];
    E.colterm[oc] = static_cast<int32_t>(static_cast<uint32_t>(static_cast<uint64_t>(ct)));  // wraps like int32
  }
  if (!E.small_mult && !E.wide && (E.kind == OutKind::U8 || E.kind == OutKind::S8)) add_pre_clamp(E, OC16);
  return E;
}

void add_pre_clamp(Epilogue& E, size_t OC16) {
  constexpr __int128 kMin = INT32_MIN, kMax = INT32_MAX;
  AlignedArray<int32_t> lo = make_aligned<int32_t>(OC16), hi = make_aligned<int32_t>(OC16);
  std::fill_n(lo.get(), OC16, 0);
  std::fill_n(hi.get(), OC16, 0);
  for (int64_t oc = 0; oc < E.OC; ++oc) {
    const __int128 m = E.mult[oc], d = static_cast<__int128>(1) << E.shift[oc];
    if (m <= 0) throw std::logic_error("add_pre_clamp: channel " + std::to_string(oc) + " has no positive multiplier");
    // f(a) >= hi  <=>  a * m + round >= hi * 2^s  <=>  a >= ceil((hi * 2^s - round) / m)
    const __int128 nh = static_cast<__int128>(E.hi) * d - E.round[oc];
    __int128 ah = nh >= 0 ? (nh + m - 1) / m : -((-nh) / m);
    // f(a) <= lo  <=>  a * m + round <= (lo + 1) * 2^s - 1
    const __int128 nl = (static_cast<__int128>(E.lo) + 1) * d - E.round[oc] - 1;
    __int128 al = nl >= 0 ? nl / m : -((-nl + m - 1) / m);
    ah = std::clamp(ah, kMin, kMax);
    al = std::clamp(al, kMin, kMax);
    // Every clamped a requantizes into int32 (the blend keeps 32 bits). This
    // holds for every multiplier make_requant gives (< 2^31): with s >= 1 the
    // values stay within hi + 2^30; with s = 0, a_hi = ceil(hi / m) <= 1 and
    // a_lo = floor(lo / m) >= -1 give at most m and at least -m.
    const Requant r{static_cast<int32_t>(E.mult[oc]), static_cast<int32_t>(E.shift[oc])};
    for (const __int128 a : {al, ah}) {
      const int64_t f = apply_requant(static_cast<int64_t>(a), r, E.bfrac[static_cast<size_t>(oc)]);
      if (f < kMin || f > kMax)
        throw std::logic_error("add_pre_clamp: channel " + std::to_string(oc) + " requantizes outside int32");
    }
    lo[static_cast<size_t>(oc)] = static_cast<int32_t>(al);
    hi[static_cast<size_t>(oc)] = static_cast<int32_t>(ah);
  }
  E.pre_lo = std::move(lo);
  E.pre_hi = std::move(hi);
}

void epilogue_row_scalar(const int32_t* acc, int64_t oc0, int64_t n, int32_t rowcorr, const Epilogue& E,
                         void* out_row) {
  for (int64_t c = 0; c < n; ++c) {
    const int64_t oc = oc0 + c;
    const auto i = static_cast<size_t>(oc);
    const int32_t a = static_cast<int32_t>(static_cast<uint32_t>(acc[c]) + static_cast<uint32_t>(E.colterm[oc]) -
                                           static_cast<uint32_t>(rowcorr));
    if (E.kind == OutKind::F32) {
      float v = static_cast<float>(static_cast<double>(a) * E.mul[i] + static_cast<double>(E.bias_f[i]));
      if (E.act != Activation::None) {
        if (!(v > 0.0f)) v = 0.0f;
        if (E.act == Activation::Relu6 && v > 6.0f) v = 6.0f;
      }
      static_cast<float*>(out_row)[oc] = v;
      continue;
    }
    const int64_t a64 = E.wide ? static_cast<int64_t>(a) + E.bias64[i] : static_cast<int64_t>(a);
    const int64_t v = clamp_i64(
        apply_requant(a64, Requant{static_cast<int32_t>(E.mult[oc]), static_cast<int32_t>(E.shift[oc])}, E.bfrac[i]),
        E.lo, E.hi);
    switch (E.kind) {
      case OutKind::U8:
        static_cast<uint8_t*>(out_row)[oc] = static_cast<uint8_t>(v);
        break;
      case OutKind::S8:
        static_cast<int8_t*>(out_row)[oc] = static_cast<int8_t>(v);
        break;
      case OutKind::U16:
        static_cast<uint16_t*>(out_row)[oc] = static_cast<uint16_t>(v);
        break;
      case OutKind::S16:
        static_cast<int16_t*>(out_row)[oc] = static_cast<int16_t>(v);
        break;
      case OutKind::F32:
        break;
    }
  }
}

}  // namespace bbits::kernels::simd
