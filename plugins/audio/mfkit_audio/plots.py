"""A PNG grid of spectrograms: low mel bands at the bottom, time to the right, a viridis-like colour map."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

# Viridis at five stops, interpolated: dark blue (quiet) to yellow (loud).
_STOPS = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=np.float32)


def colour_map(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (H, W) -> RGB uint8 (H, W, 3)."""
    position = np.clip(values, 0, 1) * (len(_STOPS) - 1)
    low = np.floor(position).astype(int).clip(0, len(_STOPS) - 2)
    frac = (position - low)[..., None]
    return (_STOPS[low] * (1 - frac) + _STOPS[low + 1] * frac).astype(np.uint8)


def spectrogram_grid(log_mel: torch.Tensor, path: Path, titles: Sequence[str] | None = None, columns: int = 10,
                     scale: int = 3, vmin: float | None = None, vmax: float | None = None) -> Path:
    """Write log-mels (B, n_mels, frames) as one PNG, ``columns`` per row, each titled; one colour scale
    for all (``vmin``..``vmax``, default: the batch's 1st..99.9th percentile)."""
    data = log_mel.detach().float().cpu().numpy()
    lo = float(np.percentile(data, 1)) if vmin is None else vmin
    hi = float(np.percentile(data, 99.9)) if vmax is None else vmax
    count, n_mels, frames = data.shape
    columns = max(1, min(columns, count))
    rows = -(-count // columns)
    cell_w, cell_h, title_h, gap = frames * scale, n_mels * scale, 12, 4
    image = Image.new("RGB", (columns * (cell_w + gap) + gap, rows * (cell_h + title_h + gap) + gap), "white")
    draw = ImageDraw.Draw(image)
    for index in range(count):
        row, col = divmod(index, columns)
        x, y = gap + col * (cell_w + gap), gap + row * (cell_h + title_h + gap)
        rgb = colour_map((data[index][::-1] - lo) / max(hi - lo, 1e-6))
        tile = Image.fromarray(rgb).resize((cell_w, cell_h), Image.NEAREST)
        image.paste(tile, (x, y + title_h))
        if titles is not None:
            draw.text((x, y), titles[index], fill="black")
    path = Path(path)
    image.save(path)
    return path
