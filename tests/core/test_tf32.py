"""TF32 switches (mfkit.core.tf32): only flags are read and set, so they are testable without a GPU."""
import pytest
import torch

import mfkit
import mfkit.nn
import mfkit.core.jvp as jvp_module
import mfkit.core.objectives as objectives_module
from mfkit.core import attention, tf32
from mfkit.core.jvp import float32_pass

CUDA, CPU = torch.device("cuda"), torch.device("cpu")


@pytest.fixture(autouse=True)
def restore_torch_flags():
    """Each test starts and ends with PyTorch's own defaults (matmuls exact, cuDNN convolutions TF32)."""
    torch.set_float32_matmul_precision("highest")
    torch.backends.cudnn.allow_tf32 = True
    yield
    torch.set_float32_matmul_precision("highest")
    torch.backends.cudnn.allow_tf32 = True


def test_products_switch_on_cuda_only_and_restore_the_callers_settings():
    assert tf32.settings() == (False, True)  # PyTorch's defaults
    with tf32.cuda_float32_products(CPU, tf32=True):
        assert tf32.settings() == (False, True)
    with tf32.cuda_float32_products(CUDA, tf32=True):
        assert tf32.settings() == (True, True)
        with tf32.cuda_float32_products(CUDA, tf32=False):  # nested: exact inside, TF32 again after
            assert tf32.settings() == (False, False)
        assert tf32.settings() == (True, True)
    assert tf32.settings() == (False, True)
    with pytest.raises(KeyError), tf32.cuda_float32_products(CUDA, tf32=True):
        raise KeyError("restored on errors too")
    assert tf32.settings() == (False, True)


def test_older_flags_stay_readable_inside_and_a_users_own_settings_come_back():
    torch.set_float32_matmul_precision("high")
    torch.backends.cudnn.allow_tf32 = False
    with tf32.cuda_float32_products(CUDA, tf32=False):
        # code inside the pass (torch.compile's included) may read either kind of flag
        assert torch.get_float32_matmul_precision() == "highest" and not torch.backends.cuda.matmul.allow_tf32
        assert not torch.backends.cudnn.allow_tf32
    assert torch.get_float32_matmul_precision() == "high" and not torch.backends.cudnn.allow_tf32
    assert tf32.settings() == (True, False)


@pytest.mark.skipif(not hasattr(torch.backends.cudnn, "conv"), reason="per-backend fp32_precision: PyTorch >= 2.9")
def test_per_backend_settings_that_the_older_flags_cannot_express_come_back():
    backends = torch.backends
    backends.cuda.matmul.fp32_precision = "tf32"
    backends.cudnn.conv.fp32_precision = "ieee"  # now the older cuDNN flag cannot be read
    try:
        with tf32.cuda_float32_products(CUDA, tf32=True):
            assert tf32.settings() == (True, True)
        assert backends.cuda.matmul.fp32_precision == "tf32" and backends.cudnn.conv.fp32_precision == "ieee"
        assert tf32.settings() == (True, False)
    finally:
        backends.cuda.matmul.fp32_precision = "none"
        backends.cudnn.conv.fp32_precision = "tf32"


def test_exact_float32_pass_overrides_a_global_tf32_setting():
    """jvp_precision fp32 means exact float32 products even where the user (or cuDNN's default) allows TF32."""
    torch.set_float32_matmul_precision("high")  # a user's global TF32 setting
    with float32_pass("fp32", CUDA):
        assert tf32.settings() == (False, False)
    with float32_pass("tf32", CUDA):
        assert tf32.settings() == (True, True)
    with float32_pass("autocast", CUDA):
        assert tf32.settings() == (True, True)
    assert tf32.settings() == (True, True)


def test_autocast_is_off_in_float32_passes_only():
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for precision in ("fp32", "tf32"):
            with float32_pass(precision, CPU):
                assert not torch.is_autocast_enabled("cpu")
        with float32_pass("autocast", CPU):
            assert torch.is_autocast_enabled("cpu")


def record_passes(monkeypatch, module) -> list:
    """The precisions of the float32_pass calls that ``module`` makes from now on."""
    seen = []

    def recording(precision, device):
        seen.append(precision)
        return float32_pass(precision, device)

    monkeypatch.setattr(module, "float32_pass", recording)
    return seen


def test_finite_differences_keep_exact_products_under_tf32(monkeypatch):
    """TF32 rounding divided by h is a large error: finite differences run their passes as fp32."""
    seen = record_passes(monkeypatch, jvp_module)
    model = mfkit.nn.MLPBackbone(data_shape=(3,), width=16, depth=2)
    z, r, t = torch.randn(4, 3), torch.rand(4) * 0.5, torch.rand(4) * 0.5 + 0.5
    tangents = (torch.randn(4, 3), torch.zeros(4), torch.ones(4))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mfkit.jvp(model, z, r, t, tangents, backend="finite_difference", precision="tf32")
        mfkit.jvp(model, z, r, t, tangents, backend="forward_ad", precision="tf32")
    assert seen == ["fp32", "tf32"]


def test_guidance_passes_follow_the_ambient_settings_without_autocast(monkeypatch):
    seen = record_passes(monkeypatch, objectives_module)
    model = mfkit.nn.MLPBackbone(data_shape=(3,), width=16, depth=2, num_classes=3)
    objective = mfkit.MeanFlow(jvp_precision="tf32", guidance=mfkit.Guidance(w_cfg=1.0, kappa=0.5, null_label=3))
    x, labels = torch.randn(8, 3), torch.randint(0, 3, (8,))
    objective(model, x, labels)
    assert seen and set(seen) == {"autocast"}  # "autocast": no switch, as the JVP pass without autocast
    seen.clear()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        objective(model, x, labels)
    assert seen and set(seen) == {"tf32"}


def test_attention_kernel_follows_the_cuda_matmul_setting(monkeypatch):
    q32, q16 = torch.zeros(1, 1, 2, 4), torch.zeros(1, 1, 2, 4, dtype=torch.bfloat16)
    monkeypatch.setattr(attention, "_has_tf32_cores", lambda device: True)
    with tf32.cuda_float32_products(CUDA, tf32=False):
        assert not attention.float32_on_tf32(q32) and not attention.kernel_pays_off(q32)
        assert attention.kernel_pays_off(q16)
    with tf32.cuda_float32_products(CUDA, tf32=True):
        assert attention.float32_on_tf32(q32) and attention.kernel_pays_off(q32)
        assert not attention.float32_on_tf32(q16)
        monkeypatch.setattr(attention, "_has_tf32_cores", lambda device: False)  # before Ampere: CUDA cores
        assert not attention.kernel_pays_off(q32) and attention.kernel_pays_off(q16)
