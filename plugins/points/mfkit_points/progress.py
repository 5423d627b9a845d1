"""A rich progress bar on stderr for the one-off jobs of this plugin (building caches, training the
evaluation classifier). It stays quiet when stderr is not a terminal, apart from one line at the start."""
from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


@contextmanager
def progress_bar(description: str, total: int) -> Iterator[Callable[[int], None]]:
    """Yields ``advance(n=1)``; shows ``description`` with a bar, counts, elapsed and remaining time."""
    console = Console(stderr=True)
    if not console.is_terminal:
        print(f"mfkit-points: {description} ...", file=sys.stderr, flush=True)
        yield lambda n=1: None
        return
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n=1: progress.advance(task, n)
