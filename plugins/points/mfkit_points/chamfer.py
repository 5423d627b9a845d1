"""Pairwise Chamfer distances between many clouds, in float32 through matrix products.

CD(a, b) = mean_i min_j |a_i - b_j|^2 + mean_j min_i |a_i - b_j|^2 (squared distances, averaged per
cloud: the PointFlow convention of :func:`mfkit.metrics.chamfer_distance`, which computes the same in
float64 with ``cdist``). Here |a_i - b_j|^2 = [-2 a_i, |a_i|^2, 1] . [b_j, 1, |b_j|^2], one batched
matrix product per cloud of ``a``: several times faster than ``cdist`` on a CPU (1.6x faster than adding
the norms to a product of the points, measured), equal to 1e-6 for clouds in the unit sphere.
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
    a_sq, b_sq = (a * a).sum(-1, keepdim=True), (b * b).sum(-1, keepdim=True)  # (A, N, 1), (B, M, 1)
    # [-2a, |a|^2, 1] . [b, 1, |b|^2] = |a - b|^2: one product gives the whole distance block, with no
    # broadcast sum of the norms (the memory traffic that dominated); clamping after the min is the same
    # as clamping every entry before it.
    left = torch.cat([-2 * a, a_sq, torch.ones_like(a_sq)], dim=-1)  # (A, N, d + 2)
    right = torch.cat([b, torch.ones_like(b_sq), b_sq], dim=-1).transpose(1, 2)  # (B, d + 2, M)
    out = torch.zeros(a.shape[0], b.shape[0], device=a.device)
    chunk = max(1, budget // max(1, a.shape[1] * b.shape[1]))
    for i in range(a.shape[0]):
        first = i + 1 if same else 0
        for j in range(first, b.shape[0], chunk):
            d = torch.matmul(left[i], right[j:j + chunk])  # (chunk, N, M)
            out[i, j:j + len(d)] = (d.amin(dim=2).clamp_(min=0).mean(dim=1)
                                    + d.amin(dim=1).clamp_(min=0).mean(dim=1))
    if same:
        out = out + out.T
    return out
