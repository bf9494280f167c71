// Elementwise ops on tensors of one shape: add, mul, axpy, scale, and relu.
//   add:   y = a + b            mul:  y = a * b
//   axpy:  y += alpha * x       scale: y = alpha * x
//   relu:  y = max(x, 0), grad_x = grad_y * (x > 0)
//   mul_one_plus_tanh: y = x * (1 + tanh(g)) (DynVision's multiplicative feedback); backward
//          grad_x = grad_y (1 + tanh g), grad_g = grad_y x (1 - tanh^2 g)
// y may alias an input. Backward of add/axpy/scale is a scale or axpy of grad_y (ops::axpy).
#pragma once
#include "kernels/op_common.h"

namespace dynsim::cpu {
void add(Context& c, const Tensor& a, const Tensor& b, const Tensor& y);
void mul(Context& c, const Tensor& a, const Tensor& b, const Tensor& y);
void mul_backward(Context& c, const Tensor& grad_y, const Tensor& a, const Tensor& b,
                  const Tensor& grad_a, const Tensor& grad_b, GradMode m);
void axpy(Context& c, double alpha, const Tensor& x, const Tensor& y);
void scale(Context& c, double alpha, const Tensor& x, const Tensor& y);
void fill(Context& c, double value, const Tensor& y);
void relu_forward(Context& c, const Tensor& x, const Tensor& y);
void relu_backward(Context& c, const Tensor& x, const Tensor& grad_y, const Tensor& grad_x,
                   GradMode m);
void mul_one_plus_tanh(Context& c, const Tensor& x, const Tensor& g, const Tensor& y);
void mul_one_plus_tanh_backward(Context& c, const Tensor& grad_y, const Tensor& x, const Tensor& g,
                                const Tensor& grad_x, const Tensor& grad_g, GradMode m);
}  // namespace dynsim::cpu

namespace dynsim::cuda {
void add(Context& c, const Tensor& a, const Tensor& b, const Tensor& y);
void mul(Context& c, const Tensor& a, const Tensor& b, const Tensor& y);
void mul_backward(Context& c, const Tensor& grad_y, const Tensor& a, const Tensor& b,
                  const Tensor& grad_a, const Tensor& grad_b, GradMode m);
void axpy(Context& c, double alpha, const Tensor& x, const Tensor& y);
void scale(Context& c, double alpha, const Tensor& x, const Tensor& y);
void fill(Context& c, double value, const Tensor& y);
void relu_forward(Context& c, const Tensor& x, const Tensor& y);
void relu_backward(Context& c, const Tensor& x, const Tensor& grad_y, const Tensor& grad_x,
                   GradMode m);
void mul_one_plus_tanh(Context& c, const Tensor& x, const Tensor& g, const Tensor& y);
void mul_one_plus_tanh_backward(Context& c, const Tensor& grad_y, const Tensor& x, const Tensor& g,
                                const Tensor& grad_x, const Tensor& grad_g, GradMode m);
}  // namespace dynsim::cuda
