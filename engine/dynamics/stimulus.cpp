// Stimulus generators (engine/dynamics/stimulus.h).
#include "engine/dynamics/stimulus.h"

#include <stb/stb_image.h>  // the implementation is compiled in engine/io/stb_image.cpp

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "engine/core/rng.h"
#include "engine/io/npy.h"

namespace dynsim::stim {

Tensor grating(int C, int H, int W, const GratingParams& p) {
  Tensor t = Tensor::empty(Shape{C, H, W});
  const double th = p.orientation * M_PI / 180.0, ph = p.phase * M_PI / 180.0;
  const double k = 2 * M_PI * p.cycles / W;
  for (int c = 0; c < C; ++c)
    for (int y = 0; y < H; ++y)
      for (int x = 0; x < W; ++x)
        t.set((int64_t(c) * H + y) * W + x,
              p.amplitude * std::sin(k * (x * std::cos(th) + y * std::sin(th)) + ph));
  return t;
}

Tensor flash(int C, int H, int W, double value) {
  Tensor t = Tensor::empty(Shape{C, H, W});
  t.fill(value);
  return t;
}

Tensor white_noise(int C, int H, int W, double std, uint64_t seed) {
  Tensor t = Tensor::empty(Shape{C, H, W});
  for (int64_t i = 0; i < t.numel(); ++i) t.set(i, std * rng::normal(seed, uint64_t(i)));
  return t;
}

Tensor image(const std::string& path, int C, int H, int W) {
  if (!std::filesystem::exists(path)) throw NoInputError(concat(path, ": no such image file"));
  int w = 0, h = 0, n = 0;
  unsigned char* px = stbi_load(path.c_str(), &w, &h, &n, 0);
  if (!px)
    throw DataError(concat(path, ": cannot decode image (", stbi_failure_reason(),
                           "); PNG, JPEG, BMP, GIF and PNM are supported"));
  const int colour = n >= 3 ? 3 : 1;  // drop alpha
  const double mean3[3] = {0.485, 0.456, 0.406}, std3[3] = {0.229, 0.224, 0.225};
  Tensor t = Tensor::empty(Shape{C, H, W});
  for (int c = 0; c < C; ++c) {
    const int src_c = colour == 3 ? std::min(c, 2) : 0;
    const double m = C == 3 ? mean3[c] : 0.5, s = C == 3 ? std3[c] : 0.25;
    for (int y = 0; y < H; ++y)
      for (int x = 0; x < W; ++x) {
        // Bilinear sampling with pixel centres aligned (align_corners = false).
        const double sy = std::clamp((y + 0.5) * h / H - 0.5, 0.0, double(h - 1));
        const double sx = std::clamp((x + 0.5) * w / W - 0.5, 0.0, double(w - 1));
        const int y0 = int(sy), x0 = int(sx), y1 = std::min(y0 + 1, h - 1), x1 = std::min(x0 + 1, w - 1);
        const double fy = sy - y0, fx = sx - x0;
        auto at = [&](int yy, int xx) { return px[(size_t(yy) * w + xx) * n + src_c] / 255.0; };
        const double v = (1 - fy) * ((1 - fx) * at(y0, x0) + fx * at(y0, x1)) +
                         fy * ((1 - fx) * at(y1, x0) + fx * at(y1, x1));
        t.set((int64_t(c) * H + y) * W + x, (v - m) / s);
      }
  }
  stbi_image_free(px);
  return t;
}

Tensor array(const std::string& path, int C, int H, int W) {
  Tensor a = load_npy(path).to_dtype(DType::F32);
  const Shape& s = a.shape();
  auto bad = [&] {
    return DataError(concat(path, ": stimulus array of shape ", s.str(), " does not fit the model ",
                            "input ", C, "x", H, "x", W, " (accepted: [H,W], [C,H,W], [T,C,H,W], ",
                            "[B,T,C,H,W])"));
  };
  if (s.rank() < 2 || s.rank() > 5 || s[s.rank() - 1] != W || s[s.rank() - 2] != H) throw bad();
  if (s.rank() == 2) {
    Tensor t = Tensor::empty(Shape{C, H, W});
    for (int c = 0; c < C; ++c)
      for (int64_t i = 0; i < int64_t(H) * W; ++i) t.set(c * int64_t(H) * W + i, a.item(i));
    return t;
  }
  if (s[s.rank() - 3] != C) throw bad();
  return a;
}

}  // namespace dynsim::stim
