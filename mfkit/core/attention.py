"""Memory-efficient tangent of scaled-dot-product attention: blockwise over keys, online softmax.

The math rule (:func:`mfkit.core.tangent_rules.attention_tangent`) materialises the (L, S) attention
weights P and the score tangent S_t for every batch element and head. Here the keys are visited in
blocks of :data:`BLOCK_SIZE` with a running row maximum, as flash attention does for the primal, so
the working memory is O(L x block) per batch element and head, not O(L x S).

Derivation. With scores s_j = scale q k_j (+ mask), weights p_j = softmax(s)_j, output O = sum_j p_j v_j
and score tangents d_j = scale (q_t k_j + q k_t,j):

    O_t = sum_j p_j (d_j - sum_i p_i d_i) v_j + sum_j p_j v_t,j
        = (sum_j e_j (d_j v_j + v_t,j)) / l  -  O (sum_j e_j d_j) / l,

with e_j = exp(s_j - m) for any constant m (the row maximum) and l = sum_j e_j. So one pass over the
key blocks keeps, per query row, the running maximum m, the normaliser l, the row sum c = sum e_j d_j,
the tangent accumulator b = sum e_j (d_j v_j + v_t,j) and (unless the caller already has O) the
output accumulator a = sum e_j v_j; when a block raises the maximum from m to m', every accumulator
is multiplied by exp(m - m'). At the end O = a / l and O_t = b / l - O c / l. Rows whose keys are all
masked have l = 0 and get O = O_t = 0, as PyTorch's math kernel gives.

Selection (:func:`select_path`, used by :func:`attention_jvp` and so by the fast tangent rules):
``MODE = "auto"`` takes the fused Triton kernel (:mod:`mfkit.core.attention_triton`, output and
tangent in one pass) for CUDA tensors when triton is installed, the inputs are ones the kernel takes
(float16/bfloat16/float32, head dims <= 256, ...; masks, ``is_causal``, ``scale`` and ``enable_gqa``
included), they are 16-bit, or float32 with TF32 products allowed on a GPU with TF32 tensor cores
(:func:`kernel_pays_off`), and its one-time self-check passed; otherwise, and always on CPU, the blockwise pass when
the attention weights would hold at least :data:`AUTO_MIN_WEIGHTS` elements (L x S x batch x heads)
and the math rule below that. ``"blockwise"``, ``"math"`` and ``"triton"`` force one path; a forced
``"triton"`` raises when triton is missing or the inputs are outside the kernel's set.
The self-check (:func:`_triton_self_check`): the first time "auto" would use the kernel for a
device, dtype, pair of head dims and causal flag, it runs it on a small random problem (70 queries,
150 keys: several tiles, ragged edges) and compares O and O_t with this module's blockwise pass in
float64; a mismatch or an error (a compile failure, say) disables the kernel for the process with a
RuntimeWarning and the PyTorch paths run instead. Cost: one small launch and compile per key.
See docs/benchmarks.md ("Attention tangents") for the measurements behind the defaults.
"""
from __future__ import annotations

import importlib.util
import math
import os
import warnings

import torch

from mfkit.core.tf32 import cuda_matmul_uses_tf32

#: Keys per block of the blockwise pass; memory per batch element and head is about L x BLOCK_SIZE.
BLOCK_SIZE: int = 64
#: "auto": the Triton kernel on CUDA when it applies, else blockwise when L * S * batch * heads >=
#: AUTO_MIN_WEIGHTS, else math; "blockwise", "math" or "triton": always that one.
#: The environment variable MFKIT_ATTENTION_TANGENT sets the initial value (benchmarks' subprocesses).
MODE: str = os.environ.get("MFKIT_ATTENTION_TANGENT", "auto")
#: Attention-weight elements (L x S x batch x heads) from which "auto" takes the blockwise pass.
#: 2**20 = 1M weights (4 MiB per float32 buffer; the math rule holds about three at once, and inside a
#: training step they add to the activations autograd keeps). Measured on CPU (docs/benchmarks.md,
#: "Attention tangents"): the math rule's fused softmax is faster for the attention alone up to a few
#: million weights, but in a whole training step the blockwise pass costs at most a few per cent there
#: and cuts the step's peak memory (conv+attention net, 256 tokens, 8 rows with r != t: 2M weights,
#: 82 -> 56 MiB against flow matching's 50).
AUTO_MIN_WEIGHTS: int = 1 << 20

_MODES = ("auto", "blockwise", "math", "triton")
#: Relative error (max |error| / max |reference|) the Triton self-check accepts, by input dtype.
TRITON_CHECK_TOLERANCE: dict[torch.dtype, float] = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 5e-2}
#: The same for float32 inputs multiplied on TF32 tensor cores (a 10-bit mantissa, as float16's).
TRITON_CHECK_TOLERANCE_TF32 = 1e-2

