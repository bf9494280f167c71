// Reverse mode through time (engine/autograd/bptt.h). BPTT-READY
//
// The forward is the scheduler's step order (engine/dynamics/scheduler.cpp: DynVision's sequential
// frozen-drive steps, or staged Runge-Kutta steps over the whole network) written over a tape:
// every value is a Var, every component call a Node that can run its own backward. Rings hold
// Vars, so a delayed read is an edge of the graph like any other and its gradient flows back
// through the delay by itself. tests/engine/autograd/test_bptt.cpp checks that this forward gives the
// scheduler's results bit for bit, and the gradients against f64 central differences.
#include "engine/autograd/bptt.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "engine/dynamics/operators.h"
#include "kernels/dispatch.h"

namespace dynsim {
namespace {

using Var = int;
constexpr Var kNone = -1;
constexpr int kInputTransform = -2;  // Node::index of the retina front-end operator

// Tail: the fused step tail of a frozen step (kernels/leak_tail.h), r = S(relu(leak_step(sum of
// the terms, h))); terms in lin_v[lin_begin ..), h in in0, x (kept only where it is read: the
// solver's memory, the stability check) in aux.
enum class NodeKind : uint8_t { Op, Lin, Add, Gate, Frozen, Slope, Relu, Supra, Pool, Readout, Tail };

struct Node {
  NodeKind kind;
  Var out = kNone;
  Var in0 = kNone, in1 = kNone, in2 = kNone;
  Var aux = kNone;  // Pool: argmax (i32); Readout: the spatial mean
  int index = -1;   // Op: connection (kInputTransform); Frozen, Slope, Supra, Pool, Tail: area
  int lin_begin = 0, lin_count = 0;  // Lin: y = sum c_k x_k over lin_c / lin_v
};

// Values and their gradients. Value buffers come from a pool handed out in call order and
// reused by every later run of the same shapes; gradient buffers from a free list, returned as
// soon as the node that produced the value has run its backward (the "gradient rings").
struct Tape {
  explicit Tape(Context& c) : ctx(c) {}
  Context& ctx;
  std::vector<Tensor> val, grad;
  std::vector<uint8_t> req;  // value needs a gradient
  std::vector<Node> nodes;
  std::vector<double> lin_c;
  std::vector<Var> lin_v;
  std::vector<Tensor> pool;
  size_t cursor = 0;
  std::vector<Tensor> free_grads;

  void reset() {
    for (Tensor& g : grad)
      if (g.defined()) free_grads.push_back(g);
    val.clear();
    grad.clear();
    req.clear();
    nodes.clear();
    lin_c.clear();
    lin_v.clear();
    cursor = 0;
  }
  Tensor take(const Shape& s, DType t) {
    if (cursor < pool.size() && pool[cursor].shape() == s && pool[cursor].dtype() == t)
      return pool[cursor++];
    Tensor x = ctx.empty(s, t);
    if (cursor < pool.size())
      pool[cursor] = x;
    else
      pool.push_back(x);
    ++cursor;
    return x;
  }
  Var leaf(const Tensor& v, bool needs_grad) {
    val.push_back(v);
    grad.emplace_back();
    req.push_back(needs_grad);
    return Var(val.size() - 1);
  }
  Var fresh(const Shape& s, DType t) { return leaf(take(s, t), true); }
  const Tensor& v(Var x) const { return val[size_t(x)]; }
  bool needs(Var x) const { return x != kNone && req[size_t(x)]; }
  // The gradient buffer of x, zero on first use.
  const Tensor& g(Var x) {
    Tensor& gr = grad[size_t(x)];
    if (gr.defined()) return gr;
    const Tensor& like = val[size_t(x)];
    for (size_t i = 0; i < free_grads.size(); ++i)
      if (free_grads[i].numel() == like.numel() && free_grads[i].dtype() == like.dtype()) {
        gr = free_grads[i].view(like.shape());
        free_grads[i] = free_grads.back();
        free_grads.pop_back();
        ops::fill(ctx, 0.0, gr);
        return gr;
      }
    gr = ctx.zeros(like.shape(), like.dtype());
    return gr;
  }
  Tensor g_or_none(Var x) { return needs(x) ? g(x) : Tensor(); }
  void release(Var x) {
    Tensor& gr = grad[size_t(x)];
    if (!gr.defined()) return;
    free_grads.push_back(gr);
    gr = Tensor();
  }
  Var add_node(const Node& n) {
    nodes.push_back(n);
    return n.out;
  }
  int64_t bytes() const {
    int64_t b = 0;
    for (const Tensor& t : pool) b += t.numel() * int64_t(dtype_size(t.dtype()));
    for (const Tensor& t : free_grads) b += t.numel() * int64_t(dtype_size(t.dtype()));
    for (const Tensor& t : grad)
      if (t.defined()) b += t.numel() * int64_t(dtype_size(t.dtype()));
    return b;
  }
};

// History of one area as Vars, indexed by absolute step (the scheduler's Ring).
struct VarRing {
  std::vector<Var> var;
  std::vector<int64_t> step;
  std::vector<uint8_t> present;
  void reset(int capacity) {
    var.assign(size_t(capacity), kNone);
    step.assign(size_t(capacity), -1);
    present.assign(size_t(capacity), 0);
  }
  Var at(int64_t s) const {
    if (s < 0 || var.empty()) return kNone;
    const size_t i = size_t(s % int64_t(var.size()));
    return (step[i] == s && present[i]) ? var[i] : kNone;
  }
  void write(int64_t s, bool is_present, Var v) {
    const size_t i = size_t(s % int64_t(var.size()));
    step[i] = s;
    present[i] = is_present;
    var[i] = v;
  }
};

struct Hermite {  // cubic Hermite basis on [0, 1] (as the scheduler's)
  double h00, h10, h01, h11;
  explicit Hermite(double u)
      : h00(2 * u * u * u - 3 * u * u + 1),
        h10(u * u * u - 2 * u * u + u),
        h01(-2 * u * u * u + 3 * u * u),
        h11(u * u * u - u * u) {}
};

bool leak_rule_of(const std::string& name, LeakRule* rule) {
  if (name == "euler") *rule = LeakRule::Euler;
  else if (name == "rk4") *rule = LeakRule::Rk4Frozen;
  else if (name == "exp") *rule = LeakRule::Exp;
  else return false;
  return true;
}

}  // namespace

struct Bptt::Impl {
  Context& ctx;
  Graph& g;
  bool staged = false;
  ButcherTableau tab;
  LeakRule rule = LeakRule::Euler;
  std::shared_ptr<FrozenSolver> custom;  // forward only
  // Per area: every drive term is additive, and the number of connections that may add one
  // (the fused tail takes at most LeakTailTerms::kMax terms).
  std::vector<uint8_t> additive_only;
  std::vector<int> drive_terms;
  bool fused_tail = false;  // this run's frozen steps as Tail nodes (BpttOptions::fused_tail)
  int batch = -1;
  DType dtype = DType::F32;
  std::vector<int> ring_size, forward_delay;
  std::vector<OperatorRunner> runners;
  std::unique_ptr<OperatorRunner> input_runner;
  ParamStore pgrads;  // every parameter's gradient (the operators write into it by name)
  std::vector<Tensor> tau, gtau, zero_t;
  std::vector<uint8_t> tau_trainable;
  Tape tp;
  // The loss over [B, T, K] runs on one thread on the CPU (its summation order is fixed whatever
  // the context's thread count) and on the context's stream on CUDA.
  Context host_ctx{ContextOptions{Device::Cpu, 0, 0, 1}};
  Context& loss_ctx() { return ctx.device() == Device::Cpu ? host_ctx : ctx; }

