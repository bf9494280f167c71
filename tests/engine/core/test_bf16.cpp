// The bf16 storage precision: the rounding rules (engine/core/bf16.h) against an independent exact
// reference, ops::cast on the CPU, the f32 fallback of the ops (kernels/bf16_widen.h: aliasing,
// accumulating outputs, mixed f32/bf16 operands, no allocation after warm-up), repeated bf16
// frames, bf16 Scheduler runs against f32 runs of the same graph (every recorded value a bf16
// value, within bf16's precision of the f32 trajectory, tau kept f32), bf16 Bptt gradients
// against f32 ones, the writers. The gpu suite (Skipped without a device): cast CPU vs CUDA bit
// for bit over every bf16 pattern, the native conv / leak tail / max pool against the CPU
// reference, bf16 DyRCNNx4 trajectories and Bptt gradients on CUDA.
#include <cfenv>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "engine/autograd/bptt.h"
#include "engine/core/device.h"
#include "engine/dynamics/scheduler.h"
#include "engine/io/npy.h"
#include "engine/io/safetensors.h"
#include "kernels/dispatch.h"
#include "models/dyrcnn/dyrcnn.h"
#include "tests/engine/dynamics/scheduler_cases.h"
#include "tests/harness.h"

using namespace dynsim;
using namespace dynsim::test;

namespace {

// The bf16 value nearest to v (ties to even), by exact arithmetic on the double: v = m 2^e with
// m in [0.5, 1); m 2^8 rounded to an integer with the FPU's ties-to-even is the 8-bit
// significand. Normal range only (|v| in [2^-126, 2^127]); independent of engine/core/bf16.h.
double nearest_bf16(double v) {
  if (v == 0) return v;
  int e = 0;
  const double m = std::frexp(v, &e);
  std::fesetround(FE_TONEAREST);
  const double q = std::nearbyint(std::ldexp(m, 8));
  return std::ldexp(q, e - 8);
}

uint16_t bits_of(double v) { return bf16_from_f64(v).bits; }

Tensor bf16_tensor(const Tensor& f) { return f.to_dtype(DType::BF16); }

// Every element of an f32 tensor is a bf16 value (its low 16 bits are zero).
bool all_bf16_values(const Tensor& t) {
  REQUIRE(t.dtype() == DType::F32);
  const float* p = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i)
    if ((f32_bits(p[i]) & 0xffffu) != 0) return false;
  return true;
}

double max_abs(const Tensor& t) {
  double m = 0;
  for (int64_t i = 0; i < t.numel(); ++i) m = std::max(m, std::abs(t.item(i)));
  return m;
}

double max_diff(const Tensor& a, const Tensor& b) {
  REQUIRE(a.shape() == b.shape());
  double m = 0;
  for (int64_t i = 0; i < a.numel(); ++i) m = std::max(m, std::abs(a.item(i) - b.item(i)));
  return m;
}

// A bf16 run's gradient got against the f32 gradient want: both zero, or pointing the same way
// (cosine >= 0.99) with a norm within 10%.
void check_gradient_follows(const Tensor& want, const Tensor& got, const std::string& name) {
  REQUIRE(got.shape() == want.shape());
  double dot = 0, na = 0, nb = 0;
  for (int64_t i = 0; i < want.numel(); ++i) {
    dot += want.item(i) * got.item(i);
    na += want.item(i) * want.item(i);
    nb += got.item(i) * got.item(i);
  }
  if (na == 0) {
    CHECK_MESSAGE(nb == 0, name);
    return;
  }
  const double cosine = dot / std::sqrt(na * nb), ratio = std::sqrt(nb / na);
  CHECK_MESSAGE(cosine >= 0.99, name, ": cosine ", cosine);
  CHECK_MESSAGE(std::abs(ratio - 1) <= 0.1, name, ": norm ratio ", ratio);
}

}  // namespace

