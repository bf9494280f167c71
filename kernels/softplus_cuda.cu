// CUDA twin of the parametric softplus (kernels/softplus.h), f32 and f64, scalar math from
// kernels/softplus_math.h: y = a softplus(b x) with a, b [1] read on the device. Backward:
// grad_x elementwise; grad_a = sum g softplus(b x) and grad_b = a sum g x sigmoid(b x) as
// deterministic double sums (kernels/cuda_common.cuh).
#include "kernels/cuda_common.cuh"
#include "kernels/softplus.h"
#include "kernels/softplus_math.h"

namespace dynsim::cuda {

template <class T>
void softplus_forward_t(Context& c, const Tensor& x, const Tensor& a, const Tensor& b,
                        const Tensor& y) {
  const T *px = x.data<T>(), *pa = a.data<T>(), *pb = b.data<T>();
  T* py = y.data<T>();
  launch(c, x.numel(),
         [=] __device__(int64_t i) { py[i] = pa[0] * math::softplus(pb[0] * px[i]); });
}

template <class T>
void softplus_backward_t(Context& c, const Tensor& grad_y, const Tensor& x, const Tensor& a,
                         const Tensor& b, const Tensor& grad_x, const Tensor& grad_a,
                         const Tensor& grad_b, bool acc) {
  const T *px = x.data<T>(), *g = grad_y.data<T>(), *pa = a.data<T>(), *pb = b.data<T>();
  const int64_t n = x.numel();
  if (grad_x.defined()) {
    T* gx = grad_x.data<T>();
    launch(c, n, [=] __device__(int64_t i) {
      const T ab = pa[0] * pb[0];
      put_grad(gx[i], T(g[i] * ab * math::sigmoid(pb[0] * px[i])), acc);
    });
  }
  if (grad_a.defined()) {
    T* ga = grad_a.data<T>();
    segmented_sum(
        c, 1, n,
        [=] __device__(int64_t i) { return double(g[i]) * double(math::softplus(pb[0] * px[i])); },
        [=] __device__(int64_t, double s) { put_grad(ga[0], T(s), acc); });
  }
  if (grad_b.defined()) {
    T* gb = grad_b.data<T>();
    segmented_sum(
        c, 1, n,
        [=] __device__(int64_t i) {
          return double(g[i]) * double(px[i]) * double(math::sigmoid(pb[0] * px[i]));
        },
        [=] __device__(int64_t, double s) { put_grad(gb[0], T(double(pa[0]) * s), acc); });
  }
}

void softplus_forward(Context& c, const Tensor& x, const Tensor& a, const Tensor& b,
                      const Tensor& y) {
  const char* op = "softplus_forward";
  const bool f64 = is_f64(op, x);
  check_arg(op, "a", a, x, Shape{1});
  check_arg(op, "b", b, x, Shape{1});
  check_arg(op, "y", y, x, x.shape());
  if (f64)
    softplus_forward_t<double>(c, x, a, b, y);
  else
    softplus_forward_t<float>(c, x, a, b, y);
}

void softplus_backward(Context& c, const Tensor& grad_y, const Tensor& x, const Tensor& a,
                       const Tensor& b, const Tensor& grad_x, const Tensor& grad_a,
                       const Tensor& grad_b, GradMode m) {
  const char* op = "softplus_backward";
  const bool f64 = is_f64(op, x);
  check_arg(op, "grad_y", grad_y, x, x.shape());
  check_arg(op, "a", a, x, Shape{1});
  check_arg(op, "b", b, x, Shape{1});
  if (grad_x.defined()) check_arg(op, "grad_x", grad_x, x, x.shape());
  if (grad_a.defined()) check_arg(op, "grad_a", grad_a, x, Shape{1});
  if (grad_b.defined()) check_arg(op, "grad_b", grad_b, x, Shape{1});
  const bool acc = m == GradMode::Accumulate;
  if (f64)
    softplus_backward_t<double>(c, grad_y, x, a, b, grad_x, grad_a, grad_b, acc);
  else
    softplus_backward_t<float>(c, grad_y, x, a, b, grad_x, grad_a, grad_b, acc);
}

}  // namespace dynsim::cuda
