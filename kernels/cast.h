// Dtype conversion y = x between f32, f64 and bf16 (same shape, same device). Widening is exact;
// narrowing rounds to nearest, ties to even (engine/core/bf16.h for bf16; f64 -> bf16 in one
// rounding). Both twins give the same bits. Also the check both share.
#pragma once
#include "kernels/op_common.h"

namespace dynsim {

// DataError naming `op` unless x and y are defined float tensors (f32, f64, bf16) of one shape
// on one device.
void check_cast(const char* op, const Tensor& x, const Tensor& y);

// Element i of a float tensor of dtype `from` as the dtype `to` (both twins call this).
template <class To, class From>
DYNSIM_HD To cast_value(From v);

namespace cpu {
void cast(Context& c, const Tensor& x, const Tensor& y);
}
namespace cuda {  // kernels/cast_cuda.cu
void cast(Context& c, const Tensor& x, const Tensor& y);
// y[n, c, ...] = bf16(f32(y[n, c, ...]) + f32(b[c])) for bf16 y [N, C, ...] and b [C] (bf16 or
// f32) on y's device: the bias of the native bf16 conv (kernels/conv2d_cudnn.cpp).
void add_channel_bias_bf16(Context& c, const Tensor& y, const Tensor& b);
}

// Calls f(From{}, To{}) with the element types of x's and y's dtypes (float, double, bf16);
// both twins dispatch through it after check_cast (which rules out i32).
template <class F>
void with_cast_types(const Tensor& x, const Tensor& y, F&& f) {
  auto to = [&](auto from) {
    switch (y.dtype()) {
      case DType::F32: return f(from, float{});
      case DType::F64: return f(from, double{});
      case DType::BF16: return f(from, bf16{});
      case DType::I32: break;
    }
  };
  switch (x.dtype()) {
    case DType::F32: return to(float{});
    case DType::F64: return to(double{});
    case DType::BF16: return to(bf16{});
    case DType::I32: break;
  }
}

// The rounding rules, one per pair (the identity for equal types).
template <class To, class From>
DYNSIM_HD To cast_value(From v) {
  if constexpr (std::is_same_v<To, From>) {
    return v;
  } else if constexpr (std::is_same_v<To, bf16>) {
    if constexpr (std::is_same_v<From, double>) return bf16_from_f64(v);
    else return bf16_from_f32(v);
  } else if constexpr (std::is_same_v<From, bf16>) {
    return To(bf16_to_f32(v));
  } else {
    return To(v);
  }
}

}  // namespace dynsim
