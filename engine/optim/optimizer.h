// Optimisers over a ParamStore (torch.optim.SGD / Adam / AdamW, single-tensor semantics), with
// DynVision's per-group learning-rate factors, global gradient-norm clipping and the cosine
// schedule. State (momentum buffers, Adam moments, step counts) lives in the optimizer, one set
// per trainable parameter, and round-trips through state() / load_state() for checkpoints.
// Gradient accumulation over micro-batches / time steps: backward passes write with
// GradMode::Accumulate into one grads store (or call accumulate() below).
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "engine/core/context.h"
#include "engine/core/params.h"
#include "engine/core/tensor.h"

namespace dynsim {

enum class OptimizerKind : uint8_t { SGD, Adam, AdamW };

struct OptimizerHyper {
  double lr = 1e-3;       // base learning rate (a group's lr is lr * its factor)
  double momentum = 0.0;  // SGD (dampening is 0)
  bool nesterov = false;  // SGD
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;  // Adam / AdamW (amsgrad off)
  double weight_decay = 0.0;  // SGD, Adam: coupled L2 (g += wd p); AdamW: p *= 1 - lr wd
};

// A parameter whose name contains `pattern` trains with lr * lr_factor. Rules are tried in
// order and the first match wins; names matching none use factor 1.
struct ParamGroupRule {
  std::string pattern;
  double lr_factor = 1.0;
};
// DynVision's groups: names containing "recurrence" x0.2, "feedback" x0.5.
std::vector<ParamGroupRule> dynvision_param_groups();

class Optimizer {
 public:
  Optimizer(OptimizerKind kind, const OptimizerHyper& hyper,
            std::vector<ParamGroupRule> rules = {});

  // One update of every trainable parameter from the gradient of the same name in grads (a
  // DataError if it is missing or misshapen); frozen parameters are left alone and need no grad.
  // State is created on the first step (torch: lazily).
  void step(Context& ctx, ParamStore& params, const ParamStore& grads);

  OptimizerKind kind() const { return kind_; }
  const OptimizerHyper& hyper() const { return hyper_; }
  double lr() const { return hyper_.lr; }
  void set_lr(double lr);  // the base lr; group factors still apply (a scheduler calls this)
  double lr_factor(const std::string& name) const;  // first matching rule, else 1

  // Checkpointing: entries "<param>.step" (f64 [1]), "<param>.momentum_buffer" (SGD with
  // momentum) or "<param>.exp_avg" and "<param>.exp_avg_sq" (Adam/AdamW), in parameter order.
  // Empty before the first step.
  std::vector<std::pair<std::string, Tensor>> state() const;
  // Replaces the state with copies of `state` (on ctx's device). An empty list resets it.
  // Otherwise every trainable parameter of params needs all its entries with its shape and
  // dtype; missing, misshapen, unknown or duplicate entries throw DataError.
  void load_state(Context& ctx, const std::vector<std::pair<std::string, Tensor>>& state,
                  const ParamStore& params);

 private:
  struct Slot {
    std::string name;
    int64_t step = 0;
    Tensor a, b;  // momentum buffer (SGD) | exp_avg, exp_avg_sq (Adam, AdamW)
  };
  Slot* find(const std::string& name);
  std::vector<std::string> fields() const;

  OptimizerKind kind_;
  OptimizerHyper hyper_;
  std::vector<ParamGroupRule> rules_;
  std::vector<Slot> slots_;
};

// Scales every gradient entry marked trainable by max_norm / (norm + 1e-6) when that factor is
// below 1 (torch.nn.utils.clip_grad_norm_: multiplies by the factor clamped to 1, so it also
// scales by a hair when norm lies within 1e-6 below max_norm). norm is the global L2 norm over
// those entries (accumulated in double). Returns the norm before clipping.
double clip_grad_norm(Context& ctx, ParamStore& grads, double max_norm);

// into[name] += g[name] for every entry of g (same shapes).
void accumulate(Context& ctx, ParamStore& into, const ParamStore& g);

// torch CosineAnnealingLR's closed form: eta_min + (lr0 - eta_min) (1 + cos(pi epoch / T_max)) / 2.
// DynVision steps it once per epoch (T_max 500 in its configs) and the group factors scale the
// result (torch schedules each group from its own base lr; equal for eta_min = 0 up to rounding).
double cosine_lr(double lr0, int epoch, int T_max, double eta_min = 0.0);

}  // namespace dynsim
