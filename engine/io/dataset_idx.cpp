// The IDX reader (engine/io/dataset.h): MNIST / Fashion-MNIST image and label files, plain or
// gzip-compressed, and find_fashion_mnist() for Debian's dataset-fashion-mnist. The other
// readers are dataset_cifar.cpp, dataset_npy.cpp, dataset_npz.cpp and dataset_images.cpp; the
// shared helpers, transforms and Batcher are in dataset.cpp (declarations in dataset_detail.h).
#include <zlib.h>

#include <filesystem>

#include "engine/io/dataset.h"
#include "engine/io/dataset_detail.h"

namespace dynsim::data {
namespace fs = std::filesystem;
using detail::check_labels;
using detail::require_file;
using detail::u8_to_unit;

namespace {

// Whole file through zlib: gzread passes non-gzip files through unchanged.
std::string read_maybe_gz(const std::string& path) {
  require_file(path);
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f) throw NoInputError(concat(path, ": cannot open"));
  std::string out;
  char buf[1 << 16];
  for (;;) {
    int n = gzread(f, buf, sizeof buf);
    if (n < 0) {
      int err = 0;
      std::string msg = gzerror(f, &err);
      gzclose(f);
      throw DataError(concat(path, ": corrupt gzip data after ", out.size(),
                             " decompressed bytes (", msg, ")"));
    }
    if (n == 0) break;
    out.append(buf, size_t(n));
  }
  gzclose(f);
  return out;
}

uint32_t be32(const std::string& s, size_t at) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data() + at);
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | p[3];
}

}  // namespace

// ---------------------------------------------------------------------------------------- IDX

Dataset load_idx(const std::string& images_path, const std::string& labels_path) {
  const std::string im = read_maybe_gz(images_path);
  const std::string lb = read_maybe_gz(labels_path);
  auto header = [](const std::string& b, const std::string& path, uint32_t magic, size_t len,
                   const char* kind) {
    if (b.size() < 4) throw DataError(concat(path, ": IDX header truncated at offset ", b.size()));
    if (be32(b, 0) != magic)
      throw DataError(concat(path, ": bad magic 0x", std::hex, be32(b, 0), " at offset 0 (IDX ",
                             kind, " need 0x0000080", magic & 0xf, ")"));
    if (b.size() < len)
      throw DataError(concat(path, ": IDX header truncated at offset ", b.size()));
  };
  header(im, images_path, 0x00000803u, 16, "images");
  header(lb, labels_path, 0x00000801u, 8, "labels");
  const int64_t n = be32(im, 4), h = be32(im, 8), w = be32(im, 12), nl = be32(lb, 4);
  // The product in double first: a corrupt header must not overflow the size computation.
  const double want_d = double(n) * double(h) * double(w);
  const size_t want = want_d > double(im.size()) ? size_t(-1) : size_t(n) * size_t(h) * size_t(w);
  if (im.size() - 16 < want)
    throw DataError(concat(images_path, ": truncated: expected ", want_d,
                           " pixel bytes at offset 16, file has ", im.size() - 16));
  if (lb.size() - 8 < size_t(nl))
    throw DataError(concat(labels_path, ": truncated: expected ", nl,
                           " label bytes at offset 8, file has ", lb.size() - 8));
  if (nl != n)
    throw DataError(concat(labels_path, ": ", nl, " labels for ", n, " images in ", images_path));
  Dataset ds;
  ds.images = Tensor::empty(Shape{n, 1, h, w});
  float* x = ds.images.data<float>();
  const auto* src = reinterpret_cast<const unsigned char*>(im.data() + 16);
  for (size_t i = 0; i < want; ++i) x[i] = u8_to_unit(src[i]);
  ds.labels = Tensor::empty(Shape{n}, DType::I32);
  int32_t* y = ds.labels.data<int32_t>();
  for (int64_t i = 0; i < n; ++i) y[i] = static_cast<unsigned char>(lb[size_t(8 + i)]);
  ds.n_classes = check_labels(ds.labels, labels_path, 0);
  ds.source = images_path;
  return ds;
}

IdxPaths find_fashion_mnist(const std::string& dir) {
  IdxPaths p{dir + "/train-images-idx3-ubyte.gz", dir + "/train-labels-idx1-ubyte.gz",
             dir + "/t10k-images-idx3-ubyte.gz", dir + "/t10k-labels-idx1-ubyte.gz"};
  for (const std::string* s : {&p.train_images, &p.train_labels, &p.test_images, &p.test_labels})
    if (!fs::is_regular_file(*s)) return {};
  return p;
}

}  // namespace dynsim::data
