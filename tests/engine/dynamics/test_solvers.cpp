// The leaky-integration step against DynVision's solver tests (spec §8, T1-T3) and the
// analytic convergence orders.
#include <cmath>

#include "kernels/dispatch.h"
#include "tests/harness.h"

using namespace dynsim;
using namespace dynsim::test;

namespace {

// Runs the solver on a scalar with its own memory, as DynVision's solver does without h.
std::vector<double> run_constant(LeakRule rule, double dt, double tau, double u, int steps) {
  Context ctx;
  LeakParams p{rule, dt};
  Tensor U = Tensor::from({1, 1, 1, 1}, {u}), X = Tensor::zeros({1, 1, 1, 1});
  Tensor H = Tensor::zeros({1, 1, 1, 1}), T = Tensor::from({1}, {tau});
  std::vector<double> out;
  for (int i = 0; i < steps; ++i) {
    ops::leak_forward(ctx, p, U, i == 0 ? Tensor() : H, T, X);
    out.push_back(X.item(0));
    H.set(0, X.item(0));
  }
  return out;
}

}  // namespace

TEST_CASE("solver T1: constant drive, DynVision's values at a = 0.4") {
  const double euler[] = {0.4, 0.64, 0.784, 0.8704, 0.92224};
  const double rk4[] = {0.4, 0.59776, 0.730338, 0.819219, 0.878804};
  auto e = run_constant(LeakRule::Euler, 2, 5, 1, 5);
  auto r = run_constant(LeakRule::Rk4Frozen, 2, 5, 1, 5);
  for (int i = 0; i < 5; ++i) {
    CHECK(e[i] == doctest::Approx(euler[i]).epsilon(1e-6));
    CHECK(r[i] == doctest::Approx(rk4[i]).epsilon(2e-6));
    // Closed forms: Euler 1 - (1-a)^n; RK4 y_1 = a, then 1 - (1-a) P(a)^(n-1).
    const double a = 0.4, P = 1 - a + a * a / 2 - a * a * a / 6 + a * a * a * a / 24;
    CHECK(e[i] == doctest::Approx(1 - std::pow(1 - a, i + 1)).epsilon(1e-6));
    CHECK(r[i] == doctest::Approx(1 - (1 - a) * std::pow(P, i)).epsilon(1e-6));
  }
  for (LeakRule rule : {LeakRule::Euler, LeakRule::Rk4Frozen, LeakRule::Exp}) {
    auto y = run_constant(rule, 0.1, 1.0, 1.0, 1000);
    CHECK(y.back() == doctest::Approx(1.0).epsilon(1e-4));
  }
}

TEST_CASE("solver T2: one step from an explicit state, then decay to zero") {
  Context ctx;
  Tensor U = Tensor::from({1, 1, 1, 1}, {0.8}), Hs = Tensor::from({1, 1, 1, 1}, {1.0});
  Tensor X = Tensor::zeros({1, 1, 1, 1}), T = Tensor::from({1}, {1.0});
  ops::leak_forward(ctx, {LeakRule::Euler, 0.1}, U, Hs, T, X);
  CHECK(X.item(0) == doctest::Approx(0.98).epsilon(1e-6));
  for (LeakRule rule : {LeakRule::Euler, LeakRule::Rk4Frozen, LeakRule::Exp}) {
    Tensor y = Tensor::from({1, 1, 1, 1}, {1.0}), in = Tensor::zeros({1, 1, 1, 1});
    for (int i = 0; i < 1000; ++i) {
      ops::scale(ctx, 0.7, y, in);
      ops::leak_forward(ctx, {rule, 0.1}, in, y, T, y);
    }
    CHECK(std::abs(y.item(0)) < 1e-4);
  }
}

TEST_CASE("solver: exp is exact for a held drive; Euler error halves and RK4 error drops 16x") {
  // tau dx/dt = -x + 1 from x(0) = 0 over t in [0, 1]: x(1) = 1 - e^(-1/tau).
  const double tau = 0.5, exact = 1 - std::exp(-1.0 / tau);
  auto err = [&](LeakRule rule, int n) {
    Context ctx;
    Tensor U = Tensor::from({1, 1, 1, 1}, {1.0}, DType::F64), X = Tensor::zeros({1, 1, 1, 1}, DType::F64);
    Tensor T = Tensor::from({1}, {tau}, DType::F64);
    for (int i = 0; i < n; ++i) ops::leak_forward(ctx, {rule, 1.0 / n}, U, X, T, X);
    return std::abs(X.item(0) - exact);
  };
  MESSAGE("held drive: exp error ", err(LeakRule::Exp, 7), "; error ratio dt vs dt/2: euler ",
          err(LeakRule::Euler, 64) / err(LeakRule::Euler, 128), ", rk4 (frozen) ",
          err(LeakRule::Rk4Frozen, 16) / err(LeakRule::Rk4Frozen, 32));
  CHECK(err(LeakRule::Exp, 7) < 1e-14);
  const double e1 = err(LeakRule::Euler, 64), e2 = err(LeakRule::Euler, 128);
  CHECK(e1 / e2 == doctest::Approx(2.0).epsilon(0.02));
  const double r1 = err(LeakRule::Rk4Frozen, 16), r2 = err(LeakRule::Rk4Frozen, 32);
  CHECK(r1 / r2 == doctest::Approx(16.0).epsilon(0.05));
}

TEST_CASE("solver: per-sample tau and f32 rounding as PyTorch (a = (1/tau) * dt)") {
  Context ctx;
  Tensor U = Tensor::from({2, 1, 1, 2}, {1, 2, 3, 4}), X = Tensor::zeros({2, 1, 1, 2});
  Tensor T = Tensor::from({2}, {5.0, 3.0});
  ops::leak_forward(ctx, {LeakRule::Euler, 2.0}, U, Tensor(), T, X);
  const float a0 = (1.0f / 5.0f) * 2.0f, a1 = (1.0f / 3.0f) * 2.0f;
  CHECK(X.data<float>()[0] == a0 * 1.0f);
  CHECK(X.data<float>()[1] == a0 * 2.0f);
  CHECK(X.data<float>()[2] == a1 * 3.0f);
  CHECK(X.data<float>()[3] == a1 * 4.0f);
  Tensor bad = Tensor::from({3}, {1, 2, 3});
  CHECK_THROWS_WITH_AS(ops::leak_forward(ctx, {}, U, Tensor(), bad, X),
                       doctest::Contains("tau must have 1 or 2 elements"), DataError);
}
