// The cortical-sheet mapping of the local recurrence: the tables against a brute-force build
// from the spec's description, inverse permutations, exact round trips, mirrored padding for
// non-square C, the plane kernel rule, f64 gradient checks, CPU vs CUDA, bad arguments and
// agreement with DynVision's tables rebuilt in tests/python/torch_ref_local_sheet.py.
#include <algorithm>
#include <cmath>
#include <memory>

#include "kernels/dispatch.h"
#include "tests/harness.h"

using namespace dynsim;
using namespace dynsim::test;

namespace {

// Through kernels/dispatch.h, so the gpu case below runs the CUDA twins.
void l2s_forward(Context& c, const LocalSheetMap& m, const Tensor& x, const Tensor& plane) {
  ops::layer_to_sheet_forward(c, m, x, plane);
}
void l2s_backward(Context& c, const LocalSheetMap& m, const Tensor& gp, const Tensor& gx,
                  GradMode mode) {
  ops::layer_to_sheet_backward(c, m, gp, gx, mode);
}
void s2l_forward(Context& c, const LocalSheetMap& m, const Tensor& plane, const Tensor& y) {
  ops::sheet_to_layer_forward(c, m, plane, y);
}
void s2l_backward(Context& c, const LocalSheetMap& m, const Tensor& gy, const Tensor& gp,
                  GradMode mode) {
  ops::sheet_to_layer_backward(c, m, gy, gp, mode);
}

struct Dims {
  int C, H, W;
};
// Square and non-square channel counts, odd and even sizes, DynVision's V1 (36) and V4 (121).
const std::vector<Dims> kDims = {{36, 4, 4}, {121, 3, 3}, {4, 3, 5},  {9, 2, 3}, {1, 2, 2},
                                 {5, 3, 2},  {2, 2, 3},   {13, 1, 4}, {3, 4, 1}};

// Straight from the description: channel c of pixel (y,x) sits at (y*f + c/f, x*f + c%f), the
// row within the tile reversed for odd y and the column for odd x. Padding channel p >= C copies
// channel 2C-1-p. Returns {plane -> padded layer index, padded layer -> plane index}.
std::pair<std::vector<int>, std::vector<int>> brute_force(int C, int H, int W) {
  int f = 1;
  while (f * f < C) ++f;
  const int Cp = f * f, pw = f * W;
  std::vector<int> p2l(size_t(Cp * H * W), -1), l2p(size_t(Cp * H * W), -1);
  for (int c = 0; c < Cp; ++c)
    for (int y = 0; y < H; ++y)
      for (int x = 0; x < W; ++x) {
        int row = c / f, col = c % f;
        if (x % 2 == 1) col = f - 1 - col;
        if (y % 2 == 1) row = f - 1 - row;
        const int q = (y * f + row) * pw + (x * f + col), l = (c * H + y) * W + x;
        p2l[size_t(q)] = l;
        l2p[size_t(l)] = q;
      }
  return {p2l, l2p};
}

Tensor ref_to_sheet(const Tensor& x, const Dims& d) {
  auto [p2l, l2p] = brute_force(d.C, d.H, d.W);
  const int64_t N = x.dim(0), L = int64_t(d.C) * d.H * d.W, P = int64_t(p2l.size());
  const int64_t f = int64_t(std::lround(std::sqrt(double(P / (d.H * d.W)))));
  Tensor plane = Tensor::empty({N, 1, f * d.H, f * d.W}, x.dtype());
  for (int64_t n = 0; n < N; ++n)
    for (int64_t q = 0; q < P; ++q) {
      int64_t l = p2l[size_t(q)];
      const int64_t c = l / (d.H * d.W);
      if (c >= d.C) l = (2 * d.C - 1 - c) * d.H * d.W + l % (d.H * d.W);
      plane.set(n * P + q, x.item(n * L + l));
    }
  return plane;
}

OpCase to_sheet_case(const Dims& d, DType t, uint64_t seed) {
  auto map = std::make_shared<LocalSheetMap>(make_local_sheet_map(d.C, d.H, d.W));
  OpCase c;
  c.name = concat("layer_to_sheet C=", d.C, " H=", d.H, " W=", d.W);
  c.input_names = {"x"};
  c.inputs = {random_uniform({2, d.C, d.H, d.W}, -2, 2, seed, t)};
  c.differentiable = {true};
  c.forward = [map](Context& ctx, const std::vector<Tensor>& in) {
    Tensor p = ctx.empty({in[0].dim(0), 1, map->plane_h(), map->plane_w()}, in[0].dtype());
    l2s_forward(ctx, *map, in[0], p);
    return std::vector<Tensor>{p};
  };
  c.backward = [map](Context& ctx, const std::vector<Tensor>&, const std::vector<Tensor>& gout,
                     const std::vector<Tensor>& g,
                     GradMode m) { l2s_backward(ctx, *map, gout[0], g[0], m); };
  return c;
}

OpCase to_layer_case(const Dims& d, DType t, uint64_t seed) {
  auto map = std::make_shared<LocalSheetMap>(make_local_sheet_map(d.C, d.H, d.W));
  OpCase c;
  c.name = concat("sheet_to_layer C=", d.C, " H=", d.H, " W=", d.W);
  c.input_names = {"plane"};
  c.inputs = {random_uniform({2, 1, map->plane_h(), map->plane_w()}, -2, 2, seed, t)};
  c.differentiable = {true};
  c.forward = [map](Context& ctx, const std::vector<Tensor>& in) {
    Tensor y = ctx.empty({in[0].dim(0), map->channels, map->height, map->width}, in[0].dtype());
    s2l_forward(ctx, *map, in[0], y);
    return std::vector<Tensor>{y};
  };
  c.backward = [map](Context& ctx, const std::vector<Tensor>&, const std::vector<Tensor>& gout,
                     const std::vector<Tensor>& g,
                     GradMode m) { s2l_backward(ctx, *map, gout[0], g[0], m); };
  return c;
}

}  // namespace

