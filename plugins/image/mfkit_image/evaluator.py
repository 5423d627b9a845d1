"""The ``image`` evaluator: quality of image samples without any downloaded weights.

A small network (:mod:`mfkit_image.classifier`) is trained locally on the real training images and
cached. Metrics, each against the real held-out images:

* ``fd``: Fréchet distance between Gaussians fitted to the network's features (FID's formula in a
  feature space of our own, so figures compare runs on the same data, not with published FIDs);
* ``kid``: kernel distance (unbiased cubic-polynomial MMD^2) in the same features;
* ``accuracy`` (class-conditional data only): the share of samples the network classifies as the class
  they were asked for (null-label samples are left out);
* ``mmd_pixels``: unbiased RBF-mixture MMD^2 on raw pixels, bandwidths 0.5, 1 and 2 times the median
  distance between two different real images; at most ``max_pixels_items`` a side (the first samples, a
  seeded random subset of the real images) (``mmd_latents`` for the ``image_latents`` modality: the same
  on the raw latents).

Pixel samples are clamped to [-1, 1] first (what a saved PNG holds); latents are scored as they are
(their values are not bounded: clamping the samples only would reward a model whose latents are too large).

`mfkit eval` prints real-vs-real figures (real training images scored the same way) beside them.
"""
from __future__ import annotations

from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch.utils.data import Dataset

from mfkit.metrics import extract_features, frechet_distance, kid, mmd_unbiased, mmd_within, train_feature_network
from mfkit.plugins import ClassCondition, Evaluator, EvaluatorSpec, Modality, PluginContext, default_cache_dir
from mfkit_image.classifier import ImageFeatures, classification_loss, reconstruction_loss
from mfkit_image.latent_modality import LatentModality


class ImageEvalParams(BaseModel):
    """Parameters of the image evaluator."""

    model_config = ConfigDict(extra="forbid")
    steps: int = Field(1500, gt=0, description="training steps of the feature network (cached after the first run)")
    batch_size: int = Field(128, gt=0, description="its batch size")
    lr: float = Field(2e-3, gt=0, description="its Adam learning rate")
    width: int = Field(32, gt=0, description="its base width (channels)")
    feature_dim: int = Field(64, gt=1, description="features per image for FD and KID")
    kid_subsets: int = Field(10, gt=0, description="random subsets averaged by KID")
    kid_subset_size: int = Field(1000, gt=1, description="items per KID subset (capped by the set sizes)")
    max_pixels_items: int = Field(2000, gt=1, description="at most this many images per side in the pixel MMD")


