// safetensors: round trips of every dtype and rank (0-dim and empty included) with metadata, the
// dtype conversions on load (I64/I16/I8/U8/BOOL -> I32, BF16/F16 -> F32), a corpus of corrupt
// files each with its message, atomic writes, and (torch suite) files from export_dynvision.py.
#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>

#include "engine/io/safetensors.h"
#include "tests/harness.h"

using namespace dynsim;
using namespace dynsim::test;
namespace fs = std::filesystem;

namespace {

std::string tmp_dir() {
  fs::path d =
      fs::temp_directory_path() / ("dynsim_test_safetensors_" + std::to_string(::getpid()));
  fs::create_directories(d);
  return d.string();
}
std::string tmp_path(const std::string& name) {
  return tmp_dir() + "/" + name;
}

// A hand-made file: length field (the header's size unless given), header, data bytes.
void write_raw(const std::string& p, const std::string& header, const std::string& data,
               uint64_t length = std::numeric_limits<uint64_t>::max()) {
  if (length == std::numeric_limits<uint64_t>::max()) length = header.size();
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  char len[8];
  std::memcpy(len, &length, 8);
  f.write(len, 8);
  f << header << data;
}

std::string bytes_of(const void* p, size_t n) {
  return std::string(static_cast<const char*>(p), n);
}

// Same dtype, shape and bytes (distinguishes -0.0 from 0.0, unlike a value comparison).
void require_same_bits(const Tensor& got, const Tensor& want, const std::string& what) {
  REQUIRE_MESSAGE(got.dtype() == want.dtype(), what, ": dtype ", dtype_name(got.dtype()), " vs ",
                  dtype_name(want.dtype()));
  REQUIRE_MESSAGE(got.shape() == want.shape(), what, ": shape ", got.shape().str(), " vs ",
                  want.shape().str());
  if (got.nbytes() > 0 && std::memcmp(got.raw(), want.raw(), got.nbytes()) != 0)
    require_equal(got, want, what);  // names the element; values may differ only in bits
  CHECK_MESSAGE(std::memcmp(got.raw(), want.raw(), got.nbytes()) == 0, what, ": bits differ");
}

std::string header_of(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  uint64_t n = 0;
  f.read(reinterpret_cast<char*>(&n), 8);
  std::string h(n, '\0');
  f.read(h.data(), std::streamsize(n));
  return h;
}

}  // namespace

TEST_CASE("safetensors: round trip f32, f64, i32 of every rank, empty tensors and metadata") {
  std::map<std::string, Tensor> in;
  const std::vector<Shape> shapes = {Shape{},
                                     Shape{5},
                                     Shape{2, 3},
                                     Shape{2, 1, 3},
                                     Shape{2, 1, 3, 4},
                                     Shape{1, 2, 1, 2, 3},
                                     Shape{2, 1, 1, 2, 1, 3},
                                     Shape{0},
                                     Shape{3, 0, 2}};
  int k = 0;
  for (DType t : {DType::F32, DType::F64, DType::I32}) {
    for (const Shape& s : shapes) {
      Tensor a = t == DType::I32 ? random_ints(s, -1000000, 1000000, 11 + k, t)
                                 : random_uniform(s, -3, 3, 11 + k, t);
      in[concat("t", k++, ".", dtype_name(t), s.str())] = a;
    }
  }
  const std::map<std::string, std::string> meta = {
      {"source", "test"}, {"format", "pt"}, {"unicode", "\xc2\xb5m"}, {"empty", ""}};
  const std::string p = tmp_path("rt.safetensors");
  save_safetensors(p, in, meta);
  TensorFile f = load_safetensors(p);
  CHECK(f.metadata == meta);
  REQUIRE(f.tensors.size() == in.size());
  for (const auto& [name, t] : in) {
    CAPTURE(name);
    REQUIRE(f.tensors.count(name) == 1);
    require_same_bits(f.tensors.at(name), t, name);
  }

  SUBCASE("layout: header padded to 8 bytes, data in name order, full coverage") {
    const std::string h = header_of(p);
    CHECK(h.size() % 8 == 0);
    CHECK(fs::file_size(p) == 8 + h.size() + [&] {
      size_t n = 0;
      for (const auto& [name, t] : in) n += t.nbytes();
      return n;
    }());
    size_t prev = 0;
    for (const auto& [name, t] : in) {
      const size_t at = h.find("\"" + name + "\"");
      REQUIRE(at != std::string::npos);
      CHECK(at > prev);
      prev = at;
    }
  }
  SUBCASE("no metadata and no tensors") {
    save_safetensors(p, {});
    TensorFile e = load_safetensors(p);
    CHECK(e.tensors.empty());
    CHECK(e.metadata.empty());
    CHECK(fs::file_size(p) == 16);  // "{}" padded to 8
  }
  SUBCASE("views are written as their own elements") {
    Tensor big = random_uniform({4, 3}, -1, 1, 5, DType::F32);
    save_safetensors(p, {{"rows", big.slice(1, 3)}});
    require_same_bits(load_safetensors(p).tensors.at("rows"), big.slice(1, 3).clone(), "rows");
  }
}

