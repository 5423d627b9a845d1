"""Conversions between pictures and model tensors.

Model tensors are float32 (C, H, W) in [-1, 1]; stored pictures are uint8 (H, W, C) in [0, 255]:
x = p / 127.5 - 1 and p = round((x + 1) * 127.5) clipped to [0, 255].
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageOps


#: Modes holding more than 8 bits of grey: integers in 0..65535 (16-bit PNGs) or floats in [0, 1].
DEEP_GREY = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def deep_grey_to_8bit(image: Image.Image) -> Image.Image:
    """A 16-bit (or 32-bit integer, 0..65535) or float ([0, 1]) grey image -> mode L, or LA when its
    ``transparency`` (tRNS) value marks transparent pixels."""
    values = np.asarray(image, dtype=np.float64)
    scale = 255.0 if image.mode == "F" else 255.0 / 65535.0
    grey = Image.fromarray(np.round(np.clip(values * scale, 0, 255)).astype(np.uint8), "L")
    if "transparency" in image.info:
        grey.putalpha(Image.fromarray(np.where(values == image.info["transparency"], 0, 255).astype(np.uint8), "L"))
    return grey


def on_white(image: Image.Image) -> Image.Image:
    """Transparent pixels (an alpha band, or a tRNS colour or palette entry) laid on white; others as they are."""
    if image.mode not in ("RGBA", "LA", "PA") and "transparency" not in image.info:
        return image
    rgba = image.convert("RGBA")
    return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)


def fit_picture(image: Image.Image, resolution: int, channels: int) -> np.ndarray:
    """A PIL image -> uint8 (resolution, resolution, channels): turned upright by its EXIF orientation,
    deep grey scaled to 8 bits, transparency laid on white, shorter side resized to ``resolution``
    (bicubic, antialiased when shrinking), then the centre square cropped."""
    image = ImageOps.exif_transpose(image)
    if image.mode in DEEP_GREY:
        image = deep_grey_to_8bit(image)
    image = on_white(image).convert("L" if channels == 1 else "RGB")
    width, height = image.size
    scale = resolution / min(width, height)
    if (width, height) != (resolution, resolution):
        size = (max(resolution, round(width * scale)), max(resolution, round(height * scale)))
        image = image.resize(size, Image.Resampling.BICUBIC)
        left, top = (size[0] - resolution) // 2, (size[1] - resolution) // 2
        image = image.crop((left, top, left + resolution, top + resolution))
    array = np.asarray(image, dtype=np.uint8)
    return array[:, :, None] if array.ndim == 2 else array


def resize_array(images: np.ndarray, resolution: int, channels: int | None = None) -> np.ndarray:
    """uint8 (N, h, w, c) -> (N, resolution, resolution, channels), each picture through :func:`fit_picture`
    (grey repeated into RGB, RGB to luminance)."""
    have = images.shape[3]
    channels = channels or have
    if images.shape[1] == images.shape[2] == resolution:
        if channels == have:
            return images
        if have == 1:
            return np.repeat(images, 3, axis=3)
    mode = "L" if have == 1 else "RGB"
    return np.stack([fit_picture(Image.fromarray(p[:, :, 0] if have == 1 else p, mode), resolution, channels)
                     for p in images])


def to_tensor(pictures: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (..., H, W, C) -> float32 (..., C, H, W) in [-1, 1]."""
    array = torch.from_numpy(np.array(pictures, dtype=np.uint8))
    return array.movedim(-1, -3).float().div(127.5).sub(1.0)


def to_pictures(tensor: torch.Tensor) -> np.ndarray:
    """float (..., C, H, W) in [-1, 1] -> uint8 (..., H, W, C), values outside [-1, 1] clipped."""
    scaled = ((tensor.detach().float().cpu() + 1.0) * 127.5).round().clamp(0, 255)
    return scaled.to(torch.uint8).movedim(-3, -1).numpy()


def to_pil(picture: np.ndarray) -> Image.Image:
    """uint8 (H, W, 1 or 3) -> a PIL image (mode L or RGB)."""
    return Image.fromarray(picture[:, :, 0], "L") if picture.shape[2] == 1 else Image.fromarray(picture, "RGB")
