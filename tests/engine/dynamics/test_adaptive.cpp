// Embedded Runge-Kutta pairs (engine/dynamics/solver.h, scheduler_adaptive.cpp): the bs32 and
// dopri5 tableaus, their orders in fixed-step mode on a held-drive leak, adaptive runs meeting
// rtol against closed forms (one area, a zero-delay chain, a stimulus switched on and off),
// convergence on a delayed recurrence as rtol shrinks, the statistics, and the config keys.
#include <cmath>

#include "engine/dynamics/scheduler.h"
#include "models/config/sim_config.h"
#include "models/solvers/scalar_graph.h"
#include "tests/harness.h"

using namespace dynsim;
using namespace dynsim::test;
using dynsim::models::scalar_graph;

namespace {

SolverSpec adaptive_spec(const std::string& name, double rtol, double atol) {
  SolverSpec s(name);
  s.control.rtol = rtol;
  s.control.atol = atol;
  return s;
}

SolverSpec fixed_spec(const std::string& name) {
  SolverSpec s(name);
  s.adaptive = false;
  return s;
}

// Full recording of every area under input[t] (f64, batch 1).
std::vector<Tensor> rates(Graph g, const SolverSpec& spec, const std::vector<double>& input,
                          AdaptiveStats* stats = nullptr) {
  Context ctx;
  Scheduler s(ctx, g, spec);
  const int T = int(input.size());
  Tensor x = Tensor::empty(Shape{1, T, 1, 1, 1}, DType::F64);
  for (int t = 0; t < T; ++t) x.set(t, input[size_t(t)]);
  RunOptions ro;
  ro.record = RecordMode::Full;
  Recording r = s.run(x, ro);
  if (stats) *stats = s.adaptive_stats();
  return r.rates;
}

std::vector<double> held(int T, double u) { return std::vector<double>(size_t(T), u); }

}  // namespace

TEST_CASE("adaptive: bs32 and dopri5 tableaus are consistent embedded FSAL pairs") {
  for (std::string n : {"bs32", "dopri5"}) {
    ButcherTableau t = ButcherTableau::named(n);
    CHECK_NOTHROW(t.validate());
    CHECK(t.embedded());
    CHECK(t.fsal());
    double sb = 0;
    for (double v : t.bhat) sb += v;
    CHECK(sb == doctest::Approx(1).epsilon(1e-14));
  }
  CHECK_FALSE(ButcherTableau::named("rk4-classic").fsal());
  ButcherTableau bad = ButcherTableau::named("bs32");
  bad.bhat[0] += 0.1;
  CHECK_THROWS_WITH_AS(bad.validate(), doctest::Contains("bhat sum to"), ConfigError);
  CHECK(SolverSpec("dopri5").is_adaptive());
  CHECK_FALSE(fixed_spec("dopri5").is_adaptive());
  CHECK(fixed_spec("dopri5").staged());
}

TEST_CASE("adaptive: fixed-step bs32 is order 3 and dopri5 order 5 on a held-drive leak") {
  // tau dr/dt = -r + u from rest at step -1: r after n steps of 1/n ms = u (1 - e^(-1/tau)).
  const double tau = 0.5, u = 0.8, exact = u * (1 - std::exp(-1.0 / tau));
  auto err = [&](const std::string& solver, int n) {
    auto r = rates(scalar_graph(1.0 / n, tau, false, 0, 0, 0), fixed_spec(solver), held(n, u));
    return std::abs(r[0].item(n - 1) - exact);
  };
  const double r3 = err("bs32", 16) / err("bs32", 32);
  const double r5 = err("dopri5", 16) / err("dopri5", 32);
  MESSAGE("fixed step, error ratio dt vs dt/2: bs32 ", r3, " (8 in theory), dopri5 ", r5,
          " (32)");
  CHECK(r3 == doctest::Approx(8).epsilon(0.1));
  CHECK(r5 == doctest::Approx(32).epsilon(0.15));
}

