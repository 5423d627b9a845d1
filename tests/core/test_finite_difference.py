"""The ``finite_difference`` JVP backend against the exact ``forward_ad`` one, at the objective's level.

A forward difference divides the difference of two nearly equal outputs by h (1e-3), so anything else
that differs between its two passes (bf16 rounding, TF32 products, a batch of another size, another
dropout mask) is magnified 1000-fold: these tests hold it to its O(h) bias in every setting a recipe can
choose, and check the guards that keep it there.
"""
import pytest
import torch
from torch import nn

import mfkit
from mfkit.core import jvp as jvp_module
from mfkit.core.jvp import difference_steps, jvp, jvp_on_rows
from mfkit.core.time_sampling import TimePairSampler
from mfkit.nn import MLPBackbone

B = 32


class InputDropout(nn.Module):
    """A labelled MLP that drops input features (random numbers in every pass)."""

    def __init__(self, net: nn.Module, p: float):
        super().__init__()
        self.net, self.drop = net, nn.Dropout(p)

    def forward(self, z, r, t, cond):
        return self.net(self.drop(z), r, t, cond)


def labelled_mlp(dropout: float = 0.0):
    torch.manual_seed(0)
    model = MLPBackbone(4, width=48, depth=2, num_classes=4)  # class 3: the null label of guidance
    for p in model.parameters():
        nn.init.normal_(p, std=0.3)
    g = torch.Generator().manual_seed(1)
    x, labels = torch.randn(B, 4, generator=g), torch.randint(0, 3, (B,), generator=g)
    return (InputDropout(model, dropout) if dropout else model), x, labels


def path(draw, x):
    """(z_t, r, t, tangents (v, 0, 1)) of the linear path z_t = (1 - t) x + t e."""
    t = draw.t.view(-1, *([1] * (x.dim() - 1)))
    v = draw.noise - x
    return (1 - t) * x + t * draw.noise, draw.r, draw.t, (v, torch.zeros_like(draw.r), torch.ones_like(draw.t))


def loss_and_grads(model, objective, x, cond, draw, autocast=False):
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = objective(model, x, cond, draw=draw)
    out.loss.backward()
    return out, torch.cat([p.grad.flatten() for p in model.parameters()])


def relative(a, b):
    return float((a - b).abs().max() / b.abs().max())


SETTINGS = {
    "plain": {},
    "imf": {"formulation": "imf"},
    "guidance": {"guidance": mfkit.Guidance(null_label=3, w_cfg=0.7, kappa=0.4, t_min=0.1, t_max=0.9,
                                            class_dropout=0.2)},
    "ot": {"coupling": "ot"},
    "imf-guidance-ot": {"formulation": "imf", "coupling": "ot",
                        "guidance": mfkit.Guidance(null_label=3, w_cfg=1.0, kappa=0.5, class_dropout=0.1)},
    "full-jumps": {"times": TimePairSampler(r_neq_t_share=0.6, full_jump_share=0.3)},  # t = 1: backward steps
}


@pytest.mark.parametrize("rows", ["all", "auto", "r_neq_t"])
@pytest.mark.parametrize("name", SETTINGS)
def test_objective_matches_forward_ad(name, rows):
    model, x, cond = labelled_mlp()
    settings = {"r_neq_t_share": 0.6} if "times" not in SETTINGS[name] else {}
    settings.update(SETTINGS[name], jvp_rows=rows, adaptive_p=0.0)
    exact = mfkit.MeanFlow(jvp_backend="forward_ad", **settings)
    difference = mfkit.MeanFlow(jvp_backend="finite_difference", **settings)
    draw = exact.draw(x.shape, generator=torch.Generator().manual_seed(5))
    ref, ref_grads = loss_and_grads(model, exact, x, cond, draw)
    out, grads = loss_and_grads(model, difference, x, cond, draw)
    assert relative(out.per_sample_error, ref.per_sample_error) < 5e-3
    assert relative(grads, ref_grads) < 5e-3


@pytest.mark.parametrize("precision", ["fp32", "tf32", "autocast"])
def test_every_precision_takes_the_difference_in_float32_under_bf16_autocast(precision):
    """jvp_precision autocast would subtract two bf16 outputs: measured 9-23x the JVP's own size."""
    model, x, cond = labelled_mlp()
    exact = mfkit.MeanFlow(jvp_backend="forward_ad", r_neq_t_share=0.6)
    difference = mfkit.MeanFlow(jvp_backend="finite_difference", jvp_precision=precision, r_neq_t_share=0.6)
    draw = exact.draw(x.shape, generator=torch.Generator().manual_seed(5))
    z, r, t, tangents = path(draw, x)
    _, du_exact = jvp(model, z, r, t, tangents, cond, backend="forward_ad")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, du = jvp(model, z, r, t, tangents, cond, backend="finite_difference", precision=precision)
        _, du_rows = jvp_on_rows(model, z, r, t, tangents, cond, draw.r != draw.t, backend="finite_difference",
                                 precision=precision)
    assert du.dtype == torch.float32
    assert relative(du, du_exact) < 3e-3
    assert relative(du_rows, du_exact[draw.r != draw.t]) < 3e-3
    ref, _ = loss_and_grads(model, exact, x, cond, draw, autocast=True)
    out, _ = loss_and_grads(model, difference, x, cond, draw, autocast=True)
    assert relative(out.per_sample_error, ref.per_sample_error) < 5e-2  # the bf16 loss forward's rounding


