// Retina analysis, subunit side (models/retina/analysis.h): the Jacobi eigen-solver, rank-1
// space/time decomposition, Hungarian assignment, candidates and scoring of recovered subunits,
// and conv-unit STAs from white-noise probing. Siblings: analysis.cpp (response metrics, the
// host-tensor helpers), analysis_detail.h (what both share).
#include "models/retina/analysis.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "engine/core/errors.h"
#include "engine/core/rng.h"
#include "models/retina/analysis_detail.h"

namespace dynsim::retina {

using analysis_detail::host_values;
using analysis_detail::kNaN;

namespace {

double dot(const double* a, const double* b, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

// Pearson r of two equal-length vectors (no NaN handling); NaN for zero variance.
double plain_pearson(const std::vector<double>& a, const std::vector<double>& b) {
  const size_t n = a.size();
  double ma = 0, mb = 0;
  for (size_t i = 0; i < n; ++i) ma += a[i], mb += b[i];
  ma /= double(n), mb /= double(n);
  double sab = 0, saa = 0, sbb = 0;
  for (size_t i = 0; i < n; ++i) {
    sab += (a[i] - ma) * (b[i] - mb);
    saa += (a[i] - ma) * (a[i] - ma);
    sbb += (b[i] - mb) * (b[i] - mb);
  }
  return (saa > 0 && sbb > 0) ? sab / std::sqrt(saa * sbb) : kNaN;
}

// Cyclic Jacobi on a symmetric n x n matrix (row-major, overwritten: its diagonal ends as the
// eigenvalues); vecs gets the eigenvectors as columns. Exact to rounding for the small Gram
// matrices used here (n <= a few hundred).
void jacobi_eigen(std::vector<double>& a, int n, std::vector<double>& vecs) {
  vecs.assign(size_t(n) * n, 0.0);
  for (int i = 0; i < n; ++i) vecs[size_t(i) * n + i] = 1.0;
  for (int sweep = 0; sweep < 100; ++sweep) {
    double off = 0, diag = 0;
    for (int p = 0; p < n; ++p) {
      diag += a[size_t(p) * n + p] * a[size_t(p) * n + p];
      for (int q = p + 1; q < n; ++q) off += a[size_t(p) * n + q] * a[size_t(p) * n + q];
    }
    if (off <= 1e-32 * diag || off == 0) return;
    for (int p = 0; p < n; ++p)
      for (int q = p + 1; q < n; ++q) {
        const double apq = a[size_t(p) * n + q];
        if (apq == 0) continue;
        // Rotation by angle phi with t = tan(phi) the smaller root of t^2 + 2 theta t - 1 = 0,
        // which zeroes a_pq.
        const double theta = (a[size_t(q) * n + q] - a[size_t(p) * n + p]) / (2 * apq);
        const double t =
            std::abs(theta) > 1e150
                ? 0.5 / theta
                : (theta >= 0 ? 1.0 : -1.0) / (std::abs(theta) + std::sqrt(theta * theta + 1));
        const double c = 1 / std::sqrt(t * t + 1), s = t * c;
        for (int k = 0; k < n; ++k) {  // columns p, q
          const double akp = a[size_t(k) * n + p], akq = a[size_t(k) * n + q];
          a[size_t(k) * n + p] = c * akp - s * akq;
          a[size_t(k) * n + q] = s * akp + c * akq;
        }
        for (int k = 0; k < n; ++k) {  // rows p, q
          const double apk = a[size_t(p) * n + k], aqk = a[size_t(q) * n + k];
          a[size_t(p) * n + k] = c * apk - s * aqk;
          a[size_t(q) * n + k] = s * apk + c * aqk;
        }
        for (int k = 0; k < n; ++k) {
          const double vkp = vecs[size_t(k) * n + p], vkq = vecs[size_t(k) * n + q];
          vecs[size_t(k) * n + p] = c * vkp - s * vkq;
          vecs[size_t(k) * n + q] = s * vkp + c * vkq;
        }
      }
  }
}

}  // namespace

SymmetricEigen symmetric_eigen(std::vector<double> a, int n) {
  if (n < 0 || a.size() != size_t(n) * size_t(n))
    throw DataError(concat("symmetric_eigen: ", a.size(), " entries for ", n, " x ", n));
  std::vector<double> V;
  jacobi_eigen(a, n, V);
  std::vector<int> order(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) order[size_t(i)] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](int x, int y) { return a[size_t(x) * n + x] > a[size_t(y) * n + y]; });
  SymmetricEigen e;
  e.values.resize(size_t(n));
  e.vectors.resize(size_t(n) * n);
  for (int i = 0; i < n; ++i) {
    const int c = order[size_t(i)];
    e.values[size_t(i)] = a[size_t(c) * n + c];
    for (int j = 0; j < n; ++j) e.vectors[size_t(i) * n + j] = V[size_t(j) * n + c];
  }
  return e;
}

