// The Scheduler on the context's device. On the CPU: Context::copy_rows (the step gather and
// scatter of the recording), the layer recording equal to mean/std recomputed from the full
// rates bit for bit, parameter copies refreshed from the graph on every run, and the staged
// stability message. The gpu suite (Skipped without a device): whole DyRCNNx4 trajectories on
// CUDA against the CPU (fp32, TF32 off; every area's rates at every step, the logits and the
// layer statistics within 1e-4 of the largest CPU value) for euler, rk4 and rk4-classic, a host
// and a device input giving the same bits, the stability check after the loop, f64
// trajectories within 1e-10, and a device-resident static image saving as many operator calls as
// a host one (repeated frames found on the device); cuda_unsupported() on the CPU.
#include <cmath>
#include <cstring>

#include "engine/core/device.h"
#include "engine/dynamics/scheduler.h"
#include "models/dyrcnn/dyrcnn.h"
#include "tests/engine/dynamics/scheduler_cases.h"
#include "tests/harness.h"

using namespace dynsim;
using namespace dynsim::test;

TEST_CASE("Context::copy_rows gathers one step out of [B, T, ...] and scatters into it") {
  Context ctx;
  Tensor seq = Tensor::empty({2, 3, 4});  // [B, T, F]
  for (int64_t i = 0; i < seq.numel(); ++i) seq.set(i, double(i));
  Tensor frame = Tensor::zeros({2, 4});
  const Tensor rows = seq.view({6, 4});
  ctx.copy_rows(frame, 4, rows.slice(1, 6), 12, 2, 4);  // step 1 of both samples
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t f = 0; f < 4; ++f) CHECK(frame.item(b * 4 + f) == double(b * 12 + 4 + f));
  Tensor out = Tensor::zeros({2, 3, 4});
  ctx.copy_rows(out.view({6, 4}).slice(2, 6), 12, frame, 4, 2, 4);  // into step 2
  for (int64_t i = 0; i < out.numel(); ++i) {
    const int64_t b = i / 12, t = (i / 4) % 3, f = i % 4;
    CHECK(out.item(i) == (t == 2 ? double(b * 12 + 4 + f) : 0.0));
  }
  CHECK_THROWS_WITH_AS(ctx.copy_rows(frame, 4, rows.slice(1, 6), 12, 3, 4),
                       doctest::Contains("do not fit"), Error);
  CHECK_THROWS_WITH_AS(ctx.copy_rows(frame, 4, Tensor::zeros({8}, DType::F64), 4, 2, 4),
                       doctest::Contains("dtypes differ"), Error);
}

TEST_CASE(
    "scheduler: the layer recording equals mean/std of |r| from the full rates, NaN while absent") {
  models::DyRCNNOptions o = dyrcnn("DyRCNNx4", 16);
  o.delays.t_feedforward = 2;  // one step per area: V2, V4, IT absent for the first steps
  o.skip = false;              // (a skip would feed V4 at once)
  Graph g = models::build_dyrcnn(o);
  Context ctx;
  Scheduler s(ctx, g);
  const Tensor x = random_uniform({2, 6, 3, 16, 16}, 0, 1, 5, DType::F32);
  RunOptions full, layer;
  full.record = RecordMode::Full;
  layer.record = RecordMode::Layer;
  full.idle_steps = layer.idle_steps = 1;
  const Recording f = s.run(x, full), l = s.run(x, layer);
  require_equal(l.logits, f.logits, "logits of both runs");
  int absent = 0;
  for (size_t a = 0; a < g.areas.size(); ++a) {
    const int64_t T = 6, n = f.rates[a].numel() / (2 * T);
    Tensor mean = Tensor::empty({2, T}), sd = Tensor::empty({2, T});
    for (int64_t b = 0; b < 2; ++b)
      for (int64_t t = 0; t < T; ++t) {
        if (!f.present[a][size_t(t)]) {
          mean.set(b * T + t, NAN);
          sd.set(b * T + t, NAN);
          ++absent;
          continue;
        }
        const int64_t at = (b * T + t) * n;
        double s1 = 0, v = 0;
        for (int64_t i = 0; i < n; ++i) s1 += std::abs(f.rates[a].item(at + i));
        const double m = s1 / double(n);
        for (int64_t i = 0; i < n; ++i) {
          const double d = std::abs(f.rates[a].item(at + i)) - m;
          v += d * d;
        }
        mean.set(b * T + t, m);
        sd.set(b * T + t, std::sqrt(v / double(n - 1)));
      }
    CHECK(std::memcmp(l.mean_abs[a].raw(), mean.raw(), mean.nbytes()) == 0);  // NaN bits too
    CHECK(std::memcmp(l.std_abs[a].raw(), sd.raw(), sd.nbytes()) == 0);
    CHECK(l.present[a] == f.present[a]);
  }
  CHECK(absent > 0);
}

