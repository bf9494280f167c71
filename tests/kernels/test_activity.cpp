// DynVision's activity loss ops (kernels/activity.h): activity_accumulate and activity_seed
// against brute-force loops written here (bit for bit: the CPU twin must reproduce the engine's
// former host loops, sequential per sample), on wide-range values where any other summation
// order changes the bits; f64 central differences of L(y) = sum_b |s_b| / n against the seed;
// thread-count independence; bad arguments. CPU vs CUDA: tests/kernels/test_cuda_ops.cpp.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>

#include "kernels/dispatch.h"
#include "tests/harness.h"

using namespace dynsim;
using namespace dynsim::test;

namespace {

// Values spread over 16 decades with random signs: reordering a sum of these changes its bits.
Tensor wide_values(const Shape& s, uint64_t seed, DType t) {
  std::mt19937_64 g(seed);
  std::uniform_real_distribution<double> mant(0.5, 1.0), expo(-8, 8);
  Tensor r = Tensor::empty(s, t);
  for (int64_t i = 0; i < r.numel(); ++i)
    r.set(i, (g() & 1 ? -1.0 : 1.0) * mant(g) * std::pow(10.0, expo(g)));
  return r;
}

// got and want hold the same bits (as doubles: exact for f32 too, and -0 differs from +0).
void require_bits(const Tensor& got, const Tensor& want, const std::string& what) {
  REQUIRE_MESSAGE(got.shape() == want.shape(), what, ": shape ", got.shape().str());
  REQUIRE(got.dtype() == want.dtype());
  for (int64_t i = 0; i < got.numel(); ++i) {
    const double a = got.item(i), b = want.item(i);
    if (std::memcmp(&a, &b, sizeof a) != 0) {
      char buf[96];
      std::snprintf(buf, sizeof buf, " is %.17g, expected %.17g", a, b);
      FAIL(what, ": element ", i, buf);
    }
  }
}

// The engine's host loop (engine/autograd/bptt_forward.cpp add_activity), element by element.
void accumulate_reference(const Tensor& y, bool is_signed, Tensor& acc) {
  const int64_t B = y.dim(0), n = y.numel() / B;
  for (int64_t b = 0; b < B; ++b) {
    double s = 0;
    for (int64_t i = 0; i < n; ++i) {
      const double v = y.item(b * n + i);
      s += is_signed ? v : std::abs(v);
    }
    acc.set(b, acc.item(b) + std::abs(s) / double(n));
  }
}

// The engine's host loop (engine/autograd/bptt_reverse.cpp seed_activity):
// grad += T(coef * sign / n).
template <class T>
void seed_reference_t(const Tensor& y, double coef, bool is_signed, Tensor& grad) {
  const int64_t B = y.dim(0), n = y.numel() / B;
  const T* p = y.data<T>();
  T* q = grad.data<T>();
  for (int64_t b = 0; b < B; ++b) {
    double sum = 0;
    for (int64_t i = 0; i < n; ++i) sum += double(p[b * n + i]);
    const double sum_sign = sum > 0 ? 1.0 : (sum < 0 ? -1.0 : 0.0);
    for (int64_t i = 0; i < n; ++i) {
      const double v = p[b * n + i];
      const double sg = is_signed ? sum_sign : (v > 0 ? 1.0 : (v < 0 ? -1.0 : 0.0));
      q[b * n + i] = T(q[b * n + i] + T(coef * sg / double(n)));
    }
  }
}
void seed_reference(const Tensor& y, double coef, bool is_signed, Tensor& grad) {
  if (y.dtype() == DType::F32)
    seed_reference_t<float>(y, coef, is_signed, grad);
  else
    seed_reference_t<double>(y, coef, is_signed, grad);
}

// Shapes: B = 1 and B > 1, odd sizes, a rank-1 y (n = 1), and one above the parallel threshold.
const std::vector<Shape> kShapes = {{1, 7}, {1, 3, 5, 7},   {3, 5, 7, 9},
                                    {6},    {5, 2, 11, 13}, {4, 3, 61, 67}};

// L(y) = sum_b |s_b| / n through the op (acc starts at 0).
double activity_value(Context& ctx, const Tensor& y, bool is_signed) {
  Tensor acc = Tensor::zeros({y.dim(0)}, DType::F64);
  ops::activity_accumulate(ctx, y, is_signed, acc);
  double l = 0;
  for (int64_t b = 0; b < y.dim(0); ++b) l += acc.item(b);
  return l;
}

}  // namespace

