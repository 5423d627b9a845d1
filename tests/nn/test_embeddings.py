"""Embeddings and the MLP backbone: formulas, the (t, t - r) convention, the null label, shapes."""
import math

import pytest
import torch

from mfkit.nn import ConditionEmbedding, MLPBackbone, SinusoidalEmbedding, TimePairEmbedding


def test_sinusoid_matches_its_formula_on_raw_t():
    embed = SinusoidalEmbedding(8)
    t = torch.tensor([0.0, 0.25, 1.0])
    freqs = torch.tensor([10_000 ** (-k / 4) for k in range(4)])
    expected = torch.cat([torch.cos(t[:, None] * freqs), torch.sin(t[:, None] * freqs)], dim=1)
    torch.testing.assert_close(embed(t), expected)
    torch.testing.assert_close(SinusoidalEmbedding(8, scale=1000.0)(t), embed(1000.0 * t))
    with pytest.raises(ValueError, match="even"):
        SinusoidalEmbedding(7)


@pytest.mark.parametrize("inputs, uses", [("t,t-r", ("t", "t-r")), ("t,r", ("t", "r")), ("t,r,t-r", ("t", "r", "t-r"))])
def test_time_pair_embedding_sums_one_embedding_per_input(inputs, uses):
    torch.manual_seed(0)
    embed = TimePairEmbedding(16, inputs, frequency_dim=8)
    r, t = torch.tensor([0.1, 0.3]), torch.tensor([0.5, 0.9])
    values = {"t": t, "r": r, "t-r": t - r}
    expected = sum(e(values[name]) for name, e in zip(uses, embed.embeddings))
    torch.testing.assert_close(embed(r, t), expected)
    with pytest.raises(ValueError, match="unknown time inputs"):
        TimePairEmbedding(16, "r,t")


def test_condition_embedding_has_a_null_entry():
    embed = ConditionEmbedding(3, 4)
    assert embed.null_label == 3
    none = embed(None, 2, torch.device("cpu"))
    torch.testing.assert_close(none, embed(torch.tensor([3, 3]), 2, torch.device("cpu")))


@pytest.mark.parametrize("shape", [(5,), (2, 3), (2, 2, 2), (1, 2, 1, 3)])
def test_mlp_backbone_keeps_the_data_shape(shape):
    model = MLPBackbone(shape, width=16, depth=2, num_classes=4)
    z = torch.randn(3, *shape)
    u = model(z, torch.zeros(3), torch.ones(3), cond=torch.tensor([0, 1, 4]))
    assert u.shape == z.shape and model.null_label == 4
    assert math.prod(shape) == model.inp.in_features
