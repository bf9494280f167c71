#!/usr/bin/env python3
"""`dynsim simulate` outputs as a Python user reads them (ctest: tools.outputs_python).

Runs the CLI into a temporary folder twice per configuration, once with simulation.format = npy
and once with hdf5, and checks with numpy and h5py: every array exists with the shape implied by
summary.json (logits [B, T, K], present [areas, T], response_avg/std [B, T], rates
[B, T, C, H, W]), both formats hold the same values and dtypes, config.json reloads and equals the
HDF5 file's 'config' attribute, and the summary attributes match summary.json.
Usage: test_outputs.py PATH/TO/dynsim. Exits 77 (skipped) without numpy or h5py, or when the
dynsim build has no HDF5 support.
"""
import json
import pathlib
import subprocess
import sys
import tempfile

try:
    import h5py
    import numpy as np
except ImportError as e:  # pragma: no cover
    print(f"SKIPPED: needs numpy and h5py ({e}); install python3-numpy python3-h5py")
    sys.exit(77)

ROOT = pathlib.Path(__file__).resolve().parents[2]
RUNS = [  # (label, config, extra arguments)
    ("DyRCNNx2 layer", ROOT / "tests/data/cli/small.toml", []),
    ("custom full", ROOT / "models/configs/custom_two_areas.toml", ["--steps", "5"]),
    ("DyRCNNx4 none", ROOT / "tests/data/cli/small.toml",
     ["--preset", "DyRCNNx4", "--record", "none", "--batch", "3"]),
]


class Skip(Exception):
    pass


def simulate(dynsim, config, args, out, fmt):
    cmd = [dynsim, "simulate", "-q", str(config), *args, "-o", str(out),
           "--set", f"simulation.format={fmt}"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if fmt == "hdf5" and r.returncode == 78 and "no HDF5 support" in r.stderr:
        raise Skip(r.stderr.strip())
    if r.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {r.returncode}: {r.stderr}")


def expected_shapes(summary, config):
    """Array name (npy stem with '/' for the group) -> shape, from summary.json."""
    B, T = summary["batch"], summary["steps"]
    shapes = {"present": (len(summary["areas"]), T)}
    if config["model"]["n_classes"] > 0:
        shapes["logits"] = (B, T, config["model"]["n_classes"])
    record = config["simulation"]["record"]
    for area in summary["areas"]:
        if record == "layer":
            shapes[f"response_avg/{area['name']}"] = (B, T)
            shapes[f"response_std/{area['name']}"] = (B, T)
        elif record == "full":
            shapes[f"rates/{area['name']}"] = (B, T, *area["shape"])
    return shapes


def check_run(dynsim, label, config, args, tmp):
    npy_dir, h5_dir = tmp / f"{label}-npy".replace(" ", "_"), tmp / f"{label}-h5".replace(" ", "_")
    simulate(dynsim, config, args, npy_dir, "npy")
    simulate(dynsim, config, args, h5_dir, "hdf5")
    summary = json.loads((npy_dir / "summary.json").read_text())
    cfg = json.loads((npy_dir / "config.json").read_text())
    cfg_h5 = json.loads((h5_dir / "config.json").read_text())
    assert cfg_h5["simulation"]["format"] == "hdf5", label
    cfg_h5["simulation"]["format"] = "npy"
    cfg_h5["simulation"]["output"] = cfg["simulation"]["output"]
    assert cfg_h5 == cfg, f"{label}: the two runs' effective configs differ beyond format/output"
    shapes = expected_shapes(summary, cfg)

    npy_files = {p.stem for p in npy_dir.glob("*.npy")}
    want_files = {name.replace("/", "_") for name in shapes}
    assert npy_files == want_files, f"{label}: npy files {sorted(npy_files)} != {sorted(want_files)}"
    assert not list(h5_dir.glob("*.npy")), f"{label}: hdf5 run wrote .npy files"
    with h5py.File(h5_dir / "responses.h5", "r") as f:
        datasets = set()
        f.visititems(lambda name, obj: datasets.add(name) if isinstance(obj, h5py.Dataset) else None)
        assert datasets == set(shapes), f"{label}: datasets {sorted(datasets)} != {sorted(shapes)}"
        for name, shape in shapes.items():
            a = np.load(npy_dir / (name.replace("/", "_") + ".npy"))
            h = f[name][()]
            assert a.shape == shape, f"{label}: {name}.npy has shape {a.shape}, expected {shape}"
            assert h.shape == shape, f"{label}: {name} in hdf5 has shape {h.shape}"
            assert a.dtype == h.dtype, f"{label}: {name} dtypes {a.dtype} vs {h.dtype}"
            assert np.array_equal(a, h), f"{label}: {name} differs between npy and hdf5"
        assert f["present"].dtype == np.int32
        attrs = {k: (v.decode() if isinstance(v, bytes) else str(v)) for k, v in f.attrs.items()}
    h5_summary = json.loads((h5_dir / "summary.json").read_text())
    assert json.loads(attrs["config"]) == json.loads((h5_dir / "config.json").read_text())
    for key, value in h5_summary.items():
        assert key in attrs, f"{label}: summary field {key} is not an attribute"
        got = attrs[key] if isinstance(value, str) else json.loads(attrs[key])
        if key not in ("wall_seconds", "steps_per_second"):
            assert got == value, f"{label}: attribute {key} = {got!r}, summary.json has {value!r}"
    print(f"ok: {label}: {len(shapes)} arrays equal in npy and hdf5")


def main():
    if len(sys.argv) != 2:
        print("usage: test_outputs.py PATH/TO/dynsim", file=sys.stderr)
        return 64
    dynsim = sys.argv[1]
    with tempfile.TemporaryDirectory(prefix="dynsim_test_outputs_") as d:
        try:
            for label, config, args in RUNS:
                check_run(dynsim, label, config, args, pathlib.Path(d))
        except Skip as e:
            print(f"SKIPPED: this dynsim build writes no HDF5: {e}")
            return 77
        leftovers = [p.name for p in pathlib.Path(d).iterdir() if ".tmp." in p.name]
        assert not leftovers, f"temporary folders left behind: {leftovers}"
    return 0


if __name__ == "__main__":
    sys.exit(main())
