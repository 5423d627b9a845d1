"""Using a checkpoint without training: the recipe it was trained with, and the weights to sample with."""
from __future__ import annotations

import yaml
import torch

from mfkit.recipe.loading import apply_overrides, parse_recipe
from mfkit.recipe.schema import Recipe
from mfkit.train.checkpoint import Checkpoint
from mfkit.train.ema import decay_key


def recipe_from_checkpoint(checkpoint: Checkpoint, overrides=()) -> Recipe:
    """The recipe a checkpoint was trained with, optionally with key.path=value overrides."""
    data = yaml.safe_load(checkpoint.recipe_yaml)
    if overrides:
        data = apply_overrides(data, overrides)
    return parse_recipe(data, "recipe stored in the checkpoint")


def kept_ema_key(checkpoint: Checkpoint, decay: float | str) -> str:
    """The checkpoint's key of the EMA with this decay (0.9995 or '0.9995'); ValueError naming the kept ones."""
    try:
        key = decay_key(float(decay))
    except (TypeError, ValueError):
        raise ValueError(f"--ema takes an EMA decay such as 0.999, got {decay!r}") from None
    if key not in checkpoint.ema:
        if not checkpoint.ema:
            raise ValueError(f"this checkpoint keeps no EMA (its recipe's train.ema_decays is empty), so there is no "
                             f"EMA {decay}: leave out --ema and the raw weights are used")
        kept = ", ".join(checkpoint.ema)
        raise ValueError(f"this checkpoint keeps no EMA with decay {decay}; it keeps {kept} (the recipe's "
                         f"train.ema_decays): pass one of them to --ema, or ask for the raw weights (--no-ema, --raw)")
    return key


def select_weights(checkpoint: Checkpoint, use_ema: bool = True,
                   ema: float | str | None = None) -> tuple[str, dict[str, torch.Tensor]]:
    """``(label, weights)``: the EMA with decay ``ema`` when given (it must be kept: see :func:`kept_ema_key`),
    else the recipe's first EMA if kept and wanted ('ema-0.999'), else the raw weights ('raw')."""
    if ema is not None:
        if not use_ema:
            raise ValueError("choose one set of weights, an EMA (--ema DECAY) or the raw weights (--no-ema, --raw), "
                             "not both")
        key = kept_ema_key(checkpoint, ema)
        return f"ema-{key}", checkpoint.ema[key]
    if use_ema and checkpoint.ema:
        recipe = recipe_from_checkpoint(checkpoint)
        key = decay_key(recipe.train.ema_decays[0]) if recipe.train.ema_decays else next(iter(checkpoint.ema))
        if key not in checkpoint.ema:
            key = next(iter(checkpoint.ema))
        return f"ema-{key}", checkpoint.ema[key]
    return "raw", checkpoint.model


def weights_tag(label: str, chosen: bool) -> str:
    """The short name of a weights label in file and folder names: 'ema' or 'raw'; 'ema0.9995' for an EMA
    chosen by decay (so it never shares a name with the default EMA's files)."""
    return label.replace("-", "") if chosen else label.split("-")[0]


def ema_weights(checkpoint: Checkpoint, use_ema: bool = True) -> dict[str, torch.Tensor]:
    """The weights to sample with (see :func:`select_weights`)."""
    return select_weights(checkpoint, use_ema)[1]
