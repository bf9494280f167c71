// `dynsim simulate` / `dynsim validate` (tools/cli_simulate.h). Outputs are written into a
// temporary folder beside the target and renamed into place at the end, so an interrupted or
// failed run never leaves a half-written output folder.
#include "tools/cli_simulate.h"

#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "engine/device.h"
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

}  // namespace

int run_simulate(const SimulateArgs& a) {
  Config cfg = load_config(a.config, a.overrides);
  const fs::path out = cfg.get_string("simulation.output");
  if (fs::exists(out) && !a.overwrite)
    throw UsageError(concat("output folder '", out.string(),
                            "' exists; choose another simulation.output or pass --overwrite"));

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

  // Write everything into a temporary folder, then rename it into place.
  const fs::path tmp = out.string() + ".tmp." + std::to_string(::getpid());
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  try {
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
    Tensor present = Tensor::zeros(Shape{int64_t(g.areas.size()), rec.steps}, DType::I32);
    for (size_t ai = 0; ai < g.areas.size(); ++ai) {
      const Area& ar = g.areas[ai];
      for (int t = 0; t < rec.steps; ++t) present.set(int64_t(ai) * rec.steps + t, rec.present[ai][size_t(t)]);
      nlohmann::json aj = {{"name", ar.name}, {"shape", {ar.channels, ar.height, ar.width}}};
      if (ro.record == RecordMode::Layer) {
        save_npy((tmp / ("response_avg_" + ar.name + ".npy")).string(), rec.mean_abs[ai]);
        save_npy((tmp / ("response_std_" + ar.name + ".npy")).string(), rec.std_abs[ai]);
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
        save_npy((tmp / ("rates_" + ar.name + ".npy")).string(), rec.rates[ai]);
      }
      summary["areas"].push_back(aj);
    }
    save_npy((tmp / "present.npy").string(), present);
    if (g.readout.source >= 0) save_npy((tmp / "logits.npy").string(), rec.logits);
    cfg.write_json((tmp / "config.json").string());
    cfg.write_toml((tmp / "config.toml").string());
    write_text(tmp / "summary.json", summary.dump(2) + "\n");
    if (fs::exists(out)) fs::remove_all(out);
    fs::rename(tmp, out);
  } catch (...) {
    std::error_code ec;
    fs::remove_all(tmp, ec);
    throw;
  }
  if (!a.quiet) {
    std::cout << "dynsim simulate: " << cfg.get_string("model.preset") << ", "
              << input.dim(0) << " sample(s) x " << rec.steps << " steps (+" << ro.idle_steps
              << " idle), solver " << cfg.get_string("dynamics.solver") << ", dt "
              << cfg.get_double("dynamics.dt") << " ms, on " << device_note << "\n";
    std::cout << "  " << double(rec.steps + ro.idle_steps) / wall << " steps/s (" << wall * 1e3
              << " ms wall)\n";
    for (size_t ai = 0; ai < g.areas.size(); ++ai) {
      int first = -1;
      for (int t = 0; t < rec.steps && first < 0; ++t)
        if (rec.present[ai][size_t(t)]) first = t;
      std::cout << "  " << g.areas[ai].name << ": " << g.areas[ai].channels << "x"
                << g.areas[ai].height << "x" << g.areas[ai].width << ", first active step " << first;
      if (ro.record == RecordMode::Layer) {
        std::cout << ", mean |r| at the last step " << rec.mean_abs[ai].item(rec.steps - 1);
      }
      std::cout << "\n";
    }
    std::cout << "  wrote " << out.string() << "/ (summary.json, config.json, *.npy)\n";
  }
  return 0;
}

int run_validate(const ValidateArgs& a) {
  if (a.keys) {
    std::cout << models::simulate_schema().describe();
    return 0;
  }
  Config cfg = load_config(a.config, a.overrides);
  Graph g = models::build_graph(cfg);
  std::cout << (a.config.empty() ? std::string("(built-in defaults)") : a.config) << ": valid\n"
            << g.summary() << "parameters: " << g.params.count(true) << " trainable, "
            << g.params.count(false) << " in all\n";
  for (const std::string& w : g.warnings) std::cout << "warning: " << w << "\n";
  return 0;
}

}  // namespace dynsim::cli
