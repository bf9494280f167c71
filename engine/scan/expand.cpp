// Expanding a grid into runs, run ids, the manifest, shards (engine/scan/scan.h).
#define XXH_INLINE_ALL
#include <xxhash.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <atomic>
#include <exception>
#include <thread>
#include <unordered_map>

#include "engine/core/errors.h"
#include "engine/io/atomic_file.h"
#include "engine/scan/scan.h"

namespace dynsim::scan {
namespace fs = std::filesystem;

namespace {

nlohmann::json normalised(const nlohmann::json& j) {
  if (j.is_number_float()) return j.get<double>() == 0.0 ? nlohmann::json(0.0) : j;
  if (j.is_array()) {
    nlohmann::json a = nlohmann::json::array();
    for (const auto& e : j) a.push_back(normalised(e));
    return a;
  }
  if (j.is_object()) {
    nlohmann::json o = nlohmann::json::object();  // std::map: keys sorted
    for (const auto& [k, v] : j.items()) o[k] = normalised(v);
    return o;
  }
  return j;
}

// The override whose key a validator's message names ("--set KEY=..."), or nullptr.
const Override* blamed(const std::string& msg, const std::vector<Override>& o) {
  const Override* best = nullptr;
  for (const Override& x : o)
    if (msg.find("--set " + x.key + "=") != std::string::npos ||
        msg.find("key '" + x.key + "'") != std::string::npos)
      best = &x;  // the last one wins: axes after [scan.set]
  return best;
}

}  // namespace

std::string canonical(const nlohmann::json& j) {
  return normalised(j).dump(-1, ' ', false, nlohmann::json::error_handler_t::strict);
}

std::string xxh128_hex(const std::string& text) {
  const XXH128_hash_t h = XXH3_128bits(text.data(), text.size());
  char buf[33];
  std::snprintf(buf, sizeof buf, "%016llx%016llx", static_cast<unsigned long long>(h.high64),
                static_cast<unsigned long long>(h.low64));
  return buf;
}

std::vector<Run> expand(const Grid& g, const Validators& validators, int threads) {
  auto vit = validators.find(g.kind);
  if (vit == validators.end()) {
    std::string known;
    for (const auto& [k, v] : validators) known += (known.empty() ? "" : ", ") + k;
    throw ConfigError(concat(g.path, ": scan.kind '", g.kind, "' is not one of ", known));
  }
  int64_t total = 1;
  for (const Grid::Axis& a : g.axes) {
    if (a.points.empty()) throw ConfigError(concat(a.where, ": axis '", a.name, "' is empty"));
    total *= int64_t(a.points.size());
    if (total > 10'000'000) throw ConfigError(concat(g.path, ": more than 10 million runs"));
  }
  std::vector<Run> runs(static_cast<size_t>(total));
  std::vector<size_t> at(g.axes.size(), 0);
  for (int64_t r = 0; r < total; ++r) {
    // Row-major: the last axis varies fastest.
    int64_t rest = r;
    for (size_t k = g.axes.size(); k-- > 0;) {
      at[k] = size_t(rest % int64_t(g.axes[k].points.size()));
      rest /= int64_t(g.axes[k].points.size());
    }
    Run& run = runs[size_t(r)];
    run.index = r;
    run.overrides = g.fixed;
    run.axes = nlohmann::json::object();
    for (size_t k = 0; k < g.axes.size(); ++k) {
      const Grid::Axis& a = g.axes[k];
      for (const Override& o : a.points[at[k]]) run.overrides.push_back(o);
      run.axes[a.name] = a.labels[at[k]];
    }
  }
  // Validation (each run's graph is built) on every core; the error reported is the one of the
  // lowest run index, as a sequential pass would find it.
  std::atomic<int64_t> next{0}, first_bad{total};
  std::vector<std::exception_ptr> errors(static_cast<size_t>(total));
  auto work = [&] {
    for (int64_t r; (r = next.fetch_add(1)) < first_bad.load();) {
      Run& run = runs[size_t(r)];
      std::vector<std::string> sets;
      for (const Override& o : run.overrides) sets.push_back(o.key + "=" + o.value);
      try {
        try {
          run.config = normalised(
              nlohmann::json{{"kind", g.kind}, {"config", vit->second(g.base, sets)}});
        } catch (const ConfigError& e) {
          const std::string msg = e.what();
          if (const Override* o = blamed(msg, run.overrides))
            throw ConfigError(concat(o->where, ": run ", r, ": key '", o->key, "' = ", o->value,
                                     ": ", msg));
          throw ConfigError(concat(g.path, ": run ", r, " (", run.axes.dump(), "): ", msg));
        }
        run.run_id = xxh128_hex(canonical(run.config));
      } catch (...) {
        errors[size_t(r)] = std::current_exception();
        for (int64_t b = first_bad.load(); r < b && !first_bad.compare_exchange_weak(b, r);) {
        }
      }
    }
  };
  const unsigned cores =
      threads > 0 ? unsigned(threads) : std::max(1u, std::thread::hardware_concurrency());
  const unsigned workers = unsigned(std::min<int64_t>(total, cores));
  std::vector<std::thread> pool;
  for (unsigned w = 1; w < workers; ++w) pool.emplace_back(work);
  work();
  for (std::thread& t : pool) t.join();
  if (first_bad.load() < total) std::rethrow_exception(errors[size_t(first_bad.load())]);
  std::unordered_map<std::string, int64_t> seen;
  for (const Run& run : runs) {
    auto [it, fresh] = seen.emplace(run.run_id, run.index);
    if (!fresh)
      throw ConfigError(concat(g.path, ": runs ", it->second, " and ", run.index,
                               " have the same config (", run.axes.dump(),
                               "): a duplicate run; remove the repeated axis value"));
  }
  return runs;
}

void write_manifest(const std::string& dir, const Grid& g, const std::vector<Run>& runs) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw IoError(concat(dir, ": cannot create the scan folder: ", ec.message()));
  std::string manifest, ids;
  for (const Run& r : runs) {
    nlohmann::json line = {{"index", r.index}, {"run_id", r.run_id}, {"kind", g.kind},
                           {"axes", r.axes}, {"config", r.config.at("config")},
                           {"dynsim", DYNSIM_VERSION}};
    manifest += canonical(line) + "\n";
    ids += concat(r.index, " ", r.run_id, "\n");
  }
  nlohmann::json axes = nlohmann::json::array();
  for (const Grid::Axis& a : g.axes)
    axes.push_back({{"name", a.name}, {"keys", a.keys}, {"values", a.labels}});
  nlohmann::json fixed = nlohmann::json::object();
  for (const Override& o : g.fixed) fixed[o.key] = o.value;
  const nlohmann::json scan = {{"name", g.name},   {"kind", g.kind},
                               {"grid", fs::absolute(g.path).lexically_normal().string()},
                               {"base", g.base.empty() ? "" : fs::absolute(g.base).lexically_normal().string()},
                               {"set", fixed},     {"axes", axes},
                               {"runs", runs.size()}, {"dynsim", DYNSIM_VERSION}};
  write_file_atomic((fs::path(dir) / "manifest.jsonl").string(), manifest);
  write_file_atomic((fs::path(dir) / "runs.txt").string(), ids);
  write_file_atomic((fs::path(dir) / "scan.json").string(), normalised(scan).dump(2) + "\n");
}

