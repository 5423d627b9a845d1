"""Shared fixtures: a temporary cache, a plugin context and a tiny speech folder of synthetic tones."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile

from mfkit.plugins import PluginContext

from audio_testutil import tone


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MFKIT_CACHE", str(tmp_path / "mfkit-cache"))


@pytest.fixture
def context(tmp_path) -> PluginContext:
    return PluginContext(purpose="test", cache_dir=tmp_path / "cache")


@pytest.fixture
def tone_folder(tmp_path) -> Path:
    """<root>/{low,high}/*.{wav,flac,ogg} at 16 and 22.05 kHz: low = 300-400 Hz, high = 2-2.5 kHz tones."""
    root = tmp_path / "tones"
    for label, base in (("low", 300.0), ("high", 2000.0)):
        (root / label).mkdir(parents=True)
        for i in range(12):
            rate = 16000 if i % 2 else 22050
            suffix = (".wav", ".flac", ".ogg")[i % 3]
            soundfile.write(str(root / label / f"{label}_{i:02d}{suffix}"), tone(base + 40 * i, rate), rate)
    (root / "_background_noise_").mkdir()
    soundfile.write(str(root / "_background_noise_" / "noise.wav"), np.zeros(800, np.float32), 8000)
    return root