  // Network state (what a checkpoint of the state holds).
  std::vector<VarRing> rings, slopes;
  std::vector<Var> memory, initial_slope;
  std::vector<uint8_t> memory_present;
  bool initial_slope_set = false;
  Tensor adapted;  // input adaption (a constant: the input needs no gradient)
  bool adaption_started = false;
  // Per step.
  std::vector<Var> fwd, zero_var;
  Shape frame_shape;  // [B, C, H, W] of one input frame

  // Per run.
  const Tensor* input = nullptr;
  const RunOptions* ropt = nullptr;
  const LossSpec* lspec = nullptr;
  int T = 0;
  bool replay = false;  // recomputing a segment: the loss-side bookkeeping is done already
  Tensor logits;        // [B, T, K] on the context's device (zeros where no classifier input)
  std::vector<Var> logit_var;  // per real step (current segment)
  struct Monitored {
    Var v;
    int module;
  };
  std::vector<Monitored> monitored;  // activity-loss values of the current segment
  std::vector<int64_t> module_calls;
  Tensor activity_acc;  // f64 [B] on the context's device: each sample's activity sum
  int n_modules = 0;
  int readout_module = -1, transform_module = -1;
  std::vector<int> conn_module, area_module;

  Impl(Context& c, Graph& graph, const SolverSpec& s) : ctx(c), g(graph), tp(c) {
    staged = s.staged();
    if (staged) {
      tab = s.resolved_tableau();
    } else if (s.custom) {
      custom = s.custom;
    } else if (!leak_rule_of(s.name, &rule)) {
      builtin_frozen_solver(s.name);  // throws the ConfigError naming the choices
    }
    additive_only.assign(g.areas.size(), 1);
    drive_terms.assign(g.areas.size(), 0);
    for (const Connection& c : g.connections) {
      if (c.entry == Entry::Output) ++drive_terms[size_t(c.target)];
      if (c.integration != Integration::Additive && c.kind != ConnKind::Feedforward)
        additive_only[size_t(c.target)] = 0;
    }
    const RingPlan plan = plan_rings(g, staged);
    ring_size = plan.size;
    forward_delay = plan.forward_delay;
  }

  // The dtype of what is not stored in the run's dtype: parameters and their gradients, tau and
  // its gradient, the loss values. f32 in bf16 runs (bf16 storage of the values on the tape and
  // their gradients, f32 master parameters), else the run's dtype.
  DType wide() const { return dtype == DType::BF16 ? DType::F32 : dtype; }

  void allocate(int B, DType t) {
    const DType want = t == DType::BF16 ? DType::F32 : t;
    for (const auto& e : g.params.entries())
      if (e.value.dtype() != want)
        throw DataError(concat("bptt: parameter ", e.name, " is ", dtype_name(e.value.dtype()),
                               " but the input is ", dtype_name(t),
                               t == DType::BF16
                                   ? " (bf16 runs keep f32 parameters)"
                                   : " (convert the graph's parameters to the run's dtype)"));
    if (B == batch && t == dtype) return;
    batch = B;
    dtype = t;
    runners.clear();
    for (const Connection& c : g.connections) runners.emplace_back(ctx, c.op, g.params, B, t);
    input_runner.reset();
    if (g.input_transform.in_channels > 0)
      input_runner = std::make_unique<OperatorRunner>(ctx, g.input_transform, g.params, B, t);
    pgrads = ParamStore();
    for (const auto& e : g.params.entries())
      pgrads.add(e.name, ctx.zeros(e.value.shape(), e.value.dtype()), e.trainable);
    const size_t A = g.areas.size();
    zero_t.assign(A, {});
    for (size_t a = 0; a < A; ++a) {
      const Area& ar = g.areas[a];
      zero_t[a] = ctx.zeros(Shape{B, ar.channels, ar.height, ar.width}, t);
    }
    frame_shape = Shape{B, g.input_channels, g.input_height, g.input_width};
    adapted = ctx.empty(frame_shape, t);
    // Activity-loss modules (legacy): every operator with parameters, the front-end, the
    // classifier (DynVision hooked every Conv2d and Linear).
    n_modules = 0;
    conn_module.assign(g.connections.size(), -1);
    for (size_t ci = 0; ci < g.connections.size(); ++ci)
      if (g.connections[ci].op.kind != OpKind::Identity) conn_module[ci] = n_modules++;
    transform_module = input_runner ? n_modules++ : -1;
    readout_module = g.readout.source >= 0 ? n_modules++ : -1;
  }

  // tau of every area from its parameter (which training changes) or its fixed value.
  void prepare_tau() {
    const size_t A = g.areas.size();
    tau.assign(A, {});
    gtau.assign(A, {});
    tau_trainable.assign(A, 0);
    for (size_t a = 0; a < A; ++a) {
      const Area& ar = g.areas[a];
      tau[a] = ctx.to_device(area_tau(ctx, g, ar, batch, wide()));
      if (ar.tau_per_sample.empty() && !ar.tau_param.empty())
        for (const auto& p : g.params.entries())
          if (p.name == ar.tau_param) tau_trainable[a] = p.trainable;
      if (tau_trainable[a]) gtau[a] = ctx.zeros(Shape{1}, wide());
    }
  }

  void reset_state() {
    const size_t A = g.areas.size();
    rings.assign(A, {});
    slopes.assign(A, {});
    for (size_t a = 0; a < A; ++a) {
      rings[a].reset(ring_size[a]);
      if (staged) slopes[a].reset(ring_size[a]);
    }
    memory.assign(A, kNone);
    memory_present.assign(A, 0);
    initial_slope.assign(A, kNone);
    initial_slope_set = false;
    adaption_started = false;
    fwd.assign(A, kNone);
  }

  void bind_constants() {
    zero_var.assign(g.areas.size(), kNone);
    for (size_t a = 0; a < g.areas.size(); ++a) zero_var[a] = tp.leaf(zero_t[a], false);
  }

  // ---- Building blocks: each runs its forward now and records its node. ----

