// Data-parallel training on c10d's Gloo backend over the loopback address:
// two ranks stay bitwise identical and follow a single process on the same
// global batch step by step; a killed rank stops the other with an error that
// names it and leaves the last checkpoint intact; --nproc launches, resumes
// exactly and refuses ranks that resume from different files; the options,
// the environment, the shards and the launcher. This executable is also the
// rank process of the step-by-step test (`--worker ...`, see main).
#include <gtest/gtest.h>

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "bbits/training/distributed.h"
#include "bbits/training/trainer.h"
#include "tiny_run.h"

extern char** environ;

using namespace bbits::train;
using namespace bbits::train::testing;
namespace fs = std::filesystem;

namespace {

const std::string kTrainBin = std::string(BBITS_BINARY_DIR) + "/bin/bbits-train";

fs::path temp_dir(const std::string& name) {
  const auto d = fs::temp_directory_path() / ("bbits_dist_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

std::string slurp(const fs::path& p) {
  std::ifstream f(p);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

// Starts `program args...` with `env` added to ours, stdout and stderr to files.
pid_t spawn(const std::string& program, const std::vector<std::string>& args, const std::vector<std::string>& env,
            const fs::path& out, const fs::path& err) {
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&fa, 2, err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  std::vector<std::string> argv_s{program};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& s : argv_s) argv.push_back(s.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_s;
  for (char** e = environ; *e; ++e) env_s.emplace_back(*e);
  env_s.insert(env_s.end(), env.begin(), env.end());
  std::vector<char*> envp;
  for (auto& s : env_s) envp.push_back(s.data());
  envp.push_back(nullptr);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, program.c_str(), &fa, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) return -1;
  return pid;
}

// The exit status of `pid`, waiting at most `seconds`; on time-out the child
// is killed and the result is -1.
int wait_exit(pid_t pid, double seconds) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
  for (;;) {
    int st = 0;
    const pid_t r = ::waitpid(pid, &st, WNOHANG);
    if (r == pid) return st;
    if (r < 0) return -2;
    if (std::chrono::steady_clock::now() > until) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &st, 0);
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

bool exited_ok(int st) { return st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0; }

// ---- the step-by-step comparison -------------------------------------------
// One configuration for the single process and for every rank: Bayesian Bits
// with learned gates (started at log alpha 3, where the samples are noisy),
// augmentation, a global batch of 63 (odd: the ranks take 31 and 32 images),
// 2 gated epochs and 1 of fine-tuning; the default optimisers (Adam) on 200
// images (the last batch: 5 and 6 images), or SGD for every group on 190 (the
// last batch: 0 and 1 image).
TrainConfig step_config(const std::string& model, const std::string& optimizer, const fs::path& data,
                        const fs::path& out) {
  TrainConfig c;
  c.model = model;
  c.data_dir = data.string();
  c.out = out.string();
  c.progress = false;
  c.threads = 1;
  if (model == "lenet5") {
    c.train_limit = optimizer == "sgd" ? 190 : 200;
    c.test_limit = 100;
    c.batch_size = 63;
    c.epochs = 2;
    c.finetune_epochs = 1;
    c.augment = true;
  } else {  // a network with batch norm, small
    c.width = 0.125;
    c.train_limit = 48;
    c.test_limit = 20;
    c.batch_size = 16;
    c.epochs = 1;
  }
  c.calib_images = 64;
  c.gate_init = 3.0;
  c.mu = 0.01;
  c.seed = 5;
  if (optimizer == "adam-budget") c.target_rel_bops = 20.0;  // mu adapted by the budget controller
  if (optimizer == "sgd") {  // every group
    c.optimizer = c.optimizer_gates = c.optimizer_ranges = c.ft_optimizer_ranges = "sgd";
    c.lr = c.lr_ranges = 0.01;
    c.lr_gates = 0.1;
  }
  return c;
}

// Runs step_config, writing the network after every optimiser step to
// STEPS/e<epoch>-s<step>.safetensors.
int run_steps(TrainConfig c, const fs::path& steps) {
  fs::create_directories(steps);
  c.on_step = [steps](int epoch, int64_t step, const bbits::contract::TensorMap& t) {
    write_tensors((steps / ("e" + std::to_string(epoch) + "-s" + std::to_string(step) + ".safetensors")).string(), t);
  };
  std::ostringstream log;
  run_training(c, log);
  return 0;
}

std::vector<fs::path> step_files(const fs::path& dir) {
  std::vector<fs::path> r;
  for (const auto& e : fs::directory_iterator(dir)) r.push_back(e.path().filename());
  std::sort(r.begin(), r.end());
  return r;
}

// Largest |a - b| of a tensor relative to the largest |b| (at least 1e-3).
double relative_difference(const NamedTensor& a, const NamedTensor& b) {
  double d = 0, m = 1e-3;
  for (size_t i = 0; i < a.data.size(); ++i) {
    d = std::max(d, static_cast<double>(std::abs(a.data[i] - b.data[i])));
    m = std::max(m, static_cast<double>(std::abs(b.data[i])));
  }
  return d / m;
}

// Spawns two ranks of this executable (`--worker`) and, meanwhile, the single
// process here; returns the folders of the step files.
struct StepRuns {
  fs::path single, rank0, rank1, out0, out1, single_out;
};
StepRuns run_two_ranks_and_one(const std::string& model, const std::string& optimizer, const fs::path& dir) {
  StepRuns r{dir / "steps-single", dir / "steps-rank0", dir / "steps-rank1",
             dir / "out-rank0",    dir / "out-rank1",   dir / "out-single"};
  const std::string self = self_executable(), port = std::to_string(free_tcp_port());
  std::vector<pid_t> pids;
  for (int rank = 0; rank < 2; ++rank)
    pids.push_back(spawn(self,
                         {"--worker", model, optimizer, std::to_string(rank), "2", port, (dir / "data").string(),
                          (rank ? r.out1 : r.out0).string(), (rank ? r.rank1 : r.rank0).string()},
                         {}, dir / ("worker" + std::to_string(rank) + ".out"),
                         dir / ("worker" + std::to_string(rank) + ".err")));
  run_steps(step_config(model, optimizer, dir / "data", r.single_out), r.single);
  for (int rank = 0; rank < 2; ++rank) {
    const int st = wait_exit(pids[static_cast<size_t>(rank)], 300);
    EXPECT_TRUE(exited_ok(st)) << "rank " << rank << ": "
                               << slurp(dir / ("worker" + std::to_string(rank) + ".err"));
  }
  return r;
}

// After every step of 2 gated epochs and 1 fine-tuning epoch the two ranks
// hold the same parameters to the bit, and the same as one process on the
// same global batches within `tolerance` (largest difference relative to the
// largest value of each tensor); rank 0's log has the single process's
// accuracies; rank 1 writes nothing.
void expect_two_ranks_match_one_process(const std::string& optimizer, double tolerance) {
  const fs::path dir = temp_dir("steps_" + optimizer);
  write_tiny_data(dir / "data", 200, 100, 21);
  const StepRuns r = run_two_ranks_and_one("lenet5", optimizer, dir);
  const auto files = step_files(r.single);
  ASSERT_EQ(files.size(), 12u);  // 3 epochs x 4 steps
  ASSERT_EQ(step_files(r.rank0), files);
  ASSERT_EQ(step_files(r.rank1), files);
  double worst = 0;
  for (const auto& f : files) {
    const TensorFile s = read_tensors((r.single / f).string()), a = read_tensors((r.rank0 / f).string()),
                     b = read_tensors((r.rank1 / f).string());
    ASSERT_EQ(a.tensors.size(), s.tensors.size());
    ASSERT_EQ(b.tensors.size(), s.tensors.size());
    for (size_t i = 0; i < s.tensors.size(); ++i) {
      ASSERT_EQ(a.tensors[i].name, s.tensors[i].name);
      EXPECT_EQ(a.tensors[i].data, b.tensors[i].data) << f << " " << a.tensors[i].name << ": ranks differ";
      const double d = relative_difference(a.tensors[i], s.tensors[i]);
      worst = std::max(worst, d);
      EXPECT_LT(d, tolerance) << f << " " << s.tensors[i].name;
    }
  }
  std::printf("%s: largest relative difference to the single process over 12 steps: %.3g\n", optimizer.c_str(), worst);
  // Rank 0's log: the single process's epochs (accuracies equal, losses close).
  std::ifstream l0(r.out0 / "log.csv"), ls(r.single_out / "log.csv");
  std::string h0, hs, row0, rows;
  std::getline(l0, h0);
  std::getline(ls, hs);
  int n = 0;
  while (std::getline(ls, rows)) {
    ASSERT_TRUE(static_cast<bool>(std::getline(l0, row0)));
    double v0[7], vs[7];
    ASSERT_EQ(std::sscanf(row0.c_str(), "%lf,%lf,%lf,%lf,%lf,%lf,%lf", &v0[0], &v0[1], &v0[2], &v0[3], &v0[4], &v0[5], &v0[6]), 7);
    ASSERT_EQ(std::sscanf(rows.c_str(), "%lf,%lf,%lf,%lf,%lf,%lf,%lf", &vs[0], &vs[1], &vs[2], &vs[3], &vs[4], &vs[5], &vs[6]), 7);
    EXPECT_EQ(v0[0], vs[0]);                          // epoch
    EXPECT_NEAR(v0[1], vs[1], 1e-4 * std::abs(vs[1]));  // loss
    EXPECT_NEAR(v0[2], vs[2], 1e-4 * std::abs(vs[2]));  // ce
    EXPECT_NEAR(v0[4], vs[4], 1e-9);                  // train accuracy
    EXPECT_NEAR(v0[5], vs[5], 1e-9);                  // test accuracy
    ++n;
  }
  EXPECT_EQ(n, 3);
  EXPECT_TRUE(fs::exists(r.out0 / "final.safetensors"));
  EXPECT_TRUE(fs::exists(r.out0 / "epoch-3.trainstate.pt"));
  EXPECT_FALSE(fs::exists(r.out1)) << "rank 1 wrote output";
  fs::remove_all(dir);
}

}  // namespace

// SGD: the gradients differ by the order of float sums only, and so do the
// parameters (measured: 2.1e-7 relative, about two float ulps).
TEST(Distributed, TwoRanksMatchOneProcessStepByStepSgd) { expect_two_ranks_match_one_process("sgd", 1e-6); }

// Adam (the defaults): Adam divides by sqrt(v) + 1e-8, which magnifies the
// rounding differences of near-zero gradients (measured: 1.7e-4 relative).
TEST(Distributed, TwoRanksMatchOneProcessStepByStepAdam) { expect_two_ranks_match_one_process("adam", 1e-3); }

// With batch norm each rank normalises with its own share's statistics (as
// PyTorch's DistributedDataParallel without SyncBatchNorm); the running
// statistics are averaged every step, so the ranks still hold the same
// network to the bit, running statistics included.
TEST(Distributed, BatchNormRanksStayIdentical) {
  const fs::path dir = temp_dir("bn");
  write_tiny_data(dir / "data", 48, 20, 23);
  const StepRuns r = run_two_ranks_and_one("resnet18-small", "adam", dir);
  const auto files = step_files(r.rank0);
  ASSERT_EQ(files.size(), 3u);
  ASSERT_EQ(step_files(r.rank1), files);
  int running = 0;
  for (const auto& f : files) {
    const TensorFile a = read_tensors((r.rank0 / f).string()), b = read_tensors((r.rank1 / f).string()),
                     s = read_tensors((r.single / f).string());
    ASSERT_EQ(a.tensors.size(), b.tensors.size());
    for (size_t i = 0; i < a.tensors.size(); ++i) {
      EXPECT_EQ(a.tensors[i].data, b.tensors[i].data) << f << " " << a.tensors[i].name << ": ranks differ";
      if (f == files.front() && a.tensors[i].name == "features.0.bn.running_mean") {
        // After the first step the first layer's running mean is the single
        // process's: the shares' means weighted by share are the global
        // batch's mean. (Deeper layers see inputs normalised per share.)
        ++running;
        EXPECT_LT(relative_difference(a.tensors[i], s.tensors[i]), 1e-6) << f << " " << a.tensors[i].name;
      }
    }
  }
  EXPECT_EQ(running, 1);
  fs::remove_all(dir);
}

// With a budget mu is adapted after every step from the gates' cost, on every
// rank by itself: the ranks still hold the same network to the bit after
// every step (through the projection onto the budget at the end of the gated
// phase), and rank 0's log shows mu moved.
TEST(Distributed, BudgetRanksStayIdentical) {
  const fs::path dir = temp_dir("budget");
  write_tiny_data(dir / "data", 200, 100, 21);
  const StepRuns r = run_two_ranks_and_one("lenet5", "adam-budget", dir);
  const auto files = step_files(r.rank0);
  ASSERT_EQ(files.size(), 12u);
  ASSERT_EQ(step_files(r.rank1), files);
  for (const auto& f : files) {
    const TensorFile a = read_tensors((r.rank0 / f).string()), b = read_tensors((r.rank1 / f).string());
    ASSERT_EQ(a.tensors, b.tensors) << f << ": ranks differ";
  }
  std::ifstream l0(r.out0 / "log.csv");
  std::string header, row;
  std::getline(l0, header);
  EXPECT_NE(header.find(",mu,expected_cost,cost,target,cost_unit"), std::string::npos) << header;
  ASSERT_TRUE(static_cast<bool>(std::getline(l0, row)));
  // Column 11 is mu: it left the starting 0.01 during the first epoch.
  std::vector<std::string> cols;
  std::stringstream ss(row);
  for (std::string c; std::getline(ss, c, ',');) cols.push_back(c);
  ASSERT_GE(cols.size(), 15u) << row;
  EXPECT_NE(std::stod(cols[10]), 0.01) << row;
  EXPECT_EQ(cols[13], "20") << row;
  fs::remove_all(dir);
}

namespace {

// Two bbits-train ranks on a tiny data set, killed one at rank `victim` after
// epoch 2's checkpoint is on disk.
void kill_one_rank(int victim) {
  const fs::path dir = temp_dir("kill" + std::to_string(victim));
  write_tiny_data(dir / "data", 256, 100, 31);
  const std::string port = std::to_string(free_tcp_port());
  const fs::path out = dir / "out";
  std::vector<pid_t> pids;
  for (int rank = 0; rank < 2; ++rank)
    pids.push_back(spawn(kTrainBin,
                         {"--model", "lenet5", "--epochs", "100", "--batch-size", "64", "--train-limit", "256",
                          "--test-limit", "100", "--calib-images", "64", "--threads", "1", "--no-progress", "--data-dir",
                          (dir / "data").string(), "--out", out.string(), "--world-size", "2", "--rank",
                          std::to_string(rank), "--master-port", port, "--dist-timeout", "60"},
                         {}, dir / ("rank" + std::to_string(rank) + ".out"),
                         dir / ("rank" + std::to_string(rank) + ".err")));
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (!fs::exists(out / "epoch-2.safetensors") && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_TRUE(fs::exists(out / "epoch-2.safetensors")) << slurp(dir / "rank0.err");
  ::kill(pids[static_cast<size_t>(victim)], SIGKILL);
  ::waitpid(pids[static_cast<size_t>(victim)], nullptr, 0);
  const int survivor = 1 - victim;
  const auto t0 = std::chrono::steady_clock::now();
  const int st = wait_exit(pids[static_cast<size_t>(survivor)], 90);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_NE(st, -1) << "rank " << survivor << " did not stop";
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) != 0);
  const std::string err = slurp(dir / ("rank" + std::to_string(survivor) + ".err"));
  EXPECT_NE(err.find("lost contact with rank " + std::to_string(victim)), std::string::npos) << err;
  EXPECT_LT(secs, 60.0) << "not within the time-out";
  // The last complete checkpoint loads, and a single process resumes from it.
  int last = 0;
  for (int e = 1; e <= 100; ++e)
    if (fs::exists(out / ("epoch-" + std::to_string(e) + ".safetensors"))) last = e;
  ASSERT_GE(last, 2);
  const fs::path ck = out / ("epoch-" + std::to_string(last) + ".safetensors");
  EXPECT_NO_THROW(bbits::contract::load_checkpoint(ck.string()));  // whole and valid
  EvalConfig e;
  e.checkpoint = ck.string();
  e.data_dir = (dir / "data").string();
  e.limit = 100;
  e.threads = 1;
  std::ostringstream log;
  EXPECT_GT(run_eval(e, log), 0.0);
  TrainConfig rc = tiny_run(dir / "resumed", 256, 100, 31);
  rc.resume = ck.string();
  rc.epochs = last + 1;
  rc.batch_size = 64;
  rc.calib_images = 64;
  rc.threads = 1;
  const auto r = run_training(rc, log);
  EXPECT_EQ(r.epochs.size(), 1u);
  fs::remove_all(dir);
}

}  // namespace

TEST(Distributed, KilledRankStopsTheOtherWithANamedError) { kill_one_rank(1); }
TEST(Distributed, KilledRankZeroStopsTheOtherWithANamedError) { kill_one_rank(0); }

// --nproc 2: 2 epochs straight, and 1 epoch then --resume for the second,
// end on the same network to the bit; ranks that resume from different files
// are refused by name.
TEST(Distributed, LocalLaunchResumesExactly) {
  const fs::path dir = temp_dir("resume");
  write_tiny_data(dir / "data", 192, 64, 41);
  const std::vector<std::string> common = {"--model", "lenet5", "--batch-size", "64", "--train-limit", "192",
                                           "--test-limit", "64", "--calib-images", "64", "--no-progress", "--augment",
                                           "--data-dir", (dir / "data").string(), "--nproc", "2", "--threads", "1"};
  auto run = [&](std::vector<std::string> extra, const std::string& name) {
    std::vector<std::string> args = common;
    args.insert(args.end(), extra.begin(), extra.end());
    const int st = wait_exit(spawn(kTrainBin, args, {}, dir / (name + ".out"), dir / (name + ".err")), 300);
    EXPECT_TRUE(exited_ok(st)) << name << ": " << slurp(dir / (name + ".err"));
    return slurp(dir / (name + ".out"));
  };
  run({"--epochs", "2", "--out", (dir / "straight").string()}, "straight");
  run({"--epochs", "1", "--out", (dir / "first").string()}, "first");
  const std::string log = run({"--epochs", "2", "--out", (dir / "first").string(), "--resume",
                               (dir / "first" / "epoch-1.safetensors").string()},
                              "resumed");
  EXPECT_NE(log.find("distributed: 2 ranks"), std::string::npos) << log;
  EXPECT_NE(log.find("RNG states restored"), std::string::npos) << log;
  EXPECT_EQ(log.find("accuracy:"), log.rfind("accuracy:")) << "only rank 0 prints the result";
  expect_same_tensors(dir / "straight" / "final.safetensors", dir / "first" / "final.safetensors");

  // Rank 1 resumes from a copy without the training state: both ranks refuse.
  fs::copy_file(dir / "first" / "epoch-1.safetensors", dir / "copy.safetensors");
  const std::string port = std::to_string(free_tcp_port());
  std::vector<pid_t> pids;
  for (int rank = 0; rank < 2; ++rank)
    pids.push_back(spawn(kTrainBin,
                         {"--model", "lenet5", "--batch-size", "64", "--train-limit", "192", "--test-limit", "64",
                          "--no-progress", "--threads", "1", "--data-dir", (dir / "data").string(), "--epochs", "2",
                          "--out", (dir / "mixed").string(), "--resume",
                          rank ? (dir / "copy.safetensors").string() : (dir / "first" / "epoch-1.safetensors").string()},
                         {"WORLD_SIZE=2", "RANK=" + std::to_string(rank), "MASTER_ADDR=127.0.0.1", "MASTER_PORT=" + port},
                         dir / ("mixed" + std::to_string(rank) + ".out"), dir / ("mixed" + std::to_string(rank) + ".err")));
  for (int rank = 0; rank < 2; ++rank) {
    const int st = wait_exit(pids[static_cast<size_t>(rank)], 120);
    EXPECT_TRUE(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 1);
    const std::string err = slurp(dir / ("mixed" + std::to_string(rank) + ".err"));
    EXPECT_NE(err.find("of rank 1 differ from rank 0's"), std::string::npos) << err;
  }
  fs::remove_all(dir);
}

// ---- the launcher, on a shell instead of bbits-train -------------------------
TEST(DistributedLauncher, SetsTheEnvironmentOfEveryRank) {
  DistConfig w;
  w.master_addr = "127.0.0.1";
  w.master_port = 4321;
  std::ostringstream err;
  const int rc = launch_local_ranks(
      3, "/bin/sh",
      {"-c", "test \"$WORLD_SIZE\" = 3 && test \"$LOCAL_WORLD_SIZE\" = 3 && test \"$MASTER_ADDR\" = 127.0.0.1 && "
             "test \"$MASTER_PORT\" = 4321 && test \"$LOCAL_RANK\" = \"$RANK\" && test \"$RANK\" -ge 0 && "
             "test \"$RANK\" -lt 3 && test \"$1\" = arg",
       "sh", "arg"},
      w, 5, err);
  EXPECT_EQ(rc, 0) << err.str();
  EXPECT_EQ(err.str(), "");
}

TEST(DistributedLauncher, StopsTheOthersWhenOneRankFails) {
  DistConfig w;
  std::ostringstream err;
  const auto t0 = std::chrono::steady_clock::now();
  // Rank 1 fails at once; rank 0 would sleep for a minute.
  const int rc = launch_local_ranks(2, "/bin/sh", {"-c", "if [ \"$RANK\" = 1 ]; then exit 3; fi; exec sleep 60"}, w,
                                    0.5, err);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(rc, 3);
  EXPECT_LT(secs, 20.0);
  EXPECT_NE(err.str().find("rank 1 (pid"), std::string::npos) << err.str();
  EXPECT_NE(err.str().find("exited with status 3"), std::string::npos) << err.str();
  EXPECT_NE(err.str().find("rank 0 (pid"), std::string::npos) << err.str();
  EXPECT_NE(err.str().find("stopped by the launcher"), std::string::npos) << err.str();
}

TEST(DistributedLauncher, ReportsARankKilledByASignal) {
  DistConfig w;
  std::ostringstream err;
  const int rc = launch_local_ranks(2, "/bin/sh", {"-c", "if [ \"$RANK\" = 0 ]; then kill -9 $$; fi; exit 0"}, w, 5, err);
  EXPECT_EQ(rc, 128 + SIGKILL);
  EXPECT_NE(err.str().find("rank 0 (pid"), std::string::npos) << err.str();
  EXPECT_NE(err.str().find("killed by signal 9"), std::string::npos) << err.str();
  EXPECT_THROW(launch_local_ranks(2, "/nonexistent/program", {}, w, 1, err), std::runtime_error);
}

// ---- options, environment, shards, fingerprints ------------------------------
namespace {
EnvLookup env_of(std::map<std::string, std::string> m) {
  return [m](const std::string& k) -> std::optional<std::string> {
    auto it = m.find(k);
    if (it == m.end()) return std::nullopt;
    return it->second;
  };
}
std::string config_error(const DistOptions& o, const EnvLookup& env) {
  try {
    resolve_dist_config(o, env);
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST(DistributedConfig, CommandLineOverEnvironmentOverDefaults) {
  DistConfig d = resolve_dist_config({}, env_of({}));
  EXPECT_EQ(d.world_size, 1);
  EXPECT_EQ(d.rank, 0);
  EXPECT_EQ(d.master_addr, "127.0.0.1");
  EXPECT_EQ(d.master_port, 29500);
  EXPECT_FALSE(d.enabled());
  const auto env = env_of({{"WORLD_SIZE", "4"}, {"RANK", "3"}, {"MASTER_ADDR", "10.0.0.1"}, {"MASTER_PORT", "1234"}});
  d = resolve_dist_config({}, env);
  EXPECT_EQ(d.world_size, 4);
  EXPECT_EQ(d.rank, 3);
  EXPECT_EQ(d.master_addr, "10.0.0.1");
  EXPECT_EQ(d.master_port, 1234);
  EXPECT_TRUE(d.enabled());
  DistOptions o;
  o.world_size = 2;
  o.rank = 1;
  o.master_addr = "host";
  o.master_port = 99;
  o.timeout_s = 7;
  d = resolve_dist_config(o, env);
  EXPECT_EQ(d.world_size, 2);
  EXPECT_EQ(d.rank, 1);
  EXPECT_EQ(d.master_addr, "host");
  EXPECT_EQ(d.master_port, 99);
  EXPECT_EQ(d.timeout_s, 7);
}

TEST(DistributedConfig, BadValuesAreNamed) {
  EXPECT_NE(config_error({}, env_of({{"WORLD_SIZE", "two"}})).find("WORLD_SIZE must be a whole number"), std::string::npos);
  EXPECT_NE(config_error({}, env_of({{"WORLD_SIZE", "2"}, {"RANK", "2"}})).find("RANK must be in [0, 2)"), std::string::npos);
  EXPECT_NE(config_error({}, env_of({{"MASTER_PORT", "70000"}})).find("MASTER_PORT must be in 1..65535"), std::string::npos);
  EXPECT_NE(config_error({}, env_of({{"MASTER_PORT", "12x"}})).find("MASTER_PORT must be a whole number"), std::string::npos);
  DistOptions o;
  o.world_size = 0;
  EXPECT_NE(config_error(o, env_of({})).find("--world-size must be >= 1"), std::string::npos);
  o.world_size = 3;
  o.rank = -1;
  EXPECT_NE(config_error(o, env_of({})).find("--rank must be in [0, 3)"), std::string::npos);
  o.rank = 0;
  o.timeout_s = 0;
  EXPECT_NE(config_error(o, env_of({})).find("--dist-timeout"), std::string::npos);
}

TEST(DistributedShard, SharesAreDisjointInOrderAndCoverTheBatch) {
  for (int64_t n : {0, 1, 5, 63, 64, 128}) {
    for (int w : {1, 2, 3, 7}) {
      int64_t next = 0;
      for (int r = 0; r < w; ++r) {
        const Shard s = shard_of(n, w, r);
        EXPECT_EQ(s.begin, next);
        EXPECT_GE(s.size(), n / w);
        EXPECT_LE(s.size(), n / w + 1);
        next = s.end;
      }
      EXPECT_EQ(next, n);
    }
  }
  EXPECT_EQ(shard_of(63, 2, 0).size(), 31);
  EXPECT_EQ(shard_of(63, 2, 1).size(), 32);
  EXPECT_THROW(shard_of(10, 2, 2), std::invalid_argument);
}

TEST(DistributedFingerprint, DiffersWithTheBytes) {
  const fs::path dir = temp_dir("fp");
  std::ofstream(dir / "a") << "checkpoint bytes";
  std::ofstream(dir / "b") << "checkpoint bytez";
  std::ofstream(dir / "c") << "checkpoint bytes";
  EXPECT_EQ(file_fingerprint((dir / "a").string()), file_fingerprint((dir / "c").string()));
  EXPECT_NE(file_fingerprint((dir / "a").string()), file_fingerprint((dir / "b").string()));
  EXPECT_EQ(file_fingerprint((dir / "missing").string()), 0u);
  const int port = free_tcp_port();
  EXPECT_GT(port, 0);
  EXPECT_LE(port, 65535);
  fs::remove_all(dir);
}

// `distributed_test --worker MODEL OPTIMIZER RANK WORLD PORT DATA OUT STEPS`:
// one rank of the step-by-step comparison. Otherwise: the tests.
int main(int argc, char** argv) {
  if (argc == 10 && std::string(argv[1]) == "--worker") {
    try {
      TrainConfig c = step_config(argv[2], argv[3], argv[7], argv[8]);
      c.dist.rank = std::stoi(argv[4]);
      c.dist.world_size = std::stoi(argv[5]);
      c.dist.master_port = std::stoi(argv[6]);
      c.dist.timeout_s = 120;
      return run_steps(c, argv[9]);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "worker: %s\n", e.what());
      return 1;
    }
  }
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
