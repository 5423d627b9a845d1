"""Test data for the audio plugin's tests: small feature settings and synthetic tones."""
from __future__ import annotations

import math

import numpy as np

#: Small feature settings so every test runs in well under a second of audio work.
SMALL = {"sample_rate": 8000, "duration": 0.25, "n_fft": 256, "hop": 64, "n_mels": 16}


def tone(frequency: float, rate: int, seconds: float = 0.2, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (amplitude * np.sin(2 * math.pi * frequency * t)).astype(np.float32)
