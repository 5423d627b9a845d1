"""Running the CLI in tests: in-process (CliRunner) or as a real process (signals, locks)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from typer.testing import CliRunner

from mfkit.cli import app
from tests.helpers import ROOT

runner = CliRunner()


def run(*args):
    """``mfkit ARGS`` in this process; the result has exit_code and output (stdout and stderr)."""
    return runner.invoke(app, [str(a) for a in args])


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def start(*args, cwd: Path | None = None) -> subprocess.Popen:
    """``python -m mfkit ARGS`` as a separate process, output (both streams) captured as text."""
    return subprocess.Popen([sys.executable, "-m", "mfkit", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env(), cwd=cwd)


def wait_for_metrics(run_dir: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    """Until the run has written a metrics line (it is training and holds its lock)."""
    metrics = run_dir / "metrics.jsonl"
    deadline = time.time() + timeout
    while time.time() < deadline and not (metrics.exists() and metrics.stat().st_size > 0):
        if process.poll() is not None:
            raise AssertionError(f"training ended early: {process.stdout.read()}")
        time.sleep(0.2)
    assert metrics.exists() and metrics.stat().st_size > 0, "no metrics line in time"
