// What the Scheduler (engine/dynamics/scheduler.h) hands the Recorder and the stability probes
// (engine/dynamics/recorder.h): each recorded step's rates and presence, the classifier's logits
// per step or per chunk of steps (fast paths). Siblings: scheduler.cpp (construction, run),
// scheduler_step.cpp (the step loop that calls record_step); Impl in scheduler_detail.h.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/dynamics/recorder.h"
#include "engine/dynamics/scheduler.h"
#include "engine/dynamics/scheduler_detail.h"
#include "kernels/dispatch.h"

namespace dynsim {

int Scheduler::Impl::readout_classes() const {
  return g.readout.source >= 0 ? g.readout.n_classes : 0;
}

std::unique_ptr<StabilityProbes> Scheduler::Impl::make_probes(const RunOptions& opt) const {
  if (!opt.stability_check) return nullptr;
  const int64_t total = int64_t(opt.idle_steps) + steps_of_run;
  return std::make_unique<StabilityProbes>(ctx, g, total, opt.idle_steps, dtype,
                                           staged ? tab.name : std::string());
}

// What step t leaves in the recording (recorded step tr = t - idle steps; called by step_loop,
// scheduler_step.cpp): every area's r(t) and presence, and the classifier on the delayed
// forwarded output: this step's logits, or a row of the chunk for flush_readout.
void Scheduler::Impl::record_step(int64_t t, int64_t tr, const std::vector<uint8_t>& fwd_present,
                                  const std::vector<uint8_t>& r_present, int chunk,
                                  Recorder& recorder) {
  const size_t A = g.areas.size();
  const int B = batch;
  const int K = g.readout.source >= 0 ? g.readout.n_classes : 0;
  for (size_t a = 0; a < A; ++a) recorder.rates(int(a), tr, rings[a].at(t), r_present[a]);
  const Tensor* v =
      K > 0 && g.readout.delivers ? forwarded(g.readout.source, fwd_present) : nullptr;
  if (v && chunk > 1) {
    const int64_t j = int64_t(readout_steps.size());
    ops::mean_hw_forward(ctx, *v, readout_rows.slice(j * B, (j + 1) * B));
    readout_steps.push_back(tr);
    if (readout_steps.size() == size_t(chunk)) flush_readout(recorder);
  } else if (v) {
    ops::mean_hw_forward(ctx, *v, readout_mean);
    ops::linear_forward(ctx, readout_mean, params->get(g.readout.weight),
                        params->get(g.readout.bias), logits_step);
    recorder.logits(tr, logits_step);
  }
}

// The classifier over the steps collected in readout_rows: one GEMM, then each step's logits
// to the recorder.
void Scheduler::Impl::flush_readout(Recorder& recorder) {
  const int64_t n = int64_t(readout_steps.size()), B = batch;
  if (n == 0) return;
  ops::linear_forward(ctx, readout_rows.slice(0, n * B), params->get(g.readout.weight),
                      params->get(g.readout.bias), logits_rows.slice(0, n * B));
  for (int64_t j = 0; j < n; ++j)
    recorder.logits(readout_steps[size_t(j)], logits_rows.slice(j * B, (j + 1) * B));
  readout_steps.clear();
}

}  // namespace dynsim
