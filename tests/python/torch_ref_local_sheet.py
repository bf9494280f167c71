"""DynVision's cortical-sheet tables for the local recurrence (tests/kernels/test_local_sheet.cpp).

Rebuilds flat_plane_mapping and flat_layer_mapping the way DynVision's topographic_recurrence.py
does (a coordinate grid laid out tile by tile: reshape a pixel's channels to f x f, flip the
columns for odd x and the rows for odd y, then flatten the coordinates), plus the torch.gather
round trip through them. Cases local_sheet_<k> hold dims = (C, H, W, plane kernel), both tables,
x, plane = gather(x, flat_plane_mapping) and y = gather(plane, flat_layer_mapping).
"""
import math

import numpy as np
import torch

# (C, H, W): V1's 36 channels, V4's 121, and a non-square spatial size.
DIMS = [(36, 4, 4), (121, 3, 3), (64, 3, 5)]


def tiles_to_plane(layer_coords, f):
    """[C, H, W, k] coordinates -> [f*H, f*W, k]: each pixel's channels become a mirrored tile."""
    _, H, W, k = layer_coords.shape
    plane = np.zeros((f * H, f * W, k), dtype=np.int64)
    for y in range(H):
        for x in range(W):
            tile = layer_coords[:, y, x].reshape(f, f, k)
            if x % 2:
                tile = tile[:, ::-1]
            if y % 2:
                tile = tile[::-1, :]
            plane[y * f:(y + 1) * f, x * f:(x + 1) * f] = tile
    return plane


def plane_to_tiles(plane_coords, C, H, W, f):
    """[f*H, f*W, k] coordinates -> [C, H, W, k]: the inverse layout (flips are involutions)."""
    k = plane_coords.shape[-1]
    layer = np.zeros((C, H, W, k), dtype=np.int64)
    for y in range(H):
        for x in range(W):
            tile = plane_coords[y * f:(y + 1) * f, x * f:(x + 1) * f]
            if x % 2:
                tile = tile[:, ::-1]
            if y % 2:
                tile = tile[::-1, :]
            layer[:, y, x] = tile.reshape(-1, k)
    return layer


def tables(C, H, W):
    f = int(math.sqrt(C))
    assert f * f == C, "DynVision's tables exist only for square channel counts"
    cc, yy, xx = np.meshgrid(np.arange(C), np.arange(H), np.arange(W), indexing="ij")
    plane_of_layer = tiles_to_plane(np.stack((cc, yy, xx), axis=-1), f)  # [fH, fW, 3]
    flat_plane = (plane_of_layer[..., 0] * H * W + plane_of_layer[..., 1] * W
                  + plane_of_layer[..., 2]).reshape(-1)
    py, px = np.meshgrid(np.arange(f * H), np.arange(f * W), indexing="ij")
    layer_of_plane = plane_to_tiles(np.stack((py, px), axis=-1), C, H, W, f)  # [C, H, W, 2]
    flat_layer = (layer_of_plane[..., 0] * (f * W) + layer_of_plane[..., 1]).reshape(-1)
    kernel = f // 4
    if kernel % 2 == 0:
        kernel += 1
    return f, flat_plane, flat_layer, max(3, kernel)


def generate(new_case):
    torch.manual_seed(2468)  # independent of the other reference modules
    for k, (C, H, W) in enumerate(DIMS):
        f, flat_plane, flat_layer, kernel = tables(C, H, W)
        x = torch.randn(2, C, H, W)
        fp = torch.from_numpy(flat_plane)
        fl = torch.from_numpy(flat_layer)
        plane = torch.gather(x.view(2, -1), 1, fp.expand(2, -1)).view(2, 1, f * H, f * W)
        y = torch.gather(plane.view(2, -1), 1, fl.expand(2, -1)).view(2, C, H, W)
        assert torch.equal(y, x)
        new_case(f"local_sheet_{k}").save(
            dims=np.array([C, H, W, kernel], dtype=np.int32),
            flat_plane_mapping=flat_plane.astype(np.int32),
            flat_layer_mapping=flat_layer.astype(np.int32),
            x=x, plane=plane, y=y)
    new_case("local_sheet_index").save(cases=np.array([len(DIMS)], dtype=np.int32))
    return len(DIMS)
