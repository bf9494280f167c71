// Stimuli of the retina generator (generator.h): +-c checkerboards, Gaussian white noise and
// flashed natural-image crops, each frame a function of (stream seed, frame index) only, and
// the image loaders (stb_image / .npy) for the natural scenes. Checkerboard and white-noise
// draws are generator_math.h's, shared with the CUDA twin (generator_cuda.cu) bit for bit.
#include <stb/stb_image.h>

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "engine/core/errors.h"
#include "engine/core/rng.h"
#include "engine/io/npy.h"
#include "models/retina/generator.h"
#include "models/retina/generator_detail.h"
#include "models/retina/generator_math.h"

namespace dynsim::retina {
namespace fs = std::filesystem;
using detail::kParallelWork;
namespace {

// floor(v * n / 2^32): an index in [0, n) from 32 random bits.
int64_t pick(uint32_t v, int64_t n) {
  return int64_t((uint64_t(v) * uint64_t(n)) >> 32);
}

// A natural image as doubles, z-scored to (mean 0, std c) unless crops are matched one by one.
struct PreparedImage {
  std::vector<double> v;
  int64_t h = 0, w = 0;
};
std::vector<PreparedImage> prepare_images(const StimulusSpec& s) {
  std::vector<PreparedImage> out;
  for (size_t i = 0; i < s.images.size(); ++i) {
    const std::string name = i < s.image_sources.size() ? s.image_sources[i] : concat("#", i);
    PreparedImage p;
    p.h = s.images[i].dim(0), p.w = s.images[i].dim(1);
    p.v = s.images[i].to_vector();
    double sum = 0, sq = 0;
    for (double x : p.v) {
      if (!std::isfinite(x)) throw DataError(concat("stimulus: image ", name, " holds NaN or Inf"));
      sum += x;
    }
    const double mean = sum / double(p.v.size());
    for (double x : p.v) sq += (x - mean) * (x - mean);
    const double sd = std::sqrt(sq / double(p.v.size()));
    if (!(sd > 0)) throw ConfigError(concat("stimulus: image ", name, " is flat (std 0)"));
    if (!s.match_per_crop)
      for (double& x : p.v) x = (x - mean) / sd * s.contrast;
    out.push_back(std::move(p));
  }
  return out;
}

// One flashed crop: image and corner from block b of the stream, box-averaged by crop_scale.
void natural_frame(const StimulusSpec& s, const std::vector<PreparedImage>& imgs, uint64_t seed,
                   uint64_t block, float* f) {
  const rng::U4 r = rng::bits(seed, block, 0);
  const PreparedImage& im = imgs[size_t(pick(r.v[0], int64_t(imgs.size())))];
  const int k = s.crop_scale, H = s.height, W = s.width;
  const int64_t y0 = pick(r.v[1], im.h - int64_t(H) * k + 1);
  const int64_t x0 = pick(r.v[2], im.w - int64_t(W) * k + 1);
  std::vector<double> crop(size_t(H) * W);
  for (int y = 0; y < H; ++y)
    for (int x = 0; x < W; ++x) {
      double acc = 0;
      for (int dy = 0; dy < k; ++dy)
        for (int dx = 0; dx < k; ++dx)
          acc += im.v[size_t((y0 + y * k + dy) * im.w + x0 + x * k + dx)];
      crop[size_t(y) * W + x] = acc / double(k * k);
    }
  if (s.match_per_crop) {
    double m = 0, sq = 0;
    for (double v : crop) m += v;
    m /= double(crop.size());
    for (double v : crop) sq += (v - m) * (v - m);
    const double sd = std::sqrt(sq / double(crop.size()));
    for (double& v : crop) v = sd > 1e-12 ? (v - m) / sd * s.contrast : 0.0;
  }
  for (size_t i = 0; i < crop.size(); ++i) f[i] = float(crop[i]);
}

}  // namespace

void detail::check_stimulus(const StimulusSpec& s) {
  if (s.height < 1 || s.width < 1)
    throw ConfigError(concat("stimulus: size ", s.height, "x", s.width, " must be at least 1x1"));
  if (!(s.contrast > 0) || !std::isfinite(s.contrast))
    throw ConfigError(concat("stimulus: contrast ", s.contrast, " must be positive and finite"));
  if (s.kind != StimulusKind::NaturalImages) return;
  if (s.images.empty())
    throw ConfigError(
        "stimulus: natural images need at least one image (load_grey_image, "
        "skimage_image_paths)");
  if (s.flash_frames < 1 || s.gap_frames < 0 || s.crop_scale < 1)
    throw ConfigError(concat("stimulus: flash_frames ", s.flash_frames, " (>= 1), gap_frames ",
                             s.gap_frames, " (>= 0), crop_scale ", s.crop_scale, " (>= 1)"));
  for (size_t i = 0; i < s.images.size(); ++i) {
    const Tensor& im = s.images[i];
    const std::string name = i < s.image_sources.size() ? s.image_sources[i] : concat("#", i);
    if (!im.defined() || im.rank() != 2 || !im.is_cpu())
      throw ConfigError(concat("stimulus: image ", name, " must be a host [H, W] tensor, got ",
                               im.defined() ? im.str() : "undefined"));
    if (im.dim(0) < int64_t(s.height) * s.crop_scale || im.dim(1) < int64_t(s.width) * s.crop_scale)
      throw ConfigError(concat("stimulus: image ", name, " ", im.shape().str(),
                               " is smaller than a crop of ", s.height * s.crop_scale, "x",
                               s.width * s.crop_scale));
  }
}

// ---- stimulus --------------------------------------------------------------------------------

uint64_t stream_seed(uint64_t seed, Stream s, uint32_t a, uint32_t b) {
  const rng::U4 r = rng::bits(seed, (uint64_t(uint32_t(s)) << 32) | a, b);
  return uint64_t(r.v[0]) | (uint64_t(r.v[1]) << 32);
}

Tensor make_stimulus(const StimulusSpec& s, uint64_t seed, int64_t begin, int64_t end) {
  detail::check_stimulus(s);
  if (begin < 0 || end < begin)
    throw ConfigError(concat("stimulus: frame range [", begin, ", ", end, ") is invalid"));
  const int64_t n = end - begin, P = int64_t(s.height) * s.width;
  Tensor out = Tensor::empty(Shape{n, s.height, s.width});
  float* o = out.data<float>();
  if (s.kind == StimulusKind::Checkerboard) {
    const float c = float(s.contrast);
#pragma omp parallel for schedule(static) if (n * P > kParallelWork)
    for (int64_t i = 0; i < n; ++i) {
      float* f = o + i * P;
      for (int64_t blk = 0; blk * 128 < P; ++blk)  // 128 pixels per Philox call
        math::checker_block(seed, uint64_t(begin + i), uint32_t(blk),
                            std::min<int64_t>(128, P - blk * 128), c, f + blk * 128);
    }
  } else if (s.kind == StimulusKind::WhiteNoise) {
#pragma omp parallel for schedule(static) if (n * P * 8 > kParallelWork)
    for (int64_t i = 0; i < n; ++i) {
      double z[2];
      uint64_t have = ~uint64_t(0);
      for (int64_t p = 0; p < P; ++p) {
        const uint64_t g = uint64_t(begin + i) * uint64_t(P) + uint64_t(p);  // global pixel index
        if (g / 2 != have) math::normal_pair(seed, have = g / 2, z);
        o[i * P + p] = float(math::rn_mul(s.contrast, z[g % 2]));
      }
    }
  } else {
    const std::vector<PreparedImage> imgs = prepare_images(s);
    const int64_t period = int64_t(s.flash_frames) + s.gap_frames;
#pragma omp parallel for schedule(static) if (n * P > kParallelWork)
    for (int64_t i = 0; i < n; ++i) {
      const int64_t t = begin + i;
      if (t % period >= s.flash_frames)
        std::fill(o + i * P, o + (i + 1) * P, 0.0f);  // grey gap = mean luminance
      else
        natural_frame(s, imgs, seed, uint64_t(t / period), o + i * P);
    }
  }
  return out;
}

// ---- images ----------------------------------------------------------------------------------

Tensor load_grey_image(const std::string& path) {
  if (!fs::exists(path)) throw NoInputError(concat(path, ": no such image file"));
  const std::string bytes = detail::read_file(path);
  Tensor out;
  if (fs::path(path).extension() == ".npy") {
    Tensor a = parse_npy(bytes, path).to_dtype(DType::F32);
    if (a.rank() == 2) {
      out = a;
    } else if (a.rank() == 3 && (a.dim(2) == 3 || a.dim(2) == 4)) {
      out = Tensor::empty(Shape{a.dim(0), a.dim(1)});
      const float* s = a.data<float>();
      for (int64_t i = 0; i < out.numel(); ++i)
        out.data<float>()[i] =
            0.299f * s[i * a.dim(2)] + 0.587f * s[i * a.dim(2) + 1] + 0.114f * s[i * a.dim(2) + 2];
    } else {
      throw DataError(
          concat(path, ": image array ", a.shape().str(), " must be [H,W] or [H,W,3|4]"));
    }
  } else {
    int w = 0, h = 0, n = 0;
    unsigned char* px = stbi_load_from_memory(reinterpret_cast<const unsigned char*>(bytes.data()),
                                              int(bytes.size()), &w, &h, &n, 0);
    if (!px)
      throw DataError(concat(path, ": cannot decode image (", stbi_failure_reason(),
                             "); PNG, JPEG, BMP, GIF, PNM or .npy"));
    out = Tensor::empty(Shape{h, w});
    for (int64_t i = 0; i < int64_t(h) * w; ++i) {
      const unsigned char* p = px + i * n;
      const double v = n >= 3 ? 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2] : double(p[0]);
      out.data<float>()[i] = float(v / 255.0);
    }
    stbi_image_free(px);
  }
  if (out.numel() == 0) throw DataError(concat(path, ": image has no pixels"));
  detail::check_finite(out, path);
  return out;
}

std::vector<std::string> skimage_image_paths(const std::string& dir) {
  std::vector<std::string> out;
  for (const char* name : {"camera.png", "astronaut.png", "coffee.png", "chelsea.png", "grass.png",
                           "gravel.png", "brick.png", "moon.png"}) {
    const fs::path p = fs::path(dir) / name;
    if (fs::is_regular_file(p)) out.push_back(p.string());
  }
  return out;
}

}  // namespace dynsim::retina
