// Losses: cross-entropy with ignore_index (DynVision's masking: mean over valid rows, 0 when all
// are ignored), Poisson NLL (both log_input modes) and MSE. Forward and backward against plain
// loops, f64 gradient checks, CPU vs CUDA, bad arguments and agreement with PyTorch.
#include <cmath>

#include "kernels/dispatch.h"
#include "tests/harness.h"

using namespace dynsim;
using namespace dynsim::test;

namespace {

Tensor labels_of(const std::vector<double>& v) {
  return Tensor::from({int64_t(v.size())}, v, DType::I32);
}

// Per-row -log softmax(z)[label] = max + log(sum exp(z - max)) - z[label], summed in row order
// over the valid rows and divided by their count (0 if none).
Tensor ce_reference(const Tensor& z, const Tensor& lab, int ignore, Tensor* grad) {
  const int64_t N = z.dim(0), K = z.dim(1);
  double s = 0;
  int64_t valid = 0;
  for (int64_t r = 0; r < N; ++r) valid += int(lab.item(r)) != ignore;
  for (int64_t r = 0; r < N; ++r) {
    const int l = int(lab.item(r));
    double mx = z.item(r * K);
    for (int64_t j = 1; j < K; ++j) mx = std::max(mx, z.item(r * K + j));
    double se = 0;
    for (int64_t j = 0; j < K; ++j) se += std::exp(z.item(r * K + j) - mx);
    const double lse = std::log(se);
    if (l != ignore) s += mx + lse - z.item(r * K + l);
    if (grad)
      for (int64_t j = 0; j < K; ++j)
        grad->set(r * K + j,
                  l == ignore ? 0.0 : (std::exp(z.item(r * K + j) - mx - lse) - (j == l)) / valid);
  }
  return Tensor::from({1}, {valid ? s / double(valid) : 0.0}, z.dtype());
}

CaseBuilder ce_case(int64_t N, int64_t K, std::vector<double> labels, int ignore, uint64_t seed) {
  return [=](DType t) {
    OpCase c;
    c.name = concat("cross_entropy N=", N, " K=", K, " ignore_index=", ignore);
    c.input_names = {"logits", "labels"};
    c.inputs = {random_uniform({N, K}, -3, 3, seed, t), labels_of(labels)};
    c.differentiable = {true, false};
    CrossEntropyParams p;
    p.ignore_index = ignore;
    c.forward = [p](Context& ctx, const std::vector<Tensor>& in) {
      Tensor loss = ctx.empty({1}, in[0].dtype());
      ops::cross_entropy_forward(ctx, p, in[0], in[1], loss);
      return std::vector<Tensor>{loss};
    };
    c.backward = [p](Context& ctx, const std::vector<Tensor>& in, const std::vector<Tensor>& gout,
                     const std::vector<Tensor>& g, GradMode m) {
      ops::cross_entropy_backward(ctx, p, gout[0], in[0], in[1], g[0], m);
    };
    return c;
  };
}

CaseBuilder poisson_case(bool log_input, double eps, const Shape& s, uint64_t seed) {
  return [=](DType t) {
    OpCase c;
    c.name = concat("poisson_nll log_input=", log_input, " eps=", eps, " ", s.str());
    c.input_names = {"pred", "target"};
    c.inputs = {log_input ? random_uniform(s, -2, 2, seed, t) : random_uniform(s, 0.2, 3, seed, t),
                random_ints(s, 0, 5, seed + 1, t)};
    c.differentiable = {true, false};
    PoissonNllParams p;
    p.log_input = log_input;
    p.eps = eps;
    c.forward = [p](Context& ctx, const std::vector<Tensor>& in) {
      Tensor loss = ctx.empty({1}, in[0].dtype());
      ops::poisson_nll_forward(ctx, p, in[0], in[1], loss);
      return std::vector<Tensor>{loss};
    };
    c.backward = [p](Context& ctx, const std::vector<Tensor>& in, const std::vector<Tensor>& gout,
                     const std::vector<Tensor>& g, GradMode m) {
      ops::poisson_nll_backward(ctx, p, gout[0], in[0], in[1], g[0], m);
    };
    return c;
  };
}

CaseBuilder mse_case(const Shape& s, bool grad_target, uint64_t seed) {
  return [=](DType t) {
    OpCase c;
    c.name = concat("mse ", s.str(), grad_target ? " (grad of target too)" : "");
    c.input_names = {"pred", "target"};
    c.inputs = {random_uniform(s, -2, 2, seed, t), random_uniform(s, -2, 2, seed + 1, t)};
    c.differentiable = {true, grad_target};
    c.forward = [](Context& ctx, const std::vector<Tensor>& in) {
      Tensor loss = ctx.empty({1}, in[0].dtype());
      ops::mse_forward(ctx, in[0], in[1], loss);
      return std::vector<Tensor>{loss};
    };
    c.backward = [](Context& ctx, const std::vector<Tensor>& in, const std::vector<Tensor>& gout,
                    const std::vector<Tensor>& g,
                    GradMode m) { ops::mse_backward(ctx, gout[0], in[0], in[1], g[0], g[1], m); };
    return c;
  };
}

}  // namespace