TEST_CASE("activity: accumulate equals the sequential host loop bit for bit, onto a nonzero acc") {
  Context ctx;
  uint64_t seed = 1;
  for (DType t : {DType::F32, DType::F64})
    for (bool is_signed : {false, true})
      for (const Shape& s : kShapes) {
        const std::string tag =
            concat("accumulate ", dtype_name(t), is_signed ? " signed " : " absolute ", s.str());
        const Tensor y = wide_values(s, ++seed, t);
        Tensor acc = random_uniform({s[0]}, 0.5, 2, ++seed, DType::F64);
        Tensor want = acc.clone();
        accumulate_reference(y, is_signed, want);
        ops::activity_accumulate(ctx, y, is_signed, acc);
        require_bits(acc, want, tag);
        // A second call adds again (the loss sums over steps and modules).
        accumulate_reference(y, is_signed, want);
        ops::activity_accumulate(ctx, y, is_signed, acc);
        require_bits(acc, want, tag + " (second call)");
      }
}

TEST_CASE("activity: signed and absolute differ as |sum y| and sum |y|") {
  Context ctx;
  const Tensor y = Tensor::from({2, 4}, {1, -3, 2, 4, -1, -1, 0, -2}, DType::F64);
  Tensor a = Tensor::zeros({2}, DType::F64), s = Tensor::zeros({2}, DType::F64);
  ops::activity_accumulate(ctx, y, false, a);
  ops::activity_accumulate(ctx, y, true, s);
  CHECK(a.item(0) == 10.0 / 4);
  CHECK(a.item(1) == 4.0 / 4);
  CHECK(s.item(0) == 4.0 / 4);
  CHECK(s.item(1) == 4.0 / 4);
}

TEST_CASE("activity: seed equals the host loop bit for bit, zeros in y included") {
  Context ctx;
  uint64_t seed = 100;
  for (DType t : {DType::F32, DType::F64})
    for (bool is_signed : {false, true})
      for (double coef : {1.0, -0.37, 3e-5})
        for (const Shape& s : kShapes) {
          const std::string tag =
              concat("seed ", dtype_name(t), is_signed ? " signed " : " absolute ", s.str(),
                     " coef ", coef);
          Tensor y = wide_values(s, ++seed, t);
          for (int64_t i = 0; i < y.numel(); i += 5) y.set(i, i % 10 ? -0.0 : 0.0);
          Tensor grad = random_uniform(s, -1, 1, ++seed, t);
          Tensor want = grad.clone();
          seed_reference(y, coef, is_signed, want);
          ops::activity_seed(ctx, y, coef, is_signed, grad);
          require_bits(grad, want, tag);
        }
  // A signed sample whose sum is exactly 0 gets sign 0; the absolute mode skips only the zeros.
  for (DType t : {DType::F32, DType::F64}) {
    const Tensor y = Tensor::from({2, 4}, {1, -1, 2, -2, 0, 3, -1, 0}, t);
    Tensor gs = Tensor::zeros({2, 4}, t), ga = Tensor::zeros({2, 4}, t);
    ops::activity_seed(ctx, y, 2.0, true, gs);
    ops::activity_seed(ctx, y, 2.0, false, ga);
    require_bits(gs, Tensor::from({2, 4}, {0, 0, 0, 0, 0.5, 0.5, 0.5, 0.5}, t), "signed, sum 0");
    require_bits(ga, Tensor::from({2, 4}, {0.5, -0.5, 0.5, -0.5, 0, 0.5, -0.5, 0}, t),
                 "absolute, zeros");
  }
}

TEST_CASE("activity: the result does not depend on the thread count") {
  for (bool is_signed : {false, true}) {
    const Tensor y = wide_values({7, 3, 61, 67}, 200, DType::F32);
    Tensor acc[2], grad[2];
    for (int k = 0; k < 2; ++k) {
      ContextOptions o;
      o.threads = k == 0 ? 1 : 3;
      Context ctx(o);
      acc[k] = Tensor::zeros({7}, DType::F64);
      grad[k] = Tensor::zeros(y.shape(), DType::F32);
      ops::activity_accumulate(ctx, y, is_signed, acc[k]);
      ops::activity_seed(ctx, y, 0.5, is_signed, grad[k]);
    }
    require_bits(acc[1], acc[0], "accumulate, 1 vs 3 threads");
    require_bits(grad[1], grad[0], "seed, 1 vs 3 threads");
  }
}

