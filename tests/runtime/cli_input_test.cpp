// What `bbits run` and `bbits eval --inputs` say about their inputs: the one
// warning when values fall outside the model's input grid (fraction, range,
// the model's preprocessing and bbits-convert's --mean/--std), and the
// refusal of arrays whose shape or dtype is not the model's input.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "bbits/io.h"
#include "lenet_builder.h"

namespace {

namespace fs = std::filesystem;

struct CliResult {
  int code = -1;
  std::string out, err;
};

class CliInput : public ::testing::Test {
 protected:
  fs::path dir;
  std::string bin = std::string(BBITS_BINARY_DIR) + "/bin/bbits";
  std::string model;

  void SetUp() override {
    if (!fs::exists(bin)) GTEST_SKIP() << "bbits CLI not built: " << bin;
    dir = fs::temp_directory_path() / ("bbits_cli_input_" + std::to_string(::getpid()));
    fs::create_directories(dir);
    // The hand-built LeNet-5: input 1x1x28x28 on the 8-bit unsigned grid with
    // step 2^-8 (range [0, 255/256]), preprocessing pixel / 255.
    const auto m = bbits::testing::build_lenet(bbits::testing::LenetSpec{});
    model = p("lenet.bbm");
    bbits::format::write_file_atomic(model, m.bytes);
  }
  void TearDown() override {
    if (!dir.empty()) fs::remove_all(dir);
  }
  std::string p(const std::string& name) const { return (dir / name).string(); }
  static std::string slurp(const std::string& path) {
    std::ifstream f(path);
    return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
  }
  CliResult run(const std::string& args) const {
    const std::string cmd = std::string(BBITS_TEST_LAUNCHER) + bin + " " + args + " > " + p("out.txt") + " 2> " + p("err.txt");
    const int st = std::system(cmd.c_str());
    CliResult r;
    r.code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    r.out = slurp(p("out.txt"));
    r.err = slurp(p("err.txt"));
    return r;
  }
  // n samples of 1x1x28x28 in [0, 0.5], with `bad` values per sample set to 2.0.
  std::vector<float> samples(int64_t n, int bad) const {
    std::vector<float> x(static_cast<size_t>(n * 784));
    for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i % 128) / 256.0f;
    for (int64_t s = 0; s < n; ++s)
      for (int k = 0; k < bad; ++k) x[static_cast<size_t>(s * 784 + 17 * k)] = 2.0f;
    return x;
  }
};

TEST_F(CliInput, RunWarnsOnceWithTheFractionClippedAndTheRange) {
  const std::vector<float> x = samples(2, 5);
  bbits::io::write_npy(p("x.npy"), {2, 1, 28, 28}, x.data());
  const CliResult r = run("run " + model + " --input " + p("x.npy"));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("sample 1"), std::string::npos) << r.out;
  const std::string want =
      "bbits: warning: 10 of 1,568 input values (0.638%) were outside the model's input range [0, 0.9961] and were "
      "clipped to it: the inputs are not normalised the way the model's preprocessing says ((pixel * 0.00392157 - "
      "mean) / std with mean 0, std 1). If your data is normalised differently, convert the model again with "
      "bbits-convert --mean A,B,C --std A,B,C (and --pixel-scale S) set to your normalisation.\n";
  EXPECT_EQ(r.err, want);
  // Clean inputs: no warning at all.
  const std::vector<float> clean = samples(2, 0);
  bbits::io::write_npy(p("clean.npy"), {2, 1, 28, 28}, clean.data());
  const CliResult c = run("run " + model + " --input " + p("clean.npy"));
  ASSERT_EQ(c.code, 0) << c.err;
  EXPECT_EQ(c.err, "");
}

