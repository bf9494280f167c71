// Schema-validated TOML configuration (engine/io/config.h): the Config accessors, the text
// helpers shared by the configuration sources, and the writers of the effective configuration
// (JSON, and canonical TOML that re-loads with the same schema).
// Siblings: config_toml.cpp (TOML reading with source positions, --set overrides, parse/load),
// config_schema.cpp (KeySpec, ConfigSchema, validation, "did you mean"), config_detail.h (shared
// internal declarations).
#include "engine/io/config.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "engine/core/errors.h"
#include "engine/io/atomic_file.h"
#include "engine/io/config_detail.h"

namespace dynsim {

using config_detail::fmt_number;
using config_detail::join;
using config_detail::leaf;
using config_detail::split_dots;
using config_detail::squote;
using config_detail::toml_quote;
using config_detail::value_text;

namespace {

std::string toml_key(const std::string& k) {
  bool bare = !k.empty() && std::all_of(k.begin(), k.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-';
  });
  return bare ? k : toml_quote(k);
}

}  // namespace

namespace config_detail {

// Shortest round-trip text; toml_float marks integral values as floats ("5.0") for TOML output.
std::string fmt_number(double v, bool toml_float) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof(buf), v);
  std::string s(buf, r.ptr);
  if (toml_float && s.find_first_of(".eE") == std::string::npos) s += ".0";
  return s;
}

std::string squote(const std::string& s) {
  return "'" + s + "'";
}

// TOML basic string with escapes, so that any --set text parses as a string.
std::string toml_quote(const std::string& s) {
  std::string out = "\"";
  for (unsigned char ch : s) {
    if (ch == '"' || ch == '\\') {
      out += '\\';
      out += char(ch);
    } else if (ch < 0x20 || ch == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\u%04x", ch);
      out += buf;
    } else {
      out += char(ch);
    }
  }
  return out + "\"";
}

std::string join(const std::vector<std::string>& v, const std::string& sep, bool quote) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) out += (i ? sep : "") + (quote ? squote(v[i]) : v[i]);
  return out;
}

// A value as TOML-like text, for describe().
std::string value_text(const ConfigValue& v) {
  struct Visitor {
    std::string operator()(std::monostate) const { return ""; }
    std::string operator()(bool b) const { return b ? "true" : "false"; }
    std::string operator()(int64_t i) const { return std::to_string(i); }
    std::string operator()(double d) const { return fmt_number(d, true); }
    std::string operator()(const std::string& s) const { return toml_quote(s); }
    std::string operator()(const std::vector<double>& a) const {
      std::vector<std::string> p;
      for (double d : a) p.push_back(fmt_number(d, true));
      return "[" + join(p, ", ", false) + "]";
    }
    std::string operator()(const std::vector<std::string>& a) const {
      std::vector<std::string> p;
      for (const auto& s : a) p.push_back(toml_quote(s));
      return "[" + join(p, ", ", false) + "]";
    }
    std::string operator()(const std::map<std::string, double>& m) const {
      std::vector<std::string> p;
      for (const auto& [k, d] : m) p.push_back(toml_key(k) + " = " + fmt_number(d, true));
      return "{" + join(p, ", ", false) + "}";
    }
  };
  return std::visit(Visitor{}, v);
}

}  // namespace config_detail

// ---------------------------------------------------------------------------------- Config --

const KeySpec& Config::spec(const std::string& key, const char* getter) const {
  const KeySpec* k = schema_ ? schema_->find(key) : nullptr;
  if (!k)
    throw Error(concat("Config::", getter, ": key '", prefix_, key, "' is not in the schema"));
  return *k;
}

const Config::Entry& Config::entry(const std::string& key, const KeySpec& s) const {
  const Entry& e = values_.at(key);
  if (std::holds_alternative<std::monostate>(e.value) && s.type != ConfigType::TableArray)
    throw Error(concat("Config: optional key '", prefix_, key, "' was not given (check has())"));
  return e;
}

namespace {
[[noreturn]] void wrong_type(const char* getter, const std::string& key, const KeySpec& k) {
  throw Error(concat("Config::", getter, ": key '", key, "' is declared as ", k.type_name()));
}
}  // namespace

bool Config::get_bool(const std::string& key) const {
  const KeySpec& k = spec(key, "get_bool");
  if (k.type != ConfigType::Bool) wrong_type("get_bool", key, k);
  return std::get<bool>(entry(key, k).value);
}

int64_t Config::get_int(const std::string& key) const {
  const KeySpec& k = spec(key, "get_int");
  if (k.type != ConfigType::Int) wrong_type("get_int", key, k);
  return std::get<int64_t>(entry(key, k).value);
}

double Config::get_double(const std::string& key) const {
  const KeySpec& k = spec(key, "get_double");
  if (k.type == ConfigType::Int) return double(std::get<int64_t>(entry(key, k).value));
  if (k.type != ConfigType::Double && k.type != ConfigType::NumberOrMap)
    wrong_type("get_double", key, k);
  const ConfigValue& v = entry(key, k).value;
  if (!std::holds_alternative<double>(v)) fail(key, "expected a single number here, got a table");
  return std::get<double>(v);
}

std::string Config::get_string(const std::string& key) const {
  const KeySpec& k = spec(key, "get_string");
  if (k.type != ConfigType::String && k.type != ConfigType::Enum) wrong_type("get_string", key, k);
  return std::get<std::string>(entry(key, k).value);
}

