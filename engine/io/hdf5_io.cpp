// HDF5 reading and writing with the HDF5 C API (engine/io/hdf5_io.h). DYNSIM_WITH_HDF5 (set by
// CMakeLists.txt) tells whether libhdf5 is linked; without it every function but
// hdf5_available() throws NotImplemented, so the rest of dynsim builds and runs without HDF5.
// Large datasets are chunked (about 256 KiB per chunk, whole trailing dimensions first) and
// stored with shuffle + gzip level 4; attributes are scalar variable-length UTF-8 strings.
#include "engine/io/hdf5_io.h"

#if DYNSIM_WITH_HDF5
#include <fcntl.h>
#include <hdf5.h>
#include <hdf5_hl.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <limits>
#include <set>
#endif

namespace dynsim {

#if DYNSIM_WITH_HDF5

namespace {

constexpr size_t kCompressBytes = size_t(64) << 10;  // smaller arrays are stored contiguous
constexpr size_t kChunkBytes = size_t(256) << 10;    // target size of one chunk

// Owns one HDF5 identifier and closes it with the matching H5?close.
class Handle {
 public:
  using Closer = herr_t (*)(hid_t);
  Handle(hid_t id, Closer closer) : id_(id), closer_(closer) {}
  ~Handle() { close(); }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  hid_t get() const { return id_; }
  // Closes now; the result tells whether HDF5 could flush and release the object.
  herr_t close() {
    herr_t rc = 0;
    if (id_ >= 0) rc = closer_(id_);
    id_ = -1;
    return rc;
  }

 private:
  hid_t id_;
  Closer closer_;
};

// HDF5 prints its error stack to stderr by default; dynsim reports errors itself, so printing
// is off while a function of this file runs and restored afterwards.
class QuietErrors {
 public:
  QuietErrors() {
    H5Eget_auto2(H5E_DEFAULT, &func_, &data_);
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  }
  ~QuietErrors() { H5Eset_auto2(H5E_DEFAULT, func_, data_); }
  QuietErrors(const QuietErrors&) = delete;
  QuietErrors& operator=(const QuietErrors&) = delete;

