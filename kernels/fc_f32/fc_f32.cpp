// bbits kernels — the float fc family, portable part: validation, prepacking,
// cost model and table entries (layout in fc_f32.h, ISA code in
// fc_f32_isa.cpp).
//
// These replace fc_w32a32_f32_onednn on the classifiers behind a float global
// average pool: that kernel dequantizes the weights to float32 at load and
// streams 4 bytes per weight, these stream 1, 0.5 or 0.25.
#include <algorithm>
#include <cmath>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "bbits/kernels/thread_pool.h"
#include "fc_f32.h"

namespace bbits::kernels::simd {
namespace {

template <class F>
void with_fc_f32_isa(Isa isa, F&& f) {
  with_isa<Isa::AVX512, Isa::AVX2, Isa::NEON>(isa, f);
}

int lanes_of(Isa isa) { return vec_layout(isa).lanes; }
int rows_per_pass(Isa isa) { return lanes_of(isa) == 16 ? 4 : 2; }  // input rows sharing one unpack

std::string kernel_name(int bits, Isa isa) { return "fc_w" + std::to_string(bits) + "a32_f32_" + isa_tag(isa); }

bool out_ok(const QuantInfo& q) { return q.bits == 32 || q.bits == 16 || q.bits == 8 || q.bits == 4 || q.bits == 2; }

bool fc_f32_supports(const FcDesc& f, int bits) { return f.wbits == bits && f.in.bits == 32 && out_ok(f.out); }

class FcF32 final : public Kernel {
 public:
  FcF32(std::string name, Isa isa, int bits, const FcDesc& d, const Weights& w)
      : name_(std::move(name)), isa_(isa), d_(d) {
    check_desc(d_);
    if (!fc_f32_supports(d_, bits)) throw std::invalid_argument(name_ + ": cannot run " + describe(d_));
    check_cpu(isa_, name_);
    const int64_t K = d_.K, OC = d_.OC;
    const auto uOC = static_cast<size_t>(OC);
    const size_t row = packed_row_bytes(K, bits);
    if (w.data == nullptr || w.size < row * uOC)
      throw std::invalid_argument(name_ + ": weights hold " + std::to_string(w.size) + " bytes, " +
                                  std::to_string(row * uOC) + " needed for " + std::to_string(OC) + " rows of " +
                                  std::to_string(K) + " values at " + std::to_string(bits) + " bits");
    if (w.scales.size() != uOC && w.scales.size() != 1)
      throw std::invalid_argument(name_ + ": expected " + std::to_string(OC) + " weight scales (or 1), got " +
                                  std::to_string(w.scales.size()));
    if (!w.bias_q.empty() && w.bias_q.size() != uOC)
      throw std::invalid_argument(name_ + ": expected " + std::to_string(OC) + " int32 biases, got " +
                                  std::to_string(w.bias_q.size()));
    if (!w.bias_f.empty() && w.bias_f.size() != uOC)
      throw std::invalid_argument(name_ + ": expected " + std::to_string(OC) + " float biases, got " +
                                  std::to_string(w.bias_f.size()));

    const int lanes = lanes_of(isa_);
    nblocks_ = (OC + kFcF32Rows - 1) / kFcF32Rows;
    const int64_t OCp = nblocks_ * kFcF32Rows;
    const int64_t kchunks = (K + lanes - 1) / lanes;
    const int64_t cb = lanes * bits / 8;
    const int64_t block_bytes = kchunks * kFcF32Rows * cb;

    // Scales and biases (as the reference: a missing float bias is
    // float(bias_q * s_w * s_in) with s_in = 1 for a float input).
    scale_ = make_aligned<double>(static_cast<size_t>(OCp));
    bias_ = make_aligned<double>(static_cast<size_t>(OCp));
    for (size_t o = 0; o < uOC; ++o) {
      const float s = w.scales[w.scales.size() == 1 ? 0 : o];
      if (!(std::isfinite(s) && s > 0.0f))
        throw std::invalid_argument(name_ + ": weight scale " + std::to_string(s) + " of channel " +
                                    std::to_string(o) + " must be positive and finite");
      scale_[o] = static_cast<double>(s);
      float b = 0.0f;
      if (!w.bias_f.empty()) b = w.bias_f[o];
      else if (!w.bias_q.empty()) b = static_cast<float>(static_cast<double>(w.bias_q[o]) * static_cast<double>(s));
      bias_[o] = static_cast<double>(b);
    }

    // Prepack: blocks of 4 rows, chunks of `lanes` values (fc_f32.h).
    packed_ = make_aligned<uint8_t>(static_cast<size_t>(nblocks_ * block_bytes));
    const uint32_t mask = bits == 8 ? 0xffu : (1u << bits) - 1u;
    std::vector<int> pos(static_cast<size_t>(lanes));  // bit position of field j in a chunk (Ops::field_pos)
    with_fc_f32_isa(isa_, [&]<class Tag>() {
      for (int j = 0; j < lanes; ++j) pos[static_cast<size_t>(j)] = fc_f32_field_pos<Tag>(bits, j);
    });
    for (int64_t o = 0; o < OC; ++o) {
      const uint8_t* src = w.data + static_cast<size_t>(o) * row;
      uint8_t* blk = packed_.get() + (o / kFcF32Rows) * block_bytes + (o % kFcF32Rows) * cb;
      for (int64_t k = 0; k < K; ++k) {
        const auto v = static_cast<uint32_t>(unpack_value(src, k, bits)) & mask;
        uint8_t* chunk = blk + (k / lanes) * kFcF32Rows * cb;
        const int at = pos[static_cast<size_t>(k % lanes)];
        chunk[at / 8] = static_cast<uint8_t>(chunk[at / 8] | (v << (at % 8)));
      }
    }

    call_.bits = bits;
    call_.K = K;
    call_.OC = OC;
    call_.N = d_.N;
    call_.kchunks = kchunks;
    call_.block_bytes = block_bytes;
    call_.w = packed_.get();
    call_.scale = scale_.get();
    call_.bias = bias_.get();
    call_.act = d_.activation == Activation::Relu ? 1 : (d_.activation == Activation::Relu6 ? 2 : 0);
    if (d_.out.is_float()) {
      call_.out = FcF32Out::F32;
    } else {
      const ClampRange cr = output_clamp(d_.out, d_.activation);
      call_.out = d_.out.bits == 16 ? (d_.out.is_signed ? FcF32Out::S16 : FcF32Out::U16)
                                    : (d_.out.is_signed ? FcF32Out::S8 : FcF32Out::U8);
      call_.out_scale = d_.out.scale;
      call_.lo = static_cast<float>(cr.lo);  // integers below 2^16: exact
      call_.hi = static_cast<float>(cr.hi);
    }
    // Row blocks per parallel chunk: at least ~64k multiply-adds.
    grain_ = std::max<int64_t>(1, 65536 / std::max<int64_t>(1, kFcF32Rows * K * d_.N));
  }

