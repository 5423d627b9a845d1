r"""Which rows of a batch get a JVP: only those with r != t, when that is exact.

MeanFlow's target is u_tgt = v - (t - r) sg(JVP). A row with r = t has target v whatever its JVP, so
its tangent is wasted work: with the paper's ImageNet settings 75% of the rows. ``jvp_rows`` chooses:

``"all"``
    Every row gets a JVP (the whole-batch pass of :func:`mfkit.jvp`).
``"r_neq_t"``
    Only rows with r != t get a JVP (:func:`mfkit.core.jvp.jvp_on_rows`); the others get a plain
    forward. Exact (the same loss and gradients up to float rounding) for a backbone that treats every
    row on its own; no check is made.
``"auto"`` (default)
    ``"r_neq_t"`` when the backbone is row-separable, ``"all"`` otherwise. Not separable:

    1. by module type (checked on every call, in the modules' current train/eval mode): batch norm of
       any kind (``BatchNorm1d/2d/3d``, ``SyncBatchNorm``, lazy variants) in training mode or without
       running statistics (it then normalises with the batch's statistics); instance norm updating
       running statistics in training; dropout of any kind (``nn.Dropout``, ``Dropout1d/2d/3d``,
       ``AlphaDropout``, ``FeatureAlphaDropout``) with p > 0 in training; ``nn.RReLU`` in training;
       ``nn.MultiheadAttention`` (and any module) in training with a numeric attribute ``dropout``,
       ``dropout_p``, ``drop_prob``, ``attn_drop`` or ``proj_drop`` above 0 (``DropPath`` as timm
       writes it, attention modules storing their dropout rate);
    2. by a probe, once per backbone and train/eval pattern of its modules (side effects undone): one
       forward of the whole batch without gradient, without autocast and (on CUDA) without TF32, so that
       rounding cannot pass for coupling, that must draw no random number (from
       PyTorch's default CPU and CUDA generators) and leave every buffer untouched (no in-place update,
       no reassignment: running statistics, spectral norm's power iteration, ...); then a forward of the
       r != t rows alone, whose outputs must equal the same rows of the whole-batch forward (to
       1e-4 of the output's scale in float32, 100 units of rounding in a narrower type), which catches cross-sample coupling of any kind that
       shows in the output. A probe whose output is identically zero (a zero-initialised output layer)
       decides nothing: the call uses the whole batch and the next call probes again (8 times at most,
       then the whole batch for good).

    A backbone drawing random numbers from its own ``torch.Generator`` or from Python's or NumPy's
    generators, or keeping state in plain Python attributes, is not seen: set ``"all"`` for it.

Why randomness counts: in the whole-batch pass u and its tangent share one dropout mask drawn for the
whole batch; computed apart, the rows would draw other masks, so the loss would not be today's.
"""
from __future__ import annotations

import contextlib
import math
import weakref
from typing import Any, Callable, Iterator

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.dropout import _DropoutNd
from torch.nn.modules.instancenorm import _InstanceNorm

from mfkit.core.calling import call_model, innermost, walk_modules
from mfkit.core.tf32 import cuda_float32_products

JVP_ROWS = ("auto", "all", "r_neq_t")

#: numeric attributes that, above 0 in a module in training mode, mean it draws random numbers
_RATE_ATTRIBUTES = ("dropout", "dropout_p", "drop_prob", "attn_drop", "proj_drop")

#: probes whose output is identically zero before auto gives up and keeps the whole batch
_MAX_INCONCLUSIVE = 8


def take_rows(cond: Any, index: torch.Tensor, batch: int) -> Any:
    """Rows ``index`` of every tensor (B, ...) in a condition structure (mapping, list, tuple or tensor);
    tensors without a leading batch dimension and non-tensors pass unchanged."""
    if isinstance(cond, torch.Tensor):
        return cond[index.to(cond.device)] if cond.dim() > 0 and cond.shape[0] == batch else cond
    if isinstance(cond, dict):
        return {key: take_rows(value, index, batch) for key, value in cond.items()}
    if isinstance(cond, (list, tuple)):
        return type(cond)(take_rows(value, index, batch) for value in cond)
    return cond


def _module_of(model: Any) -> Any:
    """The user's module (no DDP or compile wrapper); for a bound method, the module it belongs to."""
    root = innermost(model)
    owner = getattr(root, "__self__", None)
    return owner if not isinstance(root, nn.Module) and isinstance(owner, nn.Module) else root


def static_reason(model: Any, modules: list[nn.Module] | None = None,
                  reason_of: Callable[[nn.Module], str | None] | None = None) -> str | None:
    """Why the backbone's rows cannot be computed apart, judged from its module types and their current
    mode (rule 1 of the module docstring), or None. Runs on every call: one pass over the modules
    (``modules``: the backbone's :func:`walk_modules` when the caller has it), without nn.Module's slow
    attribute misses, the culprit named only when there is one ("name (Class) reason"). ``reason_of``:
    another per-module test (e.g. :func:`batch_statistics_reason`) in place of rule 1's."""
    root = _module_of(model)
    if not isinstance(root, nn.Module):
        return None
    reason_of = reason_of or _module_reason
    for module in modules if modules is not None else walk_modules(root):
        reason = reason_of(module)
        if reason is not None:
            return f"{_name_in(root, module)} ({type(module).__name__}) {reason}"
    return None


