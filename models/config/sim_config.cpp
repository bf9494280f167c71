// The simulation config schema and builders (models/config/sim_config.h).
#include "models/config/sim_config.h"

#include <cmath>

#include "engine/dynamics/sequence.h"
#include "engine/dynamics/stimulus.h"
#include "engine/io/safetensors.h"
#include "models/common/init.h"
#include "models/common/weights.h"
#include "models/dyrcnn/dyrcnn.h"

namespace dynsim::models {
namespace {

ConfigSchema make_area_schema() {
  ConfigSchema a;
  a.add_string("name", "", "area name (unique)").required();
  a.add_int("channels", 1, "channels of r(t)").required().at_least(1);
  a.add_int("height", 1, "height of r(t)").required().at_least(1);
  a.add_int("width", 1, "width of r(t)").required().at_least(1);
  a.add_double("tau", 0, "time constant in ms (default: dynamics.tau)").optional().greater_than(0);
  a.add_bool("pool", false, "MaxPool(3, 2, 1) on the forwarded output");
  a.add_double("supralinearity", 1.0, "exponent n of the supralinearity (1 = off)").greater_than(0);
  return a;
}

ConfigSchema make_connection_schema() {
  ConfigSchema c;
  c.add_string("name", "", "connection name, the prefix of its parameter names").required();
  c.add_string("source", "", "'input' or an area name").required();
  c.add_string("target", "", "area name").required();
  c.add_enum("kind", {"feedforward", "recurrent", "skip", "feedback"}, "feedforward",
             "which delay rule applies (spec §4.2)");
  c.add_enum("operator",
             {"conv", "twostage", "depthpointwise", "pointdepthwise", "self", "local",
              "localdepthwise", "identity"},
             "conv", "operator applied to the source");
  c.add_int("kernel", 3, "kernel size (odd; padding kernel/2)").at_least(1);
  c.add_int("stride", 1, "stride of the (first) conv").at_least(1);
  c.add_int("mid_channels", 0, "twostage: channels after the first conv").at_least(0);
  c.add_bool("bias", true, "operators with a bias");
  c.add_enum("integration", {"add", "mul"}, "add", "x + T(h) or x * (1 + tanh(T(h)))");
  c.add_enum("entry", {"output", "input", "middle"}, "output",
             "where the term enters the target (drive, ff input, between two stages)");
  c.add_double("delay", 0, "delay in ms (default: the kind's dynamics.t_*)").optional().at_least(0);
  return c;
}

}  // namespace

void add_model_keys(ConfigSchema& s) {
  s.add_enum("model.preset", {"DyRCNNx2", "DyRCNNx4", "DyRCNNx8", "custom"}, "DyRCNNx4",
             "model family member, or 'custom' for the [[area]] / [[connection]] tables");
  s.add_int("model.n_classes", 10, "classifier outputs (0: no classifier)").at_least(0);
  s.add_int("model.input_channels", 3, "channels of the input frames").at_least(1);
  s.add_int("model.input_height", 64, "input height (DyRCNN: divisible by 8)").at_least(1);
  s.add_int("model.input_width", 64, "input width (DyRCNN: divisible by 8)").at_least(1);
  s.add_enum("model.recurrence_type",
             {"full", "self", "depthpointwise", "pointdepthwise", "local", "localdepthwise",
              "none"},
             "full", "recurrent operator of every area (spec §3)");
  s.add_enum("model.recurrence_target", {"output", "input", "middle"}, "output",
             "where the recurrent term enters (middle: DyRCNNx8 only)");
  s.add_bool("model.skip", true, "skip connections V1->V4, V2->IT");
  s.add_enum("model.feedback", {"none", "add", "mul"}, "none",
             "feedback V4->V1, IT->V2: off, additive or multiplicative");
  s.add_bool("model.feedforward_only", false, "no recurrence, skip or feedback (a lesion)");
  s.add_double("model.supralinearity", 1.0, "exponent n of 0.8 x^n after the ReLU (1 = off)")
      .greater_than(0);
  s.add_double("model.input_adaption_weight", 0.0, "DynVision's InputAdaption weight (0 = off)");
  s.add_bool("model.retina", false, "conv9-ReLU-conv9 front-end before V1");
  s.add_bool("model.bias", true, "convolutions with biases");
  s.add_double("model.max_weight_init", 1e-3, "bound of the recurrent weights' uniform init")
      .greater_than(0);
  s.add_int("model.seed", 0, "seed of the parameter initialisation").at_least(0);
  s.add_string("model.weights", "", "safetensors file with DynVision state_dict names");
  s.add_table_array("area", make_area_schema(), "custom graph: areas in processing order");
  s.add_table_array("connection", make_connection_schema(),
                    "custom graph: connections, summed per target in this order");

  s.add_double("dynamics.dt", 2.0, "integration step in ms").greater_than(0);
  s.add_number_or_map("dynamics.tau", 5.0, "time constant in ms, or per area {V1 = 5, ...}")
      .greater_than(0);
  s.add_doubles("dynamics.tau_per_sample", {}, "one tau per batch sample (scans in one batch)");
  s.add_double("dynamics.t_feedforward", 0.0, "feedforward delay in ms").at_least(0);
  s.add_double("dynamics.t_recurrence", 6.0, "recurrence delay in ms").at_least(0);
  s.add_double("dynamics.t_skip", 0.0, "skip delay in ms").at_least(0);
  s.add_double("dynamics.t_feedback", 30.0, "feedback delay in ms").at_least(0);
  s.add_enum("dynamics.solver",
             {"euler", "rk4", "exp", "heun", "midpoint", "rk4-classic", "euler-staged", "tableau",
              "bs32", "dopri5", "tableau-embedded"},
             "euler",
             "euler (DynVision), rk4 (DynVision's frozen-drive RK4), exp (exact for a held "
             "drive); staged Runge-Kutta over the whole network: heun, midpoint, rk4-classic, "
             "euler-staged, or tableau (dynamics.tableau_*); embedded pairs with step-size "
             "control: bs32, dopri5, tableau-embedded (dynamics.tableau_* with tableau_bhat)");
  s.add_doubles("dynamics.tableau_a", {}, "solver = tableau: the s x s matrix a, row by row");
  s.add_doubles("dynamics.tableau_b", {}, "solver = tableau: the s weights b");
  s.add_doubles("dynamics.tableau_c", {}, "solver = tableau: the s nodes c");
  s.add_doubles("dynamics.tableau_bhat", {},
                "solver = tableau-embedded: the s weights of the embedded solution");
  s.add_int("dynamics.tableau_order", 0,
            "solver = tableau-embedded: order of the b solution (0: unknown)").at_least(0);
  s.add_int("dynamics.tableau_embedded_order", 0,
            "solver = tableau-embedded: order of the bhat solution (0: unknown)").at_least(0);
  s.add_bool("dynamics.adaptive", true,
             "embedded pairs: control the step size (false: fixed steps of dt with b)");
  s.add_double("dynamics.rtol", 1e-3, "adaptive: relative tolerance").greater_than(0);
  s.add_double("dynamics.atol", 1e-6, "adaptive: absolute tolerance").at_least(0);
  s.add_double("dynamics.dt_max", 0.0,
               "adaptive: largest step in ms (0: dt; steps end on every step of dt)")
      .at_least(0);
  s.add_double("dynamics.dt_min", 0.0, "adaptive: smallest step in ms before the run fails "
               "(0: dt * 1e-9)").at_least(0);
  s.add_double("dynamics.safety", 0.9, "adaptive: safety factor of the step controller")
      .greater_than(0).at_most(1);
  s.add_int("dynamics.max_rejections", 50, "adaptive: rejected steps in a row before failing")
      .at_least(1);
  s.add_int("dynamics.max_steps", 1000000, "adaptive: steps per run (accepted + rejected)")
      .at_least(1);
  s.add_bool("dynamics.train_tau", false, "tau is a trainable parameter");
  s.add_enum("dynamics.tau_parametrization", {"raw", "softplus"}, "raw",
             "raw tau (DynVision) or tau = softplus(s), positive by construction");
  s.add_bool("dynamics.strict", false, "a connection that can never deliver is an error");
  s.add_bool("dynamics.stability_check", false, "stop at the first non-finite state");
}

namespace {

ConfigSchema make_schema() {
  ConfigSchema s;
  add_model_keys(s);
  s.add_int("simulation.steps", 30, "recorded time steps").at_least(1);
  s.add_int("simulation.idle_steps", 0, "unrecorded steps on a blank frame first").at_least(0);
  s.add_int("simulation.batch", 1, "samples (per-sample lists override it)").at_least(1);
  s.add_enum("simulation.device", {"auto", "cpu", "cuda"}, "auto", "where to run");
  s.add_enum("simulation.record", {"layer", "full", "none"}, "layer",
             "layer: mean/std of |r| per area and step; full: every r(t)");
  s.add_enum("simulation.format", {"npy", "hdf5"}, "npy",
             "npy: one .npy file per array; hdf5: one responses.h5");
  s.add_string("simulation.output", "out", "output folder");
  s.add_double("simulation.non_input_value", 0.0, "value of blank frames");
  s.add_int("simulation.threads", 0, "CPU threads (0 = all cores)").at_least(0);
  s.add_bool("simulation.fast_paths", true,
             "exact savings: strided skip convs, input convs once per repeated frame, the "
             "classifier once per chunk of steps (false: DynVision's literal order)");
  s.add_enum("simulation.precision", {"fp32", "tf32", "bf16"}, "fp32",
             "fp32 (CUDA: TF32 off), tf32 (CUDA only: cuDNN and cuBLAS may use TF32 tensor ops; "
             "an error with device cpu, ignored when auto runs on the CPU) or bf16 (bf16 storage "
             "of the input, parameters and activations, every op computed in f32, tau f32; "
             "responses recorded as f32; on the CPU too, emulated)");
  s.add_bool("simulation.cuda_graph", false,
             "CUDA only: capture the step loop as a CUDA graph on the second run of a shape and "
             "replay it (same bits; an error with device cpu, ignored when auto runs on the CPU)");

  s.add_enum("stimulus.kind", {"grating", "flash", "noise", "image", "npy"}, "grating",
             "built-in stimulus, an image file or a .npy array");
  s.add_string("stimulus.path", "", "file for kind = image or npy");
  s.add_double("stimulus.contrast", 1.0, "amplitude around the blank value");
  s.add_int("stimulus.onset", 2, "first step with the stimulus").at_least(0);
  s.add_int("stimulus.duration", 15, "steps shown (-1: until the end)").at_least(-1);
  s.add_doubles("stimulus.contrasts", {}, "per-sample contrasts (sets the batch)");
  s.add_doubles("stimulus.onsets", {}, "per-sample onsets in steps");
  s.add_doubles("stimulus.durations", {}, "per-sample durations in steps");
  s.add_double("stimulus.cycles", 4.0, "grating: cycles per image width").greater_than(0);
  s.add_double("stimulus.orientation", 0.0, "grating: orientation in degrees");
  s.add_double("stimulus.phase", 0.0, "grating: phase in degrees");
  s.add_int("stimulus.seed", 0, "noise: seed; shuffle: seed").at_least(0);
  s.add_string("stimulus.pattern", "1",
               "presentation pattern of 0/1 resampled onto the steps (spec §5), e.g. \"1011\"");
  s.add_bool("stimulus.shuffle_pattern", false, "shuffle the pattern (seeded) before resampling");
  s.add_int("stimulus.residual_steps", 0, "blank steps appended at the end").at_least(0);
  return s;
}

DelaySettings delay_settings(const Config& c) {
  DelaySettings d;
  d.dt = c.get_double("dynamics.dt");
  d.t_feedforward = c.get_double("dynamics.t_feedforward");
  d.t_recurrence = c.get_double("dynamics.t_recurrence");
  d.t_skip = c.get_double("dynamics.t_skip");
  d.t_feedback = c.get_double("dynamics.t_feedback");
  d.strict = c.get_bool("dynamics.strict");
  return d;
}

OpKind op_kind(const std::string& s) {
  if (s == "conv") return OpKind::Conv;
  if (s == "twostage") return OpKind::TwoStage;
  if (s == "depthpointwise") return OpKind::DepthPoint;
  if (s == "pointdepthwise") return OpKind::PointDepth;
  if (s == "self") return OpKind::Self;
  if (s == "local") return OpKind::Local;
  if (s == "localdepthwise") return OpKind::LocalDepthwise;
  return OpKind::Identity;
}

ConnKind conn_kind(const std::string& s) {
  if (s == "recurrent") return ConnKind::Recurrent;
  if (s == "skip") return ConnKind::Skip;
  if (s == "feedback") return ConnKind::Feedback;
  return ConnKind::Feedforward;
}

// A custom graph from [[area]] and [[connection]] tables. Parameters are named
// "<connection>.<part>.weight|bias" and initialised like DyRCNN's (feedforward Kaiming,
// recurrent U(+-max_weight_init), skip/feedback small normal).
Graph build_custom(const Config& cfg) {
  Graph g;
  g.delays = delay_settings(cfg);
  g.input_channels = int(cfg.get_int("model.input_channels"));
  g.input_height = int(cfg.get_int("model.input_height"));
  g.input_width = int(cfg.get_int("model.input_width"));
  const auto& areas = cfg.tables("area");
  const auto& conns = cfg.tables("connection");
  if (areas.empty())
    throw ConfigError(concat(cfg.source_name(), ": model.preset = 'custom' needs [[area]] tables"));
  for (const Config& a : areas) {
    Area ar;
    ar.name = a.get_string("name");
    // Area names become file and dataset names of the outputs (response_avg_<name>.npy).
    if (ar.name.empty() || ar.name.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnop"
                                                     "qrstuvwxyz0123456789_-") != std::string::npos)
      a.fail("name", concat("'", ar.name, "': use letters, digits, '_' and '-' only"));
    if (g.area_index(ar.name) >= 0)
      throw ConfigError(concat(a.where("name"), ": area '", ar.name, "' defined twice"));
    ar.channels = int(a.get_int("channels"));
    ar.height = int(a.get_int("height"));
    ar.width = int(a.get_int("width"));
    ar.tau = a.has("tau") ? a.get_double("tau") : cfg.get_double_for("dynamics.tau", ar.name);
    ar.supralinearity = a.get_double("supralinearity");
    if (a.get_bool("pool")) {
      ar.has_pool = true;
      ar.pool.kernel_h = ar.pool.kernel_w = 3;
      ar.pool.stride_h = ar.pool.stride_w = 2;
      ar.pool.pad_h = ar.pool.pad_w = 1;
    }
    g.areas.push_back(ar);
  }
  Rng rng(uint64_t(cfg.get_int("model.seed")));
  const double wmax = cfg.get_double("model.max_weight_init");
  for (const Config& c : conns) {
    Connection cn;
    cn.name = c.get_string("name");
    const std::string src = c.get_string("source"), tgt = c.get_string("target");
    cn.source = src == "input" ? kExternalInput : g.area_index(src);
    cn.target = g.area_index(tgt);
    if (src != "input" && cn.source < 0)
      throw ConfigError(concat(c.where("source"), ": no area named '", src, "'"));
    if (cn.target < 0) throw ConfigError(concat(c.where("target"), ": no area named '", tgt, "'"));
    cn.kind = conn_kind(c.get_string("kind"));
    cn.integration = c.get_string("integration") == "mul" ? Integration::Multiplicative
                                                          : Integration::Additive;
    const std::string entry = c.get_string("entry");
    cn.entry = entry == "input" ? Entry::Input : entry == "middle" ? Entry::Middle : Entry::Output;
    if (c.has("delay")) {
      cn.delay_given = true;
      cn.delay_ms = c.get_double("delay");
    }
    const Area& t = g.areas[size_t(cn.target)];
    OpSpec& op = cn.op;
    op.kind = op_kind(c.get_string("operator"));
    op.kernel = int(c.get_int("kernel"));
    op.stride = int(c.get_int("stride"));
    op.bias = c.get_bool("bias");
    if (cn.source == kExternalInput) {
      op.in_channels = g.input_channels;
      op.in_h = g.input_height;
      op.in_w = g.input_width;
    } else {
      const Area& s = g.areas[size_t(cn.source)];
      const bool pooled = cn.kind == ConnKind::Feedforward;
      cn.source_pooled = pooled && s.has_pool;
      op.in_channels = s.channels;
      op.in_h = pooled ? s.out_height() : s.height;
      op.in_w = pooled ? s.out_width() : s.width;
    }
    op.out_channels = op.kind == OpKind::Identity ? op.in_channels : t.channels;
    if (op.kind == OpKind::TwoStage) {
      op.mid_channels = int(c.get_int("mid_channels"));
      if (op.mid_channels < 1)
        throw ConfigError(concat(c.where("operator"), ": twostage needs mid_channels >= 1"));
    }
    if (op.kernel % 2 == 0)
      throw ConfigError(concat(c.where("kernel"), ": kernel ", op.kernel, " must be odd"));
    if (op.out_h() != t.height || op.out_w() != t.width) {
      op.resize_h = t.height;
      op.resize_w = t.width;
    }
    const bool ff = cn.kind == ConnKind::Feedforward;
    auto add_conv = [&](const std::string& part, int cin, int cout, int k, int groups) {
      Tensor& w = g.params.add(cn.name + "." + part + ".weight",
                               Tensor::zeros(Shape{cout, cin / groups, k, k}));
      op.params.push_back(cn.name + "." + part + ".weight");
      if (ff)
        init::kaiming_normal_relu(w, rng);
      else if (cn.kind == ConnKind::Recurrent)
        init::uniform(w, -wmax, wmax, rng);
      else
        init::normal(w, std::min(0.001, 1.0 / std::sqrt(double(cin) * cout)), rng);
      if (op.bias) {
        g.params.add(cn.name + "." + part + ".bias", Tensor::zeros(Shape{cout}));
        op.params.push_back(cn.name + "." + part + ".bias");
      }
    };
    switch (op.kind) {
      case OpKind::Conv: add_conv("conv", op.in_channels, op.out_channels, op.kernel, 1); break;
      case OpKind::TwoStage:
        add_conv("conv", op.in_channels, op.mid_channels, op.kernel, 1);
        add_conv("conv2", op.mid_channels, op.out_channels, op.kernel, 1);
        break;
      case OpKind::DepthPoint:
        add_conv("depthwise_conv", op.in_channels, op.in_channels, op.kernel, op.in_channels);
        add_conv("pointwise_conv", op.in_channels, op.out_channels, 1, 1);
        break;
      case OpKind::PointDepth:
        add_conv("pointwise_conv", op.in_channels, op.out_channels, 1, 1);
        add_conv("depthwise_conv", op.out_channels, op.out_channels, op.kernel, op.out_channels);
        break;
      case OpKind::Self: {
        Tensor& w = g.params.add(cn.name + ".weight", Tensor::zeros(Shape{1}));
        init::uniform(w, -wmax, wmax, rng);
        g.params.add(cn.name + ".bias", Tensor::zeros(Shape{1}));
        op.params = {cn.name + ".weight", cn.name + ".bias"};
        break;
      }
      case OpKind::Identity:
        if (op.in_channels != t.channels)
          throw ConfigError(concat(c.where("operator"), ": identity from ", op.in_channels,
                                   " to ", t.channels, " channels"));
        break;
      default:
        throw ConfigError(concat(c.where("operator"), ": operator '", c.get_string("operator"),
                                 "' is available in the DyRCNN presets only"));
    }
    g.connections.push_back(cn);
  }
  const int K = int(cfg.get_int("model.n_classes"));
  if (K > 0) {
    const Area& last = g.areas.back();
    g.readout.source = int(g.areas.size()) - 1;
    g.readout.n_classes = K;
    Tensor& w = g.params.add(g.readout.weight, Tensor::zeros(Shape{K, last.channels}));
    init::trunc_normal(w, 0.004, -2, 2, rng);
    g.params.add(g.readout.bias, Tensor::zeros(Shape{K}));
  }
  g.resolve_delays();
  g.validate();
  return g;
}

}  // namespace

