"""Image folders: PNG/JPEG/WebP files, optionally one sub-folder per class.

Layout: ``root/*.png`` (unconditional) or ``root/<class>/**/*.png`` (the sub-folder names, sorted,
are the classes). Every picture is resized (shorter side) and centre-cropped to the resolution and
converted to 1 or 3 channels. Files that cannot be decoded are skipped with a warning naming each and
a count. Folders whose decoded pictures fit ``cache_mb`` are decoded once and cached as a uint8 array
under the cache folder (keyed by the files' names, sizes and times, the resolution and channels, the
decoder's version and Pillow's); larger ones are decoded on access.
"""
from __future__ import annotations

import hashlib
import json
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import PIL
from PIL import Image, UnidentifiedImageError

from mfkit.plugins import file_signature

from mfkit_image.data.pixels import fit_picture

EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
#: Version of the decoding (bumped when it changes what pixels a file gives; part of the cache key).
#: 2: EXIF orientation, 16-bit grey scaled to 8 bits, tRNS transparency of L and RGB laid on white.
DECODE_VERSION = 2
_DECODE_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError)


class ImageFolderError(ValueError):
    """A folder that cannot be used as image data (missing, empty, no readable picture)."""


@dataclass(frozen=True)
class FolderListing:
    """The picture files of a folder, their labels (None when unlabelled) and the class names."""

    root: Path
    files: list[Path]
    labels: np.ndarray | None
    class_names: list[str] | None

    @cached_property
    def names(self) -> dict[Path, str]:
        """Each file's path below the root ("cats/001.png"), worked out once: its stable name (split key,
        cache key and cache entry)."""
        return {path: path.relative_to(self.root).as_posix() for path in self.files}

    def relative(self, path: Path) -> str:
        """One file's stable name (see :attr:`names`)."""
        return self.names[path]


def _pictures_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def list_folder(root: Path | str, classes: bool = True) -> FolderListing:
    """Find the pictures of ``root``. With ``classes`` and sub-folders holding pictures, each such
    sub-folder is a class (pictures directly in ``root`` are then ignored, with a warning)."""
    root = Path(root).expanduser()
    if not root.exists():
        raise ImageFolderError(f"image folder {root} does not exist; set modality.params.path to a folder of "
                               f"PNG/JPEG/WebP files (optionally one sub-folder per class)")
    if not root.is_dir():
        raise ImageFolderError(f"{root} is a file, not a folder; set modality.params.path to the folder that holds "
                               f"the pictures")
    subfolders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    by_class = [(folder.name, _pictures_under(folder)) for folder in subfolders] if classes else []
    by_class = [(name, files) for name, files in by_class if files]
    if by_class:
        loose = [p for p in root.iterdir() if p.suffix.lower() in EXTENSIONS and p.is_file()]
        if loose:
            warnings.warn(f"{root}: {len(loose)} picture(s) directly in the folder are ignored because its "
                          f"sub-folders are used as classes ({', '.join(n for n, _ in by_class[:5])}"
                          f"{', ...' if len(by_class) > 5 else ''})", stacklevel=2)
        files = [f for _, group in by_class for f in group]
        labels = np.concatenate([np.full(len(group), i, dtype=np.int64) for i, (_, group) in enumerate(by_class)])
        return FolderListing(root, files, labels, [name for name, _ in by_class])
    files = _pictures_under(root)
    if not files:
        raise ImageFolderError(f"image folder {root} holds no PNG/JPEG/WebP files (searched sub-folders too); "
                               f"put pictures there or point modality.params.path elsewhere")
    return FolderListing(root, files, None, None)


def decode_file(path: Path, resolution: int, channels: int) -> np.ndarray:
    """One file -> uint8 (resolution, resolution, channels); raises on unreadable or corrupt files."""
    with Image.open(path) as image:
        image.load()
        return fit_picture(image, resolution, channels)


def decode_all(listing: FolderListing, resolution: int, channels: int,
               workers: int = 4) -> tuple[np.ndarray, np.ndarray | None, list[Path]]:
    """Decode every file (threads: PIL decodes without the GIL). Corrupt files are skipped with one
    warning each and a count; returns (pictures (N, R, R, C), labels, the files kept)."""
    def attempt(path: Path):
        try:
            return decode_file(path, resolution, channels), None
        except _DECODE_ERRORS as error:
            return None, f"{type(error).__name__}: {error}"

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(pool.map(attempt, listing.files))
    keep = [i for i, (picture, _) in enumerate(results) if picture is not None]
    skipped = [(listing.files[i], results[i][1]) for i in range(len(results)) if results[i][0] is None]
    for path, reason in skipped:
        warnings.warn(f"skipping unreadable image {path} ({reason})", stacklevel=2)
    if skipped:
        warnings.warn(f"{listing.root}: skipped {len(skipped)} unreadable of {len(listing.files)} image file(s)",
                      stacklevel=2)
    if not keep:
        raise ImageFolderError(f"none of the {len(listing.files)} image file(s) in {listing.root} could be decoded; "
                               f"check the files (the warnings name each)")
    pictures = np.stack([results[i][0] for i in keep])
    labels = listing.labels[keep] if listing.labels is not None else None
    return pictures, labels, [listing.files[i] for i in keep]


