// Connection operators (engine/dynamics/operators.h): f64 gradient checks of
// OperatorRunner::backward for every operator form, through resizes and the input / middle entry
// points, and of every parameter; DynVision's self-recurrence bias gets no gradient while it is
// zero.
#include "engine/dynamics/operators.h"
#include "kernels/dispatch.h"
#include "tests/harness.h"

using namespace dynsim;
using namespace dynsim::test;

namespace {

struct Spec {
  OpSpec op;
  std::vector<Shape> param_shapes;
  std::vector<double> param_scale;  // uniform range of each parameter
  bool input_add = false, middle_add = false;
  bool zero_self_bias = false;
};

Shape out_pre_resize(const OpSpec& op, int B) {
  const int oc = op.kind == OpKind::Identity ? op.in_channels : op.out_channels;
  return Shape{B, oc, op.out_h(), op.out_w()};
}

CaseBuilder operator_case(const Spec& s) {
  return [s](DType t) {
    const int B = 2;
    const OpSpec& op = s.op;
    OpCase c;
    c.name = concat("operator ", op_kind_name(op.kind), op.resize_h ? " + resize" : "",
                    s.input_add ? " + input term" : "", s.middle_add ? " + middle term" : "");
    const Shape xs{B, op.in_channels, op.in_h, op.in_w};
    c.input_names = {"x"};
    c.inputs = {random_uniform(xs, -1, 1, 11, t)};
    c.differentiable = {true};
    if (s.input_add) {
      c.input_names.push_back("input_add");
      c.inputs.push_back(random_uniform(xs, -1, 1, 12, t));
      c.differentiable.push_back(true);
    }
    if (s.middle_add) {
      c.input_names.push_back("middle_add");
      c.inputs.push_back(
          random_uniform(Shape{B, op.mid_channels, op.out_h(), op.out_w()}, -1, 1, 13, t));
      c.differentiable.push_back(true);
    }
    const size_t first_param = c.inputs.size();
    for (size_t i = 0; i < op.params.size(); ++i) {
      c.input_names.push_back(op.params[i]);
      Tensor p = random_uniform(s.param_shapes[i], -s.param_scale[i], s.param_scale[i], 20 + i, t);
      const bool zero_bias = s.zero_self_bias && i == 1;
      if (zero_bias) p.fill(0.0);
      c.inputs.push_back(p);
      // A zero self bias is never added (DynVision), so it has no gradient to check.
      c.differentiable.push_back(!zero_bias);
    }
    auto store = [op, first_param](const std::vector<Tensor>& in) {
      ParamStore ps;
      for (size_t i = 0; i < op.params.size(); ++i) ps.add(op.params[i], in[first_param + i]);
      return ps;
    };
    auto extras = [s](const std::vector<Tensor>& in, Tensor& ia, Tensor& ma) {
      size_t k = 1;
      if (s.input_add) ia = in[k++];
      if (s.middle_add) ma = in[k++];
    };
    c.forward = [=](Context& ctx, const std::vector<Tensor>& in) {
      ParamStore ps = store(in);
      OperatorRunner r(ctx, op, ps, B, in[0].dtype());
      Tensor y = ctx.empty(r.output_shape(), in[0].dtype()), ia, ma;
      extras(in, ia, ma);
      r.forward(ctx, in[0], y, ia, ma);
      return std::vector<Tensor>{y};
    };
    c.backward = [=](Context& ctx, const std::vector<Tensor>& in, const std::vector<Tensor>& gout,
                     const std::vector<Tensor>& g, GradMode m) {
      ParamStore ps = store(in), gs;
      for (size_t i = 0; i < op.params.size(); ++i) {
        Tensor gi = g[first_param + i];
        gs.add(op.params[i], gi.defined() ? gi : ctx.empty(in[first_param + i].shape(), in[0].dtype()));
      }
      OperatorRunner r(ctx, op, ps, B, in[0].dtype());
      Tensor ia, ma, gia, gma;
      extras(in, ia, ma);
      size_t k = 1;
      if (s.input_add) gia = g[k++];
      if (s.middle_add) gma = g[k++];
      r.backward(ctx, in[0], gout[0], g[0], &gs, m, ia, ma, gia, gma);
    };
    (void)out_pre_resize;
    return c;
  };
}

Spec conv_spec(int cin, int cout, int k, int stride, int H, bool bias, int resize) {
  Spec s;
  s.op.kind = OpKind::Conv;
  s.op.in_channels = cin;
  s.op.out_channels = cout;
  s.op.kernel = k;
  s.op.stride = stride;
  s.op.in_h = s.op.in_w = H;
  s.op.bias = bias;
  s.op.resize_h = s.op.resize_w = resize;
  s.op.params = {"c.weight"};
  s.param_shapes = {Shape{cout, cin, k, k}};
  s.param_scale = {0.5};
  if (bias) {
    s.op.params.push_back("c.bias");
    s.param_shapes.push_back(Shape{cout});
    s.param_scale.push_back(0.5);
  }
  return s;
}

}  // namespace

