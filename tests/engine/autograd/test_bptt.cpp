// Reverse mode through time (engine/autograd/bptt.h):
// - its forward is the scheduler's, bit for bit (logits, every solver and graph feature);
// - f64 central differences of the whole unrolled model against the reverse sweep: DyRCNNx2 and
//   a small DyRCNNx4-shaped graph (few channels, small images) for every solver, recurrence type
//   and target, skip, feedback add and mul, trainable tau, supralinearity, idle steps, TBPTT,
//   masking and every loss term;
// - the checkpoint policy gives bitwise the gradients of store-all, for every segment length;
// - DynVision's T8 (loss values) and T9 (idle: shapes, gradients reach every parameter, ten SGD
//   steps reduce the loss, idle with TBPTT).
// - gpu suite (Skipped without a device): every feature case on CUDA against the CPU (losses,
//   logits and gradients within 1e-4; store-all and checkpoint), host and device inputs, reruns
//   bit for bit in a deterministic context; f64 within 1e-10.
#include <cmath>
#include <cstring>
#include <tuple>

#include "engine/autograd/bptt.h"
#include "engine/dynamics/scheduler.h"
#include "engine/optim/optimizer.h"
#include "models/dyrcnn/dyrcnn.h"
#include "tests/engine/dynamics/scheduler_cases.h"
#include "tests/harness.h"

using namespace dynsim;
using namespace dynsim::test;
using models::DyRCNNOptions;

