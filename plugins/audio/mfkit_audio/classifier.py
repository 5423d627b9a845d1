"""A small spectrogram classifier trained locally on the real data: the feature network of the evaluator.

Input: model tensors (B, 1, n_mels, frames). Three stages of [conv 3x3, GroupNorm, SiLU] x 2 and a 2x2
max-pool, global average pooling, a 128-wide embedding (what the Fréchet distance compares) and a linear
layer to the class logits. Trained (with :func:`mfkit.metrics.train_feature_network`, which seeds and
caches it) on random time shifts (+-4 frames) and small noise, so it judges the word rather than its
exact placement.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SpectrogramClassifier(nn.Module):
    def __init__(self, classes: int, width: int = 32, embed: int = 128) -> None:
        super().__init__()
        layers, c_in = [], 1
        for c_out in (width, 2 * width, 4 * width):
            for _ in range(2):
                layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.GroupNorm(8, c_out), nn.SiLU()]
                c_in = c_out
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.embed = nn.Linear(c_in, embed)
        self.classify = nn.Linear(embed, classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, 1, n_mels, frames) -> (logits (B, K), embedding (B, 128))."""
        embedding = self.embed(self.features(x).mean(dim=(2, 3)))
        return self.classify(F.silu(embedding)), embedding

    @torch.no_grad()
    def outputs(self, x: torch.Tensor, batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
        self.eval()
        parts = [self(x[i:i + batch].float()) for i in range(0, x.shape[0], batch)]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def augment(x: torch.Tensor) -> torch.Tensor:
    """A random time shift of -4..4 frames (the same for the batch) and Gaussian noise of std 0.05
    (global RNG: :func:`mfkit.metrics.train_feature_network` seeds it)."""
    shift = int(torch.randint(-4, 5, (1,)))
    return torch.roll(x, shift, dims=-1) + 0.05 * torch.randn_like(x)


def classification_loss(module: SpectrogramClassifier, batch) -> torch.Tensor:
    """Cross-entropy of the augmented batch (x, labels)."""
    x, labels = batch
    logits, _ = module(augment(x.float()))
    return F.cross_entropy(logits, labels)


def inception_score(probabilities: torch.Tensor) -> float:
    """exp(mean_i KL(p(y|x_i) || mean_j p(y|x_j))) for class probabilities (N, K): 1 when every sample
    looks alike, K when each is confidently one class and all classes are equally used."""
    p = probabilities.double().clamp(min=1e-12)
    marginal = p.mean(0, keepdim=True)
    return float(torch.exp((p * (p.log() - marginal.log())).sum(1).mean()))