TEST_CASE("activity: f64 central differences of sum_b |s_b| / n match the seed") {
  Context ctx;
  const double eps = 1e-6;
  for (bool is_signed : {false, true})
    for (const Shape& s : {Shape{1, 2, 3, 4}, Shape{3, 5, 7}, Shape{4, 9}}) {
      CAPTURE(is_signed);
      CAPTURE(s.str());
      // Away from the kinks: |y| >= 0.1, and each sample's sum clearly nonzero (shifted by
      // +-0.6 per element, alternating sign across samples).
      Tensor y = random_away_from_zero(s, -1, 1, 0.1, 300 + uint64_t(s[0]), DType::F64);
      const int64_t B = s[0], n = y.numel() / B;
      if (is_signed)
        for (int64_t b = 0; b < B; ++b)
          for (int64_t i = 0; i < n; ++i) {
            const double v = y.item(b * n + i) + (b % 2 ? -0.6 : 0.6);
            y.set(b * n + i, std::abs(v) < 0.1 ? (b % 2 ? -0.7 : 0.7) : v);
          }
      for (int64_t b = 0; b < B; ++b) {
        double sum = 0;
        for (int64_t i = 0; i < n; ++i) sum += y.item(b * n + i);
        if (is_signed) REQUIRE(std::abs(sum) > 0.05 * double(n));
      }
      for (double coef : {1.0, -0.7}) {
        Tensor grad = Tensor::zeros(s, DType::F64);
        ops::activity_seed(ctx, y, coef, is_signed, grad);
        Tensor fd = Tensor::empty(s, DType::F64);
        for (int64_t i = 0; i < y.numel(); ++i) {
          const double v = y.item(i);
          Tensor yp = y.clone(), ym = y.clone();
          yp.set(i, v + eps);
          ym.set(i, v - eps);
          fd.set(i, coef *
                        (activity_value(ctx, yp, is_signed) - activity_value(ctx, ym, is_signed)) /
                        (2 * eps));
        }
        require_close(grad, fd, 1e-8, 1e-6, concat("d activity / dy, coef ", coef));
        // The gradient is not trivially zero: every element carries +-coef / n.
        for (int64_t i = 0; i < y.numel(); ++i)
          REQUIRE(std::abs(grad.item(i)) == std::abs(coef) / double(n));
      }
    }
}

TEST_CASE("activity: bad arguments are refused by name") {
  Context ctx;
  const Tensor y = random_uniform({3, 4, 5}, -1, 1, 400, DType::F32);
  auto msg = [](const char* s) { return doctest::Contains(s); };
  // acc: wrong dtype, wrong shapes, undefined.
  CHECK_THROWS_WITH_AS(ops::activity_accumulate(ctx, y, false, Tensor::zeros({3}, DType::F32)),
                       msg("activity_accumulate: acc is f32[3]"), DataError);
  CHECK_THROWS_WITH_AS(ops::activity_accumulate(ctx, y, false, Tensor::zeros({4}, DType::F64)),
                       msg("activity_accumulate: acc has shape [4], expected [3]"), DataError);
  CHECK_THROWS_WITH_AS(ops::activity_accumulate(ctx, y, true, Tensor::zeros({3, 1}, DType::F64)),
                       msg("activity_accumulate: acc has shape [3,1]"), DataError);
  CHECK_THROWS_WITH_AS(ops::activity_accumulate(ctx, y, true, Tensor()),
                       msg("activity_accumulate: acc is undefined"), DataError);
  // grad_y: wrong shape, wrong dtype, y itself.
  CHECK_THROWS_WITH_AS(ops::activity_seed(ctx, y, 1.0, false, Tensor::zeros({3, 20})),
                       msg("activity_seed: grad_y has shape [3,20], expected [3,4,5]"), DataError);
  CHECK_THROWS_WITH_AS(ops::activity_seed(ctx, y, 1.0, true, Tensor::zeros({3, 4, 5}, DType::F64)),
                       msg("activity_seed: grad_y is f64[3,4,5]"), DataError);
  CHECK_THROWS_WITH_AS(ops::activity_seed(ctx, y, 1.0, false, y),
                       msg("activity_seed: grad_y f32[3,4,5]@cpu is y itself"), DataError);
  // y: integer, empty samples, undefined.
  CHECK_THROWS_WITH_AS(ops::activity_accumulate(ctx, Tensor::zeros({3, 2}, DType::I32), false,
                                                Tensor::zeros({3}, DType::F64)),
                       msg("activity_accumulate: needs f32 or f64"), DataError);
  CHECK_THROWS_WITH_AS(
      ops::activity_seed(ctx, Tensor::zeros({2, 0}), 1.0, false, Tensor::zeros({2, 0})),
      msg("activity_seed: y f32[2,0]@cpu has empty samples"), DataError);
  CHECK_THROWS_WITH_AS(
      ops::activity_accumulate(ctx, Tensor(), false, Tensor::zeros({3}, DType::F64)),
      msg("activity_accumulate: input is undefined"), DataError);
  // Nothing was written by a refused call.
  Tensor acc = Tensor::zeros({3}, DType::F64);
  CHECK_THROWS_AS(ops::activity_seed(ctx, y, 1.0, false, acc), DataError);
  for (int64_t b = 0; b < 3; ++b) CHECK(acc.item(b) == 0.0);
}
