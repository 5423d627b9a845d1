"""One-step MeanFlow against flow-matching Euler at 1, 2, 4, 8 and 32 steps, with equal training compute.

    OMP_NUM_THREADS=1 python plugins/image/benchmarks/digits_meanflow_vs_fm.py            # digits, CPU
    python plugins/image/benchmarks/digits_meanflow_vs_fm.py --recipe recipes/image_mnist.yaml --count 5000

1. Trains the recipe as it is (MeanFlow) with `mfkit train` and reads the CPU time the training process
   used (user + system, getrusage: a busy, shared machine does not distort it the way wall time does).
2. Trains flow matching on the same backbone, data and recipe (objective.kind=flow_matching, plain L2)
   for 1 step (start-up cost) and for a short probe; the difference gives its CPU seconds per step, and
   the same start-up subtracted from the MeanFlow run gives MeanFlow's. Flow matching then trains for as
   many steps as fit in the MeanFlow run's compute: equal training CPU time, measured, not assumed.
3. Scores both with the `image` evaluator (mfkit.evaluation.evaluate_checkpoint): MeanFlow 1, 2 and 4
   steps, flow-matching Euler 1, 2, 4, 8, 32 steps, with every kept EMA, on the same seeded noise and class labels for
   each evaluation seed (--seeds; the figures are the means over seeds, paired across methods), against
   the held-out split (each method's best EMA goes in the table); the real-vs-real floor (real training images scored the same way) is printed too.

Prints a Markdown table and writes it, with the raw figures (each seed) as JSON, to --out. The JSON holds
the fields `benchmarks/one_step_report.py --import` reads (the two evaluation reports with rows averaged over
the seeds, steps, CPU ms per step, training CPU seconds, machine), so the pair can go into docs/results.md:

    python benchmarks/one_step_report.py --import runs/bench-image/results.json "COMMAND THAT MADE IT"

--reuse scores the runs an earlier invocation left in --out again (other seeds, counts or EMAs) with the CPU
figures its results.json recorded, training nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
from pathlib import Path

import torch

from mfkit.evaluation import evaluate_checkpoint
from mfkit.recipe.schema import MEANFLOW_ONLY, ObjectiveSettings

#: Flow matching: plain L2, and MeanFlow's own fields (r, t sampling, formulation, alpha curriculum) back at
#: their defaults (it uses r = t). A coupling (objective.coupling: ot) is kept: flow matching gets the same
#: pairs (OT-CFM), the stronger baseline.
FM_OVERRIDES = ["objective.kind=flow_matching", "objective.adaptive_p=0.0"] + [
    f"objective.{name}={json.dumps(ObjectiveSettings.model_fields[name].get_default(call_default_factory=True))}"
    for name in MEANFLOW_ONLY]


#: The `image` evaluator trains its feature network with the run's train.seed: every run (any training seed,
#: --set train.seed=N) is scored in the feature space of seed 0, so figures compare across training seeds.
FEATURE_SPACE = ["train.seed=0"]


def child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def train(recipe: str, out: Path, name: str, overrides: list[str]) -> tuple[Path, float]:
    """Train one run; returns its folder and the CPU seconds the training process used."""
    command = [sys.executable, "-m", "mfkit", "train", recipe, f"output_dir={out}", f"name={name}", *overrides,
               "--overwrite"]
    print("$", " ".join(command[2:]), flush=True)
    before = child_cpu()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return out / name, child_cpu() - before


def steps_of(run: Path) -> int:
    return int(json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["step"])


def mean_rows(reports) -> list[dict]:
    """Rows averaged over the evaluation seeds (the same rows in each report)."""
    rows = []
    for index, row in enumerate(reports[0].rows):
        each = [report.rows[index] for report in reports]
        rows.append({"sampler": row.sampler, "steps": row.steps, "network_ms": statistics.median(r.network_ms for r in each),
                     "metrics": {m: statistics.fmean(r.metrics[m] for r in each) for m in row.metrics},
                     "spread": {m: (max(r.metrics[m] for r in each) - min(r.metrics[m] for r in each))
                                for m in row.metrics}})
    return rows


def seed_mean_report(reports, seeds: list[int]) -> dict:
    """One `mfkit eval --json`-shaped report whose rows are the means over the evaluation seeds."""
    first = reports[0]
    return {"evaluator": first.evaluator, "directions": first.directions, "count": first.count, "seed": seeds,
            "reference_count": first.reference_count, "floor": first.floor, "floor_count": first.floor_count,
            "cond": first.cond, "rows": mean_rows(reports)}


def latest(run: Path) -> Path:
    return sorted((run / "checkpoints").glob("step-*.safetensors"))[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="recipes/image_digits.yaml")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-image"))
    parser.add_argument("--steps", type=int, default=None, help="MeanFlow training steps (default: the recipe's)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a recipe override for both trainings, e.g. train.seed=1 (repeatable)")
    parser.add_argument("--count", type=int, default=2000, help="samples scored per row")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3],
                        help="evaluation seeds (noise and labels); figures are means over them")
    parser.add_argument("--ema", default=None,
                        help="EMA decay to sample both runs with, e.g. 0.999 (default: score every kept EMA and "
                             "report each method with its best)")
    parser.add_argument("--probe", type=int, default=300, help="flow-matching steps of the speed probe")
    parser.add_argument("--reuse", action="store_true",
                        help="score the runs an earlier invocation left in --out (its results.json gives the CPU "
                             "figures) instead of training")
    parser.add_argument("--meanflow-run", type=Path, default=None,
                        help="score this finished MeanFlow run of the recipe instead of training one")
    parser.add_argument("--meanflow-cpu", type=float, default=None,
                        help="CPU seconds the --meanflow-run training used (required with it)")
    args = parser.parse_args()
    steps = [f"train.steps={args.steps}"] if args.steps else []
    steps += args.overrides
    if args.reuse:
        if args.steps or args.overrides or args.meanflow_run:
            parser.error("--reuse scores the runs as they were trained: leave out --steps, --set and --meanflow-run")
        mf_run, fm_run, stored = reused(args)
        args.overrides = stored.get("overrides", [])
        cpu, per_step = stored["cpu_seconds"], stored["cpu_ms_per_step"]
        mf_cpu, fm_cpu, startup = cpu["meanflow"], cpu["flow_matching"], cpu["startup"]
        mf_step_cpu, fm_step_cpu = per_step["meanflow"] / 1000, per_step["flow_matching"] / 1000
        mf_steps, fm_steps = steps_of(mf_run), steps_of(fm_run)
    else:
        mf_run, fm_run, mf_cpu, fm_cpu, startup, mf_step_cpu, fm_step_cpu, mf_steps, fm_steps = train_pair(
            args, parser, steps)
    print(f"CPU: start-up {startup:.1f} s; MeanFlow {mf_step_cpu * 1000:.0f} ms/step, flow matching "
          f"{fm_step_cpu * 1000:.0f} ms/step ({mf_step_cpu / fm_step_cpu:.2f}x) -> {mf_steps} MeanFlow steps = "
          f"{fm_steps} flow-matching steps; runs used {mf_cpu:.0f} and {fm_cpu:.0f} CPU seconds", flush=True)
    score_pair(args, mf_run, fm_run, mf_cpu, fm_cpu, startup, mf_step_cpu, fm_step_cpu, mf_steps, fm_steps)


def reused(args) -> tuple[Path, Path, dict]:
    """The two runs and the results.json (CPU figures, overrides) an earlier invocation left in --out."""
    stored = args.out / "results.json"
    if not stored.is_file():
        raise SystemExit(f"--reuse: {args.out} holds no results.json of a finished pair; run once without --reuse")
    data = json.loads(stored.read_text())
    runs = tuple(Path(data.get("runs", {}).get(key, args.out / name))
                 for key, name in (("meanflow", "meanflow"), ("flow_matching", "flow-matching")))
    missing = [str(run) for run in runs if not (run / "checkpoints").is_dir()]
    if missing:
        raise SystemExit(f"--reuse: the runs {stored} was measured on are gone ({', '.join(missing)})")
    if Path(data["recipe"]).resolve() != Path(args.recipe).resolve():
        raise SystemExit(f"--reuse: {stored} was measured with {data['recipe']}, not {args.recipe}")
    return runs[0], runs[1], data


def train_pair(args, parser, steps: list[str]):
    """Train MeanFlow (or take --meanflow-run) and flow matching for the same CPU time."""
    if args.meanflow_run:
        if args.meanflow_cpu is None:
            parser.error("--meanflow-run needs --meanflow-cpu (the CPU seconds its training used)")
        mf_run, mf_cpu = args.meanflow_run, args.meanflow_cpu
    else:
        mf_run, mf_cpu = train(args.recipe, args.out, "meanflow", steps)
    quiet = ["train.checkpoint_every=100000"]
    fm_overrides = args.overrides + FM_OVERRIDES
    _, startup = train(args.recipe, args.out, "fm-startup", fm_overrides + ["train.steps=1"] + quiet)
    _, probe_cpu = train(args.recipe, args.out, "fm-probe", fm_overrides + [f"train.steps={args.probe}"] + quiet)
    fm_step_cpu = (probe_cpu - startup) / (args.probe - 1)
    mf_steps = steps_of(mf_run)
    mf_step_cpu = (mf_cpu - startup) / mf_steps
    fm_steps = int(round((mf_cpu - startup) / fm_step_cpu))
    fm_run, fm_cpu = train(args.recipe, args.out, "flow-matching", fm_overrides + [f"train.steps={fm_steps}"])
    return mf_run, fm_run, mf_cpu, fm_cpu, startup, mf_step_cpu, fm_step_cpu, mf_steps, fm_steps


def score_pair(args, mf_run, fm_run, mf_cpu, fm_cpu, startup, mf_step_cpu, fm_step_cpu, mf_steps, fm_steps) -> None:
    """Score both runs on every evaluation seed; write table.md and results.json to --out."""
    from mfkit.train.checkpoint import load_checkpoint

    def score(run: Path, mf_steps: tuple, euler: tuple) -> tuple[str, list]:
        """Every kept EMA (or --ema) scored on each seed. Returns the EMA with the lowest mean FD: at one step
        for MeanFlow (the target is about one step), at its best number of steps for flow matching."""
        checkpoint = latest(run)
        keys = [args.ema] if args.ema else list(load_checkpoint(checkpoint, weights_only=True).ema)
        scored = {}
        for key in keys:
            scored[key] = [evaluate_checkpoint(checkpoint, steps=mf_steps, euler=euler, count=args.count, seed=seed,
                                               device="cpu", overrides=FEATURE_SPACE, ema=key) for seed in args.seeds]
            print(f"  {run.name} EMA {key}: " + ", ".join(
                f"{row['steps']} -> FD {row['metrics']['fd']:.3f}" for row in mean_rows(scored[key])), flush=True)
        best = min(keys, key=lambda k: min(row["metrics"]["fd"] for row in mean_rows(scored[k])
                                           if euler or row["steps"] == 1))
        all_scores[run.name] = {k: mean_rows(v) for k, v in scored.items()}
        return best, scored[best]

    all_scores: dict = {}
    mf_ema, mf = score(mf_run, (1, 2, 4), ())
    fm_ema, fm = score(fm_run, (), (1, 2, 4, 8, 32))
    first = mf[0]
    metrics = list(first.directions)
    mf_rows, fm_rows = mean_rows(mf), mean_rows(fm)
    header = ("| method | NFE | " + " | ".join(f"{m} ({'lower' if first.directions[m] == 'lower' else 'higher'} "
                                                f"is better)" for m in metrics) + " | ms / sample |")
    lines = [header, "|" + "---|" * (len(metrics) + 3)]
    lines.append("| real vs real (floor) | - | " + " | ".join(f"{first.floor[m]:.4g}" for m in metrics) + " | - |")
    for label, rows in ((f"MeanFlow ({mf_steps} steps, EMA {mf_ema})", mf_rows),
                        (f"flow matching, Euler ({fm_steps} steps, EMA {fm_ema})", fm_rows)):
        for row in rows:
            lines.append(f"| {label} | {row['steps']} | " + " | ".join(f"{row['metrics'][m]:.4g}" for m in metrics)
                         + f" | {row['network_ms']:.3f} |")
    table = "\n".join(lines)
    best = min(row["metrics"]["fd"] for row in fm_rows)
    one = mf_rows[0]["metrics"]["fd"]
    summary = (f"Equal training compute: MeanFlow {mf_steps} steps ({mf_cpu:.0f} CPU s), flow matching {fm_steps} "
               f"steps ({fm_cpu:.0f} CPU s), {mf_step_cpu / fm_step_cpu:.2f}x per step; {args.count} samples per "
               f"row against {first.reference_count} held-out images, means over evaluation seeds "
               f"{', '.join(map(str, args.seeds))}, each method with its best kept EMA. One-step MeanFlow FD {one:.3f} vs flow matching's best "
               f"{best:.3f}: {100 * (one / best - 1):+.1f}% (target: within +10%).")
    print(table + "\n\n" + summary)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.md").write_text(table + "\n\n" + summary + "\n")
    threads = os.environ.get("OMP_NUM_THREADS", "all")
    (args.out / "results.json").write_text(json.dumps(
        {"recipe": args.recipe, "overrides": args.overrides, "runs": {"meanflow": str(mf_run), "flow_matching": str(fm_run)},
         "meanflow": seed_mean_report(mf, args.seeds),
         "flow_matching": seed_mean_report(fm, args.seeds), "floor": first.floor,
         "meanflow_steps": mf_steps, "fm_steps": fm_steps, "mf_step_ms": 1000 * mf_step_cpu,
         "fm_step_ms": 1000 * fm_step_cpu, "mf_train_seconds": mf_cpu, "fm_train_seconds": fm_cpu,
         "machine": f"{platform.machine()} ({os.cpu_count()} CPU cores visible, OMP_NUM_THREADS={threads}), "
                    f"torch {torch.__version__}, python {platform.python_version()}",
         "note": (f"Step times and training seconds are CPU seconds (user + system) of the training processes. "
                  f"Rows are means over evaluation seeds {', '.join(map(str, args.seeds))}; each method is "
                  f"sampled with its best kept EMA (MeanFlow {mf_ema}, flow matching {fm_ema}); flow matching "
                  f"keeps the recipe's pairing (OT-CFM where the recipe sets coupling: ot)."),
         "per_seed": {"seeds": args.seeds, "meanflow": [[r.__dict__ for r in rep.rows] for rep in mf],
                      "flow_matching": [[r.__dict__ for r in rep.rows] for rep in fm]},
         "cpu_seconds": {"meanflow": mf_cpu, "flow_matching": fm_cpu, "startup": startup},
         "cpu_ms_per_step": {"meanflow": 1000 * mf_step_cpu, "flow_matching": 1000 * fm_step_cpu},
         "steps": {"meanflow": mf_steps, "flow_matching": fm_steps}, "ema": {"meanflow": mf_ema, "flow_matching": fm_ema},
         "every_ema": all_scores,
         "one_step_vs_best_fm": one / best - 1}, indent=2))


if __name__ == "__main__":
    main()
