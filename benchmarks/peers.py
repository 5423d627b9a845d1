"""mfkit side by side with the other flow libraries on 2-D toy data, like for like.

    .venv-peers/bin/python benchmarks/peers.py --png-dir docs/figures --json docs/figures/peers.json
    .venv-peers/bin/python benchmarks/peers.py --steps 200 --n 1000  # a quick smoke run
    .venv-peers/bin/python benchmarks/peers.py --methods mfkit-mf-toy,lucidrains-mf --data moons
    .venv-peers/bin/python benchmarks/peers.py --memory --json docs/figures/peers.json   # peak memory

The peers are not dependencies of mfkit: they live in a separate virtual environment (see
docs/benchmarks.md, "Installing the peers"). Every method trains, in its own fresh process, on the
same data stream (one seeded generator of toy batches), with the same backbone (mfkit's MLPBackbone,
wrapped to each library's calling convention), the same initial weights, Adam with cosine decay, batch,
number of steps and EMA, and samples from its EMA with its own sampler, as its README shows:

- mfkit-mf: mfkit.MeanFlow() with the paper's ImageNet defaults; mfkit.sample.
- mfkit-mf-toy: mfkit.MeanFlow with the earlier toy recipe's settings (t ~ LN(0, 1), r != t for 50%, p = 0.5).
- mfkit-mf-small: mfkit.MeanFlow.preset("small") (the toy settings with minibatch OT in blocks of 64 rows),
  what recipes/toy2d.yaml trains with.
- mfkit-fm: mfkit.FlowMatching() (plain L2, t ~ LN(-0.4, 1)); mfkit.euler_sample.
- lucidrains-mf: rectified_flow_pytorch.MeanFlow (its defaults); ``sample()`` for one step,
  ``slow_sample(steps=k)`` for k steps (which steps with u(z, t, t), i.e. Euler).
- meta-fm: flow_matching's AffineProbPath(CondOTScheduler()), t ~ U(0, 1), MSE; ODESolver, Euler.
- torchcfm-icfm / torchcfm-otcfm: ConditionalFlowMatcher / ExactOptimalTransportConditionalFlowMatcher
  (sigma = 0); torchdyn NeuralODE with the Euler solver.

Reported per method: sliced W2 (and MMD, energy distance in the JSON) of ``--n`` samples against real
held-out points per number of network calls (counted, not assumed), the real-vs-real floor, the
training-step time as a ratio to mfkit flow matching timed in the same process (interleaved blocks),
and (with ``--memory``, afterwards) the growth of peak resident memory over 50 training steps in a
fresh process.
"""
from __future__ import annotations

import argparse
import copy
import importlib.metadata as metadata
import json
import math
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

import mfkit
from mfkit.builtin.toy2d import Toy2d, Toy2dParams
from mfkit.builtin.toy2d_eval import Toy2dEvalParams, Toy2dEvaluator
from mfkit.data.toy2d import toy_sample
from mfkit.evaluation import Evaluation, score
from mfkit.nn import MLPBackbone

ROOT = Path(__file__).resolve().parents[1]
FM_CALLS = (1, 2, 4, 8, 16, 32, 100)
MF_CALLS = (1, 2, 4, 8)
METHODS = ["mfkit-mf", "mfkit-mf-toy", "mfkit-mf-small", "mfkit-fm", "lucidrains-mf", "meta-fm", "torchcfm-icfm", "torchcfm-otcfm"]
LABELS = {"mfkit-mf": "mfkit MeanFlow (paper defaults)", "mfkit-mf-toy": "mfkit MeanFlow (toy settings)",
          "mfkit-mf-small": "mfkit MeanFlow (small preset)",
          "mfkit-fm": "mfkit flow matching", "lucidrains-mf": "lucidrains MeanFlow",
          "meta-fm": "Meta flow_matching", "torchcfm-icfm": "torchcfm I-CFM", "torchcfm-otcfm": "torchcfm OT-CFM"}
PACKAGES = {"lucidrains-mf": "rectified-flow-pytorch", "meta-fm": "flow_matching", "torchcfm-icfm": "torchcfm",
            "torchcfm-otcfm": "torchcfm"}

Loss = Callable[[nn.Module, torch.Tensor, torch.Generator], torch.Tensor]
Sampler = Callable[[nn.Module, torch.Tensor, int], torch.Tensor]


