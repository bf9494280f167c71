// The one device switch: ops::<op>(ctx, ...) runs the CPU twin or the CUDA kernel according to
// the context's device. Models, solvers and the scheduler call only these. An op without a
// CUDA implementation yet throws NotImplemented naming itself when called on a CUDA context.
#pragma once
#include "kernels/bf16_widen.h"
#include "kernels/activity.h"
#include "kernels/cast.h"
#include "kernels/conv2d.h"
#include "kernels/elementwise.h"
#include "kernels/frames.h"
#include "kernels/leak.h"
#include "kernels/leak_tail.h"
#include "kernels/linear.h"
#include "kernels/local_sheet.h"
#include "kernels/losses.h"
#include "kernels/noise.h"
#include "kernels/optim.h"
#include "kernels/pool2d.h"
#include "kernels/reduce.h"
#include "kernels/resize.h"
#include "kernels/softplus.h"
#include "kernels/supralinearity.h"

namespace dynsim::ops {

inline bool on_cuda(const Context& c) {
  return c.device() == Device::Cuda;
}
[[noreturn]] inline void no_cuda(const char* op) {
  throw NotImplemented(concat(op, ": no CUDA implementation in this build"));
}

constexpr bool kCudaBuilt = DYNSIM_WITH_CUDA;

// y = x converted between f32, f64 and bf16 (kernels/cast.h).
inline void cast(Context& c, const Tensor& x, const Tensor& y) {
  if (!on_cuda(c)) return cpu::cast(c, x, y);
  if constexpr (kCudaBuilt) return cuda::cast(c, x, y);
  no_cuda("cast");
}
inline bool any_bf16_terms(const LeakTailTerms& terms) {
  for (int i = 0; i < terms.size() && i < LeakTailTerms::kMax; ++i)
    if (terms[i].defined() && terms[i].dtype() == DType::BF16) return true;
  return false;
}

// The CUDA leak tail's native bf16 form (kernels/leak_tail.h): every term, h (when given), x
// (when given) and r bf16, tau f32, as the Scheduler's bf16 runs call it.
inline bool leak_tail_native_bf16(const Context& c, const LeakTailTerms& terms, const Tensor& h,
                                  const Tensor& tau, const Tensor& x, const Tensor& r) {
  if (!kCudaBuilt || !on_cuda(c) || terms.size() < 1) return false;
  auto bf = [](const Tensor& t) { return t.defined() && t.dtype() == DType::BF16; };
  for (int i = 0; i < terms.size(); ++i)
    if (!bf(terms[i])) return false;
  return (!h.defined() || bf(h)) && (!x.defined() || bf(x)) && bf(r) && tau.defined() &&
         tau.dtype() == DType::F32;
}

// The CUDA conv's native bf16 form (kernels/conv2d_cudnn.cpp: x, w, y bf16, b bf16 or f32, zero
// padding). Returns false when it does not apply, or when cuDNN has refused a bf16 problem on
// this context (no bf16 support on this GPU or cuDNN): that problem and later ones run on f32
// copies. The refusal comes from the run's first (uncaptured) step, before any work is queued.
struct Conv2dBf16Refusal {
  bool refused = false;
  std::string why;
};
inline bool conv2d_native_bf16(Context& c, const Conv2dParams& p, const Tensor& x, const Tensor& w,
                               const Tensor& b, const Tensor& y) {
  if constexpr (!kCudaBuilt) {
    return false;
  } else {
    if (!on_cuda(c)) return false;
    auto bf = [](const Tensor& t) { return t.defined() && t.dtype() == DType::BF16; };
    if (!bf(x) || !bf(w) || !bf(y) || (b.defined() && !bf(b) && b.dtype() != DType::F32))
      return false;
    if (p.pad_mode == PadMode::Reflect && (p.pad_h != 0 || p.pad_w != 0)) return false;
    Conv2dBf16Refusal& r = c.plans().get_or_create<Conv2dBf16Refusal>(
        PlanKey("conv2d_bf16_refused"), [] { return std::make_shared<Conv2dBf16Refusal>(); });
    if (r.refused) return false;
    try {
      cuda::conv2d_forward(c, p, x, w, b, y);
      return true;
    } catch (const Error& e) {
      if (e.code() != ExitCode::Software) throw;  // bad arguments fail either way
      r.refused = true;
      r.why = e.what();
      return false;
    }
  }
}

// bf16 storage (kernels/bf16_widen.h): an op given a bf16 operand (forward or backward) runs on f32
// copies of its bf16 operands and rounds its bf16 outputs once (an accumulating gradient is
// widened first, so grad += g is rounded once too); f32 operands (parameters and their
// gradients in bf16 training, tau) are used as they are. Native CUDA forms where noted.
inline void conv2d_forward(Context& c, const Conv2dParams& p, const Tensor& x, const Tensor& w,
                           const Tensor& b, const Tensor& y) {
  if (any_bf16({&x, &w, &b, &y})) {
    if (conv2d_native_bf16(c, p, x, w, b, y)) return;
    Widened wd(c);
    const Tensor x_ = wd.in(x), w_ = wd.in(w), b_ = wd.in(b), y_ = wd.out(y);
    conv2d_forward(c, p, x_, w_, b_, y_);
    return wd.finish();
  }
  if (!on_cuda(c)) return cpu::conv2d_forward(c, p, x, w, b, y);
  if constexpr (kCudaBuilt) return cuda::conv2d_forward(c, p, x, w, b, y);
  no_cuda("conv2d_forward");
}
inline void conv2d_backward(Context& c, const Conv2dParams& p, const Tensor& grad_y,
                            const Tensor& x, const Tensor& w, const Tensor& grad_x,
                            const Tensor& grad_w, const Tensor& grad_b, GradMode m) {
  if (any_bf16({&grad_y, &x, &w, &grad_x, &grad_w, &grad_b})) {
    Widened wd(c);
    const Tensor grad_y_ = wd.in(grad_y), x_ = wd.in(x), w_ = wd.in(w),
                 grad_x_ = wd.out(grad_x, m == GradMode::Accumulate),
                 grad_w_ = wd.out(grad_w, m == GradMode::Accumulate),
                 grad_b_ = wd.out(grad_b, m == GradMode::Accumulate);
    conv2d_backward(c, p, grad_y_, x_, w_, grad_x_, grad_w_, grad_b_, m);
    return wd.finish();
  }
  if (!on_cuda(c)) return cpu::conv2d_backward(c, p, grad_y, x, w, grad_x, grad_w, grad_b, m);
  if constexpr (kCudaBuilt)
    return cuda::conv2d_backward(c, p, grad_y, x, w, grad_x, grad_w, grad_b, m);
  no_cuda("conv2d_backward");
}
inline void add(Context& c, const Tensor& a, const Tensor& b, const Tensor& y) {
  if (any_bf16({&a, &b, &y})) {
    Widened wd(c);
    const Tensor a_ = wd.in(a), b_ = wd.in(b), y_ = wd.out(y);
    add(c, a_, b_, y_);
    return wd.finish();
  }
  if (!on_cuda(c)) return cpu::add(c, a, b, y);
  if constexpr (kCudaBuilt) return cuda::add(c, a, b, y);
  no_cuda("add");
}
inline void mul(Context& c, const Tensor& a, const Tensor& b, const Tensor& y) {
  if (any_bf16({&a, &b, &y})) {
    Widened wd(c);
    const Tensor a_ = wd.in(a), b_ = wd.in(b), y_ = wd.out(y);
    mul(c, a_, b_, y_);
    return wd.finish();
  }
  if (!on_cuda(c)) return cpu::mul(c, a, b, y);
  if constexpr (kCudaBuilt) return cuda::mul(c, a, b, y);
  no_cuda("mul");
}
inline void mul_backward(Context& c, const Tensor& grad_y, const Tensor& a, const Tensor& b,
                         const Tensor& grad_a, const Tensor& grad_b, GradMode m) {
  if (any_bf16({&grad_y, &a, &b, &grad_a, &grad_b})) {
    Widened wd(c);
    const Tensor grad_y_ = wd.in(grad_y), a_ = wd.in(a), b_ = wd.in(b),
                 grad_a_ = wd.out(grad_a, m == GradMode::Accumulate),
                 grad_b_ = wd.out(grad_b, m == GradMode::Accumulate);
    mul_backward(c, grad_y_, a_, b_, grad_a_, grad_b_, m);
    return wd.finish();
  }
  if (!on_cuda(c)) return cpu::mul_backward(c, grad_y, a, b, grad_a, grad_b, m);
  if constexpr (kCudaBuilt) return cuda::mul_backward(c, grad_y, a, b, grad_a, grad_b, m);
  no_cuda("mul_backward");
}
inline void axpy(Context& c, double alpha, const Tensor& x, const Tensor& y) {
  if (any_bf16({&x, &y})) {
    Widened wd(c);
    const Tensor x_ = wd.in(x), y_ = wd.out(y, true);
    axpy(c, alpha, x_, y_);
    return wd.finish();
  }
  if (!on_cuda(c)) return cpu::axpy(c, alpha, x, y);
  if constexpr (kCudaBuilt) return cuda::axpy(c, alpha, x, y);
  no_cuda("axpy");
}
inline void scale(Context& c, double alpha, const Tensor& x, const Tensor& y) {
  if (any_bf16({&x, &y})) {
    Widened wd(c);
    const Tensor x_ = wd.in(x), y_ = wd.out(y);
    scale(c, alpha, x_, y_);
    return wd.finish();
  }
  if (!on_cuda(c)) return cpu::scale(c, alpha, x, y);
  if constexpr (kCudaBuilt) return cuda::scale(c, alpha, x, y);
  no_cuda("scale");
}
inline void fill(Context& c, double value, const Tensor& y) {
  if (any_bf16({&y})) {
    Widened wd(c);
    const Tensor y_ = wd.out(y);
    fill(c, value, y_);
    return wd.finish();
  }
  if (!on_cuda(c)) return cpu::fill(c, value, y);
  if constexpr (kCudaBuilt) return cuda::fill(c, value, y);
  no_cuda("fill");
}
inline void relu_forward(Context& c, const Tensor& x, const Tensor& y) {
  if (any_bf16({&x, &y})) {
    Widened wd(c);
    const Tensor x_ = wd.in(x), y_ = wd.out(y);
    relu_forward(c, x_, y_);
    return wd.finish();
  }
  if (!on_cuda(c)) return cpu::relu_forward(c, x, y);
  if constexpr (kCudaBuilt) return cuda::relu_forward(c, x, y);
  no_cuda("relu_forward");
}
inline void relu_backward(Context& c, const Tensor& x, const Tensor& grad_y, const Tensor& grad_x,
                          GradMode m) {
  if (any_bf16({&x, &grad_y, &grad_x})) {
    Widened wd(c);
    const Tensor x_ = wd.in(x), grad_y_ = wd.in(grad_y),
                 grad_x_ = wd.out(grad_x, m == GradMode::Accumulate);
    relu_backward(c, x_, grad_y_, grad_x_, m);
    return wd.finish();
  }
  if (!on_cuda(c)) return cpu::relu_backward(c, x, grad_y, grad_x, m);
  if constexpr (kCudaBuilt) return cuda::relu_backward(c, x, grad_y, grad_x, m);
  no_cuda("relu_backward");
}
inline void linear_forward(Context& c, const Tensor& x, const Tensor& w, const Tensor& b,
                           const Tensor& y) {
  if (any_bf16({&x, &w, &b, &y})) {
    Widened wd(c);
    const Tensor x_ = wd.in(x), w_ = wd.in(w), b_ = wd.in(b), y_ = wd.out(y);
    linear_forward(c, x_, w_, b_, y_);
    return wd.finish();
  }
  if (!on_cuda(c)) return cpu::linear_forward(c, x, w, b, y);
  if constexpr (kCudaBuilt) return cuda::linear_forward(c, x, w, b, y);
  no_cuda("linear_forward");
}
inline void linear_backward(Context& c, const Tensor& grad_y, const Tensor& x, const Tensor& w,
                            const Tensor& grad_x, const Tensor& grad_w, const Tensor& grad_b,
                            GradMode m) {
  if (any_bf16({&grad_y, &x, &w, &grad_x, &grad_w, &grad_b})) {
    Widened wd(c);
    const Tensor grad_y_ = wd.in(grad_y), x_ = wd.in(x), w_ = wd.in(w),
                 grad_x_ = wd.out(grad_x, m == GradMode::Accumulate),
                 grad_w_ = wd.out(grad_w, m == GradMode::Accumulate),
                 grad_b_ = wd.out(grad_b, m == GradMode::Accumulate);
    linear_backward(c, grad_y_, x_, w_, grad_x_, grad_w_, grad_b_, m);
    return wd.finish();
  }
  if (!on_cuda(c)) return cpu::linear_backward(c, grad_y, x, w, grad_x, grad_w, grad_b, m);
  if constexpr (kCudaBuilt)
    return cuda::linear_backward(c, grad_y, x, w, grad_x, grad_w, grad_b, m);
  no_cuda("linear_backward");
}
inline void cross_entropy_forward(Context& c, const CrossEntropyParams& p, const Tensor& logits,
                                  const Tensor& labels, const Tensor& loss) {
  if (any_bf16({&logits, &loss})) {
    Widened wd(c);
    const Tensor logits_ = wd.in(logits), loss_ = wd.out(loss);
    cross_entropy_forward(c, p, logits_, labels, loss_);
    return wd.finish();
  }
  if (!on_cuda(c)) return cpu::cross_entropy_forward(c, p, logits, labels, loss);
  if constexpr (kCudaBuilt) return cuda::cross_entropy_forward(c, p, logits, labels, loss);
  no_cuda("cross_entropy_forward");
}
inline void cross_entropy_backward(Context& c, const CrossEntropyParams& p, const Tensor& grad_loss,
                                   const Tensor& logits, const Tensor& labels,
                                   const Tensor& grad_logits, GradMode m) {
  if (any_bf16({&grad_loss, &logits, &grad_logits})) {
    Widened wd(c);
    const Tensor grad_loss_ = wd.in(grad_loss), logits_ = wd.in(logits),
                 grad_logits_ = wd.out(grad_logits, m == GradMode::Accumulate);
    cross_entropy_backward(c, p, grad_loss_, logits_, labels, grad_logits_, m);
    return wd.finish();
  }
  if (!on_cuda(c))
    return cpu::cross_entropy_backward(c, p, grad_loss, logits, labels, grad_logits, m);
  if constexpr (kCudaBuilt)
    return cuda::cross_entropy_backward(c, p, grad_loss, logits, labels, grad_logits, m);
  no_cuda("cross_entropy_backward");
}
inline void poisson_nll_forward(Context& c, const PoissonNllParams& p, const Tensor& pred,
                                const Tensor& target, const Tensor& loss) {
  if (any_bf16({&pred, &target, &loss})) {
    Widened wd(c);
    const Tensor pred_ = wd.in(pred), target_ = wd.in(target), loss_ = wd.out(loss);
    poisson_nll_forward(c, p, pred_, target_, loss_);
    return wd.finish();
  }
  if (!on_cuda(c)) return cpu::poisson_nll_forward(c, p, pred, target, loss);
  if constexpr (kCudaBuilt) return cuda::poisson_nll_forward(c, p, pred, target, loss);
  no_cuda("poisson_nll_forward");
}
inline void poisson_nll_backward(Context& c, const PoissonNllParams& p, const Tensor& grad_loss,
                                 const Tensor& pred, const Tensor& target, const Tensor& grad_pred,
                                 GradMode m) {
  if (any_bf16({&grad_loss, &pred, &target, &grad_pred})) {
    Widened wd(c);
    const Tensor grad_loss_ = wd.in(grad_loss), pred_ = wd.in(pred), target_ = wd.in(target),
                 grad_pred_ = wd.out(grad_pred, m == GradMode::Accumulate);
    poisson_nll_backward(c, p, grad_loss_, pred_, target_, grad_pred_, m);
    return wd.finish();
  }
  if (!on_cuda(c)) return cpu::poisson_nll_backward(c, p, grad_loss, pred, target, grad_pred, m);
  if constexpr (kCudaBuilt)
    return cuda::poisson_nll_backward(c, p, grad_loss, pred, target, grad_pred, m);
  no_cuda("poisson_nll_backward");
}
inline void mse_forward(Context& c, const Tensor& pred, const Tensor& target, const Tensor& loss) {
  if (any_bf16({&pred, &target, &loss})) {
    Widened wd(c);
    const Tensor pred_ = wd.in(pred), target_ = wd.in(target), loss_ = wd.out(loss);
    mse_forward(c, pred_, target_, loss_);
    return wd.finish();
  }
  if (!on_cuda(c)) return cpu::mse_forward(c, pred, target, loss);
  if constexpr (kCudaBuilt) return cuda::mse_forward(c, pred, target, loss);
  no_cuda("mse_forward");
}
inline void mse_backward(Context& c, const Tensor& grad_loss, const Tensor& pred,
                         const Tensor& target, const Tensor& grad_pred, const Tensor& grad_target,
                         GradMode m) {
  if (any_bf16({&grad_loss, &pred, &target, &grad_pred, &grad_target})) {
    Widened wd(c);
    const Tensor grad_loss_ = wd.in(grad_loss), pred_ = wd.in(pred), target_ = wd.in(target),
                 grad_pred_ = wd.out(grad_pred, m == GradMode::Accumulate),
                 grad_target_ = wd.out(grad_target, m == GradMode::Accumulate);
    mse_backward(c, grad_loss_, pred_, target_, grad_pred_, grad_target_, m);
    return wd.finish();
  }
  if (!on_cuda(c)) return cpu::mse_backward(c, grad_loss, pred, target, grad_pred, grad_target, m);
  if constexpr (kCudaBuilt)
    return cuda::mse_backward(c, grad_loss, pred, target, grad_pred, grad_target, m);
  no_cuda("mse_backward");
}
inline void fill_normal(Context& c, uint64_t seed, uint64_t offset, double mean, double std,
                        const Tensor& y) {
  if (!on_cuda(c)) return cpu::fill_normal(c, seed, offset, mean, std, y);
  if constexpr (kCudaBuilt) return cuda::fill_normal(c, seed, offset, mean, std, y);
  no_cuda("fill_normal");
}
inline void fill_uniform_bits(Context& c, uint64_t seed, uint64_t offset, const Tensor& y) {
  if (!on_cuda(c)) return cpu::fill_uniform_bits(c, seed, offset, y);
  if constexpr (kCudaBuilt) return cuda::fill_uniform_bits(c, seed, offset, y);
  no_cuda("fill_uniform_bits");
}
inline void maxpool2d_forward(Context& c, const Pool2dParams& p, const Tensor& x, const Tensor& y,
                              const Tensor& argmax) {
  // Native on CUDA when x and y are both bf16 (kernels/pool2d_cuda.cu).
  if (any_bf16({&x, &y}) && !(kCudaBuilt && on_cuda(c) && x.dtype() == y.dtype())) {
    Widened wd(c);
    const Tensor x_ = wd.in(x), y_ = wd.out(y);
    maxpool2d_forward(c, p, x_, y_, argmax);
    return wd.finish();
  }
  if (!on_cuda(c)) return cpu::maxpool2d_forward(c, p, x, y, argmax);
  if constexpr (kCudaBuilt) return cuda::maxpool2d_forward(c, p, x, y, argmax);
  no_cuda("maxpool2d_forward");
}
inline void maxpool2d_backward(Context& c, const Pool2dParams& p, const Tensor& grad_y,
                               const Tensor& argmax, const Tensor& grad_x, GradMode m) {
  if (any_bf16({&grad_y, &grad_x})) {
    Widened wd(c);
    const Tensor grad_y_ = wd.in(grad_y), grad_x_ = wd.out(grad_x, m == GradMode::Accumulate);
    maxpool2d_backward(c, p, grad_y_, argmax, grad_x_, m);
    return wd.finish();
  }
  if (!on_cuda(c)) return cpu::maxpool2d_backward(c, p, grad_y, argmax, grad_x, m);
  if constexpr (kCudaBuilt) return cuda::maxpool2d_backward(c, p, grad_y, argmax, grad_x, m);
  no_cuda("maxpool2d_backward");
}
inline void avgpool2d_forward(Context& c, const Pool2dParams& p, const Tensor& x, const Tensor& y) {
  if (any_bf16({&x, &y})) {
    Widened wd(c);
    const Tensor x_ = wd.in(x), y_ = wd.out(y);
    avgpool2d_forward(c, p, x_, y_);
    return wd.finish();
  }
  if (!on_cuda(c)) return cpu::avgpool2d_forward(c, p, x, y);
  if constexpr (kCudaBuilt) return cuda::avgpool2d_forward(c, p, x, y);
  no_cuda("avgpool2d_forward");
}
inline void avgpool2d_backward(Context& c, const Pool2dParams& p, const Tensor& grad_y,
                               const Tensor& grad_x, GradMode m) {
  if (any_bf16({&grad_y, &grad_x})) {
    Widened wd(c);
    const Tensor grad_y_ = wd.in(grad_y), grad_x_ = wd.out(grad_x, m == GradMode::Accumulate);
    avgpool2d_backward(c, p, grad_y_, grad_x_, m);
    return wd.finish();
  }
  if (!on_cuda(c)) return cpu::avgpool2d_backward(c, p, grad_y, grad_x, m);
  if constexpr (kCudaBuilt) return cuda::avgpool2d_backward(c, p, grad_y, grad_x, m);
  no_cuda("avgpool2d_backward");
}
inline void sum_all_forward(Context& c, const Tensor& x, const Tensor& y) {
  if (any_bf16({&x, &y})) {
    Widened wd(c);
    const Tensor x_ = wd.in(x), y_ = wd.out(y);
    sum_all_forward(c, x_, y_);
    return wd.finish();
  }
  if (!on_cuda(c)) return cpu::sum_all_forward(c, x, y);
  if constexpr (kCudaBuilt) return cuda::sum_all_forward(c, x, y);
  no_cuda("sum_all_forward");
}
inline void sum_all_backward(Context& c, const Tensor& grad_y, const Tensor& grad_x, GradMode m) {
  if (any_bf16({&grad_y, &grad_x})) {
    Widened wd(c);
    const Tensor grad_y_ = wd.in(grad_y), grad_x_ = wd.out(grad_x, m == GradMode::Accumulate);
    sum_all_backward(c, grad_y_, grad_x_, m);
    return wd.finish();
  }
  if (!on_cuda(c)) return cpu::sum_all_backward(c, grad_y, grad_x, m);
  if constexpr (kCudaBuilt) return cuda::sum_all_backward(c, grad_y, grad_x, m);
  no_cuda("sum_all_backward");
}
inline void mean_all_forward(Context& c, const Tensor& x, const Tensor& y) {
  if (any_bf16({&x, &y})) {
    Widened wd(c);
    const Tensor x_ = wd.in(x), y_ = wd.out(y);
    mean_all_forward(c, x_, y_);
    return wd.finish();
  }
  if (!on_cuda(c)) return cpu::mean_all_forward(c, x, y);
  if constexpr (kCudaBuilt) return cuda::mean_all_forward(c, x, y);
  no_cuda("mean_all_forward");
}
inline void mean_all_backward(Context& c, const Tensor& grad_y, const Tensor& grad_x, GradMode m) {
  if (any_bf16({&grad_y, &grad_x})) {
    Widened wd(c);
    const Tensor grad_y_ = wd.in(grad_y), grad_x_ = wd.out(grad_x, m == GradMode::Accumulate);
    mean_all_backward(c, grad_y_, grad_x_, m);
    return wd.finish();
  }
  if (!on_cuda(c)) return cpu::mean_all_backward(c, grad_y, grad_x, m);
  if constexpr (kCudaBuilt) return cuda::mean_all_backward(c, grad_y, grad_x, m);
  no_cuda("mean_all_backward");
}
inline void sum_hw_forward(Context& c, const Tensor& x, const Tensor& y) {
  if (any_bf16({&x, &y})) {
    Widened wd(c);
    const Tensor x_ = wd.in(x), y_ = wd.out(y);
    sum_hw_forward(c, x_, y_);
    return wd.finish();
  }
  if (!on_cuda(c)) return cpu::sum_hw_forward(c, x, y);
  if constexpr (kCudaBuilt) return cuda::sum_hw_forward(c, x, y);
  no_cuda("sum_hw_forward");
}
inline void sum_hw_backward(Context& c, const Tensor& grad_y, const Tensor& grad_x, GradMode m) {
  if (any_bf16({&grad_y, &grad_x})) {
    Widened wd(c);
    const Tensor grad_y_ = wd.in(grad_y), grad_x_ = wd.out(grad_x, m == GradMode::Accumulate);
    sum_hw_backward(c, grad_y_, grad_x_, m);
    return wd.finish();
  }
  if (!on_cuda(c)) return cpu::sum_hw_backward(c, grad_y, grad_x, m);
  if constexpr (kCudaBuilt) return cuda::sum_hw_backward(c, grad_y, grad_x, m);
  no_cuda("sum_hw_backward");
}
inline void mean_hw_forward(Context& c, const Tensor& x, const Tensor& y) {
  if (any_bf16({&x, &y})) {
    Widened wd(c);
    const Tensor x_ = wd.in(x), y_ = wd.out(y);
    mean_hw_forward(c, x_, y_);
    return wd.finish();
  }
  if (!on_cuda(c)) return cpu::mean_hw_forward(c, x, y);
  if constexpr (kCudaBuilt) return cuda::mean_hw_forward(c, x, y);
  no_cuda("mean_hw_forward");
}
inline void mean_hw_backward(Context& c, const Tensor& grad_y, const Tensor& grad_x, GradMode m) {
  if (any_bf16({&grad_y, &grad_x})) {
    Widened wd(c);
    const Tensor grad_y_ = wd.in(grad_y), grad_x_ = wd.out(grad_x, m == GradMode::Accumulate);
    mean_hw_backward(c, grad_y_, grad_x_, m);
    return wd.finish();
  }
  if (!on_cuda(c)) return cpu::mean_hw_backward(c, grad_y, grad_x, m);
  if constexpr (kCudaBuilt) return cuda::mean_hw_backward(c, grad_y, grad_x, m);
  no_cuda("mean_hw_backward");
}
// Recording: mean and std of |x| per sample into column `column` of [B, T] tensors.
inline void abs_mean_std(Context& c, const Tensor& x, int64_t column, const Tensor& mean,
                         const Tensor& sd) {
  if (any_bf16({&x, &mean, &sd})) {
    Widened wd(c);
    const Tensor x_ = wd.in(x), mean_ = wd.out(mean, true), sd_ = wd.out(sd, true);
    abs_mean_std(c, x_, column, mean_, sd_);
    return wd.finish();
  }
  if (!on_cuda(c)) return cpu::abs_mean_std(c, x, column, mean, sd);
  if constexpr (kCudaBuilt) return cuda::abs_mean_std(c, x, column, mean, sd);
  no_cuda("abs_mean_std");
}
// DynVision's activity loss (kernels/activity.h): acc[b] += |s_b| / n (acc f64 [B]), and its
// gradient coef * d(|s_b| / n)/dy added to grad_y.
inline void activity_accumulate(Context& c, const Tensor& y, bool is_signed, const Tensor& acc) {
  if (any_bf16({&y})) {
    Widened wd(c);
    const Tensor y_ = wd.in(y);
    activity_accumulate(c, y_, is_signed, acc);
    return wd.finish();
  }
  if (!on_cuda(c)) return cpu::activity_accumulate(c, y, is_signed, acc);
  if constexpr (kCudaBuilt) return cuda::activity_accumulate(c, y, is_signed, acc);
  no_cuda("activity_accumulate");
}
inline void activity_seed(Context& c, const Tensor& y, double coef, bool is_signed,
                          const Tensor& grad_y) {
  if (any_bf16({&y, &grad_y})) {
    Widened wd(c);
    const Tensor y_ = wd.in(y), grad_y_ = wd.out(grad_y, true);
    activity_seed(c, y_, coef, is_signed, grad_y_);
    return wd.finish();
  }
  if (!on_cuda(c)) return cpu::activity_seed(c, y, coef, is_signed, grad_y);
  if constexpr (kCudaBuilt) return cuda::activity_seed(c, y, coef, is_signed, grad_y);
  no_cuda("activity_seed");
}
inline void resize_nearest_forward(Context& c, const Tensor& x, const Tensor& y) {
  if (any_bf16({&x, &y})) {
    Widened wd(c);
    const Tensor x_ = wd.in(x), y_ = wd.out(y);
    resize_nearest_forward(c, x_, y_);
    return wd.finish();
  }
  if (!on_cuda(c)) return cpu::resize_nearest_forward(c, x, y);
  if constexpr (kCudaBuilt) return cuda::resize_nearest_forward(c, x, y);
  no_cuda("resize_nearest_forward");
}
inline void resize_nearest_backward(Context& c, const Tensor& grad_y, const Tensor& grad_x,
                                    GradMode m) {
  if (any_bf16({&grad_y, &grad_x})) {
    Widened wd(c);
    const Tensor grad_y_ = wd.in(grad_y), grad_x_ = wd.out(grad_x, m == GradMode::Accumulate);
    resize_nearest_backward(c, grad_y_, grad_x_, m);
    return wd.finish();
  }
  if (!on_cuda(c)) return cpu::resize_nearest_backward(c, grad_y, grad_x, m);
  if constexpr (kCudaBuilt) return cuda::resize_nearest_backward(c, grad_y, grad_x, m);
  no_cuda("resize_nearest_backward");
}
inline void softplus_forward(Context& c, const Tensor& x, const Tensor& a, const Tensor& b,
                             const Tensor& y) {
  if (any_bf16({&x, &a, &b, &y})) {
    Widened wd(c);
    const Tensor x_ = wd.in(x), a_ = wd.in(a), b_ = wd.in(b), y_ = wd.out(y);
    softplus_forward(c, x_, a_, b_, y_);
    return wd.finish();
  }
  if (!on_cuda(c)) return cpu::softplus_forward(c, x, a, b, y);
  if constexpr (kCudaBuilt) return cuda::softplus_forward(c, x, a, b, y);
  no_cuda("softplus_forward");
}
inline void softplus_backward(Context& c, const Tensor& grad_y, const Tensor& x, const Tensor& a,
                              const Tensor& b, const Tensor& grad_x, const Tensor& grad_a,
                              const Tensor& grad_b, GradMode m) {
  if (any_bf16({&grad_y, &x, &a, &b, &grad_x, &grad_a, &grad_b})) {
    Widened wd(c);
    const Tensor grad_y_ = wd.in(grad_y), x_ = wd.in(x), a_ = wd.in(a), b_ = wd.in(b),
                 grad_x_ = wd.out(grad_x, m == GradMode::Accumulate),
                 grad_a_ = wd.out(grad_a, m == GradMode::Accumulate),
                 grad_b_ = wd.out(grad_b, m == GradMode::Accumulate);
    softplus_backward(c, grad_y_, x_, a_, b_, grad_x_, grad_a_, grad_b_, m);
    return wd.finish();
  }
  if (!on_cuda(c)) return cpu::softplus_backward(c, grad_y, x, a, b, grad_x, grad_a, grad_b, m);
  if constexpr (kCudaBuilt)
    return cuda::softplus_backward(c, grad_y, x, a, b, grad_x, grad_a, grad_b, m);
  no_cuda("softplus_backward");
}
inline void supralinearity_forward(Context& c, const SupralinearityParams& p, const Tensor& x,
                                   const Tensor& y) {
  if (any_bf16({&x, &y})) {
    Widened wd(c);
    const Tensor x_ = wd.in(x), y_ = wd.out(y);
    supralinearity_forward(c, p, x_, y_);
    return wd.finish();
  }
  if (!on_cuda(c)) return cpu::supralinearity_forward(c, p, x, y);
  if constexpr (kCudaBuilt) return cuda::supralinearity_forward(c, p, x, y);
  no_cuda("supralinearity_forward");
}
inline void supralinearity_backward(Context& c, const SupralinearityParams& p, const Tensor& grad_y,
                                    const Tensor& x, const Tensor& grad_x, GradMode m) {
  if (any_bf16({&grad_y, &x, &grad_x})) {
    Widened wd(c);
    const Tensor grad_y_ = wd.in(grad_y), x_ = wd.in(x),
                 grad_x_ = wd.out(grad_x, m == GradMode::Accumulate);
    supralinearity_backward(c, p, grad_y_, x_, grad_x_, m);
    return wd.finish();
  }
  if (!on_cuda(c)) return cpu::supralinearity_backward(c, p, grad_y, x, grad_x, m);
  if constexpr (kCudaBuilt) return cuda::supralinearity_backward(c, p, grad_y, x, grad_x, m);
  no_cuda("supralinearity_backward");
}

inline void mul_one_plus_tanh(Context& c, const Tensor& x, const Tensor& g, const Tensor& y) {
  if (any_bf16({&x, &g, &y})) {
    Widened wd(c);
    const Tensor x_ = wd.in(x), g_ = wd.in(g), y_ = wd.out(y);
    mul_one_plus_tanh(c, x_, g_, y_);
    return wd.finish();
  }
  if (!on_cuda(c)) return cpu::mul_one_plus_tanh(c, x, g, y);
  if constexpr (kCudaBuilt) return cuda::mul_one_plus_tanh(c, x, g, y);
  no_cuda("mul_one_plus_tanh");
}
inline void mul_one_plus_tanh_backward(Context& c, const Tensor& grad_y, const Tensor& x,
                                       const Tensor& g, const Tensor& grad_x, const Tensor& grad_g,
                                       GradMode m) {
  if (any_bf16({&grad_y, &x, &g, &grad_x, &grad_g})) {
    Widened wd(c);
    const Tensor grad_y_ = wd.in(grad_y), x_ = wd.in(x), g_ = wd.in(g),
                 grad_x_ = wd.out(grad_x, m == GradMode::Accumulate),
                 grad_g_ = wd.out(grad_g, m == GradMode::Accumulate);
    mul_one_plus_tanh_backward(c, grad_y_, x_, g_, grad_x_, grad_g_, m);
    return wd.finish();
  }
  if (!on_cuda(c)) return cpu::mul_one_plus_tanh_backward(c, grad_y, x, g, grad_x, grad_g, m);
  if constexpr (kCudaBuilt)
    return cuda::mul_one_plus_tanh_backward(c, grad_y, x, g, grad_x, grad_g, m);
  no_cuda("mul_one_plus_tanh_backward");
}
inline void layer_to_sheet_forward(Context& c, const LocalSheetMap& m, const Tensor& x,
                                   const Tensor& plane) {
  if (any_bf16({&x, &plane})) {
    Widened wd(c);
    const Tensor x_ = wd.in(x), plane_ = wd.out(plane, true);
    layer_to_sheet_forward(c, m, x_, plane_);
    return wd.finish();
  }
  if (!on_cuda(c)) return cpu::layer_to_sheet_forward(c, m, x, plane);
  if constexpr (kCudaBuilt) return cuda::layer_to_sheet_forward(c, m, x, plane);
  no_cuda("layer_to_sheet_forward");
}
inline void layer_to_sheet_backward(Context& c, const LocalSheetMap& m, const Tensor& grad_plane,
                                    const Tensor& grad_x, GradMode mode) {
  if (any_bf16({&grad_plane, &grad_x})) {
    Widened wd(c);
    const Tensor grad_plane_ = wd.in(grad_plane), grad_x_ = wd.out(grad_x, true);
    layer_to_sheet_backward(c, m, grad_plane_, grad_x_, mode);
    return wd.finish();
  }
  if (!on_cuda(c)) return cpu::layer_to_sheet_backward(c, m, grad_plane, grad_x, mode);
  if constexpr (kCudaBuilt) return cuda::layer_to_sheet_backward(c, m, grad_plane, grad_x, mode);
  no_cuda("layer_to_sheet_backward");
}
inline void sheet_to_layer_forward(Context& c, const LocalSheetMap& m, const Tensor& plane,
                                   const Tensor& y) {
  if (any_bf16({&plane, &y})) {
    Widened wd(c);
    const Tensor plane_ = wd.in(plane), y_ = wd.out(y, true);
    sheet_to_layer_forward(c, m, plane_, y_);
    return wd.finish();
  }
  if (!on_cuda(c)) return cpu::sheet_to_layer_forward(c, m, plane, y);
  if constexpr (kCudaBuilt) return cuda::sheet_to_layer_forward(c, m, plane, y);
  no_cuda("sheet_to_layer_forward");
}
inline void sheet_to_layer_backward(Context& c, const LocalSheetMap& m, const Tensor& grad_y,
                                    const Tensor& grad_plane, GradMode mode) {
  if (any_bf16({&grad_y, &grad_plane})) {
    Widened wd(c);
    const Tensor grad_y_ = wd.in(grad_y), grad_plane_ = wd.out(grad_plane, true);
    sheet_to_layer_backward(c, m, grad_y_, grad_plane_, mode);
    return wd.finish();
  }
  if (!on_cuda(c)) return cpu::sheet_to_layer_backward(c, m, grad_y, grad_plane, mode);
  if constexpr (kCudaBuilt) return cuda::sheet_to_layer_backward(c, m, grad_y, grad_plane, mode);
  no_cuda("sheet_to_layer_backward");
}
inline void leak_forward(Context& c, const LeakParams& p, const Tensor& u, const Tensor& h,
                         const Tensor& tau, const Tensor& x) {
  if (any_bf16({&u, &h, &tau, &x})) {
    Widened wd(c);
    const Tensor u_ = wd.in(u), h_ = wd.in(h), tau_ = wd.in(tau), x_ = wd.out(x);
    leak_forward(c, p, u_, h_, tau_, x_);
    return wd.finish();
  }
  if (!on_cuda(c)) return cpu::leak_forward(c, p, u, h, tau, x);
  if constexpr (kCudaBuilt) return cuda::leak_forward(c, p, u, h, tau, x);
  no_cuda("leak_forward");
}

inline void leak_backward(Context& c, const LeakParams& p, const Tensor& grad_x, const Tensor& u,
                          const Tensor& h, const Tensor& tau, const Tensor& grad_u,
                          const Tensor& grad_h, const Tensor& grad_tau, GradMode m) {
  if (any_bf16({&grad_x, &u, &h, &tau, &grad_u, &grad_h, &grad_tau})) {
    Widened wd(c);
    const Tensor grad_x_ = wd.in(grad_x), u_ = wd.in(u), h_ = wd.in(h), tau_ = wd.in(tau),
                 grad_u_ = wd.out(grad_u, m == GradMode::Accumulate),
                 grad_h_ = wd.out(grad_h, m == GradMode::Accumulate),
                 grad_tau_ = wd.out(grad_tau, m == GradMode::Accumulate);
    leak_backward(c, p, grad_x_, u_, h_, tau_, grad_u_, grad_h_, grad_tau_, m);
    return wd.finish();
  }
  if (!on_cuda(c)) return cpu::leak_backward(c, p, grad_x, u, h, tau, grad_u, grad_h, grad_tau, m);
  if constexpr (kCudaBuilt)
    return cuda::leak_backward(c, p, grad_x, u, h, tau, grad_u, grad_h, grad_tau, m);
  no_cuda("leak_backward");
}
inline void leak_slope(Context& c, const Tensor& u, const Tensor& r, const Tensor& tau,
                       const Tensor& k) {
  if (any_bf16({&u, &r, &tau, &k})) {
    Widened wd(c);
    const Tensor u_ = wd.in(u), r_ = wd.in(r), tau_ = wd.in(tau), k_ = wd.out(k);
    leak_slope(c, u_, r_, tau_, k_);
    return wd.finish();
  }
  if (!on_cuda(c)) return cpu::leak_slope(c, u, r, tau, k);
  if constexpr (kCudaBuilt) return cuda::leak_slope(c, u, r, tau, k);
  no_cuda("leak_slope");
}
inline void leak_slope_backward(Context& c, const Tensor& grad_k, const Tensor& u, const Tensor& r,
                                const Tensor& tau, const Tensor& grad_u, const Tensor& grad_r,
                                const Tensor& grad_tau, GradMode m) {
  if (any_bf16({&grad_k, &u, &r, &tau, &grad_u, &grad_r, &grad_tau})) {
    Widened wd(c);
    const Tensor grad_k_ = wd.in(grad_k), u_ = wd.in(u), r_ = wd.in(r), tau_ = wd.in(tau),
                 grad_u_ = wd.out(grad_u, m == GradMode::Accumulate),
                 grad_r_ = wd.out(grad_r, m == GradMode::Accumulate),
                 grad_tau_ = wd.out(grad_tau, m == GradMode::Accumulate);
    leak_slope_backward(c, grad_k_, u_, r_, tau_, grad_u_, grad_r_, grad_tau_, m);
    return wd.finish();
  }
  if (!on_cuda(c))
    return cpu::leak_slope_backward(c, grad_k, u, r, tau, grad_u, grad_r, grad_tau, m);
  if constexpr (kCudaBuilt)
    return cuda::leak_slope_backward(c, grad_k, u, r, tau, grad_u, grad_r, grad_tau, m);
  no_cuda("leak_slope_backward");
}
// The fused step tail (kernels/leak_tail.h): drive sum, leak step, ReLU, supralinearity.
inline void leak_tail_forward(Context& c, const LeakTailParams& p, const LeakTailTerms& terms,
                              const Tensor& h, const Tensor& tau, const Tensor& x,
                              const Tensor& r) {
  if (terms.size() <= LeakTailTerms::kMax &&
      (any_bf16({&h, &tau, &x, &r}) || any_bf16_terms(terms)) &&
      !leak_tail_native_bf16(c, terms, h, tau, x, r)) {
    Widened wd(c);
    Tensor wt[LeakTailTerms::kMax];
    LeakTailTerms terms_;
    for (int i = 0; i < terms.size(); ++i) {
      wt[i] = wd.in(terms[i]);
      terms_.push(wt[i]);
    }
    const Tensor h_ = wd.in(h), tau_ = wd.in(tau), x_ = wd.out(x), r_ = wd.out(r);
    leak_tail_forward(c, p, terms_, h_, tau_, x_, r_);
    return wd.finish();
  }
  if (!on_cuda(c)) return cpu::leak_tail_forward(c, p, terms, h, tau, x, r);
  if constexpr (kCudaBuilt) return cuda::leak_tail_forward(c, p, terms, h, tau, x, r);
  no_cuda("leak_tail_forward");
}
inline void leak_tail_backward(Context& c, const LeakTailParams& p, const Tensor& grad_r,
                               const Tensor& grad_x, const LeakTailTerms& terms, const Tensor& h,
                               const Tensor& tau, const Tensor& grad_u, const Tensor& grad_h,
                               const Tensor& grad_tau, GradMode m) {
  if (terms.size() <= LeakTailTerms::kMax &&
      (any_bf16({&grad_r, &grad_x, &h, &tau, &grad_u, &grad_h, &grad_tau}) ||
       any_bf16_terms(terms))) {
    Widened wd(c);
    Tensor wt[LeakTailTerms::kMax];
    LeakTailTerms terms_;
    for (int i = 0; i < terms.size(); ++i) {
      wt[i] = wd.in(terms[i]);
      terms_.push(wt[i]);
    }
    const bool acc = m == GradMode::Accumulate;
    const Tensor grad_r_ = wd.in(grad_r), grad_x_ = wd.in(grad_x), h_ = wd.in(h), tau_ = wd.in(tau),
                 grad_u_ = wd.out(grad_u, acc), grad_h_ = wd.out(grad_h, acc),
                 grad_tau_ = wd.out(grad_tau, acc);
    leak_tail_backward(c, p, grad_r_, grad_x_, terms_, h_, tau_, grad_u_, grad_h_, grad_tau_, m);
    return wd.finish();
  }
  if (!on_cuda(c))
    return cpu::leak_tail_backward(c, p, grad_r, grad_x, terms, h, tau, grad_u, grad_h, grad_tau,
                                   m);
  if constexpr (kCudaBuilt)
    return cuda::leak_tail_backward(c, p, grad_r, grad_x, terms, h, tau, grad_u, grad_h, grad_tau,
                                    m);
  no_cuda("leak_tail_backward");
}

// Repeated input frames (kernels/frames.h): flags i32 [idle_steps + T], 1 where every sample's
// frame equals the previous step's bit for bit (the idle frame: idle_value in the input's dtype).
inline void repeated_frames(Context& c, const Tensor& input, int64_t idle_steps, double idle_value,
                            const Tensor& flags) {
  if (!on_cuda(c)) return cpu::repeated_frames(c, input, idle_steps, idle_value, flags);
  if constexpr (kCudaBuilt) return cuda::repeated_frames(c, input, idle_steps, idle_value, flags);
  no_cuda("repeated_frames");
}

// Additive Gaussian noise (kernels/noise.h): reserves numel indices of the context's stream.
inline void gaussian_noise_forward(Context& c, const NoiseParams& p, const Tensor& x,
                                   const Tensor& y) {
  if (!p.training || p.sigma == 0.0) {
    if (x.raw() != y.raw()) scale(c, 1.0, x, y);
    return;
  }
  if (any_bf16({&x, &y})) {
    Widened wd(c);
    const Tensor x_ = wd.in(x), y_ = wd.out(y);
    gaussian_noise_forward(c, p, x_, y_);
    return wd.finish();
  }
  const uint64_t offset = c.rng().advance(uint64_t(x.numel()));
  if (!on_cuda(c)) return cpu::add_normal(c, c.rng().seed(), offset, p.sigma, x, y);
  if constexpr (kCudaBuilt) return cuda::add_normal(c, c.rng().seed(), offset, p.sigma, x, y);
  no_cuda("gaussian_noise_forward");
}
// grad_x = grad_y (overwrite) or grad_x += grad_y.
inline void gaussian_noise_backward(Context& c, const Tensor& grad_y, const Tensor& grad_x,
                                    GradMode m) {
  if (m == GradMode::Accumulate)
    axpy(c, 1.0, grad_y, grad_x);
  else
    scale(c, 1.0, grad_y, grad_x);
}

// Optimiser updates (kernels/optim.h), in place on param and the state tensors.
inline void sgd_step(Context& c, const SgdParams& p, const Tensor& param, const Tensor& grad,
                     const Tensor& momentum_buf) {
  if (!on_cuda(c)) return cpu::sgd_step(c, p, param, grad, momentum_buf);
  if constexpr (kCudaBuilt) return cuda::sgd_step(c, p, param, grad, momentum_buf);
  no_cuda("sgd_step");
}
inline void adam_step(Context& c, const AdamParams& p, const Tensor& param, const Tensor& grad,
                      const Tensor& exp_avg, const Tensor& exp_avg_sq) {
  if (!on_cuda(c)) return cpu::adam_step(c, p, param, grad, exp_avg, exp_avg_sq);
  if constexpr (kCudaBuilt) return cuda::adam_step(c, p, param, grad, exp_avg, exp_avg_sq);
  no_cuda("adam_step");
}
inline double sum_squares(Context& c, const Tensor& x) {
  if (!on_cuda(c)) return cpu::sum_squares(c, x);
  if constexpr (kCudaBuilt) return cuda::sum_squares(c, x);
  no_cuda("sum_squares");
}

}  // namespace dynsim::ops
