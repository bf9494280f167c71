// CUDA twin of DynVision's SupraLinearity (kernels/supralinearity.h), f32 and f64, elementwise
// with the scalar math of kernels/supralinearity_math.h (the CPU twin's functions):
// y = k sign(x_c) max(|x_c|, 1e-6)^n, x_c = clamp(x, +-clamp); grad_x = grad_y f'(x).
#include <cmath>

#include "kernels/cuda_common.cuh"
#include "kernels/supralinearity.h"
#include "kernels/supralinearity_math.h"

namespace dynsim::cuda {
namespace {

void check_params(const char* op, const SupralinearityParams& p) {
  if (!std::isfinite(p.n) || !(p.k > 0) || !std::isfinite(p.k) || !(p.clamp > 0))
    throw DataError(concat(op, ": needs finite n, finite k > 0 and clamp > 0, got n = ", p.n,
                           ", k = ", p.k, ", clamp = ", p.clamp));
}

}  // namespace

template <class T>
void supralinearity_forward_t(Context& c, const SupralinearityParams& p, const Tensor& x,
                              const Tensor& y) {
  const T n = T(p.n), k = T(p.k), cl = T(p.clamp);
  const T* px = x.data<T>();
  T* py = y.data<T>();
  launch(c, x.numel(),
         [=] __device__(int64_t i) { py[i] = math::supralinearity(px[i], n, k, cl); });
}

template <class T>
void supralinearity_backward_t(Context& c, const SupralinearityParams& p, const Tensor& grad_y,
                               const Tensor& x, const Tensor& grad_x, bool acc) {
  const T n = T(p.n), k = T(p.k), cl = T(p.clamp);
  const T *px = x.data<T>(), *g = grad_y.data<T>();
  T* gx = grad_x.data<T>();
  launch(c, x.numel(), [=] __device__(int64_t i) {
    put_grad(gx[i], T(g[i] * math::supralinearity_grad(px[i], n, k, cl)), acc);
  });
}

void supralinearity_forward(Context& c, const SupralinearityParams& p, const Tensor& x,
                            const Tensor& y) {
  const char* op = "supralinearity_forward";
  const bool f64 = is_f64(op, x);
  check_params(op, p);
  check_arg(op, "y", y, x, x.shape());
  if (f64)
    supralinearity_forward_t<double>(c, p, x, y);
  else
    supralinearity_forward_t<float>(c, p, x, y);
}

void supralinearity_backward(Context& c, const SupralinearityParams& p, const Tensor& grad_y,
                             const Tensor& x, const Tensor& grad_x, GradMode m) {
  const char* op = "supralinearity_backward";
  const bool f64 = is_f64(op, x);
  check_params(op, p);
  check_arg(op, "grad_y", grad_y, x, x.shape());
  check_arg(op, "grad_x", grad_x, x, x.shape());
  const bool acc = m == GradMode::Accumulate;
  if (f64)
    supralinearity_backward_t<double>(c, p, grad_y, x, grad_x, acc);
  else
    supralinearity_backward_t<float>(c, p, grad_y, x, grad_x, acc);
}

}  // namespace dynsim::cuda
