// Context: everything an op needs besides its tensors: the device, the CUDA stream and library
// handles (created lazily, opaque here so CPU code never includes CUDA headers), a plan cache,
// a scratch arena, the RNG and the thread count. Passed explicitly; never global, so two
// contexts can live in one process.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>

#include "engine/core/rng.h"
#include "engine/core/tensor.h"

namespace dynsim {

// The CUDA math mode: FP32 (TF32 off) or TF32 (cuDNN and cuBLAS may use TF32 tensor ops). The
// bf16 storage precision is the run's dtype (DType::BF16), not a math mode: its ops compute in
// f32 under the context's mode.
enum class Precision : uint8_t { FP32, TF32 };
const char* precision_name(Precision p);

struct ContextOptions {
  Device device = Device::Cpu;
  int device_index = 0;
  uint64_t seed = 0;
  int threads = 0;  // CPU worker threads; 0 = all cores
  Precision precision = Precision::FP32;
  bool deterministic = false;  // GPU: only deterministic algorithms
};

// A grow-only scratch buffer: get(n) returns at least n bytes, valid until the next get().
// After warm-up it never allocates, which keeps hot loops free of heap churn.
class ScratchArena {
 public:
  ScratchArena(Device d, int device_index) : device_(d), index_(device_index) {}
  void* get(size_t bytes);
  size_t capacity() const { return buf_ ? buf_->bytes : 0; }

 private:
  Device device_;
  int index_;
  std::unique_ptr<Storage> buf_;
};

// A plan's identity without a heap allocation (looked up on every kernel call): a kind (a string
// literal, compared by content) and up to 24 integers describing the problem.
struct PlanKey {
  static constexpr int kMax = 24;
  const char* kind = "";
  int n = 0;
  int64_t v[kMax] = {};
  explicit PlanKey(const char* k) : kind(k) {}
  PlanKey& operator<<(int64_t x);  // Error past kMax values
  bool operator==(const PlanKey& o) const;
  std::string str() const;  // "kind v0,v1,..." for messages
};
struct PlanKeyHash {
  size_t operator()(const PlanKey& k) const;
};

// Plans (cuDNN descriptors, chosen algorithms, device tables, ...) keyed by a PlanKey built from
// the problem, or by a string for per-context singletons looked up rarely.
class PlanCache {
 public:
  template <class T>
  T& get_or_create(const PlanKey& key, const std::function<std::shared_ptr<T>()>& make) {
    auto it = plans_.find(key);
    if (it == plans_.end()) it = plans_.emplace(key, make()).first;
    return *static_cast<T*>(it->second.get());
  }
  template <class T>
  T& get_or_create(const std::string& key, const std::function<std::shared_ptr<T>()>& make) {
    auto it = named_.find(key);
    if (it == named_.end()) it = named_.emplace(key, make()).first;
    return *static_cast<T*>(it->second.get());
  }
  size_t size() const { return plans_.size() + named_.size(); }
  void clear() {
    plans_.clear();
    named_.clear();
  }

 private:
  std::unordered_map<PlanKey, std::shared_ptr<void>, PlanKeyHash> plans_;
  std::unordered_map<std::string, std::shared_ptr<void>> named_;
};

class Context {
 public:
  explicit Context(const ContextOptions& o = {});
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  const ContextOptions& options() const { return opt_; }
  Device device() const { return opt_.device; }
  int device_index() const { return opt_.device_index; }
  int threads() const { return threads_; }
  Precision precision() const { return opt_.precision; }

  Rng& rng() { return rng_; }
  ScratchArena& scratch() { return scratch_; }
  PlanCache& plans() { return plans_; }

  // CUDA objects as opaque pointers (cudaStream_t, cublasHandle_t, cudnnHandle_t).
  void* stream();
  void* cublas();
  void* cudnn();
  void synchronize();

  // Allocation and copies on this context's device and stream.
  Tensor empty(const Shape& s, DType t = DType::F32) const;
  Tensor zeros(const Shape& s, DType t = DType::F32) const;
  Tensor to_device(const Tensor& t);  // copy of t on this context's device
  Tensor to_host(const Tensor& t);    // copy on the host (waits for the stream)
  // t itself when it already lives on the host, else a host copy: for reading results without
  // copying (or allocating) on the CPU backend.
  Tensor host_view(const Tensor& t) { return t.is_cpu() ? t : to_host(t); }
  void copy(const Tensor& dst, const Tensor& src);  // same shape and dtype, any devices
  // Strided copy of `rows` rows of `cols` elements (same dtype, any devices; one 2-D copy on the
  // stream): row i of dst starts at element i * dst_stride of dst, row i of src at element
  // i * src_stride of src. Gathers one step out of [B, T, ...] and scatters into it.
  void copy_rows(const Tensor& dst, int64_t dst_stride, const Tensor& src, int64_t src_stride,
                 int64_t rows, int64_t cols);

 private:
  ContextOptions opt_;
  int threads_ = 1;
  Rng rng_;
  ScratchArena scratch_;
  PlanCache plans_;
  void* stream_ = nullptr;
  void* cublas_ = nullptr;
  void* cudnn_ = nullptr;
};

}  // namespace dynsim
