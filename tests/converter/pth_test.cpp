// Reference .pth checkpoints: zip and legacy containers, the restricted
// unpickler (nothing executes), the reference's names, --gates-from.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <functional>
#include <random>

#include "bbits/contract/safetensors.h"
#include "bbits/contract/zoo.h"
#include "bbits/converter/convert.h"
#include "bbits/converter/input.h"
#include "bbits/converter/pth.h"
#include "test_util.h"

namespace bbits::converter {
namespace {

template <size_t N>
std::vector<uint8_t> pickle_bytes(const char (&s)[N]) {
  return std::vector<uint8_t>(s, s + N - 1);
}

void expect_pth_error(const std::vector<uint8_t>& bytes, const std::string& needle) {
  try {
    read_pth(bytes);
    ADD_FAILURE() << "accepted; expected an error containing '" << needle << "'";
  } catch (const ConvertError& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(Pth, ZipCheckpointWithModuleStateAndDataParallelPrefix) {
  const TensorMap sd = read_pth(test::read_fixture("lenet5_reference.pth.gz"));
  ASSERT_TRUE(sd.count("features.0.weight"));  // "module." stripped, model_state selected
  EXPECT_EQ(sd.at("features.0.weight").shape, (std::vector<int64_t>{32, 1, 5, 5}));
  EXPECT_EQ(sd.at("classifier.0.weight").shape, (std::vector<int64_t>{512, 1024}));
  EXPECT_EQ(sd.at("features.2.weight_quantizer.quantizer.gamma_2").shape, (std::vector<int64_t>{64}));
  EXPECT_EQ(sd.at("features.2.weight_quantizer.quantizer.gamma_8").shape, (std::vector<int64_t>{1}));
  for (const auto& [k, v] : sd) EXPECT_EQ(k.rfind("module.", 0), std::string::npos) << k;
}

TEST(Pth, LegacyFormatReadsTheSameTensors) {
  const TensorMap zip = read_pth(test::read_fixture("lenet5_reference.pth.gz"));
  const TensorMap legacy = read_pth(test::read_fixture("lenet5_reference_legacy.pth.gz"));
  ASSERT_EQ(zip.size(), legacy.size());
  for (const auto& [k, v] : zip) {
    ASSERT_TRUE(legacy.count(k)) << k;
    EXPECT_EQ(legacy.at(k).shape, v.shape) << k;
    EXPECT_EQ(legacy.at(k).data, v.data) << k;
  }
}

TEST(Pth, MaliciousPickleIsRejectedWithoutRunningAnything) {
  std::filesystem::remove("/tmp/bbits_converter_pwned");
  expect_pth_error(test::read_fixture("malicious.pth"), "forbidden global 'posix.system'");
  EXPECT_FALSE(std::filesystem::exists("/tmp/bbits_converter_pwned"));
}

TEST(Pth, HandMadePicklesOutsideTheSubsetAreRejected) {
  // protocol-2 legacy-style stream starting with a forbidden global
  expect_pth_error(pickle_bytes("\x80\x02" "cbuiltins\neval\n" "X\x03\0\0\0" "1+1" "\x85R."), "forbidden global 'builtins.eval'");
  expect_pth_error(pickle_bytes("\x80\x02" "csubprocess\nPopen\n."), "forbidden global 'subprocess.Popen'");
  expect_pth_error(pickle_bytes("\x80\x02(i__main__\nX\n."), "INST");
  expect_pth_error(pickle_bytes("\x80\x02]"), "truncated");
  expect_pth_error(pickle_bytes("\x80\x02\xff"), "unknown opcode 0xff");
  expect_pth_error(pickle_bytes("\x80\x02h\x05."), "unknown memo entry");
  expect_pth_error(pickle_bytes("hello"), "not a PyTorch checkpoint");
  expect_pth_error(pickle_bytes("PK\x03\x04garbage"), "zip");
}

TEST(Pth, CorruptedArchivesGiveErrorsNotCrashes) {
  const auto good = test::read_fixture("lenet5_reference.pth.gz");
  std::mt19937_64 rng(1);
  int errors = 0;
  for (int i = 0; i < 60; ++i) {
    auto bad = good;
    if (i % 3 == 0) {
      bad.resize(rng() % bad.size());
    } else {
      for (int k = 0; k < 8; ++k) bad[rng() % bad.size()] ^= static_cast<uint8_t>(1 + rng() % 255);
    }
    try {
      read_pth(bad);
    } catch (const ConvertError&) {
      ++errors;
    }
  }
  EXPECT_GT(errors, 20);  // CRC checks catch nearly every flipped byte
}

// A one-entry zip: a deflated entry of `comp` bytes that declares `size`.
std::vector<uint8_t> zip_declaring(uint32_t comp, uint32_t size) {
  std::vector<uint8_t> z;
  auto put = [&z](uint64_t v, int n) {
    for (int i = 0; i < n; ++i) z.push_back(static_cast<uint8_t>(v >> (8 * i)));
  };
  const std::string name = "archive/data.pkl";
  put(0x04034b50, 4);  // local header
  put(20, 2), put(0, 2), put(8, 2), put(0, 4), put(0, 4), put(comp, 4), put(size, 4);
  put(name.size(), 2), put(0, 2);
  z.insert(z.end(), name.begin(), name.end());
  for (uint32_t i = 0; i < comp; ++i) z.push_back(0);
  const size_t cd = z.size();
  put(0x02014b50, 4);  // central directory entry
  put(20, 2), put(20, 2), put(0, 2), put(8, 2), put(0, 4), put(0, 4), put(comp, 4), put(size, 4);
  put(name.size(), 2), put(0, 2), put(0, 2), put(0, 2), put(0, 2), put(0, 4), put(0, 4);
  z.insert(z.end(), name.begin(), name.end());
  const size_t cd_size = z.size() - cd;
  put(0x06054b50, 4);  // end of central directory
  put(0, 2), put(0, 2), put(1, 2), put(1, 2), put(cd_size, 4), put(cd, 4), put(0, 2);
  return z;
}

TEST(Pth, DeclaredSizesDeflateCannotReachAreRefusedBeforeAllocating) {
  // Found by fuzz_pth: a 2-byte deflated entry declaring ~4 GB made the reader
  // allocate the whole buffer before inflating.
  expect_pth_error(zip_declaring(2, 0xf8000000u), "more than deflate can produce");
  expect_pth_error(zip_declaring(100, 100 * 1032 + 65), "more than deflate can produce");
  // Within deflate's ratio the size passes, and the garbage stream is caught.
  expect_pth_error(zip_declaring(100, 4096), "does not inflate to its declared size");
}

TEST(Pth, ReferenceNamesMapOntoTheLeNet5Template) {
  const TensorMap sd = read_pth(test::read_fixture("lenet5_reference.pth.gz"));
  const Checkpoint ck = import_reference(sd, "lenet5", nullptr, "ref.pth");
  const Node& c0 = ck.graph.node("features.0");
  EXPECT_TRUE(c0.weight_quant && c0.prune && c0.act_quant && c0.bias);
  EXPECT_FALSE(c0.act_signed);  // x_min = 0
  EXPECT_EQ(ck.get("features.0.wq.log_alpha_2").data, sd.at("features.0.weight_quantizer.quantizer.gamma_2").data);
  EXPECT_EQ(ck.get("features.2.aq.x_max").data, sd.at("features.2.activation_quantizer.quantizer.x_max").data);
  const Node& out = ck.graph.node("classifier.1");
  EXPECT_FALSE(out.prune);      // the reference switches pruning off for the logits layer
  EXPECT_FALSE(out.act_quant);  // full-precision logits
  EXPECT_EQ(weight_bits_of(ck, c0), 8);
  EXPECT_EQ(weight_bits_of(ck, ck.graph.node("features.2")), 4);
  EXPECT_EQ(weight_bits_of(ck, ck.graph.node("classifier.0")), 2);
  EXPECT_EQ(act_bits_of(ck, "features.2"), 4);
  EXPECT_FLOAT_EQ(ck.get("input.aq.x_max").scalar(), 1.0f);  // x/255 input
  bbits::format::ModelWriter w;
  const ConvertReport r = build_model(ck, w);
  EXPECT_GT(r.channels_removed, 0);
}

TEST(Pth, FineTunedCheckpointNeedsGatesFrom) {
  const TensorMap ref = read_pth(test::read_fixture("lenet5_reference.pth.gz"));
  const TensorMap fine = read_pth(test::read_fixture("lenet5_finetuned.pth.gz"));
  try {
    import_reference(fine, "lenet5", nullptr, "fine.pth");
    ADD_FAILURE() << "a fine-tuned checkpoint without gates was accepted";
  } catch (const ConvertError& e) {
    EXPECT_NE(std::string(e.what()).find("--gates-from"), std::string::npos) << e.what();
  }
  const Checkpoint a = import_reference(fine, "lenet5", &ref, "fine.pth");
  const Checkpoint b = import_reference(ref, "lenet5", nullptr, "ref.pth");
  ASSERT_EQ(a.tensors.size(), b.tensors.size());
  for (const auto& [k, v] : b.tensors) EXPECT_EQ(a.get(k).data, v.data) << k;
}

// bbits-convert's reader tells a reference .pth from a bbits checkpoint by
// its first bytes; --arch and --gates-from belong to the .pth only.
TEST(Pth, CheckpointFilesAreToldApartByTheirBytes) {
  const auto dir = test::temp_dir("read_checkpoint_file");
  auto write = [&](const std::string& name, const std::vector<uint8_t>& bytes) {
    const std::string p = (dir / name).string();
    contract::write_file_bytes(p, bytes);
    return p;
  };
  const std::string pth = write("ref.pth", test::read_fixture("lenet5_reference.pth.gz"));
  const std::string fine = write("fine.pth", test::read_fixture("lenet5_finetuned.pth.gz"));
  const std::string st = write("trained.safetensors", test::read_fixture("lenet5_trained.safetensors.gz"));

  const Checkpoint a = read_checkpoint_file(pth, "lenet5", "");
  const Checkpoint want = import_reference(read_pth_file(pth), "lenet5", nullptr, pth);
  EXPECT_EQ(a.graph, want.graph);
  EXPECT_EQ(a.tensors, want.tensors);
  EXPECT_EQ(a.source, pth);
  const TensorMap gates = read_pth_file(pth);
  EXPECT_EQ(read_checkpoint_file(fine, "lenet5", pth).tensors,
            import_reference(read_pth_file(fine), "lenet5", &gates, fine).tensors);

  const Checkpoint b = read_checkpoint_file(st, "", "");
  EXPECT_EQ(b.tensors, load_checkpoint(st).tensors);
  EXPECT_EQ(b.input_bits, 8);

  auto expect_error = [](const std::function<void()>& f, const std::string& needle) {
    try {
      f();
      ADD_FAILURE() << "accepted; expected an error containing '" << needle << "'";
    } catch (const contract::CheckpointError& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error([&] { read_checkpoint_file(pth, "", ""); }, "needs --arch");
  expect_error([&] { read_checkpoint_file(st, "lenet5", ""); }, "carries its own graph");
  expect_error([&] { read_checkpoint_file(st, "", pth); }, "carries its own graph");
  std::vector<uint8_t> cut = test::read_fixture("lenet5_trained.safetensors.gz");
  cut.resize(cut.size() / 2);
  const std::string bad = write("cut.safetensors", cut);
  expect_error([&] { read_checkpoint_file(bad, "", ""); }, bad + ": ");
  std::vector<uint8_t> zip = test::read_fixture("lenet5_reference.pth.gz");
  zip.resize(zip.size() / 2);
  const std::string badpth = write("cut.pth", zip);
  expect_error([&] { read_checkpoint_file(badpth, "lenet5", ""); }, badpth + ": ");
  std::filesystem::remove_all(dir);
}

TEST(Pth, TensorsOutsideTheTemplateAreAnError) {
  TensorMap sd = read_pth(test::read_fixture("lenet5_reference.pth.gz"));
  sd["features.4.weight"] = FTensor{{1}, {0}};
  EXPECT_THROW(import_reference(sd, "lenet5", nullptr, "x"), ConvertError);
  TensorMap sd2 = read_pth(test::read_fixture("lenet5_reference.pth.gz"));
  sd2["features.2.weight"].shape = {64, 32, 3, 3};
  sd2["features.2.weight"].data.resize(64 * 32 * 9);
  EXPECT_THROW(import_reference(sd2, "lenet5", nullptr, "x"), contract::CheckpointError);  // the contract's check
  EXPECT_THROW(import_reference(read_pth(test::read_fixture("lenet5_reference.pth.gz")), "vgg7", nullptr, "x"),
               contract::CheckpointError);
}

}  // namespace
}  // namespace bbits::converter

namespace bbits::converter {
namespace {

// The inverse of import_reference's name mapping, to build reference-style
// state dicts for every architecture from the template's tensor list.
std::string reference_name(const std::string& n) {
  auto repl = [&](const std::string& from, const std::string& to) -> std::string {
    const size_t p = n.find(from);
    return p == std::string::npos ? std::string() : n.substr(0, p) + to + n.substr(p + from.size());
  };
  for (const auto& [from, to] : std::vector<std::pair<std::string, std::string>>{
           {".bn.weight", ".gamma"}, {".bn.bias", ".beta"}, {".bn.running_mean", ".running_mean"},
           {".bn.running_var", ".running_var"}, {".wq.log_alpha_", ".weight_quantizer.quantizer.gamma_"},
           {".wq.x_max", ".weight_quantizer.quantizer.x_max"}, {".aq.log_alpha_", ".activation_quantizer.quantizer.gamma_"},
           {".aq.x_max", ".activation_quantizer.quantizer.x_max"}}) {
    const std::string r = repl(from, to);
    if (!r.empty()) return r;
  }
  return n;
}

TEST(Pth, EveryArchitectureTemplateImportsReferenceNames) {
  for (const std::string arch : {"lenet5", "vgg7", "resnet18", "mobilenetv2"}) {
    const Graph g = contract::make_graph(arch);
    std::mt19937 rng(3);
    std::uniform_real_distribution<float> u(0.1f, 1.0f);
    TensorMap sd;
    for (const auto& [name, shape] : expected_tensors(g)) {
      if (name.rfind("input.", 0) == 0) continue;
      FTensor t{shape, {}};
      t.data.resize(static_cast<size_t>(t.numel()));
      for (float& v : t.data) v = u(rng);
      sd["module." + reference_name(name)] = std::move(t);
      if (name.size() > 9 && name.compare(name.size() - 9, 9, "aq.x_max") == 0) {
        const std::string xmin = "module." + reference_name(name.substr(0, name.size() - 5) + "x_max");
        const Node& nd = g.node(name.substr(0, name.size() - 9));
        sd[xmin.substr(0, xmin.size() - 5) + "x_min"] = FTensor{{1}, {nd.act_signed ? -1.0f : 0.0f}};
      }
    }
    TensorMap stripped;
    for (auto& [k, v] : sd) stripped[k.substr(7)] = v;
    const Checkpoint ck = import_reference(stripped, arch, nullptr, "x");
    EXPECT_EQ(ck.graph.nodes.size(), g.nodes.size()) << arch;
    for (size_t i = 0; i < g.nodes.size(); ++i) {
      EXPECT_EQ(ck.graph.nodes[i].bn, g.nodes[i].bn) << arch << " " << g.nodes[i].name;
      EXPECT_EQ(ck.graph.nodes[i].act_quant, g.nodes[i].act_quant) << arch << " " << g.nodes[i].name;
      EXPECT_EQ(ck.graph.nodes[i].act_signed, g.nodes[i].act_signed) << arch << " " << g.nodes[i].name;
    }
    EXPECT_EQ(ck.tensors.size(), expected_tensors(g).size()) << arch;
  }
}

}  // namespace
}  // namespace bbits::converter

namespace bbits::converter {
namespace {

// Each --arch template records what the reference's data loader does
// (arch.cpp and docs/CONVERTER.md cite file and line): MNIST ToTensor only
// (mnist_data_loader.py), CIFAR-10 Normalize((0.4914, 0.4822, 0.4465),
// (0.2023, 0.1994, 0.2010)) (cifar10_data_loader.py), ImageNet
// Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]) at 224x224
// (mixed_precision_dataloader.py). Its input grid: 8 bits when every pixel
// level lands on it (x / 255), 16 for the normalised ones.
TEST(Arch, TemplatesRecordTheReferenceLoadersPreprocessing) {
  struct Case {
    const char* arch;
    std::vector<int64_t> shape;
    std::vector<float> mean, std;
    int input_bits;
  };
  const std::vector<float> in_mean = {0.485f, 0.456f, 0.406f}, in_std = {0.229f, 0.224f, 0.225f};
  for (const Case& c : {Case{"lenet5", {1, 28, 28}, {0.0f}, {1.0f}, 8},
                        Case{"vgg7", {3, 32, 32}, {0.4914f, 0.4822f, 0.4465f}, {0.2023f, 0.1994f, 0.2010f}, 16},
                        Case{"resnet18", {3, 224, 224}, in_mean, in_std, 16},
                        Case{"mobilenetv2", {3, 224, 224}, in_mean, in_std, 16}}) {
    const Graph g = contract::make_graph(c.arch);
    EXPECT_EQ(g.input.shape, c.shape) << c.arch;
    EXPECT_EQ(g.input.mean, c.mean) << c.arch;
    EXPECT_EQ(g.input.std, c.std) << c.arch;
    EXPECT_DOUBLE_EQ(g.input.pixel_scale, 1.0 / 255.0) << c.arch;
    EXPECT_EQ(g.input.layout, "NCHW") << c.arch;
    Checkpoint ck;
    ck.graph = g;
    ck.input_bits = kInputBitsFromPixels;
    ck.tensors["input.aq.x_max"] = FTensor{{1}, {default_input_x_max(g.input)}};
    EXPECT_EQ(input_bits_of(ck), c.input_bits) << c.arch;
  }
}

}  // namespace
}  // namespace bbits::converter

namespace bbits::converter {
namespace {

void expect_override_error(Checkpoint ck, const InputOverrides& o, const std::string& needle) {
  try {
    apply_input_overrides(ck, o);
    ADD_FAILURE() << "accepted; expected an error containing '" << needle << "'";
  } catch (const ConvertError& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(InputOverrides, ReplaceThePreprocessingAndRederiveTheRange) {
  Checkpoint ck;
  ck.graph = contract::make_graph("vgg7");
  ck.tensors["input.aq.x_max"] = FTensor{{1}, {default_input_x_max(ck.graph.input)}};
  const Checkpoint before = ck;
  apply_input_overrides(ck, {});  // nothing given: nothing changes
  EXPECT_EQ(ck.graph.input.std, before.graph.input.std);
  EXPECT_EQ(ck.get("input.aq.x_max").data, before.get("input.aq.x_max").data);

  InputOverrides o;
  o.mean = parse_value_list("0.5, 0.5,0.5", "--mean");
  o.std = parse_value_list("0.5,0.25,0.5", "--std");
  apply_input_overrides(ck, o);
  EXPECT_EQ(ck.graph.input.mean, (std::vector<float>{0.5f, 0.5f, 0.5f}));
  EXPECT_EQ(ck.graph.input.std, (std::vector<float>{0.5f, 0.25f, 0.5f}));
  EXPECT_FLOAT_EQ(ck.get("input.aq.x_max").scalar(), 2.0f);  // channel 1: (1 - 0.5) / 0.25
  InputOverrides ps;
  ps.pixel_scale = 2.0 / 255.0;  // pixels to [0, 2]: channel 1 reaches (2 - 0.5) / 0.25
  apply_input_overrides(ck, ps);
  EXPECT_FLOAT_EQ(ck.get("input.aq.x_max").scalar(), 6.0f);

  InputOverrides one;
  one.mean = std::vector<float>{0.5f};
  expect_override_error(ck, one, "--mean: 1 value(s) given (0.5), the model's input has 3 channel(s)");
  InputOverrides zero;
  zero.std = std::vector<float>{0.2f, 0.0f, 0.2f};
  expect_override_error(ck, zero, "--std: value 1 (0.000000) must be positive");
  InputOverrides nan;
  nan.mean = std::vector<float>{0.2f, std::nanf(""), 0.2f};
  expect_override_error(ck, nan, "--mean: value 1 is not a finite number");
  InputOverrides neg;
  neg.pixel_scale = -1.0;
  expect_override_error(ck, neg, "--pixel-scale: -1.000000 must be a positive finite number");
  InputOverrides huge;
  huge.std = std::vector<float>{1e-39f, 1e-39f, 1e-39f};  // positive, but (2 - 0.5) / 1e-39 overflows
  expect_override_error(ck, huge, "beyond the float range");
  EXPECT_THROW(parse_value_list("", "--std"), ConvertError);
  EXPECT_THROW(parse_value_list("0.1;0.2", "--std"), ConvertError);
  EXPECT_EQ(check_input_layout("nhwc"), "NHWC");
  EXPECT_THROW(check_input_bits(4), ConvertError);
}

}  // namespace
}  // namespace bbits::converter
