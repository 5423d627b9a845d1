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

import copy
from pathlib import Path
from typing import Any

import torch
import torch.autograd.forward_ad as fwAD
from torch import nn
from torch.utils.data import DataLoader

import mfkit
from mfkit.core.broadcast import broadcasts_to
from mfkit.core.calling import call_model
from mfkit.core.conditions import batch_size_of, slice_condition
from mfkit.core.tangent_rules import math_attention
from mfkit.plugins.spec import (BackboneSpec, ClassCondition, ConditionSpec, DataInfo, Modality, ModalitySpec,
                                PluginContext, save_samples)


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


def _conditions(sample_shape, batch, num_classes, condition):
    """A batch of real conditions and of null ones for the declared conditioning (or None, None)."""
    if condition is None and num_classes:
        condition = ClassCondition([str(i) for i in range(num_classes)])
    if condition is None:
        return None, None
    return condition.preview(batch), condition.null(batch)


def check_backbone(model: nn.Module, sample_shape: tuple[int, ...], num_classes: int | None = None,
                   batch: int = 3, atol: float = 1e-3, condition: ConditionSpec | None = None) -> None:
    """The backbone contract: call convention, exact output shape (a broadcastable one is an error too),
    dtype, per-sample independence, conditions (real and null), gradients to every parameter, and JVP
    compatibility (every exact backend agrees with a float64 reference). ``condition``: the modality's
    :class:`ConditionSpec` when it conditions on something other than class labels."""
    model.eval()
    z, r, t, v = _inputs(sample_shape, batch)
    cond, null = _conditions(sample_shape, batch, num_classes, condition)
    try:
        with torch.no_grad():
            u = model(z, r, t, cond=cond)
    except Exception as error:  # noqa: BLE001 - say what the call was
        raise ContractError(f"model(z, r, t, cond) fails on z of shape {tuple(z.shape)} ({type(error).__name__}: "
                            f"{error})") from error
    _require(isinstance(u, torch.Tensor), f"model(z, r, t, cond) must return a tensor, got {type(u).__name__}")
    _require(u.shape == z.shape, f"output shape {tuple(u.shape)} differs from input shape {tuple(z.shape)}"
             + (" (it broadcasts, so training would silently learn the wrong thing)"
                if broadcasts_to(u.shape, z.shape) else ""))
    _require(u.dtype == z.dtype, f"output dtype {u.dtype} differs from input dtype {z.dtype}")
    _require(bool(torch.isfinite(u).all()), "output has NaN or infinite values")
    if any(_all_zero(parameter) for parameter in model.parameters()):
        # zero-initialised layers (adaLN-Zero, zero output layers, zero residual branches) hide at step 0 what
        # the output depends on: check a copy whose all-zero parameters get small random values instead
        model = awake_copy(model)
        with torch.no_grad():
            u = model(z, r, t, cond=cond)
        _require(bool(u.any()), "the output is identically zero, even with the all-zero parameters set to random "
                                "values: the output does not depend on the inputs")
    try:
        with torch.no_grad():
            single = model(z[:1], r[:1], t[:1], cond=slice_condition(cond, slice(0, 1)))
    except Exception as error:  # noqa: BLE001
        raise ContractError(f"a batch of one sample fails ({type(error).__name__}: {error}); "
                            "batch statistics in eval mode?") from error
    _require(torch.allclose(single, u[:1], atol=1e-4, rtol=1e-4),
             "sample 0's output changes with the rest of the batch (batch statistics in eval mode?)")
    if null is not None:
        try:
            with torch.no_grad():
                unconditional = model(z, r, t, cond=null)
        except Exception as error:  # noqa: BLE001
            raise ContractError(f"the null condition (for guidance and unconditional samples) fails: "
                                f"{type(error).__name__}: {error}") from error
        _require(unconditional.shape == z.shape and bool(torch.isfinite(unconditional).all()),
                 "the null condition (for guidance and unconditional samples) gives a wrong shape or NaN")
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


def _all_zero(parameter: torch.Tensor) -> bool:
    return parameter.is_floating_point() and parameter.numel() > 0 and not parameter.any()


def awake_copy(model: nn.Module, scale: float = 0.02, seed: int = 0) -> nn.Module:
    """A copy of ``model`` whose all-zero floating-point parameters (zero-initialised output layers,
    adaLN-Zero gates) are drawn from N(0, scale^2), so the output depends on the inputs as after training."""
    woken = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in woken.parameters():
            if _all_zero(parameter):
                noise = torch.randn(parameter.shape, generator=generator, dtype=torch.float64)
                parameter.copy_((scale * noise).to(parameter.dtype))
    return woken


