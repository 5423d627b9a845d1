"""One-shot check of the CUDA paths, for a machine with a GPU (also runs on CPU, for a dry run).

    python benchmarks/cuda_check.py                 # device auto
    python benchmarks/cuda_check.py --device cpu

Checks, printing one line each and exiting non-zero on the first failure:
1. every JVP backend agrees with a float64 central difference on a conv + attention network (fp32);
2. under bf16 autocast the default backend's tangent stays within 5% of fp32 and the target is fp32;
3. a short training run of the demo recipe with precision bf16 (autocast applies on CUDA only) keeps a
   finite loss, and its checkpoint resumes;
4. every attention-tangent path (math, blockwise and, on CUDA with triton installed, the fused Triton
   kernel) agrees with the math formula in float64, in fp32 and bf16, with a mask, causal masking and
   grouped heads; and which path "auto" picks there;
5. under bf16 autocast, the tangent's error against float64 with each jvp_precision (fp32, tf32,
   autocast) on a wider conv + attention net, and PyTorch's float32 matmul precision restored after.

``--checks precisions,attention`` runs a subset (names: attention, backends, bf16, training, precisions).
"""
from __future__ import annotations

import argparse
import tempfile

import torch

import mfkit
from mfkit.core.tf32 import cuda_float32_products, settings
from mfkit.testing.networks import ConvAttentionNet


def conv_attention_net(device):
    torch.manual_seed(0)
    return ConvAttentionNet(width=32, blocks=1, heads=4).to(device)


def check_backends(device) -> None:
    model = conv_attention_net(device)
    g = torch.Generator(device).manual_seed(0)
    z = torch.randn(4, 3, 8, 8, device=device, generator=g)
    v = torch.randn(4, 3, 8, 8, device=device, generator=g)
    t, r = torch.rand(4, device=device, generator=g) * 0.5 + 0.5, torch.rand(4, device=device, generator=g) * 0.5
    h = 1e-4
    with torch.no_grad():
        double = conv_attention_net(device).double()
        reference = (double(z.double() + h * v.double(), r.double(), t.double() + h)
                     - double(z.double() - h * v.double(), r.double(), t.double() - h)) / (2 * h)
    for backend in mfkit.JVP_BACKENDS:
        _, du = mfkit.jvp(model, z, r, t, (v, torch.zeros_like(r), torch.ones_like(t)), backend=backend, fd_step=1e-3)
        error = ((du.double() - reference).abs().max() / reference.abs().max()).item()
        limit = 5e-2 if backend == "finite_difference" else 1e-3
        status = "ok" if error < limit else "FAIL"
        print(f"[{status}] {device.type} fp32 JVP backend {backend}: relative error {error:.2e}")
        if status == "FAIL":
            raise SystemExit(1)


def check_bf16(device) -> None:
    model = conv_attention_net(device)
    z = torch.randn(4, 3, 8, 8, device=device)
    v, t, r = torch.randn_like(z), torch.full((4,), 0.9, device=device), torch.full((4,), 0.2, device=device)
    tangents = (v, torch.zeros_like(r), torch.ones_like(t))
    _, exact = mfkit.jvp(model, z, r, t, tangents)
    with torch.autocast(device.type, dtype=torch.bfloat16):
        _, half = mfkit.jvp(model, z, r, t, tangents)
        target = mfkit.meanflow_target(model, z, r, t, v)
    error = ((half.float() - exact).abs().max() / exact.abs().max()).item()
    ok = error < 0.05 and target.dtype == torch.float32
    print(f"[{'ok' if ok else 'FAIL'}] {device.type} bf16 tangent relative error {error:.2e}, target dtype {target.dtype}")
    if not ok:
        raise SystemExit(1)


def check_training(device) -> None:
    from mfkit.cli.demo import demo_recipe_data
    from mfkit.recipe import parse_recipe
    from mfkit.train.trainer import Trainer

    with tempfile.TemporaryDirectory() as folder:
        data = demo_recipe_data()
        data["output_dir"] = folder
        data["train"].update({"steps": 200, "checkpoint_every": 100, "device": device.type, "precision": "bf16"})
        first = Trainer(parse_recipe(data), progress=False).fit()
        data["train"]["steps"] = 300
        resumed = Trainer(parse_recipe(data), resume=True, progress=False).fit()
        print(f"[ok] {device.type} bf16 training: {first.step} steps, resumed to {resumed.step}; "
              f"checkpoint {resumed.checkpoint.name}")


