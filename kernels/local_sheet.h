// The "cortical sheet" of DynVision's local / localdepthwise recurrence (spec §3): the C = f^2
// channels of every pixel (y,x) form an f x f tile of a (f*H) x (f*W) plane; channel c sits at
// tile row c/f, column c%f, tiles with odd x mirrored left-right and odd y top-bottom, so that
// neighbouring tiles meet at matching channels. x [N,C,H,W] <-> plane [N,1,f*H,f*W].
// Non-square C is padded to the next square with mirrored copies of the last channels
// (padded channel C+j = channel C-1-j); the way back drops the padding channels.
#pragma once
#include <cstdint>
#include <vector>

#include "kernels/local_sheet_math.h"  // local_sheet_source_channel, sheet::
#include "kernels/op_common.h"

namespace dynsim {

struct LocalSheetMap {
  int channels = 0, height = 0, width = 0;
  int side = 0;             // f = sqrt(padded_channels)
  int padded_channels = 0;  // C, or the next square above C
  // DynVision's flat_plane_mapping: for each plane pixel (row-major), the flat index
  // c*H*W + y*W + x into the padded layer [padded_channels,H,W].
  std::vector<int32_t> plane_to_layer;
  // DynVision's flat_layer_mapping: for each element of the padded layer, its flat plane index.
  std::vector<int32_t> layer_to_plane;
  // plane_to_layer with padding channels resolved to the channel they copy: a gather index
  // into the unpadded x [C,H,W] (equal to plane_to_layer when C is square).
  std::vector<int32_t> plane_source;

  int plane_h() const { return side * height; }
  int plane_w() const { return side * width; }
  int64_t plane_size() const { return int64_t(plane_h()) * plane_w(); }
  // The plane conv's kernel: k_p = f/4, made odd by adding 1, at least 3.
  int kernel() const;
};

// The tables for C channels of H x W; DataError for sizes < 1 or tables beyond int32.
LocalSheetMap make_local_sheet_map(int C, int H, int W);

// The checks every twin makes before touching memory: the map is complete, `layer` is
// [N,C,H,W] and `plane` is [N,1,f*H,f*W] of the same dtype and device; DataError naming op and
// role.
void check_local_sheet_args(const char* op, const LocalSheetMap& map, const char* layer_role,
                            const Tensor& layer, const char* plane_role, const Tensor& plane);

namespace cpu {
// plane[n, 0, q] = x[n, plane_source[q]]; x [N,C,H,W], plane [N,1,f*H,f*W].
void layer_to_sheet_forward(Context& c, const LocalSheetMap& map, const Tensor& x,
                            const Tensor& plane);
// grad_x[n, i] = sum over the plane pixels showing element i (two where padding mirrors it).
void layer_to_sheet_backward(Context& c, const LocalSheetMap& map, const Tensor& grad_plane,
                             const Tensor& grad_x, GradMode m);
// y[n, i] = plane[n, 0, layer_to_plane[i]] for the C real channels; y [N,C,H,W].
void sheet_to_layer_forward(Context& c, const LocalSheetMap& map, const Tensor& plane,
                            const Tensor& y);
// grad_plane[n, 0, q] = grad_y[n, plane_to_layer[q]] where that is a real channel, else 0.
void sheet_to_layer_backward(Context& c, const LocalSheetMap& map, const Tensor& grad_y,
                             const Tensor& grad_plane, GradMode m);
}  // namespace cpu
namespace cuda {  // kernels/local_sheet_cuda.cu: the same gathers, f32 and f64. The map's tables
// are copied to the device once per context and (C, H, W) (the context's plan cache) and reused.
void layer_to_sheet_forward(Context& c, const LocalSheetMap& map, const Tensor& x,
                            const Tensor& plane);
void layer_to_sheet_backward(Context& c, const LocalSheetMap& map, const Tensor& grad_plane,
                             const Tensor& grad_x, GradMode m);
void sheet_to_layer_forward(Context& c, const LocalSheetMap& map, const Tensor& plane,
                            const Tensor& y);
void sheet_to_layer_backward(Context& c, const LocalSheetMap& map, const Tensor& grad_y,
                             const Tensor& grad_plane, GradMode m);
}  // namespace cuda
}  // namespace dynsim
