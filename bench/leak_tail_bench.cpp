// CPU timings of the fused step tail (kernels/leak_tail.h) against the unfused ops the scheduler
// and the reverse sweep run today (adds, leak_forward, relu, supralinearity; their backwards plus
// an axpy of grad_x), on DyRCNN's V1 at 64x64: [8, 36, 64, 64] f32, Euler with a previous state,
// tau per sample. Median ms per call (the two called alternately), one line per configuration, and the ratio
// unfused / fused (above 1: the fused op is faster). Checks that both give the same bits.
// Usage: leak_tail_bench [--threads N] [--repeats R]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <utility>
#include <vector>

#include "bench/bench_common.h"
#include "kernels/dispatch.h"

using namespace dynsim;

namespace {

// Median ms of f and of g, called alternately (so that a machine whose load drifts slows both
// alike), after two warm-up calls of each.
template <class F, class G>
std::pair<double, double> median_ms(int repeats, F&& f, G&& g) {
  for (int i = 0; i < 2; ++i) f(), g();
  std::vector<double> tf, tg;
  auto time = [](auto&& h) {
    auto a = std::chrono::steady_clock::now();
    h();
    auto b = std::chrono::steady_clock::now();
    return std::chrono::duration<double, std::milli>(b - a).count();
  };
  for (int i = 0; i < repeats; ++i) {
    tf.push_back(time(f));
    tg.push_back(time(g));
  }
  std::sort(tf.begin(), tf.end());
  std::sort(tg.begin(), tg.end());
  return {tf[tf.size() / 2], tg[tg.size() / 2]};
}

bool same_bytes(const Tensor& a, const Tensor& b) {
  return std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 0, repeats = 15;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--threads"))
      threads = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--repeats"))
      repeats = std::atoi(argv[i + 1]);
    else {
      std::fprintf(stderr, "usage: %s [--threads N] [--repeats R]\n", argv[0]);
      return 64;
    }
  }
  ContextOptions o;
  o.threads = threads;
  Context ctx(o);
  const Shape s{8, 36, 64, 64};
  std::vector<Tensor> terms;
  for (uint64_t k = 0; k < 3; ++k) terms.push_back(bench::values(s, 1 + k));
  const Tensor h = bench::values(s, 10), grad_r = bench::values(s, 11), grad_x = bench::values(s, 12);
  Tensor tau = Tensor::empty({8});
  for (int64_t b = 0; b < 8; ++b) tau.set(b, 3.0 + double(b));
  Tensor u = Tensor::empty(s), x = Tensor::empty(s), relu = Tensor::empty(s), r = Tensor::empty(s);
  Tensor x2 = Tensor::empty(s), r2 = Tensor::empty(s), g = Tensor::empty(s), gs = Tensor::empty(s);
  Tensor gu = Tensor::empty(s), gh = Tensor::empty(s), gt = Tensor::empty({8});
  Tensor gu2 = Tensor::empty(s), gh2 = Tensor::empty(s), gt2 = Tensor::empty({8});
  std::printf("leak_tail CPU, %s f32, euler, h, tau[8], %d thread(s), median of %d\n",
              s.str().c_str(), ctx.threads(), repeats);
  std::printf("%-26s %10s %10s %7s\n", "config", "unfused", "fused", "ratio");
  bool same = true;
  for (int n_terms : {1, 3})
    for (bool supra : {false, true}) {
      LeakTailParams p;
      p.supralinear = supra;
      p.supra.n = 2.0;
      const LeakParams lp{p.rule, p.dt};
      LeakTailTerms tt;
      for (int k = 0; k < n_terms; ++k) tt.push(terms[size_t(k)]);
      auto unfused_fwd = [&] {
        ctx.copy(u, terms[0]);
        for (int k = 1; k < n_terms; ++k) ops::add(ctx, u, terms[size_t(k)], u);
        ops::leak_forward(ctx, lp, u, h, tau, x);
        ops::relu_forward(ctx, x, relu);
        if (supra)
          ops::supralinearity_forward(ctx, p.supra, relu, r);
        else
          ctx.copy(r, relu);  // the scheduler writes relu straight into r: not timed below
      };
      auto fused_fwd = [&] { ops::leak_tail_forward(ctx, p, tt, h, tau, x2, r2); };
      auto unfused_bwd = [&] {
        const Tensor* gin = &grad_r;
        if (supra) {
          ops::supralinearity_backward(ctx, p.supra, grad_r, relu, gs, GradMode::Overwrite);
          gin = &gs;
        }
        ops::relu_backward(ctx, x, *gin, g, GradMode::Overwrite);
        ops::axpy(ctx, 1.0, grad_x, g);
        ops::leak_backward(ctx, lp, g, u, h, tau, gu, gh, gt, GradMode::Overwrite);
      };
      auto fused_bwd = [&] {
        ops::leak_tail_backward(ctx, p, grad_r, grad_x, tt, h, tau, gu2, gh2, gt2,
                                GradMode::Overwrite);
      };
      // Forward without the copy that stands for the first term, which the scheduler avoids.
      auto unfused_fwd_timed = [&] {
        if (n_terms > 1) ops::add(ctx, terms[0], terms[1], u);
        for (int k = 2; k < n_terms; ++k) ops::add(ctx, u, terms[size_t(k)], u);
        ops::leak_forward(ctx, lp, n_terms > 1 ? u : terms[0], h, tau, x);
        ops::relu_forward(ctx, x, supra ? relu : r);
        if (supra) ops::supralinearity_forward(ctx, p.supra, relu, r);
      };
      unfused_fwd();
      fused_fwd();
      unfused_bwd();
      fused_bwd();
      same = same && same_bytes(x, x2) && same_bytes(r, r2) && same_bytes(gu, gu2) &&
             same_bytes(gh, gh2) && same_bytes(gt, gt2);
      const auto [uf, ff] = median_ms(repeats, unfused_fwd_timed, fused_fwd);
      const auto [ub, fb] = median_ms(repeats, unfused_bwd, fused_bwd);
      char name[64];
      std::snprintf(name, sizeof name, "%d term(s)%s", n_terms, supra ? ", supra n=2" : "");
      std::printf("%-26s %10.3f %10.3f %7.2f   forward ms\n", name, uf, ff, uf / ff);
      std::printf("%-26s %10.3f %10.3f %7.2f   backward ms\n", name, ub, fb, ub / fb);
      if (n_terms > 1) {  // the backward given the drive stored by an unfused forward
        const LeakTailTerms stored{u};
        auto fused_bwd_u = [&] {
          ops::leak_tail_backward(ctx, p, grad_r, grad_x, stored, h, tau, gu2, gh2, gt2,
                                  GradMode::Overwrite);
        };
        const auto [ub2, fb2] = median_ms(repeats, unfused_bwd, fused_bwd_u);
        std::printf("%-26s %10.3f %10.3f %7.2f   backward ms, fused given u\n", name, ub2, fb2,
                    ub2 / fb2);
      }
    }
  std::printf("fused == unfused bit for bit: %s\n", same ? "yes" : "NO");
  return same ? 0 : 70;
}
