// Reflect padding (kernels/pad.h), the CUDA conv2d's way to reflect padding: conv::reflect_readers
// against brute force, forward and the gather backward against plain loops, f64 gradient checks,
// and, on the CPU, the decomposition conv2d_cudnn.cpp relies on: a reflect-padded conv equals an
// unpadded conv of the padded input, its dgrad the padding's backward of that conv's dgrad, its
// wgrad that conv's wgrad. (CPU vs CUDA: tests/kernels/test_cuda_local_sheet.cpp.)
#include "kernels/conv2d.h"
#include "kernels/conv2d_math.h"
#include "kernels/pad.h"
#include "tests/harness.h"

using namespace dynsim;
using namespace dynsim::test;

namespace {

// PyTorch's reflect, written independently of conv::pad_index: -1 -> 1, n -> n - 2.
int64_t reflect(int64_t i, int64_t n) {
  if (i < 0) return -i;
  if (i >= n) return 2 * n - 2 - i;
  return i;
}

OpCase pad_case(const Shape& xs, int ph, int pw, DType t, uint64_t seed) {
  OpCase c;
  c.name = concat("reflect_pad x", xs.str(), " p", ph, ",", pw);
  c.input_names = {"x"};
  c.inputs = {random_uniform(xs, -2, 2, seed, t)};
  c.differentiable = {true};
  c.forward = [=](Context& ctx, const std::vector<Tensor>& in) {
    Tensor y = ctx.empty(reflect_pad_shape("test", "x", ph, pw, in[0].shape()), in[0].dtype());
    cpu::reflect_pad_forward(ctx, ph, pw, in[0], y);
    return std::vector<Tensor>{y};
  };
  c.backward = [=](Context& ctx, const std::vector<Tensor>&, const std::vector<Tensor>& go,
                   const std::vector<Tensor>& g,
                   GradMode m) { cpu::reflect_pad_backward(ctx, ph, pw, go[0], g[0], m); };
  return c;
}

struct PadDims {
  Shape x;
  int ph, pw;
};
const std::vector<PadDims> kPads = {{{2, 3, 5, 4}, 1, 1}, {{1, 2, 3, 3}, 2, 2},
                                    {{2, 1, 7, 2}, 3, 1}, {{1, 1, 1, 6}, 0, 5},
                                    {{3, 2, 4, 9}, 2, 0}, {{1, 1, 2, 2}, 1, 1}};

}  // namespace

TEST_CASE("pad: reflect_readers lists exactly the padded coordinates that read a pixel") {
  for (int64_t n = 1; n <= 12; ++n)
    for (int64_t pad = 0; pad < n; ++pad)
      for (int64_t s = 0; s < n; ++s) {
        std::vector<int64_t> want;
        for (int64_t j = 0; j < n + 2 * pad; ++j)
          if (reflect(j - pad, n) == s) want.push_back(j);
        int64_t got[3];
        const int k = conv::reflect_readers(s, n, pad, got);
        REQUIRE_MESSAGE(std::vector<int64_t>(got, got + k) == want, "n ", n, " pad ", pad, " s ",
                        s);
      }
}

TEST_CASE("pad: forward and backward against plain loops, both write modes") {
  for (const PadDims& d : kPads) {
    CAPTURE(d.x.str());
    Context ctx;
    const int64_t N = d.x[0], C = d.x[1], H = d.x[2], W = d.x[3];
    const int64_t Hp = H + 2 * d.ph, Wp = W + 2 * d.pw;
    Tensor x = random_ints(d.x, -50, 50, 5, DType::F64);
    Tensor want = Tensor::empty({N, C, Hp, Wp}, DType::F64);
    for (int64_t k = 0; k < N * C; ++k)
      for (int64_t i = 0; i < Hp; ++i)
        for (int64_t j = 0; j < Wp; ++j)
          want.set((k * Hp + i) * Wp + j,
                   x.item((k * H + reflect(i - d.ph, H)) * W + reflect(j - d.pw, W)));
    Tensor xp = Tensor::empty(want.shape(), DType::F64);
    cpu::reflect_pad_forward(ctx, d.ph, d.pw, x, xp);
    require_equal(xp, want, "reflect_pad_forward");

    // Backward: scatter every padded pixel's gradient onto the pixel it reads.
    Tensor gp = random_ints(want.shape(), -9, 9, 6, DType::F64);
    Tensor want_gx = Tensor::zeros(d.x, DType::F64);
    for (int64_t k = 0; k < N * C; ++k)
      for (int64_t i = 0; i < Hp; ++i)
        for (int64_t j = 0; j < Wp; ++j) {
          const int64_t s = (k * H + reflect(i - d.ph, H)) * W + reflect(j - d.pw, W);
          want_gx.set(s, want_gx.item(s) + gp.item((k * Hp + i) * Wp + j));
        }
    Tensor gx = Tensor::empty(d.x, DType::F64);
    gx.fill(100);
    cpu::reflect_pad_backward(ctx, d.ph, d.pw, gp, gx, GradMode::Overwrite);
    require_equal(gx, want_gx, "reflect_pad_backward");
    cpu::reflect_pad_backward(ctx, d.ph, d.pw, gp, gx, GradMode::Accumulate);
    for (int64_t i = 0; i < gx.numel(); ++i) REQUIRE(gx.item(i) == 2 * want_gx.item(i));
    cpu::reflect_pad_backward(ctx, d.ph, d.pw, gp, Tensor(), GradMode::Overwrite);  // skipped
  }
}

