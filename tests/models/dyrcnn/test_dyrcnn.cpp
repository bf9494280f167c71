// DyRCNN presets and the scheduler: shapes and parameter counts (spec §2, T10), the scalar
// recurrent unit (T5), timing and latency (T6), delay rules and warnings (§4.2), the stability
// check (T4), absent-vs-zero semantics.
#include <cmath>

#include "engine/dynamics/scheduler.h"
#include "models/dyrcnn/dyrcnn.h"
#include "tests/harness.h"

using namespace dynsim;
using namespace dynsim::test;
using models::DyRCNNOptions;

namespace {

DyRCNNOptions opts(const std::string& preset, int size, int K) {
  DyRCNNOptions o;
  o.preset = preset;
  o.height = o.width = size;
  o.n_classes = K;
  return o;
}

int64_t trainable(const DyRCNNOptions& o) { return models::build_dyrcnn(o).params.count(true); }

Tensor constant_input(int B, int T, int C, int H, int W, double v) {
  Tensor x = Tensor::empty(Shape{B, T, C, H, W});
  x.fill(v);
  return x;
}

}  // namespace

TEST_CASE("DyRCNN: area sizes (spec §2.1, §2.2)") {
  struct Want {
    std::string preset;
    int size;
    std::vector<std::array<int, 2>> areas;  // channels, height
  };
  const std::vector<Want> wants = {
      {"DyRCNNx4", 32, {{36, 32}, {64, 16}, {121, 8}, {256, 4}}},
      {"DyRCNNx4", 64, {{36, 64}, {64, 32}, {121, 16}, {256, 8}}},
      {"DyRCNNx4", 224, {{36, 224}, {64, 112}, {121, 56}, {256, 28}}},
      {"DyRCNNx8", 224, {{64, 112}, {144, 28}, {256, 7}, {529, 4}}},
      {"DyRCNNx8", 64, {{64, 32}, {144, 8}, {256, 2}, {529, 1}}},
      {"DyRCNNx2", 32, {{36, 32}, {64, 16}}},
  };
  for (const Want& w : wants) {
    Graph g = models::build_dyrcnn(opts(w.preset, w.size, 10));
    REQUIRE(g.areas.size() == w.areas.size());
    for (size_t i = 0; i < w.areas.size(); ++i) {
      CHECK(g.areas[i].channels == w.areas[i][0]);
      CHECK(g.areas[i].height == w.areas[i][1]);
      CHECK(g.areas[i].width == w.areas[i][1]);
    }
  }
}

TEST_CASE("DyRCNN: trainable parameter counts match DynVision (T10)") {
  DyRCNNOptions o = opts("DyRCNNx4", 32, 10);
  CHECK(trainable(o) == 1164950);
  for (auto [type, n] : std::vector<std::pair<std::string, int64_t>>{
           {"self", 394360}, {"depthpointwise", 485168}, {"pointdepthwise", 485168},
           {"local", 394408}, {"localdepthwise", 399178}, {"none", 394352}}) {
    DyRCNNOptions r = o;
    r.recurrence_type = type;
    CHECK_MESSAGE(trainable(r) == n, type);
  }
  DyRCNNOptions in = o;
  in.recurrence_target = "input";
  CHECK(trainable(in) == 764764);
  DyRCNNOptions ff = o;
  ff.feedforward_only = true;
  CHECK(trainable(ff) == 373235);
  for (auto [K, n] : std::vector<std::pair<int, int64_t>>{{100, 1188080}, {200, 1213780}, {1000, 1419380}}) {
    DyRCNNOptions k = o;
    k.n_classes = K;
    CHECK(trainable(k) == n);
  }
  DyRCNNOptions dp64 = opts("DyRCNNx4", 64, 200);
  dp64.recurrence_type = "depthpointwise";
  CHECK(trainable(dp64) == 533998);
  CHECK(trainable(opts("DyRCNNx8", 224, 1000)) == 9059494);
  DyRCNNOptions x8dp = opts("DyRCNNx8", 224, 1000);
  x8dp.recurrence_type = "depthpointwise";
  CHECK(trainable(x8dp) == 6043240);
  CHECK(trainable(opts("DyRCNNx2", 32, 10)) == 73454);
  // Four frozen tau scalars in x4 and x8; x2 keeps tau as a plain number.
  Graph g = models::build_dyrcnn(o);
  CHECK(g.params.count(false) - g.params.count(true) == 4);
  CHECK(g.params.has("tau_IT"));
  CHECK(g.params.has("addskip_V4.conv.weight"));
  CHECK(g.params.has("classifier.2.weight"));
  CHECK(g.params.get("addskip_V4.conv.weight").shape() == Shape{121, 36, 1, 1});
}

