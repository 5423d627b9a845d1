"""The ``points`` evaluator: MMD, COV and 1-NNA with the Chamfer distance, and per-class accuracy of
conditional samples under a small locally trained PointNet classifier (see :mod:`mfkit_points.classifier`).

The set metrics are :func:`mfkit.metrics.set_metrics_from_matrices` on Chamfer matrices from
:func:`mfkit_points.chamfer.chamfer_matrix` (float32 matrix products: the same figures as
:func:`mfkit.metrics.chamfer_distance`, several times faster on a CPU; the real-real matrix is kept
across the rows of one evaluation).

`mfkit eval` calls :meth:`PointsEvaluator.score` on generated clouds against the held-out split, and
on two halves of real data for the real-vs-real floor. Nothing is downloaded; the classifier is
trained once per data set and cached.
"""
from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch.utils.data import Dataset

from mfkit.metrics import set_metrics_from_matrices
from mfkit.plugins import ClassCondition, Evaluator, EvaluatorSpec, Modality, PluginContext
from mfkit_points.chamfer import chamfer_matrix
from mfkit_points.classifier import PointNetClassifier, predict, train_classifier
from mfkit_points.modality import PointSet


class PointsEvalParams(BaseModel):
    """Parameters of the points evaluator."""

    model_config = ConfigDict(extra="forbid")
    chamfer_points: int | None = Field(None, gt=0, description="compare clouds on at most this many points "
                                                               "(a fixed random subset; null: all)")
    classifier: bool = Field(True, description="score conditional samples with the local point classifier")
    classifier_steps: int = Field(600, gt=0, description="training steps of the classifier (cached)")
    classifier_points: int = Field(256, gt=0, description="points per cloud the classifier sees")
    per_class: bool | None = Field(None, description="report accuracy_<class> for every class (null: when there "
                                                     "are at most 12 classes)")


def _point_subset(clouds: torch.Tensor, points: int | None, seed: int) -> torch.Tensor:
    """The same ``points`` random points of every cloud (all when None or when the clouds are smaller)."""
    if points is None or clouds.shape[1] <= points:
        return clouds
    return clouds[:, torch.randperm(clouds.shape[1], generator=torch.Generator().manual_seed(seed))[:points]]


class PointsEvaluator(Evaluator):
    """Scores clouds (B, N, 3) against real held-out clouds; see the module docstring."""

    def __init__(self, params: PointsEvalParams, modality: Modality, context: PluginContext) -> None:
        self.params, self.modality, self.context = params, modality, context
        condition = modality.condition()
        self.names = condition.names if isinstance(condition, ClassCondition) else None
        self.metrics = {"mmd_cd": "lower", "cov_cd": "higher", "1nna_cd": "lower"}
        if self.names and params.classifier:
            self.metrics.update(class_accuracy="higher", worst_class_accuracy="higher")
            self.per_class = params.per_class if params.per_class is not None else len(self.names) <= 12
            if self.per_class:
                self.metrics.update({f"accuracy_{name}": "higher" for name in self.names})
        self.model: PointNetClassifier | None = None
        self._reference: tuple[str, torch.Tensor] | None = None  # (digest of the real clouds, their R-R matrix)

    def fit(self, train: Dataset) -> None:
        """Train (or load from the cache) the classifier on the training clouds."""
        if not (self.names and self.params.classifier):
            return
        rotation, up_axis = "none", "z"
        if isinstance(train, PointSet):  # unit-sphere clouds; augment in the loss, so the data hash the same
            rotation, up_axis = train.rotation, train.up_axis
            train = PointSet(train.points, train.labels, "none", up_axis)
        self.model = train_classifier(train, len(self.names), self.context.cache_dir, seed=self.context.seed,
                                      steps=self.params.classifier_steps, points=self.params.classifier_points,
                                      rotation=rotation, up_axis=up_axis, device=self.context.device)

    def _clouds(self, x: torch.Tensor) -> torch.Tensor:
        """Model tensors -> clouds in the data's unit-sphere coordinates (the modality's decode)."""
        return torch.as_tensor(np.asarray(self.modality.decode(x)), dtype=torch.float32)

    def _reference_matrix(self, real: torch.Tensor) -> torch.Tensor:
        """The real-real Chamfer matrix, kept while the same real clouds come back (every row of an
        evaluation scores against one reference)."""
        digest = hashlib.sha256(real.detach().cpu().contiguous().numpy().tobytes()).hexdigest()
        if self._reference is None or self._reference[0] != digest:
            self._reference = (digest, chamfer_matrix(real))
        return self._reference[1]

    def score(self, samples: torch.Tensor, cond: Any, real: torch.Tensor, real_cond: Any) -> dict[str, float]:
        """Set metrics (in unit-sphere coordinates) of ``samples`` against ``real``; with class labels
        ``cond``, the share of samples the classifier assigns to their requested class: overall, for the
        worst class among those requested, and per class (NaN for a class no sample asked for, e.g.
        under `mfkit eval --cond`). Samples with the null label count in none of them (all NaN when every
        sample has it)."""
        device, chosen = self.context.device, self.params.chamfer_points
        samples = _point_subset(self._clouds(samples), chosen, self.context.seed).to(device)
        real = _point_subset(self._clouds(real), chosen, self.context.seed).to(device)
        figures = set_metrics_from_matrices(chamfer_matrix(samples, real), chamfer_matrix(samples),
                                            self._reference_matrix(real))
        scores = {"mmd_cd": figures["mmd"], "cov_cd": figures["cov"], "1nna_cd": figures["1nna"]}
        if "class_accuracy" not in self.metrics or cond is None:
            return scores
        if self.model is None:
            self.fit(self.modality.dataset("train"))
        labels = torch.as_tensor(cond).long().cpu()
        hits = (predict(self.model, samples) == labels).float()
        per_class = {name: hits[labels == index].mean().item() if (labels == index).any() else float("nan")
                     for index, name in enumerate(self.names)}
        asked = labels < len(self.names)  # the null label (unconditional samples) asks for no class
        requested = [value for value in per_class.values() if value == value]
        scores["class_accuracy"] = hits[asked].mean().item() if bool(asked.any()) else float("nan")
        scores["worst_class_accuracy"] = min(requested) if requested else float("nan")
        if self.per_class:
            scores.update({f"accuracy_{name}": value for name, value in per_class.items()})
        return scores


SPEC = EvaluatorSpec(
    name="points",
    description="MMD / COV / 1-NNA with Chamfer distance against held-out clouds; per-class accuracy of "
                "conditional samples under a locally trained PointNet classifier",
    factory=PointsEvaluator,
    params_model=PointsEvalParams,
    modalities=("points",),
)
