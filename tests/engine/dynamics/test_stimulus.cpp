// Stimulus generators: values, determinism, image decoding and normalisation, bad files.
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "engine/dynamics/stimulus.h"
#include "engine/io/npy.h"
#include "tests/harness.h"

using namespace dynsim;

namespace {
std::string tmp(const std::string& name) {
  auto d = std::filesystem::temp_directory_path() / ("dynsim_stim_" + std::to_string(::getpid()));
  std::filesystem::create_directories(d);
  return (d / name).string();
}
}  // namespace

TEST_CASE("stimulus: grating, flash and noise") {
  stim::GratingParams p;
  p.cycles = 2;
  p.amplitude = 0.5;
  Tensor g = stim::grating(3, 8, 8, p);
  CHECK(g.shape() == Shape{3, 8, 8});
  // Vertical bars: constant along y, period W / cycles = 4 pixels along x.
  for (int y = 0; y < 8; ++y) CHECK(g.item(y * 8 + 1) == doctest::Approx(0.5 * std::sin(M_PI / 2)));
  CHECK(g.item(4) == doctest::Approx(g.item(0)).epsilon(1e-12));
  p.orientation = 90;  // horizontal bars: constant along x
  Tensor h = stim::grating(1, 8, 8, p);
  for (int x = 0; x < 8; ++x) CHECK(h.item(8 + x) == doctest::Approx(h.item(8)));
  Tensor f = stim::flash(2, 3, 3, 0.7);
  for (int64_t i = 0; i < f.numel(); ++i) CHECK(f.item(i) == doctest::Approx(0.7));
  Tensor n1 = stim::white_noise(1, 64, 64, 2.0, 5), n2 = stim::white_noise(1, 64, 64, 2.0, 5);
  test::require_equal(n1, n2, "noise is seeded");
  double s = 0, s2 = 0;
  for (int64_t i = 0; i < n1.numel(); ++i) s += n1.item(i), s2 += n1.item(i) * n1.item(i);
  CHECK(std::abs(s / 4096) < 0.15);
  CHECK(std::sqrt(s2 / 4096) == doctest::Approx(2.0).epsilon(0.1));
}

TEST_CASE("stimulus: images are decoded, resized and normalised; bad files are refused") {
  // A 2x2 binary PGM (P5): black, white / white, black.
  const std::string pgm = tmp("checker.pgm");
  {
    std::ofstream f(pgm, std::ios::binary);
    f << "P5\n2 2\n255\n";
    const unsigned char px[4] = {0, 255, 255, 0};
    f.write(reinterpret_cast<const char*>(px), 4);
  }
  Tensor t = stim::image(pgm, 3, 2, 2);
  CHECK(t.shape() == Shape{3, 2, 2});
  CHECK(t.item(0) == doctest::Approx((0.0 - 0.485) / 0.229));
  CHECK(t.item(1) == doctest::Approx((1.0 - 0.485) / 0.229));
  CHECK(t.item(4 + 1) == doctest::Approx((1.0 - 0.456) / 0.224));
  Tensor big = stim::image(pgm, 1, 4, 4);  // upsampled, grey normalisation 0.5 / 0.25
  CHECK(big.item(0) == doctest::Approx(-2.0));
  CHECK(big.item(15) == doctest::Approx(-2.0));
  CHECK_THROWS_AS(stim::image(tmp("missing.png"), 3, 4, 4), NoInputError);
  const std::string junk = tmp("junk.png");
  std::ofstream(junk) << "not an image";
  CHECK_THROWS_WITH_AS(stim::image(junk, 3, 4, 4), doctest::Contains("cannot decode image"),
                       DataError);
}

TEST_CASE("stimulus: arrays from .npy") {
  const std::string p = tmp("frame.npy");
  save_npy(p, Tensor::from(Shape{2, 2}, {1, 2, 3, 4}));
  Tensor t = stim::array(p, 3, 2, 2);
  CHECK(t.shape() == Shape{3, 2, 2});
  CHECK(t.item(8 + 3) == 4.0);
  save_npy(p, Tensor::zeros(Shape{5, 3, 2, 2}));
  CHECK(stim::array(p, 3, 2, 2).shape() == Shape{5, 3, 2, 2});
  CHECK_THROWS_WITH_AS(stim::array(p, 1, 2, 2), doctest::Contains("does not fit the model input"),
                       DataError);
}
