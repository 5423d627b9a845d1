"""`mfkit train`: a recipe (or a run folder, to resume or restart it) in, a run folder out."""
from __future__ import annotations

import shlex
from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape

from mfkit.cli.console import err
from mfkit.cli.errors import UserError, handle_errors
from mfkit.cli.recipes import find_recipe


def interrupted_message(result, resume_command: str) -> str:
    """What an interrupted ``Trainer.fit()`` (a :class:`~mfkit.train.trainer.TrainResult`) did, and what next."""
    from mfkit.train.signals import signal_label

    label = signal_label(result.signal)
    if result.started:
        return (f"interrupted ({label}) at step {result.step}; checkpoint saved to {result.checkpoint}\n"
                f"continue with: {resume_command}")
    if result.checkpoint is not None:
        return (f"interrupted ({label}) during the set-up: nothing trained, the run folder is as it was "
                f"(step {result.step})\ncontinue with: {resume_command}")
    return f"interrupted ({label}) during the set-up: nothing trained or kept; run the same command again to start"


def load_training_recipe(source: str, overrides: list[str], resume: bool, overwrite: bool):
    """The recipe to train: a recipe file (or shipped name) with overrides, or a run folder's own recipe."""
    from mfkit.recipe.loading import load_recipe
    from mfkit.train.resume import recipe_of_run
    from mfkit.train.run_folder import is_run_folder

    path = find_recipe(source)
    if resume and not path.exists():
        raise UserError(f"--resume: there is no run folder (or recipe file) {source}")
    if is_run_folder(path):
        if not (resume or overwrite):
            raise UserError(f"{source} is a run folder: continue it with `mfkit train {shlex.quote(source)} --resume`, "
                            f"or give a recipe file to start a new run")
        return recipe_of_run(path, overrides)
    if path.is_dir():
        raise UserError(f"{source} is a folder but not an mfkit run folder (no recipe.yaml and checkpoints/); "
                        f"give a recipe file, e.g. recipes/toy2d.yaml")
    return load_recipe(path, overrides)


@handle_errors
def train(
    recipe: str = typer.Argument(..., help="recipe file or shipped recipe name; with --resume or --overwrite "
                                 "also a run folder (its own recipe.yaml)"),
    overrides: Optional[List[str]] = typer.Argument(None, help="key.path=value overrides, e.g. train.steps=500"),
    resume: bool = typer.Option(False, "--resume", help="continue the run from its latest checkpoint, with its "
                                "saved recipe (only run-length settings such as train.steps may change)"),
    from_checkpoint: Optional[Path] = typer.Option(None, "--from", help="resume from this checkpoint file instead "
                                                   "of the latest (e.g. when the latest is damaged); implies --resume"),
    allow_changes: bool = typer.Option(False, "--allow-changes", help="resume even though the recipe changes more "
                                       "than run-length settings (the differences are printed)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="delete an existing run folder of the same name first "
                                   "(only a folder mfkit created, and never while another process writes it)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress output"),
) -> None:
    """Train a model from a YAML recipe. One process writes a run folder at a time (a lock in the folder).

    Ctrl-C or SIGTERM finishes the current step, saves a checkpoint and exits (130 or 143). One that arrives
    during the set-up (loading data, building the model, reading the checkpoint) exits the same way once the
    set-up is done, having trained nothing: a resumed run folder is left as it was, a new run's folder removed.

    Examples:

      mfkit train recipes/toy2d.yaml

      mfkit train toy2d train.steps=500 name=short-run

      mfkit train runs/toy2d --resume

      mfkit train runs/toy2d --resume train.steps=6000

      mfkit train runs/toy2d --resume --from runs/toy2d/checkpoints/step-0002000.safetensors

      torchrun --nproc_per_node 2 -m mfkit train recipes/toy2d.yaml
    """
    from mfkit.train.distributed import exit_worker
    from mfkit.train.signals import exit_code
    from mfkit.train.trainer import Trainer

    resume = resume or from_checkpoint is not None
    if resume and overwrite:
        raise UserError("--resume (or --from) and --overwrite exclude each other: continue the run, or start it over")
    loaded = load_training_recipe(recipe, overrides or [], resume, overwrite)
    trainer = Trainer(loaded, resume=resume, overwrite=overwrite, resume_from=from_checkpoint,
                      allow_changes=allow_changes, console=err, progress=not quiet)
    result = trainer.fit()
    run_dir = shlex.quote(str(result.run_dir))
    if result.interrupted:
        if trainer.group.is_main:
            err.print(interrupted_message(result, f"mfkit train {run_dir} --resume"), markup=False, highlight=False)
        exit_worker(trainer.group, exit_code(result.signal))
        raise typer.Exit(exit_code(result.signal))
    if trainer.group.is_main:
        err.print("[green]done[/]: " + escape(f"{result.step} steps; checkpoint {result.checkpoint}; "
                                              f"previews in {result.run_dir / 'previews'}"), highlight=False)
        err.print(f"next: mfkit sample --run {run_dir}   (draws with the recipe's sample.steps = "
                  f"{loaded.sample.steps})", markup=False, highlight=False)
    exit_worker(trainer.group, 0)
