#include "bbits/bench/report.h"

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <unistd.h>

namespace bbits::bench {

Table::Table(std::vector<Column> columns) : columns_(std::move(columns)) {
  for (size_t i = 0; i < columns_.size(); ++i)
    for (size_t j = i + 1; j < columns_.size(); ++j)
      if (columns_[i].name == columns_[j].name)
        throw std::invalid_argument("table: duplicate column '" + columns_[i].name + "'");
}

void Table::add_row(std::vector<Cell> row) {
  if (row.size() != columns_.size())
    throw std::invalid_argument(fmt::format("table: row has {} cells, table has {} columns",
                                            row.size(), columns_.size()));
  rows_.push_back(std::move(row));
}

size_t Table::column_index(std::string_view name) const {
  for (size_t i = 0; i < columns_.size(); ++i)
    if (columns_[i].name == name) return i;
  throw std::out_of_range(fmt::format("table: no column named '{}'", name));
}

void Table::append(const Table& other) {
  if (other.columns_.size() != columns_.size())
    throw std::invalid_argument("table: cannot append a table with different columns");
  for (size_t i = 0; i < columns_.size(); ++i)
    if (other.columns_[i].name != columns_[i].name)
      throw std::invalid_argument("table: cannot append a table with different columns");
  for (const auto& r : other.rows_) rows_.push_back(r);
}

namespace {

bool is_missing(const Cell& c) {
  if (std::holds_alternative<std::monostate>(c)) return true;
  if (const double* d = std::get_if<double>(&c)) return !std::isfinite(*d);
  return false;
}

bool is_number(const Cell& c) {
  return std::holds_alternative<int64_t>(c) || std::holds_alternative<double>(c);
}

std::string terminal_text(const Cell& c, int precision) {
  if (is_missing(c)) return "-";
  if (const auto* i = std::get_if<int64_t>(&c)) return fmt::format("{}", *i);
  if (const auto* d = std::get_if<double>(&c)) {
    const double a = std::fabs(*d);
    if (a != 0 && (a >= 1e9 || a < 1e-4)) return fmt::format("{:.{}e}", *d, std::max(precision, 1));
    return fmt::format("{:.{}f}", *d, precision);
  }
  return std::get<std::string>(c);
}

std::string exact_text(const Cell& c) {
  if (is_missing(c)) return "";
  if (const auto* i = std::get_if<int64_t>(&c)) return fmt::format("{}", *i);
  if (const auto* d = std::get_if<double>(&c)) return fmt::format("{}", *d);  // shortest round-trip
  return std::get<std::string>(c);
}

}  // namespace

std::string format_terminal(const Table& t, const Meta& meta, const std::vector<std::string>& only) {
  std::vector<size_t> cols;
  if (only.empty()) {
    for (size_t i = 0; i < t.columns().size(); ++i) cols.push_back(i);
  } else {
    for (const auto& name : only) cols.push_back(t.column_index(name));
  }
  std::vector<std::vector<std::string>> cells(t.rows().size());
  std::vector<size_t> width(cols.size());
  std::vector<bool> numeric(cols.size(), true);
  for (size_t j = 0; j < cols.size(); ++j) width[j] = t.columns()[cols[j]].name.size();
  for (size_t r = 0; r < t.rows().size(); ++r) {
    for (size_t j = 0; j < cols.size(); ++j) {
      const Cell& c = t.rows()[r][cols[j]];
      cells[r].push_back(terminal_text(c, t.columns()[cols[j]].precision));
      width[j] = std::max(width[j], cells[r].back().size());
      if (!is_missing(c) && !is_number(c)) numeric[j] = false;
    }
  }
  std::string out;
  for (const auto& [k, v] : meta) out += fmt::format("{}: {}\n", k, v);
  auto line = [&](const std::vector<std::string>& fields) {
    std::string s;
    for (size_t j = 0; j < fields.size(); ++j) {
      if (j) s += "  ";
      if (numeric[j])
        s += fmt::format("{:>{}}", fields[j], width[j]);
      else
        s += fmt::format("{:<{}}", fields[j], width[j]);
    }
    while (!s.empty() && s.back() == ' ') s.pop_back();
    return s + "\n";
  };
  std::vector<std::string> head;
  for (size_t j = 0; j < cols.size(); ++j) head.push_back(t.columns()[cols[j]].name);
  out += line(head);
  size_t total = 0;
  for (size_t j = 0; j < cols.size(); ++j) total += width[j] + (j ? 2 : 0);
  out += std::string(total, '-') + "\n";
  for (const auto& r : cells) out += line(r);
  return out;
}

std::string csv_escape(std::string_view field) {
  if (field.find_first_of(",\"\r\n") == std::string_view::npos) return std::string(field);
  std::string s = "\"";
  for (char ch : field) {
    if (ch == '"') s += '"';
    s += ch;
  }
  return s + "\"";
}

std::string to_csv(const Table& t, const Meta& meta) {
  std::string out;
  bool first = true;
  auto field = [&](std::string_view f) {
    if (!first) out += ',';
    out += csv_escape(f);
    first = false;
  };
  for (const auto& [k, v] : meta) field(k);
  for (const auto& c : t.columns()) field(c.name);
  out += '\n';
  for (const auto& row : t.rows()) {
    first = true;
    for (const auto& [k, v] : meta) field(v);
    for (const auto& c : row) field(exact_text(c));
    out += '\n';
  }
  return out;
}

nlohmann::json to_json(const Table& t, const Meta& meta) {
  nlohmann::json j;
  j["meta"] = nlohmann::json::object();
  for (const auto& [k, v] : meta) j["meta"][k] = v;
  j["columns"] = nlohmann::json::array();
  for (const auto& c : t.columns()) j["columns"].push_back(c.name);
  j["rows"] = nlohmann::json::array();
  for (const auto& row : t.rows()) {
    nlohmann::json r = nlohmann::json::object();
    for (size_t i = 0; i < row.size(); ++i) {
      const Cell& c = row[i];
      const std::string& name = t.columns()[i].name;
      if (is_missing(c))
        r[name] = nullptr;
      else if (const auto* v = std::get_if<int64_t>(&c))
        r[name] = *v;
      else if (const auto* d = std::get_if<double>(&c))
        r[name] = *d;
      else
        r[name] = std::get<std::string>(c);
    }
    j["rows"].push_back(std::move(r));
  }
  return j;
}

size_t CsvDocument::index(std::string_view name) const {
  for (size_t i = 0; i < header.size(); ++i)
    if (header[i] == name) return i;
  throw std::out_of_range(fmt::format("csv: no column named '{}'", name));
}

CsvDocument parse_csv(std::string_view text) {
  std::vector<std::vector<std::string>> records;
  std::vector<size_t> record_lines;
  std::vector<std::string> rec;
  std::string field;
  bool in_quotes = false, field_started = false;
  size_t line = 1, quote_line = 0;
  auto end_field = [&] {
    rec.push_back(std::move(field));
    field.clear();
    field_started = false;
  };
  auto end_record = [&] {
    end_field();
    records.push_back(std::move(rec));
    record_lines.push_back(line);
    rec.clear();
  };
  for (size_t i = 0; i < text.size(); ++i) {
    const char ch = text[i];
    if (in_quotes) {
      if (ch == '"') {
        if (i + 1 < text.size() && text[i + 1] == '"') {
          field += '"';
          ++i;
        } else {
          in_quotes = false;
        }
      } else {
        if (ch == '\n') ++line;
        field += ch;
      }
      continue;
    }
    if (ch == '"') {
      if (field_started && !field.empty())
        throw std::runtime_error(fmt::format("csv line {}: quote inside an unquoted field", line));
      in_quotes = true;
      quote_line = line;
      field_started = true;
    } else if (ch == ',') {
      end_field();
    } else if (ch == '\r' && i + 1 < text.size() && text[i + 1] == '\n') {
      // CRLF: handled at the '\n'
    } else if (ch == '\n') {
      end_record();
      ++line;
    } else {
      field += ch;
      field_started = true;
    }
  }
  if (in_quotes) throw std::runtime_error(fmt::format("csv line {}: unterminated quoted field", quote_line));
  if (field_started || !rec.empty()) end_record();
  CsvDocument doc;
  if (records.empty()) throw std::runtime_error("csv: no header line");
  doc.header = std::move(records[0]);
  for (size_t r = 1; r < records.size(); ++r) {
    if (records[r].size() != doc.header.size())
      throw std::runtime_error(fmt::format("csv line {}: {} fields, header has {}", record_lines[r],
                                           records[r].size(), doc.header.size()));
    doc.rows.push_back(std::move(records[r]));
  }
  return doc;
}

void write_text_atomic(const std::string& path, std::string_view text) {
  namespace fs = std::filesystem;
  if (path.empty()) throw std::runtime_error("write: empty output path");
  const fs::path p(path);
  std::error_code ec;
  if (p.has_parent_path()) {
    fs::create_directories(p.parent_path(), ec);
    if (ec) throw std::runtime_error(fmt::format("cannot create directory '{}': {}", p.parent_path().string(), ec.message()));
  }
  const std::string tmp = fmt::format("{}.tmp.{}", path, static_cast<long>(::getpid()));
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) throw std::runtime_error(fmt::format("cannot write '{}': {}", tmp, std::strerror(errno)));
  const bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size() && std::fflush(f) == 0 &&
                  ::fsync(::fileno(f)) == 0;
  const int err = errno;
  const bool closed = std::fclose(f) == 0;
  if (!ok || !closed) {
    std::remove(tmp.c_str());
    throw std::runtime_error(fmt::format("cannot write '{}': {}", tmp, std::strerror(err)));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int e = errno;
    std::remove(tmp.c_str());
    throw std::runtime_error(fmt::format("cannot rename '{}' to '{}': {}", tmp, path, std::strerror(e)));
  }
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(fmt::format("cannot read '{}': {}", path, std::strerror(errno)));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw std::runtime_error(fmt::format("error reading '{}'", path));
  return ss.str();
}

}  // namespace bbits::bench