const ConfigSchema& simulate_schema() {
  static const ConfigSchema schema = make_schema();
  return schema;
}

Graph build_graph(const Config& cfg) {
  Graph g;
  const std::string preset = cfg.get_string("model.preset");
  if (preset == "custom") {
    g = build_custom(cfg);
  } else {
    if (!cfg.tables("area").empty() || !cfg.tables("connection").empty())
      throw ConfigError(concat(cfg.source_name(), ": [[area]] / [[connection]] tables need ",
                               "model.preset = 'custom' (the preset is '", preset, "')"));
    DyRCNNOptions o;
    o.preset = preset;
    o.n_classes = int(cfg.get_int("model.n_classes"));
    if (o.n_classes < 1)
      throw ConfigError(concat(cfg.where("model.n_classes"), ": DyRCNN needs n_classes >= 1"));
    o.in_channels = int(cfg.get_int("model.input_channels"));
    o.height = int(cfg.get_int("model.input_height"));
    o.width = int(cfg.get_int("model.input_width"));
    o.recurrence_type = cfg.get_string("model.recurrence_type");
    o.recurrence_target = cfg.get_string("model.recurrence_target");
    o.skip = cfg.get_bool("model.skip");
    o.feedback = cfg.get_string("model.feedback");
    o.feedforward_only = cfg.get_bool("model.feedforward_only");
    o.supralinearity = cfg.get_double("model.supralinearity");
    o.retina = cfg.get_bool("model.retina");
    o.bias = cfg.get_bool("model.bias");
    o.max_weight_init = cfg.get_double("model.max_weight_init");
    o.seed = uint64_t(cfg.get_int("model.seed"));
    o.delays = delay_settings(cfg);
    o.train_tau = cfg.get_bool("dynamics.train_tau");
    o.tau_softplus = cfg.get_string("dynamics.tau_parametrization") == "softplus";
    if (cfg.is_map("dynamics.tau")) {
      o.tau = 5.0;
      for (const auto& [name, v] : cfg.get_map("dynamics.tau")) o.tau_per_area[name] = v;
    } else {
      o.tau = cfg.get_double("dynamics.tau");
    }
    try {
      g = build_dyrcnn(o);
    } catch (const ConfigError& e) {
      throw ConfigError(concat(cfg.source_name(), ": ", e.what()));
    }
    if (cfg.is_map("dynamics.tau"))
      for (const auto& [name, v] : cfg.get_map("dynamics.tau"))
        if (g.area_index(name) < 0)
          throw ConfigError(concat(cfg.where("dynamics.tau"), ": no area named '", name,
                                   "' in ", preset));
  }
  const std::vector<double> per_sample = cfg.get_doubles("dynamics.tau_per_sample");
  if (!per_sample.empty())
    for (Area& a : g.areas) a.tau_per_sample = per_sample;
  const std::string weights = cfg.get_string("model.weights");
  if (!weights.empty()) import_weights(g, load_safetensors(weights), weights);
  return g;
}

