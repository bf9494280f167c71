// Grid files (engine/scan/scan.h): reading [scan], [scan.set] and [[axis]] with locations.
#include <toml++/toml.h>

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "engine/core/errors.h"
#include "engine/scan/scan.h"
#include "engine/scan/scan_detail.h"

namespace dynsim::scan {
namespace fs = std::filesystem;

namespace detail {

std::string where(const toml::node& n, const std::string& fallback) {
  const toml::source_region& r = n.source();
  if (!r.path || r.begin.line == 0) return fallback;
  return concat(*r.path, ":", r.begin.line, ":", r.begin.column);
}

nlohmann::json to_json(const toml::node& n, const std::string& at) {
  if (auto v = n.as_string()) return v->get();
  if (auto v = n.as_integer()) return int64_t(v->get());
  if (auto v = n.as_floating_point()) {
    if (!std::isfinite(v->get()))
      throw ConfigError(concat(at, ": a scan value must be finite"));
    return v->get() == 0.0 ? 0.0 : v->get();  // -0.0 -> 0.0
  }
  if (auto v = n.as_boolean()) return v->get();
  if (auto a = n.as_array()) {
    nlohmann::json j = nlohmann::json::array();
    for (const toml::node& e : *a) j.push_back(to_json(e, where(e, at)));
    return j;
  }
  if (auto t = n.as_table()) {
    nlohmann::json j = nlohmann::json::object();
    for (const auto& [k, e] : *t) j[std::string(k.str())] = to_json(e, where(e, at));
    return j;
  }
  throw ConfigError(concat(at, ": dates and times are not config values"));
}

std::string toml_text(const nlohmann::json& j) {
  switch (j.type()) {
    case nlohmann::json::value_t::string: return j.dump();  // JSON escapes are TOML escapes
    case nlohmann::json::value_t::boolean: return j.get<bool>() ? "true" : "false";
    case nlohmann::json::value_t::number_integer:
    case nlohmann::json::value_t::number_unsigned: return j.dump();
    case nlohmann::json::value_t::number_float: {
      std::string s = j.dump();
      if (s.find_first_of(".eE") == std::string::npos) s += ".0";
      return s;
    }
    case nlohmann::json::value_t::array: {
      std::string s = "[";
      for (size_t i = 0; i < j.size(); ++i) s += (i ? ", " : "") + toml_text(j[i]);
      return s + "]";
    }
    case nlohmann::json::value_t::object: {
      std::string s = "{";
      bool first = true;
      for (const auto& [k, v] : j.items()) {
        s += concat(first ? "" : ", ", nlohmann::json(k).dump(), " = ", toml_text(v));
        first = false;
      }
      return s + "}";
    }
    default: throw Error("scan: a null value has no TOML text");
  }
}

}  // namespace detail

namespace {
nlohmann::json without_nulls(const nlohmann::json& j) {
  if (j.is_object()) {
    nlohmann::json o = nlohmann::json::object();
    for (const auto& [k, v] : j.items())
      if (!v.is_null()) o[k] = without_nulls(v);
    return o;
  }
  if (j.is_array()) {
    nlohmann::json a = nlohmann::json::array();
    for (const auto& v : j) a.push_back(without_nulls(v));
    return a;
  }
  return j;
}
}  // namespace

std::string config_toml(const nlohmann::json& config) {
  std::string out;
  const nlohmann::json c = without_nulls(config);  // kept alive for the loop
  for (const auto& [k, v] : c.items())
    out += concat(nlohmann::json(k).dump(), " = ", detail::toml_text(v), "\n");
  return out;
}

namespace {

using detail::where;

// [scan.set] and a `tables` point: nested tables flatten to dotted keys; a quoted dotted key
// ("dynamics.tau" = 5) is one key. An inline table under a dotted key is a value (a map key:
// "dynamics.tau" = {V1 = 5}); under a plain name it is a section (model = {skip = false}).
void flatten(const toml::table& t, const std::string& prefix, std::vector<Override>& out,
             const std::string& at, nlohmann::json* labels = nullptr) {
  for (const auto& [k, n] : t) {
    const std::string key = prefix + std::string(k.str());
    const std::string w = where(n, at);
    if (auto sub = n.as_table(); sub && (!sub->is_inline() || key.find('.') == std::string::npos)) {
      flatten(*sub, key + ".", out, w, labels);
      continue;
    }
    nlohmann::json j = detail::to_json(n, w);
    out.push_back({key, detail::toml_text(j), w});
    if (labels) (*labels)[key] = std::move(j);
  }
}

const toml::array& values_of(const toml::table& axis, const char* field, const std::string& at) {
  const toml::node* n = axis.get(field);
  const toml::array* a = n ? n->as_array() : nullptr;
  if (!a) throw ConfigError(concat(at, ": axis '", field, "' must be an array"));
  if (a->empty()) throw ConfigError(concat(where(*n, at), ": axis '", field, "' is empty"));
  return *a;
}

Grid::Axis read_axis(const toml::table& t, size_t k, const std::string& at) {
  Grid::Axis ax;
  ax.where = at;
  for (const auto& [key, n] : t) {
    const std::string f(key.str());
    if (f != "key" && f != "values" && f != "zip" && f != "tables" && f != "name")
      throw ConfigError(concat(where(n, at), ": unknown axis field '", f,
                               "' (key + values, zip, tables, name)"));
  }
  const int forms = int(t.contains("key")) + int(t.contains("zip")) + int(t.contains("tables"));
  if (forms != 1)
    throw ConfigError(concat(at, ": an axis has exactly one of key (with values), zip or tables"));
  if (auto n = t.get("name")) {
    if (!n->is_string()) throw ConfigError(concat(where(*n, at), ": axis name must be a string"));
    ax.name = n->as_string()->get();
  }
  if (t.contains("key")) {
    const toml::node& kn = *t.get("key");
    if (!kn.is_string() || kn.as_string()->get().empty())
      throw ConfigError(concat(where(kn, at), ": axis key must be a config key (a string)"));
    ax.keys = {kn.as_string()->get()};
    for (const toml::node& v : values_of(t, "values", at)) {
      const std::string w = where(v, at);
      nlohmann::json j = detail::to_json(v, w);
      ax.points.push_back({{ax.keys[0], detail::toml_text(j), w}});
      ax.labels.push_back(std::move(j));
    }
    if (ax.name.empty()) ax.name = ax.keys[0];
  } else if (t.contains("zip")) {
    if (t.contains("values"))
      throw ConfigError(concat(at, ": a zip axis gives its values inside zip = {key = [...]}"));
    const toml::node& zn = *t.get("zip");
    const toml::table* z = zn.as_table();
    if (!z || z->empty())
      throw ConfigError(concat(where(zn, at), ": zip must be a table of key = [values]"));
    size_t len = 0;
    std::string first;
    for (const auto& [key, n] : *z) {
      const std::string kk(key.str());
      const toml::array* a = n.as_array();
      if (!a) throw ConfigError(concat(where(n, at), ": zip '", kk, "' must be an array"));
      if (a->empty()) throw ConfigError(concat(where(n, at), ": zip '", kk, "' is empty"));
      if (!first.empty() && a->size() != len)
        throw ConfigError(concat(where(n, at), ": zip '", kk, "' has ", a->size(),
                                 " values but '", first, "' has ", len));
      if (first.empty()) first = kk, len = a->size();
      ax.keys.push_back(kk);
    }
    ax.points.resize(len);
    ax.labels.assign(len, nlohmann::json::object());
    for (const auto& [key, n] : *z) {
      const std::string kk(key.str());
      size_t i = 0;
      for (const toml::node& v : *n.as_array()) {
        const std::string w = where(v, at);
        nlohmann::json j = detail::to_json(v, w);
        ax.points[i].push_back({kk, detail::toml_text(j), w});
        ax.labels[i++][kk] = std::move(j);
      }
    }
    if (ax.name.empty()) ax.name = concat("zip", k);
  } else {
    const toml::array& a = values_of(t, "tables", at);
    std::vector<std::string> keys;
    for (const toml::node& p : a) {
      const std::string w = where(p, at);
      const toml::table* pt = p.as_table();
      if (!pt) throw ConfigError(concat(w, ": each entry of tables must be a table"));
      std::vector<Override> o;
      nlohmann::json label = nlohmann::json::object();
      flatten(*pt, "", o, w, &label);
      if (o.empty()) throw ConfigError(concat(w, ": an empty table in tables"));
      for (const Override& x : o)
        if (std::find(keys.begin(), keys.end(), x.key) == keys.end()) keys.push_back(x.key);
      ax.points.push_back(std::move(o));
      ax.labels.push_back(std::move(label));
    }
    ax.keys = keys;
    if (ax.name.empty()) ax.name = concat("tables", k);
  }
  return ax;
}

}  // namespace

Grid read_grid(const std::string& path) {
  if (!fs::is_regular_file(path)) throw NoInputError(concat(path, ": no such grid file"));
  toml::table doc;
  try {
    doc = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    throw ConfigError(concat(path, ":", e.source().begin.line, ":", e.source().begin.column, ": ",
                             e.description()));
  }
  Grid g;
  g.path = path;
  g.name = fs::path(path).stem().string();
  for (const auto& [k, n] : doc) {
    const std::string f(k.str());
    if (f != "scan" && f != "axis")
      throw ConfigError(concat(where(n, path), ": unknown grid section '", f,
                               "' (a grid has [scan], [scan.set] and [[axis]])"));
  }
  const toml::table* s = doc["scan"].as_table();
  if (!s) throw ConfigError(concat(path, ": a grid needs a [scan] table with kind = \"...\""));
  const std::string at = where(*s, path);
  std::string seeds_key;
  const toml::node* seeds = nullptr;
  for (const auto& [k, n] : *s) {
    const std::string f(k.str());
    const std::string w = where(n, at);
    auto str = [&]() {
      if (!n.is_string()) throw ConfigError(concat(w, ": scan.", f, " must be a string"));
      return n.as_string()->get();
    };
    if (f == "kind") g.kind = str();
    else if (f == "name") g.name = str();
    else if (f == "base") {
      const std::string b = str();
      g.base = b.empty() || fs::path(b).is_absolute()
                   ? b
                   : (fs::path(path).parent_path() / b).lexically_normal().string();
      if (!g.base.empty() && !fs::is_regular_file(g.base))
        throw ConfigError(concat(w, ": scan.base: no such config file '", g.base, "'"));
    } else if (f == "set") {
      if (!n.is_table()) throw ConfigError(concat(w, ": scan.set must be a table"));
      flatten(*n.as_table(), "", g.fixed, w);
    } else if (f == "seeds") {
      seeds = &n;
    } else if (f == "seed_key") {
      seeds_key = str();
    } else {
      throw ConfigError(concat(w, ": unknown key 'scan.", f,
                               "' (kind, name, base, set, seeds, seed_key)"));
    }
  }
  if (g.kind.empty()) throw ConfigError(concat(at, ": [scan] needs kind = \"simulate\" or \"train\""));
  size_t k = 0;
  if (const toml::node* an = doc.get("axis")) {
    const toml::array* arr = an->as_array();
    if (!arr || !arr->is_array_of_tables())
      throw ConfigError(concat(where(*an, path), ": axes are [[axis]] tables"));
    for (const toml::node& t : *arr) g.axes.push_back(read_axis(*t.as_table(), k++, where(t, path)));
  }
  if (seeds) {
    // seeds = N (0..N-1) or a list; the innermost axis, on seed_key (default model.seed).
    Grid::Axis ax;
    ax.where = where(*seeds, at);
    ax.keys = {seeds_key.empty() ? "model.seed" : seeds_key};
    ax.name = ax.keys[0];
    std::vector<nlohmann::json> vals;
    if (auto c = seeds->as_integer()) {
      if (c->get() < 1) throw ConfigError(concat(ax.where, ": scan.seeds must be >= 1"));
      for (int64_t i = 0; i < c->get(); ++i) vals.push_back(i);
    } else if (auto a = seeds->as_array()) {
      if (a->empty()) throw ConfigError(concat(ax.where, ": scan.seeds is empty"));
      for (const toml::node& v : *a) vals.push_back(detail::to_json(v, where(v, ax.where)));
    } else {
      throw ConfigError(concat(ax.where, ": scan.seeds is a count or a list of seeds"));
    }
    for (const nlohmann::json& v : vals) {
      ax.points.push_back({{ax.keys[0], detail::toml_text(v), ax.where}});
      ax.labels.push_back(v);
    }
    g.axes.push_back(std::move(ax));
  } else if (!seeds_key.empty()) {
    throw ConfigError(concat(at, ": scan.seed_key is given but scan.seeds is not"));
  }
  for (size_t i = 0; i < g.axes.size(); ++i)
    for (size_t j = 0; j < i; ++j)
      if (g.axes[i].name == g.axes[j].name)
        throw ConfigError(concat(g.axes[i].where, ": two axes named '", g.axes[i].name,
                                 "' (give one a name = \"...\")"));
  return g;
}

}  // namespace dynsim::scan
