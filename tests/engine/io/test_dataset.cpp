// Dataset readers on small synthetic files of every format (values checked exactly), every
// corruption case, the model-input transforms, seeded shuffles, the background Batcher, and
// Fashion-MNIST itself when Debian's dataset-fashion-mnist is installed.
#include <doctest/doctest.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>

#include "engine/io/dataset.h"
#include "engine/io/npy.h"

using namespace dynsim;
using namespace dynsim::data;
namespace fs = std::filesystem;

namespace {

std::string tmp_dir(const std::string& name) {
  fs::path d =
      fs::temp_directory_path() / ("dynsim_test_dataset_" + std::to_string(::getpid())) / name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d.string();
}

void write(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(bytes.data(), std::streamsize(bytes.size()));
  REQUIRE(f.good());
}

void write_gz(const std::string& path, const std::string& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  REQUIRE(f != nullptr);
  REQUIRE(gzwrite(f, bytes.data(), unsigned(bytes.size())) == int(bytes.size()));
  gzclose(f);
}

std::string be32(uint32_t v) {
  return {char(v >> 24), char((v >> 16) & 0xff), char((v >> 8) & 0xff), char(v & 0xff)};
}
std::string le16(uint32_t v) {
  return {char(v & 0xff), char((v >> 8) & 0xff)};
}
std::string le32(uint32_t v) {
  return le16(v & 0xffff) + le16(v >> 16);
}

// IDX images (n x h x w, pixel k = (7k + 3) mod 256) and labels (k mod 10).
std::string idx_images(uint32_t n, uint32_t h, uint32_t w) {
  std::string s = be32(0x803) + be32(n) + be32(h) + be32(w);
  for (uint32_t k = 0; k < n * h * w; ++k) s += char((7 * k + 3) % 256);
  return s;
}
std::string idx_labels(uint32_t n) {
  std::string s = be32(0x801) + be32(n);
  for (uint32_t k = 0; k < n; ++k) s += char(k % 10);
  return s;
}

// A .npy file with the given descr, shape text and raw data.
std::string npy_bytes(const std::string& descr, const std::string& shape, const std::string& data) {
  std::string h = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': " + shape + ", }";
  while ((10 + h.size() + 1) % 64 != 0) h += ' ';
  h += '\n';
  return std::string("\x93NUMPY\x01\x00", 8) + le16(uint32_t(h.size())) + h + data;
}

// A zip archive of the members, stored (method 0) or raw-deflated (method 8).
std::string zip_bytes(const std::vector<std::pair<std::string, std::string>>& members,
                      bool deflated) {
  std::string out, cd;
  for (const auto& [name, data] : members) {
    std::string body = data;
    if (deflated) {
      z_stream s{};
      REQUIRE(deflateInit2(&s, 6, Z_DEFLATED, -MAX_WBITS, 8, Z_DEFAULT_STRATEGY) == Z_OK);
      body.resize(deflateBound(&s, uLong(data.size())));
      s.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
      s.avail_in = uInt(data.size());
      s.next_out = reinterpret_cast<Bytef*>(body.data());
      s.avail_out = uInt(body.size());
      REQUIRE(deflate(&s, Z_FINISH) == Z_STREAM_END);
      body.resize(s.total_out);
      deflateEnd(&s);
    }
    const uint32_t crc =
        uint32_t(crc32(0L, reinterpret_cast<const Bytef*>(data.data()), uInt(data.size())));
    const uint32_t offset = uint32_t(out.size());
    const std::string common = le16(20) + le16(0) + le16(deflated ? 8 : 0) + le16(0) + le16(0) +
                               le32(crc) + le32(uint32_t(body.size())) +
                               le32(uint32_t(data.size())) + le16(uint32_t(name.size())) + le16(0);
    out += le32(0x04034b50) + common + name + body;
    cd += le32(0x02014b50) + le16(20) + common + le16(0) + le16(0) + le16(0) + le32(0) +
          le32(offset) + name;
  }
  const uint32_t cd_off = uint32_t(out.size());
  out += cd;
  out += le32(0x06054b50) + le16(0) + le16(0) + le16(uint32_t(members.size())) +
         le16(uint32_t(members.size())) + le32(uint32_t(cd.size())) + le32(cd_off) + le16(0);
  return out;
}

// A P5 (grey) or P6 (RGB) image, which stb_image reads.
void write_pnm(const std::string& path, int w, int h, int c, const std::vector<int>& px) {
  std::string s = std::string(c == 1 ? "P5" : "P6") + "\n" + std::to_string(w) + " " +
                  std::to_string(h) + "\n255\n";
  for (int v : px) s += char(v);
  write(path, s);
}

void check_pixel_values(const Dataset& ds, int64_t n, int64_t h, int64_t w) {
  REQUIRE(ds.images.shape() == Shape{n, 1, h, w});
  REQUIRE(ds.labels.shape() == Shape{n});
  for (int64_t k = 0; k < n * h * w; ++k)
    REQUIRE(ds.images.data<float>()[k] == float((7 * k + 3) % 256) / 255.0f);
  for (int64_t k = 0; k < n; ++k) REQUIRE(ds.labels.data<int32_t>()[k] == k % 10);
}

}  // namespace