namespace {

struct Case {
  std::string name;
  DyRCNNOptions o;
  std::string solver = "euler";
  int B = 2, T = 6, idle = 0, tbptt = 0;
  double adaption = 0;
  LossSpec loss;
  bool targets = false;  // add MSE and Poisson terms on the logits
};

DyRCNNOptions small_x4(int size = 16) {
  DyRCNNOptions o;
  o.preset = "DyRCNNx4";
  o.channels = {4, 9, 9, 16};  // squares: the local (cortical sheet) types need them
  o.height = o.width = size;
  o.n_classes = 3;
  o.seed = 11;
  o.delays.dt = 2;
  o.delays.t_recurrence = 4;
  o.delays.t_feedback = 4;
  o.delays.t_skip = 2;
  o.tau = 5;
  o.max_weight_init = 0.3;  // recurrent weights large enough to matter in a short run
  return o;
}

Case make(const std::string& name, DyRCNNOptions o, const std::string& solver = "euler") {
  Case c;
  c.name = name;
  c.o = std::move(o);
  c.solver = solver;
  return c;
}

Graph build(const Case& c, DType t) {
  Graph g = models::build_dyrcnn(c.o);
  // Biases start at 0 in DynVision; a zero frame (idle) or a network at rest then puts states
  // exactly on ReLU's kink, where central differences see half a slope. Small random biases
  // keep the checks away from it (the self-recurrence bias stays 0: DynVision skips it then).
  uint64_t seed = 100;
  for (auto& e : g.params.entries()) {
    const bool bias = e.name.size() > 5 && e.name.compare(e.name.size() - 5, 5, ".bias") == 0;
    if (!bias || (c.o.recurrence_type == "self" && e.name.find(".recurrence.") != std::string::npos))
      continue;
    e.value = random_uniform(e.value.shape(), -0.1, 0.1, seed++, DType::F32);
  }
  if (t == DType::F64)
    for (auto& e : g.params.entries()) e.value = e.value.to_dtype(DType::F64);
  return g;
}

Tensor input_for(const Case& c, DType t) {
  return random_uniform(Shape{c.B, c.T, c.o.in_channels, c.o.height, c.o.width}, 0, 1, 5, t);
}

// Labels cycling over the classes, one masked entry per sample and the first step masked.
Tensor labels_for(const Case& c) {
  Tensor l = Tensor::zeros(Shape{c.B, c.T}, DType::I32);
  for (int b = 0; b < c.B; ++b)
    for (int t = 0; t < c.T; ++t)
      l.set(int64_t(b) * c.T + t, (t == 0 || t == 2 + b) ? -1 : (b + t) % c.o.n_classes);
  return l;
}

Tensor targets_for(const Case& c, DType t) {
  return random_uniform(Shape{c.B, c.T, c.o.n_classes}, 0.5, 2, 9, t);
}

BpttOptions options(const Case& c) {
  BpttOptions b;
  b.run.idle_steps = c.idle;
  b.run.input_adaption_weight = c.adaption;
  b.tbptt = c.tbptt;
  return b;
}

LossValues run(const Case& c, Graph& g, Context& ctx, const BpttOptions& opt, ParamStore* grads,
               DType t) {
  Bptt bp(ctx, g, SolverSpec(c.solver));
  return bp.run(input_for(c, t), labels_for(c), c.targets ? targets_for(c, t) : Tensor(), c.loss,
                opt, grads);
}

std::vector<Case> feature_cases() {
  std::vector<Case> cs;
  {
    DyRCNNOptions o;
    o.preset = "DyRCNNx2";
    o.height = o.width = 16;
    o.n_classes = 4;
    o.seed = 3;
    o.tau = 5;
    o.max_weight_init = 0.3;
    o.delays.t_recurrence = 2;
    cs.push_back(make("DyRCNNx2 euler full", o));
    cs.push_back(make("DyRCNNx2 rk4", o, "rk4"));
  }
  cs.push_back(make("x4 euler full skip", small_x4()));
  {
    DyRCNNOptions o = small_x4();
    o.recurrence_type = "self";
    o.feedback = "add";
    cs.push_back(make("x4 rk4 self feedback add", o, "rk4"));
  }
  {
    DyRCNNOptions o = small_x4();
    o.recurrence_type = "depthpointwise";
    o.feedback = "mul";
    cs.push_back(make("x4 exp depthpointwise feedback mul", o, "exp"));
  }
  {
    DyRCNNOptions o = small_x4();
    o.recurrence_type = "pointdepthwise";
    o.recurrence_target = "input";
    o.train_tau = true;
    cs.push_back(make("x4 euler pointdepthwise target input, trainable tau", o));
  }
  {
    DyRCNNOptions o = small_x4();
    o.recurrence_type = "local";
    o.train_tau = true;
    o.tau_softplus = true;
    cs.push_back(make("x4 euler local softplus tau", o));
  }
  {
    DyRCNNOptions o = small_x4();
    o.recurrence_type = "localdepthwise";
    o.supralinearity = 1.5;
    cs.push_back(make("x4 euler localdepthwise supralinearity 1.5", o));
  }
  {
    DyRCNNOptions o = small_x4();
    o.delays.t_feedforward = 2;
    o.feedback = "add";
    Case c = make("x4 euler t_ff 2 feedback add, idle 3, TBPTT 4", o);
    c.idle = 3;
    c.tbptt = 4;
    c.T = 10;
    cs.push_back(c);
  }
  {
    DyRCNNOptions o = small_x4();
    o.feedback = "add";
    o.train_tau = true;
    Case c = make("x4 heun feedback add (interpolated delays)", o, "heun");
    cs.push_back(c);
  }
  {
    DyRCNNOptions o = small_x4();
    o.feedback = "mul";
    o.delays.t_recurrence = 3;  // 1.5 steps: stage reads between steps
    cs.push_back(make("x4 rk4-classic feedback mul, t_rec 1.5 steps", o, "rk4-classic"));
  }
  {
    DyRCNNOptions o = small_x4();
    o.recurrence_type = "self";
    Case c = make("x4 midpoint, idle 2, TBPTT 3", o, "midpoint");
    c.idle = 2;
    c.tbptt = 3;
    cs.push_back(c);
  }
  {
    DyRCNNOptions o = small_x4();
    Case c = make("x4 euler, legacy activity loss, MSE + Poisson", o);
    c.loss.activity_weight = 0.3;
    c.loss.mse_weight = 0.5;
    c.loss.poisson_weight = 0.25;
    c.loss.poisson_log_input = true;
    c.targets = true;
    cs.push_back(c);
  }
  {
    DyRCNNOptions o = small_x4();
    Case c = make("x4 euler, marked activity (signed), input adaption", o);
    c.loss.activity_weight = 0.5;
    c.loss.activity_mode = ActivityMode::Marked;
    c.loss.activity_areas = {"V1", "IT"};
    c.loss.activity_signed = true;
    c.adaption = 0.9;
    cs.push_back(c);
  }
  {
    DyRCNNOptions o = small_x4(32);
    o.preset = "DyRCNNx8";
    o.channels = {4, 4, 4, 4};
    o.recurrence_target = "middle";
    o.delays.t_recurrence = 2;
    Case c = make("x8-shaped two-stage areas, target middle", o);
    c.T = 4;
    cs.push_back(c);
  }
  return cs;
}

}  // namespace

