"""TF32 tensor cores for float32 products on CUDA: read and scoped switching of PyTorch's flags.

PyTorch has two ways to say whether float32 matrix products (cuBLAS) and convolutions (cuDNN) may run
on TF32 tensor cores (a 10-bit mantissa): the older ``torch.set_float32_matmul_precision`` and
``torch.backends.cudnn.allow_tf32``, and (PyTorch >= 2.9) per-backend ``fp32_precision`` attributes
("ieee", "tf32", or "none" = follow the level above). Reading the older flags raises once the newer
attributes disagree among themselves. Defaults: matmuls exact, cuDNN convolutions on TF32.

:func:`cuda_float32_products` switches with the older setters, which leave every flag of both kinds
readable and consistent for the duration (code inside the pass, torch.compile's included, may read
either), and restores the caller's state: through the older setters when it was readable that way,
else attribute by attribute.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import torch

_B = torch.backends
_NEW_API = hasattr(_B.cuda.matmul, "fp32_precision") and hasattr(_B.cudnn, "conv")
#: the per-backend attributes, most general first (restored in this order)
_ATTRIBUTES = [(owner, "fp32_precision") for owner in (
    _B, getattr(_B, "cudnn", None), getattr(_B.cudnn, "conv", None), getattr(_B.cudnn, "rnn", None),
    getattr(_B, "mkldnn", None), getattr(getattr(_B, "mkldnn", None), "matmul", None),
    getattr(getattr(_B, "mkldnn", None), "conv", None), getattr(getattr(_B, "mkldnn", None), "rnn", None),
    _B.cuda.matmul) if owner is not None and hasattr(owner, "fp32_precision")] if _NEW_API else []


def _resolved(chain: list[Any], legacy: Callable[[], bool]) -> bool:
    """TF32 allowed? The first per-backend setting that is not "none" along ``chain``, else the older flag."""
    for owner in chain:
        value = getattr(owner, "fp32_precision", "none") if owner is not None else "none"
        if value != "none":
            return value == "tf32"
    try:
        return bool(legacy())
    except RuntimeError:  # settings mixed between the two APIs: PyTorch refuses the older read
        return False


def cuda_matmul_uses_tf32() -> bool:
    """Whether a float32 CUDA matmul may use TF32 under the current settings."""
    chain = [_B.cuda.matmul, _B] if _NEW_API else []
    return _resolved(chain, lambda: torch.get_float32_matmul_precision() != "highest")


def cudnn_conv_uses_tf32() -> bool:
    """Whether a float32 cuDNN convolution may use TF32 under the current settings."""
    chain = [_B.cudnn.conv, _B.cudnn, _B] if _NEW_API else []
    return _resolved(chain, lambda: _B.cudnn.allow_tf32)


def settings() -> tuple[bool, bool]:
    """(matmul, convolution) TF32 allowed: what :func:`cuda_float32_products` switches and restores."""
    return cuda_matmul_uses_tf32(), cudnn_conv_uses_tf32()


@contextlib.contextmanager
def cuda_float32_products(device: torch.device, tf32: bool) -> Iterator[None]:
    """On CUDA, float32 matmuls and cuDNN convolutions on TF32 tensor cores (``tf32=True``) or exact
    (``tf32=False``) for the duration, the caller's settings restored after; elsewhere nothing changes."""
    if device.type != "cuda":
        yield
        return
    try:
        legacy = (torch.get_float32_matmul_precision(), _B.cudnn.allow_tf32)
    except RuntimeError:  # the caller set the per-backend attributes inconsistently: restore those
        legacy = None
    attributes = [getattr(owner, name) for owner, name in _ATTRIBUTES]
    try:
        torch.set_float32_matmul_precision("high" if tf32 else "highest")
        _B.cudnn.allow_tf32 = tf32
        yield
    finally:
        if legacy is not None:
            torch.set_float32_matmul_precision(legacy[0])
            _B.cudnn.allow_tf32 = legacy[1]
        else:
            for (owner, name), value in zip(_ATTRIBUTES, attributes):
                setattr(owner, name, value)
