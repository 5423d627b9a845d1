"""The fused Triton attention tangent equals the math formula; "auto" picks it on CUDA only, safely.

Triton's interpreter (``TRITON_INTERPRET=1``) runs the kernel on CPU tensors, but it has to be set
before triton is imported, so the kernel cases run in one subprocess (this file run as a script,
``python tests/core/test_attention_triton.py interpret``) that prints their errors as JSON; the tests
below read them. The reference is ``torch.func.jvp`` of PyTorch's math attention in float64. The
selection logic is tested in this process with a stand-in kernel, without importing triton.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import mfkit.core
from mfkit.core import attention
from mfkit.core.attention import blockwise_attention_jvp
from mfkit.core.tangent_rules import attention_tangent, math_attention
from mfkit.core.tf32 import cuda_float32_products

HAS_TRITON = importlib.util.find_spec("triton") is not None
needs_triton = pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed")
#: Relative error (max |error| / max |reference|) allowed per input dtype against the float64 reference.
TOLERANCE = {"float32": 1e-5, "float16": 3e-3, "bfloat16": 2e-2}

# One interpreted case: name -> settings (defaults in _case). Sizes stay small: the interpreter is slow.
CASES: dict[str, dict] = {
    "basic": dict(),
    "L>S, odd head dims": dict(length=37, source=9, dim=12, dim_v=20),
    "one key": dict(heads=1, kv_heads=1, length=5, source=1, dim=3, dim_v=5),
    "causal L=S": dict(length=24, source=24, dim=16, dim_v=16, causal=True),
    "causal L<S": dict(length=9, source=40, causal=True),
    "causal L>S": dict(length=40, source=9, causal=True),
    "scale 0.3": dict(scale=0.3),
    "scale 2.5, large logits": dict(scale=2.5, logit=3.0),
    "large logits": dict(logit=6.0, dim=16, dim_v=16),
    "bool mask per head": dict(mask="bool"),
    "bool mask broadcast": dict(mask="bool_broadcast"),
    "additive mask": dict(mask="additive"),
    "fully masked rows": dict(mask="bool_empty_rows", length=9, source=21),
    "additive -inf rows": dict(mask="additive_empty_rows", length=9, source=21),
    "mask and causal": dict(mask="bool", causal=True, length=19, source=23),
    "gqa": dict(heads=4, kv_heads=2, length=11, source=19),
    "gqa, causal, mask per query head": dict(heads=4, kv_heads=2, length=17, source=17, causal=True,
                                             mask="additive_heads"),
    "tangent q only": dict(tangents="q"),
    "tangent k only": dict(tangents="k"),
    "tangent v only": dict(tangents="v"),
    "tangents q and k": dict(tangents="qk"),
    "no tangents": dict(tangents=""),
    "out given": dict(out_given=True, mask="bool"),
    "3-D inputs": dict(three_d=True, mask="additive"),
    "non-contiguous (B, L, H, E) views": dict(strided=True, causal=True),
    "default tiles, head dim 64": dict(batch=1, heads=2, kv_heads=2, length=70, source=150, dim=64, dim_v=64,
                                       block_m=None, block_n=None),
    "head dim 100 (pads to 128)": dict(batch=1, heads=1, kv_heads=1, length=20, source=35, dim=100, dim_v=100),
    "bf16": dict(dtype="bfloat16", dim=64, dim_v=64, length=20, source=45, block_m=32, block_n=32),
    "bf16 causal gqa, out given": dict(dtype="bfloat16", heads=4, kv_heads=2, causal=True, out_given=True),
    "bf16 additive mask": dict(dtype="bfloat16", mask="additive"),
    "fp16": dict(dtype="float16", dim=64, dim_v=64, length=20, source=45, block_m=32, block_n=32),
    "fp16 causal, bool mask": dict(dtype="float16", causal=True, mask="bool", length=19, source=23),
}


def _case(name: str) -> dict:
    settings = dict(batch=2, heads=2, kv_heads=2, length=13, source=21, dim=8, dim_v=8, dtype="float32",
                    causal=False, scale=None, mask=None, tangents="qkv", out_given=False, three_d=False,
                    strided=False, logit=1.0, block_m=16, block_n=16)
    settings.update(CASES[name])
    return settings


def _mask(kind: str | None, g: torch.Generator, batch: int, heads: int, length: int, source: int):
    if kind is None:
        return None
    if kind in ("bool", "bool_broadcast"):
        mask = torch.rand(batch, heads if kind == "bool" else 1, length, source, generator=g) > 0.4
        mask[..., 0] = True
        return mask
    if kind == "additive":
        return 3 * torch.randn(length, source, generator=g, dtype=torch.float64)
    if kind == "additive_heads":
        return torch.randn(batch, heads, length, source, generator=g, dtype=torch.float64)
    allowed = torch.rand(batch, heads, length, source, generator=g) > 0.5
    allowed[..., 1] = True
    allowed[0, 1, 2] = False  # rows with no key at all
    allowed[1, :, 4] = False
    allowed[1, 0, 5] = False
    allowed[1, 0, 5, -3:] = True  # only keys in the last tile
    if kind == "bool_empty_rows":
        return allowed
    return torch.zeros(allowed.shape, dtype=torch.float64).masked_fill(~allowed, float("-inf"))


def reference(q, k, v, qt, kt, vt, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """(O, O_t) by torch.func.jvp of PyTorch's math attention; absent tangents are zero."""
    tangents = tuple(t if t is not None else torch.zeros_like(p) for p, t in zip((q, k, v), (qt, kt, vt)))
    with math_attention():
        return torch.func.jvp(lambda a, b, c: F.scaled_dot_product_attention(a, b, c, **kwargs), (q, k, v), tangents)


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    if not torch.isfinite(got).all():
        return float("inf")
    return ((got.double() - expected).abs().max() / expected.abs().max().clamp_min(1e-30)).item()