TEST_CASE("safetensors: dtypes converted on load") {
  const std::string p = tmp_path("conv.safetensors");
  SUBCASE("I64, I16, I8, U8, BOOL -> I32") {
    const int64_t i64[] = {INT32_MIN, -1, 0, 7, INT32_MAX};
    const int16_t i16[] = {-32768, -3, 32767};
    const int8_t i8[] = {-128, 5, 127};
    const uint8_t u8[] = {0, 200, 255};
    const uint8_t b[] = {1, 0, 1, 1};
    const std::string data =
        bytes_of(i64, 40) + bytes_of(i16, 6) + bytes_of(i8, 3) + bytes_of(u8, 3) + bytes_of(b, 4);
    write_raw(p,
              R"({"a":{"dtype":"I64","shape":[5],"data_offsets":[0,40]},)"
              R"("b":{"dtype":"I16","shape":[3],"data_offsets":[40,46]},)"
              R"("c":{"dtype":"I8","shape":[3],"data_offsets":[46,49]},)"
              R"("d":{"dtype":"U8","shape":[1,3],"data_offsets":[49,52]},)"
              R"("e":{"dtype":"BOOL","shape":[2,2],"data_offsets":[52,56]}}   )",
              data);
    TensorFile f = load_safetensors(p);
    for (const auto& [n, t] : f.tensors) CHECK(t.dtype() == DType::I32);
    CHECK(f.tensors.at("a").to_vector() == std::vector<double>{INT32_MIN, -1, 0, 7, INT32_MAX});
    CHECK(f.tensors.at("b").to_vector() == std::vector<double>{-32768, -3, 32767});
    CHECK(f.tensors.at("c").to_vector() == std::vector<double>{-128, 5, 127});
    CHECK(f.tensors.at("d").shape() == Shape{1, 3});
    CHECK(f.tensors.at("d").to_vector() == std::vector<double>{0, 200, 255});
    CHECK(f.tensors.at("e").to_vector() == std::vector<double>{1, 0, 1, 1});
  }
  SUBCASE("I64 outside int32 is refused") {
    const int64_t v[] = {1, int64_t(INT32_MAX) + 1};
    write_raw(p, R"({"n_residual_timesteps":{"dtype":"I64","shape":[2],"data_offsets":[0,16]}})",
              bytes_of(v, 16));
    CHECK_THROWS_WITH_AS(load_safetensors(p),
                         doctest::Contains("tensor 'n_residual_timesteps': int64 value 2147483648 "
                                           "at element 1 does not fit in int32"),
                         DataError);
  }
  SUBCASE("BF16 and F16 -> F32, exactly, including subnormals, infinities and -0") {
    // bf16: 1, -2, -0, smallest subnormal, +inf, 3.140625; f16: 1, -2, -0, 2^-24, 65504, -inf
    const uint16_t bf[] = {0x3f80, 0xc000, 0x8000, 0x0001, 0x7f80, 0x4049};
    const uint16_t hf[] = {0x3c00, 0xc000, 0x8000, 0x0001, 0x7bff, 0xfc00};
    write_raw(p,
              R"({"bf":{"dtype":"BF16","shape":[6],"data_offsets":[0,12]},)"
              R"("hf":{"dtype":"F16","shape":[2,3],"data_offsets":[12,24]}})",
              bytes_of(bf, 12) + bytes_of(hf, 12));
    TensorFile f = load_safetensors(p);
    const float inf = std::numeric_limits<float>::infinity();
    require_same_bits(f.tensors.at("bf"),
                      Tensor::from({6}, {1, -2, -0.0, std::ldexp(1.0, -133), inf, 3.140625}),
                      "bf16");
    require_same_bits(f.tensors.at("hf"),
                      Tensor::from({2, 3}, {1, -2, -0.0, std::ldexp(1.0, -24), 65504, -inf}),
                      "f16");
    // Every f16 normal and subnormal against ldexp (the bit manipulation is easy to get wrong).
    std::vector<uint16_t> all;
    for (uint32_t h = 0; h < 0x7c00; ++h) all.push_back(uint16_t(h));
    write_raw(p,
              concat(R"({"x":{"dtype":"F16","shape":[)", all.size(), R"(],"data_offsets":[0,)",
                     2 * all.size(), "]}}"),
              bytes_of(all.data(), 2 * all.size()));
    Tensor x = load_safetensors(p).tensors.at("x");
    for (uint32_t h = 0; h < 0x7c00; ++h) {
      const int e = int(h >> 10), m = int(h & 0x3ff);
      const double want = e == 0 ? std::ldexp(m, -24) : std::ldexp(1024 + m, e - 25);
      if (x.item(h) != want) FAIL("f16 ", h, ": ", x.item(h), " != ", want);
    }
  }
}