@dataclass
class Method:
    """A training loss on the shared MLP and its samplers: label -> (sampler, numbers of calls)."""

    loss: Loss
    samplers: dict[str, tuple[Sampler, tuple[int, ...]]] = field(default_factory=dict)
    progress: float = 0.0  # the share of training done, set before each step (an alpha curriculum reads it)
    objective: object = None  # mfkit's methods: the objective behind the loss


class Counted(nn.Module):
    """Counts forward calls (network evaluations) of the wrapped model."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.calls = model, 0

    def forward(self, *args, **kwargs):
        self.calls += 1
        return self.model(*args, **kwargs)


def _mfkit(objective) -> Method:
    euler = isinstance(objective, mfkit.FlowMatching)
    sampler = mfkit.euler_sample if euler else mfkit.sample
    method = Method(lambda model, x, g: objective(model, x, generator=g, progress=method.progress).loss,
                    {"": (lambda model, noise, k: sampler(model, noise, steps=k), FM_CALLS if euler else MF_CALLS)},
                    objective=objective)
    return method


#: Options a method name may add to mfkit-mf-toy, mfkit-mf-small or mfkit-fm, joined by "+" (e.g.
#: mfkit-mf-toy+ot+imf, mfkit-mf-small+block=64; each overrides what its base starts from):
#: ot (minibatch optimal-transport coupling), imf (improved MeanFlow), alpha (alpha-Flow curriculum
#: 0.25 -> 0.75 of training, cosine), v1 (r drawn apart, r ~ LN(-4, 1.6), clipped to r <= t: CIFAR-10's
#: "v1" pairing), iw or iw=S (interval weighting, strength 4 or S, balanced from half of training), and
#: share=, p=, c=, mean=, std= (r != t share, adaptive p and c, logit-normal t), block= (rows per OT assignment).
VARIANT_OPTIONS = ("ot", "imf", "alpha", "v1", "iw", "share", "p", "c", "mean", "std", "block")


#: What each variant base starts from, before its options: the earlier toy settings, or the small preset.
VARIANT_BASES = {
    "mfkit-mf-toy": {"mean": 0.0, "std": 1.0, "share": 0.5, "p": 0.5, "c": 1e-2, "ot": False, "v1": False,
                     "block": None},
    "mfkit-mf-small": {"mean": 0.0, "std": 1.0, "share": 0.5, "p": 0.5, "c": 1e-2, "ot": True, "v1": False,
                       "block": 64},
}


def _variant(name: str) -> Method:
    """An mfkit objective from a method name with options (see VARIANT_OPTIONS)."""
    base, *options = name.split("+")
    settings: dict[str, str] = {}
    for option in options:
        key, _, value = option.partition("=")
        if key not in VARIANT_OPTIONS:
            raise ValueError(f"unknown option {key!r} in {name!r}; choose from {', '.join(VARIANT_OPTIONS)}")
        settings[key] = value
    start = VARIANT_BASES.get(base, {"ot": False, "block": None})
    block = int(settings["block"]) if "block" in settings else start["block"]
    if base == "mfkit-fm":
        return _mfkit(mfkit.FlowMatching(coupling="ot" if "ot" in settings else "independent", coupling_block=block))
    number = lambda key: float(settings[key]) if key in settings else start[key]  # noqa: E731
    v1 = "v1" in settings or start["v1"]
    times = mfkit.TimePairSampler(mfkit.LogitNormal(number("mean"), number("std")),
                                  mfkit.LogitNormal(-4.0, 1.6) if v1 else None, number("share"),
                                  order="clip" if v1 else "sort")
    return _mfkit(mfkit.MeanFlow(times=times, adaptive_p=number("p"), adaptive_c=number("c"),
                                 coupling="ot" if "ot" in settings or start["ot"] else "independent",
                                 coupling_block=block, formulation="imf" if "imf" in settings else "meanflow",
                                 alpha=mfkit.AlphaCurriculum() if "alpha" in settings else None,
                                 interval_weighting=_interval_weighting(settings.get("iw"))))


def _interval_weighting(strength: str | None) -> mfkit.IntervalWeighting | None:
    """The ``iw`` option: None without it, the defaults for a bare ``iw``, strength S for ``iw=S``."""
    if strength is None:
        return None
    return mfkit.IntervalWeighting(strength=float(strength)) if strength else mfkit.IntervalWeighting()


def is_variant(name: str) -> bool:
    return "+" in name and name.split("+")[0] in (*VARIANT_BASES, "mfkit-fm")


def label(name: str) -> str:
    if is_variant(name):
        base, *options = name.split("+")
        return f"{LABELS[base]} + {' + '.join(options)}"
    return LABELS[name]


class TimeDelta(nn.Module):
    """lucidrains' convention model(z, t, t - r) onto mfkit's model(z, r, t) (the JVP passes through)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, z, times, delta):
        return self.model(z, times - delta, times)