def check_jvp(model: nn.Module, sample_shape: tuple[int, ...], cond: Any = None, batch: int = 3,
              atol: float = 1e-3) -> None:
    """Every exact JVP backend agrees with a float64 reference (PyTorch's own forward-mode rules on a
    float64 copy, math attention), relative to the reference's size, so a correct backbone that embeds t
    at a large scale passes. The message names the backends compared and by how much they differ."""
    model.eval()
    z, r, t, v = _inputs(sample_shape, batch, seed=1)
    tangents = (v, torch.zeros_like(r), torch.ones_like(t))
    reference = _float64_jvp(model, z, r, t, v, cond)
    if not reference.any():  # a zero-initialised output layer: compare what the trained network would do
        model = awake_copy(model)
        reference = _float64_jvp(model, z, r, t, v, cond)
    scale = reference.abs().max().item() + 1e-6
    results = {}
    for backend in ("forward_ad", "forward_ad_plain", "nograd"):
        try:
            _, results[backend] = mfkit.jvp(model, z, r, t, tangents, cond, backend=backend)
        except Exception as error:  # noqa: BLE001 - report which backend fails and why
            raise ContractError(f"JVP backend {backend!r} fails on this backbone: {type(error).__name__}: {error}") from error
    for backend, du in results.items():
        gap = (du.double() - reference).abs().max().item() / scale
        _require(gap <= atol, f"JVP backend {backend!r} disagrees with a float64 forward-mode reference by "
                              f"{gap:.3g} of the JVP's size (allowed {atol:g}); compared {', '.join(results)}")


def _float64_jvp(model, z, r, t, v, cond):
    """J_u (v, 0, 1) of a float64 copy of the model with PyTorch's own rules: the slow, exact reference."""
    double = copy.deepcopy(model).double()
    tangents = (v.double(), torch.zeros_like(r, dtype=torch.float64), torch.ones_like(t, dtype=torch.float64))
    try:
        with math_attention(), fwAD.dual_level():
            duals = [fwAD.make_dual(x.double(), dx) for x, dx in zip((z, r, t), tangents)]
            return fwAD.unpack_dual(call_model(double, *duals, cond)).tangent.detach()
    except Exception:  # noqa: BLE001 - a layer without forward AD: central differences in float64
        h = 1e-5
        with torch.no_grad():
            plus = call_model(double, z.double() + h * tangents[0], r.double(), t.double() + h, cond)
            minus = call_model(double, z.double() - h * tangents[0], r.double(), t.double() - h, cond)
        return (plus - minus) / (2 * h)


def check_modality(modality: Modality, out_dir: Path, items: int = 4) -> None:
    """The modality contract: shape and conditions declared, items of that shape with matching conditions,
    batches the loader and :meth:`Modality.unpack` can read (with the modality's collate), decode/encode
    round trip, ``save`` writing real, non-empty files (as samples and as a preview), conditions that
    parse, preview and null, and state that survives ``state_dict`` / ``load_state_dict``."""
    shape = tuple(modality.sample_shape)
    _require(all(isinstance(d, int) and d > 0 for d in shape), f"sample_shape must be positive ints, got {shape}")
    dataset = modality.dataset("train")
    _require(len(dataset) > 0, "the training data set is empty")
    count = min(items, len(dataset))
    collate = modality.collate()
    loader = DataLoader(dataset, batch_size=count, shuffle=False, **({"collate_fn": collate} if collate else {}))
    try:
        x, cond = modality.unpack(next(iter(loader)))
    except Exception as error:  # noqa: BLE001
        raise ContractError(f"a batch of the data set cannot be read ({type(error).__name__}: {error})") from error
    _require(isinstance(x, torch.Tensor), f"a batch's data is a {type(x).__name__}, not a tensor")
    _require(tuple(x.shape[1:]) == shape, f"a batch has item shape {tuple(x.shape[1:])}, declared {shape}")
    _require(x.dtype.is_floating_point, f"items have dtype {x.dtype}; items must be floating point")
    _check_set_axis(modality, x)
    condition = modality.condition()
    if condition is None:
        _require(cond is None, "items carry conditions but the modality declares none (class_names or condition())")
    else:
        _require(cond is not None, f"the modality declares {condition.kind} conditions but its items carry none")
        _check_condition(modality, condition, cond, count)
    raw = modality.decode(x)
    _require(len(raw) == x.shape[0], f"decode of {x.shape[0]} tensors returned {len(raw)} items")
    again = torch.stack([modality.encode(item) for item in raw])
    _require(again.shape == x.shape, f"encode(decode(x)) has shape {tuple(again.shape)}, expected {tuple(x.shape)}")
    _require(torch.allclose(again.float(), x.float(), atol=1e-2, rtol=1e-2), "encode(decode(x)) does not give x back")
    for kind, folder in (("samples", Path(out_dir)), ("preview", Path(out_dir) / "preview")):
        files = save_samples(modality, x, folder, cond, kind=kind, step=1)
        _require(len(files) > 0, f"save (kind={kind}) wrote no files")
        for file in files:
            _require(Path(file).is_file() and Path(file).stat().st_size > 0,
                     f"save reported {file} but it is missing or empty")
    state = modality.state_dict()
    _require(isinstance(state, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()),
             "state_dict() must return a dict of name -> tensor")
    try:
        modality.load_state_dict(state)
    except Exception as error:  # noqa: BLE001
        raise ContractError(f"load_state_dict(state_dict()) fails ({type(error).__name__}: {error})") from error


