// resize_nearest: exact forward and backward against plain loops on small integers (up, down,
// non-integer factors, H and W independent), DynVision's 4x cases, f64 gradient checks, CPU vs
// CUDA, bad arguments, and agreement with torch.nn.functional.interpolate(mode='nearest').
#include <cmath>
#include <numeric>

#include "kernels/dispatch.h"
#include "tests/harness.h"

using namespace dynsim;
using namespace dynsim::test;

namespace {

struct Config {
  Shape x, y;
};
const std::vector<Config> kConfigs = {
    {{2, 3, 5, 8}, {2, 3, 3, 7}},   {{2, 3, 3, 7}, {2, 3, 7, 3}}, {{1, 2, 8, 8}, {1, 2, 16, 16}},
    {{1, 2, 16, 16}, {1, 2, 4, 4}}, {{2, 1, 5, 5}, {2, 1, 5, 5}}, {{1, 3, 4, 6}, {1, 3, 10, 9}},
    {{2, 2, 7, 3}, {2, 2, 2, 11}},  {{1, 1, 1, 1}, {1, 1, 3, 2}},
};

// Source index straight from the definition, independent of nearest_source_index.
int64_t source(int64_t i, int64_t in, int64_t out) {
  return int64_t(std::floor(double(i) * double(in) / double(out)));
}

Tensor ref_forward(const Tensor& x, const Shape& ys) {
  Tensor y = Tensor::empty(ys, x.dtype());
  const int64_t H = x.dim(2), W = x.dim(3);
  int64_t o = 0;
  for (int64_t nc = 0; nc < ys[0] * ys[1]; ++nc)
    for (int64_t i = 0; i < ys[2]; ++i)
      for (int64_t j = 0; j < ys[3]; ++j, ++o)
        y.set(o, x.item(nc * H * W + source(i, H, ys[2]) * W + source(j, W, ys[3])));
  return y;
}
Tensor ref_backward(const Tensor& gy, const Shape& xs) {
  Tensor gx = Tensor::zeros(xs, gy.dtype());
  const Shape& ys = gy.shape();
  int64_t o = 0;
  for (int64_t nc = 0; nc < ys[0] * ys[1]; ++nc)
    for (int64_t i = 0; i < ys[2]; ++i)
      for (int64_t j = 0; j < ys[3]; ++j, ++o) {
        const int64_t e =
            nc * xs[2] * xs[3] + source(i, xs[2], ys[2]) * xs[3] + source(j, xs[3], ys[3]);
        gx.set(e, gx.item(e) + gy.item(o));
      }
  return gx;
}

std::string describe(const Config& c) {
  return concat(c.x.str(), " -> ", c.y.str());
}

CaseBuilder resize_case(const Config& cfg, uint64_t seed) {
  return [cfg, seed](DType t) {
    OpCase c;
    c.name = "resize_nearest " + describe(cfg);
    c.input_names = {"x"};
    c.inputs = {random_uniform(cfg.x, -2, 2, seed, t)};
    c.differentiable = {true};
    const Shape ys = cfg.y;
    c.forward = [ys](Context& ctx, const std::vector<Tensor>& in) {
      Tensor y = ctx.empty(ys, in[0].dtype());
      ops::resize_nearest_forward(ctx, in[0], y);
      return std::vector<Tensor>{y};
    };
    c.backward = [](Context& ctx, const std::vector<Tensor>& in, const std::vector<Tensor>& gout,
                    const std::vector<Tensor>& g,
                    GradMode m) { ops::resize_nearest_backward(ctx, gout[0], g[0], m); };
    return c;
  };
}

}  // namespace

