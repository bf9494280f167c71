// Losses, each a mean reduced to loss [1]; backward takes grad_loss [1] (the upstream scalar).
//  cross_entropy: logits [N, K], labels i32 [N]; entries equal to ignore_index are left out;
//                 mean over the valid entries; 0 (and zero gradient) when all are ignored
//                 (DynVision's masking rule, PyTorch gives NaN there). A label outside [0, K)
//                 that is not ignore_index throws DataError naming the row (DynVision would
//                 silently mask it; we treat it as corrupt data).
//  poisson_nll:   pred, target of one shape; log_input=false: pred - target*log(pred + eps)
//                 (Keras/retina form, PyTorch PoissonNLLLoss(log_input=False, eps=1e-8));
//                 log_input=true: exp(pred) - target*pred. Mean over elements.
//  mse:           mean((pred - target)^2).
#pragma once
#include "kernels/op_common.h"

namespace dynsim {

struct CrossEntropyParams {
  int ignore_index = -1;
};
struct PoissonNllParams {
  bool log_input = false;
  double eps = 1e-8;
};

namespace cpu {
void cross_entropy_forward(Context& c, const CrossEntropyParams& p, const Tensor& logits,
                           const Tensor& labels, const Tensor& loss);
void cross_entropy_backward(Context& c, const CrossEntropyParams& p, const Tensor& grad_loss,
                            const Tensor& logits, const Tensor& labels,
                            const Tensor& grad_logits, GradMode m);
void poisson_nll_forward(Context& c, const PoissonNllParams& p, const Tensor& pred,
                         const Tensor& target, const Tensor& loss);
void poisson_nll_backward(Context& c, const PoissonNllParams& p, const Tensor& grad_loss,
                          const Tensor& pred, const Tensor& target, const Tensor& grad_pred,
                          GradMode m);
void mse_forward(Context& c, const Tensor& pred, const Tensor& target, const Tensor& loss);
// grad_target may be undefined.
void mse_backward(Context& c, const Tensor& grad_loss, const Tensor& pred, const Tensor& target,
                  const Tensor& grad_pred, const Tensor& grad_target, GradMode m);
}  // namespace cpu
namespace cuda {  // kernels/losses_cuda.cu (f32, f64)
void cross_entropy_forward(Context& c, const CrossEntropyParams& p, const Tensor& logits,
                           const Tensor& labels, const Tensor& loss);
void cross_entropy_backward(Context& c, const CrossEntropyParams& p, const Tensor& grad_loss,
                            const Tensor& logits, const Tensor& labels,
                            const Tensor& grad_logits, GradMode m);
void poisson_nll_forward(Context& c, const PoissonNllParams& p, const Tensor& pred,
                         const Tensor& target, const Tensor& loss);
void poisson_nll_backward(Context& c, const PoissonNllParams& p, const Tensor& grad_loss,
                          const Tensor& pred, const Tensor& target, const Tensor& grad_pred,
                          GradMode m);
void mse_forward(Context& c, const Tensor& pred, const Tensor& target, const Tensor& loss);
void mse_backward(Context& c, const Tensor& grad_loss, const Tensor& pred, const Tensor& target,
                  const Tensor& grad_pred, const Tensor& grad_target, GradMode m);
}  // namespace cuda
}  // namespace dynsim
