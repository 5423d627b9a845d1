"""Finding runs and checkpoints, and sampling from them (what `mfkit sample` does)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

import mfkit
from mfkit.folders import OutputError, ensure_writable_dir, numbered, require_new_folder
from mfkit.plugins.spec import Modality
from mfkit.recipe.build import build_backbone, build_modality
from mfkit.recipe.schema import Recipe
from mfkit.train.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint, load_weights
from mfkit.train.weights import recipe_from_checkpoint, select_weights

#: Called after each batch of samples with (samples drawn so far, samples wanted).
Progress = Callable[[int, int], None]


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
    steps: int
    count: int


def sampler_for(recipe: Recipe, euler: bool | None = None):
    """mfkit.sample for MeanFlow runs, mfkit.euler_sample for flow-matching runs (or when asked)."""
    if euler is None:
        euler = recipe.objective.kind == "flow_matching"
    return mfkit.euler_sample if euler else mfkit.sample


def pick_device(device: str) -> torch.device:
    """'auto' (CUDA when available), 'cpu' or 'cuda'; a clear ValueError otherwise."""
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"unknown device {device!r}; use auto, cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda, but no CUDA device is available; use --device cpu or auto")
    return torch.device("cuda" if device in ("auto", "cuda") and torch.cuda.is_available() else "cpu")


@torch.no_grad()
def draw_samples(model: nn.Module, recipe: Recipe, modality: Modality, count: int, *, steps: int | None = None,
                 seed: int = 0, label: int | None = None, euler: bool | None = None,
                 progress: Progress | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``count`` samples (on the CPU) in batches of ``recipe.sample.batch_size``, and their class labels.

    ``steps`` defaults to the recipe's ``sample.steps``. Labels: ``label`` for all, else (conditional
    modalities) every class in turn.
    """
    steps = steps or recipe.sample.steps
    device = next(model.parameters()).device
    sampler = sampler_for(recipe, euler)
    generator = torch.Generator(device).manual_seed(seed)
    chunks, labels = [], []
    for start in range(0, count, recipe.sample.batch_size):
        n = min(recipe.sample.batch_size, count - start)
        noise = torch.randn((n, *modality.sample_shape), device=device, generator=generator)
        labels_chunk = None
        if label is not None:
            labels_chunk = torch.full((n,), label, device=device, dtype=torch.long)
        elif modality.num_classes:
            labels_chunk = torch.arange(start, start + n, device=device) % modality.num_classes
        chunks.append(sampler(model, noise, steps=steps, cond=labels_chunk).cpu())
        if labels_chunk is not None:
            labels.append(labels_chunk.cpu())
        if progress is not None:
            progress(start + n, count)
    return torch.cat(chunks), (torch.cat(labels) if labels else None)


def samples_folder(run_dir: Path, step: int, steps: int, count: int, seed: int, weights: str,
                   cond: str | None) -> Path:
    """A new folder under ``<run>/samples/`` named by what was drawn; numbered when that name is taken."""
    name = f"step-{step:07d}-{steps}step-n{count}-seed{seed}-{weights.split('-')[0]}"
    if cond is not None:
        name += f"-{cond}"
    return numbered(run_dir / "samples" / name)


def sample_checkpoint(path: Path, *, steps: int | None = None, count: int | None = None, out_dir: Path | None = None,
                      cond: str | None = None, seed: int = 0, use_ema: bool = True, device: str = "auto",
                      overrides: Sequence[str] = (), euler: bool | None = None,
                      progress: Progress | None = None) -> SampleResult:
    """Load a checkpoint (weights and recipe only), draw samples, save them with the modality's writer.

    ``steps`` defaults to the recipe's ``sample.steps``. ``overrides`` (key.path=value) apply to the
    recipe stored in the checkpoint, e.g. sample.batch_size=64. ``euler``: step with the instantaneous
    velocity u(z, t, t) (flow-matching Euler); by default this is used exactly when the run trained flow
    matching, which never learns r != t. ``out_dir`` must be absent or empty; by default a new folder
    under ``<run>/samples/`` named by step, steps, count, seed, weights (ema/raw) and condition.
    """
    if out_dir is not None:
        require_new_folder(out_dir, "--out")
    checkpoint = load_checkpoint(path, weights_only=True)
    recipe = recipe_from_checkpoint(checkpoint, overrides)
    modality = build_modality(recipe)
    label = modality.label_of(cond) if cond is not None else None
    target = pick_device(device)
    model = build_backbone(recipe, modality).to(target)
    weights_label, weights = select_weights(checkpoint, use_ema)
    load_weights(model, weights, path, "sample without backbone overrides (the stored recipe builds the model the run trained)")
    model.eval()
    count = count or recipe.sample.count
    steps = steps or recipe.sample.steps
    if out_dir is None:
        out_dir = samples_folder(Path(path).parent.parent, checkpoint.step, steps, count, seed, weights_label, cond)
        ensure_writable_dir(out_dir, "samples folder")
    samples, labels = draw_samples(model, recipe, modality, count, steps=steps, seed=seed, label=label, euler=euler,
                                   progress=progress)
    try:
        files = modality.save(samples, out_dir, labels)
    except OSError as error:
        raise OutputError(f"could not write the samples to {out_dir}: {error.strerror or error}") from None
    return SampleResult(Path(path), checkpoint.step, files, out_dir, steps, count)
