"""Decoding latents to pixels with the user's own local VAE (nothing is downloaded).

Kinds:

* ``export``: a ``torch.export`` program saved with ``torch.export.save`` (a ``.pt2`` file) whose
  module maps latents (B, c, h, w) to pixels (B, 3, H, W) in [-1, 1]. Export your decoder once with a
  dynamic batch dimension, e.g. ``torch.export.export(vae.decoder_fn, (z,), dynamic_shapes=({0: Dim("b")},))``.
* ``diffusers``: a diffusers ``AutoencoderKL`` folder (``from_pretrained(path, local_files_only=True)``);
  needs ``pip install diffusers``. Pixels are ``vae.decode(latents).sample``.

The latents handed to the VAE are the raw ones, as the VAE's encoder produced them (the modality
divides its own latent scale out first).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

Decoder = Callable[[torch.Tensor], torch.Tensor]


class VAESettings(BaseModel):
    """Where the local VAE decoder is and what kind of file it is."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["export", "diffusers"] = Field(description="export: a torch.export .pt2 file; diffusers: an "
                                                             "AutoencoderKL folder")
    path: str = Field(description="local file (export) or folder (diffusers)")
    batch_size: int = Field(64, gt=0, description="latents decoded per call")


def load_decoder(settings: VAESettings, device: torch.device | str = "cpu") -> Decoder:
    """A function latents (B, c, h, w) -> pixels (B, C, H, W) in [-1, 1], from the local files only."""
    path = Path(settings.path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"no VAE at {path}; set modality.params.vae.path to your local VAE "
                                f"({'a .pt2 file' if settings.kind == 'export' else 'an AutoencoderKL folder'})")
    if settings.kind == "export":
        module = torch.export.load(str(path)).module().to(device)
        return lambda latents: module(latents.to(device))
    try:
        from diffusers import AutoencoderKL
    except ImportError:
        raise ImportError("vae kind diffusers needs the diffusers package: pip install diffusers") from None
    vae = AutoencoderKL.from_pretrained(str(path), local_files_only=True).to(device).eval()
    return lambda latents: vae.decode(latents.to(device)).sample


@torch.no_grad()
def decode_in_batches(decoder: Decoder, latents: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Pixels of every latent, ``batch_size`` at a time, on the CPU as float32."""
    return torch.cat([decoder(latents[i:i + batch_size]).float().cpu() for i in range(0, len(latents), batch_size)])