// ---- Rank-1 -------------------------------------------------------------------------------------

Rank1 rank1_decompose(const Tensor& filter, const Tensor& reference_temporal) {
  const char* op = "rank1_decompose";
  if (filter.rank() != 3)
    throw DataError(concat(op, ": filter ", filter.str(), " must be [L, kh, kw]"));
  const int64_t L = filter.dim(0), P = filter.dim(1) * filter.dim(2);
  const auto A = host_values(filter, op, "filter");  // [L, P]
  if (reference_temporal.defined() && reference_temporal.numel() != L)
    throw DataError(concat(op, ": reference_temporal ", reference_temporal.str(),
                           " does not match filter ", filter.str()));
  Rank1 r;
  r.spatial = Tensor::zeros({filter.dim(1), filter.dim(2)}, DType::F64);
  r.temporal = Tensor::zeros({L}, DType::F64);
  double* u = r.spatial.data<double>();
  double* v = r.temporal.data<double>();
  const double fro2 = dot(A.data(), A.data(), L * P);
  if (!(fro2 > 0)) return r;  // all-zero filter: zero factors, sigma 0
  // Leading eigenvector of the smaller Gram matrix, then the other factor by projection.
  const bool temporal_side = L <= P;
  const int n = int(temporal_side ? L : P);
  std::vector<double> G(size_t(n) * n, 0.0);
  for (int i = 0; i < n; ++i)
    for (int j = i; j < n; ++j) {
      double s = 0;
      if (temporal_side)
        s = dot(&A[size_t(i) * P], &A[size_t(j) * P], P);
      else
        for (int64_t l = 0; l < L; ++l) s += A[size_t(l * P + i)] * A[size_t(l * P + j)];
      G[size_t(i) * n + j] = G[size_t(j) * n + i] = s;
    }
  const SymmetricEigen e = symmetric_eigen(std::move(G), n);
  const double lam = std::max(e.values[0], 0.0);
  r.sigma = std::sqrt(lam);
  r.explained = lam / fro2;
  if (temporal_side) {
    for (int64_t l = 0; l < L; ++l) v[l] = e.vectors[size_t(l)];
    for (int64_t q = 0; q < P; ++q) {
      double s = 0;
      for (int64_t l = 0; l < L; ++l) s += A[size_t(l * P + q)] * v[l];
      u[q] = s / r.sigma;
    }
  } else {
    for (int64_t q = 0; q < P; ++q) u[q] = e.vectors[size_t(q)];
    for (int64_t l = 0; l < L; ++l) v[l] = dot(&A[size_t(l * P)], u, P) / r.sigma;
  }
  double flip = 1;
  if (reference_temporal.defined()) {
    const auto ref = reference_temporal.to_vector();
    flip = dot(v, ref.data(), L) < 0 ? -1 : 1;
  } else {
    int64_t arg = 0;
    for (int64_t q = 1; q < P; ++q)
      if (std::abs(u[q]) > std::abs(u[arg])) arg = q;
    flip = u[arg] < 0 ? -1 : 1;
  }
  for (int64_t q = 0; q < P; ++q) u[q] *= flip;
  for (int64_t l = 0; l < L; ++l) v[l] *= flip;
  return r;
}

