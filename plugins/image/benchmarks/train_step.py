"""Training-step time of the image backbones: MeanFlow (each JVP backend) against flow matching.

    OMP_NUM_THREADS=1 python plugins/image/benchmarks/train_step.py                     # small U-Net and DiT, CPU
    python plugins/image/benchmarks/train_step.py --device cuda --shape 3,32,32 --batch 128 \
        --unet '{}' --dit '{"preset": "B/4"}'                                          # paper sizes on a GPU
    python plugins/image/benchmarks/train_step.py --device cuda --dtype bf16 --shape 4,32,32 --batch 256 \
        --backbones dit --dit '{"preset": "B/4"}' --objectives forward_ad,forward_ad@all   # ImageNet latents

A step is zero_grad + objective (under bf16 autocast with ``--dtype bf16``) + backward + Adam step on one
fixed batch. Reports the median seconds of ``--repeats`` steps (after ``--warmup``), the ratio to flow
matching, and on CUDA the peak memory ratio. MeanFlow objectives are named by JVP backend: forward_ad
(default), forward_ad_plain, nograd, finite_difference; ``@all`` gives every row a JVP (``jvp_rows: all``,
the cost before the JVP was restricted to the r != t rows).
"""
from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time

import torch

import mfkit
from mfkit.plugins import DataInfo
from mfkit_image.backbones.dit import SPEC as DIT
from mfkit_image.backbones.unet import SPEC as UNET

BACKENDS = ["forward_ad", "forward_ad_plain", "nograd", "finite_difference"]


BACKBONES = {"unet": UNET, "dit": DIT}


def build_backbone(name: str, params: str, info: DataInfo, device: torch.device) -> torch.nn.Module:
    """The plugin's ``unet`` or ``dit`` with JSON ``params`` for data of ``info``."""
    spec = BACKBONES[name]
    return spec.build(spec.params_model(**json.loads(params)), info, None).to(device)


def objective_for(name: str, precision: str = "fp32"):
    """``flow_matching``, or MeanFlow named by JVP backend, optionally ``@all`` / ``@r_neq_t`` (jvp_rows)."""
    if name == "flow_matching":
        return mfkit.FlowMatching()
    backend, _, rows = name.partition("@")
    return mfkit.MeanFlow(jvp_backend=backend, jvp_precision=precision, **({"jvp_rows": rows} if rows else {}))


def step_time(model, objective, x, labels, repeats: int, warmup: int, device, dtype: str = "fp32") -> tuple[float, float]:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bf16")
    times = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for i in range(warmup + repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        began = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = objective(model, x, labels).loss
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - began)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")
    return statistics.median(times), peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="1,8,8")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--unet", default='{"channels": 16, "channel_mult": [1, 2], "num_blocks": 1, "attn_resolutions": [4]}')
    parser.add_argument("--dit", default='{"preset": "tiny/2", "depth": 4}')
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--backbones", default="unet,dit", help="comma separated: unet, dit")
    parser.add_argument("--precisions", default="fp32",
                        help="MeanFlow jvp_precision values, comma separated (fp32, tf32, autocast; they differ "
                             "only with --dtype bf16)")
    parser.add_argument("--objectives", default=",".join(BACKENDS),
                        help="MeanFlow JVP backends, comma separated, each optionally with @all or @r_neq_t")
    args = parser.parse_args()
    device = torch.device(args.device)
    shape = tuple(int(v) for v in args.shape.split(","))
    info = DataInfo(shape, args.classes)
    torch.manual_seed(0)
    x = torch.randn(args.batch, *shape, device=device)
    labels = torch.randint(0, args.classes, (args.batch,), device=device)
    memory = device.type == "cuda"
    print("| backbone | objective | s / step | x flow matching |" + (" peak MB | x flow matching |" if memory else "")
          + "\n|---|---|---|---|" + ("---|---|" if memory else ""))
    chosen = args.backbones.split(",")
    for name, params in (("unet", args.unet), ("dit", args.dit)):
        if name not in chosen:
            continue
        model = build_backbone(name, params, info, device)
        base, base_peak = step_time(model, mfkit.FlowMatching(), x, labels, args.repeats, args.warmup, device,
                                    args.dtype)
        print(f"| {name} | flow matching | {base:.3f} | 1.00 |" + (f" {base_peak:.0f} | 1.00 |" if memory else ""),
              flush=True)
        for name_rows, precision in itertools.product(args.objectives.split(","), args.precisions.split(",")):
            objective = objective_for(name_rows, precision)
            seconds, peak = step_time(model, objective, x, labels, args.repeats, args.warmup, device, args.dtype)
            backend = name_rows + (f", jvp {precision}" if args.dtype == "bf16" else "")
            print(f"| {name} | MeanFlow {backend} | {seconds:.3f} | {seconds / base:.2f} |"
                  + (f" {peak:.0f} | {peak / base_peak:.2f} |" if memory else ""), flush=True)
            if objective.jvp_rows_reason:  # auto fell back to the JVP of every row: say why
                print(f"|  | (jvp_rows auto used every row: {objective.jvp_rows_reason}) | | |", flush=True)


if __name__ == "__main__":
    main()
