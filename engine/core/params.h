// Named parameters (weights, biases, tau) in insertion order, with a trainable flag. Names are
// DynVision's state_dict names so weights interchange through safetensors. (The training issue
// turns this into flat slabs with named views; the interface stays.)
#pragma once
#include <map>
#include <string>
#include <vector>

#include "engine/core/tensor.h"

namespace dynsim {

class ParamStore {
 public:
  struct Entry {
    std::string name;
    Tensor value;
    bool trainable = true;
  };
  Tensor& add(const std::string& name, const Tensor& value, bool trainable = true);
  bool has(const std::string& name) const { return index_.count(name) != 0; }
  const Tensor& get(const std::string& name) const;
  Tensor& get(const std::string& name);
  const std::vector<Entry>& entries() const { return entries_; }
  std::vector<Entry>& entries() { return entries_; }
  int64_t count(bool trainable_only) const;  // number of scalar parameters

 private:
  std::vector<Entry> entries_;
  std::map<std::string, size_t> index_;
};

}  // namespace dynsim
