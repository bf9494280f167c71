// Schema-validated TOML configuration (engine/io/config.h). toml++ parses (header-only, so no shared
// library is needed at run time) and records source positions; validation walks the parsed tree
// against the schema, collecting every problem before throwing one ConfigError.
#define TOML_HEADER_ONLY 1
#include "engine/io/config.h"

#include <toml++/toml.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "engine/io/atomic_file.h"
#include "engine/core/errors.h"

namespace dynsim {
namespace {

constexpr const char* kOverridePrefix = "--set ";
constexpr size_t kMaxIssues = 20;

// Shortest round-trip text; toml_float marks integral values as floats ("5.0") for TOML output.
std::string fmt_number(double v, bool toml_float = false) {
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

std::string toml_key(const std::string& k) {
  bool bare = !k.empty() && std::all_of(k.begin(), k.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-';
  });
  return bare ? k : toml_quote(k);
}

// Optimal string alignment distance: Levenshtein plus adjacent transpositions ("modle").
size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<std::vector<size_t>> d(a.size() + 1, std::vector<size_t>(b.size() + 1));
  for (size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (size_t i = 1; i <= a.size(); ++i)
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  return d[a.size()][b.size()];
}

// The closest candidate within max_d edits (default: a typo's distance), or "".
std::string closest(const std::string& word, const std::vector<std::string>& candidates,
                    size_t max_d = 0) {
  std::string best;
  size_t best_d = (max_d ? max_d : std::max<size_t>(2, word.size() / 4)) + 1;
  for (const auto& c : candidates) {
    size_t d = edit_distance(word, c);
    if (d < best_d) best_d = d, best = c;
  }
  return best;
}

std::string leaf(const std::string& path) {
  size_t dot = path.rfind('.');
  return dot == std::string::npos ? path : path.substr(dot + 1);
}

std::vector<std::string> split_dots(const std::string& path) {
  std::vector<std::string> out;
  size_t start = 0;
  for (;;) {
    size_t dot = path.find('.', start);
    out.push_back(path.substr(start, dot - start));
    if (dot == std::string::npos) return out;
    start = dot + 1;
  }
}

bool is_override(const toml::source_region& r) {
  return r.path && r.path->rfind(kOverridePrefix, 0) == 0;
}

std::string location(const toml::source_region& r, const std::string& fallback) {
  if (!r.path) return fallback;
  if (is_override(r) || r.begin.line == 0) return *r.path;
  return concat(*r.path, ":", r.begin.line, ":", r.begin.column);
}

const char* node_kind(const toml::node& n) {
  switch (n.type()) {
    case toml::node_type::string:
      return "a string";
    case toml::node_type::integer:
      return "an integer";
    case toml::node_type::floating_point:
      return "a floating-point number";
    case toml::node_type::boolean:
      return "a boolean";
    case toml::node_type::array:
      return "an array";
    case toml::node_type::table:
      return "a table";
    case toml::node_type::date:
      return "a date";
    case toml::node_type::time:
      return "a time";
    case toml::node_type::date_time:
      return "a date-time";
    default:
      return "nothing";
  }
}

const char* expected_kind(ConfigType t) {
  switch (t) {
    case ConfigType::Bool:
      return "a boolean";
    case ConfigType::Int:
      return "an integer";
    case ConfigType::Double:
      return "a number";
    case ConfigType::String:
    case ConfigType::Enum:
      return "a string";
    case ConfigType::Doubles:
      return "an array of numbers";
    case ConfigType::Strings:
      return "an array of strings";
    case ConfigType::Map:
      return "a table of numbers";
    case ConfigType::NumberOrMap:
      return "a number or a table of numbers";
    case ConfigType::TableArray:
      return "an array of tables";
  }
  return "?";
}

bool number_of(const toml::node& n, double& out) {
  if (const auto* f = n.as_floating_point()) return out = f->get(), true;
  if (const auto* i = n.as_integer()) return out = double(i->get()), true;
  return false;
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


}  // namespace

// ------------------------------------------------------------------------------------ KeySpec --

KeySpec& KeySpec::required() {
  presence = Presence::Required;
  default_value = std::monostate{};
  return *this;
}
KeySpec& KeySpec::optional() {
  presence = Presence::Optional;
  default_value = std::monostate{};
  return *this;
}
KeySpec& KeySpec::range(double min, double max) {
  lo = min, hi = max, lo_open = hi_open = false;
  return *this;
}
KeySpec& KeySpec::at_least(double min) {
  return lo = min, lo_open = false, *this;
}
KeySpec& KeySpec::at_most(double max) {
  return hi = max, hi_open = false, *this;
}
KeySpec& KeySpec::greater_than(double min) {
  return lo = min, lo_open = true, *this;
}
KeySpec& KeySpec::less_than(double max) {
  return hi = max, hi_open = true, *this;
}
KeySpec& KeySpec::length(size_t n) {
  return min_len = max_len = n, *this;
}
KeySpec& KeySpec::min_length(size_t n) {
  return min_len = n, *this;
}
KeySpec& KeySpec::max_length(size_t n) {
  return max_len = n, *this;
}

bool KeySpec::in_range(double v) const {
  return (lo_open ? v > lo : v >= lo) && (hi_open ? v < hi : v <= hi);
}

std::string KeySpec::range_text() const {
  bool has_lo = std::isfinite(lo), has_hi = std::isfinite(hi);
  if (has_lo && has_hi)
    return concat("in ", lo_open ? "(" : "[", fmt_number(lo), ", ", fmt_number(hi),
                  hi_open ? ")" : "]");
  if (has_lo) return concat(lo_open ? "> " : ">= ", fmt_number(lo));
  if (has_hi) return concat(hi_open ? "< " : "<= ", fmt_number(hi));
  return "";
}

std::string KeySpec::type_name() const {
  std::string len;
  if (min_len == max_len)
    len = std::to_string(min_len);
  else if (min_len > 0 || max_len != std::numeric_limits<size_t>::max())
    len = concat(
        min_len, "..",
        max_len == std::numeric_limits<size_t>::max() ? std::string() : std::to_string(max_len));
  std::string base;
  switch (type) {
    case ConfigType::Bool:
      base = "bool";
      break;
    case ConfigType::Int:
      base = "int";
      break;
    case ConfigType::Double:
      base = "float";
      break;
    case ConfigType::String:
      base = "string";
      break;
    case ConfigType::Enum:
      base = "enum(" + join(choices, "|", false) + ")";
      break;
    case ConfigType::Doubles:
      base = "float[" + len + "]";
      break;
    case ConfigType::Strings:
      base = "string[" + len + "]";
      break;
    case ConfigType::Map:
      base = "{name=float}";
      break;
    case ConfigType::NumberOrMap:
      base = "float|{name=float}";
      break;
    case ConfigType::TableArray:
      base = "[[table]]" + (len.empty() ? "" : " x" + len);
      break;
  }
  std::string r = range_text();
  return r.empty() ? base : base + " " + r;
}

// ------------------------------------------------------------------------------ ConfigSchema --

KeySpec& ConfigSchema::add(const std::string& path, ConfigType type, ConfigValue def,
                           const std::string& doc) {
  for (const std::string& seg : split_dots(path)) {
    bool ok = !seg.empty() && std::all_of(seg.begin(), seg.end(), [](char c) {
      return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-';
    });
    if (!ok) throw Error(concat("ConfigSchema: malformed key path '", path, "'"));
  }
  for (const KeySpec& k : keys_) {
    if (k.path == path) throw Error(concat("ConfigSchema: key '", path, "' declared twice"));
    if (k.path.rfind(path + ".", 0) == 0 || path.rfind(k.path + ".", 0) == 0)
      throw Error(concat("ConfigSchema: key '", path, "' conflicts with '", k.path, "'"));
  }
  KeySpec& k = keys_.emplace_back();
  k.path = path;
  k.type = type;
  k.default_value = std::move(def);
  k.doc = doc;
  return k;
}

KeySpec& ConfigSchema::add_bool(const std::string& p, bool def, const std::string& doc) {
  return add(p, ConfigType::Bool, def, doc);
}
KeySpec& ConfigSchema::add_int(const std::string& p, int64_t def, const std::string& doc) {
  return add(p, ConfigType::Int, def, doc);
}
KeySpec& ConfigSchema::add_double(const std::string& p, double def, const std::string& doc) {
  return add(p, ConfigType::Double, def, doc);
}
KeySpec& ConfigSchema::add_string(const std::string& p, const std::string& def,
                                  const std::string& doc) {
  return add(p, ConfigType::String, def, doc);
}
KeySpec& ConfigSchema::add_enum(const std::string& p, std::vector<std::string> choices,
                                const std::string& def, const std::string& doc) {
  if (choices.empty() || std::find(choices.begin(), choices.end(), def) == choices.end())
    throw Error(concat("ConfigSchema: default '", def, "' of '", p, "' is not among its choices"));
  KeySpec& k = add(p, ConfigType::Enum, def, doc);
  k.choices = std::move(choices);
  return k;
}
KeySpec& ConfigSchema::add_doubles(const std::string& p, std::vector<double> def,
                                   const std::string& doc) {
  return add(p, ConfigType::Doubles, std::move(def), doc);
}
KeySpec& ConfigSchema::add_strings(const std::string& p, std::vector<std::string> def,
                                   const std::string& doc) {
  return add(p, ConfigType::Strings, std::move(def), doc);
}
KeySpec& ConfigSchema::add_map(const std::string& p, std::map<std::string, double> def,
                               const std::string& doc) {
  return add(p, ConfigType::Map, std::move(def), doc);
}
KeySpec& ConfigSchema::add_number_or_map(const std::string& p, double def, const std::string& doc) {
  return add(p, ConfigType::NumberOrMap, def, doc);
}
KeySpec& ConfigSchema::add_table_array(const std::string& p, ConfigSchema element,
                                       const std::string& doc) {
  KeySpec& k = add(p, ConfigType::TableArray, std::monostate{}, doc);
  k.element = std::make_shared<const ConfigSchema>(std::move(element));
  return k;
}

const KeySpec* ConfigSchema::find(const std::string& path) const {
  for (const KeySpec& k : keys_)
    if (k.path == path) return &k;
  return nullptr;
}

bool ConfigSchema::is_section(const std::string& path) const {
  for (const KeySpec& k : keys_)
    if (k.path.rfind(path + ".", 0) == 0) return true;
  return false;
}

std::string ConfigSchema::suggest(const std::string& path) const {
  // Candidates: every key and every section. A key with the same last name elsewhere (`dt` put
  // under [model] instead of [dynamics]) beats a spelling neighbour.
  std::vector<std::string> candidates;
  for (const KeySpec& k : keys_) {
    std::vector<std::string> segs = split_dots(k.path);
    std::string prefix;
    for (const std::string& s : segs) {
      prefix += (prefix.empty() ? "" : ".") + s;
      if (std::find(candidates.begin(), candidates.end(), prefix) == candidates.end())
        candidates.push_back(prefix);
    }
  }
  std::vector<std::string> same_leaf;
  for (const auto& c : candidates)
    if (leaf(c) == leaf(path)) same_leaf.push_back(c);
  if (!same_leaf.empty()) return closest(path, same_leaf, std::numeric_limits<size_t>::max() - 1);
  return closest(path, candidates);
}

void ConfigSchema::describe_into(std::vector<std::vector<std::string>>& rows,
                                 const std::string& prefix) const {
  for (const KeySpec& k : keys_) {
    std::string def = k.presence == KeySpec::Presence::Required   ? "required"
                      : k.presence == KeySpec::Presence::Optional ? "optional"
                      : k.type == ConfigType::TableArray          ? ""
                                                                  : value_text(k.default_value);
    rows.push_back({prefix + k.path + (k.type == ConfigType::TableArray ? "[N]" : ""),
                    k.type_name(), def, k.doc});
    if (k.type == ConfigType::TableArray) k.element->describe_into(rows, prefix + k.path + "[N].");
  }
}

std::string ConfigSchema::describe() const {
  std::vector<std::vector<std::string>> rows;
  describe_into(rows, "");
  size_t w[3] = {0, 0, 0};
  for (const auto& r : rows)
    for (int c = 0; c < 3; ++c) w[c] = std::max(w[c], r[c].size());
  std::string out;
  for (const auto& r : rows) {
    for (int c = 0; c < 3; ++c) out += r[c] + std::string(w[c] - r[c].size() + 2, ' ');
    out += r[3] + "\n";
  }
  return out;
}

// ----------------------------------------------------------------------------- ConfigBuilder --

struct ConfigBuilder {
  struct Issue {
    uint32_t line, column;
    std::string text;
  };
  std::vector<Issue> issues;

