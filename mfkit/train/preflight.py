"""Checks that run before a long training (and in `mfkit validate`): one real batch, one forward, one JVP.

A backbone with the wrong output shape (even one that broadcasts, such as (B, 1, C) for (B, N, C)),
a data set whose batches cannot be read, a missing condition embedding or a JVP that fails would
otherwise show up minutes or hours later, or never (a broadcast loss trains silently). Each failure is
a :class:`PreflightError` naming the plugin and what it returned.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from mfkit.core.broadcast import broadcasts_to
from mfkit.core.conditions import move_condition
from mfkit.plugins.spec import Modality


class PreflightError(ValueError):
    """A plugin fails on a real batch before training starts."""


def first_batch(modality: Modality, dataset: Dataset, count: int = 2) -> tuple[torch.Tensor, Any]:
    """``count`` items of ``dataset`` as a batch through the modality's collate and unpack."""
    collate = modality.collate()
    loader = DataLoader(dataset, batch_size=min(count, len(dataset)), shuffle=False,
                        **({"collate_fn": collate} if collate else {}))
    return modality.unpack(next(iter(loader)))


def preflight(modality: Modality, dataset: Dataset, model: nn.Module, objective: Any, *, modality_name: str,
              backbone_name: str, device: torch.device | str = "cpu") -> None:
    """Read a real batch, run the backbone once and the objective (with its JVP) once; raise PreflightError."""
    if len(dataset) == 0:
        raise PreflightError(f"modality {modality_name!r}: its training data set is empty")
    try:
        x, cond = first_batch(modality, dataset)
    except Exception as error:  # noqa: BLE001 - any failure here is the plugin's
        raise PreflightError(f"modality {modality_name!r}: a batch of its data set cannot be read "
                             f"({type(error).__name__}: {error})") from error
    if not isinstance(x, torch.Tensor):
        raise PreflightError(f"modality {modality_name!r}: a batch's data is a {type(x).__name__}, not a tensor")
    if tuple(x.shape[1:]) != tuple(modality.sample_shape):
        raise PreflightError(f"modality {modality_name!r}: its items have shape {tuple(x.shape[1:])} but it declares "
                             f"sample_shape {tuple(modality.sample_shape)}")
    x, cond = x.to(device).float(), move_condition(cond, device)
    r = torch.zeros(x.shape[0], device=device)
    t = torch.full((x.shape[0],), 0.5, device=device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            u = model(x, r, t, cond=cond)
    except Exception as error:  # noqa: BLE001
        raise PreflightError(f"backbone {backbone_name!r} fails on a real batch of modality {modality_name!r} "
                             f"(z of shape {tuple(x.shape)}): {type(error).__name__}: {error}") from error
    finally:
        model.train(was_training)
    if not isinstance(u, torch.Tensor) or u.shape != x.shape:
        got = tuple(u.shape) if isinstance(u, torch.Tensor) else type(u).__name__
        broadcast = ""
        if isinstance(u, torch.Tensor) and broadcasts_to(u.shape, x.shape):
            broadcast = " (it broadcasts against z, so the loss would silently train the wrong thing)"
        raise PreflightError(f"backbone {backbone_name!r} returned {got} for z of shape {tuple(x.shape)}: it must "
                             f"return z's shape{broadcast}")
    try:
        # progress 1: the end of any alpha curriculum, where the JVP (what can fail) is taken
        out = objective(model, x, cond, generator=torch.Generator(device).manual_seed(0), progress=1.0)
    except ValueError:
        raise
    except Exception as error:  # noqa: BLE001
        raise PreflightError(f"the training objective fails on a real batch (backbone {backbone_name!r}, modality "
                             f"{modality_name!r}): {type(error).__name__}: {error}") from error
    if not bool(torch.isfinite(out.loss)):
        raise PreflightError(f"the loss on a real batch is not finite (backbone {backbone_name!r}, modality "
                             f"{modality_name!r}); check the data for NaN and the backbone's null condition")
