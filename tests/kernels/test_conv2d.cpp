// conv2d: forward, dgrad, wgrad and bias grad against plain 7-loop references on small integers
// (exact) over kernel sizes, strides, zero/reflect padding, groups, depthwise and bias on/off;
// f64 gradient checks of x, w, b; CPU vs CUDA; bad arguments; scratch reuse; PyTorch agreement.
#include <cmath>
#include <filesystem>

#include "kernels/dispatch.h"
#include "tests/harness.h"

using namespace dynsim;
using namespace dynsim::test;

namespace {

struct Config {
  int64_t n, cin, h, w, cout, kh, kw;
  int sh = 1, sw = 1, ph = 0, pw = 0;
  PadMode mode = PadMode::Zeros;
  int groups = 1;
  bool bias = true;
  Conv2dParams params() const {
    Conv2dParams p;
    p.stride_h = sh, p.stride_w = sw, p.pad_h = ph, p.pad_w = pw, p.pad_mode = mode;
    p.groups = groups;
    return p;
  }
  Shape x_shape() const { return {n, cin, h, w}; }
  Shape w_shape() const { return {cout, cin / groups, kh, kw}; }
  std::string str() const {
    return concat("N", n, " Cin", cin, " ", h, "x", w, " Cout", cout, " k", kh, "x", kw, " s(", sh,
                  ",", sw, ") p(", ph, ",", pw, ")", mode == PadMode::Reflect ? " reflect" : "",
                  " g", groups, bias ? " bias" : "");
  }
};

// Written independently of kernels/conv2d_math.h: PyTorch's reflect maps -1 to 1, n to n-2.
int64_t src_index(int64_t i, int64_t n, PadMode m) {
  if (i >= 0 && i < n) return i;
  if (m == PadMode::Zeros) return -1;
  return i < 0 ? -i : 2 * n - 2 - i;
}

// Visits every (n, co, oh, ow, ci, kh, kw) term with flat indices of y, x, w (x = -1: padding).
template <class F>
void for_each_term(const Config& c, F&& f) {
  const int64_t ho = (c.h + 2 * c.ph - c.kh) / c.sh + 1, wo = (c.w + 2 * c.pw - c.kw) / c.sw + 1;
  const int64_t cg = c.cin / c.groups, co_per = c.cout / c.groups;
  for (int64_t n = 0; n < c.n; ++n)
    for (int64_t co = 0; co < c.cout; ++co)
      for (int64_t oh = 0; oh < ho; ++oh)
        for (int64_t ow = 0; ow < wo; ++ow)
          for (int64_t ci = 0; ci < cg; ++ci)
            for (int64_t kh = 0; kh < c.kh; ++kh)
              for (int64_t kw = 0; kw < c.kw; ++kw) {
                const int64_t ih = src_index(oh * c.sh - c.ph + kh, c.h, c.mode);
                const int64_t iw = src_index(ow * c.sw - c.pw + kw, c.w, c.mode);
                const int64_t y = ((n * c.cout + co) * ho + oh) * wo + ow;
                const int64_t cx = (co / co_per) * cg + ci;
                const int64_t x = ih < 0 || iw < 0 ? -1 : ((n * c.cin + cx) * c.h + ih) * c.w + iw;
                const int64_t wi = ((co * cg + ci) * c.kh + kh) * c.kw + kw;
                f(y, x, wi, co);
              }
}

Tensor ref_forward(const Config& c, const Tensor& x, const Tensor& w, const Tensor& b,
                   const Shape& ys) {
  Tensor y = Tensor::zeros(ys, x.dtype());
  const int64_t per_plane = ys[2] * ys[3];
  if (b.defined())
    for (int64_t i = 0; i < y.numel(); ++i) y.set(i, b.item((i / per_plane) % c.cout));
  for_each_term(c, [&](int64_t yi, int64_t xi, int64_t wi, int64_t) {
    if (xi >= 0) y.set(yi, y.item(yi) + x.item(xi) * w.item(wi));
  });
  return y;
}

struct Grads {
  Tensor x, w, b;
};
Grads ref_backward(const Config& c, const Tensor& gy, const Tensor& x, const Tensor& w) {
  Grads g{Tensor::zeros(x.shape(), x.dtype()), Tensor::zeros(w.shape(), x.dtype()),
          Tensor::zeros({c.cout}, x.dtype())};
  for_each_term(c, [&](int64_t yi, int64_t xi, int64_t wi, int64_t co) {
    if (xi < 0) return;
    g.x.set(xi, g.x.item(xi) + gy.item(yi) * w.item(wi));
    g.w.set(wi, g.w.item(wi) + gy.item(yi) * x.item(xi));
  });
  const int64_t per_plane = gy.dim(2) * gy.dim(3);
  for (int64_t i = 0; i < gy.numel(); ++i) {
    const int64_t co = (i / per_plane) % c.cout;
    g.b.set(co, g.b.item(co) + gy.item(i));
  }
  return g;
}

const std::vector<Config>& exact_configs() {
  static const std::vector<Config> cs = {
      {3, 4, 5, 7, 6, 1, 1},                                          // pointwise, no im2col
      {1, 3, 6, 5, 4, 1, 1, 2, 2, 0, 0, PadMode::Zeros, 1, false},    // strided 1x1
      {3, 3, 6, 5, 4, 3, 3, 1, 1, 1, 1},                              // 3x3 same, zeros
      {3, 3, 6, 5, 4, 3, 3, 1, 1, 1, 1, PadMode::Reflect, 1, false},  // 3x3 same, reflect
      {1, 2, 7, 9, 3, 5, 5, 2, 2, 2, 2, PadMode::Reflect},            // 5x5 stride 2 reflect
      {3, 4, 9, 6, 6, 7, 3, 2, 1, 3, 1, PadMode::Zeros, 2},           // 7x3, stride (2,1), groups
      {3, 4, 5, 6, 6, 3, 3, 1, 1, 1, 1, PadMode::Reflect, 2, false},  // groups 2 reflect
      {3, 4, 6, 5, 4, 3, 3, 1, 1, 1, 1, PadMode::Reflect, 4},         // depthwise
      {1, 3, 7, 6, 6, 5, 5, 2, 2, 2, 2, PadMode::Zeros, 3, false},    // depthwise, multiplier 2
      {1, 2, 5, 4, 3, 3, 3, 1, 1, 2, 2},                              // pad wider than needed
      {3, 3, 7, 8, 2, 3, 3, 2, 2, 0, 0, PadMode::Zeros, 1, false},    // stride 2, no padding
      {2, 3, 4, 5, 2, 1, 1, 1, 1, 1, 1},                              // padded 1x1, zeros
      {2, 3, 4, 5, 2, 1, 1, 1, 2, 1, 1, PadMode::Reflect},            // padded 1x1, reflect
      {3, 2, 4, 11, 3, 3, 5, 1, 1, 1, 2, PadMode::Reflect},           // non-square everything
      {4, 8, 16, 16, 8, 3, 3, 1, 1, 1, 1, PadMode::Reflect},          // big enough to thread
      {4, 16, 16, 12, 16, 3, 3, 2, 1, 1, 1, PadMode::Reflect, 16},    // threaded depthwise
      {3, 8, 12, 12, 4, 1, 1},                                        // threaded pointwise
      {5, 4, 8, 8, 6, 3, 3, 1, 1, 1, 1, PadMode::Reflect, 2},         // images batched: 4 + 1
      {7, 3, 5, 6, 4, 3, 3, 2, 1, 1, 0},                              // batched, stride (2,1)
  };
  return cs;
}

struct IntProblem {
  Tensor x, w, b, gy;
  Shape ys;
};
IntProblem int_problem(const Config& c, uint64_t seed) {
  IntProblem p;
  p.ys = c.params().output_shape(c.x_shape(), c.w_shape());
  p.x = random_ints(c.x_shape(), -4, 4, seed);
  p.w = random_ints(c.w_shape(), -3, 3, seed + 1);
  if (c.bias) p.b = random_ints({c.cout}, -5, 5, seed + 2);
  p.gy = random_ints(p.ys, -3, 3, seed + 3);
  return p;
}

// One conv with inputs x, w (and b when the config has one) for the harness.
CaseBuilder conv_case(const Config& cfg) {
  return [cfg](DType t) {
    OpCase c;
    c.name = "conv2d " + cfg.str();
    c.input_names = {"x", "w"};
    c.inputs = {random_uniform(cfg.x_shape(), -1, 1, 21, t),
                random_uniform(cfg.w_shape(), -1, 1, 22, t)};
    c.differentiable = {true, true};
    if (cfg.bias) {
      c.input_names.push_back("b");
      c.inputs.push_back(random_uniform({cfg.cout}, -1, 1, 23, t));
      c.differentiable.push_back(true);
    }
    const Conv2dParams p = cfg.params();
    c.forward = [p](Context& ctx, const std::vector<Tensor>& in) {
      Tensor y = ctx.empty(p.output_shape(in[0].shape(), in[1].shape()), in[0].dtype());
      ops::conv2d_forward(ctx, p, in[0], in[1], in.size() > 2 ? in[2] : Tensor(), y);
      return std::vector<Tensor>{y};
    };
    c.backward = [p](Context& ctx, const std::vector<Tensor>& in, const std::vector<Tensor>& gout,
                     const std::vector<Tensor>& g, GradMode m) {
      ops::conv2d_backward(ctx, p, gout[0], in[0], in[1], g[0], g[1],
                           g.size() > 2 ? g[2] : Tensor(), m);
    };
    return c;
  };
}

const std::vector<Config>& grad_configs() {
  static const std::vector<Config> cs = {
      {2, 3, 5, 6, 4, 3, 3, 1, 1, 1, 1},                              // 3x3 same, zeros, bias
      {2, 2, 7, 6, 3, 3, 3, 2, 2, 1, 1, PadMode::Reflect},            // stride 2 reflect
      {2, 4, 6, 5, 4, 5, 3, 1, 1, 2, 1, PadMode::Reflect, 2, false},  // 5x3 groups reflect
      {2, 3, 5, 6, 6, 3, 3, 1, 1, 1, 1, PadMode::Reflect, 3},         // depthwise, multiplier 2
      {2, 4, 4, 5, 3, 1, 1},                                          // pointwise
      {1, 2, 7, 5, 3, 3, 3, 2, 1, 0, 1, PadMode::Zeros, 1, false},    // stride (2,1), pad (0,1)
      {2, 3, 6, 6, 2, 1, 1, 2, 2, 0, 0},                              // strided 1x1 (skip conv)
  };
  return cs;
}

}  // namespace

