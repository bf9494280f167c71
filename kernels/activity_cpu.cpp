// CPU twin of the activity loss (kernels/activity.h): per sample s = sum of y (signed) or |y|
// (absolute), accumulated in double sequentially in index order; acc[b] += |s| / n, and the seed
// grad_y += T(coef * sign / n). Bit for bit the reverse mode's host loops (add_activity,
// engine/autograd/bptt_forward.cpp; seed_activity, bptt_reverse.cpp); samples run in parallel,
// each one's order stays sequential.
#include "kernels/activity.h"
#include "kernels/activity_math.h"

namespace dynsim::cpu {

namespace {

template <class T>
double sample_sum(const T* p, int64_t n, bool is_signed) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += math::activity_term(p[i], is_signed);
  return s;
}

}  // namespace

void activity_accumulate(Context& c, const Tensor& y, bool is_signed, const Tensor& acc) {
  const char* op = "activity_accumulate";
  with_float_type(op, y, [&](auto t) {
    using T = decltype(t);
    const int64_t n = check_activity_accumulate(op, y, acc), B = y.dim(0);
    const T* p = y.data<T>();
    double* a = acc.data<double>();
#pragma omp parallel for num_threads(c.threads()) schedule(static) if (B > 1 && B * n >= (1 << 15))
    for (int64_t b = 0; b < B; ++b)
      a[b] += std::abs(sample_sum(p + b * n, n, is_signed)) / double(n);
  });
}

void activity_seed(Context& c, const Tensor& y, double coef, bool is_signed, const Tensor& grad_y) {
  const char* op = "activity_seed";
  with_float_type(op, y, [&](auto t) {
    using T = decltype(t);
    const int64_t n = check_activity_seed(op, y, grad_y), B = y.dim(0);
    const T* py = y.data<T>();
    T* pg = grad_y.data<T>();
#pragma omp parallel for num_threads(c.threads()) schedule(static) if (B > 1 && B * n >= (1 << 15))
    for (int64_t b = 0; b < B; ++b) {
      const T* p = py + b * n;
      T* q = pg + b * n;
      if (is_signed) {
        const T step =
            math::activity_seed_step<T>(coef, math::activity_sign(sample_sum(p, n, true)), n);
        for (int64_t i = 0; i < n; ++i) q[i] += step;
      } else {
        for (int64_t i = 0; i < n; ++i)
          q[i] += math::activity_seed_step<T>(coef, math::activity_sign(double(p[i])), n);
      }
    }
  });
}

}  // namespace dynsim::cpu

namespace dynsim {

namespace {
int64_t check_samples(const char* op, const Tensor& y) {
  if (!y.defined() || y.rank() < 1)
    throw DataError(concat(op, ": y must be [B, ...], got ", y.defined() ? y.str() : "undefined"));
  const int64_t B = y.dim(0);
  if (B < 1 || y.numel() / B < 1)
    throw DataError(concat(op, ": y ", y.str(), " has empty samples"));
  return y.numel() / B;
}
}  // namespace

int64_t check_activity_accumulate(const char* op, const Tensor& y, const Tensor& acc) {
  const int64_t n = check_samples(op, y);
  check_shape(op, "acc", acc, Shape{y.dim(0)});
  if (acc.dtype() != DType::F64 || acc.device() != y.device())
    throw DataError(concat(op, ": acc is ", acc.str(), " but must be f64", Shape{y.dim(0)}.str(),
                           " on the device of y ", y.str()));
  return n;
}

int64_t check_activity_seed(const char* op, const Tensor& y, const Tensor& grad_y) {
  const int64_t n = check_samples(op, y);
  check_arg(op, "grad_y", grad_y, y, y.shape());
  if (grad_y.raw() == y.raw())
    throw DataError(concat(op, ": grad_y ", grad_y.str(), " is y itself"));
  return n;
}

}  // namespace dynsim
