// The Scheduler's fast paths (RunOptions::fast_paths, engine/dynamics/scheduler.h): which frames
// repeat (repeated_frames, before the loop), the input frame's terms computed once per frame
// (input_term, read by gather_drive) and the fused step tail (ops::leak_tail_forward). The
// chunked classifier is in scheduler_record.cpp, the strided skip in operators.h. Siblings:
// scheduler.cpp (construction, run), scheduler_step.cpp; Impl in scheduler_detail.h.
#include <cstdint>
#include <vector>

#include "engine/dynamics/recorder.h"
#include "engine/dynamics/scheduler.h"
#include "engine/dynamics/scheduler_detail.h"
#include "kernels/dispatch.h"
#include "kernels/leak_tail.h"

namespace dynsim {
namespace scheduler_detail {

// Per step of a run (idle steps first): 1 where every sample's frame equals the previous step's
// bit for bit (the idle frame as ops::fill writes it), so that whatever is computed from the
// frame alone can be kept (kernels/frames.h). A host sequence is compared on the host; a device
// sequence on its context's device, with one copy of the [idle + T] flags to the host per run
// (no per-step sync). A device sequence on another device than ctx's (the run copies it over)
// counts every frame as new. None with input adaption (the adapted frame changes every step).
std::vector<uint8_t> repeated_frames(Context& ctx, const Tensor& input, const RunOptions& opt) {
  const int64_t B = input.dim(0), T = input.dim(1), idle = opt.idle_steps;
  std::vector<uint8_t> rep(size_t(idle + T), 0);
  if (opt.input_adaption_weight != 0.0 || B * T == 0) return rep;
  Tensor flags;
  if (input.is_cpu()) {
    flags = Tensor::empty(Shape{idle + T}, DType::I32);
    cpu::repeated_frames(ctx, input, idle, opt.non_input_value, flags);
  } else if (ops::on_cuda(ctx) && input.device_index() == ctx.device_index()) {
    const Tensor on_device = ctx.empty(Shape{idle + T}, DType::I32);
    ops::repeated_frames(ctx, input, idle, opt.non_input_value, on_device);
    flags = ctx.to_host(on_device);
  } else {
    return rep;
  }
  const int32_t* f = flags.data<int32_t>();
  for (size_t s = 0; s < rep.size(); ++s) rep[s] = f[s] != 0;
  return rep;
}

}  // namespace scheduler_detail

// The term of connection ci from the input frame x, computed once per frame version (fast
// paths); nullptr for any other connection, which is computed at every call.
const Tensor* Scheduler::Impl::input_term(size_t ci, const Tensor& x) {
  if (!reuse_input_terms || !ext_term[ci].defined()) return nullptr;
  if (ext_version[ci] != frame_version) {
    runners[ci].forward(ctx, x, ext_term[ci]);
    ext_version[ci] = frame_version;
  }
  return &ext_term[ci];
}

// The fused step tail (RunOptions::fast_paths): step_area's step (scheduler_step.cpp) for an area
// whose terms are all additive, at most LeakTailTerms::kMax, under a built-in frozen solver.
// terms: the drive's terms as gather_drive listed them; prev: r(t - 1) or nullptr; r: the ring
// slot of r(t).
void Scheduler::Impl::step_area_fused(int a, int64_t t, const LeakTailTerms& terms,
                                      const Tensor* prev, const Tensor& r,
                                      StabilityProbes* probes) {
  const Area& ar = g.areas[size_t(a)];
  // One pass: the drive sum, the leak step, ReLU and the supralinearity (the bits of the
  // separate ops); x only where it is read (the solver's memory, the stability probe).
  Tensor& x = state[size_t(a)];
  const Tensor* h = prev ? prev : (memory_present[size_t(a)] ? &memory[size_t(a)] : nullptr);
  LeakTailParams lp;
  lp.rule = leak_rule;
  lp.dt = g.delays.dt;
  lp.supralinear = ar.supralinearity != 1.0;
  lp.supra.n = ar.supralinearity;
  const Tensor& x_out = !prev ? memory[size_t(a)] : (probes ? x : Tensor());
  ops::leak_tail_forward(ctx, lp, terms, h ? *h : Tensor(), tau[size_t(a)], x_out, r);
  if (!prev) memory_present[size_t(a)] = 1;
  if (probes) probes->probe(a, t, x_out);
}

}  // namespace dynsim
