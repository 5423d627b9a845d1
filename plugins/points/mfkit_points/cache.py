"""Build-once caches of sampled point clouds, safe when several processes (torchrun ranks) start together.

A cache entry is one ``.npz`` file named by a content hash of everything that shaped it. The first
process to need it takes a file lock and builds it; the others wait on the lock and then read the
finished file. Files are written under a temporary name and renamed, so a crash never leaves half a file.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
from filelock import FileLock

#: Bump when the way clouds are made changes, so that old caches are not reused.
FORMAT = 2


def content_key(**parts: Any) -> str:
    """A short stable hash of JSON-serialisable ``parts``."""
    text = json.dumps({"format": FORMAT, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_or_build(path: Path, build: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The arrays stored at ``path`` (an .npz), building and storing them first if absent."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OSError(f"cannot create the point-cloud cache folder {path.parent} ({error.strerror}); set MFKIT_CACHE "
                      f"to a writable folder") from None
    if not path.exists():
        with FileLock(str(path) + ".lock"):
            if not path.exists():
                arrays = build()
                partial = path.with_name(f"{path.stem}.{os.getpid()}.partial.npz")
                np.savez(partial, **arrays)
                os.replace(partial, path)
                return arrays
    with np.load(path, allow_pickle=False) as stored:
        return {name: stored[name] for name in stored.files}
