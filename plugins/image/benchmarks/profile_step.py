"""Profile one MeanFlow training step of an image backbone (top ops by device and CPU time), and on CUDA
the share of the step the GPU is busy (kernel time / wall time: a share well under 100% means the step
waits on the host, e.g. Python's per-op cost in the tangent pass).

    python plugins/image/benchmarks/profile_step.py --device cuda --dtype bf16 --backbone dit --params '{"preset": "B/4"}' --shape 4,32,32 --batch 256
"""
from __future__ import annotations

import argparse
import time

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile
from train_step import build_backbone, objective_for, step_time

from mfkit.plugins import DataInfo


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument("--backbone", default="dit")
    parser.add_argument("--params", default='{"preset": "tiny/2"}')
    parser.add_argument("--shape", default="1,8,8")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--objective", default="forward_ad@all")
    parser.add_argument("--precision", default="fp32", help="jvp_precision: fp32, tf32 or autocast")
    parser.add_argument("--rows", type=int, default=25)
    parser.add_argument("--warmup", type=int, default=3,
                        help="steps before timing; cuDNN builds an attention plan for each new batch shape, and the "
                             "number of r != t rows changes from step to step, so a short warm-up times those builds")
    args = parser.parse_args()
    device = torch.device(args.device)
    shape = tuple(int(v) for v in args.shape.split(","))
    model = build_backbone(args.backbone, args.params, DataInfo(shape, 10), device)
    x = torch.randn(args.batch, *shape, device=device)
    labels = torch.randint(0, 10, (args.batch,), device=device)
    objective = objective_for(args.objective, args.precision)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.dtype == "bf16")
    # two flow-matching Adam steps first: zero-initialised output layers (adaLN-Zero) give an identically zero
    # output at initialisation, where jvp_rows auto cannot probe the backbone and gives every row a JVP,
    # which is not the step a training run takes after its first update
    step_time(model, objective_for("flow_matching"), x, labels, repeats=1, warmup=1, device=device, dtype=args.dtype)
    model.zero_grad(set_to_none=True)

    def step():
        with autocast:
            loss = objective(model, x, labels).loss
        loss.backward()

    for _ in range(args.warmup):
        step()
    wall = median_wall(step, device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(f"{args.backbone} {args.params} {args.objective} {args.dtype} jvp {args.precision} batch {args.batch}")
    reason = getattr(objective, "jvp_rows_reason", None)
    if reason:
        print(f"jvp_rows auto used every row: {reason}")
    elif args.objective != "flow_matching":
        rows = objective.jvp_rows
        print(f"jvp_rows {rows}: the JVP of " + ("every row" if rows == "all" else "the r != t rows only"))
    print(prof.key_averages().table(sort_by=key, row_limit=args.rows,
                                    max_name_column_width=60))
    if device.type == "cuda":
        # kernels only: an operator's row repeats the device time of the kernels it launched
        busy = sum(event.self_device_time_total for event in prof.key_averages()
                   if event.device_type == DeviceType.CUDA) / 1e3
        print(f"step {wall * 1e3:.1f} ms (median of 10, unprofiled); kernels {busy:.1f} ms: the GPU is busy "
              f"{100 * busy / (wall * 1e3):.0f}% of the step (well under 100%: the step waits on the host, "
              f"Python's per-op cost or synchronisations)")
    else:
        print(f"step {wall * 1e3:.1f} ms (median of 10, unprofiled)")


def median_wall(step, device: torch.device, repeats: int = 10) -> float:
    """Median wall seconds of ``step``, synchronised on CUDA."""
    walls = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        began = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        walls.append(time.perf_counter() - began)
    return sorted(walls)[len(walls) // 2]


if __name__ == "__main__":
    main()
