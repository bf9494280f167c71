// Labelled image datasets for training: readers for IDX (MNIST / Fashion-MNIST, plain or .gz),
// CIFAR-10/100 binaries, .npy pairs, .npz archives and class-per-folder image trees, all giving
// f32 images [N, C, H, W] in [0, 1] and i32 labels [N]; the model-input transforms (channel
// replication, resize or pad, seeded random crop and flip, per-channel normalisation); seeded
// epoch shuffles; and a Batcher that prepares the next batch on a background thread.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "engine/core/rng.h"
#include "engine/core/tensor.h"

namespace dynsim::data {

struct Dataset {
  Tensor images;  // f32 [N, C, H, W] in [0, 1]
  Tensor labels;  // i32 [N], each in [0, n_classes)
  int n_classes = 0;
  std::string source;  // where it was read from (for messages)
  int64_t size() const { return labels.defined() ? labels.dim(0) : 0; }
};

// All readers: a missing file or folder is NoInputError; corrupt content is DataError naming the
// file and the byte offset (or member / index) where it went wrong.

// IDX files (magic 0x00000803 images [N, H, W] u8, 0x00000801 labels [N] u8); either may be
// gzip-compressed (read through zlib, which passes plain files through). n_classes = max label + 1.
Dataset load_idx(const std::string& images_path, const std::string& labels_path);

// Debian's dataset-fashion-mnist files under `dir`; every path is "" unless all four exist.
struct IdxPaths {
  std::string train_images, train_labels, test_images, test_labels;
  bool found() const { return !train_images.empty(); }
};
IdxPaths find_fashion_mnist(const std::string& dir = "/usr/share/datasets/fashion-mnist");

// CIFAR binary version. dir_or_file: a folder holding data_batch_1..5.bin / test_batch.bin
// (CIFAR-10) or train.bin / test.bin (CIFAR-100), or one such file. Records are 1 label byte
// (CIFAR-100: coarse then fine; the fine label is used) + 3072 bytes of 32x32 RGB planes.
Dataset load_cifar(const std::string& dir_or_file, bool cifar100, bool train);

// Images [N, H, W], [N, C, H, W] (C in {1, 3}) or [N, H, W, C] (channels last, C in {1, 3});
// integer images (u1, i4, i8) must be in [0, 255] and are scaled by 1/255, float images are kept.
// Labels: an integer vector [N] of non-negative values; n_classes = max label + 1.
Dataset load_npy_pair(const std::string& images_path, const std::string& labels_path);
// An .npz archive (np.savez or np.savez_compressed) holding 'images' or 'x' and 'labels' or 'y'.
Dataset load_npz(const std::string& path);

// root/<class>/<image> with classes in sorted folder-name order and images in sorted file-name
// order (PNG, JPEG, BMP, GIF, PGM/PPM). Channels: 1 if the first image is grey, else 3 (alpha is
// dropped). Images are resized (bilinear) to height x width, or to the first image's size if 0.
Dataset load_image_folder(const std::string& root, int height = 0, int width = 0);

// From dataset images to model inputs, applied in this order: channel replication (1 -> 3),
// resize (bilinear, align_corners = false) or centred zero-pad / centre-crop to the output size,
// random crop (zero-pad by crop_padding on each side, cut out the output size at a random
// offset), random horizontal flip (p = 1/2), then (x - mean[c]) / std[c].
struct Transform {
  enum class Fit { Resize, Pad };
  int channels = 0;           // 0: keep; 3 replicates a grey image
  int height = 0, width = 0;  // 0: keep
  Fit fit = Fit::Resize;
  bool random_crop = false;
  int crop_padding = 0;
  bool random_flip = false;
  std::vector<float> mean, std;  // empty: none; one value per output channel or one for all
};

// [count, C_out, H_out, W_out] f32 for samples first..first+count-1 (or the listed indices).
// The random choices for the k-th sample use Philox counter rng.advance(count) + k, so the same
// Rng state gives the same batch.
Tensor to_model_input(const Dataset& ds, int64_t first, int64_t count, const Transform& t,
                      Rng& rng);
Tensor to_model_input(const Dataset& ds, const std::vector<int64_t>& indices, const Transform& t,
                      Rng& rng);
// Labels of the listed samples, i32 [indices.size()].
Tensor gather_labels(const Dataset& ds, const std::vector<int64_t>& indices);

// A permutation of 0..n-1 (Fisher-Yates on Philox), a function of (seed, epoch) only.
std::vector<int64_t> shuffled_indices(int64_t n, uint64_t seed, int64_t epoch);

// One epoch of batches, prepared one ahead on a background thread while the caller computes.
// Batch b holds samples order[b * batch_size ...] where order = shuffled_indices(N, seed, epoch)
// (or 0..N-1 without shuffle); its transform draws use Rng(seed) at offset
// epoch * N + b * batch_size. A failure in the worker is rethrown by next().
class Batcher {
 public:
  struct Options {
    int64_t batch_size = 32;
    bool shuffle = true;
    bool drop_last = false;  // skip a final partial batch
    uint64_t seed = 0;
    int64_t epoch = 0;
    int64_t first_batch = 0;  // start the epoch here (resuming mid-epoch)
  };
  struct Batch {
    Tensor x;           // f32 [B, C, H, W]
    Tensor y;           // i32 [B]
    int64_t index = 0;  // batch number within the epoch
  };
  Batcher(Dataset ds, Transform t, Options o);
  ~Batcher();
  Batcher(const Batcher&) = delete;
  Batcher& operator=(const Batcher&) = delete;

  int64_t batches() const { return n_batches_; }
  // The next batch, or nullopt after the last one.
  std::optional<Batch> next();
  // The sample indices of batch b (what the worker uses).
  std::vector<int64_t> batch_indices(int64_t b) const;
  // Batch b computed on the calling thread (the same result the worker gives).
  Batch make(int64_t b) const;

 private:
  void work();
  Dataset ds_;
  Transform t_;
  Options o_;
  std::vector<int64_t> order_;
  int64_t n_batches_ = 0;
  std::mutex m_;
  std::condition_variable cv_;
  std::optional<Batch> ready_;
  std::exception_ptr error_;
  bool done_ = false, stop_ = false;
  std::thread worker_;
};

}  // namespace dynsim::data
