"""PyTorch references for the nearest resize (tests/kernels/test_resize.cpp, torch suite).

Cases resize_<k> hold x, y = interpolate(x, size, mode='nearest'), grad_y and grad_x;
resize_index holds the number of cases. DynVision's 64<->16 and 32<->8, non-integer factors
(5->3, 3->7) and non-square sizes with H and W resized independently.
"""
import torch
import torch.nn.functional as F

# ((H, W), (Ho, Wo))
SIZES = [
    ((64, 64), (16, 16)),
    ((16, 16), (64, 64)),
    ((32, 32), (8, 8)),
    ((8, 8), (32, 32)),
    ((5, 5), (3, 3)),
    ((3, 3), (7, 7)),
    ((5, 8), (3, 7)),
    ((6, 4), (9, 10)),
    ((7, 3), (2, 11)),
]


def generate(new_case):
    torch.manual_seed(4321)  # independent of the other reference modules
    for k, (src, dst) in enumerate(SIZES):
        x = torch.randn((2, 3) + src, requires_grad=True)
        y = F.interpolate(x, size=dst, mode="nearest")
        gy = torch.randn(y.shape)
        y.backward(gy)
        new_case(f"resize_{k}").save(x=x, y=y, grad_y=gy, grad_x=x.grad)
    # PyTorch's source index for every (in, out) pair up to 70: index[in-1, out-1, i], -1 past out.
    table = torch.full((70, 70, 70), -1, dtype=torch.int32)
    for a in range(1, 71):
        row = torch.arange(a, dtype=torch.float64).view(1, 1, 1, a)
        for b in range(1, 71):
            table[a - 1, b - 1, :b] = F.interpolate(row, size=(1, b), mode="nearest").view(-1).int()
    new_case("resize_index_table").save(index=table)
    new_case("resize_index").save(cases=torch.tensor([len(SIZES)], dtype=torch.int32))
    return len(SIZES)