TEST_CASE("bptt: the forward is the scheduler's, bit for bit") {
  Context ctx;
  for (Case c : feature_cases()) {
    for (DType t : {DType::F32, DType::F64}) {
      CAPTURE(c.name);
      const std::string dt_name = dtype_name(t);
      CAPTURE(dt_name);
      Graph g = build(c, t);
      Scheduler sched(ctx, g, SolverSpec(c.solver));
      RunOptions ro = options(c).run;
      ro.record = RecordMode::None;
      const Recording rec = sched.run(input_for(c, t), ro);
      const LossValues lv = run(c, g, ctx, options(c), nullptr, t);
      require_equal(lv.logits, rec.logits, c.name + " logits");
    }
  }
}

TEST_CASE("bptt: f64 central differences of the whole unrolled model") {
  Context ctx;
  for (const Case& c : feature_cases()) {
    CAPTURE(c.name);
    Graph g = build(c, DType::F64);
    ParamStore grads = Bptt::zero_grads(ctx, g.params);
    // The cuts (idle, TBPTT) hold their values fixed in the perturbed runs: the derivative of
    // that function is exactly the truncated gradient.
    std::vector<Tensor> cuts;
    BpttOptions opt = options(c);
    opt.record_cuts = &cuts;
    const LossValues lv = run(c, g, ctx, opt, &grads, DType::F64);
    opt.record_cuts = nullptr;
    opt.frozen_cuts = &cuts;
    CHECK(cuts.empty() == (c.idle == 0 && c.tbptt == 0));
    REQUIRE(std::isfinite(lv.total));
    REQUIRE(lv.total > 0);
    int checked = 0, nonzero = 0;
    double worst = 0;
    std::string worst_at;
    for (auto& e : g.params.entries()) {
      if (!e.trainable) continue;
      // DynVision adds the self-recurrence bias only while it is nonzero (it starts at 0 and so
      // never trains); a finite difference would switch it on.
      if (c.o.recurrence_type == "self" && e.name.find(".recurrence.bias") != std::string::npos)
        continue;
      const Tensor& an = grads.get(e.name);
      // Check the element with the largest gradient and up to three others spread over the tensor.
      std::vector<int64_t> idx;
      int64_t big = 0;
      for (int64_t i = 1; i < an.numel(); ++i)
        if (std::abs(an.item(i)) > std::abs(an.item(big))) big = i;
      idx.push_back(big);
      for (int64_t i : {an.numel() / 3, (2 * an.numel()) / 3, an.numel() - 1})
        if (std::find(idx.begin(), idx.end(), i) == idx.end()) idx.push_back(i);
      for (int64_t i : idx) {
        const double p0 = e.value.item(i), eps = 1e-6;
        e.value.set(i, p0 + eps);
        const double lp = run(c, g, ctx, opt, nullptr, DType::F64).total;
        e.value.set(i, p0 - eps);
        const double lm = run(c, g, ctx, opt, nullptr, DType::F64).total;
        e.value.set(i, p0);
        const double num = (lp - lm) / (2 * eps), a = an.item(i);
        const double err = std::abs(num - a) / (1e-6 + 1e-4 * std::abs(num) + 1e-4 * std::abs(a));
        if (err > worst) {
          worst = err;
          worst_at = concat(e.name, "[", i, "]: numeric ", num, ", reverse ", a);
        }
        ++checked;
        if (std::abs(num) > 1e-9) ++nonzero;
        CHECK_MESSAGE(std::abs(num - a) <= 1e-6 + 1e-4 * std::abs(num),
                      e.name, "[", i, "]: numeric ", num, ", reverse mode ", a);
      }
    }
    MESSAGE(c.name, ": ", checked, " elements (", nonzero, " nonzero), loss ", lv.total,
            ", worst error/tolerance ", worst, " at ", worst_at);
    CHECK(nonzero > checked / 2);  // the check is not vacuous
  }
}

TEST_CASE("bptt: checkpointing gives the gradients of store-all bitwise") {
  Context ctx;
  std::vector<Case> cs = feature_cases();
  for (const Case& c : {cs[2], cs[8], cs[9], cs[11], cs[13]}) {
    for (DType t : {DType::F32, DType::F64}) {
      CAPTURE(c.name);
      Graph g = build(c, t);
      ParamStore ref = Bptt::zero_grads(ctx, g.params);
      Bptt all(ctx, g, SolverSpec(c.solver));
      const LossValues l0 = all.run(input_for(c, t), labels_for(c), {}, c.loss, options(c), &ref);
      const int64_t store_all_bytes = all.pool_bytes();
      for (int k : {1, 2, 3, 5}) {
        CAPTURE(k);
        BpttOptions opt = options(c);
        opt.memory = MemoryPolicy::Checkpoint;
        opt.checkpoint_every = k;
        ParamStore got = Bptt::zero_grads(ctx, g.params);
        Bptt ck(ctx, g, SolverSpec(c.solver));
        const LossValues l1 = ck.run(input_for(c, t), labels_for(c), {}, c.loss, opt, &got);
        CHECK(l1.total == l0.total);
        for (const auto& e : ref.entries()) require_equal(got.get(e.name), e.value, e.name);
        if (k == 1) CHECK(ck.pool_bytes() < store_all_bytes);
      }
    }
  }
}

