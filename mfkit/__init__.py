"""mfkit: one-step generative modeling with MeanFlow.

Public API (the core knows only tensors of shape (batch, ...)):

- objectives: :class:`MeanFlow`, :class:`FlowMatching`, :func:`meanflow_target`, :class:`Guidance`
- JVPs: :func:`jvp` with backends ``JVP_BACKENDS``; :class:`FastTangents` for any backbone
- samplers: :func:`sample` (MeanFlow), :func:`euler_sample` (flow-matching baseline), :func:`time_grid`
- times: :class:`TimePairSampler`, :class:`LogitNormal`, :class:`Uniform`, :func:`cifar10_v1_sampler`
- building blocks: :mod:`mfkit.nn` (embeddings, MLP backbone)
"""
from mfkit.core.broadcast import expand_like, sum_non_batch
from mfkit.core.jvp import JVP_BACKENDS, jvp
from mfkit.core.objectives import (
    Draw,
    FlowMatching,
    Guidance,
    MeanFlow,
    ObjectiveOutput,
    adaptive_weight,
    guided_velocity,
    meanflow_target,
)
from mfkit.core.path import conditional_velocity, interpolate
from mfkit.core.sampling import SamplerStep, euler_sample, sample, time_grid
from mfkit.core.tangent_rules import FastTangents
from mfkit.core.time_sampling import LogitNormal, TimePairSampler, Uniform, cifar10_v1_sampler

__version__ = "0.1.0"

__all__ = [
    "Draw", "FastTangents", "FlowMatching", "Guidance", "JVP_BACKENDS", "LogitNormal", "MeanFlow", "ObjectiveOutput",
    "SamplerStep", "TimePairSampler", "Uniform", "adaptive_weight", "cifar10_v1_sampler",
    "conditional_velocity", "euler_sample", "expand_like", "guided_velocity", "interpolate", "jvp",
    "meanflow_target", "sample", "sum_non_batch", "time_grid", "__version__",
]