def _lucidrains() -> Method:
    from rectified_flow_pytorch import MeanFlow

    def loss(model, x, g):
        return MeanFlow(TimeDelta(model), data_shape=(2,))(x)

    def sample(model, noise, k):
        flow = MeanFlow(TimeDelta(model), data_shape=(2,))
        return flow.sample(noise=noise) if k == 1 else flow.slow_sample(steps=k, noise=noise)

    def mfkit_steps(model, noise, k):  # its network, stepped with the average velocity (mfkit.sample)
        return mfkit.sample(model, noise, steps=k)

    return Method(loss, {"": (sample, FM_CALLS), " + mfkit.sample": (mfkit_steps, (2, 4, 8))})


def _meta() -> Method:
    from flow_matching.path import AffineProbPath
    from flow_matching.path.scheduler import CondOTScheduler
    from flow_matching.solver import ODESolver
    from flow_matching.utils import ModelWrapper

    path = AffineProbPath(scheduler=CondOTScheduler())

    class Velocity(ModelWrapper):
        def forward(self, x, t, **extras):
            t = t.expand(x.shape[0]) if t.ndim == 0 else t
            return self.model(x, t, t)

    def loss(model, x, g):
        x_0 = torch.randn_like(x)
        t = torch.rand(x.shape[0])
        sample = path.sample(t=t, x_0=x_0, x_1=x)
        return torch.pow(model(sample.x_t, sample.t, sample.t) - sample.dx_t, 2).mean()

    def sample(model, noise, k):
        solver = ODESolver(velocity_model=Velocity(model))
        return solver.sample(x_init=noise, step_size=None, method="euler", time_grid=torch.linspace(0, 1, k + 1))

    return Method(loss, {"": (sample, FM_CALLS)})


