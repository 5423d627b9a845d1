"""Fast forward-mode (tangent) rules for the layers backbones are made of.

PyTorch's built-in forward-mode AD records the tangent computation in the autograd graph whenever the
primal needs gradients: through ``nn.Linear`` that costs about 3x a plain linear on CPU. MeanFlow never
differentiates through the tangent (its target is stop-gradient), so :class:`FastTangents` intercepts the
heavy functional ops while dual tensors are live and splits each call in two:

* the primal output is computed by the ordinary op, with normal autograd (and any fused kernel);
* the tangent is computed under ``torch.no_grad`` from the op's analytic JVP.

Covered ops: linear, conv1d/2d/3d, conv_transpose1d/2d/3d, interpolate, layer_norm, group_norm,
rms_norm, silu, gelu, relu, elementwise products and sums (``a * b``, ``a + b``, ``a - b``),
scaled_dot_product_attention (primal with any kernel; tangent blockwise over keys with an online softmax
for large attention, :mod:`mfkit.core.attention`, or by the math formula below) and
``nn.MultiheadAttention``'s functional forward in its common configuration. Because the interception
works on ``torch.nn.functional`` calls, any backbone built from plain ``torch.nn`` layers benefits,
third-party ones included. Any other op, or an op whose parameters carry tangents themselves, falls
through to PyTorch's own rule, so results never change, only speed.

Tangents produced here carry no gradient: use this only for stop-gradient JVPs.
"""
from __future__ import annotations

import contextlib
import math
from typing import Any, Callable

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from mfkit.core.attention import attention_jvp

Rule = Callable[..., Any]
_RULES: dict[Callable, Rule] = {}


#: Ops whose rule applies when either of the first two arguments is dual (a * b or a + b with b dual); with
#: both dual and gradients off, PyTorch's own forward-mode rule is cheaper and FastTangents uses it.
_EITHER_OPERAND: set[Callable] = set()


def _rule(*funcs: Callable, either_operand: bool = False) -> Callable[[Rule], Rule]:
    def register(fn: Rule) -> Rule:
        for f in funcs:
            _RULES[f] = fn
            if either_operand:
                _EITHER_OPERAND.add(f)
        return fn

    return register


def _split(x: Any) -> tuple[Any, torch.Tensor | None]:
    """(primal, tangent) of a possibly-dual tensor; non-tensors pass through with no tangent.

    What ``fwAD.unpack_dual`` returns, called one level down: the public function's wrappers cost about
    as much as the rest of a small op's rule, and it runs on every argument of every op in the pass."""
    if isinstance(x, torch.Tensor):
        level = fwAD._current_level
        if level >= 0:
            return torch._unpack_dual(x, level=level)  # a (primal, tangent) structseq
    return x, None


def _has_tangent(x: Any) -> bool:
    if isinstance(x, torch.Tensor):
        level = fwAD._current_level
        return level >= 0 and torch._unpack_dual(x, level=level)[1] is not None
    return False


class _Fallback(Exception):
    """Raised by a rule to hand the call back to PyTorch's own forward-mode rule."""


def _bind(args: tuple, kwargs: dict, names: tuple[str, ...], defaults: dict) -> dict:
    bound = dict(defaults)
    bound.update(zip(names, args))
    bound.update(kwargs)
    return bound


def _wide(x: torch.Tensor) -> torch.Tensor:
    """x in at least float32 (half and bfloat16 are widened, float64 kept) for reductions."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _as_autocast_norm_input(x: torch.Tensor) -> torch.Tensor:
    """Autocast runs normalisations in float32; calling the native ops directly must do the same."""
    return x.float() if torch.is_autocast_enabled(x.device.type) and x.dtype != torch.float64 else x


def _dual(primal: torch.Tensor, tangent: torch.Tensor) -> torch.Tensor:
    """``fwAD.make_dual(primal, tangent)`` at the current level, called one level down: the public
    function's checks and export hooks cost about 20 microseconds a call, on every op of the pass."""
    return torch._VF._make_dual(primal, tangent.to(primal.dtype), level=fwAD._current_level)