TEST_CASE("cross_entropy: forward and backward against a plain loop, ignored rows left out") {
  Context ctx;
  const std::vector<double> lab = {2, -1, 0, 3, -1, 1};
  for (DType t : {DType::F32, DType::F64}) {
    CAPTURE(std::string(dtype_name(t)));
    Tensor z = random_ints({6, 4}, -4, 4, 51, t), labels = labels_of(lab);
    Tensor loss = Tensor::empty({1}, t);
    ops::cross_entropy_forward(ctx, {}, z, labels, loss);
    Tensor want_g = Tensor::empty(z.shape(), DType::F64);
    Tensor want = ce_reference(z, labels, -1, &want_g);
    require_equal(loss, want, "cross_entropy loss");
    Tensor g = Tensor::empty(z.shape(), t);
    ops::cross_entropy_backward(ctx, {}, Tensor::from({1}, {1.0}, t), z, labels, g,
                                GradMode::Overwrite);
    require_equal(g, want_g.to_dtype(t), "cross_entropy grad_logits");
    // The mean over the valid rows equals the loss of the valid rows alone.
    Tensor zv = Tensor::empty({4, 4}, t), lv = labels_of({2, 0, 3, 1}),
           lossv = Tensor::empty({1}, t);
    int64_t k = 0;
    for (int64_t r : {0, 2, 3, 5})
      for (int64_t j = 0; j < 4; ++j) zv.set(k++, z.item(r * 4 + j));
    ops::cross_entropy_forward(ctx, {}, zv, lv, lossv);
    require_equal(loss, lossv, "loss with ignored rows vs loss of the valid rows");
  }
  // Equal logits: -log(1/K) = log K.
  Tensor z = Tensor::zeros({2, 5}, DType::F64), loss = Tensor::empty({1}, DType::F64);
  ops::cross_entropy_forward(ctx, {}, z, labels_of({0, 4}), loss);
  CHECK(loss.item(0) == std::log(5.0));
}

TEST_CASE("cross_entropy: all rows ignored gives loss 0 and zero gradient") {
  Context ctx;
  Tensor z = random_uniform({3, 4}, -2, 2, 5, DType::F32), labels = labels_of({-1, -1, -1});
  Tensor loss = Tensor::from({1}, {7.0});
  ops::cross_entropy_forward(ctx, {}, z, labels, loss);
  CHECK(loss.item(0) == 0.0);
  Tensor g = Tensor::empty(z.shape());
  g.fill(std::nan(""));
  ops::cross_entropy_backward(ctx, {}, Tensor::from({1}, {1.0}), z, labels, g, GradMode::Overwrite);
  for (int64_t i = 0; i < g.numel(); ++i) CHECK(g.item(i) == 0.0);
  g.fill(0.5);
  ops::cross_entropy_backward(ctx, {}, Tensor::from({1}, {1.0}), z, labels, g,
                              GradMode::Accumulate);
  for (int64_t i = 0; i < g.numel(); ++i) CHECK(g.item(i) == 0.5);
}