void apply_taus(Graph& g, const Config& cfg) {
  const bool custom = cfg.get_string("model.preset") == "custom";
  const std::vector<double> per_sample = cfg.get_doubles("dynamics.tau_per_sample");
  for (Area& a : g.areas) {
    // The tau build_custom / build_dyrcnn give the area.
    double tau = 0;
    bool from_table = false;
    if (custom)
      for (const Config& t : cfg.tables("area"))
        if (t.get_string("name") == a.name && t.has("tau")) tau = t.get_double("tau"), from_table = true;
    if (from_table) {
    } else if (custom) {
      tau = cfg.get_double_for("dynamics.tau", a.name);
    } else if (cfg.is_map("dynamics.tau")) {
      const auto m = cfg.get_map("dynamics.tau");
      tau = m.count(a.name) ? m.at(a.name) : 5.0;
    } else {
      tau = cfg.get_double("dynamics.tau");
    }
    a.tau = tau;
    if (!a.tau_param.empty()) {
      Tensor& p = g.params.get(a.tau_param);
      const double s = a.tau_softplus ? std::log(std::expm1(tau)) : tau;  // as build_dyrcnn
      p = Tensor::from(p.shape(), {s}, p.dtype());
    }
    a.tau_per_sample = per_sample;
  }
}

