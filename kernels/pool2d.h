// Max and average pooling over H, W of NCHW tensors (PyTorch semantics, floor mode).
// x [N, C, H, W] -> y [N, C, Ho, Wo], Ho = (H + 2*pad_h - kernel_h) / stride_h + 1.
// Max pooling pads with -inf and returns the argmax (flat index h*W + w into the input plane,
// first maximum wins) for the backward. Average pooling divides by the full window
// (count_include_pad = true, PyTorch's default) or by the valid part.
// DynVision uses MaxPool(3, 2, 1) and the identity MaxPool(1, 1).
#pragma once
#include "kernels/op_common.h"

namespace dynsim {

struct Pool2dParams {
  int kernel_h = 1, kernel_w = 1;
  int stride_h = 1, stride_w = 1;
  int pad_h = 0, pad_w = 0;
  bool count_include_pad = true;  // average pooling only
  Shape output_shape(const Shape& x) const;  // throws DataError on bad sizes
};

namespace cpu {
void maxpool2d_forward(Context& c, const Pool2dParams& p, const Tensor& x, const Tensor& y,
                       const Tensor& argmax /* i32, shape of y */);
void maxpool2d_backward(Context& c, const Pool2dParams& p, const Tensor& grad_y,
                        const Tensor& argmax, const Tensor& grad_x, GradMode m);
void avgpool2d_forward(Context& c, const Pool2dParams& p, const Tensor& x, const Tensor& y);
void avgpool2d_backward(Context& c, const Pool2dParams& p, const Tensor& grad_y,
                        const Tensor& grad_x, GradMode m);
}  // namespace cpu
namespace cuda {  // kernels/pool2d_cuda.cu (f32, f64; maxpool2d_forward also bf16 x and y)
void maxpool2d_forward(Context& c, const Pool2dParams& p, const Tensor& x, const Tensor& y,
                       const Tensor& argmax /* i32, shape of y */);
void maxpool2d_backward(Context& c, const Pool2dParams& p, const Tensor& grad_y,
                        const Tensor& argmax, const Tensor& grad_x, GradMode m);
void avgpool2d_forward(Context& c, const Pool2dParams& p, const Tensor& x, const Tensor& y);
void avgpool2d_backward(Context& c, const Pool2dParams& p, const Tensor& grad_y,
                        const Tensor& grad_x, GradMode m);
}  // namespace cuda
}  // namespace dynsim
