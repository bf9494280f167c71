// Reflect padding of the last two axes (PyTorch's 'reflect', conv::pad_index) and its backward,
// which adds every padded pixel back onto the pixel it mirrors (a gather over
// conv::reflect_readers: no output is written twice). On CUDA this is how conv2d gets reflect
// padding (cuDNN has none): pad into a buffer, run a zero-padded conv, fold the dgrad back.
// x [N,C,H,W] -> xp [N,C,H+2*pad_h,W+2*pad_w] with 0 <= pad_h < H and 0 <= pad_w < W.
#pragma once
#include "kernels/op_common.h"

namespace dynsim {

// xp's shape for x [N,C,H,W] (`role`: x's name in messages); DataError naming op and role for
// a bad rank or padding.
Shape reflect_pad_shape(const char* op, const char* role, int pad_h, int pad_w, const Shape& x);

namespace cpu {
void reflect_pad_forward(Context& c, int pad_h, int pad_w, const Tensor& x, const Tensor& xp);
void reflect_pad_backward(Context& c, int pad_h, int pad_w, const Tensor& grad_xp,
                          const Tensor& grad_x, GradMode m);
}  // namespace cpu

namespace cuda {  // kernels/pad_cuda.cu, f32 and f64
void reflect_pad_forward(Context& c, int pad_h, int pad_w, const Tensor& x, const Tensor& xp);
void reflect_pad_backward(Context& c, int pad_h, int pad_w, const Tensor& grad_xp,
                          const Tensor& grad_x, GradMode m);
// The same on raw device buffers (conv2d_cudnn.cpp's scratch): `planes` = N*C planes of h x w,
// unchecked (the caller has checked the conv problem), on the context's stream.
void reflect_pad_forward_raw(Context& c, bool f64, int64_t planes, int64_t h, int64_t w, int pad_h,
                             int pad_w, const void* x, void* xp);
void reflect_pad_backward_raw(Context& c, bool f64, int64_t planes, int64_t h, int64_t w, int pad_h,
                              int pad_w, const void* grad_xp, void* grad_x, GradMode m);
}  // namespace cuda
}  // namespace dynsim
