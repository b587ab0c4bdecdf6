// bbits kernels — the lookup-table family, portable part: weight packing, the
// fc driver, cost model and table entry (scheme in lut.h, ISA code in
// lut_isa.cpp).
#include <algorithm>
#include <stdexcept>
#include <string>

#include "bbits/kernels/cpu.h"
#include "bbits/kernels/thread_pool.h"
#include "lut.h"

namespace bbits::kernels::simd {

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

namespace {

// Batch-1 GEMV; N > 1 rows run one after the other (the plan gives batched
// layers to the GEMM kernels, whose cost grows slower with N).
bool lut_cpu() {
  const CpuFeatures& f = cpu_features();
  return cpu_has(Isa::AVX512) && f.avx512_vbmi;
}
bool lut_supports(const FcDesc& f) {
  if (f.wbits != 2 || f.in.bits != 2 || f.in.is_signed) return false;
  if (!(f.out.bits == 2 || f.out.bits == 4 || f.out.bits == 8 || f.out.bits == 16 || f.out.bits == 32)) return false;
  return f.N >= 1 && f.K >= 1 && f.K <= 65536 && f.OC >= 1;
}
constexpr const char* kLutName = "fc_w2a2_u2s2_avx512vbmi_lut";
// MACs per ns of the table lookups (one thread): bbits-bench-kernels
// fc/4096x4096/w2a2_lut on the Zen 4 host measured 234 (2-bit VNNI GEMV on
// the same layer in the same run: 193).
constexpr double kLutDefaultRate = 230.0;
// Per input row: range check, sum and table offsets (bytes per ns).
constexpr double kLutPrepBytesPerNs = 16.0;

double lut_cost(const FcDesc& f) {
  const double rate = std::max(1e-3, kernel_rate(kLutName));
  const double n = static_cast<double>(f.N);
  const double wbytes = static_cast<double>(f.OC) * static_cast<double>(packed_row_bytes(f.K, 2));
  const double per_row = std::max(static_cast<double>(f.K * f.OC) / rate, wbytes / stream_bytes_per_ns(wbytes)) +
                         static_cast<double>(f.K) / kLutPrepBytesPerNs;
  return n * per_row + n * static_cast<double>(f.OC) * kEpilogueNsPerOutput + kFixedNs;
}

class LutFc final : public Kernel {
 public:
  LutFc(std::string name, const FcDesc& d, const Weights& w) : name_(std::move(name)), d_(d) {
    check_desc(d_);
    if (!lut_supports(d_)) throw std::invalid_argument(name_ + ": cannot run " + describe(d_));
    if (!lut_cpu()) throw std::invalid_argument(name_ + ": this CPU lacks AVX-512 BW / VBMI");
    const size_t row = packed_row_bytes(d_.K, 2);
    const size_t need = row * static_cast<size_t>(d_.OC);
    if (w.data == nullptr || w.size < need)
      throw std::invalid_argument(name_ + ": weights hold " + std::to_string(w.size) + " bytes, " +
                                  std::to_string(need) + " needed for " + std::to_string(d_.OC) + " rows of " +
                                  std::to_string(d_.K) + " values at 2 bits");
    B_ = pack_lut_w2(w.data, row, d_.OC, d_.K);
    const ConvDesc c = fc_as_conv(d_);
    E_ = make_epilogue(d_.OC, B_.OCp, d_.K, 2, w, c.in, c.out, c.activation, B_.wsum, 0, vec_layout(Isa::AVX512),
                       name_);
  }

  std::string_view name() const override { return name_; }

  size_t scratch_bytes(int) const override { return round64(static_cast<size_t>(B_.Kq) * 4 + 64); }

  void run(const KernelArgs& args, ThreadPool* pool) const override {
    if (args.inputs.size() != 1)
      throw std::invalid_argument(name_ + ": expected 1 input, got " + std::to_string(args.inputs.size()));
    if (args.inputs[0] == nullptr || args.output == nullptr) throw std::invalid_argument(name_ + ": null input or output");
    if (args.scratch == nullptr || args.scratch_size < scratch_bytes(1))
      throw std::invalid_argument(name_ + ": scratch of " + std::to_string(args.scratch_size) + " bytes, " +
                                  std::to_string(scratch_bytes(1)) + " needed");
    const auto* in = static_cast<const uint8_t*>(args.inputs[0]);
    auto* out = static_cast<uint8_t*>(args.output);
    auto* offs = static_cast<uint32_t*>(args.scratch);
    const size_t esz = out_elem_bytes(E_.kind);
    for (int64_t n = 0; n < d_.N; ++n) {
      int64_t asum = 0;
      int64_t bad = -1;
      with_isa<Isa::AVX512>(Isa::AVX512, [&]<class>() { bad = lut_prepare_row<Avx512Vbmi>(in + n * d_.K, d_.K, offs, &asum); });
      if (bad >= 0)
        throw std::invalid_argument(name_ + ": input value " + std::to_string(in[n * d_.K + bad]) + " at row " +
                                    std::to_string(n) + ", index " + std::to_string(bad) +
                                    " is outside the unsigned 2-bit range [0, 3]");
      const auto rowcorr = static_cast<int32_t>(static_cast<uint32_t>(2 * asum));
      uint8_t* orow = out + static_cast<size_t>(n * d_.OC) * esz;
      parallel_for(pool, B_.npanels, [&](int64_t b, int64_t e, int) {
        with_isa<Isa::AVX512>(Isa::AVX512, [&]<class>() { lut_gemv<Avx512Vbmi>(B_, E_, offs, rowcorr, orow, b, e); });
      });
    }
  }

 private:
  std::string name_;
  FcDesc d_;
  LutWeights B_;
  Epilogue E_;
};

void add_lut(std::vector<KernelInfo>& t) {
  KernelInfo k;
  k.name = kLutName;
  k.op = OpKind::FullyConnected;
  k.weight_bits = 2;
  k.act_bits = 2;
  k.isa = Isa::AVX512;
  set_default_rate(k.name, kLutDefaultRate);
  k.supports = [](const OpDesc& d) {
    const auto* f = std::get_if<FcDesc>(&d);
    return f && lut_cpu() && lut_supports(*f);
  };
  k.cost_ns = [](const OpDesc& d) { return lut_cost(std::get<FcDesc>(d)); };
  k.create = [](const OpDesc& d, const Weights& w) -> std::unique_ptr<Kernel> {
    const auto* f = std::get_if<FcDesc>(&d);
    if (!f) throw std::invalid_argument(std::string(kLutName) + ": not a fully connected layer: " + describe(d));
    return std::make_unique<LutFc>(kLutName, *f, w);
  };
  k.note = "2-bit weights x 2-bit activations: vpermb lookups in 16 constant tables of 2-value partial sums, "
           "exact byte/16/32-bit sums (batch-1 fc)";
  t.push_back(std::move(k));
}

}  // namespace

void register_lut_kernels(std::vector<KernelInfo>& table) {
  if (isa_built(Isa::AVX512)) add_lut(table);
}

}  // namespace bbits::kernels::simd
