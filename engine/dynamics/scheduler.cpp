// Scheduler (engine/dynamics/scheduler.h): DynVision's step order (spec §4.3) over any Graph, on the
// context's device: parameters, rings, states and the input live there, every step is ops::
// calls, and the recording (engine/dynamics/recorder.h) is read on the host once after the loop.
#include "engine/dynamics/scheduler.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "engine/core/cuda_graph.h"
#include "engine/dynamics/operators.h"
#include "engine/dynamics/recorder.h"
#include "kernels/dispatch.h"
#include "kernels/leak_tail.h"

namespace dynsim {
namespace {

// History of one area: the last `capacity` values of r, indexed by absolute step.
struct Ring {
  std::vector<Tensor> slot;
  std::vector<int64_t> step;  // which step each slot holds (-1: none)
  std::vector<uint8_t> present;
  void clear() {
    std::fill(step.begin(), step.end(), -1);
    std::fill(present.begin(), present.end(), 0);
  }
  int capacity() const { return int(slot.size()); }
  // r(s), or nullptr when s < 0, not stored, or absent at that step.
  const Tensor* at(int64_t s) const {
    if (s < 0 || slot.empty()) return nullptr;
    const size_t i = size_t(s % capacity());
    return (step[i] == s && present[i]) ? &slot[i] : nullptr;
  }
  // The slot that will hold r(s) (overwriting the oldest value).
  Tensor& begin_write(int64_t s, bool is_present) {
    const size_t i = size_t(s % capacity());
    step[i] = s;
    present[i] = is_present;
    return slot[i];
  }
};

// Cubic Hermite basis on [0, 1].
struct Hermite {
  double h00, h10, h01, h11;
  explicit Hermite(double u)
      : h00(2 * u * u * u - 3 * u * u + 1),
        h10(u * u * u - 2 * u * u + u),
        h01(-2 * u * u * u + 3 * u * u),
        h11(u * u * u - u * u) {}
};

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

}  // namespace

std::string cuda_unsupported(const Graph& g, DType t) {
  (void)g;  // every operator kind has CUDA twins (local_sheet and reflect padding included),
            // every op f32 and f64, bf16 through f32 copies (kernels/bf16_widen.h)
  if (t != DType::F32 && t != DType::F64 && t != DType::BF16)
    return concat("scheduler on CUDA: ", dtype_name(t),
                  " runs are not supported (f32, f64 or bf16)");
  return "";
}

RingPlan plan_rings(const Graph& g, bool staged) {
  const size_t A = g.areas.size();
  RingPlan p;
  p.size.assign(A, 1);
  p.forward_delay.assign(A, -1);
  auto need = [&](int a, int n) { p.size[size_t(a)] = std::max(p.size[size_t(a)], n); };
  for (size_t a = 0; a < A; ++a)
    if (g.ring_capacity >= 1 || staged) need(int(a), staged ? 2 : 1);  // r(t - 1)
  for (const Connection& c : g.connections) {
    if (c.source == kExternalInput || !c.delivers) continue;
    if (c.kind == ConnKind::Feedforward) {
      int& k = p.forward_delay[size_t(c.source)];
      if (k >= 0 && k != c.delay_steps)
        throw ConfigError(concat("area ", g.areas[size_t(c.source)].name,
                                 ": its feedforward outputs need one common delay"));
      k = c.delay_steps;
      need(c.source, k + 1);  // read after the push
    } else {
      // Staged: every read happens before the step's push and may interpolate up to age d+1.
      const bool after_push = staged || c.source < c.target;
      need(c.source, c.delay_steps + (after_push ? 1 : 0));
    }
  }
  if (g.readout.source >= 0 && g.readout.delivers) {
    int& k = p.forward_delay[size_t(g.readout.source)];
    if (k >= 0 && k != g.readout.delay_steps)
      throw ConfigError("the classifier and the feedforward outputs need one common delay");
    k = g.readout.delay_steps;
    need(g.readout.source, k + 1);
  }
  return p;
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

struct Scheduler::Impl {
  Context& ctx;
  Graph& g;
  std::shared_ptr<FrozenSolver> frozen;  // frozen-drive mode
  // A built-in frozen solver's rule: its steps may run as the fused tail (kernels/leak_tail.h).
  bool builtin_leak = false;
  LeakRule leak_rule = LeakRule::Euler;
  std::vector<uint8_t> additive_only;    // per area: every drive term is additive
  std::vector<int> drive_terms;          // per area: connections that may add a drive term
  bool staged = false;
  ButcherTableau tab;                    // staged mode
  int batch = -1;
  DType dtype = DType::F32;
  bool params_copied = false;
  bool strided_skip = true;  // the runners' OperatorOptions
  // Per area.
  std::vector<Ring> rings;
  std::vector<int> ring_size;             // slots needed
  std::vector<int> forward_delay;         // k of the area's forwarded output (-1: none)
  std::vector<Tensor> drive, state, memory, pooled, scratch_term, tau;
  std::vector<uint8_t> memory_present;
  // Per connection.
  std::vector<OperatorRunner> runners;
  std::vector<Tensor> term;
  // Parameters in the run's dtype on the context's device: the graph's own, or copies (f64
  // runs, a CUDA context) refreshed from the graph at the start of every run.
  ParamStore converted;
  ParamStore* params = nullptr;
  // Readout: per step (literal) or over a chunk of steps (fast paths): the pooled features of
  // chunk step j in rows [j B, (j + 1) B) of readout_rows, logits likewise.
  Tensor readout_mean, logits_step, readout_rows, logits_rows;
  std::vector<int64_t> readout_steps;  // recorded steps held in the chunk, in order
  // Terms of connections from the input frame (fast paths): computed for frame version
  // ext_version[ci] (-1: none); reused while the frame stays the same.
  std::vector<Tensor> ext_term;
  std::vector<int64_t> ext_version;
  int64_t frame_version = 0;
  bool reuse_input_terms = false;
  bool fused_tail = false;  // frozen steps through ops::leak_tail_forward (fast paths)
  Tensor frame, adapted, transformed;
  std::unique_ptr<OperatorRunner> input_runner;

  // Staged mode, per area: stage slopes K_i, the stage rate, its pooled copy, scratch, slopes.
  std::vector<std::vector<Tensor>> K;
  std::vector<Tensor> stage_r, stage_pooled, pre, zeros;
  std::vector<Ring> slopes;
  std::vector<Tensor> initial_slope;  // slope at step -1 (from rest), right-sided
  bool initial_slope_set = false;
  std::vector<Tensor> interp, interp_pooled;  // per connection

  Impl(Context& c, Graph& graph, const SolverSpec& s) : ctx(c), g(graph) {
    staged = s.staged();
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

  void allocate(int B, DType t, bool strided) {
    const bool copy_params = params_need_copy(ctx, g.params, t);
    if (B == batch && t == dtype && copy_params == params_copied && strided == strided_skip) return;
    strided_skip = strided;
    cg = GraphState{};  // the buffers a captured loop points into are about to be replaced
    if (ops::on_cuda(ctx)) {
      const std::string why = cuda_unsupported(g, t);
      if (!why.empty()) throw NotImplemented(why);
    }
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

  // Value an area forwards at step t (pooled r(t - k)), or nullptr when absent.
  const Tensor* forwarded(int a, const std::vector<uint8_t>& fwd_present) const {
    if (!fwd_present[size_t(a)]) return nullptr;
    return g.areas[size_t(a)].has_pool ? &pooled[size_t(a)] : fwd_src[size_t(a)];
  }
  std::vector<const Tensor*> fwd_src;

  // tau's dtype: the run's, but f32 in bf16 runs (a time constant such as 8.3 keeps its f32
  // value; the ops take it as an f32 operand).
  DType tau_dtype() const { return dtype == DType::BF16 ? DType::F32 : dtype; }

  // The graph's parameters into the run's copies (a no-op when the run uses them directly),
  // tau anew (training changes it), the operators' host-side scalars: once per run.
  void refresh_parameters() {
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

  Recording run(const Tensor& input, const RunOptions& opt) {
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
    const int64_t calls_at_start = total_calls();
    const size_t A = g.areas.size();
    refresh_parameters();
    const std::vector<uint8_t> repeats =
        opt.fast_paths ? repeated_frames(ctx, input, opt)
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
    if (opt.cuda_graph) return run_graph(input, opt, repeats, chunk, calls_at_start);
    // A host sequence on a CUDA context goes over once, not frame by frame.
    const Tensor seq = input.device() == ctx.device() ? input : ctx.to_device(input);
    Recorder recorder(ctx, g, B, T, readout_classes(), dtype, opt.record);
    const std::unique_ptr<StabilityProbes> probes = make_probes(opt);
    step_loop(seq, opt, repeats, chunk, recorder, probes.get());
    last_calls = total_calls() - calls_at_start;
    if (probes) probes->check_all();
    return recorder.finish();
  }

  int readout_classes() const { return g.readout.source >= 0 ? g.readout.n_classes : 0; }
  std::unique_ptr<StabilityProbes> make_probes(const RunOptions& opt) const {
    if (!opt.stability_check) return nullptr;
    const int64_t total = int64_t(opt.idle_steps) + steps_of_run;
    return std::make_unique<StabilityProbes>(ctx, g, total, opt.idle_steps, dtype,
                                             staged ? tab.name : std::string());
  }
  int steps_of_run = 0;  // T of the current run (run())

  // The step loop over the device (or host) sequence seq [B, T, C, H, W]: everything between
  // the run's set-up and the host read of the recording. With RunOptions::cuda_graph this is
  // the captured region, so it issues only stream work on the device: no allocation, no host
  // read, no sync (CUDA), and its host-side bookkeeping depends on the run's shape only.
  void step_loop(const Tensor& seq, const RunOptions& opt, const std::vector<uint8_t>& repeats,
                 int chunk, Recorder& recorder, StabilityProbes* probes) {
    const size_t A = g.areas.size();
    const int B = batch, T = int(seq.dim(1));
    const int K = g.readout.source >= 0 ? g.readout.n_classes : 0;
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

      if (staged)
        step_staged(t, *x_in, fwd_present, r_present, probes);
      else
        for (size_t a = 0; a < A; ++a)
          step_area(int(a), t, *x_in, fwd_present, r_present, probes);

      if (idle) continue;
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
    flush_readout(recorder);
  }

  // ---- CUDA-graph replay (RunOptions::cuda_graph) ----------------------------------------------
  // One graph is kept, for the last run key; the recorder, the probes and the input buffer it
  // points into live with it. Host-side loop state (rings' step and present slots, the
  // recording's present flags, the probes' written slots) is the same on every run of a key, so
  // a replay only relaunches the device work; the recording's present flags come from the
  // captured run's host pass.
  struct GraphState {
    std::vector<uint64_t> key;    // what the captured loop's control flow depends on
    std::vector<uint64_t> bound;  // what its kernels have baked in (bindings())
    bool warmed = false;
    Tensor input;  // the persistent device copy of the input sequence
    std::unique_ptr<Recorder> recorder;
    std::unique_ptr<StabilityProbes> probes;
    CudaGraph exec;
    int64_t calls = 0;  // operator evaluations of the captured loop
  };
  GraphState cg;

  static void put(std::vector<uint64_t>& v, double x) {
    uint64_t u = 0;
    std::memcpy(&u, &x, sizeof u);
    v.push_back(u);
  }
  std::vector<uint64_t> graph_key(const Tensor& input, const RunOptions& opt,
                                  const std::vector<uint8_t>& repeats, int chunk) const {
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
  // parameter and tau buffer, the classifier's chunk buffers, dt and the supralinearities, and the self recurrence's scalars
  // (OperatorRunner::begin_run reads them on the host; training changes them). Read after
  // refresh_parameters(); a change captures the loop again.
  std::vector<uint64_t> bindings() {
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
  Recording run_graph(const Tensor& input, const RunOptions& opt,
                      const std::vector<uint8_t>& repeats, int chunk, int64_t calls_at_start) {
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
      last_calls = total_calls() - calls_at_start;
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
      cg.calls = total_calls() - calls_at_start;
      cg.bound = std::move(bound);
    }
    cg.exec.launch(ctx.stream());
    last_calls = cg.calls;
    if (cg.probes) cg.probes->check_all();
    return cg.recorder->copy_out();
  }

  // The classifier over the steps collected in readout_rows: one GEMM, then each step's logits
  // to the recorder.
  void flush_readout(Recorder& recorder) {
    const int64_t n = int64_t(readout_steps.size()), B = batch;
    if (n == 0) return;
    ops::linear_forward(ctx, readout_rows.slice(0, n * B), params->get(g.readout.weight),
                        params->get(g.readout.bias), logits_rows.slice(0, n * B));
    for (int64_t j = 0; j < n; ++j)
      recorder.logits(readout_steps[size_t(j)], logits_rows.slice(j * B, (j + 1) * B));
    readout_steps.clear();
  }

  // The term of connection ci from the input frame x, computed once per frame version (fast
  // paths); nullptr for any other connection, which is computed at every call.
  const Tensor* input_term(size_t ci, const Tensor& x) {
    if (!reuse_input_terms || !ext_term[ci].defined()) return nullptr;
    if (ext_version[ci] != frame_version) {
      runners[ci].forward(ctx, x, ext_term[ci]);
      ext_version[ci] = frame_version;
    }
    return &ext_term[ci];
  }

  // Sums area a's terms into drive[a]: terms entering the feedforward operator's input or middle
  // first (recurrence targets input / middle), then the connections in order: feedforward,
  // recurrence, skip, feedback (spec §2.3). read(ci) gives connection ci's source value or
  // nullptr when absent; an absent term is left out. Returns false when every term is absent.
  template <class Reader>
  bool gather_drive(int a, Reader&& read, LeakTailTerms* collect = nullptr) {
    Tensor& u = drive[size_t(a)];
    // The sum so far: u, or a term's own buffer (not yet copied into u) while it is alone.
    // With `collect` (an area whose terms are all additive, at most LeakTailTerms::kMax of them)
    // the terms are listed in order for the fused tail instead, and u holds at most one of them.
    const Tensor* acc = nullptr;
    auto combine = [&](const Tensor& v, bool multiplicative) {
      if (collect) {
        collect->push(v);
        acc = &v;
        return;
      }
      if (!acc) {
        acc = &v;  // an absent x gives T(h) alone, in both modes
        return;
      }
      if (multiplicative)
        ops::mul_one_plus_tanh(ctx, *acc, v, u);
      else
        ops::add(ctx, *acc, v, u);
      acc = &u;
    };
    Tensor input_add, middle_add;
    for (size_t ci = 0; ci < g.connections.size(); ++ci) {
      const Connection& c = g.connections[ci];
      if (c.target != a || c.entry == Entry::Output) continue;
      const Tensor* h = read(ci);
      if (!h) continue;
      runners[ci].forward(ctx, *h, term[ci]);
      (c.entry == Entry::Input ? input_add : middle_add) = term[ci];
    }
    for (size_t ci = 0; ci < g.connections.size(); ++ci) {
      const Connection& c = g.connections[ci];
      if (c.target != a || c.entry != Entry::Output) continue;
      const Tensor* h = read(ci);
      if (c.kind == ConnKind::Feedforward) {
        // f = FF(x [+ input term]) [with the middle term]; absent x gives the input term alone.
        if (!h && !input_add.defined()) continue;
        const Tensor* cached =
            h && !input_add.defined() && !middle_add.defined() ? input_term(ci, *h) : nullptr;
        if (cached) {
          combine(*cached, false);
          continue;
        }
        const Tensor& dst = acc ? term[ci] : u;
        if (h)
          runners[ci].forward(ctx, *h, dst, input_add, middle_add);
        else
          runners[ci].forward(ctx, input_add, dst, {}, middle_add);
        combine(dst, false);
        continue;
      }
      if (!h) continue;
      const Tensor* v = input_term(ci, *h);
      if (!v) {
        runners[ci].forward(ctx, *h, term[ci]);
        v = &term[ci];
      }
      combine(*v, c.integration != Integration::Additive);
    }
    if (acc && acc != &u && !collect) ops::scale(ctx, 1.0, *acc, u);
    return acc != nullptr;
  }

  // r = S(ReLU(x)) in place of r (x may alias r).
  void nonlinearity(const Area& ar, const Tensor& x, const Tensor& r) {
    ops::relu_forward(ctx, x, r);
    if (ar.supralinearity != 1.0) {
      SupralinearityParams sp;
      sp.n = ar.supralinearity;
      ops::supralinearity_forward(ctx, sp, r, r);
    }
  }

  void step_area(int a, int64_t t, const Tensor& x_in, std::vector<uint8_t>& fwd_present,
                 std::vector<uint8_t>& r_present, StabilityProbes* probes) {
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

  // The forwarded output: pool(r(t - k)), k = 0 meaning r(t) itself.
  void update_forwarded(int a, int64_t t, bool present, const Tensor& r,
                        std::vector<uint8_t>& fwd_present) {
    const Area& ar = g.areas[size_t(a)];
    Ring& ring = rings[size_t(a)];
    const int k = forward_delay[size_t(a)];
    fwd_present[size_t(a)] = 0;
    if (k >= 0) {
      const Tensor* src = k == 0 ? (present ? &r : nullptr) : ring.at(t - k);
      fwd_src[size_t(a)] = src;
      if (src) {
        fwd_present[size_t(a)] = 1;
        if (ar.has_pool) {
          const Tensor& argmax = argmax_buf(a);
          ops::maxpool2d_forward(ctx, ar.pool, *src, pooled[size_t(a)], argmax);
        }
      }
    }
  }

  // Area s's history at a (fractional) step time: r itself at whole steps, cubic Hermite with
  // the stored slopes in between; zero before step 0 (the network starts from rest).
  const Tensor* history_at(int s, double when, Tensor& dst) {
    const int64_t m = int64_t(std::floor(when));
    const double u = when - double(m);
    const Tensor& zero = zeros[size_t(s)];
    auto value = [&](int64_t step) -> const Tensor& {
      const Tensor* v = step < 0 ? nullptr : rings[size_t(s)].at(step);
      return v ? *v : zero;
    };
    // Slopes: the run starts at step -1 from rest, so the slope there is one-sided (0 to its
    // left, dt K_0 of step 0 to its right).
    auto slope = [&](int64_t step, bool right) -> const Tensor& {
      if (step == -1) return right && initial_slope_set ? initial_slope[size_t(s)] : zero;
      const Tensor* v = step < 0 ? nullptr : slopes[size_t(s)].at(step);
      return v ? *v : zero;
    };
    if (u < 1e-12) return &value(m);
    const Hermite h(u);
    ops::scale(ctx, h.h00, value(m), dst);
    ops::axpy(ctx, h.h10, slope(m, true), dst);
    ops::axpy(ctx, h.h01, value(m + 1), dst);
    ops::axpy(ctx, h.h11, slope(m + 1, false), dst);
    return &dst;
  }

  void pool_into(int a, const Tensor& src, const Tensor& dst) {
    const Tensor& argmax = argmax_buf(a);
    ops::maxpool2d_forward(ctx, g.areas[size_t(a)].pool, src, dst, argmax);
  }

  // One step of an explicit Runge-Kutta method over the whole network (engine/dynamics/solver.h):
  // stage i at step time t - 1 + c_i has rates R_i = S(ReLU(r(t-1) + dt sum_j a_ij K_j)) and
  // slopes K_i = (U_i - R_i) / tau, U_i the drive from stage values (zero delay) and
  // interpolated history (delays); then r(t) = S(ReLU(r(t-1) + dt sum_i b_i K_i)).
  void step_staged(int64_t t, const Tensor& x_in, std::vector<uint8_t>& fwd_present,
                   std::vector<uint8_t>& r_present, StabilityProbes* probes) {
    const size_t A = g.areas.size();
    const double dt = g.delays.dt;
    const int S = tab.stages();
    for (int i = 0; i < S; ++i) {
      const double when = double(t - 1) + tab.c[size_t(i)];
      for (size_t a = 0; a < A; ++a) {
        const Area& ar = g.areas[a];
        const Tensor* h = rings[a].at(t - 1);
        const Tensor& hv = h ? *h : zeros[a];
        if (i == 0) {
          ops::scale(ctx, 1.0, hv, stage_r[a]);
        } else {
          ops::scale(ctx, 1.0, hv, pre[a]);
          for (int j = 0; j < i; ++j)
            if (tab.a[size_t(i)][size_t(j)] != 0)
              ops::axpy(ctx, dt * tab.a[size_t(i)][size_t(j)], K[a][size_t(j)], pre[a]);
          nonlinearity(ar, pre[a], stage_r[a]);
        }
        if (ar.has_pool && forward_delay[a] == 0) pool_into(int(a), stage_r[a], stage_pooled[a]);
      }
      // Every area's stage value exists before any drive is gathered, so a zero-delay read of a
      // later area (feedback, t_fb = 0) sees stage i, not the previous stage.
      for (size_t a = 0; a < A; ++a) {
        auto read = [&](size_t ci) -> const Tensor* {
          const Connection& c = g.connections[ci];
          if (!c.delivers) return nullptr;
          if (c.source == kExternalInput) return &x_in;
          const int src = c.source;
          const bool pooled_ff = c.kind == ConnKind::Feedforward && g.areas[size_t(src)].has_pool;
          if (c.delay_steps == 0) return pooled_ff ? &stage_pooled[size_t(src)] : &stage_r[size_t(src)];
          const Tensor* v = history_at(src, when - c.delay_steps, interp[ci]);
          if (!pooled_ff) return v;
          pool_into(src, *v, interp_pooled[ci]);
          return &interp_pooled[ci];
        };
        if (!gather_drive(int(a), read)) ops::fill(ctx, 0.0, drive[a]);  // no input: U = 0
        ops::leak_slope(ctx, drive[a], stage_r[a], tau[a], K[a][size_t(i)]);
      }
      if (i == 0) {  // d r / d step at t - 1, kept for the interpolation of later reads
        for (size_t a = 0; a < A; ++a) {
          if (rings[a].at(t - 1))
            ops::scale(ctx, dt, K[a][0], slopes[a].begin_write(t - 1, true));
          else if (t == 0)
            ops::scale(ctx, dt, K[a][0], initial_slope[a]);
        }
        if (t == 0) initial_slope_set = true;
      }
    }
    for (size_t a = 0; a < A; ++a) {
      const Area& ar = g.areas[a];
      const Tensor* h = rings[a].at(t - 1);
      ops::scale(ctx, 1.0, h ? *h : zeros[a], pre[a]);
      for (int i = 0; i < S; ++i)
        if (tab.b[size_t(i)] != 0) ops::axpy(ctx, dt * tab.b[size_t(i)], K[a][size_t(i)], pre[a]);
      if (probes) probes->probe(int(a), t, pre[a]);
      Tensor& r = rings[a].begin_write(t, true);
      nonlinearity(ar, pre[a], r);
      r_present[a] = 1;
      update_forwarded(int(a), t, true, r, fwd_present);
    }
  }

  std::vector<Tensor> argmax_bufs;  // per pooled area (allocate())
  int64_t last_calls = 0;           // operator evaluations of the last run
  int64_t total_calls() const {
    int64_t n = input_runner ? input_runner->forward_calls() : 0;
    for (const OperatorRunner& r : runners) n += r.forward_calls();
    return n;
  }
  const Tensor& argmax_buf(int a) const { return argmax_bufs[size_t(a)]; }
};

Scheduler::Scheduler(Context& ctx, Graph& graph, const SolverSpec& solver)
    : impl_(std::make_unique<Impl>(ctx, graph, solver)) {}
Scheduler::~Scheduler() = default;
Recording Scheduler::run(const Tensor& input, const RunOptions& opt) {
  return impl_->run(input, opt);
}
int64_t Scheduler::operator_calls() const { return impl_->last_calls; }

}  // namespace dynsim
