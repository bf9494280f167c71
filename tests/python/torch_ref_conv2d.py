"""PyTorch references for conv2d (tests/kernels/test_conv2d.cpp, torch suite).

Case conv2d_<i>: x, w, b (if any), a random gy, y = F.conv2d / nn.Conv2d(padding_mode=...) and
the gradients gx, gw, gb of <y, gy>; params = [sh, sw, ph, pw, reflect, groups, has_bias].
"""
import numpy as np
import torch
import torch.nn.functional as F

# (N, Cin, H, W, Cout, KH, KW, stride, pad, mode, groups, bias)
CASES = [
    (2, 3, 12, 10, 8, 3, 3, (1, 1), (1, 1), "zeros", 1, True),
    (2, 3, 12, 10, 8, 3, 3, (1, 1), (1, 1), "reflect", 1, True),
    (2, 8, 11, 13, 6, 5, 5, (2, 2), (2, 2), "reflect", 1, False),
    (3, 6, 9, 9, 12, 3, 3, (2, 1), (1, 1), "zeros", 2, True),
    (2, 6, 10, 8, 6, 3, 3, (1, 1), (1, 1), "reflect", 3, True),
    (2, 8, 10, 10, 8, 3, 3, (1, 1), (1, 1), "reflect", 8, True),     # depthwise
    (2, 4, 9, 11, 8, 5, 3, (2, 1), (2, 1), "zeros", 4, False),       # depthwise, multiplier 2
    (2, 16, 8, 8, 24, 1, 1, (1, 1), (0, 0), "zeros", 1, True),       # pointwise
    (2, 16, 8, 8, 24, 1, 1, (2, 2), (0, 0), "zeros", 1, False),      # strided 1x1
    (2, 36, 16, 16, 64, 3, 3, (1, 1), (1, 1), "reflect", 1, True),   # a DyRCNN-like layer
    (1, 5, 7, 6, 4, 7, 3, (1, 2), (3, 1), "reflect", 1, True),       # 7x3 kernel
    (2, 4, 6, 6, 4, 3, 3, (1, 1), (2, 2), "zeros", 1, True),         # padding > needed
]


def generate(new_case):
    for i, (n, cin, h, w, cout, kh, kw, stride, pad, mode, groups, bias) in enumerate(CASES):
        x = torch.rand(n, cin, h, w, dtype=torch.float32) * 2 - 1
        bound = 1.0 / np.sqrt(cin // groups * kh * kw)
        wt = (torch.rand(cout, cin // groups, kh, kw) * 2 - 1) * bound
        b = (torch.rand(cout) * 2 - 1) * bound if bias else None
        conv = torch.nn.Conv2d(cin, cout, (kh, kw), stride=stride, padding=pad, groups=groups,
                               bias=bias, padding_mode=mode)
        with torch.no_grad():
            conv.weight.copy_(wt)
            if bias:
                conv.bias.copy_(b)
        xr = x.clone().requires_grad_(True)
        y = conv(xr)
        gy = torch.randn_like(y)
        y.backward(gy)
        # Cross-check nn.Conv2d's reflect path against explicit F.pad + F.conv2d.
        if mode == "reflect":
            ref = F.conv2d(F.pad(x, (pad[1], pad[1], pad[0], pad[0]), mode="reflect"), wt, b,
                           stride=stride, groups=groups)
            assert torch.allclose(ref, y.detach(), atol=1e-6)
        params = np.array([stride[0], stride[1], pad[0], pad[1], int(mode == "reflect"), groups,
                           int(bias)], dtype=np.int32)
        arrays = dict(params=params, x=x, w=wt, gy=gy, y=y, gx=xr.grad, gw=conv.weight.grad)
        if bias:
            arrays.update(b=b, gb=conv.bias.grad)
        new_case(f"conv2d_{i}").save(**arrays)
    return len(CASES)
