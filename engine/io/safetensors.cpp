// safetensors reader and writer (engine/io/safetensors.h). The reader validates everything the
// format promises (header bounds, JSON, dtypes, sizes, offsets, full coverage of the data section
// without holes or overlaps, unique names) before it allocates, and errors name the file and the
// tensor. The writer lays tensors out in name order behind a space-padded header.
#include "engine/io/safetensors.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <vector>

#include "engine/io/atomic_file.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "safetensors data are little-endian; this reader copies bytes as they are");

namespace dynsim {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// A header longer than this is not a weight file (the reference implementation uses 100 MB).
constexpr uint64_t kMaxHeaderBytes = uint64_t(100) << 20;

enum class Src { F32, F64, I32, I64, I16, I8, U8, Bool, BF16, F16 };

struct SrcType {
  const char* name;
  Src src;
  size_t bytes;
  DType out;
};

constexpr SrcType kSrcTypes[] = {
    {"F32", Src::F32, 4, DType::F32},   {"F64", Src::F64, 8, DType::F64},
    {"I32", Src::I32, 4, DType::I32},   {"I64", Src::I64, 8, DType::I32},
    {"I16", Src::I16, 2, DType::I32},   {"I8", Src::I8, 1, DType::I32},
    {"U8", Src::U8, 1, DType::I32},     {"BOOL", Src::Bool, 1, DType::I32},
    {"BF16", Src::BF16, 2, DType::F32}, {"F16", Src::F16, 2, DType::F32},
};

struct Entry {
  std::string name;
  const SrcType* type = nullptr;
  Shape shape;
  uint64_t begin = 0, end = 0;  // relative to the start of the data section
};

// IEEE binary16 -> binary32; every half value is representable, so this is exact.
float half_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    const float mag = std::ldexp(float(mant), -24);  // zero or subnormal: mant * 2^-24
    return sign ? -mag : mag;
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (mant << 13);  // inf / nan (payload kept)
  } else {
    bits = sign | ((exp + 112) << 23) | (mant << 13);  // rebias 15 -> 127
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// bfloat16 is the top half of a binary32.
float bf16_to_float(uint16_t h) {
  const uint32_t bits = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

template <class T>
T load_le(const unsigned char* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

// A non-negative integer that fits in uint64 (JSON may hold negatives, floats, strings).
bool as_u64(const json& v, uint64_t& out) {
  if (v.is_number_unsigned()) {
    out = v.get<uint64_t>();
    return true;
  }
  if (v.is_number_integer() && v.get<int64_t>() >= 0) {
    out = uint64_t(v.get<int64_t>());
    return true;
  }
  return false;
}

Entry parse_entry(const std::string& path, const std::string& name, const json& v,
                  uint64_t buffer_bytes) {
  const std::string where = concat(path, ": tensor '", name, "': ");
  if (!v.is_object()) throw DataError(concat(where, "header entry is not a JSON object"));
  for (const char* key : {"dtype", "shape", "data_offsets"})
    if (!v.contains(key)) throw DataError(concat(where, "header entry has no \"", key, "\""));
  Entry e;
  e.name = name;

  const json& dt = v["dtype"];
  if (!dt.is_string()) throw DataError(concat(where, "\"dtype\" is not a string"));
  const std::string dname = dt.get<std::string>();
  for (const SrcType& s : kSrcTypes)
    if (dname == s.name) e.type = &s;
  if (!e.type)
    throw DataError(concat(where, "unknown dtype '", dname,
                           "' (supported: F32, F64, I32, I64, I16, I8, U8, BOOL, BF16, F16)"));

  const json& sh = v["shape"];
  if (!sh.is_array()) throw DataError(concat(where, "\"shape\" is not an array"));
  if (sh.size() > size_t(Shape::kMaxRank))
    throw DataError(concat(where, "rank ", sh.size(), " exceeds the supported ", Shape::kMaxRank));
  std::vector<int64_t> dims;
  bool zero = false;
  uint64_t numel = 1;
  bool overflow = false;
  for (const json& d : sh) {
    uint64_t n;
    if (!as_u64(d, n) || n > uint64_t(INT64_MAX))
      throw DataError(concat(where, "shape ", sh.dump(), " holds a non-integer or negative size"));
    dims.push_back(int64_t(n));
    if (n == 0) {
      zero = true;
    } else if (!overflow && numel > uint64_t(INT64_MAX) / n) {
      overflow = true;
    } else if (!overflow) {
      numel *= n;
    }
  }
  // Shape::numel() multiplies every dimension, zeros or not: refuse products that overflow.
  if (overflow) throw DataError(concat(where, "shape ", sh.dump(), " has too many elements"));
  if (zero) numel = 0;
  e.shape = Shape(dims);

  const json& off = v["data_offsets"];
  if (!off.is_array() || off.size() != 2 || !as_u64(off[0], e.begin) || !as_u64(off[1], e.end))
    throw DataError(
        concat(where, "\"data_offsets\" ", off.dump(), " is not a pair of non-negative integers"));
  if (e.begin > e.end)
    throw DataError(concat(where, "data_offsets [", e.begin, ", ", e.end, "] are reversed"));
  if (e.end > buffer_bytes)
    throw DataError(concat(where, "data_offsets [", e.begin, ", ", e.end,
                           "] reach past the data section (", buffer_bytes, " bytes)"));
  const uint64_t have = e.end - e.begin;
  if (numel > have / e.type->bytes || numel * e.type->bytes != have)
    throw DataError(concat(where, "shape ", e.shape.str(), " of ", dname, " (", numel,
                           " elements of ", e.type->bytes, " bytes) does not match data_offsets [",
                           e.begin, ", ", e.end, "] (", have, " bytes)"));
  return e;
}

// The format requires the tensors to tile the data section exactly.
void check_coverage(const std::string& path, std::vector<Entry>& entries, uint64_t buffer_bytes) {
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t pos = 0;
  const Entry* prev = nullptr;
  for (const Entry& e : entries) {
    if (e.begin < pos)
      throw DataError(concat(path, ": tensor '", e.name, "' (bytes [", e.begin, ", ", e.end,
                             ")) overlaps tensor '", prev->name, "' (bytes [", prev->begin, ", ",
                             prev->end, "))"));
    if (e.begin > pos)
      throw DataError(concat(path, ": data section has a hole: bytes [", pos, ", ", e.begin,
                             ") before tensor '", e.name, "' belong to no tensor"));
    pos = e.end;
    prev = &e;
  }
  if (pos != buffer_bytes)
    throw DataError(concat(path, ": data section has ", buffer_bytes - pos,
                           " bytes after the last tensor (bytes [", pos, ", ", buffer_bytes,
                           ")) that belong to no tensor"));
}

void convert(const std::string& path, const Entry& e, const unsigned char* src, Tensor& t) {
  const size_t n = size_t(t.numel());
  switch (e.type->src) {
    case Src::F32:
    case Src::F64:
    case Src::I32:
      std::memcpy(t.raw(), src, t.nbytes());
      return;
    case Src::I64: {
      int32_t* dst = t.data<int32_t>();
      for (size_t i = 0; i < n; ++i) {
        const int64_t v = load_le<int64_t>(src + 8 * i);
        if (v < INT32_MIN || v > INT32_MAX)
          throw DataError(concat(path, ": tensor '", e.name, "': int64 value ", v, " at element ",
                                 i, " does not fit in int32"));
        dst[i] = int32_t(v);
      }
      return;
    }
    case Src::I16: {
      int32_t* dst = t.data<int32_t>();
      for (size_t i = 0; i < n; ++i) dst[i] = load_le<int16_t>(src + 2 * i);
      return;
    }
    case Src::I8: {
      int32_t* dst = t.data<int32_t>();
      for (size_t i = 0; i < n; ++i) dst[i] = static_cast<int8_t>(src[i]);
      return;
    }
    case Src::U8:
    case Src::Bool: {
      int32_t* dst = t.data<int32_t>();
      for (size_t i = 0; i < n; ++i) dst[i] = src[i];
      return;
    }
    case Src::BF16:
    case Src::F16: {
      float* dst = t.data<float>();
      const bool bf = e.type->src == Src::BF16;
      for (size_t i = 0; i < n; ++i) {
        const uint16_t h = load_le<uint16_t>(src + 2 * i);
        dst[i] = bf ? bf16_to_float(h) : half_to_float(h);
      }
      return;
    }
  }
}

// Writes all of buf or returns false with errno set.

}  // namespace

TensorFile load_safetensors(const std::string& path) {
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (!fs::exists(st)) throw NoInputError(concat(path, ": cannot open (no such file)"));
  if (!fs::is_regular_file(st)) throw NoInputError(concat(path, ": not a regular file"));
  std::ifstream f(path, std::ios::binary);
  if (!f) throw NoInputError(concat(path, ": cannot open"));
  const uint64_t file_bytes = fs::file_size(path, ec);
  if (ec) throw NoInputError(concat(path, ": cannot read the size: ", ec.message()));

  if (file_bytes < 8)
    throw DataError(concat(path, ": truncated: ", file_bytes,
                           " bytes, but a safetensors file starts with an 8-byte header length"));
  unsigned char len[8];
  if (!f.read(reinterpret_cast<char*>(len), 8)) throw DataError(concat(path, ": read failed"));
  const uint64_t header_bytes = load_le<uint64_t>(len);
  if (header_bytes > file_bytes - 8)
    throw DataError(concat(path, ": header length ", header_bytes, " exceeds the file size (",
                           file_bytes, " bytes, ", file_bytes - 8, " after the length field)"));
  if (header_bytes > kMaxHeaderBytes)
    throw DataError(concat(path, ": header length ", header_bytes, " is implausible (> ",
                           kMaxHeaderBytes, ")"));
  std::string header(size_t(header_bytes), '\0');
  if (!f.read(header.data(), std::streamsize(header.size())))
    throw DataError(concat(path, ": header truncated"));
  const uint64_t data_start = 8 + header_bytes;
  const uint64_t buffer_bytes = file_bytes - data_start;

  // nlohmann keeps the last of duplicate keys silently: find duplicates while parsing.
  std::string duplicate, duplicate_field, current;
  std::set<std::string> names, fields;
  auto watch = [&](int depth, json::parse_event_t ev, json& parsed) {
    if (ev != json::parse_event_t::key) return true;
    const std::string key = parsed.get<std::string>();
    if (depth == 1) {
      if (!names.insert(key).second && duplicate.empty()) duplicate = key;
      current = key;
      fields.clear();
    } else if (depth == 2) {
      if (!fields.insert(key).second && duplicate_field.empty())
        duplicate_field = concat("'", current, "' has the field \"", key, "\" twice");
    }
    return true;
  };
  json h;
  try {
    h = json::parse(header, watch);
  } catch (const json::exception& e) {
    throw DataError(concat(path, ": header is not valid JSON: ", e.what()));
  }
  if (!h.is_object()) throw DataError(concat(path, ": header is not a JSON object"));
  if (!duplicate.empty())
    throw DataError(concat(path, ": duplicate tensor name '", duplicate, "' in the header"));
  if (!duplicate_field.empty()) throw DataError(concat(path, ": header entry ", duplicate_field));

  TensorFile out;
  std::vector<Entry> entries;
  for (auto it = h.begin(); it != h.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (!it.value().is_object())
        throw DataError(concat(path, ": \"__metadata__\" is not a JSON object"));
      for (auto m = it.value().begin(); m != it.value().end(); ++m) {
        if (!m.value().is_string())
          throw DataError(
              concat(path, ": \"__metadata__\" value of '", m.key(), "' is not a string"));
        out.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    entries.push_back(parse_entry(path, it.key(), it.value(), buffer_bytes));
  }
  check_coverage(path, entries, buffer_bytes);

  // Sorted by offset and contiguous now: one forward pass over the data section.
  std::vector<unsigned char> buf;
  for (const Entry& e : entries) {
    Tensor t = Tensor::empty(e.shape, e.type->out);
    const size_t n = size_t(e.end - e.begin);
    if (n > 0) {
      buf.resize(n);
      f.seekg(std::streamoff(data_start + e.begin));
      if (!f.read(reinterpret_cast<char*>(buf.data()), std::streamsize(n)))
        throw DataError(concat(path, ": tensor '", e.name, "': read of ", n, " bytes at offset ",
                               data_start + e.begin, " failed"));
      convert(path, e, buf.data(), t);
    }
    out.tensors.emplace(e.name, std::move(t));
  }
  return out;
}

void save_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json h = nlohmann::ordered_json::object();
  if (!metadata.empty()) h["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    if (name == "__metadata__")
      throw Error(
          concat("save_safetensors ", path, ": '__metadata__' is reserved, not a tensor name"));
    if (!t.defined() || !t.is_cpu())
      throw Error(concat("save_safetensors ", path, ": tensor '", name, "' is ",
                         t.defined() ? t.str() : "undefined", "; needs a host tensor"));
    const char* dt = t.dtype() == DType::F32    ? "F32"
                     : t.dtype() == DType::F64  ? "F64"
                     : t.dtype() == DType::BF16 ? "BF16"
                                                : "I32";
    h[name] = {
        {"dtype", dt}, {"shape", t.shape().vec()}, {"data_offsets", {offset, offset + t.nbytes()}}};
    offset += t.nbytes();
  }
  std::string header;
  try {
    header = h.dump();
  } catch (const nlohmann::ordered_json::exception& e) {
    throw Error(
        concat("save_safetensors ", path, ": a name or metadata string is not UTF-8: ", e.what()));
  }
  header.append((8 - header.size() % 8) % 8, ' ');  // so that the data start 8-byte aligned
  unsigned char len[8];
  const uint64_t hl = header.size();
  std::memcpy(len, &hl, 8);

  Chunks chunks{{len, 8}, {header.data(), header.size()}};
  for (const auto& [name, t] : tensors) chunks.push_back({t.raw(), t.nbytes()});
  write_file_atomic(path, chunks);
}

}  // namespace dynsim
