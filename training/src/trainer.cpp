// The trainer: data, modes, optimisers, epochs, logs, checkpoints.
#include "bbits/training/trainer.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/autograd.h>
#include <torch/optim/adam.h>
#include <torch/optim/sgd.h>
#include <torch/serialize/archive.h>
#include <ATen/CPUGeneratorImpl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <mutex>
#include <random>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "bbits/contract/zoo.h"
#include "bbits/training/cost.h"
#include "bbits/training/dataset.h"
#include "bbits/training/latency.h"
#include "bbits/training/network.h"
#include "bbits/training/optim.h"
#include "bbits/training/process_group.h"
#include "bbits/format/quant.h"

namespace bbits::train {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

const char* mode_name(Mode m) {
  switch (m) {
    case Mode::BayesianBits: return "bayesian-bits";
    case Mode::PostTraining: return "post-training";
    case Mode::QuantOnly: return "quant-only";
    case Mode::PruneOnly: return "prune-only";
    case Mode::Fixed: return "fixed";
    case Mode::Float: return "float";
  }
  return "?";
}

Mode mode_from_name(const std::string& s) {
  for (Mode m : {Mode::BayesianBits, Mode::PostTraining, Mode::QuantOnly, Mode::PruneOnly, Mode::Fixed, Mode::Float})
    if (s == mode_name(m)) return m;
  throw std::invalid_argument("unknown mode '" + s +
                              "' (known: bayesian-bits, post-training, quant-only, prune-only, fixed, float)");
}

void set_threads(int n) {
  if (n < 1) throw std::invalid_argument("threads must be >= 1");
  at::set_num_threads(n);
  static std::once_flag once;
  std::call_once(once, [n] {
    try {
      at::set_num_interop_threads(n);
    } catch (const std::exception&) {
      // already started: keep the existing pool
    }
  });
}

void write_npy(const std::string& path, const std::vector<float>& data, const std::vector<int64_t>& shape) {
  std::string dims;
  int64_t count = 1;
  for (auto d : shape) {
    dims += std::to_string(d) + ", ";
    count *= d;
  }
  if (count != static_cast<int64_t>(data.size())) throw std::invalid_argument("write_npy: data does not match shape");
  if (shape.size() > 1) dims.resize(dims.size() - 2);
  else if (!shape.empty()) dims.resize(dims.size() - 1);
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + dims + "), }";
  const size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header.push_back('\n');
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary);
    if (!f) throw std::runtime_error("cannot open '" + tmp + "' for writing");
    f.write("\x93NUMPY\x01\x00", 8);
    const uint16_t hl = static_cast<uint16_t>(header.size());
    const char hb[2] = {static_cast<char>(hl & 0xff), static_cast<char>(hl >> 8)};
    f.write(hb, 2);
    f.write(header.data(), static_cast<std::streamsize>(header.size()));
    f.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size() * 4));
    if (!f) throw std::runtime_error("cannot write '" + tmp + "'");
  }
  std::filesystem::rename(tmp, path);
}

double TrainConfig::gate_init_for(int bits) const {
  const std::optional<double>* o = nullptr;
  switch (bits) {
    case 2: o = &gate_init_prune; break;
    case 4: o = &gate_init_4; break;
    case 8: o = &gate_init_8; break;
    case 16: o = &gate_init_16; break;
    case 32: o = &gate_init_32; break;
    default: throw std::invalid_argument("gate_init_for: bits must be 2, 4, 8, 16 or 32");
  }
  return o->value_or(gate_init);
}

PhasePlan phase_plan(const TrainConfig& c, bool finetune) {
  auto group = [](const std::string& opt, const char* opt_flag, double lr, const char* lr_flag, double wd) {
    if (!(lr >= 0) || !std::isfinite(lr)) throw std::invalid_argument(std::string(lr_flag) + " must be >= 0 and finite");
    if (!(wd >= 0) || !std::isfinite(wd)) throw std::invalid_argument("--weight-decay must be >= 0 and finite");
    try {
      return OptimizerPlan{optimizer_from_name(opt), lr, wd};
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument(std::string(opt_flag) + ": " + e.what());
    }
  };
  auto schedule = [](const std::string& s, const char* flag) {
    try {
      return LrSchedule::parse(s);
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument(std::string(flag) + ": " + e.what());
    }
  };
  PhasePlan p;
  if (!finetune) {
    p.weights = group(c.optimizer, "--optimizer", c.lr, "--lr", c.weight_decay);
    p.gates = group(c.optimizer_gates, "--optimizer-gates", c.lr_gates, "--lr-gates", 0.0);
    p.ranges = group(c.optimizer_ranges, "--optimizer-ranges", c.lr_ranges, "--lr-ranges", 0.0);
    p.gates_learned = true;
    p.schedule = schedule(c.lr_schedule, "--lr-schedule");
    p.per_step = false;
  } else {
    // gated_mixed_precision.py, after the gated epochs: get_finetune_optimizers
    // (weights and biases in one group, x_max in the other, no weight decay)
    // and get_finetune_schedulers(..., "cosine:0", epochs, train_loader):
    // CosineAnnealingLR over epochs * len(train_loader) steps.
    p.weights = group(c.ft_optimizer, "--ft-optimizer", c.ft_lr, "--ft-lr", 0.0);
    p.ranges = group(c.ft_optimizer_ranges, "--ft-optimizer-ranges", c.ft_lr_ranges, "--ft-lr-ranges", 0.0);
    p.gates_learned = false;
    p.schedule = schedule(c.ft_schedule, "--ft-schedule");
    p.per_step = true;
  }
  return p;
}

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const OptimizerPlan& plan, std::vector<at::Tensor> params) {
  if (plan.kind == OptimizerKind::Sgd)
    return std::make_unique<torch::optim::SGD>(std::move(params), torch::optim::SGDOptions(plan.lr)
                                                                      .momentum(plan.momentum())
                                                                      .nesterov(plan.nesterov())
                                                                      .weight_decay(plan.weight_decay));
  return std::make_unique<torch::optim::Adam>(std::move(params),
                                              torch::optim::AdamOptions(plan.lr).weight_decay(plan.weight_decay));
}