def check_attention_paths(device) -> None:
    """Each attention-tangent path against the float64 math formula (fp32: 1e-5, bf16: 2e-2, relative)."""
    import importlib.util

    from mfkit.core import attention
    from mfkit.core.tangent_rules import attention_tangent

    g = torch.Generator(device).manual_seed(0)
    q, qt = (torch.randn(2, 8, 77, 64, device=device, generator=g) for _ in range(2))
    k, kt, v, vt = (torch.randn(2, 4, 130, 64, device=device, generator=g) for _ in range(4))
    mask = torch.rand(2, 8, 77, 130, device=device, generator=g) > 0.3
    mask[..., 0] = True
    paths = ["math", "blockwise"]
    if device.type == "cuda" and importlib.util.find_spec("triton") is not None:
        paths.append("triton")
    else:
        print(f"[skip] {device.type} Triton attention kernel: needs CUDA and triton")
    saved = attention.MODE
    try:
        for dtype, limit in ((torch.float32, 1e-5), (torch.bfloat16, 2e-2)):
            for causal, m in ((False, mask), (True, None)):
                inputs = [x.to(dtype) for x in (q, k, v, qt, kt, vt)]
                exact = attention_tangent(*(x.double() for x in inputs), m, causal, None, True)
                for path in paths:
                    attention.MODE = path
                    with torch.no_grad():
                        got = attention.attention_jvp(*inputs, m, causal, None, True)
                    error = ((got.double() - exact).abs().max() / exact.abs().max()).item()
                    ok = error <= limit and got.dtype == dtype
                    print(f"[{'ok' if ok else 'FAIL'}] {device.type} attention tangent {path}, {str(dtype)[6:]}, "
                          f"{'causal' if causal else 'bool mask'}, GQA: relative error {error:.2e} (limit {limit:g})")
                    if not ok:
                        raise SystemExit(1)
        if "triton" in paths:  # float32 on TF32 tensor cores (jvp_precision tf32): the kernel's TF32 dots
            inputs = [x.float() for x in (q, k, v, qt, kt, vt)]
            exact = attention_tangent(*(x.double() for x in inputs), mask, False, None, True)
            attention.MODE = "triton"
            with cuda_float32_products(device, tf32=True), torch.no_grad():
                got = attention.attention_jvp(*inputs, mask, False, None, True)
            error = ((got.double() - exact).abs().max() / exact.abs().max()).item()
            ok = error <= 1e-2
            print(f"[{'ok' if ok else 'FAIL'}] {device.type} attention tangent triton, float32 with TF32 dots: "
                  f"relative error {error:.2e} (limit 0.01)")
            if not ok:
                raise SystemExit(1)
        attention.MODE = "auto"
        inputs = [x.to(torch.bfloat16) for x in (q, k, v, qt, kt, vt)]
        print(f"[ok] {device.type} bf16 attention tangent: 'auto' takes the "
              f"{attention.select_path(*inputs, mask, False, True)} path")
        inputs = [x.float() for x in (q, k, v, qt, kt, vt)]
        for tf32 in (False, True):
            with cuda_float32_products(device, tf32=tf32):
                print(f"[ok] {device.type} float32 attention tangent{' with TF32' if tf32 else ''}: 'auto' takes the "
                      f"{attention.select_path(*inputs, mask, False, True)} path")
    finally:
        attention.MODE = saved


def check_precisions(device) -> None:
    """Tangent error against float64 under bf16 autocast for each jvp_precision (limits: fp32 1e-4,
    tf32 1e-2, autocast 5e-2), on a conv + attention net of width 64 (matrix products over 64-256 terms)."""
    torch.manual_seed(0)
    model = ConvAttentionNet(width=64, blocks=2, heads=4).to(device)
    g = torch.Generator(device).manual_seed(0)
    z, v = (torch.randn(8, 3, 16, 16, device=device, generator=g) for _ in range(2))
    t = torch.rand(8, device=device, generator=g) * 0.5 + 0.5
    r = t * torch.rand(8, device=device, generator=g)
    tangents = (v, torch.zeros_like(r), torch.ones_like(t))
    double = ConvAttentionNet(width=64, blocks=2, heads=4).to(device).double()
    double.load_state_dict(model.state_dict())
    _, exact = mfkit.jvp(double, z.double(), r.double(), t.double(), tuple(x.double() for x in tangents))
    saved = settings()
    failed = False
    for precision, limit in (("fp32", 1e-4), ("tf32", 1e-2), ("autocast", 5e-2)):
        with torch.autocast(device.type, dtype=torch.bfloat16):
            _, du = mfkit.jvp(model, z, r, t, tangents, precision=precision)
        error = ((du.double() - exact).abs().max() / exact.abs().max()).item()
        ok = error < limit and settings() == saved
        print(f"[{'ok' if ok else 'FAIL'}] {device.type} bf16 autocast, jvp_precision {precision}: tangent relative "
              f"error {error:.2e} against float64 (limit {limit:g}), {du.dtype}")
        failed = failed or not ok
    if failed:
        raise SystemExit(1)


CHECKS = {"attention": check_attention_paths, "backends": check_backends, "bf16": check_bf16,
          "training": check_training, "precisions": check_precisions}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--checks", default=",".join(CHECKS), help="comma separated: " + ", ".join(CHECKS))
    args = parser.parse_args()
    name = "cuda" if args.device == "auto" and torch.cuda.is_available() else ("cpu" if args.device == "auto" else args.device)
    device = torch.device(name)
    print(f"torch {torch.__version__}, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))
    for name in args.checks.split(","):
        CHECKS[name](device)


if __name__ == "__main__":
    main()
