// OperatorRunner (engine/dynamics/operators.h): each OpKind becomes a fixed list of kernel calls.
#include "engine/dynamics/operators.h"

#include <cmath>
#include <functional>

#include "kernels/dispatch.h"

namespace dynsim {

struct OperatorRunner::Impl {
  OpSpec op;
  int batch;
  // Intermediate buffers, allocated once.
  Tensor input_sum, mid1, mid2, pre_resize, sheet_in, sheet_out;
  Tensor w1, b1, w2, b2;  // parameters (views sharing the store's storage)
  // Backward buffers, allocated on the first backward call.
  Tensor g_pre, g_mid, g_xe, g_sheet_in, g_sheet_out, g_tmp, g_sum;
  DType dtype = DType::F32;
  Conv2dParams p1, p2;
  Shape out;
  LocalSheetMap sheet;        // Local / LocalDepthwise
  bool resize = false;        // a nearest resize follows the operator (not folded into a stride)
  int64_t calls = 0;          // forward() calls (forward_calls())
  double flops_per_call = 0;  // FLOPs of one forward() without its added terms
  double flops = 0;           // FLOPs of the forward() calls so far
  bool scalars_read = false;  // Self: w_value, b_value hold w and b (begin_run)
  double w_value = 0, b_value = 0;
};

namespace {

// FLOPs of one convolution of a [B, *, h, w] input with weight w ([Cout, Cin/groups, kh, kw]):
// 2 per multiply-add, plus one per output for the bias.
double conv_flops(int B, int h, int w, const Tensor& wt, const Conv2dParams& p, bool bias) {
  if (!wt.defined() || wt.rank() != 4) return 0;
  const double kh = double(wt.dim(2)), kw = double(wt.dim(3));
  const double oh = std::floor((h + 2.0 * p.pad_h - kh) / p.stride_h) + 1;
  const double ow = std::floor((w + 2.0 * p.pad_w - kw) / p.stride_w) + 1;
  const double outputs = double(B) * double(wt.dim(0)) * oh * ow;
  return outputs * (2.0 * double(wt.dim(1)) * kh * kw + (bias ? 1.0 : 0.0));
}

Conv2dParams same_pad(int k, int stride, int groups) {
  Conv2dParams p;
  p.stride_h = p.stride_w = stride;
  p.pad_h = p.pad_w = k / 2;
  p.groups = groups;
  return p;
}

}  // namespace

OperatorRunner::OperatorRunner(Context& ctx, const OpSpec& op, ParamStore& params, int batch,
                               DType dtype, const OperatorOptions& options)
    : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.op = op;
  m.batch = batch;
  m.dtype = dtype;
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
      m.mid2 = buf(op.mid_channels, oh, ow);
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
  m.resize = op.resize_h > 0;
  // Nearest downsampling by whole factors keeps pixel (s_h i, s_w j) (kernels/resize.h), which a
  // 1x1 unpadded conv with stride (s_h, s_w) computes directly.
  if (m.resize && op.resize_h == oh && op.resize_w == ow) m.resize = false;  // a copy
  if (m.resize && options.strided_skip && op.kind == OpKind::Conv && op.kernel == 1 &&
      op.stride == 1 && op.resize_h <= oh && op.resize_w <= ow && oh % op.resize_h == 0 &&
      ow % op.resize_w == 0) {
    m.p1.stride_h = oh / op.resize_h;
    m.p1.stride_w = ow / op.resize_w;
    m.resize = false;
  }
  if (m.resize) m.pre_resize = buf(oc, oh, ow);
  m.out = Shape{B, oc, op.resize_h ? op.resize_h : oh, op.resize_w ? op.resize_w : ow};
  switch (op.kind) {
    case OpKind::Conv:
      m.flops_per_call = conv_flops(B, H, W, m.w1, m.p1, m.b1.defined());
      break;
    case OpKind::TwoStage:
      m.flops_per_call = conv_flops(B, H, W, m.w1, m.p1, m.b1.defined()) +
                         conv_flops(B, oh, ow, m.w2, m.p2, m.b2.defined());
      break;
    case OpKind::DepthPoint:
    case OpKind::PointDepth:
      m.flops_per_call = conv_flops(B, H, W, m.w1, m.p1, m.b1.defined()) +
                         conv_flops(B, H, W, m.w2, m.p2, m.b2.defined());
      break;
    case OpKind::Local:
    case OpKind::LocalDepthwise:
      m.flops_per_call = conv_flops(B, m.sheet.plane_h(), m.sheet.plane_w(), m.w1, m.p1,
                                    m.b1.defined()) +
                         conv_flops(B, H, W, m.w2, m.p2, m.b2.defined());
      break;
    case OpKind::Self:  // w x + b per element
      m.flops_per_call = 2.0 * double(B) * C * H * W;
      break;
    case OpKind::Identity:
      break;
  }
}

