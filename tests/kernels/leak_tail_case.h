// The fused step tail (kernels/leak_tail.h) as an OpCase, shared by test_leak_tail.cpp (f64
// gradient checks) and test_cuda_leak_tail.cpp (CPU vs CUDA): inputs terms[0..n), h, tau; outputs
// x and r, so the harness's random output gradients reach x both through r (grad_r) and directly
// (grad_x). Every term's gradient is grad_u: the backward runs once per term, grad_h and grad_tau
// only the first time. Also the unfused ops (the reference) and a bytewise comparison.
#pragma once
#include <cstdio>
#include <cstring>
#include <string>

#include "kernels/dispatch.h"
#include "tests/harness.h"

namespace dynsim::test {

struct LeakTailCaseCfg {
  LeakRule rule = LeakRule::Euler;
  bool with_h = true;
  bool per_sample = false;  // tau [B] instead of [1]
  int terms = 2;
  double supra_n = 0;  // 0: no supralinearity
  Shape shape{3, 2, 4, 5};
  uint64_t seed = 1;
};

inline LeakTailParams leak_tail_params(const LeakTailCaseCfg& k) {
  LeakTailParams p;
  p.rule = k.rule;
  p.dt = 1.7;
  p.supralinear = k.supra_n != 0;
  p.supra.n = k.supra_n;
  return p;
}

// Terms and h in [-2, 2) / [-1, 1), so that x has both signs; tau 3, 5, 9, ... per sample or 4.
inline std::vector<Tensor> leak_tail_inputs(const LeakTailCaseCfg& k, DType t) {
  std::vector<Tensor> in;
  for (int j = 0; j < k.terms; ++j)
    in.push_back(random_uniform(k.shape, -2, 2, k.seed * 101 + uint64_t(j), t));
  in.push_back(random_uniform(k.shape, -1, 1, k.seed * 101 + 50, t));
  const int64_t B = k.shape[0];
  std::vector<double> taus;
  for (int64_t b = 0; b < B; ++b) taus.push_back(3.0 + 2.0 * double(b % 4) + 0.25 * double(b / 4));
  in.push_back(k.per_sample ? Tensor::from(Shape{B}, taus, t) : Tensor::from(Shape{1}, {4.0}, t));
  return in;
}

inline LeakTailTerms leak_tail_terms(const std::vector<Tensor>& in, int n) {
  LeakTailTerms terms;
  for (int j = 0; j < n; ++j) terms.push(in[size_t(j)]);
  return terms;
}

inline CaseBuilder leak_tail_case(const LeakTailCaseCfg& k) {
  return [k](DType t) {
    OpCase c;
    c.name = concat("leak_tail rule ", int(k.rule), ", ", k.terms, " term(s)",
                    k.with_h ? ", h" : ", no h", k.per_sample ? ", tau[B]" : ", tau[1]",
                    k.supra_n != 0 ? concat(", supralinearity n = ", k.supra_n) : std::string());
    for (int j = 0; j < k.terms; ++j) c.input_names.push_back(concat("terms[", j, "]"));
    c.input_names.push_back("h");
    c.input_names.push_back("tau");
    c.inputs = leak_tail_inputs(k, t);
    c.differentiable.assign(size_t(k.terms), true);
    c.differentiable.push_back(k.with_h);
    c.differentiable.push_back(true);
    const LeakTailParams p = leak_tail_params(k);
    const int n = k.terms;
    const bool with_h = k.with_h;
    c.forward = [=](Context& ctx, const std::vector<Tensor>& in) {
      Tensor x = ctx.empty(in[0].shape(), in[0].dtype()), r = ctx.empty(in[0].shape(), in[0].dtype());
      ops::leak_tail_forward(ctx, p, leak_tail_terms(in, n), with_h ? in[size_t(n)] : Tensor(),
                             in[size_t(n) + 1], x, r);
      return std::vector<Tensor>{x, r};
    };
    c.backward = [=](Context& ctx, const std::vector<Tensor>& in, const std::vector<Tensor>& gout,
                     const std::vector<Tensor>& g, GradMode m) {
      const Tensor h = with_h ? in[size_t(n)] : Tensor();
      for (int j = 0; j < n; ++j)
        ops::leak_tail_backward(ctx, p, gout[1], gout[0], leak_tail_terms(in, n), h,
                                in[size_t(n) + 1], g[size_t(j)],
                                j == 0 ? g[size_t(n)] : Tensor(),
                                j == 0 ? g[size_t(n) + 1] : Tensor(), m);
    };
    return c;
  };
}

// A value with every digit (and its exact hex form): values that differ in the last bit differ here.
inline std::string hex17(double v) {
  char b[64];
  std::snprintf(b, sizeof b, "%.17g (%a)", v, v);
  return b;
}

// Same dtype, shape and bytes (host tensors; -0 vs +0 and NaN payloads count as differences).
inline void require_bits(const Tensor& got, const Tensor& want, const std::string& what) {
  REQUIRE_MESSAGE(got.dtype() == want.dtype(), what, ": dtype");
  REQUIRE_MESSAGE(got.shape() == want.shape(), what, ": shape ", got.shape().str(), " vs ",
                  want.shape().str());
  const size_t es = dtype_size(got.dtype());
  const auto *a = static_cast<const char*>(got.raw()), *b = static_cast<const char*>(want.raw());
  for (int64_t i = 0; i < got.numel(); ++i)
    if (std::memcmp(a + size_t(i) * es, b + size_t(i) * es, es) != 0)
      FAIL(what, ": element ", i, " is ", hex17(got.item(i)), ", expected ", hex17(want.item(i)));
}

// The unfused ops as the scheduler and the reverse sweep run them today, on ctx's device (the
// copy stands in for the scheduler's first term written into the drive).
struct Unfused {
  Tensor u, x, relu, r;
};
inline Unfused unfused_forward(Context& ctx, const LeakTailParams& p,
                               const std::vector<Tensor>& terms, const Tensor& h,
                               const Tensor& tau) {
  Unfused f;
  f.u = ctx.empty(terms[0].shape(), terms[0].dtype());
  ctx.copy(f.u, terms[0]);
  for (size_t k = 1; k < terms.size(); ++k) ops::add(ctx, f.u, terms[k], f.u);
  f.x = ctx.empty(f.u.shape(), f.u.dtype());
  ops::leak_forward(ctx, LeakParams{p.rule, p.dt}, f.u, h, tau, f.x);
  f.relu = ctx.empty(f.u.shape(), f.u.dtype());
  ops::relu_forward(ctx, f.x, f.relu);
  f.r = ctx.empty(f.u.shape(), f.u.dtype());
  ctx.copy(f.r, f.relu);
  if (p.supralinear) ops::supralinearity_forward(ctx, p.supra, f.r, f.r);
  return f;
}
// grad_r through supralinearity and relu, plus grad_x, then leak_backward.
inline void unfused_backward(Context& ctx, const LeakTailParams& p, const Unfused& f,
                             const Tensor& grad_r, const Tensor& grad_x, const Tensor& h,
                             const Tensor& tau, const Tensor& gu, const Tensor& gh,
                             const Tensor& gt, GradMode m) {
  Tensor g = grad_x;
  if (grad_r.defined()) {
    Tensor gs = grad_r;
    if (p.supralinear) {
      gs = ctx.empty(f.u.shape(), f.u.dtype());
      ops::supralinearity_backward(ctx, p.supra, grad_r, f.relu, gs, GradMode::Overwrite);
    }
    g = ctx.empty(f.u.shape(), f.u.dtype());
    ops::relu_backward(ctx, f.x, gs, g, GradMode::Overwrite);
    if (grad_x.defined()) ops::axpy(ctx, 1.0, grad_x, g);
  }
  ops::leak_backward(ctx, LeakParams{p.rule, p.dt}, g, f.u, h, tau, gu, gh, gt, m);
}

}  // namespace dynsim::test
