// The bbits-convert command line: conversion, --json, --synthetic, errors
// with non-zero exit codes and no file left behind.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "bbits/contract/zoo.h"
#include "bbits/converter/pth.h"
#include "bbits/contract/safetensors.h"
#include "bbits/converter/synthetic.h"
#include "bbits/format/model_file.h"
#include "bbits/format/quant.h"
#include "test_util.h"

namespace bbits::converter {
namespace {

namespace fs = std::filesystem;
namespace fb = bbits::fb;

struct CliRun {
  int code;
  std::string out;
};
CliRun run(const std::string& args) {
  const std::string cmd = std::string(BBITS_TEST_LAUNCHER) + BBITS_CONVERT_EXE + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  CliRun r{-1, {}};
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  const int st = pclose(p);
  r.code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

class Cli : public ::testing::Test {
 protected:
  fs::path dir = test::temp_dir("cli");
  void TearDown() override { fs::remove_all(dir); }
  std::string p(const std::string& name) { return (dir / name).string(); }
};

TEST_F(Cli, ConvertsACheckpointAndPrintsTheTable) {
  save_checkpoint(make_synthetic("lenet5", parse_bit_config("w4a8"), 2), p("ck.safetensors"));
  const CliRun r = run(p("ck.safetensors") + " -o " + p("m.bbm"));
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("features.2"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("relative BOPs"), std::string::npos) << r.out;
  EXPECT_TRUE(fs::exists(p("m.bbm")));
}

TEST_F(Cli, JsonSummary) {
  const CliRun r = run("--synthetic lenet5 --bits w8a8 --seed 3 --json -o " + p("m.bbm"));
  ASSERT_EQ(r.code, 0) << r.out;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["model"], "lenet5");
  EXPECT_EQ(j["layers"].size(), 7u);
  EXPECT_GT(j["file_bytes"].get<int64_t>(), 0);
  EXPECT_NEAR(j["relative_bops"].get<double>(), 64.0 / 1024, 0.01);
}

TEST_F(Cli, SyntheticFromAJsonBitConfig) {
  std::ofstream(p("bits.json")) << R"({"weight_bits": 4, "layers": {"features.2": {"weight_bits": 2, "keep": 0.5}}})";
  const CliRun r = run("--synthetic lenet5 --bits " + p("bits.json") + " --json -o " + p("m.bbm"));
  ASSERT_EQ(r.code, 0) << r.out;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["layers"][2]["weight_bits"], 2);
  EXPECT_EQ(j["layers"][2]["kept"], 32);
}

TEST_F(Cli, ReferencePthNeedsArch) {
  const auto bytes = test::read_fixture("lenet5_reference.pth.gz");
  std::ofstream(p("ref.pth"), std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()),
                                                     static_cast<std::streamsize>(bytes.size()));
  CliRun r = run(p("ref.pth") + " -o " + p("m.bbm"));
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("--arch"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(p("m.bbm")));
  r = run(p("ref.pth") + " --arch lenet5 -o " + p("m.bbm"));
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(fs::exists(p("m.bbm")));
  // after fixed-gate fine-tuning: gates from the earlier checkpoint
  const auto fine = test::read_fixture("lenet5_finetuned.pth.gz");
  std::ofstream(p("fine.pth"), std::ios::binary).write(reinterpret_cast<const char*>(fine.data()),
                                                       static_cast<std::streamsize>(fine.size()));
  r = run(p("fine.pth") + " --arch lenet5 -o " + p("f.bbm"));
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("--gates-from"), std::string::npos) << r.out;
  r = run(p("fine.pth") + " --arch lenet5 --gates-from " + p("ref.pth") + " -o " + p("f.bbm"));
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(fs::exists(p("f.bbm")));
}

// The model file written by a run, verified.
struct ModelFile {
  std::vector<uint8_t> bytes;
  bbits::format::ModelView view;
  const fb::Tensor* input() const { return view.model->tensors()->Get(view.model->inputs()->Get(0)); }
  const fb::Preprocess* pre() const { return view.model->preprocess(); }
};
ModelFile read_model(const std::string& path) {
  ModelFile m;
  m.bytes = contract::read_file_bytes(path);
  m.view = bbits::format::verify_model(m.bytes.data(), m.bytes.size());
  return m;
}

void write_fixture(const std::string& name, const std::string& to) {
  const auto bytes = test::read_fixture(name);
  std::ofstream(to, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()),
                                           static_cast<std::streamsize>(bytes.size()));
}