 private:
  H5E_auto2_t func_ = nullptr;
  void* data_ = nullptr;
};

// The most specific message on HDF5's error stack (where the failure was detected).
std::string hdf5_error() {
  std::string msg;
  H5Ewalk2(
      H5E_DEFAULT, H5E_WALK_UPWARD,
      [](unsigned n, const H5E_error2_t* e, void* out) -> herr_t {
        if (n == 0 && e->desc) *static_cast<std::string*>(out) = e->desc;
        return 0;
      },
      &msg);
  return msg.empty() ? std::string("HDF5 call failed") : msg;
}

// Returns id, or throws E with `what` and HDF5's message when the call failed (id < 0).
template <class E>
hid_t must(hid_t id, const std::string& what) {
  if (id < 0) throw E(concat(what, ": ", hdf5_error()));
  return id;
}

hid_t memory_type(DType t) {
  return t == DType::F32   ? H5T_NATIVE_FLOAT
         : t == DType::F64 ? H5T_NATIVE_DOUBLE
                           : H5T_NATIVE_INT32;
}
hid_t file_type(DType t) {
  return t == DType::F32 ? H5T_IEEE_F32LE : t == DType::F64 ? H5T_IEEE_F64LE : H5T_STD_I32LE;
}

// Checks a dataset path before anything is written: components separated by '/', none empty,
// "." or ".."; a leading '/' is allowed (HDF5's absolute path).
void check_dataset_path(const std::string& file, const std::string& name) {
  const std::string rel = !name.empty() && name[0] == '/' ? name.substr(1) : name;
  size_t start = 0;
  while (true) {
    const size_t end = rel.find('/', start);
    const std::string part = rel.substr(start, end == std::string::npos ? end : end - start);
    if (part.empty() || part == "." || part == "..")
      throw Error(concat("write_hdf5: ", file, ": dataset path '", name,
                         "' has an empty, '.' or '..' component"));
    if (end == std::string::npos) break;
    start = end + 1;
  }
}

// Chunk dimensions of about kChunkBytes: whole trailing dimensions while they fit, then as
// many rows of the next one as fit, 1 for the dimensions before it.
std::vector<hsize_t> chunk_dims(const std::vector<hsize_t>& dims, size_t elem_bytes) {
  std::vector<hsize_t> c(dims.size(), 1);
  size_t bytes = elem_bytes;
  int i = int(dims.size()) - 1;
  for (; i >= 0; --i) {
    if (bytes * dims[size_t(i)] > kChunkBytes) break;
    c[size_t(i)] = dims[size_t(i)];
    bytes *= dims[size_t(i)];
  }
  if (i >= 0) c[size_t(i)] = std::max<hsize_t>(1, kChunkBytes / bytes);
  return c;
}

void write_dataset(hid_t file, hid_t lcpl, const std::string& path, const std::string& name,
                   const Tensor& given) {
  // HDF5 has no standard bf16 type: bf16 is stored as f32 (the values widened exactly).
  const Tensor t = given.dtype() == DType::BF16 ? given.to_dtype(DType::F32) : given;
  const std::string where = concat(path, ": dataset '", name, "'");
  std::vector<hsize_t> dims;
  for (int d = 0; d < t.rank(); ++d) dims.push_back(hsize_t(t.dim(d)));
  Handle space(must<IoError>(t.rank() == 0 ? H5Screate(H5S_SCALAR)
                                           : H5Screate_simple(t.rank(), dims.data(), nullptr),
                             where),
               H5Sclose);
  Handle dcpl(must<IoError>(H5Pcreate(H5P_DATASET_CREATE), where), H5Pclose);
  if (t.rank() > 0 && t.numel() > 0 && t.nbytes() >= kCompressBytes &&
      H5Zfilter_avail(H5Z_FILTER_DEFLATE) > 0) {
    const std::vector<hsize_t> chunk = chunk_dims(dims, dtype_size(t.dtype()));
    if (H5Pset_chunk(dcpl.get(), t.rank(), chunk.data()) < 0 || H5Pset_shuffle(dcpl.get()) < 0 ||
        H5Pset_deflate(dcpl.get(), 4) < 0)
      throw IoError(concat(where, ": cannot set up compression: ", hdf5_error()));
  }
  Handle ds(must<IoError>(H5Dcreate2(file, name.c_str(), file_type(t.dtype()), space.get(), lcpl,
                                     dcpl.get(), H5P_DEFAULT),
                          concat(where, ": cannot create")),
            H5Dclose);
  if (t.numel() > 0 &&
      H5Dwrite(ds.get(), memory_type(t.dtype()), H5S_ALL, H5S_ALL, H5P_DEFAULT, t.raw()) < 0)
    throw IoError(concat(where, ": write failed: ", hdf5_error()));
  if (ds.close() < 0) throw IoError(concat(where, ": close failed: ", hdf5_error()));
}

void write_attribute(hid_t file, const std::string& path, const std::string& name,
                     const std::string& value) {
  const std::string where = concat(path, ": attribute '", name, "'");
  Handle type(must<IoError>(H5Tcopy(H5T_C_S1), where), H5Tclose);
  if (H5Tset_size(type.get(), H5T_VARIABLE) < 0 || H5Tset_cset(type.get(), H5T_CSET_UTF8) < 0)
    throw IoError(concat(where, ": ", hdf5_error()));
  Handle space(must<IoError>(H5Screate(H5S_SCALAR), where), H5Sclose);
  Handle attr(must<IoError>(
                  H5Acreate2(file, name.c_str(), type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT),
                  concat(where, ": cannot create")),
              H5Aclose);
  const char* text = value.c_str();
  if (H5Awrite(attr.get(), type.get(), &text) < 0)
    throw IoError(concat(where, ": write failed: ", hdf5_error()));
}

// Makes the temporary file's contents durable before the rename publishes it.
void sync_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw IoError(concat(path, ": cannot reopen to sync"));
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) throw IoError(concat(path, ": fsync failed"));
}

Handle open_for_reading(const std::string& path) {
  if (!std::filesystem::exists(path)) throw NoInputError(concat(path, ": no such file"));
  if (H5Fis_hdf5(path.c_str()) <= 0) throw DataError(concat(path, ": not an HDF5 file"));
  return Handle(must<DataError>(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT),
                                concat(path, ": cannot open")),
                H5Fclose);
}

