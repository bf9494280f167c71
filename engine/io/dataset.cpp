// Dataset readers, model-input transforms, shuffles and the background Batcher (engine/io/dataset.h).
// Every reader loads the whole file into memory first and parses it with explicit bounds checks,
// so a truncated or corrupt file is a DataError that names the byte offset, never a crash.
#include "engine/io/dataset.h"

#include <stb/stb_image.h>  // the implementation is compiled in engine/io/stb_image.cpp
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "engine/io/npy.h"

namespace dynsim::data {
namespace fs = std::filesystem;

namespace {

void require_file(const std::string& path) {
  if (!fs::is_regular_file(path)) throw NoInputError(concat(path, ": no such file"));
}

// Whole file through zlib: gzread passes non-gzip files through unchanged.
std::string read_maybe_gz(const std::string& path) {
  require_file(path);
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f) throw NoInputError(concat(path, ": cannot open"));
  std::string out;
  char buf[1 << 16];
  for (;;) {
    int n = gzread(f, buf, sizeof buf);
    if (n < 0) {
      int err = 0;
      std::string msg = gzerror(f, &err);
      gzclose(f);
      throw DataError(concat(path, ": corrupt gzip data after ", out.size(),
                             " decompressed bytes (", msg, ")"));
    }
    if (n == 0) break;
    out.append(buf, size_t(n));
  }
  gzclose(f);
  return out;
}

std::string read_file(const std::string& path) {
  require_file(path);
  std::ifstream f(path, std::ios::binary);
  if (!f) throw NoInputError(concat(path, ": cannot open"));
  std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  if (f.bad()) throw IoError(concat(path, ": read failed"));
  return s;
}

uint32_t be32(const std::string& s, size_t at) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data() + at);
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | p[3];
}
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

// Validates labels (non-negative, below `limit` if given) and returns max + 1.
int check_labels(const Tensor& labels, const std::string& what, int limit) {
  const int32_t* l = labels.data<int32_t>();
  int32_t mx = -1;
  for (int64_t i = 0; i < labels.numel(); ++i) {
    if (l[i] < 0 || (limit > 0 && l[i] >= limit))
      throw DataError(concat(what, ": label ", l[i], " of sample ", i, " is out of range [0, ",
                             limit > 0 ? std::to_string(limit) : std::string("inf"), ")"));
    mx = std::max(mx, l[i]);
  }
  return int(mx) + 1;
}

void check_counts(const Tensor& images, const Tensor& labels, const std::string& what) {
  if (images.dim(0) != labels.dim(0))
    throw DataError(concat(what, ": ", labels.dim(0), " labels for ", images.dim(0), " images"));
}

float u8_to_unit(unsigned char v) {
  return float(v) / 255.0f;
}

}  // namespace

// ---------------------------------------------------------------------------------------- IDX

Dataset load_idx(const std::string& images_path, const std::string& labels_path) {
  const std::string im = read_maybe_gz(images_path);
  const std::string lb = read_maybe_gz(labels_path);
  auto header = [](const std::string& b, const std::string& path, uint32_t magic, size_t len,
                   const char* kind) {
    if (b.size() < 4) throw DataError(concat(path, ": IDX header truncated at offset ", b.size()));
    if (be32(b, 0) != magic)
      throw DataError(concat(path, ": bad magic 0x", std::hex, be32(b, 0), " at offset 0 (IDX ",
                             kind, " need 0x0000080", magic & 0xf, ")"));
    if (b.size() < len)
      throw DataError(concat(path, ": IDX header truncated at offset ", b.size()));
  };
  header(im, images_path, 0x00000803u, 16, "images");
  header(lb, labels_path, 0x00000801u, 8, "labels");
  const int64_t n = be32(im, 4), h = be32(im, 8), w = be32(im, 12), nl = be32(lb, 4);
  // The product in double first: a corrupt header must not overflow the size computation.
  const double want_d = double(n) * double(h) * double(w);
  const size_t want = want_d > double(im.size()) ? size_t(-1) : size_t(n) * size_t(h) * size_t(w);
  if (im.size() - 16 < want)
    throw DataError(concat(images_path, ": truncated: expected ", want_d,
                           " pixel bytes at offset 16, file has ", im.size() - 16));
  if (lb.size() - 8 < size_t(nl))
    throw DataError(concat(labels_path, ": truncated: expected ", nl,
                           " label bytes at offset 8, file has ", lb.size() - 8));
  if (nl != n)
    throw DataError(concat(labels_path, ": ", nl, " labels for ", n, " images in ", images_path));
  Dataset ds;
  ds.images = Tensor::empty(Shape{n, 1, h, w});
  float* x = ds.images.data<float>();
  const auto* src = reinterpret_cast<const unsigned char*>(im.data() + 16);
  for (size_t i = 0; i < want; ++i) x[i] = u8_to_unit(src[i]);
  ds.labels = Tensor::empty(Shape{n}, DType::I32);
  int32_t* y = ds.labels.data<int32_t>();
  for (int64_t i = 0; i < n; ++i) y[i] = static_cast<unsigned char>(lb[size_t(8 + i)]);
  ds.n_classes = check_labels(ds.labels, labels_path, 0);
  ds.source = images_path;
  return ds;
}

