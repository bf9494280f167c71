// Fully connected layer: y = x w^T + b. x [N, In], w [Out, In], b [Out] or undefined,
// y [N, Out]. Backward: grad_x = grad_y w, grad_w = grad_y^T x, grad_b = sum_n grad_y.
#pragma once
#include "kernels/op_common.h"

namespace dynsim::cpu {
void linear_forward(Context& c, const Tensor& x, const Tensor& w, const Tensor& b,
                    const Tensor& y);
// Any of grad_x, grad_w, grad_b may be undefined (not wanted).
void linear_backward(Context& c, const Tensor& grad_y, const Tensor& x, const Tensor& w,
                     const Tensor& grad_x, const Tensor& grad_w, const Tensor& grad_b,
                     GradMode m);
}  // namespace dynsim::cpu

namespace dynsim::cuda {  // kernels/linear_cublas.cpp (cuBLAS; f32, f64)
void linear_forward(Context& c, const Tensor& x, const Tensor& w, const Tensor& b,
                    const Tensor& y);
void linear_backward(Context& c, const Tensor& grad_y, const Tensor& x, const Tensor& w,
                     const Tensor& grad_x, const Tensor& grad_w, const Tensor& grad_b,
                     GradMode m);
}  // namespace dynsim::cuda