  Var op(int ci, Var x, Var input_add = kNone, Var middle_add = kNone) {
    OperatorRunner& r = ci == kInputTransform ? *input_runner : runners[size_t(ci)];
    const Var y = tp.fresh(r.output_shape(), dtype);
    r.forward(ctx, tp.v(x), tp.v(y), input_add == kNone ? Tensor() : tp.v(input_add),
              middle_add == kNone ? Tensor() : tp.v(middle_add));
    Node n{NodeKind::Op};
    n.out = y;
    n.in0 = x;
    n.in1 = input_add;
    n.in2 = middle_add;
    n.index = ci;
    tp.add_node(n);
    return y;
  }
  // y = sum c_k x_k as the scheduler computes it: scale by c_0, then axpy the others in order.
  Var lin(const std::vector<std::pair<double, Var>>& terms) {
    const Var y = tp.fresh(tp.v(terms[0].second).shape(), dtype);
    ops::scale(ctx, terms[0].first, tp.v(terms[0].second), tp.v(y));
    for (size_t k = 1; k < terms.size(); ++k)
      ops::axpy(ctx, terms[k].first, tp.v(terms[k].second), tp.v(y));
    Node n{NodeKind::Lin};
    n.out = y;
    n.lin_begin = int(tp.lin_c.size());
    n.lin_count = int(terms.size());
    for (const auto& [c, x] : terms) {
      tp.lin_c.push_back(c);
      tp.lin_v.push_back(x);
    }
    return tp.add_node(n);
  }
  Var binary(NodeKind k, Var a, Var b) {
    const Var y = tp.fresh(tp.v(a).shape(), dtype);
    if (k == NodeKind::Add)
      ops::add(ctx, tp.v(a), tp.v(b), tp.v(y));
    else
      ops::mul_one_plus_tanh(ctx, tp.v(a), tp.v(b), tp.v(y));
    Node n{k};
    n.out = y;
    n.in0 = a;
    n.in1 = b;
    return tp.add_node(n);
  }
  Var frozen_step(int a, Var u, Var h) {
    const Var x = tp.fresh(tp.v(u).shape(), dtype);
    const Tensor hv = h == kNone ? Tensor() : tp.v(h);
    if (custom)
      custom->step(ctx, tp.v(u), hv, tau[size_t(a)], g.delays.dt, tp.v(x));
    else
      ops::leak_forward(ctx, LeakParams{rule, g.delays.dt}, tp.v(u), hv, tau[size_t(a)], tp.v(x));
    Node n{NodeKind::Frozen};
    n.out = x;
    n.in0 = u;
    n.in1 = h;
    n.index = a;
    return tp.add_node(n);
  }
  Var slope(int a, Var u, Var r) {
    const Var k = tp.fresh(tp.v(u).shape(), dtype);
    ops::leak_slope(ctx, tp.v(u), tp.v(r), tau[size_t(a)], tp.v(k));
    Node n{NodeKind::Slope};
    n.out = k;
    n.in0 = u;
    n.in1 = r;
    n.index = a;
    return tp.add_node(n);
  }
  // r = S(ReLU(x)).
  Var nonlinearity(int a, Var x) {
    const Var r = tp.fresh(tp.v(x).shape(), dtype);
    ops::relu_forward(ctx, tp.v(x), tp.v(r));
    Node n{NodeKind::Relu};
    n.out = r;
    n.in0 = x;
    tp.add_node(n);
    const Area& ar = g.areas[size_t(a)];
    if (ar.supralinearity == 1.0) return r;
    const Var s = tp.fresh(tp.v(x).shape(), dtype);
    SupralinearityParams sp;
    sp.n = ar.supralinearity;
    ops::supralinearity_forward(ctx, sp, tp.v(r), tp.v(s));
    Node m{NodeKind::Supra};
    m.out = s;
    m.in0 = r;
    m.index = a;
    return tp.add_node(m);
  }
  LeakTailParams tail_params(int a) const {
    const Area& ar = g.areas[size_t(a)];
    LeakTailParams lp;
    lp.rule = rule;
    lp.dt = g.delays.dt;
    lp.supralinear = ar.supralinearity != 1.0;
    lp.supra.n = ar.supralinearity;
    return lp;
  }
  LeakTailTerms tail_terms(const Node& n) const {
    LeakTailTerms lt;
    for (int k = 0; k < n.lin_count; ++k) lt.push(tp.v(tp.lin_v[size_t(n.lin_begin + k)]));
    return lt;
  }
  // r = S(ReLU(leak_step(t_0 + t_1 + ..., h))) in one pass, with the bits of frozen_step's
  // leak_forward over the chain of Add nodes and nonlinearity(). x (the state) is computed into
  // *x_out only when x_out is set; the backward recomputes it from the terms, h and tau.
  Var tail(int a, const std::vector<Var>& terms, Var h, Var* x_out) {
    const Var r = tp.fresh(tp.v(terms[0]).shape(), dtype);
    const Var x = x_out ? tp.fresh(tp.v(terms[0]).shape(), dtype) : kNone;
    Node n{NodeKind::Tail};
    n.out = r;
    n.in0 = h;
    n.aux = x;
    n.index = a;
    n.lin_begin = int(tp.lin_v.size());
    n.lin_count = int(terms.size());
    for (Var v : terms) {
      tp.lin_c.push_back(1.0);
      tp.lin_v.push_back(v);
    }
    ops::leak_tail_forward(ctx, tail_params(a), tail_terms(n), h == kNone ? Tensor() : tp.v(h),
                           tau[size_t(a)], x == kNone ? Tensor() : tp.v(x), tp.v(r));
    if (x_out) *x_out = x;
    return tp.add_node(n);
  }
  Var pool(int a, Var x) {
    const Area& ar = g.areas[size_t(a)];
    const Var y = tp.fresh(Shape{batch, ar.channels, ar.out_height(), ar.out_width()}, dtype);
    const Var am = tp.leaf(tp.take(tp.v(y).shape(), DType::I32), false);
    ops::maxpool2d_forward(ctx, ar.pool, tp.v(x), tp.v(y), tp.v(am));
    Node n{NodeKind::Pool};
    n.out = y;
    n.in0 = x;
    n.aux = am;
    n.index = a;
    return tp.add_node(n);
  }
  Var readout(Var v) {
    const Area& src = g.areas[size_t(g.readout.source)];
    const Var mean = tp.fresh(Shape{batch, src.channels}, dtype);
    ops::mean_hw_forward(ctx, tp.v(v), tp.v(mean));
    const Var y = tp.fresh(Shape{batch, g.readout.n_classes}, dtype);
    ops::linear_forward(ctx, tp.v(mean), g.params.get(g.readout.weight),
                        g.params.get(g.readout.bias), tp.v(y));
    Node n{NodeKind::Readout};
    n.out = y;
    n.in0 = v;
    n.aux = mean;
    return tp.add_node(n);
  }
  // A cut: the value as a constant (or, for checks, the value recorded at this cut earlier).
  Var detached(Var v) {
    if (v == kNone) return kNone;
    const size_t i = cut_count++;
    if (bopt->record_cuts && !replay) {
      if (bopt->record_cuts->size() <= i) bopt->record_cuts->resize(i + 1);
      (*bopt->record_cuts)[i] = ctx.to_host(tp.v(v));
    }
    if (bopt->frozen_cuts) {
      if (i >= bopt->frozen_cuts->size())
        throw DataError(concat("bptt: frozen_cuts holds ", bopt->frozen_cuts->size(),
                               " values but the run cuts more"));
      const Tensor t = tp.take(tp.v(v).shape(), dtype);
      ctx.copy(t, (*bopt->frozen_cuts)[i]);
      return tp.leaf(t, false);
    }
    return tp.leaf(tp.v(v), false);
  }
  size_t cut_count = 0;
  const BpttOptions* bopt = nullptr;

  // ---- The schedule (engine/dynamics/scheduler.cpp, step for step). ----

