"""MeanFlow against flow matching at equal training time on one machine (e.g. a GPU): probe, then train.

    python plugins/image/benchmarks/equal_time.py --recipe recipes/image_mnist.yaml --seconds 200 \
        --out runs/equal-time [--seeds 0 1] [--parallel] [--set train.batch_size=128 ...] [--pack DIR]

For each method (the recipe's MeanFlow objective, then flow matching with digits_meanflow_vs_fm.py's
overrides) a probe run of --probe-steps steps measures the training rate over its last log interval (from the
log lines' time stamps), after cuDNN's and the allocator's warm-up. Each full run (one per method
and training seed) then trains round(seconds x rate) steps, with the recipe's learning-rate schedule over that length and one checkpoint
and preview at the end. Equal time here means equal wall seconds of training steps at each method's own
measured rate: what a user of this machine pays (not the logged it_per_s: it averages from the loop's
start, and that start-up would cut the faster method's steps more). --parallel starts every full run at once (a GPU left idle
by host-bound steps takes several; the step counts still come from the probes, run alone, so contention
changes the wall time, not the compute each method gets). summary.json records each method's probed rate, steps,
and for each full run its training wall time (the time per step between its first and last log lines,
times its steps) and its rate over the last log interval, so a drift from the probe, or contention, shows.
--pack DIR writes one tar per run (final checkpoint, recipe.yaml, metrics.jsonl, final preview grid) for
copying elsewhere. Score the runs with `digits_sweep.py score RUN` (on a CPU, in the tables' feature space).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tarfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from digits_meanflow_vs_fm import FM_OVERRIDES  # noqa: E402 - one definition

METHODS = {"meanflow": [], "flow_matching": FM_OVERRIDES}


def log_lines(run: Path) -> list[dict]:
    """The trainer's step log lines (those carrying it_per_s)."""
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [line for line in lines if "it_per_s" in line]


def start(recipe: str, out: Path, name: str, steps: int, overrides: list[str], log_every: int) -> subprocess.Popen:
    """Start `mfkit train` for `steps` steps, one checkpoint and preview at the end."""
    command = [sys.executable, "-m", "mfkit", "train", recipe, f"output_dir={out}", f"name={name}",
               f"train.steps={steps}", f"train.checkpoint_every={steps}", f"train.preview_every={steps}",
               f"train.log_every={log_every}", *overrides, "--overwrite", "-q"]
    print("$", " ".join(command[2:]), flush=True)
    return subprocess.Popen(command)


def finish(process: subprocess.Popen, others: list[subprocess.Popen] = ()) -> None:
    """Wait for one training; if it failed, stop ``others`` (runs started beside it) and exit."""
    if process.wait() != 0:
        for other in others:
            other.terminate()
        raise SystemExit(f"training failed (exit status {process.returncode}): {' '.join(process.args[2:])}")


def train(recipe: str, out: Path, name: str, steps: int, overrides: list[str], log_every: int) -> Path:
    finish(start(recipe, out, name, steps, overrides, log_every))
    return out / name


def interval_rate(lines: list[dict]) -> float:
    """Steps per second between the last two log lines, from their time stamps (the logged it_per_s is the
    average since the loop began, start-up and warm-up included)."""
    first, last = lines[-2], lines[-1]
    return (last["step"] - first["step"]) / (last["time"] - first["time"])


def probe_rate(recipe: str, out: Path, name: str, steps: int, overrides: list[str]) -> float:
    """Steps per second over the last log interval of a short run (its first intervals hold the warm-up)."""
    return interval_rate(log_lines(train(recipe, out, f"probe-{name}", steps, overrides,
                                         log_every=max(steps // 5, 1))))


def pack(run: Path, into: Path) -> Path:
    """One tar of what scoring and a look need: the final checkpoint, recipe, metrics and last preview."""
    into.mkdir(parents=True, exist_ok=True)
    checkpoint = sorted((run / "checkpoints").glob("step-*.safetensors"))[-1]
    previews = sorted((run / "previews").glob("step-*"))
    members = [checkpoint, run / "recipe.yaml", run / "metrics.jsonl", *(previews[-1:] if previews else [])]
    target = into / f"{run.name}.tar"
    with tarfile.open(target, "w") as archive:
        for member in members:
            archive.add(member, arcname=str(Path(run.name) / member.relative_to(run)))
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="recipes/image_mnist.yaml")
    parser.add_argument("--seconds", type=float, required=True, help="training wall seconds for each method")
    parser.add_argument("--probe-steps", type=int, default=500)
    parser.add_argument("--out", type=Path, default=Path("runs/equal-time"))
    parser.add_argument("--set", dest="overrides", nargs="*", default=[], help="overrides for both methods")
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (train.seed)")
    parser.add_argument("--parallel", action="store_true", help="start every full run at once")
    parser.add_argument("--pack", type=Path, help="write a tar per run into this folder")
    args = parser.parse_args()

    summary: dict = {"recipe": args.recipe, "seconds": args.seconds, "overrides": args.overrides,
                     "parallel": args.parallel, "rates": {}, "runs": {}}
    for method in args.methods:
        rate = probe_rate(args.recipe, args.out, method, args.probe_steps, METHODS[method] + args.overrides)
        summary["rates"][method] = rate
        print(json.dumps({"probe": method, "it_per_s": rate}), flush=True)
    jobs = [(method, seed) for method in args.methods for seed in args.seeds]
    running: dict[str, tuple[subprocess.Popen, int]] = {}
    began = time.perf_counter()
    for method, seed in jobs:
        name, steps = f"{method}-seed{seed}", max(round(args.seconds * summary["rates"][method]), 1)
        process = start(args.recipe, args.out, name, steps, METHODS[method] + args.overrides + [f"train.seed={seed}"],
                        log_every=max(steps // 50, 1))
        running[name] = (process, steps)
        if not args.parallel:
            finish(process)
    for name, (process, steps) in running.items():
        finish(process, [other for other, _ in running.values()])
        run = args.out / name
        lines = log_lines(run)
        first, last = lines[0], lines[-1]
        per_step = (last["time"] - first["time"]) / max(last["step"] - first["step"], 1)
        summary["runs"][name] = {"steps": steps, "run": str(run), "final_it_per_s": interval_rate(lines),
                                 "training_wall_s_estimate": per_step * steps}
        print(json.dumps({name: summary["runs"][name]}), flush=True)
        if args.pack:
            pack(run, args.pack)
    summary["full_runs_wall_s"] = time.perf_counter() - began
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    if args.pack:
        (args.pack / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
