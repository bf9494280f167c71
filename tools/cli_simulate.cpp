// `dynsim simulate` / `dynsim validate` (tools/cli_simulate.h). Outputs are written into a
// temporary folder beside the target and renamed into place at the end, so an interrupted or
// failed run never leaves a half-written output folder.
#include "tools/cli_simulate.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "engine/core/device.h"
#include "engine/io/hdf5_io.h"
#include "engine/io/npy.h"
#include "models/config/sim_config.h"
#include "models/train/trainer.h"

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

// simulation.format = "hdf5" needs a build with HDF5 (engine/io/hdf5_io.h).
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

// Batch-averaged mean |r| per step of area a (NaN where absent).
std::vector<double> batch_trace(const Recording& rec, size_t a, RecordMode mode) {
  std::vector<double> tr(size_t(rec.steps), 0.0);
  if (mode == RecordMode::Layer) {
    const Tensor& m = rec.mean_abs[a];
    const int64_t B = m.dim(0);
    for (int t = 0; t < rec.steps; ++t) {
      for (int64_t b = 0; b < B; ++b) tr[size_t(t)] += m.item(b * rec.steps + t) / double(B);
    }
  } else {
    const Tensor& r = rec.rates[a];
    const int64_t B = r.dim(0), per = r.numel() / (B * rec.steps);
    for (int64_t b = 0; b < B; ++b)
      for (int t = 0; t < rec.steps; ++t) {
        double s = 0;
        for (int64_t i = 0; i < per; ++i) s += std::abs(r.item((b * rec.steps + t) * per + i));
        tr[size_t(t)] += s / double(per * B);
      }
    for (int t = 0; t < rec.steps; ++t)
      if (!rec.present[a][size_t(t)]) tr[size_t(t)] = std::nan("");
  }
  return tr;
}

