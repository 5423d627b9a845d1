"""Feature networks trained locally on the real data, for metrics that need learned features (FD, KID, ...).

Nothing is downloaded: a modality plugin gives a module factory, its training loss and the real training
set; :func:`train_feature_network` trains deterministically from a seed and caches the weights under
``cache_dir/feature-nets/`` in a file named by a content hash of the data and of every setting, so a
second evaluation loads them, and changed data (or settings) trains a new network.

    net = train_feature_network(lambda: Encoder(), modality.dataset("train"), classification_loss,
                                name="sines-encoder", steps=2000, seed=context.seed,
                                cache_dir=context.cache_dir)
    features = extract_features(net.module, samples)          # (N, F)
"""
from __future__ import annotations

import hashlib
import inspect
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler

#: ``loss(module, batch) -> scalar tensor``; the batch is what the data loader yields.
FeatureLoss = Callable[[nn.Module, Any], torch.Tensor]


@dataclass
class FeatureNetwork:
    """A trained feature network (eval mode, frozen), its cache file, the content hash, and whether it
    was trained by this call (False: loaded from the cache)."""

    module: nn.Module
    path: Path
    digest: str
    trained: bool


def _feed(digest: "hashlib._Hash", item: Any) -> None:
    """Add one batch (tensors, nested in tuples, lists or dicts, and plain numbers or strings) to ``digest``."""
    if isinstance(item, torch.Tensor):
        tensor = item.detach().cpu().contiguous()
        digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
        if tensor.numel():
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(item, Mapping):
        for key in sorted(item):
            digest.update(str(key).encode())
            _feed(digest, item[key])
    elif isinstance(item, (list, tuple)):
        for part in item:
            _feed(digest, part)
    else:
        digest.update(repr(item).encode())


def dataset_digest(dataset: Dataset, collate: Callable | None = None, batch_size: int = 1024) -> str:
    """SHA-256 of everything the data set yields, in order (tensors by dtype, shape and bytes)."""
    digest = hashlib.sha256()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate,
                        generator=torch.Generator())  # own generator: the global RNG is not touched
    for batch in loader:
        _feed(digest, batch)
    return digest.hexdigest()


def _architecture(module: nn.Module) -> str:
    shapes = [(name, tuple(p.shape)) for name, p in module.state_dict().items()]
    return f"{type(module).__module__}.{type(module).__qualname__}:{shapes}"


def _save(module: nn.Module, path: Path, metadata: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}, str(temporary),
                  metadata=metadata)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def train_feature_network(factory: Callable[[], nn.Module], dataset: Dataset, loss: FeatureLoss, *, name: str,
                          steps: int = 1000, batch_size: int = 256, lr: float = 1e-3, seed: int = 0,
                          cache_dir: Path | None = None, settings: Mapping[str, Any] | None = None,
                          collate: Callable | None = None, device: torch.device | str = "cpu") -> FeatureNetwork:
    """Train ``factory()`` with Adam on ``dataset`` to minimise ``loss`` for ``steps`` steps, or load it.

    Deterministic from ``seed`` (initial weights and batch order; the global RNG is left as it was).
    The cache file is ``cache_dir/feature-nets/<name>-<hash>.safetensors``, the hash covering the data
    (:func:`dataset_digest`), the architecture (parameter names and shapes), the training settings,
    ``settings`` (anything else the caller's loss depends on) and the source code of the modules that
    define the factory, the network's class and its base classes (torch's aside), the loss and this
    training loop (:func:`code_digest`: an edited forward or loss trains afresh instead of loading weights
    the new code would not produce; code in other modules that these call is not covered, so name a
    version in ``settings`` when changing it). ``cache_dir`` defaults to
    :func:`mfkit.plugins.default_cache_dir`.
    """
    from mfkit.plugins.spec import default_cache_dir

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = factory()
    key = {"name": name, "steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed,
           "architecture": _architecture(module), "settings": dict(settings or {}),
           "data": dataset_digest(dataset, collate),
           "code": code_digest(factory, loss, *(kind for kind in type(module).__mro__
                                                 if kind.__module__.split(".")[0] not in ("torch", "builtins")))}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
    path = Path(cache_dir or default_cache_dir()) / "feature-nets" / f"{name}-{digest[:20]}.safetensors"
    trained = False
    if path.is_file():
        try:
            module.load_state_dict(load_file(str(path)))
        except Exception:  # noqa: BLE001 - a damaged cache file is retrained, not fatal
            trained = True
    else:
        trained = True
    module = module.to(device)
    if trained:
        _fit(module, dataset, loss, steps=steps, batch_size=batch_size, lr=lr, seed=seed, collate=collate)
        _save(module, path, {"name": name, "key": json.dumps(key, sort_keys=True, default=str)})
    module.eval().requires_grad_(False)
    return FeatureNetwork(module, path, digest, trained)


def code_digest(*objects: Any) -> str:
    """A hash (16 hex digits) of the source files of the modules that define ``objects`` (classes,
    functions; a ``functools.partial`` counts as its function) and of this module. A module whose source
    cannot be read (built in, or run from bytecode only) counts by its name."""
    names = {getattr(getattr(item, "func", item), "__module__", None) for item in objects} | {__name__}
    hasher = hashlib.sha256()
    for module_name in sorted(name for name in names if name):
        hasher.update(module_name.encode())
        try:
            hasher.update(inspect.getsource(sys.modules[module_name]).encode())
        except (KeyError, OSError, TypeError):
            pass
    return hasher.hexdigest()[:16]


def _fit(module: nn.Module, dataset: Dataset, loss: FeatureLoss, *, steps: int, batch_size: int, lr: float,
         seed: int, collate: Callable | None) -> None:
    generator = torch.Generator().manual_seed(seed)
    sampler = RandomSampler(dataset, replacement=False, generator=generator)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate, drop_last=False)
    optimizer = torch.optim.Adam(module.parameters(), lr=lr)
    module.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)  # dropout and any other randomness inside the module or the loss
        step = 0
        while step < steps:
            for batch in loader:
                optimizer.zero_grad(set_to_none=True)
                loss(module, batch).backward()
                optimizer.step()
                step += 1
                if step >= steps:
                    break


@torch.no_grad()
def extract_features(module: nn.Module, data: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """``module`` applied to ``data`` (N, ...) in batches, on the module's device -> (N, ...) on the CPU."""
    device = next(module.parameters()).device
    return torch.cat([module(data[start:start + batch_size].to(device)).cpu()
                      for start in range(0, data.shape[0], batch_size)])
