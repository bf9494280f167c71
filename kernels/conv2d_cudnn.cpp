// CUDA conv2d (kernels/conv2d.h) through cuDNN's legacy API: forward (plus bias via
// cudnnAddTensor), dgrad, wgrad and the bias gradient, NCHW, f32 and f64, stride, zero padding
// and groups (depthwise = groups == Cin). GradMode maps to cuDNN's beta (0 overwrite, 1
// accumulate). Descriptors and the chosen algorithms live in a plan per problem in the context's
// plan cache; algorithms come from cuDNN's heuristics (no timing runs, so the choice is the same
// on every run), deterministic ones only when the context asks, and for fp32 without tensor-op
// (TF32) math unless the context's precision allows it. Workspace comes from ctx.scratch().
// Reflect padding (cuDNN has none) runs as a zero-padded conv on a padded copy of x
// (kernels/pad.h): forward pads x into scratch and convolves it unpadded; dgrad writes the
// padded input's gradient into scratch and folds it back onto the mirrored pixels (a gather);
// wgrad runs on the padded copy; the bias gradient is unchanged. The padded buffers and the
// workspace share one scratch block, so steady state allocates nothing.
// bf16 storage (forward only, zero padding): x, w and y bf16 in cuDNN's pseudo-bf16
// configuration (bf16 data, f32 compute type: the products of bf16 values are exact in f32 and
// accumulate in f32; tensor-op algorithms allowed, since they take no TF32 shortcut on bf16
// data), y rounded to bf16 by cuDNN, then the bias added in f32 and rounded again
// (add_channel_bias_bf16): within about 1.5 bf16 ulps of the f32 conv rounded once.
#include <algorithm>
#include <climits>
#include <memory>
#include <string>

#include "engine/core/cuda_check.h"
#include "kernels/cast.h"
#include "kernels/conv2d.h"
#include "kernels/pad.h"

namespace dynsim::cuda {
namespace {

// Descriptors and per-direction algorithm choices of one problem (shapes, params, dtype, math).
struct ConvPlan {
  cudnnTensorDescriptor_t x = nullptr, y = nullptr, bias = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
  cudnnConvolutionDescriptor_t conv = nullptr;
  bool tensor_ops = false;  // TF32 / tensor-op algorithms allowed
  bool deterministic = false;
  bool have_fwd = false, have_data = false, have_filter = false;
  cudnnConvolutionFwdAlgo_t fwd{};
  cudnnConvolutionBwdDataAlgo_t data{};
  cudnnConvolutionBwdFilterAlgo_t filter{};
  size_t fwd_ws = 0, data_ws = 0, filter_ws = 0;
  std::string key;

