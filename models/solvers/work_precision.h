// Work-precision measurements of the solvers on cases with a closed-form solution
// (`dynsim solvers --case ...`): for each solver and step (fixed-step) or tolerance (adaptive),
// the error of every area's rate at every output time against the exact solution, and the cost
// (wall time, network drive evaluations, operator calls, their FLOPs), plus the observed order
// per solver.
//
// Cases (scalar areas, f64, the network from rest at step -1, input u from step 0):
//   leak          tau dA/dt = -A + u:                   A(s) = u (1 - e^(-s/tau))
//   linear-chain  A as above, tau dB/dt = -B + w A:      B(s) = w u (1 - e^(-s/tau) - s/tau e^(-s/tau))
//   delayed-leak  the chain with a feedforward delay D: B(s) = the chain's B at s - D (0 before)
// s is the time since the start (step t ends at s = (t + 1) dt). Outputs are compared on the
// coarsest grid of the ladder (every output time of the largest dt).
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace dynsim::models {

struct WorkPrecisionOptions {
  std::string case_name = "leak";  // leak | linear-chain | delayed-leak
  std::vector<std::string> solvers{"euler-staged", "heun", "rk4-classic", "bs32", "dopri5"};
  std::vector<double> dts{0.5, 0.25, 0.125, 0.0625};  // ms: the fixed-step ladder
  std::vector<double> rtols{1e-3, 1e-5, 1e-7, 1e-9};  // the adaptive ladder (atol = rtol 1e-3)
  double duration = 4.0;  // ms simulated
  double tau = 1.0, u = 1.0, w = 1.5, delay = 0.5;  // ms; the delay must be a multiple of every dt
};

struct WorkPrecisionRow {
  std::string solver, mode;  // mode: fixed | adaptive
  double dt = 0, rtol = 0;   // ms; rtol 0 in fixed-step rows
  double max_abs = 0, rel_l2 = 0;  // over every area and output time
  double wall_seconds = 0;
  int64_t evaluations = 0, operator_calls = 0, accepted = 0, rejected = 0;
  double flops = 0;  // the operators' FLOPs (Scheduler::operator_flops)
};

struct WorkPrecisionResult {
  std::vector<WorkPrecisionRow> rows;
  // Per solver: the slope of log(error) against log(dt) over its fixed-step rows (least
  // squares over the rows whose error is above 1e-13, where rounding does not dominate), and
  // the theoretical order (on delayed-leak at most 4: delayed reads between step ends are
  // cubic Hermite interpolations of the history).
  struct Order {
    std::string solver;
    double observed = 0;
    int expected = 0;
  };
  std::vector<Order> orders;
};

// ConfigError naming the option for an unknown case or solver, an empty ladder, a dt that is not
// positive, or a delay that is not a whole number of every dt.
WorkPrecisionResult work_precision(const WorkPrecisionOptions& o);

// solvers.csv (one row per run) and solvers.json (options, rows, orders, machine).
std::string work_precision_csv(const WorkPrecisionResult& r);
nlohmann::json work_precision_json(const WorkPrecisionOptions& o, const WorkPrecisionResult& r);

}  // namespace dynsim::models
