// Networks: a training step on a tiny batch lowers the loss and moves the
// gates; every model builds quantized and runs forward/backward on tiny
// inputs; tiny end-to-end runs of the trainer: fine-tuning as the reference
// does it (optimisers, per-step cosine schedule, batch norm folded), gate
// initialisation per bit width, resume across the switch.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <torch/autograd.h>
#include <torch/optim/adam.h>
#include <torch/optim/sgd.h>

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "bbits/training/network.h"
#include "bbits/training/optim.h"
#include "bbits/contract/checkpoint.h"
#include "bbits/contract/zoo.h"
#include "bbits/training/trainer.h"
#include "tiny_run.h"

using namespace bbits::train;
using namespace bbits::train::testing;

namespace {
at::Tensor loss_on(Net& net, const at::Tensor& x, const at::Tensor& y, double mu, uint64_t seed) {
  at::manual_seed(seed);  // same gate samples for the before/after comparison
  return at::cross_entropy_loss(net.forward(x), y) + mu * net.regularizer();
}
}  // namespace

TEST(Training, OneStepLowersTheLossAndMovesTheGates) {
  set_threads(2);
  at::manual_seed(1);
  // Gates start at log alpha 1 (not the reference's 6, where the sampled gates
  // saturate at 1 and one small step moves log alpha by less than a float ulp).
  QuantSetup qs;
  qs.set_gate_init(1.0);
  Net net(bbits::contract::make_graph("lenet5"), qs);
  const auto x = at::rand({16, 1, 28, 28});
  const auto y = at::randint(0, 10, {16}, at::kLong);
  net.calibrate(x);
  net.train();
  const double mu = 0.01;
  std::vector<at::Tensor> params = net.weight_parameters();
  for (auto& t : net.gate_parameters()) params.push_back(t);
  for (auto& t : net.range_parameters()) params.push_back(t);
  torch::optim::SGD opt(params, torch::optim::SGDOptions(0.01));
  const auto gates_before = net.layer("features.2")->wq->log_alpha_2.detach().clone();
  const auto la8_before = net.layer("features.0")->aq->log_alpha_8.item<float>();
  auto before = loss_on(net, x, y, mu, 42);
  opt.zero_grad();
  before.backward();
  // Every kind of parameter receives a gradient.
  EXPECT_TRUE(net.layer("features.0")->weight.grad().defined());
  EXPECT_TRUE(net.layer("features.0")->wq->x_max.grad().defined());
  EXPECT_TRUE(net.layer("features.2")->wq->log_alpha_2.grad().defined());
  EXPECT_TRUE(net.layer("features.0")->aq->log_alpha_8.grad().defined());
  opt.step();
  auto after = loss_on(net, x, y, mu, 42);
  EXPECT_LT(after.item<double>(), before.item<double>());
  EXPECT_FALSE(at::equal(gates_before, net.layer("features.2")->wq->log_alpha_2.detach()));
  EXPECT_NE(la8_before, net.layer("features.0")->aq->log_alpha_8.item<float>());
  // The regularizer pushes the gates down: the 32-bit gates' gradients are positive.
  EXPECT_GT(net.layer("features.2")->wq->log_alpha_32.grad().item<float>(), 0.0f);
}

TEST(Training, EveryModelBuildsQuantizedAndSteps) {
  set_threads(2);
  struct Case {
    const char* name;
    std::vector<int64_t> shape;
    double width;
  };
  const Case cases[] = {{"lenet5", {1, 28, 28}, 1.0},
                        {"vgg7", {1, 28, 28}, 0.0625},
                        {"resnet18", {3, 32, 32}, 0.125},
                        {"resnet18-small", {3, 16, 16}, 0.125},
                        {"mobilenetv2", {3, 32, 32}, 0.25}};
  for (const auto& c : cases) {
    at::manual_seed(2);
    Net net(bbits::contract::make_graph(c.name, model_options(c.shape, c.width)), QuantSetup{});
    const auto x = at::rand({2, c.shape[0], c.shape[1], c.shape[2]});
    net.calibrate(x);
    net.train();
    auto out = net.forward(x);
    ASSERT_EQ(out.sizes(), (std::vector<int64_t>{2, 10})) << c.name;
    auto loss = at::cross_entropy_loss(out, at::tensor({1L, 3L})) + 0.01 * net.regularizer();
    loss.backward();
    EXPECT_TRUE(std::isfinite(loss.item<double>())) << c.name;
    int with_grad = 0;
    for (const auto& t : net.gate_parameters()) with_grad += t.grad().defined();
    EXPECT_GT(with_grad, 0) << c.name;
    for (const auto& t : net.weight_parameters())
      if (t.grad().defined()) EXPECT_TRUE(at::isfinite(t.grad()).all().item<bool>()) << c.name;
    net.eval();
    at::NoGradGuard ng;
    EXPECT_TRUE(at::isfinite(net.forward(x)).all().item<bool>()) << c.name;
    // BN layers carry running statistics after a training step.
    for (const auto& n : net.graph().nodes)
      if (n.bn) {
        EXPECT_GT(net.layer(n.name)->running_var.sum().item<float>(), 0.0f);
        break;
      }
  }
}

