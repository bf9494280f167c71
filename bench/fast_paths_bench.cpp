// The Scheduler's exact fast paths (RunOptions::fast_paths, performance-notes.md §3) against
// DynVision's literal order, in one process on the same graph and input: DyRCNNx4 forward
// (Scheduler::run, layer recording), a static image and a sequence of changing frames, Euler
// and rk4-classic. Per row: median ms per run over R runs after one warm-up for both orders,
// the ratio literal / fast, operator evaluations per run, and the largest relative difference
// of the logits (the two orders agree within float rounding). On the CPU by default; --cuda
// runs the same rows on a CUDA context (host input sequence, copied once per run).
// Usage: fast_paths_bench [--size 64] [--batch 8] [--steps 20] [--idle 0] [--repeats 5]
//                         [--threads N] [--cuda]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "bench/bench_common.h"
#include "engine/core/device.h"
#include "engine/dynamics/scheduler.h"
#include "models/dyrcnn/dyrcnn.h"

using namespace dynsim;

namespace {

double rel_diff(const Tensor& a, const Tensor& b) {
  double worst = 0, scale = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    worst = std::max(worst, std::abs(a.item(i) - b.item(i)));
    scale = std::max(scale, std::abs(b.item(i)));
  }
  return scale > 0 ? worst / scale : worst;
}

}  // namespace

int main(int argc, char** argv) {
  int size = 64, steps = 20, idle = 0, repeats = 5, threads = 1;
  int64_t batch = 8;
  bool cuda = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "fast_paths_bench: %s needs a value\n", a.c_str());
        std::exit(64);
      }
      return argv[++i];
    };
    if (a == "--size") size = std::atoi(next());
    else if (a == "--batch") batch = std::atoll(next());
    else if (a == "--steps") steps = std::atoi(next());
    else if (a == "--idle") idle = std::atoi(next());
    else if (a == "--repeats") repeats = std::atoi(next());
    else if (a == "--threads") threads = std::atoi(next());
    else if (a == "--cuda") cuda = true;
    else {
      std::fprintf(stderr, "fast_paths_bench: unknown argument %s\n", a.c_str());
      return 64;
    }
  }
  if (size < 16 || batch < 1 || steps < 1 || idle < 0 || repeats < 1 || threads < 1) {
    std::fprintf(stderr, "fast_paths_bench: size >= 16, batch, steps, repeats, threads >= 1\n");
    return 64;
  }
  if (cuda && cuda_device_count() == 0) {
    std::printf("fast_paths_bench: --cuda but no CUDA device (or a build without CUDA): nothing "
                "to measure\n");
    return 0;
  }
  ContextOptions co;
  co.threads = threads;
  if (cuda) co.device = Device::Cuda;
  Context ctx(co);
  models::DyRCNNOptions m;
  m.preset = "DyRCNNx4";
  m.height = m.width = size;
  Graph g = models::build_dyrcnn(m);

  // Static: one image in every step; changing: a new frame every step.
  const Tensor changing = bench::values({batch, steps, 3, size, size}, 7);
  Tensor still = Tensor::empty(changing.shape());
  const int64_t fe = 3LL * size * size;
  for (int64_t b = 0; b < batch; ++b)
    for (int t = 0; t < steps; ++t)
      std::memcpy(still.data<float>() + (b * steps + t) * fe,
                  changing.data<float>() + (b * steps) * fe, size_t(fe) * 4);

  std::printf("DyRCNNx4 %dx%d, batch %lld, %d steps + %d idle, %s, %d thread(s), median of %d\n",
              size, size, (long long)batch, steps, idle, cuda ? "CUDA" : "CPU", threads, repeats);
  std::printf("%-12s %-9s %11s %11s %7s %10s %10s %10s\n", "solver", "input", "literal ms",
              "fast ms", "ratio", "ops lit.", "ops fast", "logit diff");
  for (const char* solver : {"euler", "rk4-classic"})
    for (int which = 0; which < 2; ++which) {
      const Tensor& x = which == 0 ? still : changing;
      Scheduler s(ctx, g, SolverSpec(solver));
      RunOptions fast, lit;
      fast.idle_steps = lit.idle_steps = idle;
      lit.fast_paths = false;
      const Recording rl = s.run(x, lit);  // warm-up both
      const int64_t ops_lit = s.operator_calls();
      const Recording rf = s.run(x, fast);
      const int64_t ops_fast = s.operator_calls();
      const double ms_lit = bench::median_ms(repeats, [&] { s.run(x, lit); });
      const double ms_fast = bench::median_ms(repeats, [&] { s.run(x, fast); });
      std::printf("%-12s %-9s %11.2f %11.2f %7.3f %10lld %10lld %10.2e\n", solver,
                  which == 0 ? "static" : "changing", ms_lit, ms_fast, ms_lit / ms_fast,
                  (long long)ops_lit, (long long)ops_fast, rel_diff(rf.logits, rl.logits));
      std::fflush(stdout);
    }
  return 0;
}