def _check_set_axis(modality: Modality, x: torch.Tensor) -> None:
    """A declared ``set_axis`` names an axis of ``sample_shape`` that holds at least two elements, and the
    set coupling (an exact assignment per sample) runs on two real items, giving each a permutation of its
    elements along that axis."""
    axis = getattr(modality, "set_axis", None)
    if axis is None:
        return
    shape = tuple(modality.sample_shape)
    _require(isinstance(axis, int) and not isinstance(axis, bool) and 0 <= axis < len(shape),
             f"set_axis must be an axis of sample_shape {shape} (0 to {len(shape) - 1}), got {axis!r}")
    _require(shape[axis] >= 2, f"set_axis {axis} holds {shape[axis]} element(s): a set needs at least 2")
    from mfkit.core.coupling import align_sets, set_ot_order

    items = x[:2].float()
    noise = torch.randn(items.shape, generator=torch.Generator().manual_seed(0)).to(items.device)
    order = set_ot_order(items, noise, axis)
    _require(all(torch.equal(row.sort().values.cpu(), torch.arange(shape[axis])) for row in order),
             "the set coupling's order is not a permutation of the set's elements")
    aligned = align_sets("ot", items, noise, axis)
    _require(all(torch.equal(aligned[b], items[b].index_select(axis, order[b])) for b in range(len(items))),
             "the set coupling did not reorder the items' elements along set_axis")


def _check_condition(modality: Modality, condition: ConditionSpec, cond: Any, count: int) -> None:
    _require(batch_size_of(cond) == count, f"a batch of {count} items carries {batch_size_of(cond)} conditions")
    if isinstance(condition, ClassCondition):
        _require(bool(((cond >= 0) & (cond < len(condition.names))).all()), "item labels lie outside the classes")
        for index, name in enumerate(condition.names):
            _require(modality.label_of(name) == index, f"label_of({name!r}) is not {index}")
    for made, what in ((condition.preview(count), "preview"), (condition.null(count), "null")):
        _require(batch_size_of(made) == count, f"condition.{what}({count}) gives {batch_size_of(made)} conditions")
    dropped = torch.zeros(count, dtype=torch.bool)
    dropped[0] = True
    condition.ops.where_dropped(cond, dropped)
    condition.ops.null_like(cond)


def check_backbone_spec(spec: BackboneSpec, info: DataInfo, params: dict | None = None,
                        context: PluginContext | None = None) -> None:
    """Build the backbone from its spec (default parameters unless given) and check it."""
    _require(isinstance(spec, BackboneSpec), f"expected a BackboneSpec, got {type(spec).__name__}")
    model = spec.build(spec.params_model.model_validate(params or {}), info, context or PluginContext(purpose="test"))
    _require(isinstance(model, nn.Module), f"the factory of {spec.name!r} returned {type(model).__name__}, not an nn.Module")
    check_backbone(model, info.sample_shape, info.num_classes, condition=info.condition)


def check_modality_spec(spec: ModalitySpec, out_dir: Path, params: dict | None = None,
                        context: PluginContext | None = None) -> Modality:
    """Build the modality from its spec (default parameters unless given), check it, fit it and check
    that a second instance given the first one's state encodes the same data (state travels)."""
    _require(isinstance(spec, ModalitySpec), f"expected a ModalitySpec, got {type(spec).__name__}")
    validated = spec.params_model.model_validate(params or {})
    context = context or PluginContext(purpose="test", cache_dir=Path(out_dir) / "cache")
    modality = spec.build(validated, context)
    _require(isinstance(modality, Modality), f"the factory of {spec.name!r} returned {type(modality).__name__}, not a Modality")
    modality.fit(modality.dataset("train"))
    check_modality(modality, out_dir)
    state = modality.state_dict()
    if state:
        rebuilt = spec.build(validated, PluginContext(**{**context.__dict__, "purpose": "sample"}))
        rebuilt.load_state_dict({k: v.clone() for k, v in state.items()})
        again = rebuilt.state_dict()
        _require(sorted(again) == sorted(state) and all(torch.equal(again[k], state[k]) for k in state),
                 "a modality given load_state_dict(state) does not report the same state back")
    return modality
