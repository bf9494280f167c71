"""PyTorch references for the parametric softplus y = a * softplus(b * x) (kernels/softplus.h):
output and the gradients of x, a and b of L = sum(r * y) for a fixed random r."""
import torch
import torch.nn.functional as F


def generate(new_case):
    torch.manual_seed(101)
    cases = {"softplus_pos": (1.3, 0.9), "softplus_neg_b": (0.6, -2.2)}
    for name, (a0, b0) in cases.items():
        x = (torch.randn(2, 3, 8, 8) * 3).requires_grad_()
        a = torch.tensor([a0], requires_grad=True)
        b = torch.tensor([b0], requires_grad=True)
        r = torch.rand(2, 3, 8, 8) * 2 - 1
        y = a * F.softplus(b * x)
        (y * r).sum().backward()
        new_case(name).save(x=x, a=a, b=b, r=r, y=y, grad_x=x.grad, grad_a=a.grad, grad_b=b.grad)
    return len(cases)