TEST_CASE("pad: f64 gradient checks") {
  for (size_t i = 0; i < kPads.size(); ++i) {
    const PadDims d = kPads[i];
    check_gradients([d, i](DType t) { return pad_case(d.x, d.ph, d.pw, t, 30 + i); });
  }
}

// What conv2d_cudnn.cpp does for reflect padding, checked with the CPU conv: pad, then an
// unpadded conv; dgrad of the unpadded conv folded back by the padding's backward; wgrad of the
// unpadded conv on the padded input.
TEST_CASE("pad: a reflect-padded conv is an unpadded conv of the padded input (CPU)") {
  struct Cfg {
    Shape x, w;
    int stride, ph, pw, groups;
  };
  const std::vector<Cfg> cfgs = {
      {{2, 3, 6, 5}, {4, 3, 3, 3}, 1, 1, 1, 1}, {{1, 2, 7, 9}, {3, 2, 5, 5}, 2, 2, 2, 1},
      {{2, 4, 5, 6}, {4, 2, 3, 3}, 1, 1, 1, 2}, {{2, 4, 6, 5}, {4, 1, 3, 3}, 1, 1, 1, 4},
      {{1, 2, 3, 4}, {2, 2, 5, 3}, 1, 2, 1, 1}, {{2, 1, 24, 24}, {1, 1, 3, 3}, 1, 1, 1, 1}};
  for (const Cfg& k : cfgs) {
    CAPTURE(k.x.str());
    CAPTURE(k.w.str());
    Context ctx;
    Conv2dParams refl;
    refl.stride_h = refl.stride_w = k.stride;
    refl.pad_h = k.ph, refl.pad_w = k.pw, refl.pad_mode = PadMode::Reflect, refl.groups = k.groups;
    Conv2dParams none = refl;
    none.pad_h = none.pad_w = 0, none.pad_mode = PadMode::Zeros;
    Tensor x = random_uniform(k.x, -1, 1, 40, DType::F64);
    Tensor w = random_uniform(k.w, -1, 1, 41, DType::F64);
    Tensor b = random_uniform({k.w[0]}, -1, 1, 42, DType::F64);
    const Shape ys = refl.output_shape(k.x, k.w);
    Tensor xp = Tensor::empty(reflect_pad_shape("test", "x", k.ph, k.pw, k.x), DType::F64);
    cpu::reflect_pad_forward(ctx, k.ph, k.pw, x, xp);
    REQUIRE(none.output_shape(xp.shape(), k.w) == ys);
    Tensor y1 = Tensor::empty(ys, DType::F64), y2 = Tensor::empty(ys, DType::F64);
    cpu::conv2d_forward(ctx, refl, x, w, b, y1);
    cpu::conv2d_forward(ctx, none, xp, w, b, y2);
    require_close(y2, y1, 1e-12, 1e-12, "forward");

    Tensor gy = random_uniform(ys, -1, 1, 43, DType::F64);
    Tensor gx1 = Tensor::empty(k.x, DType::F64), gw1 = Tensor::empty(k.w, DType::F64);
    cpu::conv2d_backward(ctx, refl, gy, x, w, gx1, gw1, Tensor(), GradMode::Overwrite);
    Tensor gxp = Tensor::empty(xp.shape(), DType::F64), gw2 = Tensor::empty(k.w, DType::F64);
    cpu::conv2d_backward(ctx, none, gy, xp, w, gxp, gw2, Tensor(), GradMode::Overwrite);
    Tensor gx2 = Tensor::empty(k.x, DType::F64);
    cpu::reflect_pad_backward(ctx, k.ph, k.pw, gxp, gx2, GradMode::Overwrite);
    require_close(gx2, gx1, 1e-12, 1e-12, "dgrad");
    require_close(gw2, gw1, 1e-12, 1e-12, "wgrad");
  }
}

TEST_CASE("pad: bad arguments name the op and the tensor") {
  Context ctx;
  Tensor x = Tensor::zeros({2, 3, 4, 5});
  CHECK_THROWS_WITH_AS(cpu::reflect_pad_forward(ctx, 4, 1, x, Tensor::zeros({2, 3, 12, 7})),
                       doctest::Contains("reflect_pad_forward: reflect padding (4, 1) must be"),
                       DataError);
  CHECK_THROWS_WITH_AS(cpu::reflect_pad_forward(ctx, -1, 1, x, Tensor::zeros({2, 3, 2, 7})),
                       doctest::Contains("must be >= 0"), DataError);
  CHECK_THROWS_WITH_AS(cpu::reflect_pad_forward(ctx, 1, 1, x, Tensor::zeros({2, 3, 6, 6})),
                       doctest::Contains("reflect_pad_forward: xp has shape"), DataError);
  CHECK_THROWS_WITH_AS(
      cpu::reflect_pad_forward(ctx, 1, 1, x, Tensor::zeros({2, 3, 6, 7}, DType::F64)),
      doctest::Contains("reflect_pad_forward: xp is f64"), DataError);
  CHECK_THROWS_WITH_AS(cpu::reflect_pad_forward(ctx, 1, 1, Tensor::zeros({3, 4, 5}), x),
                       doctest::Contains("x must be [N,C,H,W]"), DataError);
  CHECK_THROWS_WITH_AS(
      cpu::reflect_pad_backward(ctx, 1, 1, Tensor::zeros({2, 3, 6, 6}), x, GradMode::Overwrite),
      doctest::Contains("reflect_pad_backward: grad_xp has shape"), DataError);
}
