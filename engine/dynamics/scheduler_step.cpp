// The Scheduler's step loop (engine/dynamics/scheduler.h): per step the input frame, then either
// every area's sequential frozen-drive step in order (step_area, here) or one Runge-Kutta step of
// the whole network (scheduler_staged.cpp), then the recording (scheduler_record.cpp). The drive
// sum both share, gather_drive, is a template in scheduler_detail.h. Siblings: scheduler.cpp
// (construction, run), scheduler_rings.cpp, scheduler_fast.cpp (the fused step tail).
#include <cstdint>
#include <vector>

#include "engine/dynamics/recorder.h"
#include "engine/dynamics/scheduler.h"
#include "engine/dynamics/scheduler_detail.h"
#include "kernels/dispatch.h"
#include "kernels/leak_tail.h"

namespace dynsim {

// The step loop over the device (or host) sequence seq [B, T, C, H, W]: everything between
// the run's set-up and the host read of the recording. With RunOptions::cuda_graph this is
// the captured region, so it issues only stream work on the device: no allocation, no host
// read, no sync (CUDA), and its host-side bookkeeping depends on the run's shape only.
void Scheduler::Impl::step_loop(const Tensor& seq, const RunOptions& opt,
                                const std::vector<uint8_t>& repeats, int chunk, Recorder& recorder,
                                StabilityProbes* probes) {
  const size_t A = g.areas.size();
  const int B = batch, T = int(seq.dim(1));
  const int64_t frame_elems = frame.numel() / B;
  const int64_t total = int64_t(opt.idle_steps) + T;
  bool adaption_started = false;
  std::vector<uint8_t> fwd_present(A, 0), r_present(A, 0);
  const Tensor seq_rows = seq.view(Shape{int64_t(B) * T, frame_elems});
  for (int64_t t = 0; t < total; ++t) {
    const bool idle = t < opt.idle_steps;
    const int64_t tr = t - opt.idle_steps;  // index into the recorded sequence
    // The frame for this step: sample b's frame tr is row b * T + tr of seq_rows. A repeated
    // frame leaves frame, transformed and the input terms as they are.
    const bool repeat = repeats[size_t(t)] != 0;
    if (!repeat) {
      ++frame_version;
      if (idle)
        ops::fill(ctx, opt.non_input_value, frame);
      else
        ctx.copy_rows(frame, frame_elems, seq_rows.slice(tr, int64_t(B) * T), T * frame_elems,
                      B, frame_elems);
    }
    const Tensor* x_in = &frame;
    if (opt.input_adaption_weight != 0.0) {
      // First call passes the frame and stores it; later calls return w * stored (spec §7).
      if (!adaption_started) {
        ops::scale(ctx, 1.0, frame, adapted);
        adaption_started = true;
      } else {
        ops::scale(ctx, opt.input_adaption_weight, adapted, adapted);
      }
      x_in = &adapted;
    }
    if (input_runner) {
      if (!repeat) input_runner->forward(ctx, *x_in, transformed);
      x_in = &transformed;
    }

    if (adaptive)
      step_adaptive(t, *x_in, t == 0 || !repeat, fwd_present, r_present, probes);
    else if (staged)
      step_staged(t, *x_in, fwd_present, r_present, probes);
    else
      for (size_t a = 0; a < A; ++a)
        step_area(int(a), t, *x_in, fwd_present, r_present, probes);

    if (idle) continue;
    record_step(t, tr, fwd_present, r_present, chunk, recorder);  // scheduler_record.cpp
  }
  flush_readout(recorder);
}

// r = S(ReLU(x)) in place of r (x may alias r).
void Scheduler::Impl::nonlinearity(const Area& ar, const Tensor& x, const Tensor& r) {
  ops::relu_forward(ctx, x, r);
  if (ar.supralinearity != 1.0) {
    SupralinearityParams sp;
    sp.n = ar.supralinearity;
    ops::supralinearity_forward(ctx, sp, r, r);
  }
}

// Area a's sequential frozen-drive step at step t: its drive from the connections' sources
// (forwarded outputs, ring slots t - delay, the input x_in), the solver, r(t) into the ring.
void Scheduler::Impl::step_area(int a, int64_t t, const Tensor& x_in,
                                std::vector<uint8_t>& fwd_present, std::vector<uint8_t>& r_present,
                                StabilityProbes* probes) {
  const Area& ar = g.areas[size_t(a)];
  Tensor& u = drive[size_t(a)];
  auto read_source = [&](size_t ci) -> const Tensor* {
    const Connection& c = g.connections[ci];
    if (!c.delivers) return nullptr;
    if (c.source == kExternalInput) return &x_in;
    if (c.kind == ConnKind::Feedforward) return forwarded(c.source, fwd_present);
    return rings[size_t(c.source)].at(t - c.delay_steps);
  };
  const bool fuse = fused_tail && additive_only[size_t(a)] &&
                    drive_terms[size_t(a)] <= LeakTailTerms::kMax;
  LeakTailTerms terms;
  const bool have_drive = gather_drive(a, read_source, fuse ? &terms : nullptr);
  Ring& ring = rings[size_t(a)];
  const Tensor* prev = g.ring_capacity >= 1 ? ring.at(t - 1) : nullptr;
  const bool present = have_drive;
  Tensor& r = ring.begin_write(t, present);
  r_present[size_t(a)] = present;
  if (present && fuse) {
    step_area_fused(a, t, terms, prev, r, probes);  // scheduler_fast.cpp
  } else if (present) {
    Tensor& x = state[size_t(a)];
    const Tensor* h = prev ? prev : (memory_present[size_t(a)] ? &memory[size_t(a)] : nullptr);
    frozen->step(ctx, u, h ? *h : Tensor(), tau[size_t(a)], g.delays.dt, x);
    if (!prev) {  // the solver's private memory: written only when no rate was passed in
      ops::scale(ctx, 1.0, x, memory[size_t(a)]);
      memory_present[size_t(a)] = 1;
    }
    if (probes) probes->probe(a, t, x);
    nonlinearity(ar, x, r);
  }
  update_forwarded(a, t, present, r, fwd_present);
}

}  // namespace dynsim
