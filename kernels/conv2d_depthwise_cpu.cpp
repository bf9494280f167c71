// The CPU conv2d's depthwise path (one input channel per group, kernels/conv2d.h): direct loops
// for forward, grad_x and grad_w, declared in conv2d_cpu_detail.h and called from
// conv2d_cpu.cpp's entry points. Siblings: conv2d_cpu.cpp, conv2d_avx2_cpu.cpp.
#include <algorithm>

#include "kernels/conv2d_cpu_detail.h"

namespace dynsim::cpu::conv2d_detail {

// ---- depthwise (one input channel per group): direct loops -------------------------------

// y[n, co] = b[co] + sum_taps w[co] * x[n, co / mult]; parallel over output planes.
template <class T>
void depthwise_forward(const Context& c, const Geom& g, const T* x, const T* w, const T* b, T* y) {
  const int64_t mult = g.Co, planes = g.N * g.Cout;
  const int nt = team_size(c, planes, double(planes) * g.P * g.KH * g.KW);
#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
  for (int64_t q = 0; q < planes; ++q) {
    const int64_t n = q / g.Cout, co = q % g.Cout;
    T* yp = y + q * g.P;
    const T* xp = x + (n * g.Cin + co / mult) * g.HW;
    std::fill(yp, yp + g.P, b ? b[co] : T(0));
    for (int64_t kh = 0; kh < g.KH; ++kh)
      for (int64_t kw = 0; kw < g.KW; ++kw) {
        const ColTaps ct = col_taps(g, kw);
        const T wv = w[(co * g.KH + kh) * g.KW + kw];
        for (int64_t oh = 0; oh < g.Ho; ++oh) {
          const RowTaps r = row_taps(g, oh, kh, ct);
          if (r.ih < 0) continue;
          const T* s = xp + r.ih * g.W;
          T* yr = yp + oh * g.Wo;
          for_each_edge(g, r, [&](int64_t o, int64_t i) {
            if (i >= 0) yr[o] += wv * s[i];
          });
          for_each_interior(g, r, [&](int64_t o, int64_t i) { yr[o] += wv * s[i]; });
        }
      }
  }
}

// grad_x[n, ci] (+)= sum over its mult output channels of w * grad_y, scattered; parallel over
// input planes so that no two threads write the same plane.
template <class T>
void depthwise_dgrad(const Context& c, const Geom& g, const T* gy, const T* w, T* gx, GradMode m) {
  const int64_t mult = g.Co, planes = g.N * g.Cin;
  const int nt = team_size(c, planes, double(planes) * mult * g.P * g.KH * g.KW);
#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
  for (int64_t q = 0; q < planes; ++q) {
    const int64_t n = q / g.Cin, ci = q % g.Cin;
    T* xp = gx + q * g.HW;
    if (m == GradMode::Overwrite) std::fill(xp, xp + g.HW, T(0));
    for (int64_t co = ci * mult; co < (ci + 1) * mult; ++co) {
      const T* gp = gy + (n * g.Cout + co) * g.P;
      for (int64_t kh = 0; kh < g.KH; ++kh)
        for (int64_t kw = 0; kw < g.KW; ++kw) {
          const ColTaps ct = col_taps(g, kw);
          const T wv = w[(co * g.KH + kh) * g.KW + kw];
          for (int64_t oh = 0; oh < g.Ho; ++oh) {
            const RowTaps r = row_taps(g, oh, kh, ct);
            if (r.ih < 0) continue;
            T* s = xp + r.ih * g.W;
            const T* gr = gp + oh * g.Wo;
            for_each_edge(g, r, [&](int64_t o, int64_t i) {
              if (i >= 0) s[i] += wv * gr[o];
            });
            for_each_interior(g, r, [&](int64_t o, int64_t i) { s[i] += wv * gr[o]; });
          }
        }
    }
  }
}

// grad_w[co, tap] (+)= sum over images and pixels of grad_y * x; parallel over output channels.
template <class T>
void depthwise_wgrad(const Context& c, const Geom& g, const T* gy, const T* x, T* gw, GradMode m) {
  const int64_t mult = g.Co;
  const int nt = team_size(c, g.Cout, double(g.N) * g.Cout * g.P * g.KH * g.KW);
#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
  for (int64_t co = 0; co < g.Cout; ++co)
    for (int64_t kh = 0; kh < g.KH; ++kh)
      for (int64_t kw = 0; kw < g.KW; ++kw) {
        const ColTaps ct = col_taps(g, kw);
        T acc = 0;
        for (int64_t n = 0; n < g.N; ++n) {
          const T* gp = gy + (n * g.Cout + co) * g.P;
          const T* xp = x + (n * g.Cin + co / mult) * g.HW;
          for (int64_t oh = 0; oh < g.Ho; ++oh) {
            const RowTaps r = row_taps(g, oh, kh, ct);
            if (r.ih < 0) continue;
            const T* s = xp + r.ih * g.W;
            const T* gr = gp + oh * g.Wo;
            for_each_edge(g, r, [&](int64_t o, int64_t i) {
              if (i >= 0) acc += gr[o] * s[i];
            });
            for_each_interior(g, r, [&](int64_t o, int64_t i) { acc += gr[o] * s[i]; });
          }
        }
        write_grad(gw[(co * g.KH + kh) * g.KW + kw], acc, m);
      }
}

template void depthwise_forward(const Context&, const Geom&, const float*, const float*,
                                const float*, float*);
template void depthwise_forward(const Context&, const Geom&, const double*, const double*,
                                const double*, double*);
template void depthwise_dgrad(const Context&, const Geom&, const float*, const float*, float*,
                              GradMode);
template void depthwise_dgrad(const Context&, const Geom&, const double*, const double*, double*,
                              GradMode);
template void depthwise_wgrad(const Context&, const Geom&, const float*, const float*, float*,
                              GradMode);
template void depthwise_wgrad(const Context&, const Geom&, const double*, const double*, double*,
                              GradMode);

}  // namespace dynsim::cpu::conv2d_detail