_triton_found: bool | None = None
_triton_disabled: str | None = None  # why "auto" no longer takes the kernel in this process
_triton_checked: dict[tuple, str | None] = {}  # self-check key -> None (passed) or what went wrong


def _check_mode() -> None:
    if MODE not in _MODES:
        raise ValueError(f"mfkit.core.attention.MODE must be one of {', '.join(_MODES)}, got {MODE!r}")


def use_blockwise(q: torch.Tensor, k: torch.Tensor) -> bool:
    """Whether the PyTorch paths take the blockwise pass (rather than the math rule) for q and k."""
    _check_mode()
    if MODE != "auto":
        return MODE == "blockwise"
    return q.numel() // q.shape[-1] * k.shape[-2] >= AUTO_MIN_WEIGHTS


def triton_available() -> bool:
    """Whether the triton package can be imported (looked up once; triton itself is not imported here)."""
    global _triton_found
    if _triton_found is None:
        _triton_found = importlib.util.find_spec("triton") is not None
    return _triton_found


def float32_on_tf32(q: torch.Tensor) -> bool:
    """Whether float32 attention products run on TF32 tensor cores: float32 inputs and PyTorch's CUDA
    matmul setting allows TF32 (:func:`mfkit.core.tf32.cuda_matmul_uses_tf32`; ``jvp_precision: tf32``
    turns it on for its passes); the Triton kernel follows it as cuBLAS does."""
    return q.dtype == torch.float32 and cuda_matmul_uses_tf32()


def kernel_pays_off(q: torch.Tensor) -> bool:
    """Whether "auto" may take the Triton kernel for q's dtype: always for float16 / bfloat16; for float32
    only on TF32 tensor cores (TF32 allowed, and a GPU of compute capability 8.0 or later). Exact float32
    products run on CUDA cores, where the kernel was measured far behind the PyTorch paths (DiT-B/4
    block, batch 256, H200: 199 ms against 11 ms for the math rule; with TF32 2.2 ms against 9.0 ms;
    docs/benchmarks.md)."""
    return q.dtype != torch.float32 or (float32_on_tf32(q) and _has_tf32_cores(q.device))


def _has_tf32_cores(device: torch.device) -> bool:
    """TF32 tensor cores: CUDA compute capability 8.0 (Ampere) or later; before, TF32 dots run on CUDA cores."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 0)


def _auto_device(q: torch.Tensor) -> bool:
    """Whether "auto" considers the Triton kernel for tensors on q's device: CUDA only."""
    return q.device.type == "cuda"


def select_path(q, k, v, qt=None, kt=None, vt=None, attn_mask=None, is_causal=False, enable_gqa=False,
                out=None) -> str:
    """The path :func:`attention_jvp` takes: "triton", "blockwise" or "math" (see the module doc)."""
    _check_mode()
    if MODE == "triton":
        return "triton"
    if MODE == "auto" and _auto_device(q) and triton_available() and _triton_disabled is None:
        from mfkit.core import attention_triton

        if (attention_triton.unsupported_reason(q, k, v, qt, kt, vt, attn_mask, enable_gqa, out) is None
                and kernel_pays_off(q) and _triton_passes_self_check(q, v, is_causal)):
            return "triton"
    return "blockwise" if use_blockwise(q, k) else "math"


def attention_jvp(q, k, v, qt, kt, vt, attn_mask=None, is_causal=False, scale=None, enable_gqa=False,
                  out=None) -> torch.Tensor:
    """Tangent of scaled-dot-product attention by the path :func:`select_path` picks (see the module doc)."""
    args = (q, k, v, qt, kt, vt, attn_mask, is_causal, scale, enable_gqa)
    path = select_path(q, k, v, qt, kt, vt, attn_mask, is_causal, enable_gqa, out)
    if path == "triton":
        if MODE == "triton":
            return _triton_module().triton_attention_jvp(*args, out=out)[1]
        try:
            return _triton_module().triton_attention_jvp(*args, out=out)[1]
        except Exception as error:  # "auto": never let an unverified kernel stop training
            _disable_triton(f"{type(error).__name__}: {error}")
            path = "blockwise" if use_blockwise(q, k) else "math"
    if path == "blockwise":
        return blockwise_attention_jvp(*args, out=out)[1]
    from mfkit.core.tangent_rules import attention_tangent

    return attention_tangent(*args, out=out)


def _triton_module():
    """mfkit.core.attention_triton (which imports triton), or a clear error when triton is missing."""
    if not triton_available():
        raise RuntimeError("mfkit.core.attention.MODE = 'triton' needs the triton package (pip install triton; "
                           "it runs on CUDA GPUs); use MODE = 'auto', 'blockwise' or 'math' without it")
    from mfkit.core import attention_triton

    return attention_triton


