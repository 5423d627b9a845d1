"""Helpers of the image plugin's tests (a module name no other test folder uses)."""
from __future__ import annotations

import numpy as np
from PIL import Image


def write_picture(path, size=(12, 10), color=(200, 30, 30), mode="RGB", fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(abs(hash(path.name)) % 2**32)
    array = (rng.random((size[1], size[0], 3)) * 60 + np.array(color)).clip(0, 255).astype(np.uint8)
    image = Image.fromarray(array, "RGB").convert(mode)
    image.save(path, format=fmt)
    return path