TEST_CASE("scheduler T5: scalar recurrent unit, Euler and RK4") {
  const double euler[] = {0.4, 0.64, 0.784, 0.7904, 0.74624, 0.690944, 0.656486, 0.644644};
  const double rk4[] = {0.4, 0.59776, 0.730338, 0.753299, 0.736101, 0.702722, 0.676561, 0.661857};
  for (std::string solver : {"euler", "rk4"}) {
    Graph g;
    g.input_channels = 1;
    g.input_height = g.input_width = 1;
    Area a;
    a.name = "A";
    a.channels = a.height = a.width = 1;
    a.tau = 5;
    g.areas.push_back(a);
    Connection ff;
    ff.name = "A.conv";
    ff.source = kExternalInput;
    ff.target = 0;
    ff.op.kind = OpKind::Conv;
    ff.op.in_channels = ff.op.out_channels = 1;
    ff.op.kernel = 1;
    ff.op.in_h = ff.op.in_w = 1;
    ff.op.bias = false;
    ff.op.params = {"A.conv.weight"};
    g.params.add("A.conv.weight", Tensor::from(Shape{1, 1, 1, 1}, {1.0}));
    g.connections.push_back(ff);
    Connection rc;
    rc.name = "A.recurrence";
    rc.source = rc.target = 0;
    rc.kind = ConnKind::Recurrent;
    rc.op.kind = OpKind::Self;
    rc.op.in_channels = rc.op.out_channels = 1;
    rc.op.in_h = rc.op.in_w = 1;
    rc.op.params = {"A.recurrence.weight", "A.recurrence.bias"};
    g.params.add("A.recurrence.weight", Tensor::from(Shape{}, {-0.5}));
    g.params.add("A.recurrence.bias", Tensor::from(Shape{}, {0.0}));
    g.connections.push_back(rc);
    g.delays.dt = 2;
    g.delays.t_recurrence = 6;
    g.resolve_delays();
    g.validate();
    CHECK(g.ring_capacity == 3);
    Context ctx;
    Scheduler s(ctx, g, {solver});
    RunOptions ro;
    ro.record = RecordMode::Full;
    Recording r = s.run(constant_input(1, 8, 1, 1, 1, 1.0), ro);
    for (int t = 0; t < 8; ++t)
      CHECK_MESSAGE(r.rates[0].item(t) ==
                        doctest::Approx(solver == "euler" ? euler[t] : rk4[t]).epsilon(2e-6),
                    solver, " t=", t);
  }
}

TEST_CASE("scheduler T6: logits are exactly 0 for t < 4k, and the recurrence waits d steps") {
  for (int k : {0, 1, 2}) {
    DyRCNNOptions o = opts("DyRCNNx4", 32, 5);
    o.skip = false;  // DynVision cannot combine t_ff > 0 with skip (spec §4.4)
    o.delays.t_feedforward = 2.0 * k;
    Graph g = models::build_dyrcnn(o);
    Context ctx;
    Scheduler s(ctx, g);
    Recording r = s.run(test::random_uniform(Shape{2, 12, 3, 32, 32}, 0.1, 1, 9, DType::F32));
    for (int t = 0; t < 12; ++t) {
      double mx = 0;
      for (int b = 0; b < 2; ++b)
        for (int c = 0; c < 5; ++c) mx = std::max(mx, std::abs(r.logits.item((b * 12 + t) * 5 + c)));
      if (t < 4 * k)
        CHECK_MESSAGE(mx == 0.0, "k=", k, " t=", t);
      else
        CHECK_MESSAGE(mx > 0.0, "k=", k, " t=", t);
    }
    // Area i (0-based) first becomes present at step i*k.
    for (size_t a = 0; a < 4; ++a)
      for (int t = 0; t < 12; ++t) CHECK(bool(r.present[a][size_t(t)]) == (t >= int(a) * k));
  }
}

