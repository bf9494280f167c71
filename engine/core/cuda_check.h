// Check helpers for CUDA runtime, cuDNN and cuBLAS calls: they throw dynsim::Error naming the
// statement, file and line. Included only by CUDA translation units (DYNSIM_WITH_CUDA builds).
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include "engine/core/errors.h"

namespace dynsim::detail {
[[noreturn]] inline void cuda_fail(const char* lib, const char* msg, const char* stmt,
                                   const char* file, int line) {
  throw ::dynsim::Error(::dynsim::concat(lib, " error '", msg, "' in `", stmt, "` at ", file, ":",
                                      line));
}
}  // namespace dynsim::detail

#define DYNSIM_CUDA_CHECK(stmt)                                                                \
  do {                                                                                         \
    cudaError_t e_ = (stmt);                                                                   \
    if (e_ != cudaSuccess)                                                                     \
      ::dynsim::detail::cuda_fail("CUDA", cudaGetErrorString(e_), #stmt, __FILE__, __LINE__);   \
  } while (0)
#define CUDNN_CHECK(stmt)                                                                      \
  do {                                                                                         \
    cudnnStatus_t e_ = (stmt);                                                                 \
    if (e_ != CUDNN_STATUS_SUCCESS)                                                            \
      ::dynsim::detail::cuda_fail("cuDNN", cudnnGetErrorString(e_), #stmt, __FILE__, __LINE__); \
  } while (0)
#define CUBLAS_CHECK(stmt)                                                                     \
  do {                                                                                         \
    cublasStatus_t e_ = (stmt);                                                                \
    if (e_ != CUBLAS_STATUS_SUCCESS)                                                           \
      ::dynsim::detail::cuda_fail("cuBLAS", cublasGetStatusString(e_), #stmt, __FILE__,        \
                                  __LINE__);                                                   \
  } while (0)
