// CPU twin of the parametric softplus (kernels/softplus.h): y = a softplus(b x), a and b of
// shape [1]. Backward: grad_x = g a b sigmoid(b x); grad_a = sum g softplus(b x);
// grad_b = sum g a x sigmoid(b x). The parameter sums accumulate in double in a fixed order.
#include "kernels/reduce_math.h"
#include "kernels/softplus.h"
#include "kernels/softplus_math.h"

namespace dynsim::cpu {

void softplus_forward(Context& c, const Tensor& x, const Tensor& a, const Tensor& b,
                      const Tensor& y) {
  with_float_type("softplus_forward", x, [&](auto t) {
    using T = decltype(t);
    check_arg("softplus_forward", "a", a, x, Shape{1});
    check_arg("softplus_forward", "b", b, x, Shape{1});
    check_arg("softplus_forward", "y", y, x, x.shape());
    const T av = a.data<T>()[0], bv = b.data<T>()[0];
    const T* px = x.data<T>();
    T* py = y.data<T>();
    parallel_elements(c, x.numel(), [&](int64_t i) { py[i] = av * math::softplus(bv * px[i]); });
  });
}

void softplus_backward(Context& c, const Tensor& grad_y, const Tensor& x, const Tensor& a,
                       const Tensor& b, const Tensor& grad_x, const Tensor& grad_a,
                       const Tensor& grad_b, GradMode m) {
  const char* op = "softplus_backward";
  with_float_type(op, x, [&](auto t) {
    using T = decltype(t);
    check_arg(op, "grad_y", grad_y, x, x.shape());
    check_arg(op, "a", a, x, Shape{1});
    check_arg(op, "b", b, x, Shape{1});
    if (grad_x.defined()) check_arg(op, "grad_x", grad_x, x, x.shape());
    if (grad_a.defined()) check_arg(op, "grad_a", grad_a, x, Shape{1});
    if (grad_b.defined()) check_arg(op, "grad_b", grad_b, x, Shape{1});
    const T av = a.data<T>()[0], bv = b.data<T>()[0];
    const T *px = x.data<T>(), *g = grad_y.data<T>();
    const int64_t n = x.numel();
    if (grad_x.defined()) {
      T* gx = grad_x.data<T>();
      const T ab = av * bv;
      parallel_elements(
          c, n, [&](int64_t i) { write_grad(gx[i], T(g[i] * ab * math::sigmoid(bv * px[i])), m); });
    }
    if (grad_a.defined()) {
      const double s = blocked_sum(
          c, n, [&](int64_t i) { return double(g[i]) * double(math::softplus(bv * px[i])); });
      write_grad(grad_a.data<T>()[0], T(s), m);
    }
    if (grad_b.defined()) {
      const double s = blocked_sum(c, n, [&](int64_t i) {
        return double(g[i]) * double(px[i]) * double(math::sigmoid(bv * px[i]));
      });
      write_grad(grad_b.data<T>()[0], T(double(av) * s), m);
    }
  });
}

}  // namespace dynsim::cpu
