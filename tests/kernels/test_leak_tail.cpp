// The fused step tail (kernels/leak_tail.h) on the CPU: forward and backward bit for bit equal to
// the unfused ops (add in order, leak_forward, relu, supralinearity and their backwards) for 1-4
// terms, with and without h, tau [1] and [B], every rule, supralinearity off / n = 2 / n = 1.5,
// f32 and f64, both gradient write modes; outputs in place of inputs; f64 gradient checks; bad
// arguments named. CPU vs CUDA: test_cuda_leak_tail.cpp.
#include "tests/kernels/leak_tail_case.h"

using namespace dynsim;
using namespace dynsim::test;

namespace {

std::vector<LeakTailCaseCfg> all_configs(const Shape& shape) {
  std::vector<LeakTailCaseCfg> v;
  uint64_t seed = 1;
  for (LeakRule rule : {LeakRule::Euler, LeakRule::Rk4Frozen, LeakRule::Exp})
    for (int terms = 1; terms <= 4; ++terms)
      for (bool with_h : {true, false})
        for (bool per_sample : {false, true})
          for (double n : {0.0, 2.0, 1.5}) {
            LeakTailCaseCfg k;
            k.rule = rule, k.terms = terms, k.with_h = with_h, k.per_sample = per_sample;
            k.supra_n = n, k.shape = shape, k.seed = seed++;
            v.push_back(k);
          }
  return v;
}

struct Split {
  std::vector<Tensor> terms;
  Tensor h, tau;
};
Split split(const LeakTailCaseCfg& k, const std::vector<Tensor>& in) {
  Split s;
  s.terms.assign(in.begin(), in.begin() + k.terms);
  s.h = k.with_h ? in[size_t(k.terms)] : Tensor();
  s.tau = in[size_t(k.terms) + 1];
  return s;
}

// Forward and backward (grad_r and/or grad_x, both write modes) of one config against the chain.
void check_against_unfused(Context& ctx, const LeakTailCaseCfg& k, DType t) {
  const std::string tag = concat(leak_tail_case(k)(t).name, " (", dtype_name(t), ")");
  std::vector<Tensor> in = leak_tail_inputs(k, t);
  // An element where every input is 0 gives x = 0, the kink of relu: both agree there too.
  for (Tensor& v : in)
    if (v.shape() == k.shape) v.set(7, 0.0);
  const Split s = split(k, in);
  const LeakTailParams p = leak_tail_params(k);
  const LeakTailTerms terms = leak_tail_terms(in, k.terms);
  const Unfused want = unfused_forward(ctx, p, s.terms, s.h, s.tau);
  Tensor x = Tensor::empty(k.shape, t), r = Tensor::empty(k.shape, t);
  ops::leak_tail_forward(ctx, p, terms, s.h, s.tau, x, r);
  require_bits(x, want.x, tag + ": x");
  require_bits(r, want.r, tag + ": r");
  Tensor r_only = Tensor::empty(k.shape, t);  // x not wanted
  ops::leak_tail_forward(ctx, p, terms, s.h, s.tau, Tensor(), r_only);
  require_bits(r_only, want.r, tag + ": r without x");

  const Tensor grad_r = random_uniform(k.shape, -1, 1, k.seed + 7000, t);
  const Tensor grad_x = random_uniform(k.shape, -1, 1, k.seed + 8000, t);
  for (GradMode m : {GradMode::Overwrite, GradMode::Accumulate})
    for (int which = 0; which < 3; ++which) {  // grad_r and grad_x, grad_r alone, grad_x alone
      const Tensor gr = which == 2 ? Tensor() : grad_r, gx = which == 1 ? Tensor() : grad_x;
      auto prior = [&](const Shape& sh, uint64_t seed) {
        return m == GradMode::Accumulate ? random_uniform(sh, -1, 1, seed, t) : Tensor::zeros(sh, t);
      };
      Tensor gu[2], gh[2], gt[2];
      for (int j = 0; j < 2; ++j) {
        gu[j] = prior(k.shape, 9001), gh[j] = prior(k.shape, 9002);
        gt[j] = prior(s.tau.shape(), 9003);
      }
      unfused_backward(ctx, p, want, gr, gx, s.h, s.tau, gu[0], gh[0], gt[0], m);
      ops::leak_tail_backward(ctx, p, gr, gx, terms, s.h, s.tau, gu[1], gh[1], gt[1], m);
      const std::string bt = concat(tag, m == GradMode::Accumulate ? " accumulate" : "",
                                    which == 0 ? " grad_r + grad_x" : which == 1 ? " grad_r" : " grad_x");
      require_bits(gu[1], gu[0], bt + ": grad_u");
      require_bits(gh[1], gh[0], bt + ": grad_h");
      require_bits(gt[1], gt[0], bt + ": grad_tau");
    }
}

}  // namespace

TEST_CASE("leak_tail: forward and backward equal the unfused ops bit for bit (f32, f64)") {
  Context ctx;
  int checked = 0;
  for (DType t : {DType::F32, DType::F64})
    for (const LeakTailCaseCfg& k : all_configs(Shape{3, 2, 4, 5})) {
      check_against_unfused(ctx, k, t);
      ++checked;
    }
  CHECK(checked == 2 * 3 * 4 * 2 * 2 * 3);
}

