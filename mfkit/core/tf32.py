"""TF32 tensor cores for float32 products on CUDA: read and scoped switching of PyTorch's flags.

PyTorch has two ways to say whether float32 matrix products (cuBLAS) and convolutions (cuDNN) may run
on TF32 tensor cores (a 10-bit mantissa): the per-backend ``fp32_precision`` attributes ("ieee", "tf32",
"none" = follow the generic setting; PyTorch >= 2.9) and the older ``allow_tf32`` flags with
``torch.set_float32_matmul_precision``. Mixing them makes some reads raise, so this module uses the
per-backend attributes where they exist and the older flags otherwise. Defaults: matmuls exact, cuDNN
convolutions on TF32.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch

_NEW_API = hasattr(torch.backends.cuda.matmul, "fp32_precision") and hasattr(torch.backends.cudnn, "conv")


def cuda_matmul_uses_tf32() -> bool:
    """Whether a float32 CUDA matmul may use TF32 under the current settings."""
    if _NEW_API:
        setting = torch.backends.cuda.matmul.fp32_precision
        if setting != "none":
            return setting == "tf32"
        try:
            return torch.get_float32_matmul_precision() != "highest"
        except RuntimeError:  # settings mixed between the two APIs: PyTorch refuses the generic read
            return False
    return bool(torch.backends.cuda.matmul.allow_tf32)


def _switches(tf32: bool) -> list[tuple[object, str, object]]:
    """(owner, attribute, value for ``tf32``) of the matmul and convolution switches."""
    if _NEW_API:
        value = "tf32" if tf32 else "ieee"
        return [(torch.backends.cuda.matmul, "fp32_precision", value), (torch.backends.cudnn.conv, "fp32_precision", value)]
    return [(torch.backends.cuda.matmul, "allow_tf32", tf32), (torch.backends.cudnn, "allow_tf32", tf32)]


def settings() -> tuple:
    """The current values of the switches :func:`cuda_float32_products` sets (to check they were restored)."""
    return tuple(getattr(owner, name) for owner, name, _ in _switches(False))


@contextlib.contextmanager
def cuda_float32_products(device: torch.device, tf32: bool) -> Iterator[None]:
    """On CUDA, float32 matmuls and cuDNN convolutions on TF32 tensor cores (``tf32=True``) or exact
    (``tf32=False``) for the duration, the caller's settings restored after; elsewhere nothing changes."""
    if device.type != "cuda":
        yield
        return
    switches = _switches(tf32)
    saved = [getattr(owner, name) for owner, name, _ in switches]
    try:
        for owner, name, value in switches:
            setattr(owner, name, value)
        yield
    finally:
        for (owner, name, _), value in zip(switches, saved):
            setattr(owner, name, value)
