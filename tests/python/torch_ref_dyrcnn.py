"""An independent PyTorch re-implementation of DynVision's DyRCNNx4 forward dynamics (spec §1-§5),
float32 on the CPU, as the reference for tests/models/dyrcnn/torch_dyrcnn.cpp (torch suite);
run_model (with idle steps, TBPTT cuts and an activity hook) also serves torch_ref_bptt.py.

Per step t and area A (V1, V2, V4, IT in order): drive u = conv(in) [+ R(r_A(t-d))]
[+ Tskip(r_src(t-s))] [+ Tfb(r_src(t-f))], absent terms left out; Euler x = h + (dt/tau)(u - h)
with h = r_A(t-1) (newest history entry) or the solver's private pre-ReLU memory; r = ReLU(x);
forwarded output pool(r(t-k)); logits = Linear(mean_HW(r_IT(t-k))), exactly 0 while absent.

Case dyrcnn_<i>/: input [2, 10, 3, 16, 16]; options = [t_ff, t_rec, t_skip, t_fb, skip,
feedback (0 none, 1 add, 2 mul), tau, dt, recurrence (0 full, 1 self, 2 depthpointwise), K,
exact]; logits [B, T, K]; rates_<area> [B, T, C, H, W] (0 while absent); present_<area> [T];
case dyrcnn_<i>/weights.safetensors: every parameter under its DynVision state_dict name.
exact = 1: "sparse" weights (one nonzero power of two per output of every conv), so each conv
output is w*x + b with w*x exact and the result does not depend on the summation order.
"""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "tools" / "python"))
import safetensors_io  # noqa: E402  (tools/python, numpy only)
import collections
import math

import numpy as np
import torch
import torch.nn.functional as F

B, T, SIZE = 2, 10, 16
# (name, out channels, ff stride, MaxPool(3, 2, 1) after the delay)
AREAS = [("V1", 36, 1, True), ("V2", 64, 1, True), ("V4", 121, 1, False), ("IT", 256, 2, False)]
SKIPS = {"V4": "V1", "IT": "V2"}       # target: source (addskip_<target>)
FEEDBACKS = {"V1": "V4", "V2": "IT"}   # target: source (addfeedback_<target>)
REC_CODES = {"full": 0, "self": 1, "depthpointwise": 2}
FB_CODES = {"none": 0, "add": 1, "mul": 2}


def cfg(t_ff, t_rec, t_skip, t_fb, skip, feedback, tau, dt=2.0, rec="full", K=10):
    return dict(t_ff=t_ff, t_rec=t_rec, t_skip=t_skip, t_fb=t_fb, skip=skip, feedback=feedback,
                tau=tau, dt=dt, rec=rec, K=K)


# The ten configurations of the spec's bit-exactness check (t_ff in {0,2,4}, t_rec in
# {0,2,6,10}, t_skip in {0,4}, feedback off/on with t_fb in {0,6,10}, tau in {3,5}), then
# recurrence self and depthpointwise, multiplicative feedback, odd dt/tau/t_rec values, and the
# N = 0 buffer (t_rec = 0, no skip, no feedback: the solver's private memory every step).
CONFIGS = [
    cfg(0, 6, 0, 30, True, "none", 5.0),
    cfg(0, 2, 4, 30, True, "none", 3.0),
    cfg(2, 6, 0, 30, True, "none", 5.0),
    cfg(4, 10, 4, 30, True, "none", 3.0),
    cfg(0, 0, 0, 30, True, "none", 5.0),
    cfg(0, 6, 0, 0, True, "add", 5.0),
    cfg(0, 6, 4, 6, True, "add", 3.0),
    cfg(2, 2, 0, 10, True, "add", 3.0),
    cfg(4, 6, 0, 6, False, "add", 5.0),
    cfg(0, 10, 4, 10, True, "add", 5.0),
    cfg(0, 6, 0, 30, True, "none", 5.0, rec="self"),
    cfg(0, 6, 4, 6, True, "add", 3.0, rec="depthpointwise"),
    cfg(0, 6, 0, 6, True, "mul", 5.0),
    cfg(0.1, 0.7, 0.2, 0.3, True, "add", 3.0, dt=0.1, K=7),
    cfg(0, 0, 0, 30, False, "none", 5.0),
]


