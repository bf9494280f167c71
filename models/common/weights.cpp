// Weight import/export (models/common/weights.h).
#include "models/common/weights.h"

#include <set>

namespace dynsim::models {

bool is_ignored_dynvision_key(const std::string& key) {
  auto has = [&](const char* s) { return key.find(s) != std::string::npos; };
  auto starts = [&](const char* s) { return key.rfind(s, 0) == 0; };
  return (starts("addskip_") && has(".source.")) || (starts("addfeedback_") && has(".source.")) ||
         (starts("tstep_") && has(".tau")) || has("flat_plane_mapping") ||
         has("flat_layer_mapping") || key == "n_residual_timesteps" || starts("supralin.");
}

void import_weights(Graph& g, const TensorFile& file, const std::string& source) {
  // Check every key first, then copy: a bad file leaves the model untouched.
  std::vector<std::pair<Tensor*, const Tensor*>> copies;
  std::set<std::string> seen;
  for (const auto& [key, t] : file.tensors) {
    if (!g.params.has(key)) {
      if (is_ignored_dynvision_key(key)) continue;
      throw DataError(concat(source, ": key '", key, "' (shape ", t.shape().str(),
                             ") is not a parameter of this model"));
    }
    Tensor& p = g.params.get(key);
    // DynVision's scalars may be 0-dim or 1-element tensors (tau, self recurrence).
    const bool scalars = p.numel() == 1 && t.numel() == 1;
    if (!scalars && p.shape() != t.shape())
      throw DataError(concat(source, ": key '", key, "' has shape ", t.shape().str(),
                             " but the model's parameter is ", p.shape().str()));
    if (t.dtype() == DType::I32)
      throw DataError(concat(source, ": key '", key, "' holds integers, expected floats"));
    copies.emplace_back(&p, &t);
    seen.insert(key);
  }
  for (const auto& e : g.params.entries())
    if (!seen.count(e.name))
      throw DataError(concat(source, ": parameter '", e.name, "' (shape ", e.value.shape().str(),
                             ") is missing"));
  for (auto& [p, t] : copies)
    for (int64_t i = 0; i < p->numel(); ++i) p->set(i, t->item(i));
}

void export_weights(const Graph& g, const std::string& path) {
  std::map<std::string, Tensor> out;
  for (const auto& e : g.params.entries()) out[e.name] = e.value;
  save_safetensors(path, out, {{"format", "dynvision-state-dict"}, {"writer", "dynsim"}});
}

}  // namespace dynsim::models
