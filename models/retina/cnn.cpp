// The retina CNNs (models/retina/cnn.h): architecture specs, seeded initialisation, the batch
// runner (forward, loss with the Keras penalties, backward through the kernels of
// kernels/dispatch.h) and safetensors + JSON sidecar files. Windows, predict and the training
// loop are in cnn_fit.cpp.
#include "models/retina/cnn.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "engine/core/rng.h"
#include "engine/io/atomic_file.h"
#include "engine/io/safetensors.h"
#include "kernels/dispatch.h"

namespace dynsim::retina {

// ---- specs ---------------------------------------------------------------------------------

std::vector<int64_t> CnnSpec::conv_output(size_t l) const {
  int64_t c = history, h = height, w = width;
  for (size_t i = 0; i <= l && i < conv.size(); ++i)
    c = conv[i].channels, h = h - conv[i].kernel + 1, w = w - conv[i].kernel + 1;
  return {c, h, w};
}

int64_t CnnSpec::feature_count() const {
  if (conv.empty()) return 0;
  const auto s = conv_output(conv.size() - 1);
  return s[0] * s[1] * s[2];
}

void CnnSpec::validate() const {
  auto bad = [&](const std::string& what) {
    throw ConfigError(concat("cnn '", name, "': ", what));
  };
  if (history < 1) bad(concat("history must be >= 1, got ", history));
  if (height < 1 || width < 1) bad(concat("input must be at least 1x1, got ", height, "x", width));
  if (conv.empty()) bad("needs at least one conv layer");
  for (size_t l = 0; l < conv.size(); ++l) {
    const ConvLayerSpec& c = conv[l];
    if (c.channels < 1) bad(concat("conv", l, ".channels must be >= 1, got ", c.channels));
    if (c.kernel < 1) bad(concat("conv", l, ".kernel must be >= 1, got ", c.kernel));
    if (!(c.l1 >= 0) || !(c.l2 >= 0) || !(c.noise_sigma >= 0))
      bad(concat("conv", l, ": l1, l2 and noise_sigma must be >= 0"));
    const auto o = conv_output(l);
    if (o[1] < 1 || o[2] < 1)
      bad(concat("conv", l, " kernel ", c.kernel, " does not fit its ", o[1] + c.kernel - 1, "x",
                 o[2] + c.kernel - 1, " input"));
  }
  if (n_out < 1) bad(concat("n_out must be >= 1, got ", n_out));
  if (!(dense_l2 >= 0) || !(activity_l1 >= 0)) bad("dense_l2 and activity_l1 must be >= 0");
  if (!(softplus_alpha > 0) || !(softplus_beta > 0)) bad("softplus alpha and beta must be > 0");
  if (!(conv_init_std >= 0)) bad("conv_init_std must be >= 0");
  if (!(poisson_eps >= 0)) bad("poisson_eps must be >= 0");
}

CnnSpec yan_spec(int height, int width, int filters, int n_out) {
  CnnSpec s;
  s.name = "yan";
  s.height = height, s.width = width, s.n_out = n_out;
  ConvLayerSpec c;
  c.channels = filters;
  c.kernel = std::max(1, std::min({7, height, width}));
  c.l1 = 5.5e-4, c.l2 = 1e-3, c.noise_sigma = 0.1;
  s.conv = {c};
  return s;
}

CnnSpec deep_retina_spec(int height, int width, int n_out) {
  CnnSpec s;
  s.name = "deep_retina";
  s.height = height, s.width = width, s.n_out = n_out;
  int k1 = 15, k2 = 9;
  const int side = std::min(height, width);
  if (side < 24 && side >= 1) {  // receptive field k1 + k2 - 1 = side - 1, ratio 15:9
    const int sum = side;
    k1 = std::max(1, int(std::lround(sum * 15.0 / 24.0)));
    k2 = std::max(1, sum - k1);
  }
  s.conv = {ConvLayerSpec{16, k1, 0.0, 1e-3, 0.1}, ConvLayerSpec{8, k2, 0.0, 1e-3, 0.1}};
  s.softplus_alpha = 1.0, s.softplus_beta = 1.0, s.train_softplus = false;
  return s;
}

// ---- models --------------------------------------------------------------------------------

namespace {

std::string conv_name(size_t l, const char* what) {
  return concat("conv", l, ".", what);
}
bool is_core(const std::string& name) {
  return name.rfind("conv", 0) == 0;
}

// An independent Philox stream per parameter tensor: (seed, tag) -> 64-bit stream key.
uint64_t stream(uint64_t seed, uint64_t tag) {
  const rng::U4 r = rng::bits(seed, tag, 0x5eed);
  return (uint64_t(r.v[0]) << 32) | r.v[1];
}

void fill_normal(Tensor& t, uint64_t key, double std) {
  for (int64_t i = 0; i < t.numel(); ++i) t.set(i, std * rng::normal(key, uint64_t(i)));
}

// Dense and softplus parameters (Keras: glorot_uniform weights, zero bias).
void add_readout(CnnModel& m, uint64_t seed) {
  const CnnSpec& s = m.spec;
  const int64_t F = s.feature_count();
  Tensor w = Tensor::empty(Shape{s.n_out, F});
  const double limit = std::sqrt(6.0 / double(F + s.n_out));
  const uint64_t key = stream(seed, 1000);
  for (int64_t i = 0; i < w.numel(); ++i)
    w.set(i, limit * (2.0 * rng::uniform_f32(rng::bits(key, uint64_t(i), 0).v[0]) - 1.0));
  Tensor a = Tensor::empty(Shape{s.n_out}), b = Tensor::empty(Shape{s.n_out});
  a.fill(s.softplus_alpha);
  b.fill(s.softplus_beta);
  m.params.add("dense.weight", w);
  m.params.add("dense.bias", Tensor::zeros(Shape{s.n_out}));
  m.params.add("softplus.alpha", a, s.train_softplus);
  m.params.add("softplus.beta", b, s.train_softplus);
}

}  // namespace

CnnModel make_cnn(const CnnSpec& spec, uint64_t seed) {
  spec.validate();
  CnnModel m;
  m.spec = spec;
  int64_t cin = spec.history;
  for (size_t l = 0; l < spec.conv.size(); ++l) {
    const ConvLayerSpec& c = spec.conv[l];
    Tensor w = Tensor::empty(Shape{c.channels, cin, c.kernel, c.kernel});
    fill_normal(w, stream(seed, l), spec.conv_init_std);
    m.params.add(conv_name(l, "weight"), w);
    m.params.add(conv_name(l, "bias"), Tensor::zeros(Shape{c.channels}));
    cin = c.channels;
  }
  add_readout(m, seed);
  return m;
}

void set_trainable(CnnModel& m, bool core, bool readout) {
  for (auto& e : m.params.entries()) {
    if (is_core(e.name))
      e.trainable = core;
    else if (e.name.rfind("softplus.", 0) == 0)
      e.trainable = readout && m.spec.train_softplus;
    else
      e.trainable = readout;
  }
}

CnnModel with_new_readout(const CnnModel& m, int n_out, uint64_t seed) {
  CnnModel r;
  r.spec = m.spec;
  r.spec.n_out = n_out;
  r.spec.validate();
  for (const auto& e : m.params.entries())
    if (is_core(e.name)) r.params.add(e.name, e.value.clone(), e.trainable);
  add_readout(r, seed);
  return r;
}

CnnModel cast_model(const CnnModel& m, DType t) {
  CnnModel r;
  r.spec = m.spec;
  for (const auto& e : m.params.entries()) r.params.add(e.name, e.value.to_dtype(t), e.trainable);
  return r;
}

// ---- the runner ----------------------------------------------------------------------------

namespace {

template <class F>
void with_type(const Tensor& t, F&& f) {
  cpu::with_float_type("retina cnn", t, std::forward<F>(f));
}

// l1 sum|w| + l2 sum w^2 in double.
double penalty(const Tensor& w, double l1, double l2) {
  double s1 = 0, s2 = 0;
  with_type(w, [&](auto tag) {
    using T = decltype(tag);
    const T* p = w.data<T>();
    for (int64_t i = 0; i < w.numel(); ++i) s1 += std::abs(double(p[i])), s2 += double(p[i]) * p[i];
  });
  return l1 * s1 + l2 * s2;
}

// g += l1 sign(w) + 2 l2 w (sign(0) = 0, as Theano's abs gradient).
void add_penalty_grad(const Tensor& w, const Tensor& g, double l1, double l2) {
  if (l1 == 0 && l2 == 0) return;
  with_type(w, [&](auto tag) {
    using T = decltype(tag);
    const T* p = w.data<T>();
    T* q = g.data<T>();
    for (int64_t i = 0; i < w.numel(); ++i)
      q[i] += T(l1 * double((p[i] > 0) - (p[i] < 0)) + 2.0 * l2 * double(p[i]));
  });
}

// dst [C, R] = src [R, C]^T.
void transpose(const Tensor& src, const Tensor& dst) {
  with_type(src, [&](auto tag) {
    using T = decltype(tag);
    const int64_t R = src.dim(0), C = src.dim(1);
    const T* s = src.data<T>();
    T* d = dst.data<T>();
    for (int64_t r = 0; r < R; ++r)
      for (int64_t c = 0; c < C; ++c) d[c * R + r] = s[r * C + c];
  });
}

Tensor grad_entry(ParamStore& grads, const std::string& name, const Tensor& like) {
  if (!grads.has(name)) return grads.add(name, Tensor::zeros(like.shape(), like.dtype()));
  Tensor& g = grads.get(name);
  if (g.shape() != like.shape() || g.dtype() != like.dtype())
    throw DataError(
        concat("cnn gradients: entry '", name, "' is ", g.str(), ", parameter is ", like.str()));
  return g;
}

}  // namespace

struct CnnRunner::Impl {
  // Flat buffers of `cap` samples; views of the batch's leading part are taken per call.
  std::vector<int64_t> per_sample;  // layer sizes, then n_out: the key of the layout
  DType dtype = DType::F32;
  int64_t cap = 0;
  std::vector<Tensor> pre, act, gpre, gact;  // per conv layer: conv out (+noise), relu, grads
  Tensor u, ut, rate, g_rate, g_ut, g_u, loss, one;
  std::vector<std::string> wname, bname;