TEST_CASE("resize_nearest: the index rule is floor(i * in / out), computed as PyTorch does") {
  CHECK(nearest_source_index(0, 5, 3) == 0);
  CHECK(nearest_source_index(1, 5, 3) == 1);
  CHECK(nearest_source_index(2, 5, 3) == 3);
  const int64_t up[7] = {0, 0, 0, 1, 1, 2, 2};  // 3 -> 7
  for (int i = 0; i < 7; ++i) CHECK(nearest_source_index(i, 3, 7) == up[i]);
  // Every size DynVision uses (64/224 inputs, factors 2, 4 up and down): the exact rational rule.
  const int64_t sizes[] = {4, 8, 16, 28, 32, 56, 64, 112, 224};
  for (int64_t in : sizes)
    for (int64_t out : sizes)
      for (int64_t i = 0; i < out; ++i) REQUIRE(nearest_source_index(i, in, out) == source(i, in, out));
  // Over all pairs up to 70 the float computation differs from the rational floor only rarely
  // (21 pairs, e.g. 26 -> 22), by one pixel; the torch suite checks those against PyTorch.
  int differing_pairs = 0;
  for (int64_t in = 1; in <= 70; ++in)
    for (int64_t out = 1; out <= 70; ++out) {
      bool differs = false;
      for (int64_t i = 0; i < out; ++i) {
        const int64_t d = nearest_source_index(i, in, out) - source(i, in, out);
        REQUIRE(std::abs(d) <= 1);
        differs |= d != 0;
      }
      differing_pairs += differs;
    }
  CHECK(differing_pairs == 21);
  bool pair_26_22_differs = false;
  for (int64_t i = 0; i < 22; ++i)
    pair_26_22_differs |= nearest_source_index(i, 26, 22) != source(i, 26, 22);
  CHECK(pair_26_22_differs);
}

TEST_CASE("resize_nearest: index table agrees with PyTorch for all sizes 1..70" *
          doctest::test_suite("torch")) {
  Tensor table = torch_ref("resize_index_table", "index");  // [70, 70, 70], -1 past out
  for (int64_t in = 1; in <= 70; ++in)
    for (int64_t out = 1; out <= 70; ++out)
      for (int64_t i = 0; i < out; ++i) {
        const double want = table.item(((in - 1) * 70 + (out - 1)) * 70 + i);
        if (double(nearest_source_index(i, in, out)) != want)
          FAIL("in ", in, " out ", out, " i ", i, ": ", nearest_source_index(i, in, out),
               " vs PyTorch ", want);
      }
}

TEST_CASE("resize_nearest: exact forward and backward on small integers") {
  Context ctx;
  for (DType t : {DType::F32, DType::F64})
    for (size_t k = 0; k < kConfigs.size(); ++k) {
      const Config& cfg = kConfigs[k];
      const std::string what = concat("resize ", describe(cfg), " ", dtype_name(t));
      Tensor x = random_ints(cfg.x, -9, 9, 10 + k, t);
      Tensor y = Tensor::empty(cfg.y, t);
      ops::resize_nearest_forward(ctx, x, y);
      require_equal(y, ref_forward(x, cfg.y), what + ": y");

      Tensor gy = random_ints(cfg.y, -9, 9, 20 + k, t);
      Tensor want = ref_backward(gy, cfg.x);
      Tensor gx = Tensor::empty(cfg.x, t);
      gx.fill(std::nan(""));
      ops::resize_nearest_backward(ctx, gy, gx, GradMode::Overwrite);
      require_equal(gx, want, what + ": grad_x (overwrite)");
      Tensor prior = random_ints(cfg.x, -9, 9, 30 + k, t), acc = prior.clone();
      ops::resize_nearest_backward(ctx, gy, acc, GradMode::Accumulate);
      for (int64_t e = 0; e < want.numel(); ++e) want.set(e, want.item(e) + prior.item(e));
      require_equal(acc, want, what + ": grad_x (accumulate)");
    }
}

TEST_CASE(
    "resize_nearest: DynVision's 64 -> 16 picks pixel 0 of each 4x4 block, 16 -> 64 repeats") {
  Context ctx;
  std::vector<double> v(64 * 64);
  std::iota(v.begin(), v.end(), 0.0);
  Tensor big = Tensor::from({1, 1, 64, 64}, v), small = Tensor::empty({1, 1, 16, 16});
  ops::resize_nearest_forward(ctx, big, small);
  for (int i = 0; i < 16; ++i)
    for (int j = 0; j < 16; ++j) REQUIRE(small.item(i * 16 + j) == big.item(4 * i * 64 + 4 * j));
  Tensor up = Tensor::empty({1, 1, 64, 64});
  ops::resize_nearest_forward(ctx, small, up);
  for (int i = 0; i < 64; ++i)
    for (int j = 0; j < 64; ++j) REQUIRE(up.item(i * 64 + j) == small.item(i / 4 * 16 + j / 4));
  // Upsampling by 4: each input pixel receives the sum of its 4x4 block.
  Tensor gy = Tensor::empty({1, 1, 64, 64}), gx = Tensor::empty({1, 1, 16, 16});
  gy.fill(1.0);
  ops::resize_nearest_backward(ctx, gy, gx, GradMode::Overwrite);
  for (int64_t e = 0; e < gx.numel(); ++e) REQUIRE(gx.item(e) == 16.0);
}