OperatorRunner::~OperatorRunner() = default;
OperatorRunner::OperatorRunner(OperatorRunner&&) noexcept = default;

Shape OperatorRunner::output_shape() const { return impl_->out; }
int64_t OperatorRunner::forward_calls() const { return impl_->calls; }
double OperatorRunner::forward_flops() const { return impl_->flops; }
bool OperatorRunner::strided() const {
  return impl_->p1.stride_h != impl_->op.stride || impl_->p1.stride_w != impl_->op.stride;
}

void OperatorRunner::begin_run(Context& ctx) {
  Impl& m = *impl_;
  if (m.op.kind != OpKind::Self) return;
  m.w_value = ctx.host_view(m.w1).item(0);
  m.b_value = m.b1.defined() ? ctx.host_view(m.b1).item(0) : 0.0;
  m.scalars_read = true;
}

void OperatorRunner::forward(Context& ctx, const Tensor& x_in, const Tensor& y,
                             const Tensor& input_add, const Tensor& middle_add) {
  Impl& m = *impl_;
  ++m.calls;
  m.flops += m.flops_per_call;
  Tensor x = x_in;
  if (input_add.defined()) {
    m.flops += double(x_in.numel());
    ops::add(ctx, x_in, input_add, m.input_sum);
    x = m.input_sum;
  }
  const Tensor& dst = m.resize ? m.pre_resize : y;
  switch (m.op.kind) {
    case OpKind::Conv:
      ops::conv2d_forward(ctx, m.p1, x, m.w1, m.b1, dst);
      break;
    case OpKind::TwoStage:
      ops::conv2d_forward(ctx, m.p1, x, m.w1, m.b1, m.mid1);
      ops::relu_forward(ctx, m.mid1, m.mid1);
      if (middle_add.defined()) {
        m.flops += double(middle_add.numel());
        ops::add(ctx, m.mid1, middle_add, m.mid2);
      }
      ops::conv2d_forward(ctx, m.p2, middle_add.defined() ? m.mid2 : m.mid1, m.w2, m.b2, dst);
      break;
    case OpKind::DepthPoint:
    case OpKind::PointDepth:
      ops::conv2d_forward(ctx, m.p1, x, m.w1, m.b1, m.mid1);
      ops::conv2d_forward(ctx, m.p2, m.mid1, m.w2, m.b2, dst);
      break;
    case OpKind::Self: {
      // DynVision: w * h, plus b only while b is nonzero (so b never trains; spec §3).
      const double w = m.scalars_read ? m.w_value : ctx.host_view(m.w1).item(0);
      ops::scale(ctx, w, x, dst);
      const double b =
          m.scalars_read ? m.b_value : (m.b1.defined() ? ctx.host_view(m.b1).item(0) : 0.0);
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
  if (m.resize) ops::resize_nearest_forward(ctx, m.pre_resize, y);
}

namespace {

// dst = src (Overwrite) or dst += src (Accumulate).
void put(Context& ctx, const Tensor& src, const Tensor& dst, GradMode m) {
  if (!dst.defined()) return;
  if (m == GradMode::Accumulate)
    ops::axpy(ctx, 1.0, src, dst);
  else
    ops::scale(ctx, 1.0, src, dst);
}

// conv2d_backward with one mode for grad_x and another for the parameter gradients.
void conv_backward(Context& ctx, const Conv2dParams& p, const Tensor& gy, const Tensor& x,
                   const Tensor& w, const Tensor& gx, GradMode gx_mode, const Tensor& gw,
                   const Tensor& gb, GradMode m) {
  if (gx_mode == m) return ops::conv2d_backward(ctx, p, gy, x, w, gx, gw, gb, m);
  if (gx.defined()) ops::conv2d_backward(ctx, p, gy, x, w, gx, {}, {}, gx_mode);
  if (gw.defined() || gb.defined()) ops::conv2d_backward(ctx, p, gy, x, w, {}, gw, gb, m);
}

}  // namespace

void OperatorRunner::backward(Context& ctx, const Tensor& x_in, const Tensor& grad_y,
                              const Tensor& grad_x, ParamStore* grads, GradMode mode,
                              const Tensor& input_add, const Tensor& middle_add,
                              const Tensor& grad_input_add, const Tensor& grad_middle_add) {
  Impl& m = *impl_;
  const OpSpec& op = m.op;
  auto like = [&](const Tensor& t) { return ctx.empty(t.shape(), m.dtype); };
  auto pg = [&](size_t i) -> Tensor {  // gradient of parameter i, or undefined
    return grads && i < op.params.size() ? grads->get(op.params[i]) : Tensor();
  };
  // Parameter indices: weights and biases in order ([w1, b1, w2, b2] or [w1, w2]).
  const size_t iw1 = 0, ib1 = op.bias ? 1 : size_t(-1), iw2 = op.bias ? 2 : 1,
               ib2 = op.bias ? 3 : size_t(-1);
  Tensor xe = x_in;
  if (input_add.defined()) {
    ops::add(ctx, x_in, input_add, m.input_sum);
    xe = m.input_sum;
  }
  Tensor gout = grad_y;
  if (m.resize) {
    if (!m.g_pre.defined()) m.g_pre = like(m.pre_resize);
    ops::resize_nearest_backward(ctx, grad_y, m.g_pre, GradMode::Overwrite);
    gout = m.g_pre;
  }
  // The gradient of the operator's input x_e = x [+ input_add].
  const bool split = input_add.defined();
  if (split && !m.g_xe.defined()) m.g_xe = like(xe);
  const Tensor gxe = split ? m.g_xe : grad_x;
  const GradMode gxe_mode = split ? GradMode::Overwrite : mode;
  auto mid_grad = [&](const Tensor& shape_of) -> Tensor& {
    if (!m.g_mid.defined()) m.g_mid = like(shape_of);
    return m.g_mid;
  };
  switch (op.kind) {
    case OpKind::Conv:
      conv_backward(ctx, m.p1, gout, xe, m.w1, gxe, gxe_mode, pg(iw1), pg(ib1), mode);
      break;
    case OpKind::TwoStage: {
      ops::conv2d_forward(ctx, m.p1, xe, m.w1, m.b1, m.mid1);
      ops::relu_forward(ctx, m.mid1, m.mid1);
      if (middle_add.defined()) ops::add(ctx, m.mid1, middle_add, m.mid2);
      Tensor& gm = mid_grad(m.mid1);
      conv_backward(ctx, m.p2, gout, middle_add.defined() ? m.mid2 : m.mid1, m.w2, gm,
                    GradMode::Overwrite, pg(iw2), pg(ib2), mode);
      put(ctx, gm, grad_middle_add, mode);
      ops::relu_backward(ctx, m.mid1, gm, gm, GradMode::Overwrite);  // relu(c) > 0 iff c > 0
      conv_backward(ctx, m.p1, gm, xe, m.w1, gxe, gxe_mode, pg(iw1), pg(ib1), mode);
      break;
    }
    case OpKind::DepthPoint:
    case OpKind::PointDepth: {
      ops::conv2d_forward(ctx, m.p1, xe, m.w1, m.b1, m.mid1);
      Tensor& gm = mid_grad(m.mid1);
      conv_backward(ctx, m.p2, gout, m.mid1, m.w2, gm, GradMode::Overwrite, pg(iw2), pg(ib2), mode);
      conv_backward(ctx, m.p1, gm, xe, m.w1, gxe, gxe_mode, pg(iw1), pg(ib1), mode);
      break;
    }
    case OpKind::Self: {
      // y = w h (+ b while b != 0): dh = w dy, dw = sum(dy h), db = sum(dy) while b != 0.
      // w and b as begin_run read them (else one host read); the sums stay on the device.
      const double w = m.scalars_read ? m.w_value : ctx.host_view(m.w1).item(0);
      if (gxe.defined()) {
        if (gxe_mode == GradMode::Accumulate)
          ops::axpy(ctx, w, gout, gxe);
        else
          ops::scale(ctx, w, gout, gxe);
      }
      // g (one element) = sum (Overwrite) or g + sum (Accumulate); sum absent: 0.
      auto put_scalar = [&](const Tensor& g, const Tensor* sum) {
        if (!g.defined()) return;
        const Tensor g1 = g.view(Shape{1});
        if (!sum) {
          if (mode == GradMode::Overwrite) ops::fill(ctx, 0.0, g1);
        } else if (mode == GradMode::Accumulate) {
          ops::axpy(ctx, 1.0, *sum, g1);
        } else {
          ops::scale(ctx, 1.0, *sum, g1);
        }
      };
      if (!m.g_tmp.defined()) m.g_tmp = like(gout);
      // The sums in f32 in bf16 runs (they go into f32 parameter gradients).
      if (!m.g_sum.defined())
        m.g_sum = ctx.empty(Shape{1}, m.dtype == DType::BF16 ? DType::F32 : m.dtype);
      ops::mul(ctx, gout, xe, m.g_tmp);
      ops::sum_all_forward(ctx, m.g_tmp, m.g_sum);
      put_scalar(pg(0), &m.g_sum);
      const bool b_live =
          m.b1.defined() && (m.scalars_read ? m.b_value : ctx.host_view(m.b1).item(0)) != 0.0;
      if (b_live) ops::sum_all_forward(ctx, gout, m.g_sum);
      put_scalar(pg(1), b_live ? &m.g_sum : nullptr);
      break;
    }
    case OpKind::Identity:
      if (gxe.defined()) put(ctx, gout, gxe, gxe_mode);
      break;
    case OpKind::Local:
    case OpKind::LocalDepthwise: {
      const Tensor wv = m.w1.view(Shape{1, 1, m.w1.dim(-2), m.w1.dim(-1)});
      ops::layer_to_sheet_forward(ctx, m.sheet, xe, m.sheet_in);
      if (!m.g_sheet_out.defined()) m.g_sheet_out = like(m.sheet_out);
      if (!m.g_sheet_in.defined()) m.g_sheet_in = like(m.sheet_in);
      Tensor g_layer = gout;
      if (op.kind == OpKind::LocalDepthwise) {
        ops::conv2d_forward(ctx, m.p1, m.sheet_in, wv, m.b1, m.sheet_out);
        ops::sheet_to_layer_forward(ctx, m.sheet, m.sheet_out, m.mid1);
        Tensor& gm = mid_grad(m.mid1);
        conv_backward(ctx, m.p2, gout, m.mid1, m.w2, gm, GradMode::Overwrite, pg(iw2), pg(ib2),
                      mode);
        g_layer = gm;
      }
      ops::sheet_to_layer_backward(ctx, m.sheet, g_layer, m.g_sheet_out, GradMode::Overwrite);
      const Tensor gw = pg(iw1);
      conv_backward(ctx, m.p1, m.g_sheet_out, m.sheet_in, wv, m.g_sheet_in, GradMode::Overwrite,
                    gw.defined() ? gw.view(wv.shape()) : Tensor(), pg(ib1), mode);
      if (gxe.defined()) ops::layer_to_sheet_backward(ctx, m.sheet, m.g_sheet_in, gxe, gxe_mode);
      break;
    }
  }
  if (split) {
    put(ctx, m.g_xe, grad_x, mode);
    put(ctx, m.g_xe, grad_input_add, mode);
  }
}

}  // namespace dynsim