def _name_in(root: nn.Module, module: nn.Module) -> str:
    """``module``'s dotted name in ``root`` for messages, remembered (a backbone in training mode with
    dropout gives the same reason on every call)."""
    names = _NAMES.get(root)
    if names is None or id(module) not in names:
        names = {id(m): n for n, m in root.named_modules()}
        with contextlib.suppress(TypeError):  # not weak-referenceable: not remembered
            _NAMES[root] = names
    return names.get(id(module)) or "the backbone"


_NAMES: "weakref.WeakKeyDictionary[nn.Module, dict[int, str]]" = weakref.WeakKeyDictionary()


def batch_statistics_reason(module: nn.Module) -> str | None:
    """Why ``module`` makes the network's output depend on its batch or its train/eval mode through
    normalisation statistics, or None: batch norm in training mode or without running statistics
    (normalises with the batch's), instance norm that updates running statistics in training mode (it
    normalises each sample by its own statistics in training, by the running ones in eval mode)."""
    batch_norm, instance_norm, _, _ = _class_kind(type(module))
    if batch_norm:
        if module.training or module.running_mean is None or module.running_var is None:
            return "normalises with the batch's statistics (training mode or no running statistics)"
    elif instance_norm:
        if module.training and module.track_running_stats:
            return "updates running statistics in training mode"
    return None


def _module_reason(module: nn.Module) -> str | None:
    batch_norm, instance_norm, dropout, rrelu = _class_kind(type(module))
    if batch_norm or instance_norm:
        reason = batch_statistics_reason(module)
        if reason is not None:
            return reason
    if not module.training:
        return None
    if dropout and module.p > 0:
        return f"drops with p = {module.p} in training mode"
    if rrelu:
        return "draws random slopes in training mode"
    cls = type(module)
    if cls.__getattr__ is not nn.Module.__getattr__:  # its own attribute lookup: ask it for every rate
        candidates = _RATE_ATTRIBUTES
    else:  # set on the instance, or defined by the class (read now: classes can gain attributes)
        own = module.__dict__.keys() & _RATE_SET
        candidates = [a for a in _RATE_ATTRIBUTES if a in own or hasattr(cls, a)]
    for attribute in candidates:
        rate = getattr(module, attribute, None)
        if isinstance(rate, (int, float)) and not isinstance(rate, bool) and rate > 0:
            return f"has {attribute} = {rate} in training mode"
    return None


_RATE_SET = frozenset(_RATE_ATTRIBUTES)
_CLASS_KINDS: dict[type, tuple[bool, bool, bool, bool]] = {}


def _class_kind(cls: type) -> tuple[bool, bool, bool, bool]:
    """(BatchNorm?, InstanceNorm?, dropout?, RReLU?) of a module class, worked out once per class."""
    kind = _CLASS_KINDS.get(cls)
    if kind is None:
        kind = (issubclass(cls, _BatchNorm), issubclass(cls, _InstanceNorm), issubclass(cls, _DropoutNd),
                issubclass(cls, nn.RReLU))
        _CLASS_KINDS[cls] = kind
    return kind


def signature(model: Any, modules: list[nn.Module] | None = None) -> tuple[bool, ...]:
    """The train/eval pattern of the backbone's modules (a probe's verdict holds for one pattern)."""
    root = _module_of(model)
    if not isinstance(root, nn.Module):
        return ()
    return tuple(module.training for module in (modules if modules is not None else walk_modules(root)))


