// OperatorRunner (engine/operators.h): each OpKind becomes a fixed list of kernel calls.
#include "engine/operators.h"

#include <functional>

#include "kernels/dispatch.h"

namespace dynsim {

struct OperatorRunner::Impl {
  OpSpec op;
  int batch;
  // Intermediate buffers, allocated once.
  Tensor input_sum, mid1, mid2, pre_resize, sheet_in, sheet_out;
  Tensor w1, b1, w2, b2;  // parameters (views sharing the store's storage)
  Conv2dParams p1, p2;
  Shape out;
  LocalSheetMap sheet;  // Local / LocalDepthwise
};

namespace {

Conv2dParams same_pad(int k, int stride, int groups) {
  Conv2dParams p;
  p.stride_h = p.stride_w = stride;
  p.pad_h = p.pad_w = k / 2;
  p.groups = groups;
  return p;
}

}  // namespace

OperatorRunner::OperatorRunner(Context& ctx, const OpSpec& op, ParamStore& params, int batch,
                               DType dtype)
    : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.op = op;
  m.batch = batch;
  const int B = batch, C = op.in_channels, H = op.in_h, W = op.in_w;
  auto param = [&](size_t i) -> Tensor {
    if (i >= op.params.size()) return {};
    return params.get(op.params[i]);
  };
  auto buf = [&](int c, int h, int w) { return ctx.empty(Shape{B, c, h, w}, dtype); };
  const int oh = op.out_h(), ow = op.out_w();
  switch (op.kind) {
    case OpKind::Conv:
      m.w1 = param(0);
      m.b1 = op.bias ? param(1) : Tensor();
      m.p1 = same_pad(op.kernel, op.stride, 1);
      break;
    case OpKind::TwoStage:
      m.w1 = param(0);
      m.b1 = op.bias ? param(1) : Tensor();
      m.w2 = param(op.bias ? 2 : 1);
      m.b2 = op.bias ? param(3) : Tensor();
      m.p1 = same_pad(op.kernel, op.stride, 1);
      m.p2 = same_pad(op.kernel, 1, 1);
      m.mid1 = buf(op.mid_channels, oh, ow);
      break;
    case OpKind::DepthPoint:  // depthwise k x k on C, then pointwise C -> C'
      m.w1 = param(0);
      m.b1 = op.bias ? param(1) : Tensor();
      m.w2 = param(op.bias ? 2 : 1);
      m.b2 = op.bias ? param(3) : Tensor();
      m.p1 = same_pad(op.kernel, 1, C);
      m.p2 = same_pad(1, 1, 1);
      m.mid1 = buf(C, H, W);
      break;
    case OpKind::PointDepth:  // pointwise C -> C', then depthwise k x k on C'
      m.w1 = param(0);
      m.b1 = op.bias ? param(1) : Tensor();
      m.w2 = param(op.bias ? 2 : 1);
      m.b2 = op.bias ? param(3) : Tensor();
      m.p1 = same_pad(1, 1, 1);
      m.p2 = same_pad(op.kernel, 1, op.out_channels);
      m.mid1 = buf(op.out_channels, H, W);
      break;
    case OpKind::Self:
      m.w1 = param(0);
      m.b1 = param(1);
      m.mid2 = buf(C, H, W);
      break;
    case OpKind::Identity:
      break;
    case OpKind::Local:
    case OpKind::LocalDepthwise: {
      // The cortical sheet (spec §3): channels tiled into an (fH x fW) plane, one
      // single-channel conv with reflect padding, mapped back; localdepthwise then applies a
      // depthwise k x k ("patchy") conv.
      m.sheet = make_local_sheet_map(C, H, W);
      const int kp = m.sheet.kernel();
      if (m.sheet.plane_h() <= kp / 2 || m.sheet.plane_w() <= kp / 2)
        throw ConfigError(concat("local recurrence: the ", m.sheet.plane_h(), "x",
                                 m.sheet.plane_w(), " sheet is too small for reflect padding ",
                                 kp / 2));
      m.w1 = param(0);
      m.b1 = op.bias ? param(1) : Tensor();
      m.p1 = same_pad(kp, 1, 1);
      m.p1.pad_mode = PadMode::Reflect;
      m.sheet_in = ctx.empty(Shape{B, 1, m.sheet.plane_h(), m.sheet.plane_w()}, dtype);
      m.sheet_out = ctx.empty(m.sheet_in.shape(), dtype);
      if (op.kind == OpKind::LocalDepthwise) {
        m.w2 = param(op.bias ? 2 : 1);
        m.b2 = op.bias ? param(3) : Tensor();
        m.p2 = same_pad(op.kernel, 1, C);
        m.mid1 = buf(C, H, W);
      }
      break;
    }
  }
  m.input_sum = buf(C, H, W);
  const int oc = op.kind == OpKind::Identity ? C : op.out_channels;
  if (op.resize_h) m.pre_resize = buf(oc, oh, ow);
  m.out = Shape{B, oc, op.resize_h ? op.resize_h : oh, op.resize_w ? op.resize_w : ow};
}

