"""Weights-only exports: one small safetensors file with the resolved recipe inside, loadable in one call.

    mfkit export runs/toy2d                      # -> runs/toy2d/exports/toy2d-step-0003000-ema.safetensors

    exported = mfkit.load_exported("toy2d-step-0003000-ema.safetensors")
    samples = exported.sample(1000)              # or mfkit.sample(exported.model, noise, steps=1)

The file holds the network's weights (the EMA by default, or the raw weights) and, in its metadata, the
format tag, the resolved recipe (YAML), the training step and which weights these are. A ``.yaml`` file
beside it repeats the recipe for people; the loader needs only the ``.safetensors`` file (and the plugins
the recipe names, installed).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from mfkit.folders import OutputError, ensure_writable_dir, file_mode
from mfkit.plugins.spec import Modality
from mfkit.recipe.build import build_backbone, build_modality, plugin_context
from mfkit.recipe.loading import parse_recipe
from mfkit.recipe.schema import Recipe
from mfkit.train.checkpoint import CheckpointError, load_checkpoint, load_weights
from mfkit.train.weights import recipe_from_checkpoint, select_weights, weights_tag

FORMAT = "mfkit-export-1"
STATE_PREFIX = "modality/"  # the modality's fitted state beside the weights (no weight name has a '/')


@dataclass
class Exported:
    """A loaded export: the built network (eval mode), its recipe and modality, and where the weights come from."""

    model: nn.Module
    recipe: Recipe
    modality: Modality
    step: int
    weights: str

    def sample(self, count: int, *, steps: int | None = None, seed: int = 0, cond: str | None = None,
               guidance: float = 1.0) -> torch.Tensor:
        """``count`` samples (model tensors, on the CPU) with the sampler and number of steps the recipe names;
        ``guidance``: classifier-free guidance scale at sampling time (1: none; see :func:`mfkit.runs.guide`)."""
        from mfkit.runs import conditions_for, draw_samples, guide

        conditions = conditions_for(self.modality, cond, count)
        guide(self.model, self.recipe, self.modality, guidance, cond)  # refuses guidance this run cannot take
        return draw_samples(self.model, self.recipe, self.modality, count, steps=steps, seed=seed, cond=conditions,
                            guidance=guidance)[0]


def _free_file(folder: Path, stem: str) -> Path:
    """``folder/stem.safetensors``, or ``stem-2``, ``stem-3``, ... when taken."""
    candidate, number = folder / f"{stem}.safetensors", 1
    while candidate.exists():
        number += 1
        candidate = folder / f"{stem}-{number}.safetensors"
    return candidate


def export_checkpoint(checkpoint_path: Path, out: Path | None = None, *, use_ema: bool = True,
                      overwrite: bool = False, ema: float | str | None = None) -> tuple[Path, str]:
    """Write the weights of an mfkit checkpoint and its recipe to a safetensors file (and a .yaml beside it).

    Returns the file written and which weights it holds ('ema-<decay>' or 'raw'). ``ema``: the decay of a
    kept EMA to export (default: the recipe's first; see :func:`mfkit.train.weights.select_weights`).

    ``out``: a file (``.safetensors`` added if missing) or an existing folder; default under
    ``<run>/exports/``. An existing file is only replaced with ``overwrite``.
    """
    checkpoint_path = Path(checkpoint_path)
    checkpoint = load_checkpoint(checkpoint_path, weights_only=True)
    recipe = recipe_from_checkpoint(checkpoint)
    label, weights = select_weights(checkpoint, use_ema, ema)
    stem = f"{recipe.name}-step-{checkpoint.step:07d}-{weights_tag(label, ema is not None)}"
    if out is None:
        out = _free_file(checkpoint_path.parent.parent / "exports", stem)
    else:
        out = Path(out)
        if out.is_dir():
            out = out / f"{stem}.safetensors"
        elif out.suffix != ".safetensors":
            out = out.with_name(out.name + ".safetensors")
        if out.exists() and not overwrite:
            raise OutputError(f"{out} already exists; choose another --out, or pass --overwrite to replace it")
    ensure_writable_dir(out.parent, "export folder")
    recipe_yaml = checkpoint.recipe_yaml
    metadata = {"format": FORMAT, "recipe": recipe_yaml, "step": str(checkpoint.step), "weights": label}
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in weights.items()}
    tensors.update({f"{STATE_PREFIX}{k}": v.detach().to("cpu").contiguous().clone()
                    for k, v in checkpoint.modality_state.items()})
    temporary = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        save_file(tensors, str(temporary), metadata=metadata)
        os.chmod(temporary, file_mode())
        os.replace(temporary, out)
        header = f"# recipe of {out.name} (step {checkpoint.step}, weights {label}); the file's metadata holds it too\n"
        out.with_suffix(".yaml").write_text(header + recipe_yaml)
    except Exception as error:
        temporary.unlink(missing_ok=True)
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise OutputError(f"could not write {out}: {reason}") from None
    return out, label


def load_exported(path: str | Path, device: str | torch.device = "cpu") -> Exported:
    """Load a file written by ``mfkit export``: the backbone the recipe names, with its weights, in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no exported model at {path}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            if metadata.get("format") != FORMAT:
                raise CheckpointError(f"{path} is not an mfkit export (format {metadata.get('format')!r}); "
                                      f"write one with `mfkit export RUN`")
            weights = {key: handle.get_tensor(key) for key in handle.keys()}
    except CheckpointError:
        raise
    except Exception as error:  # safetensors raises several types for damaged files
        raise CheckpointError(f"cannot read {path}: {error}") from None
    from mfkit.runs import load_modality_state

    recipe = parse_recipe(yaml.safe_load(metadata["recipe"]), f"recipe stored in {path}")
    modality = build_modality(recipe, context=plugin_context(recipe, purpose="sample"))
    state = {k.removeprefix(STATE_PREFIX): weights.pop(k) for k in list(weights) if k.startswith(STATE_PREFIX)}
    load_modality_state(modality, state, path)
    model = build_backbone(recipe, modality)
    load_weights(model, weights, path, "the file was exported with other plugin versions")
    return Exported(model.to(device).eval(), recipe, modality, int(metadata["step"]), metadata["weights"])
