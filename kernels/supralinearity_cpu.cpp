// CPU twin of DynVision's SupraLinearity (kernels/supralinearity.h, scalar math in
// supralinearity_math.h): y = k sign(x_c) max(|x_c|, 1e-6)^n with x_c = clamp(x, +-clamp).
// Elementwise; grad_x = grad_y f'(x).
#include <cmath>

#include "kernels/reduce_math.h"
#include "kernels/supralinearity.h"
#include "kernels/supralinearity_math.h"

namespace dynsim::cpu {
namespace {

void check_params(const char* op, const SupralinearityParams& p) {
  // DynVision rejects k <= 0 (and only warns for n <= 1).
  if (!std::isfinite(p.n) || !(p.k > 0) || !std::isfinite(p.k) || !(p.clamp > 0))
    throw DataError(concat(op, ": needs finite n, finite k > 0 and clamp > 0, got n = ", p.n,
                           ", k = ", p.k, ", clamp = ", p.clamp));
}

}  // namespace

void supralinearity_forward(Context& c, const SupralinearityParams& p, const Tensor& x,
                            const Tensor& y) {
  const char* op = "supralinearity_forward";
  with_float_type(op, x, [&](auto t) {
    using T = decltype(t);
    check_params(op, p);
    check_arg(op, "y", y, x, x.shape());
    const T n = T(p.n), k = T(p.k), cl = T(p.clamp);
    const T* px = x.data<T>();
    T* py = y.data<T>();
    parallel_elements(c, x.numel(),
                      [&](int64_t i) { py[i] = math::supralinearity(px[i], n, k, cl); });
  });
}

void supralinearity_backward(Context& c, const SupralinearityParams& p, const Tensor& grad_y,
                             const Tensor& x, const Tensor& grad_x, GradMode m) {
  const char* op = "supralinearity_backward";
  with_float_type(op, x, [&](auto t) {
    using T = decltype(t);
    check_params(op, p);
    check_arg(op, "grad_y", grad_y, x, x.shape());
    check_arg(op, "grad_x", grad_x, x, x.shape());
    const T n = T(p.n), k = T(p.k), cl = T(p.clamp);
    const T *px = x.data<T>(), *g = grad_y.data<T>();
    T* gx = grad_x.data<T>();
    parallel_elements(c, x.numel(), [&](int64_t i) {
      write_grad(gx[i], T(g[i] * math::supralinearity_grad(px[i], n, k, cl)), m);
    });
  });
}

}  // namespace dynsim::cpu
