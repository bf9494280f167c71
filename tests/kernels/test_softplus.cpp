// Parametric softplus y = a log(1 + exp(b x)): forward against a plain loop, stability at
// large |b x|, f64 gradient checks of x, a and b, thread-count independence of the parameter
// gradients, CPU vs CUDA, bad arguments and agreement with a * F.softplus(b * x) in PyTorch.
#include <cmath>

#include "kernels/dispatch.h"
#include "tests/harness.h"

using namespace dynsim;
using namespace dynsim::test;

namespace {

template <class T>
T reference(T x, T a, T b) {
  const T z = b * x;
  return a * (std::max(z, T(0)) + std::log1p(std::exp(-std::abs(z))));
}

Tensor scalar(double v, DType t) {
  return Tensor::from({1}, {v}, t);
}

CaseBuilder softplus_case(const Shape& s, double a, double b, uint64_t seed) {
  return [=](DType t) {
    OpCase c;
    c.name = concat("softplus a=", a, " b=", b, " ", s.str());
    c.input_names = {"x", "a", "b"};
    c.inputs = {random_uniform(s, -4, 4, seed, t), scalar(a, t), scalar(b, t)};
    c.differentiable = {true, true, true};
    c.forward = [](Context& ctx, const std::vector<Tensor>& in) {
      Tensor y = ctx.empty(in[0].shape(), in[0].dtype());
      ops::softplus_forward(ctx, in[0], in[1], in[2], y);
      return std::vector<Tensor>{y};
    };
    c.backward = [](Context& ctx, const std::vector<Tensor>& in, const std::vector<Tensor>& gout,
                    const std::vector<Tensor>& g, GradMode m) {
      ops::softplus_backward(ctx, gout[0], in[0], in[1], in[2], g[0], g[1], g[2], m);
    };
    return c;
  };
}

}  // namespace

TEST_CASE("softplus: forward against a plain loop on small integers") {
  Context ctx;
  for (DType t : {DType::F32, DType::F64})
    for (auto [a, b] : {std::pair{2.0, -1.0}, {1.0, 1.0}, {-3.0, 2.0}, {0.5, 0.25}}) {
      CAPTURE(std::string(dtype_name(t)));
      CAPTURE(a);
      CAPTURE(b);
      Tensor x = random_ints({2, 3, 4, 5}, -6, 6, 31, t);
      Tensor y = Tensor::empty(x.shape(), t), want = Tensor::empty(x.shape(), t);
      ops::softplus_forward(ctx, x, scalar(a, t), scalar(b, t), y);
      for (int64_t i = 0; i < x.numel(); ++i)
        want.set(i, t == DType::F32 ? double(reference<float>(float(x.item(i)), a, b))
                                    : reference<double>(x.item(i), a, b));
      require_equal(y, want, "softplus (same formula)");
      // The direct form, in double (safe for these |b x| <= 12), agrees to rounding.
      Tensor direct = Tensor::empty(x.shape(), DType::F64);
      for (int64_t i = 0; i < x.numel(); ++i)
        direct.set(i, a * std::log1p(std::exp(b * x.item(i))));
      require_close(y.to_dtype(DType::F64), direct, 0, t == DType::F32 ? 5e-7 : 1e-14,
                    "softplus vs a log1p(exp(b x))");
    }
}

TEST_CASE("softplus: stable for large |b x| (no overflow, no cancellation to -0)") {
  Context ctx;
  for (DType t : {DType::F32, DType::F64}) {
    Tensor x = Tensor::from({4}, {1000, -1000, 90, -90}, t), y = Tensor::empty({4}, t);
    ops::softplus_forward(ctx, x, scalar(1.5, t), scalar(1.0, t), y);
    CHECK(y.item(0) == 1500.0);
    CHECK(y.item(1) == 0.0);
    CHECK(y.item(2) == doctest::Approx(135.0));
    CHECK(y.item(3) > 0.0);  // 1.5 exp(-90) is representable in both f32 (denormal) and f64
    Tensor g = Tensor::from({4}, {1, 1, 1, 1}, t), gx = Tensor::empty({4}, t);
    Tensor ga = Tensor::empty({1}, t), gb = Tensor::empty({1}, t);
    ops::softplus_backward(ctx, g, x, scalar(1.5, t), scalar(1.0, t), gx, ga, gb,
                           GradMode::Overwrite);
    CHECK(gx.item(0) == 1.5);
    CHECK(gx.item(1) == 0.0);
    CHECK(std::isfinite(ga.item(0)));
    CHECK(std::isfinite(gb.item(0)));
  }
}

TEST_CASE("softplus: f64 gradient check of x, a and b") {
  check_gradients(softplus_case({2, 3, 4, 5}, 1.5, 0.7, 1));
  check_gradients(softplus_case({3, 7}, -0.5, 2.0, 2));
  check_gradients(softplus_case({1, 2, 3, 3}, 1.0, -1.3, 3));
  check_gradients(softplus_case({5}, 2.5, 0.1, 4));
}

