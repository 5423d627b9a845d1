"""Sample-quality distances: zero on identical sets, growing with a shift."""
import torch

from mfkit.data.toy2d import TOY_DISTRIBUTIONS, toy_sample, toy_sample_labeled
from mfkit.metrics import mmd_rbf, sliced_wasserstein


def test_distances_grow_with_a_shift():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(2000, 2, generator=g)
    assert sliced_wasserstein(a, a) < 1e-9 and abs(mmd_rbf(a, a)) < 1e-9
    near = [sliced_wasserstein(a, a + shift, generator=torch.Generator().manual_seed(1)) for shift in (0.1, 0.5, 1.0)]
    assert near[0] < near[1] < near[2]
    # Shifting every point by d = (s, s): each projection moves by d . theta, and the mean of
    # (d . theta)^2 over unit directions in 2-D is |d|^2 / 2 = s^2, so the distance is about s.
    assert abs(near[2] - 1.0) < 0.05
    assert mmd_rbf(a, a + 0.1) < mmd_rbf(a, a + 1.0)


def test_toy_distributions_are_seeded_and_labelled():
    for name in TOY_DISTRIBUTIONS:
        x1 = toy_sample(name, 100, torch.Generator().manual_seed(3))
        x2, labels = toy_sample_labeled(name, 100, torch.Generator().manual_seed(3))
        assert torch.equal(x1, x2) and x1.shape == (100, 2) and labels.shape == (100,)
        assert x1.abs().max() < 6