// Thread counts change how images are split and batched (small images share one GEMM).
Context threads_ctx(int threads) {
  ContextOptions o;
  o.threads = threads;
  return Context(o);
}

TEST_CASE("conv2d: exact forward vs 7-loop reference on small integers") {
  for (int threads : {1, 2, 3}) {
    Context ctx = threads_ctx(threads);
    uint64_t seed = 100;
    for (const Config& c : exact_configs()) {
      CAPTURE(threads);
      CAPTURE(c.str());
      IntProblem p = int_problem(c, seed += 10);
      Tensor y = Tensor::empty(p.ys);
      ops::conv2d_forward(ctx, c.params(), p.x, p.w, p.b, y);
      require_equal(y, ref_forward(c, p.x, p.w, p.b, p.ys), "conv2d forward " + c.str());
      // f64 takes the Eigen GEMM and must agree as well.
      Tensor y64 = Tensor::empty(p.ys, DType::F64);
      ops::conv2d_forward(ctx, c.params(), p.x.to_dtype(DType::F64), p.w.to_dtype(DType::F64),
                          c.bias ? p.b.to_dtype(DType::F64) : Tensor(), y64);
      require_equal(y64.to_dtype(DType::F32), y, "conv2d forward f64 " + c.str());
    }
  }
}

