// DynVision's SupraLinearity (spec §7): f(x) = k * sign(x) * max(|x|, 1e-6)^n, f(0) = 0,
// k = 0.8 fixed, with the input x first clamped to [-1e6, 1e6] (DynVision clamps x when
// max|x| > 1e6; we clamp elementwise without a host sync, which gives the same values). Examples
// for n = 2: 0.5 -> 0.2, 1 -> 0.8, 2 -> 3.2. Gradient: k n |x|^(n-1) where 1e-6 <= |x| <= 1e6,
// else 0. Scalar math in kernels/supralinearity_math.h.
#pragma once
#include "kernels/op_common.h"

namespace dynsim {

struct SupralinearityParams {
  double n = 1.0;
  double k = 0.8;
  double clamp = 1e6;
};

namespace cpu {
void supralinearity_forward(Context& c, const SupralinearityParams& p, const Tensor& x,
                            const Tensor& y);
void supralinearity_backward(Context& c, const SupralinearityParams& p, const Tensor& grad_y,
                             const Tensor& x, const Tensor& grad_x, GradMode m);
}  // namespace cpu
namespace cuda {  // kernels/supralinearity_cuda.cu (f32, f64)
void supralinearity_forward(Context& c, const SupralinearityParams& p, const Tensor& x,
                            const Tensor& y);
void supralinearity_backward(Context& c, const SupralinearityParams& p, const Tensor& grad_y,
                             const Tensor& x, const Tensor& grad_x, GradMode m);
}  // namespace cuda
}  // namespace dynsim