  ConvPlan() = default;
  ConvPlan(const ConvPlan&) = delete;
  ConvPlan& operator=(const ConvPlan&) = delete;
  ~ConvPlan() {
    if (conv) cudnnDestroyConvolutionDescriptor(conv);
    if (w) cudnnDestroyFilterDescriptor(w);
    if (bias) cudnnDestroyTensorDescriptor(bias);
    if (y) cudnnDestroyTensorDescriptor(y);
    if (x) cudnnDestroyTensorDescriptor(x);
  }
};

int as_int(const char* op, const char* what, int64_t v) {
  if (v > INT_MAX) throw NotImplemented(concat(op, ": ", what, " = ", v, " exceeds cuDNN's int"));
  return int(v);
}

// Checks the arguments like the CPU twin and returns y's shape.
Shape check_problem(const char* op, const Conv2dParams& p, const Tensor& x, const Tensor& w,
                    bool bf16_ok = false) {
  if (!x.defined()) throw DataError(concat(op, ": x is undefined"));
  if (x.device() != Device::Cuda) throw DataError(concat(op, ": CUDA op got ", x.str()));
  if (x.dtype() != DType::F32 && x.dtype() != DType::F64 &&
      !(bf16_ok && x.dtype() == DType::BF16))
    throw DataError(concat(op, ": needs f32 or f64, got ", x.str()));
  check_same(op, "w", w, x);
  const Shape ys = p.output_shape(x.shape(), w.shape());
  for (const Shape* s : {&x.shape(), &ys})
    if (s->numel() > INT_MAX)
      throw NotImplemented(concat(op, ": tensor ", s->str(),
                                  " has more than 2^31 elements "
                                  "(cuDNN's legacy API limit; split the batch)"));
  return ys;
}

// The problem cuDNN sees: x itself with zero padding, or for reflect padding the padded copy of
// x (reflect_pad_shape) with no padding.
struct CudnnProblem {
  Conv2dParams p;
  Shape xs;
  bool reflect = false;
  size_t padded_bytes = 0;  // the padded copy of x (reflect only)
};

CudnnProblem cudnn_problem(const char* op, const Conv2dParams& p, const Tensor& x) {
  CudnnProblem q{p, x.shape()};
  if (p.pad_mode != PadMode::Reflect || (p.pad_h == 0 && p.pad_w == 0)) return q;
  q.reflect = true;
  q.xs = reflect_pad_shape(op, "x", p.pad_h, p.pad_w, x.shape());
  if (q.xs.numel() > INT_MAX)
    throw NotImplemented(concat(op, ": the reflect-padded input ", q.xs.str(),
                                " has more than 2^31 elements (cuDNN's legacy API limit; split "
                                "the batch)"));
  q.padded_bytes = size_t(q.xs.numel()) * dtype_size(x.dtype());
  q.p.pad_h = q.p.pad_w = 0;
  q.p.pad_mode = PadMode::Zeros;
  return q;
}

// Rounds a buffer's size up to 256 bytes, so that the buffers sharing one scratch block stay
// aligned as cuDNN and the kernels expect.
size_t align_up(size_t n) {
  return (n + 255) / 256 * 256;
}

ConvPlan& plan_for(Context& c, const Conv2dParams& p, DType dtype, const Shape& xs, const Shape& ws,
                   const Shape& ys) {
  const bool f64 = dtype == DType::F64, bf16 = dtype == DType::BF16;
  const bool tensor_ops = bf16 || (!f64 && c.precision() != Precision::FP32);
  const bool det = c.options().deterministic;
  // No allocation per call: the key holds the problem's numbers.
  PlanKey key("conv2d");
  key << int64_t(dtype) << p.stride_h << p.stride_w << p.pad_h << p.pad_w << p.groups
      << tensor_ops << det;
  for (int i = 0; i < 4; ++i) key << xs[i] << ws[i];
  return c.plans().get_or_create<ConvPlan>(key, [&] {
    auto pl = std::make_shared<ConvPlan>();
    const char* op = "conv2d (cuDNN)";
    const cudnnDataType_t dt = f64    ? CUDNN_DATA_DOUBLE
                               : bf16 ? CUDNN_DATA_BFLOAT16
                                      : CUDNN_DATA_FLOAT;
    const cudnnDataType_t compute = bf16 ? CUDNN_DATA_FLOAT : dt;
    pl->key = concat(dtype_name(dtype), " x", xs.str(), " w", ws.str(), " s", p.stride_h, ",",
                     p.stride_w, " p", p.pad_h, ",", p.pad_w, " g", p.groups,
                     bf16 ? " bf16/f32" : tensor_ops ? " tf32" : " fma", det ? " det" : "");
    pl->tensor_ops = tensor_ops;
    pl->deterministic = det;
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&pl->x));
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&pl->y));
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&pl->bias));
    CUDNN_CHECK(cudnnCreateFilterDescriptor(&pl->w));
    CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&pl->conv));
    CUDNN_CHECK(cudnnSetTensor4dDescriptor(pl->x, CUDNN_TENSOR_NCHW, dt, as_int(op, "N", xs[0]),
                                           as_int(op, "Cin", xs[1]), as_int(op, "H", xs[2]),
                                           as_int(op, "W", xs[3])));
    CUDNN_CHECK(cudnnSetTensor4dDescriptor(pl->y, CUDNN_TENSOR_NCHW, dt, int(ys[0]), int(ys[1]),
                                           int(ys[2]), int(ys[3])));
    CUDNN_CHECK(cudnnSetTensor4dDescriptor(pl->bias, CUDNN_TENSOR_NCHW, dt, 1, int(ys[1]), 1, 1));
    CUDNN_CHECK(cudnnSetFilter4dDescriptor(pl->w, dt, CUDNN_TENSOR_NCHW, as_int(op, "Cout", ws[0]),
                                           as_int(op, "Cin/groups", ws[1]), as_int(op, "KH", ws[2]),
                                           as_int(op, "KW", ws[3])));
    CUDNN_CHECK(cudnnSetConvolution2dDescriptor(pl->conv, p.pad_h, p.pad_w, p.stride_h, p.stride_w,
                                                1, 1, CUDNN_CROSS_CORRELATION, compute));
    CUDNN_CHECK(cudnnSetConvolutionGroupCount(pl->conv, p.groups));
    // FMA math keeps fp32 convolutions off TF32 tensor cores (torch's allow_tf32 = False).
    const cudnnMathType_t math = tensor_ops || f64 ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH;
    CUDNN_CHECK(cudnnSetConvolutionMathType(pl->conv, math));
    return pl;
  });
}

