// `dynsim scan collect --responses FILE.h5` (models/scan/scan_kinds.h): every done simulate
// run's arrays stacked along a run dimension, with named dimensions.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>

#include "engine/io/hdf5_io.h"
#include "engine/io/npy.h"
#include "engine/scan/runner.h"
#include "models/scan/scan_kinds.h"

namespace dynsim::models {
namespace fs = std::filesystem;

namespace {

// A run's arrays by flat name (response_avg_V1, rates_V1, present, logits).
std::map<std::string, Tensor> run_arrays(const fs::path& dir) {
  std::map<std::string, Tensor> out;
  if (fs::exists(dir / "responses.h5")) {
    for (auto& [name, t] : read_hdf5((dir / "responses.h5").string())) {
      std::string flat = name[0] == '/' ? name.substr(1) : name;
      std::replace(flat.begin(), flat.end(), '/', '_');
      out[flat] = t;
    }
    return out;
  }
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().extension() == ".npy") out[e.path().stem().string()] = load_npy(e.path().string());
  return out;
}

// The dimension names of a simulate output (one per axis, the run axis not included).
std::vector<std::string> dims_of(const std::string& name, int rank) {
  auto area = [&](const char* prefix) { return name.substr(std::string(prefix).size()); };
  if ((name.rfind("response_avg_", 0) == 0 || name.rfind("response_std_", 0) == 0) && rank == 2)
    return {"sample", "time"};
  if (name.rfind("rates_", 0) == 0 && rank == 5) {
    const std::string a = area("rates_");
    return {"sample", "time", "channel_" + a, "y_" + a, "x_" + a};
  }
  if (name == "present" && rank == 2) return {"area", "time"};
  if (name == "logits" && rank == 3) return {"sample", "time", "class"};
  std::vector<std::string> d;
  for (int i = 0; i < rank; ++i) d.push_back(concat(name, "_dim", i));
  return d;
}

}  // namespace

nlohmann::json stack_responses(const std::string& dir, const std::string& path) {
  if (!hdf5_available())
    throw NotImplemented(concat(path, ": this build of dynsim has no HDF5 support (install "
                                      "libhdf5-dev, then reconfigure and rebuild)"));
  const std::vector<nlohmann::json> runs = scan::done_runs(dir);
  if (runs.empty()) throw DataError(concat(dir, ": no run is done, nothing to stack"));
  for (const nlohmann::json& r : runs)
    if (r.value("kind", "") != "simulate")
      throw UsageError(concat("--responses stacks the outputs of simulate runs; run ",
                              r.value("index", -1), " is a '", r.value("kind", ""), "' run"));
  const int64_t R = int64_t(runs.size());
  std::vector<std::map<std::string, Tensor>> arrays;
  for (const nlohmann::json& r : runs) arrays.push_back(run_arrays(r.at("dir").get<std::string>()));
  // The arrays every run has, each padded to the largest shape (NaN, or 0 for integers).
  std::vector<std::pair<std::string, Tensor>> datasets;
  Hdf5Layout layout;
  std::vector<std::string> skipped;
  for (const auto& [name, first] : arrays[0]) {
    bool everywhere = true;
    std::vector<int64_t> shape(size_t(first.rank()), 0);
    for (const auto& a : arrays) {
      const auto it = a.find(name);
      if (it == a.end() || it->second.rank() != first.rank()) {
        everywhere = false;
        break;
      }
      for (int d = 0; d < first.rank(); ++d)
        shape[size_t(d)] = std::max(shape[size_t(d)], it->second.dim(d));
    }
    if (!everywhere) {
      skipped.push_back(name);
      continue;
    }
    const bool integer = first.dtype() == DType::I32;
    std::vector<int64_t> full = {R};
    full.insert(full.end(), shape.begin(), shape.end());
    Tensor out = Tensor::empty(Shape(full), integer ? DType::I32 : DType::F32);
    out.fill(integer ? 0.0 : std::numeric_limits<double>::quiet_NaN());
    const int rank = first.rank();
    for (int64_t r = 0; r < R; ++r) {
      const Tensor src = arrays[size_t(r)].at(name).to_dtype(out.dtype());
      // Copy row by row of the last dimension into the padded block.
      const int64_t last = rank ? src.dim(rank - 1) : 1;
      const int64_t rows = last ? src.numel() / last : 0;
      for (int64_t row = 0; row < rows; ++row) {
        int64_t rem = row, dst = 0, stride = rank ? shape[size_t(rank - 1)] : 1;
        for (int d = rank - 2; d >= 0; --d) {
          dst += (rem % src.dim(d)) * stride;
          rem /= src.dim(d);
          stride *= shape[size_t(d)];
        }
        dst += r * stride;
        std::memcpy(static_cast<char*>(out.raw()) + size_t(dst) * dtype_size(out.dtype()),
                    static_cast<const char*>(src.raw()) + size_t(row * last) * dtype_size(out.dtype()),
                    size_t(last) * dtype_size(out.dtype()));
      }
    }
    std::vector<std::string> dims = {"run"};
    for (const std::string& d : dims_of(name, rank)) dims.push_back(d);
    layout.dims[name] = dims;
    datasets.emplace_back(name, out);
  }
  // Coordinates along the run dimension: the run index, and every axis whose values are numbers.
  Tensor index = Tensor::empty(Shape{R}, DType::I32);
  for (int64_t r = 0; r < R; ++r) index.data<int32_t>()[r] = runs[size_t(r)].at("index").get<int32_t>();
  datasets.emplace_back("run", index);
  std::string coordinates;
  const nlohmann::json axes0 = runs[0].value("axes", nlohmann::json::object());
  for (const auto& [axis, v0] : axes0.items()) {
    bool numeric = true;
    std::vector<double> values;
    for (const nlohmann::json& r : runs) {
      const nlohmann::json v = r.at("axes").value(axis, nlohmann::json());
      if (!v.is_number()) {
        numeric = false;
        break;
      }
      values.push_back(v.get<double>());
    }
    if (!numeric || axis == "run" || layout.dims.count(axis)) continue;
    datasets.emplace_back(axis, Tensor::from(Shape{R}, values, DType::F64));
    layout.dims[axis] = {"run"};
    coordinates += (coordinates.empty() ? "" : " ") + axis;
  }
  for (const auto& [name, dims] : layout.dims)
    if (dims.size() > 1 && !coordinates.empty()) layout.attributes[name]["coordinates"] = coordinates;
  nlohmann::json ids = nlohmann::json::array();
  for (const nlohmann::json& r : runs) ids.push_back(r.at("run_id"));
  std::map<std::string, std::string> attributes = {{"run_ids", ids.dump()}};
  {
    std::ifstream f(fs::path(dir) / "scan.json");
    if (f) attributes["scan"] = std::string(std::istreambuf_iterator<char>(f), {});
  }
  write_hdf5(path, datasets, attributes, layout);
  return {{"runs", R}, {"variables", layout.dims.size()}, {"skipped", skipped}};
}

}  // namespace dynsim::models