def _disable_triton(reason: str) -> None:
    """Stop "auto" from taking the Triton kernel in this process, with a RuntimeWarning saying why."""
    global _triton_disabled
    _triton_disabled = reason
    warnings.warn(f"mfkit: the Triton attention kernel is disabled for this process ({reason}); the "
                  "blockwise/math attention tangent runs instead", RuntimeWarning, stacklevel=3)


def _triton_passes_self_check(q: torch.Tensor, v: torch.Tensor, is_causal: bool) -> bool:
    """Run :func:`_triton_self_check` once per device, dtype, head dims and causal flag; disable on failure."""
    key = (str(q.device), q.dtype, q.shape[-1], v.shape[-1], bool(is_causal), float32_on_tf32(q))
    if key not in _triton_checked:
        try:
            _triton_checked[key] = _triton_self_check(q.device, q.dtype, q.shape[-1], v.shape[-1], bool(is_causal))
        except Exception as error:
            _triton_checked[key] = f"self-check raised {type(error).__name__}: {error}"
        if _triton_checked[key] is not None:
            _disable_triton(_triton_checked[key])
    return _triton_checked[key] is None


def _triton_self_check(device: torch.device, dtype: torch.dtype, dim: int, dim_v: int, is_causal: bool) -> str | None:
    """None when the kernel's (O, O_t) on a small random problem match the blockwise pass in float64.

    Shapes (1, 2, 70, dim) queries and (1, 2, 150, dim / dim_v) keys and values, tangents on all three:
    several query and key tiles with ragged edges at the default tile sizes. Tolerance:
    :data:`TRITON_CHECK_TOLERANCE` relative to the largest reference entry. Else a phrase saying what differed.
    """
    g = torch.Generator(device=device).manual_seed(0)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, device=device).to(dtype)

    q, qt, k, kt = randn(1, 2, 70, dim), randn(1, 2, 70, dim), randn(1, 2, 150, dim), randn(1, 2, 150, dim)
    v, vt = randn(1, 2, 150, dim_v), randn(1, 2, 150, dim_v)
    inputs = (q, k, v, qt, kt, vt)
    got = _triton_module().triton_attention_jvp(*inputs, is_causal=is_causal)
    expected = blockwise_attention_jvp(*(x.double() for x in inputs), is_causal=is_causal)
    tolerance = TRITON_CHECK_TOLERANCE_TF32 if float32_on_tf32(q) else TRITON_CHECK_TOLERANCE.get(dtype, 1e-4)
    for name, a, b in zip(("output", "tangent"), got, expected):
        error = ((a.double() - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()
        if not error <= tolerance:  # also catches NaN
            return f"self-check: {name} relative error {error:.3g} > {tolerance:g} ({dtype}, head dims {dim}/{dim_v})"
    return None


def blockwise_attention_jvp(q, k, v, qt=None, kt=None, vt=None, attn_mask=None, is_causal=False, scale=None,
                            enable_gqa=False, out=None, block_size=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(O, O_t) of O = softmax(q k^T * scale + mask) v in one pass over blocks of keys.

    Same arguments as :func:`torch.nn.functional.scaled_dot_product_attention` (dropout excepted) plus
    the tangents qt, kt, vt (any may be None). ``out``: the primal O when the caller has it (it is then
    returned as given and not accumulated). ``block_size``: keys per block (default :data:`BLOCK_SIZE`).
    Shapes: (..., L, E) queries, (..., S, E) keys, (..., S, Ev) values; with ``enable_gqa`` the head
    axis is -3 and key/value heads are shared by groups of query heads without being copied.
    Accumulation runs in at least float32.
    """
    block = int(BLOCK_SIZE if block_size is None else block_size)
    if block < 1:
        raise ValueError(f"block_size must be positive, got {block}")
    length, source = q.shape[-2], k.shape[-2]
    scale = scale if scale is not None else 1.0 / math.sqrt(q.shape[-1])
    wide = torch.promote_types(q.dtype, torch.float32)
    grouped = enable_gqa and q.dim() >= 3 and k.shape[-3] != q.shape[-3]
    if grouped:  # query head h uses key/value head h // repeat: (..., Hkv, repeat, L, E) against (..., Hkv, 1, S, E)
        kv_heads = k.shape[-3]
        repeat = q.shape[-3] // kv_heads
        q, qt, out = (x.unflatten(-3, (kv_heads, repeat)) if x is not None else None for x in (q, qt, out))
        k, kt, v, vt = (x.unsqueeze(-3) if x is not None else None for x in (k, kt, v, vt))

    has_score_tangent = qt is not None or kt is not None
    q_scaled = q * scale
    if qt is not None and kt is not None:  # q_t k^T + q k_t^T as one product over the doubled feature axis
        q_tangent = torch.cat([qt * scale, q_scaled], -1)
    elif qt is not None:
        q_tangent = qt * scale
    else:
        q_tangent = q_scaled

    rows = torch.arange(length, device=q.device)[:, None] if is_causal else None
    batch_shape = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2])
    row_shape = (*batch_shape, length, 1)
    out_shape = (*batch_shape, length, v.shape[-1])
    maximum = torch.full(row_shape, float("-inf"), dtype=wide, device=q.device)
    normaliser = torch.zeros(row_shape, dtype=wide, device=q.device)
    row_sum = torch.zeros(row_shape, dtype=wide, device=q.device) if has_score_tangent else None
    acc_out = torch.zeros(out_shape, dtype=wide, device=q.device) if out is None else None
    acc_tangent = torch.zeros(out_shape, dtype=wide, device=q.device) if (has_score_tangent or vt is not None) else None

    first = True
    for start in range(0, source, block):
        stop = min(start + block, source)
        if is_causal and start > length - 1:  # every later key lies above the diagonal of every row
            break
        k_b, v_b = k[..., start:stop, :], v[..., start:stop, :]
        scores = (q_scaled @ k_b.transpose(-2, -1)).to(wide)
        if is_causal and stop - 1 > 0:
            scores.masked_fill_(torch.arange(start, stop, device=q.device)[None, :] > rows, float("-inf"))
        if attn_mask is not None:
            mask_b = _mask_block(attn_mask, start, stop, source, grouped, q)
            if mask_b.dtype == torch.bool:
                scores.masked_fill_(~mask_b, float("-inf"))
            else:
                scores = scores + mask_b.to(wide)
        new_max = torch.maximum(maximum, scores.amax(dim=-1, keepdim=True))
        safe_max = torch.where(torch.isneginf(new_max), 0.0, new_max)  # all masked so far: e = exp(-inf) = 0
        weights = scores.sub_(safe_max).exp_()  # e_j, in place of the scores
        if first:
            normaliser = weights.sum(dim=-1, keepdim=True)
        else:
            rescale = torch.exp(maximum - safe_max)
            normaliser.mul_(rescale).add_(weights.sum(dim=-1, keepdim=True))
            for accumulator in (row_sum, acc_out, acc_tangent):
                if accumulator is not None:
                    accumulator.mul_(rescale)
        maximum = new_max
        weights_v = weights.to(v.dtype)
        if acc_out is not None:
            acc_out.add_(weights_v @ v_b)
        if has_score_tangent:
            k_tangent = (torch.cat([k_b, kt[..., start:stop, :]], -1) if qt is not None and kt is not None
                         else k_b if kt is None else kt[..., start:stop, :])
            weighted = (q_tangent @ k_tangent.transpose(-2, -1)).to(wide).mul_(weights)  # e_j d_j
            row_sum.add_(weighted.sum(dim=-1, keepdim=True))
            acc_tangent.add_(weighted.to(v.dtype) @ v_b)
            del weighted
        if vt is not None:
            acc_tangent.add_(weights_v @ vt[..., start:stop, :])
        del scores, weights, weights_v
        first = False

    inverse = torch.where(normaliser > 0, normaliser, 1.0).reciprocal_()  # l = 0: every key masked, O = O_t = 0
    primal = acc_out.mul_(inverse) if out is None else out.to(wide)
    if acc_tangent is None:
        tangent = torch.zeros(out_shape, dtype=wide, device=q.device)
    else:
        tangent = acc_tangent.mul_(inverse)
        if row_sum is not None:
            tangent.sub_(primal * row_sum.mul_(inverse))
    primal = primal.to(q.dtype) if out is None else out
    tangent = tangent.to(q.dtype)
    if grouped:
        primal, tangent = primal.flatten(-4, -3), tangent.flatten(-4, -3)
    return primal, tangent


def _mask_block(mask: torch.Tensor, start: int, stop: int, source: int, grouped: bool, q: torch.Tensor):
    """The mask's columns for keys start:stop, with its head axis split like the queries' when grouped."""
    block = mask[..., start:stop] if mask.shape[-1] == source else mask  # a last axis of 1 broadcasts
    if grouped and block.dim() >= 3:
        kv_heads, repeat = q.shape[-4], q.shape[-3]
        if block.shape[-3] == kv_heads * repeat and kv_heads * repeat != 1:
            return block.unflatten(-3, (kv_heads, repeat))
        return block.unsqueeze(-3)
    return block
