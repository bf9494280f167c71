"""PyTorch references for max and average pooling (tests/kernels/test_pool2d.cpp, torch suite).

Cases maxpool2d_<k> and avgpool2d_<k> hold x, params = [kh, kw, sh, sw, ph, pw,
count_include_pad], y, grad_y and grad_x (plus argmax for max pooling: flat h*W + w indices);
pool2d_index holds the number of cases of each kind. Random f32 inputs, odd and non-square sizes.
"""
import torch
import torch.nn.functional as F

# (kernel, stride, padding) as (h, w) pairs: DynVision's (3,2,1) and identity (1,1,0), plus
# non-overlapping, overlapping stride-1 and asymmetric windows.
CONFIGS = [
    ((3, 3), (2, 2), (1, 1)),
    ((2, 2), (2, 2), (0, 0)),
    ((3, 3), (1, 1), (1, 1)),
    ((1, 1), (1, 1), (0, 0)),
    ((3, 2), (2, 1), (1, 0)),
]
SHAPES = [(2, 3, 9, 9), (2, 4, 16, 16), (1, 2, 7, 10)]


def params(k, s, p, cip):
    return torch.tensor([k[0], k[1], s[0], s[1], p[0], p[1], int(cip)], dtype=torch.int32)


def generate(new_case):
    torch.manual_seed(1234)  # independent of the other reference modules
    n_max = 0
    for k, s, p in CONFIGS:
        for shape in SHAPES:
            x = torch.randn(shape, requires_grad=True)
            y, idx = F.max_pool2d(x, k, s, p, return_indices=True)
            gy = torch.randn(y.shape)
            y.backward(gy)
            new_case(f"maxpool2d_{n_max}").save(x=x, params=params(k, s, p, True), y=y,
                                                 argmax=idx, grad_y=gy, grad_x=x.grad)
            n_max += 1
    n_avg = 0
    for k, s, p in CONFIGS:
        for cip in (True, False):
            for shape in SHAPES[::2]:
                x = torch.randn(shape, requires_grad=True)
                y = F.avg_pool2d(x, k, s, p, count_include_pad=cip)
                gy = torch.randn(y.shape)
                y.backward(gy)
                new_case(f"avgpool2d_{n_avg}").save(x=x, params=params(k, s, p, cip), y=y,
                                                     grad_y=gy, grad_x=x.grad)
                n_avg += 1
    new_case("pool2d_index").save(max_cases=torch.tensor([n_max], dtype=torch.int32),
                                  avg_cases=torch.tensor([n_avg], dtype=torch.int32))
    return n_max + n_avg
