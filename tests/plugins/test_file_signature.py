"""file_signature: what plugin caches key data files by, instead of hashing their bytes."""
import os
import sys
import time

import pytest

from mfkit.plugins import file_signature


def test_the_signature_is_size_mtime_and_change_time(tmp_path):
    path = tmp_path / "a.bin"
    path.write_bytes(b"12345")
    stat = os.stat(path)
    assert file_signature(path) == file_signature(str(path)) == f"5:{stat.st_mtime_ns}:{stat.st_ctime_ns}"


@pytest.mark.skipif(sys.platform == "win32", reason="st_ctime is the creation time on Windows")
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


def test_each_part_counts(monkeypatch):
    """Size, modification time and change time each change the signature on their own."""
    base = {"st_size": 5, "st_mtime_ns": 10, "st_ctime_ns": 20}
    signatures, real_stat = set(), os.stat
    for changed in [None, "st_size", "st_mtime_ns", "st_ctime_ns"]:
        fields = {**base, **({changed: base[changed] + 1} if changed else {})}
        fake = os.stat_result((0, 0, 0, 0, 0, 0, fields["st_size"], 0, 0, 0), fields)
        monkeypatch.setattr(os, "stat", lambda path, *a, fake=fake, **k: fake if path == "x" else real_stat(path, *a, **k))
        signatures.add(file_signature("x"))
    assert len(signatures) == 4
