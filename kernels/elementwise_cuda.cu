// CUDA twins of the elementwise ops (kernels/elementwise.h), f32 and f64, grid-stride loops on
// the context's stream. Products and sums are written with the round-to-nearest intrinsics
// where the CPU computes them separately, so nvcc cannot contract them into an FMA.
#include <algorithm>
#include <type_traits>

#include "engine/core/cuda_check.h"
#include "kernels/cuda_common.cuh"
#include "kernels/elementwise.h"

namespace dynsim::cuda {
namespace {

// t checked to be a CUDA tensor of like's dtype and shape.
template <class T>
T* data(const char* op, const char* role, const Tensor& t, const Tensor& like) {
  check_arg(op, role, t, like, like.shape());
  if (t.device() != Device::Cuda)
    throw DataError(concat(op, ": ", role, " must be a CUDA tensor, got ", t.str()));
  return t.data<T>();
}

template <class T>
__device__ __forceinline__ T mul_rn(T a, T b) {
  if constexpr (std::is_same_v<T, float>)
    return __fmul_rn(a, b);
  else
    return __dmul_rn(a, b);
}
template <class T>
__device__ __forceinline__ T add_rn(T a, T b) {
  if constexpr (std::is_same_v<T, float>)
    return __fadd_rn(a, b);
  else
    return __dadd_rn(a, b);
}
template <class T>
__device__ __forceinline__ T tanh_t(T v) {
  if constexpr (std::is_same_v<T, float>)
    return tanhf(v);
  else
    return tanh(v);
}

template <class T>
void add_t(Context& c, const Tensor& a, const Tensor& b, const Tensor& y) {
  const T *pa = data<T>("add", "a", a, a), *pb = data<T>("add", "b", b, a);
  T* py = data<T>("add", "y", y, a);
  launch(c, a.numel(), [=] __device__(int64_t i) { py[i] = pa[i] + pb[i]; });
}
template <class T>
void mul_t(Context& c, const Tensor& a, const Tensor& b, const Tensor& y) {
  const T *pa = data<T>("mul", "a", a, a), *pb = data<T>("mul", "b", b, a);
  T* py = data<T>("mul", "y", y, a);
  launch(c, a.numel(), [=] __device__(int64_t i) { py[i] = pa[i] * pb[i]; });
}
template <class T>
void mul_backward_t(Context& c, const Tensor& grad_y, const Tensor& a, const Tensor& b,
                    const Tensor& grad_a, const Tensor& grad_b, GradMode m) {
  const char* op = "mul_backward";
  const T *g = data<T>(op, "grad_y", grad_y, grad_y), *pa = data<T>(op, "a", a, grad_y),
          *pb = data<T>(op, "b", b, grad_y);
  const bool acc = m == GradMode::Accumulate;
  if (grad_a.defined()) {
    T* ga = data<T>(op, "grad_a", grad_a, grad_y);
    launch(c, a.numel(), [=] __device__(int64_t i) { put_grad(ga[i], mul_rn(g[i], pb[i]), acc); });
  }
  if (grad_b.defined()) {
    T* gb = data<T>(op, "grad_b", grad_b, grad_y);
    launch(c, a.numel(), [=] __device__(int64_t i) { put_grad(gb[i], mul_rn(g[i], pa[i]), acc); });
  }
}
template <class T>
void axpy_t(Context& c, double alpha, const Tensor& x, const Tensor& y) {
  const T* px = data<T>("axpy", "x", x, x);
  T* py = data<T>("axpy", "y", y, x);
  const T al = T(alpha);
  launch(c, x.numel(), [=] __device__(int64_t i) { py[i] = add_rn(py[i], mul_rn(al, px[i])); });
}
template <class T>
void scale_t(Context& c, double alpha, const Tensor& x, const Tensor& y) {
  const T* px = data<T>("scale", "x", x, x);
  T* py = data<T>("scale", "y", y, x);
  const T al = T(alpha);
  launch(c, x.numel(), [=] __device__(int64_t i) { py[i] = al * px[i]; });
}
template <class T>
void fill_t(Context& c, double value, const Tensor& y) {
  T* py = data<T>("fill", "y", y, y);
  const T v = T(value);
  launch(c, y.numel(), [=] __device__(int64_t i) { py[i] = v; });
}
template <class T>
void relu_forward_t(Context& c, const Tensor& x, const Tensor& y) {
  const T* px = data<T>("relu_forward", "x", x, x);
  T* py = data<T>("relu_forward", "y", y, x);
  launch(c, x.numel(), [=] __device__(int64_t i) { py[i] = px[i] > T(0) ? px[i] : T(0); });
}
template <class T>
void relu_backward_t(Context& c, const Tensor& x, const Tensor& grad_y, const Tensor& grad_x,
                     GradMode m) {
  const char* op = "relu_backward";
  const T *px = data<T>(op, "x", x, x), *g = data<T>(op, "grad_y", grad_y, x);
  T* gx = data<T>(op, "grad_x", grad_x, x);
  const bool acc = m == GradMode::Accumulate;
  launch(c, x.numel(),
         [=] __device__(int64_t i) { put_grad(gx[i], px[i] > T(0) ? g[i] : T(0), acc); });
}
template <class T>
void mul_one_plus_tanh_t(Context& c, const Tensor& x, const Tensor& g, const Tensor& y) {
  const char* op = "mul_one_plus_tanh";
  const T *px = data<T>(op, "x", x, x), *pg = data<T>(op, "g", g, x);
  T* py = data<T>(op, "y", y, x);
  launch(c, x.numel(),
         [=] __device__(int64_t i) { py[i] = mul_rn(px[i], add_rn(T(1), tanh_t(pg[i]))); });
}
template <class T>
void mul_one_plus_tanh_backward_t(Context& c, const Tensor& grad_y, const Tensor& x,
                                  const Tensor& g, const Tensor& grad_x, const Tensor& grad_g,
                                  GradMode m) {
  const char* op = "mul_one_plus_tanh_backward";
  const T *px = data<T>(op, "x", x, x), *pg = data<T>(op, "g", g, x),
          *gy = data<T>(op, "grad_y", grad_y, x);
  const bool acc = m == GradMode::Accumulate;
  if (grad_x.defined()) {
    T* gx = data<T>(op, "grad_x", grad_x, x);
    launch(c, x.numel(),
           [=] __device__(int64_t i) { put_grad(gx[i], gy[i] * (T(1) + tanh_t(pg[i])), acc); });
  }
  if (grad_g.defined()) {
    T* gg = data<T>(op, "grad_g", grad_g, x);
    launch(c, x.numel(), [=] __device__(int64_t i) {
      const T th = tanh_t(pg[i]);
      put_grad(gg[i], gy[i] * px[i] * (T(1) - th * th), acc);
    });
  }
}

}  // namespace

// Each op runs the instance of its first tensor's dtype.
void add(Context& c, const Tensor& a, const Tensor& b, const Tensor& y) {
  if (is_f64("add", a))
    add_t<double>(c, a, b, y);
  else
    add_t<float>(c, a, b, y);
}
void mul(Context& c, const Tensor& a, const Tensor& b, const Tensor& y) {
  if (is_f64("mul", a))
    mul_t<double>(c, a, b, y);
  else
    mul_t<float>(c, a, b, y);
}
void mul_backward(Context& c, const Tensor& grad_y, const Tensor& a, const Tensor& b,
                  const Tensor& grad_a, const Tensor& grad_b, GradMode m) {
  if (is_f64("mul_backward", grad_y))
    mul_backward_t<double>(c, grad_y, a, b, grad_a, grad_b, m);
  else
    mul_backward_t<float>(c, grad_y, a, b, grad_a, grad_b, m);
}
void axpy(Context& c, double alpha, const Tensor& x, const Tensor& y) {
  if (is_f64("axpy", x))
    axpy_t<double>(c, alpha, x, y);
  else
    axpy_t<float>(c, alpha, x, y);
}
void scale(Context& c, double alpha, const Tensor& x, const Tensor& y) {
  if (is_f64("scale", x))
    scale_t<double>(c, alpha, x, y);
  else
    scale_t<float>(c, alpha, x, y);
}
void fill(Context& c, double value, const Tensor& y) {
  if (is_f64("fill", y))
    fill_t<double>(c, value, y);
  else
    fill_t<float>(c, value, y);
}
void relu_forward(Context& c, const Tensor& x, const Tensor& y) {
  if (is_f64("relu_forward", x))
    relu_forward_t<double>(c, x, y);
  else
    relu_forward_t<float>(c, x, y);
}
void relu_backward(Context& c, const Tensor& x, const Tensor& grad_y, const Tensor& grad_x,
                   GradMode m) {
  if (is_f64("relu_backward", x))
    relu_backward_t<double>(c, x, grad_y, grad_x, m);
  else
    relu_backward_t<float>(c, x, grad_y, grad_x, m);
}
void mul_one_plus_tanh(Context& c, const Tensor& x, const Tensor& g, const Tensor& y) {
  if (is_f64("mul_one_plus_tanh", x))
    mul_one_plus_tanh_t<double>(c, x, g, y);
  else
    mul_one_plus_tanh_t<float>(c, x, g, y);
}
void mul_one_plus_tanh_backward(Context& c, const Tensor& grad_y, const Tensor& x, const Tensor& g,
                                const Tensor& grad_x, const Tensor& grad_g, GradMode m) {
  if (is_f64("mul_one_plus_tanh_backward", x))
    mul_one_plus_tanh_backward_t<double>(c, grad_y, x, g, grad_x, grad_g, m);
  else
    mul_one_plus_tanh_backward_t<float>(c, grad_y, x, g, grad_x, grad_g, m);
}

}  // namespace dynsim::cuda
