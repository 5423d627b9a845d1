"""The training loop: exact resume, metrics, previews, non-finite losses, data order."""
import io
import json

import pytest
import torch
from rich.console import Console

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
    assert {"loss", "mse", "adaptive_weight", "r_neq_t_share", "lr", "it_per_s", "grad_norm"} <= set(lines[0])
    assert (run / "previews" / "step-0000020" / "samples.png").is_file()
    assert latest_checkpoint(run / "checkpoints").name == "step-0000020.safetensors"
    assert len(list((run / "checkpoints").glob("*.safetensors"))) == 1
    stored = load_checkpoint(result.checkpoint)
    assert "name: contents" in stored.recipe_yaml and set(stored.ema) == {"0.9", "0.99"}


def test_existing_run_needs_resume_or_overwrite(tmp_path):
    train(tmp_path, "again", steps=10)
    with pytest.raises(RunFolderError, match="--resume.*--overwrite"):
        train(tmp_path, "again", steps=10)
    with pytest.raises(RunFolderError, match="no run folder"):
        train(tmp_path, "never-ran", resume=True)
    recipe = parse_recipe(small_recipe(tmp_path, "again", steps=10))
    assert Trainer(recipe, overwrite=True, progress=False).fit().step == 10


def test_non_finite_loss_stops_with_step_and_last_good_checkpoint(tmp_path, monkeypatch):
    import mfkit.train.trainer as trainer_module

    real = trainer_module.build_objective_for

    def poisoned(settings, *args):
        objective = real(settings, *args)
        calls = {"n": 0}
        original = objective.__class__.__call__

        class Poisoned(objective.__class__):
            def __call__(self, *args, **kwargs):
                out = original(self, *args, **kwargs)
                calls["n"] += 1
                if calls["n"] >= 16:  # call 1 is the preflight check on a real batch; then steps 1, 2, ...
                    out.loss = out.loss * float("nan")
                return out

        objective.__class__ = Poisoned
        return objective

    monkeypatch.setattr(trainer_module, "build_objective_for", poisoned)
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
    with pytest.raises(RunFolderError, match=r"backbone.params.width: 32 -> 48"):
        Trainer(parse_recipe(data), resume=True, progress=False).fit()
    with pytest.raises(CheckpointError, match="does not fit the model this recipe builds"):
        Trainer(parse_recipe(data), resume=True, allow_changes=True, progress=False).fit()


def test_grad_norm_is_logged_without_clipping_and_matches_clipping(tmp_path):
    def norms(name, clip):
        result = train(tmp_path, name, steps=10, log_every=5, grad_clip=clip)
        return [json.loads(line)["grad_norm"] for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]

    unclipped, clipped = norms("free", None), norms("clipped", 1e6)  # a huge clip never clips: same training
    assert len(unclipped) == 2 and all(n > 0 for n in unclipped)
    assert unclipped == pytest.approx(clipped, rel=1e-5)


def test_bf16_on_a_cpu_says_it_trains_in_fp32(tmp_path):
    from io import StringIO

    from rich.console import Console

    buffer = StringIO()
    recipe = parse_recipe(small_recipe(tmp_path, "bf16", steps=2, precision="bf16"))
    Trainer(recipe, console=Console(file=buffer, width=300), progress=False).fit()
    assert "train.precision is bf16, but this run is on the CPU: it trains in fp32" in buffer.getvalue()


def test_checkpoints_get_ordinary_file_permissions(tmp_path):
    import os

    from mfkit.folders import file_mode

    result = train(tmp_path, "perm", steps=2)
    assert file_mode() == 0o666 & ~_umask()
    for path in (result.checkpoint, result.checkpoint.parent / "latest"):
        assert os.stat(path).st_mode & 0o777 == file_mode(), path


