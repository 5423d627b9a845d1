"""A user's folder of meshes or point clouds: classes, splits, and the cached sampled clouds.

Layouts (``root`` is the folder the recipe names):

* ModelNet style: ``root/<class>/train/*.off`` and ``root/<class>/test/*.off``;
* ShapeNet style: ``root/<class>/<model>/models/model_normalized.obj`` (any depth below the class);
* flat: files directly in ``root`` (no classes: unconditional).

The first folder level is the class (when there are sub-folders with files). A path component named
``train``, ``test`` or ``val`` below it fixes the split (``test`` counts as ``val``); other files go to
``val`` with probability ``val_fraction``, decided by a hash of their path, so the split never changes
when files are added; a class with no held-out file gets a warning (the split itself never moves). Files
whose path below the root has a part starting with ``.`` or ``__MACOSX`` (``.ipynb_checkpoints/``,
``.DS_Store``, AppleDouble ``._x.off``, macOS zip leftovers) are skipped. Clouds are sampled once per file
and cached; broken files are skipped with one warning that names each and counts them.
"""
from __future__ import annotations

import hashlib
import os
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mfkit.plugins import file_signature

from mfkit_points.cache import content_key, load_or_build
from mfkit_points.progress import progress_bar
from mfkit_points.reading import SUFFIXES, BrokenFile, file_seed, read_cloud

SPLIT_NAMES = {"train": 0, "test": 1, "val": 1}


class FolderError(ValueError):
    """The folder the recipe names cannot be used (missing, empty, no readable files)."""


@dataclass(frozen=True)
class Entry:
    """One file: its path relative to the root, class (None when flat) and split (0 train, 1 val)."""

    name: str
    label: str | None
    split: int


def _is_hidden(relative: Path) -> bool:
    """Whether a path below the root is hidden or a macOS leftover: a part starts with ``.`` or ``__MACOSX``."""
    return any(part.startswith((".", "__MACOSX")) for part in relative.parts)


def _split_of(relative: Path, val_fraction: float) -> int:
    for part in relative.parts[:-1]:
        if part.lower() in SPLIT_NAMES:
            return SPLIT_NAMES[part.lower()]
    share = int.from_bytes(hashlib.sha256(relative.as_posix().encode()).digest()[:4], "little") / 2 ** 32
    return int(share < val_fraction)


