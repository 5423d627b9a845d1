"""Run folders: plain names only, and --overwrite clears only what mfkit created, never beside or above."""
import pytest

from mfkit.train.lock import LOCK_NAME, RunLock, RunLockedError
from mfkit.train.run_folder import MARKER, RunFolderError, open_run_folder, run_name_problem


@pytest.mark.parametrize("name", ["", " ", "..", ".", ".hidden", "a/b", "../x", "a\\b", "c:", "tab\there", " padded",
                                  "x" * 201])
def test_names_that_are_not_plain_folder_names(name):
    assert run_name_problem(name) is not None


@pytest.mark.parametrize("name", ["toy2d", "spirals-lr3e-4", "run_01", "my run", "ü-β", "a.b"])
def test_plain_names(name):
    assert run_name_problem(name) is None


def test_new_folder_is_marked_and_locked(tmp_path):
    run = tmp_path / "runs" / "a"
    lock = open_run_folder(run, "new")
    assert (run / MARKER).is_file() and (run / LOCK_NAME).is_file()
    with pytest.raises(RunLockedError):
        open_run_folder(run, "resume")
    lock.release()
    assert not (run / LOCK_NAME).exists()


def test_overwrite_clears_only_inside_a_marked_folder(tmp_path):
    runs = tmp_path / "runs"
    beside = runs / "other" / "keep.txt"
    beside.parent.mkdir(parents=True)
    beside.write_text("keep")
    run = runs / "a"
    open_run_folder(run, "new").release()
    (run / "old.txt").write_text("old")
    (run / "sub").mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    (run / "sub" / "link").symlink_to(outside, target_is_directory=True)
    open_run_folder(run, "overwrite").release()
    assert sorted(p.name for p in run.iterdir()) == [MARKER]
    assert beside.read_text() == "keep" and (outside / "keep.txt").read_text() == "keep"


def test_overwrite_refuses_a_folder_without_the_marker(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "holiday.jpg").write_text("precious")
    with pytest.raises(RunFolderError, match="no .mfkit-run marker"):
        open_run_folder(folder, "overwrite")
    assert sorted(p.name for p in folder.iterdir()) == ["holiday.jpg"]
    with pytest.raises(RunFolderError, match="not an mfkit run folder"):
        open_run_folder(folder, "resume")
    assert sorted(p.name for p in folder.iterdir()) == ["holiday.jpg"]


def test_overwrite_never_deletes_a_folder_another_process_writes(tmp_path):
    run = tmp_path / "a"
    open_run_folder(run, "new").release()
    (run / "checkpoint").write_text("live")
    with RunLock(run):
        with pytest.raises(RunLockedError):
            open_run_folder(run, "overwrite")
    assert (run / "checkpoint").read_text() == "live"


def test_unwritable_output_dir_is_one_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(RunFolderError, match="cannot write to output_dir .*file/runs: Not a directory"):
        open_run_folder(blocker / "runs" / "a", "new")
