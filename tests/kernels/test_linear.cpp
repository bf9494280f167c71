// linear: exact forward and backward against plain loops on small integers, with and without
// bias, optional gradient outputs, f64 gradient checks of x, w and b, CPU vs CUDA, bad arguments,
// and agreement with torch.nn.functional.linear.
#include <cmath>

#include "kernels/dispatch.h"
#include "tests/harness.h"

using namespace dynsim;
using namespace dynsim::test;

namespace {

struct Config {
  int64_t n, in, out;
  bool bias;
};
const std::vector<Config> kConfigs = {
    {4, 6, 3, true}, {1, 5, 7, true}, {7, 1, 2, true}, {3, 8, 5, false}, {5, 16, 10, true},
};

std::string describe(const Config& c) {
  return concat("N", c.n, " In", c.in, " Out", c.out, c.bias ? " bias" : " no bias");
}

Tensor ref_forward(const Tensor& x, const Tensor& w, const Tensor& b) {
  const int64_t N = x.dim(0), In = x.dim(1), Out = w.dim(0);
  Tensor y = Tensor::empty({N, Out}, x.dtype());
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < Out; ++o) {
      double s = b.defined() ? b.item(o) : 0.0;
      for (int64_t i = 0; i < In; ++i) s += x.item(n * In + i) * w.item(o * In + i);
      y.set(n * Out + o, s);
    }
  return y;
}

struct Grads {
  Tensor x, w, b;
};
Grads ref_backward(const Tensor& gy, const Tensor& x, const Tensor& w) {
  const int64_t N = x.dim(0), In = x.dim(1), Out = w.dim(0);
  Grads g{Tensor::zeros(x.shape(), x.dtype()), Tensor::zeros(w.shape(), x.dtype()),
          Tensor::zeros({Out}, x.dtype())};
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < Out; ++o) {
      const double d = gy.item(n * Out + o);
      for (int64_t i = 0; i < In; ++i) {
        g.x.set(n * In + i, g.x.item(n * In + i) + d * w.item(o * In + i));
        g.w.set(o * In + i, g.w.item(o * In + i) + d * x.item(n * In + i));
      }
      g.b.set(o, g.b.item(o) + d);
    }
  return g;
}

Tensor plus(const Tensor& a, const Tensor& b) {
  Tensor r = a.clone();
  for (int64_t e = 0; e < r.numel(); ++e) r.set(e, a.item(e) + b.item(e));
  return r;
}

CaseBuilder linear_case(const Config& cfg, uint64_t seed) {
  return [cfg, seed](DType t) {
    OpCase c;
    c.name = "linear " + describe(cfg);
    c.input_names = {"x", "w"};
    c.inputs = {random_uniform({cfg.n, cfg.in}, -2, 2, seed, t),
                random_uniform({cfg.out, cfg.in}, -1, 1, seed + 1, t)};
    c.differentiable = {true, true};
    if (cfg.bias) {
      c.input_names.push_back("b");
      c.inputs.push_back(random_uniform({cfg.out}, -1, 1, seed + 2, t));
      c.differentiable.push_back(true);
    }
    c.forward = [](Context& ctx, const std::vector<Tensor>& in) {
      Tensor y = ctx.empty({in[0].dim(0), in[1].dim(0)}, in[0].dtype());
      ops::linear_forward(ctx, in[0], in[1], in.size() > 2 ? in[2] : Tensor(), y);
      return std::vector<Tensor>{y};
    };
    c.backward = [](Context& ctx, const std::vector<Tensor>& in, const std::vector<Tensor>& gout,
                    const std::vector<Tensor>& g, GradMode m) {
      ops::linear_backward(ctx, gout[0], in[0], in[1], g[0], g[1], g.size() > 2 ? g[2] : Tensor(),
                           m);
    };
    return c;
  };
}

}  // namespace

