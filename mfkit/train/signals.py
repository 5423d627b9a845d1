"""Ctrl-C (SIGINT) and SIGTERM: finish the step, save, exit with 128 + the signal number (130, 143).

SIGTERM is what cluster pre-emption, ``docker stop``, schedulers' time limits and ``torchrun`` (to each
worker) send. During training the first signal only asks the loop to stop after the current step; a
second one stops at once (KeyboardInterrupt for SIGINT, :class:`Terminated` for SIGTERM).
"""
from __future__ import annotations

import os
import signal
import threading
from typing import IO, Callable

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Terminated(BaseException):
    """SIGTERM outside the graceful window (like KeyboardInterrupt for SIGINT)."""

    signum = int(signal.SIGTERM)


def exit_code(signum: int) -> int:
    """The conventional exit status of a process stopped by a signal: 128 + its number."""
    return 128 + int(signum)


def signal_label(signum: int) -> str:
    return "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name


def write_to_descriptor(file: IO[str], text: str) -> bool:
    """``text`` written with one ``os.write`` to ``file``'s descriptor, past Python's buffers and any library:
    safe inside a signal handler, which may have interrupted a half-done print or import. False when ``file``
    has no descriptor (captured output, e.g. in tests); the caller then says it later, outside the handler."""
    try:
        descriptor = file.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    try:
        os.write(descriptor, text.encode("utf-8", "replace"))
    except OSError:
        pass  # a closed terminal or pipe: nobody to tell
    return True


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _raise_now(signum: int, frame) -> None:
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Terminated


def raise_on_sigterm() -> None:
    """Turn SIGTERM into the :class:`Terminated` exception, so clean-up (``finally``) runs."""
    if _main_thread():
        signal.signal(signal.SIGTERM, _raise_now)


class GracefulStop:
    """While active (a context manager), the first SIGINT or SIGTERM sets :attr:`received`.

    ``on_signal(signum)`` is called then, inside the handler: the signal may have interrupted anything (a
    rich print, a lazy import), so it must not print through rich or import; it may use
    :func:`write_to_descriptor` or leave a note for the loop. Handlers are only installed from the main
    thread (Python's rule); elsewhere the loop simply runs to its end.
    """

    def __init__(self, on_signal: Callable[[int], None] | None = None) -> None:
        self.received: int | None = None
        self._on_signal = on_signal
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.received is not None

    def _handle(self, signum: int, frame) -> None:
        if self.received is not None:
            _raise_now(signum, frame)
        self.received = signum
        if self._on_signal is not None:
            self._on_signal(signum)

    def __enter__(self) -> "GracefulStop":
        if _main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