TEST(Training, ModesConfigureTheQuantizers) {
  const Graph g = bbits::contract::make_graph("lenet5");
  QuantSetup fixed;
  fixed.learn_bit_gates = false;
  fixed.weight_bits = 4;
  fixed.act_bits = 8;
  Net net(g, fixed);
  EXPECT_EQ(net.weight_bits().at("features.0"), 4);
  EXPECT_EQ(net.act_bits().at("features.0"), 8);
  EXPECT_EQ(net.act_bits().at("input"), 8);
  QuantSetup fl;
  fl.enabled = false;
  fl.learn_bit_gates = false;
  fl.weight_bits = fl.act_bits = 32;
  Net f(g, fl);
  const auto x = at::rand({4, 1, 28, 28});
  f.calibrate(x);
  EXPECT_TRUE(f.gate_parameters().empty());
  EXPECT_EQ(f.regularizer().item<float>(), 0.0f);
  EXPECT_EQ(f.weight_bits().at("classifier.1"), 32);
}

// One conv with batch norm, ReLU and an activation quantizer: input 2x6x6.
Graph bn_conv_graph() {
  Graph g;
  g.model = "bnconv";
  g.input.shape = {2, 6, 6};
  Node n;
  n.name = "conv";
  n.op = bbits::contract::OpKind::Conv2d;
  n.inputs = {"input"};
  n.in_channels = 2;
  n.out_channels = 3;
  n.kernel_h = n.kernel_w = 3;
  n.bias = false;
  n.bn = true;
  n.activation = bbits::contract::Act::Relu;
  n.weight_quant = n.act_quant = true;
  g.nodes.push_back(n);
  g.outputs = {"conv"};
  return g;
}

// Batch norm in training follows the reference's BatchNormQScheme: the weight
// is folded with the running statistics (what the quantizer sees), the output
// corrected to the batch statistics with the gradient through them, the
// running averages updated afterwards. Without quantization that is exactly
// batch norm in training mode (value, gradients and running statistics).
TEST(Training, BatchNormTrainsAsTheReference) {
  at::manual_seed(5);
  QuantSetup fl;
  fl.enabled = false;
  fl.learn_bit_gates = false;
  fl.weight_bits = fl.act_bits = 32;
  Net net(bn_conv_graph(), fl);
  auto l = net.layer("conv");
  {
    at::NoGradGuard ng;
    l->bn_weight.uniform_(0.5, 1.5);
    l->bn_bias.uniform_(-0.5, 0.5);
    l->running_mean.uniform_(-0.2, 0.2);
    l->running_var.uniform_(0.5, 2.0);
  }
  auto x = at::randint(0, 256, {4, 2, 6, 6}).to(at::kFloat) / 255.0;
  x[0][0][0][0] = 1.0;  // the network input is quantized at 8 bits: every k / 255 is on its grid
  net.calibrate(x);
  at::Tensor rm = l->running_mean.clone(), rv = l->running_var.clone();  // after calibration
  auto w = l->weight.detach().clone().requires_grad_(true);
  auto g = l->bn_weight.detach().clone().requires_grad_(true);
  auto b = l->bn_bias.detach().clone().requires_grad_(true);
  auto ref = at::relu(at::batch_norm(at::conv2d(x, w), g, b, rm, rv, /*training=*/true, 0.1, 1e-5, false));
  net.train();
  auto y = net.forward(x);
  EXPECT_TRUE(at::allclose(y, ref, 1e-4, 1e-5));
  EXPECT_TRUE(at::allclose(l->running_mean, rm, 1e-5, 1e-6));
  EXPECT_TRUE(at::allclose(l->running_var, rv, 1e-5, 1e-6));
  const auto up = at::rand_like(ref);
  (y * up).sum().backward();
  (ref * up).sum().backward();
  EXPECT_TRUE(at::allclose(l->weight.grad(), w.grad(), 1e-3, 1e-5));
  EXPECT_TRUE(at::allclose(l->bn_weight.grad(), g.grad(), 1e-3, 1e-5));
  EXPECT_TRUE(at::allclose(l->bn_bias.grad(), b.grad(), 1e-3, 1e-5));
}