TEST_CASE("dataset: IDX plain and gzip") {
  const std::string d = tmp_dir("idx");
  write(d + "/im", idx_images(12, 3, 5));
  write(d + "/lb", idx_labels(12));
  write_gz(d + "/im.gz", idx_images(12, 3, 5));
  write_gz(d + "/lb.gz", idx_labels(12));
  for (auto [im, lb] :
       {std::pair{"/im", "/lb"}, std::pair{"/im.gz", "/lb.gz"}, std::pair{"/im.gz", "/lb"}}) {
    Dataset ds = load_idx(d + im, d + lb);
    check_pixel_values(ds, 12, 3, 5);
    CHECK(ds.n_classes == 10);
    CHECK(ds.size() == 12);
  }
}

TEST_CASE("dataset: corrupt IDX files") {
  const std::string d = tmp_dir("idx_bad");
  const std::string im = idx_images(4, 2, 2), lb = idx_labels(4);
  write(d + "/im", im);
  write(d + "/lb", lb);
  CHECK_THROWS_AS(load_idx(d + "/missing", d + "/lb"), NoInputError);
  CHECK_THROWS_AS(load_idx(d + "/im", d + "/missing"), NoInputError);
  write(d + "/swapped", lb);
  CHECK_THROWS_WITH_AS(load_idx(d + "/swapped", d + "/lb"),
                       doctest::Contains("bad magic 0x801 at offset 0"), DataError);
  CHECK_THROWS_WITH_AS(load_idx(d + "/im", d + "/im"),
                       doctest::Contains("/im: bad magic 0x803 at offset 0"), DataError);
  write(d + "/short_px", im.substr(0, im.size() - 1));
  CHECK_THROWS_WITH_AS(
      load_idx(d + "/short_px", d + "/lb"),
      doctest::Contains("short_px: truncated: expected 16 pixel bytes at offset 16, file has 15"),
      DataError);
  write(d + "/huge",
        be32(0x803) + be32(0xffffffffu) + be32(0xffffffffu) + be32(0xffffffffu) + "xy");
  CHECK_THROWS_WITH_AS(load_idx(d + "/huge", d + "/lb"),
                       doctest::Contains("huge: truncated: expected "), DataError);
  write(d + "/short_hdr", im.substr(0, 10));
  CHECK_THROWS_WITH_AS(load_idx(d + "/short_hdr", d + "/lb"),
                       doctest::Contains("short_hdr: IDX header truncated at offset 10"),
                       DataError);
  write(d + "/short_lb", lb.substr(0, lb.size() - 2));
  CHECK_THROWS_WITH_AS(load_idx(d + "/im", d + "/short_lb"),
                       doctest::Contains("expected 4 label bytes at offset 8, file has 2"),
                       DataError);
  write(d + "/lb3", idx_labels(3));
  CHECK_THROWS_WITH_AS(load_idx(d + "/im", d + "/lb3"), doctest::Contains("3 labels for 4 images"),
                       DataError);
  write(d + "/bad.gz", std::string("\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03garbagegarbage", 24));
  CHECK_THROWS_WITH_AS(load_idx(d + "/bad.gz", d + "/lb"),
                       doctest::Contains("bad.gz: corrupt gzip data"), DataError);
}

