#!/usr/bin/python3
"""Draws one figure of `dynsim retina figures` from its JSON (every number comes from there).

    retina_figures.py F1|F2|F3|F4|F6|F7 IN.json OUT.png

F1 subunits vs CNN filters vs STA vs STNMF; F2 filters and CC vs K and conv L1; F3 prediction
trace with rasters; F4 CC and cosine vs data fraction and batch size; F6 cross-cell transfer
heatmaps; F7 white noise <-> natural images bars. The PNG is written to a temporary file beside
OUT and renamed. Exit codes: 64 usage, 65 unreadable JSON, 74 write failure, 77 no matplotlib.
"""
import json
import math
import os
import sys

try:
    import numpy as np
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError as e:  # reported by dynsim as "no matplotlib"
    print(f"retina_figures.py: {e} (apt-get install python3-numpy python3-matplotlib)",
          file=sys.stderr)
    sys.exit(77)


def arr(v):
    """JSON numbers (null = missing) as a float array with NaN."""
    def conv(x):
        if isinstance(x, list):
            return [conv(y) for y in x]
        return math.nan if x is None else float(x)
    return np.array(conv(v), dtype=float)


def fmt(v, digits=2):
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def show_map(ax, m, title, cmap="RdBu_r"):
    m = arr(m)
    lim = np.nanmax(np.abs(m)) if np.isfinite(m).any() and np.nanmax(np.abs(m)) > 0 else 1.0
    ax.imshow(m, cmap=cmap, vmin=-lim, vmax=lim, interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


def fig_f1(d):
    masks, cnn, sta, nmf = d["masks"], d["cnn"], d["sta"], d["stnmf"]
    J = len(masks)
    # CNN: the filter matched to each subunit, then significant unmatched filters.
    shown = [(f, f"subunit {j + 1}: cos {fmt(cnn['matched_cosine'][j])}")
             for j, f in enumerate(cnn["matched_filter"]) if f is not None and f >= 0]
    used = {f for f, _ in shown}
    for k, sig in enumerate(cnn["significant"]):
        if sig and k not in used:
            shown.append((k, f"filter {k} (unmatched)"))
    shown = shown[:8]
    M = len(nmf["modules"])
    ncol = max(J, len(shown), M, 3)
    fig, axes = plt.subplots(4, ncol, figsize=(max(1.7 * ncol, 11.0), 7.8), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for j in range(J):
        axes[0, j].axis("on")
        show_map(axes[0, j], masks[j], f"true subunit {j + 1} (w={fmt(d['weights'][j], 1)})")
    for c, (k, title) in enumerate(shown):
        axes[1, c].axis("on")
        show_map(axes[1, c], cnn["maps"][k], f"CNN {title}\nstrength {fmt(cnn['strength'][k])}")
    axes[2, 0].axis("on")
    show_map(axes[2, 0], sta["map"], f"STA (rank-1)\ncos to block {fmt(sta['cosine_block'])}")
    ax = axes[2, 1]
    ax.axis("on")
    lags = np.arange(len(d["true_temporal"]))
    ax.plot(lags, arr(d["true_temporal"]), "k", lw=2, label="true")
    for j, f in enumerate(cnn["matched_filter"]):
        if f is not None and f >= 0:
            t = arr(cnn["temporal"][f])
            n = np.linalg.norm(t)
            ax.plot(lags, t / n if n > 0 else t, lw=1, label=f"CNN {f}")
    ax.set_title("temporal (window channel)", fontsize=8)
    ax.tick_params(labelsize=6)
    ax.legend(fontsize=5)
    for m in range(M):
        matched = [j for j, mm in enumerate(nmf["matched_module"]) if mm == m]
        cos = f"cos {fmt(nmf['matched_cosine'][matched[0]])}" if matched else "unmatched"
        axes[3, m].axis("on")
        show_map(axes[3, m], nmf["modules"][m], f"STNMF module {m + 1}\n{cos}")
    fig.suptitle(
        f"F1: synthetic RGC ({d['spikes']} spikes). CNN K={cnn['filters']}: "
        f"{cnn['recovered']}/{J} recovered (cos >= {d['cosine_threshold']}), mean cos "
        f"{fmt(cnn['mean_cosine'])}, {cnn['significant_count']} significant filters of which "
        f"{cnn['spurious']} spurious (no recovered subunit),\nheld-out CC {fmt(cnn['cc_rate'])}; "
        f"STA: cos to the block {fmt(sta['cosine_block'])}, LN CC {fmt(sta['cc_rate'])}; "
        f"STNMF: {nmf['recovered']}/{J} recovered, mean cos {fmt(nmf['mean_cosine'])}",
        fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    return fig


def errline(ax, x, d, key, label, **kw):
    ax.errorbar(x, arr(d[key]), yerr=arr(d[key + "_sd"]), marker="o", capsize=3, label=label, **kw)


def fig_f2(d):
    fig, axes = plt.subplots(2, 2, figsize=(9, 7))
    k, l1 = arr(d["k_values"]), arr(d["l1_values"])
    J = d["subunits"]
    for row, (x, sweep, xlabel) in enumerate(
            [(k, d["by_k"], "conv filters K"), (l1, d["by_l1"], f"conv L1 weight (K={d['l1_filters']})")]):
        ax = axes[row, 0]
        errline(ax, x, sweep, "significant", "significant filters")
        errline(ax, x, sweep, "recovered", "recovered subunits")
        ax.axhline(J, color="gray", ls="--", lw=1, label=f"true subunits ({J})")
        ax.set_ylabel("count")
        ax2 = axes[row, 1]
        errline(ax2, x, sweep, "cc_rate", "CNN held-out CC")
        errline(ax2, x, sweep, "mean_cosine", "mean matched cosine")
        if d.get("ln_cc_rate") is not None:
            ax2.axhline(d["ln_cc_rate"], color="gray", ls="--", lw=1, label="LN CC")
        low = np.nanmin(np.concatenate([arr(sweep["cc_rate"]), arr(sweep["mean_cosine"])]))
        ax2.set_ylim(min(0.0, low - 0.05), 1.02)
        for a in (ax, ax2):
            a.set_xlabel(xlabel)
            if row == 0:
                a.set_xscale("log", base=2)
                a.set_xticks(k)
                a.set_xticklabels([str(int(v)) for v in k])
            else:
                a.set_xscale("symlog", linthresh=max(np.min(l1[l1 > 0]) if (l1 > 0).any() else 1e-4, 1e-6))
                a.set_xticks(l1)
                a.set_xticklabels([f"{v:g}" for v in l1], fontsize=7, rotation=30)
                a.minorticks_off()
                if d.get("paper_l1"):
                    a.axvline(d["paper_l1"], color="orange", lw=1, ls=":")
                if d.get("default_l1"):
                    a.axvline(d["default_l1"], color="green", lw=1, ls="-.")
            a.legend(fontsize=7)
            a.grid(alpha=0.3)
    fig.suptitle(f"F2: filters vs K and L1 ({d['spikes']} spikes, {d['seeds']} seed(s); "
                 f"L1 lines: dotted the paper's, dash-dot model.conv_l1)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    return fig


def fig_f3(d):
    fig, (ax0, ax1) = plt.subplots(2, 1, figsize=(11, 6.5), sharex=True,
                                   gridspec_kw={"height_ratios": [1, 1.6]})
    r = d["raster"]
    t = arr(d["time_s"])
    dt = d["dt"]
    ax0.scatter(arr(r["frame"]) * dt, arr(r["trial"]), marker="|", s=25, color="k", lw=0.8)
    ax0.set_ylabel("trial")
    ax0.set_ylim(-0.5, d["trials"] - 0.5)
    ax0.set_title(f"repeated test segment: {d['trials']} trials", fontsize=9)
    hz = 1.0 / dt
    mc, ml = d["metrics"]["cnn"], d["metrics"]["ln"]
    ax1.fill_between(t, arr(d["psth"]) * hz, step="mid", color="0.8", label="data PSTH")
    ax1.plot(t, arr(d["rate_true"]) * hz, color="k", lw=0.8, ls=":", label="true rate")
    ax1.plot(t, arr(d["cnn"]) * hz, color="C3", lw=1.2,
             label=f"CNN: CC {fmt(mc['cc_psth'])} (rate {fmt(mc['cc_rate'])}), "
                   f"FEV {fmt(mc['fev'])}, FEVE {fmt(mc['feve'])}")
    ax1.plot(t, arr(d["ln"]) * hz, color="C0", lw=1.0,
             label=f"LN: CC {fmt(ml['cc_psth'])} (rate {fmt(ml['cc_rate'])}), "
                   f"FEV {fmt(ml['fev'])}, FEVE {fmt(ml['feve'])}")
    ax1.set_xlabel("time (s)")
    ax1.set_ylabel("rate (spikes/s)")
    ax1.legend(fontsize=7, loc="upper right")
    fig.suptitle(f"F3: predictions on the repeated test (CC with the PSTH; explainable variance "
                 f"{fmt(mc['explainable'])})", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    return fig


def fig_f4(d):
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    x = arr(d["spikes"])
    bf, bb = d["by_fraction"], d["by_batch"]
    ax = axes[0]
    errline(ax, x, bf, "cc_rate", "CNN held-out CC")
    errline(ax, x, bf, "mean_cosine", "CNN mean matched cosine")
    ax.plot(x, arr(bf["ln_cc_rate"]), "s--", color="gray", label="LN held-out CC")
    ax.set_xscale("log")
    ax.set_xlabel("training spikes (fraction of the recording)")
    for xi, f in zip(x, d["fractions"]):
        ax.annotate(f"{f:g}", (xi, 0.02), fontsize=7, ha="center")
    ax.set_ylim(min(0.0, np.nanmin(np.concatenate([arr(bf["cc_rate"]), arr(bf["mean_cosine"])])) - 0.05), 1.02)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    ax.set_title("vs amount of data", fontsize=9)
    ax = axes[1]
    b = arr(d["batch_sizes"])
    errline(ax, b, bb, "cc_rate", "CNN held-out CC")
    errline(ax, b, bb, "mean_cosine", "CNN mean matched cosine")
    ax.set_xscale("log")
    ax.set_xlabel(f"batch size ({d['iterations']} steps each)")
    ax.set_ylim(min(0.0, np.nanmin(np.concatenate([arr(bb["cc_rate"]), arr(bb["mean_cosine"])])) - 0.05), 1.02)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    ax.set_title("vs batch size (all data)", fontsize=9)
    fig.suptitle(f"F4: data efficiency (K={d['filters']}, {d['seeds']} seed(s))", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return fig


def heatmap(ax, m, names, title, ylabel=True):
    m = arr(m)
    im = ax.imshow(m, cmap="viridis", vmin=min(0.0, np.nanmin(m)), vmax=1.0)
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, fmt(m[i, j]), ha="center", va="center", fontsize=7,
                    color="w" if m[i, j] < 0.6 else "k")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(names, fontsize=7)
    ax.set_xlabel("tested on cell")
    if ylabel:
        ax.set_ylabel("model of cell")
    ax.set_title(title, fontsize=9)
    return im


def fig_f6(d):
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.8))
    z, r = d["zero_shot_summary"], d["readout_summary"]
    heatmap(axes[0], d["zero_shot"], d["cells"],
            f"zero-shot: diagonal {fmt(z['diagonal_mean'])}, off {fmt(z['off_diagonal_mean'])}")
    im = heatmap(axes[1], d["readout"], d["cells"],
                 f"readout refit: diagonal {fmt(r['diagonal_mean'])}, "
                 f"off {fmt(r['off_diagonal_mean'])}", ylabel=False)
    fig.colorbar(im, ax=axes, shrink=0.8, label="held-out CC with the true rate")
    fig.suptitle("F6: cross-cell transfer (core of cell i, readout zero-shot or refit on cell j)",
                 fontsize=10)
    return fig


def fig_f7(d):
    fig, ax = plt.subplots(figsize=(7, 4.2))
    groups = ["WN→WN", "WN→NI", "NI→NI", "NI→WN"]
    idx = [(0, 0), (0, 1), (1, 1), (1, 0)]
    x = np.arange(len(groups))
    for k, (key, label) in enumerate([("cnn", "CNN"), ("ln", "LN")]):
        m = arr(d[key])
        vals = [m[i, j] for i, j in idx]
        bars = ax.bar(x + (k - 0.5) * 0.38, vals, 0.38, label=label)
        for b, v in zip(bars, vals):
            ax.text(b.get_x() + b.get_width() / 2, (v if np.isfinite(v) else 0) + 0.01, fmt(v),
                    ha="center", fontsize=7)
    ax.set_xticks(x)
    ax.set_xticklabels(groups)
    ax.set_ylabel("held-out CC with the true rate")
    ax.set_ylim(min(0, np.nanmin(arr(d["cnn"]))), 1.08)
    ax.legend(fontsize=8)
    ax.set_title(f"F7: white noise ↔ natural images (trained→tested; images: {d['image_source']})",
                 fontsize=9)
    fig.tight_layout()
    return fig


FIGURES = {"F1": fig_f1, "F2": fig_f2, "F3": fig_f3, "F4": fig_f4, "F6": fig_f6, "F7": fig_f7}


def main(argv):
    if len(argv) != 4 or argv[1].upper() not in FIGURES:
        print(__doc__, file=sys.stderr)
        return 64
    name, src, out = argv[1].upper(), argv[2], argv[3]
    try:
        with open(src) as f:
            data = json.load(f)
        fig = FIGURES[name](data)
    except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
        print(f"retina_figures.py: {src}: cannot draw {name}: {type(e).__name__}: {e}",
              file=sys.stderr)
        return 65
    tmp = os.path.join(os.path.dirname(os.path.abspath(out)),
                       f".{os.path.basename(out)}.tmp-{os.getpid()}.png")
    try:
        fig.savefig(tmp, format="png", dpi=110)
        os.replace(tmp, out)
    except OSError as e:
        print(f"retina_figures.py: cannot write {out}: {e}", file=sys.stderr)
        try:
            os.remove(tmp)
        except OSError:
            pass
        return 74
    finally:
        plt.close(fig)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
