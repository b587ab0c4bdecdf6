// The Bayesian Bits quantizer: residual sum vs direct rounding, eval mode vs
// the shared vocabulary (bit for bit), fused kernel vs the composite formula,
// gate statistics, the test-time rule and cut-off, the regularizer of one
// quantizer and of a whole network against the reference's formula by hand.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <torch/autograd.h>

#include <cmath>

#include "bbits/format/quant.h"
#include "bbits/training/cost.h"
#include "bbits/training/network.h"
#include "bbits/training/quantizer.h"

using namespace bbits::train;

namespace {

std::shared_ptr<BBQuantizer> make(bool is_signed, int64_t prune = 0) {
  QuantizerConfig c;
  c.is_signed = is_signed;
  c.prune_channels = prune;
  auto q = std::make_shared<BBQuantizer>(c);
  q->set_range(1.7f);
  return q;
}

// Gates fully open up to `bits` (z4 .. z_bits = 1).
BBQuantizer::GateSample open_to(int bits) {
  BBQuantizer::GateSample g;
  for (int b = 4; b <= bits; b *= 2) g.bits.push_back(at::ones({1}, at::kFloat));
  return g;
}

void set_gates(BBQuantizer& q, double l4, double l8, double l16, double l32) {
  at::NoGradGuard ng;
  q.log_alpha_4.fill_(l4);
  q.log_alpha_8.fill_(l8);
  q.log_alpha_16.fill_(l16);
  q.log_alpha_32.fill_(l32);
}

}  // namespace

TEST(Quantizer, ResidualSumEqualsDirectRoundingForEveryWidthAndSign) {
  at::manual_seed(3);
  for (bool is_signed : {true, false}) {
    auto q = make(is_signed);
    const float xm = q->range();
    // Values across and beyond the range, including grid points and ties.
    auto x = at::cat({at::rand({4000}) * 4.0f - 2.0f, at::linspace(-1.7, 1.7, 301), at::tensor({1.7f, -1.7f, 0.0f, 5.0f, -5.0f})});
    for (int bits : {2, 4, 8, 16}) {
      const float s = bbits::grid_scale(xm, bits, is_signed);
      const auto direct = quantize_eval_int(x, xm, bits, is_signed);
      // Ties (x / s_b a half-integer, up to float32 rounding of the
      // residuals) are where nested round-half-even and direct rounding may
      // differ, in the reference as here; eval mode rounds directly, so only
      // training-mode values at (near-)ties differ.
      const float c = bbits::clip_bound(xm);
      const auto t = x.clamp(is_signed ? -c : 0.0f, c) / s;
      const auto tol = 8 * 1.2e-7 * at::clamp_min(t.abs(), 1.0);
      const auto not_tie = ((t - at::floor(t) - 0.5).abs() > tol);
      EXPECT_GT(not_tie.to(at::kFloat).mean().item<float>(), 0.75f);
      for (bool fused : {false, true}) {
        const auto y = q->quantize_train(x, open_to(bits), fused).detach();
        // The residual sum lands on the b-bit grid at the directly rounded integer.
        const auto n = at::round(y / s);
        EXPECT_LT((y - n * s).abs().max().item<float>(), std::max(1e-3f * s, 4e-7f)) << bits << " fused " << fused;
        EXPECT_EQ(((n - direct).abs() * not_tie).max().item<float>(), 0.0f) << "bits " << bits << " signed " << is_signed << " fused " << fused;
      }
    }
  }
}

TEST(Quantizer, EvalModeIsBitExactWithTheVocabulary) {
  at::manual_seed(4);
  for (bool is_signed : {true, false}) {
    auto q = make(is_signed);
    q->eval();
    auto x = at::randn({5000}) * 1.2f;
    const float xm = q->range();
    const float* xp = x.data_ptr<float>();
    for (int bits : {2, 4, 8, 16, 32}) {
      set_gates(*q, bits >= 4 ? 20 : -20, bits >= 8 ? 20 : -20, bits >= 16 ? 20 : -20, bits >= 32 ? 20 : -20);
      ASSERT_EQ(q->bits(), bits);
      const auto y = q->forward(x).contiguous();
      const float* yp = y.data_ptr<float>();
      for (int64_t i = 0; i < x.numel(); ++i) {
        if (bits == 32) {
          ASSERT_EQ(yp[i], xp[i]);
        } else {
          const float want = static_cast<float>(bbits::quantize_value(xp[i], xm, bits, is_signed)) *
                             bbits::grid_scale(xm, bits, is_signed);
          ASSERT_EQ(yp[i], want) << "x " << xp[i] << " bits " << bits;
        }
      }
    }
  }
}

