"""The blockwise (online-softmax) attention tangent equals the math formula and PyTorch's forward-mode AD."""
import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import mfkit
from mfkit.core import attention
from mfkit.core.attention import blockwise_attention_jvp
from mfkit.core.tangent_rules import attention_tangent, math_attention
from mfkit.nn import TimePairEmbedding
from mfkit.testing import check_jvp


def reference(q, k, v, qt, kt, vt, **kwargs):
    """(O, O_t) from PyTorch's own forward-mode AD through math attention."""
    with fwAD.dual_level(), math_attention():
        dual = [fwAD.make_dual(x, dx) if dx is not None else x for x, dx in zip((q, k, v), (qt, kt, vt))]
        out = fwAD.unpack_dual(F.scaled_dot_product_attention(*dual, **kwargs))
    tangent = out.tangent if out.tangent is not None else torch.zeros_like(out.primal)
    return out.primal, tangent


def assert_relative(got, expected, tol=1e-6):
    assert got.shape == expected.shape and got.dtype == expected.dtype
    assert torch.isfinite(got).all()
    error = (got - expected).abs().max().item() / max(expected.abs().max().item(), 1e-30)
    assert error <= tol, f"relative error {error:.3g} > {tol:g}"


def tensors(generator, batch, heads, kv_heads, length, source, dim, value_dim, logit_scale=1.0):
    def randn(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float64)

    q = randn(batch, heads, length, dim) * logit_scale
    k, kt = randn(batch, kv_heads, source, dim), randn(batch, kv_heads, source, dim)
    v, vt = randn(batch, kv_heads, source, value_dim), randn(batch, kv_heads, source, value_dim)
    return q, k, v, randn(*q.shape) * logit_scale, kt, vt


# (batch, heads, kv heads, L, S, E, Ev, block): L != S both ways, one head, several, GQA, blocks that do not
# divide S, a block of 1, a block larger than S.
SHAPES = [
    (2, 4, 4, 5, 13, 3, 2, 4),
    (1, 1, 1, 17, 6, 8, 8, 5),
    (2, 4, 2, 7, 13, 3, 5, 3),
    (3, 6, 2, 9, 23, 4, 4, 7),
    (1, 2, 2, 4, 9, 2, 3, 1),
    (2, 3, 3, 11, 10, 5, 4, 64),
]
MASKS = ["none", "causal", "bool", "additive", "bool_broadcast", "additive_causal"]


def make_mask(kind, generator, batch, heads, length, source):
    if kind == "bool":  # per batch and head; key 0 always visible here (fully masked rows: separate test)
        mask = torch.rand(batch, heads, length, source, generator=generator) > 0.4
        mask[..., 0] = True
        return mask
    if kind == "bool_broadcast":
        mask = torch.rand(batch, 1, length, source, generator=generator) > 0.4
        mask[..., -1] = True
        return mask
    if kind in ("additive", "additive_causal"):
        return 3 * torch.randn(length, source, generator=generator, dtype=torch.float64)
    return None


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("mask_kind", MASKS)
@pytest.mark.parametrize("logit_scale", [1e-3, 1.0, 40.0], ids=["tiny", "unit", "large"])
def test_blockwise_equals_forward_ad_and_math_rule(shape, mask_kind, logit_scale, generator):
    batch, heads, kv_heads, length, source, dim, value_dim, block = shape
    q, k, v, qt, kt, vt = tensors(generator, batch, heads, kv_heads, length, source, dim, value_dim, logit_scale)
    mask = make_mask(mask_kind, generator, batch, heads, length, source)
    causal = "causal" in mask_kind
    gqa = heads != kv_heads
    kwargs = dict(attn_mask=mask, enable_gqa=gqa)
    if causal and mask is None:
        kwargs["is_causal"] = True
    elif causal:  # PyTorch refuses is_causal with a mask: fold the causal mask into the additive one
        kwargs["attn_mask"] = mask.masked_fill(~torch.ones(length, source, dtype=torch.bool).tril(), float("-inf"))
    expected_out, expected = reference(q, k, v, qt, kt, vt, **kwargs)
    args = (kwargs["attn_mask"], kwargs.get("is_causal", False), None, gqa)
    out, tangent = blockwise_attention_jvp(q, k, v, qt, kt, vt, *args, block_size=block)
    assert_relative(out, expected_out)
    assert_relative(tangent, expected)
    assert_relative(attention_tangent(q, k, v, qt, kt, vt, *args), expected)  # the reference path agrees too
    # Given the primal (as the fast rule passes it), the tangent is the same.
    _, given = blockwise_attention_jvp(q, k, v, qt, kt, vt, *args, out=expected_out, block_size=block)
    assert_relative(given, expected)


