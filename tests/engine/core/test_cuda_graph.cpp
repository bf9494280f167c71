// RunOptions::cuda_graph (the Scheduler's step loop captured as a CUDA graph and replayed). On
// the CPU: the option is refused on a CPU context with a message naming it, the config key
// simulation.cuda_graph parses (default off), and the graph API without a GPU is a clear error.
// The gpu suite (Skipped without a device): DyRCNNx4 16x16 and 64x64, euler and rk4-classic,
// Full and Layer recording with the stability check: the warm-up run, the capturing run and
// three replays (a new input each, host and device inputs, a parameter changed in the graph's
// ParamStore before the last) give exactly the bits of a Scheduler without graphs on the same
// device; the self recurrence's host-read scalars changing between replays are seen too.
#include <cmath>
#include <cstring>

#include "engine/core/cuda_graph.h"
#include "engine/core/device.h"
#include "engine/dynamics/scheduler.h"
#include "engine/io/config.h"
#include "models/config/sim_config.h"
#include "models/dyrcnn/dyrcnn.h"
#include "tests/engine/dynamics/scheduler_cases.h"
#include "tests/harness.h"

using namespace dynsim;
using namespace dynsim::test;

namespace {

// Every tensor and flag of two recordings, bit for bit (NaN bits included).
void require_same(const Recording& got, const Recording& want, const std::string& what) {
  CHECK_MESSAGE(same_bits(got.logits, want.logits), what, ": logits");
  REQUIRE(got.rates.size() == want.rates.size());
  REQUIRE(got.mean_abs.size() == want.mean_abs.size());
  CHECK(got.present == want.present);
  CHECK(got.steps == want.steps);
  for (size_t a = 0; a < got.rates.size(); ++a)
    CHECK_MESSAGE(same_bits(got.rates[a], want.rates[a]), what, ": rates of area ", a);
  for (size_t a = 0; a < got.mean_abs.size(); ++a) {
    CHECK_MESSAGE(same_bits(got.mean_abs[a], want.mean_abs[a]), what, ": mean |r| of area ", a);
    CHECK_MESSAGE(same_bits(got.std_abs[a], want.std_abs[a]), what, ": std |r| of area ", a);
  }
}

}  // namespace

TEST_CASE("cuda_graph: refused on a CPU context, naming the option") {
  Graph g = models::build_dyrcnn(dyrcnn("DyRCNNx2", 16));
  Context ctx;
  Scheduler s(ctx, g);
  const Tensor x = random_uniform({1, 3, 3, 16, 16}, 0, 1, 3, DType::F32);
  RunOptions ro;
  ro.cuda_graph = true;
  CHECK_THROWS_WITH_AS(s.run(x, ro), doctest::Contains("cuda_graph"), ConfigError);
  CHECK_THROWS_WITH_AS(s.run(x, ro), doctest::Contains("needs a CUDA context"), ConfigError);
  // The refusal leaves the scheduler usable.
  ro.cuda_graph = false;
  const Recording r = s.run(x, ro);
  CHECK(r.steps == 3);
}

TEST_CASE("cuda_graph: the config key simulation.cuda_graph (default off)") {
  const Config off = Config::parse("", "(test)", models::simulate_schema());
  CHECK_FALSE(models::run_options(off).cuda_graph);
  const Config on =
      Config::parse("[simulation]\ncuda_graph = true\n", "(test)", models::simulate_schema());
  CHECK(models::run_options(on).cuda_graph);
  CHECK(models::run_options(on).fast_paths);  // the other keys keep their defaults
  CHECK_THROWS_AS(
      Config::parse("[simulation]\ncuda_graph = 3\n", "(test)", models::simulate_schema()),
      ConfigError);
}

TEST_CASE("cuda_graph: the graph API without a GPU") {
  CudaGraph empty;
  CHECK_FALSE(empty.ready());
  CudaGraph moved = std::move(empty);
  CHECK_FALSE(moved.ready());
  moved.reset();
  empty = CudaGraph();
  if (!cuda_compiled()) {
    CHECK_THROWS_AS(cuda_graph_begin_capture(nullptr), NotImplemented);
    CHECK_THROWS_AS(cuda_graph_end_capture(nullptr), NotImplemented);
    CHECK_THROWS_AS(empty.launch(nullptr), NotImplemented);
  } else {
    CHECK_THROWS_WITH_AS(empty.launch(nullptr), doctest::Contains("empty graph"), Error);
  }
  cuda_graph_abort_capture(nullptr);  // never throws
}

