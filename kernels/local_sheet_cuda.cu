// CUDA twins of the cortical-sheet maps (kernels/local_sheet.h), f32 and f64: the CPU's gathers
// over the same int32 tables, one thread per output element, so no element is written twice
// (no atomics) and every output is the CPU's bits (a copy, or for layer -> sheet backward the
// same two-term sum in the same order: the pixel itself, then its padding copy).
// The map's tables live on the host; their device copies are made once per context and
// (C, H, W) and kept in the context's plan cache (freed with the context): the tables are a pure
// function of (C, H, W) (make_local_sheet_map), so every map of those sizes shares them.
#include <memory>

#include "engine/core/device.h"
#include "kernels/cuda_common.cuh"
#include "kernels/local_sheet.h"

namespace dynsim::cuda {
namespace {

struct SheetTables {
  Tensor plane_to_layer, layer_to_plane, plane_source;  // i32, on the context's device
};

Tensor upload(Context& c, const std::vector<int32_t>& v) {
  Tensor t = c.empty(Shape{int64_t(v.size())}, DType::I32);
  // From pageable memory: returns once the host vector has been read.
  device_memcpy(t.raw(), true, v.data(), false, v.size() * sizeof(int32_t), c.stream());
  return t;
}

// The device tables of `map` (already checked by check_local_sheet_args).
const SheetTables& tables(Context& c, const LocalSheetMap& map) {
  PlanKey key("local_sheet tables");
  key << map.channels << map.height << map.width;
  return c.plans().get_or_create<SheetTables>(key, [&] {
    auto t = std::make_shared<SheetTables>();
    t->plane_to_layer = upload(c, map.plane_to_layer);
    t->layer_to_plane = upload(c, map.layer_to_plane);
    t->plane_source = upload(c, map.plane_source);
    return t;
  });
}

template <class T>
void to_sheet_forward_t(Context& c, const LocalSheetMap& map, const Tensor& x,
                        const Tensor& plane) {
  const int64_t N = x.dim(0), P = map.plane_size();
  const int64_t L = int64_t(map.channels) * map.height * map.width;
  const T* px = x.data<T>();
  T* pp = plane.data<T>();
  const int32_t* src = tables(c, map).plane_source.data<int32_t>();
  launch(c, N * P, [=] __device__(int64_t e) {
    const int64_t n = e / P, q = e - n * P;
    pp[e] = px[n * L + src[q]];
  });
}

template <class T>
void to_sheet_backward_t(Context& c, const LocalSheetMap& map, const Tensor& grad_plane,
                         const Tensor& grad_x, bool acc) {
  const int64_t N = grad_x.dim(0), P = map.plane_size(), HW = int64_t(map.height) * map.width;
  const int64_t C = map.channels, Cp = map.padded_channels, L = C * HW;
  const T* gp = grad_plane.data<T>();
  T* gx = grad_x.data<T>();
  const int32_t* to_plane = tables(c, map).layer_to_plane.data<int32_t>();
  launch(c, N * L, [=] __device__(int64_t e) {
    const int64_t n = e / L, i = e - n * L;
    T g = gp[n * P + to_plane[i]];
    const int64_t copy = sheet::padding_copy(i, C, Cp, HW);  // shows this element again
    if (copy >= 0) g += gp[n * P + to_plane[copy]];
    put_grad(gx[e], g, acc);
  });
}

template <class T>
void to_layer_forward_t(Context& c, const LocalSheetMap& map, const Tensor& plane,
                        const Tensor& y) {
  const int64_t N = y.dim(0), P = map.plane_size();
  const int64_t L = int64_t(map.channels) * map.height * map.width;
  const T* pp = plane.data<T>();
  T* py = y.data<T>();
  const int32_t* to_plane = tables(c, map).layer_to_plane.data<int32_t>();
  launch(c, N * L, [=] __device__(int64_t e) {
    const int64_t n = e / L, i = e - n * L;
    py[e] = pp[n * P + to_plane[i]];
  });
}

template <class T>
void to_layer_backward_t(Context& c, const LocalSheetMap& map, const Tensor& grad_y,
                         const Tensor& grad_plane, bool acc) {
  const int64_t N = grad_y.dim(0), P = map.plane_size();
  const int64_t L = int64_t(map.channels) * map.height * map.width;
  const T* gy = grad_y.data<T>();
  T* gp = grad_plane.data<T>();
  const int32_t* to_layer = tables(c, map).plane_to_layer.data<int32_t>();
  launch(c, N * P, [=] __device__(int64_t e) {
    const int64_t n = e / P, q = e - n * P, l = to_layer[q];
    put_grad(gp[e], l < L ? gy[n * L + l] : T(0), acc);  // padding channels are dropped
  });
}

}  // namespace

void layer_to_sheet_forward(Context& c, const LocalSheetMap& map, const Tensor& x,
                            const Tensor& plane) {
  const char* op = "layer_to_sheet_forward";
  const bool f64 = is_f64(op, x);
  check_local_sheet_args(op, map, "x", x, "plane", plane);
  if (f64)
    to_sheet_forward_t<double>(c, map, x, plane);
  else
    to_sheet_forward_t<float>(c, map, x, plane);
}

void layer_to_sheet_backward(Context& c, const LocalSheetMap& map, const Tensor& grad_plane,
                             const Tensor& grad_x, GradMode m) {
  const char* op = "layer_to_sheet_backward";
  if (!grad_x.defined()) return;
  const bool f64 = is_f64(op, grad_plane);
  check_local_sheet_args(op, map, "grad_x", grad_x, "grad_plane", grad_plane);
  const bool acc = m == GradMode::Accumulate;
  if (f64)
    to_sheet_backward_t<double>(c, map, grad_plane, grad_x, acc);
  else
    to_sheet_backward_t<float>(c, map, grad_plane, grad_x, acc);
}

void sheet_to_layer_forward(Context& c, const LocalSheetMap& map, const Tensor& plane,
                            const Tensor& y) {
  const char* op = "sheet_to_layer_forward";
  const bool f64 = is_f64(op, plane);
  check_local_sheet_args(op, map, "y", y, "plane", plane);
  if (f64)
    to_layer_forward_t<double>(c, map, plane, y);
  else
    to_layer_forward_t<float>(c, map, plane, y);
}

void sheet_to_layer_backward(Context& c, const LocalSheetMap& map, const Tensor& grad_y,
                             const Tensor& grad_plane, GradMode m) {
  const char* op = "sheet_to_layer_backward";
  if (!grad_plane.defined()) return;
  const bool f64 = is_f64(op, grad_y);
  check_local_sheet_args(op, map, "grad_y", grad_y, "grad_plane", grad_plane);
  const bool acc = m == GradMode::Accumulate;
  if (f64)
    to_layer_backward_t<double>(c, map, grad_y, grad_plane, acc);
  else
    to_layer_backward_t<float>(c, map, grad_y, grad_plane, acc);
}

}  // namespace dynsim::cuda