std::vector<nlohmann::json> read_manifest(const std::string& dir) {
  const std::string path = (fs::path(dir) / "manifest.jsonl").string();
  std::ifstream f(path);
  if (!f) throw NoInputError(concat(path, ": no manifest (run `dynsim scan expand` first)"));
  std::vector<nlohmann::json> out;
  std::string line;
  for (int64_t n = 1; std::getline(f, line); ++n) {
    try {
      out.push_back(nlohmann::json::parse(line));
      if (!out.back().contains("run_id") || out.back().at("index").get<int64_t>() != n - 1)
        throw DataError("not a manifest line");
    } catch (const std::exception& e) {
      throw DataError(concat(path, ":", n, ": malformed manifest line (", e.what(), ")"));
    }
  }
  return out;
}

std::pair<int64_t, int64_t> parse_shard(const std::string& text) {
  const size_t slash = text.find('/');
  char* end = nullptr;
  if (slash != std::string::npos) {
    const std::string a = text.substr(0, slash), b = text.substr(slash + 1);
    const long long i = std::strtoll(a.c_str(), &end, 10);
    if (!a.empty() && *end == 0) {
      const long long n = std::strtoll(b.c_str(), &end, 10);
      if (!b.empty() && *end == 0 && n >= 1 && i >= 0 && i < n) return {i, n};
    }
  }
  throw UsageError(concat("--shard '", text, "': expected i/n with 0 <= i < n"));
}

std::pair<int64_t, int64_t> slurm_shard() {
  const char* id = std::getenv("SLURM_ARRAY_TASK_ID");
  const char* count = std::getenv("SLURM_ARRAY_TASK_COUNT");
  if (!id || !count) return {-1, 0};
  const char* min = std::getenv("SLURM_ARRAY_TASK_MIN");
  const std::string text = concat(std::atoll(id) - (min ? std::atoll(min) : 0), "/", count);
  try {
    return parse_shard(text);
  } catch (const UsageError&) {
    throw UsageError(concat("SLURM_ARRAY_TASK_ID=", id, ", SLURM_ARRAY_TASK_MIN=",
                            min ? min : "(unset)", ", SLURM_ARRAY_TASK_COUNT=", count,
                            " give no shard i/n with 0 <= i < n; pass --shard i/n"));
  }
}

std::vector<int64_t> shard_indices(int64_t count, int64_t i, int64_t n) {
  std::vector<int64_t> out;
  for (int64_t k = i; k < count; k += n) out.push_back(k);
  return out;
}

}  // namespace dynsim::scan
