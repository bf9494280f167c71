// The leaky-integration step (kernels/leak.h) as an op: f64 gradient checks of u, h and tau for
// every rule, with and without a previous state, one tau or one per sample; the RK-stage slope;
// the multiplicative-feedback gate x (1 + tanh g); CPU vs CUDA.
#include <cmath>

#include "kernels/dispatch.h"
#include "tests/harness.h"

using namespace dynsim;
using namespace dynsim::test;

namespace {

const Shape kShape{3, 2, 4, 5};

CaseBuilder leak_case(LeakRule rule, bool with_h, bool per_sample) {
  return [=](DType t) {
    OpCase c;
    c.name = concat("leak rule ", int(rule), with_h ? " with h" : " without h",
                    per_sample ? ", tau per sample" : "");
    c.input_names = {"u", "h", "tau"};
    c.inputs = {random_uniform(kShape, -2, 2, 1, t), random_uniform(kShape, -1, 1, 2, t),
                per_sample ? Tensor::from(Shape{3}, {3.0, 5.0, 9.0}, t)
                           : Tensor::from(Shape{1}, {4.0}, t)};
    c.differentiable = {true, with_h, true};
    const LeakParams p{rule, 1.7};
    c.forward = [=](Context& ctx, const std::vector<Tensor>& in) {
      Tensor x = ctx.empty(in[0].shape(), in[0].dtype());
      ops::leak_forward(ctx, p, in[0], with_h ? in[1] : Tensor(), in[2], x);
      return std::vector<Tensor>{x};
    };
    c.backward = [=](Context& ctx, const std::vector<Tensor>& in, const std::vector<Tensor>& gout,
                     const std::vector<Tensor>& g, GradMode m) {
      ops::leak_backward(ctx, p, gout[0], in[0], with_h ? in[1] : Tensor(), in[2], g[0], g[1],
                         g[2], m);
    };
    return c;
  };
}

CaseBuilder slope_case(bool per_sample) {
  return [=](DType t) {
    OpCase c;
    c.name = concat("leak_slope", per_sample ? ", tau per sample" : "");
    c.input_names = {"u", "r", "tau"};
    c.inputs = {random_uniform(kShape, -2, 2, 3, t), random_uniform(kShape, 0, 1, 4, t),
                per_sample ? Tensor::from(Shape{3}, {2.0, 4.0, 8.0}, t)
                           : Tensor::from(Shape{1}, {3.0}, t)};
    c.differentiable = {true, true, true};
    c.forward = [](Context& ctx, const std::vector<Tensor>& in) {
      Tensor k = ctx.empty(in[0].shape(), in[0].dtype());
      ops::leak_slope(ctx, in[0], in[1], in[2], k);
      return std::vector<Tensor>{k};
    };
    c.backward = [](Context& ctx, const std::vector<Tensor>& in, const std::vector<Tensor>& gout,
                    const std::vector<Tensor>& g, GradMode m) {
      ops::leak_slope_backward(ctx, gout[0], in[0], in[1], in[2], g[0], g[1], g[2], m);
    };
    return c;
  };
}

OpCase gate_case(DType t) {
  OpCase c;
  c.name = "mul_one_plus_tanh";
  c.input_names = {"x", "g"};
  c.inputs = {random_uniform(kShape, -2, 2, 5, t), random_uniform(kShape, -2, 2, 6, t)};
  c.differentiable = {true, true};
  c.forward = [](Context& ctx, const std::vector<Tensor>& in) {
    Tensor y = ctx.empty(in[0].shape(), in[0].dtype());
    ops::mul_one_plus_tanh(ctx, in[0], in[1], y);
    return std::vector<Tensor>{y};
  };
  c.backward = [](Context& ctx, const std::vector<Tensor>& in, const std::vector<Tensor>& gout,
                  const std::vector<Tensor>& g, GradMode m) {
    ops::mul_one_plus_tanh_backward(ctx, gout[0], in[0], in[1], g[0], g[1], m);
  };
  return c;
}

}  // namespace

TEST_CASE("leak: f64 gradient checks of u, h and tau for every rule") {
  for (LeakRule rule : {LeakRule::Euler, LeakRule::Rk4Frozen, LeakRule::Exp})
    for (bool with_h : {true, false})
      for (bool per_sample : {false, true}) check_gradients(leak_case(rule, with_h, per_sample));
}

TEST_CASE("leak: the RK-stage slope and the multiplicative gate") {
  check_gradients(slope_case(false));
  check_gradients(slope_case(true));
  check_gradients(gate_case);
  // Forward values against the formulas on small integers.
  Context ctx;
  Tensor x = random_ints(kShape, -3, 3, 7, DType::F64), g = random_ints(kShape, -2, 2, 8, DType::F64);
  Tensor y = Tensor::empty(kShape, DType::F64);
  ops::mul_one_plus_tanh(ctx, x, g, y);
  for (int64_t i = 0; i < y.numel(); ++i) CHECK(y.item(i) == x.item(i) * (1 + std::tanh(g.item(i))));
}

TEST_CASE("leak: bad arguments name the op and the tensor") {
  Context ctx;
  Tensor u = Tensor::zeros(kShape), tau = Tensor::from(Shape{2}, {1, 2});
  CHECK_THROWS_WITH_AS(ops::leak_backward(ctx, {}, u, u, Tensor(), tau, u, Tensor(), Tensor(),
                                          GradMode::Overwrite),
                       doctest::Contains("leak_backward: tau must have 1 or 3 elements"), DataError);
  Tensor small = Tensor::zeros(Shape{3, 2, 4, 4});
  CHECK_THROWS_WITH_AS(ops::leak_slope(ctx, u, small, Tensor::from(Shape{1}, {1}), u),
                       doctest::Contains("leak_slope: r has shape [3,2,4,4]"), DataError);
}

TEST_CASE("leak: CPU vs CUDA" * doctest::test_suite("gpu")) {
  check_cpu_vs_cuda(leak_case(LeakRule::Euler, true, true));
  check_cpu_vs_cuda(slope_case(true));
  check_cpu_vs_cuda(gate_case);
}