SolverSpec solver_spec(const Config& cfg) {
  SolverSpec s(cfg.get_string("dynamics.solver"));
  const auto a = cfg.get_doubles("dynamics.tableau_a"), b = cfg.get_doubles("dynamics.tableau_b"),
             c = cfg.get_doubles("dynamics.tableau_c"),
             bhat = cfg.get_doubles("dynamics.tableau_bhat");
  const bool user = s.name == "tableau" || s.name == "tableau-embedded";
  const bool embedded = s.name == "bs32" || s.name == "dopri5" || s.name == "tableau-embedded";
  // Keys that only an embedded pair reads: set to anything but their default with another
  // solver, they would be ignored. (A written-out config holds every key at its default.)
  if (!embedded) {
    const AdaptiveOptions d;
    auto differs = [&](const char* k, double v, double def) {
      if (v != def)
        throw ConfigError(concat(cfg.where(k), ": ", k, " is used only with the embedded pairs "
                                 "(solver = bs32, dopri5 or tableau-embedded), not with solver = "
                                 "\"", s.name, "\""));
    };
    differs("dynamics.adaptive", cfg.get_bool("dynamics.adaptive") ? 1 : 0, 1);
    differs("dynamics.rtol", cfg.get_double("dynamics.rtol"), d.rtol);
    differs("dynamics.atol", cfg.get_double("dynamics.atol"), d.atol);
    differs("dynamics.dt_max", cfg.get_double("dynamics.dt_max"), d.dt_max);
    differs("dynamics.dt_min", cfg.get_double("dynamics.dt_min"), d.dt_min);
    differs("dynamics.safety", cfg.get_double("dynamics.safety"), d.safety);
    differs("dynamics.max_rejections", double(cfg.get_int("dynamics.max_rejections")),
            d.max_rejections);
    differs("dynamics.max_steps", double(cfg.get_int("dynamics.max_steps")),
            double(d.max_steps));
  }
  if (embedded) {
    s.adaptive = cfg.get_bool("dynamics.adaptive");
    AdaptiveOptions& o = s.control;
    o.rtol = cfg.get_double("dynamics.rtol");
    o.atol = cfg.get_double("dynamics.atol");
    o.dt_max = cfg.get_double("dynamics.dt_max");
    o.dt_min = cfg.get_double("dynamics.dt_min");
    o.safety = cfg.get_double("dynamics.safety");
    o.max_rejections = int(cfg.get_int("dynamics.max_rejections"));
    o.max_steps = cfg.get_int("dynamics.max_steps");
    if (o.dt_max > 0 && o.dt_min > o.dt_max)
      throw ConfigError(concat(cfg.where("dynamics.dt_min"), ": dynamics.dt_min = ", o.dt_min,
                               " is larger than dynamics.dt_max = ", o.dt_max));
  }
  if (!user) {
    const char* given = !a.empty()    ? "dynamics.tableau_a"
                        : !b.empty()    ? "dynamics.tableau_b"
                        : !c.empty()    ? "dynamics.tableau_c"
                        : !bhat.empty() ? "dynamics.tableau_bhat"
                        : cfg.get_int("dynamics.tableau_order") != 0 ? "dynamics.tableau_order"
                        : cfg.get_int("dynamics.tableau_embedded_order") != 0
                            ? "dynamics.tableau_embedded_order"
                            : nullptr;
    if (given)
      throw ConfigError(concat(cfg.where(given), ": dynamics.tableau_* are used only with "
                               "solver = \"tableau\" or \"tableau-embedded\""));
    return s;
  }
  if (s.name == "tableau" && !bhat.empty())
    throw ConfigError(concat(cfg.where("dynamics.tableau_bhat"), ": dynamics.tableau_bhat needs "
                             "solver = \"tableau-embedded\" (solver = \"tableau\" has one "
                             "weight row)"));
  const size_t n = b.size();
  if (n == 0 || c.size() != n || a.size() != n * n)
    throw ConfigError(concat(cfg.where("dynamics.solver"), ": solver = \"", s.name,
                             "\" needs b and c with s entries and a with s*s entries (row by "
                             "row); got ", a.size(), ", ", b.size(), " and ", c.size()));
  if (s.name == "tableau-embedded" && bhat.size() != n)
    throw ConfigError(concat(cfg.where(bhat.empty() ? "dynamics.solver" : "dynamics.tableau_bhat"),
                             ": solver = \"tableau-embedded\" needs dynamics.tableau_bhat with ",
                             n, " entries; got ", bhat.size()));
  s.tableau.name = s.name;
  s.tableau.b = b;
  s.tableau.c = c;
  s.tableau.bhat = bhat;
  s.tableau.order = int(cfg.get_int("dynamics.tableau_order"));
  s.tableau.embedded_order = int(cfg.get_int("dynamics.tableau_embedded_order"));
  for (size_t i = 0; i < n; ++i) s.tableau.a.emplace_back(a.begin() + long(i * n), a.begin() + long((i + 1) * n));
  try {
    s.resolved_tableau();
  } catch (const ConfigError& e) {
    throw ConfigError(concat(cfg.where("dynamics.solver"), ": ", e.what()));
  }
  return s;
}