def run_case(name: str) -> dict:
    """Interpreted kernel against the float64 reference: {"out": error, "tangent": error, "dtype": ...}."""
    from mfkit.core.attention_triton import triton_attention_jvp

    c = _case(name)
    g = torch.Generator().manual_seed(sum(map(ord, name)))
    b, h, hk, n, s, e, ev = (c[key] for key in ("batch", "heads", "kv_heads", "length", "source", "dim", "dim_v"))

    def randn(heads: int, length: int, dim: int, logit: float = 1.0) -> torch.Tensor:
        if c["strided"]:  # (B, L, H, E) memory seen as (B, H, L, E), as after a reshape of a linear layer
            return torch.randn(b, length, heads, dim, generator=g, dtype=torch.float64).transpose(1, 2) * logit
        return torch.randn(b, heads, length, dim, generator=g, dtype=torch.float64) * logit

    q, qt = randn(h, n, e, c["logit"]), randn(h, n, e, c["logit"])
    k, kt, v, vt = randn(hk, s, e), randn(hk, s, e), randn(hk, s, ev), randn(hk, s, ev)
    qt, kt, vt = (t if name_ in c["tangents"] else None for name_, t in zip("qkv", (qt, kt, vt)))
    mask = _mask(c["mask"], g, b, h, n, s)
    if c["three_d"]:
        q, k, v, qt, kt, vt = (x[0] if x is not None else None for x in (q, k, v, qt, kt, vt))
        mask = mask if mask is None or mask.dim() == 2 else mask[0]
    dtype = getattr(torch, c["dtype"])  # the reference sees the inputs rounded to it: only the kernel's error counts
    q, k, v, qt, kt, vt = (x.to(dtype).double() if x is not None else None for x in (q, k, v, qt, kt, vt))
    if mask is not None and mask.is_floating_point():
        mask = mask.to(dtype).double()
    kwargs = dict(attn_mask=mask, scale=c["scale"], enable_gqa=h != hk)
    if c["causal"] and mask is None:
        kwargs["is_causal"] = True
    elif c["causal"]:  # PyTorch refuses is_causal with a mask: the reference gets both folded into one
        causal = torch.ones(n, s, dtype=torch.bool).tril()
        kwargs["attn_mask"] = mask & causal if mask.dtype == torch.bool else mask.masked_fill(~causal, float("-inf"))
    expected_out, expected = reference(q, k, v, qt, kt, vt, **kwargs)

    low = [x.to(dtype) if x is not None else None for x in (q, k, v, qt, kt, vt)]
    mask = mask.to(dtype) if mask is not None and mask.is_floating_point() else mask
    given = expected_out.to(dtype) if c["out_given"] else None
    out, tangent = triton_attention_jvp(*low, attn_mask=mask, is_causal=c["causal"], scale=c["scale"],
                                        enable_gqa=h != hk, out=given, block_m=c["block_m"], block_n=c["block_n"])
    result = {"out": relative_error(out, expected_out), "dtype": str(tangent.dtype).removeprefix("torch."),
              "shape_ok": out.shape == expected_out.shape and tangent.shape == expected.shape}
    if expected.abs().max() > 0:
        result["tangent"] = relative_error(tangent, expected)
    else:
        result["tangent"] = float("inf") if tangent.abs().max() > 0 else 0.0
    if c["mask"] in ("bool_empty_rows", "additive_empty_rows"):
        result["empty_rows_zero"] = not (tangent[0, 1, 2].any() or tangent[1, :, 4].any() or out[1, :, 4].any())
    return result


