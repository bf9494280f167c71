// The cortical-sheet tables and the CPU twins of the layer <-> sheet gathers
// (kernels/local_sheet.h). Every op is a gather over precomputed int32 tables, including the
// backward passes (the mirrored padding copies are gathered too, sheet::padding_copy), so no
// output element is written twice and the threads never race. The CUDA twins
// (local_sheet_cuda.cu) run the same gathers over device copies of the same tables.
#include <cmath>
#include <limits>

#include "kernels/local_sheet.h"

namespace dynsim {
namespace {

int64_t exact_isqrt(int64_t n) {
  int64_t s = int64_t(std::sqrt(double(n)));
  while (s * s > n) --s;
  while ((s + 1) * (s + 1) <= n) ++s;
  return s;
}

void check_map(const char* op, const LocalSheetMap& m) {
  const int64_t layer = int64_t(m.padded_channels) * m.height * m.width;
  if (m.channels < 1 || m.side < 1 || int64_t(m.side) * m.side != m.padded_channels ||
      int64_t(m.plane_to_layer.size()) != m.plane_size() ||
      int64_t(m.plane_source.size()) != m.plane_size() || int64_t(m.layer_to_plane.size()) != layer)
    throw DataError(concat(op, ": the LocalSheetMap is not built by make_local_sheet_map (C=",
                           m.channels, ", H=", m.height, ", W=", m.width, ")"));
}

}  // namespace

// x (or grad_x / y) [N,C,H,W] and the plane [N,1,f*H,f*W] of the same dtype and device.
void check_local_sheet_args(const char* op, const LocalSheetMap& m, const char* layer_role,
                            const Tensor& layer, const char* plane_role, const Tensor& plane) {
  check_map(op, m);
  if (layer.rank() != 4)
    throw DataError(concat(op, ": ", layer_role, " must be [N,C,H,W], got ", layer.str()));
  check_shape(op, layer_role, layer, Shape{layer.dim(0), m.channels, m.height, m.width});
  check_arg(op, plane_role, plane, layer, Shape{layer.dim(0), 1, m.plane_h(), m.plane_w()});
}

int LocalSheetMap::kernel() const {
  int k = side / 4;
  if (k % 2 == 0) k += 1;
  return k < 3 ? 3 : k;
}

LocalSheetMap make_local_sheet_map(int C, int H, int W) {
  if (C < 1 || H < 1 || W < 1)
    throw DataError(
        concat("make_local_sheet_map: needs C, H, W >= 1, got C=", C, " H=", H, " W=", W));
  int64_t f = exact_isqrt(C);
  if (f * f != C) ++f;  // the next square; the padding copies the last channels, mirrored
  const int64_t Cp = f * f, HW = int64_t(H) * W, layer = Cp * HW;
  if (layer > std::numeric_limits<int32_t>::max())
    throw DataError(concat("make_local_sheet_map: C=", C, " H=", H, " W=", W, " gives a plane of ",
                           layer, " pixels, beyond int32 indices"));
  LocalSheetMap m;
  m.channels = C;
  m.height = H;
  m.width = W;
  m.side = int(f);
  m.padded_channels = int(Cp);
  m.plane_to_layer.resize(size_t(layer));
  m.layer_to_plane.resize(size_t(layer));
  m.plane_source.resize(size_t(layer));
  for (int64_t y = 0; y < H; ++y)
    for (int64_t x = 0; x < W; ++x)
      for (int64_t ch = 0; ch < Cp; ++ch) {
        const int64_t q = sheet::plane_index(ch, y, x, f, W), l = ch * HW + y * W + x;
        m.plane_to_layer[size_t(q)] = int32_t(l);
        m.layer_to_plane[size_t(l)] = int32_t(q);
        m.plane_source[size_t(q)] =
            int32_t(int64_t(local_sheet_source_channel(int(ch), C)) * HW + y * W + x);
      }
  return m;
}

namespace cpu {

void layer_to_sheet_forward(Context& c, const LocalSheetMap& map, const Tensor& x,
                            const Tensor& plane) {
  const char* op = "layer_to_sheet_forward";
  with_float_type(op, x, [&](auto t) {
    using T = decltype(t);
    check_local_sheet_args(op, map, "x", x, "plane", plane);
    const int64_t N = x.dim(0), P = map.plane_size();
    const int64_t L = int64_t(map.channels) * map.height * map.width;
    const T* px = x.data<T>();
    T* pp = plane.data<T>();
    const int32_t* src = map.plane_source.data();
    cpu::for_each_index(c, N * P, [&](int64_t e) {
      const int64_t n = e / P, q = e - n * P;
      pp[e] = px[n * L + src[q]];
    });
  });
}

void layer_to_sheet_backward(Context& c, const LocalSheetMap& map, const Tensor& grad_plane,
                             const Tensor& grad_x, GradMode m) {
  const char* op = "layer_to_sheet_backward";
  if (!grad_x.defined()) return;
  with_float_type(op, grad_plane, [&](auto t) {
    using T = decltype(t);
    check_local_sheet_args(op, map, "grad_x", grad_x, "grad_plane", grad_plane);
    const int64_t N = grad_x.dim(0), P = map.plane_size(), HW = int64_t(map.height) * map.width;
    const int64_t C = map.channels, Cp = map.padded_channels, L = C * HW;
    const T* gp = grad_plane.data<T>();
    T* gx = grad_x.data<T>();
    const int32_t* to_plane = map.layer_to_plane.data();
    cpu::for_each_index(c, N * L, [&](int64_t e) {
      const int64_t n = e / L, i = e - n * L;
      T g = gp[n * P + to_plane[i]];
      const int64_t copy = sheet::padding_copy(i, C, Cp, HW);  // shows this element again
      if (copy >= 0) g += gp[n * P + to_plane[copy]];
      write_grad(gx[e], g, m);
    });
  });
}

void sheet_to_layer_forward(Context& c, const LocalSheetMap& map, const Tensor& plane,
                            const Tensor& y) {
  const char* op = "sheet_to_layer_forward";
  with_float_type(op, plane, [&](auto t) {
    using T = decltype(t);
    check_local_sheet_args(op, map, "y", y, "plane", plane);
    const int64_t N = y.dim(0), P = map.plane_size();
    const int64_t L = int64_t(map.channels) * map.height * map.width;
    const T* pp = plane.data<T>();
    T* py = y.data<T>();
    const int32_t* to_plane = map.layer_to_plane.data();
    cpu::for_each_index(c, N * L, [&](int64_t e) {
      const int64_t n = e / L, i = e - n * L;
      py[e] = pp[n * P + to_plane[i]];
    });
  });
}

void sheet_to_layer_backward(Context& c, const LocalSheetMap& map, const Tensor& grad_y,
                             const Tensor& grad_plane, GradMode m) {
  const char* op = "sheet_to_layer_backward";
  if (!grad_plane.defined()) return;
  with_float_type(op, grad_y, [&](auto t) {
    using T = decltype(t);
    check_local_sheet_args(op, map, "grad_y", grad_y, "grad_plane", grad_plane);
    const int64_t N = grad_y.dim(0), P = map.plane_size();
    const int64_t L = int64_t(map.channels) * map.height * map.width;
    const T* gy = grad_y.data<T>();
    T* gp = grad_plane.data<T>();
    const int32_t* to_layer = map.plane_to_layer.data();
    cpu::for_each_index(c, N * P, [&](int64_t e) {
      const int64_t n = e / P, q = e - n * P, l = to_layer[q];
      write_grad(gp[e], l < L ? gy[n * L + l] : T(0), m);  // padding channels are dropped
    });
  });
}

}  // namespace cpu
}  // namespace dynsim
