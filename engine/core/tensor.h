// Tensor: a shape (row-major, NCHW by convention), a dtype, a device and shared storage.
// Views (reshape, slice along dim 0) share the storage and cost nothing. Host data is 64-byte
// aligned. f32 everywhere; f64 for gradient checks (CPU and CUDA); i32 for labels and indices;
// bf16 for the bf16 storage precision (values converted by rounding to nearest even).
#pragma once
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "engine/core/bf16.h"
#include "engine/core/errors.h"

namespace dynsim {

// BF16: storage only (engine/core/bf16.h); ops compute in f32 and round what they store.
enum class DType : uint8_t { F32, F64, I32, BF16 };
enum class Device : uint8_t { Cpu, Cuda };

size_t dtype_size(DType t);
const char* dtype_name(DType t);
const char* device_name(Device d);

template <class T>
constexpr DType dtype_of();
template <>
constexpr DType dtype_of<float>() { return DType::F32; }
template <>
constexpr DType dtype_of<double>() { return DType::F64; }
template <>
constexpr DType dtype_of<int32_t>() { return DType::I32; }
template <>
constexpr DType dtype_of<bf16>() { return DType::BF16; }

class Shape {
 public:
  static constexpr int kMaxRank = 6;
  Shape() = default;
  Shape(std::initializer_list<int64_t> dims);
  explicit Shape(const std::vector<int64_t>& dims);
  int rank() const { return rank_; }
  int64_t operator[](int i) const { return d_[i]; }
  int64_t& operator[](int i) { return d_[i]; }
  int64_t numel() const;
  std::vector<int64_t> vec() const { return {d_, d_ + rank_}; }
  std::string str() const;  // "[8,3,64,64]"
  bool operator==(const Shape& o) const;
  bool operator!=(const Shape& o) const { return !(*this == o); }

 private:
  int64_t d_[kMaxRank] = {0, 0, 0, 0, 0, 0};
  int rank_ = 0;
};

// One allocation, freed when the last tensor viewing it goes away.
struct Storage {
  void* data = nullptr;
  size_t bytes = 0;
  Device device = Device::Cpu;
  int device_index = 0;
  Storage(size_t bytes, Device device, int device_index);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
};

class Tensor {
 public:
  Tensor() = default;  // undefined: defined() is false
  static Tensor empty(const Shape& s, DType t = DType::F32, Device d = Device::Cpu,
                      int device_index = 0);
  static Tensor zeros(const Shape& s, DType t = DType::F32, Device d = Device::Cpu,
                      int device_index = 0);
  // Host tensor filled from values (converted to dtype t).
  static Tensor from(const Shape& s, const std::vector<double>& values, DType t = DType::F32);

  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  int rank() const { return shape_.rank(); }
  int64_t dim(int i) const { return shape_[i < 0 ? i + shape_.rank() : i]; }
  int64_t numel() const { return shape_.numel(); }
  DType dtype() const { return dtype_; }
  Device device() const { return storage_ ? storage_->device : Device::Cpu; }
  int device_index() const { return storage_ ? storage_->device_index : 0; }
  bool is_cpu() const { return device() == Device::Cpu; }
  size_t nbytes() const { return size_t(numel()) * dtype_size(dtype_); }

  void* raw() const;  // start of this view's data (device pointer for CUDA tensors)
  template <class T>
  T* data() const {
    if (dtype_of<T>() != dtype_) throw Error(concat("tensor ", this->str(), ": accessed as ",
                                                 dtype_name(dtype_of<T>())));
    return static_cast<T*>(raw());
  }

  Tensor view(const Shape& s) const;              // same elements, new shape
  Tensor slice(int64_t begin, int64_t end) const;  // rows [begin, end) of dim 0
  bool same_storage(const Tensor& o) const { return storage_ == o.storage_; }

  // Host-only helpers (tests, I/O).
  Tensor clone() const;
  Tensor to_dtype(DType t) const;
  void fill(double v);
  double item(int64_t i) const;  // element i as double
  void set(int64_t i, double v);
  std::vector<double> to_vector() const;

  std::string str() const;  // "f32[8,3,64,64]@cpu"

 private:
  std::shared_ptr<Storage> storage_;
  int64_t offset_ = 0;  // in elements
  Shape shape_;
  DType dtype_ = DType::F32;
  void require_cpu(const char* what) const;
};

// Checks used by ops: throw with the op name, the role and the tensor's description.
void check_shape(const char* op, const char* role, const Tensor& t, const Shape& want);
void check_same(const char* op, const char* role, const Tensor& a, const Tensor& b);

}  // namespace dynsim
