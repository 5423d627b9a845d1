"""Finding the audio files of a speech folder, their labels and their split.

Layouts understood (``label_from``):

* ``folder``: the first folder below the split root names the class (Speech Commands:
  ``<root>/seven/x.wav``; LibriSpeech: ``<root>/<speaker>/<chapter>/x.flac`` gives speakers);
* ``filename``: the file name without its suffix, up to its first ``_``, lower-cased (SC09:
  ``Seven_0a2b400e_nohash_0.wav``; ``Seven.wav`` and ``seven.flac`` are both ``seven``);
* ``manifest``: a CSV/TSV (or ``|``-separated, LJSpeech) file with a path and a label column (header names
  ``path``/``file``/``filename``/``audio``/``wav`` and ``label``/``class``/``word``/``speaker``; without a
  recognised header: path first, label second; a recognised path column without a label column is an
  error); paths are relative to the folder, with or without suffix;
* ``none``: no labels (unconditional).

Splits: a folder with ``train/`` and one of ``val/``, ``valid/``, ``validation/``, ``test/`` uses them;
otherwise a file is held out when a hash of its relative path falls in the first ``val_fraction``
(stable when files are added). Folders starting with ``_`` or ``.`` (``_background_noise_``) are skipped.
"""
from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mfkit_audio.audio_io import AUDIO_SUFFIXES

LabelFrom = Literal["folder", "filename", "manifest", "none"]
VAL_NAMES = ("val", "valid", "validation", "test")
PATH_COLUMNS = ("path", "file", "filename", "file_name", "audio", "wav", "audio_path", "id")
LABEL_COLUMNS = ("label", "class", "word", "speaker", "speaker_id", "category", "digit")


class SpeechFolderError(ValueError):
    """A speech folder that cannot be used as it is (missing, empty, bad manifest)."""


@dataclass(frozen=True)
class AudioFile:
    path: Path
    relative: str
    label: str | None


def _is_hidden(relative: Path) -> bool:
    return any(part.startswith(("_", ".")) for part in relative.parts[:-1])


def _audio_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file()
                  and not _is_hidden(p.relative_to(root)))


def split_roots(root: Path) -> dict[str, Path] | None:
    """{"train": ..., "val": ...} when ``root`` has explicit split folders, else None."""
    if not (root / "train").is_dir():
        return None
    for name in VAL_NAMES:
        if (root / name).is_dir():
            return {"train": root / "train", "val": root / name}
    return None


def held_out(relative: str, val_fraction: float) -> bool:
    """Whether a file belongs to the held-out split: a stable hash of its relative path."""
    digest = int(hashlib.sha1(relative.encode()).hexdigest()[:8], 16)
    return digest / 0xFFFFFFFF < val_fraction


def _label(relative: Path, label_from: LabelFrom) -> str | None:
    if label_from == "folder":
        if len(relative.parts) < 2:
            raise SpeechFolderError(f"{relative} lies directly in the speech folder, but label_from is 'folder' "
                                    f"(one sub-folder per class); move it into a class folder or set label_from")
        return relative.parts[0]
    if label_from == "filename":
        return relative.stem.split("_")[0].lower()
    return None


def _read_manifest(manifest: Path, root: Path) -> list[tuple[Path, str | None]]:
    if not manifest.is_file():
        raise SpeechFolderError(f"manifest {manifest} does not exist; give a CSV/TSV with path and label columns")
    text = manifest.read_text(encoding="utf-8-sig")
    delimiter = "\t" if manifest.suffix.lower() == ".tsv" else "|" if "|" in text.splitlines()[0] else ","
    rows = [row for row in csv.reader(text.splitlines(), delimiter=delimiter) if row and any(row)]
    if not rows:
        raise SpeechFolderError(f"manifest {manifest} is empty")
    header = [cell.strip().lower() for cell in rows[0]]
    path_col = next((header.index(c) for c in PATH_COLUMNS if c in header), None)
    label_col = next((header.index(c) for c in LABEL_COLUMNS if c in header), None)
    has_header = path_col is not None
    if not has_header:
        path_col, label_col = 0, (1 if len(rows[0]) > 1 else None)
    if label_col is None:
        found_columns = f"its header has {', '.join(header)}" if has_header else "its lines have one column"
        raise SpeechFolderError(f"manifest {manifest} has no label column ({found_columns}); give each line a path "
                                f"and a label, with a header naming the label column one of "
                                f"{', '.join(LABEL_COLUMNS)} (or set label_from: none to train without labels)")
    if has_header:
        rows = rows[1:]
    found = []
    for number, row in enumerate(rows, start=2 if has_header else 1):
        if len(row) <= max(path_col, label_col) or not row[label_col].strip():
            raise SpeechFolderError(f"{manifest}, line {number}: expected a path and a label, got {row!r}")
        found.append((_resolve(root, row[path_col].strip()), row[label_col].strip()))
    return found


def _resolve(root: Path, value: str) -> Path:
    candidates = [root / value] + [root / sub / f"{value}{suffix}" for sub in ("", "wavs")
                                   for suffix in AUDIO_SUFFIXES]
    return next((c for c in candidates if c.is_file()), root / value)


def scan(root: Path, split: str, label_from: LabelFrom, manifest: Path | None = None,
         val_fraction: float = 0.1) -> list[AudioFile]:
    """The audio files of ``split`` ("train" or "val") under ``root``, sorted, with their labels."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise SpeechFolderError(f"speech folder {root} does not exist; set modality.params.folder to a folder "
                                f"of .wav/.flac/.ogg files (or leave it null for the spoken-digit corpus)")
    if label_from == "manifest":
        if manifest is None:
            raise SpeechFolderError("label_from is 'manifest' but modality.params.manifest is not set")
        manifest = manifest if manifest.is_absolute() else root / manifest
        listed = [AudioFile(p, str(p.relative_to(root)) if p.is_relative_to(root) else str(p), label)
                  for p, label in _read_manifest(manifest, root)]
        return [f for f in listed if held_out(f.relative, val_fraction) == (split == "val")]
    roots = split_roots(root)
    base = roots[split] if roots else root
    files = _audio_files(base)
    if not files:
        raise SpeechFolderError(f"no {'/'.join(AUDIO_SUFFIXES)} files under {base}; is this the speech folder?")
    items = [AudioFile(p, str(p.relative_to(base)), _label(p.relative_to(base), label_from)) for p in files]
    if roots:
        return items
    return [f for f in items if held_out(f.relative, val_fraction) == (split == "val")]
