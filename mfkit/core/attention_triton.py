"""Fused Triton kernel: scaled-dot-product attention's output O and its tangent O_t in one pass.

Same mathematics as the blockwise PyTorch pass of :mod:`mfkit.core.attention` (see its module doc),
fused into one kernel. One program handles a block of ``BLOCK_M`` query rows of one batch element
and head, and walks the keys in blocks of ``BLOCK_N``. Per query row it keeps, in float32,

    m  running maximum of the scores s_j = scale q k_j (+ mask), in log2 units (exp2 is used),
    l  = sum_j e_j,                  e_j = exp(s_j - m),
    c  = sum_j e_j d_j,              d_j = scale (q_t k_j + q k_t,j),   the score tangents,
    a  = sum_j e_j v_j               (only when the caller does not pass the primal O),
    b  = sum_j e_j (d_j v_j + v_t,j),

rescaling all of them by exp(m_old - m_new) when a block raises the maximum. At the end
O = a / l and O_t = b / l - O c / l. Rows whose keys are all masked (l = 0) get O = O_t = 0, as
PyTorch's math kernel gives. The products q k^T, q_t k^T, q k_t^T, e v, (e d) v and e v_t are
``tl.dot`` on tiles in the input dtype with float32 accumulation; float32 inputs follow PyTorch's CUDA
matmul setting: exact ("ieee") by default, on TF32 tensor cores when it allows TF32
(:func:`mfkit.core.attention.float32_on_tf32`; mfkit's ``jvp_precision: tf32`` turns it on);
e and e d are rounded to the value dtype before their products, as flash attention does.

Supported (anything else: :func:`unsupported_reason` says why, and :mod:`mfkit.core.attention`
falls back to the blockwise or math path, or raises when the kernel was forced):
shapes (B, H, L, E) / (B, Hkv, S, E) / (B, Hkv, S, Ev) or the same without the batch axis (3-D);
any L, S >= 1 (tiles are masked at the edges); head dims E, Ev <= 256, padded to a power of two
(at least 16) with masked loads; float16, bfloat16 and float32 (outputs in the input dtype);
``scale``; ``is_causal`` (top-left aligned, as PyTorch: row i sees keys j <= i; key blocks above
the diagonal are not visited); ``attn_mask`` boolean (True = take part) or additive (any float dtype),
broadcastable to (B, H, L, S) and read through strides without being expanded; ``enable_gqa``
(query head h reads key/value head h // (H / Hkv), without copies); any of the tangents None;
arbitrary strides (no copies of q, k, v or their tangents). Not supported: float64, batch axes
that broadcast between q and k, head dims above 256, masks with a tangent (the fast rule hands those
to PyTorch anyway).

triton is imported when this module is imported; :mod:`mfkit.core.attention` imports this module only
when the kernel is about to be used (CUDA tensors, or a forced mode), so mfkit works without triton.

Testing without a GPU: with ``TRITON_INTERPRET=1`` set before triton is imported, the kernel runs in
Triton's interpreter on CPU tensors (tests/core/test_attention_triton.py). Triton 3.8's interpreter
multiplies bfloat16 tiles as their raw bits, so under the interpreter the operands of every dot are
first converted to float32 (``UPCAST_DOTS``); that conversion is exact, and the tensor cores also
form bf16/fp16 products exactly with float32 accumulation, so the interpreted kernel computes what
the compiled one does up to the order of the float32 additions.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from mfkit.core.attention import float32_on_tf32

_LOG2E = 1.4426950408889634
#: dtypes the kernel takes (all of q, k, v, their tangents and ``out`` must share one).
SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
#: Largest head dimension (E or Ev) the kernel takes; the tiles live in registers.
MAX_HEAD_DIM = 256
_MASK_NONE, _MASK_BOOL, _MASK_ADDITIVE = 0, 1, 2


@triton.jit
def _dot(a, b, UPCAST: tl.constexpr, TF32: tl.constexpr):
    """a @ b with float32 accumulation; operands converted to float32 first when UPCAST (interpreter);
    float32 operands on TF32 tensor cores when TF32, else exactly ("ieee")."""
    if UPCAST:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    if TF32:
        return tl.dot(a, b, input_precision="tf32")
    return tl.dot(a, b, input_precision="ieee")


@triton.jit
def _attention_jvp_kernel(
        Q, K, V, QT, KT, VT, MASK, OUT_IN, O, OT,
        s_qb, s_qh, s_ql, s_qd, s_qtb, s_qth, s_qtl, s_qtd,
        s_kb, s_kh, s_kn, s_kd, s_ktb, s_kth, s_ktn, s_ktd,
        s_vb, s_vh, s_vn, s_vd, s_vtb, s_vth, s_vtn, s_vtd,
        s_mb, s_mh, s_ml, s_mn, s_ib, s_ih, s_il, s_id, s_ob, s_oh, s_ol, s_od,
        heads, group, length, source, dim, dim_v, scale, qk_scale,
        HAS_QT: tl.constexpr, HAS_KT: tl.constexpr, HAS_VT: tl.constexpr, HAS_OUT: tl.constexpr,
        MASK_KIND: tl.constexpr, IS_CAUSAL: tl.constexpr, UPCAST_DOTS: tl.constexpr, TF32_DOTS: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr):
    """Program (query block, batch * head): O and O_t for BLOCK_M rows, one pass over the keys."""
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // heads).to(tl.int64)
    h = (pid_bh % heads).to(tl.int64)
    hk = h // group  # the key/value head of query head h (group = 1 without GQA)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    feats = tl.arange(0, BLOCK_D)
    feats_v = tl.arange(0, BLOCK_DV)
    keys0 = tl.arange(0, BLOCK_N)
    row_ok = rows < length
    feat_ok = feats < dim
    feat_v_ok = feats_v < dim_v
    q_mask = row_ok[:, None] & feat_ok[None, :]

    q = tl.load(Q + b * s_qb + h * s_qh + rows[:, None] * s_ql + feats[None, :] * s_qd, mask=q_mask, other=0.0)
    if HAS_QT:
        qt = tl.load(QT + b * s_qtb + h * s_qth + rows[:, None] * s_qtl + feats[None, :] * s_qtd,
                     mask=q_mask, other=0.0)

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    c_i = tl.zeros([BLOCK_M], tl.float32)
    acc_o = tl.zeros([BLOCK_M, BLOCK_DV], tl.float32)
    acc_t = tl.zeros([BLOCK_M, BLOCK_DV], tl.float32)

    hi = source
    if IS_CAUSAL:  # keys beyond the block's last row are masked for every row of the block
        hi = tl.minimum(source, (pid_m + 1) * BLOCK_M)
    for start in range(0, hi, BLOCK_N):
        keys = start + keys0
        key_ok = keys < source
        kt_mask = feat_ok[:, None] & key_ok[None, :]
        v_mask = key_ok[:, None] & feat_v_ok[None, :]
        k_tr = tl.load(K + b * s_kb + hk * s_kh + keys[None, :] * s_kn + feats[:, None] * s_kd,
                       mask=kt_mask, other=0.0)  # (BLOCK_D, BLOCK_N): k transposed
        v = tl.load(V + b * s_vb + hk * s_vh + keys[:, None] * s_vn + feats_v[None, :] * s_vd, mask=v_mask, other=0.0)

        s = _dot(q, k_tr, UPCAST_DOTS, TF32_DOTS) * qk_scale  # scale * log2(e) * q k^T
        valid = (rows[:, None] >= 0) & key_ok[None, :]  # (BLOCK_M, BLOCK_N)
        if IS_CAUSAL:
            valid = valid & (keys[None, :] <= rows[:, None])
        if MASK_KIND == 1:
            allowed = tl.load(MASK + b * s_mb + h * s_mh + rows[:, None] * s_ml + keys[None, :] * s_mn,
                              mask=row_ok[:, None] & key_ok[None, :], other=0)
            valid = valid & (allowed != 0)
        if MASK_KIND == 2:
            added = tl.load(MASK + b * s_mb + h * s_mh + rows[:, None] * s_ml + keys[None, :] * s_mn,
                            mask=row_ok[:, None] & key_ok[None, :], other=0.0)
            s = s + added.to(tl.float32) * 1.4426950408889634  # log2(e)
        s = tl.where(valid, s, float("-inf"))

        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # nothing visible yet: e = exp2(-inf) = 0
        alpha = tl.math.exp2(m_i - m_safe)
        e = tl.math.exp2(s - m_safe[:, None])
        l_i = l_i * alpha + tl.sum(e, 1)
        acc_t = acc_t * alpha[:, None]
        if HAS_QT or HAS_KT:
            d = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
            if HAS_QT:
                d += _dot(qt, k_tr, UPCAST_DOTS, TF32_DOTS)
            if HAS_KT:
                kt_tr = tl.load(KT + b * s_ktb + hk * s_kth + keys[None, :] * s_ktn + feats[:, None] * s_ktd,
                                mask=kt_mask, other=0.0)
                d += _dot(q, kt_tr, UPCAST_DOTS, TF32_DOTS)
            ed = e * (d * scale)  # e_j d_j
            c_i = c_i * alpha + tl.sum(ed, 1)
            acc_t += _dot(ed.to(v.dtype), v, UPCAST_DOTS, TF32_DOTS)
        if HAS_VT:
            vt = tl.load(VT + b * s_vtb + hk * s_vth + keys[:, None] * s_vtn + feats_v[None, :] * s_vtd,
                         mask=v_mask, other=0.0)
            acc_t += _dot(e.to(vt.dtype), vt, UPCAST_DOTS, TF32_DOTS)
        if not HAS_OUT:
            acc_o = acc_o * alpha[:, None] + _dot(e.to(v.dtype), v, UPCAST_DOTS, TF32_DOTS)
        m_i = m_new

    seen = l_i > 0  # l = 0: every key of the row masked
    inverse = 1.0 / tl.where(seen, l_i, 1.0)
    o_mask = row_ok[:, None] & feat_v_ok[None, :]
    if HAS_OUT:
        o = tl.load(OUT_IN + b * s_ib + h * s_ih + rows[:, None] * s_il + feats_v[None, :] * s_id,
                    mask=o_mask, other=0.0).to(tl.float32)
    else:
        o = acc_o * inverse[:, None]
        tl.store(O + b * s_ob + h * s_oh + rows[:, None] * s_ol + feats_v[None, :] * s_od,
                 o.to(O.dtype.element_ty), mask=o_mask)
    ot = acc_t * inverse[:, None]
    if HAS_QT or HAS_KT:
        ot = ot - o * (c_i * inverse)[:, None]
    ot = tl.where(seen[:, None], ot, 0.0)
    tl.store(OT + b * s_ob + h * s_oh + rows[:, None] * s_ol + feats_v[None, :] * s_od,
             ot.to(OT.dtype.element_ty), mask=o_mask)


def interpreting() -> bool:
    """Whether the kernel runs in Triton's interpreter (TRITON_INTERPRET=1 when triton was imported)."""
    return type(_attention_jvp_kernel).__name__ == "InterpretedFunction"