TEST_CASE("resize_nearest: large inputs take the threaded path and agree") {
  ContextOptions o;
  o.threads = 2;
  Context ctx(o);
  const Config cfg{{2, 16, 32, 48}, {2, 16, 64, 40}};
  Tensor x = random_ints(cfg.x, -9, 9, 3), y = Tensor::empty(cfg.y);
  ops::resize_nearest_forward(ctx, x, y);
  require_equal(y, ref_forward(x, cfg.y), "threaded forward");
  Tensor gy = random_ints(cfg.y, -9, 9, 4), gx = Tensor::empty(cfg.x);
  ops::resize_nearest_backward(ctx, gy, gx, GradMode::Overwrite);
  require_equal(gx, ref_backward(gy, cfg.x), "threaded backward");
}

TEST_CASE("resize_nearest: f64 gradient check") {
  for (size_t k = 0; k < kConfigs.size(); ++k) check_gradients(resize_case(kConfigs[k], 100 + k));
}

TEST_CASE("resize_nearest: CPU vs CUDA" * doctest::test_suite("gpu")) {
  for (size_t k = 0; k < kConfigs.size(); ++k) check_cpu_vs_cuda(resize_case(kConfigs[k], 200 + k));
}

TEST_CASE("resize_nearest: bad arguments name the op and the tensor") {
  Context ctx;
  Tensor x = Tensor::zeros({2, 3, 8, 8});
  CHECK_THROWS_WITH_AS(ops::resize_nearest_forward(ctx, x, Tensor::zeros({2, 4, 4, 4})),
                       doctest::Contains("resize_nearest_forward: y has shape [2,4,4,4] but x has "
                                         "shape [2,3,8,8] (N and C must match)"),
                       DataError);
  CHECK_THROWS_WITH_AS(ops::resize_nearest_forward(ctx, x, Tensor::zeros({2, 3, 16})),
                       doctest::Contains("resize_nearest_forward: y must be [N,C,H,W]"), DataError);
  CHECK_THROWS_WITH_AS(ops::resize_nearest_forward(ctx, Tensor::zeros({3, 8, 8}), x),
                       doctest::Contains("resize_nearest_forward: x must be [N,C,H,W]"), DataError);
  CHECK_THROWS_WITH_AS(ops::resize_nearest_forward(ctx, x, Tensor::zeros({2, 3, 0, 4})),
                       doctest::Contains("resize_nearest_forward: empty plane"), DataError);
  CHECK_THROWS_WITH_AS(ops::resize_nearest_forward(ctx, x, Tensor::zeros({2, 3, 4, 4}, DType::F64)),
                       doctest::Contains("resize_nearest_forward: y is f64"), DataError);
  CHECK_THROWS_WITH_AS(ops::resize_nearest_forward(ctx, Tensor::zeros({2, 3, 8, 8}, DType::I32), x),
                       doctest::Contains("needs f32 or f64"), DataError);
  Tensor gy = Tensor::zeros({2, 3, 4, 4});
  CHECK_THROWS_WITH_AS(ops::resize_nearest_backward(ctx, gy, Tensor(), GradMode::Overwrite),
                       doctest::Contains("resize_nearest_backward: grad_x is undefined"),
                       DataError);
  CHECK_THROWS_WITH_AS(
      ops::resize_nearest_backward(ctx, gy, Tensor::zeros({1, 3, 8, 8}), GradMode::Overwrite),
      doctest::Contains("resize_nearest_backward: grad_y has shape [2,3,4,4] but grad_x"),
      DataError);
}

// PyTorch agreement (tests/python/torch_ref_resize.py).
TEST_CASE("resize_nearest: agrees with torch interpolate(mode='nearest')" *
          doctest::test_suite("torch")) {
  Context ctx;
  const int n = int(torch_ref("resize_index", "cases").item(0));
  CHECK(n >= 8);
  for (int k = 0; k < n; ++k) {
    const std::string name = concat("resize_", k);
    Tensor x = torch_ref(name, "x"), want = torch_ref(name, "y"), gy = torch_ref(name, "grad_y");
    Tensor y = Tensor::empty(want.shape());
    ops::resize_nearest_forward(ctx, x, y);
    require_equal(y, want, name + ": y");  // a gather: bit-exact
    Tensor gx = Tensor::empty(x.shape());
    ops::resize_nearest_backward(ctx, gy, gx, GradMode::Overwrite);
    require_close(gx, torch_ref(name, "grad_x"), 1e-5, 1e-4, name + ": grad_x");
  }
}