def test_is_causal_together_with_a_mask_applies_both(generator):
    """PyTorch's math kernel refuses is_causal with a mask; the rules accept both and apply both."""
    q, k, v, qt, kt, vt = tensors(generator, 2, 2, 2, 6, 9, 3, 3)
    mask = torch.rand(6, 9, generator=generator) > 0.3
    mask[:, 0] = True
    both = mask & torch.ones(6, 9, dtype=torch.bool).tril()
    _, expected = reference(q, k, v, qt, kt, vt, attn_mask=both)
    _, got = blockwise_attention_jvp(q, k, v, qt, kt, vt, mask, True, block_size=4)
    assert_relative(got, expected)
    assert_relative(attention_tangent(q, k, v, qt, kt, vt, mask, True), expected)


@pytest.mark.parametrize("scale", [0.05, 1.0, 3.0])
def test_explicit_scale(scale, generator):
    q, k, v, qt, kt, vt = tensors(generator, 2, 2, 2, 7, 8, 4, 3)
    expected_out, expected = reference(q, k, v, qt, kt, vt, scale=scale)
    out, got = blockwise_attention_jvp(q, k, v, qt, kt, vt, scale=scale, block_size=3)
    assert_relative(out, expected_out)
    assert_relative(got, expected)


@pytest.mark.parametrize("kind", ["bool", "additive"])
@pytest.mark.parametrize("block", [2, 3, 16])
def test_fully_masked_rows_give_zero_output_and_tangent(kind, block, generator):
    q, k, v, qt, kt, vt = tensors(generator, 2, 2, 2, 6, 7, 3, 3)
    allowed = torch.rand(2, 2, 6, 7, generator=generator) > 0.5
    allowed[..., 1] = True
    allowed[0, 1, 2] = False  # one row with no key at all
    allowed[1, :, 4] = False
    allowed[1, 0, 5, :3] = False  # a row whose first blocks are all masked, the last not
    allowed[1, 0, 5, 3:] = True
    mask = allowed if kind == "bool" else torch.zeros(allowed.shape, dtype=torch.float64).masked_fill(~allowed, float("-inf"))
    expected_out, expected = reference(q, k, v, qt, kt, vt, attn_mask=mask)
    out, got = blockwise_attention_jvp(q, k, v, qt, kt, vt, mask, block_size=block)
    assert_relative(out, expected_out)
    assert_relative(got, expected)
    assert not got[0, 1, 2].any() and not got[1, :, 4].any() and not out[1, :, 4].any()


@pytest.mark.parametrize("which", ["", "q", "k", "v", "qk", "kv", "qv", "qkv"])
@pytest.mark.parametrize("gqa", [False, True])
def test_partial_tangents(which, gqa, generator):
    q, k, v, qt, kt, vt = tensors(generator, 2, 4, 2 if gqa else 4, 5, 11, 3, 4)
    qt, kt, vt = (x if name in which else None for name, x in zip("qkv", (qt, kt, vt)))
    expected_out, expected = reference(q, k, v, qt, kt, vt, enable_gqa=gqa)
    out, got = blockwise_attention_jvp(q, k, v, qt, kt, vt, enable_gqa=gqa, block_size=4)
    assert_relative(out, expected_out)
    if which:
        assert_relative(got, expected)
    else:
        assert not got.any()


def test_three_dimensional_inputs_and_broadcast_masks(generator):
    """(N, L, E) inputs without a head axis, and masks broadcasting over the last axis or the batch."""
    g = generator
    q, k, v, qt, kt, vt = (torch.randn(3, n, 4, generator=g, dtype=torch.float64) for n in (5, 9, 9, 5, 9, 9))
    for mask in (torch.randn(5, 1, generator=g, dtype=torch.float64), torch.rand(1, 5, 9, generator=g) > 0.2):
        if mask.dtype == torch.bool:
            mask[..., 0] = True
        expected_out, expected = reference(q, k, v, qt, kt, vt, attn_mask=mask)
        out, got = blockwise_attention_jvp(q, k, v, qt, kt, vt, mask, block_size=2)
        assert_relative(out, expected_out)
        assert_relative(got, expected)