TEST_CASE("bptt: buffers are planned once; gradients accumulate over calls") {
  Context ctx;
  Case c = feature_cases()[2];
  Graph g = build(c, DType::F64);
  Bptt bp(ctx, g);
  ParamStore once = Bptt::zero_grads(ctx, g.params), twice = Bptt::zero_grads(ctx, g.params);
  bp.run(input_for(c, DType::F64), labels_for(c), {}, c.loss, options(c), &once);
  const int64_t bytes = bp.pool_bytes();
  LossSpec half = c.loss;
  half.scale = 0.5;
  bp.run(input_for(c, DType::F64), labels_for(c), {}, half, options(c), &twice);
  CHECK(bp.pool_bytes() == bytes);  // the second sequence reuses the first one's buffers
  bp.run(input_for(c, DType::F64), labels_for(c), {}, half, options(c), &twice);
  CHECK(bp.pool_bytes() == bytes);
  for (const auto& e : once.entries()) require_close(twice.get(e.name), e.value, 1e-14, 1e-12, e.name);
}

TEST_CASE("bptt: T8 loss values (cross-entropy masking, activity losses)") {
  Context ctx;
  Case c = feature_cases()[2];
  Graph g = build(c, DType::F64);
  Bptt bp(ctx, g);
  const Tensor x = input_for(c, DType::F64);
  // CE = the sum over valid entries / their number, from the logits.
  const LossValues lv = bp.run(x, labels_for(c), {}, c.loss, options(c), nullptr);
  const Tensor lab = labels_for(c);
  double sum = 0;
  int n = 0;
  const int K = c.o.n_classes;
  for (int64_t r = 0; r < int64_t(c.B) * c.T; ++r) {
    const int y = int(lab.item(r));
    if (y < 0) continue;
    double mx = -1e300, z = 0;
    for (int k = 0; k < K; ++k) mx = std::max(mx, lv.logits.item(r * K + k));
    for (int k = 0; k < K; ++k) z += std::exp(lv.logits.item(r * K + k) - mx);
    sum += std::log(z) + mx - lv.logits.item(r * K + y);
    ++n;
  }
  CHECK(lv.valid == n);
  CHECK(lv.ce == doctest::Approx(sum / n).epsilon(1e-12));
  // Everything masked: CE 0 and no gradient.
  Tensor none = Tensor::zeros(lab.shape(), DType::I32);
  for (int64_t i = 0; i < none.numel(); ++i) none.set(i, -1);
  ParamStore gr = Bptt::zero_grads(ctx, g.params);
  const LossValues masked = bp.run(x, none, {}, c.loss, options(c), &gr);
  CHECK(masked.ce == 0);
  CHECK(masked.valid == 0);
  for (const auto& e : gr.entries())
    for (int64_t i = 0; i < e.value.numel(); ++i) REQUIRE(e.value.item(i) == 0);
  // Marked activity, absolute: per step and area mean |r| per sample, summed over steps,
  // divided by (areas * T), averaged over the batch; from the scheduler's recorded rates.
  LossSpec act;
  act.ce_weight = 0;
  act.activity_weight = 1;
  act.activity_mode = ActivityMode::Marked;
  act.activity_areas = {"V1", "V4"};
  const LossValues la = bp.run(x, {}, {}, act, options(c), nullptr);
  Scheduler sched(ctx, g);
  RunOptions ro;
  ro.record = RecordMode::Full;
  const Recording rec = sched.run(x, ro);
  double want = 0;
  for (int a : {0, 2}) {
    const Tensor& r = rec.rates[size_t(a)];
    const int64_t per = r.numel() / (int64_t(c.B) * c.T);
    for (int64_t bt = 0; bt < int64_t(c.B) * c.T; ++bt) {
      double s = 0;
      for (int64_t i = 0; i < per; ++i) s += std::abs(r.item(bt * per + i));
      want += s / double(per);
    }
  }
  want /= 2.0 * c.T * c.B;
  CHECK(la.activity == doctest::Approx(want).epsilon(1e-12));
  CHECK(la.total == doctest::Approx(want).epsilon(1e-12));
  // Unknown area names are a config error.
  act.activity_areas = {"V9"};
  CHECK_THROWS_WITH_AS(bp.run(x, {}, {}, act, options(c), nullptr),
                       doctest::Contains("unknown area 'V9'"), ConfigError);
}

