"""Run folders: plain names, mfkit's marker, and the only ways a run folder is created, reused or cleared.

A run folder ``<output_dir>/<name>`` holds ``.mfkit-run`` (JSON: what created it and when). ``--overwrite``
clears only a folder that holds this marker, and only what is inside it: the folder itself and anything
beside or above it are never touched. Every way in holds the folder's lock (:mod:`mfkit.train.lock`).
"""
from __future__ import annotations

import json
import shutil
import unicodedata
from datetime import datetime
from pathlib import Path

from mfkit.folders import OutputError, ensure_writable_dir
from mfkit.train.lock import LOCK_NAME, RunLock

MARKER = ".mfkit-run"
MAX_NAME_LENGTH = 200
_SEPARATORS = "/\\:"


class RunFolderError(RuntimeError):
    """The run folder is in a state the command cannot use (exists without --resume, nothing to resume, ...)."""


def run_name_problem(name: object) -> str | None:
    """Why ``name`` is not a plain folder name (None when it is one)."""
    hint = "a run name is a plain folder name, e.g. name=spirals-lr3e-4"
    if not isinstance(name, str) or not name.strip():
        return f"the run name is empty; {hint}"
    if name != name.strip():
        return f"{name!r} starts or ends with spaces; {hint}"
    if name.startswith("."):
        return f"{name!r} starts with '.' (that is this folder, its parent or a hidden one); {hint}"
    if any(c in _SEPARATORS for c in name):
        return f"{name!r} contains a path separator ('/', '\\' or ':'); {hint}"
    if any(unicodedata.category(c).startswith("C") for c in name):
        return f"{name!r} contains control characters; {hint}"
    if len(name) > MAX_NAME_LENGTH:
        return f"the run name is longer than {MAX_NAME_LENGTH} characters; {hint}"
    return None


def run_dir_of(output_dir: str | Path, name: str) -> Path:
    """``<output_dir>/<name>``, after checking that the name is a plain folder name."""
    problem = run_name_problem(name)
    if problem:
        raise RunFolderError(f"name: {problem}")
    return Path(output_dir) / name


def has_marker(path: Path) -> bool:
    return (Path(path) / MARKER).is_file()


def is_run_folder(path: Path) -> bool:
    """A folder mfkit made (its marker), or one an older mfkit made (recipe.yaml and checkpoints/)."""
    path = Path(path)
    return path.is_dir() and (has_marker(path) or ((path / "recipe.yaml").is_file() and (path / "checkpoints").is_dir()))


def write_marker(run_dir: Path, name: str) -> None:
    from mfkit import __version__

    record = {"kind": "mfkit run", "name": name, "created": datetime.now().astimezone().isoformat(timespec="seconds"),
              "mfkit_version": __version__}
    (run_dir / MARKER).write_text(json.dumps(record) + "\n")


def _contents(run_dir: Path) -> list[Path]:
    return [p for p in run_dir.iterdir() if p.name != LOCK_NAME] if run_dir.is_dir() else []


def _clear(run_dir: Path) -> None:
    """Delete what is inside a marked run folder (not the lock); links are removed, never followed."""
    for child in _contents(run_dir):
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def _check(run_dir: Path, mode: str) -> None:
    if run_dir.exists() and not run_dir.is_dir():
        raise RunFolderError(f"{run_dir} exists and is not a folder; pick another name (name=...)")
    used = bool(_contents(run_dir))
    if mode == "new" and used:
        raise RunFolderError(
            f"run folder {run_dir} already exists. Continue it with --resume, start over with --overwrite "
            f"(deletes it), or pick another name (name=... on the command line)")
    if mode == "resume" and not run_dir.is_dir():
        raise RunFolderError(f"--resume: there is no run folder {run_dir}; start without --resume")
    if mode == "resume" and not is_run_folder(run_dir):
        raise RunFolderError(f"--resume: {run_dir} is not an mfkit run folder (no {MARKER} marker, recipe.yaml "
                             f"or checkpoints/)")
    if mode == "overwrite" and used and not has_marker(run_dir):
        raise RunFolderError(
            f"--overwrite: {run_dir} has no {MARKER} marker, so it is not a run folder mfkit created; it is "
            f"left as it is. Move it away yourself or pick another name (name=...)")


def open_run_folder(run_dir: Path, mode: str) -> RunLock:
    """Check, create (or, for ``mode='overwrite'``, clear) and lock a run folder for this process.

    ``mode``: 'new' (absent or empty), 'resume' (must exist) or 'overwrite' (absent, empty or marked).
    The checks run again once the lock is held. The caller releases the returned lock.
    """
    run_dir = Path(run_dir)
    problem = run_name_problem(run_dir.name)
    if problem:
        raise RunFolderError(f"name: {problem}")
    _check(run_dir, mode)
    try:
        ensure_writable_dir(run_dir.parent, "output_dir")
        ensure_writable_dir(run_dir, "run folder")
    except OutputError as error:
        raise RunFolderError(f"{error} (output_dir=... on the command line)") from None
    lock = RunLock(run_dir).acquire()
    try:
        _check(run_dir, mode)
        if mode == "overwrite":
            _clear(run_dir)
        if not has_marker(run_dir):
            write_marker(run_dir, run_dir.name)
    except BaseException:
        lock.release()
        raise
    return lock
