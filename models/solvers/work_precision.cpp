// Work-precision runs on the analytic cases (models/solvers/work_precision.h).
#include "models/solvers/work_precision.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <sstream>
#include <thread>

#include "engine/core/errors.h"
#include "engine/dynamics/scheduler.h"
#include "models/solvers/scalar_graph.h"

namespace dynsim::models {
namespace {

// A from the input (weight 1); B from A (weight w, feedforward delay D) in the chain cases.
Graph case_graph(const WorkPrecisionOptions& o, double dt) {
  return scalar_graph(dt, o.tau, o.case_name != "leak", o.w, 0, 0,
                      o.case_name == "delayed-leak" ? o.delay : 0.0);
}

// The exact rates of the case at time s (ms since the start from rest).
std::vector<double> exact(const WorkPrecisionOptions& o, double s) {
  const double w = double(float(o.w));  // the weight as the f32 parameter holds it
  auto a = [&](double x) { return x <= 0 ? 0.0 : o.u * (1 - std::exp(-x / o.tau)); };
  auto b = [&](double x) {
    if (x <= 0) return 0.0;
    const double e = std::exp(-x / o.tau);
    return w * o.u * (1 - e - (x / o.tau) * e);
  };
  if (o.case_name == "leak") return {a(s)};
  if (o.case_name == "linear-chain") return {a(s), b(s)};
  return {a(s), b(s - o.delay)};
}

int expected_order(const std::string& s) {
  if (s == "heun" || s == "midpoint") return 2;
  if (s == "bs32") return 3;
  if (s == "rk4-classic") return 4;
  if (s == "dopri5") return 5;
  return 1;  // euler, euler-staged, and the frozen-drive rk4 / exp on a network
}

WorkPrecisionRow run_one(const WorkPrecisionOptions& o, const SolverSpec& spec, double dt,
                         double coarse_dt) {
  const int k = int(std::lround(coarse_dt / dt));
  const int coarse_steps = int(std::lround(o.duration / coarse_dt));
  const int T = coarse_steps * k;
  Graph g = case_graph(o, dt);
  Context ctx;
  Scheduler sched(ctx, g, spec);
  Tensor x = Tensor::empty(Shape{1, T, 1, 1, 1}, DType::F64);
  x.fill(o.u);
  RunOptions ro;
  ro.record = RecordMode::Full;
  const auto t0 = std::chrono::steady_clock::now();
  const Recording rec = sched.run(x, ro);
  WorkPrecisionRow row;
  row.wall_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  row.solver = spec.name;
  row.mode = spec.is_adaptive() ? "adaptive" : "fixed";
  row.dt = dt;
  row.rtol = spec.is_adaptive() ? spec.control.rtol : 0.0;
  double se = 0, sr = 0;
  for (int c = 0; c < coarse_steps; ++c) {
    const int t = (c + 1) * k - 1;
    const std::vector<double> ex = exact(o, (t + 1) * dt);
    for (size_t a = 0; a < ex.size(); ++a) {
      const double d = rec.rates[a].item(t) - ex[a];
      row.max_abs = std::max(row.max_abs, std::abs(d));
      se += d * d;
      sr += ex[a] * ex[a];
    }
  }
  row.rel_l2 = sr > 0 ? std::sqrt(se / sr) : std::sqrt(se);
  row.operator_calls = sched.operator_calls();
  row.flops = sched.operator_flops();
  const AdaptiveStats st = sched.adaptive_stats();
  if (spec.is_adaptive()) {
    row.evaluations = st.evaluations;
    row.accepted = st.accepted;
    row.rejected = st.rejected;
  } else {
    const int stages = spec.staged() ? spec.resolved_tableau().stages() : 1;
    row.evaluations = int64_t(T) * stages;
    row.accepted = T;
  }
  return row;
}

std::string cpu_name() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("model name", 0) == 0) {
      const size_t c = line.find(':');
      return c == std::string::npos ? line : line.substr(c + 2);
    }
  return "unknown CPU";
}

}  // namespace

