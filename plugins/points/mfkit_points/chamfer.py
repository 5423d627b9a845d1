"""Pairwise Chamfer distances between many clouds, in float32 through matrix products.

CD(a, b) = mean_i min_j |a_i - b_j|^2 + mean_j min_i |a_i - b_j|^2 (squared distances, averaged per
cloud: the PointFlow convention of :func:`mfkit.metrics.chamfer_distance`, which computes the same in
float64 with ``cdist``). Here |a_i - b_j|^2 = |a_i|^2 + |b_j|^2 - 2 a_i . b_j, one batched matrix
product per cloud of ``a``: about 3x faster on a CPU, equal to 1e-6 for clouds in the unit sphere.
A square matrix of one set against itself is computed once per pair (it is symmetric).
"""
from __future__ import annotations

import torch


def chamfer_matrix(a: torch.Tensor, b: torch.Tensor | None = None, budget: int = 1 << 24) -> torch.Tensor:
    """(len(a), len(b)) Chamfer distances between clouds a (A, N, d) and b (B, M, d); b = None: a against
    itself (symmetric, zero diagonal). ``budget`` bounds the point pairs held at once."""
    same = b is None
    b = a if same else b
    a, b = a.float(), b.float()
    a_sq, b_sq = (a * a).sum(-1), (b * b).sum(-1)  # (A, N), (B, M)
    out = torch.zeros(a.shape[0], b.shape[0], device=a.device)
    chunk = max(1, budget // max(1, a.shape[1] * b.shape[1]))
    for i in range(a.shape[0]):
        first = i + 1 if same else 0
        for j in range(first, b.shape[0], chunk):
            block = b[j:j + chunk]
            d = torch.baddbmm(a_sq[i][None, :, None] + b_sq[j:j + chunk][:, None, :], a[i].expand(len(block), -1, -1),
                              block.transpose(1, 2), alpha=-2.0).clamp_(min=0)  # (chunk, N, M)
            out[i, j:j + len(block)] = d.amin(dim=2).mean(dim=1) + d.amin(dim=1).mean(dim=1)
    if same:
        out = out + out.T
    return out
