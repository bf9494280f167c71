// ParamStore (engine/core/params.h).
#include "engine/core/params.h"

namespace dynsim {

Tensor& ParamStore::add(const std::string& name, const Tensor& value, bool trainable) {
  if (has(name)) throw Error(concat("parameter '", name, "' defined twice"));
  index_[name] = entries_.size();
  entries_.push_back({name, value, trainable});
  return entries_.back().value;
}
const Tensor& ParamStore::get(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) throw Error(concat("no parameter named '", name, "'"));
  return entries_[it->second].value;
}
Tensor& ParamStore::get(const std::string& name) {
  auto it = index_.find(name);
  if (it == index_.end()) throw Error(concat("no parameter named '", name, "'"));
  return entries_[it->second].value;
}
int64_t ParamStore::count(bool trainable_only) const {
  int64_t n = 0;
  for (const auto& e : entries_)
    if (!trainable_only || e.trainable) n += e.value.numel();
  return n;
}

}  // namespace dynsim
