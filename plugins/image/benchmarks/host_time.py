"""Host (Python) time of each pass a MeanFlow step makes, on an image backbone's op sequence.

    OMP_NUM_THREADS=1 python plugins/image/benchmarks/host_time.py                       # DiT-B/4's ops
    OMP_NUM_THREADS=1 python plugins/image/benchmarks/host_time.py --backbone unet --params '{"channels": 8}'

The backbone is built at a tiny width (default: DiT-B/4's 12 blocks with 12 channels and one head) and
run on a tiny batch on the CPU, so each pass costs what Python and PyTorch's dispatcher spend per op,
not arithmetic: the time a GPU step needs on the host whatever the GPU's speed. Where a pass's host
time exceeds its kernels' time, the GPU waits (see profile_step.py's "busy" share on CUDA). Reported:
CPU milliseconds per pass (median of 7 blocks of --repeats), and each pass against a plain forward.
"""
from __future__ import annotations

import argparse
import time

import torch
from train_step import build_backbone

from mfkit.core.jvp import _dual_pass, _func_jvp_tangent
from mfkit.plugins import DataInfo


def cpu_ms(fn, repeats: int) -> float:
    """Median CPU milliseconds of one call of ``fn`` (process time: other jobs on the machine do not count)."""
    for _ in range(3):
        fn()
    blocks = []
    for _ in range(7):
        began = time.process_time()
        for _ in range(repeats):
            fn()
        blocks.append((time.process_time() - began) / repeats * 1e3)
    return sorted(blocks)[len(blocks) // 2]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backbone", default="dit")
    parser.add_argument("--params", default='{"preset": "B/4", "hidden": 12, "heads": 1}')
    parser.add_argument("--shape", default="4,32,32")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.manual_seed(0)
    shape = tuple(int(v) for v in args.shape.split(","))
    model = build_backbone(args.backbone, args.params, DataInfo(shape, 10), torch.device("cpu"))
    z = torch.randn(args.batch, *shape)
    labels = torch.randint(0, 10, (args.batch,))
    r = torch.rand(args.batch) * 0.5
    t = r + 0.3
    tangents = (torch.randn_like(z), torch.zeros_like(r), torch.ones_like(t))
    passes = {
        "plain forward, no grad": (False, lambda: model(z, r, t, labels)),
        "plain forward, with grad": (True, lambda: model(z, r, t, labels)),
        "dual pass, fast rules, no grad (tangent pass of fp32 / tf32)": (
            False, lambda: _dual_pass(model, z, r, t, tangents, labels, True)),
        "dual pass, fast rules, with grad (one pass: autocast / no autocast)": (
            True, lambda: _dual_pass(model, z, r, t, tangents, labels, True)),
        "dual pass, PyTorch's rules, no grad (forward_ad_plain)": (
            False, lambda: _dual_pass(model, z, r, t, tangents, labels, False)),
        "torch.func.jvp, no grad (nograd backend)": (
            False, lambda: _func_jvp_tangent(model, z, r, t, tangents, labels, 0.0)),
    }
    print(f"{args.backbone} {args.params} shape {shape} batch {args.batch}: CPU ms per pass")
    print("| pass | host ms | x plain forward |")
    print("|---|---|---|")
    base = None
    for name, (grad, fn) in passes.items():
        with torch.set_grad_enabled(grad):
            ms = cpu_ms(fn, args.repeats)
        base = base or ms
        print(f"| {name} | {ms:.2f} | {ms / base:.2f} |")


if __name__ == "__main__":
    main()