class SmallAttentionNet(nn.Module):
    """nn.MultiheadAttention plus causal SDPA with grouped key/value heads (float32)."""

    def __init__(self, width: int = 32, heads: int = 4):
        super().__init__()
        self.inp = nn.Linear(4, width)
        self.mha = nn.MultiheadAttention(width, heads, batch_first=True)
        self.q, self.kv, self.out = nn.Linear(width, width), nn.Linear(width, width), nn.Linear(width, 4)
        self.heads = heads

    def forward(self, z, r, t, cond=None):
        b, n, _ = z.shape
        x = self.inp(z) * (1 + t[:, None, None] - r[:, None, None])
        x = x + self.mha(x, x, x, need_weights=False)[0]
        q = self.q(x).reshape(b, n, self.heads, -1).transpose(1, 2)
        k, v = self.kv(x).reshape(b, n, 2, self.heads // 2, -1).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        return self.out(x + y.transpose(1, 2).reshape(b, n, -1))


def run_interpreted() -> dict:
    """Every case, plus the forced mode through mfkit.jvp and the self-check, under the interpreter."""
    import mfkit
    from mfkit.core import attention_triton

    assert attention_triton.interpreting(), "TRITON_INTERPRET=1 must be set before triton is imported"
    results = {"cases": {name: run_case(name) for name in CASES}}
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 2, 5, 8, generator=g)
    try:  # float64 is outside the kernel's set: a forced "triton" says so
        attention.MODE = "triton"
        attention.attention_jvp(q.double(), q.double(), q.double(), q.double(), None, None)
        results["float64_error"] = ""
    except ValueError as error:
        results["float64_error"] = str(error)
    # Whole JVP of a small net with the kernel forced, against the math rule (both float32).
    torch.manual_seed(0)
    model = SmallAttentionNet()
    z, v = torch.randn(3, 21, 4, generator=g), torch.randn(3, 21, 4, generator=g)
    r, t = torch.zeros(3), torch.rand(3, generator=g)
    tangents = (v, torch.zeros_like(r), torch.ones_like(t))
    calls = []
    original = attention_triton.triton_attention_jvp
    attention_triton.triton_attention_jvp = lambda *a, **k: calls.append(1) or original(*a, **k)
    u, du = mfkit.jvp(model, z, r, t, tangents)
    attention_triton.triton_attention_jvp = original
    attention.MODE = "math"
    u_math, du_math = mfkit.jvp(model, z, r, t, tangents)
    results["jvp"] = {"calls": len(calls), "tangent": relative_error(du, du_math.double()),
                      "primal": relative_error(u, u_math.double())}
    attention.MODE = "auto"  # CPU tensors: never the kernel, even with the interpreter on
    results["auto_cpu_path"] = attention.select_path(q, q, q, q, q, q)
    results["self_check"] = {str(dt): attention._triton_self_check(torch.device("cpu"), dt, 64, 64, causal)
                             for dt, causal in ((torch.float32, False), (torch.bfloat16, True))}
    return results