void set_lr(torch::optim::Optimizer& opt, double lr) {
  for (auto& g : opt.param_groups()) {
    if (auto* a = dynamic_cast<torch::optim::AdamOptions*>(&g.options())) a->lr(lr);
    else if (auto* s = dynamic_cast<torch::optim::SGDOptions*>(&g.options())) s->lr(lr);
  }
}

double get_lr(const torch::optim::Optimizer& opt) {
  const auto& g = opt.param_groups().at(0);
  if (auto* a = dynamic_cast<const torch::optim::AdamOptions*>(&g.options())) return a->lr();
  if (auto* s = dynamic_cast<const torch::optim::SGDOptions*>(&g.options())) return s->lr();
  return 0.0;
}

namespace {

struct ModeSetup {
  contract::ZooOptions model;
  QuantSetup quant;
};

std::pair<int, int> parse_fixed_bits(const std::string& s) {
  int w = 0, a = 0;
  char tail = 0;
  if (std::sscanf(s.c_str(), "w%da%d%c", &w, &a, &tail) != 2 || !bbits::is_legal_act_bits(w) ||
      !bbits::is_legal_act_bits(a))
    throw std::invalid_argument("--bits must look like w8a8, w4a8 or w2a8 (widths 2, 4, 8, 16, 32), not '" + s + "'");
  return {w, a};
}

// --prune-only-bits: 8, 16 or 32 (= float) for weights and activations alike,
// or wXaY (the reference's --fixed-48bit is w4a8).
std::pair<int, int> parse_prune_only_bits(const std::string& s) {
  if (s == "8" || s == "16" || s == "32") return {std::stoi(s), std::stoi(s)};
  if (!s.empty() && s[0] == 'w') return parse_fixed_bits(s);
  throw std::invalid_argument("--prune-only-bits must be 8, 16, 32 or wXaY (e.g. w4a8), not '" + s + "'");
}

}  // namespace

contract::ZooOptions model_options(const std::vector<int64_t>& input_shape, double width) {
  contract::ZooOptions o;
  o.input_shape = input_shape;
  o.num_classes = 10;
  o.width = width;
  o.prune_depthwise = false;
  o.preprocessing = contract::Preprocessing{};  // pixel / 255, mean 0, std 1
  return o;
}

namespace {

ModeSetup mode_setup(const TrainConfig& c, const std::vector<int64_t>& input_shape) {
  ModeSetup m;
  m.model = model_options(input_shape, c.width);
  m.quant.gate_init = {c.gate_init_for(4), c.gate_init_for(8), c.gate_init_for(16), c.gate_init_for(32)};
  m.quant.gate_init_prune = c.gate_init_for(2);
  for (int b : {2, 4, 8, 16, 32})
    if (!std::isfinite(c.gate_init_for(b)))
      throw std::invalid_argument(b == 2 ? std::string("--gate-init-prune must be finite")
                                         : fmt::format("--gate-init-{} must be finite", b));
  if (c.reg_type != "bop" && c.reg_type != "const")
    throw std::invalid_argument("--reg-type must be bop or const, not '" + c.reg_type + "'");
  m.quant.reg_const = c.reg_type == "const";
  switch (c.mode) {
    case Mode::BayesianBits:
      break;
    case Mode::PostTraining:
      m.quant.learn_ranges = c.learn_ranges;
      break;
    case Mode::QuantOnly:
      m.model.prune = false;
      break;
    case Mode::PruneOnly: {
      const auto [w, a] = parse_prune_only_bits(c.prune_only_bits);
      m.quant.learn_bit_gates = false;
      m.quant.weight_bits = w;
      m.quant.act_bits = a;
      break;
    }
    case Mode::Fixed: {
      auto [w, a] = parse_fixed_bits(c.fixed_bits);
      m.model.prune = false;
      m.quant.learn_bit_gates = false;
      m.quant.weight_bits = w;
      m.quant.act_bits = a;
      break;
    }
    case Mode::Float:
      m.model.prune = false;
      m.quant.enabled = false;
      m.quant.learn_bit_gates = false;
      m.quant.weight_bits = m.quant.act_bits = 32;
      break;
  }
  return m;
}

ImageSet load_split(const std::string& dataset, const std::string& dir, const std::string& split, int64_t limit) {
  if (dataset != "fashion-mnist") throw std::invalid_argument("unknown dataset '" + dataset + "' (known: fashion-mnist)");
  ImageSet s = load_fashion_mnist(split, dir);
  if (limit > 0) s = take(s, limit);
  return s;
}

// Gathers the images `keep` of a batch of n as raw pixels (optionally
// augmented: random horizontal flip and a random shift of up to 2 pixels with
// zero fill). The augmentation is drawn for all n images, so every rank of a
// distributed run draws what a single process draws for the whole batch.
std::vector<uint8_t> gather(const ImageSet& s, const int64_t* idx, int64_t n, bool augment, std::mt19937_64& rng,
                            Shard keep) {
  const int64_t sz = s.image_size();
  std::vector<uint8_t> out(static_cast<size_t>(keep.size() * sz), 0);
  std::uniform_int_distribution<int> shift(-2, 2), coin(0, 1);
  for (int64_t i = 0; i < n; ++i) {
    const bool kept = i >= keep.begin && i < keep.end;
    const uint8_t* src = s.pixels.data() + idx[i] * sz;
    uint8_t* dst = out.data() + (i - keep.begin) * sz;
    if (!augment) {
      if (kept) std::copy(src, src + sz, dst);
      continue;
    }
    const bool flip = coin(rng);
    const int dy = shift(rng), dx = shift(rng);
    if (!kept) continue;
    for (int64_t c = 0; c < s.channels; ++c)
      for (int64_t y = 0; y < s.rows; ++y)
        for (int64_t x = 0; x < s.cols; ++x) {
          const int64_t sy = y + dy, sx0 = x + dx;
          if (sy < 0 || sy >= s.rows || sx0 < 0 || sx0 >= s.cols) continue;
          const int64_t sx = flip ? s.cols - 1 - sx0 : sx0;
          dst[(c * s.rows + y) * s.cols + x] = src[(c * s.rows + sy) * s.cols + sx];
        }
  }
  return out;
}

at::Tensor labels_of(const ImageSet& s, const int64_t* idx, int64_t n) {
  auto y = at::empty({n}, at::kLong);
  int64_t* p = y.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) p[i] = s.labels[static_cast<size_t>(idx[i])];
  return y;
}

