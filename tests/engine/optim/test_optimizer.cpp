// Optimisers (engine/optim/optimizer.h, kernels/optim.h): exact updates on hand-computed dyadic
// cases, multi-step agreement with a plain-loop transcription of torch's formulas, per-group lr
// factors, frozen parameters, gradient clipping, the cosine schedule, state round trips, bad
// arguments and agreement with torch.optim.SGD / Adam / AdamW (torch suite).
#include <cmath>

#include "engine/optim/optimizer.h"
#include "kernels/dispatch.h"
#include "tests/harness.h"

using namespace dynsim;
using namespace dynsim::test;

namespace {

Tensor vec(std::vector<double> v, DType t) {
  return Tensor::from({int64_t(v.size())}, v, t);
}

// torch's single-tensor formulas written out in T, element by element (the reference).
template <class T>
void ref_sgd(std::vector<T>& p, const std::vector<T>& g, std::vector<T>& buf, bool first, double lr,
             double mu, double wd, bool nesterov) {
  for (size_t i = 0; i < p.size(); ++i) {
    T d = std::fma(p[i], T(wd), g[i]);
    if (mu != 0.0) {
      buf[i] = first ? d : T(buf[i] * T(mu) + d);
      d = nesterov ? std::fma(buf[i], T(mu), d) : buf[i];
    }
    p[i] = std::fma(d, T(-lr), p[i]);
  }
}
template <class T>
void ref_adam(std::vector<T>& p, const std::vector<T>& g0, std::vector<T>& m, std::vector<T>& v,
              int t, double lr, double b1, double b2, double eps, double wd, bool decoupled) {
  const double bc1 = 1 - std::pow(b1, double(t)), bc2 = 1 - std::pow(b2, double(t));
  for (size_t i = 0; i < p.size(); ++i) {
    T g = g0[i];
    if (!decoupled && wd != 0) g = std::fma(p[i], T(wd), g);
    if (decoupled) p[i] = p[i] * T(1 - lr * wd);
    m[i] = std::fma(g, T(1 - b1), T(m[i] * T(b1)));
    v[i] = std::fma(T(T(1 - b2) * g), g, T(v[i] * T(b2)));
    const T denom = T(T(std::sqrt(v[i]) / T(std::sqrt(bc2))) + T(eps));
    p[i] = p[i] + T(T(T(-(lr / bc1)) * m[i]) / denom);
  }
}

template <class T>
std::vector<T> values(const Tensor& t) {
  std::vector<T> out;
  for (double x : t.to_vector()) out.push_back(T(x));
  return out;
}
template <class T>
Tensor as_tensor(const std::vector<T>& v) {
  return vec(std::vector<double>(v.begin(), v.end()), dtype_of<T>());
}

ParamStore store(const std::vector<std::pair<std::string, Tensor>>& items,
                 const std::vector<bool>& trainable = {}) {
  ParamStore s;
  for (size_t i = 0; i < items.size(); ++i)
    s.add(items[i].first, items[i].second, trainable.empty() ? true : bool(trainable[i]));
  return s;
}

}  // namespace

TEST_CASE("optim: SGD updates on hand-computed dyadic values") {
  Context ctx;
  for (DType t : {DType::F32, DType::F64}) {
    CAPTURE(std::string(dtype_name(t)));
    // p 1, g 0.5, lr 0.25, wd 0.5, momentum 0.5: d = 1, buf = 1, p = 0.75; then
    // d = 0.5 + 0.5 * 0.75 = 0.875, buf = 0.5 + 0.875 = 1.375, p = 0.75 - 0.34375 = 0.40625.
    OptimizerHyper h;
    h.lr = 0.25;
    h.momentum = 0.5;
    h.weight_decay = 0.5;
    Optimizer opt(OptimizerKind::SGD, h);
    ParamStore p = store({{"w", vec({1.0, -2.0}, t)}});
    ParamStore g = store({{"w", vec({0.5, 1.0}, t)}});
    opt.step(ctx, p, g);
    // second element: d = 1 - 1 = 0, buf = 0, p = -2.
    require_equal(p.get("w"), vec({0.75, -2.0}, t), "sgd step 1");
    opt.step(ctx, p, g);
    // second: d = 1 - 1 = 0, buf = 0.5 * 0 + 0 = 0, p = -2.
    require_equal(p.get("w"), vec({0.40625, -2.0}, t), "sgd step 2");

    // Nesterov: step 1 d = 1 + 0.5 * 1 = 1.5, p = 1 - 0.375 = 0.625.
    h.nesterov = true;
    Optimizer nes(OptimizerKind::SGD, h);
    ParamStore q = store({{"w", vec({1.0}, t)}});
    nes.step(ctx, q, store({{"w", vec({0.5}, t)}}));
    require_equal(q.get("w"), vec({0.625}, t), "nesterov step 1");

    // Plain SGD, no momentum, no decay: p -= lr g.
    OptimizerHyper plain;
    plain.lr = 0.5;
    Optimizer sgd(OptimizerKind::SGD, plain);
    ParamStore r = store({{"w", vec({3.0, -1.0}, t)}});
    sgd.step(ctx, r, store({{"w", vec({2.0, -4.0}, t)}}));
    require_equal(r.get("w"), vec({2.0, 1.0}, t), "plain sgd");
    CHECK(sgd.state().size() == 1);  // only the step count: no momentum buffer
  }
}

