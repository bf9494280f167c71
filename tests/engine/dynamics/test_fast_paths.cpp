// The Scheduler's fast paths (RunOptions::fast_paths, performance-notes.md §3) against
// DynVision's literal order: skip connections as strided 1x1 convs, operators on the input
// frame computed once while the frame repeats (and once per step in staged runs), the
// classifier once per chunk of steps (32 on CUDA by default; chunks of 32 and 3 forced here,
// the CPU default of 1 once). Each case runs both ways on the same graph and input
// and requires the same rates and logits (within 1e-6 of the largest value; the message says
// whether they are bit for bit equal) and the saving itself, counted in operator evaluations.
#include <cmath>
#include <cstring>

#include "engine/dynamics/operators.h"
#include "engine/dynamics/scheduler.h"
#include "kernels/dispatch.h"
#include "models/dyrcnn/dyrcnn.h"
#include "tests/harness.h"

using namespace dynsim;
using namespace dynsim::test;

namespace {

models::DyRCNNOptions small_x4(int size) {
  models::DyRCNNOptions o;
  o.preset = "DyRCNNx4";
  o.height = o.width = size;
  o.channels = {6, 8, 10, 12};
  o.n_classes = 5;
  o.max_weight_init = 0.05;
  return o;
}

// max |a - b| over max |b|; NaN where either differs in NaN-ness.
double rel_diff(const Tensor& a, const Tensor& b) {
  REQUIRE(a.shape() == b.shape());
  double worst = 0, scale = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    const double x = a.item(i), y = b.item(i);
    if (std::isnan(x) != std::isnan(y)) return NAN;
    if (std::isnan(y)) continue;
    worst = std::max(worst, std::abs(x - y));
    scale = std::max(scale, std::abs(y));
  }
  return scale > 0 ? worst / scale : worst;
}

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

// Fast and literal recordings agree: every area's full rates and the logits.
void require_same(const Recording& fast, const Recording& lit, const std::string& what) {
  bool bitwise = same_bits(fast.logits, lit.logits);
  for (size_t a = 0; a < lit.rates.size(); ++a) {
    const double d = rel_diff(fast.rates[a], lit.rates[a]);
    CHECK_MESSAGE(d <= 1e-6, what, ": area ", lit.areas[a], " rates differ by ", d);
    CHECK(fast.present[a] == lit.present[a]);
    bitwise = bitwise && same_bits(fast.rates[a], lit.rates[a]);
  }
  const double dl = rel_diff(fast.logits, lit.logits);
  CHECK_MESSAGE(dl <= 1e-6, what, ": logits differ by ", dl);
  // Logits stay exactly 0 wherever the literal run left them 0 (classifier input absent).
  for (int64_t i = 0; i < lit.logits.numel(); ++i)
    if (lit.logits.item(i) == 0.0) REQUIRE(fast.logits.item(i) == 0.0);
  MESSAGE(what, ": fast paths ",
          std::string(bitwise ? "bit for bit equal" : "equal within rounding"),
          " (logits rel. diff ", dl, ")");
}

// [B, T, C, H, W] whose frame t of every sample is frame src[t] of a random pool.
Tensor frames(int B, const std::vector<int>& src, int C, int H, uint64_t seed) {
  const int T = int(src.size());
  const Tensor pool = random_uniform({B, 8, C, H, H}, 0, 1, seed, DType::F32);
  Tensor x = Tensor::empty({B, T, C, H, H});
  const int64_t fe = int64_t(C) * H * H;
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T; ++t)
      std::memcpy(x.data<float>() + (int64_t(b) * T + t) * fe,
                  pool.data<float>() + (int64_t(b) * 8 + src[size_t(t)]) * fe, size_t(fe) * 4);
  return x;
}

}  // namespace