TEST_CASE("bf16: rounding to nearest even, specials, and f64 in one rounding") {
  CHECK(bf16_from_f32(1.0f).bits == 0x3f80);
  CHECK(bf16_from_f32(-0.0f).bits == 0x8000);
  // Ties: 1 + 2^-8 lies halfway between 0x3f80 and 0x3f81 (even: 0x3f80); 1 + 3 2^-8 between
  // 0x3f81 and 0x3f82 (even: 0x3f82); a hair above a tie rounds up.
  CHECK(bf16_from_f32(f32_from_bits(0x3f808000u)).bits == 0x3f80);
  CHECK(bf16_from_f32(f32_from_bits(0x3f818000u)).bits == 0x3f82);
  CHECK(bf16_from_f32(f32_from_bits(0x3f808001u)).bits == 0x3f81);
  CHECK(bf16_from_f32(f32_from_bits(0x3f807fffu)).bits == 0x3f80);
  CHECK(bf16_from_f32(INFINITY).bits == 0x7f80);
  CHECK(bf16_from_f32(-INFINITY).bits == 0xff80);
  CHECK(bf16_from_f32(std::numeric_limits<float>::max()).bits == 0x7f80);  // rounds past max
  const bf16 n = bf16_from_f32(f32_from_bits(0xff800001u));  // a signalling NaN, sign set
  CHECK(std::isnan(bf16_to_f32(n)));
  CHECK((n.bits & 0x8000) != 0);
  CHECK((n.bits & 0x0040) != 0);  // quiet
  CHECK(bf16_from_f32(f32_from_bits(0x00000001u)).bits == 0x0000);  // tiny subnormal: to 0
  // Widening is exact and narrowing it back gives the same bits, for every pattern but NaN.
  for (uint32_t b = 0; b < 0x10000u; ++b) {
    const float f = bf16_to_f32(bf16{uint16_t(b)});
    if (std::isnan(f)) continue;
    REQUIRE(f32_bits(f) == b << 16);
    REQUIRE(bf16_from_f32(f).bits == b);
  }
  // f64: 1 + 2^-8 + 2^-30 rounds to f32 as the tie 1 + 2^-8; rounding twice would give 1.
  CHECK(bits_of(1.0 + std::ldexp(1.0, -8) + std::ldexp(1.0, -30)) == 0x3f81);
  CHECK(bits_of(1.0 + std::ldexp(1.0, -8) - std::ldexp(1.0, -30)) == 0x3f80);
  CHECK(bits_of(1.0 + std::ldexp(1.0, -8)) == 0x3f80);
  CHECK(std::isnan(bf16_to_f32(bf16_from_f64(std::nan("")))));
  // Against the exact reference: random doubles and floats over many binades.
  std::mt19937_64 rng(5);
  std::uniform_real_distribution<double> mant(1.0, 2.0);
  std::uniform_int_distribution<int> expo(-100, 100);
  for (int i = 0; i < 200000; ++i) {
    const double v = (i % 2 ? -1 : 1) * std::ldexp(mant(rng), expo(rng));
    REQUIRE_MESSAGE(double(bf16_to_f32(bf16_from_f64(v))) == nearest_bf16(v), v);
    const float f = float(v);
    REQUIRE_MESSAGE(double(bf16_to_f32(bf16_from_f32(f))) == nearest_bf16(double(f)), f);
  }
}

TEST_CASE("bf16: ops::cast between f32, f64 and bf16 on the CPU; bad arguments named") {
  Context c;
  const Tensor x64 = random_uniform({3, 50}, -4, 4, 1, DType::F64);
  Tensor b = Tensor::empty({3, 50}, DType::BF16), f = Tensor::empty({3, 50}, DType::F32),
         d = Tensor::empty({3, 50}, DType::F64);
  ops::cast(c, x64, b);
  for (int64_t i = 0; i < b.numel(); ++i)
    REQUIRE(b.data<bf16>()[i].bits == bits_of(x64.item(i)));
  ops::cast(c, b, f);  // exact
  ops::cast(c, b, d);
  for (int64_t i = 0; i < b.numel(); ++i) {
    REQUIRE(f.item(i) == double(bf16_to_f32(b.data<bf16>()[i])));
    REQUIRE(d.item(i) == f.item(i));
  }
  const Tensor x32 = random_uniform({3, 50}, -4, 4, 2, DType::F32);
  ops::cast(c, x32, b);
  for (int64_t i = 0; i < b.numel(); ++i)
    REQUIRE(b.data<bf16>()[i].bits == bf16_from_f32(x32.data<float>()[i]).bits);
  CHECK(b.item(0) == double(bf16_to_f32(b.data<bf16>()[0])));  // Tensor::item widens
  CHECK_THROWS_WITH_AS(ops::cast(c, x32, Tensor::empty({3, 49}, DType::BF16)),
                       doctest::Contains("cast"), DataError);
  CHECK_THROWS_WITH_AS(ops::cast(c, x32, Tensor::empty({3, 50}, DType::I32)),
                       doctest::Contains("must be f32, f64 or bf16"), DataError);
}