TEST_CASE("safetensors: corrupt files get clear errors naming the file and the tensor") {
  const std::string p = tmp_path("bad.safetensors");
  const float four[4] = {1, 2, 3, 4};
  const std::string data = bytes_of(four, 16);
  auto expect = [&](const std::string& msg) {
    CHECK_THROWS_WITH_AS(load_safetensors(p), doctest::Contains(msg.c_str()), DataError);
    CHECK_THROWS_WITH_AS(load_safetensors(p), doctest::Contains(p.c_str()), DataError);
  };
  const std::string good = R"({"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}})";
  write_raw(p, good, data);
  CHECK(load_safetensors(p).tensors.at("w").to_vector() == std::vector<double>{1, 2, 3, 4});

  CHECK_THROWS_WITH_AS(load_safetensors(tmp_path("missing.safetensors")),
                       doctest::Contains("missing.safetensors: cannot open"), NoInputError);
  CHECK_THROWS_AS(load_safetensors(tmp_dir()), NoInputError);

  SUBCASE("shorter than the length field") {
    std::ofstream(p, std::ios::binary | std::ios::trunc) << "abc";
    expect("truncated: 3 bytes");
  }
  SUBCASE("header length larger than the file") {
    write_raw(p, good, data, 1000);
    expect("header length 1000 exceeds the file size (" + std::to_string(8 + good.size() + 16));
    write_raw(p, good, data, uint64_t(1) << 62);
    expect("exceeds the file size");
  }
  SUBCASE("truncated data section") {
    write_raw(p, good, data.substr(0, 10));
    expect("tensor 'w': data_offsets [0, 16] reach past the data section (10 bytes)");
  }
  SUBCASE("invalid JSON") {
    write_raw(p, R"({"w":{"dtype":"F32",)", data);
    expect("header is not valid JSON");
    write_raw(p, R"([1, 2])", "");
    expect("header is not a JSON object");
    write_raw(p, "{\"w\xff\":1}", "");
    expect("header is not valid JSON");
  }
  SUBCASE("unknown dtype") {
    write_raw(p, R"({"w":{"dtype":"C64","shape":[2],"data_offsets":[0,16]}})", data);
    expect("tensor 'w': unknown dtype 'C64'");
  }
  SUBCASE("malformed entries") {
    write_raw(p, R"({"w":{"dtype":"F32","data_offsets":[0,16]}})", data);
    expect("tensor 'w': header entry has no \"shape\"");
    write_raw(p, R"({"w":{"dtype":"F32","shape":[-4],"data_offsets":[0,16]}})", data);
    expect("tensor 'w': shape [-4] holds a non-integer or negative size");
    write_raw(p, R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0]}})", data);
    expect("tensor 'w': \"data_offsets\" [0] is not a pair of non-negative integers");
    write_raw(p, R"({"w":{"dtype":"F32","shape":[1,1,1,1,1,1,4],"data_offsets":[0,16]}})", data);
    expect("tensor 'w': rank 7 exceeds the supported 6");
    write_raw(p, R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[16,0]}})", data);
    expect("tensor 'w': data_offsets [16, 0] are reversed");
    write_raw(p, R"({"w":{"dtype":"F32","shape":[4294967296,4294967296,0],"data_offsets":[0,0]}})",
              "");
    expect("tensor 'w': shape [4294967296,4294967296,0] has too many elements");
    write_raw(p, R"({"w":7})", "");
    expect("tensor 'w': header entry is not a JSON object");
    write_raw(p, R"({"__metadata__":{"epoch":3}})", "");
    expect("\"__metadata__\" value of 'epoch' is not a string");
  }
  SUBCASE("shape and offsets disagree") {
    write_raw(p, R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}})", data);
    expect(
        "tensor 'w': shape [3] of F32 (3 elements of 4 bytes) does not match data_offsets "
        "[0, 16] (16 bytes)");
    write_raw(p, R"({"w":{"dtype":"F64","shape":[4],"data_offsets":[0,16]}})", data);
    expect("tensor 'w': shape [4] of F64");
  }
  SUBCASE("offsets outside the data section") {
    write_raw(p, R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}})", data);
    expect("tensor 'w': data_offsets [8, 24] reach past the data section (16 bytes)");
  }
  SUBCASE("overlaps, holes and uncovered bytes") {
    write_raw(p,
              R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
              R"("b":{"dtype":"F32","shape":[3],"data_offsets":[4,16]}})",
              data);
    expect("tensor 'b' (bytes [4, 16)) overlaps tensor 'a' (bytes [0, 8))");
    write_raw(p,
              R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
              R"("b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
              data);
    expect("hole: bytes [4, 8) before tensor 'b' belong to no tensor");
    write_raw(p, R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})", data);
    expect("hole: bytes [0, 8) before tensor 'a'");
    write_raw(p, R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,12]}})", data);
    expect("4 bytes after the last tensor (bytes [12, 16)) that belong to no tensor");
    write_raw(p,
              R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
              R"("z":{"dtype":"F32","shape":[0],"data_offsets":[4,4]}})",
              data);
    expect("tensor 'z' (bytes [4, 4)) overlaps tensor 'a'");
  }
  SUBCASE("duplicate names and fields") {
    write_raw(p,
              R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
              R"("w":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
              data);
    expect("duplicate tensor name 'w'");
    write_raw(p, R"({"w":{"dtype":"F32","dtype":"F32","shape":[4],"data_offsets":[0,16]}})", data);
    expect("'w' has the field \"dtype\" twice");
  }
}

