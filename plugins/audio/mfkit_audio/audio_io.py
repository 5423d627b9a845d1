"""Reading and writing audio files: soundfile for the bytes, torchaudio for resampling."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile
import torch
import torchaudio

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")


class AudioReadError(ValueError):
    """A file that cannot be read as audio, or holds no usable sound."""


def read_mono(path: Path, sample_rate: int | None) -> tuple[torch.Tensor, int]:
    """The file at ``path`` as a mono float32 waveform (samples,) (channels averaged) and its sample rate:
    resampled to ``sample_rate`` unless that is None."""
    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except Exception as error:  # noqa: BLE001 - soundfile raises several types for bad files
        raise AudioReadError(f"{path}: cannot be read as audio ({error})") from None
    if data.size == 0:
        raise AudioReadError(f"{path}: holds no samples")
    wave = torch.from_numpy(np.ascontiguousarray(data.mean(axis=1)))
    if not bool(torch.isfinite(wave).all()):
        raise AudioReadError(f"{path}: holds NaN or infinite samples")
    if sample_rate is not None and rate != sample_rate:
        wave, rate = torchaudio.functional.resample(wave, rate, sample_rate), sample_rate
    return wave, rate


def trim_silence(wave: torch.Tensor, sample_rate: int, top_db: float = 40.0, frame_ms: float = 10.0) -> torch.Tensor:
    """``wave`` without leading and trailing frames quieter than ``top_db`` below its loudest frame (RMS)."""
    frame = max(1, int(sample_rate * frame_ms / 1000))
    usable = wave[: wave.numel() // frame * frame]
    if usable.numel() == 0:
        return wave
    rms = usable.reshape(-1, frame).pow(2).mean(dim=1).sqrt()
    loud = rms > rms.max() * 10 ** (-top_db / 20)
    index = torch.nonzero(loud).flatten()
    return wave[int(index[0]) * frame: (int(index[-1]) + 1) * frame]


def fit_length(wave: torch.Tensor, samples: int, align: str = "center") -> torch.Tensor:
    """Crop (keeping the start) or zero-pad ``wave`` to ``samples``; ``align`` places a short clip
    ("center" or "start")."""
    if wave.numel() >= samples:
        return wave[:samples]
    missing = samples - wave.numel()
    before = missing // 2 if align == "center" else 0
    return torch.nn.functional.pad(wave, (before, missing - before))


def write_wav(path: Path, wave: torch.Tensor, sample_rate: int) -> Path:
    """Write a mono waveform as 16-bit PCM WAV, peak-limited to 0.99 (never louder than it was)."""
    data = wave.detach().float().cpu().numpy()
    peak = float(np.abs(data).max()) if data.size else 0.0
    if peak > 0.99:
        data = data * (0.99 / peak)
    soundfile.write(str(path), data, sample_rate, subtype="PCM_16")
    return path