TEST_CASE("dataset: CIFAR-10 and CIFAR-100 records") {
  const std::string d = tmp_dir("cifar");
  // Record r of file f: label (f + r) % 10, pixel k = (r * 31 + f * 17 + k) % 256.
  auto record = [](int f, int r, bool c100) {
    std::string s;
    if (c100)
      s += char(r % 20), s += char((f * 7 + r * 13) % 100);
    else
      s += char((f + r) % 10);
    for (int k = 0; k < 3072; ++k) s += char((r * 31 + f * 17 + k) % 256);
    return s;
  };
  for (int f = 1; f <= 5; ++f)
    write(d + "/data_batch_" + std::to_string(f) + ".bin",
          record(f, 0, false) + record(f, 1, false));
  write(d + "/test_batch.bin", record(0, 0, false) + record(0, 1, false) + record(0, 2, false));
  write(d + "/train.bin", record(1, 0, true) + record(1, 1, true));
  write(d + "/test.bin", record(0, 0, true));

  Dataset tr = load_cifar(d, false, true);
  REQUIRE(tr.images.shape() == Shape{10, 3, 32, 32});
  CHECK(tr.n_classes == 10);
  for (int f = 1; f <= 5; ++f)
    for (int r = 0; r < 2; ++r) {
      const int64_t i = (f - 1) * 2 + r;
      REQUIRE(tr.labels.data<int32_t>()[i] == (f + r) % 10);
      for (int k = 0; k < 3072; k += 97)
        REQUIRE(tr.images.data<float>()[i * 3072 + k] ==
                float((r * 31 + f * 17 + k) % 256) / 255.0f);
    }
  Dataset te = load_cifar(d, false, false);
  CHECK(te.size() == 3);
  Dataset one = load_cifar(d + "/data_batch_3.bin", false, true);
  REQUIRE(one.size() == 2);
  CHECK(one.labels.data<int32_t>()[1] == 4);
  CHECK(one.images.data<float>()[3072 + 5] == float((31 + 51 + 5) % 256) / 255.0f);

  Dataset c100 = load_cifar(d, true, true);
  REQUIRE(c100.size() == 2);
  CHECK(c100.n_classes == 100);
  CHECK(c100.labels.data<int32_t>()[0] == 7);  // the fine label, not the coarse one
  CHECK(c100.labels.data<int32_t>()[1] == 20);
  for (int k = 0; k < 3072; k += 101)
    REQUIRE(c100.images.data<float>()[3072 + k] == float((31 + 17 + k) % 256) / 255.0f);
  CHECK(load_cifar(d, true, false).size() == 1);
}

TEST_CASE("dataset: corrupt CIFAR files") {
  const std::string d = tmp_dir("cifar_bad");
  std::string rec(3073, '\x05');
  write(d + "/trunc.bin", rec + rec.substr(0, 100));
  CHECK_THROWS_WITH_AS(
      load_cifar(d + "/trunc.bin", false, true),
      doctest::Contains("trunc.bin: truncated record at offset 3073 (100 of 3073 bytes"),
      DataError);
  std::string bad = rec;
  bad[0] = 10;
  write(d + "/label.bin", rec + bad);
  CHECK_THROWS_WITH_AS(
      load_cifar(d + "/label.bin", false, true),
      doctest::Contains("label.bin: label 10 at offset 3073 is out of range [0, 10)"), DataError);
  std::string r100(3074, '\x01');
  r100[1] = 100;
  write(d + "/c100.bin", r100);
  CHECK_THROWS_WITH_AS(load_cifar(d + "/c100.bin", true, true),
                       doctest::Contains("label 100 at offset 1"), DataError);
  write(d + "/empty.bin", "");
  CHECK_THROWS_AS(load_cifar(d + "/empty.bin", false, true), DataError);
  CHECK_THROWS_AS(load_cifar(d, false, true), NoInputError);  // no data_batch_1.bin
  CHECK_THROWS_AS(load_cifar(d + "/nope.bin", false, false), NoInputError);
}