IdxPaths find_fashion_mnist(const std::string& dir) {
  IdxPaths p{dir + "/train-images-idx3-ubyte.gz", dir + "/train-labels-idx1-ubyte.gz",
             dir + "/t10k-images-idx3-ubyte.gz", dir + "/t10k-labels-idx1-ubyte.gz"};
  for (const std::string* s : {&p.train_images, &p.train_labels, &p.test_images, &p.test_labels})
    if (!fs::is_regular_file(*s)) return {};
  return p;
}

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

// ---------------------------------------------------------------------------------- npy / npz

namespace {

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

Dataset load_npy_pair(const std::string& images_path, const std::string& labels_path) {
  require_file(images_path);
  require_file(labels_path);
  std::string descr;
  Tensor im = parse_npy(read_file(images_path), images_path, &descr);
  Tensor lb = load_npy(labels_path);
  return make_from_arrays(im, descr, images_path, lb, labels_path, images_path);
}

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

// ------------------------------------------------------------------------------ image folders

namespace {

// Bilinear resample of one [C, h, w] plane set into [C, H, W] (pixel centres aligned).
void resize_bilinear(const float* src, int64_t C, int64_t h, int64_t w, float* dst, int64_t H,
                     int64_t W) {
  for (int64_t y = 0; y < H; ++y) {
    const double sy = std::clamp((y + 0.5) * double(h) / double(H) - 0.5, 0.0, double(h - 1));
    const int64_t y0 = int64_t(sy), y1 = std::min(y0 + 1, h - 1);
    const float fy = float(sy - double(y0));
    for (int64_t x = 0; x < W; ++x) {
      const double sx = std::clamp((x + 0.5) * double(w) / double(W) - 0.5, 0.0, double(w - 1));
      const int64_t x0 = int64_t(sx), x1 = std::min(x0 + 1, w - 1);
      const float fx = float(sx - double(x0));
      for (int64_t c = 0; c < C; ++c) {
        const float* p = src + c * h * w;
        const float top = p[y0 * w + x0] + fx * (p[y0 * w + x1] - p[y0 * w + x0]);
        const float bot = p[y1 * w + x0] + fx * (p[y1 * w + x1] - p[y1 * w + x0]);
        dst[(c * H + y) * W + x] = top + fy * (bot - top);
      }
    }
  }
}

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

// --------------------------------------------------------------------------------- transforms

namespace {
// Uniform integer in [0, n) from 32 random bits (multiply-shift; n is tiny, bias < 2^-24).
int64_t below(uint32_t bits, int64_t n) {
  return int64_t((uint64_t(bits) * uint64_t(n)) >> 32);
}
constexpr uint32_t kShuffleStream = 0x53485546u;  // Philox "attempt" word reserved for shuffles
}  // namespace

Tensor to_model_input(const Dataset& ds, int64_t first, int64_t count, const Transform& t,
                      Rng& rng) {
  if (first < 0 || count < 0 || first + count > ds.size())
    throw DataError(concat("to_model_input: samples [", first, ", ", first + count,
                           ") outside dataset of ", ds.size(), " (", ds.source, ")"));
  std::vector<int64_t> idx(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) idx[size_t(i)] = first + i;
  return to_model_input(ds, idx, t, rng);
}

Tensor to_model_input(const Dataset& ds, const std::vector<int64_t>& indices, const Transform& t,
                      Rng& rng) {
  if (!ds.images.defined() || ds.images.rank() != 4 || ds.images.dtype() != DType::F32)
    throw DataError(
        concat("to_model_input: dataset images must be f32 [N,C,H,W] (", ds.source, ")"));
  const int64_t C = ds.images.dim(1), H = ds.images.dim(2), W = ds.images.dim(3);
  const int64_t Co = t.channels > 0 ? t.channels : C, Ho = t.height > 0 ? t.height : H,
                Wo = t.width > 0 ? t.width : W;
  if (Co != C && !(C == 1 && Co == 3))
    throw DataError(
        concat("to_model_input: cannot turn ", C, " channels into ", Co, " (only 1 -> 3)"));
  auto per_channel = [&](const std::vector<float>& v, const char* role) {
    if (!v.empty() && v.size() != 1 && int64_t(v.size()) != Co)
      throw DataError(
          concat("to_model_input: ", role, " has ", v.size(), " values for ", Co, " channels"));
  };
  per_channel(t.mean, "mean");
  per_channel(t.std, "std");
  if (t.random_crop && t.crop_padding < 0)
    throw DataError(concat("to_model_input: crop_padding ", t.crop_padding, " is negative"));
  const int64_t B = int64_t(indices.size());
  for (int64_t i : indices)
    if (i < 0 || i >= ds.size())
      throw DataError(concat("to_model_input: sample ", i, " outside dataset of ", ds.size(), " (",
                             ds.source, ")"));
  const uint64_t base = rng.advance(uint64_t(B));
  Tensor out = Tensor::empty(Shape{B, Co, Ho, Wo});
  std::vector<float> fit(size_t(C * Ho * Wo)), crop(size_t(C * Ho * Wo));
  const float* src_all = ds.images.data<float>();
  const int64_t pad_y = (Ho - H) / 2, pad_x = (Wo - W) / 2;  // centred; negative: centre crop
  for (int64_t b = 0; b < B; ++b) {
    const float* src = src_all + indices[size_t(b)] * C * H * W;
    // 1. Size: resize or centred pad/crop (channels are replicated at the end).
    if (Ho == H && Wo == W) {
      std::copy(src, src + C * H * W, fit.begin());
    } else if (t.fit == Transform::Fit::Resize) {
      resize_bilinear(src, C, H, W, fit.data(), Ho, Wo);
    } else {
      for (int64_t c = 0; c < C; ++c)
        for (int64_t y = 0; y < Ho; ++y)
          for (int64_t x = 0; x < Wo; ++x) {
            const int64_t sy = y - pad_y, sx = x - pad_x;
            fit[size_t((c * Ho + y) * Wo + x)] =
                sy >= 0 && sy < H && sx >= 0 && sx < W ? src[(c * H + sy) * W + sx] : 0.0f;
          }
    }
    // 2. Random crop from the zero-padded image, then random flip.
    const rng::U4 r = rng::bits(rng.seed(), base + uint64_t(b), 0);
    int64_t dy = 0, dx = 0;
    if (t.random_crop && t.crop_padding > 0) {
      dy = below(r.v[0], 2 * t.crop_padding + 1) - t.crop_padding;
      dx = below(r.v[1], 2 * t.crop_padding + 1) - t.crop_padding;
    }
    const bool flip = t.random_flip && (r.v[2] >> 31) != 0;
    for (int64_t c = 0; c < C; ++c)
      for (int64_t y = 0; y < Ho; ++y)
        for (int64_t x = 0; x < Wo; ++x) {
          const int64_t sy = y + dy, sx0 = x + dx;
          const int64_t sx = flip ? (Wo - 1 - x) + dx : sx0;
          crop[size_t((c * Ho + y) * Wo + x)] = sy >= 0 && sy < Ho && sx >= 0 && sx < Wo
                                                    ? fit[size_t((c * Ho + sy) * Wo + sx)]
                                                    : 0.0f;
        }
    // 3. Channels and normalisation.
    float* o = out.data<float>() + b * Co * Ho * Wo;
    for (int64_t c = 0; c < Co; ++c) {
      const float* p = crop.data() + (C == Co ? c : 0) * Ho * Wo;
      const float m = t.mean.empty() ? 0.0f : t.mean[t.mean.size() == 1 ? 0 : size_t(c)];
      const float s = t.std.empty() ? 1.0f : t.std[t.std.size() == 1 ? 0 : size_t(c)];
      for (int64_t k = 0; k < Ho * Wo; ++k) o[c * Ho * Wo + k] = (p[k] - m) / s;
    }
  }
  return out;
}

Tensor gather_labels(const Dataset& ds, const std::vector<int64_t>& indices) {
  Tensor y = Tensor::empty(Shape{int64_t(indices.size())}, DType::I32);
  const int32_t* l = ds.labels.data<int32_t>();
  for (size_t i = 0; i < indices.size(); ++i) {
    if (indices[i] < 0 || indices[i] >= ds.size())
      throw DataError(
          concat("gather_labels: sample ", indices[i], " outside dataset of ", ds.size()));
    y.data<int32_t>()[i] = l[indices[i]];
  }
  return y;
}

std::vector<int64_t> shuffled_indices(int64_t n, uint64_t seed, int64_t epoch) {
  std::vector<int64_t> p(size_t(std::max<int64_t>(n, 0)));
  for (int64_t i = 0; i < n; ++i) p[size_t(i)] = i;
  for (int64_t i = n - 1; i > 0; --i) {
    const rng::U4 r = rng::bits(seed, (uint64_t(epoch) << 32) + uint64_t(i), kShuffleStream);
    const uint64_t v = (uint64_t(r.v[0]) << 32) | r.v[1];
    std::swap(p[size_t(i)], p[size_t(v % uint64_t(i + 1))]);  // bias < n / 2^64
  }
  return p;
}

// ------------------------------------------------------------------------------------ Batcher

Batcher::Batcher(Dataset ds, Transform t, Options o) : ds_(std::move(ds)), t_(std::move(t)), o_(o) {
  if (o_.batch_size <= 0)
    throw DataError(concat("Batcher: batch_size ", o_.batch_size, " must be positive"));
  const int64_t n = ds_.size();
  if (o_.shuffle)
    order_ = shuffled_indices(n, o_.seed, o_.epoch);
  else {
    order_.resize(size_t(n));
    for (int64_t i = 0; i < n; ++i) order_[size_t(i)] = i;
  }
  n_batches_ = o_.drop_last ? n / o_.batch_size : (n + o_.batch_size - 1) / o_.batch_size;
  worker_ = std::thread([this] { work(); });
}

Batcher::~Batcher() {
  {
    std::lock_guard<std::mutex> l(m_);
    stop_ = true;
  }
  cv_.notify_all();
  worker_.join();
}

std::vector<int64_t> Batcher::batch_indices(int64_t b) const {
  const int64_t lo = b * o_.batch_size,
                hi = std::min<int64_t>(lo + o_.batch_size, int64_t(order_.size()));
  return {order_.begin() + lo, order_.begin() + hi};
}

Batcher::Batch Batcher::make(int64_t b) const {
  if (b < 0 || b >= n_batches_) throw DataError(concat("Batcher: batch ", b, " of ", n_batches_));
  const std::vector<int64_t> idx = batch_indices(b);
  Rng rng(o_.seed);
  rng.set_state(o_.seed,
                uint64_t(o_.epoch) * uint64_t(order_.size()) + uint64_t(b * o_.batch_size));
  Batch out;
  out.x = to_model_input(ds_, idx, t_, rng);
  out.y = gather_labels(ds_, idx);
  out.index = b;
  return out;
}

void Batcher::work() {
  for (int64_t b = std::max<int64_t>(o_.first_batch, 0); b < n_batches_; ++b) {
    {
      std::lock_guard<std::mutex> l(m_);
      if (stop_) return;
    }
    std::optional<Batch> batch;
    try {
      batch = make(b);
    } catch (...) {
      std::lock_guard<std::mutex> l(m_);
      error_ = std::current_exception();
      cv_.notify_all();
      return;
    }
    std::unique_lock<std::mutex> l(m_);
    cv_.wait(l,
             [this] { return stop_ || !ready_; });  // wait until the caller took the previous one
    if (stop_) return;
    ready_ = std::move(batch);
    cv_.notify_all();
  }
  std::lock_guard<std::mutex> l(m_);
  done_ = true;
  cv_.notify_all();
}

std::optional<Batcher::Batch> Batcher::next() {
  std::unique_lock<std::mutex> l(m_);
  cv_.wait(l, [this] { return ready_.has_value() || error_ || done_; });
  if (ready_) {
    std::optional<Batch> b = std::move(ready_);
    ready_.reset();
    cv_.notify_all();
    return b;
  }
  if (error_) std::rethrow_exception(error_);
  return std::nullopt;
}

}  // namespace dynsim::data
