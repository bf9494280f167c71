// Built-in solvers and Butcher tableaus (engine/dynamics/solver.h).
#include "engine/dynamics/solver.h"

#include <cmath>

#include "kernels/dispatch.h"

namespace dynsim {
namespace {

class LeakSolver : public FrozenSolver {
 public:
  LeakSolver(std::string name, LeakRule rule) : name_(std::move(name)), rule_(rule) {}
  std::string name() const override { return name_; }
  void step(Context& ctx, const Tensor& u, const Tensor& h, const Tensor& tau, double dt,
            const Tensor& x) override {
    ops::leak_forward(ctx, LeakParams{rule_, dt}, u, h, tau, x);
  }

 private:
  std::string name_;
  LeakRule rule_;
};

}  // namespace

std::shared_ptr<FrozenSolver> builtin_frozen_solver(const std::string& name) {
  if (name == "euler") return std::make_shared<LeakSolver>(name, LeakRule::Euler);
  if (name == "rk4") return std::make_shared<LeakSolver>(name, LeakRule::Rk4Frozen);
  if (name == "exp") return std::make_shared<LeakSolver>(name, LeakRule::Exp);
  throw ConfigError(concat("unknown solver '", name,
                           "' (euler, rk4, exp, heun, midpoint, rk4-classic, tableau)"));
}

ButcherTableau ButcherTableau::named(const std::string& name) {
  ButcherTableau t;
  t.name = name;
  if (name == "euler-staged") {
    t.a = {{0}};
    t.b = {1};
    t.c = {0};
  } else if (name == "heun") {
    t.a = {{0, 0}, {1, 0}};
    t.b = {0.5, 0.5};
    t.c = {0, 1};
  } else if (name == "midpoint") {
    t.a = {{0, 0}, {0.5, 0}};
    t.b = {0, 1};
    t.c = {0, 0.5};
  } else if (name == "rk4-classic") {
    t.a = {{0, 0, 0, 0}, {0.5, 0, 0, 0}, {0, 0.5, 0, 0}, {0, 0, 1, 0}};
    t.b = {1.0 / 6, 1.0 / 3, 1.0 / 3, 1.0 / 6};
    t.c = {0, 0.5, 0.5, 1};
  } else {
    throw ConfigError(concat("unknown tableau '", name,
                             "' (euler-staged, heun, midpoint, rk4-classic)"));
  }
  return t;
}

void ButcherTableau::validate() const {
  const size_t s = b.size();
  if (s == 0) throw ConfigError("tableau: b is empty");
  if (c.size() != s || a.size() != s)
    throw ConfigError(concat("tableau: a has ", a.size(), " rows, b ", s, " and c ", c.size(),
                             " entries; they must agree"));
  double sb = 0;
  for (size_t i = 0; i < s; ++i) {
    if (a[i].size() != s) throw ConfigError(concat("tableau: row ", i, " of a has ", a[i].size(),
                                                   " entries, expected ", s));
    double row = 0;
    for (size_t j = 0; j < s; ++j) {
      if (j >= i && a[i][j] != 0)
        throw ConfigError(concat("tableau: a[", i, "][", j, "] = ", a[i][j],
                                 ": only explicit methods (strictly lower triangular a)"));
      row += a[i][j];
    }
    if (std::abs(row - c[i]) > 1e-12)
      throw ConfigError(concat("tableau: c[", i, "] = ", c[i], " but row ", i, " of a sums to ", row));
    if (c[i] < 0 || c[i] > 1) throw ConfigError(concat("tableau: c[", i, "] = ", c[i], " outside [0, 1]"));
    sb += b[i];
  }
  if (std::abs(sb - 1) > 1e-12) throw ConfigError(concat("tableau: the weights b sum to ", sb, ", not 1"));
}

bool SolverSpec::staged() const {
  return !custom && (name == "heun" || name == "midpoint" || name == "rk4-classic" ||
                     name == "euler-staged" || name == "tableau");
}

ButcherTableau SolverSpec::resolved_tableau() const {
  ButcherTableau t = name == "tableau" ? tableau : ButcherTableau::named(name);
  if (t.name.empty()) t.name = name;
  t.validate();
  return t;
}

}  // namespace dynsim