def _umask() -> int:
    import os

    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_a_failed_checkpoint_save_keeps_training_and_retries(tmp_path, monkeypatch):
    import mfkit.train.checkpoint as checkpoint_module

    real, calls = checkpoint_module.save_file, {"n": 0}

    def disk_full_once(tensors, filename, metadata=None):
        calls["n"] += 1
        if calls["n"] == 2:  # the checkpoint of step 10
            with open(filename, "wb") as handle:
                handle.write(b"partial")
            raise OSError(28, "No space left on device")
        return real(tensors, filename, metadata=metadata)

    monkeypatch.setattr(checkpoint_module, "save_file", disk_full_once)
    from io import StringIO

    from rich.console import Console

    buffer = StringIO()
    recipe = parse_recipe(small_recipe(tmp_path, "full", steps=20, checkpoint_every=5, keep_last=5))
    result = Trainer(recipe, console=Console(file=buffer, width=400), progress=False).fit()
    message = buffer.getvalue()
    assert "could not save checkpoint" in message and "No space left on device" in message
    assert "the last good checkpoint is" in message and "step-0000005" in message and "tries again at step 15" in message
    folder = result.run_dir / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == [
        "latest", "step-0000005.safetensors", "step-0000015.safetensors", "step-0000020.safetensors"]
    assert result.step == 20 and load_checkpoint(result.checkpoint).step == 20


def test_a_final_save_that_fails_is_a_clear_error_and_keeps_the_last_good_one(tmp_path, monkeypatch):
    import mfkit.train.checkpoint as checkpoint_module
    from mfkit.train.checkpoint import CheckpointSaveError

    real, calls = checkpoint_module.save_file, {"n": 0}

    def full_after_first(tensors, filename, metadata=None):
        calls["n"] += 1
        if calls["n"] > 1:
            raise OSError(28, "No space left on device")
        return real(tensors, filename, metadata=metadata)

    monkeypatch.setattr(checkpoint_module, "save_file", full_after_first)
    with pytest.raises(CheckpointSaveError, match=r"No space left on device; the last good checkpoint is .*step-0000010"
                                                  r".*mfkit train .* --resume"):
        train(tmp_path, "fuller", steps=20, checkpoint_every=10)
    folder = tmp_path / "runs" / "fuller" / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["latest", "step-0000010.safetensors"]
    assert not (tmp_path / "runs" / "fuller" / ".mfkit-lock").exists()