_NO_CONTEXT = contextlib.nullcontext()


def _tangent_grad_off():
    """``torch.no_grad()`` for a tangent computation, or nothing where gradients are already off (the
    no-grad JVP passes): entering and leaving no_grad costs a few microseconds on every op."""
    return torch.no_grad() if torch.is_grad_enabled() else _NO_CONTEXT


# ---------------------------------------------------------------- linear maps (tangent = op(x_t))
@_rule(F.linear)
def _linear(func, args, kwargs):
    a = _bind(args, kwargs, ("input", "weight", "bias"), {"bias": None})
    if _has_tangent(a["weight"]) or _has_tangent(a["bias"]):
        raise _Fallback
    xp, xt = _split(a["input"])
    yp = F.linear(xp, a["weight"], a["bias"])
    with _tangent_grad_off():
        yt = F.linear(xt, a["weight"])
    return _dual(yp, yt)


_CONV_NAMES = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
_CONVT_NAMES = ("input", "weight", "bias", "stride", "padding", "output_padding", "groups", "dilation")


@_rule(F.conv1d, F.conv2d, F.conv3d)
def _conv(func, args, kwargs):
    a = _bind(args, kwargs, _CONV_NAMES, {"bias": None})
    return _linear_in_input(func, a)


@_rule(F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)
def _conv_transpose(func, args, kwargs):
    a = _bind(args, kwargs, _CONVT_NAMES, {"bias": None})
    return _linear_in_input(func, a)


_INTERPOLATE_NAMES = ("input", "size", "scale_factor", "mode", "align_corners", "recompute_scale_factor",
                      "antialias")


@_rule(F.interpolate)
def _interpolate(func, args, kwargs):
    """Resampling is linear in its input for every mode: tangent = the same resampling of the tangent."""
    a = _bind(args, kwargs, _INTERPOLATE_NAMES, {})
    xp, xt = _split(a.pop("input"))
    yp = func(xp, **a)
    with _tangent_grad_off():
        yt = func(xt.to(xp.dtype), **a)
    return _dual(yp, yt)


def _linear_in_input(func, a: dict):
    """Ops affine in their input: tangent = op(x_t) without the bias."""
    if _has_tangent(a["weight"]) or _has_tangent(a["bias"]):
        raise _Fallback
    xp, xt = _split(a.pop("input"))
    yp = func(xp, **a)
    a["bias"] = None
    with _tangent_grad_off():
        yt = func(xt, **a)
    return _dual(yp, yt)


# ---------------------------------------------------------------- normalisation
# The Jacobian of the normalisation xhat = (x - mean) / std over a group is symmetric,
# inv_std (I - 1 1^T / n - xhat xhat^T / n), so its JVP equals its VJP: PyTorch's fused backward
# kernels (called without the affine weight) compute the tangent in one pass; the weight scales it after.

def _norm_inputs(args, kwargs, names, defaults):
    """Bind a normalisation's arguments; (arguments, primal in autocast's dtype, tangent)."""
    a = _bind(args, kwargs, names, defaults)
    if _has_tangent(a["weight"]) or _has_tangent(a["bias"]):
        raise _Fallback
    xp, xt = _split(a["input"])
    return a, _as_autocast_norm_input(xp), xt


@_rule(F.layer_norm)
def _layer_norm(func, args, kwargs):
    a, xp, xt = _norm_inputs(args, kwargs, ("input", "normalized_shape", "weight", "bias", "eps"),
                             {"weight": None, "bias": None, "eps": 1e-5})
    shape = list(a["normalized_shape"])
    yp, mean, inv_std = torch.native_layer_norm(xp, shape, a["weight"], a["bias"], a["eps"])
    with _tangent_grad_off():
        yt = torch.ops.aten.native_layer_norm_backward(
            xt.to(xp.dtype), xp, shape, mean, inv_std, None, None, [True, False, False])[0]
        if a["weight"] is not None:
            yt = yt * a["weight"]
    return _dual(yp, yt)


