#!/usr/bin/python3
"""Draws the work-precision figure of `dynsim solvers` from its solvers.json.

    plot_solvers.py IN.json OUT.png

Error (max abs over areas and output times) against cost (network drive evaluations), log-log,
one line per solver: solid the fixed-step ladder, dashed the adaptive tolerance ladder; each
fixed-step line is labelled with its observed order. The PNG goes to a temporary file beside
OUT and is renamed. Exit codes: 64 usage, 65 unreadable JSON, 74 write failure, 77 no matplotlib.
"""
import json
import os
import sys

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError as e:
    print(f"plot_solvers.py: {e} (apt-get install python3-matplotlib)", file=sys.stderr)
    sys.exit(77)


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 64
    try:
        with open(sys.argv[1]) as f:
            d = json.load(f)
        rows = d["rows"]
    except (OSError, ValueError, KeyError) as e:
        print(f"plot_solvers.py: {sys.argv[1]}: {e}", file=sys.stderr)
        return 65
    orders = {o["solver"]: o for o in d.get("orders", [])}
    fig, ax = plt.subplots(figsize=(7, 5))
    for i, solver in enumerate(dict.fromkeys(r["solver"] for r in rows)):
        color = f"C{i % 10}"
        for mode, style in (("fixed", "-o"), ("adaptive", "--s")):
            pts = [(r["drive_evaluations"], r["max_abs_error"]) for r in rows
                   if r["solver"] == solver and r["mode"] == mode and r["max_abs_error"] > 0]
            if not pts:
                continue
            label = solver if mode == "fixed" else f"{solver} (adaptive)"
            if mode == "fixed" and solver in orders:
                o = orders[solver]
                label += f"  order {o['observed']:.2f} (theory {o['expected']})"
            ax.loglog([p[0] for p in pts], [p[1] for p in pts], style, color=color,
                      label=label, markersize=4)
    ax.set_xlabel("network drive evaluations")
    ax.set_ylabel("max abs error vs closed form")
    m = d.get("machine", {})
    ax.set_title(f"dynsim solvers: case {d.get('case')} ({d.get('precision')}, "
                 f"{m.get('cpu', '?')})", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    out = sys.argv[2]
    tmp = out + ".tmp.png"
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, out)
    except OSError as e:
        print(f"plot_solvers.py: {out}: {e}", file=sys.stderr)
        return 74
    return 0


if __name__ == "__main__":
    sys.exit(main())