// Ranges are calibrated on what training sees: batch-norm layers normalise
// with the batch's statistics in the calibration pass (the reference takes
// its ranges from a first forward pass in training mode), not with the
// untrained running statistics.
TEST(Training, CalibrationSeesBatchNormalisedActivations) {
  at::manual_seed(6);
  Net net(bn_conv_graph(), QuantSetup{});  // gates at 6: 32-bit weights and activations in eval
  auto x = at::randint(0, 256, {8, 2, 6, 6}).to(at::kFloat) / 255.0;
  x[0][0][0][0] = 1.0;  // input range exactly 1: the 8-bit input grid holds every k / 255
  net.calibrate(x);
  auto l = net.layer("conv");
  at::NoGradGuard ng;
  const auto rm = at::zeros({3}), rv = at::ones({3});
  const auto normalised = at::relu(at::batch_norm(at::conv2d(x, l->weight), {}, {}, rm, rv, true, 0.1, 1e-5, false));
  EXPECT_NEAR(l->aq->range(), normalised.max().item<float>(), 1e-4 * normalised.max().item<float>());
  const float raw = at::relu(at::conv2d(x, l->weight)).max().item<float>();
  EXPECT_GT(std::abs(l->aq->range() - raw), 0.1f * raw);  // the untrained statistics would give another range
  EXPECT_GT(l->running_var.sub(1.0).abs().max().item<float>(), 0.0f);  // one update, as the reference's first pass
}

TEST(Trainer, TinyRunWritesLogsCheckpointsAndResumes) {
  const auto out = std::filesystem::temp_directory_path() / ("bbits_train_" + std::to_string(::getpid()));
  TrainConfig c = tiny_run(out, 256, 200, 1);
  const auto data = out / "data";
  c.epochs = 1;
  c.finetune_epochs = 1;
  c.batch_size = 64;
  c.calib_images = 64;
  std::ostringstream log;
  const auto r = run_training(c, log);
  ASSERT_EQ(r.epochs.size(), 2u);
  EXPECT_TRUE(std::filesystem::exists(out / "epoch-1.safetensors"));
  EXPECT_TRUE(std::filesystem::exists(out / "epoch-2.safetensors"));
  EXPECT_TRUE(std::filesystem::exists(out / "final.safetensors"));
  EXPECT_FALSE(std::filesystem::exists(out / "final.safetensors.tmp"));
  std::ifstream csv(out / "log.csv");
  std::string header, row;
  std::getline(csv, header);
  EXPECT_EQ(header.rfind("epoch,loss,ce,reg,train_acc,test_acc,rel_bops", 0), 0u);
  int rows = 0;
  while (std::getline(csv, row)) ++rows;
  EXPECT_EQ(rows, 2);
  EXPECT_NE(log.str().find("w_bits"), std::string::npos);  // the per-layer table

  // The eval entry point reproduces the trainer's final test accuracy.
  EvalConfig e;
  e.checkpoint = (out / "final.safetensors").string();
  e.data_dir = data.string();
  e.limit = 200;
  e.save_logits = (out / "logits.npy").string();
  EXPECT_NEAR(run_eval(e, log), r.test_accuracy, 1e-12);
  EXPECT_EQ(std::filesystem::file_size(out / "logits.npy"), 128u + 200u * 10u * 4u);

  // Resume after epoch 1: continues with the fine-tuning epoch only.
  TrainConfig rc = c;
  rc.resume = (out / "epoch-1.safetensors").string();
  rc.out = (out / "resumed").string();
  const auto r2 = run_training(rc, log);
  ASSERT_EQ(r2.epochs.size(), 1u);
  EXPECT_EQ(r2.epochs[0].epoch, 2);
  // The RNG states came back with the checkpoint: the resumed fine-tuning
  // epoch is the uninterrupted run's epoch 2, to the bit.
  EXPECT_NE(log.str().find("RNG states restored"), std::string::npos);
  expect_same_tensors(out / "final.safetensors", out / "resumed" / "final.safetensors");
  // Resuming into another mode is refused with a clear error.
  rc.mode = Mode::QuantOnly;
  EXPECT_THROW(run_training(rc, log), std::invalid_argument);
  std::filesystem::remove_all(out);
}

