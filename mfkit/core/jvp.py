"""Jacobian-vector products of a backbone u(z, r, t), by several interchangeable backends.

Every backend returns ``(u, du)``: ``u = model(z, r, t, cond)`` carrying the gradient for the loss,
and ``du = J_u(z, r, t) . (z_t, r_t, t_t)`` detached (MeanFlow's target is stop-gradient).
MeanFlow uses the tangent (z_t, r_t, t_t) = (v, 0, 1), which gives the total derivative
d/dt u(z_t, r, t) = v . grad_z u + du/dt.

Backends (select by name):

``"forward_ad"`` (default)
    Exact, one pass: forward-mode AD with dual tensors and :class:`FastTangents` rules for the common
    layers. The primal output is reused for the loss, so there is no extra forward.
``"forward_ad_plain"``
    The same without the fast rules (PyTorch's own forward-mode formulas): a reference and a fallback.
``"nograd"``
    Exact JVP (``torch.func.jvp``) under ``no_grad``, plus a separate ordinary forward for the loss. One
    extra forward; works with any module ``torch.func`` can trace, even where dual tensors cannot
    flow through the autograd graph.
``"finite_difference"``
    [u(z + h z_t, r + h r_t, t + h t_t) - u(z, r, t)] / h: works with any kernel, at an O(h) bias.
    The difference of two nearly equal outputs is divided by h, which magnifies any other difference
    between the two passes 1000-fold at h = 1e-3, so both are always computed the same way: in float32
    (float64 inputs stay float64; lower-precision inputs are refused), with exact products (never TF32,
    whatever ``precision`` says) and autocast off, on the same rows with the same random numbers. The
    loss forward serves as u(z, r, t) only where it is such a pass already (every row, no autocast, no
    TF32 in effect on the device: one extra forward); otherwise both passes run apart (two). Rows whose
    t + h t_t would pass 1 step backwards, [u(z, r, t) - u(z - h z_t, r - h r_t, t - h t_t)] / h, so
    the network is never asked for t > 1.

Precision (``precision=``): ``"fp32"`` (default) computes the JVP with autocast switched off, so under
bf16/fp16 autocast the tangent (and, for finite differences, both outputs that are subtracted) are
float32, while the forward that carries the loss's gradient still runs under autocast: one extra
no-grad forward under autocast, none without it; on CUDA that pass's float32 matmuls and convolutions
are exact (TF32 off for its duration, whatever the global settings: cuDNN's default is TF32).
``"tf32"`` is ``"fp32"`` with those products on CUDA's TF32 tensor cores (:mod:`mfkit.core.tf32`):
float32 tensors with a 10-bit mantissa in the products, several times faster on a GPU, the same as
``"fp32"`` on a CPU.
``"autocast"`` runs the JVP under the ambient autocast (one pass, faster, less exact: see
docs/concepts.md for measured errors). Without autocast all three are the same single pass in the dtype
of the model and inputs. ``finite_difference`` runs as ``"fp32"`` under all three (see above).

``torch.compile``: dual tensors do not survive compiled graphs (a compiled module returns a zero
tangent), so the forward-mode passes run compiled code eagerly (``torch.compiler.set_stance``); the
loss forward of ``nograd`` and ``finite_difference`` stays compiled.

Randomness (dropout) is replayed so that every pass of one call sees the same mask.

Rows: :func:`jvp_on_rows` computes u for the whole batch and the JVP for selected rows only (MeanFlow's
rows with r != t; :mod:`mfkit.core.rows` decides when that is exact).

DistributedDataParallel: gradient-carrying passes go through the wrapper, extra no-grad passes through
the module inside. With ``find_unused_parameters`` or ``static_graph`` DDP passes its output through an
autograd function without a forward-mode rule, so the dual-tensor backends then run their pass without
gradient inside the wrapper and give the wrapper an ordinary forward (one extra forward).
"""
from __future__ import annotations

import contextlib
import warnings
from typing import Any, Callable, Iterator

import torch
import torch.autograd.forward_ad as fwAD
from torch import nn

from mfkit.core import tf32
from mfkit.core.branch_backward import detach_branch
from mfkit.core.calling import Backbone, call_model, innermost, without_wrapper
from mfkit.core.tangent_rules import FastTangents, SavedTensorHooksProbe, math_attention
from mfkit.core.tf32 import cuda_float32_products

