// Solvers for tau dx/dt = -x + u, one area at a time.
// Frozen-drive solvers take one drive evaluation per step and advance each element:
//   euler (DynVision's rule, the default), rk4 (DynVision's frozen-drive RK4, first step Euler),
//   exp (exact for a drive held over the step), or a user's FrozenSolver.
// Staged solvers are explicit Runge-Kutta methods given by a Butcher tableau (heun, midpoint,
// rk4-classic, or one from the config): the scheduler re-evaluates the whole network's drive at
// every stage, reading delayed states at fractional steps by cubic Hermite interpolation.
// Embedded pairs (bs32, dopri5, or one from the config) carry a second weight row bhat: run
// fixed-step they are staged solvers like the others; run adaptive (AdaptiveOptions) the
// scheduler controls the step size from the difference of the two solutions
// (engine/dynamics/scheduler_adaptive.cpp).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "engine/core/context.h"

namespace dynsim {

// Implement this to plug in a custom frozen-drive rule: write x from the drive u, the previous
// state h (undefined when the area has none yet) and tau ([1] or [B]), for a step of dt ms.
class FrozenSolver {
 public:
  virtual ~FrozenSolver() = default;
  virtual std::string name() const = 0;
  virtual void step(Context& ctx, const Tensor& u, const Tensor& h, const Tensor& tau, double dt,
                    const Tensor& x) = 0;
};

// euler | rk4 | exp, on the leak kernels (kernels/leak.h).
std::shared_ptr<FrozenSolver> builtin_frozen_solver(const std::string& name);

struct ButcherTableau {
  std::string name;
  std::vector<std::vector<double>> a;  // strictly lower triangular, s x s
  std::vector<double> b, c;            // s weights and nodes
  // Embedded pairs: the weights of the second solution (empty: none) and the orders of the
  // propagated (b) and embedded (bhat) solutions; 0 = not given.
  std::vector<double> bhat;
  int order = 0, embedded_order = 0;
  int stages() const { return int(b.size()); }
  bool embedded() const { return !bhat.empty(); }
  // First same as last: the last stage sits at c = 1 with a's last row equal to b, so its slope
  // is the next step's first (bs32, dopri5).
  bool fsal() const;
  // heun | midpoint | rk4-classic (also "euler-staged": forward Euler on the whole network);
  // the embedded pairs bs32 (Bogacki-Shampine 3(2)) and dopri5 (Dormand-Prince 5(4)).
  static ButcherTableau named(const std::string& name);
  // Explicit, consistent (sum b = 1, c_i = sum_j a_ij, c_0 = 0, 0 <= c <= 1; bhat, when given,
  // s weights summing to 1 and differing from b); ConfigError.
  void validate() const;
};

// Step-size control of an adaptive run (SolverSpec::adaptive). Times in ms.
//   err_a = sqrt(mean over area a's B*C*H*W elements of (e / (atol + rtol max(|r0|, |r1|)))^2)
//   err = max over areas of err_a   (one step size for the whole batch and network)
// e = the difference of the two solutions (pre-activation), r0 and r1 the rates before and
// after the step. err <= 1 accepts. The next step is h * clamp(safety err^(-0.7/k)
// err_prev^(0.4/k), 0.2, 5) with k = 1 + min(order, embedded order) (a PI controller;
// after a rejection h * max(0.2, safety err^(-1/k)) and no growth on the next step).
struct AdaptiveOptions {
  double rtol = 1e-3, atol = 1e-6;
  double dt_max = 0;   // 0: the graph's dt (a step never crosses an output time)
  double dt_min = 0;   // 0: dt * 1e-9; a step that would go below it fails (Error)
  double safety = 0.9;
  int max_rejections = 50;   // in a row, before the run fails
  int64_t max_steps = 1000000;  // accepted + rejected, per run
  void validate() const;     // ConfigError naming the option
};

// What an adaptive run did (Scheduler::adaptive_stats; zero for fixed-step runs).
struct AdaptiveStats {
  int64_t accepted = 0, rejected = 0;
  int64_t evaluations = 0;  // network drive evaluations (stages, FSAL reuse not counted)
  double h_min = 0, h_median = 0, h_max = 0;  // accepted step sizes, ms
};

struct SolverSpec {
  // euler | rk4 | exp | heun | midpoint | rk4-classic | tableau | bs32 | dopri5 |
  // tableau-embedded
  std::string name = "euler";
  ButcherTableau tableau;      // name == "tableau" or "tableau-embedded": a user tableau
  // Embedded pairs only: control the step size (true, the default for bs32, dopri5 and
  // tableau-embedded) or take fixed steps of dt with the b weights (false).
  bool adaptive = true;
  AdaptiveOptions control;
  std::shared_ptr<FrozenSolver> custom;  // set: used instead of `name`
  SolverSpec() = default;
  SolverSpec(std::string n) : name(std::move(n)) {}  // NOLINT: "euler" converts implicitly
  bool staged() const;
  bool is_adaptive() const;                 // an embedded pair with adaptive on
  ButcherTableau resolved_tableau() const;  // staged solvers only
};

}  // namespace dynsim
