"""Properties of the point backbones beyond the contract: permutation equivariance and clouds that
never see each other (pooling and attention run within one cloud only)."""
from __future__ import annotations

import pytest
import torch

from mfkit.plugins import ClassCondition, DataInfo
from mfkit_points.nets.point_set import PointSetNet, PointSetParams
from mfkit_points.nets.point_transformer import PointTransformer, PointTransformerParams

INFO = DataInfo((40, 3), 3, ClassCondition(["a", "b", "c"]))
NETS = {
    "point_set": lambda: PointSetNet(PointSetParams(width=32, hidden=48, depth=2), INFO),
    "point_transformer": lambda: PointTransformer(PointTransformerParams(width=32, depth=2, heads=4), INFO),
}


def _randomised(model: torch.nn.Module) -> torch.nn.Module:
    """Non-zero adaLN gates, so every block acts (they start at zero)."""
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    return model.eval()


@pytest.mark.parametrize("name", NETS)
def test_permuting_the_points_permutes_the_output(name):
    model = _randomised(NETS[name]())
    z, r, t, label = torch.randn(2, 40, 3), torch.tensor([0.1, 0.0]), torch.tensor([0.7, 1.0]), torch.tensor([0, 2])
    order = torch.randperm(40)
    with torch.no_grad():
        assert torch.allclose(model(z[:, order], r, t, label), model(z, r, t, label)[:, order], atol=1e-5)


@pytest.mark.parametrize("name", NETS)
def test_a_cloud_does_not_see_the_other_clouds_of_the_batch(name):
    model = _randomised(NETS[name]())
    z, r, t, label = torch.randn(3, 40, 3), torch.zeros(3), torch.ones(3), torch.tensor([0, 1, 2])
    with torch.no_grad():
        alone = model(z[1:2], r[1:2], t[1:2], label[1:2])
        changed = z.clone()
        changed[0] += 5.0
        assert torch.allclose(model(changed, r, t, label)[1:2], alone, atol=1e-5)


@pytest.mark.parametrize("name", NETS)
def test_the_output_depends_on_the_other_points_of_the_cloud(name):
    """Global context flows within a cloud: moving some points changes the velocity of the others."""
    model = _randomised(NETS[name]())
    z, r, t = torch.randn(1, 40, 3), torch.zeros(1), torch.ones(1)
    moved = z.clone()
    moved[0, :10] += 2.0
    with torch.no_grad():
        label = torch.tensor([1])
        assert not torch.allclose(model(z, r, t, label)[0, 10:], model(moved, r, t, label)[0, 10:])


@pytest.mark.parametrize("name", NETS)
def test_any_number_of_points(name):
    model = _randomised(NETS[name]())
    with torch.no_grad():
        assert model(torch.randn(2, 17, 3), torch.zeros(2), torch.ones(2), torch.tensor([0, 3])).shape == (2, 17, 3)
