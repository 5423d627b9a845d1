"""Time and peak memory of the attention tangent: the math rule against the blockwise (online-softmax) pass.

    python benchmarks/attention_tangent.py --threads 1                       # CPU, float32, the table
    python benchmarks/attention_tangent.py --lengths 256,1024 --batches 1,8 --blocks 128,256,512
    python benchmarks/attention_tangent.py --device cuda

What is timed is the tangent the fast rule computes for ``F.scaled_dot_product_attention`` with tangents
on q, k and v (as in a MeanFlow JVP through self-attention), given the primal output O (the rule has it
from the fused primal kernel): ``math`` is :func:`mfkit.core.tangent_rules.attention_tangent`,
``blockwise`` is :func:`mfkit.core.attention.blockwise_attention_jvp`. ``sdpa`` is the fused primal
forward alone, for scale. Each row runs in a fresh process; peak memory is, on CPU, how far the
process's peak resident memory (ru_maxrss) grew over the calls, on CUDA the peak allocated bytes above
the inputs. Shapes: (batch, heads, L, dim) with L = S (self-attention), float32.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F


def measure(path: str, length: int, batch: int, block: int, args) -> dict:
    from mfkit.core.attention import blockwise_attention_jvp
    from mfkit.core.tangent_rules import attention_tangent

    device = torch.device(args.device)
    g = torch.Generator(device).manual_seed(0)
    shape = (batch, args.heads, length, args.dim)
    q, k, v, qt, kt, vt = (torch.randn(shape, generator=g, device=device) for _ in range(6))
    out = F.scaled_dot_product_attention(q, k, v)

    def call():
        with torch.no_grad():
            if path == "math":
                return attention_tangent(q, k, v, qt, kt, vt, out=out)
            if path == "blockwise":
                return blockwise_attention_jvp(q, k, v, qt, kt, vt, out=out, block_size=block)[1]
            return F.scaled_dot_product_attention(q, k, v)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    # Warm up on a tiny problem first: the first call of an op loads code that counts in ru_maxrss.
    saved = q, k, v, qt, kt, vt, out
    q, k, v, qt, kt, vt, out = (x[:1, :1, :2 * (block or 16)] for x in saved)
    call()
    q, k, v, qt, kt, vt, out = saved
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device.type == "cuda":
        sync()
        torch.cuda.reset_peak_memory_stats()
        base_cuda = torch.cuda.memory_allocated()
    times = []
    for i in range(args.warmup + args.repeats):
        start = time.perf_counter()
        call()
        sync()
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak = (torch.cuda.max_memory_allocated() - base_cuda) / 2**20
    else:
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss) / 1024
    return {"path": path, "length": length, "batch": batch, "block": block if path == "blockwise" else None,
            "median_ms": 1e3 * statistics.median(times), "peak_mib": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--lengths", default="256,1024,2048,4096", help="L = S, comma separated")
    parser.add_argument("--batches", default="1,8", help="comma separated")
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--dim", type=int, default=64, help="head dimension")
    parser.add_argument("--paths", default="sdpa,math,blockwise")
    parser.add_argument("--blocks", default="64", help="key block sizes of the blockwise pass, comma separated")
    parser.add_argument("--max-math-gib", type=float, default=12.0,
                        help="skip the math rule where one (L, S) float32 buffer over batch and heads exceeds "
                             "this / 3 GiB (it holds about three)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.one:
        path, length, batch, block = args.one.split(":")
        print(json.dumps(measure(path, int(length), int(batch), int(block), args)))
        return
    print(f"attention tangent, q/k/v tangents, {args.heads} heads, head dim {args.dim}, float32, {args.device}, "
          f"threads {args.threads or torch.get_num_threads()}, median of {args.repeats}")
    print(f"{'L=S':>6}{'batch':>6}{'path':>16}{'ms':>11}{'x math':>8}{'peak MiB':>10}{'x math':>8}")
    for length in map(int, args.lengths.split(",")):
        for batch in map(int, args.batches.split(",")):
            runs = []
            for path in args.paths.split(","):
                for block in (map(int, args.blocks.split(",")) if path == "blockwise" else [0]):
                    buffer_gib = batch * args.heads * length * length * 4 / 2**30
                    if path == "math" and 3 * buffer_gib > args.max_math_gib:
                        print(f"{length:>6}{batch:>6}{'math':>16}   skipped: about {3 * buffer_gib:.0f} GiB", flush=True)
                        continue
                    child = [sys.executable, __file__, "--one", f"{path}:{length}:{batch}:{block}"]
                    for key in ("device", "heads", "dim", "repeats", "warmup", "threads"):
                        child += [f"--{key}", str(getattr(args, key))]
                    done = subprocess.run(child, capture_output=True, text=True)
                    if done.returncode != 0:
                        print(f"{length:>6}{batch:>6}{path:>16}   failed: {done.stderr.strip().splitlines()[-1:]}")
                        continue
                    row = json.loads(done.stdout.strip().splitlines()[-1])
                    runs.append(row)
                    math_row = next((r for r in runs if r["path"] == "math"), None)
                    name = f"blockwise/{block}" if path == "blockwise" else path
                    ratio_t = f"{row['median_ms'] / math_row['median_ms']:.2f}" if math_row else "-"
                    ratio_m = (f"{row['peak_mib'] / math_row['peak_mib']:.2f}"
                               if math_row and math_row["peak_mib"] > 0 else "-")
                    print(f"{length:>6}{batch:>6}{name:>16}{row['median_ms']:>11.1f}{ratio_t:>8}"
                          f"{row['peak_mib']:>10.0f}{ratio_m:>8}", flush=True)


if __name__ == "__main__":
    main()