TEST_F(CliInput, EvalWarnsOnceOverAllSessions) {
  const std::vector<float> x = samples(40, 3);
  bbits::io::write_npy(p("x.npy"), {40, 1, 28, 28}, x.data());
  std::vector<int64_t> y(40, 1);
  bbits::io::write_npy(p("y.npy"), {40}, y.data());
  const CliResult r = run("eval " + model + " --inputs " + p("x.npy") + " --labels " + p("y.npy") + " --threads 2 -q");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out.rfind("accuracy: ", 0), 0u) << r.out;
  EXPECT_EQ(r.err.rfind("bbits: warning: 120 of 31,360 input values (0.383%) were outside the model's input range "
                        "[0, 0.9961] and were clipped to it",
                        0),
            0u)
      << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_NE(r.err.find("bbits-convert --mean A,B,C --std A,B,C"), std::string::npos) << r.err;
}

TEST_F(CliInput, EvalRefusesArraysThatAreNotTheModelsInput) {
  std::vector<int64_t> y(4, 1);
  bbits::io::write_npy(p("y.npy"), {4}, y.data());
  const std::vector<float> x = samples(4, 0);
  // the right shape
  bbits::io::write_npy(p("good.npy"), {4, 1, 28, 28}, x.data());
  EXPECT_EQ(run("eval " + model + " --inputs " + p("good.npy") + " --labels " + p("y.npy")).code, 0);
  // one sample without the N dimension
  std::vector<int64_t> y1(1, 1);
  bbits::io::write_npy(p("y1.npy"), {1}, y1.data());
  bbits::io::write_npy(p("one.npy"), {1, 28, 28}, x.data());
  EXPECT_EQ(run("eval " + model + " --inputs " + p("one.npy") + " --labels " + p("y1.npy")).code, 0);
  // N x 28 x 28: the channel dimension is missing
  bbits::io::write_npy(p("hw.npy"), {4, 28, 28}, x.data());
  CliResult r = run("eval " + model + " --inputs " + p("hw.npy") + " --labels " + p("y.npy"));
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.err, "bbits: error: " + p("hw.npy") +
                       ": array of shape 4x28x28 does not match the model's input: expected N x 1x28x28 float32 "
                       "(model input 'input' 1x1x28x28, layout NCHW)\n");
  // NHWC data for an NCHW model
  bbits::io::write_npy(p("nhwc.npy"), {4, 28, 28, 1}, x.data());
  r = run("eval " + model + " --inputs " + p("nhwc.npy") + " --labels " + p("y.npy"));
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("array of shape 4x28x28x1 does not match the model's input"), std::string::npos) << r.err;
  // raw pixels (uint8 IDX): not preprocessed
  const std::string idx = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz";
  if (fs::exists(idx)) {
    r = run("eval " + model + " --inputs " + idx + " --labels " + p("y.npy"));
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.err.find("uint8 array 10000x28x28; --inputs takes the model's input tensors as they are"),
              std::string::npos)
        << r.err;
    EXPECT_NE(r.err.find("look like raw pixels"), std::string::npos) << r.err;
  }
  // float labels
  bbits::io::write_npy(p("yf.npy"), {4}, x.data());
  r = run("eval " + model + " --inputs " + p("good.npy") + " --labels " + p("yf.npy"));
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("--labels takes integer class indices"), std::string::npos) << r.err;
  // raw float32 carries no shape: a whole number of samples is all that can be checked
  {
    std::ofstream f(p("x.raw"), std::ios::binary);
    f.write(reinterpret_cast<const char*>(x.data()), static_cast<std::streamsize>(x.size() * 4));
  }
  EXPECT_EQ(run("eval " + model + " --inputs " + p("x.raw") + " --labels " + p("y.npy")).code, 0);
  {
    std::ofstream f(p("short.raw"), std::ios::binary);
    f.write(reinterpret_cast<const char*>(x.data()), 100 * 4);
  }
  r = run("eval " + model + " --inputs " + p("short.raw") + " --labels " + p("y.npy"));
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("raw float32 file of 100 values is not a whole number of samples of 784 values"),
            std::string::npos)
      << r.err;
}

}  // namespace