TEST_CASE("safetensors: writes are atomic and arguments are checked") {
  const Tensor a = Tensor::from({3}, {1, 2, 3});
  const std::string dir = tmp_dir() + "/atomic";
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string p = dir + "/w.safetensors";
  auto listing = [&] {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
  };

  save_safetensors(p, {{"a", a}});
  CHECK(listing() == std::vector<std::string>{"w.safetensors"});  // no temp file left behind

  SUBCASE("a missing directory: IoError, nothing written") {
    const std::string q = dir + "/no/such/dir/w.safetensors";
    CHECK_THROWS_WITH_AS(save_safetensors(q, {{"a", a}}),
                         doctest::Contains("cannot create the temporary file"), IoError);
    CHECK_FALSE(fs::exists(q));
  }
  SUBCASE("a failed rename leaves the temp file removed") {
    fs::create_directories(dir + "/taken");  // rename onto a non-empty directory fails
    std::ofstream(dir + "/taken/x") << "x";
    CHECK_THROWS_WITH_AS(save_safetensors(dir + "/taken", {{"a", a}}),
                         doctest::Contains("rename failed"), IoError);
    CHECK(listing() == std::vector<std::string>{"taken", "w.safetensors"});
  }
  SUBCASE("an unwritable directory keeps the old file intact") {
    if (::geteuid() == 0) {
      MESSAGE("running as root: permissions do not stop writes, skipping the chmod check");
      return;
    }
    fs::permissions(dir, fs::perms::owner_read | fs::perms::owner_exec);
    CHECK_THROWS_AS(save_safetensors(p, {{"b", Tensor::zeros({2})}}), IoError);
    fs::permissions(dir, fs::perms::owner_all);
    CHECK(listing() == std::vector<std::string>{"w.safetensors"});
    CHECK(load_safetensors(p).tensors.count("a") == 1);
  }
  SUBCASE("bad arguments") {
    CHECK_THROWS_WITH_AS(save_safetensors(p, {{"__metadata__", a}}),
                         doctest::Contains("'__metadata__' is reserved"), Error);
    CHECK_THROWS_WITH_AS(save_safetensors(p, {{"u", Tensor()}}),
                         doctest::Contains("tensor 'u' is undefined; needs a host tensor"), Error);
    CHECK_THROWS_WITH_AS(save_safetensors(p, {{"bad\xff", a}}), doctest::Contains("not UTF-8"),
                         Error);
    CHECK(listing() == std::vector<std::string>{"w.safetensors"});
    CHECK(load_safetensors(p).tensors.count("a") == 1);
  }
}

