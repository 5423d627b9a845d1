"""`mfkit sample`: draw samples from a run into a new folder, with a progress bar for large counts."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from mfkit.cli.console import err, out
from mfkit.cli.errors import handle_errors


@contextmanager
def sampling_progress() -> Iterator:
    """A callback (drawn, wanted) that shows a progress bar on stderr once more than one batch is needed."""
    progress = Progress(TextColumn("[bold]sampling"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                        console=err)
    task = None

    def update(drawn: int, wanted: int) -> None:
        nonlocal task
        if task is None:
            if drawn >= wanted:
                return  # all in one batch: nothing to show
            task = progress.add_task("sampling", total=wanted)
            progress.start()
        progress.update(task, completed=drawn)

    try:
        yield update
    finally:
        if task is not None:
            progress.stop()


@handle_errors
def sample(
    overrides: Optional[List[str]] = typer.Argument(None, help="key.path=value overrides of the stored recipe"),
    run: Optional[Path] = typer.Option(None, "--run", help="run folder (default: the latest run under runs/)"),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="a checkpoint file (wins over --run)"),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="network calls per sample (default: the "
                                        "recipe's sample.steps: 1 for MeanFlow recipes)"),
    n: Optional[int] = typer.Option(None, "--n", min=1, help="how many samples (default: the recipe's sample.count)"),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="output folder, absent or empty (default: a new "
                                           "folder under <run>/samples/ named by step, steps, n, seed, ema/raw "
                                           "and --cond)"),
    cond: Optional[str] = typer.Option(None, "--cond", help="class name or number to condition on"),
    seed: int = typer.Option(0, "--seed", help="noise seed"),
    no_ema: bool = typer.Option(False, "--no-ema", help="use the raw weights instead of the EMA"),
    ema: Optional[str] = typer.Option(None, "--ema", metavar="DECAY", help="use the EMA with this decay, e.g. "
                                      "0.9995 (one of the recipe's train.ema_decays; default: the first)"),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda"),
    euler: Optional[bool] = typer.Option(None, "--euler/--meanflow", help="step with u(z, t, t) (flow-matching "
                                         "Euler) or u(z, r, t) (MeanFlow); default: what the run trained"),
    guidance: float = typer.Option(1.0, "--guidance", min=0.0, help="classifier-free guidance scale at sampling "
                                   "time (1: none; else 2 network calls a step; needs a run trained with "
                                   "class dropout and no guidance folded in: w_cfg 1, kappa 0)"),
) -> None:
    """Draw samples from a trained run (reads the recipe stored in the checkpoint).

    Each call writes a new folder; earlier samples are never replaced.

    Examples:

      mfkit sample

      mfkit sample --run runs/toy2d --steps 2 --n 5000 --out my-samples

      mfkit sample --cond north --seed 3

      mfkit sample --run runs/toy2d --ema 0.999

      mfkit sample --run runs/toy2d_cfg --cond north --guidance 2
    """
    from mfkit.runs import resolve_checkpoint, sample_checkpoint

    path = resolve_checkpoint(run, checkpoint)
    with sampling_progress() as progress:
        result = sample_checkpoint(path, steps=steps, count=n, out_dir=out_dir, cond=cond, seed=seed,
                                   use_ema=not no_ema, ema=ema, device=device, overrides=overrides or [], euler=euler,
                                   progress=progress, guidance=guidance)
    err.print(f"sampled {result.count} with {result.steps} step(s) from {result.checkpoint} (step {result.step})",
              markup=False, highlight=False)
    for file in result.files:
        out.print(str(file), markup=False, highlight=False)