TEST_CASE("conv2d: exact dgrad, wgrad and bias grad vs plain loops on small integers") {
  for (int threads : {1, 2, 3}) {
    Context ctx = threads_ctx(threads);
    uint64_t seed = 300;
    for (const Config& c : exact_configs()) {
      CAPTURE(threads);
      CAPTURE(c.str());
      IntProblem p = int_problem(c, seed += 10);
      Grads want = ref_backward(c, p.gy, p.x, p.w);
      for (DType t : {DType::F32, DType::F64}) {
        Tensor gx = Tensor::empty(p.x.shape(), t), gw = Tensor::empty(p.w.shape(), t);
        Tensor gb = Tensor::empty({c.cout}, t);
        gx.fill(std::nan("")), gw.fill(std::nan("")), gb.fill(std::nan(""));
        ops::conv2d_backward(ctx, c.params(), p.gy.to_dtype(t), p.x.to_dtype(t), p.w.to_dtype(t),
                             gx, gw, gb, GradMode::Overwrite);
        const std::string what = concat(" ", dtype_name(t), " ", c.str());
        require_equal(gx.to_dtype(DType::F32), want.x, "conv2d dgrad" + what);
        require_equal(gw.to_dtype(DType::F32), want.w, "conv2d wgrad" + what);
        require_equal(gb.to_dtype(DType::F32), want.b, "conv2d bias grad" + what);
      }
    }
  }
}

