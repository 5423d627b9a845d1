"""Scoring a model: draw samples per sampler and step count, score them against held-out real data.

:class:`Evaluation` is prepared once for a modality and an evaluator (real "val" items loaded as the
reference, the evaluator fitted on the "train" split, the real-vs-real floor scored: ``floor_count``
training items against the same reference), then scores any model with :meth:`Evaluation.run`. Every
row starts from the same noise (seeded), so rows differ only by the sampler; each score call runs with
the global RNG seeded too, so one seed gives the same figures.
"""
from __future__ import annotations

import math
import time
import warnings
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn

import mfkit
from mfkit.core.conditions import move_condition, slice_condition
from mfkit.evaluation.data import RealData, load_split, select_condition
from mfkit.evaluation.report import EvalReport, Row
from mfkit.plugins.spec import Evaluator, Modality, asks_for_null

#: Called as progress(task, done, total): task names what runs ("MeanFlow 2 steps", "scoring", ...).
ProgressFn = Callable[[str, int, int], None]


def _quiet(task: str, done: int, total: int) -> None:
    return None


@contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """The global RNG (CPU, and the CUDA device in use) seeded with ``seed``, restored afterwards."""
    devices = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def score(evaluator: Evaluator, samples: torch.Tensor, cond: Any, real: RealData, seed: int,
          device: torch.device = torch.device("cpu")) -> dict[str, float]:
    """``evaluator.score`` with the global RNG seeded; checks that it returns the metrics it declares."""
    with seeded(seed, device):
        values = evaluator.score(samples, cond, real.x, real.cond)
    declared = set(evaluator.metrics)
    if declared and set(values) != declared:
        raise ValueError(f"{type(evaluator).__name__}.score returned {sorted(values)}, but the evaluator declares "
                         f"{sorted(declared)} in its metrics")
    return {name: float(value) for name, value in values.items()}


@torch.no_grad()
def draw(model: nn.Module, modality: Modality, count: int, steps: int, *, euler: bool, cond: Any = None,
         seed: int = 0, batch_size: int = 1000, progress: ProgressFn = _quiet,
         task: str = "sampling", guidance: float = 1.0) -> tuple[torch.Tensor, float, float]:
    """``count`` samples (CPU) with ``steps`` steps each, and the seconds spent in the network and
    in ``modality.render`` (decoding to what a person perceives; timed on the first batch only, scaled to
    ``count``).

    Noise comes from a generator seeded with ``seed``, so every call with the same seed, count and batch
    size starts from the same noise. ``cond``: conditions for the ``count`` samples, or None.
    ``guidance``: classifier-free guidance scale at sampling time (1: none, one network call a step; else
    two, see :func:`mfkit.guided_model`).
    """
    device = next(model.parameters()).device
    sampler = mfkit.euler_sample if euler else mfkit.sample
    network_model = model
    if guidance != 1:
        condition = modality.condition()
        if condition is None or cond is None:
            raise ValueError("classifier-free guidance needs a conditional modality and conditions to guide towards")
        network_model = mfkit.guided_model(model, guidance, condition.ops)
    generator = torch.Generator(device).manual_seed(seed)
    chunks, network, decode_per_sample = [], 0.0, 0.0
    for start in range(0, count, batch_size):
        n = min(batch_size, count - start)
        noise = torch.randn((n, *modality.sample_shape), device=device, generator=generator)
        chunk_cond = None if cond is None else move_condition(slice_condition(cond, slice(start, start + n)), device)
        _synchronize(device)
        began = time.perf_counter()
        samples = sampler(network_model, noise, steps=steps, cond=chunk_cond)
        _synchronize(device)
        network += time.perf_counter() - began
        if start == 0:
            began = time.perf_counter()
            modality.render(samples)
            _synchronize(device)
            decode_per_sample = (time.perf_counter() - began) / n
        chunks.append(samples.cpu())
        progress(task, start + n, count)
    return torch.cat(chunks), network, decode_per_sample * count


