// Scalar graphs with closed-form solutions: the cases of `dynsim solvers`
// (work_precision.cpp) and the solver tests (tests/engine/dynamics).
#pragma once
#include <string>

#include "engine/dynamics/graph.h"

namespace dynsim::models {

// Scalar areas (1 channel, 1x1) fed by a 1x1 conv of the input (weight 1), an optional chain
// A -> B with weight w_ff, and an optional self recurrence of A with weight w_rec and delay.
inline Graph scalar_graph(double dt, double tau, bool chain, double w_ff, double w_rec, double t_rec,
                          double t_ff = 0) {
  Graph g;
  g.input_channels = 1;
  g.input_height = g.input_width = 1;
  auto add_area = [&](const std::string& n) {
    Area a;
    a.name = n;
    a.channels = a.height = a.width = 1;
    a.tau = tau;
    g.areas.push_back(a);
  };
  auto conv = [&](const std::string& name, int src, int tgt, double w) {
    Connection c;
    c.name = name;
    c.source = src;
    c.target = tgt;
    c.op.kind = OpKind::Conv;
    c.op.in_channels = c.op.out_channels = 1;
    c.op.kernel = 1;
    c.op.in_h = c.op.in_w = 1;
    c.op.bias = false;
    c.op.params = {name + ".weight"};
    g.params.add(name + ".weight", Tensor::from(Shape{1, 1, 1, 1}, {float(w)}));
    return c;
  };
  add_area("A");
  g.connections.push_back(conv("A.conv", kExternalInput, 0, 1.0));
  if (w_rec != 0) {
    Connection r = conv("A.recurrence", 0, 0, w_rec);
    r.kind = ConnKind::Recurrent;
    g.connections.push_back(r);
  }
  if (chain) {
    add_area("B");
    g.connections.push_back(conv("B.conv", 0, 1, w_ff));
  }
  g.delays.dt = dt;
  g.delays.t_recurrence = t_rec;
  g.delays.t_feedforward = t_ff;
  g.resolve_delays();
  g.validate();
  return g;
}

}  // namespace dynsim::models
