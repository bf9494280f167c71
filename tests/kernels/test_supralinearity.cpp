// SupraLinearity (DynVision, spec §7): the spec's examples, f(0) = 0, negative inputs, the
// 1e-6 floor and the input clamp, exact forward against a plain loop, f64 gradient checks,
// CPU vs CUDA and bad arguments.
#include <cmath>

#include "kernels/dispatch.h"
#include "tests/harness.h"

using namespace dynsim;
using namespace dynsim::test;

namespace {

// The rule written out plainly: clamp x, floor |x| at 1e-6, k sign(x) |x|^n; 0 at 0.
template <class T>
T reference(T x, const SupralinearityParams& p) {
  if (x == T(0)) return T(0);
  T xc = std::min(std::max(x, T(-p.clamp)), T(p.clamp));
  T m = std::max(std::abs(xc), T(1e-6));
  T y = T(p.k) * std::pow(m, T(p.n));
  return xc < 0 ? -y : y;
}

Tensor reference_tensor(const Tensor& x, const SupralinearityParams& p) {
  Tensor y = Tensor::empty(x.shape(), x.dtype());
  for (int64_t i = 0; i < x.numel(); ++i) {
    if (x.dtype() == DType::F32)
      y.set(i, reference<float>(float(x.item(i)), p));
    else
      y.set(i, reference<double>(x.item(i), p));
  }
  return y;
}

// Uniform values kept at least `gap` away from 0 and from +-clamp (the two kinks).
Tensor away_from_kinks(const Shape& s, double lo, double hi, double clamp, uint64_t seed, DType t) {
  Tensor x = random_away_from_zero(s, lo, hi, 0.05, seed, DType::F64);
  for (int64_t i = 0; i < x.numel(); ++i) {
    double v = x.item(i);
    if (std::abs(std::abs(v) - clamp) < 0.05) x.set(i, v > 0 ? clamp - 0.1 : -clamp + 0.1);
  }
  return x.to_dtype(t);
}

CaseBuilder supra_case(SupralinearityParams p, const Shape& s, double lo, double hi,
                       uint64_t seed) {
  return [=](DType t) {
    OpCase c;
    c.name = concat("supralinearity n=", p.n, " k=", p.k, " clamp=", p.clamp, " ", s.str());
    c.input_names = {"x"};
    c.inputs = {away_from_kinks(s, lo, hi, p.clamp, seed, t)};
    c.differentiable = {true};
    c.forward = [p](Context& ctx, const std::vector<Tensor>& in) {
      Tensor y = ctx.empty(in[0].shape(), in[0].dtype());
      ops::supralinearity_forward(ctx, p, in[0], y);
      return std::vector<Tensor>{y};
    };
    c.backward = [p](Context& ctx, const std::vector<Tensor>& in, const std::vector<Tensor>& gout,
                     const std::vector<Tensor>& g,
                     GradMode m) { ops::supralinearity_backward(ctx, p, gout[0], in[0], g[0], m); };
    return c;
  };
}

SupralinearityParams params(double n, double k = 0.8, double clamp = 1e6) {
  SupralinearityParams p;
  p.n = n;
  p.k = k;
  p.clamp = clamp;
  return p;
}

}  // namespace

TEST_CASE("supralinearity: the spec's examples for n = 2, f(0) = 0 and odd symmetry") {
  Context ctx;
  const SupralinearityParams p = params(2.0);
  for (DType t : {DType::F32, DType::F64}) {
    CAPTURE(std::string(dtype_name(t)));
    Tensor x = Tensor::from({7}, {0.5, 1, 2, 0, -0.5, -1, -2}, t);
    Tensor y = Tensor::empty({7}, t);
    ops::supralinearity_forward(ctx, p, x, y);
    require_equal(y, Tensor::from({7}, {0.2, 0.8, 3.2, 0, -0.2, -0.8, -3.2}, t), "spec examples");
  }
}

TEST_CASE("supralinearity: exact forward against a plain loop on small integers") {
  Context ctx;
  for (DType t : {DType::F32, DType::F64})
    for (double n : {2.0, 1.5, 3.0, 0.7}) {
      CAPTURE(std::string(dtype_name(t)));
      CAPTURE(n);
      const SupralinearityParams p = params(n);
      Tensor x = random_ints({2, 3, 4, 5}, -6, 6, 21, t);
      Tensor y = Tensor::empty(x.shape(), t);
      ops::supralinearity_forward(ctx, p, x, y);
      require_equal(y, reference_tensor(x, p), "supralinearity forward");
      // n = 2 on integers: pow(|x|, 2) is exact, so y = sign(x) (k x^2).
      if (n == 2.0)
        for (int64_t i = 0; i < x.numel(); ++i) {
          double v = x.item(i);
          if (t == DType::F64) CHECK(y.item(i) == (v < 0 ? -1 : 1) * (0.8 * (v * v)));
        }
    }
}