def run_without_triton() -> dict:
    """With triton made unimportable: mfkit imports and runs a JVP under "auto" without loading the
    kernel module; a forced "triton" raises a clear error."""
    sys.modules["triton"] = None  # `import triton` now raises ImportError, find_spec returns None
    import mfkit

    z = torch.randn(2, 6, 4)
    tangents = (torch.randn_like(z), torch.zeros(2), torch.ones(2))
    _, du = mfkit.jvp(SmallAttentionNet(), z, torch.zeros(2), torch.rand(2), tangents)
    result = {"finite": bool(torch.isfinite(du).all()), "available": attention.triton_available(),
              "kernel_loaded": "mfkit.core.attention_triton" in sys.modules,
              "path": attention.select_path(z[:, None], z[:, None], z[:, None])}
    attention.MODE = "triton"
    try:
        attention.attention_jvp(z, z, z, z, z, z)
        result["error"] = ""
    except RuntimeError as error:
        result["error"] = str(error)
    return result


#: Triton 3.6's interpreter turns a loop bound into a Python int with int() of a one-element array,
#: which NumPy 2.5 refuses (seen on a GPU machine with both); the compiled kernel is unaffected
_OLD_INTERPRETER_BUG = "only 0-dimensional arrays can be converted to Python scalars"


def _subprocess(kind: str, interpret: bool, timeout: float = 300) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MFKIT_ATTENTION_TANGENT": "auto"}
    env.pop("TRITON_INTERPRET", None)
    if interpret:
        env["TRITON_INTERPRET"] = "1"
    done = subprocess.run([sys.executable, __file__, kind], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=Path(__file__).resolve().parents[2])
    if interpret and done.returncode != 0 and _OLD_INTERPRETER_BUG in done.stderr:
        import numpy
        import triton

        if tuple(int(p) for p in triton.__version__.split(".")[:2]) < (3, 8):
            pytest.skip(f"Triton {triton.__version__}'s interpreter cannot take a tensor as a loop bound with "
                        f"NumPy {numpy.__version__} ({_OLD_INTERPRETER_BUG}); Triton 3.8 can: upgrade triton "
                        f"to run the interpreted kernel tests")
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def interpreted() -> dict:
    if not HAS_TRITON:
        pytest.skip("triton is not installed")
    return _subprocess("interpret", interpret=True)


# ---------------------------------------------------------------- the kernel, interpreted on CPU
@needs_triton
@pytest.mark.parametrize("name", list(CASES))
def test_kernel_equals_float64_math_attention(name, interpreted):
    result = interpreted["cases"][name]
    tolerance = TOLERANCE[_case(name)["dtype"]]
    assert result["shape_ok"] and result["dtype"] == _case(name)["dtype"]
    assert result["out"] <= tolerance, f"output relative error {result['out']:.3g} > {tolerance:g}"
    assert result["tangent"] <= tolerance, f"tangent relative error {result['tangent']:.3g} > {tolerance:g}"
    assert result.get("empty_rows_zero", True)


@needs_triton
def test_forced_kernel_through_mfkit_jvp(interpreted):
    jvp = interpreted["jvp"]
    assert jvp["calls"] == 2  # both attentions (nn.MultiheadAttention and the causal GQA one) took the kernel
    assert jvp["tangent"] <= 1e-5 and jvp["primal"] <= 1e-6


@needs_triton
def test_forced_kernel_refuses_float64_clearly(interpreted):
    assert "dtype torch.float64" in interpreted["float64_error"]


@needs_triton
def test_auto_never_takes_the_kernel_for_cpu_tensors(interpreted):
    assert interpreted["auto_cpu_path"] in ("blockwise", "math")


@needs_triton
def test_self_check_passes_on_the_real_kernel(interpreted):
    assert interpreted["self_check"] == {"torch.float32": None, "torch.bfloat16": None}


def test_mfkit_works_without_triton():
    result = _subprocess("without_triton", interpret=False, timeout=120)
    assert result["finite"] and not result["available"] and not result["kernel_loaded"]
    assert result["path"] in ("blockwise", "math")
    assert "needs the triton package" in result["error"]


@needs_triton
@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1", reason="the interpreter takes CPU tensors")
def test_forced_kernel_on_cpu_without_the_interpreter_says_why(monkeypatch, generator):
    """Compiled Triton needs CUDA tensors: forcing the kernel on CPU raises, naming the reason."""
    monkeypatch.setattr(attention, "MODE", "triton")
    q, k, v, qt, kt, vt = (x.float() for x in _inputs(generator))
    with pytest.raises(ValueError, match="CUDA needed"):
        attention.attention_jvp(q, k, v, qt, kt, vt)


