"""Training the MLP backbone on toy data: the error falls and one MeanFlow step beats one FM step."""
import torch

import mfkit
from mfkit.data.toy2d import toy_sample
from mfkit.metrics import sliced_wasserstein
from mfkit.nn import MLPBackbone
from mfkit.testing import GaussianOracle
from mfkit.testing.toy import train_toy


def oracle_error(model, oracle, n=2000):
    """Mean squared distance of u_theta from the exact average velocity, on points of the path."""
    g = torch.Generator().manual_seed(0)
    x = oracle.mean.float() + oracle.std.float() * torch.randn(n, 2, generator=g)
    a, b = torch.rand(n, generator=g), torch.rand(n, generator=g)
    t, r = torch.maximum(a, b), torch.minimum(a, b)
    z = mfkit.interpolate(x, torch.randn(n, 2, generator=g), t)
    with torch.no_grad():
        return ((model(z, r, t) - oracle(z.double(), r.double(), t.double()).float()) ** 2).mean().item()


def test_training_lowers_the_error_on_gaussian_data():
    oracle = GaussianOracle(torch.tensor([1.0, -0.5]), torch.tensor([0.5, 1.0]))  # the "gaussian" toy set
    torch.manual_seed(0)
    untrained = oracle_error(MLPBackbone(2, width=128, depth=3), oracle)
    run = train_toy(mfkit.MeanFlow(), "gaussian", steps=300)
    assert sum(run.mse[-30:]) < 0.95 * sum(run.mse[:30])
    assert oracle_error(run.model, oracle) < 0.35 * untrained


def test_one_meanflow_step_beats_one_flow_matching_step():
    meanflow = train_toy(mfkit.MeanFlow(), "eight_gaussians", steps=300)
    flow_matching = train_toy(mfkit.FlowMatching(), "eight_gaussians", steps=300)
    g = torch.Generator().manual_seed(123)
    data, noise = toy_sample("eight_gaussians", 2000, g), torch.randn(2000, 2, generator=g)
    distance = lambda s: sliced_wasserstein(s, data, generator=torch.Generator().manual_seed(0))
    mf_one = distance(mfkit.sample(meanflow.model, noise, steps=1))
    fm_one = distance(mfkit.euler_sample(flow_matching.model, noise, steps=1))
    assert mf_one < 0.4 < fm_one and mf_one < 0.4 * fm_one, (mf_one, fm_one)
