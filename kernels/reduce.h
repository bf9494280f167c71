// Sums and means: over all elements (y of shape [1]) and over H, W of an NCHW tensor
// (y [N, C], the readout's global average pool). Backward broadcasts grad_y back
// (divided by the count for means). Accumulation is in double for f32 inputs on the CPU.
// abs_mean_std (recording, forward only): per sample b of x [B, ...] the mean and the unbiased
// (n - 1; 0 when n = 1) standard deviation of |x| over the sample's n elements, two passes in
// double, written to mean[b, column] and sd[b, column] of [B, T] tensors.
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
void abs_mean_std(Context& c, const Tensor& x, int64_t column, const Tensor& mean,
                  const Tensor& sd);
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
void abs_mean_std(Context& c, const Tensor& x, int64_t column, const Tensor& mean,
                  const Tensor& sd);
}  // namespace dynsim::cuda

namespace dynsim {
// The checks both twins make: x has a batch dimension and samples of n >= 1 elements; mean and sd
// are [B, T] on x's device and dtype; 0 <= column < T. Returns n.
int64_t check_abs_mean_std(const char* op, const Tensor& x, int64_t column, const Tensor& mean,
                           const Tensor& sd);
}  // namespace dynsim