def unsupported_reason(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, qt=None, kt=None, vt=None,
                       attn_mask=None, enable_gqa: bool = False, out=None) -> str | None:
    """None when :func:`triton_attention_jvp` takes these inputs, else why not (one phrase)."""
    tensors = [x for x in (q, k, v, qt, kt, vt, out) if x is not None]
    devices = {x.device for x in tensors} | ({attn_mask.device} if attn_mask is not None else set())
    if len(devices) != 1:
        return "inputs on several devices"
    if q.device.type != "cuda" and not (q.device.type == "cpu" and interpreting()):
        return f"{q.device.type} tensors (CUDA needed, or CPU with TRITON_INTERPRET=1 set before importing triton)"
    if q.dtype not in SUPPORTED_DTYPES:
        return f"dtype {q.dtype} (float16, bfloat16 or float32 only)"
    if any(x.dtype != q.dtype for x in tensors):
        return "mixed dtypes among q, k, v, tangents and out"
    if q.dim() not in (3, 4) or k.dim() != q.dim() or v.dim() != q.dim():
        return "inputs not all 3-D or all 4-D"
    for primal, tangent in ((q, qt), (k, kt), (v, vt)):
        if tangent is not None and tangent.shape != primal.shape:
            return "a tangent's shape differs from its primal's"
    if q.dim() == 4 and not (q.shape[0] == k.shape[0] == v.shape[0]):
        return "batch axes that differ (broadcast) between q, k and v"
    heads, kv_heads = q.shape[-3], k.shape[-3]
    if v.shape[-3] != kv_heads or v.shape[-2] != k.shape[-2] or k.shape[-1] != q.shape[-1]:
        return "inconsistent q, k, v shapes"
    if kv_heads != heads and not (enable_gqa and kv_heads > 0 and heads % kv_heads == 0):
        return "query and key/value head counts differ without enable_gqa"
    if min(q.shape[-2], k.shape[-2], q.shape[-1], v.shape[-1]) < 1:
        return "an empty axis"
    if max(q.shape[-1], v.shape[-1]) > MAX_HEAD_DIM:
        return f"head dimension above {MAX_HEAD_DIM}"
    if out is not None and out.shape != (*q.shape[:-1], v.shape[-1]):
        return "out's shape is not (..., L, Ev)"
    if attn_mask is not None:
        if attn_mask.dtype != torch.bool and not attn_mask.is_floating_point():
            return f"mask dtype {attn_mask.dtype} (bool or floating only)"
        try:
            torch.broadcast_shapes(attn_mask.shape, (*q.shape[:-1], k.shape[-2]))
        except RuntimeError:
            return "a mask that does not broadcast to (..., L, S)"
        if attn_mask.dim() > q.dim():
            return "a mask with more axes than q"
    return None


