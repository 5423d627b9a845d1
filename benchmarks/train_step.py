"""Median training-step time and peak memory: MeanFlow (each JVP backend) against flow matching.

    python benchmarks/train_step.py                        # MLP 4 x 1024, batch 512, CPU
    python benchmarks/train_step.py --device cuda --dtype bf16
    python benchmarks/train_step.py --backbone conv --width 64 --depth 2 --batch 32   # conv + attention
    python benchmarks/train_step.py --compile              # adds torch.compile'd FM and MeanFlow steps
    python benchmarks/train_step.py --recipe audio_speech  # the backbone and batch of a recipe (any plugin's)
    python benchmarks/train_step.py --shipped              # every shipped CPU recipe's backbone, one table
    python benchmarks/train_step.py --interleaved --threads 1   # steady ratios on a shared machine (CPU time)
    python benchmarks/train_step.py --share 1.0 --configs flow_matching,forward_ad@all,forward_ad
                                           # r != t share of MeanFlow; @all: a JVP for every row (jvp_rows)

``--recipe`` builds the recipe's modality (for its sample shape and conditions) and backbone through the
public plugin registry, so it measures any installed plugin's backbone exactly as the recipe trains it,
on random data of the right shape with random conditions (``--batch`` defaults to the recipe's).

A step is zero_grad + objective + backward + Adam step, on the same backbone and batch for every
objective. Memory: on CUDA the peak allocated bytes of the step; on CPU the peak bytes of live tensors
during one more step, run under the profiler (its allocation events through PyTorch's CPU allocator,
added up in time order) on top of the tensors held between steps (parameters, optimiser state, batch),
so it counts what CUDA's figure counts and works in --interleaved too. ``--rss`` reports the older
proxy instead: how far the process's peak resident memory grew over the steps (ru_maxrss; includes
about 170 MiB that PyTorch takes on its first training step, and allocator fragmentation).
Target (CPU, exact JVP): MeanFlow step <= 1.5x the flow-matching step.
"""
from __future__ import annotations

import argparse
import copy
import json
import resource
import shlex
import statistics
import subprocess
import sys
import time

import torch

import mfkit
from mfkit.nn import MLPBackbone
from mfkit.testing.networks import ConvAttentionNet

CONFIGS = ["flow_matching", "forward_ad", "forward_ad_plain", "nograd", "finite_difference"]


COMPILED = ["flow_matching+compile", "forward_ad+compile", "nograd+compile"]


def objective_for(name: str, share: float | None = None):
    """The objective of a configuration: ``flow_matching``, or a JVP backend for MeanFlow, optionally
    with ``@all`` / ``@r_neq_t`` / ``@auto`` for its ``jvp_rows`` (``forward_ad@all``: the JVP of every
    row, the path before JVPs were restricted to the r != t rows). ``share``: MeanFlow's r != t share
    (None: its default, the paper's 0.25)."""
    if name == "flow_matching":
        return mfkit.FlowMatching(adaptive_p=1.0)
    backend, _, rows = name.partition("@")
    settings = {"jvp_rows": rows} if rows else {}
    if share is not None:
        settings["r_neq_t_share"] = share
    return mfkit.MeanFlow(jvp_backend=backend, **settings)


#: Every shipped backbone at the size of a shipped CPU recipe (``--shipped``): "recipe override ...".
SHIPPED = ["toy2d", "image_digits", "image_digits backbone.name=dit 'backbone.params={preset: tiny/2}'",
           "image_mnist", "audio_speech", "audio_speech backbone.name=spec_unet 'backbone.params={channels: 32}'",
           "points_shapes", "points_shapes backbone.name=point_transformer 'backbone.params={width: 128, depth: 4}'"]


