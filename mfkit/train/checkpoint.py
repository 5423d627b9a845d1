"""Checkpoints as single safetensors files: no pickle, written atomically, with a ``latest`` pointer.

One file ``step-NNNNNNN.safetensors`` holds the weights (``model/``), every EMA (``ema/<decay>/``),
the optimizer's tensors (``optim/<param>/<key>``) and RNG states (``rng/``); its metadata holds the
step, the resolved recipe (YAML) and the optimizer and scheduler settings (JSON). Loading reads only
tensors and JSON, so it never unpickles anything. A file is written under a temporary name, flushed
to disk, then renamed, so a kill during a save leaves the previous checkpoint intact.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

FORMAT = "mfkit-checkpoint-1"
_NAME = re.compile(r"^step-(\d+)\.safetensors$")


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable or not an mfkit checkpoint."""


@dataclass
class Checkpoint:
    """The content of one checkpoint."""

    step: int
    recipe_yaml: str
    model: dict[str, torch.Tensor]
    ema: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    optimizer: dict[str, Any] | None = None
    scheduler: dict[str, Any] | None = None
    rng: dict[str, torch.Tensor] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def _optimizer_to_flat(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], str]:
    tensors, scalars = {}, {}
    for index, entries in state["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim/{index}/{key}"] = value
            else:
                scalars[f"{index}/{key}"] = value
    return tensors, json.dumps({"param_groups": state["param_groups"], "scalars": scalars})


def _optimizer_from_flat(tensors: dict[str, torch.Tensor], meta: str) -> dict[str, Any]:
    info = json.loads(meta)
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        _, index, key = name.split("/", 2)
        state.setdefault(int(index), {})[key] = value
    for name, value in info["scalars"].items():
        index, key = name.split("/", 1)
        state.setdefault(int(index), {})[key] = value
    return {"state": state, "param_groups": info["param_groups"]}


def save_checkpoint(folder: Path, checkpoint: Checkpoint, keep_last: int | None = None) -> Path:
    """Write ``folder/step-NNNNNNN.safetensors`` atomically, point ``folder/latest`` at it, prune old ones."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {f"model/{k}": v for k, v in checkpoint.model.items()}
    for key, shadow in checkpoint.ema.items():
        tensors.update({f"ema/{key}/{k}": v for k, v in shadow.items()})
    metadata = {"format": FORMAT, "step": str(checkpoint.step), "recipe": checkpoint.recipe_yaml,
                "extra": json.dumps(checkpoint.extra)}
    if checkpoint.optimizer is not None:
        optim_tensors, metadata["optimizer"] = _optimizer_to_flat(checkpoint.optimizer)
        tensors.update(optim_tensors)
    if checkpoint.scheduler is not None:
        metadata["scheduler"] = json.dumps(checkpoint.scheduler)
    tensors.update({f"rng/{k}": v for k, v in checkpoint.rng.items()})
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    path = folder / f"step-{checkpoint.step:07d}.safetensors"
    temporary = folder / f".{path.name}.tmp-{os.getpid()}"
    save_file(tensors, str(temporary), metadata=metadata)
    _fsync(temporary)
    os.replace(temporary, path)
    _write_atomically(folder / "latest", path.name + "\n")
    if keep_last:
        for old in list_checkpoints(folder)[:-keep_last]:
            old.unlink(missing_ok=True)
    return path


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    temporary.write_text(text)
    _fsync(temporary)
    os.replace(temporary, path)


def checkpoint_step(path: Path) -> int | None:
    """The step in a checkpoint's file name (step-0001000.safetensors -> 1000), None for other names."""
    match = _NAME.match(Path(path).name)
    return int(match.group(1)) if match else None


def list_checkpoints(folder: Path) -> list[Path]:
    """Complete checkpoints in a folder, oldest first."""
    if not folder.is_dir():
        return []
    found = [(step, p) for p in folder.iterdir() if (step := checkpoint_step(p)) is not None]
    return [p for _, p in sorted(found)]


def latest_checkpoint(folder: Path) -> Path | None:
    """The checkpoint ``latest`` points at (falling back to the newest file if the pointer is missing or stale)."""
    pointer = folder / "latest"
    if pointer.is_file():
        candidate = folder / pointer.read_text().strip()
        if candidate.is_file():
            return candidate
    found = list_checkpoints(folder)
    return found[-1] if found else None


def load_checkpoint(path: Path, *, weights_only: bool = False) -> Checkpoint:
    """Read a checkpoint; ``weights_only`` skips the optimizer and RNG tensors."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            if metadata.get("format") != FORMAT:
                raise CheckpointError(f"{path} is not an mfkit checkpoint (format {metadata.get('format')!r})")
            groups: dict[str, dict[str, torch.Tensor]] = {"model": {}, "ema": {}, "optim": {}, "rng": {}}
            for key in handle.keys():
                section, _, rest = key.partition("/")
                if weights_only and section in ("optim", "rng"):
                    continue
                groups[section][rest if section != "optim" else key] = handle.get_tensor(key)
    except CheckpointError:
        raise
    except Exception as error:  # safetensors raises several types for damaged files
        raise CheckpointError(f"cannot read checkpoint {path}: {error}. It may be damaged; use an earlier one "
                              f"from the same folder") from None
    ema: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in groups["ema"].items():
        decay, _, name = key.partition("/")
        ema.setdefault(decay, {})[name] = value
    optimizer = None
    if not weights_only and "optimizer" in metadata:
        optimizer = _optimizer_from_flat(groups["optim"], metadata["optimizer"])
    scheduler = json.loads(metadata["scheduler"]) if "scheduler" in metadata and not weights_only else None
    return Checkpoint(
        step=int(metadata["step"]), recipe_yaml=metadata["recipe"], model=groups["model"], ema=ema,
        optimizer=optimizer, scheduler=scheduler, rng=groups["rng"], extra=json.loads(metadata.get("extra", "{}")),
    )