class Concatenated(nn.Module):
    """torchcfm's convention model(cat([x, t])) onto mfkit's model(z, r, t) with r = t."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, inputs):
        t = inputs[:, -1]
        return self.model(inputs[:, :-1], t, t)


def _torchcfm(optimal_transport: bool) -> Method:
    from torchcfm.conditional_flow_matching import (ConditionalFlowMatcher,
                                                    ExactOptimalTransportConditionalFlowMatcher)
    from torchcfm.utils import torch_wrapper
    from torchdyn.core import NeuralODE

    matcher = (ExactOptimalTransportConditionalFlowMatcher if optimal_transport else ConditionalFlowMatcher)(sigma=0.0)

    def loss(model, x, g):
        x0 = torch.randn_like(x)
        t, xt, ut = matcher.sample_location_and_conditional_flow(x0, x)
        vt = Concatenated(model)(torch.cat([xt, t[:, None]], dim=-1))
        return torch.mean((vt - ut) ** 2)

    def sample(model, noise, k):
        node = NeuralODE(torch_wrapper(Concatenated(model)), solver="euler", sensitivity="adjoint")
        return node.trajectory(noise, t_span=torch.linspace(0, 1, k + 1))[-1]

    return Method(loss, {"": (sample, FM_CALLS)})


def build_method(name: str) -> Method:
    if is_variant(name):
        return _variant(name)
    builders = {
        "mfkit-mf": lambda: _mfkit(mfkit.MeanFlow()),
        "mfkit-mf-toy": lambda: _variant("mfkit-mf-toy"),
        "mfkit-mf-small": lambda: _mfkit(mfkit.MeanFlow.preset("small")),
        "mfkit-fm": lambda: _mfkit(mfkit.FlowMatching()),
        "lucidrains-mf": _lucidrains,
        "meta-fm": _meta,
        "torchcfm-icfm": lambda: _torchcfm(False),
        "torchcfm-otcfm": lambda: _torchcfm(True),
    }
    return builders[name]()


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def initial_model(args) -> MLPBackbone:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        return MLPBackbone(2, width=args.width, depth=args.depth)


def train(method: Method, args) -> tuple[nn.Module, float, float]:
    """Train on the shared data stream; returns the EMA model, seconds, and peak-RSS growth in MiB."""
    seed_everything(args.seed)
    model = initial_model(args)
    ema = copy.deepcopy(model).requires_grad_(False)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / args.steps)))
    data_stream = torch.Generator().manual_seed(args.seed)
    objective_randomness = torch.Generator().manual_seed(args.seed + 1)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    began = time.perf_counter()
    for step in range(args.steps):
        method.progress = step / args.steps
        x = toy_sample(args.data, args.batch, data_stream)
        loss = method.loss(model, x, objective_randomness)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            for averaged, current in zip(ema.parameters(), model.parameters()):
                averaged.lerp_(current, 1 - args.ema)
    seconds = time.perf_counter() - began
    peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - baseline) / 1024
    return ema.eval(), seconds, peak


def _block(loss: Loss, args, steps: int) -> float:
    """Seconds per step of ``steps`` steps (after 3 untimed ones) from the initial weights."""
    model = initial_model(args)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    data, g = torch.Generator().manual_seed(7), torch.Generator().manual_seed(8)

    def step():
        out = loss(model, toy_sample(args.data, args.batch, data), g)
        optimizer.zero_grad(set_to_none=True)
        out.backward()
        optimizer.step()

    for _ in range(3):
        step()
    began = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - began) / steps


def step_times(method: Method, args) -> tuple[float, float]:
    """Median seconds per step of the method and of mfkit flow matching, in interleaved blocks."""
    reference = _mfkit(mfkit.FlowMatching())
    method.progress = 1.0  # an alpha curriculum's last, dearest phase (MeanFlow with its JVP)
    own, plain = [], []
    for _ in range(args.timing_rounds):
        own.append(_block(method.loss, args, args.timing_steps))
        plain.append(_block(reference.loss, args, args.timing_steps))
    return statistics.median(own), statistics.median(plain)


def child(args) -> dict:
    """One method on one data set, in this (fresh) process."""
    torch.set_num_threads(args.threads)
    name = args.child
    result = {"method": name, "label": label(name), "data": args.data}
    package = PACKAGES.get(name)
    if package:
        result["package"] = f"{package} {metadata.version(package)}"
    method = build_method(name)
    modality = Toy2d(Toy2dParams(distribution=args.data))
    evaluator = Toy2dEvaluator(Toy2dEvalParams(max_reference=args.n, max_samples=args.n))
    # the stored figures (docs/figures/peers*.json) score against the first --n held-out points, which score()
    # takes from the whole split; the evaluator's limit would load a seeded random subset instead
    evaluator.max_reference = None
    evaluation = Evaluation(modality, evaluator, count=args.n, seed=0)
    ema, seconds, peak = train(method, args)
    result.update(train_seconds=seconds, peak_mib=peak, floor=evaluation.floor, rows=[])
    noise = torch.randn(args.n, 2, generator=torch.Generator().manual_seed(1234))
    samples = {}
    for suffix, (sampler, calls) in method.samplers.items():
        for k in calls:
            counted = Counted(ema)
            seed_everything(args.seed)
            with torch.no_grad():
                points = sampler(counted, noise.clone(), k)
            metrics = score(evaluator, points, None, evaluation.reference, seed=0)
            result["rows"].append({"sampler": label(name) + suffix, "calls": k, "counted": counted.calls,
                                   "metrics": metrics})
            samples[f"{label(name) + suffix}|{k}"] = points[:2000].numpy()
    own, plain = step_times(method, args)
    result.update(step_ms=1000 * own, fm_step_ms=1000 * plain, ratio=own / plain)
    np.savez(args.samples, **samples)
    return result


def memory_child(args) -> dict:
    """Growth of the peak resident memory over ``--memory-steps`` training steps, in this fresh process
    (nothing else allocated first: the figure is the training step's own)."""
    torch.set_num_threads(args.threads)
    method = build_method(args.child)
    seed_everything(args.seed)
    model = initial_model(args)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    data, g = torch.Generator().manual_seed(args.seed), torch.Generator().manual_seed(args.seed + 1)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(args.memory_steps):
        loss = method.loss(model, toy_sample(args.data, args.batch, data), g)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return {"method": args.child, "data": args.data,
            "peak_mib": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - baseline) / 1024}


