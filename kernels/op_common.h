// Shared pieces of every op: the gradient write mode, dtype dispatch for the CPU twins and
// argument checks that name the op and the tensor.
#pragma once
#include <type_traits>
#include <utility>

#include "engine/core/context.h"
#include "engine/core/tensor.h"

namespace dynsim {

// How a backward writes a gradient: replace what is there, or add to it (weights shared over
// time steps accumulate).
enum class GradMode : uint8_t { Overwrite, Accumulate };

template <class T>
inline void write_grad(T& dst, T v, GradMode m) {
  if (m == GradMode::Accumulate)
    dst += v;
  else
    dst = v;
}

// The element pointer of an optional tensor (nullptr when undefined); T may be const.
template <class T>
T* data_or_null(const Tensor& t) {
  return t.defined() ? t.data<std::remove_const_t<T>>() : nullptr;
}

namespace cpu {
// Runs f(i) for i in [0, n): inline for small n (a parallel region costs more than it saves),
// split statically over the context's threads otherwise. Elementwise bodies give the same bits
// for any split.
constexpr int64_t kParallelMin = 1 << 15;
template <class F>
void for_each_index(const Context& c, int64_t n, F&& f) {
  if (n < kParallelMin || c.threads() == 1) {
    for (int64_t i = 0; i < n; ++i) f(i);
    return;
  }
#pragma omp parallel for num_threads(c.threads()) schedule(static)
  for (int64_t i = 0; i < n; ++i) f(i);
}

// Calls f(T{}) with T = float or double after checking that t is a host float tensor.
template <class F>
decltype(auto) with_float_type(const char* op, const Tensor& t, F&& f) {
  if (!t.defined()) throw DataError(concat(op, ": input is undefined"));
  if (t.device() != Device::Cpu) throw DataError(concat(op, ": CPU op got ", t.str()));
  if (t.dtype() == DType::F32) return f(float{});
  if (t.dtype() == DType::F64) return f(double{});
  throw DataError(concat(op, ": needs f32 or f64, got ", t.str()));
}
}  // namespace cpu

// The tensor must be defined, on `like`'s device and dtype, and of shape s.
inline void check_arg(const char* op, const char* role, const Tensor& t, const Tensor& like,
                      const Shape& s) {
  check_shape(op, role, t, s);
  check_same(op, role, t, like);
}

}  // namespace dynsim
