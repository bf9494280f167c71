// Reading configurations (engine/io/config.h): toml++ parses the file and records source
// positions, so every problem is reported as "FILE:LINE:COL: key ..."; `--set key=value`
// overrides are merged into the parsed tree before validation; Config::parse and Config::load.
// Siblings: config_schema.cpp (the schema and validation), config.cpp (accessors, writers),
// config_detail.h (shared internal declarations).
#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

#include "engine/core/errors.h"
#include "engine/io/config.h"
#include "engine/io/config_detail.h"

namespace dynsim {

using config_detail::split_dots;
using config_detail::toml_quote;

namespace {

constexpr const char* kOverridePrefix = "--set ";
constexpr size_t kMaxIssues = 20;

bool is_override(const toml::source_region& r) {
  return r.path && r.path->rfind(kOverridePrefix, 0) == 0;
}

}  // namespace

namespace config_detail {

std::string location(const toml::source_region& r, const std::string& fallback) {
  if (!r.path) return fallback;
  if (is_override(r) || r.begin.line == 0) return *r.path;
  return concat(*r.path, ":", r.begin.line, ":", r.begin.column);
}

}  // namespace config_detail

using config_detail::location;

// ----------------------------------------------------------------------------- ConfigBuilder --

void ConfigBuilder::error(const std::string& where, const std::string& key, const std::string& msg,
                          const toml::source_region* r) {
  bool ordered = r && r->path && !is_override(*r) && r->begin.line > 0;
  issues.push_back({ordered ? r->begin.line : UINT32_MAX, ordered ? r->begin.column : UINT32_MAX,
                    concat(where, ": key '", key, "': ", msg)});
}

void ConfigBuilder::error(const toml::source_region& r, const std::string& fallback,
                          const std::string& key, const std::string& msg) {
  error(location(r, fallback), key, msg, &r);
}

void ConfigBuilder::throw_if_any() {
  if (issues.empty()) return;
  std::stable_sort(issues.begin(), issues.end(), [](const Issue& a, const Issue& b) {
    return a.line != b.line ? a.line < b.line : a.column < b.column;
  });
  std::string msg;
  for (size_t i = 0; i < issues.size() && i < kMaxIssues; ++i)
    msg += (i ? "\n" : "") + issues[i].text;
  if (issues.size() > kMaxIssues) msg += concat("\n(", issues.size() - kMaxIssues, " more)");
  throw ConfigError(msg);
}

// One `--set key=value` applied to the parsed tree; the value's nodes carry the override text
// as their source path, so later messages name the override instead of a file position.
void ConfigBuilder::apply_override(toml::table& root, const ConfigSchema& schema,
                                   const std::string& text) {
  const std::string where = kOverridePrefix + text;
  size_t eq = text.find('=');
  if (eq == std::string::npos) return error(where, text, "expected KEY=VALUE");
  auto trim = [](std::string s) {
    s.erase(0, s.find_first_not_of(" \t"));
    s.erase(s.find_last_not_of(" \t") + 1);
    return s;
  };
  const std::string key = trim(text.substr(0, eq)), value = trim(text.substr(eq + 1));
  const ConfigSchema* sch = &schema;
  std::string rel, shown;  // path within sch; the key as shown, up to sch's table
  toml::table* cur = &root;
  std::vector<std::string> segs = split_dots(key);
  for (size_t i = 0; i < segs.size(); ++i) {
    std::string name = segs[i];
    long index = -1;
    size_t br = name.find('[');
    if (br != std::string::npos && name.back() == ']') {
      char* end = nullptr;
      index = std::strtol(name.c_str() + br + 1, &end, 10);
      const char* digits = name.c_str() + br + 1;
      if (end == digits || end != name.c_str() + name.size() - 1 || index < 0) index = -2;
      name.resize(br);
    }
    if (name.empty() || index == -2) return error(where, key, "malformed key");
    rel += (rel.empty() ? "" : ".") + name;
    const bool last = i + 1 == segs.size();
    const KeySpec* k = sch->find(rel);
    if (k && k->type == ConfigType::TableArray) {
      if (index < 0 || last)
        return error(where, key,
                     concat("'", rel, "' is an array of tables: set ", rel, "[N].KEY=VALUE"));
      if (!cur->get(name)) cur->insert(name, toml::array{});
      toml::array* arr = cur->get(name)->as_array();
      size_t n = arr ? arr->size() : 0;
      // Index n appends a table, so that --set alone can build a configuration.
      // Parsed rather than constructed, so that the new table's source names the override.
      if (arr && size_t(index) == n)
        arr->push_back(std::move(*toml::parse("v = {}", where).get("v")->as_table()));
      if (size_t(index) > n || !arr || !(*arr)[size_t(index)].is_table())
        return error(
            where, key,
            concat("there is no [[", rel, "]] table #", index, " (the configuration has ", n, ")"));
      cur = (*arr)[size_t(index)].as_table();
      sch = k->element.get();
      shown += rel + "[" + std::to_string(index) + "].";
      rel.clear();
      continue;
    }
    if (index >= 0) return error(where, key, concat("'", rel, "' is not an array of tables"));
    if (k && last) return set_value(*cur, name, *k, value, where, key);
    if (k && !last && i + 2 == segs.size() &&
        (k->type == ConfigType::Map || k->type == ConfigType::NumberOrMap)) {
      // One entry of a map the file does not set starts from the default map.
      if (!cur->get(name) && k->type == ConfigType::Map) {
        toml::table seeded;
        if (const auto* m = std::get_if<std::map<std::string, double>>(&k->default_value))
          for (const auto& [mk, mv] : *m) seeded.insert(mk, mv);
        cur->insert(name, std::move(seeded));
      }
      toml::table* t = child_table(*cur, name);
      if (!t)
        return error(where, key,
                     concat("'", shown + rel, "' is not a table here (set the whole value)"));
      if (segs[i + 1].empty()) return error(where, key, "malformed key");
      KeySpec entry = *k;
      entry.type = ConfigType::Double;
      return set_value(*t, segs[i + 1], entry, value, where, key);
    }
    if (k)
      return error(where, key,
                   k->type == ConfigType::Map || k->type == ConfigType::NumberOrMap
                       ? concat("a map entry is set as ", shown + rel, ".NAME=VALUE")
                       : concat("'", shown + rel, "' is a value, not a table"));
    if (sch->is_section(rel)) {
      if (last) return error(where, key, concat("'", key, "' is a section, not a key"));
      cur = child_table(*cur, name);
      if (!cur) return error(where, key, concat("'", shown + rel, "' is not a table here"));
      continue;
    }
    std::string near = sch->suggest(rel);
    return error(where, shown + rel,
                 "unknown key" + (near.empty() ? "" : " (did you mean '" + shown + near + "'?)"));
  }
}

toml::table* ConfigBuilder::child_table(toml::table& t, const std::string& name) {
  if (!t.get(name)) t.insert(name, toml::table{});
  return t.get(name)->as_table();
}

void ConfigBuilder::set_value(toml::table& t, const std::string& name, const KeySpec& k,
                              const std::string& value, const std::string& where,
                              const std::string& key) {
  auto parse_value = [&](const std::string& v) -> std::optional<toml::table> {
    try {
      toml::table parsed = toml::parse("v = " + v, where);
      if (parsed.size() == 1 && parsed.get("v")) return parsed;
    } catch (const toml::parse_error&) {
    }
    return std::nullopt;
  };
  std::optional<toml::table> parsed = parse_value(value);
  // String keys take bare text too: `--set model.feedback=add`, `--set run.name=2024`.
  bool stringy = k.type == ConfigType::String || k.type == ConfigType::Enum;
  if (stringy && (!parsed || !parsed->get("v")->is_string()))
    parsed = parse_value(toml_quote(value));
  if (!parsed) return error(where, key, concat("cannot parse '", value, "' as a TOML value"));
  parsed->get("v")->visit([&](auto&& n) { t.insert_or_assign(name, std::move(n)); });
}

// ---------------------------------------------------------------------------------- Config --

Config Config::parse(const std::string& text, const std::string& source_name,
                     const ConfigSchema& schema, const std::vector<std::string>& overrides) {
  toml::table root;
  try {
    root = toml::parse(text, source_name);
  } catch (const toml::parse_error& e) {
    throw ConfigError(
        concat(location(e.source(), source_name), ": TOML syntax error: ", e.description()));
  }
  ConfigBuilder b;
  for (const std::string& o : overrides) b.apply_override(root, schema, o);
  Config c;
  c.schema_ = std::make_shared<const ConfigSchema>(schema);
  c.source_ = source_name;
  c.where_ = source_name;
  b.walk(root, "", c);
  b.finish(c);
  b.throw_if_any();
  return c;
}

Config Config::load(const std::string& path, const ConfigSchema& schema,
                    const std::vector<std::string>& overrides) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    throw NoInputError(concat(path, ": cannot read config file: is a directory"));
  std::ifstream f(path, std::ios::binary);
  if (!f) throw NoInputError(concat(path, ": cannot read config file: ", std::strerror(errno)));
  std::ostringstream s;
  s << f.rdbuf();
  if (f.bad()) throw NoInputError(concat(path, ": cannot read config file: read failed"));
  return parse(s.str(), path, schema, overrides);
}

}  // namespace dynsim
