// The CPU conv2d's f32 GEMM for AVX2/FMA (Goto-style packing, 6x16 micro-kernel), chosen at run
// time; declared in conv2d_cpu_detail.h, called from conv2d_cpu.cpp's gemm (Eigen otherwise).
// Siblings: conv2d_cpu.cpp, conv2d_depthwise_cpu.cpp.
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

#include <algorithm>

#include "kernels/conv2d_cpu_detail.h"

namespace dynsim::cpu::conv2d_detail {

namespace avx2 {
constexpr int64_t MR = 6, NR = 16;  // micro-tile: 12 ymm accumulators
constexpr int64_t KC = 256;         // depth block: a 6 x KC A-panel and KC x 16 B-panel fit L1
constexpr int64_t MC = 120;         // A block (MC x KC) stays in L2
constexpr int64_t NC = 2048;        // B block (KC x NC) stays in L2/L3

bool available() {
#ifdef DYNSIM_CONV_AVX2
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok;
#else
  return false;
#endif
}
namespace {
int64_t round_up(int64_t a, int64_t b) {
  return (a + b - 1) / b * b;
}
}  // namespace
size_t a_elems(int64_t M, int64_t K) {
  return size_t(round_up(std::min(M, MC), MR) * std::min(K, KC));
}
size_t b_elems(int64_t N, int64_t K) {
  return size_t(round_up(std::min(N, NC), NR) * std::min(K, KC));
}

#ifdef DYNSIM_CONV_AVX2
namespace {

// A (mc x kc, element (i, k) at a[i*rs + k*cs]) into MR-row panels, k-major, zero-padded.
// Reads run along memory: along k for row-major A, along i for transposed A (dgrad's w^T).
void pack_a(const float* a, int64_t rs, int64_t cs, int64_t mc, int64_t kc, float* dst) {
  for (int64_t i0 = 0; i0 < mc; i0 += MR, dst += MR * kc) {
    const int64_t mr = std::min(MR, mc - i0);
    if (rs == 1 && mr == MR) {
      for (int64_t k = 0; k < kc; ++k)
        for (int64_t i = 0; i < MR; ++i) dst[k * MR + i] = a[k * cs + i0 + i];
      continue;
    }
    for (int64_t i = 0; i < MR; ++i) {
      const float* src = a + (i0 + i) * rs;
      if (i >= mr) {
        for (int64_t k = 0; k < kc; ++k) dst[k * MR + i] = 0.f;
      } else {
        for (int64_t k = 0; k < kc; ++k) dst[k * MR + i] = src[k * cs];
      }
    }
  }
}

// 8x8 transpose: rows r[0..7] (8 floats each) become columns.
__attribute__((target("avx2,fma"))) inline void transpose8(__m256 r[8]) {
  __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  r[0] = _mm256_permute2f128_ps(u0, u4, 0x20), r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
  r[2] = _mm256_permute2f128_ps(u2, u6, 0x20), r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
  r[4] = _mm256_permute2f128_ps(u0, u4, 0x31), r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
  r[6] = _mm256_permute2f128_ps(u2, u6, 0x31), r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

// B (kc x nc, element (k, j) at b[k*rs + j*cs]) into NR-column panels, k-major, zero-padded.
// Row-major B copies 16-float rows; transposed B (rs == 1, wgrad's cols^T) goes through 8x8
// register transposes.
__attribute__((target("avx2,fma"))) void pack_b(const float* b, int64_t rs, int64_t cs, int64_t kc,
                                                int64_t nc, float* dst) {
  for (int64_t j0 = 0; j0 < nc; j0 += NR, dst += NR * kc) {
    const int64_t nr = std::min(NR, nc - j0);
    int64_t k_done = 0;
    if (cs == 1 && nr == NR) {
      for (int64_t k = 0; k < kc; ++k) {
        const float* src = b + k * rs + j0;
        _mm256_storeu_ps(dst + k * NR, _mm256_loadu_ps(src));
        _mm256_storeu_ps(dst + k * NR + 8, _mm256_loadu_ps(src + 8));
      }
      k_done = kc;
    } else if (rs == 1 && nr == NR) {
      for (; k_done + 8 <= kc; k_done += 8)
        for (int64_t h = 0; h < 2; ++h) {
          __m256 r[8];
          for (int64_t j = 0; j < 8; ++j)
            r[j] = _mm256_loadu_ps(b + (j0 + h * 8 + j) * cs + k_done);
          transpose8(r);
          for (int64_t k = 0; k < 8; ++k) _mm256_storeu_ps(dst + (k_done + k) * NR + h * 8, r[k]);
        }
    }
    for (int64_t j = 0; j < NR; ++j) {
      const float* src = b + (j0 + j) * cs;
      if (j >= nr) {
        for (int64_t k = k_done; k < kc; ++k) dst[k * NR + j] = 0.f;
      } else {
        for (int64_t k = k_done; k < kc; ++k) dst[k * NR + j] = src[k * rs];
      }
    }
  }
}

// C (6 x 16 tile, row stride ldc) (+)= packed A panel * packed B panel over depth kc.
__attribute__((target("avx2,fma"))) void kernel_6x16(int64_t kc, const float* a, const float* b,
                                                     float* c, int64_t ldc, bool add) {
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
  __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
  for (int64_t k = 0; k < kc; ++k, a += MR, b += NR) {
    const __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
    __m256 ai = _mm256_broadcast_ss(a + 0);
    c00 = _mm256_fmadd_ps(ai, b0, c00), c01 = _mm256_fmadd_ps(ai, b1, c01);
    ai = _mm256_broadcast_ss(a + 1);
    c10 = _mm256_fmadd_ps(ai, b0, c10), c11 = _mm256_fmadd_ps(ai, b1, c11);
    ai = _mm256_broadcast_ss(a + 2);
    c20 = _mm256_fmadd_ps(ai, b0, c20), c21 = _mm256_fmadd_ps(ai, b1, c21);
    ai = _mm256_broadcast_ss(a + 3);
    c30 = _mm256_fmadd_ps(ai, b0, c30), c31 = _mm256_fmadd_ps(ai, b1, c31);
    ai = _mm256_broadcast_ss(a + 4);
    c40 = _mm256_fmadd_ps(ai, b0, c40), c41 = _mm256_fmadd_ps(ai, b1, c41);
    ai = _mm256_broadcast_ss(a + 5);
    c50 = _mm256_fmadd_ps(ai, b0, c50), c51 = _mm256_fmadd_ps(ai, b1, c51);
  }
  const __m256 acc[MR][2] = {{c00, c01}, {c10, c11}, {c20, c21},
                             {c30, c31}, {c40, c41}, {c50, c51}};
  for (int64_t i = 0; i < MR; ++i) {
    float* ci = c + i * ldc;
    _mm256_storeu_ps(ci, add ? _mm256_add_ps(_mm256_loadu_ps(ci), acc[i][0]) : acc[i][0]);
    _mm256_storeu_ps(ci + 8, add ? _mm256_add_ps(_mm256_loadu_ps(ci + 8), acc[i][1]) : acc[i][1]);
  }
}

}  // namespace

// C (M x N, row stride ldc) (+)= A * B with A (i, k) at a[i*a_rs + k*a_cs] and B (k, j) at
// b[k*b_rs + j*b_cs]; pa and pb hold a_elems(M, K) and b_elems(N, K) floats.
void gemm(int64_t M, int64_t N, int64_t K, const float* a, int64_t a_rs, int64_t a_cs,
          const float* b, int64_t b_rs, int64_t b_cs, float* c, int64_t ldc, float* pa, float* pb,
          bool overwrite) {
  for (int64_t jc = 0; jc < N; jc += NC) {
    const int64_t nc = std::min(NC, N - jc);
    for (int64_t pc = 0; pc < K; pc += KC) {
      const int64_t kc = std::min(KC, K - pc);
      const bool add = pc > 0 || !overwrite;  // the first depth block overwrites if asked
      pack_b(b + pc * b_rs + jc * b_cs, b_rs, b_cs, kc, nc, pb);
      for (int64_t ic = 0; ic < M; ic += MC) {
        const int64_t mc = std::min(MC, M - ic);
        pack_a(a + ic * a_rs + pc * a_cs, a_rs, a_cs, mc, kc, pa);
        for (int64_t jr = 0; jr < nc; jr += NR)
          for (int64_t ir = 0; ir < mc; ir += MR) {
            float* ct = c + (ic + ir) * ldc + jc + jr;
            const int64_t mr = std::min(MR, mc - ir), nr = std::min(NR, nc - jr);
            if (mr == MR && nr == NR) {
              kernel_6x16(kc, pa + ir * kc, pb + jr * kc, ct, ldc, add);
            } else {  // edge tile: through a zeroed buffer
              alignas(32) float tile[MR * NR] = {};
              kernel_6x16(kc, pa + ir * kc, pb + jr * kc, tile, NR, false);
              for (int64_t i = 0; i < mr; ++i)
                for (int64_t j = 0; j < nr; ++j)
                  ct[i * ldc + j] = add ? ct[i * ldc + j] + tile[i * NR + j] : tile[i * NR + j];
            }
          }
      }
    }
  }
}
#endif
}  // namespace avx2

}  // namespace dynsim::cpu::conv2d_detail