class ImageEvaluator(Evaluator):
    """FD, KID, class accuracy and pixel MMD of image samples (B, C, H, W) against real ones."""

    def __init__(self, params: ImageEvalParams, modality: Modality, context: PluginContext | None = None) -> None:
        self.params, self.modality = params, modality
        self.context = context or PluginContext()
        if len(modality.sample_shape) != 3:
            raise ValueError(f"the image evaluator scores images (C, H, W), not shape {modality.sample_shape}")
        condition = modality.condition()
        self.classes = len(condition.names) if isinstance(condition, ClassCondition) else 0
        self.pixels = not isinstance(modality, LatentModality)  # values in [-1, 1], saved as PNGs
        self.mmd_name = "mmd_pixels" if self.pixels else "mmd_latents"
        self.metrics = {"fd": "lower", "kid": "lower", **({"accuracy": "higher"} if self.classes else {}),
                        self.mmd_name: "lower"}
        self.network: ImageFeatures | None = None
        self._reference: tuple[torch.Tensor, int, torch.Tensor, tuple[float, ...], float] | None = None

    def fit(self, train: Dataset) -> None:
        """Train (or load from the cache) the feature network on the real training images."""
        shape, classes, p = tuple(self.modality.sample_shape), self.classes, self.params
        trained = train_feature_network(
            lambda: ImageFeatures(shape, classes, p.width, p.feature_dim), train,
            classification_loss if classes else reconstruction_loss, name="image-features", steps=p.steps,
            batch_size=p.batch_size, lr=p.lr, seed=self.context.seed,
            cache_dir=self.context.cache_dir or default_cache_dir(),
            settings={"mode": "classifier" if classes else "autoencoder", "version": 1})
        self.network = trained.module

    def _network(self) -> ImageFeatures:
        if self.network is None:
            self.fit(self.modality.dataset("train"))
        return self.network

    def _pixel_subset(self, real: torch.Tensor) -> torch.Tensor:
        """At most ``max_pixels_items`` real images for the pixel MMD: a seeded random subset (the first ones
        would be the first classes of a held-out split stored class by class)."""
        if len(real) <= self.params.max_pixels_items:
            return real
        generator = torch.Generator().manual_seed(self.context.seed)
        return real[torch.randperm(len(real), generator=generator)[: self.params.max_pixels_items]]

    def _real_terms(self, real: torch.Tensor) -> tuple[torch.Tensor, tuple[float, ...], float]:
        """Features of the real images, the pixel bandwidths and the real-only MMD term (cached per tensor)."""
        cached = self._reference
        if cached is None or cached[0] is not real or cached[1] != real._version:
            features = extract_features(self._network(), real.float())
            pixels = self._pixel_subset(real).reshape(min(len(real), self.params.max_pixels_items), -1).double()
            distances = torch.cdist(pixels, pixels)
            apart = distances[torch.triu_indices(len(pixels), len(pixels), offset=1).unbind()]  # no zero diagonal
            median = float(apart.median().clamp_min(1e-6)) if len(apart) else 1.0
            bandwidths = (0.5 * median, median, 2.0 * median)
            cached = self._reference = (real, real._version, features, bandwidths, mmd_within(pixels, bandwidths))
        return cached[2], cached[3], cached[4]

    @torch.no_grad()
    def score(self, samples: torch.Tensor, cond: Any, real: torch.Tensor, real_cond: Any) -> dict[str, float]:
        samples = samples.float().cpu()
        if not bool(torch.isfinite(samples).all()):
            return {name: float("inf") if way == "lower" else 0.0 for name, way in self.metrics.items()}
        if self.pixels:
            samples = samples.clamp(-1, 1)  # what a saved PNG holds
        real_features, bandwidths, within = self._real_terms(real)
        network = self._network()
        features = extract_features(network, samples)
        generator = torch.Generator().manual_seed(self.context.seed)
        values = {"fd": frechet_distance(features, real_features),
                  "kid": kid(features, real_features, self.params.kid_subsets, self.params.kid_subset_size,
                             generator=generator)[0]}
        if self.classes:
            values["accuracy"] = self.accuracy(samples, cond)
        n = min(len(samples), self.params.max_pixels_items)
        values[self.mmd_name] = mmd_unbiased(samples[:n].reshape(n, -1).double(),
                                             self._pixel_subset(real).reshape(-1, samples[0].numel()).double(),
                                             bandwidths, within_b=within)
        return values

    def accuracy(self, samples: torch.Tensor, labels: Any) -> float:
        """Share of samples classified as their label (labels >= number of classes are left out)."""
        if not isinstance(labels, torch.Tensor):
            return float("nan")
        labels = labels.cpu().long()
        keep = labels < self.classes
        if not bool(keep.any()):
            return float("nan")
        network = self._network()
        predicted = torch.cat([network.logits(samples[i:i + 1024]).argmax(1) for i in range(0, len(samples), 1024)])
        return float((predicted[keep] == labels[keep]).double().mean())


SPEC = EvaluatorSpec(
    name="image",
    description="Images: Fréchet distance and KID in a locally trained classifier's features, class accuracy of "
                "conditional samples, pixel MMD (no downloaded weights)",
    factory=ImageEvaluator,
    params_model=ImageEvalParams,
    modalities=("image", "image_latents"),
)
