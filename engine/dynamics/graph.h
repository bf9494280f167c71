// The model graph: areas (leaky-integrating populations with a state r of shape [C, H, W]) and
// connections (operator + delay + kind + integration). A preset (models/) or a config builds a
// Graph; the Scheduler runs it. Delays in ms become steps once, here, with DynVision's rules
// (spec §4.2): every read is "r_src(t - delay)" plus a flag saying whether it can ever deliver.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "engine/core/params.h"
#include "kernels/pool2d.h"

namespace dynsim {

enum class ConnKind : uint8_t { Feedforward, Recurrent, Skip, Feedback };
enum class Integration : uint8_t { Additive, Multiplicative };  // x + T(h) | x * (1 + tanh(T(h)))
// Where a connection's term enters its target: the drive (output), the input of the target's
// feedforward operator (input), or between the two stages of a two-stage operator (middle).
enum class Entry : uint8_t { Output, Input, Middle };

// Operator forms. Conv: k x k conv (stride, groups); TwoStage: conv1 (stride) -> ReLU -> conv2;
// DepthPoint / PointDepth: separable pairs; Self: one scalar w (and b) for the whole layer;
// Local: the cortical-sheet conv (spec §3); LocalDepthwise: Local then a depthwise k x k;
// Identity: the source as it is. The result is nearest-resized to (resize_h, resize_w) when set.
enum class OpKind : uint8_t { Conv, TwoStage, DepthPoint, PointDepth, Self, Local, LocalDepthwise,
                              Identity };
const char* op_kind_name(OpKind k);
const char* conn_kind_name(ConnKind k);

struct OpSpec {
  OpKind kind = OpKind::Conv;
  int in_channels = 0, out_channels = 0, mid_channels = 0;  // mid: TwoStage conv1's output
  int kernel = 3, stride = 1;
  bool bias = true;
  int in_h = 0, in_w = 0;          // size of the operator's input
  int resize_h = 0, resize_w = 0;  // nearest resize of the result (0: none)
  // Parameter names in the ParamStore, DynVision's state_dict names (e.g. "V1.conv.weight").
  std::vector<std::string> params;
  // Output size of the operator before the resize.
  int out_h() const;
  int out_w() const;
};

struct Connection {
  std::string name;      // prefix of its parameter names ("V1.recurrence", "addskip_V4", ...)
  int source = -1;       // area index, or kExternalInput
  int target = 0;
  ConnKind kind = ConnKind::Feedforward;
  OpSpec op;
  Integration integration = Integration::Additive;
  Entry entry = Entry::Output;
  // Delay: given in ms (or absent), converted to steps by the graph's rules.
  bool delay_given = false;
  double delay_ms = 0;
  int delay_steps = 0;      // reads r_src(t - delay_steps)
  bool delivers = true;     // false: DynVision's buffer can never hold it (warned at build)
  bool source_pooled = false;  // feedforward: reads the source's pooled output
};
constexpr int kExternalInput = -1;

struct Area {
  std::string name;
  int channels = 0, height = 0, width = 0;  // r(t), before pooling
  double tau = 5.0;
  std::vector<double> tau_per_sample;  // optional [B]: per-sample tau for scans in one batch
  bool train_tau = false;
  double supralinearity = 1.0;  // n; 1 = off
  bool has_pool = false;
  Pool2dParams pool;
  int out_height() const;  // after pooling
  int out_width() const;
  std::string tau_param;   // "tau_V1" when tau is a parameter (x4/x8), else ""
  // The parameter holds s with tau = log(1 + exp(s)): positive whatever training does to s
  // (DynVision's tau is unconstrained; spec §10.15). The parameter is then "tau_softplus_<A>".
  bool tau_softplus = false;
};

// The classifier reads the last area's forwarded output: logits = W mean_HW(r(t - k)) + b.
struct Readout {
  int source = -1;  // area index; -1: no classifier
  int n_classes = 0;
  int delay_steps = 0;
  bool delivers = true;
  std::string weight = "classifier.2.weight", bias = "classifier.2.bias";
};

struct DelaySettings {
  double dt = 2.0;
  double t_feedforward = 0, t_recurrence = 6, t_skip = 0, t_feedback = 30;
  bool strict = false;  // a connection that can never deliver is an error, not a warning
};

struct Graph {
  std::vector<Area> areas;
  std::vector<Connection> connections;  // in the order their terms are summed per target
  Readout readout;
  ParamStore params;
  DelaySettings delays;
  int input_channels = 3, input_height = 0, input_width = 0;
  // Optional transform of every frame before the first area (the retina front-end): kind
  // OpKind::None-like when in_channels == 0.
  OpSpec input_transform{OpKind::Identity, 0, 0, 0, 0, 1, false, 0, 0, 0, 0, {}};
  int ring_capacity = 0;  // DynVision's N = int(H / dt), shared by all areas
  std::vector<std::string> warnings;  // filled by resolve_delays

  int area_index(const std::string& name) const;  // -1 if absent
  // Applies the DynVision delay rules (spec §4.1-4.2) to every connection and the readout,
  // sets ring_capacity and `delivers`, and records a warning for every connection that can
  // never deliver (ConfigError instead when delays.strict).
  void resolve_delays();
  // Largest age any read of area a needs (0 if nobody reads its history).
  int max_read_age(int a) const;
  // Checks shapes of every operator against its source and target, and that every area is fed
  // by the input or another area; throws ConfigError.
  void validate() const;
  void check_inputs() const;
  std::string summary() const;  // a table of areas and connections
};

// Python's round(): halves to even (DynVision's rule for skip and feedback delays).
long round_half_even(double v);

}  // namespace dynsim