TEST_CASE("bptt: T9 idle steps (DyRCNNx2, 32x32, tau 10, full recurrence)") {
  Context ctx;
  DyRCNNOptions o;
  o.preset = "DyRCNNx2";
  o.height = o.width = 32;
  o.n_classes = 10;
  o.tau = 10;
  o.seed = 1;
  Graph g = models::build_dyrcnn(o);
  const int B = 4, T = 5;
  const Tensor x = random_uniform(Shape{B, T, 3, 32, 32}, 0, 1, 2, DType::F32);
  Tensor y = Tensor::zeros(Shape{B, T}, DType::I32);
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T; ++t) y.set(int64_t(b) * T + t, b % 10);
  BpttOptions opt;
  opt.run.idle_steps = 3;
  Bptt bp(ctx, g);
  ParamStore grads = Bptt::zero_grads(ctx, g.params);
  const LossValues first = bp.run(x, y, {}, LossSpec{}, opt, &grads);
  CHECK(first.logits.shape() == Shape{B, T, 10});  // idle steps are not in the output
  for (const auto& e : grads.entries()) {
    double s = 0;
    for (int64_t i = 0; i < e.value.numel(); ++i) s += std::abs(e.value.item(i));
    CHECK_MESSAGE(s > 0, e.name, " got no gradient");
  }
  // Ten SGD steps (lr 0.01) reduce the last step's cross-entropy.
  auto last_step_ce = [&](const LossValues& lv) {
    double s = 0;
    for (int b = 0; b < B; ++b) {
      const int64_t row = (int64_t(b) * T + T - 1) * 10;
      double mx = -1e30, z = 0;
      for (int k = 0; k < 10; ++k) mx = std::max(mx, lv.logits.item(row + k));
      for (int k = 0; k < 10; ++k) z += std::exp(lv.logits.item(row + k) - mx);
      s += std::log(z) + mx - lv.logits.item(row + b % 10);
    }
    return s / B;
  };
  const double before = last_step_ce(first);
  OptimizerHyper h;
  h.lr = 0.01;
  Optimizer sgd(OptimizerKind::SGD, h);
  for (int i = 0; i < 10; ++i) {
    Bptt::zero(ctx, grads);
    bp.run(x, y, {}, LossSpec{}, opt, &grads);
    sgd.step(ctx, g.params, grads);
  }
  const double after = last_step_ce(bp.run(x, y, {}, LossSpec{}, opt, nullptr));
  MESSAGE("T9: last-step CE ", before, " -> ", after, " after ten SGD steps");
  CHECK(after < before);
  // Idle with TBPTT runs, and the cut changes the gradients.
  opt.tbptt = 2;
  ParamStore cut = Bptt::zero_grads(ctx, g.params), full = Bptt::zero_grads(ctx, g.params);
  bp.run(x, y, {}, LossSpec{}, opt, &cut);
  opt.tbptt = 0;
  bp.run(x, y, {}, LossSpec{}, opt, &full);
  double diff = 0;
  for (const auto& e : full.entries())
    for (int64_t i = 0; i < e.value.numel(); ++i)
      diff = std::max(diff, std::abs(e.value.item(i) - cut.get(e.name).item(i)));
  CHECK(diff > 0);
  // Memory during a long idle phase stays bounded (spec: < 2 GB extra at B = 16): the planned
  // buffers of a whole training step, store-all and checkpointed.
  const Tensor x16 = random_uniform(Shape{16, T, 3, 32, 32}, 0, 1, 4, DType::F32);
  Tensor y16 = Tensor::zeros(Shape{16, T}, DType::I32);
  ParamStore g16 = Bptt::zero_grads(ctx, g.params);
  opt.run.idle_steps = 10;
  // With the fused step tail (default) store-all keeps fewer values per step, so checkpointing
  // saves a smaller fraction; the separate nodes keep the original bound of one half.
  int64_t fused_all = 0;
  for (bool fused : {true, false}) {
    CAPTURE(fused);
    BpttOptions mo = opt;
    mo.fused_tail = fused;
    Bptt all(ctx, g);
    all.run(x16, y16, {}, LossSpec{}, mo, &g16);
    mo.memory = MemoryPolicy::Checkpoint;
    mo.checkpoint_every = 3;
    Bptt seg(ctx, g);
    seg.run(x16, y16, {}, LossSpec{}, mo, &g16);
    MESSAGE("T9 memory, B = 16, idle 10 + 5 steps, fused tail ", fused, ": store-all ",
            all.pool_bytes() / 1048576.0, " MiB, checkpoint every 3 steps ",
            seg.pool_bytes() / 1048576.0, " MiB");
    CHECK(all.pool_bytes() < int64_t(2) << 30);
    if (fused) {
      fused_all = all.pool_bytes();
      CHECK(double(seg.pool_bytes()) < 0.6 * double(all.pool_bytes()));
    } else {
      CHECK(seg.pool_bytes() < all.pool_bytes() / 2);
      CHECK(fused_all < all.pool_bytes());
    }
  }
}

