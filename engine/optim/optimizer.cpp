// Optimizer, gradient clipping and the cosine schedule (engine/optim/optimizer.h). The per-element
// math is in kernels/optim_math.h; this file keeps the state and the per-group learning rates.
#include "engine/optim/optimizer.h"

#include <cmath>
#include <map>
#include <set>

#include "kernels/dispatch.h"

namespace dynsim {

std::vector<ParamGroupRule> dynvision_param_groups() {
  return {{"recurrence", 0.2}, {"feedback", 0.5}};
}

Optimizer::Optimizer(OptimizerKind kind, const OptimizerHyper& hyper,
                     std::vector<ParamGroupRule> rules)
    : kind_(kind), hyper_(hyper), rules_(std::move(rules)) {
  set_lr(hyper.lr);
  if (!(hyper.weight_decay >= 0.0))
    throw ConfigError(concat("optimizer: weight_decay must be >= 0, got ", hyper.weight_decay));
  if (kind == OptimizerKind::SGD && !(hyper.momentum >= 0.0))
    throw ConfigError(concat("optimizer: momentum must be >= 0, got ", hyper.momentum));
  if (kind == OptimizerKind::SGD && hyper.nesterov && hyper.momentum == 0.0)
    throw ConfigError("optimizer: nesterov needs momentum > 0");
  if (kind != OptimizerKind::SGD &&
      !(hyper.beta1 >= 0.0 && hyper.beta1 < 1.0 && hyper.beta2 >= 0.0 && hyper.beta2 < 1.0))
    throw ConfigError(
        concat("optimizer: betas must lie in [0, 1), got ", hyper.beta1, ", ", hyper.beta2));
  for (const auto& r : rules_)
    if (r.pattern.empty() || !(r.lr_factor >= 0.0))
      throw ConfigError(
          concat("optimizer: bad parameter group rule '", r.pattern, "' x", r.lr_factor));
}

void Optimizer::set_lr(double lr) {
  if (!(lr >= 0.0) || !std::isfinite(lr))
    throw ConfigError(concat("optimizer: lr must be finite and >= 0, got ", lr));
  hyper_.lr = lr;
}

double Optimizer::lr_factor(const std::string& name) const {
  for (const auto& r : rules_)
    if (name.find(r.pattern) != std::string::npos) return r.lr_factor;
  return 1.0;
}

Optimizer::Slot* Optimizer::find(const std::string& name) {
  for (auto& s : slots_)
    if (s.name == name) return &s;
  return nullptr;
}

std::vector<std::string> Optimizer::fields() const {
  if (kind_ == OptimizerKind::SGD)
    return hyper_.momentum != 0.0 ? std::vector<std::string>{"momentum_buffer"}
                                  : std::vector<std::string>{};
  return {"exp_avg", "exp_avg_sq"};
}

void Optimizer::step(Context& ctx, ParamStore& params, const ParamStore& grads) {
  for (auto& e : params.entries()) {
    if (!e.trainable) continue;
    if (!grads.has(e.name))
      throw DataError(concat("optimizer step: no gradient for parameter '", e.name, "'"));
    const Tensor& g = grads.get(e.name);
    if (g.shape() != e.value.shape() || g.dtype() != e.value.dtype())
      throw DataError(concat("optimizer step: gradient of '", e.name, "' is ", g.str(),
                             ", parameter is ", e.value.str()));
    Slot* s = find(e.name);
    const bool first = s == nullptr;
    if (first) {
      slots_.push_back({e.name, 0, {}, {}});
      s = &slots_.back();
      if (kind_ == OptimizerKind::SGD) {
        if (hyper_.momentum != 0.0) s->a = ctx.empty(e.value.shape(), e.value.dtype());
      } else {
        s->a = ctx.zeros(e.value.shape(), e.value.dtype());
        s->b = ctx.zeros(e.value.shape(), e.value.dtype());
      }
    }
    s->step += 1;
    const double lr = hyper_.lr * lr_factor(e.name);
    if (kind_ == OptimizerKind::SGD) {
      SgdParams p;
      p.lr = lr;
      p.momentum = hyper_.momentum;
      p.weight_decay = hyper_.weight_decay;
      p.nesterov = hyper_.nesterov;
      p.first_step = first;
      ops::sgd_step(ctx, p, e.value, g, s->a);
    } else {
      AdamParams p;
      p.lr = lr;
      p.beta1 = hyper_.beta1;
      p.beta2 = hyper_.beta2;
      p.eps = hyper_.eps;
      p.weight_decay = hyper_.weight_decay;
      p.decoupled = kind_ == OptimizerKind::AdamW;
      p.step = s->step;
      ops::adam_step(ctx, p, e.value, g, s->a, s->b);
    }
  }
}

std::vector<std::pair<std::string, Tensor>> Optimizer::state() const {
  std::vector<std::pair<std::string, Tensor>> out;
  const auto f = fields();
  for (const auto& s : slots_) {
    out.emplace_back(s.name + ".step", Tensor::from({1}, {double(s.step)}, DType::F64));
    if (f.size() >= 1) out.emplace_back(s.name + "." + f[0], s.a);
    if (f.size() >= 2) out.emplace_back(s.name + "." + f[1], s.b);
  }
  return out;
}

void Optimizer::load_state(Context& ctx, const std::vector<std::pair<std::string, Tensor>>& state,
                           const ParamStore& params) {
  if (state.empty()) {
    slots_.clear();
    return;
  }
  std::map<std::string, const Tensor*> by_name;
  for (const auto& [name, t] : state)
    if (!by_name.emplace(name, &t).second)
      throw DataError(concat("optimizer state: entry '", name, "' appears twice"));
  auto take = [&](const std::string& key) -> const Tensor& {
    auto it = by_name.find(key);
    if (it == by_name.end()) throw DataError(concat("optimizer state: missing entry '", key, "'"));
    const Tensor& t = *it->second;
    by_name.erase(it);
    return t;
  };
  std::vector<Slot> slots;
  for (const auto& e : params.entries()) {
    if (!e.trainable) continue;
    Slot s{e.name, 0, {}, {}};
    const Tensor& st = take(e.name + ".step");
    if (!st.defined() || st.numel() != 1)
      throw DataError(concat("optimizer state: '", e.name, ".step' must hold one value, got ",
                             st.defined() ? st.str() : std::string("undefined")));
    const double step = ctx.to_host(st).item(0);
    if (!(step >= 1.0) || step != std::floor(step))
      throw DataError(
          concat("optimizer state: '", e.name, ".step' must be a positive integer, got ", step));
    s.step = int64_t(step);
    const auto f = fields();
    for (size_t k = 0; k < f.size(); ++k) {
      const std::string key = e.name + "." + f[k];
      const Tensor& t = take(key);
      if (!t.defined() || t.shape() != e.value.shape() || t.dtype() != e.value.dtype())
        throw DataError(concat("optimizer state: '", key, "' is ",
                               t.defined() ? t.str() : std::string("undefined"), ", parameter is ",
                               e.value.str()));
      Tensor copy = ctx.empty(t.shape(), t.dtype());
      ctx.copy(copy, t);
      (k == 0 ? s.a : s.b) = copy;
    }
    slots.push_back(std::move(s));
  }
  if (!by_name.empty())
    throw DataError(concat("optimizer state: unexpected entry '", by_name.begin()->first,
                           "' (no such trainable parameter or field for this optimizer)"));
  slots_ = std::move(slots);
}

double clip_grad_norm(Context& ctx, ParamStore& grads, double max_norm) {
  if (!(max_norm > 0.0))
    throw ConfigError(concat("clip_grad_norm: max_norm must be > 0, got ", max_norm));
  double sq = 0.0;
  for (const auto& e : grads.entries())
    if (e.trainable) sq += ops::sum_squares(ctx, e.value);
  const double norm = std::sqrt(sq);
  const double coef = max_norm / (norm + 1e-6);
  if (coef < 1.0)
    for (auto& e : grads.entries())
      if (e.trainable) ops::scale(ctx, coef, e.value, e.value);
  return norm;
}

void accumulate(Context& ctx, ParamStore& into, const ParamStore& g) {
  for (const auto& e : g.entries()) {
    if (!into.has(e.name))
      throw DataError(concat("accumulate: no gradient named '", e.name, "' to add into"));
    ops::axpy(ctx, 1.0, e.value, into.get(e.name));
  }
}

double cosine_lr(double lr0, int epoch, int T_max, double eta_min) {
  if (T_max <= 0) throw ConfigError(concat("cosine_lr: T_max must be > 0, got ", T_max));
  const double pi = 3.14159265358979323846;
  return eta_min + (lr0 - eta_min) * (1.0 + std::cos(pi * double(epoch) / double(T_max))) / 2.0;
}

}  // namespace dynsim
