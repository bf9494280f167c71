// The two HDF5 layouts of the retina generator (generator.h): Yan et al.'s train/test/config.hdf5
// for one cell and deep-retina's single file for a population, with readers that check lengths,
// emptiness and finiteness and name the file and dataset in every error.
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "engine/core/errors.h"
#include "engine/io/hdf5_io.h"
#include "models/retina/generator.h"
#include "models/retina/generator_detail.h"

namespace dynsim::retina {
namespace fs = std::filesystem;
using detail::check_finite;
using detail::expect;
using nlohmann::json;

// ---- HDF5 layouts ----------------------------------------------------------------------------
namespace {

void require_hdf5(const std::string& what) {
  if (!hdf5_available())
    throw NotImplemented(concat(what,
                                ": this build of dynsim has no HDF5 support (install "
                                "libhdf5-dev and rebuild)"));
}

Tensor row(const Tensor& t, int64_t i) {  // row i of [n, T] as a [T] copy
  return t.slice(i, i + 1).view(Shape{t.dim(1)}).clone();
}

const Tensor& need(const std::map<std::string, Tensor>& m, const std::string& key,
                   const fs::path& file) {
  auto it = m.find(key);
  if (it == m.end()) throw DataError(concat(file.string(), ": no dataset '", key, "'"));
  check_finite(it->second, concat(file.string(), ":", key));
  return it->second;
}

// Non-negative integer counts from an HDF5 dataset (f32/f64 accepted when integral).
Tensor counts_of(const Tensor& t, const std::string& what) {
  Tensor out = Tensor::empty(t.shape(), DType::I32);
  for (int64_t i = 0; i < t.numel(); ++i) {
    const double v = t.item(i);
    if (!(v >= 0) || v != std::floor(v) || v > 2e9)
      throw DataError(concat(what, ": ", v, " at element ", i, " is not a spike count"));
    out.data<int32_t>()[i] = int32_t(v);
  }
  return out;
}

void restore_json(Recording& r, const std::map<std::string, std::string>& attrs,
                  const fs::path& file) {
  auto c = attrs.find("config");
  if (c != attrs.end()) {
    try {
      r.spec = spec_from_json(json::parse(c->second), file.string() + ":config");
    } catch (const json::parse_error& e) {
      throw DataError(concat(file.string(), ": attribute 'config' is not JSON (", e.what(), ")"));
    }
  } else {
    r.spec.cells.clear();
  }
  r.spec.stimulus.height = int(r.stimulus.dim(1)), r.spec.stimulus.width = int(r.stimulus.dim(2));
  auto g = attrs.find("ground_truth");
  if (g != attrs.end()) {
    try {
      r.ground_truth = json::parse(g->second);
    } catch (const json::parse_error& e) {
      throw DataError(
          concat(file.string(), ": attribute 'ground_truth' is not JSON (", e.what(), ")"));
    }
    r.truth = truth_from_json(r.ground_truth, file.string() + ":ground_truth");
  }
}

std::string cell_key(size_t i) {
  char b[32];
  std::snprintf(b, sizeof b, "cell%02zu", i + 1);
  return b;
}

// The recording restricted to one cell (ground truth and spec included).
json one_cell(const json& all, size_t cell) {
  json j = all;
  if (j.contains("cells") && j["cells"].is_array() && cell < j["cells"].size())
    j["cells"] = json::array({all["cells"][cell]});
  return j;
}

}  // namespace

void write_yan_hdf5(const std::string& dir, const Recording& r, int cell, bool overwrite) {
  require_hdf5(dir);
  check_recording(r);
  const int64_t n = r.spikes.dim(0);
  if (cell < 0 || cell >= n) throw ConfigError(concat(dir, ": cell ", cell, " of ", n));
  const json gt =
      r.ground_truth.is_null() ? truth_to_json(r.truth, r.spec.seed, r.spec.dt) : r.ground_truth;
  detail::write_folder_atomic(dir, overwrite, [&](const fs::path& d) {
    const Tensor y = row(r.spikes, cell);
    std::vector<std::pair<std::string, Tensor>> train = {
        {"X", r.stimulus}, {"y", y}, {"r", y.to_dtype(DType::F32)}};
    if (r.rate.defined()) train.push_back({"r_true", row(r.rate, cell)});
    write_hdf5((d / "train.hdf5").string(), train,
               {{"layout", "yan2020"},
                {"cell", std::to_string(cell)},
                {"config", one_cell(spec_to_json(r.spec), size_t(cell)).dump()},
                {"ground_truth", one_cell(gt, size_t(cell)).dump()}});
    if (r.test_stimulus.defined() && r.test_spikes.defined()) {
      const int64_t K = r.test_spikes.dim(0), Tr = r.test_stimulus.dim(0);
      Tensor yt = Tensor::empty(Shape{Tr, K}, DType::I32), rt = Tensor::zeros(Shape{Tr});
      for (int64_t k = 0; k < K; ++k)
        for (int64_t t = 0; t < Tr; ++t) {
          const int32_t v = r.test_spikes.data<int32_t>()[(k * n + cell) * Tr + t];
          yt.data<int32_t>()[t * K + k] = v;
          rt.data<float>()[t] += float(v) / float(K);
        }
      std::vector<std::pair<std::string, Tensor>> test = {
          {"X", r.test_stimulus}, {"y", yt}, {"r", rt}};
      if (r.test_rate.defined()) test.push_back({"r_true", row(r.test_rate, cell)});
      write_hdf5((d / "test.hdf5").string(), test);
    }
    write_hdf5(
        (d / "config.hdf5").string(),
        {{"shape", Tensor::from(Shape{2}, {double(r.stimulus.dim(1)), double(r.stimulus.dim(2))},
                                DType::I32)}});
  });
}

Recording read_yan_hdf5(const std::string& dir) {
  require_hdf5(dir);
  const fs::path d(dir), trf = d / "train.hdf5", tef = d / "test.hdf5", cff = d / "config.hdf5";
  if (!fs::is_directory(d)) throw NoInputError(concat(dir, ": no such folder"));
  for (const fs::path& p : {trf, cff})
    if (fs::exists(p) && fs::file_size(p) == 0) throw DataError(concat(p.string(), ": empty file"));
  const auto train = read_hdf5(trf.string());
  Recording r;
  r.stimulus = need(train, "X", trf).to_dtype(DType::F32);
  expect(r.stimulus.rank() == 3 && r.stimulus.dim(0) > 0, trf,
         concat("X ", r.stimulus.shape().str(), " must be [T,H,W]"));
  const Tensor& y = need(train, "y", trf);
  expect(y.numel() == r.stimulus.dim(0) && (y.rank() == 1 || (y.rank() == 2 && y.dim(1) == 1)), trf,
         concat("y ", y.shape().str(), " must hold one count per frame of X ",
                r.stimulus.shape().str()));
  r.spikes = counts_of(y, trf.string() + ":y").view(Shape{1, y.numel()});
  if (train.count("r_true")) {
    const Tensor& rt = need(train, "r_true", trf);
    expect(rt.numel() == y.numel(), trf, concat("r_true ", rt.shape().str(), " differs from y"));
    r.rate = rt.to_dtype(DType::F32).view(Shape{1, rt.numel()});
  }
  const auto cfg = read_hdf5(cff.string());
  const Tensor& shape = need(cfg, "shape", cff);
  expect(shape.numel() == 2 && shape.item(0) == r.stimulus.dim(1) &&
             shape.item(1) == r.stimulus.dim(2),
         cff, concat("shape does not match X ", r.stimulus.shape().str(), " of ", trf.string()));
  if (fs::exists(tef)) {
    if (fs::file_size(tef) == 0) throw DataError(concat(tef.string(), ": empty file"));
    const auto test = read_hdf5(tef.string());
    r.test_stimulus = need(test, "X", tef).to_dtype(DType::F32);
    const Tensor& yt = need(test, "y", tef);
    const int64_t Tr = r.test_stimulus.dim(0);
    expect(r.test_stimulus.rank() == 3 && yt.rank() == 2 && yt.dim(0) == Tr, tef,
           concat("y ", yt.shape().str(), " must be [T, n_trials] for X ",
                  r.test_stimulus.shape().str()));
    const int64_t K = yt.dim(1);
    const Tensor c = counts_of(yt, tef.string() + ":y");
    r.test_spikes = Tensor::empty(Shape{K, 1, Tr}, DType::I32);
    for (int64_t k = 0; k < K; ++k)
      for (int64_t t = 0; t < Tr; ++t)
        r.test_spikes.data<int32_t>()[k * Tr + t] = c.data<int32_t>()[t * K + k];
    if (test.count("r_true")) {
      const Tensor& rt = need(test, "r_true", tef);
      expect(rt.numel() == Tr, tef, concat("r_true ", rt.shape().str(), " differs from X"));
      r.test_rate = rt.to_dtype(DType::F32).view(Shape{1, Tr});
    }
  }
  restore_json(r, read_hdf5_attributes(trf.string()), trf);
  check_recording(r);
  return r;
}

Tensor spike_triggered_average(const Tensor& X, const Tensor& y, int taps) {
  if (X.rank() != 3 || X.dtype() != DType::F32 || y.rank() != 1 || y.dim(0) != X.dim(0) || taps < 1)
    throw DataError(concat("spike_triggered_average: stimulus ", X.str(), " and spikes ", y.str(),
                           " must be f32 [T,H,W] and [T], taps ", taps, " >= 1"));
  const int64_t T = X.dim(0), P = X.dim(1) * X.dim(2);
  std::vector<double> acc(size_t(taps * P), 0.0);
  double total = 0;
  for (int64_t t = 0; t < T; ++t) {
    const double w = y.item(t);
    if (w == 0) continue;
    total += w;
    for (int64_t lag = 0; lag < taps && lag <= t; ++lag) {
      const float* f = X.data<float>() + (t - lag) * P;
      for (int64_t p = 0; p < P; ++p) acc[size_t(lag * P + p)] += w * f[p];
    }
  }
  Tensor s = Tensor::zeros(Shape{taps, X.dim(1), X.dim(2)});
  if (total > 0)
    for (size_t i = 0; i < acc.size(); ++i) s.data<float>()[i] = float(acc[i] / total);
  return s;
}

void write_deep_retina_hdf5(const std::string& path, const Recording& r, bool overwrite) {
  require_hdf5(path);
  check_recording(r);
  if (fs::exists(path) && !overwrite)
    throw IoError(concat(path, ": already exists (pass overwrite to replace it)"));
  const double dt = r.spec.dt;
  const int64_t n = r.spikes.dim(0);
  std::vector<std::pair<std::string, Tensor>> ds;
  auto add_split = [&](const std::string& split, const Tensor& X, const Tensor& binned,
                       const Tensor& rate, const Tensor& true_rate) {
    const int64_t T = X.dim(0);
    Tensor time = Tensor::empty(Shape{T}, DType::F64);
    for (int64_t t = 0; t < T; ++t) time.data<double>()[t] = double(t) * dt;
    ds.push_back({split + "/stimulus", X});
    ds.push_back({split + "/time", time});
    ds.push_back({split + "/response/binned", binned});
    ds.push_back({split + "/response/firing_rate_10ms", rate});
    if (true_rate.defined()) ds.push_back({split + "/response/rate_true", true_rate});
  };
  Tensor fr = r.spikes.to_dtype(DType::F32);
  for (int64_t i = 0; i < fr.numel(); ++i)
    fr.data<float>()[i] = float(double(fr.data<float>()[i]) / dt);
  add_split("train", r.stimulus, r.spikes, fr, r.rate);
  const int taps = r.truth.empty() ? 20 : int(r.truth[0].filters.dim(1));
  for (int64_t i = 0; i < n; ++i)
    ds.push_back({"train/stas/" + cell_key(size_t(i)),
                  spike_triggered_average(r.stimulus, row(r.spikes, i), taps)});
  if (r.test_stimulus.defined() && r.test_spikes.defined()) {
    const int64_t K = r.test_spikes.dim(0), Tr = r.test_stimulus.dim(0);
    Tensor sum = Tensor::zeros(Shape{n, Tr}, DType::I32), mean = Tensor::zeros(Shape{n, Tr});
    for (int64_t i = 0; i < n; ++i) {
      Tensor rep = Tensor::empty(Shape{K, Tr}, DType::I32);
      for (int64_t k = 0; k < K; ++k)
        for (int64_t t = 0; t < Tr; ++t) {
          const int32_t v = r.test_spikes.data<int32_t>()[(k * n + i) * Tr + t];
          rep.data<int32_t>()[k * Tr + t] = v;
          sum.data<int32_t>()[i * Tr + t] += v;
        }
      ds.push_back({"test/repeats/" + cell_key(size_t(i)), rep});
    }
    for (int64_t q = 0; q < n * Tr; ++q)
      mean.data<float>()[q] = float(double(sum.data<int32_t>()[q]) / double(K) / dt);
    add_split("test", r.test_stimulus, sum, mean, r.test_rate);
  }
  const json gt =
      r.ground_truth.is_null() ? truth_to_json(r.truth, r.spec.seed, r.spec.dt) : r.ground_truth;
  write_hdf5(path, ds,
             {{"layout", "deep-retina"},
              {"dt", concat(dt)},
              {"config", spec_to_json(r.spec).dump()},
              {"ground_truth", gt.dump()}});
}

Recording read_deep_retina_hdf5(const std::string& path) {
  require_hdf5(path);
  const fs::path f(path);
  if (fs::exists(f) && fs::is_regular_file(f) && fs::file_size(f) == 0)
    throw DataError(concat(path, ": empty file"));
  const auto m = read_hdf5(path);
  Recording r;
  r.stimulus = need(m, "train/stimulus", f).to_dtype(DType::F32);
  expect(r.stimulus.rank() == 3 && r.stimulus.dim(0) > 0, f,
         concat("train/stimulus ", r.stimulus.shape().str(), " must be [T,H,W]"));
  const Tensor& b = need(m, "train/response/binned", f);
  expect(b.rank() == 2 && b.dim(1) == r.stimulus.dim(0), f,
         concat("train/response/binned ", b.shape().str(), " must be [n_cells, ", r.stimulus.dim(0),
                "] like train/stimulus ", r.stimulus.shape().str()));
  r.spikes = counts_of(b, path + ":train/response/binned");
  const int64_t n = b.dim(0);
  if (m.count("train/response/rate_true")) {
    const Tensor& rt = need(m, "train/response/rate_true", f);
    expect(rt.shape() == b.shape(), f, "train/response/rate_true differs from binned");
    r.rate = rt.to_dtype(DType::F32);
  }
  if (m.count("test/stimulus")) {
    r.test_stimulus = need(m, "test/stimulus", f).to_dtype(DType::F32);
    expect(r.test_stimulus.rank() == 3, f, "test/stimulus must be [T,H,W]");
    const int64_t Tr = r.test_stimulus.dim(0);
    int64_t K = -1;
    for (int64_t i = 0; i < n; ++i) {
      const std::string key = "test/repeats/" + cell_key(size_t(i));
      if (!m.count(key)) {
        K = -1;
        break;
      }
      const Tensor& rep = need(m, key, f);
      expect(
          rep.rank() == 2 && rep.dim(1) == Tr && (K < 0 || rep.dim(0) == K), f,
          concat(key, " ", rep.shape().str(), " must be [n_trials, ", Tr, "] like test/stimulus"));
      const Tensor c = counts_of(rep, path + ":" + key);
      if (K < 0) {
        K = rep.dim(0);
        r.test_spikes = Tensor::empty(Shape{K, n, Tr}, DType::I32);
      }
      for (int64_t k = 0; k < K; ++k)
        std::copy(c.data<int32_t>() + k * Tr, c.data<int32_t>() + (k + 1) * Tr,
                  r.test_spikes.data<int32_t>() + (k * n + i) * Tr);
    }
    if (K < 0) r.test_spikes = Tensor();
    if (m.count("test/response/rate_true")) {
      const Tensor& rt = need(m, "test/response/rate_true", f);
      expect(rt.shape() == Shape{n, Tr}, f, "test/response/rate_true must be [n_cells, T]");
      r.test_rate = rt.to_dtype(DType::F32);
    }
  }
  const auto attrs = read_hdf5_attributes(path);
  restore_json(r, attrs, f);
  if (auto it = attrs.find("dt"); it != attrs.end() && !attrs.count("config"))
    r.spec.dt = std::stod(it->second);
  check_recording(r);
  return r;
}

}  // namespace dynsim::retina
