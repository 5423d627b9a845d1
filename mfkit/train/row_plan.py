r"""``objective.jvp_rows: fastest``: of the two exact JVP row plans, the one that is faster on the run's backbone.

``jvp_rows: auto`` gives the JVP only to the rows with r != t (two partial passes: a forward with tangent
of those rows, a plain forward of the others) when the backbone treats rows apart
(:mod:`mfkit.core.rows`); ``all`` gives every row a JVP in one pass. Both give the same loss and gradients
up to float rounding, but not the same cost: on a compute-bound backbone the split saves most of the
tangent's work, while on a small, overhead-bound one its two passes double the per-layer overhead and can
cost more than the whole-batch JVP (docs/benchmarks.md: the 8x8 digits U-Net, 2.08x against 1.71x flow
matching's step on a CPU).

With ``fastest`` the trainer times one training step (objective and backward, no optimiser step) of each
plan on a real batch before the first step, interleaved, :data:`ROUNDS` times after a warm-up round, and
compares the medians: it runs ``auto`` (the split, still subject to the separability checks) unless the
whole batch is faster by more than :data:`MARGIN`, then ``all``. The choice is stored in every checkpoint
and reused on resume, so a resumed run computes exactly what the run it continues did. Two fresh runs of
one recipe may choose differently (timings vary), and so differ by float rounding: ``auto`` (the
default) and ``all`` are deterministic.

Timing leaves the run untouched: parameters are not stepped, gradients are restored, buffers are
restored and the random number generators are forked. Time is the process's CPU time on the CPU (other
jobs on the machine do not inflate it) and synchronised wall time on CUDA. A training loop of one's own
can call :func:`time_row_plans` and set the objective's ``jvp_rows`` to :attr:`RowPlanTiming.choice`.
"""
from __future__ import annotations

import statistics
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from typing import Any, Callable

import torch
from torch import nn

#: the whole batch replaces the split only when it is faster by more than this share
MARGIN = 0.05
#: timed steps per plan (after one warm-up step of each)
ROUNDS = 3


@dataclass(frozen=True)
class RowPlanTiming:
    """Median seconds per training step with the JVP on the r != t rows only (``split_s``) and on every row
    (``all_s``); :attr:`choice` is the ``jvp_rows`` setting the run takes."""

    split_s: float
    all_s: float

    @property
    def choice(self) -> str:
        return "all" if self.all_s < (1 - MARGIN) * self.split_s else "auto"

    def describe(self) -> str:
        split, every = 1000 * self.split_s, 1000 * self.all_s
        if self.choice == "all":
            return (f"jvp_rows fastest: the JVP of every row ({every:.0f} ms a step) is faster here than on the "
                    f"r != t rows alone ({split:.0f} ms); this run uses every row")
        return (f"jvp_rows fastest: the JVP on the r != t rows alone ({split:.0f} ms a step, every row "
                f"{every:.0f} ms); this run splits the batch")


def has_two_plans(objective: Any) -> bool:
    """Whether ``objective`` has two row plans to choose from: a MeanFlow objective that draws rows with
    r = t (flow matching has no JVP; with every row r != t both plans are the whole batch)."""
    times = getattr(objective, "times", None)
    return getattr(objective, "jvp_rows", None) is not None and times is not None and times.r_neq_t_share < 1


def _clock(device: torch.device) -> Callable[[], float]:
    if device.type == "cuda":
        def wall() -> float:
            torch.cuda.synchronize(device)
            return time.perf_counter()
        return wall
    return time.process_time


def time_row_plans(model: nn.Module, objective: Any, x: torch.Tensor, cond: Any, *,
                   autocast: Callable[[], AbstractContextManager] = nullcontext, rounds: int = ROUNDS,
                   clock: Callable[[], float] | None = None) -> RowPlanTiming:
    """Time one objective + backward step on x (B, ...) with ``jvp_rows="r_neq_t"`` and with ``"all"``.

    Both plans see the same draw (noise, times) from a fixed seed; alpha curricula are timed at their end
    (the exact JVP). ``model``'s parameters, buffers, gradients and the global random state are as before.
    """
    device = x.device
    clock = clock or _clock(device)
    plans = {"split": replace(objective, jvp_rows="r_neq_t", jvp_guard=0),
             "all": replace(objective, jvp_rows="all", jvp_guard=0)}
    draw = objective.draw(x.shape, device=device, dtype=x.dtype,
                          generator=torch.Generator(device).manual_seed(0))
    buffers = {name: value.detach().clone() for name, value in model.named_buffers()}
    grads = [None if p.grad is None else p.grad.detach().clone() for p in model.parameters()]
    seconds: dict[str, list[float]] = {name: [] for name in plans}
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            for round_ in range(rounds + 1):
                for name, plan in plans.items():
                    start = clock()
                    with autocast():
                        loss = plan(model, x, cond, draw=draw, progress=1.0).loss
                    loss.backward()
                    elapsed = clock() - start
                    model.zero_grad(set_to_none=True)
                    if round_:
                        seconds[name].append(elapsed)
    finally:
        with torch.no_grad():
            for name, value in model.named_buffers():
                if name in buffers:
                    value.copy_(buffers[name])
        for parameter, grad in zip(model.parameters(), grads):
            parameter.grad = grad
    return RowPlanTiming(statistics.median(seconds["split"]), statistics.median(seconds["all"]))