TEST(Quantizer, FusedKernelMatchesCompositeGradients) {
  at::manual_seed(5);
  for (bool is_signed : {true, false}) {
    for (int ngates : {0, 1, 2, 4}) {
      for (bool prune : {false, true}) {
        auto q = make(is_signed, prune ? 6 : 0);
        const auto x0 = (at::randn({6, 3, 5}) * 1.1f);
        BBQuantizer::GateSample g;
        for (int i = 0; i < ngates; ++i) g.bits.push_back((at::rand({1}) * 0.8f + 0.1f).set_requires_grad(true));
        if (prune) g.z2 = (at::rand({6}) * 0.8f + 0.2f).set_requires_grad(true);
        const auto go = at::randn({6, 3, 5});
        std::vector<at::Tensor> grads[2];
        at::Tensor ys[2];
        for (int fused = 0; fused < 2; ++fused) {
          auto x = x0.clone().set_requires_grad(true);
          for (auto& t : g.bits) t.mutable_grad() = at::Tensor();
          if (g.z2.defined()) g.z2.mutable_grad() = at::Tensor();
          q->x_max.mutable_grad() = at::Tensor();
          auto y = q->quantize_train(x, g, fused == 1);
          (y * go).sum().backward();
          ys[fused] = y.detach();
          grads[fused].push_back(x.grad().clone());
          grads[fused].push_back(q->x_max.grad().clone());
          for (auto& t : g.bits) grads[fused].push_back(t.grad().clone());
          if (g.z2.defined()) grads[fused].push_back(g.z2.grad().clone());
        }
        EXPECT_TRUE(at::allclose(ys[0], ys[1], 1e-5, 1e-6));
        ASSERT_EQ(grads[0].size(), grads[1].size());
        for (size_t i = 0; i < grads[0].size(); ++i)
          EXPECT_TRUE(at::allclose(grads[0][i], grads[1][i], 1e-3, 1e-4))
              << "grad " << i << " signed " << is_signed << " gates " << ngates << " prune " << prune << "\n"
              << grads[0][i] << "\n" << grads[1][i];
      }
    }
  }
}

TEST(Gates, SamplingStatisticsMatchTheClosedForm) {
  at::manual_seed(6);
  for (double la : {-1.5, -0.5, 0.0, 1.0, 3.0}) {
    const auto s = hard_concrete_sample(at::full({40000}, la, at::kFloat));
    EXPECT_GE(s.min().item<float>(), 0.0f);
    EXPECT_LE(s.max().item<float>(), 1.0f);
    const double on = (s > 0).to(at::kFloat).mean().item<double>();
    const double closed = gate_prob_on(at::full({1}, la, at::kFloat)).item<double>();
    // P(z > 0) = sigmoid(la - beta log(-gamma/zeta)) = 1 - gate_prob_zero
    EXPECT_NEAR(closed, 1.0 - bbits::gate_prob_zero(la), 1e-6);
    EXPECT_NEAR(on, closed, 0.01) << "log alpha " << la;
    // P(z = 1) = sigmoid(beta log((1 - gamma)/(zeta - 1)) ... ) closed form as well
    const double one = (s >= 1).to(at::kFloat).mean().item<double>();
    const double p_one = 1.0 / (1.0 + std::exp(-(la - bbits::kGateBeta * std::log((1 - bbits::kGateGamma) / (bbits::kGateZeta - 1)))));
    EXPECT_NEAR(one, p_one, 0.01) << "log alpha " << la;
  }
}