// The first usable entry of cuDNN's heuristic ranking.
template <class Perf>
const Perf& pick(const ConvPlan& pl, const Perf* perf, int n, const char* what) {
  for (int i = 0; i < n; ++i) {
    if (perf[i].status != CUDNN_STATUS_SUCCESS) continue;
    if (pl.deterministic && perf[i].determinism != CUDNN_DETERMINISTIC) continue;
    if (!pl.tensor_ops && (perf[i].mathType == CUDNN_TENSOR_OP_MATH ||
                           perf[i].mathType == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION))
      continue;
    return perf[i];
  }
  throw NotImplemented(concat("conv2d (cuDNN): no ", what, " algorithm",
                              pl.deterministic ? " that is deterministic" : "", " for ", pl.key));
}

void choose_forward(cudnnHandle_t h, ConvPlan& pl) {
  if (pl.have_fwd) return;
  cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
  int n = 0;
  CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(h, pl.x, pl.w, pl.conv, pl.y,
                                                     CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &n, perf));
  pl.fwd = pick(pl, perf, n, "forward").algo;
  CUDNN_CHECK(
      cudnnGetConvolutionForwardWorkspaceSize(h, pl.x, pl.w, pl.conv, pl.y, pl.fwd, &pl.fwd_ws));
  pl.have_fwd = true;
}

void choose_data(cudnnHandle_t h, ConvPlan& pl) {
  if (pl.have_data) return;
  cudnnConvolutionBwdDataAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
  int n = 0;
  CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(
      h, pl.w, pl.y, pl.conv, pl.x, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &n, perf));
  pl.data = pick(pl, perf, n, "backward-data").algo;
  CUDNN_CHECK(cudnnGetConvolutionBackwardDataWorkspaceSize(h, pl.w, pl.y, pl.conv, pl.x, pl.data,
                                                           &pl.data_ws));
  pl.have_data = true;
}

void choose_filter(cudnnHandle_t h, ConvPlan& pl) {
  if (pl.have_filter) return;
  cudnnConvolutionBwdFilterAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
  int n = 0;
  CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(
      h, pl.x, pl.y, pl.conv, pl.w, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &n, perf));
  pl.filter = pick(pl, perf, n, "backward-filter").algo;
  CUDNN_CHECK(cudnnGetConvolutionBackwardFilterWorkspaceSize(h, pl.x, pl.y, pl.conv, pl.w,
                                                             pl.filter, &pl.filter_ws));
  pl.have_filter = true;
}

// cuDNN's scaling factors: host float for f32 data, host double for f64.
struct Scalars {
  float f[3] = {0.f, 1.f, 0.f};
  double d[3] = {0.0, 1.0, 0.0};
  bool f64;
  explicit Scalars(bool is_f64) : f64(is_f64) {}
  const void* zero() const { return f64 ? static_cast<const void*>(&d[0]) : &f[0]; }
  const void* one() const { return f64 ? static_cast<const void*>(&d[1]) : &f[1]; }
  const void* beta(GradMode m) const { return m == GradMode::Accumulate ? one() : zero(); }
};

}  // namespace

void conv2d_forward(Context& c, const Conv2dParams& p, const Tensor& x, const Tensor& w,
                    const Tensor& b, const Tensor& y) {
  const char* op = "conv2d_forward";
  const Shape ys = check_problem(op, p, x, w, true);
  const bool bf16 = x.dtype() == DType::BF16;
  if (b.defined()) {
    if (bf16 && b.dtype() == DType::F32) {  // an f32 bias on bf16 data: same device, shape
      check_shape(op, "b", b, Shape{w.dim(0)});
      if (b.device() != x.device() || b.device_index() != x.device_index())
        throw DataError(concat(op, ": b is ", b.str(), " but x is ", x.str(), " (one device)"));
    } else {
      check_arg(op, "b", b, x, Shape{w.dim(0)});
    }
  }
  check_arg(op, "y", y, x, ys);
  if (bf16 && p.pad_mode == PadMode::Reflect && (p.pad_h || p.pad_w))
    throw NotImplemented(concat(op, ": bf16 with reflect padding has no cuDNN form (ops::"
                                    "conv2d_forward runs it on f32 copies)"));
  if (ys.numel() == 0) return;
  const CudnnProblem q = cudnn_problem(op, p, x);
  auto h = static_cast<cudnnHandle_t>(c.cudnn());
  ConvPlan& pl = plan_for(c, q.p, x.dtype(), q.xs, w.shape(), ys);
  choose_forward(h, pl);
  const bool f64 = x.dtype() == DType::F64;
  const Scalars s(f64);
  // One scratch block: [reflect-padded x][workspace].
  const size_t xp_bytes = q.reflect ? align_up(q.padded_bytes) : 0;
  const size_t total = xp_bytes + pl.fwd_ws;
  char* block = total ? static_cast<char*>(c.scratch().get(total)) : nullptr;
  const void* xin = x.raw();
  if (q.reflect) {
    reflect_pad_forward_raw(c, f64, x.dim(0) * x.dim(1), x.dim(2), x.dim(3), p.pad_h, p.pad_w,
                            x.raw(), block);
    xin = block;
  }
  void* ws = pl.fwd_ws ? block + xp_bytes : nullptr;
  CUDNN_CHECK(cudnnConvolutionForward(h, s.one(), pl.x, xin, pl.w, w.raw(), pl.conv, pl.fwd, ws,
                                      pl.fwd_ws, s.zero(), pl.y, y.raw()));
  if (b.defined() && bf16)
    add_channel_bias_bf16(c, y, b);
  else if (b.defined())
    CUDNN_CHECK(cudnnAddTensor(h, s.one(), pl.bias, b.raw(), s.one(), pl.y, y.raw()));
}

