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


def write_greys(root, count, start=0, classes=("cat", "dog")):
    """Pictures of one flat grey each (cat k: 2k, dog k: 128 + 2k), so items can be told apart."""
    for offset, name in zip((0, 128), classes):
        for k in range(start, start + count):
            path = root / name / f"{k:03d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((4, 4), offset + 2 * k, np.uint8)).save(path)


def grey_list(data) -> list[int]:
    """The grey of every item of a data set of :func:`write_greys` pictures, in order."""
    items = (data[i] for i in range(len(data)))
    return [round((float((item[0] if isinstance(item, tuple) else item)[0, 0, 0]) + 1) * 127.5) for item in items]