TEST_CASE("bf16: forward ops on bf16 operands are their f32 twins rounded once") {
  Context c;
  const Tensor af = random_uniform({2, 3, 5, 5}, -2, 2, 3, DType::F32);
  const Tensor bfv = random_uniform({2, 3, 5, 5}, -2, 2, 4, DType::F32);
  const Tensor a = bf16_tensor(af), b = bf16_tensor(bfv);
  const Tensor aw = a.to_dtype(DType::F32), bw = b.to_dtype(DType::F32);  // stored values
  auto check_rounded = [&](const Tensor& got, const Tensor& want_f32, const char* what) {
    CAPTURE(what);
    REQUIRE(got.dtype() == DType::BF16);
    for (int64_t i = 0; i < got.numel(); ++i)
      REQUIRE_MESSAGE(got.data<bf16>()[i].bits == bf16_from_f32(want_f32.data<float>()[i]).bits,
                      "element ", i);
  };
  {  // y = a + b
    Tensor y = Tensor::empty(a.shape(), DType::BF16), yf = Tensor::empty(a.shape());
    ops::add(c, a, b, y);
    ops::add(c, aw, bw, yf);
    check_rounded(y, yf, "add");
  }
  {  // in place: y = y * b (one buffer, read before written)
    Tensor y = a.to_dtype(DType::BF16), yf = aw.to_dtype(DType::F32);
    ops::mul(c, y, b, y);
    ops::mul(c, yf, bw, yf);
    check_rounded(y, yf, "mul in place");
  }
  {  // axpy accumulates into its bf16 output: y += 0.37 a, y's old values read
    Tensor y = b.to_dtype(DType::BF16), yf = bw.to_dtype(DType::F32);
    ops::axpy(c, 0.37, a, y);
    ops::axpy(c, 0.37, aw, yf);
    check_rounded(y, yf, "axpy");
  }
  {  // a mixed op: bf16 x and weights, f32 bias, bf16 output
    Conv2dParams p;
    p.pad_h = p.pad_w = 1;
    const Tensor w = bf16_tensor(random_uniform({4, 3, 3, 3}, -0.5, 0.5, 6, DType::F32));
    const Tensor bias = random_uniform({4}, -0.5, 0.5, 7, DType::F32);
    Tensor y = Tensor::empty({2, 4, 5, 5}, DType::BF16), yf = Tensor::empty({2, 4, 5, 5});
    ops::conv2d_forward(c, p, a, w, bias, y);
    ops::conv2d_forward(c, p, aw, w.to_dtype(DType::F32), bias, yf);
    check_rounded(y, yf, "conv2d_forward");
    // The widening buffers are kept: the same shapes again allocate no new plan.
    const size_t plans = c.plans().size();
    ops::conv2d_forward(c, p, a, w, bias, y);
    ops::add(c, a, b, Tensor::empty(a.shape(), DType::BF16));
    CHECK(c.plans().size() == plans);
  }
  {  // the fused leak tail with bf16 terms and rates, f32 tau, and its optional x
    LeakTailParams lp;
    lp.rule = LeakRule::Euler;
    lp.dt = 2;
    const Tensor tau = Tensor::from({1}, {8.3}, DType::F32);
    Tensor x = Tensor::empty(a.shape(), DType::BF16), r = Tensor::empty(a.shape(), DType::BF16);
    Tensor xf = Tensor::empty(a.shape()), rf = Tensor::empty(a.shape());
    const Tensor h = bf16_tensor(random_uniform(a.shape(), 0, 1, 8, DType::F32));
    ops::leak_tail_forward(c, lp, LeakTailTerms{a, b}, h, tau, x, r);
    ops::leak_tail_forward(c, lp, LeakTailTerms{aw, bw}, h.to_dtype(DType::F32), tau, xf, rf);
    check_rounded(x, xf, "leak_tail x");
    check_rounded(r, rf, "leak_tail r");
  }
  {  // statistics: bf16 rates into f32 columns, the other columns kept
    Tensor mean = Tensor::zeros({2, 3}), sd = Tensor::zeros({2, 3});
    Tensor mf = Tensor::zeros({2, 3}), sf = Tensor::zeros({2, 3});
    ops::abs_mean_std(c, a, 1, mean, sd);
    ops::abs_mean_std(c, aw, 1, mf, sf);
    require_equal(mean, mf, "abs_mean_std mean");
    require_equal(sd, sf, "abs_mean_std std");
  }
  {  // a backward op accumulating into a bf16 gradient: the old value read, the sum rounded once
    Tensor g = bf16_tensor(random_uniform(a.shape(), -1, 1, 16, DType::F32));
    Tensor gf = g.to_dtype(DType::F32);
    ops::relu_backward(c, a, b, g, GradMode::Accumulate);
    ops::relu_backward(c, aw, bw, gf, GradMode::Accumulate);
    check_rounded(g, gf, "relu_backward accumulate");
  }
  {  // conv backward with bf16 activations, f32 weights and f32 weight gradient (bf16 training)
    Conv2dParams p;
    p.pad_h = p.pad_w = 1;
    const Tensor w = random_uniform({4, 3, 3, 3}, -0.5, 0.5, 17, DType::F32);
    const Tensor gy = bf16_tensor(random_uniform({2, 4, 5, 5}, -1, 1, 18, DType::F32));
    Tensor gx = Tensor::zeros(a.shape(), DType::BF16), gxf = Tensor::zeros(a.shape());
    Tensor gw = random_uniform(w.shape(), -1, 1, 19, DType::F32), gwf = gw.to_dtype(DType::F32);
    ops::conv2d_backward(c, p, gy, a, w, gx, gw, Tensor(), GradMode::Accumulate);
    ops::conv2d_backward(c, p, gy.to_dtype(DType::F32), aw, w, gxf, gwf, Tensor(),
                         GradMode::Accumulate);
    require_equal(gw, gwf, "conv2d_backward grad_w (f32, not rounded)");
    check_rounded(gx, gxf, "conv2d_backward grad_x");
  }
}