TEST_CASE("optim: Adam and AdamW first step on hand-computed dyadic values") {
  Context ctx;
  for (DType t : {DType::F32, DType::F64}) {
    CAPTURE(std::string(dtype_name(t)));
    // beta1 0.5, beta2 0.75, eps 0, lr 0.25, g 2: m = 1, v = 1, bias corrections 0.5, 0.25,
    // denom = 1 / 0.5 = 2, step size 0.5: p -= 0.25.
    OptimizerHyper h;
    h.lr = 0.25;
    h.beta1 = 0.5;
    h.beta2 = 0.75;
    h.eps = 0.0;
    Optimizer adam(OptimizerKind::Adam, h);
    ParamStore p = store({{"w", vec({1.0, 0.0}, t)}});
    adam.step(ctx, p, store({{"w", vec({2.0, -2.0}, t)}}));
    require_equal(p.get("w"), vec({0.75, 0.25}, t), "adam step 1");
    auto st = adam.state();
    REQUIRE(st.size() == 3);
    CHECK(st[0].first == "w.step");
    CHECK(st[1].first == "w.exp_avg");
    require_equal(st[1].second, vec({1.0, -1.0}, t), "exp_avg");
    require_equal(st[2].second, vec({1.0, 1.0}, t), "exp_avg_sq");

    // Coupled decay (Adam): wd 0.5, p 1, g 1.5 -> g' = 2 -> p = 0.75.
    h.weight_decay = 0.5;
    Optimizer coupled(OptimizerKind::Adam, h);
    ParamStore q = store({{"w", vec({1.0}, t)}});
    coupled.step(ctx, q, store({{"w", vec({1.5}, t)}}));
    require_equal(q.get("w"), vec({0.75}, t), "adam coupled decay");

    // Decoupled decay (AdamW): p = 1 * (1 - 0.25 * 0.5) = 0.875, then -0.25 for g 2.
    Optimizer decoupled(OptimizerKind::AdamW, h);
    ParamStore r = store({{"w", vec({1.0}, t)}});
    decoupled.step(ctx, r, store({{"w", vec({2.0}, t)}}));
    require_equal(r.get("w"), vec({0.625}, t), "adamw decoupled decay");
  }
}

TEST_CASE("optim: several steps equal torch's formulas written out (f32 and f64)") {
  Context ctx;
  auto run = [&](auto tag, OptimizerKind kind, bool nesterov) {
    using T = decltype(tag);
    const DType t = dtype_of<T>();
    OptimizerHyper h;
    h.lr = kind == OptimizerKind::SGD ? 0.05 : 1e-3;
    h.momentum = 0.9;
    h.nesterov = nesterov;
    h.weight_decay = kind == OptimizerKind::AdamW ? 1e-2 : 5e-4;
    Optimizer opt(kind, h);
    Tensor w0 = random_uniform({37}, -1, 1, 5, t);
    ParamStore p = store({{"w", w0.clone()}});
    std::vector<T> rp = values<T>(w0), buf(37), m(37), v(37);
    for (int s = 1; s <= 6; ++s) {
      Tensor g = random_uniform({37}, -2, 2, 100 + s, t);
      opt.step(ctx, p, store({{"w", g}}));
      if (kind == OptimizerKind::SGD)
        ref_sgd(rp, values<T>(g), buf, s == 1, h.lr, h.momentum, h.weight_decay, nesterov);
      else
        ref_adam(rp, values<T>(g), m, v, s, h.lr, h.beta1, h.beta2, h.eps, h.weight_decay,
                 kind == OptimizerKind::AdamW);
      require_equal(p.get("w"), as_tensor(rp), concat("step ", s));
    }
  };
  for (auto k : {OptimizerKind::SGD, OptimizerKind::Adam, OptimizerKind::AdamW}) {
    CAPTURE(int(k));
    run(float{}, k, false);
    run(double{}, k, false);
  }
  run(float{}, OptimizerKind::SGD, true);
  run(double{}, OptimizerKind::SGD, true);
}

