// Tensor storage, views and host-side helpers.
#include "engine/core/tensor.h"

#include <cstdlib>
#include <cstring>

#include "engine/core/device.h"

namespace dynsim {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::F64: return 8;
    case DType::I32: return 4;
    case DType::BF16: return 2;
  }
  return 0;
}
const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "f32";
    case DType::F64: return "f64";
    case DType::I32: return "i32";
    case DType::BF16: return "bf16";
  }
  return "?";
}
const char* device_name(Device d) { return d == Device::Cpu ? "cpu" : "cuda"; }

Shape::Shape(std::initializer_list<int64_t> dims) : Shape(std::vector<int64_t>(dims)) {}
Shape::Shape(const std::vector<int64_t>& dims) {
  if (dims.size() > size_t(kMaxRank)) throw Error(concat("shape of rank ", dims.size(), " > 6"));
  rank_ = int(dims.size());
  for (int i = 0; i < rank_; ++i) {
    if (dims[i] < 0) throw Error(concat("negative dimension ", dims[i], " in shape"));
    d_[i] = dims[i];
  }
}
int64_t Shape::numel() const {
  int64_t n = 1;
  for (int i = 0; i < rank_; ++i) n *= d_[i];
  return n;
}
std::string Shape::str() const {
  std::string s = "[";
  for (int i = 0; i < rank_; ++i) s += (i ? "," : "") + std::to_string(d_[i]);
  return s + "]";
}
bool Shape::operator==(const Shape& o) const {
  if (rank_ != o.rank_) return false;
  for (int i = 0; i < rank_; ++i)
    if (d_[i] != o.d_[i]) return false;
  return true;
}

Storage::Storage(size_t nbytes, Device dev, int index)
    : bytes(nbytes), device(dev), device_index(index) {
  size_t alloc = nbytes ? nbytes : 1;
  if (dev == Device::Cpu) {
    data = std::aligned_alloc(64, (alloc + 63) / 64 * 64);
    if (!data) throw Error(concat("host allocation of ", nbytes, " bytes failed"));
  } else {
    data = device_malloc(alloc, index);
  }
}
Storage::~Storage() {
  if (device == Device::Cpu)
    std::free(data);
  else
    device_free(data, bytes ? bytes : 1, device_index);
}

Tensor Tensor::empty(const Shape& s, DType t, Device d, int device_index) {
  Tensor r;
  r.storage_ = std::make_shared<Storage>(size_t(s.numel()) * dtype_size(t), d, device_index);
  r.shape_ = s;
  r.dtype_ = t;
  return r;
}
Tensor Tensor::zeros(const Shape& s, DType t, Device d, int device_index) {
  Tensor r = empty(s, t, d, device_index);
  if (d == Device::Cpu) {
    std::memset(r.raw(), 0, r.nbytes());
  } else {
    std::vector<char> z(r.nbytes(), 0);
    device_memcpy(r.raw(), true, z.data(), false, r.nbytes(), nullptr);
  }
  return r;
}
Tensor Tensor::from(const Shape& s, const std::vector<double>& values, DType t) {
  if (int64_t(values.size()) != s.numel())
    throw Error(concat("Tensor::from: ", values.size(), " values for shape ", s.str()));
  Tensor r = empty(s, t);
  for (int64_t i = 0; i < s.numel(); ++i) r.set(i, values[i]);
  return r;
}

void* Tensor::raw() const {
  if (!storage_) throw Error("access to an undefined tensor");
  return static_cast<char*>(storage_->data) + offset_ * int64_t(dtype_size(dtype_));
}

Tensor Tensor::view(const Shape& s) const {
  if (s.numel() != numel())
    throw Error(concat("view of ", str(), " as ", s.str(), ": element counts differ"));
  Tensor r = *this;
  r.shape_ = s;
  return r;
}
Tensor Tensor::slice(int64_t begin, int64_t end) const {
  if (rank() < 1 || begin < 0 || end < begin || end > dim(0))
    throw Error(concat("slice [", begin, ",", end, ") of ", str()));
  Tensor r = *this;
  r.shape_[0] = end - begin;
  r.offset_ = offset_ + begin * (dim(0) ? numel() / dim(0) : 0);
  return r;
}

void Tensor::require_cpu(const char* what) const {
  if (!defined()) throw Error(concat(what, ": undefined tensor"));
  if (device() != Device::Cpu) throw Error(concat(what, ": ", str(), " is not on the host"));
}
Tensor Tensor::clone() const {
  require_cpu("clone");
  Tensor r = empty(shape_, dtype_);
  std::memcpy(r.raw(), raw(), nbytes());
  return r;
}
Tensor Tensor::to_dtype(DType t) const {
  require_cpu("to_dtype");
  Tensor r = empty(shape_, t);
  for (int64_t i = 0; i < numel(); ++i) r.set(i, item(i));
  return r;
}
void Tensor::fill(double v) {
  require_cpu("fill");
  for (int64_t i = 0; i < numel(); ++i) set(i, v);
}
double Tensor::item(int64_t i) const {
  require_cpu("item");
  switch (dtype_) {
    case DType::F32: return static_cast<const float*>(raw())[i];
    case DType::F64: return static_cast<const double*>(raw())[i];
    case DType::I32: return static_cast<const int32_t*>(raw())[i];
    case DType::BF16: return bf16_to_f32(static_cast<const bf16*>(raw())[i]);
  }
  return 0;
}
void Tensor::set(int64_t i, double v) {
  require_cpu("set");
  switch (dtype_) {
    case DType::F32: static_cast<float*>(raw())[i] = float(v); break;
    case DType::F64: static_cast<double*>(raw())[i] = v; break;
    case DType::I32: static_cast<int32_t*>(raw())[i] = int32_t(v); break;
    case DType::BF16: static_cast<bf16*>(raw())[i] = bf16_from_f64(v); break;
  }
}
std::vector<double> Tensor::to_vector() const {
  std::vector<double> v(static_cast<size_t>(numel()));
  for (int64_t i = 0; i < numel(); ++i) v[size_t(i)] = item(i);
  return v;
}
std::string Tensor::str() const {
  if (!defined()) return "undefined";
  return std::string(dtype_name(dtype_)) + shape_.str() + "@" + device_name(device());
}

void check_shape(const char* op, const char* role, const Tensor& t, const Shape& want) {
  if (!t.defined()) throw DataError(concat(op, ": ", role, " is undefined, expected ", want.str()));
  if (t.shape() != want)
    throw DataError(concat(op, ": ", role, " has shape ", t.shape().str(), ", expected ", want.str()));
}
void check_same(const char* op, const char* role, const Tensor& a, const Tensor& b) {
  if (!a.defined() || !b.defined()) throw DataError(concat(op, ": ", role, " is undefined"));
  if (a.dtype() != b.dtype() || a.device() != b.device())
    throw DataError(concat(op, ": ", role, " is ", a.str(), " but the op runs on ", b.str()));
}

}  // namespace dynsim