TEST_CASE("dataset: npy pairs (u8 NHW, f32 NHWC, f64 NCHW)") {
  const std::string d = tmp_dir("npy");
  std::string u8;
  for (int k = 0; k < 2 * 2 * 3; ++k) u8 += char(k * 20);
  write(d + "/im_u8.npy", npy_bytes("|u1", "(2, 2, 3)", u8));
  std::string i8;
  for (int64_t v : {int64_t(3), int64_t(1)}) i8.append(reinterpret_cast<const char*>(&v), 8);
  write(d + "/lb_i8.npy", npy_bytes("<i8", "(2,)", i8));
  Dataset a = load_npy_pair(d + "/im_u8.npy", d + "/lb_i8.npy");
  REQUIRE(a.images.shape() == Shape{2, 1, 2, 3});
  for (int k = 0; k < 12; ++k) REQUIRE(a.images.data<float>()[k] == float(k * 20) / 255.0f);
  CHECK(a.labels.to_vector() == std::vector<double>{3, 1});
  CHECK(a.n_classes == 4);

  // Channels last: element (n, y, x, c) = n * 100 + y * 10 + x + c / 8 (exact in f32).
  Tensor nhwc = Tensor::empty(Shape{2, 2, 4, 3});
  for (int n = 0; n < 2; ++n)
    for (int y = 0; y < 2; ++y)
      for (int x = 0; x < 4; ++x)
        for (int c = 0; c < 3; ++c)
          nhwc.set(((n * 2 + y) * 4 + x) * 3 + c, n * 100 + y * 10 + x + c / 8.0);
  save_npy(d + "/im_f32.npy", nhwc);
  save_npy(d + "/lb_i32.npy", Tensor::from(Shape{2}, {0, 2}, DType::I32));
  Dataset b = load_npy_pair(d + "/im_f32.npy", d + "/lb_i32.npy");
  REQUIRE(b.images.shape() == Shape{2, 3, 2, 4});
  for (int n = 0; n < 2; ++n)
    for (int c = 0; c < 3; ++c)
      for (int y = 0; y < 2; ++y)
        for (int x = 0; x < 4; ++x)
          REQUIRE(b.images.data<float>()[((n * 3 + c) * 2 + y) * 4 + x] ==
                  float(n * 100 + y * 10 + x + c / 8.0));

  Tensor nchw = Tensor::empty(Shape{2, 3, 2, 2}, DType::F64);
  for (int64_t k = 0; k < nchw.numel(); ++k) nchw.set(k, k / 64.0);
  save_npy(d + "/im_f64.npy", nchw);
  Dataset c = load_npy_pair(d + "/im_f64.npy", d + "/lb_i32.npy");
  REQUIRE(c.images.shape() == Shape{2, 3, 2, 2});
  REQUIRE(c.images.dtype() == DType::F32);
  for (int64_t k = 0; k < nchw.numel(); ++k) REQUIRE(c.images.data<float>()[k] == float(k / 64.0));
}

TEST_CASE("dataset: corrupt npy pairs") {
  const std::string d = tmp_dir("npy_bad");
  save_npy(d + "/im.npy", Tensor::zeros(Shape{3, 2, 2}));
  save_npy(d + "/lb2.npy", Tensor::from(Shape{2}, {0, 1}, DType::I32));
  save_npy(d + "/lbneg.npy", Tensor::from(Shape{3}, {0, -1, 1}, DType::I32));
  save_npy(d + "/lbf.npy", Tensor::from(Shape{3}, {0, 1, 1}));
  save_npy(d + "/im5.npy", Tensor::zeros(Shape{3, 5, 5, 5}));
  save_npy(d + "/imbig.npy", Tensor::from(Shape{1, 1, 2}, {3, 300}, DType::I32));
  save_npy(d + "/lb1.npy", Tensor::from(Shape{1}, {0}, DType::I32));
  save_npy(d + "/lb3.npy", Tensor::from(Shape{3}, {0, 1, 1}, DType::I32));
  CHECK_THROWS_AS(load_npy_pair(d + "/im.npy", d + "/none.npy"), NoInputError);
  CHECK_THROWS_AS(load_npy_pair(d + "/none.npy", d + "/lb2.npy"), NoInputError);
  CHECK_THROWS_WITH_AS(load_npy_pair(d + "/im.npy", d + "/lb2.npy"),
                       doctest::Contains("2 labels for 3 images"), DataError);
  CHECK_THROWS_WITH_AS(load_npy_pair(d + "/im.npy", d + "/lbneg.npy"),
                       doctest::Contains("lbneg.npy: label -1 of sample 1 is out of range"),
                       DataError);
  CHECK_THROWS_WITH_AS(load_npy_pair(d + "/im.npy", d + "/lbf.npy"),
                       doctest::Contains("labels must be an integer vector"), DataError);
  CHECK_THROWS_WITH_AS(load_npy_pair(d + "/im5.npy", d + "/lb3.npy"),
                       doctest::Contains("no channel dimension of size 1 or 3"), DataError);
  CHECK_THROWS_WITH_AS(
      load_npy_pair(d + "/imbig.npy", d + "/lb1.npy"),
      doctest::Contains("integer image value 300 at element 1 is outside [0, 255]"), DataError);
  std::string raw = npy_bytes("|u1", "(3, 2, 2)", std::string(11, '\0'));
  write(d + "/short.npy", raw);
  CHECK_THROWS_WITH_AS(
      load_npy_pair(d + "/short.npy", d + "/lb3.npy"),
      doctest::Contains("short.npy: data truncated: expected 12 bytes at offset 128, file has 11"),
      DataError);
}

