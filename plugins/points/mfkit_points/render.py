"""PNG previews of point clouds: orthographic views drawn with PIL, no GUI and no OpenGL.

Each cloud gets one row of views (oblique, front, side, top by default); points are drawn far to near
and shaded by depth (near: dark, far: light), so the shape reads without a 3-D viewer. Clouds are
expected roughly inside the unit sphere; points outside the frame are clipped.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

#: (name, azimuth, elevation) in degrees, about the up axis.
VIEWS = (("oblique", 35.0, 25.0), ("front", 0.0, 0.0), ("side", 90.0, 0.0), ("top", 0.0, 90.0))
NEAR, FAR = np.array([20, 45, 110]), np.array([170, 195, 235])
LABEL_WIDTH = 90


def _to_z_up(points: np.ndarray, up_axis: str) -> np.ndarray:
    """A proper rotation that puts ``up_axis`` on z (y-up data such as ShapeNet: (x, y, z) -> (x, -z, y))."""
    if up_axis == "z":
        return points
    if up_axis == "y":
        return np.stack([points[:, 0], -points[:, 2], points[:, 1]], axis=1)
    return np.stack([points[:, 1], points[:, 2], points[:, 0]], axis=1)  # x up


def project(points: np.ndarray, azimuth: float, elevation: float) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3) z-up points -> screen coordinates (N, 2) (right, up) and depth (N,) (larger is nearer),
    for a camera at the given azimuth and elevation (degrees) looking at the origin."""
    a, e = math.radians(azimuth), math.radians(elevation)
    camera = np.array([math.cos(e) * math.cos(a), math.cos(e) * math.sin(a), math.sin(e)])
    right = np.array([-math.sin(a), math.cos(a), 0.0])
    up = np.cross(camera, right)
    return np.stack([points @ right, points @ up], axis=1), points @ camera


def draw_view(draw: ImageDraw.ImageDraw, points: np.ndarray, left: int, top: int, size: int,
              azimuth: float, elevation: float, dot: float) -> None:
    """Draw one view of a z-up cloud into the square cell at (left, top)."""
    screen, depth = project(points, azimuth, elevation)
    order = np.argsort(depth)
    span = max(depth.max() - depth.min(), 1e-6) if len(depth) else 1.0
    shade = ((depth - depth.min()) / span)[:, None]
    colours = (FAR + (NEAR - FAR) * shade).astype(int)
    half = size / 2
    scale = 0.46 * size  # the unit sphere fills the cell with a small margin
    for i in order:
        x, y = left + half + scale * screen[i, 0], top + half - scale * screen[i, 1]
        if left <= x < left + size and top <= y < top + size:
            draw.ellipse((x - dot, y - dot, x + dot, y + dot), fill=tuple(colours[i]))


def render_clouds(clouds: Sequence[np.ndarray], path: Path, labels: Sequence[str] | None = None, *,
                  up_axis: str = "z", cell: int = 150, columns: int = 2, title: str | None = None) -> Path:
    """Write a PNG grid: one row of :data:`VIEWS` per cloud, ``columns`` clouds side by side.

    clouds: each (N, 3). labels: a caption per cloud (e.g. its class). Returns ``path``.
    """
    count = len(clouds)
    columns = max(1, min(columns, count))
    rows = math.ceil(count / columns)
    block = LABEL_WIDTH + cell * len(VIEWS)
    header = 24 + (18 if title else 0)
    image = Image.new("RGB", (columns * block + (columns - 1) * 12, header + rows * cell), "white")
    draw = ImageDraw.Draw(image)
    if title:
        draw.text((6, 4), title, fill=(0, 0, 0))
    for column in range(columns):
        for v, (name, _, _) in enumerate(VIEWS):
            draw.text((column * (block + 12) + LABEL_WIDTH + v * cell + 4, header - 16), name, fill=(90, 90, 90))
    for index, cloud in enumerate(clouds):
        row, column = divmod(index, columns)
        left, top = column * (block + 12), header + row * cell
        points = _to_z_up(np.asarray(cloud, dtype=np.float64), up_axis)
        dot = float(np.clip(1.8 * math.sqrt(512 / max(len(points), 1)), 0.8, 3.0)) * cell / 150
        draw.rectangle((left, top, left + block - 1, top + cell - 1), outline=(225, 225, 225))
        if labels is not None:
            draw.text((left + 6, top + cell // 2 - 6), str(labels[index])[:14], fill=(0, 0, 0))
        for v, (_, azimuth, elevation) in enumerate(VIEWS):
            x0 = left + LABEL_WIDTH + v * cell
            draw_view(draw, points, x0, top, cell, azimuth, elevation, dot)
            if v:
                draw.line((x0, top + 4, x0, top + cell - 4), fill=(235, 235, 235))
    path = Path(path)
    image.save(path)
    return path
