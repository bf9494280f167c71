// sum/mean over all elements and over H, W: exact forward on small integers, double
// accumulation of f32 inputs, thread-count independence, f64 gradient checks, CPU vs CUDA and
// bad arguments. abs_mean_std (the scheduler's layer recording) against plain double loops.
#include <cmath>

#include "kernels/dispatch.h"
#include "tests/harness.h"

using namespace dynsim;
using namespace dynsim::test;

namespace {

enum class Red { SumAll, MeanAll, SumHw, MeanHw };
const char* red_name(Red r) {
  switch (r) {
    case Red::SumAll:
      return "sum_all";
    case Red::MeanAll:
      return "mean_all";
    case Red::SumHw:
      return "sum_hw";
    default:
      return "mean_hw";
  }
}
bool over_hw(Red r) {
  return r == Red::SumHw || r == Red::MeanHw;
}

Shape out_shape(Red r, const Shape& x) {
  return over_hw(r) ? Shape{x[0], x[1]} : Shape{1};
}

void forward(Context& c, Red r, const Tensor& x, const Tensor& y) {
  switch (r) {
    case Red::SumAll:
      return ops::sum_all_forward(c, x, y);
    case Red::MeanAll:
      return ops::mean_all_forward(c, x, y);
    case Red::SumHw:
      return ops::sum_hw_forward(c, x, y);
    case Red::MeanHw:
      return ops::mean_hw_forward(c, x, y);
  }
}
void backward(Context& c, Red r, const Tensor& gy, const Tensor& gx, GradMode m) {
  switch (r) {
    case Red::SumAll:
      return ops::sum_all_backward(c, gy, gx, m);
    case Red::MeanAll:
      return ops::mean_all_backward(c, gy, gx, m);
    case Red::SumHw:
      return ops::sum_hw_backward(c, gy, gx, m);
    case Red::MeanHw:
      return ops::mean_hw_backward(c, gy, gx, m);
  }
}

// Plain loops: sum in double over each output's elements (in order), divide for means.
Tensor reference(Red r, const Tensor& x) {
  Tensor y = Tensor::empty(out_shape(r, x.shape()), x.dtype());
  const int64_t per = over_hw(r) ? x.dim(2) * x.dim(3) : x.numel();
  for (int64_t o = 0; o < y.numel(); ++o) {
    double s = 0;
    for (int64_t i = 0; i < per; ++i) s += x.item(o * per + i);
    y.set(o, (r == Red::MeanAll || r == Red::MeanHw) ? s / double(per) : s);
  }
  return y;
}

CaseBuilder reduce_case(Red r, const Shape& s, uint64_t seed) {
  return [=](DType t) {
    OpCase c;
    c.name = concat(red_name(r), " ", s.str());
    c.input_names = {"x"};
    c.inputs = {random_uniform(s, -2, 2, seed, t)};
    c.differentiable = {true};
    c.forward = [r](Context& ctx, const std::vector<Tensor>& in) {
      Tensor y = ctx.empty(out_shape(r, in[0].shape()), in[0].dtype());
      forward(ctx, r, in[0], y);
      return std::vector<Tensor>{y};
    };
    c.backward = [r](Context& ctx, const std::vector<Tensor>& in, const std::vector<Tensor>& gout,
                     const std::vector<Tensor>& g,
                     GradMode m) { backward(ctx, r, gout[0], g[0], m); };
    return c;
  };
}

const Red kAll[] = {Red::SumAll, Red::MeanAll, Red::SumHw, Red::MeanHw};

}  // namespace

TEST_CASE("reduce: exact forward and backward on small integers") {
  Context ctx;
  for (DType t : {DType::F32, DType::F64})
    for (Red r : kAll) {
      CAPTURE(std::string(dtype_name(t)));
      CAPTURE(red_name(r));
      Tensor x = random_ints({2, 3, 4, 5}, -9, 9, 41, t);
      Tensor y = Tensor::empty(out_shape(r, x.shape()), t);
      forward(ctx, r, x, y);
      require_equal(y, reference(r, x), red_name(r));
      // Backward broadcasts grad_y, divided by the count for means (same division here).
      Tensor gy = random_ints(y.shape(), -4, 4, 42, t), gx = Tensor::empty(x.shape(), t);
      backward(ctx, r, gy, gx, GradMode::Overwrite);
      const int64_t per = over_hw(r) ? 20 : x.numel();
      const bool mean = r == Red::MeanAll || r == Red::MeanHw;
      Tensor want = Tensor::empty(x.shape(), t);
      for (int64_t i = 0; i < x.numel(); ++i) {
        const double g = gy.item(i / per);
        want.set(i, mean ? g / double(per) : g);
      }
      require_equal(gx, want, concat(red_name(r), " backward"));
    }
}

