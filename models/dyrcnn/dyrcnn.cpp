// DyRCNN presets (models/dyrcnn/dyrcnn.h).
#include "models/dyrcnn/dyrcnn.h"

#include <cmath>

#include "models/common/init.h"

namespace dynsim::models {
namespace {

struct AreaDef {
  std::string name;
  int out_channels, kernel, stride;
  int mid_channels;  // two-stage areas (x8): conv1's output; 0 = single conv
  bool pool;         // MaxPool(3, 2, 1) after the delay
};

std::vector<AreaDef> area_defs(const std::string& preset) {
  if (preset == "DyRCNNx2") return {{"layer1", 36, 3, 1, 0, true}, {"layer2", 64, 3, 1, 0, false}};
  if (preset == "DyRCNNx4")
    return {{"V1", 36, 3, 1, 0, true},
            {"V2", 64, 3, 1, 0, true},
            {"V4", 121, 3, 1, 0, false},  // DynVision's MaxPool(1, 1) is the identity
            {"IT", 256, 3, 2, 0, false}};
  if (preset == "DyRCNNx8")
    return {{"V1", 64, 5, 2, 64, true},
            {"V2", 144, 3, 2, 144, true},
            {"V4", 256, 3, 2, 256, false},
            {"IT", 529, 3, 2, 529, false}};
  throw ConfigError(concat("unknown model preset '", preset,
                           "' (DyRCNNx2, DyRCNNx4, DyRCNNx8)"));
}

class Builder {
 public:
  Builder(Graph& g, const DyRCNNOptions& o) : g_(g), o_(o), rng_(o.seed) {}

  Tensor& weight(const std::string& name, const Shape& s) {
    return g_.params.add(name, Tensor::zeros(s, DType::F32));
  }

  // A k x k conv's weight and bias with the given init.
  enum class Init { Kaiming, Small, TorchDefault, SkipTrunc };
  void conv_params(OpSpec& op, const std::string& prefix, int cin, int cout, int k, int groups,
                   bool bias, Init init) {
    Tensor& w = weight(prefix + ".weight", Shape{cout, cin / groups, k, k});
    op.params.push_back(prefix + ".weight");
    const double fan_in = double(cin / groups) * k * k;
    switch (init) {
      case Init::Kaiming: init::kaiming_normal_relu(w, rng_); break;
      case Init::Small: init::uniform(w, -o_.max_weight_init, o_.max_weight_init, rng_); break;
      case Init::TorchDefault: {  // kaiming_uniform(a = sqrt 5): U(+-1/sqrt(fan_in))
        const double bound = 1.0 / std::sqrt(fan_in);
        init::uniform(w, -bound, bound, rng_);
        break;
      }
      case Init::SkipTrunc: {  // std = min(0.001, 1/sqrt(Cin Cout)), torch's absolute +-2 cut
        init::trunc_normal(w, std::min(0.001, 1.0 / std::sqrt(double(cin) * cout)), -2, 2, rng_);
        break;
      }
    }
    if (bias) {
      Tensor& b = weight(prefix + ".bias", Shape{cout});
      op.params.push_back(prefix + ".bias");
      if (init == Init::TorchDefault) {
        const double bound = 1.0 / std::sqrt(fan_in);
        init::uniform(b, -bound, bound, rng_);
      }
    }
  }

