// CPU conv2d (kernels/conv2d.h) as im2col + GEMM. Per image and group, K = Cin/G*KH*KW, P = Ho*Wo:
// y (Cout/G x P) = w (Cout/G x K) * cols (K x P); dgrad scatters w^T * gy back (col2im; a
// reflected tap adds to its mirrored source); wgrad sums gy * cols^T. Chunks of images go to
// threads, each with its own scratch slice; small images share one GEMM. f32 GEMMs use an
// AVX2/FMA kernel chosen at run time, else Eigen. 1x1 stride-1 unpadded convs skip im2col;
// depthwise convs run direct loops.
// This file: argument checks, the Eigen GEMM dispatch, im2col / col2im, the GEMM path and the
// entry points; the AVX2 GEMM is in conv2d_avx2_cpu.cpp, the depthwise loops in
// conv2d_depthwise_cpu.cpp, what they share in conv2d_cpu_detail.h.
#include <omp.h>

#include <Eigen/Core>
#include <algorithm>
#include <cstring>
#include <type_traits>

#include "kernels/conv2d.h"
#include "kernels/conv2d_cpu_detail.h"
#include "kernels/conv2d_math.h"

namespace dynsim {

namespace {

Shape checked_output_shape(const char* op, const Conv2dParams& p, const Shape& x, const Shape& w) {
  if (x.rank() != 4)
    throw DataError(concat(op, ": x must have rank 4 [N, Cin, H, W], got ", x.str()));
  if (w.rank() != 4)
    throw DataError(concat(op, ": w must have rank 4 [Cout, Cin/groups, KH, KW], got ", w.str()));
  if (p.groups < 1) throw DataError(concat(op, ": groups must be >= 1, got ", p.groups));
  if (p.stride_h < 1 || p.stride_w < 1)
    throw DataError(concat(op, ": stride must be >= 1, got (", p.stride_h, ", ", p.stride_w, ")"));
  if (p.pad_h < 0 || p.pad_w < 0)
    throw DataError(concat(op, ": padding must be >= 0, got (", p.pad_h, ", ", p.pad_w, ")"));
  const int64_t cin = x[1], cout = w[0];
  if (cin % p.groups != 0)
    throw DataError(concat(op, ": x has ", cin, " channels, not divisible by groups ", p.groups));
  if (cout % p.groups != 0)
    throw DataError(
        concat(op, ": w has ", cout, " output channels, not divisible by groups ", p.groups));
  if (w[1] != cin / p.groups)
    throw DataError(concat(op, ": w has shape ", w.str(), " but x ", x.str(), " with groups ",
                           p.groups, " needs w.dim(1) == ", cin / p.groups));
  if (w[2] < 1 || w[3] < 1) throw DataError(concat(op, ": w has an empty kernel ", w.str()));
  if (p.pad_mode == PadMode::Reflect && (p.pad_h >= x[2] || p.pad_w >= x[3]))
    throw DataError(concat(op, ": reflect padding (", p.pad_h, ", ", p.pad_w,
                           ") must be smaller than the input size ", x[2], "x", x[3]));
  const int64_t ho = conv::out_size(x[2], w[2], p.stride_h, p.pad_h);
  const int64_t wo = conv::out_size(x[3], w[3], p.stride_w, p.pad_w);
  if (ho < 1 || wo < 1)
    throw DataError(concat(op, ": kernel ", w[2], "x", w[3], " does not fit input ", x[2], "x",
                           x[3], " with padding (", p.pad_h, ", ", p.pad_w, ")"));
  return Shape{x[0], cout, ho, wo};
}

}  // namespace

Shape Conv2dParams::output_shape(const Shape& x, const Shape& w) const {
  return checked_output_shape("conv2d", *this, x, w);
}

namespace cpu {
namespace {

using Index = Eigen::Index;

using namespace conv2d_detail;  // Geom, the taps, team_size, avx2::, depthwise_*

Geom geometry(const Conv2dParams& p, const Shape& xs, const Shape& ws, const Shape& ys) {
  Geom g;
  g.N = xs[0], g.Cin = xs[1], g.H = xs[2], g.W = xs[3];
  g.Cout = ws[0], g.KH = ws[2], g.KW = ws[3], g.Ho = ys[2], g.Wo = ys[3];
  g.G = p.groups, g.Cg = g.Cin / g.G, g.Co = g.Cout / g.G;
  g.K = g.Cg * g.KH * g.KW, g.P = g.Ho * g.Wo, g.HW = g.H * g.W;
  g.sh = p.stride_h, g.sw = p.stride_w, g.ph = p.pad_h, g.pw = p.pad_w, g.mode = p.pad_mode;
  g.pointwise = g.KH == 1 && g.KW == 1 && g.sh == 1 && g.sw == 1 && g.ph == 0 && g.pw == 0;
  g.depthwise = g.Cg == 1 && g.G > 1;
  return g;
}

// Eigen's GEMM with its packing blocks taken from our scratch, so a call never allocates.
template <class T>
class GemmBlocking : public Eigen::internal::level3_blocking<T, T> {
 public:
  void set(Index kc, Index mc, Index nc, T* a, T* b) {
    this->m_kc = kc, this->m_mc = mc, this->m_nc = nc;
    this->m_blockA = a, this->m_blockB = b;
  }
};

// Cache blocking of C (M x N) += A (M x K) * B (K x N) and the packing space it needs. Eigen
// runs the row-major product as C^T = B^T A^T in column-major terms, hence rows N, columns M.
struct GemmPlan {
  bool avx2 = false;
  Index kc = 0, mc = 0, nc = 0;
  size_t a = 0, b = 0;  // packing space in elements
  size_t a_elems() const { return a; }
  size_t b_elems() const { return b; }
};
template <class T>
GemmPlan plan_gemm(int64_t M, int64_t N, int64_t K) {
  GemmPlan p;
  if (std::is_same<T, float>::value && avx2::available()) {
    p.avx2 = true, p.a = avx2::a_elems(M, K), p.b = avx2::b_elems(N, K);
    return p;
  }
  p.kc = K, p.mc = N, p.nc = M;
  Eigen::internal::computeProductBlockingSizes<T, T, 1>(p.kc, p.mc, p.nc, Index(1));
  p.a = size_t(p.kc * p.mc), p.b = size_t(p.kc * p.nc);
  return p;
}

// C (M x N, row-major, leading dimension ldc) = A * B (overwrite) or += A * B. A is M x K and
// B is K x N, each either a row-major array (RowMajor) or the transpose of one (ColMajor).
// Single-threaded.
template <class T, int AOrder, int BOrder>
void gemm(const GemmPlan& pl, T* block_a, T* block_b, int64_t M, int64_t N, int64_t K, const T* A,
          int64_t lda, const T* B, int64_t ldb, T* C, int64_t ldc, bool overwrite) {
#ifdef DYNSIM_CONV_AVX2
  if constexpr (std::is_same<T, float>::value) {
    if (pl.avx2) {
      const bool ar = AOrder == Eigen::RowMajor, br = BOrder == Eigen::RowMajor;
      avx2::gemm(M, N, K, A, ar ? lda : 1, ar ? 1 : lda, B, br ? ldb : 1, br ? 1 : ldb, C, ldc,
                 block_a, block_b, overwrite);
      return;
    }
  }
#endif
  if (overwrite)
    for (int64_t i = 0; i < M; ++i) std::fill(C + i * ldc, C + i * ldc + N, T(0));
  GemmBlocking<T> bl;
  bl.set(pl.kc, pl.mc, pl.nc, block_a, block_b);
  Eigen::internal::general_matrix_matrix_product<Index, T, AOrder, false, T, BOrder, false,
                                                 Eigen::RowMajor, 1>::run(M, N, K, A, lda, B, ldb,
                                                                          C, 1, ldc, T(1), bl);
}

// cols [K, P] (row stride ld) <- the patches of x [Cg, H, W].
template <class T>
void im2col(const Geom& g, const T* x, T* cols, int64_t ld) {
  if (g.ph == 0 && g.pw == 0) {  // unpadded ('valid'): every tap is inside, plain strided copies
    for (int64_t c = 0; c < g.Cg; ++c)
      for (int64_t kh = 0; kh < g.KH; ++kh)
        for (int64_t kw = 0; kw < g.KW; ++kw) {
          T* d = cols + ((c * g.KH + kh) * g.KW + kw) * ld;
          const T* xc = x + c * g.HW + kh * g.W + kw;
          for (int64_t oh = 0; oh < g.Ho; ++oh) {
            const T* s = xc + oh * g.sh * g.W;
            T* dr = d + oh * g.Wo;
            if (g.sw == 1)
              for (int64_t o = 0; o < g.Wo; ++o) dr[o] = s[o];
            else
              for (int64_t o = 0; o < g.Wo; ++o) dr[o] = s[o * g.sw];
          }
        }
    return;
  }
  for (int64_t c = 0; c < g.Cg; ++c)
    for (int64_t kh = 0; kh < g.KH; ++kh)
      for (int64_t kw = 0; kw < g.KW; ++kw) {
        const ColTaps ct = col_taps(g, kw);
        T* d = cols + ((c * g.KH + kh) * g.KW + kw) * ld;
        const T* xc = x + c * g.HW;
        for (int64_t oh = 0; oh < g.Ho; ++oh) {
          T* dr = d + oh * g.Wo;
          const RowTaps r = row_taps(g, oh, kh, ct);
          if (r.ih < 0) {
            std::fill(dr, dr + g.Wo, T(0));
            continue;
          }
          const T* s = xc + r.ih * g.W;
          for_each_edge(g, r, [&](int64_t o, int64_t i) { dr[o] = i < 0 ? T(0) : s[i]; });
          for_each_interior(g, r, [&](int64_t o, int64_t i) { dr[o] = s[i]; });
        }
      }
}

// x [Cg, H, W] += the patches in cols [K, P] (row stride ld): the adjoint of im2col.
template <class T>
void col2im_add(const Geom& g, const T* cols, int64_t ld, T* x) {
  if (g.ph == 0 && g.pw == 0) {  // unpadded: the adjoint of im2col's strided copies
    for (int64_t c = 0; c < g.Cg; ++c)
      for (int64_t kh = 0; kh < g.KH; ++kh)
        for (int64_t kw = 0; kw < g.KW; ++kw) {
          const T* d = cols + ((c * g.KH + kh) * g.KW + kw) * ld;
          T* xc = x + c * g.HW + kh * g.W + kw;
          for (int64_t oh = 0; oh < g.Ho; ++oh) {
            T* s = xc + oh * g.sh * g.W;
            const T* dr = d + oh * g.Wo;
            for (int64_t o = 0; o < g.Wo; ++o) s[o * g.sw] += dr[o];
          }
        }
    return;
  }
  for (int64_t c = 0; c < g.Cg; ++c)
    for (int64_t kh = 0; kh < g.KH; ++kh)
      for (int64_t kw = 0; kw < g.KW; ++kw) {
        const ColTaps ct = col_taps(g, kw);
        const T* d = cols + ((c * g.KH + kh) * g.KW + kw) * ld;
        T* xc = x + c * g.HW;
        for (int64_t oh = 0; oh < g.Ho; ++oh) {
          const RowTaps r = row_taps(g, oh, kh, ct);
          if (r.ih < 0) continue;
          const T* dr = d + oh * g.Wo;
          T* s = xc + r.ih * g.W;
          for_each_edge(g, r, [&](int64_t o, int64_t i) {
            if (i >= 0) s[i] += dr[o];
          });
          for_each_interior(g, r, [&](int64_t o, int64_t i) { s[i] += dr[o]; });
        }
      }
}

// Elements rounded up to 64 bytes so every slice of the scratch buffer stays aligned.
template <class T>
size_t aligned_elems(size_t n) {
  const size_t per = 64 / sizeof(T);
  return (n + per - 1) / per * per;
}

// ---- the GEMM path ------------------------------------------------------------------------
// Work goes in chunks of nb images of one group. Small images (P < 256) are batched side by
// side in one GEMM (columns [i*P, (i+1)*P) for image i): the weight matrix is then packed once
// per chunk, and wgrad's accumulator is swept once per chunk instead of once per image.

struct Chunking {
  int64_t nb, chunks, tasks;  // images per chunk, chunks per group, G * chunks
};
Chunking chunking(const Context& c, const Geom& g) {
  Chunking k;
  k.nb = 1;
  if (!g.pointwise && g.P < 256) {
    // Enough chunks (G * N / nb) to keep every thread busy.
    const int64_t most = std::max<int64_t>(1, g.N * g.G / c.threads());
    k.nb = std::min((256 + g.P - 1) / g.P, most);
  }
  k.chunks = (g.N + k.nb - 1) / k.nb;
  k.tasks = g.G * k.chunks;
  return k;
}

template <class T>
void gemm_forward(Context& c, const Geom& g, const T* x, const T* w, const T* b, T* y) {
  const Chunking ch = chunking(c, g);
  const int nt = team_size(c, ch.tasks, double(g.N) * g.Cout * g.K * g.P);
  const int64_t L = ch.nb * g.P;  // GEMM columns of a full chunk
  const GemmPlan pl = plan_gemm<T>(g.Co, L, g.K);
  const size_t n_cols = g.pointwise ? 0 : aligned_elems<T>(size_t(g.K * L));
  const size_t n_out = ch.nb > 1 ? aligned_elems<T>(size_t(g.Co * L)) : 0;
  const size_t n_a = aligned_elems<T>(pl.a_elems()), n_b = aligned_elems<T>(pl.b_elems());
  const size_t per_thread = n_cols + n_out + n_a + n_b;
  T* scratch = static_cast<T*>(c.scratch().get(per_thread * nt * sizeof(T)));
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    T* mine = scratch + per_thread * size_t(omp_get_thread_num());
    T *cols = mine, *out = cols + n_cols, *block_a = out + n_out, *block_b = block_a + n_a;
#pragma omp for schedule(static)
    for (int64_t t = 0; t < ch.tasks; ++t) {
      const int64_t gr = t / ch.chunks, n0 = (t % ch.chunks) * ch.nb;
      const int64_t nb = std::min(ch.nb, g.N - n0), ld = nb * g.P;
      const T* wt = w + gr * g.Co * g.K;
      auto y_of = [&](int64_t i) { return y + ((n0 + i) * g.Cout + gr * g.Co) * g.P; };
      auto x_of = [&](int64_t i) { return x + ((n0 + i) * g.Cin + gr * g.Cg) * g.HW; };
      if (nb == 1) {  // straight into y, which starts as the bias
        T* yt = y_of(0);
        for (int64_t o = 0; o < g.Co; ++o)
          std::fill(yt + o * g.P, yt + (o + 1) * g.P, b ? b[gr * g.Co + o] : T(0));
        if (!g.pointwise) im2col(g, x_of(0), cols, g.P);
        gemm<T, Eigen::RowMajor, Eigen::RowMajor>(pl, block_a, block_b, g.Co, g.P, g.K, wt, g.K,
                                                  g.pointwise ? x_of(0) : cols, g.P, yt, g.P,
                                                  false);
        continue;
      }
      for (int64_t i = 0; i < nb; ++i) im2col(g, x_of(i), cols + i * g.P, ld);
      gemm<T, Eigen::RowMajor, Eigen::RowMajor>(pl, block_a, block_b, g.Co, ld, g.K, wt, g.K, cols,
                                                ld, out, ld, true);
      for (int64_t i = 0; i < nb; ++i)
        for (int64_t o = 0; o < g.Co; ++o) {
          const T bias = b ? b[gr * g.Co + o] : T(0);
          const T* src = out + o * ld + i * g.P;
          T* dst = y_of(i) + o * g.P;
          for (int64_t p = 0; p < g.P; ++p) dst[p] = src[p] + bias;
        }
    }
  }
}

// dgrad and wgrad in one pass over the chunks: the im2col columns of a chunk feed its wgrad
// product, then the same buffer receives w^T * grad_y for the col2im scatter.
template <class T>
void gemm_backward(Context& c, const Geom& g, const T* gy, const T* x, const T* w, T* gx, T* gw,
                   GradMode m) {
  const Chunking ch = chunking(c, g);
  const double flops = double(g.N) * g.Cout * g.K * g.P * ((gx ? 1 : 0) + (gw ? 1 : 0));
  const int nt = team_size(c, ch.tasks, flops);
  const int64_t L = ch.nb * g.P;
  const GemmPlan pd = plan_gemm<T>(g.K, L, g.Co);  // dcols (K x L) = w^T (K x Co) * gy
  // gw (Co x K) += gy (Co x L) * cols^T, or, when K < Co, its transpose cols * gy^T: the GEMM
  // tiles the output columns by 16, and the wider side wastes less of the last tile.
  const bool wgrad_t = g.K < g.Co;
  const GemmPlan pw = wgrad_t ? plan_gemm<T>(g.K, g.Co, L) : plan_gemm<T>(g.Co, g.K, L);
  const size_t n_cols = g.pointwise ? 0 : aligned_elems<T>(size_t(g.K * L));
  const size_t n_gy = ch.nb > 1 ? aligned_elems<T>(size_t(g.Co * L)) : 0;
  const size_t n_a = aligned_elems<T>(std::max(gx ? pd.a_elems() : 0, gw ? pw.a_elems() : 0));
  const size_t n_b = aligned_elems<T>(std::max(gx ? pd.b_elems() : 0, gw ? pw.b_elems() : 0));
  const size_t n_gw = gw ? aligned_elems<T>(size_t(g.Cout * g.K)) : 0;
  const size_t per_thread = n_cols + n_gy + n_a + n_b + n_gw;
  const size_t part_at = n_cols + n_gy + n_a + n_b;
  T* scratch = static_cast<T*>(c.scratch().get(per_thread * nt * sizeof(T)));
  // Partial weight gradients start at zero; a slot whose thread never starts stays zero.
  if (gw)
    for (int i = 0; i < nt; ++i)
      std::fill(scratch + per_thread * i + part_at,
                scratch + per_thread * i + part_at + g.Cout * g.K, T(0));
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    T* mine = scratch + per_thread * size_t(omp_get_thread_num());
    T *cols = mine, *gybuf = cols + n_cols, *block_a = gybuf + n_gy, *block_b = block_a + n_a;
    T* part = mine + part_at;
#pragma omp for schedule(static)
    for (int64_t t = 0; t < ch.tasks; ++t) {
      const int64_t gr = t / ch.chunks, n0 = (t % ch.chunks) * ch.nb;
      const int64_t nb = std::min(ch.nb, g.N - n0), ld = nb * g.P;
      auto x_of = [&](int64_t i) { return x + ((n0 + i) * g.Cin + gr * g.Cg) * g.HW; };
      auto gy_of = [&](int64_t i) { return gy + ((n0 + i) * g.Cout + gr * g.Co) * g.P; };
      // grad_y of the chunk as one Co x ld matrix (a copy only when batching images).
      const T* gyt = gy_of(0);
      if (nb > 1) {
        for (int64_t i = 0; i < nb; ++i)
          for (int64_t o = 0; o < g.Co; ++o)
            std::copy(gy_of(i) + o * g.P, gy_of(i) + (o + 1) * g.P, gybuf + o * ld + i * g.P);
        gyt = gybuf;
      }
      if (gw) {
        if (!g.pointwise)
          for (int64_t i = 0; i < nb; ++i) im2col(g, x_of(i), cols + i * g.P, ld);
        const T* xcols = g.pointwise ? x_of(0) : cols;
        T* pg = part + gr * g.Co * g.K;
        if (wgrad_t)
          gemm<T, Eigen::RowMajor, Eigen::ColMajor>(pw, block_a, block_b, g.K, g.Co, ld, xcols, ld,
                                                    gyt, ld, pg, g.Co, false);
        else
          gemm<T, Eigen::RowMajor, Eigen::ColMajor>(pw, block_a, block_b, g.Co, g.K, ld, gyt, ld,
                                                    xcols, ld, pg, g.K, false);
      }
      if (gx) {
        const T* wt = w + gr * g.Co * g.K;
        if (g.pointwise) {  // the product lands in grad_x directly (nb == 1)
          T* gxt = gx + (n0 * g.Cin + gr * g.Cg) * g.HW;
          gemm<T, Eigen::ColMajor, Eigen::RowMajor>(pd, block_a, block_b, g.K, g.P, g.Co, wt, g.K,
                                                    gyt, g.P, gxt, g.P, m == GradMode::Overwrite);
        } else {  // into cols, then scattered back
          gemm<T, Eigen::ColMajor, Eigen::RowMajor>(pd, block_a, block_b, g.K, ld, g.Co, wt, g.K,
                                                    gyt, ld, cols, ld, true);
          for (int64_t i = 0; i < nb; ++i) {
            T* gxt = gx + ((n0 + i) * g.Cin + gr * g.Cg) * g.HW;
            if (m == GradMode::Overwrite) std::fill(gxt, gxt + g.Cg * g.HW, T(0));
            col2im_add(g, cols + i * g.P, ld, gxt);
          }
        }
      }
    }
  }
  if (gw) {
    const int64_t n = g.Cout * g.K;
    const int nr = team_size(c, n, double(n) * nt * 16);
#pragma omp parallel for num_threads(nr) if (nr > 1) schedule(static)
    for (int64_t e = 0; e < n; ++e) {
      // Element e = (co, k) of grad_w; a transposed partial holds it at (group, k, co).
      const int64_t co = e / g.K, k = e % g.K;
      const int64_t src = wgrad_t ? (co / g.Co) * g.Co * g.K + k * g.Co + co % g.Co : e;
      T s = 0;
      for (int i = 0; i < nt; ++i) s += scratch[per_thread * i + part_at + src];
      write_grad(gw[e], s, m);
    }
  }
}

// grad_b[co] (+)= sum over images and pixels of grad_y[n, co].
template <class T>
void bias_grad(const Context& c, const Geom& g, const T* gy, T* gb, GradMode m) {
  const int nt = team_size(c, g.Cout, double(g.N) * g.Cout * g.P);
#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
  for (int64_t co = 0; co < g.Cout; ++co) {
    // Eight interleaved partial sums: independent chains that the compiler can vectorize.
    T acc[8] = {};
    for (int64_t n = 0; n < g.N; ++n) {
      const T* p = gy + (n * g.Cout + co) * g.P;
      int64_t i = 0;
      for (; i + 8 <= g.P; i += 8)
        for (int j = 0; j < 8; ++j) acc[j] += p[i + j];
      for (; i < g.P; ++i) acc[i % 8] += p[i];
    }
    T s = 0;
    for (int j = 0; j < 8; ++j) s += acc[j];
    write_grad(gb[co], s, m);
  }
}

}  // namespace

