// The bbits-convert command line: conversion, --json, --synthetic, errors
// with non-zero exit codes and no file left behind.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "bbits/converter/safetensors.h"
#include "bbits/converter/synthetic.h"
#include "test_util.h"

namespace bbits::converter {
namespace {

namespace fs = std::filesystem;

struct CliRun {
  int code;
  std::string out;
};
CliRun run(const std::string& args) {
  const std::string cmd = std::string(BBITS_CONVERT_EXE) + " " + args + " 2>&1";
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