void conv2d_backward(Context& c, const Conv2dParams& p, const Tensor& grad_y, const Tensor& x,
                     const Tensor& w, const Tensor& grad_x, const Tensor& grad_w,
                     const Tensor& grad_b, GradMode m) {
  const char* op = "conv2d_backward";
  const Shape ys = check_problem(op, p, x, w);
  check_arg(op, "grad_y", grad_y, x, ys);
  if (grad_x.defined()) check_arg(op, "grad_x", grad_x, x, x.shape());
  if (grad_w.defined()) check_arg(op, "grad_w", grad_w, x, w.shape());
  if (grad_b.defined()) check_arg(op, "grad_b", grad_b, x, Shape{w.dim(0)});
  auto stream = static_cast<cudaStream_t>(c.stream());
  if (ys.numel() == 0) {  // an empty batch: the weight and bias gradients are sums of nothing
    if (m == GradMode::Overwrite)
      for (const Tensor* t : {&grad_w, &grad_b})
        if (t->defined()) DYNSIM_CUDA_CHECK(cudaMemsetAsync(t->raw(), 0, t->nbytes(), stream));
    return;
  }
  const CudnnProblem q = cudnn_problem(op, p, x);
  auto h = static_cast<cudnnHandle_t>(c.cudnn());
  ConvPlan& pl = plan_for(c, q.p, x.dtype(), q.xs, w.shape(), ys);
  if (grad_x.defined()) choose_data(h, pl);
  if (grad_w.defined()) choose_filter(h, pl);
  const size_t ws_bytes =
      std::max(grad_x.defined() ? pl.data_ws : 0, grad_w.defined() ? pl.filter_ws : 0);
  // One scratch block: [padded x (reflect wgrad)][padded grad_x (reflect dgrad)][workspace];
  // the workspace serves both cuDNN calls.
  const size_t xp_bytes = q.reflect && grad_w.defined() ? align_up(q.padded_bytes) : 0;
  const size_t gxp_bytes = q.reflect && grad_x.defined() ? align_up(q.padded_bytes) : 0;
  const size_t total = xp_bytes + gxp_bytes + ws_bytes;
  char* block = total ? static_cast<char*>(c.scratch().get(total)) : nullptr;
  void* ws = ws_bytes ? block + xp_bytes + gxp_bytes : nullptr;
  const bool f64 = x.dtype() == DType::F64;
  const Scalars s(f64);
  const int64_t planes = x.dim(0) * x.dim(1);
  if (grad_x.defined() && !q.reflect)
    CUDNN_CHECK(cudnnConvolutionBackwardData(h, s.one(), pl.w, w.raw(), pl.y, grad_y.raw(), pl.conv,
                                             pl.data, ws, pl.data_ws, s.beta(m), pl.x,
                                             grad_x.raw()));
  if (grad_x.defined() && q.reflect) {  // the padded input's gradient, folded onto its sources
    void* gxp = block + xp_bytes;
    CUDNN_CHECK(cudnnConvolutionBackwardData(h, s.one(), pl.w, w.raw(), pl.y, grad_y.raw(), pl.conv,
                                             pl.data, ws, pl.data_ws, s.zero(), pl.x, gxp));
    reflect_pad_backward_raw(c, f64, planes, x.dim(2), x.dim(3), p.pad_h, p.pad_w, gxp,
                             grad_x.raw(), m);
  }
  if (grad_w.defined()) {
    const void* xin = x.raw();
    if (q.reflect) {
      reflect_pad_forward_raw(c, f64, planes, x.dim(2), x.dim(3), p.pad_h, p.pad_w, x.raw(), block);
      xin = block;
    }
    CUDNN_CHECK(cudnnConvolutionBackwardFilter(h, s.one(), pl.x, xin, pl.y, grad_y.raw(), pl.conv,
                                               pl.filter, ws, pl.filter_ws, s.beta(m), pl.w,
                                               grad_w.raw()));
  }
  if (grad_b.defined())
    CUDNN_CHECK(cudnnConvolutionBackwardBias(h, s.one(), pl.y, grad_y.raw(), s.beta(m), pl.bias,
                                             grad_b.raw()));
}

}  // namespace dynsim::cuda