  // With `collect` (an area whose terms are all additive, at most LeakTailTerms::kMax of them)
  // the terms are listed in order for a Tail node instead of summed by Add nodes; u is then
  // one of them (kNone when every term is absent).
  template <class Reader>
  Var gather_drive(int a, Reader&& read, bool real, std::vector<Var>* collect = nullptr) {
    Var input_add = kNone, middle_add = kNone, u = kNone;
    if (collect) collect->clear();
    auto monitor = [&](int ci, Var y) {
      if (real && conn_module[size_t(ci)] >= 0) note_module(conn_module[size_t(ci)], y);
    };
    for (size_t ci = 0; ci < g.connections.size(); ++ci) {
      const Connection& c = g.connections[ci];
      if (c.target != a || c.entry == Entry::Output) continue;
      const Var h = read(ci);
      if (h == kNone) continue;
      const Var term = op(int(ci), h);
      monitor(int(ci), term);
      (c.entry == Entry::Input ? input_add : middle_add) = term;
    }
    for (size_t ci = 0; ci < g.connections.size(); ++ci) {
      const Connection& c = g.connections[ci];
      if (c.target != a || c.entry != Entry::Output) continue;
      const Var h = read(ci);
      if (c.kind == ConnKind::Feedforward) {
        if (h == kNone && input_add == kNone) continue;
        const Var f = h != kNone ? op(int(ci), h, input_add, middle_add)
                                 : op(int(ci), input_add, kNone, middle_add);
        monitor(int(ci), f);
        if (collect)
          collect->push_back(f), u = f;
        else
          u = u == kNone ? f : binary(NodeKind::Add, u, f);
        continue;
      }
      if (h == kNone) continue;
      const Var term = op(int(ci), h);
      monitor(int(ci), term);
      if (collect)
        collect->push_back(term), u = term;
      else if (u == kNone)
        u = term;  // an absent x gives T(h) alone, in both modes
      else
        u = binary(c.integration == Integration::Additive ? NodeKind::Add : NodeKind::Gate, u, term);
    }
    return u;
  }

  void check_finite(int a, int64_t t, Var x, const char* what) {
    if (!ropt->stability_check) return;
    const Tensor hx = ctx.host_view(tp.v(x));
    for (int64_t i = 0; i < hx.numel(); ++i)
      if (!std::isfinite(hx.item(i)))
        throw Error(concat("stability check: non-finite value in area ", g.areas[size_t(a)].name,
                           " at step ", t, " (tensor x, the state before the nonlinearity; ",
                           what, ")"));
  }

  void update_forwarded(int a, int64_t t, bool present, Var r) {
    const int k = forward_delay[size_t(a)];
    fwd[size_t(a)] = kNone;
    if (k < 0) return;
    const Var src = k == 0 ? (present ? r : kNone) : rings[size_t(a)].at(t - k);
    if (src == kNone) return;
    fwd[size_t(a)] = g.areas[size_t(a)].has_pool ? pool(a, src) : src;
  }

  std::vector<Var> tail_buf;  // the drive terms of a fused area's step
  void step_area(int a, int64_t t, Var x_in, bool real) {
    auto read = [&](size_t ci) -> Var {
      const Connection& c = g.connections[ci];
      if (!c.delivers) return kNone;
      if (c.source == kExternalInput) return x_in;
      if (c.kind == ConnKind::Feedforward) return fwd[size_t(c.source)];
      return rings[size_t(c.source)].at(t - c.delay_steps);
    };
    const bool fuse = fused_tail && additive_only[size_t(a)] &&
                      drive_terms[size_t(a)] <= LeakTailTerms::kMax;
    const Var u = gather_drive(a, read, real, fuse ? &tail_buf : nullptr);
    const Var prev = g.ring_capacity >= 1 ? rings[size_t(a)].at(t - 1) : kNone;
    const bool present = u != kNone;
    Var r = kNone;
    if (present && fuse) {
      const Var h = prev != kNone ? prev : (memory_present[size_t(a)] ? memory[size_t(a)] : kNone);
      Var x = kNone;
      const bool want_x = prev == kNone || ropt->stability_check;
      r = tail(a, tail_buf, h, want_x ? &x : nullptr);
      if (prev == kNone) {  // the solver's private memory: written only when no rate was passed
        memory[size_t(a)] = x;
        memory_present[size_t(a)] = 1;
      }
      if (ropt->stability_check)
        check_finite(a, t, x, t < ropt->idle_steps ? "idle phase" : "real phase");
      if (real) note_area(a, r);
    } else if (present) {
      const Var h = prev != kNone ? prev : (memory_present[size_t(a)] ? memory[size_t(a)] : kNone);
      const Var x = frozen_step(a, u, h);
      if (prev == kNone) {  // the solver's private memory: written only when no rate was passed
        memory[size_t(a)] = x;
        memory_present[size_t(a)] = 1;
      }
      check_finite(a, t, x, t < ropt->idle_steps ? "idle phase" : "real phase");
      r = nonlinearity(a, x);
      if (real) note_area(a, r);
    }
    rings[size_t(a)].write(t, present, r);
    update_forwarded(a, t, present, r);
  }

  Var history_at(int s, double when) {
    const int64_t m = int64_t(std::floor(when));
    const double u = when - double(m);
    auto value = [&](int64_t step) {
      const Var v = step < 0 ? kNone : rings[size_t(s)].at(step);
      return v != kNone ? v : zero_var[size_t(s)];
    };
    auto slope_at = [&](int64_t step, bool right) {
      if (step == -1)
        return right && initial_slope_set ? initial_slope[size_t(s)] : zero_var[size_t(s)];
      const Var v = step < 0 ? kNone : slopes[size_t(s)].at(step);
      return v != kNone ? v : zero_var[size_t(s)];
    };
    if (u < 1e-12) return value(m);
    const Hermite h(u);
    return lin({{h.h00, value(m)}, {h.h10, slope_at(m, true)}, {h.h01, value(m + 1)},
                {h.h11, slope_at(m + 1, false)}});
  }

  void step_staged(int64_t t, Var x_in, bool real) {
    const size_t A = g.areas.size();
    const double dt = g.delays.dt;
    const int S = tab.stages();
    std::vector<std::vector<Var>> K(A, std::vector<Var>(size_t(S), kNone));
    std::vector<Var> stage_r(A, kNone), stage_pooled(A, kNone);
    auto base = [&](size_t a) {
      const Var h = rings[a].at(t - 1);
      return h != kNone ? h : zero_var[a];
    };
    for (int i = 0; i < S; ++i) {
      const double when = double(t - 1) + tab.c[size_t(i)];
      for (size_t a = 0; a < A; ++a) {
        if (i == 0) {
          stage_r[a] = base(a);
        } else {
          std::vector<std::pair<double, Var>> terms{{1.0, base(a)}};
          for (int j = 0; j < i; ++j)
            if (tab.a[size_t(i)][size_t(j)] != 0)
              terms.push_back({dt * tab.a[size_t(i)][size_t(j)], K[a][size_t(j)]});
          stage_r[a] = nonlinearity(int(a), lin(terms));
        }
        if (g.areas[a].has_pool && forward_delay[a] == 0) stage_pooled[a] = pool(int(a), stage_r[a]);
      }
      for (size_t a = 0; a < A; ++a) {
        auto read = [&](size_t ci) -> Var {
          const Connection& c = g.connections[ci];
          if (!c.delivers) return kNone;
          if (c.source == kExternalInput) return x_in;
          const int src = c.source;
          const bool pooled_ff = c.kind == ConnKind::Feedforward && g.areas[size_t(src)].has_pool;
          if (c.delay_steps == 0) return pooled_ff ? stage_pooled[size_t(src)] : stage_r[size_t(src)];
          const Var v = history_at(src, when - c.delay_steps);
          return pooled_ff ? pool(src, v) : v;
        };
        // The activity loss sees the drive terms of the step's first stage (one call per step).
        Var u = gather_drive(int(a), read, real && i == 0);
        if (u == kNone) u = zero_var[a];  // no input: U = 0
        K[a][size_t(i)] = slope(int(a), u, stage_r[a]);
      }
      if (i == 0) {  // d r / d step at t - 1, kept for the interpolation of later reads
        for (size_t a = 0; a < A; ++a) {
          if (rings[a].at(t - 1) != kNone)
            slopes[a].write(t - 1, true, lin({{dt, K[a][0]}}));
          else if (t == 0)
            initial_slope[a] = lin({{dt, K[a][0]}});
        }
        if (t == 0) initial_slope_set = true;
      }
    }
    for (size_t a = 0; a < A; ++a) {
      std::vector<std::pair<double, Var>> terms{{1.0, base(a)}};
      for (int i = 0; i < S; ++i)
        if (tab.b[size_t(i)] != 0) terms.push_back({dt * tab.b[size_t(i)], K[a][size_t(i)]});
      const Var pre = lin(terms);
      check_finite(int(a), t, pre, "staged solver");
      const Var r = nonlinearity(int(a), pre);
      if (real) note_area(int(a), r);
      rings[a].write(t, true, r);
      update_forwarded(int(a), t, true, r);
    }
  }

