// The executors of scan runs (models/scan/scan_kinds.h): simulate (packed into one batch where
// the configs allow), train and retina.
#include <atomic>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <thread>

#include "engine/core/device.h"
#include "models/config/sim_config.h"
#include "models/scan/scan_kinds.h"
#include "models/retina/generator.h"
#include "models/retina/pipeline.h"
#include "models/simulate/simulate.h"
#include "models/train/trainer.h"

namespace dynsim::models {
namespace fs = std::filesystem;

namespace {

// f(0) .. f(n - 1) on up to hardware_concurrency threads; the first exception is rethrown.
void parallel_for(size_t n, const std::function<void(size_t)>& f, bool serial = false) {
  const size_t workers =
      serial ? 1 : std::min<size_t>(n, std::max(1u, std::thread::hardware_concurrency()));
  std::atomic<size_t> next{0};
  std::vector<std::exception_ptr> errors(n);
  auto work = [&] {
    for (size_t i; (i = next.fetch_add(1)) < n;) {
      try {
        f(i);
      } catch (...) {
        errors[i] = std::current_exception();
      }
    }
  };
  std::vector<std::thread> pool;
  for (size_t w = 1; w < workers; ++w) pool.emplace_back(work);
  work();
  for (std::thread& t : pool) t.join();
  for (const std::exception_ptr& e : errors)
    if (e) std::rethrow_exception(e);
}

Config run_config(const scan::Job& j, const ConfigSchema& schema) {
  return Config::parse(scan::config_toml(j.config), concat("scan run ", j.index, " (", j.run_id, ")"),
                       schema, {});
}

// The config without what the engine varies per sample in one batch.
// Adaptive solvers are not packed: their one step schedule per batch would couple the runs,
// so a packed run would not give the result it gives alone. Their key is the whole config.
std::string simulate_pack_key(const nlohmann::json& config) {
  if (config.contains("dynamics")) {
    const nlohmann::json& d = config["dynamics"];
    const std::string solver = d.value("solver", std::string("euler"));
    const bool embedded = solver == "bs32" || solver == "dopri5" || solver == "tableau-embedded";
    if (embedded && d.value("adaptive", true)) return "adaptive:" + scan::canonical(config);
  }
  nlohmann::json c = config;
  c.erase("stimulus");
  if (c.contains("simulation")) c["simulation"].erase("batch"), c["simulation"].erase("output");
  if (c.contains("dynamics")) c["dynamics"].erase("tau"), c["dynamics"].erase("tau_per_sample");
  if (c.contains("area") && c["area"].is_array())
    for (auto& a : c["area"]) a.erase("tau");
  return scan::canonical(c);
}

// Bytes one run needs while it runs, roughly: its samples' states, histories and stage buffers
// (64 copies of every area), what it records, and its stimulus.
int64_t run_bytes(const Config& cfg, const Graph& g, const Tensor& input) {
  const int64_t B = input.dim(0), T = input.dim(1);
  const RunOptions ro = run_options(cfg);
  int64_t per_sample = 0, recorded = 0;
  for (const Area& a : g.areas) {
    const int64_t n = a.channels * a.height * a.width;
    per_sample += 64 * n * 4;
    recorded += ro.record == RecordMode::Full ? T * n * 4 : ro.record == RecordMode::Layer ? T * 8 : 0;
  }
  return B * (per_sample + recorded) + int64_t(input.nbytes());
}

int64_t host_available_bytes() {
  std::ifstream f("/proc/meminfo");
  std::string key;
  int64_t kb = 0;
  std::string unit;
  while (f >> key >> kb >> unit)
    if (key == "MemAvailable:") return kb * 1024;
  return int64_t(4) << 30;
}

// Every parameter but the areas' tau parameters (DyRCNNx4/x8 hold tau as one) is the same.
bool params_equal(const Graph& a, const Graph& b) {
  const auto& ea = a.params.entries();
  const auto& eb = b.params.entries();
  if (ea.size() != eb.size()) return false;
  std::set<std::string> taus;
  for (const Area& ar : a.areas)
    if (!ar.tau_param.empty()) taus.insert(ar.tau_param);
  for (size_t i = 0; i < ea.size(); ++i) {
    const Tensor &x = ea[i].value, &y = eb[i].value;
    if (ea[i].name != eb[i].name || x.shape() != y.shape() || x.dtype() != y.dtype()) return false;
    if (!taus.count(ea[i].name) && std::memcmp(x.raw(), y.raw(), x.nbytes()) != 0) return false;
  }
  return true;
}

nlohmann::json simulate_row(const nlohmann::json& summary) {
  nlohmann::json row = {{"batch", summary.at("batch")}, {"steps", summary.at("steps")}};
  for (const auto& a : summary.at("areas")) {
    nlohmann::json r = nlohmann::json::object();
    for (const char* k : {"onset_ms", "peak_ms", "peak_mean_abs_r"})
      if (a.contains(k)) r[k] = a[k];
    row["areas"][a.at("name").get<std::string>()] = r;
  }
  return row;
}

std::vector<scan::JobResult> simulate_alone(const scan::Job& j) {
  const Config cfg = run_config(j, simulate_schema());
  check_format(cfg);
  Graph g = build_graph(cfg);
  const SimResult r = simulate(cfg, g, build_stimulus(cfg, g));
  scan::JobResult out;
  out.row = simulate_row(write_outputs(cfg, g, r, j.dir, false));
  return {out};
}

std::vector<scan::JobResult> simulate_group(const std::vector<scan::Job>& jobs) {
  if (jobs.size() == 1) return simulate_alone(jobs[0]);
  const size_t n = jobs.size();
  std::vector<Config> cfgs(n);
  std::vector<Graph> graphs(n);
  std::vector<Tensor> inputs(n);
  // Each run's config, graph and stimulus, on every core. The pack key leaves the runs' configs
  // equal but for the stimulus and the taus, so the first run's graph (its weights' init is most
  // of the cost) is copied and given each run's taus; with model.weights (a file may hold tau
  // parameters) every graph is built.
  parallel_for(n, [&](size_t r) {
    cfgs[r] = run_config(jobs[r], simulate_schema());
    check_format(cfgs[r]);
  });
  graphs[0] = build_graph(cfgs[0]);
  const bool copy = cfgs[0].get_string("model.weights").empty();
  parallel_for(n, [&](size_t r) {
    if (r > 0) {
      if (copy) {
        graphs[r] = graphs[0];
        apply_taus(graphs[r], cfgs[r]);
      } else {
        graphs[r] = build_graph(cfgs[r]);
      }
    }
    inputs[r] = build_stimulus(cfgs[r], graphs[r]);
  });
  bool packable = true;
  for (size_t r = 1; r < n; ++r) {
    const Tensor &in = inputs[r], &in0 = inputs[0];
    if (in.dtype() != in0.dtype() || in.rank() != in0.rank() || in.dim(1) != in0.dim(1) ||
        in.numel() / in.dim(0) != in0.numel() / in0.dim(0) || !params_equal(graphs[r], graphs[0]))
      packable = false;
  }
  std::vector<scan::JobResult> out;
  if (!packable) {  // same key, different weights or stimulus shapes: one at a time
    for (const scan::Job& j : jobs) out.push_back(simulate_alone(j).front());
    return out;
  }
  // The stimuli stacked along the batch; each area's tau per sample.
  int64_t B = 0;
  for (const Tensor& in : inputs) B += in.dim(0);
  Shape s = inputs[0].shape();
  s[0] = B;
  Tensor input = Tensor::empty(s, inputs[0].dtype());
  size_t at = 0;
  for (const Tensor& in : inputs) {
    std::memcpy(static_cast<char*>(input.raw()) + at, in.raw(), in.nbytes());
    at += in.nbytes();
  }
  // Each run's tau as its run alone reads it (engine/dynamics/scheduler.h, area_tau: a tau
  // parameter's value, through softplus where so parametrised, computed in double and rounded
  // once to the run's dtype, as the per-sample list is).
  ContextOptions host;
  Context ctx(host);
  Graph g = graphs[0];
  for (size_t a = 0; a < g.areas.size(); ++a) {
    std::vector<double> taus;
    for (size_t r = 0; r < jobs.size(); ++r) {
      const Area& ar = graphs[r].areas[a];
      const int64_t Br = inputs[r].dim(0);
      if (!ar.tau_per_sample.empty()) {
        taus.insert(taus.end(), ar.tau_per_sample.begin(), ar.tau_per_sample.end());
        continue;
      }
      const double tau = area_tau(ctx, graphs[r], ar, 1, DType::F64).item(0);
      taus.insert(taus.end(), size_t(Br), tau);
    }
    g.areas[a].tau_per_sample = taus;
  }
  const SimResult res = simulate(cfgs[0], g, input);
  std::vector<int64_t> first(n + 1, 0);
  for (size_t r = 0; r < n; ++r) first[r + 1] = first[r] + inputs[r].dim(0);
  out.resize(n);
  parallel_for(n, [&](size_t r) {
    SimResult one = res;
    one.batch = inputs[r].dim(0);
    one.rec = slice_recording(res.rec, first[r], first[r + 1]);
    out[r].row = simulate_row(write_outputs(cfgs[r], graphs[r], one, jobs[r].dir, false));
  }, cfgs[0].get_string("simulation.format") == "hdf5");  // libhdf5 is not thread-safe
  return out;
}

int64_t simulate_auto_pack(const nlohmann::json& config) {
  scan::Job j;
  j.config = config;
  const Config cfg = run_config(j, simulate_schema());
  const Graph g = build_graph(cfg);
  const Tensor input = build_stimulus(cfg, g);
  int64_t free_bytes = host_available_bytes();
  const std::string dev = cfg.get_string("simulation.device");
  if (dev != "cpu" && cuda_device_count() > 0) {
    size_t f = 0, total = 0;
    device_memory_info(0, &f, &total);
    free_bytes = int64_t(f);
  }
  const int64_t per_run = std::max<int64_t>(run_bytes(cfg, g, input), 1);
  return std::clamp<int64_t>(free_bytes / 2 / per_run, 1, 1024);
}

std::vector<scan::JobResult> train_run(const std::vector<scan::Job>& jobs,
                                       const std::atomic<int>* stop) {
  std::vector<scan::JobResult> out;
  for (const scan::Job& j : jobs) {
    nlohmann::json c = j.config;
    const fs::path out_dir = fs::path(j.dir) / "train";
    c["train"]["output"] = out_dir.string();
    scan::Job jj = j;
    jj.config = c;
    const Config cfg = run_config(jj, train_schema());
    TrainRun run;
    run.resume = fs::exists(out_dir / "events.jsonl");
    if (!run.resume) fs::remove_all(out_dir);  // a start killed before its first event
    run.quiet = true;
    run.stop = stop;
    std::ofstream log(fs::path(j.dir) / "train.log", std::ios::app);
    const int rc = train(cfg, run, log);
    scan::JobResult r;
    if (rc == int(ExitCode::Preempted)) {
      r.stopped = true;
    } else {
      std::ifstream f(out_dir / "summary.json");
      if (!f) throw IoError(concat((out_dir / "summary.json").string(), ": missing after training"));
      r.row = nlohmann::json::parse(f);
    }
    out.push_back(std::move(r));
  }
  return out;
}

// A retina identification run: the recording its config generates (seeded, so the same run
// gives the same cells), the fit (model/ under the run's folder), its metrics on the repeated
// test segment and its subunits scored against the ground truth.
std::vector<scan::JobResult> retina_run(const std::vector<scan::Job>& jobs) {
  std::vector<scan::JobResult> out;
  for (const scan::Job& j : jobs) {
    const Config cfg = run_config(j, retina::retina_schema());
    const retina::Recording rec = retina::generate(retina::generator_spec(cfg));
    std::ofstream log(fs::path(j.dir) / "fit.log");
    const retina::RetinaModel m = retina::fit_model(cfg, rec, &log);
    retina::save_model((fs::path(j.dir) / "model").string(), m, cfg, true);
    retina::RecoveryOptions ro;
    ro.cosine_threshold = cfg.get_double("score.cosine_threshold");
    scan::JobResult r;
    r.row = {{"evaluate", retina::evaluate_model(m, rec)}};
    try {
      r.row["score"] = retina::score_model(m, rec, ro);
    } catch (const DataError& e) {
      r.row["score"] = {{"unscored", e.what()}};  // e.g. a multi-layer deep_retina model
    }
    out.push_back(std::move(r));
  }
  return out;
}

}  // namespace

const scan::Executors& scan_executors() {
  static const scan::Executors e = [] {
    scan::Executors m;
    scan::Executor sim;
    sim.pack_key = simulate_pack_key;
    sim.auto_pack = simulate_auto_pack;
    sim.run = [](const std::vector<scan::Job>& jobs, const std::atomic<int>*) {
      return simulate_group(jobs);
    };
    m["simulate"] = sim;
    scan::Executor tr;
    tr.run = train_run;
    tr.resumable = true;
    m["train"] = tr;
    scan::Executor re;
    re.run = [](const std::vector<scan::Job>& jobs, const std::atomic<int>*) {
      return retina_run(jobs);
    };
    m["retina"] = re;
    return m;
  }();
  return e;
}

}  // namespace dynsim::models
