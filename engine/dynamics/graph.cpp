// Graph: delay resolution with DynVision's rules, shape validation, summary.
#include "engine/dynamics/graph.h"

#include <algorithm>
#include <cmath>
#include <sstream>

namespace dynsim {

const char* op_kind_name(OpKind k) {
  switch (k) {
    case OpKind::Conv: return "conv";
    case OpKind::TwoStage: return "two-stage conv";
    case OpKind::DepthPoint: return "depthpointwise";
    case OpKind::PointDepth: return "pointdepthwise";
    case OpKind::Self: return "self";
    case OpKind::Local: return "local";
    case OpKind::LocalDepthwise: return "localdepthwise";
    case OpKind::Identity: return "identity";
  }
  return "?";
}
const char* conn_kind_name(ConnKind k) {
  switch (k) {
    case ConnKind::Feedforward: return "feedforward";
    case ConnKind::Recurrent: return "recurrent";
    case ConnKind::Skip: return "skip";
    case ConnKind::Feedback: return "feedback";
  }
  return "?";
}

int OpSpec::out_h() const {
  const int pad = kernel / 2;
  switch (kind) {
    case OpKind::Conv: case OpKind::TwoStage:
      return (in_h + 2 * pad - kernel) / stride + 1;
    default: return in_h;
  }
}
int OpSpec::out_w() const {
  const int pad = kernel / 2;
  switch (kind) {
    case OpKind::Conv: case OpKind::TwoStage:
      return (in_w + 2 * pad - kernel) / stride + 1;
    default: return in_w;
  }
}

int Area::out_height() const {
  return has_pool ? int(pool.output_shape(Shape{1, channels, height, width})[2]) : height;
}
int Area::out_width() const {
  return has_pool ? int(pool.output_shape(Shape{1, channels, height, width})[3]) : width;
}

long round_half_even(double v) { return long(std::nearbyint(v)); }  // FE_TONEAREST: ties to even

int Graph::area_index(const std::string& name) const {
  for (size_t i = 0; i < areas.size(); ++i)
    if (areas[i].name == name) return int(i);
  return -1;
}

void Graph::resolve_delays() {
  const DelaySettings& d = delays;
  if (!(d.dt > 0)) throw ConfigError(concat("dt must be positive, got ", d.dt));
  // DynVision's history length H and buffer capacity N = int(H / dt) (spec §4.1).
  double H = std::max(d.t_feedforward, d.t_recurrence);
  for (const Connection& c : connections) {
    double ms = c.delay_given ? c.delay_ms
                              : (c.kind == ConnKind::Skip       ? d.t_skip
                                 : c.kind == ConnKind::Feedback ? d.t_feedback
                                 : c.kind == ConnKind::Recurrent ? d.t_recurrence
                                                                 : d.t_feedforward);
    if (c.kind == ConnKind::Feedback) H = std::max(H, ms);
    if (c.kind == ConnKind::Skip) H = std::max(H, ms + d.dt);
    if (c.kind == ConnKind::Recurrent || c.kind == ConnKind::Feedforward) H = std::max(H, ms);
  }
  ring_capacity = int(H / d.dt);
  warnings.clear();
  auto report = [&](const std::string& what) {
    if (d.strict) throw ConfigError(what + " (strict = true)");
    warnings.push_back(what);
  };
  for (Connection& c : connections) {
    const double ms = c.delay_given ? c.delay_ms
                                    : (c.kind == ConnKind::Skip       ? d.t_skip
                                       : c.kind == ConnKind::Feedback ? d.t_feedback
                                       : c.kind == ConnKind::Recurrent ? d.t_recurrence
                                                                       : d.t_feedforward);
    if (ms < 0) throw ConfigError(concat("connection ", c.name, ": negative delay ", ms, " ms"));
    const double ratio = ms / d.dt;  // the same double division as Python's t / dt
    const int N = ring_capacity;
    int need = 0;  // DynVision's buffer index for this read
    switch (c.kind) {
      case ConnKind::Feedforward:  // k = int(t_ff/dt); k = 0 passes the value itself
        c.delay_steps = int(ratio);
        need = c.delay_steps;
        break;
      case ConnKind::Recurrent:  // d = max(1, int(t_rec/dt))
        c.delay_steps = std::max(1, int(ratio));
        need = c.delay_steps;
        break;
      case ConnKind::Skip:  // s = round(t_skip/dt), read at buffer index s + 1
        c.delay_steps = int(round_half_even(ratio));
        need = c.delay_steps + 1;
        break;
      case ConnKind::Feedback:  // f = max(1, round(t_fb/dt))
        c.delay_steps = std::max(1, int(round_half_even(ratio)));
        need = c.delay_steps;
        break;
    }
    c.delivers = need <= N;
    if (!c.delivers)
      report(concat("connection ", c.name, " (", conn_kind_name(c.kind), ", ", ms, " ms = ",
                    c.delay_steps, " steps) can never deliver: it needs history entry ", need,
                    " but the buffers hold N = int(", H, "/", d.dt, ") = ", N,
                    " (DynVision drops it silently)"));
  }
  if (readout.source >= 0) {
    readout.delay_steps = int(d.t_feedforward / d.dt);
    readout.delivers = readout.delay_steps <= ring_capacity;
    if (!readout.delivers)
      report(concat("the classifier reads ", areas[size_t(readout.source)].name, " at delay ",
                    readout.delay_steps, " steps > N = ", ring_capacity,
                    ": the logits stay 0 for ever"));
  }
  if (ring_capacity == 0)
    report(concat("buffer capacity N = int(", H, "/", d.dt,
                  ") = 0: recurrence is silently off and each area integrates its own pre-ReLU "
                  "state (DynVision's fallback)"));
}

int Graph::max_read_age(int a) const {
  int age = 0;
  for (const Connection& c : connections)
    if (c.source == a && c.delivers) age = std::max(age, c.delay_steps);
  if (readout.source == a && readout.delivers) age = std::max(age, readout.delay_steps);
  if (ring_capacity >= 1) age = std::max(age, 1);  // the solver's r(t - 1)
  return age;
}

void Graph::validate() const {
  check_inputs();
  for (const Connection& c : connections) {
    if (c.target < 0 || c.target >= int(areas.size()))
      throw ConfigError(concat("connection ", c.name, ": target area index ", c.target));
    if (c.source != kExternalInput && (c.source < 0 || c.source >= int(areas.size())))
      throw ConfigError(concat("connection ", c.name, ": source area index ", c.source));
    const Area& t = areas[size_t(c.target)];
    if (c.kind == ConnKind::Feedforward && c.source != kExternalInput && c.source >= c.target)
      throw ConfigError(concat("connection ", c.name, ": a feedforward source must come before ",
                               "its target in the area order"));
    if (c.source != kExternalInput && c.source >= c.target && c.delay_steps < 1)
      throw ConfigError(concat("connection ", c.name, ": a connection from ",
                               areas[size_t(c.source)].name, " to ", t.name,
                               " (not earlier in the step order) needs a delay of >= 1 step"));
    if (c.entry == Entry::Output) {
      const int oc = c.op.kind == OpKind::Identity ? c.op.in_channels : c.op.out_channels;
      const int oh = c.op.resize_h ? c.op.resize_h : c.op.out_h();
      const int ow = c.op.resize_w ? c.op.resize_w : c.op.out_w();
      if (oc != t.channels || oh != t.height || ow != t.width)
        throw ConfigError(concat("connection ", c.name, ": produces ", oc, "x", oh, "x", ow,
                                 " but area ", t.name, " is ", t.channels, "x", t.height, "x",
                                 t.width));
    }
  }
}

void Graph::check_inputs() const {
  for (size_t a = 0; a < areas.size(); ++a) {
    bool fed = false;
    for (const Connection& c : connections)
      if (c.target == int(a) && c.source != int(a)) fed = true;
    if (!fed)
      throw ConfigError(concat("area ", areas[a].name, " never receives input: no connection ",
                               "from the input or another area targets it"));
  }
}

std::string Graph::summary() const {
  std::ostringstream s;
  s << "areas (processing order):\n";
  for (const Area& a : areas)
    s << "  " << a.name << ": " << a.channels << "x" << a.height << "x" << a.width
      << " tau=" << a.tau << (a.has_pool ? " pool" : "") << "\n";
  s << "connections (buffer capacity N = " << ring_capacity << "):\n";
  for (const Connection& c : connections)
    s << "  " << c.name << ": "
      << (c.source == kExternalInput ? std::string("input") : areas[size_t(c.source)].name)
      << " -> " << areas[size_t(c.target)].name << " " << conn_kind_name(c.kind) << " "
      << op_kind_name(c.op.kind) << " delay " << c.delay_steps << (c.delivers ? "" : " (never)")
      << "\n";
  return s.str();
}

}  // namespace dynsim
