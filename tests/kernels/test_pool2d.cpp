// maxpool2d and avgpool2d: exact forward and backward against plain loops on small integers (ties
// included, to pin the first-maximum rule), DynVision's MaxPool(3,2,1) and identity MaxPool(1,1),
// f64 gradient checks, CPU vs CUDA, bad arguments, and agreement with PyTorch.
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>

#include "kernels/dispatch.h"
#include "tests/harness.h"

using namespace dynsim;
using namespace dynsim::test;

namespace {

struct Config {
  Pool2dParams p;
  Shape x;
};
Pool2dParams pool(int kh, int kw, int sh, int sw, int ph, int pw, bool cip = true) {
  Pool2dParams p;
  p.kernel_h = kh, p.kernel_w = kw, p.stride_h = sh, p.stride_w = sw, p.pad_h = ph, p.pad_w = pw;
  p.count_include_pad = cip;
  return p;
}

// DynVision's (3,2,1) and identity (1,1), plus overlapping, non-overlapping and asymmetric
// windows on odd and non-square inputs.
const std::vector<Config> kConfigs = {
    {pool(3, 3, 2, 2, 1, 1), {2, 3, 9, 9}}, {pool(3, 3, 2, 2, 1, 1), {1, 2, 8, 8}},
    {pool(1, 1, 1, 1, 0, 0), {2, 3, 5, 7}}, {pool(2, 2, 2, 2, 0, 0), {2, 2, 7, 6}},
    {pool(3, 3, 1, 1, 1, 1), {1, 2, 5, 6}}, {pool(3, 2, 2, 1, 1, 0), {2, 1, 7, 5}},
    {pool(2, 3, 1, 3, 1, 1), {1, 3, 6, 8}},
};

std::string describe(const Config& c) {
  const Pool2dParams& p = c.p;
  return concat("k", p.kernel_h, "x", p.kernel_w, " s", p.stride_h, "x", p.stride_w, " p", p.pad_h,
                "x", p.pad_w, p.count_include_pad ? "" : " exclude-pad", " x", c.x.str());
}

// Plain-loop references, straight from the definition (padding is -inf for max, 0 for the sum).
struct MaxRef {
  Tensor y, argmax;
};
MaxRef ref_maxpool(const Pool2dParams& p, const Tensor& x) {
  const Shape ys = p.output_shape(x.shape());
  MaxRef r{Tensor::empty(ys, x.dtype()), Tensor::empty(ys, DType::I32)};
  const int64_t H = x.dim(2), W = x.dim(3);
  int64_t o = 0;
  for (int64_t nc = 0; nc < ys[0] * ys[1]; ++nc)
    for (int64_t oh = 0; oh < ys[2]; ++oh)
      for (int64_t ow = 0; ow < ys[3]; ++ow, ++o) {
        double best = -std::numeric_limits<double>::infinity();
        int64_t arg = -1;
        for (int i = 0; i < p.kernel_h; ++i)
          for (int j = 0; j < p.kernel_w; ++j) {
            const int64_t h = oh * p.stride_h - p.pad_h + i, w = ow * p.stride_w - p.pad_w + j;
            if (h < 0 || h >= H || w < 0 || w >= W) continue;
            const double v = x.item(nc * H * W + h * W + w);
            if (arg < 0 || v > best) best = v, arg = h * W + w;  // strict: the first max wins
          }
        r.y.set(o, best);
        r.argmax.set(o, double(arg));
      }
  return r;
}
Tensor ref_avgpool(const Pool2dParams& p, const Tensor& x) {
  const Shape ys = p.output_shape(x.shape());
  Tensor y = Tensor::empty(ys, x.dtype());
  const int64_t H = x.dim(2), W = x.dim(3);
  int64_t o = 0;
  for (int64_t nc = 0; nc < ys[0] * ys[1]; ++nc)
    for (int64_t oh = 0; oh < ys[2]; ++oh)
      for (int64_t ow = 0; ow < ys[3]; ++ow, ++o) {
        double sum = 0;
        int count = 0;
        for (int i = 0; i < p.kernel_h; ++i)
          for (int j = 0; j < p.kernel_w; ++j) {
            const int64_t h = oh * p.stride_h - p.pad_h + i, w = ow * p.stride_w - p.pad_w + j;
            if (h < 0 || h >= H || w < 0 || w >= W) continue;
            sum += x.item(nc * H * W + h * W + w);
            ++count;
          }
        y.set(o, sum / (p.count_include_pad ? p.kernel_h * p.kernel_w : count));
      }
  return y;
}
// grad_x of average pooling: every window spreads grad_y / divisor over its in-bounds pixels.
Tensor ref_avgpool_backward(const Pool2dParams& p, const Tensor& grad_y, const Shape& xs) {
  Tensor gx = Tensor::zeros(xs, grad_y.dtype());
  const int64_t H = xs[2], W = xs[3];
  const Shape& ys = grad_y.shape();
  int64_t o = 0;
  for (int64_t nc = 0; nc < ys[0] * ys[1]; ++nc)
    for (int64_t oh = 0; oh < ys[2]; ++oh)
      for (int64_t ow = 0; ow < ys[3]; ++ow, ++o) {
        std::vector<int64_t> in;
        for (int i = 0; i < p.kernel_h; ++i)
          for (int j = 0; j < p.kernel_w; ++j) {
            const int64_t h = oh * p.stride_h - p.pad_h + i, w = ow * p.stride_w - p.pad_w + j;
            if (h >= 0 && h < H && w >= 0 && w < W) in.push_back(nc * H * W + h * W + w);
          }
        const double div = p.count_include_pad ? p.kernel_h * p.kernel_w : double(in.size());
        for (int64_t e : in) gx.set(e, gx.item(e) + grad_y.item(o) / div);
      }
  return gx;
}

// Distinct values far apart (0.01) compared with the gradient check's eps, so that no
// perturbation changes which element is the maximum.
Tensor distinct_values(const Shape& s, uint64_t seed, DType t) {
  std::mt19937_64 g(seed);
  std::vector<int64_t> perm(size_t(s.numel()));
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), g);
  std::uniform_real_distribution<double> noise(0.0, 1e-3);
  Tensor r = Tensor::empty(s, t);
  for (int64_t i = 0; i < r.numel(); ++i)
    r.set(i, 0.01 * double(perm[size_t(i)] - s.numel() / 2) + noise(g));
  return r;
}