TEST_CASE("bf16: Widened keeps one buffer per view, filled when read, rounded back once") {
  Context c;
  const Tensor src = bf16_tensor(random_uniform({6}, -3, 3, 21, DType::F32));
  Tensor y = src.to_dtype(DType::BF16);
  const Tensor f32 = Tensor::from({6}, {1, 2, 3, 4, 5, 6});
  {
    Widened w(c);
    const Tensor o = w.out(y);  // an output first: not read, so not yet filled
    const Tensor i = w.in(y);   // then the same view as an input: the same buffer, now filled
    CHECK(o.same_storage(i));
    CHECK(o.raw() == i.raw());
    for (int64_t k = 0; k < 6; ++k) CHECK(i.item(k) == src.item(k));
    CHECK(w.in(f32).same_storage(f32));  // f32 operands pass through
    CHECK(w.in(y.slice(0, 3)).raw() != o.raw());  // another view: another buffer
    ops::scale(c, 2.0, i, o);
    for (int64_t k = 0; k < 6; ++k) CHECK(y.item(k) == src.item(k));  // not before finish()
    w.finish();
  }
  for (int64_t k = 0; k < 6; ++k) CHECK(y.item(k) == 2 * src.item(k));  // exact: a power of 2
  {
    Widened w(c);  // an op that throws never reaches finish(): y is left as it was
    const Tensor o = w.out(y);
    ops::fill(c, 7.0, o);
  }
  for (int64_t k = 0; k < 6; ++k) CHECK(y.item(k) == 2 * src.item(k));
}

TEST_CASE("bf16: repeated frames compare bf16 bits, the idle frame rounded as fill writes it") {
  Context c;
  // Frames: idle value 0.3 (not a bf16 value) for steps 0-1, then a new frame twice.
  Tensor x = Tensor::empty({2, 4, 3, 2, 2}, DType::BF16);
  for (int64_t i = 0; i < x.numel(); ++i) {
    const int64_t t = (i / 12) % 4;
    x.set(i, t < 2 ? 0.3 : 0.7 + 0.01 * double(i % 12));
  }
  Tensor flags = Tensor::empty({2 + 4}, DType::I32);
  ops::repeated_frames(c, x, 2, 0.3, flags);
  const std::vector<int32_t> want{0, 1, 1, 1, 0, 1};
  for (int s = 0; s < 6; ++s) CHECK_MESSAGE(flags.data<int32_t>()[s] == want[size_t(s)], s);
  // -0 and +0 differ as bits.
  x.set(4 * 12 + 12 * 3 + 5, -0.0);
  x.set(4 * 12 + 12 * 2 + 5, 0.0);
  ops::repeated_frames(c, x, 2, 0.3, flags);
  CHECK(flags.data<int32_t>()[5] == 0);
}

