// Schema-validated TOML configuration: a ConfigSchema declares every key (dotted path, type,
// default, range, doc); Config::load/parse reads a TOML file plus `--set key=value` overrides,
// rejects anything the schema does not allow with "FILE:LINE:COL: key 'a.b': ..." messages
// (ConfigError, exit 78), fills defaults, and writes the effective configuration as JSON or TOML.
// Arrays of tables ([[area]]) carry their own element schema and yield one sub-Config each.
#pragma once
#include <cstdint>
#include <deque>
#include <limits>
#include <map>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <variant>
#include <vector>

namespace dynsim {

enum class ConfigType {
  Bool,
  Int,
  Double,  // integers are accepted too
  String,
  Enum,         // a string from a fixed list
  Doubles,      // array of numbers
  Strings,      // array of strings
  Map,          // table of name -> number, e.g. tau = {V1 = 5.0, IT = 3.0}
  NumberOrMap,  // either `tau = 5.0` or `tau = {V1 = 5.0}`
  TableArray,   // [[area]] sections, each validated against an element schema
};

// An effective value. std::monostate means "no value" (required or optional key not given).
using ConfigValue =
    std::variant<std::monostate, bool, int64_t, double, std::string, std::vector<double>,
                 std::vector<std::string>, std::map<std::string, double>>;

class ConfigSchema;

// One declared key. The setters chain: schema.add_double("dynamics.dt", 1.0,
// "...").greater_than(0).
struct KeySpec {
  enum class Presence { Default, Required, Optional };

  std::string path;
  ConfigType type = ConfigType::Double;
  std::string doc;
  ConfigValue default_value;
  Presence presence = Presence::Default;
  std::vector<std::string> choices;  // Enum
  // Numeric bounds (Int, Double, and every element/entry of Doubles, Map, NumberOrMap).
  double lo = -std::numeric_limits<double>::infinity();
  double hi = std::numeric_limits<double>::infinity();
  bool lo_open = false, hi_open = false;
  // Element count bounds (Doubles, Strings, TableArray).
  size_t min_len = 0, max_len = std::numeric_limits<size_t>::max();
  std::shared_ptr<const ConfigSchema> element;  // TableArray

  KeySpec& required();  // no default: a missing key is an error
  KeySpec& optional();  // no default, not required: has() tells, to_toml() omits it
  KeySpec& range(double min, double max);  // min <= v <= max
  KeySpec& at_least(double min);
  KeySpec& at_most(double max);
  KeySpec& greater_than(double min);
  KeySpec& less_than(double max);
  KeySpec& length(size_t n);  // exactly n elements
  KeySpec& min_length(size_t n);
  KeySpec& max_length(size_t n);

  std::string type_name() const;   // "double > 0", "enum(add|multiply)", ...
  std::string range_text() const;  // "> 0 and <= 1", "" when unbounded
  bool in_range(double v) const;
};

class ConfigSchema {
 public:
  // Returned references stay valid while the schema lives (keys live in a deque).
  KeySpec& add_bool(const std::string& path, bool def, const std::string& doc);
  KeySpec& add_int(const std::string& path, int64_t def, const std::string& doc);
  KeySpec& add_double(const std::string& path, double def, const std::string& doc);
  KeySpec& add_string(const std::string& path, const std::string& def, const std::string& doc);
  KeySpec& add_enum(const std::string& path, std::vector<std::string> choices,
                    const std::string& def, const std::string& doc);
  KeySpec& add_doubles(const std::string& path, std::vector<double> def, const std::string& doc);
  KeySpec& add_strings(const std::string& path, std::vector<std::string> def,
                       const std::string& doc);
  KeySpec& add_map(const std::string& path, std::map<std::string, double> def,
                   const std::string& doc);
  KeySpec& add_number_or_map(const std::string& path, double def, const std::string& doc);
  KeySpec& add_table_array(const std::string& path, ConfigSchema element, const std::string& doc);

