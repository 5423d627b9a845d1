"""Guidance in training works with every kind of condition: labels, vectors and structures."""
import pytest
import torch

import mfkit
from mfkit.nn import MLPBackbone
from mfkit.core.conditions import LabelConditions, StructConditions, TensorConditions


def test_label_conditions():
    ops = LabelConditions(5)
    labels = torch.tensor([0, 3, 4])
    assert ops.null_like(labels).tolist() == [5, 5, 5]
    assert ops.where_dropped(labels, torch.tensor([False, True, False])).tolist() == [0, 5, 4]


def test_tensor_conditions_keep_shape_and_nan_null():
    ops = TensorConditions(torch.full((2,), float("nan")))
    cond = torch.arange(6.0).reshape(3, 2)
    dropped = ops.where_dropped(cond, torch.tensor([True, False, False]))
    assert torch.isnan(dropped[0]).all() and torch.equal(dropped[1:], cond[1:])
    assert torch.isnan(ops.null_like(cond)).all()


def test_struct_conditions_drop_every_part():
    ops = StructConditions({"tokens": LabelConditions(0), "mask": TensorConditions(torch.zeros(4, dtype=torch.bool))})
    cond = {"tokens": torch.ones(2, 4, dtype=torch.long), "mask": torch.ones(2, 4, dtype=torch.bool), "extra": 1}
    out = ops.where_dropped(cond, torch.tensor([True, False]))
    assert out["tokens"][0].tolist() == [0, 0, 0, 0] and out["tokens"][1].tolist() == [1, 1, 1, 1]
    assert not out["mask"][0].any() and out["mask"][1].all() and out["extra"] == 1


class Recorder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = MLPBackbone(2, width=16, depth=1, vector_dim=3)
        self.seen = []

    def forward(self, z, r, t, cond=None):
        self.seen.append(cond.clone())
        return self.net(z, r, t, cond)


@pytest.mark.parametrize("jvp_rows", ["all", "auto"])
@pytest.mark.parametrize("share", [0.0, 0.5])
def test_guidance_with_vector_conditions(share, jvp_rows):
    model = Recorder()
    guidance = mfkit.Guidance(conditions=TensorConditions(torch.full((3,), float("nan"))), w_cfg=0.5, kappa=0.3,
                              class_dropout=share)
    cond = torch.rand(2000, 3)
    out = mfkit.MeanFlow(guidance=guidance, jvp_rows=jvp_rows)(model, torch.randn(2000, 2), cond,
                                                                generator=torch.Generator().manual_seed(0))
    out.loss.backward()
    assert torch.isfinite(out.loss)
    if jvp_rows == "all":
        u_cond_call, u_null_call, training_call = model.seen
    else:  # guidance passes, the separability probe (whole batch, r != t rows), then r = t rows and r != t rows
        u_cond_call, u_null_call, training_call, _, rest_call, jvp_call = model.seen
        assert len(rest_call) + len(jvp_call) == 2000 and 0 < len(jvp_call) < 2000

        def in_order(rows):
            return rows[torch.argsort(rows.nan_to_num(-1.0)[:, 0], stable=True)]

        # the two training calls hold the batch's rows (seen in batch order by the probe), in another order
        assert torch.equal(in_order(torch.cat([rest_call, jvp_call])).nan_to_num(-1.0),
                           in_order(training_call).nan_to_num(-1.0))
    assert torch.isnan(u_null_call).all()
    dropped = torch.isnan(training_call).all(dim=1)
    assert abs(dropped.float().mean().item() - share) < 0.04
    assert torch.equal(u_cond_call[~dropped], cond[~dropped])


def test_guidance_needs_null_label_or_conditions():
    with pytest.raises(ValueError, match="null_label .* or conditions"):
        mfkit.Guidance()
