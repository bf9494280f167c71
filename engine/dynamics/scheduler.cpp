// Scheduler (engine/dynamics/scheduler.h): DynVision's step order (spec §4.3) over any Graph, on
// the context's device: parameters, rings, states and the input live there, every step is ops::
// calls, and the recording (engine/dynamics/recorder.h) is read on the host once after the loop.
// This file: construction, buffers and parameters, the run entry points and the CUDA-graph
// replay. Its siblings (Scheduler::Impl in scheduler_detail.h): scheduler_rings.cpp (ring
// planning, delayed reads, Hermite history), scheduler_step.cpp (the step loop, frozen-drive
// steps), scheduler_staged.cpp (the Runge-Kutta stage loop), scheduler_fast.cpp (the fast
// paths), scheduler_record.cpp (the recording).
#include "engine/dynamics/scheduler.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "engine/core/cuda_graph.h"
#include "engine/dynamics/operators.h"
#include "engine/dynamics/recorder.h"
#include "engine/dynamics/scheduler_detail.h"
#include "kernels/dispatch.h"

namespace dynsim {
namespace {

// Whether the parameters must be copied for a run in dtype t on ctx: a different dtype (f64
// runs) or another device (the graph's parameters on the host, a CUDA context).
bool params_need_copy(const Context& ctx, const ParamStore& p, DType t) {
  for (const auto& e : p.entries())
    if (e.value.dtype() != t || e.value.device() != ctx.device() ||
        (ctx.device() == Device::Cuda && e.value.device_index() != ctx.device_index()))
      return true;
  return false;
}

// The classifier's features are collected over this many steps before one GEMM (fast paths on
// CUDA; RunOptions::readout_chunk).
constexpr int kReadoutChunkCuda = 32;

using scheduler_detail::repeated_frames;  // scheduler_fast.cpp

}  // namespace

std::string cuda_unsupported(const Graph& g, DType t) {
  (void)g;  // every operator kind has CUDA twins (local_sheet and reflect padding included),
            // every op f32 and f64, bf16 through f32 copies (kernels/bf16_widen.h)
  if (t != DType::F32 && t != DType::F64 && t != DType::BF16)
    return concat("scheduler on CUDA: ", dtype_name(t),
                  " runs are not supported (f32, f64 or bf16)");
  return "";
}

Tensor area_tau(Context& ctx, const Graph& g, const Area& a, int batch, DType t) {
  if (!a.tau_per_sample.empty()) {
    if (int(a.tau_per_sample.size()) != batch)
      throw DataError(concat("area ", a.name, ": ", a.tau_per_sample.size(),
                             " per-sample tau values for a batch of ", batch));
    return Tensor::from(Shape{batch}, a.tau_per_sample, t);
  }
  if (a.tau_param.empty()) return Tensor::from(Shape{1}, {a.tau}, t);
  Tensor tv = ctx.to_host(g.params.get(a.tau_param)).view(Shape{1}).to_dtype(t);
  if (a.tau_softplus) {
    const double s = tv.item(0);
    tv.set(0, s > 30 ? s : std::log1p(std::exp(s)));
  }
  return tv;
}

Scheduler::Impl::Impl(Context& c, Graph& graph, const SolverSpec& s) : ctx(c), g(graph) {
  staged = s.staged();
  adaptive = s.is_adaptive();
  control = s.control;
  if (staged)
    tab = s.resolved_tableau();
  else
    frozen = s.custom ? s.custom : builtin_frozen_solver(s.name);
  if (!staged && !s.custom) {
    builtin_leak = true;
    leak_rule = s.name == "euler" ? LeakRule::Euler
                : s.name == "rk4" ? LeakRule::Rk4Frozen
                                  : LeakRule::Exp;
  }
  additive_only.assign(g.areas.size(), 1);
  drive_terms.assign(g.areas.size(), 0);
  for (const Connection& c : g.connections)
    if (c.entry == Entry::Output) ++drive_terms[size_t(c.target)];
  for (const Connection& c : g.connections)
    if (c.integration != Integration::Additive && c.kind != ConnKind::Feedforward)
      additive_only[size_t(c.target)] = 0;
  const RingPlan plan = dynsim::plan_rings(g, staged);
  ring_size = plan.size;
  forward_delay = plan.forward_delay;
}

void Scheduler::Impl::allocate(int B, DType t, bool strided) {
  const bool copy_params = params_need_copy(ctx, g.params, t);
  if (B == batch && t == dtype && copy_params == params_copied && strided == strided_skip) return;
  strided_skip = strided;
  cg = GraphState{};  // the buffers a captured loop points into are about to be replaced
  if (ops::on_cuda(ctx)) {
    const std::string why = cuda_unsupported(g, t);
    if (!why.empty()) throw NotImplemented(why);
  }
  if (adaptive && (ops::on_cuda(ctx) || t == DType::BF16))
    throw NotImplemented(concat("scheduler: the adaptive solver ", tab.name, " runs on the CPU "
                                "in f32 or f64 for now (this run: ",
                                ops::on_cuda(ctx) ? "CUDA" : "CPU", ", ", dtype_name(t),
                                "); dynamics.adaptive = false runs it fixed-step"));
  batch = B;
  dtype = t;
  params_copied = copy_params;
  params = &g.params;
  if (copy_params) {
    converted = ParamStore();
    for (const auto& e : g.params.entries())
      converted.add(e.name, ctx.empty(e.value.shape(), t), e.trainable);
    params = &converted;
  }
  const size_t A = g.areas.size();
  rings.assign(A, Ring{});
  drive.assign(A, {});
  state.assign(A, {});
  memory.assign(A, {});
  pooled.assign(A, {});
  tau.assign(A, {});
  memory_present.assign(A, 0);
  for (size_t a = 0; a < A; ++a) {
    const Area& ar = g.areas[a];
    const Shape s{B, ar.channels, ar.height, ar.width};
    Ring& r = rings[a];
    r.slot.clear();
    for (int i = 0; i < ring_size[a]; ++i) r.slot.push_back(ctx.empty(s, t));
    r.step.assign(r.slot.size(), -1);
    r.present.assign(r.slot.size(), 0);
    drive[a] = ctx.empty(s, t);
    state[a] = ctx.empty(s, t);
    memory[a] = ctx.empty(s, t);
    if (ar.has_pool) pooled[a] = ctx.empty(Shape{B, ar.channels, ar.out_height(), ar.out_width()}, t);
  }
  argmax_bufs.assign(A, {});
  for (size_t a = 0; a < A; ++a)
    if (g.areas[a].has_pool) argmax_bufs[a] = ctx.empty(pooled[a].shape(), DType::I32);
  if (staged) {
    K.assign(A, {});
    stage_r.assign(A, {});
    stage_pooled.assign(A, {});
    pre.assign(A, {});
    zeros.assign(A, {});
    slopes.assign(A, Ring{});
    initial_slope.assign(A, {});
    for (size_t a = 0; a < A; ++a) {
      initial_slope[a] = ctx.empty(Shape{B, g.areas[a].channels, g.areas[a].height,
                                         g.areas[a].width}, t);
      const Area& ar = g.areas[a];
      const Shape s{B, ar.channels, ar.height, ar.width};
      for (int i = 0; i < tab.stages(); ++i) K[a].push_back(ctx.empty(s, t));
      if (adaptive) allocate_adaptive(s, a, t);
      stage_r[a] = ctx.empty(s, t);
      pre[a] = ctx.empty(s, t);
      zeros[a] = ctx.zeros(s, t);
      if (ar.has_pool)
        stage_pooled[a] = ctx.empty(Shape{B, ar.channels, ar.out_height(), ar.out_width()}, t);
      for (size_t i = 0; i < rings[a].slot.size(); ++i) slopes[a].slot.push_back(ctx.empty(s, t));
      slopes[a].step.assign(rings[a].slot.size(), -1);
      slopes[a].present.assign(rings[a].slot.size(), 0);
    }
  }
  runners.clear();
  term.clear();
  interp.clear();
  interp_pooled.clear();
  ext_term.clear();
  OperatorOptions oo;
  oo.strided_skip = strided;
  for (const Connection& c : g.connections) {
    runners.emplace_back(ctx, c.op, *params, B, t, oo);
    term.push_back(ctx.empty(runners.back().output_shape(), t));
    ext_term.push_back(c.source == kExternalInput && c.entry == Entry::Output
                           ? ctx.empty(runners.back().output_shape(), t)
                           : Tensor());
    Tensor ib, pb;
    if (staged && c.source != kExternalInput) {
      const Area& s = g.areas[size_t(c.source)];
      ib = ctx.empty(Shape{B, s.channels, s.height, s.width}, t);
      if (c.kind == ConnKind::Feedforward && s.has_pool)
        pb = ctx.empty(Shape{B, s.channels, s.out_height(), s.out_width()}, t);
    }
    interp.push_back(ib);
    interp_pooled.push_back(pb);
  }
  frame = ctx.empty(Shape{B, g.input_channels, g.input_height, g.input_width}, t);
  adapted = ctx.empty(frame.shape(), t);
  input_runner.reset();
  if (g.input_transform.in_channels > 0) {
    input_runner = std::make_unique<OperatorRunner>(ctx, g.input_transform, *params, B, t, oo);
    transformed = ctx.empty(input_runner->output_shape(), t);
  }
  if (g.readout.source >= 0) {
    const Area& src = g.areas[size_t(g.readout.source)];
    readout_mean = ctx.empty(Shape{B, src.channels}, t);
    logits_step = ctx.empty(Shape{B, g.readout.n_classes}, t);
    readout_rows = Tensor();  // sized by the first run that collects (run())
    logits_rows = Tensor();
  }
}

// tau's dtype: the run's, but f32 in bf16 runs (a time constant such as 8.3 keeps its f32
// value; the ops take it as an f32 operand).
DType Scheduler::Impl::tau_dtype() const { return dtype == DType::BF16 ? DType::F32 : dtype; }

// The graph's parameters into the run's copies (a no-op when the run uses them directly),
// tau anew (training changes it), the operators' host-side scalars: once per run.
void Scheduler::Impl::refresh_parameters() {
  if (params_copied)
    for (const auto& e : g.params.entries()) {
      const Tensor& dst = converted.get(e.name);
      if (e.value.dtype() == dtype) {
        ctx.copy(dst, e.value);
      } else {
        const Tensor host = e.value.is_cpu() ? e.value : ctx.to_host(e.value);
        ctx.copy(dst, host.to_dtype(dtype));
      }
    }
  for (size_t a = 0; a < g.areas.size(); ++a) {
    const Tensor th = area_tau(ctx, g, g.areas[a], batch, tau_dtype());
    if (!tau[a].defined() || tau[a].shape() != th.shape())
      tau[a] = ctx.empty(th.shape(), tau_dtype());
    ctx.copy(tau[a], th);
  }
  for (OperatorRunner& r : runners) r.begin_run(ctx);
  if (input_runner) input_runner->begin_run(ctx);
}

Recording Scheduler::Impl::run(const Tensor& input, const RunOptions& opt) {
  if (opt.cuda_graph && !ops::on_cuda(ctx))
    throw ConfigError(
        "scheduler: cuda_graph (simulation.cuda_graph) needs a CUDA context; this run is on "
        "the CPU, where there is no step loop to capture");
  if (input.rank() != 5)
    throw DataError(concat("scheduler: input must be [B, T, C, H, W], got ", input.str()));
  const int B = int(input.dim(0)), T = int(input.dim(1));
  if (input.dim(2) != g.input_channels || input.dim(3) != g.input_height ||
      input.dim(4) != g.input_width)
    throw DataError(concat("scheduler: input frames are ", input.dim(2), "x", input.dim(3),
                           "x", input.dim(4), " but the model expects ", g.input_channels, "x",
                           g.input_height, "x", g.input_width));
  allocate(B, input.dtype(), opt.fast_paths);
  steps_of_run = T;
  last_calls = 0;
  last_flops = 0;
  calls_at_start = total_calls();
  flops_at_start = total_flops();
  const size_t A = g.areas.size();
  refresh_parameters();
  const std::vector<uint8_t> repeats =
      opt.fast_paths || adaptive ? repeated_frames(ctx, input, opt)
                     : std::vector<uint8_t>(size_t(opt.idle_steps) + size_t(T), 0);
  reuse_input_terms = opt.fast_paths;
  fused_tail = opt.fast_paths && builtin_leak;
  if (opt.readout_chunk < 0)
    throw DataError(concat("scheduler: readout_chunk must be >= 0, got ", opt.readout_chunk));
  const int chunk = !opt.fast_paths          ? 1
                    : opt.readout_chunk > 0 ? opt.readout_chunk
                    : ops::on_cuda(ctx)     ? kReadoutChunkCuda
                                            : 1;
  if (g.readout.source >= 0 && chunk > 1 &&
      (!readout_rows.defined() || readout_rows.dim(0) != int64_t(chunk) * B)) {
    const Area& src = g.areas[size_t(g.readout.source)];
    readout_rows = ctx.empty(Shape{int64_t(chunk) * B, src.channels}, dtype);
    logits_rows = ctx.empty(Shape{int64_t(chunk) * B, g.readout.n_classes}, dtype);
  }
  ext_version.assign(g.connections.size(), -1);
  frame_version = 0;
  readout_steps.clear();
  for (auto& r : rings) r.clear();
  for (auto& r : slopes) r.clear();
  initial_slope_set = false;
  std::fill(memory_present.begin(), memory_present.end(), 0);
  fwd_src.assign(A, nullptr);
  if (adaptive) begin_adaptive_run();
  if (opt.cuda_graph) return run_graph(input, opt, repeats, chunk);
  // A host sequence on a CUDA context goes over once, not frame by frame.
  const Tensor seq = input.device() == ctx.device() ? input : ctx.to_device(input);
  Recorder recorder(ctx, g, B, T, readout_classes(), dtype, opt.record);
  const std::unique_ptr<StabilityProbes> probes = make_probes(opt);
  step_loop(seq, opt, repeats, chunk, recorder, probes.get());
  count_work();
  if (adaptive) finish_adaptive_stats();
  if (probes) probes->check_all();
  return recorder.finish();
}

// ---- CUDA-graph replay (RunOptions::cuda_graph; GraphState: scheduler_detail.h) ------------

void Scheduler::Impl::put(std::vector<uint64_t>& v, double x) {
  uint64_t u = 0;
  std::memcpy(&u, &x, sizeof u);
  v.push_back(u);
}

std::vector<uint64_t> Scheduler::Impl::graph_key(const Tensor& input, const RunOptions& opt,
                                                  const std::vector<uint8_t>& repeats,
                                                  int chunk) const {
  std::vector<uint64_t> k{uint64_t(input.dim(0)), uint64_t(input.dim(1)),
                          uint64_t(opt.idle_steps), uint64_t(opt.record),
                          uint64_t(opt.fast_paths), uint64_t(chunk),
                          uint64_t(opt.stability_check), uint64_t(dtype)};
  put(k, opt.input_adaption_weight);
  put(k, double(opt.non_input_value));
  k.insert(k.end(), repeats.begin(), repeats.end());
  return k;
}

// Host values and addresses the captured kernels hold as arguments: the scratch arena, every
// parameter and tau buffer, the classifier's chunk buffers, dt and the supralinearities, and the
// self recurrence's scalars (OperatorRunner::begin_run reads them on the host; training changes
// them). Read after refresh_parameters(); a change captures the loop again.
std::vector<uint64_t> Scheduler::Impl::bindings() {
  std::vector<uint64_t> b;
  auto ptr = [&](const void* p) { b.push_back(uint64_t(reinterpret_cast<uintptr_t>(p))); };
  ScratchArena& sa = ctx.scratch();
  b.push_back(uint64_t(sa.capacity()));
  ptr(sa.capacity() > 0 ? sa.get(sa.capacity()) : nullptr);  // no growth: just the address
  for (const auto& e : params->entries()) ptr(e.value.raw());
  for (const Tensor& t : tau) ptr(t.raw());
  ptr(readout_rows.defined() ? readout_rows.raw() : nullptr);  // re-sized by run()
  ptr(logits_rows.defined() ? logits_rows.raw() : nullptr);
  put(b, g.delays.dt);
  for (const Area& a : g.areas) put(b, a.supralinearity);
  auto self_scalars = [&](const OpSpec& op) {
    if (op.kind != OpKind::Self) return;
    for (const std::string& name : op.params) {
      const Tensor h = ctx.host_view(params->get(name));
      for (int64_t i = 0; i < h.numel(); ++i) put(b, h.item(i));
    }
  };
  for (const Connection& c : g.connections) self_scalars(c.op);
  if (input_runner) self_scalars(g.input_transform);
  return b;
}

// A run with cuda_graph on (a CUDA context, parameters refreshed): the input goes into the
// persistent buffer; the first run of a key is an ordinary run (warm-up: plans, scratch and
// library workspaces reach their size), the next captures step_loop and launches it, later
// ones launch it (capturing anew when bindings() changed).
Recording Scheduler::Impl::run_graph(const Tensor& input, const RunOptions& opt,
                                     const std::vector<uint8_t>& repeats, int chunk) {
  std::vector<uint64_t> key = graph_key(input, opt, repeats, chunk);
  if (key != cg.key) {
    cg = GraphState{};
    cg.key = std::move(key);
  }
  if (!cg.input.defined()) cg.input = ctx.empty(input.shape(), dtype);
  ctx.copy(cg.input, input);  // one H2D (host input) or D2D (device input) copy
  if (!cg.warmed) {
    Recorder recorder(ctx, g, batch, steps_of_run, readout_classes(), dtype, opt.record);
    const std::unique_ptr<StabilityProbes> probes = make_probes(opt);
    step_loop(cg.input, opt, repeats, chunk, recorder, probes.get());
    count_work();
    cg.warmed = true;
    if (probes) probes->check_all();
    return recorder.finish();
  }
  std::vector<uint64_t> bound = bindings();
  if (cg.exec.ready() && bound != cg.bound) cg.exec.reset();
  if (!cg.exec.ready()) {
    if (!cg.recorder) {  // allocated (and filled) outside the capture
      cg.recorder = std::make_unique<Recorder>(ctx, g, batch, steps_of_run, readout_classes(),
                                               dtype, opt.record);
      cg.probes = make_probes(opt);
    }
    void* stream = ctx.stream();
    cuda_graph_begin_capture(stream);
    try {
      cg.recorder->clear();  // each replay starts from a fresh recording
      step_loop(cg.input, opt, repeats, chunk, *cg.recorder, cg.probes.get());
      cg.exec = cuda_graph_end_capture(stream);
    } catch (const std::exception& e) {
      cuda_graph_abort_capture(stream);
      cg = GraphState{};
      throw Error(concat("scheduler: cuda_graph: capturing the step loop failed (run without "
                         "cuda_graph): ",
                         e.what()));
    }
    count_work();  // the capture records the loop's calls; replays make none on the host
    cg.calls = last_calls;
    cg.flops = last_flops;
    cg.bound = std::move(bound);
  }
  cg.exec.launch(ctx.stream());
  last_calls = cg.calls;
  last_flops = cg.flops;
  if (cg.probes) cg.probes->check_all();
  return cg.recorder->copy_out();
}

int64_t Scheduler::Impl::total_calls() const {
  int64_t n = input_runner ? input_runner->forward_calls() : 0;
  for (const OperatorRunner& r : runners) n += r.forward_calls();
  return n;
}

void Scheduler::Impl::count_work() {
  last_calls = total_calls() - calls_at_start;
  last_flops = total_flops() - flops_at_start;
}

double Scheduler::Impl::total_flops() const {
  double n = input_runner ? input_runner->forward_flops() : 0;
  for (const OperatorRunner& r : runners) n += r.forward_flops();
  return n;
}

const Tensor& Scheduler::Impl::argmax_buf(int a) const { return argmax_bufs[size_t(a)]; }

Scheduler::Scheduler(Context& ctx, Graph& graph, const SolverSpec& solver)
    : impl_(std::make_unique<Impl>(ctx, graph, solver)) {}
Scheduler::~Scheduler() = default;
Recording Scheduler::run(const Tensor& input, const RunOptions& opt) {
  return impl_->run(input, opt);
}
int64_t Scheduler::operator_calls() const { return impl_->last_calls; }
double Scheduler::operator_flops() const { return impl_->last_flops; }
AdaptiveStats Scheduler::adaptive_stats() const {
  return impl_->adaptive ? impl_->stats : AdaptiveStats{};
}

}  // namespace dynsim
