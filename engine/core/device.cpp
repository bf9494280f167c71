// Device memory, copies and device discovery. The one engine file that switches on the CUDA
// build; kernels switch in kernels/dispatch.h only.
#include "engine/core/device.h"

#include <atomic>
#include <cstring>

#include "engine/core/errors.h"
#if DYNSIM_WITH_CUDA
#include "engine/core/cuda_check.h"
#endif

namespace dynsim {
namespace {

// The allocation counts behind device_memory(), per device index (indices past the table are
// not counted).
constexpr int kCountedDevices = 16;
struct Counter {
  std::atomic<size_t> in_use{0}, peak{0};
};
Counter& counter(int index) {
  static Counter counters[kCountedDevices];
  return counters[index];
}
bool counted(int index) { return index >= 0 && index < kCountedDevices; }
[[maybe_unused]] void count_alloc(int index, size_t bytes) {
  if (!counted(index)) return;
  Counter& c = counter(index);
  const size_t now = c.in_use.fetch_add(bytes) + bytes;
  size_t p = c.peak.load();
  while (now > p && !c.peak.compare_exchange_weak(p, now)) {
  }
}
[[maybe_unused]] void count_free(int index, size_t bytes) {
  if (counted(index)) counter(index).in_use.fetch_sub(bytes);
}

}  // namespace

DeviceMemory device_memory(int index) {
  if (!counted(index)) return {};
  return {counter(index).in_use.load(), counter(index).peak.load()};
}
void reset_device_memory_peak(int index) {
  if (counted(index)) counter(index).peak.store(counter(index).in_use.load());
}

#if DYNSIM_WITH_CUDA
bool cuda_compiled() { return true; }
int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error
    return 0;
  }
  return n;
}
std::vector<GpuInfo> cuda_devices() {
  std::vector<GpuInfo> out;
  for (int i = 0; i < cuda_device_count(); ++i) {
    cudaDeviceProp p{};
    DYNSIM_CUDA_CHECK(cudaGetDeviceProperties(&p, i));
    out.push_back({i, p.name, p.major, p.minor, p.totalGlobalMem});
  }
  return out;
}
std::string cuda_versions() {
  int rt = 0, drv = 0;
  cudaRuntimeGetVersion(&rt);
  cudaDriverGetVersion(&drv);
  size_t dnn = cudnnGetVersion();
  int blas = 0;
  cublasGetProperty(MAJOR_VERSION, &blas);
  int blas_minor = 0;
  cublasGetProperty(MINOR_VERSION, &blas_minor);
  return concat("CUDA runtime ", rt / 1000, ".", (rt % 1000) / 10, ", driver ",
             drv ? concat(drv / 1000, ".", (drv % 1000) / 10) : std::string("none"), ", cuDNN ",
             dnn / 10000, ".", (dnn % 10000) / 100, ".", dnn % 100, ", cuBLAS ", blas, ".",
             blas_minor);
}
void* device_malloc(size_t bytes, int index) {
  const int n = cuda_device_count();
  if (index < 0 || index >= n)
    throw Error(concat("cannot allocate ", bytes, " bytes on cuda:", index, ": ", n,
                       " CUDA device(s) found"));
  int prev = 0;
  DYNSIM_CUDA_CHECK(cudaGetDevice(&prev));
  DYNSIM_CUDA_CHECK(cudaSetDevice(index));
  void* p = nullptr;
  cudaError_t e = cudaMalloc(&p, bytes);
  cudaSetDevice(prev);
  if (e != cudaSuccess)
    throw Error(concat("cudaMalloc of ", bytes, " bytes on cuda:", index, " failed: ",
                    cudaGetErrorString(e)));
  count_alloc(index, bytes);
  return p;
}
void device_free(void* p, size_t bytes, int index) noexcept {
  cudaFree(p);
  count_free(index, bytes);
}
void device_memcpy(void* dst, bool dst_cuda, const void* src, bool src_cuda, size_t bytes,
                   void* stream) {
  if (!dst_cuda && !src_cuda) {
    std::memcpy(dst, src, bytes);
    return;
  }
  auto s = static_cast<cudaStream_t>(stream);
  DYNSIM_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, s));
  if (!dst_cuda || s == nullptr) DYNSIM_CUDA_CHECK(cudaStreamSynchronize(s));
}
void device_memcpy_rows(void* dst, size_t dst_pitch, bool dst_cuda, const void* src,
                        size_t src_pitch, bool src_cuda, size_t width, size_t rows, void* stream) {
  if (rows == 0 || width == 0) return;
  if (!dst_cuda && !src_cuda) {
    for (size_t i = 0; i < rows; ++i)
      std::memcpy(static_cast<char*>(dst) + i * dst_pitch,
                  static_cast<const char*>(src) + i * src_pitch, width);
    return;
  }
  auto s = static_cast<cudaStream_t>(stream);
  constexpr size_t kMaxPitch = (size_t(1) << 31) - 1;  // cudaMemcpy2D's pitch limit
  if (dst_pitch <= kMaxPitch && src_pitch <= kMaxPitch) {
    DYNSIM_CUDA_CHECK(
        cudaMemcpy2DAsync(dst, dst_pitch, src, src_pitch, width, rows, cudaMemcpyDefault, s));
  } else {
    for (size_t i = 0; i < rows; ++i)
      DYNSIM_CUDA_CHECK(cudaMemcpyAsync(static_cast<char*>(dst) + i * dst_pitch,
                                        static_cast<const char*>(src) + i * src_pitch, width,
                                        cudaMemcpyDefault, s));
  }
  if (!dst_cuda || s == nullptr) DYNSIM_CUDA_CHECK(cudaStreamSynchronize(s));
}
void device_memory_info(int index, size_t* free_bytes, size_t* total_bytes) {
  *free_bytes = *total_bytes = 0;
  if (index < 0 || index >= cuda_device_count()) return;
  int prev = 0;
  DYNSIM_CUDA_CHECK(cudaGetDevice(&prev));
  DYNSIM_CUDA_CHECK(cudaSetDevice(index));
  const cudaError_t e = cudaMemGetInfo(free_bytes, total_bytes);
  cudaSetDevice(prev);
  DYNSIM_CUDA_CHECK(e);
}
void* cuda_stream_create(int index) {
  DYNSIM_CUDA_CHECK(cudaSetDevice(index));
  cudaStream_t s = nullptr;
  DYNSIM_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  return s;
}
void cuda_stream_destroy(void* s) noexcept { cudaStreamDestroy(static_cast<cudaStream_t>(s)); }
void cuda_stream_sync(void* s) { DYNSIM_CUDA_CHECK(cudaStreamSynchronize(static_cast<cudaStream_t>(s))); }
void* cublas_handle_create(void* stream, bool allow_tf32) {
  cublasHandle_t h = nullptr;
  CUBLAS_CHECK(cublasCreate(&h));
  CUBLAS_CHECK(cublasSetStream(h, static_cast<cudaStream_t>(stream)));
  CUBLAS_CHECK(cublasSetMathMode(h, allow_tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_PEDANTIC_MATH));
  return h;
}
void cublas_handle_destroy(void* h) noexcept { cublasDestroy(static_cast<cublasHandle_t>(h)); }
void* cudnn_handle_create(void* stream) {
  cudnnHandle_t h = nullptr;
  CUDNN_CHECK(cudnnCreate(&h));
  CUDNN_CHECK(cudnnSetStream(h, static_cast<cudaStream_t>(stream)));
  return h;
}
void cudnn_handle_destroy(void* h) noexcept { cudnnDestroy(static_cast<cudnnHandle_t>(h)); }
#else
static const char* kNoCuda = "this dynsim was built without CUDA (rebuild with nvcc present)";
bool cuda_compiled() { return false; }
int cuda_device_count() { return 0; }
std::vector<GpuInfo> cuda_devices() { return {}; }
std::string cuda_versions() { return "not compiled"; }
void* device_malloc(size_t, int) { throw NotImplemented(kNoCuda); }
void device_free(void*, size_t, int) noexcept {}
void device_memcpy(void* dst, bool dst_cuda, const void* src, bool src_cuda, size_t bytes,
                   void*) {
  if (dst_cuda || src_cuda) throw NotImplemented(kNoCuda);
  std::memcpy(dst, src, bytes);
}
void device_memcpy_rows(void* dst, size_t dst_pitch, bool dst_cuda, const void* src,
                        size_t src_pitch, bool src_cuda, size_t width, size_t rows, void*) {
  if (dst_cuda || src_cuda) throw NotImplemented(kNoCuda);
  for (size_t i = 0; i < rows; ++i)
    std::memcpy(static_cast<char*>(dst) + i * dst_pitch,
                static_cast<const char*>(src) + i * src_pitch, width);
}
void device_memory_info(int, size_t* free_bytes, size_t* total_bytes) {
  *free_bytes = *total_bytes = 0;
}
void* cuda_stream_create(int) { throw NotImplemented(kNoCuda); }
void cuda_stream_destroy(void*) noexcept {}
void cuda_stream_sync(void*) {}
void* cublas_handle_create(void*, bool) { throw NotImplemented(kNoCuda); }
void cublas_handle_destroy(void*) noexcept {}
void* cudnn_handle_create(void*) { throw NotImplemented(kNoCuda); }
void cudnn_handle_destroy(void*) noexcept {}
#endif

}  // namespace dynsim