TEST_CASE("local_sheet: tables match the brute-force construction from the description") {
  for (const Dims& d : kDims) {
    CAPTURE(d.C);
    CAPTURE(d.H);
    CAPTURE(d.W);
    LocalSheetMap m = make_local_sheet_map(d.C, d.H, d.W);
    auto [p2l, l2p] = brute_force(d.C, d.H, d.W);
    REQUIRE(m.side * m.side == m.padded_channels);
    CHECK(m.padded_channels >= d.C);
    CHECK(m.plane_h() == m.side * d.H);
    CHECK(m.plane_w() == m.side * d.W);
    REQUIRE(m.plane_to_layer.size() == p2l.size());
    REQUIRE(m.layer_to_plane.size() == l2p.size());
    for (size_t q = 0; q < p2l.size(); ++q) REQUIRE(m.plane_to_layer[q] == p2l[q]);
    for (size_t l = 0; l < l2p.size(); ++l) REQUIRE(m.layer_to_plane[l] == l2p[l]);
  }
}

TEST_CASE("local_sheet: the two tables are inverse permutations") {
  for (const Dims& d : kDims) {
    LocalSheetMap m = make_local_sheet_map(d.C, d.H, d.W);
    const size_t n = m.plane_to_layer.size();
    std::vector<int32_t> sorted = m.plane_to_layer;
    std::sort(sorted.begin(), sorted.end());
    for (size_t i = 0; i < n; ++i) REQUIRE(sorted[i] == int32_t(i));
    for (size_t q = 0; q < n; ++q)
      REQUIRE(m.layer_to_plane[size_t(m.plane_to_layer[q])] == int32_t(q));
    for (size_t l = 0; l < n; ++l)
      REQUIRE(m.plane_to_layer[size_t(m.layer_to_plane[l])] == int32_t(l));
  }
}

TEST_CASE("local_sheet: neighbouring tiles meet at matching channels (V1, 36 channels)") {
  LocalSheetMap m = make_local_sheet_map(36, 2, 2);
  const int f = 6, pw = m.plane_w();
  auto channel_at = [&](int py, int px) { return m.plane_to_layer[size_t(py * pw + px)] / 4; };
  for (int r = 0; r < f; ++r) {  // the vertical seam between x = 0 and x = 1
    CHECK(channel_at(r, f - 1) == channel_at(r, f));
    CHECK(channel_at(f - 1, r) == channel_at(f, r));  // the horizontal seam
  }
  CHECK(channel_at(0, 0) == 0);
  CHECK(channel_at(0, 5) == 5);
  CHECK(channel_at(0, 6) == 5);    // tile x = 1 is mirrored left-right
  CHECK(channel_at(6, 0) == 30);   // tile y = 1 is mirrored top-bottom
  CHECK(channel_at(11, 11) == 0);  // tile (1,1) both ways
}

TEST_CASE("local_sheet: forward on small integers, exact round trip and padding copies") {
  for (const Dims& d : kDims) {
    for (DType t : {DType::F32, DType::F64}) {
      Context ctx;
      LocalSheetMap m = make_local_sheet_map(d.C, d.H, d.W);
      Tensor x = random_ints({3, d.C, d.H, d.W}, -50, 50, 11 + d.C, t);
      Tensor plane = Tensor::empty({3, 1, m.plane_h(), m.plane_w()}, t);
      cpu::layer_to_sheet_forward(ctx, m, x, plane);
      require_equal(plane, ref_to_sheet(x, d), concat("layer_to_sheet C=", d.C));
      Tensor back = Tensor::empty(x.shape(), t);
      cpu::sheet_to_layer_forward(ctx, m, plane, back);
      require_equal(back, x, concat("round trip C=", d.C));
    }
  }
  // Non-square: C=5 pads to 9 with channels 4,3,2,1 (the last four, mirrored).
  LocalSheetMap m = make_local_sheet_map(5, 1, 1);
  CHECK(m.side == 3);
  CHECK(m.padded_channels == 9);
  CHECK(m.plane_source == std::vector<int32_t>{0, 1, 2, 3, 4, 4, 3, 2, 1});
  CHECK(m.plane_to_layer == std::vector<int32_t>{0, 1, 2, 3, 4, 5, 6, 7, 8});
}

