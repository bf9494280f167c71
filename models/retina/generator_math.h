// Math shared by the retina generator's CPU code and its CUDA twin (generator_cuda.cu): every
// random draw (checkerboard bits, white-noise normals, Poisson and Bernoulli counts) and every
// step of the noise-free rate (subunit drive, causal filter, nonlinearity, output), built from
// correctly rounded operations only (engine/core/rng.h: rn_add / rn_mul, portable_log /
// portable_exp, division, sqrt), so a (seed, index) pair and a cell give the same bits on
// both devices. The operation order here is the definition; both sides call these functions.
#pragma once
#include <cstdint>
#include <vector>

#include "engine/core/rng.h"

namespace dynsim::retina::math {
using rng::rn_add;
using rng::rn_mul;

// ---- uniforms and stimulus draws ----------------------------------------------------------
// Uniforms in (0, 1) from 32 and 53 random bits.
DYNSIM_HD double unit_u32(uint32_t v) {
  return rn_mul(double(v) + 0.5, 1.0 / 4294967296.0);
}
DYNSIM_HD double unit_u53(uint32_t a, uint32_t b) {
  return rn_mul(double((uint64_t(a) << 21) | (b >> 11)) + 0.5, 1.0 / 9007199254740992.0);
}

// Checkerboard pixels [128 blk, 128 blk + m) of frame `frame` (m <= 128): one Philox call,
// bit q of the 128 is pixel q's sign.
DYNSIM_HD void checker_block(uint64_t seed, uint64_t frame, uint32_t blk, int64_t m, float c,
                             float* f) {
  const rng::U4 r = rng::bits(seed, frame, blk);
  for (int64_t q = 0; q < m; ++q) f[q] = ((r.v[q >> 5] >> (q & 31)) & 1u) ? c : -c;
}

// Two standard normals for pair `index` (Marsaglia's polar method, as rng::normal: z[0] is
// rng::normal(seed, index), z[1] the partner it discards).
DYNSIM_HD void normal_pair(uint64_t seed, uint64_t index, double* z) {
  for (uint32_t attempt = 0;; ++attempt) {
    const rng::U4 r = rng::bits(seed, index, attempt);
    for (int p = 0; p < 4; p += 2) {
      const double u = rn_mul(double(int32_t(r.v[p])) + 0.5, 1.0 / 2147483648.0);
      const double v = rn_mul(double(int32_t(r.v[p + 1])) + 0.5, 1.0 / 2147483648.0);
      const double q = rn_add(rn_mul(u, u), rn_mul(v, v));
      if (q < 1.0 && q > 0.0) {
        const double f = sqrt(rn_mul(-2.0, rng::portable_log(q)) / q);
        z[0] = rn_mul(u, f);
        z[1] = rn_mul(v, f);
        return;
      }
    }
  }
}

// ---- spikes -------------------------------------------------------------------------------
// Poisson count with mean lam for frame t: inversion of one 53-bit uniform (the smallest k with
// F(k) >= u); beyond lam = 500 a rounded normal approximation.
DYNSIM_HD int32_t poisson_count(double lam, uint64_t stream, uint64_t t) {
  if (!(lam > 0)) return 0;
  if (lam > 500) {
    const double k = round(rn_add(lam, rn_mul(sqrt(lam), rng::normal(stream, t))));
    return int32_t(k < 0 ? 0.0 : (k > 2e9 ? 2e9 : k));
  }
  const rng::U4 r = rng::bits(stream, t, 0);
  const double u = unit_u53(r.v[0], r.v[1]);
  double p = rng::portable_exp(-lam), F = p;
  int32_t k = 0;
  const double kmax = rn_add(rn_add(lam, 50.0), rn_mul(20.0, sqrt(lam)));
  while (u > F && k < kmax) {
    ++k;
    p = rn_mul(p, lam / double(k));
    F = rn_add(F, p);
  }
  return k;
}

// #{i < draws : u_i < p}, four uniforms per Philox call (the authors' rand < r dt).
DYNSIM_HD int32_t bernoulli_count(double p, int draws, uint64_t stream, uint64_t t) {
  int32_t k = 0;
  for (int i = 0; i < draws; i += 4) {
    const rng::U4 u = rng::bits(stream, t, uint32_t(i / 4));
    for (int q = 0; q < 4 && i + q < draws; ++q) k += unit_u32(u.v[q]) < p;
  }
  return k;
}

// ---- subunit nonlinearities ---------------------------------------------------------------
// The kinds in NlKind's order (generator.h); power 0 means the kind's default.
enum : int { kRelu, kThresholdQuadratic, kSublinear, kSuperlinear, kSoftplus, kNl2, kNl3 };
struct NlParams {
  int kind = kRelu;
  double threshold = 0, scale = 1, power = 0, beta = 1;
};

// log(1 + e) for finite e >= 0 (Goldberg's form e log(u) / (u - 1), u = 1 + e, exact u - 1).
DYNSIM_HD double portable_log1p(double e) {
  const double u = rn_add(1.0, e);
  if (u == 1.0) return e;
  return rn_mul(e, rng::portable_log(u) / rn_add(u, -1.0));
}

// y^p for y > 0: exact shortcuts for p = 1, 2, 1/2; else exp(p log y) (relative error about
// |p ln y| 2^-52 + 1 ulp). Subnormal y is scaled into the normal range for the log.
DYNSIM_HD double portable_pow(double y, double p) {
  if (p == 1.0) return y;
  if (p == 2.0) return rn_mul(y, y);
  if (p == 0.5) return sqrt(y);
  if (y > 1.7976931348623157e308) return p > 0 ? y : 0.0;
  double lg;
  if (y < 2.2250738585072014e-308)
    lg = rn_add(rng::portable_log(rn_mul(y, 18014398509481984.0)),  // y 2^54
                rn_mul(-54.0, 0.6931471805599453));
  else
    lg = rng::portable_log(y);
  return rng::portable_exp(rn_mul(p, lg));
}

DYNSIM_HD double apply_nl(const NlParams& f, double x) {
  switch (f.kind) {
    case kRelu:
      return x > 0 ? x : 0.0;
    case kThresholdQuadratic: {
      const double d = rn_add(x, -f.threshold);
      return d > 0 ? rn_mul(d, d) : 0.0;
    }
    case kSublinear:
    case kSuperlinear: {
      const double p = f.power != 0 ? f.power : (f.kind == kSublinear ? 0.5 : 2.0);
      return x > 0 ? rn_mul(f.scale, portable_pow(x / f.scale, p)) : 0.0;
    }
    case kSoftplus: {
      const double bx = rn_mul(f.beta, x);
      return (bx > 30 ? bx : portable_log1p(rng::portable_exp(bx))) / f.beta;
    }
    case kNl2:
    case kNl3: {
      const double a = (x < 0.0 ? 0.0 : x) / f.scale, u = 1.0 < a ? 1.0 : a;  // std::min/max
      if (f.kind == kNl2) return rn_mul(f.scale, rn_add(1.0, -sqrt(rn_add(1.0, -rn_mul(u, u)))));
      const double v = rn_add(1.0, -u);
      return rn_mul(f.scale, sqrt(rn_add(1.0, -rn_mul(v, v))));
    }
  }
  return 0.0;
}

// ---- the noise-free rate ------------------------------------------------------------------
// A cell as the inner loops read it (host or device pointers).
struct CellView {
  int J = 0, L = 0;
  const int32_t* offsets = nullptr;  // [J + 1]: subunit j's mask entries [offsets[j], offsets[j+1])
  const int32_t* pixels = nullptr;   // pixel y W + x of each nonzero mask value, ascending
  const double* values = nullptr;    // the mask value there
  const double* k = nullptr;         // [J, L] filter taps, lag 0 first
  const double* w = nullptr;         // [J] weights
  NlParams nl;
};

// s_j = sum_p m_j(p) X(p) over the nonzero mask entries, in pixel order.
DYNSIM_HD double subunit_drive(const CellView& c, int j, const float* frame) {
  double acc = 0;
  for (int32_t q = c.offsets[j]; q < c.offsets[j + 1]; ++q)
    acc = rn_add(acc, rn_mul(c.values[q], double(frame[c.pixels[q]])));
  return acc;
}

// g(t) = sum_j w_j f(x_j(t)), x_j(t) = sum_{lag <= min(L-1, t)} k_j[lag] s_j(t - lag) (frames
// before 0 are grey), j and lag ascending. s is [J, T]; x and b ([J, T]) may be null.
DYNSIM_HD double signal_at(const CellView& c, const double* s, int64_t T, int64_t t, double* x_out,
                           double* b_out) {
  double g = 0;
  for (int j = 0; j < c.J; ++j) {
    const double* sj = s + j * T;
    const double* kj = c.k + j * c.L;
    double x = 0;
    for (int64_t lag = 0; lag < c.L && lag <= t; ++lag) x = rn_add(x, rn_mul(kj[lag], sj[t - lag]));
    const double b = apply_nl(c.nl, x);
    if (x_out) x_out[j * T + t] = x;
    if (b_out) b_out[j * T + t] = b;
    g = rn_add(g, rn_mul(c.w[j], b));
  }
  return g;
}

// r = A max(0, g - theta) (Hz).
DYNSIM_HD double rate_of(double g, double gain, double theta) {
  const double d = rn_add(g, -theta);
  return rn_mul(gain, d > 0.0 ? d : 0.0);
}

// A cell's CellView storage on the host (built by generator.cpp's flat_cell).
struct FlatCell {
  int J = 0, L = 0;
  std::vector<int32_t> offsets, pixels;
  std::vector<double> values, k, w;
  NlParams nl;
  CellView view() const {
    CellView v;
    v.J = J, v.L = L, v.nl = nl;
    v.offsets = offsets.data(), v.pixels = pixels.data(), v.values = values.data();
    v.k = k.data(), v.w = w.data();
    return v;
  }
};

}  // namespace dynsim::retina::math
