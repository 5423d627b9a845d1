"""What minibatch optimal transport costs per training step: ot_permutation's time by batch size.

    OMP_NUM_THREADS=1 python benchmarks/coupling_cost.py
    python benchmarks/coupling_cost.py --sizes 256 1024 --dims 2 784 --classes 10
    python benchmarks/coupling_cost.py --sizes 1024 4096 --blocks 0 256   # coupling_block (0: none)
    python benchmarks/coupling_cost.py --sets 256 512 1024 --batch 32     # set_coupling on point clouds

For each batch size n, data dimension d and number of classes, times mfkit.ot_permutation on Gaussian
noise against uniform data (the exact assignment is hardest when the two look alike), as the median of
--repeats calls, and prints a Markdown table. Classes split the batch evenly: each class is its own,
smaller assignment; --blocks bounds the rows of one assignment (objective.coupling_block).

--sets times the set coupling instead (objective.set_coupling: mfkit.align_sets on a batch of --batch
clouds of N points in 3-D, points on a unit sphere against Gaussian noise): one (N, N) assignment per cloud.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import mfkit


def seconds(n: int, d: int, classes: int, repeats: int, block: int | None = None) -> float:
    g = torch.Generator().manual_seed(n + d)
    x, noise = torch.rand(n, d, generator=g) * 4 - 2, torch.randn(n, d, generator=g)
    labels = torch.arange(n) % classes if classes > 1 else None
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        mfkit.ot_permutation(x, noise, labels, block)
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def set_seconds(points: int, batch: int, repeats: int) -> float:
    g = torch.Generator().manual_seed(points)
    x = torch.nn.functional.normalize(torch.randn(batch, points, 3, generator=g), dim=-1)
    noise = torch.randn(batch, points, 3, generator=g)
    mfkit.align_sets("ot", x[:1], noise[:1], 0)  # warm up (scipy's first call loads it)
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        mfkit.align_sets("ot", x, noise, 0)
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256, 1024, 2048, 4096])
    parser.add_argument("--dims", type=int, nargs="+", default=[2, 784])
    parser.add_argument("--classes", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--blocks", type=int, nargs="+", default=[0], help="rows per assignment (0: no bound)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sets", type=int, nargs="*", default=None, metavar="N",
                        help="time the set coupling on clouds of these point counts instead")
    parser.add_argument("--batch", type=int, default=32, help="clouds per step with --sets")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); median of {args.repeats} calls\n")
    if args.sets is not None:
        print("| points per cloud | clouds per step | ms per step | ms per cloud |\n|---|---|---|---|")
        for points in args.sets or [256, 512, 1024]:
            ms = 1000 * set_seconds(points, args.batch, args.repeats)
            print(f"| {points} | {args.batch} | {ms:.0f} | {ms / args.batch:.1f} |", flush=True)
        return
    print("| batch | dim | classes | block | ms per step |\n|---|---|---|---|---|")
    for n in args.sizes:
        for d in args.dims:
            for classes in args.classes:
                for block in args.blocks:
                    ms = 1000 * seconds(n, d, classes, args.repeats, block or None)
                    print(f"| {n} | {d} | {classes} | {block or '-'} | {ms:.1f} |", flush=True)


if __name__ == "__main__":
    main()
