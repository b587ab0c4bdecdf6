// bbits-train: Bayesian Bits training on LibTorch, and the eval entry point.
#include <algorithm>
#include <cstdio>
#include <iostream>
#include <thread>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "bbits/training/distributed.h"
#include "bbits/training/trainer.h"

int main(int argc, char** argv) {
  using namespace bbits::train;
  CLI::App app{"bbits-train: train a network with Bayesian Bits (learned bit widths and pruning), or evaluate a checkpoint"};
  app.set_version_flag("--version", "bbits-train 0.1.0");
  TrainConfig c;
  EvalConfig e;
  std::string mode = "bayesian-bits", eval_ckpt;
  app.add_option("--eval", eval_ckpt, "Evaluate CHECKPOINT (eval mode, deterministic gates) on the test set and print 'accuracy: 0.xxxx'; no training")
      ->check(CLI::ExistingFile);
  app.add_option("--save-logits", e.save_logits, "With --eval: write the float32 logits (N x classes) to this .npy file");
  app.add_option("--limit", e.limit, "With --eval: use only the first N test images");
  app.add_option("--model", c.model, "Network: lenet5, vgg7, resnet18, resnet18-small, mobilenetv2")->capture_default_str();
  app.add_option("--mode", mode,
                 "bayesian-bits (weights, gates, ranges jointly), post-training (weights frozen from --init), "
                 "quant-only (no pruning gates), prune-only (pruning gates, fixed bits), fixed (--bits), float")
      ->capture_default_str();
  app.add_option("--dataset", c.dataset, "Data set (fashion-mnist)")->capture_default_str();
  app.add_option("--data-dir", c.data_dir, "Folder of the IDX files (default /usr/share/datasets/fashion-mnist or $BBITS_FASHION_MNIST_DIR)");
  app.add_option("--out", c.out, "Output folder: log.csv, bits.csv, epoch-N.safetensors, final.safetensors")->capture_default_str();
  app.add_option("--mu", c.mu,
                 "Regularizer strength, the reference's --gating-lambda (loss = mean CE + mu * sum over quantizers of "
                 "the expected BOP cost, per batch)")
      ->capture_default_str();
  app.add_option("--reg-type", c.reg_type, "Regularizer cost per bit width: bop ((MACs / largest layer MACs) x bits) or const (1), the reference's --reg-type")
      ->capture_default_str();
  app.add_option("--cost", c.cost,
                 "Prior: bops (the reference's expected-BOP regularizer) or latency (expected time on --cost-table)")
      ->capture_default_str();
  app.add_option("--cost-table", c.cost_table, "Cost table of this network on the target CPU (`bbits profile`)")
      ->check(CLI::ExistingFile);
  app.add_option("--target-ms", c.target_ms,
                 "Budget in ms on the cost table: mu is adapted (dual ascent) so that the final model meets it");
  app.add_option("--target-rel-bops", c.target_rel_bops,
                 "Budget in percent relative BOPs: mu is adapted so that the final model meets it");
  app.add_option("--budget-eta", c.budget_eta,
                 "Budget controller step: mu *= exp(s), s = min(eta r, eta) over budget, max(10 eta r, -10 eta) under "
                 "it, r = ln(cost / target), per batch")
      ->capture_default_str();
  app.add_option("--budget-signal", c.budget_signal,
                 "The cost the budget controller sees: deterministic (the test-time gates), expected (under the gate "
                 "distributions) or min (the lower of the two)")
      ->capture_default_str();
  app.add_option("--epochs", c.epochs, "Training epochs (gated phase)")->capture_default_str();
  app.add_option("--finetune-epochs", c.finetune_epochs,
                 "Epochs of fine-tuning after the gates are fixed at their test-time decisions and batch norm is folded "
                 "(the reference's --fixed-gate-finetune-epochs)")
      ->capture_default_str();
  app.add_option("--batch-size", c.batch_size, "Mini-batch size")->capture_default_str();
  app.add_option("--optimizer", c.optimizer, "Optimizer of the weights in the gated phase: adam or sgd (Nesterov, momentum 0.9)")->capture_default_str();
  app.add_option("--optimizer-gates", c.optimizer_gates, "Optimizer of the gates' log alpha: adam or sgd (the reference's --optimizer-q)")->capture_default_str();
  app.add_option("--optimizer-ranges", c.optimizer_ranges, "Optimizer of the quantizer ranges x_max: adam or sgd (the reference's --optimizer-s)")->capture_default_str();
  app.add_option("--lr", c.lr, "Learning rate of the weights in the gated phase")->capture_default_str();
  app.add_option("--lr-gates", c.lr_gates, "Learning rate of the gates' log alpha (the reference's --learning-rate-q)")->capture_default_str();
  app.add_option("--lr-ranges", c.lr_ranges, "Learning rate of the quantizer ranges x_max (the reference's --learning-rate-s)")->capture_default_str();
  app.add_option("--lr-schedule", c.lr_schedule,
                 "Per-epoch schedule of the gated phase: linear-tail (weights constant for 2/3 of the epochs, then "
                 "linear to 0; the reference on MNIST/CIFAR10), constant, multistep:E1:E2... (every group x0.1 after "
                 "each milestone epoch), cosine[:ETA] (weights to ETA, other groups to 0)")
      ->capture_default_str();
  app.add_option("--weight-decay", c.weight_decay, "Weight decay (L2) of the weights in the gated phase")->capture_default_str();
  app.add_option("--gate-init", c.gate_init, "Initial log alpha of every learned gate (6 in the reference: all gates open)")->capture_default_str();
  app.add_option("--gate-init-4", c.gate_init_4, "Initial log alpha of the 4-bit gates z4 (default --gate-init; the reference's --gamma-4-init)");
  app.add_option("--gate-init-8", c.gate_init_8, "Initial log alpha of the 8-bit gates z8 (the reference's --gamma-8-init)");
  app.add_option("--gate-init-16", c.gate_init_16, "Initial log alpha of the 16-bit gates z16 (the reference's --gamma-16-init)");
  app.add_option("--gate-init-32", c.gate_init_32, "Initial log alpha of the 32-bit gates z32 (the reference's --gamma-32-init)");
  app.add_option("--gate-init-prune", c.gate_init_prune, "Initial log alpha of the pruning gates z2 (the reference: always 6)");
  app.add_option("--ft-optimizer", c.ft_optimizer, "Fine-tuning optimizer of the weights: sgd (Nesterov, momentum 0.9) or adam")->capture_default_str();
  app.add_option("--ft-lr", c.ft_lr, "Fine-tuning learning rate of the weights")->capture_default_str();
  app.add_option("--ft-optimizer-ranges", c.ft_optimizer_ranges, "Fine-tuning optimizer of the ranges x_max: adam or sgd")->capture_default_str();
  app.add_option("--ft-lr-ranges", c.ft_lr_ranges, "Fine-tuning learning rate of the ranges x_max")->capture_default_str();
  app.add_option("--ft-schedule", c.ft_schedule,
                 "Fine-tuning schedule, stepped after every batch over all fine-tuning steps: cosine[:ETA] (weights "
                 "to ETA, ranges to 0), constant, linear-tail, multistep:S1:S2... (milestones in steps)")
      ->capture_default_str();
  app.add_option("--bits", c.fixed_bits, "With --mode fixed: wXaY, e.g. w8a8, w4a8, w2a8")->capture_default_str();
  app.add_option("--prune-only-bits", c.prune_only_bits, "With --mode prune-only: the fixed bit width of weights and activations (8, 16, or 32 = float), or wXaY (e.g. w4a8, the reference's --fixed-48bit)")->capture_default_str();
  app.add_option("--init", c.init, "With --mode post-training: the float checkpoint whose weights are frozen");
  bool freeze_ranges = false;
  app.add_flag("--freeze-ranges", freeze_ranges, "With --mode post-training: learn the gates only, keep the calibrated ranges");
  app.add_option("--resume", c.resume, "Continue training from a checkpoint written by this program (restores optimizer moments and RNG states from CKPT.trainstate.pt when present)");
  app.add_option("--seed", c.seed, "Random seed")->capture_default_str();
  app.add_option("--threads", c.threads, "Torch intra-op and inter-op threads")->capture_default_str();
  app.add_option("--calib-images", c.calib_images, "Training images used to initialise the ranges")->capture_default_str();
  app.add_option("--train-limit", c.train_limit, "Use only the first N training images");
  app.add_option("--pad", c.pad, "Zero pixels added on each side of every image (2: Fashion-MNIST at 32x32)");
  app.add_option("--test-limit", c.test_limit, "Use only the first N test images");
  app.add_flag("--augment", c.augment, "Random horizontal flips and shifts of up to 2 pixels");
  app.add_option("--width", c.width, "Channel multiplier for vgg7, resnet18(-small), mobilenetv2")->capture_default_str();
  DistOptions dist;
  int nproc = 0;
  app.add_option("--world-size", dist.world_size,
                 "Distributed: number of processes (ranks) of the run, over all machines (default $WORLD_SIZE, else 1); "
                 "--batch-size is then the global batch, split over the ranks");
  app.add_option("--rank", dist.rank, "Distributed: this process's rank, 0..world size - 1 (default $RANK, else 0); rank 0 writes --out");
  app.add_option("--master-addr", dist.master_addr, "Distributed: the address of rank 0's machine (default $MASTER_ADDR, else 127.0.0.1)");
  app.add_option("--master-port", dist.master_port,
                 "Distributed: the TCP port rank 0 listens on for the rendezvous (default $MASTER_PORT, else 29500; "
                 "with --nproc a free port)");
  app.add_option("--dist-timeout", dist.timeout_s,
                 "Distributed: seconds to wait for the other ranks at the rendezvous and in every collective; a peer "
                 "silent for longer stops the run")
      ->capture_default_str();
  app.add_option("--nproc", nproc,
                 "Start this many local processes as one distributed run (each with --threads, by default the cores / "
                 "N) and wait for all of them")
      ->check(CLI::Range(1, 1024));
  bool no_progress = false, no_epoch_ckpt = false;
  app.add_flag("--no-progress", no_progress, "No progress bar");
  app.add_flag("--no-epoch-checkpoints", no_epoch_ckpt, "Write only final.safetensors");
  CLI11_PARSE(app, argc, argv);
  bool distributed = false;
  int rank = 0;
  try {
    if (!eval_ckpt.empty() && (nproc > 0 || dist.world_size || dist.rank))
      throw std::invalid_argument("--eval runs in one process: --nproc, --world-size and --rank apply to training");
    if (nproc > 1) {
      if (dist.world_size || dist.rank)
        throw std::invalid_argument("--nproc starts its own ranks: leave out --world-size and --rank");
      const EnvLookup env = process_environment();
      DistOptions local = dist;
      local.world_size = nproc;
      local.rank = 0;
      if (!local.master_addr && !env("MASTER_ADDR")) local.master_addr = "127.0.0.1";
      if (!local.master_port && !env("MASTER_PORT")) local.master_port = free_tcp_port(local.master_addr.value_or("127.0.0.1"));
      const DistConfig world = resolve_dist_config(local, env);
      // The ranks get our arguments without --nproc (and --threads cores/N unless given).
      std::vector<std::string> args;
      for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--nproc") {
          ++i;
          continue;
        }
        if (a.rfind("--nproc=", 0) == 0) continue;
        args.push_back(a);
      }
      if (app.count("--threads") == 0) {
        const int t = std::max(1, static_cast<int>(std::thread::hardware_concurrency()) / nproc);
        args.push_back("--threads");
        args.push_back(std::to_string(t));
      }
      std::fprintf(stderr, "bbits-train: starting %d ranks, rendezvous at %s:%d\n", nproc, world.master_addr.c_str(),
                   world.master_port);
      return launch_local_ranks(nproc, self_executable(), args, world, dist.timeout_s + 10, std::cerr);
    }
    if (eval_ckpt.empty()) c.dist = resolve_dist_config(dist, process_environment());
    distributed = c.dist.enabled();
    rank = c.dist.rank;
    if (!eval_ckpt.empty()) {
      e.checkpoint = eval_ckpt;
      e.dataset = c.dataset;
      e.data_dir = c.data_dir;
      e.threads = c.threads;
      const double acc = run_eval(e, std::cerr);
      std::printf("accuracy: %.4f\n", acc);
      return 0;
    }
    c.mode = mode_from_name(mode);
    c.learn_ranges = !freeze_ranges;
    c.progress = !no_progress;
    c.save_epochs = !no_epoch_ckpt;
    const auto r = run_training(c, std::cout);
    if (rank == 0) std::printf("accuracy: %.4f\nrelative_bops: %.6f\n", r.test_accuracy, r.relative_bops);
    return 0;
  } catch (const std::exception& ex) {
    if (distributed)
      std::fprintf(stderr, "bbits-train: error (rank %d of %d): %s\n", rank, c.dist.world_size, ex.what());
    else
      std::fprintf(stderr, "bbits-train: error: %s\n", ex.what());
    return 1;
  }
}
