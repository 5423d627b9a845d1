"""The training loop: exact resume, metrics, previews, non-finite losses, data order."""
import json

import pytest
import torch

from mfkit.recipe import parse_recipe
from mfkit.train.checkpoint import latest_checkpoint, load_checkpoint
from mfkit.train.data import StepBatchSampler
from mfkit.train.trainer import RunFolderError, Trainer, TrainingDiverged, lr_factor
from tests.helpers import small_recipe


def train(tmp_path, name, resume=False, **settings):
    recipe = parse_recipe(small_recipe(tmp_path, name, **settings))
    return Trainer(recipe, resume=resume, progress=False).fit()


def weights(result):
    checkpoint = load_checkpoint(result.checkpoint)
    return checkpoint.model, checkpoint.ema


def test_resume_gives_identical_weights(tmp_path):
    straight = train(tmp_path, "straight", steps=40)
    train(tmp_path, "split", steps=20)
    resumed = train(tmp_path, "split", resume=True, steps=40)
    assert resumed.step == straight.step == 40
    (model_a, ema_a), (model_b, ema_b) = weights(straight), weights(resumed)
    for key in model_a:
        assert torch.equal(model_a[key], model_b[key]), key
        for decay in ema_a:
            assert torch.equal(ema_a[decay][key], ema_b[decay][key]), (decay, key)


def test_run_folder_contents(tmp_path):
    result = train(tmp_path, "contents", steps=20, checkpoint_every=10, keep_last=1)
    run = result.run_dir
    assert (run / "recipe.yaml").is_file()
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [10, 20]
    assert {"loss", "mse", "adaptive_weight", "r_neq_t_share", "lr", "it_per_s"} <= set(lines[0])
    assert (run / "previews" / "step-0000020" / "samples.png").is_file()
    assert latest_checkpoint(run / "checkpoints").name == "step-0000020.safetensors"
    assert len(list((run / "checkpoints").glob("*.safetensors"))) == 1
    stored = load_checkpoint(result.checkpoint)
    assert "name: contents" in stored.recipe_yaml and set(stored.ema) == {"0.9", "0.99"}


def test_existing_run_needs_resume_or_overwrite(tmp_path):
    train(tmp_path, "again", steps=10)
    with pytest.raises(RunFolderError, match="--resume.*--overwrite"):
        train(tmp_path, "again", steps=10)
    with pytest.raises(RunFolderError, match="no checkpoint"):
        train(tmp_path, "never-ran", resume=True)
    recipe = parse_recipe(small_recipe(tmp_path, "again", steps=10))
    assert Trainer(recipe, overwrite=True, progress=False).fit().step == 10


def test_non_finite_loss_stops_with_step_and_last_good_checkpoint(tmp_path, monkeypatch):
    import mfkit.train.trainer as trainer_module

    real = trainer_module.build_objective

    def poisoned(settings, num_classes):
        objective = real(settings, num_classes)
        calls = {"n": 0}
        original = objective.__class__.__call__

        class Poisoned(objective.__class__):
            def __call__(self, *args, **kwargs):
                out = original(self, *args, **kwargs)
                calls["n"] += 1
                if calls["n"] >= 15:
                    out.loss = out.loss * float("nan")
                return out

        objective.__class__ = Poisoned
        return objective

    monkeypatch.setattr(trainer_module, "build_objective", poisoned)
    with pytest.raises(TrainingDiverged, match=r"non-finite at step 15; the last good checkpoint is .*step-0000010"):
        train(tmp_path, "nan", steps=40, checkpoint_every=10)
    assert latest_checkpoint(tmp_path / "runs" / "nan" / "checkpoints").name == "step-0000010.safetensors"


def test_data_order_is_shared_out_and_resumable():
    whole = list(StepBatchSampler(10, 4, 0, 1, seed=3, start_step=0, total_steps=6))
    halves = [list(StepBatchSampler(10, 4, rank, 2, seed=3, start_step=0, total_steps=6)) for rank in (0, 1)]
    assert [a + b for a, b in zip(*halves)] == whole
    assert list(StepBatchSampler(10, 4, 0, 1, seed=3, start_step=4, total_steps=6)) == whole[4:]
    epoch = sum(whole, [])[:10]
    assert sorted(epoch) == list(range(10))  # every item once per epoch
    with pytest.raises(ValueError, match="not divisible"):
        StepBatchSampler(10, 5, 0, 2, 0, 0, 1)


def test_learning_rate_schedule():
    assert lr_factor(0, 10, 100, "constant") == pytest.approx(0.1)
    assert lr_factor(50, 10, 100, "constant") == 1.0
    assert lr_factor(10, 10, 110, "cosine") == pytest.approx(1.0)
    assert lr_factor(60, 10, 110, "cosine") == pytest.approx(0.5)
    assert lr_factor(60, 10, 110, "linear") == pytest.approx(0.5)


def test_conditional_guided_training_runs(tmp_path):
    data = small_recipe(tmp_path, "guided", steps=10)
    data["modality"]["params"]["conditional"] = True
    data["objective"] = {"guidance": {"w_cfg": 0.5, "kappa": 0.3}}
    result = Trainer(parse_recipe(data), progress=False).fit()
    assert result.step == 10


def test_resuming_with_another_architecture_is_a_clear_error(tmp_path):
    from mfkit.train.checkpoint import CheckpointError

    train(tmp_path, "arch", steps=10)
    data = small_recipe(tmp_path, "arch", steps=20)
    data["backbone"]["params"]["width"] = 48
    with pytest.raises(CheckpointError, match="does not fit the model this recipe builds"):
        Trainer(parse_recipe(data), resume=True, progress=False).fit()