TEST_CASE("local_sheet: the plane kernel is max(3, odd(f/4))") {
  auto k = [](int C, int H) { return make_local_sheet_map(C, H, H).kernel(); };
  CHECK(k(36, 4) == 3);   // V1, f=6
  CHECK(k(64, 4) == 3);   // V2, f=8
  CHECK(k(121, 2) == 3);  // V4, f=11
  CHECK(k(256, 2) == 5);  // IT, f=16: 4 -> 5
  CHECK(k(529, 1) == 5);  // x8 IT, f=23: 5
  CHECK(k(144, 1) == 3);  // x8 V2, f=12: 3
  CHECK(k(576, 1) == 7);  // f=24: 6 -> 7
  CHECK(k(1, 1) == 3);
}

TEST_CASE("local_sheet: backward of both maps against plain loops, both write modes") {
  for (const Dims& d : kDims) {
    Context ctx;
    LocalSheetMap m = make_local_sheet_map(d.C, d.H, d.W);
    auto [p2l, l2p] = brute_force(d.C, d.H, d.W);
    const int64_t L = int64_t(d.C) * d.H * d.W, P = int64_t(p2l.size()), HW = d.H * d.W;
    Tensor gp = random_ints({2, 1, m.plane_h(), m.plane_w()}, -9, 9, 3, DType::F64);
    Tensor want_gx = Tensor::zeros({2, d.C, d.H, d.W}, DType::F64);
    for (int64_t n = 0; n < 2; ++n)
      for (int64_t q = 0; q < P; ++q) {
        int64_t l = p2l[size_t(q)], c = l / HW;
        if (c >= d.C) l = (2 * d.C - 1 - c) * HW + l % HW;
        want_gx.set(n * L + l, want_gx.item(n * L + l) + gp.item(n * P + q));
      }
    Tensor gx = Tensor::empty(want_gx.shape(), DType::F64);
    gx.fill(100);
    cpu::layer_to_sheet_backward(ctx, m, gp, gx, GradMode::Overwrite);
    require_equal(gx, want_gx, "layer_to_sheet_backward");
    cpu::layer_to_sheet_backward(ctx, m, gp, gx, GradMode::Accumulate);
    for (int64_t i = 0; i < gx.numel(); ++i) REQUIRE(gx.item(i) == 2 * want_gx.item(i));

    Tensor gy = random_ints({2, d.C, d.H, d.W}, -9, 9, 4, DType::F64);
    Tensor want_gp = Tensor::zeros(gp.shape(), DType::F64);
    for (int64_t n = 0; n < 2; ++n)
      for (int64_t l = 0; l < L; ++l) want_gp.set(n * P + l2p[size_t(l)], gy.item(n * L + l));
    Tensor g2 = Tensor::empty(gp.shape(), DType::F64);
    g2.fill(-7);
    cpu::sheet_to_layer_backward(ctx, m, gy, g2, GradMode::Overwrite);
    require_equal(g2, want_gp, "sheet_to_layer_backward");
    // Undefined gradient outputs are skipped.
    cpu::layer_to_sheet_backward(ctx, m, gp, Tensor(), GradMode::Overwrite);
    cpu::sheet_to_layer_backward(ctx, m, gy, Tensor(), GradMode::Overwrite);
  }
}

TEST_CASE("local_sheet: f64 gradient checks of both maps") {
  for (size_t i = 0; i < kDims.size(); ++i) {
    const Dims d = kDims[i];
    check_gradients([d, i](DType t) { return to_sheet_case(d, t, 100 + i); });
    check_gradients([d, i](DType t) { return to_layer_case(d, t, 200 + i); });
  }
}

TEST_CASE("local_sheet: CPU vs CUDA" * doctest::test_suite("gpu")) {
  for (const Dims& d : {Dims{36, 8, 8}, Dims{121, 4, 4}, Dims{5, 3, 2}}) {
    check_cpu_vs_cuda([d](DType t) { return to_sheet_case(d, t, 7); });
    check_cpu_vs_cuda([d](DType t) { return to_layer_case(d, t, 8); });
  }
}