TEST_CASE("bf16: DyRCNNx4 runs in bf16 storage within bf16's precision of the f32 run") {
  for (const std::string solver : {"euler", "rk4", "rk4-classic"})
    for (bool fast : {true, false}) {
      const std::string what = concat("DyRCNNx4 24x24 ", solver, fast ? " fast" : " literal");
      CAPTURE(what);
      models::DyRCNNOptions o = dyrcnn("DyRCNNx4", 24);
      o.feedback = "add";
      o.delays.t_feedback = 4;
      o.tau = 8.3;  // not a bf16 value: tau stays f32
      Graph g = models::build_dyrcnn(o);
      const Tensor x = random_uniform({2, 10, 3, 24, 24}, 0, 1, 9, DType::F32);
      Context ctx;
      Scheduler s(ctx, g, SolverSpec(solver));
      RunOptions ro;
      ro.idle_steps = 2;
      ro.record = RecordMode::Full;
      ro.fast_paths = fast;
      ro.stability_check = true;
      const Recording want = s.run(x, ro);
      const Recording got = s.run(x.to_dtype(DType::BF16), ro);
      REQUIRE(got.logits.dtype() == DType::F32);
      CHECK(all_bf16_values(got.logits));
      CHECK(max_diff(got.logits, want.logits) <= 0.05 * max_abs(want.logits));
      bool differs = false;
      for (size_t a = 0; a < g.areas.size(); ++a) {
        REQUIRE(got.rates[a].dtype() == DType::F32);
        CHECK_MESSAGE(all_bf16_values(got.rates[a]), g.areas[a].name);
        const double d = max_diff(got.rates[a], want.rates[a]), m = max_abs(want.rates[a]);
        CHECK_MESSAGE(d <= 0.05 * m, g.areas[a].name, ": ", d, " of ", m);
        CHECK(got.present[a] == want.present[a]);
        differs = differs || d > 0;
      }
      CHECK(differs);  // bf16 storage did round
      // The graph's parameters are untouched f32 (the run used bf16 copies), and an f32 run
      // after the bf16 one gives the f32 bits again.
      for (const auto& e : g.params.entries()) CHECK(e.value.dtype() == DType::F32);
      const Recording again = s.run(x, ro);
      for (size_t a = 0; a < g.areas.size(); ++a) CHECK(same_bits(again.rates[a], want.rates[a]));
      // Layer statistics are f32 reductions of the bf16 rates.
      ro.record = RecordMode::Layer;
      const Recording layer = s.run(x.to_dtype(DType::BF16), ro);
      for (size_t a = 0; a < g.areas.size(); ++a) {
        REQUIRE(layer.mean_abs[a].dtype() == DType::F32);
        const int64_t B = 2, T = 10, per = got.rates[a].numel() / (B * T);
        for (int64_t i = 0; i < B * T; i += 7) {
          double sum = 0;
          for (int64_t k = 0; k < per; ++k) sum += std::abs(got.rates[a].item(i * per + k));
          const double m = layer.mean_abs[a].item(i);
          if (!got.present[a][size_t(i % T)]) continue;
          CHECK(std::abs(m - sum / double(per)) <= 1e-5 * std::max(1.0, std::abs(m)));
        }
      }
    }
}