TEST_CASE("leak_tail: large tensors (several runs per sample, split over threads) too") {
  ContextOptions o;
  o.threads = 2;
  Context ctx(o);
  for (DType t : {DType::F32, DType::F64})
    for (LeakRule rule : {LeakRule::Euler, LeakRule::Exp}) {
      LeakTailCaseCfg k;
      k.rule = rule, k.terms = 3, k.per_sample = rule == LeakRule::Euler, k.supra_n = 2.0;
      k.shape = Shape{2, 3, 100, 100};  // 30,000 elements per sample: two runs of <= 16,384
      check_against_unfused(ctx, k, t);
    }
}

TEST_CASE("leak_tail: the drive is summed left to right in the tensors' dtype") {
  // f32: (1e8 + -1e8) + 1 = 1, but 1e8 + (-1e8 + 1) = 0 and 1 + -1e8 rounds away the 1.
  Context ctx;
  Tensor a = Tensor::from({1, 1}, {1e8}), b = Tensor::from({1, 1}, {-1e8}),
         c = Tensor::from({1, 1}, {1.0}), tau = Tensor::from({1}, {1.0});
  Tensor x = Tensor::empty({1, 1}), r = Tensor::empty({1, 1});
  LeakTailParams p;
  p.dt = 1.0;  // euler without h: x = (1 / tau) dt u = u
  ops::leak_tail_forward(ctx, p, {a, b, c}, Tensor(), tau, x, r);
  CHECK(x.item(0) == 1.0);
  ops::leak_tail_forward(ctx, p, {c, b, a}, Tensor(), tau, x, r);
  CHECK(x.item(0) == 0.0);
}

TEST_CASE("leak_tail: f64 gradient checks of every term, h and tau") {
  int64_t elements = 0;
  uint64_t seed = 300;
  for (LeakRule rule : {LeakRule::Euler, LeakRule::Rk4Frozen, LeakRule::Exp})
    for (bool with_h : {true, false})
      for (bool per_sample : {false, true})
        for (double n : {0.0, 2.0}) {
          LeakTailCaseCfg k;
          k.rule = rule, k.with_h = with_h, k.per_sample = per_sample, k.supra_n = n;
          k.terms = per_sample ? 3 : 1;
          k.seed = seed++;
          elements += check_gradients(leak_tail_case(k)).elements;
        }
  CHECK(elements > 0);
}

TEST_CASE("leak_tail: outputs may be the very same tensors as inputs, never overlap them") {
  Context ctx;
  LeakTailCaseCfg k;
  k.terms = 3, k.supra_n = 2.0, k.per_sample = true;
  const std::vector<Tensor> in = leak_tail_inputs(k, DType::F32);
  const LeakTailParams p = leak_tail_params(k);
  const Tensor &h = in[3], &tau = in[4];
  Tensor x = Tensor::empty(k.shape), r = Tensor::empty(k.shape);
  ops::leak_tail_forward(ctx, p, leak_tail_terms(in, 3), h, tau, x, r);
  {  // r written over h, x over terms[1]
    Tensor h2 = h.clone(), t1 = in[1].clone();
    ops::leak_tail_forward(ctx, p, {in[0], t1, in[2]}, h2, tau, t1, h2);
    require_bits(h2, r, "r in place of h");
    require_bits(t1, x, "x in place of terms[1]");
  }
  const Tensor gr = random_uniform(k.shape, -1, 1, 5, DType::F32);
  const Tensor gx = random_uniform(k.shape, -1, 1, 6, DType::F32);
  Tensor gu = Tensor::empty(k.shape), gh = Tensor::empty(k.shape), gt = Tensor::empty({3});
  ops::leak_tail_backward(ctx, p, gr, gx, leak_tail_terms(in, 3), h, tau, gu, gh, gt,
                          GradMode::Overwrite);
  {  // grad_u written over grad_r, grad_h over grad_x, accumulating
    Tensor gr2 = gr.clone(), gx2 = gx.clone();
    ops::leak_tail_backward(ctx, p, gr2, gx2, leak_tail_terms(in, 3), h, tau, gr2, gx2, Tensor(),
                            GradMode::Accumulate);
    for (int64_t i = 0; i < gu.numel(); ++i) {
      CHECK(gr2.item(i) == float(float(gr.item(i)) + float(gu.item(i))));
      CHECK(gx2.item(i) == float(float(gx.item(i)) + float(gh.item(i))));
    }
  }
  // Views of one storage that overlap without being the same tensor are refused.
  Tensor big = Tensor::zeros({4, 2, 4, 5});
  Tensor lo = big.slice(0, 3), hi = big.slice(1, 4);
  CHECK_THROWS_WITH_AS(ops::leak_tail_forward(ctx, p, {in[0]}, lo, tau, Tensor(), hi),
                       doctest::Contains("leak_tail_forward: r f32[3,2,4,5]@cpu partly overlaps h"),
                       DataError);
  CHECK_THROWS_WITH_AS(ops::leak_tail_forward(ctx, p, {in[0]}, h, tau, x, x),
                       doctest::Contains("leak_tail_forward: x f32[3,2,4,5]@cpu and r"), DataError);
  CHECK_THROWS_WITH_AS(ops::leak_tail_backward(ctx, p, gr, Tensor(), {in[0]}, h, tau, gu, gu,
                                               Tensor(), GradMode::Overwrite),
                       doctest::Contains("leak_tail_backward: grad_u f32[3,2,4,5]@cpu and grad_h"),
                       DataError);
  Tensor flat = Tensor::zeros({3 * 40 + 3});
  CHECK_THROWS_WITH_AS(ops::leak_tail_backward(ctx, p, gr, Tensor(), {in[0]}, h, tau,
                                               flat.slice(0, 120).view(k.shape), Tensor(),
                                               flat.slice(119, 122), GradMode::Overwrite),
                       doctest::Contains("leak_tail_backward: grad_tau"), DataError);
}

