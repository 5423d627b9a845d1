"""Building blocks shared by backbones: time and condition embeddings, the MLP backbone."""
from mfkit.nn.embeddings import (ConditionEmbedding, SinusoidalEmbedding, TimeEmbedding, TimePairEmbedding,
                                 VectorConditionEmbedding)
from mfkit.nn.mlp import MLPBackbone

__all__ = ["ConditionEmbedding", "MLPBackbone", "SinusoidalEmbedding", "TimeEmbedding", "TimePairEmbedding",
           "VectorConditionEmbedding"]
