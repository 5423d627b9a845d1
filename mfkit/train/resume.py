"""Resuming honestly: a run continues with its own saved recipe; only run-length settings may change.

The saved recipe is ``<run>/recipe.yaml`` (the resolved recipe the run was started with). A resume
whose recipe differs in anything else (the model, the objective, the learning rate, the data, ...)
is refused with the list of differences, unless the user allows it explicitly (``--allow-changes``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import yaml

from mfkit.recipe.loading import RecipeError, apply_overrides, parse_recipe
from mfkit.recipe.schema import Recipe
from mfkit.train.run_folder import RunFolderError
from mfkit.train.schedules import schedule_jumps

#: Settings that change how long a run goes and how it reports, not what it learns.
RUN_LENGTH_FIELDS = ("train.steps", "train.checkpoint_every", "train.log_every", "train.preview_every",
                     "train.preview_count", "train.keep_last", "train.num_workers", "train.eval_every",
                     "train.eval_count", "train.eval_steps", "train.eval_euler", "train.eval_evaluator",
                     "train.eval_params", "train.threads",
                     "train.keep_best")
#: Sampling defaults never change training.
RUN_LENGTH_SECTIONS = ("sample.",)
#: Where the run lives, not what it is (the run folder itself is fixed by the command).
LOCATION_FIELDS = ("name", "output_dir")


@dataclass(frozen=True)
class Change:
    key: str
    old: Any
    new: Any

    def __str__(self) -> str:
        return f"{self.key}: {_show(self.old)} -> {_show(self.new)}"

    @property
    def run_length(self) -> bool:
        return (self.key in RUN_LENGTH_FIELDS or self.key.startswith(RUN_LENGTH_SECTIONS)
                or self.key.startswith(tuple(f"{field}." for field in RUN_LENGTH_FIELDS)))  # inside e.g. eval_params


_MISSING = object()


def _show(value: Any) -> str:
    if value is _MISSING:
        return "(unset)"
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict) and data:
        flat: dict[str, Any] = {}
        for key, value in data.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: data}


def recipe_changes(old: Recipe, new: Recipe) -> list[Change]:
    """Every field (dotted path, plugin parameters included) that differs, location fields aside."""
    before, after = _flatten(old.model_dump(mode="json")), _flatten(new.model_dump(mode="json"))
    keys = sorted(set(before) | set(after))
    return [Change(k, before.get(k, _MISSING), after.get(k, _MISSING)) for k in keys
            if k not in LOCATION_FIELDS and before.get(k, _MISSING) != after.get(k, _MISSING)]


def saved_recipe(run_dir: Path) -> Recipe:
    """The recipe the run goes on with: ``<run>/recipe.yaml`` (written when a run starts and once a resume is
    set up, so it holds the changes earlier resumes made)."""
    path = Path(run_dir) / "recipe.yaml"
    if not path.is_file():
        raise RunFolderError(f"{run_dir} holds no recipe.yaml; is it an mfkit run folder?")
    try:
        return parse_recipe(yaml.safe_load(path.read_text()), str(path))
    except RecipeError as error:
        raise RunFolderError(f"the run's saved recipe no longer validates ({'; '.join(error.problems)}); "
                             f"resume with a recipe file and --allow-changes") from None


def checkpoint_recipe(recipe_yaml: str | None) -> Recipe | None:
    """The recipe a checkpoint was saved under (its metadata's YAML), or None when it is missing or no longer
    validates. It can differ from ``<run>/recipe.yaml``: an earlier checkpoint of a run since resumed with
    changes, or the latest one when the resume that made them stopped before its next checkpoint."""
    if not recipe_yaml:
        return None
    try:
        return parse_recipe(yaml.safe_load(recipe_yaml), "the checkpoint's recipe")
    except (RecipeError, yaml.YAMLError):
        return None


def check_resume_recipe(saved: Recipe, recipe: Recipe, allow_changes: bool) -> list[Change]:
    """The changes a resume makes; raises (listing them) when any is not a run-length setting and not allowed."""
    changes = recipe_changes(saved, recipe)
    refused = [c for c in changes if not c.run_length]
    if refused and not allow_changes:
        lines = "\n".join(f"  {c}" for c in refused)
        raise RunFolderError(
            f"--resume: this recipe differs from the one the run was trained with in {len(refused)} setting(s) "
            f"that change what it learns:\n{lines}\nResume with the run's own recipe (`mfkit train RUN_FOLDER "
            f"--resume`, only run-length settings such as train.steps may change), or pass --allow-changes")
    return changes


def recipe_of_run(run_dir: Path, overrides: Iterable[str] = ()) -> Recipe:
    """The run's saved recipe with ``overrides``, located at ``run_dir`` (wherever the folder now is)."""
    run_dir = Path(run_dir)
    path = run_dir / "recipe.yaml"
    if not path.is_file():
        raise RunFolderError(f"{run_dir} holds no recipe.yaml; is it an mfkit run folder?")
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise RunFolderError(f"{path} is not a recipe; is {run_dir} an mfkit run folder?")
    data = apply_overrides(data, list(overrides))
    data["output_dir"], data["name"] = str(run_dir.parent), run_dir.name
    return parse_recipe(data, str(path))


def kept_on_resume(changes: list[Change]) -> list[str]:
    """Warnings for what a backbone or modality change under --allow-changes does not redo: the weights and
    the modality's fitted state are the checkpoint's."""
    def changed(section: str) -> str:
        return ", ".join(c.key for c in changes if c.key.startswith(section))

    warnings = []
    if changed("backbone."):
        warnings.append(f"{changed('backbone.')} changed: the checkpoint's weights are loaded as they are, so a "
                        f"change that keeps their shapes (e.g. which times the network reads) silently gives them "
                        f"another meaning; start a new run unless that is what you want")
    if changed("modality."):
        warnings.append(f"{changed('modality.')} changed: the data is read with the new settings, but what the "
                        f"modality fitted at the start of the run (e.g. its normalisation, its class list) is the "
                        f"checkpoint's; start a new run to fit it again")
    return warnings


def schedule_jump_warning(before: Recipe, resumed: Recipe, step: int) -> str | None:
    """What the progress-following schedules do at the resumed ``step`` when a checkpoint saved under ``before``
    goes on with ``resumed`` (a new train.steps, or other schedule settings under --allow-changes); None when
    nothing jumps or nothing is left to train."""
    jumps = schedule_jumps(before, resumed, step)
    now, was = resumed.train.steps, before.train.steps
    if not jumps or step >= now:
        return None
    values = "; ".join(map(str, jumps))
    if now == was:
        return f"at step {step} these schedules change with the recipe's new settings: {values}"
    jump = (f"at step {step} these schedules jump, as they follow step / train.steps (now {now}, was {was}): "
            f"{values}. ")
    if step >= was:
        return jump + f"The checkpoint finished its {was} steps, so the run can only go on along the new length"
    return jump + (f"They go on along the new length from there; to keep them as they were, resume with "
                   f"train.steps={was} (docs/quickstart.md, 'Interrupt and resume')")