Tensor lag_to_channel_order(const Tensor& k, int64_t n_channels) {
  const auto kv = host_values(k, "lag_to_channel_order", "k");
  const int64_t L = int64_t(kv.size());
  Tensor out = Tensor::zeros({n_channels}, DType::F64);
  for (int64_t c = 0; c < n_channels; ++c) {
    const int64_t lag = n_channels - c;
    if (lag >= 0 && lag < L) out.set(c, kv[size_t(lag)]);
  }
  return out;
}

// ---- Hungarian ----------------------------------------------------------------------------------

Assignment hungarian_minimize(const std::vector<double>& cost, int rows, int cols) {
  if (rows < 0 || cols < 0 || cost.size() != size_t(rows) * size_t(cols))
    throw DataError(
        concat("hungarian: cost has ", cost.size(), " entries, expected ", rows, " x ", cols));
  for (double c : cost)
    if (!std::isfinite(c)) throw DataError("hungarian: cost matrix has a non-finite entry");
  Assignment out;
  out.row_to_col.assign(size_t(rows), -1);
  if (rows == 0 || cols == 0) return out;
  // Work on n <= m (transpose if needed): rows of `a` are assigned to distinct columns.
  const bool tr = rows > cols;
  const int n = tr ? cols : rows, m = tr ? rows : cols;
  auto a = [&](int i, int j) {  // 1-based
    return tr ? cost[size_t(j - 1) * cols + (i - 1)] : cost[size_t(i - 1) * cols + (j - 1)];
  };
  const double inf = std::numeric_limits<double>::infinity();
  // Potentials u (rows), v (columns); p[j] = row matched to column j (0 = none); column 0 is a
  // virtual start. Each row is added by a Dijkstra-like search for the cheapest augmenting
  // path in reduced costs a(i,j) - u[i] - v[j] >= 0, then the path is flipped.
  std::vector<double> u(size_t(n) + 1, 0.0), v(size_t(m) + 1, 0.0);
  std::vector<int> p(size_t(m) + 1, 0), way(size_t(m) + 1, 0);
  for (int i = 1; i <= n; ++i) {
    p[0] = i;
    int j0 = 0;
    std::vector<double> minv(size_t(m) + 1, inf);
    std::vector<char> used(size_t(m) + 1, 0);
    do {
      used[size_t(j0)] = 1;
      const int i0 = p[size_t(j0)];
      double delta = inf;
      int j1 = 0;
      for (int j = 1; j <= m; ++j) {
        if (used[size_t(j)]) continue;
        const double cur = a(i0, j) - u[size_t(i0)] - v[size_t(j)];
        if (cur < minv[size_t(j)]) minv[size_t(j)] = cur, way[size_t(j)] = j0;
        if (minv[size_t(j)] < delta) delta = minv[size_t(j)], j1 = j;
      }
      for (int j = 0; j <= m; ++j) {
        if (used[size_t(j)]) {
          u[size_t(p[size_t(j)])] += delta;
          v[size_t(j)] -= delta;
        } else {
          minv[size_t(j)] -= delta;
        }
      }
      j0 = j1;
    } while (p[size_t(j0)] != 0);
    do {  // flip the augmenting path back to the start
      const int j1 = way[size_t(j0)];
      p[size_t(j0)] = p[size_t(j1)];
      j0 = j1;
    } while (j0 != 0);
  }
  for (int j = 1; j <= m; ++j) {
    if (p[size_t(j)] == 0) continue;
    const int r = tr ? j - 1 : p[size_t(j)] - 1, c = tr ? p[size_t(j)] - 1 : j - 1;
    out.row_to_col[size_t(r)] = c;
    out.total += cost[size_t(r) * cols + c];
  }
  return out;
}

Assignment hungarian_maximize(const std::vector<double>& score, int rows, int cols) {
  std::vector<double> neg(score.size());
  for (size_t i = 0; i < score.size(); ++i) neg[i] = -score[i];
  Assignment a = hungarian_minimize(neg, rows, cols);
  a.total = -a.total;
  return a;
}

// ---- Subunit recovery --------------------------------------------------------------------------