# PyTorch loads its forward-AD decompositions through torch.jit.script on the first dual tensor and
# warns about it; the warning concerns PyTorch internals, not the user's code. Filtered for that one
# message only, and only while mfkit runs a JVP (see _quiet_jit_warning), so plugin authors' own
# warning filters are untouched.
_JIT_WARNING = r"`torch\.jit\.script` is deprecated"

JVP_BACKENDS = ("forward_ad", "forward_ad_plain", "nograd", "finite_difference")
JVP_PRECISIONS = ("fp32", "tf32", "autocast")
#: Precisions that compute the JVP apart, in float32 with autocast off, when autocast is on.
FLOAT32_JVP = ("fp32", "tf32")


class JVPError(RuntimeError):
    """A backend cannot differentiate the backbone (a layer without a forward-mode rule, ...)."""


def jvp(
    model: Backbone,
    z: torch.Tensor,
    r: torch.Tensor,
    t: torch.Tensor,
    tangents: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    cond: Any = None,
    *,
    backend: str = "forward_ad",
    fd_step: float = 1e-3,
    precision: str = "fp32",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (u, J_u . tangents) for u = model(z, r, t, cond).

    Shapes: z (B, ...), r and t (B,); tangents match (z, r, t). ``u`` keeps its autograd graph,
    the JVP is detached. ``precision``: see the module docstring. A model whose ``forward`` takes no
    ``cond`` is called as ``model(z, r, t)``.
    """
    _check_settings(backend, precision, fd_step)
    _check_difference_inputs(backend, z, t)
    apart = _apart_for(backend, _backend_precision(backend, precision), z.device)
    pair, tangent_only = _BACKENDS[backend]
    args = (z, r, t, tuple(dx.to(x.dtype) for x, dx in zip((z, r, t), tangents)), cond, fd_step)
    with _explained(model, backend, lambda: pair(model, *args)), _quiet_jit_warning():
        if apart != "autocast" or (backend in _DUAL_BACKENDS and _ddp_sink(model)):
            return _forward_then_tangent(lambda: call_model(model, z, r, t, cond),
                                         lambda: _tangent_apart(tangent_only, without_wrapper(model), args, apart),
                                         z.device)
        return pair(model, *args)


def jvp_on_rows(
    model: Backbone,
    z: torch.Tensor,
    r: torch.Tensor,
    t: torch.Tensor,
    tangents: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    cond: Any = None,
    rows: torch.Tensor | None = None,
    *,
    backend: str = "forward_ad",
    fd_step: float = 1e-3,
    precision: str = "fp32",
) -> tuple[torch.Tensor, torch.Tensor]:
    """(u, J_u . tangents on ``rows`` only): u over the whole batch (B, ...) with its gradient, the JVP
    detached for the selected rows (k, ...) in their order.

    ``rows``: indices (k,) or a boolean mask (B,); None means every row (then this is :func:`jvp`).
    Exact, that is equal to the same rows of :func:`jvp` up to float rounding, for a backbone that
    computes each row on its own (no batch norm in training, no dropout: see :mod:`mfkit.core.rows`,
    which decides when a MeanFlow objective may use it). Per backend:

    * ``forward_ad``, ``forward_ad_plain`` (without the float32 split below): a plain forward of the
      other rows and a dual pass of the selected rows, both carrying the gradient (their outputs are
      put back in batch order): forward + tangent of the k rows only; for backbones of 4M weights or
      more, outside distributed runs, the dual pass's graph is backpropagated on its own
      (:mod:`mfkit.core.branch_backward`). Under DistributedDataParallel the
      plain forward goes through the wrapper and the dual pass through the module inside it; both
      gradients reach each parameter's accumulator before DDP's hook reduces it, so this is exact with
      DDP's default settings. With ``find_unused_parameters`` or ``static_graph`` (whose output
      function has no forward-mode rule) the wrapper gets one gradient forward of every row and a
      no-grad dual pass gives the tangent of the k rows, as :func:`jvp` then does for every row.
    * ``nograd`` and every backend under ``precision="fp32"`` with autocast on: the ordinary forward of
      the whole batch carries the gradient, as in :func:`jvp`, and the extra no-grad pass
      (``torch.func.jvp``, float32 tangent) runs on the k rows only.
    * ``finite_difference``: the ordinary forward of the whole batch carries the gradient, and both
      passes of the difference (shifted and base) run on the k rows, in float32 with exact products and
      the same random numbers: the whole batch's output is not reused as the base, because any
      difference between rows computed in a batch of B and in one of k (a kernel that blocks by batch
      size, a dropout mask) would be divided by h. Where the loss forward can be the base (no autocast,
      no TF32 in effect) and k >= B/2, one shifted pass of every row is cheaper and is taken instead.
    """
    _check_settings(backend, precision, fd_step)
    _check_difference_inputs(backend, z, t)
    precision = _backend_precision(backend, precision)
    batch = z.shape[0]
    if rows is None:
        return jvp(model, z, r, t, tangents, cond, backend=backend, fd_step=fd_step, precision=precision)
    rows = rows.to(z.device)
    index = rows.nonzero().flatten() if rows.dtype == torch.bool else rows.long()
    k = index.numel()
    if backend == "finite_difference" and 2 * k >= batch and _apart_for(backend, precision, z.device) == "autocast":
        # the loss forward can be the base: one shifted pass of every row costs no more than two of k rows
        u, du = jvp(model, z, r, t, tangents, cond, backend=backend, fd_step=fd_step, precision=precision)
        return u, du[index]
    if k == batch:
        u, du = jvp(model, z, r, t, tangents, cond, backend=backend, fd_step=fd_step, precision=precision)
        return u, du if bool((index == torch.arange(batch, device=z.device)).all()) else du[index]
    if k == 0:
        u = call_model(model, z, r, t, cond)
        return u, u.detach().new_zeros((0, *u.shape[1:]))
    from mfkit.core.rows import take_rows

    tangents = tuple(dx.to(x.dtype) for x, dx in zip((z, r, t), tangents))
    picked = (z[index], r[index], t[index], tuple(dx[index] for dx in tangents), take_rows(cond, index, batch),
              fd_step)
    pair, tangent_only = _BACKENDS[backend]
    inner = without_wrapper(model)
    apart = "fp32" if backend == "finite_difference" else apart_precision(precision, z.device)
    fp32_split = apart != "autocast"
    forward_mode = backend in _DUAL_BACKENDS and not fp32_split
    with _explained(model, backend, lambda: pair(inner, *picked)), _quiet_jit_warning():
        if forward_mode and not _ddp_sink(model):
            rest = torch.ones(batch, dtype=torch.bool, device=z.device)
            rest[index] = False
            rest = rest.nonzero().flatten()
            u_rest = call_model(model, z[rest], r[rest], t[rest], take_rows(cond, rest, batch))
            u_rows, du = pair(inner, *picked)
            u_rows = detach_branch(u_rows, picked, inner)  # never in a distributed run (DDP, FSDP, ...)
            order = torch.empty(batch, dtype=torch.long, device=z.device)
            order[torch.cat([index, rest])] = torch.arange(batch, device=z.device)
            return torch.cat([u_rows, u_rest]).index_select(0, order), du
        return _forward_then_tangent(lambda: call_model(model, z, r, t, cond),
                                     lambda: _tangent_apart(tangent_only, inner, picked, apart), z.device)


# ---------------------------------------------------------------- forward-mode AD (dual tensors)
def _dual_pass(model, z, r, t, tangents, cond, fast):
    """(u, du) from one pass with dual tensors.

    If the network checkpoints activations (saved-tensor hooks appear inside the pass), the primal of
    the dual pass cannot carry the gradient: the recomputation in backward would save other tensors.
    Then u comes from a second, ordinary forward that replays the same randomness (exact, one extra
    forward).
    """
    rng = _rng_state(z.device)
    with fwAD.dual_level(), _jvp_safe():
        dual = [fwAD.make_dual(x, dx) for x, dx in zip((z, r, t), tangents)]
        mode = FastTangents() if fast else SavedTensorHooksProbe()
        with mode, contextlib.nullcontext() if fast else math_attention():
            out = call_model(model, *dual, cond)
        u, du = fwAD.unpack_dual(out)
        if du is None:  # the output does not depend on the inputs at all
            du = torch.zeros_like(u)
    if mode.saw_new_saved_tensor_hooks and torch.is_grad_enabled():
        _set_rng_state(z.device, rng)
        u = call_model(model, z, r, t, cond)
    return u, du.detach()


def _forward_ad_pair(model, z, r, t, tangents, cond, h, fast=True):
    return _dual_pass(model, z, r, t, tangents, cond, fast)


def _forward_ad_tangent(inner, z, r, t, tangents, cond, h, fast=True):
    return _dual_pass(inner, z, r, t, tangents, cond, fast)[1]


def _plain_pair(model, z, r, t, tangents, cond, h):
    return _forward_ad_pair(model, z, r, t, tangents, cond, h, fast=False)


def _plain_tangent(inner, z, r, t, tangents, cond, h):
    return _forward_ad_tangent(inner, z, r, t, tangents, cond, h, fast=False)


# ---------------------------------------------------------------- torch.func.jvp under no_grad
def _func_jvp_tangent(inner, z, r, t, tangents, cond, h):
    def u_of(z_, r_, t_):
        return call_model(inner, z_, r_, t_, cond)

    with torch.no_grad(), math_attention(), _jvp_safe():
        return torch.func.jvp(u_of, (z, r, t), tangents)[1]


def _nograd_pair(model, z, r, t, tangents, cond, h):
    return _forward_then_tangent(lambda: call_model(model, z, r, t, cond),
                                 lambda: _func_jvp_tangent(without_wrapper(model), z, r, t, tangents, cond, h),
                                 z.device)


# ---------------------------------------------------------------- finite differences
def difference_steps(t: torch.Tensor, dt: torch.Tensor, h: float) -> torch.Tensor:
    """Signed steps (B,) in t's dtype: +h, or -h for rows whose shifted time t + h dt would pass 1 (full
    jumps at t = 1): those rows take the backward difference, so the network is only asked for t <= 1.
    Only t is looked at (MeanFlow's tangent leaves r alone); a row with t - r < h then sees t - h < r, a
    point just outside r <= t that a smooth network evaluates without trouble."""
    step = torch.full_like(t, h)
    return torch.where(t + step * dt > 1, -step, step)


def _shifted(inner, z, r, t, tangents, cond, h):
    """(u(z + s dz, r + s dr, t + s dt), s) under no_grad, s = :func:`difference_steps` (B,); each input
    keeps its dtype."""
    dz, dr, dt = tangents
    step = difference_steps(t, dt, h)
    with torch.no_grad():
        return call_model(inner, z + _per_row(step, z).to(z.dtype) * dz, r + step.to(r.dtype) * dr,
                          t + step * dt, cond), step


def _per_row(step: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B, 1, ..., 1) to broadcast over ``like``'s sample dimensions."""
    return step.view(-1, *([1] * (like.dim() - 1)))


def _quotient(shifted: torch.Tensor, base: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    """(shifted - base) / s per row, s the signed steps (B,) of :func:`difference_steps`."""
    return (shifted - base) / _per_row(step, shifted).to(shifted.dtype)


def _difference_pair(model, z, r, t, tangents, cond, h):
    """The loss forward is the base: only for an exact float32 (or float64) pass of every row
    (:func:`_apart_for` sends every other case to :func:`_difference_tangent`)."""
    u, (shifted, step) = _forward_then_tangent(lambda: call_model(model, z, r, t, cond),
                                               lambda: _shifted(without_wrapper(model), z, r, t, tangents, cond, h),
                                               z.device)
    return u, _quotient(shifted, u.detach(), step)


def _difference_tangent(inner, z, r, t, tangents, cond, h):
    """Both passes here, on the same rows with the same random numbers."""
    with replayed_randomness(z.device):
        shifted, step = _shifted(inner, z, r, t, tangents, cond, h)
    with torch.no_grad():
        base = call_model(inner, z, r, t, cond)
    return _quotient(shifted, base, step)


# name -> (one pass giving (u with gradient, du), tangent alone under no_grad)
_BACKENDS = {
    "forward_ad": (_forward_ad_pair, _forward_ad_tangent),
    "forward_ad_plain": (_plain_pair, _plain_tangent),
    "nograd": (_nograd_pair, _func_jvp_tangent),
    "finite_difference": (_difference_pair, _difference_tangent),
}


# ---------------------------------------------------------------- helpers
_DUAL_BACKENDS = ("forward_ad", "forward_ad_plain")


def _ddp_sink(model) -> bool:
    """Does a DistributedDataParallel wrapper pass its output through its own autograd.Function (with
    ``find_unused_parameters`` or ``static_graph``)? That function has no forward-mode rule, so dual
    tensors cannot cross the wrapper: the dual pass then runs without gradient on the module inside, and
    the wrapper gets an ordinary forward (one extra forward, as under ``precision="fp32"`` with autocast)."""
    return without_wrapper(model) is not model and bool(getattr(model, "find_unused_parameters", False)
                                                        or getattr(model, "static_graph", False))


def autocast_off(device: torch.device):
    return torch.autocast(device_type=device.type, enabled=False)


def apart_precision(precision: str, device: torch.device) -> str:
    """How the no-grad passes kept apart from the gradient forward (the JVP, guidance terms) run: in
    ``precision`` ("fp32" or "tf32") under autocast, else "autocast": the ambient settings, as the
    gradient forward (without autocast all precisions are that one pass)."""
    return precision if precision in FLOAT32_JVP and torch.is_autocast_enabled(device.type) else "autocast"


@contextlib.contextmanager
def float32_pass(precision: str, device: torch.device):
    """A no-grad network pass of the given JVP precision: autocast off for "fp32" and "tf32", with CUDA's
    float32 matmuls and convolutions exact for "fp32" and on TF32 tensor cores for "tf32"; the ambient
    autocast and settings for "autocast"."""
    with contextlib.ExitStack() as stack:
        if precision in FLOAT32_JVP:
            stack.enter_context(autocast_off(device))
            stack.enter_context(cuda_float32_products(device, tf32=precision == "tf32"))
        yield


@contextlib.contextmanager
def _jvp_safe() -> Iterator[None]:
    """Run compiled code eagerly (compiled graphs drop forward-mode tangents) and keep
    nn.MultiheadAttention / TransformerEncoder off their fused inference fast path (no forward AD)."""
    set_stance = getattr(torch.compiler, "set_stance", None)
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with set_stance("force_eager") if set_stance is not None else contextlib.nullcontext():
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


def _rng_state(device: torch.device):
    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None


def _set_rng_state(device: torch.device, state) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


@contextlib.contextmanager
def _quiet_jit_warning() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_JIT_WARNING, category=FutureWarning)
        yield


@contextlib.contextmanager
def replayed_randomness(device: torch.device) -> Iterator[None]:
    """Run the block, then rewind the RNG of ``device`` so the next pass draws the same numbers."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type=device.type if devices else "cuda"):
        yield


# ---------------------------------------------------------------- clear errors
_FORWARD_MODE_HINTS = ("forward ad", "forward-mode", "forward mode", "jvp", "dual", "fw_grad", "forward grad",
                       "tangent")


def _is_forward_mode_failure(error: BaseException) -> bool:
    text = str(error).lower()
    return any(hint in text for hint in _FORWARD_MODE_HINTS)


def _tangent_apart(tangent_only, model, args: tuple, precision: str) -> torch.Tensor:
    """The tangent from a no-grad pass in ``precision`` (:func:`apart_precision`); the caller runs the
    ordinary forward for u and the two through :func:`_forward_then_tangent` (same random numbers)."""
    device = args[0].device
    with float32_pass(precision, device), torch.no_grad():
        return tangent_only(model, *args)


def _forward_then_tangent(forward: Callable[[], Any], tangent: Callable[[], Any], device: torch.device):
    """(forward(), tangent()), the tangent's pass drawing the same random numbers as the forward (dropout
    masks) and the generator left where the forward left it.

    The gradient forward runs first: on a GPU its kernels are queued in a few milliseconds and run while
    Python works through the no-grad tangent pass, whose per-op cost (a torch-function rule per op) can
    exceed its GPU time; run the other way round the GPU idles through that pass. Memory: the forward's
    saved activations are alive during the tangent pass, so the peak is their sum with the pass's own
    working memory (before, the larger of the two)."""
    before = _rng_state(device)
    u = forward()
    after = _rng_state(device)
    _set_rng_state(device, before)
    try:
        return u, tangent()
    finally:
        _set_rng_state(device, after)


def _backend_precision(backend: str, precision: str) -> str:
    """The precision a backend's passes run in: finite differences divide the difference of two nearly
    equal outputs by h, which turns TF32's rounding (5e-4) into errors of about 30% at h = 1e-3 and
    bfloat16's (4e-3) into errors of order 1 (measured: 9-23x the JVP's size), so they always run as
    "fp32": autocast off, exact products."""
    return "fp32" if backend == "finite_difference" else precision


def _apart_for(backend: str, precision: str, device: torch.device) -> str:
    """:func:`apart_precision`, except that finite differences take both passes apart in "fp32" unless the
    loss forward is itself an exact pass: autocast off and, on CUDA, TF32 off for matmuls and
    convolutions (cuDNN's default allows TF32 for convolutions)."""
    apart = apart_precision(precision, device)
    if backend == "finite_difference" and apart == "autocast" and device.type == "cuda" and any(tf32.settings()):
        return "fp32"
    return apart


def _check_difference_inputs(backend: str, z: torch.Tensor, t: torch.Tensor) -> None:
    if backend != "finite_difference":
        return
    for name, x in (("z", z), ("t", t)):
        if x.dtype not in (torch.float32, torch.float64):
            raise ValueError(
                f"jvp_backend finite_difference needs float32 or float64 inputs, got {name} in {x.dtype}: in "
                f"{x.dtype} the shifted time t + h rounds back to t and the difference is rounding noise. "
                f"Keep the model and data in float32 and use autocast (train.precision: bf16) for speed.")


def _check_settings(backend: str, precision: str, fd_step: float) -> None:
    if backend not in _BACKENDS:
        raise ValueError(f"unknown JVP backend {backend!r}; choose one of {', '.join(JVP_BACKENDS)}")
    if precision not in JVP_PRECISIONS:
        raise ValueError(f"unknown JVP precision {precision!r}; choose one of {', '.join(JVP_PRECISIONS)}")
    if backend == "finite_difference" and not fd_step > 0:
        raise ValueError(f"fd_step must be positive, got {fd_step}")


@contextlib.contextmanager
def _explained(model, backend: str, rerun: Callable[[], Any]) -> Iterator[None]:
    """Turn a forward-mode failure inside the block into one :class:`JVPError` naming the layer."""
    try:
        yield
    except (RuntimeError, NotImplementedError) as error:
        if isinstance(error, JVPError) or not _is_forward_mode_failure(error):
            raise
        raise JVPError(_explain(error, model, backend, rerun)) from error


def _explain(error: BaseException, model, backend: str, rerun: Callable[[], Any]) -> str:
    """One message: which backend failed, in which layer, and what to use instead."""
    layer = _failing_layer(model, rerun)
    where = f" in layer {layer}" if layer else ""
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    instead = "finite_difference"  # torch.func's own limits below are not forward mode's
    if backend == "nograd" and "setup_context" in first:
        instead = "finite_difference (or forward_ad if that layer's autograd.Function defines jvp)"
    elif backend == "nograd" and any(word in first for word in ("captured", "in-place")):
        instead = "forward_ad or finite_difference"
    return (f"JVP backend {backend!r} cannot differentiate the backbone{where}: {first}. "
            f"Use jvp_backend={instead} (objective.jvp_backend in a recipe; finite differences work with "
            f"any layer at an O(h) bias), or give the layer a forward-mode rule (a custom "
            f"autograd.Function needs a jvp staticmethod).")


def _failing_layer(model, rerun: Callable[[], Any]) -> str | None:
    """Rerun the failing pass with module hooks; the innermost module entered and not left is the culprit."""
    root = innermost(model)
    if not isinstance(root, nn.Module):
        return None
    names = {id(module): name or type(root).__name__ for name, module in root.named_modules()}
    stack: list[nn.Module] = []
    failed: list[nn.Module] = []

    def enter(module, args):
        stack.append(module)

    def leave(module, args, output):
        if stack and stack[-1] is module:
            stack.pop()

    handles = [nn.modules.module.register_module_forward_pre_hook(enter),
               nn.modules.module.register_module_forward_hook(leave)]
    try:
        with _quiet_jit_warning():
            rerun()
    except Exception:  # noqa: BLE001 - the failure we are locating
        failed = [m for m in stack if id(m) in names]
    finally:
        for handle in handles:
            handle.remove()
    if not failed:
        return None
    module = failed[-1]
    return f"{names[id(module)]} ({type(module).__name__})"