TEST_CASE("adaptive: runs meet rtol on a held-drive leak at every recorded step") {
  const double tau = 2.0, u = 1.0, dt = 1.0;
  const int T = 10;
  for (std::string solver : {"bs32", "dopri5"}) {
    for (double rtol : {1e-4, 1e-6, 1e-8}) {
      AdaptiveStats st;
      auto r = rates(scalar_graph(dt, tau, false, 0, 0, 0), adaptive_spec(solver, rtol, 1e-12),
                     held(T, u), &st);
      double worst = 0;
      for (int t = 0; t < T; ++t) {
        const double exact = u * (1 - std::exp(-(t + 1) * dt / tau));
        worst = std::max(worst, std::abs(r[0].item(t) - exact) / exact);
      }
      MESSAGE(solver, " rtol ", rtol, ": max relative error ", worst, ", ", st.accepted,
              " accepted, ", st.rejected, " rejected, ", st.evaluations, " evaluations, h ",
              st.h_min, "..", st.h_max, " ms");
      CHECK_MESSAGE(worst < 10 * rtol, solver, " rtol ", rtol);
      CHECK(st.accepted >= T);
      CHECK(st.h_max <= dt + 1e-12);
      CHECK(st.h_min > 0);
      CHECK(st.h_median >= st.h_min);
      CHECK(st.h_median <= st.h_max);
      // FSAL: one first-stage evaluation at the start, then s - 1 per attempted step.
      const int S = ButcherTableau::named(solver).stages();
      CHECK(st.evaluations == 1 + (S - 1) * (st.accepted + st.rejected));
    }
  }
}

TEST_CASE("adaptive: a zero-delay chain and a stimulus switched on and off") {
  // A -> B with weight w, input u on steps [0, 8), 0 after: the closed form of the chain from
  // rest, restarted at the switch-off with the state there.
  const double tau = 1.5, u = 0.6, w = 1.5, dt = 0.5;
  const int T = 16, on = 8;
  std::vector<double> in(size_t(T), 0.0);
  for (int t = 0; t < on; ++t) in[size_t(t)] = u;
  auto exact = [&](int t, double* a, double* b) {
    // Step t ends at time (t + 1) dt; the input is u for time < on dt.
    const double s = (t + 1) * dt, T0 = on * dt;
    auto rise = [&](double x, double* ra, double* rb) {
      *ra = u * (1 - std::exp(-x / tau));
      *rb = w * u * (1 - std::exp(-x / tau) - (x / tau) * std::exp(-x / tau));
    };
    if (s <= T0) return rise(s, a, b);
    double a0, b0;
    rise(T0, &a0, &b0);
    const double x = s - T0, e = std::exp(-x / tau);
    *a = a0 * e;
    *b = (b0 + w * a0 * x / tau) * e;  // tau B' = -B + w A, A = a0 e^(-x/tau)
  };
  for (std::string solver : {"bs32", "dopri5"}) {
    const double rtol = 1e-7;
    AdaptiveStats st;
    auto r = rates(scalar_graph(dt, tau, true, w, 0, 0), adaptive_spec(solver, rtol, 1e-12), in,
                   &st);
    double worst = 0;
    for (int t = 0; t < T; ++t) {
      double a, b;
      exact(t, &a, &b);
      worst = std::max({worst, std::abs(r[0].item(t) - a) / std::max(a, 1e-3),
                        std::abs(r[1].item(t) - b) / std::max(b, 1e-3)});
    }
    MESSAGE(solver, " chain with switch-off: max relative error ", worst, " (rtol ", rtol, "), ",
            st.evaluations, " evaluations");
    CHECK_MESSAGE(worst < 10 * rtol, solver);
    // The slope at the switch is evaluated anew with the new frame: one evaluation more.
    const int S = ButcherTableau::named(solver).stages();
    CHECK(st.evaluations == 2 + (S - 1) * (st.accepted + st.rejected));
  }
}

TEST_CASE("adaptive: a delayed recurrence converges to the fine fixed-step reference") {
  // tau dA/dt = -A + u + w A(t - D): read from the dense history at fractional times.
  const double tau = 0.5, u = 1.0, w = 0.4, D = 0.25, T = 2.0;
  const int n = 8;  // dt = 0.25 ms: the delay is one step
  auto last = [&](const SolverSpec& s, int steps) {
    return rates(scalar_graph(T / steps, tau, false, 0, w, D), s, held(steps, u))[0].item(steps - 1);
  };
  const double ref = last(SolverSpec("rk4-classic"), 512);
  double prev = 1;
  for (std::string solver : {"bs32", "dopri5"})
    for (double rtol : {1e-3, 1e-5, 1e-7, 1e-9}) {
      // The same delay in steps as the reference: t_recurrence = D with dt = T / n.
      AdaptiveStats st;
      auto r = rates(scalar_graph(T / n, tau, false, 0, w, D), adaptive_spec(solver, rtol, 1e-13),
                     held(n, u), &st);
      const double e = std::abs(r[0].item(n - 1) - ref);
      MESSAGE(solver, " delayed recurrence, rtol ", rtol, ": error ", e, " (", st.accepted,
              " steps, ", st.rejected, " rejected)");
      CHECK_MESSAGE(e < 20 * rtol * ref + 1e-10, solver, " rtol ", rtol);
      if (rtol < 1e-3) CHECK(e <= prev * 1.01 + 1e-12);
      prev = rtol == 1e-9 ? 1 : e;
    }
  (void)last;
}

