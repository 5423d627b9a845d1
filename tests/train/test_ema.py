"""EMA of the weights: the plain average and the warm-up, in closed form; exact resume with warm-up."""
import pytest
import torch
from torch import nn

from mfkit.recipe import parse_recipe
from mfkit.train.checkpoint import load_checkpoint
from mfkit.train.ema import EMA, warmed_decay
from mfkit.train.trainer import Trainer
from tests.helpers import small_recipe


def scalar_model(value: float) -> nn.Module:
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(value)
    return model


@pytest.mark.parametrize("warmup", [False, True])
def test_the_average_in_closed_form(warmup):
    model = scalar_model(0.0)
    ema = EMA(model, [0.9], warmup=warmup)
    expected = 0.0
    for n in range(30):
        with torch.no_grad():
            model.weight.fill_(float(n + 1))
        ema.update(model, n)
        decay = min(0.9, (1 + n) / (10 + n)) if warmup else 0.9
        expected = decay * expected + (1 - decay) * (n + 1)
        assert ema.state(0.9)["weight"].item() == pytest.approx(expected, rel=1e-6)


def test_warm_up_forgets_the_initial_weights():
    assert warmed_decay(0.999, 0) == pytest.approx(0.1) and warmed_decay(0.999, 8) == pytest.approx(0.5)
    assert warmed_decay(0.999, 100_000) == 0.999
    plain, warm = scalar_model(1.0), scalar_model(1.0)
    emas = EMA(plain, [0.999]), EMA(warm, [0.999], warmup=True)
    for model in (plain, warm):
        with torch.no_grad():
            model.weight.fill_(0.0)  # trained weights far from the initial ones
    for n in range(2000):
        emas[0].update(plain, n)
        emas[1].update(warm, n)
    assert emas[0].state(0.999)["weight"].item() == pytest.approx(0.999 ** 2000, rel=1e-3)  # 13.5% initial
    assert emas[1].state(0.999)["weight"].item() < 1e-3


def test_resume_is_exact_with_warm_up(tmp_path):
    def run(name, resume=False, steps=40):
        recipe = parse_recipe(small_recipe(tmp_path, name, steps=steps, ema_warmup=True))
        return load_checkpoint(Trainer(recipe, resume=resume, progress=False).fit().checkpoint)

    straight = run("straight")
    run("split", steps=20)
    resumed = run("split", resume=True)
    for decay, shadow in straight.ema.items():
        for key, value in shadow.items():
            assert torch.equal(value, resumed.ema[decay][key]), (decay, key)
