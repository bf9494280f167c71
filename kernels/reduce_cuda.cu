// CUDA twins of the sums and means (kernels/reduce.h), f32 and f64: over all elements (y [1])
// and over H, W of an NCHW tensor (y [N, C], one segment per plane). Sums accumulate in double
// in a fixed order (kernels/cuda_common.cuh: no atomics), so a result is the same on every run
// and every GPU; it may differ from the CPU's sum in the last bits (another order). Backward
// broadcasts grad_y, divided by the count for means, reading grad_y on the device.
#include "kernels/cuda_common.cuh"
#include "kernels/reduce.h"

namespace dynsim::cuda {
namespace {

void check_nchw(const char* op, const char* role, const Tensor& t) {
  if (t.rank() != 4)
    throw DataError(concat(op, ": ", role, " must be NCHW (rank 4), got ", t.str()));
}

}  // namespace

// segments x len elements of x -> y[s] = sum (or mean) of segment s.
template <class T>
void segment_reduce_t(Context& c, const Tensor& x, const Tensor& y, int64_t segments, int64_t len,
                      bool mean) {
  const T* px = x.data<T>();
  T* py = y.data<T>();
  segmented_sum(
      c, segments, len, [=] __device__(int64_t i) { return px[i]; },
      [=] __device__(int64_t s, double v) { py[s] = T(mean ? v / double(len) : v); });
}

// grad_x[s * len + i] (+)= grad_y[s] (divided by len for means).
template <class T>
void segment_broadcast_t(Context& c, const Tensor& grad_y, const Tensor& grad_x, int64_t len,
                         bool mean, bool acc) {
  const T* g = grad_y.data<T>();
  T* gx = grad_x.data<T>();
  launch(c, grad_x.numel(), [=] __device__(int64_t i) {
    const T gs = g[i / len];
    put_grad(gx[i], mean ? T(double(gs) / double(len)) : gs, acc);
  });
}

namespace {

void all_forward(const char* op, Context& c, const Tensor& x, const Tensor& y, bool mean) {
  const bool f64 = is_f64(op, x);
  check_arg(op, "y", y, x, Shape{1});
  const int64_t n = x.numel();
  if (mean && n == 0) throw DataError(concat(op, ": x ", x.str(), " is empty"));
  if (f64)
    segment_reduce_t<double>(c, x, y, 1, n, mean);
  else
    segment_reduce_t<float>(c, x, y, 1, n, mean);
}

void all_backward(const char* op, Context& c, const Tensor& grad_y, const Tensor& grad_x,
                  GradMode m, bool mean) {
  const bool f64 = is_f64(op, grad_y);
  check_shape(op, "grad_y", grad_y, Shape{1});
  check_same(op, "grad_x", grad_x, grad_y);
  const int64_t n = grad_x.numel();
  if (mean && n == 0) throw DataError(concat(op, ": grad_x ", grad_x.str(), " is empty"));
  const bool acc = m == GradMode::Accumulate;
  if (f64)
    segment_broadcast_t<double>(c, grad_y, grad_x, n, mean, acc);
  else
    segment_broadcast_t<float>(c, grad_y, grad_x, n, mean, acc);
}

void hw_forward(const char* op, Context& c, const Tensor& x, const Tensor& y, bool mean) {
  const bool f64 = is_f64(op, x);
  check_nchw(op, "x", x);
  check_arg(op, "y", y, x, Shape{x.dim(0), x.dim(1)});
  const int64_t planes = x.dim(0) * x.dim(1), hw = x.dim(2) * x.dim(3);
  if (mean && hw == 0) throw DataError(concat(op, ": x ", x.str(), " has no pixels"));
  if (f64)
    segment_reduce_t<double>(c, x, y, planes, hw, mean);
  else
    segment_reduce_t<float>(c, x, y, planes, hw, mean);
}

void hw_backward(const char* op, Context& c, const Tensor& grad_y, const Tensor& grad_x, GradMode m,
                 bool mean) {
  const bool f64 = is_f64(op, grad_y);
  check_same(op, "grad_x", grad_x, grad_y);
  check_nchw(op, "grad_x", grad_x);
  check_shape(op, "grad_y", grad_y, Shape{grad_x.dim(0), grad_x.dim(1)});
  const int64_t hw = grad_x.dim(2) * grad_x.dim(3);
  if (mean && hw == 0) throw DataError(concat(op, ": grad_x ", grad_x.str(), " has no pixels"));
  if (hw == 0) return;
  const bool acc = m == GradMode::Accumulate;
  if (f64)
    segment_broadcast_t<double>(c, grad_y, grad_x, hw, mean, acc);
  else
    segment_broadcast_t<float>(c, grad_y, grad_x, hw, mean, acc);
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

// Pass 1 writes the mean of |x| per sample; pass 2 sums the squared deviations from that mean
// (read back as stored, i.e. rounded to T: a shift of the centre by <= half an ulp, whose effect
// on the variance is of second order) and writes the unbiased std.
template <class T>
void abs_mean_std_t(Context& c, const Tensor& x, int64_t n, const Tensor& mean, const Tensor& sd,
                    int64_t column) {
  const T* px = x.data<T>();
  T* pm = mean.data<T>();
  T* ps = sd.data<T>();
  const int64_t cols = mean.dim(1), B = x.dim(0);
  segmented_sum(
      c, B, n, [=] __device__(int64_t i) { return fabs(double(px[i])); },
      [=] __device__(int64_t s, double v) { pm[s * cols + column] = T(v / double(n)); });
  segmented_sum(
      c, B, n,
      [=] __device__(int64_t i) {
        const double d = fabs(double(px[i])) - double(pm[(i / n) * cols + column]);
        return d * d;
      },
      [=] __device__(int64_t s, double v) {
        ps[s * cols + column] = T(n > 1 ? sqrt(v / double(n - 1)) : 0.0);
      });
}

void abs_mean_std(Context& c, const Tensor& x, int64_t column, const Tensor& mean,
                  const Tensor& sd) {
  const char* op = "abs_mean_std";
  const bool f64 = is_f64(op, x);
  const int64_t n = check_abs_mean_std(op, x, column, mean, sd);
  if (f64)
    abs_mean_std_t<double>(c, x, n, mean, sd, column);
  else
    abs_mean_std_t<float>(c, x, n, mean, sd, column);
}

}  // namespace dynsim::cuda