TEST_CASE("dataset: npz stored and deflated, names images/labels and x/y") {
  const std::string d = tmp_dir("npz");
  std::string u8;
  for (int k = 0; k < 3 * 2 * 2 * 3; ++k) u8 += char(k * 7);
  const std::string im = npy_bytes("|u1", "(3, 2, 2, 3)", u8);
  std::string lbd;
  for (int32_t v : {2, 0, 5}) lbd.append(reinterpret_cast<const char*>(&v), 4);
  const std::string lb = npy_bytes("<i4", "(3,)", lbd);
  auto check = [&](const Dataset& ds) {
    REQUIRE(ds.images.shape() == Shape{3, 3, 2, 2});
    for (int n = 0; n < 3; ++n)
      for (int c = 0; c < 3; ++c)
        for (int y = 0; y < 2; ++y)
          for (int x = 0; x < 2; ++x)
            REQUIRE(ds.images.data<float>()[((n * 3 + c) * 2 + y) * 2 + x] ==
                    float(((((n * 2 + y) * 2 + x) * 3 + c) * 7) % 256) / 255.0f);
    CHECK(ds.labels.to_vector() == std::vector<double>{2, 0, 5});
    CHECK(ds.n_classes == 6);
  };
  for (bool deflated : {false, true}) {
    write(d + "/a.npz", zip_bytes({{"labels.npy", lb}, {"images.npy", im}}, deflated));
    check(load_npz(d + "/a.npz"));
    write(d + "/b.npz", zip_bytes({{"x.npy", im}, {"y.npy", lb}}, deflated));
    check(load_npz(d + "/b.npz"));
  }
  // Archives written by numpy itself (zip64 local headers), when numpy is available.
  const std::string py =
      "/usr/bin/python3 -c \"import numpy as np; x=(np.arange(36)*7%256).astype(np.uint8)"
      ".reshape(3,2,2,3); y=np.array([2,0,5]); np.savez('" +
      d +
      "/np.npz', images=x, labels=y); "
      "np.savez_compressed('" +
      d + "/npc.npz', x=x, y=y)\" 2>/dev/null";
  if (std::system(py.c_str()) == 0) {
    check(load_npz(d + "/np.npz"));
    check(load_npz(d + "/npc.npz"));
  } else {
    MESSAGE("numpy not available: numpy-written npz files not checked");
  }
}

TEST_CASE("dataset: corrupt npz files") {
  const std::string d = tmp_dir("npz_bad");
  const std::string im = npy_bytes("<f4", "(1, 1, 1)", std::string(4, '\0'));
  const std::string lb = npy_bytes("<i4", "(1,)", std::string(4, '\0'));
  CHECK_THROWS_AS(load_npz(d + "/none.npz"), NoInputError);
  write(d + "/nolabels.npz", zip_bytes({{"images.npy", im}, {"other.npy", lb}}, false));
  CHECK_THROWS_WITH_AS(
      load_npz(d + "/nolabels.npz"),
      doctest::Contains(
          "npz has no member 'labels.npy' or 'y.npy' (members: images.npy, other.npy)"),
      DataError);
  write(d + "/noimages.npz", zip_bytes({{"labels.npy", lb}}, true));
  CHECK_THROWS_WITH_AS(load_npz(d + "/noimages.npz"),
                       doctest::Contains("no member 'images.npy' or 'x.npy'"), DataError);
  std::string z = zip_bytes({{"images.npy", im}, {"labels.npy", lb}}, false);
  std::string flipped = z;
  flipped[30 + 10 + 128 + 1] ^=
      0x40;  // a byte of the first member's data (after its 128-byte header)
  write(d + "/crc.npz", flipped);
  CHECK_THROWS_WITH_AS(load_npz(d + "/crc.npz"),
                       doctest::Contains("crc.npz:images.npy: CRC mismatch"), DataError);
  write(d + "/trunc.npz", z.substr(0, z.size() / 2));
  CHECK_THROWS_WITH_AS(load_npz(d + "/trunc.npz"),
                       doctest::Contains("no zip end-of-central-directory record"), DataError);
  std::string zd = zip_bytes({{"images.npy", im}, {"labels.npy", lb}}, true);
  zd[30 + 10 + 2] ^= 0xff;  // corrupt the deflate stream of the first member
  write(d + "/inflate.npz", zd);
  CHECK_THROWS_AS(load_npz(d + "/inflate.npz"), DataError);
  write(d + "/tiny.npz", "PK");
  CHECK_THROWS_WITH_AS(load_npz(d + "/tiny.npz"), doctest::Contains("not a zip archive"),
                       DataError);
}

