// Internal declarations shared by the configuration sources (not part of config.h's API):
// config_toml.cpp (TOML reading with source positions, --set overrides, parse/load),
// config_schema.cpp (KeySpec, ConfigSchema, validation of keys and values, "did you mean") and
// config.cpp (accessors, text helpers, JSON/TOML writers). toml++ is used header-only, so no
// shared library is needed at run time.
#pragma once
#ifndef TOML_HEADER_ONLY
#define TOML_HEADER_ONLY 1
#endif
#include <toml++/toml.h>

#include <cstdint>
#include <string>
#include <vector>

#include "engine/io/config.h"

namespace dynsim {
namespace config_detail {

// Text (defined in config.cpp).
std::string fmt_number(double v, bool toml_float = false);
std::string squote(const std::string& s);
std::string toml_quote(const std::string& s);
std::string join(const std::vector<std::string>& v, const std::string& sep, bool quote);
std::string value_text(const ConfigValue& v);

// Key paths (defined in config_schema.cpp).
std::string leaf(const std::string& path);
std::vector<std::string> split_dots(const std::string& path);

// Source positions (defined in config_toml.cpp).
std::string location(const toml::source_region& r, const std::string& fallback);

}  // namespace config_detail

// Builds a Config from a parsed TOML tree, collecting every problem before throwing one
// ConfigError. A friend of Config; its members live with what they do.
struct ConfigBuilder {
  struct Issue {
    uint32_t line, column;
    std::string text;
  };
  std::vector<Issue> issues;

  // config_toml.cpp: problems with their source positions, and --set overrides.
  void error(const std::string& where, const std::string& key, const std::string& msg,
             const toml::source_region* r = nullptr);
  void error(const toml::source_region& r, const std::string& fallback, const std::string& key,
             const std::string& msg);
  void throw_if_any();
  void apply_override(toml::table& root, const ConfigSchema& schema, const std::string& text);
  static toml::table* child_table(toml::table& t, const std::string& name);
  void set_value(toml::table& t, const std::string& name, const KeySpec& k,
                 const std::string& value, const std::string& where, const std::string& key);

  // config_schema.cpp: validation of the tree against the schema.
  ConfigValue convert(const KeySpec& k, const toml::node& n, const std::string& key,
                      const std::string& fb);
  void walk(const toml::table& t, const std::string& rel_prefix, Config& c);
  void finish(Config& c, const toml::source_region* table_region = nullptr);

  // config.cpp: the canonical TOML text.
  static void emit_toml(const Config& c, const std::string& header, std::string& out);
};

}  // namespace dynsim
