"""Sample quality against network calls on 2-D toy data: MeanFlow vs flow matching at equal compute.

    python benchmarks/quality_vs_nfe.py                      # eight_gaussians, checkerboard
    python benchmarks/quality_vs_nfe.py --data moons --steps 4000

Both use the same MLP, Adam with cosine decay, EMA, batch and time distribution. MeanFlow trains
for --steps steps; flow matching trains for as many steps as fit in the same wall
time (its step is cheaper: no JVP). Distance: sliced 2-Wasserstein (and MMD) between 4000 samples and
4000 fresh data points, fixed seeds. Target: MeanFlow at 1 step at least as close as FM at 8 steps.
"""
from __future__ import annotations

import argparse
import time

import torch

import mfkit
from mfkit.data.toy2d import toy_sample
from mfkit.metrics import mmd_rbf, sliced_wasserstein
from mfkit.testing.toy import train_toy

MF_NFE = (1, 2, 4)
FM_NFE = (1, 2, 4, 8, 16, 32, 100)


def seconds_per_step(objective, data: str, settings: dict) -> float:
    """Wall time of one training step, after a warm-up (the first dual tensor loads PyTorch's rules)."""
    train_toy(objective, data, steps=5, **settings)
    start = time.perf_counter()
    train_toy(objective, data, steps=50, **settings)
    return (time.perf_counter() - start) / 50


def evaluate(model, sampler, nfe: int, data: str, n: int = 4000) -> tuple[float, float]:
    g = torch.Generator().manual_seed(1234)
    reference, noise = toy_sample(data, n, g), torch.randn(n, 2, generator=g)
    samples = sampler(model, noise, steps=nfe)
    return sliced_wasserstein(samples, reference, generator=torch.Generator().manual_seed(0)), mmd_rbf(samples[:2000], reference[:2000])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="eight_gaussians,checkerboard")
    parser.add_argument("--steps", type=int, default=3000, help="MeanFlow training steps")
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate, cosine decay to 0")
    parser.add_argument("--ema", type=float, default=0.995, help="EMA decay (both methods sample from the EMA)")
    parser.add_argument("--r-neq-t-share", type=float, default=0.5)
    parser.add_argument("--adaptive-p", type=float, default=0.5)
    parser.add_argument("--t-mean", type=float, default=0.0, help="logit-normal mean of t (both methods)")
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    times = mfkit.TimePairSampler(mfkit.LogitNormal(args.t_mean, 1.0), r_neq_t_share=args.r_neq_t_share)
    meanflow = mfkit.MeanFlow(times=times, adaptive_p=args.adaptive_p)
    flow_matching = mfkit.FlowMatching(times=mfkit.TimePairSampler(mfkit.LogitNormal(args.t_mean, 1.0), r_neq_t_share=0.0),
                                       adaptive_p=args.adaptive_p)
    settings = {"width": args.width, "depth": args.depth, "lr": args.lr, "ema_decay": args.ema, "batch": args.batch,
                "cosine": True}
    for data in args.data.split(","):
        ratio = seconds_per_step(meanflow, data, settings) / seconds_per_step(flow_matching, data, settings)
        fm_steps = round(args.steps * ratio)
        mf_run = train_toy(meanflow, data, steps=args.steps, **settings)
        fm_run = train_toy(flow_matching, data, steps=fm_steps, **settings)
        print(f"\n{data}: MeanFlow {args.steps} steps, flow matching {fm_steps} steps (equal wall time, "
              f"MF step = {ratio:.2f}x FM step); MLP {args.depth} x {args.width}, lr {args.lr}, "
              f"batch {args.batch}, EMA {args.ema}, t ~ LN({args.t_mean}, 1), r != t share {args.r_neq_t_share}, "
              f"adaptive p {args.adaptive_p}")
        print(f"{'method':<14}{'NFE':>5}{'sliced W2':>12}{'MMD':>10}")
        results = {}
        for name, run, sampler, nfes in (("MeanFlow", mf_run, mfkit.sample, MF_NFE),
                                          ("FlowMatching", fm_run, mfkit.euler_sample, FM_NFE)):
            for nfe in nfes:
                sw, mmd = evaluate(run.model, sampler, nfe, data)
                results[name, nfe] = sw
                print(f"{name:<14}{nfe:>5}{sw:>12.4f}{mmd:>10.4f}")
        verdict = "met" if results["MeanFlow", 1] <= results["FlowMatching", 8] else "NOT met"
        print(f"target (MeanFlow 1 step <= FM 8 steps): {verdict}")


if __name__ == "__main__":
    main()
