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
                           "' (euler, rk4, exp, heun, midpoint, rk4-classic, tableau, bs32, ",
                           "dopri5, tableau-embedded)"));
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
  } else if (name == "bs32") {  // Bogacki & Shampine (1989), FSAL
    t.a = {{0, 0, 0, 0}, {0.5, 0, 0, 0}, {0, 0.75, 0, 0}, {2.0 / 9, 1.0 / 3, 4.0 / 9, 0}};
    t.b = {2.0 / 9, 1.0 / 3, 4.0 / 9, 0};
    t.bhat = {7.0 / 24, 1.0 / 4, 1.0 / 3, 1.0 / 8};
    t.c = {0, 0.5, 0.75, 1};
    t.order = 3;
    t.embedded_order = 2;
  } else if (name == "dopri5") {  // Dormand & Prince (1980), FSAL
    t.a = {{0, 0, 0, 0, 0, 0, 0},
           {1.0 / 5, 0, 0, 0, 0, 0, 0},
           {3.0 / 40, 9.0 / 40, 0, 0, 0, 0, 0},
           {44.0 / 45, -56.0 / 15, 32.0 / 9, 0, 0, 0, 0},
           {19372.0 / 6561, -25360.0 / 2187, 64448.0 / 6561, -212.0 / 729, 0, 0, 0},
           {9017.0 / 3168, -355.0 / 33, 46732.0 / 5247, 49.0 / 176, -5103.0 / 18656, 0, 0},
           {35.0 / 384, 0, 500.0 / 1113, 125.0 / 192, -2187.0 / 6784, 11.0 / 84, 0}};
    t.b = {35.0 / 384, 0, 500.0 / 1113, 125.0 / 192, -2187.0 / 6784, 11.0 / 84, 0};
    t.bhat = {5179.0 / 57600, 0, 7571.0 / 16695, 393.0 / 640, -92097.0 / 339200, 187.0 / 2100,
              1.0 / 40};
    t.c = {0, 0.2, 0.3, 0.8, 8.0 / 9, 1, 1};
    t.order = 5;
    t.embedded_order = 4;
  } else {
    throw ConfigError(concat("unknown tableau '", name,
                             "' (euler-staged, heun, midpoint, rk4-classic, bs32, dopri5)"));
  }
  return t;
}

bool ButcherTableau::fsal() const {
  const size_t s = b.size();
  if (s < 2 || std::abs(c[s - 1] - 1) > 1e-15) return false;
  for (size_t j = 0; j < s; ++j)
    if (std::abs(a[s - 1][j] - b[j]) > 1e-15) return false;
  return true;
}

void AdaptiveOptions::validate() const {
  auto bad = [](const char* key, double v, const char* rule) {
    throw ConfigError(concat("dynamics.", key, " = ", v, ": must be ", rule));
  };
  if (!(rtol > 0) || !std::isfinite(rtol)) bad("rtol", rtol, "> 0");
  if (!(atol >= 0) || !std::isfinite(atol)) bad("atol", atol, ">= 0");
  if (!(dt_max >= 0) || !std::isfinite(dt_max)) bad("dt_max", dt_max, "> 0 (or 0: dt)");
  if (!(dt_min >= 0) || !std::isfinite(dt_min)) bad("dt_min", dt_min, ">= 0");
  if (dt_max > 0 && dt_min > dt_max) bad("dt_min", dt_min, "<= dynamics.dt_max");
  if (!(safety > 0 && safety <= 1)) bad("safety", safety, "in (0, 1]");
  if (max_rejections < 1) bad("max_rejections", max_rejections, ">= 1");
  if (max_steps < 1) bad("max_steps", double(max_steps), ">= 1");
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
  if (!bhat.empty()) {
    if (bhat.size() != s)
      throw ConfigError(concat("tableau: bhat has ", bhat.size(), " entries, b ", s));
    double sh = 0, diff = 0;
    for (size_t i = 0; i < s; ++i) {
      sh += bhat[i];
      diff += std::abs(bhat[i] - b[i]);
    }
    if (std::abs(sh - 1) > 1e-12)
      throw ConfigError(concat("tableau: the embedded weights bhat sum to ", sh, ", not 1"));
    if (diff == 0) throw ConfigError("tableau: bhat equals b, so it estimates no error");
  }
}

bool SolverSpec::staged() const {
  return !custom && (name == "heun" || name == "midpoint" || name == "rk4-classic" ||
                     name == "euler-staged" || name == "tableau" || name == "bs32" ||
                     name == "dopri5" || name == "tableau-embedded");
}

bool SolverSpec::is_adaptive() const {
  return adaptive && !custom && (name == "bs32" || name == "dopri5" || name == "tableau-embedded");
}

ButcherTableau SolverSpec::resolved_tableau() const {
  const bool user = name == "tableau" || name == "tableau-embedded";
  ButcherTableau t = user ? tableau : ButcherTableau::named(name);
  if (name == "tableau-embedded" && t.bhat.empty())
    throw ConfigError("tableau-embedded: the embedded weights bhat are missing");
  if (t.name.empty()) t.name = name;
  t.validate();
  if (is_adaptive()) control.validate();
  return t;
}

}  // namespace dynsim