TEST_CASE("optim: per-group learning-rate factors, first matching rule wins") {
  Context ctx;
  OptimizerHyper h;
  h.lr = 1.0;
  Optimizer opt(OptimizerKind::SGD, h, dynvision_param_groups());
  CHECK(opt.lr_factor("V1.conv.weight") == 1.0);
  CHECK(opt.lr_factor("V1.recurrence.weight") == 0.2);
  CHECK(opt.lr_factor("V2.feedback.bias") == 0.5);
  CHECK(opt.lr_factor("recurrence_feedback") == 0.2);  // both match: the first rule
  ParamStore p = store({{"a.weight", vec({1.0}, DType::F64)},
                        {"a.recurrence.weight", vec({1.0}, DType::F64)},
                        {"a.feedback.weight", vec({1.0}, DType::F64)}});
  ParamStore g = store({{"a.weight", vec({0.5}, DType::F64)},
                        {"a.recurrence.weight", vec({0.5}, DType::F64)},
                        {"a.feedback.weight", vec({0.5}, DType::F64)}});
  opt.step(ctx, p, g);
  CHECK(p.get("a.weight").item(0) == 0.5);
  CHECK(p.get("a.recurrence.weight").item(0) == 1.0 - 0.2 * 0.5);
  CHECK(p.get("a.feedback.weight").item(0) == 0.75);
  opt.set_lr(2.0);
  CHECK(opt.lr() == 2.0);
  opt.step(ctx, p, g);
  CHECK(p.get("a.feedback.weight").item(0) == 0.25);
  CHECK_THROWS_AS(opt.set_lr(-1.0), ConfigError);
}

TEST_CASE("optim: only trainable parameters move; frozen ones need no gradient") {
  Context ctx;
  for (auto k : {OptimizerKind::SGD, OptimizerKind::Adam, OptimizerKind::AdamW}) {
    CAPTURE(int(k));
    OptimizerHyper h;
    h.lr = 0.1;
    h.momentum = 0.9;
    h.weight_decay = 0.01;
    Optimizer opt(k, h);
    ParamStore p =
        store({{"w", vec({1.0, 2.0}, DType::F32)}, {"tau", vec({5.0}, DType::F32)}}, {true, false});
    ParamStore g = store({{"w", vec({0.5, 0.5}, DType::F32)}});
    opt.step(ctx, p, g);
    opt.step(ctx, p, g);
    CHECK(p.get("tau").item(0) == 5.0);
    CHECK(p.get("w").item(0) != 1.0);
    for (const auto& [name, t] : opt.state()) CHECK(name.rfind("w.", 0) == 0);
    // A missing or misshapen gradient of a trainable parameter is an error.
    CHECK_THROWS_WITH_AS(opt.step(ctx, p, ParamStore{}),
                         doctest::Contains("no gradient for parameter 'w'"), DataError);
    CHECK_THROWS_WITH_AS(opt.step(ctx, p, store({{"w", vec({1.0}, DType::F32)}})),
                         doctest::Contains("gradient of 'w'"), DataError);
  }
}

TEST_CASE("optim: clip_grad_norm scales by max_norm / (norm + 1e-6) only above max_norm") {
  Context ctx;
  for (DType t : {DType::F32, DType::F64}) {
    CAPTURE(std::string(dtype_name(t)));
    auto make = [&] {
      return store(
          {{"a", vec({3.0, 0.0}, t)}, {"b", vec({4.0, 12.0}, t)}, {"frozen", vec({100.0}, t)}},
          {true, true, false});
    };
    ParamStore g = make();
    const double norm = clip_grad_norm(ctx, g, 6.5);
    CHECK(norm == 13.0);  // sqrt(9 + 16 + 144); the frozen entry does not count
    const double coef = 6.5 / (13.0 + 1e-6);
    require_close(g.get("a"), vec({3.0 * coef, 0.0}, t), 0, 1e-7, "a clipped");
    require_close(g.get("b"), vec({4.0 * coef, 12.0 * coef}, t), 0, 1e-7, "b clipped");
    CHECK(g.get("frozen").item(0) == 100.0);
    ParamStore h = make();
    CHECK(clip_grad_norm(ctx, h, 20.0) == 13.0);
    require_equal(h.get("b"), vec({4.0, 12.0}, t), "not clipped below max_norm");
  }
  ParamStore g;
  CHECK_THROWS_AS(clip_grad_norm(ctx, g, 0.0), ConfigError);
}