# ---- parameters ---------------------------------------------------------------------------
def sparse_conv_weight(gen, shape, exponents, p_pos=0.75):
    """One nonzero +-2^e per output channel (at a random input channel and tap)."""
    w = torch.zeros(shape)
    cout, cin, kh, kw = shape
    for o in range(cout):
        i, y, x = (int(torch.randint(n, (), generator=gen)) for n in (cin, kh, kw))
        e = exponents[int(torch.randint(len(exponents), (), generator=gen))]
        s = 1.0 if float(torch.rand((), generator=gen)) < p_pos else -1.0
        w[o, i, y, x] = s * 2.0 ** e
    return w


def make_params(c, exact, gen):
    p = collections.OrderedDict()

    def uniform(shape, bound):
        return (torch.rand(shape, generator=gen) * 2 - 1) * bound

    def normal(shape, std):
        return torch.randn(shape, generator=gen) * std

    def conv_param(name, shape, dense, exponents, bias_scale):
        p[name + ".weight"] = sparse_conv_weight(gen, shape, exponents) if exact else dense(shape)
        p[name + ".bias"] = uniform(shape[0], bias_scale)

    def kaiming(shape):
        return normal(shape, math.sqrt(2.0 / (shape[1] * shape[2] * shape[3])))

    def rec_uniform(shape):
        return uniform(shape, 0.05)

    def normal05(shape):
        return normal(shape, 0.05)

    cin = 3
    for name, ch, _, _ in AREAS:
        conv_param(f"{name}.conv", (ch, cin, 3, 3), kaiming, [0, -1], 0.1)
        if c["rec"] == "full":
            conv_param(f"{name}.recurrence.conv", (ch, ch, 3, 3), rec_uniform,
                       [-3, -4, -5], 0.05)
        elif c["rec"] == "depthpointwise":
            conv_param(f"{name}.recurrence.depthwise_conv", (ch, 1, 3, 3),
                       lambda s: uniform(s, 0.3), [-1, -2], 0.05)
            conv_param(f"{name}.recurrence.pointwise_conv", (ch, ch, 1, 1),
                       rec_uniform, [-2, -3], 0.05)
        elif c["rec"] == "self":
            # DynVision's SelfConnection: weight and bias are 1-element tensors; the bias is
            # only added while it is nonzero (spec §3), so give it a nonzero value here.
            p[f"{name}.recurrence.weight"] = uniform(1, 0.3)
            p[f"{name}.recurrence.bias"] = uniform(1, 0.05)
        cin = ch
    chans = {name: ch for name, ch, _, _ in AREAS}
    if c["skip"]:
        for tgt, src in SKIPS.items():
            conv_param(f"addskip_{tgt}.conv", (chans[tgt], chans[src], 1, 1),
                       normal05, [-2, -3, -4], 0.05)
    if c["feedback"] != "none":
        for tgt, src in FEEDBACKS.items():
            conv_param(f"addfeedback_{tgt}.conv", (chans[tgt], chans[src], 1, 1),
                       normal05, [-2, -3, -4], 0.05)
    p["classifier.2.weight"] = normal((c["K"], 256), 0.1)
    p["classifier.2.bias"] = normal(c["K"], 0.1)
    for name, _, _, _ in AREAS:
        p[f"tau_{name}"] = torch.tensor(c["tau"], dtype=torch.float32)  # 0-dim f32, as torch.tensor(tau)
    return p


