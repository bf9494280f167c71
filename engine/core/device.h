// Device memory and devices found at run time. Without the CUDA backend every function that
// would touch a GPU throws NotImplemented and cuda_device_count() is 0.
#pragma once
#include <cstddef>
#include <string>
#include <vector>

namespace dynsim {

struct GpuInfo {
  int index = 0;
  std::string name;
  int sm_major = 0, sm_minor = 0;
  size_t memory_bytes = 0;
};

bool cuda_compiled();
int cuda_device_count();  // 0 when not compiled, no driver or no device
std::vector<GpuInfo> cuda_devices();
std::string cuda_versions();  // "CUDA runtime 13.0, driver 13.0, cuDNN 9.19.0, cuBLAS 13.0.0"

void* device_malloc(size_t bytes, int device_index);
void device_free(void* p, size_t bytes, int device_index) noexcept;
// Copies between host and device memory (either side may be host). stream: a cudaStream_t or
// nullptr. A copy into host memory synchronises the stream before returning.
void device_memcpy(void* dst, bool dst_cuda, const void* src, bool src_cuda, size_t bytes,
                   void* stream);
// `rows` rows of `width` bytes: row i goes from src + i * src_pitch to dst + i * dst_pitch (one
// cudaMemcpy2DAsync when a side is on the device; same synchronisation as device_memcpy).
void device_memcpy_rows(void* dst, size_t dst_pitch, bool dst_cuda, const void* src,
                        size_t src_pitch, bool src_cuda, size_t width, size_t rows, void* stream);

// Bytes held in device_malloc allocations on one device (now, and the most since the process
// started or the last reset): the engine's tensors and scratch arenas, without the CUDA context
// or the libraries' internal memory. A process-wide count, like the allocator it counts.
struct DeviceMemory {
  size_t in_use = 0, peak = 0;
};
DeviceMemory device_memory(int device_index);
void reset_device_memory_peak(int device_index);
// cudaMemGetInfo: free and total bytes of the device (all processes); {0, 0} without CUDA.
void device_memory_info(int device_index, size_t* free_bytes, size_t* total_bytes);

}  // namespace dynsim

namespace dynsim {
// Library objects behind Context's opaque pointers (only with the CUDA backend).
void* cuda_stream_create(int device_index);
void cuda_stream_destroy(void* stream) noexcept;
void cuda_stream_sync(void* stream);
void* cublas_handle_create(void* stream, bool allow_tf32);
void cublas_handle_destroy(void* handle) noexcept;
void* cudnn_handle_create(void* stream);
void cudnn_handle_destroy(void* handle) noexcept;
}  // namespace dynsim
