"""Log-mel spectrograms: waveform (B, samples) -> log-magnitude mel (B, n_mels, frames), and the shape rules.

    S = |STFT(x)|  (n_fft, hop, Hann window, centred)      M = W_mel S      L = log(max(M, floor))

``floor`` bounds the log from below so digital silence (padding) maps to one value, log(floor).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torchaudio


@dataclass(frozen=True)
class MelSettings:
    """What defines the feature space: sample rate (Hz), FFT size, hop (samples), mel bands, band edges
    (Hz), clip length (samples) and the log floor."""

    sample_rate: int = 8000
    n_fft: int = 512
    hop: int = 128
    n_mels: int = 40
    f_min: float = 20.0
    f_max: float | None = None
    samples: int = 8000
    floor: float = 1e-4

    @property
    def frames(self) -> int:
        """Frames of a clip of ``samples`` samples with a centred STFT: 1 + samples // hop."""
        return 1 + self.samples // self.hop

    @property
    def shape(self) -> tuple[int, int, int]:
        """The model tensor shape of one clip: (1, n_mels, frames)."""
        return (1, self.n_mels, self.frames)

    @property
    def log_floor(self) -> float:
        return math.log(self.floor)

    def mel_transform(self) -> torchaudio.transforms.MelSpectrogram:
        return torchaudio.transforms.MelSpectrogram(
            sample_rate=self.sample_rate, n_fft=self.n_fft, hop_length=self.hop, n_mels=self.n_mels,
            f_min=self.f_min, f_max=self.f_max, power=1.0, center=True, norm="slaney", mel_scale="slaney")


class LogMel:
    """Waveforms (B, samples) or (samples,) -> log-mel (B, n_mels, frames) or (n_mels, frames)."""

    def __init__(self, settings: MelSettings) -> None:
        self.settings = settings
        self.transform = settings.mel_transform()

    @torch.no_grad()
    def __call__(self, waveform: torch.Tensor) -> torch.Tensor:
        mel = self.transform(waveform.float())
        return torch.log(torch.clamp(mel, min=self.settings.floor))
