// CUDA twin of the activity loss (kernels/activity.h), f32 and f64, scalar math from
// kernels/activity_math.h. One block per sample sums its n terms in double with block_sum's fixed
// strided order and tree (kernels/cuda_common.cuh): deterministic, no atomics, within rounding of
// the CPU's sequential sum. Both ops use the same kernel, so the signed seed's sign is the sign of
// the very sum activity_accumulate used. The absolute seed is elementwise: the CPU's bits.
#include "kernels/activity.h"
#include "kernels/activity_math.h"
#include "kernels/cuda_common.cuh"

namespace dynsim::cuda {

namespace {

// Block b: s = sum of the sample's terms; then acc[b] += |s| / n (acc given) or
// grad[b, :] += T(coef * sign(s) / n) (signed seed).
template <class T>
__global__ void activity_sample_kernel(const T* y, int64_t n, bool is_signed, double* acc,
                                       double coef, T* grad) {
  const int64_t b = blockIdx.x;
  const T* p = y + b * n;
  auto term = [=](int64_t i) { return math::activity_term(p[i], is_signed); };
  const double s = block_sum(0, n, term);
  if (acc) {
    if (threadIdx.x == 0) acc[b] += fabs(s) / double(n);
    return;
  }
  const T step = math::activity_seed_step<T>(coef, math::activity_sign(s), n);
  T* q = grad + b * n;
  for (int64_t i = threadIdx.x; i < n; i += kSumThreads) q[i] += step;
}

template <class T>
void per_sample(Context& c, const Tensor& y, int64_t n, bool is_signed, double* acc, double coef,
                T* grad) {
  const int64_t B = y.dim(0);
  if (B > int64_t(INT32_MAX)) throw NotImplemented(concat("activity: ", B, " samples"));
  activity_sample_kernel<T>
      <<<unsigned(B), kSumThreads, 0, stream_of(c)>>>(y.data<T>(), n, is_signed, acc, coef, grad);
  DYNSIM_CUDA_CHECK(cudaGetLastError());
}

template <class T>
void seed_t(Context& c, const Tensor& y, int64_t n, double coef, bool is_signed,
            const Tensor& grad_y) {
  T* g = grad_y.data<T>();
  if (is_signed) return per_sample<T>(c, y, n, true, nullptr, coef, g);
  const T* p = y.data<T>();
  launch(c, y.numel(), [=] __device__(int64_t i) {
    g[i] += math::activity_seed_step<T>(coef, math::activity_sign(double(p[i])), n);
  });
}

}  // namespace

void activity_accumulate(Context& c, const Tensor& y, bool is_signed, const Tensor& acc) {
  const char* op = "activity_accumulate";
  const bool f64 = is_f64(op, y);
  const int64_t n = check_activity_accumulate(op, y, acc);
  if (f64)
    per_sample<double>(c, y, n, is_signed, acc.data<double>(), 0.0, nullptr);
  else
    per_sample<float>(c, y, n, is_signed, acc.data<double>(), 0.0, nullptr);
}

void activity_seed(Context& c, const Tensor& y, double coef, bool is_signed, const Tensor& grad_y) {
  const char* op = "activity_seed";
  const bool f64 = is_f64(op, y);
  const int64_t n = check_activity_seed(op, y, grad_y);
  if (f64)
    seed_t<double>(c, y, n, coef, is_signed, grad_y);
  else
    seed_t<float>(c, y, n, coef, is_signed, grad_y);
}

}  // namespace dynsim::cuda
