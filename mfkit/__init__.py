"""mfkit: one-step generative modeling with MeanFlow.

Public API (the core knows only tensors of shape (batch, ...)):

- objectives: :class:`MeanFlow`, :class:`FlowMatching`, :func:`meanflow_target`, :class:`Guidance`
- JVPs: :func:`jvp` with backends ``JVP_BACKENDS``; :class:`FastTangents` for any backbone
- samplers: :func:`sample` (MeanFlow), :func:`euler_sample` (flow-matching baseline), :func:`time_grid`,
  :func:`guided_model` (classifier-free guidance at sampling time)
- times: :class:`TimePairSampler`, :class:`LogitNormal`, :class:`Uniform`, :func:`cifar10_v1_sampler`
- exported models: :func:`load_exported` (files written by ``mfkit export``)
- building blocks: :mod:`mfkit.nn` (embeddings, MLP backbone)

Names are imported on first use (PEP 562), so ``import mfkit`` and the light CLI commands
(``mfkit --help``, ``mfkit recipes``) do not pay for importing torch. To add a public name, add it
to ``_EXPORTS``, ``__all__`` and the ``TYPE_CHECKING`` block (for type checkers); a test keeps them agreed.
"""
from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: oneDNN (PyTorch's CPU convolutions) keeps 1024 compiled primitives by default, one per layer, pass and
#: input shape. ``jvp_rows: auto`` splits each batch at a random count of r != t rows, so a U-Net sees
#: dozens of batch sizes; past 1024 primitives the cache thrashes and every convolution is compiled again
#: (the 8x8 digits U-Net: 62 ms a step over mixed batch sizes against 39 ms at one size; 43 ms with this
#: capacity). Read when oneDNN first builds its cache, so it is set here, on import; a value the user set wins.
ONEDNN_PRIMITIVE_CACHE_CAPACITY = "8192"
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", ONEDNN_PRIMITIVE_CACHE_CAPACITY)

#: Public name -> the module that defines it.
_EXPORTS = {
    "expand_like": "mfkit.core.broadcast", "sum_non_batch": "mfkit.core.broadcast",
    "JVP_BACKENDS": "mfkit.core.jvp", "jvp": "mfkit.core.jvp",
    "align_sets": "mfkit.core.coupling", "ot_permutation": "mfkit.core.coupling", "set_ot_order": "mfkit.core.coupling",
    "AlphaCurriculum": "mfkit.core.objectives", "Draw": "mfkit.core.objectives", "FlowMatching": "mfkit.core.objectives", "Guidance": "mfkit.core.objectives",
    "IntervalWeighting": "mfkit.core.objectives",
    "MeanFlow": "mfkit.core.objectives", "ObjectiveOutput": "mfkit.core.objectives",
    "adaptive_weight": "mfkit.core.objectives", "guided_velocity": "mfkit.core.objectives",
    "meanflow_target": "mfkit.core.objectives",
    "conditional_velocity": "mfkit.core.path", "interpolate": "mfkit.core.path",
    "SamplerStep": "mfkit.core.sampling", "euler_sample": "mfkit.core.sampling", "guided_model": "mfkit.core.sampling",
    "sample": "mfkit.core.sampling",
    "time_grid": "mfkit.core.sampling",
    "FastTangents": "mfkit.core.tangent_rules",
    "LogitNormal": "mfkit.core.time_sampling", "TimePairSampler": "mfkit.core.time_sampling",
    "Uniform": "mfkit.core.time_sampling", "cifar10_v1_sampler": "mfkit.core.time_sampling",
    "Exported": "mfkit.export", "load_exported": "mfkit.export",
}

__all__ = [
    "AlphaCurriculum", "Draw", "Exported", "FastTangents", "FlowMatching", "Guidance", "IntervalWeighting", "JVP_BACKENDS",
    "LogitNormal", "MeanFlow",
    "ObjectiveOutput", "SamplerStep", "TimePairSampler", "Uniform", "adaptive_weight", "align_sets", "cifar10_v1_sampler",
    "conditional_velocity", "euler_sample", "expand_like", "guided_model", "guided_velocity", "interpolate", "jvp",
    "load_exported", "meanflow_target", "ot_permutation", "sample", "set_ot_order", "sum_non_batch", "time_grid",
    "__version__",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mfkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:
    from mfkit.core.broadcast import expand_like, sum_non_batch
    from mfkit.core.coupling import align_sets, ot_permutation, set_ot_order
    from mfkit.core.jvp import JVP_BACKENDS, jvp
    from mfkit.core.objectives import (
        AlphaCurriculum, Draw, FlowMatching, Guidance, IntervalWeighting, MeanFlow, ObjectiveOutput, adaptive_weight,
        guided_velocity, meanflow_target,
    )
    from mfkit.core.path import conditional_velocity, interpolate
    from mfkit.core.sampling import SamplerStep, euler_sample, guided_model, sample, time_grid
    from mfkit.core.tangent_rules import FastTangents
    from mfkit.core.time_sampling import LogitNormal, TimePairSampler, Uniform, cifar10_v1_sampler
    from mfkit.export import Exported, load_exported