  const KeySpec* find(const std::string& path) const;  // nullptr if not declared
  bool is_section(const std::string& path) const;      // a proper prefix of some key ("model")
  const std::deque<KeySpec>& keys() const { return keys_; }
  // The closest declared key to an unknown one, or "" when nothing is close.
  std::string suggest(const std::string& path) const;
  // One line per key: name, type (with range/choices), default, doc; the keys of an array of
  // tables follow it as "area[N].name".
  std::string describe() const;

 private:
  KeySpec& add(const std::string& path, ConfigType type, ConfigValue def, const std::string& doc);
  void describe_into(std::vector<std::vector<std::string>>& rows, const std::string& prefix) const;
  std::deque<KeySpec> keys_;
};

// A validated effective configuration. Keys are the schema's dotted paths; in a sub-Config from
// tables() they are relative to the element ("name", not "area[0].name").
class Config {
 public:
  Config() = default;
  // NoInputError if the file cannot be read; ConfigError for everything invalid (all problems
  // found are listed, one per line). Overrides are "dotted.key=value" with a TOML value; string
  // and enum keys also take bare text. "area[1].tau=3" reaches into an array of tables (index
  // N of N tables appends one) and "model.tau.V1=5" sets one map entry. Applied in order.
  static Config load(const std::string& path, const ConfigSchema& schema,
                     const std::vector<std::string>& overrides = {});
  static Config parse(const std::string& text, const std::string& source_name,
                      const ConfigSchema& schema, const std::vector<std::string>& overrides = {});

  // Getters throw Error (a programming error) for keys not in the schema, a type that does not
  // match the declaration, or an optional key that is absent (check has() first).
  bool get_bool(const std::string& key) const;
  int64_t get_int(const std::string& key) const;
  double get_double(const std::string& key) const;       // Double, Int, NumberOrMap given as number
  std::string get_string(const std::string& key) const;  // String, Enum
  std::vector<double> get_doubles(const std::string& key) const;
  std::vector<std::string> get_strings(const std::string& key) const;
  std::map<std::string, double> get_map(const std::string& key) const;  // Map, NumberOrMap
  bool is_map(const std::string& key) const;  // NumberOrMap given as a table
  // Map or NumberOrMap: the entry for `name`, or the single number; ConfigError if absent.
  double get_double_for(const std::string& key, const std::string& name) const;
  const std::vector<Config>& tables(const std::string& section) const;

  bool has(const std::string& key) const;  // given in the file or by --set (not defaulted)
  // Where the value came from: "FILE:LINE:COL" or "--set key=value"; for a defaulted key the
  // enclosing table: "FILE" at the top level, the [[area]] header's "FILE:LINE:COL" in a
  // sub-Config.
  std::string where(const std::string& key) const;
  // For semantic checks by callers: throws ConfigError "WHERE: key 'area[0].tau': message".
  [[noreturn]] void fail(const std::string& key, const std::string& message) const;
  const std::string& source_name() const { return source_; }

  nlohmann::json to_json() const;  // every key, defaults filled; absent optional keys are null
  std::string to_toml() const;     // re-loadable with the same schema
  void write_json(const std::string& path) const;  // atomic (temp file + rename); IoError
  void write_toml(const std::string& path) const;

 private:
  friend struct ConfigBuilder;
  struct Entry {
    ConfigValue value;
    bool given = false;
    std::string where;
  };
  const KeySpec& spec(const std::string& key, const char* getter) const;
  const Entry& entry(const std::string& key, const KeySpec& s) const;

  std::shared_ptr<const ConfigSchema> schema_;
  std::string source_;
  std::string prefix_;  // "area[0]." for a sub-Config, for messages
  std::string where_;   // location of this table (FILE, or the [[area]] header)
  std::map<std::string, Entry> values_;
  std::map<std::string, std::vector<Config>> tables_;
};

}  // namespace dynsim
