"""The zoo: plain torch.nn patterns users write, each backend against a float64 torch.func.jvp reference.

Every entry is either exact (targets to 1e-4 relative, loss gradients equal across backends) or a
clear :class:`JVPError` naming the layer and the backend to use instead. A new pattern belongs here.
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.utils.checkpoint import checkpoint

import mfkit
from mfkit.core.jvp import JVPError
from mfkit.core.tangent_rules import math_attention
from mfkit.nn import TimePairEmbedding

EXACT = ["forward_ad", "forward_ad_plain", "nograd"]
# torch.func.jvp refuses layers that update buffers in place (running statistics in train mode):
# the nograd backend must say so and name the layer.
REFUSED = {("batchnorm-train", "nograd"): r"\(BatchNorm2d\).*jvp_backend=forward_ad",
           ("custom-function-with-jvp", "nograd"): r"\(Custom\).*setup_context.*or forward_ad if",
           # reentrant checkpointing is an autograd.Function without a forward-mode rule
           **{("activation-checkpointing-reentrant", b): r"body \(Checkpointed\).*finite_difference" for b in EXACT}}
WIDTH = 16


class Timed(nn.Module):
    """body(h) on h = lift(z) + emb(r, t) for vector data (B, 4); subclasses set ``body``."""

    shape = (4,)

    def __init__(self, body: nn.Module):
        super().__init__()
        self.time = TimePairEmbedding(WIDTH, frequency_dim=8)
        self.lift, self.body, self.head = nn.Linear(4, WIDTH), body, nn.Linear(WIDTH, 4)

    def forward(self, z, r, t, cond=None):
        return self.head(self.body(self.lift(z) + self.time(r, t)))


def mlp(activation: nn.Module) -> nn.Module:
    return Timed(nn.Sequential(nn.Linear(WIDTH, WIDTH), activation, nn.Linear(WIDTH, WIDTH), copy.deepcopy(activation)))


class Image(nn.Module):
    """body over (B, C, 4, 4) feature maps of (B, 2, 4, 4) data."""

    shape = (2, 4, 4)

    def __init__(self, body: nn.Module, channels_last: bool = False):
        super().__init__()
        self.time = TimePairEmbedding(WIDTH, frequency_dim=8)
        self.lift, self.body, self.head = nn.Conv2d(2, WIDTH, 3, padding=1), body, nn.Conv2d(WIDTH, 2, 1)
        self.channels_last = channels_last

    def forward(self, z, r, t, cond=None):
        if self.channels_last:
            z = z.contiguous(memory_format=torch.channels_last)
        return self.head(self.body(self.lift(z) + self.time(r, t)[:, :, None, None]))


class Tokens(nn.Module):
    """body over (B, 6, C) token sequences of (B, 6, 4) data."""

    shape = (6, 4)

    def __init__(self, body: nn.Module):
        super().__init__()
        self.time = TimePairEmbedding(WIDTH, frequency_dim=8)
        self.lift, self.body, self.head = nn.Linear(4, WIDTH), body, nn.Linear(WIDTH, 4)

    def forward(self, z, r, t, cond=None):
        return self.head(self.body(self.lift(z) + self.time(r, t)[:, None]))


class Residual(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, h):
        return h + self.inner(h)


class DiTBlock(nn.Module):
    """adaLN-Zero-style block on tokens; the conditioning vector comes from the class embedding."""

    shape = (6, 4)

    def __init__(self, classes=3):
        super().__init__()
        self.time = TimePairEmbedding(WIDTH, frequency_dim=8)
        self.label = nn.Embedding(classes + 1, WIDTH)
        self.lift, self.head = nn.Linear(4, WIDTH), nn.Linear(WIDTH, 4)
        self.norm1 = nn.LayerNorm(WIDTH, elementwise_affine=False)
        self.norm2 = nn.LayerNorm(WIDTH, elementwise_affine=False)
        self.attention = nn.MultiheadAttention(WIDTH, 2, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(WIDTH, 2 * WIDTH), nn.GELU(approximate="tanh"), nn.Linear(2 * WIDTH, WIDTH))
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(WIDTH, 6 * WIDTH))

    def forward(self, z, r, t, cond=None):
        c = self.time(r, t) + self.label(cond)
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(c)[:, None].chunk(6, -1)
        h = self.lift(z)
        a = self.norm1(h) * (1 + scale1) + shift1
        h = h + gate1 * self.attention(a, a, a, need_weights=False)[0]
        return self.head(h + gate2 * self.mlp(self.norm2(h) * (1 + scale2) + shift2))


class Attention(nn.Module):
    """SDPA over heads with a given mask kind."""

    def __init__(self, mask: str):
        super().__init__()
        self.qkv, self.mask = nn.Linear(WIDTH, 3 * WIDTH), mask

    def forward(self, h):
        q, k, v = (rearrange(x, "b l (h d) -> b h l d", h=2) for x in self.qkv(h).chunk(3, -1))
        length = h.shape[1]
        kwargs = {}
        if self.mask == "causal":
            kwargs["is_causal"] = True
        elif self.mask == "bool":
            kwargs["attn_mask"] = torch.rand(length, length, generator=torch.Generator().manual_seed(3)) > 0.3
            kwargs["attn_mask"][:, 0] = True
        elif self.mask == "additive":
            kwargs["attn_mask"] = torch.randn(length, length, generator=torch.Generator().manual_seed(3))
        elif self.mask == "padding-row":  # a query that may attend to nothing at all
            mask = torch.ones(length, length, dtype=torch.bool)
            mask[1] = False
            kwargs["attn_mask"] = mask
        return rearrange(F.scaled_dot_product_attention(q, k, v, **kwargs), "b h l d -> b l (h d)")


class MHA(nn.Module):
    def __init__(self, mask: str):
        super().__init__()
        self.attention, self.mask = nn.MultiheadAttention(WIDTH, 2, batch_first=True), mask

    def forward(self, h):
        kwargs = {}
        if self.mask == "key_padding":
            padding = torch.zeros(h.shape[0], h.shape[1], dtype=torch.bool)
            padding[:, -2:] = True
            kwargs["key_padding_mask"] = padding
        elif self.mask == "causal":
            kwargs["attn_mask"] = nn.Transformer.generate_square_subsequent_mask(h.shape[1])
            kwargs["is_causal"] = True
        return self.attention(h, h, h, need_weights=False, **kwargs)[0]


class InPlaceOps(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(WIDTH, WIDTH), nn.Linear(WIDTH, WIDTH)

    def forward(self, h):
        x = self.a(h)
        x += h  # in-place add on a dual tensor
        x.mul_(0.5)
        y = F.silu(x, inplace=False)
        F.relu(y, inplace=True)
        return self.b(y)


class Checkpointed(nn.Module):
    def __init__(self, reentrant=False):
        super().__init__()
        self.inner = nn.Sequential(nn.Linear(WIDTH, WIDTH), nn.SiLU(), nn.Linear(WIDTH, WIDTH))
        self.reentrant = reentrant

    def forward(self, h):
        return checkpoint(self.inner, h, use_reentrant=self.reentrant)


class NoJvpTanh(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.tanh()

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (1 - x.tanh() ** 2)


class WithJvpTanh(NoJvpTanh):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_forward(x)
        ctx.save_for_backward(x)
        return x.tanh()

    @staticmethod
    def jvp(ctx, x_t):
        (x,) = ctx.saved_tensors
        return x_t * (1 - x.tanh() ** 2)


class Custom(nn.Module):
    def __init__(self, function):
        super().__init__()
        self.function, self.lin = function, nn.Linear(WIDTH, WIDTH)

    def forward(self, h):
        return self.function.apply(self.lin(h))


def batch_norm(mode):
    def build():
        model = Image(nn.Sequential(nn.BatchNorm2d(WIDTH), nn.SiLU()))
        return model.train() if mode == "train" else model.eval()
    return build


ZOO = {
    **{f"mlp-{type(a).__name__.lower()}": (lambda a=a: mlp(a)) for a in [
        nn.ReLU(), nn.GELU(), nn.GELU(approximate="tanh"), nn.SiLU(), nn.Tanh(), nn.Sigmoid(), nn.LeakyReLU(0.1),
        nn.ELU(), nn.Softplus(), nn.Mish(), nn.Hardswish(), nn.SELU(), nn.ReLU(inplace=True), nn.SiLU(inplace=True)]},
    "conv-groupnorm": lambda: Image(Residual(nn.Sequential(nn.GroupNorm(4, WIDTH), nn.SiLU(), nn.Conv2d(WIDTH, WIDTH, 3, padding=1)))),
    "conv-transpose": lambda: Image(nn.Sequential(nn.Conv2d(WIDTH, WIDTH, 2, stride=2), nn.ConvTranspose2d(WIDTH, WIDTH, 2, stride=2))),
    "conv1d-3d": lambda: Tokens(nn.Sequential(Residual(Conv1dOverTokens()), nn.GELU())),
    "channels-last": lambda: Image(nn.Sequential(nn.Conv2d(WIDTH, WIDTH, 3, padding=1), nn.GroupNorm(2, WIDTH)), channels_last=True),
    "layernorm-rmsnorm": lambda: Timed(nn.Sequential(nn.LayerNorm(WIDTH), nn.Linear(WIDTH, WIDTH), nn.RMSNorm(WIDTH, eps=1e-6))),
    "batchnorm-train": batch_norm("train"),
    "batchnorm-eval": batch_norm("eval"),
    "dropout-eval": lambda: Timed(nn.Sequential(nn.Linear(WIDTH, WIDTH), nn.Dropout(0.3), nn.SiLU())).eval(),
    "embedding-residual": lambda: DiTBlock(),
    "sdpa-nomask": lambda: Tokens(Residual(Attention("none"))),
    "sdpa-causal": lambda: Tokens(Residual(Attention("causal"))),
    "sdpa-bool": lambda: Tokens(Residual(Attention("bool"))),
    "sdpa-additive": lambda: Tokens(Residual(Attention("additive"))),
    "sdpa-masked-row": lambda: Tokens(Residual(Attention("padding-row"))),
    "mha-key-padding": lambda: Tokens(Residual(MHA("key_padding"))),
    "mha-causal": lambda: Tokens(Residual(MHA("causal"))),
    "transformer-encoder-train": lambda: Tokens(nn.TransformerEncoder(
        nn.TransformerEncoderLayer(WIDTH, 2, 2 * WIDTH, dropout=0.0, batch_first=True), 2, enable_nested_tensor=False)),
    "transformer-encoder-eval": lambda: Tokens(nn.TransformerEncoder(
        nn.TransformerEncoderLayer(WIDTH, 2, 2 * WIDTH, dropout=0.0, batch_first=True, norm_first=True), 1,
        enable_nested_tensor=False)).eval(),
    "in-place-ops": lambda: Timed(InPlaceOps()),
    "activation-checkpointing": lambda: Timed(Checkpointed()),
    "activation-checkpointing-reentrant": lambda: Timed(Checkpointed(reentrant=True)),
    "custom-function-with-jvp": lambda: Timed(Custom(WithJvpTanh)),
    "compiled": lambda: torch.compile(mlp(nn.SiLU()), backend="aot_eager"),
}


class Conv1dOverTokens(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(WIDTH, WIDTH, 3, padding=1)
        self.conv3 = nn.Conv3d(1, 1, 1)

    def forward(self, h):
        x = self.conv(h.transpose(1, 2)).transpose(1, 2)
        return self.conv3(x[:, None, :, :, None])[:, 0, :, :, 0]


def build(name):
    torch.manual_seed(0)
    model = ZOO[name]()
    inner = getattr(model, "_orig_mod", model)
    for p in inner.parameters():  # zero-initialised layers would hide errors
        nn.init.normal_(p, std=0.3)
    return model, inner


def inputs(shape, n=4):
    g = torch.Generator().manual_seed(1)
    a, b = torch.rand(n, generator=g), torch.rand(n, generator=g)
    t, r = torch.maximum(a, b), torch.minimum(a, b)
    cond = torch.tensor([0, 1, 2, 3])[:n]
    return torch.randn(n, *shape, generator=g), r, t, torch.randn(n, *shape, generator=g), cond


def reference(inner, z, r, t, v, cond):
    """float64 forward-mode AD with PyTorch's own rules and math attention, on a copy (so batch-norm
    running statistics of the model stay untouched)."""
    double = copy.deepcopy(inner).double()
    tangents = (v.double(), torch.zeros_like(r).double(), torch.ones_like(t).double())
    with math_attention(), fwAD.dual_level():  # grad mode on: keeps MHA off its fused no-grad fast path
        duals = [fwAD.make_dual(x.double(), dx) for x, dx in zip((z, r, t), tangents)]
        return fwAD.unpack_dual(double(*duals, cond=cond))


def loss_and_grads(model, inner, backend, z, r, t, v, cond):
    inner.zero_grad(set_to_none=True)
    state = copy.deepcopy(inner.state_dict())
    u, du = mfkit.jvp(model, z, r, t, (v, torch.zeros_like(r), torch.ones_like(t)), cond, backend=backend)
    target = v - (t - r).reshape(-1, *[1] * (z.dim() - 1)) * du
    ((u - target) ** 2).sum().backward()
    grads = [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in inner.parameters()]
    inner.load_state_dict(state)  # batch-norm running statistics: every backend starts from the same state
    return u, du, grads


@pytest.mark.parametrize("name", ZOO)
def test_zoo_is_exact_for_every_exact_backend(name):
    model, inner = build(name)
    z, r, t, v, cond = inputs(getattr(inner, "shape", (4,)))
    cond = cond if isinstance(inner, DiTBlock) else None
    if all((name, backend) in REFUSED for backend in EXACT):
        u_ref = du_ref = None
    else:
        u_ref, du_ref = reference(inner, z, r, t, v, cond)
    results = {}
    for backend in EXACT:
        if (name, backend) in REFUSED:
            with pytest.raises(JVPError, match=REFUSED[name, backend]):
                loss_and_grads(model, inner, backend, z, r, t, v, cond)
            continue
        u, du, grads = loss_and_grads(model, inner, backend, z, r, t, v, cond)
        torch.testing.assert_close(u, u_ref.float(), atol=1e-4, rtol=1e-4, msg=lambda m: f"{backend} u: {m}")
        torch.testing.assert_close(du, du_ref.float(), atol=1e-4, rtol=1e-4, msg=lambda m: f"{backend} du: {m}")
        results[backend] = grads
    for backend in [b for b in EXACT[1:] if b in results]:
        for a, b in zip(results[backend], results["forward_ad"]):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4, msg=lambda m: f"{backend} grad: {m}")


@pytest.mark.parametrize("backend", EXACT)
def test_zoo_layer_without_forward_rule_is_a_clear_error(backend):
    model = Timed(Custom(NoJvpTanh))
    z, r, t, v, _ = inputs((4,))
    with pytest.raises(JVPError, match=r"body \(Custom\).*jvp_backend=finite_difference"):
        mfkit.jvp(model, z, r, t, (v, torch.zeros_like(r), torch.ones_like(t)), backend=backend)
