"""The paper's settings by data set: the objective's knobs and the optimisation that goes with them.

Sources: Geng et al. 2025 (ImageNet 256 latent, DiT; Table 4 of the paper) and the official PyTorch
port's CIFAR-10 script (U-Net, "v1" time sampler; 8 GPUs x 128 = batch 1024, warm-up of 200 epochs of
50,000 images, i.e. about 9,800 steps). The objective part builds :class:`mfkit.MeanFlow`
(``MeanFlow.preset``); the training part is what a recipe's ``train`` section takes from
``objective.preset`` wherever the recipe leaves a field unset.
"""
from __future__ import annotations

from typing import Any

from mfkit.core.time_sampling import LogitNormal, TimePairSampler, cifar10_v1_sampler


def objective_settings(name: str) -> dict[str, Any]:
    """Keyword arguments of :class:`mfkit.MeanFlow` for the preset ``name``."""
    if name == "imagenet":
        return {"times": TimePairSampler(LogitNormal(-0.4, 1.0), r_neq_t_share=0.25), "adaptive_p": 1.0,
                "adaptive_c": 1e-2}
    if name == "cifar10":
        return {"times": cifar10_v1_sampler(0.75), "adaptive_p": 0.75, "adaptive_c": 1e-3}
    raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESET_NAMES)}")


#: Optimisation settings of each preset, named as the recipe's ``train`` fields. Gradient clipping is
#: off in both (the paper clips nothing); the first EMA decay is the one samples are drawn with.
TRAINING: dict[str, dict[str, Any]] = {
    "imagenet": {"optimizer": "adam", "lr": 1e-4, "betas": (0.9, 0.95), "weight_decay": 0.0, "batch_size": 256,
                 "warmup_steps": 0, "lr_schedule": "constant", "grad_clip": None, "ema_decays": [0.9999]},
    "cifar10": {"optimizer": "adam", "lr": 6e-4, "betas": (0.9, 0.999), "weight_decay": 0.0, "batch_size": 1024,
                "warmup_steps": 9800, "lr_schedule": "constant", "grad_clip": None,
                "ema_decays": [0.9999, 0.99995, 0.9996]},
}

PRESET_NAMES = tuple(TRAINING)


def training_settings(name: str) -> dict[str, Any]:
    """The ``train`` fields of the preset ``name`` (a fresh copy)."""
    if name not in TRAINING:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESET_NAMES)}")
    return {key: list(value) if isinstance(value, list) else value for key, value in TRAINING[name].items()}
