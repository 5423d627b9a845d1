"""file_signature: what plugin caches key data files by, instead of hashing their bytes."""
import os
import time

from mfkit.plugins import file_signature


def test_unchanged_file_keeps_its_signature(tmp_path):
    path = tmp_path / "a.bin"
    path.write_bytes(b"12345")
    assert file_signature(path) == file_signature(str(path))


def test_a_rewrite_keeping_size_and_mtime_changes_the_signature(tmp_path):
    """cp -p, rsync -t or a tool restoring modification times: size and mtime as before, content new."""
    path = tmp_path / "a.bin"
    path.write_bytes(b"12345")
    before, stat = file_signature(path), path.stat()
    time.sleep(0.05)  # the kernel's file clock advances in ticks of a few milliseconds
    path.write_bytes(b"54321")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns
    assert file_signature(path) != before


def test_a_different_size_or_mtime_changes_the_signature(tmp_path):
    path = tmp_path / "a.bin"
    path.write_bytes(b"12345")
    first = file_signature(path)
    os.utime(path, ns=(0, 10**18))
    second = file_signature(path)
    path.write_bytes(b"123456")
    assert len({first, second, file_signature(path)}) == 3
