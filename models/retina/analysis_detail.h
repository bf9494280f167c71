// Helpers shared by the retina analysis's source files (analysis.cpp: response metrics;
// analysis_recovery.cpp: eigen-solver, rank-1, Hungarian, recovery scoring, conv-unit STAs).
// Not part of the API.
#pragma once
#include <limits>
#include <vector>

#include "engine/core/tensor.h"

namespace dynsim::retina::analysis_detail {

const double kNaN = std::numeric_limits<double>::quiet_NaN();

// The values of a defined host tensor as doubles (DataError naming op and role otherwise).
std::vector<double> host_values(const Tensor& t, const char* op, const char* role);

}  // namespace dynsim::retina::analysis_detail