@_rule(F.group_norm)
def _group_norm(func, args, kwargs):
    a, xp, xt = _norm_inputs(args, kwargs, ("input", "num_groups", "weight", "bias", "eps"),
                             {"weight": None, "bias": None, "eps": 1e-5})
    n, c = xp.shape[:2]
    spatial, groups = xp[0, 0].numel(), a["num_groups"]
    yp, mean, inv_std = torch.native_group_norm(xp, a["weight"], a["bias"], n, c, spatial, groups, a["eps"])
    with _tangent_grad_off():
        yt = torch.ops.aten.native_group_norm_backward(
            xt.to(xp.dtype).contiguous(), xp.contiguous(), mean, inv_std, None, n, c, spatial, groups,
            [True, False, False])[0]
        if a["weight"] is not None:
            yt = yt * a["weight"].reshape(1, c, *([1] * (xp.ndim - 2)))
    return _dual(yp, yt)


@_rule(F.rms_norm)
def _rms_norm(func, args, kwargs):
    a = _bind(args, kwargs, ("input", "normalized_shape", "weight", "eps"), {"weight": None, "eps": None})
    if _has_tangent(a["weight"]):
        raise _Fallback
    xp, xt = _split(a["input"])
    yp = F.rms_norm(xp, a["normalized_shape"], a["weight"], a["eps"])
    with _tangent_grad_off():
        dims = tuple(range(-len(a["normalized_shape"]), 0))
        x32, t32 = _wide(xp), _wide(xt)
        # PyTorch computes half-precision RMSNorm in float32 and takes eps=None from that dtype.
        eps = a["eps"] if a["eps"] is not None else torch.finfo(x32.dtype).eps
        inv_rms = torch.rsqrt(x32.pow(2).mean(dim=dims, keepdim=True) + eps)
        yt = inv_rms * (t32 - x32 * inv_rms.pow(2) * (x32 * t32).mean(dim=dims, keepdim=True))
        if a["weight"] is not None:
            yt = yt * a["weight"]
    return _dual(yp, yt)


# ---------------------------------------------------------------- activations
# Elementwise: the tangent x_t * f'(x) is exactly what the fused backward kernel computes from x_t.
# In-place calls (``inplace=True``) fall back to PyTorch's rule, which keeps the aliasing a network
# may rely on (the rule here would return a new tensor and leave the input unchanged).

def _activation(primal_fn, backward):
    def rule(func, args, kwargs):
        if kwargs.get("inplace") or (len(args) > 1 and args[1] is True):
            raise _Fallback
        xp, xt = _split(args[0])
        yp = primal_fn(xp, *args[1:], **kwargs)
        with _tangent_grad_off():
            yt = backward(xt.to(xp.dtype), xp, *args[1:], **kwargs)
        return _dual(yp, yt)

    return rule


def _silu_tangent(xt, x, inplace=False):
    return torch.ops.aten.silu_backward(xt, x)


def _gelu_tangent(xt, x, approximate="none"):
    return torch.ops.aten.gelu_backward(xt, x, approximate=approximate)


def _relu_tangent(xt, x, inplace=False):
    return torch.ops.aten.threshold_backward(xt, x, 0)


_RULES[F.silu] = _activation(lambda x, inplace=False: F.silu(x), _silu_tangent)
_RULES[F.gelu] = _activation(F.gelu, _gelu_tangent)
_RULES[F.relu] = _activation(lambda x, inplace=False: F.relu(x), _relu_tangent)
_RULES[torch.relu] = _RULES[F.relu]

#: Ops whose PyTorch forward-mode rule, without gradients, is the same backward kernel applied to the
#: tangent as the rule above, for less host time (the rule's Python costs 15-20 microseconds a call);
#: with gradients the rules above keep the tangent out of the autograd graph.
_NATIVE_WITHOUT_GRAD: set[Callable] = {F.silu, F.gelu, F.relu, torch.relu}


