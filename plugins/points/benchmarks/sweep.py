"""Tuning a points recipe: train one MeanFlow variant, measure its CPU time, score it like onestep_vs_fm.py.

    OMP_NUM_THREADS=1 python plugins/points/benchmarks/sweep.py NAME [key=value ...]
    OMP_NUM_THREADS=1 python plugins/points/benchmarks/sweep.py share50 objective.r_neq_t_share=0.5 train.steps=2150

Trains ``recipes/points_shapes.yaml`` (or ``--recipe``) with the overrides through `mfkit train` (one thread),
records the training process's CPU time, then scores the last checkpoint's EMA with one and two MeanFlow
steps exactly as onestep_vs_fm.py does (same evaluator, same noise: evaluation seed 0, ``--count``
samples against as many held-out clouds). The figures are comparable with the one-step row of a stored
onestep_vs_fm.py result (``results/points_shapes*.json``), whose flow-matching rows need no retraining as
long as the variant uses no more CPU time than the MeanFlow run there: change ``train.steps`` to keep the
CPU time when a variant makes a step dearer or cheaper. Appends one JSON line to ``--log``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from onestep_vs_fm import DEFAULT_RECIPE, HERE, evaluate, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", help="variant name (the run folder under --work)")
    parser.add_argument("overrides", nargs="*", help="recipe overrides, key.path=value as `mfkit train` takes them")
    parser.add_argument("--recipe", type=Path, default=DEFAULT_RECIPE)
    parser.add_argument("--work", type=Path, default=Path("runs/points-sweep"))
    parser.add_argument("--count", type=int, default=448, help="samples scored (and held-out clouds)")
    parser.add_argument("--log", type=Path, default=HERE / "results" / "sweep.jsonl")
    args = parser.parse_args()

    from mfkit.recipe.loading import apply_overrides

    recipe = apply_overrides(yaml.safe_load(args.recipe.read_text()), args.overrides)
    recipe["name"] = args.name
    recipe["output_dir"] = str(args.work)
    recipe["train"]["device"] = "cpu"
    args.work.mkdir(parents=True, exist_ok=True)
    checkpoint, wall, cpu = train(recipe, args.work, 1)
    rows = {row["steps"]: row["metrics"] for row in evaluate(checkpoint, (1, 2), (), args.count)["rows"]}
    entry = {"name": args.name, "recipe": str(args.recipe), "overrides": args.overrides, "cpu_s": cpu, "wall_s": wall,
             "steps": recipe["train"]["steps"], "count": args.count, "one_step": rows[1], "two_steps": rows[2]}
    args.log.parent.mkdir(parents=True, exist_ok=True)
    with args.log.open("a") as log:
        log.write(json.dumps(entry) + "\n")
    print(f"{args.name}: {cpu:.0f} CPU s, one step 1-NNA {rows[1]['1nna_cd']:.3f} (accuracy "
          f"{rows[1]['class_accuracy']:.3f}), two steps {rows[2]['1nna_cd']:.3f}")


if __name__ == "__main__":
    main()
