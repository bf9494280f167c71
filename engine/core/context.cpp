// Context: lazy CUDA objects, scratch arena, allocation and copies on the context's device.
#include "engine/core/context.h"

#include <omp.h>

#include <cstring>

#include "engine/core/device.h"

namespace dynsim {

PlanKey& PlanKey::operator<<(int64_t x) {
  if (n >= kMax) throw Error(concat("plan key '", kind, "': more than ", kMax, " values"));
  v[n++] = x;
  return *this;
}

bool PlanKey::operator==(const PlanKey& o) const {
  if (n != o.n || std::strcmp(kind, o.kind) != 0) return false;
  for (int i = 0; i < n; ++i)
    if (v[i] != o.v[i]) return false;
  return true;
}

std::string PlanKey::str() const {
  std::string s = kind;
  for (int i = 0; i < n; ++i) s += (i ? "," : " ") + std::to_string(v[i]);
  return s;
}

size_t PlanKeyHash::operator()(const PlanKey& k) const {
  uint64_t h = 1469598103934665603ull;  // FNV-1a over the kind's bytes, then the values
  for (const char* c = k.kind; *c; ++c) h = (h ^ uint8_t(*c)) * 1099511628211ull;
  for (int i = 0; i < k.n; ++i) h = (h ^ uint64_t(k.v[i])) * 1099511628211ull;
  return size_t(h);
}

const char* precision_name(Precision p) {
  switch (p) {
    case Precision::FP32: return "fp32";
    case Precision::TF32: return "tf32";
  }
  return "?";
}

void* ScratchArena::get(size_t bytes) {
  if (!buf_ || buf_->bytes < bytes) {
    buf_.reset();  // free first: the arena never holds two buffers
    buf_ = std::make_unique<Storage>(bytes + bytes / 4, device_, index_);
  }
  return buf_->data;
}

Context::Context(const ContextOptions& o)
    : opt_(o), rng_(o.seed), scratch_(o.device, o.device_index) {
  threads_ = o.threads > 0 ? o.threads : omp_get_num_procs();
  if (o.device == Device::Cuda) {
    int n = cuda_device_count();
    if (o.device_index < 0 || o.device_index >= n)
      throw Error(concat("cuda:", o.device_index, " requested but ", n, " CUDA device(s) found",
                      cuda_compiled() ? "" : " (this build has no CUDA backend)"));
  } else if (o.precision != Precision::FP32) {
    throw Error(concat("precision ", precision_name(o.precision), " needs a CUDA device"));
  }
}

Context::~Context() {
  if (cudnn_) cudnn_handle_destroy(cudnn_);
  if (cublas_) cublas_handle_destroy(cublas_);
  if (stream_) cuda_stream_destroy(stream_);
}

void* Context::stream() {
  if (opt_.device != Device::Cuda) return nullptr;
  if (!stream_) stream_ = cuda_stream_create(opt_.device_index);
  return stream_;
}
void* Context::cublas() {
  if (!cublas_) cublas_ = cublas_handle_create(stream(), opt_.precision != Precision::FP32);
  return cublas_;
}
void* Context::cudnn() {
  if (!cudnn_) cudnn_ = cudnn_handle_create(stream());
  return cudnn_;
}
void Context::synchronize() {
  if (stream_) cuda_stream_sync(stream_);
}

Tensor Context::empty(const Shape& s, DType t) const {
  return Tensor::empty(s, t, opt_.device, opt_.device_index);
}
Tensor Context::zeros(const Shape& s, DType t) const {
  return Tensor::zeros(s, t, opt_.device, opt_.device_index);
}
void Context::copy(const Tensor& dst, const Tensor& src) {
  if (dst.shape() != src.shape() || dst.dtype() != src.dtype())
    throw Error(concat("copy from ", src.str(), " into ", dst.str(), ": shapes or dtypes differ"));
  bool to_cuda = dst.device() == Device::Cuda, from_cuda = src.device() == Device::Cuda;
  device_memcpy(dst.raw(), to_cuda, src.raw(), from_cuda, src.nbytes(),
                (to_cuda || from_cuda) ? stream() : nullptr);
}
void Context::copy_rows(const Tensor& dst, int64_t dst_stride, const Tensor& src,
                        int64_t src_stride, int64_t rows, int64_t cols) {
  if (dst.dtype() != src.dtype())
    throw Error(concat("copy_rows from ", src.str(), " into ", dst.str(), ": dtypes differ"));
  if (rows <= 0 || cols <= 0) return;
  // The last row must end inside each tensor (rows never overlap their own stride).
  auto fits = [&](const Tensor& t, int64_t stride) {
    return stride >= cols && (rows - 1) * stride + cols <= t.numel();
  };
  if (!fits(dst, dst_stride) || !fits(src, src_stride))
    throw Error(concat("copy_rows: ", rows, " rows of ", cols, " elements (strides ", dst_stride,
                       ", ", src_stride, ") do not fit ", dst.str(), " / ", src.str()));
  const size_t es = dtype_size(src.dtype());
  const bool to_cuda = dst.device() == Device::Cuda, from_cuda = src.device() == Device::Cuda;
  device_memcpy_rows(dst.raw(), size_t(dst_stride) * es, to_cuda, src.raw(),
                     size_t(src_stride) * es, from_cuda, size_t(cols) * es, size_t(rows),
                     (to_cuda || from_cuda) ? stream() : nullptr);
}
Tensor Context::to_device(const Tensor& t) {
  Tensor r = empty(t.shape(), t.dtype());
  copy(r, t);
  return r;
}
Tensor Context::to_host(const Tensor& t) {
  Tensor r = Tensor::empty(t.shape(), t.dtype());
  copy(r, t);
  return r;
}

}  // namespace dynsim