# ---------------------------------------------------------------- products
@_rule(torch.mul, torch.Tensor.mul, either_operand=True)
def _mul(func, args, kwargs):
    """(a b)_t = a_t b + a b_t, for ``a * b`` with either factor dual (broadcasting as the product does).

    PyTorch's own forward-mode rule for a product runs through Python decompositions (0.2 to 0.3 ms a
    call on a CPU, against a few microseconds for the op), and every time embedding multiplies the dual
    times by its frequencies."""
    if kwargs or len(args) != 2:
        raise _Fallback
    (ap, at), (bp, bt) = _split(args[0]), _split(args[1])
    yp = func(ap, bp)
    with _tangent_grad_off():
        yt = at * bp if at is not None else None
        if bt is not None:
            yt = ap * bt if yt is None else yt + ap * bt
    return _dual(yp, yt)


@_rule(torch.add, torch.Tensor.add, torch.sub, torch.Tensor.sub, either_operand=True)
def _add(func, args, kwargs):
    """(a + alpha b)_t = a_t + alpha b_t (minus for sub), broadcast to the sum's shape. PyTorch's own rule
    for a sum with one plain operand runs through Python decompositions (about 0.2 ms a call on a CPU):
    residual connections and biases added to dual activations."""
    if len(args) != 2 or set(kwargs) - {"alpha"}:
        raise _Fallback
    (ap, at), (bp, bt) = _split(args[0]), _split(args[1])
    yp = func(ap, bp, **kwargs)
    with _tangent_grad_off():
        alpha = kwargs.get("alpha", 1) * (-1 if func in (torch.sub, torch.Tensor.sub) else 1)
        scaled = bt if bt is None or alpha == 1 else bt * alpha
        yt = scaled if at is None else at if bt is None else at + scaled
        if yt is at or yt is bt or yt.shape != yp.shape:
            # a fresh tensor in the sum's layout: an input's own tangent, given as the output's, would be
            # changed by any later in-place op on either (PyTorch's rule never shares it either)
            yt = torch.empty_like(yp).copy_(yt)
    return _dual(yp, yt)