TEST_CASE("operators: conv, with resize and an input term") {
  check_gradients(operator_case(conv_spec(3, 4, 3, 1, 5, true, 0)));
  check_gradients(operator_case(conv_spec(3, 2, 3, 2, 6, true, 6)));  // stride 2, resized up
  Spec in = conv_spec(2, 3, 1, 1, 4, false, 2);                        // 1x1, resized down
  in.input_add = true;
  check_gradients(operator_case(in));
}

TEST_CASE("operators: two-stage conv with input and middle terms") {
  Spec s;
  s.op.kind = OpKind::TwoStage;
  s.op.in_channels = 2;
  s.op.mid_channels = 3;
  s.op.out_channels = 2;
  s.op.kernel = 3;
  s.op.stride = 2;
  s.op.in_h = s.op.in_w = 6;
  s.op.params = {"t.conv.weight", "t.conv.bias", "t.conv2.weight", "t.conv2.bias"};
  s.param_shapes = {Shape{3, 2, 3, 3}, Shape{3}, Shape{2, 3, 3, 3}, Shape{2}};
  s.param_scale = {0.5, 0.5, 0.5, 0.5};
  s.input_add = s.middle_add = true;
  check_gradients(operator_case(s));
}

TEST_CASE("operators: depthpointwise and pointdepthwise") {
  for (OpKind kind : {OpKind::DepthPoint, OpKind::PointDepth}) {
    Spec s;
    s.op.kind = kind;
    s.op.in_channels = 3;
    s.op.out_channels = 4;
    s.op.kernel = 3;
    s.op.in_h = s.op.in_w = 4;
    if (kind == OpKind::DepthPoint) {
      s.op.params = {"d.w", "d.b", "p.w", "p.b"};
      s.param_shapes = {Shape{3, 1, 3, 3}, Shape{3}, Shape{4, 3, 1, 1}, Shape{4}};
    } else {
      s.op.params = {"p.w", "p.b", "d.w", "d.b"};
      s.param_shapes = {Shape{4, 3, 1, 1}, Shape{4}, Shape{4, 1, 3, 3}, Shape{4}};
    }
    s.param_scale = {0.5, 0.5, 0.5, 0.5};
    check_gradients(operator_case(s));
  }
}

TEST_CASE("operators: self recurrence (the bias trains only while nonzero) and identity") {
  Spec s;
  s.op.kind = OpKind::Self;
  s.op.in_channels = s.op.out_channels = 3;
  s.op.in_h = s.op.in_w = 4;
  s.op.params = {"s.weight", "s.bias"};
  s.param_shapes = {Shape{1}, Shape{1}};
  s.param_scale = {0.8, 0.8};
  check_gradients(operator_case(s));
  s.zero_self_bias = true;
  check_gradients(operator_case(s));
  Spec id;
  id.op.kind = OpKind::Identity;
  id.op.in_channels = 2;
  id.op.in_h = id.op.in_w = 4;
  id.op.resize_h = id.op.resize_w = 8;
  check_gradients(operator_case(id));
}