  void ensure(const CnnSpec& s, int64_t B, DType t) {
    std::vector<int64_t> key;
    for (size_t l = 0; l < s.conv.size(); ++l) {
      const auto o = s.conv_output(l);
      key.push_back(o[0] * o[1] * o[2]);
    }
    key.push_back(s.n_out);
    const bool same = key == per_sample && t == dtype;
    if (same && B <= cap) return;
    cap = same ? std::max(B, cap) : B;
    per_sample = key, dtype = t;
    pre.clear(), act.clear(), gpre.clear(), gact.clear(), wname.clear(), bname.clear();
    for (size_t l = 0; l < s.conv.size(); ++l) {
      for (auto* v : {&pre, &act, &gpre, &gact})
        v->push_back(Tensor::empty(Shape{cap * key[l]}, t));
      wname.push_back(conv_name(l, "weight"));
      bname.push_back(conv_name(l, "bias"));
    }
    for (auto* v : {&u, &ut, &rate, &g_rate, &g_ut, &g_u})
      *v = Tensor::empty(Shape{cap * s.n_out}, t);
    loss = Tensor::empty(Shape{1}, t);
    one = Tensor::empty(Shape{1}, t);
    one.fill(1.0);
  }
  static Tensor part(const Tensor& flat, const Shape& s) {
    return flat.slice(0, s.numel()).view(s);
  }
  Shape layer_shape(const CnnSpec& s, size_t l, int64_t B) const {
    const auto o = s.conv_output(l);
    return Shape{B, o[0], o[1], o[2]};
  }