def measure_memory(args) -> None:
    """Run :func:`memory_child` per data set and method; put the figures into ``--json`` and print the tables."""
    stored = json.loads(args.json.read_text())
    for data in args.data.split(","):
        for name in args.methods.split(","):
            with tempfile.TemporaryDirectory() as folder:
                out = Path(folder) / "memory.json"
                command = [sys.executable, __file__, "--child", name, "--memory", "--data", data, "--result", str(out),
                           f"--batch={args.batch}", f"--width={args.width}", f"--depth={args.depth}",
                           f"--threads={args.threads}", f"--seed={args.seed}", f"--memory-steps={args.memory_steps}"]
                subprocess.run(command, check=True, capture_output=True, text=True)
                peak = json.loads(out.read_text())["peak_mib"]
            for result in stored["results"]:
                if result["method"] == name and result["data"] == data:
                    result["peak_mib"] = peak
            print(f"{data} {name}: {peak:.0f} MiB", file=sys.stderr, flush=True)
    for run in stored.get("runs", {}).values():
        run["memory"] = f"peak RSS growth over {args.memory_steps} training steps in a fresh process"
    args.json.write_text(json.dumps(stored, indent=1) + "\n")
    for data in args.data.split(","):
        print(markdown(stored["results"], data) + "\n")


def run_all(args) -> list[dict]:
    results = []
    work = Path(tempfile.mkdtemp(prefix="mfkit-peers-"))
    for data in args.data.split(","):
        for name in args.methods.split(","):
            began = time.perf_counter()
            out, samples = work / f"{data}-{name}.json", work / f"{data}-{name}.npz"
            command = [sys.executable, __file__, "--child", name, "--data", data, "--result", str(out),
                       "--samples", str(samples)] + [f"--{key.replace('_', '-')}={getattr(args, key)}"
                                                     for key in ("steps", "batch", "width", "depth", "lr", "ema",
                                                                 "n", "seed", "threads", "timing_steps",
                                                                 "timing_rounds")]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
                results.append({"method": name, "label": label(name), "data": data, "error": reason})
                print(f"{data} {name}: FAILED: {reason}", file=sys.stderr, flush=True)
                continue
            result = json.loads(out.read_text())
            result["samples_file"] = str(samples)
            results.append(result)
            print(f"{data} {name}: {time.perf_counter() - began:.0f} s", file=sys.stderr, flush=True)
    return results


def markdown(results: list[dict], data: str) -> str:
    """The table of one data set: sliced W2 per number of calls, step-time ratio, peak memory."""
    rows = [r for r in results if r["data"] == data]
    floor = next((r["floor"]["sliced_w2"] for r in rows if "floor" in r), float("nan"))
    lines = [f"| {data}: sliced W2 (floor {floor:.3f}) | " + " | ".join(str(c) for c in FM_CALLS)
             + " | step x mfkit FM | step ms | peak MiB |", "|---" * (len(FM_CALLS) + 4) + "|"]
    for result in rows:
        if "error" in result:
            lines.append(f"| {result['label']} | failed: {result['error']} |")
            continue
        by_sampler: dict[str, dict[int, float]] = {}
        for row in result["rows"]:
            by_sampler.setdefault(row["sampler"], {})[row["calls"]] = row["metrics"]["sliced_w2"]
        for index, (sampler, values) in enumerate(by_sampler.items()):
            cells = [f"{values[c]:.3f}" if c in values else "" for c in FM_CALLS]
            extra = [f"{result['ratio']:.2f}", f"{result['step_ms']:.1f}", f"{result['peak_mib']:.0f}"] \
                if index == 0 else ["", "", ""]
            lines.append(f"| {sampler} | " + " | ".join(cells + extra) + " |")
    return "\n".join(lines)


