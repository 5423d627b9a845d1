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


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA (the fused kernels)"))])
def test_every_tensor_matches_lerp_one_by_one_across_dtypes(device):
    """The fused update equals Tensor.lerp_ per tensor, bit for bit, for float32, float64, bfloat16 and
    float16 tensors side by side and a non-contiguous one; integer buffers (batch norm's counter) are copied.
    On a CPU _foreach_lerp_ loops over lerp_ (this checks the wiring); on CUDA it runs the fused kernels."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2).double())
    model.register_buffer("half_scale", torch.randn(5).bfloat16())
    model.register_buffer("fp16_scale", torch.randn(6).half())
    model.register_buffer("strided", torch.randn(4, 6)[:, ::2])
    model.to(device)
    ema = EMA(model, [0.9, 0.99])
    reference = {key: {k: v.clone() for k, v in shadow.items()} for key, shadow in ema.shadows.items()}
    for n in range(5):
        with torch.no_grad():
            for tensor in model.state_dict().values():
                tensor.add_(torch.randn_like(tensor.float()).to(tensor.dtype) if tensor.is_floating_point()
                            else torch.ones_like(tensor))
        ema.update(model, n)
        for key, decay in (("0.9", 0.9), ("0.99", 0.99)):
            for name, value in model.state_dict().items():
                want = reference[key][name]
                want.lerp_(value, 1 - decay) if value.is_floating_point() else want.copy_(value)
                assert ema.state(key)[name].dtype == value.dtype and torch.equal(ema.state(key)[name], want), name


def test_a_model_without_floating_tensors_is_copied():
    model = nn.Module()
    model.register_buffer("count", torch.tensor(3))
    ema = EMA(model, [0.9])
    model.count.fill_(7)
    ema.update(model)
    assert ema.state(0.9)["count"].item() == 7


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


def test_a_decay_the_checkpoint_lacks_starts_from_the_resumed_weights():
    saved = EMA(scalar_model(3.0), [0.9]).shadows  # a checkpoint's shadows, decay 0.9 only (value 3)
    ema = EMA(scalar_model(-1.0), [0.9, 0.99])  # built on freshly initialised weights (-1)
    assert ema.load(saved, scalar_model(5.0)) == ["0.99"]  # the resumed model's weights are 5
    assert ema.state(0.9)["weight"].item() == 3.0 and ema.state(0.99)["weight"].item() == 5.0
    assert EMA(scalar_model(-1.0), [0.9]).load(saved, scalar_model(5.0)) == []


def test_an_ema_added_on_resume_averages_the_resumed_weights_not_the_initial_ones(tmp_path):
    from io import StringIO

    from rich.console import Console

    data = small_recipe(tmp_path, "more-emas", steps=20, ema_decays=[0.9], checkpoint_every=20)
    Trainer(parse_recipe(data), progress=False).fit()
    at_20 = load_checkpoint(tmp_path / "runs" / "more-emas" / "checkpoints" / "step-0000020.safetensors").model
    data["train"].update(steps=21, ema_decays=[0.9, 0.99])
    buffer = StringIO()
    result = Trainer(parse_recipe(data), resume=True, allow_changes=True, progress=False,
                     console=Console(file=buffer, width=300)).fit()
    assert "EMA decay(s) 0.99 not in the checkpoint: started from its step-20 weights" in buffer.getvalue()
    checkpoint = load_checkpoint(result.checkpoint)
    for name, value in checkpoint.model.items():  # one update after the resume: 0.99 w_20 + 0.01 w_21
        expected = at_20[name].lerp(value, 0.01) if value.dtype.is_floating_point else value
        assert torch.allclose(checkpoint.ema["0.99"][name], expected, atol=1e-7), name
