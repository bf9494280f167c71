// Repeated input frames: per step of a run (idle steps first), 1 where every sample's frame equals
// the previous step's bit for bit, so the Scheduler runs operators on the input frame once per
// distinct frame. The frame at step t < idle_steps is the idle frame (every element idle_value
// in the input's dtype, as ops::fill writes it); frames compare as raw bits (-0 != +0, a NaN
// equals the same NaN bits), exactly as memcmp. input [B, T, ...] (rank >= 3) f32 or f64,
// flags i32 [idle_steps + T] on the input's device: flags[0] = 0, flags[t] in {0, 1}.
#pragma once
#include <cstdint>
#include <cstring>

#include "kernels/op_common.h"

namespace dynsim {

// The checks shared by both twins: DataError naming `op` and the argument for a bad rank,
// negative idle_steps, or flags that are not i32 [idle_steps + T] on the input's device.
void check_repeated_frames(const char* op, const Tensor& input, int64_t idle_steps,
                           const Tensor& flags);

// The bits of one idle element: idle_value rounded to the dtype as ops::fill writes it (f32:
// float(value); bf16: float(value) rounded to bf16; f64: the value), zero-extended to 64 bits.
// Its width is dtype_size(t).
inline uint64_t idle_frame_bits(double idle_value, DType t) {
  if (t == DType::F64) {
    uint64_t b;
    std::memcpy(&b, &idle_value, 8);
    return b;
  }
  const float v = float(idle_value);
  if (t == DType::BF16) return bf16_from_f32(v).bits;
  uint32_t b;
  std::memcpy(&b, &v, 4);
  return b;
}

namespace cpu {
void repeated_frames(Context& c, const Tensor& input, int64_t idle_steps, double idle_value,
                     const Tensor& flags);
}  // namespace cpu

namespace cuda {  // kernels/frames_cuda.cu, f32, f64 and bf16; no float compares, no host sync
void repeated_frames(Context& c, const Tensor& input, int64_t idle_steps, double idle_value,
                     const Tensor& flags);
}  // namespace cuda
}  // namespace dynsim
