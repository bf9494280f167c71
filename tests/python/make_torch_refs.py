#!/usr/bin/env python3
"""Writes PyTorch reference arrays for the torch agreement suite (tests/main.cpp --suite=torch).

Every module tests/python/torch_ref_*.py defines generate(case) and is called with a helper that
saves named arrays under OUT/<case>/<name>.npy. Inputs are fixed random draws (seeded); the
C++ side loads the inputs, runs dynsim's ops and compares with PyTorch's outputs and gradients.
Exits 77 (skipped) when numpy or torch are not importable, e.g. under a python without them.
"""
import importlib.util
import os
import pathlib
import shutil
import sys

try:
    import numpy as np
    import torch
except ImportError as e:  # pragma: no cover
    print(f"SKIPPED: PyTorch reference data needs numpy and torch ({e}); "
          "run with /usr/bin/python3 after installing python3-torch")
    sys.exit(77)


class Case:
    def __init__(self, root, name):
        self.dir = root / name
        self.dir.mkdir(parents=True, exist_ok=True)

    def save(self, **arrays):
        for k, v in arrays.items():
            if isinstance(v, torch.Tensor):
                v = v.detach().cpu().numpy()
            v = np.asarray(v, order="C")  # keeps 0-dim arrays 0-dim
            if v.dtype == np.int64:
                v = v.astype(np.int32)
            np.save(self.dir / f"{k}.npy", v)


def main():
    if len(sys.argv) != 2:
        print("usage: make_torch_refs.py OUTDIR", file=sys.stderr)
        return 64
    out = pathlib.Path(sys.argv[1])
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    torch.manual_seed(0)
    torch.set_num_threads(1)
    here = pathlib.Path(__file__).parent
    count = 0
    for mod_path in sorted(here.glob("torch_ref_*.py")):
        spec = importlib.util.spec_from_file_location(mod_path.stem, mod_path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        n = mod.generate(lambda name: Case(out, name))
        print(f"{mod_path.name}: {n} cases")
        count += n
    (out / "COMPLETE").write_text(f"{count}\n")
    print(f"wrote {count} PyTorch reference cases to {out} (torch {torch.__version__})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
