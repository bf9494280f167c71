// Weight interchange with DynVision/PyTorch state dicts through safetensors, by DynVision's
// state_dict names. Import ignores DynVision's alias keys (addskip_*.source.*, tstep_*.tau) and
// non-parameter buffers (local mapping tables, n_residual_timesteps); a missing parameter, an
// unknown key or a shape mismatch is a DataError naming the key and both shapes.
#pragma once
#include <string>

#include "engine/dynamics/graph.h"
#include "engine/io/safetensors.h"

namespace dynsim::models {

// Whether DynVision writes `key` as an alias or buffer that carries no parameter of its own.
bool is_ignored_dynvision_key(const std::string& key);
void import_weights(Graph& g, const TensorFile& file, const std::string& source);
void export_weights(const Graph& g, const std::string& path);

}  // namespace dynsim::models
