"""`mfkit train` never deletes what it does not own and never lets two processes write one run."""
import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from mfkit.train.lock import LOCK_NAME, RunLock
from tests.cli.util import run, start, wait_for_metrics
from tests.helpers import small_recipe, write_recipe


@pytest.fixture
def recipe(tmp_path):
    return write_recipe(tmp_path / "tiny.yaml", small_recipe(tmp_path, steps=10, checkpoint_every=10))


def sentinels(tmp_path):
    """Files beside, above and below the runs folder that no command may delete."""
    paths = [tmp_path / "keep.txt", tmp_path / "runs" / "keep.txt", tmp_path / "runs" / "other" / "keep.txt"]
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("keep")
    return paths


def assert_kept(paths):
    for path in paths:
        assert path.read_text() == "keep", path


@pytest.mark.parametrize("name", ["..", "", ".", "a/b", "../escape", ".hidden", " "])
def test_names_that_are_not_plain_folders_are_refused_and_nothing_is_deleted(tmp_path, recipe, name):
    kept = sentinels(tmp_path)
    result = run("train", recipe, f"name={name}", "--overwrite")
    assert result.exit_code == 2, result.output
    assert "name: " in result.output and "plain folder name" in result.output and "Traceback" not in result.output
    assert_kept(kept)
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["keep.txt", "other"]


def test_overwrite_refuses_a_folder_mfkit_did_not_create(tmp_path, recipe):
    kept = sentinels(tmp_path)
    result = run("train", recipe, "name=other", "--overwrite")
    assert result.exit_code == 2 and "has no .mfkit-run marker" in result.output and "left as it is" in result.output
    assert_kept(kept)
    assert sorted(p.name for p in (tmp_path / "runs" / "other").iterdir()) == ["keep.txt"]


def test_overwrite_starts_a_marked_run_over_and_touches_nothing_beside_it(tmp_path, recipe):
    kept = sentinels(tmp_path)
    assert run("train", recipe).exit_code == 0
    run_dir = tmp_path / "runs" / "tiny"
    marker = json.loads((run_dir / ".mfkit-run").read_text())
    assert marker["kind"] == "mfkit run" and marker["name"] == "tiny"
    (run_dir / "note.txt").write_text("inside the run: goes with it")
    result = run("train", recipe, "--overwrite")
    assert result.exit_code == 0, result.output
    assert not (run_dir / "note.txt").exists() and (run_dir / "checkpoints" / "step-0000010.safetensors").is_file()
    assert_kept(kept)


def test_a_running_run_cannot_get_a_second_writer(tmp_path, recipe):
    assert run("train", recipe).exit_code == 0
    run_dir = tmp_path / "runs" / "tiny"
    before = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    with RunLock(run_dir):  # another process of this host writes the run
        for extra in (["--resume", "train.steps=20"], ["--overwrite"]):
            result = run("train", recipe, *extra)
            assert result.exit_code == 2, result.output
            assert f"is being written by process {os.getpid()} on {socket.gethostname()}" in result.output
        result = run("train", run_dir, "--resume")
        assert result.exit_code == 2 and "one writer at a time" in result.output
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == before
    assert not (run_dir / LOCK_NAME).exists()


def test_a_stale_lock_of_a_dead_process_is_taken_over_with_a_message(tmp_path, recipe):
    assert run("train", recipe).exit_code == 0
    run_dir = tmp_path / "runs" / "tiny"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (run_dir / LOCK_NAME).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(),
                                                 "started": "2026-01-01T00:00:00+00:00", "command": "mfkit train"}))
    result = run("train", run_dir, "--resume", "train.steps=12")
    assert result.exit_code == 0, result.output
    assert f"taking over the stale lock of process {dead.pid}" in result.output and "no longer runs" in result.output
    assert not (run_dir / LOCK_NAME).exists()


