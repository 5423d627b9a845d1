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

Selection (:func:`attention_jvp`, used by the fast tangent rules): ``MODE = "auto"`` takes the
blockwise pass when the attention weights would hold at least :data:`AUTO_MIN_WEIGHTS` elements
(L x S x batch x heads) and the math rule below that; ``"blockwise"`` and ``"math"`` force one path.
See docs/benchmarks.md ("Attention tangents") for the measurements behind the defaults.
"""
from __future__ import annotations

import math
import os

import torch

#: Keys per block of the blockwise pass; memory per batch element and head is about L x BLOCK_SIZE.
BLOCK_SIZE: int = 64
#: "auto": blockwise when L * S * batch * heads >= AUTO_MIN_WEIGHTS; "blockwise" or "math": always that one.
#: The environment variable MFKIT_ATTENTION_TANGENT sets the initial value (benchmarks' subprocesses).
MODE: str = os.environ.get("MFKIT_ATTENTION_TANGENT", "auto")
#: Attention-weight elements (L x S x batch x heads) from which "auto" takes the blockwise pass.
#: 2**23 = 8.4M weights (32 MiB per float32 buffer; the math rule holds about three). Measured on CPU
#: (docs/benchmarks.md, "Attention tangents"): below it the math rule is as fast or faster (its fused
#: softmax beats the extra passes of the online one while the weights fit in caches); above it the
#: blockwise pass is as fast or faster and its memory stops growing with S.
AUTO_MIN_WEIGHTS: int = 1 << 23

_MODES = ("auto", "blockwise", "math")


def use_blockwise(q: torch.Tensor, k: torch.Tensor) -> bool:
    """Whether :func:`attention_jvp` takes the blockwise pass for queries q and keys k."""
    if MODE not in _MODES:
        raise ValueError(f"mfkit.core.attention.MODE must be one of {', '.join(_MODES)}, got {MODE!r}")
    if MODE != "auto":
        return MODE == "blockwise"
    return q.numel() // q.shape[-1] * k.shape[-2] >= AUTO_MIN_WEIGHTS


def attention_jvp(q, k, v, qt, kt, vt, attn_mask=None, is_causal=False, scale=None, enable_gqa=False,
                  out=None) -> torch.Tensor:
    """Tangent of scaled-dot-product attention by the path :data:`MODE` selects (see the module doc)."""
    if use_blockwise(q, k):
        return blockwise_attention_jvp(q, k, v, qt, kt, vt, attn_mask, is_causal, scale, enable_gqa, out=out)[1]
    from mfkit.core.tangent_rules import attention_tangent

    return attention_tangent(q, k, v, qt, kt, vt, attn_mask, is_causal, scale, enable_gqa, out=out)


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
