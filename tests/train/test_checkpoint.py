"""Checkpoints: safetensors only, atomic, pruned, readable without the optimizer."""
import pytest
import torch

from mfkit.train.checkpoint import (
    Checkpoint, CheckpointError, latest_checkpoint, list_checkpoints, load_checkpoint, save_checkpoint,
)


def make(step):
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    return Checkpoint(step=step, recipe_yaml="name: x\n", model=model.state_dict(),
                      ema={"0.999": model.state_dict()}, optimizer=optimizer.state_dict(),
                      scheduler={"last_epoch": step}, rng={"torch_cpu": torch.get_rng_state()}), optimizer


def test_round_trip_restores_everything(tmp_path):
    checkpoint, optimizer = make(5)
    path = save_checkpoint(tmp_path, checkpoint)
    loaded = load_checkpoint(path)
    assert loaded.step == 5 and loaded.recipe_yaml == "name: x\n" and loaded.scheduler == {"last_epoch": 5}
    for key, value in checkpoint.model.items():
        assert torch.equal(loaded.model[key], value) and torch.equal(loaded.ema["0.999"][key], value)
    fresh = torch.optim.AdamW(torch.nn.Linear(3, 2).parameters())
    fresh.load_state_dict(loaded.optimizer)
    for a, b in zip(fresh.state_dict()["state"].values(), optimizer.state_dict()["state"].values()):
        for key in b:
            assert torch.equal(torch.as_tensor(a[key]), torch.as_tensor(b[key]))
    assert torch.equal(loaded.rng["torch_cpu"], checkpoint.rng["torch_cpu"])
    light = load_checkpoint(path, weights_only=True)
    assert light.optimizer is None and not light.rng and light.model


def test_latest_pointer_and_keep_last(tmp_path):
    for step in (10, 20, 30, 40):
        save_checkpoint(tmp_path, make(step)[0], keep_last=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-0000030.safetensors", "step-0000040.safetensors"]
    assert latest_checkpoint(tmp_path).name == "step-0000040.safetensors"
    (tmp_path / "latest").write_text("step-0000999.safetensors\n")  # stale pointer: fall back to the newest
    assert latest_checkpoint(tmp_path).name == "step-0000040.safetensors"


def test_a_killed_save_leaves_the_last_good_checkpoint(tmp_path, monkeypatch):
    good = save_checkpoint(tmp_path, make(10)[0])
    import mfkit.train.checkpoint as module

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(module.os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, make(20)[0])
    monkeypatch.undo()
    assert latest_checkpoint(tmp_path) == good
    assert load_checkpoint(good).step == 10
    assert list_checkpoints(tmp_path) == [good]  # the half-written file has a temporary name


def test_damaged_and_foreign_files_are_clear_errors(tmp_path):
    path = save_checkpoint(tmp_path, make(10)[0])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cannot read checkpoint.*damaged"):
        load_checkpoint(path)
    from safetensors.torch import save_file

    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(other))
    with pytest.raises(CheckpointError, match="not an mfkit checkpoint"):
        load_checkpoint(other)
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "missing.safetensors")


def test_loading_never_unpickles(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path, make(10)[0])
    import pickle

    def forbidden(*args, **kwargs):
        raise AssertionError("unpickling attempted")

    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    load_checkpoint(path)