  // The recurrence operator R of one area (spec §3) mapping C -> cout at h's size.
  OpSpec recurrence(const std::string& area, const std::string& type, int C, int cout, int H,
                    int W, int k) {
    OpSpec op;
    op.in_channels = C;
    op.out_channels = cout;
    op.kernel = k;
    op.in_h = H;
    op.in_w = W;
    op.bias = o_.bias;
    const std::string p = area + ".recurrence";
    if (type == "full") {
      op.kind = OpKind::Conv;
      conv_params(op, p + ".conv", C, cout, k, 1, o_.bias, Init::Small);
    } else if (type == "self") {
      op.kind = OpKind::Self;
      op.out_channels = C;
      Tensor& w = weight(p + ".weight", Shape{1});  // DynVision's shapes: [1]
      init::uniform(w, -o_.max_weight_init, o_.max_weight_init, rng_);
      weight(p + ".bias", Shape{1});
      op.params = {p + ".weight", p + ".bias"};
    } else if (type == "depthpointwise") {
      op.kind = OpKind::DepthPoint;
      conv_params(op, p + ".depthwise_conv", C, C, k, C, o_.bias, Init::Small);
      conv_params(op, p + ".pointwise_conv", C, cout, 1, 1, o_.bias, Init::Small);
    } else if (type == "pointdepthwise") {
      op.kind = OpKind::PointDepth;
      conv_params(op, p + ".pointwise_conv", C, cout, 1, 1, o_.bias, Init::Small);
      conv_params(op, p + ".depthwise_conv", cout, cout, k, cout, o_.bias, Init::Small);
    } else if (type == "local" || type == "localdepthwise") {
      if (cout != C)
        throw ConfigError(concat("recurrence_type '", type, "' of area ", area,
                                 " maps the area's sheet onto itself (", C, " channels) and "
                                 "cannot feed an input of ", cout, " channels (recurrence_target "
                                 "'input' needs full, self or a separable type there)"));
      const int f = int(std::ceil(std::sqrt(double(C)) - 1e-9));
      int kp = f / 4;
      if (kp % 2 == 0) kp += 1;
      kp = std::max(3, kp);
      op.kind = type == "local" ? OpKind::Local : OpKind::LocalDepthwise;
      op.out_channels = C;
      if (type == "local") {
        // Weight U(+-max_weight_init); the scalar bias keeps PyTorch's default U(+-1/k_p).
        conv_params(op, p + ".conv", 1, 1, kp, 1, false, Init::Small);
        if (o_.bias) {
          Tensor& b = weight(p + ".conv.bias", Shape{1});
          init::uniform(b, -1.0 / kp, 1.0 / kp, rng_);
          op.params.push_back(p + ".conv.bias");
        }
      } else {
        // The local conv keeps PyTorch's defaults entirely; the patchy depthwise conv gets
        // U(+-max_weight_init) weights and PyTorch's default bias.
        conv_params(op, p + ".local_conv.conv", 1, 1, kp, 1, o_.bias, Init::TorchDefault);
        conv_params(op, p + ".patchy_conv", C, C, k, C, false, Init::Small);
        if (o_.bias) {
          Tensor& b = weight(p + ".patchy_conv.bias", Shape{C});
          const double bound = 1.0 / std::sqrt(double(k) * k);
          init::uniform(b, -bound, bound, rng_);
          op.params.push_back(p + ".patchy_conv.bias");
        }
      }
    } else {
      throw ConfigError(concat("recurrence_type '", type,
                               "': expected full, self, depthpointwise, pointdepthwise, local, "
                               "localdepthwise or none (DynVision's depthwise and pointwise "
                               "raise there too)"));
    }
    return op;
  }

  // Skip/feedback transform: 1x1 conv C_src -> C_tgt at the source size, then nearest resize.
  Connection transform(const std::string& name, int src, int tgt, ConnKind kind) {
    const Area& s = g_.areas[size_t(src)];
    const Area& t = g_.areas[size_t(tgt)];
    Connection c;
    c.name = name;
    c.source = src;
    c.target = tgt;
    c.kind = kind;
    c.op.kind = OpKind::Conv;
    c.op.in_channels = s.channels;
    c.op.out_channels = t.channels;
    c.op.kernel = 1;
    c.op.in_h = s.height;
    c.op.in_w = s.width;
    c.op.bias = true;
    if (s.height != t.height || s.width != t.width) {
      c.op.resize_h = t.height;
      c.op.resize_w = t.width;
    }
    conv_params(c.op, name + ".conv", s.channels, t.channels, 1, 1, true, Init::SkipTrunc);
    if (kind == ConnKind::Feedback && o_.feedback == "mul") c.integration = Integration::Multiplicative;
    return c;
  }

