r"""Couplings of noise and data within a batch.

``independent`` (the default everywhere): data row i meets noise row i, as drawn.

``ot``: minibatch optimal transport. The batch's noise rows are permuted so that the pairing minimises
the total squared distance sum_i ||x_i - e_pi(i)||^2 (an exact assignment, Jonker-Volgenant through
``scipy.optimize.linear_sum_assignment``). Pairs are made only between rows with equal conditions
(class by class), so the noise that meets each class is still a set of independent N(0, I) draws and a
conditional sampler may start from fresh noise. The paths z_t = (1 - t) x + t e then cross less, the
flow is straighter, and a one-step map has less to learn (Pooladian et al. 2023; Tong et al. 2024).

Cost: a (n, n) distance matrix per group and an O(n^3) assignment on the CPU (one device-to-host copy
per step on CUDA). Measured single-threaded (2-D or 64-D rows): n = 256 under 10 ms, 1,024 about 0.5 s,
2,048 about 2.5 s, 4,096 12-20 s; class-conditional batches pay per class (1,024 rows in 10 classes:
about 10 x 3 ms). ``benchmarks/coupling_cost.py`` measures it on your machine.

``block``: exact assignments within blocks of at most ``block`` rows of each group (the group cut into
near-equal runs of consecutive rows) instead of one over the whole group. The cost then grows linearly
with the batch (B / block assignments of O(block^3)), the noise each block meets is still a set of
independent N(0, I) draws, and the pairs are optimal within each block: minibatch OT at the block's size
(the minibatch size is the knob of minibatch OT; Fatras et al. 2020).

Set coupling (``set_coupling="ot"``, for data whose samples are sets, e.g. point clouds (B, N, 3)): inside
each sample, the data's elements along the set axis are reordered so that element j meets noise element j
by an exact assignment minimising sum_j ||x_j - e_j||^2. A set reordered is the same data item, and the
noise is used exactly as drawn, so both marginals are untouched; each element's path z_t = (1 - t) x_j + t e_j
then crosses the others' less. Cost: one (N, N) assignment per sample on the CPU (256 elements 3-10 ms,
512 15-60 ms, 1,024 about 0.6 s, depending on the load; ``benchmarks/coupling_cost.py --sets``): a
CPU-sized option. It runs after ``coupling`` (batch pairs first, then elements within each pair), but
batch OT compares rows element by element in their stored order, which for sets says little: use the
set coupling alone on set data.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch

COUPLINGS = ("independent", "ot")
SET_COUPLINGS = ("independent", "ot")


class CouplingError(ValueError):
    """A coupling that cannot be made for this batch (missing scipy, conditions that form no groups)."""


def condition_groups(cond: Any, batch: int) -> torch.Tensor:
    """Group ids (batch,) int64: rows with equal conditions share an id; all zeros without conditions.

    ``cond``: None, a tensor (B, ...) or a mapping / list / tuple of them (rows are equal when every part
    is). Parts without a leading batch dimension are the same for every row and do not split groups.
    """
    parts = list(_batch_parts(cond, batch))
    if not parts:
        return torch.zeros(batch, dtype=torch.long)
    keys = torch.cat([part.detach().reshape(batch, -1).to("cpu", torch.float64) for part in parts], dim=1)
    return torch.unique(keys, dim=0, return_inverse=True)[1]


def _batch_parts(cond: Any, batch: int):
    if isinstance(cond, torch.Tensor):
        if cond.dim() > 0 and cond.shape[0] == batch:
            yield cond
    elif isinstance(cond, Mapping):
        for key in sorted(cond):
            yield from _batch_parts(cond[key], batch)
    elif isinstance(cond, (list, tuple)):
        for value in cond:
            yield from _batch_parts(value, batch)


def exact_assignment(cost: torch.Tensor) -> torch.Tensor:
    """The permutation p (n,) minimising sum_i cost[i, p[i]] for a square cost (n, n), exactly."""
    try:
        from scipy.optimize import linear_sum_assignment
    except ImportError as error:  # pragma: no cover - scipy is a dependency; this guards a broken install
        raise CouplingError("coupling 'ot' needs scipy (pip install scipy), which solves the exact "
                            "assignment; or set objective.coupling: independent") from error
    rows, columns = linear_sum_assignment(cost.detach().to("cpu", torch.float64).numpy())
    permutation = torch.empty(cost.shape[0], dtype=torch.long)
    permutation[torch.as_tensor(rows)] = torch.as_tensor(columns, dtype=torch.long)
    return permutation


def blocks(members: torch.Tensor, block: int | None) -> list[torch.Tensor]:
    """``members`` (n,) cut into ceil(n / block) runs of near-equal length (all of it when block is None)."""
    n = members.numel()
    if block is None or n <= block:
        return [members]
    count = -(-n // block)
    return list(torch.tensor_split(members, count))


def ot_permutation(x: torch.Tensor, noise: torch.Tensor, cond: Any = None, block: int | None = None) -> torch.Tensor:
    """Indices p (B,) such that pairing x[i] with noise[p[i]] minimises sum_i ||x_i - e_p(i)||^2, among
    the pairings that keep every pair inside one group of equal conditions (see :func:`condition_groups`)
    and, with ``block``, inside one block of at most ``block`` rows of a group (see :func:`blocks`).

    x, noise: (B, ...). Returns an int64 permutation on x's device. Rows alone in their group keep their
    noise. Raises :class:`CouplingError` when real-valued conditions put every row in a group of its own
    (continuous conditions): nothing could ever be paired.
    """
    batch = x.shape[0]
    if block is not None and block < 2:
        raise ValueError(f"ot_permutation: block must be at least 2 rows (or None), got {block}")
    if noise.shape != x.shape:
        raise ValueError(f"ot_permutation: noise {tuple(noise.shape)} and data {tuple(x.shape)} differ in shape")
    groups = condition_groups(cond, batch)
    count = int(groups.max()) + 1 if batch else 0
    if batch > 1 and count == batch and any(part.is_floating_point() for part in _batch_parts(cond, batch)):
        # discrete labels may all differ in a small batch (1,000 classes, 32 rows): those rows keep their
        # noise as drawn, a valid coupling; real-valued conditions that all differ would never pair anything
        raise CouplingError("coupling 'ot' pairs noise with data only between rows with equal conditions, and "
                            "every row of this batch has a real-valued condition of its own (continuous "
                            "conditions), so nothing can ever be paired; use objective.coupling: independent")
    # sum_i ||x_i - e_p(i)||^2 = sum ||x||^2 + sum ||e||^2 - 2 sum_i x_i . e_p(i): the first two terms do not
    # depend on p, so the cost -x_i . e_j gives the same assignment without cancellation (in float64)
    flat_x = x.detach().reshape(batch, -1).double()
    flat_noise = noise.detach().reshape(batch, -1).double()
    permutation = torch.arange(batch)
    for group in range(count):
        for members in blocks((groups == group).nonzero().flatten(), block):
            if members.numel() < 2:
                continue
            on_device = members.to(x.device)
            cost = -(flat_x[on_device] @ flat_noise[on_device].T)
            permutation[members] = members[exact_assignment(cost)]
    return permutation.to(x.device)


def couple(kind: str, x: torch.Tensor, noise: torch.Tensor, cond: Any = None, block: int | None = None) -> torch.Tensor:
    """The noise (B, ...) re-paired with x by coupling ``kind`` (``"independent"`` returns it as it is;
    ``block`` bounds the rows of each ``"ot"`` assignment)."""
    if kind == "independent":
        return noise
    if kind == "ot":
        return noise[ot_permutation(x, noise, cond, block)]
    raise ValueError(f"unknown coupling {kind!r}; choose one of {', '.join(COUPLINGS)}")


def set_ot_order(x: torch.Tensor, noise: torch.Tensor, axis: int) -> torch.Tensor:
    """Indices q (B, N): x's elements reordered as x.index_select(axis + 1, q[b]) in each sample b pair element
    j with noise element j so that sum_j ||x_j - e_j||^2 is minimal (an exact assignment per sample).

    x, noise: (B, *sample_shape) with N = sample_shape[axis] set elements; the other sample dimensions form
    each element's features. Returns int64 indices on x's device.
    """
    if noise.shape != x.shape:
        raise ValueError(f"set coupling: noise {tuple(noise.shape)} and data {tuple(x.shape)} differ in shape")
    if not 0 <= axis < x.dim() - 1:
        raise ValueError(f"set coupling: set axis {axis} is not an axis of samples of shape {tuple(x.shape[1:])}")
    batch, count = x.shape[0], x.shape[axis + 1]
    if batch == 0:
        return torch.empty(0, count, dtype=torch.long, device=x.device)
    # (B, N, features) in float64 on the CPU, where the assignment is solved
    elements_x = x.detach().movedim(axis + 1, 1).reshape(batch, count, -1).to("cpu", torch.float64)
    elements_noise = noise.detach().movedim(axis + 1, 1).reshape(batch, count, -1).to("cpu", torch.float64)
    # as for ot_permutation: -x_j . e_k orders pairings exactly as the squared distance does
    cost = -(elements_noise @ elements_x.transpose(1, 2))  # (B, N noise, N data)
    return torch.stack([exact_assignment(cost[b]) for b in range(batch)]).to(x.device)


def align_sets(kind: str, x: torch.Tensor, noise: torch.Tensor, axis: int | None) -> torch.Tensor:
    """x (B, ...) with each sample's set elements (along sample axis ``axis``) reordered to meet the noise
    by set coupling ``kind`` (``"independent"`` returns x as it is); see :func:`set_ot_order`."""
    if kind == "independent":
        return x
    if kind != "ot":
        raise ValueError(f"unknown set coupling {kind!r}; choose one of {', '.join(SET_COUPLINGS)}")
    if axis is None:
        raise ValueError("set coupling 'ot' needs the set axis of the samples (the modality declares none)")
    order = set_ot_order(x, noise, axis)
    index = order.reshape(order.shape + (1,) * (x.dim() - 2))
    moved = x.movedim(axis + 1, 1)
    return moved.gather(1, index.expand_as(moved)).movedim(1, axis + 1)
