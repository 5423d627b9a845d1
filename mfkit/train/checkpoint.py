"""Checkpoints as single safetensors files: no pickle, written atomically, with a ``latest`` pointer.

One file ``step-NNNNNNN.safetensors`` holds the weights (``model/``), every EMA (``ema/<decay>/``),
the optimizer's tensors (``optim/<param>/<key>``), RNG states (``rng/``) and the modality's fitted state
(``modality/<name>``); its metadata holds the
step, the resolved recipe (YAML) and the optimizer and scheduler settings (JSON). Loading reads only
tensors and JSON, so it never unpickles anything. A file is written under a temporary name, flushed
to disk, then renamed, so a kill during a save leaves the previous checkpoint intact; a save that fails
(a full disk) raises :class:`CheckpointSaveError` and leaves no partial file behind. Checkpoints get the
ordinary permissions of a new file (0o666 less the umask).
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from mfkit.folders import file_mode

FORMAT = "mfkit-checkpoint-1"
_NAME = re.compile(r"^step-(\d+)\.safetensors$")
_PREVIEW = re.compile(r"^step-(\d+)$")


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable or not an mfkit checkpoint."""


class CheckpointSaveError(CheckpointError):
    """A checkpoint could not be written (disk full, no permission, I/O error); no partial file is left."""


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
    #: The modality's fitted state (``Modality.state_dict()``), loaded whenever the run is rebuilt.
    modality_state: dict[str, torch.Tensor] = field(default_factory=dict)


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
    path = write_checkpoint(folder / f"step-{checkpoint.step:07d}.safetensors", checkpoint)
    try:
        _write_atomically(folder / "latest", path.name + "\n")
    except OSError as error:
        raise CheckpointSaveError(f"could not point {folder / 'latest'} at {path.name}: "
                                  f"{error.strerror or error}") from error
    if keep_last:
        for old in list_checkpoints(folder)[:-keep_last]:
            old.unlink(missing_ok=True)
    return path


def write_checkpoint(path: Path, checkpoint: Checkpoint) -> Path:
    """Write ``checkpoint`` to ``path`` atomically (temporary file, fsync, rename); raises
    :class:`CheckpointSaveError` and leaves no partial file when it cannot. A name other than
    ``step-NNNNNNN.safetensors`` (e.g. ``best.safetensors``) is never listed, pruned nor pointed at."""
    path = Path(path)
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
    tensors.update({f"modality/{k}": v for k, v in checkpoint.modality_state.items()})
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(temporary), metadata=metadata)
        os.chmod(temporary, file_mode())
        _fsync(temporary)
        os.replace(temporary, path)
    except (OSError, SafetensorError) as error:
        _discard(temporary)
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise CheckpointSaveError(f"could not save checkpoint {path}: {reason}") from error
    except BaseException:
        _discard(temporary)
        raise
    return path


def _discard(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        temporary.write_text(text)
        _fsync(temporary)
        os.replace(temporary, path)
    finally:
        _discard(temporary)


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


def _unreadable(path: Path, error: Exception) -> CheckpointError:
    return CheckpointError(f"cannot read checkpoint {path}: {error}. It may be damaged; use an earlier one from the "
                           f"same folder (to resume: mfkit train RUN_FOLDER --resume --from CHECKPOINT)")


def read_metadata(path: Path) -> dict[str, str]:
    """A checkpoint's metadata (step, recipe, ...) without reading its tensors."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except Exception as error:  # safetensors raises several types for damaged files
        raise _unreadable(path, error) from None
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an mfkit checkpoint (format {metadata.get('format')!r})")
    return metadata


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
            groups: dict[str, dict[str, torch.Tensor]] = {"model": {}, "ema": {}, "optim": {}, "rng": {},
                                                          "modality": {}}
            for key in handle.keys():
                section, _, rest = key.partition("/")
                if weights_only and section in ("optim", "rng"):
                    continue
                groups[section][rest if section != "optim" else key] = handle.get_tensor(key)
    except CheckpointError:
        raise
    except Exception as error:  # safetensors raises several types for damaged files
        raise _unreadable(path, error) from None
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
        modality_state=groups["modality"],
    )


def set_aside_after(folder: Path, step: int) -> list[Path]:
    """Move the checkpoints later than ``step`` into ``folder/set-aside/`` (kept, not deleted); return their new paths.

    Used when a run resumes from an earlier checkpoint: the later ones belong to the abandoned attempt
    and must not count as ``latest`` nor be pruned in place of the new ones.
    """
    later = [p for p in list_checkpoints(folder) if (checkpoint_step(p) or 0) > step]
    best = folder / "best.safetensors"
    if best.is_file() and _saved_step(best) > step:  # scored on the abandoned attempt: not this run's best
        later.append(best)
    moved = _move_aside(later, folder / "set-aside")
    pointer = folder / "latest"
    if pointer.is_file() and not (folder / pointer.read_text().strip()).is_file():
        pointer.unlink()
    return moved


def set_aside_previews(folder: Path, step: int) -> list[Path]:
    """Move the preview folders ``step-NNNNNNN`` later than ``step`` into ``folder/set-aside/`` (an abandoned
    attempt's, when a run resumes from an earlier checkpoint); return their new paths."""
    if not folder.is_dir():
        return []
    later = sorted(p for p in folder.iterdir()
                   if p.is_dir() and (match := _PREVIEW.match(p.name)) and int(match.group(1)) > step)
    return _move_aside(later, folder / "set-aside")


def set_aside_best(folder: Path) -> Path | None:
    """Move ``folder/best.safetensors`` into ``folder/set-aside/`` (its record no longer compares with the new
    figures); return its new path, None when there was none."""
    best = folder / "best.safetensors"
    return _move_aside([best], folder / "set-aside")[0] if best.is_file() else None


def _move_aside(paths: list[Path], target: Path) -> list[Path]:
    """Move files or folders into ``target`` (created when needed), never over an earlier one there (a
    repeated name gets -2, -3, ... before its suffix); return their new paths."""
    moved = []
    for path in paths:
        target.mkdir(exist_ok=True)
        destination = free_name(target / path.name)
        os.replace(path, destination)
        moved.append(destination)
    return moved


def free_name(path: Path) -> Path:
    """``path``, or the first of ``stem-2.suffix``, ``stem-3.suffix``, ... beside it that does not exist yet."""
    destination, number = path, 1
    while destination.exists():
        number += 1
        destination = path.with_name(f"{path.stem}-{number}{path.suffix}")
    return destination


def _saved_step(path: Path) -> int:
    """The step a checkpoint file was saved at (its metadata), -1 when unreadable."""
    try:
        return int(read_metadata(path)["step"])
    except (CheckpointError, KeyError, ValueError):
        return -1


def load_weights(model: nn.Module, weights: dict[str, torch.Tensor], source: Path | str, hint: str) -> None:
    """``model.load_state_dict(weights)``, or a one-line :class:`CheckpointError` saying what does not fit."""
    try:
        model.load_state_dict(weights)
    except RuntimeError as error:
        lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
        detail = lines[1] if len(lines) > 1 else lines[0] if lines else "different tensors"
        raise CheckpointError(f"{source} does not fit the model this recipe builds ({detail.rstrip('.')}); "
                              f"{hint}") from None
