// Widening bf16 operands for f32 ops (kernels/bf16_widen.h).
#include "kernels/bf16_widen.h"

#include "kernels/dispatch.h"

namespace dynsim {
namespace {
struct WidenBuffer {
  Tensor t;
};
bool same_view(const Tensor& a, const Tensor& b) {
  return a.same_storage(b) && a.raw() == b.raw() && a.shape() == b.shape() &&
         a.dtype() == b.dtype();
}
}  // namespace

Tensor Widened::buffer_for(const Tensor& t, bool copy_in, bool written) {
  for (int i = 0; i < n_; ++i) {
    Slot& s = slots_[size_t(i)];
    if (same_view(s.original, t)) {  // an output that is also an input: one buffer
      s.written = s.written || written;
      if (copy_in && !s.filled) ops::cast(c_, t, s.buffer);
      s.filled = s.filled || copy_in;
      return s.buffer;
    }
  }
  if (n_ == kMaxSlots)
    throw Error(concat("bf16: an op with more than ", kMaxSlots, " bf16 operands"));
  const int64_t n = t.numel();
  WidenBuffer& b = c_.plans().get_or_create<WidenBuffer>(
      PlanKey("bf16_widen") << int64_t(n_) << n,
      [&] { return std::make_shared<WidenBuffer>(WidenBuffer{c_.empty(Shape{n}, DType::F32)}); });
  Tensor buf = b.t.view(t.shape());
  if (copy_in) ops::cast(c_, t, buf);
  slots_[size_t(n_++)] = Slot{t, buf, written, copy_in};
  return buf;
}

Tensor Widened::in(const Tensor& t) {
  if (!t.defined() || t.dtype() != DType::BF16) return t;
  return buffer_for(t, true, false);
}

Tensor Widened::out(const Tensor& t, bool read) {
  if (!t.defined() || t.dtype() != DType::BF16) return t;
  return buffer_for(t, read, true);
}

void Widened::finish() {
  for (int i = 0; i < n_; ++i) {
    const Slot& s = slots_[size_t(i)];
    if (s.written) ops::cast(c_, s.buffer, s.original);
  }
}

}  // namespace dynsim
