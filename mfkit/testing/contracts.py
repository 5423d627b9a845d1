"""Contract checks for plugin authors: run them against your backbone or modality in your own tests.

    from mfkit.testing import check_backbone, check_modality

    def test_my_backbone():
        check_backbone(MyNet(...), sample_shape=(3, 32, 32), num_classes=10)

    def test_my_modality(tmp_path):
        check_modality(MyModality(...), tmp_path)

Each check raises :class:`ContractError` naming the broken rule. ``check_backbone_spec`` and
``check_modality_spec`` build from a registered spec with its default parameters.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

import mfkit
from mfkit.plugins.spec import BackboneSpec, DataInfo, Modality, ModalitySpec


class ContractError(AssertionError):
    """A plugin breaks the mfkit plugin contract."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ContractError(message)


def _inputs(sample_shape, batch, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(batch, *sample_shape, generator=g)
    a, b = torch.rand(batch, generator=g), torch.rand(batch, generator=g)
    return z, torch.minimum(a, b), torch.maximum(a, b), torch.randn(batch, *sample_shape, generator=g)


def check_backbone(model: nn.Module, sample_shape: tuple[int, ...], num_classes: int | None = None,
                   batch: int = 3, atol: float = 1e-3) -> None:
    """The backbone contract: call convention, shapes, dtype, per-sample independence, conditions,
    gradients to every parameter, and JVP compatibility (every exact backend agrees, and agrees with a
    finite difference)."""
    model.eval()
    z, r, t, v = _inputs(sample_shape, batch)
    cond = torch.arange(batch) % num_classes if num_classes else None
    with torch.no_grad():
        u = model(z, r, t, cond=cond)
    _require(isinstance(u, torch.Tensor), f"model(z, r, t, cond) must return a tensor, got {type(u).__name__}")
    _require(u.shape == z.shape, f"output shape {tuple(u.shape)} differs from input shape {tuple(z.shape)}")
    _require(u.dtype == z.dtype, f"output dtype {u.dtype} differs from input dtype {z.dtype}")
    _require(bool(torch.isfinite(u).all()), "output has NaN or infinite values")
    try:
        with torch.no_grad():
            single = model(z[:1], r[:1], t[:1], cond=cond[:1] if cond is not None else None)
    except Exception as error:  # noqa: BLE001
        raise ContractError(f"a batch of one sample fails ({type(error).__name__}: {error}); "
                            "batch statistics in eval mode?") from error
    _require(torch.allclose(single, u[:1], atol=1e-4, rtol=1e-4),
             "sample 0's output changes with the rest of the batch (batch statistics in eval mode?)")
    if num_classes:
        null = torch.full((batch,), num_classes, dtype=torch.long)
        with torch.no_grad():
            _require(model(z, r, t, cond=null).shape == z.shape, "the null label (= num_classes) must be accepted")
    with torch.no_grad():
        moved_t = model(z, r, torch.clamp(t + 0.3, max=1.0), cond=cond)
    _require(not torch.allclose(moved_t, u), "the output does not depend on t")
    model.train()
    u = model(z, r, t, cond=cond)
    u.pow(2).sum().backward()
    missing = [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]
    _require(not missing, f"parameters receive no gradient: {', '.join(missing[:5])}")
    model.zero_grad(set_to_none=True)
    check_jvp(model, sample_shape, cond, batch, atol)


def check_jvp(model: nn.Module, sample_shape: tuple[int, ...], cond: Any = None, batch: int = 3,
              atol: float = 1e-3) -> None:
    """Every exact JVP backend agrees with the others and with a central finite difference."""
    model.eval()
    z, r, t, v = _inputs(sample_shape, batch, seed=1)
    tangents = (v, torch.zeros_like(r), torch.ones_like(t))
    results = {}
    for backend in ("forward_ad", "forward_ad_plain", "nograd"):
        try:
            _, results[backend] = mfkit.jvp(model, z, r, t, tangents, cond, backend=backend)
        except Exception as error:  # noqa: BLE001 - report which backend fails and why
            raise ContractError(f"JVP backend {backend!r} fails on this backbone: {type(error).__name__}: {error}") from error
    h = 1e-3
    with torch.no_grad():
        difference = (model(z + h * v, r, t + h, cond=cond) - model(z - h * v, r, t - h, cond=cond)) / (2 * h)
    scale = difference.abs().max().item() + 1.0
    for backend, du in results.items():
        error = (du - difference).abs().max().item()
        _require(error <= atol * scale * 10, f"JVP backend {backend!r} disagrees with finite differences "
                                             f"(max error {error:.3g})")
        gap = (du - results["forward_ad"]).abs().max().item()
        _require(gap <= atol * scale, f"JVP backend {backend!r} disagrees with forward_ad (max gap {gap:.3g})")


def check_modality(modality: Modality, out_dir: Path, items: int = 4) -> None:
    """The modality contract: shape and classes declared, items of that shape, decode/encode round trip,
    and ``save`` writing real, non-empty files."""
    shape = tuple(modality.sample_shape)
    _require(all(isinstance(d, int) and d > 0 for d in shape), f"sample_shape must be positive ints, got {shape}")
    dataset = modality.dataset("train")
    _require(len(dataset) > 0, "the training data set is empty")
    tensors, labels = [], []
    for index in range(min(items, len(dataset))):
        item = dataset[index]
        x, label = (item[0], item[1]) if isinstance(item, (tuple, list)) else (item, None)
        _require(isinstance(x, torch.Tensor), f"item {index} is a {type(x).__name__}, not a tensor")
        _require(tuple(x.shape) == shape, f"item {index} has shape {tuple(x.shape)}, declared {shape}")
        _require(x.dtype.is_floating_point, f"item {index} has dtype {x.dtype}; items must be floating point")
        if modality.num_classes:
            _require(label is not None, "the modality declares classes but its items carry no label")
            _require(0 <= int(label) < modality.num_classes, f"item {index} has label {int(label)} outside the classes")
            labels.append(int(label))
        else:
            _require(label is None, "items carry labels but the modality declares no class_names")
        tensors.append(x)
    batch = torch.stack(tensors)
    raw = modality.decode(batch)
    _require(len(raw) == batch.shape[0], f"decode of {batch.shape[0]} tensors returned {len(raw)} items")
    again = torch.stack([modality.encode(item) for item in raw])
    _require(again.shape == batch.shape, f"encode(decode(x)) has shape {tuple(again.shape)}, expected {tuple(batch.shape)}")
    _require(torch.allclose(again.float(), batch.float(), atol=1e-2, rtol=1e-2), "encode(decode(x)) does not give x back")
    cond = torch.tensor(labels) if labels else None
    files = modality.save(batch, Path(out_dir), cond)
    _require(len(files) > 0, "save wrote no files")
    for file in files:
        _require(Path(file).is_file() and Path(file).stat().st_size > 0, f"save reported {file} but it is missing or empty")
    for index, name in enumerate(modality.class_names or []):
        _require(modality.label_of(name) == index, f"label_of({name!r}) is not {index}")


def check_backbone_spec(spec: BackboneSpec, info: DataInfo, params: dict | None = None) -> None:
    """Build the backbone from its spec (default parameters unless given) and check it."""
    _require(isinstance(spec, BackboneSpec), f"expected a BackboneSpec, got {type(spec).__name__}")
    model = spec.factory(spec.params_model.model_validate(params or {}), info)
    _require(isinstance(model, nn.Module), f"the factory of {spec.name!r} returned {type(model).__name__}, not an nn.Module")
    check_backbone(model, info.sample_shape, info.num_classes)


def check_modality_spec(spec: ModalitySpec, out_dir: Path, params: dict | None = None) -> Modality:
    """Build the modality from its spec (default parameters unless given) and check it."""
    _require(isinstance(spec, ModalitySpec), f"expected a ModalitySpec, got {type(spec).__name__}")
    modality = spec.factory(spec.params_model.model_validate(params or {}))
    _require(isinstance(modality, Modality), f"the factory of {spec.name!r} returned {type(modality).__name__}, not a Modality")
    check_modality(modality, out_dir)
    return modality
