"""`mfkit demo` and its embedded recipe: MeanFlow on a 2-D checkerboard, small enough for a laptop CPU.

`recipes/toy2d.yaml` is the same recipe as a file (a test keeps the two identical). The demo trains it
under its own run name, ``demo``, so it never meets the quick start's ``runs/toy2d``; when ``runs/demo``
exists it starts ``runs/demo-2`` (and so on), unless ``--overwrite`` asks to start ``runs/demo`` over.
"""
from __future__ import annotations

import shlex
from pathlib import Path
from typing import Optional

import typer
import yaml

from mfkit.cli.console import err, out
from mfkit.cli.errors import handle_errors

DEMO_RUN_NAME = "demo"

DEMO_RECIPE_YAML = """\
# MeanFlow on a 2-D checkerboard: the demo recipe. One-step samples look like the checkerboard.
# Expects: any CPU (a laptop or 2 cores), about 2 to 4 minutes; no GPU needed.
# Objective: mfkit's `small` preset (docs/concepts.md): t ~ LN(0, 1), half the samples with r != t,
# adaptive p = 0.5, and noise paired with data by minibatch optimal transport (exact assignments over
# blocks of 64 rows); with the pairs, batch 256 is enough.
# Measured (docs/results.md, 4000 samples against 10,000 held-out points): sliced W2 0.039 with one
# step (real-vs-real floor 0.052), as good as flow matching with the same pairs at equal compute
# (0.039 from 8 Euler steps on); the previous recipe (independent pairs, batch 1024, 4x the compute per
# step) reached 0.069. The sweep behind the preset: docs/benchmarks.md.
name: toy2d
modality:
  name: toy2d
  params:
    distribution: checkerboard
backbone:
  name: mlp
  params:
    width: 256
    depth: 4
objective:
  kind: meanflow
  preset: small
train:
  steps: 3000
  batch_size: 256
  lr: 0.001
  lr_schedule: cosine
  grad_clip: null
  ema_decays: [0.995, 0.999]
  checkpoint_every: 1000
  log_every: 100
sample:
  steps: 1
  count: 4000
  batch_size: 4000
"""


def demo_recipe_data() -> dict:
    return yaml.safe_load(DEMO_RECIPE_YAML)


@handle_errors
def demo(
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="training steps (default: the recipe's 3000)"),
    output_dir: Path = typer.Option(Path("runs"), "--output-dir", help="folder for the run"),
    overwrite: bool = typer.Option(False, "--overwrite", help="start runs/demo over instead of a new runs/demo-N"),
) -> None:
    """Train the demo (2-D checkerboard, about 2 to 4 minutes on a CPU), sample it with one step.

    Trains the embedded demo recipe in the run folder runs/demo (runs/demo-2, -3, ... when that
    exists; nothing is deleted unless --overwrite), draws samples with one network call each, and
    prints where they are.

    Example: mfkit demo
    """
    from mfkit.folders import numbered
    from mfkit.recipe.loading import parse_recipe
    from mfkit.runs import sample_checkpoint
    from mfkit.cli.train import interrupted_message
    from mfkit.train.signals import exit_code
    from mfkit.train.trainer import Trainer

    data = demo_recipe_data()
    data["output_dir"] = str(output_dir)
    data["name"] = DEMO_RUN_NAME if overwrite else numbered(output_dir / DEMO_RUN_NAME).name
    if steps:
        data["train"]["steps"] = steps
    recipe = parse_recipe(data, "embedded demo recipe")
    run_dir = output_dir / recipe.name
    err.print(f"training MeanFlow on a 2-D checkerboard for {recipe.train.steps} steps (run folder {run_dir})",
              markup=False, highlight=False)
    result = Trainer(recipe, overwrite=overwrite, console=err).fit()
    if result.interrupted:
        err.print(interrupted_message(result, f"mfkit train {shlex.quote(str(run_dir))} --resume"),
                  markup=False, highlight=False)
        raise typer.Exit(exit_code(result.signal))
    sampled = sample_checkpoint(result.checkpoint, steps=1)
    err.print(f"[green]done[/]: {recipe.sample.count} samples drawn with ONE network call each.")
    for file in sampled.files:
        out.print(str(file), markup=False, highlight=False)
    err.print(f"open {sampled.files[0]} to see them; the training data looks like a checkerboard of 8 squares.",
              markup=False, highlight=False)
