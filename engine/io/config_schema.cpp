// The configuration schema (engine/io/config.h): KeySpec (one declared key: type, default,
// range, doc) and ConfigSchema (declaring keys, "did you mean" suggestions, describe()), and the
// validation that walks the parsed TOML tree against the schema: unknown keys, wrong types,
// ranges and enum values, missing required keys, defaults filled in, collecting every problem
// before throwing one ConfigError.
// Siblings: config_toml.cpp (reading, overrides), config.cpp (accessors, writers),
// config_detail.h (shared internal declarations).
#include <algorithm>
#include <cctype>
#include <cmath>
#include <limits>

#include "engine/core/errors.h"
#include "engine/io/config.h"
#include "engine/io/config_detail.h"

namespace dynsim {

using config_detail::fmt_number;
using config_detail::join;
using config_detail::leaf;
using config_detail::location;
using config_detail::split_dots;
using config_detail::squote;
using config_detail::value_text;

namespace config_detail {

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

}  // namespace config_detail

namespace {

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

// ---------------------------------------------------------------- validation (ConfigBuilder) --

ConfigValue ConfigBuilder::convert(const KeySpec& k, const toml::node& n, const std::string& key,
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
void ConfigBuilder::walk(const toml::table& t, const std::string& rel_prefix, Config& c) {
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
void ConfigBuilder::finish(Config& c, const toml::source_region* table_region) {
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

}  // namespace dynsim
