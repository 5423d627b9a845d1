"""One writer per run folder: the lock file ``.mfkit-lock`` says who writes (PID, host, start time, command).

Where ``fcntl.flock`` works (Linux, macOS, most network file systems) the file is also locked by the
operating system, which drops the lock when the process dies, however it dies: a lock file left behind
is recognised as stale and taken over, with a message. Where it does not (Windows, file systems without
locks), the file itself is the lock, created exclusively; a leftover of a process of this host that no
longer runs is taken over, and any other leftover is refused with the path to delete.
"""
from __future__ import annotations

import errno
import json
import os
import socket
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

LOCK_NAME = ".mfkit-lock"
_UNSUPPORTED = {getattr(errno, name) for name in ("ENOLCK", "EOPNOTSUPP", "ENOTSUP", "ENOSYS", "EINVAL")
                if hasattr(errno, name)}


class RunLockedError(RuntimeError):
    """Another process is writing the run folder."""


@dataclass(frozen=True)
class LockHolder:
    """Who holds (or held) a run folder's lock."""

    pid: int
    host: str
    started: str
    command: str = ""

    @classmethod
    def me(cls) -> "LockHolder":
        program = Path(sys.argv[0]).name if sys.argv else ""
        if program == "__main__.py":  # python -m mfkit, torchrun -m mfkit
            program = "mfkit"
        command = " ".join([program, *sys.argv[1:]]) if sys.argv else ""
        return cls(os.getpid(), socket.gethostname(), datetime.now().astimezone().isoformat(timespec="seconds"),
                   command[:300])

    def describe(self) -> str:
        text = f"process {self.pid} on {self.host} (started {self.started}"
        return text + (f", `{self.command}`)" if self.command else ")")

    def is_dead_here(self) -> bool:
        """True when the holder ran on this host and no longer runs (never guessed for other hosts)."""
        if self.host != socket.gethostname() or os.name == "nt":
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except OSError:
            return False
        return False


def _read(fd: int) -> LockHolder | None:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        data = json.loads(os.read(fd, 65536).decode() or "null")
        return LockHolder(int(data["pid"]), str(data["host"]), str(data["started"]), str(data.get("command", "")))
    except (OSError, ValueError, TypeError, KeyError):
        return None


def _os_lock(fd: int) -> str:
    """'locked', 'busy' (another process holds it) or 'unsupported'."""
    if fcntl is None:
        return "unsupported"
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return "busy"
    except OSError as error:
        if error.errno in (errno.EAGAIN, errno.EACCES):
            return "busy"
        if error.errno in _UNSUPPORTED:
            return "unsupported"
        raise
    return "locked"


def _same_file(fd: int, path: Path) -> bool:
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (on_disk.st_dev, on_disk.st_ino)


class RunLock:
    """The lock of one run folder. ``acquire()`` or raise :class:`RunLockedError`; ``release()`` removes it."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.took_over: LockHolder | None = None
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> "RunLock":
        for _ in range(5):  # the file can be released and removed between open and lock: look again
            created, fd = self._open()
            keep = False
            try:
                state = _os_lock(fd)
                if state == "busy":
                    raise RunLockedError(self._busy_message(_read(fd), delete_hint=False))
                if not _same_file(fd, self.path):
                    continue
                previous = None if created else _read(fd)
                if state == "unsupported" and not created and not (previous and previous.is_dead_here()):
                    raise RunLockedError(self._busy_message(previous, delete_hint=True))
                self._write(fd, LockHolder.me())
                self._fd, self.took_over, keep = fd, previous, True
                return self
            finally:
                if not keep:
                    os.close(fd)
        raise RunLockedError(f"cannot lock {self.folder}: its lock file {self.path} keeps changing; "
                             f"is another mfkit process starting on it?")

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            if _same_file(self._fd, self.path):
                self.path.unlink()
        except OSError:
            pass  # a lock file that cannot be removed is stale once this process ends
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire() if not self.held else self

    def __exit__(self, *exc) -> None:
        self.release()

    def _open(self) -> tuple[bool, int]:
        flags = os.O_RDWR | getattr(os, "O_BINARY", 0)
        try:
            return True, os.open(self.path, flags | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False, os.open(self.path, flags)

    @staticmethod
    def _write(fd: int, holder: LockHolder) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        os.ftruncate(fd, 0)
        os.write(fd, (json.dumps(holder.__dict__) + "\n").encode())
        os.fsync(fd)

    def _busy_message(self, holder: LockHolder | None, delete_hint: bool) -> str:
        who = holder.describe() if holder else "another process"
        message = (f"run folder {self.folder} is being written by {who}; a run has one writer at a time. "
                   f"Wait for it to finish, or stop it (Ctrl-C or SIGTERM saves a checkpoint) and then --resume")
        if delete_hint:
            message += f"; if that process no longer runs, delete {self.path}"
        return message