def test_gqa_mask_per_query_head(generator):
    q, k, v, qt, kt, vt = tensors(generator, 2, 6, 2, 5, 8, 3, 3)
    mask = torch.randn(2, 6, 5, 8, generator=generator, dtype=torch.float64)
    expected_out, expected = reference(q, k, v, qt, kt, vt, attn_mask=mask, enable_gqa=True)
    out, got = blockwise_attention_jvp(q, k, v, qt, kt, vt, mask, enable_gqa=True, block_size=3)
    assert_relative(out, expected_out)
    assert_relative(got, expected)


def test_float32_and_bfloat16(generator):
    q, k, v, qt, kt, vt = tensors(generator, 2, 2, 2, 33, 40, 8, 8)
    _, exact = reference(q, k, v, qt, kt, vt)
    single = blockwise_attention_jvp(*(x.float() for x in (q, k, v, qt, kt, vt)), block_size=16)[1]
    assert single.dtype == torch.float32
    assert (single.double() - exact).abs().max() <= 1e-5 * exact.abs().max()
    half = blockwise_attention_jvp(*(x.bfloat16() for x in (q, k, v, qt, kt, vt)), block_size=16)[1]
    assert half.dtype == torch.bfloat16
    assert (half.double() - exact).abs().max() <= 0.05 * exact.abs().max()


