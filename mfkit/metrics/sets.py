"""Set metrics for any distance between items (point clouds, meshes, sequences): MMD, COV and 1-NNA.

With generated items G (N of them), reference items R (M) and a distance d (Achlioptas et al. 2018;
Yang et al. 2019, PointFlow):

* MMD (minimum matching distance): mean over r in R of min over g in G of d(g, r)   (lower is better)
* COV (coverage): share of R that is the nearest reference item of some g in G     (higher is better)
* 1-NNA: accuracy of the leave-one-out 1-nearest-neighbour classifier telling G from R in G u R;
  0.5 is ideal (the sets are indistinguishable), 1.0 means fully separable       (closer to 0.5 is better)

``distance(a (n, ...), b (m, ...)) -> (n, m)`` is any batched distance, e.g. :func:`chamfer_distance`.
"""
from __future__ import annotations

from typing import Callable

import torch

Distance = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def pairwise(distance: Distance, a: torch.Tensor, b: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    """The (N, M) matrix distance(a, b), computed ``chunk`` rows of a at a time, in float64."""
    rows = [distance(a[start:start + chunk], b).to(torch.float64) for start in range(0, a.shape[0], chunk)]
    return torch.cat(rows) if rows else torch.zeros(0, b.shape[0], dtype=torch.float64)


def chamfer_distance(a: torch.Tensor, b: torch.Tensor, budget: int = 1 << 23) -> torch.Tensor:
    """Chamfer distance between every cloud of a (N, P, 3) and every cloud of b (M, Q, 3) -> (N, M):

        CD(X, Y) = mean_{x in X} min_{y in Y} |x - y|^2 + mean_{y in Y} min_{x in X} |x - y|^2

    (squared distances, averaged per cloud, as in PointFlow). Any point dimension works, not only 3.
    ``budget`` bounds the number of point pairs held at once.
    """
    if a.ndim != 3 or b.ndim != 3 or a.shape[2] != b.shape[2]:
        raise ValueError(f"point clouds must be (N, P, d) and (M, Q, d), got {tuple(a.shape)} and {tuple(b.shape)}")
    a64, b64 = a.to(torch.float64), b.to(torch.float64)
    per_pair = a.shape[1] * b.shape[1]
    cols = max(1, budget // max(per_pair, 1))
    result = torch.empty(a.shape[0], b.shape[0], dtype=torch.float64, device=a.device)
    for i in range(a.shape[0]):
        for start in range(0, b.shape[0], cols):
            clouds = b64[start:start + cols]                                   # (m, Q, d)
            d2 = torch.cdist(a64[i].expand(clouds.shape[0], -1, -1), clouds).pow(2)  # (m, P, Q)
            result[i, start:start + cols] = d2.min(dim=2).values.mean(1) + d2.min(dim=1).values.mean(1)
    return result


def set_metrics_from_matrices(d_gr: torch.Tensor, d_gg: torch.Tensor, d_rr: torch.Tensor) -> dict[str, float]:
    """MMD, COV and 1-NNA from the distance matrices generated-reference (N, M), generated-generated (N, N)
    and reference-reference (M, M)."""
    n, m = d_gr.shape
    if d_gg.shape != (n, n) or d_rr.shape != (m, m):
        raise ValueError(f"matrix shapes disagree: {tuple(d_gr.shape)}, {tuple(d_gg.shape)}, {tuple(d_rr.shape)}")
    if n < 1 or m < 1 or n + m < 3:
        raise ValueError("set metrics need at least one item per set and three in all")
    mmd = d_gr.min(dim=0).values.mean()
    coverage = d_gr.argmin(dim=1).unique().numel() / m
    full = torch.cat([torch.cat([d_gg, d_gr], 1), torch.cat([d_gr.T, d_rr], 1)], 0).clone()
    full.fill_diagonal_(float("inf"))
    labels = torch.cat([torch.zeros(n, dtype=torch.bool), torch.ones(m, dtype=torch.bool)]).to(full.device)
    nearest = full.argmin(dim=1)
    accuracy = (labels[nearest] == labels).double().mean()
    return {"mmd": float(mmd), "cov": float(coverage), "1nna": float(accuracy)}


def set_metrics(generated: torch.Tensor, reference: torch.Tensor, distance: Distance, chunk: int = 64) -> dict[str, float]:
    """MMD, COV and 1-NNA (see the module) of ``generated`` (N, ...) against ``reference`` (M, ...)."""
    return set_metrics_from_matrices(pairwise(distance, generated, reference, chunk),
                                     pairwise(distance, generated, generated, chunk),
                                     pairwise(distance, reference, reference, chunk))
