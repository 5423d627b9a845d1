r"""Training objectives: MeanFlow and its r = t special case, flow matching.

For data x (B, ...), noise e and times r <= t (B,):

    z_t   = (1 - t) x + t e,            v = e - x
    u_tgt = v - (t - r) sg(d/dt u_theta(z_t, r, t)),   d/dt u = J_u . (v, 0, 1)
    err   = || u_theta(z_t, r, t) - u_tgt ||^2          summed over all non-batch dimensions
    w     = 1 / sg((err + c)^p)                          (p = 0: plain L2)
    loss  = mean_B(w * err)

Because ``err`` is a sum over dimensions, ``c`` is on the scale of a squared norm per sample.
With classifier-free guidance folded into training, v is replaced by the guided velocity v_g
(:func:`guided_velocity`) both in the target and in the JVP tangent. Rows with r = t have u_tgt = v
whatever their JVP: :class:`MeanFlow` computes the JVP of the r != t rows only when that leaves the loss
and gradients unchanged (``jvp_rows``, :mod:`mfkit.core.rows`).

Variants, each off by default:

* ``coupling="ot"``: the noise is re-paired with the data by minibatch optimal transport before z_t is
  formed (:mod:`mfkit.core.coupling`); the formulas above are unchanged.
* ``formulation="imf"`` (improved MeanFlow): the JVP tangent is (sg(u(z_t, t, t)), 0, 1), the network's
  own instantaneous velocity, instead of (v, 0, 1); the loss is the same regression of the implied
  velocity u + (t - r) sg(d/dt u) onto v. One extra no-grad forward of the r != t rows.
* ``alpha`` (alpha-Flow curriculum, :class:`AlphaCurriculum`): while the curriculum's alpha(progress) > 0
  the JVP is replaced by a finite step of size alpha (t - r):
  s = t - alpha (t - r), z_s = z_t - alpha (t - r) v, u_tgt = alpha v + (1 - alpha) sg(u(z_s, r, s));
  alpha = 1 is trajectory flow matching (u_tgt = v), and at alpha = 0 the exact JVP target above is used.
  To first order in alpha the residual u - u_tgt is alpha times MeanFlow's (u - v + (t - r) d/dt u), so
  the r != t rows take the weight w = 1 / (max(alpha, 0.01) sg((err / alpha^2 + c)^p)): the adaptive
  weight of the residual scaled back to MeanFlow's size, divided by alpha. Their gradient is then
  MeanFlow's, for every p and c (alpha-Flow's own code, p = 1, weights them alpha / (err + c), the same up
  to c's scale); with MeanFlow's weight they got up to 1/alpha times its gradient at p = 1 and alpha times
  at p = 0. Below alpha = ``ALPHA_WEIGHT_FLOOR`` (0.01) the rows' gradient fades as alpha / 0.01, so
  float rounding in the difference u - u_tgt (bf16 autocast: about 1e-2 of u) is never magnified more
  than 100 times.
* ``interval_weighting`` (:class:`IntervalWeighting`): each sample's term of the loss is multiplied by
  exp(-lambda(progress) (t - r)), lambda falling to 0 over training: short intervals first, all
  intervals equal later; loss = mean_B(w * exp(-lambda (t - r)) * err).
"""
from __future__ import annotations

import contextlib
import math
import os
import sys
import warnings
from dataclasses import InitVar, dataclass, field, replace
from typing import Any, Iterator

import torch
from torch import nn

from mfkit.core import presets
from mfkit.core.broadcast import expand_like, sum_non_batch
from mfkit.core.calling import call_model, innermost, without_wrapper
from mfkit.core.conditions import ConditionOps, LabelConditions, batch_size_of
from mfkit.core.coupling import COUPLINGS, SET_COUPLINGS, align_sets, couple
from mfkit.core.jvp import (JVP_BACKENDS, JVP_PRECISIONS, JVPError, apart_precision, autocast_off, float32_pass, jvp,
                             jvp_on_rows)
from mfkit.core.path import conditional_velocity, interpolate
from mfkit.core.rows import JVP_ROWS, RowPlanner, batch_statistics_reason, static_reason, take_rows
from mfkit.core.time_sampling import LogitNormal, TimePairSampler


