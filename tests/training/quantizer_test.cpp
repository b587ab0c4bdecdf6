// The Bayesian Bits quantizer: residual sum vs direct rounding, eval mode vs
// the shared vocabulary (bit for bit), fused kernel vs the composite formula,
// gate statistics, the test-time rule and cut-off, the regularizer.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <torch/autograd.h>

#include <cmath>

#include "bbits/format/quant.h"
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
