// CPU twins of the sums and means (kernels/reduce.h): over all elements (y [1]) and over H, W
// of an NCHW tensor (y [N, C]). Sums accumulate in double in a fixed order (reduce_math.h), so
// results do not depend on the thread count; backward broadcasts grad_y (divided by the count
// for means).
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

}  // namespace dynsim::cpu