CaseBuilder maxpool_case(const Config& cfg, uint64_t seed) {
  return [cfg, seed](DType t) {
    OpCase c;
    c.name = "maxpool2d " + describe(cfg);
    c.input_names = {"x"};
    c.inputs = {distinct_values(cfg.x, seed, t)};
    c.differentiable = {true};
    const Pool2dParams p = cfg.p;
    c.forward = [p](Context& ctx, const std::vector<Tensor>& in) {
      const Shape ys = p.output_shape(in[0].shape());
      Tensor y = ctx.empty(ys, in[0].dtype()), arg = ctx.empty(ys, DType::I32);
      ops::maxpool2d_forward(ctx, p, in[0], y, arg);
      return std::vector<Tensor>{y};
    };
    c.backward = [p](Context& ctx, const std::vector<Tensor>& in, const std::vector<Tensor>& gout,
                     const std::vector<Tensor>& g, GradMode m) {
      const Shape ys = p.output_shape(in[0].shape());
      Tensor y = ctx.empty(ys, in[0].dtype()), arg = ctx.empty(ys, DType::I32);
      ops::maxpool2d_forward(ctx, p, in[0], y, arg);
      ops::maxpool2d_backward(ctx, p, gout[0], arg, g[0], m);
    };
    return c;
  };
}

CaseBuilder avgpool_case(const Config& cfg, uint64_t seed) {
  return [cfg, seed](DType t) {
    OpCase c;
    c.name = "avgpool2d " + describe(cfg);
    c.input_names = {"x"};
    c.inputs = {random_uniform(cfg.x, -2, 2, seed, t)};
    c.differentiable = {true};
    const Pool2dParams p = cfg.p;
    c.forward = [p](Context& ctx, const std::vector<Tensor>& in) {
      Tensor y = ctx.empty(p.output_shape(in[0].shape()), in[0].dtype());
      ops::avgpool2d_forward(ctx, p, in[0], y);
      return std::vector<Tensor>{y};
    };
    c.backward = [p](Context& ctx, const std::vector<Tensor>& in, const std::vector<Tensor>& gout,
                     const std::vector<Tensor>& g,
                     GradMode m) { ops::avgpool2d_backward(ctx, p, gout[0], g[0], m); };
    return c;
  };
}

Config with_cip(Config c, bool cip) {
  c.p.count_include_pad = cip;
  return c;
}

}  // namespace

