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


def select_weights(checkpoint: Checkpoint, use_ema: bool = True) -> tuple[str, dict[str, torch.Tensor]]:
    """``(label, weights)``: the recipe's first EMA ('ema-0.999') if kept and wanted, else the raw weights ('raw')."""
    if use_ema and checkpoint.ema:
        recipe = recipe_from_checkpoint(checkpoint)
        key = decay_key(recipe.train.ema_decays[0]) if recipe.train.ema_decays else next(iter(checkpoint.ema))
        if key not in checkpoint.ema:
            key = next(iter(checkpoint.ema))
        return f"ema-{key}", checkpoint.ema[key]
    return "raw", checkpoint.model


def ema_weights(checkpoint: Checkpoint, use_ema: bool = True) -> dict[str, torch.Tensor]:
    """The weights to sample with (see :func:`select_weights`)."""
    return select_weights(checkpoint, use_ema)[1]
