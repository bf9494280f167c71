// Fused per-tensor optimiser updates (torch.optim.SGD, Adam and AdamW, single-tensor order;
// formulas in kernels/optim_math.h) and the sum of squares that gradient clipping needs.
// param, grad and the state tensors share one shape and dtype; the update is in place.
// Hyperparameters are doubles (as torch's Python floats) rounded to the tensor's dtype.
#pragma once
#include <cstdint>

#include "kernels/op_common.h"

namespace dynsim {

struct SgdParams {
  double lr = 0.01;
  double momentum = 0.0;      // 0: no buffer (momentum_buf may be undefined)
  double weight_decay = 0.0;  // coupled L2: d = g + wd p
  bool nesterov = false;
  bool first_step = false;  // the momentum buffer is created from d (torch: clone(d))
};

struct AdamParams {
  double lr = 1e-3;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  double weight_decay = 0.0;
  bool decoupled = false;  // false: Adam (g += wd p); true: AdamW (p *= 1 - lr wd)
  int64_t step = 1;        // this update's step count t >= 1 (bias corrections 1 - beta^t)
};

namespace cpu {
void sgd_step(Context& c, const SgdParams& p, const Tensor& param, const Tensor& grad,
              const Tensor& momentum_buf);
void adam_step(Context& c, const AdamParams& p, const Tensor& param, const Tensor& grad,
               const Tensor& exp_avg, const Tensor& exp_avg_sq);
// sum_i x_i^2, accumulated in double.
double sum_squares(Context& c, const Tensor& x);
}  // namespace cpu
namespace cuda {  // kernels/optim_cuda.cu (f32, f64)
void sgd_step(Context& c, const SgdParams& p, const Tensor& param, const Tensor& grad,
              const Tensor& momentum_buf);
void adam_step(Context& c, const AdamParams& p, const Tensor& param, const Tensor& grad,
               const Tensor& exp_avg, const Tensor& exp_avg_sq);
double sum_squares(Context& c, const Tensor& x);
}  // namespace cuda

}  // namespace dynsim
