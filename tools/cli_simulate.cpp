// `dynsim simulate` / `dynsim validate` (tools/cli_simulate.h). Outputs are written into a
// temporary folder beside the target and renamed into place at the end, so an interrupted or
// failed run never leaves a half-written output folder.
#include "tools/cli_simulate.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "engine/device.h"
#include "engine/hdf5_io.h"
#include "engine/npy.h"
#include "models/sim_config.h"

namespace dynsim::cli {
namespace fs = std::filesystem;

namespace {

Config load_config(const std::string& path, const std::vector<std::string>& overrides) {
  const ConfigSchema& schema = models::simulate_schema();
  if (path.empty()) return Config::parse("", "(built-in defaults)", schema, overrides);
  return Config::load(path, schema, overrides);
}

void write_text(const fs::path& p, const std::string& text) {
  std::ofstream f(p);
  f << text;
  if (!f) throw IoError(concat(p.string(), ": write failed"));
}

// simulation.format = "hdf5" needs a build with HDF5 (engine/hdf5_io.h).
void check_format(const Config& cfg) {
  if (cfg.get_string("simulation.format") == "hdf5" && !hdf5_available())
    cfg.fail("simulation.format",
             "'hdf5', but this build of dynsim has no HDF5 support (install libhdf5-dev, then "
             "reconfigure and rebuild; or use 'npy')");
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
  check_format(cfg);
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
  Tensor input = models::build_stimulus(cfg, g);

  ContextOptions co;
  co.seed = uint64_t(cfg.get_int("model.seed"));
  co.threads = int(cfg.get_int("simulation.threads"));
  const std::string dev = cfg.get_string("simulation.device");
  std::string device_note = "cpu";
  if (dev == "cuda") {
    throw NotImplemented(
        "simulation.device = 'cuda': the CUDA scheduler is not built yet (the CUDA backend "
        "issue adds it); use 'cpu' or 'auto'");
  }
  if (dev == "auto" && cuda_device_count() > 0)
    device_note = "cpu (a CUDA device is present, but the CUDA scheduler is not built yet)";
  Context ctx(co);

  Scheduler sched(ctx, g, models::solver_spec(cfg));
  const RunOptions ro = models::run_options(cfg);
  const auto t0 = std::chrono::steady_clock::now();
  Recording rec = sched.run(input, ro);
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  // Write everything into a temporary folder, then rename it into place. Folders made on the
  // way (missing parents of the output) are removed again when writing fails.
  const fs::path tmp = out.string() + ".tmp." + std::to_string(::getpid());
  const fs::path created = first_missing(tmp);
  try {
    fs::remove_all(tmp);
    fs::create_directories(tmp);
    nlohmann::json summary;
    summary["model"] = cfg.get_string("model.preset");
    summary["device"] = device_note;
    summary["solver"] = cfg.get_string("dynamics.solver");
    summary["batch"] = input.dim(0);
    summary["steps"] = rec.steps;
    summary["idle_steps"] = ro.idle_steps;
    summary["wall_seconds"] = wall;
    summary["steps_per_second"] = double(rec.steps + ro.idle_steps) / wall;
    summary["warnings"] = g.warnings;
    summary["parameters"] = g.params.count(false);
    // The arrays by name: npy writes NAME.npy with '/' as '_' (response_avg_V1.npy), hdf5 one
    // dataset per name in responses.h5 (response_avg/V1).
    std::vector<std::pair<std::string, Tensor>> arrays;
    Tensor present = Tensor::zeros(Shape{int64_t(g.areas.size()), rec.steps}, DType::I32);
    for (size_t ai = 0; ai < g.areas.size(); ++ai) {
      const Area& ar = g.areas[ai];
      for (int t = 0; t < rec.steps; ++t)
        present.set(int64_t(ai) * rec.steps + t, rec.present[ai][size_t(t)]);
      nlohmann::json aj = {{"name", ar.name}, {"shape", {ar.channels, ar.height, ar.width}}};
      if (ro.record == RecordMode::Layer) {
        arrays.emplace_back("response_avg/" + ar.name, rec.mean_abs[ai]);
        arrays.emplace_back("response_std/" + ar.name, rec.std_abs[ai]);
        // Peak of the batch-averaged trace (DynVision's peak_time in steps).
        int peak = -1;
        double best = -1;
        for (int t = 0; t < rec.steps; ++t) {
          double m = 0;
          for (int64_t b = 0; b < input.dim(0); ++b) m += rec.mean_abs[ai].item(b * rec.steps + t);
          if (m == m && m > best) best = m, peak = t;
        }
        aj["peak_step"] = peak;
      } else if (ro.record == RecordMode::Full) {
        arrays.emplace_back("rates/" + ar.name, rec.rates[ai]);
      }
      summary["areas"].push_back(aj);
    }
    arrays.emplace_back("present", present);
    if (g.readout.source >= 0) arrays.emplace_back("logits", rec.logits);
    if (format == "hdf5") {
      // Attributes: the effective config as JSON, and every summary field (strings as they
      // are, everything else as JSON text).
      std::map<std::string, std::string> attributes = {{"config", cfg.to_json().dump()}};
      for (const auto& [key, v] : summary.items())
        attributes[key] = v.is_string() ? v.get<std::string>() : v.dump();
      write_hdf5((tmp / "responses.h5").string(), arrays, attributes);
    } else {
      for (const auto& [name, t] : arrays) {
        std::string file = name + ".npy";
        std::replace(file.begin(), file.end(), '/', '_');
        save_npy((tmp / file).string(), t);
      }
    }
    cfg.write_json((tmp / "config.json").string());
    cfg.write_toml((tmp / "config.toml").string());
    write_text(tmp / "summary.json", summary.dump(2) + "\n");
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
    std::cout << "dynsim simulate: " << cfg.get_string("model.preset") << ", " << input.dim(0)
              << " sample(s) x " << rec.steps << " steps (+" << ro.idle_steps << " idle), solver "
              << cfg.get_string("dynamics.solver") << ", dt " << cfg.get_double("dynamics.dt")
              << " ms, on " << device_note << "\n";
    std::cout << "  " << double(rec.steps + ro.idle_steps) / wall << " steps/s (" << wall * 1e3
              << " ms wall)\n";
    for (size_t ai = 0; ai < g.areas.size(); ++ai) {
      int first = -1;
      for (int t = 0; t < rec.steps && first < 0; ++t)
        if (rec.present[ai][size_t(t)]) first = t;
      std::cout << "  " << g.areas[ai].name << ": " << g.areas[ai].channels << "x"
                << g.areas[ai].height << "x" << g.areas[ai].width << ", first active step "
                << first;
      if (ro.record == RecordMode::Layer) {
        std::cout << ", mean |r| at the last step " << rec.mean_abs[ai].item(rec.steps - 1);
      }
      std::cout << "\n";
    }
    std::cout << "  wrote " << out.string() << "/ (summary.json, config.json, "
              << (format == "hdf5" ? "responses.h5" : "*.npy") << ")\n";
  }
  return 0;
}

int run_validate(const ValidateArgs& a) {
  if (a.keys) {
    std::cout << models::simulate_schema().describe();
    return 0;
  }
  Config cfg = load_config(a.config, a.overrides);
  check_format(cfg);
  Graph g = models::build_graph(cfg);
  std::cout << (a.config.empty() ? std::string("(built-in defaults)") : a.config) << ": valid\n"
            << g.summary() << "parameters: " << g.params.count(true) << " trainable, "
            << g.params.count(false) << " in all\n";
  for (const std::string& w : g.warnings) std::cout << "warning: " << w << "\n";
  return 0;
}

}  // namespace dynsim::cli