TEST_CASE("scheduler: parameter copies (f64 runs, CUDA) are refreshed from the graph every run") {
  Graph g = models::build_dyrcnn(dyrcnn("DyRCNNx2", 16));
  Context ctx;
  Scheduler s(ctx, g);
  const Tensor x = random_uniform({1, 4, 3, 16, 16}, 0, 1, 6, DType::F64);
  const Recording before = s.run(x);
  Tensor& w = g.params.get("classifier.2.weight");
  for (int64_t i = 0; i < w.numel(); ++i) w.set(i, 2 * w.item(i));  // what training does
  const Recording after = s.run(x);
  Scheduler fresh(ctx, g);
  CHECK(same_bits(after.logits, fresh.run(x).logits));
  CHECK_FALSE(same_bits(after.logits, before.logits));
}

TEST_CASE(
    "scheduler: the staged stability check names the solver; no CUDA context without a device") {
  Graph g = models::build_dyrcnn(dyrcnn("DyRCNNx2", 16));
  Context ctx;
  Scheduler s(ctx, g, SolverSpec("rk4-classic"));
  Tensor x = Tensor::zeros({1, 3, 3, 16, 16});
  x.set(2 * 3 * 16 * 16 + 7, NAN);  // frame t = 2
  RunOptions ro;
  ro.stability_check = true;
  CHECK_THROWS_WITH_AS(s.run(x, ro), doctest::Contains("area layer1 at step 2"), Error);
  CHECK_THROWS_WITH_AS(s.run(x, ro), doctest::Contains("solver rk4-classic"), Error);
  ro.stability_check = false;
  CHECK_NOTHROW(s.run(x, ro));
  if (cuda_device_count() == 0) {
    MESSAGE("no CUDA device here: the CPU-vs-CUDA scheduler cases run in the gpu suite (Skipped)");
    CHECK_THROWS_WITH_AS(cuda_context(), doctest::Contains("CUDA device(s) found"), Error);
  }
}

TEST_CASE("scheduler: cuda_unsupported accepts every f32, f64 and bf16 graph, names other dtypes") {
  for (const std::string type : {"full", "self", "local", "localdepthwise", "depthpointwise"}) {
    models::DyRCNNOptions o = dyrcnn("DyRCNNx2", 16);
    o.recurrence_type = type;
    const Graph g = models::build_dyrcnn(o);
    CHECK_MESSAGE(cuda_unsupported(g, DType::F32).empty(), type);
    CHECK_MESSAGE(cuda_unsupported(g, DType::F64).empty(), type);
    CHECK_MESSAGE(cuda_unsupported(g, DType::BF16).empty(), type);
    CHECK(cuda_unsupported(g, DType::I32).find("i32 runs are not supported") != std::string::npos);
  }
}

// ---- CPU vs CUDA (gpu suite) ------------------------------------------------------------------