TEST_CASE("cross_entropy: stable for huge logits") {
  Context ctx;
  Tensor z = Tensor::from({2, 3}, {1000, 0, -1000, 5e4, 5e4, 0}), loss = Tensor::empty({1});
  ops::cross_entropy_forward(ctx, {}, z, labels_of({0, 2}), loss);
  // Row 0: ~0; row 1: 5e4 + log 2. Mean: (5e4 + log 2) / 2.
  CHECK(loss.item(0) == doctest::Approx((5e4 + std::log(2.0)) / 2).epsilon(1e-7));
  Tensor g = Tensor::empty(z.shape());
  ops::cross_entropy_backward(ctx, {}, Tensor::from({1}, {1.0}), z, labels_of({0, 2}), g,
                              GradMode::Overwrite);
  for (int64_t i = 0; i < g.numel(); ++i) CHECK(std::isfinite(g.item(i)));
}

TEST_CASE("cross_entropy: labels outside [0, K) that are not ignore_index are data errors") {
  Context ctx;
  Tensor z = Tensor::zeros({4, 4}), loss = Tensor::empty({1}), g = Tensor::empty({4, 4});
  CHECK_THROWS_WITH_AS(ops::cross_entropy_forward(ctx, {}, z, labels_of({0, 3, 4, -1}), loss),
                       doctest::Contains("cross_entropy_forward: labels[2] = 4 is outside [0, 4)"),
                       DataError);
  CHECK_THROWS_WITH_AS(
      ops::cross_entropy_backward(ctx, {}, Tensor::from({1}, {1.0}), z, labels_of({0, -2, 1, 1}), g,
                                  GradMode::Overwrite),
      doctest::Contains("cross_entropy_backward: labels[1] = -2"), DataError);
  // Another ignore_index: 255 is skipped, and -1 becomes an error.
  CrossEntropyParams p;
  p.ignore_index = 255;
  ops::cross_entropy_forward(ctx, p, z, labels_of({0, 255, 1, 2}), loss);
  CHECK(loss.item(0) == doctest::Approx(std::log(4.0)));
  CHECK_THROWS_WITH_AS(ops::cross_entropy_forward(ctx, p, z, labels_of({0, -1, 1, 2}), loss),
                       doctest::Contains("labels[1] = -1 is outside [0, 4) and is not "
                                         "ignore_index (255)"),
                       DataError);
}

TEST_CASE("poisson_nll and mse: forward and backward against plain loops") {
  Context ctx;
  for (DType t : {DType::F32, DType::F64})
    for (bool log_input : {false, true}) {
      CAPTURE(std::string(dtype_name(t)));
      CAPTURE(log_input);
      Tensor x = log_input ? random_ints({3, 5}, -2, 2, 61, t) : random_ints({3, 5}, 1, 4, 61, t);
      Tensor y = random_ints({3, 5}, 0, 6, 62, t);
      PoissonNllParams p;
      p.log_input = log_input;
      Tensor loss = Tensor::empty({1}, t), g = Tensor::empty(x.shape(), t);
      ops::poisson_nll_forward(ctx, p, x, y, loss);
      ops::poisson_nll_backward(ctx, p, Tensor::from({1}, {0.5}, t), x, y, g, GradMode::Overwrite);
      double s = 0;
      Tensor want_g = Tensor::empty(x.shape(), t);
      const double n = double(x.numel());
      for (int64_t i = 0; i < x.numel(); ++i) {
        const double xi = x.item(i), yi = y.item(i);
        s += log_input ? std::exp(xi) - yi * xi : xi - yi * std::log(xi + p.eps);
        want_g.set(i, 0.5 / n * (log_input ? std::exp(xi) - yi : 1.0 - yi / (xi + p.eps)));
      }
      require_equal(loss, Tensor::from({1}, {s / n}, t), "poisson_nll loss");
      require_equal(g, want_g, "poisson_nll grad_pred");
    }
  // MSE on small integers is exact arithmetic.
  for (DType t : {DType::F32, DType::F64}) {
    Tensor x = random_ints({2, 3, 4}, -5, 5, 63, t), y = random_ints({2, 3, 4}, -5, 5, 64, t);
    Tensor loss = Tensor::empty({1}, t);
    ops::mse_forward(ctx, x, y, loss);
    double s = 0;
    for (int64_t i = 0; i < x.numel(); ++i) s += (x.item(i) - y.item(i)) * (x.item(i) - y.item(i));
    require_equal(loss, Tensor::from({1}, {s / 24}, t), "mse loss");
    Tensor gp = Tensor::empty(x.shape(), t), gt = Tensor::empty(x.shape(), t);
    ops::mse_backward(ctx, Tensor::from({1}, {3.0}, t), x, y, gp, gt, GradMode::Overwrite);
    for (int64_t i = 0; i < x.numel(); ++i) {
      CHECK(gp.item(i) == double(t == DType::F32 ? float(6.0 / 24 * (x.item(i) - y.item(i)))
                                                 : 6.0 / 24 * (x.item(i) - y.item(i))));
      CHECK(gt.item(i) == -gp.item(i));
    }
  }
}

