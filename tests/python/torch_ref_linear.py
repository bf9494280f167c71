"""PyTorch references for the fully connected layer (tests/kernels/test_linear.cpp, torch suite).

Cases linear_<k> hold x [N, In], w [Out, In], b [Out] (when has_bias), y = F.linear(x, w, b),
grad_y and the gradients of x, w and b; linear_index holds the number of cases.
"""
import torch
import torch.nn.functional as F

# (N, In, Out, bias)
CONFIGS = [(8, 64, 10, True), (1, 13, 7, True), (5, 32, 16, False)]


def generate(new_case):
    torch.manual_seed(2468)  # independent of the other reference modules
    for k, (n, i, o, bias) in enumerate(CONFIGS):
        x = torch.randn(n, i, requires_grad=True)
        w = (torch.randn(o, i) / i ** 0.5).requires_grad_()
        b = torch.randn(o, requires_grad=True) if bias else None
        y = F.linear(x, w, b)
        gy = torch.randn(y.shape)
        y.backward(gy)
        arrays = dict(x=x, w=w, y=y, grad_y=gy, grad_x=x.grad, grad_w=w.grad,
                      has_bias=torch.tensor([int(bias)], dtype=torch.int32))
        if bias:
            arrays.update(b=b, grad_b=b.grad)
        new_case(f"linear_{k}").save(**arrays)
    new_case("linear_index").save(cases=torch.tensor([len(CONFIGS)], dtype=torch.int32))
    return len(CONFIGS)