TEST_CASE("safetensors: reads export_dynvision.py's output exactly" *
          doctest::test_suite("torch")) {
  for (const std::string name : {"safetensors_plain", "safetensors_lightning"}) {
    CAPTURE(name);
    const std::string dir = torch_refs_dir() + "/" + name;
    TensorFile f = load_safetensors(dir + "/weights.safetensors");
    CHECK(f.metadata == std::map<std::string, std::string>{{"source", "export_dynvision.py"},
                                                           {"format", "dynvision-state-dict"}});
    // Nothing dropped, 'model.' stripped: one .npy per tensor, and the same names.
    size_t npy = 0;
    for (const auto& e : fs::directory_iterator(dir)) npy += e.path().extension() == ".npy";
    CHECK(f.tensors.size() == npy);
    CHECK(f.tensors.size() == 12);
    for (const auto& [key, t] : f.tensors) {
      CAPTURE(key);
      // load_npy memcpy's from a null buffer for empty arrays (UBSan); compare those by shape.
      if (t.numel() == 0) continue;
      require_same_bits(t, torch_ref(name, key), key);
    }
    CHECK(f.tensors.at("n_residual_timesteps").item(0) == 7);
    CHECK(f.tensors.at("classifier.2.weight").dtype() == DType::F32);  // bf16 -> f32
    CHECK(f.tensors.at("V1.recurrence.local_conv.conv.weight").dtype() == DType::F64);
    CHECK(f.tensors.at("empty.buffer").shape() == Shape{0, 4});
    CHECK(f.tensors.at("tau_V1").shape() == Shape{});
  }
  // The header keeps int64 buffers as I64 (dynsim converts them on load).
  const std::string h = header_of(torch_refs_dir() + "/safetensors_plain/weights.safetensors");
  CHECK(h.find(R"("n_residual_timesteps":{"dtype":"I64","shape":[])") != std::string::npos);

  // Raw BF16/F16 data decode to the same f32 values as torch's .to(torch.float32).
  TensorFile half = load_safetensors(torch_refs_dir() + "/safetensors_half/half.safetensors");
  CHECK(half.metadata.at("note") == "raw half precision");
  require_same_bits(half.tensors.at("bf16"), torch_ref("safetensors_half", "bf16"), "bf16");
  require_same_bits(half.tensors.at("f16"), torch_ref("safetensors_half", "f16"), "f16");

  // An unreadable .pt: exit 65 with the file named; a missing one: exit 66.
  Tensor rc = torch_ref("safetensors_bad_input", "rc");
  CHECK(rc.item(0) == 65);
  CHECK(rc.item(1) == 66);
  std::ifstream m(torch_refs_dir() + "/safetensors_bad_input/message.txt");
  const std::string msg((std::istreambuf_iterator<char>(m)), std::istreambuf_iterator<char>());
  CHECK(msg.find("garbage.pt: cannot read as a PyTorch file") != std::string::npos);
}