// Eval-mode accuracy (and optionally logits) on a set; with a process group
// each rank evaluates its share of the set and the counts are summed.
double evaluate(Net& net, const ImageSet& s, int64_t batch, std::vector<float>* logits, ProcessGroup* pg = nullptr) {
  net.eval();
  at::NoGradGuard ng;
  int64_t correct = 0;
  if (logits) logits->clear();
  const Shard sh = pg ? shard_of(s.count, pg->size(), pg->rank()) : Shard{0, s.count};
  for (int64_t b = sh.begin; b < sh.end; b += batch) {
    const int64_t n = std::min(batch, sh.end - b);
    auto x = preprocess(s.pixels.data() + b * s.image_size(), n, net.graph().input);
    auto out = net.forward(x).contiguous();
    auto pred = out.argmax(1);
    const int64_t* pp = pred.data_ptr<int64_t>();
    for (int64_t i = 0; i < n; ++i) correct += pp[i] == s.labels[static_cast<size_t>(b + i)];
    if (logits) logits->insert(logits->end(), out.data_ptr<float>(), out.data_ptr<float>() + out.numel());
  }
  if (pg) {
    at::Tensor t = at::full({1}, correct, at::kLong);
    pg->allreduce_sum(t, "the evaluation on the test set");
    correct = t.item<int64_t>();
  }
  return s.count ? static_cast<double>(correct) / static_cast<double>(s.count) : 0.0;
}

json training_json(const TrainConfig& c, int epoch, double acc, double rel, bool bn_folded) {
  json j = {{"method", mode_name(c.mode)},
            {"mu", c.mu},
            {"epochs", c.epochs + c.finetune_epochs},
            {"dataset", c.dataset},
            {"test_accuracy", acc},
            {"relative_bops", rel},
            {"seed", c.seed},
            {"epoch", epoch},
            {"finetune_epochs", c.finetune_epochs},
            {"batch_size", c.batch_size},
            {"lr", c.lr},
            {"lr_gates", c.lr_gates},
            {"lr_ranges", c.lr_ranges},
            {"gate_init", c.gate_init},
            {"gate_init_4", c.gate_init_for(4)},
            {"gate_init_8", c.gate_init_for(8)},
            {"gate_init_16", c.gate_init_for(16)},
            {"gate_init_32", c.gate_init_for(32)},
            {"gate_init_prune", c.gate_init_for(2)},
            {"reg_type", c.reg_type},
            {"optimizer", optimizer_name(optimizer_from_name(c.optimizer))},
            {"optimizer_gates", optimizer_name(optimizer_from_name(c.optimizer_gates))},
            {"optimizer_ranges", optimizer_name(optimizer_from_name(c.optimizer_ranges))},
            {"lr_schedule", LrSchedule::parse(c.lr_schedule).to_string()},
            {"ft_optimizer", optimizer_name(optimizer_from_name(c.ft_optimizer))},
            {"ft_lr", c.ft_lr},
            {"ft_optimizer_ranges", optimizer_name(optimizer_from_name(c.ft_optimizer_ranges))},
            {"ft_lr_ranges", c.ft_lr_ranges},
            {"ft_schedule", LrSchedule::parse(c.ft_schedule).to_string()},
            {"bn_folded", bn_folded}};
  if (c.mode == Mode::Fixed) j["bits"] = c.fixed_bits;
  if (c.mode == Mode::PruneOnly) {
    if (c.prune_only_bits == "8" || c.prune_only_bits == "16" || c.prune_only_bits == "32")
      j["prune_only_bits"] = std::stoi(c.prune_only_bits);
    else
      j["prune_only_bits"] = c.prune_only_bits;
  }
  return j;
}

void save(const Net& net, const TrainConfig& c, const std::string& path, int epoch, double acc, double rel,
          bool bn_folded) {
  contract::save_checkpoint(net.checkpoint(training_json(c, epoch, acc, rel, bn_folded)), path);
}

