// Files of the retina generator (generator.h): checks of a Recording, and recording
// folders (npy + JSON, written atomically through a temporary sibling folder). Readers check
// lengths, emptiness and finiteness and name the file in every error.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>

#include "engine/core/errors.h"
#include "engine/io/atomic_file.h"
#include "engine/io/npy.h"
#include "models/retina/generator.h"
#include "models/retina/generator_detail.h"

namespace dynsim::retina {
namespace fs = std::filesystem;
using detail::check_finite;
using detail::expect;
using nlohmann::json;

std::string detail::read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw NoInputError(concat(path, ": cannot open"));
  std::string b((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  if (f.bad()) throw IoError(concat(path, ": read failed"));
  if (b.empty()) throw DataError(concat(path, ": empty file"));
  return b;
}

void detail::check_finite(const Tensor& t, const std::string& what) {
  if (t.dtype() == DType::I32) return;
  for (int64_t i = 0; i < t.numel(); ++i)
    if (!std::isfinite(t.item(i)))
      throw DataError(concat(what, ": NaN or Inf at element ", i, " of ", t.shape().str()));
}

void detail::expect(bool ok, const std::string& file, const std::string& msg) {
  if (!ok) throw DataError(concat(file, ": ", msg));
}

// Writes into a fresh hidden sibling of `dir`, then renames it into place (replacing an old
// folder only with overwrite). On any failure the temporary folder is removed.
void detail::write_folder_atomic(const std::string& dir, bool overwrite,
                                 const std::function<void(const fs::path&)>& fill) {
  fs::path target = fs::path(dir).lexically_normal();
  if (target.filename().empty()) target = target.parent_path();
  if (fs::exists(target) && !overwrite)
    throw IoError(concat(dir, ": already exists (pass overwrite to replace it)"));
  static std::atomic<int> counter{0};
  const std::string tag = concat(::getpid(), "-", counter++);
  const fs::path parent = target.has_parent_path() ? target.parent_path() : fs::path(".");
  const fs::path tmp = parent / concat(".", target.filename().string(), ".tmp-", tag);
  const fs::path old = parent / concat(".", target.filename().string(), ".old-", tag);
  std::error_code ec;
  fs::create_directories(parent, ec);
  if (!fs::create_directory(tmp, ec) || ec)
    throw IoError(concat(tmp.string(), ": cannot create (", ec.message(), ")"));
  try {
    fill(tmp);
    const bool replace = fs::exists(target);
    if (replace) fs::rename(target, old);
    try {
      fs::rename(tmp, target);
    } catch (...) {
      if (replace) fs::rename(old, target, ec);
      throw;
    }
    if (replace) fs::remove_all(old, ec);
  } catch (const fs::filesystem_error& e) {
    fs::remove_all(tmp, ec);
    throw IoError(concat(dir, ": ", e.what()));
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
}

// ---- recordings ------------------------------------------------------------------------------

void check_recording(const Recording& r) {
  auto desc = [](const Tensor& t) { return t.defined() ? t.str() : std::string("undefined"); };
  auto bad = [](const std::string& m) { return DataError(concat("recording: ", m)); };
  const Tensor& X = r.stimulus;
  if (!X.defined() || X.rank() != 3 || X.dtype() != DType::F32 || !X.is_cpu() || X.dim(0) < 1)
    throw bad(concat("stimulus ", desc(X), " must be a host f32 [T,H,W] with T >= 1"));
  const int64_t T = X.dim(0);
  check_finite(X, "recording: stimulus");
  const Tensor& y = r.spikes;
  if (!y.defined() || y.rank() != 2 || y.dtype() != DType::I32 || y.dim(1) != T)
    throw bad(concat("spikes ", desc(y), " must be i32 [n_cells, ", T, "] (the stimulus ",
                     X.shape().str(), " has ", T, " frames)"));
  const int64_t n = y.dim(0);
  if (!r.truth.empty() && int64_t(r.truth.size()) != n)
    throw bad(concat("spikes have ", n, " cells, the ground truth ", r.truth.size()));
  for (const CellTruth& c : r.truth)
    if (c.masks.dim(1) != X.dim(1) || c.masks.dim(2) != X.dim(2))
      throw bad(concat("cell ", c.name, " masks ", c.masks.shape().str(), " do not fit stimulus ",
                       X.shape().str()));
  auto counts_ok = [&](const Tensor& c, const char* what) {
    const int32_t* p = c.data<int32_t>();
    for (int64_t i = 0; i < c.numel(); ++i)
      if (p[i] < 0) throw bad(concat(what, ": negative count ", p[i], " at element ", i));
  };
  counts_ok(y, "spikes");
  if (r.rate.defined()) {
    if (r.rate.shape() != Shape{n, T} || r.rate.dtype() != DType::F32)
      throw bad(concat("rate ", desc(r.rate), " must be f32 [", n, ",", T, "] like the spikes ",
                       y.shape().str()));
    check_finite(r.rate, "recording: rate");
  }
  const Tensor& Xt = r.test_stimulus;
  if (!Xt.defined()) {
    if (r.test_spikes.defined() || r.test_rate.defined())
      throw bad("test_spikes / test_rate without test_stimulus");
    return;
  }
  if (Xt.rank() != 3 || Xt.dtype() != DType::F32 || Xt.dim(1) != X.dim(1) || Xt.dim(2) != X.dim(2))
    throw bad(
        concat("test_stimulus ", desc(Xt), " must be f32 [Tr,", X.dim(1), ",", X.dim(2), "]"));
  check_finite(Xt, "recording: test_stimulus");
  const int64_t Tr = Xt.dim(0);
  if (r.test_spikes.defined()) {
    const Tensor& ys = r.test_spikes;
    if (ys.rank() != 3 || ys.dtype() != DType::I32 || ys.dim(1) != n || ys.dim(2) != Tr ||
        ys.dim(0) < 1)
      throw bad(concat("test_spikes ", desc(ys), " must be i32 [n_trials,", n, ",", Tr,
                       "] (test_stimulus ", Xt.shape().str(), ")"));
    counts_ok(ys, "test_spikes");
  }
  if (r.test_rate.defined()) {
    if (r.test_rate.shape() != Shape{n, Tr} || r.test_rate.dtype() != DType::F32)
      throw bad(concat("test_rate ", desc(r.test_rate), " must be f32 [", n, ",", Tr, "]"));
    check_finite(r.test_rate, "recording: test_rate");
  }
}

namespace {

// .npy of one-byte integers (descr "|i1" or "|u1").
void save_npy_bytes(const fs::path& path, const char* descr, const Shape& shape,
                    const std::vector<uint8_t>& data) {
  save_npy_raw(path.string(), descr, shape, data.data(), data.size());
}

// Counts as u8 when every value fits, else i32.
void save_counts(const fs::path& path, const Tensor& c) {
  const int32_t* p = c.data<int32_t>();
  if (std::all_of(p, p + c.numel(), [](int32_t v) { return v >= 0 && v <= 255; })) {
    save_npy_bytes(path, "|u1", c.shape(), std::vector<uint8_t>(p, p + c.numel()));
  } else {
    save_npy(path.string(), c);
  }
}

// The stimulus as int8 signs when it is a +-c checkerboard, else f32.
void save_stimulus(const fs::path& path, const Tensor& X, const StimulusSpec& s) {
  const float c = float(s.contrast);
  const float* p = X.data<float>();
  if (s.kind == StimulusKind::Checkerboard &&
      std::all_of(p, p + X.numel(), [&](float v) { return v == c || v == -c; })) {
    std::vector<uint8_t> b(size_t(X.numel()));
    for (size_t i = 0; i < b.size(); ++i) b[i] = p[i] > 0 ? uint8_t(1) : uint8_t(0xff);
    save_npy_bytes(path, "|i1", X.shape(), b);
  } else {
    save_npy(path.string(), X);
  }
}

// Reads a stimulus (int8 signs times the contrast, or f32/f64) or counts (u8/i32/i64) file.
Tensor load_array(const fs::path& path, double contrast) {
  std::string bytes = detail::read_file(path.string());
  const size_t i1 = bytes.substr(0, std::min<size_t>(bytes.size(), 256)).find("'|i1'");
  if (i1 != std::string::npos) {  // int8: parse as u8 (same layout), then restore the sign
    bytes.replace(i1, 5, "'|u1'");
    Tensor b = parse_npy(bytes, path.string());
    Tensor out = Tensor::empty(b.shape());
    const float c = float(contrast);
    for (int64_t k = 0; k < b.numel(); ++k) {
      const int v = b.data<int32_t>()[k];
      const int sv = v > 127 ? v - 256 : v;
      if (sv != 1 && sv != -1)
        throw DataError(concat(path.string(), ": int8 checkerboard value ", sv, " at element ", k,
                               " (expected +-1)"));
      out.data<float>()[k] = sv > 0 ? c : -c;
    }
    return out;
  }
  Tensor t = parse_npy(bytes, path.string());
  if (t.dtype() == DType::F64) t = t.to_dtype(DType::F32);
  check_finite(t, path.string());
  return t;
}

Tensor load_counts(const fs::path& path) {
  Tensor t = load_array(path, 1.0);
  if (t.dtype() != DType::I32)
    throw DataError(concat(path.string(), ": spike counts must be integers"));
  const int32_t* p = t.data<int32_t>();
  for (int64_t i = 0; i < t.numel(); ++i)
    if (p[i] < 0)
      throw DataError(concat(path.string(), ": negative count ", p[i], " at element ", i));
  return t;
}

json load_json(const fs::path& path) {
  const std::string text = detail::read_file(path.string());
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    throw DataError(concat(path.string(), ": not valid JSON (", e.what(), ")"));
  }
}

}  // namespace

void write_recording(const std::string& dir, const Recording& r, bool overwrite) {
  check_recording(r);
  detail::write_folder_atomic(dir, overwrite, [&](const fs::path& d) {
    save_stimulus(d / "stimulus.npy", r.stimulus, r.spec.stimulus);
    save_counts(d / "spikes.npy", r.spikes);
    if (r.rate.defined()) save_npy((d / "rate.npy").string(), r.rate);
    if (r.test_stimulus.defined())
      save_stimulus(d / "test_stimulus.npy", r.test_stimulus, r.spec.stimulus);
    if (r.test_spikes.defined()) save_counts(d / "test_spikes.npy", r.test_spikes);
    if (r.test_rate.defined()) save_npy((d / "test_rate.npy").string(), r.test_rate);
    const json gt =
        r.ground_truth.is_null() ? truth_to_json(r.truth, r.spec.seed, r.spec.dt) : r.ground_truth;
    write_file_atomic((d / "ground_truth.json").string(), gt.dump(1) + "\n");
    write_file_atomic((d / "config.json").string(), spec_to_json(r.spec).dump(1) + "\n");
  });
}

Recording read_recording(const std::string& dir) {
  const fs::path d(dir);
  if (!fs::is_directory(d)) throw NoInputError(concat(dir, ": no such recording folder"));
  Recording r;
  r.spec = spec_from_json(load_json(d / "config.json"), (d / "config.json").string());
  const fs::path gt = d / "ground_truth.json";
  if (fs::exists(gt)) {
    r.ground_truth = load_json(gt);
    r.truth = truth_from_json(r.ground_truth, gt.string());
  }
  const double c = r.spec.stimulus.contrast;
  const fs::path xs = d / "stimulus.npy", ys = d / "spikes.npy";
  r.stimulus = load_array(xs, c);
  expect(r.stimulus.rank() == 3 && r.stimulus.dtype() == DType::F32 && r.stimulus.dim(0) > 0, xs,
         concat("stimulus ", r.stimulus.shape().str(), " must be float [T,H,W] with T >= 1"));
  r.spikes = load_counts(ys);
  expect(r.spikes.rank() == 2, ys,
         concat("spikes ", r.spikes.shape().str(), " must be [n_cells, T]"));
  expect(
      r.spikes.dim(1) == r.stimulus.dim(0), ys,
      concat(r.spikes.dim(1), " frames of spikes, but ", xs.string(), " has ", r.stimulus.dim(0)));
  const fs::path rs = d / "rate.npy";
  if (fs::exists(rs)) {
    r.rate = load_array(rs, c);
    expect(r.rate.shape() == r.spikes.shape(), rs,
           concat("rate ", r.rate.shape().str(), " differs from ", ys.string(), " ",
                  r.spikes.shape().str()));
  }
  const fs::path txs = d / "test_stimulus.npy", tys = d / "test_spikes.npy",
                 trs = d / "test_rate.npy";
  if (fs::exists(txs)) {
    r.test_stimulus = load_array(txs, c);
    expect(r.test_stimulus.rank() == 3, txs, "test stimulus must be [Tr,H,W]");
    if (fs::exists(tys)) {
      r.test_spikes = load_counts(tys);
      expect(r.test_spikes.rank() == 3 && r.test_spikes.dim(2) == r.test_stimulus.dim(0) &&
                 r.test_spikes.dim(1) == r.spikes.dim(0),
             tys,
             concat("test spikes ", r.test_spikes.shape().str(), " must be [n_trials, ",
                    r.spikes.dim(0), ", ", r.test_stimulus.dim(0), "] (", txs.string(), ")"));
    }
    if (fs::exists(trs)) {
      r.test_rate = load_array(trs, c);
      expect(r.test_rate.shape() == Shape{r.spikes.dim(0), r.test_stimulus.dim(0)}, trs,
             concat("test rate ", r.test_rate.shape().str(), " does not fit ", txs.string()));
    }
  }
  check_recording(r);
  return r;
}

}  // namespace dynsim::retina