// bf16 training (Bptt): the tape's values and their gradients bf16, parameters, their gradients,
// tau and the losses f32. Against the f32 run of the same graph, input and labels: the losses
// within 2%, every parameter gradient (tau's included) pointing the same way (cosine >= 0.99)
// with a norm within 10%; store-all and checkpointing give the same bf16 bits.
TEST_CASE("bf16: Bptt gradients in bf16 storage follow the f32 gradients") {
  for (const std::string solver : {"euler", "rk4-classic"}) {
    CAPTURE(solver);
    models::DyRCNNOptions o = dyrcnn("DyRCNNx4", 24);
    o.feedback = "add";
    o.delays.t_feedback = 2;
    o.train_tau = true;
    o.n_classes = 5;
    Graph g = models::build_dyrcnn(o);
    const int B = 3, T = 6;
    const Tensor x = random_uniform({B, T, 3, 24, 24}, 0, 1, 31, DType::F32);
    Tensor y = Tensor::zeros({B, T}, DType::I32);
    for (int64_t i = 0; i < y.numel(); ++i) y.set(i, double(i % 5));
    Context ctx;
    Bptt bp(ctx, g, SolverSpec(solver));
    BpttOptions opt;
    opt.run.idle_steps = 2;
    LossSpec loss;
    loss.activity_weight = 0.01;
    ParamStore g32 = Bptt::zero_grads(ctx, g.params), g16 = Bptt::zero_grads(ctx, g.params);
    const LossValues l32 = bp.run(x, y, {}, loss, opt, &g32);
    const Tensor xb = x.to_dtype(DType::BF16);
    const LossValues l16 = bp.run(xb, y, {}, loss, opt, &g16);
    CHECK(l16.logits.dtype() == DType::F32);
    CHECK(all_bf16_values(l16.logits));
    CHECK(std::abs(l16.total - l32.total) <= 0.02 * std::abs(l32.total));
    CHECK(l16.total != l32.total);
    for (const auto& e : g32.entries()) {
      REQUIRE(g16.get(e.name).dtype() == DType::F32);
      check_gradient_follows(e.value, g16.get(e.name), e.name);
    }
    // The checkpoint policy recomputes the same bf16 values: the same gradients, bit for bit.
    BpttOptions ck = opt;
    ck.memory = MemoryPolicy::Checkpoint;
    ck.checkpoint_every = 3;
    ParamStore gck = Bptt::zero_grads(ctx, g.params);
    bp.run(xb, y, {}, loss, ck, &gck);
    for (const auto& e : g16.entries())
      CHECK_MESSAGE(same_bits(gck.get(e.name), e.value), e.name);
  }
}

TEST_CASE("bf16: writers store bf16 (safetensors natively, npy as f32); Bptt checks parameters") {
  TempDir dir;
  Tensor t = Tensor::from({2, 2}, {1.0, -2.5, 0.3, 1e-3}, DType::BF16);
  save_safetensors((dir.path() / "t.safetensors").string(), {{"t", t}});
  const TensorFile f = load_safetensors((dir.path() / "t.safetensors").string());
  const Tensor back = f.tensors.at("t");
  REQUIRE(back.dtype() == DType::F32);  // the reader widens BF16
  for (int64_t i = 0; i < 4; ++i) CHECK(back.item(i) == t.item(i));
  save_npy((dir.path() / "t.npy").string(), t);
  const Tensor n = load_npy((dir.path() / "t.npy").string());
  REQUIRE(n.dtype() == DType::F32);
  for (int64_t i = 0; i < 4; ++i) CHECK(n.item(i) == t.item(i));

  Graph g = models::build_dyrcnn(dyrcnn("DyRCNNx2", 16));
  for (auto& e : g.params.entries()) e.value = e.value.to_dtype(DType::BF16);
  Context ctx;
  Bptt bptt(ctx, g);
  const Tensor x = Tensor::zeros({1, 3, 3, 16, 16}, DType::BF16);
  Tensor y = Tensor::zeros({1, 3}, DType::I32);
  CHECK_THROWS_WITH_AS(bptt.run(x, y, Tensor(), LossSpec(), BpttOptions(), nullptr),
                       doctest::Contains("bf16 runs keep f32 parameters"), DataError);
}

// ---- CPU vs CUDA (gpu suite) ------------------------------------------------------------------

TEST_CASE("bf16 CPU vs CUDA: cast bit for bit over every bf16 pattern and random f32/f64" *
          doctest::test_suite("gpu")) {
  if (no_device()) return;
  Context cpu;
  Context gpu = cuda_context();
  Tensor all = Tensor::empty({65536}, DType::BF16);
  for (int64_t i = 0; i < 65536; ++i) all.data<bf16>()[i].bits = uint16_t(i);
  const Tensor f32 = random_uniform({4096}, -1e3, 1e3, 3, DType::F32);
  const Tensor f64 = random_uniform({4096}, -1e3, 1e3, 4, DType::F64);
  struct Pair {
    Tensor x;
    DType to;
  };
  for (const Pair& p : {Pair{all, DType::F32}, Pair{all, DType::F64}, Pair{f32, DType::BF16},
                        Pair{f64, DType::BF16}}) {
    Tensor want = Tensor::empty(p.x.shape(), p.to);
    ops::cast(cpu, p.x, want);
    const Tensor y = gpu.empty(p.x.shape(), p.to);
    ops::cast(gpu, gpu.to_device(p.x), y);
    const Tensor got = gpu.to_host(y);
    CHECK_MESSAGE(std::memcmp(got.raw(), want.raw(), want.nbytes()) == 0,
                  dtype_name(p.x.dtype()), " -> ", dtype_name(p.to));
  }
}