# ---------------------------------------------------------------- selection, with a stand-in kernel
def _stand_in(monkeypatch, kernel, unsupported=lambda *a, **k: None) -> list:
    """Replace mfkit.core.attention_triton by a module whose kernel is ``kernel``; return its call log."""
    calls = []

    def logged(*args, **kwargs):
        calls.append(kwargs.get("out") is not None)
        return kernel(*args, **kwargs)

    fake = types.SimpleNamespace(triton_attention_jvp=logged, unsupported_reason=unsupported)
    monkeypatch.setitem(sys.modules, "mfkit.core.attention_triton", fake)
    monkeypatch.setattr(mfkit.core, "attention_triton", fake, raising=False)
    monkeypatch.setattr(attention, "_triton_found", True)
    monkeypatch.setattr(attention, "_triton_disabled", None)
    monkeypatch.setattr(attention, "_triton_checked", {})
    monkeypatch.setattr(attention, "MODE", "auto")
    return calls


def _inputs(generator):
    return [torch.randn(2, 3, 7, 5, generator=generator, dtype=torch.float64) for _ in range(6)]


def test_cpu_tensors_never_select_the_kernel_under_auto(monkeypatch, generator):
    calls = _stand_in(monkeypatch, blockwise_attention_jvp)
    q, k, v, qt, kt, vt = _inputs(generator)
    assert attention.select_path(q, k, v, qt, kt, vt) in ("blockwise", "math")
    attention.attention_jvp(q, k, v, qt, kt, vt)
    assert calls == []


def test_auto_selects_the_kernel_where_the_device_qualifies(monkeypatch, generator):
    calls = _stand_in(monkeypatch, blockwise_attention_jvp)
    monkeypatch.setattr(attention, "_auto_device", lambda q: True)  # as for CUDA tensors
    q, k, v, qt, kt, vt = _inputs(generator)
    out = F.scaled_dot_product_attention(q, k, v)
    got = attention.attention_jvp(q, k, v, qt, kt, vt, out=out)
    torch.testing.assert_close(got, attention_tangent(q, k, v, qt, kt, vt), rtol=1e-10, atol=1e-12)
    assert calls == [False, True]  # the self-check (no out), then the call itself (out given)
    attention.attention_jvp(q, k, v, qt, kt, vt, out=out)
    assert calls == [False, True, True]  # checked once per device, dtype, head dims and causal flag
    attention.attention_jvp(q, k, v, qt, kt, vt, is_causal=True)
    assert calls == [False, True, True, False, False]


def test_auto_takes_the_kernel_for_float32_only_on_tf32(monkeypatch, generator):
    """Exact float32 products run on CUDA cores, where the kernel is far slower than the PyTorch paths:
    "auto" takes it for float32 only when PyTorch's float32 matmul precision allows TF32."""
    calls = _stand_in(monkeypatch, blockwise_attention_jvp)
    monkeypatch.setattr(attention, "_auto_device", lambda q: True)
    monkeypatch.setattr(attention, "_has_tf32_cores", lambda device: True)  # as on an Ampere or later GPU
    q, k, v, qt, kt, vt = (x.float() for x in _inputs(generator))
    cuda = torch.device("cuda")  # the switches are plain flags: settable without a GPU
    with cuda_float32_products(cuda, tf32=False):
        assert attention.select_path(q, k, v, qt, kt, vt) in ("blockwise", "math")
    assert calls == []
    with cuda_float32_products(cuda, tf32=True):
        assert attention.select_path(q, k, v, qt, kt, vt) == "triton"
    assert calls == [False]  # the self-check, under the TF32 tolerance
    with cuda_float32_products(cuda, tf32=False):  # 16-bit inputs: whatever the float32 setting
        assert attention.select_path(*(x.bfloat16() for x in (q, k, v, qt, kt, vt))) == "triton"


def test_auto_falls_back_when_the_kernel_declines_the_inputs(monkeypatch, generator):
    calls = _stand_in(monkeypatch, blockwise_attention_jvp, unsupported=lambda *a, **k: "dtype torch.float64")
    monkeypatch.setattr(attention, "_auto_device", lambda q: True)
    q, k, v, qt, kt, vt = _inputs(generator)
    assert attention.select_path(q, k, v, qt, kt, vt) in ("blockwise", "math")
    assert calls == []