// Response onset and peak of a trace for a stimulus starting at step `from`: the peak is the
// largest value from `from` on (DynVision's peak_time); the onset the first step from `from` on
// where the trace has risen by 10% of (peak - baseline) above the baseline (the value just
// before `from`, 0 when absent). -1 when the trace never rises.
struct Latency {
  int onset = -1, peak = -1;
  double peak_value = 0;
};
Latency latency(const std::vector<double>& tr, int from) {
  Latency l;
  const int T = int(tr.size());
  const double base =
      from >= 1 && tr[size_t(from - 1)] == tr[size_t(from - 1)] ? tr[size_t(from - 1)] : 0.0;
  for (int t = std::max(from, 0); t < T; ++t)
    if (tr[size_t(t)] == tr[size_t(t)] && (l.peak < 0 || tr[size_t(t)] > l.peak_value))
      l.peak = t, l.peak_value = tr[size_t(t)];
  if (l.peak < 0 || !(l.peak_value > base)) return Latency{-1, -1, l.peak < 0 ? 0 : l.peak_value};
  for (int t = std::max(from, 0); t <= l.peak; ++t)
    if (tr[size_t(t)] - base >= 0.1 * (l.peak_value - base)) {
      l.onset = t;
      break;
    }
  return l;
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
  // auto: the CUDA device when there is one and the scheduler runs this graph there
  // (cuda_unsupported: every f32, f64 and bf16 graph does), else the CPU; a CUDA run that fails
  // is redone on the CPU with a warning (the wall time then includes the failed attempt). cuda: the
  // device or an error (the Context names a missing device or a build without CUDA).
  const bool tf32 = cfg.get_string("simulation.precision") == "tf32";
  // bf16: the run's dtype (engine/dynamics/scheduler.h); the stimulus is rounded to it once, here.
  const bool bf16 = cfg.get_string("simulation.precision") == "bf16";
  if (bf16) input = input.to_dtype(DType::BF16);
  if (tf32 && dev == "cpu")
    cfg.fail("simulation.precision", "tf32 needs a CUDA device (simulation.device = 'cpu')");
  bool on_cuda = dev == "cuda";
  if (dev == "auto" && cuda_device_count() > 0) {
    const std::string why = cuda_unsupported(g, input.dtype());
    on_cuda = why.empty();
    if (!on_cuda) device_note = concat("cpu (auto: ", why, ")");
  }
  if (on_cuda) {
    co.device = Device::Cuda;
    co.precision = tf32 ? Precision::TF32 : Precision::FP32;
    const auto gpus = cuda_devices();
    device_note = gpus.empty() ? "cuda:0" : concat("cuda:0 (", gpus.front().name, ")");
  }
  const RunOptions ro = models::run_options(cfg);
  const auto t0 = std::chrono::steady_clock::now();
  bool cpu_fallback = false;
  auto simulate = [&](const ContextOptions& o) {
    Context ctx(o);
    Scheduler sched(ctx, g, models::solver_spec(cfg));
    RunOptions r = ro;
    // auto: simulation.cuda_graph applies where the run is on the device.
    if (dev == "auto" && (!on_cuda || cpu_fallback)) r.cuda_graph = false;
    return sched.run(input, r);
  };
  Recording rec;
  try {
    rec = simulate(co);
  } catch (const Error& e) {
    // Only the device's own failures (CUDA, cuDNN, cuBLAS: internal errors); bad input fails
    // the same way on either device.
    if (dev != "auto" || !on_cuda || e.code() != ExitCode::Software) throw;
    std::cerr << "dynsim: warning: the run on the CUDA device failed (" << e.what()
              << "); running on the CPU\n";
    co.device = Device::Cpu;
    co.precision = Precision::FP32;
    device_note = concat("cpu (auto: the CUDA run failed: ", e.what(), ")");
    cpu_fallback = true;
    rec = simulate(co);
  }
  // Where the stimulus starts (the earliest per-sample onset).
  int stim_onset = int(cfg.get_int("stimulus.onset"));
  for (double o : cfg.get_doubles("stimulus.onsets")) stim_onset = std::min(stim_onset, int(o));
  std::vector<Latency> latencies;
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
    summary["precision"] = bf16 ? "bf16" : precision_name(co.precision);
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
    const double dt = cfg.get_double("dynamics.dt");
    summary["stimulus_onset_step"] = stim_onset;
    summary["dt_ms"] = dt;
    Tensor present = Tensor::zeros(Shape{int64_t(g.areas.size()), rec.steps}, DType::I32);
    for (size_t ai = 0; ai < g.areas.size(); ++ai) {
      const Area& ar = g.areas[ai];
      for (int t = 0; t < rec.steps; ++t)
        present.set(int64_t(ai) * rec.steps + t, rec.present[ai][size_t(t)]);
      nlohmann::json aj = {{"name", ar.name}, {"shape", {ar.channels, ar.height, ar.width}}};
      if (ro.record != RecordMode::None) {
        const Latency l = latency(batch_trace(rec, ai, ro.record), stim_onset);
        aj["onset_step"] = l.onset;
        aj["peak_step"] = l.peak;
        aj["onset_ms"] = l.onset < 0 ? nlohmann::json() : nlohmann::json((l.onset - stim_onset) * dt);
        aj["peak_ms"] = l.peak < 0 ? nlohmann::json() : nlohmann::json((l.peak - stim_onset) * dt);
        aj["peak_mean_abs_r"] = l.peak_value;
        latencies.push_back(l);
      }
      if (ro.record == RecordMode::Layer) {
        arrays.emplace_back("response_avg/" + ar.name, rec.mean_abs[ai]);
        arrays.emplace_back("response_std/" + ar.name, rec.std_abs[ai]);
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
    const double dt = cfg.get_double("dynamics.dt");
    std::cout << "  stimulus from step " << stim_onset << "; latencies in ms after its onset:\n";
    for (size_t ai = 0; ai < g.areas.size(); ++ai) {
      std::cout << "  " << g.areas[ai].name << " (" << g.areas[ai].channels << "x"
                << g.areas[ai].height << "x" << g.areas[ai].width << ")";
      if (ai < latencies.size()) {
        const Latency& l = latencies[ai];
        if (l.onset < 0)
          std::cout << ": no response to the stimulus";
        else
          std::cout << ": onset " << (l.onset - stim_onset) * dt << " ms, peak "
                    << (l.peak - stim_onset) * dt << " ms (mean |r| " << l.peak_value << ")";
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
  if (!a.train) check_format(cfg);
  Graph g = models::build_graph(cfg);
  std::cout << (a.config.empty() ? std::string("(built-in defaults)") : a.config) << ": valid\n"
            << g.summary() << "parameters: " << g.params.count(true) << " trainable, "
            << g.params.count(false) << " in all\n";
  for (const std::string& w : g.warnings) std::cout << "warning: " << w << "\n";
  return 0;
}

}  // namespace dynsim::cli