TEST_CASE("dataset: image folders (PGM and PPM via stb_image)") {
  const std::string d = tmp_dir("folder");
  fs::create_directories(d + "/cat");
  fs::create_directories(d + "/ant");
  write_pnm(d + "/cat/2.pgm", 2, 2, 1, {0, 255, 0, 255});
  write_pnm(d + "/cat/1.pgm", 2, 2, 1, {10, 20, 30, 40});
  write_pnm(d + "/ant/z.pgm", 2, 2, 1, {255, 255, 0, 0});
  write(d + "/ant/notes.txt", "ignored");
  Dataset ds = load_image_folder(d);
  REQUIRE(ds.images.shape() == Shape{3, 1, 2, 2});
  CHECK(ds.n_classes == 2);
  CHECK(ds.labels.to_vector() == std::vector<double>{0, 1, 1});  // ant < cat; 1.pgm < 2.pgm
  const std::vector<int> want = {255, 255, 0, 0, 10, 20, 30, 40, 0, 255, 0, 255};
  for (int k = 0; k < 12; ++k)
    REQUIRE(ds.images.data<float>()[k] == float(want[size_t(k)]) / 255.0f);

  // Bilinear resize to 4x4 (align_corners = false): columns 0, 1/4, 3/4, 1 of the step.
  Dataset r = load_image_folder(d, 4, 4);
  REQUIRE(r.images.shape() == Shape{3, 1, 4, 4});
  const float one = 1.0f, q[4] = {0.0f, 0.25f * one, 0.75f * one, one};
  for (int y = 0; y < 4; ++y)
    for (int x = 0; x < 4; ++x) REQUIRE(r.images.data<float>()[2 * 16 + y * 4 + x] == q[x]);

  const std::string c = tmp_dir("folder_rgb");
  fs::create_directories(c + "/a");
  write_pnm(c + "/a/x.ppm", 2, 1, 3, {1, 2, 3, 4, 5, 6});
  Dataset rgb = load_image_folder(c);
  REQUIRE(rgb.images.shape() == Shape{1, 3, 1, 2});
  const std::vector<int> planar = {1, 4, 2, 5, 3, 6};
  for (int k = 0; k < 6; ++k)
    REQUIRE(rgb.images.data<float>()[k] == float(planar[size_t(k)]) / 255.0f);
}

TEST_CASE("dataset: corrupt image folders") {
  CHECK_THROWS_AS(load_image_folder(tmp_dir("x") + "/missing"), NoInputError);
  const std::string e = tmp_dir("empty");
  CHECK_THROWS_WITH_AS(load_image_folder(e), doctest::Contains("no class subfolders"), DataError);
  fs::create_directories(e + "/a");
  CHECK_THROWS_WITH_AS(load_image_folder(e), doctest::Contains("/a: class folder has no images"),
                       DataError);
  write(e + "/a/bad.png", "this is not a png");
  CHECK_THROWS_WITH_AS(load_image_folder(e), doctest::Contains("bad.png: cannot decode image"),
                       DataError);
}

namespace {
Dataset small_dataset(int64_t n, int64_t c, int64_t h, int64_t w) {
  Dataset ds;
  ds.images = Tensor::empty(Shape{n, c, h, w});
  for (int64_t k = 0; k < ds.images.numel(); ++k) ds.images.set(k, double(k % 251) / 256.0);
  ds.labels = Tensor::empty(Shape{n}, DType::I32);
  for (int64_t i = 0; i < n; ++i) ds.labels.set(i, double(i % 3));
  ds.n_classes = 3;
  ds.source = "synthetic";
  return ds;
}
float px(const Dataset& ds, int64_t n, int64_t c, int64_t y, int64_t x) {
  return ds.images
      .data<float>()[((n * ds.images.dim(1) + c) * ds.images.dim(2) + y) * ds.images.dim(3) + x];
}
}  // namespace

