// Recorder and StabilityProbes (engine/dynamics/recorder.h): a run's recording and finiteness
// probes in buffers on the context's device, read on the host once after the loop.
#include "engine/dynamics/recorder.h"

#include <cmath>
#include <limits>

#include "kernels/dispatch.h"

namespace dynsim {

Recorder::Recorder(Context& ctx, const Graph& g, int batch, int steps, int K, DType t,
                   RecordMode mode)
    : ctx_(ctx), B_(batch), T_(steps), K_(K), mode_(mode) {
  // A bf16 run: statistics accumulate in f32 (ops::abs_mean_std writes f32 from bf16 rates).
  const DType stat_t = t == DType::BF16 ? DType::F32 : t;
  const size_t A = g.areas.size();
  rec_.steps = steps;
  for (const Area& a : g.areas) rec_.areas.push_back(a.name);
  rec_.present.assign(A, std::vector<uint8_t>(size_t(steps), 0));
  auto filled = [&](const Shape& s, double v, DType dt) {
    Tensor x = ctx.empty(s, dt);
    ops::fill(ctx, v, x);
    return x;
  };
  const double nan = std::numeric_limits<double>::quiet_NaN();
  if (mode == RecordMode::Layer)
    for (size_t a = 0; a < A; ++a) {
      mean_.push_back(filled(Shape{B_, T_}, nan, stat_t));  // NaN while the area is absent
      sd_.push_back(filled(Shape{B_, T_}, nan, stat_t));
    }
  if (mode == RecordMode::Full)
    for (const Area& a : g.areas)
      full_.push_back(filled(Shape{B_, T_, a.channels, a.height, a.width}, 0.0, t));
  logits_ = K > 0 ? filled(Shape{B_, T_, K}, 0.0, t) : Tensor::zeros(Shape{B_, T_, 0}, stat_t);
}

void Recorder::rates(int a, int64_t tr, const Tensor* r, bool present) {
  rec_.present[size_t(a)][size_t(tr)] = present;
  if (mode_ == RecordMode::None || !r) return;
  if (mode_ == RecordMode::Layer) {
    ops::abs_mean_std(ctx_, *r, tr, mean_[size_t(a)], sd_[size_t(a)]);
    return;
  }
  const int64_t per = r->numel() / B_, BT = int64_t(B_) * T_;
  ctx_.copy_rows(full_[size_t(a)].view(Shape{BT, per}).slice(tr, BT), T_ * per, *r, per, B_, per);
}

void Recorder::logits(int64_t tr, const Tensor& y) {
  const int64_t BT = int64_t(B_) * T_;
  ctx_.copy_rows(logits_.view(Shape{BT, K_}).slice(tr, BT), int64_t(T_) * K_, y, K_, B_, K_);
}

void Recorder::clear() {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  for (size_t a = 0; a < mean_.size(); ++a) {
    ops::fill(ctx_, nan, mean_[a]);
    ops::fill(ctx_, nan, sd_[a]);
  }
  for (const Tensor& f : full_) ops::fill(ctx_, 0.0, f);
  if (K_ > 0) ops::fill(ctx_, 0.0, logits_);
}

namespace {
// The recording's tensors are f32 or f64: bf16 rates and logits widen (exactly) on the host.
Tensor widened(Tensor host) {
  return host.dtype() == DType::BF16 ? host.to_dtype(DType::F32) : host;
}
}  // namespace

Recording Recorder::copy_out() {
  Recording r;
  r.steps = rec_.steps;
  r.areas = rec_.areas;
  r.present = rec_.present;
  for (size_t a = 0; a < mean_.size(); ++a) {
    r.mean_abs.push_back(ctx_.to_host(mean_[a]));
    r.std_abs.push_back(ctx_.to_host(sd_[a]));
  }
  for (const Tensor& f : full_) r.rates.push_back(widened(ctx_.to_host(f)));
  r.logits = widened(ctx_.to_host(logits_));
  return r;
}

Recording Recorder::finish() {
  for (size_t a = 0; a < mean_.size(); ++a) {
    rec_.mean_abs.push_back(ctx_.host_view(mean_[a]));
    rec_.std_abs.push_back(ctx_.host_view(sd_[a]));
  }
  for (const Tensor& f : full_) rec_.rates.push_back(widened(ctx_.host_view(f)));
  rec_.logits = widened(ctx_.host_view(logits_));
  mean_.clear();
  sd_.clear();
  full_.clear();
  return std::move(rec_);
}

StabilityProbes::StabilityProbes(Context& ctx, const Graph& g, int64_t total_steps, int idle_steps,
                                 DType t, std::string staged_solver)
    : ctx_(ctx),
      g_(g),
      areas_(int64_t(g.areas.size())),
      idle_(idle_steps),
      solver_(std::move(staged_solver)) {
  values_ = ctx.empty(Shape{total_steps * areas_}, t == DType::BF16 ? DType::F32 : t);
  written_.assign(size_t(total_steps * areas_), 0);
}

void StabilityProbes::probe(int a, int64_t t, const Tensor& x) {
  const int64_t slot = t * areas_ + a;
  ops::mean_all_forward(ctx_, x, values_.slice(slot, slot + 1));
  written_[size_t(slot)] = 1;
  if (values_.is_cpu()) check(slot, slot + 1);  // free to read: stop at once
}

void StabilityProbes::check_all() {
  if (!values_.is_cpu()) check(0, values_.numel());
}

void StabilityProbes::check(int64_t from, int64_t to) {
  const Tensor host = ctx_.host_view(values_);
  for (int64_t slot = from; slot < to; ++slot) {
    if (!written_[size_t(slot)] || std::isfinite(host.item(slot))) continue;
    const int64_t t = slot / areas_;
    const std::string note = !solver_.empty() ? "solver " + solver_
                             : t < idle_      ? "idle phase"
                                              : "real phase";
    throw Error(concat("stability check: non-finite value in area ",
                       g_.areas[size_t(slot % areas_)].name, " at step ", t,
                       " (tensor x, the state before the nonlinearity; ", note, ")"));
  }
}

}  // namespace dynsim
