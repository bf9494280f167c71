// The bf16 storage precision on ops written for f32: each bf16 operand is widened (exactly) into
// an f32 buffer the context keeps, the f32 op runs on the buffers, and each bf16 output is
// rounded back once (to nearest, ties to even). So a bf16 op is by definition its f32 twin on
// the stored values, rounded on store: the reference that native bf16 kernels are tested
// against. Buffers are kept per operand slot and size (kernels/dispatch.h calls this for every
// op with a bf16 operand that has no native kernel): no allocation after a shape's first call.
#pragma once
#include <array>
#include <initializer_list>

#include "engine/core/context.h"

namespace dynsim {

inline bool any_bf16(std::initializer_list<const Tensor*> ts) {
  for (const Tensor* t : ts)
    if (t->defined() && t->dtype() == DType::BF16) return true;
  return false;
}

class Widened {
 public:
  explicit Widened(Context& c) : c_(c) {}
  // t itself unless it is bf16; else its f32 copy. The same tensor (storage, offset, shape)
  // passed twice (as input and output, in either order) gets the same buffer. Partly
  // overlapping bf16 views get separate buffers: ops that allow only exact aliasing are safe.
  Tensor in(const Tensor& t);
  // The tensor an op writes in place of t: t itself unless bf16; else an f32 buffer, holding
  // t's values when `read` (an accumulating gradient, an output that is also an input).
  Tensor out(const Tensor& t, bool read = false);
  // Rounds every bf16 output's buffer into it. Not called when the op threw: outputs unchanged.
  void finish();

 private:
  struct Slot {
    Tensor original, buffer;
    bool written = false;
    bool filled = false;  // holds t's values (an input, or an output read by the op)
  };
  // Every operand of one op (leak_tail_backward has the most: 8 terms and 7 more); a fixed array,
  // so an op in a step loop allocates nothing on the heap.
  static constexpr int kMaxSlots = 16;
  Context& c_;
  std::array<Slot, kMaxSlots> slots_;
  int n_ = 0;
  Tensor buffer_for(const Tensor& t, bool copy_in, bool written);
};

}  // namespace dynsim