TEST_CASE("dataset: transforms (identity, replication, pad, resize, normalisation)") {
  Dataset ds = small_dataset(4, 1, 3, 5);
  Rng rng(5);
  Tensor id = to_model_input(ds, 1, 2, Transform{}, rng);
  REQUIRE(id.shape() == Shape{2, 1, 3, 5});
  for (int64_t k = 0; k < id.numel(); ++k)
    REQUIRE(id.data<float>()[k] == ds.images.data<float>()[15 + k]);
  CHECK(rng.offset() == 2);

  Transform t;
  t.channels = 3;
  t.height = 5;
  t.width = 6;
  t.fit = Transform::Fit::Pad;
  t.mean = {0.5f, 0.25f, 0.0f};
  t.std = {0.5f, 2.0f, 0.25f};
  Tensor o = to_model_input(ds, 0, 4, t, rng);
  REQUIRE(o.shape() == Shape{4, 3, 5, 6});
  for (int n = 0; n < 4; ++n)
    for (int c = 0; c < 3; ++c)
      for (int y = 0; y < 5; ++y)
        for (int x = 0; x < 6; ++x) {
          // Centred pad: one row above and below, the extra column on the right.
          const float v = (y >= 1 && y < 4 && x < 5) ? px(ds, n, 0, y - 1, x) : 0.0f;
          REQUIRE(o.data<float>()[((n * 3 + c) * 5 + y) * 6 + x] ==
                  (v - t.mean[size_t(c)]) / t.std[size_t(c)]);
        }

  Dataset step;
  step.images = Tensor::from(Shape{1, 1, 2, 2}, {0, 1, 0, 1});
  step.labels = Tensor::from(Shape{1}, {0}, DType::I32);
  Transform rs;
  rs.height = 4;
  rs.width = 4;
  rs.mean = {0.25f};
  Tensor r = to_model_input(step, 0, 1, rs, rng);
  const float q[4] = {0.0f, 0.25f, 0.75f, 1.0f};
  for (int y = 0; y < 4; ++y)
    for (int x = 0; x < 4; ++x) REQUIRE(r.data<float>()[y * 4 + x] == q[x] - 0.25f);

  Transform bad;
  bad.channels = 2;
  CHECK_THROWS_WITH_AS(to_model_input(ds, 0, 1, bad, rng),
                       doctest::Contains("cannot turn 1 channels into 2"), DataError);
  Transform badm;
  badm.mean = {0.1f, 0.2f};
  CHECK_THROWS_WITH_AS(to_model_input(ds, 0, 1, badm, rng),
                       doctest::Contains("mean has 2 values for 1 channels"), DataError);
  CHECK_THROWS_WITH_AS(to_model_input(ds, 3, 2, Transform{}, rng),
                       doctest::Contains("samples [3, 5) outside"), DataError);
}

TEST_CASE("dataset: random crop and flip are seeded and exact") {
  Dataset ds = small_dataset(1, 2, 4, 5);
  std::vector<int64_t> idx(300, 0);
  Transform t;
  t.random_crop = true;
  t.crop_padding = 1;
  t.random_flip = true;
  Rng rng(99);
  rng.advance(7);
  Tensor a = to_model_input(ds, idx, t, rng);
  Rng again(99);
  again.advance(7);
  Tensor b = to_model_input(ds, idx, t, again);
  REQUIRE(a.shape() == Shape{300, 2, 4, 5});
  for (int64_t k = 0; k < a.numel(); ++k) REQUIRE(a.data<float>()[k] == b.data<float>()[k]);
  // Each output is the zero-padded image shifted by some (dy, dx) in [-1, 1]^2, maybe mirrored;
  // every shift and both flips occur.
  std::set<std::tuple<int, int, bool>> seen;
  for (int n = 0; n < 300; ++n) {
    bool matched = false;
    for (int dy = -1; dy <= 1 && !matched; ++dy)
      for (int dx = -1; dx <= 1 && !matched; ++dx)
        for (bool flip : {false, true}) {
          bool ok = true;
          for (int c = 0; c < 2 && ok; ++c)
            for (int y = 0; y < 4 && ok; ++y)
              for (int x = 0; x < 5 && ok; ++x) {
                const int sy = y + dy, sx = (flip ? 4 - x : x) + dx;
                const float v =
                    sy >= 0 && sy < 4 && sx >= 0 && sx < 5 ? px(ds, 0, c, sy, sx) : 0.0f;
                ok = a.data<float>()[((n * 2 + c) * 4 + y) * 5 + x] == v;
              }
          if (ok) {
            seen.insert({dy, dx, flip});
            matched = true;
            break;
          }
        }
    REQUIRE(matched);
  }
  CHECK(seen.size() == 18);
  // A different stream position gives different draws.
  Rng other(99);
  Tensor c = to_model_input(ds, idx, t, other);
  int differ = 0;
  for (int64_t k = 0; k < c.numel(); ++k) differ += c.data<float>()[k] != a.data<float>()[k];
  CHECK(differ > 0);
}

TEST_CASE("dataset: shuffled_indices is a seeded permutation") {
  const auto p = shuffled_indices(1000, 7, 0);
  std::vector<int64_t> s = p;
  std::sort(s.begin(), s.end());
  for (int64_t i = 0; i < 1000; ++i) REQUIRE(s[size_t(i)] == i);
  CHECK(p == shuffled_indices(1000, 7, 0));
  CHECK(p != shuffled_indices(1000, 7, 1));
  CHECK(p != shuffled_indices(1000, 8, 0));
  int fixed = 0;
  for (int64_t i = 0; i < 1000; ++i) fixed += p[size_t(i)] == i;
  CHECK(fixed < 10);
  CHECK(shuffled_indices(0, 1, 0).empty());
  CHECK(shuffled_indices(1, 1, 0) == std::vector<int64_t>{0});
}

