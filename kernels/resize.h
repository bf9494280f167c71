// Nearest-neighbour resize of NCHW tensors with DynVision's (and PyTorch's 'nearest') index
// rule: output pixel i reads input pixel floor(i * in / out), up and down. x [N,C,H,W] ->
// y [N,C,Ho,Wo]; the sizes come from y. Backward scatters grad_y into grad_x (sums repeats).
#pragma once
#include "kernels/op_common.h"

namespace dynsim {
// floor(i * in / out) in integer arithmetic (exact for all sizes).
inline int64_t nearest_source_index(int64_t i, int64_t in, int64_t out) { return i * in / out; }

namespace cpu {
void resize_nearest_forward(Context& c, const Tensor& x, const Tensor& y);
void resize_nearest_backward(Context& c, const Tensor& grad_y, const Tensor& grad_x, GradMode m);
}  // namespace cpu
}  // namespace dynsim
