#!/usr/bin/env python3
"""dynsim CPU conv2d vs PyTorch eager CPU on DyRCNNx4's layer shapes (bench/conv2d_bench.cpp).

Runs the C++ benchmark (its JSON lines give the shapes and dynsim's median times), times
torch.nn.functional.conv2d forward and its autograd backward (grad of x, w, b) with the same
thread count, and prints ratio = torch / dynsim (> 1: dynsim faster) with geometric means.
Usage: conv2d_torch.py PATH/TO/conv2d_bench [--threads N] [--repeats R]
"""
import argparse
import json
import math
import os
import statistics
import subprocess
import time

import torch
import torch.nn.functional as F


def median_ms(fn, repeats):
    for _ in range(2):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def torch_times(s, repeats):
    n, cin, cout, k, hw = s["batch"], s["cin"], s["cout"], s["k"], s["hw"]
    stride, pad = s["stride"], s["pad"]
    x = torch.randn(n, cin, hw, hw, requires_grad=True)
    w = torch.randn(cout, cin, k, k, requires_grad=True)
    b = torch.randn(cout, requires_grad=True)
    with torch.no_grad():
        fwd = median_ms(lambda: F.conv2d(x, w, b, stride, pad), repeats)
    y = F.conv2d(x, w, b, stride, pad)
    gy = torch.randn_like(y)
    # Backward only: the graph is kept, so each call runs dgrad + wgrad + bias grad.
    bwd = median_ms(lambda: torch.autograd.grad(y, (x, w, b), gy, retain_graph=True), repeats)
    return fwd, bwd


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bench", help="path to the conv2d_bench binary")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--repeats", type=int, default=15)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    out = subprocess.run([a.bench, "--threads", str(a.threads), "--repeats", str(a.repeats)],
                         check=True, capture_output=True, text=True).stdout
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    print(f"conv2d f32, batch {rows[0]['batch']}, {a.threads} threads, median of {a.repeats} "
          f"(torch {torch.__version__}); ratio = torch / dynsim, > 1 means dynsim faster")
    hdr = f"{'shape':<12}{'dyn fwd':>9}{'torch fwd':>10}{'ratio':>7}{'dyn bwd':>9}{'torch bwd':>10}{'ratio':>7}"
    print(hdr)
    print("-" * len(hdr))
    rf, rb = [], []
    for s in rows:
        tf, tb = torch_times(s, a.repeats)
        rf.append(tf / s["fwd_ms"])
        rb.append(tb / s["bwd_ms"])
        print(f"{s['shape']:<12}{s['fwd_ms']:9.2f}{tf:10.2f}{rf[-1]:7.2f}"
              f"{s['bwd_ms']:9.2f}{tb:10.2f}{rb[-1]:7.2f}")
    gm = lambda r: math.exp(sum(map(math.log, r)) / len(r))
    print(f"{'geomean':<12}{'':9}{'':10}{gm(rf):7.2f}{'':9}{'':10}{gm(rb):7.2f}")


if __name__ == "__main__":
    main()