  // Forward through the softplus; returns rates [n_out, B].
  Tensor forward(Context& ctx, const CnnModel& m, const Tensor& x, bool training) {
    const CnnSpec& s = m.spec;
    const int64_t B = x.dim(0);
    const Shape want{B, s.history, s.height, s.width};
    if (x.shape() != want)
      throw DataError(concat("cnn '", s.name, "': input ", x.str(), ", expected ", want.str()));
    ensure(s, B, m.params.get("dense.weight").dtype());
    Tensor in = x;
    for (size_t l = 0; l < s.conv.size(); ++l) {
      const Tensor y = part(pre[l], layer_shape(s, l, B)), a = part(act[l], y.shape());
      ops::conv2d_forward(ctx, Conv2dParams{}, in, m.params.get(wname[l]), m.params.get(bname[l]),
                          y);
      if (training && s.conv[l].noise_sigma > 0)
        ops::gaussian_noise_forward(ctx, NoiseParams{s.conv[l].noise_sigma, true}, y, y);
      ops::relu_forward(ctx, y, a);
      in = a;
    }
    const int64_t n = s.n_out;
    const Tensor uu = part(u, Shape{B, n}), uT = part(ut, Shape{n, B}), r = part(rate, Shape{n, B});
    ops::linear_forward(ctx, in.view(Shape{B, s.feature_count()}), m.params.get("dense.weight"),
                        m.params.get("dense.bias"), uu);
    transpose(uu, uT);
    const Tensor &al = m.params.get("softplus.alpha"), &be = m.params.get("softplus.beta");
    for (int64_t j = 0; j < n; ++j)
      ops::softplus_forward(ctx, uT.slice(j, j + 1), al.slice(j, j + 1), be.slice(j, j + 1),
                            r.slice(j, j + 1));
    return r;
  }
};

CnnRunner::CnnRunner() : impl_(std::make_unique<Impl>()) {}
CnnRunner::~CnnRunner() = default;
CnnRunner::CnnRunner(CnnRunner&&) noexcept = default;
CnnRunner& CnnRunner::operator=(CnnRunner&&) noexcept = default;

Tensor CnnRunner::forward(Context& ctx, const CnnModel& m, const Tensor& x) {
  return impl_->forward(ctx, m, x, false);
}

CnnLossTerms CnnRunner::loss(Context& ctx, const CnnModel& m, const Tensor& x, const Tensor& y,
                             bool training, ParamStore* grads) {
  Impl& I = *impl_;
  const CnnSpec& s = m.spec;
  const ParamStore& P = m.params;
  const Tensor r = I.forward(ctx, m, x, training);
  const int64_t B = x.dim(0), n = s.n_out, L = int64_t(s.conv.size());
  if (y.shape() != r.shape() || y.dtype() != r.dtype())
    throw DataError(concat("cnn '", s.name, "': targets ", y.str(), ", expected ",
                           Shape{n, B}.str(), " in the parameters' dtype"));
  const PoissonNllParams pp{false, s.poisson_eps};
  ops::poisson_nll_forward(ctx, pp, r, y, I.loss);
  CnnLossTerms t;
  t.nll = I.loss.item(0);
  for (int64_t l = 0; l < L; ++l)
    t.conv_penalty += penalty(P.get(I.wname[l]), s.conv[l].l1, s.conv[l].l2);
  t.dense_penalty = penalty(P.get("dense.weight"), 0.0, s.dense_l2);
  const Tensor uT = Impl::part(I.ut, Shape{n, B});
  t.activity_penalty = penalty(uT, s.activity_l1 / double(B), 0.0);
  if (!grads) return t;

  auto trainable = [&](const std::string& name) {
    for (const auto& e : P.entries())
      if (e.name == name) return e.trainable;
    return false;
  };
  auto grad_of = [&](const std::string& name) {
    return trainable(name) ? grad_entry(*grads, name, P.get(name)) : Tensor();
  };
  // Readout: loss -> rates -> softplus (per cell) -> activity term -> dense.
  const Tensor g_r = Impl::part(I.g_rate, Shape{n, B}), g_uT = Impl::part(I.g_ut, Shape{n, B});
  ops::poisson_nll_backward(ctx, pp, I.one, r, y, g_r, GradMode::Overwrite);
  const Tensor &al = P.get("softplus.alpha"), &be = P.get("softplus.beta");
  const Tensor ga = grad_of("softplus.alpha"), gb = grad_of("softplus.beta");
  for (int64_t j = 0; j < n; ++j)
    ops::softplus_backward(ctx, g_r.slice(j, j + 1), uT.slice(j, j + 1), al.slice(j, j + 1),
                           be.slice(j, j + 1), g_uT.slice(j, j + 1),
                           ga.defined() ? ga.slice(j, j + 1) : Tensor(),
                           gb.defined() ? gb.slice(j, j + 1) : Tensor(), GradMode::Overwrite);
  add_penalty_grad(uT, g_uT, s.activity_l1 / double(B), 0.0);
  const Tensor g_u = Impl::part(I.g_u, Shape{B, n});
  transpose(g_uT, g_u);

  int64_t lowest = L;  // the lowest conv layer with a trainable parameter
  for (int64_t l = L - 1; l >= 0; --l)
    if (trainable(I.wname[l]) || trainable(I.bname[l])) lowest = l;
  const Shape last = I.layer_shape(s, size_t(L - 1), B);
  const Tensor feat = Impl::part(I.act[L - 1], last).view(Shape{B, s.feature_count()});
  const Tensor g_feat = lowest < L ? Impl::part(I.gact[L - 1], last).view(feat.shape()) : Tensor();
  const Tensor gw = grad_of("dense.weight"), gbias = grad_of("dense.bias");
  if (g_feat.defined() || gw.defined() || gbias.defined())
    ops::linear_backward(ctx, g_u, feat, P.get("dense.weight"), g_feat, gw, gbias,
                         GradMode::Overwrite);
  if (gw.defined()) add_penalty_grad(P.get("dense.weight"), gw, 0.0, s.dense_l2);

  // Core, top down to the lowest trainable layer: relu (at the noisy pre-activation) -> conv.
  for (int64_t l = L - 1; l >= lowest; --l) {
    const Shape sh = I.layer_shape(s, size_t(l), B);
    const Tensor pre = Impl::part(I.pre[l], sh), g_pre = Impl::part(I.gpre[l], sh);
    ops::relu_backward(ctx, pre, Impl::part(I.gact[l], sh), g_pre, GradMode::Overwrite);
    const Tensor in = l == 0 ? x : Impl::part(I.act[l - 1], I.layer_shape(s, size_t(l - 1), B));
    const Tensor g_in =
        l > lowest ? Impl::part(I.gact[l - 1], I.layer_shape(s, size_t(l - 1), B)) : Tensor();
    const Tensor gwl = grad_of(I.wname[l]), gbl = grad_of(I.bname[l]);
    ops::conv2d_backward(ctx, Conv2dParams{}, g_pre, in, P.get(I.wname[l]), g_in, gwl, gbl,
                         GradMode::Overwrite);
    if (gwl.defined()) add_penalty_grad(P.get(I.wname[l]), gwl, s.conv[l].l1, s.conv[l].l2);
  }
  return t;
}

// ---- files ---------------------------------------------------------------------------------

std::string cnn_sidecar_path(const std::string& path) {
  const std::string ext = ".safetensors";
  if (path.size() > ext.size() && path.compare(path.size() - ext.size(), ext.size(), ext) == 0)
    return path.substr(0, path.size() - ext.size()) + ".json";
  return path + ".json";
}

std::string cnn_spec_json(const CnnSpec& s) {
  nlohmann::json j;
  j["format"] = "dynsim.retina.cnn";
  j["version"] = 1;
  j["name"] = s.name;
  j["history"] = s.history;
  j["height"] = s.height;
  j["width"] = s.width;
  j["conv"] = nlohmann::json::array();
  for (const auto& c : s.conv)
    j["conv"].push_back({{"channels", c.channels},
                         {"kernel", c.kernel},
                         {"l1", c.l1},
                         {"l2", c.l2},
                         {"noise_sigma", c.noise_sigma}});
  j["n_out"] = s.n_out;
  j["dense_l2"] = s.dense_l2;
  j["activity_l1"] = s.activity_l1;
  j["softplus_alpha"] = s.softplus_alpha;
  j["softplus_beta"] = s.softplus_beta;
  j["train_softplus"] = s.train_softplus;
  j["conv_init_std"] = s.conv_init_std;
  j["poisson_eps"] = s.poisson_eps;
  return j.dump(2) + "\n";
}

CnnSpec cnn_spec_from_json(const std::string& text, const std::string& where) {
  CnnSpec s;
  try {
    const nlohmann::json j = nlohmann::json::parse(text);
    if (j.value("format", "") != "dynsim.retina.cnn")
      throw ConfigError(concat(where, ": not a dynsim.retina.cnn architecture (\"format\")"));
    if (j.at("version").get<int>() != 1)
      throw ConfigError(concat(where, ": unsupported version ", j.at("version").dump()));
    s.name = j.at("name").get<std::string>();
    s.history = j.at("history").get<int>();
    s.height = j.at("height").get<int>();
    s.width = j.at("width").get<int>();
    for (const auto& c : j.at("conv"))
      s.conv.push_back({c.at("channels").get<int>(), c.at("kernel").get<int>(),
                        c.at("l1").get<double>(), c.at("l2").get<double>(),
                        c.at("noise_sigma").get<double>()});
    s.n_out = j.at("n_out").get<int>();
    s.dense_l2 = j.at("dense_l2").get<double>();
    s.activity_l1 = j.at("activity_l1").get<double>();
    s.softplus_alpha = j.at("softplus_alpha").get<double>();
    s.softplus_beta = j.at("softplus_beta").get<double>();
    s.train_softplus = j.at("train_softplus").get<bool>();
    s.conv_init_std = j.at("conv_init_std").get<double>();
    s.poisson_eps = j.at("poisson_eps").get<double>();
  } catch (const nlohmann::json::exception& e) {
    throw ConfigError(concat(where, ": bad architecture JSON: ", e.what()));
  }
  try {
    s.validate();
  } catch (const ConfigError& e) {
    throw ConfigError(concat(where, ": ", e.what()));
  }
  return s;
}

void save_cnn(const CnnModel& m, const std::string& path) {
  std::map<std::string, Tensor> tensors;
  for (const auto& e : m.params.entries()) tensors[e.name] = e.value;
  const std::string arch = cnn_spec_json(m.spec);
  save_safetensors(path, tensors, {{"architecture", arch}});
  write_file_atomic(cnn_sidecar_path(path), arch);
}

CnnModel load_cnn(const std::string& path) {
  TensorFile f = load_safetensors(path);
  const std::string side = cnn_sidecar_path(path);
  std::string text;
  std::string where = side;
  if (FILE* fp = std::fopen(side.c_str(), "rb")) {
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, fp)) > 0) text.append(buf, n);
    std::fclose(fp);
  } else if (f.metadata.count("architecture")) {
    text = f.metadata.at("architecture");
    where = path + " (__metadata__ architecture)";
  } else {
    throw NoInputError(
        concat(path, ": no architecture sidecar ", side, " and no \"architecture\" metadata"));
  }
  // A freshly built model gives the expected names, shapes and flags; the file fills them.
  CnnModel m = make_cnn(cnn_spec_from_json(text, where), 0);
  for (auto& e : m.params.entries()) {
    auto it = f.tensors.find(e.name);
    if (it == f.tensors.end()) throw DataError(concat(path, ": tensor '", e.name, "' missing"));
    if (it->second.shape() != e.value.shape())
      throw DataError(concat(path, ": tensor '", e.name, "' has shape ", it->second.shape().str(),
                             ", the architecture needs ", e.value.shape().str()));
    if (it->second.dtype() == DType::I32)
      throw DataError(concat(path, ": tensor '", e.name, "' is integer"));
    e.value = it->second.to_dtype(DType::F32);
    f.tensors.erase(it);
  }
  if (!f.tensors.empty())
    throw DataError(concat(path, ": unexpected tensor '", f.tensors.begin()->first, "'"));
  return m;
}

}  // namespace dynsim::retina
