"""Samplers: call counts, grids, callbacks, no hidden state."""
import pytest
import torch

import mfkit


class Recorder(torch.nn.Module):
    """u = constant c; records every (r, t) it is called with."""

    def __init__(self, c=1.0):
        super().__init__()
        self.c, self.calls = c, []

    def forward(self, z, r, t, cond=None):
        self.calls.append((r[0].item(), t[0].item(), cond))
        return torch.full_like(z, self.c)


@pytest.mark.parametrize("steps", [1, 2, 3, 5, 8])
def test_one_call_per_step_and_the_whole_interval_covered(steps):
    model = Recorder()
    noise = torch.zeros(4, 3)
    x = mfkit.sample(model, noise, steps=steps)
    assert len(model.calls) == steps
    assert model.calls[0][1] == 1.0 and model.calls[-1][0] == 0.0
    for (r_prev, _, _), (_, t_next, _) in zip(model.calls, model.calls[1:]):
        assert r_prev == pytest.approx(t_next)
    torch.testing.assert_close(x, torch.full_like(noise, -1.0))  # constant u: z_0 = e - 1 * c


def test_custom_grid_and_partial_interval():
    model = Recorder()
    x = mfkit.sample(model, torch.zeros(2, 2), grid=[1.0, 0.6, 0.5])
    assert [(round(r, 6), round(t, 6)) for r, t, _ in model.calls] == [(0.6, 1.0), (0.5, 0.6)]
    torch.testing.assert_close(x, torch.full((2, 2), -0.5))


@pytest.mark.parametrize("bad", [[1.0], [0.0, 1.0], [1.0, 1.0, 0.0], [1.5, 0.0], [1.0, -0.1]])
def test_bad_grids_are_rejected(bad):
    with pytest.raises(ValueError, match="grid"):
        mfkit.sample(Recorder(), torch.zeros(1, 1), grid=bad)


def test_steps_must_be_positive():
    with pytest.raises(ValueError, match="steps"):
        mfkit.sample(Recorder(), torch.zeros(1, 1), steps=0)


def test_euler_uses_instantaneous_velocity():
    model = Recorder()
    mfkit.euler_sample(model, torch.zeros(2, 2), steps=3)
    assert all(r == t for r, t, _ in model.calls)


def test_callback_sees_every_step_and_condition_passes_through():
    model = Recorder()
    steps_seen = []
    cond = torch.tensor([1, 2])
    mfkit.sample(model, torch.zeros(2, 2), steps=3, cond=cond, callback=steps_seen.append)
    assert [s.index for s in steps_seen] == [0, 1, 2]
    torch.testing.assert_close(steps_seen[-1].z_r, torch.full((2, 2), -1.0))
    assert all(c is cond for _, _, c in model.calls)


def test_sampler_is_stateless_and_runs_without_grad():
    model = torch.nn.Linear(3, 3)
    wrapped = lambda z, r, t, cond=None: model(z) * t[:, None]
    noise = torch.randn(4, 3)
    a = mfkit.sample(wrapped, noise, steps=3)
    b = mfkit.sample(wrapped, noise, steps=3)
    assert torch.equal(a, b) and not a.requires_grad


def test_time_grid():
    torch.testing.assert_close(mfkit.time_grid(2), torch.tensor([1.0, 0.5, 0.0], dtype=torch.float64))


class LabelLinear(torch.nn.Module):
    """u(z, r, t | c) = a_c z + b_c t + r: a different field per label (3 labels and the null label 3),
    recording the labels of every call."""

    def __init__(self):
        super().__init__()
        self.a = torch.tensor([0.5, -1.0, 2.0, 0.25])
        self.b = torch.tensor([1.0, 3.0, -2.0, 0.5])
        self.labels = []

    def forward(self, z, r, t, cond=None):
        self.labels.append(cond.tolist())
        shape = (-1,) + (1,) * (z.dim() - 1)
        return self.a[cond].view(shape) * z + (self.b[cond] * t + r).view(shape)


@pytest.mark.parametrize("sampler", ["sample", "euler_sample"])
@pytest.mark.parametrize("shape", [(6, 2), (6, 2, 3)])
@pytest.mark.parametrize("scale", [0.0, 1.5, 3.0])
def test_guided_model_steps_with_the_guided_combination(sampler, shape, scale):
    """Each step uses u_null + s (u_c - u_null) (two calls: the labels, then the null label), checked against
    the same walk written out by hand."""
    from mfkit.core.conditions import LabelConditions

    model, noise = LabelLinear(), torch.randn(shape, generator=torch.Generator().manual_seed(0))
    cond = torch.tensor([0, 1, 2, 0, 1, 2])
    guided = mfkit.guided_model(model, scale, LabelConditions(3))
    x = getattr(mfkit, sampler)(guided, noise, steps=3, cond=cond)
    assert model.labels == [cond.tolist(), [3] * 6] * 3
    z, grid = noise, mfkit.time_grid(3)
    for t, r in zip(grid[:-1].tolist(), grid[1:].tolist()):
        t_vec, r_vec = torch.full((6,), t), torch.full((6,), t if sampler == "euler_sample" else r)
        u_c, u_null = model(z, r_vec, t_vec, cond), model(z, r_vec, t_vec, torch.full_like(cond, 3))
        z = z - (t - r) * (u_null + scale * (u_c - u_null))
    torch.testing.assert_close(x, z)


def test_guided_model_at_scale_one_is_the_model_and_needs_conditions():
    from mfkit.core.conditions import LabelConditions

    model = LabelLinear()
    assert mfkit.guided_model(model, 1.0, LabelConditions(3)) is model
    with pytest.raises(ValueError, match="needs conditions"):
        mfkit.sample(mfkit.guided_model(model, 2.0, LabelConditions(3)), torch.zeros(2, 2))


def test_guided_model_nulls_vector_conditions_with_their_own_null():
    """A vector condition (B, 2) whose null is NaN: the null call sees NaN rows, and the combination holds."""
    from mfkit.core.conditions import TensorConditions

    seen = []

    def model(z, r, t, cond=None):
        seen.append(cond.clone())
        known = torch.nan_to_num(cond, nan=-3.0)
        return z * known[:, :1] + known[:, 1:]

    cond, z = torch.tensor([[1.0, 2.0], [0.5, -1.0]]), torch.randn(2, 1)
    guided = mfkit.guided_model(model, 2.5, TensorConditions(torch.full((2,), float("nan"))))
    out = guided(z, torch.zeros(2), torch.ones(2), cond)
    assert torch.equal(seen[0], cond) and bool(seen[1].isnan().all())
    u_c, u_null = z * cond[:, :1] + cond[:, 1:], z * -3.0 - 3.0
    torch.testing.assert_close(out, u_null + 2.5 * (u_c - u_null))
