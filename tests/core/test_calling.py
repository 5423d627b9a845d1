"""How the core calls a backbone (mfkit.core.calling)."""
import torch
from torch import nn

from mfkit.core.calling import call_model, walk_modules


class WithCond(nn.Module):
    def forward(self, z, r, t, cond=None):
        return z + (0 if cond is None else cond)


class WithoutCond(nn.Module):
    def forward(self, z, r, t):
        return z * 2


def test_cond_is_passed_only_to_backbones_that_take_it():
    z, r, t = torch.ones(2, 3), torch.zeros(2), torch.ones(2)
    for _ in range(2):  # the second call reads the remembered answer for the class
        assert torch.equal(call_model(WithCond(), z, r, t), z)
        assert torch.equal(call_model(WithoutCond(), z, r, t), 2 * z)
    assert torch.equal(call_model(lambda z, r, t: -z, z, r, t), -z)
    assert torch.equal(call_model(lambda z, r, t, **kw: kw["cond"], z, r, t, cond=z), z)
    patched = WithCond()
    patched.forward = lambda z, r, t: 3 * z  # an instance's own forward is read, not its class's
    assert torch.equal(call_model(patched, z, r, t), 3 * z)


def test_walk_modules_is_modules_without_names():
    shared = nn.Linear(2, 2)
    model = nn.Sequential(nn.Sequential(shared, nn.ReLU()), shared, nn.ModuleList([nn.Tanh(), nn.Identity()]))
    assert walk_modules(model) == list(model.modules())


def test_a_class_forward_replaced_later_is_read_again():
    class Later(nn.Module):
        def forward(self, z, r, t):
            return z

    z, r, t = torch.ones(2, 3), torch.zeros(2), torch.ones(2)
    assert torch.equal(call_model(Later(), z, r, t, cond=None), z)
    Later.forward = lambda self, z, r, t, cond=None: z + 1
    assert torch.equal(call_model(Later(), z, r, t, cond=None), z + 1)