TEST_CASE("losses: f64 gradient check") {
  check_gradients(ce_case(6, 5, {2, -1, 0, 4, -1, 1}, -1, 1));
  check_gradients(ce_case(4, 2, {1, 0, 0, 1}, -1, 2));
  check_gradients(ce_case(5, 3, {7, 2, 7, 0, 1}, 7, 3));
  check_gradients(ce_case(3, 4, {-1, -1, -1}, -1, 4));  // all ignored: zero gradient
  check_gradients(poisson_case(false, 1e-8, {2, 3, 4}, 5));
  check_gradients(poisson_case(false, 0.5, {7}, 6));
  check_gradients(poisson_case(true, 1e-8, {2, 3, 4}, 7));
  check_gradients(mse_case({2, 3, 4}, true, 8));
  check_gradients(mse_case({5, 1}, false, 9));
}

TEST_CASE("losses: CPU vs CUDA" * doctest::test_suite("gpu")) {
  check_cpu_vs_cuda(ce_case(6, 5, {2, -1, 0, 4, -1, 1}, -1, 1));
  check_cpu_vs_cuda(poisson_case(false, 1e-8, {2, 3, 4}, 5));
  check_cpu_vs_cuda(poisson_case(true, 1e-8, {2, 3, 4}, 7));
  check_cpu_vs_cuda(mse_case({2, 3, 4}, true, 8));
}

TEST_CASE("losses: bad arguments name the op and the tensor") {
  Context ctx;
  Tensor loss = Tensor::empty({1}), one = Tensor::from({1}, {1.0});
  CHECK_THROWS_WITH_AS(
      ops::cross_entropy_forward(ctx, {}, Tensor::zeros({4}), labels_of({0}), loss),
      doctest::Contains("cross_entropy_forward: logits must be [N, K]"), DataError);
  CHECK_THROWS_WITH_AS(
      ops::cross_entropy_forward(ctx, {}, Tensor::zeros({2, 3}), labels_of({0, 1, 2}), loss),
      doctest::Contains("cross_entropy_forward: labels has shape [3], expected [2]"), DataError);
  CHECK_THROWS_WITH_AS(
      ops::cross_entropy_forward(ctx, {}, Tensor::zeros({2, 3}), Tensor::zeros({2}), loss),
      doctest::Contains("cross_entropy_forward: labels must be host i32"), DataError);
  CHECK_THROWS_WITH_AS(ops::cross_entropy_forward(ctx, {}, Tensor::zeros({2, 3}), labels_of({0, 1}),
                                                  Tensor::empty({2})),
                       doctest::Contains("cross_entropy_forward: loss has shape [2]"), DataError);
  CHECK_THROWS_WITH_AS(ops::cross_entropy_backward(ctx, {}, Tensor::from({1}, {1.0}, DType::F64),
                                                   Tensor::zeros({2, 3}), labels_of({0, 1}),
                                                   Tensor::zeros({2, 3}), GradMode::Overwrite),
                       doctest::Contains("cross_entropy_backward: grad_loss is f64"), DataError);
  Tensor a = Tensor::zeros({2, 3}), b = Tensor::zeros({3, 2});
  CHECK_THROWS_WITH_AS(ops::poisson_nll_forward(ctx, {}, a, b, loss),
                       doctest::Contains("poisson_nll_forward: target has shape [3,2]"), DataError);
  CHECK_THROWS_WITH_AS(ops::poisson_nll_backward(ctx, {}, one, a, a, Tensor(), GradMode::Overwrite),
                       doctest::Contains("poisson_nll_backward: grad_pred is undefined"),
                       DataError);
  CHECK_THROWS_WITH_AS(ops::mse_forward(ctx, a, a, Tensor::empty({1}, DType::F64)),
                       doctest::Contains("mse_forward: loss is f64"), DataError);
  CHECK_THROWS_WITH_AS(ops::mse_backward(ctx, one, a, a, b, Tensor(), GradMode::Overwrite),
                       doctest::Contains("mse_backward: grad_pred has shape [3,2]"), DataError);
  CHECK_THROWS_WITH_AS(ops::mse_forward(ctx, Tensor::zeros({0}), Tensor::zeros({0}), loss),
                       doctest::Contains("mse_forward: pred f32[0]@cpu is empty"), DataError);
}