 private:
  Graph& g_;
  const DyRCNNOptions& o_;
  Rng rng_;
};

}  // namespace

Graph build_dyrcnn(const DyRCNNOptions& o) {
  std::vector<AreaDef> defs = area_defs(o.preset);
  if (!o.channels.empty()) {
    if (o.channels.size() != defs.size())
      throw ConfigError(concat(o.preset, " has ", defs.size(), " areas but ", o.channels.size(),
                               " channel counts were given"));
    for (size_t i = 0; i < defs.size(); ++i) {
      if (o.channels[i] < 1)
        throw ConfigError(concat("channels of area ", defs[i].name, " must be >= 1, got ",
                                 o.channels[i]));
      defs[i].out_channels = o.channels[i];
      if (defs[i].mid_channels) defs[i].mid_channels = o.channels[i];
    }
  }
  const bool x8 = o.preset == "DyRCNNx8";
  if (o.recurrence_target != "output" && o.recurrence_target != "input" &&
      o.recurrence_target != "middle")
    throw ConfigError(concat("recurrence_target '", o.recurrence_target,
                             "': expected output, input or middle"));
  if (o.recurrence_target == "middle" && !x8)
    throw ConfigError(concat("recurrence_target 'middle' needs two-stage areas (DyRCNNx8); ",
                             o.preset, " has single convolutions (DynVision crashes here)"));
  if (o.feedback != "none" && o.feedback != "add" && o.feedback != "mul")
    throw ConfigError(concat("feedback '", o.feedback, "': expected none, add or mul"));
  if (o.n_classes < 1) throw ConfigError(concat("n_classes must be >= 1, got ", o.n_classes));
  if (o.height % 8 || o.width % 8 || o.height <= 0 || o.width <= 0)
    throw ConfigError(concat("input size ", o.height, "x", o.width,
                             ": DyRCNN needs sizes divisible by 8 (spec §2.1)"));

  Graph g;
  g.delays = o.delays;
  g.input_channels = o.in_channels;
  g.input_height = o.height;
  g.input_width = o.width;
  Builder b(g, o);

  // Retina front-end (spec §7, broken in DynVision): conv9 3->36 -> ReLU -> conv9 36->18 before V1.
  int cin = o.in_channels, H = o.height, W = o.width;
  if (o.retina) {
    OpSpec r;
    r.kind = OpKind::TwoStage;
    r.in_channels = cin;
    r.mid_channels = 36;
    r.out_channels = 18;
    r.kernel = 9;
    r.in_h = H;
    r.in_w = W;
    b.conv_params(r, "retina.conv1", cin, 36, 9, 1, true, Builder::Init::Kaiming);
    b.conv_params(r, "retina.conv2", 36, 18, 9, 1, true, Builder::Init::Kaiming);
    g.input_transform = r;
    cin = 18;
  }

  // Areas and their feedforward connections.
  for (size_t i = 0; i < defs.size(); ++i) {
    const AreaDef& d = defs[i];
    Area a;
    a.name = d.name;
    a.channels = d.out_channels;
    const int pad = d.kernel / 2;
    a.height = (H + 2 * pad - d.kernel) / d.stride + 1;
    a.width = (W + 2 * pad - d.kernel) / d.stride + 1;
    a.tau = o.tau_per_area.count(d.name) ? o.tau_per_area.at(d.name) : o.tau;
    a.train_tau = o.train_tau;
    a.supralinearity = o.supralinearity;
    if (d.pool) {
      a.has_pool = true;
      a.pool.kernel_h = a.pool.kernel_w = 3;
      a.pool.stride_h = a.pool.stride_w = 2;
      a.pool.pad_h = a.pool.pad_w = 1;
    }
    if (o.preset != "DyRCNNx2") {  // x4/x8 keep tau as a (by default frozen) parameter
      a.tau_softplus = o.tau_softplus;
      a.tau_param = (o.tau_softplus ? "tau_softplus_" : "tau_") + d.name;
      const double s = o.tau_softplus ? std::log(std::expm1(a.tau)) : a.tau;  // softplus^-1
      g.params.add(a.tau_param, Tensor::from(Shape{}, {s}), o.train_tau);
    }
    g.areas.push_back(a);

    Connection ff;
    ff.name = d.name + ".conv";
    ff.source = i == 0 ? kExternalInput : int(i) - 1;
    ff.target = int(i);
    ff.kind = ConnKind::Feedforward;
    ff.source_pooled = i > 0;
    ff.op.in_channels = cin;
    ff.op.out_channels = d.out_channels;
    ff.op.kernel = d.kernel;
    ff.op.stride = d.stride;
    ff.op.in_h = H;
    ff.op.in_w = W;
    ff.op.bias = o.bias;
    if (d.mid_channels) {
      ff.op.kind = OpKind::TwoStage;
      ff.op.mid_channels = d.mid_channels;
      b.conv_params(ff.op, d.name + ".conv", cin, d.mid_channels, d.kernel, 1, o.bias,
                    Builder::Init::Kaiming);
      b.conv_params(ff.op, d.name + ".conv2", d.mid_channels, d.out_channels, d.kernel, 1,
                    o.bias, Builder::Init::Kaiming);
    } else {
      b.conv_params(ff.op, d.name + ".conv", cin, d.out_channels, d.kernel, 1, o.bias,
                    Builder::Init::Kaiming);
    }
    g.connections.push_back(ff);

    // Recurrence of this area.
    if (!o.feedforward_only && o.recurrence_type != "none") {
      Connection rc;
      rc.name = d.name + ".recurrence";
      rc.source = int(i);
      rc.target = int(i);
      rc.kind = ConnKind::Recurrent;
      if (o.recurrence_target == "output") {
        rc.op = b.recurrence(d.name, o.recurrence_type, a.channels, a.channels, a.height,
                             a.width, d.kernel);
      } else if (o.recurrence_target == "input") {
        rc.entry = Entry::Input;
        rc.op = b.recurrence(d.name, o.recurrence_type, a.channels, cin, a.height, a.width,
                             d.kernel);
        if (a.height != H || a.width != W) {
          rc.op.resize_h = H;
          rc.op.resize_w = W;
        }
      } else {  // middle: after conv1 and its ReLU, before conv2
        rc.entry = Entry::Middle;
        rc.op = b.recurrence(d.name, o.recurrence_type, a.channels, d.mid_channels, a.height,
                             a.width, d.kernel);
      }
      g.connections.push_back(rc);
    }
    cin = a.channels;
    H = a.out_height();
    W = a.out_width();
  }

  // Skips and feedbacks, in DynVision's order (addskip after the layer, then addfeedback).
  if (!o.feedforward_only) {
    auto insert_after_area = [&](const Connection& c) {
      // Keep each target's terms in the order ff, recurrence, skip, feedback.
      size_t pos = g.connections.size();
      for (size_t i = 0; i < g.connections.size(); ++i)
        if (g.connections[i].target == c.target) pos = i + 1;
      g.connections.insert(g.connections.begin() + long(pos), c);
    };
    const bool two = o.preset == "DyRCNNx2";
    if (o.skip) {
      if (two) {
        insert_after_area(b.transform("addskip_layer2", 0, 1, ConnKind::Skip));
      } else {
        insert_after_area(b.transform("addskip_V4", 0, 2, ConnKind::Skip));
        insert_after_area(b.transform("addskip_IT", 1, 3, ConnKind::Skip));
      }
    }
    if (o.feedback != "none") {
      if (two) {
        insert_after_area(b.transform("addfeedback_layer1", 1, 0, ConnKind::Feedback));
      } else {
        insert_after_area(b.transform("addfeedback_V1", 2, 0, ConnKind::Feedback));
        insert_after_area(b.transform("addfeedback_V2", 3, 1, ConnKind::Feedback));
      }
    }
  }

  // Classifier: global average pool -> Linear(C_last, K), truncated normal std 0.004.
  const Area& last = g.areas.back();
  g.readout.source = int(g.areas.size()) - 1;
  g.readout.n_classes = o.n_classes;
  Tensor& cw = g.params.add(g.readout.weight, Tensor::zeros(Shape{o.n_classes, last.channels}));
  {
    Rng r(o.seed ^ 0x5eed0c1a55ull);
    init::trunc_normal(cw, 0.004, -2, 2, r);
  }
  g.params.add(g.readout.bias, Tensor::zeros(Shape{o.n_classes}));

  g.resolve_delays();
  g.validate();
  return g;
}

}  // namespace dynsim::models
