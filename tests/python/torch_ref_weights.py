"""Weights from DynVision to dynsim (tests/models/common/test_weights.cpp, torch suite).

Builds a torch module tree with DynVision's DyRCNNx4 names (32x32 input, K = 10, full recurrence,
skip connections, no feedback), so that its state_dict holds what DynVision writes: the
parameters, the alias keys of shared modules (addskip_V4.source.* is V1, addskip_IT.source.* is
V2; tstep_<area>.tau is tau_<area>) and the n_residual_timesteps buffer. Saves it with torch.save
as a plain state_dict and as a Lightning checkpoint ('model.' prefix), converts both with
tools/python/export_dynvision.py, and writes every parameter as params/<name>.npy.

Case weights_dyrcnnx4/: weights.safetensors, checkpoint.safetensors, params/<name>.npy.
"""
import pathlib
import subprocess
import sys

import torch
from torch import nn

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXPORTER = ROOT / "tools" / "python" / "export_dynvision.py"
AREAS = [("V1", 3, 36), ("V2", 36, 64), ("V4", 64, 121), ("IT", 121, 256)]  # name, in, out
SKIPS = {"V4": "V1", "IT": "V2"}  # target: source
K = 10


class Recurrence(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)


class Area(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        self.recurrence = Recurrence(cout)


class Skip(nn.Module):
    """DynVision's skip keeps a reference to its source area: state_dict lists it again."""

    def __init__(self, source, cin, cout):
        super().__init__()
        self.source = source
        self.conv = nn.Conv2d(cin, cout, 1)


class TimeStep(nn.Module):
    """DynVision's Euler step holds the area's tau parameter again (tstep_<area>.tau)."""

    def __init__(self, tau):
        super().__init__()
        self.tau = tau


class DyRCNNx4Names(nn.Module):
    def __init__(self, gen):
        super().__init__()
        chans = {}
        for name, cin, cout in AREAS:
            setattr(self, name, Area(cin, cout))
            chans[name] = cout
            tau = nn.Parameter(torch.tensor(5.0 + len(chans)), requires_grad=False)  # 0-dim
            setattr(self, f"tau_{name}", tau)
            setattr(self, f"tstep_{name}", TimeStep(tau))
        for tgt, src in SKIPS.items():
            setattr(self, f"addskip_{tgt}", Skip(getattr(self, src), chans[src], chans[tgt]))
        self.classifier = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(256, K))
        self.register_buffer("n_residual_timesteps", torch.tensor(3, dtype=torch.int64))
        with torch.no_grad():  # distinct values everywhere, so a swapped tensor shows
            for p in self.parameters():
                if p.dim() > 0:
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.1)


def export(pt, out):
    r = subprocess.run([sys.executable, str(EXPORTER), str(pt), str(out)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"export_dynvision.py {pt} failed ({r.returncode}): {r.stderr}")


def generate(new_case):
    gen = torch.Generator().manual_seed(2024)
    model = DyRCNNx4Names(gen)
    sd = model.state_dict()
    assert "addskip_V4.source.conv.weight" in sd and "tstep_V1.tau" in sd
    case = new_case("weights_dyrcnnx4")
    torch.save(sd, case.dir / "state_dict.pt")
    export(case.dir / "state_dict.pt", case.dir / "weights.safetensors")
    torch.save({"epoch": 3, "state_dict": {"model." + k: v for k, v in sd.items()}},
               case.dir / "checkpoint.ckpt")
    export(case.dir / "checkpoint.ckpt", case.dir / "checkpoint.safetensors")
    aliases = ("addskip_V4.source.", "addskip_IT.source.", "tstep_")
    params = {k: v for k, v in sd.items()
              if not k.startswith(aliases) and k != "n_residual_timesteps"}
    new_case("weights_dyrcnnx4/params").save(**params)
    return 1
