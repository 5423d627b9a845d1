"""Render 2-D points as a PNG scatter plot with Pillow (no plotting library needed)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


def scatter_png(points: np.ndarray, path: Path, labels: np.ndarray | None = None, extent: float = 4.0,
                size: int = 512, title: str | None = None, reference: np.ndarray | None = None) -> Path:
    """Draw (N, 2) points in [-extent, extent]^2 on a white square with axes; colour by label if given.

    ``reference`` points (e.g. real data) are drawn first, in light grey, for comparison.
    """
    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    centre = size / 2
    scale = size / (2 * extent)
    draw.line([(0, centre), (size, centre)], fill=(220, 220, 220))
    draw.line([(centre, 0), (centre, size)], fill=(220, 220, 220))
    if reference is not None:
        for x, y in zip((centre + reference[:, 0] * scale).tolist(), (centre - reference[:, 1] * scale).tolist()):
            draw.ellipse([x - 1, y - 1, x + 1, y + 1], fill=(205, 205, 205))
    xs = centre + points[:, 0] * scale
    ys = centre - points[:, 1] * scale
    for i, (x, y) in enumerate(zip(xs.tolist(), ys.tolist())):
        colour = PALETTE[int(labels[i]) % len(PALETTE)] if labels is not None else (31, 119, 180)
        draw.ellipse([x - 1.2, y - 1.2, x + 1.2, y + 1.2], fill=colour)
    if title:
        draw.text((6, 6), title, fill=(0, 0, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path