std::vector<double> Config::get_doubles(const std::string& key) const {
  const KeySpec& k = spec(key, "get_doubles");
  if (k.type != ConfigType::Doubles) wrong_type("get_doubles", key, k);
  return std::get<std::vector<double>>(entry(key, k).value);
}

std::vector<std::string> Config::get_strings(const std::string& key) const {
  const KeySpec& k = spec(key, "get_strings");
  if (k.type != ConfigType::Strings) wrong_type("get_strings", key, k);
  return std::get<std::vector<std::string>>(entry(key, k).value);
}

std::map<std::string, double> Config::get_map(const std::string& key) const {
  const KeySpec& k = spec(key, "get_map");
  if (k.type != ConfigType::Map && k.type != ConfigType::NumberOrMap) wrong_type("get_map", key, k);
  const ConfigValue& v = entry(key, k).value;
  if (!std::holds_alternative<std::map<std::string, double>>(v))
    fail(key, "expected a table of numbers here, got a single number");
  return std::get<std::map<std::string, double>>(v);
}

bool Config::is_map(const std::string& key) const {
  const KeySpec& k = spec(key, "is_map");
  return std::holds_alternative<std::map<std::string, double>>(entry(key, k).value);
}

double Config::get_double_for(const std::string& key, const std::string& name) const {
  const KeySpec& k = spec(key, "get_double_for");
  if (k.type != ConfigType::Map && k.type != ConfigType::NumberOrMap)
    wrong_type("get_double_for", key, k);
  const ConfigValue& v = entry(key, k).value;
  if (const double* d = std::get_if<double>(&v)) return *d;
  const auto& m = std::get<std::map<std::string, double>>(v);
  auto it = m.find(name);
  if (it == m.end()) fail(key, concat("no entry for ", squote(name)));
  return it->second;
}

const std::vector<Config>& Config::tables(const std::string& section) const {
  const KeySpec& k = spec(section, "tables");
  if (k.type != ConfigType::TableArray) wrong_type("tables", section, k);
  return tables_.at(section);
}

bool Config::has(const std::string& key) const {
  spec(key, "has");
  return values_.at(key).given;
}

std::string Config::where(const std::string& key) const {
  spec(key, "where");
  return values_.at(key).where;
}

void Config::fail(const std::string& key, const std::string& message) const {
  throw ConfigError(concat(where(key), ": key '", prefix_, key, "': ", message));
}

// TOML text for c: plain keys in schema order under [section] headers, then the arrays of
// tables. `header` is "" at the top level and e.g. "area" inside an [[area]] element.
void ConfigBuilder::emit_toml(const Config& c, const std::string& header, std::string& out) {
  std::vector<std::string> sections;  // in order of first use; "" = directly in this table
  std::map<std::string, std::vector<const KeySpec*>> by_section;
  std::vector<const KeySpec*> arrays;
  for (const KeySpec& k : c.schema_->keys()) {
    if (k.type == ConfigType::TableArray) {
      arrays.push_back(&k);
      continue;
    }
    size_t dot = k.path.rfind('.');
    std::string sec = dot == std::string::npos ? "" : k.path.substr(0, dot);
    if (!by_section.count(sec)) sections.push_back(sec);
    by_section[sec].push_back(&k);
  }
  // Keys of the table itself must come before any header.
  std::stable_partition(sections.begin(), sections.end(),
                        [](const std::string& sec) { return sec.empty(); });
  auto qualified = [&](const std::string& p) { return header.empty() ? p : header + "." + p; };
  for (const std::string& sec : sections) {
    if (!sec.empty()) out += "\n[" + qualified(sec) + "]\n";
    for (const KeySpec* k : by_section[sec]) {
      const ConfigValue& v = c.values_.at(k->path).value;
      if (std::holds_alternative<std::monostate>(v)) continue;  // an absent optional key
      out += leaf(k->path) + " = " + value_text(v) + "\n";
    }
  }
  for (const KeySpec* k : arrays)
    for (const Config& s : c.tables_.at(k->path)) {
      out += "\n[[" + qualified(k->path) + "]]\n";
      emit_toml(s, qualified(k->path), out);
    }
}

nlohmann::json Config::to_json() const {
  nlohmann::json root = nlohmann::json::object();
  if (!schema_) return root;
  for (const KeySpec& k : schema_->keys()) {
    nlohmann::json* j = &root;
    for (const std::string& seg : split_dots(k.path)) j = &(*j)[seg];
    if (k.type == ConfigType::TableArray) {
      *j = nlohmann::json::array();
      for (const Config& s : tables_.at(k.path)) j->push_back(s.to_json());
      continue;
    }
    std::visit(
        [&](auto&& v) {
          if constexpr (std::is_same_v<std::decay_t<decltype(v)>, std::monostate>)
            *j = nullptr;
          else
            *j = v;
        },
        values_.at(k.path).value);
  }
  return root;
}

std::string Config::to_toml() const {
  std::string out;
  if (schema_) ConfigBuilder::emit_toml(*this, "", out);
  return out.substr(out.rfind('\n', 0) == 0 ? 1 : 0);
}

void Config::write_json(const std::string& path) const {
  write_file_atomic(path,
                    to_json().dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
}

void Config::write_toml(const std::string& path) const {
  write_file_atomic(path, to_toml());
}

}  // namespace dynsim
