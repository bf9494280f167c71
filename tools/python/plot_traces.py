#!/usr/bin/env python3
"""Plots the per-area mean response traces of a `dynsim simulate` output folder.

    /usr/bin/python3 tools/python/plot_traces.py OUT [--png OUT/traces.png]

Reads OUT/summary.json and the per-area mean |r| traces (response_avg_<area>.npy, rates_<area>.npy
or responses.h5), averages over the batch, and draws one line per area against time in ms after
the stimulus onset, marking each area's response onset and peak (from summary.json). Needs numpy
and matplotlib (Debian python3-numpy, python3-matplotlib); h5py only for hdf5 outputs.
Exit codes: 0 written, 66 missing input, 65 unreadable data, 77 numpy/matplotlib missing.
"""
import argparse
import json
import pathlib
import sys

try:
    import numpy as np
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError as e:  # pragma: no cover
    print(f"plot_traces: needs numpy and matplotlib ({e}); use /usr/bin/python3", file=sys.stderr)
    sys.exit(77)


def load_trace(out, name, fmt):
    """Batch-averaged mean |r| per step of one area."""
    if fmt == "hdf5":
        import h5py

        with h5py.File(out / "responses.h5", "r") as f:
            if f"response_avg/{name}" in f:
                return np.nanmean(f[f"response_avg/{name}"][...], axis=0)
            r = np.abs(f[f"rates/{name}"][...])
            return r.reshape(r.shape[0], r.shape[1], -1).mean(axis=2).mean(axis=0)
    avg = out / f"response_avg_{name}.npy"
    if avg.exists():
        return np.nanmean(np.load(avg), axis=0)
    r = np.abs(np.load(out / f"rates_{name}.npy"))
    return r.reshape(r.shape[0], r.shape[1], -1).mean(axis=2).mean(axis=0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", help="output folder of dynsim simulate")
    ap.add_argument("--png", help="image to write (default OUT/traces.png)")
    a = ap.parse_args()
    out = pathlib.Path(a.out)
    try:
        summary = json.loads((out / "summary.json").read_text())
        cfg = json.loads((out / "config.json").read_text())
    except FileNotFoundError as e:
        print(f"plot_traces: {e.filename}: missing (not a dynsim simulate output?)", file=sys.stderr)
        return 66
    except json.JSONDecodeError as e:
        print(f"plot_traces: {out}: unreadable JSON: {e}", file=sys.stderr)
        return 65
    fmt = cfg.get("simulation", {}).get("format", "npy")
    dt = summary.get("dt_ms", 2.0)
    onset = summary.get("stimulus_onset_step", 0)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    for area in summary["areas"]:
        try:
            tr = load_trace(out, area["name"], fmt)
        except (OSError, KeyError, ValueError) as e:
            print(f"plot_traces: {out}: no trace for area {area['name']}: {e}", file=sys.stderr)
            return 65
        t = (np.arange(len(tr)) - onset) * dt
        (line,) = ax.plot(t, tr, label=area["name"], lw=1.8)
        if area.get("onset_step", -1) is not None and area.get("onset_step", -1) >= 0:
            ax.plot(t[area["onset_step"]], tr[area["onset_step"]], "o", color=line.get_color(), ms=4)
            ax.plot(t[area["peak_step"]], tr[area["peak_step"]], "v", color=line.get_color(), ms=6)
    ax.axvline(0, color="0.6", lw=0.8, ls="--")
    ax.set_xlabel("time after stimulus onset (ms)")
    ax.set_ylabel("mean |r| (batch average)")
    ax.set_title(f"{summary.get('model', '')}: per-area responses "
                 f"(solver {summary.get('solver', '')}, dt {dt} ms; o onset, v peak)")
    ax.legend(frameon=False)
    fig.tight_layout()
    png = pathlib.Path(a.png) if a.png else out / "traces.png"
    fig.savefig(png)
    print(f"plot_traces: wrote {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
