"""What a run reports: a JSONL metrics log (and TensorBoard when installed), and live progress."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class MetricsLog:
    """Appends one JSON object per line to ``metrics.jsonl``; mirrors scalars to TensorBoard if available.

    ``resumed_at``: the step a resumed run restarts from. Lines of later steps (written before a crash,
    and about to be replayed) are dropped first, so every step appears once; ``set_aside``: a file that
    keeps them instead (a resume from an earlier checkpoint abandons them). A line that cannot be
    written (a full disk) is reported once through ``warn`` and training goes on.
    """

    def __init__(self, run_dir: Path, resumed_at: int | None = None, warn: Callable[[str], None] | None = None,
                 set_aside: Path | None = None) -> None:
        self.path = run_dir / "metrics.jsonl"
        self._warn, self._warned = warn, False
        if resumed_at is not None:
            drop_lines_after(self.path, resumed_at, set_aside)
        self._handle = open(self.path, "a", buffering=1)
        self._board = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            purge = None if resumed_at is None else resumed_at + 1
            self._board = SummaryWriter(str(run_dir / "tensorboard"), purge_step=purge)
        except Exception:  # noqa: BLE001 - TensorBoard is optional
            self._board = None

    def write(self, step: int, values: dict[str, Any]) -> None:
        record = {"step": step, "time": round(time.time(), 3), **values}
        try:
            self._handle.write(json.dumps(record) + "\n")
        except OSError as error:
            if self._warn is not None and not self._warned:
                self._warn(f"cannot write {self.path} ({error.strerror or error}); training goes on without metrics lines")
            self._warned = True
        if self._board is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)):
                    self._board.add_scalar(key, value, step)

    def close(self) -> None:
        try:
            self._handle.close()
        except OSError:
            pass
        if self._board is not None:
            self._board.close()


def drop_lines_after(path: Path, step: int, set_aside: Path | None = None) -> int:
    """Keep the lines of ``path`` whose step is at most ``step`` (and that are whole JSON); return how many were
    dropped. ``set_aside``: append the whole lines of later steps to this file first."""
    if not path.is_file():
        return 0
    kept, later, dropped = [], [], 0
    for line in path.read_text().splitlines():
        try:
            line_step = int(json.loads(line)["step"])
        except (ValueError, KeyError, TypeError):
            line_step = None
        if line_step is not None and line_step <= step:
            kept.append(line)
        else:
            dropped += 1
            if line_step is not None:
                later.append(line)
    if later and set_aside is not None:
        set_aside.parent.mkdir(parents=True, exist_ok=True)
        with open(set_aside, "a") as handle:
            handle.write("".join(line + "\n" for line in later))
    if dropped:
        temporary = path.with_name(f".{path.name}.tmp")
        temporary.write_text("".join(line + "\n" for line in kept))
        os.replace(temporary, path)
    return dropped


class TrainingProgress:
    """A rich progress bar (step, unweighted MSE, weighted loss, it/s, ETA) on a terminal; plain log lines elsewhere.

    The unweighted MSE comes first: it is the number that falls as the model learns. The loss the
    optimiser sees is adaptive-weighted (each sample divided by about its own error) and stays
    near a constant by design.
    """

    def __init__(self, total: int, start: int, console: Console, enabled: bool = True) -> None:
        self.console, self.enabled = console, enabled
        self.live = enabled and console.is_terminal
        self._start_time, self._start_step = time.perf_counter(), start
        self._progress = None
        if self.live:
            self._progress = Progress(
                TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                TextColumn("[bold]mse {task.fields[mse]:.4f}[/]  (weighted loss {task.fields[loss]:.3f})  "
                           "{task.fields[speed]:.1f} it/s"),
                TimeRemainingColumn(), console=console,
            )
            self._task = self._progress.add_task("train", total=total, completed=start, loss=float("nan"),
                                                 mse=float("nan"), speed=0.0)
            self._progress.start()

    def speed(self, step: int) -> float:
        elapsed = time.perf_counter() - self._start_time
        return (step - self._start_step) / elapsed if elapsed > 0 else 0.0

    def update(self, step: int, loss: float, mse: float, log_line: bool) -> None:
        if not self.enabled:
            return
        if self._progress is not None:
            self._progress.update(self._task, completed=step, loss=loss, mse=mse, speed=self.speed(step))
        elif log_line:
            self.console.print(f"step {step}  mse {mse:.4f}  (weighted loss {loss:.3f})  {self.speed(step):.1f} it/s",
                               highlight=False)

    def note(self, line: str) -> None:
        """A line printed above the live bar (or as a plain line), e.g. evaluation figures."""
        if self.enabled:
            self.console.print(line, markup=False, highlight=False)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