# ---- DynVision's machinery, re-implemented -------------------------------------------------
class History:
    """An area's history: a deque of capacity N; get(L) is the L-th newest entry (L = 0 is
    treated as 1), None when fewer than L entries exist (always when L > N). None entries
    (an absent area) are stored as such."""

    def __init__(self, n):
        self.q = collections.deque(maxlen=n)

    def append(self, x):
        self.q.append(x)

    def get(self, lag):
        lag = max(1, lag)
        return self.q[-lag] if lag <= len(self.q) else None

    def detach(self):
        """Cuts BPTT at the stored values (DynVision detaches its buffers in place)."""
        for i, x in enumerate(self.q):
            if x is not None:
                self.q[i] = x.detach()


class Euler:
    """DynVision's EulerStep: y = h + dt / tau * (u - h); without h, the private memory of the
    last value returned (written only on calls without h); without both, dt / tau * u."""

    def __init__(self, dt, tau):
        self.dt, self.tau, self.memory = dt, tau, None

    def __call__(self, u, h):
        if u is None:
            return None
        own = h is None
        if own and self.memory is not None:
            h = self.memory
        y = self.dt / self.tau * u if h is None else h + self.dt / self.tau * (u - h)
        if own:
            self.memory = y
        return y


def run_model(c, p, frames, idle=0, tbptt=0, hook=None):
    """Runs the model on frames [B, T, C, H, W]; returns logits [B, T, K], rates and presence.
    idle: steps on a zero frame first; tbptt: detach the rings after every n-th real step;
    hook(module, output): called on real steps for every Conv2d/Linear output (activity loss)."""
    hook = hook or (lambda name, y: None)
    dt = c["dt"]
    skip, fb = c["skip"], c["feedback"]
    H = max(c["t_ff"], c["t_rec"], c["t_fb"] if fb != "none" else 0,
            c["t_skip"] + dt if skip else 0)
    N = int(H / dt)
    k = int(c["t_ff"] / dt)                 # forwarded output r(t - k)
    d = max(1, int(c["t_rec"] / dt))        # recurrence reads r(t - d)
    s = round(c["t_skip"] / dt)             # skip reads index s + 1 after the source's push
    f = max(1, round(c["t_fb"] / dt))       # feedback reads r_src(t - f), source not yet pushed
    hist = {name: History(N) for name, _, _, _ in AREAS}
    solver = {name: Euler(dt, p[f"tau_{name}"]) for name, _, _, _ in AREAS}
    sizes = {}
    h_ = SIZE
    for name, ch, stride, pool in AREAS:
        h_ = (h_ + 2 - 3) // stride + 1
        sizes[name] = (ch, h_)
        if pool:
            h_ = (h_ + 2 - 3) // 2 + 1

    def transform(prefix, r, tgt):
        y = F.conv2d(r, p[prefix + ".conv.weight"], p[prefix + ".conv.bias"])
        th = sizes[tgt][1]
        if y.shape[-1] != th:
            y = F.interpolate(y, size=(th, th), mode="nearest")
        return y

    def recurrence(name, h):
        if c["rec"] == "full":
            w = p[f"{name}.recurrence.conv.weight"]
            return F.conv2d(h, w, p[f"{name}.recurrence.conv.bias"], padding=1)
        if c["rec"] == "depthpointwise":
            q = F.conv2d(h, p[f"{name}.recurrence.depthwise_conv.weight"],
                         p[f"{name}.recurrence.depthwise_conv.bias"], padding=1,
                         groups=h.shape[1])
            return F.conv2d(q, p[f"{name}.recurrence.pointwise_conv.weight"],
                            p[f"{name}.recurrence.pointwise_conv.bias"])
        out = h * p[f"{name}.recurrence.weight"]
        b = p[f"{name}.recurrence.bias"]
        return out + b if bool(b) else out

    B_, T_ = frames.shape[0], frames.shape[1]
    logits = torch.zeros(B_, T_, c["K"])
    rates = {name: torch.zeros(B_, T_, ch, sz, sz) for name, (ch, sz) in sizes.items()}
    present = {name: np.zeros(T_, dtype=np.int32) for name in sizes}

    def detach_rings():
        for q in hist.values():
            q.detach()

    def step(x, t, hook):
        """One step on frame x; t is the real step (None while idle, when nothing is recorded
        and hook, called as hook(module, output) for every Conv2d/Linear output, is not)."""
        seen = hook if t is not None else (lambda name, y: None)
        for name, ch, stride, pool in AREAS:
            # layer: feedforward conv, then the recurrent term
            u = None if x is None else F.conv2d(x, p[f"{name}.conv.weight"],
                                                p[f"{name}.conv.bias"], stride=stride, padding=1)
            if u is not None:
                seen(f"{name}.conv", u)
            h = hist[name].get(d)
            if h is not None:
                g = recurrence(name, h)
                seen(f"{name}.recurrence", g)
                u = g if u is None else u + g
            # addskip
            if skip and name in SKIPS:
                hs = hist[SKIPS[name]].get(s + 1)
                if hs is not None:
                    g = transform(f"addskip_{name}", hs, name)
                    seen(f"addskip_{name}", g)
                    u = g if u is None else u + g
            # addfeedback
            if fb != "none" and name in FEEDBACKS:
                hf = hist[FEEDBACKS[name]].get(f)
                if hf is not None:
                    g = transform(f"addfeedback_{name}", hf, name)
                    seen(f"addfeedback_{name}", g)
                    if u is None:
                        u = g
                    elif fb == "add":
                        u = u + g
                    else:
                        u = u * (1 + torch.tanh(g))
            # tstep, nonlin, record
            y = solver[name](u, hist[name].get(1))
            r = None if y is None else F.relu(y)
            if r is not None and t is not None:
                rates[name][:, t] = r
                present[name][t] = 1
            # delay: read r(t - k) (k = 0: r itself), then push r
            out = r if k == 0 else hist[name].get(k)
            hist[name].append(r)
            # pool
            if out is not None and pool:
                out = F.max_pool2d(out, 3, 2, 1)
            x = out
        if x is not None and t is not None:
            feat = F.adaptive_avg_pool2d(x, 1).flatten(1)
            z = F.linear(feat, p["classifier.2.weight"], p["classifier.2.bias"])
            logits[:, t] = z
            seen("classifier", z)  # z, not the view of logits (written in place later)

    # Idle phase (spec §5): steps on a frame of non_input_value (0), then the rings are
    # detached (the solvers' private memories are not).
    if idle > 0:
        for _ in range(idle):
            step(torch.zeros_like(frames[:, 0]), None, hook)
        detach_rings()
    for t in range(T_):
        step(frames[:, t], t, hook)
        if tbptt > 0 and (t + 1) % tbptt == 0:  # TBPTT: after every n-th real step
            detach_rings()
    return logits, rates, present


def generate(new_case):
    gen = torch.Generator().manual_seed(7001)  # local: leaves the global stream to the others
    n = 0
    for c in CONFIGS:
        for exact in (False, True):
            p = make_params(c, exact, gen)
            frames = torch.rand(B, T, 3, SIZE, SIZE, generator=gen)
            with torch.no_grad():
                logits, rates, present = run_model(c, p, frames)
            name = f"dyrcnn_{n}"
            options = np.array([c["t_ff"], c["t_rec"], c["t_skip"], c["t_fb"], int(c["skip"]),
                                FB_CODES[c["feedback"]], c["tau"], c["dt"], REC_CODES[c["rec"]],
                                c["K"], int(exact)], dtype=np.float64)
            arrays = dict(options=options, input=frames, logits=logits)
            for a in rates:
                arrays[f"rates_{a}"] = rates[a]
                arrays[f"present_{a}"] = present[a]
            new_case(name).save(**arrays)
            # The weights go through safetensors, as users' DynVision weights do.
            safetensors_io.save(str(new_case(name).dir / "weights.safetensors"),
                                {k: v.detach().numpy() for k, v in p.items()},
                                {"format": "dynvision-state-dict"})
            n += 1
    return n