TEST_CASE("pool2d: output shapes follow PyTorch's floor rule") {
  CHECK(pool(3, 3, 2, 2, 1, 1).output_shape({8, 3, 64, 64}) == Shape{8, 3, 32, 32});
  CHECK(pool(3, 3, 2, 2, 1, 1).output_shape({1, 1, 9, 7}) == Shape{1, 1, 5, 4});
  CHECK(pool(1, 1, 1, 1, 0, 0).output_shape({2, 4, 5, 3}) == Shape{2, 4, 5, 3});
  CHECK(pool(2, 2, 2, 2, 0, 0).output_shape({1, 1, 7, 6}) == Shape{1, 1, 3, 3});
  CHECK(pool(3, 2, 2, 1, 1, 0).output_shape({1, 1, 7, 5}) == Shape{1, 1, 4, 4});
  CHECK(pool(3, 3, 1, 1, 0, 0).output_shape({1, 1, 3, 3}) == Shape{1, 1, 1, 1});
}

TEST_CASE("maxpool2d: exact forward and backward on small integers (ties: first max wins)") {
  Context ctx;
  for (DType t : {DType::F32, DType::F64})
    for (size_t k = 0; k < kConfigs.size(); ++k) {
      const Config& cfg = kConfigs[k];
      const std::string what = concat("maxpool2d ", describe(cfg), " ", dtype_name(t));
      // Values in [-3, 3]: most windows hold ties.
      Tensor x = random_ints(cfg.x, -3, 3, 10 + k, t);
      const Shape ys = cfg.p.output_shape(cfg.x);
      Tensor y = Tensor::empty(ys, t), arg = Tensor::empty(ys, DType::I32);
      ops::maxpool2d_forward(ctx, cfg.p, x, y, arg);
      MaxRef want = ref_maxpool(cfg.p, x);
      require_equal(y, want.y, what + ": y");
      require_equal(arg, want.argmax, what + ": argmax");

      Tensor gy = random_ints(ys, -5, 5, 20 + k, t);
      Tensor gx_want = Tensor::zeros(cfg.x, t);
      for (int64_t o = 0; o < gy.numel(); ++o) {
        const int64_t plane = o / (ys[2] * ys[3]);
        const int64_t e = plane * cfg.x[2] * cfg.x[3] + int64_t(want.argmax.item(o));
        gx_want.set(e, gx_want.item(e) + gy.item(o));
      }
      Tensor gx = Tensor::empty(cfg.x, t);
      gx.fill(std::nan(""));  // Overwrite must not read what is there
      ops::maxpool2d_backward(ctx, cfg.p, gy, arg, gx, GradMode::Overwrite);
      require_equal(gx, gx_want, what + ": grad_x (overwrite)");

      Tensor prior = random_ints(cfg.x, -9, 9, 30 + k, t), acc = prior.clone();
      ops::maxpool2d_backward(ctx, cfg.p, gy, arg, acc, GradMode::Accumulate);
      for (int64_t e = 0; e < prior.numel(); ++e) gx_want.set(e, gx_want.item(e) + prior.item(e));
      require_equal(acc, gx_want, what + ": grad_x (accumulate)");
    }
}

TEST_CASE("maxpool2d: DynVision's MaxPool(3, 2, 1) on a hand-checked plane") {
  Context ctx;
  // 4x4 plane 0..15 in row-major order; windows rows/cols {-1..1}, {1..3}: the bottom-right
  // pixel of each in-bounds window is the maximum.
  std::vector<double> v(16);
  std::iota(v.begin(), v.end(), 0.0);
  Tensor x = Tensor::from({1, 1, 4, 4}, v);
  Tensor y = Tensor::empty({1, 1, 2, 2}), arg = Tensor::empty({1, 1, 2, 2}, DType::I32);
  ops::maxpool2d_forward(ctx, pool(3, 3, 2, 2, 1, 1), x, y, arg);
  require_equal(y, Tensor::from({1, 1, 2, 2}, {5, 7, 13, 15}), "y");
  require_equal(arg, Tensor::from({1, 1, 2, 2}, {5, 7, 13, 15}, DType::I32), "argmax");
}