TEST_CASE("conv2d: each gradient may be skipped; accumulate adds") {
  Context ctx = threads_ctx(1);
  for (const Config& c :
       {exact_configs()[5], exact_configs()[7], exact_configs()[0], exact_configs()[17]}) {
    CAPTURE(c.str());
    IntProblem p = int_problem(c, 7);
    Grads want = ref_backward(c, p.gy, p.x, p.w);
    Tensor gx = Tensor::empty(p.x.shape()), gw = Tensor::empty(p.w.shape());
    ops::conv2d_backward(ctx, c.params(), p.gy, p.x, p.w, gx, Tensor(), Tensor(),
                         GradMode::Overwrite);
    require_equal(gx, want.x, "dgrad alone");
    ops::conv2d_backward(ctx, c.params(), p.gy, p.x, p.w, Tensor(), gw, Tensor(),
                         GradMode::Overwrite);
    require_equal(gw, want.w, "wgrad alone");
    // Accumulating the same gradients again doubles them.
    Tensor gb = Tensor::zeros({c.cout});
    ops::conv2d_backward(ctx, c.params(), p.gy, p.x, p.w, gx, gw, gb, GradMode::Accumulate);
    for (int64_t i = 0; i < gx.numel(); ++i) REQUIRE(gx.item(i) == 2 * want.x.item(i));
    for (int64_t i = 0; i < gw.numel(); ++i) REQUIRE(gw.item(i) == 2 * want.w.item(i));
    require_equal(gb, want.b, "bias grad accumulated onto zeros");
  }
}

TEST_CASE("conv2d: a second call with the same shapes does not grow the scratch arena") {
  ContextOptions o;
  o.threads = 2;
  Context ctx(o);
  for (const Config& c :
       {exact_configs()[14], exact_configs()[5], exact_configs()[0], exact_configs()[17]}) {
    CAPTURE(c.str());
    IntProblem p = int_problem(c, 9);
    Tensor y = Tensor::empty(p.ys), gx = Tensor::empty(p.x.shape());
    Tensor gw = Tensor::empty(p.w.shape()), gb = Tensor::empty({c.cout});
    auto step = [&] {
      ops::conv2d_forward(ctx, c.params(), p.x, p.w, p.b, y);
      ops::conv2d_backward(ctx, c.params(), p.gy, p.x, p.w, gx, gw, gb, GradMode::Overwrite);
    };
    step();
    const size_t warmed = ctx.scratch().capacity();
    step();
    CHECK(ctx.scratch().capacity() == warmed);
  }
}