TEST_CASE("softplus: optional gradients and thread-count independence") {
  ContextOptions o1, o2;
  o1.threads = 1;
  o2.threads = 2;
  Context c1(o1), c2(o2);
  const Shape s{3, 8, 64, 64};  // several reduction blocks
  Tensor x = random_uniform(s, -3, 3, 9, DType::F32), g = random_uniform(s, -1, 1, 10, DType::F32);
  Tensor a = scalar(1.2, DType::F32), b = scalar(0.8, DType::F32);
  Tensor ga1 = Tensor::empty({1}), gb1 = Tensor::empty({1}), ga2 = Tensor::empty({1}),
         gb2 = Tensor::empty({1});
  ops::softplus_backward(c1, g, x, a, b, Tensor(), ga1, gb1, GradMode::Overwrite);
  ops::softplus_backward(c2, g, x, a, b, Tensor(), ga2, gb2, GradMode::Overwrite);
  require_equal(ga2, ga1, "grad_a, 2 threads vs 1");
  require_equal(gb2, gb1, "grad_b, 2 threads vs 1");
  // Only grad_b asked for.
  Tensor gb3 = Tensor::empty({1});
  ops::softplus_backward(c2, g, x, a, b, Tensor(), Tensor(), gb3, GradMode::Overwrite);
  CHECK(gb3.item(0) == gb1.item(0));
  // The double-accumulated sum matches a plain double loop closely.
  double sa = 0;
  for (int64_t i = 0; i < x.numel(); ++i) {
    double z = 0.8f * float(x.item(i));
    sa += g.item(i) * (std::max(z, 0.0) + std::log1p(std::exp(-std::abs(z))));
  }
  CHECK(ga1.item(0) == doctest::Approx(sa).epsilon(1e-6));
}

TEST_CASE("softplus: CPU vs CUDA" * doctest::test_suite("gpu")) {
  check_cpu_vs_cuda(softplus_case({2, 3, 4, 5}, 1.5, 0.7, 1));
}

TEST_CASE("softplus: bad arguments name the op and the tensor") {
  Context ctx;
  Tensor x = Tensor::zeros({2, 3}), y = Tensor::zeros({2, 3}), one = Tensor::zeros({1});
  CHECK_THROWS_WITH_AS(ops::softplus_forward(ctx, x, Tensor::zeros({2}), one, y),
                       doctest::Contains("softplus_forward: a has shape [2]"), DataError);
  CHECK_THROWS_WITH_AS(ops::softplus_forward(ctx, x, one, Tensor::zeros({1}, DType::F64), y),
                       doctest::Contains("softplus_forward: b is f64"), DataError);
  CHECK_THROWS_WITH_AS(ops::softplus_forward(ctx, x, one, one, Tensor::zeros({3, 2})),
                       doctest::Contains("softplus_forward: y has shape [3,2]"), DataError);
  CHECK_THROWS_WITH_AS(ops::softplus_forward(ctx, Tensor::zeros({2}, DType::I32), one, one, y),
                       doctest::Contains("needs f32 or f64"), DataError);
  CHECK_THROWS_WITH_AS(ops::softplus_backward(ctx, y, x, one, one, x, Tensor::zeros({2}), Tensor(),
                                              GradMode::Overwrite),
                       doctest::Contains("softplus_backward: grad_a has shape [2]"), DataError);
  CHECK_THROWS_WITH_AS(ops::softplus_backward(ctx, Tensor::zeros({6}), x, one, one, x, Tensor(),
                                              Tensor(), GradMode::Overwrite),
                       doctest::Contains("softplus_backward: grad_y has shape [6]"), DataError);
}

TEST_CASE("softplus: agrees with a * F.softplus(b * x) in PyTorch" * doctest::test_suite("torch")) {
  Context ctx;
  for (const char* name : {"softplus_pos", "softplus_neg_b"}) {
    CAPTURE(name);
    Tensor x = torch_ref(name, "x"), a = torch_ref(name, "a"), b = torch_ref(name, "b");
    Tensor r = torch_ref(name, "r");
    Tensor y = Tensor::empty(x.shape()), gx = Tensor::empty(x.shape());
    Tensor ga = Tensor::empty({1}), gb = Tensor::empty({1});
    ops::softplus_forward(ctx, x, a, b, y);
    require_close(y, torch_ref(name, "y"), 1e-5, 1e-4, "softplus y vs torch");
    ops::softplus_backward(ctx, r, x, a, b, gx, ga, gb, GradMode::Overwrite);
    require_close(gx, torch_ref(name, "grad_x"), 1e-5, 1e-4, "softplus grad_x vs torch");
    require_close(ga, torch_ref(name, "grad_a"), 1e-4, 1e-4, "softplus grad_a vs torch");
    require_close(gb, torch_ref(name, "grad_b"), 1e-4, 1e-4, "softplus grad_b vs torch");
  }
}