def scan(root: Path, val_fraction: float, classes: list[str] | None = None, conditional: bool = True
         ) -> tuple[list[Entry], list[str] | None]:
    """The supported files under ``root`` and the class names (None when unconditional), sorted."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FolderError(f"the point-cloud folder {root} does not exist; set modality.params.folder to a folder "
                          f"of meshes (OBJ/OFF/PLY/STL/GLB) or clouds (PLY/XYZ/NPY), one sub-folder per class")
    files = sorted(f for f in (p.relative_to(root) for p in root.rglob("*") if p.suffix.lower() in SUFFIXES)
                   if not _is_hidden(f) and (root / f).is_file())
    if not files:
        raise FolderError(f"the folder {root} holds no mesh or point-cloud files (looked for "
                          f"{', '.join(SUFFIXES)} at any depth, skipping hidden and __MACOSX folders)")
    nested = sorted({f.parts[0] for f in files if len(f.parts) > 1})
    if classes:
        missing = [c for c in classes if c not in nested]
        if missing:
            raise FolderError(f"classes {', '.join(missing)} are not sub-folders of {root} with files; "
                              f"found: {', '.join(nested) or 'none'}")
        nested = list(classes)
    if conditional and nested:
        loose = [f for f in files if len(f.parts) == 1]
        if loose:
            warnings.warn(f"{len(loose)} file(s) directly in {root} belong to no class sub-folder and are "
                          f"ignored (e.g. {loose[0]})", stacklevel=2)
        entries = [Entry(f.as_posix(), f.parts[0], _split_of(Path(*f.parts[1:]), val_fraction))
                   for f in files if len(f.parts) > 1 and f.parts[0] in nested]
        return entries, nested
    chosen = [f for f in files if not classes or f.parts[0] in classes]
    return [Entry(f.as_posix(), None, _split_of(f, val_fraction)) for f in chosen], None


def _limit(entries: list[Entry], per_class: int | None) -> list[Entry]:
    """At most ``per_class`` files of each (class, split), the first by name."""
    if per_class is None:
        return entries
    kept, seen = [], {}
    for entry in entries:
        key = (entry.label, entry.split)
        seen[key] = seen.get(key, 0) + 1
        if seen[key] <= per_class:
            kept.append(entry)
    return kept


def _warn_classes_without_held_out(arrays: dict[str, np.ndarray], names: list[str] | None, root: Path,
                                   val_fraction: float) -> None:
    """One warning naming the classes with no held-out cloud (``mfkit eval --cond`` cannot score them)."""
    held_out = arrays["split"] == 1
    if not names or (val_fraction == 0 and not held_out.any()):
        return
    present = set(arrays["labels"][held_out].tolist())
    lacking = [name for index, name in enumerate(names) if index not in present]
    if lacking:
        warnings.warn(f"class(es) {', '.join(lacking)} in {root} have no held-out file, so evaluation "
                      f"(mfkit eval --cond) has no real items of them; raise val_fraction (now {val_fraction:g}), "
                      f"add files to those classes, or give them a test/ sub-folder", stacklevel=3)


def _read_one(job: tuple[str, str, int, int]) -> tuple[np.ndarray | None, str | None]:
    root, name, count, seed = job
    try:
        return read_cloud(Path(root) / name, count, file_seed(seed, name)), None
    except BrokenFile as error:
        return None, str(error)


def _workers(requested: int | None, jobs: int) -> int:
    if requested is not None:
        return requested
    return 0 if jobs < 64 else min(8, os.cpu_count() or 1)


def load_folder(root: Path, cache_dir: Path, points: int, seed: int, val_fraction: float = 0.1,
                classes: list[str] | None = None, conditional: bool = True, per_class: int | None = None,
                workers: int | None = None) -> tuple[dict[str, np.ndarray], list[str] | None]:
    """Arrays ``points`` (S, points, 3), ``labels`` (S,) (-1 when unconditional), ``split`` (S,) and
    ``broken`` (names and reasons of skipped files), and the class names. Cached under ``cache_dir`` by a
    hash of the file list (names and :func:`mfkit.plugins.file_signature`: sizes, modification and change
    times) and the settings."""
    root = Path(root).expanduser().resolve()
    entries, names = scan(root, val_fraction, classes, conditional)
    entries = _limit(entries, per_class)
    stats = [(e.name, file_signature(root / e.name)) for e in entries]
    key = content_key(kind="folder", root=str(root), files=stats, points=points, seed=seed,
                      val_fraction=val_fraction, classes=names, conditional=conditional)

    def build() -> dict[str, np.ndarray]:
        jobs = [(str(root), e.name, points, seed) for e in entries]
        n_workers = _workers(workers, len(jobs))
        results = []
        with progress_bar(f"sampling {points} points from {len(jobs)} files in {root.name}", len(jobs)) as advance:
            if n_workers > 1:
                with ProcessPoolExecutor(n_workers) as pool:
                    for result in pool.map(_read_one, jobs, chunksize=16):
                        results.append(result)
                        advance()
            else:
                for job in jobs:
                    results.append(_read_one(job))
                    advance()
        good = [i for i, (cloud, _) in enumerate(results) if cloud is not None]
        clouds = np.stack([results[i][0] for i in good]) if good else np.zeros((0, points, 3), np.float32)
        labels = [names.index(entries[i].label) if names else -1 for i in good]
        broken = [f"{entries[i].name}: {reason}" for i, (_, reason) in enumerate(results) if reason is not None]
        return {"points": clouds.astype(np.float32), "labels": np.array(labels, dtype=np.int64),
                "split": np.array([entries[i].split for i in good], dtype=np.uint8),
                "broken": np.array(broken, dtype=np.str_)}

    arrays = load_or_build(Path(cache_dir) / "points" / f"folder-{root.name}-{points}pts-{key}.npz", build)
    broken = arrays["broken"].tolist()
    if broken:
        warnings.warn(f"skipped {len(broken)} broken file(s) of {len(entries)} in {root}: " + "; ".join(broken),
                      stacklevel=2)
    if len(arrays["points"]) == 0:
        raise FolderError(f"none of the {len(entries)} files in {root} could be read (first: {broken[0]})")
    _warn_classes_without_held_out(arrays, names, root, val_fraction)
    return arrays, names
