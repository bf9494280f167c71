// One simulation and its outputs (models/simulate/simulate.h).
#include "models/simulate/simulate.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>

#include "engine/core/device.h"
#include "engine/io/hdf5_io.h"
#include "engine/io/npy.h"

namespace dynsim::models {
namespace fs = std::filesystem;

namespace {

void write_text(const fs::path& p, const std::string& text) {
  std::ofstream f(p);
  f << text;
  if (!f) throw IoError(concat(p.string(), ": write failed"));
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

void check_format(const Config& cfg) {
  if (cfg.get_string("simulation.format") == "hdf5" && !hdf5_available())
    cfg.fail("simulation.format",
             "'hdf5', but this build of dynsim has no HDF5 support (install libhdf5-dev, then "
             "reconfigure and rebuild; or use 'npy')");
}

int stimulus_onset(const Config& cfg) {
  int onset = int(cfg.get_int("stimulus.onset"));
  for (double o : cfg.get_doubles("stimulus.onsets")) onset = std::min(onset, int(o));
  return onset;
}

SimResult simulate(const Config& cfg, Graph& g, Tensor input) {
  SimResult res;
  ContextOptions co;
  co.seed = uint64_t(cfg.get_int("model.seed"));
  co.threads = int(cfg.get_int("simulation.threads"));
  const std::string dev = cfg.get_string("simulation.device");
  res.device_note = "cpu";
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
  const SolverSpec spec = solver_spec(cfg);
  if (spec.is_adaptive() && bf16)
    cfg.fail("dynamics.solver", concat("the adaptive solver ", spec.name, " runs in f32 or f64, "
                                       "not bf16 (simulation.precision); or set "
                                       "dynamics.adaptive = false"));
  if (spec.is_adaptive() && dev == "cuda")
    cfg.fail("dynamics.solver", concat("the adaptive solver ", spec.name, " runs on the CPU for "
                                       "now (simulation.device = 'cuda'); or set "
                                       "dynamics.adaptive = false"));
  if (dev == "auto" && cuda_device_count() > 0) {
    std::string why = cuda_unsupported(g, input.dtype());
    if (why.empty() && spec.is_adaptive())
      why = concat("the adaptive solver ", spec.name, " runs on the CPU");
    on_cuda = why.empty();
    if (!on_cuda) res.device_note = concat("cpu (auto: ", why, ")");
  }
  if (on_cuda) {
    co.device = Device::Cuda;
    co.precision = tf32 ? Precision::TF32 : Precision::FP32;
    const auto gpus = cuda_devices();
    res.device_note = gpus.empty() ? "cuda:0" : concat("cuda:0 (", gpus.front().name, ")");
  }
  res.options = run_options(cfg);
  res.batch = input.dim(0);
  const auto t0 = std::chrono::steady_clock::now();
  bool cpu_fallback = false;
  auto run = [&](const ContextOptions& o) {
    Context ctx(o);
    Scheduler sched(ctx, g, spec);
    RunOptions r = res.options;
    // auto: simulation.cuda_graph applies where the run is on the device.
    if (dev == "auto" && (!on_cuda || cpu_fallback)) r.cuda_graph = false;
    Recording rec = sched.run(input, r);
    res.adaptive = sched.adaptive_stats();
    return rec;
  };
  try {
    res.rec = run(co);
  } catch (const Error& e) {
    // Only the device's own failures (CUDA, cuDNN, cuBLAS: internal errors); bad input fails
    // the same way on either device.
    if (dev != "auto" || !on_cuda || e.code() != ExitCode::Software) throw;
    std::cerr << "dynsim: warning: the run on the CUDA device failed (" << e.what()
              << "); running on the CPU\n";
    co.device = Device::Cpu;
    co.precision = Precision::FP32;
    res.device_note = concat("cpu (auto: the CUDA run failed: ", e.what(), ")");
    cpu_fallback = true;
    res.rec = run(co);
  }
  res.precision = bf16 ? "bf16" : precision_name(co.precision);
  res.wall_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return res;
}

Recording slice_recording(const Recording& rec, int64_t b0, int64_t b1) {
  Recording r;
  r.steps = rec.steps;
  r.areas = rec.areas;
  r.present = rec.present;
  auto cut = [&](const std::vector<Tensor>& v) {
    std::vector<Tensor> out;
    for (const Tensor& t : v) out.push_back(t.defined() ? t.slice(b0, b1) : t);
    return out;
  };
  r.rates = cut(rec.rates);
  r.mean_abs = cut(rec.mean_abs);
  r.std_abs = cut(rec.std_abs);
  if (rec.logits.defined()) r.logits = rec.logits.slice(b0, b1);
  return r;
}

nlohmann::json write_outputs(const Config& cfg, const Graph& g, const SimResult& r,
                             const std::string& dir_s, bool with_timing) {
  const fs::path dir(dir_s);
  const Recording& rec = r.rec;
  const RunOptions& ro = r.options;
  const std::string format = cfg.get_string("simulation.format");
  const int stim_onset = stimulus_onset(cfg);
  nlohmann::json summary;
  summary["model"] = cfg.get_string("model.preset");
  summary["device"] = r.device_note;
  summary["precision"] = r.precision;
  summary["solver"] = cfg.get_string("dynamics.solver");
  summary["batch"] = r.batch;
  summary["steps"] = rec.steps;
  summary["idle_steps"] = ro.idle_steps;
  if (with_timing) {
    summary["wall_seconds"] = r.wall_seconds;
    summary["steps_per_second"] = double(rec.steps + ro.idle_steps) / r.wall_seconds;
  }
  if (r.adaptive.accepted > 0) {
    const AdaptiveStats& a = r.adaptive;
    summary["adaptive"] = {{"accepted_steps", a.accepted},     {"rejected_steps", a.rejected},
                           {"drive_evaluations", a.evaluations}, {"h_min_ms", a.h_min},
                           {"h_median_ms", a.h_median},          {"h_max_ms", a.h_max},
                           {"rtol", cfg.get_double("dynamics.rtol")},
                           {"atol", cfg.get_double("dynamics.atol")}};
  }
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
    write_hdf5((dir / "responses.h5").string(), arrays, attributes);
  } else {
    for (const auto& [name, t] : arrays) {
      std::string file = name + ".npy";
      std::replace(file.begin(), file.end(), '/', '_');
      save_npy((dir / file).string(), t);
    }
  }
  cfg.write_json((dir / "config.json").string());
  cfg.write_toml((dir / "config.toml").string());
  write_text(dir / "summary.json", summary.dump(2) + "\n");
  return summary;
}

}  // namespace dynsim::models