Tensor read_dataset(hid_t file, const std::string& path, const std::string& name) {
  const std::string where = concat(path, ": dataset '", name, "'");
  Handle ds(must<DataError>(H5Dopen2(file, name.c_str(), H5P_DEFAULT), where), H5Dclose);
  Handle space(must<DataError>(H5Dget_space(ds.get()), where), H5Sclose);
  if (H5Sget_simple_extent_type(space.get()) == H5S_NULL)
    throw DataError(concat(where, " has no dataspace (H5S_NULL)"));
  const int rank = H5Sget_simple_extent_ndims(space.get());
  if (rank < 0 || rank > Shape::kMaxRank)
    throw DataError(
        concat(where, " has ", rank, " dimensions; at most ", Shape::kMaxRank, " are supported"));
  std::vector<hsize_t> dims(size_t(rank), 0);
  if (rank > 0) H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr);
  std::vector<int64_t> shape(dims.begin(), dims.end());
  Handle type(must<DataError>(H5Dget_type(ds.get()), where), H5Tclose);
  const H5T_class_t cls = H5Tget_class(type.get());
  const size_t size = H5Tget_size(type.get());
  auto read = [&](hid_t mem, void* buf) {
    if (H5Dread(ds.get(), mem, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0)
      throw DataError(concat(where, ": read failed: ", hdf5_error()));
  };
  if (cls == H5T_FLOAT && size <= 8) {
    const DType dt = size <= 4 ? DType::F32 : DType::F64;
    Tensor t = Tensor::empty(Shape(shape), dt);
    if (t.numel() > 0) read(memory_type(dt), t.raw());
    return t;
  }
  if (cls == H5T_INTEGER && size <= 8) {
    Tensor t = Tensor::empty(Shape(shape), DType::I32);
    std::vector<int64_t> v(size_t(t.numel()));
    if (t.numel() > 0) read(H5T_NATIVE_INT64, v.data());
    for (size_t i = 0; i < v.size(); ++i) {
      if (v[i] < std::numeric_limits<int32_t>::min() || v[i] > std::numeric_limits<int32_t>::max())
        throw DataError(concat(where, ": element ", i, " = ", v[i], " does not fit int32"));
      t.data<int32_t>()[i] = int32_t(v[i]);
    }
    return t;
  }
  throw DataError(concat(where, " has HDF5 type class ", int(cls), " of ", size,
                         " bytes; expected a float or an integer"));
}

}  // namespace

bool hdf5_available() {
  return true;
}

void write_hdf5(const std::string& path,
                const std::vector<std::pair<std::string, Tensor>>& datasets,
                const std::map<std::string, std::string>& attributes) {
  write_hdf5(path, datasets, attributes, Hdf5Layout{});
}

