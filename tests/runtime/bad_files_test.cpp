// Bad model files: every rejection is a bbits::Error whose message names the
// problem; nothing crashes or reads out of bounds (run under ASan/UBSan by
// scripts/test.sh).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <random>

#include "bbits/format/model_file.h"
#include "bbits/runtime.h"
#include "lenet_builder.h"

namespace {

using bbits::format::FileHeader;
namespace fb = bbits::fb;

const bbits::testing::LenetModel& small_model() {
  static const bbits::testing::LenetModel m = [] {
    bbits::testing::LenetSpec s;
    s.in_h = s.in_w = 12;
    s.c1 = 3, s.keep_c1 = 2, s.c2 = 4, s.keep_c2 = 3, s.fc1 = 6, s.keep_fc1 = 5, s.classes = 3, s.k = 3;
    return bbits::testing::build_lenet(s);
  }();
  return m;
}

// Loads bytes; returns the error message ("" when the model loaded and ran).
std::string load_error(const std::vector<uint8_t>& bytes, size_t size) {
  try {
    auto model = bbits::Model::from_memory(bytes.data(), size);
    // A model that passes verification must also run without trouble.
    bbits::Session s(model);
    std::vector<bbits::Tensor> in;
    for (size_t i = 0; i < model->num_inputs(); ++i) {
      bbits::Tensor t;
      t.shape = model->input(i).shape;
      t.data.assign(static_cast<size_t>(t.elements()), 0.5f);
      in.push_back(std::move(t));
    }
    s.run(in);
    return "";
  } catch (const bbits::Error& e) {
    const std::string msg = e.what();
    EXPECT_FALSE(msg.empty());
    return msg.empty() ? "(empty message)" : msg;
  }
}

std::string load_error(const std::vector<uint8_t>& bytes) { return load_error(bytes, bytes.size()); }

void fix_checksum(std::vector<uint8_t>& bytes) {
  FileHeader h;
  std::memcpy(&h, bytes.data(), sizeof h);
  h.checksum = bbits::format::crc32(bytes.data() + sizeof h, bytes.size() - sizeof h);
  std::memcpy(bytes.data(), &h, sizeof h);
}

std::vector<uint8_t> repack(const std::vector<uint8_t>& good, const std::function<void(fb::ModelT&)>& mutate) {
  return bbits::testing::repack_model(good, mutate);
}

int tensor_index(const fb::ModelT& m, const std::string& name) {
  for (size_t i = 0; i < m.tensors.size(); ++i)
    if (m.tensors[i]->name == name) return static_cast<int>(i);
  ADD_FAILURE() << "no tensor " << name;
  return 0;
}

#define EXPECT_ERROR_HAS(msg, needle) \
  EXPECT_NE((msg).find(needle), std::string::npos) << "message: '" << (msg) << "', expected '" << (needle) << "'"

TEST(BadFiles, TheUnmodifiedModelLoads) { EXPECT_EQ(load_error(small_model().bytes), ""); }

TEST(BadFiles, TruncatedAtManyOffsets) {
  const auto& good = small_model().bytes;
  std::vector<size_t> sizes;
  for (size_t n = 0; n < 300 && n < good.size(); ++n) sizes.push_back(n);
  for (size_t n = 300; n < good.size(); n += 37) sizes.push_back(n);
  sizes.push_back(good.size() - 1);
  for (size_t n : sizes) {
    const std::vector<uint8_t> cut(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(n));
    const std::string msg = load_error(cut);
    ASSERT_NE(msg, "") << "truncated to " << n << " bytes but loaded";
    if (n == 0)
      EXPECT_ERROR_HAS(msg, "empty");
    else if (n < 64)
      EXPECT_ERROR_HAS(msg, "smaller than the 64-byte header");
    else
      EXPECT_ERROR_HAS(msg, "truncated");
  }
}

TEST(BadFiles, TruncatedWithHeaderPatchedToMatch) {
  // A truncation that also rewrites the header sizes and checksum must still
  // be caught by the verifier or the semantic checks.
  const auto& good = small_model().bytes;
  FileHeader h;
  std::memcpy(&h, good.data(), sizeof h);
  for (size_t n = h.data_offset; n < good.size(); n += 61) {
    std::vector<uint8_t> cut(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(n));
    FileHeader g = h;
    g.data_size = n - h.data_offset;
    std::memcpy(cut.data(), &g, sizeof g);
    fix_checksum(cut);
    const std::string msg = load_error(cut);
    ASSERT_NE(msg, "") << "data section truncated to " << g.data_size << " bytes but loaded";
    EXPECT_ERROR_HAS(msg, "outside the");
  }
}

TEST(BadFiles, RandomByteFlips) {
  const auto& good = small_model().bytes;
  std::mt19937 rng(42);
  std::uniform_int_distribution<size_t> pos(0, good.size() - 1);
  std::uniform_int_distribution<int> bit(0, 7);
  for (int i = 0; i < 200; ++i) {
    std::vector<uint8_t> b = good;
    const size_t p = pos(rng);
    b[p] ^= static_cast<uint8_t>(1u << bit(rng));
    const std::string msg = load_error(b);
    // The header's flatbuffer_size (bytes 24..31) may shrink by a few bytes and
    // still describe a table that verifies (the padding up to the data section
    // is not part of the table): such a file loads and runs (load_error did
    // both). Every other flip is caught by the header checks or the CRC-32.
    if (p >= 24 && p < 32) continue;
    EXPECT_NE(msg, "") << "flip at " << p << " went unnoticed";
  }
}

TEST(BadFiles, RandomByteFlipsWithValidChecksum) {
  // Past the checksum: the FlatBuffers verifier and the semantic checks must
  // reject or the model must load and run cleanly (a flipped weight is legal).
  const auto& good = small_model().bytes;
  FileHeader h;
  std::memcpy(&h, good.data(), sizeof h);
  std::mt19937 rng(7);
  std::uniform_int_distribution<size_t> pos(64, good.size() - 1);
  std::uniform_int_distribution<int> val(0, 255);
  int rejected = 0;
  for (int i = 0; i < 600; ++i) {
    std::vector<uint8_t> b = good;
    for (int k = 0; k < 1 + i % 3; ++k) b[pos(rng)] = static_cast<uint8_t>(val(rng));
    fix_checksum(b);
    rejected += load_error(b).empty() ? 0 : 1;
  }
  EXPECT_GT(rejected, 0);
}

TEST(BadFiles, WrongMagic) {
  auto b = small_model().bytes;
  b[0] = 'X';
  EXPECT_ERROR_HAS(load_error(b), "bad magic");
}

TEST(BadFiles, WrongFileIdentifier) {
  auto b = small_model().bytes;
  std::memcpy(b.data() + 64 + 4, "XXXX", 4);  // FlatBuffers identifier follows the root offset
  fix_checksum(b);
  EXPECT_ERROR_HAS(load_error(b), "file identifier");
}

TEST(BadFiles, WrongVersion) {
  auto b = small_model().bytes;
  FileHeader h;
  std::memcpy(&h, b.data(), sizeof h);
  h.schema_version = 2;
  std::memcpy(b.data(), &h, sizeof h);
  EXPECT_ERROR_HAS(load_error(b), "schema version 2");
  // The table's own version field too.
  const auto t = repack(small_model().bytes, [](fb::ModelT& m) { m.schema_version = 9; });
  EXPECT_ERROR_HAS(load_error(t), "schema version 9");
}

TEST(BadFiles, ChecksumMismatch) {
  auto b = small_model().bytes;
  b.back() ^= 0x01;
  EXPECT_ERROR_HAS(load_error(b), "checksum mismatch");
}

TEST(BadFiles, ShapesThatDisagree) {
  const auto b = repack(small_model().bytes, [](fb::ModelT& m) {
    m.tensors[static_cast<size_t>(tensor_index(m, "conv2.out"))]->shape[2] += 1;
  });
  const std::string msg = load_error(b);
  EXPECT_ERROR_HAS(msg, "conv2.out");
  EXPECT_ERROR_HAS(msg, "expected");
  const auto c = repack(small_model().bytes, [](fb::ModelT& m) {
    m.tensors[static_cast<size_t>(tensor_index(m, "fc1.weight"))]->shape[1] -= 1;
  });
  EXPECT_ERROR_HAS(load_error(c), "fc1");
}

TEST(BadFiles, BufferTooShortForBitWidth) {
  const auto b = repack(small_model().bytes, [](fb::ModelT& m) {
    m.tensors[static_cast<size_t>(tensor_index(m, "conv1.weight"))]->quant->bits = 8;  // stored at 4 bits
  });
  const std::string msg = load_error(b);
  EXPECT_ERROR_HAS(msg, "conv1.weight");
  EXPECT_ERROR_HAS(msg, "8 bits needs");
}

TEST(BadFiles, BufferOutsideTheDataSection) {
  const auto b = repack(small_model().bytes, [](fb::ModelT& m) { m.buffers[0] = fb::Buffer(64 * 1000, 16); });
  EXPECT_ERROR_HAS(load_error(b), "outside the");
}

TEST(BadFiles, DimensionProductOverflows) {
  const auto b = repack(small_model().bytes, [](fb::ModelT& m) {
    m.tensors[static_cast<size_t>(tensor_index(m, "fc1.out"))]->shape = {int64_t{1} << 30, int64_t{1} << 30,
                                                                         int64_t{1} << 30};
  });
  EXPECT_ERROR_HAS(load_error(b), "overflows");
  const auto c = repack(small_model().bytes, [](fb::ModelT& m) {
    m.tensors[static_cast<size_t>(tensor_index(m, "fc1.out"))]->shape = {1, INT64_MAX};
  });
  EXPECT_ERROR_HAS(load_error(c), "too large");
  const auto d = repack(small_model().bytes, [](fb::ModelT& m) {
    m.tensors[static_cast<size_t>(tensor_index(m, "fc1.out"))]->shape = {1, -5};
  });
  EXPECT_ERROR_HAS(load_error(d), "negative dimension");
}

TEST(BadFiles, ZeroSizeTensor) {
  const auto b = repack(small_model().bytes, [](fb::ModelT& m) {
    m.tensors[static_cast<size_t>(tensor_index(m, "pool1.out"))]->shape[1] = 0;
  });
  EXPECT_ERROR_HAS(load_error(b), "zero-size tensor");
}

TEST(BadFiles, NonFiniteFloatBias) {
  // Reinterpreting conv1's int32 bias as float32 gives bit patterns that are
  // NaN for some values: found by fuzz_model_load.
  const auto b = repack(small_model().bytes, [](fb::ModelT& m) {
    m.tensors[static_cast<size_t>(tensor_index(m, "conv1.bias"))]->dtype = fb::DataType::Float32;
  });
  std::vector<uint8_t> nan_bias = b;
  // Overwrite the bias buffer with NaNs: find it through the table.
  const fb::Model* fm = fb::GetModel(nan_bias.data() + 64);
  FileHeader h;
  std::memcpy(&h, nan_bias.data(), sizeof h);
  int bias_buffer = -1;
  for (const fb::Tensor* t : *fm->tensors())
    if (t->name()->str() == "conv1.bias") bias_buffer = t->buffer();
  ASSERT_GE(bias_buffer, 0);
  const fb::Buffer* buf = fm->buffers()->Get(static_cast<flatbuffers::uoffset_t>(bias_buffer));
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (uint64_t off = 0; off + 4 <= buf->size(); off += 4)
    std::memcpy(nan_bias.data() + h.data_offset + buf->offset() + off, &nan, 4);
  fix_checksum(nan_bias);
  const std::string msg = load_error(nan_bias);
  EXPECT_ERROR_HAS(msg, "conv1.bias");
  EXPECT_ERROR_HAS(msg, "not a finite number");
}

TEST(BadFiles, StoredCostsAreNotTrusted) {
  // The runtime computes every layer's costs from its shapes: absurd stored
  // figures (RandomByteFlipsWithValidChecksum once overflowed their totals
  // under UBSan) change nothing it reports, and each layer keeps the file's
  // figures beside its own so that tools can say where they disagree.
  const auto& good = small_model().bytes;
  const auto reference = bbits::Model::from_memory(good.data(), good.size());
  for (const auto& L : reference->info().layers) EXPECT_TRUE(L.stored_costs_agree()) << L.name;
  const auto b = repack(good, [](fb::ModelT& m) {
    for (auto& op : m.operators) op->macs = op->macs_unpruned = op->bops = op->weight_bytes = INT64_MAX / 3;
    m.operators[0]->macs_unpruned = -7;
  });
  EXPECT_EQ(load_error(b), "");
  const auto model = bbits::Model::from_memory(b.data(), b.size());
  const auto& info = model->info();
  const auto& ref = reference->info();
  EXPECT_EQ(info.macs, ref.macs);
  EXPECT_EQ(info.macs_unpruned, ref.macs_unpruned);
  EXPECT_EQ(info.bops, ref.bops);
  EXPECT_EQ(info.bops_fp32, ref.bops_fp32);
  EXPECT_EQ(info.weight_bytes, ref.weight_bytes);
  EXPECT_EQ(info.float32_bytes, ref.float32_bytes);
  ASSERT_EQ(info.layers.size(), ref.layers.size());
  for (size_t i = 0; i < info.layers.size(); ++i) {
    EXPECT_FALSE(info.layers[i].stored_costs_agree()) << info.layers[i].name;
    EXPECT_EQ(info.layers[i].stored_macs, INT64_MAX / 3);
  }
  EXPECT_EQ(info.layers[0].stored_macs_unpruned, -7);
}

TEST(BadFiles, OneCorruptStoredFigureIsFoundAndNamed) {
  // conv2 states 10 MACs more than it does: only that layer disagrees, on
  // that figure, and the totals are the computed ones.
  const auto& good = small_model().bytes;
  const auto reference = bbits::Model::from_memory(good.data(), good.size());
  const auto b = repack(good, [](fb::ModelT& m) {
    for (auto& op : m.operators)
      if (op->name == "conv2") op->macs += 10;
  });
  const auto model = bbits::Model::from_memory(b.data(), b.size());
  size_t disagree = 0;
  for (const auto& L : model->info().layers) {
    if (L.stored_costs_agree()) continue;
    ++disagree;
    EXPECT_EQ(L.name, "conv2");
    EXPECT_EQ(L.stored_macs, L.macs + 10);
    EXPECT_EQ(L.stored_bops, L.bops);
  }
  EXPECT_EQ(disagree, 1u);
  EXPECT_EQ(model->info().macs, reference->info().macs);
}

TEST(BadFiles, MisalignedVectorsFoundByTheFuzzer) {
  // fuzz_model_load input whose `buffers` vector of 8-byte structs sits at a
  // 4-byte boundary (the FlatBuffers verifier only checks the length prefix).
  const std::string path = std::string(BBITS_SOURCE_DIR) + "/tests/runtime/data/fuzz_misaligned_buffers.bin";
  std::ifstream in(path, std::ios::binary);
  ASSERT_TRUE(in) << path;
  std::vector<uint8_t> b((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSERT_GT(b.size(), 64u);
  fix_checksum(b);  // the fuzz target rewrites the checksum before loading
  EXPECT_ERROR_HAS(load_error(b), "misaligned");
}

TEST(BadFiles, IllegalBitWidth) {
  const auto b = repack(small_model().bytes, [](fb::ModelT& m) {
    m.tensors[static_cast<size_t>(tensor_index(m, "conv1.out"))]->quant->bits = 3;
  });
  EXPECT_ERROR_HAS(load_error(b), "illegal bit width 3");
}

TEST(BadFiles, IndicesOutOfRange) {
  const auto b = repack(small_model().bytes, [](fb::ModelT& m) { m.operators[1]->inputs[0] = 999; });
  EXPECT_ERROR_HAS(load_error(b), "out of range");
  const auto c = repack(small_model().bytes, [](fb::ModelT& m) { m.outputs[0] = -3; });
  EXPECT_ERROR_HAS(load_error(c), "out of range");
  const auto d = repack(small_model().bytes, [](fb::ModelT& m) {
    m.tensors[static_cast<size_t>(tensor_index(m, "conv1.bias"))]->buffer = 77;
  });
  EXPECT_ERROR_HAS(load_error(d), "buffer index 77 out of range");
}

TEST(BadFiles, GraphOrder) {
  // An operator reading a tensor nobody produced yet.
  const auto b = repack(small_model().bytes, [](fb::ModelT& m) { std::swap(m.operators[0], m.operators[1]); });
  EXPECT_ERROR_HAS(load_error(b), "neither a model input nor produced");
}

TEST(BadFiles, FileErrorsNameThePath) {
  try {
    bbits::Model::load("/nonexistent/dir/model.bbm");
    ADD_FAILURE();
  } catch (const bbits::Error& e) {
    EXPECT_ERROR_HAS(std::string(e.what()), "/nonexistent/dir/model.bbm: cannot open");
  }
  const auto dir = std::filesystem::temp_directory_path();
  try {
    bbits::Model::load(dir.string());
    ADD_FAILURE();
  } catch (const bbits::Error& e) {
    EXPECT_ERROR_HAS(std::string(e.what()), "not a regular file");
  }
  const auto empty = dir / ("bbits_empty_" + std::to_string(::getpid()) + ".bbm");
  std::ofstream(empty).close();
  try {
    bbits::Model::load(empty.string());
    ADD_FAILURE();
  } catch (const bbits::Error& e) {
    EXPECT_ERROR_HAS(std::string(e.what()), "empty");
  }
  std::filesystem::remove(empty);
  EXPECT_THROW(bbits::Model::from_memory(nullptr, 10), bbits::Error);
}

}  // namespace
