// HDF5 files for simulation outputs (optional at build time: libhdf5-dev; hdf5_available()).
// write_hdf5 stores f32/f64/i32 host tensors (bf16 as f32, widened exactly) as datasets at
// slash-separated paths ("response_avg/V1"; groups are created as needed), arrays of 64 KiB or
// more chunked and gzip-compressed, plus UTF-8 string attributes on the root group. It writes a
// temporary file beside the target and renames it into place, so a failed write never leaves a
// partial file.
// read_hdf5 returns every dataset by path (for tests and tools).
#pragma once
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "engine/core/tensor.h"

namespace dynsim {

// Whether this build has HDF5; without it the functions below throw NotImplemented.
bool hdf5_available();

// Error for an undefined or device tensor, an empty or duplicate dataset path, or a path that
// is both a dataset and a group ("a" and "a/b"); IoError when the file cannot be written.
void write_hdf5(const std::string& path,
                const std::vector<std::pair<std::string, Tensor>>& datasets,
                const std::map<std::string, std::string>& attributes = {});

// Named dimensions (netCDF-4's dimension scales, so xarray's h5netcdf engine and netCDF readers
// see them): dims gives a dataset one name per dimension; a dimension with a dataset of its own
// name (1-D, its length) has that dataset as its coordinate, else one is written holding
// 0..n-1 (i32). Error when a dimension has two lengths or a dataset the wrong number of names.
// attributes: string attributes per dataset (e.g. CF's "coordinates").
struct Hdf5Layout {
  std::map<std::string, std::vector<std::string>> dims;
  std::map<std::string, std::map<std::string, std::string>> attributes;
};
void write_hdf5(const std::string& path,
                const std::vector<std::pair<std::string, Tensor>>& datasets,
                const std::map<std::string, std::string>& attributes, const Hdf5Layout& layout);

// NoInputError when the file is missing; DataError when it is not HDF5 or holds a dataset that
// is not float/integer (integers become I32, range-checked) or has more than 6 dimensions.
std::map<std::string, Tensor> read_hdf5(const std::string& path);
// The root group's string attributes; DataError for an attribute of another type.
std::map<std::string, std::string> read_hdf5_attributes(const std::string& path);

}  // namespace dynsim
