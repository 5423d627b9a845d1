"""mfkit.testing's contract checks pass on good plugins and catch broken ones."""
import pytest
from torch import nn

from mfkit.builtin.mlp import SPEC as MLP
from mfkit.builtin.toy2d import SPEC as TOY2D, Toy2d, Toy2dParams
from mfkit.nn import MLPBackbone
from mfkit.plugins import DataInfo
from mfkit.testing import ContractError, check_backbone, check_backbone_spec, check_modality, check_modality_spec


@pytest.mark.parametrize("shape, classes", [((2,), None), ((2, 3), 4), ((1, 2, 2, 2), None)])
def test_builtin_backbone_meets_the_contract(shape, classes):
    check_backbone_spec(MLP, DataInfo(shape, classes))


@pytest.mark.parametrize("conditional", [False, True])
def test_builtin_modality_meets_the_contract(tmp_path, conditional):
    check_modality_spec(TOY2D, tmp_path, {"size": 64, "conditional": conditional})
    assert (tmp_path / "samples.png").stat().st_size > 0


def test_wrong_output_shape_is_caught():
    class Flat(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = MLPBackbone(6, width=8, depth=1)

        def forward(self, z, r, t, cond=None):
            return self.inner(z.reshape(z.shape[0], -1), r, t)

    with pytest.raises(ContractError, match="output shape"):
        check_backbone(Flat(), (2, 3))


def test_batch_statistics_are_caught():
    class BatchNormed(MLPBackbone):
        def __init__(self):
            super().__init__(2, width=8, depth=1)
            self.bn = nn.GroupNorm(1, 1)

        def forward(self, z, r, t, cond=None):
            centred = z - z.mean(dim=0, keepdim=True)  # mixes samples, like batch statistics
            return super().forward(centred + z, r, t, cond)

    with pytest.raises(ContractError, match="changes with the rest of the batch"):
        check_backbone(BatchNormed(), (2,))


class Timeless(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 2)

    def forward(self, z, r, t, cond=None):
        return self.linear(z)


def test_time_independence_and_dead_parameters_are_caught():
    with pytest.raises(ContractError, match="does not depend on t"):
        check_backbone(Timeless(), (2,))

    class Dead(MLPBackbone):
        def __init__(self):
            super().__init__(2, width=8, depth=1)
            self.unused = nn.Linear(3, 3)

    with pytest.raises(ContractError, match="no gradient: unused"):
        check_backbone(Dead(), (2,))


def _zero_output_layer(model: nn.Module) -> nn.Module:
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return model


def test_a_zero_initialised_output_layer_passes():
    """adaLN-Zero and zero-init output layers make the output identically zero at step 0; the checks of
    what it depends on (t, other samples, the JVP) then run on a copy with those weights drawn at random."""
    model = _zero_output_layer(MLPBackbone(2, width=8, depth=1))
    check_backbone(model, (2,))
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    assert not last.weight.any() and not last.bias.any()  # the model itself is untouched


def test_a_zero_initialised_network_that_ignores_t_is_still_caught():
    with pytest.raises(ContractError, match="does not depend on t"):
        check_backbone(_zero_output_layer(Timeless()), (2,))


def test_broken_round_trip_and_missing_files_are_caught(tmp_path):
    class Lossy(Toy2d):
        def decode(self, tensor):
            return super().decode(tensor) * 2

    with pytest.raises(ContractError, match="does not give x back"):
        check_modality(Lossy(Toy2dParams(size=8)), tmp_path)

    class Liar(Toy2d):
        def save(self, samples, out_dir, cond=None):
            return [tmp_path / "nowhere.png"]

    with pytest.raises(ContractError, match="missing or empty"):
        check_modality(Liar(Toy2dParams(size=8)), tmp_path)


def test_jvp_check_accepts_a_large_time_scale():
    class Scaled(MLPBackbone):  # embeds t at a large scale: big, correct derivatives
        def forward(self, z, r, t, cond=None):
            return super().forward(z, r * 1000, t * 1000, cond)

    import torch
    torch.manual_seed(0)
    check_backbone(Scaled(2, width=16, depth=1), (2,))


def test_broadcastable_wrong_shape_is_named():
    class Pooled(nn.Module):  # (B, 1, C) for (B, N, C): broadcasts in the loss, learns the wrong thing
        def __init__(self):
            super().__init__()
            self.inner = MLPBackbone(3, width=8, depth=1)

        def forward(self, z, r, t, cond=None):
            return self.inner(z.mean(dim=1), r, t)[:, None]

    with pytest.raises(ContractError, match=r"output shape \(3, 1, 3\) differs.*broadcasts"):
        check_backbone(Pooled(), (5, 3))


def test_vector_conditions_through_the_builtin_backbone():
    from mfkit.plugins import VectorCondition

    check_backbone_spec(MLP, DataInfo((2,), None, VectorCondition(3)))


def test_a_backbone_that_fails_on_the_null_condition_is_caught():
    import torch

    from mfkit.plugins import VectorCondition

    class NoNull(MLPBackbone):
        def __init__(self):
            super().__init__(2, width=8, depth=1)
            self.lift = nn.Linear(2, 8)

        def forward(self, z, r, t, cond=None):  # feeds NaN straight into the network
            return super().forward(z, r, t) + self.lift(cond)[:, :2]

    torch.manual_seed(0)
    with pytest.raises(ContractError, match="null condition"):
        check_backbone(NoNull(), (2,), condition=VectorCondition(2))


def test_a_declared_set_axis_is_checked(tmp_path):
    class Misdeclared(Toy2d):
        set_axis = 1  # samples are (2,): no axis 1

    with pytest.raises(ContractError, match="set_axis must be an axis"):
        check_modality(Misdeclared(Toy2dParams(size=8)), tmp_path)

    class Exchangeable(Toy2d):
        set_axis = 0  # the two coordinates as a set of two scalars: a valid declaration for the contract

    check_modality(Exchangeable(Toy2dParams(size=8)), tmp_path)
