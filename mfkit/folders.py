"""Output folders and files that never replace earlier work: checked early, numbered when taken.

Every check raises :class:`OutputError` with one line that names the path, what is wrong and what to do.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


class OutputError(ValueError):
    """An output path that cannot be used (a file where a folder is wanted, unwritable, already taken)."""


def _reason(error: OSError) -> str:
    return error.strerror or str(error)


def ensure_writable_dir(path: Path, what: str) -> Path:
    """Create ``path`` (and its parents) if needed and check a file can be written in it."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{what} {path} is a file, not a folder; choose a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        raise OutputError(f"cannot write to {what} {path}: {_reason(error)}; choose a folder you can write to") from None
    return path


def numbered(path: Path) -> Path:
    """``path`` if nothing is there (or an empty folder), else the first free ``path-2``, ``path-3``, ..."""
    path = Path(path)
    candidate, number = path, 1
    while candidate.exists() and not (candidate.is_dir() and not any(candidate.iterdir())):
        number += 1
        candidate = path.with_name(f"{path.name}-{number}")
    return candidate


def require_new_folder(path: Path, what: str) -> Path:
    """A folder that is absent or empty (so nothing in it gets replaced), and writable."""
    path = Path(path)
    if path.is_dir() and any(path.iterdir()):
        raise OutputError(f"{what} {path} already holds files; choose a new folder (earlier results are "
                          f"never replaced)")
    return ensure_writable_dir(path, what)


def file_mode() -> int:
    """The permissions an ordinary new file gets here: 0o666 less the process umask (usually 0o644)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask
