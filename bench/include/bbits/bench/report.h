// bbits bench — result tables and their writers: a terminal table (fmt),
// CSV (RFC 4180) and JSON, plus a CSV reader so results can be read back.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

namespace bbits::bench {

// One value of a table: missing, integer, real or text. Non-finite reals are
// written as missing (empty CSV field, JSON null, "-" in the terminal).
using Cell = std::variant<std::monostate, int64_t, double, std::string>;

struct Column {
  std::string name;
  int precision = 3;  // digits after the point for reals in the terminal table
};

// Run facts recorded with every result (cpu, isa, threads, commit, ...), in order.
using Meta = std::vector<std::pair<std::string, std::string>>;

class Table {
 public:
  Table() = default;
  explicit Table(std::vector<Column> columns);

  const std::vector<Column>& columns() const { return columns_; }
  const std::vector<std::vector<Cell>>& rows() const { return rows_; }
  // Appends a row; throws std::invalid_argument when its size differs from
  // the number of columns.
  void add_row(std::vector<Cell> row);
  // Index of a column; throws std::out_of_range naming the missing column.
  size_t column_index(std::string_view name) const;
  // Appends the rows of `other`, which must have the same column names.
  void append(const Table& other);

 private:
  std::vector<Column> columns_;
  std::vector<std::vector<Cell>> rows_;
};

// Aligned plain-text table: text left-aligned, numbers right-aligned. Only the
// listed columns, in that order (all when `only` is empty). `meta` is printed
// as one "key: value" line each above the table.
std::string format_terminal(const Table& t, const Meta& meta = {},
                            const std::vector<std::string>& only = {});

// CSV with a header line; the meta keys become leading columns repeated on
// every row, so that each result line carries its machine, ISA, thread count
// and commit. Reals are written with full precision (round-trip exact).
std::string to_csv(const Table& t, const Meta& meta = {});

// {"meta": {...}, "columns": [...], "rows": [{column: value, ...}, ...]}.
nlohmann::json to_json(const Table& t, const Meta& meta = {});

// A parsed CSV document: the header line and the records as text.
struct CsvDocument {
  std::vector<std::string> header;
  std::vector<std::vector<std::string>> rows;
  // Index of a header field; throws std::out_of_range naming it.
  size_t index(std::string_view name) const;
};

// RFC 4180 reader (quoted fields, doubled quotes, CRLF or LF). Throws
// std::runtime_error naming the line of an unterminated quote or a record
// whose field count differs from the header's.
CsvDocument parse_csv(std::string_view text);

// Escapes one CSV field (quotes it when it holds a comma, quote or newline).
std::string csv_escape(std::string_view field);

// Writes text to `path` through a temporary file in the same directory and a
// rename; creates missing parent directories. Throws std::runtime_error naming
// the path on failure and leaves no partial file behind.
void write_text_atomic(const std::string& path, std::string_view text);

// Reads a whole file; throws std::runtime_error naming the path.
std::string read_text(const std::string& path);

}  // namespace bbits::bench
