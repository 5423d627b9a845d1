"""scikit-learn's 1,797 real 8x8 handwritten digits (``load_digits``, shipped inside the package)."""
from __future__ import annotations

import numpy as np

DIGIT_NAMES = [str(d) for d in range(10)]


def load_digits_pictures() -> tuple[np.ndarray, np.ndarray]:
    """uint8 pictures (1797, 8, 8, 1), strokes bright on black (grey levels 0..16 scaled to 0..255),
    and labels (1797,) in 0..9."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:  # pragma: no cover - scikit-learn is a dependency of the package
        raise ImportError("the digits source needs scikit-learn: pip install scikit-learn") from None
    bunch = load_digits()
    pictures = np.round(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)[:, :, :, None]
    return pictures, bunch.target.astype(np.int64)