namespace {

// A true-temporal tensor [L] or [J, L] as rows (a single [L] serves every subunit; J < 0: any).
std::vector<std::vector<double>> temporal_rows(const Tensor& k, int64_t J, const char* op) {
  std::vector<std::vector<double>> rows;
  if (!k.defined()) return rows;
  const auto v = host_values(k, op, "true_temporal");
  if (k.rank() == 1) return std::vector<std::vector<double>>(size_t(std::max<int64_t>(J, 1)), v);
  if (k.rank() != 2 || (J >= 0 && k.dim(0) != J))
    throw DataError(concat(op, ": true_temporal ", k.str(), " must be [L] or [", J, ", L]"));
  const int64_t L = k.dim(1);
  for (int64_t j = 0; j < k.dim(0); ++j)
    rows.emplace_back(v.begin() + j * L, v.begin() + (j + 1) * L);
  return rows;
}

std::vector<double> in_channel_order(const std::vector<double>& k, int64_t C) {
  std::vector<double> out(size_t(C), 0.0);
  for (int64_t c = 0; c < C; ++c)
    if (C - c < int64_t(k.size())) out[size_t(c)] = k[size_t(C - c)];
  return out;
}

// Binary mask (>= frac * max, max > 0) of a map and its value-weighted centroid (NaN if empty).
struct Region {
  std::vector<char> in;
  double cy = std::numeric_limits<double>::quiet_NaN(), cx = cy;
};
Region region_of(const double* map, int64_t H, int64_t W, double frac) {
  Region r;
  r.in.assign(size_t(H * W), 0);
  double mx = 0;
  for (int64_t i = 0; i < H * W; ++i) mx = std::max(mx, map[i]);
  if (!(mx > 0)) return r;
  double sw = 0, sy = 0, sx = 0;
  for (int64_t i = 0; i < H * W; ++i)
    if (map[i] >= frac * mx) {
      r.in[size_t(i)] = 1;
      sw += map[i], sy += map[i] * double(i / W), sx += map[i] * double(i % W);
    }
  r.cy = sy / sw, r.cx = sx / sw;
  return r;
}

}  // namespace

Candidates candidates_from_cnn(const Tensor& conv_weight, const Tensor& dense, int64_t H, int64_t W,
                               const Tensor& true_temporal, const RecoveryOptions& opt) {
  const char* op = "candidates_from_cnn";
  if (conv_weight.rank() != 4)
    throw DataError(concat(op, ": conv_weight ", conv_weight.str(), " must be [K, C, kh, kw]"));
  const int64_t K = conv_weight.dim(0), C = conv_weight.dim(1), kh = conv_weight.dim(2),
                kw = conv_weight.dim(3), oh = H - kh + 1, ow = W - kw + 1;
  if (oh < 1 || ow < 1)
    throw DataError(concat(op, ": kernel ", kh, "x", kw, " larger than the input ", H, "x", W));
  const int64_t npos = oh * ow, row_len = K * npos;
  if (dense.rank() < 1 || dense.rank() > 2 || dense.dim(-1) != row_len ||
      (dense.rank() == 2 && (opt.cell < 0 || opt.cell >= dense.dim(0))))
    throw DataError(concat(op, ": dense ", dense.str(), " must be [n_out, ", row_len,
                           "] (K*oh*ow) with cell ", opt.cell, " in range"));
  const auto Wv = host_values(conv_weight, op, "conv_weight");
  const auto Dall = host_values(dense, op, "dense");
  const double* D = Dall.data() + size_t(dense.rank() == 2 ? opt.cell * row_len : 0);
  Tensor ref;  // sign reference: the mean true filter in channel order
  if (true_temporal.defined()) {
    const auto rows = temporal_rows(true_temporal, -1, op);
    std::vector<double> mean(rows[0].size(), 0.0);
    for (auto& r : rows)
      for (size_t l = 0; l < r.size(); ++l) mean[l] += r[l] / double(rows.size());
    ref = Tensor::from({C}, in_channel_order(mean, C), DType::F64);
  }
  double dmax = 0;
  for (int64_t i = 0; i < row_len; ++i) dmax = std::max(dmax, std::abs(D[i]));
  Candidates out;
  out.strength.assign(size_t(K), 0.0);
  std::vector<std::vector<double>> maps, temps;
  const int64_t fsize = C * kh * kw;
  for (int64_t k = 0; k < K; ++k) {
    const double* d = D + k * npos;
    int64_t arg = 0;
    for (int64_t p = 1; p < npos; ++p)
      if (std::abs(d[p]) > std::abs(d[arg])) arg = p;
    std::vector<int64_t> pos;
    for (int64_t p = 0; p < npos; ++p)
      if (dmax > 0 && std::abs(d[p]) > opt.placement_frac * dmax &&
          (opt.placement == Placement::AllAbove || p == arg))
        pos.push_back(p);
    if (pos.empty()) continue;
    std::vector<double> wk(Wv.begin() + k * fsize, Wv.begin() + (k + 1) * fsize);
    out.strength[size_t(k)] = std::sqrt(dot(wk.data(), wk.data(), fsize)) * std::abs(d[arg]);
    const Rank1 r1 = rank1_decompose(Tensor::from({C, kh, kw}, wk, DType::F64), ref);
    const double* u = r1.spatial.data<double>();
    for (int64_t p : pos) {
      std::vector<double> m(size_t(H * W), 0.0);
      const int64_t py = p / ow, px = p % ow;
      for (int64_t y = 0; y < kh; ++y)
        for (int64_t x = 0; x < kw; ++x) m[size_t((py + y) * W + px + x)] = u[y * kw + x];
      maps.push_back(std::move(m));
      temps.push_back(r1.temporal.to_vector());
      out.filter.push_back(int(k));
    }
  }
  const int64_t N = int64_t(maps.size());
  out.spatial = Tensor::zeros({N, H, W}, DType::F64);
  out.temporal = Tensor::zeros({N, C}, DType::F64);
  for (int64_t i = 0; i < N; ++i) {
    std::copy(maps[size_t(i)].begin(), maps[size_t(i)].end(),
              out.spatial.data<double>() + i * H * W);
    std::copy(temps[size_t(i)].begin(), temps[size_t(i)].end(),
              out.temporal.data<double>() + i * C);
  }
  return out;
}