def warn_about_batch_statistics(model: Any) -> bool:
    """Warn if a normalisation layer of the backbone depends on the batch or on train/eval mode through its
    statistics (:func:`mfkit.core.rows.batch_statistics_reason`: batch norm in training mode or without
    running statistics, instance norm tracking running statistics in training); True if it warned.

    MeanFlow's target then breaks in ways that train without an error: the passes kept apart from the
    loss forward (the JVP's float32 or finite-difference passes; iMF's velocity and the guidance terms,
    which run in eval mode) see other statistics than the loss forward or update the running ones again,
    and the samples of a batch shape each other's targets.
    """
    culprit = static_reason(model, reason_of=batch_statistics_reason)
    if culprit is None:
        return False
    warnings.warn(
        f"the backbone's {culprit}: MeanFlow's passes apart from the loss forward (JVP, iMF velocity, guidance "
        f"terms in eval mode) then see other statistics than the loss forward, and samples of a batch shape "
        f"each other's targets, so the target is off without any error. Use GroupNorm or LayerNorm "
        f"(docs/plugins.md, 'Rules that keep the JVP exact and fast').", UserWarning,
        stacklevel=stacklevel_outside_mfkit())
    return True


def stacklevel_outside_mfkit() -> int:
    """The ``stacklevel`` for :func:`warnings.warn` called by this function's caller that names the first
    frame outside the mfkit package (the user's line, not mfkit's)."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame, level = frame.f_back, level + 1
    return level


_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


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
    precision: str = "fp32",
    rows: str = "all",
) -> torch.Tensor:
    """The stop-gradient MeanFlow target u_tgt = v - (t - r) d/dt u(z, r, t), with tangent (v, 0, 1).

    z, v: (B, ...); r, t: (B,). The subtraction is done in float32 whatever the autocast state; with
    ``precision="fp32"`` (default) the JVP is float32 too (see :func:`mfkit.jvp`). Returns a detached
    tensor of z's shape. When ``model`` is the exact average velocity of a flow and ``v`` its marginal
    velocity, the target equals ``model(z, r, t)`` (the MeanFlow identity).

    ``rows``: ``"all"`` (default) takes the JVP of every row; ``"r_neq_t"`` only of the rows with r != t
    (the others have target v), exact for a backbone without cross-sample coupling or randomness (see
    :mod:`mfkit.core.rows`; :class:`MeanFlow` decides this by itself with ``jvp_rows="auto"``).
    """
    if rows not in ("all", "r_neq_t"):
        raise ValueError(f"rows must be 'all' or 'r_neq_t' here, got {rows!r}")
    index = (r != t).nonzero().flatten() if rows == "r_neq_t" else None
    return _prediction_and_target(model, z, r, t, v, cond, backend, fd_step, precision, index)[1]


def _prediction_and_target(model, z, r, t, v, cond, backend, fd_step, precision="fp32", rows=None, tangent_v=None):
    """(u with gradient, detached float32 target, detached JVP).

    ``rows`` None: the JVP of every row, returned (B, ...). Otherwise the indices of the rows with r != t:
    only they get a JVP, returned (k, ...) in that order; every other row's target is v.
    ``tangent_v``: the z-tangent of the JVP (default v; improved MeanFlow passes the network's own velocity).
    """
    tangents = (v if tangent_v is None else tangent_v, torch.zeros_like(r), torch.ones_like(t))
    if rows is None:
        u, du_dt = jvp(model, z, r, t, tangents, cond, backend=backend, fd_step=fd_step, precision=precision)
        with autocast_off(z.device):
            gap = expand_like(t - r, z).float()
            target = (v.float() - gap * du_dt.float()).detach()
        return u, target, du_dt
    u, du_dt = jvp_on_rows(model, z, r, t, tangents, cond, rows, backend=backend, fd_step=fd_step,
                           precision=precision)
    with autocast_off(z.device):
        velocity = v.float().detach()
        gap = expand_like((t - r)[rows], du_dt).float()
        # the same elementwise operations as above on the rows with r != t; the others keep v (= v - 0 * JVP)
        target = velocity.index_put((rows,), velocity[rows] - gap * du_dt.float())
    return u, target, du_dt


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
    A share ``class_dropout`` of samples gets the null condition and the plain target. The effective
    guidance scale is w_cfg / (1 - kappa). Conditions are integer class labels (B,) with
    ``null_label``, or any structure described by ``conditions`` (see :mod:`mfkit.core.conditions`).
    """

    null_label: int | None = None
    w_cfg: float = 1.0
    kappa: float = 0.5
    t_min: float = 0.0
    t_max: float = 1.0
    class_dropout: float = 0.1
    conditions: ConditionOps | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.class_dropout < 1.0:
            raise ValueError(f"class_dropout must lie in [0, 1), got {self.class_dropout}")
        if not 0.0 <= self.t_min <= self.t_max <= 1.0:
            raise ValueError(f"guidance window needs 0 <= t_min <= t_max <= 1, got [{self.t_min}, {self.t_max}]")
        if self.kappa >= 1.0:
            raise ValueError(f"kappa must be below 1 (effective scale w_cfg / (1 - kappa)), got {self.kappa}")
        if (self.null_label is None) == (self.conditions is None):
            raise ValueError("guidance needs either null_label (class labels) or conditions (any other kind)")

    @property
    def effective_scale(self) -> float:
        return self.w_cfg / (1.0 - self.kappa)

    @property
    def ops(self) -> ConditionOps:
        """How to null and drop this guidance's conditions."""
        return self.conditions if self.conditions is not None else LabelConditions(self.null_label)


def guided_velocity(
    v: torch.Tensor,
    u_cond: torch.Tensor | None,
    u_null: torch.Tensor | None,
    t: torch.Tensor,
    guidance: Guidance,
    dropped: torch.Tensor | None = None,
) -> torch.Tensor:
    """v_g = w v + kappa u_cond + (1 - w - kappa) u_null inside the t-window (and where not dropped), else v.

    A network term whose weight is zero may be passed as None (it is not needed).
    """
    mixed = guidance.w_cfg * v
    for weight, term in ((guidance.kappa, u_cond), (1 - guidance.w_cfg - guidance.kappa, u_null)):
        if weight != 0:
            if term is None:
                raise ValueError(f"guided_velocity: a network term with weight {weight} is None")
            mixed = mixed + weight * term.to(mixed.dtype)
    active = (t >= guidance.t_min) & (t <= guidance.t_max)
    if dropped is not None:
        active = active & ~dropped
    return torch.where(expand_like(active, v), mixed.to(v.dtype), v)


#: The MeanFlow formulations: the paper's, and improved MeanFlow (the JVP along the network's own velocity).
FORMULATIONS = ("meanflow", "imf")


#: How a schedule over training falls from 1 to 0 (:func:`_falling`).
SCHEDULE_SHAPES = ("cosine", "linear")


@dataclass(frozen=True)
class AlphaCurriculum:
    """alpha-Flow's schedule from flow matching to MeanFlow over training, as a function of progress in [0, 1]
    (the share of training steps done).

    alpha = 1 (trajectory flow matching) up to ``flow_matching_until``, alpha = 0 (MeanFlow with the exact
    JVP) from ``meanflow_from`` on, and in between alpha falls from 1 to 0 along ``shape``: ``"cosine"``
    (0.5 (1 + cos(pi f))) or ``"linear"`` (1 - f), f the fraction of the way between the two points.
    While alpha > 0 a step needs no JVP (two forwards instead), so it is cheaper than a MeanFlow step.
    """

    flow_matching_until: float = 0.25
    meanflow_from: float = 0.75
    shape: str = "cosine"

    def __post_init__(self) -> None:
        if not 0.0 <= self.flow_matching_until <= self.meanflow_from <= 1.0:
            raise ValueError(f"alpha curriculum needs 0 <= flow_matching_until <= meanflow_from <= 1, got "
                             f"{self.flow_matching_until} and {self.meanflow_from}")
        if self.shape not in SCHEDULE_SHAPES:
            raise ValueError(f"alpha curriculum shape must be 'cosine' or 'linear', got {self.shape!r}")

    def alpha(self, progress: float) -> float:
        """alpha at ``progress`` (the share of training done, clamped to [0, 1])."""
        progress = min(max(float(progress), 0.0), 1.0)
        if progress >= self.meanflow_from:
            return 0.0
        if progress <= self.flow_matching_until:
            return 1.0
        fraction = (progress - self.flow_matching_until) / (self.meanflow_from - self.flow_matching_until)
        return _falling(fraction, self.shape)


def _falling(fraction: float, shape: str) -> float:
    """A schedule falling from 1 at ``fraction`` 0 to 0 at 1: ``"cosine"`` 0.5 (1 + cos(pi f)) or ``"linear"``
    1 - f (fraction clamped to [0, 1])."""
    fraction = min(max(float(fraction), 0.0), 1.0)
    return 0.5 * (1.0 + math.cos(math.pi * fraction)) if shape == "cosine" else 1.0 - fraction


#: Smallest alpha by which alpha-Flow's finite-step rows are re-weighted (module docstring).
ALPHA_WEIGHT_FLOOR = 0.01

#: Largest interval-weighting strength: exp(-1000 dt) is already 0 in float32 for dt > 0.11.
MAX_INTERVAL_STRENGTH = 1e3


@dataclass(frozen=True)
class IntervalWeighting:
    """Progressive interval weighting: short intervals first, every interval alike later.

    Each sample's loss term is multiplied by exp(-lambda (t - r)), with lambda = ``strength`` at the start of
    training falling along ``shape`` to 0 at ``balanced_from`` (a share of training steps) and 0 after it;
    rows with r = t always weigh 1. Motivated by Kim et al. (2025, "Understanding, Accelerating, and
    Improving MeanFlow Training"): large-interval average velocities are learned best once the
    instantaneous velocity and short intervals are; this exponential schedule is mfkit's own form of that
    idea, not a formula from the paper. The weights depend on the times alone (not on the batch), so
    several processes each weighting their own rows reproduce one process exactly.
    """

    strength: float = 4.0
    balanced_from: float = 0.5
    shape: str = "cosine"

    def __post_init__(self) -> None:
        if not 0 <= self.strength <= MAX_INTERVAL_STRENGTH:  # also refuses nan; bounded so the weights stay finite
            raise ValueError(f"interval weighting strength must be between 0 and {MAX_INTERVAL_STRENGTH:g}, "
                             f"got {self.strength}")
        if not 0.0 < self.balanced_from <= 1.0:
            raise ValueError(f"interval weighting balanced_from is a share of training in (0, 1], "
                             f"got {self.balanced_from}")
        if self.shape not in SCHEDULE_SHAPES:
            raise ValueError(f"interval weighting shape must be 'cosine' or 'linear', got {self.shape!r}")

    def rate(self, progress: float) -> float:
        """lambda at ``progress`` (the share of training done)."""
        return self.strength * _falling(float(progress) / self.balanced_from, self.shape)

    def weights(self, r: torch.Tensor, t: torch.Tensor, progress: float) -> torch.Tensor:
        """exp(-lambda(progress) (t - r)) in float32, shape (B,)."""
        return torch.exp(-self.rate(progress) * (t.float() - r.float()))


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
    t, r: the times used (B,); per_sample_error: err (B,); alpha: the alpha-Flow curriculum's alpha at this
    call (None without a curriculum); interval_weight: mean interval weight (None without interval weighting).
    """

    loss: torch.Tensor
    mse: torch.Tensor
    adaptive_weight: torch.Tensor
    r_neq_t_share: torch.Tensor
    t: torch.Tensor
    r: torch.Tensor
    per_sample_error: torch.Tensor
    alpha: float | None = None
    interval_weight: torch.Tensor | None = None

    def metrics(self) -> dict[str, float]:
        """Scalar diagnostics as plain floats, for logging."""
        metrics = {
            "loss": float(self.loss.detach()),
            "mse": float(self.mse),
            "adaptive_weight": float(self.adaptive_weight),
            "r_neq_t_share": float(self.r_neq_t_share),
        }
        if self.alpha is not None:
            metrics["alpha"] = self.alpha
        if self.interval_weight is not None:
            metrics["interval_weight"] = float(self.interval_weight)
        return metrics


@dataclass
class MeanFlow:
    """The MeanFlow objective. Call as ``objective(model, x, cond=None)`` -> :class:`ObjectiveOutput`.

    Defaults are the paper's ImageNet settings: (t, r) from LN(-0.4, 1) with 25% of samples r != t,
    adaptive weight p = 1, c = 1e-2, exact forward-mode JVP in float32. ``MeanFlow.preset("cifar10")``
    gives the CIFAR-10 settings. ``guidance`` folds classifier-free guidance into training (class labels
    only). ``r_neq_t_share`` is a flat shortcut for ``times.r_neq_t_share``.

    ``jvp_precision``: ``"fp32"`` (default) keeps the JVP, the guidance passes and the target in float32
    under autocast; ``"tf32"`` does too, with the float32 matrix products of those passes on CUDA's TF32
    tensor cores; ``"autocast"`` opts into a JVP under the ambient autocast (see docs/concepts.md).
    ``jvp_guard``: on the first ``jvp_guard`` calls that have samples with r != t, stop with
    :class:`mfkit.core.jvp.JVPError` if the JVP is identically zero or not finite (0: off).
    ``jvp_rows``: ``"auto"`` (default) computes the JVP only for the rows with r != t (the others, whose
    target is v, get a plain forward) when the backbone treats rows apart and draws no random numbers,
    else for every row; ``"all"``: every row; ``"r_neq_t"``: only r != t rows, unchecked. Loss and
    gradients are the same up to float rounding (see :mod:`mfkit.core.rows` for the detection rule;
    ``jvp_rows_reason`` says why the last "auto" call used every row).

    ``coupling``: ``"independent"`` (default) or ``"ot"`` (minibatch optimal transport within groups of
    equal conditions, :mod:`mfkit.core.coupling`); ``coupling_block``: at most that many rows per exact
    assignment (None: the whole group; a bound keeps the cost linear in the batch). ``set_coupling``:
    ``"independent"`` (default) or ``"ot"`` (for set-valued samples: each sample's elements along sample axis
    ``set_axis`` are reordered to meet the noise elements by an exact assignment; after ``coupling``). ``formulation``:
    ``"meanflow"`` (default) or ``"imf"`` (the JVP tangent is the network's own velocity u(z_t, t, t)). ``alpha``: an :class:`AlphaCurriculum`;
    ``interval_weighting``: an :class:`IntervalWeighting`; with either, calls must pass ``progress=`` (the share
    of training done).
    """

    times: TimePairSampler = field(default_factory=TimePairSampler)
    adaptive_p: float = 1.0
    adaptive_c: float = 1e-2
    guidance: Guidance | None = None
    jvp_backend: str = "forward_ad"
    fd_step: float = 1e-3
    jvp_precision: str = "fp32"
    jvp_guard: int = 3
    jvp_rows: str = "auto"
    coupling: str = "independent"
    coupling_block: int | None = None
    set_coupling: str = "independent"
    set_axis: int | None = None
    formulation: str = "meanflow"
    alpha: AlphaCurriculum | None = None
    interval_weighting: IntervalWeighting | None = None
    r_neq_t_share: InitVar[float | None] = None
    _guard_left: int = field(default=0, init=False, repr=False, compare=False)
    _batch_statistics_checked: bool = field(default=False, init=False, repr=False, compare=False)
    _planner: RowPlanner = field(default_factory=RowPlanner, init=False, repr=False, compare=False)

    def __post_init__(self, r_neq_t_share: float | None = None) -> None:
        if r_neq_t_share is not None:
            self.times = replace(self.times, r_neq_t_share=r_neq_t_share)
        self._check_common()
        if self.jvp_backend not in JVP_BACKENDS:
            raise ValueError(f"unknown JVP backend {self.jvp_backend!r}; choose one of {', '.join(JVP_BACKENDS)}")
        if self.jvp_precision not in JVP_PRECISIONS:
            raise ValueError(f"unknown jvp_precision {self.jvp_precision!r}; choose one of {', '.join(JVP_PRECISIONS)}")
        if not self.fd_step > 0:
            raise ValueError(f"fd_step must be positive, got {self.fd_step}")
        if self.jvp_guard < 0:
            raise ValueError(f"jvp_guard counts calls and must be >= 0, got {self.jvp_guard}")
        if self.formulation not in FORMULATIONS:
            raise ValueError(f"unknown formulation {self.formulation!r}; choose one of {', '.join(FORMULATIONS)}")
        if self.jvp_rows not in JVP_ROWS:
            raise ValueError(f"unknown jvp_rows {self.jvp_rows!r}; choose one of {', '.join(JVP_ROWS)}")
        self._guard_left = self.jvp_guard

    def _check_common(self) -> None:
        for name, kind in (("alpha", AlphaCurriculum), ("interval_weighting", IntervalWeighting)):
            if getattr(self, name, None) is not None and not isinstance(getattr(self, name), kind):
                raise ValueError(f"{name} must be a mfkit.{kind.__name__} (or None), got {getattr(self, name)!r}")
        if self.adaptive_p < 0 or self.adaptive_c <= 0:
            raise ValueError(f"adaptive weight needs p >= 0 and c > 0, got p={self.adaptive_p}, c={self.adaptive_c}")
        if self.coupling not in COUPLINGS:
            raise ValueError(f"unknown coupling {self.coupling!r}; choose one of {', '.join(COUPLINGS)}")
        if self.coupling_block is not None and self.coupling_block < 2:
            raise ValueError(f"coupling_block bounds the rows of one assignment and must be at least 2 (or None), "
                             f"got {self.coupling_block}")
        if self.set_coupling not in SET_COUPLINGS:
            raise ValueError(f"unknown set_coupling {self.set_coupling!r}; choose one of {', '.join(SET_COUPLINGS)}")
        if self.set_coupling != "independent" and self.set_axis is None:
            raise ValueError(f"set_coupling {self.set_coupling!r} reorders each sample's set elements and needs "
                             f"set_axis (the sample axis that holds them, e.g. 0 for point clouds (N, 3))")
        if self.set_axis is not None and (not isinstance(self.set_axis, int) or isinstance(self.set_axis, bool)):
            raise ValueError(f"set_axis must be an int (a sample axis), got {self.set_axis!r}")
        if self.set_axis is not None and self.set_axis < 0:
            raise ValueError(f"set_axis counts sample axes from 0 (the batch axis excluded), got {self.set_axis}")

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "MeanFlow":
        """Settings by data scale: the paper's ``"imagenet"`` or ``"cifar10"``, or mfkit's ``"small"`` (small data,
        CPU budgets: OT coupling; see :mod:`mfkit.core.presets`); keyword overrides win (flat
        ``r_neq_t_share=`` included). The optimisation settings that go with a preset are
        ``mfkit.core.presets.training_settings(name)``."""
        return replace(cls(), **{**presets.objective_settings(name), **overrides})

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

    def prediction_and_target(self, model, z, r, t, v, cond, alpha: float = 0.0):
        """(u (B, ...) with gradient, detached float32 target (B, ...)) for z, v (B, ...), r, t (B,).

        ``alpha`` > 0: alpha-Flow's finite-step target (no JVP); 0: the exact MeanFlow (or iMF) target.
        """
        moving = r != t
        if not self._batch_statistics_checked:  # until it warned or saw the backbone in training mode
            warned = warn_about_batch_statistics(model)
            self._batch_statistics_checked = warned or bool(getattr(innermost(model), "training", True))
        if alpha > 0:
            return self._finite_step_prediction_and_target(model, z, r, t, v, cond, moving, alpha)
        rows = self._jvp_rows_for(model, z, r, t, cond, moving)
        tangent_v = self._own_velocity(model, z, t, v, cond, moving) if self.formulation == "imf" else None
        u, target, du = _prediction_and_target(model, z, r, t, v, cond, self.jvp_backend, self.fd_step,
                                               self.jvp_precision, rows, tangent_v)
        if self._guard_left > 0:
            self._guard(du if rows is not None else du[moving], u)
        return u, target

    def _no_grad_forward(self, model, z, r, t, cond):
        """u(z, r, t | cond) without gradient, the network in eval mode and, under autocast with
        jvp_precision fp32 or tf32, in float32 (autocast off), as the guidance terms are computed;
        without autocast in the ambient settings, as the JVP."""
        inner = without_wrapper(model)
        with torch.no_grad(), _eval_mode(inner), float32_pass(apart_precision(self.jvp_precision, z.device), z.device):
            return call_model(inner, z, r, t, cond)

    def _own_velocity(self, model, z, t, v, cond, moving):
        """iMF's JVP tangent (B, ...): sg(u(z_t, t, t)) on the rows with r != t; v elsewhere (those rows'
        JVP is multiplied by t - r = 0, so their tangent does not matter)."""
        index = moving.nonzero().flatten()
        if index.numel() == 0:
            return v
        u_tt = self._no_grad_forward(model, z[index], t[index], t[index], take_rows(cond, index, z.shape[0]))
        return v.index_put((index,), u_tt.to(v.dtype))

    def _finite_step_prediction_and_target(self, model, z, r, t, v, cond, moving, alpha):
        """alpha-Flow: u_tgt = alpha v + (1 - alpha) sg(u(z_s, r, s)) with s = t - alpha (t - r) and
        z_s = z - alpha (t - r) v on the rows with r != t; u_tgt = v on the others."""
        u = call_model(model, z, r, t, cond)
        index = moving.nonzero().flatten()
        with autocast_off(z.device):
            target = v.float().detach()
            if index.numel():
                step = alpha * (t[index] - r[index])
                s = t[index] - step
                z_s = z[index] - expand_like(step, z[index]).to(z.dtype) * v[index]
                later = self._no_grad_forward(model, z_s.detach(), r[index], s, take_rows(cond, index, z.shape[0]))
                target = target.index_put((index,), alpha * target[index] + (1 - alpha) * later.float())
        return u, target

    @property
    def jvp_rows_reason(self) -> str | None:
        """Why the last call with ``jvp_rows="auto"`` found the backbone not row-separable and took the JVP
        of every row; None when it split, when every row had r != t, or when ``jvp_rows`` is not auto."""
        return self._planner.last_reason

    def _jvp_rows_for(self, model, z, r, t, cond, moving):
        """None (every row gets a JVP) or the indices of the rows with r != t (only they get one).

        Reads the number of r != t rows on the host: one device synchronisation per call.
        """
        self._planner.last_reason = None
        if self.jvp_rows == "all":
            return None
        index = moving.nonzero().flatten()
        if index.numel() == moving.numel():
            return None
        if self.jvp_rows == "auto":
            probe_rows = index if index.numel() else torch.arange((moving.numel() + 1) // 2, device=z.device)
            if not self._planner.separable(model, z, r, t, cond, probe_rows):
                return None
        return index

    def __call__(
        self,
        model: Any,
        x: torch.Tensor,
        cond: Any = None,
        *,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        draw: Draw | None = None,
        progress: float | None = None,
    ) -> ObjectiveOutput:
        """One loss evaluation on a batch x (B, ...) with optional conditions (B,).

        Randomness comes from ``draw`` when given (see :meth:`draw`), else is drawn with ``generator``;
        ``noise`` fixes the noise alone (before any coupling re-pairs it). ``progress``: the share of
        training done, in [0, 1]; needed (only) by an alpha curriculum or interval weighting.
        """
        alpha = self.alpha_at(progress)
        if self.interval_weighting is not None:
            _require_progress(progress, "interval weighting")
        if draw is None:
            draw = self.draw(x.shape, device=x.device, dtype=x.dtype, generator=generator)
            if noise is not None:
                draw.noise = noise
        noise, t, r = draw.noise.to(x.dtype), draw.t.to(x.dtype), draw.r.to(x.dtype)
        noise = couple(self.coupling, x, noise, cond, self.coupling_block)
        x = align_sets(self.set_coupling, x, noise, self.set_axis)
        z = interpolate(x, noise, t)
        v = conditional_velocity(x, noise)
        if self.guidance is not None:
            cond, v = self._guide(model, z, t, v, cond, draw.dropped)
        u, target = self.prediction_and_target(model, z, r, t, v, cond, alpha or 0.0)
        with autocast_off(x.device):
            err = sum_non_batch((u.float() - target).pow(2))
            weight = adaptive_weight(err, self.adaptive_p, self.adaptive_c)
            if alpha:  # alpha-Flow's finite-step rows: residual ~ alpha x MeanFlow's (module docstring)
                finite = adaptive_weight(err / alpha**2, self.adaptive_p, self.adaptive_c)
                weight = torch.where(r != t, finite / max(alpha, ALPHA_WEIGHT_FLOOR), weight)
            interval = None if self.interval_weighting is None else self.interval_weighting.weights(r, t, progress)
            loss = (weight * err if interval is None else weight * interval * err).mean()
        return ObjectiveOutput(
            loss=loss,
            mse=err.detach().mean() / x[0].numel(),
            adaptive_weight=weight.mean(),
            r_neq_t_share=(r != t).float().mean(),
            t=t,
            r=r,
            per_sample_error=err.detach(),
            alpha=alpha,
            interval_weight=None if interval is None else interval.mean(),
        )

    def alpha_at(self, progress: float | None) -> float | None:
        """The alpha curriculum's alpha at ``progress`` (None without a curriculum)."""
        if self.alpha is None:
            return None
        _require_progress(progress, "an alpha curriculum")
        return self.alpha.alpha(progress)

    def _guard(self, rows: torch.Tensor, u: torch.Tensor) -> None:
        """Stop a run whose JVP is silently wrong: identically zero (for r != t) or not finite.

        ``rows``: the JVP of the rows with r != t (whichever rows got one). A network whose output is
        itself identically zero (a zero-initialised output layer, as in adaLN-Zero DiTs at step 0)
        legitimately has a zero JVP: such calls are not counted.
        """
        if self._guard_left <= 0:
            return
        if rows.shape[0] == 0 or not bool(u.detach().any()):
            return
        self._guard_left -= 1
        rows = rows.detach()
        if not bool(torch.isfinite(rows).all()):
            raise JVPError(
                f"the JVP (backend {self.jvp_backend!r}, precision {self.jvp_precision!r}) is NaN or infinite "
                f"on the first steps, so every MeanFlow target would be wrong. Likely causes: half precision "
                f"overflow (keep jvp_precision=fp32), an attention mask that blocks every key of a query, or "
                f"a layer whose derivative is undefined at its input; compare with jvp_backend=nograd")
        if not bool(rows.any()):
            raise JVPError(
                f"the JVP (backend {self.jvp_backend!r}) is exactly zero for every sample with r != t, so the "
                f"target would silently become v (plain flow matching). Likely causes: torch.no_grad, "
                f".detach() or .item() on z, r or t inside the network, a custom autograd.Function without a "
                f"jvp, or compiled code the backend cannot see through; try jvp_backend=nograd or "
                f"finite_difference. If the network really ignores z and t, set jvp_guard=0")

    def _guide(self, model, z, t, v, cond, dropped):
        """Drop labels to null and replace v by the guided velocity.

        The network terms u(z, t, t | c) and u(z, t, t | null) run without gradient, with the network in
        eval mode (no dropout, no running-statistics updates) and, under jvp_precision fp32 or tf32, with
        autocast off; a term whose weight is zero is not computed.
        """
        guidance = self.guidance
        if cond is None:
            raise ValueError("guidance is set but the batch has no conditions")
        if dropped is None:  # a Draw made without guidance: drop nothing
            dropped = torch.zeros(batch_size_of(cond), dtype=torch.bool, device=z.device)
        cond = guidance.ops.where_dropped(cond, dropped)
        null_weight = 1 - guidance.w_cfg - guidance.kappa
        if guidance.kappa == 0 and null_weight == 0:
            return cond, v
        u_cond = self._no_grad_forward(model, z, t, t, cond) if guidance.kappa != 0 else None
        u_null = self._no_grad_forward(model, z, t, t, guidance.ops.null_like(cond)) if null_weight != 0 else None
        return cond, guided_velocity(v, u_cond, u_null, t, guidance, dropped)


def _require_progress(progress: float | None, what: str) -> None:
    if progress is None:
        raise ValueError(f"this objective has {what}, which depends on how far training is: "
                         f"pass progress= (the share of training steps done, 0 to 1) with every call")


@contextlib.contextmanager
def _eval_mode(model: Any) -> Iterator[None]:
    """The network in eval mode for the block (if it is a module), then back to its previous mode."""
    if not isinstance(model, nn.Module):
        yield
        return
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


@dataclass
class FlowMatching(MeanFlow):
    """Flow matching: the r = t special case of MeanFlow (target v, no JVP). Same interface.

    Defaults: t from LN(-0.4, 1), plain L2 (adaptive_p = 0); set adaptive_p to compare like with like.
    Only ``times.t_dist`` is used; settings that would have no effect (a JVP backend, precision or rows,
    ``fd_step``, a share of r != t, an r distribution, a formulation, an alpha curriculum or interval weighting) are refused
    rather than ignored. ``coupling="ot"`` gives OT-CFM (flow matching on minibatch optimal-transport pairs).
    """

    times: TimePairSampler = field(default_factory=lambda: TimePairSampler(LogitNormal(), r_neq_t_share=0.0))
    adaptive_p: float = 0.0
    jvp_backend: str | None = None
    fd_step: float | None = None
    jvp_precision: str | None = None
    jvp_guard: int = 0
    jvp_rows: str | None = None
    formulation: str | None = None

    def __post_init__(self, r_neq_t_share: float | None = None) -> None:
        ignored = [name for name in ("jvp_backend", "fd_step", "jvp_precision", "jvp_rows", "formulation", "alpha",
                                     "interval_weighting")
                   if getattr(self, name) is not None]
        self._check_common()
        if self.jvp_guard:
            ignored.append("jvp_guard")
        if r_neq_t_share or self.times.r_neq_t_share:
            ignored.append("r_neq_t_share")
        if self.times.r_dist is not None:
            ignored.append("times.r_dist")
        if ignored:
            raise ValueError(f"FlowMatching computes no JVP and uses only times.t_dist (r = t); remove "
                             f"{', '.join(ignored)} or use MeanFlow")

    def sample_times(self, n, device, generator):
        t = self.times.t_dist.sample(n, device=device, generator=generator)
        return t, t

    def prediction_and_target(self, model, z, r, t, v, cond, alpha: float = 0.0):
        return call_model(model, z, r, t, cond), v.float().detach()