class RowPlanner:
    """Decides, call by call, whether a MeanFlow objective may compute the JVP for the r != t rows only
    (``jvp_rows="auto"``), and remembers its probes per backbone.

    Copying or pickling a planner gives an empty one (a copy of an objective probes again).
    """

    def __init__(self) -> None:
        self._verdicts: "weakref.WeakKeyDictionary[Any, dict]" = weakref.WeakKeyDictionary()
        self._inconclusive: "weakref.WeakKeyDictionary[Any, dict]" = weakref.WeakKeyDictionary()
        #: why the last "auto" decision kept the whole batch (None: it split, or it was not asked)
        self.last_reason: str | None = None

    def __deepcopy__(self, memo) -> "RowPlanner":
        return RowPlanner()

    def __reduce__(self):
        return RowPlanner, ()

    def separable(self, model: Any, z, r, t, cond, rows: torch.Tensor) -> bool:
        """True when ``model`` may be evaluated on ``rows`` (indices, 0 < len < B) apart from the rest."""
        root = _module_of(model)
        modules = walk_modules(root) if isinstance(root, nn.Module) else None
        reason = static_reason(model, modules)
        if reason is None:
            reason = self._probed(model, z, r, t, cond, rows, modules)
        self.last_reason = reason
        return reason is None

    def _probed(self, model, z, r, t, cond, rows, modules=None) -> str | None:
        root = innermost(model)
        key = _module_of(model)  # a bound method lives as long as its module, not itself
        key_signature = signature(model, modules)
        try:
            verdicts = self._verdicts.setdefault(key, {})
            tries = self._inconclusive.setdefault(key, {})
        except TypeError:  # not weak-referenceable: no memory, so no probe every call
            return "the backbone cannot be remembered between calls (not weak-referenceable), so it is not probed"
        if key_signature in verdicts:
            return verdicts[key_signature]
        verdict = probe(root, z, r, t, cond, rows)
        if verdict is _INCONCLUSIVE:
            tries[key_signature] = tries.get(key_signature, 0) + 1
            if tries[key_signature] < _MAX_INCONCLUSIVE:
                return "the probe saw an identically zero output; it probes again on the next call"
            verdict = f"the backbone's output stayed identically zero over {_MAX_INCONCLUSIVE} probes"
        verdicts[key_signature] = verdict
        return verdict


_INCONCLUSIVE = "inconclusive"


def probe(model: Any, z: torch.Tensor, r: torch.Tensor, t: torch.Tensor, cond: Any, rows: torch.Tensor):
    """Rule 2 of the module docstring on ``model`` (the user's module, no wrapper): None when separable,
    else the reason (or ``_INCONCLUSIVE``). Randomness and buffers are restored afterwards."""
    device = z.device
    try:
        with _untouched(_module_of(model), device) as watch, torch.no_grad(), _eager(), \
                torch.autocast(device_type=device.type, enabled=False), cuda_float32_products(device, tf32=False):
            whole = call_model(model, z, r, t, cond)
            changed = watch.changed()
            if changed:
                return changed
            part = call_model(model, z[rows], r[rows], t[rows], take_rows(cond, rows, z.shape[0]))
            changed = watch.changed()
            if changed:
                return changed
    except Exception as error:  # noqa: BLE001 - a probe must never stop a run that works
        return f"the separability probe failed ({type(error).__name__}: {error})"
    if not isinstance(whole, torch.Tensor) or not isinstance(part, torch.Tensor):
        return "the backbone does not return a tensor"
    whole, part = whole[rows].double(), part.double()
    scale = float(whole.abs().max()) if whole.numel() else 0.0
    if not math.isfinite(scale):
        return "the backbone's output is not finite"
    if scale == 0.0:
        return _INCONCLUSIVE
    gap = float((whole - part).abs().max())
    tolerance = max(1e-4, 100 * torch.finfo(torch.float32 if part.dtype == torch.float64 else part.dtype).eps)
    if not gap <= tolerance * scale:
        return (f"rows computed apart differ from the same rows of the whole batch by {gap / scale:.2e} of the "
                f"output's scale: the backbone couples samples")
    return None


class _Watch:
    def __init__(self, model: nn.Module | Any, device: torch.device) -> None:
        self.device = device
        self.rng = _rng_states(device)
        self.buffers: list[tuple[nn.Module, str, torch.Tensor, int, torch.Tensor]] = []
        if isinstance(model, nn.Module):
            for module in model.modules():
                for name, buffer in module._buffers.items():
                    if buffer is not None:
                        self.buffers.append((module, name, buffer, buffer._version, buffer.detach().clone()))

    def changed(self) -> str | None:
        now = _rng_states(self.device)
        if any(not torch.equal(a, b) for a, b in zip(self.rng, now)):
            return "the backbone draws random numbers in its forward (dropout or similar)"
        for module, name, buffer, version, _ in self.buffers:
            current = module._buffers.get(name)
            if current is not buffer or current._version != version:
                return f"the backbone updates its buffer {name!r} of {type(module).__name__} in its forward"
        return None

    def restore(self) -> None:
        with torch.no_grad():
            for module, name, buffer, version, saved in self.buffers:
                if module._buffers.get(name) is not buffer:
                    module._buffers[name] = buffer
                if buffer._version != version:
                    buffer.copy_(saved)


@contextlib.contextmanager
def _untouched(model, device: torch.device) -> Iterator[_Watch]:
    """Watch the default generators and the buffers; restore both afterwards."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type=device.type if devices else "cuda"):
        watch = _Watch(model, device)
        try:
            yield watch
        finally:
            watch.restore()


def _rng_states(device: torch.device) -> list[torch.Tensor]:
    states = [torch.get_rng_state()]
    if device.type == "cuda":
        states.append(torch.cuda.get_rng_state(device))
    return states


@contextlib.contextmanager
def _eager() -> Iterator[None]:
    """Compiled submodules run eagerly in the probe (no compilation for a pass run once)."""
    set_stance = getattr(torch.compiler, "set_stance", None)
    with set_stance("force_eager") if set_stance is not None else contextlib.nullcontext():
        yield