class WeaklyCoupled(nn.Module):
    """u + eps * mean over the batch: rows computed in a batch of k differ from the same rows in a batch of
    B by about eps, below the separability probe's 1e-4 of the output's scale."""

    def __init__(self, eps: float):
        super().__init__()
        self.net, self.eps = MLPBackbone(4, width=48, depth=2), eps
        for p in self.net.parameters():
            nn.init.normal_(p, std=0.3)

    def forward(self, z, r, t):
        u = self.net(z, r, t)
        return u + self.eps * u.mean(0, keepdim=True)


def test_rows_apart_take_both_passes_on_the_same_rows():
    """The whole batch's output as the base would add (gap / h) to the tangent: 6% at eps 4e-4."""
    model = WeaklyCoupled(4e-4)
    draw = mfkit.MeanFlow(r_neq_t_share=0.5).draw((B, 4), generator=torch.Generator().manual_seed(2))
    x = torch.randn(B, 4, generator=torch.Generator().manual_seed(3))
    z, r, t, tangents = path(draw, x)
    rows = torch.arange(0, B, 4)  # k < B / 2: the split (from B / 2 on, one shifted pass of every row)
    _, du_exact = jvp_on_rows(model, z, r, t, tangents, None, rows, backend="forward_ad")
    _, du = jvp_on_rows(model, z, r, t, tangents, None, rows, backend="finite_difference")
    assert relative(du, du_exact) < 5e-3


def test_rows_apart_with_dropout_share_one_mask_between_the_two_passes():
    """jvp_rows r_neq_t (unchecked) with dropout: both passes of the difference on the k rows draw the same
    mask, the one forward_ad's dual pass of those rows draws from the same generator state."""
    model, x, cond = labelled_mlp(dropout=0.2)
    model.train()
    draw = mfkit.MeanFlow(r_neq_t_share=0.5).draw(x.shape, generator=torch.Generator().manual_seed(2))
    z, r, t, tangents = path(draw, x)
    rows = torch.arange(1, B, 3)  # k < B / 2: the split
    torch.manual_seed(11)
    _, du = jvp_on_rows(model, z, r, t, tangents, cond, rows, backend="finite_difference")
    torch.manual_seed(11)  # the tangent pass starts from the generator state the whole forward started from
    _, du_exact = jvp(model, z[rows], r[rows], t[rows], tuple(d[rows] for d in tangents), cond[rows],
                      backend="forward_ad")
    assert relative(du, du_exact) < 5e-3


class CallSizes:
    def __init__(self, module):
        self.sizes = []
        module.register_forward_pre_hook(lambda m, args: self.sizes.append(args[0].shape[0]))


