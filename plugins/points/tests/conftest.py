"""Shared fixtures: a private cache folder for every test, and a small ModelNet-style mesh folder."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import trimesh

from mfkit.plugins import PluginContext


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch) -> Path:
    """Every test caches under its own temporary folder, never in ~/.cache."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("MFKIT_CACHE", str(cache))
    return cache


@pytest.fixture
def context(private_cache) -> PluginContext:
    return PluginContext(purpose="test", cache_dir=private_cache)


def write_mesh_folder(root: Path, broken: bool = True) -> Path:
    """root/cube/{train,test}/... and root/ball/{train,test}/... in every supported format, plus
    (when ``broken``) a garbage OFF file and an empty OBJ file."""
    box, ball = trimesh.creation.box(extents=(1.0, 0.6, 0.3)), trimesh.creation.icosphere(subdivisions=2)
    files = {
        "cube/train/a.off": box, "cube/train/b.obj": box, "cube/train/c.glb": box, "cube/test/d.stl": box,
        "ball/train/a.ply": ball, "ball/train/b.stl": ball, "ball/test/c.off": ball,
    }
    for name, mesh in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        mesh.export(path)
    cloud = trimesh.sample.sample_surface(ball, 300, seed=0)[0]
    np.savetxt(root / "ball/train/d.xyz", cloud)
    np.save(root / "ball/train/e.npy", cloud)
    trimesh.PointCloud(cloud).export(root / "ball/train/f.ply")
    if broken:
        (root / "cube/train/broken.off").write_text("OFF\nthis is not a mesh\n")
        (root / "ball/train/empty.obj").write_text("")
    return root


@pytest.fixture
def mesh_folder(tmp_path) -> Path:
    return write_mesh_folder(tmp_path / "meshes")
