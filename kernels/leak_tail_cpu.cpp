// CPU twin of the fused step tail (kernels/leak_tail.h), and the argument checks both twins share.
// Forward: one pass, split into runs of at most kRun elements within a sample, over the context's
// threads, each run in L1-sized tiles. Backward: one pass; with grad_tau each sample is one run
// summed in index order in double (leak_backward's order: the same bits), else as the forward.
#include <algorithm>
#include <cmath>
#include <string>
#include <type_traits>

#include "kernels/leak_tail.h"

namespace dynsim {
namespace {

// Do a and b share any byte? (Only tensors viewing one storage can.)
bool overlap(const Tensor& a, const Tensor& b) {
  if (!a.defined() || !b.defined() || !a.same_storage(b) || a.numel() == 0 || b.numel() == 0)
    return false;
  const auto pa = reinterpret_cast<uintptr_t>(a.raw()), pb = reinterpret_cast<uintptr_t>(b.raw());
  return pa < pb + b.nbytes() && pb < pa + a.nbytes();
}

// An output of an elementwise pass may be exactly an input (same first element, same shape),
// never partly overlap it.
void check_alias(const char* op, const char* out_role, const Tensor& out, const std::string& in_role,
                 const Tensor& in) {
  if (overlap(out, in) && (out.raw() != in.raw() || out.shape() != in.shape()))
    throw DataError(concat(op, ": ", out_role, " ", out.str(), " partly overlaps ", in_role, " ",
                           in.str(), " (an output may only be the very same tensor as an input)"));
}
void check_disjoint(const char* op, const char* a_role, const Tensor& a, const char* b_role,
                    const Tensor& b) {
  if (overlap(a, b))
    throw DataError(concat(op, ": ", a_role, " ", a.str(), " and ", b_role, " ", b.str(),
                           " share memory"));
}

std::string term_role(int k) { return concat("terms[", k, "]"); }

// The checks of terms, h and tau common to forward and backward.
LeakTailLayout check_inputs(const char* op, const LeakTailParams& p, const LeakTailTerms& terms,
                            const Tensor& h, const Tensor& tau) {
  const Tensor& u0 = leak_tail_first_term(op, terms);
  if (u0.rank() < 1)
    throw DataError(concat(op, ": terms[0] needs a batch dimension, got ", u0.str()));
  for (int k = 1; k < terms.size(); ++k)
    check_arg(op, term_role(k).c_str(), terms[k], u0, u0.shape());
  if (h.defined()) check_arg(op, "h", h, u0, u0.shape());
  LeakTailLayout l;
  l.n = u0.numel();
  l.batch = u0.dim(0);
  l.per = l.batch ? l.n / l.batch : 0;
  if (!tau.defined() || (tau.numel() != 1 && tau.numel() != l.batch))
    throw DataError(concat(op, ": tau must have 1 or ", l.batch, " elements, got ",
                           tau.defined() ? tau.str() : std::string("undefined")));
  if (u0.dtype() == DType::BF16) {  // bf16 storage: tau stays f32 (engine/dynamics/scheduler.h)
    if (tau.dtype() != DType::F32 || tau.device() != u0.device() ||
        tau.device_index() != u0.device_index())
      throw DataError(concat(op, ": with bf16 terms tau must be f32 on their device, got ",
                             tau.str()));
  } else {
    check_same(op, "tau", tau, u0);
  }
  l.per_sample_tau = tau.numel() == l.batch && l.batch > 1;
  if (!std::isfinite(p.dt))
    throw DataError(concat(op, ": dt must be finite, got ", p.dt));
  const SupralinearityParams& s = p.supra;
  if (p.supralinear &&
      (!std::isfinite(s.n) || !(s.k > 0) || !std::isfinite(s.k) || !(s.clamp > 0)))
    throw DataError(concat(op, ": supralinearity needs finite n, finite k > 0 and clamp > 0, got n = ",
                           s.n, ", k = ", s.k, ", clamp = ", s.clamp));
  return l;
}

// Each elementwise output against every input and tau.
void check_output_aliases(const char* op, const char* role, const Tensor& out,
                          const LeakTailTerms& terms, const Tensor& h, const Tensor& tau) {
  for (int k = 0; k < terms.size(); ++k) check_alias(op, role, out, term_role(k), terms[k]);
  check_alias(op, role, out, "h", h);
  check_disjoint(op, role, out, "tau", tau);
}

}  // namespace

const Tensor& leak_tail_first_term(const char* op, const LeakTailTerms& terms) {
  if (terms.size() < 1 || terms.size() > LeakTailTerms::kMax)
    throw DataError(concat(op, ": needs 1 to ", LeakTailTerms::kMax, " drive terms, got ",
                           terms.size()));
  if (!terms[0].defined()) throw DataError(concat(op, ": terms[0] is undefined"));
  return terms[0];
}

LeakTailLayout check_leak_tail_forward(const char* op, const LeakTailParams& p,
                                       const LeakTailTerms& terms, const Tensor& h,
                                       const Tensor& tau, const Tensor& x, const Tensor& r) {
  const LeakTailLayout l = check_inputs(op, p, terms, h, tau);
  const Tensor& u0 = terms[0];
  check_arg(op, "r", r, u0, u0.shape());
  if (x.defined()) check_arg(op, "x", x, u0, u0.shape());
  check_output_aliases(op, "r", r, terms, h, tau);
  check_output_aliases(op, "x", x, terms, h, tau);
  check_disjoint(op, "x", x, "r", r);
  return l;
}

LeakTailLayout check_leak_tail_backward(const char* op, const LeakTailParams& p,
                                        const Tensor& grad_r, const Tensor& grad_x,
                                        const LeakTailTerms& terms, const Tensor& h,
                                        const Tensor& tau, const Tensor& grad_u,
                                        const Tensor& grad_h, const Tensor& grad_tau) {
  const LeakTailLayout l = check_inputs(op, p, terms, h, tau);
  const Tensor& u0 = terms[0];
  if (!grad_r.defined() && !grad_x.defined())
    throw DataError(concat(op, ": needs grad_r or grad_x (both are undefined)"));
  if (grad_r.defined()) check_arg(op, "grad_r", grad_r, u0, u0.shape());
  if (grad_x.defined()) check_arg(op, "grad_x", grad_x, u0, u0.shape());
  if (grad_u.defined()) check_arg(op, "grad_u", grad_u, u0, u0.shape());
  const Tensor gh = h.defined() ? grad_h : Tensor();  // ignored without h
  if (gh.defined()) check_arg(op, "grad_h", gh, u0, u0.shape());
  if (grad_tau.defined()) check_arg(op, "grad_tau", grad_tau, tau, tau.shape());
  for (const auto& [role, out] : {std::pair<const char*, const Tensor*>{"grad_u", &grad_u},
                                  std::pair<const char*, const Tensor*>{"grad_h", &gh}}) {
    check_output_aliases(op, role, *out, terms, h, tau);
    check_alias(op, role, *out, "grad_r", grad_r);
    check_alias(op, role, *out, "grad_x", grad_x);
  }
  check_disjoint(op, "grad_u", grad_u, "grad_h", gh);
  // grad_tau is written after (CUDA: while) elements are read: it may share memory with nothing.
  for (int k = 0; k < terms.size(); ++k)
    check_disjoint(op, "grad_tau", grad_tau, term_role(k).c_str(), terms[k]);
  check_disjoint(op, "grad_tau", grad_tau, "h", h);
  check_disjoint(op, "grad_tau", grad_tau, "tau", tau);
  check_disjoint(op, "grad_tau", grad_tau, "grad_r", grad_r);
  check_disjoint(op, "grad_tau", grad_tau, "grad_x", grad_x);
  check_disjoint(op, "grad_tau", grad_tau, "grad_u", grad_u);
  check_disjoint(op, "grad_tau", grad_tau, "grad_h", gh);
  return l;
}

namespace cpu {
namespace {

constexpr int64_t kRun = 1 << 14;

// f(b, lo, hi) for the runs [lo, hi) of at most `run` elements that tile each sample b's elements
// [b per, (b + 1) per); runs are spread over the context's threads (static split) when worth it.
template <class F>
void for_each_run(const Context& c, const LeakTailLayout& l, int64_t run, F&& f) {
  if (l.n == 0) return;
  const int64_t runs = (l.per + run - 1) / run, jobs = l.batch * runs;
  const bool parallel = l.n >= kParallelMin && c.threads() > 1 && jobs > 1;
#pragma omp parallel for num_threads(c.threads()) schedule(static) if (parallel)
  for (int64_t j = 0; j < jobs; ++j) {
    const int64_t b = j / runs, lo = b * l.per + (j % runs) * run;
    f(b, lo, std::min(lo + run, (b + 1) * l.per));
  }
}


// A run is processed in tiles of kTile elements, stage by stage (drive sum, leak step, rate):
// each stage is a plain loop the compiler vectorises like the unfused ops', the tile's buffers
// stay in L1, and memory is still read and written once. Per element the stages do exactly the
// scalar math of kernels/leak_tail_math.h, so the bits do not depend on the tiling.
constexpr int64_t kTile = 512;

// The drive of tile [t0, t0 + m): terms[0] itself for one term, else the sum in buf.
template <class T>
const T* tile_drive(const LeakTailTermPtrs<T>& u, int64_t t0, int64_t m, T* buf) {
  if (u.n == 1) return u.p[0] + t0;
  const T *a = u.p[0] + t0, *b = u.p[1] + t0;
  for (int64_t j = 0; j < m; ++j) buf[j] = a[j] + b[j];
  for (int k = 2; k < u.n; ++k) {
    const T* c = u.p[k] + t0;
    for (int64_t j = 0; j < m; ++j) buf[j] = buf[j] + c[j];
  }
  return buf;
}

// x = leak_step(u, h) over a tile; h null: no previous state. The rule is a template argument so
// that its branches fold away (u, h and x may be the very same memory).
template <class T, LeakRule R>
void tile_state(const T* u, const T* h, T tau, double dt, int64_t m, T* x) {
  if (h)
    for (int64_t j = 0; j < m; ++j) x[j] = leak_step<T>(R, u[j], h[j], true, tau, dt);
  else
    for (int64_t j = 0; j < m; ++j) x[j] = leak_step<T>(R, u[j], T(0), false, tau, dt);
}

template <class T>
void tile_rate(const T* x, const LeakTailSupra<T>& s, int64_t m, T* r) {
  if (s.on) {
    for (int64_t j = 0; j < m; ++j) r[j] = leak_tail_rate(x[j], s);
  } else {
    const LeakTailSupra<T> relu_only{false, T(0), T(0), T(0)};
    for (int64_t j = 0; j < m; ++j) r[j] = leak_tail_rate(x[j], relu_only);
  }
}

template <class T>
struct ForwardArgs {
  LeakTailTermPtrs<T> u;
  LeakTailSupra<T> s;
  const T* h;
  T* x;  // null: not wanted
  T* r;
  double dt;
};

template <class T, LeakRule R>
void forward_run(const ForwardArgs<T>& a, T tau, int64_t lo, int64_t hi) {
  T ubuf[kTile], xbuf[kTile];
  for (int64_t t0 = lo; t0 < hi; t0 += kTile) {
    const int64_t m = std::min(kTile, hi - t0);
    const T* u = tile_drive(a.u, t0, m, ubuf);
    T* x = a.x ? a.x + t0 : xbuf;
    tile_state<T, R>(u, a.h ? a.h + t0 : nullptr, tau, a.dt, m, x);
    tile_rate(x, a.s, m, a.r + t0);
  }
}

// The leak step's gradients over a tile: grad_u, grad_h (written or added) and the grad_tau terms
// tt. Every flag is a template argument so that the loop has no branches and vectorises; element
// j is read before it is written (gu or gh may be the very same memory as g, u or h).
template <class T, LeakRule R, bool kHasH, bool kGu, bool kGh, bool kAcc>
void tile_grads(const T* g, const T* u, const T* h, T tau, double dt, int64_t m, T* gu, T* gh,
                double* tt) {
  for (int64_t j = 0; j < m; ++j) {
    const T gj = g[j], uj = u[j], hj = kHasH ? h[j] : T(0);
    const LeakGrad<T> d = leak_step_grad<T>(R, uj, hj, kHasH, tau, dt);
    if constexpr (kGu) gu[j] = kAcc ? T(gu[j] + T(gj * d.du)) : T(gj * d.du);
    if constexpr (kGh) gh[j] = kAcc ? T(gh[j] + T(gj * d.dh)) : T(gj * d.dh);
    tt[j] = double(gj) * double(d.dtau);
  }
}

// Calls f with std::bool_constant arguments for the four flags (kGh only with kHasH).
template <class F>
void with_flags(bool has_h, bool gu, bool gh, bool acc, F&& f) {
  auto b = [](bool v, auto&& g) {
    if (v) return g(std::true_type{});
    return g(std::false_type{});
  };
  b(has_h, [&](auto kh) {
    b(gu, [&](auto ku) {
      b(gh && has_h, [&](auto kg) {
        if constexpr (kg.value && !kh.value) return;  // grad_h needs h
        else b(acc, [&](auto ka) { f(kh, ku, kg, ka); });
      });
    });
  });
}

template <class T>
struct BackwardArgs {
  LeakTailTermPtrs<T> u;
  LeakTailSupra<T> s;
  const T *h, *gr, *gx;  // gr or gx may be null, not both
  T *gu, *gh;            // null: not wanted
  double dt;
  GradMode mode;
};

// The elementwise gradients of [lo, hi); returns the sum of the grad_tau terms in index order.
template <class T, LeakRule R>
double backward_run(const BackwardArgs<T>& a, T tau, int64_t lo, int64_t hi, bool want_tau) {
  T ubuf[kTile], xbuf[kTile], gbuf[kTile];
  double tbuf[kTile];
  const LeakTailSupra<T> relu_only{false, T(0), T(0), T(0)};
  const bool has_h = a.h != nullptr;
  double acc = 0;
  for (int64_t t0 = lo; t0 < hi; t0 += kTile) {
    const int64_t m = std::min(kTile, hi - t0);
    const T* u = tile_drive(a.u, t0, m, ubuf);
    const T* h = has_h ? a.h + t0 : nullptr;
    // g = dL/dx: dL/dr through relu and S (x recomputed for them), plus dL/dx arriving directly.
    const T* g = gbuf;
    if (a.gr) {
      tile_state<T, R>(u, h, tau, a.dt, m, xbuf);
      const T* gr = a.gr + t0;
      if (a.s.on)
        for (int64_t j = 0; j < m; ++j) gbuf[j] = leak_tail_rate_grad(xbuf[j], gr[j], a.s);
      else
        for (int64_t j = 0; j < m; ++j) gbuf[j] = leak_tail_rate_grad(xbuf[j], gr[j], relu_only);
      if (a.gx) {
        const T* gx = a.gx + t0;
        for (int64_t j = 0; j < m; ++j) gbuf[j] = gbuf[j] + gx[j];
      }
    } else {
      g = a.gx + t0;
    }
    T* gu = a.gu ? a.gu + t0 : nullptr;
    T* gh = a.gh ? a.gh + t0 : nullptr;
    with_flags(has_h, gu != nullptr, gh != nullptr, a.mode == GradMode::Accumulate,
               [&](auto kh, auto ku, auto kg, auto ka) {
                 tile_grads<T, R, kh.value, ku.value, kg.value, ka.value>(g, u, h, tau, a.dt, m,
                                                                          gu, gh, tbuf);
               });
    if (want_tau)
      for (int64_t j = 0; j < m; ++j) acc += tbuf[j];
  }
  return acc;
}

// Calls f(std::integral_constant<LeakRule, rule>{}).
template <class F>
void with_rule(LeakRule rule, F&& f) {
  switch (rule) {
    case LeakRule::Euler:
      return f(std::integral_constant<LeakRule, LeakRule::Euler>{});
    case LeakRule::Rk4Frozen:
      return f(std::integral_constant<LeakRule, LeakRule::Rk4Frozen>{});
    case LeakRule::Exp:
      return f(std::integral_constant<LeakRule, LeakRule::Exp>{});
  }
  throw DataError(concat("leak_tail: unknown leak rule ", int(rule)));
}

}  // namespace

void leak_tail_forward(Context& c, const LeakTailParams& p, const LeakTailTerms& terms,
                       const Tensor& h, const Tensor& tau, const Tensor& x, const Tensor& r) {
  const char* op = "leak_tail_forward";
  with_float_type(op, leak_tail_first_term(op, terms), [&](auto t) {
    using T = decltype(t);
    const LeakTailLayout l = check_leak_tail_forward(op, p, terms, h, tau, x, r);
    const ForwardArgs<T> a{leak_tail_term_ptrs<T>(terms), leak_tail_supra<T>(p),
                           h.defined() ? h.data<T>() : nullptr,
                           x.defined() ? x.data<T>() : nullptr, r.data<T>(), p.dt};
    const T* ptau = tau.data<T>();
    with_rule(p.rule, [&](auto rule) {
      for_each_run(c, l, kRun, [&](int64_t b, int64_t lo, int64_t hi) {
        forward_run<T, decltype(rule)::value>(a, ptau[l.per_sample_tau ? b : 0], lo, hi);
      });
    });
  });
}

void leak_tail_backward(Context& c, const LeakTailParams& p, const Tensor& grad_r,
                        const Tensor& grad_x, const LeakTailTerms& terms, const Tensor& h,
                        const Tensor& tau, const Tensor& grad_u, const Tensor& grad_h,
                        const Tensor& grad_tau, GradMode m) {
  const char* op = "leak_tail_backward";
  with_float_type(op, leak_tail_first_term(op, terms), [&](auto t) {
    using T = decltype(t);
    const LeakTailLayout l =
        check_leak_tail_backward(op, p, grad_r, grad_x, terms, h, tau, grad_u, grad_h, grad_tau);
    const T* ph = h.defined() ? h.data<T>() : nullptr;
    const BackwardArgs<T> a{leak_tail_term_ptrs<T>(terms),
                            leak_tail_supra<T>(p),
                            ph,
                            grad_r.defined() ? grad_r.data<T>() : nullptr,
                            grad_x.defined() ? grad_x.data<T>() : nullptr,
                            grad_u.defined() ? grad_u.data<T>() : nullptr,
                            grad_h.defined() && ph ? grad_h.data<T>() : nullptr,
                            p.dt,
                            m};
    const T* ptau = tau.data<T>();
    // One run per sample when grad_tau is wanted: its terms are summed in index order.
    const bool want_tau = grad_tau.defined();
    double* sums = nullptr;
    if (want_tau) {
      sums = static_cast<double*>(
          c.scratch().get(size_t(std::max<int64_t>(l.batch, 1)) * sizeof(double)));
      std::fill(sums, sums + l.batch, 0.0);  // samples without elements sum to 0
    }
    with_rule(p.rule, [&](auto rule) {
      for_each_run(c, l, want_tau ? std::max<int64_t>(l.per, 1) : kRun,
                   [&](int64_t b, int64_t lo, int64_t hi) {
                     const double s = backward_run<T, decltype(rule)::value>(
                         a, ptau[l.per_sample_tau ? b : 0], lo, hi, want_tau);
                     if (want_tau) sums[b] = s;
                   });
    });
    if (want_tau) {
      // leak_backward's order: each sample's sum, then (one tau) the samples in order from 0.
      T* gt = grad_tau.data<T>();
      if (l.per_sample_tau) {
        for (int64_t b = 0; b < l.batch; ++b) write_grad(gt[b], T(0.0 + sums[b]), m);
      } else {
        double total = 0;
        for (int64_t b = 0; b < l.batch; ++b) total += sums[b];
        write_grad(gt[0], T(total), m);
      }
    }
  });
}

}  // namespace cpu
}  // namespace dynsim
