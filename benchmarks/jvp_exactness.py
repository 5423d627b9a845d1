"""Exactness figures of the JVP cases found in review (compiled model, bf16 autocast per backend,
RMSNorm eps in bf16, in-place activations, fully masked attention rows, the v1 sampler share).

    python benchmarks/jvp_exactness.py

Relative errors are against float64 forward-mode AD with PyTorch's own rules. Run it with PYTHONPATH
pointing at an older checkout to compare releases.
"""
import copy, warnings
warnings.filterwarnings("ignore")
import torch, torch.nn.functional as F
from torch import nn
import torch.autograd.forward_ad as fwAD
import mfkit
from mfkit.nn import MLPBackbone, TimePairEmbedding
from mfkit.core.tangent_rules import math_attention
print("mfkit from", mfkit.__file__)

def inputs(shape=(4,), n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    a, b = torch.rand(n, generator=g), torch.rand(n, generator=g)
    t, r = torch.maximum(a, b), torch.minimum(a, b)
    return torch.randn(n, *shape, generator=g), r, t, torch.randn(n, *shape, generator=g)

def ref(model, z, r, t, v):
    d = copy.deepcopy(model).double()
    with math_attention(), fwAD.dual_level():
        out = d(*[fwAD.make_dual(x.double(), dx.double()) for x, dx in zip((z, r, t), (v, torch.zeros_like(r), torch.ones_like(t)))])
        return fwAD.unpack_dual(out).tangent.float()

def rel(a, b): return float((a.float() - b).norm() / b.norm())
def tan(r, t, v): return (v, torch.zeros_like(r), torch.ones_like(t))
def safe(fn):
    try: return fn()
    except Exception as e: return f"error: {type(e).__name__}: {str(e)[:60]}"

torch.manual_seed(0)
m = MLPBackbone(4, width=32, depth=2)
for p in m.parameters(): nn.init.normal_(p, std=0.3)
z, r, t, v = inputs()
R = ref(m, z, r, t, v)
cm = torch.compile(m, backend="aot_eager")
print("compile(aot_eager) forward_ad rel err:", safe(lambda: rel(mfkit.jvp(cm, z, r, t, tan(r, t, v))[1], R)))

class RMSNormMLP(nn.Module):
    def __init__(self, dim=8, width=64, eps=1e-6):
        super().__init__()
        self.time = TimePairEmbedding(width, frequency_dim=16)
        self.inp = nn.Linear(dim, width); self.norm = nn.RMSNorm(width, eps=eps)
        self.hidden = nn.Linear(width, width); self.out = nn.Linear(width, dim)
    def forward(self, z, r, t, cond=None):
        return self.out(F.silu(self.hidden(self.norm(self.inp(z) * 1e-2 + self.time(r, t) * 1e-2))))
torch.manual_seed(0)
m = RMSNormMLP(); z, r, t, v = inputs((8,))
R = ref(m, z, r, t, v)
for precision in ["fp32", "autocast"]:  # the table in docs/concepts.md ("Precision policy")
    for be in ["forward_ad", "forward_ad_plain", "nograd", "finite_difference"]:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            du = safe(lambda: mfkit.jvp(m, z, r, t, tan(r, t, v), backend=be, precision=precision)[1])
        print(f"bf16 autocast, jvp precision {precision}, {be}: rel err", du if isinstance(du, str) else rel(du, R))
x = (torch.randn(64, 16, generator=torch.Generator().manual_seed(0)) * 1e-3).bfloat16()
xt = torch.randn(64, 16, generator=torch.Generator().manual_seed(1)).bfloat16()
outs = []
for fast in (True, False):
    with fwAD.dual_level():
        with mfkit.FastTangents() if fast else torch.enable_grad():
            outs.append(fwAD.unpack_dual(F.rms_norm(fwAD.make_dual(x, xt), (16,))).tangent.float())
print("bf16 F.rms_norm eps=None: fast rule vs PyTorch rule rel diff", rel(outs[0], outs[1]))

class InPlace(nn.Module):
    def __init__(self):
        super().__init__()
        self.time = TimePairEmbedding(16, frequency_dim=8); self.a, self.b = nn.Linear(4, 16), nn.Linear(16, 4)
    def forward(self, z, r, t, cond=None):
        h = self.a(z) + self.time(r, t); F.relu(h, inplace=True); return self.b(h)
torch.manual_seed(0); m = InPlace(); z, r, t, v = inputs()
u, du = mfkit.jvp(m, z, r, t, tan(r, t, v))
print("in-place relu: u rel err", rel(u.detach(), m(z, r, t).detach()), "du rel err", rel(du, ref(m, z, r, t, v)))

class Masked(nn.Module):
    def __init__(self):
        super().__init__(); self.time = TimePairEmbedding(8, frequency_dim=8); self.qkv = nn.Linear(8, 24)
    def forward(self, z, r, t, cond=None):
        q, k, vv = self.qkv(z + self.time(r, t)[:, None]).chunk(3, -1)
        mask = torch.ones(5, 5, dtype=torch.bool).tril(); mask[2] = False
        return F.scaled_dot_product_attention(q, k, vv, attn_mask=mask)
torch.manual_seed(0); m = Masked(); z, r, t, v = inputs((5, 8))
du = mfkit.jvp(m, z, r, t, tan(r, t, v))[1]
print("fully masked query row: non-finite tangent entries", int((~torch.isfinite(du)).sum()))
print("cifar10_v1_sampler r!=t share:", float((lambda tr: (tr[0] != tr[1]).float().mean())(mfkit.cifar10_v1_sampler().sample(10**6, generator=torch.Generator().manual_seed(0)))))
