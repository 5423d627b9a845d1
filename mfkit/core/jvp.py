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
    [u(z + h z_t, r + h r_t, t + h t_t) - u(z, r, t)] / h: one extra forward, works with any kernel,
    at an O(h) bias.

Randomness (dropout) is replayed so that every pass of one call sees the same mask.
"""
from __future__ import annotations

import contextlib
import warnings
from typing import Any, Callable, Iterator

import torch
import torch.autograd.forward_ad as fwAD

from mfkit.core.tangent_rules import FastTangents, math_attention

# PyTorch loads its forward-AD decompositions through torch.jit.script on the first dual tensor and
# warns about it; the warning concerns PyTorch internals, not the user's code.
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)

Backbone = Callable[..., torch.Tensor]
JVP_BACKENDS = ("forward_ad", "forward_ad_plain", "nograd", "finite_difference")


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
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (u, J_u . tangents) for u = model(z, r, t, cond).

    Shapes: z (B, ...), r and t (B,); tangents match (z, r, t). ``u`` keeps its autograd graph,
    the JVP is detached.
    """
    try:
        implementation = _BACKENDS[backend]
    except KeyError:
        raise ValueError(f"unknown JVP backend {backend!r}; choose one of {', '.join(JVP_BACKENDS)}") from None
    if backend == "finite_difference":
        if not fd_step > 0:
            raise ValueError(f"fd_step must be positive, got {fd_step}")
        return implementation(model, z, r, t, tangents, cond, fd_step)
    return implementation(model, z, r, t, tangents, cond)


def _forward_ad(model, z, r, t, tangents, cond, fast: bool = True):
    with fwAD.dual_level():
        dual = [fwAD.make_dual(x, dx.to(x.dtype)) for x, dx in zip((z, r, t), tangents)]
        with FastTangents() if fast else math_attention():
            out = model(*dual, cond=cond)
        u, du = fwAD.unpack_dual(out)
        if du is None:  # the output does not depend on the inputs at all
            du = torch.zeros_like(u)
    return u, du.detach()


def _forward_ad_plain(model, z, r, t, tangents, cond):
    return _forward_ad(model, z, r, t, tangents, cond, fast=False)


def _without_wrapper(model):
    """The module inside a DistributedDataParallel wrapper, for passes that need no gradient.

    Gradient-carrying passes always go through the wrapper, so its all-reduce hooks see them.
    """
    return getattr(model, "module", model) if type(model).__name__ == "DistributedDataParallel" else model


def _nograd(model, z, r, t, tangents, cond):
    inner = _without_wrapper(model)

    def u_of(z_, r_, t_):
        return inner(z_, r_, t_, cond=cond)

    with replayed_randomness(z.device):
        with torch.no_grad(), math_attention():
            _, du = torch.func.jvp(u_of, (z, r, t), tuple(dx.to(x.dtype) for x, dx in zip((z, r, t), tangents)))
    return model(z, r, t, cond=cond), du


def _finite_difference(model, z, r, t, tangents, cond, h):
    dz, dr, dt = tangents
    with replayed_randomness(z.device):
        with torch.no_grad():
            shifted = _without_wrapper(model)(z + h * dz.to(z.dtype), r + h * dr.to(r.dtype), t + h * dt.to(t.dtype), cond=cond)
    u = model(z, r, t, cond=cond)
    return u, (shifted - u.detach()) / h


_BACKENDS = {
    "forward_ad": _forward_ad,
    "forward_ad_plain": _forward_ad_plain,
    "nograd": _nograd,
    "finite_difference": _finite_difference,
}


@contextlib.contextmanager
def replayed_randomness(device: torch.device) -> Iterator[None]:
    """Run the block, then rewind the RNG of ``device`` so the next pass draws the same numbers."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type=device.type if devices else "cuda"):
        yield
