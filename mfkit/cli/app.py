"""`mfkit` commands. User mistakes exit with code 2 and one clear message (`--verbose` shows the traceback)."""
from __future__ import annotations

import functools
import sys
import traceback
from pathlib import Path
from typing import Callable, List, Optional

import typer
from rich.console import Console
from rich.table import Table

from mfkit.cli.recipes import display_path, find_recipe, shipped_recipes

app = typer.Typer(
    help="mfkit: one-step generative modeling with MeanFlow.\n\n"
         "Quick start:\n\n"
         "  mfkit demo\n\n"
         "  mfkit train recipes/toy2d.yaml\n\n"
         "  mfkit sample --steps 1",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)
_state = {"verbose": False}


class UserError(Exception):
    """A mistake the user can fix; printed as one line, exit code 2."""


def _user_error_types() -> tuple[type[BaseException], ...]:
    from mfkit.plugins.discovery import UnknownPluginError
    from mfkit.recipe.loading import RecipeError
    from mfkit.train.checkpoint import CheckpointError
    from mfkit.train.trainer import RunFolderError

    return (UserError, RecipeError, UnknownPluginError, CheckpointError, RunFolderError)


def handle_errors(command: Callable) -> Callable:
    """Turn user mistakes into one message and exit code 2; training failures into exit code 1."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from mfkit.train.distributed import OutOfSyncError
        from mfkit.train.trainer import TrainingDiverged

        try:
            return command(*args, **kwargs)
        except _user_error_types() as error:
            _report(error, "error")
            raise typer.Exit(2) from None
        except (TrainingDiverged, OutOfSyncError) as error:
            _report(error, "training stopped")
            raise typer.Exit(1) from None
        except ValueError as error:  # bad values handed to the library (labels, grids, ...)
            _report(error, "error")
            raise typer.Exit(2) from None
        except KeyboardInterrupt:  # outside the training loop (which saves and exits by itself)
            err.print("interrupted")
            raise typer.Exit(130) from None

    return wrapper


def _report(error: BaseException, prefix: str) -> None:
    if _state["verbose"]:
        err.print(traceback.format_exc(), markup=False, highlight=False)
    err.print(f"[bold red]{prefix}:[/] {error}", highlight=False)
    if not _state["verbose"]:
        err.print("[dim](run with --verbose for the traceback)[/]")


@app.callback()
def root(verbose: bool = typer.Option(False, "--verbose", "-v", help="show tracebacks of errors")) -> None:
    _state["verbose"] = verbose


@app.command()
@handle_errors
def train(
    recipe: str = typer.Argument(..., help="recipe file, or the name of a shipped recipe (see `mfkit recipes`)"),
    overrides: Optional[List[str]] = typer.Argument(None, help="key.path=value overrides, e.g. train.steps=500"),
    resume: bool = typer.Option(False, "--resume", help="continue the run from its latest checkpoint"),
    overwrite: bool = typer.Option(False, "--overwrite", help="delete an existing run folder of the same name first"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress output"),
) -> None:
    """Train a model from a YAML recipe.

    Examples:

      mfkit train recipes/toy2d.yaml

      mfkit train toy2d train.steps=500 name=short-run

      mfkit train recipes/toy2d.yaml --resume

      torchrun --nproc_per_node 2 -m mfkit train recipes/toy2d.yaml
    """
    from mfkit.recipe.loading import load_recipe
    from mfkit.train.trainer import Trainer

    loaded = load_recipe(find_recipe(recipe), overrides or [])
    trainer = Trainer(loaded, resume=resume, overwrite=overwrite, console=err, progress=not quiet)
    result = trainer.fit()
    if trainer.group.is_main:
        if result.interrupted:
            err.print(f"interrupted at step {result.step}; checkpoint saved to {result.checkpoint}\n"
                      f"continue with: mfkit train {recipe} --resume")
            raise typer.Exit(130)
        err.print(f"[green]done[/]: {result.step} steps; checkpoint {result.checkpoint}; "
                  f"previews in {result.run_dir / 'previews'}")
        err.print(f"next: mfkit sample --run {result.run_dir} --steps 1")


@app.command()
@handle_errors
def sample(
    overrides: Optional[List[str]] = typer.Argument(None, help="key.path=value overrides of the stored recipe"),
    run: Optional[Path] = typer.Option(None, "--run", help="run folder (default: the latest run under runs/)"),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="a checkpoint file (wins over --run)"),
    steps: int = typer.Option(1, "--steps", min=1, help="network calls per sample (1 = one-step)"),
    n: Optional[int] = typer.Option(None, "--n", min=1, help="how many samples (default: the recipe's sample.count)"),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="output folder (default: <run>/samples/...)"),
    cond: Optional[str] = typer.Option(None, "--cond", help="class name or number to condition on"),
    seed: int = typer.Option(0, "--seed", help="noise seed"),
    no_ema: bool = typer.Option(False, "--no-ema", help="use the raw weights instead of the EMA"),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda"),
    euler: Optional[bool] = typer.Option(None, "--euler/--meanflow", help="step with u(z, t, t) (flow-matching "
                                         "Euler) or u(z, r, t) (MeanFlow); default: what the run trained"),
) -> None:
    """Draw samples from a trained run (reads the recipe stored in the checkpoint).

    Examples:

      mfkit sample --steps 1

      mfkit sample --run runs/toy2d --steps 2 --n 5000 --out my-samples

      mfkit sample --cond north --seed 3
    """
    from mfkit.runs import resolve_checkpoint, sample_checkpoint

    path = resolve_checkpoint(run, checkpoint)
    result = sample_checkpoint(path, steps=steps, count=n, out_dir=out_dir, cond=cond, seed=seed,
                               use_ema=not no_ema, device=device, overrides=overrides or [], euler=euler)
    err.print(f"sampled with {steps} step(s) from {result.checkpoint} (step {result.step})")
    for file in result.files:
        out.print(str(file))


@app.command()
@handle_errors
def demo(
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="training steps (default: the recipe's 3000)"),
    output_dir: Path = typer.Option(Path("runs"), "--output-dir", help="folder for the run"),
) -> None:
    """Train the demo (2-D checkerboard, about 2 minutes on a CPU), sample it with one step.

    Trains the embedded demo recipe, draws samples with one network call each, and prints where they
    are. Starts the run over if it exists.

    Example: mfkit demo
    """
    from mfkit.cli.demo import demo_recipe_data
    from mfkit.recipe.loading import parse_recipe
    from mfkit.runs import sample_checkpoint
    from mfkit.train.trainer import Trainer

    data = demo_recipe_data()
    data["output_dir"] = str(output_dir)
    if steps:
        data["train"]["steps"] = steps
    recipe = parse_recipe(data, "embedded demo recipe")
    err.print(f"training MeanFlow on a 2-D checkerboard for {recipe.train.steps} steps "
              f"(run folder {output_dir / recipe.name})")
    result = Trainer(recipe, overwrite=True, console=err).fit()
    if result.interrupted:
        err.print(f"interrupted at step {result.step}; checkpoint saved to {result.checkpoint}")
        raise typer.Exit(130)
    sampled = sample_checkpoint(result.checkpoint, steps=1)
    err.print(f"[green]done[/]: {recipe.sample.count} samples drawn with ONE network call each.")
    for file in sampled.files:
        out.print(str(file))
    err.print(f"open {sampled.files[0]} to see them; the training data looks like a checkerboard of 8 squares.")


@app.command()
@handle_errors
def validate(
    recipe: str = typer.Argument(..., help="recipe file or shipped recipe name"),
    overrides: Optional[List[str]] = typer.Argument(None, help="key.path=value overrides"),
    show: bool = typer.Option(False, "--show", help="print the resolved recipe with every default"),
) -> None:
    """Check a recipe (schema and plugin parameters) without training. Lists every problem at once.

    Example: mfkit validate recipes/toy2d.yaml train.lr=3e-4 --show
    """
    from mfkit.recipe.build import build_objective, build_modality
    from mfkit.recipe.loading import load_recipe, recipe_to_yaml

    path = find_recipe(recipe)
    loaded = load_recipe(path, overrides or [])
    build_objective(loaded.objective, build_modality(loaded).num_classes)
    if show:
        out.print(recipe_to_yaml(loaded), markup=False, highlight=False)
    err.print(f"[green]ok[/]: {path} is a valid recipe")


@app.command()
def plugins() -> None:
    """List installed modality and backbone plugins, where they come from, and which are broken."""
    from mfkit.plugins.discovery import registry

    table = Table(title="mfkit plugins")
    for column in ("kind", "name", "package", "description"):
        table.add_column(column)
    for kind, found in (("modality", registry.modalities()), ("backbone", registry.backbones())):
        for name, installed in sorted(found.items()):
            table.add_row(kind, name, installed.distribution, installed.spec.description)
    for problem in registry.problems():
        kind = problem.group.split(".")[-1].rstrip("s").replace("modalitie", "modality")
        table.add_row(f"[red]{kind} (broken)", problem.name, problem.distribution, f"[red]{problem.reason}")
    out.print(table)


@app.command()
def recipes() -> None:
    """List the shipped recipes with what hardware and time they expect."""
    table = Table(title="shipped recipes")
    for column in ("name", "file", "expects"):
        table.add_column(column)
    for name, path, summary in shipped_recipes():
        table.add_row(name, display_path(path), summary)
    out.print(table)


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
