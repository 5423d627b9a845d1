"""Choosing the weights of a checkpoint: the recipe's first EMA, an EMA by decay, or the raw weights."""
import pytest
import torch
import yaml

from mfkit.train.checkpoint import Checkpoint
from mfkit.train.weights import kept_ema_key, select_weights, weights_tag
from tests.helpers import small_recipe


def checkpoint(tmp_path, decays) -> Checkpoint:
    """A checkpoint whose raw weight is 0 and whose EMA with decay d holds the value d."""
    recipe = yaml.safe_dump(small_recipe(tmp_path, ema_decays=decays))
    return Checkpoint(step=1, recipe_yaml=recipe, model={"w": torch.zeros(1)},
                      ema={repr(float(d)): {"w": torch.full((1,), float(d))} for d in decays})


def test_default_is_the_recipes_first_ema(tmp_path):
    label, weights = select_weights(checkpoint(tmp_path, [0.99, 0.9]))
    assert label == "ema-0.99" and weights["w"].item() == pytest.approx(0.99)
    assert select_weights(checkpoint(tmp_path, [0.99, 0.9]), use_ema=False)[0] == "raw"
    assert select_weights(checkpoint(tmp_path, []))[0] == "raw"


@pytest.mark.parametrize("asked", [0.9, "0.9", "0.90", 0.9000])
def test_an_ema_chosen_by_decay_in_any_spelling(tmp_path, asked):
    label, weights = select_weights(checkpoint(tmp_path, [0.99, 0.9]), ema=asked)
    assert label == "ema-0.9" and weights["w"].item() == pytest.approx(0.9)
    assert weights_tag(label, chosen=True) == "ema0.9" and weights_tag(label, chosen=False) == "ema"


def test_an_ema_that_is_not_kept_names_the_kept_ones(tmp_path):
    with pytest.raises(ValueError, match=r"no EMA with decay 0\.999; it keeps 0\.99, 0\.9 .*--ema"):
        select_weights(checkpoint(tmp_path, [0.99, 0.9]), ema=0.999)
    with pytest.raises(ValueError, match="keeps no EMA .*leave out --ema"):
        select_weights(checkpoint(tmp_path, []), ema=0.9)
    with pytest.raises(ValueError, match="--ema takes an EMA decay such as 0.999, got 'last'"):
        kept_ema_key(checkpoint(tmp_path, [0.9]), "last")
    with pytest.raises(ValueError, match="not both"):
        select_weights(checkpoint(tmp_path, [0.9]), use_ema=False, ema=0.9)