TEST_CASE("delays: DynVision's int/round rules and never-delivering connections warn") {
  DyRCNNOptions o = opts("DyRCNNx4", 32, 10);
  o.delays.dt = 2;
  o.delays.t_recurrence = 4;
  o.delays.t_skip = 3;  // round(1.5) = 2 -> index 3 > N = 2
  Graph g = models::build_dyrcnn(o);
  CHECK(g.ring_capacity == 2);
  bool warned = false;
  for (const auto& w : g.warnings) warned |= w.find("addskip_V4") != std::string::npos;
  CHECK(warned);
  for (const Connection& c : g.connections)
    if (c.kind == ConnKind::Skip) CHECK_FALSE(c.delivers);
  o.delays.strict = true;
  CHECK_THROWS_WITH_AS(models::build_dyrcnn(o), doctest::Contains("can never deliver"),
                       ConfigError);

  DyRCNNOptions f = opts("DyRCNNx4", 32, 10);
  f.feedback = "add";
  f.delays.dt = 2;
  f.delays.t_recurrence = 4;
  f.delays.t_feedback = 7;  // round(3.5) = 4 > N = int(7/2) = 3
  Graph gf = models::build_dyrcnn(f);
  CHECK(gf.ring_capacity == 3);
  for (const Connection& c : gf.connections)
    if (c.kind == ConnKind::Feedback) {
      CHECK(c.delay_steps == 4);
      CHECK_FALSE(c.delivers);
    }
  // 0.7 / 0.1 = 6.999...: int() truncates to 6 (spec §4.2).
  DyRCNNOptions t = opts("DyRCNNx4", 32, 10);
  t.delays.dt = 0.1;
  t.delays.t_recurrence = 0.7;
  Graph gt = models::build_dyrcnn(t);
  for (const Connection& c : gt.connections)
    if (c.kind == ConnKind::Recurrent) CHECK(c.delay_steps == 6);
  CHECK(round_half_even(2.5) == 2);
  CHECK(round_half_even(3.5) == 4);
}

TEST_CASE("DyRCNN: the softplus tau parametrisation gives the same dynamics") {
  DyRCNNOptions o = opts("DyRCNNx4", 16, 3);
  o.tau = 3.0;
  o.tau_per_area["IT"] = 7.0;
  Graph raw = models::build_dyrcnn(o);
  o.tau_softplus = true;
  Graph sp = models::build_dyrcnn(o);
  CHECK(sp.params.has("tau_softplus_IT"));
  CHECK_FALSE(sp.params.has("tau_IT"));
  CHECK(std::log1p(std::exp(sp.params.get("tau_softplus_IT").item(0))) == doctest::Approx(7.0));
  Tensor x = test::random_uniform(Shape{1, 6, 3, 16, 16}, 0, 1, 4, DType::F32);
  Context c1, c2;
  Scheduler s1(c1, raw), s2(c2, sp);
  Recording a = s1.run(x), b = s2.run(x);
  require_close(b.logits, a.logits, 1e-6, 1e-5, "softplus vs raw tau");
}

TEST_CASE("DyRCNN: invalid options are config errors naming the option") {
  DyRCNNOptions o = opts("DyRCNNx4", 32, 10);
  o.recurrence_type = "depthwise";
  CHECK_THROWS_WITH_AS(models::build_dyrcnn(o), doctest::Contains("recurrence_type 'depthwise'"),
                       ConfigError);
  o = opts("DyRCNNx4", 32, 10);
  o.recurrence_target = "middle";
  CHECK_THROWS_WITH_AS(models::build_dyrcnn(o), doctest::Contains("needs two-stage areas"),
                       ConfigError);
  CHECK_THROWS_AS(models::build_dyrcnn(opts("DyRCNNx5", 32, 10)), ConfigError);
  CHECK_THROWS_WITH_AS(models::build_dyrcnn(opts("DyRCNNx4", 30, 10)),
                       doctest::Contains("divisible by 8"), ConfigError);
}

