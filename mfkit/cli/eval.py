"""`mfkit eval`: score samples of a run per number of network calls against held-out real data."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from mfkit.cli.console import err, out
from mfkit.cli.errors import handle_errors


@contextmanager
def eval_progress() -> Iterator:
    """A progress(task, done, total) callback drawing one rich bar per task on stderr."""
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=err, transient=False)
    tasks: dict[str, int] = {}

    def update(task: str, done: int, total: int) -> None:
        if task not in tasks:
            tasks[task] = progress.add_task(task, total=total)
        progress.update(tasks[task], completed=done, total=total)

    with progress:
        yield update


def report_table(report) -> Table:
    """Rows: sampler and steps; columns: each metric with its real-vs-real floor beside it, ms per sample."""
    from mfkit.evaluation.report import SAMPLERS, format_value

    arrows = {"lower": "↓", "higher": "↑"}
    info = report.info
    title = (f"{info.get('run', '')} step {info.get('step', '?')} ({info.get('weights', '')}), {report.count} samples "
             f"vs {report.reference_count} real (val); floor: {report.floor_count} real (train) vs the same")
    if "guidance" in info:
        title += f"; guidance {info['guidance']:g} at sampling time (2 network calls a step)"
    table = Table(title=title, title_justify="left")
    table.add_column("sampler")
    table.add_column("steps", justify="right")
    for name, direction in report.directions.items():
        table.add_column(f"{name} {arrows.get(direction, '')}", justify="right")
        table.add_column("floor", justify="right", style="dim")
    table.add_column("network ms/sample", justify="right")
    table.add_column("decode ms/sample", justify="right")
    for row in report.rows:
        cells = [SAMPLERS[row.sampler], str(row.steps)]
        for name in report.directions:
            cells.append(format_value(row.metrics[name]))
            cells.append(format_value(report.floor[name]) if report.floor else "-")
        cells += [f"{row.network_ms:.4g}", f"{row.decode_ms:.3g}"]
        table.add_row(*cells)
    return table


@handle_errors
def evaluate(
    overrides: Optional[List[str]] = typer.Argument(None, help="key.path=value overrides of the stored recipe"),
    run: Optional[Path] = typer.Option(None, "--run", help="run folder (default: the latest run under runs/)"),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="a checkpoint file (wins over --run)"),
    steps: Optional[str] = typer.Option(None, "--steps", help="MeanFlow step counts, e.g. 1,2,4 (default for a "
                                        "MeanFlow run: 1,2,4; refused for a flow-matching run: use --euler)"),
    euler: Optional[str] = typer.Option(None, "--euler", help="Euler step counts u(z, t, t), e.g. 1,2,4,8,32,100 "
                                        "(default for a flow-matching run: 1,2,4,8,32,100)"),
    n: Optional[int] = typer.Option(None, "--n", min=2, help="samples per step count (default: the recipe's "
                                    "sample.count)"),
    cond: Optional[str] = typer.Option(None, "--cond", help="condition all samples on this (class name or number, "
                                       "or the modality's own syntax) and compare with real items of it; null: "
                                       "unconditional samples against all real items"),
    evaluator: Optional[str] = typer.Option(None, "--evaluator", help="evaluator plugin ([package:]name; default: "
                                            "the one installed for the run's modality)"),
    param: Optional[List[str]] = typer.Option(None, "--param", help="an evaluator parameter name=value (repeat "
                                              "it; see `mfkit plugins --params EVALUATOR`)"),
    json_file: Optional[Path] = typer.Option(None, "--json", help="also write every figure to this JSON file"),
    seed: int = typer.Option(0, "--seed", help="seed of the noise, the order of the conditions, the real subsets "
                                               "and the scores"),
    reference: Optional[int] = typer.Option(None, "--reference", min=2, help="at most this many real val items "
                                            "(default: all)"),
    no_ema: bool = typer.Option(False, "--no-ema", help="use the raw weights instead of the EMA"),
    ema: Optional[str] = typer.Option(None, "--ema", metavar="DECAY", help="use the EMA with this decay, e.g. "
                                      "0.9995 (one of the recipe's train.ema_decays; default: the first)"),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda"),
    guidance: float = typer.Option(1.0, "--guidance", min=0.0, help="classifier-free guidance scale at sampling "
                                   "time (1: none; else 2 network calls a step; needs a run trained with "
                                   "class dropout and no guidance folded in: w_cfg 1, kappa 0)"),
) -> None:
    """Score samples of a trained run with each number of steps against held-out real data.

    Each metric is printed beside its real-vs-real floor (real training items against the same held-out ones).

    Also the wall time per sample of the network and of decoding. The same seed gives the same figures.

    Examples:

      mfkit eval --steps 1,2,4

      mfkit eval --run runs/toy2d_flow_matching --euler 1,2,4,8,32,100 --json fm.json

      mfkit eval --run runs/toy2d_guided --cond north --n 2000

      mfkit eval --run runs/points_shapes --param per_class=true

      mfkit eval --run runs/toy2d --ema 0.999 --steps 1

      mfkit eval --run runs/toy2d_cfg --euler 8,32 --guidance 2
    """
    from mfkit.evaluation import evaluate_checkpoint, parse_counts
    from mfkit.evaluation.loading import parse_params
    from mfkit.runs import resolve_checkpoint

    path = resolve_checkpoint(run, checkpoint)
    mf_counts = parse_counts(steps) if steps is not None else None
    euler_counts = parse_counts(euler) if euler is not None else None
    if mf_counts is not None and euler_counts is None:
        euler_counts = ()
    if euler_counts is not None and mf_counts is None:
        mf_counts = ()
    with eval_progress() as progress:
        report = evaluate_checkpoint(path, steps=mf_counts, euler=euler_counts, count=n, cond=cond, seed=seed,
                                     evaluator=evaluator, evaluator_params=parse_params(param or []),
                                     use_ema=not no_ema, ema=ema, device=device,
                                     overrides=overrides or [], reference_limit=reference, progress=progress,
                                     guidance=guidance)
    table = report_table(report)
    needed = Measurement.get(out, out.options.update_width(10_000), table).maximum
    # never cut a figure short: a pipe or a narrow terminal gets the table at its full width
    wide = Console(file=out.file, width=max(out.width, needed), force_terminal=out.is_terminal,
                   color_system=out.color_system, soft_wrap=True)
    wide.print(table)
    err.print(f"evaluator {report.evaluator}; {report.seconds['total']:.1f} s in all", markup=False, highlight=False)
    if json_file is not None:
        err.print(f"wrote {report.write_json(json_file)}", markup=False, highlight=False)
