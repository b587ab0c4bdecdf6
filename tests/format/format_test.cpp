// Model file round trip and rejection of bad files and bad descriptions.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include "bbits/format/cost.h"
#include "bbits/format/model_file.h"
#include "bbits/format/quant.h"

using namespace bbits;
using namespace bbits::format;

namespace {

std::unique_ptr<fb::TensorT> tensor(const std::string& name, std::vector<int64_t> shape, fb::DataType dt,
                                    int bits = 0, bool sgn = false, float scale = 0.f, int buffer = -1) {
  auto t = std::make_unique<fb::TensorT>();
  t->name = name;
  t->shape = std::move(shape);
  t->dtype = dt;
  t->buffer = buffer;
  if (bits) {
    t->quant = std::make_unique<fb::QuantT>();
    t->quant->bits = static_cast<uint8_t>(bits);
    t->quant->is_signed = sgn;
    t->quant->scale = {scale};
    t->quant->x_max = {1.0f};
  }
  return t;
}

// input [1,2,6,6] u8 -> conv 2->3 k3 (w4) relu -> [1,3,4,4] u8 -> maxpool 2 -> [1,3,2,2]
// -> reshape [1,12] -> fc 12->5 (w2) -> [1,5] float
ModelWriter tiny_model(int conv_rows = 3) {
  ModelWriter w;
  auto& m = w.model();
  m.tensors.push_back(tensor("input", {1, 2, 6, 6}, fb::DataType::Quantized, 8, false, 1.0f / 255));
  std::vector<int32_t> q(18, 1);
  std::vector<uint8_t> packed(conv_rows * packed_row_bytes(18, 4));
  for (int r = 0; r < conv_rows; ++r) pack_row(q.data(), 18, 4, packed.data() + r * packed_row_bytes(18, 4));
  const int wb = w.add_buffer(packed);
  m.tensors.push_back(tensor("conv.weight", {conv_rows, 3, 3, 2}, fb::DataType::Quantized, 4, true, 0.1f, wb));
  std::vector<int32_t> bias(3, 5);
  m.tensors.push_back(tensor("conv.bias", {3}, fb::DataType::Int32, 0, false, 0, w.add_buffer(bias.data(), 12)));
  m.tensors.push_back(tensor("conv.out", {1, 3, 4, 4}, fb::DataType::Quantized, 8, false, 0.05f));
  m.tensors.push_back(tensor("pool.out", {1, 3, 2, 2}, fb::DataType::Quantized, 8, false, 0.05f));
  m.tensors.push_back(tensor("flat", {1, 12}, fb::DataType::Quantized, 8, false, 0.05f));
  std::vector<uint8_t> fcw(5 * packed_row_bytes(12, 2), 0x11);
  m.tensors.push_back(tensor("fc.weight", {5, 12}, fb::DataType::Quantized, 2, true, 0.2f, w.add_buffer(fcw)));
  std::vector<float> fcb(5, 0.5f);
  m.tensors.push_back(tensor("fc.bias", {5}, fb::DataType::Float32, 0, false, 0, w.add_buffer(fcb.data(), 20)));
  m.tensors.push_back(tensor("logits", {1, 5}, fb::DataType::Float32));
  m.inputs = {0};
  m.outputs = {8};

  auto conv = std::make_unique<fb::OperatorT>();
  conv->name = "conv";
  conv->type = fb::OpType::Conv2D;
  conv->inputs = {0, 1, 2};
  conv->outputs = {3};
  fb::Conv2DOptionsT co;
  co.activation = fb::Activation::Relu;
  conv->options.Set(co);
  conv->keep_mask = {1, 0, 1, 1};
  conv->macs = cost::conv2d_macs(4, 4, 3, 2, 3, 3);
  conv->macs_unpruned = cost::conv2d_macs(4, 4, 4, 2, 3, 3);
  conv->bops = cost::bops(conv->macs, 4, 8);
  conv->weight_bytes = static_cast<int64_t>(packed.size());
  m.operators.push_back(std::move(conv));

  auto pool = std::make_unique<fb::OperatorT>();
  pool->name = "pool";
  pool->type = fb::OpType::MaxPool2D;
  pool->inputs = {3};
  pool->outputs = {4};
  fb::Pool2DOptionsT po;
  po.kernel_h = po.kernel_w = po.stride_h = po.stride_w = 2;
  pool->options.Set(po);
  m.operators.push_back(std::move(pool));

  auto flat = std::make_unique<fb::OperatorT>();
  flat->name = "flatten";
  flat->type = fb::OpType::Reshape;
  flat->inputs = {4};
  flat->outputs = {5};
  fb::ReshapeOptionsT ro;
  ro.shape = {1, 12};
  flat->options.Set(ro);
  m.operators.push_back(std::move(flat));

  auto fc = std::make_unique<fb::OperatorT>();
  fc->name = "fc";
  fc->type = fb::OpType::FullyConnected;
  fc->inputs = {5, 6, 7};
  fc->outputs = {8};
  fc->options.Set(fb::FullyConnectedOptionsT{});
  m.operators.push_back(std::move(fc));

  m.preprocess = std::make_unique<fb::PreprocessT>();
  m.preprocess->channels = 2;
  m.preprocess->height = 6;
  m.preprocess->width = 6;
  m.preprocess->pixel_scale = 1.0f / 255;
  m.metadata = std::make_unique<fb::MetadataT>();
  m.metadata->producer = "format_test";
  return w;
}

std::string expect_rejected(const std::vector<uint8_t>& bytes) {
  try {
    verify_model(bytes.data(), bytes.size());
  } catch (const FormatError& e) {
    EXPECT_GT(std::string(e.what()).size(), 10u);
    return e.what();
  }
  ADD_FAILURE() << "file accepted";
  return {};
}

}  // namespace