TEST_CASE("supralinearity: the 1e-6 floor and the input clamp at 1e6") {
  Context ctx;
  const SupralinearityParams p = params(2.0);
  Tensor x = Tensor::from({6}, {1e-9, -1e-9, 2e6, -3e6, 1e6, 5e-7}, DType::F64);
  Tensor y = Tensor::empty({6}, DType::F64);
  ops::supralinearity_forward(ctx, p, x, y);
  const double floor_v = 0.8 * std::pow(1e-6, 2.0), top = 0.8 * std::pow(1e6, 2.0);
  CHECK(y.item(0) == floor_v);
  CHECK(y.item(1) == -floor_v);
  CHECK(y.item(2) == top);
  CHECK(y.item(3) == -top);
  CHECK(y.item(4) == top);
  CHECK(y.item(5) == floor_v);
  // The gradient is zero under the floor and beyond the clamp, k n |x|^(n-1) inside.
  Tensor g = Tensor::from({6}, {1, 1, 1, 1, 1, 1}, DType::F64), gx = Tensor::empty({6}, DType::F64);
  ops::supralinearity_backward(ctx, p, g, x, gx, GradMode::Overwrite);
  CHECK(gx.item(0) == 0.0);
  CHECK(gx.item(1) == 0.0);
  CHECK(gx.item(2) == 0.0);
  CHECK(gx.item(3) == 0.0);
  CHECK(gx.item(4) == doctest::Approx(0.8 * 2 * 1e6));
  CHECK(gx.item(5) == 0.0);
  // Negative inputs: f'(-x) = f'(x) (f is odd).
  Tensor xs = Tensor::from({2}, {1.7, -1.7}, DType::F64), gs = Tensor::empty({2}, DType::F64);
  ops::supralinearity_backward(ctx, params(1.5), Tensor::from({2}, {1, 1}, DType::F64), xs, gs,
                               GradMode::Overwrite);
  CHECK(gs.item(0) == gs.item(1));
  CHECK(gs.item(0) == doctest::Approx(0.8 * 1.5 * std::pow(1.7, 0.5)).epsilon(1e-14));
}

TEST_CASE("supralinearity: NaN propagates") {
  Context ctx;
  Tensor x = Tensor::from({1}, {std::nan("")}), y = Tensor::empty({1});
  ops::supralinearity_forward(ctx, params(2.0), x, y);
  CHECK(std::isnan(y.item(0)));
}

TEST_CASE("supralinearity: large tensors take the threaded path and agree") {
  ContextOptions o;
  o.threads = 2;
  Context ctx(o);
  const SupralinearityParams p = params(1.8);
  Tensor x = random_uniform({4, 16, 32, 32}, -3, 3, 5, DType::F32);
  Tensor y = Tensor::empty(x.shape());
  ops::supralinearity_forward(ctx, p, x, y);
  require_equal(y, reference_tensor(x, p), "threaded supralinearity");
}

TEST_CASE("supralinearity: f64 gradient check") {
  check_gradients(supra_case(params(2.0), {2, 3, 4, 5}, -3, 3, 1));
  check_gradients(supra_case(params(1.5), {2, 3, 4, 5}, -3, 3, 2));
  check_gradients(supra_case(params(3.0, 1.3), {1, 2, 5, 3}, -2, 2, 3));
  check_gradients(supra_case(params(0.7), {3, 7}, -4, 4, 4));
  // A small clamp puts some inputs beyond it, where the gradient is 0.
  check_gradients(supra_case(params(2.0, 0.8, 2.0), {2, 2, 6, 6}, -4, 4, 5));
}

TEST_CASE("supralinearity: CPU vs CUDA" * doctest::test_suite("gpu")) {
  check_cpu_vs_cuda(supra_case(params(2.0), {2, 3, 4, 5}, -3, 3, 1));
  check_cpu_vs_cuda(supra_case(params(1.5, 0.8, 2.0), {2, 2, 6, 6}, -4, 4, 5));
}

TEST_CASE("supralinearity: bad arguments name the op and the tensor") {
  Context ctx;
  Tensor x = Tensor::zeros({2, 3}), y = Tensor::zeros({3, 2});
  CHECK_THROWS_WITH_AS(ops::supralinearity_forward(ctx, params(2.0), x, y),
                       doctest::Contains("supralinearity_forward: y has shape [3,2]"), DataError);
  Tensor i = Tensor::zeros({2, 3}, DType::I32);
  CHECK_THROWS_WITH_AS(ops::supralinearity_forward(ctx, params(2.0), i, x),
                       doctest::Contains("needs f32 or f64"), DataError);
  CHECK_THROWS_WITH_AS(ops::supralinearity_forward(ctx, params(2.0, 0.0), x, x),
                       doctest::Contains("k > 0"), DataError);
  CHECK_THROWS_WITH_AS(ops::supralinearity_forward(ctx, params(2.0, 0.8, 0.0), x, x),
                       doctest::Contains("clamp > 0"), DataError);
  Tensor g64 = Tensor::zeros({2, 3}, DType::F64);
  CHECK_THROWS_WITH_AS(
      ops::supralinearity_backward(ctx, params(2.0), g64, x, x, GradMode::Overwrite),
      doctest::Contains("supralinearity_backward: grad_y is f64"), DataError);
  CHECK_THROWS_WITH_AS(
      ops::supralinearity_backward(ctx, params(2.0), x, x, Tensor(), GradMode::Overwrite),
      doctest::Contains("supralinearity_backward: grad_x is undefined"), DataError);
}
