// `dynsim simulate` / `dynsim validate` (tools/cli_simulate.h). Outputs are written into a
// temporary folder beside the target and renamed into place at the end, so an interrupted or
// failed run never leaves a half-written output folder.
#include "tools/cli_simulate.h"

#include <unistd.h>

#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>

#include "engine/core/device.h"
#include "models/config/sim_config.h"
#include "models/simulate/simulate.h"
#include "models/train/trainer.h"

namespace dynsim::cli {
namespace fs = std::filesystem;

namespace {

Config load_config(const std::string& path, const std::vector<std::string>& overrides) {
  const ConfigSchema& schema = models::simulate_schema();
  if (path.empty()) return Config::parse("", "(built-in defaults)", schema, overrides);
  return Config::load(path, schema, overrides);
}

// simulation.output without trailing separators. "", ".", ".." and a root are config errors:
// with --overwrite, replacing them would delete the working directory or its parent.
fs::path output_folder(const Config& cfg) {
  const std::string given = cfg.get_string("simulation.output");
  std::string s = given;
  while (s.size() > 1 && s.back() == '/') s.pop_back();
  const fs::path p(s);
  const std::string name = p.filename().string();
  if (name.empty() || name == "." || name == "..")
    cfg.fail("simulation.output",
             concat("'", given, "' names no folder that dynsim can create or replace"));
  return p;
}

// --overwrite replaces only what looks like an earlier output: a folder holding summary.json,
// or an empty folder; anything else (a file, the user's own folder) is left alone.
void check_replaceable(const fs::path& out) {
  if (!fs::is_directory(out))
    throw UsageError(concat("output '", out.string(),
                            "' exists and is not a folder; --overwrite replaces output folders "
                            "only"));
  if (!fs::is_empty(out) && !fs::exists(out / "summary.json"))
    throw UsageError(concat("output folder '", out.string(),
                            "' holds no summary.json, so it is not a dynsim output; --overwrite "
                            "leaves it alone"));
}

// The topmost folder that create_directories(p) would make (p itself when its parent exists):
// removing it undoes the creation.
fs::path first_missing(const fs::path& p) {
  fs::path top = p;
  for (fs::path q = p.parent_path(); !q.empty() && !fs::exists(q); q = q.parent_path()) top = q;
  return top;
}

// Moves the finished temporary folder into place; an old output is kept until the new one is
// there, so a failed rename loses neither.
void publish(const fs::path& tmp, const fs::path& out) {
  if (!fs::exists(out)) {
    fs::rename(tmp, out);
    return;
  }
  const fs::path old = out.string() + ".old." + std::to_string(::getpid());
  fs::remove_all(old);
  fs::rename(out, old);
  try {
    fs::rename(tmp, out);
  } catch (...) {
    std::error_code ec;
    fs::rename(old, out, ec);
    throw;
  }
  fs::remove_all(old);
}

}  // namespace

int run_simulate(const SimulateArgs& a) {
  Config cfg = load_config(a.config, a.overrides);
  models::check_format(cfg);
  const std::string format = cfg.get_string("simulation.format");
  const fs::path out = output_folder(cfg);
  std::error_code ec;
  if (fs::exists(out, ec)) {
    if (!a.overwrite)
      throw UsageError(concat("output folder '", out.string(),
                              "' exists; choose another simulation.output or pass --overwrite"));
    check_replaceable(out);
  } else if (ec) {
    throw IoError(concat(out.string(), ": ", ec.message()));
  }

  Graph g = models::build_graph(cfg);
  for (const std::string& w : g.warnings) std::cerr << "dynsim: warning: " << w << "\n";
  const models::SimResult res = models::simulate(cfg, g, models::build_stimulus(cfg, g));
  const int stim_onset = models::stimulus_onset(cfg);
  const RunOptions& ro = res.options;
  const Recording& rec = res.rec;
  const double wall = res.wall_seconds;
  const std::string& device_note = res.device_note;

  // Write everything into a temporary folder, then rename it into place. Folders made on the
  // way (missing parents of the output) are removed again when writing fails.
  const fs::path tmp = out.string() + ".tmp." + std::to_string(::getpid());
  const fs::path created = first_missing(tmp);
  nlohmann::json summary;
  try {
    fs::remove_all(tmp);
    fs::create_directories(tmp);
    summary = models::write_outputs(cfg, g, res, tmp.string());
    publish(tmp, out);
  } catch (...) {
    std::error_code rm;
    fs::remove_all(created, rm);
    try {
      throw;
    } catch (const fs::filesystem_error& e) {  // a folder operation: an I/O failure
      throw IoError(concat(out.string(), ": ", e.what()));
    }
  }
  if (!a.quiet) {
    std::cout << "dynsim simulate: " << cfg.get_string("model.preset") << ", " << res.batch
              << " sample(s) x " << rec.steps << " steps (+" << ro.idle_steps << " idle), solver "
              << cfg.get_string("dynamics.solver") << ", dt " << cfg.get_double("dynamics.dt")
              << " ms, on " << device_note << "\n";
    std::cout << "  " << double(rec.steps + ro.idle_steps) / wall << " steps/s (" << wall * 1e3
              << " ms wall)\n";
    const double dt = cfg.get_double("dynamics.dt");
    std::cout << "  stimulus from step " << stim_onset << "; latencies in ms after its onset:\n";
    for (size_t ai = 0; ai < g.areas.size(); ++ai) {
      std::cout << "  " << g.areas[ai].name << " (" << g.areas[ai].channels << "x"
                << g.areas[ai].height << "x" << g.areas[ai].width << ")";
      const nlohmann::json& aj = summary["areas"][ai];
      if (aj.contains("onset_step")) {
        const int onset = aj["onset_step"].get<int>(), peak = aj["peak_step"].get<int>();
        if (onset < 0)
          std::cout << ": no response to the stimulus";
        else
          std::cout << ": onset " << (onset - stim_onset) * dt << " ms, peak "
                    << (peak - stim_onset) * dt << " ms (mean |r| "
                    << aj["peak_mean_abs_r"].get<double>() << ")";
      }
      std::cout << "\n";
    }
    std::cout << "  wrote " << out.string() << "/ (summary.json, config.json, "
              << (format == "hdf5" ? "responses.h5" : "*.npy") << ")\n";
  }
  return 0;
}

int run_validate(const ValidateArgs& a) {
  const ConfigSchema& schema = a.train ? models::train_schema() : models::simulate_schema();
  if (a.keys) {
    std::cout << schema.describe();
    return 0;
  }
  Config cfg = a.config.empty() ? Config::parse("", "(built-in defaults)", schema, a.overrides)
                                : Config::load(a.config, schema, a.overrides);
  if (!a.train) models::check_format(cfg);
  Graph g = models::build_graph(cfg);
  std::cout << (a.config.empty() ? std::string("(built-in defaults)") : a.config) << ": valid\n"
            << g.summary() << "parameters: " << g.params.count(true) << " trainable, "
            << g.params.count(false) << " in all\n";
  for (const std::string& w : g.warnings) std::cout << "warning: " << w << "\n";
  return 0;
}

}  // namespace dynsim::cli