def _four_d(x: torch.Tensor | None) -> torch.Tensor | None:
    return x.unsqueeze(0) if x is not None and x.dim() == 3 else x


def _block_sizes(dim: int, dim_v: int, block_m: int | None, block_n: int | None) -> tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_N, BLOCK_D, BLOCK_DV): head dims padded to powers of two >= 16 (tl.dot's minimum)."""
    block_d = max(16, triton.next_power_of_2(dim))
    block_dv = max(16, triton.next_power_of_2(dim_v))
    widest = max(block_d, block_dv)
    default_m, default_n = (64, 64) if widest <= 64 else (64, 32) if widest <= 128 else (32, 32)
    block_m, block_n = int(block_m or default_m), int(block_n or default_n)
    for name, value in (("block_m", block_m), ("block_n", block_n)):
        if value < 16 or value & (value - 1):
            raise ValueError(f"{name} must be a power of two >= 16, got {value}")
    return block_m, block_n, block_d, block_dv


def triton_attention_jvp(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, qt: torch.Tensor | None = None,
                         kt: torch.Tensor | None = None, vt: torch.Tensor | None = None,
                         attn_mask: torch.Tensor | None = None, is_causal: bool = False, scale: float | None = None,
                         enable_gqa: bool = False, out: torch.Tensor | None = None,
                         block_m: int | None = None, block_n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(O, O_t) of O = softmax(q k^T * scale + mask) v, both from one launch of the fused kernel.

    Arguments as :func:`mfkit.core.attention.blockwise_attention_jvp`: shapes (B, H, L, E) queries,
    (B, Hkv, S, E) keys, (B, Hkv, S, Ev) values (or without B), tangents of the same shapes or None.
    ``out``: the primal O when the caller has it; it is then read, not recomputed, and returned as given.
    ``block_m`` / ``block_n``: query rows / keys per tile (powers of two >= 16; defaults by head dim).
    Raises ValueError for inputs outside the supported set (see the module doc); runs without autograd.
    """
    reason = unsupported_reason(q, k, v, qt, kt, vt, attn_mask, enable_gqa, out)
    if reason is not None:
        raise ValueError(f"the Triton attention kernel does not take these inputs: {reason}")
    three_d = q.dim() == 3
    q4, k4, v4, qt4, kt4, vt4, out4 = (_four_d(x) for x in (q, k, v, qt, kt, vt, out))
    batch, heads, length, dim = q4.shape
    kv_heads, source, dim_v = k4.shape[1], k4.shape[2], v4.shape[3]
    block_m, block_n, block_d, block_dv = _block_sizes(dim, dim_v, block_m, block_n)
    scale = float(scale) if scale is not None else 1.0 / math.sqrt(dim)

    mask_kind, mask4 = _MASK_NONE, q4
    if attn_mask is not None:
        mask_kind = _MASK_BOOL if attn_mask.dtype == torch.bool else _MASK_ADDITIVE
        mask4 = attn_mask.view(torch.uint8) if mask_kind == _MASK_BOOL else attn_mask
        mask4 = mask4.broadcast_to(batch, heads, length, source)  # stride 0 where it broadcasts: no copy
    mask_strides = mask4.stride() if attn_mask is not None else (0, 0, 0, 0)

    o = torch.empty(batch, heads, length, dim_v, dtype=q.dtype, device=q.device) if out4 is None else None
    ot = torch.empty(batch, heads, length, dim_v, dtype=q.dtype, device=q.device)
    grid = (triton.cdiv(length, block_m), batch * heads)
    with torch.no_grad():
        _attention_jvp_kernel[grid](
            q4, k4, v4, qt4 if qt4 is not None else q4, kt4 if kt4 is not None else k4,
            vt4 if vt4 is not None else v4, mask4, out4 if out4 is not None else ot, o if o is not None else ot, ot,
            *q4.stride(), *(qt4 if qt4 is not None else q4).stride(),
            *k4.stride(), *(kt4 if kt4 is not None else k4).stride(),
            *v4.stride(), *(vt4 if vt4 is not None else v4).stride(),
            *mask_strides, *(out4 if out4 is not None else ot).stride(), *ot.stride(),
            heads, heads // kv_heads, length, source, dim, dim_v, scale, scale * _LOG2E,
            HAS_QT=qt is not None, HAS_KT=kt is not None, HAS_VT=vt is not None, HAS_OUT=out is not None,
            MASK_KIND=mask_kind, IS_CAUSAL=bool(is_causal), UPCAST_DOTS=interpreting(), TF32_DOTS=float32_on_tf32(q),
            BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d, BLOCK_DV=block_dv,
            num_warps=4 if max(block_m, block_n) <= 64 else 8, num_stages=2)
    if out is not None:
        return out, (ot.squeeze(0) if three_d else ot)
    return (o.squeeze(0), ot.squeeze(0)) if three_d else (o, ot)