// Resuming in the middle of the gated epochs restores the optimiser moments
// (weights, gates, ranges) and both RNGs: the continued run ends on the very
// weights, gates and ranges of the uninterrupted one. A state file that does
// not belong to the run is refused by name.
TEST(Trainer, ResumeMidPhaseIsExact) {
  const auto out = std::filesystem::temp_directory_path() / ("bbits_resume_" + std::to_string(::getpid()));
  TrainConfig c = tiny_run(out, 192, 64, 3);
  c.out = (out / "straight").string();
  c.epochs = 2;
  c.finetune_epochs = 0;
  c.batch_size = 32;
  c.calib_images = 32;
  c.mu = 0.05;
  std::ostringstream log;
  run_training(c, log);
  ASSERT_TRUE(std::filesystem::exists(out / "straight" / "epoch-1.trainstate.pt"));
  ASSERT_TRUE(std::filesystem::exists(out / "straight" / "final.trainstate.pt"));

  TrainConfig rc = c;
  rc.resume = (out / "straight" / "epoch-1.safetensors").string();
  rc.out = (out / "resumed").string();
  const auto r = run_training(rc, log);
  ASSERT_EQ(r.epochs.size(), 1u);
  expect_same_tensors(out / "straight" / "final.safetensors", out / "resumed" / "final.safetensors");

  // Without the state file the moments restart (and the run says so).
  std::filesystem::copy_file(out / "straight" / "epoch-1.safetensors", out / "bare.safetensors");
  rc.resume = (out / "bare.safetensors").string();
  rc.out = (out / "bare").string();
  std::ostringstream log2;
  run_training(rc, log2);
  EXPECT_NE(log2.str().find("optimiser moments restart"), std::string::npos);

  // A corrupt state file is an error naming it.
  std::ofstream(out / "bare.trainstate.pt") << "not an archive";
  try {
    run_training(rc, log2);
    ADD_FAILURE() << "corrupt training state accepted";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("bare.trainstate.pt"), std::string::npos) << e.what();
  }
  std::filesystem::remove_all(out);
}