TEST_CASE("reduce: f32 inputs accumulate in double, independent of the thread count") {
  ContextOptions o1, o2;
  o1.threads = 1;
  o2.threads = 2;
  Context c1(o1), c2(o2);
  // 2^22 copies of 0.1f: each partial sum is exact in double, a float accumulator is far off.
  const Shape big{4, 16, 256, 256};
  Tensor x = Tensor::empty(big);
  x.fill(0.1);
  Tensor y = Tensor::empty({1});
  ops::sum_all_forward(c2, x, y);
  CHECK(y.item(0) == double(float(double(x.numel()) * double(0.1f))));
  ops::mean_all_forward(c2, x, y);
  CHECK(y.item(0) == double(0.1f));
  // Random data: 1 and 2 threads give the same bits, for every reduction.
  Tensor xr = random_uniform(big, -1, 1, 7, DType::F32);
  for (Red r : kAll) {
    CAPTURE(red_name(r));
    Tensor y1 = Tensor::empty(out_shape(r, big)), y2 = Tensor::empty(out_shape(r, big));
    forward(c1, r, xr, y1);
    forward(c2, r, xr, y2);
    require_equal(y2, y1, concat(red_name(r), " 2 threads vs 1"));
    require_close(y1, reference(r, xr).to_dtype(DType::F32), 0, 1e-6,
                  concat(red_name(r), " vs double loop"));
  }
}

TEST_CASE("reduce: f64 gradient check") {
  for (Red r : kAll) {
    check_gradients(reduce_case(r, {2, 3, 4, 5}, 1));
    check_gradients(reduce_case(r, {1, 1, 1, 1}, 2));
    check_gradients(reduce_case(r, {3, 2, 7, 1}, 3));
  }
}

TEST_CASE("reduce: CPU vs CUDA" * doctest::test_suite("gpu")) {
  for (Red r : kAll) check_cpu_vs_cuda(reduce_case(r, {2, 3, 8, 8}, 1));
}

TEST_CASE("reduce: bad arguments name the op and the tensor") {
  Context ctx;
  Tensor x = Tensor::zeros({2, 3, 4, 5});
  CHECK_THROWS_WITH_AS(ops::sum_all_forward(ctx, x, Tensor::zeros({2})),
                       doctest::Contains("sum_all_forward: y has shape [2], expected [1]"),
                       DataError);
  CHECK_THROWS_WITH_AS(ops::mean_hw_forward(ctx, x, Tensor::zeros({3, 2})),
                       doctest::Contains("mean_hw_forward: y has shape [3,2], expected [2,3]"),
                       DataError);
  CHECK_THROWS_WITH_AS(ops::sum_hw_forward(ctx, Tensor::zeros({2, 3, 4}), Tensor::zeros({2, 3})),
                       doctest::Contains("sum_hw_forward: x must be NCHW"), DataError);
  CHECK_THROWS_WITH_AS(ops::mean_all_forward(ctx, Tensor::zeros({0}), Tensor::zeros({1})),
                       doctest::Contains("mean_all_forward: x f32[0]@cpu is empty"), DataError);
  CHECK_THROWS_WITH_AS(ops::sum_all_forward(ctx, x, Tensor::zeros({1}, DType::F64)),
                       doctest::Contains("sum_all_forward: y is f64"), DataError);
  CHECK_THROWS_WITH_AS(
      ops::mean_hw_backward(ctx, Tensor::zeros({2, 4}), x, GradMode::Overwrite),
      doctest::Contains("mean_hw_backward: grad_y has shape [2,4], expected [2,3]"), DataError);
  CHECK_THROWS_WITH_AS(ops::sum_all_backward(ctx, Tensor::zeros({2}), x, GradMode::Overwrite),
                       doctest::Contains("sum_all_backward: grad_y has shape [2]"), DataError);
  CHECK_THROWS_WITH_AS(
      ops::sum_all_forward(ctx, Tensor::zeros({2}, DType::I32), Tensor::zeros({1})),
      doctest::Contains("needs f32 or f64"), DataError);
  // The empty sum is 0.
  Tensor y = Tensor::zeros({1});
  y.fill(5);
  ops::sum_all_forward(ctx, Tensor::zeros({0}), y);
  CHECK(y.item(0) == 0.0);
}

// ---- abs_mean_std (the scheduler's layer recording) ------------------------------------------