Candidates candidates_from_maps(const Tensor& maps, std::vector<double> strength) {
  if (maps.rank() != 3)
    throw DataError(concat("candidates_from_maps: maps ", maps.str(), " must be [N, H, W]"));
  const int64_t N = maps.dim(0);
  if (strength.empty()) strength.assign(size_t(N), 1.0);
  if (int64_t(strength.size()) != N)
    throw DataError(
        concat("candidates_from_maps: ", strength.size(), " strengths for ", N, " maps"));
  Candidates c;
  c.spatial =
      Tensor::from(maps.shape(), host_values(maps, "candidates_from_maps", "maps"), DType::F64);
  for (int64_t i = 0; i < N; ++i) c.filter.push_back(int(i));
  c.strength = std::move(strength);
  return c;
}

RecoveryScore score_recovery(const Candidates& cand, const Tensor& masks,
                             const Tensor& true_temporal, const RecoveryOptions& opt) {
  const char* op = "score_recovery";
  if (masks.rank() != 3) throw DataError(concat(op, ": masks ", masks.str(), " must be [J, H, W]"));
  const int64_t J = masks.dim(0), H = masks.dim(1), W = masks.dim(2), P = H * W;
  if (!cand.spatial.defined() || cand.spatial.rank() != 3 || cand.spatial.dim(1) != H ||
      cand.spatial.dim(2) != W)
    throw DataError(
        concat(op, ": candidate maps ", cand.spatial.str(), " do not match masks ", masks.str()));
  const int64_t N = cand.spatial.dim(0);
  if (int64_t(cand.filter.size()) != N)
    throw DataError(concat(op, ": ", cand.filter.size(), " filter indices for ", N, " candidates"));
  for (int f : cand.filter)
    if (f < 0 || size_t(f) >= cand.strength.size())
      throw DataError(concat(op, ": candidate filter index ", f, " has no strength"));
  const auto M = host_values(masks, op, "masks");
  const auto S = host_values(cand.spatial, op, "candidate maps");
  const auto ktrue = temporal_rows(true_temporal, J, op);
  const bool has_temporal = cand.temporal.defined() && !ktrue.empty();
  const int64_t C = cand.temporal.defined() ? cand.temporal.dim(1) : 0;
  const std::vector<double> Tv = has_temporal ? cand.temporal.to_vector() : std::vector<double>();
  std::vector<std::vector<double>> kch;
  for (auto& k : ktrue) kch.push_back(in_channel_order(k, C));

  // sign(v_i . k_j): compare an OFF filter learned with flipped sign in its own orientation.
  auto sign_of = [&](int64_t i, int64_t j) {
    if (!has_temporal) return 1.0;
    return dot(&Tv[size_t(i * C)], kch[size_t(j)].data(), C) < 0 ? -1.0 : 1.0;
  };
  RecoveryScore out;
  out.similarity = Tensor::zeros({N, J}, DType::F64);
  double* sim = out.similarity.data<double>();
  for (int64_t i = 0; i < N; ++i)
    for (int64_t j = 0; j < J; ++j) {
      const double* si = &S[size_t(i * P)];
      const double* mj = &M[size_t(j * P)];
      const double ni = std::sqrt(dot(si, si, P)), nj = std::sqrt(dot(mj, mj, P));
      sim[i * J + j] = (ni > 0 && nj > 0) ? sign_of(i, j) * dot(si, mj, P) / (ni * nj) : 0.0;
    }
  // Significant filters, then the assignment among their candidates only.
  double smax = 0;
  for (double s : cand.strength) smax = std::max(smax, s);
  std::vector<char> significant(cand.strength.size(), 0);
  for (size_t f = 0; f < cand.strength.size(); ++f)
    if (smax > 0 && cand.strength[f] > opt.spurious_frac * smax) {
      significant[f] = 1;
      ++out.significant;
    }
  std::vector<int64_t> rows;
  for (int64_t i = 0; i < N; ++i)
    if (significant[size_t(cand.filter[size_t(i)])]) rows.push_back(i);
  std::vector<double> sub(rows.size() * size_t(J));
  for (size_t r = 0; r < rows.size(); ++r)
    for (int64_t j = 0; j < J; ++j) sub[r * size_t(J) + size_t(j)] = sim[rows[r] * J + j];
  const Assignment a = hungarian_maximize(sub, int(rows.size()), int(J));

  out.per_subunit.assign(size_t(J), SubunitMatch());
  for (auto& m : out.per_subunit) m.centroid_error = m.temporal_cc = kNaN;
  std::vector<char> filter_recovered(cand.strength.size(), 0);
  for (size_t r = 0; r < rows.size(); ++r) {
    const int j = a.row_to_col[r];
    if (j < 0) continue;
    const int64_t i = rows[r];
    SubunitMatch& m = out.per_subunit[size_t(j)];
    m.candidate = int(i);
    m.filter = cand.filter[size_t(i)];
    m.cosine = sim[i * J + j];
    m.recovered = m.cosine >= opt.cosine_threshold;
    if (m.recovered) filter_recovered[size_t(m.filter)] = 1;
    const double sg = sign_of(i, j);
    std::vector<double> signed_map(&S[size_t(i * P)], &S[size_t(i * P)] + P);
    for (double& x : signed_map) x *= sg;
    const Region rc = region_of(signed_map.data(), H, W, opt.mask_frac);
    const Region rt = region_of(&M[size_t(j * P)], H, W, opt.mask_frac);
    int64_t inter = 0, uni = 0;
    for (int64_t q = 0; q < P; ++q) {
      inter += rc.in[size_t(q)] && rt.in[size_t(q)];
      uni += rc.in[size_t(q)] || rt.in[size_t(q)];
    }
    m.iou = uni > 0 ? double(inter) / double(uni) : 0.0;
    m.centroid_error = std::hypot(rc.cy - rt.cy, rc.cx - rt.cx);
    if (has_temporal) {
      std::vector<double> v(&Tv[size_t(i * C)], &Tv[size_t(i * C)] + C);
      for (double& x : v) x *= sg;
      m.temporal_cc = plain_pearson(v, kch[size_t(j)]);
    }
  }
  for (size_t f = 0; f < significant.size(); ++f)
    if (significant[f] && !filter_recovered[f]) out.spurious_filters.push_back(int(f));
  out.min_cosine = J > 0 ? std::numeric_limits<double>::infinity() : 0.0;
  for (auto& m : out.per_subunit) {
    const double c = m.candidate >= 0 ? m.cosine : 0.0;
    out.recovered += m.recovered;
    out.mean_cosine += c / double(J);
    out.min_cosine = std::min(out.min_cosine, c);
  }
  return out;
}

