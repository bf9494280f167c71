// CPU twins of the sums and means (kernels/reduce.h): over all elements (y [1]) and over H, W
// of an NCHW tensor (y [N, C]). Sums accumulate in double in a fixed order (reduce_math.h), so
// results do not depend on the thread count; backward broadcasts grad_y (divided by the count
// for means).
#include <algorithm>
#include <cmath>

#include "kernels/reduce.h"
#include "kernels/reduce_math.h"

namespace dynsim::cpu {
namespace {

void all_forward(const char* op, Context& c, const Tensor& x, const Tensor& y, bool mean) {
  with_float_type(op, x, [&](auto t) {
    using T = decltype(t);
    check_arg(op, "y", y, x, Shape{1});
    const int64_t n = x.numel();
    if (mean && n == 0) throw DataError(concat(op, ": x ", x.str(), " is empty"));
    const T* px = x.data<T>();
    const double s = blocked_sum(c, n, [&](int64_t i) { return px[i]; });
    y.data<T>()[0] = T(mean ? s / double(n) : s);
  });
}

void all_backward(const char* op, Context& c, const Tensor& grad_y, const Tensor& grad_x,
                  GradMode m, bool mean) {
  with_float_type(op, grad_y, [&](auto t) {
    using T = decltype(t);
    check_shape(op, "grad_y", grad_y, Shape{1});
    check_same(op, "grad_x", grad_x, grad_y);
    const int64_t n = grad_x.numel();
    if (mean && n == 0) throw DataError(concat(op, ": grad_x ", grad_x.str(), " is empty"));
    const T g = mean ? T(double(grad_y.data<T>()[0]) / double(n)) : grad_y.data<T>()[0];
    T* gx = grad_x.data<T>();
    parallel_elements(c, n, [&](int64_t i) { write_grad(gx[i], g, m); });
  });
}

void check_nchw(const char* op, const char* role, const Tensor& t) {
  if (t.rank() != 4)
    throw DataError(concat(op, ": ", role, " must be NCHW (rank 4), got ", t.str()));
}

void hw_forward(const char* op, Context& c, const Tensor& x, const Tensor& y, bool mean) {
  with_float_type(op, x, [&](auto t) {
    using T = decltype(t);
    check_nchw(op, "x", x);
    check_arg(op, "y", y, x, Shape{x.dim(0), x.dim(1)});
    const int64_t planes = x.dim(0) * x.dim(1), hw = x.dim(2) * x.dim(3);
    if (mean && hw == 0) throw DataError(concat(op, ": x ", x.str(), " has no pixels"));
    const T* px = x.data<T>();
    T* py = y.data<T>();
#pragma omp parallel for num_threads(c.threads()) schedule(static) if (planes * hw >= (1 << 15))
    for (int64_t p = 0; p < planes; ++p) {
      const T* q = px + p * hw;
      double s = 0;
      for (int64_t i = 0; i < hw; ++i) s += double(q[i]);
      py[p] = T(mean ? s / double(hw) : s);
    }
  });
}

// Mean and unbiased std of |x| per sample: the two passes of torch.std, in double, in order.
template <class T>
void abs_mean_std_t(const Context& c, const T* px, int64_t B, int64_t n, T* mean, T* sd,
                    int64_t T_cols, int64_t column) {
#pragma omp parallel for num_threads(c.threads()) schedule(static) if (B * n >= (1 << 15))
  for (int64_t b = 0; b < B; ++b) {
    const T* p = px + b * n;
    double sum = 0;
    for (int64_t i = 0; i < n; ++i) sum += std::abs(double(p[i]));
    const double m = sum / double(n);
    double v = 0;
    for (int64_t i = 0; i < n; ++i) {
      const double d = std::abs(double(p[i])) - m;
      v += d * d;
    }
    mean[b * T_cols + column] = T(m);
    sd[b * T_cols + column] = T(n > 1 ? std::sqrt(v / double(n - 1)) : 0.0);
  }
}

void hw_backward(const char* op, Context& c, const Tensor& grad_y, const Tensor& grad_x, GradMode m,
                 bool mean) {
  with_float_type(op, grad_y, [&](auto t) {
    using T = decltype(t);
    check_same(op, "grad_x", grad_x, grad_y);
    check_nchw(op, "grad_x", grad_x);
    check_shape(op, "grad_y", grad_y, Shape{grad_x.dim(0), grad_x.dim(1)});
    const int64_t planes = grad_x.dim(0) * grad_x.dim(1), hw = grad_x.dim(2) * grad_x.dim(3);
    if (mean && hw == 0) throw DataError(concat(op, ": grad_x ", grad_x.str(), " has no pixels"));
    const T* g = grad_y.data<T>();
    T* gx = grad_x.data<T>();
#pragma omp parallel for num_threads(c.threads()) schedule(static) if (planes * hw >= (1 << 15))
    for (int64_t p = 0; p < planes; ++p) {
      const T v = mean ? T(double(g[p]) / double(hw)) : g[p];
      T* q = gx + p * hw;
      for (int64_t i = 0; i < hw; ++i) write_grad(q[i], v, m);
    }
  });
}

}  // namespace

void sum_all_forward(Context& c, const Tensor& x, const Tensor& y) {
  all_forward("sum_all_forward", c, x, y, false);
}
void sum_all_backward(Context& c, const Tensor& grad_y, const Tensor& grad_x, GradMode m) {
  all_backward("sum_all_backward", c, grad_y, grad_x, m, false);
}
void mean_all_forward(Context& c, const Tensor& x, const Tensor& y) {
  all_forward("mean_all_forward", c, x, y, true);
}
void mean_all_backward(Context& c, const Tensor& grad_y, const Tensor& grad_x, GradMode m) {
  all_backward("mean_all_backward", c, grad_y, grad_x, m, true);
}
void sum_hw_forward(Context& c, const Tensor& x, const Tensor& y) {
  hw_forward("sum_hw_forward", c, x, y, false);
}
void sum_hw_backward(Context& c, const Tensor& grad_y, const Tensor& grad_x, GradMode m) {
  hw_backward("sum_hw_backward", c, grad_y, grad_x, m, false);
}
void mean_hw_forward(Context& c, const Tensor& x, const Tensor& y) {
  hw_forward("mean_hw_forward", c, x, y, true);
}
void mean_hw_backward(Context& c, const Tensor& grad_y, const Tensor& grad_x, GradMode m) {
  hw_backward("mean_hw_backward", c, grad_y, grad_x, m, true);
}
void abs_mean_std(Context& c, const Tensor& x, int64_t column, const Tensor& mean,
                  const Tensor& sd) {
  const char* op = "abs_mean_std";
  with_float_type(op, x, [&](auto t) {
    using T = decltype(t);
    const int64_t n = check_abs_mean_std(op, x, column, mean, sd);
    abs_mean_std_t<T>(c, x.data<T>(), x.dim(0), n, mean.data<T>(), sd.data<T>(), mean.dim(1),
                      column);
  });
}

}  // namespace dynsim::cpu

namespace dynsim {
int64_t check_abs_mean_std(const char* op, const Tensor& x, int64_t column, const Tensor& mean,
                           const Tensor& sd) {
  if (!x.defined() || x.rank() < 2)
    throw DataError(concat(op, ": x must be [B, ...], got ", x.defined() ? x.str() : "undefined"));
  const int64_t B = x.dim(0), n = x.numel() / std::max<int64_t>(B, 1);
  if (n < 1) throw DataError(concat(op, ": x ", x.str(), " has empty samples"));
  if (!mean.defined() || mean.rank() != 2 || mean.dim(0) != B)
    throw DataError(
        concat(op, ": mean must be [", B, ", T], got ", mean.defined() ? mean.str() : "undefined"));
  check_arg(op, "mean", mean, x, mean.shape());
  check_arg(op, "sd", sd, x, mean.shape());
  if (column < 0 || column >= mean.dim(1))
    throw DataError(concat(op, ": column ", column, " outside [0, ", mean.dim(1), ")"));
  return n;
}
}  // namespace dynsim