TEST_CASE("operators: local sheet and local + depthwise") {
  for (OpKind kind : {OpKind::Local, OpKind::LocalDepthwise}) {
    Spec s;
    s.op.kind = kind;
    s.op.in_channels = s.op.out_channels = 9;  // a 3x3 sheet tile per position
    s.op.in_h = s.op.in_w = 3;
    s.op.kernel = 3;
    s.op.params = {"l.conv.weight", "l.conv.bias"};
    s.param_shapes = {Shape{1, 1, 3, 3}, Shape{1}};
    if (kind == OpKind::LocalDepthwise) {
      s.op.params.push_back("l.patchy.weight");
      s.op.params.push_back("l.patchy.bias");
      s.param_shapes.push_back(Shape{9, 1, 3, 3});
      s.param_shapes.push_back(Shape{9});
    }
    s.param_scale.assign(s.op.params.size(), 0.5);
    check_gradients(operator_case(s));
  }
}

TEST_CASE("operators: forward_flops counts 2 per multiply-add and 1 per bias add, per call") {
  Context ctx;
  const int B = 2;
  OpSpec conv;
  conv.kind = OpKind::Conv;
  conv.in_channels = 3;
  conv.out_channels = 4;
  conv.kernel = 3;
  conv.in_h = conv.in_w = 5;
  conv.params = {"c.weight", "c.bias"};
  ParamStore ps;
  ps.add("c.weight", random_uniform(Shape{4, 3, 3, 3}, -1, 1, 1, DType::F32));
  ps.add("c.bias", random_uniform(Shape{4}, -1, 1, 2, DType::F32));
  OperatorRunner r(ctx, conv, ps, B, DType::F32);
  const Tensor x = random_uniform(Shape{B, 3, 5, 5}, -1, 1, 3, DType::F32);
  const Tensor y = Tensor::empty(r.output_shape(), DType::F32);
  CHECK(r.forward_flops() == 0);
  r.forward(ctx, x, y);
  // 2 x 4 x 5 x 5 outputs, each 3 x 3 x 3 multiply-adds and one bias add.
  CHECK(r.forward_flops() == doctest::Approx(2.0 * 4 * 5 * 5 * (2 * 27 + 1)));
  r.forward(ctx, x, y, x);  // the input term adds one FLOP per input element
  CHECK(r.forward_flops() == doctest::Approx(2 * 2.0 * 4 * 5 * 5 * (2 * 27 + 1) + 2 * 3 * 25));

  // A TwoStage operator with stride 2: conv1 on 5x5 -> 3x3, conv2 (stride 1) on 3x3, no bias.
  OpSpec two = conv;
  two.kind = OpKind::TwoStage;
  two.stride = 2;
  two.mid_channels = 6;
  two.bias = false;
  two.params = {"t.w1", "t.w2"};
  ps.add("t.w1", random_uniform(Shape{6, 3, 3, 3}, -1, 1, 4, DType::F32));
  ps.add("t.w2", random_uniform(Shape{4, 6, 3, 3}, -1, 1, 5, DType::F32));
  OperatorRunner t(ctx, two, ps, B, DType::F32);
  const Tensor yt = Tensor::empty(t.output_shape(), DType::F32);
  t.forward(ctx, x, yt);
  const double two_stage = 2.0 * 6 * 9 * (2 * 27) + 2.0 * 4 * 9 * (2 * 54);
  CHECK(t.forward_flops() == doctest::Approx(two_stage));
  // The middle term adds one FLOP per element of conv1's output ([B, 6, 3, 3]).
  const Tensor mid = random_uniform(Shape{B, 6, 3, 3}, -1, 1, 6, DType::F32);
  t.forward(ctx, x, yt, {}, mid);
  CHECK(t.forward_flops() == doctest::Approx(2 * two_stage + B * 6 * 9));
}
