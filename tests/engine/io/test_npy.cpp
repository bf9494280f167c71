// .npy round trips, dtype conversion on load, and clear errors for corrupt files.
#include <doctest/doctest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <unistd.h>

#include "engine/io/npy.h"

using namespace dynsim;
namespace fs = std::filesystem;

namespace {
std::string tmp_path(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("dynsim_test_npy_" + std::to_string(::getpid()));
  fs::create_directories(d);
  return (d / name).string();
}
}  // namespace

TEST_CASE("npy: round trip f32, f64, i32 of several ranks") {
  for (DType t : {DType::F32, DType::F64, DType::I32}) {
    for (Shape s : {Shape{}, Shape{5}, Shape{2, 3}, Shape{2, 1, 3, 4}}) {
      Tensor a = Tensor::empty(s, t);
      for (int64_t i = 0; i < a.numel(); ++i) a.set(i, double(i) * (t == DType::I32 ? 3 : 0.25) - 4);
      std::string p = tmp_path("rt.npy");
      save_npy(p, a);
      Tensor b = load_npy(p);
      CHECK(b.dtype() == t);
      CHECK(b.shape() == s);
      CHECK(b.to_vector() == a.to_vector());
      CHECK_FALSE(fs::exists(p + ".tmp"));
    }
  }
}

TEST_CASE("npy: errors name the file and the offset") {
  std::string p = tmp_path("bad.npy");
  CHECK_THROWS_AS(load_npy(tmp_path("missing.npy")), NoInputError);
  {
    std::ofstream f(p, std::ios::binary);
    f << "not a numpy file at all";
  }
  CHECK_THROWS_WITH_AS(load_npy(p), doctest::Contains("bad magic at offset 0"), DataError);
  // A valid file cut short: the data section is truncated.
  Tensor a = Tensor::zeros({10, 10});
  save_npy(p, a);
  fs::resize_file(p, fs::file_size(p) - 7);
  CHECK_THROWS_WITH_AS(load_npy(p), doctest::Contains("data truncated: expected 400 bytes at offset 128"),
                       DataError);
  // An unsupported dtype.
  {
    std::string h = "{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }";
    while ((10 + h.size() + 1) % 64) h += ' ';
    h += '\n';
    std::ofstream f(p, std::ios::binary);
    f.write("\x93NUMPY\x01\x00", 8);
    char len[2] = {char(h.size() & 0xff), char(h.size() >> 8)};
    f.write(len, 2);
    f << h << "12345678";
  }
  CHECK_THROWS_WITH_AS(load_npy(p), doctest::Contains("unsupported dtype '<c8'"), DataError);
}

TEST_CASE("npy: a failed write leaves no file behind") {
  Tensor a = Tensor::zeros({3});
  std::string p = "/nonexistent-dir-for-dynsim/x.npy";
  CHECK_THROWS_AS(save_npy(p, a), IoError);
  CHECK_FALSE(fs::exists(p));
}