TEST_CASE("scheduler T4: the opt-in stability check names the area and the step") {
  DyRCNNOptions o = opts("DyRCNNx2", 16, 3);
  Graph g = models::build_dyrcnn(o);
  Context ctx;
  Scheduler s(ctx, g);
  Tensor x = constant_input(1, 3, 3, 16, 16, 1.0);
  x.set(3 * 16 * 16 + 5, std::numeric_limits<double>::infinity());  // frame t = 1
  RunOptions ro;
  ro.stability_check = true;
  CHECK_THROWS_WITH_AS(s.run(x, ro), doctest::Contains("area layer1 at step 1"), Error);
  ro.stability_check = false;
  CHECK_NOTHROW(s.run(x, ro));
}

TEST_CASE("local recurrence types cannot target a feedforward input of another width") {
  DyRCNNOptions o = opts("DyRCNNx4", 16, 4);
  o.recurrence_type = "localdepthwise";
  o.recurrence_target = "input";
  CHECK_THROWS_WITH_AS(models::build_dyrcnn(o),
                       doctest::Contains("cannot feed an input of 3 channels"), ConfigError);
}

TEST_CASE("scheduler: every preset and recurrence type runs; reruns are identical") {
  struct Combo {
    std::string preset, type, feedback, target;
  };
  std::vector<Combo> combos;
  for (std::string preset : {"DyRCNNx2", "DyRCNNx4", "DyRCNNx8"})
    for (std::string type : {"full", "self", "depthpointwise", "pointdepthwise", "local",
                             "localdepthwise", "none"})
      combos.push_back({preset, type, "none", "output"});
  for (std::string preset : {"DyRCNNx2", "DyRCNNx4", "DyRCNNx8"})
    for (std::string fb : {"add", "mul"}) combos.push_back({preset, "full", fb, "output"});
  combos.push_back({"DyRCNNx4", "full", "none", "input"});
  combos.push_back({"DyRCNNx8", "full", "none", "middle"});
  combos.push_back({"DyRCNNx8", "depthpointwise", "none", "input"});
  for (const Combo& k : combos) {
    const std::string what = k.preset + " " + k.type + " fb " + k.feedback + " target " + k.target;
    DyRCNNOptions o = opts(k.preset, 16, 4);
    o.recurrence_type = k.type;
    o.recurrence_target = k.target;
    o.feedback = k.feedback;
    o.delays.t_feedback = 4;
    o.max_weight_init = 0.05;  // recurrence that visibly matters
    Graph g = models::build_dyrcnn(o);
    Context ctx;
    Scheduler s(ctx, g);
    Tensor x = test::random_uniform(Shape{2, 5, 3, 16, 16}, 0, 1, 3, DType::F32);
    Recording a = s.run(x), b = s.run(x);
    require_equal(a.logits, b.logits, what);
    double mx = 0;
    for (int64_t i = 0; i < a.logits.numel(); ++i) mx = std::max(mx, std::abs(a.logits.item(i)));
    CHECK_MESSAGE(mx > 0, what);
    for (const Tensor& m : a.mean_abs) CHECK_MESSAGE(std::isfinite(m.item(m.numel() - 1)), what);
    // The recurrence changes the result (none excepted): compare with the lesioned model.
    if (k.type != "none") {
      DyRCNNOptions ff = o;
      ff.feedforward_only = true;
      ff.feedback = "none";
      Graph gf = models::build_dyrcnn(ff);
      for (auto& e : gf.params.entries()) e.value = g.params.get(e.name);
      Context cf;
      Scheduler sf(cf, gf);
      Recording c = sf.run(x);
      double diff = 0;
      for (int64_t i = 0; i < a.logits.numel(); ++i)
        diff = std::max(diff, std::abs(a.logits.item(i) - c.logits.item(i)));
      CHECK_MESSAGE(diff > 0, what, ": recurrence has no effect");
    }
  }
}
