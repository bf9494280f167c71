"""PyTorch references for the optimisers (engine/optim/optimizer.h): torch.optim.SGD (momentum 0.9,
weight decay 5e-4, plain and Nesterov), Adam (weight decay 5e-4) and AdamW (weight decay 1e-2),
all with foreach=False, run 5 steps on three small f32 parameters in DynVision-like groups (names
with "recurrence" x0.2, "feedback" x0.5 of the base lr) from fixed random gradients. Saves the
initial parameters, the gradients of every step and the parameters after every step."""
import torch

NAMES = ["conv.weight", "recurrence.weight", "feedback.bias"]
FACTORS = [1.0, 0.2, 0.5]
# Sizes: multiples of 16 (torch's AVX2 vector loop) and one with a scalar tail (7).
SHAPES = [(4, 2, 2, 2), (16, 4), (7,)]
STEPS = 5


def make(kind, params, lr):
    groups = [{"params": [p], "lr": lr * f} for p, f in zip(params, FACTORS)]
    if kind == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9, weight_decay=5e-4, foreach=False)
    if kind == "sgd_nesterov":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9, weight_decay=5e-4, nesterov=True,
                               foreach=False)
    if kind == "adam":
        return torch.optim.Adam(groups, lr=lr, weight_decay=5e-4, foreach=False)
    if kind == "adamw":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=1e-2, foreach=False)
    raise ValueError(kind)


def generate(new_case):
    torch.manual_seed(2024)
    cases = {"sgd": 0.05, "sgd_nesterov": 0.05, "adam": 1e-3, "adamw": 2e-3}
    for kind, lr in cases.items():
        params = [torch.randn(*s, dtype=torch.float32, requires_grad=True) for s in SHAPES]
        arrays = {f"p{i}_init": p.detach().clone() for i, p in enumerate(params)}
        opt = make(kind, params, lr)
        for step in range(STEPS):
            for i, p in enumerate(params):
                g = torch.randn(*p.shape, dtype=torch.float32) * (0.5 + i)
                p.grad = g
                arrays[f"g{i}_s{step}"] = g.clone()
            opt.step()
            for i, p in enumerate(params):
                arrays[f"p{i}_s{step}"] = p.detach().clone()
        new_case(f"optim_{kind}").save(**arrays)
    return len(cases)
