// Connection operators (engine/graph.h OpSpec) as a short chain of kernel calls with their
// intermediate buffers allocated once per batch size. forward(x) -> y; a TwoStage operator
// takes an optional term added between its stages (DynVision's recurrence target "middle"),
// and any operator an optional term added to its input (target "input").
#pragma once
#include <memory>
#include <vector>

#include "engine/graph.h"

namespace dynsim {

class OperatorRunner {
 public:
  OperatorRunner(Context& ctx, const OpSpec& op, ParamStore& params, int batch, DType dtype);
  ~OperatorRunner();
  OperatorRunner(OperatorRunner&&) noexcept;
  Shape output_shape() const;  // [B, C, H, W] after the optional resize
  // y = T(x [+ input_add]) with middle_add added between the stages of a TwoStage operator.
  // input_add / middle_add may be undefined. y must have output_shape().
  void forward(Context& ctx, const Tensor& x, const Tensor& y, const Tensor& input_add = {},
               const Tensor& middle_add = {});

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace dynsim
