"""The ``toy2d`` evaluator: sliced 2-Wasserstein, unbiased RBF-mixture MMD and energy distance of 2-D
points, all lower-is-better, against at most ``max_reference`` real points."""
from __future__ import annotations

from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from mfkit.metrics import energy_distance, energy_within, mmd_unbiased, mmd_within, sliced_wasserstein
from mfkit.plugins.spec import Evaluator, EvaluatorSpec, Modality, PluginContext


class Toy2dEvalParams(BaseModel):
    """Parameters of the toy2d evaluator."""

    model_config = ConfigDict(extra="forbid")
    projections: int = Field(256, gt=0, description="random directions of the sliced Wasserstein distance")
    bandwidths: tuple[float, ...] = Field((0.1, 0.5, 1.0, 2.0), min_length=1,
                                          description="RBF bandwidths of the MMD mixture (data units)")
    max_reference: int = Field(4000, ge=2, description="real points compared with (`mfkit eval` loads a seeded "
                                                       "random subset of this many; score() takes the first)")
    max_samples: int = Field(4000, ge=2, description="samples compared (`mfkit eval` draws no more; score() takes "
                                                     "the first)")


class Toy2dEvaluator(Evaluator):
    """Distances between point sets in the plane (model tensors (B, 2) are the points themselves)."""

    metrics = {"sliced_w2": "lower", "mmd": "lower", "energy": "lower"}

    def __init__(self, params: Toy2dEvalParams, modality: Modality | None = None,
                 context: PluginContext | None = None) -> None:
        self.params = params
        self.max_samples, self.max_reference = params.max_samples, params.max_reference
        self.seed = context.seed if context is not None else 0
        self._reference: tuple[torch.Tensor, int, float, float] | None = None

    def _within(self, real: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        """The reference-only terms of the MMD and energy distance, computed once per reference tensor
        (the tensor is kept, so its identity and version cannot be taken by another one)."""
        cached = self._reference
        if cached is None or cached[0] is not real or cached[1] != real._version:
            cached = self._reference = (real, real._version, mmd_within(y, self.params.bandwidths), energy_within(y))
        return cached[2], cached[3]

    def score(self, samples: torch.Tensor, cond: Any, real: torch.Tensor, real_cond: Any) -> dict[str, float]:
        x = samples[: self.params.max_samples].reshape(-1, 2).double().cpu()
        y = real[: self.params.max_reference].reshape(-1, 2).double().cpu()
        if not bool(torch.isfinite(x).all()):
            return {name: float("inf") for name in self.metrics}
        within_mmd, within_energy = self._within(real, y)
        generator = torch.Generator().manual_seed(self.seed)
        return {"sliced_w2": sliced_wasserstein(x, y, self.params.projections, generator=generator),
                "mmd": mmd_unbiased(x, y, self.params.bandwidths, within_b=within_mmd),
                "energy": energy_distance(x, y, within_b=within_energy)}


SPEC = EvaluatorSpec(
    name="toy2d",
    description="2-D points: sliced W2, unbiased RBF-mixture MMD, energy distance (all: lower is better)",
    factory=Toy2dEvaluator,
    params_model=Toy2dEvalParams,
    modalities=("toy2d",),
)
