// engine/io/hdf5_io.h, the store behind `dynsim simulate` with simulation.format = "hdf5": round
// trips of f32/f64/i32 at every rank (scalars, empty arrays, nested group paths), large arrays
// through the chunked gzip layout, string attributes, and errors that name the file and dataset
// and leave no file behind. Without HDF5 in the build, every call throws NotImplemented.
#include <doctest/doctest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "engine/io/hdf5_io.h"
#include "tests/harness.h"

using namespace dynsim;
using namespace dynsim::test;
namespace fs = std::filesystem;

namespace {

// A per-process folder for the files these tests write, removed when the test binary exits.
struct ScratchDir {
  fs::path path = fs::temp_directory_path() / ("dynsim_test_hdf5_" + std::to_string(::getpid()));
  ~ScratchDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

fs::path fresh_dir(const std::string& name) {
  static const ScratchDir scratch;
  const fs::path d = scratch.path / name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

size_t entries(const fs::path& d) {
  return size_t(std::distance(fs::directory_iterator(d), fs::directory_iterator()));
}

}  // namespace

TEST_CASE("hdf5: round trip of every dtype and rank, nested paths and attributes") {
  const fs::path dir = fresh_dir("roundtrip");
  const std::string path = (dir / "a.h5").string();
  if (!hdf5_available()) {
    CHECK_THROWS_WITH_AS(write_hdf5(path, {}, {}), doctest::Contains("no HDF5 support"),
                         NotImplemented);
    CHECK_THROWS_AS(read_hdf5(path), NotImplemented);
    return;
  }
  std::vector<std::pair<std::string, Tensor>> data = {
      {"scalar", Tensor::from(Shape{}, {-2.5}, DType::F32)},
      {"vector_f64", random_uniform(Shape{7}, -1, 1, 1, DType::F64)},
      {"labels", random_ints(Shape{3, 4}, -1000, 1000, 2, DType::I32)},
      {"empty", Tensor::zeros(Shape{0, 3}, DType::F32)},
      {"responses/V1/avg", random_uniform(Shape{2, 5}, -1, 1, 3, DType::F32)},
      {"responses/V1/std", random_uniform(Shape{2, 5}, 0, 1, 4, DType::F32)},
      {"/responses/IT/rates", random_uniform(Shape{1, 2, 3, 4, 5, 6}, -1, 1, 5, DType::F32)},
  };
  const std::map<std::string, std::string> attrs = {
      {"config", R"({"model": {"preset": "DyRCNNx4"}})"}, {"empty", ""}, {"unit", "τ in ms"}};
  write_hdf5(path, data, attrs);
  CHECK(entries(dir) == 1);  // no temporary file left
  const auto got = read_hdf5(path);
  CHECK(got.size() == data.size());
  for (const auto& [name, want] : data) {
    const std::string key = name[0] == '/' ? name.substr(1) : name;
    CAPTURE(key);
    REQUIRE(got.count(key) == 1);
    CHECK(got.at(key).dtype() == want.dtype());
    require_equal(got.at(key), want, key);
  }
  CHECK(read_hdf5_attributes(path) == attrs);

  // A second write replaces the file.
  write_hdf5(path, {{"only", Tensor::from(Shape{2}, {1, 2})}});
  CHECK(read_hdf5(path).size() == 1);
  CHECK(read_hdf5_attributes(path).empty());
}

TEST_CASE("hdf5: large arrays are compressed and read back exactly") {
  if (!hdf5_available()) return;
  const fs::path dir = fresh_dir("large");
  // Mostly zeros (like rates before onset): compresses well.
  Tensor sparse = Tensor::zeros(Shape{2, 30, 16, 32, 32});
  for (int64_t i = 0; i < sparse.numel(); i += 97) sparse.set(i, double(i % 13) - 6);
  const Tensor dense = random_uniform(Shape{3, 70001}, -1, 1, 9, DType::F64);  // odd sizes
  const Tensor ints = random_ints(Shape{5, 40000}, -3, 3, 10, DType::I32);
  const std::string path = (dir / "big.h5").string();
  write_hdf5(path, {{"sparse", sparse}, {"dense", dense}, {"ints", ints}});
  const auto got = read_hdf5(path);
  require_equal(got.at("sparse"), sparse, "sparse");
  require_equal(got.at("dense"), dense, "dense");
  require_equal(got.at("ints"), ints, "ints");
  const size_t raw = sparse.nbytes() + dense.nbytes() + ints.nbytes();
  MESSAGE("hdf5 file ", fs::file_size(path), " bytes for ", raw, " bytes of arrays");
  CHECK(fs::file_size(path) < raw - sparse.nbytes() / 2);  // the sparse array shrank
}

TEST_CASE("hdf5: bad datasets are errors before anything is written") {
  if (!hdf5_available()) return;
  const fs::path dir = fresh_dir("errors");
  const std::string path = (dir / "x.h5").string();
  const Tensor t = Tensor::from(Shape{2}, {1, 2});
  CHECK_THROWS_WITH_AS(write_hdf5(path, {{"a", t}, {"a", t}}), doctest::Contains("'a' given twice"),
                       Error);
  CHECK_THROWS_WITH_AS(write_hdf5(path, {{"a", t}, {"a/b", t}}),
                       doctest::Contains("'a' is a dataset and also the group of 'a/b'"), Error);
  for (const char* bad : {"", "a//b", "a/", "./a", "a/.."})
    CHECK_THROWS_WITH_AS(write_hdf5(path, {{bad, t}}), doctest::Contains("dataset path"), Error);
  CHECK_THROWS_WITH_AS(write_hdf5(path, {{"u", Tensor()}}),
                       doctest::Contains("dataset 'u' is undefined"), Error);
  CHECK_THROWS_WITH_AS(write_hdf5(path, {{"a", t}}, {{"", "x"}}),
                       doctest::Contains("an attribute has no name"), Error);
  CHECK(entries(dir) == 0);
  // A folder that does not exist: an I/O error naming the file, and no temporary file.
  const std::string nowhere = (dir / "missing" / "x.h5").string();
  CHECK_THROWS_WITH_AS(write_hdf5(nowhere, {{"a", t}}), doctest::Contains(nowhere.c_str()),
                       IoError);
  CHECK(entries(dir) == 0);
}

TEST_CASE("hdf5: reading a missing or foreign file") {
  if (!hdf5_available()) return;
  const fs::path dir = fresh_dir("read");
  CHECK_THROWS_WITH_AS(read_hdf5((dir / "none.h5").string()), doctest::Contains("no such file"),
                       NoInputError);
  std::ofstream(dir / "text.h5") << "not hdf5 at all\n";
  CHECK_THROWS_WITH_AS(read_hdf5((dir / "text.h5").string()), doctest::Contains("not an HDF5 file"),
                       DataError);
  CHECK_THROWS_WITH_AS(read_hdf5_attributes((dir / "text.h5").string()),
                       doctest::Contains("text.h5: not an HDF5 file"), DataError);
}