# ---------------------------------------------------------------- attention
def attention_tangent(q, k, v, qt, kt, vt, attn_mask=None, is_causal=False, scale=None, enable_gqa=False,
                      out=None):
    """JVP of O = softmax(q k^T * scale + mask) v by the math formula; any of qt, kt, vt may be None.

    The reference for :func:`mfkit.core.attention.blockwise_attention_jvp`, which computes the same
    without materialising the (L, S) weights; the fast rule picks between them by size.

    With P the attention weights and S_t = scale (q_t k^T + q k_t^T):
    O_t = (P * S_t) v - rowsum(P * S_t) O + P v_t, which needs one pass over the (L, S) weights for
    the product and one for its row sums. ``out`` is the primal O when the caller has it.
    Shapes: (..., L, E) queries, (..., S, E) keys, (..., S, Ev) values.
    """
    if enable_gqa and k.shape[-3] != q.shape[-3]:
        repeat = q.shape[-3] // k.shape[-3]
        k, v = k.repeat_interleave(repeat, -3), v.repeat_interleave(repeat, -3)
        kt = kt.repeat_interleave(repeat, -3) if kt is not None else None
        vt = vt.repeat_interleave(repeat, -3) if vt is not None else None
    scale = scale if scale is not None else 1.0 / math.sqrt(q.shape[-1])
    q_scaled = q * scale
    scores = q_scaled @ k.transpose(-2, -1)
    if is_causal:
        causal = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).tril()
        scores = scores.masked_fill_(~causal, float("-inf"))
    if attn_mask is not None:
        scores = scores.masked_fill_(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else scores.add_(attn_mask)
    probs = torch.softmax(_wide(scores), dim=-1)
    if attn_mask is not None:  # a fully masked row gets zero weights (PyTorch's choice), not NaN
        probs = probs.masked_fill_(torch.isneginf(scores).all(dim=-1, keepdim=True), 0.0)
    probs = probs.to(q.dtype)
    del scores
    out_t = probs @ vt if vt is not None else None
    if qt is None and kt is None:
        return out_t if out_t is not None else torch.zeros_like(probs @ v)
    if qt is not None and kt is not None:  # q_t k^T + q k_t^T as one product over the doubled feature axis
        scores_t = torch.cat([qt * scale, q_scaled], -1) @ torch.cat([k, kt], -1).transpose(-2, -1)
    elif qt is not None:
        scores_t = (qt * scale) @ k.transpose(-2, -1)
    else:
        scores_t = q_scaled @ kt.transpose(-2, -1)
    weighted = scores_t.mul_(probs)  # P * S_t, in place
    row = weighted.sum(dim=-1, keepdim=True)
    out = out if out is not None else probs @ v
    result = weighted @ v - row * out
    return result + out_t if out_t is not None else result


_SDPA_NAMES = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")


@_rule(F.scaled_dot_product_attention)
def _sdpa(func, args, kwargs):
    a = _bind(args, kwargs, _SDPA_NAMES,
              {"attn_mask": None, "dropout_p": 0.0, "is_causal": False, "scale": None, "enable_gqa": False})
    if a["dropout_p"] > 0 or _has_tangent(a["attn_mask"]):
        raise _Fallback
    (qp, qt), (kp, kt), (vp, vt) = _split(a["query"]), _split(a["key"]), _split(a["value"])
    yp = F.scaled_dot_product_attention(qp, kp, vp, **{n: a[n] for n in _SDPA_NAMES[3:]})
    with _tangent_grad_off():  # blockwise (online softmax) or the math rule, by size: mfkit.core.attention.MODE
        yt = attention_jvp(qp, kp, vp, qt, kt, vt, a["attn_mask"], a["is_causal"], a["scale"],
                           a["enable_gqa"], out=yp.detach())
    return _dual(yp, yt)


_MHA_NAMES = (
    "query", "key", "value", "embed_dim_to_check", "num_heads", "in_proj_weight", "in_proj_bias",
    "bias_k", "bias_v", "add_zero_attn", "dropout_p", "out_proj_weight", "out_proj_bias", "training",
    "key_padding_mask", "need_weights", "attn_mask", "use_separate_proj_weight", "q_proj_weight",
    "k_proj_weight", "v_proj_weight", "static_k", "static_v", "average_attn_weights", "is_causal",
)


@_rule(F.multi_head_attention_forward)
def _multi_head_attention(func, args, kwargs):
    """nn.MultiheadAttention's functional forward, rebuilt from linear + SDPA so both use fast rules.

    Handles the common configuration (no bias_k/bias_v, no zero attention, no dropout while training,
    need_weights=False, no static k/v); anything else falls back to PyTorch's rule.
    """
    a = _bind(args, kwargs, _MHA_NAMES, {
        "training": True, "key_padding_mask": None, "need_weights": True, "attn_mask": None,
        "use_separate_proj_weight": False, "q_proj_weight": None, "k_proj_weight": None,
        "v_proj_weight": None, "static_k": None, "static_v": None, "average_attn_weights": True,
        "is_causal": False,
    })
    unsupported = (
        a["bias_k"] is not None or a["bias_v"] is not None or a["add_zero_attn"] or a["need_weights"]
        or (a["training"] and a["dropout_p"] > 0) or a["static_k"] is not None
        or a["static_v"] is not None or a["query"].dim() != 3
    )
    if unsupported:
        raise _Fallback
    query, key, value = a["query"], a["key"], a["value"]  # (L, N, E), sequence first
    length, batch, embed = query.shape
    heads = a["num_heads"]
    if a["use_separate_proj_weight"]:
        weights = (a["q_proj_weight"], a["k_proj_weight"], a["v_proj_weight"])
    else:
        weights = a["in_proj_weight"].chunk(3)
    biases = a["in_proj_bias"].chunk(3) if a["in_proj_bias"] is not None else (None, None, None)

    def heads_first(x, w, b):  # (S, N, E) -> (N, H, S, E/H)
        y = F.linear(x, w, b)
        return y.reshape(y.shape[0], batch, heads, -1).permute(1, 2, 0, 3)

    with FastTangents():
        q = heads_first(query, weights[0], biases[0])
        k = heads_first(key, weights[1], biases[1])
        v = heads_first(value, weights[2], biases[2])
        mask = _merge_masks(a["attn_mask"], a["key_padding_mask"], batch, heads, length, k.shape[2], q)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                             is_causal=a["is_causal"] and mask is None)
        out = out.permute(2, 0, 1, 3).reshape(length, batch, embed)
        return F.linear(out, a["out_proj_weight"], a["out_proj_bias"]), None