  void step(int64_t t) {
    const int B = batch;
    const bool idle = t < ropt->idle_steps;
    const int64_t tr = t - ropt->idle_steps;
    const Var frame = tp.fresh(frame_shape, dtype);
    tp.req[size_t(frame)] = 0;
    const Tensor& fv = tp.v(frame);
    if (idle) {
      ops::fill(ctx, ropt->non_input_value, fv);
    } else {
      // Step tr of every sample: one strided copy (host or device input, any device).
      const int64_t per = fv.numel() / B, BT = int64_t(B) * T;
      ctx.copy_rows(fv, per, input->view(Shape{BT, per}).slice(tr, BT), T * per, B, per);
    }
    Var x_in = frame;
    if (ropt->input_adaption_weight != 0.0) {
      if (!adaption_started) {
        ops::scale(ctx, 1.0, fv, adapted);
        adaption_started = true;
      } else {
        ops::scale(ctx, ropt->input_adaption_weight, adapted, adapted);
      }
      ops::scale(ctx, 1.0, adapted, fv);
    }
    if (input_runner) {
      x_in = op(kInputTransform, x_in);
      if (!idle && transform_module >= 0) note_module(transform_module, x_in);
    }
    if (staged)
      step_staged(t, x_in, !idle);
    else
      for (size_t a = 0; a < g.areas.size(); ++a) step_area(int(a), t, x_in, !idle);
    if (!idle && g.readout.source >= 0) {
      const Var v = g.readout.delivers ? fwd[size_t(g.readout.source)] : kNone;
      if (v != kNone) {
        const Var y = readout(v);
        logit_var[size_t(tr)] = y;
        if (readout_module >= 0) note_module(readout_module, y);
        if (!replay) {  // into column tr of [B, T, K], on the device: no host read per step
          const int64_t K = g.readout.n_classes, BT = int64_t(B) * T;
          ctx.copy_rows(logits.view(Shape{BT, K}).slice(tr, BT), T * K, tp.v(y), K, B, K);
        }
      }
    }
    // DynVision's cuts: the rings are detached after the idle phase and every n-th real step.
    const bool cut = (idle && t + 1 == ropt->idle_steps) ||
                     (!idle && tbptt > 0 && (tr + 1) % tbptt == 0);
    if (cut) detach_rings();
  }
  int tbptt = 0;

  void detach_rings() {
    for (size_t a = 0; a < g.areas.size(); ++a) {
      for (Var& v : rings[a].var) v = detached(v);
      if (staged) {
        for (Var& v : slopes[a].var) v = detached(v);
        initial_slope[a] = detached(initial_slope[a]);
      }
    }
  }

  // ---- Activity loss bookkeeping. ----

  bool activity_on() const { return lspec->activity_weight != 0.0; }
  void note_module(int module, Var y) {
    if (!activity_on() || lspec->activity_mode != ActivityMode::Legacy) return;
    monitored.push_back({y, module});
    if (!replay) {
      ++module_calls[size_t(module)];
      add_activity(y, false);
    }
  }
  void note_area(int a, Var r) {
    if (!activity_on() || lspec->activity_mode != ActivityMode::Marked) return;
    const int m = area_module[size_t(a)];
    if (m < 0) return;
    monitored.push_back({r, m});
    if (!replay) {
      ++module_calls[size_t(m)];
      add_activity(r, lspec->activity_signed);
    }
  }
  // Per sample: sum |y| / n (absolute) or |sum y| / n (signed), accumulated in double on the
  // context's device (kernels/activity.h; on the CPU sequentially, as the host loop did).
  void add_activity(Var y, bool is_signed) {
    ops::activity_accumulate(ctx, tp.v(y), is_signed, activity_acc);
  }
  // Adds coef * d(activity)/dy to y's gradient.
  void seed_activity(Var y, double coef, bool is_signed) {
    ops::activity_seed(ctx, tp.v(y), coef, is_signed, tp.g(y));
  }

  // ---- Segments and snapshots (the checkpoint policy). ----

  struct Snapshot {
    std::vector<Tensor> values;  // distinct state values, in collect_state() order
    std::vector<uint8_t> req;
    std::vector<VarRing> rings, slopes;  // Vars replaced by indices into values (-1: none)
    std::vector<int> memory, initial_slope;
    std::vector<uint8_t> memory_present;
    bool initial_slope_set = false;
    Tensor adapted;
    bool adaption_started = false;
  };
  std::vector<Snapshot> snaps;
  std::vector<size_t> cut_base;  // cuts made before each segment

  // Every Var the state holds, each once, in a fixed order.
  std::vector<Var> collect_state() const {
    std::vector<Var> out;
    auto add = [&](Var v) {
      if (v != kNone && std::find(out.begin(), out.end(), v) == out.end()) out.push_back(v);
    };
    for (size_t a = 0; a < g.areas.size(); ++a) {
      for (Var v : rings[a].var) add(v);
      if (staged) {
        for (Var v : slopes[a].var) add(v);
        add(initial_slope[a]);
      }
      add(memory[a]);
    }
    return out;
  }

  void take_snapshot(Snapshot& s) {
    const std::vector<Var> vars = collect_state();
    auto idx = [&](Var v) {
      return v == kNone ? -1 : int(std::find(vars.begin(), vars.end(), v) - vars.begin());
    };
    s.values.resize(vars.size());
    s.req.assign(vars.size(), 0);
    for (size_t e = 0; e < vars.size(); ++e) {
      const Tensor& v = tp.v(vars[e]);
      if (!s.values[e].defined() || s.values[e].shape() != v.shape() || s.values[e].dtype() != v.dtype())
        s.values[e] = ctx.empty(v.shape(), v.dtype());
      ctx.copy(s.values[e], v);
      s.req[e] = tp.req[size_t(vars[e])];
    }
    auto map_ring = [&](const VarRing& r) {
      VarRing m = r;
      for (Var& v : m.var) v = idx(v);
      return m;
    };
    const size_t A = g.areas.size();
    s.rings.resize(A);
    s.slopes.resize(A);
    s.memory.resize(A);
    s.initial_slope.resize(A);
    for (size_t a = 0; a < A; ++a) {
      s.rings[a] = map_ring(rings[a]);
      if (staged) s.slopes[a] = map_ring(slopes[a]);
      s.memory[a] = idx(memory[a]);
      s.initial_slope[a] = idx(initial_slope[a]);
    }
    s.memory_present = memory_present;
    s.initial_slope_set = initial_slope_set;
    if (!s.adapted.defined() || s.adapted.shape() != adapted.shape() ||
        s.adapted.dtype() != adapted.dtype())
      s.adapted = ctx.empty(adapted.shape(), adapted.dtype());
    ctx.copy(s.adapted, adapted);
    s.adaption_started = adaption_started;
  }

