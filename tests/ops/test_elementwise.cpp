// add, mul, axpy, scale, fill, relu: exact forward on small integers, f64 gradient checks,
// CPU vs CUDA.
#include "kernels/dispatch.h"
#include "tests/harness.h"

using namespace dynsim;
using namespace dynsim::test;

namespace {

const Shape kShape{2, 3, 4, 5};

// y = relu(a) * b + 0.5 * a: exercises relu, mul, axpy and scale in one differentiable case.
OpCase composite_case(DType t) {
  OpCase c;
  c.name = "relu/mul/axpy/scale";
  c.input_names = {"a", "b"};
  c.inputs = {random_away_from_zero(kShape, -2, 2, 0.05, 1, t), random_uniform(kShape, -2, 2, 2, t)};
  c.differentiable = {true, true};
  c.forward = [](Context& ctx, const std::vector<Tensor>& in) {
    Tensor r = ctx.empty(in[0].shape(), in[0].dtype());
    Tensor y = ctx.empty(in[0].shape(), in[0].dtype());
    ops::relu_forward(ctx, in[0], r);
    ops::mul(ctx, r, in[1], y);
    ops::axpy(ctx, 0.5, in[0], y);
    Tensor s = ctx.empty(in[0].shape(), in[0].dtype());
    ops::scale(ctx, -1.5, in[1], s);
    Tensor z = ctx.empty(in[0].shape(), in[0].dtype());
    ops::add(ctx, y, s, z);  // z = relu(a) b + 0.5 a - 1.5 b
    return std::vector<Tensor>{z};
  };
  c.backward = [](Context& ctx, const std::vector<Tensor>& in, const std::vector<Tensor>& gout,
                  const std::vector<Tensor>& g, GradMode m) {
    Tensor r = ctx.empty(in[0].shape(), in[0].dtype());
    ops::relu_forward(ctx, in[0], r);
    Tensor gr = ctx.empty(in[0].shape(), in[0].dtype());
    ops::mul_backward(ctx, gout[0], r, in[1], gr, Tensor(), GradMode::Overwrite);
    // d/db = relu(a) * g - 1.5 g
    Tensor gb = ctx.empty(in[0].shape(), in[0].dtype());
    ops::mul_backward(ctx, gout[0], r, in[1], Tensor(), gb, GradMode::Overwrite);
    ops::axpy(ctx, -1.5, gout[0], gb);
    // d/da = relu'(a) * (b g) + 0.5 g
    Tensor ga = ctx.empty(in[0].shape(), in[0].dtype());
    ops::relu_backward(ctx, in[0], gr, ga, GradMode::Overwrite);
    ops::axpy(ctx, 0.5, gout[0], ga);
    if (m == GradMode::Accumulate) {
      ops::axpy(ctx, 1.0, ga, g[0]);
      ops::axpy(ctx, 1.0, gb, g[1]);
    } else {
      ops::scale(ctx, 1.0, ga, g[0]);
      ops::scale(ctx, 1.0, gb, g[1]);
    }
  };
  return c;
}

}  // namespace

TEST_CASE("elementwise: exact forward on small integers") {
  Context ctx;
  Tensor a = random_ints(kShape, -5, 5, 11), b = random_ints(kShape, -5, 5, 12);
  Tensor y = Tensor::empty(kShape), want = Tensor::empty(kShape);
  ops::add(ctx, a, b, y);
  for (int64_t i = 0; i < a.numel(); ++i) want.set(i, a.item(i) + b.item(i));
  require_equal(y, want, "add");
  ops::mul(ctx, a, b, y);
  for (int64_t i = 0; i < a.numel(); ++i) want.set(i, a.item(i) * b.item(i));
  require_equal(y, want, "mul");
  ops::scale(ctx, 3.0, a, y);
  for (int64_t i = 0; i < a.numel(); ++i) want.set(i, 3 * a.item(i));
  require_equal(y, want, "scale");
  ops::axpy(ctx, -2.0, b, y);
  for (int64_t i = 0; i < a.numel(); ++i) want.set(i, 3 * a.item(i) - 2 * b.item(i));
  require_equal(y, want, "axpy");
  ops::relu_forward(ctx, a, y);
  for (int64_t i = 0; i < a.numel(); ++i) want.set(i, a.item(i) > 0 ? a.item(i) : 0);
  require_equal(y, want, "relu");
  ops::fill(ctx, 7.0, y);
  for (int64_t i = 0; i < a.numel(); ++i) CHECK(y.item(i) == 7.0);
}

TEST_CASE("elementwise: in-place (y aliases an input) is allowed") {
  Context ctx;
  Tensor a = random_ints(kShape, -5, 5, 3), b = random_ints(kShape, -5, 5, 4);
  Tensor a0 = a.clone();
  ops::add(ctx, a, b, a);
  for (int64_t i = 0; i < a.numel(); ++i) CHECK(a.item(i) == a0.item(i) + b.item(i));
}

TEST_CASE("elementwise: large tensors take the threaded path and agree") {
  ContextOptions o;
  o.threads = 2;
  Context ctx(o);
  Shape s{4, 64, 64, 64};  // > kParallelMin elements
  Tensor a = random_ints(s, -9, 9, 5), y = Tensor::empty(s);
  ops::relu_forward(ctx, a, y);
  for (int64_t i = 0; i < a.numel(); i += 997) CHECK(y.item(i) == std::max(0.0, a.item(i)));
}

TEST_CASE("elementwise: bad arguments name the op and the tensor") {
  Context ctx;
  Tensor a = Tensor::zeros({2, 3}), b = Tensor::zeros({3, 2}), y = Tensor::zeros({2, 3});
  CHECK_THROWS_WITH_AS(ops::add(ctx, a, b, y), doctest::Contains("add: b has shape [3,2]"),
                       DataError);
  Tensor i = Tensor::zeros({2, 3}, DType::I32);
  CHECK_THROWS_WITH_AS(ops::relu_forward(ctx, i, y), doctest::Contains("needs f32 or f64"),
                       DataError);
  Tensor f = Tensor::zeros({2, 3}, DType::F64);
  CHECK_THROWS_WITH_AS(ops::add(ctx, a, f, y), doctest::Contains("add: b is f64"), DataError);
}

TEST_CASE("elementwise: f64 gradient check") { check_gradients(composite_case); }

TEST_CASE("elementwise: CPU vs CUDA" * doctest::test_suite("gpu")) {
  check_cpu_vs_cuda(composite_case);
}
