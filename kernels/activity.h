// DynVision's activity loss (reference/dynvision-spec.md; engine/autograd/bptt_forward.cpp and
// bptt_reverse.cpp) on the device that holds the activations. Per sample b of y [B, ...] with
// n = numel / B elements:
// s_b = sum_i y_bi (signed) or sum_i |y_bi| (absolute), in double; activity_accumulate adds
// |s_b| / n to acc[b] (f64 [B] on y's device); activity_seed adds coef * d(|s_b| / n)/dy, i.e.
// T(coef * sign / n) with sign = sign(y_bi) (absolute) or sign(s_b) (signed), to grad_y.
#pragma once
#include "kernels/op_common.h"

namespace dynsim::cpu {
// Bit for bit the engine's host loops: each sample summed sequentially in index order.
void activity_accumulate(Context& c, const Tensor& y, bool is_signed, const Tensor& acc);
void activity_seed(Context& c, const Tensor& y, double coef, bool is_signed, const Tensor& grad_y);
}  // namespace dynsim::cpu

namespace dynsim::cuda {  // kernels/activity_cuda.cu (f32, f64)
// One block per sample, a fixed strided order and tree in double: deterministic.
void activity_accumulate(Context& c, const Tensor& y, bool is_signed, const Tensor& acc);
void activity_seed(Context& c, const Tensor& y, double coef, bool is_signed, const Tensor& grad_y);
}  // namespace dynsim::cuda

namespace dynsim {
// The checks both twins make (after the dtype and device of y): y is [B, ...] with B >= 1 and
// samples of n >= 1 elements; acc is f64 [B] on y's device. Returns n.
int64_t check_activity_accumulate(const char* op, const Tensor& y, const Tensor& acc);
// y as above; grad_y has y's shape, dtype and device and is not y itself. Returns n.
int64_t check_activity_seed(const char* op, const Tensor& y, const Tensor& grad_y);
}  // namespace dynsim