class _LargestTensor(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for x in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(x, torch.Tensor):
                self.largest = max(self.largest, x.numel())
        return out


def test_memory_is_per_block_not_per_key(generator):
    """No intermediate holds the (L, S) weights: the largest tensor created is O(L x block)."""
    batch, heads, length, source, dim, block = 2, 2, 64, 256, 8, 32
    q, k, v, qt, kt, vt = tensors(generator, batch, heads, heads, length, source, dim, dim)
    mask = torch.rand(length, source, generator=generator) > 0.1
    with _LargestTensor() as probe:
        blockwise_attention_jvp(q, k, v, qt, kt, vt, mask, block_size=block)
    inputs = max(x.numel() for x in (q, k, v))
    assert probe.largest <= max(inputs, batch * heads * length * 2 * dim, batch * heads * length * block)
    with _LargestTensor() as probe:
        attention_tangent(q, k, v, qt, kt, vt, mask)
    assert probe.largest >= batch * heads * length * source  # the math rule does materialise them


def test_block_size_and_mode_are_checked(generator, monkeypatch):
    q, k, v, qt, kt, vt = tensors(generator, 1, 1, 1, 3, 3, 2, 2)
    with pytest.raises(ValueError, match="block_size"):
        blockwise_attention_jvp(q, k, v, qt, kt, vt, block_size=0)
    monkeypatch.setattr(attention, "MODE", "fast")
    with pytest.raises(ValueError, match="MODE"):
        attention.use_blockwise(q, k)


def test_auto_selects_by_the_size_of_the_weights(monkeypatch):
    q, k = torch.zeros(2, 4, 64, 8), torch.zeros(2, 4, 128, 8)  # 65,536 weights
    monkeypatch.setattr(attention, "AUTO_MIN_WEIGHTS", 65_536)
    assert attention.use_blockwise(q, k)
    assert not attention.use_blockwise(q[:, :, :63], k)
    monkeypatch.setattr(attention, "MODE", "math")
    assert not attention.use_blockwise(q, k)
    monkeypatch.setattr(attention, "MODE", "blockwise")
    assert attention.use_blockwise(q[:1, :1, :1], k)


# ---------------------------------------------------------------- the whole JVP on attention backbones
class AttentionNet(nn.Module):
    """nn.MultiheadAttention, plus SDPA with causal masking and grouped key/value heads."""

    def __init__(self, dim=4, width=16, heads=4):
        super().__init__()
        self.time = TimePairEmbedding(width, frequency_dim=16)
        self.inp = nn.Linear(dim, width)
        self.mha = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm = nn.LayerNorm(width)
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(width, width)  # 2 key/value heads of width / 4 for 4 query heads
        self.out = nn.Linear(width, dim)
        self.heads = heads

    def forward(self, z, r, t, cond=None):
        b, n, _ = z.shape
        x = self.inp(z) + self.time(r, t)[:, None]
        x = x + self.mha(x, x, x, need_weights=False)[0]
        y = self.norm(x)
        q = self.q(y).reshape(b, n, self.heads, -1).transpose(1, 2)
        k, v = self.kv(y).reshape(b, n, 2, self.heads // 2, -1).permute(2, 0, 3, 1, 4)
        x = x + F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True).transpose(1, 2).reshape(b, n, -1)
        return self.out(F.gelu(x))


def _float64_reference(model, z, r, t, v):
    with fwAD.dual_level(), math_attention():
        dual = [fwAD.make_dual(x, dx) for x, dx in zip((z, r, t), (v, torch.zeros_like(r), torch.ones_like(t)))]
        return fwAD.unpack_dual(model(*dual)).tangent


@pytest.mark.parametrize("block", [1, 5, 128])
def test_mfkit_jvp_stays_exact_with_blockwise_attention(block, monkeypatch):
    torch.manual_seed(0)
    model = AttentionNet().double()
    g = torch.Generator().manual_seed(3)
    z, v = (torch.randn(3, 13, 4, generator=g, dtype=torch.float64) for _ in range(2))
    t, r = torch.rand(3, generator=g, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    expected = _float64_reference(model, z, r, t, v)
    calls = []
    original = attention.blockwise_attention_jvp

    def counting(*args, **kwargs):
        calls.append(kwargs.get("block_size"))
        return original(*args, **kwargs)

    monkeypatch.setattr(attention, "blockwise_attention_jvp", counting)
    monkeypatch.setattr(attention, "MODE", "blockwise")
    monkeypatch.setattr(attention, "BLOCK_SIZE", block)
    u, du = mfkit.jvp(model, z, r, t, (v, torch.zeros_like(r), torch.ones_like(t)))
    assert len(calls) == 2  # both attentions took the blockwise pass
    assert_relative(du, expected, tol=1e-10)
    torch.testing.assert_close(u, model(z, r, t))
    monkeypatch.setattr(attention, "MODE", "math")
    assert_relative(mfkit.jvp(model, z, r, t, (v, torch.zeros_like(r), torch.ones_like(t)))[1], du, tol=1e-12)


@pytest.mark.parametrize("mode", ["blockwise", "auto"])
def test_check_jvp_contract_passes(mode, monkeypatch):
    monkeypatch.setattr(attention, "MODE", mode)
    monkeypatch.setattr(attention, "BLOCK_SIZE", 7)
    torch.manual_seed(0)
    check_jvp(AttentionNet(), (19, 4))


def test_training_gradients_unchanged_by_the_tangent_path(monkeypatch):
    """MeanFlow's loss and gradients are the same whichever attention tangent runs."""
    torch.manual_seed(0)
    model = AttentionNet().double()
    x = torch.randn(4, 10, 4, dtype=torch.float64)
    results = {}
    for mode in ("math", "blockwise"):
        monkeypatch.setattr(attention, "MODE", mode)
        monkeypatch.setattr(attention, "BLOCK_SIZE", 3)
        model.zero_grad()
        torch.manual_seed(1)
        loss = mfkit.MeanFlow().__call__(model, x).loss
        loss.backward()
        results[mode] = (loss.detach(), [p.grad.clone() for p in model.parameters()])
    torch.testing.assert_close(results["blockwise"][0], results["math"][0], rtol=1e-10, atol=1e-12)
    for a, b in zip(results["blockwise"][1], results["math"][1]):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)


def test_dropout_still_falls_back(monkeypatch):
    """dropout_p > 0 is outside the fast rule (as before): PyTorch's math kernel computes the tangent."""
    monkeypatch.setattr(attention, "MODE", "blockwise")
    monkeypatch.setattr(attention, "blockwise_attention_jvp", lambda *a, **k: pytest.fail("blockwise ran"))

    class Dropping(nn.Module):
        def forward(self, z, r, t, cond=None):
            x = (z * t[:, None, None]).unsqueeze(1)
            return F.scaled_dot_product_attention(x, x, x, dropout_p=0.3).squeeze(1)

    z = torch.randn(2, 6, 4)
    _, du = mfkit.jvp(Dropping(), z, torch.zeros(2), torch.rand(2), (torch.randn_like(z), torch.zeros(2), torch.ones(2)))
    assert torch.isfinite(du).all() and du.abs().sum() > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(generator):
    q, k, v, qt, kt, vt = tensors(generator, 2, 4, 2, 37, 50, 16, 16)
    mask = torch.rand(2, 4, 37, 50, generator=generator) > 0.3
    mask[..., 0] = True
    cpu = blockwise_attention_jvp(q, k, v, qt, kt, vt, mask, enable_gqa=True, block_size=16)[1]
    gpu = blockwise_attention_jvp(*(x.cuda() for x in (q, k, v, qt, kt, vt, mask)), enable_gqa=True, block_size=16)[1]
    assert_relative(gpu.cpu(), cpu, tol=1e-10)
