"""Memory of the point_transformer's training step, and of the attention tangent in the MeanFlow JVP.

    python plugins/points/benchmarks/attention_memory.py                   # 512 and 2048 points, batch 1
    python plugins/points/benchmarks/attention_memory.py --points 512 --batch 4 --device cuda
    python plugins/points/benchmarks/attention_memory.py --tangent math    # the plain formula, for comparison

Each configuration runs in a fresh process and reports the peak memory above the baseline after the
model is built (CPU: peak resident set size from ``getrusage``; CUDA: ``max_memory_allocated``) for

* ``forward``: u(z, r, t) under no_grad (what one-step sampling costs);
* ``flow matching step``: forward with gradient + backward;
* ``MeanFlow step``: the exact JVP (forward-mode, mfkit's fast tangent rules) + forward + backward.

The MeanFlow step's extra memory over flow matching is the tangent pass. ``--tangent`` picks mfkit's
attention tangent rule (``MFKIT_ATTENTION_TANGENT`` in each child; fused kernels have no forward-mode AD):
``auto`` (the default, what training uses) takes the blockwise pass from 2**20 attention weights
(batch x heads x N x N) on, or the Triton kernel on CUDA, neither of which holds an N x N matrix; ``math``
builds the weights P and the tangent of the scores, each (batch, heads, N, N) float32, one layer at a time.
The table's last column names the path the MeanFlow step took.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch


def peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_one(mode: str, points: int, batch: int, width: int, depth: int, heads: int, device_name: str) -> dict:
    """One measurement in this process (call in a fresh process)."""
    import mfkit
    from mfkit.plugins import ClassCondition, DataInfo
    from mfkit_points.nets.point_transformer import PointTransformer, PointTransformerParams

    torch.manual_seed(0)
    device = torch.device(device_name)
    info = DataInfo((points, 3), 7, ClassCondition([str(i) for i in range(7)]))
    model = PointTransformer(PointTransformerParams(width=width, depth=depth, heads=heads), info).to(device)
    x = torch.randn(batch, points, 3, device=device)
    labels = torch.zeros(batch, dtype=torch.long, device=device)
    objective = mfkit.MeanFlow(r_neq_t_share=1.0) if mode == "meanflow" else mfkit.FlowMatching()
    warm = torch.randn(1, 16, 3, device=device)  # load kernels and forward-AD tables before the baseline
    with torch.no_grad():
        model(warm, torch.zeros(1, device=device), torch.ones(1, device=device), labels[:1])
    if mode != "forward":
        objective(model, warm, labels[:1]).loss.backward()
        model.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device) / 2 ** 20 if device.type == "cuda" else peak_mb(device)
    began = time.perf_counter()
    if mode == "forward":
        with torch.no_grad():
            model(x, torch.zeros(batch, device=device), torch.ones(batch, device=device), labels)
    else:
        objective(model, x, labels).loss.backward()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return {"mode": mode, "points": points, "batch": batch, "seconds": time.perf_counter() - began,
            "peak_above_baseline_mb": peak_mb(device) - base,
            "attention_matrix_mb": batch * heads * points * points * 4 / 2 ** 20,
            "tangent_path": tangent_path(batch, heads, points, width // heads, device)}


def tangent_path(batch: int, heads: int, points: int, head_dim: int, device: torch.device) -> str:
    """The path mfkit's attention tangent takes for this layer shape here (``select_path`` on empty tensors)."""
    from mfkit.core.attention import select_path

    q = torch.empty(batch, heads, points, head_dim, device=device)
    return select_path(q, q, q, q, q, q)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--points", type=int, nargs="+", default=[512, 2048])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--depth", type=int, default=6)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tangent", choices=["auto", "blockwise", "math", "triton"], default="auto",
                        help="attention tangent rule of the MeanFlow step (MFKIT_ATTENTION_TANGENT)")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one mode in this process
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.points[0], args.batch, args.width, args.depth, args.heads,
                                 args.device)))
        return
    env = {**os.environ, "MFKIT_ATTENTION_TANGENT": args.tangent}
    print(f"point_transformer width {args.width}, depth {args.depth}, heads {args.heads}, batch {args.batch}, "
          f"{args.device}, attention tangent {args.tangent}")
    print("| points | one attention matrix (B·H·N²·4 bytes) | forward (no grad) | flow-matching step | "
          "MeanFlow step (JVP) | MeanFlow − FM | tangent path |")
    print("|---|---|---|---|---|---|---|")
    for points in args.points:
        rows = {}
        for mode in ("forward", "flow_matching", "meanflow"):
            command = [sys.executable, __file__, "--one", mode, "--points", str(points), "--batch", str(args.batch),
                       "--width", str(args.width), "--depth", str(args.depth), "--heads", str(args.heads),
                       "--device", args.device]
            done = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
            rows[mode] = json.loads(done.stdout.strip().splitlines()[-1])
        f, fm, mf = rows["forward"], rows["flow_matching"], rows["meanflow"]
        print(f"| {points} | {f['attention_matrix_mb']:.0f} MB | {f['peak_above_baseline_mb']:.0f} MB "
              f"({f['seconds']:.1f} s) | {fm['peak_above_baseline_mb']:.0f} MB ({fm['seconds']:.1f} s) | "
              f"{mf['peak_above_baseline_mb']:.0f} MB ({mf['seconds']:.1f} s) | "
              f"{mf['peak_above_baseline_mb'] - fm['peak_above_baseline_mb']:+.0f} MB | {mf['tangent_path']} |",
              flush=True)


if __name__ == "__main__":
    main()
