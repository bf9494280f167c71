// CUDA twin of the dtype conversion (kernels/cast.h): one grid-stride pass with the CPU twin's
// per-element rule (engine/core/bf16.h), so both give the same bits.
#include <algorithm>

#include "kernels/cast.h"
#include "kernels/cuda_common.cuh"

namespace dynsim::cuda {
namespace {
template <class To, class From>
void cast_t(Context& c, const Tensor& x, const Tensor& y) {
  const From* px = x.data<From>();
  To* py = y.data<To>();
  launch(c, x.numel(), [=] __device__(int64_t i) { py[i] = cast_value<To, From>(px[i]); });
}
}  // namespace

void add_channel_bias_bf16(Context& c, const Tensor& y, const Tensor& b) {
  const char* op = "add_channel_bias_bf16";
  if (y.dtype() != DType::BF16 || y.device() != Device::Cuda || y.rank() < 2)
    throw DataError(concat(op, ": y must be bf16 [N, C, ...] on a CUDA device, got ", y.str()));
  check_shape(op, "b", b, Shape{y.dim(1)});
  if (b.device() != y.device() || (b.dtype() != DType::BF16 && b.dtype() != DType::F32))
    throw DataError(concat(op, ": b must be bf16 or f32 on y's device, got ", b.str()));
  const int64_t C = y.dim(1), inner = y.numel() / std::max<int64_t>(1, y.dim(0) * C);
  bf16* py = y.data<bf16>();
  if (b.dtype() == DType::F32) {
    const float* pb = b.data<float>();
    launch(c, y.numel(), [=] __device__(int64_t i) {
      py[i] = bf16_from_f32(bf16_to_f32(py[i]) + pb[(i / inner) % C]);
    });
  } else {
    const bf16* pb = b.data<bf16>();
    launch(c, y.numel(), [=] __device__(int64_t i) {
      py[i] = bf16_from_f32(bf16_to_f32(py[i]) + bf16_to_f32(pb[(i / inner) % C]));
    });
  }
}

void cast(Context& c, const Tensor& x, const Tensor& y) {
  check_cast("cast", x, y);
  if (x.device() != Device::Cuda) throw DataError(concat("cast: CUDA op got ", x.str()));
  with_cast_types(x, y, [&](auto from, auto to) {
    cast_t<decltype(to), decltype(from)>(c, x, y);
  });
}

}  // namespace dynsim::cuda
