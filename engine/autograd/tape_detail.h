// The tape of the reverse mode through time (engine/autograd/bptt.h), shared by its source files
// (not part of its API): Var and Node (one recorded component call), Tape (the values, their
// gradients and the nodes, with the memory policy: a value pool reused run after run and a free
// list of gradient buffers), VarRing (an area's history as Vars) and the built-in frozen
// solvers' leak rules. (The Hermite basis of the staged solvers' delayed reads is the
// Scheduler's: engine/dynamics/hermite.h.) Users: bptt_detail.h (Bptt::Impl) and its source
// files bptt.cpp, bptt_forward.cpp (records the nodes), bptt_reverse.cpp (runs their backward)
// and bptt_checkpoint.cpp (snapshots of the state).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "engine/core/context.h"
#include "engine/core/tensor.h"
#include "kernels/dispatch.h"

namespace dynsim::autograd_detail {

using Var = int;
inline constexpr Var kNone = -1;
inline constexpr int kInputTransform = -2;  // Node::index of the retina front-end operator

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

inline bool leak_rule_of(const std::string& name, LeakRule* rule) {
  if (name == "euler") *rule = LeakRule::Euler;
  else if (name == "rk4") *rule = LeakRule::Rk4Frozen;
  else if (name == "exp") *rule = LeakRule::Exp;
  else return false;
  return true;
}

}  // namespace dynsim::autograd_detail
