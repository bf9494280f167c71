// Sums and means: over all elements (y of shape [1]) and over H, W of an NCHW tensor
// (y [N, C], the readout's global average pool). Backward broadcasts grad_y back
// (divided by the count for means). Accumulation is in double for f32 inputs on the CPU.
#pragma once
#include "kernels/op_common.h"

namespace dynsim::cpu {
void sum_all_forward(Context& c, const Tensor& x, const Tensor& y);
void sum_all_backward(Context& c, const Tensor& grad_y, const Tensor& grad_x, GradMode m);
void mean_all_forward(Context& c, const Tensor& x, const Tensor& y);
void mean_all_backward(Context& c, const Tensor& grad_y, const Tensor& grad_x, GradMode m);
void sum_hw_forward(Context& c, const Tensor& x, const Tensor& y);
void sum_hw_backward(Context& c, const Tensor& grad_y, const Tensor& grad_x, GradMode m);
void mean_hw_forward(Context& c, const Tensor& x, const Tensor& y);
void mean_hw_backward(Context& c, const Tensor& grad_y, const Tensor& grad_x, GradMode m);
}  // namespace dynsim::cpu

namespace dynsim::cuda {  // kernels/reduce_cuda.cu (f32, f64)
void sum_all_forward(Context& c, const Tensor& x, const Tensor& y);
void sum_all_backward(Context& c, const Tensor& grad_y, const Tensor& grad_x, GradMode m);
void mean_all_forward(Context& c, const Tensor& x, const Tensor& y);
void mean_all_backward(Context& c, const Tensor& grad_y, const Tensor& grad_x, GradMode m);
void sum_hw_forward(Context& c, const Tensor& x, const Tensor& y);
void sum_hw_backward(Context& c, const Tensor& grad_y, const Tensor& grad_x, GradMode m);
void mean_hw_forward(Context& c, const Tensor& x, const Tensor& y);
void mean_hw_backward(Context& c, const Tensor& grad_y, const Tensor& grad_x, GradMode m);
}  // namespace dynsim::cuda
