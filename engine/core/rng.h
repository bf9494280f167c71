// Counter-based RNG (Philox4x32-10, Salmon et al. 2011) shared by CPU and CUDA code, so that a
// (seed, offset) pair gives the same stream on both. Element i of a draw uses counter
// (offset + i, attempt); uniforms are bit-identical everywhere. Normals use Marsaglia's polar
// method with a log built from correctly rounded +,-,*,/ only (no libm, no FMA contraction), so
// they are bit-identical on CPU and GPU too; portable_exp is built the same way.
#pragma once
#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define DYNSIM_HD __host__ __device__ __forceinline__
#else
#define DYNSIM_HD inline
#endif

namespace dynsim::rng {

struct U4 {
  uint32_t v[4];
};

DYNSIM_HD U4 philox4x32_10(U4 c, uint32_t k0, uint32_t k1) {
  for (int r = 0; r < 10; ++r) {
    uint64_t p0 = uint64_t(0xD2511F53u) * c.v[0];
    uint64_t p1 = uint64_t(0xCD9E8D57u) * c.v[2];
    U4 n;
    n.v[0] = uint32_t(p1 >> 32) ^ c.v[1] ^ k0;
    n.v[1] = uint32_t(p1);
    n.v[2] = uint32_t(p0 >> 32) ^ c.v[3] ^ k1;
    n.v[3] = uint32_t(p0);
    c = n;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return c;
}

// Four 32-bit words for counter (index, attempt) under a 64-bit seed.
DYNSIM_HD U4 bits(uint64_t seed, uint64_t index, uint32_t attempt) {
  U4 c{{uint32_t(index), uint32_t(index >> 32), attempt, 0u}};
  return philox4x32_10(c, uint32_t(seed), uint32_t(seed >> 32));
}

// Uniform in [0, 1) with 24 random bits (exact in float).
DYNSIM_HD float uniform_f32(uint32_t x) { return float(x >> 8) * (1.0f / 16777216.0f); }

// Correctly rounded double operations that the compiler may not fuse.
#if defined(__CUDA_ARCH__)
DYNSIM_HD double rn_mul(double a, double b) { return __dmul_rn(a, b); }
DYNSIM_HD double rn_add(double a, double b) { return __dadd_rn(a, b); }
DYNSIM_HD int64_t bits_of(double x) { return __double_as_longlong(x); }
DYNSIM_HD double from_bits(int64_t b) { return __longlong_as_double(b); }
#else
// The rounding step stays even under -ffp-contract=fast: the value passes through an empty asm
// the compiler cannot see through (no cost; GCC/Clang on x86-64 and AArch64), else a volatile.
DYNSIM_HD double rn_barrier(double r) {
#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
  __asm__("" : "+x"(r));
  return r;
#elif (defined(__GNUC__) || defined(__clang__)) && defined(__aarch64__)
  __asm__("" : "+w"(r));
  return r;
#else
  volatile double v = r;
  return v;
#endif
}
DYNSIM_HD double rn_mul(double a, double b) { return rn_barrier(a * b); }
DYNSIM_HD double rn_add(double a, double b) { return rn_barrier(a + b); }
DYNSIM_HD int64_t bits_of(double x) {
  int64_t b;
  __builtin_memcpy(&b, &x, 8);
  return b;
}
DYNSIM_HD double from_bits(int64_t b) {
  double x;
  __builtin_memcpy(&x, &b, 8);
  return x;
}
#endif

// Natural log of a positive, normal double, to 1 ulp, from basic operations only (the fdlibm
// scheme): x = 2^e (1 + f) with 1 + f in [sqrt(1/2), sqrt(2)), so f = m - 1 is exact; with
// s = f / (2 + f), log(1 + f) = 2 atanh(s) = f - hfsq + s (hfsq + R), hfsq = f^2 / 2,
// R = sum_{k>=1} 2 s^(2k) / (2k + 1). Adding the small corrections to the exact f (and ln 2
// split into a hi part with e * hi exact plus a lo part) keeps the error within 1 ulp
// even where e ln 2 and log(1 + f) nearly cancel (x just below sqrt(1/2)).
DYNSIM_HD double portable_log(double x) {
  int64_t b = bits_of(x);
  int e = int((b >> 52) & 0x7ff) - 1023;
  double m = from_bits((b & 0x000fffffffffffffLL) | 0x3ff0000000000000LL);
  if (m > 1.4142135623730951) {
    m = rn_mul(m, 0.5);
    e += 1;
  }
  const double f = m - 1.0;  // exact (Sterbenz)
  const double s = f / (2.0 + f);
  const double z = rn_mul(s, s);
  double poly = 2.0 / 25.0;  // Horner over 2/(2k+1), k = 12..1; |s| < 0.172 so s^26 < 1e-19
  for (int k = 11; k >= 1; --k) poly = rn_add(rn_mul(poly, z), 2.0 / double(2 * k + 1));
  const double R = rn_mul(z, poly);
  const double hfsq = rn_mul(rn_mul(0.5, f), f);
  const double de = double(e);
  const double ln2_hi = 6.93147180369123816490e-01;  // low 21 bits zero: e * ln2_hi is exact
  const double ln2_lo = 1.90821492927058770002e-10;
  const double t = rn_add(rn_mul(s, rn_add(hfsq, R)), rn_mul(de, ln2_lo));
  return rn_add(rn_mul(de, ln2_hi), rn_add(f, -rn_add(hfsq, -t)));
}

// e^x to within 0.7 ulp for normal results (about 1.3 % not correctly rounded), from basic
// operations only: x = k ln2 + r with k = round(x / ln2), k ln2_hi exact, r = hi - lo rounded
// once and its rounding error c kept; e^r = (1 + r) + (r^2 q(r) + c), q the Taylor series
// 1/2! + r/3! + ... + r^11/13! (remainder < 5e-18 for |r| <= ln2 / 2), 1 + r split exactly
// into s + e; then the exact scaling by 2^k (two steps where the result is subnormal, one
// rounding). NaN in, NaN out; +inf above 709.8, +0 below -745.2.
DYNSIM_HD double pow2_int(int k) { return from_bits(int64_t(k + 1023) << 52); }  // -1022..1023
DYNSIM_HD double portable_exp(double x) {
  if (!(x == x)) return x;
  if (x > 709.8) return from_bits(0x7ff0000000000000LL);
  if (x < -745.2) return 0.0;
  const double kd = floor(rn_add(rn_mul(x, 1.4426950408889634), 0.5));
  const double ln2_hi = 6.93147180369123816490e-01;  // as in portable_log
  const double ln2_lo = 1.90821492927058770002e-10;
  const double hi = rn_add(x, -rn_mul(kd, ln2_hi));  // exact (Sterbenz)
  const double lo = rn_mul(kd, ln2_lo);
  const double r = rn_add(hi, -lo);
  const double c = rn_add(rn_add(hi, -r), -lo);  // r + c = hi - lo to about 2^-105
  double q = 1.0 / 6227020800.0;                 // 1/13!
  q = rn_add(rn_mul(q, r), 1.0 / 479001600.0);
  q = rn_add(rn_mul(q, r), 1.0 / 39916800.0);
  q = rn_add(rn_mul(q, r), 1.0 / 3628800.0);
  q = rn_add(rn_mul(q, r), 1.0 / 362880.0);
  q = rn_add(rn_mul(q, r), 1.0 / 40320.0);
  q = rn_add(rn_mul(q, r), 1.0 / 5040.0);
  q = rn_add(rn_mul(q, r), 1.0 / 720.0);
  q = rn_add(rn_mul(q, r), 1.0 / 120.0);
  q = rn_add(rn_mul(q, r), 1.0 / 24.0);
  q = rn_add(rn_mul(q, r), 1.0 / 6.0);
  q = rn_add(rn_mul(q, r), 0.5);
  const double t = rn_mul(rn_mul(r, r), q);
  const double s = rn_add(1.0, r);
  const double e = rn_add(rn_add(1.0, -s), r);  // 1 + r = s + e exactly (|r| < 1)
  const double y = rn_add(s, rn_add(e, rn_add(t, c)));
  const int k = int(kd);
  if (k > 1023) return rn_mul(rn_mul(y, pow2_int(1023)), pow2_int(k - 1023));
  if (k < -1022) return rn_mul(rn_mul(y, pow2_int(k + 600)), pow2_int(-600));
  return rn_mul(y, pow2_int(k));
}

// Standard normal for element `index` of the stream `seed`.
DYNSIM_HD double normal(uint64_t seed, uint64_t index) {
  for (uint32_t attempt = 0;; ++attempt) {
    U4 r = bits(seed, index, attempt);
    for (int p = 0; p < 4; p += 2) {
      double u = rn_mul(double(int32_t(r.v[p])) + 0.5, 1.0 / 2147483648.0);
      double v = rn_mul(double(int32_t(r.v[p + 1])) + 0.5, 1.0 / 2147483648.0);
      double s = rn_add(rn_mul(u, u), rn_mul(v, v));
      if (s < 1.0 && s > 0.0) {
        double f = rn_mul(-2.0, portable_log(s)) / s;
        return rn_mul(u, sqrt(f));  // sqrt is correctly rounded on both sides
      }
    }
  }
}

// mean + std * z with z rounded to T first; the same rounding on every device.
template <class T>
DYNSIM_HD double affine_normal(uint64_t seed, uint64_t index, double mean, double std) {
  return rn_add(mean, rn_mul(std, double(T(normal(seed, index)))));
}

}  // namespace dynsim::rng

namespace dynsim {
// The context's stream: a seed and a running offset. Each draw reserves a block of indices.
class Rng {
 public:
  explicit Rng(uint64_t seed = 0) : seed_(seed) {}
  uint64_t seed() const { return seed_; }
  uint64_t offset() const { return offset_; }
  void set_state(uint64_t seed, uint64_t offset) {
    seed_ = seed;
    offset_ = offset;
  }
  // Reserves n indices and returns the first.
  uint64_t advance(uint64_t n) {
    uint64_t o = offset_;
    offset_ += n;
    return o;
  }

 private:
  uint64_t seed_ = 0;
  uint64_t offset_ = 0;
};
}  // namespace dynsim