def test_resume_drops_metrics_lines_of_replayed_steps(tmp_path):
    result = train(tmp_path, "replay", steps=20, checkpoint_every=10, log_every=5)
    (result.run_dir / "checkpoints" / "step-0000020.safetensors").unlink()  # as if killed before saving step 20
    with open(result.run_dir / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 21, "lo')  # a line cut short by the kill
    train(tmp_path, "replay", resume=True, steps=20, checkpoint_every=10, log_every=5)
    steps = [json.loads(line)["step"] for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [5, 10, 15, 20]


def test_resume_from_an_earlier_checkpoint_sets_the_later_ones_aside(tmp_path):
    first = train(tmp_path, "earlier", steps=20, checkpoint_every=10, preview_every=5)
    abandoned = [line for line in (first.run_dir / "metrics.jsonl").read_text().splitlines()
                 if json.loads(line)["step"] > 10]
    folder = first.run_dir / "checkpoints"
    damaged = folder / "step-0000020.safetensors"
    cut = damaged.read_bytes()[:100]
    damaged.write_bytes(cut)
    from mfkit.train.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match=r"damaged.*--resume --from .*step-0000010.safetensors"):
        train(tmp_path, "earlier", resume=True, steps=20, checkpoint_every=10)
    recipe = parse_recipe(small_recipe(tmp_path, "earlier", steps=20, checkpoint_every=10))
    result = Trainer(recipe, resume_from=folder / "step-0000010.safetensors", progress=False).fit()
    assert result.step == 20 and load_checkpoint(result.checkpoint).step == 20
    assert (folder / "set-aside" / "step-0000020.safetensors").read_bytes() == cut  # kept, not deleted
    # the abandoned attempt's previews and metrics lines after step 10 are kept aside, not mixed in or lost
    previews = first.run_dir / "previews"
    assert sorted(p.name for p in (previews / "set-aside").iterdir()) == ["step-0000015", "step-0000020"]
    assert sorted(p.name for p in previews.iterdir()) == ["set-aside", "step-0000005", "step-0000010",
                                                          "step-0000020"]  # 20: the resumed run's final preview
    kept = (folder / "set-aside" / "metrics-after-step-0000010.jsonl").read_text().splitlines()
    assert kept == abandoned and abandoned
    straight = train(tmp_path, "straight", steps=20, checkpoint_every=10)
    for key, value in weights(straight)[0].items():
        assert torch.equal(value, weights(result)[0][key]), key


def test_train_threads_sets_torch_threads_and_a_busy_cpu_is_pointed_out(tmp_path, monkeypatch):
    import io

    from rich.console import Console

    import mfkit.train.trainer as trainer_module

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.setattr(trainer_module, "busy_cores", lambda: 40.0)
        out = io.StringIO()
        Trainer(parse_recipe(small_recipe(tmp_path, "busy", steps=2)), progress=False,
                console=Console(file=out, width=400)).fit()
        assert "the CPU is busy (load average 40.0" in out.getvalue() and "train.threads=1" in out.getvalue()
        out = io.StringIO()
        Trainer(parse_recipe(small_recipe(tmp_path, "one", steps=2, threads=1)), progress=False,
                console=Console(file=out, width=400)).fit()
        assert torch.get_num_threads() == 1 and "busy" not in out.getvalue()
    finally:
        torch.set_num_threads(before)


def test_alpha_curriculum_follows_training_progress(tmp_path):
    """alpha is logged and falls from 1 to 0 with the step (progress = step / train.steps, so a resumed run
    continues the curriculum from its checkpoint's step)."""
    objective = {"coupling": "ot", "formulation": "imf",
                 "alpha_curriculum": {"flow_matching_until": 0.25, "meanflow_from": 0.75, "shape": "linear"}}
    data = small_recipe(tmp_path, "alpha", steps=40, log_every=10)
    data["objective"] = objective
    result = Trainer(parse_recipe(data), progress=False).fit()
    logged = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    alphas = {row["step"]: row["alpha"] for row in logged if "alpha" in row}
    # the logged value is the step's own (progress = steps done before it / steps)
    assert alphas[10] == 1.0 and alphas[20] == pytest.approx(1 - (19 / 40 - 0.25) / 0.5) and alphas[40] == 0.0


def test_interval_weighting_follows_training_progress(tmp_path):
    """The logged mean interval weight rises to 1 as lambda falls to 0 at balanced_from."""
    data = small_recipe(tmp_path, "intervals", steps=40, log_every=10)
    data["objective"] = {"r_neq_t_share": 0.5, "interval_weighting": {"strength": 4.0, "balanced_from": 0.5}}
    result = Trainer(parse_recipe(data), progress=False).fit()
    logged = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    weights = {row["step"]: row["interval_weight"] for row in logged if "interval_weight" in row}
    assert weights[10] < weights[20] < 1.0 and weights[30] == 1.0 and weights[40] == 1.0


def test_a_whole_batch_jvp_under_auto_is_said_once_per_reason(tmp_path, monkeypatch):
    """jvp_rows auto falling back to every row is exact but slower: the run says why, once per reason."""
    from io import StringIO

    from rich.console import Console

    import mfkit.core.objectives as objectives

    reasons = iter(["the backbone couples samples"] * 3 + [None] + ["a dropout layer"] * 2)
    monkeypatch.setattr(objectives.MeanFlow, "jvp_rows_reason", property(lambda self: next(reasons, None)))
    buffer = StringIO()
    Trainer(parse_recipe(small_recipe(tmp_path, "rows", steps=6)), console=Console(file=buffer, width=400),
            progress=False).fit()
    said = buffer.getvalue()
    assert said.count("jvp_rows auto: this step gives every row a JVP") == 2
    assert said.count("the backbone couples samples") == 1 and said.count("a dropout layer") == 1


def test_resuming_with_fewer_steps_than_done_is_refused_and_keeps_the_recipe(tmp_path):
    train(tmp_path, "done", steps=40)
    recipe_file = tmp_path / "runs" / "done" / "recipe.yaml"
    before = recipe_file.read_text()
    with pytest.raises(RunFolderError, match=r"at step 40, past train.steps=20, so there is nothing to train"):
        train(tmp_path, "done", resume=True, steps=20)
    assert recipe_file.read_text() == before
    assert train(tmp_path, "done", resume=True, steps=40).step == 40  # the same length still resumes


def test_the_logged_learning_rate_is_the_one_the_last_update_used(tmp_path):
    result = train(tmp_path, "lr-log", steps=40, lr_schedule="linear", warmup_steps=0)
    logged = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    rates = {row["step"]: row["lr"] for row in logged if "lr" in row}
    for step, rate in rates.items():  # the line of step s follows update s - 1 (0-based)
        assert rate == pytest.approx(1e-3 * lr_factor(step - 1, 0, 40, "linear"), rel=1e-12), step
    assert rates[40] > 0


def test_a_run_without_emas_previews_and_evaluates_its_raw_weights(tmp_path):
    result = train(tmp_path, "no-ema", steps=20, ema_decays=[], eval_every=20, eval_count=100, preview_every=20)
    assert load_checkpoint(result.checkpoint).ema == {}
    assert any((result.run_dir / "previews").iterdir())


def test_switching_adamw_to_adam_on_resume_drops_the_decoupled_weight_decay(tmp_path, monkeypatch):
    train(tmp_path, "optim", steps=20, optimizer="adamw", weight_decay=0.1)
    seen = []
    step = Trainer._train_step

    def recorded(self, *args, **kwargs):
        seen.append({k: self.optimizer.param_groups[0][k] for k in ("decoupled_weight_decay", "weight_decay")})
        return step(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "_train_step", recorded)
    recipe = parse_recipe(small_recipe(tmp_path, "optim", steps=22, optimizer="adam", weight_decay=0.1))
    Trainer(recipe, resume=True, allow_changes=True, progress=False).fit()
    assert seen and all(s == {"decoupled_weight_decay": False, "weight_decay": 0.1} for s in seen)


def test_backbone_and_modality_changes_under_allow_changes_say_what_is_kept(tmp_path):
    from io import StringIO

    from rich.console import Console

    train(tmp_path, "kept", steps=20)
    data = small_recipe(tmp_path, "kept", steps=22)
    data["backbone"]["params"]["time_inputs"] = "t,r"
    data["modality"]["params"]["size"] = 800
    buffer = StringIO()
    Trainer(parse_recipe(data), resume=True, allow_changes=True, progress=False,
            console=Console(file=buffer, width=400)).fit()
    said = buffer.getvalue()
    assert "warning: backbone.params.time_inputs changed: the checkpoint's weights are loaded as they are" in said
    assert "warning: modality.params.size changed: the data is read with the new settings" in said


def test_a_resume_whose_set_up_fails_leaves_the_run_folder_as_it_was(tmp_path, monkeypatch):
    import mfkit.train.trainer as trainer_module

    train(tmp_path, "fails", steps=40, checkpoint_every=20, keep_last=5)
    folder = tmp_path / "runs" / "fails"
    recipe_before = (folder / "recipe.yaml").read_text()

    def broken(*args, **kwargs):
        raise RuntimeError("set-up failed")

    monkeypatch.setattr(trainer_module, "preflight", broken)
    changed = parse_recipe(small_recipe(tmp_path, "fails", steps=60, lr=1e-2, keep_last=5))
    with pytest.raises(RuntimeError, match="set-up failed"):
        Trainer(changed, resume_from=folder / "checkpoints" / "step-0000020.safetensors", allow_changes=True,
                progress=False).fit()
    monkeypatch.undo()
    assert (folder / "recipe.yaml").read_text() == recipe_before  # not the lr the failed resume asked for
    assert (folder / "checkpoints" / "step-0000040.safetensors").is_file()  # nothing set aside
    assert not (folder / "checkpoints" / "set-aside").exists()


def test_an_earlier_checkpoint_is_checked_against_the_recipe_it_was_trained_with(tmp_path):
    train(tmp_path, "branch", steps=40, checkpoint_every=20, keep_last=5)
    folder = tmp_path / "runs" / "branch"
    longer = parse_recipe(small_recipe(tmp_path, "branch", steps=60, lr=2e-3, keep_last=5))
    Trainer(longer, resume=True, allow_changes=True, progress=False).fit()  # recipe.yaml now says lr 2e-3
    # going back to step 20 (trained with lr 1e-3) with the run's recipe changes the rate: refused
    with pytest.raises(RunFolderError, match=r"train.lr: 0.001 -> 0.002"):
        Trainer(longer, resume_from=folder / "checkpoints" / "step-0000020.safetensors", progress=False).fit()


def test_a_crash_after_an_allowed_resume_replays_with_the_accepted_recipe(tmp_path):
    from mfkit.train.resume import recipe_of_run

    train(tmp_path, "accepted", steps=40, checkpoint_every=20, keep_last=5)
    folder = tmp_path / "runs" / "accepted"
    changed = parse_recipe(small_recipe(tmp_path, "accepted", steps=60, lr=2e-3, checkpoint_every=20, keep_last=5))
    Trainer(changed, resume=True, allow_changes=True, progress=False).fit()
    # a crash between step 40 and 60: the latest checkpoint is still the one trained with lr 1e-3
    (folder / "checkpoints" / "step-0000060.safetensors").unlink()
    (folder / "checkpoints" / "latest").unlink(missing_ok=True)
    result = Trainer(recipe_of_run(folder), resume=True, progress=False).fit()  # `mfkit train RUN --resume`
    assert result.step == 60


def test_run_length_settings_include_the_fields_inside_them():
    from mfkit.train.resume import Change

    assert Change("train.eval_params.projections", 128, 256).run_length  # inside train.eval_params
    assert Change("sample.steps", 1, 2).run_length and Change("train.steps", 1, 2).run_length
    assert not Change("train.stepsize", 1, 2).run_length and not Change("backbone.params.width", 1, 2).run_length


def _as_if_saved_on_cuda(checkpoint):
    """Rewrite a CPU checkpoint's random state the way a CUDA run saves it (a 16-byte Philox generator
    state and the CUDA default generator's), so resuming it on a CPU can be tested without a GPU."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(checkpoint), framework="pt") as handle:
        metadata = handle.metadata()
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    tensors["rng/generator"] = torch.arange(16, dtype=torch.uint8)
    tensors["rng/torch_cuda"] = torch.arange(16, dtype=torch.uint8)
    save_file(tensors, str(checkpoint), metadata=metadata)


def test_resume_on_another_device_type_continues_the_weights_and_warns_about_the_random_stream(tmp_path):
    first = train(tmp_path, "moved", steps=20, checkpoint_every=10)
    checkpoint = first.run_dir / "checkpoints" / "step-0000020.safetensors"
    _as_if_saved_on_cuda(checkpoint)
    saved = load_checkpoint(checkpoint)
    console = io.StringIO()
    trainer = Trainer(parse_recipe(small_recipe(tmp_path, "moved", steps=20, checkpoint_every=10)), resume=True,
                      console=Console(file=console, width=400), progress=False)
    trainer._open_run_folder()
    try:
        trainer._build()
    finally:
        trainer._release()
    assert trainer.step == 20
    for name, value in trainer.model.state_dict().items():
        torch.testing.assert_close(value, saved.model[name], rtol=0, atol=0)
    assert "random state comes from another device type than this resume's (cpu)" in console.getvalue()
    expected = torch.Generator().manual_seed(trainer.recipe.train.seed + 1 + 20)
    assert torch.equal(trainer.generator.get_state(), expected.get_state())
    longer = parse_recipe(small_recipe(tmp_path, "moved", steps=30, checkpoint_every=10))
    assert Trainer(longer, resume=True, progress=False).fit().step == 30
