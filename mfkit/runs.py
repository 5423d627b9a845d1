"""Finding runs and checkpoints, and sampling from them (what `mfkit sample` does)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

import mfkit
from mfkit.folders import OutputError, ensure_writable_dir, numbered, require_new_folder
from mfkit.core.conditions import move_condition, slice_condition
from mfkit.plugins.spec import Modality, asks_for_null, save_samples
from mfkit.recipe.build import build_backbone, build_modality, plugin_context
from mfkit.recipe.schema import Recipe
from mfkit.train.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint, load_weights
from mfkit.train.weights import recipe_from_checkpoint, select_weights, weights_tag

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


def guide(model: nn.Module, recipe: Recipe, modality: Modality, scale: float, cond: str | None = None) -> Any:
    """``model`` with classifier-free guidance of ``scale`` at sampling time (:func:`mfkit.guided_model`);
    ``model`` itself for scale 1. Refused, with what to do, where guided samples would be silently wrong or
    not what was asked: an unconditional modality, a run that never learned the null condition (trained
    without class dropout), a run whose training already folds guidance in (its conditional velocity is
    guided: a second scale would multiply the first), or ``cond == "null"`` (nothing to guide towards)."""
    if scale == 1:
        return model
    if not scale >= 0 or scale == float("inf"):
        raise ValueError(f"guidance must be a finite scale >= 0 (1: no guidance), got {scale}")
    condition = modality.condition()
    if condition is None:
        raise ValueError(f"guidance {scale:g}: this modality offers no conditions, so there is nothing to guide; "
                         f"sample without --guidance")
    if asks_for_null(condition, cond):
        raise ValueError(f"guidance {scale:g} with --cond null: unconditional samples have nothing to guide towards "
                         f"(u_null + s (u_null - u_null) = u_null); drop one of the two")
    settings = recipe.objective.guidance
    if settings is None or settings.class_dropout == 0:
        raise ValueError(f"guidance {scale:g}: run {recipe.name!r} was trained without class dropout, so it never "
                         f"learned the null condition and guided samples would be wrong. Sample without --guidance, "
                         f"or train with objective.guidance: {{w_cfg: 1.0, kappa: 0.0, class_dropout: 0.1}} "
                         f"(class dropout only; guidance then comes at sampling time)")
    if settings.w_cfg != 1 or settings.kappa != 0:
        folded = settings.w_cfg / (1 - settings.kappa)
        raise ValueError(f"guidance {scale:g}: run {recipe.name!r} folds guidance into training (w_cfg "
                         f"{settings.w_cfg:g}, kappa {settings.kappa:g}: scale {folded:g} in [{settings.t_min:g}, "
                         f"{settings.t_max:g}]), so its samples are guided already and --guidance would multiply "
                         f"that scale. Sample without --guidance; guidance at sampling time is for runs trained "
                         f"with objective.guidance: {{w_cfg: 1.0, kappa: 0.0, class_dropout: 0.1}}")
    return mfkit.guided_model(model, scale, condition.ops)


def pick_device(device: str) -> torch.device:
    """'auto' (CUDA when available), 'cpu' or 'cuda'; a clear ValueError otherwise."""
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"unknown device {device!r}; use auto, cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda, but no CUDA device is available; use --device cpu or auto")
    return torch.device("cuda" if device in ("auto", "cuda") and torch.cuda.is_available() else "cpu")


def conditions_for(modality: Modality, text: str | None, count: int) -> Any:
    """The conditions of ``count`` samples: parsed from ``text`` (`--cond`), the null condition for
    ``text == "null"`` (unconditional samples of a conditional model), else the modality's preview
    conditions (every class in turn for class labels); None for an unconditional modality."""
    condition = modality.condition()
    if condition is None:
        if text is not None:
            raise ValueError("this modality offers no conditions; sample without --cond")
        return None
    if text is None:
        return condition.preview(count)
    if asks_for_null(condition, text):
        return condition.null(count)
    return condition.parse(text, count)


@torch.no_grad()
def draw_samples(model: nn.Module, recipe: Recipe, modality: Modality, count: int, *, steps: int | None = None,
                 seed: int = 0, cond: Any = None, euler: bool | None = None,
                 progress: Progress | None = None, guidance: float = 1.0) -> tuple[torch.Tensor, Any]:
    """``count`` samples (on the CPU) in batches of ``recipe.sample.batch_size``, and their conditions.

    ``steps`` defaults to the recipe's ``sample.steps``. ``cond``: the conditions of all ``count``
    samples (see :func:`conditions_for`), or None. ``guidance``: classifier-free guidance scale at
    sampling time (1: none; see :func:`guide`).
    """
    steps = steps or recipe.sample.steps
    device = next(model.parameters()).device
    sampler = sampler_for(recipe, euler)
    network = guide(model, recipe, modality, guidance)
    generator = torch.Generator(device).manual_seed(seed)
    chunks = []
    for start in range(0, count, recipe.sample.batch_size):
        n = min(recipe.sample.batch_size, count - start)
        noise = torch.randn((n, *modality.sample_shape), device=device, generator=generator)
        chunk_cond = move_condition(slice_condition(cond, slice(start, start + n)), device)
        chunks.append(sampler(network, noise, steps=steps, cond=chunk_cond).cpu())
        if progress is not None:
            progress(start + n, count)
    return torch.cat(chunks), cond


def load_modality_state(modality: Modality, state: dict[str, torch.Tensor], source: Path | str) -> None:
    """Give a rebuilt modality the state its run fitted; a run without state needs none."""
    if state or type(modality).load_state_dict is not Modality.load_state_dict:
        try:
            modality.load_state_dict(state)
        except (KeyError, ValueError, RuntimeError) as error:
            raise CheckpointError(f"{source}: the modality's saved state does not fit this version of the plugin "
                                  f"({type(error).__name__}: {error})") from None


def samples_folder(run_dir: Path, step: int, steps: int, count: int, seed: int, weights: str,
                   cond: str | None, guidance: float = 1.0) -> Path:
    """A new folder under ``<run>/samples/`` named by what was drawn; numbered when that name is taken.
    ``weights``: the short name of the weights ('ema', 'raw', 'ema0.9995'; see :func:`weights_tag`)."""
    name = f"step-{step:07d}-{steps}step-n{count}-seed{seed}-{weights}"
    if guidance != 1:
        name += f"-cfg{guidance:g}"
    if cond is not None:
        name += f"-{cond}"
    return numbered(run_dir / "samples" / name)


def sample_checkpoint(path: Path, *, steps: int | None = None, count: int | None = None, out_dir: Path | None = None,
                      cond: str | None = None, seed: int = 0, use_ema: bool = True, device: str = "auto",
                      overrides: Sequence[str] = (), euler: bool | None = None,
                      progress: Progress | None = None, ema: float | str | None = None,
                      guidance: float = 1.0) -> SampleResult:
    """Load a checkpoint (weights and recipe only), draw samples, save them with the modality's writer.

    ``steps`` defaults to the recipe's ``sample.steps``. ``overrides`` (key.path=value) apply to the
    recipe stored in the checkpoint, e.g. sample.batch_size=64. ``euler``: step with the instantaneous
    velocity u(z, t, t) (flow-matching Euler); by default this is used exactly when the run trained flow
    matching, which never learns r != t. ``out_dir`` must be absent or empty; by default a new folder
    under ``<run>/samples/`` named by step, steps, count, seed, weights (ema/raw) and condition. ``ema``: the
    decay of a kept EMA to sample with (default: the recipe's first; see :func:`select_weights`).
    ``guidance``: classifier-free guidance scale at sampling time (1: none; two network calls per step
    otherwise; the run must have trained with class dropout, see :func:`guide`).
    """
    if out_dir is not None:
        require_new_folder(out_dir, "--out")
    checkpoint = load_checkpoint(path, weights_only=True)
    recipe = recipe_from_checkpoint(checkpoint, overrides)
    target = pick_device(device)
    modality = build_modality(recipe, context=plugin_context(recipe, device=target, run_dir=Path(path).parent.parent,
                                                             purpose="sample"))
    load_modality_state(modality, checkpoint.modality_state, path)
    model = build_backbone(recipe, modality).to(target)
    weights_label, weights = select_weights(checkpoint, use_ema, ema)
    load_weights(model, weights, path, "sample without backbone overrides (the stored recipe builds the model the run trained)")
    model.eval()
    count = count or recipe.sample.count
    steps = steps or recipe.sample.steps
    conditions = conditions_for(modality, cond, count)  # a bad --cond fails before any folder is made
    guide(model, recipe, modality, guidance, cond)  # so does guidance the run cannot take
    if out_dir is None:
        out_dir = samples_folder(Path(path).parent.parent, checkpoint.step, steps, count, seed,
                                 weights_tag(weights_label, ema is not None), cond, guidance)
        ensure_writable_dir(out_dir, "samples folder")
    samples, conditions = draw_samples(model, recipe, modality, count, steps=steps, seed=seed, cond=conditions,
                                       euler=euler, progress=progress, guidance=guidance)
    try:
        files = save_samples(modality, samples, out_dir, conditions, kind="samples")
    except OSError as error:
        raise OutputError(f"could not write the samples to {out_dir}: {error.strerror or error}") from None
    return SampleResult(Path(path), checkpoint.step, files, out_dir, steps, count)
