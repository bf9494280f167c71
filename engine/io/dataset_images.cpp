// The image-folder reader (engine/io/dataset.h): root/<class>/<image>, decoded by stb_image.
// The other readers are dataset_idx.cpp, dataset_cifar.cpp, dataset_npy.cpp and
// dataset_npz.cpp; the shared helpers (resize_bilinear among them), transforms and Batcher are
// in dataset.cpp (declarations in dataset_detail.h).
#include <stb/stb_image.h>  // the implementation is compiled in engine/io/stb_image.cpp

#include <algorithm>
#include <cctype>
#include <filesystem>

#include "engine/io/dataset.h"
#include "engine/io/dataset_detail.h"

namespace dynsim::data {
namespace fs = std::filesystem;
using detail::resize_bilinear;
using detail::u8_to_unit;

// ------------------------------------------------------------------------------ image folders

namespace {

bool is_image_file(const fs::path& p) {
  std::string e = p.extension().string();
  for (char& ch : e) ch = char(std::tolower(static_cast<unsigned char>(ch)));
  for (const char* ok : {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".pgm", ".ppm", ".pnm"})
    if (e == ok) return true;
  return false;
}

}  // namespace

Dataset load_image_folder(const std::string& root, int height, int width) {
  if (!fs::is_directory(root)) throw NoInputError(concat(root, ": no such image folder"));
  std::vector<fs::path> classes;
  for (const auto& e : fs::directory_iterator(root))
    if (e.is_directory()) classes.push_back(e.path());
  std::sort(classes.begin(), classes.end());
  if (classes.empty()) throw DataError(concat(root, ": no class subfolders (empty image folder)"));
  std::vector<std::pair<std::string, int>> files;
  for (size_t c = 0; c < classes.size(); ++c) {
    std::vector<std::string> in_class;
    for (const auto& e : fs::directory_iterator(classes[c]))
      if (e.is_regular_file() && is_image_file(e.path())) in_class.push_back(e.path().string());
    if (in_class.empty())
      throw DataError(concat(classes[c].string(), ": class folder has no images"));
    std::sort(in_class.begin(), in_class.end());
    for (auto& f : in_class) files.emplace_back(f, int(c));
  }
  int C = 0;
  int64_t H = height, W = width;
  Tensor images, labels = Tensor::empty(Shape{int64_t(files.size())}, DType::I32);
  std::vector<float> plane;
  for (size_t i = 0; i < files.size(); ++i) {
    const std::string& f = files[i].first;
    int w = 0, h = 0, n = 0;
    if (i == 0) {
      if (!stbi_info(f.c_str(), &w, &h, &n))
        throw DataError(concat(f, ": cannot decode image (", stbi_failure_reason(), ")"));
      C = n >= 3 ? 3 : 1;
    }
    unsigned char* px = stbi_load(f.c_str(), &w, &h, &n, C);
    if (!px) throw DataError(concat(f, ": cannot decode image (", stbi_failure_reason(), ")"));
    if (i == 0) {
      if (H <= 0) H = h;
      if (W <= 0) W = w;
      images = Tensor::empty(Shape{int64_t(files.size()), C, H, W});
    }
    plane.resize(size_t(C) * size_t(h) * size_t(w));
    for (int c = 0; c < C; ++c)
      for (int64_t k = 0; k < int64_t(h) * w; ++k)
        plane[size_t(c * int64_t(h) * w + k)] = u8_to_unit(px[k * C + c]);
    stbi_image_free(px);
    float* dst = images.data<float>() + int64_t(i) * C * H * W;
    if (h == H && w == W)
      std::copy(plane.begin(), plane.end(), dst);
    else
      resize_bilinear(plane.data(), C, h, w, dst, H, W);
    labels.data<int32_t>()[i] = files[i].second;
  }
  Dataset ds;
  ds.images = images;
  ds.labels = labels;
  ds.n_classes = int(classes.size());
  ds.source = root;
  return ds;
}

}  // namespace dynsim::data