// The plans of both phases: the gated phase as configured, fine-tuning with
// the reference's defaults (gated_mixed_precision.py calls
// get_finetune_optimizers(experiment, 1e-4, 1e-4, "SGD", "Adam", rn) and
// get_finetune_schedulers(optimizers, "cosine:0", epochs, train_loader)), and
// the LibTorch optimisers built from them.
TEST(Trainer, FineTuningPlanIsTheReferences) {
  TrainConfig c;
  const PhasePlan ft = phase_plan(c, true);
  EXPECT_EQ(ft.weights.kind, OptimizerKind::Sgd);
  EXPECT_DOUBLE_EQ(ft.weights.lr, 1e-4);
  EXPECT_DOUBLE_EQ(ft.weights.weight_decay, 0.0);
  EXPECT_EQ(ft.ranges.kind, OptimizerKind::Adam);
  EXPECT_DOUBLE_EQ(ft.ranges.lr, 1e-4);
  EXPECT_FALSE(ft.gates_learned);
  EXPECT_EQ(ft.schedule.kind, LrSchedule::Kind::Cosine);
  EXPECT_DOUBLE_EQ(ft.schedule.eta_min, 0.0);
  EXPECT_TRUE(ft.per_step);

  auto w = at::zeros({3}, at::kFloat).requires_grad_(true);
  auto sgd = make_optimizer(ft.weights, {w});
  auto* s = dynamic_cast<torch::optim::SGD*>(sgd.get());
  ASSERT_NE(s, nullptr);
  const auto& so = static_cast<const torch::optim::SGDOptions&>(s->param_groups().at(0).options());
  EXPECT_DOUBLE_EQ(so.lr(), 1e-4);
  EXPECT_DOUBLE_EQ(so.momentum(), 0.9);
  EXPECT_TRUE(so.nesterov());
  EXPECT_DOUBLE_EQ(so.dampening(), 0.0);
  EXPECT_DOUBLE_EQ(so.weight_decay(), 0.0);
  auto r = at::ones({1}, at::kFloat).requires_grad_(true);
  auto adam = make_optimizer(ft.ranges, {r});
  auto* a = dynamic_cast<torch::optim::Adam*>(adam.get());
  ASSERT_NE(a, nullptr);
  EXPECT_DOUBLE_EQ(static_cast<const torch::optim::AdamOptions&>(a->param_groups().at(0).options()).lr(), 1e-4);
  set_lr(*adam, 3e-5);
  EXPECT_DOUBLE_EQ(get_lr(*adam), 3e-5);

  // The gated phase as configured (the reference's --optimizer, -q, -s).
  c.optimizer = "SGD";
  c.lr = 3e-3;
  c.lr_schedule = "multistep:10:20";
  c.weight_decay = 1e-4;
  const PhasePlan g = phase_plan(c, false);
  EXPECT_EQ(g.weights.kind, OptimizerKind::Sgd);
  EXPECT_DOUBLE_EQ(g.weights.lr, 3e-3);
  EXPECT_DOUBLE_EQ(g.weights.weight_decay, 1e-4);
  EXPECT_EQ(g.gates.kind, OptimizerKind::Adam);
  EXPECT_DOUBLE_EQ(g.gates.lr, 1e-2);
  EXPECT_DOUBLE_EQ(g.ranges.weight_decay, 0.0);
  EXPECT_EQ(g.schedule.milestones, (std::vector<int64_t>{10, 20}));
  EXPECT_FALSE(g.per_step);
  // Bad options are errors naming the option.
  auto error_of = [](const TrainConfig& cfg, bool ft) {
    try {
      phase_plan(cfg, ft);
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  c.ft_optimizer = "lbfgs";
  EXPECT_NE(error_of(c, true).find("--ft-optimizer: unknown optimizer 'lbfgs'"), std::string::npos) << error_of(c, true);
  c.ft_optimizer = "sgd";
  c.ft_schedule = "cosine:zero";
  EXPECT_NE(error_of(c, true).find("--ft-schedule"), std::string::npos) << error_of(c, true);
  c.optimizer_gates = "Nadam";
  EXPECT_NE(error_of(c, false).find("--optimizer-gates"), std::string::npos) << error_of(c, false);
  c.optimizer_gates = "adam";
  c.lr_gates = -1;
  EXPECT_NE(error_of(c, false).find("--lr-gates"), std::string::npos) << error_of(c, false);
}

// A tiny run: 1 gated epoch, 2 fine-tuning epochs of 4 steps each. The
// fine-tuning rates follow the cosine to 0 step by step over all 8 steps
// (CosineAnnealingLR(T_max = 2 * 4), stepped after every batch), for the
// weights and the ranges alike; the gated epoch's loss is CE + mu * reg; the
// switch itself does not change the eval-mode accuracy.
TEST(Trainer, FineTuningStepsTheCosineScheduleEveryBatch) {
  const auto out = std::filesystem::temp_directory_path() / ("bbits_ft_" + std::to_string(::getpid()));
  TrainConfig c = tiny_run(out, 256, 100, 11);
  c.epochs = 1;
  c.finetune_epochs = 2;
  c.batch_size = 64;
  c.calib_images = 64;
  c.mu = 0.05;
  c.save_epochs = false;
  std::ostringstream log;
  const auto r = run_training(c, log);
  ASSERT_EQ(r.epochs.size(), 3u);
  const auto cosine = [](int t) { return 1e-4 * (1.0 + std::cos(M_PI * t / 8.0)) / 2.0; };
  EXPECT_FALSE(r.epochs[0].finetune);
  EXPECT_DOUBLE_EQ(r.epochs[0].lr_first, 1e-3);  // gated: --lr, linear-tail over 1 epoch keeps it
  EXPECT_DOUBLE_EQ(r.epochs[0].lr_ranges_last, 1e-3);
  for (int e : {1, 2}) {
    EXPECT_TRUE(r.epochs[e].finetune);
    EXPECT_NEAR(r.epochs[e].lr_first, cosine(4 * (e - 1)), 1e-15) << e;
    EXPECT_NEAR(r.epochs[e].lr_last, cosine(4 * (e - 1) + 3), 1e-15) << e;
    EXPECT_NEAR(r.epochs[e].lr_ranges_first, cosine(4 * (e - 1)), 1e-15) << e;
    EXPECT_NEAR(r.epochs[e].lr_ranges_last, cosine(4 * (e - 1) + 3), 1e-15) << e;
    EXPECT_EQ(r.epochs[e].reg, 0.0);
  }
  EXPECT_NEAR(r.epochs[2].lr_last, 1e-4 * (1.0 - std::cos(M_PI / 8.0)) / 2.0, 1e-15);  // step 7 of 8: near 0
  // loss = CE + mu * (sum of the quantizers' regularizers), nothing else.
  EXPECT_GT(r.epochs[0].reg, 1.0);
  EXPECT_NEAR(r.epochs[0].loss, r.epochs[0].ce + c.mu * r.epochs[0].reg, 1e-5);
  // Fixing the gates at their test-time decisions changes nothing in eval mode.
  EXPECT_EQ(r.switch_accuracy, r.epochs[0].test_acc);
  EXPECT_NE(log.str().find("weights sgd (Nesterov, momentum 0.9) lr 0.0001, ranges adam lr 0.0001, schedule cosine:0 over 8 steps"),
            std::string::npos)
      << log.str();
  std::filesystem::remove_all(out);
}

// --gate-init sets every gate; --gate-init-4/8/16/32/-prune each one kind.
// With 0 epochs the final checkpoint holds the initial gates.
TEST(Trainer, GateInitOptionsSetEachGate) {
  const auto out = std::filesystem::temp_directory_path() / ("bbits_gi_" + std::to_string(::getpid()));
  TrainConfig c = tiny_run(out, 64, 20, 13);
  c.epochs = 0;
  c.calib_images = 32;
  c.gate_init = 2.5;
  c.gate_init_8 = 6.0;
  c.gate_init_16 = -6.0;
  c.gate_init_32 = -6.0;
  c.gate_init_prune = 3.0;
  EXPECT_DOUBLE_EQ(c.gate_init_for(4), 2.5);
  EXPECT_DOUBLE_EQ(c.gate_init_for(2), 3.0);
  std::ostringstream log;
  run_training(c, log);
  const Checkpoint ck = bbits::contract::load_checkpoint((out / "final.safetensors").string());
  const std::map<std::string, float> want = {
      {"log_alpha_2", 3.0f}, {"log_alpha_4", 2.5f}, {"log_alpha_8", 6.0f}, {"log_alpha_16", -6.0f}, {"log_alpha_32", -6.0f}};
  int checked = 0, z2 = 0;
  for (const auto& [name, t] : ck.tensors) {
    const auto dot = name.rfind('.');
    const auto it = want.find(name.substr(dot + 1));
    if (it == want.end()) continue;
    for (float v : t.data) EXPECT_EQ(v, it->second) << name;
    ++checked;
    z2 += it->first == "log_alpha_2";
  }
  EXPECT_EQ(checked, 7 * 4 + 3);  // 4 weight + 3 activation quantizers, z2 on 3 layers
  EXPECT_EQ(z2, 3);
  const auto tj = ck.training;
  EXPECT_EQ(tj["gate_init_16"].get<double>(), -6.0);
  EXPECT_EQ(tj["gate_init_prune"].get<double>(), 3.0);
  std::filesystem::remove_all(out);
}

// A network with batch norm (vgg7): the switch folds batch norm into the
// weights (eval output unchanged), fine-tuning checkpoints hold the folded
// graph (bn false, a bias on every folded layer), and --resume continues
// exactly from before the switch and from the middle of fine-tuning.
TEST(Trainer, BatchNormFoldedForFineTuningAndResumable) {
  const auto out = std::filesystem::temp_directory_path() / ("bbits_bnft_" + std::to_string(::getpid()));
  TrainConfig c = tiny_run(out, 96, 40, 17);
  c.out = (out / "straight").string();
  c.model = "vgg7";
  c.width = 0.0625;
  c.epochs = 1;
  c.finetune_epochs = 2;
  c.batch_size = 32;
  c.calib_images = 32;
  c.mu = 0.01;
  std::ostringstream log;
  const auto r = run_training(c, log);
  ASSERT_EQ(r.epochs.size(), 3u);
  EXPECT_EQ(r.switch_accuracy, r.epochs[0].test_acc);
  auto graph_of = [](const std::filesystem::path& p) {
    return bbits::contract::load_checkpoint(p.string()).graph;
  };
  int bn_before = 0;
  for (const auto& n : graph_of(out / "straight" / "epoch-1.safetensors").nodes) bn_before += n.bn;
  EXPECT_GT(bn_before, 0);
  for (const char* f : {"epoch-2.safetensors", "final.safetensors"}) {
    const Checkpoint ck = bbits::contract::load_checkpoint((out / "straight" / f).string());
    for (const auto& n : ck.graph.nodes) {
      EXPECT_FALSE(n.bn) << f << " " << n.name;
      if (n.is_layer()) EXPECT_TRUE(n.bias && ck.has(n.name + ".bias")) << f << " " << n.name;
    }
    for (const auto& [name, t] : ck.tensors) EXPECT_EQ(name.find(".bn."), std::string::npos) << name;
    EXPECT_TRUE(ck.training["bn_folded"].get<bool>());
  }
  EXPECT_NE(log.str().find("batch-norm layer(s) folded"), std::string::npos);

  // Resume before the switch (unfolded checkpoint) and in the middle of fine-tuning (folded).
  for (const char* from : {"epoch-1", "epoch-2"}) {
    TrainConfig rc = c;
    rc.resume = (out / "straight" / (std::string(from) + ".safetensors")).string();
    rc.out = (out / from).string();
    run_training(rc, log);
    expect_same_tensors(out / "straight" / "final.safetensors", out / from / "final.safetensors");
  }
  // A folded checkpoint cannot go back to gated epochs.
  TrainConfig bad = c;
  bad.resume = (out / "straight" / "epoch-2.safetensors").string();
  bad.out = (out / "bad").string();
  bad.epochs = 3;
  try {
    run_training(bad, log);
    ADD_FAILURE() << "folded checkpoint resumed into gated epochs";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("batch norm folded"), std::string::npos) << e.what();
  }
  std::filesystem::remove_all(out);
}

// --prune-only-bits takes one width for both (8, 16, 32) or wXaY: the
// reference's --fixed-48bit (4-bit weights, 8-bit activations) is w4a8.
TEST(Trainer, PruneOnlyBitsTakeWeightAndActivationWidths) {
  const auto out = std::filesystem::temp_directory_path() / ("bbits_po_" + std::to_string(::getpid()));
  TrainConfig c = tiny_run(out, 64, 20, 19);
  c.mode = Mode::PruneOnly;
  c.epochs = 0;
  c.calib_images = 32;
  c.prune_only_bits = "w4a8";
  std::ostringstream log;
  run_training(c, log);
  const Checkpoint ck = bbits::contract::load_checkpoint((out / "final.safetensors").string());
  for (const char* n : {"features.0.wq", "classifier.1.wq"}) {
    EXPECT_EQ(ck.get(std::string(n) + ".log_alpha_4").data[0], 20.0f) << n;
    EXPECT_EQ(ck.get(std::string(n) + ".log_alpha_8").data[0], -20.0f) << n;
  }
  EXPECT_EQ(ck.get("features.0.aq.log_alpha_8").data[0], 20.0f);
  EXPECT_EQ(ck.get("features.0.aq.log_alpha_16").data[0], -20.0f);
  EXPECT_EQ(ck.training["prune_only_bits"], "w4a8");
  c.prune_only_bits = "4";
  EXPECT_THROW(run_training(c, log), std::invalid_argument);
  std::filesystem::remove_all(out);
}
