#include "bbits/bench/report.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <unistd.h>

namespace bb = bbits::bench;

namespace {

bb::Table sample_table() {
  bb::Table t({{"layer"}, {"macs"}, {"time_ns", 1}, {"note"}});
  t.add_row({std::string("conv1"), int64_t{118013952}, 1234.5678, std::string("plain")});
  t.add_row({std::string("fc, \"last\""), int64_t{512000}, 0.1 + 0.2, std::string("two\nlines")});
  t.add_row({std::string("pool"), std::monostate{}, std::numeric_limits<double>::quiet_NaN(), std::string("")});
  return t;
}

const bb::Meta kMeta = {{"cpu", "AMD EPYC, 2 cores"}, {"isa", "avx512_vnni"}, {"threads", "1"}, {"commit", "abc123"}};

}  // namespace

TEST(Report, CsvParsesBackExactly) {
  const bb::Table t = sample_table();
  const bb::CsvDocument doc = bb::parse_csv(bb::to_csv(t, kMeta));
  ASSERT_EQ(doc.header.size(), 8u);
  EXPECT_EQ(doc.header[0], "cpu");
  EXPECT_EQ(doc.header[4], "layer");
  ASSERT_EQ(doc.rows.size(), 3u);
  for (const auto& row : doc.rows) {
    EXPECT_EQ(row[doc.index("cpu")], "AMD EPYC, 2 cores");
    EXPECT_EQ(row[doc.index("commit")], "abc123");
  }
  EXPECT_EQ(doc.rows[1][doc.index("layer")], "fc, \"last\"");
  EXPECT_EQ(doc.rows[1][doc.index("note")], "two\nlines");
  EXPECT_EQ(std::stoll(doc.rows[0][doc.index("macs")]), 118013952);
  // Reals are written with round-trip precision.
  EXPECT_EQ(std::stod(doc.rows[1][doc.index("time_ns")]), 0.1 + 0.2);
  EXPECT_EQ(std::stod(doc.rows[0][doc.index("time_ns")]), 1234.5678);
  // Missing values are empty fields.
  EXPECT_EQ(doc.rows[2][doc.index("macs")], "");
  EXPECT_EQ(doc.rows[2][doc.index("time_ns")], "");
}

TEST(Report, JsonParsesBack) {
  const bb::Table t = sample_table();
  const auto j = nlohmann::json::parse(bb::to_json(t, kMeta).dump());
  EXPECT_EQ(j["meta"]["isa"], "avx512_vnni");
  ASSERT_EQ(j["rows"].size(), 3u);
  EXPECT_EQ(j["columns"][2], "time_ns");
  EXPECT_EQ(j["rows"][0]["macs"].get<int64_t>(), 118013952);
  EXPECT_EQ(j["rows"][1]["time_ns"].get<double>(), 0.1 + 0.2);
  EXPECT_EQ(j["rows"][1]["layer"], "fc, \"last\"");
  EXPECT_TRUE(j["rows"][2]["macs"].is_null());
  EXPECT_TRUE(j["rows"][2]["time_ns"].is_null());
}

TEST(Report, TerminalTableAlignsColumns) {
  const std::string s = bb::format_terminal(sample_table(), {{"threads", "2"}}, {"layer", "time_ns"});
  EXPECT_NE(s.find("threads: 2\n"), std::string::npos);
  EXPECT_NE(s.find("1234.6"), std::string::npos);  // precision 1
  EXPECT_EQ(s.find("macs"), std::string::npos);    // not selected
  // Every table line has the same width up to trailing blanks: the header and the rows.
  EXPECT_NE(s.find("layer"), std::string::npos);
  EXPECT_NE(s.find("-\n", s.find("pool")), std::string::npos);  // missing value shown as '-'
  EXPECT_THROW(bb::format_terminal(sample_table(), {}, {"nope"}), std::out_of_range);
}

TEST(Report, TableRejectsBadRows) {
  bb::Table t({{"a"}, {"b"}});
  EXPECT_THROW(t.add_row({int64_t{1}}), std::invalid_argument);
  EXPECT_THROW(bb::Table({{"a"}, {"a"}}), std::invalid_argument);
  EXPECT_THROW(t.column_index("c"), std::out_of_range);
}

TEST(Report, CsvReaderHandlesCrlfAndRejectsBadInput) {
  const auto doc = bb::parse_csv("a,b\r\n1,\"x\"\"y\"\r\n");
  ASSERT_EQ(doc.rows.size(), 1u);
  EXPECT_EQ(doc.rows[0][1], "x\"y");
  EXPECT_THROW(bb::parse_csv("a,b\n1,2,3\n"), std::runtime_error);
  EXPECT_THROW(bb::parse_csv("a,b\n1,\"open\n"), std::runtime_error);
  EXPECT_THROW(bb::parse_csv(""), std::runtime_error);
}

TEST(Report, AtomicWriteCreatesDirectoriesAndReplaces) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("bbits_report_test_" + std::to_string(::getpid()));
  const std::string path = (dir / "sub" / "out.csv").string();
  bb::write_text_atomic(path, "first\n");
  bb::write_text_atomic(path, "second\n");
  EXPECT_EQ(bb::read_text(path), "second\n");
  size_t files = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir / "sub")) ++files;
  EXPECT_EQ(files, 1u);  // no temporary left behind
  fs::remove_all(dir);
  EXPECT_THROW(bb::read_text(path), std::runtime_error);
  EXPECT_THROW(bb::write_text_atomic("/proc/definitely/not/writable.csv", "x"), std::runtime_error);
}
