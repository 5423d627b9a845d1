"""The embedded shapes corpus: seeded clouds of every family in :data:`mfkit_points.shapes.FAMILIES`,
a training split and a held-out split, generated once into the cache with a progress bar."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from mfkit_points.cache import content_key, load_or_build
from mfkit_points.geometry import Rotation
from mfkit_points.progress import progress_bar
from mfkit_points.shapes import FAMILIES, make_shape

SPLITS = {"train": 0, "val": 1}


def corpus_path(cache_dir: Path, points: int, train_per_class: int, val_per_class: int, rotation: Rotation,
                seed: int) -> Path:
    key = content_key(kind="shapes", families=list(FAMILIES), points=points, train=train_per_class,
                      val=val_per_class, rotation=rotation, seed=seed)
    return Path(cache_dir) / "points" / f"shapes-{points}pts-{key}.npz"


def load_corpus(cache_dir: Path, points: int, train_per_class: int, val_per_class: int, rotation: Rotation,
                seed: int) -> dict[str, np.ndarray]:
    """Arrays ``points`` (S, points, 3) float32, ``labels`` (S,) int64 (index into FAMILIES) and ``split``
    (S,) uint8 (0 train, 1 val); built on first use. Shape i of family k in split s comes from the
    seed (seed, k, s, i) alone; families are interleaved (box, ellipsoid, ..., vase, box, ...)."""

    def build() -> dict[str, np.ndarray]:
        plan = [(k, s, i) for s, per_class in ((0, train_per_class), (1, val_per_class))
                for i in range(per_class) for k in range(len(FAMILIES))]  # interleaved: any prefix is balanced
        names = list(FAMILIES)
        clouds = np.empty((len(plan), points, 3), dtype=np.float32)
        with progress_bar(f"generating the shapes corpus ({len(plan)} shapes, {points} points)", len(plan)) as advance:
            for row, (k, s, i) in enumerate(plan):
                clouds[row] = make_shape(names[k], (seed, k, s, i), points, rotation)
                advance()
        return {"points": clouds, "labels": np.array([k for k, _, _ in plan], dtype=np.int64),
                "split": np.array([s for _, s, _ in plan], dtype=np.uint8)}

    return load_or_build(corpus_path(cache_dir, points, train_per_class, val_per_class, rotation, seed), build)
