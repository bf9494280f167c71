// 2-D convolution (cross-correlation, as PyTorch), NCHW. One params struct serves forward,
// dgrad and wgrad. x [N, Cin, H, W], w [Cout, Cin/groups, KH, KW], b [Cout] or undefined,
// y [N, Cout, Ho, Wo] with Ho = (H + 2*pad_h - KH) / stride_h + 1 (likewise Wo).
// Padding is zeros or reflect (PyTorch's 'reflect': the edge pixel is not repeated).
#pragma once
#include "kernels/op_common.h"

namespace dynsim {

enum class PadMode : uint8_t { Zeros, Reflect };

struct Conv2dParams {
  int stride_h = 1, stride_w = 1;
  int pad_h = 0, pad_w = 0;
  PadMode pad_mode = PadMode::Zeros;
  int groups = 1;
  // Output shape for x and w; throws DataError naming the mismatch.
  Shape output_shape(const Shape& x, const Shape& w) const;
};

namespace cpu {
void conv2d_forward(Context& c, const Conv2dParams& p, const Tensor& x, const Tensor& w,
                    const Tensor& b, const Tensor& y);
// Any of grad_x, grad_w, grad_b may be undefined (not wanted).
void conv2d_backward(Context& c, const Conv2dParams& p, const Tensor& grad_y, const Tensor& x,
                     const Tensor& w, const Tensor& grad_x, const Tensor& grad_w,
                     const Tensor& grad_b, GradMode m);
}  // namespace cpu
namespace cuda {  // kernels/conv2d_cudnn.cpp (cuDNN; f32, f64)
void conv2d_forward(Context& c, const Conv2dParams& p, const Tensor& x, const Tensor& w,
                    const Tensor& b, const Tensor& y);
void conv2d_backward(Context& c, const Conv2dParams& p, const Tensor& grad_y, const Tensor& x,
                     const Tensor& w, const Tensor& grad_x, const Tensor& grad_w,
                     const Tensor& grad_b, GradMode m);
}  // namespace cuda
}  // namespace dynsim