TEST(Format, RoundTrip) {
  const auto bytes = tiny_model().serialize();
  ASSERT_EQ(bytes.size() % 1, 0u);
  const ModelView v = verify_model(bytes.data(), bytes.size());
  ASSERT_NE(v.model, nullptr);
  EXPECT_EQ(v.model->schema_version(), kSchemaVersion);
  EXPECT_EQ(v.model->tensors()->size(), 9u);
  EXPECT_EQ(v.model->operators()->size(), 4u);
  EXPECT_EQ(static_cast<size_t>(v.data - v.file) % 64, 0u);
  for (size_t i = 0; i < v.model->buffers()->size(); ++i) EXPECT_EQ(v.model->buffers()->Get(i)->offset() % 64, 0u);
  const auto w = v.tensor_data(1);
  ASSERT_EQ(w.size(), 3 * packed_row_bytes(18, 4));
  EXPECT_EQ(unpack_value(w.data(), 17, 4), 1);
  const auto* conv = v.model->operators()->Get(0);
  EXPECT_EQ(conv->options_as_Conv2DOptions()->activation(), fb::Activation::Relu);
  EXPECT_EQ(conv->keep_mask()->size(), 4u);
  EXPECT_EQ(conv->macs(), 864);
  EXPECT_EQ(v.model->metadata()->producer()->str(), "format_test");
  EXPECT_STREQ(op_type_name(v.model->operators()->Get(3)->type()), "fully_connected");
}

TEST(Format, AtomicWrite) {
  const auto dir = std::filesystem::temp_directory_path() / "bbits_format_test";
  std::filesystem::create_directories(dir);
  const auto path = (dir / "tiny.bbm").string();
  tiny_model().write(path);
  std::ifstream f(path, std::ios::binary);
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(f)), {});
  EXPECT_NO_THROW(verify_model(bytes.data(), bytes.size()));
  // A bad description writes nothing and leaves the old file intact.
  auto bad = tiny_model(2);
  EXPECT_THROW(bad.write(path), FormatError);
  std::ifstream g(path, std::ios::binary);
  std::vector<uint8_t> again((std::istreambuf_iterator<char>(g)), {});
  EXPECT_EQ(again, bytes);
  size_t leftovers = 0;
  for (auto& e : std::filesystem::directory_iterator(dir)) leftovers += e.path().filename().string().find(".tmp") != std::string::npos;
  EXPECT_EQ(leftovers, 0u);
  std::filesystem::remove_all(dir);
}

