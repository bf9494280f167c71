// Dataset helpers shared by the readers, model-input transforms, shuffles and the background
// Batcher (engine/io/dataset.h). The readers, one per format, are dataset_idx.cpp (IDX /
// Fashion-MNIST), dataset_cifar.cpp (CIFAR binary), dataset_npy.cpp (.npy pairs), dataset_npz.cpp
// (.npz archives) and dataset_images.cpp (image folders); dataset_detail.h declares what they
// share. Every reader loads the whole file into memory first and parses it with explicit bounds
// checks, so a truncated or corrupt file is a DataError that names the byte offset, never a
// crash.
#include "engine/io/dataset.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "engine/io/dataset_detail.h"

namespace dynsim::data {
namespace fs = std::filesystem;

// ------------------------------------------------------------------------ shared by the readers

namespace detail {

void require_file(const std::string& path) {
  if (!fs::is_regular_file(path)) throw NoInputError(concat(path, ": no such file"));
}

std::string read_file(const std::string& path) {
  require_file(path);
  std::ifstream f(path, std::ios::binary);
  if (!f) throw NoInputError(concat(path, ": cannot open"));
  std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  if (f.bad()) throw IoError(concat(path, ": read failed"));
  return s;
}

// Validates labels (non-negative, below `limit` if given) and returns max + 1.
int check_labels(const Tensor& labels, const std::string& what, int limit) {
  const int32_t* l = labels.data<int32_t>();
  int32_t mx = -1;
  for (int64_t i = 0; i < labels.numel(); ++i) {
    if (l[i] < 0 || (limit > 0 && l[i] >= limit))
      throw DataError(concat(what, ": label ", l[i], " of sample ", i, " is out of range [0, ",
                             limit > 0 ? std::to_string(limit) : std::string("inf"), ")"));
    mx = std::max(mx, l[i]);
  }
  return int(mx) + 1;
}

// Bilinear resample of one [C, h, w] plane set into [C, H, W] (pixel centres aligned).
void resize_bilinear(const float* src, int64_t C, int64_t h, int64_t w, float* dst, int64_t H,
                     int64_t W) {
  for (int64_t y = 0; y < H; ++y) {
    const double sy = std::clamp((y + 0.5) * double(h) / double(H) - 0.5, 0.0, double(h - 1));
    const int64_t y0 = int64_t(sy), y1 = std::min(y0 + 1, h - 1);
    const float fy = float(sy - double(y0));
    for (int64_t x = 0; x < W; ++x) {
      const double sx = std::clamp((x + 0.5) * double(w) / double(W) - 0.5, 0.0, double(w - 1));
      const int64_t x0 = int64_t(sx), x1 = std::min(x0 + 1, w - 1);
      const float fx = float(sx - double(x0));
      for (int64_t c = 0; c < C; ++c) {
        const float* p = src + c * h * w;
        const float top = p[y0 * w + x0] + fx * (p[y0 * w + x1] - p[y0 * w + x0]);
        const float bot = p[y1 * w + x0] + fx * (p[y1 * w + x1] - p[y1 * w + x0]);
        dst[(c * H + y) * W + x] = top + fy * (bot - top);
      }
    }
  }
}

}  // namespace detail

using detail::resize_bilinear;

// --------------------------------------------------------------------------------- transforms

namespace {
// Uniform integer in [0, n) from 32 random bits (multiply-shift; n is tiny, bias < 2^-24).
int64_t below(uint32_t bits, int64_t n) {
  return int64_t((uint64_t(bits) * uint64_t(n)) >> 32);
}
constexpr uint32_t kShuffleStream = 0x53485546u;  // Philox "attempt" word reserved for shuffles
}  // namespace

Tensor to_model_input(const Dataset& ds, int64_t first, int64_t count, const Transform& t,
                      Rng& rng) {
  if (first < 0 || count < 0 || first + count > ds.size())
    throw DataError(concat("to_model_input: samples [", first, ", ", first + count,
                           ") outside dataset of ", ds.size(), " (", ds.source, ")"));
  std::vector<int64_t> idx(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) idx[size_t(i)] = first + i;
  return to_model_input(ds, idx, t, rng);
}

Tensor to_model_input(const Dataset& ds, const std::vector<int64_t>& indices, const Transform& t,
                      Rng& rng) {
  if (!ds.images.defined() || ds.images.rank() != 4 || ds.images.dtype() != DType::F32)
    throw DataError(
        concat("to_model_input: dataset images must be f32 [N,C,H,W] (", ds.source, ")"));
  const int64_t C = ds.images.dim(1), H = ds.images.dim(2), W = ds.images.dim(3);
  const int64_t Co = t.channels > 0 ? t.channels : C, Ho = t.height > 0 ? t.height : H,
                Wo = t.width > 0 ? t.width : W;
  if (Co != C && !(C == 1 && Co == 3))
    throw DataError(
        concat("to_model_input: cannot turn ", C, " channels into ", Co, " (only 1 -> 3)"));
  auto per_channel = [&](const std::vector<float>& v, const char* role) {
    if (!v.empty() && v.size() != 1 && int64_t(v.size()) != Co)
      throw DataError(
          concat("to_model_input: ", role, " has ", v.size(), " values for ", Co, " channels"));
  };
  per_channel(t.mean, "mean");
  per_channel(t.std, "std");
  if (t.random_crop && t.crop_padding < 0)
    throw DataError(concat("to_model_input: crop_padding ", t.crop_padding, " is negative"));
  const int64_t B = int64_t(indices.size());
  for (int64_t i : indices)
    if (i < 0 || i >= ds.size())
      throw DataError(concat("to_model_input: sample ", i, " outside dataset of ", ds.size(), " (",
                             ds.source, ")"));
  const uint64_t base = rng.advance(uint64_t(B));
  Tensor out = Tensor::empty(Shape{B, Co, Ho, Wo});
  std::vector<float> fit(size_t(C * Ho * Wo)), crop(size_t(C * Ho * Wo));
  const float* src_all = ds.images.data<float>();
  const int64_t pad_y = (Ho - H) / 2, pad_x = (Wo - W) / 2;  // centred; negative: centre crop
  for (int64_t b = 0; b < B; ++b) {
    const float* src = src_all + indices[size_t(b)] * C * H * W;
    // 1. Size: resize or centred pad/crop (channels are replicated at the end).
    if (Ho == H && Wo == W) {
      std::copy(src, src + C * H * W, fit.begin());
    } else if (t.fit == Transform::Fit::Resize) {
      resize_bilinear(src, C, H, W, fit.data(), Ho, Wo);
    } else {
      for (int64_t c = 0; c < C; ++c)
        for (int64_t y = 0; y < Ho; ++y)
          for (int64_t x = 0; x < Wo; ++x) {
            const int64_t sy = y - pad_y, sx = x - pad_x;
            fit[size_t((c * Ho + y) * Wo + x)] =
                sy >= 0 && sy < H && sx >= 0 && sx < W ? src[(c * H + sy) * W + sx] : 0.0f;
          }
    }
    // 2. Random crop from the zero-padded image, then random flip.
    const rng::U4 r = rng::bits(rng.seed(), base + uint64_t(b), 0);
    int64_t dy = 0, dx = 0;
    if (t.random_crop && t.crop_padding > 0) {
      dy = below(r.v[0], 2 * t.crop_padding + 1) - t.crop_padding;
      dx = below(r.v[1], 2 * t.crop_padding + 1) - t.crop_padding;
    }
    const bool flip = t.random_flip && (r.v[2] >> 31) != 0;
    for (int64_t c = 0; c < C; ++c)
      for (int64_t y = 0; y < Ho; ++y)
        for (int64_t x = 0; x < Wo; ++x) {
          const int64_t sy = y + dy, sx0 = x + dx;
          const int64_t sx = flip ? (Wo - 1 - x) + dx : sx0;
          crop[size_t((c * Ho + y) * Wo + x)] = sy >= 0 && sy < Ho && sx >= 0 && sx < Wo
                                                    ? fit[size_t((c * Ho + sy) * Wo + sx)]
                                                    : 0.0f;
        }
    // 3. Channels and normalisation.
    float* o = out.data<float>() + b * Co * Ho * Wo;
    for (int64_t c = 0; c < Co; ++c) {
      const float* p = crop.data() + (C == Co ? c : 0) * Ho * Wo;
      const float m = t.mean.empty() ? 0.0f : t.mean[t.mean.size() == 1 ? 0 : size_t(c)];
      const float s = t.std.empty() ? 1.0f : t.std[t.std.size() == 1 ? 0 : size_t(c)];
      for (int64_t k = 0; k < Ho * Wo; ++k) o[c * Ho * Wo + k] = (p[k] - m) / s;
    }
  }
  return out;
}

Tensor gather_labels(const Dataset& ds, const std::vector<int64_t>& indices) {
  Tensor y = Tensor::empty(Shape{int64_t(indices.size())}, DType::I32);
  const int32_t* l = ds.labels.data<int32_t>();
  for (size_t i = 0; i < indices.size(); ++i) {
    if (indices[i] < 0 || indices[i] >= ds.size())
      throw DataError(
          concat("gather_labels: sample ", indices[i], " outside dataset of ", ds.size()));
    y.data<int32_t>()[i] = l[indices[i]];
  }
  return y;
}

std::vector<int64_t> shuffled_indices(int64_t n, uint64_t seed, int64_t epoch) {
  std::vector<int64_t> p(size_t(std::max<int64_t>(n, 0)));
  for (int64_t i = 0; i < n; ++i) p[size_t(i)] = i;
  for (int64_t i = n - 1; i > 0; --i) {
    const rng::U4 r = rng::bits(seed, (uint64_t(epoch) << 32) + uint64_t(i), kShuffleStream);
    const uint64_t v = (uint64_t(r.v[0]) << 32) | r.v[1];
    std::swap(p[size_t(i)], p[size_t(v % uint64_t(i + 1))]);  // bias < n / 2^64
  }
  return p;
}

// ------------------------------------------------------------------------------------ Batcher

Batcher::Batcher(Dataset ds, Transform t, Options o) : ds_(std::move(ds)), t_(std::move(t)), o_(o) {
  if (o_.batch_size <= 0)
    throw DataError(concat("Batcher: batch_size ", o_.batch_size, " must be positive"));
  const int64_t n = ds_.size();
  if (o_.shuffle)
    order_ = shuffled_indices(n, o_.seed, o_.epoch);
  else {
    order_.resize(size_t(n));
    for (int64_t i = 0; i < n; ++i) order_[size_t(i)] = i;
  }
  n_batches_ = o_.drop_last ? n / o_.batch_size : (n + o_.batch_size - 1) / o_.batch_size;
  worker_ = std::thread([this] { work(); });
}

Batcher::~Batcher() {
  {
    std::lock_guard<std::mutex> l(m_);
    stop_ = true;
  }
  cv_.notify_all();
  worker_.join();
}

std::vector<int64_t> Batcher::batch_indices(int64_t b) const {
  const int64_t lo = b * o_.batch_size,
                hi = std::min<int64_t>(lo + o_.batch_size, int64_t(order_.size()));
  return {order_.begin() + lo, order_.begin() + hi};
}

Batcher::Batch Batcher::make(int64_t b) const {
  if (b < 0 || b >= n_batches_) throw DataError(concat("Batcher: batch ", b, " of ", n_batches_));
  const std::vector<int64_t> idx = batch_indices(b);
  Rng rng(o_.seed);
  rng.set_state(o_.seed,
                uint64_t(o_.epoch) * uint64_t(order_.size()) + uint64_t(b * o_.batch_size));
  Batch out;
  out.x = to_model_input(ds_, idx, t_, rng);
  out.y = gather_labels(ds_, idx);
  out.index = b;
  return out;
}

void Batcher::work() {
  for (int64_t b = std::max<int64_t>(o_.first_batch, 0); b < n_batches_; ++b) {
    {
      std::lock_guard<std::mutex> l(m_);
      if (stop_) return;
    }
    std::optional<Batch> batch;
    try {
      batch = make(b);
    } catch (...) {
      std::lock_guard<std::mutex> l(m_);
      error_ = std::current_exception();
      cv_.notify_all();
      return;
    }
    std::unique_lock<std::mutex> l(m_);
    cv_.wait(l,
             [this] { return stop_ || !ready_; });  // wait until the caller took the previous one
    if (stop_) return;
    ready_ = std::move(batch);
    cv_.notify_all();
  }
  std::lock_guard<std::mutex> l(m_);
  done_ = true;
  cv_.notify_all();
}

std::optional<Batcher::Batch> Batcher::next() {
  std::unique_lock<std::mutex> l(m_);
  cv_.wait(l, [this] { return ready_.has_value() || error_ || done_; });
  if (ready_) {
    std::optional<Batch> b = std::move(ready_);
    ready_.reset();
    cv_.notify_all();
    return b;
  }
  if (error_) std::rethrow_exception(error_);
  return std::nullopt;
}

}  // namespace dynsim::data
