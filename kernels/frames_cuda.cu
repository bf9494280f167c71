// CUDA twin of the repeated-frame flags (kernels/frames.h), f32, f64 and bf16: the frames are read
// as unsigned words of their width (uint32 / uint64 / uint16), so the comparison is memcmp's (no
// float compares: -0 != +0, equal NaN bits are equal). One launch sets flags[s] = (s > 0), a second
// runs one thread per element of the sequence and stores 0 into its step's flag on a mismatch
// with the previous step (the idle word for a sample's first frame after idle steps). Only 0 is
// ever stored concurrently, so the result is independent of the order: deterministic.
#include "kernels/cuda_common.cuh"
#include "kernels/frames.h"

namespace dynsim::cuda {
namespace {

template <class U>
void flags_t(Context& c, int64_t B, int64_t T, int64_t fe, int64_t idle, U idle_word, const U* x,
             int32_t* flags) {
  launch(c, idle + T, [=] __device__(int64_t s) { flags[s] = s > 0 ? 1 : 0; });
  launch(c, B * T * fe, [=] __device__(int64_t e) {
    const int64_t tr = (e / fe) % T;
    if (tr == 0 && idle == 0) return;  // step 0 has no previous step
    const U prev = tr == 0 ? idle_word : x[e - fe];
    if (x[e] != prev) flags[idle + tr] = 0;
  });
}

}  // namespace

void repeated_frames(Context& c, const Tensor& input, int64_t idle_steps, double idle_value,
                     const Tensor& flags) {
  const char* op = "repeated_frames";
  if (!input.defined()) throw DataError(concat(op, ": input is undefined"));
  if (input.device() != Device::Cuda) throw DataError(concat(op, ": CUDA op got ", input.str()));
  if (input.dtype() == DType::I32)
    throw DataError(concat(op, ": needs f32, f64 or bf16, got ", input.str()));
  check_repeated_frames(op, input, idle_steps, flags);
  const int64_t B = input.dim(0), T = input.dim(1);
  const int64_t fe = B * T > 0 ? input.numel() / (B * T) : 0;
  const uint64_t bits = idle_frame_bits(idle_value, input.dtype());
  int32_t* out = flags.data<int32_t>();
  const void* x = input.raw();
  switch (input.dtype()) {
    case DType::F64:
      return flags_t(c, B, T, fe, idle_steps, uint64_t(bits), static_cast<const uint64_t*>(x), out);
    case DType::BF16:
      return flags_t(c, B, T, fe, idle_steps, uint16_t(bits), static_cast<const uint16_t*>(x), out);
    default:
      return flags_t(c, B, T, fe, idle_steps, uint32_t(bits), static_cast<const uint32_t*>(x), out);
  }
}

}  // namespace dynsim::cuda