TEST_CASE("losses: agree with PyTorch" * doctest::test_suite("torch")) {
  Context ctx;
  SUBCASE("cross_entropy, ignore_index = -1") {
    Tensor z = torch_ref("ce_ignore", "logits"), lab = torch_ref("ce_ignore", "labels");
    Tensor g = torch_ref("ce_ignore", "g");
    Tensor loss = Tensor::empty({1}), gz = Tensor::empty(z.shape());
    ops::cross_entropy_forward(ctx, {}, z, lab, loss);
    require_close(loss, torch_ref("ce_ignore", "loss"), 1e-5, 1e-5, "cross_entropy vs torch");
    ops::cross_entropy_backward(ctx, {}, g, z, lab, gz, GradMode::Overwrite);
    require_close(gz, torch_ref("ce_ignore", "grad_logits"), 1e-6, 1e-4,
                  "cross_entropy grad vs torch");
  }
  for (const char* name : {"poisson_log_false", "poisson_log_true"}) {
    SUBCASE(name) {
      PoissonNllParams p;
      p.log_input = std::string(name) == "poisson_log_true";
      p.eps = 1e-8;
      Tensor x = torch_ref(name, "pred"), y = torch_ref(name, "target"), g = torch_ref(name, "g");
      Tensor loss = Tensor::empty({1}), gx = Tensor::empty(x.shape());
      ops::poisson_nll_forward(ctx, p, x, y, loss);
      require_close(loss, torch_ref(name, "loss"), 1e-5, 1e-5, concat(name, " loss vs torch"));
      ops::poisson_nll_backward(ctx, p, g, x, y, gx, GradMode::Overwrite);
      require_close(gx, torch_ref(name, "grad_pred"), 1e-6, 1e-4, concat(name, " grad vs torch"));
    }
  }
  SUBCASE("mse") {
    Tensor x = torch_ref("mse", "pred"), y = torch_ref("mse", "target"), g = torch_ref("mse", "g");
    Tensor loss = Tensor::empty({1}), gx = Tensor::empty(x.shape()), gy = Tensor::empty(x.shape());
    ops::mse_forward(ctx, x, y, loss);
    require_close(loss, torch_ref("mse", "loss"), 1e-5, 1e-5, "mse loss vs torch");
    ops::mse_backward(ctx, g, x, y, gx, gy, GradMode::Overwrite);
    require_close(gx, torch_ref("mse", "grad_pred"), 1e-6, 1e-4, "mse grad_pred vs torch");
    require_close(gy, torch_ref("mse", "grad_target"), 1e-6, 1e-4, "mse grad_target vs torch");
  }
}