TEST_CASE("optim: cosine schedule (torch CosineAnnealingLR closed form)") {
  CHECK(cosine_lr(1.0, 0, 500) == 1.0);
  CHECK(cosine_lr(1.0, 300, 500) == doctest::Approx(0.3454915028125263).epsilon(1e-14));
  CHECK(cosine_lr(1.0, 300, 500) == doctest::Approx(0.345).epsilon(2e-3));  // the spec's value
  CHECK(cosine_lr(1e-3, 250, 500) == doctest::Approx(0.5e-3).epsilon(1e-12));
  CHECK(cosine_lr(1.0, 500, 500, 0.1) == doctest::Approx(0.1).epsilon(1e-14));
  CHECK(cosine_lr(2.0, 100, 400, 0.5) ==
        doctest::Approx(0.5 + 1.5 * (1 + std::cos(M_PI / 4)) / 2).epsilon(1e-14));
  CHECK_THROWS_AS(cosine_lr(1.0, 1, 0), ConfigError);
}

TEST_CASE("optim: state round trip continues bit-identically; bad state is a DataError") {
  Context ctx;
  for (auto k : {OptimizerKind::SGD, OptimizerKind::Adam, OptimizerKind::AdamW}) {
    CAPTURE(int(k));
    OptimizerHyper h;
    h.lr = 0.01;
    h.momentum = 0.9;
    h.weight_decay = 1e-3;
    Optimizer a(k, h, dynvision_param_groups());
    ParamStore p = store({{"x.weight", random_uniform({3, 4}, -1, 1, 1, DType::F32)},
                          {"x.recurrence.weight", random_uniform({5}, -1, 1, 2, DType::F32)},
                          {"tau", random_uniform({1}, 1, 2, 3, DType::F32)}},
                         {true, true, false});
    auto grads = [&](int s) {
      return store({{"x.weight", random_uniform({3, 4}, -1, 1, 10 + s, DType::F32)},
                    {"x.recurrence.weight", random_uniform({5}, -1, 1, 20 + s, DType::F32)}});
    };
    a.step(ctx, p, grads(0));
    a.step(ctx, p, grads(1));
    auto saved = a.state();
    // Deep copies, as a checkpoint file would hold.
    for (auto& [name, t] : saved) t = t.clone();
    ParamStore q = store({{"x.weight", p.get("x.weight").clone()},
                          {"x.recurrence.weight", p.get("x.recurrence.weight").clone()},
                          {"tau", p.get("tau").clone()}},
                         {true, true, false});
    Optimizer b(k, h, dynvision_param_groups());
    b.load_state(ctx, saved, q);
    for (int s = 2; s < 5; ++s) {
      a.step(ctx, p, grads(s));
      b.step(ctx, q, grads(s));
    }
    require_equal(q.get("x.weight"), p.get("x.weight"), "resumed x.weight");
    require_equal(q.get("x.recurrence.weight"), p.get("x.recurrence.weight"), "resumed rec");
    auto sa = a.state(), sb = b.state();
    REQUIRE(sa.size() == sb.size());
    for (size_t i = 0; i < sa.size(); ++i) {
      CHECK(sa[i].first == sb[i].first);
      require_equal(sb[i].second, sa[i].second, sa[i].first);
    }

    // Bad states.
    const std::string field = k == OptimizerKind::SGD ? ".momentum_buffer" : ".exp_avg";
    auto without = saved;
    without.erase(without.begin() + 1);  // x.weight's first field
    const std::string missing_msg = concat("missing entry 'x.weight", field, "'");
    CHECK_THROWS_WITH_AS(b.load_state(ctx, without, q), doctest::Contains(missing_msg.c_str()),
                         DataError);
    auto misshapen = saved;
    misshapen[1].second = Tensor::zeros({4, 3});
    const std::string shape_msg = concat("'x.weight", field, "' is f32[4,3]");
    CHECK_THROWS_WITH_AS(b.load_state(ctx, misshapen, q), doctest::Contains(shape_msg.c_str()),
                         DataError);
    auto extra = saved;
    extra.emplace_back("tau.step", Tensor::from({1}, {1.0}, DType::F64));
    CHECK_THROWS_WITH_AS(b.load_state(ctx, extra, q),
                         doctest::Contains("unexpected entry 'tau.step'"), DataError);
    auto zero_step = saved;
    zero_step[0].second = Tensor::from({1}, {0.0}, DType::F64);
    CHECK_THROWS_WITH_AS(b.load_state(ctx, zero_step, q),
                         doctest::Contains("'x.weight.step' must be a positive integer"),
                         DataError);
    b.load_state(ctx, {}, q);  // reset
    CHECK(b.state().empty());
  }
}