TEST_CASE("linear: exact forward and backward on small integers") {
  Context ctx;
  for (DType t : {DType::F32, DType::F64})
    for (size_t k = 0; k < kConfigs.size(); ++k) {
      const Config& cfg = kConfigs[k];
      const std::string what = concat("linear ", describe(cfg), " ", dtype_name(t));
      Tensor x = random_ints({cfg.n, cfg.in}, -5, 5, 10 + k, t);
      Tensor w = random_ints({cfg.out, cfg.in}, -5, 5, 20 + k, t);
      Tensor b = cfg.bias ? random_ints({cfg.out}, -5, 5, 30 + k, t) : Tensor();
      Tensor y = Tensor::empty({cfg.n, cfg.out}, t);
      ops::linear_forward(ctx, x, w, b, y);
      require_equal(y, ref_forward(x, w, b), what + ": y");

      Tensor gy = random_ints({cfg.n, cfg.out}, -5, 5, 40 + k, t);
      const Grads want = ref_backward(gy, x, w);
      Grads got{Tensor::empty(x.shape(), t), Tensor::empty(w.shape(), t),
                Tensor::empty({cfg.out}, t)};
      for (Tensor* g : {&got.x, &got.w, &got.b}) g->fill(std::nan(""));
      ops::linear_backward(ctx, gy, x, w, got.x, got.w, got.b, GradMode::Overwrite);
      require_equal(got.x, want.x, what + ": grad_x (overwrite)");
      require_equal(got.w, want.w, what + ": grad_w (overwrite)");
      require_equal(got.b, want.b, what + ": grad_b (overwrite)");

      Grads prior{random_ints(x.shape(), -9, 9, 50 + k, t),
                  random_ints(w.shape(), -9, 9, 60 + k, t),
                  random_ints({cfg.out}, -9, 9, 70 + k, t)};
      Grads acc{prior.x.clone(), prior.w.clone(), prior.b.clone()};
      ops::linear_backward(ctx, gy, x, w, acc.x, acc.w, acc.b, GradMode::Accumulate);
      require_equal(acc.x, plus(prior.x, want.x), what + ": grad_x (accumulate)");
      require_equal(acc.w, plus(prior.w, want.w), what + ": grad_w (accumulate)");
      require_equal(acc.b, plus(prior.b, want.b), what + ": grad_b (accumulate)");
    }
}

TEST_CASE("linear: each gradient output is optional") {
  Context ctx;
  Tensor x = random_ints({3, 4}, -5, 5, 1), w = random_ints({2, 4}, -5, 5, 2);
  Tensor gy = random_ints({3, 2}, -5, 5, 3);
  const Grads want = ref_backward(gy, x, w);
  Tensor gx = Tensor::empty(x.shape()), gw = Tensor::empty(w.shape()), gb = Tensor::empty({2});
  ops::linear_backward(ctx, gy, x, w, gx, Tensor(), Tensor(), GradMode::Overwrite);
  require_equal(gx, want.x, "grad_x alone");
  ops::linear_backward(ctx, gy, x, w, Tensor(), gw, Tensor(), GradMode::Overwrite);
  require_equal(gw, want.w, "grad_w alone");
  ops::linear_backward(ctx, gy, x, w, Tensor(), Tensor(), gb, GradMode::Overwrite);
  require_equal(gb, want.b, "grad_b alone");
  ops::linear_backward(ctx, gy, x, w, Tensor(), Tensor(), Tensor(), GradMode::Overwrite);
}

TEST_CASE("linear: f64 gradient check of x, w and b") {
  for (size_t k = 0; k < kConfigs.size(); ++k) check_gradients(linear_case(kConfigs[k], 100 + k));
}

TEST_CASE("linear: CPU vs CUDA" * doctest::test_suite("gpu")) {
  for (size_t k = 0; k < kConfigs.size(); ++k) check_cpu_vs_cuda(linear_case(kConfigs[k], 200 + k));
}

