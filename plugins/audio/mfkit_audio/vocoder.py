"""Vocoders: log-mel spectrograms back to waveforms.

A vocoder is any object with ``sample_rate`` and ``__call__(log_mel (B, n_mels, frames)) -> (B, samples)``
that is built as ``factory(settings: MelSettings, **options)``. Griffin-Lim is built in; another package
offers its own (e.g. a neural vocoder) through the entry-point group ``mfkit_audio.vocoders`` and a
recipe picks it with ``modality.params.vocoder: NAME``.
"""
from __future__ import annotations

import importlib.metadata as metadata
from typing import Any, Protocol

import torch
import torchaudio

from mfkit_audio.features import MelSettings

VOCODER_GROUP = "mfkit_audio.vocoders"


class Vocoder(Protocol):
    """log-mel (B, n_mels, frames), natural log of the magnitude mel -> waveform (B, samples)."""

    sample_rate: int

    def __call__(self, log_mel: torch.Tensor) -> torch.Tensor: ...


class GriffinLimVocoder:
    """Magnitude from the mel bands by non-negative least squares (torchaudio ``InverseMelScale``), phase
    by ``n_iter`` Griffin-Lim iterations with momentum 0.99 from a seeded random start (deterministic)."""

    def __init__(self, settings: MelSettings, n_iter: int = 64, seed: int = 0) -> None:
        self.settings, self.sample_rate, self.seed = settings, settings.sample_rate, seed
        mel = settings.mel_transform()
        self.inverse_mel = torchaudio.transforms.InverseMelScale(
            n_stft=settings.n_fft // 2 + 1, n_mels=settings.n_mels, sample_rate=settings.sample_rate,
            f_min=settings.f_min, f_max=settings.f_max, norm="slaney", mel_scale="slaney")
        # InverseMelScale solves with the same filter bank the analysis used.
        self.inverse_mel.fb.copy_(mel.mel_scale.fb)
        self.griffin_lim = torchaudio.transforms.GriffinLim(
            n_fft=settings.n_fft, hop_length=settings.hop, power=1.0, n_iter=n_iter, momentum=0.99)

    @torch.no_grad()
    def __call__(self, log_mel: torch.Tensor) -> torch.Tensor:
        magnitude_mel = torch.exp(log_mel.float())
        magnitude = torch.clamp(self.inverse_mel(magnitude_mel), min=0.0)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            wave = self.griffin_lim(magnitude)
        missing = self.settings.samples - wave.shape[-1]
        return torch.nn.functional.pad(wave, (0, missing)) if missing > 0 else wave[..., : self.settings.samples]


def installed_vocoders() -> dict[str, metadata.EntryPoint]:
    """Vocoder factories registered in the entry-point group ``mfkit_audio.vocoders``, by name."""
    return {entry.name: entry for entry in metadata.entry_points(group=VOCODER_GROUP)}


def build_vocoder(name: str, settings: MelSettings, **options: Any) -> Vocoder:
    """The vocoder registered as ``name``; a one-line error listing those installed otherwise."""
    if name == "griffin_lim":
        return GriffinLimVocoder(settings, **options)
    found = installed_vocoders()
    if name not in found:
        raise ValueError(f"unknown vocoder {name!r}; installed: {', '.join(sorted({'griffin_lim', *found}))}")
    return found[name].load()(settings, **options)