TEST_CASE("bptt: bad input is refused with a clear message") {
  Context ctx;
  Case c = feature_cases()[2];
  Graph g = build(c, DType::F32);
  Bptt bp(ctx, g);
  const Tensor x = input_for(c, DType::F32);
  CHECK_THROWS_WITH_AS(bp.run(x.view(Shape{c.B * c.T, 3, 16, 16}), {}, {}, LossSpec{}, {}, nullptr),
                       doctest::Contains("input must be [B, T, C, H, W]"), DataError);
  CHECK_THROWS_WITH_AS(bp.run(input_for(c, DType::F64), labels_for(c), {}, LossSpec{}, {}, nullptr),
                       doctest::Contains("is f32 but the input is f64"), DataError);
  CHECK_THROWS_WITH_AS(bp.run(x, Tensor::zeros(Shape{c.B, c.T + 1}, DType::I32), {}, LossSpec{}, {}, nullptr),
                       doctest::Contains("labels must be i32"), DataError);
  CHECK_THROWS_WITH_AS(bp.run(x, {}, {}, LossSpec{}, {}, nullptr),
                       doctest::Contains("needs labels"), DataError);
  LossSpec mse;
  mse.ce_weight = 0;
  mse.mse_weight = 1;
  CHECK_THROWS_WITH_AS(bp.run(x, {}, {}, mse, {}, nullptr), doctest::Contains("need targets"),
                       DataError);
  BpttOptions bad;
  bad.memory = MemoryPolicy::Checkpoint;
  CHECK_THROWS_WITH_AS(bp.run(x, labels_for(c), {}, LossSpec{}, bad, nullptr),
                       doctest::Contains("checkpoint_every must be >= 1"), ConfigError);
  Tensor wrong = labels_for(c);
  wrong.set(1, 7);
  CHECK_THROWS_AS(bp.run(x, wrong, {}, LossSpec{}, {}, nullptr), DataError);
}

TEST_CASE("bptt and scheduler read tau anew on every run (training changes it)") {
  Context ctx;
  DyRCNNOptions o = small_x4();
  o.train_tau = true;
  Case c = make("x4 trainable tau", o);
  Graph g = build(c, DType::F32);
  Scheduler sched(ctx, g);
  RunOptions ro;
  ro.record = RecordMode::None;
  const Tensor x = input_for(c, DType::F32);
  const Recording before = sched.run(x, ro);
  g.params.get("tau_V1").set(0, 2.5);  // as an optimiser step would
  const Recording after = sched.run(x, ro);
  double diff = 0;
  for (int64_t i = 0; i < after.logits.numel(); ++i)
    diff = std::max(diff, std::abs(after.logits.item(i) - before.logits.item(i)));
  CHECK(diff > 0);
  Bptt bp(ctx, g);
  require_equal(bp.run(x, labels_for(c), {}, c.loss, options(c), nullptr).logits, after.logits,
                "logits with the new tau");
}

namespace {

// Bit for bit (memcmp: the sign of zero and NaN payloads count).
void require_bits(const Tensor& got, const Tensor& want, const std::string& what) {
  REQUIRE_MESSAGE(got.shape() == want.shape(), what, ": shape ", got.shape().str(), " vs ",
                  want.shape().str());
  REQUIRE(got.dtype() == want.dtype());
  const Tensor a = got.is_cpu() ? got : Tensor(), b = want.is_cpu() ? want : Tensor();
  REQUIRE(a.defined());
  REQUIRE(b.defined());
  if (std::memcmp(a.raw(), b.raw(), size_t(a.nbytes())) != 0) {
    require_equal(got, want, what);  // names the element where the values differ
    FAIL(what, ": equal values but different bits (the sign of a zero)");
  }
}

}  // namespace

