"""The ``image_latents`` modality: pre-encoded latent shards, with the latent scale as fitted state.

Nothing is read when it is built: the shape, class names and scale come from the shards on first use,
or from the run's state (``load_state_dict``), so sampling works where the latent folder is absent.

Model tensors are s * latent, where the scale s makes the training latents unit-variance
(s = 1 / std over the training set, fitted once per run and kept in the run's state) unless the
recipe fixes it (e.g. 0.18215 for Stable Diffusion's VAE). Samples are saved as raw latents
(``latents.safetensors``: latent = tensor / s) and, when a local VAE is given, decoded to a PNG grid.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from safetensors.torch import save_file
from torch.utils.data import Dataset

from mfkit.plugins import Modality, ModalitySpec, PluginContext
from mfkit_image.data.latents import LatentShards
from mfkit_image.data.pixels import to_pictures
from mfkit_image.data.sets import (KEYED_SPLIT, PERMUTED_SPLIT, held_out_split, keyed_split, require_both_splits,
                                   split_scheme_of, split_scheme_state, warn_old_split)
from mfkit_image.grid import picture_grid, single_pngs
from mfkit_image.vae import VAESettings, decode_in_batches, load_decoder

#: Latents used to estimate the scale (a seeded subset of the training set when it is larger).
SCALE_ITEMS = 8192


class LatentParams(BaseModel):
    """Parameters of the image_latents modality."""

    model_config = ConfigDict(extra="forbid")
    path: str = Field(description="folder of latent shards (.safetensors with 'latents' [+ 'labels'], or .npy "
                                  "[+ NAME.labels.npy]); optional classes.txt")
    val_path: str | None = Field(None, description="a separate folder of held-out latent shards")
    val_fraction: float = Field(0.0, ge=0, lt=1, description="share held out as 'val' (without val_path): each latent "
                                "by a hash of its shard's name and row, stable as shards are added")
    split_seed: int = Field(0, description="seed of the held-out split")
    scale: float | None = Field(None, gt=0, description="latent scale s (model tensor = s * latent); null: fit "
                                                        "1 / std on the training latents")
    conditional: bool = Field(True, description="use the shards' labels as class conditions")
    vae: VAESettings | None = Field(None, description="a local VAE decoder to write samples as pictures")
    save_individual: bool = Field(False, description="with a VAE: one PNG per sample beside the grid")
    grid_columns: int = Field(16, gt=0, description="samples per class row in the PNG grid")


class LatentSet(Dataset):
    """Items ``scale * latent`` (or (that, label)) of the chosen shard indices."""

    def __init__(self, shards: LatentShards, indices: np.ndarray, scale: Callable[[], float],
                 labels: np.ndarray | None) -> None:
        self.shards, self.indices, self.scale, self.labels = shards, indices, scale, labels

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int):
        index = int(self.indices[k])
        x = self.shards.read(index) * self.scale()
        if self.labels is None:
            return x
        return x, torch.tensor(int(self.labels[index]), dtype=torch.long)


class LatentModality(Modality):
    """Latents (c, h, w) scaled by s; class labels from the shards. ``vae``: a decoder function
    latents -> pixels in [-1, 1] given from Python (wins over ``params.vae``)."""

    def __init__(self, params: LatentParams, context: PluginContext | None = None,
                 vae: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        self.params, self.context, self._vae = params, context, vae
        self._shards: LatentShards | None = None
        self._val_shards: LatentShards | None = None
        self._scale: float | None = params.scale
        self._names: list[str] | None = None
        self._names_known = False
        self._shape: tuple[int, ...] | None = None
        self._indices: tuple[np.ndarray, np.ndarray] | None = None
        #: How val_fraction splits the shards (data/sets.py): a new run's is the current one; a loaded
        #: state's wins (a run made before the scheme was recorded keeps its seeded permutation).
        self._scheme = KEYED_SPLIT
        self.splits = ("train", "val") if params.val_path or params.val_fraction > 0 else ("train",)

    @property
    def shards(self) -> LatentShards:
        if self._shards is None:
            self._shards = LatentShards(self.params.path)
        return self._shards

    @property
    def sample_shape(self) -> tuple[int, ...]:  # type: ignore[override]
        """(c, h, w) of the latents: from the loaded state, else read from the shards."""
        if self._shape is None:
            self._shape = tuple(self.shards.shape)
        return self._shape

    @property
    def class_names(self) -> list[str] | None:  # type: ignore[override]
        if not self.params.conditional:
            return None
        if not self._names_known:
            self._names, self._names_known = self.shards.class_names(), True
        return self._names

    # ------------------------------------------------------------------ scale (state)
    @property
    def scale(self) -> float:
        """s, fitted on first need when neither the recipe nor a loaded state gave it."""
        if self._scale is None:
            self._scale = self._fit_scale(self._train_indices())
        return self._scale

    def _fit_scale(self, indices: np.ndarray) -> float:
        if len(indices) > SCALE_ITEMS:
            indices = np.sort(np.random.default_rng(0).choice(indices, SCALE_ITEMS, replace=False))
        latents = torch.stack([self.shards.read(int(i)) for i in indices]).double()
        std = float(latents.std())
        if not np.isfinite(std) or std <= 0:
            raise ValueError(f"the latents in {self.params.path} have standard deviation {std}; set scale explicitly")
        return 1.0 / std

    def fit(self, dataset: Dataset) -> None:
        if self.params.scale is None:
            self._scale = self._fit_scale(self._train_indices())

    def state_dict(self) -> dict[str, torch.Tensor]:
        state = {"latent_scale": torch.tensor(self.scale, dtype=torch.float64),
                 "latent_shape": torch.tensor(self.sample_shape, dtype=torch.int64),
                 "split_scheme": split_scheme_state(self._scheme)}
        if self.params.conditional:  # "[]": unlabelled shards, so sampling needs no folder either way
            text = json.dumps(self.class_names or []).encode()
            state["class_names_json"] = torch.tensor(list(text), dtype=torch.uint8)
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """A state without ``split_scheme`` is from a run made before it was recorded: that run keeps its
        seeded-permutation split (and records so when its state is saved again)."""
        unknown = set(state) - {"latent_scale", "latent_shape", "class_names_json", "split_scheme"}
        if unknown:
            raise ValueError(f"the image_latents modality keeps no state named {sorted(unknown)}")
        scheme = split_scheme_of(state)
        if scheme != self._scheme:
            self._scheme, self._indices = scheme, None  # indices taken before the state came are split again
        if "latent_scale" in state:
            self._scale = float(state["latent_scale"])
        if "latent_shape" in state:
            self._shape = tuple(int(v) for v in state["latent_shape"].tolist())
        if "class_names_json" in state:
            self._names = json.loads(bytes(state["class_names_json"].tolist()).decode()) or None
            self._names_known = True

    # ------------------------------------------------------------------ data
    def _split(self) -> tuple[np.ndarray, np.ndarray]:
        """(train, held-out) indices: each latent held out by a hash of its shard's name and row (stable as
        shards are added); for a run made before the split scheme was recorded, the seeded stratified
        permutation it trained with."""
        if self._indices is None:
            if self.params.val_path or self.params.val_fraction <= 0:
                self._indices = np.arange(len(self.shards)), np.zeros(0, dtype=np.int64)
            elif self._scheme == PERMUTED_SPLIT:
                warn_old_split(self.params.path, "val_fraction's seeded permutation of the latents", "shards",
                               "latent by a hash of its shard's name and row")
                labels = self.shards.labels if self.params.conditional else None
                self._indices = held_out_split(labels, len(self.shards), self.params.val_fraction,
                                               self.params.split_seed)
            else:
                train, held = keyed_split(self.shards.keys(), self.params.val_fraction, self.params.split_seed)
                require_both_splits(len(train), len(held), self.params.val_fraction, self.params.path, "latents")
                self._indices = train, held
        return self._indices

    def _train_indices(self) -> np.ndarray:
        return self._split()[0]

    def dataset(self, split: str = "train") -> Dataset:
        if split not in self.splits:
            raise ValueError(f"unknown split {split!r}; this latent folder has {', '.join(self.splits)} "
                             f"(set val_fraction or val_path for 'val')")
        labels_of = (lambda shards: shards.labels) if self.params.conditional else (lambda shards: None)
        if split == "val" and self.params.val_path:
            if self._val_shards is None:
                self._val_shards = LatentShards(self.params.val_path)
                if self._val_shards.shape != self.shards.shape:
                    raise ValueError(f"val latents have shape {self._val_shards.shape}, training latents "
                                     f"{self.shards.shape}")
            shards = self._val_shards
            return LatentSet(shards, np.arange(len(shards)), lambda: self.scale, labels_of(shards))
        train, held = self._split()
        return LatentSet(self.shards, train if split == "train" else held, lambda: self.scale, labels_of(self.shards))

    # ------------------------------------------------------------------ raw items
    def encode(self, raw: Any) -> torch.Tensor:
        """A raw latent (c, h, w) (tensor or array) -> s * latent."""
        latent = torch.as_tensor(np.asarray(raw, dtype=np.float32))
        if tuple(latent.shape) != tuple(self.sample_shape):
            raise ValueError(f"a latent item has shape {tuple(self.sample_shape)}, got {tuple(latent.shape)}")
        return latent * self.scale

    def decode(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        """(B, c, h, w) model tensors -> B raw latents (tensor / s)."""
        return list((tensor.detach().float().cpu() / self.scale).unbind(0))

    def _decoder(self):
        if self._vae is None and self.params.vae is not None:
            self._vae = load_decoder(self.params.vae)
        return self._vae

    def save(self, samples: torch.Tensor, out_dir: Path, cond: Any = None, *, kind: str = "samples",
             step: int | None = None) -> list[Path]:
        """``latents.safetensors`` (raw latents, labels); with a VAE also ``grid.png``, ``samples.npz`` and,
        when asked, one PNG per sample."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        latents = samples.detach().float().cpu() / self.scale
        labels = cond.detach().cpu().long() if isinstance(cond, torch.Tensor) else None
        tensors = {"latents": latents.contiguous(), **({"labels": labels.contiguous()} if labels is not None else {})}
        save_file(tensors, str(out_dir / "latents.safetensors"), metadata={"latent_scale": repr(self.scale)})
        files = [out_dir / "latents.safetensors"]
        decoder = self._decoder()
        if decoder is None:
            return files
        batch = self.params.vae.batch_size if self.params.vae is not None else 64
        pictures = to_pictures(decode_in_batches(decoder, latents, batch).clamp(-1, 1))
        label_array = labels.numpy() if labels is not None else None
        names = self.class_names if labels is not None else None
        title = f"{len(pictures)} samples" + (f", step {step}" if step is not None else "")
        files.append(picture_grid(pictures, out_dir / "grid.png", label_array, names, self.params.grid_columns, title))
        np.savez_compressed(out_dir / "samples.npz", images=pictures,
                            **({"labels": label_array} if label_array is not None else {}))
        files.append(out_dir / "samples.npz")
        if self.params.save_individual and kind != "preview":
            files += single_pngs(pictures, out_dir / "images", label_array, names)
        return files


SPEC = ModalitySpec(
    name="image_latents",
    description="Pre-encoded image latents (safetensors/npy shards with labels), latent scale fitted as state; "
                "samples saved as latents, decoded to PNG grids by a local VAE when given",
    factory=LatentModality,
    params_model=LatentParams,
)