// --mean/--std/--pixel-scale replace the --arch template's preprocessing; the
// input grid's range follows from them (pixels 0..255 through the formula).
TEST_F(Cli, PreprocessingOverridesForAReferencePth) {
  write_fixture("lenet5_reference.pth.gz", p("ref.pth"));
  CliRun r = run(p("ref.pth") + " --arch lenet5 --json -o " + p("t.bbm"));
  ASSERT_EQ(r.code, 0) << r.out;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["input"]["mean"], nlohmann::json::array({0.0}));
  EXPECT_EQ(j["input"]["std"], nlohmann::json::array({1.0}));
  EXPECT_EQ(j["input"]["bits"], 8);  // x / 255: every pixel level on the 8-bit grid
  EXPECT_FALSE(j["input"]["signed"].get<bool>());
  EXPECT_FLOAT_EQ(j["input"]["x_max"].get<float>(), 1.0f);

  r = run(p("ref.pth") + " --arch lenet5 --mean 0.5 --std 0.25 --pixel-scale 0.00392156862745098 --json -o " + p("m.bbm"));
  ASSERT_EQ(r.code, 0) << r.out;
  j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["input"]["mean"], nlohmann::json::array({0.5}));
  EXPECT_EQ(j["input"]["std"], nlohmann::json::array({0.25}));
  EXPECT_TRUE(j["input"]["signed"].get<bool>());
  EXPECT_FLOAT_EQ(j["input"]["x_max"].get<float>(), 2.0f);  // (0 - 0.5) / 0.25 and (1 - 0.5) / 0.25
  EXPECT_EQ(j["input"]["bits"], 16);  // pixel levels (4p - 510) / 255 fall between the 8-bit grid's points
  const ModelFile m = read_model(p("m.bbm"));
  EXPECT_FLOAT_EQ(m.pre()->mean()->Get(0), 0.5f);
  EXPECT_FLOAT_EQ(m.pre()->std()->Get(0), 0.25f);
  EXPECT_FLOAT_EQ(m.pre()->pixel_scale(), 1.0f / 255.0f);
  EXPECT_TRUE(m.input()->quant()->is_signed());
  EXPECT_FLOAT_EQ(m.input()->quant()->x_max()->Get(0), 2.0f);
  EXPECT_EQ(m.input()->quant()->bits(), 16);
  EXPECT_EQ(m.input()->quant()->scale()->Get(0), grid_scale(2.0f, 16, true));

  // --input-bits 8 asks for the 8-bit grid anyway
  r = run(p("ref.pth") + " --arch lenet5 --mean 0.5 --std 0.25 --input-bits 8 --json -o " + p("m8.bbm"));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(nlohmann::json::parse(r.out)["input"]["bits"], 8);
  // a pixel scale alone: pixels 0..255 map to 0..2
  r = run(p("ref.pth") + " --arch lenet5 --pixel-scale 0.0078431372549 --json -o " + p("s.bbm"));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NEAR(nlohmann::json::parse(r.out)["input"]["x_max"].get<double>(), 2.0, 1e-6);
  // the table names the input
  r = run(p("ref.pth") + " --arch lenet5 --mean 0.5 --std 0.25 -o " + p("m.bbm"));
  EXPECT_NE(r.out.find("input: 1x28x28 NCHW, (pixel * 0.00392157 - mean) / std, mean 0.5000, std 0.2500; 16-bit signed "
                       "grid over [-2.0000, 2.0000]"),
            std::string::npos)
      << r.out;
}

TEST_F(Cli, PreprocessingOverridesForABbitsCheckpointAreSavedWithIt) {
  // a 3-channel bbits checkpoint: the reference VGG7 fixture saved as one
  const Checkpoint ck =
      import_reference(read_pth(test::read_fixture("vgg7_reference.pth.gz")), "vgg7", nullptr, "vgg7_reference.pth");
  save_checkpoint(ck, p("ck.safetensors"));
  CliRun r = run(p("ck.safetensors") + " --json -o " + p("same.bbm"));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_FLOAT_EQ(nlohmann::json::parse(r.out)["input"]["x_max"].get<float>(), ck.get("input.aq.x_max").scalar());
  EXPECT_EQ(nlohmann::json::parse(r.out)["input"]["bits"], 8);  // a bbits checkpoint: the trainer's 8-bit input
  r = run(p("ck.safetensors") + " --mean 0.5,0.25,0.5 --std 0.25,0.25,0.5 --save-checkpoint " + p("saved.safetensors") +
          " -q -o " + p("m.bbm"));
  ASSERT_EQ(r.code, 0) << r.out;
  const ModelFile m = read_model(p("m.bbm"));
  ASSERT_EQ(m.pre()->std()->size(), 3u);
  EXPECT_FLOAT_EQ(m.pre()->std()->Get(2), 0.5f);
  EXPECT_FLOAT_EQ(m.pre()->mean()->Get(1), 0.25f);
  EXPECT_FLOAT_EQ(m.input()->quant()->x_max()->Get(0), 3.0f);  // channel 1: (1 - 0.25) / 0.25
  const Checkpoint saved = load_checkpoint(p("saved.safetensors"));
  EXPECT_EQ(saved.graph.input.std, (std::vector<float>{0.25f, 0.25f, 0.5f}));
  EXPECT_FLOAT_EQ(saved.get("input.aq.x_max").scalar(), 3.0f);
}

