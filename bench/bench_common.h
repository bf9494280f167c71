// Pieces shared by the benchmarks.
#pragma once
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <vector>

#include "engine/core/tensor.h"

namespace dynsim::bench {

// Deterministic f32 values in [-1, 1) from a cheap integer hash: identical in every process
// (forked children included) and cheap enough that setup never dominates a run.
inline Tensor values(const Shape& s, uint64_t seed) {
  Tensor t = Tensor::empty(s);
  float* p = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i) {
    uint64_t h = (uint64_t(i) + seed * 0x9E3779B97F4A7C15ull) * 0xBF58476D1CE4E5B9ull;
    h ^= h >> 31;
    p[i] = float(h >> 40) / float(1 << 23) - 1.f;
  }
  return t;
}

// Median wall milliseconds of `repeats` calls of f (host clock around each call).
template <class F>
double median_ms(int repeats, F&& f) {
  std::vector<double> t;
  for (int i = 0; i < repeats; ++i) {
    const auto a = std::chrono::steady_clock::now();
    f();
    t.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - a).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

}  // namespace dynsim::bench