  void error(const std::string& where, const std::string& key, const std::string& msg,
             const toml::source_region* r = nullptr) {
    bool ordered = r && r->path && !is_override(*r) && r->begin.line > 0;
    issues.push_back({ordered ? r->begin.line : UINT32_MAX, ordered ? r->begin.column : UINT32_MAX,
                      concat(where, ": key '", key, "': ", msg)});
  }
  void error(const toml::source_region& r, const std::string& fallback, const std::string& key,
             const std::string& msg) {
    error(location(r, fallback), key, msg, &r);
  }

  void throw_if_any() {
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
  void apply_override(toml::table& root, const ConfigSchema& schema, const std::string& text) {
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
          return error(where, key,
                       concat("there is no [[", rel, "]] table #", index,
                              " (the configuration has ", n, ")"));
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

  static toml::table* child_table(toml::table& t, const std::string& name) {
    if (!t.get(name)) t.insert(name, toml::table{});
    return t.get(name)->as_table();
  }

  void set_value(toml::table& t, const std::string& name, const KeySpec& k,
                 const std::string& value, const std::string& where, const std::string& key) {
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

  ConfigValue convert(const KeySpec& k, const toml::node& n, const std::string& key,
                      const std::string& fb) {
    auto mismatch = [&](const toml::node& at, const std::string& what, const std::string& shown) {
      error(at.source(), fb, shown, concat("expected ", what, ", got ", node_kind(at)));
      return ConfigValue{};
    };
    auto check = [&](const toml::node& at, double v, const std::string& shown) {
      if (std::isnan(v)) return error(at.source(), fb, shown, "nan is not allowed"), false;
      if (!k.in_range(v))
        return error(at.source(), fb, shown,
                     concat(fmt_number(v), " is out of range (must be ", k.range_text(), ")")),
               false;
      return true;
    };
    auto check_len = [&](size_t n_el) {
      if (n_el >= k.min_len && n_el <= k.max_len) return true;
      std::string want = k.min_len == k.max_len ? concat("exactly ", k.min_len)
                         : n_el < k.min_len     ? concat("at least ", k.min_len)
                                                : concat("at most ", k.max_len);
      error(n.source(), fb, key, concat("expected ", want, " element(s), got ", n_el));
      return false;
    };
    double d = 0;
    switch (k.type) {
      case ConfigType::Bool:
        if (const auto* b = n.as_boolean()) return b->get();
        return mismatch(n, "a boolean", key);
      case ConfigType::Int:
        if (const auto* i = n.as_integer()) {
          if (!check(n, double(i->get()), key)) return {};
          return i->get();
        }
        return mismatch(n, "an integer", key);
      case ConfigType::Double:
        if (!number_of(n, d)) return mismatch(n, "a number", key);
        if (!check(n, d, key)) return {};
        return d;
      case ConfigType::String:
      case ConfigType::Enum: {
        const auto* s = n.as_string();
        if (!s) return mismatch(n, "a string", key);
        if (k.type == ConfigType::Enum &&
            std::find(k.choices.begin(), k.choices.end(), s->get()) == k.choices.end()) {
          std::string near = closest(s->get(), k.choices);
          error(n.source(), fb, key,
                concat(squote(s->get()), " is not allowed (allowed: ", join(k.choices, ", ", true),
                       ")", near.empty() ? "" : "; did you mean " + squote(near) + "?"));
          return {};
        }
        return s->get();
      }
      case ConfigType::Doubles:
      case ConfigType::Strings: {
        const auto* a = n.as_array();
        if (!a) return mismatch(n, expected_kind(k.type), key);
        std::vector<double> nums;
        std::vector<std::string> strs;
        bool ok = check_len(a->size());
        for (size_t i = 0; i < a->size(); ++i) {
          const toml::node& e = (*a)[i];
          std::string shown = concat(key, "[", i, "]");
          const auto* s = e.as_string();
          if (k.type == ConfigType::Strings && s) {
            strs.push_back(s->get());
          } else if (k.type == ConfigType::Doubles && number_of(e, d)) {
            ok = check(e, d, shown) && ok;
            nums.push_back(d);
          } else {
            ok = false;
            mismatch(e, k.type == ConfigType::Strings ? "a string" : "a number", shown);
          }
        }
        if (!ok) return {};
        if (k.type == ConfigType::Strings) return strs;
        return nums;
      }
      case ConfigType::Map:
      case ConfigType::NumberOrMap: {
        if (k.type == ConfigType::NumberOrMap && number_of(n, d)) {
          if (!check(n, d, key)) return {};
          return d;
        }
        const auto* t = n.as_table();
        if (!t) return mismatch(n, expected_kind(k.type), key);
        std::map<std::string, double> m;
        bool ok = true;
        for (auto&& [name, e] : *t) {
          std::string shown = concat(key, ".", name.str());
          if (!number_of(e, d)) {
            ok = false;
            mismatch(e, "a number", shown);
          } else if (check(e, d, shown)) {
            m[std::string(name.str())] = d;
          } else {
            ok = false;
          }
        }
        if (!ok) return {};
        return m;
      }
      case ConfigType::TableArray:
        break;
    }
    return {};
  }

  // Validates the entries of table `t` (which sits at `rel_prefix` within c's schema) into c.
  void walk(const toml::table& t, const std::string& rel_prefix, Config& c) {
    const ConfigSchema& schema = *c.schema_;
    for (auto&& [name, node] : t) {
      const std::string rel = rel_prefix + std::string(name.str());
      const std::string shown = c.prefix_ + rel;
      const KeySpec* k = schema.find(rel);
      if (!k && schema.is_section(rel)) {
        if (const auto* sub = node.as_table())
          walk(*sub, rel + ".", c);
        else
          error(node.source(), c.source_, shown, concat("expected a table, got ", node_kind(node)));
        continue;
      }
      if (!k) {
        std::string near = schema.suggest(rel);
        error(name.source(), c.source_, shown,
              "unknown key" + (near.empty() ? "" : " (did you mean '" + c.prefix_ + near + "'?)"));
        continue;
      }
      Config::Entry& e = c.values_[rel];
      e.given = true;
      e.where = location(node.source(), c.source_);
      if (k->type != ConfigType::TableArray) {
        e.value = convert(*k, node, shown, c.source_);
        continue;
      }
      const auto* arr = node.as_array();
      if (!arr || !(arr->empty() || arr->is_array_of_tables())) {
        error(node.source(), c.source_, shown,
              concat("expected an array of tables ([[", shown, "]]), got ", node_kind(node)));
        continue;
      }
      if (arr->size() < k->min_len || arr->size() > k->max_len)
        error(node.source(), c.source_, shown,
              concat("expected ", arr->size() < k->min_len ? "at least " : "at most ",
                     arr->size() < k->min_len ? k->min_len : k->max_len, " [[", shown,
                     "]] table(s), got ", arr->size()));
      std::vector<Config>& subs = c.tables_[rel];
      for (size_t i = 0; i < arr->size(); ++i) {
        Config& s = subs.emplace_back();
        s.schema_ = k->element;
        s.source_ = c.source_;
        s.prefix_ = concat(shown, "[", i, "].");
        s.where_ = location((*arr)[i].source(), c.source_);
        walk(*(*arr)[i].as_table(), "", s);
        finish(s, &(*arr)[i].source());
      }
    }
  }

  // Fills defaults and reports required keys that were not given.
  void finish(Config& c, const toml::source_region* table_region = nullptr) {
    for (const KeySpec& k : c.schema_->keys()) {
      if (c.values_.count(k.path)) continue;
      Config::Entry& e = c.values_[k.path];
      e.where = c.where_;
      e.value = k.default_value;
      if (k.type == ConfigType::TableArray) {
        c.tables_[k.path];
        if (k.min_len > 0)
          error(c.where_, c.prefix_ + k.path,
                concat("missing: at least ", k.min_len, " [[", c.prefix_ + k.path,
                       "]] table(s) required"),
                table_region);
      } else if (k.presence == KeySpec::Presence::Required) {
        error(c.where_, c.prefix_ + k.path, "missing required key", table_region);
      }
    }
  }

  // TOML text for c: plain keys in schema order under [section] headers, then the arrays of
  // tables. `header` is "" at the top level and e.g. "area" inside an [[area]] element.
  static void emit_toml(const Config& c, const std::string& header, std::string& out) {
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
};

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
