// The .npz reader (engine/io/dataset.h): a small zip reader (central directory, zip64, stored
// and deflated members, CRC check) that hands the members to the .npy parser (engine/io/npy.h)
// and to make_from_arrays (dataset_npy.cpp). The other readers are dataset_idx.cpp,
// dataset_cifar.cpp, dataset_npy.cpp and dataset_images.cpp; the shared helpers, transforms and
// Batcher are in dataset.cpp (declarations in dataset_detail.h).
#include <zlib.h>

#include "engine/io/dataset.h"
#include "engine/io/dataset_detail.h"
#include "engine/io/npy.h"

namespace dynsim::data {
using detail::make_from_arrays;
using detail::read_file;

// ---------------------------------------------------------------------------------------- npz

namespace {

uint32_t le32(const std::string& s, size_t at) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data() + at);
  return uint32_t(p[0]) | (uint32_t(p[1]) << 8) | (uint32_t(p[2]) << 16) | (uint32_t(p[3]) << 24);
}
uint16_t le16(const std::string& s, size_t at) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data() + at);
  return uint16_t(p[0] | (p[1] << 8));
}
uint64_t le64(const std::string& s, size_t at) {
  return le32(s, at) | (uint64_t(le32(s, at + 4)) << 32);
}

struct ZipMember {
  std::string name;
  uint16_t method = 0;
  uint32_t crc = 0;
  uint64_t csize = 0, usize = 0, local_offset = 0;
};

std::vector<ZipMember> zip_directory(const std::string& z, const std::string& path) {
  // End of central directory: 22 bytes + comment, searched backwards.
  if (z.size() < 22) throw DataError(concat(path, ": not a zip archive (", z.size(), " bytes)"));
  size_t eocd = std::string::npos;
  for (size_t i = z.size() - 22 + 1; i-- > 0 && z.size() - i <= 22 + 65535;)
    if (le32(z, i) == 0x06054b50u) {
      eocd = i;
      break;
    }
  if (eocd == std::string::npos)
    throw DataError(concat(path, ": no zip end-of-central-directory record (not an npz?)"));
  uint64_t count = le16(z, eocd + 10), cd_off = le32(z, eocd + 16);
  if ((count == 0xffff || cd_off == 0xffffffffu) && eocd >= 20 &&
      le32(z, eocd - 20) == 0x07064b50u) {
    const uint64_t z64 = le64(z, eocd - 20 + 8);
    if (z64 + 56 > z.size() || le32(z, size_t(z64)) != 0x06064b50u)
      throw DataError(concat(path, ": bad zip64 end record at offset ", z64));
    count = le64(z, size_t(z64) + 32);
    cd_off = le64(z, size_t(z64) + 48);
  }
  std::vector<ZipMember> out;
  size_t p = size_t(cd_off);
  for (uint64_t k = 0; k < count; ++k) {
    if (p + 46 > z.size() || le32(z, p) != 0x02014b50u)
      throw DataError(concat(path, ": bad zip central directory entry at offset ", p));
    ZipMember m;
    m.method = le16(z, p + 10);
    m.crc = le32(z, p + 16);
    m.csize = le32(z, p + 20);
    m.usize = le32(z, p + 24);
    const size_t nlen = le16(z, p + 28), elen = le16(z, p + 30), clen = le16(z, p + 32);
    m.local_offset = le32(z, p + 42);
    if (p + 46 + nlen + elen + clen > z.size())
      throw DataError(concat(path, ": zip central directory entry at offset ", p, " is truncated"));
    m.name = z.substr(p + 46, nlen);
    // zip64 extra field: the 0xffffffff fields, in order usize, csize, offset.
    for (size_t e = p + 46 + nlen; e + 4 <= p + 46 + nlen + elen;) {
      const uint16_t id = le16(z, e), sz = le16(z, e + 2);
      if (id == 0x0001) {
        size_t q = e + 4;
        auto take = [&](uint64_t& v) {
          if (v == 0xffffffffu && q + 8 <= e + 4 + sz) {
            v = le64(z, q);
            q += 8;
          }
        };
        take(m.usize);
        take(m.csize);
        take(m.local_offset);
      }
      e += 4 + size_t(sz);
    }
    out.push_back(m);
    p += 46 + nlen + elen + clen;
  }
  return out;
}

std::string zip_extract(const std::string& z, const ZipMember& m, const std::string& path) {
  const std::string what = concat(path, ":", m.name);
  const size_t lo = size_t(m.local_offset);
  if (lo + 30 > z.size() || le32(z, lo) != 0x04034b50u)
    throw DataError(concat(what, ": bad zip local header at offset ", lo));
  const size_t data = lo + 30 + le16(z, lo + 26) + le16(z, lo + 28);
  if (data > z.size() || z.size() - data < m.csize)
    throw DataError(
        concat(what, ": member data truncated: expected ", m.csize, " bytes at offset ", data));
  std::string out;
  if (m.method == 0) {
    out = z.substr(data, size_t(m.csize));
  } else if (m.method == 8) {
    out.resize(size_t(m.usize));
    z_stream s{};
    if (inflateInit2(&s, -MAX_WBITS) != Z_OK) throw Error(concat(what, ": inflateInit2 failed"));
    s.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(z.data() + data));
    s.avail_in = uInt(m.csize);
    s.next_out = reinterpret_cast<Bytef*>(out.data());
    s.avail_out = uInt(out.size());
    const int rc = inflate(&s, Z_FINISH);
    const uint64_t got = s.total_out;
    inflateEnd(&s);
    if (rc != Z_STREAM_END || got != m.usize)
      throw DataError(concat(what, ": corrupt deflate data at offset ", data + s.total_in,
                             " (zlib code ", rc, ", ", got, " of ", m.usize, " bytes)"));
  } else {
    throw DataError(
        concat(what, ": unsupported zip compression method ", m.method, " at offset ", lo + 8));
  }
  const uint32_t crc =
      uint32_t(crc32(0L, reinterpret_cast<const Bytef*>(out.data()), uInt(out.size())));
  if (crc != m.crc)
    throw DataError(concat(what, ": CRC mismatch for member data at offset ", data));
  return out;
}

}  // namespace

Dataset load_npz(const std::string& path) {
  const std::string z = read_file(path);
  const std::vector<ZipMember> members = zip_directory(z, path);
  auto find = [&](const char* a, const char* b) -> const ZipMember& {
    for (const char* want : {a, b})
      for (const auto& m : members)
        if (m.name == concat(want, ".npy")) return m;
    std::string names;
    for (const auto& m : members) names += (names.empty() ? "" : ", ") + m.name;
    throw DataError(
        concat(path, ": npz has no member '", a, ".npy' or '", b, ".npy' (members: ", names, ")"));
  };
  const ZipMember& mi = find("images", "x");
  const ZipMember& ml = find("labels", "y");
  const std::string wi = concat(path, ":", mi.name), wl = concat(path, ":", ml.name);
  std::string descr;
  Tensor im = parse_npy(zip_extract(z, mi, path), wi, &descr);
  Tensor lb = parse_npy(zip_extract(z, ml, path), wl);
  return make_from_arrays(im, descr, wi, lb, wl, path);
}

}  // namespace dynsim::data