TEST(Gates, TestTimeRuleAndCutoff) {
  // on when P(z = 0) < 0.34  <=>  log alpha > -0.9353
  EXPECT_TRUE(bbits::gate_on(-0.93));
  EXPECT_FALSE(bbits::gate_on(-0.94));
  auto q = make(true, 4);
  q->eval();
  set_gates(*q, 3.0, 2.0, -0.5, 5.0);
  EXPECT_EQ(q->bits(), 32);
  set_gates(*q, 3.0, 2.0, -1.0, 5.0);
  EXPECT_EQ(q->bits(), 8);
  set_gates(*q, 3.0, -0.94, 5.0, 5.0);
  EXPECT_EQ(q->bits(), 4);
  set_gates(*q, -2.0, 5.0, 5.0, 5.0);
  EXPECT_EQ(q->bits(), 2);
  {
    at::NoGradGuard ng;
    q->log_alpha_2.copy_(at::tensor({5.0f, -0.94f, -0.93f, -3.0f}));
  }
  EXPECT_EQ(q->keep(), (std::vector<bool>{true, false, true, false}));
  // Training: the cut-off (log alpha <= -2) closes the gate and all above it.
  q->train();
  at::manual_seed(7);
  set_gates(*q, 20.0, -2.0, 20.0, 20.0);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(q->sample_gates().bits.size(), 1u);
  set_gates(*q, -2.0, 20.0, 20.0, 20.0);
  EXPECT_TRUE(q->sample_gates().bits.empty());
  set_gates(*q, -1.99, 20.0, 20.0, 20.0);
  size_t opened = 0;
  for (int i = 0; i < 200; ++i) opened += !q->sample_gates().bits.empty();
  EXPECT_GT(opened, 0u);   // still sampled above the cut-off
  EXPECT_LT(opened, 200u);
  EXPECT_EQ(q->sample_gates().z2.numel(), 4);
}

TEST(Regularizer, ValueAndGradientByHand) {
  const double beta = 2.0 / 3.0, off = beta * std::log(0.1 / 1.1);
  auto sig = [](double v) { return 1.0 / (1.0 + std::exp(-v)); };
  for (bool prune : {true, false}) {
    auto q = make(true, prune ? 3 : 0);
    q->mac_count = 50;
    q->max_macs = 200;
    const double r = 50.0 / 200.0;
    const double la[4] = {1.0, -0.5, 0.3, -1.2};
    set_gates(*q, la[0], la[1], la[2], la[3]);
    const double l2[3] = {2.0, -1.0, 0.5};
    if (prune) {
      at::NoGradGuard ng;
      q->log_alpha_2.copy_(at::tensor({2.0f, -1.0f, 0.5f}));
    }
    double q4 = sig(la[0] - off), q8 = sig(la[1] - off), q16 = sig(la[2] - off), q32 = sig(la[3] - off);
    // sum over bit widths of b * (MACs / max MACs) * P(gates up to b on)
    const double upper = r * 4 * q4 + q4 * r * 8 * q8 + q4 * q8 * r * 16 * q16 + q4 * q8 * q16 * r * 32 * q32;
    double want = 0, dwant4 = 0;
    const double d_upper_d4 = (r * 4 + r * 8 * q8 + q8 * r * 16 * q16 + q8 * q16 * r * 32 * q32) * q4 * (1 - q4);
    if (prune) {
      for (double l : l2) {
        const double q2 = sig(l - off);
        want += r * 2 * q2 + q2 * upper;
        dwant4 += q2 * d_upper_d4;
      }
      want /= 3;
      dwant4 /= 3;
    } else {
      want = 1.0 + upper;  // the reference charges a constant 1 for the 2-bit base without pruning
      dwant4 = d_upper_d4;
    }
    auto reg = q->regularizer();
    EXPECT_NEAR(reg.item<double>(), want, 1e-5);
    reg.backward();
    EXPECT_NEAR(q->log_alpha_4.grad().item<double>(), dwant4, 1e-5);
    if (prune) {
      const double q2 = sig(l2[0] - off);
      EXPECT_NEAR(q->log_alpha_2.grad()[0].item<double>(), (r * 2 + upper) * q2 * (1 - q2) / 3, 1e-5);
    }
  }
}

