"""`mfkit export`: a run's weights and recipe as one small safetensors file for others to load."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mfkit.cli.console import err, out
from mfkit.cli.errors import handle_errors


@handle_errors
def export(
    run: Optional[Path] = typer.Argument(None, help="run folder (default: the latest run under runs/)"),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="a checkpoint file (wins over RUN)"),
    raw: bool = typer.Option(False, "--raw", help="export the raw weights instead of an EMA"),
    ema: Optional[str] = typer.Option(None, "--ema", metavar="DECAY", help="export the EMA with this decay, e.g. "
                                      "0.9995 (one of the recipe's train.ema_decays; default: the first)"),
    out_path: Optional[Path] = typer.Option(None, "--out", help="file or folder to write (default: a new file "
                                            "<run>/exports/<name>-step-N-ema.safetensors, -raw or "
                                            "-ema0.9995)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace the --out file if it exists"),
) -> None:
    """Write a run's weights (weights only) and its resolved recipe to one safetensors file.

    A .yaml file with the recipe is written beside it. Load it from Python with one call:
    mfkit.load_exported(PATH) gives the network in eval mode with its recipe.

    Examples:

      mfkit export runs/toy2d

      mfkit export runs/toy2d --raw --out toy2d.safetensors

      mfkit export runs/toy2d --ema 0.999
    """
    from mfkit.export import export_checkpoint
    from mfkit.runs import resolve_checkpoint

    source = resolve_checkpoint(run, checkpoint)
    path, weights = export_checkpoint(source, out_path, use_ema=not raw, ema=ema, overwrite=overwrite)
    err.print(f"exported the {weights} weights of {source}; load with mfkit.load_exported({str(path)!r})",
              markup=False, highlight=False)
    out.print(str(path), markup=False, highlight=False)