@pytest.mark.parametrize("k", [B // 4, B // 2, B - 1])
def test_rows_cost_at_most_one_extra_forward_of_the_batch(k):
    """Both passes on the k rows (2k rows) or, from k = B / 2 on and where the loss forward can be the base,
    one shifted pass of every row: never more than B extra rows."""
    model, x, cond = labelled_mlp()
    sizes = CallSizes(model)
    draw = mfkit.MeanFlow().draw(x.shape, generator=torch.Generator().manual_seed(2))
    z, r, t, tangents = path(draw, x)
    rows = torch.randperm(B, generator=torch.Generator().manual_seed(4))[:k]
    u, du = jvp_on_rows(model, z, r, t, tangents, cond, rows, backend="finite_difference")
    assert sizes.sizes == ([B, k, k] if 2 * k < B else [B, B])
    _, du_all = jvp(model, z, r, t, tangents, cond, backend="finite_difference")
    assert relative(du, du_all[rows]) < 1e-5
    sizes.sizes.clear()
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the bf16 loss forward cannot be the base
        jvp_on_rows(model, z, r, t, tangents, cond, rows, backend="finite_difference")
    assert sizes.sizes == [B, k, k]


class TimesInZDtype(nn.Module):
    """Takes its times in any float dtype (casts them to z's), as forward_ad allows."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net, self.seen = net, []

    def forward(self, z, r, t, cond):
        self.seen.append(z.dtype)
        return self.net(z, r.to(z.dtype), t.to(z.dtype), cond)


def test_float32_z_with_float64_times_keeps_each_dtype():
    net, x, cond = labelled_mlp()
    model = TimesInZDtype(net)
    r, t = torch.zeros(B, dtype=torch.float64), torch.full((B,), 0.5, dtype=torch.float64)
    tangents = (torch.randn(B, 4), torch.zeros_like(r), torch.ones_like(t))
    _, du_exact = jvp(model, x, r, t, tangents, cond, backend="forward_ad")
    model.seen.clear()
    _, du = jvp(model, x, r, t, tangents, cond, backend="finite_difference")
    assert set(model.seen) == {torch.float32} and du.dtype == torch.float32
    assert relative(du, du_exact) < 5e-3


def test_low_precision_inputs_are_refused():
    model, x, cond = labelled_mlp()
    z, r, t = x.bfloat16(), torch.zeros(B, dtype=torch.bfloat16), torch.full((B,), 0.7, dtype=torch.bfloat16)
    tangents = (torch.randn_like(z), torch.zeros_like(r), torch.ones_like(t))
    with pytest.raises(ValueError, match="float32 or float64 inputs, got z in torch.bfloat16"):
        jvp(model.bfloat16(), z, r, t, tangents, cond, backend="finite_difference")
    with pytest.raises(ValueError, match="float32 or float64"):
        jvp_on_rows(model, z, r, t, tangents, cond, torch.arange(3), backend="finite_difference")


def test_full_jumps_step_backwards_and_never_ask_for_t_above_one():
    model, x, cond = labelled_mlp()
    seen = []
    model.register_forward_pre_hook(lambda m, args: seen.append(float(args[2].max())))
    z = torch.randn(B, 4)
    r = torch.zeros(B)
    t = torch.cat([torch.ones(B // 2), torch.rand(B - B // 2)])
    tangents = (torch.randn(B, 4), torch.zeros(B), torch.ones(B))
    _, du = jvp(model, z, r, t, tangents, cond, backend="finite_difference")
    assert max(seen) <= 1.0
    _, du_exact = jvp(model, z, r, t, tangents, cond, backend="forward_ad")
    assert relative(du, du_exact) < 5e-3
    steps = difference_steps(t, tangents[2], 1e-3)
    assert bool((steps[: B // 2] == -1e-3).all()) and bool((steps[B // 2:] == 1e-3).all())


@pytest.mark.parametrize("settings,apart", [((False, False), "autocast"), ((True, False), "fp32"),
                                            ((False, True), "fp32")])
def test_on_cuda_any_tf32_in_effect_sends_both_passes_to_exact_float32(monkeypatch, settings, apart):
    """cuDNN's default lets float32 convolutions use TF32 (5e-4 rounding, 30% of the tangent at h = 1e-3):
    the loss forward then cannot serve as the base. (CPU-only check of the decision; the passes
    themselves run under cuda_float32_products(tf32=False), as the float32 JVPs do.)"""
    monkeypatch.setattr(jvp_module.tf32, "settings", lambda: settings)
    monkeypatch.setattr(torch, "is_autocast_enabled", lambda *args: False)
    cuda = torch.device("cuda")
    assert jvp_module._apart_for("finite_difference", "fp32", cuda) == apart
    assert jvp_module._apart_for("forward_ad", "fp32", cuda) == "autocast"  # exact backends: one pass
    assert jvp_module._apart_for("finite_difference", "fp32", torch.device("cpu")) == "autocast"


def test_jvp_computes_both_passes_apart_when_the_loss_forward_cannot_be_the_base(monkeypatch):
    """What the TF32 decision above leads to inside jvp() and jvp_on_rows() (forced on the CPU): a shifted
    and a base pass of their own, with the same result as reusing the exact loss forward."""
    model, x, cond = labelled_mlp()
    draw = mfkit.MeanFlow().draw(x.shape, generator=torch.Generator().manual_seed(2))
    z, r, t, tangents = path(draw, x)
    rows = torch.arange(0, B, 2)
    _, du_reused = jvp(model, z, r, t, tangents, cond, backend="finite_difference")
    _, du_rows_reused = jvp_on_rows(model, z, r, t, tangents, cond, rows, backend="finite_difference")
    monkeypatch.setattr(jvp_module, "_apart_for", lambda backend, precision, device: "fp32")
    sizes = CallSizes(model)
    _, du = jvp(model, z, r, t, tangents, cond, backend="finite_difference")
    assert sizes.sizes == [B, B, B]
    sizes.sizes.clear()
    _, du_rows = jvp_on_rows(model, z, r, t, tangents, cond, rows, backend="finite_difference")
    assert sizes.sizes == [B, B // 2, B // 2]  # k = B / 2 rows: the split, since the base cannot be reused
    assert relative(du, du_reused) < 1e-4 and relative(du_rows, du_rows_reused) < 1e-4