TEST(Quantizer, RangeAndFreeze) {
  auto q = make(false, 3);
  q->init_range_from(at::tensor({0.5f, 2.5f, -4.0f}));
  EXPECT_FLOAT_EQ(q->range(), 2.5f);  // unsigned: max x
  auto s = make(true);
  s->init_range_from(at::tensor({0.5f, 2.5f, -4.0f}));
  EXPECT_FLOAT_EQ(s->range(), 4.0f);  // signed: max |x|
  EXPECT_THROW(s->set_range(0.0f), std::invalid_argument);
  set_gates(*q, 3.0, 3.0, -1.0, 3.0);
  {
    at::NoGradGuard ng;
    q->log_alpha_2.copy_(at::tensor({1.0f, -3.0f, 1.0f}));
  }
  q->freeze_gates();
  EXPECT_EQ(q->bits(), 8);
  EXPECT_EQ(q->keep(), (std::vector<bool>{true, false, true}));
  EXPECT_TRUE(q->gate_parameters().empty());
  EXPECT_FLOAT_EQ(q->log_alpha_16.item<float>(), -20.0f);
  EXPECT_FLOAT_EQ(q->log_alpha_2[1].item<float>(), -20.0f);
  // Frozen quantizer in training mode: deterministic, on the 8-bit grid, channel 1 zeroed.
  q->train();
  auto x = at::rand({3, 10}) * 3.0f;
  auto y = q->forward(x);
  EXPECT_EQ(y[1].abs().max().item<float>(), 0.0f);
  EXPECT_TRUE(at::equal(y.detach()[0], quantize_eval(x[0], q->range(), 8, false)));
}

// The whole network's regularizer against the reference, counted by hand on a
// tiny graph. The reference (anonymized_compression_package/quantization/
// straight_through.py, BayesianBitsQuantizer.regularizer and get_bops;
// benchmarks/image_net/gated_mixed_precision.py, assign_macs and gate_loss):
//   get_bops(b) = mac_count / max_macs * b          (reg_type "bop"; "const": 1)
//   q = hc_prob_pos(gamma) = sigmoid(gamma - beta log(-gamma_hc / zeta)),
//       beta 2/3, gamma_hc -0.1, zeta 1.1
//   with pruning: [sum_c bops(2) q2_c + q2_c bops(4) q4 + q2_c q4 bops(8) q8
//                  + q2_c q4 q8 bops(16) q16 + q2_c q4 q8 q16 bops(32) q32] / C
//   without:      1 + bops(4) q4 + q4 bops(8) q8 + q4 q8 bops(16) q16 + q4 q8 q16 bops(32) q32
//   gate_loss = the plain sum over quantizers; train_epoch adds lambda times it
//   to the batch's mean cross-entropy.
// A weight quantizer is charged its layer's MACs; an activation quantizer the
// MACs of the layers in its group (the layers it feeds); max_macs is the
// largest layer's MACs. The input is not a Bayesian Bits quantizer.
//
// Graph: input 1x5x5 -> a: conv 1->2 k3 (3x3 out) relu -> b: conv 2->3 k3
// (1x1 out) relu -> flatten -> c: linear 3->4 (last layer: no z2, float output).
// MACs: a 3*3*2*1*9 = 162, b 1*1*3*2*9 = 54, c 3*4 = 12; max 162.
// Ratios r: a.wq 1, a.aq (feeds b) 54/162 = 1/3, b.wq 1/3, b.aq (feeds c)
// 12/162 = 2/27, c.wq 2/27.
// Log alphas are chosen so that q is 3/4, 1/2 or 1/4: la = off + ln 3, off,
// off - ln 3 with off = beta log(-gamma_hc / zeta). Every quantizer: q4 3/4,
// q8 1/2, q16 1/4, q32 1/4; z2 of a: 3/4, 1/4; z2 of b: 3/4, 1/2, 1/4.
// Upper part U(r) = r (4 q4 + 8 q4 q8 + 16 q4 q8 q16 + 32 q4 q8 q16 q32)
//                 = r (3 + 3 + 1.5 + 0.75) = 8.25 r.
//   a.wq: mean(q2) (2 + 8.25) * 1      = 0.5 * 10.25     = 5.125
//   a.aq: 1 + 8.25 / 3                                    = 3.75
//   b.wq: mean(q2) (2 + 8.25) / 3      = 0.5 * 10.25 / 3 = 41/24
//   b.aq: 1 + 8.25 * 2 / 27                               = 29/18
//   c.wq: the same                                        = 29/18
//   total = 497/36 = 13.80556
// Gradients (dq/dla = q (1 - q)):
//   d/d la4(a.aq)   = r (4 + 8 q8 + 16 q8 q16 + 32 q8 q16 q32) q4 (1 - q4) = (1/3) 11 (3/16) = 11/16
//   d/d la8(a.wq)   = mean(q2) r (8 q4 + 16 q4 q16 + 32 q4 q16 q32) q8 (1 - q8) = 0.5 * 10.5 * 0.25 = 21/16
//   d/d la2_0(b.wq) = (2 r + U(r)) q2 (1 - q2) / C = (10.25 / 3) (3/16) / 3 = 41/192
//   d/d la32(c.wq)  = r 32 q4 q8 q16 q32 (1 - q32) = (2/27) 32 (3/32) (3/16) = 1/24
// reg_type "const": every get_bops is 1, S = q4 + q4 q8 + q4 q8 q16 + q4 q8 q16 q32
//   = 3/4 + 3/8 + 3/32 + 3/128 = 159/128;
//   pruned: mean(q2) (1 + S) = 287/256 (a.wq, b.wq); others 1 + S = 287/128;
//   total = 2 * 287/256 + 3 * 287/128 = 287/32 = 8.96875.
namespace {
Graph tiny_graph() {
  Graph g;
  g.model = "tiny";
  g.input.shape = {1, 5, 5};
  auto conv = [](const std::string& name, const std::string& in, int64_t ci, int64_t co) {
    Node n;
    n.name = name;
    n.op = bbits::contract::OpKind::Conv2d;
    n.inputs = {in};
    n.in_channels = ci;
    n.out_channels = co;
    n.kernel_h = n.kernel_w = 3;
    n.activation = bbits::contract::Act::Relu;
    n.weight_quant = n.prune = n.act_quant = true;
    return n;
  };
  g.nodes.push_back(conv("a", "input", 1, 2));
  g.nodes.push_back(conv("b", "a", 2, 3));
  Node f;
  f.name = "f";
  f.op = bbits::contract::OpKind::Flatten;
  f.inputs = {"b"};
  g.nodes.push_back(f);
  Node c;
  c.name = "c";
  c.op = bbits::contract::OpKind::Linear;
  c.inputs = {"f"};
  c.in_features = 3;
  c.out_features = 4;
  c.weight_quant = true;
  g.nodes.push_back(c);
  g.outputs = {"c"};
  return g;
}
}  // namespace