RunOptions run_options(const Config& cfg) {
  RunOptions r;
  r.idle_steps = int(cfg.get_int("simulation.idle_steps"));
  r.non_input_value = float(cfg.get_double("simulation.non_input_value"));
  const std::string rec = cfg.get_string("simulation.record");
  r.record = rec == "full" ? RecordMode::Full : rec == "none" ? RecordMode::None : RecordMode::Layer;
  r.stability_check = cfg.get_bool("dynamics.stability_check");
  r.input_adaption_weight = cfg.get_double("model.input_adaption_weight");
  r.fast_paths = cfg.get_bool("simulation.fast_paths");
  r.cuda_graph = cfg.get_bool("simulation.cuda_graph");
  return r;
}

Tensor build_stimulus(const Config& cfg, const Graph& g) {
  const int C = g.input_channels, H = g.input_height, W = g.input_width;
  const int T = int(cfg.get_int("simulation.steps"));
  const std::string kind = cfg.get_string("stimulus.kind");
  const double contrast = cfg.get_double("stimulus.contrast");
  Tensor frame;
  if (kind == "grating") {
    stim::GratingParams p;
    p.cycles = cfg.get_double("stimulus.cycles");
    p.orientation = cfg.get_double("stimulus.orientation");
    p.phase = cfg.get_double("stimulus.phase");
    frame = stim::grating(C, H, W, p);
  } else if (kind == "flash") {
    frame = stim::flash(C, H, W, 1.0);
  } else if (kind == "noise") {
    frame = stim::white_noise(C, H, W, 1.0, uint64_t(cfg.get_int("stimulus.seed")));
  } else {
    const std::string path = cfg.get_string("stimulus.path");
    if (path.empty())
      throw ConfigError(concat(cfg.where("stimulus.kind"), ": stimulus.kind = '", kind,
                               "' needs stimulus.path"));
    frame = kind == "image" ? stim::image(path, C, H, W) : stim::array(path, C, H, W);
  }
  // Per-sample schedules: lists set the batch; scalars fill the rest.
  const auto contrasts = cfg.get_doubles("stimulus.contrasts");
  const auto onsets = cfg.get_doubles("stimulus.onsets");
  const auto durations = cfg.get_doubles("stimulus.durations");
  const auto taus = cfg.get_doubles("dynamics.tau_per_sample");
  size_t B = size_t(cfg.get_int("simulation.batch"));
  std::string batch_from = "simulation.batch";
  const std::pair<const std::vector<double>*, const char*> lists[] = {
      {&contrasts, "stimulus.contrasts"},
      {&onsets, "stimulus.onsets"},
      {&durations, "stimulus.durations"},
      {&taus, "dynamics.tau_per_sample"}};
  for (const auto& [l, key] : lists)
    if (!l->empty()) B = l->size(), batch_from = key;
  if (frame.rank() == 5) B = size_t(frame.dim(0)), batch_from = "the stimulus array";
  // Every per-sample list must give one value per sample; say which one set the batch.
  for (const auto& [l, key] : lists)
    if (!l->empty() && l->size() != B)
      cfg.fail(key, concat(l->size(), " values, but ", batch_from, " gives ", B, " samples"));
  std::vector<seq::Schedule> sched(B);
  for (size_t b = 0; b < B; ++b) {
    sched[b].contrast = contrasts.empty() ? contrast : contrasts[b];
    sched[b].onset = int(onsets.empty() ? cfg.get_int("stimulus.onset") : onsets[b]);
    sched[b].duration = int(durations.empty() ? cfg.get_int("stimulus.duration") : durations[b]);
  }
  Tensor frames;
  if (frame.rank() == 3) {
    frames = Tensor::empty(Shape{int64_t(B), C, H, W});
    for (size_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < frame.numel(); ++i) frames.set(int64_t(b) * frame.numel() + i, frame.item(i));
  } else if (frame.rank() == 4) {  // [T, C, H, W] movie for every sample
    if (frame.dim(0) != T)
      throw DataError(concat(cfg.get_string("stimulus.path"), ": ", frame.dim(0),
                             " frames but simulation.steps = ", T));
    frames = Tensor::empty(Shape{int64_t(B), T, C, H, W});
    for (size_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < frame.numel(); ++i) frames.set(int64_t(b) * frame.numel() + i, frame.item(i));
  } else {
    if (frame.dim(1) != T)
      throw DataError(concat(cfg.get_string("stimulus.path"), ": ", frame.dim(1),
                             " frames but simulation.steps = ", T));
    frames = frame;
  }
  const float blank = float(cfg.get_double("simulation.non_input_value"));
  Tensor seq_in = seq::apply_schedules(frames, sched, T, blank);
  // Presentation pattern (DynVision's expand + mask of a single frame) and residual steps.
  std::vector<int> pattern;
  try {
    pattern = seq::parse_pattern(cfg.get_string("stimulus.pattern"));
  } catch (const DataError& e) {
    throw ConfigError(concat(cfg.where("stimulus.pattern"), ": ", e.what()));
  }
  if (cfg.get_bool("stimulus.shuffle_pattern"))
    pattern = seq::shuffle_pattern(pattern, uint64_t(cfg.get_int("stimulus.seed")), 0);
  const std::vector<int> on = seq::resample_pattern(pattern, T);
  const int R = int(cfg.get_int("stimulus.residual_steps"));
  const int64_t per = seq_in.numel() / (int64_t(B) * T);
  Tensor out = Tensor::empty(Shape{int64_t(B), T + R, C, H, W}, seq_in.dtype());
  for (size_t b = 0; b < B; ++b)
    for (int t = 0; t < T + R; ++t) {
      const bool shown = t < T && on[size_t(t)];
      for (int64_t i = 0; i < per; ++i)
        out.set((int64_t(b) * (T + R) + t) * per + i,
                shown ? seq_in.item((int64_t(b) * T + t) * per + i) : double(blank));
    }
  return out;
}

}  // namespace dynsim::models