TEST_CASE("bf16 CPU vs CUDA: DyRCNNx4 bf16 trajectories" * doctest::test_suite("gpu")) {
  if (no_device()) return;
  Context cpu;
  Context gpu = cuda_context();
  for (const std::string solver : {"euler", "rk4-classic"}) {
    const std::string what = concat("DyRCNNx4 64x64 bf16 ", solver);
    CAPTURE(what);
    models::DyRCNNOptions o = dyrcnn("DyRCNNx4", 64);
    o.feedback = "add";
    o.delays.t_feedback = 6;
    Graph g = models::build_dyrcnn(o);
    const Tensor x = random_uniform({2, 12, 3, 64, 64}, 0, 1, 9, DType::F32);
    const Tensor xb = x.to_dtype(DType::BF16);
    Scheduler sc(cpu, g, SolverSpec(solver)), sg(gpu, g, SolverSpec(solver));
    RunOptions ro;
    ro.idle_steps = 2;
    ro.record = RecordMode::Full;
    const Recording f32 = sc.run(x, ro), cpu_b = sc.run(xb, ro), gpu_b = sg.run(xb, ro);
    for (size_t a = 0; a < g.areas.size(); ++a) {
      CHECK(all_bf16_values(gpu_b.rates[a]));
      const double m = max_abs(f32.rates[a]);
      // The f32 sums of the two devices may round to neighbouring bf16 values: both runs are
      // held to bf16's precision of the f32 trajectory, and to each other.
      CHECK_MESSAGE(max_diff(gpu_b.rates[a], f32.rates[a]) <= 0.05 * m, g.areas[a].name);
      CHECK_MESSAGE(max_diff(gpu_b.rates[a], cpu_b.rates[a]) <= 0.05 * m, g.areas[a].name);
    }
    const Recording again = sg.run(gpu.to_device(xb), ro);  // device input: same bits
    for (size_t a = 0; a < g.areas.size(); ++a) CHECK(same_bits(again.rates[a], gpu_b.rates[a]));
  }
}