TEST_CASE("fast paths: a skip's 1x1 conv + nearest downsample runs as a strided conv") {
  Context ctx;
  for (DType t : {DType::F32, DType::F64}) {
    CAPTURE(dtype_name(t));
    OpSpec op;
    op.kind = OpKind::Conv;
    op.in_channels = 5;
    op.out_channels = 7;
    op.kernel = 1;
    op.in_h = 16, op.in_w = 12;
    op.resize_h = 4, op.resize_w = 6;  // factors 4 and 2
    op.params = {"w", "b"};
    ParamStore ps;
    ps.add("w", random_uniform({7, 5, 1, 1}, -1, 1, 1, t), true);
    ps.add("b", random_uniform({7}, -1, 1, 2, t), true);
    OperatorOptions literal;
    literal.strided_skip = false;
    OperatorRunner fast(ctx, op, ps, 3, t), lit(ctx, op, ps, 3, t, literal);
    CHECK(fast.strided());
    CHECK_FALSE(lit.strided());
    REQUIRE(fast.output_shape() == lit.output_shape());
    const Tensor x = random_uniform({3, 5, 16, 12}, -1, 1, 3, t);
    Tensor yf = Tensor::empty(fast.output_shape(), t), yl = Tensor::empty(lit.output_shape(), t);
    fast.forward(ctx, x, yf);
    lit.forward(ctx, x, yl);
    CHECK(rel_diff(yf, yl) <= (t == DType::F32 ? 1e-6 : 1e-14));
    // Gradients: grad_x (zero off the kept pixels), grad_w, grad_b.
    const Tensor gy = random_uniform(yl.shape(), -1, 1, 4, t);
    ParamStore gf, gl;
    for (ParamStore* g : {&gf, &gl}) {
      g->add("w", Tensor::zeros({7, 5, 1, 1}, t), true);
      g->add("b", Tensor::zeros({7}, t), true);
    }
    Tensor gxf = Tensor::zeros(x.shape(), t), gxl = Tensor::zeros(x.shape(), t);
    fast.backward(ctx, x, gy, gxf, &gf, GradMode::Accumulate);
    lit.backward(ctx, x, gy, gxl, &gl, GradMode::Accumulate);
    const double tol = t == DType::F32 ? 1e-6 : 1e-14;
    CHECK(rel_diff(gxf, gxl) <= tol);
    CHECK(rel_diff(gf.get("w"), gl.get("w")) <= tol);
    CHECK(rel_diff(gf.get("b"), gl.get("b")) <= tol);
  }
  // Not folded: upsampling, a 3x3 conv, a factor that does not divide.
  OpSpec up;
  up.kind = OpKind::Conv;
  up.in_channels = up.out_channels = 2;
  up.kernel = 1;
  up.in_h = up.in_w = 4;
  up.resize_h = up.resize_w = 8;
  up.params = {"w", "b"};
  ParamStore ps;
  ps.add("w", Tensor::zeros({2, 2, 1, 1}), true);
  ps.add("b", Tensor::zeros({2}), true);
  CHECK_FALSE(OperatorRunner(ctx, up, ps, 1, DType::F32).strided());
  up.in_h = up.in_w = 12;
  up.resize_h = up.resize_w = 5;
  CHECK_FALSE(OperatorRunner(ctx, up, ps, 1, DType::F32).strided());
  ParamStore p3;
  p3.add("w", Tensor::zeros({2, 2, 3, 3}), true);
  p3.add("b", Tensor::zeros({2}), true);
  up.kernel = 3;
  up.resize_h = up.resize_w = 6;
  CHECK_FALSE(OperatorRunner(ctx, up, p3, 1, DType::F32).strided());
}

TEST_CASE("fast paths: DyRCNNx4 on a static image with idle steps, 40 steps (two readout chunks)") {
  for (const std::string solver : {"euler", "rk4"}) {
    CAPTURE(solver);
    models::DyRCNNOptions o = small_x4(32);
    o.delays.t_feedforward = 2;  // V2, V4, IT and the classifier absent for the first steps
    Graph g = models::build_dyrcnn(o);
    Context ctx;
    Scheduler s(ctx, g, SolverSpec(solver));
    const int T = 40, idle = 3;
    const Tensor x = frames(2, std::vector<int>(size_t(T), 5), 3, 32, 11);
    RunOptions fast, lit;
    fast.record = lit.record = RecordMode::Full;
    fast.idle_steps = lit.idle_steps = idle;
    fast.readout_chunk = 32;
    lit.fast_paths = false;
    const Recording rl = s.run(x, lit);
    const int64_t calls_lit = s.operator_calls();
    const Recording rf = s.run(x, fast);
    const int64_t calls_fast = s.operator_calls();
    require_same(rf, rl, concat("static image, ", solver));
    // V1's feedforward conv runs twice (the idle frame, the image) instead of idle + T times.
    CHECK(calls_lit - calls_fast == (idle + T) - 2);
    // A second literal run gives the same bits (nothing left over from the fast run).
    CHECK(same_bits(s.run(x, lit).logits, rl.logits));
  }
}