  std::string_view name() const override { return name_; }

  void run(const KernelArgs& args, ThreadPool* pool) const override {
    check_io(args, 1, name_);
    FcF32Call c = call_;
    c.x = static_cast<const float*>(args.inputs[0]);
    c.y = args.output;
    with_fc_f32_isa(isa_, [&]<class Tag>() {
      parallel_for(pool, nblocks_, [&](int64_t b, int64_t e, int) { fc_f32_rows<Tag>(c, b, e); }, grain_);
    });
  }

 private:
  std::string name_;
  Isa isa_;
  FcDesc d_;
  int64_t nblocks_ = 0, grain_ = 1;
  AlignedArray<uint8_t> packed_;
  AlignedArray<double> scale_, bias_;
  FcF32Call call_;
};

// Single-thread estimate: the larger of the unpack + FMA work (kernel_rate:
// weights per ns of one pass at batch 1, weights in cache; each further input
// row of a pass adds one FMA per weight, ~1/3 of that work) and the stream of
// the packed weights (read once per run: a block is reused from L1 by every
// pass), plus the epilogue and a fixed overhead.
double fc_f32_cost(const FcDesc& f, int bits, Isa isa, const std::string& name) {
  const double rate = std::max(1e-3, kernel_rate(name));
  const double weights = static_cast<double>(f.OC) * static_cast<double>(f.K);
  const double wbytes = static_cast<double>(f.OC) * static_cast<double>(packed_row_bytes(f.K, bits));
  const double bw = wbytes <= 1.0e6 ? 85.0 : (wbytes <= 24.0e6 ? 40.0 : 24.0);  // GB/s = bytes per ns
  const double n = static_cast<double>(f.N);
  const double passes = std::ceil(n / rows_per_pass(isa));
  const double compute = weights * (passes + 0.35 * (n - passes)) / rate;
  const double epilogue = n * static_cast<double>(f.OC) * 0.5;
  return std::max(compute, wbytes / bw) + epilogue + 500.0;
}

// Weights per ns of one pass (batch 1, one thread, weights in L2), measured
// on Zen 4 with bench/kernels (fc_f32/...).
// (512x1000 and 1280x1000: ~29-31 at every width with AVX-512; AVX2 ~23 at
// 8 bits, ~17 at 4 bits (shift / shift / convert), ~25 at 2 bits (vpermps).
// NEON: estimates, 4 lanes.)
double default_rate(int bits, Isa isa) {
  if (isa == Isa::AVX512) return 29.0;
  if (isa == Isa::AVX2) return bits == 8 ? 23.0 : (bits == 4 ? 17.0 : 25.0);
  return 8.0;
}

void add(std::vector<KernelInfo>& t, int bits, Isa isa) {
  KernelInfo k;
  k.name = kernel_name(bits, isa);
  k.op = OpKind::FullyConnected;
  k.weight_bits = bits;
  k.act_bits = 32;
  k.isa = isa;
  set_default_rate(k.name, default_rate(bits, isa));
  k.supports = [bits, isa](const OpDesc& d) {
    const auto* f = std::get_if<FcDesc>(&d);
    return f && cpu_has(isa) && fc_f32_supports(*f, bits);
  };
  k.cost_ns = [bits, isa, name = k.name](const OpDesc& d) {
    return fc_f32_cost(std::get<FcDesc>(d), bits, isa, name);
  };
  k.create = [bits, isa, name = k.name](const OpDesc& d, const Weights& w) -> std::unique_ptr<Kernel> {
    const auto* f = std::get_if<FcDesc>(&d);
    if (!f) throw std::invalid_argument(name + ": not a fully connected layer: " + describe(d));
    return std::make_unique<FcF32>(name, isa, bits, *f, w);
  };
  k.note = std::to_string(bits) + "-bit weights kept packed, unpacked in registers; float32 input, float32 sums "
           "(4 rows x " + std::to_string(rows_per_pass(isa)) + " inputs per pass)";
  t.push_back(std::move(k));
}

}  // namespace

void register_fc_f32_kernels(std::vector<KernelInfo>& table) {
  for (Isa isa : {Isa::AVX512, Isa::AVX2, Isa::NEON})
    if (isa_built(isa))
      for (int bits : {8, 4, 2}) add(table, bits, isa);
}

}  // namespace bbits::kernels::simd
