"""One writer per run folder: the lock refuses a second holder, and stale locks are taken over."""
import json
import os
import socket
import subprocess
import sys

import pytest

from mfkit.train import lock as lock_module
from mfkit.train.lock import LOCK_NAME, LockHolder, RunLock, RunLockedError


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def write_holder(folder, pid, host=None):
    holder = {"pid": pid, "host": host or socket.gethostname(), "started": "2026-01-01T00:00:00+00:00",
              "command": "mfkit train old.yaml"}
    (folder / LOCK_NAME).write_text(json.dumps(holder))


def test_second_holder_is_refused_and_release_frees(tmp_path):
    first = RunLock(tmp_path).acquire()
    holder = json.loads((tmp_path / LOCK_NAME).read_text())
    assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname() and holder["started"]
    with pytest.raises(RunLockedError, match=f"being written by process {os.getpid()} on"):
        RunLock(tmp_path).acquire()
    first.release()
    assert not (tmp_path / LOCK_NAME).exists()
    with RunLock(tmp_path) as again:
        assert again.held and again.took_over is None
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_lock_held_by_another_process_is_refused(tmp_path):
    code = ("import sys, time; from mfkit.train.lock import RunLock; RunLock(sys.argv[1]).acquire(); "
            "print('locked', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError, match=f"process {holder.pid}"):
            RunLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()
    taken = RunLock(tmp_path).acquire()  # the killed holder left its file: stale now
    assert taken.took_over is not None and taken.took_over.pid == holder.pid
    taken.release()


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    pid = dead_pid()
    write_holder(tmp_path, pid)
    with RunLock(tmp_path) as taken:
        assert taken.took_over == LockHolder(pid, socket.gethostname(), "2026-01-01T00:00:00+00:00",
                                             "mfkit train old.yaml")
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()


def test_without_os_locks_the_file_decides(tmp_path, monkeypatch):
    monkeypatch.setattr(lock_module, "_os_lock", lambda fd: "unsupported")
    write_holder(tmp_path, os.getpid())  # a live process: refused, with the file to delete if it is gone
    with pytest.raises(RunLockedError, match=f"delete {tmp_path / LOCK_NAME}"):
        RunLock(tmp_path).acquire()
    write_holder(tmp_path, os.getpid(), host="another-host")  # liveness cannot be known: refused
    with pytest.raises(RunLockedError, match="another-host"):
        RunLock(tmp_path).acquire()
    write_holder(tmp_path, dead_pid())  # dead on this host: taken over
    with RunLock(tmp_path) as taken:
        assert taken.took_over is not None
        with pytest.raises(RunLockedError):
            RunLock(tmp_path).acquire()
