"""`mfkit train --resume`: the run's own recipe, only run-length changes, --from an earlier checkpoint."""
import json

import pytest

from tests.cli.util import run
from tests.helpers import small_recipe, write_recipe


@pytest.fixture
def trained(tmp_path):
    path = write_recipe(tmp_path / "tiny.yaml", small_recipe(tmp_path, steps=20, checkpoint_every=10, log_every=5))
    result = run("train", path, "train.lr=0.002", "name=mine")
    assert result.exit_code == 0, result.output
    return path, tmp_path / "runs" / "mine"


def test_resume_by_run_folder_uses_the_runs_own_recipe(trained):
    _, run_dir = trained
    result = run("train", run_dir, "--resume", "train.steps=30")
    assert result.exit_code == 0, result.output
    assert "resuming with changes: train.steps: 20 -> 30" in result.output and "done: 30 steps" in result.output
    recipe = (run_dir / "recipe.yaml").read_text()
    assert "lr: 0.002" in recipe and "steps: 30" in recipe


def test_resume_with_a_recipe_that_changes_what_the_run_learns_is_refused(trained):
    path, run_dir = trained
    before = (run_dir / "recipe.yaml").read_text()
    result = run("train", path, "name=mine", "--resume", "train.steps=30")  # the file says lr 0.001
    assert result.exit_code == 2, result.output
    assert "differs from the one the run was trained with in 1 setting(s)" in result.output
    assert "train.lr: 0.002 -> 0.001" in result.output and "--allow-changes" in result.output
    result = run("train", run_dir, "--resume", "backbone.params.width=48", "objective.adaptive_p=0.5")
    assert result.exit_code == 2
    assert "backbone.params.width: 32 -> 48" in result.output and "objective.adaptive_p: 1.0 -> 0.5" in result.output
    assert (run_dir / "recipe.yaml").read_text() == before
    result = run("train", path, "name=mine", "--resume", "train.steps=30", "--allow-changes")
    assert result.exit_code == 0, result.output
    assert "train.lr: 0.002 -> 0.001" in result.output and "lr: 0.001" in (run_dir / "recipe.yaml").read_text()


def test_a_damaged_latest_checkpoint_points_to_from_and_from_resumes(trained):
    _, run_dir = trained
    folder = run_dir / "checkpoints"
    latest = folder / "step-0000020.safetensors"
    latest.write_bytes(latest.read_bytes()[:64])
    result = run("train", run_dir, "--resume", "train.steps=30")
    assert result.exit_code == 2 and "Traceback" not in result.output
    earlier = folder / "step-0000010.safetensors"
    assert "damaged" in result.output and f"--resume --from {earlier}" in result.output
    result = run("train", run_dir, "--from", earlier, "train.steps=30")
    assert result.exit_code == 0, result.output
    assert "set aside 1 later checkpoint(s)" in result.output and "done: 30 steps" in result.output
    assert (folder / "set-aside" / "step-0000020.safetensors").stat().st_size == 64
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [5, 10, 15, 20, 25, 30]  # the replayed steps 15 and 20 appear once


def test_from_a_missing_checkpoint_is_one_line(trained):
    _, run_dir = trained
    result = run("train", run_dir, "--from", run_dir / "checkpoints" / "step-0000999.safetensors")
    assert result.exit_code == 2 and "no checkpoint at" in result.output


def test_a_saved_recipe_that_no_longer_validates_needs_allow_changes(trained, monkeypatch):
    import mfkit.train.trainer as trainer_module

    path, run_dir = trained
    saved = run_dir / "recipe.yaml"
    saved.write_text(saved.read_text().replace("train:\n", "train:\n  retired_field: 1\n"))
    # a resume checks against the recipe inside the checkpoint, so a damaged recipe.yaml alone does not matter
    result = run("train", path, "name=mine", "--resume", "train.lr=0.002", "train.steps=25")
    assert result.exit_code == 0 and "resuming with changes: train.steps: 20 -> 25" in result.output, result.output
    # when the checkpoint's recipe no longer validates either (a field mfkit retired), recipe.yaml is the fallback
    saved.write_text(saved.read_text().replace("train:\n", "train:\n  retired_field: 1\n"))
    monkeypatch.setattr(trainer_module, "checkpoint_recipe", lambda text: None)
    result = run("train", path, "name=mine", "--resume", "train.lr=0.002", "train.steps=25")
    assert result.exit_code == 2 and "no longer validates" in result.output and "retired_field" in result.output
    result = run("train", path, "name=mine", "--resume", "train.lr=0.002", "train.steps=25", "--allow-changes")
    assert result.exit_code == 0 and "resuming with the recipe given" in result.output, result.output
