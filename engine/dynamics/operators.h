// Connection operators (engine/dynamics/graph.h OpSpec) as a short chain of kernel calls with their
// intermediate buffers allocated once per batch size. forward(x) -> y; a TwoStage operator
// takes an optional term added between its stages (DynVision's recurrence target "middle"),
// and any operator an optional term added to its input (target "input").
#pragma once
#include <memory>
#include <vector>

#include "engine/dynamics/graph.h"
#include "kernels/op_common.h"

namespace dynsim {

// How an operator may be evaluated; every choice gives the same result within float rounding.
struct OperatorOptions {
  // A 1x1 conv followed by a nearest downsample by whole factors (DynVision's skip connections,
  // which run the conv at the source resolution and keep 1 pixel in s_h s_w) runs as a 1x1 conv
  // with stride (s_h, s_w): the kept pixels' products, without the discarded ones
  // (performance-notes.md §3). false: DynVision's literal order (for checks and benchmarks).
  // (A resize to the operator's own size is a copy and is always left out.)
  bool strided_skip = true;
};

class OperatorRunner {
 public:
  OperatorRunner(Context& ctx, const OpSpec& op, ParamStore& params, int batch, DType dtype,
                 const OperatorOptions& options = {});
  ~OperatorRunner();
  OperatorRunner(OperatorRunner&&) noexcept;
  Shape output_shape() const;  // [B, C, H, W] after the optional resize
  bool strided() const;        // the downsample became the conv's stride (OperatorOptions)
  int64_t forward_calls() const;  // forward() calls so far (benchmarks and tests count work)
  // FLOPs of the forward() calls so far: the convolutions (2 per multiply-add, 1 per bias add),
  // the self recurrence's w x + b, and the input and middle terms' adds; resizes, copies and
  // the ReLU between two stages count nothing.
  double forward_flops() const;
  // Reads the operator's host-side scalars (the self recurrence's w and b) once; forward then
  // uses these values until the next begin_run instead of reading them on every call (which
  // on CUDA is a device-to-host copy and a stream sync per step). Call it whenever the
  // parameters may have changed (the Scheduler does, at the start of every run).
  void begin_run(Context& ctx);
  // y = T(x [+ input_add]) with middle_add added between the stages of a TwoStage operator.
  // input_add / middle_add may be undefined. y must have output_shape().
  void forward(Context& ctx, const Tensor& x, const Tensor& y, const Tensor& input_add = {},
               const Tensor& middle_add = {});
  // The reverse of forward for output gradient grad_y: grad_x, grad_input_add and
  // grad_middle_add (each may be undefined) and the parameter gradients, written into `grads`
  // under the operator's parameter names (nullptr: none wanted), all in mode m. The forward
  // intermediates are recomputed from x (the runner keeps no state between calls).
  void backward(Context& ctx, const Tensor& x, const Tensor& grad_y, const Tensor& grad_x,
                ParamStore* grads, GradMode m, const Tensor& input_add = {},
                const Tensor& middle_add = {}, const Tensor& grad_input_add = {},
                const Tensor& grad_middle_add = {});

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace dynsim