// ---- training state next to a checkpoint (for an exact --resume) -------------
// CKPT.safetensors carries the network; CKPT.trainstate.pt (a LibTorch archive)
// carries what a continued run needs to take the very steps an uninterrupted
// run would: the optimiser moments (weights, gates, ranges), the data-order
// RNG and LibTorch's CPU generator (gate noise, dropout-free augmentation).
std::string train_state_path(const std::string& checkpoint) {
  std::filesystem::path p(checkpoint);
  p.replace_extension(".trainstate.pt");
  return p.string();
}

void save_train_state(const std::string& checkpoint, torch::optim::Optimizer* w, torch::optim::Optimizer* g,
                      torch::optim::Optimizer* r, const std::mt19937_64& rng, bool finetuning) {
  torch::serialize::OutputArchive ar;
  ar.write("finetuning", c10::IValue(finetuning));
  auto put = [&](const char* key, torch::optim::Optimizer* o) {
    if (!o) return;
    torch::serialize::OutputArchive sub;
    o->save(sub);
    ar.write(key, sub);
  };
  put("opt_weights", w);
  put("opt_gates", g);
  put("opt_ranges", r);
  std::ostringstream rs;
  rs << rng;
  ar.write("rng", c10::IValue(rs.str()));
  {
    auto gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    ar.write("torch_rng", gen.get_state());
  }
  const std::string path = train_state_path(checkpoint), tmp = path + ".tmp";
  ar.save_to(tmp);
  std::filesystem::rename(tmp, path);
}

// Restores what save_train_state wrote; false when there is no state file
// (a checkpoint from elsewhere: the moments restart). When the run resumes
// into the other phase (the state was saved at the end of the gated epochs,
// the run continues with fine-tuning) the optimisers restart, as they do in
// an uninterrupted run, and only the RNG states are restored. A state file
// that does not fit the optimisers is an error naming the file.
bool load_train_state(const std::string& checkpoint, torch::optim::Optimizer* w, torch::optim::Optimizer* g,
                      torch::optim::Optimizer* r, std::mt19937_64& rng, bool finetuning) {
  const std::string path = train_state_path(checkpoint);
  if (!std::filesystem::exists(path)) return false;
  try {
    torch::serialize::InputArchive ar;
    ar.load_from(path);
    c10::IValue ph;
    if (!ar.try_read("finetuning", ph) || !ph.isBool()) throw std::runtime_error("no phase flag");
    const bool same_phase = ph.toBool() == finetuning;
    auto get = [&](const char* key, torch::optim::Optimizer* o) {
      if (!same_phase) return;
      torch::serialize::InputArchive sub;
      const bool have = ar.try_read(key, sub);
      if (have != (o != nullptr))
        throw std::runtime_error(std::string(have ? "has" : "lacks") + " state for " + key +
                                 (have ? " which this phase does not use" : ""));
      if (o) o->load(sub);
    };
    get("opt_weights", w);
    get("opt_gates", g);
    get("opt_ranges", r);
    c10::IValue rs;
    if (!ar.try_read("rng", rs) || !rs.isString()) throw std::runtime_error("no data-order RNG state");
    std::istringstream in(rs.toStringRef());
    in >> rng;
    if (!in) throw std::runtime_error("bad data-order RNG state");
    at::Tensor ts;
    if (!ar.try_read("torch_rng", ts)) throw std::runtime_error("no LibTorch RNG state");
    auto gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(ts);
  } catch (const std::exception& e) {
    throw std::runtime_error("training state '" + path + "' is corrupt or does not match this run: " + e.what());
  }
  return true;
}

double cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         1e-6 * static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

std::string bar(double frac, int width) {
  const int n = static_cast<int>(frac * width + 0.5);
  return std::string(static_cast<size_t>(std::clamp(n, 0, width)), '#') +
         std::string(static_cast<size_t>(width - std::clamp(n, 0, width)), '.');
}

std::string describe(const char* group, const OptimizerPlan& p) {
  return fmt::format("{} {}{} lr {:g}{}", group, optimizer_name(p.kind),
                     p.kind == OptimizerKind::Sgd ? " (Nesterov, momentum 0.9)" : "", p.lr,
                     p.weight_decay > 0 ? fmt::format(" weight decay {:g}", p.weight_decay) : std::string());
}

}  // namespace

