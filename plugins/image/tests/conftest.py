"""Shared fixtures: a private cache folder, one thread (the test machine is shared), small image folders."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mfkit.plugins import PluginContext

from image_testutil import write_picture

@pytest.fixture(autouse=True)
def one_thread():
    """These tests run tiny models: one thread avoids oversubscribing a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    cache = tmp_path_factory.getbasetemp() / "mfkit-cache"
    monkeypatch.setenv("MFKIT_CACHE", str(cache))
    return cache


@pytest.fixture
def context(tmp_path):
    return PluginContext(purpose="test", cache_dir=tmp_path / "cache")


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
