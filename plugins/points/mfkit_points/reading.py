"""Reading one mesh or point-cloud file as a normalised cloud of a fixed number of points.

Meshes (OBJ, OFF, PLY, STL, GLB/GLTF; scenes are merged) are loaded with trimesh and their surface
is sampled uniformly by area. Point clouds are read directly: PLY without faces, XYZ text (x y z per
line, extra columns ignored) and NPY arrays (M, >= 3). Either way the result is centred and scaled to
the unit sphere (:func:`mfkit_points.geometry.normalize`).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import trimesh

from mfkit_points.geometry import normalize, resample

MESH_SUFFIXES = (".obj", ".off", ".ply", ".stl", ".glb", ".gltf")
CLOUD_SUFFIXES = (".xyz", ".npy")
SUFFIXES = MESH_SUFFIXES + CLOUD_SUFFIXES


class BrokenFile(ValueError):
    """A file that cannot give a point cloud (unreadable, empty, degenerate or non-finite)."""


def file_seed(seed: int, name: str) -> np.random.Generator:
    """A random stream that depends on the seed and the file's name only (not on reading order)."""
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _finite_points(points: np.ndarray, what: str) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] < 3:
        raise BrokenFile(f"{what} has shape {points.shape}, not (points, 3)")
    points = points[:, :3]
    if len(points) == 0:
        raise BrokenFile(f"{what} has no points")
    if not np.isfinite(points).all():
        raise BrokenFile(f"{what} has NaN or infinite coordinates")
    if np.ptp(points, axis=0).max() <= 0:
        raise BrokenFile(f"{what} has all its points in one place")
    return points


def sample_geometry(geometry: object, count: int, rng: np.random.Generator) -> np.ndarray:
    """A normalised (count, 3) cloud from a trimesh Trimesh, PointCloud or Scene, or an (M, 3) array."""
    if isinstance(geometry, trimesh.Scene):
        if not geometry.geometry:
            raise BrokenFile("the file holds no geometry")
        geometry = geometry.to_mesh() if any(isinstance(g, trimesh.Trimesh) for g in geometry.geometry.values()) \
            else trimesh.PointCloud(np.concatenate([np.asarray(g.vertices) for g in geometry.geometry.values()]))
    if isinstance(geometry, trimesh.Trimesh) and len(geometry.faces) > 0:
        _finite_points(geometry.vertices, "the mesh")
        if not geometry.area > 0 or not np.isfinite(geometry.area):
            raise BrokenFile("the mesh has no surface area (degenerate faces)")
        points, _ = trimesh.sample.sample_surface(geometry, count, seed=int(rng.integers(2 ** 62)))
    elif isinstance(geometry, (trimesh.Trimesh, trimesh.PointCloud)):
        points = resample(_finite_points(geometry.vertices, "the point cloud"), count, rng)
    else:
        points = resample(_finite_points(np.asarray(geometry), "the array"), count, rng)
    return normalize(points)


def read_cloud(path: Path, count: int, rng: np.random.Generator) -> np.ndarray:
    """A normalised (count, 3) cloud from the file at ``path``; :class:`BrokenFile` says why not."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            geometry = np.load(path, allow_pickle=False)
        elif suffix == ".xyz":
            delimiter = "," if b"," in path.read_bytes()[:4096] else None
            geometry = np.loadtxt(path, ndmin=2, usecols=(0, 1, 2), delimiter=delimiter)
        elif suffix in MESH_SUFFIXES:
            geometry = trimesh.load(path)
        else:
            raise BrokenFile(f"unsupported file type {suffix!r} (supported: {', '.join(SUFFIXES)})")
    except BrokenFile:
        raise
    except Exception as error:  # noqa: BLE001 - any parser failure means the file is broken
        raise BrokenFile(f"cannot be read ({type(error).__name__}: {str(error)[:120]})") from None
    return sample_geometry(geometry, count, rng)