  // Starts a fresh tape whose state is the snapshot's values as leaves; returns the leaves.
  std::vector<Var> restore_snapshot(const Snapshot& s) {
    tp.reset();
    bind_constants();
    std::vector<Var> leaves(s.values.size());
    for (size_t e = 0; e < s.values.size(); ++e) leaves[e] = tp.leaf(s.values[e], s.req[e] != 0);
    auto unmap = [&](int i) { return i < 0 ? kNone : leaves[size_t(i)]; };
    auto unmap_ring = [&](const VarRing& r) {
      VarRing m = r;
      for (Var& v : m.var) v = unmap(v);
      return m;
    };
    for (size_t a = 0; a < g.areas.size(); ++a) {
      rings[a] = unmap_ring(s.rings[a]);
      if (staged) slopes[a] = unmap_ring(s.slopes[a]);
      memory[a] = unmap(s.memory[a]);
      initial_slope[a] = unmap(s.initial_slope[a]);
    }
    memory_present = s.memory_present;
    initial_slope_set = s.initial_slope_set;
    ctx.copy(adapted, s.adapted);
    adaption_started = s.adaption_started;
    return leaves;
  }

  // ---- Reverse sweep over the current tape. ----

  void backward_tape() {
    const GradMode acc = GradMode::Accumulate;
    for (size_t ni = tp.nodes.size(); ni-- > 0;) {
      const Node& n = tp.nodes[ni];
      // The activity loss's own gradient joins once everything downstream has arrived (the
      // same order in every memory policy, so their results agree bit for bit).
      for (int k = 0; k < monitor_count[size_t(n.out)]; ++k)
        seed_activity(n.out, activity_coef_,
                      lspec->activity_mode == ActivityMode::Marked && lspec->activity_signed);
      // Nothing flows back through it (a Tail node also passes on its x's own gradient).
      if (!tp.grad[size_t(n.out)].defined() &&
          !(n.kind == NodeKind::Tail && n.aux != kNone && tp.grad[size_t(n.aux)].defined()))
        continue;
      const Tensor gy = tp.grad[size_t(n.out)];
      switch (n.kind) {
        case NodeKind::Op: {
          OperatorRunner& r = n.index == kInputTransform ? *input_runner : runners[size_t(n.index)];
          r.backward(ctx, tp.v(n.in0), gy, tp.g_or_none(n.in0), &pgrads, acc,
                     n.in1 == kNone ? Tensor() : tp.v(n.in1),
                     n.in2 == kNone ? Tensor() : tp.v(n.in2), tp.g_or_none(n.in1),
                     tp.g_or_none(n.in2));
          break;
        }
        case NodeKind::Lin:
          for (int k = 0; k < n.lin_count; ++k) {
            const Var x = tp.lin_v[size_t(n.lin_begin + k)];
            if (tp.needs(x)) ops::axpy(ctx, tp.lin_c[size_t(n.lin_begin + k)], gy, tp.g(x));
          }
          break;
        case NodeKind::Add:
          if (tp.needs(n.in0)) ops::axpy(ctx, 1.0, gy, tp.g(n.in0));
          if (tp.needs(n.in1)) ops::axpy(ctx, 1.0, gy, tp.g(n.in1));
          break;
        case NodeKind::Gate:
          ops::mul_one_plus_tanh_backward(ctx, gy, tp.v(n.in0), tp.v(n.in1), tp.g_or_none(n.in0),
                                          tp.g_or_none(n.in1), acc);
          break;
        case NodeKind::Frozen:
          ops::leak_backward(ctx, LeakParams{rule, g.delays.dt}, gy, tp.v(n.in0),
                             n.in1 == kNone ? Tensor() : tp.v(n.in1), tau[size_t(n.index)],
                             tp.g_or_none(n.in0), tp.g_or_none(n.in1), gtau[size_t(n.index)], acc);
          break;
        case NodeKind::Slope:
          ops::leak_slope_backward(ctx, gy, tp.v(n.in0), tp.v(n.in1), tau[size_t(n.index)],
                                   tp.g_or_none(n.in0), tp.g_or_none(n.in1),
                                   gtau[size_t(n.index)], acc);
          break;
        case NodeKind::Relu:
          if (tp.needs(n.in0)) ops::relu_backward(ctx, tp.v(n.in0), gy, tp.g(n.in0), acc);
          break;
        case NodeKind::Supra: {
          SupralinearityParams sp;
          sp.n = g.areas[size_t(n.index)].supralinearity;
          if (tp.needs(n.in0)) ops::supralinearity_backward(ctx, sp, gy, tp.v(n.in0), tp.g(n.in0), acc);
          break;
        }
        case NodeKind::Pool:
          if (tp.needs(n.in0))
            ops::maxpool2d_backward(ctx, g.areas[size_t(n.index)].pool, gy, tp.v(n.aux),
                                    tp.g(n.in0), acc);
          break;
        case NodeKind::Tail: {
          // The unfused chain's bits: every term's gradient is 0 + dL/du (the Add nodes pass
          // dL/du on unchanged into zeroed buffers): the first term that needs one gets it from
          // the op (accumulated into its zeroed buffer), the others a copy added to theirs.
          const Tensor gx = n.aux != kNone ? tp.grad[size_t(n.aux)] : Tensor();
          Var first = kNone;
          for (int k = 0; k < n.lin_count && first == kNone; ++k)
            if (tp.needs(tp.lin_v[size_t(n.lin_begin + k)])) first = tp.lin_v[size_t(n.lin_begin + k)];
          const Tensor gu = first == kNone ? Tensor() : tp.g(first);
          ops::leak_tail_backward(ctx, tail_params(n.index), gy, gx, tail_terms(n),
                                  n.in0 == kNone ? Tensor() : tp.v(n.in0), tau[size_t(n.index)],
                                  gu, tp.g_or_none(n.in0), gtau[size_t(n.index)], acc);
          for (int k = 0; k < n.lin_count; ++k) {
            const Var v = tp.lin_v[size_t(n.lin_begin + k)];
            if (v != first && tp.needs(v)) ops::axpy(ctx, 1.0, gu, tp.g(v));
          }
          if (n.aux != kNone) tp.release(n.aux);
          break;
        }
        case NodeKind::Readout: {
          const Tensor& gmean = tp.g(n.aux);
          ops::linear_backward(ctx, gy, tp.v(n.aux), g.params.get(g.readout.weight), gmean,
                               pgrads.get(g.readout.weight), pgrads.get(g.readout.bias), acc);
          if (tp.needs(n.in0)) ops::mean_hw_backward(ctx, gmean, tp.g(n.in0), acc);
          tp.release(n.aux);
          break;
        }
      }
      tp.release(n.out);
    }
  }