// The native bf16 kernels on CUDA (cuDNN's pseudo-bf16 conv, the fused leak tail, max pooling)
// against the CPU's f32-on-widened-copies reference: the leak tail and the pool bit for bit, the
// conv within 2 bf16 ulps of each element (cuDNN rounds y, then the bias add rounds again) plus
// 1e-4 for the f32 sums' order near zero.
TEST_CASE("bf16 CPU vs CUDA: native conv, leak tail and max pool against the f32 reference" *
          doctest::test_suite("gpu")) {
  if (no_device()) return;
  Context cpu;
  Context gpu = cuda_context();
  auto on_gpu = [&](const Tensor& t) { return gpu.to_device(t); };
  const Tensor x = bf16_tensor(random_uniform({4, 16, 20, 20}, -1, 1, 11, DType::F32));
  {
    Conv2dParams p;
    p.pad_h = p.pad_w = 1;
    const Tensor w = bf16_tensor(random_uniform({24, 16, 3, 3}, -0.3, 0.3, 12, DType::F32));
    for (DType bias_t : {DType::BF16, DType::F32}) {
      const Tensor b = random_uniform({24}, -0.5, 0.5, 13, DType::F32).to_dtype(bias_t);
      Tensor want = Tensor::empty({4, 24, 20, 20}, DType::BF16);
      ops::conv2d_forward(cpu, p, x, w, b, want);
      const Tensor y = gpu.empty(want.shape(), DType::BF16);
      ops::conv2d_forward(gpu, p, on_gpu(x), on_gpu(w), on_gpu(b), y);
      const Tensor got = gpu.to_host(y);
      const ops::Conv2dBf16Refusal& r = gpu.plans().get_or_create<ops::Conv2dBf16Refusal>(
          PlanKey("conv2d_bf16_refused"),
          [] { return std::make_shared<ops::Conv2dBf16Refusal>(); });
      CHECK_MESSAGE(!r.refused, "cuDNN refused the bf16 conv: ", r.why);
      int64_t far = 0;
      for (int64_t i = 0; i < want.numel(); ++i) {
        const double g = got.item(i), v = want.item(i);
        if (std::abs(g - v) > 2 * std::ldexp(std::abs(v), -7) + 1e-4) ++far;  // + sum order
      }
      CHECK_MESSAGE(far == 0, far, " elements more than 2 bf16 ulps off (bias ",
                    dtype_name(bias_t), ")");
    }
  }
  {
    LeakTailParams lp;
    lp.rule = LeakRule::Rk4Frozen;
    lp.dt = 2;
    lp.supralinear = true;
    lp.supra.n = 1.5;
    const Tensor tau = Tensor::from({4}, {8.3, 5, 12.5, 3.7}, DType::F32);
    const Tensor t1 = bf16_tensor(random_uniform(x.shape(), -1, 1, 14, DType::F32));
    const Tensor h = bf16_tensor(random_uniform(x.shape(), 0, 1, 15, DType::F32));
    Tensor xw = Tensor::empty(x.shape(), DType::BF16), rw = h.to_dtype(DType::BF16);
    ops::leak_tail_forward(cpu, lp, LeakTailTerms{x, t1}, rw, tau, xw, rw);  // r in place of h
    const Tensor xg = gpu.empty(x.shape(), DType::BF16), rg = on_gpu(h);
    const Tensor xd = on_gpu(x), t1d = on_gpu(t1);
    ops::leak_tail_forward(gpu, lp, LeakTailTerms{xd, t1d}, rg, on_gpu(tau), xg, rg);
    CHECK(same_bits(gpu.to_host(xg), xw));
    CHECK(same_bits(gpu.to_host(rg), rw));
  }
  {
    Pool2dParams p;
    p.kernel_h = p.kernel_w = 2;
    p.stride_h = p.stride_w = 2;
    Tensor xn = x.to_dtype(DType::BF16);
    xn.set(5, NAN);
    Tensor want = Tensor::empty({4, 16, 10, 10}, DType::BF16);
    Tensor arg_c = Tensor::empty(want.shape(), DType::I32);
    ops::maxpool2d_forward(cpu, p, xn, want, arg_c);
    const Tensor y = gpu.empty(want.shape(), DType::BF16);
    const Tensor arg_g = gpu.empty(want.shape(), DType::I32);
    ops::maxpool2d_forward(gpu, p, on_gpu(xn), y, arg_g);
    CHECK(same_bits(gpu.to_host(y), want));
    CHECK(same_bits(gpu.to_host(arg_g), arg_c));
  }
}

// bf16 training on CUDA: the parameter gradients of a bf16 Bptt run on the device follow the
// CPU's f32 gradients as the CPU's bf16 run does (cosine >= 0.99, norm within 10%).
TEST_CASE("bf16 CPU vs CUDA: Bptt gradients in bf16 storage" * doctest::test_suite("gpu")) {
  if (no_device()) return;
  models::DyRCNNOptions o = dyrcnn("DyRCNNx4", 32);
  o.feedback = "add";
  o.delays.t_feedback = 2;
  o.n_classes = 5;
  Graph g = models::build_dyrcnn(o);
  const int B = 4, T = 6;
  const Tensor x = random_uniform({B, T, 3, 32, 32}, 0, 1, 41, DType::F32);
  Tensor y = Tensor::zeros({B, T}, DType::I32);
  for (int64_t i = 0; i < y.numel(); ++i) y.set(i, double(i % 5));
  Context cpu;
  Bptt bc(cpu, g);
  BpttOptions opt;
  opt.run.idle_steps = 2;
  ParamStore want = Bptt::zero_grads(cpu, g.params);
  const LossValues lw = bc.run(x, y, {}, LossSpec{}, opt, &want);
  Context gpu = cuda_context(true);
  Graph gd = models::build_dyrcnn(o);
  for (auto& e : gd.params.entries()) e.value = gpu.to_device(e.value);
  Bptt bg(gpu, gd);
  ParamStore got = Bptt::zero_grads(gpu, gd.params);
  const Tensor xd = gpu.to_device(x.to_dtype(DType::BF16));
  const LossValues lg = bg.run(xd, y, {}, LossSpec{}, opt, &got);
  CHECK(std::abs(lg.total - lw.total) <= 0.02 * std::abs(lw.total));
  for (const auto& e : want.entries())
    check_gradient_follows(e.value, gpu.to_host(got.get(e.name)), e.name);
}
