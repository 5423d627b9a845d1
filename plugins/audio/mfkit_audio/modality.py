"""The ``speech`` modality: speech clips as normalised log-mel spectrograms (1, n_mels, frames).

Model tensor of a clip: x = (L - mean_b) / std_b with L the log-mel (:mod:`mfkit_audio.features`) and
per-band statistics over the training set (frames and clips pooled). The statistics, the class names and
the largest training log-mel are the modality's state: fitted once (:meth:`fit`, or on first use,
deterministically, when nothing fitted them), saved with the run and loaded for sampling.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch.utils.data import Dataset

from mfkit.plugins import Modality, ModalitySpec, PluginContext, default_cache_dir
from mfkit_audio.audio_io import fit_length, read_mono, trim_silence, write_wav
from mfkit_audio.corpus import DIGITS, ensure_corpus, corpus_settings
from mfkit_audio.features import LogMel, MelSettings
from mfkit_audio.folder import LabelFrom, SpeechFolderError, scan
from mfkit_audio.plots import spectrogram_grid
from mfkit_audio.spectra import ClipRules, Spectrograms, load_spectrograms
from mfkit_audio.vocoder import Vocoder, build_vocoder


class DigitsParams(BaseModel):
    """The embedded eSpeak NG spoken-digit corpus (used when ``folder`` is null)."""

    model_config = ConfigDict(extra="forbid")
    per_class: int = Field(200, gt=0, description="training utterances per digit")
    val_per_class: int = Field(30, gt=0, description="held-out utterances per digit")
    seed: int = Field(0, description="seed of the voice, accent, speed and pitch draws")
    accents: list[str] | None = Field(None, description="eSpeak NG English voices (null: 8 accents, en-us to en-029)")
    variants: list[str] | None = Field(None, description="eSpeak NG voice variants (null: 24, male, female, Klatt)")


class SpeechParams(BaseModel):
    """Parameters of the speech modality."""

    model_config = ConfigDict(extra="forbid")
    folder: str | None = Field(None, description="a speech folder (WAV/FLAC/OGG); null: the embedded spoken-digit corpus")
    label_from: LabelFrom = Field("folder", description="class labels from the first sub-folder, the file name "
                                                        "stem (up to '_', lower-cased), a manifest, or none "
                                                        "(unconditional)")
    manifest: str | None = Field(None, description="CSV/TSV of path and label (label_from: manifest), relative to folder")
    classes: list[str] | None = Field(None, description="the classes to keep, in this order; files of other labels are "
                                                        "ignored (null: every label found in the training split)")
    val_fraction: float = Field(0.1, ge=0, lt=1, description="share held out when the folder has no train/val sub-folders")
    sample_rate: int = Field(8000, gt=0, description="Hz; every file is resampled to it")
    duration: float = Field(1.0, gt=0, description="seconds per clip (cropped or zero-padded)")
    n_fft: int = Field(512, gt=0, description="STFT size")
    hop: int = Field(128, gt=0, description="STFT hop in samples")
    n_mels: int = Field(40, gt=0, description="mel bands")
    f_min: float = Field(20.0, ge=0, description="lowest mel band edge (Hz)")
    f_max: float | None = Field(None, description="highest mel band edge (Hz; null: sample_rate / 2)")
    log_floor: float = Field(1e-4, gt=0, description="magnitude floor of the log (silence maps to log(floor))")
    trim_db: float | None = Field(40.0, gt=0, description="trim leading/trailing audio this far below the peak (null: keep)")
    align: Literal["center", "start"] = Field("center", description="where a short clip sits in the fixed duration")
    digits: DigitsParams = Field(default_factory=DigitsParams, description="the embedded corpus (folder: null)")
    vocoder: str = Field("griffin_lim", description="log-mel to waveform (entry-point group mfkit_audio.vocoders)")
    griffin_lim_iters: int = Field(64, gt=0, description="Griffin-Lim iterations")
    preview_wavs: int = Field(10, ge=0, description="WAV files a training preview writes (the PNG shows all)")


class SpeechDataset(Dataset):
    """Log-mels (N, n_mels, frames) held in memory, normalised per item; items (x (1, n_mels, frames), label)."""

    def __init__(self, modality: "SpeechModality", log_mel: torch.Tensor, labels: torch.Tensor | None) -> None:
        self.modality, self.log_mel, self.labels = modality, log_mel, labels

    def __len__(self) -> int:
        return self.log_mel.shape[0]

    def __getitem__(self, index: int):
        x = self.modality.normalise(self.log_mel[index])
        return x if self.labels is None else (x, self.labels[index])


def _text_tensor(values: Sequence[str]) -> torch.Tensor:
    return torch.tensor(list(json.dumps(list(values)).encode()), dtype=torch.uint8)


def _tensor_text(tensor: torch.Tensor) -> list[str]:
    return json.loads(bytes(tensor.tolist()).decode())


class SpeechModality(Modality):
    splits = ("train", "val")

    def __init__(self, params: SpeechParams, context: PluginContext | None = None) -> None:
        self.params, self.context = params, context
        self.settings = MelSettings(params.sample_rate, params.n_fft, params.hop, params.n_mels, params.f_min,
                                    params.f_max, round(params.duration * params.sample_rate), params.log_floor)
        if params.n_fft > self.settings.samples:
            raise ValueError(f"n_fft {params.n_fft} is longer than a clip ({self.settings.samples} samples)")
        self.sample_shape = self.settings.shape
        self.rules = ClipRules(params.trim_db, params.align)
        self._spectra: dict[str, Spectrograms] = {}
        self._names: list[str] | None = None
        self._state: dict[str, torch.Tensor] | None = None
        self._vocoder: Vocoder | None = None

    # ------------------------------------------------------------------ data
    @property
    def _cache_dir(self) -> Path:
        return self.context.cache_dir if self.context is not None else default_cache_dir()

    @property
    def _progress(self) -> bool:
        return self.context is None or self.context.rank == 0

    def _root(self) -> Path:
        if self.params.folder is not None:
            return Path(self.params.folder).expanduser()
        d = self.params.digits
        return ensure_corpus(self._cache_dir, corpus_settings(d.per_class, d.val_per_class, d.seed, d.accents,
                                                              d.variants), progress=self._progress)

    def _label_from(self) -> LabelFrom:
        return "folder" if self.params.folder is None else self.params.label_from

    def spectrograms(self, split: str) -> Spectrograms:
        """The decoded (unnormalised) log-mels of ``split``, from the cache after the first time."""
        if split not in self.splits:
            raise ValueError(f"unknown split {split!r}; the speech modality has {', '.join(self.splits)}")
        if split not in self._spectra:
            root = self._root()
            manifest = Path(self.params.manifest) if self.params.manifest else None
            files = scan(root, split, self._label_from(), manifest, self.params.val_fraction)
            if self.params.classes and self._label_from() != "none":
                files = [f for f in files if f.label in self.params.classes]
            if not files:
                raise SpeechFolderError(f"the {split} split of {root} is empty; lower or raise val_fraction, or add "
                                        f"files")
            self._spectra[split] = load_spectrograms(files, self.settings, self.rules, self._cache_dir,
                                                     f"{root} ({split})", self._progress)
        return self._spectra[split]

    @property
    def class_names(self) -> list[str] | None:  # type: ignore[override]
        if self._names is None:
            if self._state is not None and "class_names" in self._state:
                self._names = _tensor_text(self._state["class_names"])
            elif self.params.classes:
                self._names = list(self.params.classes)
            elif self.params.folder is None:
                self._names = list(DIGITS)
            elif self.params.label_from != "none":
                self._names = _ordered(set(self.spectrograms("train").labels or []))
            else:
                self._names = []
        return self._names or None

    def _label_indices(self, labels: list[str] | None, split: str) -> torch.Tensor | None:
        names = self.class_names
        if names is None or labels is None:
            return None
        unknown = sorted(set(labels) - set(names))
        if unknown:
            raise SpeechFolderError(f"the {split} split has labels the training split lacks: {', '.join(unknown[:5])}")
        index = {name: i for i, name in enumerate(names)}
        return torch.tensor([index[label] for label in labels], dtype=torch.long)

    def dataset(self, split: str = "train") -> SpeechDataset:
        """Items of ``split`` with classes interleaved (the k-th item of each class, class by class), so
        any first N items are balanced across classes."""
        found = self.spectrograms(split)
        labels = self._label_indices(found.labels, split)
        if labels is None:
            return SpeechDataset(self, found.log_mel, None)
        rank = torch.zeros_like(labels)
        for label in labels.unique():
            members = labels == label
            rank[members] = torch.arange(int(members.sum()))
        order = torch.argsort(rank * (len(self.class_names) + 1) + labels, stable=True)
        return SpeechDataset(self, found.log_mel[order], labels[order])

    # ------------------------------------------------------------------ state
    def fit(self, dataset: Dataset) -> None:
        """Per-band mean and std of the training log-mels (frames and clips pooled), their maximum, the classes."""
        log_mel = dataset.log_mel if isinstance(dataset, SpeechDataset) else self.spectrograms("train").log_mel
        mean = log_mel.mean(dim=(0, 2))
        std = log_mel.std(dim=(0, 2)).clamp(min=1e-2)
        state = {"mean": mean, "std": std, "log_max": log_mel.max().reshape(1)}
        if self.class_names:
            state["class_names"] = _text_tensor(self.class_names)
        self._state = state

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {key: value.clone() for key, value in self._ensure_state().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = {"mean", "std", "log_max"} - set(state)
        if missing:
            raise ValueError(f"speech state lacks {', '.join(sorted(missing))}")
        if state["mean"].shape != (self.settings.n_mels,):
            raise ValueError(f"speech state has {state['mean'].shape[0]} mel bands, the recipe {self.settings.n_mels}")
        self._state = {key: value.clone().float() if key != "class_names" else value.clone()
                       for key, value in state.items()}
        self._names = None

    def _ensure_state(self) -> dict[str, torch.Tensor]:
        if self._state is None:  # nothing fitted or loaded: fit on the training data, deterministically
            self.fit(self.dataset("train"))
        return self._state

    # ------------------------------------------------------------------ tensors
    def normalise(self, log_mel: torch.Tensor) -> torch.Tensor:
        """log-mel (..., n_mels, frames) -> model tensor (..., 1, n_mels, frames)."""
        state = self._ensure_state()
        return ((log_mel - state["mean"][:, None]) / state["std"][:, None]).unsqueeze(-3).float()

    def denormalise(self, x: torch.Tensor) -> torch.Tensor:
        """Model tensors (B, 1, n_mels, frames) -> log-mels (B, n_mels, frames), clamped to [log floor, max + 1]."""
        state = self._ensure_state()
        log_mel = x.detach().float().cpu()[:, 0] * state["std"][:, None] + state["mean"][:, None]
        return log_mel.clamp(self.settings.log_floor, float(state["log_max"]) + 1.0)

    def encode(self, raw: Any) -> torch.Tensor:
        """An audio file path, a waveform (samples,) at ``sample_rate``, or a log-mel (n_mels, frames) ->
        (1, n_mels, frames)."""
        if isinstance(raw, (str, Path)):
            raw = read_mono(Path(raw), self.settings.sample_rate)[0]
        tensor = torch.as_tensor(np.asarray(raw, dtype=np.float32))
        if tensor.dim() == 1:
            wave = tensor if self.rules.top_db is None else trim_silence(tensor, self.settings.sample_rate, self.rules.top_db)
            tensor = LogMel(self.settings)(fit_length(wave, self.settings.samples, self.rules.align))
        if tuple(tensor.shape) != (self.settings.n_mels, self.settings.frames):
            raise ValueError(f"a speech item is a path, a waveform or a log-mel ({self.settings.n_mels}, "
                             f"{self.settings.frames}); got shape {tuple(tensor.shape)}")
        return self.normalise(tensor)

    def decode(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        """Model tensors (B, 1, n_mels, frames) -> B log-mels (n_mels, frames), natural log of magnitude."""
        return list(self.denormalise(tensor))

    @property
    def vocoder(self) -> Vocoder:
        if self._vocoder is None:
            options = {"n_iter": self.params.griffin_lim_iters} if self.params.vocoder == "griffin_lim" else {}
            self._vocoder = build_vocoder(self.params.vocoder, self.settings, **options)
        return self._vocoder

    def waveforms(self, tensor: torch.Tensor) -> torch.Tensor:
        """Model tensors (B, 1, n_mels, frames) -> waveforms (B, samples) at ``sample_rate`` via the vocoder."""
        return self.vocoder(self.denormalise(tensor))

    def render(self, tensor: torch.Tensor) -> torch.Tensor:
        """What a listener hears (`mfkit eval` times it as decoding): the vocoded waveforms."""
        return self.waveforms(tensor)

    # ------------------------------------------------------------------ files
    def _titles(self, cond: Any, count: int) -> list[str]:
        condition = self.condition()
        if cond is None or condition is None:
            return [str(i) for i in range(count)]
        return [condition.describe(cond, i) for i in range(count)]

    def save(self, samples: torch.Tensor, out_dir: Path, cond: Any = None, *, kind: str = "samples",
             step: int | None = None) -> list[Path]:
        """WAV files ``NNNN-<class>.wav`` (a preview writes ``preview_wavs`` of them) and ``spectrograms.png``."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        titles = self._titles(cond, samples.shape[0])
        wav_count = samples.shape[0] if kind != "preview" else min(samples.shape[0], self.params.preview_wavs)
        files = []
        if wav_count:
            waves = self.waveforms(samples[:wav_count])
            for index, wave in enumerate(waves):
                files.append(write_wav(out_dir / f"{index:04d}-{titles[index]}.wav", wave, self.settings.sample_rate))
        shown = min(samples.shape[0], 100)
        state = self._ensure_state()
        label = f" (step {step})" if step is not None else ""
        files.append(spectrogram_grid(self.denormalise(samples[:shown]), out_dir / "spectrograms.png",
                                      [t + (label if i == 0 else "") for i, t in enumerate(titles[:shown])],
                                      vmin=self.settings.log_floor, vmax=float(state["log_max"])))
        return files

    def preview_count(self, requested: int) -> int:
        return min(requested, 40)


def _ordered(labels: set[str]) -> list[str]:
    """Class names: digit words in counting order when all are digits, otherwise sorted."""
    if labels and labels <= set(DIGITS):
        return [d for d in DIGITS if d in labels]
    return sorted(labels)


def build(params: SpeechParams, context: PluginContext) -> SpeechModality:
    return SpeechModality(params, context)


SPEC = ModalitySpec(
    name="speech",
    description="Speech as log-mel spectrograms: your folder (WAV/FLAC/OGG, labels from folders, names or a "
                "manifest) or the embedded eSpeak NG spoken digits; WAV (Griffin-Lim) and PNG output",
    factory=build,
    params_model=SpeechParams,
)
