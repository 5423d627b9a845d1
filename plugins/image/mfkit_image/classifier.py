"""A small convolutional network trained locally on the real images: the feature space of the evaluator.

Class-labelled data train it as a classifier (cross-entropy); its features are the penultimate layer
(``feature_dim`` numbers per image) and its logits judge whether a conditional sample shows its class.
Unlabelled data train it as an autoencoder whose bottleneck gives the features. Training goes through
:func:`mfkit.metrics.train_feature_network`: deterministic from the seed, cached by a content hash of
the data and settings under ``<cache>/feature-nets/``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ImageFeatures(nn.Module):
    """(B, C, H, W) in [-1, 1] -> features (B, feature_dim); ``logits`` -> (B, classes) when classes > 0;
    ``reconstruct`` -> (B, C, H, W) when classes == 0 (autoencoder mode)."""

    def __init__(self, shape: tuple[int, int, int], classes: int, width: int = 32, feature_dim: int = 64) -> None:
        super().__init__()
        channels, height, width_px = shape
        self.shape, self.classes = tuple(shape), classes
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1), nn.GroupNorm(4, width), nn.SiLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.GroupNorm(4, 2 * width), nn.SiLU(),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.GroupNorm(4, 2 * width), nn.SiLU(),
            nn.Conv2d(2 * width, 4 * width, 3, stride=2, padding=1), nn.GroupNorm(4, 4 * width), nn.SiLU(),
            nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16 * width, feature_dim))
        self.dropout = nn.Dropout(0.2)
        self.head = nn.Linear(feature_dim, classes) if classes else nn.Linear(feature_dim, channels * height * width_px)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.silu(self.body(x)))

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.head(F.silu(self.body(x)))).reshape(x.shape[0], *self.shape)


def classification_loss(module: ImageFeatures, batch) -> torch.Tensor:
    x, labels = batch
    x = _jitter(x)
    return F.cross_entropy(module.head(module.dropout(F.silu(module.body(x)))), labels)


def reconstruction_loss(module: ImageFeatures, batch) -> torch.Tensor:
    x = batch[0] if isinstance(batch, (list, tuple)) else batch
    return F.mse_loss(module.reconstruct(_jitter(x)), x)


def _jitter(x: torch.Tensor) -> torch.Tensor:
    """Shift each image by up to one pixel (zero padded): a little robustness at no cost."""
    shifts = torch.randint(-1, 2, (2,)).tolist()
    padded = F.pad(x, (1, 1, 1, 1), value=-1.0)
    h, w = x.shape[-2:]
    return padded[..., 1 + shifts[0]:1 + shifts[0] + h, 1 + shifts[1]:1 + shifts[1] + w]