TEST_CASE("dataset: Batcher matches direct calls, in order, and propagates errors") {
  Dataset ds = small_dataset(10, 1, 3, 3);
  Transform t;
  t.channels = 3;
  t.random_crop = true;
  t.crop_padding = 1;
  t.random_flip = true;
  t.mean = {0.5f};
  for (bool drop_last : {false, true}) {
    Batcher::Options o;
    o.batch_size = 3;
    o.seed = 42;
    o.epoch = 2;
    o.drop_last = drop_last;
    Batcher bt(ds, t, o);
    CHECK(bt.batches() == (drop_last ? 3 : 4));
    const auto order = shuffled_indices(10, 42, 2);
    int64_t b = 0;
    while (auto batch = bt.next()) {
      REQUIRE(batch->index == b);
      std::vector<int64_t> idx(order.begin() + b * 3,
                               order.begin() + std::min<int64_t>(b * 3 + 3, 10));
      CHECK(bt.batch_indices(b) == idx);
      Rng rng(42);
      rng.set_state(42, uint64_t(2 * 10 + b * 3));
      Tensor x = to_model_input(ds, idx, t, rng);
      REQUIRE(batch->x.shape() == x.shape());
      for (int64_t k = 0; k < x.numel(); ++k)
        REQUIRE(batch->x.data<float>()[k] == x.data<float>()[k]);
      REQUIRE(batch->y.numel() == int64_t(idx.size()));
      for (size_t i = 0; i < idx.size(); ++i) REQUIRE(batch->y.data<int32_t>()[i] == idx[i] % 3);
      ++b;
    }
    CHECK(b == bt.batches());
    CHECK_FALSE(bt.next().has_value());
    // Resuming mid-epoch: first_batch = 2 gives batches 2.. with the same content.
    o.first_batch = 2;
    Batcher late(ds, t, o);
    for (int64_t k = 2; k < late.batches(); ++k) {
      auto got = late.next();
      REQUIRE(got.has_value());
      REQUIRE(got->index == k);
      const Batcher::Batch want = late.make(k);
      for (int64_t i = 0; i < want.x.numel(); ++i)
        REQUIRE(got->x.data<float>()[i] == want.x.data<float>()[i]);
    }
    CHECK_FALSE(late.next().has_value());
  }
  {
    Batcher::Options o;
    o.shuffle = false;
    o.batch_size = 4;
    Batcher bt(ds, Transform{}, o);
    CHECK(bt.next()->y.to_vector() == std::vector<double>{0, 1, 2, 0});
  }  // destroyed while the worker holds a prepared batch: joins without hanging
  Transform bad;
  bad.channels = 2;
  Batcher::Options o;
  o.batch_size = 4;
  Batcher bt(ds, bad, o);
  CHECK_THROWS_WITH_AS(bt.next(), doctest::Contains("cannot turn 1 channels into 2"), DataError);
  CHECK_THROWS_AS(bt.next(), DataError);
  Batcher::Options zero;
  zero.batch_size = 0;
  CHECK_THROWS_AS(Batcher(ds, Transform{}, zero), DataError);
}

TEST_CASE("dataset: Fashion-MNIST (Debian dataset-fashion-mnist)") {
  const IdxPaths p = find_fashion_mnist();
  CHECK_FALSE(find_fashion_mnist("/nonexistent").found());
  if (!p.found()) {
    MESSAGE("skipped: dataset-fashion-mnist is not installed (tools/setup.sh --tests installs it)");
    return;
  }
  Dataset train = load_idx(p.train_images, p.train_labels);
  Dataset test = load_idx(p.test_images, p.test_labels);
  CHECK(train.images.shape() == Shape{60000, 1, 28, 28});
  CHECK(test.images.shape() == Shape{10000, 1, 28, 28});
  CHECK(train.n_classes == 10);
  CHECK(test.n_classes == 10);
  for (const Dataset* ds : {&train, &test}) {
    std::vector<int64_t> count(10, 0);
    for (int64_t i = 0; i < ds->size(); ++i) {
      const int32_t l = ds->labels.data<int32_t>()[i];
      REQUIRE((l >= 0 && l < 10));
      ++count[size_t(l)];
    }
    for (int64_t c : count) CHECK(c == ds->size() / 10);  // both splits are balanced
    float lo = 1, hi = 0;
    for (int64_t k = 0; k < ds->images.numel(); ++k)
      lo = std::min(lo, ds->images.data<float>()[k]),
      hi = std::max(hi, ds->images.data<float>()[k]);
    CHECK(lo == 0.0f);
    CHECK(hi == 1.0f);
  }
}
