// CUDA twins behind DynVision's local / localdepthwise recurrence (gpu suite): the four
// cortical-sheet gathers (kernels/local_sheet_cuda.cu), reflect padding (kernels/pad_cuda.cu)
// and the reflect-padded cuDNN conv (kernels/conv2d_cudnn.cpp), and the whole Local /
// LocalDepthwise operator (engine/dynamics/operators.h), each against the CPU: f32 within 1e-5 and
// f64 within 1e-10 of the largest CPU value, outputs and every gradient in both write modes; the
// gathers and the padding bit for bit; run-to-run determinism; no device allocation once warm.
// Without a device the gpu suite is Skipped (tests/main.cpp). On the CPU: the tables the device
// cache is keyed on depend on (C, H, W) alone, and the twins reject host tensors by name.
#include "engine/core/device.h"
#include "engine/dynamics/operators.h"
#include "kernels/dispatch.h"
#include "kernels/pad.h"
#include "tests/harness.h"

using namespace dynsim;
using namespace dynsim::test;

namespace {

bool no_device() {
  if (cuda_device_count() > 0) return false;
  MESSAGE("SKIPPED: no CUDA device");
  return true;
}

Context cuda_context(bool deterministic = false) {
  ContextOptions o;
  o.device = Device::Cuda;
  o.deterministic = deterministic;
  return Context(o);
}

struct Dims {
  int C, H, W;
};
// Square C (16, 36, 121) and non-square (5, 10, 12, 40: padded with mirrored channels).
const std::vector<Dims> kSheetDims = {{16, 6, 5}, {36, 8, 8}, {121, 4, 4}, {5, 3, 2},
                                      {10, 4, 5}, {12, 3, 7}, {40, 5, 4}};

OpCase to_sheet_case(const Dims& d, DType t) {
  auto map = std::make_shared<LocalSheetMap>(make_local_sheet_map(d.C, d.H, d.W));
  OpCase c;
  c.name = concat("layer_to_sheet C=", d.C, " H=", d.H, " W=", d.W);
  c.input_names = {"x"};
  c.inputs = {random_uniform({2, d.C, d.H, d.W}, -2, 2, 7 + uint64_t(d.C), t)};
  c.differentiable = {true};
  c.forward = [map](Context& ctx, const std::vector<Tensor>& in) {
    Tensor p = ctx.empty({in[0].dim(0), 1, map->plane_h(), map->plane_w()}, in[0].dtype());
    ops::layer_to_sheet_forward(ctx, *map, in[0], p);
    return std::vector<Tensor>{p};
  };
  c.backward = [map](Context& ctx, const std::vector<Tensor>&, const std::vector<Tensor>& go,
                     const std::vector<Tensor>& g,
                     GradMode m) { ops::layer_to_sheet_backward(ctx, *map, go[0], g[0], m); };
  return c;
}

OpCase to_layer_case(const Dims& d, DType t) {
  auto map = std::make_shared<LocalSheetMap>(make_local_sheet_map(d.C, d.H, d.W));
  OpCase c;
  c.name = concat("sheet_to_layer C=", d.C, " H=", d.H, " W=", d.W);
  c.input_names = {"plane"};
  c.inputs = {random_uniform({2, 1, map->plane_h(), map->plane_w()}, -2, 2, 8 + uint64_t(d.C), t)};
  c.differentiable = {true};
  c.forward = [map](Context& ctx, const std::vector<Tensor>& in) {
    Tensor y = ctx.empty({in[0].dim(0), map->channels, map->height, map->width}, in[0].dtype());
    ops::sheet_to_layer_forward(ctx, *map, in[0], y);
    return std::vector<Tensor>{y};
  };
  c.backward = [map](Context& ctx, const std::vector<Tensor>&, const std::vector<Tensor>& go,
                     const std::vector<Tensor>& g,
                     GradMode m) { ops::sheet_to_layer_backward(ctx, *map, go[0], g[0], m); };
  return c;
}

struct ConvCfg {
  Shape x, w;
  int stride, ph, pw, groups;
  bool bias;
};
// Reflect padding at several sizes: 3x3 same, 5x5 stride 2, groups, depthwise, non-square kernel
// and padding, pad = H - 1 (the largest reflect allows), a padded 1x1, and the sheet's own conv
// (one channel on a large plane).
const std::vector<ConvCfg> kReflect = {{{2, 3, 6, 5}, {4, 3, 3, 3}, 1, 1, 1, 1, true},
                                       {{1, 2, 7, 9}, {3, 2, 5, 5}, 2, 2, 2, 1, true},
                                       {{2, 4, 5, 6}, {4, 2, 3, 3}, 1, 1, 1, 2, false},
                                       {{2, 4, 6, 5}, {4, 1, 3, 3}, 1, 1, 1, 4, true},
                                       {{1, 2, 3, 4}, {2, 2, 5, 3}, 1, 2, 1, 1, true},
                                       {{2, 3, 3, 3}, {2, 3, 5, 5}, 1, 2, 2, 1, false},
                                       {{2, 3, 4, 5}, {2, 3, 1, 1}, 1, 1, 1, 1, true},
                                       {{2, 1, 48, 48}, {1, 1, 3, 3}, 1, 1, 1, 1, true},
                                       {{1, 1, 64, 64}, {1, 1, 5, 5}, 1, 2, 2, 1, true},
                                       {{2, 16, 8, 8}, {16, 1, 5, 5}, 1, 2, 2, 16, true}};

Conv2dParams reflect_params(const ConvCfg& k) {
  Conv2dParams p;
  p.stride_h = p.stride_w = k.stride;
  p.pad_h = k.ph, p.pad_w = k.pw, p.pad_mode = PadMode::Reflect, p.groups = k.groups;
  return p;
}

OpCase conv_case(const ConvCfg& k, DType t) {
  const Conv2dParams p = reflect_params(k);
  OpCase c;
  c.name = concat("reflect conv2d x", k.x.str(), " w", k.w.str(), " s", k.stride, " p", k.ph, ",",
                  k.pw, " g", k.groups, k.bias ? " bias" : "");
  c.input_names = {"x", "w", "b"};
  c.inputs = {random_uniform(k.x, -1, 1, 21, t), random_uniform(k.w, -1, 1, 22, t),
              random_uniform({k.w[0]}, -1, 1, 23, t)};
  c.differentiable = {true, true, k.bias};
  c.forward = [p, k](Context& ctx, const std::vector<Tensor>& in) {
    Tensor y = ctx.empty(p.output_shape(in[0].shape(), in[1].shape()), in[0].dtype());
    ops::conv2d_forward(ctx, p, in[0], in[1], k.bias ? in[2] : Tensor(), y);
    return std::vector<Tensor>{y};
  };
  c.backward = [p](Context& ctx, const std::vector<Tensor>& in, const std::vector<Tensor>& go,
                   const std::vector<Tensor>& g, GradMode m) {
    ops::conv2d_backward(ctx, p, go[0], in[0], in[1], g[0], g[1], g[2], m);
  };
  return c;
}

// The whole local recurrence operator: layer -> sheet, reflect conv, sheet -> layer
// (+ depthwise "patchy" conv for LocalDepthwise), with an optional input term.
OpCase operator_case(OpKind kind, int C, int H, int W, bool input_add, DType t) {
  const int B = 2;
  OpSpec op;
  op.kind = kind;
  op.in_channels = op.out_channels = C;
  op.in_h = H, op.in_w = W;
  op.kernel = 3;
  op.params = {"l.conv.weight", "l.conv.bias"};
  const int kp = make_local_sheet_map(C, H, W).kernel();
  std::vector<Shape> shapes = {Shape{1, 1, kp, kp}, Shape{1}};
  if (kind == OpKind::LocalDepthwise) {
    op.params.push_back("l.patchy.weight");
    op.params.push_back("l.patchy.bias");
    shapes.push_back(Shape{C, 1, 3, 3});
    shapes.push_back(Shape{C});
  }
  OpCase c;
  c.name = concat("operator ", op_kind_name(kind), " C=", C, " H=", H, " W=", W,
                  input_add ? " + input term" : "");
  const Shape xs{B, C, H, W};
  c.input_names = {"x"};
  c.inputs = {random_uniform(xs, -1, 1, 31, t)};
  c.differentiable = {true};
  if (input_add) {
    c.input_names.push_back("input_add");
    c.inputs.push_back(random_uniform(xs, -1, 1, 32, t));
    c.differentiable.push_back(true);
  }
  const size_t first = c.inputs.size();
  for (size_t i = 0; i < shapes.size(); ++i) {
    c.input_names.push_back(op.params[i]);
    c.inputs.push_back(random_uniform(shapes[i], -0.5, 0.5, 40 + i, t));
    c.differentiable.push_back(true);
  }
  auto store = [op, first](const std::vector<Tensor>& in) {
    ParamStore ps;
    for (size_t i = 0; i < op.params.size(); ++i) ps.add(op.params[i], in[first + i]);
    return ps;
  };
  c.forward = [=](Context& ctx, const std::vector<Tensor>& in) {
    ParamStore ps = store(in);
    OperatorRunner r(ctx, op, ps, B, in[0].dtype());
    Tensor y = ctx.empty(r.output_shape(), in[0].dtype());
    r.forward(ctx, in[0], y, input_add ? in[1] : Tensor());
    return std::vector<Tensor>{y};
  };
  c.backward = [=](Context& ctx, const std::vector<Tensor>& in, const std::vector<Tensor>& go,
                   const std::vector<Tensor>& g, GradMode m) {
    ParamStore ps = store(in), gs;
    for (size_t i = 0; i < op.params.size(); ++i) gs.add(op.params[i], g[first + i]);
    OperatorRunner r(ctx, op, ps, B, in[0].dtype());
    r.backward(ctx, in[0], go[0], g[0], &gs, m, input_add ? in[1] : Tensor(), {},
               input_add ? g[1] : Tensor());
  };
  return c;
}

// Outputs, then gradients in both write modes (Accumulate onto the same random prior), compared
// bit for bit: for twins that only copy, or add two terms in the CPU's order.
void require_same_bits(const OpCase& c, DType t) {
  Context cpu;
  Context gpu = cuda_context();
  std::vector<Tensor> din;
  for (const Tensor& x : c.inputs) din.push_back(gpu.to_device(x));
  std::vector<Tensor> a = c.forward(cpu, c.inputs), b = c.forward(gpu, din);
  const std::string tag = concat(c.name, " (", dtype_name(t), ")");
  for (size_t k = 0; k < a.size(); ++k)
    require_equal(gpu.to_host(b[k]), a[k], concat(tag, " output ", k));
  std::vector<Tensor> r, dr;
  for (size_t k = 0; k < a.size(); ++k) {
    r.push_back(random_uniform(a[k].shape(), -1, 1, 600 + k, t));
    dr.push_back(gpu.to_device(r.back()));
  }
  for (GradMode m : {GradMode::Overwrite, GradMode::Accumulate}) {
    std::vector<Tensor> ga(c.inputs.size()), gb(c.inputs.size());
    for (size_t i = 0; i < c.inputs.size(); ++i)
      if (c.differentiable[i]) {
        ga[i] = random_uniform(c.inputs[i].shape(), -1, 1, 700 + i, t);
        gb[i] = gpu.to_device(ga[i]);
      }
    c.backward(cpu, c.inputs, r, ga, m);
    c.backward(gpu, din, dr, gb, m);
    for (size_t i = 0; i < c.inputs.size(); ++i)
      if (c.differentiable[i])
        require_equal(
            gpu.to_host(gb[i]), ga[i],
            concat(tag, m == GradMode::Accumulate ? " accumulate" : "", " d/d", c.input_names[i]));
  }
}

}  // namespace