@pytest.mark.parametrize("failure", ["wrong", "raises"])
def test_self_check_disables_a_faulty_kernel(failure, monkeypatch, generator):
    def faulty(*args, **kwargs):
        if failure == "raises":
            raise RuntimeError("no kernel image")
        out, tangent = blockwise_attention_jvp(*args, **kwargs)
        return out, tangent * 1.01

    calls = _stand_in(monkeypatch, faulty)
    monkeypatch.setattr(attention, "_auto_device", lambda q: True)
    q, k, v, qt, kt, vt = _inputs(generator)
    with pytest.warns(RuntimeWarning, match="disabled for this process"):
        got = attention.attention_jvp(q, k, v, qt, kt, vt)
    torch.testing.assert_close(got, attention_tangent(q, k, v, qt, kt, vt), rtol=1e-10, atol=1e-12)
    assert attention.select_path(q, k, v, qt, kt, vt) in ("blockwise", "math")
    assert len(calls) == 1  # only the self-check ran it


def test_auto_survives_a_kernel_that_fails_after_its_check(monkeypatch, generator):
    state = {"checked": False}

    def flaky(*args, **kwargs):
        if state["checked"]:
            raise RuntimeError("out of resources: shared memory")
        state["checked"] = True
        return blockwise_attention_jvp(*args, **kwargs)

    _stand_in(monkeypatch, flaky)
    monkeypatch.setattr(attention, "_auto_device", lambda q: True)
    q, k, v, qt, kt, vt = _inputs(generator)
    with pytest.warns(RuntimeWarning, match="out of resources"):
        got = attention.attention_jvp(q, k, v, qt, kt, vt)
    torch.testing.assert_close(got, attention_tangent(q, k, v, qt, kt, vt), rtol=1e-10, atol=1e-12)


def test_forced_mode_raises_when_triton_is_missing(monkeypatch, generator):
    monkeypatch.setattr(attention, "_triton_found", False)
    monkeypatch.setattr(attention, "MODE", "triton")
    q, k, v, qt, kt, vt = _inputs(generator)
    with pytest.raises(RuntimeError, match="needs the triton package"):
        attention.attention_jvp(q, k, v, qt, kt, vt)
    monkeypatch.setattr(attention, "MODE", "auto")  # "auto" does not mind
    torch.testing.assert_close(attention.attention_jvp(q, k, v, qt, kt, vt), attention_tangent(q, k, v, qt, kt, vt))


def test_unknown_mode_is_refused(monkeypatch, generator):
    monkeypatch.setattr(attention, "MODE", "fused")
    q = _inputs(generator)[0]
    with pytest.raises(ValueError, match="triton"):
        attention.select_path(q, q, q)


@pytest.mark.skipif(not (HAS_TRITON and torch.cuda.is_available()), reason="needs CUDA and triton")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_kernel_matches_float64(dtype, generator):
    """On a GPU: the compiled kernel (not the interpreter) on a DiT-like head dim, with a mask and GQA."""
    from mfkit.core.attention_triton import triton_attention_jvp

    q, qt = (torch.randn(2, 4, 77, 64, generator=generator, dtype=torch.float64) for _ in range(2))
    k, kt, v, vt = (torch.randn(2, 2, 130, 64, generator=generator, dtype=torch.float64) for _ in range(4))
    mask = torch.rand(2, 4, 77, 130, generator=generator) > 0.3
    mask[..., 0] = True
    expected_out, expected = reference(q, k, v, qt, kt, vt, attn_mask=mask, enable_gqa=True)
    out, tangent = triton_attention_jvp(*(x.cuda().to(dtype) for x in (q, k, v, qt, kt, vt)), attn_mask=mask.cuda(),
                                        enable_gqa=True)
    tolerance = TOLERANCE[str(dtype).removeprefix("torch.")]
    assert relative_error(out.cpu(), expected_out) <= tolerance
    assert relative_error(tangent.cpu(), expected) <= tolerance


if __name__ == "__main__":
    print(json.dumps({"interpret": run_interpreted, "without_triton": run_without_triton}[sys.argv[1]]()))
