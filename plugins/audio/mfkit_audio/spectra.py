"""Decode a list of audio files once into log-mel spectrograms, cached on disk by content.

The cache file ``<cache>/audio/spectrograms-<hash>.pt`` holds the log-mels (N, n_mels, frames), the labels
and the skipped files; its hash covers the feature settings, the clip rules and every file's relative
path, size and modification time, so a changed file or setting makes a new cache. Unreadable and
silent files are skipped with one warning that names each and gives the count.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torchaudio
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from mfkit.plugins import file_signature

from mfkit_audio.audio_io import AudioReadError, fit_length, read_mono, trim_silence
from mfkit_audio.features import LogMel, MelSettings
from mfkit_audio.folder import AudioFile, SpeechFolderError

CACHE_VERSION = 1
SILENCE_PEAK = 1e-4


class AudioDataWarning(UserWarning):
    """Some audio files were skipped."""


@dataclass(frozen=True)
class ClipRules:
    """How a waveform becomes a fixed-length clip: trim silence (``top_db`` below the peak; None: keep),
    then crop or pad to the clip length, placing short clips at the ``align`` ("center" or "start")."""

    top_db: float | None = 40.0
    align: str = "center"


@dataclass
class Spectrograms:
    """Decoded log-mels (N, n_mels, frames), string labels (N,) or None, and files skipped (path: why)."""

    log_mel: torch.Tensor
    labels: list[str] | None
    skipped: dict[str, str]


def cache_key(files: list[AudioFile], settings: MelSettings, rules: ClipRules) -> str:
    digest = hashlib.sha256(json.dumps({"v": CACHE_VERSION, "mel": asdict(settings), "clip": asdict(rules)},
                                       sort_keys=True).encode())
    for f in files:
        try:
            digest.update(f"{f.relative}\0{f.label}\0{file_signature(f.path)}\n".encode())
        except OSError:
            digest.update(f"{f.relative}\0{f.label}\0missing\n".encode())
    return digest.hexdigest()[:16]


def _clip(path: Path, settings: MelSettings, rules: ClipRules, resamplers: dict) -> torch.Tensor:
    wave, rate = read_mono(path, None)
    if rate != settings.sample_rate:
        if rate not in resamplers:
            resamplers[rate] = torchaudio.transforms.Resample(rate, settings.sample_rate)
        wave = resamplers[rate](wave)
    if wave.abs().max() < SILENCE_PEAK:
        raise AudioReadError(f"{path}: is silent (peak below {SILENCE_PEAK:g})")
    if rules.top_db is not None:
        wave = trim_silence(wave, settings.sample_rate, rules.top_db)
    return fit_length(wave, settings.samples, rules.align)


def decode_files(files: list[AudioFile], settings: MelSettings, rules: ClipRules, progress: bool = True) -> Spectrograms:
    """Read, resample, clip and analyse every file; unreadable or silent ones are skipped and reported."""
    log_mel, labels, skipped, resamplers = [], [], {}, {}
    features = LogMel(settings)
    columns = (TextColumn("[bold]decoding audio into spectrograms (once)"), BarColumn(), MofNCompleteColumn(),
               TimeRemainingColumn())
    with Progress(*columns, disable=not progress or len(files) < 200, transient=True) as bar:
        task = bar.add_task("decode", total=len(files))
        for f in files:
            try:
                clip = _clip(f.path, settings, rules, resamplers)
            except AudioReadError as error:
                skipped[str(f.path)] = str(error).removeprefix(f"{f.path}: ")
            else:
                log_mel.append(features(clip))
                labels.append(f.label)
            bar.advance(task)
    stacked = torch.stack(log_mel) if log_mel else torch.empty(0, settings.n_mels, settings.frames)
    return Spectrograms(stacked, labels if labels and labels[0] is not None else None, skipped)


def warn_skipped(skipped: dict[str, str], where: str) -> None:
    if skipped:
        listed = "; ".join(f"{path} ({why})" for path, why in skipped.items())
        warnings.warn(f"skipped {len(skipped)} unreadable or silent audio file(s) in {where}: {listed}",
                      AudioDataWarning, stacklevel=3)


def load_spectrograms(files: list[AudioFile], settings: MelSettings, rules: ClipRules, cache_dir: Path,
                      where: str, progress: bool = True) -> Spectrograms:
    """The spectrograms of ``files``, from the cache when it has them (no audio is decoded then)."""
    path = Path(cache_dir) / "audio" / f"spectrograms-{cache_key(files, settings, rules)}.pt"
    if path.is_file():
        saved = torch.load(path, weights_only=False)
        result = Spectrograms(saved["log_mel"], saved["labels"], saved["skipped"])
    else:
        result = decode_files(files, settings, rules, progress)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.partial")
        torch.save({"log_mel": result.log_mel, "labels": result.labels, "skipped": result.skipped}, partial)
        partial.replace(path)
    warn_skipped(result.skipped, where)
    if result.log_mel.shape[0] == 0:
        raise SpeechFolderError(f"no usable audio in {where}: all {len(files)} file(s) are unreadable or silent")
    return result