void write_hdf5(const std::string& path,
                const std::vector<std::pair<std::string, Tensor>>& given,
                const std::map<std::string, std::string>& attributes, const Hdf5Layout& layout) {
  // The dimensions' lengths, and a 0..n-1 coordinate for each one without a dataset.
  std::vector<std::pair<std::string, Tensor>> datasets = given;
  std::map<std::string, int64_t> dim_len;
  std::map<std::string, const Tensor*> by_name;
  for (const auto& [name, t] : given) by_name[name] = &t;
  for (const auto& [name, dims] : layout.dims) {
    const auto it = by_name.find(name);
    if (it == by_name.end())
      throw Error(concat("write_hdf5: ", path, ": dimensions for '", name, "', no such dataset"));
    if (int(dims.size()) != it->second->rank())
      throw Error(concat("write_hdf5: ", path, ": dataset '", name, "' is ", it->second->str(),
                         " but has ", dims.size(), " dimension names"));
    for (size_t d = 0; d < dims.size(); ++d) {
      const int64_t n = it->second->dim(int(d));
      const auto [pos, fresh] = dim_len.emplace(dims[d], n);
      if (!fresh && pos->second != n)
        throw Error(concat("write_hdf5: ", path, ": dimension '", dims[d], "' is ", pos->second,
                           " long and ", n, " long ('", name, "')"));
    }
  }
  for (const auto& [dim, n] : dim_len) {
    const auto it = by_name.find(dim);
    if (it != by_name.end()) {
      if (it->second->rank() != 1 || it->second->dim(0) != n)
        throw Error(concat("write_hdf5: ", path, ": coordinate '", dim, "' is ",
                           it->second->str(), ", expected [", n, "]"));
      continue;
    }
    Tensor c = Tensor::empty(Shape{n}, DType::I32);
    for (int64_t i = 0; i < n; ++i) c.data<int32_t>()[i] = int32_t(i);
    datasets.emplace_back(dim, c);
  }
  // Everything is checked before the file is created.
  std::set<std::string> names;
  for (const auto& [name, t] : datasets) {
    check_dataset_path(path, name);
    const std::string key = name[0] == '/' ? name.substr(1) : name;
    if (!names.insert(key).second)
      throw Error(concat("write_hdf5: ", path, ": dataset '", name, "' given twice"));
    if (!t.defined() || !t.is_cpu())
      throw Error(concat("write_hdf5: ", path, ": dataset '", name, "' is ",
                         t.defined() ? t.str() : std::string("undefined"),
                         "; expected a host tensor"));
  }
  for (const std::string& n : names)
    for (size_t p = n.find('/'); p != std::string::npos; p = n.find('/', p + 1))
      if (names.count(n.substr(0, p)))
        throw Error(concat("write_hdf5: ", path, ": '", n.substr(0, p),
                           "' is a dataset and also the group of '", n, "'"));
  for (const auto& [name, value] : attributes)
    if (name.empty()) throw Error(concat("write_hdf5: ", path, ": an attribute has no name"));

  QuietErrors quiet;
  const std::string tmp = concat(path, ".tmp.", ::getpid());
  try {
    Handle file(H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose);
    if (file.get() < 0)
      throw IoError(concat(path, ": cannot create the temporary file ", tmp, ": ", hdf5_error()));
    {
      Handle lcpl(must<IoError>(H5Pcreate(H5P_LINK_CREATE), path), H5Pclose);
      if (H5Pset_create_intermediate_group(lcpl.get(), 1) < 0)
        throw IoError(concat(path, ": ", hdf5_error()));
      for (const auto& [name, t] : datasets) write_dataset(file.get(), lcpl.get(), path, name, t);
      for (const auto& [name, value] : attributes) write_attribute(file.get(), path, name, value);
      // Dimension scales: each dimension's dataset becomes a scale named after it, attached to
      // every dataset that uses the dimension.
      for (const auto& [dim, n] : dim_len) {
        Handle sc(must<IoError>(H5Dopen2(file.get(), dim.c_str(), H5P_DEFAULT), path), H5Dclose);
        if (H5DSset_scale(sc.get(), dim.c_str()) < 0)
          throw IoError(concat(path, ": dimension '", dim, "': ", hdf5_error()));
      }
      for (const auto& [name, dims] : layout.dims) {
        Handle ds(must<IoError>(H5Dopen2(file.get(), name.c_str(), H5P_DEFAULT), path), H5Dclose);
        for (size_t d = 0; d < dims.size(); ++d) {
          if (dims[d] == name) continue;  // a coordinate is its own scale
          Handle sc(must<IoError>(H5Dopen2(file.get(), dims[d].c_str(), H5P_DEFAULT), path),
                    H5Dclose);
          if (H5DSattach_scale(ds.get(), sc.get(), unsigned(d)) < 0)
            throw IoError(concat(path, ": attaching '", dims[d], "' to '", name, "': ",
                                 hdf5_error()));
        }
      }
      for (const auto& [name, attrs] : layout.attributes) {
        Handle ds(must<IoError>(H5Dopen2(file.get(), name.c_str(), H5P_DEFAULT),
                                concat(path, ": attributes for '", name, "', no such dataset")),
                  H5Dclose);
        for (const auto& [k, v] : attrs) write_attribute(ds.get(), path, k, v);
      }
    }
    if (file.close() < 0) throw IoError(concat(path, ": closing ", tmp, " failed: ", hdf5_error()));
    sync_file(tmp);
    std::error_code ec;
    std::filesystem::rename(tmp, path, ec);
    if (ec) throw IoError(concat(path, ": rename failed: ", ec.message()));
  } catch (...) {
    std::remove(tmp.c_str());
    throw;
  }
}