TEST_CASE("fast paths: changing frames, staged solver, multiplicative feedback, input adaption") {
  models::DyRCNNOptions o = small_x4(16);
  o.feedback = "mul";
  o.delays.t_feedback = 4;
  Graph g = models::build_dyrcnn(o);
  // Frames: 0 0 0 1 2 2 1 1 (repeats, a return to an earlier frame that is not a repeat).
  const std::vector<int> src = {0, 0, 0, 1, 2, 2, 1, 1};
  const Tensor x = frames(2, src, 3, 16, 12);
  const int T = int(src.size());
  int new_frames = 0;
  for (int t = 0; t < T; ++t) new_frames += t == 0 || src[size_t(t)] != src[size_t(t - 1)];
  for (const std::string solver : {"euler", "rk4-classic"}) {
    CAPTURE(solver);
    Context ctx;
    Scheduler s(ctx, g, SolverSpec(solver));
    RunOptions fast, lit;
    fast.record = lit.record = RecordMode::Full;
    fast.readout_chunk = 3;  // chunks of 3, 3 and 2 steps
    lit.fast_paths = false;
    const Recording rl = s.run(x, lit);
    const int64_t calls_lit = s.operator_calls();
    const Recording rf = s.run(x, fast);
    const int64_t calls_fast = s.operator_calls();
    require_same(rf, rl, concat("changing frames, ", solver));
    // Staged: the literal order evaluates the input conv at each of the 4 stages.
    const int per_step = solver == "rk4-classic" ? 4 : 1;
    CHECK(calls_lit - calls_fast == int64_t(T) * per_step - new_frames);
    // Input adaption changes the frame every step: nothing is kept, same result.
    RunOptions fa = fast, la = lit;
    fa.input_adaption_weight = la.input_adaption_weight = 0.5;
    const Recording al = s.run(x, la);
    const int64_t adapt_lit = s.operator_calls();
    require_same(s.run(x, fa), al, concat("input adaption, ", solver));
    CHECK(adapt_lit - s.operator_calls() == int64_t(T) * (per_step - 1));
  }
}

TEST_CASE("fast paths: CPU defaults are bit for bit DynVision's order; bad readout_chunk") {
  models::DyRCNNOptions o = small_x4(32);
  Graph g = models::build_dyrcnn(o);
  Context ctx;
  Scheduler s(ctx, g);
  const Tensor x = frames(2, {1, 1, 1, 1, 2, 2, 3, 3, 3, 3}, 3, 32, 14);
  RunOptions fast, lit;
  fast.record = lit.record = RecordMode::Full;
  fast.idle_steps = lit.idle_steps = 2;
  lit.fast_paths = false;
  const Recording rl = s.run(x, lit), rf = s.run(x, fast);
  CHECK(same_bits(rf.logits, rl.logits));
  for (size_t a = 0; a < rl.rates.size(); ++a) CHECK(same_bits(rf.rates[a], rl.rates[a]));
  fast.readout_chunk = -1;
  CHECK_THROWS_WITH_AS(s.run(x, fast), doctest::Contains("readout_chunk must be >= 0"),
                       DataError);
}

TEST_CASE("fast paths: f64 and the layer recording") {
  models::DyRCNNOptions o = small_x4(16);
  Graph g = models::build_dyrcnn(o);
  Context ctx;
  Scheduler s(ctx, g);
  const Tensor x = frames(3, {4, 4, 4, 4, 4}, 3, 16, 13).to_dtype(DType::F64);
  RunOptions fast, lit;
  fast.readout_chunk = 2;
  lit.fast_paths = false;
  const Recording rl = s.run(x, lit), rf = s.run(x, fast);
  CHECK(rel_diff(rf.logits, rl.logits) <= 1e-14);
  for (size_t a = 0; a < rl.mean_abs.size(); ++a) {
    CHECK(rel_diff(rf.mean_abs[a], rl.mean_abs[a]) <= 1e-14);
    CHECK(rel_diff(rf.std_abs[a], rl.std_abs[a]) <= 1e-14);
  }
}

TEST_CASE("fast paths: the fused step tail (supralinearity, per-sample tau, exp, stability "
          "probes, ring capacity 1) gives the separate ops' bits") {
  struct Variant {
    std::string solver;
    double supra;
    bool per_sample_tau, probes;
    double t_recurrence;
  };
  const Variant variants[] = {{"euler", 1.0, false, false, 6},
                              {"euler", 1.5, true, true, 6},
                              {"rk4", 2.0, false, true, 2},
                              {"exp", 1.0, true, false, 2}};
  for (const Variant& v : variants) {
    const std::string what = concat(v.solver, " n ", v.supra, v.per_sample_tau ? " tau[B]" : "",
                                    v.probes ? " probes" : "", " t_rec ", v.t_recurrence);
    CAPTURE(what);
    models::DyRCNNOptions o = small_x4(16);
    o.supralinearity = v.supra;
    o.delays.t_recurrence = v.t_recurrence;
    Graph g = models::build_dyrcnn(o);
    if (v.per_sample_tau) g.areas[1].tau_per_sample = {4.0, 9.0};
    Context ctx;
    Scheduler s(ctx, g, SolverSpec(v.solver));
    const Tensor x = frames(2, {0, 1, 2, 3, 3, 3}, 3, 16, 15);
    RunOptions fast, lit;
    fast.record = lit.record = RecordMode::Full;
    fast.stability_check = lit.stability_check = v.probes;
    fast.idle_steps = lit.idle_steps = 1;
    lit.fast_paths = false;
    const Recording rl = s.run(x, lit), rf = s.run(x, fast);
    CHECK(same_bits(rf.logits, rl.logits));
    for (size_t a = 0; a < rl.rates.size(); ++a)
      CHECK_MESSAGE(same_bits(rf.rates[a], rl.rates[a]), rl.areas[a]);
  }
}
