"""The ``points`` modality: point clouds of a fixed size (num_points, 3), centred in the unit sphere.

Data: the embedded shapes corpus (default; seven trimesh families, conditional on the family) or a
user's folder of meshes / point clouds (sub-folders as classes). Samples are written as PLY files
(trimesh) with a PNG of a few clouds from several views.

Raw items (what ``decode`` returns and ``save`` writes) are clouds in the unit sphere. Model tensors
are the same clouds times a factor s fitted on the training split, s = 1 / std(coordinates), so the
data have unit spread like the noise (unit-sphere clouds have a coordinate std of about 0.4); s is the
modality's state and travels with the run (``standardize: false`` keeps s = 1).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import trimesh
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch.utils.data import Dataset

from mfkit.plugins import ClassCondition, ConditionSpec, Modality, ModalitySpec, PluginContext
from mfkit_points.corpus import SPLITS, load_corpus
from mfkit_points.folders import load_folder, scan
from mfkit_points.geometry import Rotation, random_rotation_matrices
from mfkit_points.reading import file_seed, read_cloud, sample_geometry
from mfkit_points.render import render_clouds
from mfkit_points.shapes import FAMILIES


class PointsParams(BaseModel):
    """Parameters of the points modality."""

    model_config = ConfigDict(extra="forbid")
    folder: str | None = Field(None, description="a folder of meshes (OBJ/OFF/PLY/STL/GLB) or point clouds "
                                                 "(PLY/XYZ/NPY), one sub-folder per class; null: the embedded "
                                                 "shapes corpus")
    num_points: int = Field(2048, ge=16, description="points per cloud (sampled once per shape and cached)")
    seed: int = Field(0, description="seed of the corpus and of the surface sampling")
    corpus_train_per_class: int = Field(256, gt=0, description="corpus: training shapes per family")
    corpus_val_per_class: int = Field(64, gt=0, description="corpus: held-out shapes per family")
    corpus_rotation: Rotation = Field("upright", description="corpus: none, upright (random turn about the "
                                                             "vertical axis) or any (uniform over all rotations)")
    conditional: bool = Field(True, description="folder: condition on the class sub-folders")
    classes: list[str] | None = Field(None, description="folder: use only these class sub-folders (null: all)")
    val_fraction: float = Field(0.1, ge=0, lt=1, description="folder: share held out where no train/test "
                                                             "sub-folders say")
    max_per_class: int | None = Field(None, gt=0, description="folder: at most this many files per class and "
                                                              "split (null: all)")
    workers: int | None = Field(None, ge=0, description="folder: processes that sample meshes on the first run "
                                                        "(null: up to 8 for large folders)")
    augment_rotation: Rotation = Field("none", description="training augmentation: none, upright or any rotation")
    up_axis: Literal["x", "y", "z"] = Field("z", description="the vertical axis (ShapeNet: y, ModelNet: z; the "
                                                             "corpus is z) for upright rotations and previews")
    standardize: bool = Field(True, description="scale model tensors to unit coordinate std (a factor fitted on "
                                                "the training split, kept with the run); false: unit-sphere clouds")
    preview_clouds: int = Field(14, gt=0, description="clouds drawn in a PNG (and written as PLY in previews)")

    @model_validator(mode="after")
    def _corpus_is_z_up(self) -> "PointsParams":
        if self.folder is None and self.up_axis != "z":
            raise ValueError("the embedded corpus is z-up; up_axis applies to a folder (leave it at z)")
        return self


class PointSet(Dataset):
    """Unit-sphere clouds (S, N, 3) with labels (S,) or None, served as model tensors: times ``scale``,
    each optionally turned by a random rotation (drawn from torch's global generator, so a seeded run
    reads the same items)."""

    def __init__(self, points: torch.Tensor, labels: torch.Tensor | None, rotation: Rotation, up_axis: str,
                 scale: float = 1.0) -> None:
        self.points, self.labels, self.rotation, self.up_axis, self.scale = points, labels, rotation, up_axis, scale

    def __len__(self) -> int:
        return self.points.shape[0]

    def __getitem__(self, index: int):
        x = self.points[index] * self.scale
        if self.rotation != "none":
            x = x @ random_rotation_matrices(1, self.rotation, self.up_axis)[0].T
        return x if self.labels is None else (x, self.labels[index])


class Points(Modality):
    """Point clouds as model tensors (num_points, 3); raw items are (num_points, 3) float arrays."""

    splits = ("train", "val")
    #: A cloud is a set of points: reordering them is the same cloud (enables objective.set_coupling).
    set_axis = 0

    def __init__(self, params: PointsParams, context: PluginContext) -> None:
        self.params, self.context = params, context
        self.sample_shape = (params.num_points, 3)
        self._names: list[str] | None = list(FAMILIES) if params.folder is None else None
        self._scanned = params.folder is None
        self._arrays: dict[str, np.ndarray] | None = None
        self._scale: float | None = None if params.standardize else 1.0

    # -- conditions
    @property
    def class_names(self) -> list[str] | None:  # type: ignore[override]
        """The corpus families, or the folder's class sub-folders (from the run's state when loaded)."""
        if not self._scanned:
            _, self._names = scan(Path(self.params.folder), self.params.val_fraction, self.params.classes,
                                  self.params.conditional)
            self._scanned = True
        return self._names

    def condition(self) -> ConditionSpec | None:
        return ClassCondition(self.class_names) if self.class_names else None

    # -- data
    def _data(self) -> dict[str, np.ndarray]:
        if self._arrays is None:
            p, cache = self.params, self.context.cache_dir if self.context else PluginContext().cache_dir
            if p.folder is None:
                self._arrays = load_corpus(cache, p.num_points, p.corpus_train_per_class, p.corpus_val_per_class,
                                           p.corpus_rotation, p.seed)
            else:
                self._arrays, names = load_folder(Path(p.folder), cache, p.num_points, p.seed, p.val_fraction,
                                                  p.classes, p.conditional, p.max_per_class, p.workers)
                if self._scanned and names != self._names:
                    raise ValueError(f"the classes in {p.folder} ({names}) differ from the run's "
                                     f"({self._names}); train a new run for the changed folder")
                self._names, self._scanned = names, True
        return self._arrays

    def dataset(self, split: str = "train") -> Dataset:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; the points modality has {', '.join(SPLITS)}")
        arrays = self._data()
        chosen = arrays["split"] == SPLITS[split]
        if not chosen.any():
            raise ValueError(f"the {split!r} split is empty (of {len(chosen)} clouds); "
                             + ("raise val_fraction or add a test/ sub-folder" if split == "val" else
                                "add training files"))
        points = torch.from_numpy(arrays["points"][chosen])
        labels = torch.from_numpy(arrays["labels"][chosen]) if self.class_names else None
        rotation = self.params.augment_rotation if split == "train" else "none"
        return PointSet(points, labels, rotation, self.params.up_axis, self.scale)

    # -- state: the scale (and a folder's class names, so sampling works without the folder)
    @property
    def scale(self) -> float:
        """Model tensor = unit-sphere cloud x scale. Fitted by :meth:`fit`, or loaded with the run's
        state; without either it is computed here from the training split (the same value)."""
        if self._scale is None:
            arrays = self._data()
            train = arrays["points"][arrays["split"] == SPLITS["train"]]
            self._scale = float(1.0 / max(float(train.astype(np.float64).std()), 1e-6))
        return self._scale

    def fit(self, dataset: Dataset) -> None:
        """Fit the scale on the training split and resolve the class names (clouds themselves are
        normalised one by one, so nothing else is fitted)."""
        if self.params.standardize:
            self._scale = None
            _ = self.scale
        _ = self.class_names

    def state_dict(self) -> dict[str, torch.Tensor]:
        state = {"scale": torch.tensor([self.scale], dtype=torch.float64)}
        names = self.class_names
        if names and self.params.folder is not None:
            state["class_names"] = torch.tensor(list("\n".join(names).encode()), dtype=torch.uint8)
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        unknown = sorted(set(state) - {"class_names", "scale"})
        if unknown:
            raise ValueError(f"the points modality keeps 'scale' and 'class_names', was given {unknown}")
        if "scale" in state:
            self._scale = float(state["scale"].reshape(-1)[0])
        if "class_names" in state:
            self._names = bytes(state["class_names"].tolist()).decode().split("\n")
            self._scanned = True

    # -- raw items <-> tensors
    def encode(self, raw: Any) -> torch.Tensor:
        """A cloud (M, 3) array or tensor, a trimesh mesh/point cloud, or a path to a supported file ->
        (num_points, 3) model tensor: resampled, normalised to the unit sphere (a normalised cloud of
        num_points stays as it is), times the scale. A file is sampled like training samples it (see
        :meth:`sampling_key`)."""
        count = self.params.num_points
        if isinstance(raw, (str, Path)):
            cloud = read_cloud(Path(raw), count, file_seed(self.params.seed, self.sampling_key(Path(raw))))
        else:
            if isinstance(raw, torch.Tensor):
                raw = raw.detach().cpu().numpy()
            cloud = sample_geometry(raw, count, np.random.default_rng(self.params.seed))
        return torch.from_numpy(cloud) * self.scale

    def sampling_key(self, path: Path) -> str:
        """The name that seeds a file's point sampling: its path relative to the folder when it lies inside
        it (as training uses, so the cloud is the training one), else its file name alone. Links count as
        training sees them: a linked file by its own name in the folder, a linked folder by its target."""
        if self.params.folder is not None:
            folder = Path(self.params.folder).expanduser()
            given = path.expanduser().absolute()
            for file, root in ((given.parent.resolve() / given.name, folder.resolve()),
                               (given.resolve(), folder.resolve()), (given, folder.absolute())):
                if file.is_relative_to(root):
                    return file.relative_to(root).as_posix()
        return path.name

    def decode(self, tensor: torch.Tensor) -> np.ndarray:
        """Model tensors (B, num_points, 3) -> clouds (B, num_points, 3) in unit-sphere coordinates."""
        return (tensor.detach().float().cpu().reshape(-1, *self.sample_shape) / self.scale).numpy()

    def preview_count(self, requested: int) -> int:
        return min(requested, self.params.preview_clouds)

    def save(self, samples: torch.Tensor, out_dir: Path, cond: Any = None, *, kind: str = "samples",
             step: int | None = None) -> list[Path]:
        """``clouds.png`` (the first ``preview_clouds`` clouds, four views each) and one PLY per cloud
        (previews: only those drawn); final samples also ``clouds.npy`` (B, N, 3) and ``labels.npy``."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        clouds = self.decode(samples)
        condition = self.condition()
        names = [condition.describe(cond, i) if cond is not None and condition else "" for i in range(len(clouds))]
        shown = min(len(clouds), self.params.preview_clouds)
        title = f"{kind}{f' at step {step}' if step is not None else ''}: {shown} of {len(clouds)} clouds, " \
                f"{clouds.shape[1]} points each"
        files = [render_clouds(clouds[:shown], out_dir / "clouds.png", names[:shown] if cond is not None else None,
                               up_axis=self.params.up_axis, title=title)]
        for i in range(shown if kind == "preview" else len(clouds)):
            path = out_dir / f"cloud-{i:05d}{'-' + names[i] if names[i] else ''}.ply"
            trimesh.PointCloud(clouds[i]).export(path, file_type="ply")
            files.append(path)
        if kind != "preview":
            np.save(out_dir / "clouds.npy", clouds)
            files.append(out_dir / "clouds.npy")
            if cond is not None:
                np.save(out_dir / "labels.npy", torch.as_tensor(cond).cpu().numpy())
                files.append(out_dir / "labels.npy")
        return files


SPEC = ModalitySpec(
    name="points",
    description="3-D point clouds (num_points, 3) from an embedded shapes corpus or a mesh folder; PLY + PNG out",
    factory=Points,
    params_model=PointsParams,
)
