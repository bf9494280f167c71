// bfloat16 storage: the top 16 bits of a binary32. Rounding f32 -> bf16 is to nearest, ties to
// even, on the bits (NaN stays NaN with its sign and top payload bits, quiet bit set); widening
// bf16 -> f32 is exact. Shared by the CPU and CUDA twins so both give the same bits.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "engine/core/rng.h"  // DYNSIM_HD

namespace dynsim {

// The storage type of DType::BF16 (a distinct type so Tensor::data<bf16>() is checked).
struct bf16 {
  uint16_t bits;
};

DYNSIM_HD uint32_t f32_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
DYNSIM_HD float f32_from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

DYNSIM_HD bf16 bf16_from_f32(float f) {
  const uint32_t u = f32_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return bf16{uint16_t((u >> 16) | 0x0040u)};  // NaN
  // Adding 0x7fff plus the lowest kept bit rounds to nearest, ties to even; a carry into the
  // exponent is the correct result (up to +-inf past the largest finite bf16).
  return bf16{uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16)};
}
DYNSIM_HD float bf16_to_f32(bf16 h) { return f32_from_bits(uint32_t(h.bits) << 16); }

// f64 -> bf16 in one rounding: round to f32 toward zero with a sticky lowest bit (round to
// odd), which keeps the later round-to-nearest-even from rounding twice.
DYNSIM_HD bf16 bf16_from_f64(double v) {
  float f = float(v);
  if (f == f && double(f) != v && f - f == 0.0f) {  // finite and inexact
    uint32_t u = f32_bits(f);
    if (std::fabs(double(f)) > std::fabs(v)) --u;  // rounded away from zero: step toward it
    f = f32_from_bits(u | 1u);
  }
  return bf16_from_f32(f);
}

// A storage type's arithmetic type (f32 for bf16, the type itself otherwise) and the element
// conversions kernels templated on the storage type use: widen_value loads exactly,
// narrow_value<S> stores (bf16: to nearest even; the identity for f32 and f64).
template <class S>
struct compute_of {
  using type = S;
};
template <>
struct compute_of<bf16> {
  using type = float;
};
template <class S>
using compute_t = typename compute_of<S>::type;

template <class S>
DYNSIM_HD S widen_value(S v) {
  return v;
}
DYNSIM_HD float widen_value(bf16 v) {
  return bf16_to_f32(v);
}
template <class S>
DYNSIM_HD S narrow_value(compute_t<S> v) {
  if constexpr (std::is_same_v<S, bf16>)
    return bf16_from_f32(v);
  else
    return v;
}

}  // namespace dynsim
