// Solvers for tau dx/dt = -x + u, one area at a time.
// Frozen-drive solvers take one drive evaluation per step and advance each element:
//   euler (DynVision's rule, the default), rk4 (DynVision's frozen-drive RK4, first step Euler),
//   exp (exact for a drive held over the step), or a user's FrozenSolver.
// Staged solvers are explicit Runge-Kutta methods given by a Butcher tableau (heun, midpoint,
// rk4-classic, or one from the config): the scheduler re-evaluates the whole network's drive at
// every stage, reading delayed states at fractional steps by cubic Hermite interpolation.
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
  int stages() const { return int(b.size()); }
  // heun | midpoint | rk4-classic (also "euler-staged": forward Euler on the whole network).
  static ButcherTableau named(const std::string& name);
  // Explicit, consistent (sum b = 1, c_i = sum_j a_ij, c_0 = 0, 0 <= c <= 1); ConfigError.
  void validate() const;
};

struct SolverSpec {
  std::string name = "euler";  // euler | rk4 | exp | heun | midpoint | rk4-classic | tableau
  ButcherTableau tableau;      // name == "tableau": a user tableau
  std::shared_ptr<FrozenSolver> custom;  // set: used instead of `name`
  SolverSpec() = default;
  SolverSpec(std::string n) : name(std::move(n)) {}  // NOLINT: "euler" converts implicitly
  bool staged() const;
  ButcherTableau resolved_tableau() const;  // staged solvers only
};

}  // namespace dynsim