TEST_CASE("leak_tail: bad arguments name the op and the argument") {
  Context ctx;
  const Shape s{3, 2, 4, 5};
  Tensor u = Tensor::zeros(s), r = Tensor::zeros(s), tau = Tensor::from({1}, {2.0});
  LeakTailParams p;
  auto fwd = [&](const LeakTailTerms& terms, const Tensor& h, const Tensor& t, const Tensor& x,
                 const Tensor& out) { ops::leak_tail_forward(ctx, p, terms, h, t, x, out); };
  CHECK_THROWS_WITH_AS(fwd({}, Tensor(), tau, Tensor(), r),
                       doctest::Contains("leak_tail_forward: needs 1 to 8 drive terms, got 0"),
                       DataError);
  CHECK_THROWS_WITH_AS(fwd({u, u, u, u, u, u, u, u, u}, Tensor(), tau, Tensor(), r),
                       doctest::Contains("leak_tail_forward: needs 1 to 8 drive terms, got 9"),
                       DataError);
  const Tensor narrow = Tensor::zeros({3, 2, 4, 4}), ints = Tensor::zeros(s, DType::I32);
  CHECK_THROWS_WITH_AS(fwd({u, narrow}, Tensor(), tau, Tensor(), r),
                       doctest::Contains("leak_tail_forward: terms[1] has shape [3,2,4,4]"),
                       DataError);
  CHECK_THROWS_WITH_AS(fwd({u}, Tensor::zeros(s, DType::F64), tau, Tensor(), r),
                       doctest::Contains("leak_tail_forward: h is f64[3,2,4,5]@cpu but the op runs on"),
                       DataError);
  CHECK_THROWS_WITH_AS(fwd({u}, Tensor(), Tensor::from({2}, {1, 2}), Tensor(), r),
                       doctest::Contains("leak_tail_forward: tau must have 1 or 3 elements"),
                       DataError);
  CHECK_THROWS_WITH_AS(fwd({u}, Tensor(), tau, Tensor(), Tensor()),
                       doctest::Contains("leak_tail_forward: r is undefined"), DataError);
  CHECK_THROWS_WITH_AS(fwd({ints}, Tensor(), tau, Tensor(), r),
                       doctest::Contains("leak_tail_forward: needs f32 or f64"), DataError);
  p.supralinear = true;
  p.supra.k = 0;
  CHECK_THROWS_WITH_AS(fwd({u}, Tensor(), tau, Tensor(), r),
                       doctest::Contains("leak_tail_forward: supralinearity needs finite n, finite k > 0"),
                       DataError);
  p = LeakTailParams();
  auto bwd = [&](const Tensor& gr, const Tensor& gx, const Tensor& gt) {
    ops::leak_tail_backward(ctx, p, gr, gx, {u}, Tensor(), tau, r, Tensor(), gt,
                            GradMode::Overwrite);
  };
  CHECK_THROWS_WITH_AS(bwd(Tensor(), Tensor(), Tensor()),
                       doctest::Contains("leak_tail_backward: needs grad_r or grad_x"), DataError);
  CHECK_THROWS_WITH_AS(bwd(Tensor::zeros({3, 2, 4}), Tensor(), Tensor()),
                       doctest::Contains("leak_tail_backward: grad_r has shape [3,2,4]"),
                       DataError);
  CHECK_THROWS_WITH_AS(bwd(u, Tensor(), Tensor::zeros({3})),
                       doctest::Contains("leak_tail_backward: grad_tau has shape [3]"), DataError);
  const Tensor none;
  CHECK_THROWS_WITH_AS(fwd({none}, Tensor(), tau, Tensor(), r),
                       doctest::Contains("leak_tail_forward: terms[0] is undefined"), DataError);
  const Tensor scalar = Tensor::from({}, {1.0});
  CHECK_THROWS_WITH_AS(ops::leak_tail_forward(ctx, p, {scalar}, Tensor(), tau, Tensor(), scalar),
                       doctest::Contains("leak_tail_forward: terms[0] needs a batch dimension"),
                       DataError);
}