TEST(Format, PrunedRowsAreCheckedAgainstTheMaskAndTheWeights) {
  auto message = [](const std::function<void(fb::ModelT&)>& mutate) {
    auto w = tiny_model();
    mutate(w.model());
    try {
      w.serialize();
    } catch (const FormatError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  // The conv's rows hold ones, so no row may be listed as a pruned zero row.
  EXPECT_NE(message([](fb::ModelT& m) { m.operators[0]->pruned_rows = {1}; }).find("is not zero"), std::string::npos);
  EXPECT_NE(message([](fb::ModelT& m) { m.operators[0]->pruned_rows = {3}; }).find("ascending weight rows below 3"),
            std::string::npos);
  EXPECT_NE(message([](fb::ModelT& m) { m.operators[0]->pruned_rows = {2, 1}; }).find("ascending"), std::string::npos);
  EXPECT_NE(message([](fb::ModelT& m) { m.operators[3]->pruned_rows = {0}; }).find("needs channels_removed and a keep_mask"),
            std::string::npos);
  EXPECT_EQ(message([](fb::ModelT&) {}), "");  // (a listed zero row: tests/converter, PartialRemoval...)
}

TEST(Format, RejectsDescriptions) {
  {  // keep mask disagrees with the weight rows
    auto w = tiny_model();
    w.model().operators[0]->keep_mask = {1, 1, 1, 1};
    EXPECT_THROW(w.serialize(), FormatError);
  }
  {  // output shape disagrees
    auto w = tiny_model();
    w.model().tensors[3]->shape = {1, 3, 5, 5};
    try {
      w.serialize();
      FAIL();
    } catch (const FormatError& e) {
      EXPECT_NE(std::string(e.what()).find("conv.out"), std::string::npos) << e.what();
    }
  }
  {  // illegal bit width
    auto w = tiny_model();
    w.model().tensors[1]->quant->bits = 3;
    EXPECT_THROW(w.serialize(), FormatError);
  }
  {  // zero-size tensor
    auto w = tiny_model();
    w.model().tensors[4]->shape = {1, 3, 0, 2};
    EXPECT_THROW(w.serialize(), FormatError);
  }
  {  // overflowing dimensions
    auto w = tiny_model();
    w.model().tensors[5]->shape = {1 << 30, 1 << 30, 1 << 30};
    EXPECT_THROW(w.serialize(), FormatError);
  }
  {  // use before definition
    auto w = tiny_model();
    std::swap(w.model().operators[0], w.model().operators[1]);
    EXPECT_THROW(w.serialize(), FormatError);
  }
  {  // non-zero zero point
    auto w = tiny_model();
    w.model().tensors[0]->quant->zero_point = {3};
    EXPECT_THROW(w.serialize(), FormatError);
  }
}

TEST(Format, RejectsBadFiles) {
  const auto good = tiny_model().serialize();
  // Truncation at every offset.
  for (size_t n = 0; n < good.size(); n += 7) {
    std::vector<uint8_t> t(good.begin(), good.begin() + static_cast<long>(n));
    expect_rejected(t);
  }
  // Byte flips anywhere are caught (checksum, or header checks).
  std::mt19937 rng(11);
  for (int i = 0; i < 300; ++i) {
    auto b = good;
    b[rng() % b.size()] ^= static_cast<uint8_t>(1 + rng() % 255);
    expect_rejected(b);
  }
  {
    auto b = good;
    b[0] = 'X';
    EXPECT_NE(expect_rejected(b).find("magic"), std::string::npos);
  }
  {
    auto b = good;
    b[8] = 9;  // schema version
    EXPECT_NE(expect_rejected(b).find("version"), std::string::npos);
  }
}

// Without the checksum, corrupt tables must still be rejected by the verifier
// and the semantic checks, never crash.
TEST(Format, CorruptTableWithoutChecksum) {
  const auto good = tiny_model().serialize();
  std::mt19937 rng(5);
  VerifyOptions o;
  o.check_checksum = false;
  int rejected = 0;
  for (int i = 0; i < 3000; ++i) {
    auto b = good;
    const size_t pos = 64 + rng() % (good.size() - 64);
    b[pos] = static_cast<uint8_t>(rng());
    try {
      verify_model(b.data(), b.size(), o);
    } catch (const FormatError&) {
      ++rejected;
    }
  }
  EXPECT_GT(rejected, 0);
  // Wrong identifier.
  auto b = good;
  b[64 + 4] = 'X';
  EXPECT_THROW(verify_model(b.data(), b.size(), o), FormatError);
}

// A float32 constant that is NaN or infinite is rejected by name, whether the
// bytes were altered after writing (checksum off) or handed to the writer.
TEST(Format, RejectsNonFiniteFloatConstants) {
  const auto good = tiny_model().serialize();
  const ModelView v = verify_model(good.data(), good.size());
  const size_t bias_off = static_cast<size_t>(v.tensor_data(7).data() - good.data());
  VerifyOptions o;
  o.check_checksum = false;
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                    -std::numeric_limits<float>::infinity()}) {
    auto b = good;
    std::memcpy(b.data() + bias_off + 3 * sizeof(float), &bad, sizeof bad);
    try {
      verify_model(b.data(), b.size(), o);
      ADD_FAILURE() << "non-finite bias accepted";
    } catch (const FormatError& e) {
      EXPECT_NE(std::string(e.what()).find("fc.bias"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("value 3 is not a finite number"), std::string::npos) << e.what();
    }
  }
  // The writer refuses to produce such a file.
  ModelWriter w = tiny_model();
  std::vector<float> nan_bias(5, std::numeric_limits<float>::quiet_NaN());
  w.model().tensors[7]->buffer = w.add_buffer(nan_bias.data(), nan_bias.size() * sizeof(float));
  EXPECT_THROW(w.serialize(), FormatError);
}
