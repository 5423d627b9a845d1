"""The fused Triton attention tangent against math attention's JVP and flash attention, on CUDA in bf16.

    python benchmarks/attention_triton.py                     # DiT-B/4 block: batch 64, 12 heads, 256 tokens, dim 64
    python benchmarks/attention_triton.py --batch 16 --tokens 1024 --dtype float16
    python benchmarks/attention_triton.py --dtype float32 [--tf32]   # float32 (as jvp_precision fp32 / tf32 run it)
    python benchmarks/attention_triton.py --smoke             # no GPU: a tiny run in Triton's interpreter (CPU)

DiT-B/4 on 256x256 images sees 32x32 latents in 4x4 patches: 256 tokens, 12 heads of 64. Rows (self-
attention, tangents on q, k and v, as in a MeanFlow JVP):

- ``flash primal``: ``F.scaled_dot_product_attention`` on the flash kernel (memory-efficient attention
  for float32, which flash does not take), O alone, for scale;
- ``triton O + O_t``: :func:`mfkit.core.attention_triton.triton_attention_jvp`, both from one launch;
- ``flash O, triton O_t``: what mfkit's fast rule does per attention call on CUDA: the flash primal
  (it carries the gradient), then the kernel for the tangent given O;
- ``flash O, blockwise O_t``: the same with the PyTorch blockwise pass (the path before the kernel);
- ``math jvp``: ``torch.func.jvp`` of math attention (PyTorch's own forward-mode AD, (L, S) weights).

Time is the median of ``--repeats`` calls after ``--warmup`` (CUDA synchronised); peak is the most
memory allocated above the inputs during the calls (``torch.cuda.max_memory_allocated``). The error
column is max |O_t - reference| / max |reference| with the reference the math formula in float64 on
the same (rounded) inputs. On CPU without ``--smoke`` the script says it needs CUDA and exits 0;
``--smoke`` re-runs itself with ``TRITON_INTERPRET=1`` on a tiny shape, to check the script, not to time.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel


def timed(call: Callable[[], object], device: torch.device, warmup: int, repeats: int) -> tuple[float, float | None]:
    """(median ms, peak MiB above what was allocated before, None on CPU) of ``call``."""
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        call()
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        sync()
        times.append(time.perf_counter() - start)
    peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20 if device.type == "cuda" else None
    return 1e3 * statistics.median(times), peak


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return ((got.double() - expected).abs().max() / expected.abs().max()).item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--dim", type=int, default=64, help="head dimension")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="tiny interpreted run on CPU (checks the script)")
    parser.add_argument("--tf32", action="store_true",
                        help="float32 products on TF32 tensor cores (torch.set_float32_matmul_precision('high'), "
                             "which the kernel follows), as under jvp_precision tf32")
    args = parser.parse_args()
    if args.tf32:
        torch.set_float32_matmul_precision("high")
    if args.smoke and os.environ.get("TRITON_INTERPRET") != "1":
        env = {**os.environ, "TRITON_INTERPRET": "1"}  # must be set before triton is imported
        raise SystemExit(subprocess.run([sys.executable, *sys.argv], env=env).returncode)
    if args.smoke:
        args.batch, args.heads, args.tokens, args.dim, args.repeats, args.warmup = 1, 2, 40, 16, 1, 0
        device = torch.device("cpu")
    elif not torch.cuda.is_available():
        print("benchmarks/attention_triton.py needs a CUDA GPU (the Triton kernel runs there); "
              "--smoke runs a tiny interpreted check on CPU instead.")
        return
    else:
        device = torch.device("cuda")

    from mfkit.core.attention import blockwise_attention_jvp
    from mfkit.core.attention_triton import triton_attention_jvp
    from mfkit.core.tangent_rules import attention_tangent

    dtype = getattr(torch, args.dtype)
    g = torch.Generator(device).manual_seed(0)
    shape = (args.batch, args.heads, args.tokens, args.dim)
    q, k, v, qt, kt, vt = (torch.randn(shape, generator=g, device=device).to(dtype) for _ in range(6))
    with torch.no_grad():
        reference = attention_tangent(*(x.double() for x in (q, k, v, qt, kt, vt)))

    def flash() -> torch.Tensor:  # flash attention; memory-efficient attention for float32 (no flash kernel)
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]):
            return F.scaled_dot_product_attention(q, k, v)

    def triton_both() -> torch.Tensor:
        return triton_attention_jvp(q, k, v, qt, kt, vt)[1]

    def flash_then_triton() -> torch.Tensor:
        return triton_attention_jvp(q, k, v, qt, kt, vt, out=flash())[1]

    def flash_then_blockwise() -> torch.Tensor:
        return blockwise_attention_jvp(q, k, v, qt, kt, vt, out=flash())[1]

    def math_jvp() -> torch.Tensor:
        with sdpa_kernel(SDPBackend.MATH):
            return torch.func.jvp(F.scaled_dot_product_attention, (q, k, v), (qt, kt, vt))[1]

    rows = [("flash primal", flash), ("triton O + O_t", triton_both), ("flash O, triton O_t", flash_then_triton),
            ("flash O, blockwise O_t", flash_then_blockwise), ("math jvp", math_jvp)]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU, Triton interpreter (smoke)"
    print(f"attention tangent, batch {args.batch}, {args.heads} heads, {args.tokens} tokens, head dim {args.dim}, "
          f"{args.dtype}{' (TF32 products)' if args.tf32 else ''}, {name}, median of {args.repeats}\n")
    print("| path | ms | x flash primal | peak MiB | O_t rel. error vs float64 |")
    print("|---|---|---|---|---|")
    flash_ms = None
    for label, call in rows:
        try:
            with torch.no_grad():
                ms, peak = timed(call, device, args.warmup, args.repeats)
                tangent = call()
        except RuntimeError as error:  # e.g. no flash kernel for this dtype or device
            print(f"| {label} | failed: {str(error).splitlines()[0][:80]} | | | |")
            continue
        flash_ms = ms if label == "flash primal" else flash_ms
        ratio = f"{ms / flash_ms:.2f}" if flash_ms else "-"
        error = "-" if label == "flash primal" else f"{relative_error(tangent, reference):.2e}"
        memory = f"{peak:.0f}" if peak is not None else "-"
        print(f"| {label} | {ms:.3f} | {ratio} | {memory} | {error} |", flush=True)


if __name__ == "__main__":
    main()
