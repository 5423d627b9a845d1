"""What a run reports: a JSONL metrics log (and TensorBoard when installed), and live progress."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class MetricsLog:
    """Appends one JSON object per line to ``metrics.jsonl``; mirrors scalars to TensorBoard if available."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / "metrics.jsonl"
        self._handle = open(self.path, "a", buffering=1)
        self._board = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._board = SummaryWriter(str(run_dir / "tensorboard"))
        except Exception:  # noqa: BLE001 - TensorBoard is optional
            self._board = None

    def write(self, step: int, values: dict[str, Any]) -> None:
        record = {"step": step, "time": round(time.time(), 3), **values}
        self._handle.write(json.dumps(record) + "\n")
        if self._board is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)):
                    self._board.add_scalar(key, value, step)

    def close(self) -> None:
        self._handle.close()
        if self._board is not None:
            self._board.close()


class TrainingProgress:
    """A rich progress bar (step, loss, unweighted MSE, it/s, ETA) on a terminal; plain log lines elsewhere."""

    def __init__(self, total: int, start: int, console: Console, enabled: bool = True) -> None:
        self.console, self.enabled = console, enabled
        self.live = enabled and console.is_terminal
        self._start_time, self._start_step = time.perf_counter(), start
        self._progress = None
        if self.live:
            self._progress = Progress(
                TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]:.4f}  mse {task.fields[mse]:.4f}  {task.fields[speed]:.1f} it/s"),
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
            self.console.print(f"step {step}  loss {loss:.4f}  mse {mse:.4f}  {self.speed(step):.1f} it/s")

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