def _merge_masks(attn_mask, key_padding_mask, batch, heads, length, source, like):
    """Combine MHA's attn_mask ((L, S) or (N*H, L, S)) and key_padding_mask ((N, S)) into one additive mask."""
    mask = None
    if attn_mask is not None:
        mask = _additive(attn_mask, like)
        if mask.dim() == 3:
            mask = mask.reshape(batch, heads, length, source)
    if key_padding_mask is not None:
        padding = _additive(key_padding_mask, like, masked_is_true=True).reshape(batch, 1, 1, source)
        mask = padding if mask is None else mask + padding
    return mask


def _additive(mask, like, masked_is_true=True):
    if mask.dtype == torch.bool:
        blocked = mask if masked_is_true else ~mask
        return torch.zeros(mask.shape, dtype=like.dtype, device=like.device).masked_fill(blocked, float("-inf"))
    return mask.to(like.dtype)


class FastTangents(TorchFunctionMode):
    """Context manager: while active, covered ops on dual tensors use the fast rules above.

    Ops without a rule, calls whose input carries no tangent, and configurations a rule does not
    cover run unchanged. Fused attention kernels lack forward-mode AD, so attention that falls back
    runs under the math kernel.
    """

    def __init__(self) -> None:
        super().__init__()
        self._hooks_at_entry = saved_tensor_hooks()
        #: Set when an op ran under saved-tensor hooks that were not active on entry (activation
        #: checkpointing): its recomputation in backward would not match the dual pass.
        self.saw_new_saved_tensor_hooks = False

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not self.saw_new_saved_tensor_hooks:
            self.saw_new_saved_tensor_hooks = saved_tensor_hooks() != self._hooks_at_entry
        rule = _RULES.get(func)
        if func is F.scaled_dot_product_attention:
            probe = _any_tangent(args, kwargs)
        elif func in _EITHER_OPERAND:
            duals = [a for a in args[:2] if _has_tangent(a)]
            if len(duals) == 2 and not torch.is_grad_enabled():
                # PyTorch's own rule for two dual operands is cheaper than this one; with gradients on it
                # would record the tangent in the autograd graph, so the rule below keeps it out
                return func(*args, **kwargs)
            probe = duals[0] if duals else None
        elif func in _NATIVE_WITHOUT_GRAD and not torch.is_grad_enabled():
            return func(*args, **kwargs)
        else:
            probe = args[0] if args else None
        if rule is not None and _has_tangent(probe):
            try:
                return rule(func, args, kwargs)
            except _Fallback:
                pass
        if func is F.scaled_dot_product_attention or func is F.multi_head_attention_forward:
            with math_attention():
                return func(*args, **kwargs)
        return func(*args, **kwargs)


class SavedTensorHooksProbe(TorchFunctionMode):
    """Records whether any op ran under saved-tensor hooks not active on entry (see FastTangents)."""

    def __init__(self) -> None:
        super().__init__()
        self._hooks_at_entry = saved_tensor_hooks()
        self.saw_new_saved_tensor_hooks = False

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if not self.saw_new_saved_tensor_hooks:
            self.saw_new_saved_tensor_hooks = saved_tensor_hooks() != self._hooks_at_entry
        return func(*args, **(kwargs or {}))


def saved_tensor_hooks():
    """The innermost active saved-tensor hooks (pack, unpack), or None."""
    return torch._C._autograd._top_saved_tensors_default_hooks(False)


def _any_tangent(args, kwargs):
    """For attention: a tensor with a tangent among q, k, v, or None."""
    candidates = list(args[:3]) + [kwargs.get(n) for n in ("query", "key", "value")]
    return next((c for c in candidates if _has_tangent(c)), None)


def math_attention():
    """Restrict scaled_dot_product_attention to the math kernel, the one with forward-mode AD."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.MATH])
