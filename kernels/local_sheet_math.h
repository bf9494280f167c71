// Index math of the cortical-sheet maps (kernels/local_sheet.h) shared by the table build and
// both twins: where channel ch of pixel (y,x) lands on the (f*H) x (f*W) plane, which channel a
// padding channel copies, and the padding copy that shows an element of the unpadded layer a
// second time (so the backward of layer -> sheet is a gather of at most two plane pixels).
#pragma once
#include <cstdint>

#include "engine/core/rng.h"  // DYNSIM_HD

namespace dynsim {

// Which channel padded channel p copies (p itself for p < C): channel C+j copies C-1-j.
DYNSIM_HD int local_sheet_source_channel(int p, int C) {
  return p < C ? p : 2 * C - 1 - p;
}

namespace sheet {

// Flat plane index of channel ch at pixel (y, x) for tile side f and layer width W: row ch/f and
// column ch%f of tile (y, x), the row reversed for odd y and the column for odd x, so that
// neighbouring tiles meet at matching channels.
DYNSIM_HD int64_t plane_index(int64_t ch, int64_t y, int64_t x, int64_t f, int64_t W) {
  const int64_t r = ch / f, s = ch % f;
  const int64_t py = y * f + (y % 2 ? f - 1 - r : r);
  const int64_t px = x * f + (x % 2 ? f - 1 - s : s);
  return py * (f * W) + px;
}

// For element i = ch*HW + pixel of the unpadded layer [C,H,W]: the index in the padded layer
// [Cp,H,W] of the padding channel that copies it (channel 2C-1-ch, same pixel), or -1 when no
// padding channel does (ch < 2C - Cp; always for square C, where Cp == C).
DYNSIM_HD int64_t padding_copy(int64_t i, int64_t C, int64_t Cp, int64_t HW) {
  const int64_t ch = i / HW;
  if (ch < 2 * C - Cp) return -1;
  return (2 * C - 1 - ch) * HW + (i - ch * HW);
}

}  // namespace sheet
}  // namespace dynsim