TEST_CASE("scheduler CPU vs CUDA: whole DyRCNNx4 trajectories (fp32, TF32 off)" *
          doctest::test_suite("gpu")) {
  if (no_device()) return;
  struct Variant {
    std::string solver, type, feedback;
  };
  // Full recurrence with skips; the self recurrence (host-read scalars) with multiplicative
  // feedback; the cortical-sheet recurrences (local_sheet, reflect-padded conv); a staged
  // solver (interpolated history) once.
  const Variant variants[] = {{"euler", "full", "none"},
                              {"euler", "self", "mul"},
                              {"euler", "local", "none"},
                              {"euler", "localdepthwise", "add"},
                              {"rk4", "full", "none"},
                              {"rk4", "self", "mul"},
                              {"rk4-classic", "full", "none"}};
  for (const Variant& v : variants) {
    const std::string& solver = v.solver;
    const std::string what =
        concat("DyRCNNx4 64x64 ", solver, " rctype ", v.type, " feedback ", v.feedback);
    CAPTURE(what);
    models::DyRCNNOptions o = dyrcnn("DyRCNNx4", 64);
    o.recurrence_type = v.type;
    o.feedback = v.feedback;
    o.delays.t_feedback = 6;
    Graph g = models::build_dyrcnn(o);
    const Tensor x = random_uniform({2, 20, 3, 64, 64}, 0, 1, 9, DType::F32);
    Context cpu;
    Context gpu = cuda_context();
    Scheduler sc(cpu, g, SolverSpec(solver)), sg(gpu, g, SolverSpec(solver));
    for (RecordMode mode : {RecordMode::Full, RecordMode::Layer}) {
      RunOptions ro;
      ro.idle_steps = 3;
      ro.record = mode;
      const Recording want = sc.run(x, ro), got = sg.run(x, ro);
      require_rel(got.logits, want.logits, 1e-4, what + ": logits");
      for (size_t a = 0; a < g.areas.size(); ++a) {
        CHECK(got.present[a] == want.present[a]);
        const std::string area = what + ": " + g.areas[a].name;
        if (mode == RecordMode::Full) {
          require_rel(got.rates[a], want.rates[a], 1e-4, area + " rates [B, T, C, H, W]");
        } else {
          require_rel(got.mean_abs[a], want.mean_abs[a], 1e-4, area + " mean |r|");
          require_rel(got.std_abs[a], want.std_abs[a], 1e-4, area + " std |r|");
        }
      }
      if (mode != RecordMode::Full) continue;
      // A device input gives the CUDA run's bits (and reruns are deterministic).
      const Recording again = sg.run(gpu.to_device(x), ro);
      CHECK(same_bits(again.logits, got.logits));
      for (size_t a = 0; a < got.rates.size(); ++a) CHECK(same_bits(again.rates[a], got.rates[a]));
    }
  }
}

TEST_CASE("scheduler on CUDA: stability check after the loop" *
          doctest::test_suite("gpu")) {
  if (no_device()) return;
  Context gpu = cuda_context();
  Graph g = models::build_dyrcnn(dyrcnn("DyRCNNx2", 16));
  Tensor x = Tensor::zeros({1, 3, 3, 16, 16});
  x.set(3 * 16 * 16 + 5, INFINITY);  // frame t = 1
  for (const std::string solver : {"euler", "rk4-classic"}) {
    Scheduler s(gpu, g, SolverSpec(solver));
    RunOptions ro;
    ro.stability_check = true;
    CHECK_THROWS_WITH_AS(s.run(x, ro), doctest::Contains("area layer1 at step 1"), Error);
    ro.stability_check = false;
    CHECK_NOTHROW(s.run(x, ro));
  }
}