TEST_CASE("maxpool2d: identity MaxPool(1, 1) returns x exactly") {
  Context ctx;
  const Pool2dParams p = pool(1, 1, 1, 1, 0, 0);
  for (DType t : {DType::F32, DType::F64}) {
    Tensor x = random_uniform({2, 3, 7, 5}, -1e6, 1e6, 4, t);
    x.set(3, -std::numeric_limits<double>::infinity());
    x.set(4, std::numeric_limits<double>::infinity());
    x.set(5, -0.0);
    x.set(6, 1e-30);
    Tensor y = Tensor::empty(x.shape(), t), arg = Tensor::empty(x.shape(), DType::I32);
    ops::maxpool2d_forward(ctx, p, x, y, arg);
    require_equal(y, x, "identity y");
    CHECK(std::signbit(y.item(5)));
    for (int64_t i = 0; i < x.numel(); ++i) REQUIRE(arg.item(i) == double(i % 35));
    Tensor gy = random_uniform(x.shape(), -3, 3, 5, t), gx = Tensor::empty(x.shape(), t);
    ops::maxpool2d_backward(ctx, p, gy, arg, gx, GradMode::Overwrite);
    require_equal(gx, gy, "identity grad_x");
  }
}

TEST_CASE("maxpool2d: NaN propagates like PyTorch") {
  Context ctx;
  Tensor x = Tensor::from({1, 1, 2, 2}, {1, std::nan(""), 5, 2});
  Tensor y = Tensor::empty({1, 1, 1, 1}), arg = Tensor::empty({1, 1, 1, 1}, DType::I32);
  ops::maxpool2d_forward(ctx, pool(2, 2, 2, 2, 0, 0), x, y, arg);
  CHECK(std::isnan(y.item(0)));
  CHECK(arg.item(0) == 1);
}

TEST_CASE("avgpool2d: exact forward and backward on small integers") {
  Context ctx;
  for (DType t : {DType::F32, DType::F64})
    for (bool cip : {true, false})
      for (size_t k = 0; k < kConfigs.size(); ++k) {
        const Config cfg = with_cip(kConfigs[k], cip);
        const std::string what = concat("avgpool2d ", describe(cfg), " ", dtype_name(t));
        Tensor x = random_ints(cfg.x, -9, 9, 40 + k, t);
        const Shape ys = cfg.p.output_shape(cfg.x);
        Tensor y = Tensor::empty(ys, t);
        ops::avgpool2d_forward(ctx, cfg.p, x, y);
        // One integer sum and one division each: correctly rounded on both sides.
        require_equal(y, ref_avgpool(cfg.p, x), what + ": y");

        // grad_y in multiples of lcm(1..9) = 2520 makes every share an integer, so the sums
        // are exact whatever the order.
        Tensor gy = random_ints(ys, -5, 5, 50 + k, t);
        for (int64_t o = 0; o < gy.numel(); ++o) gy.set(o, 2520 * gy.item(o));
        Tensor gx_want = ref_avgpool_backward(cfg.p, gy, cfg.x);
        Tensor gx = Tensor::empty(cfg.x, t);
        gx.fill(std::nan(""));
        ops::avgpool2d_backward(ctx, cfg.p, gy, gx, GradMode::Overwrite);
        require_equal(gx, gx_want, what + ": grad_x (overwrite)");
        Tensor prior = random_ints(cfg.x, -9, 9, 60 + k, t), acc = prior.clone();
        ops::avgpool2d_backward(ctx, cfg.p, gy, acc, GradMode::Accumulate);
        for (int64_t e = 0; e < prior.numel(); ++e) gx_want.set(e, gx_want.item(e) + prior.item(e));
        require_equal(acc, gx_want, what + ": grad_x (accumulate)");
      }
}

TEST_CASE("avgpool2d: padding counts in the divisor only with count_include_pad") {
  Context ctx;
  Tensor x = Tensor::from({1, 1, 2, 2}, {1, 2, 3, 4});
  Tensor y = Tensor::empty({1, 1, 1, 1});
  // k3 s2 p1 on 2x2: one window covering the whole input plus five padded pixels.
  ops::avgpool2d_forward(ctx, pool(3, 3, 2, 2, 1, 1, true), x, y);
  CHECK(y.item(0) == doctest::Approx(10.0 / 9));
  ops::avgpool2d_forward(ctx, pool(3, 3, 2, 2, 1, 1, false), x, y);
  CHECK(y.item(0) == 2.5);
}