TrainResult run_training(const TrainConfig& c, std::ostream& log_out) {
  set_threads(c.threads);
  at::manual_seed(c.seed);
  std::mt19937_64 rng(c.seed);
  if (c.epochs < 0 || c.finetune_epochs < 0) throw std::invalid_argument("epochs must be >= 0");
  if (c.batch_size < 1) throw std::invalid_argument("batch size must be >= 1");
  if (c.mu < 0) throw std::invalid_argument("mu must be >= 0");
  if (c.mode == Mode::PostTraining && c.init.empty() && c.resume.empty())
    throw std::invalid_argument("--mode post-training needs --init FLOAT_CHECKPOINT");
  const PhasePlan gated_plan = phase_plan(c, false), ft_plan = phase_plan(c, true);  // option errors first
  if (c.dist.enabled() && c.batch_size < c.dist.world_size)
    throw std::invalid_argument(fmt::format("--batch-size {} (the global batch) must be at least the world size {}",
                                            c.batch_size, c.dist.world_size));
  // Distributed: every rank trains on its share of each global batch; rank 0
  // alone logs and writes OUT.
  const std::unique_ptr<ProcessGroup> pg = c.dist.enabled() ? std::make_unique<ProcessGroup>(c.dist) : nullptr;
  const bool writer = !pg || pg->rank() == 0;
  std::ostream discard(nullptr);
  std::ostream& log = writer ? log_out : discard;
  if (pg)
    log << fmt::format("distributed: {} ranks (Gloo), rendezvous at {}:{}; global batch {}, about {} per rank\n",
                       pg->size(), c.dist.master_addr, c.dist.master_port, c.batch_size, c.batch_size / pg->size());

  const ImageSet train = pad(load_split(c.dataset, c.data_dir, "train", c.train_limit), c.pad);
  const ImageSet test = pad(load_split(c.dataset, c.data_dir, "test", c.test_limit), c.pad);
  const std::vector<int64_t> input_shape{train.channels, train.rows, train.cols};
  ModeSetup ms = mode_setup(c, input_shape);
  Graph graph = contract::make_graph(c.model, ms.model);
  Net net(graph, ms.quant);

  int start_epoch = 0;      // completed epochs
  bool bn_folded = false;   // batch norm folded into the weights (fine-tuning)
  if (!c.resume.empty()) {
    if (pg) check_same_files(*pg, {c.resume, train_state_path(c.resume)}, "--resume checkpoint and training state");
    const Checkpoint ck = contract::load_checkpoint(c.resume);
    const Graph& g2 = ck.graph;
    const json& tj = ck.training;
    start_epoch = tj.value("epoch", 0);
    if (g2 != graph) {
      // A checkpoint written during fine-tuning holds the batch-norm-folded graph.
      const Graph folded = without_batch_norm(graph);
      if (folded == graph || g2 != folded)
        throw std::invalid_argument("--resume: checkpoint graph (model '" + g2.model + "') does not match --model " +
                                    c.model + " in mode " + mode_name(c.mode));
      if (start_epoch < c.epochs)
        throw std::invalid_argument(fmt::format(
            "--resume: checkpoint '{}' has batch norm folded into its weights (written during fine-tuning, after "
            "epoch {}); it can only continue fine-tuning, but --epochs {} leaves gated epochs to run",
            c.resume, start_epoch, c.epochs));
      net.fold_batch_norm();
      bn_folded = true;
    }
    if (tj.value("method", "") != mode_name(c.mode))
      throw std::invalid_argument("--resume: checkpoint was trained with mode '" + tj.value("method", "?") +
                                  "', not " + mode_name(c.mode));
    net.import_tensors(ck);
    log << fmt::format("resumed from {} after epoch {}\n", c.resume, start_epoch);
  } else {
    if (c.mode == Mode::PostTraining) {
      const Checkpoint ck = contract::load_checkpoint(c.init);
      net.import_weights(ck);
      log << fmt::format("weights from {}\n", c.init);
    }
    // Ranges from data, on a real calibration batch of random training images.
    const int64_t nc = std::min<int64_t>(c.calib_images, train.count);
    std::vector<int64_t> idx(static_cast<size_t>(train.count));
    for (int64_t i = 0; i < train.count; ++i) idx[static_cast<size_t>(i)] = i;
    std::shuffle(idx.begin(), idx.end(), rng);
    auto px = gather(train, idx.data(), nc, false, rng, Shard{0, nc});
    net.calibrate(preprocess(px.data(), nc, graph.input));
  }
  if (pg) broadcast_state(*pg, net);  // the same weights, ranges and gates on every rank
  if (c.mode == Mode::PostTraining) net.set_weights_trainable(false);

  // The prior and the budget; an unreachable budget or a table that does not
  // describe this network stops here, before any training. Every rank builds
  // the same model from the same gates, so mu stays the same on every rank.
  if ((c.target_ms || c.target_rel_bops) && (c.mode == Mode::Fixed || c.mode == Mode::Float))
    throw std::invalid_argument(std::string("a budget needs learned gates, not --mode ") + mode_name(c.mode));
  CostModel cost_model(net, CostSetup{c.cost, c.cost_table, c.target_ms, c.target_rel_bops, c.budget_eta, c.budget_signal}, c.mu);
  log << "cost: " << cost_model.describe() << "\n";

  if (writer) std::filesystem::create_directories(c.out);
  const std::string log_csv = c.out + "/log.csv", bits_csv = c.out + "/bits.csv";
  if (writer && start_epoch == 0) {
    std::ofstream(log_csv) << "epoch,loss,ce,reg,train_acc,test_acc,rel_bops,seconds,cpu_seconds,phase,mu,expected_cost,cost,target,cost_unit\n";
    std::ofstream(bits_csv) << "epoch,quantizer,bits,kept,total,x_max\n";
  }

  const int total_epochs = c.epochs + c.finetune_epochs;
  const int64_t steps_per_epoch = (train.count + c.batch_size - 1) / c.batch_size;
  const bool progress = c.progress && writer;
  const bool tty = progress && isatty(fileno(stderr));
  TrainResult result;
  double secs_sum = 0;
  int secs_n = 0;

  std::unique_ptr<torch::optim::Optimizer> opt_w, opt_g, opt_r;
  PhasePlan plan;
  auto make_optimizers = [&](const PhasePlan& p) {
    plan = p;
    opt_w.reset();
    opt_g.reset();
    opt_r.reset();
    auto w = net.weight_parameters();
    if (!w.empty()) opt_w = make_optimizer(p.weights, w);
    auto g = net.gate_parameters();
    if (p.gates_learned && !g.empty()) opt_g = make_optimizer(p.gates, g);
    auto r = net.range_parameters();
    if (!r.empty()) opt_r = make_optimizer(p.ranges, r);
  };
  // The learning rate of every group at unit t of T (epochs, or steps in fine-tuning).
  auto apply_lr = [&](int64_t t, int64_t T) {
    if (opt_w) set_lr(*opt_w, plan.schedule.lr(plan.weights.lr, t, T, true));
    if (opt_g) set_lr(*opt_g, plan.schedule.lr(plan.gates.lr, t, T, false));
    if (opt_r) set_lr(*opt_r, plan.schedule.lr(plan.ranges.lr, t, T, false));
  };

  bool finetuning = false;
  // The reference's switch (gated_mixed_precision.py, after the epoch loop):
  // replace_bb_quantizers (every quantizer fixed at its test-time bits and
  // keep mask), static_fold_bn_convs, then fresh fine-tuning optimisers.
  auto enter_finetune = [&](bool at_switch) {
    for (auto& [name, q] : net.quantizers()) {
      q->freeze_gates();
      q->regularized = false;
    }
    const int nfold = net.fold_batch_norm();
    bn_folded = bn_folded || nfold > 0;
    finetuning = true;
    make_optimizers(ft_plan);
    log << fmt::format(
        "fine-tuning: gates fixed at their test-time decisions, {} batch-norm layer(s) folded into the weights; {}, {}, "
        "schedule {} over {} steps\n",
        nfold, describe("weights", ft_plan.weights), describe("ranges", ft_plan.ranges),
        ft_plan.schedule.to_string(), c.finetune_epochs * steps_per_epoch);
    if (at_switch) {
      result.switch_accuracy = evaluate(net, test, 1000, nullptr, pg.get());
      log << fmt::format("after the switch, before fine-tuning: test_acc {:.4f}\n", result.switch_accuracy);
    }
  };
  if (start_epoch >= c.epochs && c.finetune_epochs > 0 && start_epoch < total_epochs) {
    enter_finetune(start_epoch == c.epochs);
  } else {
    make_optimizers(gated_plan);
    log << fmt::format("gated phase: {}, {}, {}; schedule {} over {} epochs; mu {:g}, reg {}\n",
                       describe("weights", gated_plan.weights), describe("gates", gated_plan.gates),
                       describe("ranges", gated_plan.ranges), gated_plan.schedule.to_string(), c.epochs, c.mu,
                       c.reg_type);
  }
  if (!c.resume.empty()) {
    if (load_train_state(c.resume, opt_w.get(), opt_g.get(), opt_r.get(), rng, finetuning))
      log << fmt::format("optimiser moments and RNG states restored from {}\n", train_state_path(c.resume));
    else
      log << fmt::format("no {}: optimiser moments restart\n", train_state_path(c.resume));
  }

  std::vector<int64_t> order(static_cast<size_t>(train.count));
  for (int64_t i = 0; i < train.count; ++i) order[static_cast<size_t>(i)] = i;
  double mu = (c.mode == Mode::Fixed || c.mode == Mode::Float) ? 0.0 : cost_model.mu();

  // With a budget, the end of the gated phase puts the deterministic-gate
  // model onto it by its least confident gate decisions (project_to_budget).
  auto project = [&] {
    if (!cost_model.has_budget()) return;
    const Projection p = project_to_budget(net, cost_model);
    log << fmt::format("budget: the gated phase ends at {:.5g} {} (target {:.5g}, {:+.1f}%); {} gate(s) closed, {} "
                       "reopened: {:.5g} {} ({:+.1f}%)\n",
                       p.before, cost_model.unit(), cost_model.target(), 100.0 * (p.before / cost_model.target() - 1.0),
                       p.closed, p.opened, p.after, cost_model.unit(), 100.0 * (p.after / cost_model.target() - 1.0));
  };
  for (int epoch = start_epoch; epoch < total_epochs; ++epoch) {
    if (epoch == c.epochs && !finetuning) {
      project();
      enter_finetune(true);
    }
    const int phase_epoch = finetuning ? epoch - c.epochs : epoch;
    if (!plan.per_step) apply_lr(phase_epoch, c.epochs);
    const int64_t phase_steps = static_cast<int64_t>(c.finetune_epochs) * steps_per_epoch;
    // Each epoch's order is a fresh permutation drawn from rng alone (not a
    // shuffle of the previous one), so a resumed run draws the same orders.
    for (int64_t i = 0; i < train.count; ++i) order[static_cast<size_t>(i)] = i;
    std::shuffle(order.begin(), order.end(), rng);
    net.train();
    const auto t0 = Clock::now();
    const double cpu0 = cpu_seconds();
    auto last_print = t0;
    double sum_loss = 0, sum_ce = 0, sum_reg = 0;
    int64_t seen = 0, correct = 0, steps = 0;
    EpochResult er;
    for (int64_t b = 0; b < train.count; b += c.batch_size) {
      const int64_t n = std::min(c.batch_size, train.count - b);
      // Fine-tuning schedules step after every batch (get_finetune_schedulers).
      if (plan.per_step) apply_lr(phase_epoch * steps_per_epoch + steps, phase_steps);
      const double lr_w = opt_w ? get_lr(*opt_w) : 0.0, lr_r = opt_r ? get_lr(*opt_r) : 0.0;
      if (steps == 0) {
        er.lr_first = lr_w;
        er.lr_ranges_first = lr_r;
      }
      er.lr_last = lr_w;
      er.lr_ranges_last = lr_r;
      // This rank's share of the global batch (all of it in a single process).
      // A rank whose share is empty (a last batch smaller than the world)
      // still runs one image, weighted 0, so that it draws the same gate
      // samples as the others.
      const Shard sh = pg ? shard_of(n, pg->size(), pg->rank()) : Shard{0, n};
      const Shard run = sh.size() > 0 ? sh : Shard{0, 1};
      auto px = gather(train, order.data() + b, n, c.augment, rng, run);
      auto y = labels_of(train, order.data() + b + run.begin, run.size());
      auto logits = net.forward(preprocess(px.data(), run.size(), graph.input));
      auto ce = at::cross_entropy_loss(logits, y);
      // gate_loss: the sum of the quantizers' regularizers, added once per batch
      // to the mean cross-entropy (train_epoch: loss = ce_loss + lmb * c_loss).
      at::Tensor reg = (!finetuning && mu > 0) ? cost_model.regularizer() : at::zeros({}, at::kFloat);
      // Distributed, the ranks' losses sum to the global batch's: the share of
      // the mean cross-entropy, and the regularizer split evenly.
      const double share = static_cast<double>(sh.size()) / static_cast<double>(n);
      auto loss = pg ? ce * share + (mu / pg->size()) * reg : ce + mu * reg;
      if (opt_w) opt_w->zero_grad();
      if (opt_g) opt_g->zero_grad();
      if (opt_r) opt_r->zero_grad();
      loss.backward();
      double lv = loss.item<double>(), cev = ce.item<double>();
      int64_t batch_correct = sh.size() > 0 ? (logits.argmax(1) == y).sum().item<int64_t>() : 0;
      if (pg) {  // one all-reduce: gradients, batch-norm statistics, the log's sums
        std::vector<double> st{lv, cev * share, static_cast<double>(batch_correct)};
        reduce_step(*pg, net, share, st, fmt::format("the gradient all-reduce of epoch {}, step {}", epoch + 1, steps + 1));
        lv = st[0];
        cev = st[1];
        batch_correct = std::llround(st[2]);
      }
      if (opt_w) opt_w->step();
      if (opt_g) opt_g->step();
      if (opt_r) {
        opt_r->step();
        at::NoGradGuard ng;
        for (auto& r : net.range_parameters()) r.clamp_min_(1e-6);
      }
      // The dual step on the budget: its cost is a function of the gates
      // alone, which every rank holds equal after the step, so every rank
      // computes the same mu without communicating.
      if (cost_model.has_budget() && !finetuning) mu = cost_model.update();
      if (!std::isfinite(lv)) throw std::runtime_error(fmt::format("loss became {} at epoch {}: lower the learning rates", lv, epoch + 1));
      if (c.on_step) c.on_step(epoch, steps, net.export_tensors());
      sum_loss += lv * n;
      sum_ce += cev * n;
      sum_reg += reg.item<double>() * n;
      correct += batch_correct;
      seen += n;
      ++steps;
      const auto now = Clock::now();
      if (progress && (std::chrono::duration<double>(now - last_print).count() > (tty ? 0.2 : 15.0) || seen == train.count)) {
        last_print = now;
        const double el = std::chrono::duration<double>(now - t0).count();
        const double frac = static_cast<double>(seen) / static_cast<double>(train.count);
        std::string line = fmt::format("epoch {:>3}/{} [{}] {:5.1f}% loss {:.4f} ce {:.4f} reg {:.4f} acc {:.4f} {:.0f} img/s",
                                       epoch + 1, total_epochs, bar(frac, 24), 100 * frac, sum_loss / seen, sum_ce / seen,
                                       sum_reg / seen, static_cast<double>(correct) / seen, seen / std::max(el, 1e-9));
        if (cost_model.has_budget())
          line += fmt::format(" cost {:.4g}/{:.4g} {} mu {:.3g}", cost_model.deterministic(), cost_model.target(),
                              cost_model.unit(), mu);
        if (tty) std::cerr << "\r" << line << std::flush;
        else std::cerr << line << "\n";
      }
    }
    if (tty) std::cerr << "\n";
    const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    const double cpu = cpu_seconds() - cpu0;
    er.epoch = epoch + 1;
    er.finetune = finetuning;
    er.loss = sum_loss / std::max<int64_t>(seen, 1);
    er.ce = sum_ce / std::max<int64_t>(seen, 1);
    er.reg = sum_reg / std::max<int64_t>(seen, 1);
    er.train_acc = static_cast<double>(correct) / std::max<int64_t>(seen, 1);
    er.seconds = secs;
    er.cpu_seconds = cpu;
    er.test_acc = evaluate(net, test, 1000, nullptr, pg.get());
    const CostReport cr = compute_costs(graph, net.weight_bits(), net.act_bits(), net.keep_masks());
    er.rel_bops = cr.relative;
    er.mu = mu;
    er.expected_cost = cost_model.expected();
    er.cost = cost_model.deterministic();
    result.epochs.push_back(er);
    secs_sum += secs;
    result.cpu_seconds_per_epoch += cpu;
    ++secs_n;
    log << fmt::format("epoch {}/{}{}: loss {:.4f} ce {:.4f} reg {:.4f} train_acc {:.4f} test_acc {:.4f} rel_bops {:.4f}% lr {:.3g}..{:.3g} ({:.1f} s, {:.1f} CPU s)\n",
                       er.epoch, total_epochs, finetuning ? " (fine-tune)" : "", er.loss, er.ce, er.reg, er.train_acc,
                       er.test_acc, 100 * er.rel_bops, er.lr_first, er.lr_last, secs, cpu);
    log << fmt::format("  cost {:.5g} {} (expected {:.5g}){} mu {:.4g}\n", er.cost, cost_model.unit(), er.expected_cost,
                       cost_model.has_budget() ? fmt::format(" target {:.5g}", cost_model.target()) : std::string(), mu)
        << std::flush;
    if (writer) {
      std::ofstream f(log_csv, std::ios::app);
      f << fmt::format("{},{:.6f},{:.6f},{:.6f},{:.6f},{:.6f},{:.8f},{:.2f},{:.2f},{},{:.6g},{:.8g},{:.8g},{},{}\n", er.epoch,
                       er.loss, er.ce, er.reg, er.train_acc, er.test_acc, er.rel_bops, secs, cpu,
                       finetuning ? "finetune" : "train", er.mu, er.expected_cost, er.cost,
                       cost_model.has_budget() ? fmt::format("{:.8g}", cost_model.target()) : std::string(),
                       cost_model.unit() == "ms" ? "ms" : "pct_bops");
      std::ofstream fb(bits_csv, std::ios::app);
      for (const auto& [name, q] : net.quantizers()) {
        const auto k = q->keep();
        const int64_t kept = k.empty() ? -1 : std::count(k.begin(), k.end(), true);
        fb << fmt::format("{},{},{},{},{},{:.6g}\n", er.epoch, name, q->enabled() ? q->bits() : 32,
                          k.empty() ? std::string("") : std::to_string(kept),
                          k.empty() ? std::string("") : std::to_string(k.size()), q->range());
      }
    }
    if (writer && c.save_epochs) {
      const std::string ck = c.out + "/epoch-" + std::to_string(er.epoch) + ".safetensors";
      save(net, c, ck, er.epoch, er.test_acc, er.rel_bops, bn_folded);
      save_train_state(ck, opt_w.get(), opt_g.get(), opt_r.get(), rng, finetuning);
    }
    result.test_accuracy = er.test_acc;
    result.relative_bops = er.rel_bops;
  }

  if (!finetuning && cost_model.has_budget() && !result.epochs.empty()) {  // no fine-tuning: project the final model
    project();
    result.test_accuracy = evaluate(net, test, 1000, nullptr, pg.get());
    result.relative_bops = compute_costs(graph, net.weight_bits(), net.act_bits(), net.keep_masks()).relative;
  }
  if (result.epochs.empty()) {  // nothing to train (e.g. resumed at the end): evaluate as is
    result.test_accuracy = evaluate(net, test, 1000, nullptr, pg.get());
    result.relative_bops = compute_costs(graph, net.weight_bits(), net.act_bits(), net.keep_masks()).relative;
  }
  result.seconds_per_epoch = secs_n ? secs_sum / secs_n : 0.0;
  result.cpu_seconds_per_epoch = secs_n ? result.cpu_seconds_per_epoch / secs_n : 0.0;
  result.cost = cost_model.deterministic();
  result.final_checkpoint = c.out + "/final.safetensors";
  if (writer) {
    save(net, c, result.final_checkpoint, std::max(start_epoch, total_epochs), result.test_accuracy,
         result.relative_bops, bn_folded);
    save_train_state(result.final_checkpoint, opt_w.get(), opt_g.get(), opt_r.get(), rng, finetuning);
  }
  // No rank finishes before rank 0 has written the final checkpoint.
  if (pg) pg->barrier("the final barrier, after rank 0 wrote " + result.final_checkpoint);
  log << layer_table(compute_costs(graph, net.weight_bits(), net.act_bits(), net.keep_masks()));
  log << fmt::format("test accuracy {:.4f}, relative BOPs {:.4f}%, {:.1f} s ({:.1f} CPU s) per epoch\nwrote {}\n",
                     result.test_accuracy, 100 * result.relative_bops, result.seconds_per_epoch,
                     result.cpu_seconds_per_epoch, result.final_checkpoint);
  if (cost_model.has_budget())
    log << fmt::format("budget: {:.5g} {} against the target {:.5g} ({:+.1f}%)\n", result.cost, cost_model.unit(),
                       cost_model.target(), 100.0 * (result.cost / cost_model.target() - 1.0));
  return result;
}

