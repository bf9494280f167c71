// The one device switch: ops::<op>(ctx, ...) runs the CPU twin cpu::<op> or the CUDA kernel
// cuda::<op> according to the context's device. Models, solvers and the scheduler call only
// these. An op without a CUDA implementation in this build throws NotImplemented naming itself
// ("<op>: no CUDA implementation in this build") when called on a CUDA context.
//
// Contents: every ops:: function, by the kernels/ header declaring its cpu:: and cuda:: twins.
// Part 1 gives each plain op one line naming it (cpu::<op> and cuda::<op> take the same
// arguments); the ops marked [2] have more logic and are written out in part 2.
//   activity.h        activity_accumulate, activity_seed
//   cast.h            cast
//   conv2d.h          conv2d_forward [2] (cuDNN's native bf16 form, refusals), conv2d_backward
//   elementwise.h     add, mul, mul_backward, axpy, scale, fill, relu_forward, relu_backward,
//                     mul_one_plus_tanh, mul_one_plus_tanh_backward
//   frames.h          repeated_frames
//   leak.h            leak_forward, leak_backward, leak_slope, leak_slope_backward
//   leak_tail.h       leak_tail_forward [2] (native bf16 form), leak_tail_backward [2] (the terms)
//   linear.h          linear_forward, linear_backward
//   local_sheet.h     layer_to_sheet_forward, layer_to_sheet_backward, sheet_to_layer_forward,
//                     sheet_to_layer_backward
//   losses.h          cross_entropy_forward, cross_entropy_backward, poisson_nll_forward,
//                     poisson_nll_backward, mse_forward, mse_backward
//   noise.h           fill_normal, fill_uniform_bits,
//                     gaussian_noise_forward [2] (cpu::add_normal / cuda::add_normal),
//                     gaussian_noise_backward [2] (ops::axpy or ops::scale)
//   optim.h           sgd_step, adam_step, sum_squares
//   pool2d.h          maxpool2d_forward [2] (native bf16 form), maxpool2d_backward,
//                     avgpool2d_forward, avgpool2d_backward
//   reduce.h          sum_all_forward, sum_all_backward, mean_all_forward, mean_all_backward,
//                     sum_hw_forward, sum_hw_backward, mean_hw_forward, mean_hw_backward,
//                     abs_mean_std
//   resize.h          resize_nearest_forward, resize_nearest_backward
//   softplus.h        softplus_forward, softplus_backward
//   supralinearity.h  supralinearity_forward, supralinearity_backward
// Helpers: on_cuda, no_cuda, kCudaBuilt; any_bf16_terms, leak_tail_native_bf16,
// Conv2dBf16Refusal, conv2d_native_bf16 (part 2).
#pragma once
#include <string>
#include <tuple>

#include "kernels/activity.h"
#include "kernels/bf16_widen.h"
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

// bf16 storage (kernels/bf16_widen.h): an op given a bf16 operand (forward or backward) runs on
// f32 copies of its bf16 operands and rounds its bf16 outputs once (an accumulating gradient is
// widened first, so grad += g is rounded once too); f32 operands (parameters and their
// gradients in bf16 training, tau) are used as they are. Native CUDA forms are in part 2.
// DYNSIM_DISPATCH marks each tensor operand with its role; unmarked arguments pass as they are.
namespace arg {
struct Operand {
  const Tensor& t;
  bool written;  // widened with Widened::out (else Widened::in)
  bool read;     // with its values (an input, or an output the op reads first)
  operator const Tensor&() const { return t; }  // what cpu:: and cuda:: get
};
// The roles: an input; an output, written only; an output the op reads first (y += ...); a
// gradient output, read first when m accumulates.
inline Operand in(const Tensor& t) {
  return {t, false, true};
}
inline Operand out(const Tensor& t) {
  return {t, true, false};
}
inline Operand inout(const Tensor& t) {
  return {t, true, true};
}
inline Operand grad(const Tensor& t, GradMode m) {
  return {t, true, m == GradMode::Accumulate};
}

inline bool is_bf16(const Operand& o) {
  return o.t.defined() && o.t.dtype() == DType::BF16;
}
template <class T>
constexpr bool is_bf16(const T&) {
  return false;
}
template <class... A>
bool any_bf16_operand(const A&... a) {
  return (is_bf16(a) || ...);
}

inline Tensor widen(Widened& w, const Operand& o) {
  return o.written ? w.out(o.t, o.read) : w.in(o.t);
}
template <class T>
const T& widen(Widened&, const T& v) {
  return v;
}

// op(widened arguments...), then the bf16 outputs rounded. Operands are widened left to right
// (a braced list is evaluated in order), so each keeps its Widened slot.
template <class Op, class... A>
void on_f32_copies(Context& c, Op&& op, const A&... a) {
  Widened w(c);
  const std::tuple<decltype(widen(w, a))...> copies{widen(w, a)...};
  std::apply(op, copies);
  w.finish();
}
}  // namespace arg

