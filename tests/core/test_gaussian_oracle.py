"""The MeanFlow identity against the exact average velocity of Gaussian data."""
import pytest
import torch

import mfkit
from mfkit.testing import GaussianOracle

SHAPES = [(3,), (2, 3), (2, 2, 3), (1, 2, 2, 2)]


def oracle_for(shape):
    g = torch.Generator().manual_seed(1)
    return GaussianOracle(torch.randn(shape, generator=g), 0.3 + torch.rand(shape, generator=g))


def random_point(shape, n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    a, b = torch.rand(n, generator=g, dtype=torch.float64), torch.rand(n, generator=g, dtype=torch.float64)
    t, r = torch.maximum(a, b), torch.minimum(a, b)
    z = 2 * torch.randn(n, *shape, generator=g, dtype=torch.float64)
    return z, r, t


def test_oracle_average_velocity_integrates_its_instantaneous_velocity():
    oracle = oracle_for((3,))
    z_t, r, t = random_point((3,), n=8)
    # Integrate dz/ds = v(z, s) from t down to r with many small RK4 steps.
    z, s, steps = z_t.clone(), t.clone(), 400
    h = (t - r) / steps
    for _ in range(steps):
        hs = h[:, None]
        k1 = oracle.velocity(z, s)
        k2 = oracle.velocity(z - 0.5 * hs * k1, s - 0.5 * h)
        k3 = oracle.velocity(z - 0.5 * hs * k2, s - 0.5 * h)
        k4 = oracle.velocity(z - hs * k3, s - h)
        z, s = z - hs * (k1 + 2 * k2 + 2 * k3 + k4) / 6, s - h
    torch.testing.assert_close(z, z_t - (t - r)[:, None] * oracle(z_t, r, t), atol=1e-8, rtol=1e-8)
    torch.testing.assert_close(oracle(z_t, t, t), oracle.velocity(z_t, t))


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"rank{len(s)}")
@pytest.mark.parametrize("backend", ["forward_ad", "forward_ad_plain", "nograd"])
def test_meanflow_target_equals_exact_average_velocity(shape, backend):
    oracle = oracle_for(shape)
    z, r, t = random_point(shape)
    v = oracle.velocity(z, t)
    target = mfkit.meanflow_target(oracle, z, r, t, v, backend=backend)
    torch.testing.assert_close(target.double(), oracle(z, r, t), atol=1e-5, rtol=1e-5)


def test_finite_difference_target_is_close_to_exact():
    oracle = oracle_for((3,))
    z, r, t = random_point((3,))
    v = oracle.velocity(z, t)
    target = mfkit.meanflow_target(oracle, z, r, t, v, backend="finite_difference", fd_step=1e-5)
    torch.testing.assert_close(target.double(), oracle(z, r, t), atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("tangent_r, tangent_t", [(0.0, 0.0), (1.0, 0.0), (1.0, 1.0)])
def test_wrong_tangent_breaks_the_identity(tangent_r, tangent_t):
    oracle = oracle_for((3,))
    z, r, t = random_point((3,))
    v = oracle.velocity(z, t)
    _, du = mfkit.jvp(oracle, z, r, t, (v, torch.full_like(r, tangent_r), torch.full_like(t, tangent_t)))
    wrong = v - (t - r)[:, None] * du
    error = (wrong - oracle(z, r, t)).abs().max()
    assert error > 1e-2, f"a wrong tangent ({tangent_r}, {tangent_t}) still matched the oracle"


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"rank{len(s)}")
def test_one_step_sampling_reproduces_the_data_distribution(shape):
    oracle = oracle_for(shape)
    noise = torch.randn(200_000, *shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    x = mfkit.sample(oracle, noise, steps=1)
    torch.testing.assert_close(x.mean(0), oracle.mean.expand(shape), atol=0.02, rtol=0)
    torch.testing.assert_close(x.std(0), oracle.std.expand(shape), atol=0.02, rtol=0)
    flat = (x - x.mean(0)).reshape(x.shape[0], -1)
    covariance = flat.T @ flat / flat.shape[0]
    off_diagonal = covariance - torch.diag(torch.diag(covariance))
    assert off_diagonal.abs().max() < 0.02


def test_exact_model_gives_same_sample_at_any_step_count():
    oracle = oracle_for((2, 3))
    noise = torch.randn(16, 2, 3, dtype=torch.float64)
    one = mfkit.sample(oracle, noise, steps=1)
    for steps in (2, 3, 7):
        torch.testing.assert_close(mfkit.sample(oracle, noise, steps=steps), one)
    # Euler with the instantaneous velocity only converges to it.
    errors = [(mfkit.euler_sample(oracle, noise, steps=n) - one).abs().max() for n in (1, 50, 200)]
    assert errors[0] > 10 * errors[1] > 30 * errors[2]
