"""Stop signals: the notice given inside the signal handler never goes through rich (it may be mid-print or
mid-import when the signal lands: a run once crashed with a half-imported rich module instead of saving)."""
import io
import signal

import pytest
from rich.console import Console

from mfkit.cli.train import interrupted_message

from mfkit.recipe import parse_recipe
from mfkit.train.signals import write_to_descriptor
from mfkit.train.trainer import Trainer, TrainResult
from tests.helpers import small_recipe


def test_write_to_descriptor_bypasses_buffers_and_reports_a_missing_descriptor(tmp_path):
    with open(tmp_path / "out.txt", "w") as file:
        file.write("buffered ")  # still in Python's buffer: the raw write lands first
        assert write_to_descriptor(file, "raw\n")
    assert (tmp_path / "out.txt").read_text() == "raw\nbuffered "
    assert not write_to_descriptor(io.StringIO(), "nowhere")


def _trainer(tmp_path, file, training=False):
    trainer = Trainer(parse_recipe(small_recipe(tmp_path)), console=Console(file=file), progress=False)
    trainer._training = training  # as once the set-up is done and the loop runs
    return trainer


def test_the_signal_notice_goes_to_the_descriptor_without_rich(tmp_path, monkeypatch):
    with open(tmp_path / "console.txt", "w") as file:
        trainer = _trainer(tmp_path, file, training=True)
        monkeypatch.setattr(trainer.console, "print", lambda *a, **k: (_ for _ in ()).throw(
            AssertionError("rich printed inside the signal handler")))
        trainer._on_signal(signal.SIGTERM)
        assert trainer._pending_notice is None
    assert (tmp_path / "console.txt").read_text() == (
        "SIGTERM: finishing this step, saving a checkpoint (send it again to stop at once)\n")


def test_without_a_descriptor_the_loop_says_the_notice_after_the_step(tmp_path, monkeypatch):
    captured = io.StringIO()
    trainer = _trainer(tmp_path, captured, training=True)
    printed = []
    monkeypatch.setattr(trainer.console, "print", lambda message, **k: printed.append(message))
    trainer._on_signal(signal.SIGINT)
    assert printed == []  # nothing through rich inside the handler
    trainer._say_pending_notice()
    trainer._say_pending_notice()  # said once
    assert printed == ["Ctrl-C: finishing this step, saving a checkpoint (send it again to stop at once)"]


def _stop_during_set_up(monkeypatch, signum=signal.SIGINT):
    """Deliver a stop signal while the trainer builds (model, data, checkpoint), as a slow set-up would."""
    build = Trainer._build

    def build_then_signal(self):
        build(self)
        self._on_signal(signum)
        self._stop.received = signum

    monkeypatch.setattr(Trainer, "_build", build_then_signal)


def _folder_bytes(run_dir):
    return {path.relative_to(run_dir): path.read_bytes() for path in sorted(run_dir.rglob("*")) if path.is_file()}


def test_a_stop_during_a_new_runs_set_up_trains_nothing_and_keeps_nothing(tmp_path, monkeypatch):
    captured = io.StringIO()
    _stop_during_set_up(monkeypatch)
    result = _trainer(tmp_path, captured).fit()
    assert (result.started, result.step, result.checkpoint, result.signal) == (False, 0, None, signal.SIGINT)
    assert result.interrupted
    assert not (tmp_path / "runs" / "tiny").exists()  # the same command simply runs again
    assert "Ctrl-C: stopping once the set-up is done, before training" in captured.getvalue()
    assert interrupted_message(result, "mfkit train X --resume") == (
        "interrupted (Ctrl-C) during the set-up: nothing trained or kept; run the same command again to start")


@pytest.mark.parametrize("go_back", [False, True])
def test_a_stop_during_a_resumes_set_up_leaves_the_run_folder_as_it_was(tmp_path, monkeypatch, go_back):
    """Neither recipe.yaml (rewritten with the longer train.steps), nor later checkpoints (set aside by
    --from), nor the metrics log change; the result points at the checkpoint it would have resumed."""
    first = Trainer(parse_recipe(small_recipe(tmp_path, steps=40)), progress=False).fit()
    run_dir = first.run_dir
    before = _folder_bytes(run_dir)
    _stop_during_set_up(monkeypatch, signal.SIGTERM)
    start = run_dir / "checkpoints" / ("step-0000020.safetensors" if go_back else "step-0000040.safetensors")
    result = Trainer(parse_recipe(small_recipe(tmp_path, steps=60)), resume=True,
                     resume_from=start if go_back else None, progress=False).fit()
    assert (result.started, result.step, result.signal) == (False, int(start.name[5:12]), signal.SIGTERM)
    assert result.checkpoint.resolve() == start.resolve()
    assert _folder_bytes(run_dir) == before
    assert interrupted_message(result, "mfkit train R --resume") == (
        f"interrupted (SIGTERM) during the set-up: nothing trained, the run folder is as it was (step "
        f"{result.step})\ncontinue with: mfkit train R --resume")


def test_a_stop_once_training_runs_is_reported_with_its_checkpoint(tmp_path):
    result = TrainResult(tmp_path, 7, tmp_path / "step-0000007.safetensors", signal.SIGINT)
    assert interrupted_message(result, "mfkit train R --resume") == (
        f"interrupted (Ctrl-C) at step 7; checkpoint saved to {tmp_path / 'step-0000007.safetensors'}\n"
        "continue with: mfkit train R --resume")
