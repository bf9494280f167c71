// .npy reader and writer (engine/io/npy.h). Errors name the file and the byte offset.
#include "engine/io/npy.h"

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <vector>

#include "engine/io/atomic_file.h"

namespace dynsim {
namespace {

std::string header_value(const std::string& h, const std::string& key, const std::string& path) {
  size_t k = h.find("'" + key + "'");
  if (k == std::string::npos) throw DataError(concat(path, ": npy header has no '", key, "'"));
  size_t colon = h.find(':', k);
  if (colon == std::string::npos) throw DataError(concat(path, ": malformed npy header"));
  return h.substr(colon + 1);
}

}  // namespace

Tensor load_npy(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw NoInputError(concat(path, ": cannot open"));
  std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  if (f.bad()) throw IoError(concat(path, ": read failed"));
  return parse_npy(bytes, path);
}

Tensor parse_npy(const std::string& bytes, const std::string& path, std::string* descr_out) {
  size_t pos = 0;
  // Bounds-checked sequential reads from the in-memory file.
  auto read = [&](void* dst, size_t n) {
    if (bytes.size() - pos < n) return false;
    std::memcpy(dst, bytes.data() + pos, n);
    pos += n;
    return true;
  };
  char magic[8];
  if (!read(magic, 8) || std::memcmp(magic, "\x93NUMPY", 6) != 0)
    throw DataError(concat(path, ": not a .npy file (bad magic at offset 0)"));
  uint32_t hlen = 0;
  if (magic[6] == 1) {
    unsigned char b[2];
    if (!read(b, 2)) throw DataError(concat(path, ": truncated at offset 8"));
    hlen = b[0] | (b[1] << 8);
  } else if (magic[6] == 2 || magic[6] == 3) {
    unsigned char b[4];
    if (!read(b, 4)) throw DataError(concat(path, ": truncated at offset 8"));
    hlen = b[0] | (b[1] << 8) | (b[2] << 16) | (uint32_t(b[3]) << 24);
  } else {
    throw DataError(concat(path, ": unsupported npy version ", int(magic[6])));
  }
  if (hlen > (1u << 20))
    throw DataError(concat(path, ": npy header length ", hlen, " is implausible"));
  std::string h(hlen, '\0');
  if (!read(h.data(), hlen)) throw DataError(concat(path, ": header truncated"));
  const size_t data_offset = pos;

  std::string descr = header_value(h, "descr", path);
  size_t q1 = descr.find('\''), q2 = descr.find('\'', q1 + 1);
  if (q1 == std::string::npos || q2 == std::string::npos)
    throw DataError(concat(path, ": malformed descr in npy header"));
  descr = descr.substr(q1 + 1, q2 - q1 - 1);
  if (header_value(h, "fortran_order", path).find("True") < 8)
    throw DataError(concat(path, ": Fortran-ordered arrays are not supported (save with C order)"));
  std::string sh = header_value(h, "shape", path);
  size_t p1 = sh.find('('), p2 = sh.find(')');
  if (p1 == std::string::npos || p2 == std::string::npos)
    throw DataError(concat(path, ": malformed shape in npy header"));
  std::vector<int64_t> dims;
  std::string inner = sh.substr(p1 + 1, p2 - p1 - 1);
  for (size_t pos = 0; pos < inner.size();) {
    size_t comma = inner.find(',', pos);
    std::string tok =
        inner.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    if (tok.find_first_not_of(" ") != std::string::npos) {
      try {
        dims.push_back(std::stoll(tok));
      } catch (...) {
        throw DataError(concat(path, ": bad dimension '", tok, "' in npy header"));
      }
    }
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  Shape shape(dims);

  size_t src_size = 0;
  DType out = DType::F32;
  if (descr == "<f4")
    src_size = 4, out = DType::F32;
  else if (descr == "<f8")
    src_size = 8, out = DType::F64;
  else if (descr == "<i4")
    src_size = 4, out = DType::I32;
  else if (descr == "<i8")
    src_size = 8, out = DType::I32;
  else if (descr == "|b1" || descr == "|u1")
    src_size = 1, out = DType::I32;
  else
    throw DataError(concat(path, ": unsupported dtype '", descr, "' (f4, f8, i4, i8, b1, u1)"));

  if (descr_out) *descr_out = descr;
  const size_t n = size_t(shape.numel());
  const size_t want = n * src_size;
  if (bytes.size() - data_offset < want)
    throw DataError(concat(path, ": data truncated: expected ", want, " bytes at offset ",
                           data_offset, ", file has ", bytes.size() - data_offset, " there"));
  const char* buf = bytes.data() + data_offset;
  Tensor t = Tensor::empty(shape, out);
  if (descr == "<i8") {
    auto* dst = t.data<int32_t>();
    for (size_t i = 0; i < n; ++i) {
      int64_t v;
      std::memcpy(&v, buf + 8 * i, 8);
      if (v < INT32_MIN || v > INT32_MAX)
        throw DataError(concat(path, ": int64 value ", v, " at offset ", data_offset + 8 * i,
                               " does not fit in int32"));
      dst[i] = int32_t(v);
    }
  } else if (src_size == 1) {
    auto* dst = t.data<int32_t>();
    for (size_t i = 0; i < n; ++i) dst[i] = static_cast<unsigned char>(buf[i]);
  } else if (want > 0) {
    std::memcpy(t.raw(), buf, want);
  }
  return t;
}

void save_npy_raw(const std::string& path, const std::string& descr, const Shape& shape,
                  const void* data, size_t bytes) {
  std::string h = concat("{'descr': '", descr, "', 'fortran_order': False, 'shape': (");
  for (int i = 0; i < shape.rank(); ++i)
    h += concat(shape[i], shape.rank() == 1 ? "," : (i + 1 < shape.rank() ? ", " : ""));
  h += "), }";
  while ((10 + h.size() + 1) % 64 != 0) h += ' ';
  h += '\n';
  const unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0,
                                 static_cast<unsigned char>(h.size() & 0xff),
                                 static_cast<unsigned char>(h.size() >> 8)};
  write_file_atomic(path, Chunks{{pre, 10}, {h.data(), h.size()}, {data, bytes}});
}

void save_npy(const std::string& path, const Tensor& t) {
  if (!t.defined() || !t.is_cpu()) throw Error(concat("save_npy ", path, ": needs a host tensor"));
  // numpy has no bf16: stored as f32 (the values widened exactly).
  if (t.dtype() == DType::BF16) return save_npy(path, t.to_dtype(DType::F32));
  const char* descr = t.dtype() == DType::F32 ? "<f4" : t.dtype() == DType::F64 ? "<f8" : "<i4";
  save_npy_raw(path, descr, t.shape(), t.raw(), t.nbytes());
}

}  // namespace dynsim