// ---- replay against ordinary runs (gpu suite) --------------------------------------------------

TEST_CASE("cuda_graph: warm-up, capture and replays give the bits of runs without graphs" *
          doctest::test_suite("gpu")) {
  if (no_device()) return;
  for (int size : {16, 64})
    for (const std::string solver : {"euler", "rk4-classic"})
      for (RecordMode mode : {RecordMode::Full, RecordMode::Layer}) {
        const std::string what = concat("DyRCNNx4 ", size, "x", size, " ", solver, " record ",
                                        mode == RecordMode::Full ? "full" : "layer");
        CAPTURE(what);
        Graph g = models::build_dyrcnn(dyrcnn("DyRCNNx4", size));
        Context gpu = cuda_context();
        Scheduler plain(gpu, g, SolverSpec(solver)), graphed(gpu, g, SolverSpec(solver));
        RunOptions ro;
        ro.idle_steps = 2;
        ro.record = mode;
        ro.stability_check = true;
        RunOptions rg = ro;
        rg.cuda_graph = true;
        const int T = 12;
        for (int run = 0; run < 5; ++run) {
          // run 0: warm-up, 1: capture, 2-4: replays with new inputs; 3 a device input; before
          // 4 a trained classifier weight in the graph's own ParamStore.
          const Tensor x = random_uniform({2, T, 3, size, size}, 0, 1, 40 + run, DType::F32);
          if (run == 4) {
            Tensor& w = g.params.get("classifier.2.weight");  // on the host, like training's
            for (int64_t i = 0; i < w.numel(); ++i) w.set(i, 1.5 * w.item(i) + 0.01);
          }
          const Tensor in = run == 3 ? gpu.to_device(x) : x;
          const Recording want = plain.run(in, ro), got = graphed.run(in, rg);
          require_same(got, want, concat(what, ", run ", run));
          CHECK(graphed.operator_calls() == plain.operator_calls());
        }
      }
}

TEST_CASE("cuda_graph: a static image (repeated frames), the self recurrence's scalars, shapes" *
          doctest::test_suite("gpu")) {
  if (no_device()) return;
  models::DyRCNNOptions o = dyrcnn("DyRCNNx4", 16);
  o.recurrence_type = "self";
  o.feedback = "mul";
  Graph g = models::build_dyrcnn(o);
  Context gpu = cuda_context();
  Scheduler plain(gpu, g), graphed(gpu, g);
  RunOptions ro;
  RunOptions rg = ro;
  rg.cuda_graph = true;
  // A static image: the frame-repeat pattern is part of the graph's key.
  auto still = [](uint64_t seed, int B) {
    const Tensor f = random_uniform({B, 1, 3, 16, 16}, 0, 1, seed, DType::F32);
    Tensor x = Tensor::empty({B, 8, 3, 16, 16});
    const int64_t fe = 3 * 16 * 16;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < 8; ++t)
        for (int64_t i = 0; i < fe; ++i) x.set((b * 8 + t) * fe + i, f.item(b * fe + i));
    return x;
  };
  std::string self_param;
  for (const Connection& c : g.connections)
    if (c.op.kind == OpKind::Self && !c.op.params.empty()) self_param = c.op.params.front();
  REQUIRE_FALSE(self_param.empty());
  for (int run = 0; run < 6; ++run) {
    // Run 5 has another batch size: a new key, warmed up again.
    const Tensor x = still(60 + run, run == 5 ? 1 : 2);
    if (run == 3) {  // the self recurrence's weight, read on the host, changes between replays
      Tensor& w = g.params.get(self_param);
      w.set(0, w.item(0) + 0.25);
    }
    const Recording want = plain.run(x, ro), got = graphed.run(x, rg);
    require_same(got, want, concat("self recurrence, static image, run ", run));
  }
}