WorkPrecisionResult work_precision(const WorkPrecisionOptions& o) {
  if (o.case_name != "leak" && o.case_name != "linear-chain" && o.case_name != "delayed-leak")
    throw ConfigError(concat("--case: unknown case '", o.case_name,
                             "' (leak, linear-chain, delayed-leak)"));
  if (o.solvers.empty()) throw ConfigError("--solvers: no solver given");
  if (o.dts.empty()) throw ConfigError("--dt: no step given");
  for (double dt : o.dts)
    if (!(dt > 0)) throw ConfigError(concat("--dt: ", dt, " is not a positive step in ms"));
  for (double r : o.rtols)
    if (!(r > 0)) throw ConfigError(concat("--rtol: ", r, " is not a positive tolerance"));
  const double coarse = *std::max_element(o.dts.begin(), o.dts.end());
  for (double dt : o.dts) {
    const double k = coarse / dt;
    if (std::abs(k - std::round(k)) > 1e-9)
      throw ConfigError(concat("--dt: ", dt, " ms does not divide the largest step ", coarse,
                               " ms (the outputs are compared on its grid)"));
    if (o.case_name == "delayed-leak") {
      const double d = o.delay / dt;
      if (std::abs(d - std::round(d)) > 1e-9)
        throw ConfigError(concat("--dt: the delay ", o.delay, " ms is not a whole number of ",
                                 dt, " ms steps"));
    }
  }
  const double steps = o.duration / coarse;
  if (std::abs(steps - std::round(steps)) > 1e-9 || steps < 1)
    throw ConfigError(concat("the duration ", o.duration, " ms is not a whole number of ",
                             coarse, " ms steps"));
  WorkPrecisionResult res;
  for (const std::string& name : o.solvers) {
    SolverSpec probe(name);
    try {
      if (probe.staged()) probe.resolved_tableau();
      else builtin_frozen_solver(name);
    } catch (const ConfigError& e) {
      throw ConfigError(concat("--solvers: ", e.what()));
    }
    std::vector<double> ldt, lerr;
    const bool embedded = probe.is_adaptive();
    for (double dt : o.dts) {  // fixed steps (embedded pairs with their b weights)
      SolverSpec s(name);
      s.adaptive = false;
      res.rows.push_back(run_one(o, s, dt, coarse));
      const double e = res.rows.back().max_abs;
      if (e > 1e-13) {
        ldt.push_back(std::log(dt));
        lerr.push_back(std::log(e));
      }
    }
    if (embedded)
      for (double r : o.rtols) {
        SolverSpec s(name);
        s.control.rtol = r;
        s.control.atol = r * 1e-3;
        res.rows.push_back(run_one(o, s, coarse, coarse));
      }
    WorkPrecisionResult::Order ord;
    ord.solver = name;
    // A delayed read between step ends is a cubic Hermite interpolation (4th order): it caps
    // the order of a method on a case with delays at 4.
    ord.expected = o.case_name == "delayed-leak" ? std::min(4, expected_order(name))
                                                 : expected_order(name);
    const size_t n = ldt.size();
    if (n >= 2) {
      double mx = 0, my = 0;
      for (size_t i = 0; i < n; ++i) {
        mx += ldt[i] / double(n);
        my += lerr[i] / double(n);
      }
      double sxy = 0, sxx = 0;
      for (size_t i = 0; i < n; ++i) {
        sxy += (ldt[i] - mx) * (lerr[i] - my);
        sxx += (ldt[i] - mx) * (ldt[i] - mx);
      }
      ord.observed = sxx > 0 ? sxy / sxx : 0;
    }
    res.orders.push_back(ord);
  }
  return res;
}

std::string work_precision_csv(const WorkPrecisionResult& r) {
  std::ostringstream s;
  s.precision(10);
  s << "solver,mode,dt_ms,rtol,max_abs_error,rel_l2_error,wall_seconds,drive_evaluations,"
       "operator_calls,flops,accepted_steps,rejected_steps\n";
  for (const WorkPrecisionRow& w : r.rows)
    s << w.solver << ',' << w.mode << ',' << w.dt << ',' << w.rtol << ',' << w.max_abs << ','
      << w.rel_l2 << ',' << w.wall_seconds << ',' << w.evaluations << ',' << w.operator_calls
      << ',' << w.flops << ',' << w.accepted << ',' << w.rejected << '\n';
  return s.str();
}

nlohmann::json work_precision_json(const WorkPrecisionOptions& o, const WorkPrecisionResult& r) {
  nlohmann::json j;
  j["case"] = o.case_name;
  j["duration_ms"] = o.duration;
  j["tau_ms"] = o.tau;
  j["input"] = o.u;
  if (o.case_name != "leak") j["weight"] = o.w;
  if (o.case_name == "delayed-leak") j["delay_ms"] = o.delay;
  j["reference"] = "closed form";
  j["machine"] = {{"cpu", cpu_name()}, {"threads", std::thread::hardware_concurrency()}};
  j["device"] = "cpu";
  j["precision"] = "f64";
  for (const WorkPrecisionRow& w : r.rows)
    j["rows"].push_back({{"solver", w.solver},
                         {"mode", w.mode},
                         {"dt_ms", w.dt},
                         {"rtol", w.rtol},
                         {"max_abs_error", w.max_abs},
                         {"rel_l2_error", w.rel_l2},
                         {"wall_seconds", w.wall_seconds},
                         {"drive_evaluations", w.evaluations},
                         {"operator_calls", w.operator_calls},
                         {"flops", w.flops},
                         {"accepted_steps", w.accepted},
                         {"rejected_steps", w.rejected}});
  for (const auto& ord : r.orders)
    j["orders"].push_back(
        {{"solver", ord.solver}, {"observed", ord.observed}, {"expected", ord.expected}});
  return j;
}

}  // namespace dynsim::models