#: How samples get their conditions (recorded with a best checkpoint's figures): changing it changes them.
CONDITION_ORDER = "the reference's, in seeded random order"
CONDITION_SEED_OFFSET = 1_000_003  # the shuffle's stream, apart from those of the noise (seed) and subsets


def reference_conditions(data: RealData, count: int, seed: int) -> Any:
    """The conditions of ``count`` samples: those of the reference items in seeded random order, in whole
    shuffled passes (each item's condition used once before any twice), so the mix of conditions follows
    the real data's even when the reference is stored sorted by class and ``count`` is below its size."""
    if data.cond is None:
        return None
    generator = torch.Generator().manual_seed(seed + CONDITION_SEED_OFFSET)  # a stream apart from the noise's
    passes = -(-count // len(data))
    index = torch.cat([torch.randperm(len(data), generator=generator) for _ in range(passes)])[:count]
    return slice_condition(data.cond, index)


class Evaluation:
    """Real data, a fitted evaluator and the floor, ready to score models (see the module).

    ``count``: samples per row. ``cond``: the text of `mfkit eval --cond` (samples get that condition
    and the real items are those with it); without it, conditional samples get the conditions of the
    reference items in seeded random order (:func:`reference_conditions`). ``reference_limit``: at most
    this many "val" items (drawn from ``seed``).
    ``floor``: score ``count`` real training items against the reference (skipped when False).
    """

    def __init__(self, modality: Modality, evaluator: Evaluator, *, count: int, seed: int = 0,
                 cond: str | None = None, reference_limit: int | None = None, floor: bool = True,
                 device: torch.device = torch.device("cpu"), evaluator_name: str = "",
                 progress: ProgressFn = _quiet) -> None:
        if count < 2:
            raise ValueError(f"evaluation needs at least 2 samples, got {count}")
        self.cond_text, self.device, self.evaluator_name = cond, device, evaluator_name or type(evaluator).__name__
        count = self._within_limit(count, getattr(evaluator, "max_samples", None), "samples", "max_samples")
        reference_max = getattr(evaluator, "max_reference", None)
        self.modality, self.evaluator, self.count, self.seed = modality, evaluator, count, seed
        self.seconds: dict[str, float] = {}
        began = time.perf_counter()
        progress("loading real data", 0, 1)
        condition = modality.condition()
        self.target = None
        self.null = asks_for_null(condition, cond)
        if cond is None or condition is None or self.null:  # with a condition, the limit applies after selecting
            reference_limit = self._within_limit(reference_limit, reference_max, "real items", "max_reference")
        self.reference = load_split(modality, "val", reference_limit, seed)
        if cond is not None:
            if condition is None:
                raise ValueError(f"--cond {cond!r}: this modality offers no conditions")
            if self.null:  # unconditional samples of a conditional model, against all real data
                self.target = condition.null(count)
            else:
                self.target = condition.parse(cond, count)
                self.reference = select_condition(self.reference, self.target, "val", cond)
                limit = self._within_limit(reference_limit, reference_max, "real items", "max_reference")
                self.reference = self.reference.subset(limit, seed)
        progress("loading real data", 1, 1)
        self.seconds["reference"] = time.perf_counter() - began
        began = time.perf_counter()
        progress("fitting the evaluator", 0, 1)
        evaluator.fit(modality.dataset("train"))
        progress("fitting the evaluator", 1, 1)
        self.seconds["fit"] = time.perf_counter() - began
        self.floor: dict[str, float] | None = None
        self.floor_count = 0
        if floor:
            began = time.perf_counter()
            progress("scoring real data (floor)", 0, 1)
            selecting = cond is not None and not self.null
            real = load_split(modality, "train", None if selecting else count, seed + 1)
            if selecting:
                real = select_condition(real, self.target, "train", cond).take(slice(0, count))
            self.floor = score(evaluator, real.x, real.cond, self.reference, seed, device)
            self.floor_count = len(real)
            progress("scoring real data (floor)", 1, 1)
            self.seconds["floor"] = time.perf_counter() - began

    def _within_limit(self, wanted: int | None, limit: int | None, what: str, field: str) -> int | None:
        """``wanted`` (None: all), cut to the evaluator's ``limit`` with a warning when it asked for more."""
        if limit is not None and limit < 2:
            raise ValueError(f"the {self.evaluator_name} evaluator's {field} is {limit}: an evaluation needs at "
                             f"least 2 {what}")
        if limit is None or (wanted is not None and wanted <= limit):
            return wanted
        if wanted is not None:
            warnings.warn(f"the {self.evaluator_name} evaluator scores at most {limit} {what} (its {field}): "
                          f"using {limit}, not {wanted}", stacklevel=3)
        return limit

    def conditions(self) -> Any:
        """The conditions the samples are drawn with (None for an unconditional modality)."""
        if self.target is not None:
            return self.target
        return reference_conditions(self.reference, self.count, self.seed)

    def run(self, model: nn.Module, *, steps: Sequence[int] = (1,), euler: Sequence[int] = (), batch_size: int = 1000,
            progress: ProgressFn = _quiet, info: dict[str, Any] | None = None, guidance: float = 1.0) -> EvalReport:
        """Score ``model`` (put in eval mode) with MeanFlow ``steps`` and Euler ``euler`` step counts;
        ``guidance``: classifier-free guidance scale at sampling time (1: none), recorded in the report's info;
        whether the model learned the null condition is the caller's to check (:func:`mfkit.runs.guide`)."""
        if not steps and not euler:
            raise ValueError("nothing to evaluate: give at least one MeanFlow (--steps) or Euler (--euler) step count")
        if any(s < 1 for s in (*steps, *euler)):
            raise ValueError(f"step counts must be at least 1, got {list(steps) + list(euler)}")
        was_training = model.training
        model.eval()
        cond = self.conditions()
        report = EvalReport(self.evaluator_name, dict(self.evaluator.metrics), self.count, self.seed,
                            len(self.reference), floor=self.floor, floor_count=self.floor_count,
                            cond=self.cond_text, info=dict(info or {}), seconds=dict(self.seconds))
        if guidance != 1:
            report.info["guidance"] = guidance
        began = time.perf_counter()
        try:
            # warm-up (untimed): the first call pays for allocations and kernel selection
            draw(model, self.modality, 2, 1, euler=bool(euler and not steps), seed=self.seed,
                 cond=None if cond is None else slice_condition(cond, slice(0, 2)), guidance=guidance)
            for sampler, counts in (("meanflow", steps), ("euler", euler)):
                for count in counts:
                    label = f"{'MeanFlow' if sampler == 'meanflow' else 'Euler'} {count} step{'s' * (count > 1)}"
                    samples, network, decode = draw(model, self.modality, self.count, count, euler=sampler == "euler",
                                                    cond=cond, seed=self.seed, batch_size=batch_size,
                                                    progress=progress, task=f"sampling: {label}",
                                                    guidance=guidance)
                    progress(f"scoring: {label}", 0, 1)
                    metrics = score(self.evaluator, samples, cond, self.reference, self.seed, self.device)
                    progress(f"scoring: {label}", 1, 1)
                    report.rows.append(Row(sampler, count, metrics, 1000 * network / self.count,
                                           1000 * decode / self.count))
        finally:
            model.train(was_training)
        report.seconds["rows"] = time.perf_counter() - began
        report.seconds["total"] = sum(report.seconds.values())
        return report


def parse_counts(text: str | None) -> tuple[int, ...]:
    """'1,2,4' -> (1, 2, 4); '' or None -> (); an error naming the bad entry otherwise."""
    if not text:
        return ()
    counts = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or int(part) < 1:
            raise ValueError(f"step counts are positive integers separated by commas, like 1,2,4; got {text!r}")
        counts.append(int(part))
    return tuple(dict.fromkeys(counts))


def is_better(value: float, best: float | None, direction: str) -> bool:
    """Whether ``value`` beats ``best`` ("lower" or "higher" is better); any finite value beats None."""
    if not math.isfinite(value):
        return False
    if best is None:
        return True
    return value < best if direction == "lower" else value > best