// ---- Conv-unit STAs -----------------------------------------------------------------------------

ConvStas conv_unit_stas(const std::function<Tensor(const Tensor&)>& activations, int64_t C,
                        int64_t H, int64_t W, const ConvStaOptions& opt) {
  const char* op = "conv_unit_stas";
  if (C < 1 || H < 1 || W < 1 || opt.n_samples < 1 || opt.batch < 1)
    throw DataError(concat(op, ": C, H, W, n_samples and batch must be >= 1"));
  const int64_t win = C * H * W;
  int64_t K = -1, oh = 0, ow = 0, kh = 0, kw = 0;
  std::vector<double> num, den, act_sum;  // num [K, npos, C*kh*kw], den [K, npos]
  for (int64_t b0 = 0; b0 < opt.n_samples; b0 += opt.batch) {
    const int64_t B = std::min(opt.batch, opt.n_samples - b0);
    Tensor x = Tensor::empty({B, C, H, W});
    float* xd = x.data<float>();
    for (int64_t e = 0; e < B * win; ++e) {  // element g of the probe stream
      const uint64_t g = uint64_t(b0 * win + e);
      xd[e] = opt.gaussian
                  ? float(opt.contrast * rng::normal(opt.seed, g))
                  : float((rng::bits(opt.seed, g, 0).v[0] >> 31) ? opt.contrast : -opt.contrast);
    }
    const Tensor y = activations(x);
    const bool ok = y.defined() && y.rank() == 4 && y.dim(0) == B && y.dim(2) <= H &&
                    y.dim(3) <= W && (K < 0 || (y.dim(1) == K && y.dim(2) == oh && y.dim(3) == ow));
    if (!ok)
      throw DataError(concat(op, ": activations returned ", y.str(), " for windows ", x.str(),
                             "; want [B, K, oh <= H, ow <= W], the same every batch"));
    if (K < 0) {
      K = y.dim(1), oh = y.dim(2), ow = y.dim(3), kh = H - oh + 1, kw = W - ow + 1;
      num.assign(size_t(K * oh * ow * C * kh * kw), 0.0);
      den.assign(size_t(K * oh * ow), 0.0);
      act_sum.assign(size_t(K), 0.0);
    }
    const auto yv = host_values(y, op, "activations");
    const int64_t npos = oh * ow, fsize = C * kh * kw;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t k = 0; k < K; ++k)
        for (int64_t p = 0; p < npos; ++p) {
          const double a = yv[size_t((b * K + k) * npos + p)];
          act_sum[size_t(k)] += a;
          if (a == 0) continue;
          den[size_t(k * npos + p)] += std::abs(a);
          double* acc = &num[size_t((k * npos + p) * fsize)];
          const float* xb = xd + b * win;
          const int64_t py = p / ow, px = p % ow;
          for (int64_t c = 0; c < C; ++c)
            for (int64_t yy = 0; yy < kh; ++yy)
              for (int64_t xx = 0; xx < kw; ++xx)
                acc[(c * kh + yy) * kw + xx] += a * xb[(c * H + py + yy) * W + px + xx];
        }
  }
  ConvStas out;
  out.sta = Tensor::zeros({K, C, kh, kw}, DType::F64);
  double* s = out.sta.data<double>();
  const int64_t npos = oh * ow, fsize = C * kh * kw;
  for (int64_t k = 0; k < K; ++k) {
    int64_t used = 0;
    for (int64_t p = 0; p < npos; ++p) used += den[size_t(k * npos + p)] > 0;
    for (int64_t p = 0; p < npos; ++p) {
      const double d = den[size_t(k * npos + p)];
      if (d <= 0) continue;
      for (int64_t e = 0; e < fsize; ++e)
        s[k * fsize + e] += num[size_t((k * npos + p) * fsize + e)] / d / double(used);
    }
    out.mean_activation.push_back(act_sum[size_t(k)] / double(opt.n_samples * npos));
  }
  return out;
}

}  // namespace dynsim::retina
