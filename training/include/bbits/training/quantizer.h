// bbits training — the Bayesian Bits quantizer (LibTorch).
//
// One quantizer per weight tensor and per activation tensor. Training mode:
// clip to [-c, c] or [0, c] (c = x_max (1 - 1e-7)), base scale s2 = range / 3,
// s_2b = s_b / (2^b + 1), residuals rounded on each finer grid, gated sum
//   xq = z2 (x2 + z4 (eps4 + z8 (eps8 + z16 (eps16 + z32 eps32))))
// with hard-concrete gates sampled once per step, straight-through rounding
// and a learned x_max. Eval mode: deterministic gates (bbits::bits_from_gates,
// bbits::gate_on) and direct rounding onto the chosen grid, bit for bit equal
// to bbits::quantize_value. Include only where LibTorch is needed.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include <torch/nn/module.h>

namespace bbits::train {

struct QuantizerConfig {
  bool is_signed = true;
  int64_t prune_channels = 0;     // > 0: one z2 gate per output channel (weights only)
  bool learn_bit_gates = true;    // false: bit width fixed at `fixed_bits` (gates +-20)
  int fixed_bits = 8;             // 2, 4, 8, 16 or 32 (32 = float) when !learn_bit_gates
  bool learn_prune_gates = true;  // false: z2 deterministic (its eval decision)
  bool learn_range = true;        // x_max is a trained parameter
  // Initial log alpha of the learned gates z4, z8, z16, z32 and of z2 (the
  // reference: --gamma-{4,8,16,32}-init, and 6 for z2).
  std::array<double, 4> gate_init{6.0, 6.0, 6.0, 6.0};
  double gate_init_prune = 6.0;
  bool enabled = true;            // false: pass-through (float baseline); ranges still calibrated
};

inline constexpr double kGateOn = 20.0;    // log alpha written for a gate forced on
inline constexpr double kGateOff = -20.0;  // ... and forced off

// Hard-concrete helpers (beta 2/3, gamma -0.1, zeta 1.1).
at::Tensor hard_concrete_sample(const at::Tensor& log_alpha);  // one sample per element, in [0, 1]
at::Tensor gate_prob_on(const at::Tensor& log_alpha);          // P(z > 0) = sigmoid(la - beta log(-gamma/zeta))
at::Tensor round_ste(const at::Tensor& x);                     // round half to even, identity gradient

class BBQuantizer : public torch::nn::Module {
 public:
  explicit BBQuantizer(const QuantizerConfig& cfg);

  at::Tensor forward(const at::Tensor& x);
  // The reference's BayesianBitsQuantizer.regularizer: with reg_type "bop"
  // get_bops(b) = (mac_count / max_macs) * b, with "const" (const_cost) 1;
  //   with z2:    sum over channels of [bops(2) q2 + q2 bops(4) q4 + q2 q4 bops(8) q8
  //               + q2 q4 q8 bops(16) q16 + q2 q4 q8 q16 bops(32) q32] / channels
  //   without z2: 1 + bops(4) q4 + q4 bops(8) q8 + q4 q8 bops(16) q16 + q4 q8 q16 bops(32) q32
  // with q = P(gate on) = sigmoid(log alpha - beta log(-gamma / zeta)).
  at::Tensor regularizer() const;

  // Test-time decisions.
  int bits() const;                 // 2..32 from the nested gates (bits_from_gates)
  std::vector<bool> keep() const;   // per output channel; empty without z2
  bool has_prune() const { return cfg_.prune_channels > 0; }
  bool bit_gates_learned() const { return cfg_.learn_bit_gates; }
  bool prune_gates_learned() const { return has_prune() && cfg_.learn_prune_gates; }
  const QuantizerConfig& config() const { return cfg_; }

  bool initialized() const { return initialized_; }
  void set_initialized(bool v) { initialized_ = v; }
  // Range from data: max |x| (signed) or max x (unsigned); a tiny floor avoids x_max = 0.
  void init_range_from(const at::Tensor& x);
  void set_range(float x_max);
  float range() const;
  void set_enabled(bool on) { cfg_.enabled = on; }
  bool enabled() const { return cfg_.enabled; }

  // Fix every gate at its test-time decision (+-20) and stop learning gates
  // (fixed-gate fine-tuning).
  void freeze_gates();
  // Force a bit width (gates +-20, not learned).
  void set_fixed_bits(int bits);
  void set_learn_range(bool on);

  std::vector<at::Tensor> gate_parameters() const;   // trainable gates
  std::vector<at::Tensor> range_parameters() const;  // x_max when learned

  double mac_count = 0.0, max_macs = 1.0;
  bool const_cost = false;   // reg_type "const": every bit width costs 1
  bool regularized = false;  // takes part in the regularizer

  at::Tensor x_max;                        // [1]
  at::Tensor log_alpha_2;                  // [C] or undefined
  at::Tensor log_alpha_4, log_alpha_8, log_alpha_16, log_alpha_32;  // [1] each

  // Training-mode pieces, public for the tests: one sample of the gates
  // (bit gates cut off as the reference does; z2 per channel, or its
  // deterministic mask when not learned) and the quantization given them.
  struct GateSample {
    std::vector<at::Tensor> bits;  // z4, z8, ... while open (each [1])
    at::Tensor z2;                 // [C] or undefined
  };
  GateSample sample_gates() const;
  // fused = true: one-pass kernel (default); false: the composite formula with autograd.
  at::Tensor quantize_train(const at::Tensor& x, const GateSample& g, bool fused = true) const;

 private:
  at::Tensor forward_train(const at::Tensor& x);
  at::Tensor forward_eval(const at::Tensor& x) const;
  at::Tensor prune_mask_eval(const at::Tensor& like) const;
  QuantizerConfig cfg_;
  bool initialized_ = false;
};

// Fused training-mode kernel (src/quant_kernel.cpp): base grid of `base_bits`,
// then one residual level per entry of `gates` (z4, z8, ...), then z2 per
// dim-0 slice (empty tensor: none).
at::Tensor bb_quantize_train(const at::Tensor& x, const at::Tensor& x_max, const at::Tensor& gates,
                             const at::Tensor& z2, bool is_signed, int base_bits);

// Eval-mode quantization of a tensor onto the `bits` grid (bits 2..16), bit for
// bit bbits::quantize_value(x, x_max, bits, signed) * grid_scale(...).
at::Tensor quantize_eval(const at::Tensor& x, float x_max, int bits, bool is_signed);
// The integers themselves (float tensor holding integer values).
at::Tensor quantize_eval_int(const at::Tensor& x, float x_max, int bits, bool is_signed);

}  // namespace bbits::train
