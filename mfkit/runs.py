"""Finding runs and checkpoints, and sampling from them (what `mfkit sample` does)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

import mfkit
from mfkit.recipe.build import build_backbone, build_modality
from mfkit.train.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint
from mfkit.train.trainer import ema_weights, recipe_from_checkpoint


def latest_run(output_dir: Path) -> Path:
    """The run folder under ``output_dir`` whose newest checkpoint is the most recent."""
    candidates = []
    if output_dir.is_dir():
        for run in output_dir.iterdir():
            checkpoint = latest_checkpoint(run / "checkpoints")
            if checkpoint is not None:
                candidates.append((checkpoint.stat().st_mtime, run))
    if not candidates:
        raise CheckpointError(f"no trained run under {output_dir}/; train one first "
                              f"(`mfkit train recipes/toy2d.yaml`) or pass --run / --checkpoint")
    return max(candidates)[1]


def resolve_checkpoint(run: Path | None, checkpoint: Path | None, output_dir: Path = Path("runs")) -> Path:
    if checkpoint is not None:
        if not checkpoint.is_file():
            raise CheckpointError(f"no checkpoint file at {checkpoint}")
        return checkpoint
    run = run if run is not None else latest_run(output_dir)
    found = latest_checkpoint(run / "checkpoints")
    if found is None:
        raise CheckpointError(f"no checkpoint in {run / 'checkpoints'}; is {run} a run folder?")
    return found


@dataclass
class SampleResult:
    checkpoint: Path
    step: int
    files: list[Path]
    out_dir: Path


def sampler_for(recipe, euler: bool | None = None):
    """mfkit.sample for MeanFlow runs, mfkit.euler_sample for flow-matching runs (or when asked)."""
    if euler is None:
        euler = recipe.objective.kind == "flow_matching"
    return mfkit.euler_sample if euler else mfkit.sample


def sample_checkpoint(path: Path, *, steps: int = 1, count: int | None = None, out_dir: Path | None = None,
                      cond: str | None = None, seed: int = 0, use_ema: bool = True, device: str = "auto",
                      overrides: Sequence[str] = (), euler: bool | None = None) -> SampleResult:
    """Load a checkpoint (weights and recipe only), draw samples, save them with the modality's writer.

    ``overrides`` (key.path=value) apply to the recipe stored in the checkpoint, e.g. sample.batch_size=64.
    ``euler``: step with the instantaneous velocity u(z, t, t) (flow-matching Euler); by default this is
    used exactly when the run trained flow matching, which never learns r != t.
    """
    checkpoint = load_checkpoint(path, weights_only=True)
    recipe = recipe_from_checkpoint(checkpoint, overrides)
    modality = build_modality(recipe)
    label = modality.label_of(cond) if cond is not None else None
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"unknown device {device!r}; use auto, cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda, but no CUDA device is available; use --device cpu or auto")
    target = torch.device("cuda" if device in ("auto", "cuda") and torch.cuda.is_available() else "cpu")
    model = build_backbone(recipe, modality).to(target)
    model.load_state_dict(ema_weights(checkpoint, use_ema))
    model.eval()
    count = count or recipe.sample.count
    sampler = sampler_for(recipe, euler)
    generator = torch.Generator(target).manual_seed(seed)
    chunks, labels = [], []
    for start in range(0, count, recipe.sample.batch_size):
        n = min(recipe.sample.batch_size, count - start)
        noise = torch.randn((n, *modality.sample_shape), device=target, generator=generator)
        labels_chunk = None
        if label is not None:
            labels_chunk = torch.full((n,), label, device=target, dtype=torch.long)
        elif modality.num_classes:
            labels_chunk = torch.arange(start, start + n, device=target) % modality.num_classes
        chunks.append(sampler(model, noise, steps=steps, cond=labels_chunk).cpu())
        if labels_chunk is not None:
            labels.append(labels_chunk.cpu())
    run_dir = path.parent.parent
    suffix = f"-{cond}" if cond is not None else ""
    out_dir = out_dir or run_dir / "samples" / f"step-{checkpoint.step:07d}-{steps}step{suffix}"
    files = modality.save(torch.cat(chunks), out_dir, torch.cat(labels) if labels else None)
    return SampleResult(path, checkpoint.step, files, out_dir)