TEST_CASE("bptt: the fused step tail gives the separate nodes' loss, logits and gradients bitwise") {
  Context ctx;
  std::vector<Case> cs;
  cs.push_back(make("x4 euler full skip", small_x4()));
  {
    DyRCNNOptions o = small_x4();
    o.recurrence_type = "self";
    o.feedback = "add";
    o.supralinearity = 1.5;
    o.train_tau = true;
    cs.push_back(make("x4 rk4 self feedback add, supralinearity 1.5, trained tau", o, "rk4"));
  }
  {
    DyRCNNOptions o = small_x4();
    o.recurrence_type = "depthpointwise";
    o.feedback = "mul";  // the areas fed back multiplicatively keep the separate nodes
    o.train_tau = true;
    o.tau_softplus = true;
    Case c = make("x4 exp depthpointwise feedback mul, softplus tau, legacy activity", o, "exp");
    c.loss.activity_weight = 0.3;
    cs.push_back(c);
  }
  {
    DyRCNNOptions o = small_x4();
    o.supralinearity = 2.0;
    Case c = make("x4 euler supralinearity 2, tau per sample, marked activity", o);
    c.loss.activity_weight = 0.5;
    c.loss.activity_mode = ActivityMode::Marked;
    c.loss.activity_areas = {"V1", "IT"};
    cs.push_back(c);
  }
  {
    DyRCNNOptions o = small_x4();
    o.delays.t_feedforward = 2;
    o.feedback = "add";
    o.train_tau = true;
    Case c = make("x4 rk4 t_ff 2, idle 3, TBPTT 4, adaption, MSE + Poisson", o, "rk4");
    c.idle = 3;
    c.tbptt = 4;
    c.T = 9;
    c.adaption = 0.9;
    c.loss.mse_weight = 0.5;
    c.loss.poisson_weight = 0.25;
    c.targets = true;
    cs.push_back(c);
  }
  {
    DyRCNNOptions o = small_x4(32);
    o.preset = "DyRCNNx8";
    o.channels = {4, 4, 4, 4};
    o.recurrence_target = "middle";
    o.delays.t_recurrence = 2;
    o.supralinearity = 1.5;
    Case c = make("x8-shaped two-stage areas, target middle, exp", o, "exp");
    c.T = 4;
    cs.push_back(c);
  }
  for (size_t ci = 0; ci < cs.size(); ++ci) {
    const Case& c = cs[ci];
    for (DType t : {DType::F32, DType::F64}) {
      CAPTURE(c.name);
      const std::string dt_name = dtype_name(t);
      CAPTURE(dt_name);
      Graph g = build(c, t);
      if (ci == 3) g.areas[1].tau_per_sample = {4.0, 9.0};
      const Tensor x = input_for(c, t), y = labels_for(c);
      const Tensor tg = c.targets ? targets_for(c, t) : Tensor();
      // The reference: the separate nodes, store-all.
      BpttOptions lit = options(c);
      lit.fused_tail = false;
      ParamStore ref = Bptt::zero_grads(ctx, g.params);
      Bptt unfused(ctx, g, SolverSpec(c.solver));
      const LossValues l0 = unfused.run(x, y, tg, c.loss, lit, &ref);
      for (int k : {0, 1, 2, 3}) {  // 0: store-all, else checkpoint every k steps
        CAPTURE(k);
        for (bool stability : {false, true}) {
          if (stability && k > 1) continue;
          CAPTURE(stability);
          BpttOptions opt = options(c);
          opt.run.stability_check = stability;
          if (k > 0) {
            opt.memory = MemoryPolicy::Checkpoint;
            opt.checkpoint_every = k;
          }
          ParamStore got = Bptt::zero_grads(ctx, g.params);
          Bptt fused(ctx, g, SolverSpec(c.solver));
          const LossValues l1 = fused.run(x, y, tg, c.loss, opt, &got);
          CHECK(std::memcmp(&l1.total, &l0.total, sizeof(double)) == 0);
          CHECK(l1.activity == l0.activity);
          require_bits(l1.logits, l0.logits, "logits");
          for (const auto& e : ref.entries()) require_bits(got.get(e.name), e.value, e.name);
          // Not vacuous: the fused step stores fewer values (no drive sums, x, relu(x)).
          if (k == 0 && !stability) CHECK(fused.pool_bytes() < unfused.pool_bytes());
        }
      }
    }
  }
}