TEST_CASE("local_sheet: bad arguments") {
  Context ctx;
  CHECK_THROWS_WITH_AS(make_local_sheet_map(0, 4, 4), doctest::Contains("needs C, H, W >= 1"),
                       DataError);
  CHECK_THROWS_WITH_AS(make_local_sheet_map(36, 4, -1), doctest::Contains("W=-1"), DataError);
  CHECK_THROWS_WITH_AS(make_local_sheet_map(1 << 20, 1 << 8, 1 << 8),
                       doctest::Contains("beyond int32"), DataError);
  LocalSheetMap m = make_local_sheet_map(36, 4, 4);
  Tensor x = Tensor::zeros({2, 36, 4, 4});
  Tensor plane = Tensor::zeros({2, 1, 24, 24});
  CHECK_THROWS_WITH_AS(cpu::layer_to_sheet_forward(ctx, m, Tensor::zeros({2, 35, 4, 4}), plane),
                       doctest::Contains("layer_to_sheet_forward: x has shape [2,35,4,4]"),
                       DataError);
  CHECK_THROWS_WITH_AS(cpu::layer_to_sheet_forward(ctx, m, x, Tensor::zeros({2, 1, 24, 23})),
                       doctest::Contains("layer_to_sheet_forward: plane has shape"), DataError);
  CHECK_THROWS_WITH_AS(cpu::layer_to_sheet_forward(ctx, m, Tensor::zeros({36, 4, 4}), plane),
                       doctest::Contains("x must be [N,C,H,W]"), DataError);
  CHECK_THROWS_WITH_AS(
      cpu::sheet_to_layer_forward(ctx, m, Tensor::zeros({2, 1, 24, 24}, DType::F64), x),
      doctest::Contains("sheet_to_layer_forward: plane is f64"), DataError);
  CHECK_THROWS_WITH_AS(
      cpu::sheet_to_layer_forward(ctx, m, Tensor::zeros({2, 1, 24, 24}, DType::I32), x),
      doctest::Contains("needs f32 or f64"), DataError);
  CHECK_THROWS_WITH_AS(
      cpu::sheet_to_layer_backward(ctx, m, x, Tensor::zeros({3, 1, 24, 24}), GradMode::Overwrite),
      doctest::Contains("sheet_to_layer_backward: grad_plane has shape"), DataError);
  CHECK_THROWS_WITH_AS(cpu::layer_to_sheet_backward(ctx, m, plane, Tensor::zeros({2, 36, 4, 5}),
                                                    GradMode::Overwrite),
                       doctest::Contains("layer_to_sheet_backward: grad_x has shape"), DataError);
  LocalSheetMap broken = m;
  broken.plane_source.pop_back();
  CHECK_THROWS_WITH_AS(cpu::layer_to_sheet_forward(ctx, broken, x, plane),
                       doctest::Contains("not built by make_local_sheet_map"), DataError);
}

// DynVision's flat_plane_mapping / flat_layer_mapping, rebuilt in
// tests/python/torch_ref_local_sheet.py the way topographic_recurrence.py builds them.
TEST_CASE("local_sheet: tables agree with DynVision's construction" *
          doctest::test_suite("torch")) {
  const int n = int(torch_ref("local_sheet_index", "cases").item(0));
  REQUIRE(n >= 2);
  for (int k = 0; k < n; ++k) {
    const std::string name = "local_sheet_" + std::to_string(k);
    Tensor dims = torch_ref(name, "dims");  // C, H, W, kernel
    const int C = int(dims.item(0)), H = int(dims.item(1)), W = int(dims.item(2));
    LocalSheetMap m = make_local_sheet_map(C, H, W);
    CHECK(m.kernel() == int(dims.item(3)));
    Tensor fp = torch_ref(name, "flat_plane_mapping"), fl = torch_ref(name, "flat_layer_mapping");
    REQUIRE(fp.numel() == int64_t(m.plane_to_layer.size()));
    REQUIRE(fl.numel() == int64_t(m.layer_to_plane.size()));
    for (int64_t i = 0; i < fp.numel(); ++i)
      REQUIRE(int64_t(fp.item(i)) == m.plane_to_layer[size_t(i)]);
    for (int64_t i = 0; i < fl.numel(); ++i)
      REQUIRE(int64_t(fl.item(i)) == m.layer_to_plane[size_t(i)]);
    // The gather through the tables, in torch: plane = x.view(N,-1).gather(1, flat_plane_mapping).
    Tensor x = torch_ref(name, "x"), plane = torch_ref(name, "plane");
    Context ctx;
    Tensor got = Tensor::empty(plane.shape(), DType::F32);
    cpu::layer_to_sheet_forward(ctx, m, x, got);
    require_equal(got, plane, name + ": plane");
    Tensor back = Tensor::empty(x.shape(), DType::F32);
    cpu::sheet_to_layer_forward(ctx, m, plane, back);
    require_equal(back, torch_ref(name, "y"), name + ": y");
  }
}
