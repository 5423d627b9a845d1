"""`mfkit eval` on a checkpoint: load the run's network, modality (with its state) and an evaluator."""
from __future__ import annotations

import dataclasses
import platform
import time
from pathlib import Path
from typing import Any, Sequence

import torch
import yaml
from pydantic import ValidationError

from mfkit.evaluation.report import EvalReport
from mfkit.evaluation.runner import Evaluation, ProgressFn, _quiet
from mfkit.plugins.discovery import Installed, Registry, UnknownPluginError, registry as default_registry
from mfkit.plugins.spec import EvaluatorSpec, Modality, PluginContext


#: The seed every evaluator is built with (feature networks, projections): one metric for every run.
EVALUATOR_SEED = 0


def find_evaluator(modality: str, name: str | None = None, plugins: Registry | None = None) -> Installed[EvaluatorSpec]:
    """The evaluator named ``name`` (it must accept ``modality``), or the one installed for ``modality``:
    among several, one that names the modality beats one that scores any modality; a tie is an error."""
    plugins = plugins or default_registry
    if name is not None:
        package = None
        if ":" in name:
            package, name = name.split(":", 1)
        found = plugins.installed("mfkit.evaluators", name, package)
        if found.spec.modalities and modality not in found.spec.modalities:
            raise UnknownPluginError(f"evaluator {name!r} scores {', '.join(found.spec.modalities)}, not {modality!r}")
        return found
    candidates = plugins.evaluators_for(modality)
    specific = [item for item in candidates if modality in item.spec.modalities]
    chosen = specific or candidates
    if len(chosen) == 1:
        return chosen[0]
    if not chosen:
        raise UnknownPluginError(f"no evaluator is installed for modality {modality!r}; install the plugin that "
                                 f"provides one, or write one (docs/evaluation.md). See `mfkit plugins`.")
    names = ", ".join(f"{item.package}:{item.spec.name}" for item in chosen)
    raise UnknownPluginError(f"several evaluators score {modality!r} ({names}); choose one with --evaluator")


def build_evaluator(installed: Installed[EvaluatorSpec], modality: Modality, context: PluginContext,
                    params: dict[str, Any] | None = None):
    """Build the evaluator with ``params`` validated by its own schema (ValueError naming each problem).

    The evaluator gets ``context`` with seed :data:`EVALUATOR_SEED` whatever the run's seed: its feature
    networks and projections define the metric, so runs trained with different seeds are scored alike."""
    spec = installed.spec
    context = dataclasses.replace(context, seed=EVALUATOR_SEED)
    try:
        validated = spec.params_model.model_validate(params or {})
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'params'}: {e['msg']}" for e in error.errors())
        raise ValueError(f"evaluator {spec.name!r} parameters: {problems} (see `mfkit plugins --params "
                         f"{spec.name}`)") from None
    return spec.build(validated, modality, context)


def parse_params(pairs: Sequence[str]) -> dict[str, Any]:
    """['per_class=true', 'count=500'] -> {'per_class': True, 'count': 500} (values read as YAML)."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--param {pair!r}: write name=value, e.g. --param per_class=true")
        params[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
    return params


def evaluate_checkpoint(path: Path, *, steps: Sequence[int] | None = None, euler: Sequence[int] | None = None,
                        count: int | None = None, cond: str | None = None, seed: int = 0,
                        evaluator: str | None = None, evaluator_params: dict[str, Any] | None = None,
                        use_ema: bool = True, device: str = "auto",
                        overrides: Sequence[str] = (), reference_limit: int | None = None,
                        progress: ProgressFn = _quiet, ema: float | str | None = None,
                        guidance: float = 1.0) -> EvalReport:
    """Evaluate the network of a checkpoint (what `mfkit eval` does) and return the report.

    Defaults: a MeanFlow run is scored with MeanFlow steps 1, 2, 4; a flow-matching run with Euler steps
    1, 2, 4, 8, 32, 100 (it never learned r != t). ``count`` defaults to the recipe's ``sample.count``;
    samples are drawn in batches of ``sample.batch_size``. The modality is built with purpose "eval" and
    gets the state stored in the checkpoint; the evaluator is found with :func:`find_evaluator`. ``ema``: the
    decay of a kept EMA to score (default: the recipe's first; ``use_ema=False``: the raw weights).
    ``guidance``: classifier-free guidance scale at sampling time (1: none; refused where it would be wrong,
    e.g. for a run trained without class dropout, see :func:`mfkit.runs.guide`); each step then costs two
    network calls. On CUDA the feature networks, sampling and scoring run float32 products exactly (TF32
    off, the caller's setting restored after), so a machine's TF32 default does not shift the figures.
    """
    from mfkit.core.tf32 import cuda_float32_products
    from mfkit.recipe.build import build_backbone, build_modality, plugin_context
    from mfkit.runs import guide, load_modality_state, pick_device
    from mfkit.train.checkpoint import load_checkpoint, load_weights
    from mfkit.train.weights import recipe_from_checkpoint, select_weights

    began = time.perf_counter()
    path = Path(path)
    checkpoint = load_checkpoint(path, weights_only=True)
    recipe = recipe_from_checkpoint(checkpoint, overrides)
    target = pick_device(device)
    run_dir = path.parent.parent if path.parent.name == "checkpoints" else None
    context = plugin_context(recipe, purpose="eval", device=target, run_dir=run_dir)
    modality = build_modality(recipe, context=context)
    load_modality_state(modality, checkpoint.modality_state, path)
    model = build_backbone(recipe, modality, context=context).to(target)
    weights_label, weights = select_weights(checkpoint, use_ema, ema)
    load_weights(model, weights, path, "evaluate without backbone overrides (the stored recipe builds the model "
                                       "the run trained)")
    model.eval()
    guide(model, recipe, modality, guidance, cond)  # refuses guidance the run cannot take, before any work
    flow_matching = recipe.objective.kind == "flow_matching"
    if steps is None and euler is None:
        steps, euler = ((), (1, 2, 4, 8, 32, 100)) if flow_matching else ((1, 2, 4), ())
    if flow_matching and steps:
        counts = ",".join(str(count) for count in steps)
        raise ValueError(f"{path} is from a flow-matching run, which never learned u(z, r, t) for r != t: MeanFlow "
                         f"steps would score the network on times it was not trained for; evaluate it with Euler "
                         f"steps instead (--euler {counts})")
    installed = find_evaluator(recipe.modality.name, evaluator)
    with cuda_float32_products(target, tf32=False):  # on CUDA scores and feature nets in exact float32, not TF32
        scorer = build_evaluator(installed, modality, context, evaluator_params)
    evaluation = Evaluation(modality, scorer, count=count or recipe.sample.count, seed=seed, cond=cond,
                            reference_limit=reference_limit, device=target,
                            evaluator_name=f"{installed.spec.name} ({installed.distribution})", progress=progress)
    info = {"checkpoint": str(path), "step": checkpoint.step, "run": recipe.name, "objective": recipe.objective.kind,
            "weights": weights_label, "modality": recipe.modality.name, "device": str(target),
            "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
            "modality_state": sorted(checkpoint.modality_state)}
    with cuda_float32_products(target, tf32=False):
        report = evaluation.run(model, steps=steps or (), euler=euler or (), batch_size=recipe.sample.batch_size,
                                progress=progress, info=info, guidance=guidance)
    report.seconds["total"] = time.perf_counter() - began
    return report
