// CPU conv2d timings for DyRCNNx4's layer shapes (64x64 input, batch 8, f32): forward, and
// backward = dgrad + wgrad + bias grad. Prints one JSON line per shape with the median over
// repeats after warm-up; bench/conv2d_torch.py times PyTorch on the same shapes and prints ratios.
// Usage: conv2d_bench [--threads N] [--repeats R] [--batch B] [--only NAME]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "bench/bench_common.h"
#include "kernels/dispatch.h"

using namespace dynsim;

namespace {

struct Layer {
  const char* name;
  int64_t cin, cout, k, hw;  // square kernel and input
  int stride, pad;
};

// DyRCNNx4 at 64x64: feedforward (ff) and recurrent (rec) convs of V1, V2, V4, IT, the skip
// connections V1->V4 and V2->IT and the feedback V4->V1 (1x1 convs at the source resolution).
const Layer kLayers[] = {
    {"V1_ff", 3, 36, 3, 64, 1, 1},        {"V1_rec", 36, 36, 3, 64, 1, 1},
    {"V2_ff", 36, 64, 3, 32, 1, 1},       {"V2_rec", 64, 64, 3, 32, 1, 1},
    {"V4_ff", 64, 121, 3, 16, 1, 1},      {"V4_rec", 121, 121, 3, 16, 1, 1},
    {"IT_ff", 121, 256, 3, 16, 2, 1},     {"IT_rec", 256, 256, 3, 8, 1, 1},
    {"skip_V1_V4", 36, 121, 1, 64, 1, 0}, {"skip_V2_IT", 64, 256, 1, 32, 1, 0},
    {"fb_V4_V1", 121, 36, 1, 16, 1, 0},
};

template <class F>
double median_ms(int repeats, F&& f) {
  for (int i = 0; i < 2; ++i) f();  // warm-up: scratch, caches, thread pool
  std::vector<double> t;
  for (int i = 0; i < repeats; ++i) {
    auto a = std::chrono::steady_clock::now();
    f();
    auto b = std::chrono::steady_clock::now();
    t.push_back(std::chrono::duration<double, std::milli>(b - a).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

using bench::values;

}  // namespace

int main(int argc, char** argv) {
  int threads = 0, repeats = 15;
  int64_t batch = 8;
  std::string only;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--threads"))
      threads = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--repeats"))
      repeats = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--batch"))
      batch = std::atoll(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--only"))
      only = argv[i + 1];
    else {
      std::fprintf(stderr, "usage: %s [--threads N] [--repeats R] [--batch B] [--only NAME]\n",
                   argv[0]);
      return 64;
    }
  }
  ContextOptions o;
  o.threads = threads;
  Context ctx(o);
  for (const Layer& l : kLayers) {
    if (!only.empty() && only != l.name) continue;
    Conv2dParams p;
    p.stride_h = p.stride_w = l.stride;
    p.pad_h = p.pad_w = l.pad;
    Tensor x = values({batch, l.cin, l.hw, l.hw}, 1);
    Tensor w = values({l.cout, l.cin, l.k, l.k}, 2);
    Tensor b = values({l.cout}, 3);
    Shape ys = p.output_shape(x.shape(), w.shape());
    Tensor y = Tensor::empty(ys), gy = values(ys, 4);
    Tensor gx = Tensor::empty(x.shape()), gw = Tensor::empty(w.shape());
    Tensor gb = Tensor::empty(b.shape());
    const double fwd = median_ms(repeats, [&] { ops::conv2d_forward(ctx, p, x, w, b, y); });
    const double bwd = median_ms(
        repeats, [&] { ops::conv2d_backward(ctx, p, gy, x, w, gx, gw, gb, GradMode::Overwrite); });
    std::printf(
        "{\"shape\": \"%s\", \"batch\": %lld, \"cin\": %lld, \"cout\": %lld, \"k\": %lld, "
        "\"hw\": %lld, \"stride\": %d, \"pad\": %d, \"threads\": %d, \"fwd_ms\": %.4f, "
        "\"bwd_ms\": %.4f}\n",
        l.name, (long long)batch, (long long)l.cin, (long long)l.cout, (long long)l.k,
        (long long)l.hw, l.stride, l.pad, ctx.threads(), fwd, bwd);
    std::fflush(stdout);
  }
  return 0;
}
