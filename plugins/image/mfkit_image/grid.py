"""PNG grids of samples: one row per class (named at the left) for conditional samples, else a square-ish grid."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mfkit_image.data.pixels import to_pil

BACKGROUND = (40, 40, 40)
TEXT = (235, 235, 235)


def upscale_factor(size: int, target: int = 48) -> int:
    """Nearest-neighbour factor that shows tiny pictures (8x8 digits) at about ``target`` pixels."""
    return max(1, target // size)


def _cell(picture: np.ndarray, factor: int) -> Image.Image:
    image = to_pil(picture).convert("RGB")
    if factor > 1:
        image = image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)
    return image


def picture_grid(pictures: np.ndarray, path: Path, labels: np.ndarray | None = None,
                 names: Sequence[str] | None = None, max_columns: int = 16, title: str | None = None,
                 pad: int = 2, max_rows: int = 32) -> Path:
    """Write uint8 pictures (N, H, W, C) as one PNG.

    With ``labels`` (N,) and ``names``: the pictures of each class in their order, ``max_columns`` a row,
    the class name left of its first row; the ``max_rows`` rows are shared among the classes present.
    Without: ceil(sqrt(N)) columns (at most ``max_columns``), at most ``max_rows`` rows.
    """
    factor = upscale_factor(max(pictures.shape[1:3]))
    cell_h, cell_w = pictures.shape[1] * factor, pictures.shape[2] * factor
    font = ImageFont.load_default()
    if labels is not None and names is not None:
        present = [k for k in range(len(names)) if (labels == k).any()]
        if labels.max(initial=-1) >= len(names):
            present.append(len(names))  # null-label (unconditional) samples get their own row(s)
        rows_per_class = max(1, max_rows // max(1, len(present)))
        rows, row_names = [], []
        for k in present:
            members = np.flatnonzero(labels == k if k < len(names) else labels >= len(names))
            for r, start in enumerate(range(0, min(len(members), rows_per_class * max_columns), max_columns)):
                rows.append(members[start:start + max_columns])
                row_names.append((names[k] if k < len(names) else "uncond.") if r == 0 else "")
        columns = max(len(r) for r in rows)
    else:
        columns = min(max_columns, max(1, math.ceil(math.sqrt(len(pictures)))))
        shown = min(len(pictures), columns * max_rows)
        rows = [np.arange(start, min(start + columns, shown)) for start in range(0, shown, columns)]
        row_names = None
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    margin = 0
    if row_names is not None:
        margin = max(probe.textbbox((0, 0), name or " ", font=font)[2] for name in row_names) + 3 * pad
    title_h = probe.textbbox((0, 0), title, font=font)[3] + 2 * pad if title else 0
    width = margin + columns * (cell_w + pad) + pad
    height = title_h + len(rows) * (cell_h + pad) + pad
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((pad, pad), title, fill=TEXT, font=font)
    for r, indices in enumerate(rows):
        top = title_h + pad + r * (cell_h + pad)
        if row_names is not None and row_names[r]:
            box = draw.textbbox((0, 0), row_names[r], font=font)
            draw.text((margin - 2 * pad - box[2], top + (cell_h - box[3]) // 2), row_names[r], fill=TEXT, font=font)
        for c, index in enumerate(indices):
            canvas.paste(_cell(pictures[index], factor), (margin + pad + c * (cell_w + pad), top))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


def single_pngs(pictures: np.ndarray, folder: Path, labels: np.ndarray | None = None,
                names: Sequence[str] | None = None) -> list[Path]:
    """One PNG per picture at its own resolution: ``00012.png`` or ``00012_<class>.png``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, picture in enumerate(pictures):
        suffix = ""
        if labels is not None and names is not None:
            label = int(labels[i])
            suffix = "_" + (names[label] if label < len(names) else "uncond")
        path = folder / f"{i:05d}{_safe(suffix)}.png"
        to_pil(picture).save(path)
        paths.append(path)
    return paths


def _safe(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in text)
