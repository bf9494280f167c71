// The CIFAR-10/100 binary reader (engine/io/dataset.h). The other readers are dataset_idx.cpp,
// dataset_npy.cpp, dataset_npz.cpp and dataset_images.cpp; the shared helpers, transforms and
// Batcher are in dataset.cpp (declarations in dataset_detail.h).
#include <filesystem>

#include "engine/io/dataset.h"
#include "engine/io/dataset_detail.h"

namespace dynsim::data {
namespace fs = std::filesystem;
using detail::read_file;
using detail::u8_to_unit;

// -------------------------------------------------------------------------------------- CIFAR

Dataset load_cifar(const std::string& dir_or_file, bool cifar100, bool train) {
  std::vector<std::string> files;
  if (fs::is_directory(dir_or_file)) {
    if (cifar100) {
      files.push_back((fs::path(dir_or_file) / (train ? "train.bin" : "test.bin")).string());
    } else if (train) {
      for (int i = 1; i <= 5; ++i)
        files.push_back((fs::path(dir_or_file) / concat("data_batch_", i, ".bin")).string());
    } else {
      files.push_back((fs::path(dir_or_file) / "test_batch.bin").string());
    }
  } else {
    files.push_back(dir_or_file);
  }
  const int label_bytes = cifar100 ? 2 : 1, limit = cifar100 ? 100 : 10;
  const size_t rec = size_t(label_bytes) + 3072;
  std::vector<std::string> blobs;
  int64_t n = 0;
  for (const auto& f : files) {
    blobs.push_back(read_file(f));
    const std::string& b = blobs.back();
    if (b.size() % rec != 0)
      throw DataError(concat(f, ": truncated record at offset ", b.size() / rec * rec, " (",
                             b.size() % rec, " of ", rec, " bytes; ",
                             cifar100 ? "CIFAR-100" : "CIFAR-10", " records are ", rec, " bytes)"));
    if (b.empty()) throw DataError(concat(f, ": empty file (no records at offset 0)"));
    n += int64_t(b.size() / rec);
  }
  Dataset ds;
  ds.images = Tensor::empty(Shape{n, 3, 32, 32});
  ds.labels = Tensor::empty(Shape{n}, DType::I32);
  float* x = ds.images.data<float>();
  int32_t* y = ds.labels.data<int32_t>();
  int64_t k = 0;
  for (size_t fi = 0; fi < files.size(); ++fi) {
    const std::string& b = blobs[fi];
    for (size_t off = 0; off < b.size(); off += rec, ++k) {
      const int lab = static_cast<unsigned char>(b[off + size_t(label_bytes) - 1]);
      if (lab >= limit)
        throw DataError(concat(files[fi], ": label ", lab, " at offset ",
                               off + size_t(label_bytes) - 1, " is out of range [0, ", limit, ")"));
      y[k] = lab;
      const auto* px = reinterpret_cast<const unsigned char*>(b.data() + off + size_t(label_bytes));
      for (int i = 0; i < 3072; ++i) x[k * 3072 + i] = u8_to_unit(px[i]);
    }
  }
  ds.n_classes = limit;
  ds.source = dir_or_file;
  return ds;
}

}  // namespace dynsim::data
