// Deterministic parallel sums for the CPU twins (reduce, losses, softplus parameter gradients):
// the n terms are cut into fixed blocks of kSumBlock, each block is summed in double, then the
// block sums are added in order. The result therefore does not depend on the thread count.
#pragma once
#include <cstdint>

#include "kernels/op_common.h"

namespace dynsim::cpu {

constexpr int64_t kSumBlock = 8192;

// Returns sum_{i < n} term(i) accumulated in double. Uses the context's scratch arena.
template <class F>
double blocked_sum(Context& c, int64_t n, F&& term) {
  auto block = [&](int64_t b) {
    const int64_t lo = b * kSumBlock, hi = lo + kSumBlock < n ? lo + kSumBlock : n;
    double s = 0;
    for (int64_t i = lo; i < hi; ++i) s += double(term(i));
    return s;
  };
  const int64_t nblocks = (n + kSumBlock - 1) / kSumBlock;
  if (nblocks <= 1) return n > 0 ? block(0) : 0.0;
  double* part = static_cast<double*>(c.scratch().get(size_t(nblocks) * sizeof(double)));
#pragma omp parallel for num_threads(c.threads()) schedule(static) if (nblocks >= 4)
  for (int64_t b = 0; b < nblocks; ++b) part[b] = block(b);
  double s = 0;
  for (int64_t b = 0; b < nblocks; ++b) s += part[b];
  return s;
}

// Runs f(i) for i < n, over the context's threads when n is large enough to pay for it.
template <class F>
void parallel_elements(const Context& c, int64_t n, F&& f) {
#pragma omp parallel for num_threads(c.threads()) schedule(static) if (n >= (1 << 15))
  for (int64_t i = 0; i < n; ++i) f(i);
}

}  // namespace dynsim::cpu
