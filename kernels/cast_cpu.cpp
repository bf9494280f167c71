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
namespace {
template <class To, class From>
void cast_t(Context& c, const Tensor& x, const Tensor& y) {
  const From* px = x.data<From>();
  To* py = y.data<To>();
  for_each_index(c, x.numel(), [&](int64_t i) { py[i] = cast_value<To, From>(px[i]); });
}
template <class From>
void cast_from(Context& c, const Tensor& x, const Tensor& y) {
  switch (y.dtype()) {
    case DType::F32: return cast_t<float, From>(c, x, y);
    case DType::F64: return cast_t<double, From>(c, x, y);
    case DType::BF16: return cast_t<bf16, From>(c, x, y);
    case DType::I32: break;
  }
}
}  // namespace

void cast(Context& c, const Tensor& x, const Tensor& y) {
  check_cast("cast", x, y);
  if (x.device() != Device::Cpu) throw DataError(concat("cast: CPU op got ", x.str()));
  switch (x.dtype()) {
    case DType::F32: return cast_from<float>(c, x, y);
    case DType::F64: return cast_from<double>(c, x, y);
    case DType::BF16: return cast_from<bf16>(c, x, y);
    case DType::I32: break;
  }
}

}  // namespace cpu
}  // namespace dynsim
