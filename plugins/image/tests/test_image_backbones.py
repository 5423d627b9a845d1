"""U-Net and DiT: mfkit's contract checks, adaLN-Zero / zero-init behaviour, presets, clear errors."""
from __future__ import annotations

import pytest
import torch

from mfkit.plugins import ClassCondition, DataInfo, VectorCondition
from mfkit.testing import check_backbone, check_backbone_spec
from mfkit_image.backbones.dit import SPEC as DIT, DiTParams, parameter_count
from mfkit_image.backbones.unet import SPEC as UNET, UNetParams

SMALL = {
    "unet": {"channels": 8, "channel_mult": [1, 2], "num_blocks": 1, "attn_resolutions": [4], "dropout": 0.1},
    "dit": {"preset": "tiny/2", "depth": 2, "hidden": 32, "heads": 2, "dropout": 0.1},
}
SPECS = {"unet": UNET, "dit": DIT}
CONDITIONS = {"none": None, "class": ClassCondition(["a", "b", "c"]), "vector": VectorCondition(2)}


def info_for(condition, shape=(3, 8, 8)):
    return DataInfo(shape, len(condition.names) if isinstance(condition, ClassCondition) else None, condition)


@pytest.mark.parametrize("name, condition", [("unet", "class"), ("unet", "vector"), ("dit", "none"),
                                             ("dit", "class"), ("dit", "vector")])
def test_contract(name, condition):
    """Every contract check, on a network without zero-initialised layers (see the next test for those)."""
    check_backbone_spec(SPECS[name], info_for(CONDITIONS[condition]), {**SMALL[name], "zero_init": False})


@pytest.mark.parametrize("name", ["unet", "dit"])
def test_the_default_zero_initialised_network_passes_the_contract(name):
    """adaLN-Zero (DiT: modulations and output layer at zero) and zero residual branches (U-Net): the
    contract checks what the output depends on through a copy with those weights drawn at random."""
    check_backbone_spec(SPECS[name], info_for(CONDITIONS["class"]), SMALL[name])


def test_a_fresh_dit_outputs_zero_as_in_the_paper():
    info = info_for(CONDITIONS["class"], (1, 8, 8))
    model = DIT.build(DIT.params_model(**SMALL["dit"]), info, None)
    assert not model(torch.randn(2, 1, 8, 8), torch.zeros(2), torch.ones(2), torch.tensor([0, 3])).any()


@pytest.mark.parametrize("name", ["unet", "dit"])
def test_zero_init_starts_blocks_as_identity_then_passes_the_contract(name):
    """With zero_init (the default) every residual branch / adaLN modulation starts at zero, so a fresh
    network ignores the times and the condition (but not z, with the DiT's output layer left at a normal
    init); once those layers move, as after a few steps, it passes every contract check."""
    info = info_for(CONDITIONS["class"], (1, 8, 8))
    settings = {**SMALL[name], **({"zero_output": False} if name == "dit" else {})}
    model = SPECS[name].build(SPECS[name].params_model(**settings), info, None)
    z = torch.randn(2, 1, 8, 8)
    fresh = model(z, torch.zeros(2), torch.ones(2), torch.tensor([0, 3]))
    assert torch.equal(fresh, model(z, torch.full((2,), 0.2), torch.full((2,), 0.7), torch.tensor([1, 2])))
    assert not torch.equal(fresh, model(z + 1, torch.zeros(2), torch.ones(2), torch.tensor([0, 3])))
    zeroed = [p for p in model.parameters() if p.abs().max() == 0]
    assert zeroed
    torch.manual_seed(0)
    with torch.no_grad():
        for p in zeroed:
            p.normal_(0, 0.05)
    check_backbone(model, (1, 8, 8), 3)


def test_unet_odd_sizes_and_paper_size():
    model = UNET.build(UNetParams(channels=8, channel_mult=[1, 2, 2], num_blocks=1, attn_resolutions=[7],
                                  zero_init=False), DataInfo((1, 28, 28), 10), None)
    assert model(torch.randn(2, 1, 28, 28), torch.zeros(2), torch.ones(2), torch.tensor([1, 10])).shape == (2, 1, 28, 28)
    with torch.device("meta"):
        paper = UNET.build(UNetParams(), DataInfo((3, 32, 32)), None)
    assert 50e6 < sum(p.numel() for p in paper.parameters()) < 60e6  # the paper's CIFAR-10 U-Net: about 55M


def test_dit_presets_match_the_paper():
    millions = {preset: parameter_count(preset) / 1e6 for preset in ("B/4", "B/2", "L/2", "XL/2")}
    assert millions["B/4"] == pytest.approx(131, abs=2) and millions["XL/2"] == pytest.approx(676, abs=5)
    assert millions["L/2"] == pytest.approx(459, abs=5)
    assert DiTParams(preset="B/4", depth=3).resolved() == (768, 3, 12, 4)


def test_dit_clear_errors():
    with pytest.raises(ValueError, match="unknown DiT preset"):
        DiTParams(preset="huge/2")
    with pytest.raises(ValueError, match="does not divide"):
        DIT.build(DiTParams(preset="tiny/4"), DataInfo((1, 6, 6)), None)
    with pytest.raises(ValueError, match="takes images"):
        UNET.build(UNetParams(), DataInfo((16,)), None)


@pytest.mark.parametrize("name", ["unet", "dit"])
def test_time_scale_multiplies_the_times_before_the_sinusoid_and_keeps_the_contract(name):
    """``time_scale`` (DiT/ADM's 1000) changes only what the embedding sees: the network at scale s and
    times (r, t) is the network at scale 1 and times (s r, s t) with the same weights."""
    info = info_for(CONDITIONS["class"], (1, 8, 8))
    settings = {**SMALL[name], "zero_init": False, "dropout": 0.0,
                **({"zero_output": False} if name == "dit" else {})}
    check_backbone_spec(SPECS[name], info, {**settings, "time_scale": 1000.0})
    torch.manual_seed(0)
    scaled = SPECS[name].build(SPECS[name].params_model(**settings, time_scale=1000.0), info, None).eval()
    plain = SPECS[name].build(SPECS[name].params_model(**settings), info, None).eval()
    plain.load_state_dict(scaled.state_dict())
    z, labels = torch.randn(3, 1, 8, 8), torch.tensor([0, 1, 2])
    r, t = torch.tensor([0.0, 0.2, 0.5]), torch.tensor([1.0, 0.7, 0.5])
    with torch.no_grad():
        assert torch.allclose(scaled(z, r, t, labels), plain(z, 1000 * r, 1000 * t, labels), atol=1e-5)
        assert not torch.allclose(scaled(z, r, t, labels), plain(z, r, t, labels), atol=1e-3)
    with pytest.raises(ValueError):
        SPECS[name].params_model(**settings, time_scale=0.0)