TEST_CASE("conv2d: f64 gradient checks of x, w, b") {
  for (const Config& c : grad_configs()) {
    CAPTURE(c.str());
    GradCheckStats s = check_gradients(conv_case(c));
    CHECK(s.elements > 0);
  }
}

TEST_CASE("conv2d: CPU vs CUDA" * doctest::test_suite("gpu")) {
  for (const Config& c : grad_configs()) check_cpu_vs_cuda(conv_case(c));
  check_cpu_vs_cuda(conv_case(exact_configs()[14]));
}

TEST_CASE("conv2d: bad arguments name the op and the tensor") {
  Context ctx;
  Conv2dParams p;
  p.pad_h = p.pad_w = 1;
  Tensor x = Tensor::zeros({2, 4, 6, 6}), w = Tensor::zeros({8, 4, 3, 3});
  Tensor b = Tensor::zeros({8}), y = Tensor::zeros({2, 8, 6, 6});
  CHECK_NOTHROW(ops::conv2d_forward(ctx, p, x, w, b, y));

  CHECK_THROWS_WITH_AS(p.output_shape({4, 6, 6}, w.shape()),
                       doctest::Contains("conv2d: x must have rank 4"), DataError);
  CHECK_THROWS_WITH_AS(p.output_shape(x.shape(), {8, 4, 3}),
                       doctest::Contains("conv2d: w must have rank 4"), DataError);
  CHECK_THROWS_WITH_AS(ops::conv2d_forward(ctx, p, x, Tensor::zeros({8, 3, 3, 3}), b, y),
                       doctest::Contains("needs w.dim(1) == 4"), DataError);
  Conv2dParams q = p;
  q.groups = 3;
  CHECK_THROWS_WITH_AS(q.output_shape(x.shape(), {6, 1, 3, 3}),
                       doctest::Contains("x has 4 channels, not divisible by groups 3"), DataError);
  q.groups = 2;
  CHECK_THROWS_WITH_AS(q.output_shape(x.shape(), {5, 2, 3, 3}),
                       doctest::Contains("w has 5 output channels, not divisible by groups 2"),
                       DataError);
  q.groups = 0;
  CHECK_THROWS_WITH_AS(q.output_shape(x.shape(), w.shape()),
                       doctest::Contains("groups must be >= 1"), DataError);
  q = p;
  q.stride_w = 0;
  CHECK_THROWS_WITH_AS(q.output_shape(x.shape(), w.shape()),
                       doctest::Contains("stride must be >= 1"), DataError);
  q = p;
  q.pad_h = -1;
  CHECK_THROWS_WITH_AS(q.output_shape(x.shape(), w.shape()),
                       doctest::Contains("padding must be >= 0"), DataError);
  q = p;
  q.pad_mode = PadMode::Reflect;
  q.pad_w = 6;
  CHECK_THROWS_WITH_AS(q.output_shape(x.shape(), {8, 4, 3, 9}),
                       doctest::Contains("reflect padding (1, 6) must be smaller than the input"),
                       DataError);
  CHECK_THROWS_WITH_AS(p.output_shape(x.shape(), {8, 4, 9, 3}),
                       doctest::Contains("kernel 9x3 does not fit input 6x6"), DataError);

  CHECK_THROWS_WITH_AS(ops::conv2d_forward(ctx, p, x, w, b, Tensor::zeros({2, 8, 5, 6})),
                       doctest::Contains("conv2d_forward: y has shape [2,8,5,6]"), DataError);
  CHECK_THROWS_WITH_AS(ops::conv2d_forward(ctx, p, x, w, Tensor::zeros({4}), y),
                       doctest::Contains("conv2d_forward: b has shape [4]"), DataError);
  CHECK_THROWS_WITH_AS(ops::conv2d_forward(ctx, p, x, w.to_dtype(DType::F64), b, y),
                       doctest::Contains("conv2d_forward: w is f64"), DataError);
  CHECK_THROWS_WITH_AS(
      ops::conv2d_forward(ctx, p, Tensor::zeros({2, 4, 6, 6}, DType::I32), w, b, y),
      doctest::Contains("needs f32 or f64"), DataError);
  CHECK_THROWS_WITH_AS(ops::conv2d_forward(ctx, p, x, Tensor(), b, y),
                       doctest::Contains("conv2d_forward: w is undefined"), DataError);

  CHECK_THROWS_WITH_AS(ops::conv2d_backward(ctx, p, Tensor::zeros({2, 8, 6, 5}), x, w, Tensor(),
                                            Tensor(), Tensor(), GradMode::Overwrite),
                       doctest::Contains("conv2d_backward: grad_y has shape [2,8,6,5]"), DataError);
  CHECK_THROWS_WITH_AS(ops::conv2d_backward(ctx, p, y, x, w, Tensor(), Tensor::zeros({8, 4, 1, 3}),
                                            Tensor(), GradMode::Overwrite),
                       doctest::Contains("conv2d_backward: grad_w has shape [8,4,1,3]"), DataError);
  CHECK_THROWS_WITH_AS(ops::conv2d_backward(ctx, p, y, x, w, Tensor::zeros({2, 4, 6, 7}), Tensor(),
                                            Tensor(), GradMode::Overwrite),
                       doctest::Contains("conv2d_backward: grad_x has shape [2,4,6,7]"), DataError);
  CHECK_THROWS_WITH_AS(ops::conv2d_backward(ctx, p, y, x, w, Tensor(), Tensor(),
                                            Tensor::zeros({8}, DType::F64), GradMode::Overwrite),
                       doctest::Contains("conv2d_backward: grad_b is f64"), DataError);
}