def listing_key(listing: FolderListing, resolution: int, channels: int) -> str:
    """A content key of the listing: relative names and :func:`mfkit.plugins.file_signature` (size, modification
    and change times), the target shape, and the decoder's and Pillow's versions (a changed decoder never
    reuses old pictures)."""
    settings = [resolution, channels, listing.class_names, DECODE_VERSION, PIL.__version__]
    digest = hashlib.sha256(json.dumps(settings).encode())
    for path in listing.files:
        digest.update(f"{listing.relative(path)}\0{file_signature(path)}\n".encode())
    return digest.hexdigest()[:24]


def load_cached(listing: FolderListing, resolution: int, channels: int,
                cache_dir: Path) -> tuple[np.ndarray, np.ndarray | None, list[Path]]:
    """:func:`decode_all`, with the result kept in ``<cache_dir>/image/folder-<key>.npz`` for next time."""
    cache = Path(cache_dir) / "image" / f"folder-{listing_key(listing, resolution, channels)}.npz"
    if cache.is_file():
        try:
            return _read_cache(cache, listing)
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache is rebuilt
    pictures, labels, kept = decode_all(listing, resolution, channels)
    skipped = sorted(set(map(listing.relative, listing.files)) - set(map(listing.relative, kept)))
    cache.parent.mkdir(parents=True, exist_ok=True)
    partial = cache.with_name(cache.name + ".partial.npz")
    extra = {"labels": labels} if labels is not None else {}
    np.savez(partial, pictures=pictures, skipped=np.array(skipped, dtype=str), **extra)
    partial.replace(cache)
    return pictures, labels, kept


def _read_cache(cache: Path, listing: FolderListing) -> tuple[np.ndarray, np.ndarray | None, list[Path]]:
    """(pictures, labels, the files kept) from a cache file, warning again about the files it skipped."""
    with np.load(cache) as stored:
        pictures = stored["pictures"]
        labels = stored["labels"] if "labels" in stored.files else None
        skipped = {str(s) for s in stored["skipped"]}
    kept = [path for path in listing.files if listing.relative(path) not in skipped]
    if len(kept) != len(pictures):
        raise ValueError(f"{cache} holds {len(pictures)} pictures for {len(kept)} files")
    for name in sorted(skipped):
        warnings.warn(f"skipping unreadable image {listing.root / name} (found when the cache was made)",
                      stacklevel=3)
    if skipped:
        warnings.warn(f"{listing.root}: skipped {len(skipped)} unreadable of {len(listing.files)} image file(s)",
                      stacklevel=3)
    return pictures, labels, kept


class LazyFolderReader:
    """Decodes files on access, for folders too large to cache; item k is file ``indices[k]``. A file
    that fails then is reported with a warning and replaced by the next readable item of this reader
    (whose label :meth:`read` reports), so training goes on."""

    def __init__(self, listing: FolderListing, resolution: int, channels: int,
                 indices: np.ndarray | None = None) -> None:
        self.listing, self.resolution, self.channels = listing, resolution, channels
        self.indices = np.arange(len(listing.files)) if indices is None else np.asarray(indices)
        self.bad: set[int] = set()

    def __len__(self) -> int:
        return len(self.indices)

    def subset(self, positions: np.ndarray) -> "LazyFolderReader":
        return LazyFolderReader(self.listing, self.resolution, self.channels, self.indices[positions])

    def read(self, k: int) -> tuple[np.ndarray, int]:
        """(picture, the item actually read): item k, or the next readable one when k cannot be decoded."""
        for offset in range(len(self.indices)):
            position = (k + offset) % len(self.indices)
            if position in self.bad:
                continue
            path = self.listing.files[int(self.indices[position])]
            try:
                return decode_file(path, self.resolution, self.channels), position
            except _DECODE_ERRORS as error:
                self.bad.add(position)
                warnings.warn(f"skipping unreadable image {path} ({type(error).__name__}: {error}); "
                              f"{len(self.bad)} skipped so far", stacklevel=2)
        raise ImageFolderError(f"none of the image files in {self.listing.root} could be decoded")