TEST_CASE("cuda_local_sheet: the four sheet gathers agree with the CPU bit for bit" *
          doctest::test_suite("gpu")) {
  if (no_device()) return;
  for (const Dims& d : kSheetDims) {
    CAPTURE(d.C);
    for (DType t : {DType::F32, DType::F64}) {
      require_same_bits(to_sheet_case(d, t), t);
      require_same_bits(to_layer_case(d, t), t);
    }
    // The harness's comparison too (NaN-filled Overwrite outputs: every element is written).
    for (const CaseBuilder& b : {CaseBuilder([d](DType t) { return to_sheet_case(d, t); }),
                                 CaseBuilder([d](DType t) { return to_layer_case(d, t); })}) {
      check_cpu_vs_cuda(b, 1e-5, DType::F32);
      check_cpu_vs_cuda(b, 1e-10, DType::F64);
    }
  }
}

TEST_CASE("cuda_local_sheet: reflect-padded conv2d on cuDNN agrees with the CPU" *
          doctest::test_suite("gpu")) {
  if (no_device()) return;
  for (const ConvCfg& k : kReflect) {
    check_cpu_vs_cuda([k](DType t) { return conv_case(k, t); }, 1e-5, DType::F32);
    check_cpu_vs_cuda([k](DType t) { return conv_case(k, t); }, 1e-10, DType::F64);
  }
}

