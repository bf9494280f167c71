// CPU twin of the dtype conversion (kernels/cast.h), and the checks both twins share.
#include "kernels/cast.h"

namespace dynsim {

void check_cast(const char* op, const Tensor& x, const Tensor& y) {
  for (const Tensor* t : {&x, &y}) {
    const char* role = t == &x ? "x" : "y";
    if (!t->defined()) throw DataError(concat(op, ": ", role, " is undefined"));
    if (t->dtype() == DType::I32)
      throw DataError(concat(op, ": ", role, " must be f32, f64 or bf16, got ", t->str()));
  }
  check_shape(op, "y", y, x.shape());
  if (x.device() != y.device() || x.device_index() != y.device_index())
    throw DataError(concat(op, ": x is ", x.str(), " but y is ", y.str(), " (one device)"));
}

namespace cpu {

void cast(Context& c, const Tensor& x, const Tensor& y) {
  check_cast("cast", x, y);
  if (x.device() != Device::Cpu) throw DataError(concat("cast: CPU op got ", x.str()));
  with_cast_types(x, y, [&](auto from, auto to) {
    using From = decltype(from);
    using To = decltype(to);
    const From* px = x.data<From>();
    To* py = y.data<To>();
    for_each_index(c, x.numel(), [&](int64_t i) { py[i] = cast_value<To, From>(px[i]); });
  });
}

}  // namespace cpu
}  // namespace dynsim
