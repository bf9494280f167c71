// Leaky integration of one area for one step: x = step(u, h) per element (kernels/leak_math.h),
// u, h, x [B, C, H, W]; h undefined means "no previous state" (x = a u); tau is [1] (one per
// area) or [B] (per sample, for scans inside one batch), same dtype and device as u.
#pragma once
#include "kernels/leak_math.h"
#include "kernels/op_common.h"

namespace dynsim {

struct LeakParams {
  LeakRule rule = LeakRule::Euler;
  double dt = 2.0;
};

namespace cpu {
void leak_forward(Context& c, const LeakParams& p, const Tensor& u, const Tensor& h,
                  const Tensor& tau, const Tensor& x);
// Gradients of leak_forward: grad_u, grad_h (ignored without h) and grad_tau ([1]: summed over
// everything; [B]: per sample); any may be undefined.
void leak_backward(Context& c, const LeakParams& p, const Tensor& grad_x, const Tensor& u,
                   const Tensor& h, const Tensor& tau, const Tensor& grad_u, const Tensor& grad_h,
                   const Tensor& grad_tau, GradMode m);
// The slope of a staged (Runge-Kutta) solver: k = (u - r) / tau, per sample when tau is [B].
void leak_slope(Context& c, const Tensor& u, const Tensor& r, const Tensor& tau, const Tensor& k);
// Gradients of leak_slope: grad_u = grad_k / tau, grad_r = -grad_k / tau, grad_tau = -sum grad_k
// (u - r) / tau^2 ([1]: over everything; [B]: per sample); any may be undefined.
void leak_slope_backward(Context& c, const Tensor& grad_k, const Tensor& u, const Tensor& r,
                         const Tensor& tau, const Tensor& grad_u, const Tensor& grad_r,
                         const Tensor& grad_tau, GradMode m);
}  // namespace cpu
namespace cuda {  // kernels/leak_cuda.cu (f32, f64)
void leak_forward(Context& c, const LeakParams& p, const Tensor& u, const Tensor& h,
                  const Tensor& tau, const Tensor& x);
void leak_backward(Context& c, const LeakParams& p, const Tensor& grad_x, const Tensor& u,
                   const Tensor& h, const Tensor& tau, const Tensor& grad_u, const Tensor& grad_h,
                   const Tensor& grad_tau, GradMode m);
void leak_slope(Context& c, const Tensor& u, const Tensor& r, const Tensor& tau, const Tensor& k);
void leak_slope_backward(Context& c, const Tensor& grad_k, const Tensor& u, const Tensor& r,
                         const Tensor& tau, const Tensor& grad_u, const Tensor& grad_r,
                         const Tensor& grad_tau, GradMode m);
}  // namespace cuda
}  // namespace dynsim