OperatorRunner::~OperatorRunner() = default;
OperatorRunner::OperatorRunner(OperatorRunner&&) noexcept = default;

Shape OperatorRunner::output_shape() const { return impl_->out; }

void OperatorRunner::forward(Context& ctx, const Tensor& x_in, const Tensor& y,
                             const Tensor& input_add, const Tensor& middle_add) {
  Impl& m = *impl_;
  Tensor x = x_in;
  if (input_add.defined()) {
    ops::add(ctx, x_in, input_add, m.input_sum);
    x = m.input_sum;
  }
  const Tensor& dst = m.op.resize_h ? m.pre_resize : y;
  switch (m.op.kind) {
    case OpKind::Conv:
      ops::conv2d_forward(ctx, m.p1, x, m.w1, m.b1, dst);
      break;
    case OpKind::TwoStage:
      ops::conv2d_forward(ctx, m.p1, x, m.w1, m.b1, m.mid1);
      ops::relu_forward(ctx, m.mid1, m.mid1);
      if (middle_add.defined()) ops::add(ctx, m.mid1, middle_add, m.mid1);
      ops::conv2d_forward(ctx, m.p2, m.mid1, m.w2, m.b2, dst);
      break;
    case OpKind::DepthPoint:
    case OpKind::PointDepth:
      ops::conv2d_forward(ctx, m.p1, x, m.w1, m.b1, m.mid1);
      ops::conv2d_forward(ctx, m.p2, m.mid1, m.w2, m.b2, dst);
      break;
    case OpKind::Self: {
      // DynVision: w * h, plus b only while b is nonzero (so b never trains; spec §3).
      ops::scale(ctx, m.w1.to_vector()[0], x, dst);
      const double b = m.b1.defined() ? m.b1.to_vector()[0] : 0.0;
      if (b != 0.0) {
        ops::fill(ctx, b, m.mid2);
        ops::add(ctx, dst, m.mid2, dst);
      }
      break;
    }
    case OpKind::Identity:
      ops::scale(ctx, 1.0, x, dst);
      break;
    case OpKind::Local:
    case OpKind::LocalDepthwise: {
      ops::layer_to_sheet_forward(ctx, m.sheet, x, m.sheet_in);
      ops::conv2d_forward(ctx, m.p1, m.sheet_in, m.w1.view(Shape{1, 1, m.w1.dim(-2), m.w1.dim(-1)}),
                          m.b1, m.sheet_out);
      if (m.op.kind == OpKind::Local) {
        ops::sheet_to_layer_forward(ctx, m.sheet, m.sheet_out, dst);
      } else {
        ops::sheet_to_layer_forward(ctx, m.sheet, m.sheet_out, m.mid1);
        ops::conv2d_forward(ctx, m.p2, m.mid1, m.w2, m.b2, dst);
      }
      break;
    }
  }
  if (m.op.resize_h) ops::resize_nearest_forward(ctx, m.pre_resize, y);
}

}  // namespace dynsim
