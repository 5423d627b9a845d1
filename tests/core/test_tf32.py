"""TF32 switches (mfkit.core.tf32): only flags are read and set, so they are testable without a GPU."""
import pytest
import torch

from mfkit.core import attention, tf32
from mfkit.core.jvp import float32_pass

CUDA, CPU = torch.device("cuda"), torch.device("cpu")


def test_products_switch_on_cuda_only_and_restore_the_callers_settings():
    before = tf32.settings()
    with tf32.cuda_float32_products(CPU, tf32=True):
        assert tf32.settings() == before and not tf32.cuda_matmul_uses_tf32()
    with tf32.cuda_float32_products(CUDA, tf32=True):
        assert tf32.cuda_matmul_uses_tf32()
        with tf32.cuda_float32_products(CUDA, tf32=False):  # nested: exact inside, TF32 again after
            assert not tf32.cuda_matmul_uses_tf32()
        assert tf32.cuda_matmul_uses_tf32()
    assert tf32.settings() == before
    with pytest.raises(KeyError), tf32.cuda_float32_products(CUDA, tf32=True):
        raise KeyError("restored on errors too")
    assert tf32.settings() == before


def test_exact_float32_pass_overrides_a_global_tf32_setting():
    """jvp_precision fp32 means exact float32 products even where the user (or cuDNN's default) allows TF32."""
    with tf32.cuda_float32_products(CUDA, tf32=True):  # stands for a user's global TF32 setting
        outer = tf32.settings()
        with float32_pass("fp32", CUDA):
            assert not tf32.cuda_matmul_uses_tf32()
            assert all(value in (False, "ieee") for value in tf32.settings())  # matmul and cuDNN conv
        with float32_pass("tf32", CUDA):
            assert all(value in (True, "tf32") for value in tf32.settings())
        with float32_pass("autocast", CUDA):
            assert tf32.settings() == outer
        assert tf32.settings() == outer


def test_autocast_is_off_in_float32_passes_only():
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for precision in ("fp32", "tf32"):
            with float32_pass(precision, CPU):
                assert not torch.is_autocast_enabled("cpu")
        with float32_pass("autocast", CPU):
            assert torch.is_autocast_enabled("cpu")


def test_attention_kernel_follows_the_cuda_matmul_setting():
    q32, q16 = torch.zeros(1, 1, 2, 4), torch.zeros(1, 1, 2, 4, dtype=torch.bfloat16)
    with tf32.cuda_float32_products(CUDA, tf32=False):
        assert not attention.float32_on_tf32(q32) and not attention.kernel_pays_off(q32)
        assert attention.kernel_pays_off(q16)
    with tf32.cuda_float32_products(CUDA, tf32=True):
        assert attention.float32_on_tf32(q32) and attention.kernel_pays_off(q32)
        assert not attention.float32_on_tf32(q16)