TEST_CASE("cuda_local_sheet: the local and localdepthwise operators agree with the CPU" *
          doctest::test_suite("gpu")) {
  if (no_device()) return;
  // C = 9, 16, 36 square; 10 and 40 padded; 256 gives the 5x5 plane kernel (f = 16).
  const std::vector<Dims> dims = {{9, 3, 3},  {16, 5, 4}, {36, 6, 6},
                                  {10, 4, 4}, {40, 3, 5}, {256, 4, 4}};
  for (OpKind kind : {OpKind::Local, OpKind::LocalDepthwise})
    for (const Dims& d : dims)
      for (bool input_add : {false, true}) {
        auto build = [=](DType t) { return operator_case(kind, d.C, d.H, d.W, input_add, t); };
        check_cpu_vs_cuda(build, 1e-5, DType::F32);
        check_cpu_vs_cuda(build, 1e-10, DType::F64);
      }
}

TEST_CASE("cuda_local_sheet: deterministic runs give the same bits; warm calls allocate nothing" *
          doctest::test_suite("gpu")) {
  if (no_device()) return;
  Context gpu = cuda_context(true);
  // The localdepthwise operator (sheet gathers, reflect conv, depthwise conv), forward + backward.
  const OpCase c = operator_case(OpKind::LocalDepthwise, 40, 8, 8, true, DType::F32);
  std::vector<Tensor> din;
  for (const Tensor& x : c.inputs) din.push_back(gpu.to_device(x));
  const Tensor gy = gpu.to_device(random_uniform({2, 40, 8, 8}, -1, 1, 50, DType::F32));
  auto run = [&](std::vector<Tensor>& g) {
    g.clear();
    for (size_t i = 0; i < din.size(); ++i) g.push_back(gpu.empty(din[i].shape()));
    c.backward(gpu, din, {gy}, g, GradMode::Overwrite);
  };
  std::vector<Tensor> g1, g2;
  run(g1);
  run(g2);
  for (size_t i = 0; i < g1.size(); ++i)
    require_equal(gpu.to_host(g2[i]), gpu.to_host(g1[i]), "run to run d/d" + c.input_names[i]);

  // Once warm (tables uploaded, plans made, scratch grown), the sheet gathers and the reflect
  // conv allocate no device memory and add no plans.
  const LocalSheetMap map = make_local_sheet_map(40, 8, 8);
  const Shape ps{2, 1, map.plane_h(), map.plane_w()};
  Tensor x = din[0], gx = gpu.zeros(x.shape()), y = gpu.empty(x.shape());
  Tensor plane = gpu.empty(ps), out = gpu.empty(ps), gplane = gpu.empty(ps), gout = gpu.empty(ps);
  const ConvCfg k{ps,  {1, 1, map.kernel(), map.kernel()}, 1, map.kernel() / 2, map.kernel() / 2, 1,
                  true};
  const Conv2dParams p = reflect_params(k);
  Tensor w = gpu.to_device(random_uniform(k.w, -1, 1, 51, DType::F32));
  Tensor b = gpu.to_device(random_uniform({1}, -1, 1, 52, DType::F32));
  Tensor gw = gpu.empty(k.w), gb = gpu.empty({1});
  auto step = [&] {
    ops::layer_to_sheet_forward(gpu, map, x, plane);
    ops::conv2d_forward(gpu, p, plane, w, b, out);
    ops::sheet_to_layer_forward(gpu, map, out, y);
    ops::sheet_to_layer_backward(gpu, map, y, gout, GradMode::Overwrite);
    ops::conv2d_backward(gpu, p, gout, plane, w, gplane, gw, gb, GradMode::Overwrite);
    ops::layer_to_sheet_backward(gpu, map, gplane, gx, GradMode::Accumulate);
  };
  step();
  gpu.synchronize();
  const size_t in_use = device_memory(gpu.device_index()).in_use, plans = gpu.plans().size();
  const LocalSheetMap same = make_local_sheet_map(40, 8, 8);  // another map, the same tables
  for (int i = 0; i < 3; ++i) step();
  ops::layer_to_sheet_forward(gpu, same, x, plane);
  gpu.synchronize();
  CHECK(device_memory(gpu.device_index()).in_use == in_use);
  CHECK(gpu.plans().size() == plans);
}