def test_unwritable_output_dir_is_one_line(tmp_path, recipe):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = run("train", recipe, f"output_dir={blocker}/runs")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"cannot write to output_dir {blocker}/runs: Not a directory" in result.output
    assert blocker.read_text() == ""


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="permissions do not bind root")
def test_read_only_output_dir_is_one_line(tmp_path, recipe):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    result = run("train", recipe, f"output_dir={locked}")
    assert result.exit_code == 2 and "Permission denied" in result.output and "Traceback" not in result.output


def test_a_run_folder_argument_needs_resume_or_overwrite(tmp_path, recipe):
    assert run("train", recipe).exit_code == 0
    run_dir = tmp_path / "runs" / "tiny"
    result = run("train", run_dir)
    assert result.exit_code == 2 and f"mfkit train {run_dir} --resume" in result.output
    result = run("train", tmp_path / "runs" / "other-folder-that-is-plain", "--resume")
    assert result.exit_code == 2
    (tmp_path / "plain").mkdir()
    result = run("train", tmp_path / "plain", "--resume")
    assert result.exit_code == 2 and "not an mfkit run folder" in result.output
    result = run("train", run_dir, "--resume", "--overwrite")
    assert result.exit_code == 2 and "exclude each other" in result.output


@pytest.mark.slow
def test_sigterm_saves_and_exits_143_and_a_second_writer_is_refused_meanwhile(tmp_path):
    path = write_recipe(tmp_path / "long.yaml", small_recipe(tmp_path, "long", steps=100_000, checkpoint_every=50_000))
    process = start("train", path)
    run_dir = tmp_path / "runs" / "long"
    try:
        wait_for_metrics(run_dir, process)
        (run_dir / "keep.txt").write_text("keep")
        holder = json.loads((run_dir / LOCK_NAME).read_text())
        assert holder["pid"] == process.pid and holder["host"] == socket.gethostname(), holder
        for extra in (["--overwrite"], ["--resume"], []):  # a second writer, while the first one trains
            second = run("train", path, *extra)
            assert second.exit_code == 2 and "Traceback" not in second.output, second.output
            assert extra == [] or f"is being written by process {process.pid}" in second.output
        assert (run_dir / "keep.txt").read_text() == "keep"
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 143, output
    assert "SIGTERM: finishing this step" in output and "interrupted (SIGTERM) at step" in output, output
    assert f"continue with: mfkit train {run_dir} --resume" in output and "Traceback" not in output, output
    checkpoints = list((run_dir / "checkpoints").glob("step-*.safetensors"))
    assert len(checkpoints) == 1 and int(checkpoints[0].name[5:12]) >= 1, checkpoints
    assert not (run_dir / LOCK_NAME).exists()


def test_a_disk_error_while_saving_is_one_line_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    import mfkit.train.checkpoint as checkpoint_module

    real, calls = checkpoint_module.save_file, {"n": 0}

    def full_after_first(tensors, filename, metadata=None):
        calls["n"] += 1
        if calls["n"] > 1:
            raise OSError(28, "No space left on device")
        return real(tensors, filename, metadata=metadata)

    monkeypatch.setattr(checkpoint_module, "save_file", full_after_first)
    path = write_recipe(tmp_path / "full.yaml", small_recipe(tmp_path, "full", steps=15, checkpoint_every=5))
    result = run("train", path)
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    run_dir = tmp_path / "runs" / "full"
    good = run_dir / "checkpoints" / "step-0000005.safetensors"
    assert "warning: could not save checkpoint" in result.output and "tries again at the end" in result.output
    assert (f"error: could not save checkpoint {run_dir / 'checkpoints' / 'step-0000015.safetensors'}: No space left "
            f"on device; the last good checkpoint is {good}") in result.output
    assert f"continue with mfkit train {run_dir} --resume" in result.output
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["latest", good.name]
    monkeypatch.undo()
    resumed = run("train", run_dir, "--resume")
    assert resumed.exit_code == 0 and "done: 15 steps" in resumed.output, resumed.output
