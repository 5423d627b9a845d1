"""Shared fixtures: a private cache folder, one thread (the test machine is shared), small image folders."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mfkit.plugins import PluginContext

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    cache = tmp_path_factory.getbasetemp() / "mfkit-cache"
    monkeypatch.setenv("MFKIT_CACHE", str(cache))
    return cache


@pytest.fixture
def context(tmp_path):
    return PluginContext(purpose="test", cache_dir=tmp_path / "cache")


def write_picture(path, size=(12, 10), color=(200, 30, 30), mode="RGB", fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(abs(hash(path.name)) % 2**32)
    array = (rng.random((size[1], size[0], 3)) * 60 + np.array(color)).clip(0, 255).astype(np.uint8)
    image = Image.fromarray(array, "RGB").convert(mode)
    image.save(path, format=fmt)
    return path


@pytest.fixture
def class_folder(tmp_path):
    """cats/ (3 PNG + 1 WebP), dogs/ (3 JPEG), and one corrupt PNG in dogs/."""
    root = tmp_path / "pets"
    for i in range(3):
        write_picture(root / "cats" / f"c{i}.png", color=(220, 40, 40))
        write_picture(root / "dogs" / f"d{i}.jpg", size=(16, 9), color=(30, 40, 220))
    write_picture(root / "cats" / "c3.webp", color=(220, 40, 40), mode="RGBA")
    (root / "dogs" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    return root
