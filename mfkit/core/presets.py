"""Settings by data scale: the objective's knobs and the optimisation that goes with them.

Sources: Geng et al. 2025 (ImageNet 256 latent, DiT; Table 4 of the paper) and the official PyTorch
port's CIFAR-10 script (U-Net, "v1" time sampler; 8 GPUs x 128 = batch 1024, warm-up of 200 epochs of
50,000 images, i.e. about 9,800 steps). ``small`` is mfkit's own, for small data and small budgets
(thousands of steps on a CPU): derived from the sweep on the 2-D peer benchmark and the digits recipe in
docs/benchmarks.md ("Objective options on the peer benchmark"); its minibatch optimal-transport
coupling, in blocks of 64 rows, is what moved one step ahead of every peer there. The objective part
builds :class:`mfkit.MeanFlow` (``MeanFlow.preset``); the training part is what a recipe's ``train``
section takes from ``objective.preset`` wherever the recipe leaves a field unset.
"""
from __future__ import annotations

import copy
from typing import Any

from mfkit.core.time_sampling import LogitNormal, TimePairSampler


#: The objective part of each preset, named as the recipe's ``objective`` fields (the same numbers
#: build :class:`mfkit.MeanFlow` through :func:`objective_settings`).
OBJECTIVE: dict[str, dict[str, Any]] = {
    "imagenet": {"time_sampler": {"kind": "logit_normal", "mean": -0.4, "std": 1.0}, "r_sampler": None,
                 "r_neq_t_share": 0.25, "time_pair_order": "sort", "adaptive_p": 1.0, "adaptive_c": 1e-2},
    "cifar10": {"time_sampler": {"kind": "logit_normal", "mean": -0.6, "std": 1.6},
                "r_sampler": {"kind": "logit_normal", "mean": -4.0, "std": 1.6},
                "r_neq_t_share": 0.75, "time_pair_order": "clip", "adaptive_p": 0.75, "adaptive_c": 1e-3},
    "small": {"time_sampler": {"kind": "logit_normal", "mean": 0.0, "std": 1.0}, "r_sampler": None,
              "r_neq_t_share": 0.5, "time_pair_order": "sort", "adaptive_p": 0.5, "adaptive_c": 1e-2,
              "coupling": "ot", "coupling_block": 64},
}

#: Objective fields a preset may set beyond the time pairs and the adaptive weight, passed to
#: :class:`mfkit.MeanFlow` under the same names.
EXTRA_FIELDS = ("coupling", "coupling_block")


def objective_settings(name: str) -> dict[str, Any]:
    """Keyword arguments of :class:`mfkit.MeanFlow` for the preset ``name``."""
    fields = _lookup(OBJECTIVE, name)
    t, r = fields["time_sampler"], fields["r_sampler"]
    times = TimePairSampler(LogitNormal(t["mean"], t["std"]), LogitNormal(r["mean"], r["std"]) if r else None,
                            fields["r_neq_t_share"], order=fields["time_pair_order"])
    return {"times": times, "adaptive_p": fields["adaptive_p"], "adaptive_c": fields["adaptive_c"],
            **{key: fields[key] for key in EXTRA_FIELDS if key in fields}}


def recipe_objective_fields(name: str) -> dict[str, Any]:
    """The ``objective`` fields of the preset ``name`` (a fresh copy)."""
    return copy.deepcopy(_lookup(OBJECTIVE, name))


#: Optimisation settings of each preset, named as the recipe's ``train`` fields. Gradient clipping is
#: off in both (the paper clips nothing); the first EMA decay is the one samples are drawn with.
TRAINING: dict[str, dict[str, Any]] = {
    "imagenet": {"optimizer": "adam", "lr": 1e-4, "betas": (0.9, 0.95), "weight_decay": 0.0, "batch_size": 256,
                 "warmup_steps": 0, "lr_schedule": "constant", "grad_clip": None, "ema_decays": [0.9999]},
    "cifar10": {"optimizer": "adam", "lr": 6e-4, "betas": (0.9, 0.999), "weight_decay": 0.0, "batch_size": 1024,
                "warmup_steps": 9800, "lr_schedule": "constant", "grad_clip": None,
                "ema_decays": [0.9999, 0.99995, 0.9996]},
    "small": {"optimizer": "adam", "lr": 1e-3, "betas": (0.9, 0.999), "weight_decay": 0.0, "batch_size": 256,
              "warmup_steps": 0, "lr_schedule": "cosine", "grad_clip": None, "ema_decays": [0.995, 0.999]},
}

PRESET_NAMES = tuple(TRAINING)


def training_settings(name: str) -> dict[str, Any]:
    """The ``train`` fields of the preset ``name`` (a fresh copy)."""
    return copy.deepcopy(_lookup(TRAINING, name))


def _lookup(table: dict[str, dict[str, Any]], name: str) -> dict[str, Any]:
    if name not in table:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(table)}")
    return table[name]