// The switch, as the body (or the tail) of an op whose context parameter is `c`: cpu::op on a
// CPU context, cuda::op on a CUDA one in a CUDA build, else no_cuda("op"). The cuda:: call is
// type-checked in every build (a discarded `if constexpr` outside a template) and linked only
// in CUDA builds.
#define DYNSIM_ON_DEVICE(op, ...)                            \
  if (!on_cuda(c)) return cpu::op(c, __VA_ARGS__);           \
  if constexpr (kCudaBuilt) return cuda::op(c, __VA_ARGS__); \
  no_cuda(#op)

// The same, after running ops::op on f32 copies when an operand marked in/out/inout/grad is bf16
// (the markers of ops::arg, visible in the op's body through the macro's using-directive).
#define DYNSIM_DISPATCH(op, ...)                                      \
  using namespace arg;                                                \
  if (any_bf16_operand(__VA_ARGS__))                                  \
    return on_f32_copies(                                             \
        c, [&](const auto&... a) { ops::op(c, a...); }, __VA_ARGS__); \
  DYNSIM_ON_DEVICE(op, __VA_ARGS__)

// ---- Part 1: plain ops, by header -------------------------------------------------------------

// activity.h, DynVision's activity loss: acc[b] += |s_b| / n (acc f64 [B]), and its gradient
// coef * d(|s_b| / n)/dy added to grad_y.
inline void activity_accumulate(Context& c, const Tensor& y, bool is_signed, const Tensor& acc) {
  DYNSIM_DISPATCH(activity_accumulate, in(y), is_signed, acc);
}
inline void activity_seed(Context& c, const Tensor& y, double coef, bool is_signed,
                          const Tensor& grad_y) {
  DYNSIM_DISPATCH(activity_seed, in(y), coef, is_signed, inout(grad_y));
}

// cast.h: y = x converted between f32, f64 and bf16 (what the bf16 copies are made with).
inline void cast(Context& c, const Tensor& x, const Tensor& y) {
  DYNSIM_ON_DEVICE(cast, x, y);
}

// conv2d.h (conv2d_forward: part 2)
inline void conv2d_backward(Context& c, const Conv2dParams& p, const Tensor& grad_y,
                            const Tensor& x, const Tensor& w, const Tensor& grad_x,
                            const Tensor& grad_w, const Tensor& grad_b, GradMode m) {
  DYNSIM_DISPATCH(conv2d_backward, p, in(grad_y), in(x), in(w), grad(grad_x, m), grad(grad_w, m),
                  grad(grad_b, m), m);
}

// elementwise.h
inline void add(Context& c, const Tensor& a, const Tensor& b, const Tensor& y) {
  DYNSIM_DISPATCH(add, in(a), in(b), out(y));
}
inline void mul(Context& c, const Tensor& a, const Tensor& b, const Tensor& y) {
  DYNSIM_DISPATCH(mul, in(a), in(b), out(y));
}
inline void mul_backward(Context& c, const Tensor& grad_y, const Tensor& a, const Tensor& b,
                         const Tensor& grad_a, const Tensor& grad_b, GradMode m) {
  DYNSIM_DISPATCH(mul_backward, in(grad_y), in(a), in(b), grad(grad_a, m), grad(grad_b, m), m);
}
inline void axpy(Context& c, double alpha, const Tensor& x, const Tensor& y) {
  DYNSIM_DISPATCH(axpy, alpha, in(x), inout(y));
}
inline void scale(Context& c, double alpha, const Tensor& x, const Tensor& y) {
  DYNSIM_DISPATCH(scale, alpha, in(x), out(y));
}
inline void fill(Context& c, double value, const Tensor& y) {
  DYNSIM_DISPATCH(fill, value, out(y));
}
inline void relu_forward(Context& c, const Tensor& x, const Tensor& y) {
  DYNSIM_DISPATCH(relu_forward, in(x), out(y));
}
inline void relu_backward(Context& c, const Tensor& x, const Tensor& grad_y, const Tensor& grad_x,
                          GradMode m) {
  DYNSIM_DISPATCH(relu_backward, in(x), in(grad_y), grad(grad_x, m), m);
}
inline void mul_one_plus_tanh(Context& c, const Tensor& x, const Tensor& g, const Tensor& y) {
  DYNSIM_DISPATCH(mul_one_plus_tanh, in(x), in(g), out(y));
}
inline void mul_one_plus_tanh_backward(Context& c, const Tensor& grad_y, const Tensor& x,
                                       const Tensor& g, const Tensor& grad_x, const Tensor& grad_g,
                                       GradMode m) {
  DYNSIM_DISPATCH(mul_one_plus_tanh_backward, in(grad_y), in(x), in(g), grad(grad_x, m),
                  grad(grad_g, m), m);
}

// frames.h: flags i32 [idle_steps + T], 1 where every sample's frame equals the previous step's
// bit for bit (the idle frame: idle_value in the input's dtype).
inline void repeated_frames(Context& c, const Tensor& input, int64_t idle_steps, double idle_value,
                            const Tensor& flags) {
  DYNSIM_ON_DEVICE(repeated_frames, input, idle_steps, idle_value, flags);
}

// leak.h
inline void leak_forward(Context& c, const LeakParams& p, const Tensor& u, const Tensor& h,
                         const Tensor& tau, const Tensor& x) {
  DYNSIM_DISPATCH(leak_forward, p, in(u), in(h), in(tau), out(x));
}
inline void leak_backward(Context& c, const LeakParams& p, const Tensor& grad_x, const Tensor& u,
                          const Tensor& h, const Tensor& tau, const Tensor& grad_u,
                          const Tensor& grad_h, const Tensor& grad_tau, GradMode m) {
  DYNSIM_DISPATCH(leak_backward, p, in(grad_x), in(u), in(h), in(tau), grad(grad_u, m),
                  grad(grad_h, m), grad(grad_tau, m), m);
}
inline void leak_slope(Context& c, const Tensor& u, const Tensor& r, const Tensor& tau,
                       const Tensor& k) {
  DYNSIM_DISPATCH(leak_slope, in(u), in(r), in(tau), out(k));
}
inline void leak_slope_backward(Context& c, const Tensor& grad_k, const Tensor& u, const Tensor& r,
                                const Tensor& tau, const Tensor& grad_u, const Tensor& grad_r,
                                const Tensor& grad_tau, GradMode m) {
  DYNSIM_DISPATCH(leak_slope_backward, in(grad_k), in(u), in(r), in(tau), grad(grad_u, m),
                  grad(grad_r, m), grad(grad_tau, m), m);
}

// linear.h
inline void linear_forward(Context& c, const Tensor& x, const Tensor& w, const Tensor& b,
                           const Tensor& y) {
  DYNSIM_DISPATCH(linear_forward, in(x), in(w), in(b), out(y));
}
inline void linear_backward(Context& c, const Tensor& grad_y, const Tensor& x, const Tensor& w,
                            const Tensor& grad_x, const Tensor& grad_w, const Tensor& grad_b,
                            GradMode m) {
  DYNSIM_DISPATCH(linear_backward, in(grad_y), in(x), in(w), grad(grad_x, m), grad(grad_w, m),
                  grad(grad_b, m), m);
}

// local_sheet.h (every output read first: the maps write only part of it)
inline void layer_to_sheet_forward(Context& c, const LocalSheetMap& m, const Tensor& x,
                                   const Tensor& plane) {
  DYNSIM_DISPATCH(layer_to_sheet_forward, m, in(x), inout(plane));
}
inline void layer_to_sheet_backward(Context& c, const LocalSheetMap& m, const Tensor& grad_plane,
                                    const Tensor& grad_x, GradMode mode) {
  DYNSIM_DISPATCH(layer_to_sheet_backward, m, in(grad_plane), inout(grad_x), mode);
}
inline void sheet_to_layer_forward(Context& c, const LocalSheetMap& m, const Tensor& plane,
                                   const Tensor& y) {
  DYNSIM_DISPATCH(sheet_to_layer_forward, m, in(plane), inout(y));
}
inline void sheet_to_layer_backward(Context& c, const LocalSheetMap& m, const Tensor& grad_y,
                                    const Tensor& grad_plane, GradMode mode) {
  DYNSIM_DISPATCH(sheet_to_layer_backward, m, in(grad_y), inout(grad_plane), mode);
}

// losses.h
inline void cross_entropy_forward(Context& c, const CrossEntropyParams& p, const Tensor& logits,
                                  const Tensor& labels, const Tensor& loss) {
  DYNSIM_DISPATCH(cross_entropy_forward, p, in(logits), labels, out(loss));
}
inline void cross_entropy_backward(Context& c, const CrossEntropyParams& p, const Tensor& grad_loss,
                                   const Tensor& logits, const Tensor& labels,
                                   const Tensor& grad_logits, GradMode m) {
  DYNSIM_DISPATCH(cross_entropy_backward, p, in(grad_loss), in(logits), labels,
                  grad(grad_logits, m), m);
}
inline void poisson_nll_forward(Context& c, const PoissonNllParams& p, const Tensor& pred,
                                const Tensor& target, const Tensor& loss) {
  DYNSIM_DISPATCH(poisson_nll_forward, p, in(pred), in(target), out(loss));
}
inline void poisson_nll_backward(Context& c, const PoissonNllParams& p, const Tensor& grad_loss,
                                 const Tensor& pred, const Tensor& target, const Tensor& grad_pred,
                                 GradMode m) {
  DYNSIM_DISPATCH(poisson_nll_backward, p, in(grad_loss), in(pred), in(target), grad(grad_pred, m),
                  m);
}
inline void mse_forward(Context& c, const Tensor& pred, const Tensor& target, const Tensor& loss) {
  DYNSIM_DISPATCH(mse_forward, in(pred), in(target), out(loss));
}
inline void mse_backward(Context& c, const Tensor& grad_loss, const Tensor& pred,
                         const Tensor& target, const Tensor& grad_pred, const Tensor& grad_target,
                         GradMode m) {
  DYNSIM_DISPATCH(mse_backward, in(grad_loss), in(pred), in(target), grad(grad_pred, m),
                  grad(grad_target, m), m);
}

// noise.h (gaussian_noise_forward, gaussian_noise_backward: part 2)
inline void fill_normal(Context& c, uint64_t seed, uint64_t offset, double mean, double std,
                        const Tensor& y) {
  DYNSIM_ON_DEVICE(fill_normal, seed, offset, mean, std, y);
}
inline void fill_uniform_bits(Context& c, uint64_t seed, uint64_t offset, const Tensor& y) {
  DYNSIM_ON_DEVICE(fill_uniform_bits, seed, offset, y);
}

// optim.h: optimiser updates, in place on param and the state tensors.
inline void sgd_step(Context& c, const SgdParams& p, const Tensor& param, const Tensor& grad,
                     const Tensor& momentum_buf) {
  DYNSIM_ON_DEVICE(sgd_step, p, param, grad, momentum_buf);
}
inline void adam_step(Context& c, const AdamParams& p, const Tensor& param, const Tensor& grad,
                      const Tensor& exp_avg, const Tensor& exp_avg_sq) {
  DYNSIM_ON_DEVICE(adam_step, p, param, grad, exp_avg, exp_avg_sq);
}
inline double sum_squares(Context& c, const Tensor& x) {
  DYNSIM_ON_DEVICE(sum_squares, x);
}

// pool2d.h (maxpool2d_forward: part 2)
inline void maxpool2d_backward(Context& c, const Pool2dParams& p, const Tensor& grad_y,
                               const Tensor& argmax, const Tensor& grad_x, GradMode m) {
  DYNSIM_DISPATCH(maxpool2d_backward, p, in(grad_y), argmax, grad(grad_x, m), m);
}
inline void avgpool2d_forward(Context& c, const Pool2dParams& p, const Tensor& x, const Tensor& y) {
  DYNSIM_DISPATCH(avgpool2d_forward, p, in(x), out(y));
}
inline void avgpool2d_backward(Context& c, const Pool2dParams& p, const Tensor& grad_y,
                               const Tensor& grad_x, GradMode m) {
  DYNSIM_DISPATCH(avgpool2d_backward, p, in(grad_y), grad(grad_x, m), m);
}

// reduce.h
inline void sum_all_forward(Context& c, const Tensor& x, const Tensor& y) {
  DYNSIM_DISPATCH(sum_all_forward, in(x), out(y));
}
inline void sum_all_backward(Context& c, const Tensor& grad_y, const Tensor& grad_x, GradMode m) {
  DYNSIM_DISPATCH(sum_all_backward, in(grad_y), grad(grad_x, m), m);
}
inline void mean_all_forward(Context& c, const Tensor& x, const Tensor& y) {
  DYNSIM_DISPATCH(mean_all_forward, in(x), out(y));
}
inline void mean_all_backward(Context& c, const Tensor& grad_y, const Tensor& grad_x, GradMode m) {
  DYNSIM_DISPATCH(mean_all_backward, in(grad_y), grad(grad_x, m), m);
}
inline void sum_hw_forward(Context& c, const Tensor& x, const Tensor& y) {
  DYNSIM_DISPATCH(sum_hw_forward, in(x), out(y));
}
inline void sum_hw_backward(Context& c, const Tensor& grad_y, const Tensor& grad_x, GradMode m) {
  DYNSIM_DISPATCH(sum_hw_backward, in(grad_y), grad(grad_x, m), m);
}
inline void mean_hw_forward(Context& c, const Tensor& x, const Tensor& y) {
  DYNSIM_DISPATCH(mean_hw_forward, in(x), out(y));
}
inline void mean_hw_backward(Context& c, const Tensor& grad_y, const Tensor& grad_x, GradMode m) {
  DYNSIM_DISPATCH(mean_hw_backward, in(grad_y), grad(grad_x, m), m);
}
// Recording: mean and std of |x| per sample into column `column` of [B, T] tensors.
inline void abs_mean_std(Context& c, const Tensor& x, int64_t column, const Tensor& mean,
                         const Tensor& sd) {
  DYNSIM_DISPATCH(abs_mean_std, in(x), column, inout(mean), inout(sd));
}

// resize.h
inline void resize_nearest_forward(Context& c, const Tensor& x, const Tensor& y) {
  DYNSIM_DISPATCH(resize_nearest_forward, in(x), out(y));
}
inline void resize_nearest_backward(Context& c, const Tensor& grad_y, const Tensor& grad_x,
                                    GradMode m) {
  DYNSIM_DISPATCH(resize_nearest_backward, in(grad_y), grad(grad_x, m), m);
}

// softplus.h
inline void softplus_forward(Context& c, const Tensor& x, const Tensor& a, const Tensor& b,
                             const Tensor& y) {
  DYNSIM_DISPATCH(softplus_forward, in(x), in(a), in(b), out(y));
}
inline void softplus_backward(Context& c, const Tensor& grad_y, const Tensor& x, const Tensor& a,
                              const Tensor& b, const Tensor& grad_x, const Tensor& grad_a,
                              const Tensor& grad_b, GradMode m) {
  DYNSIM_DISPATCH(softplus_backward, in(grad_y), in(x), in(a), in(b), grad(grad_x, m),
                  grad(grad_a, m), grad(grad_b, m), m);
}

// supralinearity.h
inline void supralinearity_forward(Context& c, const SupralinearityParams& p, const Tensor& x,
                                   const Tensor& y) {
  DYNSIM_DISPATCH(supralinearity_forward, p, in(x), out(y));
}
inline void supralinearity_backward(Context& c, const SupralinearityParams& p, const Tensor& grad_y,
                                    const Tensor& x, const Tensor& grad_x, GradMode m) {
  DYNSIM_DISPATCH(supralinearity_backward, p, in(grad_y), in(x), grad(grad_x, m), m);
}

// ---- Part 2: ops with native bf16 forms, fallbacks or more than one kernel --------------------

// conv2d.h. The CUDA conv's native bf16 form (kernels/conv2d_cudnn.cpp: x, w, y bf16, b bf16 or
// f32, zero padding). Returns false when it does not apply, or when cuDNN has refused a bf16
// problem on this context (no bf16 support on this GPU or cuDNN): that problem and later ones
// run on f32 copies. The refusal comes from the run's first (uncaptured) step, before any work
// is queued.
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
inline void conv2d_forward(Context& c, const Conv2dParams& p, const Tensor& x, const Tensor& w,
                           const Tensor& b, const Tensor& y) {
  if (any_bf16({&x, &w, &b, &y}) && conv2d_native_bf16(c, p, x, w, b, y)) return;
  DYNSIM_DISPATCH(conv2d_forward, p, in(x), in(w), in(b), out(y));
}

// pool2d.h. Native on CUDA when x and y are both bf16 (kernels/pool2d_cuda.cu): no f32 copies.
inline void maxpool2d_forward(Context& c, const Pool2dParams& p, const Tensor& x, const Tensor& y,
                              const Tensor& argmax) {
  if constexpr (kCudaBuilt) {
    if (on_cuda(c) && x.dtype() == y.dtype()) return cuda::maxpool2d_forward(c, p, x, y, argmax);
  }
  DYNSIM_DISPATCH(maxpool2d_forward, p, in(x), out(y), argmax);
}

// leak_tail.h, the fused step tail: drive sum, leak step, ReLU, supralinearity. The terms are
// widened one by one, before the other operands.
inline bool any_bf16_terms(const LeakTailTerms& terms) {
  for (int i = 0; i < terms.size() && i < LeakTailTerms::kMax; ++i)
    if (terms[i].defined() && terms[i].dtype() == DType::BF16) return true;
  return false;
}
// The CUDA leak tail's native bf16 form: every term, h (when given), x (when given) and r bf16,
// tau f32, as the Scheduler's bf16 runs call it.
inline bool leak_tail_native_bf16(const Context& c, const LeakTailTerms& terms, const Tensor& h,
                                  const Tensor& tau, const Tensor& x, const Tensor& r) {
  if (!kCudaBuilt || !on_cuda(c) || terms.size() < 1) return false;
  auto bf = [](const Tensor& t) { return t.defined() && t.dtype() == DType::BF16; };
  for (int i = 0; i < terms.size(); ++i)
    if (!bf(terms[i])) return false;
  return (!h.defined() || bf(h)) && (!x.defined() || bf(x)) && bf(r) && tau.defined() &&
         tau.dtype() == DType::F32;
}
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
  DYNSIM_ON_DEVICE(leak_tail_forward, p, terms, h, tau, x, r);
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
  DYNSIM_ON_DEVICE(leak_tail_backward, p, grad_r, grad_x, terms, h, tau, grad_u, grad_h, grad_tau,
                   m);
}

// noise.h. Additive Gaussian noise: reserves numel indices of the context's stream; the identity
// (ops::scale) when not training or sigma is 0.
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

#undef DYNSIM_DISPATCH
#undef DYNSIM_ON_DEVICE

}  // namespace dynsim::ops
