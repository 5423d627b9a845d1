"""The plugin's own tests: mfkit's reusable contract checks, run as a third-party author would."""
import pytest
import torch

from mfkit.plugins import ClassCondition, DataInfo, PluginContext, VectorCondition
from mfkit.testing import check_backbone_spec, check_modality_spec

from mfkit_sines.backbone import SPEC as BACKBONE
from mfkit_sines.modality import SPEC as MODALITY


@pytest.mark.parametrize("condition", ["band", "frequency", "none"])
def test_modality_contract(tmp_path, condition):
    check_modality_spec(MODALITY, tmp_path, {"size": 32, "condition": condition})


def test_state_travels_and_is_not_refitted(tmp_path):
    params = MODALITY.params_model(size=64)
    trained = MODALITY.build(params, PluginContext(purpose="train"))
    trained.fit(trained.dataset("train"))
    sampler = MODALITY.build(params, PluginContext(purpose="sample"))
    sampler.load_state_dict(trained.state_dict())
    x = torch.randn(2, 1, 64)
    assert (sampler.decode(x) == trained.decode(x)).all()


@pytest.mark.parametrize("condition", [None, ClassCondition(["low", "mid", "high"]), VectorCondition(1, 1.0, 7.0)])
def test_backbone_contract(condition):
    check_backbone_spec(BACKBONE, DataInfo((1, 64), len(condition.names) if isinstance(condition, ClassCondition)
                                           else None, condition))
