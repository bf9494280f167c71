// Windows, prediction and the training loop of the retina CNNs (models/retina/cnn.h). Batches
// are gathered from the stimulus on the fly (windows are never materialised for a recording);
// the epoch order is a Philox permutation keyed by (seed, epoch) and the training noise comes
// from the loop's own context stream, so a run is a function of (data, options, threads).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "engine/core/rng.h"
#include "engine/optim/optimizer.h"
#include "kernels/op_common.h"
#include "models/retina/cnn.h"

namespace dynsim::retina {

// ---- windows ------------------------------------------------------------------------------

int64_t window_count(int64_t frames, int history) {
  return frames > history ? frames - history : 0;
}

namespace {

// Element i of a host tensor of any dtype as double, through a typed loop.
template <class F>
void with_any_type(const char* op, const Tensor& t, F&& f) {
  if (!t.defined() || !t.is_cpu()) throw DataError(concat(op, ": needs a host tensor"));
  switch (t.dtype()) {
    case DType::F32:
      return f(t.data<float>());
    case DType::F64:
      return f(t.data<double>());
    case DType::I32:
      return f(t.data<int32_t>());
    case DType::BF16:
      break;
  }
  throw DataError(concat(op, ": bf16 responses are not supported (f32, f64 or i32), got ",
                         t.str()));
}

}  // namespace

void gather_windows(const Tensor& stimulus, const int64_t* windows, int64_t n, const Tensor& x) {
  const char* op = "gather_windows";
  if (stimulus.rank() != 3)
    throw DataError(concat(op, ": stimulus must be [T, H, W], got ", stimulus.str()));
  if (x.rank() != 4 || x.dim(0) != n || x.dim(2) != stimulus.dim(1) || x.dim(3) != stimulus.dim(2))
    throw DataError(
        concat(op, ": x ", x.str(), " does not fit ", n, " windows of ", stimulus.str()));
  const int64_t T = stimulus.dim(0), history = x.dim(1), hw = stimulus.dim(1) * stimulus.dim(2);
  const int64_t len = history * hw;  // a window is `history` consecutive frames: one run
  with_any_type(op, stimulus, [&](const auto* s) {
    cpu::with_float_type(op, x, [&](auto tag) {
      using T_ = decltype(tag);
      T_* px = x.data<T_>();
      for (int64_t b = 0; b < n; ++b) {
        const int64_t i = windows[b];
        if (i < 0 || i + history > T)
          throw DataError(concat(op, ": window ", i, " needs frames [", i, ", ", i + history,
                                 ") of a ", T, "-frame stimulus"));
        const auto* src = s + i * hw;
        T_* dst = px + b * len;
        for (int64_t k = 0; k < len; ++k) dst[k] = T_(src[k]);
      }
    });
  });
}

void gather_targets(const Tensor& responses, const int64_t* windows, int64_t n, int history,
                    const Tensor& y) {
  const char* op = "gather_targets";
  if (responses.rank() != 1 && responses.rank() != 2)
    throw DataError(concat(op, ": responses must be [n_out, T] or [T], got ", responses.str()));
  const int64_t cells = responses.rank() == 2 ? responses.dim(0) : 1, T = responses.dim(-1);
  if (y.rank() != 2 || y.dim(0) != cells || y.dim(1) != n)
    throw DataError(
        concat(op, ": y ", y.str(), " does not fit ", n, " targets of ", responses.str()));
  with_any_type(op, responses, [&](const auto* r) {
    cpu::with_float_type(op, y, [&](auto tag) {
      using T_ = decltype(tag);
      T_* py = y.data<T_>();
      for (int64_t b = 0; b < n; ++b) {
        const int64_t t = target_frame(windows[b], history);
        if (windows[b] < 0 || t >= T)
          throw DataError(concat(op, ": window ", windows[b], " targets frame ", t, " of a ", T,
                                 "-frame response"));
        for (int64_t j = 0; j < cells; ++j) py[j * n + b] = T_(r[j * T + t]);
      }
    });
  });
}

// ---- prediction ---------------------------------------------------------------------------

namespace {

void check_data(const CnnSpec& s, const CnnData& d, const char* what, bool need_responses) {
  const Tensor& x = d.stimulus;
  if (!x.defined() || x.rank() != 3 || x.dim(1) != s.height || x.dim(2) != s.width)
    throw DataError(concat(what, ": stimulus must be [T, ", s.height, ", ", s.width, "], got ",
                           x.defined() ? x.str() : std::string("undefined")));
  if (!need_responses) return;
  const Tensor& r = d.responses;
  const bool ok =
      r.defined() && ((r.rank() == 2 && r.dim(0) == s.n_out) || (r.rank() == 1 && s.n_out == 1));
  if (!ok || r.dim(-1) != x.dim(0))
    throw DataError(concat(what, ": responses must be [", s.n_out, ", ", x.dim(0), "], got ",
                           r.defined() ? r.str() : std::string("undefined")));
}

DType model_dtype(const CnnModel& m) {
  return m.params.get("dense.weight").dtype();
}

}  // namespace

Tensor predict(const CnnModel& m, const Tensor& stimulus, int threads, int batch) {
  const CnnSpec& s = m.spec;
  check_data(s, CnnData{stimulus, {}}, "predict", false);
  const int64_t T = stimulus.dim(0), nw = window_count(T, s.history), n = s.n_out;
  Tensor out = Tensor::empty(Shape{n, T});
  out.fill(std::numeric_limits<double>::quiet_NaN());
  if (nw == 0) return out;
  ContextOptions co;
  co.threads = threads;
  Context ctx(co);
  CnnRunner runner;
  const int64_t bmax = std::max<int64_t>(1, std::min<int64_t>(batch, nw));
  Tensor x = Tensor::empty(Shape{bmax, s.history, s.height, s.width}, model_dtype(m));
  std::vector<int64_t> idx(static_cast<size_t>(bmax));
  float* po = out.data<float>();
  for (int64_t w0 = 0; w0 < nw; w0 += bmax) {
    const int64_t b = std::min(bmax, nw - w0);
    for (int64_t k = 0; k < b; ++k) idx[size_t(k)] = w0 + k;
    const Tensor xb = x.slice(0, b);
    gather_windows(stimulus, idx.data(), b, xb);
    const Tensor r = runner.forward(ctx, m, xb);  // [n, b]
    for (int64_t j = 0; j < n; ++j)
      for (int64_t k = 0; k < b; ++k)
        po[j * T + target_frame(w0 + k, s.history)] = float(r.item(j * b + k));
  }
  return out;
}

// ---- training -----------------------------------------------------------------------------

CnnFitOptions yan_fit_options() {
  CnnFitOptions o;
  o.batch_size = 2000;
  o.max_iterations = 50000;
  o.max_epochs = 3000;
  o.validate_every = 20;
  o.min_delta = 0.01;
  o.snapshot_after = 500;
  o.patience = 0;
  return o;
}

namespace {

// A 64-bit stream key derived from the user's seed, one per purpose.
uint64_t key64(uint64_t seed, uint32_t tag) {
  const rng::U4 r = rng::bits(seed, 0, tag);
  return (uint64_t(r.v[0]) << 32) | r.v[1];
}

// Mean over cells of Pearson(pred[j], target[j]); cells whose target is constant are left out,
// a constant prediction counts as 0 (no information). 0 when no cell is defined.
double mean_cc(const std::vector<double>& pred, const std::vector<double>& target, int64_t cells,
               int64_t n) {
  double sum = 0;
  int used = 0;
  for (int64_t j = 0; j < cells; ++j) {
    const double* p = pred.data() + j * n;
    const double* y = target.data() + j * n;
    double mp = 0, my = 0;
    for (int64_t i = 0; i < n; ++i) mp += p[i], my += y[i];
    mp /= double(n), my /= double(n);
    double sxy = 0, sxx = 0, syy = 0;
    for (int64_t i = 0; i < n; ++i) {
      const double a = p[i] - mp, b = y[i] - my;
      sxy += a * b, sxx += a * a, syy += b * b;
    }
    if (!(syy > 0)) continue;
    sum += sxx > 0 ? sxy / std::sqrt(sxx * syy) : 0.0;
    ++used;
  }
  return used ? sum / used : 0.0;
}

struct WindowSet {
  const CnnData* data;
  std::vector<int64_t> windows;
};

CnnFitResult fit_windows(CnnModel& m, const WindowSet& train, const WindowSet& val,
                         const CnnFitOptions& o) {
  const CnnSpec& s = m.spec;
  if (o.batch_size < 1) throw ConfigError(concat("fit_cnn: batch_size must be >= 1"));
  if (o.validate_every < 1) throw ConfigError(concat("fit_cnn: validate_every must be >= 1"));
  if (o.max_iterations < 0 || o.max_epochs < 0 || o.patience < 0)
    throw ConfigError("fit_cnn: max_iterations, max_epochs and patience must be >= 0");
  if (train.windows.empty())
    throw DataError(concat("fit_cnn: no training windows (need more than ", s.history, " frames)"));
  if (val.windows.empty()) throw DataError("fit_cnn: no validation windows");
  const DType dt = model_dtype(m);
  const int64_t n = s.n_out, nt = int64_t(train.windows.size()), nv = int64_t(val.windows.size());
  const int64_t B = std::min<int64_t>(o.batch_size, nt);

  ContextOptions co;
  co.threads = o.threads;
  co.seed = key64(o.seed, 0xC0FFEEu);  // the training-noise stream
  Context ctx(co);
  OptimizerHyper h;
  h.lr = o.lr, h.beta1 = o.beta1, h.beta2 = o.beta2, h.eps = o.eps;
  Optimizer opt(OptimizerKind::Adam, h);
  CnnRunner runner;
  ParamStore grads;
  Tensor x = Tensor::empty(Shape{B, s.history, s.height, s.width}, dt);
  Tensor y = Tensor::empty(Shape{n * B}, dt);

  // Validation targets once, as double [n, nv].
  std::vector<double> vt(size_t(n * nv)), vp(size_t(n * nv));
  {
    Tensor yt = Tensor::empty(Shape{n, nv}, DType::F64);
    gather_targets(val.data->responses, val.windows.data(), nv, s.history, yt);
    std::memcpy(vt.data(), yt.data<double>(), vt.size() * sizeof(double));
  }
  auto validate = [&]() {
    for (int64_t w0 = 0; w0 < nv; w0 += B) {
      const int64_t b = std::min(B, nv - w0);
      gather_windows(val.data->stimulus, val.windows.data() + w0, b, x.slice(0, b));
      const Tensor r = runner.forward(ctx, m, x.slice(0, b));
      for (int64_t j = 0; j < n; ++j)
        for (int64_t k = 0; k < b; ++k) vp[size_t(j * nv + w0 + k)] = r.item(j * b + k);
    }
    return mean_cc(vp, vt, n, nv);
  };

  CnnFitResult res;
  std::vector<Tensor> best;
  int since_best = 0;
  double loss_sum = 0;
  int64_t loss_count = 0;
  auto record = [&](int64_t it) {
    CnnValidation v;
    v.iteration = it;
    v.train_loss = loss_count ? loss_sum / double(loss_count) : std::nan("");
    v.val_cc = validate();
    loss_sum = 0, loss_count = 0;
    res.history.push_back(v);
    if (o.on_validation) o.on_validation(v.iteration, v.train_loss, v.val_cc);
    const bool eligible = it >= o.snapshot_after;
    if (eligible && (res.best_iteration < 0 || v.val_cc > res.best_val_cc + o.min_delta)) {
      res.best_val_cc = v.val_cc, res.best_iteration = it, since_best = 0;
      best.clear();
      for (const auto& e : m.params.entries()) best.push_back(e.value.clone());
    } else if (eligible) {
      ++since_best;
    }
    if (o.patience > 0 && since_best >= o.patience) res.stopped_early = true;
  };

  record(0);
  std::vector<int64_t> order = train.windows;
  const uint64_t shuffle_key = key64(o.seed, 0x5A11Eu);
  while (!res.stopped_early && res.epochs < o.max_epochs && res.iterations < o.max_iterations) {
    // Fisher-Yates from the identity order, so epoch e's order depends on (seed, e) alone.
    order = train.windows;
    for (int64_t i = nt - 1; i > 0; --i) {
      const rng::U4 r = rng::bits(shuffle_key, (uint64_t(res.epochs) << 32) | uint64_t(i), 0);
      const uint64_t v = (uint64_t(r.v[0]) << 32) | r.v[1];
      std::swap(order[size_t(i)], order[size_t(v % uint64_t(i + 1))]);
    }
    ++res.epochs;
    for (int64_t w0 = 0; w0 < nt && res.iterations < o.max_iterations; w0 += B) {
      const int64_t b = std::min(B, nt - w0);
      const Tensor xb = x.slice(0, b), yb = y.slice(0, n * b).view(Shape{n, b});
      gather_windows(train.data->stimulus, order.data() + w0, b, xb);
      gather_targets(train.data->responses, order.data() + w0, b, s.history, yb);
      const CnnLossTerms t = runner.loss(ctx, m, xb, yb, true, &grads);
      if (!std::isfinite(t.total()))
        throw DataError(concat("fit_cnn: loss is ", t.total(), " at iteration ", res.iterations,
                               " (lr ", o.lr, " too high?)"));
      opt.step(ctx, m.params, grads);
      loss_sum += t.total(), ++loss_count, ++res.iterations;
      if (res.iterations % o.validate_every == 0) {
        record(res.iterations);
        if (res.stopped_early) break;
      }
    }
  }
  if (res.history.back().iteration != res.iterations) record(res.iterations);
  if (!best.empty()) {
    size_t k = 0;
    for (auto& e : m.params.entries()) e.value = best[k++];
  }
  return res;
}

WindowSet all_windows(const CnnData& d, int64_t begin, int64_t end) {
  WindowSet w{&d, {}};
  for (int64_t i = begin; i < end; ++i) w.windows.push_back(i);
  return w;
}

// Sets the flags, runs f, restores the flags (also when f throws).
template <class F>
CnnFitResult with_flags(CnnModel& m, bool core, bool readout, F&& f) {
  std::vector<bool> saved;
  for (const auto& e : m.params.entries()) saved.push_back(e.trainable);
  set_trainable(m, core, readout);
  auto restore = [&]() {
    size_t k = 0;
    for (auto& e : m.params.entries()) e.trainable = saved[k++];
  };
  try {
    CnnFitResult r = f();
    restore();
    return r;
  } catch (...) {
    restore();
    throw;
  }
}

}  // namespace

CnnFitResult fit_cnn(CnnModel& m, const CnnData& train, const CnnData& val,
                     const CnnFitOptions& o) {
  check_data(m.spec, train, "fit_cnn (training data)", true);
  check_data(m.spec, val, "fit_cnn (validation data)", true);
  const int h = m.spec.history;
  return fit_windows(m, all_windows(train, 0, window_count(train.stimulus.dim(0), h)),
                     all_windows(val, 0, window_count(val.stimulus.dim(0), h)), o);
}

CnnFitResult fit_cnn(CnnModel& m, const CnnData& data, const CnnFitOptions& o) {
  check_data(m.spec, data, "fit_cnn", true);
  if (!(o.validation_fraction > 0 && o.validation_fraction < 1))
    throw ConfigError(
        concat("fit_cnn: validation_fraction must lie in (0, 1), got ", o.validation_fraction));
  const int h = m.spec.history;
  const int64_t nw = window_count(data.stimulus.dim(0), h);
  const int64_t nv = std::max<int64_t>(1, std::llround(double(nw) * o.validation_fraction));
  if (nw - nv < 1)
    throw DataError(concat("fit_cnn: ", data.stimulus.dim(0), " frames give ", nw,
                           " windows, too few to hold out ", nv, " for validation"));
  return fit_windows(m, all_windows(data, 0, nw - nv), all_windows(data, nw - nv, nw), o);
}

CnnFitResult refit_readout(CnnModel& m, const CnnData& data, const CnnFitOptions& o) {
  return with_flags(m, false, true, [&]() { return fit_cnn(m, data, o); });
}

CnnFitResult fine_tune(CnnModel& m, const CnnData& data, const CnnFitOptions& o) {
  return with_flags(m, true, true, [&]() { return fit_cnn(m, data, o); });
}

}  // namespace dynsim::retina
