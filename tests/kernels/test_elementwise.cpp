// add, mul, axpy, scale, fill, relu: exact forward on small integers, f64 gradient checks,
// CPU vs CUDA (f32 and f64; bit for bit where both compute the same rounded operations).
#include <algorithm>
#include <cmath>
#include <cstring>

#include "engine/core/device.h"
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
  check_cpu_vs_cuda(composite_case, 1e-10, DType::F64);
}

// Every elementwise op once on each device from the same inputs, f32 and f64: the bits of the
// CPU where both compute the same correctly rounded operations (CUDA built with --fmad=false and
// explicit _rn products), within a few ulp where a library tanh is involved.
TEST_CASE("elementwise: the CUDA twins give the CPU's bits (f32 and f64)" *
          doctest::test_suite("gpu")) {
  if (cuda_device_count() == 0) {
    MESSAGE("SKIPPED: no CUDA device");
    return;
  }
  ContextOptions o;
  o.device = Device::Cuda;
  Context cpu, gpu(o);
  const Shape s{3, 5, 7, 11};
  for (DType t : {DType::F32, DType::F64}) {
    CAPTURE(dtype_name(t));
    const Tensor a = random_uniform(s, -2, 2, 31, t), b = random_uniform(s, -2, 2, 32, t);
    const Tensor c = random_uniform(s, -1, 1, 33, t);
    const Tensor da = gpu.to_device(a), db = gpu.to_device(b), dc = gpu.to_device(c);
    // Runs op(ctx, a, b, c, y) with y starting as a copy of c on both devices; compares y.
    auto same = [&](const char* what, auto op, double rel = 0) {
      Tensor yc = c.clone(), yg = gpu.to_device(c);
      op(cpu, a, b, c, yc);
      op(gpu, da, db, dc, yg);
      const Tensor h = gpu.to_host(yg);
      if (rel == 0) {
        CHECK_MESSAGE(std::memcmp(h.raw(), yc.raw(), yc.nbytes()) == 0, what);
      } else {
        double worst = 0;
        for (int64_t i = 0; i < h.numel(); ++i)
          worst = std::max(worst, std::abs(h.item(i) - yc.item(i)) / std::max(1.0, std::abs(yc.item(i))));
        CHECK_MESSAGE(worst <= rel, what, ": ", worst);
      }
    };
    using T = const Tensor&;
    same("add", [](Context& x, T p, T q, T, T y) { ops::add(x, p, q, y); });
    same("mul", [](Context& x, T p, T q, T, T y) { ops::mul(x, p, q, y); });
    same("scale", [](Context& x, T p, T, T, T y) { ops::scale(x, 0.3, p, y); });
    same("axpy", [](Context& x, T p, T, T, T y) { ops::axpy(x, -0.7, p, y); });
    same("fill", [](Context& x, T, T, T, T y) { ops::fill(x, 0.1, y); });
    same("relu", [](Context& x, T p, T, T, T y) { ops::relu_forward(x, p, y); });
    same("relu_backward acc",
         [](Context& x, T p, T q, T, T y) { ops::relu_backward(x, p, q, y, GradMode::Accumulate); });
    same("mul_backward grad_a acc", [](Context& x, T p, T q, T r, T y) {
      ops::mul_backward(x, r, p, q, y, Tensor(), GradMode::Accumulate);
    });
    same("mul_backward grad_b", [](Context& x, T p, T q, T r, T y) {
      ops::mul_backward(x, r, p, q, Tensor(), y, GradMode::Overwrite);
    });
    const double tanh_tol = t == DType::F32 ? 1e-6 : 1e-14;
    same("mul_one_plus_tanh", [](Context& x, T p, T q, T, T y) { ops::mul_one_plus_tanh(x, p, q, y); },
         tanh_tol);
    same("mul_one_plus_tanh_backward grad_x acc", [](Context& x, T p, T q, T r, T y) {
      ops::mul_one_plus_tanh_backward(x, r, p, q, y, Tensor(), GradMode::Accumulate);
    }, tanh_tol);
    same("mul_one_plus_tanh_backward grad_g", [](Context& x, T p, T q, T r, T y) {
      ops::mul_one_plus_tanh_backward(x, r, p, q, Tensor(), y, GradMode::Overwrite);
    }, tanh_tol);
  }
}