def pictures(results: list[dict], data: str, folder: Path) -> Path:
    from benchmarks.plots import scatter_grid

    cells, rows = {}, []
    for result in results:
        if result["data"] != data or "error" in result:
            continue
        stored = np.load(result["samples_file"])
        for key in stored.files:
            sampler, calls = key.rsplit("|", 1)
            cells[sampler, int(calls)] = stored[key]
            if sampler not in rows:
                rows.append(sampler)
    reference = toy_sample(data, 2000, torch.Generator().manual_seed(99)).numpy()
    return scatter_grid(cells, rows, FM_CALLS, folder / f"peers-{data}.png", reference=reference,
                        title=f"{data}: 2000 samples per cell (grey: real data); rows: method, columns: network calls")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="checkerboard,eight_gaussians")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--steps", type=int, default=1500, help="training steps (all methods)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam, cosine decay to 0")
    parser.add_argument("--ema", type=float, default=0.995)
    parser.add_argument("--n", type=int, default=4000, help="samples scored per row (and real points)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--timing-steps", type=int, default=20)
    parser.add_argument("--timing-rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write all results here")
    parser.add_argument("--png-dir", type=Path, help="write one PNG grid per data set here")
    parser.add_argument("--memory", action="store_true", help="only measure each method's peak memory over "
                        "--memory-steps training steps in a fresh process, into the existing --json")
    parser.add_argument("--memory-steps", type=int, default=50)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--samples", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.result.write_text(json.dumps(memory_child(args) if args.memory else child(args)))
        return
    if args.memory:
        if args.json is None or not args.json.is_file():
            parser.error("--memory needs the --json file of an earlier run")
        measure_memory(args)
        return
    unknown = {name for name in args.methods.split(",") if name not in METHODS and not is_variant(name)}
    if unknown:
        parser.error(f"unknown methods {sorted(unknown)}; choose from {', '.join(METHODS)}, or mfkit-mf-toy / "
                     f"mfkit-fm with options joined by '+' ({', '.join(VARIANT_OPTIONS)})")
    began = time.perf_counter()
    results = run_all(args)
    machine = (f"{platform.machine()}, {args.threads} thread(s), torch {torch.__version__}, "
               f"python {platform.python_version()}")
    print(f"\n{machine}; {args.steps} steps, batch {args.batch}, MLP {args.depth} x {args.width}, Adam lr {args.lr} "
          f"cosine, EMA {args.ema}; {args.n} samples per row; {time.perf_counter() - began:.0f} s in all\n")
    for data in args.data.split(","):
        print(markdown(results, data) + "\n")
        if args.png_dir:
            print(f"wrote {pictures(results, data, args.png_dir)}\n")
    if args.json:
        write_json(args.json, results, machine, args)


#: Settings that must agree for results of two runs to share one table.
COMPARABLE = ("steps", "batch", "width", "depth", "lr", "ema", "n", "seed", "threads")


def write_json(path: Path, results: list[dict], machine: str, args) -> None:
    """Write the results. Results already in the file are kept for the other data sets, and for the other
    methods of a data set when its stored run had the same settings (COMPARABLE): a run of a few new
    methods adds rows to the table. Otherwise a data set's stored results are replaced."""
    settings = {k: str(v) for k, v in vars(args).items() if k not in ("child", "result", "samples", "json", "png_dir")}
    runs = {data: {"machine": machine, "settings": settings} for data in args.data.split(",")}
    kept = []
    if path.is_file():
        previous = json.loads(path.read_text())
        fresh = {(r["data"], r["method"]) for r in results}
        for data in list(runs):
            stored = previous.get("runs", {}).get(data)
            if stored and all(stored["settings"].get(k) == settings[k] for k in COMPARABLE):
                methods = stored["settings"]["methods"].split(",")
                added = [m for m in args.methods.split(",") if m not in methods]
                runs[data] = {**stored, "settings": {**stored["settings"], "methods": ",".join(methods + added)},
                              "added": stored.get("added", []) + [{"machine": machine, "methods": args.methods}]}
                kept += [r for r in previous["results"] if r["data"] == data and (data, r["method"]) not in fresh]
        kept += [r for r in previous.get("results", []) if r["data"] not in runs]
        runs = {**{d: s for d, s in previous.get("runs", {}).items() if d not in runs}, **runs}
    for result in results:
        result.pop("samples_file", None)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"runs": runs, "results": kept + results}, indent=1) + "\n")


if __name__ == "__main__":
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))  # `benchmarks.plots` when run as a script
    main()