std::map<std::string, Tensor> read_hdf5(const std::string& path) {
  QuietErrors quiet;
  Handle file = open_for_reading(path);
  // Collect the hard links first: the callback runs inside HDF5, where nothing may throw.
  std::vector<std::string> links;
  const herr_t rc = H5Lvisit(
      file.get(), H5_INDEX_NAME, H5_ITER_INC,
      [](hid_t, const char* name, const H5L_info_t* info, void* out) -> herr_t {
        if (info->type == H5L_TYPE_HARD)
          static_cast<std::vector<std::string>*>(out)->push_back(name);
        return 0;
      },
      &links);
  if (rc < 0) throw DataError(concat(path, ": cannot list the contents: ", hdf5_error()));
  std::map<std::string, Tensor> out;
  for (const std::string& name : links) {
    Handle obj(must<DataError>(H5Oopen(file.get(), name.c_str(), H5P_DEFAULT),
                               concat(path, ": '", name, "'")),
               H5Oclose);
    if (H5Iget_type(obj.get()) == H5I_DATASET) out[name] = read_dataset(file.get(), path, name);
  }
  return out;
}

std::map<std::string, std::string> read_hdf5_attributes(const std::string& path) {
  QuietErrors quiet;
  Handle file = open_for_reading(path);
  std::vector<std::string> names;
  const herr_t rc = H5Aiterate2(
      file.get(), H5_INDEX_NAME, H5_ITER_INC, nullptr,
      [](hid_t, const char* name, const H5A_info_t*, void* out) -> herr_t {
        static_cast<std::vector<std::string>*>(out)->push_back(name);
        return 0;
      },
      &names);
  if (rc < 0) throw DataError(concat(path, ": cannot list the attributes: ", hdf5_error()));
  std::map<std::string, std::string> out;
  for (const std::string& name : names) {
    const std::string where = concat(path, ": attribute '", name, "'");
    Handle attr(must<DataError>(H5Aopen(file.get(), name.c_str(), H5P_DEFAULT), where), H5Aclose);
    Handle type(must<DataError>(H5Aget_type(attr.get()), where), H5Tclose);
    Handle space(must<DataError>(H5Aget_space(attr.get()), where), H5Sclose);
    if (H5Tget_class(type.get()) != H5T_STRING ||
        H5Sget_simple_extent_type(space.get()) != H5S_SCALAR)
      throw DataError(concat(where, " is not a scalar string"));
    if (H5Tis_variable_str(type.get()) > 0) {
      char* text = nullptr;
      if (H5Aread(attr.get(), type.get(), &text) < 0)
        throw DataError(concat(where, ": read failed: ", hdf5_error()));
      out[name] = text ? text : "";
      H5free_memory(text);
    } else {
      std::string text(H5Tget_size(type.get()), '\0');
      if (H5Aread(attr.get(), type.get(), text.data()) < 0)
        throw DataError(concat(where, ": read failed: ", hdf5_error()));
      out[name] = text.substr(0, text.find('\0'));
    }
  }
  return out;
}

#else  // no HDF5 in this build

namespace {
[[noreturn]] void no_hdf5(const std::string& path) {
  throw NotImplemented(concat(path, ": this build of dynsim has no HDF5 support (install ",
                              "libhdf5-dev, then reconfigure and rebuild)"));
}
}  // namespace

bool hdf5_available() {
  return false;
}
void write_hdf5(const std::string& path, const std::vector<std::pair<std::string, Tensor>>&,
                const std::map<std::string, std::string>&) {
  no_hdf5(path);
}
void write_hdf5(const std::string& path, const std::vector<std::pair<std::string, Tensor>>&,
                const std::map<std::string, std::string>&, const Hdf5Layout&) {
  no_hdf5(path);
}
std::map<std::string, Tensor> read_hdf5(const std::string& path) {
  no_hdf5(path);
}
std::map<std::string, std::string> read_hdf5_attributes(const std::string& path) {
  no_hdf5(path);
}

#endif

}  // namespace dynsim