TEST_CASE("adaptive: a config pair, the fixed-step switch and bad keys naming the key") {
  const ConfigSchema& schema = models::simulate_schema();
  auto spec = [&](const std::string& toml) {
    return models::solver_spec(Config::parse("[dynamics]\n" + toml, "a.toml", schema));
  };
  // Heun-Euler 2(1) from the config.
  SolverSpec he = spec(
      "solver = \"tableau-embedded\"\ntableau_a = [0, 0, 1, 0]\ntableau_b = [0.5, 0.5]\n"
      "tableau_c = [0, 1]\ntableau_bhat = [1, 0]\ntableau_order = 2\n"
      "tableau_embedded_order = 1\nrtol = 1e-6\natol = 1e-9\n");
  CHECK(he.is_adaptive());
  CHECK(he.control.rtol == 1e-6);
  {
    const double tau = 2.0, u = 1.0;
    AdaptiveStats st;
    auto r = rates(scalar_graph(1.0, tau, false, 0, 0, 0), he, held(5, u), &st);
    const double exact = u * (1 - std::exp(-5.0 / tau));
    CHECK(std::abs(r[0].item(4) - exact) / exact < 1e-5);
    // Not FSAL: one extra evaluation at every accepted step's end.
    CHECK(st.evaluations == 1 + (st.accepted + st.rejected) + st.accepted);
  }
  CHECK_FALSE(spec("solver = \"dopri5\"\nadaptive = false\n").is_adaptive());
  auto fails = [&](const std::string& toml, const std::string& key) {
    CHECK_THROWS_WITH_AS(spec(toml), doctest::Contains(key.c_str()), ConfigError);
  };
  fails("solver = \"dopri5\"\nrtol = 0\n", "dynamics.rtol");
  fails("solver = \"dopri5\"\nrtol = -1e-3\n", "dynamics.rtol");
  fails("solver = \"bs32\"\natol = -1\n", "dynamics.atol");
  fails("solver = \"bs32\"\ndt_max = -2\n", "dynamics.dt_max");
  fails("solver = \"bs32\"\ndt_max = 1\ndt_min = 2\n", "dynamics.dt_min");
  fails("solver = \"euler\"\nrtol = 1e-4\n", "dynamics.rtol");
  fails("solver = \"rk4-classic\"\ndt_max = 1\n", "dynamics.dt_max");
  fails("solver = \"tableau-embedded\"\ntableau_a = [0, 0, 1, 0]\ntableau_b = [0.5, 0.5]\n"
        "tableau_c = [0, 1]\n",
        "tableau_bhat");
  fails("solver = \"tableau\"\ntableau_a = [0, 0, 1, 0]\ntableau_b = [0.5, 0.5]\n"
        "tableau_c = [0, 1]\ntableau_bhat = [1, 0]\n",
        "tableau_bhat");
}

TEST_CASE("adaptive: limits fail with a message, a rejected step leaves no trace") {
  const double tau = 0.05, u = 1.0;  // stiff against dt = 1: many small steps
  SolverSpec s = adaptive_spec("dopri5", 1e-8, 1e-12);
  s.control.max_steps = 5;
  CHECK_THROWS_WITH_AS(rates(scalar_graph(1.0, tau, false, 0, 0, 0), s, held(3, u)),
                       doctest::Contains("dynamics.max_steps"), Error);
  // The same run twice gives the same bits (rejections included), and a run with rejections
  // equals the limit it converges to within its tolerance.
  SolverSpec ok = adaptive_spec("dopri5", 1e-8, 1e-12);
  AdaptiveStats st;
  auto a = rates(scalar_graph(1.0, tau, false, 0, 0, 0), ok, held(3, u), &st);
  auto b = rates(scalar_graph(1.0, tau, false, 0, 0, 0), ok, held(3, u));
  require_equal(a[0], b[0], "repeat");
  MESSAGE("stiff leak: ", st.accepted, " accepted, ", st.rejected, " rejected");
  CHECK(st.rejected > 0);
  const double exact = u * (1 - std::exp(-3.0 / tau));
  CHECK(std::abs(a[0].item(2) - exact) < 1e-6);
  // Training through an adaptive solver is not there yet: it says so.
}