TEST_F(Cli, LayoutAndInputBits) {
  write_fixture("lenet5_reference.pth.gz", p("ref.pth"));
  CliRun r = run(p("ref.pth") + " --arch lenet5 --layout nhwc --input-bits 16 -q -o " + p("m16.bbm"));
  ASSERT_EQ(r.code, 0) << r.out;
  ModelFile m = read_model(p("m16.bbm"));
  EXPECT_EQ(m.pre()->layout(), fb::Layout::NHWC);
  EXPECT_EQ(m.input()->dtype(), fb::DataType::Quantized);
  EXPECT_EQ(m.input()->quant()->bits(), 16);
  EXPECT_EQ(m.input()->quant()->scale()->Get(0), grid_scale(1.0f, 16, false));
  r = run(p("ref.pth") + " --arch lenet5 --input-bits 32 --json -o " + p("m32.bbm"));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(nlohmann::json::parse(r.out)["layers"][0]["in_bits"], 32);  // BOPs count a float input
  m = read_model(p("m32.bbm"));
  EXPECT_EQ(m.input()->dtype(), fb::DataType::Float32);
  EXPECT_EQ(m.pre()->layout(), fb::Layout::NCHW);
}

TEST_F(Cli, BadPreprocessingValuesAreClearErrors) {
  write_fixture("lenet5_reference.pth.gz", p("ref.pth"));
  const std::string base = p("ref.pth") + " --arch lenet5 -o " + p("m.bbm") + " ";
  struct Case {
    std::string args, message;
  };
  for (const Case& c : {
           Case{"--mean 0.1,0.2,0.3", "--mean: 3 value(s) given (0.1,0.2,0.3), the model's input has 1 channel(s): give one value per channel"},
           Case{"--std 0", "--std: value 0 (0.000000) must be positive"},
           Case{"--std -0.5", "--std: value 0 (-0.500000) must be positive"},
           Case{"--std nan", "--std: 'nan' is not a finite number"},
           Case{"--mean inf", "--mean: 'inf' is not a finite number"},
           Case{"--mean 1e39", "--mean: '1e39' is not a finite number"},
           Case{"--mean 0.5,", "--mean: '' is not a number"},
           Case{"--mean 0.5x", "--mean: '0.5x' is not a number"},
           Case{"--mean ,", "--mean: '' is not a number"},
           Case{"--pixel-scale 0", "--pixel-scale: 0.000000 must be a positive finite number"},
           Case{"--input-bits 12", "--input-bits: 12 is not 8, 16 or 32 (32: float32 input)"},
           Case{"--layout NWHC", "--layout: 'NWHC' is not NCHW or NHWC"},
       }) {
    const CliRun r = run(base + c.args);
    EXPECT_EQ(r.code, 1) << c.args << ": " << r.out;
    EXPECT_NE(r.out.find("bbits-convert: error: " + c.message), std::string::npos) << c.args << ": " << r.out;
    EXPECT_FALSE(fs::exists(p("m.bbm"))) << c.args;
  }
}

TEST_F(Cli, ErrorsExitNonZeroAndWriteNothing) {
  CliRun r = run(test::fixture_path("malicious.pth") + " --arch lenet5 -o " + p("m.bbm"));
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("posix.system"), std::string::npos) << r.out;
  r = run(p("missing.safetensors") + " -o " + p("m.bbm"));
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("cannot open"), std::string::npos) << r.out;
  std::ofstream(p("junk.safetensors")) << "\x10\0\0\0\0\0\0\0{\"a\": 1}";
  r = run(p("junk.safetensors") + " -o " + p("m.bbm"));
  EXPECT_EQ(r.code, 1) << r.out;
  r = run("--synthetic lenet5 --bits w3a3 -o " + p("m.bbm"));
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("w3a3"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(p("m.bbm")));
  for (const auto& e : fs::directory_iterator(dir))  // no temporary left behind either
    EXPECT_EQ(e.path().filename().string().find("m.bbm"), std::string::npos) << e.path();
  r = run("-o " + p("m.bbm"));
  EXPECT_NE(r.code, 0);
}

}  // namespace
}  // namespace bbits::converter