TEST_CASE("pool2d: large inputs take the threaded path and agree with the reference") {
  ContextOptions o;
  o.threads = 2;
  Context ctx(o);
  const Config cfg{pool(3, 3, 2, 2, 1, 1), {2, 16, 64, 64}};
  Tensor x = random_ints(cfg.x, -20, 20, 8);
  const Shape ys = cfg.p.output_shape(cfg.x);
  Tensor y = Tensor::empty(ys), arg = Tensor::empty(ys, DType::I32);
  ops::maxpool2d_forward(ctx, cfg.p, x, y, arg);
  MaxRef want = ref_maxpool(cfg.p, x);
  require_equal(y, want.y, "threaded maxpool y");
  require_equal(arg, want.argmax, "threaded maxpool argmax");
  ops::avgpool2d_forward(ctx, cfg.p, x, y);
  require_equal(y, ref_avgpool(cfg.p, x), "threaded avgpool y");
}

TEST_CASE("maxpool2d: f64 gradient check") {
  for (size_t k = 0; k < kConfigs.size(); ++k) check_gradients(maxpool_case(kConfigs[k], 100 + k));
}

TEST_CASE("avgpool2d: f64 gradient check (count_include_pad both ways)") {
  for (bool cip : {true, false})
    for (size_t k = 0; k < kConfigs.size(); ++k)
      check_gradients(avgpool_case(with_cip(kConfigs[k], cip), 200 + k));
}

TEST_CASE("pool2d: CPU vs CUDA" * doctest::test_suite("gpu")) {
  for (size_t k = 0; k < kConfigs.size(); ++k) {
    check_cpu_vs_cuda(maxpool_case(kConfigs[k], 300 + k));
    for (bool cip : {true, false})
      check_cpu_vs_cuda(avgpool_case(with_cip(kConfigs[k], cip), 400 + k));
  }
}

TEST_CASE("pool2d: bad arguments name the op and the tensor") {
  Context ctx;
  const Pool2dParams p = pool(3, 3, 2, 2, 1, 1);
  CHECK_THROWS_WITH_AS(p.output_shape({3, 8, 8}), doctest::Contains("pool2d: x must be [N,C,H,W]"),
                       DataError);
  CHECK_THROWS_WITH_AS(pool(0, 3, 1, 1, 0, 0).output_shape({1, 1, 8, 8}),
                       doctest::Contains("kernel 0x3 must be >= 1"), DataError);
  CHECK_THROWS_WITH_AS(pool(3, 3, 0, 1, 1, 1).output_shape({1, 1, 8, 8}),
                       doctest::Contains("stride 0x1 must be >= 1"), DataError);
  CHECK_THROWS_WITH_AS(pool(3, 3, 1, 1, -1, 0).output_shape({1, 1, 8, 8}),
                       doctest::Contains("padding -1x0 must be >= 0"), DataError);
  CHECK_THROWS_WITH_AS(pool(3, 3, 1, 1, 2, 1).output_shape({1, 1, 8, 8}),
                       doctest::Contains("must be at most half the kernel 3x3"), DataError);
  CHECK_THROWS_WITH_AS(pool(3, 3, 1, 1, 0, 0).output_shape({1, 1, 2, 8}),
                       doctest::Contains("is smaller than the kernel"), DataError);

  Tensor x = Tensor::zeros({1, 2, 8, 8});
  Tensor y = Tensor::zeros({1, 2, 4, 4}), arg = Tensor::zeros({1, 2, 4, 4}, DType::I32);
  Tensor bad_y = Tensor::zeros({1, 2, 3, 4});
  CHECK_THROWS_WITH_AS(
      ops::maxpool2d_forward(ctx, p, x, bad_y, arg),
      doctest::Contains("maxpool2d_forward: y has shape [1,2,3,4], expected [1,2,4,4]"), DataError);
  CHECK_THROWS_WITH_AS(ops::maxpool2d_forward(ctx, p, x, y, y),
                       doctest::Contains("maxpool2d_forward: argmax must be a host i32 tensor"),
                       DataError);
  CHECK_THROWS_WITH_AS(
      ops::maxpool2d_forward(ctx, p, x, Tensor::zeros({1, 2, 4, 4}, DType::F64), arg),
      doctest::Contains("maxpool2d_forward: y is f64"), DataError);
  CHECK_THROWS_WITH_AS(
      ops::maxpool2d_forward(ctx, p, Tensor::zeros({1, 2, 8, 8}, DType::I32), y, arg),
      doctest::Contains("needs f32 or f64"), DataError);
  CHECK_THROWS_WITH_AS(ops::maxpool2d_forward(ctx, p, Tensor::zeros({2, 8, 8}), y, arg),
                       doctest::Contains("maxpool2d_forward: x must be [N,C,H,W]"), DataError);

  Tensor gx = Tensor::zeros({1, 2, 8, 8});
  CHECK_THROWS_WITH_AS(ops::maxpool2d_backward(ctx, p, bad_y, arg, gx, GradMode::Overwrite),
                       doctest::Contains("maxpool2d_backward: grad_y has shape [1,2,3,4]"),
                       DataError);
  CHECK_THROWS_WITH_AS(ops::maxpool2d_backward(ctx, p, y, arg, Tensor(), GradMode::Overwrite),
                       doctest::Contains("maxpool2d_backward: grad_x is undefined"), DataError);
  Tensor wild = Tensor::zeros({1, 2, 4, 4}, DType::I32);
  wild.set(3, 64);  // one past the 8x8 plane
  CHECK_THROWS_WITH_AS(ops::maxpool2d_backward(ctx, p, y, wild, gx, GradMode::Overwrite),
                       doctest::Contains("maxpool2d_backward: argmax holds 1 indices outside"),
                       DataError);

  CHECK_THROWS_WITH_AS(ops::avgpool2d_forward(ctx, p, x, bad_y),
                       doctest::Contains("avgpool2d_forward: y has shape [1,2,3,4]"), DataError);
  CHECK_THROWS_WITH_AS(ops::avgpool2d_backward(ctx, p, y, Tensor::zeros({1, 2, 8, 8}, DType::F64),
                                               GradMode::Overwrite),
                       doctest::Contains("avgpool2d_backward: grad_x is f64"), DataError);
  CHECK_THROWS_WITH_AS(
      ops::avgpool2d_backward(ctx, pool(2, 2, 2, 2, 2, 0), y, gx, GradMode::Overwrite),
      doctest::Contains("avgpool2d_backward: padding 2x0 must be at most half"), DataError);
}

