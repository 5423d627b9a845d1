"""PNG figures for the benchmark reports, drawn with Pillow (mfkit needs no plotting library).

- :func:`scatter_grid`: rows = methods, columns = number of network calls, one 2-D scatter per cell;
- :func:`line_plot`: metric against network calls or wall time, one line per method, log-scale x.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (255, 127, 14), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


def scatter_grid(cells: dict[tuple[str, int], np.ndarray], rows: Sequence[str], columns: Sequence[int], path: Path,
                 title: str = "", reference: np.ndarray | None = None, cell: int = 150, extent: float = 3.5) -> Path:
    """``cells[(row, column)]``: points (N, 2) in [-extent, extent]^2; a missing cell stays blank."""
    label_width, header = 230, 34
    image = Image.new("RGB", (label_width + cell * len(columns), header + cell * len(rows)), "white")
    draw = ImageDraw.Draw(image)
    draw.text((6, 4), title, fill=(0, 0, 0))
    for j, column in enumerate(columns):
        draw.text((label_width + j * cell + cell // 2 - 20, 20), f"{column} call{'s' * (column > 1)}", fill=(0, 0, 0))
    scale = cell / (2 * extent)
    for i, row in enumerate(rows):
        top = header + i * cell
        draw.text((6, top + cell // 2 - 6), row, fill=(0, 0, 0))
        for j, column in enumerate(columns):
            left = label_width + j * cell
            draw.rectangle([left, top, left + cell - 1, top + cell - 1], outline=(200, 200, 200))
            points = cells.get((row, column))
            if points is None:
                draw.text((left + cell // 2 - 8, top + cell // 2 - 6), "-", fill=(150, 150, 150))
                continue
            for source, colour in ((reference, (215, 215, 215)), (points, (31, 119, 180))):
                if source is None:
                    continue
                xs = left + cell / 2 + source[:, 0] * scale
                ys = top + cell / 2 - source[:, 1] * scale
                inside = (xs > left) & (xs < left + cell - 1) & (ys > top) & (ys < top + cell - 1)
                for x, y in zip(xs[inside].tolist(), ys[inside].tolist()):
                    draw.point((x, y), fill=colour)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def line_plot(series: dict[str, list[tuple[float, float]]], path: Path, *, title: str, xlabel: str, ylabel: str,
              floor: float | None = None, size: tuple[int, int] = (640, 420)) -> Path:
    """Lines of (x, y) points, x on a log scale; ``floor`` as a dashed horizontal line."""
    width, height = size
    left, right, top, bottom = 70, 170, 30, 50
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    points = [p for line in series.values() for p in line]
    xs = [math.log10(x) for x, _ in points]
    ys = [y for _, y in points] + ([floor] if floor is not None else [])
    x_low, x_high = min(xs), max(xs) + 1e-9
    y_low, y_high = 0.0, max(ys) * 1.05 + 1e-12

    def at(x: float, y: float) -> tuple[float, float]:
        u = left + (math.log10(x) - x_low) / (x_high - x_low or 1) * (width - left - right)
        v = height - bottom - (min(y, y_high) - y_low) / (y_high - y_low) * (height - top - bottom)
        return u, v

    draw.rectangle([left, top, width - right, height - bottom], outline=(0, 0, 0))
    draw.text((left, 8), title, fill=(0, 0, 0))
    draw.text((left + (width - left - right) // 2 - 40, height - 22), xlabel, fill=(0, 0, 0))
    draw.text((4, top - 16), ylabel, fill=(0, 0, 0))
    for k in range(5):
        y = y_low + (y_high - y_low) * k / 4
        _, v = at(10 ** x_low, y)
        draw.line([left - 4, v, left, v], fill=(0, 0, 0))
        draw.text((4, v - 6), f"{y:.3g}", fill=(0, 0, 0))
    for exponent in range(math.floor(x_low), math.ceil(x_high) + 1):
        for mantissa in (1, 2, 5):
            x = mantissa * 10 ** exponent
            if x_low - 1e-9 <= math.log10(x) <= x_high + 1e-9:
                u, _ = at(x, y_low)
                draw.line([u, height - bottom, u, height - bottom + 4], fill=(0, 0, 0))
                draw.text((u - 8, height - bottom + 6), f"{x:g}", fill=(0, 0, 0))
    if floor is not None:
        _, v = at(10 ** x_low, floor)
        for u in range(left, width - right, 10):
            draw.line([u, v, min(u + 5, width - right), v], fill=(120, 120, 120))
        draw.text((width - right + 6, v - 6), "real data", fill=(120, 120, 120))
    for index, (name, line) in enumerate(series.items()):
        colour = COLOURS[index % len(COLOURS)]
        coords = [at(x, y) for x, y in sorted(line)]
        if len(coords) > 1:
            draw.line(coords, fill=colour, width=2)
        for u, v in coords:
            draw.ellipse([u - 3, v - 3, u + 3, v + 3], fill=colour)
        draw.text((width - right + 6, top + 14 * index), name, fill=colour)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path