  Tensor seed;  // one step's logit gradients [B, K] on the context's device (reused)
  // Seeds the loss gradients of the current segment's logits and monitored values
  // (grad_logits [B, T, K] on the context's device).
  void seed_segment(const Tensor& grad_logits, double activity_coef) {
    const int64_t K = g.readout.n_classes, BT = int64_t(batch) * T;
    for (int tr = 0; tr < T; ++tr) {
      const Var y = logit_var[size_t(tr)];
      if (y == kNone) continue;
      if (!seed.defined() || seed.shape() != Shape{batch, K} || seed.dtype() != dtype)
        seed = ctx.empty(Shape{batch, K}, dtype);
      ctx.copy_rows(seed, K, grad_logits.view(Shape{BT, K}).slice(tr, BT), T * K, batch, K);
      ops::axpy(ctx, 1.0, seed, tp.g(y));
    }
    monitor_count.assign(tp.val.size(), 0);
    if (activity_coef != 0.0)
      for (const Monitored& m : monitored) ++monitor_count[size_t(m.v)];
  }
  std::vector<int> monitor_count;  // per Var of the current tape: activity terms it carries
  double activity_coef_ = 0;

  LossValues run(const Tensor& in, const Tensor& labels, const Tensor& targets,
                 const LossSpec& loss, const BpttOptions& opt, ParamStore* grads) {
    if (in.rank() != 5)
      throw DataError(concat("bptt: input must be [B, T, C, H, W], got ", in.str()));
    const int B = int(in.dim(0));
    T = int(in.dim(1));
    if (in.dim(2) != g.input_channels || in.dim(3) != g.input_height || in.dim(4) != g.input_width)
      throw DataError(concat("bptt: input frames are ", in.dim(2), "x", in.dim(3), "x", in.dim(4),
                             " but the model expects ", g.input_channels, "x", g.input_height,
                             "x", g.input_width));
    const int K = g.readout.source >= 0 ? g.readout.n_classes : 0;
    if (labels.defined() && (labels.dtype() != DType::I32 || labels.shape() != Shape{B, T}))
      throw DataError(concat("bptt: labels must be i32 [", B, ", ", T, "], got ", labels.str()));
    const bool regress = loss.mse_weight != 0 || loss.poisson_weight != 0;
    if (regress && (!targets.defined() || targets.shape() != Shape{B, T, K}))
      throw DataError(concat("bptt: mse/poisson losses need targets [", B, ", ", T, ", ", K,
                             "], got ", targets.defined() ? targets.str() : "none"));
    const DType target_t = in.dtype() == DType::BF16 ? DType::F32 : in.dtype();
    if (regress && !targets.is_cpu() && targets.dtype() != target_t)
      throw DataError(concat("bptt: device targets must be ", dtype_name(target_t),
                             in.dtype() == DType::BF16 ? " in a bf16 run" : " like the input",
                             ", got ", targets.str()));
    if (loss.ce_weight != 0 && K > 0 && !labels.defined())
      throw DataError("bptt: the cross-entropy loss needs labels");
    if (opt.memory == MemoryPolicy::Checkpoint && opt.checkpoint_every < 1)
      throw ConfigError(concat("bptt: checkpoint_every must be >= 1, got ", opt.checkpoint_every));
    if (opt.tbptt < 0) throw ConfigError(concat("bptt: tbptt must be >= 0, got ", opt.tbptt));
    if (grads && custom)
      throw NotImplemented(concat("solver '", custom->name(),
                                       "' is a custom FrozenSolver without a reverse mode"));
    allocate(B, in.dtype());
    // The self recurrence's scalars, read once per run (they change between runs, not within).
    for (OperatorRunner& r : runners) r.begin_run(ctx);
    if (input_runner) input_runner->begin_run(ctx);
    prepare_tau();
    fused_tail = opt.fused_tail && !staged && !custom;
    input = &in;
    ropt = &opt.run;
    lspec = &loss;
    tbptt = opt.tbptt;
    area_module.assign(g.areas.size(), -1);
    int n_act = n_modules;
    if (loss.activity_mode == ActivityMode::Marked) {
      n_act = 0;
      for (const std::string& name : loss.activity_areas) {
        const int a = g.area_index(name);
        if (a < 0) throw ConfigError(concat("activity loss: unknown area '", name, "'"));
        area_module[size_t(a)] = n_act++;
      }
    }
    module_calls.assign(size_t(std::max(n_act, 1)), 0);
    activity_acc = ctx.zeros(Shape{B}, DType::F64);
    logits = ctx.zeros(Shape{B, T, K}, dtype);  // new each run: out.logits may outlive it

    // Segments: [begin, end) of absolute steps.
    const int64_t total = int64_t(opt.run.idle_steps) + T;
    std::vector<std::pair<int64_t, int64_t>> segs;
    const int64_t k = opt.memory == MemoryPolicy::Checkpoint ? opt.checkpoint_every : total;
    for (int64_t s = 0; s < total; s += std::max<int64_t>(k, 1)) segs.push_back({s, std::min(total, s + k)});
    if (segs.empty()) segs.push_back({0, 0});
    if (snaps.size() < segs.size()) snaps.resize(segs.size());

    bopt = &opt;
    cut_base.resize(segs.size());
    auto run_segment = [&](size_t j) {
      if (!replay) cut_base[j] = cut_count;
      cut_count = cut_base[j];
      logit_var.assign(size_t(T), kNone);
      monitored.clear();
      for (int64_t t = segs[j].first; t < segs[j].second; ++t) step(t);
    };
    replay = false;
    cut_count = 0;
    tp.reset();
    reset_state();
    bind_constants();
    take_snapshot(snaps[0]);
    restore_snapshot(snaps[0]);
    for (size_t j = 0; j < segs.size(); ++j) {
      if (j > 0) {
        take_snapshot(snaps[j]);
        restore_snapshot(snaps[j]);
      }
      run_segment(j);
    }

    // The loss over all real steps, on the context's device (CPU: one thread); one host read
    // of the loss values and the logits per run.
    Context& lc = loss_ctx();
    LossValues out;
    const Tensor grad_logits = lc.zeros(Shape{B, T, K}, dtype);
    const Tensor flat = logits.view(Shape{int64_t(B) * T, K});
    const Tensor gflat = grad_logits.view(flat.shape());
    auto scalar = [&](double v) { return lc.to_device(Tensor::from(Shape{1}, {v}, wide())); };
    auto on_device = [&](const Tensor& t) {  // a host argument copied to a CUDA context
      return t.device() == lc.device() ? t : lc.to_device(t);
    };
    Tensor l_ce, l_mse, l_poisson;
    if (K > 0 && loss.ce_weight != 0) {
      CrossEntropyParams cp;
      cp.ignore_index = loss.ignore_index;
      const Tensor lab = on_device(labels).view(Shape{int64_t(B) * T});
      l_ce = lc.zeros(Shape{1}, wide());
      ops::cross_entropy_forward(lc, cp, flat, lab, l_ce);
      ops::cross_entropy_backward(lc, cp, scalar(loss.ce_weight * loss.scale), flat, lab, gflat,
                                  GradMode::Accumulate);
    }
    Tensor tg;  // the regression targets in the logits' dtype, on the loss context's device
    if (K > 0 && (loss.mse_weight != 0 || loss.poisson_weight != 0))
      tg = on_device(targets.is_cpu() ? targets.to_dtype(wide()) : targets).view(flat.shape());
    if (K > 0 && loss.mse_weight != 0) {
      l_mse = lc.zeros(Shape{1}, wide());
      ops::mse_forward(lc, flat, tg, l_mse);
      ops::mse_backward(lc, scalar(loss.mse_weight * loss.scale), flat, tg, gflat, {},
                        GradMode::Accumulate);
    }
    if (K > 0 && loss.poisson_weight != 0) {
      l_poisson = lc.zeros(Shape{1}, wide());
      PoissonNllParams pp;
      pp.log_input = loss.poisson_log_input;
      ops::poisson_nll_forward(lc, pp, flat, tg, l_poisson);
      ops::poisson_nll_backward(lc, pp, scalar(loss.poisson_weight * loss.scale), flat, tg, gflat,
                                GradMode::Accumulate);
    }
    if (l_ce.defined()) out.ce = lc.host_view(l_ce).item(0);
    if (l_mse.defined()) out.mse = lc.host_view(l_mse).item(0);
    if (l_poisson.defined()) out.poisson = lc.host_view(l_poisson).item(0);
    out.logits = lc.host_view(logits);
    if (out.logits.dtype() == DType::BF16) out.logits = out.logits.to_dtype(DType::F32);
    const Tensor& logits_host = out.logits;
    int64_t max_calls = 0;
    for (int64_t c : module_calls) max_calls = std::max(max_calls, c);
    double activity_coef = 0;
    if (loss.activity_weight != 0 && max_calls > 0 && n_act > 0) {
      const double denom = double(n_act) * double(max_calls);
      double sum = 0;
      const Tensor acc = ctx.host_view(activity_acc);  // one read per run
      for (int b = 0; b < B; ++b) sum += acc.item(b);
      out.activity = sum / denom / B;
      activity_coef = loss.activity_weight * loss.scale / denom / B;
    }
    out.total = loss.ce_weight * out.ce + loss.activity_weight * out.activity +
                loss.mse_weight * out.mse + loss.poisson_weight * out.poisson;
    // Accuracy over the labelled entries (argmax, first maximum on ties).
    out.valid_per_step.assign(size_t(T), 0);
    out.correct_per_step.assign(size_t(T), 0);
    if (labels.defined() && K > 0) {
      const Tensor lab = ctx.host_view(labels);
      for (int b = 0; b < B; ++b)
        for (int t = 0; t < T; ++t) {
          const int y = int(lab.item(int64_t(b) * T + t));
          if (y == loss.ignore_index || y < 0 || y >= K) continue;
          int best = 0;
          const int64_t row = (int64_t(b) * T + t) * K;
          for (int c = 1; c < K; ++c)
            if (logits_host.item(row + c) > logits_host.item(row + best)) best = c;
          ++out.valid_per_step[size_t(t)];
          if (best == y) ++out.correct_per_step[size_t(t)];
        }
      for (int t = 0; t < T; ++t) {
        out.valid += out.valid_per_step[size_t(t)];
        out.correct += out.correct_per_step[size_t(t)];
      }
    }
    if (!grads) return out;

    // The reverse sweep, segment by segment from the last; each earlier one is recomputed from
    // its snapshot, and the gradients of its end state carried over from the later segment.
    for (auto& e : pgrads.entries()) ops::fill(ctx, 0.0, e.value);
    for (auto& gt : gtau)
      if (gt.defined()) ops::fill(ctx, 0.0, gt);
    std::vector<Tensor> carried;
    replay = true;
    for (size_t j = segs.size(); j-- > 0;) {
      std::vector<Var> leaves;
      if (j + 1 != segs.size()) {
        leaves = restore_snapshot(snaps[j]);
        run_segment(j);
      } else {
        // The last segment's tape is the forward's; its leaves are the first state Vars.
        leaves.clear();
        for (size_t e = 0; e < snaps[j].values.size(); ++e)
          leaves.push_back(Var(zero_var.size() + e));
      }
      activity_coef_ = activity_coef;
      seed_segment(grad_logits, activity_coef);
      if (!carried.empty()) {
        const std::vector<Var> end_state = collect_state();
        if (end_state.size() != carried.size())
          throw Error("bptt: internal error: the recomputed segment's state differs from the snapshot");
        for (size_t e = 0; e < carried.size(); ++e)
          if (carried[e].defined() && tp.needs(end_state[e]))
            ops::axpy(ctx, 1.0, carried[e], tp.g(end_state[e]));
        for (Tensor& c : carried)
          if (c.defined()) tp.free_grads.push_back(c);
      }
      backward_tape();
      carried.assign(leaves.size(), Tensor());
      for (size_t e = 0; e < leaves.size(); ++e) {
        carried[e] = tp.grad[size_t(leaves[e])];
        tp.grad[size_t(leaves[e])] = Tensor();
      }
    }
    for (Tensor& c : carried)
      if (c.defined()) tp.free_grads.push_back(c);
    replay = false;
    finish_grads(*grads);
    return out;
  }

