// Internal declarations shared by the dataset sources (not part of dataset.h's API): the reader
// helpers and the bilinear resample, defined once in dataset.cpp and used by the readers
// dataset_idx.cpp, dataset_cifar.cpp, dataset_npy.cpp, dataset_npz.cpp and dataset_images.cpp.
#pragma once
#include <cstdint>
#include <string>

#include "engine/core/tensor.h"
#include "engine/io/dataset.h"

namespace dynsim::data::detail {

// Defined in dataset.cpp.
void require_file(const std::string& path);      // NoInputError if not a regular file
std::string read_file(const std::string& path);  // the whole file
int check_labels(const Tensor& labels, const std::string& what, int limit);
void resize_bilinear(const float* src, int64_t C, int64_t h, int64_t w, float* dst, int64_t H,
                     int64_t W);
// Defined in dataset_npy.cpp (also used by dataset_npz.cpp).
Dataset make_from_arrays(const Tensor& im, const std::string& im_descr, const std::string& im_what,
                         const Tensor& lb, const std::string& lb_what, const std::string& source);

inline float u8_to_unit(unsigned char v) {
  return float(v) / 255.0f;
}

}  // namespace dynsim::data::detail