TEST_CASE("linear: bad arguments name the op and the tensor") {
  Context ctx;
  Tensor x = Tensor::zeros({3, 4}), w = Tensor::zeros({2, 4}), b = Tensor::zeros({2});
  Tensor y = Tensor::zeros({3, 2});
  CHECK_THROWS_WITH_AS(ops::linear_forward(ctx, Tensor::zeros({3, 4, 1}), w, b, y),
                       doctest::Contains("linear_forward: x must be [N, In]"), DataError);
  CHECK_THROWS_WITH_AS(ops::linear_forward(ctx, x, Tensor::zeros({2, 5}), b, y),
                       doctest::Contains("linear_forward: w has shape [2,5], expected [Out, 4]"),
                       DataError);
  CHECK_THROWS_WITH_AS(ops::linear_forward(ctx, x, w, Tensor::zeros({3}), y),
                       doctest::Contains("linear_forward: b has shape [3], expected [2]"),
                       DataError);
  CHECK_THROWS_WITH_AS(ops::linear_forward(ctx, x, w, b, Tensor::zeros({2, 3})),
                       doctest::Contains("linear_forward: y has shape [2,3], expected [3,2]"),
                       DataError);
  CHECK_THROWS_WITH_AS(ops::linear_forward(ctx, x, Tensor::zeros({2, 4}, DType::F64), b, y),
                       doctest::Contains("linear_forward: w is f64"), DataError);
  CHECK_THROWS_WITH_AS(ops::linear_forward(ctx, x, w, b, Tensor()),
                       doctest::Contains("linear_forward: y is undefined"), DataError);
  CHECK_THROWS_WITH_AS(ops::linear_forward(ctx, Tensor::zeros({3, 4}, DType::I32), w, b, y),
                       doctest::Contains("needs f32 or f64"), DataError);
  CHECK_THROWS_WITH_AS(
      ops::linear_backward(ctx, Tensor::zeros({3, 3}), x, w, x, w, b, GradMode::Overwrite),
      doctest::Contains("linear_backward: grad_y has shape [3,3], expected [3,2]"), DataError);
  CHECK_THROWS_WITH_AS(ops::linear_backward(ctx, y, x, w, Tensor(), Tensor::zeros({4, 2}), Tensor(),
                                            GradMode::Overwrite),
                       doctest::Contains("linear_backward: grad_w has shape [4,2], expected [2,4]"),
                       DataError);
  CHECK_THROWS_WITH_AS(ops::linear_backward(ctx, y, x, w, Tensor(), Tensor(),
                                            Tensor::zeros({2}, DType::F64), GradMode::Overwrite),
                       doctest::Contains("linear_backward: grad_b is f64"), DataError);
}

// PyTorch agreement (tests/python/torch_ref_linear.py).
TEST_CASE("linear: agrees with torch.nn.functional.linear" * doctest::test_suite("torch")) {
  Context ctx;
  const int n = int(torch_ref("linear_index", "cases").item(0));
  CHECK(n >= 2);
  for (int k = 0; k < n; ++k) {
    const std::string name = concat("linear_", k);
    Tensor x = torch_ref(name, "x"), w = torch_ref(name, "w"), gy = torch_ref(name, "grad_y");
    const bool bias = torch_ref(name, "has_bias").item(0) != 0;
    Tensor b = bias ? torch_ref(name, "b") : Tensor();
    Tensor y = Tensor::empty({x.dim(0), w.dim(0)});
    ops::linear_forward(ctx, x, w, b, y);
    require_close(y, torch_ref(name, "y"), 1e-5, 1e-4, name + ": y");
    Tensor gx = Tensor::empty(x.shape()), gw = Tensor::empty(w.shape());
    Tensor gb = bias ? Tensor::empty(b.shape()) : Tensor();
    ops::linear_backward(ctx, gy, x, w, gx, gw, gb, GradMode::Overwrite);
    require_close(gx, torch_ref(name, "grad_x"), 1e-5, 1e-4, name + ": grad_x");
    require_close(gw, torch_ref(name, "grad_w"), 1e-5, 1e-4, name + ": grad_w");
    if (bias) require_close(gb, torch_ref(name, "grad_b"), 1e-5, 1e-4, name + ": grad_b");
  }
}