  // tau's gradient through its parametrisation, then grads += the trainable parameters' ones.
  void finish_grads(ParamStore& grads) {
    for (size_t a = 0; a < g.areas.size(); ++a) {
      if (!tau_trainable[a]) continue;
      const Area& ar = g.areas[a];
      Tensor gt = ctx.to_host(gtau[a]);
      if (ar.tau_softplus) {  // tau = softplus(s): d tau / d s = sigmoid(s)
        const double s = ctx.to_host(g.params.get(ar.tau_param)).item(0);
        gt.set(0, gt.item(0) / (1.0 + std::exp(-s)));
      }
      Tensor& pg = pgrads.get(ar.tau_param);
      ops::axpy(ctx, 1.0, ctx.to_device(gt.view(pg.shape())), pg);
    }
    for (const auto& e : g.params.entries()) {
      if (!e.trainable) continue;
      if (!grads.has(e.name))
        throw DataError(concat("bptt: the gradient store has no entry '", e.name,
                               "' (make it with Bptt::zero_grads)"));
      Tensor& dst = grads.get(e.name);
      check_arg("bptt gradients", e.name.c_str(), dst, pgrads.get(e.name), e.value.shape());
      ops::axpy(ctx, 1.0, pgrads.get(e.name), dst);
    }
  }
};

Bptt::Bptt(Context& ctx, Graph& graph, const SolverSpec& solver)
    : impl_(std::make_unique<Impl>(ctx, graph, solver)) {}
Bptt::~Bptt() = default;

LossValues Bptt::run(const Tensor& input, const Tensor& labels, const Tensor& targets,
                     const LossSpec& loss, const BpttOptions& opt, ParamStore* grads) {
  return impl_->run(input, labels, targets, loss, opt, grads);
}

ParamStore Bptt::zero_grads(Context& ctx, const ParamStore& params) {
  ParamStore g;
  for (const auto& e : params.entries())
    if (e.trainable) g.add(e.name, ctx.zeros(e.value.shape(), e.value.dtype()));
  return g;
}

void Bptt::zero(Context& ctx, ParamStore& grads) {
  for (auto& e : grads.entries()) ops::fill(ctx, 0.0, e.value);
}

int64_t Bptt::pool_bytes() const {
  int64_t b = impl_->tp.bytes();
  for (const auto& s : impl_->snaps)
    for (const Tensor& t : s.values)
      if (t.defined()) b += t.numel() * int64_t(dtype_size(t.dtype()));
  return b;
}

}  // namespace dynsim