TEST(Regularizer, NetworkSumMatchesTheReferenceByHand) {
  const Graph g = tiny_graph();
  EXPECT_EQ(layer_macs(g), (std::map<std::string, int64_t>{{"a", 162}, {"b", 54}, {"c", 12}}));
  EXPECT_EQ(quantizer_macs(g), (std::map<std::string, int64_t>{{"input", 162}, {"a", 54}, {"b", 12}}));
  const double off = (2.0 / 3.0) * std::log(0.1 / 1.1);  // beta log(-gamma / zeta)
  const double hi = off + std::log(3.0), mid = off, lo = off - std::log(3.0);  // q = 3/4, 1/2, 1/4
  for (bool const_type : {false, true}) {
    QuantSetup qs;
    qs.reg_const = const_type;
    Net net(g, qs);
    std::vector<std::string> regularized;
    for (const auto& [name, q] : net.quantizers()) {
      if (!q->regularized) continue;
      regularized.push_back(name);
      set_gates(*q, hi, mid, lo, lo);
    }
    EXPECT_EQ(regularized, (std::vector<std::string>{"a.wq", "a.aq", "b.wq", "b.aq", "c.wq"}));
    {
      at::NoGradGuard ng;
      net.layer("a")->wq->log_alpha_2.copy_(at::tensor({float(hi), float(lo)}));
      net.layer("b")->wq->log_alpha_2.copy_(at::tensor({float(hi), float(mid), float(lo)}));
    }
    const double mu = 0.1;
    auto loss = mu * net.regularizer();
    loss.backward();
    if (!const_type) {
      EXPECT_NEAR(loss.item<double>(), mu * 497.0 / 36.0, 2e-6);
      EXPECT_NEAR(net.layer("a")->aq->log_alpha_4.grad().item<double>(), mu * 11.0 / 16.0, 1e-6);
      EXPECT_NEAR(net.layer("a")->wq->log_alpha_8.grad().item<double>(), mu * 21.0 / 16.0, 1e-6);
      EXPECT_NEAR(net.layer("b")->wq->log_alpha_2.grad()[0].item<double>(), mu * 41.0 / 192.0, 1e-6);
      EXPECT_NEAR(net.layer("c")->wq->log_alpha_32.grad().item<double>(), mu * 1.0 / 24.0, 1e-6);
    } else {
      EXPECT_NEAR(loss.item<double>(), mu * 287.0 / 32.0, 2e-6);
    }
    // The network input is fixed at 8 bits and never regularized.
    EXPECT_FALSE(net.input_quantizer()->log_alpha_4.grad().defined());
  }
}