#if DYNSIM_WITH_CUDA
TEST_CASE("cuda_local_sheet: reflect padding on CUDA gives the CPU's bits" *
          doctest::test_suite("gpu")) {
  if (no_device()) return;
  struct PadCfg {
    Shape x;
    int ph, pw;
  };
  for (const PadCfg& d : std::vector<PadCfg>{{{2, 3, 5, 4}, 1, 1},
                                             {{1, 2, 3, 3}, 2, 2},
                                             {{2, 1, 7, 2}, 3, 1},
                                             {{1, 1, 1, 6}, 0, 5},
                                             {{2, 4, 48, 40}, 2, 3}})
    for (DType t : {DType::F32, DType::F64}) {
      OpCase c;
      c.name = concat("reflect_pad x", d.x.str(), " p", d.ph, ",", d.pw);
      c.input_names = {"x"};
      c.inputs = {random_uniform(d.x, -2, 2, 60, t)};
      c.differentiable = {true};
      c.forward = [d](Context& ctx, const std::vector<Tensor>& in) {
        Tensor y =
            ctx.empty(reflect_pad_shape("test", "x", d.ph, d.pw, in[0].shape()), in[0].dtype());
        if (ctx.device() == Device::Cuda)
          cuda::reflect_pad_forward(ctx, d.ph, d.pw, in[0], y);
        else
          cpu::reflect_pad_forward(ctx, d.ph, d.pw, in[0], y);
        return std::vector<Tensor>{y};
      };
      c.backward = [d](Context& ctx, const std::vector<Tensor>&, const std::vector<Tensor>& go,
                       const std::vector<Tensor>& g, GradMode m) {
        if (ctx.device() == Device::Cuda)
          cuda::reflect_pad_backward(ctx, d.ph, d.pw, go[0], g[0], m);
        else
          cpu::reflect_pad_backward(ctx, d.ph, d.pw, go[0], g[0], m);
      };
      require_same_bits(c, t);
    }
}
#endif

