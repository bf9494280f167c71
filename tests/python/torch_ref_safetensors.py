"""safetensors interchange: a small DynVision-style state dict (f32 weights, 0-dim taus, int64
buffers, a bf16 and an f16 tensor, alias keys) saved with torch.save, as a plain state_dict and as a
Lightning checkpoint, exported by tools/python/export_dynvision.py. Every tensor is also saved as
.npy (bf16/f16 as their exact f32 values) so the C++ side compares what it loads bit for bit. Also
records the exporter's exit code and message for an unreadable input, and a BF16 file written raw.
"""
import pathlib
import subprocess
import sys

import numpy as np
import torch

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXPORTER = ROOT / "tools" / "python" / "export_dynvision.py"
sys.path.insert(0, str(EXPORTER.parent))
import safetensors_io  # noqa: E402


def state_dict():
    torch.manual_seed(202)
    v1_w = torch.randn(36, 3, 3, 3)
    sd = {
        "V1.conv.weight": v1_w,
        "V1.conv.bias": torch.randn(36),
        "V1.recurrence.local_conv.conv.weight": torch.randn(36, 1, 5, 5, dtype=torch.float64),
        "V1.recurrence.local_conv.flat_plane_mapping": torch.randperm(36, dtype=torch.int64) * 1000,
        "tau_V1": torch.tensor(9.0),
        "tstep_V1.tau": torch.tensor(9.0),  # DynVision's alias of tau_V1
        "addskip_V4.source.conv.weight": v1_w.clone(),  # alias of V1.conv.weight
        "n_residual_timesteps": torch.tensor(7, dtype=torch.int64),
        "classifier.2.weight": torch.randn(10, 36).to(torch.bfloat16),
        "supralin.n": torch.randn(4).to(torch.float16),
        "V2.mask": torch.tensor([True, False, True]),
        "empty.buffer": torch.zeros(0, 4),
    }
    return sd


def run_exporter(pt, out):
    r = subprocess.run([sys.executable, str(EXPORTER), str(pt), str(out)],
                       capture_output=True, text=True)
    return r.returncode, r.stdout + r.stderr


def generate(new_case):
    sd = state_dict()
    count = 0
    for name, obj in [("safetensors_plain", sd),
                      ("safetensors_lightning",
                       {"epoch": 3, "state_dict": {"model." + k: v for k, v in sd.items()}})]:
        case = new_case(name)
        pt = case.dir / "weights.pt"
        torch.save(obj, pt)
        rc, msg = run_exporter(pt, case.dir / "weights.safetensors")
        if rc != 0:
            raise RuntimeError(f"export_dynvision.py failed on {pt}: {msg}")
        # np.save directly: Case.save's np.ascontiguousarray would make the 0-dim taus [1].
        for k, v in sd.items():
            if v.dtype in (torch.bfloat16, torch.float16):
                v = v.to(torch.float32)  # exact
            np.save(case.dir / f"{k}.npy", v.numpy())
        count += 1

    # An unreadable input: the C++ test checks the exit code (65) and the message.
    case = new_case("safetensors_bad_input")
    bad = case.dir / "garbage.pt"
    bad.write_bytes(b"this is not a torch file")
    rc, msg = run_exporter(bad, case.dir / "never.safetensors")
    (case.dir / "message.txt").write_text(msg)
    rc_missing, _ = run_exporter(case.dir / "missing.pt", case.dir / "never.safetensors")
    case.save(rc=np.array([rc, rc_missing], dtype=np.int32))
    count += 1

    # Raw BF16 and F16 data, so that dynsim's conversions meet torch's on awkward values
    # (subnormals, infinities, negative zero, the largest finite values).
    case = new_case("safetensors_half")
    special = [0.0, -0.0, 1.0, -2.5, 65504.0, -65504.0, 6.1e-5, 6e-8, 3e-5, float("inf"),
               float("-inf"), 1e-40, 3.0e38]
    x = torch.cat([torch.tensor(special), torch.randn(51) * 100])
    bf, hf = x.to(torch.bfloat16), x.to(torch.float16)
    safetensors_io.save(case.dir / "half.safetensors",
                        {"bf16": bf.view(torch.int16).numpy().view(np.uint16), "f16": hf.numpy()},
                        {"note": "raw half precision"}, dtypes={"bf16": "BF16"})
    case.save(bf16=bf.to(torch.float32), f16=hf.to(torch.float32))
    count += 1
    return count
