"""The ``mlp`` backbone: :class:`mfkit.nn.MLPBackbone` for data of any shape (flattened)."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from mfkit.nn import MLPBackbone
from mfkit.plugins.spec import BackboneSpec, DataInfo, PluginContext, VectorCondition


class MLPParams(BaseModel):
    """Parameters of the mlp backbone."""

    model_config = ConfigDict(extra="forbid")
    width: int = Field(256, gt=0, description="hidden width")
    depth: int = Field(4, ge=0, description="number of residual blocks")
    time_inputs: Literal["t,t-r", "t,r", "t,r,t-r"] = Field("t,t-r", description="which times the network sees")
    norm: bool = Field(True, description="LayerNorm in each residual block")


def build(params: MLPParams, info: DataInfo, context: PluginContext) -> MLPBackbone:
    vector_dim = info.condition.dim if isinstance(info.condition, VectorCondition) else None
    return MLPBackbone(info.sample_shape, params.width, params.depth, info.num_classes, params.time_inputs, params.norm,
                       vector_dim=vector_dim)


SPEC = BackboneSpec(
    name="mlp",
    description="Residual MLP over the flattened sample, (t, t - r) embeddings, class or vector condition embedding",
    factory=build,
    params_model=MLPParams,
)