TEST_CASE("cuda_local_sheet: the tables depend on (C, H, W) alone (the device cache's key)") {
  // The CUDA twins upload a map's tables once per context and (C, H, W); any other map of the
  // same sizes must therefore have the same tables.
  for (const Dims& d : kSheetDims) {
    const LocalSheetMap a = make_local_sheet_map(d.C, d.H, d.W);
    const LocalSheetMap b = make_local_sheet_map(d.C, d.H, d.W);
    CHECK(a.plane_to_layer == b.plane_to_layer);
    CHECK(a.layer_to_plane == b.layer_to_plane);
    CHECK(a.plane_source == b.plane_source);
    CHECK(a.side == b.side);
  }
}

#if DYNSIM_WITH_CUDA
// The twins check their arguments before any device call, so these run without a GPU.
TEST_CASE("cuda_local_sheet: the CUDA twins reject host tensors by name") {
  Context ctx;
  const LocalSheetMap m = make_local_sheet_map(10, 3, 3);
  Tensor x = Tensor::zeros({2, 10, 3, 3}), plane = Tensor::zeros({2, 1, 12, 12});
  auto host_msg = [](const char* op) {
    return doctest::Contains(concat(op, ": CUDA op got").c_str());
  };
  CHECK_THROWS_WITH_AS(cuda::layer_to_sheet_forward(ctx, m, x, plane),
                       host_msg("layer_to_sheet_forward"), DataError);
  CHECK_THROWS_WITH_AS(cuda::layer_to_sheet_backward(ctx, m, plane, x, GradMode::Overwrite),
                       host_msg("layer_to_sheet_backward"), DataError);
  CHECK_THROWS_WITH_AS(cuda::sheet_to_layer_forward(ctx, m, plane, x),
                       host_msg("sheet_to_layer_forward"), DataError);
  CHECK_THROWS_WITH_AS(cuda::sheet_to_layer_backward(ctx, m, x, plane, GradMode::Accumulate),
                       host_msg("sheet_to_layer_backward"), DataError);
  // An undefined gradient output is skipped, as on the CPU.
  cuda::layer_to_sheet_backward(ctx, m, plane, Tensor(), GradMode::Overwrite);
  cuda::sheet_to_layer_backward(ctx, m, x, Tensor(), GradMode::Overwrite);
  CHECK_THROWS_WITH_AS(cuda::reflect_pad_forward(ctx, 1, 1, x, Tensor::zeros({2, 10, 5, 5})),
                       host_msg("reflect_pad_forward"), DataError);
  CHECK_THROWS_WITH_AS(
      cuda::reflect_pad_backward(ctx, 1, 1, Tensor::zeros({2, 10, 5, 5}), x, GradMode::Overwrite),
      host_msg("reflect_pad_backward"), DataError);
  Conv2dParams p;
  p.pad_h = p.pad_w = 1;
  p.pad_mode = PadMode::Reflect;
  Tensor w = Tensor::zeros({4, 10, 3, 3});
  CHECK_THROWS_WITH_AS(cuda::conv2d_forward(ctx, p, x, w, Tensor(), Tensor::zeros({2, 4, 3, 3})),
                       host_msg("conv2d_forward"), DataError);
  CHECK_THROWS_WITH_AS(cuda::conv2d_backward(ctx, p, Tensor::zeros({2, 4, 3, 3}), x, w, x, Tensor(),
                                             Tensor(), GradMode::Overwrite),
                       host_msg("conv2d_backward"), DataError);
}
#endif
