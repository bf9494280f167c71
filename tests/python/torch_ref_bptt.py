"""PyTorch autograd references for dynsim's reverse mode through time (engine/autograd/bptt.h), on the
DyRCNNx4 re-implementation of torch_ref_dyrcnn.py (run_model, make_params), float32 throughout.

Loss = CE(logits (B*T, K), labels, ignore_index=-1) (mean over the valid entries)
     + activity_weight * legacy activity loss (spec §6, "before March 2026"): every connection
operator output (feedforward conv, recurrence, skip/feedback 1x1 after its resize) and the
logits, per sample sum|out| / n_units, summed over the real steps where the module ran, divided
by (n_modules * T) with n_modules the number of such modules in the model, averaged over B.
Idle steps run on a zero frame first, then the rings are detached (the solvers' private memory
is not); tbptt = n detaches the rings after every n-th real step.

Case bptt_<i>/: options = the 11 of dyrcnn_<i> (exact = 0: dense weights), then [idle, tbptt,
activity_weight, train_tau]; input [B, T, 3, 16, 16]; labels i32 [B, T] (-1: masked); logits
[B, T, K]; loss f64 [total, ce, activity]; weights.safetensors (every parameter);
grads/<parameter>.npy for every trainable parameter (tau_<area> only with train_tau; zeros
where the parameter does not reach the loss).
"""
import collections
import pathlib
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "tools" / "python"))
import safetensors_io  # noqa: E402  (tools/python, numpy only)
import torch_ref_dyrcnn as dy  # noqa: E402

B = 2


def case(c, T, idle=0, tbptt=0, activity_weight=0.0, train_tau=False):
    return dict(c=c, T=T, idle=idle, tbptt=tbptt, aw=activity_weight, train_tau=train_tau)


CASES = [
    # DynVision's defaults (t_rec 6, skip, no feedback)
    case(dy.cfg(0, 6, 0, 30, True, "none", 5.0), 10),
    # additive feedback (acting from step 3) with the activity loss on every module kind
    case(dy.cfg(0, 6, 4, 6, True, "add", 3.0), 10, activity_weight=0.1),
    case(dy.cfg(0, 6, 0, 6, True, "mul", 5.0), 10),
    # t_ff > 0: areas and the logits start late (logits from step 4); modules run late
    case(dy.cfg(2, 6, 0, 30, True, "none", 5.0), 10, activity_weight=0.1),
    case(dy.cfg(0, 6, 0, 30, True, "none", 5.0, rec="self"), 9),
    case(dy.cfg(0, 6, 4, 6, True, "add", 3.0, rec="depthpointwise"), 9),
    # idle steps; then N = 0 (no rings at all), where only the solvers' private memory carries
    # the state, and so the gradient, across the idle cut
    case(dy.cfg(0, 6, 0, 6, True, "add", 5.0), 8, idle=3),
    case(dy.cfg(0, 0, 0, 30, False, "none", 5.0), 8, idle=3),
    case(dy.cfg(0, 6, 4, 6, True, "add", 3.0), 10, tbptt=3),
    case(dy.cfg(0, 6, 0, 6, True, "add", 3.0), 9, train_tau=True),
    # everything at once: late areas, idle, TBPTT, trainable tau
    case(dy.cfg(2, 6, 0, 10, True, "add", 5.0), 10, idle=2, tbptt=4, train_tau=True),
]


def n_modules(c):
    """Connection operators of the model plus the classifier (the Conv2d/Linear count)."""
    n = 4 + (4 if c["rec"] in ("full", "self", "depthpointwise") else 0) + 1
    n += len(dy.SKIPS) if c["skip"] else 0
    n += len(dy.FEEDBACKS) if c["feedback"] != "none" else 0
    return n


def loss_and_grads(k, p, frames, labels):
    c, T = k["c"], k["T"]
    trainable = [n for n in p if not n.startswith("tau_") or k["train_tau"]]
    for n in trainable:
        p[n].requires_grad_(True)
    activity = torch.zeros(B)

    def hook(name, y):
        nonlocal activity
        activity = activity + y.abs().flatten(1).mean(1)  # sum|out| / n_units per sample

    logits, _, _ = dy.run_model(c, p, frames, idle=k["idle"], tbptt=k["tbptt"], hook=hook)
    ce = F.cross_entropy(logits.reshape(B * T, c["K"]), labels.reshape(-1).long(),
                         ignore_index=-1)
    act = (activity / (n_modules(c) * T)).mean()
    total = ce + k["aw"] * act
    grads = torch.autograd.grad(total, [p[n] for n in trainable], allow_unused=True)
    grads = {n: torch.zeros_like(p[n]) if g is None else g for n, g in zip(trainable, grads)}
    for n in trainable:
        p[n].requires_grad_(False)
    return logits.detach(), (total.item(), ce.item(), act.item()), grads


def generate(new_case):
    gen = torch.Generator().manual_seed(7101)  # local: leaves the global stream to the others
    for i, k in enumerate(CASES):
        c, T = k["c"], k["T"]
        p = dy.make_params(c, False, gen)
        frames = torch.rand(B, T, 3, dy.SIZE, dy.SIZE, generator=gen)
        labels = torch.randint(c["K"], (B, T), generator=gen)
        labels[torch.rand(B, T, generator=gen) < 0.3] = -1
        # The reference is computed in float64 from the same float32 weights and frames (exact
        # conversions) and rounded to float32 when saved: torch's own float32 gradients of the
        # self-recurrence case differ from its float64 ones by 2e-3 on some CPUs (a ReLU kink
        # within float32 rounding), which is torch's error, not the one being tested.
        torch.set_default_dtype(torch.float64)
        try:
            logits, loss, grads = loss_and_grads(k, {n: v.double() for n, v in p.items()},
                                                 frames.double(), labels)
        finally:
            torch.set_default_dtype(torch.float32)
        logits = logits.float()
        grads = {n: g.float() for n, g in grads.items()}
        name = f"bptt_{i}"
        options = np.array([c["t_ff"], c["t_rec"], c["t_skip"], c["t_fb"], int(c["skip"]),
                            dy.FB_CODES[c["feedback"]], c["tau"], c["dt"],
                            dy.REC_CODES[c["rec"]], c["K"], 0, k["idle"], k["tbptt"], k["aw"],
                            int(k["train_tau"])], dtype=np.float64)
        new_case(name).save(options=options, input=frames, labels=labels.int(), logits=logits,
                            loss=np.array(loss, dtype=np.float64))
        new_case(name + "/grads").save(**grads)
        safetensors_io.save(str(new_case(name).dir / "weights.safetensors"),
                            {n: v.detach().numpy() for n, v in p.items()},
                            {"format": "dynvision-state-dict"})
    return len(CASES)