TEST_CASE("bptt: the fused step tail leaves staged and custom solvers alone") {
  Context ctx;
  Case c = make("x4 heun", small_x4(), "heun");
  Graph g = build(c, DType::F64);
  BpttOptions lit = options(c);
  lit.fused_tail = false;
  ParamStore a = Bptt::zero_grads(ctx, g.params), b = Bptt::zero_grads(ctx, g.params);
  Bptt p(ctx, g, SolverSpec(c.solver)), q(ctx, g, SolverSpec(c.solver));
  const LossValues la = p.run(input_for(c, DType::F64), labels_for(c), {}, c.loss, options(c), &a);
  const LossValues lb = q.run(input_for(c, DType::F64), labels_for(c), {}, c.loss, lit, &b);
  CHECK(la.total == lb.total);
  CHECK(p.pool_bytes() == q.pool_bytes());  // the same nodes
  for (const auto& e : a.entries()) require_bits(e.value, b.get(e.name), e.name);
}

// ---- CPU vs CUDA (gpu suite) ------------------------------------------------------------------

TEST_CASE("bptt CPU vs CUDA: loss, logits and every gradient (fp32 TF32 off, and f64)" *
          doctest::test_suite("gpu")) {
  if (no_device()) return;
  Context cpu;
  Context gpu = cuda_context(/*deterministic=*/true);
  for (const Case& c : feature_cases()) {
    CAPTURE(c.name);
    Graph g = build(c, DType::F32);
    Graph gd = g;  // the same values, on the device
    for (auto& e : gd.params.entries()) e.value = gpu.to_device(e.value);
    const Tensor x = input_for(c, DType::F32), y = labels_for(c);
    const Tensor tg = c.targets ? targets_for(c, DType::F32) : Tensor();
    for (int k : {0, 2}) {  // store-all, checkpoint every 2 steps
      BpttOptions opt = options(c);
      if (k > 0) opt.memory = MemoryPolicy::Checkpoint, opt.checkpoint_every = k;
      ParamStore want = Bptt::zero_grads(cpu, g.params), got = Bptt::zero_grads(gpu, gd.params);
      Bptt bc(cpu, g, SolverSpec(c.solver)), bg(gpu, gd, SolverSpec(c.solver));
      const LossValues lc = bc.run(x, y, tg, c.loss, opt, &want);
      // Host input and labels on the first run, device ones on the second: the same bits.
      const LossValues lg = bg.run(x, y, tg, c.loss, opt, &got);
      for (auto [a, b, what] : {std::tuple{lg.total, lc.total, "total"}, {lg.ce, lc.ce, "ce"},
                                {lg.activity, lc.activity, "activity"}, {lg.mse, lc.mse, "mse"},
                                {lg.poisson, lc.poisson, "poisson"}})
        CHECK_MESSAGE(std::abs(a - b) <= 1e-4 * std::max(1.0, std::abs(b)), what, ": ", a, " vs ", b);
      CHECK(lg.valid == lc.valid);
      require_rel(lg.logits, lc.logits, 1e-4, "logits");
      std::vector<Tensor> first;
      for (const auto& e : want.entries()) {
        first.push_back(gpu.to_host(got.get(e.name)));
        require_rel(first.back(), e.value, 1e-4, e.name);
      }
      ParamStore again = Bptt::zero_grads(gpu, gd.params);
      const LossValues l2 = bg.run(gpu.to_device(x), gpu.to_device(y),
                                   tg.defined() ? gpu.to_device(tg) : Tensor(), c.loss, opt, &again);
      CHECK(l2.total == lg.total);
      CHECK(same_bits(l2.logits, lg.logits));
      size_t i = 0;
      for (const auto& e : want.entries())
        CHECK_MESSAGE(same_bits(gpu.to_host(again.get(e.name)), first[i++]), e.name, ": rerun");
    }
    // f64 on both devices: within 1e-10.
    Graph g64 = build(c, DType::F64), gd64 = g64;
    for (auto& e : gd64.params.entries()) e.value = gpu.to_device(e.value);
    ParamStore want = Bptt::zero_grads(cpu, g64.params), got = Bptt::zero_grads(gpu, gd64.params);
    Bptt bc(cpu, g64, SolverSpec(c.solver)), bg(gpu, gd64, SolverSpec(c.solver));
    const Tensor tg64 = c.targets ? targets_for(c, DType::F64) : Tensor();
    const LossValues lc = bc.run(input_for(c, DType::F64), y, tg64, c.loss, options(c), &want);
    const LossValues lg = bg.run(input_for(c, DType::F64), y, tg64, c.loss, options(c), &got);
    CHECK(std::abs(lg.total - lc.total) <= 1e-10 * std::max(1.0, std::abs(lc.total)));
    require_rel(lg.logits, lc.logits, 1e-10, "f64 logits");
    for (const auto& e : want.entries())
      require_rel(gpu.to_host(got.get(e.name)), e.value, 1e-10, "f64 " + e.name);
  }
}
