"""Stop signals: the notice given inside the signal handler never goes through rich (it may be mid-print or
mid-import when the signal lands: a run once crashed with a half-imported rich module instead of saving)."""
import io
import signal

from rich.console import Console

from mfkit.recipe import parse_recipe
from mfkit.train.signals import write_to_descriptor
from mfkit.train.trainer import Trainer
from tests.helpers import small_recipe


def test_write_to_descriptor_bypasses_buffers_and_reports_a_missing_descriptor(tmp_path):
    with open(tmp_path / "out.txt", "w") as file:
        file.write("buffered ")  # still in Python's buffer: the raw write lands first
        assert write_to_descriptor(file, "raw\n")
    assert (tmp_path / "out.txt").read_text() == "raw\nbuffered "
    assert not write_to_descriptor(io.StringIO(), "nowhere")


def _trainer(tmp_path, file):
    return Trainer(parse_recipe(small_recipe(tmp_path)), console=Console(file=file), progress=False)


def test_the_signal_notice_goes_to_the_descriptor_without_rich(tmp_path, monkeypatch):
    with open(tmp_path / "console.txt", "w") as file:
        trainer = _trainer(tmp_path, file)
        monkeypatch.setattr(trainer.console, "print", lambda *a, **k: (_ for _ in ()).throw(
            AssertionError("rich printed inside the signal handler")))
        trainer._on_signal(signal.SIGTERM)
        assert trainer._pending_notice is None
    assert (tmp_path / "console.txt").read_text() == (
        "SIGTERM: finishing this step, saving a checkpoint (send it again to stop at once)\n")


def test_without_a_descriptor_the_loop_says_the_notice_after_the_step(tmp_path, monkeypatch):
    captured = io.StringIO()
    trainer = _trainer(tmp_path, captured)
    printed = []
    monkeypatch.setattr(trainer.console, "print", lambda message, **k: printed.append(message))
    trainer._on_signal(signal.SIGINT)
    assert printed == []  # nothing through rich inside the handler
    trainer._say_pending_notice()
    trainer._say_pending_notice()  # said once
    assert printed == ["Ctrl-C: finishing this step, saving a checkpoint (send it again to stop at once)"]
