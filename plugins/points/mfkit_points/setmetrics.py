"""Point-cloud generation metrics with the Chamfer distance: MMD, COV and 1-NNA (Achlioptas et al. 2018;
Yang et al. 2019, PointFlow), on CPU or GPU, no weights involved.

Chamfer distance between clouds a (N, 3) and b (M, 3), squared-distance convention:

    CD(a, b) = mean_i min_j |a_i - b_j|^2 + mean_j min_i |a_i - b_j|^2

With samples S and references R (real held-out clouds):

* MMD = mean over r in R of min over s in S of CD(s, r)            (fidelity; lower is better)
* COV = |{nearest r of each s}| / |R|                               (coverage; higher is better, <= 1)
* 1-NNA = accuracy of the leave-one-out 1-nearest-neighbour classifier telling S from R in S u R
  (0.5 is ideal: samples indistinguishable from data; 1.0: always told apart)
"""
from __future__ import annotations

import torch


def chamfer_matrix(a: torch.Tensor, b: torch.Tensor, chunk_elements: int = 2 ** 25) -> torch.Tensor:
    """Pairwise Chamfer distances (len(a), len(b)) between clouds a (A, N, 3) and b (B, M, 3).

    Works through pairs in chunks of about ``chunk_elements`` point-to-point distances (memory bound).
    """
    a, b = a.float(), b.float()
    out = torch.empty(a.shape[0], b.shape[0], device=a.device)
    per_row = max(1, chunk_elements // max(1, a.shape[1] * b.shape[1]))
    for i in range(a.shape[0]):
        for j in range(0, b.shape[0], per_row):
            block = b[j:j + per_row]
            d = torch.cdist(a[i].expand(block.shape[0], -1, -1), block).pow_(2)  # (chunk, N, M)
            out[i, j:j + per_row] = d.amin(dim=2).mean(dim=1) + d.amin(dim=1).mean(dim=1)
    return out


def mmd_cov(samples_to_refs: torch.Tensor) -> tuple[float, float]:
    """MMD and COV from the Chamfer matrix (samples, references)."""
    mmd = samples_to_refs.amin(dim=0).mean().item()
    covered = samples_to_refs.argmin(dim=1).unique().numel()
    return mmd, covered / samples_to_refs.shape[1]


def one_nna(ss: torch.Tensor, sr: torch.Tensor, rr: torch.Tensor) -> float:
    """Leave-one-out 1-NN accuracy on S u R from the Chamfer matrices S-S, S-R and R-R (self excluded)."""
    n_s, n_r = sr.shape
    full = torch.cat([torch.cat([ss, sr], 1), torch.cat([sr.T, rr], 1)], 0).clone()
    full.fill_diagonal_(float("inf"))
    labels = torch.cat([torch.ones(n_s), torch.zeros(n_r)]).to(full.device)
    nearest = full.argmin(dim=1)
    return (labels[nearest] == labels).float().mean().item()


def set_metrics(samples: torch.Tensor, refs: torch.Tensor) -> dict[str, float]:
    """MMD-CD, COV-CD and 1-NNA-CD of clouds ``samples`` (S, N, 3) against ``refs`` (R, M, 3)."""
    sr = chamfer_matrix(samples, refs)
    mmd, cov = mmd_cov(sr)
    nna = one_nna(chamfer_matrix(samples, samples), sr, chamfer_matrix(refs, refs))
    return {"mmd_cd": mmd, "cov_cd": cov, "1nna_cd": nna}