void conv2d_forward(Context& c, const Conv2dParams& p, const Tensor& x, const Tensor& w,
                    const Tensor& b, const Tensor& y) {
  const char* op = "conv2d_forward";
  with_float_type(op, x, [&](auto tag) {
    using T = decltype(tag);
    check_same(op, "w", w, x);
    const Shape ys = checked_output_shape(op, p, x.shape(), w.shape());
    if (b.defined()) check_arg(op, "b", b, x, Shape{w.dim(0)});
    check_arg(op, "y", y, x, ys);
    const Geom g = geometry(p, x.shape(), w.shape(), ys);
    if (g.depthwise)
      depthwise_forward(c, g, x.data<T>(), w.data<T>(), data_or_null<const T>(b), y.data<T>());
    else
      gemm_forward(c, g, x.data<T>(), w.data<T>(), data_or_null<const T>(b), y.data<T>());
  });
}

void conv2d_backward(Context& c, const Conv2dParams& p, const Tensor& grad_y, const Tensor& x,
                     const Tensor& w, const Tensor& grad_x, const Tensor& grad_w,
                     const Tensor& grad_b, GradMode m) {
  const char* op = "conv2d_backward";
  with_float_type(op, x, [&](auto tag) {
    using T = decltype(tag);
    check_same(op, "w", w, x);
    const Shape ys = checked_output_shape(op, p, x.shape(), w.shape());
    check_arg(op, "grad_y", grad_y, x, ys);
    if (grad_x.defined()) check_arg(op, "grad_x", grad_x, x, x.shape());
    if (grad_w.defined()) check_arg(op, "grad_w", grad_w, x, w.shape());
    if (grad_b.defined()) check_arg(op, "grad_b", grad_b, x, Shape{w.dim(0)});
    const Geom g = geometry(p, x.shape(), w.shape(), ys);
    const T *gy = grad_y.data<T>(), *px = x.data<T>(), *pw = w.data<T>();
    T* gx = grad_x.defined() ? grad_x.data<T>() : nullptr;
    T* gw = grad_w.defined() ? grad_w.data<T>() : nullptr;
    if (g.depthwise) {
      if (gx) depthwise_dgrad(c, g, gy, pw, gx, m);
      if (gw) depthwise_wgrad(c, g, gy, px, gw, m);
    } else if (gx || gw) {
      gemm_backward(c, g, gy, px, pw, gx, gw, m);
    }
    if (grad_b.defined()) bias_grad(c, g, gy, grad_b.data<T>(), m);
  });
}

}  // namespace cpu
}  // namespace dynsim
