// Shared pieces of the CUDA twins (included by kernels/*.cu only): dtype selection for CUDA
// tensors, a grid-stride launch of a device lambda on the context's stream, the gradient write,
// and a deterministic segmented sum. The sum cuts each segment into parts whose size depends
// only on the segment length (never on the device), sums each part in double with a fixed
// strided order and a fixed shared-memory tree, then reduces the parts the same way: no float
// atomics, so the same inputs give the same bits on every run and every GPU.
#pragma once
#include <algorithm>
#include <cstdint>

#include "engine/core/cuda_check.h"
#include "kernels/op_common.h"

namespace dynsim::cuda {

// True for f64, false for f32; throws DataError naming the op for anything else (a host tensor,
// an integer tensor, an undefined one).
inline bool is_f64(const char* op, const Tensor& t) {
  if (!t.defined()) throw DataError(concat(op, ": input is undefined"));
  if (t.device() != Device::Cuda) throw DataError(concat(op, ": CUDA op got ", t.str()));
  if (t.dtype() == DType::F32) return false;
  if (t.dtype() == DType::F64) return true;
  throw DataError(concat(op, ": needs f32 or f64, got ", t.str()));
}

inline cudaStream_t stream_of(Context& c) {
  return static_cast<cudaStream_t>(c.stream());
}

template <class T>
__device__ __forceinline__ void put_grad(T& dst, T v, bool accumulate) {
  dst = accumulate ? dst + v : v;
}

template <class F>
__global__ void map_kernel(int64_t n, F f) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    f(i);
}

// Runs f(i) for i in [0, n) on the context's stream.
template <class F>
void launch(Context& c, int64_t n, F f) {
  if (n <= 0) return;
  const unsigned grid = unsigned(std::min<int64_t>((n + 255) / 256, 65535));
  map_kernel<<<grid, 256, 0, stream_of(c)>>>(n, f);
  DYNSIM_CUDA_CHECK(cudaGetLastError());
}

constexpr int kSumThreads = 256;
constexpr int64_t kSumPart = 1 << 14;  // terms per part (the last one may hold fewer)
constexpr int64_t kSumMaxParts = 1024;

// Sum of term(i) for i in [lo, hi) over the block: strided partial sums, then a fixed tree.
// Every thread returns the total. Call at most once per kernel (one shared buffer).
template <class Term>
__device__ double block_sum(int64_t lo, int64_t hi, Term& term) {
  __shared__ double part[kSumThreads];
  double s = 0;
  for (int64_t i = lo + threadIdx.x; i < hi; i += kSumThreads) s += double(term(i));
  part[threadIdx.x] = s;
  __syncthreads();
  for (int w = kSumThreads / 2; w > 0; w >>= 1) {
    if (int(threadIdx.x) < w) part[threadIdx.x] += part[threadIdx.x + w];
    __syncthreads();
  }
  return part[0];
}

template <class Term, class Finish>
__global__ void segment_parts_kernel(int64_t len, int64_t parts, int64_t chunk, double* out,
                                     Term term, Finish finish) {
  const int64_t s = blockIdx.x / parts, p = blockIdx.x % parts;
  const int64_t lo = s * len + p * chunk, hi = std::min(lo + chunk, (s + 1) * len);
  const double v = block_sum(lo, hi, term);
  if (threadIdx.x == 0) {
    if (parts == 1)
      finish(s, v);
    else
      out[blockIdx.x] = v;
  }
}

template <class Finish>
__global__ void segment_total_kernel(int64_t parts, const double* in, Finish finish) {
  const int64_t s = blockIdx.x;
  auto term = [=](int64_t i) { return in[s * parts + i]; };
  const double v = block_sum(0, parts, term);
  if (threadIdx.x == 0) finish(s, v);
}

// For each of `segments` consecutive runs of `len` indices, calls finish(s, sum) on the device
// with sum = sum of term(i) (as double) over the run; term may also write per-element outputs
// (each index is visited once). Uses the context's scratch arena for the parts.
template <class Term, class Finish>
void segmented_sum(Context& c, int64_t segments, int64_t len, Term term, Finish finish) {
  if (segments <= 0) return;
  const int64_t parts = std::clamp<int64_t>((len + kSumPart - 1) / kSumPart, 1, kSumMaxParts);
  const int64_t chunk = (len + parts - 1) / parts;
  if (segments * parts > int64_t(INT32_MAX))
    throw NotImplemented(concat("segmented_sum: ", segments, " x ", parts, " blocks"));
  double* buf = nullptr;
  if (parts > 1)
    buf = static_cast<double*>(c.scratch().get(size_t(segments * parts) * sizeof(double)));
  segment_parts_kernel<<<unsigned(segments * parts), kSumThreads, 0, stream_of(c)>>>(
      len, parts, chunk, buf, term, finish);
  DYNSIM_CUDA_CHECK(cudaGetLastError());
  if (parts > 1) {
    segment_total_kernel<<<unsigned(segments), kSumThreads, 0, stream_of(c)>>>(parts, buf, finish);
    DYNSIM_CUDA_CHECK(cudaGetLastError());
  }
}

}  // namespace dynsim::cuda