def recipe_inputs(name: str, batch: int | None, device: torch.device):
    """(model, x, cond, label) for a recipe's backbone on random data of its modality's shape."""
    import yaml

    from mfkit.cli.recipes import find_recipe
    from mfkit.core.conditions import move_condition
    from mfkit.recipe.build import build_backbone, build_modality, plugin_context
    from mfkit.recipe.loading import load_recipe

    name, *overrides = shlex.split(name)
    recipe = load_recipe(find_recipe(name), overrides)
    modality = build_modality(recipe, context=plugin_context(recipe, purpose="benchmark", device=device))
    model = build_backbone(recipe, modality).to(device)
    batch = batch or recipe.train.batch_size
    x = torch.randn(batch, *modality.sample_shape, device=device)
    condition = modality.condition()
    cond = move_condition(condition.preview(batch), device) if condition is not None else None
    params = yaml.safe_dump(recipe.backbone.params, default_flow_style=True, width=10_000).strip()
    label = (f"recipe {' '.join([name, *overrides[:1]])}: {recipe.backbone.name} {params}, sample shape {tuple(modality.sample_shape)}, "
             f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters")
    return model, x, cond, label


def build_inputs(args, device: torch.device):
    """(model, x, cond) of the configured backbone, seeded."""
    torch.manual_seed(0)
    if args.recipe:
        model, x, cond, _ = recipe_inputs(args.recipe, args.batch_given, device)
        return model, x, cond
    if args.backbone == "conv":
        return (ConvAttentionNet(width=args.width, blocks=args.depth).to(device),
                torch.randn(args.batch, 3, args.image, args.image, device=device), None)
    return MLPBackbone(args.dim, width=args.width, depth=args.depth).to(device), \
        torch.randn(args.batch, args.dim, device=device), None


def step_function(name: str, model, x, cond, args):
    """One training step (zero_grad, objective, backward, Adam) of configuration ``name`` on ``model``."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    if name.endswith("+compile"):  # compiled during the warm-up steps
        name, model = name.removesuffix("+compile"), torch.compile(model)
    objective = objective_for(name, args.share)
    autocast = torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=args.dtype == "bf16")

    def step():
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            out = objective(model, x, cond)
        out.loss.backward()
        optimizer.step()

    step.held = lambda: held_bytes(model, optimizer, x)
    step.clear = lambda: optimizer.zero_grad(set_to_none=True)
    step.objective = objective
    return step


def held_bytes(model, optimizer, x) -> int:
    """Bytes of the tensors a training loop holds between steps: parameters, optimiser state and the batch
    (gradients are freed by zero_grad(set_to_none=True) at the start of each step)."""
    state = [v for per_param in optimizer.state.values() for v in per_param.values() if torch.is_tensor(v)]
    return sum(t.numel() * t.element_size() for t in [*model.parameters(), *state, x])


def cpu_tensor_peak_mib(step) -> float:
    """Peak MiB of live tensors during one ``step()`` on the CPU: what is held between steps plus the
    highest running sum of the profiler's allocation events (allocations positive, frees negative) in
    time order."""
    from torch.profiler import ProfilerActivity, profile

    held = step.held()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    live = peak = 0
    for event in events:  # a CPU run: every allocation event is a CPU tensor's
        live += event.nbytes()
        peak = max(peak, live)
    return (held + peak) / 2**20


def cuda_tensor_peak_mib(step) -> float:
    """Peak MiB of one ``step()`` on CUDA, counted as :func:`cpu_tensor_peak_mib` counts it: what is held
    between steps plus the most allocated above that during the step (other configurations' tensors in
    the same process are in both readings and cancel)."""
    step.clear()
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    return (step.held() + torch.cuda.max_memory_allocated() - before) / 2**20


def interleaved(names: list[str], args) -> list[dict]:
    """Every configuration in this one process, one step of each in turn, each on its own copy of the
    same initial network. On a CPU each step is timed by this thread's CPU time (``time.thread_time``),
    so other jobs on a shared machine do not count and slow every configuration alike; on CUDA by wall
    time after a synchronize. Memory on a CPU: :func:`cpu_tensor_peak_mib`, one profiled step per
    configuration after the timed ones (none with --rss or on CUDA: one process holds them all)."""
    device = torch.device(args.device)
    model, x, cond = build_inputs(args, device)
    steps = {name: step_function(name, copy.deepcopy(model), x, cond, args) for name in names}
    clock = time.perf_counter if device.type == "cuda" else time.thread_time
    for _ in range(args.warmup):
        for step in steps.values():
            step()
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(args.steps):
        for name, step in steps.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = clock()
            step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append(clock() - start)
    def peak(step) -> float:
        if device.type == "cuda":
            return cuda_tensor_peak_mib(step)
        return cpu_tensor_peak_mib(step) if device.type == "cpu" and not args.rss else float("nan")

    peaks = {name: peak(step) for name, step in steps.items()}
    return [{"config": name, "median_ms": 1e3 * statistics.median(times[name]), "peak_mib": peaks[name],
             "rows_reason": getattr(steps[name].objective, "jvp_rows_reason", None)} for name in names]


def measure(name: str, args) -> dict:
    device = torch.device(args.device)
    model, x, cond = build_inputs(args, device)
    config = name
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    step = step_function(name, model, x, cond, args)

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak_mib = torch.cuda.max_memory_allocated() / 2**20
    elif args.rss:
        peak_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss) / 1024
    else:
        peak_mib = cpu_tensor_peak_mib(step)
    return {"config": config, "median_ms": 1e3 * statistics.median(times), "peak_mib": peak_mib,
            "rows_reason": getattr(step.objective, "jvp_rows_reason", None)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--backbone", choices=["mlp", "conv"], default="mlp",
                        help="mlp: MLPBackbone on vectors; conv: conv + attention net on 3 x image x image")
    parser.add_argument("--image", type=int, default=16, help="image side for --backbone conv")
    parser.add_argument("--dim", type=int, default=64, help="data dimension")
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--batch", type=int, default=None, help="batch size (default: 512, or the recipe's)")
    parser.add_argument("--recipe", default=None, help="measure this recipe's backbone (file or shipped name, "
                                                        "then key.path=value overrides, in one quoted argument)")
    parser.add_argument("--shipped", action="store_true", help="every shipped CPU recipe's backbone: "
                                                               + ", ".join(SHIPPED))
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    parser.add_argument("--configs", default=",".join(CONFIGS),
                        help="comma-separated: flow_matching and JVP backends, a backend optionally with @all, "
                             "@r_neq_t or @auto for objective.jvp_rows (forward_ad@all: every row gets a JVP)")
    parser.add_argument("--share", type=float, default=None,
                        help="share of rows with r != t in the MeanFlow configurations (default: MeanFlow's, 0.25)")
    parser.add_argument("--compile", action="store_true", help="also measure " + ", ".join(COMPILED))
    parser.add_argument("--interleaved", action="store_true",
                        help="all configurations in one process, steps in turn, timed by CPU time (steady on a "
                             "shared machine; CPU memory as the peak of live tensors)")
    parser.add_argument("--rss", action="store_true",
                        help="CPU memory as the growth of peak resident memory (one process per configuration) "
                             "instead of the peak of live tensors")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.batch_given, args.batch = args.batch, args.batch or 512
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.one:  # child process: one configuration, JSON out
        print(json.dumps(measure(args.one, args)))
        return
    for recipe in (SHIPPED if args.shipped else [args.recipe]):
        args.recipe = recipe
        report(args)


def report(args) -> None:
    """Measure every configuration, each in a fresh process (or all in this one: --interleaved), and print
    the table."""
    rows = []
    names = args.configs.split(",") + (COMPILED if args.compile else [])
    for name in ([] if args.interleaved else names):
        settings = {k: v for k, v in vars(args).items()
                    if k not in ("configs", "one", "compile", "shipped", "batch_given", "batch", "interleaved", "rss")
                    and v is not None}
        if args.batch_given:
            settings["batch"] = args.batch_given
        child = [sys.executable, __file__, "--one", name] + (["--rss"] if args.rss else [])
        for key, value in settings.items():
            child += [f"--{key}", str(value)]
        done = subprocess.run(child, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    if args.interleaved:
        rows = interleaved(names, args)
    baseline = next((r for r in rows if r["config"] == "flow_matching"), rows[0])
    if args.recipe:
        _, x, _, shape = recipe_inputs(args.recipe, args.batch_given, torch.device("cpu"))
        batch = x.shape[0]
    else:
        batch = args.batch
        shape = f"conv+attention width {args.width}, {args.depth} blocks, 3x{args.image}x{args.image}" \
            if args.backbone == "conv" else f"MLP {args.depth} x {args.width}, data dim {args.dim}"
    share = args.share if args.share is not None else mfkit.MeanFlow().times.r_neq_t_share
    print(f"{shape}, batch {batch}, {args.device} {args.dtype}, "
          f"threads {args.threads or torch.get_num_threads()}, MeanFlow r != t share {share}")
    compiled_fm = next((r for r in rows if r["config"] == "flow_matching+compile"), None)
    print(f"{'config':<22}{'median ms':>12}{'x FM':>8}{'x FM+compile':>14}{'peak MiB':>12}")
    for row in rows:
        ratio = row["median_ms"] / baseline["median_ms"]
        compiled = f"{row['median_ms'] / compiled_fm['median_ms']:.2f}" if compiled_fm else "-"
        peak = "-" if row["peak_mib"] != row["peak_mib"] else f"{row['peak_mib']:.1f}"  # NaN: not measured
        print(f"{row['config']:<22}{row['median_ms']:>12.1f}{ratio:>8.2f}{compiled:>14}{peak:>12}")
        if row.get("rows_reason"):  # jvp_rows auto fell back to the JVP of every row
            print(f"{'':<22}(jvp_rows auto used every row: {row['rows_reason']})")
    print(flush=True)


if __name__ == "__main__":
    main()