// PyTorch agreement: tests/python/torch_ref_conv2d.py writes conv2d_<i>/ with the inputs,
// y = F.conv2d(...) and the gradients for a random grad_y; params = [sh, sw, ph, pw, reflect,
// groups, has_bias].
TEST_CASE("conv2d: agrees with PyTorch (f32)" * doctest::test_suite("torch")) {
  int cases = 0;
  for (;; ++cases) {
    const std::string name = "conv2d_" + std::to_string(cases);
    if (!std::filesystem::exists(torch_refs_dir() + "/" + name)) break;
    CAPTURE(name);
    Tensor prm = torch_ref(name, "params");
    Conv2dParams p;
    p.stride_h = int(prm.item(0)), p.stride_w = int(prm.item(1));
    p.pad_h = int(prm.item(2)), p.pad_w = int(prm.item(3));
    p.pad_mode = prm.item(4) != 0 ? PadMode::Reflect : PadMode::Zeros;
    p.groups = int(prm.item(5));
    const bool has_bias = prm.item(6) != 0;
    Context ctx;
    Tensor x = torch_ref(name, "x"), w = torch_ref(name, "w"), gy = torch_ref(name, "gy");
    Tensor b = has_bias ? torch_ref(name, "b") : Tensor();
    Tensor y = Tensor::empty(p.output_shape(x.shape(), w.shape()));
    ops::conv2d_forward(ctx, p, x, w, b, y);
    require_close(y, torch_ref(name, "y"), 2e-5, 1e-4, name + " y");
    Tensor gx = Tensor::empty(x.shape()), gw = Tensor::empty(w.shape());
    Tensor gb = Tensor::empty({w.dim(0)});
    ops::conv2d_backward(ctx, p, gy, x, w, gx, gw, has_bias ? gb : Tensor(), GradMode::Overwrite);
    require_close(gx, torch_ref(name, "gx"), 2e-5, 1e-4, name + " grad_x");
    require_close(gw, torch_ref(name, "gw"), 1e-4, 1e-4, name + " grad_w");
    if (has_bias) require_close(gb, torch_ref(name, "gb"), 1e-4, 1e-4, name + " grad_b");
  }
  CHECK(cases >= 10);
}
