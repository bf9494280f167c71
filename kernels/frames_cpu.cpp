// CPU twin of the repeated-frame flags (kernels/frames.h): memcmp of each step's frame with the
// previous step's, sample by sample, the idle frame built once as ops::fill writes it. Also the
// argument checks both twins share.
#include <cstring>
#include <vector>

#include "kernels/frames.h"

namespace dynsim {

void check_repeated_frames(const char* op, const Tensor& input, int64_t idle_steps,
                           const Tensor& flags) {
  if (!input.defined()) throw DataError(concat(op, ": input is undefined"));
  if (input.rank() < 3)
    throw DataError(
        concat(op, ": input must be [B, T, ...] with a frame of rank >= 1, got ", input.str()));
  if (idle_steps < 0) throw DataError(concat(op, ": idle_steps must be >= 0, got ", idle_steps));
  check_shape(op, "flags", flags, Shape{idle_steps + input.dim(1)});
  if (flags.dtype() != DType::I32 || flags.device() != input.device() ||
      flags.device_index() != input.device_index())
    throw DataError(concat(op, ": flags must be i32 on the input's device (", input.str(),
                           "), got ", flags.str()));
}

namespace cpu {

void repeated_frames(Context& c, const Tensor& input, int64_t idle_steps, double idle_value,
                     const Tensor& flags) {
  const char* op = "repeated_frames";
  if (!input.defined()) throw DataError(concat(op, ": input is undefined"));
  if (input.device() != Device::Cpu) throw DataError(concat(op, ": CPU op got ", input.str()));
  if (input.dtype() == DType::I32)
    throw DataError(concat(op, ": needs f32, f64 or bf16, got ", input.str()));
  check_repeated_frames(op, input, idle_steps, flags);
  const int64_t B = input.dim(0), T_ = input.dim(1), total = idle_steps + T_;
  const int64_t fe = B * T_ > 0 ? input.numel() / (B * T_) : 0;  // elements per frame
  const size_t es = dtype_size(input.dtype()), fb = size_t(fe) * es;
  const char* base = static_cast<const char*>(input.raw());
  auto frame = [&](int64_t b, int64_t tr) { return base + size_t(b * T_ + tr) * fb; };
  // The idle frame as ops::fill writes it: its element's bits (little-endian low bytes) repeated.
  const uint64_t bits = idle_frame_bits(idle_value, input.dtype());
  std::vector<char> idle_frame(fb);
  for (size_t i = 0; i < fb; i += es) std::memcpy(idle_frame.data() + i, &bits, es);
  const char* idle_ptr = idle_frame.data();
  int32_t* out = flags.data<int32_t>();
  cpu::for_each_index(c, total, [&](int64_t s) {
    bool same = s > 0;
    for (int64_t b = 0; b < B && same; ++b) {
      const char* prev = s - 1 < idle_steps ? idle_ptr : frame(b, s - 1 - idle_steps);
      const char* cur = s < idle_steps ? idle_ptr : frame(b, s - idle_steps);
      same = fb == 0 || prev == cur || std::memcmp(prev, cur, fb) == 0;
    }
    out[s] = same ? 1 : 0;
  });
}

}  // namespace cpu
}  // namespace dynsim