namespace {

// Per sample: mean of |x| and the n - 1 std, plain double loops in order, into column `col`.
void abs_stats_reference(const Tensor& x, int64_t col, Tensor& mean, Tensor& sd) {
  const int64_t B = x.dim(0), n = x.numel() / B, T = mean.dim(1);
  for (int64_t b = 0; b < B; ++b) {
    double s = 0, v = 0;
    for (int64_t i = 0; i < n; ++i) s += std::abs(x.item(b * n + i));
    const double m = s / double(n);
    for (int64_t i = 0; i < n; ++i)
      v += (std::abs(x.item(b * n + i)) - m) * (std::abs(x.item(b * n + i)) - m);
    mean.set(b * T + col, m);
    sd.set(b * T + col, n > 1 ? std::sqrt(v / double(n - 1)) : 0.0);
  }
}

CaseBuilder abs_stats_case(const Shape& s, int64_t T, int64_t col, uint64_t seed) {
  return [=](DType t) {
    OpCase c;
    c.name = concat("abs_mean_std ", s.str(), " column ", col, " of ", T);
    c.input_names = {"x"};
    c.inputs = {random_uniform(s, -2, 2, seed, t)};
    c.differentiable = {false};
    c.forward = [=](Context& ctx, const std::vector<Tensor>& in) {
      Tensor m = ctx.zeros(Shape{s[0], T}, in[0].dtype()),
             sd = ctx.zeros(Shape{s[0], T}, in[0].dtype());
      ops::abs_mean_std(ctx, in[0], col, m, sd);
      return std::vector<Tensor>{m, sd};
    };
    c.backward = [](Context&, const std::vector<Tensor>&, const std::vector<Tensor>&,
                    const std::vector<Tensor>&, GradMode) {};  // forward only
    return c;
  };
}

}  // namespace

TEST_CASE("abs_mean_std: per-sample mean and n-1 std of |x| into one column, other columns kept") {
  Context ctx;
  for (DType t : {DType::F32, DType::F64}) {
    const Tensor x = random_uniform({3, 4, 5, 6}, -2, 2, 11, t);
    Tensor m = Tensor::empty({3, 7}, t), sd = Tensor::empty({3, 7}, t);
    m.fill(-9);
    sd.fill(-9);
    Tensor want_m = m.clone(), want_sd = sd.clone();
    ops::abs_mean_std(ctx, x, 4, m, sd);
    abs_stats_reference(x, 4, want_m, want_sd);
    require_equal(m, want_m, concat("mean (", dtype_name(t), ")"));
    require_equal(sd, want_sd, concat("sd (", dtype_name(t), ")"));
  }
  // One element per sample: std 0 (torch.std would give NaN; the recording keeps 0).
  Tensor one = Tensor::from({2, 1}, {-3.0, 0.5}), m = Tensor::zeros({2, 1}),
         sd = Tensor::zeros({2, 1});
  sd.fill(7);
  ops::abs_mean_std(ctx, one, 0, m, sd);
  CHECK(m.item(0) == 3.0);
  CHECK(m.item(1) == 0.5);
  CHECK(sd.item(0) == 0.0);
  // Bad arguments name the op and the tensor.
  Tensor x = Tensor::zeros({2, 3, 4, 4});
  CHECK_THROWS_WITH_AS(ops::abs_mean_std(ctx, x, 5, Tensor::zeros({2, 5}), Tensor::zeros({2, 5})),
                       doctest::Contains("abs_mean_std: column 5 outside [0, 5)"), DataError);
  CHECK_THROWS_WITH_AS(ops::abs_mean_std(ctx, x, 0, Tensor::zeros({3, 5}), Tensor::zeros({3, 5})),
                       doctest::Contains("abs_mean_std: mean must be [2, T]"), DataError);
  CHECK_THROWS_WITH_AS(ops::abs_mean_std(ctx, x, 0, Tensor::zeros({2, 5}), Tensor::zeros({2, 4})),
                       doctest::Contains("abs_mean_std: sd has shape [2,4]"), DataError);
  CHECK_THROWS_WITH_AS(
      ops::abs_mean_std(ctx, x, 0, Tensor::zeros({2, 5}, DType::F64), Tensor::zeros({2, 5})),
      doctest::Contains("abs_mean_std: mean is f64"), DataError);
}

TEST_CASE("abs_mean_std: CPU vs CUDA" * doctest::test_suite("gpu")) {
  check_cpu_vs_cuda(abs_stats_case({3, 4, 5, 6}, 7, 2, 1));
  check_cpu_vs_cuda(abs_stats_case({2, 36, 64, 64}, 3, 0, 2));  // several parts per sample
  check_cpu_vs_cuda(abs_stats_case({2, 36, 64, 64}, 3, 2, 3), 1e-10, DType::F64);
}
