// Parametric softplus y = a * log(1 + exp(b * x)) (the retina CNN's output nonlinearity), with
// scalar parameters a and b (tensors of shape [1]). Computed stably as
// a * (max(z, 0) + log1p(exp(-|z|))), z = b x. Gradients: dy/dx = a b sigmoid(z),
// dy/da = softplus(z), dy/db = a x sigmoid(z); grad_a and grad_b sum over all elements.
#pragma once
#include "kernels/op_common.h"

namespace dynsim::cpu {
void softplus_forward(Context& c, const Tensor& x, const Tensor& a, const Tensor& b,
                      const Tensor& y);
// Any of grad_x, grad_a, grad_b may be undefined.
void softplus_backward(Context& c, const Tensor& grad_y, const Tensor& x, const Tensor& a,
                       const Tensor& b, const Tensor& grad_x, const Tensor& grad_a,
                       const Tensor& grad_b, GradMode m);
}  // namespace dynsim::cpu

namespace dynsim::cuda {  // kernels/softplus_cuda.cu (f32, f64)
void softplus_forward(Context& c, const Tensor& x, const Tensor& a, const Tensor& b,
                      const Tensor& y);
void softplus_backward(Context& c, const Tensor& grad_y, const Tensor& x, const Tensor& a,
                       const Tensor& b, const Tensor& grad_x, const Tensor& grad_a,
                       const Tensor& grad_b, GradMode m);
}  // namespace dynsim::cuda