TEST_CASE("optim: accumulate adds gradients by name") {
  Context ctx;
  ParamStore into = store({{"w", vec({1.0, 2.0}, DType::F32)}});
  accumulate(ctx, into, store({{"w", vec({0.5, -4.0}, DType::F32)}}));
  require_equal(into.get("w"), vec({1.5, -2.0}, DType::F32), "accumulated");
  CHECK_THROWS_WITH_AS(accumulate(ctx, into, store({{"v", vec({1.0}, DType::F32)}})),
                       doctest::Contains("no gradient named 'v'"), DataError);
}

TEST_CASE("optim: kernels reject bad arguments") {
  Context ctx;
  Tensor p = Tensor::zeros({4}), g = Tensor::zeros({4}), bad = Tensor::zeros({3});
  SgdParams sp;
  sp.momentum = 0.9;
  CHECK_THROWS_WITH_AS(ops::sgd_step(ctx, sp, p, bad, g), doctest::Contains("sgd_step: grad"),
                       DataError);
  CHECK_THROWS_WITH_AS(ops::sgd_step(ctx, sp, p, g, bad),
                       doctest::Contains("sgd_step: momentum_buf"), DataError);
  CHECK_THROWS_WITH_AS(ops::sgd_step(ctx, sp, p, g, Tensor::zeros({4}, DType::F64)),
                       doctest::Contains("sgd_step: momentum_buf"), DataError);
  AdamParams ap;
  CHECK_THROWS_WITH_AS(ops::adam_step(ctx, ap, p, g, bad, g),
                       doctest::Contains("adam_step: exp_avg"), DataError);
  CHECK_THROWS_WITH_AS(ops::adam_step(ctx, ap, p, g, g, bad),
                       doctest::Contains("adam_step: exp_avg_sq"), DataError);
  ap.step = 0;
  CHECK_THROWS_WITH_AS(ops::adam_step(ctx, ap, p, g, g, g), doctest::Contains("step must be >= 1"),
                       DataError);
  ap.step = 1;
  ap.beta2 = 1.0;
  CHECK_THROWS_WITH_AS(ops::adam_step(ctx, ap, p, g, g, g), doctest::Contains("betas"), DataError);
  CHECK_THROWS_WITH_AS(ops::adam_step(ctx, AdamParams{}, Tensor::zeros({4}, DType::I32), g, g, g),
                       doctest::Contains("adam_step: needs f32 or f64"), DataError);
  OptimizerHyper h;
  h.nesterov = true;
  CHECK_THROWS_AS(Optimizer(OptimizerKind::SGD, h), ConfigError);
}

TEST_CASE("optim: agrees with torch.optim SGD / Adam / AdamW over 5 steps" *
          doctest::test_suite("torch")) {
  Context ctx;
  const char* names[3] = {"conv.weight", "recurrence.weight", "feedback.bias"};
  struct Case {
    const char* name;
    OptimizerKind kind;
    double lr, wd;
    bool nesterov;
  };
  for (const Case& c : {Case{"optim_sgd", OptimizerKind::SGD, 0.05, 5e-4, false},
                        Case{"optim_sgd_nesterov", OptimizerKind::SGD, 0.05, 5e-4, true},
                        Case{"optim_adam", OptimizerKind::Adam, 1e-3, 5e-4, false},
                        Case{"optim_adamw", OptimizerKind::AdamW, 2e-3, 1e-2, false}}) {
    CAPTURE(std::string(c.name));
    OptimizerHyper h;
    h.lr = c.lr;
    h.momentum = 0.9;
    h.nesterov = c.nesterov;
    h.weight_decay = c.wd;
    Optimizer opt(c.kind, h, dynvision_param_groups());
    ParamStore p;
    for (int i = 0; i < 3; ++i) p.add(names[i], torch_ref(c.name, concat("p", i, "_init")));
    double max_diff = 0;
    for (int s = 0; s < 5; ++s) {
      ParamStore g;
      for (int i = 0; i < 3; ++i) g.add(names[i], torch_ref(c.name, concat("g", i, "_s", s)));
      opt.step(ctx, p, g);
      for (int i = 0; i < 3; ++i) {
        Tensor want = torch_ref(c.name, concat("p", i, "_s", s));
        for (int64_t k = 0; k < want.numel(); ++k)
          max_diff = std::max(max_diff, std::abs(p.get(names[i]).item(k) - want.item(k)));
        require_equal(p.get(names[i]), want, concat(names[i], " after step ", s + 1));
      }
    }
    MESSAGE(std::string(c.name), ": max |dynsim - torch| over 5 steps = ", max_diff);
  }
}
