// The index math behind the local-sheet gathers (kernels/local_sheet_math.h), which the CPU and
// CUDA twins share: sheet::plane_index builds the tables, and sheet::padding_copy is the inverse
// of the padded gather, so the backward of layer -> sheet can gather (at most two plane pixels
// per element) instead of scattering. Checked by brute force over square and non-square C.
#include <algorithm>
#include <vector>

#include "kernels/local_sheet.h"
#include "tests/harness.h"

using namespace dynsim;

namespace {

struct Dims {
  int C, H, W;
};
// Square (1, 4, 9, 16, 36, 121) and non-square C (2, 3, 5, 10, 12, 13, 40), odd and even sizes.
const std::vector<Dims> kDims = {{1, 2, 2},  {2, 2, 3},  {3, 4, 1},  {4, 3, 5},  {5, 3, 2},
                                 {9, 2, 3},  {10, 3, 4}, {12, 2, 5}, {13, 1, 4}, {16, 3, 3},
                                 {36, 4, 4}, {40, 3, 2}, {121, 2, 3}};

}  // namespace

TEST_CASE("local_sheet_tables: sheet::plane_index is a bijection onto the plane") {
  for (const Dims& d : kDims) {
    CAPTURE(d.C);
    LocalSheetMap m = make_local_sheet_map(d.C, d.H, d.W);
    const int64_t f = m.side, P = m.plane_size();
    std::vector<int> hits(size_t(P), 0);
    for (int64_t ch = 0; ch < m.padded_channels; ++ch)
      for (int64_t y = 0; y < d.H; ++y)
        for (int64_t x = 0; x < d.W; ++x) {
          const int64_t q = sheet::plane_index(ch, y, x, f, d.W);
          REQUIRE(q >= 0);
          REQUIRE(q < P);
          // Inside the tile of pixel (y, x).
          CHECK(q / m.plane_w() / f == y);
          CHECK(q % m.plane_w() / f == x);
          ++hits[size_t(q)];
        }
    CHECK(std::all_of(hits.begin(), hits.end(), [](int h) { return h == 1; }));
  }
}

TEST_CASE("local_sheet_tables: local_sheet_source_channel mirrors the last channels") {
  CHECK(local_sheet_source_channel(3, 5) == 3);
  CHECK(local_sheet_source_channel(5, 5) == 4);  // C + j copies C - 1 - j
  CHECK(local_sheet_source_channel(8, 5) == 1);
  CHECK(local_sheet_source_channel(15, 10) == 4);
  for (int C = 1; C <= 50; ++C) {
    int f = 1;
    while (f * f < C) ++f;
    for (int p = 0; p < f * f; ++p) {
      const int s = local_sheet_source_channel(p, C);
      REQUIRE(s >= 0);
      REQUIRE(s < C);
      if (p < C) REQUIRE(s == p);
    }
  }
}

TEST_CASE("local_sheet_tables: padding_copy lists exactly the plane pixels that show an element") {
  for (const Dims& d : kDims) {
    CAPTURE(d.C);
    CAPTURE(d.H);
    CAPTURE(d.W);
    LocalSheetMap m = make_local_sheet_map(d.C, d.H, d.W);
    const int64_t HW = int64_t(d.H) * d.W, L = d.C * HW;
    // Brute-force inverse of the forward gather plane[q] = x[plane_source[q]].
    std::vector<std::vector<int64_t>> readers(static_cast<size_t>(L));
    for (int64_t q = 0; q < m.plane_size(); ++q) {
      const int64_t i = m.plane_source[size_t(q)];
      REQUIRE(i >= 0);
      REQUIRE(i < L);
      readers[size_t(i)].push_back(q);
    }
    int64_t copies = 0;
    for (int64_t i = 0; i < L; ++i) {
      std::vector<int64_t> got{m.layer_to_plane[size_t(i)]};
      const int64_t copy = sheet::padding_copy(i, d.C, m.padded_channels, HW);
      if (copy >= 0) {
        REQUIRE(copy >= L);  // a padding channel of the padded layer
        REQUIRE(copy < int64_t(m.padded_channels) * HW);
        got.push_back(m.layer_to_plane[size_t(copy)]);
        ++copies;
      }
      std::sort(got.begin(), got.end());
      REQUIRE_MESSAGE(got == readers[size_t(i)], "element ", i);
    }
    // Every padding channel copies one element per pixel: Cp - C channels' worth.
    CHECK(copies == (m.padded_channels - d.C) * HW);
    if (m.padded_channels == d.C) CHECK(copies == 0);
  }
}