double run_eval(const EvalConfig& c, std::ostream& log) {
  set_threads(c.threads);
  const Checkpoint ck = contract::load_checkpoint(c.checkpoint);
  const Graph& g = ck.graph;
  QuantSetup q;
  Net net(g, q);
  net.import_tensors(ck);
  ImageSet test = load_split(c.dataset, c.data_dir, "test", c.limit);
  // A model trained on padded images (--pad) gets them padded the same way.
  const int64_t extra = g.input.shape.size() == 3 ? g.input.shape[1] - test.rows : 0;
  if (extra > 0 && extra % 2 == 0 && g.input.shape[2] - test.cols == extra) test = pad(test, extra / 2);
  if (test.channels != g.input.shape[0] || test.rows != g.input.shape[1] || test.cols != g.input.shape[2])
    throw std::invalid_argument("dataset images do not match the model input shape");
  std::vector<float> logits;
  const double acc = evaluate(net, test, c.batch_size, c.save_logits.empty() ? nullptr : &logits);
  if (!c.save_logits.empty()) {
    const int64_t classes = test.count ? static_cast<int64_t>(logits.size()) / test.count : 0;
    write_npy(c.save_logits, logits, {test.count, classes});
  }
  const json& tj = ck.training;
  log << fmt::format("{}: model {}, method {}, {} test images{}\n", c.checkpoint, g.model, tj.value("method", "?"),
                     test.count, c.save_logits.empty() ? "" : ", logits written to " + c.save_logits);
  return acc;
}

}  // namespace bbits::train
