r"""Training objectives: MeanFlow and its r = t special case, flow matching.

For data x (B, ...), noise e and times r <= t (B,):

    z_t   = (1 - t) x + t e,            v = e - x
    u_tgt = v - (t - r) sg(d/dt u_theta(z_t, r, t)),   d/dt u = J_u . (v, 0, 1)
    err   = || u_theta(z_t, r, t) - u_tgt ||^2          summed over all non-batch dimensions
    w     = 1 / sg((err + c)^p)                          (p = 0: plain L2)
    loss  = mean_B(w * err)

Because ``err`` is a sum over dimensions, ``c`` is on the scale of a squared norm per sample.
With classifier-free guidance folded into training, v is replaced by the guided velocity v_g
(:func:`guided_velocity`) both in the target and in the JVP tangent.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch

from mfkit.core.broadcast import expand_like, sum_non_batch
from mfkit.core.jvp import JVP_BACKENDS, jvp
from mfkit.core.path import conditional_velocity, interpolate
from mfkit.core.time_sampling import LogitNormal, TimePairSampler, cifar10_v1_sampler


def meanflow_target(
    model: Any,
    z: torch.Tensor,
    r: torch.Tensor,
    t: torch.Tensor,
    v: torch.Tensor,
    cond: Any = None,
    *,
    backend: str = "forward_ad",
    fd_step: float = 1e-3,
) -> torch.Tensor:
    """The stop-gradient MeanFlow target u_tgt = v - (t - r) d/dt u(z, r, t), with tangent (v, 0, 1).

    z, v: (B, ...); r, t: (B,). Computed in float32 whatever the autocast state. Returns a detached
    tensor of z's shape. When ``model`` is the exact average velocity of a flow and ``v`` its marginal
    velocity, the target equals ``model(z, r, t)`` (the MeanFlow identity).
    """
    _, target = _prediction_and_target(model, z, r, t, v, cond, backend, fd_step)
    return target


def _prediction_and_target(model, z, r, t, v, cond, backend, fd_step):
    tangents = (v, torch.zeros_like(r), torch.ones_like(t))
    u, du_dt = jvp(model, z, r, t, tangents, cond, backend=backend, fd_step=fd_step)
    with _autocast_off(z.device):
        gap = expand_like(t - r, z).float()
        target = (v.float() - gap * du_dt.float()).detach()
    return u, target


def _autocast_off(device: torch.device):
    return torch.autocast(device_type=device.type, enabled=False)


def adaptive_weight(err: torch.Tensor, p: float, c: float) -> torch.Tensor:
    """w = 1 / sg((err + c)^p) for per-sample squared errors ``err`` (B,). p = 0 gives w = 1."""
    if p == 0:
        return torch.ones_like(err)
    return 1.0 / (err.detach() + c).pow(p)


@dataclass(frozen=True)
class Guidance:
    """Classifier-free guidance folded into training.

    Inside the window t in [t_min, t_max] the velocity in the target becomes
    v_g = w_cfg v + kappa u(z_t, t, t | c) + (1 - w_cfg - kappa) u(z_t, t, t | null); outside it, v.
    A share ``class_dropout`` of samples gets ``null_label`` and the plain target. The effective
    guidance scale is w_cfg / (1 - kappa). Conditions are integer class labels of shape (B,).
    """

    null_label: int
    w_cfg: float = 1.0
    kappa: float = 0.5
    t_min: float = 0.0
    t_max: float = 1.0
    class_dropout: float = 0.1

    def __post_init__(self) -> None:
        if not 0.0 <= self.class_dropout < 1.0:
            raise ValueError(f"class_dropout must lie in [0, 1), got {self.class_dropout}")
        if not 0.0 <= self.t_min <= self.t_max <= 1.0:
            raise ValueError(f"guidance window needs 0 <= t_min <= t_max <= 1, got [{self.t_min}, {self.t_max}]")
        if self.kappa >= 1.0:
            raise ValueError(f"kappa must be below 1 (effective scale w_cfg / (1 - kappa)), got {self.kappa}")

    @property
    def effective_scale(self) -> float:
        return self.w_cfg / (1.0 - self.kappa)


def guided_velocity(
    v: torch.Tensor,
    u_cond: torch.Tensor,
    u_null: torch.Tensor,
    t: torch.Tensor,
    guidance: Guidance,
    dropped: torch.Tensor | None = None,
) -> torch.Tensor:
    """v_g = w v + kappa u_cond + (1 - w - kappa) u_null inside the t-window (and where not dropped), else v."""
    mixed = guidance.w_cfg * v + guidance.kappa * u_cond + (1 - guidance.w_cfg - guidance.kappa) * u_null
    active = (t >= guidance.t_min) & (t <= guidance.t_max)
    if dropped is not None:
        active = active & ~dropped
    return torch.where(expand_like(active, v), mixed.to(v.dtype), v)


@dataclass
class Draw:
    """All the randomness of one loss evaluation: noise (B, ...), times t, r (B,), dropped labels (B,) or None.

    Drawing it apart from the loss lets a caller draw once for a global batch and hand each
    process its slice (``draw[i:j]``), so several processes reproduce a single one exactly.
    """

    noise: torch.Tensor
    t: torch.Tensor
    r: torch.Tensor
    dropped: torch.Tensor | None = None

    def __getitem__(self, index: slice) -> "Draw":
        dropped = self.dropped[index] if self.dropped is not None else None
        return Draw(self.noise[index], self.t[index], self.r[index], dropped)


@dataclass
class ObjectiveOutput:
    """What an objective returns. ``loss`` carries the gradient; the rest are detached diagnostics.

    loss: weighted loss (scalar); mse: unweighted mean squared error per element (scalar);
    adaptive_weight: mean adaptive weight; r_neq_t_share: share of samples with r != t;
    t, r: the times used (B,); per_sample_error: err (B,).
    """

    loss: torch.Tensor
    mse: torch.Tensor
    adaptive_weight: torch.Tensor
    r_neq_t_share: torch.Tensor
    t: torch.Tensor
    r: torch.Tensor
    per_sample_error: torch.Tensor

    def metrics(self) -> dict[str, float]:
        """Scalar diagnostics as plain floats, for logging."""
        return {
            "loss": float(self.loss.detach()),
            "mse": float(self.mse),
            "adaptive_weight": float(self.adaptive_weight),
            "r_neq_t_share": float(self.r_neq_t_share),
        }


@dataclass
class MeanFlow:
    """The MeanFlow objective. Call as ``objective(model, x, cond=None)`` -> :class:`ObjectiveOutput`.

    Defaults are the paper's ImageNet settings: (t, r) from LN(-0.4, 1) with 25% of samples r != t,
    adaptive weight p = 1, c = 1e-2, exact forward-mode JVP. ``MeanFlow.preset("cifar10")`` gives the
    CIFAR-10 settings. ``guidance`` folds classifier-free guidance into training (class labels only).
    """

    times: TimePairSampler = field(default_factory=TimePairSampler)
    adaptive_p: float = 1.0
    adaptive_c: float = 1e-2
    guidance: Guidance | None = None
    jvp_backend: str = "forward_ad"
    fd_step: float = 1e-3

    def __post_init__(self) -> None:
        if self.jvp_backend not in JVP_BACKENDS:
            raise ValueError(f"unknown JVP backend {self.jvp_backend!r}; choose one of {', '.join(JVP_BACKENDS)}")
        if self.adaptive_p < 0 or self.adaptive_c <= 0:
            raise ValueError(f"adaptive weight needs p >= 0 and c > 0, got p={self.adaptive_p}, c={self.adaptive_c}")

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "MeanFlow":
        """Paper settings by data set: ``"imagenet"`` or ``"cifar10"``; keyword overrides win."""
        try:
            settings = PRESETS[name]
        except KeyError:
            raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None
        return replace(cls(), **{**settings(), **overrides})

    def sample_times(self, n: int, device: torch.device, generator: torch.Generator | None):
        return self.times.sample(n, device=device, generator=generator)

    def draw(
        self,
        x_shape: torch.Size | tuple[int, ...],
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        generator: torch.Generator | None = None,
    ) -> Draw:
        """Draw the noise, the times and (with guidance) the label-dropout mask for a batch of x_shape."""
        noise = torch.randn(tuple(x_shape), device=device, dtype=dtype, generator=generator)
        t, r = self.sample_times(x_shape[0], torch.device(device), generator)
        dropped = None
        if self.guidance is not None:
            dropped = torch.rand(x_shape[0], device=device, generator=generator) < self.guidance.class_dropout
        return Draw(noise, t.to(dtype), r.to(dtype), dropped)

    def prediction_and_target(self, model, z, r, t, v, cond):
        return _prediction_and_target(model, z, r, t, v, cond, self.jvp_backend, self.fd_step)

    def __call__(
        self,
        model: Any,
        x: torch.Tensor,
        cond: Any = None,
        *,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        draw: Draw | None = None,
    ) -> ObjectiveOutput:
        """One loss evaluation on a batch x (B, ...) with optional conditions (B,).

        Randomness comes from ``draw`` when given (see :meth:`draw`), else is drawn with ``generator``;
        ``noise`` fixes the noise alone.
        """
        if draw is None:
            draw = self.draw(x.shape, device=x.device, dtype=x.dtype, generator=generator)
            if noise is not None:
                draw.noise = noise
        noise, t, r = draw.noise.to(x.dtype), draw.t.to(x.dtype), draw.r.to(x.dtype)
        z = interpolate(x, noise, t)
        v = conditional_velocity(x, noise)
        if self.guidance is not None:
            cond, v = self._guide(model, z, t, v, cond, draw.dropped)
        u, target = self.prediction_and_target(model, z, r, t, v, cond)
        with _autocast_off(x.device):
            err = sum_non_batch((u.float() - target).pow(2))
            weight = adaptive_weight(err, self.adaptive_p, self.adaptive_c)
            loss = (weight * err).mean()
        return ObjectiveOutput(
            loss=loss,
            mse=err.detach().mean() / x[0].numel(),
            adaptive_weight=weight.mean(),
            r_neq_t_share=(r != t).float().mean(),
            t=t,
            r=r,
            per_sample_error=err.detach(),
        )

    def _guide(self, model, z, t, v, cond, dropped):
        """Drop labels to null and replace v by the guided velocity (network terms without gradient)."""
        guidance = self.guidance
        if cond is None:
            raise ValueError("guidance is set but the batch has no conditions (class labels)")
        if dropped is None:  # a Draw made without guidance: drop nothing
            dropped = torch.zeros(cond.shape[0], dtype=torch.bool, device=cond.device)
        cond = torch.where(dropped, torch.full_like(cond, guidance.null_label), cond)
        needs_model = guidance.kappa != 0 or guidance.w_cfg + guidance.kappa != 1
        if not needs_model:
            return cond, v
        with torch.no_grad():
            u_cond = model(z, t, t, cond=cond)
            u_null = model(z, t, t, cond=torch.full_like(cond, guidance.null_label))
        return cond, guided_velocity(v, u_cond, u_null, t, guidance, dropped)


@dataclass
class FlowMatching(MeanFlow):
    """Flow matching: the r = t special case of MeanFlow (target v, no JVP). Same interface.

    Defaults: t from LN(-0.4, 1), plain L2 (adaptive_p = 0); set adaptive_p to compare like with like.
    """

    times: TimePairSampler = field(default_factory=lambda: TimePairSampler(LogitNormal(), r_neq_t_share=0.0))
    adaptive_p: float = 0.0

    def sample_times(self, n, device, generator):
        t = self.times.t_dist.sample(n, device=device, generator=generator)
        return t, t

    def prediction_and_target(self, model, z, r, t, v, cond):
        return model(z, r, t, cond=cond), v.float().detach()


def _imagenet() -> dict[str, Any]:
    return {"times": TimePairSampler(LogitNormal(-0.4, 1.0), r_neq_t_share=0.25), "adaptive_p": 1.0,
            "adaptive_c": 1e-2}


def _cifar10() -> dict[str, Any]:
    return {"times": cifar10_v1_sampler(0.75), "adaptive_p": 0.75, "adaptive_c": 1e-3}


PRESETS = {"imagenet": _imagenet, "cifar10": _cifar10}
