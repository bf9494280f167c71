// The .npy pair reader (engine/io/dataset.h): an images array and a labels array, each parsed by
// engine/io/npy.h, turned into a Dataset (make_from_arrays, shared with the .npz reader in
// dataset_npz.cpp). The other readers are dataset_idx.cpp, dataset_cifar.cpp and
// dataset_images.cpp; the shared helpers, transforms and Batcher are in dataset.cpp
// (declarations in dataset_detail.h).
#include "engine/io/dataset.h"
#include "engine/io/dataset_detail.h"
#include "engine/io/npy.h"

namespace dynsim::data {
using detail::check_labels;
using detail::make_from_arrays;
using detail::read_file;
using detail::require_file;

// ---------------------------------------------------------------------------------------- npy

namespace {

void check_counts(const Tensor& images, const Tensor& labels, const std::string& what) {
  if (images.dim(0) != labels.dim(0))
    throw DataError(concat(what, ": ", labels.dim(0), " labels for ", images.dim(0), " images"));
}

// Images tensor from an npy array: NCHW f32 in [0, 1] for integers (scaled by 1/255).
Tensor images_from_array(const Tensor& a, const std::string& descr, const std::string& what) {
  Tensor t = a;
  if (t.rank() == 3) t = t.view(Shape{t.dim(0), 1, t.dim(1), t.dim(2)});
  if (t.rank() != 4)
    throw DataError(
        concat(what, ": images must be [N,H,W], [N,C,H,W] or [N,H,W,C], got ", a.shape().str()));
  bool nhwc = false;
  if (t.dim(1) == 1 || t.dim(1) == 3)
    nhwc = false;
  else if (t.dim(3) == 1 || t.dim(3) == 3)
    nhwc = true;
  else
    throw DataError(
        concat(what, ": images ", a.shape().str(), " have no channel dimension of size 1 or 3"));
  const int64_t N = t.dim(0), C = nhwc ? t.dim(3) : t.dim(1), H = nhwc ? t.dim(1) : t.dim(2),
                W = nhwc ? t.dim(2) : t.dim(3);
  const bool integer = t.dtype() == DType::I32;
  if (integer) {
    const int32_t* s = t.data<int32_t>();
    for (int64_t i = 0; i < t.numel(); ++i)
      if (s[i] < 0 || s[i] > 255)
        throw DataError(concat(what, ": integer image value ", s[i], " at element ", i,
                               " is outside [0, 255] (dtype ", descr, ")"));
  }
  Tensor out = Tensor::empty(Shape{N, C, H, W});
  float* o = out.data<float>();
  auto value = [&](int64_t i) -> float {
    if (integer) return float(t.data<int32_t>()[i]) / 255.0f;
    if (t.dtype() == DType::F64) return float(t.data<double>()[i]);
    return t.data<float>()[i];
  };
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t y = 0; y < H; ++y)
        for (int64_t x = 0; x < W; ++x) {
          const int64_t src = nhwc ? ((n * H + y) * W + x) * C + c : ((n * C + c) * H + y) * W + x;
          o[((n * C + c) * H + y) * W + x] = value(src);
        }
  return out;
}

}  // namespace

namespace detail {

Dataset make_from_arrays(const Tensor& im, const std::string& im_descr, const std::string& im_what,
                         const Tensor& lb, const std::string& lb_what, const std::string& source) {
  if (lb.rank() != 1 || lb.dtype() != DType::I32)
    throw DataError(concat(lb_what, ": labels must be an integer vector [N], got ",
                           dtype_name(lb.dtype()), lb.shape().str()));
  Dataset ds;
  ds.images = images_from_array(im, im_descr, im_what);
  ds.labels = lb;
  check_counts(ds.images, ds.labels, lb_what);
  ds.n_classes = check_labels(ds.labels, lb_what, 0);
  ds.source = source;
  return ds;
}

}  // namespace detail

Dataset load_npy_pair(const std::string& images_path, const std::string& labels_path) {
  require_file(images_path);
  require_file(labels_path);
  std::string descr;
  Tensor im = parse_npy(read_file(images_path), images_path, &descr);
  Tensor lb = load_npy(labels_path);
  return make_from_arrays(im, descr, images_path, lb, labels_path, images_path);
}

}  // namespace dynsim::data