// PyTorch agreement (tests/python/torch_ref_pool2d.py): random f32 inputs, odd and non-square.
namespace {
Pool2dParams params_from(const Tensor& a) {
  return pool(int(a.item(0)), int(a.item(1)), int(a.item(2)), int(a.item(3)), int(a.item(4)),
              int(a.item(5)), a.item(6) != 0);
}
}  // namespace

TEST_CASE("maxpool2d: agrees with torch.nn.functional.max_pool2d" * doctest::test_suite("torch")) {
  Context ctx;
  const int n = int(torch_ref("pool2d_index", "max_cases").item(0));
  CHECK(n >= 8);
  for (int k = 0; k < n; ++k) {
    const std::string name = concat("maxpool2d_", k);
    const Pool2dParams p = params_from(torch_ref(name, "params"));
    Tensor x = torch_ref(name, "x"), gy = torch_ref(name, "grad_y");
    const Shape ys = p.output_shape(x.shape());
    Tensor y = Tensor::empty(ys), arg = Tensor::empty(ys, DType::I32);
    ops::maxpool2d_forward(ctx, p, x, y, arg);
    // The maximum is a copy of an input element and random inputs have no ties.
    require_equal(y, torch_ref(name, "y"), name + ": y");
    require_equal(arg, torch_ref(name, "argmax"), name + ": argmax");
    Tensor gx = Tensor::empty(x.shape());
    ops::maxpool2d_backward(ctx, p, gy, arg, gx, GradMode::Overwrite);
    require_close(gx, torch_ref(name, "grad_x"), 1e-5, 1e-4, name + ": grad_x");
  }
}

TEST_CASE("avgpool2d: agrees with torch.nn.functional.avg_pool2d" * doctest::test_suite("torch")) {
  Context ctx;
  const int n = int(torch_ref("pool2d_index", "avg_cases").item(0));
  CHECK(n >= 12);
  for (int k = 0; k < n; ++k) {
    const std::string name = concat("avgpool2d_", k);
    const Pool2dParams p = params_from(torch_ref(name, "params"));
    Tensor x = torch_ref(name, "x"), gy = torch_ref(name, "grad_y");
    Tensor y = Tensor::empty(p.output_shape(x.shape()));
    ops::avgpool2d_forward(ctx, p, x, y);
    require_close(y, torch_ref(name, "y"), 1e-5, 1e-4, name + ": y");
    Tensor gx = Tensor::empty(x.shape());
    ops::avgpool2d_backward(ctx, p, gy, gx, GradMode::Overwrite);
    require_close(gx, torch_ref(name, "grad_x"), 1e-5, 1e-4, name + ": grad_x");
  }
}