TEST_CASE("scheduler CPU vs CUDA: f64 trajectories within 1e-10" * doctest::test_suite("gpu")) {
  if (no_device()) return;
  Context cpu;
  Context gpu = cuda_context();
  for (const std::string type : {"full", "self", "localdepthwise"})
    for (const std::string solver : {"euler", "rk4-classic"}) {
      const std::string what = concat("DyRCNNx4 32x32 f64 ", solver, " rctype ", type);
      CAPTURE(what);
      models::DyRCNNOptions o = dyrcnn("DyRCNNx4", 32);
      o.recurrence_type = type;
      o.feedback = "add";
      o.delays.t_feedback = 6;
      Graph g = models::build_dyrcnn(o);
      for (auto& e : g.params.entries()) e.value = e.value.to_dtype(DType::F64);
      const Tensor x = random_uniform({2, 12, 3, 32, 32}, 0, 1, 9, DType::F64);
      Scheduler sc(cpu, g, SolverSpec(solver)), sg(gpu, g, SolverSpec(solver));
      RunOptions ro;
      ro.idle_steps = 2;
      ro.record = RecordMode::Full;
      const Recording want = sc.run(x, ro), got = sg.run(x, ro);
      require_rel(got.logits, want.logits, 1e-10, what + ": logits");
      for (size_t a = 0; a < g.areas.size(); ++a)
        require_rel(got.rates[a], want.rates[a], 1e-10, what + ": " + g.areas[a].name);
    }
}

// Repeated frames of a device-resident sequence are found on the device (kernels/frames.h, one
// copy of the flags per run): a static image makes as many operator calls as on the host (V1's
// feedforward conv twice, not idle + T times) and the same bits.
TEST_CASE("scheduler on CUDA: a device-resident static image repeats its frames like a host one" *
          doctest::test_suite("gpu")) {
  if (no_device()) return;
  models::DyRCNNOptions o = dyrcnn("DyRCNNx4", 32);
  o.delays.t_feedforward = 2;
  Graph g = models::build_dyrcnn(o);
  const int B = 2, T = 40, idle = 3;
  const Tensor image = random_uniform({B, 1, 3, 32, 32}, 0, 1, 21, DType::F32);
  Tensor x = Tensor::empty({B, T, 3, 32, 32});
  const int64_t fe = 3 * 32 * 32;
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T; ++t)
      std::memcpy(x.data<float>() + (int64_t(b) * T + t) * fe, image.data<float>() + b * fe,
                  size_t(fe) * sizeof(float));
  Context cpu;
  Context gpu = cuda_context();
  Scheduler sc(cpu, g), sg(gpu, g);
  RunOptions fast, lit;
  fast.record = lit.record = RecordMode::Full;
  fast.idle_steps = lit.idle_steps = idle;
  fast.readout_chunk = 32;
  lit.fast_paths = false;
  sc.run(x, fast);
  const int64_t calls_cpu = sc.operator_calls();
  const Recording host_in = sg.run(x, fast);
  const int64_t calls_host = sg.operator_calls();
  const Recording dev_in = sg.run(gpu.to_device(x), fast);
  const int64_t calls_dev = sg.operator_calls();
  sg.run(gpu.to_device(x), lit);
  const int64_t calls_lit = sg.operator_calls();
  CHECK(calls_dev == calls_host);
  CHECK(calls_dev == calls_cpu);
  CHECK(calls_lit - calls_dev == (idle + T) - 2);
  CHECK(same_bits(dev_in.logits, host_in.logits));
  for (size_t a = 0; a < g.areas.size(); ++a) {
    CHECK(dev_in.present[a] == host_in.present[a]);
    CHECK_MESSAGE(same_bits(dev_in.rates[a], host_in.rates[a]), g.areas[a].name);
  }
  // A frame that changes in one sample only is new on the device too: one more call.
  Tensor y = x.clone();
  y.set((int64_t(1) * T + 20) * fe + 7, 2.0);
  sg.run(gpu.to_device(y), fast);
  const int64_t calls_changed = sg.operator_calls();
  sg.run(y, fast);
  CHECK(sg.operator_calls() == calls_changed);
  CHECK(calls_changed == calls_dev + 2);  // frame 20 (new) and frame 21 (back to the image)
}
